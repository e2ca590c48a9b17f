//! Continuous multimodal fusion baselines: the fastText text bag of a row plus one dense
//! vector per row (an image embedding, say), fused by one of six rules
//! ([`FusionMode`]), then a linear softmax layer. Trained with Hogwild SGD exactly like
//! the text-only model ([`crate::train::train`]): token ids compacted into a
//! [`TokenIndex`], seeded init, a seeded shuffle per epoch, fastText's linear learning-rate
//! decay, threads in a rayon pool, a progress callback about every 100 ms.
//!
//! # Notation
//!
//! `d` = `dim`, `D` = `dense_dim`, `r` = `rank` (bilinear modes; default `d`), `L` labels.
//! `σ` is the logistic sigmoid, `⊙` the elementwise product, `[a; b]` concatenation,
//! `1/√·` a scalar.
//!
//! # Inputs
//!
//! * Text: `t = Σ_i w_i E[k_i] / Σ_i w_i` over the row's tokens `k_i` known to the model
//!   (`w_i = 1` without token weights; `t = 0` when no token is known). `E` is
//!   `n_tok × d`, one row per token id seen in training, as in the text model.
//! * Dense: `x̂_j = (x_j − μ_j) / (s_j √D)`, where `μ_j`, `s_j` are the per-dimension mean
//!   and (population) standard deviation of the dense vectors of the *present* training
//!   rows, computed once before training and stored in the model (`s_j := 1` where
//!   `s_j ≤ 1e-8`, i.e. a constant dimension is only centred). Image embeddings are not
//!   centred and plain SGD needs centred, unit-scale inputs. The constant `1/√D` makes
//!   `E‖x̂‖² ≈ 1`, so one SGD step on a layer that reads `x̂` moves its output by about
//!   `lr` times its gradient, as a step on the text embeddings moves `t`; it is the same
//!   as dividing the learning rate of `P` and `V` by `D`. Nothing else is standardised.
//!
//! # Fusion, for a row whose dense vector is present
//!
//! ```text
//! p = P x̂ + b_p                                   P: d × D, b_p: d   (image, add, max, gated)
//! image:           h = p
//! add:             h = t + p
//! max:             h_i = max(t_i, p_i)            (a tie goes to t)
//! gated:           a = W_g [t; p] + b_g,  g = σ(a),  h = g ⊙ t + (1 − g) ⊙ p
//!                                                 W_g: d × 2d, b_g: d
//! bilinear:        u = U t + b_u,  v = V x̂ + b_v,  z = (u ⊙ v) / √r,  h = B = O z
//!                                                 U: r × d, V: r × D, b_u, b_v: r, O: d × r
//! bilinear_gated:  B as in bilinear;  a = W_g [t; B] + b_g,  g = σ(a),
//!                  h = g ⊙ t + (1 − g) ⊙ B
//! ```
//!
//! The bilinear term is a rank-`r` bilinear form of the 1-augmented inputs `[t; 1]` and
//! `[x̂; 1]` (the "append a 1" trick of Tensor Fusion Networks, factorised as in
//! low-rank bilinear pooling): `B = O((U t) ⊙ (V x̂))/√r + O(b_u ⊙ V x̂)/√r +
//! O(U t ⊙ b_v)/√r + O(b_u ⊙ b_v)/√r`, i.e. the pure multiplicative text×dense
//! interaction plus terms linear in each modality and a constant. Without the biases a
//! label that depends on one modality alone could only be learned through the other.
//! The `1/√r` keeps `‖z‖² ≈ 1` at init so that `O`'s SGD steps are scaled like the rest.
//!
//! # Missing dense vector (a row flagged absent)
//!
//! The row trains and predicts from its text alone: `h = t` in every mode except image,
//! where `h = 0`: every score is then 0 and the probabilities are uniform (`1/L`); such a
//! row gives no gradient in image mode. A missing vector is never replaced by zeros (a
//! zero `x̂` would still go through `b_p`, `b_v`, the gate...): its values are never read
//! and may hold anything, NaN included. Rows with no known token and no dense vector give
//! no gradient in any mode; the trainer skips them.
//!
//! # Output and loss
//!
//! `s = W_out h` (`W_out`: `L × d`, no bias, zero at init like fastText), `q = softmax(s)`,
//! loss `ℓ = −ln q_y` (`y`: the row's label; for a row with several labels one is drawn at
//! random at each step, as fastText's softmax loss does).
//!
//! # Backward: what gets updated
//!
//! With `δ· = ∂ℓ/∂·` and `∇θ` the gradient of parameter `θ`:
//!
//! ```text
//! δs = q − e_y;   δh = W_outᵀ δs;   ∇W_out = δs hᵀ
//! missing dense:  δt = δh (image: nothing but W_out, whose gradient is 0 since h = 0)
//! image:          δp = δh
//! add:            δt = δh,  δp = δh
//! max:            δt_i = δh_i [t_i ≥ p_i],  δp_i = δh_i [t_i < p_i]   (subgradient)
//! gated (on p, or on B for bilinear_gated):
//!                 δa = δh ⊙ (t − p) ⊙ g ⊙ (1 − g)
//!                 δt = δh ⊙ g + W_g[:, :d]ᵀ δa,   δp = δh ⊙ (1 − g) + W_g[:, d:]ᵀ δa
//!                 ∇W_g = δa [t; p]ᵀ,  ∇b_g = δa
//! projection:     ∇P = δp x̂ᵀ,  ∇b_p = δp
//! bilinear:       δB = δh (bilinear) or δp of the gate (bilinear_gated)
//!                 ∇O = δB zᵀ,  δz = Oᵀ δB,  δu = δz ⊙ v / √r,  δv = δz ⊙ u / √r
//!                 ∇U = δu tᵀ,  ∇b_u = δu,  δt += Uᵀ δu,  ∇V = δv x̂ᵀ,  ∇b_v = δv
//! text:           ∇E[k_i] += (w_i / Σ_j w_j) δt     (image mode has no E at all)
//! ```
//!
//! Every parameter of the row's graph then takes the SGD step `θ ← θ − lr_t ∇θ` with
//! `lr_t = lr (1 − progress)` (fastText's linear decay; progress counts one unit per token
//! plus one per row for its dense vector). Within a step each parameter is read for
//! back-propagation before it is updated, so with one thread the step is exact SGD.
//! All parameters are shared between threads as [`HogwildMatrix`]es (Hogwild: unlocked,
//! racy, relaxed atomics); with `threads = 1` and a seed training is deterministic.
//!
//! # Initialisation
//!
//! `E ~ U(±1/d)` (as the text model), `W_out = 0`, `b_p = b_g = 0`, `b_u = b_v = 1`; every
//! other matrix is uniform `±1/√(its number of rows)`: `P, W_g, O ~ U(±1/√d)`,
//! `U, V ~ U(±1/√r)`, so each fused vector starts with a squared norm of about 1/3.
//! (In terms of the standardised but unscaled dense vector, `P ~ U(±1/√(dD))`.)
//!
//! # Learning rate and divergence
//!
//! The dense-side layers (`P`, `V`, `O` and the biases) get a full-size input on every
//! row, whereas a text embedding row moves by `lr · w_i/Σw` and only when its token occurs,
//! so the largest stable `lr` is lower than the text model's. On a synthetic task
//! (D = 512, 10 labels, 8000 rows, 5 epochs, one thread) every mode was stable at
//! `lr ≤ 0.25`; the projection modes (image, add, max, gated) also at 0.5; the bilinear
//! modes at 0.5 with `dim = 100` but not with `dim = 10`; `lr = 1` diverged in most modes.
//! A run whose scores become non-finite stops with [`MmqError::InvalidParameter`]
//! ("training diverged … lower lr"); it never returns a model with NaN weights.
//!
//! # File
//!
//! [`FusionModel::to_bytes`] writes the [`crate::io`] format with header kind
//! `fusion_classifier` (config, labels, label counts, `dense_dim`) and the tensors
//! `dense_mean`, `dense_std`, `token_ids` (u32) and those of the mode among `input` (E),
//! `output` (W_out), `proj`, `proj_bias`, `gate`, `gate_bias`, `bil_u`, `bil_u_bias`,
//! `bil_v`, `bil_v_bias`, `bil_out` (O); empty tensors are left out.
use super::compress::{QuantizeOptions, QuantizedParams};
use super::loss::{negatives_table, safe_ln, sigmoid, LossKind};
use super::output::{pair_grads, pair_loss, pair_scores, Output};
use super::{top_k, EpochRecord, Ranked, TokenIndex};
use crate::error::{MmqError, Result};
use crate::io::{self, Tensor};
use crate::text::TokenizerConfig;
use crate::train::clock::{self, run_epochs, Clock, Ticker};
use crate::train::hogwild::HogwildMatrix;
use crate::train::select::{fit_temperature_by, score_rows, Selector};
use crate::train::{label_counts, Dataset, Progress, TrainOptions};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::atomic::{AtomicU32, Ordering};

/// How the text vector `t` and the dense vector are fused (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FusionMode {
    /// `h = P x̂ + b_p`: the dense vector only (text ignored).
    #[serde(rename = "image")]
    ImageOnly,
    /// `h = t + p`.
    Add,
    /// `h = max(t, p)` elementwise.
    Max,
    /// `h = g ⊙ t + (1 − g) ⊙ p`, `g = σ(W_g [t; p] + b_g)`.
    Gated,
    /// `h = O((U t + b_u) ⊙ (V x̂ + b_v)) / √r`.
    Bilinear,
    /// The bilinear term gated against `t`.
    BilinearGated,
}

impl FusionMode {
    pub const ALL: [FusionMode; 6] = [
        Self::ImageOnly,
        Self::Add,
        Self::Max,
        Self::Gated,
        Self::Bilinear,
        Self::BilinearGated,
    ];

    /// Parse a mode name (`image`, `add`, `max`, `gated`, `bilinear`, `bilinear_gated`;
    /// `image_only` and `-` for `_` are accepted too).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "image" | "image_only" | "image-only" => Some(Self::ImageOnly),
            "add" => Some(Self::Add),
            "max" => Some(Self::Max),
            "gated" => Some(Self::Gated),
            "bilinear" => Some(Self::Bilinear),
            "bilinear_gated" | "bilinear-gated" => Some(Self::BilinearGated),
            _ => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::ImageOnly => "image",
            Self::Add => "add",
            Self::Max => "max",
            Self::Gated => "gated",
            Self::Bilinear => "bilinear",
            Self::BilinearGated => "bilinear_gated",
        }
    }

    /// Whether the mode has text embeddings.
    pub fn uses_text(&self) -> bool {
        *self != Self::ImageOnly
    }
    fn uses_proj(&self) -> bool {
        matches!(self, Self::ImageOnly | Self::Add | Self::Max | Self::Gated)
    }
    fn uses_gate(&self) -> bool {
        matches!(self, Self::Gated | Self::BilinearGated)
    }
    fn uses_bilinear(&self) -> bool {
        matches!(self, Self::Bilinear | Self::BilinearGated)
    }
}

/// Hyperparameters of a fusion classifier (stored in the model file).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct FusionConfig {
    pub mode: FusionMode,
    /// `d`: size of the text embeddings and of the fused vector.
    pub dim: usize,
    /// `r`: rank of the bilinear modes; `None` means `dim`. Ignored by other modes.
    pub rank: Option<usize>,
    pub epoch: usize,
    pub lr: f32,
    pub threads: usize,
    pub seed: u64,
    pub tokenizer: TokenizerConfig,
    /// Name of the dense column (for the bindings; not used by the math).
    pub dense_name: String,
    /// Probabilities' temperature, fitted on a validation split (1: none). Written to
    /// the file only when it is not 1, so files of earlier releases still read.
    #[serde(skip_serializing_if = "super::is_one")]
    pub temperature: f32,
    /// The output layer's loss (softmax, ns, hs, ova; see the set models'). Written only
    /// when it is not softmax, so earlier files read unchanged.
    #[serde(skip_serializing_if = "is_softmax")]
    pub loss: LossKind,
    /// ns: negative labels sampled per row (written only when not 5).
    #[serde(skip_serializing_if = "is_five")]
    pub neg: usize,
}

fn is_softmax(l: &LossKind) -> bool {
    *l == LossKind::Softmax
}

fn is_five(n: &usize) -> bool {
    *n == 5
}

impl Default for FusionConfig {
    fn default() -> Self {
        Self {
            mode: FusionMode::Gated,
            dim: 100,
            rank: None,
            epoch: 5,
            lr: 0.1,
            threads: 1,
            seed: 0,
            dense_name: String::new(),
            tokenizer: TokenizerConfig::default(),
            temperature: 1.0,
            loss: LossKind::Softmax,
            neg: 5,
        }
    }
}

impl io::StoredConfig for FusionConfig {
    const KIND: &'static str = "fusion_classifier";
    const NOUN: &'static str = "fusion classifier";
    fn check(&self) -> Result<()> {
        self.validate()
    }
}

/// The largest bilinear rank.
pub const MAX_RANK: usize = 10_000;

impl FusionConfig {
    /// The bilinear rank in use (`rank`, or `dim` when unset).
    pub fn rank(&self) -> usize {
        self.rank.unwrap_or(self.dim)
    }

    pub fn validate(&self) -> Result<()> {
        super::check_training(self.dim, self.epoch, self.lr, self.threads)?;
        if self.rank == Some(0) {
            return Err(MmqError::InvalidParameter(
                "rank must be >= 1, got 0".into(),
            ));
        }
        if self.rank() > MAX_RANK {
            return Err(MmqError::InvalidParameter(format!(
                "rank must be <= {MAX_RANK}, got {}",
                self.rank()
            )));
        }
        if self.loss == LossKind::Ns && !(1..=1000).contains(&self.neg) {
            return Err(MmqError::InvalidParameter(format!(
                "neg must be in 1..=1000 with loss 'ns', got {}",
                self.neg
            )));
        }
        super::check_temperature(self.temperature)?;
        self.tokenizer.validate()
    }
}

// Parameter slots. Biases are 1-row matrices. Unused slots (per mode) have 0 rows.
const EMB: usize = 0;
const OUT: usize = 1;
const PROJ: usize = 2;
const PROJ_B: usize = 3;
const GATE: usize = 4;
const GATE_B: usize = 5;
const BIL_U: usize = 6;
const BIL_U_B: usize = 7;
const BIL_V: usize = 8;
const BIL_V_B: usize = 9;
const BIL_O: usize = 10;
const N_PARAMS: usize = 11;
/// Tensor names in the model file.
const PARAM_NAMES: [&str; N_PARAMS] = [
    "input",
    "output",
    "proj",
    "proj_bias",
    "gate",
    "gate_bias",
    "bil_u",
    "bil_u_bias",
    "bil_v",
    "bil_v_bias",
    "bil_out",
];

/// Sizes that fix the shapes of the parameters.
#[derive(Clone, Debug)]
struct Dims {
    mode: FusionMode,
    d: usize,
    r: usize,
    dd: usize,
    nl: usize,
    /// The output layer and its loss.
    out: Output,
}

impl Dims {
    /// (rows, cols) of every parameter slot; unused slots have 0 rows.
    fn shapes(&self, n_tok: usize) -> [(usize, usize); N_PARAMS] {
        let m = self.mode;
        let on = |used: bool, rows: usize| if used { rows } else { 0 };
        let (t, p, g, b) = (
            m.uses_text(),
            m.uses_proj(),
            m.uses_gate(),
            m.uses_bilinear(),
        );
        let (d, r, dd) = (self.d, self.r, self.dd);
        [
            (on(t, n_tok), d),
            (self.out.n_out(), d),
            (on(p, d), dd),
            (on(p, 1), d),
            (on(g, d), 2 * d),
            (on(g, 1), d),
            (on(b, r), d),
            (on(b, 1), r),
            (on(b, r), dd),
            (on(b, 1), r),
            (on(b, d), r),
        ]
    }
}

/// The non-empty parameter slots as named tensors (`shapes[p]` = rows, cols of slot p).
pub(super) fn param_tensors(
    names: &[&str],
    shapes: &[(usize, usize)],
    params: &[Mat],
    q: Option<&QuantizedParams>,
) -> Result<Vec<(String, Tensor)>> {
    let mut t: Vec<(String, Tensor)> = shapes
        .iter()
        .enumerate()
        .filter(|(p, &(rows, cols))| rows * cols > 0 && !q.is_some_and(|q| q.has(*p)))
        .map(|(p, &(rows, cols))| {
            (
                names[p].to_string(),
                Tensor::F32(vec![rows, cols], params[p].data.clone()),
            )
        })
        .collect();
    if let Some(q) = q {
        t.extend(q.tensors(names)?);
    }
    Ok(t)
}

/// Read back what [`param_tensors`] wrote: slots with no element are empty.
/// With the header entry `quantized` (see [`QuantizedParams`]), its slots are decoded
/// from their codes.
pub(super) fn take_params<const N: usize>(
    names: &[&str; N],
    shapes: &[(usize, usize); N],
    t: &mut std::collections::HashMap<String, Tensor>,
    quantized: Option<&serde_json::Value>,
    what: &str,
) -> Result<([Mat; N], Option<QuantizedParams>)> {
    let mut params: [Mat; N] = std::array::from_fn(|_| Mat::default());
    let (q, mut decoded) = match quantized {
        Some(h) => {
            let (q, d) = QuantizedParams::read(h, t, names, shapes, what)?;
            (Some(q), d)
        }
        None => (None, Vec::new()),
    };
    for (p, &(rows, cols)) in shapes.iter().enumerate() {
        if let Some(i) = decoded.iter().position(|(s, _)| *s == p) {
            params[p] = Mat {
                data: decoded.swap_remove(i).1,
                cols,
            };
            continue;
        }
        let data = if io::elements(&[rows, cols], names[p], what)? == 0 {
            Vec::new()
        } else {
            io::take_f32(t, names[p], &[rows, cols], what)?
        };
        params[p] = Mat { data, cols };
    }
    Ok((params, q))
}

/// Read access to a weight matrix: the plain one of a trained model, or the shared
/// Hogwild one during training.
pub(super) trait Weights {
    /// `row(r) · v`
    fn dot_row(&self, r: usize, v: &[f32]) -> f32;
    /// `out += a * row(r)`
    fn add_row_to(&self, r: usize, a: f32, out: &mut [f32]);
    /// `row(r)[c]`
    fn at(&self, r: usize, c: usize) -> f32;
}

impl Weights for HogwildMatrix {
    #[inline]
    fn dot_row(&self, r: usize, v: &[f32]) -> f32 {
        HogwildMatrix::dot_row(self, r, v)
    }
    #[inline]
    fn add_row_to(&self, r: usize, a: f32, out: &mut [f32]) {
        HogwildMatrix::add_row_to(self, r, a, out)
    }
    #[inline]
    fn at(&self, r: usize, c: usize) -> f32 {
        HogwildMatrix::at(self, r, c)
    }
}

/// A plain row-major matrix.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Mat {
    pub(super) data: Vec<f32>,
    pub(super) cols: usize,
}

impl Mat {
    #[inline]
    pub(super) fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }
}

impl Weights for Mat {
    #[inline]
    fn dot_row(&self, r: usize, v: &[f32]) -> f32 {
        super::dot(self.row(r), v)
    }
    #[inline]
    fn add_row_to(&self, r: usize, a: f32, out: &mut [f32]) {
        for (o, w) in out.iter_mut().zip(self.row(r)) {
            *o += a * w;
        }
    }
    #[inline]
    fn at(&self, r: usize, c: usize) -> f32 {
        self.data[r * self.cols + c]
    }
}

/// Receives gradients: `∇param[row] += a * v`.
trait Sink {
    fn add(&mut self, param: usize, row: usize, a: f32, v: &[f32]);
}

/// Applies each gradient at once as an SGD step on the shared weights.
struct Sgd<'a> {
    w: &'a [HogwildMatrix; N_PARAMS],
    lr: f32,
}

impl Sink for Sgd<'_> {
    #[inline]
    fn add(&mut self, param: usize, row: usize, a: f32, v: &[f32]) {
        if a != 0.0 {
            self.w[param].add_to_row(row, -self.lr * a, v);
        }
    }
}

/// Activations of one row (forward) and scratch for its gradients (backward).
struct Cache {
    /// Text vector `t` (d).
    t: Vec<f32>,
    /// Normalised dense vector `x̂` (D); meaningful only when the row's vector is present.
    x: Vec<f32>,
    /// `p` (projection) or `B` (bilinear), d.
    p: Vec<f32>,
    g: Vec<f32>,
    /// `[t; p]` (2d), the gate's input.
    tp: Vec<f32>,
    u: Vec<f32>,
    v: Vec<f32>,
    z: Vec<f32>,
    h: Vec<f32>,
    /// Label probabilities (L).
    q: Vec<f32>,
    /// Whether [`forward`] fills `q` (training with ns / hs / ova needs only the
    /// scores of `pairs`).
    want_q: bool,
    /// ns / hs / ova: the output rows a row trains with their 0/1 targets, their scores
    /// and the scores' gradients; `nodes`: hs scratch.
    pairs: Vec<(u32, f32)>,
    ps: Vec<f32>,
    pg: Vec<f32>,
    nodes: Vec<f32>,
    ds: Vec<f32>,
    gh: Vec<f32>,
    dt: Vec<f32>,
    dp: Vec<f32>,
    da: Vec<f32>,
    dtp: Vec<f32>,
    dz: Vec<f32>,
    du: Vec<f32>,
    dv: Vec<f32>,
}

impl Cache {
    fn new(dm: &Dims) -> Self {
        let z = |n: usize| vec![0.0f32; n];
        let (d, r) = (dm.d, dm.r);
        Self {
            t: z(d),
            x: z(dm.dd),
            p: z(d),
            g: z(d),
            tp: z(2 * d),
            u: z(r),
            v: z(r),
            z: z(r),
            h: z(d),
            q: z(dm.nl),
            want_q: true,
            pairs: Vec::new(),
            ps: Vec::new(),
            pg: Vec::new(),
            nodes: Vec::new(),
            ds: z(dm.nl),
            gh: z(d),
            dt: z(d),
            dp: z(d),
            da: z(d),
            dtp: z(2 * d),
            dz: z(r),
            du: z(r),
            dv: z(r),
        }
    }
}

/// The text part of a row: compacted token rows, their weights, and `Σ w`.
struct RowText<'a> {
    rows: &'a [u32],
    weights: Option<&'a [f32]>,
    total: f32,
}

/// `t = Σ w_i E[rows_i] / Σ w_i` into `t`; returns `Σ w_i` (`t = 0` when it is 0).
fn text_mean<W: Weights>(emb: &W, rows: &[u32], weights: Option<&[f32]>, t: &mut [f32]) -> f32 {
    t.fill(0.0);
    let mut total = 0.0f32;
    for (i, &r) in rows.iter().enumerate() {
        let w = weights.map_or(1.0, |w| w[i]);
        emb.add_row_to(r as usize, w, t);
        total += w;
    }
    if total > 0.0 {
        let inv = 1.0 / total;
        t.iter_mut().for_each(|x| *x *= inv);
    } else {
        t.fill(0.0);
    }
    total
}

/// Fuse `c.t` and (when `present`) `c.x` into `c.h`, then `c.q = softmax(W_out h)`.
fn forward<W: Weights>(dm: &Dims, w: &[W; N_PARAMS], present: bool, c: &mut Cache) {
    let mode = dm.mode;
    let d = dm.d;
    if !present {
        if mode == FusionMode::ImageOnly {
            c.h.fill(0.0);
        } else {
            c.h.copy_from_slice(&c.t);
        }
    } else {
        if mode.uses_proj() {
            c.p.fill(0.0);
            w[PROJ_B].add_row_to(0, 1.0, &mut c.p);
            for (i, pi) in c.p.iter_mut().enumerate() {
                *pi += w[PROJ].dot_row(i, &c.x);
            }
        }
        if mode.uses_bilinear() {
            c.u.fill(0.0);
            w[BIL_U_B].add_row_to(0, 1.0, &mut c.u);
            for (k, uk) in c.u.iter_mut().enumerate() {
                *uk += w[BIL_U].dot_row(k, &c.t);
            }
            c.v.fill(0.0);
            w[BIL_V_B].add_row_to(0, 1.0, &mut c.v);
            for (k, vk) in c.v.iter_mut().enumerate() {
                *vk += w[BIL_V].dot_row(k, &c.x);
            }
            let s = 1.0 / (dm.r as f32).sqrt();
            for ((zk, uk), vk) in c.z.iter_mut().zip(&c.u).zip(&c.v) {
                *zk = s * uk * vk;
            }
            for (i, pi) in c.p.iter_mut().enumerate() {
                *pi = w[BIL_O].dot_row(i, &c.z);
            }
        }
        match mode {
            FusionMode::ImageOnly | FusionMode::Bilinear => c.h.copy_from_slice(&c.p),
            FusionMode::Add => {
                for ((h, t), p) in c.h.iter_mut().zip(&c.t).zip(&c.p) {
                    *h = t + p;
                }
            }
            FusionMode::Max => {
                for ((h, &t), &p) in c.h.iter_mut().zip(&c.t).zip(&c.p) {
                    *h = if t >= p { t } else { p };
                }
            }
            FusionMode::Gated | FusionMode::BilinearGated => {
                c.tp[..d].copy_from_slice(&c.t);
                c.tp[d..].copy_from_slice(&c.p);
                c.g.fill(0.0);
                w[GATE_B].add_row_to(0, 1.0, &mut c.g);
                for (i, gi) in c.g.iter_mut().enumerate() {
                    *gi = sigmoid(*gi + w[GATE].dot_row(i, &c.tp));
                }
                for (((h, t), p), g) in c.h.iter_mut().zip(&c.t).zip(&c.p).zip(&c.g) {
                    *h = g * t + (1.0 - g) * p;
                }
            }
        }
    }
    if c.want_q {
        dm.out.probs(&w[OUT], None, &c.h, &mut c.q, &mut c.nodes);
    }
}

/// Gradients of `−ln q[target]` after [`forward`] on the same row, sent to `sink` (see
/// the module docs for the formulas). Each parameter is read before its gradient is sent.
fn backward<W: Weights, S: Sink>(
    dm: &Dims,
    w: &[W; N_PARAMS],
    text: &RowText,
    present: bool,
    target: usize,
    c: &mut Cache,
    sink: &mut S,
) {
    let mode = dm.mode;
    let d = dm.d;
    c.gh.fill(0.0);
    if dm.out.needs_probs() {
        c.ds.copy_from_slice(&c.q);
        c.ds[target] -= 1.0;
        for (l, &ds) in c.ds.iter().enumerate() {
            w[OUT].add_row_to(l, ds, &mut c.gh);
        }
        for (l, &ds) in c.ds.iter().enumerate() {
            sink.add(OUT, l, ds, &c.h);
        }
    } else {
        // ns / hs / ova: binary logistic losses of the pairs ([`Cache::pairs`]).
        pair_grads(&c.pairs, &c.ps, 1.0, &mut c.pg);
        for (&(r, _), &g) in c.pairs.iter().zip(&c.pg) {
            w[OUT].add_row_to(r as usize, g, &mut c.gh);
        }
        for (&(r, _), &g) in c.pairs.iter().zip(&c.pg) {
            sink.add(OUT, r as usize, g, &c.h);
        }
    }
    c.dt.fill(0.0);
    if !present {
        if mode != FusionMode::ImageOnly {
            c.dt.copy_from_slice(&c.gh);
        }
    } else {
        match mode {
            FusionMode::ImageOnly | FusionMode::Bilinear => c.dp.copy_from_slice(&c.gh),
            FusionMode::Add => {
                c.dt.copy_from_slice(&c.gh);
                c.dp.copy_from_slice(&c.gh);
            }
            FusionMode::Max => {
                for i in 0..d {
                    if c.t[i] >= c.p[i] {
                        c.dt[i] = c.gh[i];
                        c.dp[i] = 0.0;
                    } else {
                        c.dp[i] = c.gh[i];
                    }
                }
            }
            FusionMode::Gated | FusionMode::BilinearGated => {
                for i in 0..d {
                    let (g, gh) = (c.g[i], c.gh[i]);
                    c.da[i] = gh * (c.t[i] - c.p[i]) * g * (1.0 - g);
                    c.dt[i] = gh * g;
                    c.dp[i] = gh * (1.0 - g);
                }
                c.dtp.fill(0.0);
                for (i, &da) in c.da.iter().enumerate() {
                    w[GATE].add_row_to(i, da, &mut c.dtp);
                }
                for (dt, x) in c.dt.iter_mut().zip(&c.dtp[..d]) {
                    *dt += x;
                }
                for (dp, x) in c.dp.iter_mut().zip(&c.dtp[d..]) {
                    *dp += x;
                }
                for (i, &da) in c.da.iter().enumerate() {
                    sink.add(GATE, i, da, &c.tp);
                }
                sink.add(GATE_B, 0, 1.0, &c.da);
            }
        }
        if mode.uses_proj() {
            for (i, &dp) in c.dp.iter().enumerate() {
                sink.add(PROJ, i, dp, &c.x);
            }
            sink.add(PROJ_B, 0, 1.0, &c.dp);
        }
        if mode.uses_bilinear() {
            c.dz.fill(0.0);
            for (i, &db) in c.dp.iter().enumerate() {
                w[BIL_O].add_row_to(i, db, &mut c.dz);
            }
            for (i, &db) in c.dp.iter().enumerate() {
                sink.add(BIL_O, i, db, &c.z);
            }
            let s = 1.0 / (dm.r as f32).sqrt();
            for k in 0..dm.r {
                c.du[k] = s * c.dz[k] * c.v[k];
                c.dv[k] = s * c.dz[k] * c.u[k];
            }
            for (k, &du) in c.du.iter().enumerate() {
                w[BIL_U].add_row_to(k, du, &mut c.dt);
            }
            for (k, &du) in c.du.iter().enumerate() {
                sink.add(BIL_U, k, du, &c.t);
            }
            sink.add(BIL_U_B, 0, 1.0, &c.du);
            for (k, &dv) in c.dv.iter().enumerate() {
                sink.add(BIL_V, k, dv, &c.x);
            }
            sink.add(BIL_V_B, 0, 1.0, &c.dv);
        }
    }
    if mode.uses_text() && text.total > 0.0 {
        let inv = 1.0 / text.total;
        for (i, &r) in text.rows.iter().enumerate() {
            let wi = text.weights.map_or(1.0, |w| w[i]);
            sink.add(EMB, r as usize, wi * inv, &c.dt);
        }
    }
}

/// Check the dense inputs of `n` rows.
fn validate_dense(dense: &[f32], dense_dim: usize, present: &[bool], n: usize) -> Result<()> {
    let bad = |m: String| Err(MmqError::InvalidInput(m));
    if dense_dim == 0 {
        return bad("dense_dim must be >= 1, got 0".into());
    }
    if present.len() != n {
        return bad(format!("{} presence flags for {n} rows", present.len()));
    }
    if n.checked_mul(dense_dim) != Some(dense.len()) {
        return bad(format!(
            "{} dense values for {n} rows of dimension {dense_dim} (expected {n} × {dense_dim})",
            dense.len()
        ));
    }
    for (i, row) in dense.chunks_exact(dense_dim).enumerate() {
        if !present[i] {
            continue;
        }
        if let Some(j) = row.iter().position(|x| !x.is_finite()) {
            return bad(format!(
                "dense row {i} has a non-finite value {} at dimension {j}",
                row[j]
            ));
        }
    }
    Ok(())
}

/// Per-dimension mean and std of the present rows (f64 accumulation, two passes).
fn dense_stats(dense: &[f32], dd: usize, present: &[bool]) -> (Vec<f32>, Vec<f32>) {
    let rows = || {
        dense
            .chunks_exact(dd)
            .zip(present)
            .filter(|(_, &p)| p)
            .map(|(r, _)| r)
    };
    let n = present.iter().filter(|&&p| p).count();
    if n == 0 {
        return (vec![0.0; dd], vec![1.0; dd]);
    }
    let mut mean = vec![0.0f64; dd];
    for r in rows() {
        for (m, &x) in mean.iter_mut().zip(r) {
            *m += x as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut var = vec![0.0f64; dd];
    for r in rows() {
        for ((v, &x), m) in var.iter_mut().zip(r).zip(&mean) {
            let e = x as f64 - m;
            *v += e * e;
        }
    }
    let std = var
        .iter()
        .map(|v| {
            let s = (v / n as f64).sqrt();
            if s > 1e-8 {
                s as f32
            } else {
                1.0
            }
        })
        .collect();
    (mean.iter().map(|&m| m as f32).collect(), std)
}

/// `1 / (s_j √D)`, the factor of `x̂_j = (x_j − μ_j) · scale_j`.
fn dense_scale(std: &[f32]) -> Vec<f32> {
    let root = (std.len() as f32).sqrt();
    std.iter().map(|s| 1.0 / (s * root)).collect()
}

#[inline]
fn normalise(x: &[f32], mean: &[f32], scale: &[f32], out: &mut [f32]) {
    for (((o, &x), m), s) in out.iter_mut().zip(x).zip(mean).zip(scale) {
        *o = (x - m) * s;
    }
}

/// A trained fusion classifier.
#[derive(Clone, Debug)]
pub struct FusionModel {
    pub cfg: FusionConfig,
    pub labels: Vec<String>,
    /// Training rows per label.
    pub label_counts: Vec<u64>,
    /// `D`, the length of a dense vector.
    pub dense_dim: usize,
    /// Token ids with a text embedding (empty in image mode).
    pub index: TokenIndex,
    /// Per-dimension mean of the present training rows' dense vectors.
    pub dense_mean: Vec<f32>,
    /// Per-dimension std of the same (1 for constant dimensions).
    pub dense_std: Vec<f32>,
    scale: Vec<f32>,
    params: [Mat; N_PARAMS],
    /// Per-epoch record of a run with a validation split (else empty).
    pub history: Vec<EpochRecord>,
    /// The codes of a quantized model ([`FusionModel::quantize`]).
    pub quantized: Option<QuantizedParams>,
    /// The output layer (hs: its tree, built from `label_counts`; not stored).
    out: Output,
}

impl FusionModel {
    /// fastText's `quantize` for this kind: a copy whose token rows (and with `qout`
    /// the output matrix) are product-quantized, stored as codes in its file.
    pub fn quantize(&self, o: &QuantizeOptions) -> Result<Self> {
        let mut m = self.clone();
        m.quantized = Some(QuantizedParams::fit(
            &mut m.params,
            (EMB, OUT),
            self.quantized.is_some(),
            o,
        )?);
        Ok(m)
    }

    pub fn n_labels(&self) -> usize {
        self.labels.len()
    }

    fn dims(&self) -> Dims {
        Dims {
            mode: self.cfg.mode,
            d: self.cfg.dim,
            r: self.cfg.rank(),
            dd: self.dense_dim,
            nl: self.labels.len(),
            out: self.out.clone(),
        }
    }

    /// Check that `dense` is a usable dense vector for this model: the right length and
    /// finite. [`Self::probs`] does not check finiteness (NaN in, NaN out).
    pub fn check_dense(&self, dense: &[f32]) -> Result<()> {
        if dense.len() != self.dense_dim {
            return Err(MmqError::InvalidInput(format!(
                "dense vector of length {}, the model expects {}",
                dense.len(),
                self.dense_dim
            )));
        }
        if let Some(j) = dense.iter().position(|x| !x.is_finite()) {
            return Err(MmqError::InvalidInput(format!(
                "dense vector has a non-finite value {} at dimension {j}",
                dense[j]
            )));
        }
        Ok(())
    }

    /// Probability of every label. `tokens` are raw ids (hash buckets, extra ids), not yet
    /// compacted; ids unseen in training are ignored. `dense`: the row's raw dense vector,
    /// or `None` when it is missing (then the prediction uses the text alone, or is
    /// uniform in image mode). Panics if `dense` has the wrong length.
    pub fn probs(&self, tokens: &[u32], dense: Option<&[f32]>, out: &mut Vec<f32>) {
        self.probs_weighted(tokens, None, dense, out)
    }

    /// [`Self::probs`] with per-token weights.
    pub fn probs_weighted(
        &self,
        tokens: &[u32],
        weights: Option<&[f32]>,
        dense: Option<&[f32]>,
        out: &mut Vec<f32>,
    ) {
        let (mut rows, mut ws) = (Vec::with_capacity(tokens.len()), Vec::new());
        if self.cfg.mode.uses_text() {
            for (i, &tok) in tokens.iter().enumerate() {
                if let Some(r) = self.index.get(tok) {
                    rows.push(r);
                    if let Some(w) = weights {
                        ws.push(w[i]);
                    }
                }
            }
        }
        let ws = weights.map(|_| &ws[..]);
        if let Some(x) = dense {
            assert_eq!(
                x.len(),
                self.dense_dim,
                "dense vector of length {}, the model expects {}",
                x.len(),
                self.dense_dim
            );
        }
        self.probs_compact((&rows, ws), dense, out)
    }

    /// [`Self::probs_weighted`] for tokens already compacted to embedding rows.
    fn probs_compact(
        &self,
        text: (&[u32], Option<&[f32]>),
        dense: Option<&[f32]>,
        out: &mut Vec<f32>,
    ) {
        let dm = self.dims();
        let mut c = Cache::new(&dm);
        row_forward(
            &dm,
            &self.params,
            &self.dense_mean,
            &self.scale,
            text,
            dense,
            &mut c,
        );
        out.clear();
        out.extend_from_slice(&c.q);
        dm.out.temper(out, self.cfg.temperature);
    }

    /// The `k` most probable labels with probability >= `threshold`, most probable first.
    pub fn predict(
        &self,
        tokens: &[u32],
        dense: Option<&[f32]>,
        k: usize,
        threshold: f32,
    ) -> Ranked {
        let mut buf = Vec::new();
        self.probs(tokens, dense, &mut buf);
        top_k(&buf, k, threshold)
    }

    /// The file header (without the framing keys [`io::to_bytes`] adds).
    fn header(&self) -> Result<serde_json::Value> {
        let mut h = json!({
            "kind": <FusionConfig as io::StoredConfig>::KIND,
            "config": self.cfg,
            "labels": self.labels,
            "label_counts": self.label_counts,
            "dense_dim": self.dense_dim,
        });
        // Only runs with a validation split have one (files of earlier releases lack it).
        if !self.history.is_empty() {
            h["history"] = json!(self.history);
        }
        if let Some(q) = &self.quantized {
            h["quantized"] = q.header(&PARAM_NAMES)?;
        }
        Ok(h)
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let header = self.header()?;
        let dd = self.dense_dim;
        let mut tensors = vec![
            (
                "dense_mean".to_string(),
                Tensor::F32(vec![dd], self.dense_mean.clone()),
            ),
            (
                "dense_std".to_string(),
                Tensor::F32(vec![dd], self.dense_std.clone()),
            ),
        ];
        if !self.index.is_empty() {
            tensors.push((
                "token_ids".to_string(),
                Tensor::U32(vec![self.index.len()], self.index.ids.clone()),
            ));
        }
        let shapes = self.dims().shapes(self.index.len());
        tensors.extend(param_tensors(
            &PARAM_NAMES,
            &shapes,
            &self.params,
            self.quantized.as_ref(),
        )?);
        io::to_bytes(&header, &tensors)
    }

    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<Self> {
        let bad = |reason: String| MmqError::InvalidModelFile {
            path: what.to_string(),
            reason,
        };
        let io::ClassifierFile {
            header,
            tensors: mut t,
            cfg,
            labels,
            label_counts,
        } = io::read_classifier::<FusionConfig>(bytes, what)?;
        let dense_dim = header
            .get("dense_dim")
            .and_then(|v| v.as_u64())
            .filter(|&v| v >= 1)
            .ok_or_else(|| bad("missing or bad dense_dim".into()))?
            as usize;
        let dense_mean = io::take_f32(&mut t, "dense_mean", &[dense_dim], what)?;
        let dense_std = io::take_f32(&mut t, "dense_std", &[dense_dim], what)?;
        if dense_mean.iter().any(|x| !x.is_finite())
            || dense_std.iter().any(|x| !(x.is_finite() && *x > 0.0))
        {
            return Err(bad("dense mean/std are not finite and positive".into()));
        }
        let ids = if cfg.mode.uses_text() && t.contains_key("token_ids") {
            io::take_u32(&mut t, "token_ids", what)?
        } else {
            Vec::new()
        };
        if label_counts.len() != labels.len() {
            return Err(bad(format!(
                "{} label counts for {} labels",
                label_counts.len(),
                labels.len()
            )));
        }
        let out = Output::new(cfg.loss, &label_counts).map_err(|e| bad(e.to_string()))?;
        let dm = Dims {
            mode: cfg.mode,
            d: cfg.dim,
            r: cfg.rank(),
            dd: dense_dim,
            nl: labels.len(),
            out: out.clone(),
        };
        let shapes = dm.shapes(ids.len());
        let (params, quantized) =
            take_params(&PARAM_NAMES, &shapes, &mut t, header.get("quantized"), what)?;
        let m = Self {
            index: TokenIndex::from_ids(ids).map_err(|e| bad(e.to_string()))?,
            scale: dense_scale(&dense_std),
            cfg,
            labels,
            label_counts,
            dense_dim,
            dense_mean,
            dense_std,
            params,
            history: EpochRecord::read_all(&header, "history", what)?,
            quantized,
            out,
        };
        io::check_keys(&header, &m.header()?, what)?;
        Ok(m)
    }

    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        io::write_atomic(path, &self.to_bytes()?)
    }

    pub fn load(path: &std::path::Path) -> Result<Self> {
        Self::from_bytes(&io::read(path)?, &path.display().to_string())
    }
}

/// Validation rows of a fusion classifier: text tokens and labels (raw ids, labels
/// indexed like the training labels; an index past them is a label training never saw)
/// and the dense vectors, laid out as for [`train_fusion`].
pub struct FusionRows<'a> {
    pub data: Dataset<'a>,
    pub dense: &'a [f32],
    pub present: &'a [bool],
}

/// Train a fusion classifier on `data` (tokens and labels, CSR) and one dense vector per
/// row: `dense` is `n × dense_dim` row-major, `present[i]` says whether row `i` has one
/// (absent rows' values are never read). `callback` is called from one training thread
/// about every 100 ms and once at the end; training stops with [`MmqError::Interrupted`]
/// when it returns false.
pub fn train_fusion(
    cfg: FusionConfig,
    labels: Vec<String>,
    data: &Dataset,
    dense: &[f32],
    dense_dim: usize,
    present: &[bool],
    callback: &(dyn Fn(&Progress) -> bool + Sync),
) -> Result<FusionModel> {
    let rows = FusionRows {
        data: Dataset { ..*data },
        dense,
        present,
    };
    train_fusion_with(
        cfg,
        labels,
        &rows,
        dense_dim,
        &TrainOptions::default(),
        callback,
    )
}

/// [`train_fusion`] with a validation split, early stopping and calibration: the same
/// selection as the text model's ([`crate::train::select`]).
pub fn train_fusion_with(
    mut cfg: FusionConfig,
    labels: Vec<String>,
    train: &FusionRows,
    dense_dim: usize,
    opts: &TrainOptions<FusionRows>,
    callback: &(dyn Fn(&Progress) -> bool + Sync),
) -> Result<FusionModel> {
    if opts.class_weights.is_some() {
        return Err(MmqError::InvalidParameter(
            "class weights are for text and discrete-fusion models (train::train_with)".into(),
        ));
    }
    let FusionRows {
        data,
        dense,
        present,
    } = train;
    let (data, dense, present) = (data, *dense, *present);
    opts.check()?;
    cfg.temperature = 1.0;
    cfg.validate()?;
    let nl = labels.len();
    if nl < 2 {
        return Err(MmqError::InvalidInput(format!(
            "a classifier needs at least 2 labels, got {nl}"
        )));
    }
    data.validate(nl)?;
    let n = data.n_rows();
    validate_dense(dense, dense_dim, present, n)?;
    let counts = label_counts(data.labels, &labels)?;
    let mode = cfg.mode;
    if mode == FusionMode::ImageOnly && !present.iter().any(|&p| p) {
        return Err(MmqError::InvalidInput(
            "fusion mode 'image' needs at least one row with a dense vector, none is present"
                .into(),
        ));
    }
    if let Some(v) = opts.valid {
        v.data.validate_values(usize::MAX).map_err(|e| match e {
            MmqError::InvalidInput(m) => MmqError::InvalidInput(format!("validation rows: {m}")),
            e => e,
        })?;
        validate_dense(v.dense, dense_dim, v.present, v.data.n_rows())
            .map_err(|e| MmqError::InvalidInput(format!("validation rows: {e}")))?;
    }
    let (dense_mean, dense_std) = dense_stats(dense, dense_dim, present);
    let scale = dense_scale(&dense_std);

    // Compact the token id space to the ids seen in training (no text in image mode).
    let mut index = TokenIndex::default();
    let rows: Vec<u32> = if mode.uses_text() {
        data.tokens
            .iter()
            .map(|&t| index.get_or_insert(t))
            .collect()
    } else {
        Vec::new()
    };
    let out = Output::new(cfg.loss, &counts)?;
    let dm = Dims {
        mode,
        d: cfg.dim,
        r: cfg.rank(),
        dd: dense_dim,
        nl,
        out: out.clone(),
    };
    let shapes = dm.shapes(index.len());
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed);
    let init: [f32; N_PARAMS] = {
        let (d, r) = (dm.d as f32, dm.r as f32);
        let mut b = [0.0f32; N_PARAMS];
        b[EMB] = 1.0 / d;
        b[PROJ] = 1.0 / d.sqrt();
        b[GATE] = 1.0 / d.sqrt();
        b[BIL_U] = 1.0 / r.sqrt();
        b[BIL_V] = 1.0 / r.sqrt();
        b[BIL_O] = 1.0 / d.sqrt();
        b
    };
    let mut mats = Vec::with_capacity(N_PARAMS);
    for (p, &(prow, cols)) in shapes.iter().enumerate() {
        let len = prow * cols;
        let v: Vec<f32> = match p {
            BIL_U_B | BIL_V_B => vec![1.0; len],
            _ if init[p] > 0.0 => {
                let b = init[p];
                (0..len).map(|_| rng.random_range(-b..b)).collect()
            }
            _ => vec![0.0; len],
        };
        mats.push(HogwildMatrix::from_vec(v, cols));
    }
    let w: [HogwildMatrix; N_PARAMS] = mats
        .try_into()
        .unwrap_or_else(|_| unreachable!("N_PARAMS matrices"));

    let threads = cfg.threads;
    let clock = Clock::new(
        (data.tokens.len() + n) as u64 * cfg.epoch as u64,
        threads,
        callback,
    );
    let negatives = if cfg.loss == LossKind::Ns {
        negatives_table(&counts, &mut rng)
    } else {
        Vec::new()
    };
    let shared = Shared {
        cfg: &cfg,
        dm: dm.clone(),
        w: &w,
        rows: &rows,
        data,
        dense,
        present,
        mean: &dense_mean,
        scale: &scale,
        diverged_lr: AtomicU32::new(0),
        clock: &clock,
        negatives: &negatives,
    };
    let mut order: Vec<u32> = (0..n as u32).collect();
    let work = |epoch: usize, t: usize, seed: u64, part: &[u32]| {
        Worker::new(&shared, seed).run(part, epoch, t == 0)
    };
    let mut after = |epoch: usize| match shared.diverged_lr.load(Ordering::Relaxed) {
        0 => Ok(()),
        bits => Err(diverged(epoch, f32::from_bits(bits), cfg.lr)),
    };
    let pool = clock::pool(threads)?;
    // The validation rows' tokens, compacted once (ids unseen in training left out).
    let vtext = opts
        .valid
        .map(|v| CompactRows::new(&v.data, &index, mode.uses_text()));
    let mut sel = Selector::new(opts.patience, opts.deadline, cfg.epoch, 1);
    for epoch in 0..cfg.epoch {
        run_epochs(
            &pool,
            threads,
            cfg.seed,
            epoch..epoch + 1,
            &mut order,
            &clock,
            &work,
            &mut after,
        )?;
        let train_loss = clock.take_epoch_loss();
        let (Some(v), Some(vt)) = (opts.valid, &vtext) else {
            continue;
        };
        let scored = pool.install(|| score_compact(&dm, &w, (&dense_mean, &scale), v, vt, 1.0));
        if sel.record(epoch, train_loss, scored, &clock, || {
            w.iter().map(HogwildMatrix::snapshot).collect::<Vec<_>>()
        }) {
            break;
        }
    }
    clock.finish(cfg.epoch)?;
    let (history, best) = sel.finish();
    let mut best = best.map(Vec::into_iter);
    let params: [Mat; N_PARAMS] = {
        let mut out: [Mat; N_PARAMS] = Default::default();
        for (p, m) in w.into_iter().enumerate() {
            out[p] = Mat {
                data: match best.as_mut().and_then(Iterator::next) {
                    Some(b) => b,
                    None => m.into_vec(),
                },
                cols: shapes[p].1,
            };
        }
        out
    };
    // The last steps may have overflowed after their forward pass was checked.
    if !params.iter().all(|m| m.data.iter().all(|x| x.is_finite())) {
        return Err(diverged(cfg.epoch - 1, 0.0, cfg.lr));
    }
    let mut model = FusionModel {
        cfg,
        labels,
        label_counts: counts,
        dense_dim,
        index,
        dense_mean,
        dense_std,
        scale,
        params,
        history,
        quantized: None,
        out,
    };
    if let (Some(v), Some(vt), true) = (opts.valid, &vtext, opts.calibrate) {
        let m = &model;
        let stats = (&m.dense_mean[..], &m.scale[..]);
        let t = fit_temperature_by(|t| {
            pool.install(|| score_compact(&dm, &m.params, stats, v, vt, t))
                .0
        });
        model.cfg.temperature = t;
    }
    Ok(model)
}

/// Label probabilities of one row into `c.q`: its text as compacted embedding rows with
/// their weights, and its raw dense vector (`None`: missing), standardised by
/// `mean`/`scale`. The one forward pass of prediction, validation and calibration.
fn row_forward<W: Weights>(
    dm: &Dims,
    w: &[W; N_PARAMS],
    mean: &[f32],
    scale: &[f32],
    (rows, weights): (&[u32], Option<&[f32]>),
    dense: Option<&[f32]>,
    c: &mut Cache,
) {
    if dm.mode.uses_text() {
        text_mean(&w[EMB], rows, weights, &mut c.t);
    } else {
        c.t.fill(0.0);
    }
    if let Some(x) = dense {
        normalise(x, mean, scale, &mut c.x);
    }
    forward(dm, w, dense.is_some(), c);
}

/// Mean loss and accuracy at temperature `t` of the weights `w` on validation rows `v`,
/// whose tokens [`CompactRows`] has compacted into `vt`; `(mean, scale)` standardise the
/// dense vectors.
fn score_compact<W: Weights + Sync>(
    dm: &Dims,
    w: &[W; N_PARAMS],
    (mean, scale): (&[f32], &[f32]),
    v: &FusionRows,
    vt: &CompactRows,
    t: f32,
) -> (f32, f32) {
    score_rows(
        v.data.label_offsets,
        v.data.labels,
        || Cache::new(dm),
        |c, i, out| {
            row_forward(dm, w, mean, scale, vt.row(i), v.dense_row(i, dm.dd), c);
            out.clear();
            out.extend_from_slice(&c.q);
            dm.out.temper(out, t);
        },
    )
}

/// Rows of raw token ids compacted to a model's embedding rows (ids the model does not
/// know left out), with their weights.
struct CompactRows {
    offsets: Vec<usize>,
    rows: Vec<u32>,
    weights: Option<Vec<f32>>,
}

impl CompactRows {
    fn new(data: &Dataset, index: &TokenIndex, text: bool) -> Self {
        let n = data.n_rows();
        let mut out = Self {
            offsets: Vec::with_capacity(n + 1),
            rows: Vec::new(),
            weights: data.weights.map(|_| Vec::new()),
        };
        out.offsets.push(0);
        for i in 0..n {
            if text {
                for j in data.offsets[i]..data.offsets[i + 1] {
                    if let Some(r) = index.get(data.tokens[j]) {
                        out.rows.push(r);
                        if let (Some(o), Some(w)) = (out.weights.as_mut(), data.weights) {
                            o.push(w[j]);
                        }
                    }
                }
            }
            out.offsets.push(out.rows.len());
        }
        out
    }

    fn row(&self, i: usize) -> (&[u32], Option<&[f32]>) {
        let (a, b) = (self.offsets[i], self.offsets[i + 1]);
        (&self.rows[a..b], self.weights.as_deref().map(|w| &w[a..b]))
    }
}

impl FusionRows<'_> {
    fn dense_row(&self, i: usize, dd: usize) -> Option<&[f32]> {
        self.present[i].then(|| &self.dense[i * dd..(i + 1) * dd])
    }
}

fn diverged(epoch: usize, at_lr: f32, lr: f32) -> MmqError {
    MmqError::InvalidParameter(format!(
        "training diverged (non-finite scores) in epoch {epoch} at learning rate {at_lr}: \
         lower lr (now {lr}); the dense-side layers take full-size SGD steps every row"
    ))
}

struct Shared<'a> {
    cfg: &'a FusionConfig,
    dm: Dims,
    w: &'a [HogwildMatrix; N_PARAMS],
    /// Compacted token rows, aligned with `data.tokens` (empty in image mode).
    rows: &'a [u32],
    data: &'a Dataset<'a>,
    dense: &'a [f32],
    present: &'a [bool],
    mean: &'a [f32],
    scale: &'a [f32],
    /// Bits of the learning rate at which a row's scores became non-finite (0: none).
    diverged_lr: AtomicU32,
    clock: &'a Clock<'a>,
    /// ns: the table negative labels are drawn from.
    negatives: &'a [u32],
}

struct Worker<'a> {
    s: &'a Shared<'a>,
    rng: Xoshiro256PlusPlus,
    c: Cache,
}

impl<'a> Worker<'a> {
    fn new(s: &'a Shared<'a>, seed: u64) -> Self {
        let mut c = Cache::new(&s.dm);
        c.want_q = s.dm.out.needs_probs();
        Self {
            s,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            c,
        }
    }

    fn run(&mut self, part: &[u32], epoch: usize, reporter: bool) {
        let s = self.s;
        let mut tick = Ticker::new(s.clock, reporter);
        for (i, &row) in part.iter().enumerate() {
            let row = row as usize;
            let (a, b) = (s.data.offsets[row], s.data.offsets[row + 1]);
            let (_, lr) = tick.lr(s.clock, s.cfg.lr);
            let (la, lb) = (s.data.label_offsets[row], s.data.label_offsets[row + 1]);
            let labels = &s.data.labels[la..lb];
            match self.update(row, a, b, labels, lr) {
                Some(loss) => tick.loss(loss),
                None if s.clock.stopped() => return,
                None => {}
            }
            if !tick.tick(s.clock, i, (b - a) as u64 + 1, epoch, s.cfg.lr) {
                return;
            }
        }
        tick.flush(s.clock);
    }

    /// One SGD step on row `row` (tokens `a..b`); its loss, or `None` when the row carries
    /// nothing to learn from (no known token and no dense vector).
    fn update(&mut self, row: usize, a: usize, b: usize, labels: &[u32], lr: f32) -> Option<f32> {
        let s = self.s;
        let dm = &s.dm;
        let c = &mut self.c;
        let weights = s.data.weights.map(|w| &w[a..b]);
        let text = if dm.mode.uses_text() {
            let rows = &s.rows[a..b];
            let total = text_mean(&s.w[EMB], rows, weights, &mut c.t);
            RowText {
                rows,
                weights,
                total,
            }
        } else {
            c.t.fill(0.0);
            RowText {
                rows: &[],
                weights: None,
                total: 0.0,
            }
        };
        let present = s.present[row];
        if !present && text.total <= 0.0 {
            return None;
        }
        if present {
            let dd = dm.dd;
            normalise(
                &s.dense[row * dd..(row + 1) * dd],
                s.mean,
                s.scale,
                &mut c.x,
            );
        }
        let target = if labels.len() == 1 {
            labels[0]
        } else {
            labels[self.rng.random_range(0..labels.len())]
        } as usize;
        if !dm.out.needs_probs() {
            let neg = (s.cfg.neg, s.negatives);
            dm.out
                .pairs(target, labels, neg, &mut self.rng, &mut c.pairs);
        }
        forward(dm, s.w, present, c);
        let finite = if dm.out.needs_probs() {
            c.q.iter().all(|q| q.is_finite())
        } else {
            pair_scores(&s.w[OUT], None, &c.h, &c.pairs, &mut c.ps);
            c.ps.iter().all(|q| q.is_finite())
        };
        if !finite {
            // Diverged: stop every thread rather than spread NaN through the weights.
            s.diverged_lr.store(lr.to_bits(), Ordering::Relaxed);
            s.clock.request_stop();
            return None;
        }
        let loss = if dm.out.needs_probs() {
            -safe_ln(c.q[target])
        } else {
            pair_loss(&c.pairs, &c.ps)
        };
        let mut sink = Sgd { w: s.w, lr };
        backward(dm, s.w, &text, present, target, c, &mut sink);
        Some(loss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---------- gradient check ----------

    /// Accumulates gradients into dense arrays.
    struct Grads(Vec<Vec<f32>>, Vec<usize>);
    impl Sink for Grads {
        fn add(&mut self, param: usize, row: usize, a: f32, v: &[f32]) {
            let cols = self.1[param];
            for (g, x) in self.0[param][row * cols..(row + 1) * cols]
                .iter_mut()
                .zip(v)
            {
                *g += a * x;
            }
        }
    }

    fn tiny_params(dm: &Dims, n_tok: usize, seed: u64) -> [Mat; N_PARAMS] {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut out: [Mat; N_PARAMS] = Default::default();
        for (p, &(rows, cols)) in dm.shapes(n_tok).iter().enumerate() {
            out[p] = Mat {
                data: (0..rows * cols)
                    .map(|_| rng.random_range(-0.8f32..0.8))
                    .collect(),
                cols,
            };
        }
        out
    }

    fn loss_at(
        dm: &Dims,
        w: &[Mat; N_PARAMS],
        text: &RowText,
        x: Option<&[f32]>,
        target: usize,
        c: &mut Cache,
    ) -> f32 {
        if dm.mode.uses_text() {
            text_mean(&w[EMB], text.rows, text.weights, &mut c.t);
        } else {
            c.t.fill(0.0);
        }
        if let Some(x) = x {
            c.x.copy_from_slice(x);
        }
        forward(dm, w, x.is_some(), c);
        if dm.out.needs_probs() {
            -c.q[target].ln()
        } else {
            pair_scores(&w[OUT], None, &c.h, &c.pairs, &mut c.ps);
            pair_loss(&c.pairs, &c.ps)
        }
    }

    #[test]
    fn fusion_gradients_match_finite_differences() {
        let (d, dd, r, nl, n_tok) = (3, 4, 2, 3, 5);
        let rows = [0u32, 2, 2, 4];
        let wts = [1.0f32, 0.5, 2.0, 1.5];
        let x = [0.7f32, -1.1, 0.3, 0.9];
        let losses = [LossKind::Softmax, LossKind::Ns, LossKind::Hs, LossKind::Ova];
        for (mode, loss) in FusionMode::ALL
            .into_iter()
            .flat_map(|m| losses.map(|l| (m, l)))
        {
            for present in [true, false] {
                let out = Output::new(loss, &[3, 2, 1]).unwrap();
                let dm = Dims {
                    mode,
                    d,
                    r,
                    dd,
                    nl,
                    out: out.clone(),
                };
                let mut c = Cache::new(&dm);
                // The output rows each loss trains for target 1 (ns: two negatives, one
                // repeated; hs: its path; ova: every label).
                c.pairs = match loss {
                    LossKind::Softmax => vec![],
                    LossKind::Ns => vec![(1, 1.0), (0, 0.0), (2, 0.0), (0, 0.0)],
                    LossKind::Hs => {
                        let t = out.tree.as_ref().unwrap();
                        t.paths[1]
                            .iter()
                            .zip(&t.codes[1])
                            .map(|(&n, &b)| (n, b as u8 as f32))
                            .collect()
                    }
                    LossKind::Ova => vec![(0, 0.0), (1, 1.0), (2, 0.0)],
                };
                // Pick parameters away from the kinks of max().
                let mut seed = 0;
                let mut w = tiny_params(&dm, n_tok, seed);
                let text = |w: &[Mat; N_PARAMS], c: &mut Cache| RowText {
                    rows: &rows,
                    weights: Some(&wts),
                    total: if mode.uses_text() {
                        text_mean(&w[EMB], &rows, Some(&wts), &mut c.t)
                    } else {
                        0.0
                    },
                };
                loop {
                    let tx = text(&w, &mut c);
                    loss_at(&dm, &w, &tx, present.then_some(&x[..]), 1, &mut c);
                    let gap = c.t.iter().zip(&c.p).map(|(a, b)| (a - b).abs());
                    if mode != FusionMode::Max || gap.fold(f32::INFINITY, f32::min) > 0.2 {
                        break;
                    }
                    seed += 1;
                    w = tiny_params(&dm, n_tok, seed);
                }
                let target = 1;
                let xo = present.then_some(&x[..]);
                let tx = text(&w, &mut c);
                loss_at(&dm, &w, &tx, xo, target, &mut c);
                let shapes = dm.shapes(n_tok);
                let mut g = Grads(
                    shapes.iter().map(|&(r, c)| vec![0.0; r * c]).collect(),
                    shapes.iter().map(|s| s.1).collect(),
                );
                backward(&dm, &w, &tx, present, target, &mut c, &mut g);
                let eps = 1e-2f32;
                let mut checked = 0;
                for p in 0..N_PARAMS {
                    for k in 0..w[p].data.len() {
                        let mut wp = w.clone();
                        wp[p].data[k] += eps;
                        let tx = text(&wp, &mut c);
                        let lp = loss_at(&dm, &wp, &tx, xo, target, &mut c);
                        wp[p].data[k] -= 2.0 * eps;
                        let tx = text(&wp, &mut c);
                        let lm = loss_at(&dm, &wp, &tx, xo, target, &mut c);
                        let num = (lp - lm) / (2.0 * eps);
                        let ana = g.0[p][k];
                        assert!(
                            (num - ana).abs() <= 2e-3 + 2e-2 * num.abs(),
                            "mode {} {loss:?} present {present}: d/d{}[{k}] numeric {num} analytic {ana}",
                            mode.name(),
                            PARAM_NAMES[p]
                        );
                        checked += 1;
                    }
                }
                assert!(checked > 20, "{checked}");
                // Some gradient must flow to the text and (when present) the dense side.
                if mode.uses_text() {
                    assert!(g.0[EMB].iter().any(|&v| v.abs() > 1e-4), "{}", mode.name());
                }
                if present && mode.uses_proj() {
                    assert!(g.0[PROJ].iter().any(|&v| v.abs() > 1e-4));
                }
                if !present {
                    for p in [PROJ, PROJ_B, GATE, GATE_B, BIL_U, BIL_V, BIL_O] {
                        assert!(g.0[p].iter().all(|&v| v == 0.0), "{}", PARAM_NAMES[p]);
                    }
                }
            }
        }
    }

    // ---------- synthetic tasks ----------

    #[derive(Clone, Copy, PartialEq)]
    enum Task {
        Text,
        Dense,
    }

    struct Synth {
        offsets: Vec<usize>,
        tokens: Vec<u32>,
        label_offsets: Vec<usize>,
        labels: Vec<u32>,
        dense: Vec<f32>,
        present: Vec<bool>,
    }

    impl Synth {
        fn dataset(&self) -> Dataset<'_> {
            Dataset {
                offsets: &self.offsets,
                tokens: &self.tokens,
                weights: None,
                label_offsets: &self.label_offsets,
                labels: &self.labels,
            }
        }
        fn row(&self, i: usize) -> (&[u32], &[f32]) {
            (
                &self.tokens[self.offsets[i]..self.offsets[i + 1]],
                &self.dense[i * DD..(i + 1) * DD],
            )
        }
    }

    const DD: usize = 16;
    const NL: usize = 3;

    fn gauss(rng: &mut Xoshiro256PlusPlus) -> f32 {
        let u1: f32 = rng.random_range(1e-7f32..1.0);
        let u2: f32 = rng.random_range(0.0f32..1.0);
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }

    /// `n` rows, label `i % 3`. Text task: 2 label tokens (ids 1000·y + 0..10) and 3 noise
    /// tokens; dense task: 4 noise tokens and a class centroid plus noise. The dense
    /// vectors are small and off-centre, as image embeddings are. Rows with
    /// `present = false` get NaN dense values (they must never be read).
    fn synth(n: usize, task: Task, seed: u64, missing: f32) -> Synth {
        let mut crng = Xoshiro256PlusPlus::seed_from_u64(12345);
        let centroids: Vec<f32> = (0..NL * DD).map(|_| gauss(&mut crng)).collect();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut s = Synth {
            offsets: vec![0],
            tokens: vec![],
            label_offsets: vec![0],
            labels: vec![],
            dense: vec![],
            present: vec![],
        };
        for i in 0..n {
            let y = (i % NL) as u32;
            let mut toks = vec![];
            if task == Task::Text {
                for _ in 0..2 {
                    toks.push(1000 * y + rng.random_range(0..10));
                }
            }
            let n_noise = if task == Task::Text { 3 } else { 4 };
            for _ in 0..n_noise {
                toks.push(5000 + rng.random_range(0..40));
            }
            s.tokens.extend(&toks);
            s.offsets.push(s.tokens.len());
            s.labels.push(y);
            s.label_offsets.push(s.labels.len());
            let pres = rng.random_range(0.0f32..1.0) >= missing;
            s.present.push(pres);
            for j in 0..DD {
                let signal = if task == Task::Dense {
                    centroids[y as usize * DD + j]
                } else {
                    0.0
                };
                let v = 0.3 + 0.05 * (signal + 1.2 * gauss(&mut rng));
                s.dense.push(if pres { v } else { f32::NAN });
            }
        }
        s
    }

    fn cfg(mode: FusionMode) -> FusionConfig {
        FusionConfig {
            mode,
            dim: 16,
            rank: None,
            epoch: 15,
            lr: 0.2,
            threads: 1,
            seed: 3,
            tokenizer: TokenizerConfig::default(),
            dense_name: String::new(),
            temperature: 1.0,
            loss: LossKind::Softmax,
            neg: 5,
        }
    }

    fn names() -> Vec<String> {
        (0..NL).map(|i| format!("__label__{i}")).collect()
    }

    fn fit(c: FusionConfig, s: &Synth) -> FusionModel {
        train_fusion(c, names(), &s.dataset(), &s.dense, DD, &s.present, &|_| {
            true
        })
        .unwrap()
    }

    /// Accuracy on `t`; rows flagged absent are predicted without their dense vector.
    fn accuracy(m: &FusionModel, t: &Synth) -> f32 {
        let mut buf = vec![];
        let n = t.labels.len();
        let mut ok = 0;
        for i in 0..n {
            let (toks, x) = t.row(i);
            m.probs(toks, t.present[i].then_some(x), &mut buf);
            let best = top_k(&buf, 1, 0.0)[0].0;
            ok += (best == t.labels[i]) as usize;
        }
        ok as f32 / n as f32
    }

    /// `quantize` for continuous fusion: the token rows (and with qout the output
    /// matrix) as codes; the file shrinks, loads to the same predictions, and accuracy
    /// stays close; cutoff and a second quantize are refused.
    #[test]
    fn quantized_fusion_models_round_trip_and_stay_accurate() {
        let (tr, te) = (
            synth(1500, Task::Text, 1, 0.1),
            synth(600, Task::Text, 2, 0.1),
        );
        for mode in [FusionMode::Gated, FusionMode::Add] {
            let mut c = cfg(mode);
            c.dim = 16;
            let m = fit(c, &tr);
            for qout in [false, true] {
                let o = QuantizeOptions {
                    qout,
                    ..Default::default()
                };
                let q = m.quantize(&o).unwrap();
                let bq = q.to_bytes().unwrap();
                // Codes in place of the f32 rows (a table this small is not made smaller:
                // the 256-centroid codebooks alone hold 256 rows' worth of values).
                let (_, t) = io::from_bytes(&bq, "mem").unwrap();
                assert!(!t.contains_key("input") && t.contains_key("q.input.codes"));
                assert_eq!(t.contains_key("q.output.codes"), qout);
                let back = FusionModel::from_bytes(&bq, "mem").unwrap();
                assert_eq!(back.params, q.params);
                assert_eq!(back.to_bytes().unwrap(), bq);
                let (a0, a1) = (accuracy(&m, &te), accuracy(&back, &te));
                assert!(a1 >= a0 - 0.03, "{}: {a0} -> {a1}", mode.name());
                assert!(back.quantize(&o).is_err());
            }
            let cut = QuantizeOptions {
                cutoff: 10,
                ..Default::default()
            };
            assert!(m.quantize(&cut).unwrap_err().to_string().contains("cutoff"));
        }
    }

    #[test]
    fn fusion_modes_learn_text_and_dense_tasks() {
        let (tr_text, te_text) = (
            synth(1500, Task::Text, 1, 0.0),
            synth(600, Task::Text, 2, 0.0),
        );
        let (tr_dense, te_dense) = (
            synth(1500, Task::Dense, 3, 0.0),
            synth(600, Task::Dense, 4, 0.0),
        );
        let mut report = vec![];
        for mode in FusionMode::ALL {
            let acc_text = accuracy(&fit(cfg(mode), &tr_text), &te_text);
            let acc_dense = accuracy(&fit(cfg(mode), &tr_dense), &te_dense);
            report.push(format!(
                "{:>15}: text {acc_text:.3} dense {acc_dense:.3}",
                mode.name()
            ));
            if mode == FusionMode::ImageOnly {
                assert!(acc_text < 0.5, "image mode cannot read text: {acc_text}");
            } else {
                assert!(acc_text > 0.95, "{} text task: {acc_text}", mode.name());
            }
            assert!(acc_dense > 0.8, "{} dense task: {acc_dense}", mode.name());
        }
        eprintln!("{}", report.join("\n"));
    }

    /// Every continuous mode trains with ns, hs and ova too, and the file keeps the
    /// loss (the loaded model gives the same probabilities).
    #[test]
    fn fusion_modes_learn_with_every_loss_and_keep_it_in_the_file() {
        let (tr, te) = (
            synth(1500, Task::Dense, 3, 0.0),
            synth(600, Task::Dense, 4, 0.0),
        );
        for mode in [
            FusionMode::Gated,
            FusionMode::Add,
            FusionMode::BilinearGated,
        ] {
            for loss in [LossKind::Ns, LossKind::Hs, LossKind::Ova] {
                // ns sums the gradients of 1 + neg labels: the bilinear modes need a
                // smaller step than softmax's 0.2 there.
                let lr = if mode == FusionMode::BilinearGated {
                    0.05
                } else {
                    0.2
                };
                let c = FusionConfig {
                    loss,
                    lr,
                    ..cfg(mode)
                };
                let m = train_fusion(
                    c,
                    names(),
                    &tr.dataset(),
                    &tr.dense,
                    DD,
                    &tr.present,
                    &|_| true,
                )
                .unwrap_or_else(|e| panic!("{} {loss:?}: {e}", mode.name()));
                let acc = accuracy(&m, &te);
                assert!(acc > 0.8, "{} {loss:?}: {acc}", mode.name());
                let back = FusionModel::from_bytes(&m.to_bytes().unwrap(), "mem").unwrap();
                assert_eq!(back.cfg.loss, loss);
                let row = &te.dense[..DD];
                let toks = &te.tokens[te.offsets[0]..te.offsets[1]];
                let (mut a, mut b) = (Vec::new(), Vec::new());
                back.probs(toks, Some(row), &mut a);
                m.probs(toks, Some(row), &mut b);
                assert_eq!(a, b);
                if loss == LossKind::Hs {
                    assert!((a.iter().sum::<f32>() - 1.0).abs() < 1e-4, "{a:?}");
                }
            }
        }
    }

    #[test]
    fn fusion_missing_dense_uses_text_path() {
        // A third of the rows have no dense vector (NaN values that must not be read).
        let tr = synth(1500, Task::Text, 5, 0.33);
        let te = synth(600, Task::Text, 6, 0.0);
        assert!(tr.present.iter().any(|&p| !p));
        for mode in FusionMode::ALL {
            let m = fit(cfg(mode), &tr);
            for p in &m.params {
                assert!(p.data.iter().all(|x| x.is_finite()), "{}", mode.name());
            }
            assert!(m.dense_mean.iter().all(|x| x.is_finite()));
            let mut buf = vec![];
            let mut ok = 0;
            for i in 0..te.labels.len() {
                let (toks, _) = te.row(i);
                m.probs(toks, None, &mut buf);
                if mode == FusionMode::ImageOnly {
                    // h = 0: uniform probabilities.
                    assert!(buf.iter().all(|&p| (p - 1.0 / NL as f32).abs() < 1e-6));
                }
                ok += (top_k(&buf, 1, 0.0)[0].0 == te.labels[i]) as usize;
            }
            let acc = ok as f32 / te.labels.len() as f32;
            if mode != FusionMode::ImageOnly {
                assert!(acc > 0.95, "{} text path: {acc}", mode.name());
            }
            // The dense vector, when given, does go into the prediction.
            let (mut a, mut b) = (vec![], vec![]);
            let differs = (0..te.labels.len()).any(|i| {
                let (toks, x) = te.row(i);
                m.probs(toks, None, &mut a);
                m.probs(toks, Some(x), &mut b);
                a != b
            });
            assert!(differs, "{}", mode.name());
        }
    }

    #[test]
    fn fusion_deterministic_with_one_thread_and_round_trips() {
        let tr = synth(600, Task::Dense, 7, 0.2);
        let te = synth(100, Task::Dense, 8, 0.2);
        for mode in FusionMode::ALL {
            let mut c = cfg(mode);
            c.epoch = 3;
            c.rank = Some(5);
            let m1 = fit(c.clone(), &tr);
            let m2 = fit(c.clone(), &tr);
            let b1 = m1.to_bytes().unwrap();
            assert_eq!(
                b1,
                m2.to_bytes().unwrap(),
                "{} not deterministic",
                mode.name()
            );
            c.seed += 1;
            let m3 = fit(c, &tr);
            assert_ne!(
                m1.params,
                m3.params,
                "{}: the seed is not used",
                mode.name()
            );

            let back = FusionModel::from_bytes(&b1, "mem").unwrap();
            assert_eq!(back.cfg.mode, mode);
            assert_eq!(back.cfg.rank(), 5);
            assert_eq!(back.labels, m1.labels);
            assert_eq!(back.index.ids, m1.index.ids);
            let (mut p1, mut p2) = (vec![], vec![]);
            for i in 0..te.labels.len() {
                let (toks, x) = te.row(i);
                let x = te.present[i].then_some(x);
                m1.probs(toks, x, &mut p1);
                back.probs(toks, x, &mut p2);
                assert_eq!(p1, p2);
                let s: f32 = p1.iter().sum();
                assert!((s - 1.0).abs() < 1e-5);
            }
            // Unknown tokens are ignored; no token and no dense vector is uniform.
            back.probs(&[u32::MAX], None, &mut p1);
            assert!(p1.iter().all(|&p| (p - 1.0 / NL as f32).abs() < 1e-6));
            // A plain classifier reader refuses the file, and vice versa.
            assert!(crate::model::Model::from_bytes(&b1, "mem").is_err());
        }
        let foreign = io::to_bytes::<&str>(&json!({"kind": "classifier"}), &[]).unwrap();
        assert!(FusionModel::from_bytes(&foreign, "mem").is_err());
        assert!(FusionModel::from_bytes(b"not a model", "mem").is_err());
    }

    #[test]
    fn fusion_hogwild_threads_learn() {
        let tr = synth(3000, Task::Text, 9, 0.1);
        let te = synth(600, Task::Text, 10, 0.1);
        for mode in [FusionMode::Gated, FusionMode::BilinearGated] {
            let mut c = cfg(mode);
            c.threads = 4;
            let acc = accuracy(&fit(c, &tr), &te);
            assert!(acc > 0.95, "{}: {acc}", mode.name());
        }
    }

    #[test]
    fn fusion_validation_errors() {
        let s = synth(30, Task::Text, 11, 0.0);
        let ds = s.dataset();
        let ok = |_: &Progress| true;
        let run =
            |c: FusionConfig, labels: Vec<String>, dense: &[f32], dd: usize, pres: &[bool]| {
                train_fusion(c, labels, &ds, dense, dd, pres, &ok)
            };
        let is_input = |r: Result<FusionModel>, needle: &str| match r {
            Err(MmqError::InvalidInput(m)) => assert!(m.contains(needle), "{m}"),
            Err(e) => panic!("wrong error {e}"),
            Ok(_) => panic!("accepted bad input ({needle})"),
        };
        let c = cfg(FusionMode::Add);
        is_input(
            run(
                c.clone(),
                names(),
                &s.dense[..s.dense.len() - 1],
                DD,
                &s.present,
            ),
            "dense values",
        );
        is_input(
            run(c.clone(), names(), &s.dense, DD, &s.present[1..]),
            "presence flags",
        );
        is_input(run(c.clone(), names(), &[], 0, &s.present), "dense_dim");
        let mut bad = s.dense.clone();
        bad[7 * DD + 3] = f32::INFINITY;
        is_input(run(c.clone(), names(), &bad, DD, &s.present), "dense row 7");
        // ... but NaN in an absent row is fine.
        let mut pres = s.present.clone();
        pres[7] = false;
        bad[7 * DD + 3] = f32::NAN;
        assert!(run(c.clone(), names(), &bad, DD, &pres).is_ok());
        is_input(
            run(c.clone(), vec!["a".into()], &s.dense, DD, &s.present),
            "at least 2 labels",
        );
        let none = vec![false; s.present.len()];
        is_input(
            run(cfg(FusionMode::ImageOnly), names(), &s.dense, DD, &none),
            "needs at least one row",
        );
        for bad_cfg in [
            FusionConfig {
                dim: 0,
                ..c.clone()
            },
            FusionConfig {
                rank: Some(0),
                ..c.clone()
            },
            FusionConfig {
                epoch: 0,
                ..c.clone()
            },
            FusionConfig {
                lr: f32::NAN,
                ..c.clone()
            },
            FusionConfig {
                threads: 0,
                ..c.clone()
            },
        ] {
            assert!(matches!(
                run(bad_cfg, names(), &s.dense, DD, &s.present),
                Err(MmqError::InvalidParameter(_))
            ));
        }
        // A callback that says stop interrupts.
        assert!(matches!(
            train_fusion(c, names(), &ds, &s.dense, DD, &s.present, &|_| false),
            Err(MmqError::Interrupted)
        ));
    }

    #[test]
    fn fusion_divergence_is_an_error_not_a_nan_model() {
        let s = synth(300, Task::Dense, 12, 0.0);
        let mut c = cfg(FusionMode::ImageOnly);
        c.lr = 1e4;
        match train_fusion(c, names(), &s.dataset(), &s.dense, DD, &s.present, &|_| {
            true
        }) {
            Err(MmqError::InvalidParameter(m)) => assert!(m.contains("diverged"), "{m}"),
            Err(e) => panic!("wrong error {e}"),
            Ok(_) => panic!("lr 1e4 did not diverge"),
        }
    }

    /// Mean loss and accuracy of `m` on `v` (at the model's temperature).
    fn valid_score(m: &FusionModel, v: &Synth) -> (f32, f32) {
        score_rows(
            &v.label_offsets,
            &v.labels,
            || (),
            |_, i, out| {
                let (toks, x) = v.row(i);
                m.probs(toks, v.present[i].then_some(x), out)
            },
        )
    }

    #[test]
    fn fusion_valid_keeps_the_best_epoch_stops_on_patience_and_calibrates() {
        let (tr, va) = (
            synth(600, Task::Dense, 21, 0.2),
            synth(300, Task::Dense, 22, 0.2),
        );
        for mode in [FusionMode::Gated, FusionMode::Add, FusionMode::Bilinear] {
            let mut c = cfg(mode);
            c.epoch = 12;
            c.lr = 0.2;
            fn rows(s: &Synth) -> FusionRows<'_> {
                FusionRows {
                    data: s.dataset(),
                    dense: &s.dense,
                    present: &s.present,
                }
            }
            let (trr, var) = (rows(&tr), rows(&va));
            let run = |patience, calibrate| {
                let opts = TrainOptions {
                    valid: Some(&var),
                    patience,
                    calibrate,
                    ..Default::default()
                };
                train_fusion_with(c.clone(), names(), &trr, DD, &opts, &|_| true).unwrap()
            };
            let m = run(None, false);
            assert_eq!(m.history.len(), 12, "{}", mode.name());
            // The kept weights are those of the best record, which scores as recorded.
            let best = m.history.iter().rfind(|r| r.best).expect("a best epoch");
            assert!(m
                .history
                .iter()
                .all(|r| r.valid_accuracy <= best.valid_accuracy));
            let (loss, acc) = valid_score(&m, &va);
            assert!(
                (acc - best.valid_accuracy).abs() < 1e-6,
                "{acc} vs {best:?}"
            );
            assert!((loss - best.valid_loss).abs() < 1e-4, "{loss} vs {best:?}");
            assert!(m.history.iter().all(|r| r.train_loss > 0.0));
            // Patience 1: stops at the first epoch that is not better.
            let p = run(Some(1), false);
            let first_worse = m.history.iter().position(|r| !r.best);
            assert_eq!(p.history.len(), first_worse.map_or(12, |e| e + 1));
            // Calibration lowers (or keeps) the validation loss, never the accuracy.
            let k = run(None, true);
            let (lk, ak) = valid_score(&k, &va);
            assert!(lk <= loss + 1e-5 && (ak - acc).abs() < 1e-6, "{lk} {ak}");
            // History and temperature survive the file; a model without them writes
            // neither key, as the files of earlier releases.
            let back = FusionModel::from_bytes(&k.to_bytes().unwrap(), "<mem>").unwrap();
            assert_eq!(back.history, k.history);
            assert_eq!(back.cfg.temperature, k.cfg.temperature);
            let plain = fit(c.clone(), &tr);
            let header = String::from_utf8_lossy(&plain.to_bytes().unwrap()[..4096]).to_string();
            assert!(!header.contains("history") && !header.contains("temperature"));
        }
        // patience 0 and patience without validation rows are refused.
        let opts = TrainOptions::<FusionRows> {
            valid: None,
            patience: Some(2),
            ..Default::default()
        };
        let trr = FusionRows {
            data: tr.dataset(),
            dense: &tr.dense,
            present: &tr.present,
        };
        let c = cfg(FusionMode::Gated);
        assert!(matches!(
            train_fusion_with(c, names(), &trr, DD, &opts, &|_| true),
            Err(MmqError::InvalidParameter(_))
        ));
    }

    #[test]
    fn fusion_mode_names_round_trip() {
        for m in FusionMode::ALL {
            assert_eq!(FusionMode::parse(m.name()), Some(m));
            let j = serde_json::to_string(&m).unwrap();
            assert_eq!(j, format!("\"{}\"", m.name()));
            assert_eq!(serde_json::from_str::<FusionMode>(&j).unwrap(), m);
        }
        assert_eq!(FusionMode::parse("concat"), None);
        let c: FusionConfig =
            serde_json::from_str(r#"{"mode": "bilinear_gated", "dim": 8}"#).unwrap();
        assert_eq!(c.mode, FusionMode::BilinearGated);
        assert_eq!(c.rank(), 8);
    }
}

//! Models over any number of modalities, each a *set of tokens*: text columns (hashed
//! word / n-gram tokens), categorical columns (one token per value) and dense columns
//! (the m PQ/RSPQ code tokens of the row's vector). A null value of a modality is the
//! empty set: it adds nothing, and is never replaced by a zero placeholder.
//!
//! # Notation
//!
//! `K` modalities, `S_k` the token set of modality `k` in a row (its embedding rows
//! `E[r]`, `r ∈ S_k`; tokens unseen in training are dropped at prediction), `P` the
//! modalities with a non-empty set, `d` = `dim`, `L` labels. Every modality has its own
//! token table: the word "red" of a `title` column and of a `body` column are two rows.
//!
//! # Fusion (`h`: the fused vector)
//!
//! ```text
//! bag:        h = Σ_k a_k Σ_{r∈S_k} E[r] / Σ_k a_k |S_k|       a_k = alpha (dense), 1 (others)
//!             (mmq's discrete fusion, over many columns)
//! deepset:    v_k = pool(E[S_k]) for k ∈ P;  h = pool'({v_k : k ∈ P})
//!             pool / pool' ∈ {mean, sum, max (elementwise)}   (Deep Multi-Modal Sets)
//! attention:  t = mean of E over the tokens of every non-dense modality   (MI2P-style)
//!             for each dense modality k ∈ P with code tokens r_1..r_m:
//!                 a_j = K[r_j]·t / √d,  α = softmax(a),  o_k = Σ_j α_j E[r_j]
//!             h = t + Σ_{dense k ∈ P} o_k
//! ```
//! `h = 0` when no modality is present (or, in bag mode, when all weights are 0). In
//! attention mode `K` is a second table over the dense tokens (keys), `E` holds their
//! values; each sub-quantizer's codes have their own rows in both.
//!
//! Output: `s = W h + b`, `q = softmax(s)`, loss `−ln q_y`. A row where every modality is
//! null therefore predicts `softmax(b)`: the label prior the bias has learned.
//!
//! # Gradient-Blending (`blend = gblend`; Wang, Tran, Feiszli, CVPR 2020)
//!
//! One more softmax head per modality on `v_k = pool(E[S_k])`: `q_k = softmax(W_k v_k +
//! b_k)`. The row's loss is `w_0 (−ln q_y) + Σ_{k∈P} w_k (−ln q_{k,y})`. Before training a
//! seeded `holdout` fraction of the rows is set aside (never trained on) and a training
//! subset `T` of the same size is drawn. `V_i`, `T_i`: the mean loss of head `i` (0 =
//! fused) on each. Training runs in super-epochs of `blend_window` epochs; before each,
//! as the paper's online algorithm, a *trial* trains every head alone (its weight 1, the
//! others 0) from the current weights over the super-epoch's epochs (same shuffles, same
//! learning rates), measures it, and is undone. From the trial of head `i`
//!
//! ```text
//! G_i = V_i(before) − V_i(after)                                (generalisation gained)
//! O_i = (V_i(after) − T_i(after)) − (V_i(before) − T_i(before))  (overfitting added)
//! w_i ∝ max(G_i, 0) / (O_i² + 1e-4),   Σ_i w_i = 1
//! ```
//! are the weights the blended model then trains with over the same epochs (if no head
//! gained, the previous weights are kept; at first `1/(K+1)` each; a trial that diverges
//! counts as no gain). Each super-epoch's weights, gains, overfitting and the blended
//! model's losses are stored in the model ([`SetModel::history`]). Prediction uses the
//! fused head only. Cost: `K + 2` trainings (K + 1 trials and the blended run; progress
//! reports follow the blended run). The held-out slice must have at least `max(30, 3 L)`
//! rows, else training stops with a clear error.
//!
//! The estimate favours the head whose held-out loss drops with the least overfitting:
//! on a data set where one modality is weak and has few parameters (mvsa_tweets: an image
//! as 16 RSPQ codes of 16 values), that head gets most of the weight, and the fused head,
//! which predicts, trains at a small share of the learning rate (see the README's figures).
//!
//! `blend = gblend_offline` (the paper's offline variant) runs the above to estimate the
//! weights, then trains a fresh model on all rows, held-out slice included, with the
//! mean of the weights that run used over its super-epochs, fixed; its history is the
//! estimation run's. It costs `K + 3` trainings.
//!
//! # Training
//!
//! Hogwild SGD as the other models: seeded init (`E, K ~ U(±1/d)`, `W = b = 0`), a seeded
//! shuffle per epoch, fastText's linear lr decay, rayon threads, progress every ~100 ms.
//! Within a row's step every weight is read for back-propagation before it is written,
//! so with one thread the step is exact SGD (checked against finite differences).
// Index loops over the d dimensions read like the formulas above.
#![allow(clippy::needless_range_loop)]
use super::compress::{QuantizeOptions, QuantizedParams};
use super::fusion::{param_tensors, take_params, Mat, Weights};
use super::loss::{negatives_table, safe_ln, LossKind};
use super::output::{pair_grads, pair_loss, pair_scores as scores_of_pairs, Output};
use super::{softmax_in_place, top_k, EpochRecord, Ranked, TokenIndex};
use crate::error::{MmqError, Result};
use crate::io::quant::{quantizer_from_parts, quantizer_header, quantizer_parts};
use crate::io::{self, Tensor};
use crate::quant::Quantizer;
use crate::text::TokenizerConfig;
use crate::train::clock::{self, run_epochs, Clock, Ticker};
use crate::train::hogwild::HogwildMatrix;
use crate::train::select::{fit_temperature_by, score_rows, Selector};
use crate::train::TrainOptions;
use crate::train::{check_labels, label_counts, Progress};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::atomic::{AtomicU32, Ordering};

/// What a modality's tokens are made from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModalityKind {
    /// A String column, tokenized like the text model.
    Text,
    /// One token per distinct value.
    Categorical,
    /// The code tokens of a quantized dense column.
    Dense,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Modality {
    pub name: String,
    pub kind: ModalityKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetFusion {
    Bag,
    Deepset,
    Attention,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pool {
    Mean,
    Sum,
    Max,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Blend {
    None,
    /// Online G-Blend: the weights are re-estimated after every epoch.
    Gblend,
    /// Offline G-Blend: an online run estimates the weights, then the model is trained
    /// again from scratch on all rows (held-out slice included) with the mean of the
    /// weights that run used, fixed.
    GblendOffline,
}

/// Hyperparameters of a set model (stored in the model file).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct SetConfig {
    pub fusion: SetFusion,
    /// Pooling of a modality's tokens (deepset, and the G-Blend heads).
    pub pool: Pool,
    /// Pooling of the modality vectors (deepset).
    pub outer_pool: Pool,
    pub blend: Blend,
    pub dim: usize,
    pub epoch: usize,
    pub lr: f32,
    pub threads: usize,
    pub seed: u64,
    /// Bag mode: weight of a dense token relative to a text or categorical token.
    pub alpha: f32,
    /// G-Blend: fraction of the training rows held out to estimate the weights.
    pub holdout: f32,
    /// G-Blend: epochs per super-epoch (the weights are re-estimated before each).
    pub blend_window: usize,
    pub tokenizer: TokenizerConfig,
    pub modalities: Vec<Modality>,
    /// Probabilities' temperature, fitted on a validation split (1: none). Written to
    /// the file only when it is not 1, so files of earlier releases still read.
    #[serde(skip_serializing_if = "super::is_one")]
    pub temperature: f32,
    /// The output layer's loss: softmax, ns (negative sampling), hs (hierarchical
    /// softmax over a Huffman tree of the label counts) or ova (one-vs-all), as in the
    /// text model. Written only when it is not softmax, so earlier files read unchanged.
    #[serde(skip_serializing_if = "is_softmax")]
    pub loss: LossKind,
    /// ns: negative labels sampled per row (written only with ns).
    #[serde(skip_serializing_if = "is_five")]
    pub neg: usize,
}

fn is_softmax(l: &LossKind) -> bool {
    *l == LossKind::Softmax
}

fn is_five(n: &usize) -> bool {
    *n == 5
}

impl Default for SetConfig {
    fn default() -> Self {
        Self {
            fusion: SetFusion::Deepset,
            pool: Pool::Mean,
            outer_pool: Pool::Mean,
            blend: Blend::None,
            dim: 100,
            epoch: 5,
            lr: 0.1,
            threads: 1,
            seed: 0,
            alpha: 1.0,
            holdout: 0.1,
            blend_window: 1,
            tokenizer: TokenizerConfig::default(),
            modalities: Vec::new(),
            temperature: 1.0,
            loss: LossKind::Softmax,
            neg: 5,
        }
    }
}

impl io::StoredConfig for SetConfig {
    const KIND: &'static str = "set_classifier";
    const NOUN: &'static str = "set classifier";
    fn check(&self) -> Result<()> {
        self.validate()
    }
}

impl SetConfig {
    pub fn validate(&self) -> Result<()> {
        super::check_training(self.dim, self.epoch, self.lr, self.threads)?;
        let bad = |m: String| Err(MmqError::InvalidParameter(m));
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return bad(format!(
                "alpha must be a finite number >= 0, got {}",
                self.alpha
            ));
        }
        if !(self.holdout > 0.0 && self.holdout <= 0.5) {
            return bad(format!("holdout must be in (0, 0.5], got {}", self.holdout));
        }
        if self.blend_window == 0 {
            return bad("blend_window must be at least 1 epoch, got 0".into());
        }
        if self.modalities.is_empty() {
            return bad("a set model needs at least one modality".into());
        }
        for (i, m) in self.modalities.iter().enumerate() {
            if m.name.is_empty() {
                return bad(format!("modality {i} has an empty name"));
            }
            if self.modalities[..i].iter().any(|o| o.name == m.name) {
                return bad(format!(
                    "modality names collide: '{}' is given twice (each column can be one modality)",
                    m.name
                ));
            }
        }
        if self.fusion == SetFusion::Attention {
            let dense = self
                .modalities
                .iter()
                .filter(|m| m.kind == ModalityKind::Dense)
                .count();
            if dense == 0 || dense == self.modalities.len() {
                return bad(format!(
                    "fusion 'attention' needs at least one dense column and one text or \
                     categorical column, got {} dense of {} modalities",
                    dense,
                    self.modalities.len()
                ));
            }
        }
        if self.loss != LossKind::Softmax && self.blend != Blend::None {
            return bad(format!(
                "blend '{:?}' trains with loss 'softmax' (its per-modality heads and their \
                 estimates are softmax ones), got loss '{}'",
                self.blend,
                self.loss.name()
            ));
        }
        if self.loss == LossKind::Ns && !(1..=1000).contains(&self.neg) {
            return bad(format!(
                "neg must be in 1..=1000 with loss 'ns', got {}",
                self.neg
            ));
        }
        super::check_temperature(self.temperature)?;
        self.tokenizer.validate()
    }
}

/// One modality's raw token ids for `n` rows, CSR: row `i` is `ids[offsets[i]..offsets[i+1]]`.
#[derive(Clone, Copy, Debug)]
pub struct ModalityRows<'a> {
    pub offsets: &'a [usize],
    pub ids: &'a [u32],
}

/// G-Blend's record of one super-epoch (per head: fused, then one per modality).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlendEpoch {
    /// First epoch of the super-epoch (numbered from 0).
    pub epoch: usize,
    /// Its number of epochs.
    #[serde(default = "one")]
    pub epochs: usize,
    /// Loss weights used during it.
    pub weights: Vec<f32>,
    /// Held-out loss gained by each head trained alone over it (G).
    #[serde(default)]
    pub gain: Vec<f32>,
    /// Change of each head's held-out − train loss gap over the same trial (O).
    #[serde(default)]
    pub overfit: Vec<f32>,
    /// Mean loss of each head of the blended model on the held-out slice after it.
    pub holdout_loss: Vec<f32>,
    /// Mean loss of each head of the blended model on the training subset after it.
    pub train_loss: Vec<f32>,
}

fn one() -> usize {
    1
}

// Parameter slots.
const EMB: usize = 0;
const OUT: usize = 1;
const OUT_B: usize = 2;
const KEY: usize = 3;
const HEAD: usize = 4;
const HEAD_B: usize = 5;
const N_PARAMS: usize = 6;
const PARAM_NAMES: [&str; N_PARAMS] = [
    "input",
    "output",
    "output_bias",
    "key",
    "heads",
    "heads_bias",
];

/// Everything that fixes the shapes and the graph.
#[derive(Clone, Debug)]
struct Dims {
    fusion: SetFusion,
    /// The fused head's output layer and loss.
    out: Output,
    pool: Pool,
    outer: Pool,
    gblend: bool,
    alpha: f32,
    d: usize,
    nl: usize,
    kinds: Vec<ModalityKind>,
    /// First embedding row of each modality; last entry = number of rows.
    row_off: Vec<usize>,
    /// First key row of each modality (dense ones have keys in attention mode).
    key_off: Vec<usize>,
}

impl Dims {
    fn new(cfg: &SetConfig, nl: usize, sizes: &[usize], out: Output) -> Self {
        let mut row_off = vec![0];
        let mut key_off = vec![0];
        for (m, &s) in cfg.modalities.iter().zip(sizes) {
            row_off.push(row_off.last().unwrap() + s);
            let keys = cfg.fusion == SetFusion::Attention && m.kind == ModalityKind::Dense;
            key_off.push(key_off.last().unwrap() + if keys { s } else { 0 });
        }
        Self {
            fusion: cfg.fusion,
            out,
            pool: cfg.pool,
            outer: cfg.outer_pool,
            gblend: cfg.blend != Blend::None,
            alpha: cfg.alpha,
            d: cfg.dim,
            nl,
            kinds: cfg.modalities.iter().map(|m| m.kind).collect(),
            row_off,
            key_off,
        }
    }
    fn k(&self) -> usize {
        self.kinds.len()
    }
    /// Rows of the output layer: one per label, or one per inner node of the hs tree.
    fn n_out(&self) -> usize {
        self.out.n_out()
    }
    fn shapes(&self) -> [(usize, usize); N_PARAMS] {
        let (d, nl, k) = (self.d, self.nl, self.k());
        let heads = if self.gblend { k * nl } else { 0 };
        [
            (*self.row_off.last().unwrap(), d),
            (self.n_out(), d),
            (1, self.n_out()),
            (*self.key_off.last().unwrap(), d),
            (heads, d),
            (if self.gblend { k } else { 0 }, nl),
        ]
    }
    /// Whether the per-modality vectors `v_k` are needed.
    fn needs_v(&self) -> bool {
        self.fusion == SetFusion::Deepset || self.gblend
    }
    /// Bag mode: the weight of each token of modality `k` (`alpha` for dense codes).
    fn weight(&self, k: usize) -> f32 {
        if self.kinds[k] == ModalityKind::Dense {
            self.alpha
        } else {
            1.0
        }
    }
    fn key_row(&self, k: usize, r: u32) -> usize {
        r as usize - self.row_off[k] + self.key_off[k]
    }
}

/// Activations of one row and scratch for its gradients.
struct Cache {
    present: Vec<bool>,
    /// `v_k`, K × d.
    v: Vec<f32>,
    /// Max pooling: index (within `S_k`) of the token that gave each dimension, K × d.
    arg: Vec<u32>,
    /// Outer max pooling: the modality that gave each dimension of `h`.
    win: Vec<u32>,
    h: Vec<f32>,
    t: Vec<f32>,
    t_total: f32,
    bag_total: f32,
    /// Attention weights of the dense tokens, modality after modality.
    att: Vec<f32>,
    att_off: Vec<usize>,
    q: Vec<f32>,
    /// Whether [`forward`] fills `q` (training with ns / hs / ova needs only the scores
    /// of `pairs`).
    want_q: bool,
    /// ns / hs / ova: the output rows a row trains and their targets (1 or 0), and
    /// their scores (see [`pair_scores`]).
    pairs: Vec<(u32, f32)>,
    ps: Vec<f32>,
    /// hs: the inner nodes' scores.
    nodes: Vec<f32>,
    /// Head probabilities, K × L.
    qk: Vec<f32>,
    ds: Vec<f32>,
    /// Head score gradients, K × L.
    dq: Vec<f32>,
    dh: Vec<f32>,
    dv: Vec<f32>,
    dt: Vec<f32>,
    da: Vec<f32>,
    tmp: Vec<f32>,
    /// ns / hs / ova: the pairs' score gradients.
    tmp2: Vec<f32>,
}

impl Cache {
    fn new(dm: &Dims) -> Self {
        let (k, d, nl) = (dm.k(), dm.d, dm.nl);
        Self {
            present: vec![false; k],
            v: vec![0.0; k * d],
            arg: vec![0; k * d],
            win: vec![0; d],
            h: vec![0.0; d],
            t: vec![0.0; d],
            t_total: 0.0,
            bag_total: 0.0,
            att: Vec::new(),
            att_off: vec![0; k + 1],
            q: vec![0.0; nl],
            want_q: true,
            pairs: Vec::new(),
            ps: Vec::new(),
            nodes: Vec::new(),
            qk: vec![0.0; k * nl],
            ds: vec![0.0; nl],
            dq: vec![0.0; k * nl],
            dh: vec![0.0; d],
            dv: vec![0.0; k * d],
            dt: vec![0.0; d],
            da: Vec::new(),
            tmp: vec![0.0; d],
            tmp2: Vec::new(),
        }
    }
}

/// `out = pool(E[rows])` (rows non-empty); `arg` gets the argmax positions for max.
fn pool_into<W: Weights>(
    pool: Pool,
    emb: &W,
    rows: &[u32],
    out: &mut [f32],
    arg: &mut [u32],
    tmp: &mut [f32],
) {
    match pool {
        Pool::Mean | Pool::Sum => {
            out.fill(0.0);
            for &r in rows {
                emb.add_row_to(r as usize, 1.0, out);
            }
            if pool == Pool::Mean {
                let inv = 1.0 / rows.len() as f32;
                out.iter_mut().for_each(|x| *x *= inv);
            }
        }
        Pool::Max => {
            for (j, &r) in rows.iter().enumerate() {
                tmp.fill(0.0);
                emb.add_row_to(r as usize, 1.0, tmp);
                if j == 0 {
                    out.copy_from_slice(tmp);
                    arg.fill(0);
                } else {
                    for i in 0..out.len() {
                        if tmp[i] > out[i] {
                            out[i] = tmp[i];
                            arg[i] = j as u32;
                        }
                    }
                }
            }
        }
    }
}

/// `out = softmax(W[head·L..(head+1)·L] x + b[head])`.
fn softmax_scores<W: Weights>(w: &W, b: &W, head: usize, x: &[f32], out: &mut [f32]) {
    let nl = out.len();
    for (l, o) in out.iter_mut().enumerate() {
        *o = w.dot_row(head * nl + l, x);
    }
    b.add_row_to(head, 1.0, out);
    softmax_in_place(out);
}

/// ns / hs / ova: the scores of the output rows in `c.pairs` (into `c.ps`), after
/// [`forward`].
fn pair_scores<W: Weights>(w: &[W; N_PARAMS], c: &mut Cache) {
    scores_of_pairs(&w[OUT], Some(&w[OUT_B]), &c.h, &c.pairs, &mut c.ps);
}

/// Forward pass: fills `c` from the row's compacted embedding rows per modality.
fn forward<W: Weights>(dm: &Dims, w: &[W; N_PARAMS], rows: &[&[u32]], c: &mut Cache) {
    let d = dm.d;
    let nl = dm.nl;
    let emb = &w[EMB];
    for (k, r) in rows.iter().enumerate() {
        c.present[k] = !r.is_empty();
        if dm.needs_v() && c.present[k] {
            pool_into(
                dm.pool,
                emb,
                r,
                &mut c.v[k * d..(k + 1) * d],
                &mut c.arg[k * d..(k + 1) * d],
                &mut c.tmp,
            );
        }
    }
    c.h.fill(0.0);
    match dm.fusion {
        SetFusion::Bag => {
            let mut total = 0.0f32;
            // With G-Blend's mean-pooled v_k at hand, Σ_{r∈S_k} E[r] = |S_k| v_k.
            let from_v = dm.needs_v() && dm.pool == Pool::Mean;
            for (k, r) in rows.iter().enumerate() {
                let a = dm.weight(k);
                if from_v && !r.is_empty() {
                    let s = a * r.len() as f32;
                    for (h, v) in c.h.iter_mut().zip(&c.v[k * d..(k + 1) * d]) {
                        *h += s * v;
                    }
                } else {
                    for &x in r.iter() {
                        emb.add_row_to(x as usize, a, &mut c.h);
                    }
                }
                total += a * r.len() as f32;
            }
            c.bag_total = total;
            if total > 0.0 {
                let inv = 1.0 / total;
                c.h.iter_mut().for_each(|x| *x *= inv);
            } else {
                c.h.fill(0.0);
            }
        }
        SetFusion::Deepset => {
            let np = c.present.iter().filter(|&&p| p).count();
            let mut first = true;
            for k in (0..dm.k()).filter(|&k| c.present[k]) {
                let v = &c.v[k * d..(k + 1) * d];
                match dm.outer {
                    Pool::Mean | Pool::Sum => {
                        for (h, x) in c.h.iter_mut().zip(v) {
                            *h += x;
                        }
                    }
                    Pool::Max => {
                        for i in 0..d {
                            if first || v[i] > c.h[i] {
                                c.h[i] = v[i];
                                c.win[i] = k as u32;
                            }
                        }
                    }
                }
                first = false;
            }
            if dm.outer == Pool::Mean && np > 0 {
                let inv = 1.0 / np as f32;
                c.h.iter_mut().for_each(|x| *x *= inv);
            }
        }
        SetFusion::Attention => {
            c.t.fill(0.0);
            let mut total = 0.0f32;
            for (k, r) in rows.iter().enumerate() {
                if dm.kinds[k] != ModalityKind::Dense {
                    for &x in r.iter() {
                        emb.add_row_to(x as usize, 1.0, &mut c.t);
                    }
                    total += r.len() as f32;
                }
            }
            c.t_total = total;
            if total > 0.0 {
                let inv = 1.0 / total;
                c.t.iter_mut().for_each(|x| *x *= inv);
            }
            c.h.copy_from_slice(&c.t);
            c.att.clear();
            let scale = 1.0 / (d as f32).sqrt();
            for (k, r) in rows.iter().enumerate() {
                c.att_off[k] = c.att.len();
                if dm.kinds[k] != ModalityKind::Dense || r.is_empty() {
                    continue;
                }
                let s0 = c.att.len();
                for &x in r.iter() {
                    c.att.push(scale * w[KEY].dot_row(dm.key_row(k, x), &c.t));
                }
                softmax_in_place(&mut c.att[s0..]);
                for (j, &x) in r.iter().enumerate() {
                    emb.add_row_to(x as usize, c.att[s0 + j], &mut c.h);
                }
            }
            c.att_off[dm.k()] = c.att.len();
        }
    }
    if c.want_q {
        dm.out
            .probs(&w[OUT], Some(&w[OUT_B]), &c.h, &mut c.q, &mut c.nodes);
    }
    if dm.gblend {
        for k in (0..dm.k()).filter(|&k| c.present[k]) {
            softmax_scores(
                &w[HEAD],
                &w[HEAD_B],
                k,
                &c.v[k * d..(k + 1) * d],
                &mut c.qk[k * nl..(k + 1) * nl],
            );
        }
    }
}

/// Receives gradients: `∇param[row] += a·v`, or one element `∇param[row][col] += a`.
trait Sink {
    fn add(&mut self, param: usize, row: usize, a: f32, v: &[f32]);
    fn add_at(&mut self, param: usize, row: usize, col: usize, a: f32);
    /// `w[row] · u`, then `∇param[row] += a·v`: the read sees the row before its update
    /// (`w` holds `param`'s current weights; the SGD sink does both in one pass).
    #[allow(clippy::too_many_arguments)]
    fn dot_then_add<W: Weights>(
        &mut self,
        w: &W,
        param: usize,
        row: usize,
        u: &[f32],
        a: f32,
        v: &[f32],
    ) -> f32 {
        let s = w.dot_row(row, u);
        self.add(param, row, a, v);
        s
    }
    /// `out += c·w[row]`, then `∇param[row] += a·v` (one pass for the SGD sink).
    #[allow(clippy::too_many_arguments)]
    fn read_then_add<W: Weights>(
        &mut self,
        w: &W,
        param: usize,
        row: usize,
        c: f32,
        out: &mut [f32],
        a: f32,
        v: &[f32],
    ) {
        w.add_row_to(row, c, out);
        self.add(param, row, a, v);
    }
}

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
    #[inline]
    fn add_at(&mut self, param: usize, row: usize, col: usize, a: f32) {
        if a != 0.0 {
            self.w[param].add_at(row, col, -self.lr * a);
        }
    }
    // `w` is `self.w[param]` itself during training: read and write it in one pass.
    #[inline]
    fn dot_then_add<W: Weights>(
        &mut self,
        _w: &W,
        param: usize,
        row: usize,
        u: &[f32],
        a: f32,
        v: &[f32],
    ) -> f32 {
        self.w[param].dot_then_add(row, u, -self.lr * a, v)
    }
    #[inline]
    fn read_then_add<W: Weights>(
        &mut self,
        _w: &W,
        param: usize,
        row: usize,
        c: f32,
        out: &mut [f32],
        a: f32,
        v: &[f32],
    ) {
        self.w[param].read_then_add(row, c, out, -self.lr * a, v)
    }
}

/// The row's loss for head weights `hw` (fused, then per modality) after [`forward`].
fn row_loss(dm: &Dims, c: &Cache, target: usize, hw: &[f32]) -> f32 {
    if !dm.out.needs_probs() {
        // ns / hs / ova: binary logistic losses of the pairs ([`pair_scores`]).
        return hw[0] * pair_loss(&c.pairs, &c.ps);
    }
    let mut l = hw[0] * -safe_ln(c.q[target]);
    if dm.gblend {
        for k in (0..dm.k()).filter(|&k| c.present[k]) {
            l += hw[k + 1] * -safe_ln(c.qk[k * dm.nl + target]);
        }
    }
    l
}

/// Gradients of [`row_loss`] after [`forward`] on the same row. Every weight is read
/// before its own gradient is sent.
#[allow(clippy::too_many_arguments)]
fn backward<W: Weights, S: Sink>(
    dm: &Dims,
    w: &[W; N_PARAMS],
    rows: &[&[u32]],
    target: usize,
    hw: &[f32],
    c: &mut Cache,
    sink: &mut S,
) {
    let (d, nl, km) = (dm.d, dm.nl, dm.k());
    // Fused head.
    c.dh.fill(0.0);
    if dm.out.needs_probs() {
        for (l, ds) in c.ds.iter_mut().enumerate() {
            *ds = hw[0] * (c.q[l] - if l == target { 1.0 } else { 0.0 });
        }
        for (l, &ds) in c.ds.iter().enumerate() {
            w[OUT].add_row_to(l, ds, &mut c.dh);
        }
        for (l, &ds) in c.ds.iter().enumerate() {
            sink.add(OUT, l, ds, &c.h);
        }
        sink.add(OUT_B, 0, 1.0, &c.ds);
    } else {
        // ns / hs / ova: each pair's score s has the gradient sigmoid(s) - y.
        let grads: &mut Vec<f32> = &mut c.tmp2;
        pair_grads(&c.pairs, &c.ps, hw[0], grads);
        for (&(r, _), &g) in c.pairs.iter().zip(grads.iter()) {
            w[OUT].add_row_to(r as usize, g, &mut c.dh);
        }
        for (&(r, _), &g) in c.pairs.iter().zip(grads.iter()) {
            sink.add(OUT, r as usize, g, &c.h);
            sink.add_at(OUT_B, 0, r as usize, g);
        }
    }
    // Modality heads.
    c.dv.fill(0.0);
    if dm.gblend {
        let db = &mut c.dq;
        for k in (0..km).filter(|&k| c.present[k]) {
            for l in 0..nl {
                let y = if l == target { 1.0 } else { 0.0 };
                db[k * nl + l] = hw[k + 1] * (c.qk[k * nl + l] - y);
            }
            let dv = &mut c.dv[k * d..(k + 1) * d];
            for l in 0..nl {
                w[HEAD].add_row_to(k * nl + l, db[k * nl + l], dv);
            }
            for l in 0..nl {
                sink.add(HEAD, k * nl + l, db[k * nl + l], &c.v[k * d..(k + 1) * d]);
            }
            sink.add(HEAD_B, k, 1.0, &db[k * nl..(k + 1) * nl]);
        }
    }
    // Fusion.
    match dm.fusion {
        SetFusion::Bag => {
            if c.bag_total > 0.0 {
                for (k, r) in rows.iter().enumerate() {
                    let a = dm.weight(k);
                    for &x in r.iter() {
                        sink.add(EMB, x as usize, a / c.bag_total, &c.dh);
                    }
                }
            }
        }
        SetFusion::Deepset => {
            let np = c.present.iter().filter(|&&p| p).count();
            for k in (0..km).filter(|&k| c.present[k]) {
                let dv = &mut c.dv[k * d..(k + 1) * d];
                match dm.outer {
                    Pool::Mean | Pool::Sum => {
                        let a = if dm.outer == Pool::Mean {
                            1.0 / np as f32
                        } else {
                            1.0
                        };
                        for (x, g) in dv.iter_mut().zip(&c.dh) {
                            *x += a * g;
                        }
                    }
                    Pool::Max => {
                        for i in 0..d {
                            if c.win[i] as usize == k {
                                dv[i] += c.dh[i];
                            }
                        }
                    }
                }
            }
        }
        SetFusion::Attention => {
            c.dt.copy_from_slice(&c.dh);
            let scale = 1.0 / (d as f32).sqrt();
            for (k, r) in rows.iter().enumerate() {
                if dm.kinds[k] != ModalityKind::Dense || r.is_empty() {
                    continue;
                }
                let att = &c.att[c.att_off[k]..c.att_off[k] + r.len()];
                // δα_j = δh · E[r_j];  δa_j = α_j (δα_j − Σ_l α_l δα_l). Each value row is
                // read for δα_j and updated by α_j δh in one pass (rows differ across j).
                c.da.clear();
                for (j, &x) in r.iter().enumerate() {
                    let g = sink.dot_then_add(&w[EMB], EMB, x as usize, &c.dh, att[j], &c.dh);
                    c.da.push(g);
                }
                let mean: f32 = att.iter().zip(&c.da).map(|(a, g)| a * g).sum();
                for (g, a) in c.da.iter_mut().zip(att) {
                    *g = a * (*g - mean);
                }
                // δt += Σ_j δa_j K[r_j] / √d, and each key row's own update, in one pass.
                for (j, &x) in r.iter().enumerate() {
                    let g = scale * c.da[j];
                    sink.read_then_add(&w[KEY], KEY, dm.key_row(k, x), g, &mut c.dt, g, &c.t);
                }
            }
            if c.t_total > 0.0 {
                for (k, r) in rows.iter().enumerate() {
                    if dm.kinds[k] != ModalityKind::Dense {
                        for &x in r.iter() {
                            sink.add(EMB, x as usize, 1.0 / c.t_total, &c.dt);
                        }
                    }
                }
            }
        }
    }
    // Modality vectors back to their tokens.
    if dm.needs_v() {
        for (k, r) in rows.iter().enumerate() {
            if r.is_empty() {
                continue;
            }
            let dv = &c.dv[k * d..(k + 1) * d];
            match dm.pool {
                Pool::Mean | Pool::Sum => {
                    let a = if dm.pool == Pool::Mean {
                        1.0 / r.len() as f32
                    } else {
                        1.0
                    };
                    for &x in r.iter() {
                        sink.add(EMB, x as usize, a, dv);
                    }
                }
                Pool::Max => {
                    for i in 0..d {
                        let x = r[c.arg[k * d + i] as usize];
                        sink.add_at(EMB, x as usize, i, dv[i]);
                    }
                }
            }
        }
    }
}

/// A trained set model.
#[derive(Clone)]
pub struct SetModel {
    pub cfg: SetConfig,
    pub labels: Vec<String>,
    pub label_counts: Vec<u64>,
    /// Token ids of each modality with an embedding row.
    pub indexes: Vec<TokenIndex>,
    /// The quantizer of each dense modality (`None` for the others).
    pub quantizers: Vec<Option<Quantizer>>,
    /// G-Blend weights and losses per epoch (empty without G-Blend).
    pub history: Vec<BlendEpoch>,
    /// Per-epoch record of a run with a validation split (else empty).
    pub valid_history: Vec<EpochRecord>,
    params: [Mat; N_PARAMS],
    /// The codes of a quantized model ([`SetModel::quantize`]).
    pub quantized: Option<QuantizedParams>,
    /// The output layer (hs: its tree, built from `label_counts`; not stored).
    out: Output,
}

/// One modality's share of a prediction (see [`SetModel::explain_modalities`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ModalityShare {
    /// Contribution to the label's score (logit).
    pub score: f32,
    /// Outer max pooling: how many dimensions of `h` this modality gave.
    pub dims_won: u32,
    pub present: bool,
}

impl SetModel {
    /// fastText's `quantize` for this kind: a copy whose token rows (every modality's
    /// table, and with `qout` the output matrix) are product-quantized, stored as codes.
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
        let sizes: Vec<usize> = self.indexes.iter().map(|i| i.len()).collect();
        Dims::new(&self.cfg, self.labels.len(), &sizes, self.out.clone())
    }

    /// Compact raw ids (one slice per modality) into embedding rows; unseen ids dropped.
    fn compact(&self, dm: &Dims, raw: &[&[u32]], out: &mut Vec<Vec<u32>>) -> Result<()> {
        if raw.len() != self.indexes.len() {
            return Err(MmqError::InvalidInput(format!(
                "the model has {} modalities, got {}",
                self.indexes.len(),
                raw.len()
            )));
        }
        out.resize(raw.len(), Vec::new());
        for (k, ids) in raw.iter().enumerate() {
            out[k].clear();
            let off = dm.row_off[k] as u32;
            out[k].extend(
                ids.iter()
                    .filter_map(|&t| self.indexes[k].get(t).map(|r| r + off)),
            );
        }
        Ok(())
    }

    fn run(
        &self,
        dm: &Dims,
        raw: &[&[u32]],
        c: &mut Cache,
        scratch: &mut Vec<Vec<u32>>,
    ) -> Result<()> {
        self.compact(dm, raw, scratch)?;
        let rows: Vec<&[u32]> = scratch.iter().map(|v| v.as_slice()).collect();
        forward(dm, &self.params, &rows, c);
        Ok(())
    }

    /// Probabilities of every label for each row; `rows[k]` is modality k's raw ids.
    pub fn probs_batch(&self, rows: &[ModalityRows]) -> Result<Vec<Vec<f32>>> {
        self.map_rows(rows, |q| q.to_vec())
    }

    /// `f(probabilities)` of each row, in parallel, computed row by row: memory holds
    /// one row's probabilities per thread, not rows × labels.
    fn map_rows<T: Send>(
        &self,
        rows: &[ModalityRows],
        f: impl Fn(&mut [f32]) -> T + Sync + Send,
    ) -> Result<Vec<T>> {
        let n = check_rows(rows, self.indexes.len())?;
        let dm = self.dims();
        (0..n)
            .into_par_iter()
            .map_init(
                || (Cache::new(&dm), Vec::new(), Vec::with_capacity(rows.len())),
                |(c, scratch, raw), i| {
                    raw.clear();
                    raw.extend(rows.iter().map(|m| &m.ids[m.offsets[i]..m.offsets[i + 1]]));
                    self.run(&dm, raw, c, scratch)?;
                    dm.out.temper(&mut c.q, self.cfg.temperature);
                    Ok(f(&mut c.q))
                },
            )
            .collect()
    }

    /// Top-k labels of each row.
    pub fn predict_batch(
        &self,
        rows: &[ModalityRows],
        k: usize,
        threshold: f32,
    ) -> Result<Vec<Ranked>> {
        self.map_rows(rows, |q| top_k(q, k, threshold))
    }

    /// Each modality's contribution to `label`'s score for one row (raw ids per
    /// modality); the scores plus the returned bias sum to the label's logit.
    pub fn explain_modalities(
        &self,
        raw: &[&[u32]],
        label: usize,
    ) -> Result<(Vec<ModalityShare>, f32)> {
        if label >= self.n_labels() {
            return Err(MmqError::InvalidParameter(format!(
                "label index {label} out of range for {} labels",
                self.n_labels()
            )));
        }
        if self.cfg.loss == LossKind::Hs {
            return Err(MmqError::InvalidParameter(
                "explaining modalities needs one output row per label (loss softmax, ns or \
                 ova); with loss 'hs' the rows are the tree's inner nodes"
                    .into(),
            ));
        }
        let dm = self.dims();
        let d = dm.d;
        let mut c = Cache::new(&dm);
        let mut scratch = Vec::new();
        self.run(&dm, raw, &mut c, &mut scratch)?;
        let wy = self.params[OUT].row(label);
        let emb = &self.params[EMB];
        let np = c.present.iter().filter(|&&p| p).count().max(1) as f32;
        let mut out = Vec::new();
        for (k, r) in scratch.iter().enumerate() {
            let mut vec = vec![0.0f32; d];
            let mut won = 0u32;
            match dm.fusion {
                SetFusion::Bag => {
                    if c.bag_total > 0.0 {
                        let a = dm.weight(k);
                        for &x in r {
                            emb.add_row_to(x as usize, a / c.bag_total, &mut vec);
                        }
                    }
                }
                SetFusion::Deepset if c.present[k] => {
                    let v = &c.v[k * d..(k + 1) * d];
                    match dm.outer {
                        Pool::Mean => vec.iter_mut().zip(v).for_each(|(o, x)| *o = x / np),
                        Pool::Sum => vec.copy_from_slice(v),
                        Pool::Max => {
                            for i in 0..d {
                                if c.win[i] as usize == k {
                                    vec[i] = c.h[i];
                                    won += 1;
                                }
                            }
                        }
                    }
                }
                SetFusion::Deepset => {}
                SetFusion::Attention => {
                    if dm.kinds[k] == ModalityKind::Dense {
                        let a0 = c.att_off[k];
                        for (j, &x) in r.iter().enumerate() {
                            emb.add_row_to(x as usize, c.att[a0 + j], &mut vec);
                        }
                    } else if c.t_total > 0.0 {
                        for &x in r {
                            emb.add_row_to(x as usize, 1.0 / c.t_total, &mut vec);
                        }
                    }
                }
            }
            out.push(ModalityShare {
                score: super::dot(&vec, wy),
                dims_won: won,
                present: c.present[k],
            });
        }
        Ok((out, self.params[OUT_B].data[label]))
    }

    /// The file header (without the framing keys [`io::to_bytes`] adds).
    fn header(&self) -> Result<serde_json::Value> {
        let mut quants = Vec::new();
        for (k, q) in self.quantizers.iter().enumerate() {
            if let Some(q) = q {
                quants.push(json!({"modality": k, "params": quantizer_header(q)?}));
            }
        }
        let mut h = json!({
            "kind": <SetConfig as io::StoredConfig>::KIND,
            "config": self.cfg,
            "labels": self.labels,
            "label_counts": self.label_counts,
            "history": self.history,
            "quantizers": quants,
        });
        // Only runs with a validation split have one (files of earlier releases lack it).
        if !self.valid_history.is_empty() {
            h["valid_history"] = json!(self.valid_history);
        }
        if let Some(q) = &self.quantized {
            h["quantized"] = q.header(&PARAM_NAMES)?;
        }
        Ok(h)
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        for (k, q) in self.quantizers.iter().enumerate() {
            if let Some(q) = q {
                let (_, t) = quantizer_parts(q, &format!("quantizer.{k}."))?;
                tensors.extend(t);
            }
        }
        let header = self.header()?;
        for (k, idx) in self.indexes.iter().enumerate() {
            if !idx.is_empty() {
                tensors.push((
                    format!("tokens.{k}"),
                    Tensor::U32(vec![idx.len()], idx.ids.clone()),
                ));
            }
        }
        tensors.extend(param_tensors(
            &PARAM_NAMES,
            &self.dims().shapes(),
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
        } = io::read_classifier::<SetConfig>(bytes, what)?;
        let history: Vec<BlendEpoch> = serde_json::from_value(header["history"].clone())
            .map_err(|e| bad(format!("bad history: {e}")))?;
        // A number beyond f32's range parses as infinity, which a save would write as
        // null and no load could read back: refuse it here.
        if let Some(h) = history.iter().find(|h| {
            ![
                &h.weights,
                &h.gain,
                &h.overfit,
                &h.holdout_loss,
                &h.train_loss,
            ]
            .iter()
            .all(|v| v.iter().all(|x| x.is_finite()))
        }) {
            return Err(bad(format!(
                "bad history: epoch {} holds a number that is not a finite 32-bit float",
                h.epoch
            )));
        }
        let km = cfg.modalities.len();
        let mut quantizers: Vec<Option<Quantizer>> = vec![None; km];
        if let Some(list) = header.get("quantizers").and_then(|q| q.as_array()) {
            for q in list {
                let k = q["modality"]
                    .as_u64()
                    .filter(|&k| (k as usize) < km)
                    .ok_or_else(|| bad("quantizer of an unknown modality".into()))?
                    as usize;
                quantizers[k] = Some(quantizer_from_parts(
                    &q["params"],
                    &mut t,
                    &format!("quantizer.{k}."),
                    what,
                )?);
            }
        }
        let mut indexes = Vec::with_capacity(km);
        for k in 0..km {
            let name = format!("tokens.{k}");
            let ids = if t.contains_key(&name) {
                io::take_u32(&mut t, &name, what)?
            } else {
                Vec::new()
            };
            indexes.push(TokenIndex::from_ids(ids).map_err(|e| bad(e.to_string()))?);
        }
        let sizes: Vec<usize> = indexes.iter().map(|i| i.len()).collect();
        if label_counts.len() != labels.len() {
            return Err(bad(format!(
                "{} label counts for {} labels",
                label_counts.len(),
                labels.len()
            )));
        }
        let out = Output::new(cfg.loss, &label_counts).map_err(|e| bad(e.to_string()))?;
        let dm = Dims::new(&cfg, labels.len(), &sizes, out.clone());
        let (params, quantized) = take_params(
            &PARAM_NAMES,
            &dm.shapes(),
            &mut t,
            header.get("quantized"),
            what,
        )?;
        let m = Self {
            cfg,
            labels,
            label_counts,
            indexes,
            quantizers,
            history,
            valid_history: EpochRecord::read_all(&header, "valid_history", what)?,
            params,
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

/// Check that every modality's CSR covers the same rows; returns the row count.
fn check_rows(rows: &[ModalityRows], km: usize) -> Result<usize> {
    if rows.len() != km {
        return Err(MmqError::InvalidInput(format!(
            "expected {km} modalities, got {}",
            rows.len()
        )));
    }
    let n = rows
        .first()
        .map_or(0, |m| m.offsets.len().saturating_sub(1));
    for (k, m) in rows.iter().enumerate() {
        if m.offsets.len() != n + 1 || m.offsets.last() != Some(&m.ids.len()) || m.offsets[0] != 0 {
            return Err(MmqError::InvalidInput(format!(
                "modality {k}: offsets do not describe {n} rows of its ids"
            )));
        }
    }
    Ok(n)
}

/// Rows of a set model's modalities with their labels: `rows[k]` is modality k's raw
/// token ids (CSR, empty where the value is null); the labels of row i are
/// `labels[label_offsets[i]..label_offsets[i + 1]]` (label indices; in validation rows an
/// index past the model's labels is a label training never saw).
#[derive(Clone, Copy)]
pub struct SetRows<'a> {
    pub rows: &'a [ModalityRows<'a>],
    pub label_offsets: &'a [usize],
    pub labels: &'a [u32],
}

/// Train a set model. `rows[k]`: modality k's raw token ids for every row (CSR, empty
/// where the value is null); `label_offsets`/`labels`: the labels of each row (CSR of
/// label indices). `callback` as for [`crate::train::train`].
pub fn train_sets(
    cfg: SetConfig,
    labels: Vec<String>,
    rows: &[ModalityRows],
    label_offsets: &[usize],
    label_ids: &[u32],
    callback: &(dyn Fn(&Progress) -> bool + Sync),
) -> Result<SetModel> {
    let train = SetRows {
        rows,
        label_offsets,
        labels: label_ids,
    };
    train_sets_with(cfg, labels, &train, &TrainOptions::default(), callback)
}

/// [`train_sets`] with a validation split, early stopping and calibration: the same
/// selection as the text model's ([`crate::train::select`]), scored after every epoch
/// (after every super-epoch with online G-Blend).
pub fn train_sets_with(
    mut cfg: SetConfig,
    labels: Vec<String>,
    train: &SetRows,
    opts: &TrainOptions<SetRows>,
    callback: &(dyn Fn(&Progress) -> bool + Sync),
) -> Result<SetModel> {
    if opts.class_weights.is_some() {
        return Err(MmqError::InvalidParameter(
            "class weights are for text and discrete-fusion models (train::train_with)".into(),
        ));
    }
    opts.check()?;
    cfg.temperature = 1.0;
    if let Some(v) = opts.valid {
        let n = check_rows(v.rows, cfg.modalities.len())
            .map_err(|e| MmqError::InvalidInput(format!("validation rows: {e}")))?;
        if v.label_offsets.len() != n + 1 || v.label_offsets.last() != Some(&v.labels.len()) {
            return Err(MmqError::InvalidInput(format!(
                "validation rows: {n} rows of tokens but {} rows of labels",
                v.label_offsets.len().saturating_sub(1)
            )));
        }
        if n == 0 {
            return Err(MmqError::InvalidInput(
                "the validation rows are empty (0 rows)".into(),
            ));
        }
    }
    if cfg.blend == Blend::GblendOffline {
        let estimate = SetConfig {
            blend: Blend::Gblend,
            ..cfg.clone()
        };
        let online = fit_sets(
            estimate,
            labels.clone(),
            train,
            &TrainOptions::default(),
            callback,
            None,
        )?;
        // The mean of the weights the online run used (late epochs alone would say
        // little: a converged head gains nothing more).
        let mut w = vec![0.0f32; cfg.modalities.len() + 1];
        for h in &online.history {
            w.iter_mut().zip(&h.weights).for_each(|(a, b)| *a += b);
        }
        let total: f32 = w.iter().sum();
        w.iter_mut().for_each(|a| *a /= total.max(1e-12));
        let mut model = fit_sets(cfg, labels, train, opts, callback, Some(&w))?;
        model.history = online.history;
        return Ok(model);
    }
    fit_sets(cfg, labels, train, opts, callback, None)
}

/// [`train_sets`] once: with `fixed` head weights (offline G-Blend's second run, on all
/// rows), or estimating them online when `cfg.blend` is G-Blend.
fn fit_sets(
    cfg: SetConfig,
    labels: Vec<String>,
    train: &SetRows,
    opts: &TrainOptions<SetRows>,
    callback: &(dyn Fn(&Progress) -> bool + Sync),
    fixed: Option<&[f32]>,
) -> Result<SetModel> {
    let SetRows {
        rows,
        label_offsets,
        labels: label_ids,
    } = *train;
    cfg.validate()?;
    let nl = labels.len();
    if nl < 2 {
        return Err(MmqError::InvalidInput(format!(
            "a classifier needs at least 2 labels, got {nl}"
        )));
    }
    let km = cfg.modalities.len();
    let n = check_rows(rows, km)?;
    if n == 0 {
        return Err(MmqError::InvalidInput(
            "no training rows (empty input)".into(),
        ));
    }
    if label_offsets.len() != n + 1 || label_offsets.last() != Some(&label_ids.len()) {
        return Err(MmqError::InvalidInput(format!(
            "{n} rows of tokens but {} rows of labels",
            label_offsets.len().saturating_sub(1)
        )));
    }
    check_labels(label_offsets, label_ids, nl)?;
    let counts = label_counts(label_ids, &labels)?;
    let gblend = cfg.blend != Blend::None && fixed.is_none();

    // Rows: G-Blend holds a slice out and draws a training subset of the same size.
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed);
    let mut all: Vec<u32> = (0..n as u32).collect();
    let (train_rows, holdout_rows, probe_rows) = if gblend {
        for i in (1..n).rev() {
            all.swap(i, rng.random_range(0..=i));
        }
        let hold = (cfg.holdout as f64 * n as f64).round() as usize;
        let need = (3 * nl).max(30);
        if hold < need || n - hold < hold {
            return Err(MmqError::InvalidParameter(format!(
                "G-Blend holds out {hold} of {n} rows (holdout={}) to estimate its weights; it \
                 needs at least {need} (max(30, 3 × {nl} labels)): raise holdout or give more rows",
                cfg.holdout
            )));
        }
        let holdout = all[n - hold..].to_vec();
        let mut train = all[..n - hold].to_vec();
        train.sort_unstable();
        let probe = all[..hold].to_vec();
        (train, holdout, probe)
    } else {
        (all, Vec::new(), Vec::new())
    };

    // Compact each modality's ids, in its own table.
    let mut indexes: Vec<TokenIndex> = Vec::with_capacity(km);
    let mut local: Vec<Vec<u32>> = Vec::with_capacity(km);
    for m in rows {
        let mut idx = TokenIndex::default();
        local.push(m.ids.iter().map(|&t| idx.get_or_insert(t)).collect());
        indexes.push(idx);
    }
    let sizes: Vec<usize> = indexes.iter().map(|i| i.len()).collect();
    let out = Output::new(cfg.loss, &counts)?;
    let dm = Dims::new(&cfg, nl, &sizes, out.clone());
    let negatives = if cfg.loss == LossKind::Ns {
        negatives_table(&counts, &mut rng)
    } else {
        Vec::new()
    };
    for (k, l) in local.iter_mut().enumerate() {
        let off = dm.row_off[k] as u32;
        l.iter_mut().for_each(|r| *r += off);
    }
    let shapes = dm.shapes();
    let b = 1.0 / cfg.dim as f32;
    let mut mats = Vec::with_capacity(N_PARAMS);
    for (p, &(prow, cols)) in shapes.iter().enumerate() {
        let len = prow * cols;
        let v: Vec<f32> = if p == EMB || p == KEY {
            (0..len).map(|_| rng.random_range(-b..b)).collect()
        } else {
            vec![0.0; len]
        };
        mats.push(HogwildMatrix::from_vec(v, cols));
    }
    let w: [HogwildMatrix; N_PARAMS] = mats
        .try_into()
        .unwrap_or_else(|_| unreachable!("N_PARAMS matrices"));
    let n_heads = km + 1;
    let hw: Vec<AtomicU32> = (0..n_heads)
        .map(|i| {
            let x = if let Some(f) = fixed {
                f.get(i).copied().unwrap_or(0.0)
            } else if gblend {
                1.0 / n_heads as f32
            } else if i == 0 {
                1.0
            } else {
                0.0
            };
            AtomicU32::new(x.to_bits())
        })
        .collect();
    let tokens_per_epoch: u64 = train_rows
        .iter()
        .map(|&r| {
            let r = r as usize;
            rows.iter()
                .map(|m| (m.offsets[r + 1] - m.offsets[r]) as u64)
                .sum::<u64>()
                + 1
        })
        .sum();
    let threads = cfg.threads;
    let clock = Clock::new(tokens_per_epoch * cfg.epoch as u64, threads, callback);
    let shared = Shared {
        cfg: &cfg,
        dm: &dm,
        w: &w,
        local: &local,
        rows,
        label_offsets,
        label_ids,
        hw: &hw,
        diverged_lr: AtomicU32::new(0),
        clock: &clock,
        negatives: &negatives,
    };
    let pool = clock::pool(threads)?;
    let mut history = Vec::new();
    let mut order = train_rows;
    let work = |epoch: usize, t: usize, seed: u64, part: &[u32]| {
        Worker::new(&shared, seed).run(part, epoch, t == 0)
    };
    let diverged = |s: &Shared, epoch: usize| {
        match s.diverged_lr.load(Ordering::Relaxed) {
        0 => Ok(()),
        bits => Err(MmqError::InvalidParameter(format!(
            "training diverged (non-finite scores) in epoch {epoch} at learning rate {}: lower lr (now {})",
            f32::from_bits(bits),
            cfg.lr
        ))),
    }
    };
    // The validation rows, compacted once into each modality's embedding rows.
    let vlocal = opts.valid.map(|v| compact_rows(v.rows, &indexes, &dm));
    let score = |w: &[HogwildMatrix; N_PARAMS]| {
        let (Some(v), Some(vl)) = (opts.valid, &vlocal) else {
            return None;
        };
        Some(pool.install(|| score_compact(&dm, w, v, vl, 1.0)))
    };
    let snapshot = || w.iter().map(HogwildMatrix::snapshot).collect::<Vec<_>>();
    let step = if gblend { cfg.blend_window.max(1) } else { 1 };
    let mut sel = Selector::new(opts.patience, opts.deadline, cfg.epoch, step);
    if !gblend {
        for epoch in 0..cfg.epoch {
            run_epochs(
                &pool,
                threads,
                cfg.seed,
                epoch..epoch + 1,
                &mut order,
                &clock,
                &work,
                &mut |e| diverged(&shared, e),
            )?;
            let train_loss = clock.take_epoch_loss();
            if let Some(scored) = score(&w) {
                if sel.record(epoch, train_loss, scored, &clock, snapshot) {
                    break;
                }
            }
        }
    } else {
        // Online G-Blend, one super-epoch (`blend_window` epochs) at a time: from the
        // current weights, a trial run trains each head alone over the window; its
        // held-out gain and added overfitting set the blend, the trial is undone, and the
        // blended model trains over the same window.
        let measure = |s: &Shared| {
            pool.install(|| (s.head_losses(&holdout_rows), s.head_losses(&probe_rows)))
        };
        // Trials report the main run's progress (they do not advance it).
        let trial_cb = |p: &Progress| {
            callback(&Progress {
                progress: clock.progress(),
                ..p.clone()
            })
        };
        let (mut pv, mut pt) = measure(&shared);
        let mut used = vec![1.0 / n_heads as f32; n_heads];
        let window = cfg.blend_window.max(1);
        for start in (0..cfg.epoch).step_by(window) {
            let end = (start + window).min(cfg.epoch);
            let snap: Vec<Vec<f32>> = w.iter().map(HogwildMatrix::snapshot).collect();
            let (mut tv, mut tt) = (vec![f32::NAN; n_heads], vec![f32::NAN; n_heads]);
            for i in 0..n_heads {
                set_head_weights(&hw, &one_hot(n_heads, i));
                let tclock = clock.trial(&trial_cb);
                let trial = Shared {
                    clock: &tclock,
                    diverged_lr: AtomicU32::new(0),
                    ..shared
                };
                let ran = run_epochs(
                    &pool,
                    threads,
                    cfg.seed,
                    start..end,
                    &mut order.clone(),
                    &tclock,
                    &|e, t, seed, part| Worker::new(&trial, seed).run(part, e, t == 0),
                    &mut |_| Ok(()),
                );
                if trial.diverged_lr.load(Ordering::Relaxed) == 0 {
                    // A refused progress report stops the whole fit.
                    ran.inspect_err(|_| clock.request_stop())?;
                    let (v, t) = measure(&trial);
                    (tv[i], tt[i]) = (v[i], t[i]);
                } // else the head diverged alone: it gains nothing (NaN).
                for (m, x) in w.iter().zip(&snap) {
                    m.restore(x);
                }
            }
            let gain: Vec<f32> = (0..n_heads).map(|i| pv[i] - tv[i]).collect();
            let overfit: Vec<f32> = (0..n_heads)
                .map(|i| (tv[i] - tt[i]) - (pv[i] - pt[i]))
                .collect();
            used = blend_weights(&gain, &overfit, &used);
            set_head_weights(&hw, &used);
            run_epochs(
                &pool,
                threads,
                cfg.seed,
                start..end,
                &mut order,
                &clock,
                &work,
                &mut |e| diverged(&shared, e),
            )?;
            let (v, t) = measure(&shared);
            history.push(BlendEpoch {
                epoch: start,
                epochs: end - start,
                weights: used.clone(),
                gain,
                overfit,
                holdout_loss: v.clone(),
                train_loss: t.clone(),
            });
            (pv, pt) = (v, t);
            let train_loss = clock.take_epoch_loss();
            if let Some(scored) = score(&w) {
                if sel.record(end - 1, train_loss, scored, &clock, snapshot) {
                    break;
                }
            }
        }
    }
    clock.finish(cfg.epoch)?;
    let (valid_history, best) = sel.finish();
    let mut best = best.map(Vec::into_iter);
    let mut params: [Mat; N_PARAMS] = Default::default();
    for (p, m) in w.into_iter().enumerate() {
        params[p] = Mat {
            data: match best.as_mut().and_then(Iterator::next) {
                Some(b) => b,
                None => m.into_vec(),
            },
            cols: shapes[p].1,
        };
    }
    if !params.iter().all(|m| m.data.iter().all(|x| x.is_finite())) {
        return Err(MmqError::InvalidParameter(format!(
            "training diverged (non-finite weights): lower lr (now {})",
            cfg.lr
        )));
    }
    let mut model = SetModel {
        quantizers: vec![None; km],
        cfg,
        labels,
        label_counts: counts,
        indexes,
        history,
        valid_history,
        params,
        quantized: None,
        out,
    };
    if let (Some(v), Some(vl), true) = (opts.valid, &vlocal, opts.calibrate) {
        let p = &model.params;
        let t = fit_temperature_by(|t| pool.install(|| score_compact(&dm, p, v, vl, t)).0);
        model.cfg.temperature = t;
    }
    Ok(model)
}

/// Mean loss and accuracy at temperature `t` of the weights `w` on validation rows `v`,
/// whose ids [`compact_rows`] has compacted into `vl`.
fn score_compact<W: Weights + Sync>(
    dm: &Dims,
    w: &[W; N_PARAMS],
    v: &SetRows,
    vl: &[(Vec<usize>, Vec<u32>)],
    t: f32,
) -> (f32, f32) {
    score_rows(
        v.label_offsets,
        v.labels,
        || (Cache::new(dm), Vec::new()),
        |(c, slices), i, out| {
            slices.clear();
            slices.extend(vl.iter().map(|(o, r)| &r[o[i]..o[i + 1]]));
            forward(dm, w, slices, c);
            out.clear();
            out.extend_from_slice(&c.q);
            dm.out.temper(out, t);
        },
    )
}

/// Each modality's raw ids of `rows` compacted into the model's embedding rows (offset
/// into the shared table; ids training never saw left out), CSR per modality.
fn compact_rows(
    rows: &[ModalityRows],
    indexes: &[TokenIndex],
    dm: &Dims,
) -> Vec<(Vec<usize>, Vec<u32>)> {
    rows.iter()
        .zip(indexes)
        .enumerate()
        .map(|(k, (m, idx))| {
            let off = dm.row_off[k] as u32;
            let n = m.offsets.len() - 1;
            let mut offsets = Vec::with_capacity(n + 1);
            let mut ids = Vec::new();
            offsets.push(0);
            for i in 0..n {
                ids.extend(
                    m.ids[m.offsets[i]..m.offsets[i + 1]]
                        .iter()
                        .filter_map(|&t| idx.get(t).map(|r| r + off)),
                );
                offsets.push(ids.len());
            }
            (offsets, ids)
        })
        .collect()
}

/// G-Blend's weights from each head's held-out `gain` and added `overfit` over a window
/// (see the module docs): `w_i ∝ max(G_i, 0) / (O_i² + 1e-4)`; `used` when no head gained.
pub fn blend_weights(gain: &[f32], overfit: &[f32], used: &[f32]) -> Vec<f32> {
    let raw: Vec<f32> = gain
        .iter()
        .zip(overfit)
        .map(|(&g, &o)| {
            if g.is_finite() && o.is_finite() && g > 0.0 {
                g / (o * o + 1e-4)
            } else {
                0.0
            }
        })
        .collect();
    let z: f32 = raw.iter().sum();
    if z > 0.0 && z.is_finite() {
        raw.iter().map(|r| r / z).collect()
    } else {
        used.to_vec()
    }
}

fn one_hot(n: usize, i: usize) -> Vec<f32> {
    (0..n).map(|j| if j == i { 1.0 } else { 0.0 }).collect()
}

fn set_head_weights(hw: &[AtomicU32], w: &[f32]) {
    for (a, x) in hw.iter().zip(w) {
        a.store(x.to_bits(), Ordering::Relaxed);
    }
}

struct Shared<'a> {
    cfg: &'a SetConfig,
    dm: &'a Dims,
    w: &'a [HogwildMatrix; N_PARAMS],
    /// Compacted embedding rows per modality, aligned with `rows[k].ids`.
    local: &'a [Vec<u32>],
    rows: &'a [ModalityRows<'a>],
    label_offsets: &'a [usize],
    label_ids: &'a [u32],
    /// Loss weight of each head (f32 bits): fused, then per modality.
    hw: &'a [AtomicU32],
    diverged_lr: AtomicU32,
    clock: &'a Clock<'a>,
    /// ns: the table negative labels are drawn from (fastText's, by count^0.5).
    negatives: &'a [u32],
}

impl Shared<'_> {
    /// Row `row`'s compacted embedding rows per modality, into `out` (reused).
    fn row_slices<'s>(&'s self, row: usize, out: &mut Vec<&'s [u32]>) {
        out.clear();
        out.extend(
            self.rows
                .iter()
                .zip(self.local)
                .map(|(m, l)| &l[m.offsets[row]..m.offsets[row + 1]]),
        );
    }

    /// Mean loss of every head (fused, then per modality, over the rows where that
    /// modality is present) on `which` rows; a row's loss is the mean over its labels.
    fn head_losses(&self, which: &[u32]) -> Vec<f32> {
        let dm = self.dm;
        let nh = dm.k() + 1;
        let (sum, cnt) = which
            .par_iter()
            .map_init(
                || (Cache::new(dm), Vec::new()),
                |(c, slices), &row| {
                    let row = row as usize;
                    self.row_slices(row, slices);
                    forward(dm, self.w, slices, c);
                    let labels =
                        &self.label_ids[self.label_offsets[row]..self.label_offsets[row + 1]];
                    let mut s = vec![0.0f64; nh];
                    let mut n = vec![0u64; nh];
                    for &y in labels {
                        s[0] += -safe_ln(c.q[y as usize]) as f64 / labels.len() as f64;
                        for k in (0..dm.k()).filter(|&k| c.present[k]) {
                            s[k + 1] +=
                                -safe_ln(c.qk[k * dm.nl + y as usize]) as f64 / labels.len() as f64;
                        }
                    }
                    n[0] = 1;
                    for k in (0..dm.k()).filter(|&k| c.present[k]) {
                        n[k + 1] = 1;
                    }
                    (s, n)
                },
            )
            .reduce(
                || (vec![0.0; nh], vec![0; nh]),
                |(mut a, mut b), (x, y)| {
                    a.iter_mut().zip(&x).for_each(|(p, q)| *p += q);
                    b.iter_mut().zip(&y).for_each(|(p, q)| *p += q);
                    (a, b)
                },
            );
        sum.iter()
            .zip(&cnt)
            .map(|(s, &c)| {
                if c > 0 {
                    (s / c as f64) as f32
                } else {
                    f32::NAN
                }
            })
            .collect()
    }
}

struct Worker<'a> {
    s: &'a Shared<'a>,
    rng: Xoshiro256PlusPlus,
    c: Cache,
    hw: Vec<f32>,
}

impl<'a> Worker<'a> {
    fn new(s: &'a Shared<'a>, seed: u64) -> Self {
        let mut c = Cache::new(s.dm);
        c.want_q = s.dm.out.needs_probs();
        Self {
            s,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            c,
            hw: s
                .hw
                .iter()
                .map(|a| f32::from_bits(a.load(Ordering::Relaxed)))
                .collect(),
        }
    }

    fn run(&mut self, part: &[u32], epoch: usize, reporter: bool) {
        let s = self.s;
        let mut tick = Ticker::new(s.clock, reporter);
        let mut slices = Vec::with_capacity(s.rows.len());
        for (i, &row) in part.iter().enumerate() {
            let row = row as usize;
            let (_, lr) = tick.lr(s.clock, s.cfg.lr);
            s.row_slices(row, &mut slices);
            let labels = &s.label_ids[s.label_offsets[row]..s.label_offsets[row + 1]];
            let target = if labels.len() == 1 {
                labels[0]
            } else {
                labels[self.rng.random_range(0..labels.len())]
            } as usize;
            if !s.dm.out.needs_probs() {
                let neg = (s.cfg.neg, s.negatives);
                s.dm.out
                    .pairs(target, labels, neg, &mut self.rng, &mut self.c.pairs);
            }
            forward(s.dm, s.w, &slices, &mut self.c);
            let finite = if s.dm.out.needs_probs() {
                self.c.q.iter().all(|q| q.is_finite())
            } else {
                pair_scores(s.w, &mut self.c);
                self.c.ps.iter().all(|q| q.is_finite())
            };
            if !finite {
                s.diverged_lr.store(lr.to_bits(), Ordering::Relaxed);
                s.clock.request_stop();
                return;
            }
            tick.loss(row_loss(s.dm, &self.c, target, &self.hw));
            let mut sink = Sgd { w: s.w, lr };
            backward(s.dm, s.w, &slices, target, &self.hw, &mut self.c, &mut sink);
            let work = slices.iter().map(|x| x.len() as u64).sum::<u64>() + 1;
            if !tick.tick(s.clock, i, work, epoch, s.cfg.lr) {
                return;
            }
        }
        tick.flush(s.clock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        fn add_at(&mut self, param: usize, row: usize, col: usize, a: f32) {
            let cols = self.1[param];
            self.0[param][row * cols + col] += a;
        }
    }

    fn cfg(fusion: SetFusion, pool: Pool, outer: Pool, blend: Blend) -> SetConfig {
        SetConfig {
            fusion,
            pool,
            outer_pool: outer,
            blend,
            dim: 4,
            alpha: 0.7,
            modalities: vec![
                Modality {
                    name: "title".into(),
                    kind: ModalityKind::Text,
                },
                Modality {
                    name: "brand".into(),
                    kind: ModalityKind::Categorical,
                },
                Modality {
                    name: "image".into(),
                    kind: ModalityKind::Dense,
                },
            ],
            ..Default::default()
        }
    }

    fn params(dm: &Dims, seed: u64) -> [Mat; N_PARAMS] {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut out: [Mat; N_PARAMS] = Default::default();
        for (p, &(r, c)) in dm.shapes().iter().enumerate() {
            out[p] = Mat {
                data: (0..r * c).map(|_| rng.random_range(-1.0..1.0f32)).collect(),
                cols: c,
            };
        }
        out
    }

    /// Every mode's analytic gradient equals central finite differences.
    #[test]
    fn set_gradients_match_finite_differences() {
        let sizes = [4usize, 2, 6];
        // Rows: title tokens (one repeated), brand, image codes; and rows with gaps.
        let rows_sets: [[Vec<u32>; 3]; 3] = [
            [vec![0, 2, 2], vec![0], vec![0, 3, 5]],
            [vec![1], vec![], vec![2, 4]],
            [vec![], vec![1], vec![]],
        ];
        let hw = [0.5f32, 0.2, 0.1, 0.3];
        let mut checked = 0;
        let losses = [LossKind::Softmax, LossKind::Ns, LossKind::Hs, LossKind::Ova];
        for (fusion, loss) in [SetFusion::Bag, SetFusion::Deepset, SetFusion::Attention]
            .into_iter()
            .flat_map(|f| losses.map(|l| (f, l)))
        {
            for pool in [Pool::Mean, Pool::Sum, Pool::Max] {
                for outer in [Pool::Mean, Pool::Sum, Pool::Max] {
                    for blend in [Blend::None, Blend::Gblend] {
                        if fusion != SetFusion::Deepset && outer != Pool::Mean {
                            continue;
                        }
                        if loss != LossKind::Softmax && blend != Blend::None {
                            continue;
                        }
                        if fusion != SetFusion::Deepset
                            && blend == Blend::None
                            && pool != Pool::Mean
                        {
                            continue;
                        }
                        let c0 = SetConfig {
                            loss,
                            ..cfg(fusion, pool, outer, blend)
                        };
                        let out = Output::new(loss, &[3, 2, 1]).unwrap();
                        let dm = Dims::new(&c0, 3, &sizes, out.clone());
                        for (ri, set) in rows_sets.iter().enumerate() {
                            let rows: Vec<Vec<u32>> = set
                                .iter()
                                .enumerate()
                                .map(|(k, v)| v.iter().map(|&x| x + dm.row_off[k] as u32).collect())
                                .collect();
                            let rs: Vec<&[u32]> = rows.iter().map(|v| v.as_slice()).collect();
                            let target = 1;
                            let w = params(&dm, 7 + ri as u64);
                            let mut c = Cache::new(&dm);
                            // The output rows each loss trains for target 1 (ns: two
                            // negatives, one repeated; hs: its path; ova: every label).
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
                            let kind = loss;
                            let loss = |w: &[Mat; N_PARAMS], c: &mut Cache| {
                                forward(&dm, w, &rs, c);
                                pair_scores(w, c);
                                row_loss(&dm, c, target, &hw)
                            };
                            loss(&w, &mut c);
                            let shapes = dm.shapes();
                            let mut g = Grads(
                                shapes.iter().map(|&(r, c)| vec![0.0; r * c]).collect(),
                                shapes.iter().map(|s| s.1).collect(),
                            );
                            backward(&dm, &w, &rs, target, &hw, &mut c, &mut g);
                            let eps = 1e-3f32;
                            for p in 0..N_PARAMS {
                                for i in 0..w[p].data.len() {
                                    let mut wp = w.clone();
                                    wp[p].data[i] += eps;
                                    let lp = loss(&wp, &mut c);
                                    wp[p].data[i] -= 2.0 * eps;
                                    let lm = loss(&wp, &mut c);
                                    let num = (lp - lm) / (2.0 * eps);
                                    let ana = g.0[p][i];
                                    assert!(
                                        (num - ana).abs() <= 3e-3 + 2e-2 * num.abs(),
                                        "{fusion:?} {kind:?} {pool:?}/{outer:?} {blend:?} row {ri}: d/d{}[{i}] numeric {num} analytic {ana}",
                                        PARAM_NAMES[p]
                                    );
                                    checked += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(checked > 1000, "{checked}");
    }

    /// One step of the training sink (with its one-pass read-and-update of the attention
    /// rows) moves every weight by exactly −lr × the gradient the collecting sink gets.
    #[test]
    fn sgd_step_is_minus_lr_times_the_gradient() {
        let sizes = [4usize, 2, 6];
        let set = [vec![0u32, 2, 2], vec![0], vec![0, 3, 5]];
        let hw = [0.5f32, 0.2, 0.1, 0.3];
        let lr = 2.0f32;
        for fusion in [SetFusion::Bag, SetFusion::Deepset, SetFusion::Attention] {
            for blend in [Blend::None, Blend::Gblend] {
                let dm = Dims::new(
                    &cfg(fusion, Pool::Mean, Pool::Mean, blend),
                    3,
                    &sizes,
                    Output::new(LossKind::Softmax, &[1, 1, 1]).unwrap(),
                );
                let rows: Vec<Vec<u32>> = set
                    .iter()
                    .enumerate()
                    .map(|(k, v)| v.iter().map(|&x| x + dm.row_off[k] as u32).collect())
                    .collect();
                let rs: Vec<&[u32]> = rows.iter().map(|v| v.as_slice()).collect();
                let w = params(&dm, 11);
                let shapes = dm.shapes();
                let mut g = Grads(
                    shapes.iter().map(|&(r, c)| vec![0.0; r * c]).collect(),
                    shapes.iter().map(|s| s.1).collect(),
                );
                let mut c = Cache::new(&dm);
                forward(&dm, &w, &rs, &mut c);
                backward(&dm, &w, &rs, 1, &hw, &mut c, &mut g);
                let hm: [HogwildMatrix; N_PARAMS] =
                    std::array::from_fn(|p| HogwildMatrix::from_vec(w[p].data.clone(), w[p].cols));
                let mut c = Cache::new(&dm);
                forward(&dm, &hm, &rs, &mut c);
                backward(&dm, &hm, &rs, 1, &hw, &mut c, &mut Sgd { w: &hm, lr });
                for (p, m) in hm.into_iter().enumerate() {
                    for (i, (after, before)) in m.into_vec().iter().zip(&w[p].data).enumerate() {
                        let want = before - lr * g.0[p][i];
                        assert!(
                            (after - want).abs() <= 1e-6 * (1.0 + want.abs()),
                            "{fusion:?} {blend:?} {}[{i}]: {after} after the step, want {want}",
                            PARAM_NAMES[p]
                        );
                    }
                }
            }
        }
    }

    /// A task where the label is in the text for some rows and in a categorical column
    /// for others; a third, dense-code modality is noise and often missing.
    fn synth(n: usize, seed: u64) -> (Vec<[Vec<u32>; 3]>, Vec<u32>) {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for _ in 0..n {
            let y: u32 = rng.random_range(0..3);
            let text_informative = rng.random_bool(0.5);
            let mut title: Vec<u32> = (0..3).map(|_| rng.random_range(100..200)).collect();
            if text_informative {
                title.push(y);
            }
            let brand = if text_informative {
                vec![rng.random_range(10..20)]
            } else {
                vec![50 + y]
            };
            let image = if rng.random_bool(0.3) {
                vec![]
            } else {
                (0..4).map(|j| j * 8 + rng.random_range(0..8)).collect()
            };
            rows.push([title, brand, image]);
            labels.push(y);
        }
        (rows, labels)
    }

    struct Csr {
        offsets: Vec<Vec<usize>>,
        ids: Vec<Vec<u32>>,
    }
    fn csr(rows: &[[Vec<u32>; 3]]) -> Csr {
        let mut c = Csr {
            offsets: vec![vec![0]; 3],
            ids: vec![Vec::new(); 3],
        };
        for r in rows {
            for k in 0..3 {
                c.ids[k].extend_from_slice(&r[k]);
                c.offsets[k].push(c.ids[k].len());
            }
        }
        c
    }
    fn views(c: &Csr) -> Vec<ModalityRows<'_>> {
        (0..3)
            .map(|k| ModalityRows {
                offsets: &c.offsets[k],
                ids: &c.ids[k],
            })
            .collect()
    }

    fn accuracy(m: &SetModel, rows: &[[Vec<u32>; 3]], labels: &[u32]) -> f32 {
        let c = csr(rows);
        let p = m.predict_batch(&views(&c), 1, 0.0).unwrap();
        p.iter().zip(labels).filter(|(r, &y)| r[0].0 == y).count() as f32 / labels.len() as f32
    }

    fn fit(c: SetConfig, rows: &[[Vec<u32>; 3]], labels: &[u32]) -> SetModel {
        fit_fixed(c, rows, labels, None)
    }

    /// [`fit`], or with `fixed` head weights: one training on all rows (`fit_sets`).
    fn fit_fixed(
        c: SetConfig,
        rows: &[[Vec<u32>; 3]],
        labels: &[u32],
        fixed: Option<&[f32]>,
    ) -> SetModel {
        let x = csr(rows);
        let loffs: Vec<usize> = (0..=labels.len()).collect();
        let names = vec!["a".to_string(), "b".into(), "c".into()];
        match fixed {
            None => train_sets(c, names, &views(&x), &loffs, labels, &|_| true),
            Some(w) => {
                let v = views(&x);
                let train = SetRows {
                    rows: &v,
                    label_offsets: &loffs,
                    labels,
                };
                fit_sets(
                    c,
                    names,
                    &train,
                    &TrainOptions::default(),
                    &|_| true,
                    Some(w),
                )
            }
        }
        .unwrap()
    }

    #[test]
    fn set_modes_learn_from_any_modality() {
        let (tr, ytr) = synth(3000, 1);
        let (te, yte) = synth(1000, 2);
        for (fusion, pool, outer, blend) in [
            (SetFusion::Bag, Pool::Mean, Pool::Mean, Blend::None),
            (SetFusion::Deepset, Pool::Mean, Pool::Mean, Blend::None),
            (SetFusion::Deepset, Pool::Max, Pool::Max, Blend::None),
            (SetFusion::Deepset, Pool::Sum, Pool::Sum, Blend::None),
            (SetFusion::Attention, Pool::Mean, Pool::Mean, Blend::None),
            (SetFusion::Deepset, Pool::Mean, Pool::Mean, Blend::Gblend),
            (SetFusion::Bag, Pool::Mean, Pool::Mean, Blend::Gblend),
            (SetFusion::Bag, Pool::Mean, Pool::Mean, Blend::GblendOffline),
        ] {
            let mut c = cfg(fusion, pool, outer, blend);
            c.dim = 16;
            c.epoch = 10;
            c.lr = if pool == Pool::Sum { 0.05 } else { 0.5 };
            let m = fit(c, &tr, &ytr);
            let acc = accuracy(&m, &te, &yte);
            assert!(
                acc > 0.95,
                "{fusion:?} {pool:?}/{outer:?} {blend:?}: {acc} {:?}",
                m.history.last()
            );
            if blend != Blend::None {
                assert_eq!(m.history.len(), 10);
                for h in &m.history {
                    let s: f32 = h.weights.iter().sum();
                    assert!((s - 1.0).abs() < 1e-4, "{:?}", h.weights);
                }
                // Over the run the noise modality (image codes) gets less weight than
                // the fused head: its trials gain little on held-out rows.
                let mean = |i: usize| m.history.iter().map(|h| h.weights[i]).sum::<f32>();
                assert!(mean(3) < mean(0), "{:?}", m.history);
                assert!(m.history.iter().all(|h| h.gain.len() == 4 && h.epochs == 1));
            }
        }
    }

    /// Every set fusion trains with every loss (ns, hs, ova beside softmax), and the
    /// file keeps the loss: the loaded model gives the same probabilities.
    #[test]
    fn set_models_learn_with_every_loss_and_keep_it_in_the_file() {
        let (tr, ytr) = synth(3000, 1);
        let (te, yte) = synth(1000, 2);
        let x = csr(&te);
        let v = views(&x);
        for fusion in [SetFusion::Bag, SetFusion::Deepset, SetFusion::Attention] {
            for loss in [LossKind::Ns, LossKind::Hs, LossKind::Ova] {
                let mut c = cfg(fusion, Pool::Mean, Pool::Mean, Blend::None);
                c.dim = 16;
                c.epoch = 10;
                c.lr = 0.5;
                c.loss = loss;
                let m = fit(c, &tr, &ytr);
                let acc = accuracy(&m, &te, &yte);
                assert!(acc > 0.95, "{fusion:?} {loss:?}: {acc}");
                let back = SetModel::from_bytes(&m.to_bytes().unwrap(), "mem").unwrap();
                assert_eq!(back.cfg.loss, loss);
                assert_eq!(back.probs_batch(&v).unwrap(), m.probs_batch(&v).unwrap());
                if loss == LossKind::Hs {
                    // The labels' probabilities sum to 1 along the tree.
                    for p in m.probs_batch(&v).unwrap().iter().take(20) {
                        let s: f32 = p.iter().sum();
                        assert!((s - 1.0).abs() < 1e-4, "{s}");
                    }
                }
            }
        }
        let mut c = cfg(SetFusion::Deepset, Pool::Mean, Pool::Mean, Blend::Gblend);
        c.loss = LossKind::Ns;
        assert!(c.validate().unwrap_err().to_string().contains("softmax"));
    }

    #[test]
    fn set_valid_keeps_the_best_epoch_stops_on_patience_and_calibrates() {
        let (tr, ytr) = synth(600, 31);
        let (va, yva) = synth(300, 32);
        let (xt, xv) = (csr(&tr), csr(&va));
        let (vt, vv) = (views(&xt), views(&xv));
        let (lt, lv): (Vec<usize>, Vec<usize>) =
            ((0..=ytr.len()).collect(), (0..=yva.len()).collect());
        let train = SetRows {
            rows: &vt,
            label_offsets: &lt,
            labels: &ytr,
        };
        let valid = SetRows {
            rows: &vv,
            label_offsets: &lv,
            labels: &yva,
        };
        let names = || vec!["a".to_string(), "b".into(), "c".into()];
        let score = |m: &SetModel| {
            let p = m.probs_batch(&vv).unwrap();
            score_rows(
                &lv,
                &yva,
                || (),
                |_, i, out| {
                    out.clear();
                    out.extend_from_slice(&p[i]);
                },
            )
        };
        for (fusion, blend) in [
            (SetFusion::Deepset, Blend::None),
            (SetFusion::Attention, Blend::None),
            (SetFusion::Bag, Blend::Gblend),
            (SetFusion::Deepset, Blend::GblendOffline),
        ] {
            let mut c = cfg(fusion, Pool::Mean, Pool::Mean, blend);
            c.dim = 8;
            c.epoch = 8;
            c.lr = 0.5;
            let run = |patience, calibrate| {
                let opts = TrainOptions {
                    valid: Some(&valid),
                    patience,
                    calibrate,
                    ..Default::default()
                };
                train_sets_with(c.clone(), names(), &train, &opts, &|_| true).unwrap()
            };
            let m = run(None, false);
            let h = &m.valid_history;
            assert_eq!(h.len(), 8, "{fusion:?} {blend:?}");
            let best = h.iter().rfind(|r| r.best).unwrap();
            assert!(h.iter().all(|r| r.valid_accuracy <= best.valid_accuracy));
            let (loss, acc) = score(&m);
            assert!(
                (acc - best.valid_accuracy).abs() < 1e-6,
                "{fusion:?}: {acc} {best:?}"
            );
            assert!(
                (loss - best.valid_loss).abs() < 1e-4,
                "{fusion:?}: {loss} {best:?}"
            );
            if blend != Blend::None {
                assert!(!m.history.is_empty(), "the G-Blend record stays");
            }
            let p = run(Some(1), false);
            let first_worse = h.iter().position(|r| !r.best);
            assert_eq!(p.valid_history.len(), first_worse.map_or(8, |e| e + 1));
            let k = run(None, true);
            let (lk, ak) = score(&k);
            assert!(lk <= loss + 1e-5 && (ak - acc).abs() < 1e-6);
            let back = SetModel::from_bytes(&k.to_bytes().unwrap(), "<mem>").unwrap();
            assert_eq!(back.valid_history, k.valid_history);
            assert_eq!(back.cfg.temperature, k.cfg.temperature);
        }
        // Without validation rows neither key is written (as in earlier releases' files).
        let plain = fit(
            cfg(SetFusion::Bag, Pool::Mean, Pool::Mean, Blend::None),
            &tr,
            &ytr,
        );
        let bytes = plain.to_bytes().unwrap();
        let header = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]).to_string();
        assert!(!header.contains("valid_history") && !header.contains("temperature"));
    }

    #[test]
    fn blend_with_weight_on_the_fused_head_alone_is_naive_training() {
        // The per-modality heads exist but add nothing at weight 0: the fixed-weight run
        // (offline G-Blend's second training) then equals the model trained without them.
        let (tr, ytr) = synth(500, 6);
        let x = csr(&tr);
        for fusion in [SetFusion::Bag, SetFusion::Deepset, SetFusion::Attention] {
            let mut c = cfg(fusion, Pool::Mean, Pool::Mean, Blend::None);
            c.dim = 8;
            let naive = fit(c.clone(), &tr, &ytr);
            c.blend = Blend::GblendOffline;
            let fixed = fit_fixed(c, &tr, &ytr, Some(&[1.0, 0.0, 0.0, 0.0]));
            // Equal up to f32 rounding (the blended forward pass sums in another order).
            let close = |a: &[f32], b: &[f32]| {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5)
            };
            for p in [EMB, OUT, OUT_B, KEY] {
                let (a, b) = (&naive.params[p].data, &fixed.params[p].data);
                assert!(close(a, b), "{fusion:?} param {p}");
            }
            let v = views(&x);
            let (pa, pb) = (
                naive.probs_batch(&v).unwrap(),
                fixed.probs_batch(&v).unwrap(),
            );
            assert!(pa.iter().zip(&pb).all(|(a, b)| close(a, b)), "{fusion:?}");
        }
    }

    /// `quantize` for set models: every modality's token rows (and with qout the output
    /// matrix) as codes; smaller file, same predictions after a load, top label mostly
    /// unchanged.
    #[test]
    fn quantized_set_models_round_trip() {
        let (tr, ytr) = synth(600, 3);
        let x = csr(&tr[..200]);
        for fusion in [SetFusion::Deepset, SetFusion::Attention] {
            let mut c = cfg(fusion, Pool::Mean, Pool::Mean, Blend::None);
            c.dim = 16;
            let m = fit(c, &tr, &ytr);
            for qout in [false, true] {
                let q = m
                    .quantize(&QuantizeOptions {
                        qout,
                        ..Default::default()
                    })
                    .unwrap();
                let bq = q.to_bytes().unwrap();
                // Codes in place of the f32 rows (a table this small is not made smaller:
                // the 256-centroid codebooks alone hold 256 rows' worth of values).
                let (_, t) = io::from_bytes(&bq, "mem").unwrap();
                assert!(!t.contains_key("input") && t.contains_key("q.input.codes"));
                assert_eq!(t.contains_key("q.output.codes"), qout);
                let back = SetModel::from_bytes(&bq, "mem").unwrap();
                let (pq, pb) = (
                    q.probs_batch(&views(&x)).unwrap(),
                    back.probs_batch(&views(&x)).unwrap(),
                );
                assert_eq!(pq, pb);
                let top = |p: &[Vec<f32>]| -> Vec<usize> {
                    p.iter()
                        .map(|r| (0..r.len()).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap())
                        .collect()
                };
                let p0 = m.probs_batch(&views(&x)).unwrap();
                let same = top(&p0)
                    .iter()
                    .zip(top(&pq))
                    .filter(|(a, b)| **a == *b)
                    .count();
                assert!(same >= 180, "{fusion:?} qout={qout}: {same}/200");
            }
        }
    }

    #[test]
    fn set_model_round_trips_and_is_deterministic() {
        let (tr, ytr) = synth(600, 3);
        let mut c = cfg(SetFusion::Attention, Pool::Mean, Pool::Mean, Blend::Gblend);
        c.dim = 8;
        let a = fit(c.clone(), &tr, &ytr);
        let b = fit(c, &tr, &ytr);
        let x = csr(&tr[..50]);
        let pa = a.probs_batch(&views(&x)).unwrap();
        assert_eq!(pa, b.probs_batch(&views(&x)).unwrap());
        let back = SetModel::from_bytes(&a.to_bytes().unwrap(), "mem").unwrap();
        assert_eq!(back.history, a.history);
        assert_eq!(pa, back.probs_batch(&views(&x)).unwrap());
    }

    /// Found by the fuzz target set_file's save → load round trip (as model_file found
    /// it for classifiers): a G-Blend history number beyond f32's range loaded as
    /// infinity, was saved as null, and the saved file did not load.
    #[test]
    fn a_history_number_beyond_f32_is_refused_on_load() {
        let (tr, ytr) = synth(300, 5);
        let mut c = cfg(SetFusion::Deepset, Pool::Mean, Pool::Mean, Blend::Gblend);
        c.dim = 4;
        c.epoch = 2;
        let b = fit(c, &tr, &ytr).to_bytes().unwrap();
        SetModel::from_bytes(&b, "mem").unwrap();
        for field in ["weights", "gain", "overfit", "holdout_loss", "train_loss"] {
            let (mut header, tensors) = io::from_bytes(&b, "mem").unwrap();
            assert!(header["history"][0][field].is_array(), "{field}");
            header["history"][0][field] = json!([1e39]);
            let mut tensors: Vec<_> = tensors.into_iter().collect();
            tensors.sort_by(|a, b| a.0.cmp(&b.0));
            let edited = io::to_bytes(&header, &tensors).unwrap();
            let e = SetModel::from_bytes(&edited, "mem").err().expect(field);
            assert!(matches!(e, MmqError::InvalidModelFile { .. }), "{e}");
            assert!(
                e.to_string().contains("finite 32-bit float"),
                "{field}: {e}"
            );
        }
    }

    #[test]
    fn empty_row_predicts_the_bias_prior_and_shares_sum_to_the_logit() {
        let (mut tr, mut ytr) = synth(900, 4);
        // Label 2 is the most common among rows with nothing at all.
        for _ in 0..300 {
            tr.push([vec![], vec![], vec![]]);
            ytr.push(2);
        }
        let mut c = cfg(SetFusion::Deepset, Pool::Mean, Pool::Max, Blend::None);
        c.dim = 8;
        c.epoch = 5;
        let m = fit(c, &tr, &ytr);
        let empty: [&[u32]; 3] = [&[], &[], &[]];
        let x = Csr {
            offsets: vec![vec![0, 0]; 3],
            ids: vec![vec![]; 3],
        };
        let p = m.probs_batch(&views(&x)).unwrap();
        let top = p[0]
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        assert_eq!(top, 2);
        let (shares, bias) = m.explain_modalities(&empty, 2).unwrap();
        assert!(shares.iter().all(|s| !s.present && s.score == 0.0));
        assert!(bias > 0.0);
        // Shares + bias = the logit, and dims won add up to d.
        let row: [&[u32]; 3] = [&[150, 1], &[12], &[3, 9]];
        let (shares, bias) = m.explain_modalities(&row, 1).unwrap();
        assert_eq!(shares.iter().map(|s| s.dims_won).sum::<u32>(), 8);
        let total: f32 = shares.iter().map(|s| s.score).sum::<f32>() + bias;
        let x = Csr {
            offsets: vec![vec![0, 2], vec![0, 1], vec![0, 2]],
            ids: vec![vec![150, 1], vec![12], vec![3, 9]],
        };
        let p = m.probs_batch(&views(&x)).unwrap();
        let logits: Vec<f32> = {
            let dm = m.dims();
            let mut cc = Cache::new(&dm);
            let mut s = Vec::new();
            m.run(&dm, &row, &mut cc, &mut s).unwrap();
            (0..3)
                .map(|l| super::super::dot(m.params[OUT].row(l), &cc.h) + m.params[OUT_B].data[l])
                .collect()
        };
        assert!((total - logits[1]).abs() < 1e-4, "{total} vs {}", logits[1]);
        assert!(
            (p[0][1] - {
                let mut l = logits.clone();
                softmax_in_place(&mut l);
                l[1]
            })
            .abs()
                < 1e-6
        );
    }

    #[test]
    fn set_validation_errors() {
        let (tr, ytr) = synth(200, 5);
        let x = csr(&tr);
        let loffs: Vec<usize> = (0..=ytr.len()).collect();
        let names = vec!["a".to_string(), "b".into(), "c".into()];
        let err = |c: SetConfig| {
            train_sets(c, names.clone(), &views(&x), &loffs, &ytr, &|_| true)
                .err()
                .expect("an error")
                .to_string()
        };
        let mut c = cfg(SetFusion::Deepset, Pool::Mean, Pool::Mean, Blend::None);
        c.modalities[1].name = "title".into();
        assert!(err(c).contains("collide"));
        let mut c = cfg(SetFusion::Attention, Pool::Mean, Pool::Mean, Blend::None);
        c.modalities[2].kind = ModalityKind::Text;
        assert!(err(c).contains("attention"));
        // 200 rows × 0.1 = 20 held-out rows < 30.
        let c = cfg(SetFusion::Deepset, Pool::Mean, Pool::Mean, Blend::Gblend);
        assert!(err(c).contains("G-Blend holds out 20"));
        let mut c = cfg(SetFusion::Deepset, Pool::Mean, Pool::Mean, Blend::None);
        c.holdout = 0.9;
        assert!(err(c).contains("holdout"));
    }

    #[test]
    fn blend_weights_follow_gain_over_overfitting_squared() {
        // Head 0 gains 0.2 with no extra gap; head 1 gains 0.2 but overfits by 0.1;
        // head 2 gets worse; head 3 diverged (NaN).
        let w = blend_weights(
            &[0.2, 0.2, -0.1, f32::NAN],
            &[0.0, 0.1, 0.0, f32::NAN],
            &[0.3, 0.3, 0.2, 0.2],
        );
        let r0 = 0.2 / 1e-4;
        let r1 = 0.2 / (0.01 + 1e-4);
        assert!((w[0] - r0 / (r0 + r1)).abs() < 1e-5);
        assert!((w[1] - r1 / (r0 + r1)).abs() < 1e-5);
        assert_eq!(&w[2..], &[0.0, 0.0]);
        // Nothing gained: the weights are kept.
        assert_eq!(
            blend_weights(&[-0.2, -0.1], &[0.0, 0.0], &[0.6, 0.4]),
            vec![0.6, 0.4]
        );
    }
}

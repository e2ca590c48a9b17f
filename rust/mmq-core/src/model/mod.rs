//! The shallow classifier: a bag of token embeddings, averaged, then a linear output
//! layer with one of fastText's losses.
pub mod compress;
pub mod dense;
pub mod fasttext;
pub mod fusion;
pub mod kernels;
pub mod loss;
mod output;
mod persist;
pub mod sets;

use crate::error::{MmqError, Result};
use crate::text::vocab::Vocab;
use crate::text::{Tokenizer, TokenizerConfig};
use dense::DenseInput;
use loss::{sigmoid, LossKind, Tree};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Hyperparameters of a classifier (stored in the model file).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelConfig {
    pub dim: usize,
    pub epoch: usize,
    pub lr: f32,
    pub loss: LossKind,
    pub neg: usize,
    pub threads: usize,
    pub seed: u64,
    pub tokenizer: TokenizerConfig,
    /// Weight of each visual (dense-code) token relative to a text token.
    pub alpha: f32,
    /// What maps the bag of tokens to label scores (see [`Head`]).
    pub head: Head,
    /// L2 penalty on the weights of the linear head (0 = none).
    pub l2: f32,
    /// How `l2` reaches each weight of the linear head (see [`L2Mode`]). Written to the
    /// file only when it is not the default, so files of earlier releases still read.
    #[serde(skip_serializing_if = "L2Mode::is_lazy")]
    pub l2_mode: L2Mode,
    /// Inverse-document-frequency weighting of the linear head's features.
    pub idf: bool,
    /// Temperature of the predicted probabilities (1 = as trained; fitted on a
    /// validation split by calibration).
    pub temperature: f32,
    /// Modality dropout in training: for a row with text and dense tokens, the dense
    /// tokens are left out of an update with this probability, else the text tokens with
    /// this probability (never both).
    pub modality_dropout: f32,
    /// Probabilities as fastText reports them (models imported from a fastText file):
    /// ns and ova use its sigmoid table, and every reported probability is
    /// `exp(ln(p + 1e-5))` (hs: the product of its path's floored branch probabilities),
    /// the numbers fastText's `predict` returns. Written only when set.
    #[serde(skip_serializing_if = "is_false")]
    pub fasttext_compat: bool,
    /// fastText's `-minCount`: a word (its own id) seen fewer times than this in the
    /// training rows gets no row; its char n-grams and word n-grams still do. 1 keeps
    /// every word. Written only when above 1.
    #[serde(skip_serializing_if = "is_one_u64")]
    pub min_count: u64,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_one_u64(n: &u64) -> bool {
    *n == 1
}

/// How the linear head's L2 penalty reaches its weights. A weight is updated only when
/// a row that has its token is trained (as in VW and fastText).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum L2Mode {
    /// Each update adds `l2 · w` to the gradient of the weights it touches: a token in a
    /// fraction f of the rows is regularised f times less per epoch than one in every
    /// row (frequent tokens are shrunk most).
    #[default]
    Lazy,
    /// The full objective's penalty `Σ_rows loss + (n · l2 / 2) ‖w‖²`, as scikit-learn's
    /// LogisticRegression with `C = 1 / (n · l2)`: each update scales a token's `l2` by
    /// `n / df` (df: training rows with the token), so every weight gets the same
    /// regularisation per epoch and rare n-grams cannot memorise the rows they occur in.
    Full,
}

impl L2Mode {
    fn is_lazy(&self) -> bool {
        *self == L2Mode::Lazy
    }
}

/// The part of the model between the bag of tokens and the label scores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Head {
    /// fastText's: the mean of `dim`-wide token embeddings, then a `labels × dim`
    /// output layer (SGD, linear learning-rate decay).
    #[default]
    Bottleneck,
    /// A linear model straight from the hashed token features to the labels (no `dim`
    /// bottleneck): each token row holds one weight per label, plus a bias per label.
    /// Features are the bag's term frequencies, sublinear (1 + ln count), optionally
    /// IDF-weighted, L2-normalised per row; trained by AdaGrad (per-weight steps).
    Linear,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            dim: 100,
            epoch: 5,
            lr: 0.1,
            loss: LossKind::Softmax,
            neg: 5,
            threads: 1,
            seed: 0,
            tokenizer: TokenizerConfig::default(),
            alpha: 1.0,
            head: Head::Bottleneck,
            l2: 0.0,
            l2_mode: L2Mode::Lazy,
            idf: false,
            temperature: 1.0,
            modality_dropout: 0.0,
            fasttext_compat: false,
            min_count: 1,
        }
    }
}

impl ModelConfig {
    pub fn validate(&self) -> Result<()> {
        check_training(self.dim, self.epoch, self.lr, self.threads)?;
        if self.min_count == 0 {
            return Err(MmqError::InvalidParameter(
                "min_count must be >= 1 (1 keeps every word), got 0".into(),
            ));
        }
        let bad = |m: String| Err(MmqError::InvalidParameter(m));
        if self.loss == LossKind::Ns && self.neg < 1 {
            return bad(format!("neg must be >= 1 with loss='ns', got {}", self.neg));
        }
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return bad(format!(
                "alpha must be a finite number >= 0, got {}",
                self.alpha
            ));
        }
        if self.head == Head::Linear && self.loss == LossKind::Hs {
            return bad(
                "head='linear' trains with loss 'softmax', 'ns' or 'ova', got loss='hs'".into(),
            );
        }
        if !(self.modality_dropout >= 0.0 && self.modality_dropout < 1.0) {
            return bad(format!(
                "modality_dropout must be a probability in [0, 1), got {}",
                self.modality_dropout
            ));
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return bad(format!("l2 must be a finite number >= 0, got {}", self.l2));
        }
        check_temperature(self.temperature)?;
        self.tokenizer.validate()
    }
}

/// Maps raw token ids (hash buckets, and extra ids such as visual tokens) to rows of the
/// input matrix. Only ids seen in training get a row; others are ignored at prediction.
///
/// The lookup is a direct table (one u32 per possible id) when the id space is small
/// enough for it, which turns each of a training set's hundreds of millions of lookups
/// into one array read; otherwise a hash map.
#[derive(Clone, Debug, Default)]
pub struct TokenIndex {
    /// Raw id of each row.
    pub ids: Vec<u32>,
    lookup: Lookup,
}

#[derive(Clone, Debug)]
enum Lookup {
    Map(std::collections::HashMap<u32, u32, BuildIdHasher>),
    /// Row of each id, [`ABSENT`] for ids without one.
    Table(Vec<u32>),
}

impl Default for Lookup {
    fn default() -> Self {
        Lookup::Map(Default::default())
    }
}

const ABSENT: u32 = u32::MAX;
/// The largest direct table (entries; 4 bytes each).
const TABLE_MAX: u64 = 1 << 26;

/// Token ids are already uniform hashes: an identity-style hasher is enough.
#[derive(Clone, Default)]
pub struct BuildIdHasher;
impl std::hash::BuildHasher for BuildIdHasher {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}
pub struct IdHasher(u64);
impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // Spread low bits to high ones for hashbrown's control bytes.
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | b as u64;
        }
    }
    fn write_u32(&mut self, i: u32) {
        self.0 = i as u64;
    }
}
impl std::fmt::Debug for BuildIdHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BuildIdHasher")
    }
}

impl TokenIndex {
    /// An empty index for ids up to `max_id`, about to receive `n_tokens` lookups: a
    /// direct table when it has at most [`TABLE_MAX`] entries and is not much larger
    /// than the lookups it serves.
    pub fn for_ids(max_id: u32, n_tokens: usize) -> Self {
        let space = max_id as u64 + 1;
        let lookup = if space <= TABLE_MAX && space <= 8 * n_tokens as u64 + (1 << 20) {
            Lookup::Table(vec![ABSENT; space as usize])
        } else {
            Lookup::default()
        };
        Self {
            ids: Vec::new(),
            lookup,
        }
    }

    /// Free the id → row lookup, keeping `ids`, for a trainer that reads only row numbers
    /// for a while (at 10M buckets the direct table is 40 MB); returns whether it was a
    /// direct table, for [`Self::restore_lookup`].
    pub(crate) fn release_lookup(&mut self) -> bool {
        matches!(
            std::mem::replace(&mut self.lookup, Lookup::Map(Default::default())),
            Lookup::Table(_)
        )
    }

    /// Rebuild the lookup that [`Self::release_lookup`] freed, from `ids`.
    pub(crate) fn restore_lookup(&mut self, table: bool) {
        let ids = std::mem::take(&mut self.ids);
        self.lookup = match ids.iter().copied().max() {
            Some(m) if table => Lookup::Table(vec![ABSENT; m as usize + 1]),
            _ => Lookup::default(),
        };
        for id in ids {
            self.get_or_insert(id);
        }
    }

    pub fn from_ids(ids: Vec<u32>) -> Result<Self> {
        let max_id = ids.iter().copied().max().unwrap_or(0);
        let mut idx = Self::for_ids(max_id, ids.len());
        for &id in &ids {
            let r = idx.ids.len() as u32;
            if idx.get_or_insert(id) != r {
                return Err(MmqError::InvalidInput(format!(
                    "token id {id} appears twice in the token index"
                )));
            }
        }
        Ok(idx)
    }

    #[inline]
    pub fn get(&self, id: u32) -> Option<u32> {
        match &self.lookup {
            Lookup::Map(m) => m.get(&id).copied(),
            Lookup::Table(t) => t.get(id as usize).copied().filter(|&r| r != ABSENT),
        }
    }

    /// Row of `id`, adding a row if it is new.
    #[inline]
    pub fn get_or_insert(&mut self, id: u32) -> u32 {
        let next = self.ids.len() as u32;
        let r = match &mut self.lookup {
            Lookup::Table(t) if (id as usize) < t.len() => {
                let slot = &mut t[id as usize];
                if *slot == ABSENT {
                    *slot = next;
                }
                *slot
            }
            Lookup::Table(t) => {
                // An id past the table (not expected): move to a map.
                let map = t
                    .iter()
                    .enumerate()
                    .filter(|(_, &r)| r != ABSENT)
                    .map(|(i, &r)| (i as u32, r))
                    .collect();
                self.lookup = Lookup::Map(map);
                return self.get_or_insert(id);
            }
            Lookup::Map(m) => *m.entry(id).or_insert(next),
        };
        if r == next {
            self.ids.push(id);
        }
        r
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// A trained classifier's parameters.
#[derive(Clone, Debug)]
pub struct Model {
    pub cfg: ModelConfig,
    pub labels: Vec<String>,
    pub label_counts: Vec<u64>,
    pub index: TokenIndex,
    /// `index.len() × dim`, row-major.
    pub input: Vec<f32>,
    /// `n_out × dim`: one row per label (per inner tree node with `hs`).
    pub output: Vec<f32>,
    pub tree: Option<Tree>,
    /// Dense columns whose codes are tokens of this model (discrete fusion).
    pub dense: Vec<DenseInput>,
    /// Linear head with `idf`: the IDF weight of each token row (else empty).
    pub idf: Vec<f32>,
    /// Per-epoch record of a run with a validation split (else empty).
    pub history: Vec<EpochRecord>,
    /// The word dictionary of a model imported from fastText (its tokenizer's ids).
    pub vocab: Option<Arc<Vocab>>,
    /// The codes and codebooks of a quantized model ([`Model::quantize`]), which its
    /// file stores instead of the weights (`input` and `output` hold them decoded).
    pub compressed: Option<Arc<compress::Compressed>>,
}

/// One epoch of a run with a validation split.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    /// Mean loss of the training rows seen in this epoch (by the reporting worker).
    pub train_loss: f32,
    pub valid_loss: f32,
    pub valid_accuracy: f32,
    /// Whether these weights were the best so far (the ones kept).
    pub best: bool,
}

impl EpochRecord {
    /// A model file's list of epochs under `key` (absent: empty). A number beyond f32's range parses as
    /// infinity, which a save would write as null and no load could read back: refused.
    pub(crate) fn read_all(header: &serde_json::Value, key: &str, what: &str) -> Result<Vec<Self>> {
        let bad = |reason: String| MmqError::InvalidModelFile {
            path: what.to_string(),
            reason,
        };
        let Some(h) = header.get(key) else {
            return Ok(Vec::new());
        };
        let history: Vec<Self> =
            serde_json::from_value(h.clone()).map_err(|e| bad(format!("bad history: {e}")))?;
        if let Some(r) = history.iter().find(|r| {
            ![r.train_loss, r.valid_loss, r.valid_accuracy]
                .iter()
                .all(|x| x.is_finite())
        }) {
            return Err(bad(format!(
                "bad history: epoch {} holds a number that is not a finite 32-bit float",
                r.epoch
            )));
        }
        Ok(history)
    }
}

/// `t` is a usable probability temperature: finite and > 0.
pub(crate) fn check_temperature(t: f32) -> Result<()> {
    if t.is_finite() && t > 0.0 {
        Ok(())
    } else {
        Err(MmqError::InvalidParameter(format!(
            "temperature must be a finite number > 0, got {t}"
        )))
    }
}

/// For `skip_serializing_if`: keys whose value 1 is the default of files that lack them.
pub(crate) fn is_one(x: &f32) -> bool {
    *x == 1.0
}

/// The largest `dim` (embedding width) of any model: checked before anything is
/// allocated, and on load.
pub const MAX_DIM: usize = 100_000;
/// The most training threads.
pub const MAX_THREADS: usize = 1024;

/// The hyperparameters every trainer has: `1 <= dim <= MAX_DIM`, `epoch` >= 1,
/// `1 <= threads <= MAX_THREADS` and a finite `lr` > 0.
pub(crate) fn check_training(dim: usize, epoch: usize, lr: f32, threads: usize) -> Result<()> {
    let bad = |m: String| Err(MmqError::InvalidParameter(m));
    if dim < 1 {
        return bad(format!("dim must be >= 1, got {dim}"));
    }
    if dim > MAX_DIM {
        return bad(format!("dim must be <= {MAX_DIM}, got {dim}"));
    }
    if threads > MAX_THREADS {
        return bad(format!("threads must be <= {MAX_THREADS}, got {threads}"));
    }
    if epoch < 1 {
        return bad(format!("epoch must be >= 1, got {epoch}"));
    }
    if !(lr.is_finite() && lr > 0.0) {
        return bad(format!("lr must be a finite number > 0, got {lr}"));
    }
    if threads < 1 {
        return bad(format!("threads must be >= 1, got {threads}"));
    }
    Ok(())
}

/// Top-k predictions of one row: (label, probability), most probable first.
pub type Ranked = Vec<(u32, f32)>;

impl Model {
    /// The tokenizer that gives this model's token ids.
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        Tokenizer::with_vocab(self.cfg.tokenizer.clone(), self.vocab.clone())
    }

    pub fn n_labels(&self) -> usize {
        self.labels.len()
    }

    pub fn n_out(&self) -> usize {
        match (self.cfg.head, self.cfg.loss) {
            (Head::Linear, _) => 1,
            (_, LossKind::Hs) => self.n_labels().saturating_sub(1),
            _ => self.n_labels(),
        }
    }

    /// Width of a token row of `input`, of a row of `output` and of [`Self::hidden`]'s
    /// output: `dim`, or one weight per label for the linear head (whose one output row
    /// holds the labels' biases).
    pub fn width(&self) -> usize {
        match self.cfg.head {
            Head::Bottleneck => self.cfg.dim,
            Head::Linear => self.n_labels(),
        }
    }

    /// The bag's vector: the weighted mean of the known tokens' rows (zero when no token
    /// is known); for the linear head, the label scores of the row's L2-normalised
    /// features (bias not included). `tokens` are raw ids; `weights` (if any) per token.
    pub fn hidden(&self, tokens: &[u32], weights: Option<&[f32]>, out: &mut [f32]) {
        let width = self.width();
        out.fill(0.0);
        if self.cfg.head == Head::Linear {
            let mut feats = Vec::with_capacity(tokens.len());
            let known = tokens.iter().enumerate().filter_map(|(i, &t)| {
                self.index
                    .get(t)
                    .map(|r| (t, r, weights.map_or(1.0, |w| w[i])))
            });
            self.linear_row(known, &mut feats);
            for &(r, v) in &feats {
                let row = &self.input[r as usize * width..(r as usize + 1) * width];
                for (o, x) in out.iter_mut().zip(row) {
                    *o += v * x;
                }
            }
            return;
        }
        let mut total = 0.0f32;
        // Each token's row is looked up once, PREFETCH_AHEAD tokens before it is read.
        let row_of = |i: usize| {
            let r = tokens.get(i).and_then(|&t| self.index.get(t))?;
            let row = &self.input[r as usize * width..(r as usize + 1) * width];
            kernels::prefetch(row);
            Some(row)
        };
        let mut ahead: [Option<&[f32]>; kernels::PREFETCH_AHEAD] = std::array::from_fn(row_of);
        for i in 0..tokens.len() {
            let slot = i % kernels::PREFETCH_AHEAD;
            let cur = std::mem::replace(&mut ahead[slot], row_of(i + kernels::PREFETCH_AHEAD));
            if let Some(row) = cur {
                let w = weights.map_or(1.0, |w| w[i]);
                for (o, x) in out.iter_mut().zip(row) {
                    *o += w * x;
                }
                total += w;
            }
        }
        if total > 0.0 {
            let inv = 1.0 / total;
            out.iter_mut().for_each(|o| *o *= inv);
        }
    }

    /// The linear head's features of one row from its known tokens (raw id, row, weight),
    /// into `out`: see [`linear_row`].
    pub fn linear_row(
        &self,
        items: impl Iterator<Item = (u32, u32, f32)>,
        out: &mut Vec<(u32, f32)>,
    ) {
        let idf = (!self.idf.is_empty()).then_some(&self.idf[..]);
        let bucket = self.cfg.tokenizer.bucket as u64;
        linear_row(items, bucket, self.cfg.alpha, idf, out);
    }

    /// Probability of every label given a hidden vector (at the model's temperature).
    pub fn probs(&self, hidden: &[f32], out: &mut Vec<f32>) {
        self.probs_at(hidden, self.cfg.temperature, out)
    }

    /// Probability of every label given a hidden vector, at temperature `t`: scores are
    /// divided by `t` before the softmax or sigmoid (hs: each label's path probability
    /// is raised to 1/t and the distribution renormalised).
    pub fn probs_at(&self, hidden: &[f32], t: f32, out: &mut Vec<f32>) {
        let dim = self.cfg.dim;
        let nl = self.n_labels();
        let inv_t = 1.0 / t;
        out.clear();
        if self.cfg.head == Head::Linear {
            out.extend(
                hidden
                    .iter()
                    .zip(&self.output)
                    .map(|(h, b)| (h + b) * inv_t),
            );
            match self.cfg.loss {
                LossKind::Softmax => softmax_in_place(out),
                _ => out.iter_mut().for_each(|x| *x = sigmoid(*x)),
            }
            return;
        }
        match self.cfg.loss {
            LossKind::Softmax | LossKind::Ns | LossKind::Ova => {
                out.resize(nl, 0.0);
                kernels::matvec(&self.output, dim, hidden, out);
                if self.cfg.loss == LossKind::Softmax {
                    out.iter_mut().for_each(|x| *x *= inv_t);
                    softmax_in_place(out);
                } else if self.cfg.fasttext_compat {
                    out.iter_mut()
                        .for_each(|x| *x = loss::table_sigmoid(*x * inv_t));
                } else {
                    out.iter_mut().for_each(|x| *x = sigmoid(*x * inv_t));
                }
                if self.cfg.fasttext_compat {
                    out.iter_mut().for_each(|p| *p = loss::ft_log(*p).exp());
                }
            }
            LossKind::Hs => {
                // Each inner node's score is divided by t, so that every node's two
                // branches still sum to 1 and the top-k search below stays exact.
                let tree = self.tree.as_ref().expect("hs model has a tree");
                out.resize(nl, 0.0);
                for (l, o) in out.iter_mut().enumerate() {
                    let mut lp = 0.0f32;
                    for (&node, &code) in tree.paths[l].iter().zip(&tree.codes[l]) {
                        let w = &self.output[node as usize * dim..(node as usize + 1) * dim];
                        let x = dot(w, hidden) * inv_t;
                        lp += if self.cfg.fasttext_compat {
                            loss::ft_branch(x, code)
                        } else {
                            kernels::log_sigmoid(if code { x } else { -x })
                        };
                    }
                    *o = lp.exp();
                }
            }
        }
    }

    /// The `k` most probable labels with probability >= `threshold`, most probable first
    /// (ties: lower label index first). `buf` is scratch of one row's scores; nothing of
    /// size rows × labels is made. With `hs` (bottleneck head) the tree is searched depth
    /// first, skipping every subtree whose path probability is already below the k-th best
    /// found or the threshold (fastText's `HierarchicalSoftmaxLoss::dfs`): about k · depth
    /// inner nodes are scored instead of every label's path.
    pub fn predict_hidden(
        &self,
        hidden: &[f32],
        k: usize,
        threshold: f32,
        buf: &mut Vec<f32>,
    ) -> Ranked {
        if self.cfg.loss == LossKind::Hs && self.cfg.head == Head::Bottleneck {
            return self.hs_top_k(hidden, k, threshold);
        }
        self.probs(hidden, buf);
        top_k(buf, k, threshold)
    }

    /// [`Self::predict_hidden`] for up to [`BLOCK`] rows at once, whose hidden vectors
    /// are the `n` rows of `hidden` (`n × width`). With softmax, ns or ova (bottleneck
    /// head) the label scores come from [`kernels::scores_block`] in slices of
    /// [`LABEL_SLICE`] labels, each folded at once into every row's top k (by score: the
    /// order of the probabilities) and, for softmax, a running maximum and sum of
    /// exponentials; so memory is O(BLOCK · (LABEL_SLICE + k)) whatever the number of
    /// labels, and each output row is read once per block rather than once per row.
    pub fn predict_block(
        &self,
        hidden: &[f32],
        n: usize,
        k: usize,
        threshold: f32,
        s: &mut RankScratch,
    ) -> Vec<Ranked> {
        let width = self.width();
        debug_assert!(n <= BLOCK && hidden.len() >= n * width);
        if self.cfg.loss == LossKind::Hs
            || self.cfg.head == Head::Linear
            || self.cfg.fasttext_compat
            || k == 0
        {
            return (0..n)
                .map(|j| {
                    let h = &hidden[j * width..(j + 1) * width];
                    self.predict_hidden(h, k, threshold, &mut s.buf)
                })
                .collect();
        }
        let dim = self.cfg.dim;
        let inv_t = 1.0 / self.cfg.temperature;
        s.ht.clear();
        s.ht.resize(dim * BLOCK, 0.0);
        for j in 0..n {
            for (d, &x) in hidden[j * width..(j + 1) * width].iter().enumerate() {
                s.ht[d * BLOCK + j] = x * inv_t;
            }
        }
        let softmax = self.cfg.loss == LossKind::Softmax;
        let mut best: Vec<TopK> = (0..n).map(|_| TopK::new(k)).collect();
        let (mut max, mut sum) = ([f32::NEG_INFINITY; BLOCK], [0.0f32; BLOCK]);
        for (c, w) in self.output.chunks(LABEL_SLICE * dim).enumerate() {
            let l0 = c * LABEL_SLICE;
            let scores = &mut s.scores;
            scores.resize(w.len() / dim * BLOCK, 0.0);
            kernels::scores_block(w, dim, &s.ht, scores);
            for (j, b) in best.iter_mut().enumerate() {
                let col = scores.iter().skip(j).step_by(BLOCK);
                if softmax {
                    let m = col.clone().copied().fold(max[j], f32::max);
                    if m > max[j] {
                        sum[j] *= (max[j] - m).exp();
                        max[j] = m;
                    }
                    sum[j] += col.clone().map(|&x| (x - m).exp()).sum::<f32>();
                }
                for (l, &x) in col.enumerate() {
                    if b.admits(x) {
                        b.push((l0 + l) as u32, x);
                    }
                }
            }
        }
        best.into_iter()
            .enumerate()
            .map(|(j, b)| {
                let mut r = b.into_sorted();
                for e in r.iter_mut() {
                    e.1 = if softmax {
                        (e.1 - max[j]).exp() / sum[j]
                    } else {
                        sigmoid(e.1)
                    };
                }
                r.retain(|e| e.1 >= threshold);
                r
            })
            .collect()
    }

    fn hs_top_k(&self, hidden: &[f32], k: usize, threshold: f32) -> Ranked {
        let tree = self.tree.as_ref().expect("hs model has a tree");
        let dim = self.cfg.dim;
        let inv_t = 1.0 / self.cfg.temperature;
        let floor = if self.cfg.fasttext_compat {
            // fastText prunes at ln(threshold + 1e-5), so even at threshold 0 a label
            // below 1e-5 is never returned.
            loss::ft_log(threshold)
        } else if threshold > 0.0 {
            threshold.ln()
        } else {
            f32::NEG_INFINITY
        };
        if k == 0 {
            return Vec::new();
        }
        let mut best = TopK::new(k);
        // Depth first with an explicit stack (a skewed Huffman tree can be deep), the
        // more probable child first, so that the k-th best score rises early and prunes.
        let mut stack: Vec<(usize, f32)> = vec![(tree.root(), 0.0)];
        while let Some((node, lp)) = stack.pop() {
            if lp < floor || !best.admits(lp) {
                continue;
            }
            if node < tree.n {
                best.push(tree.slot_label[node], lp);
                continue;
            }
            let r = node - tree.n;
            let x = dot(&self.output[r * dim..(r + 1) * dim], hidden) * inv_t;
            let (left, right) = if self.cfg.fasttext_compat {
                (
                    (tree.left[node], lp + loss::ft_branch(x, false)),
                    (tree.right[node], lp + loss::ft_branch(x, true)),
                )
            } else {
                // ln σ(-x) = ln σ(x) - x: one logarithm per node.
                let ls = kernels::log_sigmoid(x);
                ((tree.left[node], lp + ls - x), (tree.right[node], lp + ls))
            };
            if x >= 0.0 {
                stack.extend([left, right]);
            } else {
                stack.extend([right, left]);
            }
        }
        let mut r = best.into_sorted();
        r.iter_mut().for_each(|e| e.1 = e.1.exp());
        r
    }
}

pub use kernels::BLOCK;

/// Labels scored per slice by [`Model::predict_block`] (a 16 × 256 score tile is 16 KiB).
pub const LABEL_SLICE: usize = 256;

/// Scratch of [`Model::predict_block`], reused across blocks.
#[derive(Default)]
pub struct RankScratch {
    ht: Vec<f32>,
    scores: Vec<f32>,
    buf: Vec<f32>,
}

/// The best `k` (label, score) pairs seen, by score then lower label: a binary min-heap
/// of at most `k` entries whose root is the worst kept.
struct TopK {
    k: usize,
    heap: Vec<(u32, f32)>,
}

impl TopK {
    fn new(k: usize) -> Self {
        Self {
            k,
            heap: Vec::with_capacity(k.min(1024)),
        }
    }

    /// `a` ranks below `b` (lower score, or same score and higher label).
    #[inline]
    fn worse(a: &(u32, f32), b: &(u32, f32)) -> bool {
        a.1 < b.1 || (a.1 == b.1 && a.0 > b.0)
    }

    /// Whether a score could still enter (ties may: the label decides).
    #[inline]
    fn admits(&self, score: f32) -> bool {
        self.heap.len() < self.k || (self.k > 0 && score >= self.heap[0].1)
    }

    #[inline]
    fn push(&mut self, label: u32, score: f32) {
        let e = (label, score);
        if self.heap.len() < self.k {
            self.heap.push(e);
            let mut i = self.heap.len() - 1;
            while i > 0 {
                let p = (i - 1) / 2;
                if Self::worse(&self.heap[i], &self.heap[p]) {
                    self.heap.swap(i, p);
                    i = p;
                } else {
                    break;
                }
            }
        } else if self.k > 0 && Self::worse(&self.heap[0], &e) {
            self.heap[0] = e;
            let n = self.heap.len();
            let mut i = 0;
            loop {
                let (l, r) = (2 * i + 1, 2 * i + 2);
                let mut m = i;
                if l < n && Self::worse(&self.heap[l], &self.heap[m]) {
                    m = l;
                }
                if r < n && Self::worse(&self.heap[r], &self.heap[m]) {
                    m = r;
                }
                if m == i {
                    break;
                }
                self.heap.swap(i, m);
                i = m;
            }
        }
    }

    fn into_sorted(mut self) -> Ranked {
        self.heap
            .sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        self.heap
    }
}

/// The linear head's features of one row from its (token row, weight) pairs, in place:
/// pairs of one row are merged (sorted by row), each value becomes
/// `weight · (1 + ln count)` (sublinear term frequency; the weight of the token's first
/// occurrence), times the row's IDF if given, and the vector is L2-normalised. Returns
/// the merged, normalised pairs (a prefix of `feats`).
pub fn linear_features<'a>(
    feats: &'a mut Vec<(u32, f32)>,
    idf: Option<&[f32]>,
) -> &'a [(u32, f32)] {
    feats.sort_by_key(|&(r, _)| r);
    let mut n = 0usize;
    let mut i = 0usize;
    while i < feats.len() {
        let (r, w) = feats[i];
        let mut j = i + 1;
        while j < feats.len() && feats[j].0 == r {
            j += 1;
        }
        let count = (j - i) as f32;
        let mut v = w * (1.0 + count.ln());
        if let Some(idf) = idf {
            v *= idf[r as usize];
        }
        feats[n] = (r, v);
        n += 1;
        i = j;
    }
    feats.truncate(n);
    let norm: f32 = feats.iter().map(|&(_, v)| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        let inv = 1.0 / norm;
        feats.iter_mut().for_each(|f| f.1 *= inv);
    }
    feats
}

/// The linear head's features of one row, from its tokens as (raw id, row, weight):
/// the text tokens (raw id < `bucket`) through [`linear_features`] (norm 1); the dense
/// tokens (raw id >= `bucket`: PQ codes, or a dense vector's components given as
/// values) L2-normalised on their own and scaled by `alpha`, so that `alpha` is the
/// norm of the dense part relative to the text part (one vector [text ; alpha · dense],
/// as one logistic regression over [TF-IDF ; scaled image] reads it).
/// Returns the number of text features (they come first in `out`).
pub fn linear_row(
    items: impl Iterator<Item = (u32, u32, f32)>,
    bucket: u64,
    alpha: f32,
    idf: Option<&[f32]>,
    out: &mut Vec<(u32, f32)>,
) -> usize {
    out.clear();
    let mut dense: Vec<(u32, f32)> = Vec::new();
    for (raw, r, w) in items {
        if (raw as u64) < bucket {
            out.push((r, w));
        } else {
            dense.push((r, w));
        }
    }
    let n = linear_features(out, idf).len();
    out.truncate(n);
    let norm: f32 = dense.iter().map(|&(_, v)| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        let s = alpha / norm;
        out.extend(dense.into_iter().map(|(r, v)| (r, v * s)));
    }
    n
}

/// The `k` largest of `probs` that are >= `threshold`, largest first (ties: lower index
/// first), in O(labels · log k) time and O(k) memory.
pub fn top_k(probs: &[f32], k: usize, threshold: f32) -> Ranked {
    let mut best = TopK::new(k);
    for (i, &p) in probs.iter().enumerate() {
        if p >= threshold && best.admits(p) {
            best.push(i as u32, p);
        }
    }
    best.into_sorted()
}

pub use kernels::dot;

pub fn softmax_in_place(v: &mut [f32]) {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut z = 0.0;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        z += *x;
    }
    v.iter_mut().for_each(|x| *x /= z);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_and_thresholds() {
        let p = [0.1, 0.5, 0.2, 0.2];
        assert_eq!(top_k(&p, 2, 0.0), vec![(1, 0.5), (2, 0.2)]);
        assert_eq!(top_k(&p, 10, 0.3), vec![(1, 0.5)]);
        assert!(top_k(&p, 3, 0.9).is_empty());
    }

    #[test]
    fn tree_paths_cover_labels() {
        let t = Tree::build(&[10, 5, 3, 1]);
        assert_eq!(t.paths.len(), 4);
        // The most frequent label has the shortest path.
        assert!(t.paths[0].len() <= t.paths[3].len());
        for p in &t.paths {
            assert!(p.iter().all(|&r| (r as usize) < 3));
        }
    }

    #[test]
    fn hs_probabilities_sum_to_one() {
        let counts = [7u64, 3, 2, 2, 1];
        let dim = 3;
        let mut m = Model {
            cfg: ModelConfig {
                dim,
                loss: LossKind::Hs,
                ..Default::default()
            },
            labels: (0..5).map(|i| i.to_string()).collect(),
            label_counts: counts.to_vec(),
            index: TokenIndex::default(),
            input: vec![],
            output: (0..4 * dim).map(|i| (i as f32 * 0.37).sin()).collect(),
            tree: Some(Tree::build(&counts)),
            dense: vec![],
            idf: vec![],
            history: vec![],
            vocab: None,
            compressed: None,
        };
        m.cfg.tokenizer = TokenizerConfig::default();
        let mut p = Vec::new();
        m.probs(&[0.3, -0.2, 0.9], &mut p);
        let s: f32 = p.iter().sum();
        assert!((s - 1.0).abs() < 1e-5, "{s}");
    }

    /// An hs model over `counts` with pseudo-random output rows.
    fn hs_model(counts: &[u64], dim: usize, seed: u64) -> Model {
        let mut x = seed | 1;
        let mut r = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        };
        Model {
            cfg: ModelConfig {
                dim,
                loss: LossKind::Hs,
                ..Default::default()
            },
            labels: (0..counts.len()).map(|i| i.to_string()).collect(),
            label_counts: counts.to_vec(),
            index: TokenIndex::default(),
            input: vec![],
            output: (0..(counts.len() - 1) * dim).map(|_| r()).collect(),
            tree: Some(Tree::build(counts)),
            dense: vec![],
            idf: vec![],
            history: vec![],
            vocab: None,
            compressed: None,
        }
    }

    #[test]
    fn hs_tree_search_equals_scoring_every_label() {
        for (seed, n) in [(1u64, 2usize), (2, 3), (3, 17), (4, 300), (5, 1000)] {
            // Zipf-like and flat counts: deep and balanced trees.
            for zipf in [true, false] {
                let counts: Vec<u64> = (0..n)
                    .map(|i| if zipf { 10_000 / (i as u64 + 1) + 1 } else { 5 })
                    .collect();
                let mut m = hs_model(&counts, 8, seed);
                for t in [1.0f32, 0.5, 2.0] {
                    m.cfg.temperature = t;
                    for h in 0..5u64 {
                        let hidden: Vec<f32> =
                            (0..8).map(|j| ((h * 8 + j) as f32 * 0.71).cos()).collect();
                        let mut p = Vec::new();
                        m.probs(&hidden, &mut p);
                        let z: f32 = p.iter().sum();
                        assert!((z - 1.0).abs() < 1e-4, "n={n} t={t}: sum {z}");
                        for (k, thr) in [(1, 0.0), (3, 0.0), (n, 0.0), (n + 5, 0.0), (5, 0.01)] {
                            let want = top_k(&p, k, thr);
                            let got = m.predict_hidden(&hidden, k, thr, &mut Vec::new());
                            assert_eq!(got.len(), want.len(), "n={n} k={k} thr={thr}");
                            for (g, w) in got.iter().zip(&want) {
                                assert!((g.1 - w.1).abs() < 1e-5, "{g:?} vs {w:?}");
                                if g.0 != w.0 {
                                    // Only a near-tie may swap two labels.
                                    assert!((g.1 - w.1).abs() < 1e-6, "{g:?} vs {w:?}");
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn top_k_matches_a_full_sort() {
        let p: Vec<f32> = (0..200).map(|i| ((i * 37 % 101) as f32) / 101.0).collect();
        for k in [0, 1, 2, 10, 200, 500] {
            let mut want: Vec<(u32, f32)> =
                p.iter().enumerate().map(|(i, &v)| (i as u32, v)).collect();
            want.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            want.truncate(k);
            assert_eq!(top_k(&p, k, 0.0), want);
        }
    }

    #[test]
    fn block_ranking_equals_ranking_row_by_row() {
        for loss in [LossKind::Softmax, LossKind::Ns, LossKind::Ova] {
            let (dim, nl) = (7, 600); // more than two label slices
            let mut m = hs_model(&vec![3; nl + 1], dim, 9);
            m.cfg.loss = loss;
            m.labels.truncate(nl);
            m.label_counts.truncate(nl);
            m.tree = None;
            for t in [1.0f32, 0.7] {
                m.cfg.temperature = t;
                for n in [1usize, 5, BLOCK] {
                    let hidden: Vec<f32> = (0..n * dim).map(|i| (i as f32 * 0.53).sin()).collect();
                    for (k, thr) in [(1, 0.0), (4, 0.0), (nl, 0.0), (10, 0.002)] {
                        let got = m.predict_block(&hidden, n, k, thr, &mut RankScratch::default());
                        assert_eq!(got.len(), n);
                        for (j, g) in got.iter().enumerate() {
                            let want = m.predict_hidden(
                                &hidden[j * dim..(j + 1) * dim],
                                k,
                                thr,
                                &mut Vec::new(),
                            );
                            assert_eq!(g.len(), want.len(), "{loss:?} k={k} thr={thr}");
                            for (a, b) in g.iter().zip(&want) {
                                assert!((a.1 - b.1).abs() < 1e-5, "{a:?} vs {b:?}");
                                assert!(a.0 == b.0 || (a.1 - b.1).abs() < 1e-6);
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn token_index_table_and_map_agree() {
        let ids: Vec<u32> = (0..5000u32).map(|i| (i * 7919) % 100_003).collect();
        let mut table = TokenIndex::for_ids(100_003, 1000);
        assert!(matches!(table.lookup, Lookup::Table(_)));
        let mut map = TokenIndex::for_ids(u32::MAX - 1, 10);
        assert!(matches!(map.lookup, Lookup::Map(_)));
        for &id in &ids {
            assert_eq!(table.get_or_insert(id), map.get_or_insert(id));
        }
        assert_eq!(table.ids, map.ids);
        for id in [0u32, 5, 7919, 99_999, 100_002, 100_003, 4_000_000] {
            assert_eq!(table.get(id), map.get(id), "{id}");
        }
        // An id past the table moves it to a map, keeping every row.
        let r = table.get_or_insert(7_000_000);
        assert_eq!(r as usize, table.len() - 1);
        assert!(matches!(table.lookup, Lookup::Map(_)));
        assert_eq!(table.get(ids[3]), map.get(ids[3]));
        assert!(TokenIndex::from_ids(vec![3, 9, 3]).is_err());
        let loaded = TokenIndex::from_ids(map.ids.clone()).unwrap();
        assert_eq!(loaded.get(ids[10]), map.get(ids[10]));
    }
}

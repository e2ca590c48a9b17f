//! The Hogwild SGD trainer (fastText's `FastText::trainThread` for supervised models).
pub(crate) mod clock;
pub mod hogwild;
mod packed;
pub mod select;

use crate::error::{MmqError, Result};
use crate::model::kernels::PREFETCH_AHEAD;
use crate::model::loss::{negatives_table, safe_ln, sigmoid, LossKind, Tree};
use crate::model::{linear_row, softmax_in_place, Head, L2Mode, Model, ModelConfig, TokenIndex};
use clock::{run_epochs, Clock, Ticker};
use hogwild::HogwildMatrix;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use select::Selector;
pub use select::TrainOptions;

/// Training rows in CSR form: the tokens of row `i` are `tokens[offsets[i]..offsets[i+1]]`
/// (raw ids: hash buckets, plus any extra ids such as visual tokens), with optional
/// per-token weights; its labels are `labels[label_offsets[i]..label_offsets[i+1]]`.
pub struct Dataset<'a> {
    pub offsets: &'a [usize],
    pub tokens: &'a [u32],
    pub weights: Option<&'a [f32]>,
    pub label_offsets: &'a [usize],
    pub labels: &'a [u32],
}

impl Dataset<'_> {
    pub fn n_rows(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn validate(&self, n_labels: usize) -> Result<()> {
        let bad = |m: String| Err(MmqError::InvalidInput(m));
        if self.offsets.len() != self.label_offsets.len() {
            return bad(format!(
                "{} rows of tokens but {} rows of labels",
                self.n_rows(),
                self.label_offsets.len().saturating_sub(1)
            ));
        }
        if self.n_rows() == 0 {
            return bad("no training rows (empty input)".into());
        }
        if self.offsets.last() != Some(&self.tokens.len())
            || self.label_offsets.last() != Some(&self.labels.len())
        {
            return bad("offsets do not match the token or label arrays".into());
        }
        if let Some(w) = self.weights {
            if w.len() != self.tokens.len() {
                return bad(format!(
                    "{} weights for {} tokens",
                    w.len(),
                    self.tokens.len()
                ));
            }
            if let Some(i) = w.iter().position(|x| !x.is_finite() || *x < 0.0) {
                return bad(format!(
                    "token weight {} at position {i} is not a finite number >= 0",
                    w[i]
                ));
            }
        }
        check_labels(self.label_offsets, self.labels, n_labels)?;
        Ok(())
    }

    /// [`Self::validate`] for rows whose token weights are feature values (the linear
    /// head): any finite weight, negative ones included.
    pub fn validate_values(&self, n_labels: usize) -> Result<()> {
        if let Some(w) = self.weights {
            if w.len() != self.tokens.len() {
                return Err(MmqError::InvalidInput(format!(
                    "{} weights for {} tokens",
                    w.len(),
                    self.tokens.len()
                )));
            }
            if let Some(i) = w.iter().position(|x| !x.is_finite()) {
                return Err(MmqError::InvalidInput(format!(
                    "token weight {} at position {i} is not a finite number",
                    w[i]
                )));
            }
        }
        Dataset {
            weights: None,
            ..*self
        }
        .validate(n_labels)
    }
}

/// Labels in CSR form (`labels[offsets[i]..offsets[i+1]]` for row i, offsets matching
/// the array): every index below `n_labels`, every row with at least one label.
pub(crate) fn check_labels(offsets: &[usize], labels: &[u32], n_labels: usize) -> Result<()> {
    let bad = |m: String| Err(MmqError::InvalidInput(m));
    if let Some(&l) = labels.iter().find(|&&l| l as usize >= n_labels) {
        return bad(format!(
            "label index {l} out of range for {n_labels} labels"
        ));
    }
    if let Some(i) = offsets.windows(2).position(|w| w[0] == w[1]) {
        return bad(format!("row {i} has no label"));
    }
    Ok(())
}

/// Training rows per label; an error unless at least 2 labels occur (`names` name the
/// one that does).
pub(crate) fn label_counts(labels: &[u32], names: &[String]) -> Result<Vec<u64>> {
    let mut counts = vec![0u64; names.len()];
    for &l in labels {
        counts[l as usize] += 1;
    }
    let present = counts.iter().filter(|&&c| c > 0).count();
    if present < 2 {
        return Err(MmqError::InvalidInput(format!(
            "training needs at least 2 distinct labels, found {present}{}",
            names
                .first()
                .map(|l| format!(" ('{l}')"))
                .unwrap_or_default()
        )));
    }
    Ok(counts)
}

/// What the trainer reports while it runs.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    /// Fraction of the work done, in [0, 1].
    pub progress: f32,
    pub epoch: usize,
    pub lr: f32,
    /// Average loss of the examples seen by the reporting thread.
    pub loss: f32,
    pub tokens_per_sec_per_thread: f64,
}

/// Train a classifier. `callback` is called from one training thread about every 100 ms
/// and once at the end; training stops with [`MmqError::Interrupted`] when it returns false.
pub fn train(
    cfg: ModelConfig,
    labels: Vec<String>,
    data: &Dataset,
    callback: &(dyn Fn(&Progress) -> bool + Sync),
) -> Result<Model> {
    train_with(cfg, labels, data, &TrainOptions::default(), callback)
}

/// [`train`] with a validation split, early stopping and calibration ([`TrainOptions`]).
pub fn train_with(
    cfg: ModelConfig,
    labels: Vec<String>,
    data: &Dataset,
    opts: &TrainOptions,
    callback: &(dyn Fn(&Progress) -> bool + Sync),
) -> Result<Model> {
    train_impl(cfg, labels, data, None, opts, callback)
}

/// [`train_with`], given the rows' token ids by value (`data.tokens` is not read): with
/// the bottleneck head they become row numbers in place, so training holds one array of
/// 4 bytes per token instead of two (the ids and their compacted rows). The linear head,
/// modality dropout and frozen training still read the ids, and copy as `train_with` does.
pub fn train_owned(
    cfg: ModelConfig,
    labels: Vec<String>,
    data: &Dataset,
    tokens: Vec<u32>,
    opts: &TrainOptions,
    callback: &(dyn Fn(&Progress) -> bool + Sync),
) -> Result<Model> {
    train_impl(cfg, labels, data, Some(tokens), opts, callback)
}

fn train_impl(
    cfg: ModelConfig,
    labels: Vec<String>,
    data0: &Dataset,
    owned: Option<Vec<u32>>,
    opts: &TrainOptions,
    callback: &(dyn Fn(&Progress) -> bool + Sync),
) -> Result<Model> {
    let mut owned = owned;
    let view;
    let data = match &owned {
        Some(tokens) => {
            view = Dataset { tokens, ..*data0 };
            &view
        }
        None => data0,
    };
    cfg.validate()?;
    let nl = labels.len();
    let linear = cfg.head == Head::Linear;
    if linear {
        data.validate_values(nl)?;
    } else {
        data.validate(nl)?;
    }
    if let Some(v) = opts.valid {
        // Labels never seen in training (index >= nl) are allowed there: they score as errors.
        v.validate_values(usize::MAX).map_err(|e| match e {
            MmqError::InvalidInput(m) => MmqError::InvalidInput(format!("validation rows: {m}")),
            e => e,
        })?;
    }
    opts.check()?;
    if let Some(w) = opts.class_weights {
        if w.len() != nl {
            return Err(MmqError::InvalidParameter(format!(
                "class weights: {} values for {nl} labels",
                w.len()
            )));
        }
    }
    if let Some(init) = opts.init {
        check_init(&cfg, &labels, init)?;
    }
    // Frozen: the rows' tokens that the starting model has no row for are dropped.
    let kept;
    let data = match opts.init {
        Some(init) if opts.frozen => {
            kept = known_tokens(data, &init.index);
            &Dataset {
                offsets: &kept.0,
                tokens: &kept.1,
                weights: data.weights.map(|_| &kept.2[..]),
                ..*data
            }
        }
        _ => data,
    };
    let counts = match opts.init {
        None => label_counts(data.labels, &labels)?,
        Some(init) => {
            let mut c = vec![0u64; labels.len()];
            for &l in data.labels {
                c[l as usize] += 1;
            }
            for (c, i) in c.iter_mut().zip(&init.label_counts) {
                *c += i;
            }
            c
        }
    };

    // Compact the token id space to the ids seen in training (after the starting
    // model's, which keep their rows).
    let max_id = data.tokens.par_iter().copied().max().unwrap_or(0);
    let mut index = match opts.init {
        None => TokenIndex::for_ids(max_id, data.tokens.len()),
        Some(init) => {
            let init_max = init.index.ids.iter().copied().max().unwrap_or(0);
            let mut index =
                TokenIndex::for_ids(max_id.max(init_max), data.tokens.len() + init.index.len());
            for &id in &init.index.ids {
                index.get_or_insert(id);
            }
            index
        }
    };
    let n_tokens = data.tokens.len();
    let in_place = owned.is_some()
        && !linear
        && cfg.modality_dropout <= 0.0
        && !(opts.init.is_some() && opts.frozen);
    let rows: Vec<u32>;
    let mut packed = false;
    let mut released = None;
    let bare;
    let data: &Dataset = if in_place {
        // Past this point only the linear head and modality dropout read the ids.
        let mut tokens = owned.take().unwrap_or_default();
        for t in tokens.iter_mut() {
            *t = index.get_or_insert(*t);
        }
        packed = index.len() <= packed::LIMIT;
        rows = if packed { packed::pack(tokens) } else { tokens };
        // Nothing looks an id up until training ends (validation scoring and pretrained
        // vectors do): the lookup is freed before the matrix is allocated.
        if opts.valid.is_none() && opts.pretrained.is_none() {
            released = Some(index.release_lookup());
        }
        bare = Dataset {
            tokens: &[],
            ..*data0
        };
        &bare
    } else {
        rows = data
            .tokens
            .iter()
            .map(|&t| index.get_or_insert(t))
            .collect();
        data
    };
    let dim = cfg.dim;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed);
    let (width, n_out) = match (cfg.head, cfg.loss) {
        (Head::Linear, _) => (nl, 1),
        (_, LossKind::Hs) => (dim, nl - 1),
        _ => (dim, nl),
    };
    check_memory(
        weights_bytes(index.len(), n_out, width, linear, opts.valid.is_some()),
        available_memory(),
        &format!(
            "{} token rows and {n_out} output rows of width {width}",
            index.len()
        ),
    )?;
    let mut input: Vec<f32> = if linear {
        vec![0.0; index.len() * width]
    } else {
        uniform_init(index.len() * dim, 1.0 / dim as f32, cfg.seed)
    };
    if let Some((ids, rows)) = opts.pretrained {
        if linear {
            return Err(MmqError::InvalidParameter(
                "pretrained vectors need the bottleneck head (the linear head has no word vectors)"
                    .into(),
            ));
        }
        if rows.len() != ids.len() * dim {
            return Err(MmqError::InvalidParameter(format!(
                "pretrained vectors have {} values per word; the model's dim is {dim}",
                rows.len() / ids.len()
            )));
        }
        for (&id, row) in ids.iter().zip(rows.chunks_exact(dim)) {
            if let Some(r) = index.get(id) {
                input[r as usize * dim..(r as usize + 1) * dim].copy_from_slice(row);
            }
        }
    }
    let mut output0 = vec![0.0; n_out * width];
    let tree = match opts.init {
        // The tree of hs is the starting model's (check_init refuses new labels there):
        // one built from the new counts would give its output rows other meanings.
        Some(init) if cfg.loss == LossKind::Hs => init.tree.clone(),
        _ => (cfg.loss == LossKind::Hs).then(|| Tree::build(&counts)),
    };
    if let Some(init) = opts.init {
        // The starting weights, in the wider rows of the linear head when labels were
        // added (the new labels' weights start at 0, as the linear head's all do).
        let w0 = init.width();
        for (dst, src) in input
            .chunks_exact_mut(width)
            .zip(init.input.chunks_exact(w0))
        {
            dst[..w0].copy_from_slice(src);
        }
        for (dst, src) in output0
            .chunks_exact_mut(width)
            .zip(init.output.chunks_exact(w0))
        {
            dst[..w0].copy_from_slice(src);
        }
    }
    let negatives = if cfg.loss == LossKind::Ns {
        negatives_table(&counts, &mut rng)
    } else {
        Vec::new()
    };
    let idf = if linear && cfg.idf {
        idf_weights(data, &rows, index.len())
    } else {
        Vec::new()
    };
    let feats = linear.then(|| {
        let idf = (!idf.is_empty()).then_some(&idf[..]);
        LinearRows::build(data, &rows, cfg.tokenizer.bucket as u64, cfg.alpha, idf)
    });

    let l2_rows = if linear {
        l2_rows(&cfg, data, &rows, index.len())
    } else {
        Vec::new()
    };
    let input = HogwildMatrix::from_vec(input, width);
    let output = HogwildMatrix::from_vec(output0, width);
    let accum = linear.then(|| {
        (
            HogwildMatrix::from_vec(vec![0.0; index.len() * width], width),
            HogwildMatrix::from_vec(vec![0.0; width], width),
        )
    });
    let threads = cfg.threads;
    let clock = Clock::new(n_tokens as u64 * cfg.epoch as u64, threads, callback);
    let shared = Shared {
        cfg: &cfg,
        input: &input,
        output: &output,
        accum: accum.as_ref().map(|(a, b)| (a, b)),
        feats: feats.as_ref(),
        l2_rows: &l2_rows,
        tree: tree.as_ref(),
        negatives: &negatives,
        rows: &rows,
        packed,
        data,
        n_labels: nl,
        clock: &clock,
        class_weights: opts.class_weights,
    };
    let mut order: Vec<u32> = (0..data.n_rows() as u32).collect();
    let work = |epoch: usize, t: usize, seed: u64, part: &[u32]| {
        Worker::new(&shared, seed).run(part, epoch, t == 0)
    };
    let pool = clock::pool(threads)?;
    let mut model = Model {
        cfg: cfg.clone(),
        labels,
        label_counts: counts,
        index,
        input: Vec::new(),
        output: Vec::new(),
        tree: tree.clone(),
        dense: Vec::new(),
        idf,
        history: Vec::new(),
        vocab: opts.init.and_then(|m| m.vocab.clone()),
        compressed: None,
    };
    // One epoch at a time (the same shuffles and learning rates as one call over all
    // epochs); with a validation split each epoch is scored and the best one kept.
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
            &mut |_| Ok(()),
        )?;
        let train_loss = clock.take_epoch_loss();
        let Some(valid) = opts.valid else { continue };
        model.input = input.snapshot();
        model.output = output.snapshot();
        check_finite(&model)?;
        let scored = pool.install(|| score(&model, valid, 1.0));
        if sel.record(epoch, train_loss, scored, &clock, || {
            (model.input.clone(), model.output.clone())
        }) {
            break;
        }
    }
    if let Some(table) = released {
        // The token rows are done with: freed first, so that the rebuilt lookup does not
        // add to the peak.
        drop(rows);
        model.index.restore_lookup(table);
    }
    let (history, best) = sel.finish();
    model.history = history;
    match best {
        Some((i, o)) => {
            model.input = i;
            model.output = o;
        }
        None => {
            model.input = input.into_vec();
            model.output = output.into_vec();
        }
    }
    if let (Some(valid), true) = (opts.valid, opts.calibrate) {
        model.cfg.temperature = pool.install(|| fit_temperature(&model, valid));
    }
    clock.finish(cfg.epoch)?;
    check_finite(&model)?;
    Ok(model)
}

/// A model that `cfg` and `labels` can continue training from: the same shape of
/// weights and the same token ids, its labels first.
fn check_init(cfg: &ModelConfig, labels: &[String], init: &Model) -> Result<()> {
    let bad = |m: String| Err(MmqError::InvalidParameter(m));
    let c = &init.cfg;
    if c.dim != cfg.dim || c.loss != cfg.loss || c.head != cfg.head {
        return bad(format!(
            "the model to continue from has dim {}, loss {:?}, head {:?}; the new training \
             has dim {}, loss {:?}, head {:?}",
            c.dim, c.loss, c.head, cfg.dim, cfg.loss, cfg.head
        ));
    }
    if !c.tokenizer.same_ids(&cfg.tokenizer) || c.alpha != cfg.alpha {
        return bad(
            "the model to continue from has other tokenizer options or alpha: its token ids \
             would mean other things"
                .into(),
        );
    }
    if cfg.idf {
        return bad("idf weights cannot be continued (they count the first data's rows)".into());
    }
    if init.index.is_empty() {
        return bad("the model to continue from has no token rows".into());
    }
    let n0 = init.labels.len();
    if labels.len() < n0 || labels[..n0] != init.labels[..] {
        return bad("the labels must start with the starting model's labels, in its order".into());
    }
    if cfg.loss == LossKind::Hs && labels.len() > n0 {
        return bad(format!(
            "loss='hs' cannot add labels to a trained model (its tree is fixed); new label(s): {}",
            labels[n0..].join(", ")
        ));
    }
    Ok(())
}

/// The rows of `data` with only the tokens `index` has a row for (and their weights).
fn known_tokens(data: &Dataset, index: &TokenIndex) -> (Vec<usize>, Vec<u32>, Vec<f32>) {
    let mut offsets = Vec::with_capacity(data.offsets.len());
    let (mut tokens, mut weights) = (Vec::new(), Vec::new());
    offsets.push(0);
    for w in data.offsets.windows(2) {
        for i in w[0]..w[1] {
            if index.get(data.tokens[i]).is_some() {
                tokens.push(data.tokens[i]);
                if let Some(ws) = data.weights {
                    weights.push(ws[i]);
                }
            }
        }
        offsets.push(tokens.len());
    }
    (offsets, tokens, weights)
}

/// Training that produced non-finite weights (a learning rate far too high) is an error.
/// Bytes of the weights a training run allocates: the input and output matrices (twice
/// for the linear head: AdaGrad's sums), and once more with a validation split (the best
/// epoch's copy).
fn weights_bytes(rows: usize, n_out: usize, width: usize, linear: bool, valid: bool) -> u128 {
    let w = (rows as u128 + n_out as u128) * width as u128 * 4;
    w * (1 + linear as u128 + valid as u128)
}

/// The memory the system can still give (Linux's `MemAvailable`), if known.
fn available_memory() -> Option<u128> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// An error before anything is allocated when the weights cannot fit in memory.
fn check_memory(need: u128, available: Option<u128>, what: &str) -> Result<()> {
    let gb = |b: u128| b as f64 / 1e9;
    match available {
        Some(avail) if need > avail => Err(MmqError::InvalidParameter(format!(
            "training needs about {:.1} GB for its weights ({what}, 4 bytes each) but only \
             {:.1} GB of memory is available: lower dim, bucket or word_ngrams, or train on \
             fewer labels",
            gb(need),
            gb(avail)
        ))),
        _ => Ok(()),
    }
}

/// `len` weights drawn uniformly from (-bound, bound), in parallel: chunk c of
/// [`INIT_CHUNK`] weights has its own generator seeded from (seed, c), so the weights do
/// not depend on the number of threads.
fn uniform_init(len: usize, bound: f32, seed: u64) -> Vec<f32> {
    let mut v = vec![0.0f32; len];
    v.par_chunks_mut(INIT_CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(
                seed ^ (c as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            chunk
                .iter_mut()
                .for_each(|x| *x = rng.random_range(-bound..bound));
        });
    v
}

const INIT_CHUNK: usize = 1 << 16;

fn check_finite(m: &Model) -> Result<()> {
    if m.input.iter().chain(&m.output).all(|x| x.is_finite()) {
        Ok(())
    } else {
        Err(MmqError::InvalidParameter(format!(
            "training diverged (weights became infinite or NaN): lower lr (got {})",
            m.cfg.lr
        )))
    }
}

/// Mean loss (−ln p of the row's labels) and accuracy (top label among the row's) of
/// `m` on the rows of `data`, at temperature `t`. Rows whose tokens are all unknown
/// still count (they predict from the biases or a zero vector).
pub fn score(m: &Model, data: &Dataset, t: f32) -> (f32, f32) {
    let width = m.width();
    select::score_rows(
        data.label_offsets,
        data.labels,
        || vec![0.0f32; width],
        |hidden, i, probs| {
            let (a, b) = (data.offsets[i], data.offsets[i + 1]);
            let w = data.weights.map(|w| &w[a..b]);
            m.hidden(&data.tokens[a..b], w, hidden);
            m.probs_at(hidden, t, probs);
        },
    )
}

/// Floats of hidden vectors [`fit_temperature`] keeps for the validation rows (64 MB);
/// past that it recomputes them for each temperature it tries.
const TEMPERATURE_CACHE: usize = 1 << 24;

/// The temperature minimising the mean loss on `data` (golden-section search over
/// ln t in [ln 0.05, ln 20]). The rows' hidden vectors (the sum of their token rows: most
/// of a prediction's work for long rows) do not depend on the temperature, so they are
/// computed once for the ~44 temperatures tried (it took 1.6 s of a 2.2 s one-epoch fit
/// on imdb's 5,000 validation reviews before).
pub fn fit_temperature(m: &Model, data: &Dataset) -> f32 {
    let (width, n) = (m.width(), data.n_rows());
    if n.saturating_mul(width) > TEMPERATURE_CACHE {
        return select::fit_temperature_by(|t| score(m, data, t).0);
    }
    let mut hidden = vec![0.0f32; n * width];
    if width > 0 {
        hidden.par_chunks_mut(width).enumerate().for_each(|(i, h)| {
            let (a, b) = (data.offsets[i], data.offsets[i + 1]);
            let w = data.weights.map(|w| &w[a..b]);
            m.hidden(&data.tokens[a..b], w, h);
        });
    }
    select::fit_temperature_by(|t| {
        select::score_rows(
            data.label_offsets,
            data.labels,
            || (),
            |_, i, probs| m.probs_at(&hidden[i * width..(i + 1) * width], t, probs),
        )
        .0
    })
}

/// IDF weight of every token row: ln((1 + n) / (1 + df)) + 1 over the training rows
/// (scikit-learn's smoothed IDF), df counting each row once.
fn idf_weights(data: &Dataset, rows: &[u32], n_rows_index: usize) -> Vec<f32> {
    let n = data.n_rows() as f64;
    doc_freq(data, rows, n_rows_index)
        .iter()
        .map(|&d| (((1.0 + n) / (1.0 + d as f64)).ln() + 1.0) as f32)
        .collect()
}

/// The L2 strength of each token row's weights: `l2`, or with [`L2Mode::Full`]
/// `l2 · n / df` for a token in `df` of the `n` training rows (docs/better_answers.md:
/// +0.2 to +1.5 points of test accuracy with 20 epochs on fashion_products and
/// mvsa_tweets at the best l2 on valid; at 5 epochs the lazy penalty did better).
fn l2_rows(cfg: &ModelConfig, data: &Dataset, rows: &[u32], n_rows_index: usize) -> Vec<f32> {
    let l2 = cfg.l2;
    if l2 == 0.0 || cfg.l2_mode == L2Mode::Lazy {
        return vec![l2; n_rows_index];
    }
    let n = data.n_rows() as f32;
    doc_freq(data, rows, n_rows_index)
        .iter()
        .map(|&d| l2 * n / d.max(1) as f32)
        .collect()
}

/// Training rows each token row occurs in (once per row).
fn doc_freq(data: &Dataset, rows: &[u32], n_rows_index: usize) -> Vec<u32> {
    let mut df = vec![0u32; n_rows_index];
    let mut last = vec![u32::MAX; n_rows_index];
    for i in 0..data.n_rows() {
        for &r in &rows[data.offsets[i]..data.offsets[i + 1]] {
            if last[r as usize] != i as u32 {
                last[r as usize] = i as u32;
                df[r as usize] += 1;
            }
        }
    }
    df
}

/// The linear head's features of every training row ([`linear_features`]), computed once.
struct LinearRows {
    offsets: Vec<usize>,
    feats: Vec<(u32, f32)>,
    /// Number of text features at the start of each row (the dense ones follow).
    text_len: Vec<u32>,
}

impl LinearRows {
    fn build(data: &Dataset, rows: &[u32], bucket: u64, alpha: f32, idf: Option<&[f32]>) -> Self {
        let mut offsets = Vec::with_capacity(data.n_rows() + 1);
        offsets.push(0);
        let mut feats = Vec::with_capacity(rows.len());
        let mut buf = Vec::new();
        let mut text_len = Vec::with_capacity(data.n_rows());
        for i in 0..data.n_rows() {
            let (a, b) = (data.offsets[i], data.offsets[i + 1]);
            let items =
                (a..b).map(|j| (data.tokens[j], rows[j], data.weights.map_or(1.0, |w| w[j])));
            text_len.push(linear_row(items, bucket, alpha, idf, &mut buf) as u32);
            feats.extend_from_slice(&buf);
            offsets.push(feats.len());
        }
        Self {
            offsets,
            feats,
            text_len,
        }
    }
}

struct Shared<'a> {
    cfg: &'a ModelConfig,
    input: &'a HogwildMatrix,
    output: &'a HogwildMatrix,
    /// Linear head: AdaGrad's squared-gradient sums of `input` and `output`.
    accum: Option<(&'a HogwildMatrix, &'a HogwildMatrix)>,
    feats: Option<&'a LinearRows>,
    /// Linear head: each token row's L2 strength (see [`l2_rows`]).
    l2_rows: &'a [f32],
    tree: Option<&'a Tree>,
    negatives: &'a [u32],
    rows: &'a [u32],
    /// `rows` holds 3 bytes per token ([`packed`]).
    packed: bool,
    data: &'a Dataset<'a>,
    n_labels: usize,
    clock: &'a Clock<'a>,
    /// Per label: the weight of a row's loss ([`TrainOptions::class_weights`]).
    class_weights: Option<&'a [f32]>,
}

impl Shared<'_> {
    /// The loss weight of a row trained toward `target` (softmax, ns, hs).
    fn weight_of(&self, target: usize) -> f32 {
        self.class_weights.map_or(1.0, |w| w[target])
    }

    /// The loss weight of a row with these labels (ova): their mean weight.
    fn row_weight(&self, labels: &[u32]) -> f32 {
        match self.class_weights {
            Some(w) if !labels.is_empty() => {
                labels.iter().map(|&l| w[l as usize]).sum::<f32>() / labels.len() as f32
            }
            _ => 1.0,
        }
    }
}

struct Worker<'a> {
    s: &'a Shared<'a>,
    rng: Xoshiro256PlusPlus,
    hidden: Vec<f32>,
    grad: Vec<f32>,
    scores: Vec<f32>,
    /// A row's tokens, unpacked.
    row: Vec<u32>,
}

impl<'a> Worker<'a> {
    fn new(s: &'a Shared<'a>, seed: u64) -> Self {
        let dim = s.cfg.dim;
        Self {
            s,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            hidden: vec![0.0; dim],
            grad: vec![0.0; dim],
            scores: vec![0.0; s.n_labels],
            row: Vec::new(),
        }
    }

    /// One AdaGrad step of the linear head on one row's features; returns its loss.
    fn update_linear(&mut self, feats: &[(u32, f32)], labels: &[u32], lr: f32) -> f32 {
        let s = self.s;
        let (acc_in, acc_out) = s.accum.expect("linear head has AdaGrad sums");
        let nl = s.n_labels;
        let scores = &mut self.scores;
        scores.iter_mut().for_each(|x| *x = 0.0);
        s.output.add_row_to(0, 1.0, scores);
        for &(r, v) in feats {
            s.input.add_row_to(r as usize, v, scores);
        }
        // g = d loss / d score, per label (0: not updated).
        let g = &mut self.grad;
        g.clear();
        g.resize(nl, 0.0);
        let (loss, cw) = match s.cfg.loss {
            LossKind::Softmax => {
                let target = if labels.len() == 1 {
                    labels[0]
                } else {
                    labels[self.rng.random_range(0..labels.len())]
                } as usize;
                softmax_in_place(scores);
                for l in 0..nl {
                    g[l] = scores[l] - (l == target) as u8 as f32;
                }
                (-safe_ln(scores[target]), s.weight_of(target))
            }
            LossKind::Ova => {
                let mut loss = 0.0;
                for l in 0..nl {
                    let p = sigmoid(scores[l]);
                    let y = labels.contains(&(l as u32));
                    g[l] = p - y as u8 as f32;
                    loss -= safe_ln(if y { p } else { 1.0 - p });
                }
                (loss, s.row_weight(labels))
            }
            LossKind::Ns => {
                let target = if labels.len() == 1 {
                    labels[0]
                } else {
                    labels[self.rng.random_range(0..labels.len())]
                } as usize;
                let p = sigmoid(scores[target]);
                g[target] = p - 1.0;
                let mut loss = -safe_ln(p);
                for _ in 0..s.cfg.neg {
                    let neg = loop {
                        let c = s.negatives[self.rng.random_range(0..s.negatives.len())] as usize;
                        if c != target {
                            break c;
                        }
                    };
                    let p = sigmoid(scores[neg]);
                    g[neg] = p;
                    loss -= safe_ln(1.0 - p);
                }
                (loss, s.weight_of(target))
            }
            LossKind::Hs => unreachable!("validated: the linear head has no hs"),
        };
        // A weighted row's loss: its gradient scaled (the L2 term, added per weight in
        // `adagrad_row`, is not).
        if cw != 1.0 {
            g.iter_mut().for_each(|x| *x *= cw);
        }
        for &(r, v) in feats {
            s.input
                .adagrad_row(acc_in, r as usize, g, v, s.l2_rows[r as usize], lr);
        }
        s.output.adagrad_row(acc_out, 0, g, 1.0, 0.0, lr);
        loss
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
            let weights = s.data.weights.map(|w| &w[a..b]);
            if a < b {
                let p = s.cfg.modality_dropout;
                let loss = match s.feats {
                    Some(f) => {
                        let feats = &f.feats[f.offsets[row]..f.offsets[row + 1]];
                        let (lo, hi) = self.keep(f.text_len[row] as usize, feats.len(), p);
                        self.update_linear(&feats[lo..hi], labels, lr)
                    }
                    None => {
                        let split = if p > 0.0 {
                            let bucket = s.cfg.tokenizer.bucket as u64;
                            s.data.tokens[a..b]
                                .iter()
                                .position(|&t| t as u64 >= bucket)
                                .unwrap_or(b - a)
                        } else {
                            b - a
                        };
                        let (lo, hi) = self.keep(split, b - a, p);
                        let w = weights.map(|w| &w[lo..hi]);
                        if s.packed {
                            let mut row = std::mem::take(&mut self.row);
                            row.clear();
                            row.extend((a + lo..a + hi).map(|j| packed::get(s.rows, j)));
                            let loss = self.update(&row, w, labels, lr);
                            self.row = row;
                            loss
                        } else {
                            self.update(&s.rows[a + lo..a + hi], w, labels, lr)
                        }
                    }
                };
                tick.loss(loss);
            }
            if !tick.tick(s.clock, i, (b - a) as u64, epoch, s.cfg.lr) {
                break;
            }
        }
        tick.flush(s.clock);
    }

    /// Modality dropout: the range of a row's tokens to train on, given that its first
    /// `split` of `len` tokens are text and the rest dense. With probability `p` the dense
    /// part is dropped, else with probability `p` the text part; only rows that have both.
    fn keep(&mut self, split: usize, len: usize, p: f32) -> (usize, usize) {
        if p <= 0.0 || split == 0 || split == len {
            return (0, len);
        }
        if self.rng.random::<f32>() < p {
            (0, split)
        } else if self.rng.random::<f32>() < p {
            (split, len)
        } else {
            (0, len)
        }
    }

    /// One SGD step on one row; returns its loss.
    fn update(&mut self, rows: &[u32], weights: Option<&[f32]>, labels: &[u32], lr: f32) -> f32 {
        let s = self.s;
        self.hidden.fill(0.0);
        let mut total = 0.0f32;
        for &r in rows.iter().take(PREFETCH_AHEAD) {
            s.input.prefetch_row(r as usize);
        }
        for (i, &r) in rows.iter().enumerate() {
            if let Some(&ahead) = rows.get(i + PREFETCH_AHEAD) {
                s.input.prefetch_row(ahead as usize);
            }
            let w = weights.map_or(1.0, |w| w[i]);
            s.input.add_row_to(r as usize, w, &mut self.hidden);
            total += w;
        }
        if total <= 0.0 {
            return 0.0;
        }
        let inv = 1.0 / total;
        self.hidden.iter_mut().for_each(|h| *h *= inv);
        self.grad.fill(0.0);
        let loss = match s.cfg.loss {
            LossKind::Ova => {
                let lr = lr * s.row_weight(labels);
                let mut loss = 0.0;
                for l in 0..s.n_labels {
                    let pos = labels.contains(&(l as u32));
                    loss += self.binary_logistic(l, pos, lr);
                }
                loss
            }
            kind => {
                let target = if labels.len() == 1 {
                    labels[0]
                } else {
                    labels[self.rng.random_range(0..labels.len())]
                } as usize;
                let lr = lr * s.weight_of(target);
                match kind {
                    LossKind::Softmax => self.softmax(target, lr),
                    LossKind::Ns => {
                        let mut loss = self.binary_logistic(target, true, lr);
                        for _ in 0..s.cfg.neg {
                            let neg = loop {
                                let c = s.negatives[self.rng.random_range(0..s.negatives.len())]
                                    as usize;
                                if c != target {
                                    break c;
                                }
                            };
                            loss += self.binary_logistic(neg, false, lr);
                        }
                        loss
                    }
                    LossKind::Hs => {
                        let tree = s.tree.expect("hs has a tree");
                        let mut loss = 0.0;
                        for (&node, &code) in tree.paths[target].iter().zip(&tree.codes[target]) {
                            loss += self.binary_logistic(node as usize, code, lr);
                        }
                        loss
                    }
                    LossKind::Ova => unreachable!(),
                }
            }
        };
        for (i, &r) in rows.iter().enumerate() {
            let w = weights.map_or(1.0, |w| w[i]);
            s.input.add_to_row(r as usize, w * inv, &self.grad);
        }
        loss
    }

    fn binary_logistic(&mut self, out_row: usize, label: bool, lr: f32) -> f32 {
        let out = self.s.output;
        let score = sigmoid(out.dot_row(out_row, &self.hidden));
        let alpha = lr * (label as u8 as f32 - score);
        out.add_row_to(out_row, alpha, &mut self.grad);
        out.add_to_row(out_row, alpha, &self.hidden);
        if label {
            -safe_ln(score)
        } else {
            -safe_ln(1.0 - score)
        }
    }

    fn softmax(&mut self, target: usize, lr: f32) -> f32 {
        let out = self.s.output;
        for (i, sc) in self.scores.iter_mut().enumerate() {
            *sc = out.dot_row(i, &self.hidden);
        }
        softmax_in_place(&mut self.scores);
        for i in 0..self.scores.len() {
            let alpha = lr * ((i == target) as u8 as f32 - self.scores[i]);
            out.add_row_to(i, alpha, &mut self.grad);
            out.add_to_row(i, alpha, &self.hidden);
        }
        -safe_ln(self.scores[target])
    }
}

#[cfg(test)]
mod linear_tests {
    use super::*;
    use crate::model::linear_features;

    /// Two labels, each with its own words; rows of 3 tokens.
    fn toy(n: usize, flip: usize) -> (Vec<usize>, Vec<u32>, Vec<usize>, Vec<u32>) {
        let (mut off, mut tok, mut loff, mut lab) = (vec![0], vec![], vec![0], vec![]);
        for i in 0..n {
            let y = (i % 2) as u32;
            tok.extend([10 + y, 20 + y, 30 + (i % 7) as u32]);
            off.push(tok.len());
            lab.push(if i < flip { 1 - y } else { y });
            loff.push(lab.len());
        }
        (off, tok, loff, lab)
    }

    #[test]
    fn full_l2_scales_each_token_by_rows_over_its_row_count() {
        let t = toy(14, 0);
        let data = rows(&t, &t.3);
        // Rows are the raw ids here (a token row per distinct id below 40).
        let ids: Vec<u32> = t.1.clone();
        let mut c = ModelConfig {
            head: Head::Linear,
            l2: 0.01,
            ..ModelConfig::default()
        };
        assert!(l2_rows(&c, &data, &ids, 40).iter().all(|&x| x == 0.01));
        c.l2_mode = L2Mode::Full;
        let l2 = l2_rows(&c, &data, &ids, 40);
        // 10 and 11: in 7 of 14 rows each; 30..36: in 2 rows each.
        assert!((l2[10] - 0.02).abs() < 1e-7 && (l2[11] - 0.02).abs() < 1e-7);
        assert!((l2[30] - 0.07).abs() < 1e-6, "{}", l2[30]);
        c.l2 = 0.0;
        assert!(l2_rows(&c, &data, &ids, 40).iter().all(|&x| x == 0.0));
    }

    /// The rows of [`toy`] as a [`Dataset`] (labels `lab`).
    fn rows<'a>(
        t: &'a (Vec<usize>, Vec<u32>, Vec<usize>, Vec<u32>),
        lab: &'a [u32],
    ) -> Dataset<'a> {
        Dataset {
            offsets: &t.0,
            tokens: &t.1,
            weights: None,
            label_offsets: &t.2,
            labels: lab,
        }
    }

    fn cfg(head: Head, epoch: usize) -> ModelConfig {
        ModelConfig {
            head,
            epoch,
            lr: 0.5,
            dim: 4,
            ..Default::default()
        }
    }

    #[test]
    fn weights_that_cannot_fit_are_refused_before_allocation() {
        let need = weights_bytes(1_000_000, 10_000, 50, false, false);
        assert_eq!(need, 1_010_000 * 50 * 4);
        assert_eq!(weights_bytes(10, 1, 3, true, true), 11 * 3 * 4 * 3);
        assert!(check_memory(need, Some(need), "x").is_ok());
        assert!(check_memory(need, None, "x").is_ok());
        let e = check_memory(need, Some(need / 2), "1000000 token rows").unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("0.2 GB") && m.contains("0.1 GB") && m.contains("token rows"),
            "{m}"
        );
        #[cfg(target_os = "linux")]
        assert!(available_memory().expect("Linux has /proc/meminfo") > 0);
    }

    #[test]
    fn linear_features_merge_duplicates_and_normalise() {
        let mut f = vec![(3, 1.0), (1, 1.0), (3, 1.0)];
        let out = linear_features(&mut f, None).to_vec();
        let v3 = 1.0 + 2f32.ln();
        let norm = (1.0 + v3 * v3).sqrt();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0, 1);
        assert!((out[0].1 - 1.0 / norm).abs() < 1e-6);
        assert!((out[1].1 - v3 / norm).abs() < 1e-6);
        let mut g = vec![(0, 2.0), (1, 1.0)];
        let out = linear_features(&mut g, Some(&[1.0, 2.0])).to_vec();
        assert!((out[0].1 - out[1].1).abs() < 1e-6, "{out:?}");
    }

    #[test]
    fn linear_head_learns_and_valid_keeps_the_best_epoch() {
        let t = toy(200, 0);
        let lab = &t.3;
        let data = rows(&t, lab);
        let names = vec!["a".to_string(), "b".to_string()];
        for head in [Head::Linear, Head::Bottleneck] {
            let opts = TrainOptions {
                valid: Some(&data),
                patience: None,
                calibrate: true,
                ..Default::default()
            };
            let m = train_with(cfg(head, 6), names.clone(), &data, &opts, &|_| true).unwrap();
            assert_eq!(m.history.len(), 6);
            let (loss, acc) = score(&m, &data, m.cfg.temperature);
            assert_eq!(acc, 1.0, "{head:?}");
            assert!(loss < 0.3, "{head:?} {loss}");
            let best = m.history.iter().rposition(|r| r.best).unwrap();
            assert_eq!(m.history[best].valid_accuracy, acc);
        }
    }

    #[test]
    fn patience_stops_and_unknown_valid_labels_are_misses() {
        let t = toy(100, 0);
        let lab = &t.3;
        let data = rows(&t, lab);
        let names = vec!["a".to_string(), "b".to_string()];
        // valid labels all wrong: its loss only grows, so epoch 0 stays the best
        let wrong: Vec<u32> = lab.iter().map(|&l| 1 - l).collect();
        let valid = rows(&t, &wrong);
        let opts = TrainOptions {
            valid: Some(&valid),
            patience: Some(2),
            calibrate: false,
            ..Default::default()
        };
        let m = train_with(cfg(Head::Linear, 50), names.clone(), &data, &opts, &|_| {
            true
        })
        .unwrap();
        assert_eq!(m.history.len(), 3, "{:?}", m.history);
        assert!(m.history[0].best && !m.history[1].best && !m.history[2].best);
        // a quarter of the valid rows with a label the model never saw: misses
        let unseen: Vec<u32> = lab
            .iter()
            .enumerate()
            .map(|(i, &l)| if i % 4 == 0 { 7 } else { l })
            .collect();
        let valid = rows(&t, &unseen);
        let opts = TrainOptions {
            valid: Some(&valid),
            ..opts
        };
        let m = train_with(cfg(Head::Linear, 5), names, &data, &opts, &|_| true).unwrap();
        assert!(m.history.iter().all(|r| r.valid_accuracy <= 0.75 + 1e-6));
        assert!(m.history.iter().any(|r| r.valid_accuracy > 0.7));
    }

    #[test]
    fn fitted_temperature_minimises_the_loss() {
        // a quarter of the labels flipped
        let t = toy(400, 100);
        let lab = &t.3;
        let data = rows(&t, lab);
        let names = vec!["a".to_string(), "b".to_string()];
        let m = train(cfg(Head::Bottleneck, 30), names, &data, &|_| true).unwrap();
        let t = fit_temperature(&m, &data);
        let at = |t: f32| score(&m, &data, t).0;
        assert!(at(t) <= at(1.0) + 1e-6);
        assert!(
            at(t) <= at(t * 1.2) + 1e-6 && at(t) <= at(t / 1.2) + 1e-6,
            "{t}"
        );
    }
}

#[cfg(test)]
mod warm_start_tests {
    use super::*;

    /// Rows of words 100 + label and 200 + label (the label's signal), plus a shared word.
    fn rows(labels: &[u32]) -> (Vec<usize>, Vec<u32>, Vec<usize>) {
        let (mut off, mut tok, mut loff) = (vec![0], vec![], vec![0]);
        for (i, &y) in labels.iter().enumerate() {
            tok.extend([100 + y, 200 + y, 7 + (i % 3) as u32]);
            off.push(tok.len());
            loff.push(i + 1);
        }
        (off, tok, loff)
    }

    fn data<'a>(r: &'a (Vec<usize>, Vec<u32>, Vec<usize>), labels: &'a [u32]) -> Dataset<'a> {
        Dataset {
            offsets: &r.0,
            tokens: &r.1,
            weights: None,
            label_offsets: &r.2,
            labels,
        }
    }

    fn accuracy(m: &Model, d: &Dataset) -> f32 {
        score(m, d, 1.0).1
    }

    #[test]
    fn owned_tokens_train_the_same_model_as_borrowed_ones() {
        let names = |n: usize| (0..n).map(|i| format!("l{i}")).collect::<Vec<_>>();
        let y: Vec<u32> = (0..200).map(|i| i % 3).collect();
        let r = rows(&y);
        let vy: Vec<u32> = (0..30).map(|i| (i + 1) % 3).collect();
        let vr = rows(&vy);
        let first = train(
            ModelConfig {
                dim: 4,
                epoch: 1,
                threads: 1,
                ..Default::default()
            },
            names(3),
            &data(&r, &y),
            &|_| true,
        )
        .unwrap();
        // In place (bottleneck, each loss, with and without a starting model) and the
        // copying fallbacks (linear head, modality dropout, frozen).
        for (head, loss, dropout, init, frozen) in [
            (Head::Bottleneck, LossKind::Softmax, 0.0, false, false),
            (Head::Bottleneck, LossKind::Hs, 0.0, false, false),
            (Head::Bottleneck, LossKind::Ns, 0.0, false, false),
            (Head::Bottleneck, LossKind::Softmax, 0.0, true, false),
            (Head::Bottleneck, LossKind::Ova, 0.0, false, false),
            (Head::Bottleneck, LossKind::Softmax, 0.3, false, false),
            (Head::Bottleneck, LossKind::Softmax, 0.0, true, true),
            (Head::Linear, LossKind::Softmax, 0.0, false, false),
        ] {
            for with_valid in [true, false] {
                let cfg = ModelConfig {
                    head,
                    loss,
                    dim: 4,
                    epoch: 3,
                    threads: 1,
                    modality_dropout: dropout,
                    ..Default::default()
                };
                let vd = data(&vr, &vy);
                let opts = TrainOptions {
                    valid: with_valid.then_some(&vd),
                    init: init.then_some(&first),
                    frozen,
                    ..Default::default()
                };
                let a = train_with(cfg.clone(), names(3), &data(&r, &y), &opts, &|_| true).unwrap();
                let bare = Dataset {
                    tokens: &[],
                    ..data(&r, &y)
                };
                let b = train_owned(cfg, names(3), &bare, r.1.clone(), &opts, &|_| true).unwrap();
                let what = format!("{head:?} {loss:?} dropout {dropout} init {init}");
                let what = format!("{what} frozen {frozen} valid {with_valid}");
                assert_eq!(a.index.ids, b.index.ids, "{what}");
                assert_eq!(a.input, b.input, "{what}");
                assert_eq!(a.output, b.output, "{what}");
                assert_eq!(a.history.len(), b.history.len(), "{what}");
                // The lookup freed while training is rebuilt: every id finds its row.
                for (r, &id) in b.index.ids.iter().enumerate() {
                    assert_eq!(b.index.get(id), Some(r as u32), "{what}");
                }
                assert_eq!(b.index.get(999), None, "{what}");
                let (mut ha, mut hb) = (vec![0.0; a.width()], vec![0.0; b.width()]);
                a.hidden(&[100, 201, 7, 999], None, &mut ha);
                b.hidden(&[100, 201, 7, 999], None, &mut hb);
                assert_eq!(ha, hb, "{what}");
            }
        }
    }

    #[test]
    fn a_model_continues_with_new_rows_and_new_labels() {
        let names = |n: usize| (0..n).map(|i| format!("l{i}")).collect::<Vec<_>>();
        let old: Vec<u32> = (0..300).map(|i| i % 2).collect();
        let new: Vec<u32> = (0..300).map(|i| i % 3).collect();
        let (ro, rn) = (rows(&old), rows(&new));
        for (head, loss) in [
            (Head::Bottleneck, LossKind::Softmax),
            (Head::Bottleneck, LossKind::Ns),
            (Head::Bottleneck, LossKind::Ova),
            (Head::Linear, LossKind::Softmax),
        ] {
            let cfg = ModelConfig {
                head,
                loss,
                dim: 8,
                epoch: 5,
                lr: 0.5,
                threads: 1,
                ..Default::default()
            };
            let first = train(cfg.clone(), names(2), &data(&ro, &old), &|_| true).unwrap();
            assert_eq!(accuracy(&first, &data(&ro, &old)), 1.0);
            let opts = TrainOptions {
                init: Some(&first),
                ..Default::default()
            };
            let m = train_with(cfg.clone(), names(3), &data(&rn, &new), &opts, &|_| true).unwrap();
            assert_eq!(m.labels, names(3), "{head:?} {loss:?}");
            assert_eq!(accuracy(&m, &data(&rn, &new)), 1.0, "{head:?} {loss:?}");
            // The first model's tokens keep their rows; the new label's come after.
            assert_eq!(m.index.ids[..first.index.len()], first.index.ids[..]);
            assert_eq!(m.label_counts[0], first.label_counts[0] + 100);
            // With epoch 0 worth of updates... continuing changes the weights it started from.
            assert_ne!(m.input[..first.input.len()], first.input[..]);
        }
    }

    /// fastText's -pretrainedVectors: the rows of the given ids start from the given
    /// values (a tiny learning rate leaves them there); ids not in training are ignored.
    #[test]
    fn pretrained_rows_are_the_starting_rows() {
        let names: Vec<String> = vec!["a".into(), "b".into()];
        let y: Vec<u32> = (0..50).map(|i| i % 2).collect();
        let r = rows(&y);
        let cfg = ModelConfig {
            dim: 4,
            epoch: 1,
            lr: 1e-7,
            threads: 1,
            ..Default::default()
        };
        let ids = [100u32, 7, 999_999];
        let vals: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
        let opts = TrainOptions {
            pretrained: Some((&ids, &vals)),
            ..Default::default()
        };
        let m = train_with(cfg.clone(), names.clone(), &data(&r, &y), &opts, &|_| true).unwrap();
        for (k, &id) in ids[..2].iter().enumerate() {
            let row = m.index.get(id).unwrap() as usize;
            for j in 0..4 {
                assert!((m.input[row * 4 + j] - vals[k * 4 + j]).abs() < 1e-4);
            }
        }
        assert!(m.index.get(999_999).is_none());
        let plain = train(cfg.clone(), names.clone(), &data(&r, &y), &|_| true).unwrap();
        let row = plain.index.get(100).unwrap() as usize;
        assert!(plain.input[row * 4..row * 4 + 4]
            .iter()
            .all(|x| x.abs() < 0.26));
        let three = [0.0f32; 9];
        let opts = TrainOptions {
            pretrained: Some((&ids, &three)),
            ..Default::default()
        };
        let e = train_with(cfg, names, &data(&r, &y), &opts, &|_| true).unwrap_err();
        assert!(e.to_string().contains("3 values per word"), "{e}");
    }

    #[test]
    fn frozen_training_adds_no_rows_and_mismatches_are_refused() {
        let names: Vec<String> = vec!["a".into(), "b".into()];
        let old: Vec<u32> = (0..100).map(|i| i % 2).collect();
        let r = rows(&old);
        let cfg = ModelConfig {
            dim: 4,
            epoch: 2,
            threads: 1,
            ..Default::default()
        };
        let first = train(cfg.clone(), names.clone(), &data(&r, &old), &|_| true).unwrap();
        let q = first
            .quantize(&crate::model::compress::QuantizeOptions {
                cutoff: 4,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(q.index.len(), 4);
        let opts = TrainOptions {
            init: Some(&q),
            frozen: true,
            ..Default::default()
        };
        let m = train_with(cfg.clone(), names.clone(), &data(&r, &old), &opts, &|_| {
            true
        })
        .unwrap();
        assert_eq!(m.index.ids, q.index.ids);
        assert!(m.compressed.is_none());
        let bad = |cfg: ModelConfig, labels: Vec<String>, says: &str| {
            let opts = TrainOptions {
                init: Some(&first),
                ..Default::default()
            };
            let e = train_with(cfg, labels, &data(&r, &old), &opts, &|_| true).unwrap_err();
            assert!(e.to_string().contains(says), "{says}: {e}");
        };
        bad(
            ModelConfig {
                dim: 5,
                ..cfg.clone()
            },
            names.clone(),
            "dim 4",
        );
        bad(cfg.clone(), vec!["b".into(), "a".into()], "must start with");
        let mut t = cfg.clone();
        t.tokenizer.bucket += 1;
        bad(t, names.clone(), "tokenizer");
        let hs = ModelConfig {
            loss: LossKind::Hs,
            ..cfg.clone()
        };
        let first_hs = train(hs.clone(), names.clone(), &data(&r, &old), &|_| true).unwrap();
        let opts = TrainOptions {
            init: Some(&first_hs),
            ..Default::default()
        };
        let three = vec!["a".into(), "b".into(), "c".into()];
        let e = train_with(hs, three, &data(&r, &old), &opts, &|_| true).unwrap_err();
        assert!(e.to_string().contains("cannot add labels"), "{e}");
        let e = TrainOptions::<Dataset> {
            frozen: true,
            ..Default::default()
        }
        .check()
        .unwrap_err();
        assert!(e.to_string().contains("frozen"), "{e}");
    }
}

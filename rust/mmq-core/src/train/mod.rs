//! The Hogwild SGD trainer (fastText's `FastText::trainThread` for supervised models).
pub(crate) mod clock;
pub mod hogwild;

use crate::error::{MmqError, Result};
use crate::model::loss::{negatives_table, safe_ln, sigmoid, LossKind, Tree};
use crate::model::{softmax_in_place, Model, ModelConfig, TokenIndex};
use clock::{run_epochs, Clock, Ticker};
use hogwild::HogwildMatrix;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

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
    cfg.validate()?;
    let nl = labels.len();
    data.validate(nl)?;
    let counts = label_counts(data.labels, &labels)?;

    // Compact the token id space to the ids seen in training.
    let mut index = TokenIndex::default();
    let rows: Vec<u32> = data
        .tokens
        .iter()
        .map(|&t| index.get_or_insert(t))
        .collect();
    let dim = cfg.dim;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed);
    let bound = 1.0 / dim as f32;
    let input: Vec<f32> = (0..index.len() * dim)
        .map(|_| rng.random_range(-bound..bound))
        .collect();
    let tree = (cfg.loss == LossKind::Hs).then(|| Tree::build(&counts));
    let n_out = if cfg.loss == LossKind::Hs { nl - 1 } else { nl };
    let negatives = if cfg.loss == LossKind::Ns {
        negatives_table(&counts, &mut rng)
    } else {
        Vec::new()
    };

    let input = HogwildMatrix::from_vec(input, dim);
    let output = HogwildMatrix::from_vec(vec![0.0; n_out * dim], dim);
    let threads = cfg.threads;
    let clock = Clock::new(
        data.tokens.len() as u64 * cfg.epoch as u64,
        threads,
        callback,
    );
    let shared = Shared {
        cfg: &cfg,
        input: &input,
        output: &output,
        tree: tree.as_ref(),
        negatives: &negatives,
        rows: &rows,
        data,
        n_labels: nl,
        clock: &clock,
    };
    let mut order: Vec<u32> = (0..data.n_rows() as u32).collect();
    let work = |epoch: usize, t: usize, seed: u64, part: &[u32]| {
        Worker::new(&shared, seed).run(part, epoch, t == 0)
    };
    let pool = clock::pool(threads)?;
    run_epochs(
        &pool,
        threads,
        cfg.seed,
        0..cfg.epoch,
        &mut order,
        &clock,
        &work,
        &mut |_| Ok(()),
    )?;
    clock.finish(cfg.epoch)?;
    Ok(Model {
        cfg,
        labels,
        label_counts: counts,
        index,
        input: input.into_vec(),
        output: output.into_vec(),
        tree,
        dense: Vec::new(),
    })
}

struct Shared<'a> {
    cfg: &'a ModelConfig,
    input: &'a HogwildMatrix,
    output: &'a HogwildMatrix,
    tree: Option<&'a Tree>,
    negatives: &'a [u32],
    rows: &'a [u32],
    data: &'a Dataset<'a>,
    n_labels: usize,
    clock: &'a Clock<'a>,
}

struct Worker<'a> {
    s: &'a Shared<'a>,
    rng: Xoshiro256PlusPlus,
    hidden: Vec<f32>,
    grad: Vec<f32>,
    scores: Vec<f32>,
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
            let weights = s.data.weights.map(|w| &w[a..b]);
            if a < b {
                tick.loss(self.update(&s.rows[a..b], weights, labels, lr));
            }
            if !tick.tick(s.clock, i, (b - a) as u64, epoch, s.cfg.lr) {
                return;
            }
        }
        tick.flush(s.clock);
    }

    /// One SGD step on one row; returns its loss.
    fn update(&mut self, rows: &[u32], weights: Option<&[f32]>, labels: &[u32], lr: f32) -> f32 {
        let s = self.s;
        self.hidden.fill(0.0);
        let mut total = 0.0f32;
        for (i, &r) in rows.iter().enumerate() {
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

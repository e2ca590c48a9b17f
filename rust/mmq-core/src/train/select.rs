//! What a run keeps from a validation split, the same way for every trainer (text and
//! discrete-fusion models, continuous fusion, set models): after each epoch the current
//! weights are scored on the validation rows (mean loss, accuracy), the epoch is recorded,
//! the best epoch's weights are kept (highest accuracy, then lowest loss), and `patience`
//! epochs without a better one stop the run. The same rows then fit a temperature.
use crate::model::{top_k, EpochRecord};
use rayon::prelude::*;

/// What a run does beyond the model's hyperparameters: `valid` is the trainer's own kind
/// of rows (a [`super::Dataset`] for text models, text + dense rows for continuous
/// fusion, modality rows for set models).
pub struct TrainOptions<'a, V: ?Sized = super::Dataset<'a>> {
    /// Rows scored after every epoch: the weights of the best epoch are kept, and each
    /// epoch is recorded in the model's history.
    pub valid: Option<&'a V>,
    /// With `valid`: stop after this many epochs without a better score (None: run
    /// every epoch).
    pub patience: Option<usize>,
    /// With `valid`: fit the probabilities' temperature on it after training (stored in
    /// the model's config).
    pub calibrate: bool,
    /// With `valid`: stop after the first epoch that ends at or past this instant,
    /// keeping the best epoch so far (a time budget, as autotune gives each trial; at
    /// least one epoch always runs).
    pub deadline: Option<std::time::Instant>,
    /// Per label (by index): the weight of a row's loss (class weights; None: all 1).
    /// The text trainer (every loss, both heads) reads it; the fusion and set trainers
    /// refuse it.
    pub class_weights: Option<&'a [f32]>,
    /// Start from this model's weights instead of random ones (incremental training):
    /// its tokens keep their rows, new tokens get new rows, and its labels come first
    /// in the trainer's label list (new labels after them). The text trainer reads it;
    /// the fusion and set trainers refuse it.
    pub init: Option<&'a crate::model::Model>,
    /// With `init`: train only the tokens it has rows for (the others are unknown, as
    /// after a quantization cutoff), so no row is added.
    pub frozen: bool,
    /// Starting rows for some token ids (fastText's `-pretrainedVectors`): `(ids, rows)`,
    /// `rows` holding `dim` values per id. An id that gets a row in training starts from
    /// its values instead of random ones; the others are ignored. The bottleneck text
    /// trainer reads it (not with `init`, whose rows come first); the others refuse it.
    pub pretrained: Option<(&'a [u32], &'a [f32])>,
}

impl<V: ?Sized> Default for TrainOptions<'_, V> {
    fn default() -> Self {
        Self {
            valid: None,
            patience: None,
            calibrate: false,
            deadline: None,
            class_weights: None,
            init: None,
            frozen: false,
            pretrained: None,
        }
    }
}

impl<V: ?Sized> TrainOptions<'_, V> {
    /// `patience = Some(0)` is refused; `patience` or `calibrate` without `valid` too.
    pub fn check(&self) -> crate::Result<()> {
        let bad = |m: &str| Err(crate::MmqError::InvalidParameter(m.into()));
        if let Some(w) = self.class_weights {
            if w.iter().any(|x| !x.is_finite() || *x < 0.0) {
                return bad("class weights must be finite numbers >= 0");
            }
            if !w.iter().any(|x| *x > 0.0) {
                return bad("class weights are all 0: nothing would be trained");
            }
        }
        if let Some((ids, rows)) = self.pretrained {
            if ids.is_empty() || rows.len() % ids.len() != 0 {
                return bad(
                    "pretrained vectors: the rows must hold the same number of values per id",
                );
            }
            if self.init.is_some() {
                return bad(
                    "pretrained vectors and a model to start from (init) exclude each other",
                );
            }
            if rows.iter().any(|x| !x.is_finite()) {
                return bad("pretrained vectors must be finite numbers");
            }
        }
        if self.frozen && self.init.is_none() {
            return bad("frozen needs a model to start from (init)");
        }
        if self.patience == Some(0) {
            return bad("patience must be >= 1 (epochs without a better validation score), got 0");
        }
        if self.valid.is_none() && self.patience.is_some() {
            return bad("patience needs validation rows");
        }
        if self.valid.is_none() && self.calibrate {
            return bad("calibrate needs validation rows");
        }
        if self.valid.is_none() && self.deadline.is_some() {
            return bad(
                "a time budget (max_seconds) needs validation rows to pick the epoch to keep",
            );
        }
        Ok(())
    }
}

/// The per-epoch record of a run and the weights (`S`) of its best epoch so far.
pub(crate) struct Selector<S> {
    patience: Option<usize>,
    deadline: Option<std::time::Instant>,
    history: Vec<EpochRecord>,
    /// (accuracy, loss, epoch, weights)
    best: Option<(f32, f32, usize, S)>,
}

impl<S> Selector<S> {
    /// Stops on `patience` epochs without a better score, or after the first epoch that
    /// ends past `deadline`.
    pub fn new(patience: Option<usize>, deadline: Option<std::time::Instant>) -> Self {
        Self {
            patience,
            deadline,
            history: Vec::new(),
            best: None,
        }
    }

    /// Record `epoch`, scored `(valid loss, valid accuracy)`; `snapshot` is taken when it
    /// is the best so far. True when the run should stop (patience spent, or past the
    /// deadline).
    pub fn record(
        &mut self,
        epoch: usize,
        train_loss: f32,
        (valid_loss, valid_accuracy): (f32, f32),
        snapshot: impl FnOnce() -> S,
    ) -> bool {
        let better = match &self.best {
            None => true,
            Some((ba, bl, ..)) => {
                valid_accuracy > *ba || (valid_accuracy == *ba && valid_loss < *bl)
            }
        };
        self.history.push(EpochRecord {
            epoch,
            train_loss,
            valid_loss,
            valid_accuracy,
            best: better,
        });
        if better {
            self.best = Some((valid_accuracy, valid_loss, epoch, snapshot()));
        }
        let since = epoch - self.best.as_ref().map_or(epoch, |b| b.2);
        self.patience.is_some_and(|p| since >= p)
            || self
                .deadline
                .is_some_and(|d| std::time::Instant::now() >= d)
    }

    /// The history and the best epoch's weights (None when no epoch was recorded).
    pub fn finish(self) -> (Vec<EpochRecord>, Option<S>) {
        (self.history, self.best.map(|b| b.3))
    }
}

/// Loss (−ln p, mean over the row's labels the model knows: an index past `probs` is a
/// label training never saw, a miss left out of the loss) and hit (the top label is one
/// of the row's) of one row.
pub(crate) fn row_score(probs: &[f32], gold: &[u32]) -> (f64, u64) {
    let (mut sum, mut known) = (0.0f64, 0usize);
    for &l in gold {
        if let Some(&p) = probs.get(l as usize) {
            sum += -(p.max(1e-12) as f64).ln();
            known += 1;
        }
    }
    let top = top_k(probs, 1, 0.0);
    let hit = top.first().is_some_and(|&(l, _)| gold.contains(&l));
    (sum / known.max(1) as f64, hit as u64)
}

/// Mean loss and accuracy over the rows whose labels are `labels[label_offsets[i]..
/// label_offsets[i + 1]]`, in parallel: `probs(scratch, i, out)` writes row i's label
/// probabilities into `out`; `init` makes each thread's scratch.
pub(crate) fn score_rows<C: Send>(
    label_offsets: &[usize],
    labels: &[u32],
    init: impl Fn() -> C + Sync + Send,
    probs: impl Fn(&mut C, usize, &mut Vec<f32>) + Sync + Send,
) -> (f32, f32) {
    let n = label_offsets.len().saturating_sub(1);
    let (loss, correct) = (0..n)
        .into_par_iter()
        .map_init(
            || (init(), Vec::new()),
            |(c, out), i| {
                probs(c, i, out);
                row_score(out, &labels[label_offsets[i]..label_offsets[i + 1]])
            },
        )
        .reduce(|| (0.0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let n = n.max(1) as f64;
    ((loss / n) as f32, (correct as f64 / n) as f32)
}

/// The temperature minimising `loss(t)` (golden-section search over ln t in
/// [ln 0.05, ln 20]); 1 unless the fit is actually better.
pub(crate) fn fit_temperature_by(loss: impl Fn(f32) -> f32) -> f32 {
    let f = |lt: f64| loss(lt.exp() as f32) as f64;
    let (mut a, mut b) = (0.05f64.ln(), 20f64.ln());
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let (mut c, mut d) = (b - g * (b - a), a + g * (b - a));
    let (mut fc, mut fd) = (f(c), f(d));
    for _ in 0..40 {
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - g * (b - a);
            fc = f(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + g * (b - a);
            fd = f(d);
        }
    }
    let t = ((a + b) / 2.0).exp() as f32;
    if f((t as f64).ln()) < f(0.0) {
        t
    } else {
        1.0
    }
}

/// Probabilities at temperature `t`: `p^(1/t)` renormalised, which is a softmax of the
/// logits divided by `t` (for softmax heads; for hs it raises each label's path
/// probability). The ranking never changes. `t == 1` leaves `probs` as they are.
pub fn temper(probs: &mut [f32], t: f32) {
    if t == 1.0 || probs.is_empty() {
        return;
    }
    let inv = 1.0 / t as f64;
    // In log space, shifted by the largest, so tiny probabilities do not underflow first.
    let max = probs.iter().fold(f32::MIN_POSITIVE, |m, &p| m.max(p)) as f64;
    let mut total = 0.0f64;
    for p in probs.iter_mut() {
        let v = if *p > 0.0 {
            (((*p as f64).ln() - max.ln()) * inv).exp()
        } else {
            0.0
        };
        *p = v as f32;
        total += v;
    }
    if total > 0.0 {
        let inv_total = (1.0 / total) as f32;
        probs.iter_mut().for_each(|p| *p *= inv_total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temper_is_softmax_of_scaled_logits() {
        let logits = [1.0f32, 2.5, -0.5, 0.0];
        let soft = |s: f32| {
            let e: Vec<f64> = logits.iter().map(|&l| ((l / s) as f64).exp()).collect();
            let z: f64 = e.iter().sum();
            e.iter().map(|x| (x / z) as f32).collect::<Vec<_>>()
        };
        for t in [0.3f32, 1.0, 2.0, 7.5] {
            let mut p = soft(1.0);
            temper(&mut p, t);
            for (a, b) in p.iter().zip(soft(t)) {
                assert!((a - b).abs() < 1e-6, "t={t}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn selector_keeps_the_best_epoch_and_stops_on_patience() {
        let mut s = Selector::new(Some(2), None);
        let scores = [(0.9, 0.5), (0.8, 0.6), (0.85, 0.6), (0.7, 0.55), (0.6, 0.9)];
        let mut stopped_at = None;
        for (e, &sc) in scores.iter().enumerate() {
            if s.record(e, 1.0, sc, || e) {
                stopped_at = Some(e);
                break;
            }
        }
        // epoch 1 (0.6) is best; epoch 2 ties on accuracy with a higher loss; 3 is worse:
        // two epochs without a better one stop the run after epoch 3.
        assert_eq!(stopped_at, Some(3));
        let (h, best) = s.finish();
        assert_eq!(best, Some(1));
        assert_eq!(
            h.iter().map(|r| r.best).collect::<Vec<_>>(),
            [true, true, false, false]
        );
    }

    #[test]
    fn row_score_counts_unknown_labels_as_misses() {
        let p = [0.1f32, 0.7, 0.2];
        let (l, hit) = row_score(&p, &[1]);
        assert!((l - -(0.7f64.ln())).abs() < 1e-6 && hit == 1);
        let (l, hit) = row_score(&p, &[5]);
        assert_eq!((l, hit), (0.0, 0));
    }
}

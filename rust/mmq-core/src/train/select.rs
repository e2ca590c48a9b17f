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
    /// When the first epoch started (the mean epoch time is measured from it).
    started: std::time::Instant,
    /// The epochs the run is planned to have, and how many each record covers (1; a
    /// G-Blend super-epoch's length).
    planned: usize,
    step: usize,
    history: Vec<EpochRecord>,
    /// (accuracy, loss, epoch, weights)
    best: Option<(f32, f32, usize, S)>,
}

impl<S> Selector<S> {
    /// Stops on `patience` epochs without a better score, or on the time budget
    /// `deadline` of a run planned to have `planned` epochs, each record covering `step`
    /// of them (see [`Selector::record`]). Make it just before the first epoch.
    pub fn new(
        patience: Option<usize>,
        deadline: Option<std::time::Instant>,
        planned: usize,
        step: usize,
    ) -> Self {
        Self {
            patience,
            deadline,
            started: std::time::Instant::now(),
            planned,
            step: step.max(1),
            history: Vec::new(),
            best: None,
        }
    }

    /// Record `epoch`, scored `(valid loss, valid accuracy)`; `snapshot` is taken when it
    /// is the best so far. True when the run should stop: patience spent, or the time
    /// budget. With a deadline, the epochs still to run are those that end before it at
    /// the mean epoch time so far (scoring included), in whole steps: none stops the run
    /// now (an epoch expected to end past the deadline is not started), fewer than
    /// planned shortens `clock`'s schedule so that the learning rate reaches 0 at the
    /// new last epoch, as in a run planned that long.
    pub fn record(
        &mut self,
        epoch: usize,
        train_loss: f32,
        (valid_loss, valid_accuracy): (f32, f32),
        clock: &super::clock::Clock,
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
        if self.patience.is_some_and(|p| since >= p) {
            return true;
        }
        let done = epoch + 1;
        let Some(deadline) = self.deadline else {
            return false;
        };
        let end = self.fitting_end(done, deadline);
        if end <= done {
            return true;
        }
        if end < self.planned {
            clock.shorten(done, end);
            self.planned = end;
        }
        false
    }

    /// The last epoch (counted from 1) that ends by `deadline` at the mean epoch time of
    /// the `done` epochs so far, in whole steps, at most the planned one.
    fn fitting_end(&self, done: usize, deadline: std::time::Instant) -> usize {
        let now = std::time::Instant::now();
        let per_epoch = now.duration_since(self.started).as_secs_f64() / done.max(1) as f64;
        let left = deadline.saturating_duration_since(now).as_secs_f64();
        let fit = (left / per_epoch.max(1e-9)).min(1e9) as usize;
        (done + fit / self.step * self.step).min(self.planned)
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

/// Independent (sigmoid) label probabilities at temperature `t`: each `p` becomes
/// `sigmoid(logit(p) / t)`, the score divided by `t` as the text model's ns and ova do.
pub fn temper_sigmoid(probs: &mut [f32], t: f32) {
    if t == 1.0 {
        return;
    }
    let inv = 1.0 / t as f64;
    for p in probs.iter_mut() {
        let q = (*p as f64).clamp(1e-12, 1.0 - 1e-12);
        let s = (q / (1.0 - q)).ln() * inv;
        *p = (1.0 / (1.0 + (-s).exp())) as f32;
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
        let cb = |_: &super::super::Progress| true;
        let clock = super::super::clock::Clock::new(10, 1, &cb);
        let mut s = Selector::new(Some(2), None, 5, 1);
        let scores = [(0.9, 0.5), (0.8, 0.6), (0.85, 0.6), (0.7, 0.55), (0.6, 0.9)];
        let mut stopped_at = None;
        for (e, &sc) in scores.iter().enumerate() {
            if s.record(e, 1.0, sc, &clock, || e) {
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

    /// A deadline shortens the schedule to the epochs that fit (the learning rate then
    /// reaches 0 at the new last epoch) and stops before an epoch expected to end past it.
    #[test]
    fn deadline_shortens_the_schedule_and_stops_before_overrunning() {
        use super::super::clock::{Clock, Ticker};
        let cb = |_: &super::super::Progress| true;
        let clock = Clock::new(10 * 100, 1, &cb);
        let start = std::time::Instant::now();
        let deadline = start + std::time::Duration::from_millis(200);
        let mut s = Selector::new(None, Some(deadline), 100, 1);
        let mut ran = 0;
        for e in 0..100 {
            std::thread::sleep(std::time::Duration::from_millis(20));
            let mut t = Ticker::new(&clock, false);
            t.tick(&clock, 1, 10, e, 0.1);
            t.flush(&clock);
            ran = e + 1;
            if s.record(e, 1.0, (1.0, 0.5), &clock, || e) {
                break;
            }
        }
        assert!(ran < 100, "the deadline never stopped the run");
        assert!(clock.total() < 1000, "the schedule was not shortened");
        // It stopped at the shortened end (progress 1) or one epoch short of it.
        assert!(clock.progress() >= 0.5, "progress {}", clock.progress());
        // An epoch is not started when it would end past the deadline (generous
        // slack: a loaded machine stretches the sleeps).
        assert!(start.elapsed() < std::time::Duration::from_millis(200 + 200));
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

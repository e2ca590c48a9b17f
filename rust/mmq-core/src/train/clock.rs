//! The skeleton every Hogwild trainer shares (text model, continuous fusion, set models):
//! seeded per-epoch shuffles split over a rayon pool, work counted for fastText's linear
//! learning-rate decay, progress reports about every 100 ms, and stopping on request.
use super::Progress;
use crate::error::{MmqError, Result};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// Work done so far by all workers of one training run.
pub(crate) struct Clock<'a> {
    processed: AtomicU64,
    /// Work units of the whole run (at least 1): the learning rate decays to 0 when
    /// `processed` reaches it. A time budget can shorten it ([`Clock::shorten`]).
    total: AtomicU64,
    stop: AtomicBool,
    start: Instant,
    /// When progress was last reported (ms since `start`): shared by the epochs' workers,
    /// so reports (and the stop requests the callback answers) come every 100 ms even
    /// when an epoch is shorter than that.
    last_report: AtomicU64,
    threads: usize,
    callback: &'a (dyn Fn(&Progress) -> bool + Sync),
    /// Sum and count of the row losses since the last [`Clock::take_epoch_loss`], over
    /// all workers (each adds its own when it flushes), and the last mean it gave (NaN
    /// before): the final report's loss when nothing was trained since.
    epoch_loss: std::sync::Mutex<(f64, u64, f32)>,
}

impl<'a> Clock<'a> {
    pub fn new(
        total: u64,
        threads: usize,
        callback: &'a (dyn Fn(&Progress) -> bool + Sync),
    ) -> Self {
        Self {
            processed: AtomicU64::new(0),
            total: AtomicU64::new(total.max(1)),
            stop: AtomicBool::new(false),
            start: Instant::now(),
            last_report: AtomicU64::new(0),
            threads,
            callback,
            epoch_loss: std::sync::Mutex::new((0.0, 0, f32::NAN)),
        }
    }

    /// A clock for a trial run that starts where this one stands: the same total (so the
    /// same learning rates from here on) and threads, its own stop flag, reporting through
    /// `callback`.
    pub fn trial(&self, callback: &'a (dyn Fn(&Progress) -> bool + Sync)) -> Clock<'a> {
        Clock {
            processed: AtomicU64::new(self.processed()),
            total: AtomicU64::new(self.total()),
            stop: AtomicBool::new(false),
            start: Instant::now(),
            last_report: AtomicU64::new(0),
            threads: self.threads,
            callback,
            epoch_loss: std::sync::Mutex::new((0.0, 0, f32::NAN)),
        }
    }

    /// Mean loss of the rows trained since the last call, and reset (0 when no row had
    /// anything to train on: a file's history holds finite numbers only).
    pub fn take_epoch_loss(&self) -> f32 {
        let mut e = self.epoch_loss.lock().unwrap_or_else(|e| e.into_inner());
        let (sum, n) = (std::mem::take(&mut e.0), std::mem::take(&mut e.1));
        let mean = (sum / n.max(1) as f64) as f32;
        if n > 0 {
            e.2 = mean;
        }
        mean
    }

    /// The mean loss of the rows trained since the last [`Clock::take_epoch_loss`], or
    /// the last mean it gave when none were (NaN when no row was ever trained).
    fn final_loss(&self) -> f32 {
        let (sum, n, last) = *self.epoch_loss.lock().unwrap_or_else(|e| e.into_inner());
        if n > 0 {
            (sum / n as f64) as f32
        } else {
            last
        }
    }

    /// Work units of the whole run.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// After `done` epochs of equal work, make the run `end` epochs long (`end > done`):
    /// the learning rate now decays to 0 at the end of epoch `end`, from the rate it has
    /// at the new fraction done (a time budget shortens a run this way, so that its last
    /// epoch still ends at a learning rate near 0).
    pub fn shorten(&self, done: usize, end: usize) {
        let p = self.processed();
        let total = (p as u128 * end as u128 / done.max(1) as u128) as u64;
        if total > p && total < self.total() {
            self.total.store(total, Ordering::Relaxed);
        }
    }

    /// Work units done so far.
    pub fn processed(&self) -> u64 {
        self.processed.load(Ordering::Relaxed)
    }

    /// Fraction of the run done so far, in [0, 1].
    pub fn progress(&self) -> f32 {
        (self.processed() as f64 / self.total() as f64).min(1.0) as f32
    }

    /// Ask every worker to stop (the callback refused, or training diverged).
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The final report (its loss: the last epoch's mean, see [`Clock::final_loss`]);
    /// [`MmqError::Interrupted`] when the callback refuses it.
    pub fn finish(&self, epochs: usize) -> Result<()> {
        let elapsed = self.start.elapsed().as_secs_f64().max(1e-9);
        let done = Progress {
            progress: 1.0,
            epoch: epochs,
            lr: 0.0,
            loss: self.final_loss(),
            tokens_per_sec_per_thread: self.processed() as f64 / elapsed / self.threads as f64,
        };
        if (self.callback)(&done) {
            Ok(())
        } else {
            Err(MmqError::Interrupted)
        }
    }
}

/// One worker's bookkeeping: its work is added to the clock in batches, and the
/// reporting worker calls the progress callback.
pub(crate) struct Ticker {
    pending: u64,
    done: u64,
    reporter: bool,
    loss_sum: f64,
    loss_n: u64,
}

impl Ticker {
    pub fn new(clock: &Clock, reporter: bool) -> Self {
        Self {
            pending: 0,
            done: clock.processed.load(Ordering::Relaxed),
            reporter,
            loss_sum: 0.0,
            loss_n: 0,
        }
    }

    /// Fraction of the run done (as this worker last saw it) and the learning rate
    /// `lr0 · (1 − progress)`.
    pub fn lr(&self, clock: &Clock, lr0: f32) -> (f32, f32) {
        let p = (self.done as f64 / clock.total() as f64).min(1.0) as f32;
        (p, lr0 * (1.0 - p))
    }

    pub fn loss(&mut self, l: f32) {
        self.loss_sum += l as f64;
        self.loss_n += 1;
    }

    /// Count the `work` of row number `i` of this worker's part; every 64 rows look for
    /// a stop request and (reporting worker) report progress. False: stop now.
    pub fn tick(&mut self, clock: &Clock, i: usize, work: u64, epoch: usize, lr0: f32) -> bool {
        self.pending += work;
        if self.pending >= 256 {
            self.done = clock.processed.fetch_add(self.pending, Ordering::Relaxed) + self.pending;
            self.pending = 0;
        }
        if !i.is_multiple_of(64) {
            return true;
        }
        if clock.stopped() {
            return false;
        }
        let now = clock.start.elapsed().as_millis() as u64;
        if self.reporter && now >= clock.last_report.load(Ordering::Relaxed) + 100 {
            clock.last_report.store(now, Ordering::Relaxed);
            let el = clock.start.elapsed().as_secs_f64().max(1e-9);
            let (progress, lr) = self.lr(clock, lr0);
            let p = Progress {
                progress,
                epoch,
                lr,
                loss: (self.loss_sum / self.loss_n.max(1) as f64) as f32,
                tokens_per_sec_per_thread: self.done as f64 / el / clock.threads as f64,
            };
            if !(clock.callback)(&p) {
                clock.request_stop();
                return false;
            }
        }
        true
    }

    /// Hand the work and the losses not yet counted to the clock (end of the worker's
    /// part).
    pub fn flush(&mut self, clock: &Clock) {
        clock.processed.fetch_add(self.pending, Ordering::Relaxed);
        self.pending = 0;
        let mut e = clock.epoch_loss.lock().unwrap_or_else(|e| e.into_inner());
        e.0 += std::mem::take(&mut self.loss_sum);
        e.1 += std::mem::take(&mut self.loss_n);
    }
}

/// `work(epoch, part index, worker seed, rows of the part)`.
pub(crate) type EpochWork<'a> = dyn Fn(usize, usize, u64, &[u32]) + Sync + 'a;

/// A rayon pool of `threads` threads.
pub(crate) fn pool(threads: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| MmqError::InvalidParameter(format!("cannot start {threads} threads: {e}")))
}

/// Run the epochs `epochs` (numbered from 0 over the whole run) over the rows in `order`: each epoch reshuffles them with a
/// permutation seeded by (`seed`, epoch), splits them into one contiguous part per
/// thread and calls `work(epoch, part index, worker seed, part)` on `pool` (inline with
/// one thread, so one-thread training is deterministic). After each epoch `after(epoch)`
/// runs (its error ends training); then a stop request ends it with
/// [`MmqError::Interrupted`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_epochs(
    pool: &rayon::ThreadPool,
    threads: usize,
    seed: u64,
    epochs: std::ops::Range<usize>,
    order: &mut [u32],
    clock: &Clock,
    work: &EpochWork,
    after: &mut dyn FnMut(usize) -> Result<()>,
) -> Result<()> {
    let n = order.len();
    for epoch in epochs {
        let mut erng = Xoshiro256PlusPlus::seed_from_u64(seed ^ (0x9E37_79B9 * (epoch as u64 + 1)));
        for i in (1..n).rev() {
            order.swap(i, erng.random_range(0..=i));
        }
        let chunk = n.div_ceil(threads).max(1);
        let run = |(t, part): (usize, &[u32])| {
            work(
                epoch,
                t,
                seed.wrapping_add((epoch * threads + t) as u64 + 1),
                part,
            )
        };
        if threads == 1 {
            run((0, &order[..]));
        } else {
            pool.install(|| order.par_chunks(chunk).enumerate().for_each(run));
        }
        after(epoch)?;
        if clock.stopped() {
            return Err(MmqError::Interrupted);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The final report carries the last epoch's mean loss (a bar's last line shows it),
    /// whether or not the epoch's losses were taken before it.
    #[test]
    fn final_report_has_the_last_epoch_loss() {
        let seen = std::sync::Mutex::new(Vec::new());
        let cb = |p: &Progress| {
            seen.lock().unwrap().push((p.progress, p.loss));
            true
        };
        let clock = Clock::new(10, 1, &cb);
        clock.finish(0).unwrap();
        let mut t = Ticker::new(&clock, true);
        for l in [1.0, 2.0, 3.0] {
            t.loss(l);
        }
        t.flush(&clock);
        clock.finish(1).unwrap();
        assert_eq!(clock.take_epoch_loss(), 2.0);
        t.loss(0.5);
        t.flush(&clock);
        assert_eq!(clock.take_epoch_loss(), 0.5);
        clock.finish(2).unwrap();
        let seen = seen.into_inner().unwrap();
        assert!(seen[0].1.is_nan(), "nothing trained yet: {seen:?}");
        assert_eq!(seen[1], (1.0, 2.0));
        assert_eq!(seen[2], (1.0, 0.5));
    }
}

//! Seeded k-means (Lloyd) with k-means++ initialization.
//!
//! - **Sample cap**: at most `max_points_per_centroid * k` rows train (faiss's
//!   rule, default 256 per centroid), drawn without replacement with the seed.
//! - **Init**: k-means++ (D² sampling, one candidate per step) on a seeded
//!   subset of at most 32·k of the training rows: it makes k passes over its
//!   rows, and a subset that stays in cache seeds as well as the full sample.
//! - **Assignment**: a blocked distance GEMM (`||x||² - 2 x·c + ||c||²`, see
//!   the `kernels` module), parallel over fixed blocks of rows.
//! - **Update**: centroids are f64 means of their rows.
//! - **Empty clusters**: the largest cluster is split, as faiss does: its
//!   centroid is copied and both copies are pushed apart by a small symmetric
//!   perturbation (alternating sign per dimension), and the cluster's count is
//!   shared between the two. The last update splits nothing.
//! - **Precision**: distances are computed relative to the data mean (see
//!   `kernels::Codebook`), so data far from the origin keep their digits.
//! - **Stop**: after `max_iter` iterations, when no assignment changes, or when
//!   the relative improvement of the objective falls under `tol`.
//!
//! Every reduction runs in a fixed order over fixed blocks, so a given seed
//! gives the same centroids whatever the number of rayon threads.
use std::sync::atomic::{AtomicBool, Ordering};

use rand::{Rng, RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;

use super::kernels::{self, Codebook, MatRef};
use crate::error::{MmqError, Result};

/// Rows per block of the assignment step.
const ASSIGN_BLOCK: usize = 256;
/// Rows per block of the k-means++ distance update.
const INIT_BLOCK: usize = 2048;
const _: () = assert!(INIT_BLOCK.is_multiple_of(kernels::GROUP));
/// k-means++ seeding runs on at most this many rows per centroid.
const INIT_POINTS_PER_CENTROID: usize = 32;
/// Relative perturbation used when splitting a cluster (faiss uses 1/1024).
const SPLIT_EPS: f32 = 1.0 / 1024.0;

/// Parameters of [`kmeans`].
#[derive(Clone, Debug, PartialEq)]
pub struct KMeansConfig {
    /// Number of centroids (>= 1, <= number of training rows).
    pub k: usize,
    /// Maximum number of Lloyd iterations (default 25, as faiss). 0 keeps the
    /// k-means++ seeds.
    pub max_iter: usize,
    /// Stop when `(obj_prev - obj) / obj_prev < tol` (default 1e-4; 0 runs
    /// until assignments stop changing or `max_iter`).
    pub tol: f64,
    /// Seed of the row sample and of the k-means++ draws.
    pub seed: u64,
    /// Train on at most `max_points_per_centroid * k` rows (default 256).
    pub max_points_per_centroid: usize,
}

impl KMeansConfig {
    /// Default number of Lloyd iterations.
    pub const DEFAULT_MAX_ITER: usize = 25;
    /// Default relative-improvement tolerance.
    pub const DEFAULT_TOL: f64 = 1e-4;
    /// Default training-sample cap per centroid.
    pub const DEFAULT_MAX_POINTS_PER_CENTROID: usize = 256;

    /// `k` centroids, seed 0 and the defaults above.
    pub fn new(k: usize) -> Self {
        KMeansConfig {
            k,
            max_iter: Self::DEFAULT_MAX_ITER,
            tol: Self::DEFAULT_TOL,
            seed: 0,
            max_points_per_centroid: Self::DEFAULT_MAX_POINTS_PER_CENTROID,
        }
    }

    /// Sets the seed (builder style).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Checks the ranges of the fields.
    pub fn validate(&self) -> Result<()> {
        if self.k == 0 {
            return Err(MmqError::InvalidParameter(
                "k-means needs k >= 1 centroids, got k = 0".into(),
            ));
        }
        validate_tol(self.tol)?;
        validate_mppc(self.max_points_per_centroid)
    }
}

pub(crate) fn validate_tol(tol: f64) -> Result<()> {
    if !tol.is_finite() || tol < 0.0 {
        return Err(MmqError::InvalidParameter(format!(
            "tol must be a finite number >= 0, got {tol}"
        )));
    }
    Ok(())
}

pub(crate) fn validate_mppc(mppc: usize) -> Result<()> {
    if mppc == 0 {
        return Err(MmqError::InvalidParameter(
            "max_points_per_centroid must be >= 1, got 0".into(),
        ));
    }
    Ok(())
}

/// A trained k-means model.
#[derive(Clone, Debug)]
pub struct KMeansResult {
    /// `k × d` centroids, row-major.
    pub centroids: Vec<f32>,
    /// Number of centroids.
    pub k: usize,
    /// Dimension.
    pub d: usize,
    /// Mean squared distance of the training rows to their centroid at the
    /// last assignment step (before the last centroid update).
    pub objective: f64,
    /// Lloyd iterations run.
    pub iterations: usize,
    /// Rows actually used for training (after the sample cap).
    pub n_train: usize,
}

/// Checks `x.len() == n * d`, `n > 0` and that every value is finite; errors
/// name the first offending row and dimension.
pub(crate) fn validate_matrix(x: &[f32], n: usize, d: usize) -> Result<()> {
    if n == 0 {
        return Err(MmqError::InvalidInput(
            "empty input: expected at least 1 row, got 0".into(),
        ));
    }
    if d == 0 {
        return Err(MmqError::InvalidInput(
            "expected dimension >= 1, got 0".into(),
        ));
    }
    let expected = n
        .checked_mul(d)
        .ok_or_else(|| MmqError::InvalidInput(format!("n * d overflows: n = {n}, d = {d}")))?;
    if x.len() != expected {
        return Err(MmqError::InvalidInput(format!(
            "expected {n} rows x {d} dims = {expected} values, got {} values",
            x.len()
        )));
    }
    if let Some(p) = x.par_iter().position_first(|v| !v.is_finite()) {
        return Err(non_finite_error(p / d, p % d, x[p]));
    }
    Ok(())
}

pub(crate) fn non_finite_error(row: usize, dim: usize, v: f32) -> MmqError {
    MmqError::InvalidInput(format!(
        "row {row} has NaN or inf at dim {dim} (value {v}); expected finite values"
    ))
}

/// Trains k-means on the row-major `n × d` matrix `x`.
///
/// Runs in parallel (rayon) over blocks of rows; the result depends only on
/// the data and `cfg`, not on the number of threads.
pub fn kmeans(x: &[f32], n: usize, d: usize, cfg: &KMeansConfig) -> Result<KMeansResult> {
    cfg.validate()?;
    validate_matrix(x, n, d)?;
    if cfg.k > n {
        return Err(MmqError::InvalidInput(format!(
            "k-means with k = {} centroids needs at least {} training rows, got {n}",
            cfg.k, cfg.k
        )));
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed);
    let sample = sample_rows(&mut rng, n, cfg.k, cfg.max_points_per_centroid);
    let train_seed = rng.next_u64();
    let owned;
    let (data, n_train) = match &sample {
        Some(rows) => {
            let mut buf = Vec::with_capacity(rows.len() * d);
            for &r in rows {
                buf.extend_from_slice(&x[r * d..(r + 1) * d]);
            }
            owned = buf;
            (&owned[..], rows.len())
        }
        None => (x, n),
    };
    let opts = LloydOptions {
        k: cfg.k,
        max_iter: cfg.max_iter,
        tol: cfg.tol,
        seed: train_seed,
        parallel: true,
    };
    train(data, n_train, d, &opts, None)
}

/// Indices of the training sample (sorted), or `None` when all `n` rows fit
/// under the cap `max_points_per_centroid * k`.
pub(crate) fn sample_rows(
    rng: &mut Xoshiro256PlusPlus,
    n: usize,
    k: usize,
    max_points_per_centroid: usize,
) -> Option<Vec<usize>> {
    let cap = max_points_per_centroid.saturating_mul(k);
    if n <= cap {
        return None;
    }
    let mut idx = rand::seq::index::sample(rng, n, cap).into_vec();
    idx.sort_unstable();
    Some(idx)
}

/// Options of [`train`] (the already-sampled, validated core of k-means).
pub(crate) struct LloydOptions {
    pub k: usize,
    pub max_iter: usize,
    pub tol: f64,
    pub seed: u64,
    /// Use rayon inside this k-means (the result is the same either way).
    pub parallel: bool,
}

/// Runs `f` over the chunks of `len` items (`block` per chunk), in parallel
/// or not, and returns the results in chunk order.
fn map_blocks<T: Send>(
    len: usize,
    block: usize,
    parallel: bool,
    f: impl Fn(std::ops::Range<usize>) -> T + Sync + Send,
) -> Vec<T> {
    map_blocks_init(len, block, parallel, || (), |_, r| f(r))
}

/// [`map_blocks`] with a per-task scratch value made by `init`.
fn map_blocks_init<S, T: Send>(
    len: usize,
    block: usize,
    parallel: bool,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, std::ops::Range<usize>) -> T + Sync + Send,
) -> Vec<T> {
    let nb = len.div_ceil(block);
    let range = |b: usize| b * block..((b + 1) * block).min(len);
    if parallel {
        (0..nb)
            .into_par_iter()
            .map_init(&init, |s, b| f(s, range(b)))
            .collect()
    } else {
        let mut s = init();
        (0..nb).map(|b| f(&mut s, range(b))).collect()
    }
}

/// k-means on the dense `n × d` matrix `x` (already sampled and validated,
/// `1 <= k <= n`). `stop`, when set by another thread, interrupts it.
pub(crate) fn train(
    x: &[f32],
    n: usize,
    d: usize,
    opts: &LloydOptions,
    stop: Option<&AtomicBool>,
) -> Result<KMeansResult> {
    let k = opts.k;
    debug_assert!(k >= 1 && k <= n && x.len() == n * d);
    let stopped = || stop.is_some_and(|s| s.load(Ordering::Relaxed));
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(opts.seed);
    // k-means++ makes k passes over its rows, so it runs on a seeded subset
    // of at most INIT_POINTS_PER_CENTROID * k rows (kept in cache); Lloyd
    // then uses every training row.
    let init_n = n.min(INIT_POINTS_PER_CENTROID.saturating_mul(k));
    let mut centroids = if init_n < n {
        let mut rows = rand::seq::index::sample(&mut rng, n, init_n).into_vec();
        rows.sort_unstable();
        let mut sub = Vec::with_capacity(init_n * d);
        for &r in &rows {
            sub.extend_from_slice(&x[r * d..(r + 1) * d]);
        }
        kmeans_pp(&sub, init_n, d, k, &mut rng, opts.parallel, &stopped)?
    } else {
        kmeans_pp(x, n, d, k, &mut rng, opts.parallel, &stopped)?
    };

    // Distances are computed relative to the data mean (see `Codebook`).
    let mu = column_mean(x, d);
    let mut xnorms = vec![0f32; n];
    kernels::row_sq_dists(x, d, &mu, &mut xnorms);
    // Column-major copy: `sgemm` packs it with contiguous copies.
    let mut xt = vec![0f32; n * d];
    for (i, row) in x.chunks_exact(d).enumerate() {
        for (t, &v) in row.iter().enumerate() {
            xt[t * n + i] = v;
        }
    }
    let xt = &xt[..];
    let mut assign = vec![u32::MAX; n];
    let mut new_assign = vec![0u32; n];
    let mut dist = vec![0f32; n];
    let mut counts = vec![0usize; k];
    let mut sums = vec![0f64; k * d];
    // Scale of the data around its mean, for the cluster-split perturbation.
    let spread = (xnorms.iter().map(|&v| v as f64).sum::<f64>() / (n * d) as f64).sqrt() as f32;

    // Assignment step: fixed blocks of rows, partial objectives summed in
    // block order. Returns the mean squared distance.
    let assign_step = |centroids: &[f32], new_assign: &mut [u32], dist: &mut [f32]| -> f64 {
        let book = Codebook::new(centroids, k, d, &mu);
        let book = &book;
        let xn = &xnorms;
        let na = SyncSlice::new(new_assign);
        let di = SyncSlice::new(dist);
        let partial = map_blocks_init(n, ASSIGN_BLOCK, opts.parallel, Vec::new, |scratch, r| {
            let rows = r.len();
            // SAFETY: blocks are disjoint row ranges of `new_assign`/`dist`,
            // which are not otherwise used until `map_blocks_init` returns.
            let (idx, val) = unsafe { (na.range(r.clone()), di.range(r.clone())) };
            let a = MatRef::new(xt, r.start, rows, d, 1, n);
            kernels::nearest(a, book, scratch, idx, val);
            let mut obj = 0f64;
            for (v, &xn2) in val.iter_mut().zip(&xn[r]) {
                *v = (*v + xn2).max(0.0);
                obj += *v as f64;
            }
            obj
        });
        partial.iter().sum::<f64>() / n as f64
    };

    let mut objective = f64::NAN;
    let mut prev_obj = f64::INFINITY;
    let mut prev_repaired = true;
    let mut iterations = 0;
    for it in 0..opts.max_iter {
        if stopped() {
            return Err(MmqError::Interrupted);
        }
        iterations = it + 1;
        let obj = assign_step(&centroids, &mut new_assign, &mut dist);
        let changed = assign
            .iter()
            .zip(&new_assign)
            .filter(|(a, b)| a != b)
            .count();
        std::mem::swap(&mut assign, &mut new_assign);
        objective = obj;
        if changed == 0 {
            break;
        }
        let converged = if prev_obj > 0.0 && prev_obj.is_finite() {
            (prev_obj - obj) / prev_obj < opts.tol
        } else {
            prev_obj == 0.0
        };
        // The improvement is only meaningful when the previous update did
        // not split clusters. The last update repairs nothing: no
        // assignment step would follow to use the split.
        let last = it + 1 == opts.max_iter || (!prev_repaired && converged);
        let repair = (!last).then_some((&mu[..], spread));
        let repaired = update(
            x,
            d,
            k,
            &assign,
            &mut centroids,
            &mut counts,
            &mut sums,
            repair,
        );
        if last {
            break;
        }
        prev_obj = obj;
        prev_repaired = repaired;
    }
    if opts.max_iter == 0 {
        // Report the objective of the seeds.
        objective = assign_step(&centroids, &mut new_assign, &mut dist);
    }
    Ok(KMeansResult {
        centroids,
        k,
        d,
        objective,
        iterations,
        n_train: n,
    })
}

/// Per-column mean of the dense `n × d` matrix `x` (f64 sums, in row order).
pub(crate) fn column_mean(x: &[f32], d: usize) -> Vec<f32> {
    let mut s = vec![0f64; d];
    let mut n = 0usize;
    for row in x.chunks_exact(d) {
        for (a, &v) in s.iter_mut().zip(row) {
            *a += v as f64;
        }
        n += 1;
    }
    s.iter().map(|&v| (v / n.max(1) as f64) as f32).collect()
}

/// k-means++ seeding: the first centroid uniformly, each next one with
/// probability proportional to the squared distance to the nearest chosen one.
fn kmeans_pp(
    x: &[f32],
    n: usize,
    d: usize,
    k: usize,
    rng: &mut Xoshiro256PlusPlus,
    parallel: bool,
    stopped: &dyn Fn() -> bool,
) -> Result<Vec<f32>> {
    let mut centroids = vec![0f32; k * d];
    let first = rng.random_range(0..n);
    centroids[..d].copy_from_slice(&x[first * d..(first + 1) * d]);
    let mut mind = vec![f32::INFINITY; n];
    let xg = kernels::interleave_rows(x, n, d);
    let mut block_sums = min_dist_pass(&xg, n, d, &centroids[..d], &mut mind, parallel);
    for t in 1..k {
        if t % 16 == 0 && stopped() {
            return Err(MmqError::Interrupted);
        }
        let total: f64 = block_sums.iter().sum();
        let pick = if total > 0.0 && total.is_finite() {
            let r = rng.random::<f64>() * total;
            pick_weighted(&mind, &block_sums, r)
        } else {
            // Every row coincides with a chosen centroid.
            rng.random_range(0..n)
        };
        centroids[t * d..(t + 1) * d].copy_from_slice(&x[pick * d..(pick + 1) * d]);
        let c = &centroids[t * d..(t + 1) * d];
        block_sums = min_dist_pass(&xg, n, d, c, &mut mind, parallel);
    }
    Ok(centroids)
}

/// Updates `mind` with the distances to `c` (`xg`: the rows interleaved by
/// [`kernels::interleave_rows`]); returns per-block sums.
fn min_dist_pass(
    xg: &[f32],
    n: usize,
    d: usize,
    c: &[f32],
    mind: &mut [f32],
    parallel: bool,
) -> Vec<f64> {
    let md = SyncSlice::new(mind);
    map_blocks(n, INIT_BLOCK, parallel, |r| {
        // SAFETY: blocks are disjoint row ranges of `mind`.
        let m = unsafe { md.range(r.clone()) };
        // INIT_BLOCK is a multiple of GROUP, so blocks start on a group.
        let g0 = r.start / kernels::GROUP;
        let g1 = r.end.div_ceil(kernels::GROUP);
        kernels::min_dist_update(
            &xg[g0 * d * kernels::GROUP..g1 * d * kernels::GROUP],
            d,
            c,
            m,
        )
    })
}

/// The row where the running sum of `w` (summed in the same order as
/// `block_sums` was) first exceeds `r`.
fn pick_weighted(w: &[f32], block_sums: &[f64], mut r: f64) -> usize {
    let mut b = 0;
    while b + 1 < block_sums.len() && r >= block_sums[b] {
        r -= block_sums[b];
        b += 1;
    }
    let start = b * INIT_BLOCK;
    let end = (start + INIT_BLOCK).min(w.len());
    let mut acc = 0f64;
    let mut last_positive = None;
    for (i, &v) in w[start..end].iter().enumerate() {
        if v > 0.0 {
            last_positive = Some(start + i);
        }
        acc += v as f64;
        if acc > r && v > 0.0 {
            return start + i;
        }
    }
    // Rounding pushed r past the block's sum: take its last positive row.
    last_positive
        .or_else(|| w.iter().rposition(|&v| v > 0.0))
        .unwrap_or(0)
}

/// Lloyd update: centroids become the means of their rows; when
/// `repair_scale` is given, empty clusters are repaired by splitting the
/// largest one (else they keep their centroid). Returns whether a repair
/// happened.
#[allow(clippy::too_many_arguments)]
fn update(
    x: &[f32],
    d: usize,
    k: usize,
    assign: &[u32],
    centroids: &mut [f32],
    counts: &mut [usize],
    sums: &mut [f64],
    repair: Option<(&[f32], f32)>,
) -> bool {
    counts.fill(0);
    sums.fill(0.0);
    kernels::accumulate(x, d, assign, sums, counts);
    for c in 0..k {
        if counts[c] > 0 {
            let inv = 1.0 / counts[c] as f64;
            for (o, s) in centroids[c * d..(c + 1) * d]
                .iter_mut()
                .zip(&sums[c * d..(c + 1) * d])
            {
                *o = (s * inv) as f32;
            }
        }
    }
    let Some((mu, spread)) = repair else {
        return false;
    };
    let mut repaired = false;
    for ci in 0..k {
        if counts[ci] > 0 {
            continue;
        }
        repaired = true;
        // Largest cluster, ties to the lowest index.
        let mut cj = 0;
        for c in 1..k {
            if counts[c] > counts[cj] {
                cj = c;
            }
        }
        split(centroids, d, ci, cj, mu, spread);
        counts[ci] = counts[cj] / 2;
        counts[cj] -= counts[ci];
    }
    repaired
}

/// Copies centroid `cj` into `ci` and pushes the two apart symmetrically:
/// `±SPLIT_EPS` times the coordinate's offset from the data mean `mu`
/// (faiss perturbs relative to the raw coordinate, which is too much far
/// from the origin), alternating sign per dimension, with a floor of 1% of
/// the data `spread` so that coordinates at the mean move too.
fn split(centroids: &mut [f32], d: usize, ci: usize, cj: usize, mu: &[f32], spread: f32) {
    let floor = 0.01 * spread;
    for t in 0..d {
        let v = centroids[cj * d + t];
        let delta = SPLIT_EPS * (v - mu[t]).abs().max(floor);
        let sign = if t % 2 == 0 { 1.0 } else { -1.0 };
        centroids[ci * d + t] = v + sign * delta;
        centroids[cj * d + t] = v - sign * delta;
    }
}

/// A slice shared between rayon tasks that write disjoint ranges of it.
pub(crate) struct SyncSlice<T> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: only used to hand out disjoint `&mut` ranges to different tasks
// (callers of `range` guarantee disjointness); `T: Send` is enough for that.
unsafe impl<T: Send> Sync for SyncSlice<T> {}
unsafe impl<T: Send> Send for SyncSlice<T> {}

impl<T> SyncSlice<T> {
    pub(crate) fn new(s: &mut [T]) -> Self {
        SyncSlice {
            ptr: s.as_mut_ptr(),
            len: s.len(),
        }
    }

    /// # Safety
    /// No two live references returned by `range` may overlap, and the slice
    /// passed to `new` must outlive them and not be used meanwhile.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn range(&self, r: std::ops::Range<usize>) -> &mut [T] {
        assert!(r.start <= r.end && r.end <= self.len);
        std::slice::from_raw_parts_mut(self.ptr.add(r.start), r.end - r.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs(n_per: usize, centers: &[[f32; 2]], seed: u64) -> Vec<f32> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut x = Vec::new();
        for _ in 0..n_per {
            for c in centers {
                x.push(c[0] + rng.random_range(-0.1..0.1));
                x.push(c[1] + rng.random_range(-0.1..0.1));
            }
        }
        x
    }

    #[test]
    fn finds_separated_blobs() {
        let centers = [[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0], [5.0, -5.0]];
        let x = blobs(50, &centers, 3);
        let n = x.len() / 2;
        let r = kmeans(&x, n, 2, &KMeansConfig::new(4).with_seed(1)).unwrap();
        for c in &centers {
            let near = r
                .centroids
                .chunks(2)
                .any(|cc| (cc[0] - c[0]).abs() < 0.1 && (cc[1] - c[1]).abs() < 0.1);
            assert!(near, "no centroid near {c:?}: {:?}", r.centroids);
        }
        assert!(r.objective < 0.01);
    }

    #[test]
    fn empty_clusters_are_repaired() {
        // Only 3 distinct points but k = 5: duplicates force empty clusters.
        let mut x = Vec::new();
        for i in 0..30 {
            let p = (i % 3) as f32;
            x.extend_from_slice(&[p, 2.0 * p]);
        }
        let r = kmeans(&x, 30, 2, &KMeansConfig::new(5).with_seed(7)).unwrap();
        assert!(r.centroids.iter().all(|v| v.is_finite()));
        assert!(r.objective < 1e-3, "objective {}", r.objective);
    }

    #[test]
    fn sample_cap_and_errors() {
        let x = blobs(100, &[[0.0, 0.0], [1.0, 1.0]], 5);
        let mut cfg = KMeansConfig::new(2);
        cfg.max_points_per_centroid = 10;
        let r = kmeans(&x, 200, 2, &cfg).unwrap();
        assert_eq!(r.n_train, 20);
        assert!(kmeans(&x, 200, 2, &KMeansConfig::new(201)).is_err());
        assert!(kmeans(&x, 200, 2, &KMeansConfig::new(0)).is_err());
        assert!(kmeans(&x, 199, 2, &KMeansConfig::new(2)).is_err());
        let mut bad = x.clone();
        bad[2 * 17 + 1] = f32::NAN;
        let e = kmeans(&bad, 200, 2, &KMeansConfig::new(2)).unwrap_err();
        assert!(e.to_string().contains("row 17"), "{e}");
        assert!(e.to_string().contains("dim 1"), "{e}");
    }
}

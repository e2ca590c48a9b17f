//! Product quantization (PQ) and random-subspace PQ (RSPQ).
//!
//! A [`Quantizer`] owns `m` sub-quantizers. Sub-quantizer `j` looks at the
//! dimensions `subspaces[j]` of a vector and replaces them by the index of the
//! nearest of its `k` centroids:
//!
//! - **PQ**: the `d` dims are cut into `m` contiguous blocks of `d / m` dims;
//!   the last block also takes the remainder, so `d` need not be divisible by
//!   `m` (faiss requires it).
//! - **RSPQ**: for each `j` independently, `s` dims (default `d / m`) are
//!   sampled at random without replacement (seeded) and sorted; subsets may
//!   overlap and some dims may be covered by no subset.
//! - [`Quantizer::with_subspaces`] takes explicit subsets; PQ is the special
//!   case of contiguous disjoint blocks and gives identical results.
//!
//! **Decoding** sets each dimension to the mean, over the sub-quantizers that
//! cover it, of their centroid's coordinate; dimensions that no subset covers
//! get the per-dimension training mean.
//!
//! **Token ids**: code `c` of sub-quantizer `j` is token `j * k + c`, so the
//! `m` sub-quantizers own disjoint id ranges `[0, m * k)`.
//!
//! **Reproducibility**: fitting draws the training sample and then one seed per
//! sub-quantizer from `Xoshiro256PlusPlus::seed_from_u64(seed)` before any
//! parallel work, and every parallel reduction has a fixed order, so a seed
//! gives the same centroids and codes whatever the number of rayon threads.
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use rand::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::kernels::{self, Codebook, MatRef};
use super::kmeans::{self, KMeansConfig, LloydOptions};
use crate::error::{MmqError, Result};

/// Rows per parallel task in encode, decode and error computations.
const ROW_BLOCK: usize = 256;
/// Largest supported number of centroids per sub-quantizer.
pub const MAX_K: usize = 65536;
/// Added to the seed for the RSPQ subspace draw, so that the subspaces and the
/// k-means draws use different random streams.
const SUBSPACE_SALT: u64 = 0x5253_5051_5355_4253;

/// Which family a quantizer belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuantizerKind {
    /// Product quantization: contiguous disjoint blocks.
    Pq,
    /// Random-subspace PQ, or any explicit list of subsets.
    Rspq,
}

/// Per-vector transform applied to every input vector before fitting, encoding and
/// measuring error: the centroids live in the transformed space.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transform {
    /// The vectors as given.
    #[default]
    None,
    /// `x / ||x||₂` (a zero vector stays zero): compares directions, as cosine
    /// similarity does (CLIP-style embeddings).
    L2,
    /// Signed square root `sign(x)·sqrt(|x|)`, the power normalization of
    /// Perronnin et al. (2010): damps the few large activations of CNN features.
    Sqrt,
}

impl Transform {
    /// `None`/`"none"`, `"l2"` or `"sqrt"`.
    pub fn parse(name: Option<&str>) -> Result<Self> {
        match name {
            None | Some("none") => Ok(Self::None),
            Some("l2") => Ok(Self::L2),
            Some("sqrt") => Ok(Self::Sqrt),
            Some(other) => Err(MmqError::InvalidParameter(format!(
                "transform must be None, 'l2' or 'sqrt', got {other:?}"
            ))),
        }
    }

    /// Applies the transform to one vector in place.
    pub fn apply_row(self, row: &mut [f32]) {
        match self {
            Self::None => {}
            Self::L2 => {
                let norm = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
                if norm > 0.0 {
                    let inv = (1.0 / norm) as f32;
                    row.iter_mut().for_each(|v| *v *= inv);
                }
            }
            Self::Sqrt => row
                .iter_mut()
                .for_each(|v| *v = v.signum() * v.abs().sqrt()),
        }
    }

    /// `row` as the quantizer sees it: borrowed as is without a transform, else
    /// transformed into `buf`.
    #[inline]
    fn view<'a>(self, row: &'a [f32], buf: &'a mut Vec<f32>) -> &'a [f32] {
        if self == Self::None {
            return row;
        }
        buf.clear();
        buf.extend_from_slice(row);
        self.apply_row(buf);
        buf
    }
}

fn default_tol() -> f64 {
    KMeansConfig::DEFAULT_TOL
}

fn default_mppc() -> usize {
    KMeansConfig::DEFAULT_MAX_POINTS_PER_CENTROID
}

impl QuantizerParams {
    /// The values a format version 1 reader gave the keys added during version 1
    /// (`tol`, `max_points_per_centroid`, `transform`): see [`crate::io::migrate_v1`].
    pub fn v1_defaults() -> serde_json::Value {
        serde_json::json!({
            "tol": default_tol(),
            "max_points_per_centroid": default_mppc(),
            "transform": Transform::default(),
        })
    }
}

/// Everything but the learned arrays: what a model file stores in its header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantizerParams {
    /// PQ or RSPQ.
    pub kind: QuantizerKind,
    /// Input dimension.
    pub d: usize,
    /// Number of sub-quantizers.
    pub m: usize,
    /// Centroids per sub-quantizer (2..=65536).
    pub k: usize,
    /// Largest subspace size (RSPQ: the sampled size; PQ: `d / m` plus the
    /// remainder `d % m` taken by the last block).
    pub s: usize,
    /// Seed of the subspace draw (RSPQ) and of k-means.
    pub seed: u64,
    /// Lloyd iterations per sub-quantizer.
    pub max_iter: usize,
    /// Dimensions of each sub-quantizer, in the order their centroid
    /// coordinates are stored.
    pub subspaces: Vec<Vec<u32>>,
    /// k-means relative-improvement tolerance.
    #[serde(default = "default_tol")]
    pub tol: f64,
    /// k-means training-sample cap per centroid.
    #[serde(default = "default_mppc")]
    pub max_points_per_centroid: usize,
    /// Transform applied to each vector first (files before it: none).
    #[serde(default)]
    pub transform: Transform,
}

/// A PQ or RSPQ quantizer; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Quantizer {
    params: QuantizerParams,
    /// `Some(first dim)` when subspace `j` is a run of consecutive dims, which
    /// encode reads in place (strided GEMM) instead of gathering.
    contiguous: Vec<Option<usize>>,
    /// `1 / (number of subspaces covering dim t)`, 0 for uncovered dims.
    inv_cover: Vec<f32>,
    /// True when every dim is covered exactly once (decode writes directly).
    exact_cover: bool,
    /// Per sub-quantizer, `k × s_j` centroids (empty until fitted).
    centroids: Vec<Vec<f32>>,
    /// Per sub-quantizer, the centroids in the GEMM layout.
    books: Vec<Codebook>,
    /// Per-dim training mean (empty until fitted).
    mean: Vec<f32>,
}

fn check_k(k: usize) -> Result<()> {
    if !(2..=MAX_K).contains(&k) {
        return Err(MmqError::InvalidParameter(format!(
            "k must be in 2..={MAX_K} centroids per sub-quantizer, got {k}"
        )));
    }
    Ok(())
}

fn check_d_m(d: usize, m: usize) -> Result<()> {
    if d == 0 {
        return Err(MmqError::InvalidParameter(
            "dimension d must be >= 1, got 0".into(),
        ));
    }
    if m == 0 {
        return Err(MmqError::InvalidParameter(
            "number of sub-quantizers m must be >= 1, got 0".into(),
        ));
    }
    if m > d {
        return Err(MmqError::InvalidParameter(format!(
            "number of sub-quantizers m must be <= d = {d}, got m = {m}"
        )));
    }
    Ok(())
}

/// The PQ blocks: `m` runs of `d / m` dims, the last one longer by `d % m`.
fn pq_blocks(d: usize, m: usize) -> Vec<Vec<u32>> {
    let base = d / m;
    (0..m)
        .map(|j| {
            let end = if j + 1 == m { d } else { (j + 1) * base };
            (j * base..end).map(|t| t as u32).collect()
        })
        .collect()
}

impl Quantizer {
    /// Product quantizer: `m` contiguous blocks of `d / m` dims (the last one
    /// takes the remainder), `k` centroids each. Not fitted.
    pub fn pq(d: usize, m: usize, k: usize, seed: u64) -> Result<Self> {
        check_d_m(d, m)?;
        check_k(k)?;
        let subspaces = pq_blocks(d, m);
        Self::build(QuantizerKind::Pq, d, k, subspaces, seed)
    }

    /// Random-subspace quantizer: for each of the `m` sub-quantizers, `s`
    /// dims (default `d / m`) drawn without replacement from `0..d`, sorted,
    /// independently of the other sub-quantizers. Not fitted.
    pub fn rspq(d: usize, m: usize, s: Option<usize>, k: usize, seed: u64) -> Result<Self> {
        check_d_m(d, m)?;
        check_k(k)?;
        let s = s.unwrap_or(d / m);
        if s == 0 || s > d {
            return Err(MmqError::InvalidParameter(format!(
                "subspace size s must be in 1..={d} (the dimension), got {s}"
            )));
        }
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed.wrapping_add(SUBSPACE_SALT));
        let subspaces = (0..m)
            .map(|_| {
                let mut dims: Vec<u32> = rand::seq::index::sample(&mut rng, d, s)
                    .into_iter()
                    .map(|t| t as u32)
                    .collect();
                dims.sort_unstable();
                dims
            })
            .collect();
        Self::build(QuantizerKind::Rspq, d, k, subspaces, seed)
    }

    /// A quantizer over explicit subsets of `0..d` (one per sub-quantizer, no
    /// repeated dim inside a subset; subsets may overlap). Kind is
    /// [`QuantizerKind::Rspq`]; with contiguous disjoint blocks it behaves
    /// exactly like [`Quantizer::pq`] with the same seed.
    pub fn with_subspaces(d: usize, k: usize, subspaces: Vec<Vec<u32>>, seed: u64) -> Result<Self> {
        if d == 0 {
            return Err(MmqError::InvalidParameter(
                "dimension d must be >= 1, got 0".into(),
            ));
        }
        check_k(k)?;
        Self::build(QuantizerKind::Rspq, d, k, subspaces, seed)
    }

    fn build(
        kind: QuantizerKind,
        d: usize,
        k: usize,
        subspaces: Vec<Vec<u32>>,
        seed: u64,
    ) -> Result<Self> {
        let m = subspaces.len();
        if m == 0 {
            return Err(MmqError::InvalidParameter(
                "expected at least 1 subspace, got 0".into(),
            ));
        }
        if (m as u64) * (k as u64) > u32::MAX as u64 + 1 {
            return Err(MmqError::InvalidParameter(format!(
                "m * k must fit the u32 token ids (<= 2^32), got m = {m}, k = {k}"
            )));
        }
        let mut seen = vec![usize::MAX; d];
        for (j, dims) in subspaces.iter().enumerate() {
            if dims.is_empty() {
                return Err(MmqError::InvalidParameter(format!(
                    "subspace {j} is empty; expected at least 1 dim"
                )));
            }
            for &t in dims {
                let t = t as usize;
                if t >= d {
                    return Err(MmqError::InvalidParameter(format!(
                        "subspace {j} has dim {t}, expected dims in 0..{d}"
                    )));
                }
                if seen[t] == j {
                    return Err(MmqError::InvalidParameter(format!(
                        "subspace {j} lists dim {t} twice; expected distinct dims"
                    )));
                }
                seen[t] = j;
            }
        }
        if kind == QuantizerKind::Pq {
            let expected = pq_blocks(d, m);
            if subspaces != expected {
                return Err(MmqError::InvalidParameter(format!(
                    "kind pq expects {m} contiguous blocks of {} dims (last takes the \
                     remainder); got other subspaces",
                    d / m
                )));
            }
        }
        let s = subspaces.iter().map(Vec::len).max().unwrap_or(0);
        let contiguous = subspaces
            .iter()
            .map(|dims| {
                let start = dims[0] as usize;
                dims.iter()
                    .enumerate()
                    .all(|(i, &t)| t as usize == start + i)
                    .then_some(start)
            })
            .collect();
        let mut cover = vec![0u32; d];
        for dims in &subspaces {
            for &t in dims {
                cover[t as usize] += 1;
            }
        }
        let exact_cover = cover.iter().all(|&c| c == 1);
        let inv_cover = cover
            .iter()
            .map(|&c| if c == 0 { 0.0 } else { 1.0 / c as f32 })
            .collect();
        Ok(Quantizer {
            params: QuantizerParams {
                kind,
                d,
                m,
                k,
                s,
                seed,
                max_iter: KMeansConfig::DEFAULT_MAX_ITER,
                subspaces,
                tol: KMeansConfig::DEFAULT_TOL,
                max_points_per_centroid: KMeansConfig::DEFAULT_MAX_POINTS_PER_CENTROID,
                transform: Transform::None,
            },
            contiguous,
            inv_cover,
            exact_cover,
            centroids: Vec::new(),
            books: Vec::new(),
            mean: Vec::new(),
        })
    }

    /// Rebuilds a fitted quantizer from its parameters, the concatenated
    /// centroids ([`Quantizer::centroids_flat`]) and the training mean.
    /// Every length and value is checked.
    pub fn from_parts(
        params: QuantizerParams,
        centroids_flat: Vec<f32>,
        mean: Vec<f32>,
    ) -> Result<Self> {
        if params.d == 0 {
            return Err(MmqError::InvalidParameter(
                "dimension d must be >= 1, got 0".into(),
            ));
        }
        check_k(params.k)?;
        if params.m != params.subspaces.len() {
            return Err(MmqError::InvalidParameter(format!(
                "m = {} but {} subspaces are listed",
                params.m,
                params.subspaces.len()
            )));
        }
        kmeans::validate_tol(params.tol)?;
        kmeans::validate_mppc(params.max_points_per_centroid)?;
        let mut q = Self::build(
            params.kind,
            params.d,
            params.k,
            params.subspaces.clone(),
            params.seed,
        )?;
        if q.params.s != params.s {
            return Err(MmqError::InvalidParameter(format!(
                "s = {} but the largest subspace has {} dims",
                params.s, q.params.s
            )));
        }
        q.params.max_iter = params.max_iter;
        q.params.tol = params.tol;
        q.params.max_points_per_centroid = params.max_points_per_centroid;
        q.params.transform = params.transform;
        let expected: usize = q
            .params
            .subspaces
            .iter()
            .map(|s| s.len() * q.params.k)
            .sum();
        if centroids_flat.len() != expected {
            return Err(MmqError::InvalidInput(format!(
                "expected {expected} centroid values (k * sum of subspace sizes), got {}",
                centroids_flat.len()
            )));
        }
        if mean.len() != q.params.d {
            return Err(MmqError::InvalidInput(format!(
                "expected a mean of dimension {}, got {}",
                q.params.d,
                mean.len()
            )));
        }
        if let Some(p) = centroids_flat.iter().position(|v| !v.is_finite()) {
            return Err(MmqError::InvalidInput(format!(
                "centroid value {p} is NaN or inf; expected finite values"
            )));
        }
        if let Some(p) = mean.iter().position(|v| !v.is_finite()) {
            return Err(MmqError::InvalidInput(format!(
                "mean has NaN or inf at dim {p}; expected finite values"
            )));
        }
        let mut cents = Vec::with_capacity(q.params.m);
        let mut off = 0;
        for dims in &q.params.subspaces {
            let len = dims.len() * q.params.k;
            cents.push(centroids_flat[off..off + len].to_vec());
            off += len;
        }
        q.set_fitted(cents, mean);
        Ok(q)
    }

    fn set_fitted(&mut self, centroids: Vec<Vec<f32>>, mean: Vec<f32>) {
        self.books = centroids
            .iter()
            .zip(&self.params.subspaces)
            .map(|(c, dims)| {
                let mu: Vec<f32> = dims.iter().map(|&t| mean[t as usize]).collect();
                Codebook::new(c, self.params.k, dims.len(), &mu)
            })
            .collect();
        self.centroids = centroids;
        self.mean = mean;
    }

    // ----- configuration -------------------------------------------------

    /// Lloyd iterations per sub-quantizer (default 25).
    pub fn set_max_iter(&mut self, max_iter: usize) {
        self.params.max_iter = max_iter;
    }

    /// k-means relative-improvement tolerance (default 1e-4, 0 disables).
    pub fn set_tol(&mut self, tol: f64) -> Result<()> {
        kmeans::validate_tol(tol)?;
        self.params.tol = tol;
        Ok(())
    }

    /// Transform applied to every vector before fitting and encoding. Changing it
    /// on a fitted quantizer is an error (its centroids belong to the old space).
    pub fn set_transform(&mut self, t: Transform) -> Result<()> {
        if self.is_fitted() && t != self.params.transform {
            return Err(MmqError::InvalidParameter(
                "cannot change the transform of a fitted quantizer".into(),
            ));
        }
        self.params.transform = t;
        Ok(())
    }

    /// The transform applied to every vector first.
    pub fn transform(&self) -> Transform {
        self.params.transform
    }

    /// k-means training-sample cap per centroid (default 256).
    pub fn set_max_points_per_centroid(&mut self, mppc: usize) -> Result<()> {
        kmeans::validate_mppc(mppc)?;
        self.params.max_points_per_centroid = mppc;
        Ok(())
    }

    // ----- accessors -------------------------------------------------------

    /// The parameters (serializable with serde).
    pub fn params(&self) -> &QuantizerParams {
        &self.params
    }
    /// PQ or RSPQ.
    pub fn kind(&self) -> QuantizerKind {
        self.params.kind
    }
    /// Input dimension.
    pub fn d(&self) -> usize {
        self.params.d
    }
    /// Number of sub-quantizers (codes per vector).
    pub fn m(&self) -> usize {
        self.params.m
    }
    /// Centroids per sub-quantizer.
    pub fn k(&self) -> usize {
        self.params.k
    }
    /// Largest subspace size.
    pub fn s(&self) -> usize {
        self.params.s
    }
    /// Seed.
    pub fn seed(&self) -> u64 {
        self.params.seed
    }
    /// Lloyd iterations per sub-quantizer.
    pub fn max_iter(&self) -> usize {
        self.params.max_iter
    }
    /// The dims of each sub-quantizer.
    pub fn subspaces(&self) -> &[Vec<u32>] {
        &self.params.subspaces
    }
    /// Number of distinct token ids, `m * k`.
    pub fn num_tokens(&self) -> usize {
        self.params.m * self.params.k
    }
    /// Whether [`fit`](Self::fit) (or [`from_parts`](Self::from_parts)) ran.
    pub fn is_fitted(&self) -> bool {
        !self.centroids.is_empty()
    }
    /// Centroids of sub-quantizer `j`: `k × s_j`, row-major; empty before
    /// fitting. Panics if `j >= m`.
    pub fn sub_centroids(&self, j: usize) -> &[f32] {
        assert!(
            j < self.params.m,
            "sub-quantizer {j} out of range 0..{}",
            self.params.m
        );
        self.centroids.get(j).map_or(&[], |c| &c[..])
    }
    /// All centroids, sub-quantizer after sub-quantizer (empty before
    /// fitting); the layout [`from_parts`](Self::from_parts) takes.
    pub fn centroids_flat(&self) -> Vec<f32> {
        self.centroids.concat()
    }
    /// Per-dim training mean (empty before fitting).
    pub fn mean(&self) -> &[f32] {
        &self.mean
    }

    fn require_fitted(&self, what: &str) -> Result<()> {
        if self.is_fitted() {
            Ok(())
        } else {
            Err(MmqError::NotFitted(format!(
                "{what} needs a fitted quantizer; call fit first"
            )))
        }
    }

    /// Checks that `x` holds `n` rows of dimension `d`; `n == 0` is an error
    /// unless `allow_empty` (an empty batch encodes to no codes).
    fn check_rows(&self, x: &[f32], n: usize, allow_empty: bool) -> Result<()> {
        let d = self.params.d;
        if n == 0 {
            if allow_empty && x.is_empty() {
                return Ok(());
            }
            return Err(MmqError::InvalidInput(format!(
                "empty input: expected at least 1 row, got 0 rows ({} values)",
                x.len()
            )));
        }
        if n.checked_mul(d) != Some(x.len()) {
            if x.len().is_multiple_of(n) {
                return Err(MmqError::InvalidInput(format!(
                    "expected dimension {d}, got {} ({} values for {n} rows)",
                    x.len() / n,
                    x.len()
                )));
            }
            return Err(MmqError::InvalidInput(format!(
                "expected {n} rows x {d} dims = {} values, got {} values",
                n.saturating_mul(d),
                x.len()
            )));
        }
        Ok(())
    }

    // ----- training --------------------------------------------------------

    /// Trains the `m` k-means (in parallel) on the row-major `n × d` matrix
    /// `x`. At most `max_points_per_centroid * k` rows are used (a seeded
    /// sample shared by all sub-quantizers); the mean is over all `n` rows.
    pub fn fit(&mut self, x: &[f32], n: usize) -> Result<()> {
        self.fit_with_progress(x, n, &|_| true)
    }

    /// [`fit`](Self::fit) that calls `progress(done)` each time a
    /// sub-quantizer finishes (`done` counts up to `m`; calls are serialized
    /// but may come from any rayon thread, hence `Sync`). Returning `false`
    /// stops the work and returns [`MmqError::Interrupted`]; the quantizer is
    /// then left as it was.
    pub fn fit_with_progress(
        &mut self,
        x: &[f32],
        n: usize,
        progress: &(dyn Fn(usize) -> bool + Sync),
    ) -> Result<()> {
        let p = &self.params;
        let (d, k, m) = (p.d, p.k, p.m);
        self.check_rows(x, n, false)?;
        if k > n {
            return Err(MmqError::InvalidInput(format!(
                "k = {k} centroids need at least {k} training rows, got {n}"
            )));
        }
        kmeans::validate_matrix(x, n, d)?;
        let mean = column_mean(x, n, d, p.transform);

        let mut rng = Xoshiro256PlusPlus::seed_from_u64(p.seed);
        let sample = kmeans::sample_rows(&mut rng, n, k, p.max_points_per_centroid);
        let seeds: Vec<u64> = (0..m).map(|_| rng.next_u64()).collect();
        let rows: Vec<usize> = sample.unwrap_or_else(|| (0..n).collect());
        // With a transform, k-means reads a transformed copy of the sampled rows only.
        let sampled: Vec<f32>;
        let (x, rows) = if p.transform == Transform::None {
            (x, rows)
        } else {
            let mut v = Vec::with_capacity(rows.len() * d);
            for &r in &rows {
                let at = v.len();
                v.extend_from_slice(&x[r * d..(r + 1) * d]);
                p.transform.apply_row(&mut v[at..]);
            }
            sampled = v;
            (&sampled[..], (0..rows.len()).collect())
        };
        let n_train = rows.len();
        let inner_parallel = m < rayon::current_num_threads();
        let stop = AtomicBool::new(false);
        let done = Mutex::new(0usize);

        let results: Vec<Result<Vec<f32>>> = (0..m)
            .into_par_iter()
            .map(|j| {
                if stop.load(Ordering::Relaxed) {
                    return Err(MmqError::Interrupted);
                }
                let dims = &p.subspaces[j];
                let s = dims.len();
                let mut data = Vec::with_capacity(n_train * s);
                match self.contiguous[j] {
                    Some(start) => {
                        for &r in &rows {
                            data.extend_from_slice(&x[r * d + start..r * d + start + s]);
                        }
                    }
                    None => {
                        for &r in &rows {
                            let row = &x[r * d..(r + 1) * d];
                            data.extend(dims.iter().map(|&t| row[t as usize]));
                        }
                    }
                }
                let opts = LloydOptions {
                    k,
                    max_iter: p.max_iter,
                    tol: p.tol,
                    seed: seeds[j],
                    parallel: inner_parallel,
                };
                let res = kmeans::train(&data, n_train, s, &opts, Some(&stop))?;
                let mut count = done.lock().unwrap_or_else(|e| e.into_inner());
                *count += 1;
                if !progress(*count) {
                    stop.store(true, Ordering::Relaxed);
                    return Err(MmqError::Interrupted);
                }
                Ok(res.centroids)
            })
            .collect();
        if stop.load(Ordering::Relaxed) {
            return Err(MmqError::Interrupted);
        }
        let centroids = results.into_iter().collect::<Result<Vec<_>>>()?;
        self.set_fitted(centroids, mean);
        Ok(())
    }

    // ----- encoding --------------------------------------------------------

    /// Encodes the row-major `n × d` matrix `x` into `out` (`n × m` codes,
    /// row-major), in parallel over blocks of rows. Needs `k <= 256`.
    ///
    /// Errors: not fitted, `x` not `n × d`, `out` not `n × m`, a NaN or inf
    /// value (the first bad row and dim are named). `n = 0` (an empty batch)
    /// is fine.
    pub fn encode_u8(&self, x: &[f32], n: usize, out: &mut [u8]) -> Result<()> {
        if self.params.k > 256 {
            return Err(MmqError::InvalidParameter(format!(
                "encode_u8 needs k <= 256, the quantizer has k = {}; use encode_u16",
                self.params.k
            )));
        }
        self.encode_into(x, n, out, |c| c as u8)
    }

    /// [`encode_u8`](Self::encode_u8) for every `k <= 65536`.
    pub fn encode_u16(&self, x: &[f32], n: usize, out: &mut [u16]) -> Result<()> {
        self.encode_into(x, n, out, |c| c as u16)
    }

    /// Allocating form of [`encode_u16`](Self::encode_u16).
    pub fn encode(&self, x: &[f32], n: usize) -> Result<Vec<u16>> {
        let mut out = vec![0u16; n.saturating_mul(self.params.m)];
        self.encode_u16(x, n, &mut out)?;
        Ok(out)
    }

    fn encode_into<T: Copy + Send + Sync>(
        &self,
        x: &[f32],
        n: usize,
        out: &mut [T],
        conv: impl Fn(u32) -> T + Sync,
    ) -> Result<()> {
        self.require_fitted("encode")?;
        self.check_rows(x, n, true)?;
        let (d, m) = (self.params.d, self.params.m);
        if out.len() != n * m {
            return Err(MmqError::InvalidInput(format!(
                "expected an output buffer of n * m = {n} * {m} = {} codes, got {}",
                n * m,
                out.len()
            )));
        }
        // Smallest flat index of a non-finite value, found block by block
        // while the block is in cache.
        let bad = AtomicUsize::new(usize::MAX);
        out.par_chunks_mut(ROW_BLOCK * m).enumerate().for_each_init(
            EncodeScratch::default,
            |scr, (b, ob)| {
                let r0 = b * ROW_BLOCK;
                let rows = ob.len() / m;
                let xb = &x[r0 * d..(r0 + rows) * d];
                if !kernels::all_finite(xb) {
                    if let Some(p) = xb.iter().position(|v| !v.is_finite()) {
                        bad.fetch_min(r0 * d + p, Ordering::Relaxed);
                    }
                    return;
                }
                if self.params.transform == Transform::None {
                    self.encode_block(xb, rows, scr);
                } else {
                    let mut pre = std::mem::take(&mut scr.pre);
                    pre.clear();
                    pre.extend_from_slice(xb);
                    pre.chunks_exact_mut(d)
                        .for_each(|r| self.params.transform.apply_row(r));
                    self.encode_block(&pre, rows, scr);
                    scr.pre = pre;
                }
                for (r, orow) in ob.chunks_exact_mut(m).enumerate() {
                    for (j, o) in orow.iter_mut().enumerate() {
                        *o = conv(scr.codes[j * ROW_BLOCK + r]);
                    }
                }
            },
        );
        let bad = bad.into_inner();
        if bad != usize::MAX {
            return Err(kmeans::non_finite_error(bad / d, bad % d, x[bad]));
        }
        Ok(())
    }

    /// Codes of the `rows` rows of `xb` into `scr.codes[j * ROW_BLOCK + r]`.
    fn encode_block(&self, xb: &[f32], rows: usize, scr: &mut EncodeScratch) {
        let d = self.params.d;
        scr.codes.resize(self.params.m * ROW_BLOCK, 0);
        scr.val.resize(ROW_BLOCK, 0.0);
        for (j, dims) in self.params.subspaces.iter().enumerate() {
            let s = dims.len();
            let a = match self.contiguous[j] {
                Some(start) => MatRef::new(xb, start, rows, s, d, 1),
                None => {
                    // Column-major gather: `sgemm` then packs it with
                    // contiguous copies.
                    scr.gather.resize(rows * s, 0.0);
                    let g = &mut scr.gather[..rows * s];
                    for (gcol, &dim) in g.chunks_exact_mut(rows).zip(dims) {
                        for (o, row) in gcol.iter_mut().zip(xb.chunks_exact(d)) {
                            *o = row[dim as usize];
                        }
                    }
                    MatRef::new(g, 0, rows, s, 1, rows)
                }
            };
            let codes = &mut scr.codes[j * ROW_BLOCK..j * ROW_BLOCK + rows];
            kernels::nearest(
                a,
                &self.books[j],
                &mut scr.dots,
                codes,
                &mut scr.val[..rows],
            );
        }
    }

    // ----- decoding --------------------------------------------------------

    /// Reconstructs `n` vectors (row-major `n × d`) from `n × m` codes: each
    /// dim is the mean of the covering sub-quantizers' centroid coordinates,
    /// uncovered dims are the training mean. With a [`Transform`] the
    /// reconstructions are of the transformed vectors.
    pub fn decode<T: Copy + Into<usize> + Sync>(&self, codes: &[T], n: usize) -> Result<Vec<f32>> {
        let mut out = vec![0f32; n.saturating_mul(self.params.d)];
        self.decode_into(codes, n, &mut out)?;
        Ok(out)
    }

    /// [`decode`](Self::decode) into a caller buffer of `n * d` floats.
    pub fn decode_into<T: Copy + Into<usize> + Sync>(
        &self,
        codes: &[T],
        n: usize,
        out: &mut [f32],
    ) -> Result<()> {
        self.require_fitted("decode")?;
        self.check_codes(codes, Some(n))?;
        let d = self.params.d;
        let m = self.params.m;
        if out.len() != n * d {
            return Err(MmqError::InvalidInput(format!(
                "expected an output buffer of n * d = {n} * {d} = {} floats, got {}",
                n * d,
                out.len()
            )));
        }
        out.par_chunks_mut(ROW_BLOCK * d)
            .zip(codes.par_chunks(ROW_BLOCK * m))
            .for_each(|(ob, cb)| {
                for (orow, crow) in ob.chunks_exact_mut(d).zip(cb.chunks_exact(m)) {
                    self.decode_row(crow, orow);
                }
            });
        Ok(())
    }

    /// Decodes one row of (already validated) codes.
    fn decode_row<T: Copy + Into<usize>>(&self, codes: &[T], out: &mut [f32]) {
        let k_codes = codes.iter().map(|&c| c.into());
        if self.exact_cover {
            for ((j, c), dims) in k_codes.enumerate().zip(&self.params.subspaces) {
                let s = dims.len();
                let cen = &self.centroids[j][c * s..(c + 1) * s];
                match self.contiguous[j] {
                    Some(start) => out[start..start + s].copy_from_slice(cen),
                    None => {
                        for (&t, &v) in dims.iter().zip(cen) {
                            out[t as usize] = v;
                        }
                    }
                }
            }
            return;
        }
        for ((o, &mu), &inv) in out.iter_mut().zip(&self.mean).zip(&self.inv_cover) {
            *o = if inv == 0.0 { mu } else { 0.0 };
        }
        for ((j, c), dims) in k_codes.enumerate().zip(&self.params.subspaces) {
            let s = dims.len();
            let cen = &self.centroids[j][c * s..(c + 1) * s];
            for (&t, &v) in dims.iter().zip(cen) {
                out[t as usize] += v;
            }
        }
        for (o, &inv) in out.iter_mut().zip(&self.inv_cover) {
            if inv != 0.0 {
                *o *= inv;
            }
        }
    }

    /// Checks the length (`n * m` when `n` is given, a multiple of `m`
    /// otherwise) and that every code is `< k`.
    fn check_codes<T: Copy + Into<usize> + Sync>(
        &self,
        codes: &[T],
        n: Option<usize>,
    ) -> Result<()> {
        let m = self.params.m;
        let k = self.params.k;
        match n {
            Some(n) if n.checked_mul(m) != Some(codes.len()) => {
                return Err(MmqError::InvalidInput(format!(
                    "expected n * m = {n} * {m} = {} codes, got {}",
                    n.saturating_mul(m),
                    codes.len()
                )));
            }
            None if !codes.len().is_multiple_of(m) => {
                return Err(MmqError::InvalidInput(format!(
                    "expected a multiple of m = {m} codes, got {}",
                    codes.len()
                )));
            }
            _ => {}
        }
        if let Some(p) = codes.par_iter().position_first(|&c| c.into() >= k) {
            let c: usize = codes[p].into();
            return Err(MmqError::InvalidInput(format!(
                "code {c} at row {}, sub-quantizer {} is out of range; expected codes < k = {k}",
                p / m,
                p % m
            )));
        }
        Ok(())
    }

    /// Token ids of `n × m` codes (row-major): code `c` of sub-quantizer `j`
    /// becomes `j * k + c`.
    pub fn token_ids<T: Copy + Into<usize> + Sync>(&self, codes: &[T]) -> Result<Vec<u32>> {
        self.check_codes(codes, None)?;
        let m = self.params.m;
        let k = self.params.k;
        let mut out = vec![0u32; codes.len()];
        out.par_chunks_mut(ROW_BLOCK * m)
            .zip(codes.par_chunks(ROW_BLOCK * m))
            .for_each(|(o, c)| {
                for (i, (o, &c)) in o.iter_mut().zip(c).enumerate() {
                    *o = ((i % m) * k + c.into()) as u32;
                }
            });
        Ok(out)
    }

    /// Mean over the `n` rows of the squared reconstruction error
    /// `||t(x_i) - decode(encode(x_i))||²` (summed over the `d` dims, not
    /// divided by `d`), accumulated in f64; `t` is the quantizer's
    /// [`Transform`], so the error is measured where the centroids live.
    pub fn quantization_error(&self, x: &[f32], n: usize) -> Result<f64> {
        self.require_fitted("quantization_error")?;
        self.check_rows(x, n, false)?;
        let codes = self.encode(x, n)?;
        let d = self.params.d;
        let t = self.params.transform;
        let m = self.params.m;
        let partial: Vec<f64> = x
            .par_chunks(ROW_BLOCK * d)
            .zip(codes.par_chunks(ROW_BLOCK * m))
            .map(|(xb, cb)| {
                let mut rec = vec![0f32; d];
                let mut buf = Vec::with_capacity(d);
                let mut sum = 0f64;
                for (xr, cr) in xb.chunks_exact(d).zip(cb.chunks_exact(m)) {
                    let xr = t.view(xr, &mut buf);
                    self.decode_row(cr, &mut rec);
                    sum += xr
                        .iter()
                        .zip(&rec)
                        .map(|(&a, &b)| {
                            let t = a as f64 - b as f64;
                            t * t
                        })
                        .sum::<f64>();
                }
                sum
            })
            .collect();
        Ok(partial.iter().sum::<f64>() / n as f64)
    }
}

#[derive(Default)]
struct EncodeScratch {
    /// The block after the transform (unused without one).
    pre: Vec<f32>,
    gather: Vec<f32>,
    dots: Vec<f32>,
    codes: Vec<u32>,
    val: Vec<f32>,
}

/// Per-dim mean of the row-major `n × d` matrix after the transform `t`, f64 sums
/// over fixed blocks added in block order.
fn column_mean(x: &[f32], n: usize, d: usize, t: Transform) -> Vec<f32> {
    let partial: Vec<Vec<f64>> = x
        .par_chunks(ROW_BLOCK * 4 * d)
        .map(|xb| {
            let mut s = vec![0f64; d];
            let mut buf = Vec::with_capacity(d);
            for row in xb.chunks_exact(d) {
                let row = t.view(row, &mut buf);
                for (a, &v) in s.iter_mut().zip(row) {
                    *a += v as f64;
                }
            }
            s
        })
        .collect();
    let mut total = vec![0f64; d];
    for p in &partial {
        for (t, v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    total.iter().map(|&v| (v / n as f64) as f32).collect()
}

//! The inner loops of prediction: dot products and matrix × vector scores.
//!
//! A plain `iter().zip().map().sum()` of f32 is one serial chain of additions (each waits
//! for the previous one, ~4 cycles), which the compiler may not reorder. These kernels
//! keep 16 independent partial sums, which the compiler maps onto SIMD registers: SSE2
//! everywhere on x86-64 (and NEON on AArch64), and AVX2 + FMA or AVX-512 when the CPU
//! has them, picked once at run time (`is_x86_feature_detected!` caches its answer). The
//! portable code is the same function; only the instruction set it is compiled for
//! differs. Sums are therefore in a fixed order for a given CPU feature level.

const LANES: usize = 16;

#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    // Pairwise reduction of the lanes.
    let mut w = LANES;
    while w > 1 {
        w /= 2;
        for i in 0..w {
            acc[i] += acc[i + w];
        }
    }
    acc[0] + tail
}

#[inline(always)]
fn matvec_lanes(m: &[f32], cols: usize, v: &[f32], out: &mut [f32]) {
    debug_assert_eq!(m.len(), cols * out.len());
    for (o, row) in out.iter_mut().zip(m.chunks_exact(cols)) {
        *o = dot_lanes(row, v);
    }
}

/// Rows scored together by [`scores_block`].
pub const BLOCK: usize = 16;

/// Scores of many labels for a block of [`BLOCK`] rows at once: `w` is row-major
/// (labels × `dim`), `ht` the block's hidden vectors transposed (`dim` × BLOCK, rows
/// past the block's end zero), and `out[l · BLOCK + j]` becomes `w[l] · h_j`. Each
/// weight is read once for the whole block and multiplies a vector of BLOCK rows, so
/// there is no horizontal sum: a small GEMM, the layout that keeps dim 50 fast.
#[inline(always)]
fn scores_block_lanes(w: &[f32], dim: usize, ht: &[f32], out: &mut [f32]) {
    debug_assert_eq!(ht.len(), dim * BLOCK);
    debug_assert_eq!(out.len(), w.len() / dim * BLOCK);
    for (row, o) in w.chunks_exact(dim).zip(out.chunks_exact_mut(BLOCK)) {
        let mut acc = [0.0f32; BLOCK];
        for (&c, h) in row.iter().zip(ht.chunks_exact(BLOCK)) {
            for j in 0..BLOCK {
                acc[j] += c * h[j];
            }
        }
        o.copy_from_slice(&acc);
    }
}

/// The widest SIMD level this CPU has: 2 = AVX-512F, 1 = AVX2 + FMA, 0 = the baseline.
#[inline]
fn level() -> u8 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return 2;
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return 1;
        }
    }
    0
}

/// `pub fn $name(args)`: runs `$lanes(args)` compiled for the widest SIMD level of this
/// CPU (a copy for AVX-512F and one for AVX2 + FMA on x86-64; the baseline otherwise).
macro_rules! dispatched {
    ($(#[$doc:meta])* pub fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? => $lanes:ident) => {
        $(#[$doc])*
        #[inline]
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn wide($($arg: $ty),*) $(-> $ret)? {
                    $lanes($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn mid($($arg: $ty),*) $(-> $ret)? {
                    $lanes($($arg),*)
                }
                // SAFETY: each copy runs only on a CPU that has the features it was
                // compiled for.
                match level() {
                    2 => return unsafe { wide($($arg),*) },
                    1 => return unsafe { mid($($arg),*) },
                    _ => {}
                }
            }
            $lanes($($arg),*)
        }
    };
}

dispatched! {
    /// `a · b` over the shorter of the two.
    pub fn dot(a: &[f32], b: &[f32]) -> f32 => dot_lanes
}

dispatched! {
    /// `out[r] = m[r] · v` for every row `r` of the row-major matrix `m` (`cols` columns);
    /// `out` has one entry per row.
    pub fn matvec(m: &[f32], cols: usize, v: &[f32], out: &mut [f32]) => matvec_lanes
}

dispatched! {
    /// See [`scores_block_lanes`]: `out` holds BLOCK entries per row of `w`.
    pub fn scores_block(w: &[f32], dim: usize, ht: &[f32], out: &mut [f32]) => scores_block_lanes
}

/// How many embedding rows ahead training and prediction [`prefetch`].
pub const PREFETCH_AHEAD: usize = 4;

/// Asks the CPU to start loading `s` into the cache (a hint: no effect on any value).
/// Used a few embedding rows ahead of where training and prediction read, since those
/// rows lie at random places of a matrix far larger than the cache.
#[inline]
pub fn prefetch<T>(s: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let step = (64 / std::mem::size_of::<T>().max(1)).max(1);
        for line in s.chunks(step) {
            // SAFETY: a prefetch never faults and changes no value; SSE is part of x86-64.
            #[allow(unused_unsafe)]
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(line.as_ptr() as *const i8)
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = s;
}

/// `ln σ(x)`, stable for every `x` (`-softplus(-x)`).
#[inline]
pub fn log_sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        -(-x).exp().ln_1p()
    } else {
        x - x.exp().ln_1p()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_agree_with_a_serial_sum() {
        let mut s = 7u64;
        let mut r = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        for n in [0, 1, 5, 15, 16, 17, 50, 100, 333] {
            let a: Vec<f32> = (0..n).map(|_| r()).collect();
            let b: Vec<f32> = (0..n).map(|_| r()).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| (x * y) as f64).sum();
            assert!((dot(&a, &b) as f64 - want).abs() < 1e-5, "n={n}");
            assert!((dot_lanes(&a, &b) as f64 - want).abs() < 1e-5, "n={n}");
            if n > 0 {
                let rows = 7;
                let m: Vec<f32> = (0..rows * n).map(|_| r()).collect();
                let mut out = vec![0.0; rows];
                matvec(&m, n, &a, &mut out);
                for (i, o) in out.iter().enumerate() {
                    let want: f64 = m[i * n..(i + 1) * n]
                        .iter()
                        .zip(&a)
                        .map(|(x, y)| (x * y) as f64)
                        .sum();
                    assert!((*o as f64 - want).abs() < 1e-5);
                }
            }
        }
    }

    #[test]
    fn block_scores_equal_row_dots() {
        let (dim, labels) = (13, 37);
        let w: Vec<f32> = (0..dim * labels).map(|i| (i as f32 * 0.37).sin()).collect();
        let h: Vec<Vec<f32>> = (0..BLOCK)
            .map(|j| {
                (0..dim)
                    .map(|d| ((j * dim + d) as f32 * 0.11).cos())
                    .collect()
            })
            .collect();
        let mut ht = vec![0.0; dim * BLOCK];
        for (j, hj) in h.iter().enumerate() {
            for d in 0..dim {
                ht[d * BLOCK + j] = hj[d];
            }
        }
        let mut out = vec![0.0; labels * BLOCK];
        scores_block(&w, dim, &ht, &mut out);
        for l in 0..labels {
            for (j, hj) in h.iter().enumerate() {
                let want = dot(&w[l * dim..(l + 1) * dim], hj);
                assert!((out[l * BLOCK + j] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn log_sigmoid_is_stable() {
        for x in [-200.0f32, -30.0, -1.0, 0.0, 0.5, 30.0, 200.0] {
            let want = -(1.0 + (-(x as f64)).exp()).ln();
            assert!((log_sigmoid(x) as f64 - want).abs() < 1e-6, "{x}");
            assert!(log_sigmoid(x).is_finite());
        }
    }
}

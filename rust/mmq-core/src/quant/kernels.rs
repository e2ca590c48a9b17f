//! Inner loops shared by k-means and the quantizers.
//!
//! The nearest-centroid search is a distance GEMM: for a block of rows `A`
//! (rows × s) and centroids `C` (k × s), `||a - c||^2 = ||a||^2 - 2 a·c + ||c||^2`.
//! `-2 A·Cᵀ` comes from `matrixmultiply::sgemm` (which picks an AVX-512/FMA/AVX
//! kernel at run time), the precomputed `||c||^2` is added and the argmin taken
//! in one pass. `||a||^2` does not change the argmin and is only added when a
//! caller needs the distance itself (k-means objective).
//!
//! The element-wise loops below are written so that LLVM vectorizes them; they
//! are compiled three times (generic x86-64, AVX2+FMA, AVX-512) and the best
//! version is picked once at run time. Results on one machine never depend on
//! the number of threads: every reduction runs in a fixed order.

/// Centroids handled per GEMM call: bounds the scratch buffer to `rows * KC`
/// floats whatever `k` is (k may be up to 65536).
pub(crate) const KC: usize = 1024;

/// A read-only strided matrix view (`rows × cols`, element `(i, j)` at
/// `data[offset + i * rs + j * cs]`), bounds-checked at construction so the raw
/// pointer handed to `sgemm` stays inside `data`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a> {
    data: &'a [f32],
    offset: usize,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> MatRef<'a> {
    /// Panics if any element of the view would lie outside `data` (a bug in
    /// the caller, never a user error).
    pub(crate) fn new(
        data: &'a [f32],
        offset: usize,
        rows: usize,
        cols: usize,
        rs: usize,
        cs: usize,
    ) -> Self {
        assert!(rows > 0 && cols > 0, "empty matrix view");
        let last = offset + (rows - 1) * rs + (cols - 1) * cs;
        assert!(
            last < data.len(),
            "matrix view out of bounds: last element {last}, buffer length {}",
            data.len()
        );
        MatRef {
            data,
            offset,
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// A dense row-major `rows × cols` matrix.
    #[cfg(test)]
    pub(crate) fn dense(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::new(data, 0, rows, cols, cols, 1)
    }
}

/// Centroids in the layout the distance GEMM wants: centered on a point `mu`
/// and transposed (`s × k`, row-major, so `sgemm` packs it with contiguous
/// copies), plus per-centroid offsets.
///
/// With `c' = c - mu`, `||x - c||² = ||x - mu||² + (||c'||² + 2 mu·c') - 2 x·c'`.
/// The GEMM computes `x·c'`; because the centered centroids are small, its
/// rounding error stays small even when the data sit far from the origin
/// (the plain expansion `||c||² - 2 x·c` loses digits there).
#[derive(Clone, Debug, Default)]
pub(crate) struct Codebook {
    k: usize,
    s: usize,
    ct: Vec<f32>,
    offsets: Vec<f32>,
}

impl Codebook {
    /// From row-major `k × s` centroids, centered on `mu` (`s` values; use
    /// the data mean).
    pub(crate) fn new(centroids: &[f32], k: usize, s: usize, mu: &[f32]) -> Self {
        assert_eq!(centroids.len(), k * s);
        assert_eq!(mu.len(), s);
        let mut ct = vec![0f32; k * s];
        let mut offsets = vec![0f32; k];
        for (c, row) in centroids.chunks_exact(s).enumerate() {
            let mut off = 0f64;
            for (p, (&v, &m)) in row.iter().zip(mu).enumerate() {
                let cp = v - m;
                ct[p * k + c] = cp;
                let (cp, m) = (cp as f64, m as f64);
                off += cp * cp + 2.0 * m * cp;
            }
            offsets[c] = off as f32;
        }
        Codebook { k, s, ct, offsets }
    }
}

/// Finds, for every row of `a`, the nearest centroid of `book`
/// (`a.cols == s`).
///
/// Writes the index into `idx[i]` and the squared distance minus
/// `||a_i - mu||²` into `val[i]`. Ties go to the lowest index.
/// `scratch` is reused between calls to avoid allocations.
pub(crate) fn nearest(
    a: MatRef<'_>,
    book: &Codebook,
    scratch: &mut Vec<f32>,
    idx: &mut [u32],
    val: &mut [f32],
) {
    let rows = a.rows;
    let (k, s) = (book.k, book.s);
    assert_eq!(a.cols, s);
    assert!(idx.len() >= rows && val.len() >= rows);
    let mut c0 = 0;
    while c0 < k {
        let kc = KC.min(k - c0);
        if scratch.len() < rows * kc {
            scratch.resize(rows * kc, 0.0);
        }
        // SAFETY: `a` was bounds-checked by `MatRef::new`; B is columns
        // c0..c0+kc of the dense `s × k` matrix `book.ct` (row stride k, last
        // element (s-1)*k + c0 + kc - 1 < s*k); C is the first `rows * kc`
        // floats of `scratch`, dense row-major. With beta = 0, C is only
        // written.
        unsafe {
            matrixmultiply::sgemm(
                rows,
                s,
                kc,
                -2.0,
                a.data.as_ptr().add(a.offset),
                a.rs as isize,
                a.cs as isize,
                book.ct.as_ptr().add(c0),
                k as isize,
                1,
                0.0,
                scratch.as_mut_ptr(),
                kc as isize,
                1,
            );
        }
        argmin_rows(
            &scratch[..rows * kc],
            kc,
            &book.offsets[c0..c0 + kc],
            c0 as u32,
            c0 == 0,
            &mut idx[..rows],
            &mut val[..rows],
        );
        c0 += kc;
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Generic,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

#[inline]
fn level() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        // `is_x86_feature_detected!` caches its answer in an atomic.
        if std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512dq")
            && std::is_x86_feature_detected!("fma")
        {
            return Level::Avx512;
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return Level::Avx2;
        }
    }
    Level::Generic
}

/// Declares `pub(crate) fn $name` that dispatches to `$impl` compiled for
/// the best instruction set available. `$impl` takes a `const FMA: bool`
/// and a `const L: usize` lane count as generic parameters.
macro_rules! dispatch {
    (
        $(#[$doc:meta])*
        fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? => $imp:ident
    ) => {
        $(#[$doc])*
        pub(crate) fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $imp::<true, 8>($($arg),*)
                }
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $imp::<true, 16>($($arg),*)
                }
                match level() {
                    // SAFETY: the CPU supports the features, checked by `level`.
                    Level::Avx512 => return unsafe { avx512($($arg),*) },
                    Level::Avx2 => return unsafe { avx2($($arg),*) },
                    Level::Generic => {}
                }
            }
            $imp::<false, 8>($($arg),*)
        }
    };
}

#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Argmin over `c` of `norms[c] + dots[c]`; ties go to the lowest `c`.
/// Returns (index, value). `dots` and `norms` have the same length > 0.
#[inline(always)]
fn argmin_plus<const L: usize>(dots: &[f32], norms: &[f32]) -> (u32, f32) {
    let n = dots.len();
    let mut bv = [f32::INFINITY; L];
    let mut bi = [0u32; L];
    let mut ci: [u32; L] = std::array::from_fn(|l| l as u32);
    let full = n / L * L;
    for (dc, nc) in dots[..full]
        .chunks_exact(L)
        .zip(norms[..full].chunks_exact(L))
    {
        for l in 0..L {
            let v = dc[l] + nc[l];
            let better = v < bv[l];
            bv[l] = if better { v } else { bv[l] };
            bi[l] = if better { ci[l] } else { bi[l] };
            ci[l] += L as u32;
        }
    }
    // Each lane holds its earliest minimum; pick the smallest value, then the
    // smallest index among equal values.
    let mut best_v = f32::INFINITY;
    let mut best_i = u32::MAX;
    for l in 0..L.min(full) {
        if bv[l] < best_v || (bv[l] == best_v && bi[l] < best_i) {
            best_v = bv[l];
            best_i = bi[l];
        }
    }
    // The tail has larger indices than every lane: strict `<` keeps ties low.
    for c in full..n {
        let v = dots[c] + norms[c];
        if v < best_v || best_i == u32::MAX {
            best_v = v;
            best_i = c as u32;
        }
    }
    if best_i == u32::MAX {
        // Every value was +inf or NaN: fall back to the first centroid.
        best_i = 0;
    }
    (best_i, best_v)
}

#[inline(always)]
fn argmin_rows_impl<const L: usize>(
    dots: &[f32],
    kc: usize,
    norms: &[f32],
    c0: u32,
    first: bool,
    idx: &mut [u32],
    val: &mut [f32],
) {
    for ((row, i), v) in dots
        .chunks_exact(kc)
        .zip(idx.iter_mut())
        .zip(val.iter_mut())
    {
        let (bi, bv) = argmin_plus::<L>(row, norms);
        if first || bv < *v {
            *v = bv;
            *i = c0 + bi;
        }
    }
}

/// For each row of `dots` (`kc` values per row): argmin of `norms + row`,
/// merged into (`idx`, `val`) when strictly better (or when `first`).
pub(crate) fn argmin_rows(
    dots: &[f32],
    kc: usize,
    norms: &[f32],
    c0: u32,
    first: bool,
    idx: &mut [u32],
    val: &mut [f32],
) {
    let rows = idx.len().min(val.len());
    assert!(norms.len() == kc && dots.len() >= kc * rows);
    #[cfg(target_arch = "x86_64")]
    {
        let lvl = level();
        if lvl != Level::Generic {
            for r in 0..rows {
                let row = &dots[r * kc..(r + 1) * kc];
                // SAFETY: the CPU has the features (checked by `level`).
                let (bi, bv) = unsafe {
                    if lvl == Level::Avx512 {
                        x86::argmin_plus_avx512(row, norms)
                    } else {
                        x86::argmin_plus_avx2(row, norms)
                    }
                };
                if first || bv < val[r] {
                    val[r] = bv;
                    idx[r] = c0 + bi;
                }
            }
            return;
        }
    }
    argmin_rows_impl::<8>(dots, kc, norms, c0, first, idx, val)
}

/// Hand-written argmin loops: LLVM does not vectorize the (value, index)
/// select of the portable version.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Scalar tail shared by both versions: indices `from..` are larger than
    /// every index seen so far, so strict `<` keeps ties on the lowest index.
    #[inline(always)]
    fn tail(dots: &[f32], norms: &[f32], from: usize, mut bi: u32, mut bv: f32) -> (u32, f32) {
        for c in from..dots.len() {
            let v = dots[c] + norms[c];
            if v < bv {
                bv = v;
                bi = c as u32;
            }
        }
        (bi, bv)
    }

    /// Argmin of `dots + norms` (same length), ties to the lowest index.
    #[target_feature(enable = "avx512f")]
    pub(super) fn argmin_plus_avx512(dots: &[f32], norms: &[f32]) -> (u32, f32) {
        let n = dots.len().min(norms.len());
        let inf = _mm512_set1_ps(f32::INFINITY);
        let (mut v0, mut v1) = (inf, inf);
        let (mut i0, mut i1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
        let mut cur0 = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let mut cur1 = _mm512_add_epi32(cur0, _mm512_set1_epi32(16));
        let step = _mm512_set1_epi32(32);
        let mut c = 0;
        // SAFETY (all loads): c + 32 <= n or c + 16 <= n is checked before
        // each read of 16 floats at c or c + 16.
        let load = |p: &[f32], c: usize| unsafe { _mm512_loadu_ps(p.as_ptr().add(c)) };
        // Two independent (value, index) accumulators for instruction-level
        // parallelism; each lane keeps its earliest minimum (strict `<`).
        while c + 32 <= n {
            let a = _mm512_add_ps(load(dots, c), load(norms, c));
            let b = _mm512_add_ps(load(dots, c + 16), load(norms, c + 16));
            let ma = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, v0);
            let mb = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(b, v1);
            v0 = _mm512_mask_mov_ps(v0, ma, a);
            i0 = _mm512_mask_mov_epi32(i0, ma, cur0);
            v1 = _mm512_mask_mov_ps(v1, mb, b);
            i1 = _mm512_mask_mov_epi32(i1, mb, cur1);
            cur0 = _mm512_add_epi32(cur0, step);
            cur1 = _mm512_add_epi32(cur1, step);
            c += 32;
        }
        // Merge: a lane of set 1 wins when smaller, or equal with a lower index.
        let lt = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(v1, v0);
        let eq = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(v1, v0);
        let ilt = _mm512_cmplt_epu32_mask(i1, i0);
        let m = lt | (eq & ilt);
        v0 = _mm512_mask_mov_ps(v0, m, v1);
        i0 = _mm512_mask_mov_epi32(i0, m, i1);
        if c + 16 <= n {
            let a = _mm512_add_ps(load(dots, c), load(norms, c));
            let ma = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, v0);
            v0 = _mm512_mask_mov_ps(v0, ma, a);
            i0 = _mm512_mask_mov_epi32(i0, ma, cur0);
            c += 16;
        }
        let (mut bi, mut bv) = (0, f32::INFINITY);
        if c > 0 {
            let minv = _mm512_reduce_min_ps(v0);
            let eqm = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(v0, _mm512_set1_ps(minv));
            if eqm != 0 {
                bi = _mm512_mask_reduce_min_epu32(eqm, i0);
                bv = minv;
            }
        }
        tail(&dots[..n], &norms[..n], c, bi, bv)
    }

    /// Argmin of `dots + norms` (same length), ties to the lowest index.
    #[target_feature(enable = "avx2")]
    pub(super) fn argmin_plus_avx2(dots: &[f32], norms: &[f32]) -> (u32, f32) {
        let n = dots.len().min(norms.len());
        let inf = _mm256_set1_ps(f32::INFINITY);
        let (mut v0, mut v1) = (inf, inf);
        let (mut i0, mut i1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut cur0 = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mut cur1 = _mm256_add_epi32(cur0, _mm256_set1_epi32(8));
        let step = _mm256_set1_epi32(16);
        let mut c = 0;
        // SAFETY (all loads): c + 16 <= n is checked before reading 8 floats
        // at c and at c + 8.
        let load = |p: &[f32], c: usize| unsafe { _mm256_loadu_ps(p.as_ptr().add(c)) };
        while c + 16 <= n {
            let a = _mm256_add_ps(load(dots, c), load(norms, c));
            let b = _mm256_add_ps(load(dots, c + 8), load(norms, c + 8));
            let ma = _mm256_cmp_ps::<_CMP_LT_OQ>(a, v0);
            let mb = _mm256_cmp_ps::<_CMP_LT_OQ>(b, v1);
            v0 = _mm256_blendv_ps(v0, a, ma);
            i0 = _mm256_blendv_ps(i0, _mm256_castsi256_ps(cur0), ma);
            v1 = _mm256_blendv_ps(v1, b, mb);
            i1 = _mm256_blendv_ps(i1, _mm256_castsi256_ps(cur1), mb);
            cur0 = _mm256_add_epi32(cur0, step);
            cur1 = _mm256_add_epi32(cur1, step);
            c += 16;
        }
        let mut vals = [0f32; 16];
        let mut ids = [0f32; 16];
        // SAFETY: both arrays hold 16 values; each store writes 8.
        unsafe {
            _mm256_storeu_ps(vals.as_mut_ptr(), v0);
            _mm256_storeu_ps(vals.as_mut_ptr().add(8), v1);
            _mm256_storeu_ps(ids.as_mut_ptr(), i0);
            _mm256_storeu_ps(ids.as_mut_ptr().add(8), i1);
        }
        let (mut bi, mut bv) = (0u32, f32::INFINITY);
        if c > 0 {
            let mut best_i = u32::MAX;
            for l in 0..16 {
                let id = ids[l].to_bits();
                if vals[l] < bv || (vals[l] == bv && id < best_i) {
                    bv = vals[l];
                    best_i = id;
                }
            }
            if best_i != u32::MAX {
                bi = best_i;
            }
        }
        tail(&dots[..n], &norms[..n], c, bi, bv)
    }
}

/// Rows per group of the interleaved layout used by k-means++.
pub(crate) const GROUP: usize = 16;

/// Copies the dense `n × s` matrix `x` into groups of [`GROUP`] rows stored
/// dimension-major (`out[(g * s + t) * GROUP + l]` = row `g * GROUP + l`,
/// dim `t`), so that distances of a group to one point vectorize over rows.
/// The last group is padded with zeros.
pub(crate) fn interleave_rows(x: &[f32], n: usize, s: usize) -> Vec<f32> {
    let groups = n.div_ceil(GROUP);
    let mut out = vec![0f32; groups * s * GROUP];
    for (i, row) in x.chunks_exact(s).take(n).enumerate() {
        let (g, l) = (i / GROUP, i % GROUP);
        let base = g * s * GROUP + l;
        for (t, &v) in row.iter().enumerate() {
            out[base + t * GROUP] = v;
        }
    }
    out
}

#[inline(always)]
fn group_dists<const FMA: bool, const Q: usize>(
    groups: [&[f32]; Q],
    c: &[f32],
) -> [[f32; GROUP]; Q] {
    // Q independent accumulators hide the FMA latency.
    let mut acc = [[0f32; GROUP]; Q];
    for (t, &ct) in c.iter().enumerate() {
        for q in 0..Q {
            let col: &[f32; GROUP] = groups[q][t * GROUP..(t + 1) * GROUP]
                .try_into()
                .expect("group column");
            for l in 0..GROUP {
                let d = col[l] - ct;
                acc[q][l] = madd::<FMA>(d, d, acc[q][l]);
            }
        }
    }
    acc
}

#[inline(always)]
fn min_dist_update_impl<const FMA: bool, const L: usize>(
    xg: &[f32],
    s: usize,
    c: &[f32],
    mind: &mut [f32],
) -> f64 {
    const Q: usize = 4;
    let gs = s * GROUP;
    let c = &c[..s];
    let mut total = 0f64;
    let mut groups = xg.chunks_exact(gs);
    let mut minds = mind.chunks_mut(GROUP);
    loop {
        let rest = groups.len();
        if rest == 0 {
            break;
        }
        let mut accs = [[0f32; GROUP]; Q];
        let used = if rest >= Q {
            let g: [&[f32]; Q] = std::array::from_fn(|_| groups.next().expect("group"));
            accs = group_dists::<FMA, Q>(g, c);
            Q
        } else {
            let g = [groups.next().expect("group")];
            accs[0] = group_dists::<FMA, 1>(g, c)[0];
            1
        };
        for acc in &accs[..used] {
            let Some(m) = minds.next() else { break };
            for (mv, &a) in m.iter_mut().zip(acc) {
                if a < *mv {
                    *mv = a;
                }
                total += *mv as f64;
            }
        }
    }
    total
}

dispatch! {
    /// k-means++ step: `mind[i] = min(mind[i], ||x_i - c||^2)` for the rows
    /// of `xg` (interleaved by [`interleave_rows`], `s` dims, whole groups);
    /// returns the f64 sum of the updated `mind`, in row order.
    fn min_dist_update(xg: &[f32], s: usize, c: &[f32], mind: &mut [f32]) -> f64
        => min_dist_update_impl
}

#[inline(always)]
fn sq_dist<const FMA: bool, const L: usize>(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; L];
    let full = a.len() / L * L;
    for (ac, bc) in a[..full].chunks_exact(L).zip(b[..full].chunks_exact(L)) {
        for l in 0..L {
            let t = ac[l] - bc[l];
            acc[l] = madd::<FMA>(t, t, acc[l]);
        }
    }
    let mut s = 0f32;
    for (x, y) in a[full..].iter().zip(&b[full..]) {
        let t = x - y;
        s = madd::<FMA>(t, t, s);
    }
    acc.iter().sum::<f32>() + s
}

#[inline(always)]
fn all_finite_impl<const FMA: bool, const L: usize>(x: &[f32]) -> bool {
    // Integer max of the exponent bits: a branch-free reduction LLVM
    // vectorizes (an early-exit search would not be).
    const EXP: u32 = 0x7f80_0000;
    let mut acc = [0u32; 16];
    let full = x.len() / 16 * 16;
    for ch in x[..full].chunks_exact(16) {
        for l in 0..16 {
            acc[l] = acc[l].max(ch[l].to_bits() & EXP);
        }
    }
    let tail = x[full..]
        .iter()
        .map(|v| v.to_bits() & EXP)
        .max()
        .unwrap_or(0);
    acc.iter().copied().max().unwrap_or(0).max(tail) != EXP
}

dispatch! {
    /// Whether every value is finite (no NaN, no ±inf).
    fn all_finite(x: &[f32]) -> bool => all_finite_impl
}

#[inline(always)]
fn accumulate_impl<const FMA: bool, const L: usize>(
    x: &[f32],
    d: usize,
    assign: &[u32],
    sums: &mut [f64],
    counts: &mut [usize],
) {
    for (row, &a) in x.chunks_exact(d).zip(assign) {
        let a = a as usize;
        counts[a] += 1;
        for (s, &v) in sums[a * d..(a + 1) * d].iter_mut().zip(row) {
            *s += v as f64;
        }
    }
}

dispatch! {
    /// k-means update: adds each row of `x` (`d` values) to the f64 sums of
    /// its cluster `assign[i]` and counts it, in row order.
    fn accumulate(x: &[f32], d: usize, assign: &[u32], sums: &mut [f64], counts: &mut [usize])
        => accumulate_impl
}

#[inline(always)]
fn row_sq_dists_impl<const FMA: bool, const L: usize>(
    x: &[f32],
    s: usize,
    mu: &[f32],
    out: &mut [f32],
) {
    for (row, o) in x.chunks_exact(s).zip(out.iter_mut()) {
        *o = sq_dist::<FMA, L>(row, mu);
    }
}

dispatch! {
    /// `out[i] = ||x_i - mu||²` for the rows of the dense `x` (`s` values each).
    fn row_sq_dists(x: &[f32], s: usize, mu: &[f32], out: &mut [f32]) => row_sq_dists_impl
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finite_check() {
        let mut x = vec![1.5f32; 37];
        assert!(all_finite(&x));
        assert!(all_finite(&[]));
        for (i, bad) in [(0, f32::NAN), (20, f32::INFINITY), (36, f32::NEG_INFINITY)] {
            x[i] = bad;
            assert!(!all_finite(&x));
            x[i] = f32::MAX;
            assert!(all_finite(&x));
        }
    }

    #[test]
    fn argmin_ties_go_low() {
        for n in [1usize, 7, 16, 33, 64, 100] {
            let dots = vec![0.0f32; n];
            let mut norms = vec![1.0f32; n];
            norms[n / 2] = 0.5;
            if n > 3 {
                norms[n - 1] = 0.5;
            }
            let (i, v) = argmin_plus::<16>(&dots, &norms);
            assert_eq!((i, v), ((n / 2) as u32, 0.5));
            let (i, _) = argmin_plus::<8>(&dots, &vec![2.0; n]);
            assert_eq!(i, 0);
        }
    }

    #[test]
    fn simd_argmin_matches_portable() {
        // Values on a coarse grid so that ties are frequent.
        for n in [
            1usize, 5, 15, 16, 17, 31, 32, 33, 48, 63, 64, 100, 256, 1000,
        ] {
            for seed in 0..20u64 {
                let f = |i: usize, m: u64| ((i as u64 * 2654435761 + seed * m) % 7) as f32;
                let dots: Vec<f32> = (0..n).map(|i| f(i, 97)).collect();
                let norms: Vec<f32> = (0..n).map(|i| f(i + 3, 31)).collect();
                let want = argmin_plus::<8>(&dots, &norms);
                let naive = (0..n)
                    .map(|c| (c as u32, dots[c] + norms[c]))
                    .fold((0u32, f32::INFINITY), |b, x| if x.1 < b.1 { x } else { b });
                assert_eq!(want, naive, "portable n={n} seed={seed}");
                let mut idx = [7u32];
                let mut val = [0f32];
                argmin_rows(&dots, n, &norms, 0, true, &mut idx, &mut val);
                assert_eq!((idx[0], val[0]), naive, "dispatched n={n} seed={seed}");
                #[cfg(target_arch = "x86_64")]
                {
                    if std::is_x86_feature_detected!("avx2") {
                        // SAFETY: feature checked just above.
                        let got = unsafe { x86::argmin_plus_avx2(&dots, &norms) };
                        assert_eq!(got, naive, "avx2 n={n} seed={seed}");
                    }
                    if std::is_x86_feature_detected!("avx512f") {
                        // SAFETY: feature checked just above.
                        let got = unsafe { x86::argmin_plus_avx512(&dots, &norms) };
                        assert_eq!(got, naive, "avx512 n={n} seed={seed}");
                    }
                }
            }
        }
    }

    #[test]
    fn nearest_matches_naive_across_chunks() {
        // k > KC exercises the merge across centroid chunks.
        let k = KC + 37;
        let s = 5;
        let rows = 9;
        let cent: Vec<f32> = (0..k * s)
            .map(|i| ((i * 7919) % 1013) as f32 / 97.0)
            .collect();
        let a: Vec<f32> = (0..rows * s)
            .map(|i| ((i * 104_729) % 997) as f32 / 89.0)
            .collect();
        let book = Codebook::new(&cent, k, s, &[0.5; 5]);
        let mut scratch = Vec::new();
        let mut idx = vec![0u32; rows];
        let mut val = vec![0f32; rows];
        nearest(
            MatRef::dense(&a, rows, s),
            &book,
            &mut scratch,
            &mut idx,
            &mut val,
        );
        for r in 0..rows {
            let x = &a[r * s..(r + 1) * s];
            let d = |c: usize| -> f64 {
                (0..s)
                    .map(|t| (x[t] as f64 - cent[c * s + t] as f64).powi(2))
                    .sum()
            };
            let best = (0..k).map(d).fold(f64::INFINITY, f64::min);
            assert!(d(idx[r] as usize) <= best + 1e-3 * (1.0 + best));
        }
    }
}

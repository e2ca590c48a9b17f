//! Dense columns discretized into tokens ("discrete fusion", Kiela et al. AAAI-18).
//!
//! A dense column has a fitted [`Quantizer`] with m sub-quantizers of k centroids. Code
//! `c` of sub-quantizer `j` becomes the token id `offset + j·k + c`, where `offset` puts
//! each column in its own id range after the text buckets (`[0, bucket)`). These
//! "visual words" join the text tokens in the bag with weight `alpha` (text tokens weigh
//! 1): hidden = (Σ_text e_t + α Σ_visual e_v) / (n_text + α·n_visual). A row whose dense
//! value is missing has no visual tokens: it is classified from its text alone.
use crate::error::{MmqError, Result};
use crate::quant::Quantizer;

#[derive(Clone, Debug)]
pub struct DenseInput {
    pub name: String,
    pub quantizer: Quantizer,
    /// First token id of this column's range.
    pub offset: u32,
}

impl DenseInput {
    pub fn n_tokens(&self) -> u64 {
        (self.quantizer.m() * self.quantizer.k()) as u64
    }

    /// Token id of code `c` of sub-quantizer `j`.
    #[inline]
    pub fn token(&self, j: usize, c: u16) -> u32 {
        self.offset + (j * self.quantizer.k()) as u32 + c as u32
    }

    /// (sub-quantizer, centroid) of a token id in this column's range.
    pub fn code_of(&self, id: u32) -> Option<(usize, usize)> {
        let rel = id.checked_sub(self.offset)? as u64;
        if rel >= self.n_tokens() {
            return None;
        }
        let k = self.quantizer.k() as u64;
        Some(((rel / k) as usize, (rel % k) as usize))
    }
}

/// Lay dense columns out after the text buckets; errors when the ids would not fit in u32.
pub fn assign_offsets(
    bucket: u32,
    quantizers: Vec<(String, Quantizer)>,
) -> Result<Vec<DenseInput>> {
    let mut next = bucket as u64;
    let mut out = Vec::new();
    for (name, q) in quantizers {
        if !q.is_fitted() {
            return Err(MmqError::NotFitted(format!(
                "the quantizer of dense column '{name}' is not fitted"
            )));
        }
        let n = (q.m() * q.k()) as u64;
        if next + n > u32::MAX as u64 {
            return Err(MmqError::InvalidParameter(format!(
                "bucket ({bucket}) plus the dense columns' tokens exceed 2^32 ids; lower bucket"
            )));
        }
        out.push(DenseInput {
            name,
            quantizer: q,
            offset: next as u32,
        });
        next += n;
    }
    Ok(out)
}

/// Standardise and project dense rows: `out[i] = ((x[i] − mean) / std) · proj` for the
/// `n` rows of `x` (n × d) and `proj` (d × r, row-major), into `out` (n × r).
///
/// Each row is computed on its own, in a fixed order (the sum runs over `j = 0..d`), so
/// a row's result does not depend on how many rows are projected with it or on the
/// thread count — unlike a BLAS matrix product, whose blocking (and so its rounding)
/// changes with the shape. Late and concat fusion project through this, which makes
/// their predictions identical however the rows are batched (Ray, the Polars plugin).
pub fn project(
    x: &[f32],
    n: usize,
    mean: &[f32],
    std: &[f32],
    proj: &[f32],
    r: usize,
    out: &mut [f32],
) -> Result<()> {
    use rayon::prelude::*;
    let d = mean.len();
    let sizes_ok = std.len() == d
        && n.checked_mul(d) == Some(x.len())
        && d.checked_mul(r) == Some(proj.len())
        && n.checked_mul(r) == Some(out.len());
    if !sizes_ok {
        return Err(MmqError::InvalidInput(format!(
            "project: shapes do not agree (x {} values for {n} rows, mean {d}, std {}, proj {} for r = {r}, out {})",
            x.len(),
            std.len(),
            proj.len(),
            out.len()
        )));
    }
    if r == 0 || n == 0 {
        return Ok(());
    }
    out.par_chunks_mut(r)
        .zip(x.par_chunks(d.max(1)))
        .with_min_len(16)
        .for_each(|(o, row)| {
            o.fill(0.0);
            for j in 0..d {
                let z = (row[j] - mean[j]) / std[j];
                for (ok, pk) in o.iter_mut().zip(&proj[j * r..(j + 1) * r]) {
                    *ok += z * pk;
                }
            }
        });
    Ok(())
}

#[cfg(test)]
mod project_tests {
    use super::project;

    #[test]
    fn a_rows_projection_does_not_depend_on_its_batch() {
        let (n, d, r) = (203, 37, 11);
        let mut s = 7u64;
        let mut rnd = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        let x: Vec<f32> = (0..n * d).map(|_| rnd()).collect();
        let mean: Vec<f32> = (0..d).map(|_| rnd()).collect();
        let std: Vec<f32> = (0..d).map(|_| rnd().abs() + 0.1).collect();
        let proj: Vec<f32> = (0..d * r).map(|_| rnd()).collect();
        let mut all = vec![0.0; n * r];
        project(&x, n, &mean, &std, &proj, r, &mut all).unwrap();
        for i in [0, 5, 202] {
            let want: f64 = (0..d)
                .map(|j| ((x[i * d + j] - mean[j]) / std[j]) as f64 * proj[j * r + 3] as f64)
                .sum();
            assert!((all[i * r + 3] as f64 - want).abs() < 1e-4);
        }
        for batch in [1, 7, 16, 100] {
            let mut got = Vec::new();
            for start in (0..n).step_by(batch) {
                let m = batch.min(n - start);
                let mut o = vec![0.0; m * r];
                project(
                    &x[start * d..(start + m) * d],
                    m,
                    &mean,
                    &std,
                    &proj,
                    r,
                    &mut o,
                )
                .unwrap();
                got.extend(o);
            }
            assert_eq!(got, all, "batch {batch}");
        }
        assert!(project(&x, n + 1, &mean, &std, &proj, r, &mut all).is_err());
    }
}

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

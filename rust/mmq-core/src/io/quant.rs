//! Quantizer <-> bytes, in the same self-describing format as classifiers.
use crate::error::{MmqError, Result};
use crate::io::{self, Tensor};
use crate::quant::{Quantizer, QuantizerParams};
use serde_json::json;

/// JSON header and tensors of a fitted quantizer, under a name prefix (so a classifier
/// file can hold several quantizers).
pub fn quantizer_parts(
    q: &Quantizer,
    prefix: &str,
) -> Result<(serde_json::Value, Vec<(String, Tensor)>)> {
    if !q.is_fitted() {
        return Err(MmqError::NotFitted(
            "the quantizer is not fitted: call fit() first".into(),
        ));
    }
    let c = q.centroids_flat();
    Ok((
        quantizer_header(q)?,
        vec![
            (format!("{prefix}centroids"), Tensor::F32(vec![c.len()], c)),
            (
                format!("{prefix}mean"),
                Tensor::F32(vec![q.d()], q.mean().to_vec()),
            ),
        ],
    ))
}

/// The header part of a quantizer (its parameters), as [`quantizer_parts`] writes it.
pub fn quantizer_header(q: &Quantizer) -> Result<serde_json::Value> {
    serde_json::to_value(q.params()).map_err(|e| MmqError::InvalidInput(e.to_string()))
}

fn file_header(q: &Quantizer) -> Result<serde_json::Value> {
    Ok(json!({"kind": "quantizer", "params": quantizer_header(q)?}))
}

/// Rebuild a quantizer from [`quantizer_parts`] output read back from a file.
pub fn quantizer_from_parts(
    params: &serde_json::Value,
    tensors: &mut std::collections::HashMap<String, Tensor>,
    prefix: &str,
    what: &str,
) -> Result<Quantizer> {
    let bad = |reason: String| MmqError::InvalidModelFile {
        path: what.to_string(),
        reason,
    };
    let p: QuantizerParams = serde_json::from_value(params.clone())
        .map_err(|e| bad(format!("bad quantizer parameters: {e}")))?;
    let total = p
        .subspaces
        .iter()
        .try_fold(0usize, |a, s| s.len().checked_mul(p.k)?.checked_add(a))
        .ok_or_else(|| bad("the quantizer's shape overflows".into()))?;
    let c = io::take_f32(tensors, &format!("{prefix}centroids"), &[total], what)?;
    let mean = io::take_f32(tensors, &format!("{prefix}mean"), &[p.d], what)?;
    Quantizer::from_parts(p, c, mean).map_err(|e| bad(e.to_string()))
}

pub fn quantizer_to_bytes(q: &Quantizer) -> Result<Vec<u8>> {
    let (_, tensors) = quantizer_parts(q, "")?;
    let refs: Vec<(&str, Tensor)> = tensors
        .iter()
        .map(|(n, t)| (n.as_str(), t.clone()))
        .collect();
    io::to_bytes(&file_header(q)?, &refs)
}

pub fn quantizer_from_bytes(bytes: &[u8], what: &str) -> Result<Quantizer> {
    let (header, mut t) = io::from_bytes(bytes, what)?;
    if header.get("kind").and_then(|k| k.as_str()) != Some("quantizer") {
        return Err(MmqError::InvalidModelFile {
            path: what.into(),
            reason: format!("expected an mmq quantizer, found kind {}", header["kind"]),
        });
    }
    let q = quantizer_from_parts(&header["params"], &mut t, "", what)?;
    io::check_keys(&header, &file_header(&q)?, what)?;
    Ok(q)
}

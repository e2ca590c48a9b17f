//! Model compression: fastText's `quantize` for mmq classifiers.
//!
//! The steps are fastText's (`FastText::quantize`, `ProductQuantizer`):
//!
//! 1. **Cutoff** (optional): keep the `cutoff` input rows with the largest L2 norms. The
//!    tokens of the other rows become unknown, as words below `minCount` are.
//! 2. **Product quantization** of the input rows: sub-vectors of `dsub` dims (the last
//!    one takes the remainder), 256 centroids each (fewer when there are fewer rows), so
//!    a row of `dim` floats is stored as `dim / dsub` bytes.
//! 3. **Norm quantization** (optional, `qnorm`): each row is stored as its unit direction
//!    (product-quantized) and its norm (one byte, a 256-centroid 1-D quantizer).
//! 4. **The output matrix** is product-quantized too with `qout`.
//!
//! The file then holds the codes and codebooks instead of the floats, and the token ids
//! as sorted deltas in LEB128 varints (one or two bytes each instead of four). At load
//! the rows are decoded back to floats, so prediction runs the dense code unchanged and
//! gives exactly what the quantized model gave before it was saved.
use super::Model;
use crate::error::{MmqError, Result};
use crate::io::quant::{quantizer_from_parts, quantizer_header, quantizer_parts};
use crate::io::{self, Tensor};
use crate::quant::Quantizer;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;

/// The options of [`Model::quantize`]; stored in the file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantizeOptions {
    /// Input rows kept (largest norms first); 0 keeps every row.
    pub cutoff: usize,
    /// Dimensions per sub-quantizer (fastText's `dsub`, default 2).
    pub dsub: usize,
    /// Store each row's norm apart (one byte) and quantize its direction.
    pub qnorm: bool,
    /// Quantize the output matrix too.
    pub qout: bool,
    /// Seed of the k-means.
    pub seed: u64,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        Self {
            cutoff: 0,
            dsub: 2,
            qnorm: false,
            qout: false,
            seed: 1234,
        }
    }
}

/// Centroids per sub-quantizer (fastText's `ksub`: one byte per code).
const KSUB: usize = 256;

/// A `rows × width` matrix as product-quantized rows (and, with `qnorm`, quantized
/// norms of unit rows).
#[derive(Clone, Debug)]
pub struct QMatrix {
    pub rows: usize,
    pub pq: Quantizer,
    pub codes: Vec<u8>,
    pub norms: Option<(Quantizer, Vec<u8>)>,
}

impl QMatrix {
    /// Quantize the row-major `rows × width` matrix `x`.
    pub fn fit(x: &[f32], rows: usize, width: usize, o: &QuantizeOptions) -> Result<Self> {
        if rows == 0 {
            return Err(MmqError::InvalidInput(
                "there are no rows to quantize".into(),
            ));
        }
        let m = (width / o.dsub).max(1);
        // Rows that are all zeros (never updated) are common: k-means needs k points,
        // not k distinct ones, so k is only capped by the row count.
        let k = KSUB.min(rows).max(2);
        let mut data = x.to_vec();
        if rows < 2 {
            // One row: k-means needs two points; a copy of it changes no centroid.
            data.extend_from_slice(x);
        }
        let n = data.len() / width;
        let norms = if o.qnorm {
            let norms: Vec<f32> = data
                .chunks_exact(width)
                .map(|r| r.iter().map(|v| v * v).sum::<f32>().sqrt())
                .collect();
            for (r, &nv) in data.chunks_exact_mut(width).zip(&norms) {
                if nv > 0.0 {
                    r.iter_mut().for_each(|v| *v /= nv);
                }
            }
            let mut q = Quantizer::pq(1, 1, k, o.seed)?;
            q.set_max_points_per_centroid(KSUB)?;
            q.fit(&norms, n)?;
            let mut codes = vec![0u8; n];
            q.encode_u8(&norms, n, &mut codes)?;
            codes.truncate(rows);
            Some((q, codes))
        } else {
            None
        };
        let mut pq = Quantizer::pq(width, m, k, o.seed)?;
        // fastText trains each sub-quantizer on at most 256 points per centroid.
        pq.set_max_points_per_centroid(KSUB)?;
        pq.fit(&data, n)?;
        let mut codes = vec![0u8; n * m];
        pq.encode_u8(&data, n, &mut codes)?;
        codes.truncate(rows * m);
        Ok(Self {
            rows,
            pq,
            codes,
            norms,
        })
    }

    /// The rows the codes stand for.
    pub fn decode(&self) -> Result<Vec<f32>> {
        let mut x = self.pq.decode(&self.codes, self.rows)?;
        if let Some((q, c)) = &self.norms {
            let norms = q.decode(c, self.rows)?;
            let d = self.pq.d();
            for (r, &nv) in x.chunks_exact_mut(d).zip(&norms) {
                r.iter_mut().for_each(|v| *v *= nv);
            }
        }
        Ok(x)
    }

    fn header(&self) -> Result<serde_json::Value> {
        Ok(json!({
            "rows": self.rows,
            "pq": quantizer_header(&self.pq)?,
            "norms": self.norms.as_ref().map(|(q, _)| quantizer_header(q)).transpose()?,
        }))
    }

    fn tensors(&self, prefix: &str) -> Result<Vec<(String, Tensor)>> {
        let (_, mut t) = quantizer_parts(&self.pq, &format!("{prefix}pq."))?;
        t.push((
            format!("{prefix}codes"),
            Tensor::U8(vec![self.rows, self.pq.m()], self.codes.clone()),
        ));
        if let Some((q, c)) = &self.norms {
            let (_, tn) = quantizer_parts(q, &format!("{prefix}norms."))?;
            t.extend(tn);
            t.push((
                format!("{prefix}norm_codes"),
                Tensor::U8(vec![self.rows], c.clone()),
            ));
        }
        Ok(t)
    }

    /// A matrix of `width` columns read back from its header entry `h` and tensors.
    fn read(
        h: &serde_json::Value,
        t: &mut HashMap<String, Tensor>,
        prefix: &str,
        width: usize,
        what: &str,
    ) -> Result<Self> {
        let bad = |reason: String| MmqError::InvalidModelFile {
            path: what.to_string(),
            reason: format!("quantized matrix {prefix}: {reason}"),
        };
        let rows = h["rows"]
            .as_u64()
            .ok_or_else(|| bad("no row count".into()))? as usize;
        let pq = quantizer_from_parts(&h["pq"], t, &format!("{prefix}pq."), what)?;
        if pq.d() != width || pq.k() > KSUB {
            return Err(bad(format!(
                "its quantizer has d = {}, k = {}; expected d = {width}, k <= {KSUB}",
                pq.d(),
                pq.k()
            )));
        }
        let codes = take_u8(t, &format!("{prefix}codes"), what)?;
        if Some(codes.len()) != rows.checked_mul(pq.m()) {
            return Err(bad(format!(
                "{} codes for {rows} rows of {} codes",
                codes.len(),
                pq.m()
            )));
        }
        check_codes(&codes, pq.k()).map_err(bad)?;
        let norms = if h["norms"].is_null() {
            None
        } else {
            let q = quantizer_from_parts(&h["norms"], t, &format!("{prefix}norms."), what)?;
            let c = take_u8(t, &format!("{prefix}norm_codes"), what)?;
            if q.d() != 1 || q.m() != 1 || q.k() > KSUB || c.len() != rows {
                return Err(bad("its norm quantizer or codes do not fit its rows".into()));
            }
            check_codes(&c, q.k()).map_err(bad)?;
            Some((q, c))
        };
        Ok(Self {
            rows,
            pq,
            codes,
            norms,
        })
    }
}

fn check_codes(codes: &[u8], k: usize) -> std::result::Result<(), String> {
    match codes.iter().find(|&&c| c as usize >= k) {
        Some(c) => Err(format!("code {c} is not below k = {k}")),
        None => Ok(()),
    }
}

fn take_u8(t: &mut HashMap<String, Tensor>, name: &str, what: &str) -> Result<Vec<u8>> {
    match t.remove(name) {
        Some(Tensor::U8(_, v)) => Ok(v),
        _ => Err(MmqError::InvalidModelFile {
            path: what.into(),
            reason: format!("missing u8 tensor {name}"),
        }),
    }
}

/// What a quantized model keeps besides its (decoded) weights.
#[derive(Clone, Debug)]
pub struct Compressed {
    pub opts: QuantizeOptions,
    pub input: QMatrix,
    pub output: Option<QMatrix>,
}

/// Strictly increasing ids as LEB128 varints of their gaps (the first from 0).
pub fn pack_ids(ids: &[u32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ids.len() * 2);
    let mut prev = 0u32;
    for (i, &id) in ids.iter().enumerate() {
        let mut gap = if i == 0 { id } else { id - prev };
        prev = id;
        loop {
            let b = (gap & 0x7f) as u8;
            gap >>= 7;
            if gap == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
    }
    out
}

/// The inverse of [`pack_ids`]: `n` strictly increasing ids, or why the bytes are not.
pub fn unpack_ids(bytes: &[u8], n: usize) -> std::result::Result<Vec<u32>, String> {
    // Each id takes at least one byte, so n is bounded by the bytes read.
    if n > bytes.len() {
        return Err(format!("{n} ids cannot fit in {} bytes", bytes.len()));
    }
    let mut ids = Vec::with_capacity(n);
    let (mut at, mut prev) = (0usize, 0u64);
    while ids.len() < n {
        let (mut gap, mut shift) = (0u64, 0u32);
        loop {
            let Some(&b) = bytes.get(at) else {
                return Err(format!("the ids end inside id {}", ids.len()));
            };
            at += 1;
            if shift > 28 {
                return Err(format!("id {} is longer than 5 bytes", ids.len()));
            }
            gap |= ((b & 0x7f) as u64) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        if !ids.is_empty() && gap == 0 {
            return Err(format!("id {} repeats the one before it", ids.len()));
        }
        let id = prev + gap;
        if id > u32::MAX as u64 {
            return Err(format!("id {} is beyond 2^32", ids.len()));
        }
        ids.push(id as u32);
        prev = id;
    }
    if at != bytes.len() {
        return Err(format!("{} bytes follow the last id", bytes.len() - at));
    }
    Ok(ids)
}

/// The product-quantized weight tables of a continuous-fusion or set model (their
/// `quantize`): the token rows (`input`) and, with `qout`, the output matrix, each by
/// [`QMatrix`]; the other weights are small and stay as they are. The model keeps the
/// decoded values, so it predicts the same before a save and after a load. `cutoff` is
/// for text and discrete-fusion models only (their rows are the tokens to drop).
#[derive(Clone, Debug)]
pub struct QuantizedParams {
    pub opts: QuantizeOptions,
    /// (parameter slot, its codes), slots in increasing order.
    pub mats: Vec<(usize, QMatrix)>,
}

/// Decoded matrices by parameter slot.
pub(super) type Decoded = Vec<(usize, Vec<f32>)>;

impl QuantizedParams {
    /// Quantize in place the token rows at slot `input` and, with `qout`, the output
    /// matrix at slot `output` (a slot without elements is left as it is).
    pub(super) fn fit(
        params: &mut [super::fusion::Mat],
        (input, output): (usize, usize),
        already: bool,
        o: &QuantizeOptions,
    ) -> Result<Self> {
        let slots: &[usize] = if o.qout { &[input, output] } else { &[input] };
        let bad = |m: String| Err(MmqError::InvalidParameter(m));
        if already {
            return bad("the model is quantized already".into());
        }
        if o.cutoff != 0 {
            return bad(
                "cutoff works with text and discrete-fusion models (their token rows); \
                 quantize this model with cutoff=0"
                    .into(),
            );
        }
        if o.dsub == 0 {
            return bad("dsub must be >= 1 (dimensions per sub-quantizer), got 0".into());
        }
        let mut mats = Vec::new();
        for &p in slots {
            let m = &params[p];
            if m.data.is_empty() {
                continue;
            }
            if o.dsub > m.cols {
                return bad(format!(
                    "dsub = {} is more than the {} values of a row",
                    o.dsub, m.cols
                ));
            }
            let q = QMatrix::fit(&m.data, m.data.len() / m.cols, m.cols, o)?;
            params[p].data = q.decode()?;
            mats.push((p, q));
        }
        if mats.is_empty() {
            return Err(MmqError::InvalidInput(
                "the model has no token rows to quantize".into(),
            ));
        }
        Ok(Self {
            opts: o.clone(),
            mats,
        })
    }

    /// Whether slot `p` is stored as codes.
    pub(super) fn has(&self, p: usize) -> bool {
        self.mats.iter().any(|(s, _)| *s == p)
    }

    pub(super) fn header(&self, names: &[&str]) -> Result<serde_json::Value> {
        let mut params = serde_json::Map::new();
        for (p, q) in &self.mats {
            params.insert(names[*p].to_string(), q.header()?);
        }
        Ok(json!({"options": self.opts, "params": params}))
    }

    pub(super) fn tensors(&self, names: &[&str]) -> Result<Vec<(String, Tensor)>> {
        let mut t = Vec::new();
        for (p, q) in &self.mats {
            t.extend(q.tensors(&format!("q.{}.", names[*p]))?);
        }
        Ok(t)
    }

    /// Read back from the header entry `h`; `shapes` are the slots' expected shapes.
    /// Returns it with the decoded matrices, slot by slot.
    pub(super) fn read(
        h: &serde_json::Value,
        t: &mut HashMap<String, Tensor>,
        names: &[&str],
        shapes: &[(usize, usize)],
        what: &str,
    ) -> Result<(Self, Decoded)> {
        let bad = |reason: String| MmqError::InvalidModelFile {
            path: what.to_string(),
            reason: format!("quantized model: {reason}"),
        };
        let opts: QuantizeOptions = serde_json::from_value(h["options"].clone())
            .map_err(|e| bad(format!("bad options: {e}")))?;
        let list = h["params"]
            .as_object()
            .ok_or_else(|| bad("no quantized parameters".into()))?;
        let (mut mats, mut decoded) = (Vec::new(), Vec::new());
        for (p, name) in names.iter().enumerate() {
            let Some(qh) = list.get(*name) else { continue };
            let (rows, cols) = shapes[p];
            let q = QMatrix::read(qh, t, &format!("q.{name}."), cols, what)?;
            if q.rows != rows {
                return Err(bad(format!("{name} has {} rows, the model {rows}", q.rows)));
            }
            decoded.push((p, q.decode()?));
            mats.push((p, q));
        }
        if let Some(k) = list.keys().find(|k| !names.contains(&k.as_str())) {
            return Err(bad(format!("unknown parameter {k}")));
        }
        if mats.is_empty() {
            return Err(bad("no quantized parameters".into()));
        }
        Ok((Self { opts, mats }, decoded))
    }
}

impl Model {
    /// fastText's `quantize` (see the [module docs](self)): a copy of the model whose
    /// weights are the quantized ones and whose file stores them as codes.
    pub fn quantize(&self, o: &QuantizeOptions) -> Result<Model> {
        if o.dsub == 0 {
            return Err(MmqError::InvalidParameter(
                "dsub must be >= 1 (dimensions per sub-quantizer), got 0".into(),
            ));
        }
        if self.compressed.is_some() {
            return Err(MmqError::InvalidParameter(
                "the model is quantized already".into(),
            ));
        }
        let width = self.width();
        if o.dsub > width {
            return Err(MmqError::InvalidParameter(format!(
                "dsub = {} is more than the {width} values of a row",
                o.dsub
            )));
        }
        let pruned = self.prune(o.cutoff)?;
        let (ids, x) = (pruned.index.ids.clone(), &pruned.input);
        let input = QMatrix::fit(x, ids.len(), width, o)?;
        let output = if o.qout {
            Some(QMatrix::fit(&self.output, self.n_out(), width, o)?)
        } else {
            None
        };
        let mut m = pruned;
        m.input = input.decode()?;
        if let Some(q) = &output {
            m.output = q.decode()?;
        }
        m.compressed = Some(std::sync::Arc::new(Compressed {
            opts: o.clone(),
            input,
            output,
        }));
        Ok(m)
    }

    /// A copy with the `cutoff` token rows of largest L2 norm (every row when `cutoff` is
    /// 0 or at least the row count), in the order of their ids; the other tokens become
    /// unknown. The first step of [`Model::quantize`], and what its retraining starts from.
    pub fn prune(&self, cutoff: usize) -> Result<Model> {
        let (n, width) = (self.index.len(), self.width());
        if n == 0 {
            return Err(MmqError::InvalidInput(
                "the model has no token rows to quantize".into(),
            ));
        }
        let row = |r: usize| &self.input[r * width..(r + 1) * width];
        let mut keep: Vec<usize> = (0..n).collect();
        if cutoff > 0 && cutoff < n {
            let norms: Vec<f32> = (0..n)
                .map(|r| row(r).iter().map(|v| v * v).sum::<f32>())
                .collect();
            keep.sort_by(|&a, &b| norms[b].total_cmp(&norms[a]).then(a.cmp(&b)));
            keep.truncate(cutoff);
        }
        // Rows in the order of their ids, so that the ids pack as small gaps.
        keep.sort_by_key(|&r| self.index.ids[r]);
        let mut m = self.clone();
        m.index = super::TokenIndex::from_ids(keep.iter().map(|&r| self.index.ids[r]).collect())?;
        m.input = keep.iter().flat_map(|&r| row(r).iter().copied()).collect();
        if !self.idf.is_empty() {
            m.idf = keep.iter().map(|&r| self.idf[r]).collect();
        }
        Ok(m)
    }

    /// The header entry of a quantized model.
    pub(super) fn compressed_header(&self) -> Result<Option<serde_json::Value>> {
        let Some(c) = &self.compressed else {
            return Ok(None);
        };
        Ok(Some(json!({
            "options": c.opts,
            "input": c.input.header()?,
            "output": c.output.as_ref().map(|q| q.header()).transpose()?,
        })))
    }

    /// The tensors of a quantized model's weights (in place of `input`, `output` and
    /// `token_ids`).
    pub(super) fn compressed_tensors(&self, c: &Compressed) -> Result<Vec<(String, Tensor)>> {
        let mut t = c.input.tensors("qinput.")?;
        let packed = pack_ids(&self.index.ids);
        t.push((
            "token_ids.packed".into(),
            Tensor::U8(vec![packed.len()], packed),
        ));
        match &c.output {
            Some(q) => t.extend(q.tensors("qoutput.")?),
            None => t.push((
                "output".into(),
                Tensor::F32(vec![self.n_out(), self.width()], self.output.clone()),
            )),
        }
        Ok(t)
    }

    /// Reads a quantized model's weights into `self` (whose labels and config are read).
    pub(super) fn read_compressed(
        &mut self,
        h: &serde_json::Value,
        t: &mut HashMap<String, Tensor>,
        what: &str,
    ) -> Result<()> {
        let bad = |reason: String| MmqError::InvalidModelFile {
            path: what.to_string(),
            reason: format!("quantized model: {reason}"),
        };
        let opts: QuantizeOptions = serde_json::from_value(h["options"].clone())
            .map_err(|e| bad(format!("bad options: {e}")))?;
        let width = self.width();
        let input = QMatrix::read(&h["input"], t, "qinput.", width, what)?;
        let packed = take_u8(t, "token_ids.packed", what)?;
        let ids = unpack_ids(&packed, input.rows).map_err(|e| bad(format!("token ids: {e}")))?;
        self.index = super::TokenIndex::from_ids(ids).map_err(|e| bad(e.to_string()))?;
        self.input = input.decode()?;
        let output = if h["output"].is_null() {
            self.output = io::take_f32(t, "output", &[self.n_out(), width], what)?;
            None
        } else {
            let q = QMatrix::read(&h["output"], t, "qoutput.", width, what)?;
            if q.rows != self.n_out() {
                return Err(bad(format!(
                    "{} output rows, the model has {}",
                    q.rows,
                    self.n_out()
                )));
            }
            self.output = q.decode()?;
            Some(q)
        };
        self.compressed = Some(std::sync::Arc::new(Compressed {
            opts,
            input,
            output,
        }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_pack_and_unpack_and_bad_bytes_are_refused() {
        let ids = vec![0, 1, 127, 128, 300, 1 << 21, u32::MAX];
        let b = pack_ids(&ids);
        assert_eq!(unpack_ids(&b, ids.len()).unwrap(), ids);
        assert!(unpack_ids(&b, ids.len() + 1).is_err());
        assert!(unpack_ids(&b[..b.len() - 1], ids.len()).is_err());
        assert!(unpack_ids(&[1, 0], 2).unwrap_err().contains("repeats"));
        assert!(unpack_ids(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01], 1).is_err());
        assert!(unpack_ids(&[0xff, 0xff, 0xff, 0xff, 0x0f, 1], 2)
            .unwrap_err()
            .contains("beyond"));
        assert!(unpack_ids(&[1, 1], 1).unwrap_err().contains("follow"));
        for cut in 0..b.len() {
            let _ = unpack_ids(&b[..cut], ids.len());
        }
    }

    #[test]
    fn a_matrix_of_few_distinct_rows_decodes_exactly() {
        // Four distinct rows repeated: with k >= 4 centroids per subspace, k-means finds
        // them all, so decoding is exact, with and without norms.
        let base = [
            [1.0f32, 2.0, -1.0],
            [0.5, 0.0, 3.0],
            [0.0, 0.0, 0.0],
            [-2.0, 1.0, 1.0],
        ];
        let x: Vec<f32> = (0..40).flat_map(|i| base[i % 4]).collect();
        for qnorm in [false, true] {
            let o = QuantizeOptions {
                qnorm,
                ..Default::default()
            };
            let q = QMatrix::fit(&x, 40, 3, &o).unwrap();
            assert_eq!(q.codes.len(), 40);
            let y = q.decode().unwrap();
            for (a, b) in x.iter().zip(&y) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b} (qnorm {qnorm})");
            }
        }
    }
}

#[cfg(test)]
mod model_tests {
    use super::*;
    use crate::model::loss::LossKind;
    use crate::model::Head;
    use crate::train::{train, Dataset};

    /// A trained model on rows whose label is given by word 100 + label.
    fn model(loss: LossKind, head: Head, dim: usize) -> (Model, Vec<Vec<u32>>) {
        let n_labels = 5u32;
        let (mut off, mut tok, mut loff, mut lab) = (vec![0], vec![], vec![0], vec![]);
        let mut texts = Vec::new();
        for i in 0..2000u32 {
            let y = i % n_labels;
            let row = [100 + y, 1000 + (i * 7919) % 600, 2000 + (i * 104729) % 900];
            tok.extend(row);
            texts.push(row.to_vec());
            off.push(tok.len());
            lab.push(y);
            loff.push(lab.len());
        }
        let data = Dataset {
            offsets: &off,
            tokens: &tok,
            weights: None,
            label_offsets: &loff,
            labels: &lab,
        };
        let cfg = crate::model::ModelConfig {
            dim,
            loss,
            head,
            epoch: 5,
            lr: 0.5,
            threads: 1,
            ..Default::default()
        };
        let names = (0..n_labels).map(|i| format!("l{i}")).collect();
        (train(cfg, names, &data, &|_| true).unwrap(), texts)
    }

    fn top1(m: &Model, rows: &[Vec<u32>]) -> Vec<usize> {
        let mut h = vec![0.0; m.width()];
        let mut p = Vec::new();
        rows.iter()
            .map(|r| {
                m.hidden(r, None, &mut h);
                m.probs(&h, &mut p);
                (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap()
            })
            .collect()
    }

    #[test]
    fn quantized_models_predict_alike_save_smaller_and_load_identically() {
        for (loss, head) in [
            (LossKind::Softmax, Head::Bottleneck),
            (LossKind::Hs, Head::Bottleneck),
            (LossKind::Ns, Head::Bottleneck),
            (LossKind::Softmax, Head::Linear),
        ] {
            let (m, rows) = model(loss, head, 16);
            let before = top1(&m, &rows);
            for (qnorm, qout, cutoff) in [(false, false, 0), (true, true, 0), (true, false, 800)] {
                let o = QuantizeOptions {
                    qnorm,
                    qout,
                    cutoff,
                    ..Default::default()
                };
                let q = m.quantize(&o).unwrap();
                let after = top1(&q, &rows);
                let same = before.iter().zip(&after).filter(|(a, b)| a == b).count();
                assert!(
                    same >= 1900,
                    "{loss:?} {head:?} {o:?}: {same} of 2000 agree"
                );
                let (a, b) = (m.to_bytes().unwrap(), q.to_bytes().unwrap());
                assert!(
                    b.len() * 2 < a.len(),
                    "{loss:?} {o:?}: {} vs {}",
                    b.len(),
                    a.len()
                );
                let back = Model::from_bytes(&b, "mem").unwrap();
                assert_eq!(back.input, q.input);
                assert_eq!(back.output, q.output);
                assert_eq!(back.index.ids, q.index.ids);
                assert_eq!(back.to_bytes().unwrap(), b);
                if cutoff > 0 {
                    assert_eq!(q.index.len(), cutoff);
                }
                // Every cut of the file is an error, never a panic.
                for cut in (0..b.len()).step_by(b.len() / 97 + 1) {
                    assert!(Model::from_bytes(&b[..cut], "mem").is_err());
                }
            }
        }
    }

    #[test]
    fn bad_options_are_refused() {
        let (m, _) = model(LossKind::Softmax, Head::Bottleneck, 4);
        let e = |o: QuantizeOptions| m.quantize(&o).unwrap_err().to_string();
        assert!(e(QuantizeOptions {
            dsub: 0,
            ..Default::default()
        })
        .contains("dsub"));
        assert!(e(QuantizeOptions {
            dsub: 5,
            ..Default::default()
        })
        .contains("dsub = 5"));
        let q = m.quantize(&QuantizeOptions::default()).unwrap();
        assert!(q
            .quantize(&QuantizeOptions::default())
            .unwrap_err()
            .to_string()
            .contains("already"));
    }
}

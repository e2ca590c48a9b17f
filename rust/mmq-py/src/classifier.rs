//! `mmq._mmq.Classifier`: the trained model, wrapped for Python.
use crate::columns;
use crate::errors::{input_err, IntoPy};
use crate::quantizer::PyQuantizer;
use mmq_core::eval::evaluate;
use mmq_core::model::dense::{assign_offsets, DenseInput};
use mmq_core::model::{Head, Model, ModelConfig, RankScratch, Ranked, BLOCK};
use mmq_core::text::{Scratch, Tokenizer};
use mmq_core::train::{self, Dataset, Progress, TrainOptions};
use mmq_core::MmqError;
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use pyo3_polars::PySeries;
use rayon::prelude::*;

/// Rows given as features (offsets, tokens, values) with their labels.
type FeatureRows<'py> = (
    PyReadonlyArray1<'py, u64>,
    PyReadonlyArray1<'py, u32>,
    PyReadonlyArray1<'py, f32>,
    PySeries,
);

#[pyclass(module = "mmq._mmq", name = "RustClassifier", frozen)]
pub struct PyClassifier {
    pub model: Model,
    tokenizer: Tokenizer,
}

/// Tokenize rows in parallel into CSR arrays.
pub fn tokenize_rows(tok: &Tokenizer, texts: &[&str]) -> (Vec<usize>, Vec<u32>) {
    let per_row: Vec<Vec<u32>> = texts
        .par_iter()
        .map_init(Scratch::default, |scratch, t| {
            let mut v = Vec::new();
            tok.tokenize_into(t, &mut v, scratch);
            v
        })
        .collect();
    let mut offsets = Vec::with_capacity(per_row.len() + 1);
    offsets.push(0);
    let total: usize = per_row.iter().map(|v| v.len()).sum();
    let mut ids = Vec::with_capacity(total);
    for v in per_row {
        ids.extend_from_slice(&v);
        offsets.push(ids.len());
    }
    (offsets, ids)
}

/// Top-k label indices and probabilities, flat n*k arrays.
pub type Predictions<'py> = (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<f32>>);

/// One dense column of a batch, as Python passes it: the present rows' vectors (or
/// codes), and a presence mask over all rows.
pub type DenseArg<'py> = (
    String,
    Option<PyReadonlyArray2<'py, f32>>,
    Option<PyReadonlyArray2<'py, u16>>,
    PyReadonlyArray1<'py, bool>,
);

/// Codes of one dense column for a batch: `codes` has m values per present row;
/// `row_of[i]` is the present-row index of row i (or u32::MAX when missing).
pub struct DenseBatch {
    codes: Vec<u16>,
    row_of: Vec<u32>,
}

pub struct DenseView<'a> {
    pub vectors: Option<(&'a [f32], usize)>,
    pub codes: Option<(&'a [u16], usize)>,
    pub present: &'a [bool],
}

fn dense_views<'a>(
    dense: &'a [DenseInput],
    args: &'a [DenseArg<'_>],
    n: usize,
) -> PyResult<Vec<DenseView<'a>>> {
    if args.len() != dense.len() {
        return Err(input_err(format!(
            "the model has {} dense column(s) ({:?}); got {}",
            dense.len(),
            dense.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
            args.len()
        )));
    }
    let mut out = Vec::new();
    for (d, (name, vec, codes, present)) in dense.iter().zip(args) {
        if name != &d.name {
            return Err(input_err(format!(
                "expected dense column '{}', got '{name}'",
                d.name
            )));
        }
        let present = present.as_slice().map_err(|e| input_err(e.to_string()))?;
        if present.len() != n {
            return Err(input_err(format!(
                "dense column '{name}': {} presence flags for {n} rows",
                present.len()
            )));
        }
        let n_present = present.iter().filter(|&&p| p).count();
        let view = |shape: &[usize], what: &str, want: usize| -> PyResult<()> {
            if shape[0] != n_present || shape[1] != want {
                return Err(input_err(format!(
                    "dense column '{name}': expected {n_present} {what} of width {want}, got {} × {}",
                    shape[0], shape[1]
                )));
            }
            Ok(())
        };
        let v = match vec {
            Some(a) => {
                view(a.shape(), "vectors", d.quantizer.d())?;
                Some((
                    a.as_slice().map_err(|e| input_err(e.to_string()))?,
                    n_present,
                ))
            }
            None => None,
        };
        let c = match codes {
            Some(a) => {
                view(a.shape(), "code rows", d.quantizer.m())?;
                Some((
                    a.as_slice().map_err(|e| input_err(e.to_string()))?,
                    n_present,
                ))
            }
            None => None,
        };
        if v.is_none() && c.is_none() {
            return Err(input_err(format!(
                "dense column '{name}': neither vectors nor codes given"
            )));
        }
        out.push(DenseView {
            vectors: v,
            codes: c,
            present,
        });
    }
    Ok(out)
}

/// Encode (or check) every dense column of a batch; runs without the GIL.
pub fn encode_batches(
    dense: &[DenseInput],
    views: &[DenseView],
) -> mmq_core::Result<Vec<DenseBatch>> {
    let mut out = Vec::new();
    for (d, v) in dense.iter().zip(views) {
        let q = &d.quantizer;
        let codes = match (v.codes, v.vectors) {
            (Some((c, _)), _) => {
                check_codes(d, c)?;
                c.to_vec()
            }
            (None, Some((x, n))) => q.encode(x, n).map_err(|e| match e {
                MmqError::InvalidInput(m) => {
                    MmqError::InvalidInput(format!("dense column '{}': {m}", d.name))
                }
                e => e,
            })?,
            (None, None) => unreachable!(),
        };
        let row_of = present_rows(v.present);
        out.push(DenseBatch { codes, row_of });
    }
    Ok(out)
}

/// Every code of a dense column's rows is below its quantizer's k.
fn check_codes(d: &DenseInput, c: &[u16]) -> mmq_core::Result<()> {
    let q = &d.quantizer;
    match c.iter().position(|&x| x as usize >= q.k()) {
        Some(bad) => Err(MmqError::InvalidInput(format!(
            "dense column '{}': code {} at row {} is out of range for k = {}",
            d.name,
            c[bad],
            bad / q.m(),
            q.k()
        ))),
        None => Ok(()),
    }
}

/// For each row, its index among the present rows (`u32::MAX` where absent).
fn present_rows(present: &[bool]) -> Vec<u32> {
    let mut next = 0u32;
    present
        .iter()
        .map(|&p| {
            if p {
                next += 1;
                next - 1
            } else {
                u32::MAX
            }
        })
        .collect()
}

/// Append row i's visual tokens (and their weight) to `ids` / `weights`.
fn push_dense(
    dense: &[DenseInput],
    batches: &[DenseBatch],
    i: usize,
    alpha: f32,
    ids: &mut Vec<u32>,
    weights: &mut Vec<f32>,
) {
    for (d, b) in dense.iter().zip(batches) {
        let r = b.row_of[i];
        if r == u32::MAX {
            continue;
        }
        let m = d.quantizer.m();
        for (j, &c) in b.codes[r as usize * m..(r as usize + 1) * m]
            .iter()
            .enumerate()
        {
            ids.push(d.token(j, c));
            weights.push(alpha);
        }
    }
}

/// One dense column's codes for training (used by `fit` only): the caller's codes
/// borrowed after a range check, or its vectors encoded. `row_of[i]` is row i's index
/// among the present rows (u32::MAX when missing).
struct FitCodes<'a> {
    codes: std::borrow::Cow<'a, [u16]>,
    row_of: Vec<u32>,
}

fn fit_codes<'a>(
    dense: &[DenseInput],
    views: &[DenseView<'a>],
) -> mmq_core::Result<Vec<FitCodes<'a>>> {
    let mut out = Vec::with_capacity(dense.len());
    for (d, v) in dense.iter().zip(views) {
        let q = &d.quantizer;
        let codes = match (v.codes, v.vectors) {
            (Some((c, _)), _) => {
                check_codes(d, c)?;
                std::borrow::Cow::Borrowed(c)
            }
            (None, Some((x, n))) => {
                std::borrow::Cow::Owned(q.encode(x, n).map_err(|e| match e {
                    MmqError::InvalidInput(m) => {
                        MmqError::InvalidInput(format!("dense column '{}': {m}", d.name))
                    }
                    e => e,
                })?)
            }
            (None, None) => unreachable!(),
        };
        let row_of = present_rows(v.present);
        out.push(FitCodes { codes, row_of });
    }
    Ok(out)
}

/// The options of every binding's `quantize` (fastText's names).
pub(crate) fn quantize_options(
    cutoff: usize,
    dsub: usize,
    qnorm: bool,
    qout: bool,
    seed: u64,
) -> mmq_core::model::compress::QuantizeOptions {
    mmq_core::model::compress::QuantizeOptions {
        cutoff,
        dsub,
        qnorm,
        qout,
        seed,
    }
}

/// Every binding's `quantized_json`: the options a model was quantized with, as JSON.
pub(crate) fn options_json(
    o: Option<&mmq_core::model::compress::QuantizeOptions>,
) -> Option<String> {
    o.and_then(|o| serde_json::to_string(o).ok())
}

/// The training rows in CSR form (used by `fit` only): each row's text tokens, then
/// its visual tokens; per-token weights (1 for text, `alpha` for visual tokens) only
/// when some token weighs other than 1, since no weights means weight 1 for all.
/// Built block by block, in parallel within a block, straight into the final arrays:
/// peak memory is those arrays plus one block (no per-row vectors, no second copy).
fn fit_csr(
    tok: &Tokenizer,
    texts: &[&str],
    dense: &[DenseInput],
    codes: &[FitCodes],
    alpha: f32,
    rare: &std::collections::HashSet<u32>,
) -> (Vec<usize>, Vec<u32>, Vec<f32>) {
    const BLOCK: usize = 1 << 16;
    const PIECE: usize = 1 << 10;
    let weighted = !dense.is_empty() && alpha != 1.0;
    let n = texts.len();
    let mut offsets = Vec::with_capacity(n + 1);
    offsets.push(0usize);
    let (mut ids, mut weights) = (Vec::new(), Vec::new());
    for b0 in (0..n).step_by(BLOCK) {
        let block = &texts[b0..(b0 + BLOCK).min(n)];
        let pieces: Vec<(Vec<u32>, Vec<u32>, Vec<f32>)> = block
            .par_chunks(PIECE)
            .enumerate()
            .map_init(Scratch::default, |scratch, (pi, chunk)| {
                let (mut lens, mut ids, mut w) =
                    (Vec::with_capacity(chunk.len()), Vec::new(), Vec::new());
                for (j, t) in chunk.iter().enumerate() {
                    let (i, start) = (b0 + pi * PIECE + j, ids.len());
                    if rare.is_empty() {
                        tok.tokenize_into(t, &mut ids, scratch);
                    } else {
                        tok.tokenize_into_without(t, &mut ids, scratch, rare);
                    }
                    if weighted {
                        w.resize(ids.len(), 1.0);
                    }
                    for (d, c) in dense.iter().zip(codes) {
                        let r = c.row_of[i];
                        if r == u32::MAX {
                            continue;
                        }
                        let m = d.quantizer.m();
                        let row = &c.codes[r as usize * m..(r as usize + 1) * m];
                        ids.extend(row.iter().enumerate().map(|(j, &c)| d.token(j, c)));
                        if weighted {
                            w.resize(ids.len(), alpha);
                        }
                    }
                    lens.push((ids.len() - start) as u32);
                }
                (lens, ids, w)
            })
            .collect();
        for (lens, piece_ids, piece_w) in pieces {
            let mut end = *offsets.last().unwrap_or(&0);
            offsets.extend(lens.iter().map(|&l| {
                end += l as usize;
                end
            }));
            ids.extend_from_slice(&piece_ids);
            weights.extend_from_slice(&piece_w);
        }
    }
    ids.shrink_to_fit();
    weights.shrink_to_fit();
    (offsets, ids, weights)
}

/// `class_weight` (label name → weight; a label not named weighs 1) in the order of
/// `names`; a name that is not a training label, or every weight 0, is an error.
fn class_weights(
    map: &std::collections::HashMap<String, f32>,
    names: &[String],
) -> PyResult<Vec<f32>> {
    let known: std::collections::HashSet<&str> = names.iter().map(|n| n.as_str()).collect();
    let mut unknown: Vec<&str> = map
        .keys()
        .map(|k| k.as_str())
        .filter(|k| !known.contains(k))
        .collect();
    if !unknown.is_empty() {
        unknown.sort_unstable();
        unknown.truncate(10);
        return Err(input_err(format!(
            "class_weight names label(s) {unknown:?} that are not training labels ({} labels, e.g. {:?})",
            names.len(),
            &names[..names.len().min(5)]
        )));
    }
    let w: Vec<f32> = names
        .iter()
        .map(|n| map.get(n).copied().unwrap_or(1.0))
        .collect();
    if !w.iter().any(|&x| x > 0.0) {
        return Err(input_err(
            "class_weight gives every training label weight 0: nothing would be trained",
        ));
    }
    Ok(w)
}

pub fn progress_dict<'py>(py: Python<'py>, p: &Progress) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("progress", p.progress)?;
    d.set_item("epoch", p.epoch)?;
    d.set_item("lr", p.lr)?;
    d.set_item("loss", p.loss)?;
    d.set_item("tokens_per_sec_per_thread", p.tokens_per_sec_per_thread)?;
    Ok(d)
}

/// Top-k rows as flat n*k arrays: label index (-1 past a row's predictions) and
/// probability (NaN there).
pub fn flatten_ranked(r: &[Ranked], k: usize) -> (Vec<i64>, Vec<f32>) {
    let mut idx = vec![-1i64; r.len() * k];
    let mut probs = vec![f32::NAN; r.len() * k];
    for (i, row) in r.iter().enumerate() {
        for (j, &(l, p)) in row.iter().enumerate() {
            idx[i * k + j] = l as i64;
            probs[i * k + j] = p;
        }
    }
    (idx, probs)
}

/// An evaluation as the dict the Python layer reads.
pub fn eval_dict<'py>(
    py: Python<'py>,
    e: &mmq_core::eval::Evaluation,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("rows", e.rows)?;
    d.set_item("predicted", e.predicted)?;
    d.set_item("gold", e.gold)?;
    d.set_item("correct", e.correct)?;
    let per: Vec<(u64, u64, u64)> = e
        .per_label
        .iter()
        .map(|s| (s.tp, s.predicted, s.gold))
        .collect();
    d.set_item("per_label", per)?;
    Ok(d)
}

/// Calls a Python progress callable (if any) from a training thread; false once the
/// call was cancelled (Ctrl-C on the waiting thread, see [`crate::pool::detach_cancel`]).
pub fn report_progress(
    progress: &Option<Py<PyAny>>,
    p: &Progress,
    cancel: &crate::pool::Cancel,
) -> bool {
    if cancel.requested() {
        return false;
    }
    if let Some(cb) = progress {
        Python::attach(|py| {
            if let Ok(d) = progress_dict(py, p) {
                if let Err(e) = cb.call1(py, (d,)) {
                    e.print(py);
                }
            }
        });
    }
    !cancel.requested()
}

impl PyClassifier {
    pub fn from_model(model: Model) -> PyResult<Self> {
        let tokenizer = model.tokenizer().py_err()?;
        Ok(Self { model, tokenizer })
    }

    /// Token ids and weights of row i (text, then visual tokens).
    pub fn row_tokens(
        &self,
        text: &str,
        batches: &[DenseBatch],
        i: usize,
        scratch: &mut Scratch,
        ids: &mut Vec<u32>,
        w: &mut Vec<f32>,
    ) {
        ids.clear();
        w.clear();
        self.tokenizer.tokenize_into(text, ids, scratch);
        if !batches.is_empty() {
            w.resize(ids.len(), 1.0);
            push_dense(&self.model.dense, batches, i, self.model.cfg.alpha, ids, w);
        }
    }

    /// Top `k` labels of every row, scored [`BLOCK`] rows at a time
    /// ([`Model::predict_block`]); blocks run in parallel on the pool when `parallel`.
    pub fn predict_rows(
        &self,
        texts: &[&str],
        batches: &[DenseBatch],
        k: usize,
        threshold: f32,
        parallel: bool,
    ) -> Vec<Ranked> {
        let m = &self.model;
        let width = m.width();
        let init = || {
            (
                Scratch::default(),
                Vec::new(),
                Vec::new(),
                vec![0.0f32; BLOCK * width],
                RankScratch::default(),
            )
        };
        let block = |(scratch, ids, w, hidden, rs): &mut (
            Scratch,
            Vec<u32>,
            Vec<f32>,
            Vec<f32>,
            RankScratch,
        ),
                     b: usize| {
            let rows = b * BLOCK..((b + 1) * BLOCK).min(texts.len());
            let n = rows.len();
            for (j, i) in rows.enumerate() {
                self.row_tokens(texts[i], batches, i, scratch, ids, w);
                let h = &mut hidden[j * width..(j + 1) * width];
                m.hidden(ids, (!w.is_empty()).then_some(&w[..]), h);
            }
            m.predict_block(hidden, n, k, threshold, rs)
        };
        let n_blocks = texts.len().div_ceil(BLOCK);
        let blocks: Vec<Vec<Ranked>> = if parallel {
            (0..n_blocks)
                .into_par_iter()
                .map_init(init, block)
                .collect()
        } else {
            let mut st = init();
            (0..n_blocks).map(|b| block(&mut st, b)).collect()
        };
        blocks.into_iter().flatten().collect()
    }

    fn batches(
        &self,
        py: Python<'_>,
        dense: &[DenseArg<'_>],
        n: usize,
    ) -> PyResult<Vec<DenseBatch>> {
        let views = dense_views(&self.model.dense, dense, n)?;
        let d = &self.model.dense;
        crate::pool::detach(py, || encode_batches(d, &views)).py_err()
    }
}

/// A classifier configuration from the Python layer's JSON, validated.
fn parse_config(config_json: &str) -> PyResult<ModelConfig> {
    let cfg: ModelConfig = serde_json::from_str(config_json)
        .map_err(|e| input_err(format!("bad configuration: {e}")))?;
    cfg.validate().py_err()?;
    Ok(cfg)
}

/// The `k` a ranking call (predict, test) of a model of `n_labels` labels uses: `k` >= 1
/// (else an error), clamped to `n_labels` before anything of size n × k is allocated; and
/// `threshold` must be a number (NaN would silently reject every label).
pub fn ranking_k(k: usize, threshold: f32, n_labels: usize) -> PyResult<usize> {
    let bad = |m: String| {
        Err(crate::errors::to_py(mmq_core::MmqError::InvalidParameter(
            m,
        )))
    };
    if k < 1 {
        return bad(format!("k must be >= 1, got {k}"));
    }
    if threshold.is_nan() {
        return bad("threshold must be a number, got nan".into());
    }
    Ok(k.min(n_labels.max(1)))
}

/// The training rows of a fit from a LazyFrame, tokenized batch by batch (each row's
/// text tokens, then its code tokens, as [`fit_csr`] builds them) so that the text
/// column is never held whole: `RustClassifier.fit(..., rows=this)` trains on them and
/// takes the arrays (the builder is empty afterwards).
#[pyclass(module = "mmq._mmq", name = "RustTokenRows")]
pub struct PyTokenRows {
    tokenizer: Tokenizer,
    dense: Vec<DenseInput>,
    alpha: f32,
    // Built once: a pool per batch would start new threads each time, and glibc gives
    // every new thread's allocations an arena of its own (up to 8 per core) that keeps
    // its freed buffers for the rest of the process.
    pool: Option<rayon::ThreadPool>,
    offsets: Vec<usize>,
    ids: Vec<u32>,
    weights: Vec<f32>,
}

#[pymethods]
impl PyTokenRows {
    #[new]
    #[pyo3(signature = (config_json, quantizers=vec![]))]
    fn new(config_json: &str, quantizers: Vec<(String, PyRef<'_, PyQuantizer>)>) -> PyResult<Self> {
        crate::errors::guard("TokenRows", || {
            let cfg = parse_config(config_json)?;
            if cfg.min_count != 1 {
                return Err(crate::errors::to_py(MmqError::InvalidParameter(format!(
                    "min_count {} needs every row's words counted before tokenizing; rows \
                     tokenized batch by batch need min_count 1",
                    cfg.min_count
                ))));
            }
            let qs = quantizers
                .iter()
                .map(|(n, q)| (n.clone(), q.q.clone()))
                .collect();
            Ok(Self {
                tokenizer: Tokenizer::new(cfg.tokenizer.clone()).py_err()?,
                dense: assign_offsets(cfg.tokenizer.bucket, qs).py_err()?,
                alpha: cfg.alpha,
                pool: rayon::ThreadPoolBuilder::new()
                    .num_threads(cfg.threads)
                    .build()
                    .ok(),
                offsets: vec![0],
                ids: Vec::new(),
                weights: Vec::new(),
            })
        })
    }

    /// Append a batch: its text column and its dense columns (as `fit` takes them).
    #[pyo3(signature = (text, text_name, dense=vec![]))]
    fn add(
        &mut self,
        py: Python<'_>,
        text: PySeries,
        text_name: &str,
        dense: Vec<DenseArg<'_>>,
    ) -> PyResult<()> {
        crate::errors::guard("TokenRows.add", || {
            let text = text.0;
            let texts = columns::texts(&text, text_name)?;
            let views = dense_views(&self.dense, &dense, texts.len())?;
            let codes = fit_codes(&self.dense, &views).py_err()?;
            let none = std::collections::HashSet::new();
            let (tok, dense_inputs, alpha, pool) =
                (&self.tokenizer, &self.dense, self.alpha, &self.pool);
            let (offsets, ids, weights) = crate::pool::detach(py, || {
                let build = || fit_csr(tok, &texts, dense_inputs, &codes, alpha, &none);
                match pool {
                    Some(p) => p.install(build),
                    None => build(),
                }
            })?;
            let base = self.ids.len();
            self.offsets.extend(offsets[1..].iter().map(|&o| base + o));
            self.ids.extend_from_slice(&ids);
            if !weights.is_empty() {
                // Weights exist for every batch or for none (alpha and dense columns are fixed).
                self.weights.extend_from_slice(&weights);
            }
            Ok(())
        })
    }

    /// Rows added so far.
    fn __len__(&self) -> usize {
        self.offsets.len() - 1
    }
}

#[pymethods]
impl PyClassifier {
    /// Train on a String column and a String or List[String] label column. With `rows`
    /// (a [`PyTokenRows`] built with the same config and quantizers) the rows come
    /// tokenized from it and `text` and `dense` must be empty.
    #[staticmethod]
    #[pyo3(signature = (config_json, text, labels, text_name, label_name, progress=None, quantizers=vec![], dense=vec![], valid=None, patience=None, calibrate=false, max_seconds=None, class_weight=None, init=None, frozen=false, pretrained=None, rows=None))]
    #[allow(clippy::too_many_arguments)]
    fn fit(
        py: Python<'_>,
        config_json: &str,
        text: PySeries,
        labels: PySeries,
        text_name: &str,
        label_name: &str,
        progress: Option<Py<PyAny>>,
        quantizers: Vec<(String, PyRef<'_, PyQuantizer>)>,
        dense: Vec<DenseArg<'_>>,
        valid: Option<(PySeries, PySeries, Vec<DenseArg<'_>>)>,
        patience: Option<usize>,
        calibrate: bool,
        max_seconds: Option<f64>,
        class_weight: Option<std::collections::HashMap<String, f32>>,
        init: Option<PyRef<'_, PyClassifier>>,
        frozen: bool,
        pretrained: Option<(PyReadonlyArray1<'_, u32>, PyReadonlyArray2<'_, f32>)>,
        rows: Option<PyRefMut<'_, PyTokenRows>>,
    ) -> PyResult<Self> {
        let mut rows = rows;
        let pre = rows.as_mut().map(|r| {
            (
                std::mem::take(&mut r.offsets),
                std::mem::take(&mut r.ids),
                std::mem::take(&mut r.weights),
            )
        });
        if let Some(r) = rows.as_mut() {
            r.offsets.push(0);
        }
        let pretrained = match &pretrained {
            Some((ids, rows)) => Some((ids.as_slice()?, rows.as_slice()?)),
            None => None,
        };
        let init = init.as_ref().map(|m| &m.model);
        crate::errors::guard("Classifier.fit", || {
            let deadline = crate::columns::deadline(max_seconds)?;
            let cfg = parse_config(config_json)?;
            let tokenizer = Tokenizer::new(cfg.tokenizer.clone()).py_err()?;
            let text = text.0;
            let labels = labels.0;
            if pre.is_some() && (!text.is_empty() || !dense.is_empty() || init.is_some()) {
                return Err(input_err(
                    "rows tokenized beforehand come without text, dense columns or a starting model",
                ));
            }
            let n_rows = pre.as_ref().map_or(text.len(), |p| p.0.len() - 1);
            if n_rows != labels.len() {
                return Err(input_err(format!(
                    "'{text_name}' has {n_rows} rows but '{label_name}' has {}",
                    labels.len()
                )));
            }
            if n_rows == 0 {
                return Err(input_err("cannot fit on an empty frame (0 rows)"));
            }
            let texts = columns::texts(&text, text_name)?;
            let (names, loffsets, lidx) = match init {
                None => columns::labels(&labels, label_name, None)?,
                Some(m) => {
                    // The starting model's labels keep their indices; new ones follow.
                    let (new, _, _) = columns::labels(&labels, label_name, None)?;
                    let mut names = m.labels.clone();
                    names.extend(new.into_iter().filter(|l| !m.labels.contains(l)));
                    columns::labels(&labels, label_name, Some(&names))?
                }
            };
            let class_weights = class_weight
                .as_ref()
                .map(|w| class_weights(w, &names))
                .transpose()?;
            let qs: Vec<(String, mmq_core::quant::Quantizer)> = quantizers
                .iter()
                .map(|(n, q)| (n.clone(), q.q.clone()))
                .collect();
            let dense_inputs = match init {
                Some(m) => m.dense.clone(),
                None => assign_offsets(cfg.tokenizer.bucket, qs).py_err()?,
            };
            let tokenizer = match init {
                Some(m) => m.tokenizer().py_err()?,
                None => tokenizer,
            };
            let views = match pre {
                Some(_) => Vec::new(),
                None => dense_views(&dense_inputs, &dense, texts.len())?,
            };
            let valid_cols = match &valid {
                Some((vt, vl, _)) => {
                    let (vtexts, vlo, vli) =
                        columns::valid_texts(&vt.0, &vl.0, text_name, label_name, &names)?;
                    Some((vtexts, vlo, vli))
                }
                None => None,
            };
            let valid_views = match (&valid, &valid_cols) {
                (Some((_, _, vd)), Some((vt, _, _))) => {
                    Some(dense_views(&dense_inputs, vd, vt.len())?)
                }
                _ => None,
            };
            let alpha = cfg.alpha;
            let model = crate::pool::detach_cancel(py, |cancel| {
                let callback = |p: &Progress| -> bool { report_progress(&progress, p, cancel) };
                let threads = cfg.threads;
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build();
                // fastText's -minCount: the training rows' rare words get no row (the
                // validation rows are read as predict reads them).
                let min_count = cfg.min_count;
                let count = || tokenizer.rare_word_ids(&texts, min_count);
                let rare = match (&pool, &pre) {
                    (_, Some(_)) => Default::default(),
                    (Ok(p), None) => p.install(count),
                    (Err(_), None) => count(),
                };
                let none = std::collections::HashSet::new();
                let csr = |texts: &[&str],
                           views: &[DenseView],
                           rare: &std::collections::HashSet<u32>|
                 -> mmq_core::Result<_> {
                    let codes = fit_codes(&dense_inputs, views)?;
                    let build = || fit_csr(&tokenizer, texts, &dense_inputs, &codes, alpha, rare);
                    Ok(match &pool {
                        Ok(p) => p.install(build),
                        Err(_) => build(),
                    })
                };
                let (offsets, ids, weights) = match pre {
                    Some(p) => p,
                    None => csr(&texts, &views, &rare)?,
                };
                crate::pool::release_free_memory();
                let vcsr = match (&valid_cols, &valid_views) {
                    (Some((vt, _, _)), Some(vv)) => Some(csr(vt, vv, &none)?),
                    _ => None,
                };
                let data = Dataset {
                    offsets: &offsets,
                    tokens: &[],
                    weights: (!weights.is_empty()).then_some(&weights[..]),
                    label_offsets: &loffsets,
                    labels: &lidx,
                };
                let vdata = match (&vcsr, &valid_cols) {
                    (Some((o, t, w)), Some((_, vlo, vli))) => Some(Dataset {
                        offsets: o,
                        tokens: t,
                        weights: (!w.is_empty()).then_some(&w[..]),
                        label_offsets: vlo,
                        labels: vli,
                    }),
                    _ => None,
                };
                let opts = TrainOptions {
                    valid: vdata.as_ref(),
                    patience,
                    calibrate,
                    deadline,
                    class_weights: class_weights.as_deref(),
                    init,
                    frozen,
                    pretrained,
                };
                let mut model = train::train_owned(cfg, names, &data, ids, &opts, &callback)?;
                model.dense = dense_inputs.clone();
                Ok::<_, MmqError>(model)
            });
            Self::from_model(model.py_err()?)
        })
    }

    /// Top-k label indices (-1 where fewer than k pass the threshold) and probabilities
    /// (NaN there), each a flat array of n*k values.
    #[pyo3(signature = (text, k, threshold, dense=vec![]))]
    fn predict<'py>(
        &self,
        py: Python<'py>,
        text: PySeries,
        k: usize,
        threshold: f32,
        dense: Vec<DenseArg<'py>>,
    ) -> PyResult<Predictions<'py>> {
        crate::errors::guard("Classifier.predict", || {
            let k = ranking_k(k, threshold, self.model.n_labels())?;
            let s = text.0;
            let texts = columns::texts(&s, "text")?;
            let batches = self.batches(py, &dense, texts.len())?;
            let (idx, probs) = crate::pool::detach(py, || {
                flatten_ranked(&self.predict_rows(&texts, &batches, k, threshold, true), k)
            })?;
            Ok((idx.into_pyarray(py), probs.into_pyarray(py)))
        })
    }

    /// Every row's hidden vector (the bag's weighted mean of its known tokens' rows, or
    /// the linear head's label scores before the bias): an n × width array.
    #[pyo3(signature = (text, dense=vec![]))]
    fn embed<'py>(
        &self,
        py: Python<'py>,
        text: PySeries,
        dense: Vec<DenseArg<'py>>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        crate::errors::guard("Classifier.embed", || {
            let s = text.0;
            let texts = columns::texts(&s, "text")?;
            let batches = self.batches(py, &dense, texts.len())?;
            let width = self.model.width();
            let out = crate::pool::detach(py, || {
                let mut out = vec![0.0f32; texts.len() * width];
                out.par_chunks_mut(width).enumerate().for_each_init(
                    || (Scratch::default(), Vec::new(), Vec::new()),
                    |(scratch, ids, w), (i, h)| {
                        self.row_tokens(texts[i], &batches, i, scratch, ids, w);
                        self.model.hidden(ids, (!w.is_empty()).then_some(&w[..]), h);
                    },
                );
                out
            })?;
            numpy::ndarray::Array2::from_shape_vec((texts.len(), width), out)
                .map_err(|e| input_err(e.to_string()))
                .map(|a| a.into_pyarray(py))
        })
    }

    /// Probability of every label for every row: an n × n_labels array.
    #[pyo3(signature = (text, dense=vec![]))]
    fn predict_proba<'py>(
        &self,
        py: Python<'py>,
        text: PySeries,
        dense: Vec<DenseArg<'py>>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        crate::errors::guard("Classifier.predict_proba", || {
            let s = text.0;
            let texts = columns::texts(&s, "text")?;
            let batches = self.batches(py, &dense, texts.len())?;
            let m = &self.model;
            let nl = m.n_labels();
            let flat: Vec<f32> = crate::pool::detach(py, || {
                let rows: Vec<Vec<f32>> = texts
                    .par_iter()
                    .enumerate()
                    .map_init(
                        || {
                            (
                                Scratch::default(),
                                Vec::new(),
                                Vec::new(),
                                vec![0.0f32; m.width()],
                            )
                        },
                        |(scratch, ids, w, hidden), (i, t)| {
                            self.row_tokens(t, &batches, i, scratch, ids, w);
                            m.hidden(ids, (!w.is_empty()).then_some(&w[..]), hidden);
                            let mut p = Vec::with_capacity(nl);
                            m.probs(hidden, &mut p);
                            p
                        },
                    )
                    .collect();
                rows.concat()
            })?;
            let n = texts.len();
            numpy::ndarray::Array2::from_shape_vec((n, nl), flat)
                .map_err(|e| input_err(e.to_string()))
                .map(|a| a.into_pyarray(py))
        })
    }

    /// Evaluate on labelled rows: counts for P@k / R@k and per-label (tp, predicted, gold).
    #[pyo3(signature = (text, labels, label_name, k, threshold, dense=vec![]))]
    #[allow(clippy::too_many_arguments)]
    fn test<'py>(
        &self,
        py: Python<'py>,
        text: PySeries,
        labels: PySeries,
        label_name: &str,
        k: usize,
        threshold: f32,
        dense: Vec<DenseArg<'py>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        crate::errors::guard("Classifier.test", || {
            let k = ranking_k(k, threshold, self.model.n_labels())?;
            let (s, l) = (text.0, labels.0);
            let texts = columns::texts(&s, "text")?;
            let (_, loffsets, lidx) = columns::labels(&l, label_name, Some(&self.model.labels))?;
            let batches = self.batches(py, &dense, texts.len())?;
            let e = crate::pool::detach(py, || {
                let preds = self.predict_rows(&texts, &batches, k, threshold, true);
                evaluate(&preds, &loffsets, &lidx, self.model.n_labels())
            })?;
            eval_dict(py, &e)
        })
    }

    #[getter]
    fn labels(&self) -> Vec<String> {
        self.model.labels.clone()
    }

    /// The per-epoch record of a run with a validation split, as JSON (a list of objects).
    #[getter]
    fn history_json(&self) -> String {
        serde_json::to_string(&self.model.history).unwrap_or_default()
    }

    /// Train on rows given as features: `offsets` (n + 1), `tokens` and `values` (one
    /// value per token; negative allowed with the linear head), labels as in `fit`.
    #[staticmethod]
    #[pyo3(signature = (config_json, offsets, tokens, values, labels, label_name, valid=None, patience=None, calibrate=false, max_seconds=None))]
    #[allow(clippy::too_many_arguments)]
    fn fit_features(
        py: Python<'_>,
        config_json: &str,
        offsets: PyReadonlyArray1<'_, u64>,
        tokens: PyReadonlyArray1<'_, u32>,
        values: PyReadonlyArray1<'_, f32>,
        labels: PySeries,
        label_name: &str,
        valid: Option<FeatureRows<'_>>,
        patience: Option<usize>,
        calibrate: bool,
        max_seconds: Option<f64>,
    ) -> PyResult<Self> {
        crate::errors::guard("Classifier.fit_features", || {
            let deadline = crate::columns::deadline(max_seconds)?;
            let cfg = parse_config(config_json)?;
            let (names, loffsets, lidx) = columns::labels(&labels.0, label_name, None)?;
            let as_usize = |o: &PyReadonlyArray1<'_, u64>| -> PyResult<Vec<usize>> {
                Ok(o.as_slice()
                    .map_err(|e| input_err(e.to_string()))?
                    .iter()
                    .map(|&x| x as usize)
                    .collect())
            };
            let off = as_usize(&offsets)?;
            let tok = tokens.as_slice().map_err(|e| input_err(e.to_string()))?;
            let val = values.as_slice().map_err(|e| input_err(e.to_string()))?;
            let vparts = match &valid {
                Some((o, t, v, l)) => {
                    let (_, vlo, vli) = columns::labels(&l.0, label_name, Some(&names))?;
                    Some((
                        as_usize(o)?,
                        t.as_slice().map_err(|e| input_err(e.to_string()))?,
                        v.as_slice().map_err(|e| input_err(e.to_string()))?,
                        vlo,
                        vli,
                    ))
                }
                None => None,
            };
            let model = crate::pool::detach(py, || {
                let data = Dataset {
                    offsets: &off,
                    tokens: tok,
                    weights: Some(val),
                    label_offsets: &loffsets,
                    labels: &lidx,
                };
                let vdata = vparts.as_ref().map(|(o, t, v, lo, li)| Dataset {
                    offsets: o,
                    tokens: t,
                    weights: Some(v),
                    label_offsets: lo,
                    labels: li,
                });
                let opts = TrainOptions {
                    valid: vdata.as_ref(),
                    patience,
                    calibrate,
                    deadline,
                    class_weights: None,
                    ..Default::default()
                };
                train::train_with(cfg, names, &data, &opts, &|_| true)
            });
            Self::from_model(model.py_err()?)
        })
    }

    /// Probability of every label for rows given as features (see `fit_features`).
    fn predict_proba_features<'py>(
        &self,
        py: Python<'py>,
        offsets: PyReadonlyArray1<'py, u64>,
        tokens: PyReadonlyArray1<'py, u32>,
        values: PyReadonlyArray1<'py, f32>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        crate::errors::guard("Classifier.predict_proba_features", || {
            let off = offsets.as_slice().map_err(|e| input_err(e.to_string()))?;
            let tok = tokens.as_slice().map_err(|e| input_err(e.to_string()))?;
            let val = values.as_slice().map_err(|e| input_err(e.to_string()))?;
            if off.is_empty()
                || tok.len() != val.len()
                || off.windows(2).any(|w| w[0] > w[1])
                || *off.last().unwrap_or(&0) as usize != tok.len()
            {
                return Err(input_err(
                "features: offsets must rise from 0 to the number of tokens, one value per token",
            ));
            }
            let m = &self.model;
            let nl = m.n_labels();
            let n = off.len() - 1;
            let flat: Vec<f32> = crate::pool::detach(py, || {
                (0..n)
                    .into_par_iter()
                    .map_init(
                        || vec![0.0f32; m.width()],
                        |hidden, i| {
                            let (a, b) = (off[i] as usize, off[i + 1] as usize);
                            m.hidden(&tok[a..b], Some(&val[a..b]), hidden);
                            let mut p = Vec::with_capacity(nl);
                            m.probs(hidden, &mut p);
                            p
                        },
                    )
                    .flatten()
                    .collect()
            })?;
            numpy::ndarray::Array2::from_shape_vec((n, nl), flat)
                .map_err(|e| input_err(e.to_string()))
                .map(|a| a.into_pyarray(py))
        })
    }

    /// fastText's `quantize` ([`Model::quantize`]): a new, quantized classifier.
    #[pyo3(signature = (cutoff=0, dsub=2, qnorm=false, qout=false, seed=1234))]
    fn quantize(
        &self,
        py: Python<'_>,
        cutoff: usize,
        dsub: usize,
        qnorm: bool,
        qout: bool,
        seed: u64,
    ) -> PyResult<Self> {
        crate::errors::guard("Classifier.quantize", || {
            let o = quantize_options(cutoff, dsub, qnorm, qout, seed);
            let m = crate::pool::detach(py, || self.model.quantize(&o)).py_err()?;
            Self::from_model(m)
        })
    }

    /// A copy with the `cutoff` token rows of largest norm ([`Model::prune`]).
    fn prune(&self, py: Python<'_>, cutoff: usize) -> PyResult<Self> {
        crate::errors::guard("Classifier.quantize", || {
            let m = crate::pool::detach(py, || self.model.prune(cutoff)).py_err()?;
            Self::from_model(m)
        })
    }

    /// The options a quantized model was quantized with (JSON), None for others.
    #[getter]
    fn quantized_json(&self) -> Option<String> {
        options_json(self.model.compressed.as_ref().map(|c| &c.opts))
    }

    #[getter]
    fn config_json(&self) -> String {
        serde_json::to_string(&self.model.cfg).unwrap_or_default()
    }

    #[getter]
    fn n_rows(&self) -> usize {
        self.model.index.len()
    }

    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        crate::errors::guard("Classifier.to_bytes", || {
            let b = self.model.to_bytes().py_err()?;
            Ok(PyBytes::new(py, &b))
        })
    }

    #[staticmethod]
    #[pyo3(signature = (data, source="<bytes>"))]
    fn from_bytes(py: Python<'_>, data: &[u8], source: &str) -> PyResult<Self> {
        crate::errors::guard("Classifier.from_bytes", || {
            let m = crate::pool::detach(py, || Model::from_bytes(data, source)).py_err()?;
            Self::from_model(m)
        })
    }

    fn save(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
        crate::errors::guard("Classifier.save", || {
            crate::pool::detach(py, || self.model.save(&path)).py_err()
        })
    }

    #[staticmethod]
    fn load(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Self> {
        crate::errors::guard("Classifier.load", || {
            let m = crate::pool::detach(py, || Model::load(&path)).py_err()?;
            Self::from_model(m)
        })
    }

    /// Embedding rows, label scores and token strings for `explain`: for each token of
    /// `text`, (token string, kind, contribution to each label's score).
    #[pyo3(signature = (text, label, dense=vec![]))]
    fn explain<'py>(
        &self,
        py: Python<'py>,
        text: &str,
        label: usize,
        dense: Vec<DenseArg<'py>>,
    ) -> PyResult<Vec<(String, String, f32)>> {
        crate::errors::guard("Classifier.explain", || {
            let m = &self.model;
            if label >= m.n_labels() {
                return Err(input_err(format!("label index {label} out of range")));
            }
            let batches = self.batches(py, &dense, 1)?;
            let dim = m.cfg.dim;
            let mut toks: Vec<(u32, String, String, f32)> = self
                .tokenizer
                .tokenize_verbose(text)
                .into_iter()
                .map(|(id, k, s)| (id, s, format!("{k:?}"), 1.0))
                .collect();
            let (mut ids, mut w) = (Vec::new(), Vec::new());
            push_dense(&m.dense, &batches, 0, m.cfg.alpha, &mut ids, &mut w);
            for (&id, &wt) in ids.iter().zip(&w) {
                let (name, (j, c)) = m
                    .dense
                    .iter()
                    .find_map(|d| d.code_of(id).map(|jc| (d.name.as_str(), jc)))
                    .expect("visual token belongs to a column");
                toks.push((id, format!("{name}[{j}]={c}"), "Dense".to_string(), wt));
            }
            let known: Vec<_> = toks
                .into_iter()
                .filter_map(|(id, s, k, wt)| m.index.get(id).map(|r| (r, s, k, wt, id)))
                .collect();
            if m.cfg.head == Head::Linear {
                // Each token's feature value (shared by its occurrences) times its weight
                // for the label.
                let mut feats = Vec::new();
                m.linear_row(known.iter().map(|x| (x.4, x.0, x.3)), &mut feats);
                let vals: std::collections::HashMap<u32, f32> = feats.iter().copied().collect();
                let mut count: std::collections::HashMap<u32, f32> = Default::default();
                for x in &known {
                    *count.entry(x.0).or_default() += 1.0;
                }
                let nl = m.n_labels();
                return Ok(known
                    .into_iter()
                    .map(|(r, s, k, _, _)| {
                        let w = m.input[r as usize * nl + label];
                        (s, k, vals[&r] / count[&r] * w)
                    })
                    .collect());
            }
            let total: f32 = known.iter().map(|x| x.3).sum::<f32>().max(1e-12);
            let out_row = match m.cfg.loss {
                mmq_core::model::loss::LossKind::Hs => None,
                _ => Some(&m.output[label * dim..(label + 1) * dim]),
            };
            Ok(known
                .into_iter()
                .map(|(r, s, k, wt, _)| {
                    let e = &m.input[r as usize * dim..(r as usize + 1) * dim];
                    let score = out_row.map_or(0.0, |o| mmq_core::model::dot(e, o) * wt / total);
                    (s, k, score)
                })
                .collect())
        })
    }

    /// Names of the model's dense columns, in order, with (d, m, k).
    #[getter]
    fn dense_columns(&self) -> Vec<(String, usize, usize, usize)> {
        self.model
            .dense
            .iter()
            .map(|d| {
                (
                    d.name.clone(),
                    d.quantizer.d(),
                    d.quantizer.m(),
                    d.quantizer.k(),
                )
            })
            .collect()
    }

    /// A copy of dense column i's quantizer.
    fn dense_quantizer(&self, i: usize) -> PyResult<PyQuantizer> {
        crate::errors::guard("Classifier.dense_quantizer", || {
            self.model
                .dense
                .get(i)
                .map(|d| PyQuantizer {
                    q: d.quantizer.clone(),
                })
                .ok_or_else(|| input_err(format!("no dense column {i}")))
        })
    }

    /// Learned embedding rows of the given raw token ids (NaN rows for unseen ids).
    fn embeddings<'py>(
        &self,
        py: Python<'py>,
        ids: Vec<u32>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        crate::errors::guard("Classifier.embeddings", || {
            let m = &self.model;
            let dim = m.width();
            let mut out = vec![f32::NAN; ids.len() * dim];
            for (i, id) in ids.iter().enumerate() {
                if let Some(r) = m.index.get(*id) {
                    out[i * dim..(i + 1) * dim]
                        .copy_from_slice(&m.input[r as usize * dim..(r as usize + 1) * dim]);
                }
            }
            let a = numpy::ndarray::Array2::from_shape_vec((ids.len(), dim), out)
                .map_err(|e| input_err(e.to_string()))?;
            Ok(a.into_pyarray(py))
        })
    }

    /// Training rows per label, in the order of `labels`.
    #[getter]
    fn label_counts(&self) -> Vec<u64> {
        self.model.label_counts.clone()
    }

    /// The raw token id of each row of the input matrix (ids seen in training).
    fn token_ids<'py>(&self, py: Python<'py>) -> Bound<'py, numpy::PyArray1<u32>> {
        self.model.index.ids.clone().into_pyarray(py)
    }

    /// The output layer: `labels × dim` (hs: inner nodes × dim), or the linear head's
    /// biases (1 × labels).
    fn output_matrix<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        crate::errors::guard("Classifier.output_matrix", || {
            let m = &self.model;
            numpy::ndarray::Array2::from_shape_vec((m.n_out(), m.width()), m.output.clone())
                .map_err(|e| input_err(e.to_string()))
                .map(|a| a.into_pyarray(py))
        })
    }

    /// The word dictionary of a model imported from fastText: (words, counts), most
    /// frequent first; None for an mmq model (whose words are hashed).
    fn vocab(&self) -> Option<(Vec<String>, Vec<u64>)> {
        self.model
            .vocab
            .as_ref()
            .map(|v| (v.words.clone(), v.counts.clone()))
    }

    /// The token ids this model's tokenizer gives each text (an imported fastText
    /// model's ids come from its dictionary).
    fn tokenize_texts(&self, py: Python<'_>, texts: Vec<String>) -> PyResult<Vec<Vec<u32>>> {
        crate::pool::detach(py, || {
            let mut scratch = Scratch::default();
            texts
                .iter()
                .map(|t| {
                    let mut out = Vec::new();
                    self.tokenizer.tokenize_into(t, &mut out, &mut scratch);
                    out
                })
                .collect::<Vec<_>>()
        })
    }

    /// The ids of one word and its char n-grams (fastText's subwords; no end of
    /// sentence, no word n-grams).
    fn word_ids(&self, word: &str) -> Vec<u32> {
        self.tokenizer.subwords(word)
    }

    /// Raw token id of code c of sub-quantizer j of dense column i.
    fn dense_token(&self, i: usize, j: usize, c: u16) -> PyResult<u32> {
        crate::errors::guard("Classifier.dense_token", || {
            let d = self
                .model
                .dense
                .get(i)
                .ok_or_else(|| input_err(format!("no dense column {i}")))?;
            if j >= d.quantizer.m() || c as usize >= d.quantizer.k() {
                return Err(input_err(format!(
                    "({j}, {c}) out of range for m = {}, k = {}",
                    d.quantizer.m(),
                    d.quantizer.k()
                )));
            }
            Ok(d.token(j, c))
        })
    }
}

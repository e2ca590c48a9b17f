//! `mmq._mmq.RustSetClassifier`: models over many modalities (deepset, attention, bag
//! fusion, G-Blend), wrapped for Python.
use crate::classifier::{
    eval_dict, flatten_ranked, ranking_k, report_progress, tokenize_rows, Predictions,
};
use crate::columns;
use crate::errors::{input_err, IntoPy};
use crate::quantizer::PyQuantizer;
use mmq_core::eval::evaluate;
use mmq_core::model::sets::{
    train_sets_with, Modality, ModalityKind, ModalityRows, SetConfig, SetModel, SetRows,
};
use mmq_core::quant::Quantizer;
use mmq_core::text::{fnv1a, Tokenizer};
use mmq_core::train::{Progress, TrainOptions};
use numpy::{IntoPyArray, PyArray2, PyReadonlyArray1, PyReadonlyArray2};
use polars::prelude::{Series, StringChunked};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use pyo3_polars::PySeries;

/// One modality of a batch as Python passes it: its name, and a String column (text,
/// categorical) or the present rows' codes plus a presence mask (dense).
pub type ModalityArg<'py> = (
    String,
    Option<PySeries>,
    Option<PyReadonlyArray2<'py, u16>>,
    Option<PyReadonlyArray1<'py, bool>>,
);

#[pyclass(module = "mmq._mmq", name = "RustSetClassifier", frozen)]
pub struct PySets {
    pub model: SetModel,
    pub tokenizer: Tokenizer,
}

type Csr = (Vec<usize>, Vec<u32>);
/// Per modality (score, dims won, present), and the label's bias.
type Shares = (Vec<(f32, u32, bool)>, f32);

/// One modality of a batch, as plain data.
pub enum Input<'a> {
    /// A String column (text, or categorical values cast to String).
    Strings(&'a Series),
    /// Codes of the present rows (m per row) and the presence mask over all rows.
    Codes(&'a [u16], &'a [bool]),
}

/// Token ids (CSR) of one modality of a batch; an error message names the column.
pub fn modality_tokens(
    m: &Modality,
    tokenizer: &Tokenizer,
    quantizer: Option<&Quantizer>,
    input: Input<'_>,
) -> Result<Csr, String> {
    let name = &m.name;
    let strings = |s: &Series| -> Result<StringChunked, String> {
        s.str().cloned().map_err(|_| {
            format!(
                "{} column '{name}' must be String, found {}",
                if m.kind == ModalityKind::Text {
                    "text"
                } else {
                    "categorical"
                },
                s.dtype()
            )
        })
    };
    match (m.kind, input) {
        (ModalityKind::Text, Input::Strings(s)) => {
            let ca = strings(s)?;
            let texts: Vec<&str> = ca.iter().map(|o| o.unwrap_or("")).collect();
            let (offsets, ids) = tokenize_rows(tokenizer, &texts);
            if ca.null_count() == 0 {
                return Ok((offsets, ids));
            }
            // A null text is the empty set (not the end-of-sentence token of "").
            let mut o2 = Vec::with_capacity(offsets.len());
            o2.push(0);
            let mut i2 = Vec::with_capacity(ids.len());
            for (i, v) in ca.iter().enumerate() {
                if v.is_some() {
                    i2.extend_from_slice(&ids[offsets[i]..offsets[i + 1]]);
                }
                o2.push(i2.len());
            }
            Ok((o2, i2))
        }
        (ModalityKind::Categorical, Input::Strings(s)) => {
            let ca = strings(s)?;
            let mut offsets = Vec::with_capacity(ca.len() + 1);
            offsets.push(0);
            let mut ids = Vec::with_capacity(ca.len());
            for v in ca.iter() {
                if let Some(v) = v {
                    ids.push(fnv1a(v.as_bytes()));
                }
                offsets.push(ids.len());
            }
            Ok((offsets, ids))
        }
        (ModalityKind::Dense, Input::Codes(codes, present)) => {
            let q = quantizer
                .ok_or_else(|| format!("dense column '{name}' has no fitted quantizer"))?;
            let np = present.iter().filter(|&&p| p).count();
            let (mq, kq) = (q.m(), q.k());
            if codes.len() != np * mq {
                return Err(format!(
                    "dense column '{name}': expected {np} code rows of width {mq}, got {} codes",
                    codes.len()
                ));
            }
            if let Some(bad) = codes.iter().position(|&c| c as usize >= kq) {
                return Err(format!(
                    "dense column '{name}': code {} in present row {} is out of range for k = {kq}",
                    codes[bad],
                    bad / mq
                ));
            }
            let mut offsets = Vec::with_capacity(present.len() + 1);
            offsets.push(0);
            let mut ids = Vec::with_capacity(np * mq);
            let mut r = 0usize;
            for &p in present {
                if p {
                    for (j, &c) in codes[r * mq..(r + 1) * mq].iter().enumerate() {
                        ids.push((j * kq) as u32 + c as u32);
                    }
                    r += 1;
                }
                offsets.push(ids.len());
            }
            Ok((offsets, ids))
        }
        (kind, _) => Err(format!(
            "column '{name}' ({kind:?}) was given in the wrong form"
        )),
    }
}

/// Token ids of every modality of a batch (CSR per modality), checking that all have
/// the same number of rows; returns them and the row count.
pub fn batch_tokens(
    cfg: &SetConfig,
    tokenizer: &Tokenizer,
    quantizers: &[Option<Quantizer>],
    inputs: Vec<Input<'_>>,
) -> Result<(Vec<Csr>, usize), String> {
    if inputs.len() != cfg.modalities.len() {
        return Err(format!(
            "the model reads {} column(s) {:?}, got {}",
            cfg.modalities.len(),
            cfg.modalities
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>(),
            inputs.len()
        ));
    }
    let mut out = Vec::with_capacity(inputs.len());
    for (k, (m, input)) in cfg.modalities.iter().zip(inputs).enumerate() {
        let csr = modality_tokens(
            m,
            tokenizer,
            quantizers.get(k).and_then(|q| q.as_ref()),
            input,
        )?;
        if let Some((first, _)) = out.first() {
            let (n, rows) = (Vec::len(first) - 1, csr.0.len() - 1);
            if n != rows {
                return Err(format!(
                    "column '{}' has {rows} rows, the others {n}",
                    m.name
                ));
            }
        }
        out.push(csr);
    }
    let n = out.first().map_or(0, |(o, _)| o.len() - 1);
    Ok((out, n))
}

/// [`batch_tokens`] for the arguments Python passes.
fn modality_csr(
    py: Python<'_>,
    cfg: &SetConfig,
    tokenizer: &Tokenizer,
    quantizers: &[Option<Quantizer>],
    args: &[ModalityArg<'_>],
) -> PyResult<(Vec<Csr>, usize)> {
    let mut inputs = Vec::with_capacity(args.len());
    for (m, (name, series, codes, present)) in cfg.modalities.iter().zip(args) {
        if name != &m.name {
            return Err(input_err(format!(
                "expected column '{}', got '{name}'",
                m.name
            )));
        }
        let input = match (series, codes, present) {
            (Some(s), _, _) => Input::Strings(&s.0),
            (None, Some(c), Some(p)) => Input::Codes(
                c.as_slice().map_err(|e| input_err(e.to_string()))?,
                p.as_slice().map_err(|e| input_err(e.to_string()))?,
            ),
            _ => return Err(input_err(format!("column '{name}' not given"))),
        };
        inputs.push(input);
    }
    if inputs.len() != args.len() {
        return Err(input_err(format!(
            "{} columns for {} modalities",
            args.len(),
            cfg.modalities.len()
        )));
    }
    crate::pool::detach(py, || batch_tokens(cfg, tokenizer, quantizers, inputs))?.map_err(input_err)
}

fn views(csr: &[Csr]) -> Vec<ModalityRows<'_>> {
    csr.iter()
        .map(|(o, i)| ModalityRows { offsets: o, ids: i })
        .collect()
}

impl PySets {
    /// A loaded model: every dense modality must come with its quantizer (the Python
    /// layer encodes the column with it).
    fn from_file(model: SetModel, what: &str) -> PyResult<Self> {
        for (k, m) in model.cfg.modalities.iter().enumerate() {
            if m.kind == ModalityKind::Dense && model.quantizers.get(k).is_none_or(|q| q.is_none())
            {
                return Err(crate::errors::to_py(mmq_core::MmqError::InvalidModelFile {
                    path: what.to_string(),
                    reason: format!("dense modality '{}' has no quantizer", m.name),
                }));
            }
        }
        Self::from_model(model)
    }

    pub fn from_model(model: SetModel) -> PyResult<Self> {
        let tokenizer = Tokenizer::new(model.cfg.tokenizer.clone()).py_err()?;
        Ok(Self { model, tokenizer })
    }

    fn csr(&self, py: Python<'_>, args: &[ModalityArg<'_>]) -> PyResult<(Vec<Csr>, usize)> {
        modality_csr(
            py,
            &self.model.cfg,
            &self.tokenizer,
            &self.model.quantizers,
            args,
        )
    }
}

#[pymethods]
impl PySets {
    /// Train on the modality columns and a String or List[String] label column.
    #[staticmethod]
    #[pyo3(signature = (config_json, inputs, labels, label_name, progress=None, quantizers=vec![], valid=None, patience=None, calibrate=false, max_seconds=None))]
    #[allow(clippy::too_many_arguments)]
    fn fit(
        py: Python<'_>,
        config_json: &str,
        inputs: Vec<ModalityArg<'_>>,
        labels: PySeries,
        label_name: &str,
        progress: Option<Py<PyAny>>,
        quantizers: Vec<Option<PyRef<'_, PyQuantizer>>>,
        valid: Option<(Vec<ModalityArg<'_>>, PySeries)>,
        patience: Option<usize>,
        calibrate: bool,
        max_seconds: Option<f64>,
    ) -> PyResult<Self> {
        crate::errors::guard("SetClassifier.fit", || {
            let deadline = crate::columns::deadline(max_seconds)?;
            let cfg: SetConfig = serde_json::from_str(config_json)
                .map_err(|e| input_err(format!("bad configuration: {e}")))?;
            cfg.validate().py_err()?;
            let tokenizer = Tokenizer::new(cfg.tokenizer.clone()).py_err()?;
            let qs: Vec<Option<Quantizer>> = quantizers
                .iter()
                .map(|q| q.as_ref().map(|q| q.q.clone()))
                .collect();
            if qs.len() != cfg.modalities.len() {
                return Err(input_err("one quantizer slot per modality expected"));
            }
            let (csr, n) = modality_csr(py, &cfg, &tokenizer, &qs, &inputs)?;
            let labels = labels.0;
            if labels.len() != n {
                return Err(input_err(format!(
                    "the feature columns have {n} rows but '{label_name}' has {}",
                    labels.len()
                )));
            }
            if n == 0 {
                return Err(input_err("cannot fit on an empty frame (0 rows)"));
            }
            let (names, loffsets, lidx) = columns::labels(&labels, label_name, None)?;
            let vparts = match &valid {
                Some((vin, vl)) => {
                    let (vcsr, vn) = modality_csr(py, &cfg, &tokenizer, &qs, vin)?;
                    let (_, vlo, vli) = columns::labels(&vl.0, label_name, Some(&names))?;
                    if vlo.len() != vn + 1 {
                        return Err(input_err(format!(
                            "the validation frame's feature columns have {vn} rows but \
                             '{label_name}' has {}",
                            vlo.len() - 1
                        )));
                    }
                    if vn == 0 {
                        return Err(input_err("the validation frame is empty (0 rows)"));
                    }
                    Some((vcsr, vlo, vli))
                }
                None => None,
            };
            let model = crate::pool::detach_cancel(py, |cancel| {
                let callback = |p: &Progress| -> bool { report_progress(&progress, p, cancel) };
                let tv = views(&csr);
                let train = SetRows {
                    rows: &tv,
                    label_offsets: &loffsets,
                    labels: &lidx,
                };
                let vv = vparts.as_ref().map(|(c, ..)| views(c));
                let vrows = match (&vparts, &vv) {
                    (Some((_, vlo, vli)), Some(v)) => Some(SetRows {
                        rows: v,
                        label_offsets: vlo,
                        labels: vli,
                    }),
                    _ => None,
                };
                let opts = TrainOptions {
                    valid: vrows.as_ref(),
                    patience,
                    calibrate,
                    deadline,
                    class_weights: None,
                    ..Default::default()
                };
                let mut m = train_sets_with(cfg, names, &train, &opts, &callback)?;
                m.quantizers = qs;
                Ok::<_, mmq_core::MmqError>(m)
            });
            Self::from_model(model.py_err()?)
        })
    }

    /// Top-k label indices (-1 past a row's predictions) and probabilities (NaN there).
    fn predict<'py>(
        &self,
        py: Python<'py>,
        inputs: Vec<ModalityArg<'py>>,
        k: usize,
        threshold: f32,
    ) -> PyResult<Predictions<'py>> {
        crate::errors::guard("SetClassifier.predict", || {
            let k = ranking_k(k, threshold, self.model.n_labels())?;
            let (csr, _) = self.csr(py, &inputs)?;
            let ranked =
                crate::pool::detach(py, || self.model.predict_batch(&views(&csr), k, threshold))
                    .py_err()?;
            let (idx, probs) = flatten_ranked(&ranked, k);
            Ok((idx.into_pyarray(py), probs.into_pyarray(py)))
        })
    }

    /// Probability of every label for every row (n × n_labels).
    fn predict_proba<'py>(
        &self,
        py: Python<'py>,
        inputs: Vec<ModalityArg<'py>>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        crate::errors::guard("SetClassifier.predict_proba", || {
            let (csr, n) = self.csr(py, &inputs)?;
            let nl = self.model.n_labels();
            let rows = crate::pool::detach(py, || self.model.probs_batch(&views(&csr))).py_err()?;
            numpy::ndarray::Array2::from_shape_vec((n, nl), rows.concat())
                .map_err(|e| input_err(e.to_string()))
                .map(|a| a.into_pyarray(py))
        })
    }

    /// Counts for P@k / R@k and per-label (tp, predicted, gold).
    fn test<'py>(
        &self,
        py: Python<'py>,
        inputs: Vec<ModalityArg<'py>>,
        labels: PySeries,
        label_name: &str,
        k: usize,
        threshold: f32,
    ) -> PyResult<Bound<'py, PyDict>> {
        crate::errors::guard("SetClassifier.test", || {
            let k = ranking_k(k, threshold, self.model.n_labels())?;
            let (csr, n) = self.csr(py, &inputs)?;
            let l = labels.0;
            if l.len() != n {
                return Err(input_err(format!(
                    "{n} rows but '{label_name}' has {}",
                    l.len()
                )));
            }
            let (_, loffsets, lidx) = columns::labels(&l, label_name, Some(&self.model.labels))?;
            let e = crate::pool::detach(py, || {
                let preds = self.model.predict_batch(&views(&csr), k, threshold)?;
                Ok::<_, mmq_core::MmqError>(evaluate(
                    &preds,
                    &loffsets,
                    &lidx,
                    self.model.n_labels(),
                ))
            });
            eval_dict(py, &e.py_err()?)
        })
    }

    /// Per modality of the one given row: (contribution to `label`'s score, dimensions
    /// won under outer max pooling, present); and the label's bias.
    fn explain_modalities(
        &self,
        py: Python<'_>,
        inputs: Vec<ModalityArg<'_>>,
        label: usize,
    ) -> PyResult<Shares> {
        crate::errors::guard("SetClassifier.explain_modalities", || {
            let (csr, n) = self.csr(py, &inputs)?;
            if n != 1 {
                return Err(input_err(format!("explain takes one row, got {n}")));
            }
            let raw: Vec<&[u32]> = csr.iter().map(|(_, ids)| ids.as_slice()).collect();
            let (shares, bias) = self.model.explain_modalities(&raw, label).py_err()?;
            Ok((
                shares
                    .into_iter()
                    .map(|s| (s.score, s.dims_won, s.present))
                    .collect(),
                bias,
            ))
        })
    }

    #[getter]
    fn labels(&self) -> Vec<String> {
        self.model.labels.clone()
    }

    #[getter]
    fn config_json(&self) -> String {
        serde_json::to_string(&self.model.cfg).unwrap_or_default()
    }
    /// fastText's `quantize` for this kind: a new model whose token rows (and with
    /// `qout` its output matrix) are product-quantized (no `cutoff`).
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
        crate::errors::guard("SetClassifier.quantize", || {
            let o = crate::classifier::quantize_options(cutoff, dsub, qnorm, qout, seed);
            let model = crate::pool::detach(py, || self.model.quantize(&o)).py_err()?;
            Self::from_model(model)
        })
    }

    /// The options a quantized model was quantized with (JSON), None for others.
    #[getter]
    fn quantized_json(&self) -> Option<String> {
        crate::classifier::options_json(self.model.quantized.as_ref().map(|q| &q.opts))
    }

    /// G-Blend's per-epoch weights and losses, as JSON.
    #[getter]
    fn history_json(&self) -> String {
        serde_json::to_string(&self.model.history).unwrap_or_default()
    }

    /// Per-epoch record of a fit with a validation split (JSON list; empty without).
    #[getter]
    fn valid_history_json(&self) -> String {
        serde_json::to_string(&self.model.valid_history).unwrap_or_default()
    }

    /// A copy of modality k's quantizer (None unless it is dense).
    fn quantizer(&self, k: usize) -> Option<PyQuantizer> {
        self.model
            .quantizers
            .get(k)
            .and_then(|q| q.clone())
            .map(|q| PyQuantizer { q })
    }

    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        crate::errors::guard("SetClassifier.to_bytes", || {
            let b = self.model.to_bytes().py_err()?;
            Ok(PyBytes::new(py, &b))
        })
    }

    #[staticmethod]
    #[pyo3(signature = (data, source="<bytes>"))]
    fn from_bytes(py: Python<'_>, data: &[u8], source: &str) -> PyResult<Self> {
        crate::errors::guard("SetClassifier.from_bytes", || {
            let m = crate::pool::detach(py, || SetModel::from_bytes(data, source)).py_err()?;
            Self::from_file(m, source)
        })
    }

    fn save(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
        crate::errors::guard("SetClassifier.save", || {
            crate::pool::detach(py, || self.model.save(&path)).py_err()
        })
    }

    #[staticmethod]
    fn load(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Self> {
        crate::errors::guard("SetClassifier.load", || {
            let m = crate::pool::detach(py, || SetModel::load(&path)).py_err()?;
            Self::from_file(m, &path.display().to_string())
        })
    }
}

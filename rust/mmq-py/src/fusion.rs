//! `mmq._mmq.RustFusionClassifier`: the continuous fusion modes (image, add, max, gated,
//! bilinear, bilinear_gated) over a text column and one dense column.
use crate::classifier::{
    eval_dict, flatten_ranked, ranking_k, report_progress, tokenize_rows, DenseArg, Predictions,
};
use crate::columns;
use crate::errors::{input_err, IntoPy};
use mmq_core::eval::evaluate;
use mmq_core::model::fusion::{train_fusion_with, FusionConfig, FusionModel, FusionRows};
use mmq_core::model::Ranked;
use mmq_core::text::{Scratch, Tokenizer};
use mmq_core::train::{Dataset, Progress, TrainOptions};
use numpy::{IntoPyArray, PyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use pyo3_polars::PySeries;
use rayon::prelude::*;

#[pyclass(module = "mmq._mmq", name = "RustFusionClassifier", frozen)]
pub struct PyFusion {
    pub model: FusionModel,
    pub tokenizer: Tokenizer,
}

/// Full n × D matrix (zeros where missing; never read there) and the presence mask.
fn full_dense(
    arg: &DenseArg<'_>,
    n: usize,
    d: Option<usize>,
) -> PyResult<(Vec<f32>, Vec<bool>, usize)> {
    let (name, vecs, codes, present) = arg;
    if codes.is_some() {
        return Err(input_err(format!(
            "dense column '{name}' holds codes; the continuous fusion modes need the float vectors"
        )));
    }
    let present = present
        .as_slice()
        .map_err(|e| input_err(e.to_string()))?
        .to_vec();
    if present.len() != n {
        return Err(input_err(format!(
            "dense column '{name}': {} flags for {n} rows",
            present.len()
        )));
    }
    let vecs = vecs
        .as_ref()
        .ok_or_else(|| input_err(format!("dense column '{name}': no vectors")))?;
    let shape = vecs.shape();
    let dim = d.unwrap_or(shape[1]);
    let n_present = present.iter().filter(|&&p| p).count();
    if shape[0] != n_present || (shape[1] != dim && n_present > 0) {
        return Err(input_err(format!(
            "dense column '{name}': expected {n_present} vectors of dimension {dim}, got {} × {}",
            shape[0], shape[1]
        )));
    }
    let src = vecs.as_slice().map_err(|e| input_err(e.to_string()))?;
    let mut full = vec![0.0f32; n * dim];
    let mut r = 0;
    for (i, &p) in present.iter().enumerate() {
        if p {
            full[i * dim..(i + 1) * dim].copy_from_slice(&src[r * dim..(r + 1) * dim]);
            r += 1;
        }
    }
    Ok((full, present, dim))
}

impl PyFusion {
    pub fn rows(
        &self,
        texts: &[&str],
        dense: &[f32],
        present: &[bool],
        k: usize,
        threshold: f32,
        all: bool,
    ) -> Vec<Ranked> {
        let m = &self.model;
        let d = m.dense_dim;
        texts
            .par_iter()
            .enumerate()
            .map_init(
                || (Scratch::default(), Vec::new(), Vec::new()),
                |(scratch, ids, buf), (i, t)| {
                    ids.clear();
                    self.tokenizer.tokenize_into(t, ids, scratch);
                    let x = present[i].then(|| &dense[i * d..(i + 1) * d]);
                    if all {
                        m.probs(ids, x, buf);
                        buf.iter()
                            .enumerate()
                            .map(|(l, &p)| (l as u32, p))
                            .collect()
                    } else {
                        m.predict(ids, x, k, threshold)
                    }
                },
            )
            .collect()
    }

    fn prepare<'a>(
        &self,
        text: &'a polars::prelude::Series,
        dense: &DenseArg<'_>,
    ) -> PyResult<(Vec<&'a str>, Vec<f32>, Vec<bool>)> {
        let texts = columns::texts(text, "text")?;
        let (full, present, _) = full_dense(dense, texts.len(), Some(self.model.dense_dim))?;
        if dense.0 != self.model.cfg.dense_name {
            return Err(input_err(format!(
                "expected dense column '{}', got '{}'",
                self.model.cfg.dense_name, dense.0
            )));
        }
        for (i, &p) in present.iter().enumerate() {
            if p {
                let d = self.model.dense_dim;
                self.model
                    .check_dense(&full[i * d..(i + 1) * d])
                    .map_err(|e| input_err(format!("row {i}: {e}")))?;
            }
        }
        Ok((texts, full, present))
    }
}

#[pymethods]
impl PyFusion {
    #[staticmethod]
    #[pyo3(signature = (config_json, text, labels, text_name, label_name, dense, progress=None, valid=None, patience=None, calibrate=false, max_seconds=None))]
    #[allow(clippy::too_many_arguments)]
    fn fit(
        py: Python<'_>,
        config_json: &str,
        text: PySeries,
        labels: PySeries,
        text_name: &str,
        label_name: &str,
        dense: DenseArg<'_>,
        progress: Option<Py<PyAny>>,
        valid: Option<(PySeries, PySeries, DenseArg<'_>)>,
        patience: Option<usize>,
        calibrate: bool,
        max_seconds: Option<f64>,
    ) -> PyResult<Self> {
        crate::errors::guard("FusionClassifier.fit", || {
            let deadline = crate::columns::deadline(max_seconds)?;
            let mut cfg: FusionConfig = serde_json::from_str(config_json)
                .map_err(|e| input_err(format!("bad configuration: {e}")))?;
            cfg.dense_name = dense.0.clone();
            cfg.validate().py_err()?;
            let tokenizer = Tokenizer::new(cfg.tokenizer.clone()).py_err()?;
            let (text, labels) = (text.0, labels.0);
            if text.is_empty() {
                return Err(input_err("cannot fit on an empty frame (0 rows)"));
            }
            let texts = columns::texts(&text, text_name)?;
            let (names, loffsets, lidx) = columns::labels(&labels, label_name, None)?;
            let (full, present, dim) = full_dense(&dense, texts.len(), None)?;
            let vcols = match &valid {
                Some((vt, vl, vd)) => {
                    let (vtexts, vlo, vli) =
                        columns::valid_texts(&vt.0, &vl.0, text_name, label_name, &names)?;
                    let (vfull, vpresent, _) = full_dense(vd, vtexts.len(), Some(dim))?;
                    Some((vtexts, vlo, vli, vfull, vpresent))
                }
                None => None,
            };
            let model = crate::pool::detach_cancel(py, |cancel| {
                let callback = |p: &Progress| -> bool { report_progress(&progress, p, cancel) };
                let (offsets, ids) = tokenize_rows(&tokenizer, &texts);
                let train = FusionRows {
                    data: Dataset {
                        offsets: &offsets,
                        tokens: &ids,
                        weights: None,
                        label_offsets: &loffsets,
                        labels: &lidx,
                    },
                    dense: &full,
                    present: &present,
                };
                let vtok = vcols.as_ref().map(|(vt, ..)| tokenize_rows(&tokenizer, vt));
                let vrows = match (&vcols, &vtok) {
                    (Some((_, vlo, vli, vfull, vpresent)), Some((vo, vi))) => Some(FusionRows {
                        data: Dataset {
                            offsets: vo,
                            tokens: vi,
                            weights: None,
                            label_offsets: vlo,
                            labels: vli,
                        },
                        dense: vfull,
                        present: vpresent,
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
                train_fusion_with(cfg, names, &train, dim, &opts, &callback)
            });
            let model = model.py_err()?;
            Ok(Self { tokenizer, model })
        })
    }

    /// Per-epoch record of a fit with a validation split (JSON list; empty without).
    #[getter]
    fn history_json(&self) -> String {
        serde_json::to_string(&self.model.history).unwrap_or_default()
    }

    #[pyo3(signature = (text, k, threshold, dense))]
    fn predict<'py>(
        &self,
        py: Python<'py>,
        text: PySeries,
        k: usize,
        threshold: f32,
        dense: DenseArg<'py>,
    ) -> PyResult<Predictions<'py>> {
        crate::errors::guard("FusionClassifier.predict", || {
            let k = ranking_k(k, threshold, self.model.n_labels())?;
            let s = text.0;
            let (texts, full, present) = self.prepare(&s, &dense)?;
            let (idx, probs) = crate::pool::detach(py, || {
                flatten_ranked(&self.rows(&texts, &full, &present, k, threshold, false), k)
            })?;
            Ok((idx.into_pyarray(py), probs.into_pyarray(py)))
        })
    }

    fn predict_proba<'py>(
        &self,
        py: Python<'py>,
        text: PySeries,
        dense: DenseArg<'py>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        crate::errors::guard("FusionClassifier.predict_proba", || {
            let s = text.0;
            let (texts, full, present) = self.prepare(&s, &dense)?;
            let nl = self.model.n_labels();
            let flat: Vec<f32> = crate::pool::detach(py, || {
                self.rows(&texts, &full, &present, nl, 0.0, true)
                    .into_iter()
                    .flat_map(|r| r.into_iter().map(|x| x.1))
                    .collect()
            })?;
            numpy::ndarray::Array2::from_shape_vec((texts.len(), nl), flat)
                .map_err(|e| input_err(e.to_string()))
                .map(|a| a.into_pyarray(py))
        })
    }

    #[pyo3(signature = (text, labels, label_name, k, threshold, dense))]
    #[allow(clippy::too_many_arguments)]
    fn test<'py>(
        &self,
        py: Python<'py>,
        text: PySeries,
        labels: PySeries,
        label_name: &str,
        k: usize,
        threshold: f32,
        dense: DenseArg<'py>,
    ) -> PyResult<Bound<'py, PyDict>> {
        crate::errors::guard("FusionClassifier.test", || {
            let k = ranking_k(k, threshold, self.model.n_labels())?;
            let (s, l) = (text.0, labels.0);
            let (texts, full, present) = self.prepare(&s, &dense)?;
            let (_, loffsets, lidx) = columns::labels(&l, label_name, Some(&self.model.labels))?;
            let e = crate::pool::detach(py, || {
                let preds = self.rows(&texts, &full, &present, k, threshold, false);
                evaluate(&preds, &loffsets, &lidx, self.model.n_labels())
            })?;
            eval_dict(py, &e)
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
        crate::errors::guard("FusionClassifier.quantize", || {
            let o = crate::classifier::quantize_options(cutoff, dsub, qnorm, qout, seed);
            let model = crate::pool::detach(py, || self.model.quantize(&o)).py_err()?;
            Ok(Self {
                model,
                tokenizer: self.tokenizer.clone(),
            })
        })
    }

    /// The options a quantized model was quantized with (JSON), None for others.
    #[getter]
    fn quantized_json(&self) -> Option<String> {
        crate::classifier::options_json(self.model.quantized.as_ref().map(|q| &q.opts))
    }

    #[getter]
    fn dense_dim(&self) -> usize {
        self.model.dense_dim
    }

    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        crate::errors::guard("FusionClassifier.to_bytes", || {
            Ok(PyBytes::new(py, &self.model.to_bytes().py_err()?))
        })
    }

    #[staticmethod]
    #[pyo3(signature = (data, source="<bytes>"))]
    fn from_bytes(py: Python<'_>, data: &[u8], source: &str) -> PyResult<Self> {
        crate::errors::guard("FusionClassifier.from_bytes", || {
            let model =
                crate::pool::detach(py, || FusionModel::from_bytes(data, source)).py_err()?;
            let tokenizer = Tokenizer::new(model.cfg.tokenizer.clone()).py_err()?;
            Ok(Self { model, tokenizer })
        })
    }

    fn save(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
        crate::errors::guard("FusionClassifier.save", || {
            crate::pool::detach(py, || self.model.save(&path)).py_err()
        })
    }

    #[staticmethod]
    fn load(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Self> {
        crate::errors::guard("FusionClassifier.load", || {
            let model = crate::pool::detach(py, || FusionModel::load(&path)).py_err()?;
            let tokenizer = Tokenizer::new(model.cfg.tokenizer.clone()).py_err()?;
            Ok(Self { model, tokenizer })
        })
    }
}

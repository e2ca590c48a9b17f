//! `mmq._mmq.Classifier`: the trained model, wrapped for Python.
use crate::columns;
use crate::errors::{input_err, IntoPy};
use mmq_core::eval::evaluate;
use mmq_core::model::{Model, ModelConfig, Ranked};
use mmq_core::text::{Scratch, Tokenizer};
use mmq_core::train::{self, Dataset, Progress};
use numpy::{IntoPyArray, PyArray1, PyArray2};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use pyo3_polars::PySeries;
use rayon::prelude::*;

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

fn progress_dict<'py>(py: Python<'py>, p: &Progress) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("progress", p.progress)?;
    d.set_item("epoch", p.epoch)?;
    d.set_item("lr", p.lr)?;
    d.set_item("loss", p.loss)?;
    d.set_item("tokens_per_sec_per_thread", p.tokens_per_sec_per_thread)?;
    Ok(d)
}

impl PyClassifier {
    pub fn from_model(model: Model) -> PyResult<Self> {
        let tokenizer = Tokenizer::new(model.cfg.tokenizer.clone()).py_err()?;
        Ok(Self { model, tokenizer })
    }

    fn predict_rows(&self, texts: &[&str], k: usize, threshold: f32) -> Vec<Ranked> {
        let m = &self.model;
        let tok = &self.tokenizer;
        texts
            .par_iter()
            .map_init(
                || {
                    (
                        Scratch::default(),
                        Vec::new(),
                        vec![0.0f32; m.cfg.dim],
                        Vec::new(),
                    )
                },
                |(scratch, ids, hidden, buf), t| {
                    ids.clear();
                    tok.tokenize_into(t, ids, scratch);
                    m.hidden(ids, None, hidden);
                    m.predict_hidden(hidden, k, threshold, buf)
                },
            )
            .collect()
    }
}

fn check_k(k: usize) -> PyResult<()> {
    if k < 1 {
        return Err(crate::errors::to_py(mmq_core::MmqError::InvalidParameter(
            format!("k must be >= 1, got {k}"),
        )));
    }
    Ok(())
}

#[pymethods]
impl PyClassifier {
    /// Train on a String column and a String or List[String] label column.
    #[staticmethod]
    #[pyo3(signature = (config_json, text, labels, text_name, label_name, progress=None))]
    fn fit(
        py: Python<'_>,
        config_json: &str,
        text: PySeries,
        labels: PySeries,
        text_name: &str,
        label_name: &str,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let cfg: ModelConfig = serde_json::from_str(config_json)
            .map_err(|e| input_err(format!("bad configuration: {e}")))?;
        cfg.validate().py_err()?;
        let tokenizer = Tokenizer::new(cfg.tokenizer.clone()).py_err()?;
        let text = text.0;
        let labels = labels.0;
        if text.len() != labels.len() {
            return Err(input_err(format!(
                "'{text_name}' has {} rows but '{label_name}' has {}",
                text.len(),
                labels.len()
            )));
        }
        if text.is_empty() {
            return Err(input_err("cannot fit on an empty frame (0 rows)"));
        }
        let texts = columns::texts(&text, text_name)?;
        let (names, loffsets, lidx) = columns::labels(&labels, label_name, None)?;
        let callback = |p: &Progress| -> bool {
            Python::attach(|py| {
                if py.check_signals().is_err() {
                    return false;
                }
                if let Some(cb) = &progress {
                    if let Ok(d) = progress_dict(py, p) {
                        if let Err(e) = cb.call1(py, (d,)) {
                            e.print(py);
                        }
                    }
                }
                true
            })
        };
        let model = py.detach(|| {
            let threads = cfg.threads;
            let (offsets, ids) = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .map(|p| p.install(|| tokenize_rows(&tokenizer, &texts)))
                .unwrap_or_else(|_| tokenize_rows(&tokenizer, &texts));
            let data = Dataset {
                offsets: &offsets,
                tokens: &ids,
                weights: None,
                label_offsets: &loffsets,
                labels: &lidx,
            };
            train::train(cfg, names, &data, &callback)
        });
        Self::from_model(model.py_err()?)
    }

    /// Top-k label indices (-1 where fewer than k pass the threshold) and probabilities
    /// (NaN there), each a flat array of n*k values.
    fn predict<'py>(
        &self,
        py: Python<'py>,
        text: PySeries,
        k: usize,
        threshold: f32,
    ) -> PyResult<(Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<f32>>)> {
        check_k(k)?;
        let s = text.0;
        let texts = columns::texts(&s, "text")?;
        let (idx, probs) = py.detach(|| {
            let r = self.predict_rows(&texts, k, threshold);
            let mut idx = vec![-1i64; r.len() * k];
            let mut probs = vec![f32::NAN; r.len() * k];
            for (i, row) in r.iter().enumerate() {
                for (j, &(l, p)) in row.iter().enumerate() {
                    idx[i * k + j] = l as i64;
                    probs[i * k + j] = p;
                }
            }
            (idx, probs)
        });
        Ok((idx.into_pyarray(py), probs.into_pyarray(py)))
    }

    /// Probability of every label for every row: an n × n_labels array.
    fn predict_proba<'py>(
        &self,
        py: Python<'py>,
        text: PySeries,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let s = text.0;
        let texts = columns::texts(&s, "text")?;
        let m = &self.model;
        let nl = m.n_labels();
        let flat: Vec<f32> = py.detach(|| {
            let rows: Vec<Vec<f32>> = texts
                .par_iter()
                .map_init(
                    || (Scratch::default(), Vec::new(), vec![0.0f32; m.cfg.dim]),
                    |(scratch, ids, hidden), t| {
                        ids.clear();
                        self.tokenizer.tokenize_into(t, ids, scratch);
                        m.hidden(ids, None, hidden);
                        let mut p = Vec::with_capacity(nl);
                        m.probs(hidden, &mut p);
                        p
                    },
                )
                .collect();
            rows.concat()
        });
        let n = texts.len();
        numpy::ndarray::Array2::from_shape_vec((n, nl), flat)
            .map_err(|e| input_err(e.to_string()))
            .map(|a| a.into_pyarray(py))
    }

    /// Evaluate on labelled rows: counts for P@k / R@k and per-label (tp, predicted, gold).
    #[pyo3(signature = (text, labels, label_name, k, threshold))]
    fn test<'py>(
        &self,
        py: Python<'py>,
        text: PySeries,
        labels: PySeries,
        label_name: &str,
        k: usize,
        threshold: f32,
    ) -> PyResult<Bound<'py, PyDict>> {
        check_k(k)?;
        let (s, l) = (text.0, labels.0);
        let texts = columns::texts(&s, "text")?;
        let (_, loffsets, lidx) = columns::labels(&l, label_name, Some(&self.model.labels))?;
        let e = py.detach(|| {
            let preds = self.predict_rows(&texts, k, threshold);
            evaluate(&preds, &loffsets, &lidx, self.model.n_labels())
        });
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

    #[getter]
    fn labels(&self) -> Vec<String> {
        self.model.labels.clone()
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
        let b = self.model.to_bytes().py_err()?;
        Ok(PyBytes::new(py, &b))
    }

    #[staticmethod]
    #[pyo3(signature = (data, source="<bytes>"))]
    fn from_bytes(data: &[u8], source: &str) -> PyResult<Self> {
        Self::from_model(Model::from_bytes(data, source).py_err()?)
    }

    fn save(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
        py.detach(|| self.model.save(&path)).py_err()
    }

    #[staticmethod]
    fn load(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Self> {
        let m = py.detach(|| Model::load(&path)).py_err()?;
        Self::from_model(m)
    }

    /// Embedding rows, label scores and token strings for `explain`: for each token of
    /// `text`, (token string, kind, contribution to each label's score).
    fn explain(&self, text: &str, label: usize) -> PyResult<Vec<(String, String, f32)>> {
        let m = &self.model;
        if label >= m.n_labels() {
            return Err(input_err(format!("label index {label} out of range")));
        }
        let dim = m.cfg.dim;
        let toks = self.tokenizer.tokenize_verbose(text);
        let known: Vec<_> = toks
            .iter()
            .filter_map(|(id, k, s)| m.index.get(*id).map(|r| (r, k, s)))
            .collect();
        let n = known.len().max(1) as f32;
        let out_row = match m.cfg.loss {
            mmq_core::model::loss::LossKind::Hs => None,
            _ => Some(&m.output[label * dim..(label + 1) * dim]),
        };
        Ok(known
            .into_iter()
            .map(|(r, k, s)| {
                let e = &m.input[r as usize * dim..(r as usize + 1) * dim];
                let score = out_row.map_or(0.0, |o| mmq_core::model::dot(e, o) / n);
                (s.clone(), format!("{k:?}"), score)
            })
            .collect())
    }
}

//! Polars expression plugin functions (`pl.col(..).mmq.tokenize(..)`) and the same
//! operations as plain functions on a Series.
use crate::classifier::tokenize_rows;
use crate::errors::IntoPy;
use mmq_core::text::{Tokenizer, TokenizerConfig};
use polars::prelude::*;
use polars_arrow::array::{ListArray, PrimitiveArray};
use polars_arrow::bitmap::Bitmap;
use polars_arrow::datatypes::ArrowDataType;
use polars_arrow::offset::OffsetsBuffer;
use pyo3::prelude::*;
use pyo3_polars::derive::{polars_expr, CallerContext};
use pyo3_polars::PySeries;
use serde::Deserialize;

/// Build a List[UInt32] column from CSR arrays; rows flagged in `nulls` are null.
fn list_u32(
    name: PlSmallStr,
    offsets: Vec<usize>,
    ids: Vec<u32>,
    valid: Option<Vec<bool>>,
) -> PolarsResult<Series> {
    let offsets: Vec<i64> = offsets.into_iter().map(|o| o as i64).collect();
    let dtype = ListArray::<i64>::default_datatype(ArrowDataType::UInt32);
    let arr = ListArray::<i64>::new(
        dtype,
        OffsetsBuffer::try_from(offsets)?,
        Box::new(PrimitiveArray::from_vec(ids)),
        valid.map(Bitmap::from_iter),
    );
    Ok(ListChunked::with_chunk(name, arr).into_series())
}

fn tokenize_series(s: &Series, tok: &Tokenizer, parallel: bool) -> PolarsResult<Series> {
    let ca = s.str().map_err(|_| {
        polars_err!(InvalidOperation: "mmq.tokenize expects a String column, got '{}' of type {}", s.name(), s.dtype())
    })?;
    let texts: Vec<&str> = ca.iter().map(|o| o.unwrap_or("")).collect();
    let (mut offsets, mut ids) = if parallel {
        tokenize_rows(tok, &texts)
    } else {
        // Polars already runs this expression in parallel: stay on this thread.
        let mut offsets = vec![0];
        let mut ids = Vec::new();
        let mut scratch = Default::default();
        for t in &texts {
            tok.tokenize_into(t, &mut ids, &mut scratch);
            offsets.push(ids.len());
        }
        (offsets, ids)
    };
    let valid =
        (ca.null_count() > 0).then(|| ca.iter().map(|o| o.is_some()).collect::<Vec<bool>>());
    if let Some(v) = &valid {
        // Null rows: empty lists under a null flag.
        let mut new_off = vec![0usize];
        let mut new_ids = Vec::with_capacity(ids.len());
        for (i, ok) in v.iter().enumerate() {
            if *ok {
                new_ids.extend_from_slice(&ids[offsets[i]..offsets[i + 1]]);
            }
            new_off.push(new_ids.len());
        }
        offsets = new_off;
        ids = new_ids;
    }
    list_u32(s.name().clone(), offsets, ids, valid)
}

#[derive(Deserialize)]
struct TokenizeKwargs {
    #[serde(flatten)]
    cfg: TokenizerConfig,
}

fn list_u32_type(_: &[Field]) -> PolarsResult<Field> {
    Ok(Field::new(
        "tokens".into(),
        DataType::List(Box::new(DataType::UInt32)),
    ))
}

#[polars_expr(output_type_func=list_u32_type)]
fn mmq_tokenize(
    inputs: &[Series],
    context: CallerContext,
    kwargs: TokenizeKwargs,
) -> PolarsResult<Series> {
    let tok =
        Tokenizer::new(kwargs.cfg).map_err(|e| polars_err!(ComputeError: "mmq.tokenize: {}", e))?;
    let s = &inputs[0];
    let mut out = tokenize_series(s, &tok, !context.parallel())?;
    out.rename(s.name().clone());
    Ok(out)
}

/// Tokenize a String Series into a List[UInt32] Series (the Python API's path).
#[pyfunction]
pub fn tokenize(py: Python<'_>, text: PySeries, config_json: &str) -> PyResult<PySeries> {
    let cfg: TokenizerConfig = serde_json::from_str(config_json)
        .map_err(|e| crate::errors::input_err(format!("bad tokenizer configuration: {e}")))?;
    let tok = Tokenizer::new(cfg).py_err()?;
    let s = text.0;
    let out = py
        .detach(|| tokenize_series(&s, &tok, true))
        .map_err(|e| crate::errors::input_err(e.to_string()))?;
    Ok(PySeries(out))
}

// ---------------------------------------------------------------------------------
// Expressions that use a fitted quantizer or model, loaded from its file once and cached
// (reloaded when the file's modification time or size changes).

use crate::classifier::{encode_batches, DenseView, PyClassifier};
use crate::fusion::PyFusion;
use mmq_core::io::quant::quantizer_from_bytes;
use mmq_core::model::Ranked;
use mmq_core::quant::Quantizer;
use polars_arrow::array::FixedSizeListArray;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

enum Loaded {
    Quantizer(Box<Quantizer>),
    Classifier(Box<PyClassifier>),
    Fusion(Box<PyFusion>),
}

type CacheMap = HashMap<PathBuf, (SystemTime, u64, Arc<Loaded>)>;

fn cache() -> &'static Mutex<CacheMap> {
    static CACHE: OnceLock<Mutex<CacheMap>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

fn load_cached(path: &str, expr: &str) -> PolarsResult<Arc<Loaded>> {
    let p = PathBuf::from(path);
    let meta = std::fs::metadata(&p).map_err(
        |e| polars_err!(ComputeError: "{}: cannot read model file '{}': {}", expr, path, e),
    )?;
    let stamp = (
        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        meta.len(),
    );
    if let Some((t, n, l)) = cache().lock().unwrap().get(&p) {
        if (*t, *n) == stamp {
            return Ok(l.clone());
        }
    }
    let err = |e: mmq_core::MmqError| polars_err!(ComputeError: "{}: {}", expr, e);
    let kind = mmq_core::io::peek_kind(&p).map_err(err)?;
    let bytes = mmq_core::io::read(&p).map_err(err)?;
    let loaded = match kind.as_str() {
        "quantizer" => {
            Loaded::Quantizer(Box::new(quantizer_from_bytes(&bytes, path).map_err(err)?))
        }
        "classifier" => {
            let m = mmq_core::model::Model::from_bytes(&bytes, path).map_err(err)?;
            let c = PyClassifier::from_model(m)
                .map_err(|e| polars_err!(ComputeError: "{}: {}", expr, e))?;
            Loaded::Classifier(Box::new(c))
        }
        "fusion_classifier" => {
            let model =
                mmq_core::model::fusion::FusionModel::from_bytes(&bytes, path).map_err(err)?;
            let tokenizer = Tokenizer::new(model.cfg.tokenizer.clone()).map_err(err)?;
            Loaded::Fusion(Box::new(PyFusion { model, tokenizer }))
        }
        other => {
            polars_bail!(ComputeError: "{}: '{}' holds an mmq {}, not a quantizer or classifier", expr, path, other)
        }
    };
    let l = Arc::new(loaded);
    cache()
        .lock()
        .unwrap()
        .insert(p, (stamp.0, stamp.1, l.clone()));
    Ok(l)
}

/// The present rows of an Array[float, d] column as a compact f32 matrix, and the mask.
fn dense_column(s: &Series, d: usize, expr: &str) -> PolarsResult<(Vec<f32>, Vec<bool>)> {
    let w = match s.dtype() {
        DataType::Array(inner, w) if inner.is_primitive_numeric() => *w,
        DataType::List(_) => polars_bail!(InvalidOperation:
            "{}: column '{}' is a List; convert it with .list.to_array({}) first", expr, s.name(), d),
        other => polars_bail!(InvalidOperation:
            "{}: column '{}' must be Array[Float32, {}], got {}", expr, s.name(), d, other),
    };
    if w != d {
        polars_bail!(InvalidOperation: "{}: column '{}' has dimension {}, the model expects {}", expr, s.name(), w, d);
    }
    let s = s.cast(&DataType::Array(Box::new(DataType::Float32), d))?;
    let ca = s.array()?.rechunk();
    let present: Vec<bool> = ca.iter().map(|o| o.is_some()).collect();
    let inner = ca.get_inner();
    let vals = inner.f32()?;
    let mut out = Vec::with_capacity(present.iter().filter(|&&p| p).count() * d);
    for (i, &p) in present.iter().enumerate() {
        if p {
            let row = vals.slice((i * d) as i64, d);
            if row.null_count() > 0 {
                polars_bail!(ComputeError: "{}: column '{}' row {} has a null inside its vector", expr, s.name(), i);
            }
            for v in row.into_no_null_iter() {
                if !v.is_finite() {
                    polars_bail!(ComputeError: "{}: column '{}' row {} has NaN or inf", expr, s.name(), i);
                }
                out.push(v);
            }
        }
    }
    Ok((out, present))
}

fn validity(present: &[bool]) -> Option<Bitmap> {
    present
        .iter()
        .any(|p| !p)
        .then(|| Bitmap::from_iter(present.iter().copied()))
}

#[derive(Deserialize)]
struct EncodeKwargs {
    path: String,
    m: usize,
    k: usize,
}

fn encode_type(fields: &[Field], kw: EncodeKwargs) -> PolarsResult<Field> {
    let inner = if kw.k <= 256 {
        DataType::UInt8
    } else {
        DataType::UInt16
    };
    Ok(Field::new(
        fields[0].name().clone(),
        DataType::Array(Box::new(inner), kw.m),
    ))
}

#[polars_expr(output_type_func_with_kwargs=encode_type)]
fn mmq_encode(inputs: &[Series], kwargs: EncodeKwargs) -> PolarsResult<Series> {
    let l = load_cached(&kwargs.path, "mmq.encode")?;
    let Loaded::Quantizer(q) = &*l else {
        polars_bail!(ComputeError: "mmq.encode: '{}' is not a quantizer file", kwargs.path)
    };
    let s = &inputs[0];
    let (x, present) = dense_column(s, q.d(), "mmq.encode")?;
    let n_present = x.len() / q.d();
    let (n, m) = (s.len(), q.m());
    let err = |e: mmq_core::MmqError| polars_err!(ComputeError: "mmq.encode: {}", e);
    // Codes of the present rows, spread to all rows (zeros under a null flag).
    let spread = |codes: &[u16]| -> Vec<u16> {
        let mut full = vec![0u16; n * m];
        let mut r = 0;
        for (i, &p) in present.iter().enumerate() {
            if p {
                full[i * m..(i + 1) * m].copy_from_slice(&codes[r * m..(r + 1) * m]);
                r += 1;
            }
        }
        full
    };
    let codes = spread(&q.encode(&x, n_present).map_err(err)?);
    let valid = validity(&present);
    let arr: Box<dyn polars_arrow::array::Array> = if q.k() <= 256 {
        let v: Vec<u8> = codes.iter().map(|&c| c as u8).collect();
        let dt = FixedSizeListArray::default_datatype(ArrowDataType::UInt8, m);
        Box::new(FixedSizeListArray::new(
            dt,
            n,
            Box::new(PrimitiveArray::from_vec(v)),
            valid,
        ))
    } else {
        let dt = FixedSizeListArray::default_datatype(ArrowDataType::UInt16, m);
        Box::new(FixedSizeListArray::new(
            dt,
            n,
            Box::new(PrimitiveArray::from_vec(codes)),
            valid,
        ))
    };
    let inner = if q.k() <= 256 {
        DataType::UInt8
    } else {
        DataType::UInt16
    };
    Series::from_arrow(s.name().clone(), arr)
        .and_then(|s| s.cast(&DataType::Array(Box::new(inner), m)))
}

#[derive(Deserialize)]
struct PredictKwargs {
    path: String,
    #[serde(default)]
    threshold: f32,
    #[serde(default)]
    n_labels: usize,
}

fn predict_type(fields: &[Field], _kw: PredictKwargs) -> PolarsResult<Field> {
    Ok(Field::new(fields[0].name().clone(), DataType::String))
}

fn proba_type(fields: &[Field], kw: PredictKwargs) -> PolarsResult<Field> {
    Ok(Field::new(
        fields[0].name().clone(),
        DataType::Array(Box::new(DataType::Float32), kw.n_labels),
    ))
}

/// Top-k (k = all labels for probabilities) of every row: the text is inputs[0], the
/// model's dense columns follow in its order.
fn rank_rows(
    inputs: &[Series],
    path: &str,
    k: Option<usize>,
    threshold: f32,
    expr: &str,
) -> PolarsResult<(Vec<Ranked>, Vec<String>)> {
    let l = load_cached(path, expr)?;
    let text = &inputs[0];
    let ca = text.str().map_err(|_| {
        polars_err!(InvalidOperation: "{}: the text column '{}' must be String, got {}", expr, text.name(), text.dtype())
    })?;
    let texts: Vec<&str> = ca.iter().map(|o| o.unwrap_or("")).collect();
    match &*l {
        Loaded::Classifier(c) => {
            let dense = &c.model.dense;
            if inputs.len() - 1 != dense.len() {
                polars_bail!(InvalidOperation: "{}: the model reads {} dense column(s), got {}", expr, dense.len(), inputs.len() - 1);
            }
            let cols: Vec<(Vec<f32>, Vec<bool>)> = dense
                .iter()
                .zip(&inputs[1..])
                .map(|(d, s)| dense_column(s, d.quantizer.d(), expr))
                .collect::<PolarsResult<_>>()?;
            let views: Vec<DenseView> = cols
                .iter()
                .zip(dense)
                .map(|((x, p), d)| DenseView {
                    vectors: Some((&x[..], x.len() / d.quantizer.d())),
                    codes: None,
                    present: p,
                })
                .collect();
            let batches = encode_batches(dense, &views)
                .map_err(|e| polars_err!(ComputeError: "{}: {}", expr, e))?;
            let k = k.unwrap_or(c.model.n_labels());
            Ok((
                c.predict_rows(&texts, &batches, k, threshold),
                c.model.labels.clone(),
            ))
        }
        Loaded::Fusion(f) => {
            if inputs.len() != 2 {
                polars_bail!(InvalidOperation: "{}: the model fuses the text with one dense column, got {}", expr, inputs.len() - 1);
            }
            let d = f.model.dense_dim;
            let (x, present) = dense_column(&inputs[1], d, expr)?;
            let mut full = vec![0.0f32; texts.len() * d];
            let mut r = 0;
            for (i, &p) in present.iter().enumerate() {
                if p {
                    full[i * d..(i + 1) * d].copy_from_slice(&x[r * d..(r + 1) * d]);
                    r += 1;
                }
            }
            let nl = f.model.n_labels();
            Ok((
                f.rows(
                    &texts,
                    &full,
                    &present,
                    k.unwrap_or(nl),
                    threshold,
                    k.is_none(),
                ),
                f.model.labels.clone(),
            ))
        }
        Loaded::Quantizer(_) => {
            polars_bail!(ComputeError: "{}: '{}' is a quantizer, not a classifier", expr, path)
        }
    }
}

#[polars_expr(output_type_func_with_kwargs=predict_type)]
fn mmq_predict(inputs: &[Series], kwargs: PredictKwargs) -> PolarsResult<Series> {
    let (ranked, labels) = rank_rows(
        inputs,
        &kwargs.path,
        Some(1),
        kwargs.threshold,
        "mmq.predict",
    )?;
    let ca: StringChunked = ranked
        .iter()
        .map(|r| r.first().map(|&(l, _)| labels[l as usize].as_str()))
        .collect();
    Ok(ca.with_name(inputs[0].name().clone()).into_series())
}

#[polars_expr(output_type_func_with_kwargs=proba_type)]
fn mmq_predict_proba(inputs: &[Series], kwargs: PredictKwargs) -> PolarsResult<Series> {
    let (ranked, labels) = rank_rows(inputs, &kwargs.path, None, 0.0, "mmq.predict_proba")?;
    let nl = labels.len();
    if kwargs.n_labels != nl {
        polars_bail!(ComputeError: "mmq.predict_proba: the model file now has {} labels, the expression was built for {}", nl, kwargs.n_labels);
    }
    let mut flat = vec![0.0f32; ranked.len() * nl];
    for (i, r) in ranked.iter().enumerate() {
        for &(l, p) in r {
            flat[i * nl + l as usize] = p;
        }
    }
    let dt = FixedSizeListArray::default_datatype(ArrowDataType::Float32, nl);
    let arr = FixedSizeListArray::new(
        dt,
        ranked.len(),
        Box::new(PrimitiveArray::from_vec(flat)),
        None,
    );
    Series::from_arrow(inputs[0].name().clone(), Box::new(arr))
        .and_then(|s| s.cast(&DataType::Array(Box::new(DataType::Float32), nl)))
}

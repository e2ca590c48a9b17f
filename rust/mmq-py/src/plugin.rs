//! Polars expression plugin functions (`pl.col(..).mmq.tokenize(..)`) and the same
//! operations as plain functions on a Series.
use crate::classifier::tokenize_rows;
use crate::errors::{class_name, IntoPy};
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

// Errors. Polars turns a plugin's error into a `polars.exceptions.ComputeError` of its
// own (the plugin cannot choose the class), so every error of an mmq expression carries
// the name of its mmq class as a code at the start of its message, `[mmq:ModelFileError]
// mmq.predict: ...`, which `mmq.errors.from_polars` / `polars_errors` (Python) turn back
// into that class. Every expression runs through [`run_expr`], which codes any error not
// coded yet as an input error and turns a panic into a coded internal error.

/// An error of an mmq expression of the mmq class `class` (a name in `mmq.errors`).
fn coded(class: &str, msg: impl std::fmt::Display) -> PolarsError {
    PolarsError::ComputeError(format!("[mmq:{class}] {msg}").into())
}

/// A core error met by the expression `expr`, coded with its class.
fn core_err(expr: &str, e: &mmq_core::MmqError) -> PolarsError {
    coded(class_name(e), format_args!("{expr}: {e}"))
}

/// The body of the expression `expr`: an error without a code gets the input error's
/// (the expressions' own checks are of their input columns), a panic (a bug) becomes a
/// coded `MmqError` instead of Polars' "the plugin panicked".
fn run_expr(expr: &str, f: impl FnOnce() -> PolarsResult<Series>) -> PolarsResult<Series> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => {
            let msg = e.to_string();
            Err(if msg.starts_with("[mmq:") {
                e
            } else {
                coded("InvalidInputError", msg)
            })
        }
        Err(p) => Err(coded(
            "MmqError",
            format_args!(
                "{expr}: internal error (a bug in mmq, please report it): {}",
                crate::errors::panic_message(p.as_ref())
            ),
        )),
    }
}

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
    /// Take the path of a parallel caller (as if `CallerContext::parallel()`): the
    /// polars versions mmq supports never set that flag, so tests use this to cover it.
    #[serde(default)]
    serial: bool,
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
    // In mmq's fork-safe pool (see pool.rs), not rayon's global one.
    run_expr("mmq.tokenize", || {
        crate::pool::pool().install(|| {
            let tok = Tokenizer::new(kwargs.cfg).map_err(|e| core_err("mmq.tokenize", &e))?;
            let s = &inputs[0];
            let mut out = tokenize_series(s, &tok, !(context.parallel() || kwargs.serial))?;
            out.rename(s.name().clone());
            Ok(out)
        })
    })
}

#[derive(Deserialize)]
struct PanicKwargs {
    message: String,
}

/// A test hook: an expression that panics with `message` inside [`run_expr`], which
/// proves that a panic of an expression reaches Python as a coded `MmqError` (no
/// expression of mmq panics on purpose; `mmq.namespace._panic_for_test`).
#[polars_expr(output_type=UInt32)]
fn mmq_panic_for_test(inputs: &[Series], kwargs: PanicKwargs) -> PolarsResult<Series> {
    run_expr("mmq._panic_for_test", || {
        if inputs.is_empty() {
            return Ok(Series::new_empty("x".into(), &DataType::UInt32));
        }
        panic!("{}", kwargs.message)
    })
}

/// Tokenize a String Series into a List[UInt32] Series (the Python API's path).
#[pyfunction]
pub fn tokenize(py: Python<'_>, text: PySeries, config_json: &str) -> PyResult<PySeries> {
    crate::errors::guard("tokenize", || {
        let cfg: TokenizerConfig = serde_json::from_str(config_json)
            .map_err(|e| crate::errors::input_err(format!("bad tokenizer configuration: {e}")))?;
        let tok = Tokenizer::new(cfg).py_err()?;
        let s = text.0;
        let out = crate::pool::detach(py, || tokenize_series(&s, &tok, true))?
            .map_err(|e| crate::errors::input_err(e.to_string()))?;
        Ok(PySeries(out))
    })
}

// ---------------------------------------------------------------------------------
// Expressions that use a fitted quantizer or model, loaded from its file once and cached
// (reloaded when the file's modification time or size changes).

use crate::classifier::{encode_batches, DenseView, PyClassifier};
use crate::fusion::PyFusion;
use mmq_core::io::quant::quantizer_from_bytes;
use mmq_core::model::Ranked;
use mmq_core::quant::Quantizer;
use mmq_core::text::Scratch;
use polars_arrow::array::FixedSizeListArray;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

enum Loaded {
    Quantizer(Box<Quantizer>),
    Classifier(Box<PyClassifier>),
    Fusion(Box<PyFusion>),
    Sets(Box<crate::sets::PySets>),
}

type CacheMap = HashMap<PathBuf, (SystemTime, u64, Arc<Loaded>)>;

fn cache() -> &'static Mutex<CacheMap> {
    static CACHE: OnceLock<Mutex<CacheMap>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

fn load_cached(path: &str, expr: &str) -> PolarsResult<Arc<Loaded>> {
    let p = PathBuf::from(path);
    let meta = std::fs::metadata(&p).map_err(|e| {
        coded(
            "MmqIOError",
            format_args!("{expr}: cannot read model file '{path}': {e}"),
        )
    })?;
    let stamp = (
        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        meta.len(),
    );
    if let Some((t, n, l)) = cache().lock().unwrap().get(&p) {
        if (*t, *n) == stamp {
            return Ok(l.clone());
        }
    }
    let err = |e: mmq_core::MmqError| core_err(expr, &e);
    let kind = mmq_core::io::peek_kind(&p).map_err(err)?;
    let bytes = mmq_core::io::read(&p).map_err(err)?;
    let loaded = match kind.as_str() {
        "quantizer" => {
            Loaded::Quantizer(Box::new(quantizer_from_bytes(&bytes, path).map_err(err)?))
        }
        "classifier" => {
            let m = mmq_core::model::Model::from_bytes(&bytes, path).map_err(err)?;
            let c = PyClassifier::from_model(m)
                .map_err(|e| coded("ModelFileError", format_args!("{expr}: {e}")))?;
            Loaded::Classifier(Box::new(c))
        }
        "fusion_classifier" => {
            let model =
                mmq_core::model::fusion::FusionModel::from_bytes(&bytes, path).map_err(err)?;
            let tokenizer = Tokenizer::new(model.cfg.tokenizer.clone()).map_err(err)?;
            Loaded::Fusion(Box::new(PyFusion { model, tokenizer }))
        }
        "set_classifier" => {
            let m = mmq_core::model::sets::SetModel::from_bytes(&bytes, path).map_err(err)?;
            let s = crate::sets::PySets::from_model(m)
                .map_err(|e| coded("ModelFileError", format_args!("{expr}: {e}")))?;
            Loaded::Sets(Box::new(s))
        }
        other => {
            return Err(coded(
                "ModelFileError",
                format_args!(
                    "{expr}: '{path}' holds an mmq {other}, not a quantizer or classifier"
                ),
            ))
        }
    };
    let l = Arc::new(loaded);
    cache()
        .lock()
        .unwrap()
        .insert(p, (stamp.0, stamp.1, l.clone()));
    Ok(l)
}

/// A dense column's present rows as a row-major f32 matrix, and the presence mask.
struct DenseCol {
    /// The column's values (one chunk), used in place when every row is present.
    values: Float32Chunked,
    /// The present rows, copied, when some rows are null.
    compact: Option<Vec<f32>>,
    present: Vec<bool>,
}

impl DenseCol {
    fn matrix(&self) -> &[f32] {
        match &self.compact {
            Some(v) => v,
            None => self
                .values
                .downcast_iter()
                .next()
                .map_or(&[], |a| a.values().as_slice()),
        }
    }
}

/// Reads an Array[float, d] column without copying it when it is one Float32 chunk
/// with no nulls (NaN/inf are then caught by the encoder, which names the row).
fn dense_column(s: &Series, d: usize, expr: &str) -> PolarsResult<DenseCol> {
    let w = match s.dtype() {
        DataType::Array(inner, w) if inner.is_primitive_numeric() => *w,
        DataType::List(inner) if inner.is_primitive_numeric() => {
            // Vectors as lists (as the Python API accepts): each present row must hold d.
            let ca = s.list()?;
            for (i, v) in ca.amortized_iter().enumerate() {
                if let Some(v) = v {
                    if v.as_ref().len() != d {
                        polars_bail!(InvalidOperation: "{}: column '{}' row {} holds {} values, the model expects {}",
                            expr, s.name(), i, v.as_ref().len(), d);
                    }
                }
            }
            let arr = s.cast(&DataType::Array(Box::new(DataType::Float32), d))?;
            return dense_column(&arr, d, expr);
        }
        DataType::List(inner) => polars_bail!(InvalidOperation:
            "{}: column '{}' must hold float vectors, got List[{}]", expr, s.name(), inner),
        other => polars_bail!(InvalidOperation:
            "{}: column '{}' must be Array[Float32, {}], got {}", expr, s.name(), d, other),
    };
    if w != d {
        polars_bail!(InvalidOperation: "{}: column '{}' has dimension {}, the model expects {}", expr, s.name(), w, d);
    }
    let s = s.cast(&DataType::Array(Box::new(DataType::Float32), d))?;
    let ca = s.array()?.rechunk();
    let present: Vec<bool> = if ca.null_count() == 0 {
        vec![true; ca.len()]
    } else {
        ca.iter().map(|o| o.is_some()).collect()
    };
    let values = ca.get_inner().f32()?.rechunk().into_owned();
    if values.len() != ca.len() * d {
        polars_bail!(ComputeError: "{}: column '{}' holds {} values for {} rows of dimension {}", expr, s.name(), values.len(), ca.len(), d);
    }
    if values.null_count() > 0 {
        // A null inside a present row's vector (values under a null row do not count).
        let arr = values.downcast_iter().next().expect("one chunk");
        if let Some(i) = (0..arr.len())
            .find(|&p| present[p / d] && !polars_arrow::array::Array::is_valid(arr, p))
            .map(|p| p / d)
        {
            polars_bail!(ComputeError: "{}: column '{}' row {} has a null inside its vector", expr, s.name(), i);
        }
    }
    let compact = if present.iter().all(|&p| p) {
        None
    } else {
        let flat = values
            .downcast_iter()
            .next()
            .map_or(&[][..], |a| a.values().as_slice());
        let mut out = Vec::with_capacity(present.iter().filter(|&&p| p).count() * d);
        for (i, (row, &p)) in flat.chunks_exact(d.max(1)).zip(&present).enumerate() {
            if p {
                if !row.iter().all(|v| v.is_finite()) {
                    polars_bail!(ComputeError: "{}: column '{}' row {} has NaN or inf", expr, s.name(), i);
                }
                out.extend_from_slice(row);
            }
        }
        Some(out)
    };
    Ok(DenseCol {
        values,
        compact,
        present,
    })
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
    /// Take the path of a parallel caller (as if `CallerContext::parallel()`): the
    /// polars versions mmq supports never set that flag, so tests use this to cover it.
    #[serde(default)]
    serial: bool,
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

/// Rows per encoder call when Polars already runs the expression in parallel. The core
/// encodes in blocks of 256 rows, in parallel across blocks; given one block, rayon runs
/// it on the calling thread, so calling it block by block stays on Polars' thread.
const SERIAL_BLOCK: usize = 256;

/// Codes of the `n` rows of `x` (n × d) into `out` (n × m) with `enc`: one parallel call,
/// or (`parallel` false) block by block on this thread, with the same codes and errors.
fn encode_rows<T>(
    x: &[f32],
    n: usize,
    m: usize,
    out: &mut [T],
    parallel: bool,
    enc: impl Fn(&[f32], usize, &mut [T]) -> mmq_core::Result<()>,
) -> mmq_core::Result<()> {
    if parallel || n <= SERIAL_BLOCK {
        return enc(x, n, out);
    }
    let d = x.len() / n;
    for (b, o) in out.chunks_mut(SERIAL_BLOCK * m).enumerate() {
        let (r0, rows) = (b * SERIAL_BLOCK, o.len() / m);
        let xb = &x[r0 * d..(r0 + rows) * d];
        if let Err(e) = enc(xb, rows, o) {
            // Name the row in the whole input, as the one-call path does.
            return Err(match xb.iter().position(|v| !v.is_finite()) {
                Some(p) => mmq_core::MmqError::InvalidInput(format!(
                    "row {} has NaN or inf at dim {} (value {}); expected finite values",
                    r0 + p / d,
                    p % d,
                    xb[p]
                )),
                None => e,
            });
        }
    }
    Ok(())
}

/// Codes of the present rows spread to all rows (zeros under a null flag).
fn spread<T: Copy + Default>(codes: Vec<T>, present: &[bool], m: usize) -> Vec<T> {
    if codes.len() == present.len() * m {
        return codes;
    }
    let mut full = vec![T::default(); present.len() * m];
    let mut r = 0;
    for (i, &p) in present.iter().enumerate() {
        if p {
            full[i * m..(i + 1) * m].copy_from_slice(&codes[r * m..(r + 1) * m]);
            r += 1;
        }
    }
    full
}

#[polars_expr(output_type_func_with_kwargs=encode_type)]
fn mmq_encode(
    inputs: &[Series],
    context: CallerContext,
    kwargs: EncodeKwargs,
) -> PolarsResult<Series> {
    // In mmq's fork-safe pool (see pool.rs), not rayon's global one.
    run_expr("mmq.encode", || {
        crate::pool::pool().install(|| {
            let l = load_cached(&kwargs.path, "mmq.encode")?;
            let Loaded::Quantizer(q) = &*l else {
                return Err(coded(
                    "ModelFileError",
                    format_args!("mmq.encode: '{}' is not a quantizer file", kwargs.path),
                ));
            };
            let s = &inputs[0];
            let col = dense_column(s, q.d(), "mmq.encode")?;
            let x = col.matrix();
            let (n, m) = (s.len(), q.m());
            let n_present = x.len() / q.d().max(1);
            let parallel = !(context.parallel() || kwargs.serial);
            let err = |e: mmq_core::MmqError| {
                coded(
                    class_name(&e),
                    format_args!("mmq.encode: column '{}': {e}", s.name()),
                )
            };
            let valid = validity(&col.present);
            let (arr, inner): (Box<dyn polars_arrow::array::Array>, DataType) = if q.k() <= 256 {
                let mut c = vec![0u8; n_present * m];
                encode_rows(x, n_present, m, &mut c, parallel, |x, n, o| {
                    q.encode_u8(x, n, o)
                })
                .map_err(err)?;
                let dt = FixedSizeListArray::default_datatype(ArrowDataType::UInt8, m);
                let values = PrimitiveArray::from_vec(spread(c, &col.present, m));
                let arr = FixedSizeListArray::new(dt, n, Box::new(values), valid);
                (Box::new(arr), DataType::UInt8)
            } else {
                let mut c = vec![0u16; n_present * m];
                encode_rows(x, n_present, m, &mut c, parallel, |x, n, o| {
                    q.encode_u16(x, n, o)
                })
                .map_err(err)?;
                let dt = FixedSizeListArray::default_datatype(ArrowDataType::UInt16, m);
                let values = PrimitiveArray::from_vec(spread(c, &col.present, m));
                let arr = FixedSizeListArray::new(dt, n, Box::new(values), valid);
                (Box::new(arr), DataType::UInt16)
            };
            Series::from_arrow(s.name().clone(), arr)
                .and_then(|s| s.cast(&DataType::Array(Box::new(inner), m)))
        })
    })
}

#[derive(Deserialize)]
struct PredictKwargs {
    path: String,
    #[serde(default)]
    threshold: f32,
    #[serde(default)]
    n_labels: usize,
    /// Take the path of a parallel caller (as if `CallerContext::parallel()`): the
    /// polars versions mmq supports never set that flag, so tests use this to cover it.
    #[serde(default)]
    serial: bool,
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
/// model's dense columns follow in its order. `parallel` false (Polars already runs the
/// expression in parallel): everything runs on this thread, rayon's pool is not used.
fn rank_rows(
    inputs: &[Series],
    path: &str,
    k: Option<usize>,
    threshold: f32,
    expr: &str,
    parallel: bool,
) -> PolarsResult<(Vec<Ranked>, Vec<String>)> {
    // In mmq's fork-safe pools (see pool.rs), not rayon's global one.
    let pool = if parallel {
        crate::pool::pool()
    } else {
        crate::pool::single()
    };
    pool.install(|| rank_rows_in_pool(inputs, path, k, threshold, expr, parallel))
}

fn rank_rows_in_pool(
    inputs: &[Series],
    path: &str,
    k: Option<usize>,
    threshold: f32,
    expr: &str,
    parallel: bool,
) -> PolarsResult<(Vec<Ranked>, Vec<String>)> {
    let l = load_cached(path, expr)?;
    if let Loaded::Sets(s) = &*l {
        return rank_set_rows(s, inputs, k, threshold, expr, parallel);
    }
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
            let cols: Vec<DenseCol> = dense
                .iter()
                .zip(&inputs[1..])
                .map(|(d, s)| dense_column(s, d.quantizer.d(), expr))
                .collect::<PolarsResult<_>>()?;
            // Serial: encode here, block by block, and hand the codes over.
            let codes: Vec<Vec<u16>> = if parallel {
                Vec::new()
            } else {
                cols.iter()
                    .zip(dense)
                    .map(|(col, d)| {
                        let (q, x) = (&d.quantizer, col.matrix());
                        let n = x.len() / q.d().max(1);
                        let mut out = vec![0u16; n * q.m()];
                        encode_rows(x, n, q.m(), &mut out, false, |x, n, o| {
                            q.encode_u16(x, n, o)
                        })
                        .map(|_| out)
                        .map_err(|e| {
                            coded(
                                class_name(&e),
                                format_args!("{expr}: dense column '{}': {e}", d.name),
                            )
                        })
                    })
                    .collect::<PolarsResult<_>>()?
            };
            let views: Vec<DenseView> = cols
                .iter()
                .zip(dense)
                .enumerate()
                .map(|(j, (col, d))| {
                    let x = col.matrix();
                    let n = x.len() / d.quantizer.d().max(1);
                    DenseView {
                        vectors: parallel.then_some((x, n)),
                        codes: (!parallel).then(|| (&codes[j][..], n)),
                        present: &col.present,
                    }
                })
                .collect();
            let batches = encode_batches(dense, &views).map_err(|e| core_err(expr, &e))?;
            let k = k.unwrap_or(c.model.n_labels());
            let ranked = c.predict_rows(&texts, &batches, k, threshold, parallel);
            Ok((ranked, c.model.labels.clone()))
        }
        Loaded::Fusion(f) => {
            if inputs.len() != 2 {
                polars_bail!(InvalidOperation: "{}: the model fuses the text with one dense column, got {}", expr, inputs.len() - 1);
            }
            let d = f.model.dense_dim;
            let col = dense_column(&inputs[1], d, expr)?;
            let (x, present) = (col.matrix(), &col.present);
            let mut full = vec![0.0f32; texts.len() * d];
            let mut r = 0;
            for (i, &p) in present.iter().enumerate() {
                if p {
                    full[i * d..(i + 1) * d].copy_from_slice(&x[r * d..(r + 1) * d]);
                    r += 1;
                }
            }
            if let Some(p) = full.iter().position(|v| !v.is_finite()) {
                polars_bail!(ComputeError: "{}: column '{}' row {} has NaN or inf", expr, inputs[1].name(), p / d.max(1));
            }
            let nl = f.model.n_labels();
            let (k, all) = (k.unwrap_or(nl), k.is_none());
            let ranked = if parallel {
                f.rows(&texts, &full, present, k, threshold, all)
            } else {
                let (mut scratch, mut ids, mut buf) = (Scratch::default(), Vec::new(), Vec::new());
                texts
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        ids.clear();
                        f.tokenizer.tokenize_into(t, &mut ids, &mut scratch);
                        let x = present[i].then(|| &full[i * d..(i + 1) * d]);
                        if all {
                            f.model.probs(&ids, x, &mut buf);
                            buf.iter()
                                .enumerate()
                                .map(|(l, &p)| (l as u32, p))
                                .collect()
                        } else {
                            f.model.predict(&ids, x, k, threshold)
                        }
                    })
                    .collect()
            };
            Ok((ranked, f.model.labels.clone()))
        }
        Loaded::Quantizer(_) => Err(coded(
            "ModelFileError",
            format_args!("{expr}: '{path}' is a quantizer, not a classifier"),
        )),
        Loaded::Sets(_) => unreachable!("handled above"),
    }
}

/// [`rank_rows`] for a many-modality model: `inputs` are its modalities' columns in its
/// order (text and categorical as String, dense as Array[float, d]).
fn rank_set_rows(
    s: &crate::sets::PySets,
    inputs: &[Series],
    k: Option<usize>,
    threshold: f32,
    expr: &str,
    parallel: bool,
) -> PolarsResult<(Vec<Ranked>, Vec<String>)> {
    use crate::sets::{batch_tokens, Input};
    use mmq_core::model::sets::{ModalityKind, ModalityRows};
    let cfg = &s.model.cfg;
    if inputs.len() != cfg.modalities.len() {
        polars_bail!(InvalidOperation: "{}: the model reads {} column(s) {:?}, got {}", expr,
            cfg.modalities.len(), cfg.modalities.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), inputs.len());
    }
    let work = || -> PolarsResult<Vec<Ranked>> {
        // Dense columns to codes first; they must outlive the inputs that borrow them.
        let mut codes: Vec<(Vec<u16>, Vec<bool>)> = Vec::new();
        for (m, (col, q)) in cfg
            .modalities
            .iter()
            .zip(inputs.iter().zip(&s.model.quantizers))
        {
            if m.kind != ModalityKind::Dense {
                continue;
            }
            let q = q.as_ref().ok_or_else(|| {
                coded(
                    "ModelFileError",
                    format_args!("{expr}: dense column '{}' has no quantizer", m.name),
                )
            })?;
            let dc = dense_column(col, q.d(), expr)?;
            let x = dc.matrix();
            let n = x.len() / q.d().max(1);
            let mut out = vec![0u16; n * q.m()];
            encode_rows(x, n, q.m(), &mut out, parallel, |x, n, o| {
                q.encode_u16(x, n, o)
            })
            .map_err(|e| {
                coded(
                    class_name(&e),
                    format_args!("{expr}: dense column '{}': {e}", m.name),
                )
            })?;
            codes.push((out, dc.present));
        }
        let mut next = codes.iter();
        let batch: Vec<Input> = cfg
            .modalities
            .iter()
            .zip(inputs)
            .map(|(m, col)| match m.kind {
                ModalityKind::Dense => {
                    let (c, p) = next.next().expect("one code array per dense column");
                    Input::Codes(c, p)
                }
                _ => Input::Strings(col),
            })
            .collect();
        // Its errors are about the input columns.
        let (csr, _) = batch_tokens(cfg, &s.tokenizer, &s.model.quantizers, batch)
            .map_err(|e| coded("InvalidInputError", format_args!("{expr}: {e}")))?;
        let views: Vec<ModalityRows> = csr
            .iter()
            .map(|(o, i)| ModalityRows { offsets: o, ids: i })
            .collect();
        let k = k.unwrap_or(s.model.n_labels());
        s.model
            .predict_batch(&views, k, threshold)
            .map_err(|e| core_err(expr, &e))
    };
    // rank_rows runs this in a one-thread pool when Polars is already parallel.
    let ranked = work()?;
    Ok((ranked, s.model.labels.clone()))
}

#[polars_expr(output_type_func_with_kwargs=predict_type)]
fn mmq_predict(
    inputs: &[Series],
    context: CallerContext,
    kwargs: PredictKwargs,
) -> PolarsResult<Series> {
    run_expr("mmq.predict", || {
        let (ranked, labels) = rank_rows(
            inputs,
            &kwargs.path,
            Some(1),
            kwargs.threshold,
            "mmq.predict",
            !(context.parallel() || kwargs.serial),
        )?;
        let ca: StringChunked = ranked
            .iter()
            .map(|r| r.first().map(|&(l, _)| labels[l as usize].as_str()))
            .collect();
        Ok(ca.with_name(inputs[0].name().clone()).into_series())
    })
}

#[derive(Deserialize)]
struct TopKwargs {
    path: String,
    #[serde(default)]
    threshold: f32,
    /// Labels per row; 0: every label.
    k: usize,
    #[serde(default)]
    serial: bool,
}

fn top_type(fields: &[Field], _kw: TopKwargs) -> PolarsResult<Field> {
    let list = |t: DataType| DataType::List(Box::new(t));
    Ok(Field::new(
        fields[0].name().clone(),
        DataType::Struct(vec![
            Field::new("label".into(), list(DataType::String)),
            Field::new("prob".into(), list(DataType::Float32)),
        ]),
    ))
}

/// The top `k` labels of every row, most probable first, as a struct of two lists of
/// the same length: `label` (String) and `prob` (Float32); labels under the threshold
/// are left out.
#[polars_expr(output_type_func_with_kwargs=top_type)]
fn mmq_predict_top(
    inputs: &[Series],
    context: CallerContext,
    kwargs: TopKwargs,
) -> PolarsResult<Series> {
    run_expr("mmq.predict", || {
        let k = (kwargs.k > 0).then_some(kwargs.k);
        let (ranked, labels) = rank_rows(
            inputs,
            &kwargs.path,
            k,
            kwargs.threshold,
            "mmq.predict",
            !(context.parallel() || kwargs.serial),
        )?;
        let n = ranked.len();
        let total: usize = ranked.iter().map(|r| r.len()).sum();
        let mut lab = ListStringChunkedBuilder::new("label".into(), n, total);
        let mut prob = ListPrimitiveChunkedBuilder::<Float32Type>::new(
            "prob".into(),
            n,
            total,
            DataType::Float32,
        );
        for r in &ranked {
            // Every label (k = 0) comes in label order: rank them, stably by label.
            let mut r = r.clone();
            if k.is_none() {
                r.retain(|&(_, p)| p >= kwargs.threshold);
                r.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            }
            lab.append_values_iter(r.iter().map(|&(l, _)| labels[l as usize].as_str()));
            prob.append_slice(&r.iter().map(|&(_, p)| p).collect::<Vec<_>>());
        }
        let fields = [lab.finish().into_series(), prob.finish().into_series()];
        Ok(polars_core::prelude::StructChunked::from_series(
            inputs[0].name().clone(),
            n,
            fields.iter(),
        )?
        .into_series())
    })
}

#[polars_expr(output_type_func_with_kwargs=proba_type)]
fn mmq_predict_proba(
    inputs: &[Series],
    context: CallerContext,
    kwargs: PredictKwargs,
) -> PolarsResult<Series> {
    run_expr("mmq.predict_proba", || {
        predict_proba_series(inputs, &context, &kwargs)
    })
}

fn predict_proba_series(
    inputs: &[Series],
    context: &CallerContext,
    kwargs: &PredictKwargs,
) -> PolarsResult<Series> {
    let (ranked, labels) = rank_rows(
        inputs,
        &kwargs.path,
        None,
        0.0,
        "mmq.predict_proba",
        !(context.parallel() || kwargs.serial),
    )?;
    let nl = labels.len();
    if kwargs.n_labels != nl {
        return Err(coded(
            "ModelFileError",
            format_args!(
                "mmq.predict_proba: the model file now has {nl} labels, the expression was built for {}",
                kwargs.n_labels
            ),
        ));
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

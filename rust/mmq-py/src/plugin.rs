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

//! Polars columns to plain Rust data.
use crate::errors::input_err;
use polars::prelude::*;
use pyo3::prelude::*;

/// The strings of a String column (nulls become empty text).
pub fn texts<'a>(s: &'a Series, name: &str) -> PyResult<Vec<&'a str>> {
    let ca = s.str().map_err(|_| {
        input_err(format!(
            "column '{name}' must be of type String, found {}",
            s.dtype()
        ))
    })?;
    Ok(ca.iter().map(|o| o.unwrap_or("")).collect())
}

/// Label column (String or List[String]) to label names (most frequent first, ties by
/// name) and CSR label indices.
pub fn labels(
    s: &Series,
    name: &str,
    known: Option<&[String]>,
) -> PyResult<(Vec<String>, Vec<usize>, Vec<u32>)> {
    let mut rows: Vec<Vec<String>> = Vec::with_capacity(s.len());
    let mut nulls = 0usize;
    let mut empty = 0usize;
    match s.dtype() {
        DataType::String => {
            for v in s.str().unwrap().iter() {
                match v {
                    Some(v) => rows.push(vec![v.to_string()]),
                    None => {
                        nulls += 1;
                        rows.push(vec![]);
                    }
                }
            }
        }
        DataType::List(inner) if **inner == DataType::String => {
            for v in s.list().unwrap().amortized_iter() {
                match v {
                    None => {
                        nulls += 1;
                        rows.push(vec![]);
                    }
                    Some(sub) => {
                        let ca = sub.as_ref().str().unwrap();
                        if ca.null_count() > 0 {
                            nulls += 1;
                        }
                        if ca.is_empty() {
                            empty += 1;
                        }
                        rows.push(ca.iter().flatten().map(|x| x.to_string()).collect());
                    }
                }
            }
        }
        other => {
            return Err(input_err(format!(
                "label column '{name}' must be String or List[String], found {other}"
            )))
        }
    }
    if nulls > 0 {
        return Err(input_err(format!(
            "label column '{name}' has {nulls} null label(s); every row needs a label (drop or fill them first)"
        )));
    }
    if empty > 0 {
        return Err(input_err(format!(
            "label column '{name}' has {empty} row(s) with an empty label list"
        )));
    }
    let names: Vec<String> = match known {
        Some(k) => k.to_vec(),
        None => {
            let mut counts: std::collections::HashMap<&str, u64> = Default::default();
            for r in &rows {
                for l in r {
                    *counts.entry(l.as_str()).or_default() += 1;
                }
            }
            let mut v: Vec<(&str, u64)> = counts.into_iter().collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            v.into_iter().map(|(n, _)| n.to_string()).collect()
        }
    };
    let pos: std::collections::HashMap<&str, u32> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i as u32))
        .collect();
    let mut offsets = Vec::with_capacity(rows.len() + 1);
    offsets.push(0);
    let mut idx = Vec::new();
    for r in &rows {
        for l in r {
            // Unknown labels (at test time) get an index past the known ones: they can
            // never be predicted, so they count as misses.
            let i = match pos.get(l.as_str()) {
                Some(&i) => i,
                None => u32::MAX,
            };
            if !idx[offsets.last().copied().unwrap_or(0)..].contains(&i) || i == u32::MAX {
                idx.push(i);
            }
        }
        offsets.push(idx.len());
    }
    Ok((names, offsets, idx))
}

/// A validation frame's texts and labels (CSR, indexed like the training labels `names`;
/// labels training never saw get indices past them): one label row per text, not empty.
pub fn valid_texts<'a>(
    text: &'a Series,
    labels: &Series,
    text_name: &str,
    label_name: &str,
    names: &[String],
) -> PyResult<(Vec<&'a str>, Vec<usize>, Vec<u32>)> {
    let vtexts = texts(text, text_name)?;
    let (_, vlo, vli) = self::labels(labels, label_name, Some(names))?;
    if vtexts.len() != vlo.len() - 1 {
        return Err(input_err(format!(
            "validation '{text_name}' has {} rows but '{label_name}' has {}",
            vtexts.len(),
            vlo.len() - 1
        )));
    }
    if vtexts.is_empty() {
        return Err(input_err("the validation frame is empty (0 rows)"));
    }
    Ok((vtexts, vlo, vli))
}

/// The instant `max_seconds` from now (a training time budget), checked: finite and > 0.
pub fn deadline(max_seconds: Option<f64>) -> PyResult<Option<std::time::Instant>> {
    match max_seconds {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Some(
            std::time::Instant::now() + std::time::Duration::from_secs_f64(s),
        )),
        Some(s) => Err(crate::errors::to_py(mmq_core::MmqError::InvalidParameter(
            format!("max_seconds must be a finite number of seconds > 0, got {s}"),
        ))),
    }
}

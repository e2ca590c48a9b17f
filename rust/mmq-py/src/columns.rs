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
/// name) and CSR label indices. One pass over the column's Arrow strings: each distinct
/// label is copied once (no per-row strings; at millions of rows those were ~150 MB the
/// allocator kept after they were freed).
pub fn labels(
    s: &Series,
    name: &str,
    known: Option<&[String]>,
) -> PyResult<(Vec<String>, Vec<usize>, Vec<u32>)> {
    let mut rows = LabelRows::new(s.len(), known);
    let (mut nulls, mut empty) = (0usize, 0usize);
    match s.dtype() {
        DataType::String => {
            for v in s.str().unwrap().iter() {
                match v {
                    Some(v) => rows.push(v),
                    None => nulls += 1,
                }
                rows.end_row();
            }
        }
        DataType::List(inner) if **inner == DataType::String => {
            for v in s.list().unwrap().amortized_iter() {
                if let Some(sub) = v {
                    let ca = sub.as_ref().str().unwrap();
                    if ca.null_count() > 0 {
                        nulls += 1;
                    }
                    if ca.is_empty() {
                        empty += 1;
                    }
                    for l in ca.iter().flatten() {
                        rows.push(l);
                    }
                } else {
                    nulls += 1;
                }
                rows.end_row();
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
    Ok(rows.finish())
}

/// The CSR label rows being read: with `known` names, their indices (u32::MAX for a
/// label not among them: it can never be predicted, so it counts as a miss); without,
/// indices in order of first appearance, renumbered by [`LabelRows::finish`].
struct LabelRows {
    known: Option<(Vec<String>, std::collections::HashMap<String, u32>)>,
    seen: std::collections::HashMap<String, u32>,
    names: Vec<String>,
    counts: Vec<u64>,
    offsets: Vec<usize>,
    idx: Vec<u32>,
}

impl LabelRows {
    fn new(n: usize, known: Option<&[String]>) -> Self {
        let known = known.map(|k| {
            let pos = k
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), i as u32))
                .collect();
            (k.to_vec(), pos)
        });
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0);
        Self {
            known,
            seen: Default::default(),
            names: Vec::new(),
            counts: Vec::new(),
            offsets,
            idx: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, l: &str) {
        let i = match &self.known {
            Some((_, pos)) => pos.get(l).copied().unwrap_or(u32::MAX),
            None => {
                let i = match self.seen.get(l) {
                    Some(&i) => i,
                    None => {
                        let i = self.names.len() as u32;
                        self.seen.insert(l.to_string(), i);
                        self.names.push(l.to_string());
                        self.counts.push(0);
                        i
                    }
                };
                // Every occurrence counts (a label repeated in a row too), as it is read.
                self.counts[i as usize] += 1;
                i
            }
        };
        let row = &self.idx[self.offsets[self.offsets.len() - 1]..];
        if i == u32::MAX || !row.contains(&i) {
            self.idx.push(i);
        }
    }

    fn end_row(&mut self) {
        self.offsets.push(self.idx.len());
    }

    fn finish(self) -> (Vec<String>, Vec<usize>, Vec<u32>) {
        if let Some((names, _)) = self.known {
            return (names, self.offsets, self.idx);
        }
        let mut order: Vec<u32> = (0..self.names.len() as u32).collect();
        order.sort_by(|&a, &b| {
            let (a, b) = (a as usize, b as usize);
            self.counts[b]
                .cmp(&self.counts[a])
                .then(self.names[a].cmp(&self.names[b]))
        });
        let mut rank = vec![0u32; order.len()];
        for (r, &t) in order.iter().enumerate() {
            rank[t as usize] = r as u32;
        }
        let mut names = self.names;
        let sorted = order
            .iter()
            .map(|&t| std::mem::take(&mut names[t as usize]))
            .collect();
        let mut idx = self.idx;
        for i in idx.iter_mut() {
            *i = rank[*i as usize];
        }
        (sorted, self.offsets, idx)
    }
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

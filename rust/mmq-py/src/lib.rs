//! `mmq._mmq`: PyO3 bindings of mmq-core and the Polars expression plugin.
//! Every call extracts owned inputs, then releases the GIL around the Rust work.
mod classifier;
mod columns;
mod errors;
mod fusion;
mod plugin;
mod pool;
mod quantizer;
mod sets;

use pyo3::prelude::*;

#[pymodule]
fn _mmq(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<classifier::PyClassifier>()?;
    m.add_class::<classifier::PyTokenRows>()?;
    m.add_class::<quantizer::PyQuantizer>()?;
    m.add_class::<fusion::PyFusion>()?;
    m.add_class::<sets::PySets>()?;
    m.add_function(wrap_pyfunction!(file_kind, m)?)?;
    m.add_function(wrap_pyfunction!(pack, m)?)?;
    m.add_function(wrap_pyfunction!(write_file, m)?)?;
    m.add_function(wrap_pyfunction!(unpack, m)?)?;
    m.add_function(wrap_pyfunction!(plugin::tokenize, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_in_pool, m)?)?;
    m.add_function(wrap_pyfunction!(set_threads, m)?)?;
    m.add_function(wrap_pyfunction!(project, m)?)?;
    m.add_function(wrap_pyfunction!(get_threads, m)?)?;
    m.add_function(wrap_pyfunction!(errors::_panic_for_test, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

/// The kind of model stored in an mmq file ("classifier", "quantizer", ...).
#[pyfunction]
fn file_kind(path: std::path::PathBuf) -> PyResult<String> {
    crate::errors::guard("file_kind", || {
        use errors::IntoPy;
        mmq_core::io::peek_kind(&path).py_err()
    })
}

/// A composite model file's bytes: a JSON header (an object with a `kind`) and named
/// byte parts.
#[pyfunction]
fn pack<'py>(
    py: Python<'py>,
    header_json: &str,
    parts: Vec<(String, Vec<u8>)>,
) -> PyResult<Bound<'py, pyo3::types::PyBytes>> {
    crate::errors::guard("pack", || {
        use errors::IntoPy;
        let header: serde_json::Value = serde_json::from_str(header_json)
            .map_err(|e| errors::input_err(format!("bad header: {e}")))?;
        let b = mmq_core::io::pack(&header, &parts).py_err()?;
        Ok(pyo3::types::PyBytes::new(py, &b))
    })
}

/// The header (JSON) and named byte parts of a file written by `pack`.
type NamedBytes<'py> = Vec<(String, Bound<'py, pyo3::types::PyBytes>)>;

#[pyfunction]
#[pyo3(signature = (data, source="<bytes>"))]
fn unpack<'py>(py: Python<'py>, data: &[u8], source: &str) -> PyResult<(String, NamedBytes<'py>)> {
    crate::errors::guard("unpack", || {
        use errors::IntoPy;
        let (h, parts) = mmq_core::io::unpack(data, source).py_err()?;
        Ok((
            h.to_string(),
            parts
                .into_iter()
                .map(|(n, b)| (n, pyo3::types::PyBytes::new(py, &b)))
                .collect(),
        ))
    })
}

/// Write bytes to `path` atomically (as every model's `save`).
#[pyfunction]
fn write_file(py: Python<'_>, path: std::path::PathBuf, data: Vec<u8>) -> PyResult<()> {
    crate::errors::guard("write_file", || {
        use errors::IntoPy;
        crate::pool::detach(py, || mmq_core::io::write_atomic(&path, &data)).py_err()
    })
}

/// For the tests: a panic in pool work, which must reach Python as `mmq.MmqError`.
/// `((x − mean) / std) @ proj` (float32), each row in a fixed order: the same result for
/// a row however many rows come with it (see `mmq_core::model::dense::project`).
#[pyfunction]
fn project<'py>(
    py: Python<'py>,
    x: numpy::PyReadonlyArray2<'py, f32>,
    mean: numpy::PyReadonlyArray1<'py, f32>,
    std: numpy::PyReadonlyArray1<'py, f32>,
    proj: numpy::PyReadonlyArray2<'py, f32>,
) -> PyResult<Bound<'py, numpy::PyArray2<f32>>> {
    errors::guard("project", || {
        use errors::IntoPy;
        use numpy::{IntoPyArray, PyUntypedArrayMethods};
        let n = x.shape()[0];
        let r = proj.shape()[1];
        let (x, mean, std, proj) = (
            x.as_slice()?,
            mean.as_slice()?,
            std.as_slice()?,
            proj.as_slice()?,
        );
        let mut out = vec![
            0f32;
            n.checked_mul(r)
                .ok_or_else(|| errors::input_err("project: n × r overflows"))?
        ];
        pool::detach(py, || {
            mmq_core::model::dense::project(x, n, mean, std, proj, r, &mut out)
        })
        .py_err()?;
        let a = numpy::ndarray::Array2::from_shape_vec((n, r), out)
            .map_err(|e| errors::input_err(e.to_string()))?;
        Ok(a.into_pyarray(py))
    })
}

/// Use `threads` threads (>= 1) for this process's parallel work from now on.
#[pyfunction]
fn set_threads(threads: i64) -> PyResult<()> {
    if !(1..=4096).contains(&threads) {
        return Err(errors::to_py(mmq_core::MmqError::InvalidParameter(
            format!("threads must be an integer in 1..=4096, got {threads}"),
        )));
    }
    errors::guard("set_threads", || {
        pool::set_threads(threads as usize);
        Ok(())
    })
}

/// The number of threads this process's parallel work uses.
#[pyfunction]
fn get_threads() -> usize {
    pool::threads()
}

#[pyfunction]
fn _panic_in_pool(py: Python<'_>) -> PyResult<()> {
    crate::errors::guard("_panic_in_pool", || {
        fn boom() {
            panic!("a test panic")
        }
        crate::pool::detach(py, boom)
    })
}

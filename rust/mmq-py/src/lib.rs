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
    m.add_class::<quantizer::PyQuantizer>()?;
    m.add_class::<fusion::PyFusion>()?;
    m.add_class::<sets::PySets>()?;
    m.add_function(wrap_pyfunction!(file_kind, m)?)?;
    m.add_function(wrap_pyfunction!(plugin::tokenize, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

/// The kind of model stored in an mmq file ("classifier", "quantizer", ...).
#[pyfunction]
fn file_kind(path: std::path::PathBuf) -> PyResult<String> {
    use errors::IntoPy;
    mmq_core::io::peek_kind(&path).py_err()
}

use polars::prelude::*;
use pyo3::prelude::*;
use pyo3_polars::derive::polars_expr;
use pyo3_polars::PySeries;

#[polars_expr(output_type=UInt32)]
fn str_len_probe(inputs: &[Series]) -> PolarsResult<Series> {
    let ca = inputs[0].str()?;
    let out: UInt32Chunked = ca.iter().map(|o| o.map(|s| s.len() as u32)).collect();
    Ok(out.into_series())
}

#[pyfunction]
fn series_len(s: PySeries) -> usize {
    let s: Series = s.into();
    s.len()
}

#[pymodule]
fn _mmq(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(series_len, m)?)?;
    Ok(())
}

//! `mmq._mmq.RustQuantizer`: PQ / RSPQ for Python. Inputs arrive as C-contiguous
//! float32 / uint16 NumPy arrays (the Python wrapper converts); the GIL is released
//! around fit, encode, decode and error computation.
use crate::errors::{input_err, IntoPy};
use mmq_core::io::quant::{quantizer_from_bytes, quantizer_to_bytes};
use mmq_core::quant::{Quantizer, Transform};
use numpy::{IntoPyArray, PyArray2, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

#[pyclass(module = "mmq._mmq", name = "RustQuantizer")]
pub struct PyQuantizer {
    pub q: Quantizer,
}

fn dims<T: numpy::Element>(a: &PyReadonlyArray2<'_, T>) -> (usize, usize) {
    let s = a.shape();
    (s[0], s[1])
}

/// A Rust buffer as an n × w NumPy array.
fn array2<T: numpy::Element>(
    py: Python<'_>,
    n: usize,
    w: usize,
    v: Vec<T>,
) -> PyResult<Bound<'_, PyArray2<T>>> {
    let a =
        numpy::ndarray::Array2::from_shape_vec((n, w), v).map_err(|e| input_err(e.to_string()))?;
    Ok(a.into_pyarray(py))
}

impl PyQuantizer {
    /// Rows of `x` as a slice, after checking their dimension.
    fn vectors<'a>(&self, x: &'a PyReadonlyArray2<'_, f32>) -> PyResult<(&'a [f32], usize)> {
        let (n, d) = dims(x);
        if d != self.q.d() {
            return Err(input_err(format!(
                "expected vectors of dimension {}, got {d}",
                self.q.d()
            )));
        }
        Ok((x.as_slice().map_err(|e| input_err(e.to_string()))?, n))
    }

    /// Codes as a slice, after checking their width.
    fn codes<'a>(&self, codes: &'a PyReadonlyArray2<'_, u16>) -> PyResult<(&'a [u16], usize)> {
        let (n, m) = dims(codes);
        if m != self.q.m() {
            return Err(input_err(format!(
                "expected {} codes per row, got {m}",
                self.q.m()
            )));
        }
        Ok((codes.as_slice().map_err(|e| input_err(e.to_string()))?, n))
    }
}

#[pymethods]
impl PyQuantizer {
    #[staticmethod]
    #[pyo3(signature = (kind, d, m, k, seed, s=None, subspaces=None, transform=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        kind: &str,
        d: usize,
        m: usize,
        k: usize,
        seed: u64,
        s: Option<usize>,
        subspaces: Option<Vec<Vec<u32>>>,
        transform: Option<&str>,
    ) -> PyResult<Self> {
        crate::errors::guard("Quantizer.new", || {
            let transform = Transform::parse(transform).py_err()?;
            let mut q = match (kind, subspaces) {
                (_, Some(sub)) => Quantizer::with_subspaces(d, k, sub, seed),
                ("pq", None) => Quantizer::pq(d, m, k, seed),
                ("rspq", None) => Quantizer::rspq(d, m, s, k, seed),
                (other, None) => {
                    return Err(input_err(format!("unknown quantizer kind {other:?}")))
                }
            }
            .py_err()?;
            q.set_transform(transform).py_err()?;
            Ok(Self { q })
        })
    }

    #[pyo3(signature = (x, max_iter, max_points_per_centroid, progress=None))]
    fn fit(
        &mut self,
        py: Python<'_>,
        x: PyReadonlyArray2<'_, f32>,
        max_iter: usize,
        max_points_per_centroid: usize,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        crate::errors::guard("Quantizer.fit", || {
            let (data, n) = self.vectors(&x)?;
            self.q.set_max_iter(max_iter);
            self.q
                .set_max_points_per_centroid(max_points_per_centroid)
                .py_err()?;
            let q = &mut self.q;
            let m = q.m();
            crate::pool::detach_cancel(py, |cancel| {
                let cb = |done: usize| -> bool {
                    if cancel.requested() {
                        return false;
                    }
                    if let Some(cb) = &progress {
                        Python::attach(|py| {
                            let _ = cb.call1(py, (done, m));
                        });
                    }
                    !cancel.requested()
                };
                q.fit_with_progress(data, n, &cb)
            })
            .py_err()
        })
    }

    /// Codes as uint8 (k <= 256) or uint16, shape n × m.
    fn encode(&self, py: Python<'_>, x: PyReadonlyArray2<'_, f32>) -> PyResult<Py<PyAny>> {
        crate::errors::guard("Quantizer.encode", || {
            let (data, n) = self.vectors(&x)?;
            let (q, m) = (&self.q, self.q.m());
            if q.k() <= 256 {
                let mut out = vec![0u8; n * m];
                crate::pool::detach(py, || q.encode_u8(data, n, &mut out)).py_err()?;
                Ok(array2(py, n, m, out)?.into_any().unbind())
            } else {
                let mut out = vec![0u16; n * m];
                crate::pool::detach(py, || q.encode_u16(data, n, &mut out)).py_err()?;
                Ok(array2(py, n, m, out)?.into_any().unbind())
            }
        })
    }

    fn decode<'py>(
        &self,
        py: Python<'py>,
        codes: PyReadonlyArray2<'py, u16>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        crate::errors::guard("Quantizer.decode", || {
            let (c, n) = self.codes(&codes)?;
            let q = &self.q;
            let out = crate::pool::detach(py, || q.decode(c, n)).py_err()?;
            array2(py, n, q.d(), out)
        })
    }

    fn tokens<'py>(
        &self,
        py: Python<'py>,
        codes: PyReadonlyArray2<'py, u16>,
    ) -> PyResult<Bound<'py, PyArray2<u32>>> {
        crate::errors::guard("Quantizer.tokens", || {
            let (c, n) = self.codes(&codes)?;
            let q = &self.q;
            let out = crate::pool::detach(py, || q.token_ids(c)).py_err()?;
            array2(py, n, q.m(), out)
        })
    }

    fn quantization_error(&self, py: Python<'_>, x: PyReadonlyArray2<'_, f32>) -> PyResult<f64> {
        crate::errors::guard("Quantizer.quantization_error", || {
            let (data, n) = self.vectors(&x)?;
            let q = &self.q;
            crate::pool::detach(py, || q.quantization_error(data, n)).py_err()
        })
    }

    /// Centroids of sub-quantizer j: a k × s_j array.
    fn centroids<'py>(&self, py: Python<'py>, j: usize) -> PyResult<Bound<'py, PyArray2<f32>>> {
        crate::errors::guard("Quantizer.centroids", || {
            if j >= self.q.m() {
                return Err(input_err(format!(
                    "sub-quantizer {j} out of range (m = {})",
                    self.q.m()
                )));
            }
            let c = self.q.sub_centroids(j).to_vec();
            let s = self.q.subspaces()[j].len();
            let a = numpy::ndarray::Array2::from_shape_vec((self.q.k(), s), c)
                .map_err(|e| input_err(e.to_string()))?;
            Ok(a.into_pyarray(py))
        })
    }

    #[getter]
    fn params_json(&self) -> String {
        serde_json::to_string(self.q.params()).unwrap_or_default()
    }
    #[getter]
    fn is_fitted(&self) -> bool {
        self.q.is_fitted()
    }
    #[getter]
    fn subspaces(&self) -> Vec<Vec<u32>> {
        self.q.subspaces().to_vec()
    }

    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        crate::errors::guard("Quantizer.to_bytes", || {
            Ok(PyBytes::new(py, &quantizer_to_bytes(&self.q).py_err()?))
        })
    }

    fn save(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<()> {
        crate::errors::guard("Quantizer.save", || {
            let q = &self.q;
            crate::pool::detach(py, || {
                mmq_core::io::write_atomic(&path, &quantizer_to_bytes(q)?)
            })
            .py_err()
        })
    }

    #[staticmethod]
    fn load(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Self> {
        crate::errors::guard("Quantizer.load", || {
            let q = crate::pool::detach(py, || {
                quantizer_from_bytes(&mmq_core::io::read(&path)?, &path.display().to_string())
            })
            .py_err()?;
            Ok(Self { q })
        })
    }

    #[staticmethod]
    #[pyo3(signature = (data, source="<bytes>"))]
    fn from_bytes(py: Python<'_>, data: &[u8], source: &str) -> PyResult<Self> {
        crate::errors::guard("Quantizer.from_bytes", || {
            Ok(Self {
                q: crate::pool::detach(py, || quantizer_from_bytes(data, source)).py_err()?,
            })
        })
    }
}

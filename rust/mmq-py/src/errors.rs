//! Map core errors to the Python exception hierarchy defined in `mmq/errors.py`.
use mmq_core::MmqError;
use pyo3::prelude::*;

fn raise(name: &str, msg: String) -> PyErr {
    Python::attach(|py| {
        let cls = py.import("mmq.errors").and_then(|m| m.getattr(name));
        match cls {
            Ok(cls) => match cls.call1((msg.clone(),)) {
                Ok(inst) => PyErr::from_value(inst),
                Err(e) => e,
            },
            Err(_) => pyo3::exceptions::PyRuntimeError::new_err(msg),
        }
    })
}

pub fn to_py(e: MmqError) -> PyErr {
    let msg = e.to_string();
    match e {
        MmqError::InvalidParameter(_) => raise("InvalidParameterError", msg),
        MmqError::InvalidInput(_) => raise("InvalidInputError", msg),
        MmqError::InvalidModelFile { .. } => raise("ModelFileError", msg),
        MmqError::NotFitted(_) => raise("NotFittedError", msg),
        MmqError::Interrupted => {
            pyo3::exceptions::PyKeyboardInterrupt::new_err("training interrupted")
        }
        MmqError::Io { .. } => raise("MmqIOError", msg),
        _ => raise("MmqError", msg),
    }
}

pub trait IntoPy<T> {
    fn py_err(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for mmq_core::Result<T> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}

/// What [`crate::pool::detach`] returns for core work that can fail.
impl<T> IntoPy<T> for PyResult<mmq_core::Result<T>> {
    fn py_err(self) -> PyResult<T> {
        self?.map_err(to_py)
    }
}

/// A panic caught at the binding boundary (a bug): an `mmq.MmqError`, never a
/// `PanicException` (which is not an `Exception`).
pub fn internal(msg: String) -> PyErr {
    raise(
        "MmqError",
        format!("internal error (a bug in mmq, please report it): {msg}"),
    )
}

pub fn input_err(msg: impl Into<String>) -> PyErr {
    raise("InvalidInputError", msg.into())
}

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

/// The name of the `mmq.errors` class of a core error (also the code of an error of the
/// Polars expressions, see plugin.rs).
pub fn class_name(e: &MmqError) -> &'static str {
    match e {
        MmqError::InvalidParameter(_) => "InvalidParameterError",
        MmqError::InvalidInput(_) => "InvalidInputError",
        MmqError::InvalidModelFile { .. } => "ModelFileError",
        MmqError::NotFitted(_) => "NotFittedError",
        MmqError::Io { .. } => "MmqIOError",
        _ => "MmqError",
    }
}

pub fn to_py(e: MmqError) -> PyErr {
    match e {
        MmqError::Interrupted => {
            pyo3::exceptions::PyKeyboardInterrupt::new_err("training interrupted")
        }
        e => raise(class_name(&e), e.to_string()),
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

/// The message of a caught panic.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// The body of a binding entry that hands user data to the core: a panic (a bug, the
/// last resort after the core's own checks) becomes an `mmq.MmqError` naming the call,
/// never pyo3's `PanicException` (a `BaseException`, which `except Exception` misses).
/// Work run through [`crate::pool::detach`] is covered there too.
pub fn guard<T>(call: &str, f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|p| Err(internal(format!("{call}: {}", panic_message(p.as_ref())))))
}

/// A test hook (`mmq._mmq._panic_for_test`): a panic inside [`guard`], to prove that it
/// reaches Python as an `mmq.MmqError`. No entry of mmq panics on purpose.
#[pyfunction]
pub fn _panic_for_test(message: &str) -> PyResult<()> {
    guard("_panic_for_test", || panic!("{message}"))
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

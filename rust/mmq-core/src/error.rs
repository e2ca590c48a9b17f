//! The one error type of the core crate.
use thiserror::Error;

/// Every fallible operation of `mmq-core` returns this error.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MmqError {
    /// A hyperparameter or argument is out of its allowed range.
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// Input data has the wrong shape, type or content.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A model or quantizer file is unreadable, corrupt or not an mmq file.
    #[error("invalid model file {path}: {reason}")]
    InvalidModelFile { path: String, reason: String },
    /// The operation needs a fitted model.
    #[error("not fitted: {0}")]
    NotFitted(String),
    /// Work stopped because the caller asked (Ctrl-C).
    #[error("interrupted")]
    Interrupted,
    /// An operating-system I/O error.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, MmqError>;

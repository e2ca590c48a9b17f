//! mmq-core: the pure-Rust core of mmq.
//!
//! - [`text`]: fastText-compatible hashing and tokenization.
//! - [`quant`]: k-means, PQ and RSPQ quantizers.
//! - [`model`]: the shallow classifier (losses, prediction, persistence).
//! - [`train`]: the Hogwild trainer.
//! - [`eval`]: precision/recall at k and per-label scores.
//! - [`io`]: self-describing files (safetensors + JSON header).
pub mod error;
pub mod eval;
pub mod io;
pub mod model;
pub mod quant;
pub mod text;
pub mod train;

pub use error::{MmqError, Result};

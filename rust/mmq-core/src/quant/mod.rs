//! Discretization of dense vectors: k-means, product quantization (PQ) and
//! random-subspace PQ (RSPQ).
//!
//! - [`kmeans`](kmeans::kmeans): seeded k-means++ / Lloyd with a blocked GEMM
//!   assignment step.
//! - [`Quantizer`]: PQ and RSPQ with fit, encode (u8/u16 codes), decode,
//!   token ids and serializable parameters.
//!
//! Every operation runs in parallel with rayon (in the current pool) and gives
//! the same result whatever the number of threads.
mod kernels;
pub mod kmeans;
pub mod pq;

pub use kmeans::{kmeans, KMeansConfig, KMeansResult};
pub use pq::{Quantizer, QuantizerKind, QuantizerParams, Transform, MAX_K};

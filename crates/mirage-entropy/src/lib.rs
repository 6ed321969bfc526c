//! Entropy coding for Mirage: a byte-oriented rANS coder driven by integer
//! CDF tables, and the fixed family of quantized Gaussian tables used for the
//! latents.
//!
//! Everything at the coding boundary is an integer (symbols, table entries,
//! table indexes). The encoder and decoder of a learned codec run the
//! networks on different machines, and any difference in a probability would
//! desynchronise the arithmetic coder; keeping floats out of the coder means
//! the only float computations that matter are the ones that build tables,
//! and those are made deterministic in [`gaussian`].
//!
//! The stream layout is described in the `rans` module and in
//! `docs/format.md`.

mod cdf;
pub mod gaussian;
mod normal;
mod rans;

pub use cdf::CdfTable;
pub use rans::{decode, encode, StreamDecoder};

use thiserror::Error;

/// Bits of probability precision: the frequencies of a table sum to
/// `1 << PRECISION`.
pub const PRECISION: u32 = 16;

/// Why a table could not be built or a stream could not be coded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EntropyError {
    #[error("invalid CDF table: {0}")]
    InvalidTable(&'static str),
    #[error("{symbols} symbols but {indexes} table indexes")]
    LengthMismatch { symbols: usize, indexes: usize },
    #[error("table index {index} at position {position} is out of range ({tables} tables)")]
    IndexOutOfRange {
        position: usize,
        index: usize,
        tables: usize,
    },
    #[error("entropy-coded stream is truncated")]
    Truncated,
    #[error("entropy-coded stream is corrupt (bad initial state)")]
    BadInitialState,
    #[error("entropy-coded stream is corrupt (bad escape code)")]
    BadEscape,
    #[error("entropy-coded stream is corrupt ({0} unread bytes at the end)")]
    TrailingBytes(usize),
    #[error("entropy-coded stream is corrupt (final state mismatch)")]
    FinalStateMismatch,
}

//! Mirage's error type, split by who is at fault: the input file, the model, the
//! caller's parameters, or the system. Every message reads as one line after `mirage: `.

use mirage_entropy::EntropyError;
use mirage_format::FormatError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MirageError {
    /// The `.mrg` container is malformed (truncated, corrupted, foreign, ...).
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The container is intact but an entropy-coded section does not decode.
    // The cause is the error's source, which `{:#}` (the CLI) prints after a colon.
    #[error("corrupt compressed data")]
    Entropy(#[from] EntropyError),
    #[error("the file was made with model {file}, but the loaded model is {loaded}; decode it with the model that made it{hint}")]
    WrongModel {
        file: String,
        loaded: String,
        /// Where that model is, when it is one of the bundled ones (else empty).
        hint: String,
    },
    #[error("the file asks for decoder {0}, which this version of Mirage does not have")]
    UnsupportedDecoder(u8),
    #[error("the file has {0} sections where this decoder expects 2 (or 3 with a realism map)")]
    BadSections(usize),
    #[error("image is {width}x{height}; Mirage handles at most {max_pixels} pixels and {max_side} pixels a side")]
    ImageTooLarge {
        width: u32,
        height: u32,
        max_pixels: u64,
        max_side: u32,
    },
    #[error("image has zero width or height")]
    EmptyImage,
    #[error("cannot read image {path}: {reason}")]
    UnreadableImage { path: PathBuf, reason: String },
    #[error("cannot write {path}: {reason}")]
    Unwritable { path: PathBuf, reason: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model file {path}: {reason}")]
    InvalidModel { path: PathBuf, reason: String },
    #[error("{0}")]
    BadParameter(String),
    #[error("cannot reach {target}: the smallest file at this size is {smallest} bytes ({smallest_bpp:.4} bpp)")]
    TargetUnreachable {
        target: String,
        smallest: usize,
        smallest_bpp: f64,
    },
    #[error("neural network failure: {0}")]
    Torch(#[from] tch::TchError),
}

pub type Result<T, E = MirageError> = std::result::Result<T, E>;

impl From<mirage_prior::latent::LatentError> for MirageError {
    fn from(e: mirage_prior::latent::LatentError) -> Self {
        match e {
            mirage_prior::latent::LatentError::Shape(e) => e.into(),
            mirage_prior::latent::LatentError::Entropy(e) => e.into(),
        }
    }
}

impl From<mirage_prior::ShapeError> for MirageError {
    fn from(e: mirage_prior::ShapeError) -> Self {
        MirageError::BadParameter(e.to_string())
    }
}

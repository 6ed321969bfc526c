//! Mirage: a learned image codec whose decoder's hallucination is explicit and
//! controllable. This crate holds the networks (tch), training, the codec pipeline and
//! the command-line front end; the bitstream container (`mirage-format`), the entropy
//! coder (`mirage-entropy`) and the deterministic entropy parameters (`mirage-prior`)
//! are separate crates that build without libtorch.
//!
//! ```no_run
//! use mirage::{Codec, RateTarget};
//! let codec = Codec::load_default()?;
//! let img = mirage::image_io::read_image("photo.png".as_ref())?.image;
//! let (bytes, report) = codec.compress(&img, RateTarget::Bpp(0.25))?;
//! let (decoded, _) = codec.decompress(&bytes)?;
//! # Ok::<(), mirage::MirageError>(())
//! ```

pub mod bench;
pub mod codec;
pub mod comparison;
pub mod conha;
pub mod effort;
pub mod entropy_model;
pub mod error;
pub mod evaluation;
pub mod image_io;
pub mod model;
pub mod model_file;
pub mod progress;
pub mod realism_measure;
pub mod refinement;
pub mod study_pool;
pub mod train;

pub use codec::{Codec, EncodeReport, RateTarget, Timings};
pub use error::MirageError;
/// Quality metrics (PSNR, MS-SSIM, SSIMULACRA2, butteraugli), shared with the evaluation suite.
pub use mirage_eval::metrics;

//! Mirage: a learned image codec whose decoder's hallucination is explicit and
//! controllable. This crate answers "how does an image become a `.mrg` file and back?":
//! `compress`/`decompress`, rate control (`RateTarget`, the rate search, encoder
//! effort), the tiled decoders (MSE, realism generator, flow refiner), ConHa's realism
//! map, image I/O and the public API.
//!
//! It may depend on `mirage-nn` (networks and model files), `mirage-format`,
//! `mirage-entropy`, `mirage-prior` and `mirage-eval`'s metrics; never on training, the
//! realism measure or the CLI (`mirage-train`, `mirage-realism-measure`, `mirage-cli`).
//!
//! ```no_run
//! use mirage::{Codec, RateTarget};
//! let codec = Codec::load_default()?;
//! let img = mirage::image_io::read_image("photo.png".as_ref())?.image;
//! let (bytes, report) = codec.compress(&img, RateTarget::Bpp(0.25))?;
//! let (decoded, _) = codec.decompress(&bytes)?;
//! # Ok::<(), mirage::MirageError>(())
//! ```

pub mod codec;
pub mod conha;
pub mod effort;
pub mod entropy_model;
pub mod image_io;
pub mod layout;
pub mod progress;
pub mod refinement;

pub use codec::{Codec, EncodeReport, RateTarget, Timings};
/// Quality metrics (PSNR, MS-SSIM, SSIMULACRA2, butteraugli), shared with the evaluation suite.
pub use mirage_eval::metrics;
/// The error type, shared by every crate from `mirage-nn` up.
pub use mirage_nn::error::{self, MirageError};
use mirage_nn::{model, model_file};

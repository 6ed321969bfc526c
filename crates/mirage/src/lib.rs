//! Mirage: a learned image codec whose decoder's hallucination is explicit and
//! controllable. This crate answers "how does an image become a `.mrg` file and back?":
//! `compress`/`decompress`, rate control (`RateTarget`, the rate search, encoder
//! effort), the tiled synthesis, the decoders a file can be decoded by (`decoders`:
//! MSE, realism generator, flow refiner), ConHa's realism map, image I/O and the
//! public API.
//!
//! Inside, dependencies point one way: `codec` (compress, decompress with the core's
//! synthesis) knows no add-on; `conha` (the encoder's predictor) and `decoders` (the
//! other decoders) build on it.
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
//! // Another decoder, chosen for this decode: the realism generator at w = 1.
//! let add_ons = mirage::AddOns::bundled(&codec)?;
//! let decoder = mirage::Decoder::Realism(add_ons.realism()?, mirage::Realism::Weight(1.0));
//! let (realistic, _) = decoder.decompress(&codec, &bytes)?;
//! # Ok::<(), mirage::MirageError>(())
//! ```

pub mod caption;
pub mod codec;
pub mod conha;
pub mod decoders;
pub mod effort;
pub mod entropy_model;
pub mod image_io;
pub mod layout;
pub mod noise;
pub mod progress;
pub mod refinement;
pub mod ultralow;

pub use codec::{Codec, EncodeReport, RateTarget, Timings};
pub use decoders::{AddOns, Decoder, Realism};
/// Quality metrics (PSNR, MS-SSIM, SSIMULACRA2, butteraugli), shared with the evaluation suite.
pub use mirage_eval::metrics;
/// The error type, shared by every crate from `mirage-nn` up.
pub use mirage_nn::error::{self, MirageError};
use mirage_nn::{model, model_file};

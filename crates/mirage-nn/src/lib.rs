//! The networks and their files: "what are Mirage's networks, and how are their weights
//! stored?" The tch layers and architectures (`model/`: the hyperprior, the context
//! model, the realism generator and discriminator, the flow refiner, the ConHa
//! predictor), the safetensors model files with their ids and base-model checks
//! (`model_file`), and the error type every crate above shares (`error`).
//!
//! It may depend on libtorch (tch), `mirage-format`, `mirage-entropy` and `mirage-prior`; never on the
//! codec, training, the realism measure or the CLI.

pub mod error;
pub mod model;
pub mod model_file;

pub use error::MirageError;

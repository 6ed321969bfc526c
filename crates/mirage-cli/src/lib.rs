//! The `mirage` command line's library half: "how is Mirage measured and shown?" The
//! Kodak benchmarks (`bench`: the rate–distortion, decoder and predictor tables), the
//! side-by-side crops (`comparison`), Mirage in the evaluation suite (`evaluation`) and
//! the study-pool writer (`study_pool`). The binary (`src/main.rs` and `src/commands/`)
//! parses the flags and calls these and the lower crates.
//!
//! It may depend on every other crate of the workspace; nothing depends on it.

pub mod bench;
pub mod comparison;
pub mod evaluation;
pub mod study_pool;
pub mod ultralow_bench;

use mirage::{codec, conha, error, image_io, metrics, progress};
use mirage_nn::model_file;
use mirage_realism_measure as realism_measure;

//! Mirage's evaluation suite (issue 3): Mirage and the classic codecs compared at matched
//! file sizes, with metrics, BD-rates, plots and a side-by-side report.
//!
//! This crate does not depend on libtorch: Mirage plugs in from `mirage-cli`
//! (`evaluation.rs`) by implementing [`CodecUnderTest`]. Modules, one concept each:
//! - [`codecs`]: the [`CodecUnderTest`] trait and the classic codecs run through their Debian
//!   command-line tools;
//! - [`rate_match`]: bisection of a codec's setting to a target bpp, with typed unreachable
//!   results;
//! - [`metrics`]: PSNR, MS-SSIM, SSIMULACRA2, butteraugli;
//! - [`grid_marks`]: texture locked to a network's sampling grid (the realism decoder's
//!   periodic marks);
//! - [`block_edges`]: steps along the edges of the latent's 16 × 16 blocks (the core's
//!   faint lines at low rates);
//! - [`excess_detail`]: fine texture added where the original has none (the realism
//!   decoder's hatching of flat areas);
//! - [`bd_rate`]: Bjøntegaard delta rate with PCHIP interpolation;
//! - [`report`]: CSV, Markdown, SVG plot, HTML with crops;
//! - [`set_measure`]: measures of a whole set of decodes (Mirage's MFD/MKD plug in here);
//! - [`suite`]: the loop over images × codecs × targets, and runs at fixed settings.
//!
//! ```no_run
//! use mirage_eval::{suite, ClassicCodec, CodecUnderTest};
//! # fn main() -> anyhow::Result<()> {
//! let codecs = ClassicCodec::all();
//! let codecs: Vec<&dyn CodecUnderTest> = codecs.iter().map(|c| c as _).collect();
//! let images = suite::image_paths("../shared/data/kodak".as_ref())?;
//! let report = suite::run(&codecs, &images, &[], &suite::EvalOptions::default())?;
//! report.write_all("eval-out".as_ref())?;
//! # Ok(())
//! # }
//! ```

pub mod bd_rate;
pub mod block_edges;
pub mod codecs;
pub mod excess_detail;
pub mod grid_marks;
pub mod metrics;
pub mod rate_match;
pub mod report;
pub mod set_measure;
pub mod suite;
#[cfg(test)]
mod test_images;

pub use bd_rate::{bd_rate, bd_rate_checked, BdRateError, RatePoint};
pub use codecs::{
    load_image, CallStats, ClassicCodec, ClassicKind, CodecUnderTest, LastCallStats, MoreBits,
    SettingRange, Tool, ToolError,
};
pub use rate_match::{encode_at_bpp, Encoding, Matched, RateMatcher, Reach};
pub use report::{
    BdRateSummary, Crop, CropRegion, FixedReport, MeanPoint, Metric, Report, Row, SetMeasureInfo,
    SetRow, StageSeconds,
};
pub use set_measure::{FeatureRows, SetMeasure};
pub use suite::{EvalOptions, DEFAULT_TARGETS_BPP};

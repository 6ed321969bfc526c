//! The command line's global flags, the top-level command groups, and the flag types
//! several groups share (rate targets, realism weights). Each group's own flags live
//! in its module under `commands/`.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use mirage::codec::RateTarget;
use mirage::decoders::Realism;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "mirage", version, about = "Mirage: a learned image codec")]
pub(crate) struct Cli {
    /// Worker threads for the networks (default: all cores). Output does not depend on it.
    #[arg(long, global = true, value_parser = clap::value_parser!(i32).range(1..=1024))]
    pub(crate) threads: Option<i32>,
    /// Model file (default: the bundled models/hyperprior.safetensors, or $MIRAGE_MODEL).
    #[arg(long, global = true)]
    pub(crate) model: Option<PathBuf>,
    /// Realism generator file (default: the bundled one made for the loaded core,
    /// models/realism.safetensors, or an earlier one in models/v2.3/ or models/v1/; or
    /// $MIRAGE_REALISM_MODEL).
    #[arg(long, global = true)]
    pub(crate) realism_model: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Args)]
pub(crate) struct Rate {
    /// Quality 0–100 (continuous rate setting). Default 50.
    #[arg(long, conflicts_with_all = ["bpp", "target_size"], value_parser = parse_quality)]
    pub(crate) quality: Option<f64>,
    /// Target bits per pixel: the largest file at or under it.
    #[arg(long, conflicts_with = "target_size", value_parser = parse_bpp)]
    pub(crate) bpp: Option<f64>,
    /// Target file size in bytes: the largest file at or under it.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) target_size: Option<u64>,
    /// Encoder effort 0–3: higher refines the latent for this image (slower encode,
    /// smaller file for the same quality; the decoder is unchanged). 0 is the fast
    /// encoder.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=3))]
    pub(crate) effort: u8,
}

impl Rate {
    pub(crate) fn target(&self) -> RateTarget {
        match (self.quality, self.bpp, self.target_size) {
            (_, Some(b), _) => RateTarget::Bpp(b),
            (_, _, Some(n)) => RateTarget::Bytes(usize::try_from(n).unwrap_or(usize::MAX)),
            (q, _, _) => RateTarget::Quality(q.unwrap_or(50.0)),
        }
    }
}

/// `--quality`: a number from 0 to 100. Checked here so that a typo fails before the
/// models load.
fn parse_quality(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(q) if (0.0..=100.0).contains(&q) => Ok(q),
        _ => Err(format!("expected a number from 0 to 100, not `{s}`")),
    }
}

/// `--bpp`: a positive, finite number of bits per pixel.
fn parse_bpp(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(b) if b.is_finite() && b > 0.0 => Ok(b),
        _ => Err(format!(
            "expected a positive number of bits per pixel, not `{s}`"
        )),
    }
}

/// `--realism auto` or a weight in [0, 1].
pub(crate) fn parse_realism(s: &str) -> Result<Realism, String> {
    if s == "auto" {
        return Ok(Realism::Auto);
    }
    match s.parse::<f32>() {
        Ok(w) if (0.0..=1.0).contains(&w) => Ok(Realism::Weight(w)),
        _ => Err(format!(
            "expected `auto` or a number from 0 to 1, not `{s}`"
        )),
    }
}

/// `--realism` at the encoder: what the file tells `decode --realism auto` to do.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RealismSetting {
    /// `auto`: the realism predictor's per-region map (ConHa), stored in the file.
    Map,
    /// `fixed`: the one weight the predictor's file names (ConHa-fixed, ⅓ for the
    /// bundled predictor, chosen on votes), stored as the file's suggestion.
    Fixed,
    /// A weight in [0, 1], stored as the file's suggestion.
    Weight(f32),
}

/// `--realism auto`, `fixed` or a weight in [0, 1], at the encoder.
pub(crate) fn parse_realism_setting(s: &str) -> Result<RealismSetting, String> {
    match s {
        "auto" => Ok(RealismSetting::Map),
        "fixed" => Ok(RealismSetting::Fixed),
        _ => match parse_realism(s) {
            Ok(Realism::Weight(w)) => Ok(RealismSetting::Weight(w)),
            _ => Err(format!(
                "expected `auto`, `fixed` or a number from 0 to 1, not `{s}`"
            )),
        },
    }
}

/// One `--fixed` item: `codec:setting`, e.g. `avif:56` or `jxl:15`.
pub(crate) fn parse_fixed(s: &str) -> Result<(String, f64), String> {
    let (codec, setting) = s
        .split_once(':')
        .ok_or_else(|| format!("expected `codec:setting` (e.g. `avif:56`), not `{s}`"))?;
    let setting: f64 = setting
        .parse()
        .map_err(|_| format!("`{setting}` in `{s}` is not a number"))?;
    Ok((codec.trim().to_string(), setting))
}

/// `mirage-wW` in `eval --codecs`: Mirage decoded by the realism decoder at weight W.
/// `Ok(None)` for any other name.
pub(crate) fn realism_variant(name: &str) -> Result<Option<f32>> {
    let Some(w) = name.strip_prefix("mirage-w") else {
        return Ok(None);
    };
    let w: f32 = w
        .parse()
        .ok()
        .filter(|w| (0.0..=1.0).contains(w))
        .with_context(|| format!("{name}: the realism weight after `mirage-w` must be in 0..1"))?;
    Ok(Some(w))
}

/// `--rate-tolerance`: a percentage in 0..50.
pub(crate) fn parse_tolerance_percent(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=50.0).contains(&p) => Ok(p),
        _ => Err(format!("expected a percentage from 0 to 50, not `{s}`")),
    }
}

/// `encode --mode`: the coding mode of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// The core's transform coding (0.05 bpp and up).
    Core,
    /// The ultra-low mode (PerCo): a grid of codebook indices and an optional
    /// caption, 0.003–0.03 bpp, decoded generatively.
    Ultralow,
}

/// The ultra-low mode's flags, shared by `encode` and `roundtrip`.
#[derive(Args)]
pub(crate) struct ModeArgs {
    #[arg(long, value_enum, default_value = "core")]
    pub(crate) mode: Mode,
    /// Ultra-low mode: the caption to store (default: the image's own description
    /// from its EXIF ImageDescription or XMP dc:description, if any).
    #[arg(long)]
    pub(crate) caption: Option<String>,
    /// Ultra-low mode: store no caption, even if the image has a description.
    #[arg(long, conflicts_with = "caption")]
    pub(crate) no_caption: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum DecoderChoice {
    Default,
    Flow,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Precision {
    /// bf16 where the CPU has AVX-512 BF16, else f32 (bf16 is ~10× slower without it).
    Auto,
    F32,
    Bf16,
}

/// How the core's training crops are drawn (`mirage_train::data::CropSampling`).
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum CropChoice {
    /// Every photo equally often, at its own scale.
    PerPhoto,
    /// Photos in proportion to their area, at a random scale down to --min-scale.
    ByArea,
}

/// What the core's training scores the rate on (`mirage_nn::model::RateProxy`).
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum RateProxyChoice {
    /// The latents plus uniform noise (the standard choice).
    Noise,
    /// The rounded latents, straight-through ("soft then hard": to finish a run).
    Rounded,
}

/// How the core's training draws each crop's rate (`mirage_train::RateSampling`).
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum RateSamplingChoice {
    /// r ~ U[0, 7]: the lowest and highest levels get half an inner level's share.
    Uniform,
    /// Every level gets the same share.
    EvenLevels,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    #[command(flatten)]
    Codec(crate::commands::codec::CodecCommand),
    /// Train (or resume training) one of Mirage's networks on ../shared/data/train.
    Train {
        #[command(subcommand)]
        model: crate::commands::train::TrainCommand,
    },
    /// Write a shipped model file from a training run.
    Export {
        #[command(subcommand)]
        model: crate::commands::export::ExportCommand,
    },
    /// Benchmarks (default images: Kodak): the core's rate–distortion and speed, the
    /// decoders, their crops, the realism predictor.
    Bench {
        #[command(subcommand)]
        what: crate::commands::bench::BenchCommand,
    },
    /// Mirage against the classic codecs (JPEG, WebP, AVIF, JPEG XL, HEIC) at matched
    /// bpp: CSV, Markdown, BD-rates, an RD plot and an HTML page of crops.
    Eval(crate::commands::eval::EvalArgs),
    /// The preference study: the web app (2AFC pairs, votes, Elo; see docs/study.md)
    /// and the pools of decodes it serves.
    Study {
        #[command(subcommand)]
        command: crate::commands::study::StudyGroup,
    },
    /// The realism measure (MFD/MKD): measure two folders, validate it on Kodak.
    Realism {
        #[command(subcommand)]
        command: crate::commands::realism::RealismCommand,
    },
}

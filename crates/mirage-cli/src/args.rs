//! The command line's flags: every subcommand and its options (clap derive).

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use mirage::codec::{RateTarget, Realism};
use mirage_cli::comparison::Column;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "mirage", version, about = "Mirage: a learned image codec")]
pub(crate) struct Cli {
    /// Worker threads for the networks (default: all cores). Output does not depend on it.
    #[arg(long, global = true)]
    pub(crate) threads: Option<i32>,
    /// Model file (default: the bundled models/hyperprior.safetensors, or $MIRAGE_MODEL).
    #[arg(long, global = true)]
    pub(crate) model: Option<PathBuf>,
    /// Realism generator file (default: the bundled models/v1/realism.safetensors, or
    /// $MIRAGE_REALISM_MODEL).
    #[arg(long, global = true)]
    pub(crate) realism_model: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Args)]
pub(crate) struct Rate {
    /// Quality 0–100 (continuous rate setting). Default 50.
    #[arg(long, conflicts_with_all = ["bpp", "target_size"])]
    pub(crate) quality: Option<f64>,
    /// Target bits per pixel: the largest file at or under it.
    #[arg(long, conflicts_with = "target_size")]
    pub(crate) bpp: Option<f64>,
    /// Target file size in bytes: the largest file at or under it.
    #[arg(long)]
    pub(crate) target_size: Option<usize>,
    /// Encoder effort 0–3: higher refines the latent for this image (slower encode,
    /// smaller file for the same quality; the decoder is unchanged). 0 is the fast
    /// encoder.
    #[arg(long, default_value_t = 0)]
    pub(crate) effort: u8,
}

impl Rate {
    pub(crate) fn target(&self) -> RateTarget {
        match (self.quality, self.bpp, self.target_size) {
            (_, Some(b), _) => RateTarget::Bpp(b),
            (_, _, Some(n)) => RateTarget::Bytes(n),
            (q, _, _) => RateTarget::Quality(q.unwrap_or(50.0)),
        }
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

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum DecoderChoice {
    Default,
    Flow,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Precision {
    F32,
    Bf16,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Compress an image (or every image in a folder) to .mrg.
    Encode {
        input: PathBuf,
        output: PathBuf,
        #[command(flatten)]
        rate: Rate,
        /// What `decode --realism auto` will use: a weight (0–1) stored in the header,
        /// or `auto`, the realism predictor's per-region map (ConHa; a size target
        /// keeps room for the map's bytes).
        #[arg(long, value_parser = parse_realism)]
        realism: Option<Realism>,
        /// Replace existing output files.
        #[arg(long)]
        force: bool,
    },
    /// Decompress a .mrg file (or a folder of them); the output format follows the
    /// extension (PNG for folders).
    Decode {
        input: PathBuf,
        output: PathBuf,
        /// Hallucination weight: 0 is the faithful (MSE) decode, 1 full realism;
        /// `auto` uses the file's suggestion, or 0 if it has none.
        #[arg(long, default_value = "auto", value_parser = parse_realism)]
        realism: Realism,
        /// `default`: the synthesis (MSE at w = 0, realism generator above); `flow`:
        /// the MSE decode refined by the rectified flow.
        #[arg(long, value_enum, default_value = "default")]
        decoder: DecoderChoice,
        /// Euler steps of the flow decoder (1–16).
        #[arg(long, default_value_t = 4)]
        steps: usize,
        /// Seed of the flow decoder's noise (same seed, same pixels).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Scale of the flow decoder's source noise, 0–1: lower invents less detail.
        #[arg(long, default_value_t = mirage::codec::DEFAULT_FLOW_TEMPERATURE)]
        temperature: f32,
        #[arg(long)]
        force: bool,
    },
    /// Show a .mrg file's header and the bytes in each section.
    Info {
        file: PathBuf,
        /// Also decode the file's symbols and print digests of them and of the chosen
        /// Gaussian tables: what the bitstream means, which must be the same on every
        /// machine, thread count and instruction set.
        #[arg(long)]
        symbols: bool,
    },
    /// Compress and decompress one image into a folder, and report size and quality.
    Roundtrip {
        input: PathBuf,
        out_dir: PathBuf,
        #[command(flatten)]
        rate: Rate,
        /// Hallucination weight of the decode (0–1), or `auto`: the realism predictor's
        /// per-region map (ConHa), written by the encoder and followed by the decoder.
        #[arg(long, default_value = "auto", value_parser = parse_realism)]
        realism: Realism,
    },
    /// Rate–distortion and speed benchmark on a folder of PNGs (default: Kodak).
    Bench {
        #[arg(long, default_value = "../shared/data/kodak")]
        images: PathBuf,
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "0,14.3,28.6,42.9,57.1,71.4,85.7,100"
        )]
        qualities: Vec<f64>,
        /// Encoder effort levels to run; with more than one, a BD-rate table against the
        /// first.
        #[arg(long, value_delimiter = ',', default_value = "0")]
        efforts: Vec<u8>,
        #[arg(long, default_value = "bench-results")]
        out_dir: PathBuf,
    },
    /// Mirage against the classic codecs (JPEG, WebP, AVIF, JPEG XL, HEIC) at matched
    /// bpp: CSV, Markdown, BD-rates, an RD plot and an HTML page of crops.
    Eval {
        #[arg(long, default_value = "../shared/data/kodak")]
        images: PathBuf,
        /// Codecs to run (mirage, jpeg, webp, avif, jxl, jxl-r8, heic; and mirage-wW: Mirage's
        /// files decoded by the realism decoder at weight W, e.g. mirage-w1).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "mirage,jpeg,webp,avif,jxl,jxl-r8,heic"
        )]
        codecs: Vec<String>,
        /// Target bits per pixel.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "0.03,0.06,0.12,0.25,0.5,1.0"
        )]
        targets: Vec<f64>,
        /// The codec BD-rates are computed against.
        #[arg(long, default_value = "avif")]
        anchor: String,
        /// Accept a file within this many percent below the target rate instead of searching
        /// on for the largest one on the setting grid (0: exact grid answer).
        #[arg(long, default_value_t = 0.5, value_parser = parse_tolerance_percent)]
        rate_tolerance: f64,
        /// Skip butteraugli (about as slow as an encode).
        #[arg(long)]
        no_butteraugli: bool,
        /// Skip the realism measure (MFD/MKD on Mirage's own extractor).
        #[arg(long)]
        no_realism: bool,
        /// Instead of matching targets, run codecs at fixed settings, e.g.
        /// `avif:56,webp:0,jpeg:10,jxl:15,heic:15` (writes fixed.csv and fixed.md).
        #[arg(long, value_delimiter = ',', value_parser = parse_fixed)]
        fixed: Vec<(String, f64)>,
        /// Images evaluated at once (default: one per core). Speeds are per codec process,
        /// but measured while the other workers run; use 1 for speed figures alone.
        #[arg(long)]
        jobs: Option<usize>,
        #[arg(long, default_value = "eval-results")]
        out_dir: PathBuf,
    },
    /// The same bitstreams decoded at several hallucination weights: fidelity, detail,
    /// realism measure and speed (CSV and Markdown).
    BenchDecoders {
        #[arg(long, default_value = "../shared/data/kodak")]
        images: PathBuf,
        #[arg(long, value_delimiter = ',', default_value = "0.1,0.25")]
        bpp: Vec<f64>,
        /// Decoders: realism weights (`0`, `0.5`, `1`) and flow step counts (`flow4`).
        #[arg(long, value_delimiter = ',', default_value = "0,0.5,1", value_parser = Column::parse)]
        decoders: Vec<Column>,
        #[arg(long, default_value = "bench-results")]
        out_dir: PathBuf,
    },
    /// Side-by-side crops of one bitstream per image decoded at several hallucination
    /// weights, on Kodak regions with faces, text, edges and texture.
    Crops {
        #[arg(long, default_value = "../shared/data/kodak")]
        images: PathBuf,
        /// Each image is encoded once, at the largest file not above this bpp.
        #[arg(long, default_value_t = 0.1)]
        bpp: f64,
        /// One column each: realism weights (`0`, `0.5`, `1`) and flow step counts
        /// (`flow4`).
        #[arg(long, value_delimiter = ',', default_value = "0,0.5,1", value_parser = Column::parse)]
        decoders: Vec<Column>,
        /// Enlargement of the crops (nearest neighbour).
        #[arg(long, default_value_t = 2)]
        zoom: u32,
        /// The picture (PNG); a Markdown caption with the figures goes next to it.
        #[arg(long, default_value = "docs/realism-crops.png")]
        out: PathBuf,
        #[arg(long)]
        force: bool,
    },
    /// The realism predictor's time per image and the size of its maps in the files.
    BenchPredictor {
        #[arg(long, default_value = "../shared/data/kodak")]
        images: PathBuf,
        #[arg(long, value_delimiter = ',', default_value = "0.08,0.1,0.2")]
        bpp: Vec<f64>,
    },
    /// Write a preference-study pool: each image encoded once at a target bpp and
    /// decoded by each condition, for `mirage study serve --pool DIR`.
    StudyPool {
        #[arg(long, default_value = "../shared/data/kodak")]
        images: PathBuf,
        #[arg(long, default_value_t = 0.1)]
        bpp: f64,
        /// Conditions: realism weights (`0`, `1`), `auto` (ConHa map), `fixed`
        /// (ConHa-fixed), `flowN`.
        #[arg(long, value_delimiter = ',', default_value = "0,1,auto,fixed", value_parser = Column::parse)]
        conditions: Vec<Column>,
        /// The pool folder (default: study-pools/conha-<bpp>).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        force: bool,
    },
    /// Write the shipped flow refiner from a training checkpoint, tied to the loaded
    /// hyperprior.
    ExportFlow {
        #[arg(long, default_value = "runs/flow/flow.safetensors")]
        checkpoint: PathBuf,
        #[arg(long, default_value_t = 48)]
        channels: i64,
        #[arg(long, default_value = "models/v1/flow.safetensors")]
        out: PathBuf,
    },
    /// Write the shipped realism generator from a training checkpoint, tied to the
    /// loaded hyperprior.
    ExportRealism {
        #[arg(long, default_value = "runs/realism/generator.safetensors")]
        checkpoint: PathBuf,
        #[arg(long, default_value_t = 64)]
        channels: i64,
        #[arg(long, default_value_t = 4)]
        blocks: i64,
        #[arg(long, default_value = "models/v1/realism.safetensors")]
        out: PathBuf,
    },
    /// Write the shipped realism predictor from a `train-predictor` run, tied to the
    /// loaded hyperprior.
    ExportPredictor {
        #[arg(long, default_value = "runs/predictor")]
        run_dir: PathBuf,
        #[arg(long, default_value = "models/v1/realism-predictor.safetensors")]
        out: PathBuf,
    },
    /// Train the realism predictor (ConHa) on proxy labels computed on the training
    /// photos with the bundled hyperprior and realism generator; prints its held-out
    /// error against constant weights.
    TrainPredictor {
        #[arg(long, default_value = "../shared/data/train")]
        data: PathBuf,
        #[arg(long, default_value = "runs/predictor")]
        run_dir: PathBuf,
        #[arg(long, default_value_t = 2)]
        crops_per_image: usize,
        #[arg(long, default_value_t = 256)]
        crop: u32,
        #[arg(long, default_value_t = 3_000)]
        steps: i64,
        #[arg(long, default_value_t = 16)]
        batch: usize,
        #[arg(long, default_value_t = 1e-3)]
        lr: f64,
        /// Weight of the realism term against the fidelity term of the proxy label.
        #[arg(long, default_value_t = mirage_train::predictor::DEFAULT_ALPHA)]
        alpha: f64,
        /// Weight of the line-structure term (straight edges, strokes: less w).
        #[arg(long, default_value_t = mirage_train::predictor::DEFAULT_BETA)]
        beta: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// The realism measure (MFD/MKD): train and export its feature extractor, measure
    /// two folders, validate it on Kodak.
    Realism {
        #[command(subcommand)]
        command: RealismCommand,
    },
    /// Write the shipped model file from a training checkpoint.
    Export {
        #[arg(long, default_value = "runs/hyperprior/model.safetensors")]
        checkpoint: PathBuf,
        #[arg(long, default_value_t = 96)]
        n: i64,
        #[arg(long, default_value_t = 128)]
        m: i64,
        /// The checkpoint has the spatial–channel context model.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        context: bool,
        #[arg(long, default_value = "models/hyperprior.safetensors")]
        out: PathBuf,
    },
    /// The preference study web app (2AFC pairs, votes, Elo); see docs/study.md.
    Study {
        #[command(subcommand)]
        command: mirage_study::cli::StudyCommand,
    },
    /// Train (or resume training) the hyperprior on ../shared/data/train.
    Train {
        #[arg(long, default_value = "../shared/data/train")]
        data: PathBuf,
        #[arg(long, default_value = "runs/hyperprior")]
        run_dir: PathBuf,
        #[arg(long, default_value_t = 28_000)]
        steps: i64,
        #[arg(long, default_value_t = 8)]
        batch: usize,
        #[arg(long, default_value_t = 128)]
        crop: u32,
        #[arg(long, default_value_t = 3e-4)]
        lr: f64,
        #[arg(long, default_value_t = 6_000)]
        decay_steps: i64,
        #[arg(long, default_value_t = 96)]
        n: i64,
        #[arg(long, default_value_t = 128)]
        m: i64,
        /// Train with the spatial–channel context model.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        context: bool,
        /// A new run starts from this shipped model's transforms (its density network
        /// and any missing context layers start fresh).
        #[arg(long)]
        init_from: Option<PathBuf>,
        /// On resume, fit the density network to the --init-from model's tables again.
        #[arg(long)]
        refit_prior: bool,
        #[arg(long, value_enum, default_value = "bf16")]
        precision: Precision,
        #[arg(long, default_value_t = 250)]
        checkpoint_every: i64,
        #[arg(long, default_value_t = 1000)]
        validate_every: i64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Train (or resume training) the rectified-flow refiner on the frozen shipped
    /// hyperprior's MSE decodes.
    TrainFlow {
        #[arg(long, default_value = "../shared/data/train")]
        data: PathBuf,
        #[arg(long, default_value = "runs/flow")]
        run_dir: PathBuf,
        #[arg(long, default_value_t = 8_000)]
        steps: i64,
        #[arg(long, default_value_t = 8)]
        batch: usize,
        #[arg(long, default_value_t = 128)]
        crop: u32,
        #[arg(long, default_value_t = 2e-4)]
        lr: f64,
        #[arg(long, default_value_t = 48)]
        channels: i64,
        #[arg(long, default_value_t = 250)]
        checkpoint_every: i64,
        #[arg(long, default_value_t = 500)]
        validate_every: i64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Train (or resume training) the realism generator on the frozen shipped hyperprior.
    TrainRealism {
        #[arg(long, default_value = "../shared/data/train")]
        data: PathBuf,
        #[arg(long, default_value = "runs/realism")]
        run_dir: PathBuf,
        #[arg(long, default_value_t = 8_000)]
        steps: i64,
        #[arg(long, default_value_t = 8)]
        batch: usize,
        #[arg(long, default_value_t = 128)]
        crop: u32,
        #[arg(long, default_value_t = 2e-4)]
        lr: f64,
        #[arg(long, default_value_t = 64)]
        channels: i64,
        #[arg(long, default_value_t = 4)]
        blocks: i64,
        /// Weight of the MSE (images in [0, 1]).
        #[arg(long, default_value_t = 150.0)]
        k_mse: f64,
        /// Weight of discriminator feature matching, times w.
        #[arg(long, default_value_t = 1.0)]
        k_fm: f64,
        /// Weight of the adversarial loss, times w.
        #[arg(long, default_value_t = 0.15)]
        k_adv: f64,
        #[arg(long, default_value_t = 250)]
        checkpoint_every: i64,
        #[arg(long, default_value_t = 500)]
        validate_every: i64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Subcommand)]
pub(crate) enum RealismCommand {
    /// Train (or resume training) the realism extractor, self-supervised, on
    /// ../shared/data/train (rotation and noise prediction on random crops).
    TrainExtractor {
        #[arg(long, default_value = "../shared/data/train")]
        data: PathBuf,
        #[arg(long, default_value = "runs/realism-extractor")]
        run_dir: PathBuf,
        #[arg(long, default_value_t = 3_000)]
        steps: i64,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        #[arg(long, default_value_t = 64)]
        crop: u32,
        #[arg(long, default_value_t = 1e-3)]
        lr: f64,
        #[arg(long, default_value_t = 1_000)]
        decay_steps: i64,
        /// Weight of the noise-prediction loss against the rotation loss.
        #[arg(long, default_value_t = 1.0)]
        noise_weight: f64,
        #[arg(long, default_value_t = 100)]
        checkpoint_every: i64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Write the shipped extractor (f16 weights, feature scale, metadata) from a run.
    Export {
        #[arg(long, default_value = "runs/realism-extractor")]
        run_dir: PathBuf,
        /// Training photos, for the feature scale (never Kodak).
        #[arg(long, default_value = "../shared/data/train")]
        data: PathBuf,
        #[arg(long, default_value = "models/realism-extractor.safetensors")]
        out: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// MFD and MKD between two folders of images, paired by file name.
    Distance {
        reference: PathBuf,
        test: PathBuf,
        /// Extractor file (default: models/realism-extractor.safetensors, or
        /// $MIRAGE_REALISM_EXTRACTOR).
        #[arg(long)]
        extractor: Option<PathBuf>,
    },
    /// Check the measure on Kodak (blur, JPEG, equal PSNR, noise floor) and write
    /// docs/realism-measure.md and docs/realism-measure.csv.
    Validate {
        #[arg(long, default_value = "../shared/data/kodak")]
        images: PathBuf,
        #[arg(long)]
        extractor: Option<PathBuf>,
        /// Mirage quality whose decode sets the PSNR of the equal-PSNR group.
        #[arg(long, default_value_t = 15.0)]
        mirage_quality: f64,
        /// Tune the equal-PSNR group to 28 dB instead of a Mirage decode.
        #[arg(long)]
        no_mirage: bool,
        #[arg(long, default_value = "docs")]
        out_dir: PathBuf,
        /// Replace existing output files.
        #[arg(long)]
        force: bool,
    },
}

//! The `mirage` command line: flags and glue only; the work is in the library.
//! Every error is printed once, as `mirage: <message>`, with exit status 1.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use mirage::bench::{self, BenchOptions};
use mirage::codec::{
    default_flow_path, default_model_path, default_realism_path, suggest_realism, Codec,
    RateTarget, Realism,
};
use mirage::comparison::{self, Column, KODAK_REGIONS};
use mirage::evaluation::{MirageUnderTest, RealismSetMeasure};
use mirage::image_io::{read_image, write_atomically, write_image};
use mirage::model::realism::RealismConfig;
use mirage::model::{layers::ConvPrecision, ModelConfig};
use mirage::model_file::{export, export_flow, export_realism, id_hex};
use mirage::realism_measure::train::{export_extractor, train_extractor, ExtractorTrainOptions};
use mirage::realism_measure::{default_extractor_path, validate, RealismMeasure};
use mirage::train::realism::RealismTrainOptions;
use mirage::train::{train, TrainOptions};
use mirage::{metrics, progress};
use mirage_eval::{suite, ClassicCodec, CodecUnderTest, EvalOptions, SetMeasure};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(name = "mirage", version, about = "Mirage: a learned image codec")]
struct Cli {
    /// Worker threads for the networks (default: all cores). Output does not depend on it.
    #[arg(long, global = true)]
    threads: Option<i32>,
    /// Model file (default: the bundled models/hyperprior.safetensors, or $MIRAGE_MODEL).
    #[arg(long, global = true)]
    model: Option<PathBuf>,
    /// Realism generator file (default: the bundled models/v1/realism.safetensors, or
    /// $MIRAGE_REALISM_MODEL).
    #[arg(long, global = true)]
    realism_model: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Rate {
    /// Quality 0–100 (continuous rate setting). Default 50.
    #[arg(long, conflicts_with_all = ["bpp", "target_size"])]
    quality: Option<f64>,
    /// Target bits per pixel: the largest file at or under it.
    #[arg(long, conflicts_with = "target_size")]
    bpp: Option<f64>,
    /// Target file size in bytes: the largest file at or under it.
    #[arg(long)]
    target_size: Option<usize>,
    /// Encoder effort 0–3: higher refines the latent for this image (slower encode,
    /// smaller file for the same quality; the decoder is unchanged). 0 is the fast
    /// encoder.
    #[arg(long, default_value_t = 0)]
    effort: u8,
}

impl Rate {
    fn target(&self) -> RateTarget {
        match (self.quality, self.bpp, self.target_size) {
            (_, Some(b), _) => RateTarget::Bpp(b),
            (_, _, Some(n)) => RateTarget::Bytes(n),
            (q, _, _) => RateTarget::Quality(q.unwrap_or(50.0)),
        }
    }
}

/// `--realism auto` or a weight in [0, 1].
fn parse_realism(s: &str) -> Result<Realism, String> {
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
fn parse_fixed(s: &str) -> Result<(String, f64), String> {
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
fn realism_variant(name: &str) -> Result<Option<f32>> {
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
fn parse_tolerance_percent(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=50.0).contains(&p) => Ok(p),
        _ => Err(format!("expected a percentage from 0 to 50, not `{s}`")),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DecoderChoice {
    Default,
    Flow,
}

#[derive(Clone, Copy, ValueEnum)]
enum Precision {
    F32,
    Bf16,
}

#[derive(Subcommand)]
enum Command {
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
        #[arg(long, default_value_t = mirage::train::predictor::DEFAULT_ALPHA)]
        alpha: f64,
        /// Weight of the line-structure term (straight edges, strokes: less w).
        #[arg(long, default_value_t = mirage::train::predictor::DEFAULT_BETA)]
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
enum RealismCommand {
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

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        // A closed pipe (e.g. `mirage info x | head`) is not an error.
        if e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        }) {
            std::process::exit(0);
        }
        eprintln!("mirage: {e:#}");
        std::process::exit(1);
    }
}

/// The model files asked for on the command line.
struct Models {
    model: Option<PathBuf>,
    realism_model: Option<PathBuf>,
}

/// The hyperprior, plus the realism generator: the one asked for (which must fit), or
/// the bundled one if it was trained for this hyperprior.
fn load_codec(models: &Models) -> Result<Codec> {
    let path = models.model.clone().unwrap_or_else(default_model_path);
    let mut codec = Codec::load(&path)?;
    match &models.realism_model {
        Some(realism) => codec.attach_realism(realism)?,
        None => {
            let bundled = default_realism_path();
            if bundled.exists() {
                // A custom --model has no bundled generator: decode w = 0 only.
                let _ = codec.attach_realism(&bundled);
            }
        }
    }
    let bundled = default_flow_path();
    if bundled.exists() {
        let _ = codec.attach_flow(&bundled);
    }
    let bundled = mirage::conha::default_predictor_path();
    if bundled.exists() {
        let _ = codec.attach_predictor(&bundled);
    }
    Ok(codec)
}

fn run(cli: Cli) -> Result<()> {
    let threads = cli
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as i32));
    tch::set_num_threads(threads);
    tch::set_num_interop_threads(1);
    let models = Models {
        model: cli.model,
        realism_model: cli.realism_model,
    };
    match cli.command {
        Command::Encode {
            input,
            output,
            rate,
            realism,
            force,
        } => {
            let codec = load_codec(&models)?;
            for_each_file(
                &input,
                &output,
                &[
                    "png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "ppm", "pnm", "gif",
                ],
                "mrg",
                |src, dst| encode_one(&codec, src, dst, &rate, realism, force).map(|_| ()),
            )
        }
        Command::Decode {
            input,
            output,
            realism,
            decoder,
            steps,
            seed,
            temperature,
            force,
        } => {
            let codec = load_codec(&models)?;
            for_each_file(&input, &output, &["mrg"], "png", |src, dst| {
                let bytes =
                    std::fs::read(src).with_context(|| format!("cannot read {}", src.display()))?;
                let (img, _) = match decoder {
                    DecoderChoice::Default => codec.decompress_with(&bytes, realism),
                    DecoderChoice::Flow => codec.decompress_flow(&bytes, steps, seed, temperature),
                }
                .with_context(|| src.display().to_string())?;
                write_image(&img, dst, force)?;
                Ok(())
            })
        }
        Command::Info { file, symbols } => {
            info(&file)?;
            if symbols {
                let codec = load_codec(&models)?;
                let bytes = std::fs::read(&file)?;
                let (z, y) = codec.decode_symbols(&bytes)?;
                let indexes = codec.scale_indexes(&bytes)?;
                let digest = |values: &mut dyn Iterator<Item = i64>| {
                    use sha2::Digest;
                    let mut h = sha2::Sha256::new();
                    values.for_each(|v| h.update(v.to_le_bytes()));
                    id_hex_long(&h.finalize())
                };
                let zy = digest(&mut z.iter().chain(&y).map(|&v| v as i64));
                let ix = digest(&mut indexes.iter().map(|&v| v as i64));
                println!("symbols:     {zy}");
                println!("tables:      {ix}");
            }
            Ok(())
        }
        Command::Roundtrip {
            input,
            out_dir,
            rate,
            realism,
        } => {
            let codec = load_codec(&models)?;
            std::fs::create_dir_all(&out_dir)
                .with_context(|| format!("cannot create {}", out_dir.display()))?;
            let stem = input
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            let mrg = out_dir.join(format!("{stem}.mrg"));
            let png = out_dir.join(format!("{stem}.decoded.png"));
            // `auto` is the whole ConHa path when the predictor is there: the encoder
            // writes its realism map and the decoder follows it.
            let encode_realism = match realism {
                Realism::Auto if codec.predictor().is_ok() => Some(Realism::Auto),
                _ => None,
            };
            let original = encode_one(&codec, &input, &mrg, &rate, encode_realism, true)?;
            let bytes = std::fs::read(&mrg)?;
            let (decoded, _) = codec.decompress_with(&bytes, realism)?;
            write_image(&decoded, &png, true)?;
            let pixels = (original.width() * original.height()) as f64;
            println!(
                "{}: {} bytes, {:.4} bpp, PSNR {:.2} dB, SSIMULACRA2 {:.2}\n  wrote {} and {}",
                input.display(),
                bytes.len(),
                bytes.len() as f64 * 8.0 / pixels,
                metrics::psnr(&original, &decoded)?,
                metrics::ssimulacra2(&original, &decoded)?,
                mrg.display(),
                png.display()
            );
            Ok(())
        }
        Command::Bench {
            images,
            qualities,
            efforts,
            out_dir,
        } => {
            let codec = load_codec(&models)?;
            let table = bench::run(
                &codec,
                &BenchOptions {
                    images,
                    qualities,
                    efforts,
                    out_dir: out_dir.clone(),
                },
            )?;
            println!("{table}");
            eprintln!("wrote {0}/kodak.csv and {0}/kodak.md", out_dir.display());
            Ok(())
        }
        Command::Eval {
            images,
            codecs,
            targets,
            anchor,
            rate_tolerance,
            no_butteraugli,
            no_realism,
            fixed,
            jobs,
            out_dir,
        } => {
            // Names as the codecs report them (`mirage-w1.0` is `mirage-w1`).
            let canonical = |name: &str| -> Result<String> {
                Ok(match realism_variant(name)? {
                    Some(w) => format!("mirage-w{w}"),
                    None => name.to_string(),
                })
            };
            let fixed = fixed
                .into_iter()
                .map(|(c, setting)| Ok((canonical(&c)?, setting)))
                .collect::<Result<Vec<_>>>()?;
            // With --fixed, the codecs are those named there.
            let names: Vec<String> = if fixed.is_empty() {
                codecs.iter().map(|c| canonical(c)).collect::<Result<_>>()?
            } else {
                let mut names: Vec<String> = fixed.iter().map(|(c, _)| c.clone()).collect();
                names.dedup();
                names
            };
            let mut classic = vec![];
            let mut mirage_codecs: Vec<MirageUnderTest> = vec![];
            for name in &names {
                if mirage_codecs.iter().any(|m| m.name() == *name)
                    || classic.iter().any(|c: &ClassicCodec| c.name() == *name)
                {
                    continue;
                }
                if name == "mirage" {
                    mirage_codecs.push(MirageUnderTest::new(load_codec(&models)?));
                } else if let Some(w) = realism_variant(name)? {
                    mirage_codecs.push(MirageUnderTest::with_realism(load_codec(&models)?, w)?);
                } else {
                    classic.push(ClassicCodec::by_name(name).with_context(|| {
                        format!(
                            "unknown codec {name} (known: mirage, mirage-wW for the realism \
                             decoder at weight W, {})",
                            ClassicCodec::all()
                                .iter()
                                .map(|c| c.name())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    })?);
                }
            }
            let mut under_test: Vec<&dyn CodecUnderTest> = vec![];
            under_test.extend(mirage_codecs.iter().map(|m| m as &dyn CodecUnderTest));
            under_test.extend(classic.iter().map(|c| c as &dyn CodecUnderTest));
            let options = EvalOptions {
                targets_bpp: targets,
                butteraugli: !no_butteraugli,
                rate_tolerance: rate_tolerance / 100.0,
                anchor: Some(anchor),
                jobs: jobs.unwrap_or(0),
                ..EvalOptions::default()
            };
            let paths = if images.is_dir() {
                suite::image_paths(&images)?
            } else {
                vec![images]
            };
            if !fixed.is_empty() {
                let points: Vec<(&dyn CodecUnderTest, f64)> = fixed
                    .iter()
                    .map(|(name, setting)| {
                        let codec = *under_test
                            .iter()
                            .find(|c| c.name() == *name)
                            .expect("every --fixed codec was loaded above");
                        (codec, *setting)
                    })
                    .collect();
                let report = suite::run_fixed(&points, &paths, &options)?;
                for path in report.write_all(&out_dir)? {
                    eprintln!("wrote {}", path.display());
                }
                print!("{}", report.markdown());
                return Ok(());
            }
            let realism = if no_realism {
                None
            } else {
                let path = default_extractor_path();
                let measure = RealismMeasure::load(&path).with_context(|| {
                    format!(
                        "cannot load the realism extractor {} (or pass --no-realism)",
                        path.display()
                    )
                })?;
                Some(RealismSetMeasure::new(measure))
            };
            let set_measures: Vec<&dyn SetMeasure> =
                realism.iter().map(|m| m as &dyn SetMeasure).collect();
            let start = std::time::Instant::now();
            let report = suite::run(&under_test, &paths, &set_measures, &options)?;
            for path in report.write_all(&out_dir)? {
                eprintln!("wrote {}", path.display());
            }
            print!("{}", report.markdown());
            eprintln!(
                "evaluated {} images in {:.1} min",
                paths.len(),
                start.elapsed().as_secs_f64() / 60.0
            );
            Ok(())
        }
        Command::BenchDecoders {
            images,
            bpp,
            decoders,
            out_dir,
        } => {
            let codec = load_codec(&models)?;
            // The realism measure, if its extractor is there (the table names its id).
            let measure = RealismMeasure::load_default().ok();
            let realism = |reference: &[image::RgbImage], test: &[image::RgbImage]| {
                let m = measure.as_ref().context("no realism extractor")?;
                let d = m.distance(reference, test)?;
                Ok(vec![
                    (format!("MFD ({})", m.extractor_id), d.mfd),
                    ("MKD ×1000".to_string(), d.mkd),
                ])
            };
            let mut measures: Vec<bench::SetMeasure> = vec![];
            match &measure {
                Some(_) => measures.push(&realism),
                None => eprintln!("mirage: note: no realism extractor; MFD/MKD columns omitted"),
            }
            let table = bench::run_decoders(
                &codec,
                &bench::DecoderBenchOptions {
                    images,
                    targets_bpp: bpp,
                    columns: decoders,
                    out_dir: out_dir.clone(),
                },
                &measures,
            )?;
            println!("{table}");
            eprintln!(
                "wrote {0}/decoders.csv and {0}/decoders.md",
                out_dir.display()
            );
            Ok(())
        }
        Command::Crops {
            images,
            bpp,
            decoders,
            zoom,
            out,
            force,
        } => {
            let codec = load_codec(&models)?;
            let columns = decoders;
            let (sheet, rows) = comparison::side_by_side(
                &codec,
                &images,
                &KODAK_REGIONS,
                &columns,
                RateTarget::Bpp(bpp),
                zoom.clamp(1, 8),
            )?;
            write_image(&sheet, &out, force)?;
            let name = out.file_name().unwrap_or_default().to_string_lossy();
            let caption = comparison::markdown(&rows, &columns, &name);
            write_atomically(&out.with_extension("md"), caption.as_bytes(), force)?;
            print!("{caption}");
            eprintln!("wrote {} and its caption", out.display());
            Ok(())
        }
        Command::ExportFlow {
            checkpoint,
            channels,
            out,
        } => {
            let codec = Codec::load(&models.model.clone().unwrap_or_else(default_model_path))?;
            let config = mirage::model::flow::FlowConfig { channels };
            let id = export_flow(&checkpoint, config, &codec.id(), &out)?;
            println!(
                "wrote {} (flow model {}, for model {})",
                out.display(),
                id_hex(&id),
                id_hex(&codec.id())
            );
            Ok(())
        }
        Command::ExportRealism {
            checkpoint,
            channels,
            blocks,
            out,
        } => {
            let codec = Codec::load(&models.model.clone().unwrap_or_else(default_model_path))?;
            let config = RealismConfig {
                channels,
                blocks,
                feature_channels: codec.config().n,
            };
            let id = export_realism(&checkpoint, config, &codec.id(), &out)?;
            println!(
                "wrote {} (realism model {}, for model {})",
                out.display(),
                id_hex(&id),
                id_hex(&codec.id())
            );
            Ok(())
        }
        Command::ExportPredictor { run_dir, out } => {
            let codec = Codec::load(&models.model.clone().unwrap_or_else(default_model_path))?;
            let fixed_path = run_dir.join("fixed_level");
            let fixed_level: u8 = std::fs::read_to_string(&fixed_path)
                .with_context(|| format!("cannot read {}", fixed_path.display()))?
                .trim()
                .parse()
                .with_context(|| format!("{} is not a level", fixed_path.display()))?;
            let id = mirage::model_file::export_predictor(
                &run_dir.join("predictor.safetensors"),
                fixed_level,
                &codec.id(),
                &out,
            )?;
            println!(
                "wrote {} (realism predictor {}, for model {})",
                out.display(),
                id_hex(&id),
                id_hex(&codec.id())
            );
            Ok(())
        }
        Command::TrainPredictor {
            data,
            run_dir,
            crops_per_image,
            crop,
            steps,
            batch,
            lr,
            alpha,
            beta,
            seed,
        } => {
            let o = mirage::train::predictor::PredictorTrainOptions {
                data,
                base_model: models.model.clone().unwrap_or_else(default_model_path),
                realism_model: models
                    .realism_model
                    .clone()
                    .unwrap_or_else(default_realism_path),
                run_dir,
                crops_per_image,
                crop,
                steps,
                batch,
                lr,
                alpha,
                beta,
                seed,
            };
            print!("{}", mirage::train::predictor::train(&o)?);
            Ok(())
        }
        Command::Realism { command } => realism(command, &models),
        Command::Export {
            checkpoint,
            n,
            m,
            context,
            out,
        } => {
            let id = export(&checkpoint, ModelConfig { n, m, context }, &out)?;
            println!("wrote {} (model id {})", out.display(), id_hex(&id));
            Ok(())
        }
        Command::Study { command } => Ok(mirage_study::cli::run(command)?),
        Command::BenchPredictor { images, bpp } => {
            let codec = load_codec(&models)?;
            println!("{}", bench::run_predictor(&codec, &images, &bpp)?);
            Ok(())
        }
        Command::StudyPool {
            images,
            bpp,
            conditions,
            out,
            force,
        } => {
            let codec = load_codec(&models)?;
            let out = out.unwrap_or_else(|| PathBuf::from(format!("study-pools/conha-{bpp}")));
            let paths = suite::image_paths(&images)?;
            mirage::study_pool::write(&codec, &paths, bpp, &conditions, &out, force)?;
            eprintln!(
                "wrote {}; serve it with: scripts/mirage study serve --pool {}",
                out.display(),
                out.display()
            );
            Ok(())
        }
        Command::Train {
            data,
            run_dir,
            steps,
            batch,
            crop,
            lr,
            decay_steps,
            n,
            m,
            context,
            init_from,
            refit_prior,
            precision,
            checkpoint_every,
            validate_every,
            seed,
        } => train(&TrainOptions {
            data,
            run_dir,
            steps,
            batch,
            crop,
            lr,
            decay_steps,
            config: ModelConfig { n, m, context },
            init_from,
            refit_prior,
            precision: match precision {
                Precision::F32 => ConvPrecision::F32,
                Precision::Bf16 => ConvPrecision::Bf16,
            },
            checkpoint_every,
            validate_every,
            seed,
        }),
        Command::TrainFlow {
            data,
            run_dir,
            steps,
            batch,
            crop,
            lr,
            channels,
            checkpoint_every,
            validate_every,
            seed,
        } => mirage::train::flow::train(&mirage::train::flow::FlowTrainOptions {
            data,
            base_model: models.model.clone().unwrap_or_else(default_model_path),
            run_dir,
            steps,
            batch,
            crop,
            lr,
            config: mirage::model::flow::FlowConfig { channels },
            checkpoint_every,
            validate_every,
            seed,
        }),
        Command::TrainRealism {
            data,
            run_dir,
            steps,
            batch,
            crop,
            lr,
            channels,
            blocks,
            k_mse,
            k_fm,
            k_adv,
            checkpoint_every,
            validate_every,
            seed,
        } => mirage::train::realism::train(&RealismTrainOptions {
            data,
            base_model: models.model.clone().unwrap_or_else(default_model_path),
            run_dir,
            steps,
            batch,
            crop,
            lr,
            config: RealismConfig {
                channels,
                blocks,
                feature_channels: 0,
            },
            k_mse,
            k_fm,
            k_adv,
            checkpoint_every,
            validate_every,
            seed,
        }),
    }
}

fn realism(command: RealismCommand, models: &Models) -> Result<()> {
    let load_measure = |extractor: &Option<PathBuf>| -> Result<RealismMeasure> {
        let path = extractor.clone().unwrap_or_else(default_extractor_path);
        RealismMeasure::load(&path).with_context(|| {
            format!(
                "no realism extractor at {}; train one with `mirage realism train-extractor` and `mirage realism export`",
                path.display()
            )
        })
    };
    match command {
        RealismCommand::TrainExtractor {
            data,
            run_dir,
            steps,
            batch,
            crop,
            lr,
            decay_steps,
            noise_weight,
            checkpoint_every,
            seed,
        } => train_extractor(&ExtractorTrainOptions {
            data,
            run_dir,
            steps,
            batch,
            crop,
            lr,
            decay_steps,
            noise_weight,
            checkpoint_every,
            seed,
        }),
        RealismCommand::Export {
            run_dir,
            data,
            out,
            force,
        } => {
            let id = export_extractor(&run_dir, &data, &out, force)?;
            println!("wrote {} (extractor id {id})", out.display());
            Ok(())
        }
        RealismCommand::Distance {
            reference,
            test,
            extractor,
        } => {
            let measure = load_measure(&extractor)?;
            let ref_paths = suite::image_paths(&reference)?;
            let test_paths = suite::image_paths(&test)?;
            let mut ref_images = vec![];
            let mut test_images = vec![];
            for path in &ref_paths {
                let stem = path.file_stem().unwrap_or_default().to_string_lossy();
                let partner = test_paths
                    .iter()
                    .find(|p| p.file_stem().unwrap_or_default().to_string_lossy() == stem)
                    .with_context(|| format!("{} has no image named {stem}.*", test.display()))?;
                ref_images.push(read_image(path)?.image);
                test_images.push(read_image(partner)?.image);
            }
            let d = measure.distance(&ref_images, &test_images)?;
            println!(
                "MFD {:.4}  MKD {:.4} (x1000)  patches {}  images {}  extractor {}",
                d.mfd,
                d.mkd,
                d.patches,
                ref_images.len(),
                measure.extractor_id
            );
            Ok(())
        }
        RealismCommand::Validate {
            images,
            extractor,
            mirage_quality,
            no_mirage,
            out_dir,
            force,
        } => {
            let measure = load_measure(&extractor)?;
            let md_path = out_dir.join("realism-measure.md");
            let csv_path = out_dir.join("realism-measure.csv");
            for p in [&md_path, &csv_path] {
                if p.exists() && !force {
                    bail!("{} exists (use --force to replace it)", p.display());
                }
            }
            let originals = suite::image_paths(&images)?
                .iter()
                .map(|p| Ok(read_image(p)?.image))
                .collect::<Result<Vec<_>>>()?;
            let codec = if no_mirage {
                None
            } else {
                Some(load_codec(models)?)
            };
            let result = validate::validate(
                &measure,
                &originals,
                codec.as_ref().map(|c| (c, mirage_quality)),
            )?;
            let command = if no_mirage {
                "mirage realism validate --no-mirage --force".to_string()
            } else {
                format!("mirage realism validate --mirage-quality {mirage_quality} --force")
            };
            std::fs::create_dir_all(&out_dir)?;
            write_atomically(&md_path, result.document(&command).as_bytes(), force)?;
            write_atomically(&csv_path, result.csv().as_bytes(), force)?;
            print!("{}", result.markdown_table());
            eprintln!("wrote {} and {}", md_path.display(), csv_path.display());
            if !result.passed() {
                bail!("some validation checks failed (see above)");
            }
            Ok(())
        }
    }
}

/// Compresses one image file to `dst`; returns the original (for reporting).
fn encode_one(
    codec: &Codec,
    src: &Path,
    dst: &Path,
    rate: &Rate,
    realism: Option<Realism>,
    force: bool,
) -> Result<image::RgbImage> {
    let target = rate.target();
    if rate.effort > 0 && realism == Some(Realism::Auto) {
        bail!("--effort with --realism auto is not supported yet (the ConHa encoder runs at effort 0)");
    }
    let loaded = read_image(src)?;
    if let Some(note) = &loaded.note {
        eprintln!("mirage: note: {note}");
    }
    let bytes = match realism {
        Some(Realism::Auto) => {
            codec
                .predictor()?
                .compress(codec, &loaded.image, target)
                .with_context(|| src.display().to_string())?
                .0
        }
        Some(Realism::Weight(w)) => suggest_realism(
            &codec
                .compress_with_effort(&loaded.image, target, rate.effort)
                .with_context(|| src.display().to_string())?
                .0,
            w,
        )?,
        None => {
            codec
                .compress_with_effort(&loaded.image, target, rate.effort)
                .with_context(|| src.display().to_string())?
                .0
        }
    };
    write_atomically(dst, &bytes, force)?;
    Ok(loaded.image)
}

/// Runs `job` on one file, or on every file with one of `extensions` in a folder
/// (writing `<stem>.<out_ext>` into the output folder), with a progress bar.
fn for_each_file(
    input: &Path,
    output: &Path,
    extensions: &[&str],
    out_ext: &str,
    mut job: impl FnMut(&Path, &Path) -> Result<()>,
) -> Result<()> {
    if !input.is_dir() {
        return job(input, output);
    }
    let files = suite::files_with_extensions(input, extensions)?;
    if files.is_empty() {
        bail!("no {} files in {}", extensions.join("/"), input.display());
    }
    std::fs::create_dir_all(output)
        .with_context(|| format!("cannot create {}", output.display()))?;
    let bar = progress::bar(files.len() as u64, "files");
    let mut failures = 0;
    for src in &files {
        let stem = src.file_stem().unwrap_or_default().to_string_lossy();
        let dst = output.join(format!("{stem}.{out_ext}"));
        if let Err(e) = job(src, &dst) {
            bar.suspend(|| eprintln!("mirage: {e:#}"));
            failures += 1;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if failures > 0 {
        bail!("{failures} of {} files failed", files.len());
    }
    Ok(())
}

fn id_hex_long(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn info(file: &Path) -> Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let c = mirage_format::read(&bytes).with_context(|| file.display().to_string())?;
    let h = &c.header;
    let pixels = h.width as f64 * h.height as f64;
    println!("file:        {}", file.display());
    println!("format:      Mirage v{}", mirage_format::VERSION);
    println!("model id:    {}", id_hex(&h.model_id));
    println!("size:        {}x{}", h.width, h.height);
    println!(
        "rate:        {} of {} (quality {:.1})",
        h.rate,
        mirage_format::RATE_MAX,
        h.rate as f64 / 10.0
    );
    match h.realism {
        Some(w) => println!("realism:     {:.3}", w as f64 / 255.0),
        None => println!("realism:     not set"),
    }
    if let Some(map) = c.sections.get(2) {
        let map = mirage_format::realism_map::RealismMap::from_bytes(map, h.width, h.height)
            .with_context(|| file.display().to_string())?;
        println!(
            "realism map: {}x{} cells of {} px (w per cell, row by row):",
            map.cols,
            map.rows,
            mirage_format::realism_map::CELL
        );
        for row in map.levels.chunks(map.cols as usize) {
            let cells: Vec<String> = row
                .iter()
                .map(|&l| format!("{:.2}", mirage_format::realism_map::RealismMap::weight(l)))
                .collect();
            println!("             {}", cells.join(" "));
        }
    }
    println!("decoder:     {}", h.decoder);
    println!(
        "total:       {} bytes, {:.4} bpp",
        bytes.len(),
        bytes.len() as f64 * 8.0 / pixels
    );
    println!(
        "header:      {} bytes",
        mirage_format::header_size(c.sections.len())
    );
    let names = ["hyper-latent (z)", "latent (y)", "realism map"];
    for (i, s) in c.sections.iter().enumerate() {
        println!(
            "section {i}:   {} bytes  {}",
            s.len(),
            names.get(i).unwrap_or(&"")
        );
    }
    Ok(())
}

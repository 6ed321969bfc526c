//! `mirage bench <what>`: the core's rate–distortion and speed, the decoders, their
//! crops and the realism predictor, on Kodak by default.

use crate::{load_codec, Models};
use anyhow::{Context, Result};
use clap::Subcommand;
use mirage::codec::RateTarget;
use mirage::image_io::{write_atomically, write_image};
use mirage_cli::bench::{self, BenchOptions};
use mirage_cli::comparison::Column;
use mirage_cli::comparison::{self, KODAK_REGIONS};
use mirage_realism_measure::RealismMeasure;
use std::path::PathBuf;

#[derive(Subcommand)]
pub(crate) enum BenchCommand {
    /// Rate–distortion and speed benchmark on a folder of PNGs (default: Kodak).
    Core {
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
    /// The same bitstreams decoded at several hallucination weights: fidelity, detail,
    /// realism measure and speed (CSV and Markdown).
    Decoders {
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
    /// The ultra-low mode at each operating point beside JPEG XL (8× resampling) and
    /// AVIF at their lowest rates: table, CSV and full-image sheets.
    Ultralow {
        #[arg(long, default_value = "../shared/data/kodak")]
        images: PathBuf,
        #[arg(long, default_value = "bench-results")]
        out_dir: PathBuf,
        /// Images shown whole in the side-by-side sheets.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "kodim23,kodim21,kodim04,kodim13"
        )]
        sheets: Vec<String>,
        /// Realism weights of the decodes (the sheets show the first).
        #[arg(long, value_delimiter = ',', default_value = "1,0")]
        weights: Vec<f32>,
        /// Caption ablation: a table of `file name<TAB>caption` lines (for example
        /// bench-data/kodak-captions.tsv); every Mirage row then comes with and without.
        #[arg(long)]
        captions: Option<PathBuf>,
    },
    /// The realism predictor's time per image and the size of its maps in the files.
    Predictor {
        #[arg(long, default_value = "../shared/data/kodak")]
        images: PathBuf,
        #[arg(long, value_delimiter = ',', default_value = "0.08,0.1,0.2")]
        bpp: Vec<f64>,
    },
}

pub(crate) fn run(command: BenchCommand, models: &Models) -> Result<()> {
    match command {
        BenchCommand::Core {
            images,
            qualities,
            efforts,
            out_dir,
        } => {
            let (codec, _) = load_codec(models)?;
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
        BenchCommand::Ultralow {
            images,
            out_dir,
            sheets,
            weights,
            captions,
        } => {
            let captions = captions
                .as_deref()
                .map(mirage_cli::ultralow_bench::read_caption_table)
                .transpose()?;
            let (codec, add_ons) = load_codec(models)?;
            let measure = RealismMeasure::load_default()?;
            let realism = |reference: &[image::RgbImage], test: &[image::RgbImage]| {
                let d = measure.distance(reference, test)?;
                Ok(vec![
                    (format!("MFD ({})", measure.extractor_id), d.mfd),
                    ("MKD ×1000".to_string(), d.mkd),
                ])
            };
            let naturalness =
                mirage_realism_measure::naturalness::NaturalnessModel::load_default()?;
            let natural = |_: &[image::RgbImage], test: &[image::RgbImage]| {
                Ok(vec![(
                    "naturalness".to_string(),
                    naturalness.mean_score(test)?,
                )])
            };
            let measures: Vec<bench::SetMeasure> = vec![&realism, &natural];
            let table = mirage_cli::ultralow_bench::run_ultralow(
                &codec,
                &add_ons,
                &mirage_cli::ultralow_bench::UltralowBenchOptions {
                    images,
                    out_dir: out_dir.clone(),
                    sheet_images: sheets,
                    weights,
                    captions,
                },
                &measures,
            )?;
            println!("{table}");
            eprintln!(
                "wrote {0}/ultralow.csv, {0}/ultralow.md and {0}/ultralow-*.png ({1})",
                out_dir.display(),
                mirage_cli::ultralow_bench::sheet_caption()
            );
            Ok(())
        }
        BenchCommand::Decoders {
            images,
            bpp,
            decoders,
            out_dir,
        } => {
            let (codec, add_ons) = load_codec(models)?;
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
            let naturalness =
                mirage_realism_measure::naturalness::NaturalnessModel::load_default().ok();
            let natural = |_: &[image::RgbImage], test: &[image::RgbImage]| {
                let m = naturalness.as_ref().context("no naturalness model")?;
                Ok(vec![("naturalness".to_string(), m.mean_score(test)?)])
            };
            let mut measures: Vec<bench::SetMeasure> = vec![];
            match &measure {
                Some(_) => measures.push(&realism),
                None => eprintln!("mirage: note: no realism extractor; MFD/MKD columns omitted"),
            }
            match &naturalness {
                Some(_) => measures.push(&natural),
                None => eprintln!("mirage: note: no naturalness model; its column is omitted"),
            }
            let table = bench::run_decoders(
                &codec,
                &add_ons,
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
        BenchCommand::Crops {
            images,
            bpp,
            decoders,
            zoom,
            out,
            force,
        } => {
            let (codec, add_ons) = load_codec(models)?;
            let columns = decoders;
            let (sheet, rows) = comparison::side_by_side(
                &codec,
                &add_ons,
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
        BenchCommand::Predictor { images, bpp } => {
            let (codec, add_ons) = load_codec(models)?;
            println!("{}", bench::run_predictor(&codec, &add_ons, &images, &bpp)?);
            Ok(())
        }
    }
}

//! The benchmarks: `bench`, `bench-decoders`, `crops`, `bench-predictor`.

use crate::args::*;
use crate::{load_codec, Models};
use anyhow::{Context, Result};
use mirage::codec::RateTarget;
use mirage::image_io::{write_atomically, write_image};
use mirage_cli::bench::{self, BenchOptions};
use mirage_cli::comparison::{self, KODAK_REGIONS};
use mirage_realism_measure::RealismMeasure;

pub(crate) fn run(command: Command, models: &Models) -> Result<()> {
    match command {
        Command::Bench {
            images,
            qualities,
            efforts,
            out_dir,
        } => {
            let codec = load_codec(models)?;
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
        Command::BenchDecoders {
            images,
            bpp,
            decoders,
            out_dir,
        } => {
            let codec = load_codec(models)?;
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
            let codec = load_codec(models)?;
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
        Command::BenchPredictor { images, bpp } => {
            let codec = load_codec(models)?;
            println!("{}", bench::run_predictor(&codec, &images, &bpp)?);
            Ok(())
        }
        _ => unreachable!("not a command of this group"),
    }
}

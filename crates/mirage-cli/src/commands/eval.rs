//! `eval`: Mirage against the classic codecs at matched rates.

use crate::args::*;
use crate::{load_codec, Models};
use anyhow::{Context, Result};
use clap::Args;
use mirage_cli::evaluation::{
    MirageUnderTest, NaturalnessSetMeasure, RealismSetMeasure, UltralowUnderTest,
};
use mirage_eval::{suite, ClassicCodec, CodecUnderTest, EvalOptions, SetMeasure};
use mirage_realism_measure::{default_extractor_path, RealismMeasure};
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct EvalArgs {
    #[arg(long, default_value = "../shared/data/kodak")]
    pub(crate) images: PathBuf,
    /// Codecs to run (mirage, jpeg, webp, avif, jxl, jxl-r8, heic; mirage-wW: Mirage's
    /// files decoded by the realism decoder at weight W, e.g. mirage-w1; mirage-ultralow:
    /// the ultra-low mode, 0.003–0.03 bpp, for targets that low).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "mirage,jpeg,webp,avif,jxl,jxl-r8,heic"
    )]
    pub(crate) codecs: Vec<String>,
    /// Target bits per pixel.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0.03,0.06,0.12,0.25,0.5,1.0"
    )]
    pub(crate) targets: Vec<f64>,
    /// The codec BD-rates are computed against.
    #[arg(long, default_value = "avif")]
    pub(crate) anchor: String,
    /// Accept a file within this many percent below the target rate instead of searching
    /// on for the largest one on the setting grid (0: exact grid answer).
    #[arg(long, default_value_t = 0.5, value_parser = parse_tolerance_percent)]
    pub(crate) rate_tolerance: f64,
    /// Skip butteraugli (about as slow as an encode).
    #[arg(long)]
    pub(crate) no_butteraugli: bool,
    /// Skip the realism measure (MFD/MKD on Mirage's own extractor).
    #[arg(long)]
    pub(crate) no_realism: bool,
    /// Instead of matching targets, run codecs at fixed settings, e.g.
    /// `avif:56,webp:0,jpeg:10,jxl:15,heic:15` (writes fixed.csv and fixed.md).
    #[arg(long, value_delimiter = ',', value_parser = parse_fixed)]
    pub(crate) fixed: Vec<(String, f64)>,
    /// Images evaluated at once (default: one per core). Speeds are per codec process,
    /// but measured while the other workers run; use 1 for speed figures alone.
    #[arg(long)]
    pub(crate) jobs: Option<usize>,
    /// Images whose crops the HTML report shows: file names (`kodim23.png,kodim04.png`)
    /// or `all` (default: the first image).
    #[arg(long, value_delimiter = ',')]
    pub(crate) crops: Vec<String>,
    #[arg(long, default_value = "eval-results")]
    pub(crate) out_dir: PathBuf,
}

pub(crate) fn run(args: EvalArgs, models: &Models) -> Result<()> {
    let EvalArgs {
        images,
        codecs,
        targets,
        anchor,
        rate_tolerance,
        no_butteraugli,
        no_realism,
        fixed,
        jobs,
        crops,
        out_dir,
    } = args;
    {
        {
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
            let mut ultralow: Option<UltralowUnderTest> = None;
            for name in &names {
                if mirage_codecs.iter().any(|m| m.name() == *name)
                    || classic.iter().any(|c: &ClassicCodec| c.name() == *name)
                    || (ultralow.is_some() && name == "mirage-ultralow")
                {
                    continue;
                }
                if name == "mirage-ultralow" {
                    let (codec, add_ons) = load_codec(models)?;
                    ultralow = Some(UltralowUnderTest::new(codec, add_ons)?);
                } else if name == "mirage" {
                    mirage_codecs.push(MirageUnderTest::new(load_codec(models)?.0));
                } else if let Some(w) = realism_variant(name)? {
                    let (codec, add_ons) = load_codec(models)?;
                    mirage_codecs.push(MirageUnderTest::with_realism(codec, add_ons, w)?);
                } else {
                    classic.push(ClassicCodec::by_name(name).with_context(|| {
                        format!(
                            "unknown codec {name} (known: mirage, mirage-wW for the realism \
                             decoder at weight W, mirage-ultralow, {})",
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
            under_test.extend(ultralow.iter().map(|u| u as &dyn CodecUnderTest));
            under_test.extend(classic.iter().map(|c| c as &dyn CodecUnderTest));
            let paths = if images.is_dir() {
                suite::image_paths(&images)?
            } else {
                vec![images]
            };
            let crop_images = if crops.iter().any(|c| c == "all") {
                paths
                    .iter()
                    .map(|p| {
                        p.file_name()
                            .unwrap_or_default()
                            .to_string_lossy()
                            .into_owned()
                    })
                    .collect()
            } else {
                crops
            };
            let options = EvalOptions {
                targets_bpp: targets,
                butteraugli: !no_butteraugli,
                rate_tolerance: rate_tolerance / 100.0,
                anchor: Some(anchor),
                jobs: jobs.unwrap_or(0),
                crop_images,
                ..EvalOptions::default()
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
            let naturalness = if no_realism {
                None
            } else {
                let path = mirage_realism_measure::naturalness::default_model_path();
                let model = mirage_realism_measure::naturalness::NaturalnessModel::load(&path)
                    .context("the naturalness model (or pass --no-realism)")?;
                Some(NaturalnessSetMeasure::new(model))
            };
            let mut set_measures: Vec<&dyn SetMeasure> =
                realism.iter().map(|m| m as &dyn SetMeasure).collect();
            set_measures.extend(naturalness.iter().map(|m| m as &dyn SetMeasure));
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
    }
}

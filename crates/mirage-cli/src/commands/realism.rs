//! `mirage realism distance|validate|fit-naturalness|naturalness`: the realism measure
//! (MFD/MKD) and the no-reference naturalness score on images.

use crate::{load_codec, Models};
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use mirage::image_io::{read_image, write_atomically};
use mirage_eval::suite;
use mirage_realism_measure::naturalness::{self, NaturalnessModel};
use mirage_realism_measure::{default_extractor_path, validate, RealismMeasure};
use std::path::PathBuf;

#[derive(Subcommand)]
pub(crate) enum RealismCommand {
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
        /// Realism generators whose w = 1 decodes join the table, as CORE:GENERATOR
        /// (repeatable; default: v1's pair, which draws marks, and the shipped pair).
        #[arg(long = "generator", value_name = "CORE:GENERATOR")]
        generators: Vec<String>,
        /// The rate of the generators' files.
        #[arg(long, default_value_t = 0.12)]
        generator_bpp: f64,
        /// Naturalness model (default: models/naturalness.safetensors).
        #[arg(long)]
        naturalness_model: Option<PathBuf>,
        #[arg(long, default_value = "docs")]
        out_dir: PathBuf,
        /// Replace existing output files.
        #[arg(long)]
        force: bool,
    },
    /// Fit the naturalness model (NIQE-like photo statistics) on sharp patches of the
    /// training photos and write it (models/naturalness.safetensors by default).
    FitNaturalness {
        #[arg(long, default_value = "../shared/data/train")]
        data: PathBuf,
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Naturalness score of every image in a folder (no reference; lower is more natural).
    Naturalness {
        images: PathBuf,
        /// Model file (default: models/naturalness.safetensors, or $MIRAGE_NATURALNESS_MODEL).
        #[arg(long)]
        model: Option<PathBuf>,
    },
}

fn hex(id: &[u8; 8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn run(command: RealismCommand, models: &Models) -> Result<()> {
    let load_measure = |extractor: &Option<PathBuf>| -> Result<RealismMeasure> {
        let path = extractor.clone().unwrap_or_else(default_extractor_path);
        RealismMeasure::load(&path).with_context(|| {
            format!(
                "no realism extractor at {}; train one with `mirage train extractor` and `mirage export extractor`",
                path.display()
            )
        })
    };
    match command {
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
            generators,
            generator_bpp,
            naturalness_model,
            out_dir,
            force,
        } => {
            let measure = load_measure(&extractor)?;
            let naturalness = NaturalnessModel::load(
                &naturalness_model.unwrap_or_else(naturalness::default_model_path),
            )?;
            let generators = if generators.is_empty() {
                let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
                let pair = |core: &str, g: &str| {
                    format!("{}:{}", root.join(core).display(), root.join(g).display())
                };
                vec![
                    pair("v1/hyperprior.safetensors", "v1/realism.safetensors"),
                    pair("hyperprior.safetensors", "realism.safetensors"),
                ]
            } else {
                generators
            };
            let mut loaded = vec![];
            for spec in &generators {
                let (core, generator) = spec
                    .split_once(':')
                    .with_context(|| format!("--generator {spec}: expected CORE:GENERATOR"))?;
                let codec = mirage::codec::Codec::load(std::path::Path::new(core))?;
                let decoder = mirage::decoders::RealismDecoder::load(
                    std::path::Path::new(generator),
                    &codec,
                )?;
                loaded.push((codec, decoder));
            }
            let sets: Vec<validate::GeneratorSet> = loaded
                .iter()
                .map(|(codec, decoder)| validate::GeneratorSet {
                    label: format!(
                        "generator {} on core {}",
                        hex(&decoder.id),
                        hex(&codec.id())
                    ),
                    codec,
                    generator: decoder,
                })
                .collect();
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
                Some(load_codec(models)?.0)
            };
            let result = validate::validate(
                &measure,
                Some(&naturalness),
                &originals,
                codec.as_ref().map(|c| (c, mirage_quality)),
                &sets,
                generator_bpp,
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
        RealismCommand::FitNaturalness { data, out, force } => {
            let out = out.unwrap_or_else(naturalness::default_model_path);
            if out.exists() && !force {
                bail!("{} exists (use --force to replace it)", out.display());
            }
            // The training photos without the validation share (every 50th), as every
            // other trained part of Mirage uses them.
            let photos = mirage_train::data::Dataset::load(&data, naturalness::PATCH as u32)?.train;
            let model = NaturalnessModel::fit(&photos)?;
            model.save(&out)?;
            println!(
                "fitted on {} sharp patches of {} photos; wrote {}",
                model.patches,
                model.photos,
                out.display()
            );
            Ok(())
        }
        RealismCommand::Naturalness { images, model } => {
            let model =
                NaturalnessModel::load(&model.unwrap_or_else(naturalness::default_model_path))?;
            let mut total = 0.0;
            let paths = suite::image_paths(&images)?;
            for path in &paths {
                let score = model.score(&read_image(path)?.image)?;
                println!("{}\t{score:.3}", path.display());
                total += score;
            }
            println!("mean\t{:.3}", total / paths.len().max(1) as f64);
            Ok(())
        }
    }
}

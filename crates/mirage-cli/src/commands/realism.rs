//! `mirage realism distance|validate`: the realism measure (MFD/MKD) on images.

use crate::{load_codec, Models};
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use mirage::image_io::{read_image, write_atomically};
use mirage_eval::suite;
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
        #[arg(long, default_value = "docs")]
        out_dir: PathBuf,
        /// Replace existing output files.
        #[arg(long)]
        force: bool,
    },
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
                Some(load_codec(models)?.0)
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

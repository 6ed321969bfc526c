//! `mirage study ...`: the preference study web app, and `study pool`, the decodes it serves.

use crate::{load_codec, Models};
use anyhow::Result;
use clap::Subcommand;
use mirage_cli::comparison::Column;
use mirage_eval::suite;
use std::path::PathBuf;

#[derive(Subcommand)]
pub(crate) enum StudyGroup {
    /// Write a preference-study pool: each image encoded once at a target bpp and
    /// decoded by each condition, for `mirage study serve --pool DIR`.
    Pool {
        #[arg(long, default_value = "../shared/data/kodak")]
        images: PathBuf,
        #[arg(long, default_value_t = 0.1)]
        bpp: f64,
        /// Conditions: realism weights (`0`, `1`), `auto` (ConHa map), `fixed`
        /// (ConHa-fixed), `flowN`, or a classic codec at the largest file no bigger than
        /// Mirage's (`avif`, `jxl`, `webp`, `jpeg`, `heic`).
        #[arg(long, value_delimiter = ',', default_value = "0,1,auto,fixed", value_parser = Column::parse)]
        conditions: Vec<Column>,
        /// The pool folder (default: study-pools/conha-<bpp>).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        force: bool,
    },
    #[command(flatten)]
    App(mirage_study::cli::StudyCommand),
}

pub(crate) fn run(command: StudyGroup, models: &Models) -> Result<()> {
    match command {
        StudyGroup::App(command) => Ok(mirage_study::cli::run(command)?),
        StudyGroup::Pool {
            images,
            bpp,
            conditions,
            out,
            force,
        } => {
            let (codec, add_ons) = load_codec(models)?;
            let out = out.unwrap_or_else(|| PathBuf::from(format!("study-pools/conha-{bpp}")));
            let paths = suite::image_paths(&images)?;
            mirage_cli::study_pool::write(&codec, &add_ons, &paths, bpp, &conditions, &out, force)?;
            eprintln!(
                "wrote {}; serve it with: scripts/mirage study serve --pool {}",
                out.display(),
                out.display()
            );
            Ok(())
        }
    }
}

//! The preference study: `study ...` (the web app) and `study-pool` (its decodes).

use crate::args::*;
use crate::{load_codec, Models};
use anyhow::Result;
use mirage_eval::suite;
use std::path::PathBuf;

pub(crate) fn run(command: Command, models: &Models) -> Result<()> {
    match command {
        Command::Study { command } => Ok(mirage_study::cli::run(command)?),
        Command::StudyPool {
            images,
            bpp,
            conditions,
            out,
            force,
        } => {
            let codec = load_codec(models)?;
            let out = out.unwrap_or_else(|| PathBuf::from(format!("study-pools/conha-{bpp}")));
            let paths = suite::image_paths(&images)?;
            mirage_cli::study_pool::write(&codec, &paths, bpp, &conditions, &out, force)?;
            eprintln!(
                "wrote {}; serve it with: scripts/mirage study serve --pool {}",
                out.display(),
                out.display()
            );
            Ok(())
        }
        _ => unreachable!("not a command of this group"),
    }
}

//! The `mirage` command line: flags and glue only; the work is in the library.
//! Every error is printed once, as `mirage: <message>`, with exit status 1.

mod args;
mod commands;

use anyhow::Result;
use mirage::codec::{default_model_path, Codec};
use mirage::decoders::{AddOns, RealismDecoder};
use std::path::PathBuf;

use args::{Cli, Command};
use clap::Parser;

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

/// The core asked for, and the decoder add-ons that fit it: the realism generator
/// asked for (which must fit), else the bundled ones made for this core.
fn load_codec(models: &Models) -> Result<(Codec, AddOns)> {
    let path = models.model.clone().unwrap_or_else(default_model_path);
    let codec = Codec::load(&path)?;
    let mut add_ons = AddOns::bundled(&codec)?;
    if let Some(realism) = &models.realism_model {
        // The ultra-low mode keeps the generator it was trained with; this one is the
        // core mode's.
        add_ons.realism = Some(RealismDecoder::load(realism, &codec)?);
    }
    Ok((codec, add_ons))
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
        Command::Codec(command) => commands::codec::run(command, &models),
        Command::Eval(args) => commands::eval::run(args, &models),
        Command::Train { model } => commands::train::run(model, &models),
        Command::Export { model } => commands::export::run(model, &models),
        Command::Bench { what } => commands::bench::run(what, &models),
        Command::Study { command } => commands::study::run(command, &models),
        Command::Realism { command } => commands::realism::run(command, &models),
    }
}

//! The `mirage` command line: flags and glue only; the work is in the library.
//! Every error is printed once, as `mirage: <message>`, with exit status 1.

mod args;
mod commands;

use anyhow::Result;
use mirage::codec::{default_flow_path, default_model_path, default_realism_path, Codec};
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
        Command::Codec(command) => commands::codec::run(command, &models),
        Command::Eval(args) => commands::eval::run(args, &models),
        Command::Train { model } => commands::train::run(model, &models),
        Command::Export { model } => commands::export::run(model, &models),
        Command::Bench { what } => commands::bench::run(what, &models),
        Command::Study { command } => commands::study::run(command, &models),
        Command::Realism { command } => commands::realism::run(command, &models),
    }
}

//! `mirage-study`: the preference study app without the rest of Mirage (no libtorch),
//! the same commands as `mirage study`. Errors are printed once, as
//! `mirage-study: <message>`, with exit status 1.

use clap::Parser;
use mirage_study::cli::{run, StudyCommand};

#[derive(Parser)]
#[command(
    name = "mirage-study",
    version,
    about = "Mirage preference study (2AFC web app, Elo scores)"
)]
struct Cli {
    #[command(subcommand)]
    command: StudyCommand,
}

fn main() {
    if let Err(e) = run(Cli::parse().command) {
        eprintln!("mirage-study: {e}");
        std::process::exit(1);
    }
}

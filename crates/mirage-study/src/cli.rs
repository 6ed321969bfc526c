//! The `study` command line, shared by `mirage study ...` and the `mirage-study`
//! binary: flags and glue only.

use crate::elo::EloOptions;
use crate::error::StudyError;
use crate::export::{scores_csv, votes_csv, write_atomically};
use crate::load_test::{self, LoadTestOptions};
use crate::scores;
use crate::server::{serve, ServeOptions};
use crate::store::Store;
use clap::Subcommand;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub enum StudyCommand {
    /// Serve the preference study web app.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
        /// SQLite database of studies and votes (created if missing).
        #[arg(long, default_value = "study.sqlite")]
        db: PathBuf,
        /// Pool folder to serve (repeatable); its folder name is the study id.
        #[arg(long)]
        pool: Vec<PathBuf>,
        /// Bearer token for admin actions (≥ 16 characters); without one they are off.
        #[arg(long, env = "MIRAGE_STUDY_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// Hours a served pair's ticket stays valid for a vote.
        #[arg(long, default_value_t = 24.0)]
        ticket_hours: f64,
        /// Elo K factor.
        #[arg(long, default_value_t = 16.0)]
        elo_k: f64,
        /// Bootstrap rounds for the Elo intervals.
        #[arg(long, default_value_t = 1000)]
        elo_rounds: usize,
    },
    /// Write a study's votes and/or scores as CSV from the database.
    Export {
        #[arg(long, default_value = "study.sqlite")]
        db: PathBuf,
        #[arg(long)]
        study: String,
        /// Where to write every vote.
        #[arg(long)]
        votes: Option<PathBuf>,
        /// Where to write the Elo scores.
        #[arg(long)]
        scores: Option<PathBuf>,
        /// Replace existing output files.
        #[arg(long)]
        force: bool,
    },
    /// Start a local server, vote with many simulated raters, check that no vote was
    /// lost or counted twice and that bad requests were refused; print latencies.
    LoadTest {
        #[arg(long, default_value_t = 200)]
        raters: usize,
        #[arg(long, default_value_t = 10_000)]
        votes: usize,
        /// Images in the synthetic pool (4 conditions each).
        #[arg(long, default_value_t = 24)]
        images: usize,
        /// Do not fetch each pair's three images (measures votes alone).
        #[arg(long)]
        no_images: bool,
        /// Mean pause between a rater's votes in ms (uniform from 0 to twice this);
        /// 0 saturates the server.
        #[arg(long, default_value_t = 0)]
        think_ms: u64,
    },
}

pub fn run(command: StudyCommand) -> Result<(), StudyError> {
    match command {
        StudyCommand::Serve {
            addr,
            db,
            pool,
            admin_token,
            ticket_hours,
            elo_k,
            elo_rounds,
        } => {
            if !(ticket_hours > 0.0 && ticket_hours.is_finite()) {
                return Err(StudyError::Config("--ticket-hours must be positive".into()));
            }
            if !(elo_k > 0.0 && elo_k.is_finite()) || elo_rounds == 0 {
                return Err(StudyError::Config(
                    "--elo-k and --elo-rounds must be positive".into(),
                ));
            }
            serve(ServeOptions {
                addr,
                db,
                admin_token,
                pools: pool,
                ticket_ttl: Duration::from_secs_f64(ticket_hours * 3600.0),
                elo: EloOptions {
                    k: elo_k,
                    rounds: elo_rounds,
                    ..EloOptions::default()
                },
            })
        }
        StudyCommand::Export {
            db,
            study,
            votes,
            scores: scores_path,
            force,
        } => {
            if votes.is_none() && scores_path.is_none() {
                return Err(StudyError::Config(
                    "say what to export: --votes FILE and/or --scores FILE".into(),
                ));
            }
            if !db.exists() {
                return Err(StudyError::Io {
                    path: db,
                    source: std::io::ErrorKind::NotFound.into(),
                });
            }
            // Check every output first, so a refusal leaves nothing half exported.
            for path in votes.iter().chain(scores_path.iter()) {
                if path.exists() && !force {
                    return Err(StudyError::OutputExists(path.clone()));
                }
            }
            let store = Store::open(&db, i64::MAX)?;
            if store.summary(&study)?.is_none() {
                return Err(StudyError::UnknownStudy(study));
            }
            if let Some(path) = votes {
                write_atomically(&path, votes_csv(&store.votes(&study)?).as_bytes(), force)?;
                eprintln!("wrote {}", path.display());
            }
            if let Some(path) = scores_path {
                let s = scores::compute(&store, &study, &EloOptions::default())?;
                write_atomically(&path, scores_csv(&s).as_bytes(), force)?;
                eprintln!("wrote {}", path.display());
            }
            Ok(())
        }
        StudyCommand::LoadTest {
            raters,
            votes,
            images,
            no_images,
            think_ms,
        } => {
            let report = load_test::run_blocking(&LoadTestOptions {
                raters,
                votes,
                images,
                fetch_images: !no_images,
                think: Duration::from_millis(think_ms),
            })?;
            print!("{report}");
            if report.passed() {
                Ok(())
            } else {
                Err(StudyError::LoadTest("see the table above".into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    /// The same nesting as `mirage study ...` and `mirage-study ...`.
    #[derive(Parser)]
    struct Host {
        #[command(subcommand)]
        command: StudyCommand,
    }

    #[test]
    fn flags_are_consistent_and_parse() {
        Host::command().debug_assert();
        let host = Host::try_parse_from([
            "mirage-study",
            "serve",
            "--pool",
            "a",
            "--pool",
            "b",
            "--admin-token",
            "0123456789abcdef",
        ])
        .unwrap();
        match host.command {
            StudyCommand::Serve {
                pool, admin_token, ..
            } => {
                assert_eq!(pool, vec![PathBuf::from("a"), PathBuf::from("b")]);
                assert_eq!(admin_token.as_deref(), Some("0123456789abcdef"));
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(Host::try_parse_from(["mirage-study", "load-test", "--raters", "x"]).is_err());
    }
}

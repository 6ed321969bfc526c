//! Mirage's preference study (issue 5): a blind two-alternative forced-choice web app,
//! as in ConHa's user study, with votes in SQLite and bootstrapped Elo scores.
//!
//! No libtorch here: the app serves images a codec already made (a *pool*), so it
//! builds and tests on its own. Modules, one concept each:
//! - [`pool`]: the pool folder layout and which pairs to compare;
//! - [`ticket`]: single-use random tickets that make votes unforgeable;
//! - [`store`]: the SQLite database of studies, pairs, tickets and votes;
//! - [`elo`]: online Elo and its bootstrap; [`scores`]: a study's results;
//! - [`admin`]: the bearer token for admin actions;
//! - [`api`]: request validation and error responses; [`server`]: routes and startup;
//! - [`export`]: CSV files; [`load_test`]: many simulated raters and an audit;
//! - [`cli`]: the `study` subcommands.
//!
//! ```no_run
//! use mirage_study::server::{serve, ServeOptions};
//! serve(ServeOptions {
//!     pools: vec!["study-pool/kodak-0.1".into()],
//!     admin_token: std::env::var("MIRAGE_STUDY_TOKEN").ok(),
//!     ..ServeOptions::default()
//! })?;
//! # Ok::<(), mirage_study::StudyError>(())
//! ```

pub mod admin;
pub mod api;
pub mod cli;
pub mod elo;
pub mod error;
pub mod export;
pub mod load_test;
pub mod pool;
pub mod scores;
pub mod server;
pub mod store;
pub mod ticket;

pub use error::StudyError;
pub use server::{serve, start, RunningServer, ServeOptions};

//! The study's errors, split by who can fix them: the pool's author, the operator
//! (paths, addresses, the database), or the load test's findings.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StudyError {
    /// The pool folder is not laid out as documented in [`crate::pool`].
    #[error("pool {}: {reason}", dir.display())]
    Pool { dir: PathBuf, reason: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("study {0:?} already exists")]
    StudyExists(String),
    #[error("no study named {0:?}")]
    UnknownStudy(String),
    #[error("study id {0:?} must be 1–64 characters of A-Z a-z 0-9 . _ -")]
    BadStudyId(String),
    #[error("{} exists; pass --force to replace it", .0.display())]
    OutputExists(PathBuf),
    /// A setting that cannot work (a short admin token, a clashing study name).
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    /// A load-test check that did not hold (lost or duplicated votes, an accepted forgery).
    #[error("load test failed: {0}")]
    LoadTest(String),
}

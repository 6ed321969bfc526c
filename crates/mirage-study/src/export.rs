//! CSV exports of votes and scores, and writing them to files atomically.

use crate::error::StudyError;
use crate::scores::Scores;
use crate::store::VoteRecord;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

pub fn votes_csv(votes: &[VoteRecord]) -> String {
    let mut out =
        String::from("id,created_at_ms,image,shown_a,shown_b,choice,winner,loser,rater\n");
    for v in votes {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{}",
            v.id,
            v.created_at_ms,
            field(&v.image),
            field(&v.shown_a),
            field(&v.shown_b),
            field(&v.choice),
            field(&v.winner),
            field(&v.loser),
            field(v.rater.as_deref().unwrap_or(""))
        );
    }
    out
}

pub fn scores_csv(scores: &Scores) -> String {
    let mut out = String::from("condition,elo,ci_low,ci_high,wins,losses,mean_bpp\n");
    for c in &scores.conditions {
        let _ = writeln!(
            out,
            "{},{:.1},{:.1},{:.1},{},{},{}",
            field(&c.score.condition),
            c.score.elo,
            c.score.ci_low,
            c.score.ci_high,
            c.score.wins,
            c.score.losses,
            c.mean_bpp.map(|b| format!("{b:.4}")).unwrap_or_default()
        );
    }
    out
}

/// Quotes a field if it needs it. Names are validated to a safe alphabet on the way
/// in, so this is a second line of defence; a leading `=`, `+`, `-` or `@` is quoted
/// with a `'` so a spreadsheet never runs it as a formula.
fn field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename,
/// so a reader never sees half a file; refuses to replace an existing file unless
/// `force`.
pub fn write_atomically(path: &Path, bytes: &[u8], force: bool) -> Result<(), StudyError> {
    if path.exists() && !force {
        return Err(StudyError::OutputExists(path.to_path_buf()));
    }
    let io = |source| StudyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    if force {
        tmp.persist(path).map_err(|e| io(e.error))?;
    } else {
        // persist_noclobber: a file that appeared since the check above is still kept.
        tmp.persist_noclobber(path).map_err(|e| io(e.error))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_when_needed() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field("=1+1"), "'=1+1");
    }

    #[test]
    fn existing_files_are_kept_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("votes.csv");
        write_atomically(&path, b"one", false).unwrap();
        assert!(matches!(
            write_atomically(&path, b"two", false),
            Err(StudyError::OutputExists(_))
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        write_atomically(&path, b"three", true).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"three");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}

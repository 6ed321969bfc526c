//! The vote database: SQLite, one file, opened by one server process.
//!
//! One connection behind a mutex serialises every write. SQLite allows one writer at
//! a time anyway, and a single connection makes "check the ticket, mark it used,
//! record the vote" one transaction with no interleaving, which is the whole
//! no-double-count argument. WAL with `synchronous = NORMAL` keeps a commit cheap; a
//! power cut may lose the last few commits but never corrupts the file or splits a
//! vote from its ticket.

use crate::elo::Outcome;
use crate::error::StudyError;
use crate::pool::{valid_name, Pool, ORIGINAL};
use crate::ticket::{new_ticket, TicketRefusal};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS studies (
    id TEXT PRIMARY KEY,
    pool_dir TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    study TEXT NOT NULL REFERENCES studies(id),
    image TEXT NOT NULL,
    condition TEXT NOT NULL,
    path TEXT NOT NULL,
    bpp REAL,
    PRIMARY KEY (study, image, condition)
);
CREATE TABLE IF NOT EXISTS pairs (
    id INTEGER PRIMARY KEY,
    study TEXT NOT NULL REFERENCES studies(id),
    image TEXT NOT NULL,
    condition_a TEXT NOT NULL,
    condition_b TEXT NOT NULL,
    votes INTEGER NOT NULL DEFAULT 0,
    issued INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS pairs_by_study ON pairs (study, votes, issued);
CREATE TABLE IF NOT EXISTS tickets (
    token TEXT PRIMARY KEY,
    study TEXT NOT NULL REFERENCES studies(id),
    pair_id INTEGER NOT NULL REFERENCES pairs(id),
    shown_a TEXT NOT NULL,
    shown_b TEXT NOT NULL,
    issued_at INTEGER NOT NULL,
    used_at INTEGER
);
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY,
    study TEXT NOT NULL REFERENCES studies(id),
    pair_id INTEGER NOT NULL REFERENCES pairs(id),
    ticket TEXT NOT NULL UNIQUE REFERENCES tickets(token),
    image TEXT NOT NULL,
    shown_a TEXT NOT NULL,
    shown_b TEXT NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ('a', 'b')),
    winner TEXT NOT NULL,
    loser TEXT NOT NULL,
    rater TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS votes_by_study ON votes (study);
";

/// Which of the two reconstructions the rater preferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    A,
    B,
}

impl Choice {
    pub fn as_str(self) -> &'static str {
        match self {
            Choice::A => "a",
            Choice::B => "b",
        }
    }
}

/// An image a ticket lets the browser load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    Original,
    A,
    B,
}

/// A pair handed to a rater. Condition names stay on the server: the page only ever
/// sees the ticket and the image name, so the study is blind.
#[derive(Debug, Clone, Serialize)]
pub struct IssuedPair {
    pub ticket: String,
    pub image: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StudySummary {
    pub id: String,
    pub pool_dir: String,
    pub images: u64,
    pub pairs: u64,
    pub votes: u64,
}

/// One recorded vote, as exported.
#[derive(Debug, Clone, Serialize)]
pub struct VoteRecord {
    pub id: i64,
    pub created_at_ms: i64,
    pub image: String,
    pub shown_a: String,
    pub shown_b: String,
    pub choice: String,
    pub winner: String,
    pub loser: String,
    pub rater: Option<String>,
}

pub struct Store {
    conn: Mutex<Connection>,
    ticket_ttl_ms: i64,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Store {
    /// Opens (creating if needed) the database at `path`. Tickets older than
    /// `ticket_ttl_ms` no longer allow a vote.
    pub fn open(path: &Path, ticket_ttl_ms: i64) -> Result<Store, StudyError> {
        let conn = Connection::open(path)?;
        Self::init(conn, ticket_ttl_ms)
    }

    /// A throwaway in-memory database (tests).
    pub fn in_memory(ticket_ttl_ms: i64) -> Result<Store, StudyError> {
        Self::init(Connection::open_in_memory()?, ticket_ttl_ms)
    }

    fn init(conn: Connection, ticket_ttl_ms: i64) -> Result<Store, StudyError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store {
            conn: Mutex::new(conn),
            ticket_ttl_ms,
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-done transaction behind
        // (rusqlite rolls back on drop), so a poisoned lock is still safe to use.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes a study from a scanned pool.
    pub fn create_study(&self, id: &str, pool: &Pool) -> Result<StudySummary, StudyError> {
        if !valid_name(id) {
            return Err(StudyError::BadStudyId(id.to_string()));
        }
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let exists: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM studies WHERE id = ?1)",
            [id],
            |r| r.get(0),
        )?;
        if exists {
            return Err(StudyError::StudyExists(id.to_string()));
        }
        tx.execute(
            "INSERT INTO studies (id, pool_dir, created_at) VALUES (?1, ?2, ?3)",
            params![id, pool.dir.to_string_lossy(), now_ms()],
        )?;
        for f in &pool.files {
            tx.execute(
                "INSERT INTO files (study, image, condition, path, bpp) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, f.image, f.condition, f.path.to_string_lossy(), f.bpp],
            )?;
        }
        for p in &pool.pairs {
            tx.execute(
                "INSERT INTO pairs (study, image, condition_a, condition_b) VALUES (?1, ?2, ?3, ?4)",
                params![id, p.image, p.a, p.b],
            )?;
        }
        tx.commit()?;
        drop(conn);
        self.summary(id)?
            .ok_or_else(|| StudyError::UnknownStudy(id.to_string()))
    }

    pub fn studies(&self) -> Result<Vec<StudySummary>, StudyError> {
        let ids: Vec<String> = {
            let conn = self.conn();
            let mut stmt = conn.prepare("SELECT id FROM studies ORDER BY id")?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut out = vec![];
        for id in ids {
            out.extend(self.summary(&id)?);
        }
        Ok(out)
    }

    pub fn summary(&self, id: &str) -> Result<Option<StudySummary>, StudyError> {
        let conn = self.conn();
        let pool_dir: Option<String> = conn
            .query_row("SELECT pool_dir FROM studies WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(pool_dir) = pool_dir else {
            return Ok(None);
        };
        let count = |sql: &str| conn.query_row(sql, [id], |r| r.get::<_, i64>(0).map(|n| n as u64));
        Ok(Some(StudySummary {
            id: id.to_string(),
            pool_dir,
            images: count("SELECT COUNT(DISTINCT image) FROM files WHERE study = ?1")?,
            pairs: count("SELECT COUNT(*) FROM pairs WHERE study = ?1")?,
            votes: count("SELECT COUNT(*) FROM votes WHERE study = ?1")?,
        }))
    }

    /// Serves the least-voted pair of a study (ties: the one handed out least, then at
    /// random, so concurrent raters spread over pairs), with A and B sides at random.
    /// `None` if the study does not exist.
    pub fn issue_pair(&self, study: &str) -> Result<Option<IssuedPair>, StudyError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let pair: Option<(i64, String, String, String)> = tx
            .query_row(
                "SELECT id, image, condition_a, condition_b FROM pairs WHERE study = ?1
                 ORDER BY votes, issued, random() LIMIT 1",
                [study],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((pair_id, image, a, b)) = pair else {
            return Ok(None);
        };
        let (shown_a, shown_b) = if rand::random::<bool>() {
            (a, b)
        } else {
            (b, a)
        };
        let ticket = new_ticket();
        tx.execute(
            "UPDATE pairs SET issued = issued + 1 WHERE id = ?1",
            [pair_id],
        )?;
        tx.execute(
            "INSERT INTO tickets (token, study, pair_id, shown_a, shown_b, issued_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![ticket, study, pair_id, shown_a, shown_b, now_ms()],
        )?;
        tx.commit()?;
        Ok(Some(IssuedPair { ticket, image }))
    }

    /// The file behind one image of a ticket's pair, while the ticket is not expired
    /// (used tickets still load, so a slow image can finish after a fast vote).
    pub fn ticket_image(&self, ticket: &str, shown: Shown) -> Result<Option<PathBuf>, StudyError> {
        let conn = self.conn();
        let path: Option<String> = conn
            .query_row(
                "SELECT f.path FROM tickets t
                 JOIN pairs p ON p.id = t.pair_id
                 JOIN files f ON f.study = t.study AND f.image = p.image
                   AND f.condition = CASE ?2 WHEN 'a' THEN t.shown_a WHEN 'b' THEN t.shown_b ELSE ?3 END
                 WHERE t.token = ?1 AND ?4 - t.issued_at <= ?5",
                params![
                    ticket,
                    match shown {
                        Shown::A => "a",
                        Shown::B => "b",
                        Shown::Original => "o",
                    },
                    ORIGINAL,
                    now_ms(),
                    self.ticket_ttl_ms
                ],
                |r| r.get(0),
            )
            .optional()?;
        Ok(path.map(PathBuf::from))
    }

    /// Records a vote if `ticket` was issued by `study`, is unused and unexpired; the
    /// ticket is marked used in the same transaction. Returns the vote's id.
    pub fn record_vote(
        &self,
        study: &str,
        ticket: &str,
        choice: Choice,
        rater: Option<&str>,
    ) -> Result<Result<i64, TicketRefusal>, StudyError> {
        self.record_vote_at(study, ticket, choice, rater, now_ms())
    }

    fn record_vote_at(
        &self,
        study: &str,
        ticket: &str,
        choice: Choice,
        rater: Option<&str>,
        now: i64,
    ) -> Result<Result<i64, TicketRefusal>, StudyError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row: Option<(String, i64, String, String, i64, Option<i64>)> = tx
            .query_row(
                "SELECT study, pair_id, shown_a, shown_b, issued_at, used_at FROM tickets WHERE token = ?1",
                [ticket],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
            )
            .optional()?;
        let Some((ticket_study, pair_id, shown_a, shown_b, issued_at, used_at)) = row else {
            return Ok(Err(TicketRefusal::Unknown));
        };
        // A ticket from another study is as good as forged here.
        if ticket_study != study {
            return Ok(Err(TicketRefusal::Unknown));
        }
        if used_at.is_some() {
            return Ok(Err(TicketRefusal::Used));
        }
        if now - issued_at > self.ticket_ttl_ms {
            return Ok(Err(TicketRefusal::Expired));
        }
        let (winner, loser) = match choice {
            Choice::A => (&shown_a, &shown_b),
            Choice::B => (&shown_b, &shown_a),
        };
        let image: String =
            tx.query_row("SELECT image FROM pairs WHERE id = ?1", [pair_id], |r| {
                r.get(0)
            })?;
        tx.execute(
            "UPDATE tickets SET used_at = ?2 WHERE token = ?1 AND used_at IS NULL",
            params![ticket, now],
        )?;
        tx.execute(
            "INSERT INTO votes (study, pair_id, ticket, image, shown_a, shown_b, choice, winner, loser, rater, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![study, pair_id, ticket, image, shown_a, shown_b, choice.as_str(), winner, loser, rater, now],
        )?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "UPDATE pairs SET votes = votes + 1 WHERE id = ?1",
            [pair_id],
        )?;
        tx.commit()?;
        Ok(Ok(id))
    }

    pub fn votes(&self, study: &str) -> Result<Vec<VoteRecord>, StudyError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, created_at, image, shown_a, shown_b, choice, winner, loser, rater
             FROM votes WHERE study = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([study], |r| {
            Ok(VoteRecord {
                id: r.get(0)?,
                created_at_ms: r.get(1)?,
                image: r.get(2)?,
                shown_a: r.get(3)?,
                shown_b: r.get(4)?,
                choice: r.get(5)?,
                winner: r.get(6)?,
                loser: r.get(7)?,
                rater: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn outcomes(&self, study: &str) -> Result<Vec<Outcome>, StudyError> {
        Ok(self
            .votes(study)?
            .into_iter()
            .map(|v| Outcome {
                winner: v.winner,
                loser: v.loser,
            })
            .collect())
    }

    /// Mean bpp per condition over the files that have one.
    pub fn mean_bpp(&self, study: &str) -> Result<Vec<(String, f64)>, StudyError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT condition, AVG(bpp) FROM files WHERE study = ?1 AND bpp IS NOT NULL GROUP BY condition",
        )?;
        let rows = stmt.query_map([study], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The tickets behind a study's votes (for the load test's audit).
    pub fn voted_tickets(&self, study: &str) -> Result<Vec<String>, StudyError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT ticket FROM votes WHERE study = ?1")?;
        let rows = stmt.query_map([study], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Counts used to check the load test: (votes, distinct tickets among votes, used tickets).
    pub fn vote_integrity(&self, study: &str) -> Result<(u64, u64, u64), StudyError> {
        let conn = self.conn();
        Ok(conn.query_row(
            "SELECT (SELECT COUNT(*) FROM votes WHERE study = ?1),
                    (SELECT COUNT(DISTINCT ticket) FROM votes WHERE study = ?1),
                    (SELECT COUNT(*) FROM tickets WHERE study = ?1 AND used_at IS NOT NULL)",
            [study],
            |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                ))
            },
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::{PoolFile, PoolPair};

    fn tiny_pool() -> Pool {
        let file = |c: &str| PoolFile {
            image: "img".into(),
            condition: c.into(),
            path: PathBuf::from(format!("/pool/img/{c}.png")),
            bpp: Some(0.1),
        };
        Pool {
            dir: PathBuf::from("/pool"),
            files: vec![file("original"), file("x"), file("y"), file("z")],
            pairs: vec![
                PoolPair {
                    image: "img".into(),
                    a: "x".into(),
                    b: "y".into(),
                },
                PoolPair {
                    image: "img".into(),
                    a: "x".into(),
                    b: "z".into(),
                },
                PoolPair {
                    image: "img".into(),
                    a: "y".into(),
                    b: "z".into(),
                },
            ],
        }
    }

    fn store() -> Store {
        let store = Store::in_memory(60_000).unwrap();
        store.create_study("s1", &tiny_pool()).unwrap();
        store
    }

    #[test]
    fn a_ticket_counts_once() {
        let store = store();
        let pair = store.issue_pair("s1").unwrap().unwrap();
        assert_eq!(
            store
                .record_vote("s1", &pair.ticket, Choice::A, None)
                .unwrap(),
            Ok(1)
        );
        assert_eq!(
            store
                .record_vote("s1", &pair.ticket, Choice::B, None)
                .unwrap(),
            Err(TicketRefusal::Used)
        );
        assert_eq!(store.vote_integrity("s1").unwrap(), (1, 1, 1));
    }

    #[test]
    fn forged_foreign_and_expired_tickets_are_refused() {
        let store = store();
        store.create_study("s2", &tiny_pool()).unwrap();
        assert_eq!(
            store
                .record_vote("s1", &new_ticket(), Choice::A, None)
                .unwrap(),
            Err(TicketRefusal::Unknown)
        );
        let other = store.issue_pair("s2").unwrap().unwrap();
        assert_eq!(
            store
                .record_vote("s1", &other.ticket, Choice::A, None)
                .unwrap(),
            Err(TicketRefusal::Unknown)
        );
        let pair = store.issue_pair("s1").unwrap().unwrap();
        let late = now_ms() + 60_001 + 1000;
        assert_eq!(
            store
                .record_vote_at("s1", &pair.ticket, Choice::A, None, late)
                .unwrap(),
            Err(TicketRefusal::Expired)
        );
        assert_eq!(store.vote_integrity("s1").unwrap(), (0, 0, 0));
        // The refused ticket is still good within its lifetime.
        assert!(store
            .record_vote("s1", &pair.ticket, Choice::A, None)
            .unwrap()
            .is_ok());
    }

    #[test]
    fn the_vote_follows_the_side_the_ticket_showed() {
        let store = store();
        for choice in [Choice::A, Choice::B, Choice::A, Choice::B] {
            let pair = store.issue_pair("s1").unwrap().unwrap();
            store
                .record_vote("s1", &pair.ticket, choice, Some("r1"))
                .unwrap()
                .unwrap();
        }
        for v in store.votes("s1").unwrap() {
            let (w, l) = if v.choice == "a" {
                (&v.shown_a, &v.shown_b)
            } else {
                (&v.shown_b, &v.shown_a)
            };
            assert_eq!((&v.winner, &v.loser), (w, l));
            assert_eq!(v.rater.as_deref(), Some("r1"));
        }
    }

    #[test]
    fn pairs_are_balanced_and_sides_random() {
        let store = store();
        let mut a_is_first_condition = 0;
        for _ in 0..300 {
            let pair = store.issue_pair("s1").unwrap().unwrap();
            store
                .record_vote("s1", &pair.ticket, Choice::A, None)
                .unwrap()
                .unwrap();
        }
        let votes = store.votes("s1").unwrap();
        let mut per_pair = std::collections::BTreeMap::new();
        for v in &votes {
            let mut key = [v.shown_a.clone(), v.shown_b.clone()];
            if key[0] < key[1] {
                a_is_first_condition += 1;
            }
            key.sort();
            *per_pair.entry(key).or_insert(0) += 1;
        }
        assert_eq!(
            per_pair.values().copied().collect::<Vec<_>>(),
            vec![100, 100, 100]
        );
        assert!(
            (100..200).contains(&a_is_first_condition),
            "{a_is_first_condition}"
        );
    }

    #[test]
    fn ticket_images_resolve_to_the_shown_conditions() {
        let store = store();
        let pair = store.issue_pair("s1").unwrap().unwrap();
        let original = store
            .ticket_image(&pair.ticket, Shown::Original)
            .unwrap()
            .unwrap();
        assert_eq!(original, PathBuf::from("/pool/img/original.png"));
        let a = store.ticket_image(&pair.ticket, Shown::A).unwrap().unwrap();
        let b = store.ticket_image(&pair.ticket, Shown::B).unwrap().unwrap();
        assert_ne!(a, b);
        store
            .record_vote("s1", &pair.ticket, Choice::A, None)
            .unwrap()
            .unwrap();
        let vote = &store.votes("s1").unwrap()[0];
        assert_eq!(a, PathBuf::from(format!("/pool/img/{}.png", vote.winner)));
        assert!(store
            .ticket_image(&new_ticket(), Shown::A)
            .unwrap()
            .is_none());
    }

    #[test]
    fn studies_are_unique_and_named_safely() {
        let store = store();
        assert!(matches!(
            store.create_study("s1", &tiny_pool()),
            Err(StudyError::StudyExists(_))
        ));
        assert!(matches!(
            store.create_study("../x", &tiny_pool()),
            Err(StudyError::BadStudyId(_))
        ));
        assert!(store.issue_pair("nope").unwrap().is_none());
        let s = store.summary("s1").unwrap().unwrap();
        assert_eq!((s.images, s.pairs, s.votes), (1, 3, 0));
    }
}

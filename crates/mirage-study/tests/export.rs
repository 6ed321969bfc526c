//! `mirage-study export`: CSV files from the database, written atomically, never over
//! an existing file without --force.

use mirage_study::cli::{run, StudyCommand};
use mirage_study::load_test::write_synthetic_pool;
use mirage_study::pool::Pool;
use mirage_study::store::{Choice, Store};
use mirage_study::StudyError;

#[test]
fn export_writes_votes_and_scores_and_keeps_existing_files() {
    let dir = tempfile::tempdir().unwrap();
    let pool = dir.path().join("pool");
    write_synthetic_pool(&pool, 2).unwrap();
    let db = dir.path().join("votes.sqlite");
    {
        let store = Store::open(&db, 60_000).unwrap();
        store
            .create_study("s", &Pool::scan(&pool).unwrap())
            .unwrap();
        for choice in [Choice::A, Choice::B, Choice::A] {
            let pair = store.issue_pair("s").unwrap().unwrap();
            store
                .record_vote("s", &pair.ticket, choice, None)
                .unwrap()
                .unwrap();
        }
    }
    let votes = dir.path().join("votes.csv");
    let scores = dir.path().join("scores.csv");
    let export = |study: &str, force: bool| {
        run(StudyCommand::Export {
            db: db.clone(),
            study: study.into(),
            votes: Some(votes.clone()),
            scores: Some(scores.clone()),
            force,
        })
    };
    export("s", false).unwrap();
    assert_eq!(std::fs::read_to_string(&votes).unwrap().lines().count(), 4);
    let score_lines = std::fs::read_to_string(&scores).unwrap();
    assert!(score_lines.starts_with("condition,elo,ci_low,ci_high,wins,losses,mean_bpp\n"));
    assert!(score_lines.lines().count() >= 3, "{score_lines}");

    std::fs::write(&votes, "mine").unwrap();
    assert!(matches!(
        export("s", false),
        Err(StudyError::OutputExists(_))
    ));
    assert_eq!(std::fs::read_to_string(&votes).unwrap(), "mine");
    export("s", true).unwrap();
    assert_eq!(std::fs::read_to_string(&votes).unwrap().lines().count(), 4);

    assert!(matches!(
        export("nope", true),
        Err(StudyError::UnknownStudy(_))
    ));
}

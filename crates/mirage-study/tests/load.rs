//! The load test at small scale: 20 concurrent raters, 500 votes, no vote lost or
//! counted twice, every malformed or forged request refused.

use mirage_study::load_test::{run, LoadTestOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_raters_five_hundred_votes() {
    let report = run(&LoadTestOptions {
        raters: 20,
        votes: 500,
        images: 4,
        fetch_images: true,
        think: std::time::Duration::ZERO,
    })
    .await
    .unwrap();
    println!("{report}");
    assert_eq!(report.accepted, 500);
    assert_eq!(report.in_db, 500);
    assert_eq!(report.distinct_tickets_in_db, 500);
    assert_eq!((report.lost, report.duplicated, report.errors), (0, 0, 0));
    assert!(report.probes.len() >= 12);
    for p in &report.probes {
        assert_eq!(p.got, p.expected, "{}", p.name);
    }
    assert!(report.passed());
    assert!(report.vote_latency.p50 <= report.vote_latency.p99);
}

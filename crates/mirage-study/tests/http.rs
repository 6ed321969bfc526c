//! The HTTP API against a real server on a random local port.

mod common;

use common::{call, server, JSON, TOKEN};
use mirage_study::store::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_pairs_votes_scores_and_exports() {
    let t = server(2).await;
    let addr = t.server.addr;
    let study = &t.study;

    for path in [
        "/",
        &format!("/study/{study}"),
        &format!("/study/{study}/results"),
    ] {
        let r = call(addr, "GET", path, &[], b"").await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.headers.contains("text/html"), "{path}");
    }
    for asset in ["study.js", "study.css", "results.js", "index.js"] {
        assert_eq!(
            call(addr, "GET", &format!("/assets/{asset}"), &[], b"")
                .await
                .status,
            200
        );
    }
    assert_eq!(call(addr, "GET", "/study/nope", &[], b"").await.status, 404);
    assert_eq!(
        call(addr, "GET", "/assets/../Cargo.toml", &[], b"")
            .await
            .status,
        404
    );

    let studies = call(addr, "GET", "/api/studies", &[], b"").await.json();
    assert_eq!(studies[0]["id"], "kodak");
    assert_eq!(
        studies[0]["pairs"], 12,
        "2 images × 6 pairs of 4 conditions"
    );

    // A pair: a ticket and three images, and no condition names anywhere.
    let pair = call(addr, "GET", &format!("/api/studies/{study}/pair"), &[], b"").await;
    assert_eq!(pair.status, 200);
    assert!(pair
        .headers
        .to_ascii_lowercase()
        .contains("cache-control: no-store"));
    assert!(
        !pair.text().contains("mirage") && !pair.text().contains("avif"),
        "{}",
        pair.text()
    );
    let pair = pair.json();
    let ticket = pair["ticket"].as_str().unwrap().to_string();
    for key in ["original", "a", "b"] {
        let image = call(addr, "GET", pair[key].as_str().unwrap(), &[], b"").await;
        assert_eq!(image.status, 200);
        assert!(image.headers.contains("image/png"));
        assert_eq!(&image.body[1..4], b"PNG");
    }

    let vote = format!(r#"{{"ticket":"{ticket}","choice":"a","rater":"tester"}}"#);
    let path = format!("/api/studies/{study}/votes");
    let first = call(addr, "POST", &path, &[JSON], vote.as_bytes()).await;
    assert_eq!(first.status, 201, "{}", first.text());
    let replay = call(addr, "POST", &path, &[JSON], vote.as_bytes()).await;
    assert_eq!(replay.status, 409);
    assert!(replay.json()["error"]
        .as_str()
        .unwrap()
        .contains("already been used"));

    // The database, read on its own, holds exactly that vote.
    let audit = Store::open(&t.db, i64::MAX).unwrap();
    let votes = audit.votes(study).unwrap();
    assert_eq!(votes.len(), 1);
    assert_eq!(votes[0].choice, "a");
    assert_eq!(votes[0].rater.as_deref(), Some("tester"));
    assert_eq!(votes[0].winner, votes[0].shown_a);

    let scores = call(
        addr,
        "GET",
        &format!("/api/studies/{study}/scores"),
        &[],
        b"",
    )
    .await
    .json();
    assert_eq!(scores["votes"], 1);
    let conditions = scores["conditions"].as_array().unwrap();
    assert_eq!(conditions.len(), 2);
    assert_eq!(conditions[0]["condition"], votes[0].winner.as_str());
    assert!(conditions[0]["elo"].as_f64().unwrap() > conditions[1]["elo"].as_f64().unwrap());
    // Scores are cached per vote count: a new vote must show up.
    let pair = call(addr, "GET", &format!("/api/studies/{study}/pair"), &[], b"")
        .await
        .json();
    let vote = format!(
        r#"{{"ticket":"{}","choice":"b","rater":"tester"}}"#,
        pair["ticket"].as_str().unwrap()
    );
    assert_eq!(
        call(addr, "POST", &path, &[JSON], vote.as_bytes())
            .await
            .status,
        201
    );
    let scores = call(
        addr,
        "GET",
        &format!("/api/studies/{study}/scores"),
        &[],
        b"",
    )
    .await
    .json();
    assert_eq!(scores["votes"], 2);
    let condition_count = scores["conditions"].as_array().unwrap().len();

    // Exports need the token.
    let export = format!("/api/admin/studies/{study}/votes.csv");
    assert_eq!(call(addr, "GET", &export, &[], b"").await.status, 401);
    let bearer = format!("Bearer {TOKEN}");
    let csv = call(addr, "GET", &export, &[("Authorization", &bearer)], b"").await;
    assert_eq!(csv.status, 200);
    assert!(csv.headers.contains("text/csv"));
    let lines: Vec<String> = csv.text().lines().map(String::from).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].starts_with("id,created_at_ms,image"));
    assert!(
        lines[1..].iter().all(|l| l.ends_with(",tester")),
        "{lines:?}"
    );
    let scores_csv = call(
        addr,
        "GET",
        &format!("/api/admin/studies/{study}/scores.csv"),
        &[("Authorization", &bearer)],
        b"",
    )
    .await;
    assert_eq!(scores_csv.text().lines().count(), 1 + condition_count);
    t.server.stop().await.unwrap();
}

/// Sends a request that must be refused with `status` and an error mentioning `message`.
async fn refused(
    addr: std::net::SocketAddr,
    (method, path): (&str, &str),
    headers: &[(&str, &str)],
    body: &[u8],
    status: u16,
    message: &str,
) {
    let r = call(addr, method, path, headers, body).await;
    assert_eq!(r.status, status, "{method} {path}: {}", r.text());
    let error = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        error.contains(message),
        "{method} {path}: {error:?} should contain {message:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_a_reason() {
    let t = server(1).await;
    let addr = t.server.addr;
    let path = format!("/api/studies/{}/votes", t.study);
    let bearer = format!("Bearer {TOKEN}");
    let unknown_image = format!("/api/tickets/{}/a.png", "0".repeat(32));
    let zeros = "0".repeat(32);
    let forged = format!(r#"{{"ticket":"{zeros}","choice":"a"}}"#);
    let wrong_choice = format!(r#"{{"ticket":"{zeros}","choice":"left"}}"#);
    let admin = [JSON, ("Authorization", bearer.as_str())];
    let wrong_admin = [JSON, ("Authorization", "Bearer wrong-token-0123456789")];
    let create_x = br#"{"id":"x","pool":"/"}"#;
    let unknown_study = "/api/studies/other/votes";
    refused(
        addr,
        ("POST", &path),
        &[JSON],
        b"{not json",
        400,
        "malformed JSON",
    )
    .await;
    refused(
        addr,
        ("POST", &path),
        &[JSON],
        br#"{"ticket":"00","choice":"a"}"#,
        400,
        "ticket must be",
    )
    .await;
    refused(
        addr,
        ("POST", &path),
        &[JSON],
        wrong_choice.as_bytes(),
        400,
        "choice must be",
    )
    .await;
    refused(
        addr,
        ("POST", &path),
        &[JSON],
        forged.as_bytes(),
        403,
        "unknown ticket",
    )
    .await;
    refused(
        addr,
        ("POST", &path),
        &[],
        forged.as_bytes(),
        415,
        "application/json",
    )
    .await;
    refused(
        addr,
        ("POST", &path),
        &[JSON],
        &[b' '; 5000],
        413,
        "over 4096 bytes",
    )
    .await;
    refused(
        addr,
        ("POST", unknown_study),
        &[JSON],
        forged.as_bytes(),
        404,
        "no study named",
    )
    .await;
    refused(
        addr,
        ("GET", "/api/studies/other/pair"),
        &[],
        b"",
        404,
        "no study named",
    )
    .await;
    refused(
        addr,
        ("GET", "/api/studies/other/scores"),
        &[],
        b"",
        404,
        "no study named",
    )
    .await;
    refused(
        addr,
        ("GET", &unknown_image),
        &[],
        b"",
        404,
        "unknown or expired",
    )
    .await;
    refused(
        addr,
        ("GET", "/api/tickets/zz/a.png"),
        &[],
        b"",
        400,
        "malformed ticket",
    )
    .await;
    refused(addr, ("GET", "/api/nothing"), &[], b"", 404, "no such page").await;
    refused(
        addr,
        ("POST", "/api/admin/studies"),
        &[JSON],
        create_x,
        401,
        "Bearer",
    )
    .await;
    refused(
        addr,
        ("POST", "/api/admin/studies"),
        &wrong_admin,
        create_x,
        401,
        "wrong admin token",
    )
    .await;
    let missing_pool = br#"{"id":"kodak","pool":"/nonexistent"}"#;
    refused(
        addr,
        ("POST", "/api/admin/studies"),
        &admin,
        missing_pool,
        400,
        "nonexistent",
    )
    .await;
    let bad_id = br#"{"id":"../up","pool":"/"}"#;
    refused(
        addr,
        ("POST", "/api/admin/studies"),
        &admin,
        bad_id,
        400,
        "study id",
    )
    .await;
    let no_id = br#"{"pool":"/"}"#;
    refused(
        addr,
        ("POST", "/api/admin/studies"),
        &admin,
        no_id,
        400,
        "missing field `id`",
    )
    .await;
    // A duplicate study is a conflict; a new one from a real pool is created.
    let pool = t.dir.path().join("kodak");
    let create = |id: &str| serde_json::json!({ "id": id, "pool": pool }).to_string();
    let dup = call(
        addr,
        "POST",
        "/api/admin/studies",
        &[JSON, ("Authorization", &bearer)],
        create("kodak").as_bytes(),
    )
    .await;
    assert_eq!(dup.status, 409, "{}", dup.text());
    let made = call(
        addr,
        "POST",
        "/api/admin/studies",
        &[JSON, ("Authorization", &bearer)],
        create("kodak-2").as_bytes(),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.text());
    assert_eq!(made.json()["pairs"], 6);
    // Nothing above was counted as a vote.
    assert_eq!(
        Store::open(&t.db, i64::MAX)
            .unwrap()
            .vote_integrity("kodak")
            .unwrap(),
        (0, 0, 0)
    );
    t.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_is_off_without_a_token_and_studies_survive_a_restart() {
    let t = server(1).await;
    let addr = t.server.addr;
    let pair = call(addr, "GET", "/api/studies/kodak/pair", &[], b"")
        .await
        .json();
    let vote = format!(
        r#"{{"ticket":"{}","choice":"b"}}"#,
        pair["ticket"].as_str().unwrap()
    );
    assert_eq!(
        call(
            addr,
            "POST",
            "/api/studies/kodak/votes",
            &[JSON],
            vote.as_bytes()
        )
        .await
        .status,
        201
    );
    t.server.stop().await.unwrap();

    // Same database and pool, no token: the vote is still there; admin is off.
    let again = mirage_study::start(mirage_study::ServeOptions {
        addr: "127.0.0.1:0".into(),
        db: t.db.clone(),
        admin_token: None,
        pools: vec![t.dir.path().join("kodak")],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(again.studies[0].votes, 1);
    let r = call(
        again.addr,
        "GET",
        "/api/admin/studies/kodak/votes.csv",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        b"",
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.json()["error"].as_str().unwrap().contains("disabled"));
    // The used ticket stays used across the restart.
    assert_eq!(
        call(
            again.addr,
            "POST",
            "/api/studies/kodak/votes",
            &[JSON],
            vote.as_bytes()
        )
        .await
        .status,
        409
    );
    again.stop().await.unwrap();
}

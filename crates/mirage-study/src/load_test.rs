//! The load test: a local server, many simulated raters voting at once, then checks
//! that every accepted vote is in the database exactly once and that malformed and
//! forged requests were refused.
//!
//! Each simulated rater does what the page does: fetch a pair, fetch its three
//! images, post a vote with the pair's ticket. A vote whose connection fails is
//! retried with the same ticket (a "409 already used" on a retry means the first
//! attempt landed), which is the page's own recovery rule.

use crate::error::StudyError;
use crate::server::{start, ServeOptions};
use crate::store::Store;
use crate::ticket::new_ticket;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::Rng;
use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A valid 1×1 PNG: the load test measures the server, not image decoding.
const TINY_PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x02, 0x00, 0x00, 0x00, 0x90, 0x77, 0x53,
    0xde, 0x00, 0x00, 0x00, 0x0c, 0x49, 0x44, 0x41, 0x54, 0x08, 0xd7, 0x63, 0xf8, 0xcf, 0xc0, 0x00,
    0x00, 0x03, 0x01, 0x01, 0x00, 0x18, 0xdd, 0x8d, 0xb0, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e,
    0x44, 0xae, 0x42, 0x60, 0x82,
];

const STUDY: &str = "load";
const OTHER_STUDY: &str = "load-other";

#[derive(Debug, Clone)]
pub struct LoadTestOptions {
    /// Concurrent simulated raters.
    pub raters: usize,
    /// Votes to cast in total.
    pub votes: usize,
    /// Images in the synthetic pool (each with 4 conditions, so 6 pairs).
    pub images: usize,
    /// Whether raters also fetch the three images of each pair, as the page does.
    pub fetch_images: bool,
    /// Mean pause between a rater's votes, drawn uniformly from 0 to twice this. 0
    /// (the default) is a closed loop with no pause: the server is saturated, and the
    /// latency is mostly time spent queueing behind the other raters.
    pub think: Duration,
}

impl Default for LoadTestOptions {
    fn default() -> Self {
        LoadTestOptions {
            raters: 200,
            votes: 10_000,
            images: 24,
            fetch_images: true,
            think: Duration::ZERO,
        }
    }
}

/// Percentiles of a latency sample.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Latency {
    fn of(mut sample: Vec<Duration>) -> Latency {
        if sample.is_empty() {
            return Latency::default();
        }
        sample.sort();
        let at = |q: f64| sample[((sample.len() - 1) as f64 * q).round() as usize];
        Latency {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

/// One malformed or forged request and what the server answered.
#[derive(Debug, Clone)]
pub struct Probe {
    pub name: &'static str,
    pub expected: StatusCode,
    pub got: StatusCode,
}

#[derive(Debug, Clone)]
pub struct LoadTestReport {
    pub raters: usize,
    pub think: Duration,
    pub requested: usize,
    /// Votes the server answered 201 (or 409 on a retry) for.
    pub accepted: usize,
    pub in_db: u64,
    pub distinct_tickets_in_db: u64,
    /// Accepted votes missing from the database.
    pub lost: usize,
    /// Database votes beyond one per ticket, or not accepted by any rater.
    pub duplicated: usize,
    pub errors: usize,
    pub wall: Duration,
    pub vote_latency: Latency,
    pub pair_latency: Latency,
    pub probes: Vec<Probe>,
}

impl LoadTestReport {
    /// Whether every check held.
    pub fn passed(&self) -> bool {
        self.accepted == self.requested
            && self.in_db == self.requested as u64
            && self.distinct_tickets_in_db == self.in_db
            && self.lost == 0
            && self.duplicated == 0
            && self.errors == 0
            && self.probes.iter().all(|p| p.got == p.expected)
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

impl fmt::Display for LoadTestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "| measure | value |")?;
        writeln!(f, "|---|---|")?;
        writeln!(f, "| concurrent raters | {} |", self.raters)?;
        writeln!(
            f,
            "| mean pause between a rater's votes | {} |",
            ms(self.think)
        )?;
        writeln!(f, "| votes requested | {} |", self.requested)?;
        writeln!(f, "| votes accepted (201) | {} |", self.accepted)?;
        writeln!(f, "| votes in database | {} |", self.in_db)?;
        writeln!(
            f,
            "| distinct tickets in database | {} |",
            self.distinct_tickets_in_db
        )?;
        writeln!(f, "| lost | {} |", self.lost)?;
        writeln!(f, "| duplicated | {} |", self.duplicated)?;
        writeln!(f, "| failed requests | {} |", self.errors)?;
        writeln!(f, "| wall time | {:.2} s |", self.wall.as_secs_f64())?;
        writeln!(
            f,
            "| throughput | {:.0} votes/s |",
            self.accepted as f64 / self.wall.as_secs_f64().max(1e-9)
        )?;
        for (name, l) in [("vote", &self.vote_latency), ("pair", &self.pair_latency)] {
            writeln!(
                f,
                "| {name} latency p50 / p90 / p99 / max | {} / {} / {} / {} |",
                ms(l.p50),
                ms(l.p90),
                ms(l.p99),
                ms(l.max)
            )?;
        }
        writeln!(f)?;
        writeln!(f, "| rejected request | expected | got |")?;
        writeln!(f, "|---|---|---|")?;
        for p in &self.probes {
            let mark = if p.got == p.expected { "" } else { " ✗" };
            writeln!(
                f,
                "| {} | {} | {}{mark} |",
                p.name,
                p.expected.as_u16(),
                p.got.as_u16()
            )?;
        }
        Ok(())
    }
}

/// Writes a synthetic pool: `images` images × (original + 4 conditions).
pub fn write_synthetic_pool(dir: &Path, images: usize) -> Result<(), StudyError> {
    for i in 0..images {
        let image_dir = dir.join(format!("img{i:03}"));
        std::fs::create_dir_all(&image_dir).map_err(|source| StudyError::Io {
            path: image_dir.clone(),
            source,
        })?;
        for c in [
            "original",
            "mirage-w0.0",
            "mirage-w1.0",
            "mirage-auto",
            "avif",
        ] {
            let path = image_dir.join(format!("{c}.png"));
            std::fs::write(&path, TINY_PNG).map_err(|source| StudyError::Io { path, source })?;
        }
    }
    Ok(())
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

#[derive(Clone)]
struct Target {
    client: HttpClient,
    base: String,
}

impl Target {
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), String> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, bytes))
    }

    async fn get(&self, path: &str) -> Result<(StatusCode, Bytes), String> {
        self.send(Method::GET, path, &[], vec![]).await
    }

    async fn post_json(
        &self,
        path: &str,
        body: impl Into<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), String> {
        self.send(
            Method::POST,
            path,
            &[("content-type", "application/json")],
            body.into(),
        )
        .await
    }
}

#[derive(serde::Deserialize)]
struct PairJson {
    ticket: String,
    original: String,
    a: String,
    b: String,
}

#[derive(Default)]
struct Tally {
    accepted: Vec<String>,
    vote_latency: Vec<Duration>,
    pair_latency: Vec<Duration>,
    errors: Vec<String>,
}

/// One simulated rater: votes until the shared budget of votes is spent.
async fn rater(
    target: Target,
    budget: Arc<AtomicUsize>,
    options: LoadTestOptions,
    seed: usize,
) -> Tally {
    let (total, fetch_images) = (options.votes, options.fetch_images);
    let mut tally = Tally::default();
    let votes_path = format!("/api/studies/{STUDY}/votes");
    let pair_path = format!("/api/studies/{STUDY}/pair");
    let mut choice_bits = seed.wrapping_mul(0x9e37_79b9) | 1;
    while budget.fetch_add(1, Ordering::SeqCst) < total {
        let started = Instant::now();
        let pair: PairJson = match target.get(&pair_path).await {
            Ok((StatusCode::OK, body)) => match serde_json::from_slice(&body) {
                Ok(p) => p,
                Err(e) => {
                    tally.errors.push(format!("pair JSON: {e}"));
                    continue;
                }
            },
            other => {
                tally.errors.push(format!("pair: {other:?}"));
                continue;
            }
        };
        tally.pair_latency.push(started.elapsed());
        if fetch_images {
            for url in [&pair.original, &pair.a, &pair.b] {
                match target.get(url).await {
                    Ok((StatusCode::OK, _)) => {}
                    other => tally.errors.push(format!("image: {other:?}")),
                }
            }
        }
        // A cheap xorshift picks the side; which is which does not matter to the server.
        choice_bits ^= choice_bits << 13;
        choice_bits ^= choice_bits >> 7;
        choice_bits ^= choice_bits << 17;
        let choice = if choice_bits & 1 == 0 { "a" } else { "b" };
        let body = format!(
            r#"{{"ticket":"{}","choice":"{choice}","rater":"sim-{seed}"}}"#,
            pair.ticket
        );
        let mut recorded = false;
        for attempt in 0..3 {
            let started = Instant::now();
            match target.post_json(&votes_path, body.clone()).await {
                Ok((StatusCode::CREATED, _)) => {
                    tally.vote_latency.push(started.elapsed());
                    recorded = true;
                    break;
                }
                Ok((StatusCode::CONFLICT, _)) if attempt > 0 => {
                    recorded = true;
                    break;
                }
                Ok((status, text)) => {
                    tally
                        .errors
                        .push(format!("vote: {status} {}", String::from_utf8_lossy(&text)));
                    break;
                }
                Err(e) => tally.errors.push(format!("vote (will retry): {e}")),
            }
        }
        if recorded {
            tally.accepted.push(pair.ticket);
        }
        if !options.think.is_zero() {
            let pause = rand::thread_rng().gen_range(Duration::ZERO..=options.think * 2);
            tokio::time::sleep(pause).await;
        }
    }
    tally
}

/// Runs the load test on its own runtime (for the command line).
pub fn run_blocking(options: &LoadTestOptions) -> Result<LoadTestReport, StudyError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| StudyError::Io {
            path: "tokio runtime".into(),
            source,
        })?;
    runtime.block_on(run(options))
}

pub async fn run(options: &LoadTestOptions) -> Result<LoadTestReport, StudyError> {
    let work = tempfile::tempdir().map_err(|source| StudyError::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let pool = work.path().join(STUDY);
    let other_pool = work.path().join(OTHER_STUDY);
    write_synthetic_pool(&pool, options.images.max(1))?;
    write_synthetic_pool(&other_pool, 1)?;
    let db = work.path().join("load.sqlite");
    let token = new_ticket();
    let server = start(ServeOptions {
        addr: "127.0.0.1:0".into(),
        db: db.clone(),
        admin_token: Some(token.clone()),
        pools: vec![pool],
        ..ServeOptions::default()
    })
    .await?;
    let target = Target {
        client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        base: format!("http://{}", server.addr),
    };

    let budget = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..options.raters.max(1))
        .map(|i| tokio::spawn(rater(target.clone(), budget.clone(), options.clone(), i)))
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        let t = task
            .await
            .map_err(|e| StudyError::LoadTest(format!("a simulated rater panicked: {e}")))?;
        tally.accepted.extend(t.accepted);
        tally.vote_latency.extend(t.vote_latency);
        tally.pair_latency.extend(t.pair_latency);
        tally.errors.extend(t.errors);
    }
    let wall = started.elapsed();
    for e in tally.errors.iter().take(5) {
        eprintln!("load test: {e}");
    }

    // Integrity: read the database through a second connection, as an auditor would.
    let audit = Store::open(&db, i64::MAX)?;
    let (in_db, distinct, _used) = audit.vote_integrity(STUDY)?;
    let db_tickets: HashSet<String> = audit.voted_tickets(STUDY)?.into_iter().collect();
    let accepted: HashSet<&String> = tally.accepted.iter().collect();
    let lost = accepted
        .iter()
        .filter(|t| !db_tickets.contains(t.as_str()))
        .count();
    let duplicated = (in_db - distinct) as usize
        + db_tickets.iter().filter(|t| !accepted.contains(t)).count()
        + (tally.accepted.len() - accepted.len());

    let probes = probe_rejections(
        &target,
        &token,
        tally.accepted.first().map(String::as_str),
        &other_pool,
    )
    .await;
    let (after, _, _) = audit.vote_integrity(STUDY)?;
    let mut report = LoadTestReport {
        raters: options.raters,
        think: options.think,
        requested: options.votes,
        accepted: tally.accepted.len(),
        in_db,
        distinct_tickets_in_db: distinct,
        lost,
        duplicated,
        errors: tally.errors.len(),
        wall,
        vote_latency: Latency::of(tally.vote_latency),
        pair_latency: Latency::of(tally.pair_latency),
        probes,
    };
    if after != in_db {
        // A rejected request changed the vote count: report it as a duplicate.
        report.duplicated += after.abs_diff(in_db) as usize;
    }
    server.stop().await?;
    Ok(report)
}

/// Sends malformed and forged requests and records the answers.
async fn probe_rejections(
    target: &Target,
    token: &str,
    used_ticket: Option<&str>,
    other_pool: &Path,
) -> Vec<Probe> {
    let votes = format!("/api/studies/{STUDY}/votes");
    let fresh = new_ticket();
    let used = used_ticket.unwrap_or(&fresh).to_string();
    let other_ticket = || async {
        let (_, body) = target
            .get(&format!("/api/studies/{OTHER_STUDY}/pair"))
            .await
            .ok()?;
        serde_json::from_slice::<PairJson>(&body)
            .ok()
            .map(|p| p.ticket)
    };
    let wrong_bearer = format!("Bearer {}", new_ticket());
    let bearer = format!("Bearer {token}");
    let mut probes = vec![];
    let status =
        |r: Result<(StatusCode, Bytes), String>| r.map_or(StatusCode::IM_A_TEAPOT, |(s, _)| s);

    // A second study, made through the admin API, supplies a real ticket that is
    // valid, but not for this study.
    let create = serde_json::json!({ "id": OTHER_STUDY, "pool": other_pool }).to_string();
    let got = status(
        target
            .send(
                Method::POST,
                "/api/admin/studies",
                &[
                    ("content-type", "application/json"),
                    ("authorization", &bearer),
                ],
                create.clone().into_bytes(),
            )
            .await,
    );
    probes.push(Probe {
        name: "create study with the admin token (accepted)",
        expected: StatusCode::CREATED,
        got,
    });

    let cases: Vec<(&'static str, StatusCode, &'static str, Vec<u8>)> = vec![
        (
            "malformed JSON",
            StatusCode::BAD_REQUEST,
            "application/json",
            b"{\"ticket\": ".to_vec(),
        ),
        (
            "binary garbage",
            StatusCode::BAD_REQUEST,
            "application/json",
            vec![0xff, 0x00, 0x13, 0x37],
        ),
        (
            "choice \"c\"",
            StatusCode::BAD_REQUEST,
            "application/json",
            format!(r#"{{"ticket":"{fresh}","choice":"c"}}"#).into_bytes(),
        ),
        (
            "extra field naming the winner",
            StatusCode::BAD_REQUEST,
            "application/json",
            format!(r#"{{"ticket":"{fresh}","choice":"a","winner":"avif"}}"#).into_bytes(),
        ),
        (
            "forged ticket",
            StatusCode::FORBIDDEN,
            "application/json",
            format!(r#"{{"ticket":"{fresh}","choice":"a"}}"#).into_bytes(),
        ),
        (
            "replayed ticket",
            StatusCode::CONFLICT,
            "application/json",
            format!(r#"{{"ticket":"{used}","choice":"b"}}"#).into_bytes(),
        ),
        (
            "not declared as JSON",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "text/plain",
            format!(r#"{{"ticket":"{fresh}","choice":"a"}}"#).into_bytes(),
        ),
        (
            "oversized body (64 KiB)",
            StatusCode::PAYLOAD_TOO_LARGE,
            "application/json",
            format!(
                r#"{{"ticket":"{fresh}","choice":"a","rater":"{}"}}"#,
                "x".repeat(65536)
            )
            .into_bytes(),
        ),
    ];
    for (name, expected, kind, body) in cases {
        let got = status(
            target
                .send(Method::POST, &votes, &[("content-type", kind)], body)
                .await,
        );
        probes.push(Probe {
            name,
            expected,
            got,
        });
    }
    let ticket_elsewhere = other_ticket().await.unwrap_or_else(new_ticket);
    probes.push(Probe {
        name: "ticket from another study",
        expected: StatusCode::FORBIDDEN,
        got: status(
            target
                .post_json(
                    &votes,
                    format!(r#"{{"ticket":"{ticket_elsewhere}","choice":"a"}}"#),
                )
                .await,
        ),
    });
    probes.push(Probe {
        name: "unknown study",
        expected: StatusCode::NOT_FOUND,
        got: status(
            target
                .post_json(
                    "/api/studies/no-such-study/votes",
                    format!(r#"{{"ticket":"{fresh}","choice":"a"}}"#),
                )
                .await,
        ),
    });
    let export = format!("/api/admin/studies/{STUDY}/votes.csv");
    for (name, expected, headers) in [
        ("export without token", StatusCode::UNAUTHORIZED, vec![]),
        (
            "export with wrong token",
            StatusCode::UNAUTHORIZED,
            vec![("authorization", wrong_bearer.as_str())],
        ),
        (
            "export with the admin token (accepted)",
            StatusCode::OK,
            vec![("authorization", bearer.as_str())],
        ),
    ] {
        let got = status(target.send(Method::GET, &export, &headers, vec![]).await);
        probes.push(Probe {
            name,
            expected,
            got,
        });
    }
    probes.push(Probe {
        name: "create study without token",
        expected: StatusCode::UNAUTHORIZED,
        got: status(
            target
                .post_json("/api/admin/studies", r#"{"id":"sneaky","pool":"/"}"#)
                .await,
        ),
    });
    probes
}

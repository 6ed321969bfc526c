//! The HTTP server: routes, handlers and startup.
//!
//! | method | path | who | what |
//! |---|---|---|---|
//! | GET | `/` | anyone | list of studies |
//! | GET | `/study/{id}` | raters | the 2AFC page |
//! | GET | `/study/{id}/results` | anyone | Elo table and plot |
//! | GET | `/api/studies` | anyone | studies as JSON |
//! | GET | `/api/studies/{id}/pair` | raters | next pair: ticket, image URLs |
//! | POST | `/api/studies/{id}/votes` | raters | `{"ticket", "choice": "a"\|"b", "rater"?}` |
//! | GET | `/api/studies/{id}/scores` | anyone | bootstrapped Elo as JSON |
//! | GET | `/api/tickets/{ticket}/{original,a,b}.png` | raters | the pair's images |
//! | POST | `/api/admin/studies` | admin | `{"id", "pool"}`: create a study from a pool folder |
//! | GET | `/api/admin/studies/{id}/votes.csv` | admin | every vote |
//! | GET | `/api/admin/studies/{id}/scores.csv` | admin | Elo per condition |
//!
//! Database work runs on tokio's blocking pool, so a slow commit never stalls the
//! threads that accept connections.

use crate::admin::AdminToken;
use crate::api::{ApiError, CreateStudyRequest, VoteRequest, MAX_BODY_BYTES};
use crate::elo::EloOptions;
use crate::error::StudyError;
use crate::export::{scores_csv, votes_csv};
use crate::pool::Pool;
use crate::scores::{self, Scores};
use crate::store::{IssuedPair, Shown, Store, StudySummary};
use crate::ticket::well_formed;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, Semaphore};

/// How to run a study server.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// `host:port`; port 0 picks a free port (tests).
    pub addr: String,
    /// The SQLite file (created if missing).
    pub db: PathBuf,
    /// Bearer token for admin actions; `None` turns them off.
    pub admin_token: Option<String>,
    /// Pool folders to serve; each becomes (or reopens) the study named after its folder.
    pub pools: Vec<PathBuf>,
    /// How long a served pair's ticket stays valid.
    pub ticket_ttl: Duration,
    pub elo: EloOptions,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            addr: "127.0.0.1:8080".into(),
            db: "study.sqlite".into(),
            admin_token: None,
            pools: vec![],
            ticket_ttl: Duration::from_secs(24 * 3600),
            elo: EloOptions::default(),
        }
    }
}

struct AppState {
    store: Store,
    admin: AdminToken,
    elo: EloOptions,
    /// The last scores per study. The results endpoint is public and a bootstrap over
    /// 10,000 votes costs a good fraction of a second, so scores are recomputed only
    /// when the vote count has changed.
    scores: Mutex<HashMap<String, Arc<Scores>>>,
    /// One database job at a time, first come first served (see [`blocking`]).
    db_turn: Semaphore,
}

/// A server running on the current tokio runtime.
pub struct RunningServer {
    pub addr: SocketAddr,
    /// The studies opened from [`ServeOptions::pools`].
    pub studies: Vec<StudySummary>,
    shutdown: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Stops accepting, lets requests in flight finish, and returns.
    pub async fn stop(self) -> Result<(), StudyError> {
        let _ = self.shutdown.send(());
        let addr = self.addr.to_string();
        match self.task.await {
            Ok(result) => result.map_err(|source| StudyError::Bind { addr, source }),
            Err(e) => Err(StudyError::Bind {
                addr,
                source: std::io::Error::other(e),
            }),
        }
    }
}

/// Runs a server until Ctrl-C (for the command line).
pub fn serve(options: ServeOptions) -> Result<(), StudyError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| StudyError::Bind {
            addr: options.addr.clone(),
            source,
        })?;
    runtime.block_on(async {
        let server = start(options).await?;
        for s in &server.studies {
            eprintln!(
                "study {}: {} images, {} pairs, {} votes — http://{}/study/{}",
                s.id, s.images, s.pairs, s.votes, server.addr, s.id
            );
        }
        eprintln!("listening on http://{} (Ctrl-C stops)", server.addr);
        let _ = tokio::signal::ctrl_c().await;
        server.stop().await
    })
}

/// Opens the database and pools, binds, and serves in the background.
pub async fn start(options: ServeOptions) -> Result<RunningServer, StudyError> {
    let admin = AdminToken::new(options.admin_token.as_deref()).map_err(StudyError::Config)?;
    let store = Store::open(&options.db, options.ticket_ttl.as_millis() as i64)?;
    let mut studies = vec![];
    for dir in &options.pools {
        studies.push(open_pool_study(&store, dir)?);
    }
    let state = Arc::new(AppState {
        store,
        admin,
        elo: options.elo,
        scores: Mutex::new(HashMap::new()),
        db_turn: Semaphore::new(1),
    });
    let listener = tokio::net::TcpListener::bind(&options.addr)
        .await
        .map_err(|source| StudyError::Bind {
            addr: options.addr.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StudyError::Bind {
        addr: options.addr.clone(),
        source,
    })?;
    let (shutdown, signal) = oneshot::channel::<()>();
    let app = router(state);
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = signal.await;
            })
            .await
    });
    Ok(RunningServer {
        addr,
        studies,
        shutdown,
        task,
    })
}

/// The study for a pool folder: created on first use, reopened afterwards (the id is
/// the folder's name, and reopening with another folder of the same name is refused).
pub fn open_pool_study(store: &Store, dir: &std::path::Path) -> Result<StudySummary, StudyError> {
    let dir = dir.canonicalize().map_err(|source| StudyError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let id = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(existing) = store.summary(&id)? {
        if std::path::Path::new(&existing.pool_dir) != dir {
            return Err(StudyError::Config(format!(
                "study {id:?} already exists with pool {}; rename the folder to start another study",
                existing.pool_dir
            )));
        }
        return Ok(existing);
    }
    store.create_study(&id, &Pool::scan(&dir)?)
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(|| async { page(assets::INDEX_HTML) }))
        .route("/study/{id}", get(study_page))
        .route("/study/{id}/results", get(results_page))
        .route("/assets/{file}", get(asset))
        .route("/api/studies", get(list_studies))
        .route("/api/studies/{id}/pair", get(next_pair))
        .route("/api/studies/{id}/votes", post(vote))
        .route("/api/studies/{id}/scores", get(study_scores))
        .route("/api/tickets/{ticket}/{image}", get(ticket_image))
        .route("/api/admin/studies", post(create_study))
        .route("/api/admin/studies/{id}/votes.csv", get(export_votes))
        .route("/api/admin/studies/{id}/scores.csv", get(export_scores))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such page or endpoint") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

mod assets {
    pub const INDEX_HTML: &str = include_str!("../assets/index.html");
    pub const STUDY_HTML: &str = include_str!("../assets/study.html");
    pub const RESULTS_HTML: &str = include_str!("../assets/results.html");
    pub const STUDY_JS: &str = include_str!("../assets/study.js");
    pub const RESULTS_JS: &str = include_str!("../assets/results.js");
    pub const INDEX_JS: &str = include_str!("../assets/index.js");
    pub const STUDY_CSS: &str = include_str!("../assets/study.css");
}

/// Pages load scripts and images only from this server; inline script is not allowed.
fn page(html: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        html,
    )
        .into_response()
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "study.js" => (assets::STUDY_JS, "text/javascript; charset=utf-8"),
        "results.js" => (assets::RESULTS_JS, "text/javascript; charset=utf-8"),
        "index.js" => (assets::INDEX_JS, "text/javascript; charset=utf-8"),
        "study.css" => (assets::STUDY_CSS, "text/css; charset=utf-8"),
        _ => return ApiError::new(StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// Runs database work off the async threads, one job at a time, in arrival order.
///
/// The store serialises on a mutex anyway; queueing here on a fair semaphore
/// instead means requests wait as cheap futures in FIFO order rather than as
/// blocked threads racing for an unfair lock, which under 200 concurrent raters
/// made the slowest votes wait seconds.
async fn blocking<T: Send + 'static>(
    state: &Arc<AppState>,
    work: impl FnOnce(&AppState) -> Result<T, StudyError> + Send + 'static,
) -> Result<T, ApiError> {
    let _turn =
        state.db_turn.acquire().await.map_err(|_| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server shutting down")
        })?;
    let state = state.clone();
    tokio::task::spawn_blocking(move || work(&state))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))?
        .map_err(ApiError::from)
}

async fn require_study(state: &Arc<AppState>, id: &str) -> Result<StudySummary, ApiError> {
    let key = id.to_string();
    blocking(state, move |s| s.store.summary(&key))
        .await?
        .ok_or_else(|| ApiError::unknown_study(id))
}

async fn study_page(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require_study(&state, &id).await?;
    Ok(page(assets::STUDY_HTML))
}

async fn results_page(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require_study(&state, &id).await?;
    Ok(page(assets::RESULTS_HTML))
}

async fn list_studies(
    State(state): State<Arc<AppState>>,
) -> Result<Json<Vec<StudySummary>>, ApiError> {
    Ok(Json(blocking(&state, |s| s.store.studies()).await?))
}

#[derive(Serialize)]
struct PairResponse {
    ticket: String,
    image: String,
    original: String,
    a: String,
    b: String,
}

impl From<IssuedPair> for PairResponse {
    fn from(p: IssuedPair) -> PairResponse {
        let url = |which: &str| format!("/api/tickets/{}/{which}.png", p.ticket);
        PairResponse {
            original: url("original"),
            a: url("a"),
            b: url("b"),
            ticket: p.ticket,
            image: p.image,
        }
    }
}

async fn next_pair(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let key = id.clone();
    let pair = blocking(&state, move |s| s.store.issue_pair(&key))
        .await?
        .ok_or_else(|| ApiError::unknown_study(&id))?;
    // A ticket must never be served twice, so no cache may keep this response.
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(PairResponse::from(pair)),
    )
        .into_response())
}

/// Rejects bodies that are not declared as JSON, before reading them.
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if kind.split(';').next().map(str::trim) == Some("application/json") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the body as Content-Type: application/json",
        ))
    }
}

fn body_bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        let status = r.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!("request body over {MAX_BODY_BYTES} bytes")
        } else {
            r.body_text()
        };
        ApiError::new(status, message)
    })
}

async fn vote(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let request = VoteRequest::parse(&body_bytes(body)?)?;
    require_study(&state, &id).await?;
    let vote_id = blocking(&state, move |s| {
        s.store.record_vote(
            &id,
            &request.ticket,
            request.choice,
            request.rater.as_deref(),
        )
    })
    .await?
    .map_err(ApiError::from)?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "vote": vote_id })),
    )
        .into_response())
}

async fn compute_scores(state: &Arc<AppState>, id: &str) -> Result<Arc<Scores>, ApiError> {
    let votes = require_study(state, id).await?.votes;
    let cached = |s: &AppState| {
        let cache = s.scores.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(id).filter(|c| c.votes == votes).cloned()
    };
    if let Some(scores) = cached(state) {
        return Ok(scores);
    }
    let key = id.to_string();
    let (outcomes, bpp) = blocking(state, move |s| {
        Ok((s.store.outcomes(&key)?, s.store.mean_bpp(&key)?))
    })
    .await?;
    // The bootstrap is CPU work, not database work: it runs without holding the turn.
    let (study, options) = (id.to_string(), state.elo);
    let fresh = tokio::task::spawn_blocking(move || {
        scores::from_outcomes(&study, &outcomes, &bpp, &options)
    })
    .await
    .map(Arc::new)
    .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))?;
    let mut cache = state.scores.lock().unwrap_or_else(|p| p.into_inner());
    cache.insert(id.to_string(), fresh.clone());
    Ok(fresh)
}

async fn study_scores(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Scores>, ApiError> {
    Ok(Json(compute_scores(&state, &id).await?.as_ref().clone()))
}

async fn ticket_image(
    State(state): State<Arc<AppState>>,
    Path((ticket, image)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let shown = match image.as_str() {
        "original.png" => Shown::Original,
        "a.png" => Shown::A,
        "b.png" => Shown::B,
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "images are original.png, a.png and b.png",
            ))
        }
    };
    if !well_formed(&ticket) {
        return Err(ApiError::bad_request("malformed ticket"));
    }
    let path = blocking(&state, move |s| s.store.ticket_image(&ticket, shown))
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "unknown or expired ticket"))?;
    let bytes = tokio::fs::read(&path).await.map_err(|source| {
        ApiError::from(StudyError::Io {
            path: path.clone(),
            source,
        })
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("image/png")),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, max-age=3600"),
            ),
        ],
        bytes,
    )
        .into_response())
}

fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    state
        .admin
        .check(
            headers
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes),
        )
        .map_err(ApiError::from)
}

async fn create_study(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    require_admin(&state, &headers)?;
    require_json(&headers)?;
    let request = CreateStudyRequest::parse(&body_bytes(body)?)?;
    let pool_dir = PathBuf::from(&request.pool);
    // The pool path is the admin's input, so any failure to read it is a 400 (the
    // message goes back to the authenticated admin only).
    let pool = tokio::task::spawn_blocking(move || Pool::scan(&pool_dir))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))?
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let summary = blocking(&state, move |s| s.store.create_study(&request.id, &pool)).await?;
    Ok((StatusCode::CREATED, Json(summary)).into_response())
}

fn csv(body: String, name: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response()
}

async fn export_votes(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_admin(&state, &headers)?;
    require_study(&state, &id).await?;
    let key = id.clone();
    let votes = blocking(&state, move |s| s.store.votes(&key)).await?;
    Ok(csv(votes_csv(&votes), format!("{id}-votes.csv")))
}

async fn export_scores(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_admin(&state, &headers)?;
    let scores = compute_scores(&state, &id).await?;
    Ok(csv(scores_csv(&scores), format!("{id}-scores.csv")))
}

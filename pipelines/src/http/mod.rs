//! The HTTP endpoint (axum): the crowd managers' page, the analysts' hit queue, a JSON API under
//! `/api/v1`, and Prometheus' `/metrics`, over the same accounts and roles as psql. Nothing is
//! served without a login.
//!
//! - `POST /api/v1/login` with `{"user": …, "password": …}` answers `{"token": …, "role": …}`
//!   and sets the `vigil_session` cookie (HttpOnly, SameSite=Strict); a session lasts 12 hours.
//! - Every other request carries the session: `Authorization: Bearer TOKEN`, the cookie, or
//!   HTTP Basic credentials (what Prometheus' `basic_auth` sends). Without one it is answered
//!   401, whatever the path, so that nothing about the paths leaks either; a browser is given
//!   the login form with that answer.
//! - The page (`/`) and its assets are compiled into the binary (`web/`): no CDN, no build step.
//! - What each role may do follows psql's rules: API reads run through the same
//!   [`Registry`] with the session's role, and writes (hit decisions) are the same statements
//!   psql sends. The board ([`board`]) is aggregates only, for whoever may read aggregates.
//!   `/api/v1/openapi.json` describes the API.
//!
//! Logins, failed logins, decisions, acknowledgements and reads of personal data are in the
//! audit log, as psql's are (`http` in place of `psql`); failed logins are answered more slowly
//! each time, sharing psql's count ([`vigil_sql::server::Failures`]).

mod api;
pub mod board;
mod json;
pub mod limit;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use vigil_engine::audit::AuditLog;
use vigil_sql::registry::Registry;
use vigil_sql::roles::Role;
use vigil_sql::server::{Account, Failures, failure_delay};

use crate::app::Progress;

/// How long a session lasts.
const SESSION: Duration = Duration::from_secs(12 * 3600);
/// Sessions held at most (the oldest go first).
const MAX_SESSIONS: usize = 10_000;

/// Who sent a request.
#[derive(Clone, Debug)]
struct Session {
    user: String,
    role: Role,
}

struct Shared {
    accounts: Vec<Account>,
    /// token → (session, expiry).
    sessions: Mutex<HashMap<String, (Session, Instant)>>,
    failures: Arc<Failures>,
    progress: Arc<Progress>,
    registry: Arc<Registry>,
    board: Arc<board::Board>,
    audit: Option<Arc<AuditLog>>,
    /// Confirmations a hit needs (`[hits] confirmations`).
    confirmations: u32,
    /// user → digest of the hit queue last shown to them and recorded (one entry per account).
    shown_hits: Mutex<HashMap<String, String>>,
}

impl Shared {
    /// Who sends `headers`: a session's token (bearer or cookie), or Basic credentials. A wrong
    /// Basic password counts as a failed login (`Err` with the pause to make).
    fn who(&self, headers: &HeaderMap, peer: &str) -> Result<Option<Session>, Duration> {
        let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| c.trim().strip_prefix("vigil_session="));
        let token = auth.strip_prefix("Bearer ").or(cookie);
        if let Some(token) = token {
            let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            return Ok(sessions
                .get(token.trim())
                .filter(|(_, expires)| *expires > Instant::now())
                .map(|(s, _)| s.clone()));
        }
        let Some(basic) = auth.strip_prefix("Basic ") else { return Ok(None) };
        use base64::Engine;
        let Some(decoded) = base64::engine::general_purpose::STANDARD.decode(basic.trim()).ok() else {
            return Ok(None);
        };
        let Some((user, password)) = std::str::from_utf8(&decoded).ok().and_then(|s| s.split_once(':'))
        else {
            return Ok(None);
        };
        self.login(user, password, peer).map(Some)
    }

    /// Checks `user`'s `password`; a failure is recorded and counted, and answered with the
    /// pause it costs (psql's policy: 250 ms, doubling, at most 8 s, per source and per user).
    fn login(&self, user: &str, password: &str, peer: &str) -> Result<Session, Duration> {
        let source = format!("source {peer}");
        let name = format!("user {user}");
        match self.accounts.iter().find(|a| a.user == user).filter(|a| a.verify(password)) {
            Some(a) => {
                self.failures.clear(&source);
                self.failures.clear(&name);
                Ok(Session { user: a.user.clone(), role: a.role })
            }
            None => {
                self.record(user, "login.failed", "http", &[("source", peer)]);
                let n = self.failures.record(&[source, name]);
                tracing::warn!("HTTP login failed (source {peer}): {n} failure(s) recently");
                Err(failure_delay(n))
            }
        }
    }

    fn record(&self, user: &str, action: &str, object: &str, detail: &[(&str, &str)]) {
        if let Some(a) = &self.audit {
            let user: String = user.chars().filter(|c| !c.is_control()).take(64).collect();
            a.record(&user, action, object, detail);
        }
    }

    /// A digest of personal text for the audit log (ids and digests only).
    fn digest(&self, text: &str) -> String {
        self.audit.as_ref().map_or_else(String::new, |a| a.digest(text))
    }
}

/// What the endpoint serves from: the engine's registry, the site and its accounts.
pub struct Parts {
    /// The accounts (psql's).
    pub accounts: Vec<Account>,
    /// Failed logins, shared with psql.
    pub failures: Arc<Failures>,
    /// The run's counters.
    pub progress: Arc<Progress>,
    /// The engine's streams and rules.
    pub registry: Arc<Registry>,
    /// The site's zones.
    pub zones: Vec<vigil_operators::zones::Zone>,
    /// Its gate lines.
    pub lines: Vec<vigil_operators::flows::GateLine>,
    /// The audit log, if any.
    pub audit: Option<Arc<AuditLog>>,
    /// Confirmations a hit needs.
    pub confirmations: u32,
    /// Connections open at once ([`limit::Limited`]).
    pub max_connections: usize,
}

/// Serves HTTP on `listener` (bound and non-blocking) from a thread of its own; returns its
/// address.
pub fn start(listener: std::net::TcpListener, parts: Parts) -> anyhow::Result<std::net::SocketAddr> {
    let bound = listener.local_addr()?;
    let max_connections = parts.max_connections;
    let board = Arc::new(board::Board::new(
        Arc::clone(&parts.registry),
        Arc::clone(&parts.progress),
        &parts.zones,
        &parts.lines,
    ));
    let shared = Arc::new(Shared {
        accounts: parts.accounts,
        sessions: Mutex::new(HashMap::new()),
        failures: parts.failures,
        progress: parts.progress,
        registry: parts.registry,
        board: Arc::clone(&board),
        audit: parts.audit,
        confirmations: parts.confirmations,
        shown_hits: Mutex::new(HashMap::new()),
    });
    let app = Router::new()
        .route("/", get(api::page))
        .route("/assets/{name}", get(api::asset))
        .route("/api/v1/login", post(login))
        .route("/api/v1/logout", post(logout))
        .route("/api/v1/me", get(api::me))
        .route("/api/v1/openapi.json", get(api::openapi))
        .route("/api/v1/board", get(api::board))
        .route("/api/v1/board/events", get(api::board_events))
        .route("/api/v1/alerts/{id}/ack", post(api::acknowledge))
        .route("/api/v1/hits", get(api::hits))
        .route("/api/v1/hits/{id}/decision", post(api::decide))
        .route("/api/v1/rules", get(api::rules))
        .route("/api/v1/streams", get(api::streams))
        .route("/api/v1/streams/{name}", get(api::stream))
        .route("/api/{*rest}", axum::routing::any(api::no_endpoint))
        .route("/metrics", get(metrics))
        .fallback(fallback)
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&shared), guard))
        .with_state(shared);
    std::thread::Builder::new().name("http".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => return tracing::error!("HTTP endpoint: {e}"),
        };
        rt.block_on(async move {
            tokio::spawn(board.run());
            let served = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => {
                    // `tap_io` only to have axum's `ConnectInfo<SocketAddr>` for the limited
                    // listener (axum provides it for tapped listeners).
                    use axum::serve::ListenerExt;
                    let l = limit::Limited::new(l, max_connections).tap_io(|_| ());
                    axum::serve(l, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = served {
                tracing::error!("HTTP endpoint: {e}");
            }
        });
    })?;
    Ok(bound)
}

/// Every request but the login needs a session: without one, 401 (with the login form for a
/// browser); with one, the session goes to the handler as an extension.
async fn guard(
    State(s): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if request.uri().path() == "/api/v1/login" {
        return next.run(request).await;
    }
    let peer = peer.ip().to_string();
    match s.who(request.headers(), &peer) {
        Ok(Some(session)) => {
            request.extensions_mut().insert(session);
            let mut response = next.run(request).await;
            let h = response.headers_mut();
            // The page's own scripts and styles only; nothing framed, nothing cached.
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                header::HeaderValue::from_static(
                    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
                ),
            );
            h.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
            h.insert("x-content-type-options", header::HeaderValue::from_static("nosniff"));
            response
        }
        Ok(None) => unauthorized(request.headers()),
        Err(pause) => {
            tokio::time::sleep(pause).await;
            unauthorized(request.headers())
        }
    }
}

#[derive(serde::Deserialize)]
struct Login {
    user: String,
    password: String,
}

async fn login(
    State(s): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    body: axum::body::Bytes,
) -> Response {
    let Ok(Login { user, password }) = serde_json::from_slice::<Login>(&body) else {
        return (StatusCode::BAD_REQUEST, "send {\"user\": \"…\", \"password\": \"…\"} as JSON\n")
            .into_response();
    };
    let peer = peer.ip().to_string();
    let session = match s.login(&user, &password, &peer) {
        Ok(session) => session,
        Err(pause) => {
            tokio::time::sleep(pause).await;
            return (StatusCode::UNAUTHORIZED, "wrong user or password\n").into_response();
        }
    };
    s.record(&session.user, "login", "http", &[("source", &peer)]);
    let token: String = rand::random::<[u8; 32]>().iter().map(|b| format!("{b:02x}")).collect();
    let role = session.role;
    {
        let mut sessions = s.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        sessions.retain(|_, (_, expires)| *expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions.iter().min_by_key(|(_, (_, e))| *e).map(|(t, _)| t.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(token.clone(), (session, now + SESSION));
    }
    let cookie =
        format!("vigil_session={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}", SESSION.as_secs());
    let body = serde_json::json!({ "token": token, "role": role.to_string() }).to_string();
    (StatusCode::OK, [(header::SET_COOKIE, cookie), (header::CONTENT_TYPE, "application/json".into())], body)
        .into_response()
}

async fn logout(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("vigil_session=").map(str::to_owned));
    if let Some(token) = auth.strip_prefix("Bearer ").map(str::to_owned).or(cookie) {
        s.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(token.trim());
    }
    (
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, "vigil_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")],
    )
        .into_response()
}

/// 401, with the login form when a browser asks for a page.
fn unauthorized(headers: &HeaderMap) -> Response {
    let html =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/html"));
    if html {
        return (
            StatusCode::UNAUTHORIZED,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
                (header::CONTENT_SECURITY_POLICY, "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'; frame-ancestors 'none'"),
            ],
            api::LOGIN_PAGE,
        )
            .into_response();
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"vigil\"")],
        "log in: POST /api/v1/login, then send the token (Authorization: Bearer …)\n",
    )
        .into_response()
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let text = s.progress.metrics.lock().unwrap_or_else(|p| p.into_inner()).clone();
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
        .into_response()
}

async fn fallback() -> Response {
    (StatusCode::NOT_FOUND, "no such page\n").into_response()
}

//! The HTTP endpoint (axum): a login over the same accounts and roles as psql, and Prometheus'
//! `/metrics`. Nothing is served without a login.
//!
//! - `POST /api/v1/login` with `{"user": …, "password": …}` answers `{"token": …, "role": …}`
//!   and sets the `vigil_session` cookie (HttpOnly, SameSite=Strict); a session lasts 12 hours.
//! - Every other request carries the session: `Authorization: Bearer TOKEN`, the cookie, or
//!   HTTP Basic credentials (what Prometheus' `basic_auth` sends). Without one it is answered
//!   401, whatever the path, so that nothing about the paths leaks either.
//! - `GET /metrics`: the counters in Prometheus' text format ([`crate::metrics`]), for every
//!   role (they hold no personal data).
//!
//! Logins and failed logins are in the audit log, as psql's are (`http` in place of `psql`);
//! failures are answered after a pause.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use vigil_engine::audit::AuditLog;
use vigil_sql::roles::Role;
use vigil_sql::server::Account;

use crate::app::Progress;

/// How long a session lasts.
const SESSION: Duration = Duration::from_secs(12 * 3600);
/// Sessions held at most (the oldest go first).
const MAX_SESSIONS: usize = 10_000;

struct Shared {
    accounts: Vec<Account>,
    /// token → (user, role, expiry).
    sessions: Mutex<HashMap<String, (String, Role, Instant)>>,
    progress: Arc<Progress>,
    audit: Option<Arc<AuditLog>>,
}

impl Shared {
    /// The account `user` with `password`, compared without an early exit.
    fn check(&self, user: &str, password: &str) -> Option<&Account> {
        let a = self.accounts.iter().find(|a| a.user == user)?;
        let same = a.password.len() == password.len()
            && a.password.bytes().zip(password.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0;
        same.then_some(a)
    }

    /// Who sends `headers`: a session's token (bearer or cookie), or Basic credentials.
    fn who(&self, headers: &HeaderMap) -> Option<(String, Role)> {
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
            return sessions
                .get(token.trim())
                .filter(|(_, _, expires)| *expires > Instant::now())
                .map(|(u, r, _)| (u.clone(), *r));
        }
        let basic = auth.strip_prefix("Basic ")?;
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD.decode(basic.trim()).ok()?;
        let (user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
        self.check(user, password).map(|a| (a.user.clone(), a.role))
    }

    fn record(&self, user: &str, action: &str, peer: &str) {
        if let Some(a) = &self.audit {
            let user: String = user.chars().filter(|c| !c.is_control()).take(64).collect();
            a.record(&user, action, "http", &[("source", peer)]);
        }
    }
}

/// Serves HTTP on `addr` from a thread of its own, with `accounts`; returns the bound address.
pub fn start(
    addr: &str,
    accounts: Vec<Account>,
    progress: Arc<Progress>,
    audit: Option<Arc<AuditLog>>,
) -> anyhow::Result<std::net::SocketAddr> {
    use anyhow::Context;
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("binding the HTTP endpoint to {addr}"))?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let shared = Arc::new(Shared { accounts, sessions: Mutex::new(HashMap::new()), progress, audit });
    let app = Router::new()
        .route("/api/v1/login", post(login))
        .route("/metrics", get(metrics))
        .fallback(fallback)
        .with_state(shared);
    std::thread::Builder::new().name("http".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => return tracing::error!("HTTP endpoint: {e}"),
        };
        rt.block_on(async move {
            let served = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => {
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
    let Some((name, role)) = s.check(&user, &password).map(|a| (a.user.clone(), a.role)) else {
        s.record(&user, "login.failed", &peer);
        tokio::time::sleep(Duration::from_millis(250)).await;
        return (StatusCode::UNAUTHORIZED, "wrong user or password\n").into_response();
    };
    s.record(&name, "login", &peer);
    let token: String = rand::random::<[u8; 32]>().iter().map(|b| format!("{b:02x}")).collect();
    {
        let mut sessions = s.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        sessions.retain(|_, (_, _, expires)| *expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions.iter().min_by_key(|(_, (_, _, e))| *e).map(|(t, _)| t.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(token.clone(), (name, role, now + SESSION));
    }
    let cookie =
        format!("vigil_session={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}", SESSION.as_secs());
    let body = serde_json::json!({ "token": token, "role": role.to_string() }).to_string();
    (StatusCode::OK, [(header::SET_COOKIE, cookie), (header::CONTENT_TYPE, "application/json".into())], body)
        .into_response()
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"vigil\"")],
        "log in: POST /api/v1/login, then send the token (Authorization: Bearer …)\n",
    )
        .into_response()
}

async fn metrics(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if s.who(&headers).is_none() {
        return unauthorized();
    }
    let text = s.progress.metrics.lock().unwrap_or_else(|p| p.into_inner()).clone();
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
        .into_response()
}

async fn fallback(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    match s.who(&headers) {
        None => unauthorized(),
        Some(_) => (StatusCode::NOT_FOUND, "no such page\n").into_response(),
    }
}

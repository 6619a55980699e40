//! The page, its assets and the JSON API under `/api/v1` (described by `openapi.json`).
//!
//! Reads of the engine's data run through the [`Registry`](vigil_sql::registry::Registry) with
//! the session's role, so that a role sees over HTTP exactly what it sees from psql; a refusal
//! is a 403 carrying psql's message.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde_json::{Value, json};
use vigil_sql::error::{Kind, SqlError};

use super::board::Board;
use super::json::rows;
use super::{Session, Shared};

/// The login form, given with every 401 to a browser (inline script: nothing else is served
/// before a login).
pub const LOGIN_PAGE: &str = include_str!("../../../web/login.html");

/// The page and its assets, compiled in.
const ASSETS: [(&str, &str, &str); 3] = [
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../../web/app.js")),
    ("app.css", "text/css; charset=utf-8", include_str!("../../../web/app.css")),
    ("i18n.js", "text/javascript; charset=utf-8", include_str!("../../../web/i18n.js")),
];
const INDEX: &str = include_str!("../../../web/index.html");
const OPENAPI: &str = include_str!("../../../web/openapi.json");

fn json_response(status: StatusCode, v: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

fn problem(status: StatusCode, message: impl Into<String>) -> Response {
    json_response(status, &json!({ "error": message.into() }))
}

/// A refusal or failure of the registry as HTTP: 403 for permissions, 400 for what the request
/// got wrong, 503 while stopping, 500 otherwise.
fn sql_problem(e: &SqlError) -> Response {
    let status = match e.sqlstate() {
        "42501" => StatusCode::FORBIDDEN,
        "57P01" => StatusCode::SERVICE_UNAVAILABLE,
        "XX000" | "58030" => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    problem(status, e.to_string())
}

/// A query string that does not read (`?limit=abc`) as JSON, like every other refusal of the API.
fn query_problem(e: &QueryRejection) -> Response {
    problem(
        StatusCode::BAD_REQUEST,
        format!("{}; fix: see /api/v1/openapi.json for the parameters", e.body_text()),
    )
}

pub async fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response()
}

pub async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, ..)| *n == name) {
        Some((_, kind, body)) => ([(header::CONTENT_TYPE, *kind)], *body).into_response(),
        None => problem(StatusCode::NOT_FOUND, "no such asset"),
    }
}

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Who the session is and what the page should offer them.
pub async fn me(Extension(who): Extension<Session>) -> Response {
    use vigil_engine::stream::Class;
    json_response(
        StatusCode::OK,
        &json!({
            "user": who.user,
            "role": who.role.to_string(),
            "board": Board::may_see(who.role),
            "hits": who.role.may_read(Class::Personal, true),
            "decide": who.role.may_change(),
            "rules": who.role.may_read(Class::Aggregate, false),
        }),
    )
}

fn board_refused(who: &Session) -> Option<Response> {
    (!Board::may_see(who.role)).then(|| {
        problem(StatusCode::FORBIDDEN, format!("the {} role does not see the crowd board", who.role))
    })
}

pub async fn board(State(s): State<Arc<Shared>>, Extension(who): Extension<Session>) -> Response {
    if let Some(r) = board_refused(&who) {
        return r;
    }
    json_response(StatusCode::OK, &s.board.snapshot().1)
}

/// The board as server-sent events: `snapshot` first (with each zone's hour), then `update`
/// after each change (with the new points); a page that falls behind is sent a new snapshot.
pub async fn board_events(State(s): State<Arc<Shared>>, Extension(who): Extension<Session>) -> Response {
    if let Some(r) = board_refused(&who) {
        return r;
    }
    Sse::new(events(Arc::clone(&s.board))).keep_alive(KeepAlive::default()).into_response()
}

fn events(board: Arc<Board>) -> impl Stream<Item = Result<Event, Infallible>> {
    use tokio::sync::broadcast::error::RecvError;
    // (board, receiver, sequence already sent, whether a snapshot is due)
    let rx = board.subscribe();
    futures::stream::unfold((board, rx, 0u64, true), |(board, mut rx, mut sent, snapshot)| async move {
        if snapshot {
            let (seq, v) = board.snapshot();
            let event = Event::default().event("snapshot").data(v.to_string());
            return Some((Ok(event), (board, rx, seq, false)));
        }
        loop {
            match rx.recv().await {
                Ok((seq, text)) if seq > sent => {
                    sent = seq;
                    let event = Event::default().event("update").data(&*text);
                    return Some((Ok(event), (board, rx, sent, false)));
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(_)) => {
                    let (seq, v) = board.snapshot();
                    let event = Event::default().event("snapshot").data(v.to_string());
                    return Some((Ok(event), (board, rx, seq, false)));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    })
}

pub async fn acknowledge(
    State(s): State<Arc<Shared>>,
    Extension(who): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = board_refused(&who) {
        return r;
    }
    if !s.board.acknowledge(&id, &who.user) {
        return problem(StatusCode::NOT_FOUND, format!("no standing alert {id}"));
    }
    s.record(&who.user, "alert.ack", &format!("alert {id}"), &[]);
    json_response(StatusCode::OK, &json!({ "id": id, "acked_by": who.user }))
}

#[derive(serde::Deserialize)]
pub struct HitsQuery {
    /// At most this many hits (the oldest first); 200 by default, at most 1000.
    limit: Option<u32>,
}

/// Candidate hits waiting for people, oldest first, each with the confirmations it has, at most
/// `limit` of them and how many wait in all: a queue no one works through must not grow every
/// poll's answer (the page asks every 2 s).
pub async fn hits(
    State(s): State<Arc<Shared>>,
    Extension(who): Extension<Session>,
    q: Result<Query<HitsQuery>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return query_problem(&e),
    };
    let sql = "SELECT hit_id, event_time, status, decided_by, camera_id, read_time, plate_raw, plate, \
               listed_plate, score, why, legal_basis, reason, authority FROM hits \
               WHERE status IN ('candidate', 'confirmation') AND hit_id NOT IN \
               (SELECT hit_id FROM hits WHERE status IN ('confirmed', 'rejected', 'retracted')) \
               ORDER BY event_time, read_time, hit_id";
    let (_, batches) = match s.registry.query(sql, who.role, &who.user).await {
        Ok(r) => r,
        Err(e) => return sql_problem(&e),
    };
    let mut queue: Vec<Value> = Vec::new();
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for r in rows(&batches) {
        let id = r.get("hit_id").and_then(Value::as_str).unwrap_or("").to_owned();
        let by = r.get("decided_by").and_then(Value::as_str).unwrap_or("").to_owned();
        let i = *at.entry(id.clone()).or_insert_with(|| {
            queue.push(json!({ "confirmed_by": [] }));
            queue.len() - 1
        });
        let q = &mut queue[i];
        if r.get("status").and_then(Value::as_str) == Some("candidate") {
            let confirmed = q["confirmed_by"].take();
            *q = Value::Object(r);
            q["confirmed_by"] = confirmed;
            q["needed"] = json!(s.confirmations);
        } else if let Some(list) = q["confirmed_by"].as_array_mut() {
            list.push(Value::from(by));
        }
    }
    // Rows that fell out of memory leave a hit without its candidate row: not shown.
    queue.retain(|q| q.get("hit_id").is_some());
    let total = queue.len();
    queue.truncate(q.limit.unwrap_or(200).min(1000) as usize);
    // What a user was shown is recorded when it changes, not at every poll of the page (every
    // 2 s an analyst's page is open: 43,200 lines a day each, all saying the same).
    let ids: Vec<&str> = queue.iter().filter_map(|q| q["hit_id"].as_str()).collect();
    let digest = s.digest(&ids.join("\n"));
    let changed =
        s.shown_hits.lock().unwrap_or_else(|p| p.into_inner()).insert(who.user.clone(), digest.clone())
            != Some(digest.clone());
    if changed {
        let rows = queue.len().to_string();
        s.record(
            &who.user,
            "query",
            "hits",
            &[("via", "http /api/v1/hits"), ("rows", &rows), ("hits", &digest)],
        );
    }
    json_response(StatusCode::OK, &json!({ "needed": s.confirmations, "total": total, "hits": queue }))
}

#[derive(serde::Deserialize)]
pub struct Decision {
    decision: String,
    #[serde(default)]
    reason: String,
}

/// A person's decision on a hit: the statement psql would send, as the session's user.
pub async fn decide(
    State(s): State<Arc<Shared>>,
    Extension(who): Extension<Session>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if !who.role.may_change() {
        return problem(StatusCode::FORBIDDEN, format!("the {} role does not decide on hits", who.role));
    }
    let Ok(d) = serde_json::from_slice::<Decision>(&body) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "send {\"decision\": \"confirm\" | \"reject\", \"reason\": \"…\"}",
        );
    };
    if !matches!(d.decision.as_str(), "confirm" | "reject") {
        return problem(StatusCode::BAD_REQUEST, "decision is confirm or reject");
    }
    if d.decision == "reject" && d.reason.trim().is_empty() {
        return problem(StatusCode::BAD_REQUEST, "a rejection needs its reason");
    }
    let quote = |v: &str| format!("'{}'", v.replace('\'', "''"));
    let sql = format!(
        "INSERT INTO hit_decisions (hit_id, decision, reason) VALUES ({}, {}, {})",
        quote(&id),
        quote(&d.decision),
        quote(&d.reason)
    );
    let registry = Arc::clone(&s.registry);
    let user = who.user.clone();
    let done = tokio::task::spawn_blocking(move || registry.write(&sql, &user)).await;
    let result = match &done {
        Ok(Ok(_)) => "ok".to_owned(),
        Ok(Err(e)) => format!("error {}", e.sqlstate()),
        Err(_) => "error".to_owned(),
    };
    s.record(
        &who.user,
        "table.insert",
        "hit_decisions",
        &[("hit", &s.digest(&id)), ("decision", &d.decision), ("via", "http"), ("result", &result)],
    );
    match done {
        Ok(Ok(_)) => json_response(StatusCode::OK, &json!({ "hit_id": id, "decision": d.decision })),
        Ok(Err(e)) => sql_problem(&e),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The rules the role may read, with their live output counts and state.
pub async fn rules(State(s): State<Arc<Shared>>, Extension(who): Extension<Session>) -> Response {
    let list: Vec<Value> = s
        .registry
        .list()
        .into_iter()
        .filter(|e| s.registry.may_read_rule(who.role, &e.rule))
        .map(|e| {
            let failed = e.out.failed();
            json!({
                "name": e.rule.name, "origin": e.origin, "sql": e.statement,
                "rows_emitted": e.out.emitted(), "rows_held": e.out.rows_held(),
                "state": if failed.is_some() { "stopped" } else { "running" }, "last_error": failed,
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "rules": list }))
}

/// The streams, tables and rules the role may read, as `SHOW STREAMS` lists them: what a
/// client reads with `/api/v1/streams/{name}`.
pub async fn streams(State(s): State<Arc<Shared>>, Extension(who): Extension<Session>) -> Response {
    let list: Vec<Value> = s
        .registry
        .readable(who.role)
        .into_iter()
        .map(|[name, kind, what]| json!({ "name": name, "kind": kind, "what": what }))
        .collect();
    json_response(StatusCode::OK, &json!({ "streams": list }))
}

/// A path under `/api/` that is not one of the API's: JSON, as the API's other answers.
pub async fn no_endpoint(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    problem(
        StatusCode::NOT_FOUND,
        format!("no endpoint {method} {}; fix: /api/v1/openapi.json lists the API's", uri.path()),
    )
}

#[derive(serde::Deserialize)]
pub struct StreamQuery {
    /// Rows with `event_time` after this (ms since the epoch).
    since: Option<i64>,
    /// At most this many (newest first); 1000 by default, at most 10,000.
    limit: Option<u32>,
    /// Only this zone (streams with a `zone` column).
    zone: Option<String>,
}

/// The newest rows of a stream or rule the role may read.
pub async fn stream(
    State(s): State<Arc<Shared>>,
    Extension(who): Extension<Session>,
    Path(name): Path<String>,
    q: Result<Query<StreamQuery>, QueryRejection>,
) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return query_problem(&e),
    };
    if name.is_empty() || name.len() > 63 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return problem(StatusCode::NOT_FOUND, format!("no stream {name:?}"));
    }
    let mut conditions = Vec::new();
    let mut params = Vec::new();
    if let Some(since) = q.since {
        conditions.push(format!("event_time > to_timestamp_millis({since})"));
    }
    if let Some(zone) = q.zone {
        params.push(Some(zone));
        conditions.push(format!("zone = ${}", params.len()));
    }
    let filter =
        if conditions.is_empty() { String::new() } else { format!(" WHERE {}", conditions.join(" AND ")) };
    let limit = q.limit.unwrap_or(1000).min(10_000);
    let params = (!params.is_empty()).then_some(params);
    let sql = format!("SELECT * FROM \"{name}\"{filter} ORDER BY event_time DESC LIMIT {limit}");
    let mut r = s.registry.query_with(&sql, who.role, &who.user, params.clone()).await;
    // Tables and some rules have no event time: their rows in their own order.
    if r.as_ref().is_err_and(|e| e.sqlstate() == "42703") && q.since.is_none() {
        let sql = format!("SELECT * FROM \"{name}\"{filter} LIMIT {limit}");
        r = s.registry.query_with(&sql, who.role, &who.user, params).await;
    }
    let (_, batches) = match r {
        Ok(r) => r,
        // Said as the request named it: the query the server wrote is not the caller's.
        Err(SqlError::User { kind: Kind::UndefinedTable, fix, .. }) => {
            return problem(StatusCode::NOT_FOUND, format!("no stream {name:?}; fix: {fix}"));
        }
        Err(e) => return sql_problem(&e),
    };
    let rows = rows(&batches);
    s.record(
        &who.user,
        "query",
        &name,
        &[("via", "http /api/v1/streams"), ("rows", &rows.len().to_string())],
    );
    json_response(StatusCode::OK, &json!({ "stream": name, "rows": rows }))
}

//! The PostgreSQL wire-protocol endpoint (pgwire): what analysts reach with `psql`, and drivers
//! with the extended protocol ([`extended`]: prepared statements with parameters).
//!
//! Statements (several per query string in the simple protocol):
//! - `CREATE RULE name [WITH (severity = 'high', backfill = '10 minutes', emit = 'updates')] AS SELECT ...`
//! - `DROP RULE [IF EXISTS] name`, `SHOW RULES`, `EXPLAIN RULE name`
//! - `SUBSCRIBE [TO] name` (or `COPY (SUBSCRIBE name) TO STDOUT`): the rule's current contents,
//!   then every change as it happens, as COPY rows `time_ms, diff, columns...`; psql prints
//!   them as they arrive.
//! - any other `SELECT` (or `WITH ...`): run by DataFusion over the in-memory state: retained
//!   events of each stream, the reference tables, and each runtime rule by its name.
//! - `INSERT INTO watchlist (…) VALUES …`, `DELETE FROM watchlist WHERE plate = …`: the tables
//!   whose definition lets users change them, checked by it ([`Registry::write`]).
//! - `BEGIN`, `COMMIT`, `ROLLBACK`, `SET`: accepted, doing nothing (no transactions: each
//!   statement takes effect at once); `SHOW` of the settings drivers ask for.
//!
//! A cancel request stops the statement running, a `SUBSCRIBE` too.
//!
//! Authentication is SCRAM-SHA-256 against the configured accounts, each with its role
//! ([`crate::roles`]: what it may read and change); there is no anonymous access.
//! At most [`Edge::max_connections`] connections are held, each must log in within
//! [`Edge::auth_timeout`], and failed logins are logged and answered more slowly each time from
//! the same source or for the same user. A query's client that goes away stops the query.
//! Errors carry the SQLSTATE, the position (`psql:line:column`) and the fix as the hint; a
//! wrong statement never stops the engine or another rule.
//!
//! With an audit log ([`Edge::audit`]), every login, failed login and statement is recorded
//! before its answer is sent: who, what kind, the rule or stream it named, a keyed digest of its
//! text (a query may hold a plate) and whether it succeeded.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use futures::{Sink, StreamExt, stream};
use pgwire::api::PgWireConnectionState;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{ScramAuth, gen_salted_password};
use pgwire::api::auth::{AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler};
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::api::portal::Format;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    CopyResponse, DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag,
};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, ConnectionManager, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::copy::CopyData;
use pgwire::messages::response::TransactionStatus;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::RecvError;
use vigil_engine::audit::AuditLog;
use vigil_engine::tally::Tally;

use crate::delta::Delta;
use crate::error::SqlError;
use crate::registry::{Registry, unique_names};
use crate::roles::Role;
use crate::rule::{split_statements, statement_words};

mod copy;
mod cursor;
mod extended;
mod names;
pub(crate) mod types;

use types::pg_type;

/// An account of the endpoint: its own credentials and role.
#[derive(Clone)]
pub struct Account {
    /// User name.
    pub user: String,
    /// Password (never logged).
    pub password: String,
    /// What the account may see and do.
    pub role: Role,
}

impl Account {
    /// Whether `password` is this account's, compared without an early exit so that the time
    /// taken says nothing of how much of it was right (a few lines; not worth a dependency).
    pub fn verify(&self, password: &str) -> bool {
        self.password.len() == password.len()
            && self.password.bytes().zip(password.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .field("role", &self.role)
            .finish()
    }
}

/// The accounts of the endpoint.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// Every account; user names are distinct.
    pub accounts: Vec<Account>,
}

impl Credentials {
    /// The role of `user`, if it has an account.
    pub fn role_of(&self, user: &str) -> Option<Role> {
        self.accounts.iter().find(|a| a.user == user).map(|a| a.role)
    }
}

/// Limits at the network edge.
#[derive(Clone, Debug)]
pub struct Edge {
    /// Connections open at once; more are refused (logged) until one closes.
    pub max_connections: usize,
    /// A connection that has not logged in by then is closed.
    pub auth_timeout: Duration,
    /// Where logins and statements are recorded, if anywhere.
    pub audit: Option<Arc<AuditLog>>,
    /// Failed logins so far; share it with the other endpoints of the same accounts (HTTP), so
    /// that guesses spread over both are slowed as one.
    pub failures: Arc<Failures>,
    /// The `TimeZone` a session starts in (`UTC`, or a zone's name as [`zone_name`] gives it).
    pub time_zone: String,
}

impl Default for Edge {
    fn default() -> Self {
        Self {
            max_connections: 64,
            auth_timeout: Duration::from_secs(10),
            audit: None,
            failures: Arc::default(),
            time_zone: "UTC".to_owned(),
        }
    }
}

/// Serves connections on `listener` until the task is dropped: at most
/// [`Edge::max_connections`] at once, each logged in within [`Edge::auth_timeout`], failed
/// logins logged and answered more slowly each time from the same source or for the same user.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>, credentials: Credentials, edge: Edge) {
    let credentials = Arc::new(credentials);
    let failures = Arc::clone(&edge.failures);
    // Query cancellation (psql's Ctrl-C, a driver's cancel): a CancelRequest on a new connection
    // names a session by its key; the statement it runs, a SUBSCRIBE too, is stopped.
    let sessions = Arc::new(ConnectionManager::new());
    let cancel = Arc::new(DefaultCancelHandler::new(Arc::clone(&sessions)));
    let slots = Arc::new(tokio::sync::Semaphore::new(edge.max_connections.max(1)));
    // Cursors' rows: as much as the queries running at once may hold, for no longer than the
    // engine keeps rows in memory (checked here too, so an idle session's cursor goes in time).
    let limits = registry.limits();
    let cursors = Arc::new(cursor::Cursors::new(
        limits.query_memory.saturating_mul(limits.concurrent_queries.max(1)),
        registry.memory_horizon(),
    ));
    let sweep = Arc::downgrade(&cursors);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let Some(cursors) = sweep.upgrade() else { return };
            let n = cursors.expire();
            if n > 0 {
                tracing::info!(
                    "closed {n} cursors after {} s (retention.memory_s)",
                    cursors.max_age.as_secs()
                );
            }
        }
    });
    // Refusals are logged at most once every 10 s, with the count: a storm is one line, not one
    // line a connection.
    let refused = Tally::new(Duration::from_secs(10));
    // So are connections closed at the login timeout: a client may open them as fast.
    let timed_out = Arc::new(Tally::new(Duration::from_secs(10)));
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors, most likely: wait rather than spin.
                tracing::warn!("psql endpoint: accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            if let Some(refused) = refused.count() {
                tracing::warn!(
                    %peer,
                    "psql connection refused: {} connections are open (server.max_connections); {refused} refused so far",
                    edge.max_connections
                );
            }
            continue;
        };
        // A second handle on the socket, to notice the client leaving while a query runs.
        let (socket, watch) = match split_watch(socket) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(%peer, "psql connection: {e}");
                continue;
            }
        };
        let authed = Arc::new(AtomicBool::new(false));
        let id = cursors.session();
        let factory = Arc::new(Factory {
            session: Arc::new(Session {
                registry: Arc::clone(&registry),
                watch,
                audit: edge.audit.clone(),
                credentials: Arc::clone(&credentials),
                parser: Arc::new(extended::Parser {
                    registry: Arc::clone(&registry),
                    credentials: Arc::clone(&credentials),
                    session: id,
                    cursors: Arc::clone(&cursors),
                }),
                zone: std::sync::Mutex::new(edge.time_zone.clone()),
                default_zone: edge.time_zone.clone(),
                id,
                cursors: Arc::clone(&cursors),
                portals: Mutex::new(Default::default()),
            }),
            credentials: Arc::clone(&credentials),
            failures: Arc::clone(&failures),
            authed: Arc::clone(&authed),
            audit: edge.audit.clone(),
            sessions: Arc::clone(&sessions),
            cancel: Arc::clone(&cancel),
        });
        let auth_timeout = edge.auth_timeout;
        let timed_out = Arc::clone(&timed_out);
        tokio::spawn(async move {
            let _slot = slot;
            let session = pgwire::tokio::process_socket(socket, None, factory);
            tokio::pin!(session);
            let ended = tokio::select! {
                r = &mut session => Some(r),
                _ = tokio::time::sleep(auth_timeout) => None,
            };
            let r = match ended {
                Some(r) => r,
                None if !authed.load(Ordering::SeqCst) => {
                    if let Some(n) = timed_out.count() {
                        tracing::warn!(
                            %peer,
                            "psql connection closed: not logged in within {} s ({n} so far)",
                            auth_timeout.as_secs()
                        );
                    }
                    return;
                }
                None => session.await,
            };
            if let Err(e) = r {
                tracing::info!(%peer, "psql session ended: {e}");
            }
        });
    }
}

fn split_watch(
    socket: tokio::net::TcpStream,
) -> std::io::Result<(tokio::net::TcpStream, tokio::net::TcpStream)> {
    let std = socket.into_std()?;
    let watch = std.try_clone()?;
    Ok((tokio::net::TcpStream::from_std(std)?, tokio::net::TcpStream::from_std(watch)?))
}

/// Resolves when the client has closed its side of the connection.
async fn client_gone(watch: &tokio::net::TcpStream) {
    let mut byte = [0u8; 1];
    loop {
        match watch.peek(&mut byte).await {
            Ok(0) | Err(_) => return,
            // The client sent more (it pipelines): look again later.
            Ok(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Failed logins, per source address and per user name, within the last [`FAILURE_WINDOW`]:
/// one policy for every endpoint that logs people in (psql here, HTTP in the pipelines).
#[derive(Debug, Default)]
pub struct Failures {
    by: Mutex<HashMap<String, (u32, Instant)>>,
}

/// Failures older than this are forgotten.
const FAILURE_WINDOW: Duration = Duration::from_secs(600);

impl Failures {
    /// Records a failure of `keys`; returns the failures counted for the worst of them.
    pub fn record(&self, keys: &[String]) -> u32 {
        let mut by = self.by.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        by.retain(|_, (_, at)| now.duration_since(*at) < FAILURE_WINDOW);
        // Bounded: an attacker rotating user names could otherwise grow the map without end.
        if by.len() > 100_000 {
            by.clear();
        }
        keys.iter()
            .map(|k| {
                let e = by.entry(k.clone()).or_insert((0, now));
                *e = (e.0 + 1, now);
                e.0
            })
            .max()
            .unwrap_or(0)
    }

    /// Forgets the failures of `key` (after a success).
    pub fn clear(&self, key: &str) {
        self.by.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

/// How long a failed login waits for its answer after `n` failures: 250 ms, doubling, at
/// most 8 s (300 guesses then take over half an hour from one source, or for one user).
pub fn failure_delay(n: u32) -> Duration {
    Duration::from_millis(250u64 << n.saturating_sub(1).min(5))
}

const ITERATIONS: usize = 4096;

#[derive(Debug)]
struct Accounts(Arc<Credentials>);

#[async_trait]
impl AuthSource for Accounts {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let Some(account) = self.0.accounts.iter().find(|a| Some(a.user.as_str()) == login.user()) else {
            return Err(PgWireError::InvalidPassword(login.user().unwrap_or_default().to_owned()));
        };
        let salt: Vec<u8> = rand::random::<[u8; 16]>().to_vec();
        let hash = gen_salted_password(&account.password, &salt, ITERATIONS);
        Ok(Password::new(Some(salt), hash))
    }
}

struct Factory {
    session: Arc<Session>,
    credentials: Arc<Credentials>,
    failures: Arc<Failures>,
    authed: Arc<AtomicBool>,
    audit: Option<Arc<AuditLog>>,
    sessions: Arc<ConnectionManager>,
    cancel: Arc<DefaultCancelHandler>,
}

impl PgWireServerHandlers for Factory {
    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::clone(&self.cancel)
    }

    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.session)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.session)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        let mut scram = ScramAuth::new(Arc::new(Accounts(Arc::clone(&self.credentials))));
        scram.set_iterations(ITERATIONS);
        Arc::new(Login {
            inner: SASLAuthStartupHandler::new(Arc::new(parameters(&self.session.zone())))
                .with_scram(scram)
                .with_connection_manager(Arc::clone(&self.sessions)),
            failures: Arc::clone(&self.failures),
            authed: Arc::clone(&self.authed),
            audit: self.audit.clone(),
        })
    }
}

/// SCRAM login, with failures logged and delayed, and success noted (the auth timeout).
struct Login<H> {
    inner: H,
    failures: Arc<Failures>,
    authed: Arc<AtomicBool>,
    audit: Option<Arc<AuditLog>>,
}

#[async_trait]
impl<H: StartupHandler> StartupHandler for Login<H> {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let r = self.inner.on_startup(client, message).await;
        let ip = client.socket_addr().ip().to_string();
        let name = actor(client.metadata().get("user").map_or("", String::as_str));
        let source = format!("source {ip}");
        let user = format!("user {name}");
        match &r {
            Err(PgWireError::InvalidPassword(_)) => {
                if let Some(a) = &self.audit {
                    a.record(&name, "login.failed", "psql", &[("source", &ip)]);
                }
                let n = self.failures.record(&[source.clone(), user.clone()]);
                let delay = failure_delay(n);
                tracing::warn!(
                    "psql login failed ({source}, {user}): {n} failure(s) in the last {} min; answering in {} ms",
                    FAILURE_WINDOW.as_secs() / 60,
                    delay.as_millis()
                );
                tokio::time::sleep(delay).await;
            }
            Ok(()) if matches!(client.state(), PgWireConnectionState::ReadyForQuery) => {
                if let Some(a) = &self.audit {
                    a.record(&name, "login", "psql", &[("source", &ip)]);
                }
                self.authed.store(true, Ordering::SeqCst);
                self.failures.clear(&source);
                self.failures.clear(&user);
            }
            _ => {}
        }
        r
    }
}

struct Session {
    registry: Arc<Registry>,
    watch: tokio::net::TcpStream,
    audit: Option<Arc<AuditLog>>,
    credentials: Arc<Credentials>,
    /// Plans the statements clients prepare (the extended protocol).
    parser: Arc<extended::Parser>,
    /// The session's `TimeZone` (`SET TimeZone`): what queries print instants in.
    zone: std::sync::Mutex<String>,
    /// The zone `RESET TimeZone` goes back to (`server.time_zone`).
    default_zone: String,
    /// The session's id among [`Session::cursors`]' holders.
    id: u64,
    /// Every session's cursors (`DECLARE`, `FETCH`): an erasure closes them all.
    cursors: Arc<cursor::Cursors>,
    /// Cursors given a portal of their name (the extended protocol describes them): removed
    /// from the client's portals once the cursor is closed.
    portals: Mutex<std::collections::BTreeSet<String>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        // A session's cursors end with it (closing them cannot fail).
        let _ = self.cursors.close(self.id, None);
    }
}

/// The settings a client is told as it logs in: the same as `SHOW` answers, in `zone`.
fn parameters(zone: &str) -> DefaultServerParameterProvider {
    let mut p = DefaultServerParameterProvider::default();
    p.server_version = crate::pg_catalog::SERVER_VERSION.to_owned();
    p.is_superuser = false;
    p.date_style = server_parameter("DATESTYLE").unwrap_or_default().to_owned();
    zone.clone_into(&mut p.time_zone);
    p
}

/// The settings `SHOW` answers (`SHOW ALL` lists them): name, value and what it is.
const SETTINGS: [(&str, &str, &str); 14] = [
    ("application_name", "", "Sets the application name to be reported in statistics and logs."),
    ("client_encoding", "UTF8", "Sets the client's character set encoding."),
    ("datestyle", "ISO, MDY", "Sets the display format for date and time values."),
    (
        "default_transaction_isolation",
        "read committed",
        "Sets the transaction isolation level of each new transaction.",
    ),
    ("integer_datetimes", "on", "Shows whether datetimes are integer based."),
    ("is_superuser", "off", "Shows whether the current user is a superuser."),
    ("max_identifier_length", "63", "Shows the maximum identifier length."),
    ("search_path", "public", "Sets the schema search order for names that are not schema-qualified."),
    ("server_encoding", "UTF8", "Shows the server (database) character set encoding."),
    ("server_version", crate::pg_catalog::SERVER_VERSION, "Shows the server version."),
    ("server_version_num", crate::pg_catalog::SERVER_VERSION_NUM, "Shows the server version as an integer."),
    ("standard_conforming_strings", "on", "Causes '...' strings to treat backslashes literally."),
    // (Answered with the session's zone: `Session::zone`.)
    ("timezone", "UTC", "Sets the time zone for displaying and interpreting time stamps."),
    ("transaction_isolation", "read committed", "Sets the current transaction's isolation level."),
];

/// The value of a server setting drivers ask for with `SHOW` (any case), if it is one.
pub(crate) fn server_parameter(name: &str) -> Option<&'static str> {
    SETTINGS.iter().find(|(n, ..)| n.eq_ignore_ascii_case(name)).map(|(_, value, _)| *value)
}

/// The zone a `SET [SESSION | LOCAL] TimeZone | TIME ZONE [TO | =] value` or a `RESET
/// TimeZone` sets, as [`zone_name`] reads it; empty for `RESET`, `DEFAULT` and `LOCAL` (the
/// server's `server.time_zone`); PostgreSQL's error for anything else. None for other
/// statements.
fn time_zone_set(text: &str) -> Option<Result<String, ErrorInfo>> {
    // Every statement passes here: only a SET or RESET is read into words.
    let head = text.trim_start();
    if !(head.get(..3).is_some_and(|h| h.eq_ignore_ascii_case("SET"))
        || head.get(..5).is_some_and(|h| h.eq_ignore_ascii_case("RESET")))
    {
        return None;
    }
    let w = statement_words(text)?;
    let words: Vec<String> = w.iter().map(|x| x.to_ascii_uppercase()).collect();
    let mut at = usize::from(matches!(words.get(1).map(String::as_str), Some("SESSION" | "LOCAL"))) + 1;
    match (words.first().map(String::as_str), words.get(at).map(String::as_str)) {
        (Some("SET" | "RESET"), Some("TIMEZONE")) => at += 1,
        (Some("SET"), Some("TIME")) if words.get(at + 1).is_some_and(|z| z == "ZONE") => at += 2,
        _ => return None,
    }
    if words[0] == "RESET" {
        return Some(Ok(String::new()));
    }
    if matches!(words.get(at).map(String::as_str), Some("TO" | "=")) {
        at += 1;
    }
    let value = w.get(at)?.trim_matches('\'').to_owned();
    if ["DEFAULT", "LOCAL"].contains(&value.to_ascii_uppercase().as_str()) {
        return Some(Ok(String::new()));
    }
    match zone_name(&value) {
        Some(z) => Some(Ok(z)),
        None => {
            let mut info = ErrorInfo::new(
                "ERROR".into(),
                "22023".into(),
                format!("invalid value for parameter \"TimeZone\": \"{value}\""),
            );
            info.hint = Some(
                "name a zone of the IANA database, such as 'Africa/Casablanca' (Morocco's clocks, \
                 Ramadan included) or 'UTC'"
                    .into(),
            );
            Some(Err(info))
        }
    }
}

/// A zone of the IANA database under its own spelling (`africa/casablanca` is
/// `Africa/Casablanca`), `UTC` for UTC's names; None for anything else. PostgreSQL reads a
/// bare offset as a POSIX zone, west of Greenwich when positive (`+01:00` is an hour behind
/// UTC), so offsets other than UTC's are not zones here: the zone's name is asked for instead.
pub fn zone_name(value: &str) -> Option<String> {
    let utc = ["UTC", "ETC/UTC", "GMT", "ETC/GMT", "Z", "ZULU", "UCT", "0", "+00", "+00:00"];
    if utc.contains(&value.to_ascii_uppercase().as_str()) {
        return Some("UTC".to_owned());
    }
    chrono_tz::TZ_VARIANTS.iter().find(|z| z.name().eq_ignore_ascii_case(value)).map(|z| z.name().to_owned())
}

fn denied(role: Role, what: &str) -> Response {
    error("42501", format!("permission denied: the role {role} cannot {what}; it sees {}", role.sees()))
}

/// A user name as the audit log holds it: printable, at most 64 characters (a failed login may
/// claim any name).
fn actor(name: &str) -> String {
    name.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// Source name of statements typed in psql, in error positions.
const SOURCE: &str = "psql";

fn user_error(e: SqlError) -> Response {
    let code = e.sqlstate();
    let (message, hint) = match &e {
        SqlError::User { position, message, fix, .. } => {
            let at = position.as_ref().map(|p| format!("{p}: ")).unwrap_or_default();
            (format!("{at}{message}"), Some(fix.clone()))
        }
        other => (other.to_string(), None),
    };
    let mut info = ErrorInfo::new("ERROR".into(), code.into(), message);
    info.hint = hint;
    Response::Error(Box::new(info))
}

/// A statement refused (a cursor's, a failed block's), with its fix as the hint.
fn refused(r: cursor::Refusal) -> Response {
    let mut info = ErrorInfo::new("ERROR".into(), r.code.into(), r.message);
    info.hint = Some(r.fix);
    Response::Error(Box::new(info))
}

fn error(code: &str, message: impl Into<String>) -> Response {
    Response::Error(Box::new(ErrorInfo::new("ERROR".into(), code.into(), message.into())))
}

fn upper(w: &[String], i: usize) -> String {
    w.get(i).map(|s| s.to_ascii_uppercase()).unwrap_or_default()
}

/// `ROLLBACK TO [SAVEPOINT] name`.
fn rolls_back_to_savepoint(w: &[String]) -> bool {
    matches!(upper(w, 0).as_str(), "ROLLBACK" | "ABORT") && upper(w, 1) == "TO"
}

#[async_trait]
impl SimpleQueryHandler for Session {
    async fn on_query<C>(
        &self,
        client: &mut C,
        query: pgwire::messages::simplequery::Query,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // `ROLLBACK TO SAVEPOINT` after an error goes back into the block, as PostgreSQL's
        // does: psql's ON_ERROR_ROLLBACK sends it after each failed statement in a block.
        // (pgwire keeps a failed block failed whatever the statement answers.)
        if client.transaction_status() == TransactionStatus::Error
            && rolls_back_to_savepoint(&statement_words(&query.query).unwrap_or_default())
        {
            client.set_transaction_status(TransactionStatus::Transaction);
        }
        self._on_query(client, query).await
    }

    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statements = match split_statements(query, SOURCE) {
            Ok(s) => s,
            Err(e) => return Ok(vec![user_error(e)]),
        };
        let mut out = Vec::new();
        let user = actor(client.metadata().get("user").map_or("", String::as_str));
        // Logged in, so the account exists; were it gone, the session would get nothing.
        let role = self.credentials.role_of(&user).unwrap_or(Role::Auditor);
        for st in statements {
            let r = match self.in_failed_block(client.transaction_status(), &st.text) {
                Some(r) => r,
                None => self.statement(&st.text, &st.blanked, &user, role, &Format::UnifiedText).await,
            };
            self.report_zone(client, &st.text, matches!(r, Response::Execution(_))).await?;
            self.audit(&user, &st.text, &r);
            let failed = matches!(r, Response::Error(_));
            // A SUBSCRIBE that opens the query string is streamed here, each change as it comes
            // (after it, the statements' answers would come out of order: a later one waits).
            let r = match r {
                Response::CopyOut(copy) if out.is_empty() => {
                    // A COPY's CSV header is a line of the data, not a row of the count.
                    let header = copy::parse(&st.text).is_ok_and(|c| c.header);
                    stream_copy_out(client, copy, usize::from(header)).await?
                }
                r => r,
            };
            out.push(r);
            if failed {
                break;
            }
        }
        self.forget_closed_cursors(client);
        Ok(out)
    }
}

impl Session {
    /// The session's `TimeZone`.
    fn zone(&self) -> String {
        self.zone.lock().expect("zone").clone()
    }

    /// After a `SET TimeZone` that took effect, tells the client the new zone as PostgreSQL
    /// does (a ParameterStatus message: drivers read instants' text in it).
    async fn report_zone<C>(&self, client: &mut C, text: &str, done: bool) -> PgWireResult<()>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        use futures::SinkExt;
        if done && time_zone_set(text).is_some_and(|z| z.is_ok()) {
            let status = pgwire::messages::startup::ParameterStatus::new("TimeZone".into(), self.zone());
            client.send(PgWireBackendMessage::ParameterStatus(status)).await?;
        }
        Ok(())
    }

    /// Records a statement and its outcome: its kind, the rule or stream it named, a digest of
    /// its text.
    fn audit(&self, user: &str, text: &str, r: &Response) {
        let Some(a) = &self.audit else { return };
        let w = statement_words(text).unwrap_or_default();
        let (w0, w1) = (upper(&w, 0), upper(&w, 1));
        // A cursor's query is recorded at its DECLARE; reading its rows adds nothing to say.
        if matches!(w0.as_str(), "FETCH" | "MOVE" | "CLOSE") {
            return;
        }
        let named = |i: usize| {
            let i = if upper(&w, i) == "IF" { i + 2 + usize::from(upper(&w, i + 1) == "NOT") } else { i };
            w.get(i).cloned().unwrap_or_default()
        };
        let (action, object) = match (w0.as_str(), w1.as_str()) {
            ("CREATE", "RULE") => ("rule.create", named(2)),
            ("INSERT", _) => ("table.insert", upper(&w, 2).to_lowercase()),
            ("DELETE", _) => ("table.delete", upper(&w, 2).to_lowercase()),
            ("DROP", "RULE") => ("rule.drop", named(2)),
            ("SHOW" | "ERASE", kind)
                if !["RULES", "STREAMS", "TABLES", "COLUMNS"].contains(&kind) && !kind.is_empty() =>
            {
                (if w0 == "ERASE" { "subject.erase" } else { "subject.show" }, kind.to_lowercase())
            }
            ("SUBSCRIBE", _) => ("subscribe", named(if w1 == "TO" { 2 } else { 1 })),
            ("COPY", "SUBSCRIBE") => ("subscribe", named(if upper(&w, 2) == "TO" { 3 } else { 2 })),
            _ => ("query", String::new()),
        };
        let result = match r {
            Response::Error(e) => format!("error {}", e.code),
            _ => "ok".to_owned(),
        };
        a.record(user, action, &actor(&object), &[("sql", &a.digest(text)), ("result", &result)]);
    }

    /// After an error inside BEGIN … COMMIT, what PostgreSQL answers until the block ends: every
    /// statement refused but ROLLBACK, and COMMIT taken as ROLLBACK (`None`: run it).
    fn in_failed_block(&self, status: TransactionStatus, text: &str) -> Option<Response> {
        if status != TransactionStatus::Error {
            return None;
        }
        let w = statement_words(text).unwrap_or_default();
        match upper(&w, 0).as_str() {
            // (ROLLBACK TO a savepoint from the extended protocol: run, but the block stays
            // failed, as pgwire keeps it.)
            "ROLLBACK" | "ABORT" => None,
            "COMMIT" | "END" => {
                self.cursors.end_transaction(self.id);
                Some(Response::TransactionEnd(Tag::new("ROLLBACK")))
            }
            _ => Some(refused(cursor::Refusal {
                code: "25P02",
                message: "current transaction is aborted, commands ignored until end of transaction block".into(),
                fix: "end the block with ROLLBACK; vigil has no transactions, so the statements before the error took effect"
                    .into(),
            })),
        }
    }

    /// Runs one statement; rows go out in `format` (the extended protocol's Bind asks).
    async fn statement(
        &self,
        text: &str,
        blanked: &str,
        user: &str,
        role: Role,
        format: &Format,
    ) -> Response {
        // split_statements tokenized the text already, so this does not fail.
        let w = statement_words(text).unwrap_or_default();
        let changes = matches!(
            (upper(&w, 0).as_str(), upper(&w, 1).as_str()),
            ("CREATE", "RULE") | ("DROP", "RULE") | ("INSERT", _) | ("DELETE", _)
        );
        if changes && !role.may_change() {
            return denied(role, "change rules or the watchlist");
        }
        let named = match (upper(&w, 0).as_str(), upper(&w, 1).as_str()) {
            ("EXPLAIN", "RULE") => w.get(2),
            ("SUBSCRIBE", "TO") => w.get(2),
            ("SUBSCRIBE", _) => w.get(1),
            ("COPY", "SUBSCRIBE") => w.get(if upper(&w, 2) == "TO" { 3 } else { 2 }),
            _ => None,
        };
        if let Some(e) = named.and_then(|n| self.registry.get(n))
            && !self.registry.may_read_rule(role, &e.rule)
        {
            return denied(role, &format!("read the rule {} (it reads personal data)", e.rule.name));
        }
        match (upper(&w, 0).as_str(), upper(&w, 1).as_str()) {
            ("CREATE", "RULE") => match self.registry.create(blanked, SOURCE) {
                Ok(_) => Response::Execution(Tag::new("CREATE RULE")),
                Err(e) => user_error(e),
            },
            ("DROP", "RULE") => {
                let if_exists = upper(&w, 2) == "IF" && upper(&w, 3) == "EXISTS";
                let Some(name) = w.get(if if_exists { 4 } else { 2 }) else {
                    return error("42601", "DROP RULE needs a rule name");
                };
                match self.registry.drop_rule(name, if_exists) {
                    Ok(_) => Response::Execution(Tag::new("DROP RULE")),
                    Err(e) => user_error(e),
                }
            }
            ("SHOW", "RULES") => self.show_rules(role),
            ("SHOW", "STREAMS" | "TABLES") => text_response(
                &["name", "kind", "what"],
                self.registry.readable(role).into_iter().map(|r| r.into_iter().map(Some).collect()).collect(),
            ),
            ("SHOW", "COLUMNS") | ("DESCRIBE", _) => {
                // SHOW COLUMNS FROM name, DESCRIBE name.
                let at = if upper(&w, 0) == "DESCRIBE" { 1 } else { 3 };
                let Some(name) = w.get(at).filter(|_| at == 1 || upper(&w, 2) == "FROM") else {
                    return error(
                        "42601",
                        format!("{SOURCE}: write SHOW COLUMNS FROM name, or DESCRIBE name"),
                    );
                };
                match self.registry.columns(role, name) {
                    Ok(rows) => text_response(
                        &["column", "type", "nullable", "key", "personal"],
                        rows.into_iter().map(|r| r.into_iter().map(Some).collect()).collect(),
                    ),
                    Err(e) => user_error(e),
                }
            }
            // No transactions: each statement takes effect at once, reads see the state as it is.
            // The words drivers send around their statements open and end a block as clients
            // know it (psql's prompt, a driver's COMMIT, the cursors that close at its end).
            ("BEGIN" | "START", _) => Response::TransactionStart(Tag::new(if upper(&w, 0) == "BEGIN" {
                "BEGIN"
            } else {
                "START TRANSACTION"
            })),
            ("COMMIT" | "END", _) => {
                self.cursors.end_transaction(self.id);
                Response::TransactionEnd(Tag::new("COMMIT"))
            }
            // Savepoints mark nothing (nothing is rolled back), and the block goes on: psql's
            // ON_ERROR_ROLLBACK and psycopg's nested `conn.transaction()` set and release them.
            ("SAVEPOINT", _) => Response::Execution(Tag::new("SAVEPOINT")),
            ("RELEASE", _) => Response::Execution(Tag::new("RELEASE")),
            _ if rolls_back_to_savepoint(&w) => Response::Execution(Tag::new("ROLLBACK")),
            ("ROLLBACK" | "ABORT", _) => {
                self.cursors.end_transaction(self.id);
                Response::TransactionEnd(Tag::new("ROLLBACK"))
            }
            ("DECLARE", _) => self.declare(text, role, user, None).await,
            (verb @ ("FETCH" | "MOVE"), _) => {
                let (direction, name) = match cursor::parse_fetch(&w) {
                    Ok(x) => x,
                    Err(r) => return refused(r),
                };
                match self.cursors.fetch(self.id, &name, direction, verb == "FETCH") {
                    Ok(f) if verb == "MOVE" => Response::Execution(Tag::new("MOVE").with_rows(f.count)),
                    Ok(f) => {
                        let format = if f.binary { &Format::UnifiedBinary } else { format };
                        match batches_response(&f.schema, &f.batches, format) {
                            Response::Query(mut q) => {
                                q.set_command_tag("FETCH");
                                Response::Query(q)
                            }
                            r => r,
                        }
                    }
                    Err(r) => refused(r),
                }
            }
            ("CLOSE", _) => match cursor::parse_close(&w) {
                Ok(name) => match self.cursors.close(self.id, name.as_deref()) {
                    Ok(()) => Response::Execution(Tag::new(if name.is_some() {
                        "CLOSE CURSOR"
                    } else {
                        "CLOSE CURSOR ALL"
                    })),
                    Err(r) => refused(r),
                },
                Err(r) => refused(r),
            },
            ("SET" | "RESET", _) if let Some(zone) = time_zone_set(text) => match zone {
                Ok(zone) => {
                    let zone = if zone.is_empty() { self.default_zone.clone() } else { zone };
                    *self.zone.lock().expect("zone") = zone;
                    Response::Execution(Tag::new(&upper(&w, 0)))
                }
                Err(info) => Response::Error(Box::new(info)),
            },
            ("SET" | "RESET" | "DISCARD", _) => Response::Execution(Tag::new(&upper(&w, 0))),
            // SHOW TimeZone, SHOW TIME ZONE.
            ("SHOW", p @ ("TIMEZONE" | "TIME")) if p == "TIMEZONE" || upper(&w, 2) == "ZONE" => {
                text_response(&["TimeZone"], vec![vec![Some(self.zone())]])
            }
            ("SHOW", p) if server_parameter(p).is_some() => {
                text_response(&[&p.to_ascii_lowercase()], vec![vec![server_parameter(p).map(str::to_owned)]])
            }
            ("SHOW", "ALL") => text_response(
                &["name", "setting", "description"],
                SETTINGS
                    .iter()
                    .map(|(n, v, d)| {
                        let v = if *n == "timezone" { self.zone() } else { (*v).into() };
                        vec![Some((*n).into()), Some(v), Some((*d).into())]
                    })
                    .collect(),
            ),
            // `SHOW work_mem`: a setting vigil does not have (with a value in quotes, it is a
            // request for what is held about a person, below).
            ("SHOW", p) if subject_value(text).is_none() => {
                let mut info = ErrorInfo::new(
                    "ERROR".into(),
                    "42704".into(),
                    format!("unrecognized configuration parameter \"{}\"", p.to_ascii_lowercase()),
                );
                info.hint = Some(
                    "SHOW ALL lists the settings vigil has; SHOW STREAMS what you may query; \
                     SHOW PLATE '…' what is held about a plate (the value in single quotes)"
                        .into(),
                );
                Response::Error(Box::new(info))
            }
            ("SHOW" | "ERASE", kind) if !kind.is_empty() => {
                let erase = upper(&w, 0) == "ERASE";
                if !role.may_request_subject() {
                    return denied(
                        role,
                        "list or erase what is held about a person (admins and auditors do)",
                    );
                }
                let Some(value) = subject_value(text) else {
                    return error(
                        "42601",
                        format!(
                            "{SOURCE}: write SHOW {kind} '…' or ERASE {kind} '…', the value in single quotes"
                        ),
                    );
                };
                let (registry, kind, user) = (Arc::clone(&self.registry), kind.to_owned(), user.to_owned());
                let answer = tokio::task::spawn_blocking(move || {
                    registry.subject(&kind, &value, erase, &user, std::time::Duration::from_secs(120))
                })
                .await;
                if erase && matches!(answer, Ok(Ok(_))) {
                    // Cursors' rows are copies that may hold what was erased.
                    let n = self.cursors.close_everywhere();
                    if n > 0 {
                        tracing::info!("an erasure closed {n} open cursors");
                    }
                }
                match answer {
                    Ok(Ok(rows)) => text_response(
                        &["what", "place", "rows", "detail"],
                        rows.into_iter().map(|r| r.into_iter().map(Some).collect()).collect(),
                    ),
                    Ok(Err(e)) => error("22023", e),
                    Err(e) => error("XX000", format!("the request failed: {e}")),
                }
            }
            ("INSERT", _) | ("DELETE", _) => {
                // Answered once the engine has journaled the change (its next tick): off the
                // connections' thread.
                let (registry, text, user) = (Arc::clone(&self.registry), text.to_owned(), user.to_owned());
                match tokio::task::spawn_blocking(move || registry.write(&text, &user)).await {
                    Ok(Ok(("INSERT", n))) => Response::Execution(Tag::new("INSERT").with_oid(0).with_rows(n)),
                    Ok(Ok((tag, n))) => Response::Execution(Tag::new(tag).with_rows(n)),
                    Ok(Err(e)) => user_error(e),
                    Err(e) => error("XX000", format!("the statement failed: {e}")),
                }
            }
            ("EXPLAIN", "RULE") => match w.get(2).and_then(|n| self.registry.get(n)) {
                Some(e) => {
                    let plan =
                        format!("{}\nLogical plan (DataFusion):\n{}", e.rule.explain(), e.rule.logical);
                    let rows: Vec<Vec<Option<String>>> =
                        plan.lines().map(|l| vec![Some(l.to_owned())]).collect();
                    text_response(&["plan"], rows)
                }
                None => error("42704", format!("no rule named {}", w.get(2).map_or("", String::as_str))),
            },
            ("SUBSCRIBE", _) => self.subscribe(w.get(if upper(&w, 1) == "TO" { 2 } else { 1 })).await,
            ("COPY", "SUBSCRIBE") => self.subscribe(w.get(if upper(&w, 2) == "TO" { 3 } else { 2 })).await,
            ("COPY", _) => self.copy_out(text, role, user).await,
            // A query's plan (EXPLAIN [ANALYZE] SELECT …): DataFusion's, over what the role may read.
            ("SELECT" | "WITH" | "VALUES" | "EXPLAIN", _) => match self.query(text, role, user).await {
                Ok((schema, batches)) => {
                    batches_response(&names::pg_names(text, &schema), &batches, &Format::UnifiedText)
                }
                Err(r) => r,
            },
            _ => error(
                "0A000",
                format!(
                    "{SOURCE}: {} is not a statement vigil runs; use CREATE RULE, DROP RULE, SHOW RULES, \
                     EXPLAIN RULE, SUBSCRIBE, SELECT, EXPLAIN SELECT, COPY (SELECT …) TO STDOUT, \
                     DECLARE … CURSOR FOR SELECT …, FETCH, CLOSE, INSERT and DELETE on the watchlist, \
                     SHOW PLATE or ERASE PLATE",
                    w.first().map_or("an empty statement", String::as_str)
                ),
            ),
        }
    }

    /// `DECLARE name CURSOR FOR query`: the query runs now, as a SELECT would, and the
    /// session's cursor holds its rows ([`cursor`]).
    /// `params` are the extended protocol's, bound into the query's plan.
    async fn declare(
        &self,
        text: &str,
        role: Role,
        user: &str,
        params: Option<Vec<Option<String>>>,
    ) -> Response {
        let d = match cursor::parse_declare(text) {
            Ok(d) => d,
            Err(r) => return refused(r),
        };
        if let Err(r) = self.cursors.admit(self.id, &d.name) {
            return refused(r);
        }
        match self.query_with(&d.query, role, user, params).await {
            Ok((schema, batches)) => {
                let schema = unique_names(&names::pg_names(&d.query, &schema));
                match self.cursors.declare(self.id, &d.name, cursor::Cursor::new(schema, batches, &d)) {
                    Ok(()) => Response::Execution(Tag::new("DECLARE CURSOR")),
                    Err(r) => refused(r),
                }
            }
            Err(r) => r,
        }
    }

    /// Removes the portals of cursors since closed (COMMIT, CLOSE, an erasure, their age)
    /// from the client's: a session that runs for months declares as many as it likes.
    fn forget_closed_cursors<C: ClientPortalStore>(&self, client: &C)
    where
        C::PortalStore: PortalStore,
    {
        let mut portals = self.portals.lock().expect("portals");
        portals.retain(|name| {
            let open = self.cursors.schema(self.id, name).is_some();
            if !open {
                client.portal_store().rm_portal(name);
            }
            open
        });
    }

    fn show_rules(&self, role: Role) -> Response {
        let rows = self
            .registry
            .list()
            .into_iter()
            .filter(|e| self.registry.may_read_rule(role, &e.rule))
            .map(|e| {
                let o = &e.rule.options;
                vec![
                    Some(e.rule.name.clone()),
                    Some(o.severity.clone()),
                    Some(format!("{:?}", o.emit).to_ascii_lowercase()),
                    Some(format!("{} s", o.backfill_ms / 1000)),
                    Some(e.origin.clone()),
                    Some(e.out.failed().unwrap_or_else(|| "running".into())),
                    Some(e.out.rows_held().to_string()),
                    Some(e.rule.sql.split_whitespace().collect::<Vec<_>>().join(" ")),
                ]
            })
            .collect();
        text_response(&["name", "severity", "emit", "backfill", "origin", "state", "rows_held", "sql"], rows)
    }

    /// `COPY (SELECT …) TO STDOUT` ([`copy`]): the query runs as a SELECT would, and its rows
    /// go out as COPY data.
    async fn copy_out(&self, text: &str, role: Role, user: &str) -> Response {
        let copy = match copy::parse(text) {
            Ok(c) => c,
            Err(e) => return user_error(e),
        };
        match self.query(&copy.query, role, user).await {
            Ok((schema, batches)) => {
                let columns = schema.fields().len();
                let schema = names::pg_names(&copy.query, &schema);
                Response::CopyOut(CopyResponse::new(0, columns, copy.lines(&schema, batches).map(Ok)))
            }
            Err(r) => r,
        }
    }

    /// Runs a query for this client (SELECT, COPY's query): stopped if the client goes away.
    async fn query(
        &self,
        sql: &str,
        role: Role,
        user: &str,
    ) -> Result<(SchemaRef, Vec<RecordBatch>), Response> {
        self.query_with(sql, role, user, None).await
    }

    /// The same, with parameters bound into the plan.
    async fn query_with(
        &self,
        sql: &str,
        role: Role,
        user: &str,
        params: Option<Vec<Option<String>>>,
    ) -> Result<(SchemaRef, Vec<RecordBatch>), Response> {
        let zone = self.zone();
        let cursors = crate::pg_catalog::reads_catalog(sql).then(|| self.cursors.listing(self.id));
        tokio::select! {
            r = self.registry.query_in_session(sql, role, user, params, &zone, cursors) => r.map_err(user_error),
            // Dropping the query stops it.
            _ = client_gone(&self.watch) => {
                tracing::info!("a psql client went away: its query was stopped");
                Err(error("57014", "the client went away"))
            }
        }
    }

    async fn subscribe(&self, name: Option<&String>) -> Response {
        let Some(name) = name else { return error("42601", "SUBSCRIBE needs a rule name") };
        let Some(entry) = self.registry.get(name) else {
            return error("42704", format!("no rule named {name}; SHOW RULES lists them"));
        };
        let out = entry.out;
        let schema = entry.rule.schema.clone();
        let (snapshot, rx) = match out.snapshot_and_subscribe(&schema) {
            Ok(x) => x,
            Err(e) => return user_error(e),
        };
        let columns = schema.fields().len() + 2;
        // Instants print in the session's zone, as its queries' do.
        let zone = self.zone();
        let first = copy_rows(&snapshot, None, out.latest(), &zone);
        let live = live_changes(rx, name.clone(), zone);
        let data = stream::iter(first.into_iter().map(Ok)).chain(live);
        Response::CopyOut(CopyResponse::new(0, columns, data))
    }
}

/// Sends a COPY's rows as they come, flushing whenever the rows at hand are sent (pgwire's own
/// sender only queues them, so a live subscription's changes would wait for a full buffer);
/// answers the `COPY n` tag that ends it, `n` the messages sent less the first `uncounted`
/// (a CSV header).
async fn stream_copy_out<C>(client: &mut C, copy: CopyResponse, uncounted: usize) -> PgWireResult<Response>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    use futures::SinkExt;
    use pgwire::messages::copy::{CopyDone, CopyFail, CopyOutResponse};
    let formats = copy.column_formats();
    let CopyResponse { format, columns, data_stream, .. } = copy;
    client
        .send(PgWireBackendMessage::CopyOutResponse(CopyOutResponse::new(format, columns as i16, formats)))
        .await?;
    let mut rows = 0usize;
    let mut chunks = data_stream.ready_chunks(1024);
    while let Some(chunk) = chunks.next().await {
        for item in chunk {
            match item {
                Ok(data) if data.data.is_empty() => {}
                Ok(data) => {
                    rows += 1;
                    client.feed(PgWireBackendMessage::CopyData(data)).await?;
                }
                Err(e) => {
                    client.send(PgWireBackendMessage::CopyFail(CopyFail::new(e.to_string()))).await?;
                    return Err(e);
                }
            }
        }
        client.flush().await?;
    }
    client.send(PgWireBackendMessage::CopyDone(CopyDone::new())).await?;
    Ok(Response::Execution(Tag::new("COPY").with_rows(rows.saturating_sub(uncounted))))
}

/// A subscription's live changes as COPY rows. A subscriber that falls behind by more than the
/// channel holds has missed changes: it is told how many, with an error that ends the
/// `SUBSCRIBE` (its view would otherwise be silently wrong).
fn live_changes(
    rx: tokio::sync::broadcast::Receiver<Arc<Delta>>,
    rule: String,
    zone: String,
) -> impl futures::Stream<Item = PgWireResult<CopyData>> {
    stream::unfold(Some(rx), move |rx| {
        let (rule, zone) = (rule.clone(), zone.clone());
        async move {
            let mut rx = rx?;
            match rx.recv().await {
                Ok(d) => Some((Ok(copy_delta(&d, &zone)), Some(rx))),
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(rule = %rule, "a SUBSCRIBE fell behind and missed {n} changes");
                    let info = ErrorInfo::new(
                        "ERROR".into(),
                        "54000".into(),
                        format!(
                            "SUBSCRIBE {rule} fell behind and missed {n} changes (it may fall {} behind); \
                             read them from the rule's Parquet rows (<out>/rules/), or subscribe again",
                            crate::registry::SUBSCRIBE_CAPACITY
                        ),
                    );
                    Some((Err(PgWireError::UserError(Box::new(info))), None))
                }
                Err(RecvError::Closed) => None,
            }
        }
    })
}

/// COPY text rows for a delta: `time_ms \t diff \t columns...`.
fn copy_delta(d: &Delta, zone: &str) -> CopyData {
    let mut text = String::new();
    for chunk in copy_rows(&d.rows, Some(d), 0, zone) {
        text.push_str(std::str::from_utf8(&chunk.data).unwrap_or_default());
    }
    CopyData::new(Bytes::from(text))
}

/// The quoted value of `SHOW PLATE '…'` (a doubled quote is a quote).
fn subject_value(text: &str) -> Option<String> {
    let start = text.find('\'')?;
    let end = text.rfind('\'')?;
    (end > start).then(|| text[start + 1..end].replace("''", "'"))
}

/// COPY text rows, each after its time and diff (COPY's text format, escapes and `\N`
/// included), instants in `zone`; without a delta, a snapshot: diff 1 at time `as_of`.
fn copy_rows(rows: &RecordBatch, d: Option<&Delta>, as_of: u64, zone: &str) -> Vec<CopyData> {
    use std::fmt::Write;
    let zoned = crate::registry::in_zone(rows.schema(), vec![rows.clone()], zone);
    let rows = match &zoned {
        Ok((_, b)) if b.len() == 1 => &b[0],
        _ => rows,
    };
    copy::CopyOut::text().rows_after(rows, |i, line| {
        let (t, diff) = d.map_or((as_of, 1), |d| (d.times[i], d.diffs[i]));
        let _ = write!(line, "{t}\t{diff}\t");
    })
}

fn text_response(names: &[&str], rows: Vec<Vec<Option<String>>>) -> Response {
    let fields: Arc<Vec<FieldInfo>> = Arc::new(
        names
            .iter()
            .map(|n| FieldInfo::new((*n).into(), None, None, Type::VARCHAR, FieldFormat::Text))
            .collect(),
    );
    let mut encoder = DataRowEncoder::new(Arc::clone(&fields));
    let rows: Vec<PgWireResult<_>> = rows
        .into_iter()
        .map(|r| {
            for v in &r {
                encoder.encode_field(v)?;
            }
            Ok(encoder.take_row())
        })
        .collect();
    Response::Query(QueryResponse::new(fields, stream::iter(rows)))
}

/// Rows in the formats the client asked for: text as PostgreSQL prints values ([`types::write_pg_text`]),
/// binary as PostgreSQL's own encoding of the column's type ([`types::push_binary`]).
fn batches_response(schema: &SchemaRef, batches: &[RecordBatch], format: &Format) -> Response {
    let schema = unique_names(schema);
    let fields: Vec<(String, Type)> =
        schema.fields().iter().map(|f| (f.name().clone(), pg_type(f.data_type()))).collect();
    let fields: Arc<Vec<FieldInfo>> = Arc::new(extended::fields(&fields, format));
    let options = FormatOptions::default();
    let mut encoder = DataRowEncoder::new(Arc::clone(&fields));
    let mut rows: Vec<PgWireResult<_>> = Vec::new();
    for b in batches {
        let formatters: Vec<_> =
            b.columns().iter().filter_map(|c| ArrayFormatter::try_new(c.as_ref(), &options).ok()).collect();
        // A binary column as the Arrow type its PostgreSQL type is encoded from (None: as text).
        let binary: Vec<Option<ArrayRef>> = b
            .columns()
            .iter()
            .zip(fields.iter())
            .map(|(c, f)| {
                (f.format() == FieldFormat::Binary).then(|| types::binary_column(c, f.datatype())).flatten()
            })
            .collect();
        // Each value is written into one buffer, not a `String` or `Vec` of its own.
        let (mut value, mut bytes) = (String::new(), Vec::new());
        for i in 0..b.num_rows() {
            let mut row = || {
                for (((c, f), bin), info) in
                    b.columns().iter().zip(&formatters).zip(&binary).zip(fields.iter())
                {
                    match bin.as_ref().filter(|_| c.is_valid(i)) {
                        Some(a) => {
                            bytes.clear();
                            types::push_binary(&mut bytes, a.as_ref(), i);
                            encoder.encode_field(&bytes.as_slice())?
                        }
                        None if c.is_valid(i) => {
                            value.clear();
                            types::write_pg_text(&mut value, c.as_ref(), f, i);
                            // As text: pgwire would quote an array's whole text as one element.
                            let (format, options) = (info.format(), info.format_options());
                            encoder.encode_field_with_type_and_format(
                                &value.as_str(),
                                &Type::TEXT,
                                format,
                                options,
                            )?
                        }
                        None => encoder.encode_field(&None::<&str>)?,
                    }
                }
                Ok(encoder.take_row())
            };
            rows.push(row());
        }
    }
    Response::Query(QueryResponse::new(fields, stream::iter(rows)))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Int64Array;

    #[test]
    fn subscribed_rows_are_copys_text_after_their_time_and_diff() {
        use datafusion::arrow::array::StringArray;
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, true)]));
        let rows =
            RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec![Some("a\tb\\c"), None]))])
                .unwrap();
        let lines: Vec<String> = super::copy_rows(&rows, None, 7, "UTC")
            .iter()
            .map(|d| String::from_utf8(d.data.to_vec()).unwrap())
            .collect();
        assert_eq!(lines, ["7\t1\ta\\tb\\\\c\n", "7\t1\t\\N\n"]);
        // Instants in the session's zone, as its queries print them.
        use datafusion::arrow::array::TimestampMillisecondArray;
        use datafusion::arrow::datatypes::TimeUnit;
        let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        let schema = Arc::new(Schema::new(vec![Field::new("window_end", ts, false)]));
        let ends = TimestampMillisecondArray::from(vec![1_781_467_223_400]).with_timezone("UTC");
        let rows = RecordBatch::try_new(schema, vec![Arc::new(ends)]).unwrap();
        let line = |zone| String::from_utf8(super::copy_rows(&rows, None, 7, zone)[0].data.to_vec()).unwrap();
        assert_eq!(line("UTC"), "7\t1\t2026-06-14 20:00:23.4+00\n");
        assert_eq!(line("Africa/Casablanca"), "7\t1\t2026-06-14 21:00:23.4+01\n");
    }

    #[test]
    fn set_time_zone_names_a_zone_of_the_iana_database_or_is_refused_with_the_fix() {
        for (sql, zone) in [
            ("SET TimeZone = 'Africa/Casablanca'", "Africa/Casablanca"),
            ("set timezone to 'africa/casablanca';", "Africa/Casablanca"),
            ("SET SESSION TIME ZONE 'Asia/Kolkata'", "Asia/Kolkata"),
            ("SET TimeZone = 'UTC'", "UTC"),
            ("SET TIME ZONE 'Etc/UTC'", "UTC"),
            ("SET timezone TO DEFAULT", ""),
            ("RESET TimeZone", ""),
        ] {
            assert_eq!(
                super::time_zone_set(sql).map(|z| z.map_err(|e| e.message)),
                Some(Ok(zone.into())),
                "{sql}"
            );
        }
        for sql in ["SET TimeZone = 'Mars/Base'", "SET TIME ZONE '+01:00'"] {
            let e = super::time_zone_set(sql).unwrap().unwrap_err();
            assert_eq!(e.code, "22023", "{sql}");
            assert!(
                e.message.starts_with("invalid value for parameter \"TimeZone\""),
                "{sql}: {}",
                e.message
            );
            assert!(e.hint.unwrap().contains("'Africa/Casablanca'"), "{sql}");
        }
        for sql in ["SET datestyle = 'ISO'", "RESET ALL", "SELECT 1", "SHOW TimeZone"] {
            assert!(super::time_zone_set(sql).is_none(), "{sql}");
        }
    }
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use futures::StreamExt;

    use super::*;

    #[test]
    fn a_subscriber_that_falls_behind_is_told_how_many_changes_it_missed() {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let (tx, rx) = tokio::sync::broadcast::channel::<Arc<Delta>>(4);
        for v in 0..10i64 {
            let rows =
                RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(Int64Array::from(vec![v]))]).unwrap();
            tx.send(Arc::new(Delta::inserts(rows, vec![v as u64]))).unwrap();
        }
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let items: Vec<PgWireResult<CopyData>> = rt.block_on(async {
            drop(tx);
            live_changes(rx, "busy".into(), "UTC".into()).collect().await
        });
        // The lag ends the stream at once: one error, naming the rule and the count.
        assert_eq!(items.len(), 1);
        let Err(PgWireError::UserError(info)) = &items[0] else { panic!("{:?}", items[0].as_ref().err()) };
        assert_eq!(info.code, "54000");
        assert!(info.message.contains("SUBSCRIBE busy fell behind and missed 6 changes"), "{}", info.message);
    }
}

//! The PostgreSQL wire-protocol endpoint (pgwire): what analysts reach with `psql`.
//!
//! Statements (simple query protocol, several per query string allowed):
//! - `CREATE RULE name [WITH (severity = 'high', backfill = '10 minutes', emit = 'updates')] AS SELECT ...`
//! - `DROP RULE [IF EXISTS] name`, `SHOW RULES`, `EXPLAIN RULE name`
//! - `SUBSCRIBE [TO] name` (or `COPY (SUBSCRIBE name) TO STDOUT`): the rule's current contents,
//!   then every change as it happens, as COPY rows `time_ms, diff, columns...`; psql prints
//!   them as they arrive.
//! - any other `SELECT` (or `WITH ...`): run by DataFusion over the in-memory state: retained
//!   events of each stream, the reference tables, and each runtime rule by its name.
//!
//! Authentication is SCRAM-SHA-256 against one configured user; there is no anonymous access.
//! Errors carry the SQLSTATE, the position (`psql:line:column`) and the fix as the hint; a
//! wrong statement never stops the engine or another rule.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use futures::{Sink, StreamExt, stream};
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{ScramAuth, gen_salted_password};
use pgwire::api::auth::{AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler};
use pgwire::api::query::SimpleQueryHandler;
use pgwire::api::results::{
    CopyResponse, DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag,
};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::CopyData;
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::RecvError;

use crate::delta::Delta;
use crate::error::SqlError;
use crate::registry::{Registry, unique_names};
use crate::rule::split_statements;

/// The one account of the endpoint.
#[derive(Clone)]
pub struct Credentials {
    /// User name.
    pub user: String,
    /// Password (never logged).
    pub password: String,
}

impl Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).field("password", &"<hidden>").finish()
    }
}

/// Serves connections on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>, credentials: Credentials) {
    let factory =
        Arc::new(Factory { session: Arc::new(Session { registry }), credentials: Arc::new(credentials) });
    loop {
        let Ok((socket, peer)) = listener.accept().await else { continue };
        let factory = Arc::clone(&factory);
        tokio::spawn(async move {
            if let Err(e) = pgwire::tokio::process_socket(socket, None, factory).await {
                tracing::info!(%peer, "psql session ended: {e}");
            }
        });
    }
}

const ITERATIONS: usize = 4096;

#[derive(Debug)]
struct Accounts(Arc<Credentials>);

#[async_trait]
impl AuthSource for Accounts {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        if login.user() != Some(self.0.user.as_str()) {
            return Err(PgWireError::InvalidPassword(login.user().unwrap_or_default().to_owned()));
        }
        let salt: Vec<u8> = rand::random::<[u8; 16]>().to_vec();
        let hash = gen_salted_password(&self.0.password, &salt, ITERATIONS);
        Ok(Password::new(Some(salt), hash))
    }
}

struct Factory {
    session: Arc<Session>,
    credentials: Arc<Credentials>,
}

impl PgWireServerHandlers for Factory {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.session)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        let mut scram = ScramAuth::new(Arc::new(Accounts(Arc::clone(&self.credentials))));
        scram.set_iterations(ITERATIONS);
        Arc::new(
            SASLAuthStartupHandler::new(Arc::new(DefaultServerParameterProvider::default()))
                .with_scram(scram),
        )
    }
}

struct Session {
    registry: Arc<Registry>,
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

fn error(code: &str, message: impl Into<String>) -> Response {
    Response::Error(Box::new(ErrorInfo::new("ERROR".into(), code.into(), message.into())))
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ';')
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

fn upper(w: &[String], i: usize) -> String {
    w.get(i).map(|s| s.to_ascii_uppercase()).unwrap_or_default()
}

#[async_trait]
impl SimpleQueryHandler for Session {
    async fn do_query<C>(&self, _client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
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
        for st in statements {
            let r = self.statement(&st.text, &st.blanked).await;
            let failed = matches!(r, Response::Error(_));
            out.push(r);
            if failed {
                break;
            }
        }
        Ok(out)
    }
}

impl Session {
    async fn statement(&self, text: &str, blanked: &str) -> Response {
        let w = words(text);
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
            ("SHOW", "RULES") => self.show_rules(),
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
            ("SELECT" | "WITH" | "VALUES", _) => match self.registry.query(text).await {
                Ok((schema, batches)) => batches_response(&schema, &batches),
                Err(e) => error("42000", format!("{SOURCE}: {e}")),
            },
            _ => error(
                "0A000",
                format!(
                    "{SOURCE}: {} is not a statement vigil runs; use CREATE RULE, DROP RULE, SHOW RULES, \
                     EXPLAIN RULE, SUBSCRIBE or SELECT",
                    w.first().map_or("an empty statement", String::as_str)
                ),
            ),
        }
    }

    fn show_rules(&self) -> Response {
        let rows = self
            .registry
            .list()
            .into_iter()
            .map(|e| {
                let o = &e.rule.options;
                vec![
                    Some(e.rule.name.clone()),
                    Some(o.severity.clone()),
                    Some(format!("{:?}", o.emit).to_ascii_lowercase()),
                    Some(format!("{} s", o.backfill_ms / 1000)),
                    Some(e.origin.clone()),
                    Some(e.rule.sql.split_whitespace().collect::<Vec<_>>().join(" ")),
                ]
            })
            .collect();
        text_response(&["name", "severity", "emit", "backfill", "origin", "sql"], rows)
    }

    async fn subscribe(&self, name: Option<&String>) -> Response {
        let Some(name) = name else { return error("42601", "SUBSCRIBE needs a rule name") };
        let Some(entry) = self.registry.get(name.trim_matches('"')) else {
            return error("42704", format!("no rule named {name}; SHOW RULES lists them"));
        };
        let out = entry.out;
        let schema = entry.rule.schema.clone();
        let (snapshot, rx) = match out.snapshot_and_subscribe(&schema) {
            Ok(x) => x,
            Err(e) => return user_error(e),
        };
        let columns = schema.fields().len() + 2;
        let first = copy_rows(&snapshot, None, out.latest());
        let live = live_changes(rx, name.clone());
        let data = stream::iter(first.into_iter().map(Ok)).chain(live);
        Response::CopyOut(CopyResponse::new(0, columns, data))
    }
}

/// A subscription's live changes as COPY rows. A subscriber that falls behind by more than the
/// channel holds has missed changes: it is told how many, with an error that ends the
/// `SUBSCRIBE` (its view would otherwise be silently wrong).
fn live_changes(
    rx: tokio::sync::broadcast::Receiver<Arc<Delta>>,
    rule: String,
) -> impl futures::Stream<Item = PgWireResult<CopyData>> {
    stream::unfold(Some(rx), move |rx| {
        let rule = rule.clone();
        async move {
            let mut rx = rx?;
            match rx.recv().await {
                Ok(d) => Some((Ok(copy_delta(&d)), Some(rx))),
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
fn copy_delta(d: &Delta) -> CopyData {
    let mut text = String::new();
    for chunk in copy_rows(&d.rows, Some(d), 0) {
        text.push_str(std::str::from_utf8(&chunk.data).unwrap_or_default());
    }
    CopyData::new(Bytes::from(text))
}

/// COPY text rows; without a delta, a snapshot: diff 1 at time `as_of`.
fn copy_rows(rows: &RecordBatch, d: Option<&Delta>, as_of: u64) -> Vec<CopyData> {
    let options = FormatOptions::default().with_null("\\N");
    let formatters: Vec<_> =
        rows.columns().iter().filter_map(|c| ArrayFormatter::try_new(c.as_ref(), &options).ok()).collect();
    (0..rows.num_rows())
        .map(|i| {
            let (t, diff) = d.map_or((as_of, 1), |d| (d.times[i], d.diffs[i]));
            let mut line = format!("{t}\t{diff}");
            for f in &formatters {
                line.push('\t');
                line.push_str(&f.value(i).to_string().replace(['\t', '\n'], " "));
            }
            line.push('\n');
            CopyData::new(Bytes::from(line))
        })
        .collect()
}

fn pg_type(t: &DataType) -> Type {
    match t {
        DataType::Boolean => Type::BOOL,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => Type::INT8,
        DataType::Float16 | DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        _ => Type::VARCHAR,
    }
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

fn batches_response(schema: &SchemaRef, batches: &[RecordBatch]) -> Response {
    let schema = unique_names(schema);
    let fields: Arc<Vec<FieldInfo>> = Arc::new(
        schema
            .fields()
            .iter()
            .map(|f| FieldInfo::new(f.name().clone(), None, None, pg_type(f.data_type()), FieldFormat::Text))
            .collect(),
    );
    let options = FormatOptions::default();
    let mut encoder = DataRowEncoder::new(Arc::clone(&fields));
    let mut rows: Vec<PgWireResult<_>> = Vec::new();
    for b in batches {
        let formatters: Vec<_> =
            b.columns().iter().filter_map(|c| ArrayFormatter::try_new(c.as_ref(), &options).ok()).collect();
        for i in 0..b.num_rows() {
            let row = (|| {
                for (c, f) in b.columns().iter().zip(&formatters) {
                    let v: Option<String> = c.is_valid(i).then(|| f.value(i).to_string());
                    encoder.encode_field(&v)?;
                }
                Ok(encoder.take_row())
            })();
            rows.push(row);
        }
    }
    Response::Query(QueryResponse::new(fields, stream::iter(rows)))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{Field, Schema};
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
            live_changes(rx, "busy".into()).collect().await
        });
        // The lag ends the stream at once: one error, naming the rule and the count.
        assert_eq!(items.len(), 1);
        let Err(PgWireError::UserError(info)) = &items[0] else { panic!("{:?}", items[0].as_ref().err()) };
        assert_eq!(info.code, "54000");
        assert!(info.message.contains("SUBSCRIBE busy fell behind and missed 6 changes"), "{}", info.message);
    }
}

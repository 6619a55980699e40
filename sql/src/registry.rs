//! The rule catalog of a running engine: every rule (from the configuration and created at
//! runtime), its dataflow, its outputs, and ad-hoc queries over the engine's in-memory state.
//!
//! Every rule runs in a dataflow of its own, added to the running engine through a
//! [`Control`] channel (the driver owns the ingest side). The dataflow imports the streams the
//! rule reads from the main dataflow, where they are computed once: a rule over `tracks` sees
//! the tracks Parquet holds and pays for no tracker of its own. Its output goes to
//! - a broadcast channel (`SUBSCRIBE`) and a bounded buffer of recent changes (`SELECT * FROM
//!   rule`), held by its [`RuleOut`];
//! - Parquet under `<out>/rules/<rule>/`, its own columns and types plus `vigil_time` (when the
//!   change happened: an event's time, a window's end) and `vigil_diff` (+1 inserted, -1
//!   retracted); dropping the rule keeps what it wrote, until retention deletes it;
//! - alerts, for the rows it inserts, in the `alerts` Parquet stream and on the alert bus.
//!
//! [`Registry::create`] compiles a `CREATE RULE`, installs it (backfilled from retained events
//! when asked) and records the statement in the rules file so the rule survives a restart.
//! [`Registry::query`] runs a `SELECT` with DataFusion over the retained batches of every stream
//! of the catalog, the reference tables and the rules' contents.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Probe;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use tokio::sync::broadcast;
use vigil_engine::catalog::Catalog as Streams;
use vigil_engine::error::ErrorSink;
use vigil_engine::ids::Epoch;
use vigil_engine::parquet_sink::{DEFAULT_RETRY, ParquetSinkConfig, WriteParquet};
use vigil_engine::runtime::Builder;
use vigil_engine::share::{Retained, consolidate as consolidate_table};
use vigil_engine::stream::{Batch, Class, StreamDef};
use vigil_engine::time::Millis;
use vigil_operators::alerts::{AlertBus, Alerts, alerts_from_batch};

use crate::admission::{Budget, Estimate, Rates, check, distinct_values, estimate, kept_share};
use crate::capture::consolidate;
use crate::delta::Delta;
use crate::error::{Kind, Position, Result, SqlError};
use crate::limits::{Limits, check_depth, check_keyword_nesting, check_length};
use crate::operator::{alerts_of, render_metered};
use crate::roles::{AUDIT_TABLE, Role};
use crate::rule::{Rule, compile, split_statements};

/// What the registry asks of the engine driver.
pub enum Control {
    /// Add a rule's dataflow, its imports starting `backfill_ms` before the watermark.
    Install {
        /// Dataflow id.
        id: u64,
        /// The rule's name (for the log).
        name: String,
        /// Builds it on each worker.
        build: Builder,
        /// Backfill, ms.
        backfill_ms: Millis,
    },
    /// Remove dataflow `id`.
    Remove {
        /// Dataflow id.
        id: u64,
    },
    /// Drop dataflow `id` at once, with what it holds (a rule over its budget).
    Kill {
        /// Dataflow id.
        id: u64,
    },
    /// Change a reference table: rows users inserted (`diff` 1) or deleted (-1), checked by
    /// the table's definition ([`vigil_engine::catalog::TableWrites`]).
    Table {
        /// The table.
        info: &'static vigil_engine::stream::StreamInfo,
        /// The rows.
        rows: RecordBatch,
        /// 1 or -1.
        diff: i64,
        /// Who.
        user: String,
        /// Told once the change is journaled (kept through a kill) and applied, or why not:
        /// psql acknowledges the statement only then.
        reply: std::sync::mpsc::Sender<std::result::Result<(), String>>,
    },
    /// A request about one data subject (`SHOW PLATE '…'`, `ERASE PLATE '…'`): what is held
    /// about them, and with `erase`, the erasure of what may be erased. Whoever runs the engine
    /// answers on `reply`: rows of (what, where, rows, detail), or why not.
    Subject {
        /// What identifies the subject (`PLATE`).
        kind: String,
        /// Its value as the user gave it.
        value: String,
        /// Erase, not only list.
        erase: bool,
        /// Who asks.
        user: String,
        /// Where the answer goes.
        reply: std::sync::mpsc::Sender<std::result::Result<Vec<[String; 4]>, String>>,
    },
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Control::Subject { kind, erase, user, .. } => {
                write!(f, "Subject({kind}, erase {erase}, by {user})")
            }
            Control::Install { id, name, backfill_ms, .. } => {
                write!(f, "Install({id} {name}, backfill {backfill_ms} ms)")
            }
            Control::Remove { id } => write!(f, "Remove({id})"),
            Control::Kill { id } => write!(f, "Kill({id})"),
            Control::Table { info, rows, diff, user, .. } => {
                write!(f, "Table({} {diff} x {} rows by {user})", info.name, rows.num_rows())
            }
        }
    }
}

/// Where rules' outputs go, as the engine driver sets them up.
#[derive(Clone, Debug)]
pub struct RuleSinks {
    /// The output root (`<out>`): rows under `rules/<rule>/`, alerts under `alerts/`; `None`
    /// writes no Parquet.
    pub out: Option<PathBuf>,
    /// Parquet partition length, ms of event time.
    pub partition_ms: Millis,
    /// The run's epoch (file names, alert ids).
    pub epoch: Epoch,
    /// Where alerts are published.
    pub bus: Option<AlertBus>,
    /// Where rules' errors go.
    pub errors: ErrorSink,
    /// How often the rules' sinks commit their open files.
    pub commit: std::time::Duration,
    /// The most bytes of rows each of a rule's sinks holds while its writes fail.
    pub hold_bytes: usize,
}

/// How many changes a `SUBSCRIBE` may fall behind before it is told it missed some.
pub const SUBSCRIBE_CAPACITY: usize = 4096;

/// A rule's output, shared between its dataflow (writer) and subscribers and queries (readers).
#[derive(Debug)]
pub struct RuleOut {
    tx: broadcast::Sender<Arc<Delta>>,
    recent: Mutex<VecDeque<Delta>>,
    keep_ms: u64,
    /// The latest time of any change so far (what a snapshot is "as of").
    latest: AtomicU64,
    /// Rows emitted so far (the budget check measures their rate).
    emitted: AtomicU64,
    /// Why the rule was stopped, if it was.
    failed: Mutex<Option<String>>,
    /// Rows its operators hold.
    state: crate::render::StateMeter,
    /// Most rows kept in `recent` (the oldest changes go first).
    max_rows: usize,
    /// The event time up to which its output is complete (its dataflow's frontier).
    frontier: AtomicU64,
}

impl RuleOut {
    fn new(keep_ms: u64, max_rows: usize) -> Self {
        Self {
            tx: broadcast::channel(SUBSCRIBE_CAPACITY).0,
            recent: Mutex::new(VecDeque::new()),
            keep_ms,
            latest: AtomicU64::new(0),
            emitted: AtomicU64::new(0),
            failed: Mutex::new(None),
            state: Default::default(),
            max_rows,
            frontier: AtomicU64::new(0),
        }
    }

    /// The event time up to which its output is complete: the watermark less this is how far
    /// the rule trails its input (`u64::MAX` once its input has ended).
    pub fn frontier(&self) -> u64 {
        self.frontier.load(Ordering::Relaxed)
    }

    /// Rows it emitted so far.
    pub fn emitted(&self) -> u64 {
        self.emitted.load(Ordering::Relaxed)
    }

    /// Rows its operators hold now.
    pub fn rows_held(&self) -> i64 {
        self.state.rows()
    }

    /// Why the rule was stopped, if it was (`SHOW RULES` shows it).
    pub fn failed(&self) -> Option<String> {
        self.failed.lock().expect("rule state").clone()
    }

    fn publish(&self, d: Delta) {
        self.emitted.fetch_add(d.times.len() as u64, Ordering::Relaxed);
        let newest = d.times.iter().copied().max().unwrap_or(0);
        self.latest.fetch_max(newest, Ordering::Relaxed);
        // Under the lock, so that a subscriber's snapshot and its live changes never overlap.
        let mut recent = self.recent.lock().expect("rule output");
        if self.failed.lock().expect("rule state").is_some() {
            return;
        }
        recent.push_back(d.clone());
        // Keep what is within the retention of the newest change, and at most `max_rows`
        // rows (memory stays bounded whatever the rule emits).
        let mut rows: usize = recent.iter().map(Delta::len).sum();
        while recent.front().is_some_and(|f| {
            f.times.iter().copied().max().unwrap_or(0) + self.keep_ms < newest || rows > self.max_rows
        }) {
            rows -= recent.pop_front().map_or(0, |d| d.len());
        }
        let _ = self.tx.send(Arc::new(d));
    }

    /// The current contents and the changes after them, exactly: every change is in one or
    /// the other (a subscriber that falls too far behind is told it lagged).
    pub fn snapshot_and_subscribe(
        &self,
        schema: &SchemaRef,
    ) -> Result<(RecordBatch, broadcast::Receiver<Arc<Delta>>)> {
        let recent = self.recent.lock().expect("rule output");
        let rx = self.tx.subscribe();
        let deltas: Vec<Delta> = recent.iter().cloned().collect();
        drop(recent);
        let rows = consolidate(schema, &deltas).map_err(|e| SqlError::Internal(e.to_string()))?;
        Ok((rows, rx))
    }

    /// The latest time of any change so far.
    pub fn latest(&self) -> u64 {
        self.latest.load(Ordering::Relaxed)
    }

    /// The rule's current contents (within the retention).
    pub fn contents(&self, schema: &SchemaRef) -> Result<RecordBatch> {
        let recent: Vec<Delta> = self.recent.lock().expect("rule output").iter().cloned().collect();
        consolidate(schema, &recent).map_err(|e| SqlError::Internal(e.to_string()))
    }
}

/// A registered rule.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its dataflow's id.
    pub id: u64,
    /// The compiled rule.
    pub rule: Rule,
    /// The statement that created it (what the rules file stores).
    pub statement: String,
    /// Its output.
    pub out: Arc<RuleOut>,
    /// Where it comes from: `runtime` or the configuration file.
    pub origin: String,
    /// What it was estimated to cost when it was admitted.
    pub estimate: Estimate,
}

impl Entry {
    /// True for rules created at runtime (dropped with DROP RULE, kept in the rules file).
    pub fn is_runtime(&self) -> bool {
        self.origin == RUNTIME
    }
}

const RUNTIME: &str = "runtime";

/// The rule catalog; see the module documentation.
pub struct Registry {
    rules: Mutex<BTreeMap<String, Entry>>,
    control: Mutex<std::sync::mpsc::Sender<Control>>,
    retained: Arc<Mutex<Retained>>,
    streams: Streams,
    store: Option<PathBuf>,
    /// Stored rules that did not compile or install at the start: (why, statement). They stay
    /// in the store, commented out, so that a rule an analyst wrote is never lost to an
    /// upgrade or a renamed stream.
    unrestored: Mutex<Vec<(String, String)>>,
    sinks: Mutex<Option<RuleSinks>>,
    next_id: AtomicU64,
    closed: AtomicBool,
    limits: Limits,
    /// Ad-hoc queries running at once.
    queries: Arc<tokio::sync::Semaphore>,
    admission: Admission,
    /// Emitted-row counts at the last budget check, per dataflow id.
    checked: Mutex<(std::time::Instant, BTreeMap<u64, u64>)>,
    /// The engine's clock (event time of the last tick), for rows users write.
    now: std::sync::atomic::AtomicI64,
    /// The audit log, read as the `audit_log` table by auditors.
    audit_path: Option<PathBuf>,
    /// PostgreSQL's catalog for psql's `\d` and GUI tools, one per role.
    pg_catalogs: crate::pg_catalog::Catalogs,
}

/// Whether a rule over its estimated budget is refused (created now) or installed (restored:
/// it was admitted when created, on the rates observed then).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Admit {
    Check,
    Restore,
}

/// What rules may cost, and what the estimate assumes before rates are observed.
#[derive(Clone, Debug)]
pub struct Admission {
    /// The budgets.
    pub budget: Budget,
    /// Rows per second assumed for a stream with no retained rows yet.
    pub nominal_rows_per_s: f64,
    /// How long windows wait for late rows, ms.
    pub lateness_ms: f64,
}

impl Default for Admission {
    fn default() -> Self {
        Self { budget: Budget::default(), nominal_rows_per_s: 0.0, lateness_ms: 0.0 }
    }
}

/// Rates observed on the retained rows.
struct RetainedRates<'a> {
    retained: &'a Mutex<Retained>,
    nominal: f64,
}

impl Rates for RetainedRates<'_> {
    fn rows_per_s(&self, stream: &vigil_engine::stream::StreamInfo) -> f64 {
        let batches = self.retained.lock().expect("retained").batches(stream.name);
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let times = batches.iter().filter_map(|b| vigil_engine::parquet_sink::event_times(b).ok());
        let (lo, hi) = times
            .flat_map(|t| t.first().copied().into_iter().chain(t.last().copied()))
            .fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
        if rows == 0 || hi - lo < 1_000 {
            return self.nominal;
        }
        // The stream's own rate once a second of it is seen: the nominal is the detections'
        // (every camera's objects), a hundred times the plate reads' in a city, and taking it
        // as a floor refused the plain watchlist join over plate reads.
        rows as f64 / ((hi - lo) as f64 / 1000.0)
    }

    fn distinct(&self, stream: &vigil_engine::stream::StreamInfo, columns: &[String]) -> Option<f64> {
        let batches = self.retained.lock().expect("retained").batches(stream.name);
        distinct_values(&batches, columns)
    }

    fn selectivity(
        &self,
        stream: &vigil_engine::stream::StreamInfo,
        steps: &[crate::plan::Step],
    ) -> Option<f64> {
        let batches = self.retained.lock().expect("retained").batches(stream.name);
        kept_share(&batches, steps)
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("store", &self.store).finish_non_exhaustive()
    }
}

impl Registry {
    /// A registry driving the engine through `control`, compiling against `streams`, reading
    /// `retained` batches, storing runtime rules in `store` (if any) and writing rules' outputs
    /// to `sinks`.
    pub fn new(
        control: std::sync::mpsc::Sender<Control>,
        streams: Streams,
        retained: Arc<Mutex<Retained>>,
        store: Option<PathBuf>,
        sinks: RuleSinks,
    ) -> Self {
        Self {
            rules: Mutex::new(BTreeMap::new()),
            control: Mutex::new(control),
            retained,
            streams,
            store,
            unrestored: Mutex::new(Vec::new()),
            sinks: Mutex::new(Some(sinks)),
            next_id: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            queries: Arc::new(tokio::sync::Semaphore::new(Limits::default().concurrent_queries)),
            limits: Limits::default(),
            admission: Admission::default(),
            checked: Mutex::new((std::time::Instant::now(), BTreeMap::new())),
            now: std::sync::atomic::AtomicI64::new(0),
            audit_path: None,
            pg_catalogs: Default::default(),
        }
    }

    /// The same, admitting rules within `admission`.
    pub fn with_admission(mut self, admission: Admission) -> Self {
        self.admission = admission;
        self
    }

    /// Stops every rule that emitted more than its budget since the last check (at most once
    /// a second): its dataflow is dropped with what it holds, and it shows as failed in `SHOW
    /// RULES` until it is dropped. Returns the rules stopped.
    pub fn enforce(&self) -> Vec<String> {
        let mut checked = self.checked.lock().expect("budget checks");
        let elapsed = checked.0.elapsed().as_secs_f64();
        if elapsed < 1.0 {
            return Vec::new();
        }
        checked.0 = std::time::Instant::now();
        let map = self.rules.lock().expect("rules");
        let mut stopped = Vec::new();
        let mut seen = BTreeMap::new();
        for e in map.values() {
            let now = e.out.emitted.load(Ordering::Relaxed);
            let before = checked.1.get(&e.id).copied().unwrap_or(0);
            seen.insert(e.id, now);
            let rate = (now - before.min(now)) as f64 / elapsed;
            let held = e.out.rows_held();
            let budget = &self.admission.budget;
            let reason = if e.out.failed().is_some() {
                continue;
            } else if rate > budget.rows_per_s {
                format!(
                    "stopped: it emitted {rate:.0} rows/s, over its budget of {:.0} rows/s; DROP RULE {} and narrow it",
                    budget.rows_per_s, e.rule.name
                )
            } else if held as f64 > budget.rule_rows {
                format!(
                    "stopped: it held {held} rows, over its budget of {:.0}; DROP RULE {} and narrow it (a shorter window, bound or retention)",
                    budget.rule_rows, e.rule.name
                )
            } else {
                continue;
            };
            tracing::error!(rule = %e.rule.name, "{reason}");
            *e.out.failed.lock().expect("rule state") = Some(reason);
            e.out.recent.lock().expect("rule output").clear();
            let _ = self.control.lock().expect("control").send(Control::Kill { id: e.id });
            stopped.push(e.rule.name.clone());
        }
        checked.1 = seen;
        if !stopped.is_empty()
            && let Err(e) = self.persist(&map)
        {
            tracing::error!("writing the rules catalog: {e}");
        }
        stopped
    }

    /// The same, with `limits` on ad-hoc queries.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.queries = Arc::new(tokio::sync::Semaphore::new(limits.concurrent_queries.max(1)));
        self.limits = limits;
        self
    }

    /// The limits on one request.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The shortest time rows are kept in memory (`retention.memory_s`, or a shorter
    /// retention period): what a copy of them held for a client may live.
    pub fn memory_horizon(&self) -> std::time::Duration {
        let ms = self.retained.lock().expect("retained").shortest_horizon_ms();
        std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }

    /// The streams and tables rules are compiled against.
    pub fn streams(&self) -> &Streams {
        &self.streams
    }

    /// The engine is stopping: no more rules are created, and the registry lets go of the
    /// alert bus (so that its readers see it close once the rules' dataflows end).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.sinks.lock().expect("sinks").take();
    }

    /// Whether the engine is stopping ([`Registry::close`]).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Lets auditors read the audit log at `path` as the `audit_log` table.
    pub fn with_audit_path(mut self, path: PathBuf) -> Self {
        self.audit_path = Some(path);
        self
    }

    /// May `role` read the rows of `rule` (by the class of what it reads)?
    pub fn may_read_rule(&self, role: Role, rule: &Rule) -> bool {
        let class = rule_class(rule);
        role.may_read(class, class == Class::Personal)
    }

    /// The tables, streams and rules `role` may not read.
    /// What `role` may query, for `SHOW STREAMS`: (name, kind, what one row is), by name.
    pub fn readable(&self, role: Role) -> Vec<[String; 3]> {
        let mut out: Vec<[String; 3]> = self
            .streams
            .all()
            .filter(|i| role.may_read_stream(i))
            .map(|i| {
                let kind = if i.is_table() { "table" } else { "stream" };
                [i.name.to_owned(), kind.to_owned(), plain_doc(i.doc)]
            })
            .collect();
        out.extend(self.list().into_iter().filter(|e| self.may_read_rule(role, &e.rule)).map(|e| {
            let sql = e.rule.sql.split_whitespace().collect::<Vec<_>>().join(" ");
            [e.rule.name.clone(), "rule".to_owned(), sql]
        }));
        if role.may_read_audit() && self.audit_path.is_some() {
            out.push([
                AUDIT_TABLE.to_owned(),
                "audit".to_owned(),
                "The audit log, one record a row.".to_owned(),
            ]);
        }
        out.sort();
        out
    }

    /// The columns of `name` if `role` may query it, for `SHOW COLUMNS FROM`: (column, type,
    /// nullable, key, personal), the type by PostgreSQL's name for what the server sends, as
    /// `\d name` shows it.
    pub fn columns(&self, role: Role, name: &str) -> Result<Vec<[String; 5]>> {
        let tables = self.query_tables(role, None)?;
        let Some((_, schema, _)) = tables.iter().find(|(n, ..)| n.eq_ignore_ascii_case(name)) else {
            let mut names: Vec<&str> = tables.iter().map(|(n, ..)| n.as_str()).collect();
            names.sort_unstable();
            return Err(SqlError::user(
                None,
                format!("no stream, table or rule named {name} that you may read"),
                format!("SHOW STREAMS lists them: {}", names.join(", ")),
            )
            .kind(Kind::UndefinedTable));
        };
        let info = self.streams.get(name);
        let flag =
            |list: Option<&[&str]>, c: &str| if list.is_some_and(|l| l.contains(&c)) { "yes" } else { "" };
        Ok(schema
            .fields()
            .iter()
            .map(|f| {
                [
                    f.name().clone(),
                    crate::server::types::type_name(f.data_type()).name.to_owned(),
                    if f.is_nullable() { "yes" } else { "no" }.to_owned(),
                    flag(info.map(|i| i.keys), f.name()).to_owned(),
                    flag(info.map(|i| i.personal), f.name()).to_owned(),
                ]
            })
            .collect())
    }

    fn hidden_tables(&self, role: Role) -> Vec<String> {
        let mut hidden: Vec<String> =
            self.streams.all().filter(|i| !role.may_read_stream(i)).map(|i| i.name.to_owned()).collect();
        hidden.extend(
            self.list().iter().filter(|e| !self.may_read_rule(role, &e.rule)).map(|e| e.rule.name.clone()),
        );
        if !role.may_read_audit() {
            hidden.push(AUDIT_TABLE.to_owned());
        }
        hidden
    }

    /// The engine's clock, set every tick: what "now" means for rows users write.
    pub fn set_now(&self, now: Millis) {
        self.now.store(now, Ordering::Relaxed);
    }

    /// Runs `INSERT INTO <table> (columns) VALUES …` or `DELETE FROM <table> WHERE <key> = …`
    /// (or `IN (…)`) on a reference table its definition lets users change, as `user`. The rows
    /// are checked by the table's definition, all or none; returns the command tag and the rows
    /// changed. The change takes effect at the next tick.
    /// Sends a request about one data subject to the engine and waits for its answer (see
    /// [`Control::Subject`]); blocking, for up to `timeout`.
    pub fn subject(
        &self,
        kind: &str,
        value: &str,
        erase: bool,
        user: &str,
        timeout: std::time::Duration,
    ) -> std::result::Result<Vec<[String; 4]>, String> {
        let (reply, answer) = std::sync::mpsc::channel();
        let request = Control::Subject {
            kind: kind.to_owned(),
            value: value.to_owned(),
            erase,
            user: user.to_owned(),
            reply,
        };
        self.control.lock().expect("control").send(request).map_err(|_| {
            "the engine is shutting down; fix: run the request again after it restarts".to_owned()
        })?;
        answer.recv_timeout(timeout).map_err(|_| {
            format!("no answer from the engine within {} s; fix: run the request again", timeout.as_secs())
        })?
    }

    pub fn write(&self, sql: &str, user: &str) -> Result<(&'static str, usize)> {
        use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr, FromTable, SetExpr, Statement};
        let bad = |what: String, fix: &str| SqlError::user(None, what, fix);
        // Bounded like any statement before the parser sees it.
        check_length(sql, Position { source: "psql".into(), line: 1, column: 1 }, &self.limits)?;
        let statements = datafusion::sql::sqlparser::parser::Parser::parse_sql(
            &datafusion::sql::sqlparser::dialect::GenericDialect {},
            sql,
        )
        .map_err(|e| {
            bad(
                e.to_string(),
                "write INSERT INTO table (columns) VALUES (...) or DELETE FROM table WHERE key = '...'",
            )
        })?;
        let [statement] = statements.as_slice() else {
            return Err(bad("one statement at a time".into(), "send each INSERT or DELETE on its own"));
        };
        let writes_of = |name: String| {
            let w = self.streams.writes(&name).ok_or_else(|| {
                bad(
                    format!("{name} cannot be changed from SQL"),
                    "INSERT and DELETE change the watchlist; INSERT records a decision in hit_decisions",
                )
            })?;
            let info = self
                .streams
                .get(w.table)
                .ok_or_else(|| SqlError::Internal(format!("{name} has no definition")))?;
            Ok::<_, SqlError>((w, info))
        };
        let now = self.now.load(Ordering::Relaxed);
        match statement {
            Statement::Insert(ins) => {
                let (w, info) = writes_of(ins.table.to_string())?;
                if ins.columns.is_empty() {
                    return Err(bad(
                        "INSERT needs its column names".into(),
                        "write INSERT INTO watchlist (plate, reason, legal_basis, authority, expires_at) VALUES (...)",
                    ));
                }
                let Some(SetExpr::Values(values)) = ins.source.as_ref().map(|q| q.body.as_ref()) else {
                    return Err(bad("INSERT takes VALUES".into(), "write INSERT INTO … VALUES (…), (…)"));
                };
                let mut columns: Vec<(String, Vec<Option<String>>)> =
                    ins.columns.iter().map(|c| (c.to_string(), Vec::new())).collect();
                for (i, row) in values.rows.iter().enumerate() {
                    let row = &row.content;
                    if row.len() != columns.len() {
                        return Err(bad(
                            format!("row {} has {} values for {} columns", i + 1, row.len(), columns.len()),
                            "give one value per column",
                        ));
                    }
                    for (c, e) in columns.iter_mut().zip(row) {
                        c.1.push(literal(e).ok_or_else(|| {
                            bad(
                                format!("row {}: {e} is not a literal", i + 1),
                                "give text in single quotes, or NULL",
                            )
                        })?);
                    }
                }
                let rows = (w.check)(&columns, now, user).map_err(|(what, fix)| bad(what, &fix))?;
                let n = rows.num_rows();
                self.send_table(info, rows, 1, user)?;
                Ok(("INSERT", n))
            }
            Statement::Delete(del) => {
                let (FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from)) = &del.from;
                let [table] = from.as_slice() else {
                    return Err(bad(
                        "DELETE from one table".into(),
                        "write DELETE FROM watchlist WHERE plate = '...'",
                    ));
                };
                let (w, info) = writes_of(table.relation.to_string())?;
                if let Some((why, fix)) = w.delete {
                    return Err(bad(format!("rows of {} cannot be deleted: {why}", w.table), fix));
                }
                let needs =
                    format!("write DELETE FROM {} WHERE {} = '...' (or IN ('...', ...))", w.table, w.key);
                let (column, values): (&Expr, Vec<&Expr>) = match &del.selection {
                    Some(Expr::BinaryOp { left, op: BinaryOperator::Eq, right }) => {
                        (left, vec![right.as_ref()])
                    }
                    Some(Expr::InList { expr, list, negated: false }) => (expr, list.iter().collect()),
                    _ => return Err(bad("DELETE needs WHERE on the key".into(), &needs)),
                };
                if column.to_string() != w.key {
                    return Err(bad(format!("DELETE selects by {}, not {column}", w.key), &needs));
                }
                let mut keys = Vec::new();
                for v in values {
                    let text = literal(v)
                        .flatten()
                        .ok_or_else(|| bad(format!("{v} is not a text literal"), &needs))?;
                    keys.push(
                        (w.canonical_key)(&text)
                            .ok_or_else(|| bad(format!("{text:?} is not a {}", w.key), &needs))?,
                    );
                }
                let changes = self.retained.lock().expect("retained").table_changes(info.name);
                let Some(current) =
                    consolidate_table(info, &changes).map_err(|e| SqlError::Internal(e.to_string()))?
                else {
                    return Ok(("DELETE", 0));
                };
                let col = current
                    .rows
                    .column_by_name(w.key)
                    .ok_or_else(|| SqlError::Internal(format!("no column {}", w.key)))?;
                let col =
                    datafusion::arrow::compute::cast(col, &datafusion::arrow::datatypes::DataType::Utf8)
                        .map_err(|e| SqlError::Internal(e.to_string()))?;
                let col = col
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::StringArray>()
                    .ok_or_else(|| SqlError::Internal("key is not text".into()))?;
                let keep: datafusion::arrow::array::BooleanArray =
                    col.iter().map(|k| Some(k.is_some_and(|k| keys.iter().any(|x| x == k)))).collect();
                let rows = datafusion::arrow::compute::filter_record_batch(&current.rows, &keep)
                    .map_err(|e| SqlError::Internal(e.to_string()))?;
                let n = rows.num_rows();
                if n > 0 {
                    self.send_table(info, rows, -1, user)?;
                }
                Ok(("DELETE", n))
            }
            _ => Err(bad("not an INSERT or a DELETE".into(), "use INSERT INTO or DELETE FROM")),
        }
    }

    fn send_table(
        &self,
        info: &'static vigil_engine::stream::StreamInfo,
        rows: RecordBatch,
        diff: i64,
        user: &str,
    ) -> Result<()> {
        let (reply, answer) = std::sync::mpsc::channel();
        self.control
            .lock()
            .expect("control")
            .send(Control::Table { info, rows, diff, user: user.to_owned(), reply })
            .map_err(|_| SqlError::ShuttingDown)?;
        // The engine answers at its next tick (milliseconds); a minute covers a stalled disk.
        match answer.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SqlError::user(
                None,
                format!("the change to {} was not kept: {e}", info.name),
                "mend the cause the engine's log names, then run the statement again",
            )),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(SqlError::ShuttingDown),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(SqlError::user(
                None,
                format!("no answer from the engine within 60 s on the change to {}", info.name),
                "look at the table before running the statement again: the change may have been taken late",
            )),
        }
    }

    /// Installs the rules of the configuration (`origin` names the file): they run like any
    /// rule, are shown and explained, and are not dropped or stored.
    pub fn add_config(&self, rules: Vec<Rule>, origin: &str) -> Result<()> {
        let mut map = self.rules.lock().expect("rules");
        for rule in rules {
            let statement = rule.sql.clone();
            self.install(&mut map, rule, statement, origin, Admit::Check)?;
        }
        Ok(())
    }

    /// Creates the rules of `sql` (one or more `CREATE RULE` statements); `source` names the
    /// text in errors. All or nothing: nothing is created if any statement is wrong.
    pub fn create(&self, sql: &str, source: &str) -> Result<Vec<String>> {
        self.create_as(sql, source, Admit::Check)
    }

    fn create_as(&self, sql: &str, source: &str, admit: Admit) -> Result<Vec<String>> {
        let statements = split_statements(sql, source)?;
        for st in &statements {
            let first = st.tokens.first().map(|t| t.to_string().to_ascii_uppercase());
            if first.as_deref() != Some("CREATE") {
                return Err(SqlError::user(
                    Some(st.start.clone()),
                    "only CREATE RULE statements create rules",
                    "write CREATE RULE name [WITH (...)] AS SELECT ...",
                ));
            }
        }
        let rules = compile("rule", sql, source, &self.streams)?;
        let mut map = self.rules.lock().expect("rules");
        for (r, st) in rules.iter().zip(&statements) {
            if let Some(e) = map.get(&r.name) {
                return Err(SqlError::user(
                    Some(st.start.clone()),
                    format!("a rule named {} already exists ({})", r.name, e.origin),
                    format!("DROP RULE {} first, or choose another name", r.name),
                )
                .kind(Kind::DuplicateObject));
            }
        }
        let mut names = Vec::new();
        for (rule, st) in rules.into_iter().zip(statements) {
            names.push(rule.name.clone());
            self.install(&mut map, rule, st.text.clone(), RUNTIME, admit)?;
        }
        self.persist(&map)?;
        Ok(names)
    }

    fn install(
        &self,
        map: &mut BTreeMap<String, Entry>,
        rule: Rule,
        statement: String,
        origin: &str,
        admit: Admit,
    ) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(SqlError::ShuttingDown);
        }
        let sinks = self.sinks.lock().expect("sinks").clone().ok_or(SqlError::ShuttingDown)?;
        let a = &self.admission;
        let rates = RetainedRates { retained: &self.retained, nominal: a.nominal_rows_per_s };
        let estimate = estimate(&rule.node, &rates, rule.options.retention_ms as f64, a.lateness_ms);
        let others: f64 = map.values().filter(|e| e.out.failed().is_none()).map(|e| e.estimate.rows).sum();
        match (check(&estimate, others, &a.budget), admit) {
            (Ok(()), _) => {}
            (Err((message, fix)), Admit::Check) => {
                return Err(SqlError::user(None, format!("rule {}: {message}", rule.name), fix)
                    .kind(Kind::ProgramLimit));
            }
            // A stored rule was admitted on the rates seen when it was created. Just after a
            // start, a stream with nothing retained is estimated at the nominal rate (every
            // camera's detections), which would refuse, say, a join over the plate reads, and
            // the next write of the catalog would lose the rule. It runs; the registry still
            // stops it if it emits beyond its budget.
            (Err((message, _)), Admit::Restore) => tracing::warn!(
                rule = %rule.name,
                "restored although the cold-start estimate is over the budget ({message}): it was admitted when created"
            ),
        }
        tracing::info!(rule = %rule.name, "admitted: estimated {estimate}");
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // The rule's directory is made here, once, not by each worker (a worker must never
        // clear the files another has open).
        if let Some(root) = &sinks.out {
            let (rows, _) = sink_configs(root, &rule, id, &sinks);
            std::fs::create_dir_all(&rows.dir)
                .map_err(|source| SqlError::Io { path: rows.dir.display().to_string(), source })?;
        }
        let out = Arc::new(RuleOut::new(rule.options.retention_ms, a.budget.rule_rows as usize));
        let build = builder(&rule, id, &out, sinks, Arc::clone(&self.retained));
        let control = Control::Install {
            id,
            name: rule.name.clone(),
            build,
            backfill_ms: rule.options.backfill_ms as Millis,
        };
        self.control.lock().expect("control").send(control).map_err(|_| SqlError::ShuttingDown)?;
        map.insert(rule.name.clone(), Entry { id, rule, statement, out, origin: origin.into(), estimate });
        Ok(())
    }

    /// Drops a runtime rule; what it wrote stays.
    pub fn drop_rule(&self, name: &str, if_exists: bool) -> Result<bool> {
        let mut map = self.rules.lock().expect("rules");
        match map.get(name) {
            None if if_exists => Ok(false),
            None => Err(SqlError::user(
                None,
                format!("no rule named {name}"),
                format!("SHOW RULES lists them: {}", map.keys().cloned().collect::<Vec<_>>().join(", ")),
            )
            .kind(Kind::UndefinedObject)),
            Some(e) if !e.is_runtime() => Err(SqlError::user(
                None,
                format!("rule {name} comes from {}", e.origin),
                "remove it from that file and restart",
            )
            .kind(Kind::Invalid)),
            Some(e) => {
                let id = e.id;
                self.control
                    .lock()
                    .expect("control")
                    .send(Control::Remove { id })
                    .map_err(|_| SqlError::ShuttingDown)?;
                map.remove(name);
                self.persist(&map)?;
                Ok(true)
            }
        }
    }

    /// Every rule, by name.
    pub fn list(&self) -> Vec<Entry> {
        self.rules.lock().expect("rules").values().cloned().collect()
    }

    /// One rule.
    pub fn get(&self, name: &str) -> Option<Entry> {
        self.rules.lock().expect("rules").get(name).cloned()
    }

    /// Loads the rules file written by earlier runs (if any); returns the rules created.
    pub fn load(&self) -> Result<Vec<String>> {
        let Some(path) = &self.store else { return Ok(Vec::new()) };
        if !path.exists() {
            return Ok(Vec::new());
        }
        let sql = crate::rule::read_rule_file(path)?;
        let source = path.display().to_string();
        // Each rule on its own: one that no longer compiles or fits keeps the others.
        let mut names = Vec::new();
        for st in split_statements(&sql, &source)? {
            match self.create_as(&st.blanked, &source, Admit::Restore) {
                Ok(n) => names.extend(n),
                Err(e) => {
                    tracing::error!("a stored rule was not restored: {e}");
                    self.unrestored.lock().expect("unrestored").push((e.to_string(), st.text.clone()));
                }
            }
        }
        Ok(names)
    }

    fn persist(&self, map: &BTreeMap<String, Entry>) -> Result<()> {
        let Some(path) = &self.store else { return Ok(()) };
        let mut text =
            String::from("-- Rules created at runtime (CREATE RULE); vigil rewrites this file.\n\n");
        // Kept as a comment: a rule that failed must not come back by itself.
        let comment = |text: &mut String, reason: &str, statement: &str| {
            text.push_str(&format!("-- {}\n-- ", reason.replace('\n', " ")));
            text.push_str(&statement.trim().trim_end_matches(';').replace('\n', "\n-- "));
            text.push_str("\n\n");
        };
        for e in map.values().filter(|e| e.is_runtime()) {
            if let Some(reason) = e.out.failed() {
                comment(&mut text, &reason, &e.statement);
                continue;
            }
            text.push_str(e.statement.trim().trim_end_matches(';'));
            text.push_str(";\n\n");
        }
        for (why, statement) in self.unrestored.lock().expect("unrestored").iter() {
            comment(&mut text, &format!("not restored at a start: {why}"), statement);
        }
        let tmp = path.with_extension("sql.tmp");
        let io = |source| SqlError::Io { path: path.display().to_string(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Runs a `SELECT` over the engine's in-memory state: the retained batches of every stream,
    /// the reference tables, and each rule's current contents (as a table named after the rule).
    ///
    /// The query runs on a thread of its own with a large stack, under a memory pool and a
    /// time limit (its result counts against the pool), at most [`Limits::concurrent_queries`]
    /// at once; dropping the returned future (its client went away) stops it.
    /// `user` is the account asking (PostgreSQL's `current_user`).
    pub async fn query(&self, sql: &str, role: Role, user: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        self.query_with(sql, role, user, None).await
    }

    /// [`Registry::query`] of a statement with parameters (`$1`, `$2`, … in `sql`), bound to
    /// `params` in their text form: each is read as the type the plan gives its place (a zone
    /// name as text, a score as a float), never spliced into the SQL.
    pub async fn query_with(
        &self,
        sql: &str,
        role: Role,
        user: &str,
        params: Option<Vec<Option<String>>>,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        self.query_in_session(sql, role, user, params, "UTC", None).await
    }

    /// [`Registry::query_with`] in a psql session whose `TimeZone` is `zone` (an IANA name, or
    /// `UTC`), as PostgreSQL runs it: instants print as that zone's wall clock with its offset,
    /// `date_trunc('day', …)` and `extract(hour …)` are the zone's, and `now()` and a timestamp
    /// written without an offset are in it. The values stay the same instants. `cursors` are the
    /// session's (`pg_catalog.pg_cursors`' rows; none when `None`).
    pub async fn query_in_session(
        &self,
        sql: &str,
        role: Role,
        user: &str,
        params: Option<Vec<Option<String>>>,
        zone: &str,
        cursors: Option<RecordBatch>,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        match self.on_query_thread(sql, role, user, Job::Run(params, zone.to_owned()), cursors).await? {
            Outcome::Rows(schema, batches) => Ok((schema, batches)),
            Outcome::Described(..) => Err(SqlError::Internal("a query was described, not run".into())),
        }
    }

    /// What a query would return and what its parameters are, without running it: the result's
    /// schema and each parameter's type (`$1` first; `None` where the plan does not say).
    pub async fn describe(
        &self,
        sql: &str,
        role: Role,
        user: &str,
    ) -> Result<(SchemaRef, Vec<Option<DataType>>)> {
        match self.on_query_thread(sql, role, user, Job::Describe, None).await? {
            Outcome::Described(schema, params) => Ok((schema, params)),
            Outcome::Rows(..) => Err(SqlError::Internal("a query was run, not described".into())),
        }
    }

    async fn on_query_thread(
        &self,
        sql: &str,
        role: Role,
        user: &str,
        job: Job,
        cursors: Option<RecordBatch>,
    ) -> Result<Outcome> {
        let limits = self.limits.clone();
        let deadline = tokio::time::Instant::now() + limits.query_timeout;
        let timeout = limits.query_timeout;
        let over_time = move || {
            SqlError::user(
                None,
                format!("the query ran longer than {} s", timeout.as_secs()),
                "narrow it (a WHERE on event_time, a LIMIT), or make it a rule that keeps its result up to date",
            )
            .kind(Kind::Canceled)
        };
        let _turn = tokio::time::timeout_at(deadline, Arc::clone(&self.queries).acquire_owned())
            .await
            .map_err(|_| over_time())?
            .map_err(|_| SqlError::ShuttingDown)?;
        let tables = self.query_tables(role, matches!(job, Job::Run(..)).then_some(sql))?;
        // psql's \d and GUI tools read PostgreSQL's catalog, listing the tables above.
        let listed = || tables.iter().map(|(name, schema, _)| (name.clone(), Arc::clone(schema)));
        let pg_catalog = if crate::pg_catalog::reads_catalog(sql) {
            Some(self.pg_catalogs.for_role(role, listed())?.for_user(user).with_cursors(cursors))
        } else {
            None
        };
        let hidden: Vec<String> = self.hidden_tables(role);
        let udfs = crate::functions::text_udfs(&self.streams);
        // `now()` is the city's clock, as for the rows users write (none before the first tick).
        let now = Some(self.now.load(Ordering::Relaxed)).filter(|&n| n > 0);
        let stop = Arc::new(AtomicBool::new(false));
        // Set when this future is dropped (the client went away) or done: the thread stops.
        struct StopOnDrop(Arc<AtomicBool>);
        impl Drop for StopOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let _stop = StopOnDrop(Arc::clone(&stop));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sql = sql.to_owned();
        std::thread::Builder::new()
            .name("vigil-query".into())
            .stack_size(crate::limits::STACK_BYTES)
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
                    Ok(rt) => rt,
                    Err(e) => return drop(tx.send(Err(SqlError::Internal(e.to_string())))),
                };
                let run = run_query(tables, udfs, pg_catalog, &sql, &limits, &stop, job, now);
                let stopped = async {
                    while !stop.load(Ordering::Relaxed) {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                };
                let r = rt.block_on(async {
                    tokio::select! {
                        r = tokio::time::timeout_at(deadline, run) => r.unwrap_or_else(|_| Err(over_time())),
                        _ = stopped => Err(SqlError::user(None, "the query was cancelled", "run it again").kind(Kind::Canceled)),
                    }
                });
                // A table the role may not see was not registered: say so, not "not found".
                let r = r.map_err(|e| {
                    let text = e.to_string();
                    let named = |t: &String| {
                        text.contains(&format!("table '{t}' not found")) || text.contains(&format!(".{t}' not found"))
                    };
                    match hidden.iter().find(|t| named(t)) {
                        Some(t) => SqlError::user(
                            None,
                            format!("permission denied for table {t}: the role {role} sees {}", role.sees()),
                            "ask an administrator for an account with the role that reads it",
                        )
                        .kind(Kind::Permission),
                        None => e,
                    }
                });
                let _ = tx.send(r);
            })
            .map_err(|e| SqlError::Internal(format!("starting a query thread: {e}")))?;
        rx.await.map_err(|_| SqlError::Internal("the query thread ended without an answer".into()))?
    }

    /// What ad-hoc queries read: every stream's retained batches, the reference tables, and
    /// the rules' current contents. Without `sql`, only their schemas (to describe a query);
    /// with it, rows only for the tables its text names (anywhere, as a word or inside one: a
    /// table it does not name cannot be read), so that `SELECT 1` and psql's catalog queries do
    /// not copy every stream's batches nor read the audit log.
    fn query_tables(
        &self,
        role: Role,
        sql: Option<&str>,
    ) -> Result<Vec<(String, SchemaRef, Vec<RecordBatch>)>> {
        let internal = |e: &dyn std::fmt::Display| SqlError::Internal(e.to_string());
        let text = sql.map(str::to_lowercase);
        let named = |name: &str| text.as_deref().is_some_and(|t| t.contains(&name.to_lowercase()));
        let mut tables: Vec<(String, SchemaRef, Vec<RecordBatch>)> = Vec::new();
        if role.may_read_audit()
            && let Some(path) = &self.audit_path
        {
            // Describing a query needs the table's schema, not the whole log read.
            let (schema, rows) = match named(AUDIT_TABLE) {
                true => {
                    crate::audit_table::read(path).map(|(s, r)| (s, vec![r])).map_err(|e| internal(&e))?
                }
                false => (crate::audit_table::schema(), Vec::new()),
            };
            tables.push((AUDIT_TABLE.to_owned(), schema, rows));
        }
        if sql.is_none() {
            for info in self.streams.all().filter(|i| role.may_read_stream(i)) {
                tables.push((info.name.to_owned(), Arc::clone(&info.schema), Vec::new()));
            }
            for e in self.list().into_iter().filter(|e| self.may_read_rule(role, &e.rule)) {
                tables.push((e.rule.name.clone(), unique_names(&e.rule.schema), Vec::new()));
            }
            return Ok(tables);
        }
        {
            let r = self.retained.lock().expect("retained");
            for info in self.streams.streams().filter(|i| role.may_read_stream(i)) {
                let batches = if named(info.name) { r.batches(info.name) } else { Vec::new() };
                tables.push((info.name.to_owned(), Arc::clone(&info.schema), batches));
            }
            for info in self.streams.tables().filter(|i| role.may_read_stream(i)) {
                if !named(info.name) {
                    tables.push((info.name.to_owned(), Arc::clone(&info.schema), Vec::new()));
                    continue;
                }
                let changes = r.table_changes(info.name);
                let rows = consolidate_table(info, &changes).map_err(|e| internal(&e))?;
                tables.push((
                    info.name.to_owned(),
                    Arc::clone(&info.schema),
                    rows.map(|b| b.rows).into_iter().collect(),
                ));
            }
        }
        for e in self.list().into_iter().filter(|e| self.may_read_rule(role, &e.rule)) {
            let schema = unique_names(&e.rule.schema);
            if !named(&e.rule.name) {
                tables.push((e.rule.name.clone(), schema, Vec::new()));
                continue;
            }
            let rows = e.out.contents(&e.rule.schema)?;
            let rows = RecordBatch::try_new(Arc::clone(&schema), rows.columns().to_vec())
                .map_err(|e| internal(&e))?;
            tables.push((e.rule.name.clone(), schema, vec![rows]));
        }
        Ok(tables)
    }
}

/// Plans and runs an ad-hoc query over `tables` within `limits`, until `stop`.
/// What a query thread does with the statement.
enum Job {
    /// Run it, with these parameters (text form) if it has any, in this `TimeZone`.
    Run(Option<Vec<Option<String>>>, String),
    /// Plan it only: its result's schema and its parameters' types.
    Describe,
}

/// What a query thread answers.
enum Outcome {
    Rows(SchemaRef, Vec<RecordBatch>),
    Described(SchemaRef, Vec<Option<DataType>>),
}

/// `schema` and `batches` with every instant column (`timestamptz`) typed in `zone`: the same
/// instants, so that DataFusion's functions (`date_trunc`, `extract`, `to_char`) read them as
/// that zone's wall clock, and the server prints them with its offset, as PostgreSQL does with
/// `SET TimeZone`. Unchanged in UTC.
pub(crate) fn in_zone(
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    zone: &str,
) -> std::result::Result<(SchemaRef, Vec<RecordBatch>), datafusion::error::DataFusionError> {
    let retyped = |t: &DataType| match t {
        DataType::Timestamp(unit, Some(tz)) if tz.as_ref() != zone => {
            Some(DataType::Timestamp(*unit, Some(zone.into())))
        }
        _ => None,
    };
    if zone == "UTC" || !schema.fields().iter().any(|f| retyped(f.data_type()).is_some()) {
        return Ok((schema, batches));
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match retyped(f.data_type()) {
            Some(t) => f.as_ref().clone().with_data_type(t),
            None => f.as_ref().clone(),
        })
        .collect();
    let zoned = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    let batches = batches
        .into_iter()
        .map(|b| {
            // The same values (instants) under the new type: the buffers are shared, not copied.
            let columns = b
                .columns()
                .iter()
                .zip(zoned.fields())
                .map(|(c, f)| match c.data_type() == f.data_type() {
                    true => Ok(Arc::clone(c)),
                    false => c
                        .to_data()
                        .into_builder()
                        .data_type(f.data_type().clone())
                        .build()
                        .map(datafusion::arrow::array::make_array),
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(RecordBatch::try_new(Arc::clone(&zoned), columns)?)
        })
        .collect::<std::result::Result<Vec<_>, datafusion::error::DataFusionError>>()?;
    Ok((zoned, batches))
}

/// Plans and runs `sql` over `tables`. `now` is the engine's clock (ms), what `now()`,
/// `current_timestamp` and `current_date` read (the wall clock when `None`): a simulated or
/// replayed city's "the last five minutes" are its own, and a live city's clock is the wall's.
#[allow(clippy::too_many_arguments)]
async fn run_query(
    tables: Vec<(String, SchemaRef, Vec<RecordBatch>)>,
    udfs: Vec<Arc<datafusion::logical_expr::ScalarUDF>>,
    pg_catalog: Option<crate::pg_catalog::RoleCatalog>,
    sql: &str,
    limits: &Limits,
    stop: &AtomicBool,
    job: Job,
    now: Option<Millis>,
) -> Result<Outcome> {
    use futures::StreamExt;
    // A description's types do not depend on the zone.
    let zone = match &job {
        Job::Run(_, zone) => zone.clone(),
        Job::Describe => "UTC".to_owned(),
    };
    let zone = zone.as_str();
    let mut names: Vec<String> = tables.iter().map(|(name, ..)| name.clone()).collect();
    names.sort();
    // Placed and explained as a rule's errors are, with the tables this user may query.
    let df_err = |e: datafusion::error::DataFusionError| {
        if let Some(e) = crate::functions::raised(&e) {
            e
        } else if e.to_string().contains("Resources exhausted") {
            over_memory(limits)
        } else {
            crate::rule::from_datafusion(e, sql, "psql", Some(crate::rule::Reads::Query(&names)))
        }
    };
    let source = Position { source: "psql".into(), line: 1, column: 1 };
    check_length(sql, source.clone(), limits)?;
    check_keyword_nesting(sql, source.clone())?;
    let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_memory_limit(limits.query_memory, 1.0)
        .build_arc()
        .map_err(|e| SqlError::Internal(e.to_string()))?;
    let mut config = datafusion::prelude::SessionConfig::new();
    // Spans let an unknown table or column be placed at its line and column.
    config.options_mut().sql_parser.collect_spans = true;
    // The session's time zone, as `SHOW TimeZone` says: `now()` and `to_timestamp` are
    // instants (`timestamptz`) in it, as in PostgreSQL, not local times.
    config.options_mut().execution.time_zone = Some(zone.into());
    // `EXTRACT` planned with vigil's `date_part` ([`crate::functions::Extract`]).
    let planners = std::iter::once(Arc::new(crate::functions::Extract) as _)
        .chain(datafusion::execution::SessionStateDefaults::default_expr_planners())
        .collect();
    let state = datafusion::execution::SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_expr_planners(planners)
        .with_analyzer_rule(Arc::new(crate::functions::PgTextCasts))
        .build();
    let ctx = SessionContext::new_with_state(state);
    let catalog_query = pg_catalog.is_some();
    if let Some(catalog) = pg_catalog {
        crate::pg_catalog::install(&ctx, catalog).map_err(df_err)?;
    }
    let ours = [
        crate::functions::date_part(),
        crate::functions::pg_typeof(),
        crate::functions::age(),
        crate::functions::pg_array(),
    ];
    let series = crate::functions::bounded_series(limits.query_memory);
    for f in udfs.into_iter().chain(crate::window::window_udfs()).chain(ours).chain(series) {
        ctx.register_udf(Arc::unwrap_or_clone(f));
    }
    for (name, schema, batches) in tables {
        let (schema, batches) = in_zone(schema, batches, zone).map_err(df_err)?;
        let t = MemTable::try_new(schema, vec![batches]).map_err(df_err)?;
        ctx.register_table(name.as_str(), Arc::new(t)).map_err(df_err)?;
    }
    let state = ctx.state();
    // A catalog query is PostgreSQL's SQL (psql's `OPERATOR(pg_catalog.~)`, `::regclass`).
    let mut statement = match catalog_query.then(|| crate::pg_catalog::parse(sql)).flatten() {
        Some(s) => s,
        None => state.sql_to_statement(sql, &datafusion::config::Dialect::Generic).map_err(df_err)?,
    };
    if let datafusion::sql::parser::Statement::Statement(st) = &mut statement {
        check_depth(st, limits, source)?;
        // Windows read as in rules: `window_start` and the window tables (TUMBLE(...) in FROM).
        crate::window::rewrite_window_tables(st)
            .map_err(|e| SqlError::user(None, e.message, e.fix).kind(Kind::Unsupported))?;
        crate::window::rewrite_window_columns(st);
        crate::to_char::rewrite(st, "psql")?;
        crate::functions::rewrite_quoted_times(st);
        crate::functions::name_series_columns(st);
        crate::functions::expand_series_in_select(st);
        crate::functions::rewrite_make_interval(st);
        crate::functions::rewrite_pg_forms(st);
    }
    // PostgreSQL allows two result columns of one name (`SELECT current_user, session_user`,
    // `SELECT 1 AS x, 1 AS x`) where DataFusion refuses them: planned again with the top-level
    // columns named apart; the client is sent PostgreSQL's names (`server::names`).
    let retry = statement.clone();
    let plan = match state.statement_to_plan(statement).await {
        Err(e) if e.to_string().contains("require unique expression names") => {
            let mut retry = retry;
            let mut twice = Vec::new();
            if let datafusion::sql::parser::Statement::Statement(st) = &mut retry
                && let datafusion::sql::sqlparser::ast::Statement::Query(q) = st.as_mut()
            {
                twice = name_apart(&mut q.body);
            }
            let plan = state.statement_to_plan(retry).await;
            // ORDER BY a name two columns have: PostgreSQL's error, not "no field named".
            if let Err(e) = &plan
                && let Some(name) =
                    twice.iter().find(|n| e.to_string().contains(&format!("No field named {n}.")))
            {
                return Err(SqlError::user(
                    None,
                    format!("ORDER BY \"{name}\" is ambiguous: two columns are named {name}"),
                    "name them apart with AS, or ORDER BY the column's position (ORDER BY 2)",
                )
                .kind(Kind::AmbiguousColumn));
            }
            plan
        }
        plan => plan,
    };
    let plan = plan.map_err(df_err);
    let plan = plan.map_err(|e| if catalog_query { crate::pg_catalog::explain(e) } else { e })?;
    let plan = crate::window::unnest_windows(plan)?;
    let types = plan.get_parameter_types().map_err(df_err)?;
    let param = |i: usize| types.get(&format!("${}", i + 1)).cloned().flatten();
    let plan = match job {
        Job::Describe => {
            let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
            return Ok(Outcome::Described(schema, (0..types.len()).map(param).collect()));
        }
        Job::Run(None, _) => plan,
        Job::Run(Some(values), _) => {
            if values.len() != types.len() {
                return Err(SqlError::user(
                    None,
                    format!("the statement has {} parameters, {} were given", types.len(), values.len()),
                    "give one value per $n placeholder",
                )
                .kind(Kind::Invalid));
            }
            let scalars = values
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    let t = param(i).unwrap_or(DataType::Utf8);
                    match v {
                        None => ScalarValue::try_from(&t),
                        Some(text) => ScalarValue::try_from_string(text, &t),
                    }
                    .map_err(|e| {
                        SqlError::user(
                            None,
                            format!("parameter ${}: {e}", i + 1),
                            format!("give a value of type {t} for ${}", i + 1),
                        )
                        .kind(Kind::Invalid)
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            plan.with_param_values(scalars).map_err(df_err)?
        }
    };
    use datafusion::logical_expr::LogicalPlan;
    let clock = now.and_then(chrono::DateTime::from_timestamp_millis);
    let df = match clock {
        // The start time DataFusion gives `now()` when it simplifies the plan, set to the clock.
        Some(at) if !matches!(plan, LogicalPlan::Ddl(_) | LogicalPlan::Statement(_)) => {
            let mut state = ctx.state();
            state.execution_props_mut().query_execution_start_time = Some(at);
            datafusion::dataframe::DataFrame::new(state, plan)
        }
        _ => ctx.execute_logical_plan(plan).await.map_err(df_err)?,
    };
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let mut stream = df.execute_stream().await.map_err(df_err)?;
    let (mut batches, mut bytes) = (Vec::new(), 0usize);
    while let Some(b) = stream.next().await {
        if stop.load(Ordering::Relaxed) {
            return Err(SqlError::user(None, "the query was cancelled", "run it again").kind(Kind::Canceled));
        }
        let b = b.map_err(df_err)?;
        bytes += b.get_array_memory_size();
        if bytes > limits.query_memory {
            return Err(over_memory(limits));
        }
        batches.push(b);
    }
    Ok(Outcome::Rows(schema, batches))
}

fn over_memory(limits: &Limits) -> SqlError {
    SqlError::user(
        None,
        format!("the query needs more than {} MiB", limits.query_memory >> 20),
        "narrow it (a WHERE, a LIMIT, an aggregate instead of a join of whole streams), or raise server.query_memory_mb",
    )
    .kind(Kind::ProgramLimit)
}

/// Names the columns of `body`'s top-level queries apart (`__column_2` for the second): each
/// is given an alias unless it is a star's or its name is its own (`class`, `count(*) AS n`
/// when no other column is `n`), which ORDER BY may then still use. Returns the names two
/// columns share.
fn name_apart(body: &mut datafusion::sql::sqlparser::ast::SetExpr) -> Vec<String> {
    use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, Ident, SelectItem, SetExpr};
    match body {
        SetExpr::SetOperation { left, right, .. } => {
            let mut twice = name_apart(left);
            twice.extend(name_apart(right));
            twice
        }
        SetExpr::Query(q) => name_apart(&mut q.body),
        SetExpr::Select(select) => {
            // The name a column is known by in the query (an alias, a column's name), folded
            // as PostgreSQL folds it; None for an expression, whose name DataFusion makes.
            let name = |item: &SelectItem| match item {
                SelectItem::ExprWithAlias { alias, .. } => Some(fold(alias)),
                SelectItem::UnnamedExpr(SqlExpr::Identifier(id)) => Some(fold(id)),
                SelectItem::UnnamedExpr(SqlExpr::CompoundIdentifier(ids)) => ids.last().map(fold),
                _ => None,
            };
            let names: Vec<Option<String>> = select.projection.iter().map(name).collect();
            let count = |n: &String| names.iter().filter(|m| m.as_ref() == Some(n)).count();
            let mut twice: Vec<String> = names.iter().flatten().filter(|n| count(n) > 1).cloned().collect();
            twice.sort_unstable();
            twice.dedup();
            for (i, item) in select.projection.iter_mut().enumerate() {
                // A name only this column has is kept, so that ORDER BY and the like still find it.
                if names[i].as_ref().is_some_and(|n| count(n) == 1) {
                    continue;
                }
                let alias = Ident::with_quote('"', format!("__column_{}", i + 1));
                *item = match std::mem::replace(item, SelectItem::Wildcard(Default::default())) {
                    SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. } => {
                        SelectItem::ExprWithAlias { expr, alias }
                    }
                    star => star,
                };
            }
            twice
        }
        _ => Vec::new(),
    }
}

/// An identifier as PostgreSQL folds it: as written when quoted, lower-cased otherwise.
fn fold(id: &datafusion::sql::sqlparser::ast::Ident) -> String {
    if id.quote_style.is_some() { id.value.clone() } else { id.value.to_lowercase() }
}

/// A schema whose duplicate column names get `_2`, `_3` suffixes (a join's `event_time`).
pub fn unique_names(schema: &SchemaRef) -> SchemaRef {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let n = seen.entry(f.name().clone()).or_default();
            *n += 1;
            if *n == 1 {
                f.as_ref().clone()
            } else {
                f.as_ref().clone().with_name(format!("{}_{n}", f.name()))
            }
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// A rule name as a directory or file name (`a/b` and other separators become `_`).
pub fn file_name(rule: &str) -> String {
    rule.chars()
        .map(|c| if c.is_alphanumeric() || c == '_' || c == '-' || c == '#' { c } else { '_' })
        .collect()
}

/// The column of a rule's Parquet rows that holds when each change happened.
pub const TIME_COLUMN: &str = "vigil_time";
/// The column of a rule's Parquet rows that holds each change's diff.
pub const DIFF_COLUMN: &str = "vigil_diff";

/// The schema of a rule's Parquet rows: its columns (names made unique), then when and how.
pub fn rows_schema(rule: &Rule) -> SchemaRef {
    let mut fields: Vec<Field> =
        unique_names(&rule.schema).fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(
        TIME_COLUMN,
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        false,
    ));
    fields.push(Field::new(DIFF_COLUMN, DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

/// The retention class of a rule's outputs: the most protective of the streams it reads
/// (a rule over plate reads keeps personal data).
pub fn rule_class(rule: &Rule) -> Class {
    rule.node.streams().iter().map(|s| s.class).min().unwrap_or(Class::Record)
}

/// The dataflow of a rule: its deltas go to `out`, its rows to Parquet, its inserted rows to
/// the alerts stream (Parquet, and the alerts kept in memory for psql) and the bus.
fn builder(
    rule: &Rule,
    id: u64,
    out: &Arc<RuleOut>,
    sinks: RuleSinks,
    retained: Arc<Mutex<Retained>>,
) -> Builder {
    let (rule, out) = (rule.clone(), Arc::clone(out));
    Arc::new(move |graph| {
        let probe = ProbeHandle::new();
        let worker = graph.worker();
        let deltas = render_metered(&rule, graph, &sinks.errors, &out.state);
        let publish = Arc::clone(&out);
        deltas
            .clone()
            .unary_frontier::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
                Pipeline,
                &format!("{}: Publish", rule.name),
                move |_, _| {
                    move |(input, frontier), _| {
                        input.for_each(|_, data| {
                            for d in data.drain(..) {
                                publish.publish(d);
                            }
                        });
                        // Frontiers are global: every worker sees the same one.
                        let f = frontier.frontier().first().copied().unwrap_or(u64::MAX);
                        publish.frontier.store(f, Ordering::Relaxed);
                    }
                },
            )
            .probe_with(&probe);
        let alerts = alerts_of(&rule, deltas.clone(), sinks.epoch);
        let (bus, retained) = (sinks.bus.clone(), Arc::clone(&retained));
        alerts
            .inner()
            .clone()
            .unary::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
                Pipeline,
                &format!("{}: PublishAlerts", rule.name),
                move |_, _| {
                    move |input, _| {
                        input.for_each(|cap, data| {
                            let t = cap.least().copied().unwrap_or_default();
                            for b in data.iter() {
                                retained.lock().expect("retained batches").keep_for_queries(
                                    Alerts::info(),
                                    worker,
                                    t,
                                    b,
                                );
                                let Some(bus) = &bus else { continue };
                                for a in alerts_from_batch(&b.rows).unwrap_or_default() {
                                    bus.publish(a);
                                }
                            }
                        })
                    }
                },
            )
            .probe_with(&probe);
        if let Some(root) = &sinks.out {
            let (rows, alert_files) = sink_configs(root, &rule, id, &sinks);
            let errors = sinks.errors.clone();
            let name = rule.name.clone();
            // A rule's sinks ride out a disk that cannot be written as every sink does; one
            // that cannot write as the run ends stops it with the cause.
            let report = move |e| errors.fatal(&name, e);
            rule_rows(&rule, deltas)
                .write_parquet(rows_schema(&rule), rows, worker, report.clone())
                .probe_with(&probe);
            alerts
                .into_inner()
                .write_parquet(Alerts::schema(), alert_files, worker, report)
                .probe_with(&probe);
        }
        probe
    })
}

/// Where a rule's rows and alerts are written: `rules/<rule>/` and `alerts/`, files tagged with
/// the rule's dataflow id (a rule dropped and created again never writes over its old files).
fn sink_configs(
    root: &std::path::Path,
    rule: &Rule,
    id: u64,
    sinks: &RuleSinks,
) -> (ParquetSinkConfig, ParquetSinkConfig) {
    let dir_name = file_name(&rule.name);
    let rows =
        ParquetSinkConfig::new(root.join("rules").join(&dir_name), dir_name, sinks.partition_ms, sinks.epoch)
            .with_time_column(TIME_COLUMN)
            .with_commit(sinks.commit)
            .with_hold(sinks.hold_bytes, DEFAULT_RETRY)
            .tagged(format!("r{id}"));
    let alerts =
        ParquetSinkConfig::new(root.join(Alerts::NAME), Alerts::NAME, sinks.partition_ms, sinks.epoch)
            .tagged(format!("r{id}"))
            .with_commit(sinks.commit)
            .with_hold(sinks.hold_bytes, DEFAULT_RETRY)
            .with_dictionary(&["camera_id", "kind", "rule", "severity"]);
    (rows, alerts)
}

/// A rule's changes as Parquet rows (see [`rows_schema`]).
fn rule_rows<'s>(rule: &Rule, deltas: crate::render::Deltas<'s>) -> vigil_engine::stream::Batches<'s> {
    let (schema, name) = (rows_schema(rule), rule.name.clone());
    deltas.unary::<timely::container::CapacityContainerBuilder<Vec<Batch>>, _, _, _>(
        Pipeline,
        &format!("{name}: Rows"),
        move |_, _| {
            move |input, output| {
                input.for_each(|cap, data| {
                    let mut session = output.session(&cap);
                    for d in data.drain(..) {
                        let mut cols: Vec<ArrayRef> = d.rows.columns().to_vec();
                        cols.push(Arc::new(
                            TimestampMillisecondArray::from_iter_values(d.times.iter().map(|&t| t as i64))
                                .with_timezone("UTC"),
                        ));
                        cols.push(Arc::new(Int64Array::from(d.diffs)));
                        match RecordBatch::try_new(Arc::clone(&schema), cols) {
                            Ok(rows) => session.give(Batch::new(rows)),
                            Err(e) => tracing::error!(rule = %name, "rule rows: {e}"),
                        }
                    }
                });
            }
        },
    )
}

/// A literal's text: `'it''s'` is `it's`, numbers as written, `NULL` is `None`; `None` outside
/// (not a literal).
fn literal(e: &datafusion::sql::sqlparser::ast::Expr) -> Option<Option<String>> {
    use datafusion::sql::sqlparser::ast::{Expr, Value};
    let Expr::Value(v) = e else { return None };
    match &v.value {
        Value::Null => Some(None),
        Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Some(Some(s.clone())),
        Value::Number(n, _) => Some(Some(n.to_string())),
        _ => None,
    }
}

/// A definition's doc comment as a psql user reads it: one line, without rustdoc's links to
/// the code (`([`EventId`])` goes; `[`x`]` becomes `x`).
fn plain_doc(doc: &str) -> String {
    let mut text = doc.split_whitespace().collect::<Vec<_>>().join(" ");
    while let Some(start) = text.find(" ([`") {
        let Some(len) = text[start..].find("`])") else { break };
        text.replace_range(start..start + len + 3, "");
    }
    text.replace("[`", "`").replace("`]", "`")
}

#[cfg(test)]
mod tests {

    /// Runs `sql` over `tables` as a psql session in `zone` does, `now` being the engine's clock.
    fn query(
        tables: Vec<(String, SchemaRef, Vec<RecordBatch>)>,
        sql: &str,
        zone: &str,
        now: Option<Millis>,
    ) -> Result<Outcome> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let stop = AtomicBool::new(false);
        let job = Job::Run(None, zone.to_owned());
        rt.block_on(super::run_query(tables, vec![], None, sql, &Limits::default(), &stop, job, now))
    }

    #[test]
    fn docs_lose_rustdoc_links_for_psql() {
        assert_eq!(
            super::plain_doc("A crossing. Its `event_id` hashes the line\n ([`Epoch::hash_id`]). See [`x`]."),
            "A crossing. Its `event_id` hashes the line. See `x`."
        );
    }
    use datafusion::arrow::array::{Array, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    /// In a session whose TimeZone is Morocco's, a stream's instants are read in that zone: its
    /// days, hours and windows are local, and the values are the same instants.
    #[test]
    fn a_query_in_a_zone_reads_instants_as_that_zones_wall_clock() {
        use datafusion::arrow::array::{AsArray, TimestampMillisecondArray};
        use datafusion::arrow::datatypes::TimestampMillisecondType;
        let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new("event_time", ts, false)]));
        // 2026-06-14 23:30:00 UTC: 00:30 on the 15th in Casablanca (UTC+1 in June).
        let at = 1_781_479_800_000_i64;
        let times = TimestampMillisecondArray::from(vec![at]).with_timezone("UTC");
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(times)]).unwrap();
        let sql = "SELECT event_time, date_trunc('day', event_time) AS day, extract(hour FROM event_time) AS h, \
                   window_end, CAST(event_time AS TIMESTAMP) AS wall \
                   FROM detections GROUP BY tumble(event_time, INTERVAL '1 hour'), event_time";
        let run = |zone: &str| {
            let tables = vec![("detections".to_owned(), Arc::clone(&schema), vec![batch.clone()])];
            match query(tables, sql, zone, None) {
                Ok(Outcome::Rows(_, b)) => b.into_iter().next().expect("a row"),
                other => panic!("{zone}: {:?}", other.err()),
            }
        };
        let instant =
            |b: &RecordBatch, c: usize| b.column(c).as_primitive::<TimestampMillisecondType>().value(0);
        let zone_of = |b: &RecordBatch, c: usize| match b.schema().field(c).data_type() {
            DataType::Timestamp(_, tz) => tz.as_deref().unwrap_or_default().to_owned(),
            t => panic!("{t}"),
        };
        let hour =
            |b: &RecordBatch| datafusion::arrow::compute::cast(b.column(2), &DataType::Float64).unwrap();
        let local = run("Africa/Casablanca");
        assert_eq!(instant(&local, 0), at, "the same instant");
        assert_eq!(zone_of(&local, 0), "Africa/Casablanca");
        assert_eq!(instant(&local, 1), at - 1_800_000, "the local day: 2026-06-15 00:00+01");
        assert_eq!(hour(&local).as_primitive::<datafusion::arrow::datatypes::Float64Type>().value(0), 0.0);
        assert_eq!(
            (instant(&local, 3), zone_of(&local, 3)),
            (at + 1_800_000, "Africa/Casablanca".to_owned())
        );
        let wall = |b: &RecordBatch| {
            let c = datafusion::arrow::compute::cast(
                b.column(4),
                &DataType::Timestamp(TimeUnit::Millisecond, None),
            );
            c.unwrap().as_primitive::<TimestampMillisecondType>().value(0)
        };
        assert_eq!(wall(&local), at + 3_600_000, "::timestamp is the zone's wall clock, 00:30");
        let utc = run("UTC");
        assert_eq!(wall(&utc), at);
        assert_eq!((instant(&utc, 1), zone_of(&utc, 0)), (at - 84_600_000, "UTC".to_owned()), "the UTC day");
        assert_eq!(hour(&utc).as_primitive::<datafusion::arrow::datatypes::Float64Type>().value(0), 23.0);
    }

    /// Two columns of one name are allowed, as in PostgreSQL; a column whose name is its own is
    /// still found by ORDER BY, and ORDER BY a shared name is PostgreSQL's "ambiguous" error.
    #[test]
    fn columns_of_one_name_keep_the_other_names_for_order_by() {
        use datafusion::arrow::array::{AsArray, StringArray};
        let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new("class", DataType::Utf8, false)]));
        let classes = StringArray::from(vec!["person", "car", "person"]);
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(classes)]).unwrap();
        let run = |sql: &str| {
            let tables = vec![("detections".to_owned(), Arc::clone(&schema), vec![batch.clone()])];
            query(tables, sql, "UTC", None)
        };
        let sql = "SELECT class AS k, count(*), count(*) FROM detections GROUP BY class ORDER BY k DESC";
        let Ok(Outcome::Rows(_, rows)) = run(sql) else { panic!("{sql}") };
        let k: Vec<&str> =
            rows.iter().flat_map(|b| b.column(0).as_string::<i32>().iter().flatten()).collect();
        assert_eq!(k, ["person", "car"]);
        let e = run("SELECT 1 AS n, 2 AS n ORDER BY n").err().expect("ambiguous");
        assert_eq!(e.sqlstate(), "42702", "{e}");
        assert!(
            e.to_string().contains("ORDER BY \"n\" is ambiguous") && e.to_string().contains("ORDER BY 2"),
            "{e}"
        );
    }

    /// Quoted times in a table function's arguments, which DataFusion evaluates while planning,
    /// are read as everywhere else. PostgreSQL 15 gives 1 under `TimeZone` UTC and 181 under
    /// Africa/Casablanca (the first time is in the session's zone, the second has its offset).
    #[test]
    fn quoted_times_in_generate_series_are_read_as_postgresql_reads_them() {
        use datafusion::arrow::array::AsArray;
        let sql = "SELECT count(*) FROM generate_series(TIMESTAMPTZ '2026-06-14 20:00', \
                   TIMESTAMPTZ '2026-06-14 21:00 +01', INTERVAL '20 seconds')";
        let count = |zone: &str| match query(vec![], sql, zone, None) {
            Ok(Outcome::Rows(_, b)) => {
                b[0].column(0).as_primitive::<datafusion::arrow::datatypes::Int64Type>().value(0)
            }
            other => panic!("{zone}: {:?}", other.err()),
        };
        assert_eq!((count("UTC"), count("Africa/Casablanca")), (1, 181));
    }

    /// `generate_series`' column is named as PostgreSQL 15 names it (checked on this machine):
    /// `generate_series`, or the alias the function is given without column names.
    #[test]
    fn generate_series_column_is_named_as_in_postgresql() {
        let names = |sql: &str| match query(vec![], sql, "UTC", None) {
            Ok(Outcome::Rows(schema, b)) => {
                let n: usize = b.iter().map(|b| b.num_rows()).sum();
                (schema.fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>(), n)
            }
            other => panic!("{sql}: {:?}", other.err()),
        };
        let one = |name: &str| (vec![name.to_owned()], 3);
        assert_eq!(names("SELECT * FROM generate_series(1, 3)"), one("generate_series"));
        assert_eq!(names("SELECT generate_series FROM generate_series(1, 3)"), one("generate_series"));
        assert_eq!(names("SELECT g FROM generate_series(1, 3) AS g"), one("g"));
        assert_eq!(names("SELECT g.g FROM generate_series(1, 3) g"), one("g"));
        assert_eq!(names("SELECT * FROM generate_series(1, 3) AS g(x)"), one("x"));
        assert_eq!(names("SELECT \"Day\" FROM generate_series(1, 3) AS \"Day\""), one("Day"));
        let joined = "SELECT a.a, b.b FROM generate_series(1, 3) a JOIN generate_series(2, 4) b ON a.a = b.b";
        assert_eq!(names(joined), (vec!["a".to_owned(), "b".to_owned()], 2));
    }

    /// A subquery tied to the outer query by a time range (DataFusion decorrelates only
    /// equalities) is refused with the join to write instead, not the physical planner's words;
    /// the same count written as that join answers.
    #[test]
    fn a_subquery_correlated_by_a_range_says_to_join() {
        use datafusion::arrow::array::AsArray;
        use datafusion::arrow::datatypes::Int64Type;
        let zoned = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new("event_time", zoned, false)]));
        let t0 = chrono::DateTime::parse_from_rfc3339("2026-06-14T20:00:00Z").unwrap().timestamp_millis();
        let times =
            TimestampMillisecondArray::from(vec![t0 + 1_000, t0 + 2_000, t0 + 12_000]).with_timezone("UTC");
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(times)]).unwrap();
        let tables = || vec![("plate_reads".to_owned(), Arc::clone(&schema), vec![batch.clone()])];
        let series = "generate_series(TIMESTAMPTZ '2026-06-14 20:00', TIMESTAMPTZ '2026-06-14 20:00:10', \
                      INTERVAL '10 seconds') AS b";
        let sub = format!(
            "SELECT b, (SELECT count(*) FROM plate_reads r WHERE r.event_time >= b \
             AND r.event_time < b + INTERVAL '10 seconds') AS n FROM {series}"
        );
        let e = query(tables(), &sub, "UTC", None).err().expect("refused");
        assert_eq!(e.sqlstate(), "0A000", "{e}");
        assert!(e.to_string().contains("other than by equalities"), "{e}");
        assert!(e.to_string().contains("fix: write it as a join: FROM outer LEFT JOIN"), "{e}");
        let join = format!(
            "SELECT b, count(r.event_time) AS n FROM {series} LEFT JOIN plate_reads r \
             ON r.event_time >= b AND r.event_time < b + INTERVAL '10 seconds' GROUP BY b ORDER BY b"
        );
        let Ok(Outcome::Rows(_, b)) = query(tables(), &join, "UTC", None) else { panic!("the join") };
        let n: Vec<i64> =
            b.iter().flat_map(|b| b.column(1).as_primitive::<Int64Type>().values().to_vec()).collect();
        assert_eq!(n, [2, 1]);
    }

    /// `make_interval` as PostgreSQL 15 gives it (checked on this machine), arguments by
    /// position or by name, any left out; a name it does not have is refused.
    #[test]
    fn make_interval_is_postgresqls() {
        use datafusion::arrow::util::display::array_value_to_string;
        let sql = "SELECT CAST(make_interval(mins => 5) AS TEXT), CAST(make_interval(0, 1, 0, 2) AS TEXT), \
                   CAST(make_interval(secs => 90.5) AS TEXT), CAST(make_interval(weeks => 1, hours => 3) AS TEXT), \
                   CAST(make_interval(years => 1, days => -1) AS TEXT), CAST(make_interval() AS TEXT)";
        let Ok(Outcome::Rows(_, b)) = query(vec![], sql, "UTC", None) else { panic!("{sql}") };
        let texts: Vec<String> = (0..6).map(|i| array_value_to_string(b[0].column(i), 0).unwrap()).collect();
        assert_eq!(
            texts,
            ["00:05:00", "1 mon 2 days", "00:01:30.5", "7 days 03:00:00", "1 year -1 days", "00:00:00"]
        );
        assert!(query(vec![], "SELECT make_interval(minutes => 5)", "UTC", None).is_err());
        // A call within a call, its argument taken as it is (PostgreSQL 15: `00:02:00`).
        let sql = "SELECT CAST(make_interval(secs => extract(epoch FROM make_interval(mins => 2))) AS TEXT)";
        let Ok(Outcome::Rows(_, b)) = query(vec![], sql, "UTC", None) else { panic!("{sql}") };
        assert_eq!(array_value_to_string(b[0].column(0), 0).unwrap(), "00:02:00");
    }

    /// `generate_series` in the select list gives a row per value, as in PostgreSQL 15 (checked
    /// on this machine), not one row holding a list.
    #[test]
    fn generate_series_in_the_select_list_gives_rows() {
        use datafusion::arrow::array::AsArray;
        use datafusion::arrow::datatypes::Int64Type;
        let rows = |sql: &str| match query(vec![], sql, "UTC", None) {
            Ok(Outcome::Rows(schema, b)) => {
                let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
                let i = names.len() - 1;
                let values: Vec<i64> = b
                    .iter()
                    .flat_map(|b| b.column(i).as_primitive::<Int64Type>().values().to_vec())
                    .collect();
                (names, values)
            }
            other => panic!("{sql}: {:?}", other.err()),
        };
        assert_eq!(rows("SELECT generate_series(1, 3)"), (vec!["generate_series".into()], vec![1, 2, 3]));
        assert_eq!(rows("SELECT generate_series(1, 3) AS n"), (vec!["n".into()], vec![1, 2, 3]));
        assert_eq!(
            rows("SELECT 'x' AS k, generate_series(5, 6)"),
            (vec!["k".into(), "generate_series".into()], vec![5, 6])
        );
        let sub = "SELECT count(*) AS n FROM (SELECT generate_series(1, 4) AS v) s WHERE v > 1";
        assert_eq!(rows(sub), (vec!["n".into()], vec![3]));
        // Without FROM it is the table function, whose rows stream and are counted against the
        // query's memory (the scalar one built a list of them all first: 300 million values
        // took 8.6 GB and 142 s, dev build, before the limit stopped it; now 0.3 GB, 0.16 s).
        let mut st = datafusion::sql::sqlparser::parser::Parser::parse_sql(
            &datafusion::sql::sqlparser::dialect::GenericDialect {},
            "SELECT generate_series(1, 300000000)",
        )
        .unwrap()
        .remove(0);
        crate::functions::expand_series_in_select(&mut st);
        assert_eq!(
            st.to_string(),
            "SELECT \"vigil series\".v AS generate_series FROM generate_series(1, 300000000) AS \"vigil series\" (v)"
        );
        let e = query(vec![], "SELECT generate_series(1, 300000000)", "UTC", None).err().expect("refused");
        assert!(e.to_string().contains("the query needs more than 256 MiB"), "{e}");
    }

    /// The scalar `generate_series` and `range` (outside FROM, or inside another function) are
    /// refused before they build more values than the query's memory holds, saying how to
    /// stream them; under it they answer as before. A date step whose parts pull opposite ways
    /// (on which DataFusion's series would never end) is refused.
    #[test]
    fn scalar_series_are_bounded_by_the_querys_memory() {
        use datafusion::arrow::array::AsArray;
        use datafusion::arrow::datatypes::Int64Type;
        let refused =
            |sql: &str| query(vec![], sql, "UTC", None).err().unwrap_or_else(|| panic!("{sql} ran"));
        let big = [
            "SELECT array_length(generate_series(1, 300000000), 1)",
            "SELECT x, generate_series(1, 300000000) FROM (VALUES (1)) AS t(x)",
            "SELECT cardinality(range(0, 600000000, 2))",
            "SELECT array_length(generate_series(TIMESTAMP '2026-01-01', TIMESTAMP '2036-01-01', INTERVAL '1 second'), 1)",
        ];
        for sql in big {
            let e = refused(sql);
            assert_eq!(e.sqlstate(), "54000", "{sql}: {e}");
            assert!(
                e.to_string().contains("outside FROM builds each row's values as one list"),
                "{sql}: {e}"
            );
            assert!(e.to_string().contains("fix: call it in FROM"), "{sql}: {e}");
        }
        // Rows under the bound each, over it together: the query's memory stops them.
        let e = refused("SELECT x, generate_series(1, 20000000) FROM (VALUES (1), (2)) AS t(x)");
        assert_eq!(e.sqlstate(), "54000", "{e}");
        let e = refused(
            "SELECT cardinality(generate_series(DATE '2026-03-01', DATE '2026-01-01', INTERVAL '1 month -20 days'))",
        );
        assert_eq!(e.sqlstate(), "22023", "{e}");
        assert!(e.to_string().contains("a step of 1 mon -20 days may not move forward or back"), "{e}");
        let n = |sql: &str| match query(vec![], sql, "UTC", None) {
            Ok(Outcome::Rows(_, b)) => b[0].column(0).as_primitive::<Int64Type>().value(0),
            other => panic!("{sql}: {:?}", other.err()),
        };
        assert_eq!(n("SELECT CAST(array_length(generate_series(1, 1000000), 1) AS BIGINT)"), 1_000_000);
        assert_eq!(n("SELECT CAST(cardinality(range(0, 10, 3)) AS BIGINT)"), 4);
        let days = "SELECT CAST(array_length(generate_series(TIMESTAMPTZ '2026-01-01 00:00+00', \
                    TIMESTAMPTZ '2036-01-01 00:00+00', INTERVAL '1 day'), 1) AS BIGINT)";
        assert_eq!(n(days), 3653);
        let months = "SELECT CAST(array_length(generate_series(DATE '2026-03-31', DATE '2025-01-01', \
                      INTERVAL '-1 month'), 1) AS BIGINT)";
        assert_eq!(n(months), 15);
    }

    /// An array written as a text literal in `ANY(…)` and `ALL(…)` reads as PostgreSQL 15 reads
    /// it (checked on this machine: 2 and 0); a literal that is not an array is refused.
    #[test]
    fn an_array_literal_in_any_is_read_as_an_array() {
        use datafusion::arrow::array::AsArray;
        use datafusion::arrow::datatypes::Int64Type;
        let sql = "SELECT count(*) FILTER (WHERE x = ANY('{a, \"b c\"}')) AS n, \
                   count(*) FILTER (WHERE x <> ALL (('{a,NULL}'))) AS m \
                   FROM (VALUES ('a'), ('b c'), ('d')) AS t(x)";
        let Ok(Outcome::Rows(_, b)) = query(vec![], sql, "UTC", None) else { panic!("{sql}") };
        let n = |i: usize| b[0].column(i).as_primitive::<Int64Type>().value(0);
        assert_eq!((n(0), n(1)), (2, 0));
        let e = query(vec![], "SELECT 1 WHERE 'a' = ANY('a,b')", "UTC", None).err().expect("refused");
        assert_eq!(e.sqlstate(), "22023", "{e}");
        assert!(e.to_string().contains("is not an array"), "{e}");
    }

    /// `now()`, `current_timestamp` and `current_date` read the engine's clock: a simulated
    /// city's "the last five minutes" are its own (with no clock yet, the wall's).
    #[test]
    fn now_is_the_engines_clock() {
        use datafusion::arrow::array::{AsArray, Date32Array};
        use datafusion::arrow::datatypes::{IntervalMonthDayNanoType, TimestampNanosecondType};
        let zoned = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
        let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new("event_time", zoned, false)]));
        let clock = chrono::DateTime::parse_from_rfc3339("2026-06-14T20:05:00Z").unwrap().timestamp_millis();
        // Ten minutes, two minutes and one second before the clock.
        let times = TimestampMillisecondArray::from(vec![clock - 600_000, clock - 120_000, clock - 1_000])
            .with_timezone("UTC");
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(times)]).unwrap();
        let sql = "SELECT (SELECT count(*) FROM detections WHERE event_time > now() - INTERVAL '5 minutes') AS n, \
                   current_timestamp AS now, current_date AS today, \
                   age(TIMESTAMPTZ '2026-06-13 12:00:00+00') AS since";
        let run = |now: Option<Millis>| {
            let tables = vec![("detections".to_owned(), Arc::clone(&schema), vec![batch.clone()])];
            match query(tables, sql, "UTC", now) {
                Ok(Outcome::Rows(_, b)) => {
                    let b = &b[0];
                    let n = b.column(0).as_primitive::<datafusion::arrow::datatypes::Int64Type>().value(0);
                    let at = b.column(1).as_primitive::<TimestampNanosecondType>().value(0) / 1_000_000;
                    let today = b.column(2).as_any().downcast_ref::<Date32Array>().unwrap().value(0);
                    let since = b.column(3).as_primitive::<IntervalMonthDayNanoType>().value(0);
                    (n, at, today, (since.months, since.days, since.nanoseconds / 3_600_000_000_000))
                }
                other => panic!("{:?}", other.err()),
            }
        };
        let june_14 = (clock / 86_400_000) as i32;
        // age(b) counts from midnight of the clock's day: 12 hours after noon the day before.
        assert_eq!(run(Some(clock)), (2, clock, june_14, (0, 0, 12)), "the city's clock");
        let (n, at, today, since) = run(None);
        assert!(
            n == 0 && at > clock && today > june_14 && since.0 > 0,
            "the wall's clock: {n} {at} {today} {since:?}"
        );
    }

    /// What an ad-hoc query's error says: where (line and column, as a rule's error does) and,
    /// for an unknown table, which ones this user may query.
    #[test]
    fn an_ad_hoc_query_error_names_its_place_and_the_tables_there_are() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new("camera_id", DataType::UInt32, false)]));
        let refused = |sql: &str| {
            let tables =
                ["zones", "detections"].map(|t| (t.to_owned(), Arc::clone(&schema), vec![])).to_vec();
            let e = query(tables, sql, "UTC", None).err().expect("refused");
            (e.sqlstate(), e.position().map(ToString::to_string), e.to_string())
        };
        let (state, at, e) = refused("SELECT *\nFROM nothere");
        assert_eq!((state, at.as_deref()), ("42P01", Some("psql:2:6")), "{e}");
        assert!(e.contains("table 'nothere' not found") && e.contains("detections, zones"), "{e}");
        let (state, at, e) = refused("SELECT colour FROM detections");
        assert_eq!((state, at.as_deref()), ("42703", Some("psql:1:8")), "{e}");
        // No column is spelled alike: the fix lists those there are, as the query may write them.
        assert!(e.contains("fix: the columns here are detections.camera_id"), "{e}");
        let (_, at, e) = refused("SELECT d.camera_id FROM detections d JOIN zones z ON d.camera_id = z.x");
        assert_eq!(at.as_deref(), Some("psql:1:68"), "{e}");
        assert!(e.contains("fix: the columns here are d.camera_id, z.camera_id"), "{e}");
        // Errors DataFusion gives without a place: located at the name they are about.
        let (state, at, e) = refused("SELECT camera_id FROM detections\nORDER BY colour");
        assert_eq!((state, at.as_deref()), ("42703", Some("psql:2:10")), "{e}");
        assert!(
            e.contains("column 'colour' not found") && e.contains("columns here are detections.camera_id"),
            "{e}"
        );
        let (state, at, e) = refused("SELECT 1 FROM detections d, zones d");
        assert_eq!((state, at.as_deref()), ("42712", Some("psql:1:26")), "{e}");
        assert!(e.contains("table name \"d\" specified more than once"), "{e}");
        let (state, at, e) = refused("SELECT camera_id, lower(camera_id) FROM detections");
        assert_eq!((state, at.as_deref()), ("42883", Some("psql:1:19")), "{e}");
        // PostgreSQL's type names, not Arrow's, and no "bug in DataFusion".
        assert!(
            e.contains("function lower(bigint) does not exist") && e.contains("it takes lower(text)"),
            "{e}"
        );
        assert!(!e.contains("DataFusion") && !e.contains("Utf8"), "{e}");
        let (_, _, e) = refused("SELECT now() - '1 day'");
        assert!(e.contains("fix: give the quoted value its type: INTERVAL '1 day'"), "{e}");
        let (state, at, e) = refused("SELECT * FROM detections WHERE");
        assert_eq!((state, at.as_deref()), ("42601", Some("psql:1:31")), "{e}");
        assert!(e.contains("ends too early"), "{e}");
        // A query that plans still runs.
        let tables = vec![("detections".to_owned(), Arc::clone(&schema), vec![])];
        let ok = query(tables, "SELECT count(*) FROM detections", "UTC", None);
        assert!(matches!(ok, Ok(Outcome::Rows(..))));
    }

    #[test]
    fn a_snapshot_and_the_live_changes_after_it_hold_every_change_exactly_once() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let out = Arc::new(RuleOut::new(u64::MAX / 4, usize::MAX));
        let writer = {
            let (out, schema) = (Arc::clone(&out), Arc::clone(&schema));
            std::thread::spawn(move || {
                for v in 0..2_000i64 {
                    let rows =
                        RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(Int64Array::from(vec![v]))])
                            .unwrap();
                    out.publish(Delta::inserts(rows, vec![v as u64]));
                }
            })
        };
        while out.latest() < 500 {
            std::thread::yield_now();
        }
        let (snapshot, mut rx) = out.snapshot_and_subscribe(&schema).unwrap();
        writer.join().unwrap();
        let mut seen: Vec<i64> =
            snapshot.column(0).as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec();
        loop {
            match rx.try_recv() {
                Ok(d) => {
                    let v = d.rows.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                    seen.extend((0..v.len()).map(|i| v.value(i)));
                }
                Err(broadcast::error::TryRecvError::Lagged(_)) => panic!("2,000 changes fit in the channel"),
                Err(_) => break,
            }
        }
        seen.sort();
        assert_eq!(seen, (0..2_000).collect::<Vec<_>>());
    }
}

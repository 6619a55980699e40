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
use vigil_engine::parquet_sink::{ParquetSinkConfig, WriteParquet};
use vigil_engine::runtime::Builder;
use vigil_engine::share::{Retained, consolidate as consolidate_table};
use vigil_engine::stream::{Batch, Class, StreamDef};
use vigil_engine::time::Millis;
use vigil_operators::alerts::{AlertBus, Alerts, alerts_from_batch};

use crate::capture::consolidate;
use crate::delta::Delta;
use crate::error::{Kind, Result, SqlError};
use crate::operator::{alerts_of, render_rule};
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
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Control::Install { id, name, backfill_ms, .. } => {
                write!(f, "Install({id} {name}, backfill {backfill_ms} ms)")
            }
            Control::Remove { id } => write!(f, "Remove({id})"),
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
}

impl RuleOut {
    fn new(keep_ms: u64) -> Self {
        Self {
            tx: broadcast::channel(SUBSCRIBE_CAPACITY).0,
            recent: Mutex::new(VecDeque::new()),
            keep_ms,
            latest: AtomicU64::new(0),
        }
    }

    fn publish(&self, d: Delta) {
        let newest = d.times.iter().copied().max().unwrap_or(0);
        self.latest.fetch_max(newest, Ordering::Relaxed);
        // Under the lock, so that a subscriber's snapshot and its live changes never overlap.
        let mut recent = self.recent.lock().expect("rule output");
        recent.push_back(d.clone());
        // Keep what is within the retention of the newest change (memory stays bounded).
        while recent
            .front()
            .is_some_and(|f| f.times.iter().copied().max().unwrap_or(0) + self.keep_ms < newest)
        {
            recent.pop_front();
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
    sinks: Mutex<Option<RuleSinks>>,
    next_id: AtomicU64,
    closed: AtomicBool,
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
            sinks: Mutex::new(Some(sinks)),
            next_id: AtomicU64::new(1),
            closed: AtomicBool::new(false),
        }
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

    /// Installs the rules of the configuration (`origin` names the file): they run like any
    /// rule, are shown and explained, and are not dropped or stored.
    pub fn add_config(&self, rules: Vec<Rule>, origin: &str) -> Result<()> {
        let mut map = self.rules.lock().expect("rules");
        for rule in rules {
            let statement = rule.sql.clone();
            self.install(&mut map, rule, statement, origin)?;
        }
        Ok(())
    }

    /// Creates the rules of `sql` (one or more `CREATE RULE` statements); `source` names the
    /// text in errors. All or nothing: nothing is created if any statement is wrong.
    pub fn create(&self, sql: &str, source: &str) -> Result<Vec<String>> {
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
            self.install(&mut map, rule, st.text.clone(), RUNTIME)?;
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
    ) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(SqlError::ShuttingDown);
        }
        let sinks = self.sinks.lock().expect("sinks").clone().ok_or(SqlError::ShuttingDown)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // The rule's directory is made here, once, not by each worker (a worker must never
        // clear the files another has open).
        if let Some(root) = &sinks.out {
            let (rows, _) = sink_configs(root, &rule, id, &sinks);
            std::fs::create_dir_all(&rows.dir)
                .map_err(|source| SqlError::Io { path: rows.dir.display().to_string(), source })?;
        }
        let out = Arc::new(RuleOut::new(rule.options.retention_ms));
        let build = builder(&rule, id, &out, sinks, Arc::clone(&self.retained));
        let control = Control::Install {
            id,
            name: rule.name.clone(),
            build,
            backfill_ms: rule.options.backfill_ms as Millis,
        };
        self.control.lock().expect("control").send(control).map_err(|_| SqlError::ShuttingDown)?;
        map.insert(rule.name.clone(), Entry { id, rule, statement, out, origin: origin.into() });
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
        let sql = std::fs::read_to_string(path)
            .map_err(|source| SqlError::Io { path: path.display().to_string(), source })?;
        if sql.trim().is_empty() {
            return Ok(Vec::new());
        }
        self.create(&sql, &path.display().to_string())
    }

    fn persist(&self, map: &BTreeMap<String, Entry>) -> Result<()> {
        let Some(path) = &self.store else { return Ok(()) };
        let mut text =
            String::from("-- Rules created at runtime (CREATE RULE); vigil rewrites this file.\n\n");
        for e in map.values().filter(|e| e.is_runtime()) {
            text.push_str(e.statement.trim().trim_end_matches(';'));
            text.push_str(";\n\n");
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
    pub async fn query(&self, sql: &str) -> std::result::Result<(SchemaRef, Vec<RecordBatch>), String> {
        let ctx = SessionContext::new();
        let mut tables: Vec<(String, SchemaRef, Vec<RecordBatch>)> = Vec::new();
        {
            let r = self.retained.lock().expect("retained");
            for info in self.streams.streams() {
                tables.push((info.name.to_owned(), Arc::clone(&info.schema), r.batches(info.name)));
            }
            for info in self.streams.tables() {
                let changes = r.table_changes(info.name);
                let rows = consolidate_table(info, &changes).map_err(|e| e.to_string())?;
                tables.push((
                    info.name.to_owned(),
                    Arc::clone(&info.schema),
                    rows.map(|b| b.rows).into_iter().collect(),
                ));
            }
        }
        for e in self.list() {
            let rows = e.out.contents(&e.rule.schema).map_err(|e| e.to_string())?;
            let schema = unique_names(&e.rule.schema);
            let rows = RecordBatch::try_new(Arc::clone(&schema), rows.columns().to_vec())
                .map_err(|e| e.to_string())?;
            tables.push((e.rule.name.clone(), schema, vec![rows]));
        }
        for (name, schema, batches) in tables {
            let t = MemTable::try_new(schema, vec![batches]).map_err(|e| e.to_string())?;
            ctx.register_table(name.as_str(), Arc::new(t)).map_err(|e| e.to_string())?;
        }
        let df = ctx.sql(sql).await.map_err(|e| e.to_string())?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await.map_err(|e| e.to_string())?;
        Ok((schema, batches))
    }
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
        let deltas = render_rule(&rule, graph, &sinks.errors);
        let publish = Arc::clone(&out);
        deltas
            .clone()
            .unary::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
                Pipeline,
                &format!("{}: Publish", rule.name),
                move |_, _| {
                    move |input, _| {
                        input.for_each(|_, data| {
                            for d in data.drain(..) {
                                publish.publish(d);
                            }
                        })
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
            let report = move |e| errors.report(&name, e);
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
            .tagged(format!("r{id}"));
    let alerts =
        ParquetSinkConfig::new(root.join(Alerts::NAME), Alerts::NAME, sinks.partition_ms, sinks.epoch)
            .tagged(format!("r{id}"))
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

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn a_snapshot_and_the_live_changes_after_it_hold_every_change_exactly_once() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let out = Arc::new(RuleOut::new(u64::MAX / 4));
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

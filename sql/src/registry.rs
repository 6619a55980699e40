//! The rule catalog of a running engine: rules created and dropped at runtime, their outputs,
//! and ad-hoc queries over the engine's in-memory state.
//!
//! [`Registry::create`] compiles a `CREATE RULE`, asks the engine driver (through a
//! [`Control`] channel: the driver owns the ingest side) to add the rule's dataflow, backfilled
//! from retained events, and records the statement in the rules file so the rule survives a
//! restart. Each rule's output deltas go to a broadcast channel (`SUBSCRIBE`) and to a bounded
//! buffer of recent changes (ad-hoc `SELECT` over the rule). [`Registry::query`] runs a
//! `SELECT` with DataFusion over retained events, reference tables and rule contents.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Probe;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use tokio::sync::broadcast;
use vigil_engine::alerts::{AlertBus, alerts_from_batch};
use vigil_engine::ingest::Retained;
use vigil_engine::runtime::{BatchKind, Builder};
use vigil_engine::schema::StreamKind;
use vigil_engine::time::Millis;

use crate::capture::consolidate;
use crate::catalog::{STREAMS, reference_tables};
use crate::delta::Delta;
use crate::error::{Result, SqlError};
use crate::operator::{alerts_of, render_rule};
use crate::rule::{Rule, compile, split_statements};

/// What the registry asks of the engine driver.
pub enum Control {
    /// Add a rule's dataflow, backfilled from `backfill_ms` before the watermark.
    Install {
        /// Dataflow id.
        id: u64,
        /// Builds it on each worker.
        build: Builder,
        /// Backfill, ms.
        backfill_ms: Millis,
        /// The streams the rule reads (the driver derives tracks, densities and flows for
        /// the rule's dataflow only when it reads them).
        streams: Vec<StreamKind>,
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
            Control::Install { id, backfill_ms, .. } => write!(f, "Install({id}, backfill {backfill_ms} ms)"),
            Control::Remove { id } => write!(f, "Remove({id})"),
        }
    }
}

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
            tx: broadcast::channel(4096).0,
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
    /// Dataflow id (0 for rules from the configuration, which run in the main dataflow).
    pub id: u64,
    /// The compiled rule.
    pub rule: Rule,
    /// The statement that created it (what the rules file stores).
    pub statement: String,
    /// Its output, for runtime rules.
    pub out: Option<Arc<RuleOut>>,
    /// Where it comes from: `runtime` or the configuration file.
    pub origin: String,
}

/// The rule catalog; see the module documentation.
pub struct Registry {
    rules: Mutex<BTreeMap<String, Entry>>,
    control: Mutex<std::sync::mpsc::Sender<Control>>,
    retained: Arc<Mutex<Retained>>,
    store: Option<PathBuf>,
    bus: Mutex<Option<AlertBus>>,
    next_id: AtomicU64,
    closed: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("store", &self.store).finish_non_exhaustive()
    }
}

impl Registry {
    /// A registry driving the engine through `control`, reading `retained` events, storing
    /// runtime rules in `store` (if any) and publishing their alerts on `bus` (if any).
    pub fn new(
        control: std::sync::mpsc::Sender<Control>,
        retained: Arc<Mutex<Retained>>,
        store: Option<PathBuf>,
        bus: Option<AlertBus>,
    ) -> Self {
        Self {
            rules: Mutex::new(BTreeMap::new()),
            control: Mutex::new(control),
            retained,
            store,
            bus: Mutex::new(bus),
            next_id: AtomicU64::new(1),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The engine is stopping: no more rules are created, and the registry lets go of the
    /// alert bus (so that its readers see it close).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.bus.lock().expect("bus").take();
    }

    /// Lists rules that run in the main dataflow (from the configuration): shown and explained,
    /// not dropped.
    pub fn add_static(&self, rules: &[Rule], origin: &str) {
        let mut map = self.rules.lock().expect("rules");
        for r in rules {
            map.insert(
                r.name.clone(),
                Entry { id: 0, rule: r.clone(), statement: r.sql.clone(), out: None, origin: origin.into() },
            );
        }
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
        let rules = compile("rule", sql, source)?;
        if self.closed.load(Ordering::SeqCst) {
            return Err(SqlError::Internal("the engine is shutting down".into()));
        }
        let bus = self.bus.lock().expect("bus").clone();
        let mut map = self.rules.lock().expect("rules");
        for (r, st) in rules.iter().zip(&statements) {
            if let Some(e) = map.get(&r.name) {
                return Err(SqlError::user(
                    Some(st.start.clone()),
                    format!("a rule named {} already exists ({})", r.name, e.origin),
                    format!("DROP RULE {} first, or choose another name", r.name),
                ));
            }
        }
        let mut names = Vec::new();
        for (rule, st) in rules.into_iter().zip(statements) {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let out = Arc::new(RuleOut::new(rule.options.retention_ms));
            let build = builder(&rule, &out, bus.clone());
            self.control
                .lock()
                .expect("control")
                .send(Control::Install {
                    id,
                    build,
                    backfill_ms: rule.options.backfill_ms as Millis,
                    streams: rule.node.streams(),
                })
                .map_err(|_| SqlError::Internal("the engine has stopped".into()))?;
            names.push(rule.name.clone());
            map.insert(
                rule.name.clone(),
                Entry { id, rule, statement: st.text.clone(), out: Some(out), origin: "runtime".into() },
            );
        }
        self.persist(&map)?;
        Ok(names)
    }

    /// Drops a runtime rule.
    pub fn drop_rule(&self, name: &str, if_exists: bool) -> Result<bool> {
        let mut map = self.rules.lock().expect("rules");
        match map.get(name) {
            None if if_exists => Ok(false),
            None => Err(SqlError::user(
                None,
                format!("no rule named {name}"),
                format!("SHOW RULES lists them: {}", map.keys().cloned().collect::<Vec<_>>().join(", ")),
            )),
            Some(e) if e.id == 0 => Err(SqlError::user(
                None,
                format!("rule {name} comes from {}", e.origin),
                "remove it from that file and restart",
            )),
            Some(e) => {
                let id = e.id;
                self.control
                    .lock()
                    .expect("control")
                    .send(Control::Remove { id })
                    .map_err(|_| SqlError::Internal("the engine has stopped".into()))?;
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
        for e in map.values().filter(|e| e.id != 0) {
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

    /// Runs a `SELECT` over the engine's in-memory state: retained events of every stream,
    /// the reference tables, and each runtime rule's current contents (as a table named after
    /// the rule).
    pub async fn query(&self, sql: &str) -> std::result::Result<(SchemaRef, Vec<RecordBatch>), String> {
        let ctx = SessionContext::new();
        let (streams, references) = {
            let r = self.retained.lock().expect("retained");
            let streams: Vec<(StreamKind, Vec<RecordBatch>)> =
                STREAMS.iter().map(|s| (*s, r.batches(*s))).collect();
            let refs: Vec<(String, Vec<Delta>)> = reference_tables()
                .into_iter()
                .map(|(t, _)| {
                    let d = r
                        .references()
                        .iter()
                        .filter_map(|(time, b)| match &b.kind {
                            BatchKind::Reference { table, diff } if **table == *t => {
                                let n = b.data.num_rows();
                                Some(Delta {
                                    rows: b.data.clone(),
                                    times: vec![*time; n],
                                    diffs: vec![*diff; n],
                                })
                            }
                            _ => None,
                        })
                        .collect();
                    (t, d)
                })
                .collect();
            (streams, refs)
        };
        for (stream, batches) in streams {
            let t = MemTable::try_new(stream.schema(), vec![batches]).map_err(|e| e.to_string())?;
            ctx.register_table(stream.name(), Arc::new(t)).map_err(|e| e.to_string())?;
        }
        for ((table, schema), (_, deltas)) in reference_tables().into_iter().zip(references) {
            let deltas: Vec<Delta> = deltas
                .into_iter()
                .filter_map(|d| {
                    let cols = schema
                        .fields()
                        .iter()
                        .map(|f| d.rows.column_by_name(f.name()).cloned())
                        .collect::<Option<Vec<_>>>()?;
                    let rows = RecordBatch::try_new(Arc::clone(&schema), cols).ok()?;
                    Some(Delta { rows, ..d })
                })
                .collect();
            let rows = consolidate(&schema, &deltas).map_err(|e| e.to_string())?;
            let t = MemTable::try_new(Arc::clone(&schema), vec![vec![rows]]).map_err(|e| e.to_string())?;
            ctx.register_table(table.as_str(), Arc::new(t)).map_err(|e| e.to_string())?;
        }
        for e in self.list() {
            let Some(out) = &e.out else { continue };
            let rows = out.contents(&e.rule.schema).map_err(|e| e.to_string())?;
            let schema = unique_names(&e.rule.schema);
            let rows = RecordBatch::try_new(Arc::clone(&schema), rows.columns().to_vec())
                .map_err(|e| e.to_string())?;
            let t = MemTable::try_new(schema, vec![vec![rows]]).map_err(|e| e.to_string())?;
            ctx.register_table(e.rule.name.as_str(), Arc::new(t)).map_err(|e| e.to_string())?;
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
    let fields: Vec<datafusion::arrow::datatypes::Field> = schema
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
    Arc::new(datafusion::arrow::datatypes::Schema::new(fields))
}

/// The dataflow of a runtime rule: its deltas go to `out`, its inserted rows to `bus` as alerts.
fn builder(rule: &Rule, out: &Arc<RuleOut>, bus: Option<AlertBus>) -> Builder {
    let (rule, out) = (rule.clone(), Arc::clone(out));
    Arc::new(move |_scope, input, _index| {
        let probe = ProbeHandle::new();
        let deltas = render_rule(
            &rule,
            &input,
            |name, e| tracing::error!(rule = %name, "rule failed on a batch: {e}"),
        );
        let sink_out = Arc::clone(&out);
        deltas
            .clone()
            .unary::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
                Pipeline,
                "PublishRule",
                move |_, _| {
                    move |input, _| {
                        input.for_each(|_, data| {
                            for d in data.drain(..) {
                                sink_out.publish(d);
                            }
                        })
                    }
                },
            )
            .probe_with(&probe);
        if let Some(bus) = bus.clone() {
            alerts_of(&rule, deltas)
                .unary::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
                    Pipeline,
                    "PublishRuleAlerts",
                    move |_, _| {
                        move |input, _| {
                            input.for_each(|_, data| {
                                for b in data.iter() {
                                    for a in alerts_from_batch(&b.data).unwrap_or_default() {
                                        bus.publish(a);
                                    }
                                }
                            })
                        }
                    },
                )
                .probe_with(&probe);
        }
        probe
    })
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
        while let Ok(d) = rx.try_recv() {
            let v = d.rows.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            seen.extend((0..v.len()).map(|i| v.value(i)));
        }
        seen.sort();
        assert_eq!(seen, (0..2_000).collect::<Vec<_>>());
    }
}

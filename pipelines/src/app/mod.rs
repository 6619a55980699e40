//! Running a city: settings in, a running engine, Parquet and alerts out, until stopped.
//!
//! [`run`] (and [`run_with`], which takes extra [`Derivation`]s) is what `vigil demo`, `vigil
//! run` and `vigil bench` share. It is three rooms:
//! - [`graph`]: the main dataflow each worker builds: the derivations (tracks, flows, density,
//!   watchlist hits, and any given), Parquet for every stream of the catalog, alerts to the bus;
//! - [`drive`]: the sources: the simulated city (frames at capture time, delivered after their
//!   network delay) or live cameras (on the wall clock);
//! - [`control`]: the loop both drive, once per tick: watchlist entries that come due, rules
//!   added or dropped from psql, the watermark, retention on disk and in memory, counters.
//!
//! With no duration the run goes on until `stop` is set (SIGINT, SIGTERM); then the inputs
//! close, every window and file closes, and the summary is returned.

pub mod control;
pub mod drive;
pub mod graph;
pub mod subject;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use vigil_engine::audit::AuditLog;
use vigil_engine::catalog::Catalog;
use vigil_engine::error::ErrorSink;
use vigil_engine::ids::Epoch;
use vigil_engine::ingest::{Ingest, IngestStats};
use vigil_engine::parquet_sink::list_files;
use vigil_engine::runtime::{Runtime, RuntimeConfig, Time};
use vigil_engine::share::Retained;
use vigil_engine::stream::{Batch, StreamDef, StreamInfo};
use vigil_engine::time::{Millis, WatermarkPolicy};
use vigil_operators::alerts::AlertBus;
use vigil_operators::detection::LateEvents;
use vigil_operators::tracks::Locate;
use vigil_operators::watchlist::{self, WatchEntry, Watchlist};
use vigil_operators::zones::{self, ZoneIndex, Zones};
use vigil_sql::registry::{Control, Registry, RuleSinks};
use vigil_sql::rule::Rule;

use crate::derive::{self, Derivation};
use crate::settings::{RuleSource, Settings};

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Seconds to run (simulated or wall-clock); `None`: until stopped.
    pub duration_s: Option<f64>,
    /// Run as fast as possible instead of on the wall clock.
    pub fast: bool,
    /// Output directory (overrides the settings').
    pub out: PathBuf,
    /// Write Parquet at all (the bench may turn it off).
    pub parquet: bool,
    /// Write the simulator's ground truth.
    pub ground_truth: bool,
    /// Serve psql on this address (overrides the settings' `server.pg_listen`).
    pub pg_listen: Option<String>,
    /// Serve HTTP on this address (overrides the settings' `server.http_listen`).
    pub http_listen: Option<String>,
}

/// Live counters, readable while the run goes on (for the status line).
#[derive(Debug, Default)]
pub struct Progress {
    /// On-time rows ingested.
    pub rows: AtomicU64,
    /// Late rows.
    pub late: AtomicU64,
    /// Simulated (or wall-clock) milliseconds done.
    pub sim_ms: AtomicU64,
    /// The city's clock (event time, ms since the epoch) as the control loop last saw it.
    pub clock_ms: std::sync::atomic::AtomicI64,
    /// Errors reported by operators, sinks and rules.
    pub errors: AtomicU64,
    /// Files deleted by retention.
    pub deleted: AtomicU64,
    /// The counters in Prometheus' text format, as of the last second (`/metrics`).
    pub metrics: std::sync::Mutex<String>,
    /// The live cameras, whose health `/metrics` reports.
    pub cameras: std::sync::Mutex<Vec<Arc<crate::camera::Health>>>,
}

/// What a run did.
#[derive(Debug)]
pub struct Summary {
    /// Ingest counters.
    pub ingest: IngestStats,
    /// Alerts by kind.
    pub alerts: BTreeMap<String, u64>,
    /// Parquet files per stream.
    pub files: BTreeMap<&'static str, usize>,
    /// Output root.
    pub out: PathBuf,
    /// The run's epoch.
    pub epoch: Epoch,
    /// Seconds of event time run (simulated, or the live cameras').
    pub event_s: f64,
    /// True when the input was live cameras, not the simulated city.
    pub live: bool,
    /// Wall-clock time.
    pub wall: Duration,
    /// Paced runs: the most the feed fell behind its schedule (zero when it kept up).
    pub behind_max: Duration,
    /// Wall time from the last input to the end (the watermark's lateness drained, files closed).
    pub drain: Duration,
    /// True when a signal stopped it before its duration.
    pub interrupted: bool,
    /// Operator, sink or rule errors.
    pub errors: u64,
    /// Files deleted by retention while it ran.
    pub deleted: u64,
}

/// Compiles the configured rules against `streams`, placing errors in the configuration file.
pub fn compile_rules(settings: &Settings, streams: &Catalog) -> anyhow::Result<Vec<Rule>> {
    let mut rules = Vec::new();
    for r in &settings.rules {
        match r {
            RuleSource::Inline { name, sql, at } => {
                match vigil_sql::rule::compile(name, sql, &settings.source, streams) {
                    Ok(r) => rules.extend(r),
                    // Place the error in the configuration file, not in the SQL string.
                    Err(vigil_sql::SqlError::User { position: Some(p), message, fix, .. }) => {
                        let (line, column) = settings.inline_position(*at, p.line, p.column);
                        bail!("{}:{line}:{column}: rule {name}: {message}; fix: {fix}", settings.source)
                    }
                    Err(e) => bail!("{}: rule {name}: {e}", settings.source),
                }
            }
            RuleSource::File(path) => rules.extend(vigil_sql::rule::compile_file(path, streams)?),
        }
    }
    Ok(rules)
}

/// The zone index of each camera (a zone seen by several cameras is in each one's index).
pub fn zones_by_camera(zones: &[zones::Zone]) -> BTreeMap<u32, ZoneIndex> {
    let mut m: BTreeMap<u32, Vec<zones::Zone>> = BTreeMap::new();
    for z in zones {
        for &c in &z.cameras {
            m.entry(c).or_default().push(z.clone());
        }
    }
    m.into_iter().map(|(c, zs)| (c, ZoneIndex::new(zs))).collect()
}

/// Runs the city `settings` describes; `stop` ends it (Ctrl-C, SIGTERM), `bus` receives every
/// alert.
pub fn run(
    settings: &Settings,
    opts: &RunOptions,
    bus: &AlertBus,
    stop: &AtomicBool,
    progress: &Arc<Progress>,
) -> anyhow::Result<Summary> {
    run_with(settings, opts, Vec::new(), bus, stop, progress)
}

/// [`run`], with `extra` derivations beside the city's: their streams are computed, written,
/// queryable and retained like the city's own.
pub fn run_with(
    settings: &Settings,
    opts: &RunOptions,
    extra: Vec<Arc<dyn Derivation>>,
    bus: &AlertBus,
    stop: &AtomicBool,
    progress: &Arc<Progress>,
) -> anyhow::Result<Summary> {
    let began = Instant::now();
    // The endpoints first: a busy port or a missing password is an error of the command
    // itself, found before anything is written (a run that stopped here and had begun its
    // output would be taken by the next for one killed after its last commit).
    let pg_listener = match opts.pg_listen.clone().or_else(|| settings.server.pg_listen.clone()) {
        Some(addr) => Some(bind(&addr, "psql", &settings.server)?),
        None => None,
    };
    let http_listener = match opts.http_listen.clone().or_else(|| settings.server.http_listen.clone()) {
        Some(addr) => Some(bind(&addr, "HTTP", &settings.server)?),
        None => None,
    };
    let live = !settings.cameras.is_empty();
    let start_ms = if live { drive::wall_ms() } else { settings.start_ms };
    let epoch = if opts.parquet {
        Epoch::next(&opts.out)
            .with_context(|| format!("taking the next run epoch of {}", opts.out.display()))?
    } else {
        Epoch::default()
    };
    // A run that was killed is resumed: its simulated input is replayed from where its lake
    // commits stop (with the ids it had), and every sink skips what it committed.
    let resume = if opts.parquet { Resume::after_kill(&opts.out, live, settings)? } else { None };
    let ids_epoch = resume.as_ref().map_or(epoch, |r| r.ids_epoch);
    let feed_from = resume.as_ref().map_or(start_ms, |r| r.feed_from);
    // The audit log lives with the output it accounts for, across runs.
    let audit = if opts.parquet {
        let log = Arc::new(AuditLog::open(&audit_path(&opts.out))?);
        log.record("config", "config.load", &settings.name, &[("digest", &log.digest(&settings.text))]);
        Some(log)
    } else {
        None
    };
    let index_by_camera = Arc::new(zones_by_camera(&settings.zones));
    let calibrated = live.then(|| crate::live::calibrate(settings));
    let locate: Locate = match &calibrated {
        Some(c) => crate::live::locator(Arc::clone(c)),
        None => {
            let (params, index) = (settings.sim.clone(), Arc::clone(&index_by_camera));
            Arc::new(move |camera, bbox| Some(drive::sim_locate(&params, index.get(&camera), camera, bbox)))
        }
    };
    // Hits a previous run left (candidates awaiting people, decisions made): the book takes
    // them up, so a restart loses no verification.
    let restored;
    let mut hit_rows = Vec::new();
    let settings = if opts.parquet {
        let all =
            |b: &arrow::array::RecordBatch| Some(arrow::array::BooleanArray::from(vec![true; b.num_rows()]));
        let rows = vigil_engine::erase::select(&opts.out.join(vigil_operators::hits::Hits::NAME), &all)
            .with_context(|| format!("reading the hits of {}", opts.out.display()))?;
        let mut s = settings.clone();
        s.hits.restore = vigil_operators::hits::restore(&rows).into();
        if !s.hits.restore.is_empty() {
            tracing::info!("{} hits taken up from the previous runs", s.hits.restore.len());
        }
        s.hits.restore_reads = restore_reads(&opts.out, s.hits.lookback_ms)?.into();
        hit_rows = rows;
        restored = s;
        &restored
    } else {
        settings
    };
    let mut derivations = derive::city(settings, locate);
    derivations.extend(extra);
    let catalog = derive::catalog(&derivations)?;
    let rules = compile_rules(settings, &catalog)?;
    if opts.parquet {
        // Rules' files a killed run left half-written (the streams' own are cleared by their sinks).
        for dir in std::fs::read_dir(opts.out.join("rules")).into_iter().flatten().flatten() {
            if dir.path().is_dir() {
                vigil_engine::parquet_sink::recover(&dir.path())?;
            }
        }
    }
    let errors = {
        let p = Arc::clone(progress);
        ErrorSink::new(move |who, e| {
            p.errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!("{who}: {e}");
        })
    };
    let workers = settings.engine.workers;
    let r = &settings.retention;
    // In memory, nothing is kept longer than on disk.
    let horizon = r.periods.values().copied().min().unwrap_or(r.memory_ms).min(r.memory_ms);
    let retained = Retained::shared(workers, horizon, r.memory_bytes);
    // Streams with a shorter period of their own (plate reads) go sooner.
    for info in catalog.streams() {
        retained.lock().expect("retained").set_horizon(info.name, r.stream_period(info));
    }
    // The hits of the previous runs, for psql and the HTTP queue: the book took them up, and
    // does not make their rows again.
    keep_restored(&mut retained.lock().expect("retained"), vigil_operators::hits::Hits::info(), &hit_rows);
    let runtime = Runtime::start(
        RuntimeConfig::new(workers, derive::inputs())
            .with_retained(Arc::clone(&retained))
            .with_commit(settings.commit),
        feed_from.max(0) as u64,
        graph::main(graph::MainGraph {
            derivations,
            catalog: catalog.clone(),
            out: opts.parquet.then(|| opts.out.clone()),
            partition_ms: settings.partition_ms,
            epoch,
            commit: settings.commit,
            hold_bytes: settings.hold_bytes,
            bus: bus.clone(),
            errors: errors.clone(),
            replayed_until: resume.as_ref().map_or(0, |r| r.from.max(0) as u64),
            ids_epoch,
        })?,
    )?;
    let policy = WatermarkPolicy {
        allowed_lateness_ms: settings.engine.allowed_lateness_ms,
        idle_timeout_ms: settings.engine.idle_timeout_ms,
    };
    vigil_engine::ingest::late_info_matches(LateEvents::info(), &derive::inputs())?;
    let mut ingest = Ingest::new(runtime, policy, feed_from, LateEvents::info());
    let (control_tx, control_rx) = std::sync::mpsc::channel::<Control>();
    let registry = Registry::new(
        control_tx,
        catalog.clone(),
        retained,
        opts.parquet.then(|| opts.out.join("catalog").join("rules.sql")),
        RuleSinks {
            out: opts.parquet.then(|| opts.out.clone()),
            partition_ms: settings.partition_ms,
            epoch,
            bus: Some(bus.clone()),
            errors: errors.clone(),
            commit: settings.commit,
            hold_bytes: settings.hold_bytes,
        },
    )
    .with_limits(settings.server.limits.clone())
    .with_admission(vigil_sql::registry::Admission {
        nominal_rows_per_s: nominal_rows_per_s(settings),
        lateness_ms: settings.engine.allowed_lateness_ms as f64,
        budget: settings.engine.rule_budget.clone(),
    });
    // Auditors read the audit log as a table.
    let registry = Arc::new(match &audit {
        Some(log) => registry.with_audit_path(log.path().to_path_buf()),
        None => registry,
    });
    // However the run ends, the registry lets go of the alert bus (its readers wait for that).
    struct CloseOnDrop(Arc<Registry>);
    impl Drop for CloseOnDrop {
        fn drop(&mut self) {
            self.0.close();
        }
    }
    let _close = CloseOnDrop(Arc::clone(&registry));
    registry.add_config(rules, &settings.source)?;
    match registry.load() {
        Ok(names) if !names.is_empty() => eprintln!("rules restored from the catalog: {}", names.join(", ")),
        Ok(_) => {}
        // A stored rule that no longer compiles must not keep the city from running.
        Err(e) => eprintln!("error: the stored rules were not restored: {e}"),
    }
    // Watchlist entries active from the start go in before any frame.
    let mut watch = watchlist_entries(settings, start_ms)?;
    if opts.parquet {
        watch = control::config_watch(&opts.out, watch)?;
    }
    ingest.push_table::<Zones>(zones::to_batch(&settings.zones), 1)?;
    if opts.parquet {
        write_references(&opts.out, settings, &watch, start_ms, epoch)?;
    }
    let mut control = control::Control::new(control::ControlParts {
        ingest,
        rules: control_rx,
        registry: Arc::clone(&registry),
        watch,
        retention: opts.parquet.then(|| control::Sweeper::new(&opts.out, &catalog, settings, audit.clone())),
        audit: audit.clone(),
        progress: Arc::clone(progress),
        start_ms,
        errors: errors.clone(),
        out: opts.parquet.then(|| opts.out.clone()),
        lookback_ms: settings.hits.lookback_ms,
        commit: settings.commit,
    });
    if opts.parquet {
        // Reference tables as users left them (the watchlist entries analysts added from psql),
        // and the decisions people took that the killed run's `hits` had not committed.
        let tables: Vec<_> = catalog.tables().filter(|s| control::journal::kept(s)).collect();
        let pending = |info: &'static StreamInfo, rows| {
            if info.name == vigil_operators::hits::HitDecisions::NAME {
                Ok(vigil_operators::hits::undone(&rows, &hit_rows)?)
            } else {
                Ok(rows)
            }
        };
        let taken = control.restore_tables(&tables, feed_from, pending)?;
        if !taken.is_empty() {
            let what: Vec<String> = taken.iter().map(|(t, n)| format!("{t} {n}")).collect();
            eprintln!("rows added from psql in earlier runs taken up: {}", what.join(", "));
        }
        RunRecord { epoch: epoch.value(), ids_epoch: ids_epoch.value(), finished: false }.write(&opts.out)?;
    }
    // Users come in once the state they see is restored.
    if let Some(listener) = pg_listener {
        start_pg_server(listener, settings, Arc::clone(&registry), audit.clone())?;
    }
    if let Some(listener) = http_listener {
        let bound = crate::http::start(
            listener,
            crate::http::Parts {
                accounts: accounts(&settings.server)?,
                failures: Arc::clone(&settings.server.edge.failures),
                progress: Arc::clone(progress),
                registry: Arc::clone(&registry),
                zones: settings.zones.clone(),
                lines: settings.lines.clone(),
                audit: audit.clone(),
                confirmations: settings.hits.confirmations,
                // Each slot may come with a refusal in flight (`http::limit` tells as many 503s at
                // once as it has slots): two descriptors.
                max_connections: endpoint_connections(
                    settings.server.http_max_connections,
                    2,
                    "http_max_connections",
                ),
            },
        )?;
        eprintln!("http endpoint listening on {bound}");
    }
    let driven = match calibrated {
        Some(c) => drive::live(settings, opts, c, epoch, &mut control, bus, stop)?,
        None => {
            let replay = resume.as_ref().map(|r| (r.feed_from, r.from));
            drive::simulated(settings, opts, &index_by_camera, ids_epoch, replay, &mut control, stop)?
        }
    };
    let (ingest, deleted) = control.finish()?;
    let stats = ingest.finish()?;
    if opts.parquet {
        // Every sink has committed all it received: the next start is a new run.
        RunRecord { epoch: epoch.value(), ids_epoch: ids_epoch.value(), finished: true }.write(&opts.out)?;
    }
    registry.close();
    if let Some(t) = driven.truth {
        t.finish().context("writing ground truth")?;
    }
    let mut files = BTreeMap::new();
    for info in catalog.streams() {
        files.insert(info.name, list_files(&opts.out.join(info.name))?.len());
    }
    Ok(Summary {
        event_s: (progress.sim_ms.load(Ordering::Relaxed) as f64 + driven.tick_ms) / 1000.0,
        live,
        ingest: stats,
        alerts: bus.counts(),
        files,
        out: opts.out.clone(),
        epoch,
        wall: began.elapsed(),
        behind_max: driven.behind_max,
        drain: driven.fed.elapsed(),
        interrupted: driven.interrupted,
        errors: progress.errors.load(Ordering::Relaxed),
        deleted,
    })
}

/// `<out>/run.json`: the last run's epoch, the epoch its simulated event ids carry, and whether
/// it ended cleanly. A run that did not is resumed by the next ([`Resume`]).
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
struct RunRecord {
    epoch: u16,
    ids_epoch: u16,
    finished: bool,
}

impl RunRecord {
    const FILE: &str = "run.json";

    fn write(&self, out: &std::path::Path) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec(self).expect("a run record serializes");
        Ok(vigil_engine::lake::write_atomic(&out.join(Self::FILE), &bytes)?)
    }

    fn read(out: &std::path::Path) -> anyhow::Result<Option<Self>> {
        let path = out.join(Self::FILE);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(serde_json::from_slice(&b).with_context(|| {
                format!(
                    "{}: not a run record; move it away (the next run then starts afresh)",
                    path.display()
                )
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
}

/// How a run resumes one that was killed.
#[derive(Clone, Copy, Debug)]
struct Resume {
    /// Everything before this event time is committed by every sink (the smallest point of the
    /// killed run's commit records).
    from: Millis,
    /// Where the input is fed from: the run's start, so that windows, tracks and the watermark
    /// are as they were at `from` (what sinks receive before `from` they skip).
    feed_from: Millis,
    /// The epoch of the simulated event ids: the first run's, so a replayed event keeps its id.
    ids_epoch: Epoch,
}

impl Resume {
    /// The resume of the run recorded in `out`, when it was killed; live cameras cannot be
    /// replayed (their sinks still skip what was committed, so nothing is written twice).
    fn after_kill(out: &std::path::Path, live: bool, settings: &Settings) -> anyhow::Result<Option<Self>> {
        let Some(last) = RunRecord::read(out)? else { return Ok(None) };
        if last.finished {
            return Ok(None);
        }
        let dirs = vigil_engine::lake::stream_dirs(out)?;
        let point = vigil_engine::lake::resume_point(dirs.clone(), last.epoch)?;
        if live {
            if let Some(from) = point {
                eprintln!(
                    "the last run (epoch {}) was killed; its lake is committed up to {}, and live cameras go on from now",
                    last.epoch,
                    vigil_engine::time::rfc3339(from as Millis)
                );
            }
            return Ok(None);
        }
        // Writers that had committed everything before the kill skip the whole replay.
        let held = vigil_engine::lake::hold_finished(dirs, last.epoch)?;
        let from = match point {
            Some(from) => from as Millis,
            // Killed in the moment after every writer had committed all and before `run.json`
            // said so: the replay rebuilds the state and writes nothing.
            None if held > 0 => Millis::MAX,
            // Killed before any commit: nothing to resume.
            None => return Ok(None),
        };
        // The simulated input is replayed from the run's start, as fast as it goes: every
        // window, track and visit is then rebuilt exactly as it was (a track keeps its id, so a
        // visit spanning the kill is one visit). A shorter replay (a minute before the cut) was
        // tried and lost the identity of tracks born before it.
        let feed_from = settings.start_ms;
        let point =
            if from == Millis::MAX { "the end".to_owned() } else { vigil_engine::time::rfc3339(from) };
        eprintln!(
            "the last run (epoch {}) was killed: resuming from {point} (its last commit), replaying the simulation from {}",
            last.epoch,
            vigil_engine::time::rfc3339(feed_from)
        );
        Ok(Some(Self { from, feed_from, ids_epoch: Epoch::new(last.ids_epoch)? }))
    }
}

/// The plate reads previous runs kept in `out` that are within `lookback_ms` of the newest: the
/// watchlist join starts with them, so that an entry added after a restart finds them
/// (retroactive search). Erased reads are not among them: erasure rewrites the files.
fn restore_reads(
    out: &std::path::Path,
    lookback_ms: Millis,
) -> anyhow::Result<Vec<arrow::array::RecordBatch>> {
    use vigil_operators::plate::{PlateReadCols, PlateReads};
    let dir = out.join(PlateReads::NAME);
    let all =
        |b: &arrow::array::RecordBatch| Some(arrow::array::BooleanArray::from(vec![true; b.num_rows()]));
    let batches =
        vigil_engine::erase::select(&dir, &all).with_context(|| format!("reading {}", dir.display()))?;
    let times = |b: &arrow::array::RecordBatch| -> anyhow::Result<Vec<Millis>> {
        Ok(PlateReadCols::new(b)?.rows().map(|r| r.event_time).collect())
    };
    let mut newest = Millis::MIN;
    for b in &batches {
        newest = times(b)?.into_iter().fold(newest, Millis::max);
    }
    let mut kept = Vec::new();
    for b in &batches {
        let keep: arrow::array::BooleanArray =
            times(b)?.into_iter().map(|t| Some(t.saturating_add(lookback_ms) > newest)).collect();
        let b = arrow::compute::filter_record_batch(b, &keep)?;
        if b.num_rows() > 0 {
            kept.push(b);
        }
    }
    let n: usize = kept.iter().map(|b| b.num_rows()).sum();
    if n > 0 {
        tracing::info!("{n} plate reads of the previous runs taken up by the watchlist join");
    }
    Ok(kept)
}

/// The configuration's watchlist entries (active from the start plus their offset) and the
/// good rows of its watchlist CSV, loaded at `start_ms`; each refused row is reported with its
/// line, and so is an entry that has expired already.
fn watchlist_entries(settings: &Settings, start_ms: Millis) -> anyhow::Result<Vec<WatchEntry>> {
    let mut entries: Vec<WatchEntry> = settings
        .watchlist
        .iter()
        .map(|(t, e)| WatchEntry { valid_from: start_ms + t, ..e.clone() })
        .collect();
    if let Some(path) = &settings.watchlist_csv {
        let text = vigil_engine::text_file::read(path, "watchlist CSV", 256 << 20)
            .with_context(|| format!("reading the watchlist {}", path.display()))?;
        let name = path.display().to_string();
        let by = format!("csv:{}", path.file_name().and_then(|n| n.to_str()).unwrap_or("watchlist"));
        let (loaded, refused) = watchlist::load_csv(&text, &name, start_ms, &by)?;
        for r in &refused {
            eprintln!("watchlist: refused {r}");
        }
        eprintln!("watchlist: {} entries loaded from {name}, {} rows refused", loaded.len(), refused.len());
        entries.extend(loaded);
    }
    entries.retain(|e| {
        let live = e.expires_at > e.valid_from && e.expires_at > start_ms;
        if !live {
            eprintln!(
                "watchlist: the entry for {} expired before the run started; it is not loaded",
                e.plate
            );
        }
        live
    });
    entries.sort_by_key(|e| e.valid_from);
    Ok(entries)
}

/// Writes the reference tables as they will be at each time
/// (`reference/<table>-e<epoch>.parquet`, with a `valid_from` column), so that `vigil replay`
/// sees what the live rules saw; each file's schema carries the run's start
/// (`replay::RUN_START`), where the run's rows end in a replay.
fn write_references(
    out: &std::path::Path,
    settings: &Settings,
    watch: &[WatchEntry],
    start: Millis,
    epoch: Epoch,
) -> anyhow::Result<()> {
    use arrow::array::{ArrayRef, RecordBatch};
    use arrow::datatypes::{Field, Schema};
    let dir = out.join("reference");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let with_valid_from = |batch: RecordBatch, times: Vec<Millis>| -> anyhow::Result<RecordBatch> {
        let mut fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(vigil_engine::stream::field::<vigil_engine::stream::Timestamp>("valid_from"));
        let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
        cols.push(Arc::new(arrow::array::TimestampMillisecondArray::from(times).with_timezone("UTC")));
        Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
    };
    // The watchlist's rows carry their own valid_from and expires_at.
    let tables = [
        (Zones::NAME, with_valid_from(zones::to_batch(&settings.zones), vec![start; settings.zones.len()])?),
        (Watchlist::NAME, watchlist::to_batch(watch)),
    ];
    for (table, batch) in tables {
        // The run's start goes with its rows: replay ends them when the next run starts.
        let metadata = [(crate::replay::RUN_START.to_owned(), start.to_string())].into();
        let schema = Arc::new(batch.schema().as_ref().clone().with_metadata(metadata));
        let batch = batch.with_schema(schema)?;
        let path = dir.join(format!("{table}-e{epoch}.parquet"));
        let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None)?;
        w.write(&batch)?;
        w.close()?;
    }
    Ok(())
}

/// Keeps rows a previous run wrote (read back from the lake) in memory for queries, each
/// batch at its earliest row's time: it leaves memory when that row's period ends, up to a
/// partition early, as on disk.
fn keep_restored(retained: &mut Retained, info: &'static StreamInfo, batches: &[arrow::array::RecordBatch]) {
    for rows in batches {
        let first = rows
            .column_by_name(vigil_engine::stream::EVENT_TIME)
            .and_then(|c| c.as_any().downcast_ref::<arrow::array::TimestampMillisecondArray>())
            .and_then(|t| t.values().iter().copied().min());
        let Some(first) = first else { continue };
        retained.keep_for_queries(info, 0, first.max(0) as Time, &Batch::new(rows.clone()));
    }
}

/// The rows per second a stream is assumed to carry before any is retained (rules restored at
/// start): every camera's frames times the objects a view holds.
fn nominal_rows_per_s(settings: &Settings) -> f64 {
    if settings.cameras.is_empty() {
        let s = &settings.sim;
        s.cameras as f64 * s.fps * (s.pedestrians as f64 + 1.0)
    } else {
        settings.cameras.iter().map(|c| c.fps * 15.0).sum()
    }
}

/// File descriptors the psql and HTTP endpoints leave to the sinks, cameras and models.
const FD_RESERVE: u64 = 192;

/// `wanted` connections of an endpoint whose connections hold `per_connection` descriptors
/// each, lowered to fit in half of what [`FD_RESERVE`] leaves (the other half is the other
/// endpoint's: psql and HTTP may both be stormed at once). `setting` names it in the warning.
fn endpoint_connections(wanted: usize, per_connection: u64, setting: &str) -> usize {
    let fds = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    let most = (fds.saturating_sub(FD_RESERVE) / 2 / per_connection).max(1) as usize;
    if wanted > most {
        tracing::warn!(
            "server.{setting} = {wanted} lowered to {most}: the process may open {fds} files (ulimit -n), {FD_RESERVE} are kept for the sinks"
        );
    }
    wanted.min(most)
}

/// The audit log of the output directory `out`.
pub fn audit_path(out: &std::path::Path) -> PathBuf {
    out.join("audit").join("audit.log")
}

/// The password of `user`, from the environment variable `var` the configuration names.
fn password_of(user: &str, var: &str) -> anyhow::Result<String> {
    let password = std::env::var(var).map_err(|_| {
        anyhow::anyhow!(
            "the psql account {user} needs a password: set the environment variable {var} (there is no anonymous access)"
        )
    })?;
    if password.len() < 8 {
        bail!("{var} (the password of {user}) is shorter than 8 characters; choose a longer password");
    }
    Ok(password)
}

/// The accounts of a configuration: its `[[users]]` with their roles, or, when it has none, the
/// one admin `server.pg_user`; with the name of the variable holding each password.
fn account_names(server: &crate::settings::ServerSettings) -> Vec<(String, vigil_sql::roles::Role, String)> {
    if server.users.is_empty() {
        vec![(server.pg_user.clone(), vigil_sql::roles::Role::Admin, server.pg_password_env.clone())]
    } else {
        server.users.clone()
    }
}

/// The accounts with their passwords (psql and HTTP log in against them).
fn accounts(server: &crate::settings::ServerSettings) -> anyhow::Result<Vec<vigil_sql::server::Account>> {
    account_names(server)
        .into_iter()
        .map(|(user, role, var)| {
            let password = password_of(&user, &var)?;
            Ok(vigil_sql::server::Account { user, password, role })
        })
        .collect()
}

/// Logs a person in on the command line, against the accounts psql uses: `user` (or the only
/// account, when there is one) with the password in `VIGIL_PASSWORD`. Refused unless `allowed`
/// admits the account's role (`who_may` says which do); `what` names the command for errors.
pub fn cli_login(
    settings: &Settings,
    user: Option<&str>,
    allowed: fn(vigil_sql::roles::Role) -> bool,
    who_may: &str,
    what: &str,
) -> anyhow::Result<(String, vigil_sql::roles::Role)> {
    let accounts = account_names(&settings.server);
    let (name, role, var) = match user {
        Some(user) => accounts.iter().find(|(n, ..)| n == user).ok_or_else(|| {
            anyhow::anyhow!(
                "{what}: no account {user:?} in the configuration; fix: give --user one of its [[users]]"
            )
        })?,
        None if accounts.len() == 1 => &accounts[0],
        None => bail!(
            "{what}: say who you are; fix: give --user NAME (an account of the configuration's [[users]])"
        ),
    };
    // The password given, and the account's as the server reads it from the configuration's
    // variable: both are needed, and both are asked for at once when neither is set.
    let (given, password) = match (std::env::var("VIGIL_PASSWORD"), password_of(name, var)) {
        (Ok(given), Ok(password)) => (given, password),
        (Err(_), Err(_)) if std::env::var_os(var).is_none() => bail!(
            "{what}: no password; fix: set VIGIL_PASSWORD to {name}'s password (as psql asks for it), and {var} \
             to the same password as the server has it (the configuration reads {name}'s password from {var})"
        ),
        (Err(_), _) => {
            bail!("{what}: no password; fix: set VIGIL_PASSWORD to {name}'s password (as psql asks for it)")
        }
        (_, Err(e)) => return Err(e.context(format!("{what}: checking {name}'s password"))),
    };
    // Compared without an early exit, so that the time taken says nothing of how much of the
    // password was right (three lines; not worth a dependency).
    let differs = given.len() != password.len()
        || given.bytes().zip(password.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) != 0;
    if differs {
        bail!("{what}: wrong password for {name}");
    }
    if !allowed(*role) {
        bail!("{what}: {name}'s role is {role}; only {who_may} may; fix: ask one of them");
    }
    Ok((name.clone(), *role))
}

/// Binds endpoint `what` (`psql`, `HTTP`) to `addr`, once its accounts are known to be good.
fn bind(
    addr: &str,
    what: &str,
    server: &crate::settings::ServerSettings,
) -> anyhow::Result<std::net::TcpListener> {
    accounts(server)?;
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("binding the {what} endpoint to {addr}"))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Starts the psql endpoint on its own thread (a single-threaded tokio runtime), on a listener
/// bound at the run's start ([`bind`]).
fn start_pg_server(
    listener: std::net::TcpListener,
    settings: &Settings,
    registry: Arc<Registry>,
    audit: Option<Arc<AuditLog>>,
) -> anyhow::Result<()> {
    let server = &settings.server;
    let accounts = accounts(server)?;
    let bound = listener.local_addr()?;
    let mut edge = server.edge.clone();
    edge.audit = audit;
    // Each connection holds two descriptors (its socket and the watch on it); the sinks keep
    // theirs (FD_RESERVE) whatever the network does, or their writes would fail with "too many
    // open files".
    edge.max_connections = endpoint_connections(edge.max_connections, 2, "max_connections");
    let who: Vec<String> = accounts.iter().map(|a| format!("{} ({})", a.user, a.role)).collect();
    eprintln!("psql endpoint listening on {bound} (accounts: {})", who.join(", "));
    let credentials = vigil_sql::server::Credentials { accounts };
    std::thread::Builder::new().name("psql".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => return tracing::error!("psql endpoint: {e}"),
        };
        rt.block_on(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => vigil_sql::server::serve(l, registry, credentials, edge).await,
                Err(e) => tracing::error!("psql endpoint: {e}"),
            }
        });
    })?;
    Ok(())
}

/// Removes what earlier runs wrote in `out` (the demo starts fresh; rules created from psql and
/// the epoch counter stay).
pub fn remove_previous_output(out: &std::path::Path, streams: &Catalog) -> anyhow::Result<()> {
    let dirs = streams.streams().map(|s| s.name).chain(["ground_truth", "rules", "reference", "snapshots"]);
    for d in dirs {
        let dir = out.join(d);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("removing previous output {}", dir.display()))?;
        }
    }
    Ok(())
}

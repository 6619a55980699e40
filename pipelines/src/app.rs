//! Wiring: the simulated city → ingest → the dataflow (density, watchlist, SQL rules) → sinks.
//!
//! [`run`] is what `vigil demo`, `vigil run` and `vigil bench` share. It compiles the rules and
//! zones from the configuration, starts the runtime, and drives the simulator tick by tick
//! (one tick per frame interval): frames are produced at capture time, delivered after their
//! network delay, handed to [`Ingest`], and the watermark advances. Paced runs sleep to keep
//! simulated time on the wall clock; fast runs do not, and produce the same output.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use arrow::array::{
    ArrayRef, Float32Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder, UInt32Builder,
    UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::{Concat, Probe};
use vigil_engine::alerts::{AlertBus, alerts_from_batch};
use vigil_engine::ingest::{Ingest, IngestStats};
use vigil_engine::parquet_sink::{ParquetSinkConfig, WriteParquet, list_files};
use vigil_engine::runtime::BatchStream;
use vigil_engine::runtime::{Runtime, RuntimeConfig};
use vigil_engine::schema::{Detection, DetectionsBuilder, EventId, PlateReadsBuilder, StreamKind};
use vigil_engine::time::{Millis, WatermarkPolicy};
use vigil_operators::density::{DensityConfig, ZoneDensity};
use vigil_operators::flows::{FlowConfig, GateLine, TrackFlows};
use vigil_operators::tracker::TrackerConfig;
use vigil_operators::tracks::{Locate, TrackObjects};
use vigil_operators::watchlist::{self, WatchEntry, WatchlistJoin};
use vigil_operators::zones::{Zone, ZoneIndex};
use vigil_sql::operator::RunRules;
use vigil_sql::registry::{Control, Registry};
use vigil_sql::rule::Rule;

use crate::config::Config;
use crate::sim::{CameraSim, SimFrame, SimParams};

/// Streams written to Parquet.
pub const WRITTEN: [StreamKind; 10] = [
    StreamKind::Detections,
    StreamKind::Tracks,
    StreamKind::PlateReads,
    StreamKind::ZoneDensity,
    StreamKind::Alerts,
    StreamKind::LateEvents,
    StreamKind::CameraHealth,
    StreamKind::DensityGrid,
    StreamKind::LineCrossings,
    StreamKind::ZoneVisits,
];

/// Streams the dataflow derives from camera events.
const DERIVED: [StreamKind; 5] = [
    StreamKind::Tracks,
    StreamKind::ZoneDensity,
    StreamKind::DensityGrid,
    StreamKind::LineCrossings,
    StreamKind::ZoneVisits,
];

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Simulated seconds to run.
    pub duration_s: f64,
    /// Run as fast as possible instead of on the wall clock.
    pub fast: bool,
    /// Output directory (overrides the config's).
    pub out: PathBuf,
    /// Write Parquet at all (the bench may turn it off).
    pub parquet: bool,
    /// Write the simulator's ground truth.
    pub ground_truth: bool,
    /// Serve psql on this address (overrides the config's `server.pg_listen`).
    pub pg_listen: Option<String>,
}

/// Live counters, readable while the run goes on (for the status line).
#[derive(Debug, Default)]
pub struct Progress {
    /// On-time rows ingested.
    pub rows: AtomicU64,
    /// Late rows.
    pub late: AtomicU64,
    /// Alerts emitted.
    pub alerts: AtomicU64,
    /// Simulated milliseconds done.
    pub sim_ms: AtomicU64,
    /// Errors reported by sinks and rules.
    pub errors: AtomicU64,
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
    /// Simulated seconds run.
    pub simulated_s: f64,
    /// Wall-clock time.
    pub wall: Duration,
    /// Paced runs: the most the feed fell behind its schedule (zero when it kept up).
    pub behind_max: Duration,
    /// Wall time from the last input to the end (the watermark's lateness drained, files closed).
    pub drain: Duration,
    /// True when stopped early by a signal.
    pub interrupted: bool,
    /// Sink or rule errors.
    pub errors: u64,
}

/// Compiles the configured rules.
pub fn compile_rules(config: &Config) -> anyhow::Result<Vec<Rule>> {
    let mut rules = Vec::new();
    for r in &config.rules {
        match (&r.sql, &r.path, &r.name) {
            (Some(sql), _, Some(name)) => match vigil_sql::rule::compile(name, sql.get_ref(), &config.source)
            {
                Ok(r) => rules.extend(r),
                // Place the error in the configuration file, not in the SQL string.
                Err(vigil_sql::SqlError::User { position: Some(p), message, fix }) => {
                    let (line, column) = config.inline_position(sql.span().start, p.line, p.column);
                    bail!("{}:{line}:{column}: rule {name}: {message}; fix: {fix}", config.source)
                }
                Err(e) => bail!("{}: rule {name}: {e}", config.source),
            },
            (_, Some(path), _) => {
                let p = config.base_dir.join(path.get_ref());
                rules.extend(vigil_sql::rule::compile_file(&p)?);
            }
            _ => bail!("{}: a rule needs sql and name, or path", config.source),
        }
    }
    Ok(rules)
}

/// Writes the reference tables as they will be at each time (`reference/<table>.parquet`, with
/// a `valid_from` column), so that `vigil replay` sees what the live rules saw.
fn write_references(
    out: &std::path::Path,
    zones: &[Zone],
    watch: &[(Millis, WatchEntry)],
    start: Millis,
) -> anyhow::Result<()> {
    let dir = out.join("reference");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let with_valid_from = |batch: RecordBatch, times: Vec<Millis>| -> anyhow::Result<RecordBatch> {
        let mut fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("valid_from", vigil_engine::schema::event_time_type(), false));
        let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
        cols.push(Arc::new(arrow::array::TimestampMillisecondArray::from(times).with_timezone("UTC")));
        Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)
    };
    let entries: Vec<WatchEntry> = watch.iter().map(|(_, e)| e.clone()).collect();
    let tables = [
        (
            vigil_operators::zones::TABLE,
            with_valid_from(vigil_operators::zones::to_batch(zones), vec![start; zones.len()])?,
        ),
        (
            watchlist::TABLE,
            with_valid_from(watchlist::to_batch(&entries), watch.iter().map(|(t, _)| *t).collect())?,
        ),
    ];
    for (table, batch) in tables {
        let path = dir.join(format!("{table}.parquet"));
        let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None)?;
        w.write(&batch)?;
        w.close()?;
    }
    Ok(())
}

/// Starts the psql endpoint on its own thread (a single-threaded tokio runtime). Binding
/// happens here, so a busy port or a missing password is an error of the command itself.
fn start_pg_server(
    addr: &str,
    server: &crate::config::Server,
    registry: Arc<Registry>,
) -> anyhow::Result<()> {
    let password = std::env::var(&server.pg_password_env).map_err(|_| {
        anyhow::anyhow!(
            "the psql endpoint needs a password: set the environment variable {} (there is no anonymous access)",
            server.pg_password_env
        )
    })?;
    if password.len() < 8 {
        bail!("{} is shorter than 8 characters; choose a longer password", server.pg_password_env);
    }
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("binding the psql endpoint to {addr}"))?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    eprintln!(
        "psql endpoint listening on {bound} (user {}, password from ${})",
        server.pg_user, server.pg_password_env
    );
    let credentials = vigil_sql::server::Credentials { user: server.pg_user.clone(), password };
    std::thread::Builder::new().name("psql".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => return tracing::error!("psql endpoint: {e}"),
        };
        rt.block_on(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => vigil_sql::server::serve(l, registry, credentials).await,
                Err(e) => tracing::error!("psql endpoint: {e}"),
            }
        });
    })?;
    Ok(())
}

/// The zones as operators see them.
pub fn zones(config: &Config) -> Vec<Zone> {
    let t = &config.thresholds;
    config
        .zones
        .iter()
        .enumerate()
        .map(|(i, z)| {
            let alert_density = z.alert_density.as_ref().map_or(*t.density_alert.get_ref(), |a| *a.get_ref());
            let clear_density = z
                .clear_density
                .as_ref()
                .or(t.density_clear.as_ref())
                .map_or(alert_density * 0.8, |c| *c.get_ref());
            Zone {
                id: i as u32 + 1,
                name: z.name.get_ref().clone(),
                cameras: z.camera_ids(),
                polygon: z.polygon.get_ref().clone(),
                alert_density,
                clear_density,
            }
        })
        .collect()
}

/// The gate lines as operators see them.
pub fn lines(config: &Config) -> Vec<GateLine> {
    config
        .lines
        .iter()
        .enumerate()
        .map(|(i, l)| GateLine {
            id: i as u32 + 1,
            name: l.name.get_ref().clone(),
            camera: *l.camera.get_ref() as u32,
            from: *l.from.get_ref(),
            to: *l.to.get_ref(),
            in_side: *l.in_side.get_ref(),
        })
        .collect()
}

/// The zone index of each camera (a zone seen by several cameras is in each one's index).
pub fn zones_by_camera(zones: &[Zone]) -> BTreeMap<u32, ZoneIndex> {
    let mut m: BTreeMap<u32, Vec<Zone>> = BTreeMap::new();
    for z in zones {
        for &c in &z.cameras {
            m.entry(c).or_default().push(z.clone());
        }
    }
    m.into_iter().map(|(c, zs)| (c, ZoneIndex::new(zs))).collect()
}

/// The streams derived from camera events inside the dataflow (tracks, densities, flows), with
/// their settings: attached to the main dataflow, and to a runtime rule's dataflow when the rule
/// reads them.
#[derive(Clone)]
pub struct Derived {
    tracker: TrackerConfig,
    locate: Locate,
    density: DensityConfig,
    flows: FlowConfig,
}

impl Derived {
    /// The derived streams of `config`; `locate` maps a camera's boxes to the ground.
    pub fn new(config: &Config, zones: &[Zone], locate: Locate) -> Self {
        let e = &config.engine;
        let density = DensityConfig {
            window_ms: e.density_window_s.get_ref() * 1000,
            step_ms: e.density_step_s.get_ref() * 1000,
            sample_ms: *e.density_sample_ms.get_ref(),
            fusion_radius_m: *e.fusion_radius_m.get_ref(),
            hold_ms: config.thresholds.density_hold_s.get_ref() * 1000,
            ..DensityConfig::new(zones.to_vec())
        };
        Self {
            tracker: TrackerConfig::default(),
            locate,
            density,
            flows: FlowConfig::new(lines(config), zones.to_vec()),
        }
    }

    /// `input` with the derived streams among `streams` added.
    pub fn attach<'s>(&self, input: BatchStream<'s>, streams: &[StreamKind]) -> BatchStream<'s> {
        use StreamKind::*;
        let wants = |k: &[StreamKind]| streams.iter().any(|s| k.contains(s));
        let mut all = input.clone();
        if wants(&[Tracks, LineCrossings, ZoneVisits]) {
            let tracks = input.clone().track_objects(self.tracker, Arc::clone(&self.locate));
            if wants(&[LineCrossings, ZoneVisits]) {
                all = all.concat(tracks.clone().track_flows(self.flows.clone()));
            }
            all = all.concat(tracks);
        }
        if wants(&[ZoneDensity, DensityGrid]) {
            all = all.concat(input.zone_density(self.density.clone()));
        }
        all
    }
}

/// Runs the configured city; `stop` ends it early (Ctrl-C), `bus` receives every alert.
pub fn run(
    config: &Config,
    opts: &RunOptions,
    bus: &AlertBus,
    stop: &AtomicBool,
    progress: &Arc<Progress>,
) -> anyhow::Result<Summary> {
    let began = Instant::now();
    let rules = Arc::new(compile_rules(config)?);
    let zones = zones(config);
    let params = SimParams::from_config(config);
    // Live cameras run on the wall clock; the simulated city on its own.
    let live = !config.cameras.is_empty();
    let start_ms = if live { wall_ms() } else { params.start_ms };
    let workers = *config.engine.workers.get_ref() as usize;
    let sink = ParquetSinkConfig::new(&opts.out, *config.sinks.partition_s.get_ref() * 1000);
    if opts.parquet {
        sink.prepare(&WRITTEN).with_context(|| format!("preparing {}", opts.out.display()))?;
    }
    let alert_counts: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let index_by_camera = Arc::new(zones_by_camera(&zones));
    let calibrated = if live { Some(crate::live::calibrate(config, &zones)?) } else { None };
    let locate: Locate = match &calibrated {
        Some(c) => crate::live::locator(Arc::clone(c)),
        None => {
            let (params, index) = (params.clone(), Arc::clone(&index_by_camera));
            Arc::new(move |camera, bbox| Some(sim_locate(&params, index.get(&camera), camera, bbox)))
        }
    };
    let derived = Derived::new(config, &zones, locate);
    // Derived batches are kept with the retained events, so psql can SELECT them; the store
    // belongs to ingest, which starts after the dataflow.
    let keep: Arc<std::sync::OnceLock<Arc<Mutex<vigil_engine::ingest::Retained>>>> = Arc::default();

    let runtime = {
        let keep = Arc::clone(&keep);
        let (derived, rules, sink, bus, progress, counts) = (
            derived.clone(),
            Arc::clone(&rules),
            sink.clone(),
            bus.clone(),
            Arc::clone(progress),
            Arc::clone(&alert_counts),
        );
        let parquet = opts.parquet;
        Runtime::start(
            RuntimeConfig::with_workers(workers),
            start_ms.max(0) as u64,
            move |_scope, input, index| {
                let probe = ProbeHandle::new();
                // Derived streams join the input, so that SQL rules and Parquet see them like any
                // stream.
                let input = derived.attach(input, &StreamKind::ALL);
                let keep = Arc::clone(&keep);
                input.clone().sink(Pipeline, "KeepDerived", move |(input, _frontier)| {
                    input.for_each(|_cap, data| {
                        let Some(store) = keep.get() else { return };
                        let mut store = store.lock().expect("retained batches");
                        for b in data.iter().filter(|b| b.stream().is_some_and(|s| DERIVED.contains(&s))) {
                            // Kept by their earliest event time.
                            let t = vigil_engine::schema::event_times(&b.data)
                                .ok()
                                .and_then(|t| t.iter().min().copied())
                                .unwrap_or(0);
                            store.keep_derived(t.max(0) as u64, b.clone());
                        }
                    });
                });
                let hits = input.clone().watchlist_hits();
                let p = Arc::clone(&progress);
                let rule_alerts =
                    input.clone().run_rules(Arc::clone(&rules), move |rule: &str, e: String| {
                        p.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(rule = %rule, "rule failed on a batch: {e}");
                    });
                let all = input.concat(hits).concat(rule_alerts);
                let (bus, progress2, counts) = (bus.clone(), Arc::clone(&progress), Arc::clone(&counts));
                all.clone().sink(Pipeline, "PublishAlerts", move |(input, _frontier)| {
                    input.for_each(|_cap, data| {
                        for b in data.iter().filter(|b| b.stream() == Some(StreamKind::Alerts)) {
                            let Ok(alerts) = alerts_from_batch(&b.data) else { continue };
                            progress2.alerts.fetch_add(alerts.len() as u64, Ordering::Relaxed);
                            let mut counts = counts.lock().expect("alert counts");
                            for a in alerts {
                                *counts.entry(a.kind.clone()).or_default() += 1;
                                bus.publish(a);
                            }
                        }
                    });
                });
                if parquet {
                    for stream in WRITTEN {
                        let p = Arc::clone(&progress);
                        all.clone()
                            .write_parquet(stream, sink.clone(), index, move |e| {
                                p.errors.fetch_add(1, Ordering::Relaxed);
                                tracing::error!("parquet sink: {e}");
                            })
                            .probe_with(&probe);
                    }
                } else {
                    all.probe_with(&probe);
                }
                probe
            },
        )?
    };
    let policy = WatermarkPolicy {
        allowed_lateness_ms: *config.engine.allowed_lateness_ms.get_ref(),
        idle_timeout_ms: *config.engine.idle_timeout_ms.get_ref(),
    };
    let memory_ms = *config.retention.memory_s.get_ref() * 1000;
    let memory_bytes = *config.retention.memory_mb.get_ref() as usize * (1 << 20);
    let mut ingest =
        Ingest::new(runtime, policy, start_ms).with_retention(memory_ms).with_memory_budget(memory_bytes);
    let _ = keep.set(ingest.retained());
    let (control_tx, control_rx) = std::sync::mpsc::channel::<Control>();
    let registry = Arc::new(Registry::new(
        control_tx,
        ingest.retained(),
        Some(opts.out.join("catalog").join("rules.sql")),
        Some(bus.clone()),
    ));
    registry.add_static(&rules, &config.source);
    // However the run ends, the registry lets go of the alert bus (its readers wait for that).
    struct CloseOnDrop(Arc<Registry>);
    impl Drop for CloseOnDrop {
        fn drop(&mut self) {
            self.0.close();
        }
    }
    let _close = CloseOnDrop(Arc::clone(&registry));
    match registry.load() {
        Ok(names) if !names.is_empty() => eprintln!("rules restored from the catalog: {}", names.join(", ")),
        Ok(_) => {}
        // A stored rule that no longer compiles must not keep the city from running.
        Err(e) => eprintln!("error: the stored rules were not restored: {e}"),
    }
    let listen =
        opts.pg_listen.clone().or_else(|| config.server.pg_listen.as_ref().map(|l| l.get_ref().clone()));
    if let Some(addr) = listen {
        start_pg_server(&addr, &config.server, Arc::clone(&registry))?;
    }

    // Watchlist entries active from the start go in before any frame.
    let mut pending_watch: Vec<(Millis, WatchEntry)> = config
        .watchlist
        .iter()
        .map(|w| {
            let plate = vigil_operators::plate::normalize(w.plate.get_ref()).expect("validated");
            (
                start_ms + (w.active_from_s * 1000.0) as i64,
                WatchEntry { plate, legal_basis: w.legal_basis.get_ref().clone() },
            )
        })
        .collect();
    pending_watch.sort_by_key(|(t, _)| *t);
    ingest.push_reference(vigil_operators::zones::TABLE, vigil_operators::zones::to_batch(&zones), 1)?;
    if opts.parquet {
        write_references(&opts.out, &zones, &pending_watch, start_ms)?;
    }
    if let Some(calibrated) = calibrated {
        let watermark = drive_live(
            config,
            opts,
            calibrated,
            &mut ingest,
            &control_rx,
            &derived,
            pending_watch,
            bus,
            stop,
            progress,
            start_ms,
        )?;
        return finish_run(
            config,
            opts,
            ingest,
            watermark,
            None,
            &alert_counts,
            progress,
            began,
            stop.load(Ordering::Relaxed),
            1000.0,
            (Duration::ZERO, Instant::now()),
        );
    }

    let mut cams: Vec<CameraSim> = (0..params.cameras).map(|c| CameraSim::new(&params, c)).collect();
    // Frames on their way to ingest, in delivery order (ties broken by camera and frame, so the
    // order never depends on anything but the simulation).
    let mut in_flight: BTreeMap<(Millis, u32, u64), SimFrame> = BTreeMap::new();
    let mut truth = if opts.ground_truth { Some(GroundTruth::create(&opts.out)?) } else { None };
    let total_frames = (opts.duration_s * params.fps).round() as u64;
    let mut interrupted = false;
    let mut behind_max = Duration::ZERO;
    let wall0 = Instant::now();

    for frame in 0..total_frames {
        if stop.load(Ordering::Relaxed) {
            interrupted = true;
            break;
        }
        let now = params.frame_ms(frame);
        push_due_watch(&mut ingest, &mut pending_watch, now)?;
        for cam in cams.iter_mut() {
            let f = cam.step(&params);
            if let Some(t) = truth.as_mut() {
                t.record(&f)?;
            }
            in_flight.insert((f.deliver_ms, f.camera, f.frame), f);
        }
        while let Some(entry) = in_flight.first_entry()
            && entry.key().0 <= now
        {
            let f = entry.remove();
            deliver_frame(&mut ingest, &params, &f, now, index_by_camera.get(&f.camera))?;
        }
        tick(&mut ingest, &control_rx, &derived, progress, now, params.start_ms)?;
        if !opts.fast {
            let due = Duration::from_secs_f64((frame + 1) as f64 / params.fps);
            match due.checked_sub(wall0.elapsed()) {
                Some(wait) => std::thread::sleep(wait),
                None => behind_max = behind_max.max(wall0.elapsed() - due),
            }
        }
    }
    let fed = Instant::now();
    // Frames still in flight arrive; then the inputs close and every window and file closes.
    let end = params.frame_ms(total_frames);
    while let Some((_, f)) = in_flight.pop_first() {
        deliver_frame(&mut ingest, &params, &f, end, index_by_camera.get(&f.camera))?;
    }
    let watermark = ingest.watermark();
    finish_run(
        config,
        opts,
        ingest,
        watermark,
        truth,
        &alert_counts,
        progress,
        began,
        interrupted,
        1000.0 / params.fps,
        (behind_max, fed),
    )
}

/// Adds the watchlist entries due by `now`.
fn push_due_watch(
    ingest: &mut Ingest,
    pending: &mut Vec<(Millis, WatchEntry)>,
    now: Millis,
) -> anyhow::Result<()> {
    let due = pending.partition_point(|(t, _)| *t <= now);
    for (_, entry) in pending.drain(..due) {
        ingest.push_reference(watchlist::TABLE, watchlist::to_batch(&[entry]), 1)?;
    }
    Ok(())
}

/// The end of every tick: rules added or dropped from psql take effect, the watermark
/// advances, and the status line's counters are updated.
fn tick(
    ingest: &mut Ingest,
    control_rx: &std::sync::mpsc::Receiver<Control>,
    derived: &Derived,
    progress: &Progress,
    now: Millis,
    start_ms: Millis,
) -> anyhow::Result<()> {
    while let Ok(c) = control_rx.try_recv() {
        match c {
            Control::Install { id, build, backfill_ms, streams } => {
                // A rule reading derived streams gets them computed in its own dataflow, from
                // the same (backfilled) camera events.
                let derived = derived.clone();
                let wrapped: vigil_engine::runtime::Builder =
                    Arc::new(move |scope, input, index| build(scope, derived.attach(input, &streams), index));
                ingest.install(id, wrapped, backfill_ms)?
            }
            Control::Remove { id } => ingest.remove(id)?,
        }
    }
    ingest.tick(now)?;
    let stats = ingest.stats();
    progress.rows.store(stats.total_rows(), Ordering::Relaxed);
    progress.late.store(stats.total_late(), Ordering::Relaxed);
    progress.sim_ms.store((now - start_ms).max(0) as u64, Ordering::Relaxed);
    Ok(())
}

fn wall_ms() -> Millis {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as Millis)
}

/// Closes the inputs, waits for every window and file to close, enforces retention and sums up.
#[allow(clippy::too_many_arguments)]
fn finish_run(
    config: &Config,
    opts: &RunOptions,
    ingest: Ingest,
    watermark: Millis,
    truth: Option<GroundTruth>,
    alert_counts: &Mutex<BTreeMap<String, u64>>,
    progress: &Progress,
    began: Instant,
    interrupted: bool,
    tick_ms: f64,
    (behind_max, fed): (Duration, Instant),
) -> anyhow::Result<Summary> {
    let stats = ingest.finish()?;
    if let Some(t) = truth {
        t.finish().context("writing ground truth")?;
    }
    if opts.parquet {
        let cutoff = watermark - *config.retention.days.get_ref() * 86_400_000;
        vigil_engine::parquet_sink::enforce_retention(&opts.out, &WRITTEN, cutoff)?;
    }
    let mut files = BTreeMap::new();
    for s in WRITTEN {
        files.insert(s.name(), list_files(&opts.out, s)?.len());
    }
    let alerts = alert_counts.lock().expect("alert counts").clone();
    Ok(Summary {
        simulated_s: (progress.sim_ms.load(Ordering::Relaxed) as f64 + tick_ms) / 1000.0,
        ingest: stats,
        alerts,
        files,
        out: opts.out.clone(),
        wall: began.elapsed(),
        behind_max,
        drain: fed.elapsed(),
        interrupted,
        errors: progress.errors.load(Ordering::Relaxed),
    })
}

/// Runs live cameras on the wall clock for `opts.duration_s` seconds (or until `stop`): every
/// tick (100 ms) detections and health go to ingest, runtime rules are installed, alerts get
/// their snapshots, and the watermark advances. Returns the final watermark.
#[allow(clippy::too_many_arguments)]
fn drive_live(
    config: &Config,
    opts: &RunOptions,
    calibrated: crate::live::Calibrated,
    ingest: &mut Ingest,
    control_rx: &std::sync::mpsc::Receiver<Control>,
    derived: &Derived,
    mut pending_watch: Vec<(Millis, WatchEntry)>,
    bus: &AlertBus,
    stop: &AtomicBool,
    progress: &Progress,
    start_ms: Millis,
) -> anyhow::Result<Millis> {
    let mut alerts = bus.subscribe();
    let mut live = crate::live::Live::start(config, &opts.out, calibrated)?;
    let wall0 = Instant::now();
    let period = Duration::from_millis(100);
    let mut n = 0u32;
    while wall0.elapsed().as_secs_f64() < opts.duration_s && !stop.load(Ordering::Relaxed) {
        n += 1;
        let now = wall_ms();
        push_due_watch(ingest, &mut pending_watch, now)?;
        live.drain(ingest, now)?;
        for e in live.take_errors() {
            progress.errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!("{e}");
        }
        loop {
            match alerts.try_recv() {
                Ok(a) => {
                    live.snapshot(&a);
                }
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
        tick(ingest, control_rx, derived, progress, now, start_ms)?;
        if let Some(wait) = (period * n).checked_sub(wall0.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    live.stop();
    Ok(ingest.watermark())
}

/// Where the simulated city's calibration puts a box of `camera`: its foot point on the ground,
/// and the zone there.
fn sim_locate(
    params: &SimParams,
    zones: Option<&ZoneIndex>,
    camera: u32,
    bbox: [f32; 4],
) -> ([f32; 2], Option<u32>) {
    let g =
        params.image_to_ground(camera, [f64::from(bbox[0] + bbox[2] / 2.0), f64::from(bbox[1] + bbox[3])]);
    let zone = zones.and_then(|z| z.locate(g)).map(|z| z.id);
    ([g[0] as f32, g[1] as f32], zone)
}

/// Hands one camera frame's detections and plate reads to ingest, written in place.
fn deliver_frame(
    ingest: &mut Ingest,
    params: &SimParams,
    f: &SimFrame,
    now: Millis,
    zones: Option<&ZoneIndex>,
) -> anyhow::Result<()> {
    let ids = |index: usize| EventId::pack(f.camera, f.frame, index as u32);
    // Event ids are checked before any row is written, so a bad frame writes nothing.
    ids(f.objects.len() + f.plates.len())?;
    ingest.push_rows(f.camera, f.capture_ms, now, |det: &mut DetectionsBuilder| {
        let detected = f.objects.iter().filter_map(|o| o.detected.map(|d| (o.class, d)));
        for (index, (class, (bbox, score))) in detected.enumerate() {
            let (ground, zone_id) = sim_locate(params, zones, f.camera, bbox);
            let d = Detection { class, score, bbox, ground, zone_id };
            det.push(f.camera, f.capture_ms, ids(index).expect("checked above"), &d);
        }
    })?;
    if !f.plates.is_empty() {
        let first = f.objects.iter().filter(|o| o.detected.is_some()).count();
        ingest.push_rows(f.camera, f.capture_ms, now, |reads: &mut PlateReadsBuilder| {
            for (i, r) in f.plates.iter().enumerate() {
                let plate = vigil_operators::plate::normalize(&r.text).ok();
                let id = ids(first + i).expect("checked above");
                reads.push(f.camera, f.capture_ms, id, &r.text, plate.as_deref(), r.confidence);
            }
        })?;
    }
    Ok(())
}

/// The simulator's ground truth: true identities and positions, for evaluating trackers later.
///
/// Rows are flushed to one Parquet file every [`GroundTruth::FLUSH_ROWS`] rows, so memory stays
/// bounded however long the city runs; the file is renamed into place when the run ends.
struct GroundTruth {
    camera: UInt32Builder,
    time: TimestampMillisecondBuilder,
    object: UInt64Builder,
    class: StringBuilder,
    x: Float32Builder,
    y: Float32Builder,
    detected: arrow::array::BooleanBuilder,
    plate: StringBuilder,
    schema: arrow::datatypes::SchemaRef,
    writer: parquet::arrow::ArrowWriter<std::fs::File>,
    tmp: PathBuf,
    path: PathBuf,
}

impl GroundTruth {
    const FLUSH_ROWS: usize = 1 << 16;

    fn create(out: &std::path::Path) -> anyhow::Result<Self> {
        let ts = DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, Some("UTC".into()));
        let schema = Arc::new(Schema::new(vec![
            Field::new("camera_id", DataType::UInt32, false),
            Field::new("event_time", ts, false),
            Field::new("object_id", DataType::UInt64, false),
            Field::new("class", DataType::Utf8, false),
            Field::new("ground_x", DataType::Float32, false),
            Field::new("ground_y", DataType::Float32, false),
            Field::new("detected", DataType::Boolean, false),
            Field::new("plate", DataType::Utf8, true),
        ]));
        let dir = out.join("ground_truth");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = dir.join(".ground_truth.parquet.inprogress");
        let file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let writer = parquet::arrow::ArrowWriter::try_new(file, Arc::clone(&schema), None)?;
        Ok(Self {
            camera: UInt32Builder::new(),
            time: TimestampMillisecondBuilder::new(),
            object: UInt64Builder::new(),
            class: StringBuilder::new(),
            x: Float32Builder::new(),
            y: Float32Builder::new(),
            detected: arrow::array::BooleanBuilder::new(),
            plate: StringBuilder::new(),
            schema,
            writer,
            tmp,
            path: dir.join("ground_truth.parquet"),
        })
    }

    fn record(&mut self, f: &SimFrame) -> anyhow::Result<()> {
        for o in f.objects.iter().filter(|o| o.object_id != u64::MAX) {
            self.camera.append_value(f.camera);
            self.time.append_value(f.capture_ms);
            self.object.append_value(o.object_id);
            self.class.append_value(o.class);
            self.x.append_value(o.truth[0] as f32);
            self.y.append_value(o.truth[1] as f32);
            self.detected.append_value(o.detected.is_some());
            self.plate.append_null();
        }
        for r in &f.plates {
            self.camera.append_value(f.camera);
            self.time.append_value(f.capture_ms);
            self.object.append_value(u64::MAX);
            self.class.append_value("plate");
            self.x.append_value(f32::NAN);
            self.y.append_value(f32::NAN);
            self.detected.append_value(true);
            self.plate.append_value(&r.truth);
        }
        if arrow::array::ArrayBuilder::len(&self.camera) >= Self::FLUSH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.camera.finish()),
            Arc::new(self.time.finish().with_timezone("UTC")),
            Arc::new(self.object.finish()),
            Arc::new(self.class.finish()),
            Arc::new(self.x.finish()),
            Arc::new(self.y.finish()),
            Arc::new(self.detected.finish()),
            Arc::new(self.plate.finish()),
        ];
        self.writer.write(&RecordBatch::try_new(Arc::clone(&self.schema), columns)?)?;
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<()> {
        self.flush()?;
        self.writer.close()?;
        std::fs::rename(&self.tmp, &self.path).with_context(|| format!("renaming {}", self.tmp.display()))?;
        Ok(())
    }
}

//! `vigil replay`: run SQL rules over recorded Parquet events, at full speed, deterministically.
//!
//! The events directory is what `vigil run` writes (`<stream>/.../*.parquet` for every stream of
//! the catalog, `reference/<table>-e<epoch>.parquet` with a `valid_from` column, each run's rows
//! holding until the next run's start, and the journal of what users added to the watchlist;
//! see `read_references`). Every
//! stream recorded is fed as an input (derived streams are replayed as they were recorded, not
//! derived again). Rows are regrouped into frames (one camera, one event time, one stream) and
//! handed to the same [`Ingest`] the live engine uses,
//! in *arrival* order: by default a frame arrives at its event time; `disorder_ms` delays each
//! frame by a pseudo-random amount below it (a hash of camera and time, so runs repeat), which
//! exercises out-of-order input; frames that end up behind the watermark are late, exactly as
//! live, and are written to `late_events.parquet`. Each rule's final output (its rows with
//! positive net multiplicity, sorted) is written to `<out>/<rule>.parquet`.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use arrow::array::{Array, RecordBatch, TimestampMillisecondArray, UInt32Array};
use arrow::compute::{cast, concat_batches, take_record_batch};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::probe::{Handle as ProbeHandle, Probe};
use vigil_engine::catalog::Catalog;
use vigil_engine::ingest::Ingest;
use vigil_engine::parquet_sink::list_files;
use vigil_engine::runtime::{Runtime, RuntimeConfig};
use vigil_engine::stream::{Batch, StreamDef, StreamInfo};
use vigil_engine::time::{Millis, WatermarkPolicy};
use vigil_operators::detection::LateEvents;
use vigil_sql::capture::{self, Errors, Outputs};
use vigil_sql::registry::file_name;
use vigil_sql::rule::Rule;

/// How to replay.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    /// The recorded events.
    pub events: PathBuf,
    /// Where each rule's output goes.
    pub out: PathBuf,
    /// Timely workers.
    pub workers: usize,
    /// Allowed lateness of the watermark, ms.
    pub lateness_ms: Millis,
    /// Frames are delayed by up to this much (deterministically), ms.
    pub disorder_ms: Millis,
    /// Ingest tick, ms of arrival time.
    pub tick_ms: Millis,
}

impl ReplayOptions {
    /// Defaults: one worker, 2 s lateness, no disorder, 100 ms ticks.
    pub fn new(events: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        Self {
            events: events.into(),
            out: out.into(),
            workers: 1,
            lateness_ms: 2_000,
            disorder_ms: 0,
            tick_ms: 100,
        }
    }
}

/// What a replay produced.
#[derive(Debug)]
pub struct ReplaySummary {
    /// Per rule: name, output file and row count.
    pub rules: Vec<(String, PathBuf, usize)>,
    /// On-time rows fed.
    pub rows: u64,
    /// Late rows.
    pub late: u64,
    /// Errors reported by rules while they ran: (rule, message).
    pub errors: Vec<(String, String)>,
}

/// One frame to feed: arrival time, stream, camera, event time, rows.
struct Frame {
    arrival: Millis,
    stream: &'static StreamInfo,
    camera: u32,
    event_time: Millis,
    rows: RecordBatch,
}

/// Replays `rules` (compiled against `streams`) over the events in `opts.events`.
pub fn replay(rules: Vec<Rule>, streams: &Catalog, opts: &ReplayOptions) -> anyhow::Result<ReplaySummary> {
    let mut frames = Vec::new();
    for stream in streams.streams().filter(|s| s.name != LateEvents::NAME) {
        frames.extend(read_frames(&opts.events, stream, opts.disorder_ms)?);
    }
    frames.sort_by_key(|f| (f.arrival, f.event_time, f.camera, f.stream.name));
    let start = frames.iter().map(|f| f.event_time).min().unwrap_or(0);
    let references = read_references(&opts.events, streams)?;
    let inputs: Vec<&'static StreamInfo> = streams.all().collect();

    let rules = Arc::new(rules);
    let outputs: Outputs = capture::outputs(rules.len());
    let errors: Errors = Arc::default();
    let late: Arc<Mutex<Vec<RecordBatch>>> = Arc::default();
    let runtime = {
        let (rules, outputs, errors, late) =
            (Arc::clone(&rules), Arc::clone(&outputs), Arc::clone(&errors), Arc::clone(&late));
        Runtime::start(RuntimeConfig::new(opts.workers, inputs), start.max(0) as u64, move |graph| {
            let probe = ProbeHandle::new();
            capture::capture(&rules, graph, &outputs, &errors, &probe);
            let late = Arc::clone(&late);
            if let Some(rows) = graph.get::<LateEvents>() {
                rows.into_inner()
                    .unary::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
                        Pipeline,
                        "CaptureLate",
                        move |_, _| {
                            move |input, _| {
                                input.for_each(|_, data: &mut Vec<Batch>| {
                                    late.lock()
                                        .expect("late rows")
                                        .extend(data.iter().map(|b| b.rows.clone()));
                                })
                            }
                        },
                    )
                    .probe_with(&probe);
            }
            probe
        })?
    };
    let policy = WatermarkPolicy { allowed_lateness_ms: opts.lateness_ms, ..WatermarkPolicy::default() };
    let mut ingest = Ingest::new(runtime, policy, start, LateEvents::info());
    let mut pending_refs = references.into_iter().peekable();
    let mut next_tick = start;
    for f in frames {
        while let Some((at, _, _, _)) = pending_refs.peek()
            && *at <= f.arrival
        {
            if let Some((_, table, rows, diff)) = pending_refs.next() {
                ingest.push_table_untyped(table, rows, diff)?;
            }
        }
        while f.arrival >= next_tick + opts.tick_ms {
            next_tick += opts.tick_ms;
            ingest.tick(next_tick)?;
        }
        ingest.push_untyped(f.stream, f.camera, f.event_time, f.rows, f.arrival)?;
    }
    // Expiries after the last recorded frame did not happen within the recorded period: the
    // replayed rules end as the live ones stood then.
    for (_, table, rows, diff) in pending_refs.filter(|r| r.3 > 0) {
        ingest.push_table_untyped(table, rows, diff)?;
    }
    let stats = ingest.finish()?;

    std::fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    let outputs = std::mem::take(&mut *outputs.lock().expect("outputs"));
    let mut summary = ReplaySummary {
        rules: Vec::new(),
        rows: stats.total_rows(),
        late: stats.total_late(),
        errors: std::mem::take(&mut *errors.lock().expect("errors")),
    };
    for (rule, deltas) in rules.iter().zip(outputs) {
        let deltas: Vec<_> = deltas.into_iter().map(|(_, d)| d).collect();
        let rows = capture::consolidate(&rule.schema, &deltas)?;
        let path = opts.out.join(format!("{}.parquet", file_name(&rule.name)));
        write_parquet(&path, &rows)?;
        summary.rules.push((rule.name.clone(), path, rows.num_rows()));
    }
    let late = std::mem::take(&mut *late.lock().expect("late rows"));
    let late = concat_batches(&LateEvents::schema(), &late)?;
    write_parquet(&opts.out.join("late_events.parquet"), &late)?;
    Ok(summary)
}

/// Writes `rows`; duplicate column names (a join's `event_time` on both sides) get `_2`, `_3`
/// suffixes, since Parquet readers look columns up by name.
fn write_parquet(path: &Path, rows: &RecordBatch) -> anyhow::Result<()> {
    let rows =
        RecordBatch::try_new(vigil_sql::registry::unique_names(&rows.schema()), rows.columns().to_vec())?;
    let rows = &rows;
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = ArrowWriter::try_new(file, rows.schema(), None)?;
    w.write(rows)?;
    w.close()?;
    Ok(())
}

/// A Parquet file's rows as one batch (in its own schema).
pub(crate) fn read_whole(path: &Path) -> anyhow::Result<RecordBatch> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{}: not a Parquet file", path.display()))?;
    let schema = Arc::clone(reader.schema());
    let batches = reader
        .build()?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(arrow::compute::concat_batches(&schema, &batches)?)
}

fn read_file(path: &Path) -> anyhow::Result<Vec<RecordBatch>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{}: not a Parquet file", path.display()))?
        .build()?;
    reader.collect::<Result<Vec<_>, _>>().with_context(|| format!("reading {}", path.display()))
}

/// Columns of `batch` by name in `schema`'s order and types; names the file on a mismatch.
fn conform(
    batch: &RecordBatch,
    schema: &arrow::datatypes::SchemaRef,
    path: &Path,
) -> anyhow::Result<RecordBatch> {
    let mut cols = Vec::new();
    for f in schema.fields() {
        let Some(c) = batch.column_by_name(f.name()) else {
            bail!(
                "{}: no column {} (expected the {} columns vigil writes)",
                path.display(),
                f.name(),
                schema.fields().len()
            )
        };
        cols.push(if c.data_type() == f.data_type() { Arc::clone(c) } else { cast(c, f.data_type())? });
    }
    Ok(RecordBatch::try_new(Arc::clone(schema), cols)?)
}

fn read_frames(root: &Path, stream: &'static StreamInfo, disorder_ms: Millis) -> anyhow::Result<Vec<Frame>> {
    let schema = Arc::clone(&stream.schema);
    let mut batches = Vec::new();
    for path in list_files(&root.join(stream.name))? {
        for b in read_file(&path)? {
            batches.push(conform(&b, &schema, &path)?);
        }
    }
    if batches.is_empty() {
        return Ok(Vec::new());
    }
    let all = concat_batches(&schema, &batches)?;
    // Frames are one source's rows of one time: the source is the `camera_id` column when the
    // stream has one (each camera has its own watermark), else one source for the stream.
    let time =
        vigil_engine::stream::column::<vigil_engine::stream::Timestamp>(&all, stream.name, "event_time")?;
    let time: &TimestampMillisecondArray = time;
    let camera =
        all.column_by_name("camera_id").and_then(|c| c.as_any().downcast_ref::<UInt32Array>()).cloned();
    let mut groups: BTreeMap<(Millis, u32), Vec<u32>> = BTreeMap::new();
    for i in 0..all.num_rows() {
        let source = camera.as_ref().map_or(u32::MAX, |c| c.value(i));
        groups.entry((time.value(i), source)).or_default().push(i as u32);
    }
    let mut frames = Vec::with_capacity(groups.len());
    for ((event_time, camera), idx) in groups {
        let delay = if disorder_ms > 0 {
            (vigil_sql::delta::hash_bytes(
                &[&camera.to_le_bytes()[..], &event_time.to_le_bytes()[..]].concat(),
            ) % disorder_ms as u64) as Millis
        } else {
            0
        };
        let rows = take_record_batch(&all, &UInt32Array::from(idx))?;
        frames.push(Frame { arrival: event_time + delay, stream, camera, event_time, rows });
    }
    Ok(frames)
}

/// The schema metadata key of a reference file that holds the start of the run that wrote it
/// (ms since the epoch): the run's rows hold until the next run's start.
pub(crate) const RUN_START: &str = "vigil.run_start_ms";

/// One reference file: its table's rows, and the run that wrote it.
struct ReferenceFile {
    table: &'static StreamInfo,
    path: PathBuf,
    /// The writing run's epoch (`<table>-e<epoch>.parquet`); none for a file of no run's.
    epoch: Option<u64>,
    rows: RecordBatch,
    /// The writing run's start, from the file's metadata.
    start: Option<Millis>,
}

/// `column` of `b` as ms, where it has one.
fn millis(b: &RecordBatch, column: &str) -> anyhow::Result<Option<arrow::array::Int64Array>> {
    let Some(c) = b.column_by_name(column) else { return Ok(None) };
    let c = cast(c, &arrow::datatypes::DataType::Int64)?;
    Ok(c.as_any().downcast_ref::<arrow::array::Int64Array>().cloned())
}

/// Reference rows: (time, table, rows, diff), in time order. Each row is added at its
/// `valid_from` and retracted at its `expires_at` when the table has one (a watchlist entry
/// stops matching by itself), or sooner, when the next run started: every start writes the
/// configuration's tables anew (`<table>-e<epoch>.parquet`), and a live run saw its own start's
/// rows only, so a lake of several runs is replayed with each run's zones and entries in their
/// own time and not once per run. Rows users added from psql (the table's journal, when it is
/// kept) are replayed from their `valid_from` to their `expires_at`, across runs, as a restart
/// takes them up; rows users deleted are not there to replay.
fn read_references(
    root: &Path,
    streams: &Catalog,
) -> anyhow::Result<Vec<(Millis, &'static StreamInfo, RecordBatch, i64)>> {
    let mut files = Vec::new();
    for path in list_files(&root.join("reference"))? {
        let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".parquet"))
        else {
            continue;
        };
        let (table, epoch) = match name.rsplit_once("-e") {
            Some((table, epoch)) if epoch.parse::<u64>().is_ok() => (table, epoch.parse().ok()),
            _ => (name, None),
        };
        let Some(table) = streams.tables().find(|t| t.name == table) else { continue };
        // (The batch keeps the file's schema, metadata and all.)
        let rows = read_whole(&path)?;
        let start = rows.schema().metadata().get(RUN_START).and_then(|s| s.parse::<Millis>().ok());
        files.push(ReferenceFile { table, path, epoch, rows, start });
    }
    // Each run's start: as written, or (files written before 2026-12-06) the earliest
    // `valid_from` of its files, which is the start whenever the run had a zone.
    let mut starts: BTreeMap<u64, Millis> = BTreeMap::new();
    for f in &files {
        let Some(epoch) = f.epoch else { continue };
        let earliest = match f.start {
            Some(s) => Some(s),
            None => millis(&f.rows, "valid_from")?.and_then(|v| v.iter().flatten().min()),
        };
        if let Some(t) = earliest {
            let s = starts.entry(epoch).or_insert(t);
            *s = (*s).min(t);
        }
    }
    let mut out = Vec::new();
    let mut push = |table: &'static StreamInfo,
                    rows: &RecordBatch,
                    source: &Path,
                    until: Option<Millis>|
     -> anyhow::Result<()> {
        let conformed = conform(rows, &table.schema, source)?;
        let valid = millis(rows, "valid_from")?;
        let expires = millis(rows, "expires_at")?;
        let mut adds: BTreeMap<Millis, Vec<u32>> = BTreeMap::new();
        let mut retracts: BTreeMap<Millis, Vec<u32>> = BTreeMap::new();
        for i in 0..rows.num_rows() {
            let from = valid.as_ref().filter(|v| v.is_valid(i)).map_or(Millis::MIN, |v| v.value(i));
            let to = expires.as_ref().filter(|e| e.is_valid(i)).map(|e| e.value(i));
            let to = to.into_iter().chain(until).min();
            if to.is_some_and(|to| to <= from) {
                continue;
            }
            adds.entry(from).or_default().push(i as u32);
            if let Some(to) = to {
                retracts.entry(to).or_default().push(i as u32);
            }
        }
        for (rows_at, diff) in [(adds, 1), (retracts, -1)] {
            for (t, idx) in rows_at {
                out.push((t, table, take_record_batch(&conformed, &UInt32Array::from(idx))?, diff));
            }
        }
        Ok(())
    };
    for f in &files {
        let until = f.epoch.and_then(|e| starts.range(e + 1..).next().map(|(_, s)| *s));
        push(f.table, &f.rows, &f.path, until)?;
    }
    for table in streams.tables().filter(|t| crate::app::control::journal::kept(t)) {
        let rows = crate::app::control::journal::live_rows(root, table)?;
        push(table, &rows, &root.join("catalog/tables").join(table.name), None)?;
    }
    out.sort_by_key(|(t, table, _, diff)| (*t, table.name, *diff));
    Ok(out)
}

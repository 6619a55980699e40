//! The Parquet sink: a stream's rows into the lake ([`crate::lake`]): files per event-time
//! partition per worker and run, under hourly partition directories, committed at frontiers.
//!
//! Rows go to the partition of their `event_time`, or to the partition of the batch's logical
//! time when that is later (late rows arrive after their own partition has closed). Rows wait
//! in memory until the input frontier passes their time, so a file never holds a row of a time
//! still open. A commit finishes every open file and records the frontier in the writer's
//! commit record; it happens when a partition ends, once every commit interval
//! ([`ParquetSinkConfig::commit`], 5 s by default; a partition then goes on in a new piece
//! `-c1`, `-c2`, ...), and when the input ends. A file is named
//! `date=YYYY-MM-DD/hour=HH/PREFIX-YYYYMMDDTHHMMSSZ-eE-wN[-TAG][-cK].parquet`; `E` is the run's
//! epoch, so a restart never replaces an earlier run's files. A SIGKILL loses at most the rows
//! since the last commit, and a replayable input gets them back ([`lake::resume_point`]); a
//! restarted writer skips the rows its last record says are committed. A worker that panics
//! commits what its sinks hold while it unwinds, and [`request_flush`] makes every sink commit
//! at once. While rows are held or a file is open the sink holds a capability: a probe on the
//! sink's output is done only when everything is committed.
//!
//! A write that fails (a full disk, a directory gone, permissions) does not stop the sink: the
//! rows of its unfinished files go back to the rows held, the sink logs the cause with the fix
//! and tries again after a delay (doubling to a minute), and it commits them all when it can.
//! Meanwhile it holds at most [`ParquetSinkConfig::hold_bytes`] of rows; beyond that the oldest
//! are dropped, counted ([`dropped_rows`]) and logged. So a full disk costs the lake the rows
//! past that bound, not the run: what reads the stream live goes on.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::error::{EngineError, Result};
use crate::ids::Epoch;
use crate::lake::{self, WriterState};
use crate::runtime::Time;
use crate::stream::{Batch, EVENT_TIME};
use crate::time::{Millis, file_stamp};

/// Where and how one stream's files are written.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ParquetSinkConfig {
    /// The directory of the files.
    pub dir: PathBuf,
    /// The files' name prefix (the stream's or the rule's name).
    pub prefix: String,
    /// Partition length in milliseconds of event time.
    pub partition_ms: Millis,
    /// The run's epoch, in every file name.
    pub epoch: Epoch,
    /// A tag after the worker in file names (a rule's alerts), or empty.
    pub tag: String,
    /// Columns with few distinct values, which get dictionary encoding.
    pub dictionary: Vec<String>,
    /// The timestamp column rows are partitioned by (`event_time`).
    pub time_column: String,
    /// The longest a row waits in an open file before the file is committed (wall clock).
    pub commit: Duration,
    /// The columns that identify a row (the stream's keys; none: the whole row), by which a
    /// resumed writer recognises the rows the killed run committed.
    pub keys: Vec<String>,
    /// While writes fail, the most bytes of rows held for a later write (the oldest go first).
    pub hold_bytes: usize,
    /// The first wait before a failed write is tried again (it doubles, to a minute at most).
    pub retry: Duration,
}

/// How long rows wait in an open file, by default: what a SIGKILL can lose.
pub const DEFAULT_COMMIT: Duration = Duration::from_secs(5);

/// Rows a sink holds while its writes fail, by default: 128 MiB.
pub const DEFAULT_HOLD_BYTES: usize = 128 << 20;

/// The first wait before a failed write is tried again, by default.
pub const DEFAULT_RETRY: Duration = Duration::from_secs(5);

/// The longest wait between two tries of a failing sink.
const RETRY_MAX: Duration = Duration::from_secs(60);

static FLUSH: AtomicBool = AtomicBool::new(false);

/// Makes every sink of the process commit its open files at its next activation (within one
/// commit interval), and from then on after every batch: what a run does when it must end
/// without its frontiers closing (a worker panicked).
pub fn request_flush() {
    FLUSH.store(true, Ordering::SeqCst);
}

impl ParquetSinkConfig {
    /// Files `dir/PREFIX-...parquet`, partitioned every `partition_ms`, of run `epoch`.
    pub fn new(
        dir: impl Into<PathBuf>,
        prefix: impl Into<String>,
        partition_ms: Millis,
        epoch: Epoch,
    ) -> Self {
        Self {
            dir: dir.into(),
            prefix: prefix.into(),
            partition_ms: partition_ms.max(1),
            epoch,
            tag: String::new(),
            dictionary: Vec::new(),
            time_column: EVENT_TIME.to_owned(),
            commit: DEFAULT_COMMIT,
            keys: Vec::new(),
            hold_bytes: DEFAULT_HOLD_BYTES,
            retry: DEFAULT_RETRY,
        }
    }

    /// The same, holding at most `bytes` of rows while writes fail, and trying again first
    /// after `retry`.
    pub fn with_hold(mut self, bytes: usize, retry: Duration) -> Self {
        self.hold_bytes = bytes;
        self.retry = retry.max(Duration::from_millis(1));
        self
    }

    /// The same, recognising rows by `keys` (the stream's; the whole row when empty).
    pub fn with_keys(mut self, keys: &[&str]) -> Self {
        self.keys = keys.iter().map(|k| (*k).to_owned()).collect();
        self
    }

    /// The same, committing open files after `commit` (at least 100 ms).
    pub fn with_commit(mut self, commit: Duration) -> Self {
        self.commit = commit.max(Duration::from_millis(100));
        self
    }

    /// The same, partitioning rows by timestamp column `column`.
    pub fn with_time_column(mut self, column: &str) -> Self {
        self.time_column = column.to_owned();
        self
    }

    /// The same, with `tag` after the worker in file names.
    pub fn tagged(mut self, tag: impl Into<String>) -> Self {
        self.tag = tag.into();
        self
    }

    /// The same, with dictionary encoding for `columns` (those with few distinct values).
    pub fn with_dictionary(mut self, columns: &[&str]) -> Self {
        self.dictionary = columns.iter().map(|c| (*c).to_owned()).collect();
        self
    }

    /// Creates the directory and brings it to its last commits ([`lake::recover`]).
    pub fn prepare(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| EngineError::io("creating", &self.dir, e))?;
        recover(&self.dir)
    }
}

/// Brings stream directory `dir` to its last commits after a crash ([`lake::recover`]): call
/// it before anything writes there.
pub fn recover(dir: &Path) -> Result<()> {
    let r = lake::recover(dir)?;
    if r.renamed + r.discarded > 0 {
        tracing::info!(
            "{}: {} files of an interrupted commit put in place, {} uncommitted files discarded",
            dir.display(),
            r.renamed,
            r.discarded
        );
    }
    Ok(())
}

/// How the lake's files are written: zstd, row groups of about a million rows (the default),
/// statistics per page and the page index (readers skip what a filter on time or camera
/// excludes), and dictionary encoding only for `dictionary`, the columns with few distinct
/// values. For coordinates, scores and ids a dictionary costs a hash per value and saves
/// nothing (measured: the interner was the hottest function of `vigil bench`).
pub fn writer_properties(dictionary: &[&str]) -> WriterProperties {
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_dictionary_enabled(false)
        .set_statistics_enabled(EnabledStatistics::Page);
    for column in dictionary {
        props = props.set_column_dictionary_enabled(ColumnPath::from(*column), true);
    }
    props.build()
}

struct OpenFile {
    writer: ArrowWriter<File>,
    /// Hidden and final names, relative to the stream's directory.
    tmp: PathBuf,
    path: PathBuf,
    rows: u64,
    cap: Capability<Time>,
    /// The rows written to it (shared with the writer's input, not copies): held until the
    /// file is committed, to be written again if it never is.
    held: Vec<RecordBatch>,
}

/// A write's outcome: on failure, the error and the rows it placed in no file.
type Unplaced<T> = std::result::Result<T, (EngineError, Vec<RecordBatch>)>;

/// A sink whose writes fail: since when, when it tries again, and what it has said.
struct Outage {
    since: Instant,
    retry_at: Instant,
    delay: Duration,
    said_at: Instant,
    /// Rows dropped beyond the bound since the last line that said so.
    dropped_unsaid: u64,
}

/// Writes one stream's batches to Parquet files (one per partition) and commits them to the
/// lake ([`crate::lake`]) at frontiers.
struct PartitionWriter {
    config: ParquetSinkConfig,
    schema: SchemaRef,
    worker: usize,
    /// The writer's name in the lake's log: `w<worker>[-<tag>]`.
    name: String,
    open: BTreeMap<Millis, OpenFile>,
    /// Pieces already committed, per partition still open to rows (names the next piece).
    pieces: BTreeMap<Millis, u32>,
    props: WriterProperties,
    /// Rows waiting for the frontier to pass their time: a file holds only rows before the
    /// frontier, so that a commit is a cut of the stream at a frontier.
    stash: BTreeMap<Time, (Capability<Time>, Vec<RecordBatch>)>,
    /// Files finished and synced, renamed into place at the next commit.
    finished: Vec<Finished>,
    /// The last commit record (the previous run's, until this writer's first commit).
    state: WriterState,
    /// Rows before this time were committed by the run that was killed before this one.
    skip_before: Time,
    /// The keys of the rows the killed run committed near `skip_before` (see [`Resumed`]).
    resumed: Option<Resumed>,
    last_commit: Instant,
    /// The writer was abandoned (its input ended while it could not write): rows are dropped.
    failed: bool,
    /// Bytes of the rows in `stash`.
    stash_bytes: usize,
    /// Writes are failing; they are tried again at its `retry_at`.
    outage: Option<Outage>,
    /// Renames of committed files that failed, tried again with the next commit.
    unrenamed: Vec<(String, String)>,
}

impl PartitionWriter {
    /// A writer taking up its record of the last run; an unreadable record is returned as
    /// the error beside a writer that starts afresh.
    fn new(config: ParquetSinkConfig, schema: SchemaRef, worker: usize) -> (Self, Option<EngineError>) {
        let dictionary: Vec<&str> = config.dictionary.iter().map(String::as_str).collect();
        let props = writer_properties(&dictionary);
        let name =
            if config.tag.is_empty() { format!("w{worker}") } else { format!("w{worker}-{}", config.tag) };
        let (state, error) = match lake::read_state(&config.dir, &name) {
            Ok(s) => (s.unwrap_or_default(), None),
            Err(e) => (WriterState::default(), Some(e)),
        };
        let skip_before = state.skip_before();
        let resumed = (skip_before > 0 && skip_before != lake::THROUGH_ALL)
            .then(|| Resumed::load(&config, skip_before));
        let (resumed, error) = match resumed {
            Some(Ok(r)) => (Some(r), error),
            Some(Err(e)) => (None, error.or(Some(e))),
            None => (None, error),
        };
        if skip_before == lake::THROUGH_ALL {
            tracing::info!(
                "{}/{name}: the killed run committed every row of this writer (commit {}): the replay is skipped",
                config.prefix,
                state.commit
            );
        } else if skip_before > 0 {
            tracing::info!(
                "{}/{name}: resuming after commit {} (rows before {} were committed)",
                config.prefix,
                state.commit,
                crate::time::rfc3339(skip_before as Millis)
            );
        }
        let writer = Self {
            config,
            schema,
            worker,
            name,
            open: BTreeMap::new(),
            pieces: BTreeMap::new(),
            props,
            stash: BTreeMap::new(),
            finished: Vec::new(),
            state,
            skip_before,
            resumed,
            last_commit: Instant::now(),
            failed: false,
            stash_bytes: 0,
            outage: None,
            unrenamed: Vec::new(),
        };
        (writer, error)
    }

    fn partition_of(&self, t: Millis) -> Millis {
        t.div_euclid(self.config.partition_ms) * self.config.partition_ms
    }

    fn file_for(&mut self, part: Millis, cap: &Capability<Time>) -> Result<&mut OpenFile> {
        if !self.open.contains_key(&part) {
            let c = &self.config;
            let tag = if c.tag.is_empty() { String::new() } else { format!("-{}", c.tag) };
            let piece = match self.pieces.get(&part) {
                Some(k) => format!("-c{k}"),
                None => String::new(),
            };
            let name = format!(
                "{}-{}-e{}-w{}{tag}{piece}.parquet",
                c.prefix,
                file_stamp(part),
                c.epoch,
                self.worker
            );
            let hour = lake::hour_dir(part);
            let abs = c.dir.join(&hour);
            std::fs::create_dir_all(&abs).map_err(|e| EngineError::io("creating", &abs, e))?;
            let tmp = hour.join(format!(".{name}.inprogress"));
            let path = hour.join(name);
            let file = File::create(c.dir.join(&tmp))
                .map_err(|e| EngineError::io("creating", c.dir.join(&tmp), e))?;
            let writer = ArrowWriter::try_new(file, self.schema.clone(), Some(self.props.clone())).map_err(
                |source| EngineError::Parquet {
                    context: format!("opening {}", c.dir.join(&tmp).display()),
                    source,
                },
            )?;
            let at = (part.max(0) as Time).max(*cap.time());
            self.open.insert(
                part,
                OpenFile { writer, tmp, path, rows: 0, cap: cap.delayed(&at), held: Vec::new() },
            );
        }
        Ok(self.open.get_mut(&part).expect("inserted above"))
    }

    /// Holds `data` (received at `time`) until the frontier passes `time`; rows a killed run
    /// committed already are dropped ([`Resumed`]).
    fn receive(&mut self, cap: &Capability<Time>, data: &[Batch]) {
        let time = *cap.time();
        // Every row was committed by the killed run ([`lake::THROUGH_ALL`]).
        if self.failed || self.skip_before == lake::THROUGH_ALL {
            return;
        }
        let near = match &self.resumed {
            Some(r) if time < r.from => return,
            Some(r) => time < r.until,
            None => false,
        };
        let entry = self.stash.entry(time).or_insert_with(|| (cap.clone(), Vec::new()));
        let before = entry.1.len();
        for b in data.iter().filter(|b| b.rows.num_rows() > 0) {
            if near {
                let r = self.resumed.as_ref().expect("near a resume point");
                match r.unseen(&b.rows) {
                    Ok(Some(rows)) => entry.1.push(rows),
                    Ok(None) => {}
                    // Not recognisable: written (a repeat is better than a loss).
                    Err(e) => {
                        tracing::error!("{}: recognising committed rows: {e}", self.config.prefix);
                        entry.1.push(b.rows.clone());
                    }
                }
            } else {
                entry.1.push(b.rows.clone());
            }
        }
        self.stash_bytes += entry.1[before..].iter().map(RecordBatch::get_array_memory_size).sum::<usize>();
        self.bound();
    }

    /// While writes fail, drops the oldest rows held beyond [`ParquetSinkConfig::hold_bytes`],
    /// counting them.
    fn bound(&mut self) {
        let Some(outage) = &mut self.outage else { return };
        while self.stash_bytes > self.config.hold_bytes {
            let Some((_, (_, batches))) = self.stash.pop_first() else { break };
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            let bytes: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();
            self.stash_bytes = self.stash_bytes.saturating_sub(bytes);
            outage.dropped_unsaid += rows as u64;
            *DROPPED
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(self.config.prefix.clone())
                .or_default() += rows as u64;
        }
    }

    /// Writes the rows held for times before `frontier` (all of them when `None`).
    fn write_ready(&mut self, frontier: Option<Time>) -> Result<()> {
        // Past the resume point's slack, the killed run's keys are of no more use.
        if self.resumed.as_ref().is_some_and(|r| frontier.is_none_or(|f| f >= r.until)) {
            self.resumed = None;
        }
        while let Some(entry) = self.stash.first_entry() {
            if frontier.is_some_and(|f| *entry.key() >= f) {
                break;
            }
            let (time, (cap, batches)) = entry.remove_entry();
            let bytes: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();
            self.stash_bytes = self.stash_bytes.saturating_sub(bytes);
            for (i, b) in batches.iter().enumerate() {
                if let Err((e, mut unplaced)) = self.write(time, b, &cap) {
                    // The rows in no file go back (those in one go back with it, [`fail`]).
                    unplaced.extend(batches[i + 1..].iter().cloned());
                    self.restash(cap, unplaced);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Writes `data` to the files of its partitions. On failure, the error comes with the rows
    /// of `data` that are in no file (each row is then either in a file or in those).
    fn write(&mut self, batch_time: Time, data: &RecordBatch, cap: &Capability<Time>) -> Unplaced<()> {
        if data.num_rows() == 0 {
            return Ok(());
        }
        let floor = self.partition_of(batch_time as Millis);
        let times = times_of(data, &self.config.time_column).map_err(|e| (e, vec![data.clone()]))?;
        let first = self.partition_of(times[0]).max(floor);
        if times.iter().all(|&t| self.partition_of(t).max(floor) == first) {
            return self.append(first, data, cap).map_err(|(e, rows)| (e, rows.into_iter().collect()));
        }
        let of = |pick: &dyn Fn(Millis) -> bool| -> Result<RecordBatch> {
            let mask: BooleanArray =
                times.iter().map(|&t| Some(pick(self.partition_of(t).max(floor)))).collect();
            filter_record_batch(data, &mask).map_err(|source| EngineError::Arrow {
                context: format!("splitting {} rows by partition", self.config.prefix),
                source,
            })
        };
        let parts: std::collections::BTreeSet<Millis> =
            times.iter().map(|&t| self.partition_of(t).max(floor)).collect();
        // Split first, so that a failure to split places nothing.
        let split: Vec<(Millis, RecordBatch)> = parts
            .iter()
            .map(|&part| of(&|p| p == part).map(|rows| (part, rows)))
            .collect::<Result<_>>()
            .map_err(|e| (e, vec![data.clone()]))?;
        for (k, (part, rows)) in split.iter().enumerate() {
            if let Err((e, unplaced)) = self.append(*part, rows, cap) {
                let later = split[k + 1..].iter().map(|(_, rows)| rows.clone());
                return Err((e, unplaced.into_iter().chain(later).collect()));
            }
        }
        Ok(())
    }

    /// Appends `rows` to the file of `part`. On failure, the error comes with `rows` if they are
    /// in no file (the file could not be made; a file that failed to take them holds them).
    fn append(
        &mut self,
        part: Millis,
        rows: &RecordBatch,
        cap: &Capability<Time>,
    ) -> std::result::Result<(), (EngineError, Option<RecordBatch>)> {
        let dir = self.config.dir.clone();
        let f = self.file_for(part, cap).map_err(|e| (e, Some(rows.clone())))?;
        f.rows += rows.num_rows() as u64;
        f.held.push(rows.clone());
        f.writer.write(rows).map_err(|source| {
            let e =
                EngineError::Parquet { context: format!("writing {}", dir.join(&f.tmp).display()), source };
            (e, None)
        })
    }

    /// Finishes the files of partitions that end at or before `frontier` (all when `None`, or
    /// when `all`); they are committed with the next commit.
    fn close_until(&mut self, frontier: Option<Time>, all: bool) -> Result<()> {
        let size = self.config.partition_ms;
        let done: Vec<Millis> = self
            .open
            .keys()
            .copied()
            .filter(|&p| all || frontier.is_none_or(|f| (p + size).max(0) as Time <= f))
            .collect();
        for p in done {
            let f = self.open.remove(&p).expect("key listed above");
            let ended = frontier.is_none_or(|f| (p + size).max(0) as Time <= f);
            if ended {
                self.pieces.remove(&p);
            } else {
                // The partition goes on in a new piece.
                *self.pieces.entry(p).or_default() += 1;
            }
            let (done, outcome) = finish_file(&self.config.dir, f);
            if let Err(e) = outcome {
                remove_quietly(&self.config.dir.join(&done.tmp));
                self.restash(done.cap, done.held);
                return Err(e);
            }
            self.finished.push(done);
        }
        Ok(())
    }

    /// Puts rows back among those held, at their capability's time.
    fn restash(&mut self, cap: Capability<Time>, batches: Vec<RecordBatch>) {
        self.stash_bytes += batches.iter().map(RecordBatch::get_array_memory_size).sum::<usize>();
        self.stash.entry(*cap.time()).or_insert_with(|| (cap, Vec::new())).1.extend(batches);
    }

    /// A write failed: every file not committed is deleted and its rows go back among those
    /// held, to be written when the next try succeeds. The first failure is logged with the
    /// fix; then a line a minute while it lasts.
    fn fail(&mut self, e: &EngineError) {
        for (_, f) in std::mem::take(&mut self.open) {
            let OpenFile { writer, tmp, cap, held, .. } = f;
            drop(writer);
            remove_quietly(&self.config.dir.join(&tmp));
            self.restash(cap, held);
        }
        for f in std::mem::take(&mut self.finished) {
            remove_quietly(&self.config.dir.join(&f.tmp));
            self.restash(f.cap, f.held);
        }
        let now = Instant::now();
        let (dir, hold_mb) = (self.config.dir.display(), self.config.hold_bytes >> 20);
        let prefix = &self.config.prefix;
        match &mut self.outage {
            None => {
                let delay = self.config.retry;
                tracing::error!(
                    target: "vigil::sink",
                    "{prefix}: cannot write: {e}; fix: free space on the disk of {dir} or mend it (permissions, \
                     mount); the rows are held in memory (up to {hold_mb} MB, then the oldest go) and written \
                     when it can, tried again every {} s at most",
                    RETRY_MAX.as_secs()
                );
                count_failing(prefix, 1);
                self.outage = Some(Outage {
                    since: now,
                    retry_at: now + delay,
                    delay,
                    said_at: now,
                    dropped_unsaid: 0,
                });
            }
            Some(o) => {
                o.delay = (o.delay * 2).min(RETRY_MAX);
                o.retry_at = now + o.delay;
                if now.duration_since(o.said_at) >= RETRY_MAX {
                    let rows: usize =
                        self.stash.values().flat_map(|(_, b)| b).map(RecordBatch::num_rows).sum();
                    tracing::error!(
                        target: "vigil::sink",
                        "{prefix}: still cannot write after {} s: {e}; {rows} rows held ({} MB), {} dropped since the last line",
                        now.duration_since(o.since).as_secs(),
                        self.stash_bytes >> 20,
                        o.dropped_unsaid
                    );
                    o.said_at = now;
                    o.dropped_unsaid = 0;
                }
            }
        }
        self.bound();
    }

    /// While writes fail and the next try is not due: when it is (`None` when due, or when
    /// writes do not fail).
    fn waiting(&self) -> Option<Duration> {
        let o = self.outage.as_ref()?;
        let now = Instant::now();
        (o.retry_at > now).then(|| o.retry_at - now)
    }

    /// Commits when it is due: after the commit interval (or at once after [`request_flush`]),
    /// when a partition closed, and when the input ends. A commit finishes every open file and
    /// records `frontier` as the point through which everything is committed. Returns how long
    /// until the next commit is due, while something is left to commit.
    fn commit_due(&mut self, frontier: Option<Time>) -> Result<Option<Duration>> {
        let flush = FLUSH.load(Ordering::Relaxed);
        let elapsed = self.last_commit.elapsed();
        let first = self.state.epoch != self.config.epoch.value();
        let advanced = first || matches!((self.state.through, frontier), (Some(t), Some(f)) if f > t);
        let ended = frontier.is_none() && (first || self.state.through.is_some());
        // A run's first record goes at once: the point it resumes from if it is killed before
        // its first interval is out.
        if first
            || ended
            || !self.finished.is_empty()
            || (advanced && (flush || elapsed >= self.config.commit))
        {
            self.close_until(frontier, true)?;
            self.commit(frontier)?;
            return Ok(None);
        }
        Ok(advanced.then(|| self.config.commit.saturating_sub(elapsed)))
    }

    /// After an error: lets go of every row held and every file open, with their capabilities,
    /// so that the dataflow can end (the application stops the run; the next start discards
    /// what was not committed, and a replayable input writes it again).
    fn abandon(&mut self) {
        let rows: usize = self.stash.values().flat_map(|(_, b)| b).map(RecordBatch::num_rows).sum::<usize>()
            + self.open.values().map(|f| f.rows as usize).sum::<usize>()
            + self.finished.iter().map(|f| f.rows as usize).sum::<usize>();
        if rows > 0 {
            *DROPPED
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(self.config.prefix.clone())
                .or_default() += rows as u64;
        }
        if self.outage.take().is_some() {
            count_failing(&self.config.prefix, -1);
        }
        self.failed = true;
        self.stash.clear();
        self.open.clear();
        self.finished.clear();
        // Nothing more is written: the record stays as last committed.
        self.state.through = None;
        self.state.epoch = self.config.epoch.value();
    }

    fn commit(&mut self, frontier: Option<Time>) -> Result<()> {
        let files = &self.finished;
        let state =
            WriterState {
                epoch: self.config.epoch.value(),
                commit: self.state.commit + 1,
                // Rows before `skip_before` were committed by the killed run: the point never goes back.
                through: frontier.map(|f| f.max(self.skip_before)),
                pending: self
                    .unrenamed
                    .iter()
                    .cloned()
                    .chain(files.iter().map(|f| {
                        (f.tmp.to_string_lossy().into_owned(), f.path.to_string_lossy().into_owned())
                    }))
                    .collect(),
            };
        // Until the record is written nothing is committed: a failure leaves the files to be
        // written again. Once it is, they are committed, and a rename that fails is tried again.
        lake::write_record(&self.config.dir, &self.name, &state)?;
        let files = std::mem::take(&mut self.finished);
        self.unrenamed = match lake::finish_renames(&self.config.dir, &state.pending) {
            Ok(()) => Vec::new(),
            Err(e) => {
                tracing::error!(target: "vigil::sink", "{}: {e} (committed; tried again at the next commit)", self.config.prefix);
                state.pending.clone()
            }
        };
        if let Some(o) = self.outage.take() {
            count_failing(&self.config.prefix, -1);
            let rows: u64 = files.iter().map(|f| f.rows).sum();
            tracing::info!(
                target: "vigil::sink",
                "{}: writing again after {} s; {rows} rows held were committed{}",
                self.config.prefix,
                o.since.elapsed().as_secs(),
                match o.dropped_unsaid {
                    0 => String::new(),
                    n => format!(", {n} more were dropped beyond the bound"),
                }
            );
        }
        let rows: u64 = files.iter().map(|f| f.rows).sum();
        *COMMITTED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(self.config.prefix.clone())
            .or_default() += rows;
        self.state = state;
        self.last_commit = Instant::now();
        Ok(())
    }
}

impl Drop for PartitionWriter {
    /// A sink dropped with rows uncommitted commits them: a worker that unwinds (a panic
    /// elsewhere in its dataflows), or a dataflow dropped before it finished (a rule over its
    /// budget, a rule dropped). The record says the writer finished: nothing is resumed.
    fn drop(&mut self) {
        if self.stash.is_empty()
            && self.open.is_empty()
            && self.finished.is_empty()
            && self.state.through.is_none()
        {
            return;
        }
        let done = self
            .write_ready(None)
            .and_then(|()| self.close_until(None, true))
            .and_then(|()| self.commit(None));
        if let Err(e) = done {
            tracing::error!(
                "committing {}/{} as its sink is dropped: {e}",
                self.config.dir.display(),
                self.name
            );
            // What it held is lost: counted, and the writer no longer counts as failing.
            self.abandon();
        }
    }
}

/// How far apart, at most, the logical times of one row can be in two runs over the same
/// input. An operator emits a row at its event time or later, when its frontier allows, and the
/// frontier moves by the scheduling: a resumed run can give a row another time than the killed
/// run did.
pub const RESUME_SLACK_MS: Time = 60_000;

/// What a writer resuming after a kill knows of the killed run's commits: rows at logical
/// times before `from` were committed; rows from `until` on were not; in between, a row was
/// committed if its keys are among those committed there. Every id vigil writes is a function
/// of the input and the first run's epoch, so a replayed row has the keys it had.
struct Resumed {
    from: Time,
    until: Time,
    keys: Vec<String>,
    seen: std::collections::HashSet<u64>,
}

impl Resumed {
    /// Reads the keys of the committed rows of the partitions a row near `through` can be in.
    fn load(config: &ParquetSinkConfig, through: Time) -> Result<Self> {
        let from = through.saturating_sub(RESUME_SLACK_MS);
        let first = (from.saturating_sub(RESUME_SLACK_MS) as Millis).div_euclid(config.partition_ms)
            * config.partition_ms;
        let mut r = Self {
            from,
            until: through + RESUME_SLACK_MS,
            keys: config.keys.clone(),
            seen: Default::default(),
        };
        for path in list_files(&config.dir)? {
            if partition_start(&path, &config.prefix).is_none_or(|p| p < first) {
                continue;
            }
            let file = File::open(&path).map_err(|e| EngineError::io("opening", &path, e))?;
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                .and_then(|b| b.build())
                .map_err(|source| EngineError::Parquet {
                    context: format!("reading {}", path.display()),
                    source,
                })?;
            for batch in reader {
                let batch = batch.map_err(|source| EngineError::Arrow {
                    context: format!("reading {}", path.display()),
                    source,
                })?;
                r.seen.extend(r.hashes(&batch)?);
            }
        }
        Ok(r)
    }

    /// A hash of each row's keys (of every column when the stream names none).
    fn hashes(&self, batch: &RecordBatch) -> Result<Vec<u64>> {
        use std::hash::{Hash, Hasher};
        let columns: Vec<arrow::array::ArrayRef> = if self.keys.is_empty() {
            batch.columns().to_vec()
        } else {
            self.keys
                .iter()
                .map(|k| {
                    batch
                        .column_by_name(k)
                        .cloned()
                        .ok_or_else(|| EngineError::Schema(format!("no key column {k}")))
                })
                .collect::<Result<_>>()?
        };
        let fields = columns.iter().map(|c| arrow::row::SortField::new(c.data_type().clone())).collect();
        let arrow_err = |source| EngineError::Arrow { context: "hashing keys".into(), source };
        let converter = arrow::row::RowConverter::new(fields).map_err(arrow_err)?;
        let rows = converter.convert_columns(&columns).map_err(arrow_err)?;
        Ok(rows
            .iter()
            .map(|row| {
                let mut h = std::hash::DefaultHasher::new();
                row.as_ref().hash(&mut h);
                h.finish()
            })
            .collect())
    }

    /// The rows of `batch` not committed already, if any.
    fn unseen(&self, batch: &RecordBatch) -> Result<Option<RecordBatch>> {
        let hashes = self.hashes(batch)?;
        if hashes.iter().all(|h| !self.seen.contains(h)) {
            return Ok(Some(batch.clone()));
        }
        let mask: BooleanArray = hashes.iter().map(|h| Some(!self.seen.contains(h))).collect();
        let rows = filter_record_batch(batch, &mask)
            .map_err(|source| EngineError::Arrow { context: "dropping committed rows".into(), source })?;
        Ok((rows.num_rows() > 0).then_some(rows))
    }
}

/// A file finished and synced under its hidden name, waiting for its commit (its rows and
/// capability held until then, as an open file's).
struct Finished {
    tmp: PathBuf,
    path: PathBuf,
    rows: u64,
    cap: Capability<Time>,
    held: Vec<RecordBatch>,
}

/// Finishes and syncs a file under its hidden name; it becomes visible when committed. The
/// file comes back with the outcome: on failure, its rows are to be written again.
fn finish_file(dir: &Path, f: OpenFile) -> (Finished, Result<()>) {
    let OpenFile { writer, tmp, path, rows, cap, held } = f;
    let abs = dir.join(&tmp);
    let done = writer
        .into_inner()
        .map_err(|source| EngineError::Parquet { context: format!("finishing {}", abs.display()), source })
        .and_then(|file| file.sync_all().map_err(|e| EngineError::io("syncing", &abs, e)));
    (Finished { tmp, path, rows, cap, held }, done)
}

/// Deletes a hidden file of a write that failed (what is left of it is of no use; a restart's
/// [`recover`] deletes it too).
fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::debug!("removing {}: {e}", path.display());
    }
}

/// Rows committed to Parquet files since the process started, by file prefix (a stream's or a
/// rule's name): what a reader of the files finds, before retention and erasure remove any.
static COMMITTED: std::sync::Mutex<BTreeMap<String, u64>> = std::sync::Mutex::new(BTreeMap::new());

/// [`COMMITTED`]: rows in committed files, by prefix, counted as each file is renamed into place.
pub fn committed_rows() -> BTreeMap<String, u64> {
    COMMITTED.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Rows never written since the process started, by file prefix: dropped beyond
/// [`ParquetSinkConfig::hold_bytes`] while writes failed, or held when the input ended.
static DROPPED: std::sync::Mutex<BTreeMap<String, u64>> = std::sync::Mutex::new(BTreeMap::new());

/// [`DROPPED`].
pub fn dropped_rows() -> BTreeMap<String, u64> {
    DROPPED.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Writers whose writes are failing now, by file prefix (a stream has one a worker).
static FAILING: std::sync::Mutex<BTreeMap<String, u64>> = std::sync::Mutex::new(BTreeMap::new());

/// [`FAILING`]: for an operator's alert on a sink that cannot write.
pub fn failing_writers() -> BTreeMap<String, u64> {
    FAILING.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Counts a writer of `prefix` into (`by` 1) or out of (`by` -1) [`FAILING`].
fn count_failing(prefix: &str, by: i64) {
    let mut failing = FAILING.lock().unwrap_or_else(|p| p.into_inner());
    let n = failing.entry(prefix.to_owned()).or_default();
    *n = n.saturating_add_signed(by);
}

/// The `event_time` column (milliseconds) of a batch.
pub fn event_times(batch: &RecordBatch) -> Result<&[i64]> {
    times_of(batch, EVENT_TIME)
}

/// Timestamp column `column` (milliseconds) of a batch.
fn times_of<'a>(batch: &'a RecordBatch, column: &str) -> Result<&'a [i64]> {
    use arrow::array::{Array, TimestampMillisecondArray};
    let col = batch
        .column_by_name(column)
        .and_then(|c| c.as_any().downcast_ref::<TimestampMillisecondArray>())
        .ok_or_else(|| EngineError::Schema(format!("a batch without a millisecond {column} column")))?;
    debug_assert_eq!(col.null_count(), 0);
    Ok(col.values())
}

/// Extension trait: write batches to Parquet.
pub trait WriteParquet<'scope> {
    /// Writes every batch (of schema `schema`) to partitioned Parquet files as `config` says.
    /// The returned stream carries nothing; probe it to know when every file is closed. A write
    /// that fails is logged and tried again (see the module documentation); `on_error` hears
    /// of what loses rows the sink cannot hold on to: a record unreadable at start, and rows
    /// that still cannot be written when the input ends.
    ///
    /// ```
    /// use vigil_engine::ids::Epoch;
    /// use vigil_engine::parquet_sink::{ParquetSinkConfig, WriteParquet};
    /// use vigil_engine::stream::{Batch, Timestamp};
    ///
    /// let dir = std::env::temp_dir().join("vigil-doc-parquet");
    /// let config = ParquetSinkConfig::new(&dir, "ticks", 60_000, Epoch::default());
    /// let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
    ///     vigil_engine::stream::field::<Timestamp>("event_time"),
    /// ]));
    /// timely::example(move |scope| {
    ///     let batches = timely::dataflow::operators::generic::operator::empty::<_, Vec<Batch>>(scope);
    ///     batches.write_parquet(schema, config, 0, |e| eprintln!("{e}"));
    /// });
    /// ```
    fn write_parquet(
        self,
        schema: SchemaRef,
        config: ParquetSinkConfig,
        worker: usize,
        on_error: impl FnMut(EngineError) + 'static,
    ) -> Stream<'scope, Time, Vec<()>>;
}

impl<'scope> WriteParquet<'scope> for Stream<'scope, Time, Vec<Batch>> {
    fn write_parquet(
        self,
        schema: SchemaRef,
        config: ParquetSinkConfig,
        worker: usize,
        mut on_error: impl FnMut(EngineError) + 'static,
    ) -> Stream<'scope, Time, Vec<()>> {
        let name = format!("ParquetSink({}{})", config.prefix, if config.tag.is_empty() { "" } else { "+" });
        let scope = self.scope();
        self.unary_frontier::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Pipeline,
            &name,
            move |_default_cap, info| {
                // The default capability is dropped here: held rows and open files hold their own.
                let (mut writer, error) = PartitionWriter::new(config, schema, worker);
                if let Some(e) = error {
                    on_error(e);
                }
                // Wakes the sink when its next commit is due, even with no input.
                let activator = scope.activator_for(info.address);
                let mut wake: Option<Instant> = None;
                move |(input, frontier), _output| {
                    input.for_each(|time, data| {
                        let Some(cap) = time.retain_least(0) else { return };
                        writer.receive(&cap, data);
                    });
                    let f = frontier.frontier().first().copied();
                    // Writes are failing and the next try is not due: the rows wait (bounded).
                    // When the input ends there is no later: one last try, then what is left
                    // is dropped and counted.
                    let next = match writer.waiting() {
                        Some(wait) if f.is_some() => Ok(Some(wait)),
                        _ => writer
                            .write_ready(f)
                            .and_then(|()| writer.close_until(f, false))
                            .and_then(|()| writer.commit_due(f)),
                    };
                    let next = match next {
                        Ok(next) => next,
                        Err(e) if f.is_none() => {
                            tracing::error!(
                                target: "vigil::sink",
                                "{}: cannot write as the run ends: {e}; the rows held are lost",
                                writer.config.prefix
                            );
                            writer.abandon();
                            on_error(e);
                            None
                        }
                        Err(e) => {
                            writer.fail(&e);
                            writer.waiting()
                        }
                    };
                    if let Some(next) = next {
                        // One pending wake-up at a time, not one per batch.
                        let (now, delay) = (Instant::now(), next.max(Duration::from_millis(10)));
                        let at = now + delay;
                        if wake.is_none_or(|w| w <= now || w > at) {
                            activator.activate_after(delay);
                            wake = Some(at);
                        }
                    }
                }
            },
        )
    }
}

/// Lists the committed Parquet files under stream directory `dir` (every partition), sorted.
pub fn list_files(dir: &Path) -> Result<Vec<PathBuf>> {
    lake::list_files(dir)
}

/// The partition start of a file named `PREFIX-YYYYMMDDTHHMMSSZ-...parquet`, if it is one.
pub fn partition_start(path: &Path, prefix: &str) -> Option<Millis> {
    let name = path.file_name()?.to_str()?;
    let stamp = name.strip_prefix(prefix)?.strip_prefix('-')?.get(..16)?;
    let start = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ").ok()?;
    Some(start.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a sink of epoch 4 over three rows (event times 1 to 3 s, logical time 0) with
    /// writer `w0`'s record set to `through` by a run of epoch 3; returns the rows written.
    fn rows_written_after(through: Option<Time>) -> usize {
        use arrow::array::TimestampMillisecondArray;
        use timely::dataflow::operators::ToStream;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let record = lake::WriterState { epoch: 3, commit: 1, through, pending: Vec::new() };
        lake::write_atomic(&d.join(lake::LOG_DIR).join("w0.json"), &serde_json::to_vec(&record).unwrap())
            .unwrap();
        let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![crate::stream::field::<
            crate::stream::Timestamp,
        >(EVENT_TIME)]));
        let times = TimestampMillisecondArray::from(vec![1_000, 2_000, 3_000]).with_timezone("UTC");
        let rows = RecordBatch::try_new(schema.clone(), vec![std::sync::Arc::new(times)]).unwrap();
        let config = ParquetSinkConfig::new(&d, "ticks", 60_000, Epoch::new(4).unwrap());
        timely::example(move |scope| {
            vec![Batch::new(rows)].to_stream(scope).write_parquet(schema, config, 0, |e| panic!("{e}"));
        });
        let n = list_files(&d)
            .unwrap()
            .iter()
            .map(|p| {
                let f = File::open(p).unwrap();
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
                    .unwrap()
                    .metadata()
                    .file_metadata()
                    .num_rows() as usize
            })
            .sum();
        // Either way the writer ends cleanly in its own run.
        let state = lake::read_state(&d, "w0").unwrap().unwrap();
        assert_eq!((state.epoch, state.through), (4, None));
        n
    }

    #[test]
    fn a_writer_that_finished_in_the_killed_run_skips_the_replay() {
        // Held by the resume (lake::hold_finished): nothing again.
        assert_eq!(rows_written_after(Some(lake::THROUGH_ALL)), 0);
        // After a clean end the next run is a new one: everything.
        assert_eq!(rows_written_after(None), 3);
    }

    /// Rows of event times `times` (ms), one batch.
    fn ticks(times: impl Iterator<Item = i64>) -> RecordBatch {
        use arrow::array::TimestampMillisecondArray;
        let times = TimestampMillisecondArray::from(times.collect::<Vec<_>>()).with_timezone("UTC");
        RecordBatch::try_new(tick_schema(), vec![std::sync::Arc::new(times)]).unwrap()
    }

    fn tick_schema() -> SchemaRef {
        std::sync::Arc::new(arrow::datatypes::Schema::new(vec![crate::stream::field::<
            crate::stream::Timestamp,
        >(EVENT_TIME)]))
    }

    /// The event times in the committed files under `dir`, sorted.
    fn committed_times(dir: &Path) -> Vec<i64> {
        let mut out = Vec::new();
        for p in list_files(dir).unwrap_or_default() {
            let f = File::open(p).unwrap();
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
                .unwrap()
                .build()
                .unwrap();
            for b in reader {
                out.extend_from_slice(event_times(&b.unwrap()).unwrap());
            }
        }
        out.sort_unstable();
        out
    }

    /// A sink (partitions of `partition_ms`, commits every `commit`) fed at each step `i` the
    /// rows of event times `steps[i]` at logical time `i` s, whose directory is replaced by a
    /// file for the steps `broken` (every write fails), holding `hold_bytes`; returns the event
    /// times committed at the end and the rows it dropped, and checks that the writer counts as
    /// failing while the directory is broken and not after.
    fn through_an_outage(
        prefix: &str,
        steps: Vec<Vec<std::ops::Range<i64>>>,
        broken: std::ops::Range<usize>,
        (partition_ms, commit): (Millis, Duration),
        hold_bytes: usize,
    ) -> (Vec<i64>, u64) {
        use timely::dataflow::InputHandleVec;
        use timely::dataflow::operators::Input;
        use timely::dataflow::operators::probe::{Handle, Probe};
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(prefix);
        let moved = tmp.path().join("moved");
        let config = ParquetSinkConfig::new(&dir, prefix, partition_ms, Epoch::new(1).unwrap())
            .with_commit(commit)
            .with_hold(hold_bytes, Duration::from_millis(10));
        let d = dir.clone();
        timely::execute_directly(move |worker| {
            let mut input = InputHandleVec::<Time, Batch>::new();
            let probe = Handle::new();
            worker.dataflow(|scope| {
                scope
                    .input_from(&mut input)
                    .write_parquet(tick_schema(), config, 0, |e| panic!("{e}"))
                    .probe_with(&probe);
            });
            let run_for = |worker: &mut timely::worker::Worker, ms: u64| {
                let until = Instant::now() + Duration::from_millis(ms);
                while Instant::now() < until {
                    worker.step();
                    std::thread::sleep(Duration::from_millis(5));
                }
            };
            for (step, ranges) in steps.into_iter().enumerate() {
                if step == broken.start {
                    std::fs::rename(&d, &moved).unwrap();
                    std::fs::write(&d, b"not a directory").unwrap();
                }
                if step == broken.end {
                    let p = d.file_name().unwrap().to_str().unwrap();
                    assert_eq!(failing_writers().get(p), Some(&1), "the writer fails now");
                    std::fs::remove_file(&d).unwrap();
                    std::fs::rename(&moved, &d).unwrap();
                    // Until its next try succeeds, the sink does not know the disk is back:
                    // that try (the wait has doubled to at most 640 ms) comes first.
                    run_for(worker, 1500);
                }
                // One batch a step (it may span partitions).
                input.send(Batch::new(ticks(ranges.into_iter().flatten())));
                input.advance_to(((step + 1) * 1000) as Time);
                // Long enough for a commit, or for the tries of a broken disk to fail.
                run_for(worker, 300);
            }
            input.close();
            worker.step_while(|| !probe.done());
        });
        assert_eq!(failing_writers().get(prefix), Some(&0), "the writer writes again");
        (committed_times(&dir), dropped_rows().get(prefix).copied().unwrap_or(0))
    }

    /// Six steps of a second of rows each.
    fn seconds() -> Vec<Vec<std::ops::Range<i64>>> {
        (0..6).map(|s| std::iter::once(s * 1000..s * 1000 + 1000).collect()).collect()
    }

    /// Whether `times` are `expected`, each once; a short message when not.
    fn each_once(times: &[i64], expected: impl Iterator<Item = i64>) -> Result<(), String> {
        let expected: Vec<i64> = expected.collect();
        let missing: Vec<i64> =
            expected.iter().copied().filter(|t| times.binary_search(t).is_err()).collect();
        match (missing.first(), times.len() == expected.len()) {
            (Some(first), _) => Err(format!("{} rows missing, from {first}", missing.len())),
            (None, false) => Err(format!("{} rows for {} times: some twice", times.len(), expected.len())),
            (None, true) => Ok(()),
        }
    }

    #[test]
    fn a_disk_that_fails_for_a_while_loses_no_row_and_writes_none_twice() {
        let at_once = (60_000, Duration::from_millis(100));
        let (times, dropped) = through_an_outage("outage", seconds(), 2..4, at_once, DEFAULT_HOLD_BYTES);
        each_once(&times, 0..6000).unwrap();
        assert_eq!(dropped, 0);
        // Files open when the disk fails (their partition goes on, their commit is not due):
        // partition 2–4 s holds rows of steps 2 and 3 when step 3's rows of partition 4–6 s
        // (the same batch) find the directory gone.
        let steps = vec![
            vec![0..1000],
            vec![1000..2000],
            vec![2000..3000],
            vec![3000..3500, 4000..4500],
            vec![3500..4000],
            vec![4500..6000],
        ];
        let (times, dropped) =
            through_an_outage("open", steps, 3..5, (2000, Duration::from_secs(10)), DEFAULT_HOLD_BYTES);
        each_once(&times, 0..6000).unwrap();
        assert_eq!(dropped, 0);
    }

    #[test]
    fn beyond_the_bound_the_oldest_rows_held_are_dropped_and_counted() {
        // A bound of one byte: every row of the outage goes (those committed before stay).
        let at_once = (60_000, Duration::from_millis(100));
        let (times, dropped) = through_an_outage("bounded", seconds(), 2..4, at_once, 1);
        assert_eq!(dropped, 2000);
        each_once(&times, (0..2000).chain(4000..6000)).unwrap();
    }

    #[test]
    fn partition_names_carry_their_start() {
        let p = Path::new("x/alerts-20260614T200000Z-e3-w1-r4.parquet");
        let start = crate::time::parse_rfc3339("2026-06-14T20:00:00Z");
        assert_eq!(partition_start(p, "alerts"), start);
        assert_eq!(partition_start(p, "alert"), None);
        assert_eq!(partition_start(Path::new("notes.parquet"), "alerts"), None);
    }
}

//! The Parquet sink: files per stream per event-time partition per worker and run, never
//! half-written, committed every few seconds.
//!
//! Rows go to the partition of their `event_time`, or to the partition of the batch's logical
//! time when that is later (late rows arrive after their own partition has closed). A file is
//! written under a hidden temporary name (`.NAME.inprogress`) and renamed (after an fsync) to
//! `PREFIX-YYYYMMDDTHHMMSSZ-eE-wN[-TAG][-cK].parquet`, so a reader globbing `*.parquet` only ever
//! sees complete files. A file is committed when the frontier passes its partition's end, and
//! also once it has been open for the commit interval ([`ParquetSinkConfig::commit`], 5 s by
//! default): the partition goes on in a new piece (`-c1`, `-c2`, ...). So a SIGKILL loses at most
//! the rows of the last interval, not the partition's. A worker that panics commits what its
//! sinks hold while it unwinds, and [`request_flush`] makes every sink commit at once. `E` is
//! the run's epoch, so a restart into the same directory never replaces an earlier run's files.
//! While a file is open the sink holds a capability at its partition start: a probe on the
//! sink's output is done only when every file is closed.

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
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::error::{EngineError, Result};
use crate::ids::Epoch;
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
}

/// How long rows wait in an open file, by default: what a SIGKILL can lose.
pub const DEFAULT_COMMIT: Duration = Duration::from_secs(5);

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
        }
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

    /// Creates the directory and removes temporary files a killed run left behind.
    pub fn prepare(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| EngineError::io("creating", &self.dir, e))?;
        remove_unfinished(&self.dir)
    }
}

/// Removes the temporary files (`.NAME.inprogress`) a killed run left in `dir`: call it before
/// anything writes there.
pub fn remove_unfinished(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| EngineError::io("listing", dir, e))? {
        let path = entry.map_err(|e| EngineError::io("listing", dir, e))?.path();
        if path.extension().is_some_and(|x| x == "inprogress") {
            std::fs::remove_file(&path).map_err(|e| EngineError::io("removing", &path, e))?;
        }
    }
    Ok(())
}

struct OpenFile {
    writer: ArrowWriter<File>,
    tmp: PathBuf,
    path: PathBuf,
    opened: Instant,
    /// The file's prefix (what its committed rows are counted under) and rows so far.
    prefix: String,
    rows: u64,
    _cap: Capability<Time>,
}

/// Writes one stream's batches to Parquet files (one per partition).
struct PartitionWriter {
    config: ParquetSinkConfig,
    schema: SchemaRef,
    worker: usize,
    open: BTreeMap<Millis, OpenFile>,
    /// Pieces already committed, per partition still open to rows (names the next piece).
    pieces: BTreeMap<Millis, u32>,
    props: WriterProperties,
}

impl PartitionWriter {
    fn new(config: ParquetSinkConfig, schema: SchemaRef, worker: usize) -> Self {
        // Dictionary encoding pays only for columns with few distinct values; for coordinates,
        // scores and ids it costs a hash per value and saves nothing (measured: the interner was
        // the hottest function of `vigil bench`).
        let mut props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_dictionary_enabled(false);
        for field in schema.fields() {
            if config.dictionary.iter().any(|d| d == field.name()) {
                props = props.set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), true);
            }
        }
        let props = props.build();
        Self { config, schema, worker, open: BTreeMap::new(), pieces: BTreeMap::new(), props }
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
            let tmp = c.dir.join(format!(".{name}.inprogress"));
            let path = c.dir.join(name);
            let file = File::create(&tmp).map_err(|e| EngineError::io("creating", &tmp, e))?;
            let writer = ArrowWriter::try_new(file, self.schema.clone(), Some(self.props.clone())).map_err(
                |source| EngineError::Parquet { context: format!("opening {}", tmp.display()), source },
            )?;
            let at = (part.max(0) as Time).max(*cap.time());
            self.open.insert(
                part,
                OpenFile {
                    writer,
                    tmp,
                    path,
                    opened: Instant::now(),
                    prefix: c.prefix.clone(),
                    rows: 0,
                    _cap: cap.delayed(&at),
                },
            );
        }
        Ok(self.open.get_mut(&part).expect("inserted above"))
    }

    fn write(&mut self, batch_time: Time, data: &RecordBatch, cap: &Capability<Time>) -> Result<()> {
        if data.num_rows() == 0 {
            return Ok(());
        }
        let floor = self.partition_of(batch_time as Millis);
        let times = times_of(data, &self.config.time_column)?;
        let first = self.partition_of(times[0]).max(floor);
        if times.iter().all(|&t| self.partition_of(t).max(floor) == first) {
            return self.append(first, data, cap);
        }
        let parts: std::collections::BTreeSet<Millis> =
            times.iter().map(|&t| self.partition_of(t).max(floor)).collect();
        for part in parts {
            let mask: BooleanArray =
                times.iter().map(|&t| Some(self.partition_of(t).max(floor) == part)).collect();
            let rows = filter_record_batch(data, &mask).map_err(|source| EngineError::Arrow {
                context: format!("splitting {} rows by partition", self.config.prefix),
                source,
            })?;
            self.append(part, &rows, cap)?;
        }
        Ok(())
    }

    fn append(&mut self, part: Millis, rows: &RecordBatch, cap: &Capability<Time>) -> Result<()> {
        let f = self.file_for(part, cap)?;
        f.rows += rows.num_rows() as u64;
        f.writer.write(rows).map_err(|source| EngineError::Parquet {
            context: format!("writing {}", f.tmp.display()),
            source,
        })
    }

    /// Closes every partition that ends at or before `frontier` (all of them when `None`).
    fn close_until(&mut self, frontier: Option<Time>) -> Result<()> {
        let size = self.config.partition_ms;
        let done: Vec<Millis> = self
            .open
            .keys()
            .copied()
            .filter(|&p| frontier.is_none_or(|f| (p + size).max(0) as Time <= f))
            .collect();
        for p in done {
            self.pieces.remove(&p);
            let f = self.open.remove(&p).expect("key listed above");
            close_file(f)?;
        }
        Ok(())
    }

    /// Commits every file open for the commit interval or longer (all of them after
    /// [`request_flush`]); their partitions go on in new pieces. Returns how long until the
    /// next file is due, if any is open.
    fn commit_due(&mut self) -> Result<Option<Duration>> {
        let now = Instant::now();
        let flush = FLUSH.load(Ordering::Relaxed);
        let commit = self.config.commit;
        let due: Vec<Millis> = self
            .open
            .iter()
            .filter(|(_, f)| flush || now.duration_since(f.opened) >= commit)
            .map(|(&p, _)| p)
            .collect();
        for p in due {
            let f = self.open.remove(&p).expect("key listed above");
            *self.pieces.entry(p).or_default() += 1;
            close_file(f)?;
        }
        Ok(self.open.values().map(|f| commit.saturating_sub(now.duration_since(f.opened))).min())
    }
}

impl Drop for PartitionWriter {
    /// A sink dropped with files open commits them: a worker that unwinds (a panic elsewhere
    /// in its dataflows), or a dataflow dropped before it finished (a rule over its budget).
    /// A sink that finished has none open.
    fn drop(&mut self) {
        for (_, f) in std::mem::take(&mut self.open) {
            let tmp = f.tmp.clone();
            if let Err(e) = close_file(f) {
                tracing::error!("committing {} as its sink is dropped: {e}", tmp.display());
            }
        }
    }
}

fn close_file(f: OpenFile) -> Result<()> {
    let OpenFile { writer, tmp, path, prefix, rows, _cap, .. } = f;
    let file = writer
        .into_inner()
        .map_err(|source| EngineError::Parquet { context: format!("finishing {}", tmp.display()), source })?;
    file.sync_all().map_err(|e| EngineError::io("syncing", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| EngineError::io("renaming", &tmp, e))?;
    *COMMITTED.lock().unwrap_or_else(|p| p.into_inner()).entry(prefix).or_default() += rows;
    Ok(())
}

/// Rows committed to Parquet files since the process started, by file prefix (a stream's or a
/// rule's name): what a reader of the files finds, before retention and erasure remove any.
static COMMITTED: std::sync::Mutex<BTreeMap<String, u64>> = std::sync::Mutex::new(BTreeMap::new());

/// [`COMMITTED`]: rows in committed files, by prefix, counted as each file is renamed into place.
pub fn committed_rows() -> BTreeMap<String, u64> {
    COMMITTED.lock().unwrap_or_else(|p| p.into_inner()).clone()
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
    /// The returned stream carries nothing; probe it to know when every file is closed. Write
    /// errors are reported through `on_error` (the application stops the run: rows it goes on
    /// accepting could not be written).
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
                // The default capability is dropped here: open files hold their own.
                let mut writer = PartitionWriter::new(config, schema, worker);
                // Wakes the sink when its oldest open file is due, even with no input.
                let activator = scope.activator_for(info.address);
                let mut wake: Option<Instant> = None;
                move |(input, frontier), _output| {
                    input.for_each(|time, data| {
                        let Some(cap) = time.retain_least(0) else { return };
                        for b in data.iter() {
                            if let Err(e) = writer.write(*cap.time(), &b.rows, &cap) {
                                on_error(e);
                            }
                        }
                    });
                    let f = frontier.frontier().first().copied();
                    if let Err(e) = writer.close_until(f) {
                        on_error(e);
                    }
                    match writer.commit_due() {
                        Ok(Some(next)) => {
                            // One pending wake-up at a time, not one per batch.
                            let (now, delay) = (Instant::now(), next.max(Duration::from_millis(10)));
                            let at = now + delay;
                            if wake.is_none_or(|w| w <= now || w > at) {
                                activator.activate_after(delay);
                                wake = Some(at);
                            }
                        }
                        Ok(None) => {}
                        Err(e) => on_error(e),
                    }
                }
            },
        )
    }
}

/// Lists the complete Parquet files directly under `dir`, sorted by name.
pub fn list_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for entry in std::fs::read_dir(dir).map_err(|e| EngineError::io("listing", dir, e))? {
        let path = entry.map_err(|e| EngineError::io("listing", dir, e))?.path();
        if path.extension().is_some_and(|x| x == "parquet") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
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

    #[test]
    fn partition_names_carry_their_start() {
        let p = Path::new("x/alerts-20260614T200000Z-e3-w1-r4.parquet");
        let start = crate::time::parse_rfc3339("2026-06-14T20:00:00Z");
        assert_eq!(partition_start(p, "alerts"), start);
        assert_eq!(partition_start(p, "alert"), None);
        assert_eq!(partition_start(Path::new("notes.parquet"), "alerts"), None);
    }
}

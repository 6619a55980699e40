//! The Parquet sink: one file per stream per event-time partition per worker, never half-written.
//!
//! Rows go to the partition of their `event_time`, or to the partition of the batch's logical
//! time when that is later (late rows arrive after their own partition has closed). A partition
//! file is written under a hidden temporary name (`.NAME.inprogress`) and renamed to
//! `STREAM-YYYYMMDDTHHMMSSZ-wN.parquet` once the frontier has passed the partition's end, so a
//! reader globbing `*.parquet` only ever sees complete files. While a file is open the sink
//! holds a capability at its partition start: a probe on the sink's output is done only when
//! every file is closed.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::error::{EngineError, Result};
use crate::runtime::{EventBatch, Time};
use crate::schema::{StreamKind, event_times};
use crate::time::{Millis, file_stamp};

/// Where and how a stream is written.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ParquetSinkConfig {
    /// Root directory; each stream writes under `root/STREAM/`.
    pub root: PathBuf,
    /// Partition length in milliseconds of event time.
    pub partition_ms: Millis,
}

impl ParquetSinkConfig {
    /// Files under `root`, partitioned every `partition_ms`.
    pub fn new(root: impl Into<PathBuf>, partition_ms: Millis) -> Self {
        Self { root: root.into(), partition_ms: partition_ms.max(1) }
    }

    /// The directory of one stream.
    pub fn stream_dir(&self, stream: StreamKind) -> PathBuf {
        self.root.join(stream.name())
    }

    /// Creates the stream directories and removes temporary files a killed run left behind.
    pub fn prepare(&self, streams: &[StreamKind]) -> Result<()> {
        for &s in streams {
            let dir = self.stream_dir(s);
            std::fs::create_dir_all(&dir).map_err(|e| EngineError::io("creating", &dir, e))?;
            for entry in std::fs::read_dir(&dir).map_err(|e| EngineError::io("listing", &dir, e))? {
                let path = entry.map_err(|e| EngineError::io("listing", &dir, e))?.path();
                if path.extension().is_some_and(|x| x == "inprogress") {
                    std::fs::remove_file(&path).map_err(|e| EngineError::io("removing", &path, e))?;
                }
            }
        }
        Ok(())
    }
}

struct OpenFile {
    writer: ArrowWriter<File>,
    tmp: PathBuf,
    path: PathBuf,
    _cap: Capability<Time>,
}

/// Columns with few distinct values, which get dictionary encoding.
const LOW_CARDINALITY: [&str; 13] = [
    "camera_id",
    "class",
    "state",
    "zone",
    "zone_id",
    "level",
    "kind",
    "rule",
    "severity",
    "camera",
    "time_source",
    "stream",
    "line",
];

/// Writes one stream's batches to Parquet files (one per partition and worker).
struct PartitionWriter {
    config: ParquetSinkConfig,
    stream: StreamKind,
    worker: usize,
    open: BTreeMap<Millis, OpenFile>,
    props: WriterProperties,
}

impl PartitionWriter {
    fn new(config: ParquetSinkConfig, stream: StreamKind, worker: usize) -> Self {
        // Dictionary encoding pays only for columns with few distinct values; for coordinates,
        // scores and ids it costs a hash per value and saves nothing (measured: the interner was
        // the hottest function of `vigil bench`).
        let mut props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_dictionary_enabled(false);
        for field in stream.schema().fields() {
            if LOW_CARDINALITY.contains(&field.name().as_str()) {
                props = props.set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), true);
            }
        }
        let props = props.build();
        Self { config, stream, worker, open: BTreeMap::new(), props }
    }

    fn partition_of(&self, t: Millis) -> Millis {
        t.div_euclid(self.config.partition_ms) * self.config.partition_ms
    }

    fn file_for(&mut self, part: Millis, cap: &Capability<Time>) -> Result<&mut OpenFile> {
        if !self.open.contains_key(&part) {
            let dir = self.config.stream_dir(self.stream);
            let name = format!("{}-{}-w{}.parquet", self.stream.name(), file_stamp(part), self.worker);
            let tmp = dir.join(format!(".{name}.inprogress"));
            let path = dir.join(name);
            let file = File::create(&tmp).map_err(|e| EngineError::io("creating", &tmp, e))?;
            let writer = ArrowWriter::try_new(file, self.stream.schema(), Some(self.props.clone())).map_err(
                |source| EngineError::Parquet { context: format!("opening {}", tmp.display()), source },
            )?;
            let at = (part.max(0) as Time).max(*cap.time());
            self.open.insert(part, OpenFile { writer, tmp, path, _cap: cap.delayed(&at) });
        }
        Ok(self.open.get_mut(&part).expect("inserted above"))
    }

    fn write(&mut self, batch_time: Time, data: &RecordBatch, cap: &Capability<Time>) -> Result<()> {
        if data.num_rows() == 0 {
            return Ok(());
        }
        let floor = self.partition_of(batch_time as Millis);
        let times = event_times(data)?;
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
                context: format!("splitting {} rows by partition", self.stream.name()),
                source,
            })?;
            self.append(part, &rows, cap)?;
        }
        Ok(())
    }

    fn append(&mut self, part: Millis, rows: &RecordBatch, cap: &Capability<Time>) -> Result<()> {
        let f = self.file_for(part, cap)?;
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
            let f = self.open.remove(&p).expect("key listed above");
            close_file(f)?;
        }
        Ok(())
    }
}

fn close_file(f: OpenFile) -> Result<()> {
    let OpenFile { writer, tmp, path, _cap } = f;
    let file = writer
        .into_inner()
        .map_err(|source| EngineError::Parquet { context: format!("finishing {}", tmp.display()), source })?;
    file.sync_all().map_err(|e| EngineError::io("syncing", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| EngineError::io("renaming", &tmp, e))?;
    Ok(())
}

/// Extension trait: write a stream's batches to Parquet.
pub trait WriteParquet<'scope> {
    /// Writes every batch of `stream` to partitioned Parquet files; other batches pass by.
    /// The returned stream carries nothing; probe it to know when every file is closed.
    /// Write errors are reported through `on_error` and the batch is dropped, so a full disk
    /// stops the files, not the engine.
    fn write_parquet(
        self,
        stream: StreamKind,
        config: ParquetSinkConfig,
        worker: usize,
        on_error: impl FnMut(EngineError) + 'static,
    ) -> Stream<'scope, Time, Vec<EventBatch>>;
}

impl<'scope> WriteParquet<'scope> for Stream<'scope, Time, Vec<EventBatch>> {
    fn write_parquet(
        self,
        stream: StreamKind,
        config: ParquetSinkConfig,
        worker: usize,
        mut on_error: impl FnMut(EngineError) + 'static,
    ) -> Stream<'scope, Time, Vec<EventBatch>> {
        let name = format!("ParquetSink({})", stream.name());
        self.unary_frontier::<timely::container::CapacityContainerBuilder<Vec<EventBatch>>, _, _, _>(
            Pipeline,
            &name,
            move |_default_cap, _info| {
                // The default capability is dropped here: open files hold their own.
                let mut writer = PartitionWriter::new(config, stream, worker);
                move |(input, frontier), _output| {
                    input.for_each(|time, data| {
                        let Some(cap) = time.retain_least(0) else { return };
                        for b in data.iter().filter(|b| b.stream() == Some(stream)) {
                            if let Err(e) = writer.write(*cap.time(), &b.data, &cap) {
                                on_error(e);
                            }
                        }
                    });
                    let f = frontier.frontier().first().copied();
                    if let Err(e) = writer.close_until(f) {
                        on_error(e);
                    }
                }
            },
        )
    }
}

/// Lists the complete Parquet files of a stream under `root`, sorted by name.
pub fn list_files(root: &Path, stream: StreamKind) -> Result<Vec<PathBuf>> {
    let dir = root.join(stream.name());
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for entry in std::fs::read_dir(&dir).map_err(|e| EngineError::io("listing", &dir, e))? {
        let path = entry.map_err(|e| EngineError::io("listing", &dir, e))?.path();
        if path.extension().is_some_and(|x| x == "parquet") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Deletes complete partition files of `streams` whose partition started before `cutoff`
/// (event-time milliseconds): retention enforced on disk. Returns how many were deleted.
pub fn enforce_retention(root: &Path, streams: &[StreamKind], cutoff: Millis) -> Result<usize> {
    let mut deleted = 0;
    for &s in streams {
        for path in list_files(root, s)? {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            // NAME-YYYYMMDDTHHMMSSZ-wN.parquet
            let stamp = name.strip_prefix(s.name()).and_then(|r| r.get(1..17));
            let start = stamp.and_then(|st| chrono::NaiveDateTime::parse_from_str(st, "%Y%m%dT%H%M%SZ").ok());
            if let Some(start) = start
                && start.and_utc().timestamp_millis() < cutoff
            {
                std::fs::remove_file(&path).map_err(|e| EngineError::io("removing", &path, e))?;
                deleted += 1;
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_deletes_only_partitions_that_started_before_the_cutoff() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("alerts");
        std::fs::create_dir_all(&d).unwrap();
        let names = [
            "alerts-20260601T000000Z-w0.parquet",             // old: deleted
            "alerts-20260614T195900Z-w1.parquet",             // old: deleted
            "alerts-20260614T200000Z-w0.parquet",             // at the cutoff: kept
            ".alerts-20260101T000000Z-w0.parquet.inprogress", // not a complete file: not ours to judge
            "notes.parquet",                                  // not a partition name: kept
        ];
        for n in names {
            std::fs::write(d.join(n), b"x").unwrap();
        }
        let cutoff = crate::time::parse_rfc3339("2026-06-14T20:00:00Z").unwrap();
        let deleted = enforce_retention(dir.path(), &[StreamKind::Alerts], cutoff).unwrap();
        assert_eq!(deleted, 2);
        let mut left: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec![names[3], "alerts-20260614T200000Z-w0.parquet", "notes.parquet"]);
    }
}

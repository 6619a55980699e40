//! The lake: how a stream's Parquet files are laid out, committed, recovered and compacted, so
//! that readers see only complete files and a restart neither loses nor repeats a committed row.
//!
//! **Layout.** `<stream>/date=YYYY-MM-DD/hour=HH/<file>.parquet`: Hive-style partitions that
//! DuckDB, pyarrow and polars read as `date` and `hour` columns and prune on. Files being written
//! are hidden (`.NAME.inprogress`, which no `*.parquet` glob matches).
//!
//! **Commits.** Each writer (a sink on one worker: `w0`, `w1-r3`...) keeps one record,
//! `<stream>/_vigil_log/<writer>.json` ([`WriterState`]). A commit is, in order:
//! 1. the writer finishes its files under their hidden names and fsyncs them;
//! 2. it replaces its record (temporary file, fsync, rename, fsync of the directory) with one
//!    saying *through* `T` and listing the files as pending renames: from here the commit
//!    stands, and its id is the writer and the record's sequence number;
//! 3. it renames each file into place.
//!
//! `through` is a frontier: every row the writer received at a logical time before `T` is in a
//! committed file, and none at or after `T` is. [`recover`] finishes the renames of a commit a
//! crash interrupted (rolling forward is idempotent) and deletes hidden files no commit names,
//! so after a restart the visible files are exactly the committed ones. A writer that restarts
//! skips rows before its `through` ([`WriterState::skip_before`]), and a replayable input is
//! replayed from the smallest `through` of the run that was killed ([`resume_point`]): nothing
//! committed is written twice and nothing is missing. A writer whose input had closed before the
//! kill (every row committed) is held to skip the whole replay ([`hold_finished`]).
//!
//! This is a documented manifest rather than Delta Lake. `deltalake-core` 1.1 does build on our
//! arrow 59 and DataFusion 55, but: its commits are async object-store operations, which would
//! run inside timely's worker threads; the readers that matter here read the files directly
//! (DuckDB's delta extension downloads at run time, which this deployment forbids, and pyarrow
//! has no Delta reader), and a Delta compaction leaves the replaced files in place until a
//! VACUUM, which such readers would count twice; and what exactly-once needs is the frontier and
//! the keys below, which a Delta log would carry as opaque metadata anyway. A Delta log written
//! beside these records is the way to serve Delta readers, if a deployment needs them.
//!
//! The one window a globbing reader can notice is the few microseconds of step 3 (a commit's
//! files appear one after another) and of a compaction's swap ([`compact`]).

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::time::Millis;

/// The directory of the writers' commit records, inside a stream's directory.
pub const LOG_DIR: &str = "_vigil_log";

/// One writer's commit record; see the module documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterState {
    /// The run (epoch) that made the commit.
    pub epoch: u16,
    /// The commit's sequence number for this writer, across runs.
    pub commit: u64,
    /// Every row before this logical time is committed, none after; `None` once the writer's
    /// input closed and everything it received is committed (a clean end).
    pub through: Option<u64>,
    /// The commit's files, `(hidden name, final name)` relative to the stream's directory: the
    /// renames [`recover`] finishes if a crash interrupted them.
    pub pending: Vec<(String, String)>,
}

impl WriterState {
    /// The rows a restarted writer must skip: those before the `through` of a run that did not
    /// end cleanly (none after a clean end: the next run is a new one; all of them when the
    /// record says [`THROUGH_ALL`]).
    pub fn skip_before(&self) -> u64 {
        self.through.unwrap_or(0)
    }
}

/// The `through` of a writer that had committed every row when its run was killed (its input
/// had closed while other writers were still at work): resumed, it skips every row of the
/// replay. See [`hold_finished`].
pub const THROUGH_ALL: u64 = u64::MAX;

/// `date=YYYY-MM-DD/hour=HH` of the hour holding `t`.
pub fn hour_dir(t: Millis) -> PathBuf {
    match chrono::DateTime::from_timestamp_millis(t) {
        Some(dt) => {
            PathBuf::from(dt.format("date=%Y-%m-%d").to_string()).join(dt.format("hour=%H").to_string())
        }
        None => PathBuf::from("date=invalid").join(format!("ms={t}")),
    }
}

/// The start of the hour a `.../date=YYYY-MM-DD/hour=HH` directory holds.
pub fn hour_of_dir(dir: &Path) -> Option<Millis> {
    let hour = dir.file_name()?.to_str()?.strip_prefix("hour=")?.parse::<u32>().ok()?;
    let date = dir.parent()?.file_name()?.to_str()?.strip_prefix("date=")?;
    let day = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    Some(day.and_hms_opt(hour, 0, 0)?.and_utc().timestamp_millis())
}

fn state_path(dir: &Path, writer: &str) -> PathBuf {
    dir.join(LOG_DIR).join(format!("{writer}.json"))
}

/// Reads writer `writer`'s record under stream directory `dir`, if it has one.
pub fn read_state(dir: &Path, writer: &str) -> Result<Option<WriterState>> {
    let path = state_path(dir, writer);
    match std::fs::read(&path) {
        Ok(bytes) => parse_state(&path, &bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(EngineError::io("reading", &path, e)),
    }
}

fn parse_state(path: &Path, bytes: &[u8]) -> Result<WriterState> {
    let damaged = |what: String| {
        EngineError::user(
            format!("{}: {what}", path.display()),
            "records are replaced whole, so this one was edited or the disk damaged it; move it away \
             (the writer then starts afresh and its committed files stay) and check the disk",
        )
    };
    let state: WriterState =
        serde_json::from_slice(bytes).map_err(|e| damaged(format!("not a commit record ({e})")))?;
    // Recovery renames what a record names: only files inside the stream's directory.
    for name in state.pending.iter().flat_map(|(t, f)| [t, f]) {
        if !inside(name) {
            return Err(damaged(format!("names {name:?}, outside its stream's directory")));
        }
    }
    Ok(state)
}

/// A relative path with no `..`, root or prefix: a file under the stream's directory.
fn inside(name: &str) -> bool {
    let p = Path::new(name);
    !name.is_empty() && p.components().all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// Every writer's record under stream directory `dir`, by writer.
pub fn states(dir: &Path) -> Result<Vec<(String, WriterState)>> {
    let log = dir.join(LOG_DIR);
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&log) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(EngineError::io("listing", &log, e)),
    };
    for entry in entries {
        let path = entry.map_err(|e| EngineError::io("listing", &log, e))?.path();
        let Some(writer) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        if writer.starts_with('.') || writer.starts_with("compact-") {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(|e| EngineError::io("reading", &path, e))?;
        out.push((writer.to_owned(), parse_state(&path, &bytes)?));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Writes `bytes` to `path` whole or not at all: a temporary file, fsync, rename, fsync of the
/// directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| EngineError::io("creating", dir, e))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("record");
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).map_err(|e| EngineError::io("writing", &tmp, e))?;
    File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| EngineError::io("syncing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| EngineError::io("renaming", &tmp, e))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|f| f.sync_all()).map_err(|e| EngineError::io("syncing", dir, e))
}

/// Commits `state` for writer `writer` of stream directory `dir`: the record first, then the
/// renames of its pending files (see the module documentation). The files must be complete and
/// synced under their hidden names.
pub fn commit(dir: &Path, writer: &str, state: &WriterState) -> Result<()> {
    write_record(dir, writer, state)?;
    finish_renames(dir, &state.pending)
}

/// The first half of [`commit`]: writes the record. Once it is written the files are committed
/// (a restart's [`recover`] finishes the renames).
pub fn write_record(dir: &Path, writer: &str, state: &WriterState) -> Result<()> {
    let bytes = serde_json::to_vec(state).expect("a commit record serializes");
    write_atomic(&state_path(dir, writer), &bytes)
}

/// Renames each `(hidden, final)` pair whose hidden file still exists; syncs the directories.
pub fn finish_renames(dir: &Path, pending: &[(String, String)]) -> Result<()> {
    let mut synced: Vec<PathBuf> = Vec::new();
    for (tmp, fin) in pending {
        let (tmp, fin) = (dir.join(tmp), dir.join(fin));
        match std::fs::rename(&tmp, &fin) {
            Ok(()) => {}
            // Renamed already (a recovery running twice), or removed since by retention.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(EngineError::io("renaming", &tmp, e)),
        }
        let parent = fin.parent().unwrap_or(dir).to_path_buf();
        if !synced.contains(&parent) {
            sync_dir(&parent)?;
            synced.push(parent);
        }
    }
    Ok(())
}

/// What [`recover`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Renames of interrupted commits finished.
    pub renamed: usize,
    /// Hidden files of commits that never happened, deleted.
    pub discarded: usize,
}

/// Brings stream directory `dir` to its last commits after a crash: finishes their renames and
/// compactions, then deletes every hidden `.inprogress` file left (rows of no commit: a
/// replayable input writes them again). Call it before any writer of `dir` starts.
pub fn recover(dir: &Path) -> Result<Recovered> {
    let mut done = Recovered::default();
    if !dir.exists() {
        return Ok(done);
    }
    for (_, state) in states(dir)? {
        let before = state.pending.iter().filter(|(t, _)| dir.join(t).exists()).count();
        finish_renames(dir, &state.pending)?;
        done.renamed += before;
    }
    for intent in compaction_intents(dir)? {
        done.renamed += usize::from(finish_compaction(dir, &intent)?);
    }
    for path in walk(dir)? {
        // `.erasing`: an erasure's rewrite a crash cut short (the original is still in place).
        if path.extension().is_some_and(|x| x == "inprogress" || x == "erasing") {
            std::fs::remove_file(&path).map_err(|e| EngineError::io("removing", &path, e))?;
            done.discarded += 1;
        }
    }
    Ok(done)
}

/// The point a replayable input resumes from after a run of `epoch` was killed: the smallest
/// `through` of that run's writers that had not finished, over the stream directories `dirs`.
/// `None` when the run ended cleanly (every writer finished) or committed nothing.
pub fn resume_point(dirs: impl IntoIterator<Item = PathBuf>, epoch: u16) -> Result<Option<u64>> {
    let mut point: Option<u64> = None;
    for dir in dirs {
        for (_, s) in states(&dir)? {
            if s.epoch == epoch
                && let Some(t) = s.through.filter(|&t| t != THROUGH_ALL)
            {
                point = Some(point.map_or(t, |p| p.min(t)));
            }
        }
    }
    Ok(point)
}

/// Before a killed run of `epoch` is resumed: the records of its writers that had finished
/// (input closed, every row committed: `through` is `None`) are rewritten to say
/// [`THROUGH_ALL`]. Otherwise the resumed run would take them for writers of a run that ended
/// cleanly, which skip nothing, and they would write the whole replay a second time. Their
/// pending renames are kept for [`recover`]. Returns how many records were rewritten.
pub fn hold_finished(dirs: impl IntoIterator<Item = PathBuf>, epoch: u16) -> Result<usize> {
    let mut held = 0;
    for dir in dirs {
        for (writer, s) in states(&dir)? {
            if s.epoch == epoch && s.through.is_none() {
                let s = WriterState { through: Some(THROUGH_ALL), ..s };
                write_atomic(
                    &state_path(&dir, &writer),
                    &serde_json::to_vec(&s).expect("a commit record serializes"),
                )?;
                held += 1;
            }
        }
    }
    Ok(held)
}

/// The stream directories under output root `root` that have a commit log: `root/<stream>`
/// and `root/rules/<rule>`.
pub fn stream_dirs(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for parent in [root.to_path_buf(), root.join("rules")] {
        let Ok(entries) = std::fs::read_dir(&parent) else { continue };
        for entry in entries {
            let path = entry.map_err(|e| EngineError::io("listing", &parent, e))?.path();
            if path.join(LOG_DIR).is_dir() {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Every file under `dir`, depth first (the log directory excluded).
fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(EngineError::io("listing", &d, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| EngineError::io("listing", &d, e))?;
            let path = entry.path();
            if entry.file_type().map_err(|e| EngineError::io("listing", &d, e))?.is_dir() {
                if path.file_name().is_none_or(|n| n != LOG_DIR) {
                    dirs.push(path);
                }
            } else {
                out.push(path);
            }
        }
    }
    Ok(out)
}

/// The committed Parquet files under stream directory `dir` (every partition), sorted.
pub fn list_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> =
        walk(dir)?.into_iter().filter(|p| p.extension().is_some_and(|x| x == "parquet")).collect();
    out.sort();
    Ok(out)
}

/// Removes the partition directories under `dir` that no longer hold anything (after
/// retention or compaction emptied them).
pub fn remove_empty_partitions(dir: &Path) -> Result<()> {
    let Ok(days) = std::fs::read_dir(dir) else { return Ok(()) };
    for day in days.flatten().map(|d| d.path()) {
        if !day.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("date=")) {
            continue;
        }
        for hour in std::fs::read_dir(&day).into_iter().flatten().flatten().map(|d| d.path()) {
            // Fails (and is left) when not empty.
            let _ = std::fs::remove_dir(&hour);
        }
        let _ = std::fs::remove_dir(&day);
    }
    Ok(())
}

/// An exclusive lock on stream directory `dir` for rewriting its committed files (compaction,
/// erasure), held until the returned file is dropped; it waits for the holder, in this process
/// or another (`vigil plate erase` beside a running engine). Without it a compaction could read
/// a file just before an erasure rewrites it and put the erased rows back.
pub fn lock(dir: &Path) -> Result<File> {
    let log = dir.join(LOG_DIR);
    std::fs::create_dir_all(&log).map_err(|e| EngineError::io("creating", &log, e))?;
    let path = log.join(".lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| EngineError::io("opening", &path, e))?;
    file.lock().map_err(|e| EngineError::io("locking", &path, e))?;
    Ok(file)
}

/// A compaction under way: `sources` (relative paths) become `target`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compaction {
    /// The merged file's hidden name, relative to the stream's directory.
    pub hidden: String,
    /// Its final name.
    pub target: String,
    /// The files it replaces.
    pub sources: Vec<String>,
}

fn compaction_intents(dir: &Path) -> Result<Vec<(PathBuf, Compaction)>> {
    let log = dir.join(LOG_DIR);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&log).into_iter().flatten().flatten() {
        let path = entry.path();
        let is_intent = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("compact-") && n.ends_with(".json"));
        if is_intent {
            let bytes = std::fs::read(&path).map_err(|e| EngineError::io("reading", &path, e))?;
            let c: Compaction = serde_json::from_slice(&bytes)
                .ok()
                .filter(|c: &Compaction| {
                    [&c.hidden, &c.target].into_iter().chain(&c.sources).all(|n| inside(n))
                })
                .ok_or_else(|| {
                    EngineError::user(
                        format!("{}: not a compaction record of this directory", path.display()),
                        "move it away; the files it names are all still in place or already merged",
                    )
                })?;
            out.push((path, c));
        }
    }
    Ok(out)
}

/// Finishes a recorded compaction: the merged file into place, its sources deleted, the record
/// removed. Returns whether the merged file was renamed now.
fn finish_compaction(dir: &Path, (record, c): &(PathBuf, Compaction)) -> Result<bool> {
    let hidden = dir.join(&c.hidden);
    let renamed = hidden.exists();
    if renamed {
        finish_renames(dir, &[(c.hidden.clone(), c.target.clone())])?;
    }
    if dir.join(&c.target).exists() {
        for s in &c.sources {
            let p = dir.join(s);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(EngineError::io("removing", &p, e)),
            }
        }
    }
    std::fs::remove_file(record).map_err(|e| EngineError::io("removing", record, e))?;
    Ok(renamed)
}

/// Merges the Parquet files of one closed partition directory `part` of stream directory
/// `dir` into one file named `name` (with `props`), when it holds more than one. The merge is
/// recorded before the swap, so a crash at any point leaves either the sources or the merged
/// file once [`recover`] has run. Returns the number of files merged (0: nothing to do).
pub fn compact(dir: &Path, part: &Path, name: &str, props: &WriterProperties) -> Result<usize> {
    let _lock = lock(dir)?;
    let mut sources: Vec<PathBuf> = std::fs::read_dir(part)
        .map_err(|e| EngineError::io("listing", part, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    sources.sort();
    if sources.len() < 2 {
        return Ok(0);
    }
    let hidden = part.join(format!(".{name}.inprogress"));
    let target = part.join(name);
    let mut writer: Option<ArrowWriter<File>> = None;
    for s in &sources {
        let file = File::open(s).map_err(|e| EngineError::io("opening", s, e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.with_batch_size(64 * 1024).build())
            .map_err(|source| EngineError::Parquet { context: format!("reading {}", s.display()), source })?;
        for batch in reader {
            let batch: RecordBatch = batch.map_err(|source| EngineError::Arrow {
                context: format!("reading {}", s.display()),
                source,
            })?;
            if writer.is_none() {
                let f = File::create(&hidden).map_err(|e| EngineError::io("creating", &hidden, e))?;
                writer =
                    Some(ArrowWriter::try_new(f, batch.schema(), Some(props.clone())).map_err(|source| {
                        EngineError::Parquet { context: format!("opening {}", hidden.display()), source }
                    })?);
            }
            let w = writer.as_mut().expect("created above");
            w.write(&batch).map_err(|source| EngineError::Parquet {
                context: format!("writing {}", hidden.display()),
                source,
            })?;
        }
    }
    let Some(writer) = writer else { return Ok(0) };
    let file = writer.into_inner().map_err(|source| EngineError::Parquet {
        context: format!("finishing {}", hidden.display()),
        source,
    })?;
    file.sync_all().map_err(|e| EngineError::io("syncing", &hidden, e))?;
    let rel = |p: &Path| p.strip_prefix(dir).unwrap_or(p).to_string_lossy().into_owned();
    let c = Compaction {
        hidden: rel(&hidden),
        target: rel(&target),
        sources: sources.iter().filter(|s| **s != target).map(|s| rel(s)).collect(),
    };
    let record = dir.join(LOG_DIR).join(format!("compact-{}.json", name.trim_end_matches(".parquet")));
    write_atomic(&record, &serde_json::to_vec(&c).expect("a compaction record serializes"))?;
    finish_compaction(dir, &(record, c))?;
    Ok(sources.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hour_directories_name_their_hour() {
        let t = crate::time::parse_rfc3339("2026-06-14T20:17:03Z").unwrap();
        let d = hour_dir(t);
        assert_eq!(d, Path::new("date=2026-06-14/hour=20"));
        assert_eq!(
            hour_of_dir(&Path::new("x/detections").join(&d)),
            crate::time::parse_rfc3339("2026-06-14T20:00:00Z")
        );
        assert_eq!(hour_of_dir(Path::new("x/date=2026-06-14/minute=20")), None);
    }

    #[test]
    fn recovery_finishes_a_commit_cut_short_and_discards_what_no_commit_names() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let part = d.join("date=2026-06-14/hour=20");
        std::fs::create_dir_all(&part).unwrap();
        // A commit recorded, one of its two renames done; and a file of no commit.
        std::fs::write(part.join("a.parquet"), b"a").unwrap();
        std::fs::write(part.join(".b.parquet.inprogress"), b"b").unwrap();
        std::fs::write(part.join(".c.parquet.inprogress"), b"c").unwrap();
        let state = WriterState {
            epoch: 3,
            commit: 7,
            through: Some(1_000),
            pending: vec![
                (".a.parquet.inprogress".into(), "a.parquet".into()),
                (".b.parquet.inprogress".into(), "b.parquet".into()),
            ]
            .into_iter()
            .map(|(t, f): (String, String)| {
                (format!("date=2026-06-14/hour=20/{t}"), format!("date=2026-06-14/hour=20/{f}"))
            })
            .collect(),
        };
        write_atomic(&state_path(d, "w0"), &serde_json::to_vec(&state).unwrap()).unwrap();
        let r = recover(d).unwrap();
        assert_eq!(r, Recovered { renamed: 1, discarded: 1 });
        let names: Vec<String> = list_files(d)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.parquet", "b.parquet"]);
        // Idempotent.
        assert_eq!(recover(d).unwrap(), Recovered::default());
        assert_eq!(read_state(d, "w0").unwrap(), Some(state));
        assert_eq!(resume_point([d.to_path_buf()], 3).unwrap(), Some(1_000));
        assert_eq!(resume_point([d.to_path_buf()], 4).unwrap(), None);
    }

    #[test]
    fn a_writer_that_finished_in_a_killed_run_is_held_to_skip_the_whole_replay() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let record = |epoch, through| WriterState { epoch, commit: 4, through, pending: Vec::new() };
        // Run 3 was killed: w0 was at 1,000, w1 had committed everything; w2's record is from
        // run 2, which ended cleanly (run 3 was killed before w2's first commit).
        for (w, s) in [("w0", record(3, Some(1_000))), ("w1", record(3, None)), ("w2", record(2, None))] {
            write_atomic(&state_path(d, w), &serde_json::to_vec(&s).unwrap()).unwrap();
        }
        assert_eq!(hold_finished([d.to_path_buf()], 3).unwrap(), 1);
        let skip = |w| read_state(d, w).unwrap().unwrap().skip_before();
        assert_eq!((skip("w0"), skip("w1"), skip("w2")), (1_000, THROUGH_ALL, 0));
        // The held record is no resume point: the replay starts where w0 stopped.
        assert_eq!(resume_point([d.to_path_buf()], 3).unwrap(), Some(1_000));
        // Held once: a second call finds nothing to hold.
        assert_eq!(hold_finished([d.to_path_buf()], 3).unwrap(), 0);
    }

    #[test]
    fn a_damaged_record_is_an_error_naming_it_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(&state_path(dir.path(), "w1"), b"{\"epoch\": 1, \"comm").unwrap();
        let e = recover(dir.path()).unwrap_err().to_string();
        assert!(e.contains("_vigil_log/w1.json: not a commit record"), "{e}");
        assert!(e.contains("move it away"), "{e}");
    }

    proptest::proptest! {
        /// Whatever a record holds (damage, an edit), recovery answers with a record or an
        /// error naming it, and never touches a file outside the stream's directory.
        #[test]
        fn any_record_is_taken_or_refused_by_name(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..120),
            name in "[./a-z]{0,12}",
        ) {
            let dir = tempfile::tempdir().unwrap();
            let outside = dir.path().join("outside");
            std::fs::write(&outside, b"keep").unwrap();
            let stream = dir.path().join("s");
            for record in [
                bytes.clone(),
                serde_json::to_vec(&WriterState {
                    pending: vec![(format!("../{name}"), name.clone()), ("../outside".into(), name.clone())],
                    ..WriterState::default()
                })
                .unwrap(),
            ] {
                write_atomic(&state_path(&stream, "w0"), &record).unwrap();
                if let Err(e) = recover(&stream) {
                    proptest::prop_assert!(e.to_string().contains("w0.json"), "{e}");
                }
                proptest::prop_assert_eq!(std::fs::read(&outside).unwrap(), b"keep".to_vec());
            }
        }
    }

    #[test]
    fn compaction_merges_a_partition_and_a_crash_mid_swap_recovers_to_one_copy() {
        use arrow::array::Int64Array;
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let part = d.join("date=2026-06-14/hour=20");
        std::fs::create_dir_all(&part).unwrap();
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new(
            "v",
            arrow::datatypes::DataType::Int64,
            false,
        )]));
        for (i, name) in ["a.parquet", "b.parquet", "c.parquet"].iter().enumerate() {
            let f = File::create(part.join(name)).unwrap();
            let mut w = ArrowWriter::try_new(f, schema.clone(), None).unwrap();
            let v = Int64Array::from_iter_values((0..10).map(|x| x + 10 * i as i64));
            w.write(&RecordBatch::try_new(schema.clone(), vec![Arc::new(v)]).unwrap()).unwrap();
            w.close().unwrap();
        }
        let props = WriterProperties::builder().build();
        assert_eq!(compact(d, &part, "all.parquet", &props).unwrap(), 3);
        let files = list_files(d).unwrap();
        assert_eq!(files, [part.join("all.parquet")]);
        let rows: usize = ParquetRecordBatchReaderBuilder::try_new(File::open(&files[0]).unwrap())
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap().num_rows())
            .sum();
        assert_eq!(rows, 30);
        assert_eq!(compact(d, &part, "all2.parquet", &props).unwrap(), 0, "one file is left alone");

        // A crash after the record, before the swap: recovery finishes it.
        std::fs::rename(part.join("all.parquet"), part.join(".m.parquet.inprogress")).unwrap();
        std::fs::write(part.join("x.parquet"), b"old").unwrap();
        let c = Compaction {
            hidden: "date=2026-06-14/hour=20/.m.parquet.inprogress".into(),
            target: "date=2026-06-14/hour=20/m.parquet".into(),
            sources: vec!["date=2026-06-14/hour=20/x.parquet".into()],
        };
        write_atomic(&d.join(LOG_DIR).join("compact-m.json"), &serde_json::to_vec(&c).unwrap()).unwrap();
        assert_eq!(recover(d).unwrap().renamed, 1);
        assert_eq!(list_files(d).unwrap(), [part.join("m.parquet")]);
        assert!(compaction_intents(d).unwrap().is_empty());
    }
}

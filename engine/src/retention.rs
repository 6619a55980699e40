//! Retention on disk: files older than their stream's retention period are deleted while the
//! engine runs, each deletion logged with what was deleted and why.
//!
//! Every file vigil writes carries its time in its name (a partition's start, a snapshot's
//! capture time). [`sweep`] deletes, under a directory, the files whose time is before a cutoff
//! (the watermark less the period of the data's [`Class`]); the engine calls it on a schedule,
//! so a service that runs for months keeps its promise about deletion every minute, not only
//! when it stops. A partition is deleted as soon as it *started* before the cutoff: the period
//! is a maximum, so its last rows go up to one partition early rather than late.

use std::path::{Path, PathBuf};

use crate::error::{EngineError, Result};
use crate::stream::Class;
use crate::time::{Millis, rfc3339};

/// What a sweep deleted: the file and the time its name carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deleted {
    /// The file.
    pub path: PathBuf,
    /// The time in its name (a partition's start, a snapshot's capture time).
    pub time: Millis,
}

/// Deletes the files under `dir` (and its subdirectories when `recursive`) whose time, as
/// `time_of` reads it from the path, is before `cutoff`; files whose names carry no time are
/// left alone. Each deletion is logged (target `vigil::retention`) as data of `class` kept for
/// `period_ms`.
pub fn sweep(
    dir: &Path,
    recursive: bool,
    cutoff: Millis,
    class: Class,
    period_ms: Millis,
    time_of: &dyn Fn(&Path) -> Option<Millis>,
) -> Result<Vec<Deleted>> {
    let mut deleted = Vec::new();
    if !dir.exists() {
        return Ok(deleted);
    }
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| EngineError::io("listing", &d, e))? {
            let path = entry.map_err(|e| EngineError::io("listing", &d, e))?.path();
            if path.is_dir() {
                if recursive {
                    dirs.push(path);
                }
                continue;
            }
            let Some(time) = time_of(&path) else { continue };
            if time >= cutoff {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                // Another sweep (or a person) got there first.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(EngineError::io("removing", &path, e)),
            }
            tracing::info!(
                target: "vigil::retention",
                "deleted {}: {} data is kept {}, and this file's data is from {} (before {})",
                path.display(),
                class.name(),
                human_period(period_ms),
                rfc3339(time),
                rfc3339(cutoff),
            );
            deleted.push(Deleted { path, time });
        }
    }
    if recursive && !deleted.is_empty() {
        // A lake partition whose every file went goes too.
        crate::lake::remove_empty_partitions(dir)?;
    }
    deleted.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(deleted)
}

/// A period for people: `90 days`, `6 h`, `15 min`, `30 s`.
pub fn human_period(ms: Millis) -> String {
    match ms {
        ms if ms % 86_400_000 == 0 => format!("{} days", ms / 86_400_000),
        ms if ms % 3_600_000 == 0 => format!("{} h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{} min", ms / 60_000),
        ms => format!("{} s", ms as f64 / 1000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parquet_sink::partition_start;

    #[test]
    fn partitions_that_started_before_the_cutoff_are_deleted_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("alerts");
        std::fs::create_dir_all(&d).unwrap();
        let names = [
            "alerts-20260601T000000Z-e1-w0.parquet",             // old: deleted
            "alerts-20260614T195900Z-e2-w1.parquet",             // old: deleted
            "alerts-20260614T200000Z-e2-w0.parquet",             // at the cutoff: kept
            ".alerts-20260101T000000Z-e1-w0.parquet.inprogress", // not a complete file: not ours to judge
            "notes.parquet",                                     // not a partition name: kept
        ];
        for n in names {
            std::fs::write(d.join(n), b"x").unwrap();
        }
        let cutoff = crate::time::parse_rfc3339("2026-06-14T20:00:00Z").unwrap();
        let time_of = |p: &Path| {
            p.extension().is_some_and(|x| x == "parquet").then(|| partition_start(p, "alerts")).flatten()
        };
        let deleted = sweep(dir.path(), true, cutoff, Class::Record, 86_400_000, &time_of).unwrap();
        assert_eq!(deleted.len(), 2);
        let mut left: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec![names[3], names[2], "notes.parquet"]);
        assert_eq!(human_period(6 * 3_600_000), "6 h");
        assert_eq!(human_period(90 * 86_400_000), "90 days");
    }
}

//! Requests about one plate: everything held about it, and the erasure of what is not evidence.
//!
//! Law 09-08 gives a person the right to know what is held about them and to have it erased.
//! For a plate, `SHOW PLATE '12345-ب-6'` (psql, admins and auditors) lists its reads, its hits
//! and the decisions on them, and the exports that included it, in memory and in Parquet;
//! `ERASE PLATE '…'` erases the reads that are not evidence for a confirmed hit, everywhere
//! they live: the rows kept in memory for queries and backfill, every Parquet file of
//! `plate_reads`, of rules' outputs that carry the plate, the hits and alerts of unconfirmed
//! hits, and the watchlist join (an [`ErasedReads`] row takes each read out at once, so an
//! entry added later cannot find it). A confirmed hit and its read stay: they are evidence.
//! Rows still in a Parquet file being written are erased by a second pass once the sinks have
//! committed. Both requests are audited, with the plate as a digest.
//!
//! A read belongs to a plate when its canonical text is the plate, or its raw text reads as
//! the plate (with OCR confusions undone, as the watchlist join takes it).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use arrow::array::{Array, BooleanArray, RecordBatch, StringArray, UInt64Array};
use vigil_engine::erase::{count, erase, select};
use vigil_engine::share::Retained;
use vigil_engine::stream::StreamDef;
use vigil_engine::time::Millis;
use vigil_operators::hits::{HitDecisions, Hits};
use vigil_operators::plate::PlateReads;
use vigil_operators::watchlist::{ErasedReadRows, ErasedReads, Watchlist};

/// The watchlist entries the last run's start loaded from its configuration
/// (`reference/watchlist-e<epoch>.parquet`; none before any run).
fn config_watchlist(out: &Path) -> Result<RecordBatch, String> {
    let epoch = |name: &str| {
        name.strip_prefix(Watchlist::NAME)?.strip_prefix("-e")?.strip_suffix(".parquet")?.parse::<u64>().ok()
    };
    let last = std::fs::read_dir(out.join("reference"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((epoch(e.file_name().to_str()?)?, e.path())))
        .max();
    let Some((_, path)) = last else { return Ok(RecordBatch::new_empty(Watchlist::info().schema.clone())) };
    crate::replay::read_whole(&path).map_err(|e| format!("{e:#}"))
}

/// A plate's request: what is held and what to erase.
pub struct PlateRequest {
    plate: String,
    /// Rows after this time are not the request's (the plate is still read after it).
    until: Millis,
    /// Event ids of the reads behind confirmed hits.
    evidence: BTreeSet<u64>,
    /// Confirmed hits.
    confirmed: BTreeSet<String>,
    /// Every hit about the plate.
    hits: BTreeSet<String>,
}

fn strings<'a>(b: &'a RecordBatch, name: &str) -> Option<&'a StringArray> {
    b.column_by_name(name)?.as_any().downcast_ref::<StringArray>()
}

fn ids(b: &RecordBatch) -> Option<&UInt64Array> {
    b.column_by_name("event_id")?.as_any().downcast_ref::<UInt64Array>()
}

impl PlateRequest {
    /// The request for `value` (any reading of a plate), with what `retained` and the files
    /// under `out` hold about its hits.
    /// Rows with an `event_time` after `until` are left alone.
    pub fn new(
        value: &str,
        until: Millis,
        retained: &Mutex<Retained>,
        out: Option<&Path>,
    ) -> Result<Self, String> {
        let plate =
            vigil_operators::plate::normalize(value).map_err(|e| format!("{e}; fix: give the plate"))?;
        let mut r = Self {
            plate,
            until,
            evidence: BTreeSet::new(),
            confirmed: BTreeSet::new(),
            hits: BTreeSet::new(),
        };
        for b in r.hit_rows(retained, out)? {
            let (Some(id), Some(status), Some(events)) =
                (strings(&b, "hit_id"), strings(&b, "status"), ids(&b))
            else {
                continue;
            };
            for i in 0..b.num_rows() {
                r.hits.insert(id.value(i).to_owned());
                if status.value(i) == "confirmed" {
                    r.confirmed.insert(id.value(i).to_owned());
                    r.evidence.insert(events.value(i));
                }
            }
        }
        Ok(r)
    }

    /// The canonical plate.
    pub fn plate(&self) -> &str {
        &self.plate
    }

    fn hit_rows(&self, retained: &Mutex<Retained>, out: Option<&Path>) -> Result<Vec<RecordBatch>, String> {
        let about = |b: &RecordBatch| self.hits_about(b);
        let mut rows: Vec<RecordBatch> = retained
            .lock()
            .expect("retained")
            .batches(Hits::NAME)
            .iter()
            .filter_map(|b| about(b).and_then(|m| arrow::compute::filter_record_batch(b, &m).ok()))
            .collect();
        if let Some(out) = out {
            rows.extend(select(&out.join(Hits::NAME), &about).map_err(|e| e.to_string())?);
        }
        Ok(rows)
    }

    /// Rows of `hits` about the plate (read as it, or listing it).
    fn hits_about(&self, b: &RecordBatch) -> Option<BooleanArray> {
        let (plate, listed) = (strings(b, "plate")?, strings(b, "listed_plate")?);
        Some(
            (0..b.num_rows())
                .map(|i| Some(plate.value(i) == self.plate || listed.value(i) == self.plate))
                .collect(),
        )
    }

    /// Rows that are reads of the plate: a `plate` or `plate_raw` column that reads as it.
    fn reads_of(&self, b: &RecordBatch) -> Option<BooleanArray> {
        if b.column_by_name("hit_id").is_some() {
            return None;
        }
        let (plate, raw) = (strings(b, "plate"), strings(b, "plate_raw"));
        if plate.is_none() && raw.is_none() {
            return None;
        }
        fn at(c: Option<&StringArray>, i: usize) -> Option<&str> {
            c.filter(|c| c.is_valid(i)).map(|c| c.value(i))
        }
        Some(
            (0..b.num_rows())
                .map(|i| {
                    let canonical = at(plate, i).filter(|p| *p == self.plate).is_some();
                    let read = || {
                        at(raw, i)
                            .and_then(|r| vigil_operators::plate_match::reading(r, None))
                            .is_some_and(|(p, _)| p.to_string() == self.plate)
                    };
                    Some(canonical || read())
                })
                .collect(),
        )
    }

    /// What an erasure takes from a batch of any stream, up to the request's time.
    fn erasable(&self, b: &RecordBatch) -> Option<BooleanArray> {
        let mask = self.erasable_any_time(b)?;
        let Some(t) = b.column_by_name(vigil_engine::stream::EVENT_TIME) else { return Some(mask) };
        let t = t.as_any().downcast_ref::<arrow::array::TimestampMillisecondArray>()?;
        Some((0..b.num_rows()).map(|i| Some(mask.value(i) && t.value(i) <= self.until)).collect())
    }

    /// Reads of the plate that are not evidence, rows of its unconfirmed hits, and the alerts
    /// of those hits.
    fn erasable_any_time(&self, b: &RecordBatch) -> Option<BooleanArray> {
        if let (Some(about), Some(id)) = (self.hits_about(b), strings(b, "hit_id")) {
            let hit = |i: usize| self.hits.contains(id.value(i)) && !self.confirmed.contains(id.value(i));
            return Some((0..b.num_rows()).map(|i| Some(hit(i) && about.value(i))).collect());
        }
        if let Some(reads) = self.reads_of(b) {
            let events = ids(b);
            let evidence = |i: usize| events.is_some_and(|e| self.evidence.contains(&e.value(i)));
            return Some((0..b.num_rows()).map(|i| Some(reads.value(i) && !evidence(i))).collect());
        }
        alerts_of(b, self.hits.iter().filter(|h| !self.confirmed.contains(*h)))
    }

    /// What is held about the plate: rows of (what, where, rows, detail).
    pub fn show(&self, retained: &Mutex<Retained>, out: Option<&Path>) -> Result<Vec<[String; 4]>, String> {
        let mut rows = Vec::new();
        let reads = |b: &RecordBatch| self.reads_of(b);
        let memory = retained.lock().expect("retained").batches(PlateReads::NAME);
        let n: usize = memory.iter().filter_map(reads).map(|m| m.true_count()).sum();
        let kept = memory
            .iter()
            .filter_map(|b| Some((reads(b)?, ids(b)?.clone())))
            .map(|(m, e)| (0..m.len()).filter(|&i| m.value(i) && self.evidence.contains(&e.value(i))).count())
            .sum::<usize>();
        rows.push(row("reads", "memory", n, format!("{kept} are evidence for confirmed hits")));
        for (place, dir) in files(out) {
            let n = count(&dir, &reads).map_err(|e| e.to_string())?;
            if n > 0 || place == "parquet plate_reads" {
                rows.push(row("reads", &place, n, String::new()));
            }
        }
        rows.push(row(
            "hits",
            "memory and parquet",
            self.hits.len(),
            format!("{} confirmed (evidence, kept)", self.confirmed.len()),
        ));
        let decisions = retained.lock().expect("retained").table_changes(HitDecisions::NAME);
        let n = decisions
            .iter()
            .filter(|(_, b)| b.diff > 0)
            .filter_map(|(_, b)| strings(&b.rows, "hit_id").cloned())
            .map(|ids| ids.iter().flatten().filter(|id| self.hits.contains(*id)).count())
            .sum::<usize>();
        rows.push(row(
            "decisions",
            "hit_decisions",
            n,
            "by hit_id: SELECT * FROM hits WHERE hit_id = …".into(),
        ));
        rows.push(self.listed(retained, out)?);
        rows.extend(self.exports(out)?);
        Ok(rows)
    }

    /// The watchlist entries listing the plate now, with their legal bases. An erasure
    /// request leaves them: each has its own legal basis and authority, and only `DELETE FROM
    /// watchlist` (recorded in the audit log) takes one off.
    fn listed(&self, retained: &Mutex<Retained>, out: Option<&Path>) -> Result<[String; 4], String> {
        let changes = retained.lock().expect("retained").table_changes(Watchlist::NAME);
        let bases = match (changes.is_empty(), out) {
            // A stopped run (`vigil plate`): the configuration's entries its last start loaded,
            // less those deleted from psql since, and the entries added from psql.
            (true, Some(out)) => {
                let journal =
                    super::control::journal::read(out, Watchlist::info()).map_err(|e| e.to_string())?;
                let mut bases = self.bases(&config_watchlist(out)?);
                for gone in self.bases(&journal.deleted) {
                    if let Some(at) = bases.iter().position(|b| *b == gone) {
                        bases.remove(at);
                    }
                }
                bases.extend(self.bases(&journal.live));
                bases
            }
            _ => vigil_engine::share::consolidate(Watchlist::info(), &changes)
                .map_err(|e| e.to_string())?
                .map_or_else(Vec::new, |b| self.bases(&b.rows)),
        };
        let detail = match bases.is_empty() {
            true => "not listed".to_owned(),
            false => format!("legal basis: {}; only DELETE FROM watchlist takes it off", bases.join("; ")),
        };
        Ok(row("watchlist", "memory and catalog", bases.len(), detail))
    }

    /// The legal bases of `rows` (the watchlist's) that list the plate.
    fn bases(&self, rows: &RecordBatch) -> Vec<String> {
        let (Some(plate), Some(basis)) = (strings(rows, "plate"), strings(rows, "legal_basis")) else {
            return Vec::new();
        };
        (0..rows.num_rows())
            .filter(|&i| plate.value(i) == self.plate)
            .map(|i| basis.value(i).to_owned())
            .collect()
    }

    /// Rows about the plate in any stream: its reads, its hits, and its hits' alerts.
    fn mentions(&self, b: &RecordBatch) -> Option<BooleanArray> {
        if let Some(m) = self.hits_about(b).or_else(|| self.reads_of(b)) {
            return Some(m);
        }
        alerts_of(b, self.hits.iter())
    }

    /// The exports the audit log records that hold the plate, one row each: an export that was
    /// not pseudonymized is opened where it was written and its rows about the plate counted.
    /// Exports live outside the lake (they were handed to a data team), so an erasure does not
    /// reach them: these rows say whom to tell. A pseudonymized export holds tokens under a
    /// key that was not kept, so no one can find the plate in it; one row counts those.
    fn exports(&self, out: Option<&Path>) -> Result<Vec<[String; 4]>, String> {
        let Some(out) = out else { return Ok(Vec::new()) };
        let records =
            vigil_engine::audit::records_of(&super::audit_path(out), "export").map_err(|e| e.to_string())?;
        let mentions = |b: &RecordBatch| self.mentions(b);
        // A stream without a plate or an alert's text cannot hold the plate, exported or not.
        let catalog = crate::derive::city_catalog().map_err(|e| e.to_string())?;
        let may_hold = |stream: &str| {
            catalog.get(stream).is_none_or(|i| {
                ["plate", "plate_raw", "listed_plate", "message"]
                    .iter()
                    .any(|c| i.schema.field_with_name(c).is_ok())
            })
        };
        let mut rows = Vec::new();
        let mut tokens = 0;
        for r in &records {
            let detail = |k: &str| r.detail.get(k).map_or("?", String::as_str);
            if detail("pseudonymized") == "true" {
                tokens += 1;
                continue;
            }
            if !may_hold(&r.object) {
                continue;
            }
            let dir = Path::new(detail("out"));
            let place =
                format!("export {} by {}, {} to {}", dir.display(), r.actor, detail("from"), detail("to"));
            let purpose = detail("purpose");
            let found = match dir.is_dir() {
                true => count(dir, &mentions).map_err(|e| e.to_string()),
                false => Err("no longer there".to_owned()),
            };
            match found {
                Ok(0) => {}
                Ok(n) => {
                    let said =
                        format!("not pseudonymized, for: {purpose}; outside the lake: tell its recipients");
                    rows.push(row("exports", &place, n, said));
                }
                Err(e) => {
                    let said = format!(
                        "not pseudonymized, for: {purpose}; cannot be checked ({e}): ask its recipients"
                    );
                    rows.push(row("exports", &place, 0, said));
                }
            }
        }
        if rows.is_empty() {
            let said = format!("none identifiable holds it ({tokens} pseudonymized: tokens only)");
            rows.push(row("exports", "audit log", 0, said));
        } else if tokens > 0 {
            rows.push(row("exports", "audit log", 0, format!("{tokens} pseudonymized: tokens only")));
        }
        Ok(rows)
    }

    /// Erases what is not evidence; returns what was erased where, and the reads' event ids (to
    /// take them out of the join).
    pub fn erase(
        &self,
        retained: &Mutex<Retained>,
        out: Option<&Path>,
    ) -> Result<(Vec<[String; 4]>, Vec<u64>), String> {
        let erasable = |b: &RecordBatch| self.erasable(b);
        let mut rows = Vec::new();
        let mut events: Vec<u64> = Vec::new();
        {
            let mut r = retained.lock().expect("retained");
            for b in r.batches(PlateReads::NAME) {
                if let (Some(m), Some(e)) = (erasable(&b), ids(&b)) {
                    events.extend((0..m.len()).filter(|&i| m.value(i)).map(|i| e.value(i)));
                }
            }
            let names: Vec<&'static str> = r.rows().keys().copied().collect();
            let mut n = 0;
            for name in names {
                n += r.erase(name, &erasable).map_err(|e| e.to_string())?;
            }
            rows.push(row("erased", "memory", n, "reads, unconfirmed hits and their alerts".into()));
        }
        for (place, dir) in files(out) {
            for b in select(&dir, &erasable).map_err(|e| e.to_string())? {
                if let Some(e) = ids(&b).filter(|_| b.column_by_name("hit_id").is_none()) {
                    events.extend(e.values().iter().copied());
                }
            }
            let done = erase(&dir, &erasable).map_err(|e| e.to_string())?;
            if done.rows > 0 {
                let detail = format!("{} files rewritten, {} deleted", done.rewritten, done.deleted);
                rows.push(row("erased", &place, done.rows, detail));
            }
        }
        rows.push(row(
            "kept",
            "memory and parquet",
            self.evidence.len(),
            format!("reads that are evidence for {} confirmed hits", self.confirmed.len()),
        ));
        rows.push(self.listed(retained, out)?);
        rows.extend(self.exports(out)?);
        events.sort_unstable();
        events.dedup();
        Ok((rows, events))
    }
}

/// The watchlist alerts of a batch (its `kind` and `message` columns) that name one of `hits`.
fn alerts_of<'h>(b: &RecordBatch, hits: impl Iterator<Item = &'h String>) -> Option<BooleanArray> {
    let (kind, message) = (strings(b, "kind")?, strings(b, "message")?);
    let needles: Vec<String> = hits.map(|h| format!("hit {h};")).collect();
    let named = |m: &str| needles.iter().any(|n| m.contains(n.as_str()));
    Some((0..b.num_rows()).map(|i| Some(kind.value(i) == "watchlist" && named(message.value(i)))).collect())
}

/// A request's answer in one line, for the audit log: `what place: rows; …`.
pub fn summary(rows: &[[String; 4]]) -> String {
    rows.iter().map(|r| format!("{} {}: {}", r[0], r[1], r[2])).collect::<Vec<_>>().join("; ")
}

fn row(what: &str, place: &str, n: usize, detail: String) -> [String; 4] {
    [what.to_owned(), place.to_owned(), n.to_string(), detail]
}

/// The Parquet directories that may hold a plate: every stream's and every rule's.
fn files(out: Option<&Path>) -> Vec<(String, PathBuf)> {
    let Some(out) = out else { return Vec::new() };
    let mut dirs = Vec::new();
    for (prefix, root) in [("parquet", out.to_path_buf()), ("parquet rules/", out.join("rules"))] {
        let Ok(entries) = std::fs::read_dir(&root) else { continue };
        let mut found: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect();
        found.sort();
        for d in found {
            let name = d.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            // The catalog holds the watchlist's journal and the rules: a listed plate is not a
            // read, and an erasure request does not take it off the watchlist (see `listed`).
            if ["rules", "snapshots", "audit", "reference", "catalog"].contains(&name.as_str())
                && prefix == "parquet"
            {
                continue;
            }
            let place =
                if prefix == "parquet" { format!("parquet {name}") } else { format!("{prefix}{name}") };
            dirs.push((place, d));
        }
    }
    dirs
}

/// The `erased_reads` rows that take `events` out of the join at `now`, until the reads would
/// have left it (`lookback_ms`).
pub fn erased_reads(events: &[u64], now: Millis, lookback_ms: Millis) -> RecordBatch {
    let mut b = ErasedReadRows::default();
    for &event_id in events {
        b.push(&vigil_operators::watchlist::ErasedRead {
            event_id,
            erased_at: now,
            expires_at: now + lookback_ms + 1_000,
        });
    }
    b.finish()
}

/// The table [`erased_reads`] fills.
pub fn erased_reads_table() -> &'static vigil_engine::stream::StreamInfo {
    ErasedReads::info()
}

//! The control loop: what happens once per tick, whatever drives the city.
//!
//! Each [`Control::tick`]: watchlist entries that come due are added, rules created or dropped
//! from psql take effect (their dataflows added or removed), ingest sends what it holds and
//! the watermark advances, retention runs when due ([`Sweeper`]), and the status counters move.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow::array::{RecordBatch, TimestampMillisecondArray};
use vigil_engine::audit::AuditLog;
use vigil_engine::catalog::Catalog;
use vigil_engine::ingest::Ingest;
use vigil_engine::parquet_sink::partition_start;
use vigil_engine::retention::{human_period, sweep};
use vigil_engine::stream::Class;
use vigil_engine::stream::{StreamDef, StreamInfo};
use vigil_engine::time::Millis;
use vigil_operators::watchlist::{self, WatchEntry, Watchlist};
use vigil_sql::registry::{Control as RuleControl, Registry, file_name, rule_class};

use super::Progress;
use super::subject::{self, PlateRequest};
use crate::settings::{RetentionSettings, Settings};

/// What a [`Control`] is made of.
pub struct ControlParts {
    /// The ingest side.
    pub ingest: Ingest,
    /// Rules to add or drop, from the registry.
    pub rules: std::sync::mpsc::Receiver<RuleControl>,
    /// The rule catalog (for rules' retention classes).
    pub registry: Arc<Registry>,
    /// Watchlist entries (each is added at its `valid_from` and retracted at its `expires_at`).
    pub watch: Vec<WatchEntry>,
    /// Retention on disk, when there is output.
    pub retention: Option<Sweeper>,
    /// Status counters.
    pub progress: Arc<Progress>,
    /// The clock's start.
    pub start_ms: Millis,
    /// Where operators and sinks report; a fatal error stops the run.
    pub errors: vigil_engine::error::ErrorSink,
    /// Where watchlist changes are recorded.
    pub audit: Option<Arc<AuditLog>>,
    /// The output directory, when there is one.
    pub out: Option<PathBuf>,
    /// How long a read stays in the watchlist join.
    pub lookback_ms: Millis,
    /// How long a row may wait in an open Parquet file.
    pub commit: std::time::Duration,
}

/// The control loop's state; see the module documentation.
pub struct Control {
    ingest: Ingest,
    rules: std::sync::mpsc::Receiver<RuleControl>,
    registry: Arc<Registry>,
    /// Reference-table changes to make, in time order: (when, table, one row, +1 in or -1
    /// expired).
    /// Keyed by (when, diff, a sequence number): a million-entry watchlist schedules in
    /// O(n log n), and the next change is the first key.
    schedule: BTreeMap<(Millis, i64, u64), (&'static StreamInfo, RecordBatch)>,
    /// The next sequence number of `schedule`.
    scheduled: u64,
    /// The watchlist entries of the configuration and its CSV, scheduled at the first tick.
    watch: Vec<WatchEntry>,
    retention: Option<Sweeper>,
    progress: Arc<Progress>,
    start_ms: Millis,
    errors: vigil_engine::error::ErrorSink,
    audit: Option<Arc<AuditLog>>,
    out: Option<PathBuf>,
    lookback_ms: Millis,
    commit: std::time::Duration,
    /// Erasures to run again once the Parquet files open at the request are committed: (when,
    /// the plate).
    erasing: Vec<(std::time::Instant, String, Millis)>,
    /// `SHOW PLATE` requests being answered (each on a thread of its own; at most
    /// [`LISTINGS`]).
    listing: Arc<std::sync::atomic::AtomicUsize>,
    /// When `/metrics` was last rendered.
    metrics_at: std::time::Instant,
}

impl Control {
    /// A control loop over `parts`.
    pub fn new(parts: ControlParts) -> Self {
        Self {
            ingest: parts.ingest,
            rules: parts.rules,
            registry: parts.registry,
            schedule: BTreeMap::new(),
            scheduled: 0,
            watch: parts.watch,
            retention: parts.retention,
            progress: parts.progress,
            start_ms: parts.start_ms,
            errors: parts.errors,
            audit: parts.audit,
            out: parts.out,
            lookback_ms: parts.lookback_ms,
            commit: parts.commit,
            erasing: Vec::new(),
            listing: Arc::default(),
            metrics_at: std::time::Instant::now() - std::time::Duration::from_secs(1),
        }
    }

    /// The ingest side, to hand it rows.
    pub fn ingest(&mut self) -> &mut Ingest {
        &mut self.ingest
    }

    /// The cameras whose health `/metrics` reports.
    pub fn watch_cameras(&self, cameras: Vec<Arc<crate::camera::Health>>) {
        *self.progress.cameras.lock().unwrap_or_else(|p| p.into_inner()) = cameras;
    }

    /// Makes the reference-table changes due by `now`: rows whose `valid_from` has come, and
    /// the retraction of rows whose `expires_at` has (an expired watchlist entry stops matching
    /// by itself).
    pub fn push_due_watch(&mut self, now: Millis) -> anyhow::Result<()> {
        if !self.watch.is_empty() {
            // Not journaled: the configuration holds its entries, and one taken out of it must
            // not come back from the journal at the next start.
            let rows = watchlist::to_batch(&std::mem::take(&mut self.watch));
            self.audit_change(Watchlist::info(), &rows, 1, "config");
            // Their plates leave the run's reference files at the first sweep after they expire.
            if let (Some(at), Some(s)) = (journal::earliest_expiry(&rows), self.retention.as_mut()) {
                s.journal_expiring(Watchlist::info(), at);
            }
            return self.apply_table(Watchlist::info(), &rows, 1, now);
        }
        let mut expired = Vec::new();
        while self.schedule.first_key_value().is_some_and(|((t, _, _), _)| *t <= now) {
            let Some(((at, diff, _), (info, row))) = self.schedule.pop_first() else { break };
            if diff < 0 {
                expired.push((info, row.clone()));
            }
            // At the row's own time: it matches from valid_from and not from expires_at, to the
            // millisecond, whatever the tick.
            self.ingest.push_table_untyped_at(info, row, diff, at)?;
        }
        self.audit_rows(&expired, "system", "expire");
        Ok(())
    }

    /// A change of a reference table by `actor` at `now`: inserted rows go in at their
    /// `valid_from` (now, or later) and are scheduled out at their `expires_at` when the table
    /// has one; deleted rows go out now, and their scheduled expiry is dropped. `reply` hears
    /// of it once it is journaled: psql acknowledges a change that survives a kill. A journal
    /// that cannot be written (a full or read-only disk) refuses the change, and the engine
    /// goes on; only a change the dataflow cannot take is an error of the run.
    fn change_table(
        &mut self,
        (info, rows, diff, actor): (&'static StreamInfo, &RecordBatch, i64, &str),
        now: Millis,
        reply: &std::sync::mpsc::Sender<Result<(), String>>,
    ) -> anyhow::Result<()> {
        if let Err(e) = self.keep_change((info, rows, diff, actor)) {
            let _ = reply.send(Err(e));
            return Ok(());
        }
        let done = self.apply_table(info, rows, diff, now);
        let _ = reply.send(done.as_ref().map(|_| ()).map_err(|e| format!("{e:#}")));
        done
    }

    /// Journals a change and then audits it; the cause (also logged) when it could not be
    /// journaled: then it is refused, and nothing records it as made.
    fn keep_change(
        &mut self,
        (info, rows, diff, actor): (&'static StreamInfo, &RecordBatch, i64, &str),
    ) -> Result<(), String> {
        if let Err(e) = self.journal(info, rows, diff) {
            tracing::error!(
                "{}: a change by {actor} was refused, as it could not be journaled: {e:#}; fix: mend the disk of the output, and the user runs it again",
                info.name
            );
            return Err(format!("it could not be journaled: {e:#}"));
        }
        self.audit_change(info, rows, diff, actor);
        Ok(())
    }

    fn audit_change(&self, info: &'static StreamInfo, rows: &RecordBatch, diff: i64, actor: &str) {
        let audited: Vec<_> = (0..rows.num_rows()).map(|i| (info, rows.slice(i, 1))).collect();
        self.audit_rows(&audited, actor, if diff > 0 { "add" } else { "remove" });
    }

    /// Journals a change of a kept table ([`journal`]); a deleted entry leaves the disk at the
    /// next sweep, an added one at the first sweep after it expires.
    fn journal(&mut self, info: &'static StreamInfo, rows: &RecordBatch, diff: i64) -> anyhow::Result<()> {
        let Some(out) = self.out.as_ref().filter(|_| journal::kept(info)) else { return Ok(()) };
        journal::append(out, info, rows, diff)?;
        let due = if diff < 0 { Some(Millis::MIN) } else { journal::earliest_expiry(rows) };
        if let (Some(at), Some(s)) = (due, self.retention.as_mut()) {
            s.journal_expiring(info, at);
        }
        Ok(())
    }

    /// Takes up the table changes users made in earlier runs ([`journal`]), without auditing
    /// them again: the watchlist entries analysts added (and did not delete) come back, and the
    /// rows `pending` keeps of the others (the decisions `hits` does not show yet). Returns the
    /// rows taken up, by table.
    pub fn restore_tables(
        &mut self,
        tables: &[&'static StreamInfo],
        now: Millis,
        pending: impl Fn(&'static StreamInfo, RecordBatch) -> anyhow::Result<RecordBatch>,
    ) -> anyhow::Result<Vec<(&'static str, usize)>> {
        let Some(out) = self.out.clone() else { return Ok(Vec::new()) };
        let mut restored = Vec::new();
        for info in tables {
            let rows = pending(info, journal::live_rows(&out, info)?)?;
            if rows.num_rows() > 0 {
                restored.push((info.name, rows.num_rows()));
                self.apply_table(info, &rows, 1, now)?;
            }
        }
        Ok(restored)
    }

    fn apply_table(
        &mut self,
        info: &'static StreamInfo,
        rows: &RecordBatch,
        diff: i64,
        now: Millis,
    ) -> anyhow::Result<()> {
        let times = |name: &str| {
            rows.column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<TimestampMillisecondArray>().cloned())
        };
        // A row goes in at its `valid_from`, or a decision at its `decided_at` (one taken up
        // from the journal by a resumed simulation comes in at its time in the replay, not at
        // the replay's start), and never before `now`.
        let (from, until) = (times("valid_from").or_else(|| times("decided_at")), times("expires_at"));
        for i in 0..rows.num_rows() {
            let row = rows.slice(i, 1);
            if diff > 0 {
                let at = from.as_ref().map_or(now, |f| f.value(i)).max(now);
                self.schedule_change(at, info, row.clone(), 1);
                if let Some(u) = &until {
                    self.schedule_change(u.value(i), info, row, -1);
                }
            } else {
                self.ingest.push_table_untyped_at(info, row, -1, now)?;
            }
        }
        if diff < 0 {
            // The deleted rows' scheduled expiries go too, in one pass over the schedule.
            let deleted: Vec<RecordBatch> = (0..rows.num_rows()).map(|i| rows.slice(i, 1)).collect();
            self.schedule.retain(|_, (inf, r)| !(std::ptr::eq(*inf, info) && deleted.contains(r)));
        }
        self.push_due_watch(now)
    }

    fn schedule_change(&mut self, at: Millis, info: &'static StreamInfo, row: RecordBatch, diff: i64) {
        self.scheduled += 1;
        self.schedule.insert((at, diff, self.scheduled), (info, row));
    }

    /// Records `<table>.<what>` for one-row batches: a record per row, by its `added_by` when
    /// adding and it has one, the object a digest of its key (a plate is personal data). Past
    /// [`AUDIT_EACH`] rows (a large CSV, a day's expiries), one record per table holds the count
    /// and a digest of all the keys, so a bulk change costs one synced write, not one per row.
    fn audit_rows(&self, rows: &[(&'static StreamInfo, RecordBatch)], actor: &str, what: &str) {
        let Some(a) = &self.audit else { return };
        let text = |row: &RecordBatch, name: &str| {
            let c = row.column_by_name(name)?;
            let c = arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8).ok()?;
            c.as_any().downcast_ref::<arrow::array::StringArray>().map(|s| s.value(0).to_owned())
        };
        let key = |info: &StreamInfo, row: &RecordBatch| {
            info.keys.first().and_then(|k| text(row, k)).unwrap_or_default()
        };
        if rows.len() > AUDIT_EACH {
            let mut by_table: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
            for (info, row) in rows {
                by_table.entry(info.name).or_default().push(key(info, row));
            }
            for (table, mut keys) in by_table {
                keys.sort();
                let (n, digest) = (keys.len().to_string(), a.digest(&keys.join("\n")));
                a.record(actor, &format!("{table}.{what}"), &format!("{n} rows"), &[("keys", &digest)]);
            }
            return;
        }
        for (info, row) in rows {
            let by = if what == "add" { text(row, "added_by").filter(|b| !b.is_empty()) } else { None };
            let basis = text(row, "legal_basis").map(|b| a.digest(&b)).unwrap_or_default();
            a.record(
                by.as_deref().unwrap_or(actor),
                &format!("{}.{what}", info.name),
                &a.digest(&key(info, row)),
                &[("legal_basis", &basis)],
            );
        }
    }

    /// An erasure request about one data subject (see [`super::subject`]): the rows of its
    /// answer. It runs on the tick: it changes what the sinks and the join hold. (Listing is
    /// [`show_subject`], off the tick.)
    fn erase_subject(
        &mut self,
        kind: &str,
        value: &str,
        user: &str,
        now: Millis,
    ) -> Result<Vec<[String; 4]>, String> {
        let retained = self.ingest.retained();
        plate_kind(kind)?;
        let request = PlateRequest::new(value, now, &retained, self.out.as_deref())?;
        let digest = self.audit.as_ref().map(|a| a.digest(request.plate())).unwrap_or_default();
        // Rows in open files are erased by a second pass once the sinks have committed them.
        vigil_engine::parquet_sink::request_flush();
        let (rows, events) = request.erase(&retained, self.out.as_deref())?;
        self.take_out_of_join(&events, now).map_err(|e| e.to_string())?;
        if let Some(a) = &self.audit {
            a.record(user, "plate.erase", &digest, &[("erased", &subject::summary(&rows))]);
        }
        let again = std::time::Instant::now() + 2 * self.commit + std::time::Duration::from_secs(1);
        self.erasing.push((again, request.plate().to_owned(), now));
        Ok(rows)
    }

    /// Erased reads leave the watchlist join at `now` (an `erased_reads` row each).
    fn take_out_of_join(&mut self, events: &[u64], now: Millis) -> vigil_engine::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let erased = subject::erased_reads(events, now, self.lookback_ms);
        self.ingest.push_table_untyped_at(subject::erased_reads_table(), erased, 1, now)
    }

    /// The second pass of erasures whose files have been committed since.
    fn erase_again(&mut self, now: Millis) {
        let due = std::time::Instant::now();
        let (ready, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.erasing).into_iter().partition(|(t, ..)| *t <= due);
        self.erasing = waiting;
        for (_, plate, until) in ready {
            let retained = self.ingest.retained();
            let pass = PlateRequest::new(&plate, until, &retained, self.out.as_deref())
                .and_then(|r| r.erase(&retained, self.out.as_deref()));
            match pass {
                Ok((_, events)) => {
                    if let Err(e) = self.take_out_of_join(&events, now) {
                        tracing::error!("erasure: {e}");
                    }
                }
                Err(e) => {
                    tracing::error!("the second pass of an erasure failed (run ERASE PLATE again): {e}")
                }
            }
        }
    }

    /// The end of a tick at ingest time `now`; see the module documentation.
    pub fn tick(&mut self, now: Millis) -> anyhow::Result<()> {
        // A sink that could not write what it held as its input ended (or whose record could
        // not be read at start) stops the run. A disk that cannot be written while the run goes
        // on does not: the sinks hold their rows and try again (`parquet_sink`).
        if let Some(cause) = self.errors.fatal_cause() {
            anyhow::bail!("the run stopped: {cause}; rows accepted before it were written");
        }
        self.registry.enforce();
        self.registry.set_now(now);
        while let Ok(c) = self.rules.try_recv() {
            match c {
                RuleControl::Install { id, name, build, backfill_ms } => {
                    let late_by = self.ingest.install(id, build, backfill_ms)?;
                    if late_by > 0 {
                        tracing::warn!(
                            "rule {name}: backfill starts {late_by} ms later than asked: older events were dropped to keep within the memory budget (retention.memory_mb)"
                        );
                    }
                }
                RuleControl::Remove { id } => self.ingest.remove(id)?,
                RuleControl::Kill { id } => self.ingest.kill(id)?,
                RuleControl::Table { info, rows, diff, user, reply } => {
                    self.change_table((info, &rows, diff, &user), now, &reply)?
                }
                // Listing only reads (memory under its lock, files the sinks have closed): it is
                // answered on a thread of its own, so a long plate history does not stall the
                // event path. An erasure changes what the sinks and the join hold: on the tick.
                // At most LISTINGS at once: each reads every file that may hold the plate, and
                // more would take the machine's disk and cores from the cameras.
                RuleControl::Subject { kind, value, erase: false, user, reply } => {
                    // Given back when the thread ends, however it ends (or fails to start).
                    struct Slot(Arc<std::sync::atomic::AtomicUsize>);
                    impl Drop for Slot {
                        fn drop(&mut self) {
                            self.0.fetch_sub(1, Ordering::AcqRel);
                        }
                    }
                    self.listing.fetch_add(1, Ordering::AcqRel);
                    let slot = Slot(Arc::clone(&self.listing));
                    if slot.0.load(Ordering::Acquire) > LISTINGS {
                        let busy = format!(
                            "{LISTINGS} plate requests are being answered; fix: ask again when one has ended (each reads every file that may hold the plate)"
                        );
                        let _ = reply.send(Err(busy));
                        continue;
                    }
                    let (retained, out, audit) =
                        (self.ingest.retained(), self.out.clone(), self.audit.clone());
                    let spawned = std::thread::Builder::new().name("vigil-subject".into()).spawn(move || {
                        let answer = show_subject(
                            &kind,
                            &value,
                            &user,
                            now,
                            &retained,
                            out.as_deref(),
                            audit.as_deref(),
                        );
                        drop(slot);
                        let _ = reply.send(answer);
                    });
                    if let Err(e) = spawned {
                        tracing::error!("a plate request could not start: {e}");
                    }
                }
                RuleControl::Subject { kind, value, erase: true, user, reply } => {
                    let answer = self.erase_subject(&kind, &value, &user, now);
                    // The asker may have gone (a timeout): the request was still carried out.
                    let _ = reply.send(answer);
                }
            }
        }
        self.erase_again(now);
        let watermark = self.ingest.tick(now)?;
        if let Some(s) = self.retention.as_mut() {
            let deleted = s.maybe_sweep(watermark, &self.registry, &self.ingest);
            self.progress.deleted.fetch_add(deleted as u64, Ordering::Relaxed);
        }
        let stats = self.ingest.stats();
        self.progress.rows.store(stats.total_rows(), Ordering::Relaxed);
        self.progress.late.store(stats.total_late(), Ordering::Relaxed);
        self.progress.sim_ms.store((now - self.start_ms).max(0) as u64, Ordering::Relaxed);
        self.progress.clock_ms.store(now, Ordering::Relaxed);
        if self.metrics_at.elapsed() >= std::time::Duration::from_secs(1) {
            self.metrics_at = std::time::Instant::now();
            self.render_metrics(now, watermark);
        }
        Ok(())
    }

    /// Renders `/metrics` from the counters as they stand.
    fn render_metrics(&self, now: Millis, watermark: Millis) {
        let stats = self.ingest.stats();
        let snapshot = crate::metrics::Snapshot {
            rows: stats.rows.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            late: stats.late_rows.clone(),
            parquet_rows: vigil_engine::parquet_sink::committed_rows(),
            parquet_dropped: vigil_engine::parquet_sink::dropped_rows(),
            parquet_failing: vigil_engine::parquet_sink::failing_writers(),
            retained_bytes: self.ingest.retained().lock().map(|r| r.bytes() as u64).unwrap_or(0),
            heap: crate::metrics::heap(),
            watermark_lag_ms: now - watermark,
            rules: self
                .registry
                .list()
                .iter()
                .map(|e| {
                    let f = e.out.frontier();
                    // Before its first progress the rule has no lag to speak of; after its input
                    // ended, none either.
                    let lag = (f > 0 && f < u64::MAX).then(|| (watermark - f as Millis).max(0));
                    (e.rule.name.clone(), e.out.emitted(), e.out.rows_held(), e.out.failed().is_some(), lag)
                })
                .collect(),
            cameras: self
                .progress
                .cameras
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|h| {
                    let status = h.status();
                    crate::metrics::Camera {
                        id: h.camera,
                        name: h.name.clone(),
                        up: status.state.name() == "streaming",
                        frames_in: h.frames_in.load(Ordering::Relaxed),
                        frames_out: h.frames_out.load(Ordering::Relaxed),
                        frames_dropped: h.frames_dropped.load(Ordering::Relaxed),
                        decode_errors: h.decode_errors.load(Ordering::Relaxed),
                        reconnects: h.reconnects.load(Ordering::Relaxed),
                        lag_ms: status.lag_ms,
                    }
                })
                .collect(),
            errors: self.progress.errors.load(Ordering::Relaxed),
            deleted_files: self.progress.deleted.load(Ordering::Relaxed),
        };
        *self.progress.metrics.lock().unwrap_or_else(|p| p.into_inner()) = crate::metrics::render(&snapshot);
    }

    /// Ends the loop: a last sweep; returns the ingest side (to finish) and the files deleted.
    pub fn finish(mut self) -> anyhow::Result<(Ingest, u64)> {
        // Table changes sent in the last tick are kept for the next run: journaled (and
        // audited), though this run's dataflow is closing, and then acknowledged.
        while let Ok(c) = self.rules.try_recv() {
            if let RuleControl::Table { info, rows, diff, user, reply } = c {
                let _ = reply.send(self.keep_change((info, &rows, diff, &user)));
            }
        }
        if let Some(s) = self.retention.as_mut() {
            let w = self.ingest.watermark();
            // The last sweep trims what the last changes left (after any trim still running).
            s.finish_trim();
            let deleted = s.sweep(w, &self.registry, &self.ingest);
            self.progress.deleted.fetch_add(deleted as u64, Ordering::Relaxed);
            s.finish_trim();
            s.finish_compaction();
        }
        Ok((self.ingest, self.progress.deleted.load(Ordering::Relaxed)))
    }
}

/// The configuration's watchlist entries a restart loads, against the journal of what users
/// changed from psql in earlier runs (`out`'s [`journal`]): an entry a user deleted stays
/// deleted, with a message to take it out of the configuration too; and an entry the journal
/// also holds as added (runs before 2026-12-06 journaled the configuration's entries as well)
/// is taken out of the journal, so that it is loaded once, and not at all once the
/// configuration drops it. Entries are the same when their plate, legal basis and expiry are
/// (`valid_from` follows the start of each run).
pub fn config_watch(out: &Path, watch: Vec<WatchEntry>) -> anyhow::Result<Vec<WatchEntry>> {
    use arrow::array::AsArray;
    let info = Watchlist::info();
    let journal::Table { live, deleted } = journal::read(out, info)?;
    type Key = (String, String, Millis);
    let key = |b: &RecordBatch, i: usize| -> Option<Key> {
        let text = |c: &str| b.column_by_name(c).map(|c| c.as_string::<i32>().value(i).to_owned());
        let expires =
            b.column_by_name("expires_at")?.as_primitive::<arrow::datatypes::TimestampMillisecondType>();
        Some((text("plate")?, text("legal_basis")?, expires.value(i)))
    };
    // The configuration's entries by key (a national list loads from CSV: no scan per row).
    let mut configured: std::collections::HashMap<Key, Vec<usize>> = std::collections::HashMap::new();
    for (i, e) in watch.iter().enumerate() {
        configured.entry((e.plate.clone(), e.legal_basis.clone(), e.expires_at)).or_default().push(i);
    }
    let mut gone = vec![false; watch.len()];
    for k in (0..deleted.num_rows()).filter_map(|i| key(&deleted, i)) {
        if let Some(at) = configured.get(&k).and_then(|v| v.iter().copied().find(|&j| !gone[j])) {
            gone[at] = true;
            eprintln!(
                "watchlist: the configuration's entry for {} (legal basis {}) was deleted from psql in an \
                 earlier run and stays deleted; fix: take it out of the configuration",
                watch[at].plate, watch[at].legal_basis
            );
        }
    }
    let doubled: Vec<u32> = (0..live.num_rows())
        .filter(|&i| key(&live, i).is_some_and(|k| configured.contains_key(&k)))
        .map(|i| i as u32)
        .collect();
    if !doubled.is_empty() {
        let rows = arrow::compute::take_record_batch(&live, &arrow::array::UInt32Array::from(doubled))?;
        journal::append(out, info, &rows, -1)?;
    }
    Ok(watch.into_iter().zip(gone).filter_map(|(e, gone)| (!gone).then_some(e)).collect())
}

/// The journal of the changes users make to reference tables (the watchlist), so that they
/// survive a restart: `<out>/catalog/tables/<table>/<seq>.parquet`, one file per change with its
/// rows and a `vigil_diff` column (1 added, -1 deleted), written whole (temporary file, fsync,
/// rename) before the change takes effect. At start the journal is folded into the rows still
/// live, which go back in (with their own `valid_from` and `expires_at`).
///
/// Retention trims it while the engine runs ([`trim`], started by a sweep on a thread of its
/// own): once an entry has expired, or many changes have piled up, the live rows are written as
/// one snapshot (`<seq>.snapshot.parquet`, numbered as the last change it holds and sorted after
/// it; a reader starts there, ignoring what is before it) and the files before it are deleted.
/// Changes journaled meanwhile are numbered after the snapshot, so they are neither in it nor
/// deleted. A kill between the snapshot and the deletions leaves files a reader skips, deleted
/// at the next trim; an expired entry's plate leaves the disk at the first sweep after it
/// expires, as soon as that sweep's trim has run.
pub mod journal {
    use std::collections::{HashMap, HashSet, VecDeque};
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use anyhow::Context;
    use arrow::array::{Array, BooleanArray, Int64Array, RecordBatch, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use vigil_engine::stream::{StreamDef, StreamInfo};
    use vigil_engine::time::Millis;

    const DIFF: &str = "vigil_diff";
    const SNAPSHOT: &str = "snapshot";
    /// Changes after which the journal is folded into a snapshot even if nothing expired.
    pub const FOLD_AFTER: usize = 256;

    /// The tables journaled: the watchlist and the hit decisions (zones come from the
    /// configuration). A decision is in `hits` once that stream commits, seconds later; the
    /// journal holds it from the moment psql is told it was taken.
    pub fn kept(info: &StreamInfo) -> bool {
        info.name == vigil_operators::watchlist::Watchlist::NAME
            || info.name == vigil_operators::hits::HitDecisions::NAME
    }

    fn dir(out: &Path, info: &StreamInfo) -> PathBuf {
        out.join("catalog").join("tables").join(info.name)
    }

    /// One file of the journal.
    struct JournalFile {
        seq: u64,
        path: PathBuf,
        /// Holds every live row: a reader starts here.
        snapshot: bool,
    }

    /// The journal's files by sequence number. Files of other names (a temporary file a kill
    /// left) are not the journal's.
    fn files(dir: &Path) -> Vec<JournalFile> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        let mut files: Vec<JournalFile> = entries
            .flatten()
            .filter_map(|e| {
                let path = e.path();
                let name = path.file_name()?.to_str()?.strip_suffix(".parquet")?.to_owned();
                let (seq, snapshot) = match name.split_once('.') {
                    Some((seq, SNAPSHOT)) => (seq.parse().ok()?, true),
                    Some(_) => return None,
                    None => (name.parse().ok()?, false),
                };
                Some(JournalFile { seq, path, snapshot })
            })
            .collect();
        // A snapshot carries the number of the last change it holds, and comes after it.
        files.sort_by_key(|f| (f.seq, f.snapshot));
        files
    }

    /// Writes `parts` (rows, each part with its diff) as one file.
    fn write(dir: &Path, seq: u64, snapshot: bool, parts: &[(&RecordBatch, i64)]) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let Some((first, _)) = parts.first() else { return Ok(()) };
        let mut fields: Vec<Field> = first.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(DIFF, DataType::Int64, false));
        let schema = Arc::new(Schema::new(fields));
        let batches = parts
            .iter()
            .map(|(rows, diff)| {
                let mut columns = rows.columns().to_vec();
                columns.push(Arc::new(Int64Array::from(vec![*diff; rows.num_rows()])));
                RecordBatch::try_new(Arc::clone(&schema), columns)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let name =
            if snapshot { format!("{seq:08}.{SNAPSHOT}.parquet") } else { format!("{seq:08}.parquet") };
        let mut bytes = Vec::new();
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut bytes, schema, None)?;
        for b in &batches {
            w.write(b)?;
        }
        w.close()?;
        vigil_engine::lake::write_atomic(&dir.join(name), &bytes)?;
        Ok(())
    }

    /// Appends one change.
    pub fn append(out: &Path, info: &StreamInfo, rows: &RecordBatch, diff: i64) -> anyhow::Result<()> {
        let dir = dir(out, info);
        let seq = files(&dir).last().map_or(0, |f| f.seq + 1);
        write(&dir, seq, false, &[(rows, diff)])
    }

    /// The rows added and not deleted since, in the order they were added.
    pub fn live_rows(out: &Path, info: &StreamInfo) -> anyhow::Result<RecordBatch> {
        Ok(fold(&dir(out, info), info)?.live)
    }

    /// What users left of a table: the rows they added and did not delete, and the rows they
    /// deleted that the journal never added (the configuration's: they stay deleted at a
    /// restart, though the configuration still lists them).
    pub struct Table {
        pub live: RecordBatch,
        pub deleted: RecordBatch,
    }

    /// The journal folded (see [`Table`]).
    pub fn read(out: &Path, info: &StreamInfo) -> anyhow::Result<Table> {
        let Folded { live, deleted, .. } = fold(&dir(out, info), info)?;
        Ok(Table { live, deleted })
    }

    /// The journal read: the rows live and deleted ([`Table`]), its files, and the rows it added
    /// since its snapshot (more than are live: some were deleted, and their values are still in
    /// the files).
    struct Folded {
        live: RecordBatch,
        deleted: RecordBatch,
        files: Vec<JournalFile>,
        added: usize,
    }

    /// The live rows, and the journal's files.
    fn fold(dir: &Path, info: &StreamInfo) -> anyhow::Result<Folded> {
        let files = files(dir);
        // A reader starts at the last snapshot: what is before it is folded in.
        let from = files.iter().rposition(|f| f.snapshot).unwrap_or(0);
        // Every change read, in order: the rows and their diffs.
        let mut read: Vec<(RecordBatch, Int64Array)> = Vec::new();
        for JournalFile { path, .. } in &files[from..] {
            let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                .and_then(|b| b.build())
                .with_context(|| format!("{}: not a table change; move it away", path.display()))?;
            for b in reader {
                let b = b?;
                let diff =
                    b.column_by_name(DIFF).and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned());
                let diff = diff.with_context(|| format!("{}: no {DIFF} column", path.display()))?;
                let rows = b.project(&(0..b.num_columns() - 1).collect::<Vec<_>>())?;
                let rows = RecordBatch::try_new(Arc::clone(&info.schema), rows.columns().to_vec())
                    .with_context(|| format!("{}: rows of another {} schema", path.display(), info.name))?;
                read.push((rows, diff));
            }
        }
        // Values are compared only where some change deleted them: every other row is live as
        // added, and a national list of a million entries is not keyed row by row.
        let converter = arrow::row::RowConverter::new(
            info.schema.fields().iter().map(|f| arrow::row::SortField::new(f.data_type().clone())).collect(),
        )?;
        let mut deleted: HashSet<Vec<u8>> = HashSet::new();
        for (rows, diff) in read.iter().filter(|(_, d)| d.values().iter().any(|&d| d <= 0)) {
            let keys = converter.convert_columns(rows.columns())?;
            deleted.extend(
                (0..rows.num_rows()).filter(|&i| diff.value(i) <= 0).map(|i| keys.row(i).as_ref().to_vec()),
            );
        }
        // Each added row's place (batch, row) in the order added, none once deleted; the places
        // of the live copies of deleted values, earliest first. Rows are gathered once at the
        // end (one `interleave`), not sliced one by one.
        let mut places: Vec<Option<(usize, usize)>> = Vec::new();
        let mut unmatched: Vec<(usize, usize)> = Vec::new();
        let mut at: HashMap<Vec<u8>, VecDeque<usize>> = HashMap::new();
        for (b, (rows, diff)) in read.iter().enumerate() {
            let keys =
                if deleted.is_empty() { None } else { Some(converter.convert_columns(rows.columns())?) };
            for i in 0..rows.num_rows() {
                let key = keys.as_ref().map(|k| k.row(i)).filter(|k| deleted.contains(k.as_ref()));
                match (diff.value(i) > 0, key) {
                    (true, Some(key)) => {
                        at.entry(key.as_ref().to_vec()).or_default().push_back(places.len());
                        places.push(Some((b, i)));
                    }
                    (true, None) => places.push(Some((b, i))),
                    (false, Some(key)) => {
                        // The earliest copy goes, as a differential collection would lose one;
                        // with none, a row the journal never added was deleted.
                        match at.get_mut(key.as_ref()).and_then(VecDeque::pop_front) {
                            Some(place) => places[place] = None,
                            None => unmatched.push((b, i)),
                        }
                    }
                    // Every deleted value is in `deleted`.
                    (false, None) => {}
                }
            }
        }
        let added = places.len();
        let places: Vec<(usize, usize)> = places.into_iter().flatten().collect();
        let batches: Vec<&RecordBatch> = read.iter().map(|(r, _)| r).collect();
        let gather = |places: &[(usize, usize)]| -> anyhow::Result<RecordBatch> {
            Ok(match places.is_empty() {
                true => RecordBatch::new_empty(Arc::clone(&info.schema)),
                false => arrow::compute::interleave_record_batch(&batches, places)?,
            })
        };
        Ok(Folded { live: gather(&places)?, deleted: gather(&unmatched)?, files, added })
    }

    fn expiries(rows: &RecordBatch) -> Option<&TimestampMillisecondArray> {
        rows.column_by_name("expires_at")?.as_any().downcast_ref::<TimestampMillisecondArray>()
    }

    /// Drops the rows expired at `now` from the table's reference files
    /// (`reference/<table>-e<epoch>.parquet`: what each start loaded from the configuration,
    /// for `vigil replay`); a file left empty is deleted. Returns the rows dropped and the next
    /// expiry. An entry's plate so leaves them at the same sweep as it leaves the journal, and
    /// a city that restarts often does not keep every configured plate in a file per run.
    pub fn prune_references(
        out: &Path,
        info: &StreamInfo,
        now: Millis,
    ) -> anyhow::Result<(usize, Option<Millis>)> {
        let prefix = format!("{}-e", info.name);
        let (mut dropped, mut next) = (0, None::<Millis>);
        let Ok(entries) = std::fs::read_dir(out.join("reference")) else { return Ok((0, None)) };
        for path in entries.flatten().map(|e| e.path()) {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if !(name.starts_with(&prefix) && name.ends_with(".parquet")) {
                continue;
            }
            let rows = crate::replay::read_whole(&path)?;
            let schema = rows.schema();
            let (kept, n) = unexpired(rows, now)?;
            next = next.into_iter().chain(earliest_expiry(&kept)).min();
            if n == 0 {
                continue;
            }
            dropped += n;
            if kept.num_rows() == 0 {
                std::fs::remove_file(&path).with_context(|| format!("deleting {}", path.display()))?;
                continue;
            }
            let mut bytes = Vec::new();
            let mut w = parquet::arrow::ArrowWriter::try_new(&mut bytes, schema, None)?;
            w.write(&kept)?;
            w.close()?;
            vigil_engine::lake::write_atomic(&path, &bytes)?;
        }
        Ok((dropped, next))
    }

    /// `rows` without those expired at `now`, and how many those were.
    fn unexpired(rows: RecordBatch, now: Millis) -> anyhow::Result<(RecordBatch, usize)> {
        let Some(expires) = expiries(&rows) else { return Ok((rows, 0)) };
        let keep: BooleanArray = expires.iter().map(|e| Some(e.is_none_or(|e| e > now))).collect();
        Ok(match keep.false_count() {
            0 => (rows, 0),
            n => (arrow::compute::filter_record_batch(&rows, &keep)?, n),
        })
    }

    /// The earliest `expires_at` of `rows`, if they expire.
    pub fn earliest_expiry(rows: &RecordBatch) -> Option<Millis> {
        expiries(rows)?.iter().flatten().min()
    }

    /// The files the journal holds (more than [`FOLD_AFTER`]: time to [`trim`]).
    pub fn changes(out: &Path, info: &StreamInfo) -> usize {
        files(&dir(out, info)).len()
    }

    /// What [`trim`] did.
    #[derive(Debug, Default, PartialEq)]
    pub struct Trimmed {
        /// Expired rows dropped from the journal.
        pub expired: usize,
        /// Files deleted.
        pub deleted: usize,
        /// When the next row expires.
        pub next_expiry: Option<Millis>,
    }

    /// Folds the journal into a snapshot of the rows live at `now` when an entry has expired
    /// (its `expires_at` is at or before `now`), an entry was deleted, or more than
    /// [`FOLD_AFTER`] changes have piled up, and deletes the files before it. It reads the whole journal: call it when
    /// [`Trimmed::next_expiry`] has passed or [`changes`] has grown.
    pub fn trim(out: &Path, info: &StreamInfo, now: Millis) -> anyhow::Result<Trimmed> {
        let dir = dir(out, info);
        let Folded { live, deleted: unadded, files, added } = fold(&dir, info)?;
        let Some(last) = files.last().map(|f| f.seq) else { return Ok(Trimmed::default()) };
        // The rows still valid at `now` (a row that never expires is kept); a deletion of the
        // configuration's row is kept as long as the row would have been valid.
        let (kept, dropped) = unexpired(live, now)?;
        let (unadded, lapsed) = unexpired(unadded, now)?;
        let next_expiry = earliest_expiry(&kept);
        let stale = files.iter().rposition(|f| f.snapshot).unwrap_or(0) > 0;
        // Rows added but not live: deleted entries, whose plates are still in the files.
        let deleted_rows = added > kept.num_rows() + dropped;
        if dropped == 0 && lapsed == 0 && files.len() <= FOLD_AFTER && !stale && !deleted_rows {
            return Ok(Trimmed { next_expiry, ..Default::default() });
        }
        let snapshot = if stale && dropped + lapsed == 0 && !deleted_rows && files.len() <= FOLD_AFTER {
            // A snapshot already holds everything; only the files before it go.
            files.iter().rposition(|f| f.snapshot).map_or(last, |i| files[i].seq)
        } else {
            // Numbered as the last change it holds (and sorted after it), so a change appended
            // meanwhile, numbered after the last one there was, is never folded in or deleted.
            // A snapshot of that number already there is replaced (renamed over).
            write(&dir, last, true, &[(&kept, 1), (&unadded, -1)])?;
            last
        };
        let mut deleted = 0;
        for JournalFile { seq, path, snapshot: s } in &files {
            if (*seq, *s) < (snapshot, true) {
                std::fs::remove_file(path).with_context(|| format!("deleting {}", path.display()))?;
                deleted += 1;
            }
        }
        Ok(Trimmed { expired: dropped, deleted, next_expiry })
    }
}

/// `SHOW PLATE` requests answered at once (see `Control::tick`).
const LISTINGS: usize = 2;

/// Rows a change audits one by one; more are audited as one record (see `Control::audit_rows`).
const AUDIT_EACH: usize = 16;

/// Retention on a schedule: every minute of event time (a quarter of the shortest period when
/// that is less), files that would pass their period before the next sweep are deleted
/// (Parquet partitions of every stream, rules' rows, snapshots), and the rows dropped from
/// memory since the last sweep are logged. A stream's period is its class's, or its own
/// (plate reads and hits, [`RetentionSettings::stream_period`]).
pub struct Sweeper {
    out: PathBuf,
    streams: Vec<&'static StreamInfo>,
    periods: RetentionSettings,
    /// Event time between sweeps: a minute, or a quarter of the shortest period.
    every: Millis,
    last: Option<Millis>,
    audit: Option<Arc<AuditLog>>,
    /// The merge of closed hours' small files, in the background (one at a time).
    compacting: Option<std::thread::JoinHandle<()>>,
    /// The journals' trim, in the background (one at a time): each table trimmed (its index in
    /// `tables`) with the result. psql's changes are not held up meanwhile (at a million
    /// entries a trim takes about half a second).
    trimming: Option<std::thread::JoinHandle<Vec<TrimResult>>>,
    lateness: Millis,
    /// The reference tables journaled ([`journal`]), with when each needs trimming next (the
    /// next expiry; none: at the next sweep).
    tables: Vec<(&'static StreamInfo, Option<Millis>)>,
}

/// A journal's trim: the table's index in [`Sweeper`]'s tables, and what the trim did.
type TrimResult = (usize, anyhow::Result<journal::Trimmed>);

/// Streams kept at least this long have each closed hour merged into one file; the merged
/// file carries the hour's start, so retention deletes it up to an hour early (a period is a
/// maximum), which only longer periods can afford.
pub const COMPACT_PERIOD_MIN_MS: Millis = 86_400_000;

/// How often retention runs, in event time, at most.
pub const SWEEP_EVERY_MS: Millis = 60_000;

impl Sweeper {
    /// Retention of the files under `out` for the streams of `catalog`.
    pub fn new(out: &Path, catalog: &Catalog, settings: &Settings, audit: Option<Arc<AuditLog>>) -> Self {
        Self {
            out: out.to_path_buf(),
            streams: catalog.streams().collect(),
            every: catalog
                .streams()
                .map(|s| settings.retention.stream_period(s) / 4)
                .chain([settings.retention.period(Class::Personal) / 4, SWEEP_EVERY_MS])
                .min()
                .unwrap_or(SWEEP_EVERY_MS)
                .max(1_000),
            periods: settings.retention.clone(),
            last: None,
            audit,
            compacting: None,
            trimming: None,
            lateness: settings.engine.allowed_lateness_ms,
            tables: catalog.tables().filter(|s| journal::kept(s)).map(|s| (s, None)).collect(),
        }
    }

    /// Starts merging the files of every closed hour (of streams kept a day or more) in the
    /// background, unless a merge is still running. An hour is closed when the watermark is a
    /// partition and the lateness past its end: no sink writes there again.
    fn compact(&mut self, watermark: Millis) {
        if self.compacting.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let closed_before = watermark - self.lateness - SWEEP_EVERY_MS;
        // Hours retention takes within the next hour are left alone: a merge must never race a
        // deletion (it could put rows back that retention removed).
        let jobs: Vec<(PathBuf, &'static str, Millis)> = self
            .streams
            .iter()
            .map(|s| (s, self.periods.stream_period(s)))
            .filter(|(_, period)| *period >= COMPACT_PERIOD_MIN_MS)
            .map(|(s, period)| (self.out.join(s.name), s.name, watermark - period + self.every + 3_600_000))
            .collect();
        let props = vigil_engine::parquet_sink::writer_properties(&super::graph::DICTIONARY);
        self.compacting = Some(std::thread::spawn(move || {
            for (dir, prefix, kept_from) in jobs {
                for part in closed_hours(&dir, closed_before) {
                    let Some(start) = vigil_engine::lake::hour_of_dir(&part).filter(|s| *s >= kept_from)
                    else {
                        continue;
                    };
                    let name =
                        format!("{prefix}-{}-compacted.parquet", vigil_engine::time::file_stamp(start));
                    match vigil_engine::lake::compact(&dir, &part, &name, &props) {
                        Ok(0) => {}
                        Ok(n) => {
                            tracing::info!(target: "vigil::lake", "{}: {n} files merged into {name}", part.display())
                        }
                        Err(e) => {
                            tracing::error!("compacting {}: {e} (retried at the next sweep)", part.display())
                        }
                    }
                }
            }
        }));
    }

    /// Rows added to the journaled table `info` that expire at `at`: its journal is trimmed
    /// at the first sweep after.
    pub fn journal_expiring(&mut self, info: &StreamInfo, at: Millis) {
        for (t, due) in &mut self.tables {
            if t.name == info.name {
                *due = Some(due.map_or(at, |d| d.min(at)));
            }
        }
    }

    /// Waits for a merge under way (the end of a run).
    /// Starts trimming, in the background, the journals due (an entry expired at `watermark`,
    /// one deleted, or the changes piled up), unless a trim is still running; takes up the
    /// results of the one before.
    fn trim_journals(&mut self, watermark: Millis) {
        if self.trimming.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        self.finish_trim();
        let mut jobs: Vec<(usize, &'static StreamInfo)> = Vec::new();
        for (i, (info, due)) in self.tables.iter_mut().enumerate() {
            // Read whole only when an entry is due to expire or the changes have piled up.
            if due.is_some_and(|d| d > watermark) && journal::changes(&self.out, info) <= journal::FOLD_AFTER
            {
                continue;
            }
            // What is journaled while the trim runs lowers this again (`journal_expiring`); the
            // trim's own next expiry is merged in when it ends.
            *due = Some(Millis::MAX);
            jobs.push((i, info));
        }
        if jobs.is_empty() {
            return;
        }
        let out = self.out.clone();
        self.trimming = Some(std::thread::spawn(move || {
            let trim = |info| {
                let mut t = journal::trim(&out, info, watermark)?;
                let (expired, next) = journal::prune_references(&out, info, watermark)?;
                t.expired += expired;
                t.next_expiry = t.next_expiry.into_iter().chain(next).min();
                Ok(t)
            };
            jobs.into_iter().map(|(i, info)| (i, trim(info))).collect()
        }));
    }

    /// Waits for the journals' trim, if one is running, and takes up its results.
    fn finish_trim(&mut self) {
        let Some(h) = self.trimming.take() else { return };
        let Ok(results) = h.join() else {
            tracing::error!("the journal trim panicked (retried at the next sweep)");
            self.tables.iter_mut().for_each(|(_, due)| *due = None);
            return;
        };
        for (i, result) in results {
            let (info, due) = &mut self.tables[i];
            match result {
                Ok(t) => {
                    *due = Some(due.unwrap_or(Millis::MAX).min(t.next_expiry.unwrap_or(Millis::MAX)));
                    if t.expired > 0
                        && let Some(a) = &self.audit
                    {
                        let object = format!("catalog/tables/{}", info.name);
                        a.record(
                            "system",
                            "retention.delete",
                            &object,
                            &[("expired_rows", &t.expired.to_string())],
                        );
                    }
                }
                Err(e) => {
                    *due = None;
                    tracing::error!("trimming the {} journal: {e:#} (retried at the next sweep)", info.name)
                }
            }
        }
    }

    fn finish_compaction(&mut self) {
        if let Some(h) = self.compacting.take()
            && h.join().is_err()
        {
            tracing::error!("the compaction thread panicked; its partition is recovered at the next start");
        }
    }

    /// Sweeps when a minute of event time (less for short periods) has passed since the last
    /// sweep; returns the files deleted.
    pub fn maybe_sweep(&mut self, watermark: Millis, registry: &Registry, ingest: &Ingest) -> usize {
        match self.last {
            Some(l) if watermark - l < self.every => 0,
            _ => self.sweep(watermark, registry, ingest),
        }
    }

    /// Deletes everything past its period at `watermark`; returns the files deleted. A failure
    /// to delete is logged and retried at the next sweep.
    pub fn sweep(&mut self, watermark: Millis, registry: &Registry, ingest: &Ingest) -> usize {
        self.last = Some(watermark);
        self.compact(watermark);
        self.trim_journals(watermark);
        let mut deleted = 0;
        let (out, audit, every) = (&self.out, &self.audit, self.every);
        // One sweep early rather than late: what would pass its period before the next sweep
        // goes now, so nothing is ever held past its period.
        let mut run = |dir: PathBuf,
                       recursive: bool,
                       class: Class,
                       period: Millis,
                       time_of: &dyn Fn(&Path) -> Option<Millis>| {
            match sweep(&dir, recursive, watermark - period + every, class, period, time_of) {
                Ok(d) => {
                    deleted += d.len();
                    // Paths name a stream, a partition's time and a run: no personal data.
                    if let Some(a) = audit {
                        let (class, period) = (format!("{class:?}").to_lowercase(), human_period(period));
                        for f in &d {
                            let path = f.path.strip_prefix(out).unwrap_or(&f.path).display().to_string();
                            a.record(
                                "system",
                                "retention.delete",
                                &path,
                                &[("class", &class), ("period", &period)],
                            );
                        }
                    }
                }
                Err(e) => tracing::error!("retention of {}: {e} (retried at the next sweep)", dir.display()),
            }
        };
        for info in &self.streams {
            let name = info.name;
            let time_of = move |p: &Path| parquet_file(p).then(|| partition_start(p, name)).flatten();
            run(self.out.join(name), true, info.class, self.periods.stream_period(info), &time_of);
        }
        // Rules' rows: the class of the rule (the most protective of what it reads) and the
        // shortest period of what it reads (a rule over plate reads keeps them no longer than
        // they are kept); a rule dropped since keeps the shortest personal period.
        let personal = self.periods.period(Class::Personal).min(self.periods.reads_ms);
        let rules: Vec<(String, Class, Millis)> = registry
            .list()
            .iter()
            .map(|e| {
                let inputs = e.rule.node.streams();
                let period = inputs.iter().map(|s| self.periods.stream_period(s)).min().unwrap_or(personal);
                (file_name(&e.rule.name), rule_class(&e.rule), period)
            })
            .collect();
        if let Ok(dirs) = std::fs::read_dir(self.out.join("rules")) {
            for dir in dirs.flatten().map(|d| d.path()).filter(|p| p.is_dir()) {
                let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
                let (class, period) = rules
                    .iter()
                    .find(|(n, ..)| *n == name)
                    .map_or((Class::Personal, personal), |(_, c, p)| (*c, *p));
                let time_of = move |p: &Path| parquet_file(p).then(|| partition_start(p, &name)).flatten();
                run(dir.clone(), true, class, period, &time_of);
            }
        }
        // Snapshots: `<out>/snapshots/camera=<id>/<YYYYMMDDTHHMMSSZ>_<rule>.jpg`.
        let snapshots = self.periods.period(Class::Personal);
        run(self.out.join("snapshots"), true, Class::Personal, snapshots, &snapshot_time);
        let (age, budget) = ingest.retained().lock().expect("retained batches").take_dropped();
        // One line a sweep for each reason, every stream on it: the record of what left memory
        // without a line per stream per minute (eleven streams made 16,000 lines a day).
        let horizon = human_period(self.periods.memory_ms);
        if let Some(what) = dropped_rows(&age) {
            tracing::info!(target: "vigil::retention", "dropped rows from memory, older than the in-memory horizon ({horizon}): {what}");
        }
        if let Some(what) = dropped_rows(&budget) {
            tracing::info!(
                target: "vigil::retention",
                "dropped rows from memory, retention.memory_mb was reached (the oldest go first): {what}"
            );
        }
        deleted
    }
}

/// "detections 51234, zone_density 120": the rows each stream lost, streams in
/// name order (the map's); `None` when none lost any.
fn dropped_rows(by_stream: &vigil_engine::share::Dropped) -> Option<String> {
    let mut out = String::new();
    for (stream, rows) in by_stream.iter().filter(|(_, rows)| **rows > 0) {
        let sep = if out.is_empty() { "" } else { ", " };
        out.push_str(&format!("{sep}{stream} {rows}"));
    }
    (!out.is_empty()).then_some(out)
}

/// The `date=…/hour=…` directories under `dir` whose hour ends before `before`.
fn closed_hours(dir: &Path, before: Millis) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for day in std::fs::read_dir(dir).into_iter().flatten().flatten().map(|d| d.path()) {
        for hour in std::fs::read_dir(&day).into_iter().flatten().flatten().map(|d| d.path()) {
            if vigil_engine::lake::hour_of_dir(&hour).is_some_and(|h| h + 3_600_000 <= before) {
                out.push(hour);
            }
        }
    }
    out.sort();
    out
}

fn parquet_file(p: &Path) -> bool {
    p.extension().is_some_and(|x| x == "parquet")
}

/// The capture time in a snapshot's file name.
pub fn snapshot_time(p: &Path) -> Option<Millis> {
    let name = p.file_name()?.to_str()?;
    if !name.ends_with(".jpg") {
        return None;
    }
    let stamp = name.get(..16)?;
    let t = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ").ok()?;
    Some(t.and_utc().timestamp_millis())
}

/// A subject request is about a plate: vigil holds data by nothing else.
fn plate_kind(kind: &str) -> Result<(), String> {
    match kind.eq_ignore_ascii_case("PLATE") {
        true => Ok(()),
        false => Err(format!("vigil holds no data by {kind}; fix: write SHOW PLATE '…' or ERASE PLATE '…'")),
    }
}

/// What is held about one plate, audited: it only reads, so it runs off the engine's tick.
fn show_subject(
    kind: &str,
    value: &str,
    user: &str,
    now: Millis,
    retained: &std::sync::Mutex<vigil_engine::share::Retained>,
    out: Option<&std::path::Path>,
    audit: Option<&AuditLog>,
) -> Result<Vec<[String; 4]>, String> {
    plate_kind(kind)?;
    let request = PlateRequest::new(value, now, retained, out)?;
    let rows = request.show(retained, out)?;
    if let Some(a) = audit {
        a.record(user, "plate.show", &a.digest(request.plate()), &[("found", &subject::summary(&rows))]);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::journal;
    use vigil_engine::stream::StreamDef;
    use vigil_operators::watchlist::{WatchEntry, Watchlist, to_batch};

    fn entry(plate: &str, expires_at: i64) -> arrow::array::RecordBatch {
        to_batch(&[WatchEntry {
            plate: plate.into(),
            reason: "stolen vehicle".into(),
            legal_basis: "DGSN-2026-00301".into(),
            authority: "DGSN Rabat".into(),
            added_by: "amina".into(),
            valid_from: 0,
            expires_at,
        }])
    }

    #[test]
    fn memory_drops_are_one_line_for_every_stream() {
        let mut dropped = vigil_engine::share::Dropped::new();
        assert_eq!(super::dropped_rows(&dropped), None);
        dropped.insert("tracks", 346_319);
        dropped.insert("detections", 51_234);
        dropped.insert("zone_visits", 0);
        assert_eq!(super::dropped_rows(&dropped).as_deref(), Some("detections 51234, tracks 346319"));
    }

    fn plates(out: &std::path::Path) -> Vec<String> {
        use arrow::array::AsArray;
        let rows = journal::live_rows(out, Watchlist::info()).unwrap();
        rows.column_by_name("plate")
            .unwrap()
            .as_string::<i32>()
            .iter()
            .map(|p| p.unwrap().to_owned())
            .collect()
    }

    fn files(out: &std::path::Path) -> Vec<String> {
        let mut f: Vec<String> = std::fs::read_dir(out.join("catalog/tables/watchlist"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        f.sort();
        f
    }

    /// Whether the journal file `name` holds `plate`'s bytes (plates are stored plain, so a
    /// plate still on disk is found this way).
    fn holds(out: &std::path::Path, name: &str, plate: &str) -> bool {
        let bytes = std::fs::read(out.join("catalog/tables/watchlist").join(name)).unwrap();
        bytes.windows(plate.len()).any(|w| w == plate.as_bytes())
    }

    #[test]
    fn an_expired_entry_leaves_the_journal_on_disk_at_the_first_trim_after_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let (out, info) = (dir.path(), Watchlist::info());
        journal::append(out, info, &entry("11111-A-1", 100), 1).unwrap();
        journal::append(out, info, &entry("22222-B-2", 1_000), 1).unwrap();
        journal::append(out, info, &entry("33333-D-3", 5_000), 1).unwrap();
        // Nothing expired yet: nothing written.
        let t = journal::trim(out, info, 50).unwrap();
        assert_eq!(t, journal::Trimmed { expired: 0, deleted: 0, next_expiry: Some(100) });
        assert_eq!(files(out).len(), 3);
        // At its expiry the entry goes from the disk: one snapshot of the others.
        let t = journal::trim(out, info, 100).unwrap();
        assert_eq!(t, journal::Trimmed { expired: 1, deleted: 3, next_expiry: Some(1_000) });
        // Numbered as the last change it holds.
        assert_eq!(files(out), ["00000002.snapshot.parquet"]);
        assert_eq!(plates(out), ["22222-B-2", "33333-D-3"]);
        assert!(holds(out, "00000002.snapshot.parquet", "33333-D-3"), "plates are not readable in the file");
        assert!(!holds(out, "00000002.snapshot.parquet", "11111-A-1"), "the expired plate is still on disk");
        // The next expiry with no change since: the snapshot is replaced, not deleted.
        let t = journal::trim(out, info, 1_000).unwrap();
        assert_eq!(t, journal::Trimmed { expired: 1, deleted: 0, next_expiry: Some(5_000) });
        assert_eq!(files(out), ["00000002.snapshot.parquet"]);
        assert!(!holds(out, "00000002.snapshot.parquet", "22222-B-2"), "the expired plate is still on disk");
        // Changes after the snapshot fold on top of it.
        journal::append(out, info, &entry("44444-H-4", 9_000), 1).unwrap();
        assert_eq!(plates(out), ["33333-D-3", "44444-H-4"]);
        assert_eq!(files(out), ["00000002.snapshot.parquet", "00000003.parquet"]);
    }

    #[test]
    fn a_deleted_entry_leaves_the_disk_at_the_next_trim() {
        let dir = tempfile::tempdir().unwrap();
        let (out, info) = (dir.path(), Watchlist::info());
        journal::append(out, info, &entry("11111-A-1", 5_000), 1).unwrap();
        journal::append(out, info, &entry("22222-B-2", 5_000), 1).unwrap();
        journal::append(out, info, &entry("22222-B-2", 5_000), -1).unwrap();
        assert_eq!(plates(out), ["11111-A-1"]);
        let t = journal::trim(out, info, 0).unwrap();
        assert_eq!((t.expired, t.deleted), (0, 3));
        assert_eq!(files(out), ["00000002.snapshot.parquet"]);
        assert!(!holds(out, "00000002.snapshot.parquet", "22222-B-2"), "the deleted plate is still on disk");
        // Nothing to do the next time.
        assert_eq!(journal::trim(out, info, 0).unwrap().deleted, 0);
        assert_eq!(plates(out), ["11111-A-1"]);
    }

    #[test]
    fn files_a_kill_left_before_a_snapshot_are_ignored_then_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let (out, info) = (dir.path(), Watchlist::info());
        journal::append(out, info, &entry("11111-A-1", 100), 1).unwrap();
        journal::append(out, info, &entry("33333-D-3", 5_000), 1).unwrap();
        let journaled = out.join("catalog/tables/watchlist");
        let changes: Vec<(std::path::PathBuf, Vec<u8>)> = ["00000000.parquet", "00000001.parquet"]
            .iter()
            .map(|f| (journaled.join(f), std::fs::read(journaled.join(f)).unwrap()))
            .collect();
        journal::trim(out, info, 100).unwrap();
        // As if the kill came between the snapshot and the deletions: the last change read has
        // the snapshot's number.
        for (path, bytes) in changes {
            std::fs::write(path, bytes).unwrap();
        }
        assert_eq!(plates(out), ["33333-D-3"], "a file before the snapshot was read");
        // A change is numbered after both.
        journal::append(out, info, &entry("44444-H-4", 9_000), 1).unwrap();
        assert_eq!(plates(out), ["33333-D-3", "44444-H-4"]);
        let t = journal::trim(out, info, 200).unwrap();
        assert_eq!((t.expired, t.deleted), (0, 2));
        assert_eq!(files(out), ["00000001.snapshot.parquet", "00000002.parquet"]);
    }

    /// The sweeper trims in the background while psql's changes go on being journaled: a
    /// change made during a trim is neither folded into its snapshot nor deleted with the files
    /// before it, whatever the interleaving.
    #[test]
    fn changes_journaled_while_a_trim_runs_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (out, info) = (dir.path().to_path_buf(), Watchlist::info());
        let many: Vec<WatchEntry> = (0..20_000)
            .map(|i| WatchEntry {
                plate: format!("{i:05}-A-1"),
                reason: "stolen vehicle".into(),
                legal_basis: "DGSN-2026-00301".into(),
                authority: "DGSN Rabat".into(),
                added_by: "amina".into(),
                valid_from: 0,
                expires_at: if i == 0 { 100 } else { 1_000_000 },
            })
            .collect();
        for round in 0..3 {
            journal::append(&out, info, &to_batch(&many), 1).unwrap();
            let trimming = {
                let out = out.clone();
                std::thread::spawn(move || journal::trim(&out, info, 100 + round).unwrap())
            };
            let mut added = Vec::new();
            while !trimming.is_finished() || added.len() < 3 {
                let plate = format!("9{round}{:03}-B-2", added.len());
                journal::append(&out, info, &entry(&plate, 1_000_000), 1).unwrap();
                added.push(plate);
            }
            trimming.join().unwrap();
            let live = plates(&out);
            for plate in &added {
                assert!(live.contains(plate), "round {round}: {plate}, journaled during the trim, was lost");
            }
            // Tidy for the next round: everything goes, in one change.
            journal::append(&out, info, &journal::live_rows(&out, info).unwrap(), -1).unwrap();
            assert!(plates(&out).is_empty());
        }
    }

    #[test]
    fn many_changes_fold_into_one_snapshot_with_the_same_rows() {
        let dir = tempfile::tempdir().unwrap();
        let (out, info) = (dir.path(), Watchlist::info());
        for i in 0..journal::FOLD_AFTER + 4 {
            journal::append(out, info, &entry(&format!("{i:05}-A-1"), 1_000_000), 1).unwrap();
            if i % 3 == 0 {
                journal::append(out, info, &entry(&format!("{i:05}-A-1"), 1_000_000), -1).unwrap();
            }
        }
        let before = plates(out);
        assert_eq!(before.len(), journal::FOLD_AFTER + 4 - (journal::FOLD_AFTER + 4).div_ceil(3));
        assert!(journal::changes(out, info) > journal::FOLD_AFTER);
        let t = journal::trim(out, info, 10).unwrap();
        assert_eq!(t.expired, 0);
        assert_eq!(files(out).len(), 1);
        assert_eq!(plates(out), before);
    }

    /// The configuration's entries are not journaled; a user's deletion of one is, and stays
    /// through trims as long as the entry would have been valid.
    #[test]
    fn a_deleted_entry_of_the_configuration_stays_deleted_until_it_would_have_expired() {
        let dir = tempfile::tempdir().unwrap();
        let (out, info) = (dir.path(), Watchlist::info());
        journal::append(out, info, &entry("11111-A-1", 5_000), 1).unwrap();
        journal::append(out, info, &entry("22222-B-2", 1_000), -1).unwrap();
        let deleted = |out: &std::path::Path| journal::read(out, info).unwrap().deleted.num_rows();
        assert_eq!((plates(out), deleted(out)), (vec!["11111-A-1".to_owned()], 1));
        // Folded into a snapshot (more changes than FOLD_AFTER): the deletion is in it.
        for _ in 0..journal::FOLD_AFTER {
            journal::append(out, info, &entry("33333-D-3", 5_000), 1).unwrap();
            journal::append(out, info, &entry("33333-D-3", 5_000), -1).unwrap();
        }
        journal::trim(out, info, 500).unwrap();
        assert_eq!(files(out).len(), 1);
        assert_eq!((plates(out), deleted(out)), (vec!["11111-A-1".to_owned()], 1));
        // Past the entry's expiry it goes, and its plate leaves the disk.
        journal::trim(out, info, 1_000).unwrap();
        assert_eq!((plates(out), deleted(out)), (vec!["11111-A-1".to_owned()], 0));
        let file = files(out).pop().unwrap();
        assert!(!holds(out, &file, "22222-B-2"), "the lapsed deletion is still on disk");
    }

    /// At a restart the configuration's entries a user deleted stay out, and those an earlier
    /// version journaled as added are taken out of the journal (loaded once, from the
    /// configuration).
    #[test]
    fn a_restart_loads_the_configurations_entries_once_and_not_those_users_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let (out, info) = (dir.path(), Watchlist::info());
        let config = |plate: &str, valid_from: i64| WatchEntry {
            plate: plate.into(),
            reason: "stolen vehicle".into(),
            legal_basis: "DGSN-2026-00301".into(),
            authority: "DGSN Rabat".into(),
            added_by: "config".into(),
            valid_from,
            expires_at: 9_000,
        };
        let watch = vec![config("11111-A-1", 10), config("22222-B-2", 10), config("33333-D-3", 10)];
        // An earlier version's journal: the configuration's entries as added (valid from an
        // earlier start) and a user's own; then a user's deletion of one of the
        // configuration's (as this version journals it, after a restart).
        journal::append(out, info, &to_batch(&[config("11111-A-1", 0), config("33333-D-3", 0)]), 1).unwrap();
        journal::append(out, info, &entry("44444-H-4", 9_000), 1).unwrap();
        journal::append(out, info, &to_batch(&[config("22222-B-2", 5)]), -1).unwrap();
        let loaded = super::config_watch(out, watch.clone()).unwrap();
        let names: Vec<&str> = loaded.iter().map(|e| e.plate.as_str()).collect();
        assert_eq!(names, ["11111-A-1", "33333-D-3"]);
        assert_eq!(plates(out), ["44444-H-4"], "the journal still holds a configuration entry");
        // A user deleting a configuration entry in this run: it stays out at the next start.
        journal::append(out, info, &to_batch(&[config("33333-D-3", 10)]), -1).unwrap();
        let loaded = super::config_watch(out, watch).unwrap();
        assert_eq!(loaded.iter().map(|e| e.plate.as_str()).collect::<Vec<_>>(), ["11111-A-1"]);
    }

    /// The configuration's entries each start wrote for replay leave those files once they
    /// expire, as they leave the journal.
    #[test]
    fn expired_entries_leave_the_runs_reference_files() {
        let dir = tempfile::tempdir().unwrap();
        let (out, info) = (dir.path(), Watchlist::info());
        std::fs::create_dir_all(out.join("reference")).unwrap();
        let write = |name: &str, rows: &arrow::array::RecordBatch| {
            let mut w = parquet::arrow::ArrowWriter::try_new(
                std::fs::File::create(out.join("reference").join(name)).unwrap(),
                rows.schema(),
                None,
            )
            .unwrap();
            w.write(rows).unwrap();
            w.close().unwrap();
        };
        let both = arrow::compute::concat_batches(
            &entry("11111-A-1", 100).schema(),
            &[entry("11111-A-1", 100), entry("22222-B-2", 1_000)],
        )
        .unwrap();
        write("watchlist-e1.parquet", &both);
        write("watchlist-e2.parquet", &entry("22222-B-2", 1_000));
        let in_file = |name: &str, plate: &str| {
            std::fs::read(out.join("reference").join(name))
                .is_ok_and(|b| b.windows(plate.len()).any(|w| w == plate.as_bytes()))
        };
        assert_eq!(journal::prune_references(out, info, 50).unwrap(), (0, Some(100)));
        assert!(in_file("watchlist-e1.parquet", "11111-A-1"));
        assert_eq!(journal::prune_references(out, info, 100).unwrap(), (1, Some(1_000)));
        assert!(!in_file("watchlist-e1.parquet", "11111-A-1"), "the expired plate is still on disk");
        assert!(in_file("watchlist-e1.parquet", "22222-B-2"));
        assert_eq!(journal::prune_references(out, info, 1_000).unwrap(), (2, None));
        assert_eq!(std::fs::read_dir(out.join("reference")).unwrap().count(), 0, "empty files are left");
    }
}

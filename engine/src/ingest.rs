//! The ingest side of the runtime: watermarks, late events, and batching towards workers.
//!
//! Sources (cameras, or the simulator standing in for them) hand in one frame's rows at a time,
//! either written straight into the worker's row builder ([`Ingest::push_rows`], the hot path:
//! each row is copied once) or as a ready Arrow batch ([`Ingest::push`]). [`Ingest`] checks each
//! frame against the watermark: a frame behind it is *late*, counted for its source and turned
//! into `late_events` rows (nothing is dropped silently); a frame on time goes to its worker
//! (`source % workers`, so a camera always lands on the same worker). At each
//! [`tick`](Ingest::tick) each worker's rows of each stream become one batch, stamped with their
//! least event time, and the watermark advances on every worker. Batching per tick keeps the
//! per-batch costs of timely and Arrow off the per-detection budget.
//!
//! The batches sent stay in a [`Retained`] store for a configured horizon behind the watermark
//! (and reference rows for good): a dataflow added at runtime ([`Ingest::install`]) is
//! backfilled from it, and ad-hoc queries read it. Beyond the horizon a batch is dropped:
//! retention is enforced in memory, not only on disk.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::compute::concat_batches;

use crate::error::{EngineError, Result};
use crate::runtime::{BatchKind, Builder, EventBatch, Runtime, Time};
use crate::schema::{DetectionsBuilder, PlateReadsBuilder, RowBuilder, StreamKind};
use crate::time::{Millis, WatermarkPolicy, WatermarkTracker};

/// Counters the ingest side keeps; cheap to copy for a status line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// On-time rows accepted, per stream.
    pub rows: BTreeMap<&'static str, u64>,
    /// Late rows per source.
    pub late_rows: BTreeMap<u32, u64>,
    /// Batches sent to workers.
    pub batches_sent: u64,
}

impl IngestStats {
    /// Total on-time rows over all streams.
    pub fn total_rows(&self) -> u64 {
        self.rows.values().sum()
    }

    /// Total late rows over all sources.
    pub fn total_late(&self) -> u64 {
        self.late_rows.values().sum()
    }
}

/// Batches sent to the workers, kept for backfill and ad-hoc queries.
///
/// Two limits hold: a time horizon behind the watermark, and a memory budget. When the budget is
/// reached first (a large city), the oldest batches go, and backfill starts after them, so a new
/// dataflow still sees a gap-free input.
#[derive(Debug, Default)]
pub struct Retained {
    /// How far behind the watermark event batches are kept, ms.
    horizon_ms: Millis,
    /// Most bytes of event batches kept (Arrow memory).
    budget_bytes: usize,
    /// Bytes of event batches kept now.
    bytes: usize,
    /// Times before this may have lost batches to the budget: backfill starts here at the
    /// earliest.
    complete_from: Time,
    /// Per worker: (time, batch), in the order sent.
    workers: Vec<VecDeque<(Time, EventBatch)>>,
    /// Reference-table changes (all of them: they are small and define the tables).
    references: Vec<(Time, EventBatch)>,
    /// Batches the dataflow derived (tracks, densities, flows): queried, never backfilled
    /// (a new dataflow derives its own from the events).
    derived: VecDeque<(Time, EventBatch)>,
}

impl Retained {
    /// Every retained batch of `stream`.
    pub fn batches(&self, stream: StreamKind) -> Vec<RecordBatch> {
        self.workers
            .iter()
            .flatten()
            .chain(&self.derived)
            .filter(|(_, b)| b.stream() == Some(stream))
            .map(|(_, b)| b.data.clone())
            .collect()
    }

    /// Every reference-table change so far, in order.
    pub fn references(&self) -> &[(Time, EventBatch)] {
        &self.references
    }

    /// Per worker, what a new dataflow starting at `from` needs: the reference changes (worker
    /// 0), then the event batches at or after `from`.
    pub fn backfill(&self, from: Time) -> Vec<Vec<(Time, EventBatch)>> {
        let from = from.max(self.complete_from);
        self.workers
            .iter()
            .enumerate()
            .map(|(w, q)| {
                let refs = if w == 0 { self.references.clone() } else { Vec::new() };
                refs.into_iter().chain(q.iter().filter(|(t, _)| *t >= from).cloned()).collect()
            })
            .collect()
    }

    /// Keeps a batch the dataflow derived at `time`, for queries, under the same limits.
    pub fn keep_derived(&mut self, time: Time, batch: EventBatch) {
        self.bytes += batch.data.get_array_memory_size();
        self.derived.push_back((time, batch));
        self.enforce_budget();
    }

    /// Keeps at most `bytes` of event batches (the oldest go first).
    pub fn set_memory_budget(&mut self, bytes: usize) {
        self.budget_bytes = bytes;
        self.enforce_budget();
    }

    /// Bytes of event batches kept now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The earliest time a backfill can start from (later than the horizon when the memory
    /// budget dropped older batches).
    pub fn complete_from(&self) -> Time {
        self.complete_from
    }

    fn keep_event(&mut self, worker: usize, time: Time, batch: EventBatch) {
        self.bytes += batch.data.get_array_memory_size();
        let n = self.workers.len();
        self.workers[worker % n].push_back((time, batch));
        self.enforce_budget();
    }

    /// Drops the oldest batches (of any worker, events or derived) while over budget.
    fn enforce_budget(&mut self) {
        while self.bytes > self.budget_bytes {
            let oldest = self
                .workers
                .iter_mut()
                .chain(std::iter::once(&mut self.derived))
                .filter(|q| !q.is_empty())
                .min_by_key(|q| q.front().map(|(t, _)| *t));
            let Some((t, b)) = oldest.and_then(VecDeque::pop_front) else { break };
            self.bytes = self.bytes.saturating_sub(b.data.get_array_memory_size());
            self.complete_from = self.complete_from.max(t + 1);
        }
    }

    fn expire(&mut self, watermark: Millis) {
        let cutoff = to_time(watermark.saturating_sub(self.horizon_ms));
        // Batches are kept in (nearly) time order: drop from the front.
        for q in self.workers.iter_mut().chain(std::iter::once(&mut self.derived)) {
            while q.front().is_some_and(|(t, _)| *t < cutoff) {
                if let Some((_, b)) = q.pop_front() {
                    self.bytes = self.bytes.saturating_sub(b.data.get_array_memory_size());
                }
            }
        }
    }
}

/// Feeds a [`Runtime`]; see the module documentation.
#[derive(Debug)]
pub struct Ingest {
    runtime: Runtime,
    tracker: WatermarkTracker,
    /// Per worker, per stream: batches waiting for the next tick and their least event time.
    stash: Vec<BTreeMap<StreamKind, (Millis, Vec<RecordBatch>)>>,
    /// Per worker: rows written in place, waiting for the next tick.
    rows: Vec<WorkerRows>,
    /// Where a late frame's rows are written before they become `late_events` rows.
    late: WorkerRows,
    stats: IngestStats,
    retained: Arc<Mutex<Retained>>,
}

/// One stream's pending rows for one worker, with their least event time.
#[derive(Debug)]
pub struct Slot<B> {
    least: Millis,
    rows: B,
}

impl<B: Default> Default for Slot<B> {
    fn default() -> Self {
        Self { least: Millis::MAX, rows: B::default() }
    }
}

/// The streams [`Ingest::push_rows`] can write in place.
#[derive(Debug, Default)]
pub struct WorkerRows {
    detections: Slot<DetectionsBuilder>,
    plate_reads: Slot<PlateReadsBuilder>,
}

/// Picks a stream's slot out of [`WorkerRows`]; implemented for every [`RowBuilder`] it holds.
pub trait RowSlot: RowBuilder {
    /// The slot of this builder's stream.
    fn slot(rows: &mut WorkerRows) -> &mut Slot<Self>;
}

impl RowSlot for DetectionsBuilder {
    fn slot(rows: &mut WorkerRows) -> &mut Slot<Self> {
        &mut rows.detections
    }
}

impl RowSlot for PlateReadsBuilder {
    fn slot(rows: &mut WorkerRows) -> &mut Slot<Self> {
        &mut rows.plate_reads
    }
}

impl Ingest {
    /// Wraps a started runtime; the watermark starts at `start`.
    pub fn new(runtime: Runtime, policy: WatermarkPolicy, start: Millis) -> Self {
        let workers = runtime.workers();
        Self {
            runtime,
            tracker: WatermarkTracker::new(policy, start),
            stash: vec![BTreeMap::new(); workers],
            rows: (0..workers).map(|_| WorkerRows::default()).collect(),
            late: WorkerRows::default(),
            stats: IngestStats::default(),
            retained: Arc::new(Mutex::new(Retained {
                horizon_ms: 0,
                budget_bytes: usize::MAX,
                bytes: 0,
                complete_from: 0,
                workers: vec![VecDeque::new(); workers],
                references: Vec::new(),
                derived: VecDeque::new(),
            })),
        }
    }

    /// Keeps sent batches for `horizon_ms` behind the watermark (for backfill and queries).
    pub fn with_retention(self, horizon_ms: Millis) -> Self {
        self.retained.lock().expect("retained batches").horizon_ms = horizon_ms.max(0);
        self
    }

    /// Keeps at most `bytes` of event batches in memory (the oldest go first).
    pub fn with_memory_budget(self, bytes: usize) -> Self {
        self.retained.lock().expect("retained batches").set_memory_budget(bytes);
        self
    }

    /// The retained batches, shared (ad-hoc queries read them while ingest runs).
    pub fn retained(&self) -> Arc<Mutex<Retained>> {
        Arc::clone(&self.retained)
    }

    /// Adds a dataflow built by `build` (see [`Runtime::install`]), backfilled with the retained
    /// batches from `backfill_ms` before the watermark; with 0 it starts at the watermark.
    pub fn install(&mut self, id: u64, build: Builder, backfill_ms: Millis) -> Result<()> {
        let from = to_time(self.watermark().saturating_sub(backfill_ms.max(0)));
        let backfill = {
            let r = self.retained.lock().expect("retained batches");
            if backfill_ms > 0 && r.complete_from() > from {
                tracing::warn!(
                    "dataflow {id}: backfill starts {} ms later than asked: older events were dropped to keep within the memory budget (retention.memory_mb)",
                    r.complete_from() - from
                );
            }
            r.backfill(from)
        };
        self.runtime.install(id, build, backfill)
    }

    /// Removes dataflow `id` (see [`Runtime::remove`]).
    pub fn remove(&mut self, id: u64) -> Result<()> {
        self.runtime.remove(id)
    }

    /// Sends a batch to a worker and retains it.
    fn send(&mut self, worker: usize, time: Time, batch: EventBatch) -> Result<()> {
        {
            let mut r = self.retained.lock().expect("retained batches");
            match batch.kind {
                BatchKind::Reference { .. } => r.references.push((time, batch.clone())),
                BatchKind::Events(_) => r.keep_event(worker, time, batch.clone()),
            }
        }
        self.runtime.send(worker, time, batch)
    }

    /// The current watermark.
    pub fn watermark(&self) -> Millis {
        self.tracker.watermark()
    }

    /// Counters so far.
    pub fn stats(&self) -> &IngestStats {
        &self.stats
    }

    /// Hands in a batch of `stream` from `source`, all of whose rows have event time at least
    /// `event_time`, delivered at ingest time `now`.
    pub fn push(
        &mut self,
        source: u32,
        stream: StreamKind,
        event_time: Millis,
        batch: RecordBatch,
        now: Millis,
    ) -> Result<()> {
        if batch.num_rows() == 0 {
            self.observe(source, event_time, now);
            return Ok(());
        }
        if self.tracker.is_late(event_time) {
            return self.send_late(source, stream, &batch);
        }
        self.tracker.observe(source, event_time, now);
        *self.stats.rows.entry(stream.name()).or_default() += batch.num_rows() as u64;
        let worker = source as usize % self.stash.len();
        let slot = self.stash[worker].entry(stream).or_insert((event_time, Vec::new()));
        slot.0 = slot.0.min(event_time);
        slot.1.push(batch);
        Ok(())
    }

    /// Writes one frame's rows of stream `B::STREAM` from `source`, all with event time at least
    /// `event_time`, delivered at ingest time `now`: `fill` appends them to the builder. On time,
    /// the rows go straight into the worker's builder; late, they become `late_events` rows.
    /// A frame with no rows only marks its source alive.
    pub fn push_rows<B: RowSlot>(
        &mut self,
        source: u32,
        event_time: Millis,
        now: Millis,
        fill: impl FnOnce(&mut B),
    ) -> Result<()> {
        if self.tracker.is_late(event_time) {
            let scratch = B::slot(&mut self.late);
            fill(&mut scratch.rows);
            if scratch.rows.rows() == 0 {
                return Ok(());
            }
            let batch = scratch.rows.take_batch();
            return self.send_late(source, B::STREAM, &batch);
        }
        self.tracker.observe(source, event_time, now);
        let worker = source as usize % self.rows.len();
        let slot = B::slot(&mut self.rows[worker]);
        let before = slot.rows.rows();
        fill(&mut slot.rows);
        let added = slot.rows.rows() - before;
        if added > 0 {
            slot.least = slot.least.min(event_time);
            *self.stats.rows.entry(B::STREAM.name()).or_default() += added as u64;
        }
        Ok(())
    }

    fn send_late(&mut self, source: u32, stream: StreamKind, batch: &RecordBatch) -> Result<()> {
        *self.stats.late_rows.entry(source).or_default() += batch.num_rows() as u64;
        let late = late_rows(stream, batch, self.tracker.watermark())?;
        let worker = source as usize % self.rows.len();
        self.runtime.send(
            worker,
            to_time(self.tracker.watermark()),
            EventBatch { kind: BatchKind::Events(StreamKind::LateEvents), data: late },
        )
    }

    /// Records that `source` is alive and has reached `event_time` without sending rows (a
    /// frame with nothing in it): it keeps the source from counting as idle and lets the
    /// watermark move, at no cost to the dataflow.
    pub fn observe(&mut self, source: u32, event_time: Millis, now: Millis) {
        if !self.tracker.is_late(event_time) {
            self.tracker.observe(source, event_time, now);
        }
    }

    /// Adds (`diff = 1`) or removes (`diff = -1`) reference-table rows at the current watermark.
    /// They go to worker 0 only: a differential collection must see each row once.
    pub fn push_reference(&mut self, table: &str, rows: RecordBatch, diff: i64) -> Result<()> {
        self.send(
            0,
            to_time(self.tracker.watermark()),
            EventBatch { kind: BatchKind::Reference { table: Arc::from(table), diff }, data: rows },
        )
    }

    /// Sends what was stashed since the last tick and advances the watermark to match `now`.
    pub fn tick(&mut self, now: Millis) -> Result<Millis> {
        self.flush()?;
        let watermark = self.tracker.advance(now);
        self.runtime.advance(to_time(watermark))?;
        self.retained.lock().expect("retained batches").expire(watermark);
        Ok(watermark)
    }

    fn flush(&mut self) -> Result<()> {
        for worker in 0..self.rows.len() {
            self.flush_slot::<DetectionsBuilder>(worker)?;
            self.flush_slot::<PlateReadsBuilder>(worker)?;
        }
        let stash: Vec<_> = self.stash.iter_mut().map(std::mem::take).collect();
        for (worker, streams) in stash.into_iter().enumerate() {
            for (stream, (least, batches)) in streams {
                let data = if batches.len() == 1 {
                    batches.into_iter().next().expect("one batch")
                } else {
                    concat_batches(&stream.schema(), &batches).map_err(|source| EngineError::Arrow {
                        context: format!("concatenating {} batches", stream.name()),
                        source,
                    })?
                };
                self.stats.batches_sent += 1;
                self.send(worker, to_time(least), EventBatch { kind: BatchKind::Events(stream), data })?;
            }
        }
        Ok(())
    }

    fn flush_slot<B: RowSlot>(&mut self, worker: usize) -> Result<()> {
        let slot = B::slot(&mut self.rows[worker]);
        if slot.rows.rows() == 0 {
            return Ok(());
        }
        let least = std::mem::replace(&mut slot.least, Millis::MAX);
        let data = slot.rows.take_batch();
        self.stats.batches_sent += 1;
        self.send(worker, to_time(least), EventBatch { kind: BatchKind::Events(B::STREAM), data })
    }

    /// Sends what is left, closes the inputs and waits for every window and sink to finish.
    pub fn finish(mut self) -> Result<IngestStats> {
        self.flush()?;
        self.runtime.finish()?;
        Ok(self.stats)
    }
}

/// Converts event-time milliseconds to the dataflow's logical time (times before 1970 clamp).
pub fn to_time(t: Millis) -> Time {
    t.max(0) as Time
}

/// Builds `late_events` rows for a late batch of `stream`.
fn late_rows(stream: StreamKind, batch: &RecordBatch, watermark: Millis) -> Result<RecordBatch> {
    let n = batch.num_rows();
    let column = |name: &str| -> Result<ArrayRef> {
        batch
            .column_by_name(name)
            .cloned()
            .ok_or_else(|| EngineError::Internal(format!("{} batch without {name}", stream.name())))
    };
    let columns: Vec<ArrayRef> = vec![
        column("camera_id")?,
        column("event_time")?,
        column("event_id")?,
        Arc::new(StringArray::from(vec![stream.name(); n])),
        Arc::new(TimestampMillisecondArray::from(vec![watermark; n]).with_timezone("UTC")),
    ];
    debug_assert!(columns.iter().all(|c| c.len() == n));
    RecordBatch::try_new(StreamKind::LateEvents.schema(), columns)
        .map_err(|source| EngineError::Arrow { context: "building late_events rows".into(), source })
}

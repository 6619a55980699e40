//! The ingest side of the runtime: watermarks, late events, and batching towards workers.
//!
//! Sources (cameras, or the simulator standing in for them) hand in one Arrow batch per source
//! per frame. [`Ingest`] checks each against the watermark: a batch behind it is *late*, counted
//! for its source and turned into `late_events` rows (nothing is dropped silently); a batch on
//! time is stashed for its worker (`source % workers`, so a camera always lands on the same
//! worker). At each [`tick`](Ingest::tick) the stash of each worker and stream is concatenated
//! into one batch, stamped with its least event time, sent, and the watermark is advanced on
//! every worker. Batching per tick keeps the per-batch costs of timely and Arrow off the
//! per-detection budget.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::compute::concat_batches;

use crate::error::{EngineError, Result};
use crate::runtime::{BatchKind, EventBatch, Runtime, Time};
use crate::schema::StreamKind;
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

/// Feeds a [`Runtime`]; see the module documentation.
#[derive(Debug)]
pub struct Ingest {
    runtime: Runtime,
    tracker: WatermarkTracker,
    /// Per worker, per stream: batches waiting for the next tick and their least event time.
    stash: Vec<BTreeMap<StreamKind, (Millis, Vec<RecordBatch>)>>,
    stats: IngestStats,
}

impl Ingest {
    /// Wraps a started runtime; the watermark starts at `start`.
    pub fn new(runtime: Runtime, policy: WatermarkPolicy, start: Millis) -> Self {
        let workers = runtime.workers();
        Self {
            runtime,
            tracker: WatermarkTracker::new(policy, start),
            stash: vec![BTreeMap::new(); workers],
            stats: IngestStats::default(),
        }
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
            *self.stats.late_rows.entry(source).or_default() += batch.num_rows() as u64;
            let late = late_rows(stream, &batch, self.tracker.watermark())?;
            let worker = source as usize % self.stash.len();
            return self.runtime.send(
                worker,
                to_time(self.tracker.watermark()),
                EventBatch { kind: BatchKind::Events(StreamKind::LateEvents), data: late },
            );
        }
        self.tracker.observe(source, event_time, now);
        *self.stats.rows.entry(stream.name()).or_default() += batch.num_rows() as u64;
        let worker = source as usize % self.stash.len();
        let slot = self.stash[worker].entry(stream).or_insert((event_time, Vec::new()));
        slot.0 = slot.0.min(event_time);
        slot.1.push(batch);
        Ok(())
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
        self.runtime.send(
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
        Ok(watermark)
    }

    fn flush(&mut self) -> Result<()> {
        for (worker, streams) in self.stash.iter_mut().enumerate() {
            for (stream, (least, batches)) in std::mem::take(streams) {
                let data = if batches.len() == 1 {
                    batches.into_iter().next().expect("one batch")
                } else {
                    concat_batches(&stream.schema(), &batches).map_err(|source| EngineError::Arrow {
                        context: format!("concatenating {} batches", stream.name()),
                        source,
                    })?
                };
                self.stats.batches_sent += 1;
                self.runtime.send(
                    worker,
                    to_time(least),
                    EventBatch { kind: BatchKind::Events(stream), data },
                )?;
            }
        }
        Ok(())
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

//! The ingest side of the runtime: watermarks, late events, and batching towards workers.
//!
//! Sources (cameras, or the simulator standing in for them) hand in one frame's rows at a time,
//! either written straight into the worker's row builder of their stream ([`Ingest::push_rows`],
//! the hot path: each row is copied once) or as a ready Arrow batch ([`Ingest::push`]). [`Ingest`]
//! checks each frame against the watermark: a frame behind it is *late*, counted for its source
//! and turned into rows of the late stream (nothing is dropped silently); a frame on time goes
//! to its worker (`source % workers`, so a camera always lands on the same worker). At each
//! [`tick`](Ingest::tick) each worker's rows of each stream become one batch, stamped with their
//! least event time, and the watermark advances on every worker. Batching per tick keeps the
//! per-batch costs of timely and Arrow off the per-row budget.
//!
//! The late stream is the application's (its definition names the key columns to copy): a late
//! batch's rows become rows of it with those columns copied, plus `stream` (the stream's name)
//! and `watermark` (the watermark they were behind). [`late_info_matches`] checks, at start, that
//! every input stream has those columns.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::compute::concat_batches;

use crate::error::{EngineError, Result};
use crate::runtime::{Builder, Input, Runtime, Time};
use crate::share::Retained;
use crate::stream::{Batch, EVENT_TIME, RowBuilder, StreamDef, StreamInfo};
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

/// The columns a late stream fills itself; every other column is copied from the late rows.
const LATE_STREAM: &str = "stream";
const LATE_WATERMARK: &str = "watermark";

/// Checks that a late row can be made for every stream of `inputs`: each has the columns of
/// `late` that are copied (all but `stream` and `watermark`), of the same types.
pub fn late_info_matches(late: &StreamInfo, inputs: &[&'static StreamInfo]) -> Result<()> {
    for input in inputs.iter().filter(|i| !i.is_table() && i.name != late.name) {
        for f in late.schema.fields().iter().filter(|f| f.name() != LATE_STREAM && f.name() != LATE_WATERMARK)
        {
            match input.schema.field_with_name(f.name()) {
                Ok(g) if g.data_type() == f.data_type() => {}
                _ => {
                    return Err(EngineError::Schema(format!(
                        "stream {} has no {} {} column, which its late rows ({}) copy",
                        input.name,
                        f.name(),
                        f.data_type(),
                        late.name
                    )));
                }
            }
        }
    }
    Ok(())
}

/// One stream's pending rows for one worker, with their least event time.
#[derive(Debug)]
struct Slot<B> {
    least: Millis,
    rows: B,
}

/// A [`Slot`] of any builder, so that one worker's slots can live in one list.
trait AnySlot: std::fmt::Debug {
    fn info(&self) -> &'static StreamInfo;
    /// The pending rows and their least event time, if any.
    fn take(&mut self) -> Option<(Millis, RecordBatch)>;
    fn as_any(&mut self) -> &mut dyn Any;
}

impl<B: RowBuilder> AnySlot for Slot<B> {
    fn info(&self) -> &'static StreamInfo {
        B::Stream::info()
    }
    fn take(&mut self) -> Option<(Millis, RecordBatch)> {
        if self.rows.rows() == 0 {
            return None;
        }
        Some((std::mem::replace(&mut self.least, Millis::MAX), self.rows.take_batch()))
    }
    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
}

/// One worker's builders, one per stream written in place (a handful: a list is fastest).
#[derive(Debug, Default)]
struct WorkerRows {
    slots: Vec<(&'static str, Box<dyn AnySlot + Send>)>,
}

impl WorkerRows {
    fn slot<B: RowBuilder + Send>(&mut self) -> &mut Slot<B> {
        let name = B::Stream::NAME;
        let i = match self.slots.iter().position(|(n, _)| *n == name) {
            Some(i) => i,
            None => {
                self.slots.push((name, Box::new(Slot { least: Millis::MAX, rows: B::default() })));
                self.slots.len() - 1
            }
        };
        self.slots[i].1.as_any().downcast_mut::<Slot<B>>().expect("a slot holds its stream's builder")
    }
}

/// Ready batches of one stream for one worker, with their least event time.
type Stashed = (&'static StreamInfo, Millis, Vec<RecordBatch>);

/// Feeds a [`Runtime`]; see the module documentation.
#[derive(Debug)]
pub struct Ingest {
    runtime: Runtime,
    tracker: WatermarkTracker,
    /// The late stream.
    late: &'static StreamInfo,
    /// Per worker, per stream: batches waiting for the next tick and their least event time.
    stash: Vec<BTreeMap<&'static str, Stashed>>,
    /// Per worker: rows written in place, waiting for the next tick.
    rows: Vec<WorkerRows>,
    /// Where a late frame's rows are written before they become late rows.
    late_rows: WorkerRows,
    stats: IngestStats,
}

impl Ingest {
    /// Wraps a started runtime; the watermark starts at `start`; late rows become rows of `late`.
    pub fn new(runtime: Runtime, policy: WatermarkPolicy, start: Millis, late: &'static StreamInfo) -> Self {
        let workers = runtime.workers();
        Self {
            runtime,
            tracker: WatermarkTracker::new(policy, start),
            late,
            stash: vec![BTreeMap::new(); workers],
            rows: (0..workers).map(|_| WorkerRows::default()).collect(),
            late_rows: WorkerRows::default(),
            stats: IngestStats::default(),
        }
    }

    /// The batches kept for backfill and queries (shared with the workers and psql).
    pub fn retained(&self) -> Arc<Mutex<Retained>> {
        Arc::clone(self.runtime.retained())
    }

    /// Adds a dataflow built by `build` (see [`Runtime::install`]), whose imports start
    /// `backfill_ms` before the watermark (0: at the watermark). Returns how many ms later than
    /// asked the backfill starts, when the memory budget dropped what it asked for.
    pub fn install(&mut self, id: u64, build: Builder, backfill_ms: Millis) -> Result<Millis> {
        let from = to_time(self.watermark().saturating_sub(backfill_ms.max(0)));
        let complete = self.retained().lock().expect("retained batches").complete_from();
        let late_by = if backfill_ms > 0 && complete > from { (complete - from) as Millis } else { 0 };
        self.runtime.install(id, build, from.max(complete))?;
        Ok(late_by)
    }

    /// Drops dataflow `id` at once (see [`Runtime::kill`]).
    pub fn kill(&mut self, id: u64) -> Result<()> {
        self.runtime.kill(id)
    }

    /// Removes dataflow `id` (see [`Runtime::remove`]).
    pub fn remove(&mut self, id: u64) -> Result<()> {
        self.runtime.remove(id)
    }

    /// The current watermark.
    pub fn watermark(&self) -> Millis {
        self.tracker.watermark()
    }

    /// Counters so far.
    pub fn stats(&self) -> &IngestStats {
        &self.stats
    }

    /// Hands in a batch of stream `S` from `source`, all of whose rows have event time at least
    /// `event_time`, delivered at ingest time `now`.
    pub fn push<S: StreamDef>(
        &mut self,
        source: u32,
        event_time: Millis,
        batch: RecordBatch,
        now: Millis,
    ) -> Result<()> {
        self.push_untyped(S::info(), source, event_time, batch, now)
    }

    /// [`push`](Self::push) for a stream known by its definition (replay reads any stream).
    pub fn push_untyped(
        &mut self,
        info: &'static StreamInfo,
        source: u32,
        event_time: Millis,
        batch: RecordBatch,
        now: Millis,
    ) -> Result<()> {
        if batch.num_rows() == 0 {
            self.observe(source, event_time, now);
            return Ok(());
        }
        if self.tracker.is_late(event_time) {
            return self.send_late(source, info, &batch);
        }
        self.tracker.observe(source, event_time, now);
        *self.stats.rows.entry(info.name).or_default() += batch.num_rows() as u64;
        let worker = source as usize % self.stash.len();
        let slot = self.stash[worker].entry(info.name).or_insert((info, event_time, Vec::new()));
        slot.1 = slot.1.min(event_time);
        slot.2.push(batch);
        Ok(())
    }

    /// Writes one frame's rows of `B`'s stream from `source`, all with event time at least
    /// `event_time`, delivered at ingest time `now`: `fill` appends them to the builder. On time,
    /// the rows go straight into the worker's builder; late, they become late rows. A frame with
    /// no rows only marks its source alive.
    pub fn push_rows<B: RowBuilder + Send>(
        &mut self,
        source: u32,
        event_time: Millis,
        now: Millis,
        fill: impl FnOnce(&mut B),
    ) -> Result<()> {
        if self.tracker.is_late(event_time) {
            let scratch = self.late_rows.slot::<B>();
            fill(&mut scratch.rows);
            if scratch.rows.rows() == 0 {
                return Ok(());
            }
            let batch = scratch.rows.take_batch();
            return self.send_late(source, B::Stream::info(), &batch);
        }
        self.tracker.observe(source, event_time, now);
        let worker = source as usize % self.rows.len();
        let slot = self.rows[worker].slot::<B>();
        let before = slot.rows.rows();
        fill(&mut slot.rows);
        let added = slot.rows.rows() - before;
        if added > 0 {
            slot.least = slot.least.min(event_time);
            *self.stats.rows.entry(B::Stream::NAME).or_default() += added as u64;
        }
        Ok(())
    }

    fn send_late(&mut self, source: u32, info: &'static StreamInfo, batch: &RecordBatch) -> Result<()> {
        *self.stats.late_rows.entry(source).or_default() += batch.num_rows() as u64;
        let late = late_rows(self.late, info, batch, self.tracker.watermark())?;
        let worker = source as usize % self.rows.len();
        self.runtime.send(
            worker,
            to_time(self.tracker.watermark()),
            Input { stream: self.late, batch: Batch::new(late) },
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

    /// Adds (`diff = 1`) or removes (`diff = -1`) rows of reference table `S` at the current
    /// watermark. They go to worker 0 only: a table's change must be seen once.
    pub fn push_table<S: StreamDef>(&mut self, rows: RecordBatch, diff: i64) -> Result<()> {
        self.push_table_untyped(S::info(), rows, diff)
    }

    /// A change of table `S` that takes effect at event time `at` (a row valid from, or expiring
    /// at, a given moment), or at the watermark if that has passed `at`.
    pub fn push_table_at<S: StreamDef>(&mut self, rows: RecordBatch, diff: i64, at: Millis) -> Result<()> {
        self.push_table_untyped_at(S::info(), rows, diff, at)
    }

    /// [`push_table_at`](Self::push_table_at) for a table known by its definition.
    pub fn push_table_untyped_at(
        &mut self,
        info: &'static StreamInfo,
        rows: RecordBatch,
        diff: i64,
        at: Millis,
    ) -> Result<()> {
        crate::stream::check_schema(info, &rows)?;
        let time = to_time(self.tracker.watermark().max(at));
        self.runtime.send(0, time, Input { stream: info, batch: Batch { rows, diff } })
    }

    /// [`push_table`](Self::push_table) for a table known by its definition.
    pub fn push_table_untyped(
        &mut self,
        info: &'static StreamInfo,
        rows: RecordBatch,
        diff: i64,
    ) -> Result<()> {
        crate::stream::check_schema(info, &rows)?;
        let time = to_time(self.tracker.watermark());
        self.runtime.send(0, time, Input { stream: info, batch: Batch { rows, diff } })
    }

    /// Sends what was stashed since the last tick, advances the watermark to match `now`, and
    /// drops retained batches beyond the horizon.
    pub fn tick(&mut self, now: Millis) -> Result<Millis> {
        self.flush()?;
        let watermark = self.tracker.advance(now);
        self.runtime.advance(to_time(watermark))?;
        self.runtime.retained().lock().expect("retained batches").expire(watermark)?;
        Ok(watermark)
    }

    fn flush(&mut self) -> Result<()> {
        for worker in 0..self.rows.len() {
            for i in 0..self.rows[worker].slots.len() {
                let slot = &mut self.rows[worker].slots[i].1;
                let info = slot.info();
                if let Some((least, data)) = slot.take() {
                    self.send(worker, least, info, data)?;
                }
            }
        }
        let stash: Vec<_> = self.stash.iter_mut().map(std::mem::take).collect();
        for (worker, streams) in stash.into_iter().enumerate() {
            for (_, (info, least, batches)) in streams {
                let data = if batches.len() == 1 {
                    batches.into_iter().next().expect("one batch")
                } else {
                    concat_batches(&info.schema, &batches).map_err(|source| EngineError::Arrow {
                        context: format!("concatenating {} batches", info.name),
                        source,
                    })?
                };
                self.send(worker, least, info, data)?;
            }
        }
        Ok(())
    }

    fn send(
        &mut self,
        worker: usize,
        least: Millis,
        info: &'static StreamInfo,
        data: RecordBatch,
    ) -> Result<()> {
        self.stats.batches_sent += 1;
        self.runtime.send(worker, to_time(least), Input { stream: info, batch: Batch::new(data) })
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

/// Rows of `late` for a late batch of stream `info`: the key columns copied, the stream's name
/// and the watermark.
fn late_rows(
    late: &StreamInfo,
    info: &StreamInfo,
    batch: &RecordBatch,
    watermark: Millis,
) -> Result<RecordBatch> {
    let n = batch.num_rows();
    let columns = late
        .schema
        .fields()
        .iter()
        .map(|f| match f.name().as_str() {
            LATE_STREAM => Ok(Arc::new(StringArray::from(vec![info.name; n])) as ArrayRef),
            LATE_WATERMARK => {
                Ok(Arc::new(TimestampMillisecondArray::from(vec![watermark; n]).with_timezone("UTC"))
                    as ArrayRef)
            }
            name => batch.column_by_name(name).cloned().ok_or_else(|| {
                EngineError::Schema(format!(
                    "a late {} batch without {name} (column of {})",
                    info.name, late.name
                ))
            }),
        })
        .collect::<Result<Vec<_>>>()?;
    debug_assert!(late.schema.field_with_name(EVENT_TIME).is_ok());
    RecordBatch::try_new(Arc::clone(&late.schema), columns)
        .map_err(|source| EngineError::Arrow { context: format!("building {} rows", late.name), source })
}

//! Streams shared between dataflows: computed once in the main dataflow, read by every rule.
//!
//! Every stream of the main dataflow (what ingest feeds and what its operators derive) ends in
//! a *share* sink on each worker. The sink keeps each batch in the [`Retained`] store (for
//! backfill and ad-hoc queries) and hands it to the worker's [`Hub`] of that stream, which passes
//! it, with the stream's frontier, to every subscriber. A dataflow added at runtime (a rule)
//! *imports* the streams it reads: an import is a source operator fed by its subscription. It
//! starts with the retained batches from the backfill time (this worker's share, with their
//! times), then receives everything the hub sees after, and holds its capability at the hub's
//! frontier. So a rule sees exactly the batches the main dataflow made (the `track_id`s Parquet
//! holds), at the same times, and ten rules over `tracks` cost one tracker.
//!
//! Subscribing happens on the worker thread between two steps, so nothing is seen twice or
//! missed: what the sink has kept is the backfill, what it sees later is live. This is timely's
//! capture and replay (`timely::dataflow::operators::capture`) specialised to late joiners:
//! a replayer must see progress from the start, an import starts from a retained point.
//!
//! Retention is enforced here, in memory: batches older than the horizon behind the watermark
//! are dropped ([`Retained::expire`]; a stream whose definition says [`Memory::Period`] by its
//! own period instead), and a memory budget drops the oldest first
//! (backfill then starts after them, so a new rule still sees a gap-free input). Reference-table
//! changes are kept from the start, compacted into one snapshot behind the horizon.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::row::{OwnedRow, RowConverter, SortField};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{Scope, Stream};
use timely::scheduling::Activator;

use crate::error::{EngineError, Result};
use crate::runtime::Time;
use crate::stream::{Batch, Batches, Memory, StreamInfo};
use crate::time::Millis;

/// How much the store dropped by age since the last [`Retained::take_dropped`]: rows by stream.
pub type Dropped = BTreeMap<&'static str, u64>;

/// One stream's segments per worker, in the order seen.
type PerWorker = Vec<VecDeque<Segment>>;

/// A batch at most this long is merged into the segment before it.
const SMALL_ROWS: usize = 256;
/// Segments made of small batches grow to at most this many rows.
const SEGMENT_ROWS: usize = 1024;

/// Rows of one stream kept on one worker: one batch, or consecutive small batches merged, each
/// with its time (`runs`: time and row count, in order). A stream of a few rows a tick (hits,
/// alerts) kept as one Arrow batch a tick cost a batch's allocations a tick, and a batch from a
/// fresh builder carries its default capacity (about 100 KB for `hits`' 18 columns for one row):
/// kept for 30 days that grew by 70 MB an hour. Merged, the rows keep their times for expiry and
/// backfill, and the store holds a few allocations per thousand rows.
#[derive(Debug)]
struct Segment {
    runs: Vec<(Time, usize)>,
    rows: RecordBatch,
}

impl Segment {
    fn first(&self) -> Time {
        self.runs.first().map_or(0, |r| r.0)
    }

    fn last(&self) -> Time {
        self.runs.last().map_or(0, |r| r.0)
    }

    /// Merges `b`, seen at `time`, when both are small and `time` is not before this one's
    /// last: returns the change in bytes, or None when it is kept apart.
    fn merge(&mut self, time: Time, b: &RecordBatch) -> std::result::Result<Option<isize>, ArrowError> {
        let n = b.num_rows();
        if n > SMALL_ROWS || self.rows.num_rows() + n > SEGMENT_ROWS || time < self.last() {
            return Ok(None);
        }
        let before = self.rows.get_array_memory_size();
        self.rows = concat_batches(&self.rows.schema(), [&self.rows, b])?;
        match self.runs.last_mut() {
            Some((t, rows)) if *t == time => *rows += n,
            _ => self.runs.push((time, n)),
        }
        Ok(Some(self.rows.get_array_memory_size() as isize - before as isize))
    }

    /// Drops the leading runs before `cutoff` (at most `rows` rows when given, whole runs);
    /// the rest is copied so that the dropped rows leave memory. Returns (rows, bytes, last
    /// time) dropped.
    fn drop_front(
        &mut self,
        cutoff: Time,
        rows: Option<usize>,
    ) -> std::result::Result<(usize, usize, Option<Time>), ArrowError> {
        let (mut runs, mut dropped, mut last) = (0, 0, None);
        for &(t, n) in &self.runs {
            if t >= cutoff || rows.is_some_and(|r| dropped >= r) {
                break;
            }
            (runs, dropped, last) = (runs + 1, dropped + n, Some(t));
        }
        if dropped == 0 {
            return Ok((0, 0, None));
        }
        let before = self.rows.get_array_memory_size();
        let keep = arrow::array::UInt32Array::from_iter_values(dropped as u32..self.rows.num_rows() as u32);
        self.rows = arrow::compute::take_record_batch(&self.rows, &keep)?;
        self.runs.drain(..runs);
        Ok((dropped, before.saturating_sub(self.rows.get_array_memory_size()), last))
    }
}

/// `b` in buffers of its own size: a small batch from a fresh builder holds the builder's
/// default capacity (1,024 values a column).
fn tight(b: &RecordBatch) -> std::result::Result<RecordBatch, ArrowError> {
    arrow::compute::take_record_batch(b, &arrow::array::UInt32Array::from_iter_values(0..b.num_rows() as u32))
}
/// A table's changes in order.
type Changes = Vec<(Time, Batch)>;

/// Batches of every stream, kept in memory for backfill and ad-hoc queries; shared by all
/// workers (each appends its own) and the psql endpoint (which reads).
#[derive(Debug)]
pub struct Retained {
    horizon_ms: Millis,
    /// Streams kept for less than `horizon_ms` (their retention period is shorter).
    horizons: BTreeMap<&'static str, Millis>,
    budget_bytes: usize,
    bytes: usize,
    /// Times before this may have lost batches to the budget: backfill starts here at the
    /// earliest.
    complete_from: Time,
    /// Per (stream, shared): batches shared with the rules' dataflows (backfill reads them), and
    /// batches kept only for queries (rules' alerts, made outside the main dataflow).
    events: BTreeMap<(&'static str, bool), (&'static StreamInfo, PerWorker)>,
    /// Per table: its changes in order, the oldest compacted into one snapshot.
    tables: BTreeMap<&'static str, (&'static StreamInfo, Changes)>,
    /// Rows dropped by age or budget since the last report, by stream.
    dropped_age: Dropped,
    dropped_budget: Dropped,
    workers: usize,
}

impl Retained {
    /// An empty store for `workers` workers, keeping `horizon_ms` behind the watermark within
    /// `budget_bytes` of Arrow memory.
    pub fn new(workers: usize, horizon_ms: Millis, budget_bytes: usize) -> Self {
        Self {
            horizon_ms: horizon_ms.max(0),
            horizons: BTreeMap::new(),
            budget_bytes,
            bytes: 0,
            complete_from: 0,
            events: BTreeMap::new(),
            tables: BTreeMap::new(),
            dropped_age: BTreeMap::new(),
            dropped_budget: BTreeMap::new(),
            workers: workers.max(1),
        }
    }

    /// A store shared between threads.
    pub fn shared(workers: usize, horizon_ms: Millis, budget_bytes: usize) -> Arc<Mutex<Retained>> {
        Arc::new(Mutex::new(Self::new(workers, horizon_ms, budget_bytes)))
    }

    /// Keeps a batch of the main dataflow that worker `worker` saw at `time`.
    pub fn keep(&mut self, info: &'static StreamInfo, worker: usize, time: Time, batch: &Batch) {
        self.keep_in(info, worker, time, batch, true);
    }

    /// Keeps a batch made outside the main dataflow (a rule's alerts): queries read it, backfill
    /// does not (a rule's imports follow the main dataflow, where it is not).
    pub fn keep_for_queries(&mut self, info: &'static StreamInfo, worker: usize, time: Time, batch: &Batch) {
        self.keep_in(info, worker, time, batch, false);
    }

    fn keep_in(&mut self, info: &'static StreamInfo, worker: usize, time: Time, batch: &Batch, shared: bool) {
        if batch.rows.num_rows() == 0 {
            return;
        }
        if info.is_table() {
            let (_, changes) = self.tables.entry(info.name).or_insert_with(|| (info, Vec::new()));
            changes.push((time, batch.clone()));
            return;
        }
        let workers = self.workers;
        let (_, queues) = self
            .events
            .entry((info.name, shared))
            .or_insert_with(|| (info, (0..workers).map(|_| VecDeque::new()).collect()));
        let q = &mut queues[worker % workers];
        let n = batch.rows.num_rows();
        // A merge or copy that fails (it cannot for batches of one schema) keeps the batch as is.
        match q.back_mut().map(|s| s.merge(time, &batch.rows)) {
            Some(Ok(Some(grew))) => self.bytes = self.bytes.saturating_add_signed(grew),
            _ => {
                let rows = if n <= SMALL_ROWS {
                    tight(&batch.rows).unwrap_or_else(|_| batch.rows.clone())
                } else {
                    batch.rows.clone()
                };
                self.bytes += rows.get_array_memory_size();
                q.push_back(Segment { runs: vec![(time, n)], rows });
            }
        }
        self.enforce_budget();
    }

    /// Every retained batch of event stream `name`, oldest first per worker.
    pub fn batches(&self, name: &str) -> Vec<RecordBatch> {
        [true, false]
            .iter()
            .filter_map(|shared| self.events.get(&(name, *shared)))
            .flat_map(|(_, qs)| qs.iter().flatten().map(|s| s.rows.clone()))
            .collect()
    }

    /// Removes from the batches of stream `name` the rows `selected` picks; returns how many
    /// (see [`crate::erase`]).
    pub fn erase(&mut self, name: &str, selected: crate::erase::Selector<'_>) -> Result<usize> {
        let mut removed = 0;
        for shared in [true, false] {
            let Some((_, qs)) =
                self.events.iter_mut().find(|((n, s), _)| *n == name && *s == shared).map(|(_, v)| v)
            else {
                continue;
            };
            for q in qs.iter_mut() {
                for s in q.iter_mut() {
                    let b = &s.rows;
                    let Some(mask) = selected(b) else { continue };
                    let keep = crate::erase::unselected(&mask);
                    let rows = arrow::compute::filter_record_batch(b, &keep).map_err(|source| {
                        crate::error::EngineError::Arrow { context: "erasing rows".into(), source }
                    })?;
                    if rows.num_rows() < b.num_rows() {
                        removed += b.num_rows() - rows.num_rows();
                        self.bytes = self.bytes.saturating_sub(b.get_array_memory_size())
                            + rows.get_array_memory_size();
                        // Each run keeps the rows of its own that stay.
                        let mut at = 0;
                        for (_, n) in s.runs.iter_mut() {
                            let kept = (at..at + *n).filter(|&i| keep.is_valid(i) && keep.value(i)).count();
                            at += *n;
                            *n = kept;
                        }
                        s.runs.retain(|(_, n)| *n > 0);
                        s.rows = rows;
                    }
                }
                q.retain(|s| s.rows.num_rows() > 0);
            }
        }
        Ok(removed)
    }

    /// Every change of table `name` so far (old ones compacted), in order.
    pub fn table_changes(&self, name: &str) -> Vec<(Time, Batch)> {
        self.tables.get(name).map(|(_, c)| c.clone()).unwrap_or_default()
    }

    /// What worker `worker` must be given to start stream `info` at `from`: its retained
    /// batches at or after `from` (tables: every change, on worker 0 only).
    pub fn backfill(&self, info: &StreamInfo, worker: usize, from: Time) -> Vec<(Time, Batch)> {
        if info.is_table() {
            return if worker == 0 { self.table_changes(info.name) } else { Vec::new() };
        }
        let from = from.max(self.complete_from);
        self.events
            .get(&(info.name, true))
            .and_then(|(_, qs)| qs.get(worker))
            .map(|q| {
                let mut out = Vec::new();
                for s in q.iter().filter(|s| s.last() >= from) {
                    let mut at = 0;
                    for &(t, n) in &s.runs {
                        if t >= from {
                            let rows =
                                if n == s.rows.num_rows() { s.rows.clone() } else { s.rows.slice(at, n) };
                            out.push((t, Batch::new(rows)));
                        }
                        at += n;
                    }
                }
                out
            })
            .unwrap_or_default()
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

    /// Rows kept now, by stream.
    pub fn rows(&self) -> BTreeMap<&'static str, usize> {
        let mut rows = BTreeMap::new();
        for ((name, _), (_, qs)) in &self.events {
            *rows.entry(*name).or_default() += qs.iter().flatten().map(|s| s.rows.num_rows()).sum::<usize>();
        }
        rows
    }

    /// The earliest time a backfill can start from (later than the horizon when the memory
    /// budget dropped older batches).
    pub fn complete_from(&self) -> Time {
        self.complete_from
    }

    /// Rows dropped since the last call: (by age, by the memory budget), by stream.
    pub fn take_dropped(&mut self) -> (Dropped, Dropped) {
        (std::mem::take(&mut self.dropped_age), std::mem::take(&mut self.dropped_budget))
    }

    /// Drops the oldest rows (of any worker) while over budget, a tick's rows at a time at
    /// least; a stream kept for its period ([`Memory::Period`]) only when no other has any left.
    fn enforce_budget(&mut self) {
        while self.bytes > self.budget_bytes {
            let over = self.bytes - self.budget_bytes;
            let oldest = self
                .events
                .values_mut()
                .flat_map(|(info, qs)| {
                    let info: &'static StreamInfo = info;
                    qs.iter_mut().map(move |q| (info, q))
                })
                .filter(|(_, q)| !q.is_empty())
                .min_by_key(|(info, q)| (info.memory == Memory::Period, q.front().map(Segment::first)))
                .map(|(info, q)| (info.name, q));
            let Some((name, q)) = oldest else { break };
            let Some(front) = q.front_mut() else { break };
            // The rows that free about what is over, at the segment's bytes per row.
            let (rows, bytes, last) =
                (front.rows.num_rows(), front.rows.get_array_memory_size(), front.last());
            let enough = over.div_ceil(bytes.div_ceil(rows.max(1)).max(1));
            let (n, freed, last) = match front.drop_front(Time::MAX, Some(enough)) {
                Ok(d) if d.0 < rows => d,
                // The whole segment (or a copy that failed): drop it.
                _ => (rows, bytes, Some(last)),
            };
            if n == rows {
                q.pop_front();
            }
            self.bytes = self.bytes.saturating_sub(freed);
            *self.dropped_budget.entry(name).or_default() += n as u64;
            if let Some(t) = last {
                self.complete_from = self.complete_from.max(t + 1);
            }
        }
    }

    /// Keeps `stream` at most `ms` behind the watermark (its retention period): when that is
    /// less than the horizon, or always for a stream kept in memory for its whole period
    /// ([`Memory::Period`]).
    pub fn set_horizon(&mut self, stream: &'static str, ms: Millis) {
        self.horizons.insert(stream, ms.max(0));
    }

    /// The shortest time any stream's rows are kept (the horizon, or a shorter retention
    /// period): copies of rows made for a reader are kept no longer.
    pub fn shortest_horizon_ms(&self) -> Millis {
        self.horizons.values().copied().fold(self.horizon_ms, Millis::min)
    }

    /// Drops event batches older than the horizon behind `watermark` (a batch goes once its
    /// time is; its rows are of one tick), and compacts table changes behind it.
    pub fn expire(&mut self, watermark: Millis) -> Result<()> {
        let cutoff = watermark.saturating_sub(self.horizon_ms).max(0) as Time;
        for (info, qs) in self.events.values_mut() {
            let own = self
                .horizons
                .get(info.name)
                .filter(|h| **h < self.horizon_ms || info.memory == Memory::Period);
            let cutoff = own.map_or(cutoff, |h| watermark.saturating_sub(*h).max(0) as Time);
            for q in qs.iter_mut() {
                // Batches are kept in (nearly) time order: drop from the front.
                while let Some(front) = q.front_mut().filter(|s| s.first() < cutoff) {
                    let (n, freed) = if front.last() < cutoff {
                        let (n, b) = (front.rows.num_rows(), front.rows.get_array_memory_size());
                        q.pop_front();
                        (n, b)
                    } else {
                        let (n, freed, _) = front.drop_front(cutoff, None).map_err(|source| {
                            EngineError::Arrow { context: format!("expiring rows of {}", info.name), source }
                        })?;
                        (n, freed)
                    };
                    self.bytes = self.bytes.saturating_sub(freed);
                    *self.dropped_age.entry(info.name).or_default() += n as u64;
                }
            }
        }
        for (info, changes) in self.tables.values_mut() {
            let old = changes.partition_point(|(t, _)| *t < cutoff);
            if old > 1 {
                let snapshot = consolidate(info, &changes[..old])?;
                let rest = changes.split_off(old);
                *changes = snapshot.map(|b| (cutoff.saturating_sub(1), b)).into_iter().chain(rest).collect();
            }
        }
        Ok(())
    }
}

/// The net rows of a table's changes: each row with its summed multiplicity, repeated.
pub fn consolidate(info: &StreamInfo, changes: &[(Time, Batch)]) -> Result<Option<Batch>> {
    let batches: Vec<RecordBatch> = changes.iter().map(|(_, b)| b.rows.clone()).collect();
    let diffs: Vec<i64> =
        changes.iter().flat_map(|(_, b)| std::iter::repeat_n(b.diff, b.rows.num_rows())).collect();
    let rows = net_rows(&info.schema, &batches, &diffs).map_err(|source| EngineError::Arrow {
        context: format!("compacting table {}", info.name),
        source,
    })?;
    Ok((rows.num_rows() > 0).then(|| Batch::new(rows)))
}

/// Rows with their net multiplicity: `batches`' rows (of `schema`), row `i` counted `diffs[i]`
/// times; each row whose sum is positive comes out that many times, sorted by its values (so the
/// result does not depend on the order of the changes).
pub fn net_rows(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    diffs: &[i64],
) -> std::result::Result<RecordBatch, ArrowError> {
    let all = concat_batches(schema, batches)?;
    let converter =
        RowConverter::new(schema.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect())?;
    let rows = converter.convert_columns(all.columns())?;
    let mut net: BTreeMap<OwnedRow, (i64, u32)> = BTreeMap::new();
    for (i, d) in diffs.iter().enumerate() {
        net.entry(rows.row(i).owned()).or_insert((0, i as u32)).0 += d;
    }
    let idx: Vec<u32> =
        net.values().filter(|(n, _)| *n > 0).flat_map(|&(n, i)| std::iter::repeat_n(i, n as usize)).collect();
    arrow::compute::take_record_batch(&all, &arrow::array::UInt32Array::from(idx))
}

/// One subscription: what the import operator has yet to emit, and how far the stream is.
#[derive(Debug, Default)]
struct Subscription {
    queue: VecDeque<(Time, Batch)>,
    /// The stream's frontier; `None` once it has ended (or the subscription was closed).
    frontier: Option<Time>,
    activator: Option<Activator>,
}

impl Subscription {
    fn wake(&self) {
        if let Some(a) = &self.activator {
            a.activate();
        }
    }
}

/// One subscriber of a hub: its owner (a dataflow), its subscription, and the time from which it
/// is closed (once removed: it gets what comes before, then ends).
#[derive(Debug)]
struct Subscriber {
    owner: u64,
    sub: Rc<RefCell<Subscription>>,
    /// The subscription starts here: earlier batches (sent before it, shared after) are not its.
    from: Time,
    close_at: Option<Time>,
}

/// One stream's hub on one worker: its frontier and its subscribers.
#[derive(Debug)]
struct Hub {
    frontier: Option<Time>,
    subscribers: Vec<Subscriber>,
}

/// The hubs of one worker, by stream; see the module documentation.
#[derive(Debug)]
pub struct Hubs {
    worker: usize,
    retained: Arc<Mutex<Retained>>,
    hubs: RefCell<BTreeMap<&'static str, Rc<RefCell<Hub>>>>,
}

impl Hubs {
    /// The hubs of worker `worker`, keeping batches in `retained`.
    pub fn new(worker: usize, retained: Arc<Mutex<Retained>>) -> Self {
        Self { worker, retained, hubs: RefCell::new(BTreeMap::new()) }
    }

    /// The store batches are kept in.
    pub fn retained(&self) -> &Arc<Mutex<Retained>> {
        &self.retained
    }

    /// Ends `stream` in a share sink: every batch is retained and passed to the subscribers.
    pub fn share<'s>(self: &Rc<Self>, info: &'static StreamInfo, stream: Batches<'s>) {
        let hub = Rc::new(RefCell::new(Hub { frontier: Some(0), subscribers: Vec::new() }));
        self.hubs.borrow_mut().insert(info.name, Rc::clone(&hub));
        let (worker, retained) = (self.worker, Arc::clone(&self.retained));
        stream.sink(Pipeline, &format!("Share({})", info.name), move |(input, frontier)| {
            let mut hub = hub.borrow_mut();
            input.for_each(|cap, data| {
                let t = cap.least().copied().unwrap_or_default();
                {
                    let mut r = retained.lock().expect("retained batches");
                    for b in data.iter() {
                        r.keep(info, worker, t, b);
                    }
                }
                for s in hub.subscribers.iter().filter(|s| t >= s.from && s.close_at.is_none_or(|c| t < c)) {
                    s.sub.borrow_mut().queue.extend(data.iter().map(|b| (t, b.clone())));
                }
            });
            let f = frontier.frontier().first().copied();
            hub.frontier = f;
            hub.subscribers.retain(|s| {
                // A closing subscriber ends once everything before its close time has passed.
                let ended = f.is_none() || s.close_at.is_some_and(|c| f.is_some_and(|f| f >= c));
                let mut sub = s.sub.borrow_mut();
                sub.frontier = if ended { None } else { f };
                sub.wake();
                !ended
            });
        });
    }

    /// Stream `info` in another dataflow (of this worker), for subscriber `owner`: the retained
    /// batches from `from` on, then everything the main dataflow produces. A stream the main
    /// dataflow does not have is empty and complete.
    pub fn import<'s>(
        &self,
        scope: Scope<'s, Time>,
        info: &'static StreamInfo,
        owner: u64,
        from: Time,
    ) -> Batches<'s> {
        let sub = Rc::new(RefCell::new(Subscription::default()));
        if let Some(hub) = self.hubs.borrow().get(info.name) {
            let mut hub = hub.borrow_mut();
            let mut s = sub.borrow_mut();
            // Under the worker's turn: nothing reaches the sink between these two lines.
            s.queue.extend(self.retained.lock().expect("retained batches").backfill(info, self.worker, from));
            s.frontier = hub.frontier;
            if hub.frontier.is_some() {
                let from = if info.is_table() { 0 } else { from };
                hub.subscribers.push(Subscriber { owner, sub: Rc::clone(&sub), from, close_at: None });
            }
        }
        let name = format!("Import({})", info.name);
        source::<_, timely::container::CapacityContainerBuilder<Vec<Batch>>, _, _>(
            scope,
            &name,
            move |cap, op| {
                sub.borrow_mut().activator = Some(scope.activator_for(op.address));
                let mut cap = Some(cap);
                move |output| {
                    let mut s = sub.borrow_mut();
                    let Some(c) = cap.as_mut() else {
                        s.queue.clear();
                        return;
                    };
                    while let Some((t, b)) = s.queue.pop_front() {
                        // Times are never behind the capability: backfill comes first, and the hub's
                        // frontier (which the capability follows) never passes data still to come.
                        output.session(&c.delayed(&t.max(*c.time()))).give(b);
                    }
                    match s.frontier {
                        Some(f) if f > *c.time() => c.downgrade(&f),
                        Some(_) => {}
                        None => cap = None,
                    }
                }
            },
        )
    }

    /// Ends the subscriptions of `owner` (a dataflow being removed) at time `at`: they get what
    /// the main dataflow makes before `at` (so everything sent to it before the removal, when
    /// `at` is past those times), then complete.
    pub fn close(&self, owner: u64, at: Time) {
        for hub in self.hubs.borrow().values() {
            let mut hub = hub.borrow_mut();
            let frontier = hub.frontier;
            hub.subscribers.retain_mut(|s| {
                if s.owner != owner {
                    return true;
                }
                s.close_at = Some(at);
                let ended = frontier.is_none_or(|f| f >= at);
                if ended {
                    let mut sub = s.sub.borrow_mut();
                    sub.frontier = None;
                    sub.wake();
                }
                !ended
            });
        }
    }
}

/// A stream with no data whose frontier is complete at once (what a missing input imports as).
pub fn empty<'s>(scope: Scope<'s, Time>) -> Stream<'s, Time, Vec<Batch>> {
    timely::dataflow::operators::generic::operator::empty(scope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{StreamDef, Timestamp};
    use std::sync::Arc;

    crate::stream! {
        /// Rows.
        pub struct T1 {
            name: "t1", class: Record, keys: [], personal: [],
            row: T1Row, builder: T1Rows, reader: T1Cols,
            columns: { event_time: Timestamp, v: i64 }
        }
    }

    crate::stream! {
        /// A table.
        pub struct Tab {
            name: "tab", class: Reference, keys: [k], personal: [],
            row: TabRow, builder: TabRows, reader: TabCols,
            columns: { k: i64 }
        }
    }

    crate::stream! {
        /// A worklist: kept in memory for its whole period.
        pub struct Work {
            name: "work", class: Record, memory: Period, keys: [], personal: [],
            row: WorkRow, builder: WorkRows, reader: WorkCols,
            columns: { event_time: Timestamp, v: i64 }
        }
    }

    fn work(t: i64) -> Batch {
        let mut b = WorkRows::default();
        b.push(&WorkRow { event_time: t, v: t });
        Batch::new(b.finish())
    }

    fn batch(t: i64, v: i64) -> Batch {
        let mut b = T1Rows::default();
        b.push(&T1Row { event_time: t, v });
        Batch::new(b.finish())
    }

    #[test]
    fn the_horizon_and_the_budget_bound_what_is_kept() {
        let mut r = Retained::new(2, 1_000, usize::MAX);
        for t in 0..10 {
            r.keep(T1::info(), (t % 2) as usize, t as Time * 500, &batch(t * 500, t));
        }
        assert_eq!(r.rows()["t1"], 10);
        r.expire(4_500).unwrap();
        // Kept: times >= 3,500.
        assert_eq!(r.rows()["t1"], 3);
        let (age, budget) = r.take_dropped();
        assert_eq!((age["t1"], budget.len()), (7, 0));
        // Over budget by a byte: the oldest tick goes first, the newest stays, and backfill
        // starts after what went.
        r.set_memory_budget(r.bytes() - 1);
        assert!((1..3).contains(&r.rows()["t1"]), "{:?}", r.rows());
        let times: Vec<Time> = (0..2).flat_map(|w| r.backfill(T1::info(), w, 0)).map(|(t, _)| t).collect();
        assert!(times.contains(&4_500) && !times.contains(&3_500), "{times:?}");
        assert!(r.complete_from() >= 3_501);
        assert_eq!(times.len(), r.rows()["t1"]);
    }

    #[test]
    fn a_stream_with_a_shorter_period_goes_sooner() {
        let mut r = Retained::new(1, 10_000, usize::MAX);
        r.set_horizon("t1", 2_000);
        for t in 0..10 {
            r.keep(T1::info(), 0, t as Time * 1_000, &batch(t * 1_000, t));
        }
        r.expire(9_000).unwrap();
        // Kept: times >= 7,000, not the 10 s of the memory horizon.
        assert_eq!(r.rows()["t1"], 3);
        // A longer period of its own does not keep it past the memory horizon.
        r.set_horizon("t1", 60_000);
        r.keep(T1::info(), 0, 30_000, &batch(30_000, 30));
        r.expire(30_000).unwrap();
        assert_eq!(r.rows()["t1"], 1);
    }

    #[test]
    fn a_worklist_stays_for_its_period_and_the_budget_takes_it_last() {
        let mut r = Retained::new(1, 10_000, usize::MAX);
        r.set_horizon("t1", 60_000);
        r.set_horizon("work", 60_000);
        for t in 0..10 {
            r.keep(Work::info(), 0, t as Time * 10_000, &work(t * 10_000));
            r.keep(T1::info(), 0, t as Time * 10_000, &batch(t * 10_000, t));
        }
        r.expire(90_000).unwrap();
        // The events: the 10 s horizon (times >= 80,000); the worklist: its 60 s (>= 30,000).
        assert_eq!((r.rows()["t1"], r.rows()["work"]), (2, 7));
        // Over budget, the events go first though the worklist's rows are older...
        r.set_memory_budget(r.bytes() - 1);
        assert_eq!(r.rows()["work"], 7);
        assert!(r.rows().get("t1").copied().unwrap_or(0) < 2);
        // ... and the worklist's oldest when nothing else is left.
        while r.rows()["work"] == 7 {
            r.set_memory_budget(r.bytes() - 1);
        }
        assert_eq!(r.rows().get("t1").copied().unwrap_or(0), 0);
        let first = WorkCols::new(&r.batches("work")[0]).unwrap().rows().next().map(|w| w.v);
        assert!(first.is_some_and(|v| v > 30_000), "{first:?}");
    }

    #[test]
    fn small_batches_are_kept_merged_each_row_with_its_time() {
        // A tick's row or two from a fresh builder each time, as the hits' book makes them.
        let mut r = Retained::new(1, 1_000_000, usize::MAX);
        let ticks = 3_000;
        for t in 0..ticks {
            let mut b = T1Rows::default();
            for v in 0..(1 + t % 2) {
                b.push(&T1Row { event_time: t * 100, v });
            }
            r.keep(T1::info(), 0, t as Time * 100, &Batch::new(b.finish()));
        }
        let (rows, fresh) = (r.rows()["t1"], batch(0, 0).rows.get_array_memory_size());
        assert_eq!(rows, 4_500);
        // Kept one by one they would hold a builder's capacity each.
        assert!(r.bytes() * 20 < ticks as usize * fresh, "{} bytes for {rows} rows", r.bytes());
        assert!(r.batches("t1").len() < 10);
        // Backfill gives each tick's rows at its own time.
        let from = r.backfill(T1::info(), 0, 150_000);
        assert_eq!(from.len(), 1_500);
        for (t, b) in &from {
            let c = T1Cols::new(&b.rows).unwrap();
            assert!(c.rows().all(|row| row.event_time == *t as i64), "time {t}");
            assert_eq!(b.rows.num_rows(), 1 + (*t as usize / 100) % 2);
        }
        // Expiry drops exactly the rows before the cutoff, within a merged batch too.
        r.expire(1_000_000 + 100_050).unwrap();
        let kept: Vec<i64> = r
            .batches("t1")
            .iter()
            .flat_map(|b| T1Cols::new(b).unwrap().rows().map(|row| row.event_time).collect::<Vec<_>>())
            .collect();
        assert_eq!(kept.first(), Some(&100_100));
        assert_eq!(kept.len(), r.rows()["t1"]);
        assert_eq!(r.take_dropped().0["t1"], 4_500 - kept.len() as u64);
        // Erasing rows keeps every other row at its time.
        let erased = r
            .erase("t1", &|b: &RecordBatch| {
                let c = T1Cols::new(b).ok()?;
                Some(c.rows().map(|row| Some(row.v == 1)).collect::<arrow::array::BooleanArray>())
            })
            .unwrap();
        assert_eq!(erased, (100_100..300_000).step_by(100).filter(|t| (t / 100) % 2 == 1).count());
        let after = r.backfill(T1::info(), 0, 0);
        assert_eq!(after.len(), 1_999);
        assert!(after.iter().all(|(t, b)| b.rows.num_rows() == 1
            && T1Cols::new(&b.rows).unwrap().rows().all(|row| row.event_time == *t as i64 && row.v == 0)));
    }

    #[test]
    fn old_table_changes_are_compacted_into_their_net_rows() {
        let mut r = Retained::new(1, 1_000, usize::MAX);
        let rows = |ks: &[i64]| {
            let mut b = TabRows::default();
            for &k in ks {
                b.push(&TabRow { k });
            }
            b.finish()
        };
        r.keep(Tab::info(), 0, 0, &Batch::new(rows(&[1, 2, 3])));
        r.keep(Tab::info(), 0, 10, &Batch { rows: rows(&[2]), diff: -1 });
        r.keep(Tab::info(), 0, 5_000, &Batch::new(rows(&[4])));
        r.expire(3_000).unwrap();
        let changes = r.table_changes("tab");
        assert_eq!(changes.len(), 2);
        let first = TabCols::new(&changes[0].1.rows).unwrap().rows().map(|r| r.k).collect::<Vec<_>>();
        assert_eq!(first, vec![1, 3]);
        assert_eq!(changes[1].0, 5_000);
        let _ = Arc::new(0);
    }
}

//! The window aggregate operator: `GROUP BY tumble(..) / hop(..) / session(..)` with any
//! DataFusion aggregate, maintained incrementally per window pane.
//!
//! Rows are exchanged by group key. Each (group, pane) keeps DataFusion accumulators; a
//! tumbling window is one pane, a hopping window is the merge of its slide-sized panes, closed
//! with two stacks (O(1) merges per slide, [`WindowAgg::close_hops`]); sessions keep their last
//! time and accumulators. A window's row is emitted when the watermark passes its end
//! (`emit = 'close'`), or its running value with retractions at every complete time
//! (`emit = 'updates'`). Rows for windows already closed are late: counted and reported.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, RecordBatch, StructArray, TimestampMillisecondArray, UInt32Array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::common::HashMap;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;
use vigil_engine::runtime::Time;

use super::{
    ByTime, CB, Deltas, RenderContext, before, by_worker, conform_columns, eval, frontier_time, key_by,
};
use crate::delta::{Delta, key_rows};
use crate::plan::{AggregateNode, Emit, PhysExpr};
use crate::window::{WindowKind, window_type};

type Accs = Vec<Box<dyn Accumulator>>;

struct Session {
    last: i64,
    accs: Accs,
}

/// One group's panes in the two-stacks sliding aggregation (see [`WindowAgg::close_hops`]).
struct Sliding {
    /// Oldest panes, each with the merged state of itself and every later front pane
    /// (a suffix); `head` is the first not yet evicted.
    front: Vec<(i64, Vec<Vec<ArrayRef>>)>,
    head: usize,
    /// Newer panes, with their own states, and their running merge.
    back: Vec<(i64, Vec<Vec<ArrayRef>>)>,
    back_acc: Accs,
}

impl Sliding {
    fn new(back_acc: Accs) -> Self {
        Self { front: Vec::new(), head: 0, back: Vec::new(), back_acc }
    }

    /// The merged accumulators of the panes at or after `start` (`None` when there are none).
    fn window(&mut self, start: i64, aggs: &[Arc<AggregateFunctionExpr>]) -> Result<Option<Accs>, String> {
        while self.head < self.front.len() && self.front[self.head].0 < start {
            self.head += 1;
        }
        if self.head == self.front.len() && self.back.first().is_some_and(|(p, _)| *p < start) {
            // Flip: the back stack becomes the front, with suffix merges computed once.
            let back = std::mem::take(&mut self.back);
            let mut running = fresh(aggs)?;
            let mut front = Vec::with_capacity(back.len());
            for (p, states) in back.into_iter().rev() {
                for (acc, st) in running.iter_mut().zip(&states) {
                    acc.merge_batch(st).map_err(|e| e.to_string())?;
                }
                let suffix = running.iter_mut().zip(aggs).map(|(a, agg)| snapshot(a, agg)).collect::<Result<
                    Vec<_>,
                    _,
                >>(
                )?;
                front.push((p, suffix));
            }
            front.reverse();
            self.front = front;
            self.head = 0;
            self.back_acc = fresh(aggs)?;
            while self.head < self.front.len() && self.front[self.head].0 < start {
                self.head += 1;
            }
        }
        if self.head == self.front.len() {
            self.front.clear();
            self.head = 0;
        }
        if self.front.is_empty() && self.back.is_empty() {
            return Ok(None);
        }
        let mut result = fresh(aggs)?;
        if let Some((_, suffix)) = self.front.get(self.head) {
            for (acc, st) in result.iter_mut().zip(suffix) {
                acc.merge_batch(st).map_err(|e| e.to_string())?;
            }
        }
        if !self.back.is_empty() {
            for ((acc, back), agg) in result.iter_mut().zip(self.back_acc.iter_mut()).zip(aggs) {
                acc.merge_batch(&snapshot(back, agg)?).map_err(|e| e.to_string())?;
            }
        }
        Ok(Some(result))
    }
}

/// New, empty accumulators for `aggs`.
fn fresh(aggs: &[Arc<AggregateFunctionExpr>]) -> Result<Accs, String> {
    aggs.iter().map(|a| a.create_accumulator().map_err(|e| e.to_string())).collect()
}

/// Whether the window ending at `end` is closed: the frontier has passed every time before it.
fn window_closed(end: i64, frontier: Option<Time>) -> bool {
    before((end - 1).max(0) as Time, frontier)
}

/// The state of `slot` as arrays, leaving `slot` as it was (`state` may move contents out).
fn snapshot(
    slot: &mut Box<dyn Accumulator>,
    agg: &Arc<AggregateFunctionExpr>,
) -> Result<Vec<ArrayRef>, String> {
    let arrays = state_arrays(slot.as_mut())?;
    let mut back = agg.create_accumulator().map_err(|e| e.to_string())?;
    back.merge_batch(&arrays).map_err(|e| e.to_string())?;
    *slot = back;
    Ok(arrays)
}

/// The state of one window aggregate on one worker.
struct WindowAgg {
    window: WindowKind,
    window_time: PhysExpr,
    window_pos: usize,
    keys: Vec<PhysExpr>,
    aggs: Vec<Arc<AggregateFunctionExpr>>,
    schema: SchemaRef,
    emit: Emit,
    converter: RowConverter,
    /// Tumble and hop: pane start → group → accumulators.
    panes: BTreeMap<i64, HashMap<OwnedRow, Accs>>,
    /// Session: group → session start → session.
    sessions: HashMap<OwnedRow, BTreeMap<i64, Session>>,
    /// Hop, emitting on close: each group's sealed panes (two stacks).
    sliding: BTreeMap<OwnedRow, Sliding>,
    /// Updates mode: what was last emitted per (window end, group).
    emitted: HashMap<(i64, OwnedRow), RecordBatch>,
    /// Updates mode: windows changed since the last emission.
    dirty: BTreeSet<i64>,
    /// Every window ending at or before this has been emitted.
    closed_through: i64,
    /// Rows that arrived after their window had closed, since last reported. Only rows behind
    /// a retroactive join can (an event on time is never behind the watermark).
    late: u64,
}

impl WindowAgg {
    /// Group states held: one per (group, pane), session or sealed pane, and per emitted
    /// (window, group) in updates mode.
    fn held(&self) -> usize {
        self.panes.values().map(HashMap::len).sum::<usize>()
            + self.sessions.values().map(BTreeMap::len).sum::<usize>()
            + self.sliding.values().map(|s| s.front.len() - s.head + s.back.len()).sum::<usize>()
            + self.emitted.len()
    }

    fn new(a: &AggregateNode) -> Result<Self, String> {
        let input = a.input.schema();
        let mut fields = a
            .keys
            .iter()
            .map(|k| k.data_type(&input).map(SortField::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        if fields.is_empty() {
            // No group keys: one constant key (arrow's row format needs a column).
            fields.push(SortField::new(DataType::UInt8));
        }
        Ok(Self {
            window: a.window,
            window_time: Arc::clone(&a.window_time),
            window_pos: a.window_pos,
            keys: a.keys.clone(),
            aggs: a.aggs.clone(),
            schema: Arc::clone(&a.schema),
            emit: a.emit,
            converter: RowConverter::new(fields).map_err(|e| e.to_string())?,
            panes: BTreeMap::new(),
            sessions: HashMap::new(),
            sliding: BTreeMap::new(),
            emitted: HashMap::new(),
            dirty: BTreeSet::new(),
            closed_through: i64::MIN,
            late: 0,
        })
    }

    fn fresh(&self) -> Result<Accs, String> {
        fresh(&self.aggs)
    }

    /// The ends of the windows that contain `t`.
    fn ends(&self, t: i64) -> Vec<i64> {
        self.window.ends(t)
    }

    fn size(&self) -> i64 {
        self.window.size()
    }

    /// Adds a delta; returns the times at which output may be due (window or session ends).
    fn absorb(&mut self, d: &Delta, frontier: Option<Time>) -> Result<BTreeSet<i64>, String> {
        let mut due = BTreeSet::new();
        if d.is_empty() {
            return Ok(due);
        }
        let times = eval(&self.window_time, &d.rows)?;
        let times =
            cast(&times, &DataType::Timestamp(TimeUnit::Millisecond, None)).map_err(|e| e.to_string())?;
        let times = times.as_any().downcast_ref::<TimestampMillisecondArray>().ok_or("window time")?.clone();
        let mut keys = self.keys.iter().map(|k| eval(k, &d.rows)).collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            keys.push(Arc::new(datafusion::arrow::array::UInt8Array::from(vec![0u8; d.len()])));
        }
        let rows = self.converter.convert_columns(&keys).map_err(|e| e.to_string())?;
        let args: Vec<Vec<ArrayRef>> = self
            .aggs
            .iter()
            .map(|a| a.expressions().iter().map(|e| eval(e, &d.rows)).collect::<Result<Vec<_>, _>>())
            .collect::<Result<_, _>>()?;
        let closed = |end: i64| window_closed(end, frontier);
        if let WindowKind::Session { gap } = self.window {
            for i in 0..d.len() {
                if times.is_null(i) {
                    continue;
                }
                let t = times.value(i);
                if closed(t + gap) {
                    self.late += 1;
                    continue;
                }
                let key = rows.row(i).owned();
                let mut merged = Session { last: t, accs: self.fresh()? };
                let mut start = t;
                let group = self.sessions.entry(key).or_default();
                let overlapping: Vec<i64> =
                    group.range(..t + gap).filter(|(_, s)| s.last + gap > t).map(|(&k, _)| k).collect();
                for k in overlapping {
                    let mut s = group.remove(&k).expect("listed");
                    start = start.min(k);
                    merged.last = merged.last.max(s.last);
                    for (into, from) in merged.accs.iter_mut().zip(s.accs.iter_mut()) {
                        into.merge_batch(&state_arrays(from.as_mut())?).map_err(|e| e.to_string())?;
                    }
                }
                update(&mut merged.accs, &args, &[i as u32], d.diffs[i])?;
                due.insert(merged.last + gap);
                group.insert(start, merged);
            }
            return Ok(due);
        }
        let pane = self.window.pane().expect("tumble and hop have panes");
        // Rows grouped by (pane, key, insert or retract), keys borrowed from the batch's rows.
        let mut groups: HashMap<(i64, datafusion::arrow::row::Row<'_>, bool), Vec<u32>> = HashMap::new();
        for i in 0..d.len() {
            if times.is_null(i) {
                continue;
            }
            let t = times.value(i);
            // The last window containing t ends at the last window start at or before t, plus
            // the size; if that one is closed, every window of the row is.
            let (step, size) = match self.window {
                WindowKind::Hop { slide, size } => (slide, size),
                _ => (self.size(), self.size()),
            };
            if closed(t.div_euclid(step) * step + size) {
                self.late += 1;
                continue;
            }
            let p = t.div_euclid(pane) * pane;
            let diff = d.diffs[i];
            let entry = groups.entry((p, rows.row(i), diff > 0)).or_default();
            for _ in 0..diff.unsigned_abs().max(1) {
                entry.push(i as u32);
            }
        }
        let mut panes_touched = BTreeSet::new();
        for ((p, key, insert), idx) in groups {
            let key = key.owned();
            panes_touched.insert(p);
            if !self.panes.get(&p).is_some_and(|g| g.contains_key(&key)) {
                let fresh = self.fresh()?;
                self.panes.entry(p).or_default().insert(key.clone(), fresh);
            }
            let accs = self.panes.get_mut(&p).and_then(|g| g.get_mut(&key)).expect("inserted");
            update(accs, &args, &idx, if insert { 1 } else { -1 })?;
        }
        for p in panes_touched {
            for e in self.ends(p) {
                if !closed(e) {
                    due.insert(e);
                    if self.emit == Emit::Updates {
                        self.dirty.insert(e);
                    }
                }
            }
        }
        Ok(due)
    }

    /// Emits what is final (or, in updates mode, what changed) once the frontier is at `frontier`.
    fn flush(&mut self, frontier: Option<Time>) -> Result<Vec<(i64, Delta)>, String> {
        let mut out = Vec::new();
        let closed = |end: i64| window_closed(end, frontier);
        if let WindowKind::Session { gap } = self.window {
            let mut done: Vec<(i64, OwnedRow, i64, Accs)> = Vec::new();
            for (key, group) in self.sessions.iter_mut() {
                let ends: Vec<i64> =
                    group.iter().filter(|(_, s)| closed(s.last + gap)).map(|(&k, _)| k).collect();
                for k in ends {
                    let s = group.remove(&k).expect("listed");
                    done.push((s.last + gap, key.clone(), k, s.accs));
                }
            }
            self.sessions.retain(|_, g| !g.is_empty());
            done.sort_by(|a, b| (a.0, &a.1, a.2).cmp(&(b.0, &b.1, b.2)));
            let mut by_end: BTreeMap<i64, Vec<(OwnedRow, i64, i64, Accs)>> = BTreeMap::new();
            for (end, key, start, accs) in done {
                by_end.entry(end).or_default().push((key, start, end, accs));
            }
            for (end, groups) in by_end {
                let rows = self.rows(groups)?;
                let n = rows.num_rows();
                out.push((end, Delta::inserts(rows, vec![end as Time; n])));
            }
            return Ok(out);
        }
        let size = self.size();
        let pane = self.window.pane().expect("panes");
        if let (WindowKind::Hop { slide, size }, Emit::OnClose) = (self.window, self.emit) {
            return self.close_hops(slide, size, frontier);
        }
        // Closed windows, in order of their ends.
        let mut closing: BTreeSet<i64> = BTreeSet::new();
        for &p in self.panes.keys() {
            for e in self.ends(p) {
                if e > self.closed_through && closed(e) {
                    closing.insert(e);
                }
            }
        }
        for end in closing {
            self.dirty.remove(&end);
            self.closed_through = self.closed_through.max(end);
            let groups = self.window_groups(end, size, pane, true)?;
            let batch = self.rows(groups)?;
            let d = if self.emit == Emit::Updates {
                self.changes(end, batch, true)?
            } else {
                let n = batch.num_rows();
                Delta::inserts(batch, vec![end as Time; n])
            };
            out.push((end, d));
            // Panes no later window needs.
            let keep_from = end - size + self.slide();
            self.panes.retain(|&p, _| p >= keep_from);
        }
        out.retain(|(_, d)| !d.is_empty());
        Ok(out)
    }

    /// Closes hopping windows with two stacks per group (the "two-stacks" sliding-window
    /// aggregation): a pane is merged into the back stack once when it is complete, evicted
    /// from the front stack once when the window slides past it, and each window's value is one
    /// merge of the front's suffix with the back's total. A window of `size / slide` panes thus
    /// costs O(1) merges per group per slide instead of O(size / slide).
    fn close_hops(
        &mut self,
        slide: i64,
        size: i64,
        frontier: Option<Time>,
    ) -> Result<Vec<(i64, Delta)>, String> {
        let closed = |end: i64| window_closed(end, frontier);
        let mut out = Vec::new();
        loop {
            let mut next: Option<i64> = None;
            if self.closed_through > i64::MIN && !self.sliding.is_empty() {
                next = Some(self.closed_through + slide);
            }
            if let Some(&p) = self.panes.keys().next() {
                // The first window containing pane p ends at (the first start above p - size) + size.
                let first = (p - size).div_euclid(slide) * slide + slide + size;
                let first = if self.closed_through > i64::MIN {
                    first.max(self.closed_through + slide)
                } else {
                    first
                };
                next = Some(next.map_or(first, |n| n.min(first)));
            }
            let Some(end) = next else { break };
            if !closed(end) {
                break;
            }
            let start = end - size;
            // Seal the panes that are complete.
            let sealed: Vec<i64> = self.panes.range(..end).map(|(&p, _)| p).collect();
            for p in sealed {
                let groups = self.panes.remove(&p).expect("listed");
                for (key, mut accs) in groups {
                    if !self.sliding.contains_key(&key) {
                        let fresh = self.fresh()?;
                        self.sliding.insert(key.clone(), Sliding::new(fresh));
                    }
                    let slot = self.sliding.get_mut(&key).expect("inserted");
                    let states =
                        accs.iter_mut().map(|a| state_arrays(a.as_mut())).collect::<Result<Vec<_>, _>>()?;
                    for (acc, st) in slot.back_acc.iter_mut().zip(&states) {
                        acc.merge_batch(st).map_err(|e| e.to_string())?;
                    }
                    slot.back.push((p, states));
                }
            }
            // Evaluate every group's window [start, end).
            let mut groups = Vec::new();
            let mut empty = Vec::new();
            let aggs = self.aggs.clone();
            for (key, slot) in self.sliding.iter_mut() {
                match slot.window(start, &aggs)? {
                    Some(accs) => groups.push((key.clone(), start, end, accs)),
                    None => empty.push(key.clone()),
                }
            }
            for k in empty {
                self.sliding.remove(&k);
            }
            self.closed_through = end;
            if !groups.is_empty() {
                let batch = self.rows(groups)?;
                let n = batch.num_rows();
                out.push((end, Delta::inserts(batch, vec![end as Time; n])));
            }
        }
        Ok(out)
    }

    /// Updates mode: the changes of the windows that changed and are still open.
    fn updates(&mut self, frontier: Option<Time>) -> Result<Vec<Delta>, String> {
        let closed = |end: i64| window_closed(end, frontier);
        let (size, pane) = (self.size(), self.window.pane().expect("panes"));
        let mut out = Vec::new();
        for end in std::mem::take(&mut self.dirty) {
            if closed(end) || end <= self.closed_through {
                continue;
            }
            let groups = self.window_groups(end, size, pane, false)?;
            let batch = self.rows(groups)?;
            let d = self.changes(end, batch, false)?;
            if !d.is_empty() {
                out.push(d);
            }
        }
        Ok(out)
    }

    fn slide(&self) -> i64 {
        match self.window {
            WindowKind::Hop { slide, .. } => slide,
            WindowKind::Tumble { size } => size,
            WindowKind::Session { gap } => gap,
        }
    }

    /// The groups of window `[end - size, end)` with their merged accumulators. `closing`
    /// windows of a tumble take their pane's accumulators; otherwise panes stay as they were.
    fn window_groups(
        &mut self,
        end: i64,
        size: i64,
        pane: i64,
        closing: bool,
    ) -> Result<Vec<(OwnedRow, i64, i64, Accs)>, String> {
        let start = end - size;
        let aggs = self.aggs.clone();
        if pane == size {
            if closing {
                let groups = self.panes.remove(&start).unwrap_or_default();
                return Ok(groups.into_iter().map(|(k, a)| (k, start, end, a)).collect());
            }
            let Some(groups) = self.panes.get_mut(&start) else { return Ok(Vec::new()) };
            let mut v = Vec::with_capacity(groups.len());
            for (k, accs) in groups.iter_mut() {
                let copy =
                    accs.iter_mut().zip(&aggs).map(|(a, agg)| copy_acc(a, agg)).collect::<Result<_, _>>()?;
                v.push((k.clone(), start, end, copy));
            }
            return Ok(v);
        }
        let mut merged: BTreeMap<OwnedRow, Accs> = BTreeMap::new();
        for (_, groups) in self.panes.range_mut(start..end) {
            for (k, accs) in groups.iter_mut() {
                if !merged.contains_key(k) {
                    merged.insert(k.clone(), fresh(&aggs)?);
                }
                let into = merged.get_mut(k).expect("inserted");
                for ((into, acc), agg) in into.iter_mut().zip(accs.iter_mut()).zip(&aggs) {
                    into.merge_batch(&snapshot(acc, agg)?).map_err(|e| e.to_string())?;
                }
            }
        }
        Ok(merged.into_iter().map(|(k, a)| (k, start, end, a)).collect())
    }

    /// Output rows for groups: group columns (window struct at its place), then aggregates.
    fn rows(&self, mut groups: Vec<(OwnedRow, i64, i64, Accs)>) -> Result<RecordBatch, String> {
        let n = groups.len();
        let mut keys =
            self.converter.convert_rows(groups.iter().map(|g| g.0.row())).map_err(|e| e.to_string())?;
        if self.keys.is_empty() {
            keys.clear();
        }
        let ts = |v: Vec<i64>| Arc::new(TimestampMillisecondArray::from(v).with_timezone("UTC")) as ArrayRef;
        let DataType::Struct(fields) = window_type() else { unreachable!("window type is a struct") };
        let window: ArrayRef = Arc::new(StructArray::new(
            fields,
            vec![ts(groups.iter().map(|g| g.1).collect()), ts(groups.iter().map(|g| g.2).collect())],
            None,
        ));
        let mut values: Vec<Vec<ScalarValue>> = vec![Vec::with_capacity(n); self.aggs.len()];
        for g in groups.iter_mut() {
            for (i, acc) in g.3.iter_mut().enumerate() {
                values[i].push(acc.evaluate().map_err(|e| e.to_string())?);
            }
        }
        let mut cols: Vec<ArrayRef> = keys;
        cols.insert(self.window_pos, window);
        for (i, v) in values.into_iter().enumerate() {
            let field = self.aggs[i].field();
            let arr = if v.is_empty() {
                datafusion::arrow::array::new_empty_array(field.data_type())
            } else {
                ScalarValue::iter_to_array(v).map_err(|e| e.to_string())?
            };
            cols.push(arr);
        }
        let cols = conform_columns(cols, &self.schema)?;
        RecordBatch::try_new(Arc::clone(&self.schema), cols).map_err(|e| e.to_string())
    }

    /// Updates mode: the changes from what was last emitted for window `end` to `batch`.
    fn changes(&mut self, end: i64, batch: RecordBatch, closing: bool) -> Result<Delta, String> {
        let key_cols: Vec<ArrayRef> = (0..self.keys.len() + 1).map(|i| Arc::clone(batch.column(i))).collect();
        let rows = key_rows(&key_cols).map_err(|e| e.to_string())?;
        let mut parts: Vec<RecordBatch> = Vec::new();
        let mut diffs = Vec::new();
        for i in 0..batch.num_rows() {
            let now = batch.slice(i, 1);
            let k = (end, rows.row(i).owned());
            match self.emitted.get(&k) {
                Some(prev) if *prev == now => {}
                Some(prev) => {
                    parts.push(prev.clone());
                    diffs.push(-1);
                    parts.push(now.clone());
                    diffs.push(1);
                }
                None => {
                    parts.push(now.clone());
                    diffs.push(1);
                }
            }
            if closing {
                self.emitted.remove(&k);
            } else {
                self.emitted.insert(k, now);
            }
        }
        if closing {
            self.emitted.retain(|(e, _), _| *e != end);
        }
        let rows =
            datafusion::arrow::compute::concat_batches(&self.schema, &parts).map_err(|e| e.to_string())?;
        Ok(Delta { rows, times: vec![end as Time; diffs.len()], diffs })
    }
}

fn state_arrays(acc: &mut dyn Accumulator) -> Result<Vec<ArrayRef>, String> {
    let state = acc.state().map_err(|e| e.to_string())?;
    state.iter().map(|v| v.to_array()).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())
}

/// A copy of the accumulator in `slot` (through its state), leaving `slot` as it was.
fn copy_acc(
    slot: &mut Box<dyn Accumulator>,
    agg: &Arc<AggregateFunctionExpr>,
) -> Result<Box<dyn Accumulator>, String> {
    let mut copy = agg.create_accumulator().map_err(|e| e.to_string())?;
    copy.merge_batch(&snapshot(slot, agg)?).map_err(|e| e.to_string())?;
    Ok(copy)
}

fn update(accs: &mut Accs, args: &[Vec<ArrayRef>], idx: &[u32], sign: i64) -> Result<(), String> {
    let take = UInt32Array::from(idx.to_vec());
    for (acc, cols) in accs.iter_mut().zip(args) {
        let cols = cols
            .iter()
            .map(|c| datafusion::arrow::compute::take(c.as_ref(), &take, None))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        if sign >= 0 {
            acc.update_batch(&cols).map_err(|e| e.to_string())?;
        } else if acc.supports_retract_batch() {
            acc.retract_batch(&cols).map_err(|e| e.to_string())?;
        } else {
            return Err("a retraction reached an aggregate that cannot retract".into());
        }
    }
    Ok(())
}

/// Renders a window aggregate over `input`.
pub fn render_aggregate<'s>(a: &AggregateNode, input: Deltas<'s>, cx: &RenderContext) -> Deltas<'s> {
    let err = Rc::clone(&cx.on_error);
    let state = WindowAgg::new(a);
    let mut held = cx.state.share();
    key_by(input, a.keys.clone(), cx).unary_frontier::<CB<Delta>, _, _, _>(
        by_worker(),
        &cx.name("WindowAggregate"),
        move |_cap, _info| {
            let mut state = match state {
                Ok(s) => Some(s),
                Err(e) => {
                    err(format!("window aggregate: {e}"));
                    None
                }
            };
            let mut caps: BTreeMap<i64, Capability<Time>> = BTreeMap::new();
            // Updates mode: input by time, applied (and its changes emitted) once complete.
            let mut stash: ByTime<Vec<Delta>> = ByTime::default();
            move |(input, frontier), output| {
                let f = frontier_time(frontier);
                let Some(state) = state.as_mut() else {
                    input.for_each(|_, _| {});
                    return;
                };
                let mut absorb =
                    |state: &mut WindowAgg, cap: &Capability<Time>, d: &Delta, at: Option<Time>| match state
                        .absorb(d, at)
                    {
                        Ok(due) => {
                            for e in due {
                                caps.entry(e)
                                    .or_insert_with(|| cap.delayed(&(e.max(0) as Time).max(*cap.time())));
                            }
                            if state.late > 0 {
                                err(format!(
                                    "{} rows reached windows that had already closed and were left out",
                                    std::mem::take(&mut state.late)
                                ));
                            }
                        }
                        Err(e) => err(format!("window aggregate: {e}")),
                    };
                input.for_each(|cap, data| {
                    let Some(cap) = cap.retain_least(0) else { return };
                    if state.emit == Emit::Updates {
                        stash.at(&cap).extend(data.drain(..).map(|(_, d)| d));
                    } else {
                        // Late is judged against the message's time, not the frontier seen now
                        // (which may lag behind it): the same rows count whatever the schedule.
                        let at = Some(*cap.time());
                        for (_, d) in data.drain(..) {
                            absorb(state, &cap, &d, at);
                        }
                    }
                });
                while let Some((t, cap, deltas)) = stash.next_ready(f) {
                    for d in &deltas {
                        absorb(state, &cap, d, Some(t));
                    }
                    match state.updates(Some(t)) {
                        Ok(changes) => {
                            let mut session = output.session(&cap);
                            for mut d in changes {
                                d.times = vec![t; d.len()];
                                session.give(d);
                            }
                        }
                        Err(e) => err(format!("window aggregate: {e}")),
                    }
                }
                if caps.first_key_value().is_some_and(|(e, _)| window_closed(*e, f)) {
                    match state.flush(f) {
                        Ok(out) => {
                            for (end, d) in out {
                                let cap = caps
                                    .range(end..)
                                    .next()
                                    .map(|(_, c)| c)
                                    .or_else(|| caps.values().next())
                                    .map(|c| c.delayed(&(end.max(0) as Time).max(*c.time())));
                                if let Some(cap) = cap {
                                    output.session(&cap).give(d);
                                }
                            }
                        }
                        Err(e) => err(format!("window aggregate: {e}")),
                    }
                }
                // Release capabilities for windows that have closed.
                caps.retain(|e, _| !window_closed(*e, f));
                held.set(state.held() + stash.held(|ds| ds.iter().map(Delta::len).sum()));
            }
        },
    )
}

//! Rendering a rule's [`Node`] tree as timely operators over [`Delta`] streams.
//!
//! Stateless nodes run where the batch is. Stateful nodes (window aggregates, joins, distinct)
//! exchange rows by key between workers and keep their state columnar: Arrow batches indexed by
//! key rows (arrow's row format), and DataFusion accumulators per window pane. Nothing here
//! goes through differential's arrangements: at roughly a microsecond per row-update they
//! would spend the whole per-detection budget, while these operators update one accumulator
//! per (group, pane) per batch. They follow differential's discipline all the same: changes
//! carry diffs, a time's changes are applied once the frontier has passed it (so the output
//! does not depend on scheduling or the number of workers), and state is dropped once the
//! watermark makes it unreachable.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, RecordBatch, StructArray, TimestampMillisecondArray, UInt32Array,
    new_null_array,
};
use datafusion::arrow::compute::{cast, interleave};
use datafusion::arrow::datatypes::{DataType, Field, SchemaRef, TimeUnit};
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Capability, Concat};
use timely::progress::frontier::MutableAntichain;
use vigil_engine::runtime::{BatchKind, EventBatch, Time};
use vigil_engine::schema::event_times;

use crate::delta::{Delta, key_rows};
use crate::plan::{AggregateNode, Emit, JoinNode, JoinShape, Node, PhysExpr, Step};
use crate::window::{WindowKind, window_type};

/// A stream of changes to a rule's relation.
pub type Deltas<'scope> = Stream<'scope, Time, Vec<Delta>>;

type CB<D> = timely::container::CapacityContainerBuilder<Vec<D>>;

/// What the operators of one rule need from their surroundings.
#[derive(Clone)]
pub struct RenderContext {
    /// Number of workers (for partitioning).
    pub peers: usize,
    /// How long stream rows stay joinable with reference rows, and distinct rows remembered, ms.
    pub retention_ms: u64,
    /// Where evaluation errors go (they are bugs: rules are checked when compiled).
    pub on_error: Rc<dyn Fn(String)>,
}

/// Renders `node` over the engine's batches.
pub fn render<'s>(node: &Node, events: &Stream<'s, Time, Vec<EventBatch>>, cx: &RenderContext) -> Deltas<'s> {
    match node {
        Node::Source { stream } => {
            let stream = *stream;
            let err = Rc::clone(&cx.on_error);
            events.clone().unary::<CB<Delta>, _, _, _>(Pipeline, "RuleSource", move |_, _| {
                move |input, output| {
                    input.for_each(|cap, data| {
                        let mut session = output.session(&cap);
                        for b in data.iter().filter(|b| b.stream() == Some(stream)) {
                            match event_times(&b.data) {
                                Ok(t) => session.give(Delta::inserts(
                                    b.data.clone(),
                                    t.iter().map(|&t| t.max(0) as Time).collect(),
                                )),
                                Err(e) => err(format!("{} batch: {e}", stream.name())),
                            }
                        }
                    });
                }
            })
        }
        Node::Reference { table, schema } => {
            let (table, schema) = (table.clone(), Arc::clone(schema));
            let err = Rc::clone(&cx.on_error);
            events.clone().unary::<CB<Delta>, _, _, _>(Pipeline, "RuleReference", move |_, _| {
                move |input, output| {
                    input.for_each(|cap, data| {
                        let Some(cap) = cap.retain_least(0) else { return };
                        let mut session = output.session(&cap);
                        for b in data.iter() {
                            let BatchKind::Reference { table: t, diff } = &b.kind else { continue };
                            if **t != *table {
                                continue;
                            }
                            match conform(&b.data, &schema) {
                                Ok(rows) => {
                                    let n = rows.num_rows();
                                    session.give(Delta {
                                        rows,
                                        times: vec![*cap.time(); n],
                                        diffs: vec![*diff; n],
                                    });
                                }
                                Err(e) => err(format!("reference table {table}: {e}")),
                            }
                        }
                    });
                }
            })
        }
        Node::Map { input, steps, .. } => {
            let steps = steps.clone();
            map_deltas(render(input, events, cx), "RuleMap", cx, move |d| apply_steps(&steps, d))
        }
        Node::Union { inputs, schema } => {
            let mut out: Option<Deltas<'s>> = None;
            for i in inputs {
                let s = Arc::clone(schema);
                let one = map_deltas(render(i, events, cx), "UnionInput", cx, move |d| {
                    d.with_schema(Arc::clone(&s)).map(Some).map_err(|e| format!("union: {e}"))
                });
                out = Some(match out {
                    None => one,
                    Some(o) => o.concat(one),
                });
            }
            out.expect("a union has inputs")
        }
        Node::Aggregate(a) => render_aggregate(a, render(&a.input, events, cx), cx),
        Node::Join(j) => render_join(j, render(&j.left, events, cx), render(&j.right, events, cx), cx),
        Node::Distinct { input } => render_distinct(render(input, events, cx), cx),
    }
}

/// A stateless operator: `f` turns each delta into one (or none); errors go to `on_error`.
fn map_deltas<'s>(
    input: Deltas<'s>,
    name: &str,
    cx: &RenderContext,
    mut f: impl FnMut(Delta) -> Result<Option<Delta>, String> + 'static,
) -> Deltas<'s> {
    let err = Rc::clone(&cx.on_error);
    input.unary::<CB<Delta>, _, _, _>(Pipeline, name, move |_, _| {
        move |input, output| {
            input.for_each(|cap, data| {
                let mut session = output.session(&cap);
                for d in data.drain(..) {
                    match f(d) {
                        Ok(Some(d)) => session.give(d),
                        Ok(None) => {}
                        Err(e) => err(e),
                    }
                }
            });
        }
    })
}

/// Applies map steps; `None` when no row is left.
pub fn apply_steps(steps: &[Step], mut d: Delta) -> Result<Option<Delta>, String> {
    for step in steps {
        if d.is_empty() {
            return Ok(None);
        }
        match step {
            Step::Filter(pred) => {
                let mask = eval(pred, &d.rows)?;
                let mask = mask
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .ok_or("a predicate that is not boolean")?
                    .clone();
                d = d.filter(&mask).map_err(|e| e.to_string())?;
            }
            Step::Project(exprs, schema) => {
                let cols = exprs.iter().map(|e| eval(e, &d.rows)).collect::<Result<Vec<_>, _>>()?;
                let cols = conform_columns(cols, schema)?;
                d.rows = RecordBatch::try_new(Arc::clone(schema), cols).map_err(|e| e.to_string())?;
            }
        }
    }
    Ok((!d.is_empty()).then_some(d))
}

fn eval(e: &PhysExpr, batch: &RecordBatch) -> Result<ArrayRef, String> {
    e.evaluate(batch).and_then(|v| v.into_array(batch.num_rows())).map_err(|e| e.to_string())
}

/// Casts columns to the schema's types where they differ only in representation.
fn conform_columns(cols: Vec<ArrayRef>, schema: &SchemaRef) -> Result<Vec<ArrayRef>, String> {
    cols.into_iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c)
            } else {
                cast(&c, f.data_type()).map_err(|e| format!("column {}: {e}", f.name()))
            }
        })
        .collect()
}

/// A batch's columns by name, cast to `schema` (reference rows may come from any producer).
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, String> {
    let cols = schema
        .fields()
        .iter()
        .map(|f| {
            batch.column_by_name(f.name()).cloned().ok_or_else(|| format!("missing column {}", f.name()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let cols = conform_columns(cols, schema)?;
    RecordBatch::try_new(Arc::clone(schema), cols).map_err(|e| e.to_string())
}

/// The least time the frontier still allows, `None` when the input is complete.
fn frontier_time(f: &MutableAntichain<Time>) -> Option<Time> {
    f.frontier().iter().min().copied()
}

fn before(t: Time, frontier: Option<Time>) -> bool {
    frontier.is_none_or(|f| t < f)
}

/// Splits deltas between workers by the value of `keys`.
fn key_by<'s>(
    input: Deltas<'s>,
    keys: Vec<PhysExpr>,
    cx: &RenderContext,
) -> Stream<'s, Time, Vec<(u64, Delta)>> {
    let peers = cx.peers;
    let err = Rc::clone(&cx.on_error);
    input.unary::<CB<(u64, Delta)>, _, _, _>(Pipeline, "KeyBy", move |_, _| {
        move |input, output| {
            input.for_each(|cap, data| {
                let mut session = output.session(&cap);
                for d in data.drain(..) {
                    let parts = keys
                        .iter()
                        .map(|k| eval(k, &d.rows))
                        .collect::<Result<Vec<_>, _>>()
                        .and_then(|k| d.partition(&k, peers).map_err(|e| e.to_string()));
                    match parts {
                        Ok(p) => session.give_iterator(p.into_iter()),
                        Err(e) => err(format!("partitioning: {e}")),
                    }
                }
            });
        }
    })
}

fn by_worker() -> Exchange<(u64, Delta), impl FnMut(&(u64, Delta)) -> u64> {
    Exchange::new(|(w, _): &(u64, Delta)| *w)
}

// ---------------------------------------------------------------------------------------------
// Window aggregates

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
        match self.window {
            WindowKind::Tumble { size } => vec![t.div_euclid(size) * size + size],
            WindowKind::Hop { slide, size } => {
                let mut s = t.div_euclid(slide) * slide;
                let mut v = Vec::new();
                while s + size > t {
                    v.push(s + size);
                    s -= slide;
                }
                v
            }
            WindowKind::Session { .. } => Vec::new(),
        }
    }

    fn size(&self) -> i64 {
        match self.window {
            WindowKind::Tumble { size } | WindowKind::Hop { size, .. } => size,
            WindowKind::Session { gap } => gap,
        }
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

fn render_aggregate<'s>(a: &AggregateNode, input: Deltas<'s>, cx: &RenderContext) -> Deltas<'s> {
    let err = Rc::clone(&cx.on_error);
    let state = WindowAgg::new(a);
    key_by(input, a.keys.clone(), cx).unary_frontier::<CB<Delta>, _, _, _>(
        by_worker(),
        "WindowAggregate",
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
            let mut stash: BTreeMap<Time, (Capability<Time>, Vec<Delta>)> = BTreeMap::new();
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
                        let slot = stash.entry(*cap.time()).or_insert_with(|| (cap.clone(), Vec::new()));
                        slot.1.extend(data.drain(..).map(|(_, d)| d));
                    } else {
                        // Late is judged against the message's time, not the frontier seen now
                        // (which may lag behind it): the same rows count whatever the schedule.
                        let at = Some(*cap.time());
                        for (_, d) in data.drain(..) {
                            absorb(state, &cap, &d, at);
                        }
                    }
                });
                while let Some(entry) = stash.first_entry() {
                    if !before(*entry.key(), f) {
                        break;
                    }
                    let (t, (cap, deltas)) = entry.remove_entry();
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
            }
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Joins

/// Rows kept by one side of a join.
#[derive(Default)]
struct Kept {
    batches: BTreeMap<u64, KeptBatch>,
    /// key → (batch, row); entries of dropped batches are skipped, and swept once they
    /// outnumber the live rows (so memory and probes stay proportional to what is kept).
    index: HashMap<OwnedRow, Vec<(u64, u32)>>,
    next: u64,
    /// Entries in `index`, and rows of the kept batches that are indexed.
    indexed: usize,
    live: usize,
}

/// A kept batch: rows, their times, when it expires, and how many of its rows are indexed.
struct KeptBatch {
    rows: RecordBatch,
    times: Vec<Time>,
    expiry: i64,
    indexed: usize,
}

impl Kept {
    fn insert(&mut self, d: &Delta, keys: &datafusion::arrow::row::Rows, expiry: i64) -> u64 {
        let id = self.next;
        self.next += 1;
        let mut indexed = 0;
        for i in 0..d.len() {
            if d.diffs[i] > 0 {
                self.index.entry(keys.row(i).owned()).or_default().push((id, i as u32));
                indexed += 1;
            }
        }
        self.indexed += indexed;
        self.live += indexed;
        self.batches.insert(id, KeptBatch { rows: d.rows.clone(), times: d.times.clone(), expiry, indexed });
        id
    }

    fn expire(&mut self, frontier: Option<Time>) {
        let f = frontier.map_or(i64::MAX, |f| f as i64);
        let live = &mut self.live;
        self.batches.retain(|_, b| {
            let keep = b.expiry >= f;
            if !keep {
                *live -= b.indexed;
            }
            keep
        });
        if self.indexed > 2 * self.live + 1024 {
            let batches = &self.batches;
            self.index.retain(|_, v| {
                v.retain(|(b, _)| batches.contains_key(b));
                !v.is_empty()
            });
            self.indexed = self.live;
        }
    }

    fn matches(&self, key: &OwnedRow) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.index.get(key).into_iter().flatten().copied().filter(|(b, _)| self.batches.contains_key(b))
    }
}

/// Reference rows: kept whole, with multiplicities.
#[derive(Default)]
struct RefRows {
    batches: Vec<RecordBatch>,
    /// key → (batch, row, full row) for every present row.
    index: HashMap<OwnedRow, Vec<(usize, u32, OwnedRow)>>,
}

/// A time's join input: the capability to answer at, left deltas, right deltas.
type JoinStash = (Capability<Time>, Vec<Delta>, Vec<Delta>);

struct Pairs {
    /// (left source, row, right source, row, time, diff); source `usize::MAX` is a null row.
    rows: Vec<(usize, u32, usize, u32, Time, i64)>,
}

fn render_join<'s>(j: &JoinNode, left: Deltas<'s>, right: Deltas<'s>, cx: &RenderContext) -> Deltas<'s> {
    let err = Rc::clone(&cx.on_error);
    let left = key_by(left, j.left_keys.clone(), cx);
    let right = key_by(right, j.right_keys.clone(), cx);
    let (lkeys, rkeys) = (j.left_keys.clone(), j.right_keys.clone());
    let (lschema, rschema) = (j.left.schema(), j.right.schema());
    let schema = Arc::clone(&j.schema);
    let filter = j.filter.clone();
    let kind = j.kind;
    let null_aware = j.null_aware;
    let shape = j.shape.clone();
    let retention = cx.retention_ms as i64;
    left.binary_frontier::<_, CB<Delta>, _, _, _, _>(
        right,
        by_worker(),
        by_worker(),
        "Join",
        move |_cap, _info| {
            // time → (capability, left deltas, right deltas): a time's changes apply once complete.
            let mut stash: BTreeMap<Time, JoinStash> = BTreeMap::new();
            let mut lkept = Kept::default();
            let mut rkept = Kept::default();
            let mut refs = RefRows::default();
            move |(in1, f1), (in2, f2), output| {
                in1.for_each(|cap, data| {
                    let Some(cap) = cap.retain_least(0) else { return };
                    let e = stash.entry(*cap.time()).or_insert_with(|| (cap.clone(), Vec::new(), Vec::new()));
                    e.1.extend(data.drain(..).map(|(_, d)| d));
                });
                in2.for_each(|cap, data| {
                    let Some(cap) = cap.retain_least(0) else { return };
                    let e = stash.entry(*cap.time()).or_insert_with(|| (cap.clone(), Vec::new(), Vec::new()));
                    e.2.extend(data.drain(..).map(|(_, d)| d));
                });
                let f = match (frontier_time(f1), frontier_time(f2)) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                while let Some(entry) = stash.first_entry() {
                    if !before(*entry.key(), f) {
                        break;
                    }
                    let (t, (cap, ls, rs)) = entry.remove_entry();
                    let result = match &shape {
                        JoinShape::StreamReference { stream_left } => {
                            let (streams, refs_in, skeys, fkeys) = if *stream_left {
                                (ls, rs, &lkeys, &rkeys)
                            } else {
                                (rs, ls, &rkeys, &lkeys)
                            };
                            let kept = if *stream_left { &mut lkept } else { &mut rkept };
                            stream_ref_step(
                                t,
                                streams,
                                refs_in,
                                skeys,
                                fkeys,
                                *stream_left,
                                kind,
                                null_aware,
                                retention,
                                kept,
                                &mut refs,
                                &lschema,
                                &rschema,
                                &schema,
                            )
                        }
                        JoinShape::Interval { left_time, right_time, lo, hi } => interval_step(
                            ls, rs, &lkeys, &rkeys, left_time, right_time, *lo, *hi, &mut lkept, &mut rkept,
                            &schema,
                        ),
                    };
                    match result.and_then(|d| match (&filter, d) {
                        (Some(p), Some(d)) => apply_steps(&[Step::Filter(Arc::clone(p))], d),
                        (_, d) => Ok(d),
                    }) {
                        Ok(Some(d)) => output.session(&cap).give(d),
                        Ok(None) => {}
                        Err(e) => err(format!("join: {e}")),
                    }
                    lkept.expire(Some(t));
                    rkept.expire(Some(t));
                }
                lkept.expire(f);
                rkept.expire(f);
            }
        },
    )
}

#[allow(clippy::too_many_arguments)]
fn stream_ref_step(
    t: Time,
    streams: Vec<Delta>,
    refs_in: Vec<Delta>,
    skeys: &[PhysExpr],
    fkeys: &[PhysExpr],
    stream_left: bool,
    kind: datafusion::common::JoinType,
    null_aware: bool,
    retention: i64,
    kept: &mut Kept,
    refs: &mut RefRows,
    lschema: &SchemaRef,
    rschema: &SchemaRef,
    schema: &SchemaRef,
) -> Result<Option<Delta>, String> {
    use datafusion::common::JoinType as J;
    let mut stream_batches: Vec<RecordBatch> = Vec::new();
    let mut pairs = Pairs { rows: Vec::new() };
    // Stream rows kept from earlier times, addressed by (batch id) → position in `stream_batches`.
    let mut kept_pos: HashMap<u64, usize> = HashMap::new();
    let t_i = t as i64;
    // 1. Reference changes at t: match the kept stream rows (retroactively).
    for d in &refs_in {
        let (keys, nulls) = eval_keys(fkeys, &d.rows)?;
        let full = full_rows(&d.rows)?;
        let rpos = refs.batches.len();
        refs.batches.push(d.rows.clone());
        for (i, &null) in nulls.iter().enumerate() {
            if null {
                continue;
            }
            let key = keys.row(i).owned();
            let before = refs.index.get(&key).map_or(0, Vec::len);
            let diff = d.diffs[i].signum();
            // Update the reference index first (so a removal finds its row).
            let (rsrc, ridx) = if diff > 0 {
                refs.index.entry(key.clone()).or_default().push((rpos, i as u32, full.row(i).owned()));
                (rpos, i as u32)
            } else {
                let Some(v) = refs.index.get_mut(&key) else { continue };
                let Some(at) = v.iter().position(|(_, _, r)| r.row() == full.row(i)) else { continue };
                let (b, r, _) = v.remove(at);
                if v.is_empty() {
                    refs.index.remove(&key);
                }
                (b, r)
            };
            let after = refs.index.get(&key).map_or(0, Vec::len);
            let matched: Vec<(u64, u32)> = kept.matches(&key).collect();
            for (b, r) in matched {
                let KeptBatch { rows: batch, times, .. } = &kept.batches[&b];
                let st = times[r as usize];
                if st as i64 + retention < t_i {
                    continue;
                }
                let pos = *kept_pos.entry(b).or_insert_with(|| {
                    stream_batches.push(batch.clone());
                    stream_batches.len() - 1
                });
                match kind {
                    J::Inner => pairs.rows.push((pos, r, rsrc, ridx, st, diff)),
                    J::Left | J::Right => {
                        if before == 0 && after > 0 {
                            pairs.rows.push((pos, r, usize::MAX, 0, st, -1));
                        }
                        pairs.rows.push((pos, r, rsrc, ridx, st, diff));
                        if after == 0 && before > 0 {
                            pairs.rows.push((pos, r, usize::MAX, 0, st, 1));
                        }
                    }
                    J::LeftSemi => {
                        if before == 0 && after > 0 {
                            pairs.rows.push((pos, r, usize::MAX, 0, st, 1));
                        } else if after == 0 && before > 0 {
                            pairs.rows.push((pos, r, usize::MAX, 0, st, -1));
                        }
                    }
                    J::LeftAnti => {
                        if before == 0 && after > 0 {
                            pairs.rows.push((pos, r, usize::MAX, 0, st, -1));
                        } else if after == 0 && before > 0 {
                            pairs.rows.push((pos, r, usize::MAX, 0, st, 1));
                        }
                    }
                    _ => return Err(format!("{kind} join")),
                }
            }
        }
    }
    // 2. Stream rows at t: match the reference rows as they are now, and keep the rows.
    for d in &streams {
        let (keys, nulls) = eval_keys(skeys, &d.rows)?;
        let pos = stream_batches.len();
        stream_batches.push(d.rows.clone());
        let expiry = d.times.iter().copied().max().unwrap_or(t) as i64 + retention;
        for (i, &null) in nulls.iter().enumerate() {
            let st = d.times[i];
            let diff = d.diffs[i];
            let found: &[(usize, u32, OwnedRow)] =
                if null { &[] } else { refs.index.get(&keys.row(i).owned()).map_or(&[], Vec::as_slice) };
            match kind {
                J::Inner => {
                    found.iter().for_each(|(b, r, _)| pairs.rows.push((pos, i as u32, *b, *r, st, diff)))
                }
                J::Left | J::Right => {
                    if found.is_empty() {
                        pairs.rows.push((pos, i as u32, usize::MAX, 0, st, diff));
                    }
                    found.iter().for_each(|(b, r, _)| pairs.rows.push((pos, i as u32, *b, *r, st, diff)));
                }
                J::LeftSemi if !found.is_empty() => pairs.rows.push((pos, i as u32, usize::MAX, 0, st, diff)),
                J::LeftAnti if found.is_empty() && !(null && null_aware) => {
                    pairs.rows.push((pos, i as u32, usize::MAX, 0, st, diff))
                }
                _ => {}
            }
        }
        kept.insert(d, &keys, expiry);
    }
    if pairs.rows.is_empty() {
        return Ok(None);
    }
    let (sschema, fschema) = if stream_left { (lschema, rschema) } else { (rschema, lschema) };
    let semi = matches!(kind, J::LeftSemi | J::LeftAnti);
    let stream_cols = gather(&stream_batches, sschema, pairs.rows.iter().map(|p| (p.0, p.1)))?;
    let cols = if semi {
        stream_cols
    } else {
        let ref_cols = gather(&refs.batches, fschema, pairs.rows.iter().map(|p| (p.2, p.3)))?;
        if stream_left { [stream_cols, ref_cols].concat() } else { [ref_cols, stream_cols].concat() }
    };
    let cols = conform_columns(cols, schema)?;
    let rows = RecordBatch::try_new(Arc::clone(schema), cols).map_err(|e| e.to_string())?;
    Ok(Some(Delta {
        rows,
        times: pairs.rows.iter().map(|p| p.4).collect(),
        diffs: pairs.rows.iter().map(|p| p.5).collect(),
    }))
}

#[allow(clippy::too_many_arguments)]
fn interval_step(
    ls: Vec<Delta>,
    rs: Vec<Delta>,
    lkeys: &[PhysExpr],
    rkeys: &[PhysExpr],
    left_time: &PhysExpr,
    right_time: &PhysExpr,
    lo: i64,
    hi: i64,
    lkept: &mut Kept,
    rkept: &mut Kept,
    schema: &SchemaRef,
) -> Result<Option<Delta>, String> {
    let mut lb: Vec<RecordBatch> = Vec::new();
    let mut rb: Vec<RecordBatch> = Vec::new();
    let mut lpos: HashMap<u64, usize> = HashMap::new();
    let mut rpos: HashMap<u64, usize> = HashMap::new();
    let mut pairs: Vec<(usize, u32, usize, u32, Time, i64)> = Vec::new();
    let max_time = |e: &PhysExpr, d: &Delta| -> Result<i64, String> {
        let a = cast(&eval(e, &d.rows)?, &DataType::Timestamp(TimeUnit::Millisecond, None))
            .map_err(|e| e.to_string())?;
        let a = a.as_any().downcast_ref::<TimestampMillisecondArray>().ok_or("join time")?.clone();
        Ok(a.iter().flatten().max().unwrap_or(i64::MIN))
    };
    // Left rows first: they meet the right rows kept so far, then are kept. Right rows then
    // meet every kept left row (including this time's): each pair is produced exactly once.
    for d in &ls {
        let (keys, nulls) = eval_keys(lkeys, &d.rows)?;
        let pos = lb.len();
        lb.push(d.rows.clone());
        for (i, &null) in nulls.iter().enumerate() {
            if null {
                continue;
            }
            for (b, r) in rkept.matches(&keys.row(i).owned()) {
                let KeptBatch { rows: batch, times, .. } = &rkept.batches[&b];
                let p = *rpos.entry(b).or_insert_with(|| {
                    rb.push(batch.clone());
                    rb.len() - 1
                });
                pairs.push((pos, i as u32, p, r, d.times[i].max(times[r as usize]), d.diffs[i]));
            }
        }
        // A left row can meet right rows up to `hi` after it.
        let expiry = max_time(left_time, d)?.saturating_add(hi);
        let id = lkept.insert(d, &keys, expiry);
        lpos.insert(id, pos);
    }
    for d in &rs {
        let (keys, nulls) = eval_keys(rkeys, &d.rows)?;
        let pos = rb.len();
        rb.push(d.rows.clone());
        for (i, &null) in nulls.iter().enumerate() {
            if null {
                continue;
            }
            for (b, r) in lkept.matches(&keys.row(i).owned()) {
                let KeptBatch { rows: batch, times, .. } = &lkept.batches[&b];
                let p = *lpos.entry(b).or_insert_with(|| {
                    lb.push(batch.clone());
                    lb.len() - 1
                });
                pairs.push((p, r, pos, i as u32, d.times[i].max(times[r as usize]), d.diffs[i]));
            }
        }
        // A right row can meet left rows down to `lo` before it.
        let expiry = max_time(right_time, d)?.saturating_sub(lo);
        rkept.insert(d, &keys, expiry);
    }
    if pairs.is_empty() {
        return Ok(None);
    }
    let lcols = gather_any(&lb, pairs.iter().map(|p| (p.0, p.1)))?;
    let rcols = gather_any(&rb, pairs.iter().map(|p| (p.2, p.3)))?;
    let cols = conform_columns([lcols, rcols].concat(), schema)?;
    let rows = RecordBatch::try_new(Arc::clone(schema), cols).map_err(|e| e.to_string())?;
    Ok(Some(Delta {
        rows,
        times: pairs.iter().map(|p| p.4).collect(),
        diffs: pairs.iter().map(|p| p.5).collect(),
    }))
}

/// Key rows of a batch, and for each row whether a key is null (null keys never match).
fn eval_keys(
    keys: &[PhysExpr],
    batch: &RecordBatch,
) -> Result<(datafusion::arrow::row::Rows, Vec<bool>), String> {
    let cols = keys.iter().map(|k| eval(k, batch)).collect::<Result<Vec<_>, _>>()?;
    let nulls = (0..batch.num_rows()).map(|i| cols.iter().any(|c| c.is_null(i))).collect();
    Ok((key_rows(&cols).map_err(|e| e.to_string())?, nulls))
}

fn full_rows(batch: &RecordBatch) -> Result<datafusion::arrow::row::Rows, String> {
    key_rows(batch.columns()).map_err(|e| e.to_string())
}

/// Gathers rows `(source batch, row)` into columns of `schema`; source `usize::MAX` is a row
/// of nulls.
fn gather(
    batches: &[RecordBatch],
    schema: &SchemaRef,
    idx: impl Iterator<Item = (usize, u32)>,
) -> Result<Vec<ArrayRef>, String> {
    let nulls = RecordBatch::try_new(
        Arc::new(datafusion::arrow::datatypes::Schema::new(
            schema
                .fields()
                .iter()
                .map(|f| Field::new(f.name(), f.data_type().clone(), true))
                .collect::<Vec<_>>(),
        )),
        schema.fields().iter().map(|f| new_null_array(f.data_type(), 1)).collect(),
    )
    .map_err(|e| e.to_string())?;
    let null_src = batches.len();
    let idx: Vec<(usize, usize)> =
        idx.map(|(b, r)| if b == usize::MAX { (null_src, 0) } else { (b, r as usize) }).collect();
    (0..schema.fields().len())
        .map(|c| {
            let mut arrays: Vec<ArrayRef> = batches
                .iter()
                .map(|b| {
                    let col = b.column(c);
                    if col.data_type() == schema.field(c).data_type() {
                        Ok(Arc::clone(col))
                    } else {
                        cast(col, schema.field(c).data_type()).map_err(|e| e.to_string())
                    }
                })
                .collect::<Result<_, _>>()?;
            arrays.push(Arc::clone(nulls.column(c)));
            let refs: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
            interleave(&refs, &idx).map_err(|e| e.to_string())
        })
        .collect()
}

fn gather_any(
    batches: &[RecordBatch],
    idx: impl Iterator<Item = (usize, u32)>,
) -> Result<Vec<ArrayRef>, String> {
    let schema = batches.first().map(|b| b.schema()).ok_or("no rows to gather")?;
    gather(batches, &schema, idx)
}

// ---------------------------------------------------------------------------------------------
// Distinct

fn render_distinct<'s>(input: Deltas<'s>, cx: &RenderContext) -> Deltas<'s> {
    let err = Rc::clone(&cx.on_error);
    let retention = cx.retention_ms;
    let peers = cx.peers;
    let keyed = input.unary::<CB<(u64, Delta)>, _, _, _>(Pipeline, "KeyByRow", move |_, _| {
        let err = Rc::clone(&err);
        move |input, output| {
            input.for_each(|cap, data| {
                let mut session = output.session(&cap);
                for d in data.drain(..) {
                    match d.partition(d.rows.columns(), peers) {
                        Ok(p) => session.give_iterator(p.into_iter()),
                        Err(e) => err(format!("distinct: {e}")),
                    }
                }
            });
        }
    });
    let err = Rc::clone(&cx.on_error);
    keyed.unary_frontier::<CB<Delta>, _, _, _>(by_worker(), "Distinct", move |_cap, _info| {
        let mut stash: BTreeMap<Time, (Capability<Time>, Vec<Delta>)> = BTreeMap::new();
        // row → (count, last time seen)
        let mut seen: HashMap<OwnedRow, (i64, Time)> = HashMap::new();
        move |(input, frontier), output| {
            input.for_each(|cap, data| {
                let Some(cap) = cap.retain_least(0) else { return };
                stash
                    .entry(*cap.time())
                    .or_insert_with(|| (cap.clone(), Vec::new()))
                    .1
                    .extend(data.drain(..).map(|(_, d)| d));
            });
            let f = frontier_time(frontier);
            while let Some(entry) = stash.first_entry() {
                if !before(*entry.key(), f) {
                    break;
                }
                let (_t, (cap, ds)) = entry.remove_entry();
                for d in ds {
                    let rows = match full_rows(&d.rows) {
                        Ok(r) => r,
                        Err(e) => {
                            err(format!("distinct: {e}"));
                            continue;
                        }
                    };
                    let mut idx = Vec::new();
                    let mut diffs = Vec::new();
                    for i in 0..d.len() {
                        let e = seen.entry(rows.row(i).owned()).or_insert((0, 0));
                        let was = e.0 > 0;
                        e.0 += d.diffs[i];
                        e.1 = e.1.max(d.times[i]);
                        let is = e.0 > 0;
                        if was != is {
                            idx.push(i as u32);
                            diffs.push(if is { 1 } else { -1 });
                        }
                    }
                    if idx.is_empty() {
                        continue;
                    }
                    match d.take(&idx) {
                        Ok(mut out) => {
                            out.diffs = diffs;
                            output.session(&cap).give(out);
                        }
                        Err(e) => err(format!("distinct: {e}")),
                    }
                }
            }
            if let Some(f) = f {
                seen.retain(|_, (n, last)| *n != 0 && *last + retention >= f);
            } else {
                seen.clear();
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    #[test]
    fn kept_join_rows_with_few_keys_do_not_pile_up_in_the_index() {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let mut kept = Kept::default();
        for t in 0..10_000u64 {
            // Ten rows per time, all with one of two keys: few keys, many rows over time.
            let keys: ArrayRef = Arc::new(Int64Array::from_iter_values((0..10).map(|i| i % 2)));
            let rows = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::clone(&keys)]).unwrap();
            let d = Delta::inserts(rows, vec![t; 10]);
            kept.insert(&d, &key_rows(&[keys]).unwrap(), t as i64 + 100);
            kept.expire(Some(t));
        }
        // About 100 times' worth of rows are live; the index holds at most a bounded multiple.
        assert!(kept.live <= 1_010, "{}", kept.live);
        let entries: usize = kept.index.values().map(Vec::len).sum();
        assert!(entries <= 2 * kept.live + 1024 + 10, "{entries} index entries for {} live rows", kept.live);
        let key = key_rows(&[Arc::new(Int64Array::from(vec![0])) as ArrayRef]).unwrap().row(0).owned();
        assert_eq!(kept.matches(&key).count(), kept.live / 2);
    }
}

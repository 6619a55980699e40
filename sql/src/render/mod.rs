//! Rendering a rule's [`Node`] tree as timely operators over [`Delta`] streams.
//!
//! One file per operator: [`map`] (filters and projections), [`window`] (window aggregates),
//! [`stream_ref_join`] (a stream with a reference table), [`interval_join`] (two streams bounded
//! in time) and [`distinct`]; [`join`] holds what the two joins share. The sources come from a
//! [`Graph`]: the engine's streams, typed by their definitions, imported on demand into a rule's
//! own dataflow from the main one (so a rule over `tracks` reads the tracks Parquet holds).
//!
//! Stateless nodes run where the batch is. Stateful nodes (window aggregates, joins, distinct)
//! exchange rows by key between workers and keep their state columnar: Arrow batches indexed by
//! key rows (arrow's row format), and DataFusion accumulators per window pane. Nothing here
//! goes through differential's arrangements: at roughly a microsecond per row-update they
//! would spend the whole per-detection budget, while these operators update one accumulator
//! per (group, pane) per batch. They follow differential's discipline all the same: changes
//! carry diffs, a time's changes are applied once the frontier has passed it ([`ByTime`], the
//! one helper they share), so the output does not depend on scheduling or the number of
//! workers, and state is dropped once the watermark makes it unreachable.
//!
//! Their hash maps are DataFusion's (hashbrown with foldhash), not the standard library's: SipHash
//! on each row's key was an eighth of the CPU of 25 window rules (`benches/README.md`).
//!
//! Every operator's name starts with its rule's name, so two rules' operators can be told apart
//! in timely's logs.

pub mod distinct;
pub mod interval_join;
pub mod join;
pub mod map;
pub mod stream_ref_join;
pub mod window;

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Capability, Concat};
use timely::progress::frontier::MutableAntichain;
use vigil_engine::graph::Graph;
use vigil_engine::parquet_sink::event_times;
use vigil_engine::runtime::Time;
use vigil_engine::stream::{Batches, StreamInfo};

use crate::delta::Delta;
use crate::plan::{Node, PhysExpr};

/// A stream of changes to a rule's relation.
pub type Deltas<'scope> = Stream<'scope, Time, Vec<Delta>>;

pub(crate) type CB<D> = timely::container::CapacityContainerBuilder<Vec<D>>;

/// What the operators of one rule need from their surroundings.
#[derive(Clone)]
pub struct RenderContext {
    /// The rule's name, which starts every operator's name.
    pub rule: String,
    /// Number of workers (for partitioning).
    pub peers: usize,
    /// How long stream rows stay joinable with reference rows, and distinct rows remembered, ms.
    pub retention_ms: u64,
    /// Where evaluation errors go (they are bugs: rules are checked when compiled).
    pub on_error: Rc<dyn Fn(String)>,
    /// Where the stateful operators report the rows they hold.
    pub state: StateMeter,
}

/// Rows a rule's operators hold, summed over its operators and workers: what the registry
/// checks against the rule's budget while the rule runs (and `SHOW RULES` shows).
#[derive(Clone, Debug, Default)]
pub struct StateMeter(Arc<std::sync::atomic::AtomicI64>);

impl StateMeter {
    /// The rows held now.
    pub fn rows(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// One operator's share, set after each of its activations and given back when the
    /// operator is dropped (its dataflow ended or was dropped).
    pub(crate) fn share(&self) -> Held {
        Held { meter: self.clone(), last: 0 }
    }
}

/// One operator's share of a [`StateMeter`].
pub(crate) struct Held {
    meter: StateMeter,
    last: i64,
}

impl Held {
    /// The operator holds `rows` rows now.
    pub(crate) fn set(&mut self, rows: usize) {
        let rows = rows as i64;
        if rows != self.last {
            self.meter.0.fetch_add(rows - self.last, std::sync::atomic::Ordering::Relaxed);
            self.last = rows;
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.set(0);
    }
}

impl RenderContext {
    /// The name of one of the rule's operators.
    pub fn name(&self, operator: &str) -> String {
        format!("{}: {operator}", self.rule)
    }
}

/// Renders `node` over the streams of `graph`.
pub fn render<'s>(node: &Node, graph: &mut Graph<'s>, cx: &RenderContext) -> Deltas<'s> {
    match node {
        Node::Source { stream } => source(source_stream(graph, stream), stream, cx),
        Node::Reference { table } => reference(source_stream(graph, table), table, cx),
        Node::Map { input, steps, .. } => map::render_map(render(input, graph, cx), steps.clone(), cx),
        Node::Union { inputs, schema } => {
            let mut out: Option<Deltas<'s>> = None;
            for i in inputs {
                let s = Arc::clone(schema);
                let one = map_deltas(render(i, graph, cx), &cx.name("UnionInput"), cx, move |d| {
                    d.with_schema(Arc::clone(&s)).map(Some).map_err(|e| format!("union: {e}"))
                });
                out = Some(match out {
                    None => one,
                    Some(o) => o.concat(one),
                });
            }
            out.expect("a union has inputs")
        }
        Node::Aggregate(a) => window::render_aggregate(a, render(&a.input, graph, cx), cx),
        Node::Join(j) => {
            let (left, right) = (render(&j.left, graph, cx), render(&j.right, graph, cx));
            join::render_join(j, left, right, cx)
        }
        Node::Distinct { input } => distinct::render_distinct(render(input, graph, cx), cx),
    }
}

/// The stream or table `info` from the graph (empty and complete when it has none).
fn source_stream<'s>(graph: &mut Graph<'s>, info: &'static StreamInfo) -> Batches<'s> {
    graph.lookup(info).unwrap_or_else(|| graph.empty())
}

/// A stream's batches as insertions at their rows' event times.
fn source<'s>(events: Batches<'s>, info: &'static StreamInfo, cx: &RenderContext) -> Deltas<'s> {
    let err = Rc::clone(&cx.on_error);
    events.unary::<CB<Delta>, _, _, _>(Pipeline, &cx.name(&format!("Source({})", info.name)), move |_, _| {
        move |input, output| {
            input.for_each(|cap, data| {
                let mut session = output.session(&cap);
                for b in data.iter() {
                    match event_times(&b.rows) {
                        Ok(t) => session.give(Delta::inserts(
                            b.rows.clone(),
                            t.iter().map(|&t| t.max(0) as Time).collect(),
                        )),
                        Err(e) => err(format!("{} batch: {e}", info.name)),
                    }
                }
            });
        }
    })
}

/// A reference table's changes at the time they were made.
fn reference<'s>(changes: Batches<'s>, info: &'static StreamInfo, cx: &RenderContext) -> Deltas<'s> {
    let err = Rc::clone(&cx.on_error);
    let schema = Arc::clone(&info.schema);
    changes.unary::<CB<Delta>, _, _, _>(
        Pipeline,
        &cx.name(&format!("Reference({})", info.name)),
        move |_, _| {
            move |input, output| {
                input.for_each(|cap, data| {
                    let Some(cap) = cap.retain_least(0) else { return };
                    let mut session = output.session(&cap);
                    for b in data.iter() {
                        match conform(&b.rows, &schema) {
                            Ok(rows) => {
                                let n = rows.num_rows();
                                session.give(Delta {
                                    rows,
                                    times: vec![*cap.time(); n],
                                    diffs: vec![b.diff; n],
                                });
                            }
                            Err(e) => err(format!("reference table {}: {e}", info.name)),
                        }
                    }
                });
            }
        },
    )
}

/// A stateless operator: `f` turns each delta into one (or none); errors go to `on_error`.
pub(crate) fn map_deltas<'s>(
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

pub(crate) fn eval(e: &PhysExpr, batch: &RecordBatch) -> Result<ArrayRef, String> {
    e.evaluate(batch).and_then(|v| v.into_array(batch.num_rows())).map_err(|e| e.to_string())
}

/// Casts columns to the schema's types where they differ only in representation.
pub(crate) fn conform_columns(cols: Vec<ArrayRef>, schema: &SchemaRef) -> Result<Vec<ArrayRef>, String> {
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
pub(crate) fn frontier_time(f: &MutableAntichain<Time>) -> Option<Time> {
    f.frontier().iter().min().copied()
}

/// True when the frontier has passed `t` (every change at `t` has arrived).
pub(crate) fn before(t: Time, frontier: Option<Time>) -> bool {
    frontier.is_none_or(|f| t < f)
}

/// Splits deltas between workers by the value of `keys`.
pub(crate) fn key_by<'s>(
    input: Deltas<'s>,
    keys: Vec<PhysExpr>,
    cx: &RenderContext,
) -> Stream<'s, Time, Vec<(u64, Delta)>> {
    let peers = cx.peers;
    let err = Rc::clone(&cx.on_error);
    input.unary::<CB<(u64, Delta)>, _, _, _>(Pipeline, &cx.name("KeyBy"), move |_, _| {
        move |input, output| {
            input.for_each(|cap, data| {
                let mut session = output.session(&cap);
                for d in data.drain(..) {
                    if peers <= 1 {
                        // One worker: every row stays; the keys need not be computed.
                        session.give((0, d));
                        continue;
                    }
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

pub(crate) fn by_worker() -> Exchange<(u64, Delta), impl FnMut(&(u64, Delta)) -> u64> {
    Exchange::new(|(w, _): &(u64, Delta)| *w)
}

/// Input held by time until the frontier has passed it, with the capability to answer at: what
/// every stateful operator here does, so that a time's changes are applied once, complete.
pub(crate) struct ByTime<D> {
    pending: BTreeMap<Time, (Capability<Time>, D)>,
}

impl<D: Default> Default for ByTime<D> {
    fn default() -> Self {
        Self { pending: BTreeMap::new() }
    }
}

impl<D: Default> ByTime<D> {
    /// The input held for `cap`'s time (created empty).
    pub(crate) fn at(&mut self, cap: &Capability<Time>) -> &mut D {
        &mut self.pending.entry(*cap.time()).or_insert_with(|| (cap.clone(), D::default())).1
    }

    /// The size of what is held, by `size` of each time's input.
    pub(crate) fn held(&self, size: impl Fn(&D) -> usize) -> usize {
        self.pending.values().map(|(_, d)| size(d)).sum()
    }

    /// Removes the earliest time the frontier has passed, if any.
    pub(crate) fn next_ready(&mut self, frontier: Option<Time>) -> Option<(Time, Capability<Time>, D)> {
        let entry = self.pending.first_entry()?;
        if !before(*entry.key(), frontier) {
            return None;
        }
        let (t, (cap, d)) = entry.remove_entry();
        Some((t, cap, d))
    }
}

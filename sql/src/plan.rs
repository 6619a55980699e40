//! The dataflow plan of a rule: DataFusion's `LogicalPlan` lowered onto vigil's incremental
//! operators.
//!
//! A [`Node`] tree mirrors the logical plan, one node per operator the rule runs: stream and
//! reference-table sources, vectorized map steps (filters, projections, every scalar function,
//! as DataFusion `PhysicalExpr`s), window aggregates (DataFusion's own accumulators, per pane),
//! joins (stream ⋈ reference table, incremental on both sides; stream ⋈ stream bounded by an
//! event-time interval), `DISTINCT` and `UNION ALL`. [`lower`] refuses, naming the construct,
//! anything it cannot run with the batch semantics of the same SQL.

use std::fmt::Write as _;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::{Column, DFSchema, JoinType, ScalarValue};
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{BinaryExpr, Distinct, Expr, ExprSchemable, LogicalPlan, Operator};
use datafusion::physical_expr::aggregate::{AggregateFunctionExpr, LoweredAggregateBuilder};
use datafusion::physical_expr::{PhysicalExpr, create_physical_expr};
use vigil_engine::catalog::Catalog as Streams;
use vigil_engine::stream::StreamInfo;

use crate::window::{WindowKind, as_window};

/// A physical expression.
pub type PhysExpr = Arc<dyn PhysicalExpr>;

/// One vectorized step of a [`Node::Map`].
#[derive(Debug, Clone)]
pub enum Step {
    /// Keeps the rows where the predicate is true.
    Filter(PhysExpr),
    /// Replaces the columns by the expressions, with the given output schema.
    Project(Vec<PhysExpr>, SchemaRef),
}

/// When a window aggregate speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    /// Once per window and group, when the watermark passes the window's end.
    OnClose,
    /// A retraction of the previous value and the new value whenever a group's window changes
    /// (at each watermark step), until it closes.
    Updates,
}

/// A window aggregate: `GROUP BY <window call>, keys...` with aggregate functions.
#[derive(Debug)]
pub struct AggregateNode {
    /// Input rows.
    pub input: Node,
    /// The window.
    pub window: WindowKind,
    /// The window's timestamp argument, on the input.
    pub window_time: PhysExpr,
    /// Position of the window column among the group columns.
    pub window_pos: usize,
    /// The other group expressions, in order, on the input.
    pub keys: Vec<PhysExpr>,
    /// The aggregate functions.
    pub aggs: Vec<Arc<AggregateFunctionExpr>>,
    /// Output schema: group columns, then aggregates.
    pub schema: SchemaRef,
    /// When results are emitted.
    pub emit: Emit,
}

/// What a join keeps and how long.
#[derive(Debug, Clone)]
pub enum JoinShape {
    /// One side is a stream, the other a reference table. Stream rows are kept for the
    /// retention (so that a reference row added later matches them); reference rows for good.
    StreamReference {
        /// True when the stream is the left input.
        stream_left: bool,
    },
    /// Both sides are streams, joined when `right_time - left_time` lies in `[lo, hi]` ms.
    Interval {
        /// Left time expression (on the left input).
        left_time: PhysExpr,
        /// Right time expression (on the right input).
        right_time: PhysExpr,
        /// Lower bound of `right_time - left_time`, ms.
        lo: i64,
        /// Upper bound of `right_time - left_time`, ms.
        hi: i64,
    },
}

/// An equi-join.
#[derive(Debug)]
pub struct JoinNode {
    /// Left input.
    pub left: Node,
    /// Right input.
    pub right: Node,
    /// Key expressions on the left input.
    pub left_keys: Vec<PhysExpr>,
    /// Key expressions on the right input, same types as the left's.
    pub right_keys: Vec<PhysExpr>,
    /// Residual predicate on the joined row (left columns then right columns).
    pub filter: Option<PhysExpr>,
    /// Inner, left, right, left semi or left anti.
    pub kind: JoinType,
    /// What is kept and for how long.
    pub shape: JoinShape,
    /// `NOT IN` semantics for an anti join: a row whose key is null has no answer, so it is
    /// not emitted.
    pub null_aware: bool,
    /// Output schema.
    pub schema: SchemaRef,
}

/// A node of a rule's dataflow plan.
#[derive(Debug)]
pub enum Node {
    /// Events of a live stream.
    Source {
        /// The stream.
        stream: &'static StreamInfo,
    },
    /// Changes to a reference table.
    Reference {
        /// The table.
        table: &'static StreamInfo,
    },
    /// Vectorized steps.
    Map {
        /// Input.
        input: Box<Node>,
        /// Steps, applied in order.
        steps: Vec<Step>,
        /// Output schema.
        schema: SchemaRef,
    },
    /// A window aggregate.
    Aggregate(Box<AggregateNode>),
    /// A join.
    Join(Box<JoinNode>),
    /// Each distinct row once (for as long as it is retained).
    Distinct {
        /// Input.
        input: Box<Node>,
    },
    /// The rows of every input.
    Union {
        /// Inputs, with the union's column types.
        inputs: Vec<Node>,
        /// Output schema.
        schema: SchemaRef,
    },
}

impl Node {
    /// The node's output schema.
    pub fn schema(&self) -> SchemaRef {
        match self {
            Node::Source { stream: info } | Node::Reference { table: info } => Arc::clone(&info.schema),
            Node::Map { schema, .. } | Node::Union { schema, .. } => Arc::clone(schema),
            Node::Aggregate(a) => Arc::clone(&a.schema),
            Node::Join(j) => Arc::clone(&j.schema),
            Node::Distinct { input } => input.schema(),
        }
    }

    /// The live streams the node reads.
    pub fn streams(&self) -> Vec<&'static StreamInfo> {
        let mut out = match self {
            Node::Source { stream } => vec![*stream],
            Node::Reference { .. } => Vec::new(),
            Node::Map { input, .. } | Node::Distinct { input } => input.streams(),
            Node::Aggregate(a) => a.input.streams(),
            Node::Join(j) => [j.left.streams(), j.right.streams()].concat(),
            Node::Union { inputs, .. } => inputs.iter().flat_map(Node::streams).collect(),
        };
        out.sort_by_key(|i| i.name);
        out.dedup_by_key(|i| i.name);
        out
    }

    /// True when every leaf is a reference table (the node describes no events).
    pub fn is_reference(&self) -> bool {
        match self {
            Node::Source { .. } => false,
            Node::Reference { .. } => true,
            Node::Map { input, .. } | Node::Distinct { input } => input.is_reference(),
            Node::Aggregate(a) => a.input.is_reference(),
            Node::Join(j) => j.left.is_reference() && j.right.is_reference(),
            Node::Union { inputs, .. } => inputs.iter().all(Node::is_reference),
        }
    }

    /// The dataflow plan as indented text (`EXPLAIN RULE`).
    pub fn explain(&self) -> String {
        let mut s = String::new();
        self.explain_into(&mut s, 0);
        s
    }

    fn explain_into(&self, s: &mut String, depth: usize) {
        let pad = "  ".repeat(depth);
        let cols = |schema: &Schema| {
            schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
        };
        match self {
            Node::Source { stream } => {
                let _ = writeln!(s, "{pad}Source: stream={}", stream.name);
            }
            Node::Reference { table } => {
                let _ = writeln!(
                    s,
                    "{pad}Reference: table={} (kept whole, changes applied incrementally)",
                    table.name
                );
            }
            Node::Map { input, steps, .. } => {
                for step in steps.iter().rev() {
                    match step {
                        Step::Filter(p) => {
                            let _ = writeln!(s, "{pad}Filter: {p}");
                        }
                        Step::Project(exprs, schema) => {
                            let list: Vec<String> = exprs
                                .iter()
                                .zip(schema.fields())
                                .map(|(e, f)| format!("{e} AS {}", f.name()))
                                .collect();
                            let _ = writeln!(s, "{pad}Project: {}", list.join(", "));
                        }
                    }
                }
                input.explain_into(s, depth + 1);
            }
            Node::Aggregate(a) => {
                let aggs: Vec<&str> = a.aggs.iter().map(|x| x.name()).collect();
                let keys: Vec<String> = a.keys.iter().map(|k| k.to_string()).collect();
                let _ = writeln!(
                    s,
                    "{pad}WindowAggregate: window={:?} time={} keys=[{}] aggregates=[{}] emit={:?} (exchange by keys)",
                    a.window,
                    a.window_time,
                    keys.join(", "),
                    aggs.join(", "),
                    a.emit
                );
                a.input.explain_into(s, depth + 1);
            }
            Node::Join(j) => {
                let on: Vec<String> =
                    j.left_keys.iter().zip(&j.right_keys).map(|(l, r)| format!("{l} = {r}")).collect();
                let shape = match &j.shape {
                    JoinShape::StreamReference { stream_left } => {
                        format!(
                            "stream⋈reference (stream on the {})",
                            if *stream_left { "left" } else { "right" }
                        )
                    }
                    JoinShape::Interval { lo, hi, .. } => {
                        format!("stream⋈stream, right−left time in [{lo} ms, {hi} ms]")
                    }
                };
                let filter = j.filter.as_ref().map(|f| format!(" filter={f}")).unwrap_or_default();
                let _ = writeln!(
                    s,
                    "{pad}Join: {:?} on [{}]{filter} {shape} (exchange by keys)",
                    j.kind,
                    on.join(", ")
                );
                j.left.explain_into(s, depth + 1);
                j.right.explain_into(s, depth + 1);
            }
            Node::Distinct { input } => {
                let _ = writeln!(s, "{pad}Distinct: [{}] (exchange by row)", cols(&input.schema()));
                input.explain_into(s, depth + 1);
            }
            Node::Union { inputs, .. } => {
                let _ = writeln!(s, "{pad}UnionAll");
                for i in inputs {
                    i.explain_into(s, depth + 1);
                }
            }
        }
    }
}

/// Why a plan cannot be lowered: the construct, and a word of the SQL to place the error at.
#[derive(Debug)]
pub struct Unsupported {
    /// What is not supported.
    pub what: String,
    /// How to write it instead, when there is a specific way.
    pub fix: Option<String>,
    /// A keyword to locate the construct by.
    pub word: Option<&'static str>,
    /// `what` is a complete message about a wrong argument, not an unsupported construct.
    pub wrong_argument: bool,
}

fn unsupported(what: impl Into<String>, word: Option<&'static str>) -> Unsupported {
    Unsupported { what: what.into(), fix: None, word, wrong_argument: false }
}

type Lowered<T> = std::result::Result<T, Unsupported>;

/// The streams and reference tables a rule may read.
pub type References<'a> = &'a Streams;

/// Lowers a (type-coerced) logical plan.
pub fn lower(plan: &LogicalPlan, refs: References<'_>, emit: Emit) -> Lowered<Node> {
    let props = ExecutionProps::new();
    let ctx = PhysicalPlanningContext::default();
    let physical = |e: &Expr, schema: &DFSchema| -> Lowered<PhysExpr> {
        create_physical_expr(e, schema, &props, &ctx)
            .map_err(|err| unsupported(format!("the expression {e} ({err})"), None))
    };
    match plan {
        LogicalPlan::TableScan(scan) => {
            let name = scan.table_name.table();
            let (node, full) = match refs.get(name) {
                Some(table) if table.is_table() => (Node::Reference { table }, Arc::clone(&table.schema)),
                Some(stream) => (Node::Source { stream }, Arc::clone(&stream.schema)),
                None => return Err(unsupported(format!("reading {}", scan.table_name), None)),
            };
            let mut steps = Vec::new();
            let df_full = DFSchema::try_from_qualified_schema(scan.table_name.clone(), &full)
                .map_err(|e| unsupported(e.to_string(), None))?;
            for f in &scan.filters {
                steps.push(Step::Filter(physical(f, &df_full)?));
            }
            if let Some(proj) = &scan.projection {
                let exprs = proj
                    .iter()
                    .map(|&i| {
                        let field = full.field(i);
                        datafusion::physical_expr::expressions::col(field.name(), &full)
                            .map_err(|e| unsupported(e.to_string(), None))
                    })
                    .collect::<Lowered<Vec<_>>>()?;
                steps.push(Step::Project(exprs, Arc::new(scan.projected_schema.as_arrow().clone())));
            }
            Ok(map(node, steps, Arc::new(scan.projected_schema.as_arrow().clone())))
        }
        LogicalPlan::Filter(f) => {
            let input = lower(&f.input, refs, emit)?;
            let step = Step::Filter(physical(&f.predicate, f.input.schema())?);
            Ok(map(input, vec![step], Arc::new(f.input.schema().as_arrow().clone())))
        }
        LogicalPlan::Projection(p) => {
            let input = lower(&p.input, refs, emit)?;
            let exprs = p.expr.iter().map(|e| physical(e, p.input.schema())).collect::<Lowered<Vec<_>>>()?;
            let schema = Arc::new(p.schema.as_arrow().clone());
            Ok(map(input, vec![Step::Project(exprs, Arc::clone(&schema))], schema))
        }
        LogicalPlan::SubqueryAlias(a) => {
            let input = lower(&a.input, refs, emit)?;
            // Same columns under the alias: the batches do not change.
            Ok(input)
        }
        LogicalPlan::Aggregate(agg) => lower_aggregate(agg, refs, emit),
        LogicalPlan::Join(j) => lower_join(j, refs, emit),
        LogicalPlan::Distinct(Distinct::All(input)) => {
            let input = lower(input, refs, emit)?;
            if input.is_reference() {
                return Err(unsupported("DISTINCT over reference tables alone (no events)", Some("DISTINCT")));
            }
            Ok(Node::Distinct { input: Box::new(input) })
        }
        LogicalPlan::Distinct(Distinct::On(_)) => Err(unsupported("DISTINCT ON", Some("DISTINCT"))),
        LogicalPlan::Union(u) => {
            let schema: SchemaRef = Arc::new(u.schema.as_arrow().clone());
            let inputs = u.inputs.iter().map(|i| lower(i, refs, emit)).collect::<Lowered<Vec<_>>>()?;
            Ok(Node::Union { inputs, schema })
        }
        LogicalPlan::Window(_) => Err(Unsupported {
            what: "window functions (OVER ...)".into(),
            fix: Some("aggregate over an event-time window instead: GROUP BY tumble(event_time, INTERVAL '1 minute')".into()),
            word: Some("OVER"),
            wrong_argument: false,
        }),
        LogicalPlan::Sort(_) => Err(unsupported("ORDER BY (a stream has no end to sort)", Some("ORDER"))),
        LogicalPlan::Limit(_) => Err(unsupported("LIMIT (a stream has no end to count to)", Some("LIMIT"))),
        LogicalPlan::Subquery(_) => Err(unsupported("correlated subqueries", Some("SELECT"))),
        other => Err(unsupported(format!("the plan node {}", other.display()), None)),
    }
}

fn map(input: Node, mut steps: Vec<Step>, schema: SchemaRef) -> Node {
    if steps.is_empty() {
        return input;
    }
    // Consecutive maps are one operator (a scan's projection, then the filter above it).
    if let Node::Map { input, steps: mut first, .. } = input {
        first.append(&mut steps);
        return Node::Map { input, steps: first, schema };
    }
    Node::Map { input: Box::new(input), steps, schema }
}

const WINDOW_FIX: &str = "aggregate over an event-time window: GROUP BY tumble(event_time, INTERVAL '1 minute'), \
     hop(event_time, INTERVAL '10 seconds', INTERVAL '1 minute') or session(event_time, INTERVAL '30 seconds')";

fn lower_aggregate(
    agg: &datafusion::logical_expr::Aggregate,
    refs: References<'_>,
    emit: Emit,
) -> Lowered<Node> {
    let input_schema = agg.input.schema();
    let arrow_input: SchemaRef = Arc::new(input_schema.as_arrow().clone());
    let props = ExecutionProps::new();
    let ctx = PhysicalPlanningContext::default();
    let mut window = None;
    let mut keys = Vec::new();
    for (i, g) in agg.group_expr.iter().enumerate() {
        if matches!(g, Expr::GroupingSet(_)) {
            return Err(unsupported("GROUPING SETS, CUBE and ROLLUP", Some("GROUP")));
        }
        match as_window(g) {
            Some(Ok((kind, time))) => {
                if window.is_some() {
                    return Err(unsupported("more than one window in GROUP BY", Some("GROUP")));
                }
                let t = create_physical_expr(&time, input_schema, &props, &ctx)
                    .map_err(|e| unsupported(e.to_string(), None))?;
                window = Some((kind, t, i));
            }
            Some(Err(msg)) => {
                let word = crate::window::WINDOW_FUNCTIONS.iter().copied().find(|w| msg.starts_with(w));
                return Err(Unsupported {
                    what: msg,
                    fix: Some(WINDOW_FIX.into()),
                    word: word.or(Some("GROUP")),
                    wrong_argument: true,
                });
            }
            None => keys.push(
                create_physical_expr(g, input_schema, &props, &ctx)
                    .map_err(|e| unsupported(format!("the group expression {g} ({e})"), Some("GROUP")))?,
            ),
        }
    }
    let Some((kind, window_time, window_pos)) = window else {
        return Err(Unsupported {
            what: "an aggregate without an event-time window (its result would never be final)".into(),
            fix: Some(WINDOW_FIX.into()),
            word: Some("GROUP"),
            wrong_argument: false,
        });
    };
    if matches!(kind, WindowKind::Session { .. }) && emit == Emit::Updates {
        return Err(unsupported("emit = 'updates' with session windows", Some("session")));
    }
    let mut aggs = Vec::new();
    for e in &agg.aggr_expr {
        let lowered = LoweredAggregateBuilder::new(e, input_schema, &arrow_input, &props, &ctx)
            .build()
            .map_err(|err| unsupported(format!("the aggregate {e} ({err})"), None))?;
        if lowered.filter.is_some() {
            return Err(unsupported("FILTER (WHERE ...) on an aggregate", Some("FILTER")));
        }
        if !lowered.order_bys.is_empty() {
            return Err(unsupported("ORDER BY inside an aggregate", Some("ORDER")));
        }
        aggs.push(lowered.aggregate);
    }
    let input = lower(&agg.input, refs, emit)?;
    if input.is_reference() {
        return Err(unsupported("aggregates over reference tables alone (no events)", Some("GROUP")));
    }
    Ok(Node::Aggregate(Box::new(AggregateNode {
        input,
        window: kind,
        window_time,
        window_pos,
        keys,
        aggs,
        schema: Arc::new(agg.schema.as_arrow().clone()),
        emit,
    })))
}

fn lower_join(j: &datafusion::logical_expr::Join, refs: References<'_>, emit: Emit) -> Lowered<Node> {
    let props = ExecutionProps::new();
    let ctx = PhysicalPlanningContext::default();
    let left = lower(&j.left, refs, emit)?;
    let right = lower(&j.right, refs, emit)?;
    if j.on.is_empty() {
        return Err(Unsupported {
            what: "joins without an equality between the two sides (a cross join)".into(),
            fix: Some("join ON an equality, for example ON r.plate = w.plate".into()),
            word: Some("JOIN"),
            wrong_argument: false,
        });
    }
    let phys = |e: &Expr, s: &DFSchema| {
        create_physical_expr(e, s, &props, &ctx)
            .map_err(|err| unsupported(format!("the join key {e} ({err})"), None))
    };
    let mut left_keys = Vec::new();
    let mut right_keys = Vec::new();
    for (l, r) in &j.on {
        left_keys.push(phys(l, j.left.schema())?);
        let lt = l.get_type(j.left.schema()).map_err(|e| unsupported(e.to_string(), None))?;
        let r = r.clone().cast_to(&lt, j.right.schema()).map_err(|e| unsupported(e.to_string(), None))?;
        right_keys.push(phys(&r, j.right.schema())?);
    }
    let filter = j.filter.as_ref().map(|f| phys(f, &j.schema)).transpose()?;
    let (lref, rref) = (left.is_reference(), right.is_reference());
    let shape = match (lref, rref) {
        (true, true) => {
            return Err(unsupported("a join of reference tables alone (no events)", Some("JOIN")));
        }
        (false, true) => JoinShape::StreamReference { stream_left: true },
        (true, false) => JoinShape::StreamReference { stream_left: false },
        (false, false) => {
            // An equality of two timestamps among the keys bounds the join too (to [0, 0]).
            let equal_times = j.on.iter().find_map(|(l, r)| {
                let is_ts = |e: &Expr, p: &LogicalPlan| {
                    matches!(
                        e.get_type(p.schema()),
                        Ok(datafusion::arrow::datatypes::DataType::Timestamp(..))
                    )
                };
                (is_ts(l, &j.left) && is_ts(r, &j.right)).then(|| (l.clone(), r.clone(), 0, 0))
            });
            let bounds =
                j.filter.as_ref().and_then(|f| interval_bounds(f, &j.left, &j.right)).or(equal_times);
            let Some((lt, rt, lo, hi)) = bounds else {
                return Err(Unsupported {
                    what: "a stream-stream join without an event-time bound (its state would grow forever)".into(),
                    fix: Some(
                        "bound the times in ON, for example AND b.event_time BETWEEN a.event_time AND a.event_time + INTERVAL '5 minutes'"
                            .into(),
                    ),
                    word: Some("JOIN"),
                    wrong_argument: false,
                });
            };
            JoinShape::Interval {
                left_time: phys(&lt, j.left.schema())?,
                right_time: phys(&rt, j.right.schema())?,
                lo,
                hi,
            }
        }
    };
    let kind = match (j.join_type, &shape) {
        (JoinType::Inner, _) => JoinType::Inner,
        (
            JoinType::Left | JoinType::LeftSemi | JoinType::LeftAnti,
            JoinShape::StreamReference { stream_left: true },
        )
        | (JoinType::Right, JoinShape::StreamReference { stream_left: false }) => {
            if j.filter.is_some() && j.join_type != JoinType::LeftSemi {
                return Err(unsupported(
                    format!("a {} join with conditions other than equalities", j.join_type),
                    Some("JOIN"),
                ));
            }
            j.join_type
        }
        (other, _) => {
            return Err(Unsupported {
                what: format!("{other} joins of these inputs"),
                fix: Some(
                    "use an inner join, or an outer/semi/anti join that keeps the stream's rows against a reference table"
                        .into(),
                ),
                word: Some("JOIN"),
                wrong_argument: false,
            });
        }
    };
    Ok(Node::Join(Box::new(JoinNode {
        left,
        right,
        left_keys,
        right_keys,
        filter,
        kind,
        shape,
        null_aware: j.null_aware,
        schema: Arc::new(j.schema.as_arrow().clone()),
    })))
}

/// A time expression `column ± constant`: the column and the constant in ms.
fn linear_time(e: &Expr) -> Option<(Column, i64)> {
    match e {
        Expr::Column(c) => Some((c.clone(), 0)),
        Expr::Cast(c) => linear_time(&c.expr),
        Expr::BinaryExpr(BinaryExpr { left, op: op @ (Operator::Plus | Operator::Minus), right }) => {
            let (c, k) = linear_time(left)?;
            let ms = interval_ms(right)?;
            Some((c, if *op == Operator::Plus { k + ms } else { k - ms }))
        }
        _ => None,
    }
}

fn interval_ms(e: &Expr) -> Option<i64> {
    match e {
        Expr::Cast(c) => interval_ms(&c.expr),
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _) if v.months == 0 => {
            Some(v.days as i64 * 86_400_000 + v.nanoseconds / 1_000_000)
        }
        Expr::Literal(ScalarValue::IntervalDayTime(Some(v)), _) => {
            Some(v.days as i64 * 86_400_000 + v.milliseconds as i64)
        }
        _ => None,
    }
}

/// Finds, among the conjuncts of a join filter, bounds `lo <= right_time - left_time <= hi`.
fn interval_bounds(filter: &Expr, left: &LogicalPlan, right: &LogicalPlan) -> Option<(Expr, Expr, i64, i64)> {
    let side = |c: &Column| {
        if left.schema().has_column(c) {
            Some(true)
        } else if right.schema().has_column(c) {
            Some(false)
        } else {
            None
        }
    };
    let mut lo: Option<(i64, Column, Column)> = None;
    let mut hi: Option<(i64, Column, Column)> = None;
    // a op b, as (right_time - left_time) op' k.
    let consider = |lo: &mut Option<(i64, Column, Column)>,
                    hi: &mut Option<(i64, Column, Column)>,
                    a: &Expr,
                    op: Operator,
                    b: &Expr| {
        let ((ca, ka), (cb, kb)) = (linear_time(a)?, linear_time(b)?);
        let (sa, sb) = (side(&ca)?, side(&cb)?);
        if sa == sb {
            return None;
        }
        // ca + ka op cb + kb  <=>  ca - cb op kb - ka
        let (op, k, lcol, rcol) = if !sa {
            (op, kb - ka, cb, ca)
        } else {
            // left - right op k  <=>  right - left op' -k
            let flipped = match op {
                Operator::Lt => Operator::Gt,
                Operator::LtEq => Operator::GtEq,
                Operator::Gt => Operator::Lt,
                Operator::GtEq => Operator::LtEq,
                other => other,
            };
            (flipped, ka - kb, ca, cb)
        };
        match op {
            Operator::Gt | Operator::GtEq => {
                *lo = Some((lo.as_ref().map_or(k, |(x, ..)| (*x).max(k)), lcol, rcol))
            }
            Operator::Lt | Operator::LtEq => {
                *hi = Some((hi.as_ref().map_or(k, |(x, ..)| (*x).min(k)), lcol, rcol))
            }
            Operator::Eq => {
                *lo = Some((k, lcol.clone(), rcol.clone()));
                *hi = Some((k, lcol, rcol));
            }
            _ => {}
        }
        Some(())
    };
    for c in split_conjunction(filter) {
        match c {
            Expr::BinaryExpr(BinaryExpr { left: a, op, right: b }) => {
                consider(&mut lo, &mut hi, a, *op, b);
            }
            Expr::Between(bt) if !bt.negated => {
                consider(&mut lo, &mut hi, &bt.expr, Operator::GtEq, &bt.low);
                consider(&mut lo, &mut hi, &bt.expr, Operator::LtEq, &bt.high);
            }
            _ => {}
        }
    }
    let ((lo, lcol, rcol), (hi, ..)) = (lo?, hi?);
    (lo <= hi).then(|| (Expr::Column(lcol), Expr::Column(rcol), lo, hi))
}

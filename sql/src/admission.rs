//! Admission control for rules: before a rule is installed, what it will hold and emit is
//! estimated from its plan and the streams' observed rates, and a rule over its budget is
//! refused with the estimate and the fix.
//!
//! The estimate is an upper bound built bottom-up over the plan ([`estimate`]):
//! - a hop window touches `size / slide` windows per row and merges `size / pane` panes per
//!   window: both are bounded whatever the rate (a 1 ms slide over an hour is 3.6 million of
//!   each, per row);
//! - an interval join keeps each side's rows for its bound (plus the lateness) and emits, per
//!   row, the other side's rows of the same key within the bound: `r_left × r_right × bound /
//!   keys`, with the number of distinct keys counted on the retained rows;
//! - a stream–table join and `DISTINCT` keep their input for the rule's retention;
//! - a window aggregate keeps one accumulator row per (group, open pane): at most one per input
//!   row within the window, and at most the groups (counted on the retained rows) times the panes.
//!
//! Rates come from the retained rows (rows per second of event time); before any is retained
//! (a rule restored at start), from the nominal rate the application gives. At run time the
//! registry measures each rule's output and stops a rule that emits beyond its budget.

use std::collections::HashSet;

use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::physical_expr::expressions::Column;
use vigil_engine::stream::StreamInfo;

use crate::plan::{JoinShape, Node, PhysExpr, Step};
use crate::window::WindowKind;

/// What one rule, and all rules together, may cost.
#[derive(Clone, Debug)]
pub struct Budget {
    /// Rows a rule may keep in its operators.
    pub rule_rows: f64,
    /// Rows all rules together may keep.
    pub total_rows: f64,
    /// Rows per second a rule may emit.
    pub rows_per_s: f64,
    /// Windows one row may fall in (a hop's size over its slide).
    pub windows_per_row: i64,
    /// Panes a window may be made of (its size over the pane).
    pub panes_per_window: i64,
}

impl Default for Budget {
    fn default() -> Self {
        // 2 M rows of ~150 bytes: 300 MB for one rule; 1 M rows/s: a third of the 3 µs per
        // event budget at the rates of a 4,000-camera city.
        Self {
            rule_rows: 2e6,
            total_rows: 8e6,
            rows_per_s: 1e6,
            windows_per_row: 1_000,
            panes_per_window: 100_000,
        }
    }
}

/// What a rule is estimated to cost.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Estimate {
    /// Rows kept in its operators.
    pub rows: f64,
    /// Rows emitted per second.
    pub rows_per_s: f64,
    /// Most windows a row falls in.
    pub windows_per_row: i64,
    /// Most panes per window.
    pub panes_per_window: i64,
}

impl std::fmt::Display for Estimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "about {:.0} rows kept, {:.0} rows/s emitted", self.rows, self.rows_per_s)?;
        if self.windows_per_row > 1 || self.panes_per_window > 1 {
            write!(f, ", {} windows per row of {} panes each", self.windows_per_row, self.panes_per_window)?;
        }
        Ok(())
    }
}

/// What the estimate knows of the streams.
pub trait Rates {
    /// Rows per second of `stream`.
    fn rows_per_s(&self, stream: &StreamInfo) -> f64;
    /// Distinct values of `columns` among `stream`'s rows, if it can count them.
    fn distinct(&self, stream: &StreamInfo, columns: &[String]) -> Option<f64>;
    /// The share of `stream`'s rows that `steps` (filters, projections) keep, if it can try.
    fn selectivity(&self, stream: &StreamInfo, steps: &[Step]) -> Option<f64>;
}

/// The estimate of `node`, whose stream rows stay `retention_ms` and whose windows wait
/// `lateness_ms` for late rows.
pub fn estimate(node: &Node, rates: &dyn Rates, retention_ms: f64, lateness_ms: f64) -> Estimate {
    walk(node, rates, retention_ms, lateness_ms).1
}

/// (output rows/s, estimate of the subtree).
fn walk(node: &Node, rates: &dyn Rates, retention_ms: f64, lateness_ms: f64) -> (f64, Estimate) {
    let sub = |n: &Node| walk(n, rates, retention_ms, lateness_ms);
    let one = Estimate { windows_per_row: 1, panes_per_window: 1, ..Default::default() };
    match node {
        Node::Source { stream } => {
            let r = rates.rows_per_s(stream);
            (r, Estimate { rows_per_s: r, ..one })
        }
        Node::Reference { .. } => (0.0, one),
        Node::Map { input, steps, .. } => {
            let (r, e) = sub(input);
            let kept = match input.as_ref() {
                Node::Source { stream } => rates.selectivity(stream, steps).unwrap_or(1.0),
                _ => 1.0,
            };
            (r * kept, e)
        }
        Node::Distinct { input } => {
            let (r, mut e) = sub(input);
            e.rows += r * retention_ms / 1000.0;
            (r, e)
        }
        Node::Union { inputs, .. } => {
            inputs.iter().map(sub).fold((0.0, one.clone()), |(r, a), (ri, b)| (r + ri, merge(a, b, r + ri)))
        }
        Node::Aggregate(a) => {
            let (r, mut e) = sub(&a.input);
            let (windows, panes, span) = match a.window {
                WindowKind::Tumble { size } => (1, 1, size),
                WindowKind::Hop { slide, size } => {
                    let pane = a.window.pane().unwrap_or(1).max(1);
                    ((size + slide.max(1) - 1) / slide.max(1), size / pane, size)
                }
                WindowKind::Session { gap } => (1, 1, gap),
            };
            e.windows_per_row = e.windows_per_row.max(windows);
            e.panes_per_window = e.panes_per_window.max(panes);
            // One accumulator row per (group, pane) still open: at most one per input row,
            // and at most the groups times the panes of a window and its lateness.
            let pane = a.window.pane().unwrap_or(span).max(1) as f64;
            let open_panes = ((span as f64 + lateness_ms) / pane).ceil();
            let by_rows = r * (span as f64 + lateness_ms) / 1000.0;
            e.rows += match group_count(&a.input, &a.keys, rates) {
                Some(groups) => by_rows.min(groups * open_panes),
                None => by_rows,
            };
            let out = r * windows as f64;
            e.rows_per_s = e.rows_per_s.max(out);
            (out, e)
        }
        Node::Join(j) => {
            let ((rl, el), (rr, er)) = (sub(&j.left), sub(&j.right));
            match &j.shape {
                JoinShape::Interval { lo, hi, .. } => {
                    let bound = (hi - lo).max(1) as f64;
                    let keys = key_count(&j.left, &j.left_keys, rates)
                        .max(key_count(&j.right, &j.right_keys, rates))
                        .max(1.0);
                    let out = rl * rr * bound / 1000.0 / keys;
                    let mut e = merge(el, er, out);
                    e.rows += (rl + rr) * (bound + lateness_ms) / 1000.0;
                    (out, e)
                }
                JoinShape::StreamReference { stream_left } => {
                    let r = if *stream_left { rl } else { rr };
                    let mut e = merge(el, er, r);
                    e.rows += r * retention_ms / 1000.0;
                    (r, e)
                }
            }
        }
    }
}

fn merge(a: Estimate, b: Estimate, out: f64) -> Estimate {
    Estimate {
        rows: a.rows + b.rows,
        rows_per_s: a.rows_per_s.max(b.rows_per_s).max(out),
        windows_per_row: a.windows_per_row.max(b.windows_per_row),
        panes_per_window: a.panes_per_window.max(b.panes_per_window),
    }
}

/// Distinct join keys of a side that reads a stream's columns directly; 1 (every row joins
/// every row) with no keys; otherwise unknown, taken as 10.
fn key_count(side: &Node, keys: &[PhysExpr], rates: &dyn Rates) -> f64 {
    if keys.is_empty() {
        return 1.0;
    }
    let Some(stream) = with_stream_columns(side) else { return 10.0 };
    let columns: Option<Vec<String>> =
        keys.iter().map(|k| k.downcast_ref::<Column>().map(|c| c.name().to_owned())).collect();
    columns.and_then(|c| rates.distinct(stream, c.as_slice())).unwrap_or(10.0)
}

/// The stream whose columns `node` gives under their own names: the stream itself, or filters
/// and choices of its columns (a scan keeps those a rule reads), not a projection that renames
/// or computes them.
fn with_stream_columns(node: &Node) -> Option<&'static StreamInfo> {
    match node {
        Node::Source { stream } => Some(stream),
        Node::Map { input, steps, .. } => {
            let keeps_names = |s: &Step| match s {
                Step::Filter(_) => true,
                Step::Project(exprs, schema) => exprs
                    .iter()
                    .zip(schema.fields())
                    .all(|(e, f)| e.downcast_ref::<Column>().is_some_and(|c| c.name() == f.name())),
            };
            match input.as_ref() {
                Node::Source { stream } if steps.iter().all(keeps_names) => Some(stream),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Distinct groups of an aggregate whose keys are columns of the stream it reads (one group
/// with no keys); unknown otherwise.
fn group_count(input: &Node, keys: &[PhysExpr], rates: &dyn Rates) -> Option<f64> {
    if keys.is_empty() {
        return Some(1.0);
    }
    let stream = with_stream_columns(input)?;
    let columns: Option<Vec<String>> =
        keys.iter().map(|k| k.downcast_ref::<Column>().map(|c| c.name().to_owned())).collect();
    columns.and_then(|c| rates.distinct(stream, c.as_slice()))
}

/// Checks an estimate against the budget; the error says what is over, by how much, and the fix.
pub fn check(e: &Estimate, others: f64, budget: &Budget) -> Result<(), (String, String)> {
    if e.windows_per_row > budget.windows_per_row {
        return Err((
            format!("each row falls in {} windows (at most {} are accepted)", e.windows_per_row, budget.windows_per_row),
            "use a longer slide for hop (a slide of a minute over an hour is 60 windows per row), or a tumble window".into(),
        ));
    }
    if e.panes_per_window > budget.panes_per_window {
        return Err((
            format!(
                "each window is made of {} panes (at most {} are accepted)",
                e.panes_per_window, budget.panes_per_window
            ),
            "make the window's size a multiple of its slide, with a slide of a second or more".into(),
        ));
    }
    if e.rows_per_s > budget.rows_per_s {
        return Err((
            format!("the rule would emit about {:.0} rows/s (at most {:.0} per rule)", e.rows_per_s, budget.rows_per_s),
            "join on a more selective key (camera_id, track_id), shorten the time bound, or filter the inputs first".into(),
        ));
    }
    if e.rows > budget.rule_rows {
        return Err((
            format!(
                "the rule would hold about {:.0} rows (at most {:.0} per rule)",
                e.rows, budget.rule_rows
            ),
            "shorten the time bound or the window, or the rule's retention (what a join with a table or DISTINCT keeps: WITH (retention = '1 minute')), or filter the inputs first".into(),
        ));
    }
    if e.rows + others > budget.total_rows {
        return Err((
            format!(
                "the rule would hold about {:.0} rows, and the running rules about {others:.0} (at most {:.0} for all rules)",
                e.rows, budget.total_rows
            ),
            "drop a rule you no longer need (SHOW RULES lists them), or narrow this one".into(),
        ));
    }
    Ok(())
}

/// The share of the rows of `batches` (the last 100,000 at most) that `steps` keep.
pub fn kept_share(batches: &[datafusion::arrow::array::RecordBatch], steps: &[Step]) -> Option<f64> {
    let (mut rows, mut kept) = (0usize, 0usize);
    for b in batches.iter().rev() {
        let times = vigil_engine::parquet_sink::event_times(b).ok()?;
        let d = crate::delta::Delta::inserts(b.clone(), times.iter().map(|&t| t.max(0) as u64).collect());
        kept += crate::render::map::apply_steps(steps, d).ok()?.map_or(0, |d| d.len());
        rows += b.num_rows();
        if rows >= 100_000 {
            break;
        }
    }
    (rows > 0).then(|| kept as f64 / rows as f64)
}

/// Counts distinct values of `columns` over `batches` (at most the last 100,000 rows).
pub fn distinct_values(batches: &[datafusion::arrow::array::RecordBatch], columns: &[String]) -> Option<f64> {
    let options = FormatOptions::default();
    let mut seen: HashSet<String> = HashSet::new();
    let mut rows = 0usize;
    for b in batches.iter().rev() {
        let formatters: Vec<_> = columns
            .iter()
            .map(|c| b.column_by_name(c).and_then(|a| ArrayFormatter::try_new(a.as_ref(), &options).ok()))
            .collect::<Option<_>>()?;
        for i in 0..b.num_rows() {
            let key: Vec<String> = formatters.iter().map(|f| f.value(i).to_string()).collect();
            seen.insert(key.join("\u{1f}"));
        }
        rows += b.num_rows();
        if rows >= 100_000 {
            break;
        }
    }
    (rows > 0).then_some(seen.len() as f64)
}

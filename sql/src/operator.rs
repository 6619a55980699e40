//! Running a rule: its [`Node`](crate::plan::Node) tree rendered over a dataflow's streams
//! ([`render_rule`]), and the rows it inserts turned into alerts ([`alerts_of`]).
//!
//! An output row becomes an alert carrying its `camera_id` when the rule selects one (0
//! otherwise), its `event_id` as the alert's trigger (a hash of the row otherwise), the row's
//! time as event time, and the row's columns as message. Retractions (from `emit = 'updates'`
//! or reference-table changes) reach subscribers and the rule's Parquet rows but raise no alert.

use std::collections::HashMap;
use std::rc::Rc;

use datafusion::arrow::array::{Array, UInt32Array, UInt64Array};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use vigil_engine::error::ErrorSink;
use vigil_engine::graph::Graph;
use vigil_engine::ids::Epoch;
use vigil_engine::stream::{Batch, Events};
use vigil_operators::alerts::{Alert, AlertRows, Alerts};

use crate::delta::{Delta, hash_bytes};
use crate::render::{Deltas, RenderContext, StateMeter, render};
use crate::rule::Rule;

/// Renders `rule` over the streams of `graph`: the stream of changes to the rule's output.
/// A batch the rule fails on (a bug: rules are checked when compiled) goes to `errors`.
///
/// ```
/// use vigil_engine::catalog::Catalog;
/// use vigil_engine::error::ErrorSink;
/// use vigil_engine::graph::Graph;
/// use vigil_engine::stream::StreamDef;
/// use vigil_operators::detection::Detections;
///
/// let streams = Catalog::new([Detections::info()]).unwrap();
/// let rule = vigil_sql::rule::compile("busy", "SELECT camera_id FROM detections WHERE score > 0.9", "<doc>", &streams)
///     .unwrap()
///     .remove(0);
/// timely::example(move |scope| {
///     let input = timely::dataflow::operators::generic::operator::empty(scope);
///     let mut graph = Graph::split(scope, 0, input, &[Detections::info()]);
///     let _deltas = vigil_sql::operator::render_rule(&rule, &mut graph, &ErrorSink::log());
/// });
/// ```
pub fn render_rule<'s>(rule: &Rule, graph: &mut Graph<'s>, errors: &ErrorSink) -> Deltas<'s> {
    render_metered(rule, graph, errors, &StateMeter::default())
}

/// [`render_rule`], its stateful operators reporting the rows they hold to `state`.
pub fn render_metered<'s>(
    rule: &Rule,
    graph: &mut Graph<'s>,
    errors: &ErrorSink,
    state: &StateMeter,
) -> Deltas<'s> {
    let (name, errors) = (rule.name.clone(), errors.clone());
    let cx = RenderContext {
        rule: rule.name.clone(),
        peers: graph.peers(),
        retention_ms: rule.options.retention_ms,
        on_error: Rc::new(move |e| errors.report(&name, e)),
        state: state.clone(),
    };
    render(&rule.node, graph, &cx)
}

/// The alerts of a rule's inserted rows, with ids of run `epoch`.
pub fn alerts_of<'s>(rule: &Rule, deltas: Deltas<'s>, epoch: Epoch) -> Events<'s, Alerts> {
    let (name, severity) = (rule.name.clone(), rule.severity.clone());
    let stream = deltas.unary::<timely::container::CapacityContainerBuilder<Vec<Batch>>, _, _, _>(
        Pipeline,
        &format!("{name}: Alerts"),
        move |_cap, _info| {
            move |input, output| {
                input.for_each(|cap, data| {
                    let mut alerts = AlertRows::default();
                    for d in data.iter() {
                        push_alerts(&name, &severity, d, epoch, &mut alerts);
                    }
                    if !alerts.is_empty() {
                        output.session(&cap).give(Batch::new(alerts.finish()));
                    }
                });
            }
        },
    );
    Events::new(stream)
}

fn push_alerts(name: &str, severity: &str, d: &Delta, epoch: Epoch, alerts: &mut AlertRows) {
    let rows = &d.rows;
    let camera = rows.column_by_name("camera_id").and_then(|c| c.as_any().downcast_ref::<UInt32Array>());
    let id = rows.column_by_name("event_id").and_then(|c| c.as_any().downcast_ref::<UInt64Array>());
    let options = FormatOptions::default().with_null("NULL");
    let formatters: Vec<_> =
        rows.columns().iter().filter_map(|c| ArrayFormatter::try_new(c.as_ref(), &options).ok()).collect();
    let schema = rows.schema();
    // Identical rows in one delta get ranks 0, 1, ...: their alerts keep distinct ids.
    let mut ranks: HashMap<String, u32> = HashMap::new();
    for i in 0..rows.num_rows() {
        if d.diffs[i] <= 0 {
            continue;
        }
        let message = schema
            .fields()
            .iter()
            .zip(&formatters)
            .map(|(f, fmt)| format!("{}={}", f.name(), fmt.value(i)))
            .collect::<Vec<_>>()
            .join(" ");
        let trigger = match id {
            Some(c) if c.is_valid(i) => c.value(i),
            _ => hash_bytes(message.as_bytes()),
        };
        let camera_id = camera.filter(|c| c.is_valid(i)).map_or(0, |c| c.value(i));
        for _ in 0..d.diffs[i] {
            let rank = ranks.entry(message.clone()).or_default();
            let alert = Alert::new(
                epoch,
                "rule",
                name,
                severity,
                camera_id,
                d.times[i] as i64,
                trigger,
                message.clone(),
                *rank,
            );
            *rank += 1;
            alerts.push(&alert.row());
        }
    }
}

//! Running rules: each compiled rule is rendered as its own operators over the engine's batch
//! stream ([`render_rule`]), and the rows it inserts become alerts ([`RunRules::run_rules`]).
//!
//! An output row becomes an alert carrying its `camera_id` and `event_id` columns when the rule
//! selects them (0 and a hash of the row otherwise), the row's time as event time, and the
//! row's columns as message. Retractions (from `emit = 'updates'` or reference-table changes)
//! reach subscribers and replay output but raise no alert.

use std::rc::Rc;
use std::sync::Arc;

use datafusion::arrow::array::{Array, UInt32Array, UInt64Array};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Concat;
use timely::dataflow::operators::generic::Operator;
use vigil_engine::alerts::{Alert, AlertsBuilder};
use vigil_engine::runtime::{BatchKind, EventBatch, Time};
use vigil_engine::schema::StreamKind;

use crate::delta::{Delta, hash_bytes};
use crate::render::{Deltas, RenderContext, render};
use crate::rule::Rule;

/// Renders `rule` over `events`: the stream of changes to the rule's output.
pub fn render_rule<'s>(
    rule: &Rule,
    events: &Stream<'s, Time, Vec<EventBatch>>,
    on_error: impl Fn(&str, String) + 'static,
) -> Deltas<'s> {
    let name = rule.name.clone();
    let cx = RenderContext {
        peers: events.scope().peers(),
        retention_ms: rule.options.retention_ms,
        on_error: Rc::new(move |e| on_error(&name, e)),
    };
    render(&rule.node, events, &cx)
}

/// Extension trait: run SQL rules over a batch stream.
pub trait RunRules<'scope> {
    /// Emits an `alerts` batch for the rows each rule inserts. A rule that fails on a batch
    /// (a bug, since rules are checked when compiled) reports through `on_error` and the other
    /// rules keep running.
    fn run_rules(
        self,
        rules: Arc<Vec<Rule>>,
        on_error: impl Fn(&str, String) + Clone + 'static,
    ) -> Stream<'scope, Time, Vec<EventBatch>>;
}

impl<'scope> RunRules<'scope> for Stream<'scope, Time, Vec<EventBatch>> {
    fn run_rules(
        self,
        rules: Arc<Vec<Rule>>,
        on_error: impl Fn(&str, String) + Clone + 'static,
    ) -> Stream<'scope, Time, Vec<EventBatch>> {
        let mut all: Option<Stream<'scope, Time, Vec<EventBatch>>> = None;
        for rule in rules.iter() {
            let alerts = alerts_of(rule, render_rule(rule, &self, on_error.clone()));
            all = Some(match all {
                None => alerts,
                Some(a) => a.concat(alerts),
            });
        }
        all.unwrap_or_else(|| {
            // No rules: an empty stream of the right type.
            self.unary::<timely::container::CapacityContainerBuilder<Vec<EventBatch>>, _, _, _>(
                Pipeline,
                "NoRules",
                |_, _| |input, _output| input.for_each(|_, _| {}),
            )
        })
    }
}

/// Turns a rule's inserted rows into `alerts` batches.
pub fn alerts_of<'s>(rule: &Rule, deltas: Deltas<'s>) -> Stream<'s, Time, Vec<EventBatch>> {
    let (name, severity) = (rule.name.clone(), rule.severity.clone());
    deltas.unary::<timely::container::CapacityContainerBuilder<Vec<EventBatch>>, _, _, _>(
        Pipeline,
        "RuleAlerts",
        move |_cap, _info| {
            move |input, output| {
                input.for_each(|cap, data| {
                    let mut alerts = AlertsBuilder::default();
                    for d in data.iter() {
                        push_alerts(&name, &severity, d, &mut alerts);
                    }
                    if !alerts.is_empty() {
                        output.session(&cap).give(EventBatch {
                            kind: BatchKind::Events(StreamKind::Alerts),
                            data: alerts.finish(),
                        });
                    }
                });
            }
        },
    )
}

fn push_alerts(name: &str, severity: &str, d: &Delta, alerts: &mut AlertsBuilder) {
    let rows = &d.rows;
    let camera = rows.column_by_name("camera_id").and_then(|c| c.as_any().downcast_ref::<UInt32Array>());
    let id = rows.column_by_name("event_id").and_then(|c| c.as_any().downcast_ref::<UInt64Array>());
    let options = FormatOptions::default().with_null("NULL");
    let formatters: Vec<_> =
        rows.columns().iter().filter_map(|c| ArrayFormatter::try_new(c.as_ref(), &options).ok()).collect();
    let schema = rows.schema();
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
        let event_id = match id {
            Some(c) if c.is_valid(i) => c.value(i),
            _ => hash_bytes(message.as_bytes()),
        };
        alerts.push(&Alert {
            event_time: d.times[i] as i64,
            kind: "rule".into(),
            rule: name.to_owned(),
            severity: severity.to_owned(),
            camera_id: camera.filter(|c| c.is_valid(i)).map_or(0, |c| c.value(i)),
            event_id,
            message,
        });
    }
}

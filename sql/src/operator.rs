//! The rule operator: runs compiled rules on every batch of their source stream.
//!
//! Each rule is a stateless filter/project over Arrow batches, so it runs where the batch is
//! (no exchange) and costs a few vectorized kernels per batch. Every output row becomes an
//! alert carrying the source event's camera, time and id, with the row's columns as message.

use std::sync::Arc;

use datafusion::arrow::array::{Array, TimestampMillisecondArray, UInt32Array, UInt64Array};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use vigil_engine::alerts::{Alert, AlertsBuilder};
use vigil_engine::runtime::{BatchKind, EventBatch, Time};
use vigil_engine::schema::StreamKind;

use crate::error::SqlError;
use crate::rule::{Rule, RuleOutput};

/// Extension trait: run SQL rules over a batch stream.
pub trait RunRules<'scope> {
    /// Emits an `alerts` batch for the rows each rule outputs. A rule that fails on a batch
    /// (a bug, since rules are checked when compiled) reports through `on_error` and the other
    /// rules keep running.
    fn run_rules(
        self,
        rules: Arc<Vec<Rule>>,
        on_error: impl FnMut(&Rule, SqlError) + 'static,
    ) -> Stream<'scope, Time, Vec<EventBatch>>;
}

impl<'scope> RunRules<'scope> for Stream<'scope, Time, Vec<EventBatch>> {
    fn run_rules(
        self,
        rules: Arc<Vec<Rule>>,
        mut on_error: impl FnMut(&Rule, SqlError) + 'static,
    ) -> Stream<'scope, Time, Vec<EventBatch>> {
        self.unary::<timely::container::CapacityContainerBuilder<Vec<EventBatch>>, _, _, _>(
            Pipeline,
            "SqlRules",
            move |_cap, _info| {
                move |input, output| {
                    input.for_each(|cap, data| {
                        let mut alerts = AlertsBuilder::default();
                        for batch in data.iter() {
                            let Some(stream) = batch.stream() else { continue };
                            for rule in rules.iter().filter(|r| r.plan.source == stream) {
                                match rule.apply(&batch.data) {
                                    Ok(Some(out)) => push_alerts(rule, &out, &mut alerts),
                                    Ok(None) => {}
                                    Err(e) => on_error(rule, e),
                                }
                            }
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
}

fn push_alerts(rule: &Rule, out: &RuleOutput, alerts: &mut AlertsBuilder) {
    let keys = &out.keys;
    let (Some(camera), Some(time), Some(id)) = (
        keys.column_by_name("camera_id").and_then(|c| c.as_any().downcast_ref::<UInt32Array>()),
        keys.column_by_name("event_time")
            .and_then(|c| c.as_any().downcast_ref::<TimestampMillisecondArray>()),
        keys.column_by_name("event_id").and_then(|c| c.as_any().downcast_ref::<UInt64Array>()),
    ) else {
        return;
    };
    let options = FormatOptions::default().with_null("NULL");
    let formatters: Vec<_> = out
        .rows
        .columns()
        .iter()
        .filter_map(|c| ArrayFormatter::try_new(c.as_ref(), &options).ok())
        .collect();
    let schema = out.rows.schema();
    for i in 0..out.rows.num_rows() {
        let message = schema
            .fields()
            .iter()
            .zip(&formatters)
            .map(|(f, fmt)| format!("{}={}", f.name(), fmt.value(i)))
            .collect::<Vec<_>>()
            .join(" ");
        alerts.push(&Alert {
            event_time: time.value(i),
            kind: "rule".into(),
            rule: rule.name.clone(),
            severity: rule.severity.clone(),
            camera_id: camera.value(i),
            event_id: id.value(i),
            message,
        });
    }
}

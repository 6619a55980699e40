//! Collecting rules' outputs: what `vigil replay`, tests and `SUBSCRIBE` read.
//!
//! [`capture`] renders rules and appends every output delta, in time order per worker, to a
//! shared [`Outputs`]; [`consolidate`] folds a rule's deltas into its final contents (rows whose
//! net multiplicity is positive, each repeated that many times) in a deterministic order.

use std::sync::{Arc, Mutex};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::probe::{Handle as ProbeHandle, Probe};
use vigil_engine::error::ErrorSink;
use vigil_engine::graph::Graph;
use vigil_engine::runtime::Time;

use crate::delta::Delta;
use crate::operator::render_rule;
use crate::rule::Rule;

/// Per rule (in rule order), the deltas it produced with the time they were produced at.
pub type Outputs = Arc<Mutex<Vec<Vec<(Time, Delta)>>>>;

/// Errors reported while rules ran: (rule, message).
pub type Errors = Arc<Mutex<Vec<(String, String)>>>;

/// New, empty outputs for `n` rules.
pub fn outputs(n: usize) -> Outputs {
    Arc::new(Mutex::new(vec![Vec::new(); n]))
}

/// Renders every rule over the streams of `graph`, appending outputs to `out` and errors to
/// `errors`; the probe follows every rule's output.
pub fn capture(
    rules: &[Rule],
    graph: &mut Graph<'_>,
    out: &Outputs,
    errors: &Errors,
    probe: &ProbeHandle<Time>,
) {
    let errs = Arc::clone(errors);
    let sink = ErrorSink::new(move |name, e| errs.lock().expect("errors").push((name.to_owned(), e)));
    for (i, rule) in rules.iter().enumerate() {
        let deltas = render_rule(rule, graph, &sink);
        let out = Arc::clone(out);
        deltas
            .unary::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
                Pipeline,
                &format!("{}: Capture", rule.name),
                move |_, _| {
                    move |input, _output| {
                        input.for_each(|cap, data| {
                            let t = cap.least().copied().unwrap_or_default();
                            let mut out = out.lock().expect("outputs");
                            out[i].extend(data.drain(..).map(|d| (t, d)));
                        });
                    }
                },
            )
            .probe_with(probe);
    }
}

/// A rule's final contents from its deltas: rows with positive net multiplicity, repeated,
/// sorted by the row's values.
pub fn consolidate(schema: &SchemaRef, deltas: &[Delta]) -> Result<RecordBatch, ArrowError> {
    let batches: Vec<RecordBatch> = deltas.iter().map(|d| d.rows.clone()).collect();
    let diffs: Vec<i64> = deltas.iter().flat_map(|d| d.diffs.iter().copied()).collect();
    vigil_engine::share::net_rows(schema, &batches, &diffs)
}

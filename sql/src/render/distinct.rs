//! The distinct operator: each distinct row once, for as long as it is remembered (the rule's
//! retention after it was last seen). Rows are exchanged by their whole value.

use std::rc::Rc;

use datafusion::arrow::row::OwnedRow;
use datafusion::common::HashMap;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use vigil_engine::runtime::Time;

use super::join::full_rows;
use super::{ByTime, CB, Deltas, RenderContext, by_worker, frontier_time};
use crate::delta::Delta;

/// Renders `DISTINCT` over `input`.
pub fn render_distinct<'s>(input: Deltas<'s>, cx: &RenderContext) -> Deltas<'s> {
    let err = Rc::clone(&cx.on_error);
    let retention = cx.retention_ms;
    let peers = cx.peers;
    let keyed = input.unary::<CB<(u64, Delta)>, _, _, _>(Pipeline, &cx.name("KeyByRow"), move |_, _| {
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
    let mut held = cx.state.share();
    keyed.unary_frontier::<CB<Delta>, _, _, _>(by_worker(), &cx.name("Distinct"), move |_cap, _info| {
        let mut stash: ByTime<Vec<Delta>> = ByTime::default();
        // row → (count, last time seen)
        let mut seen: HashMap<OwnedRow, (i64, Time)> = HashMap::new();
        move |(input, frontier), output| {
            input.for_each(|cap, data| {
                let Some(cap) = cap.retain_least(0) else { return };
                stash.at(&cap).extend(data.drain(..).map(|(_, d)| d));
            });
            let f = frontier_time(frontier);
            while let Some((_t, cap, ds)) = stash.next_ready(f) {
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
            held.set(seen.len() + stash.held(|ds| ds.iter().map(Delta::len).sum()));
        }
    })
}

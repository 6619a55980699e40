//! The bridge between Arrow batches and differential dataflow, and back.
//!
//! Stateless work (filters, projections, pre-aggregation) stays on Arrow batches, where it costs
//! tens of nanoseconds a row. Stateful incremental work (joins, aggregates) happens in
//! differential dataflow, whose cost is about a microsecond per *update*; so a batch is turned
//! into as few updates as possible, usually pre-aggregated per key ([`ToUpdates`]). State is
//! bounded the way Materialize bounds temporal filters: an update may be paired with its own
//! retraction at a later time, after which the arrangement consolidates it away.
//!
//! Back out of differential, [`Finalize`] releases updates once the frontier has passed their
//! time, consolidated.

use std::collections::BTreeMap;

use differential_dataflow::consolidation::consolidate;
use differential_dataflow::{AsCollection, ExchangeData, VecCollection};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::runtime::Time;
use crate::stream::Batch;

/// Difference type of vigil's collections.
pub type Diff = isize;

/// Extension trait: turn batches into differential updates.
pub trait ToUpdates<'scope> {
    /// Calls `logic(batch, batch_time, out)` for every batch (its rows and multiplicity);
    /// `logic` pushes `(data, time, diff)` updates. Times earlier than the batch's own are raised to it (a batch can only
    /// speak for its time and later), so `logic` may use event times or expiry times freely.
    ///
    /// Pre-aggregate in `logic` (one update per key per batch, not one per row): see
    /// `vigil_operators::watchlist` for an example.
    ///
    /// ```
    /// use vigil_engine::bridge::{Finalize, ToUpdates};
    /// use vigil_engine::stream::Batch;
    ///
    /// timely::example(|scope| {
    ///     let batches = timely::dataflow::operators::generic::operator::empty::<_, Vec<Batch>>(scope);
    ///     // One update per batch: its row count, at the batch's time, released once complete.
    ///     let counts = batches.updates("Rows", |b, t, out| out.push((b.rows.num_rows() as u64, t, 1)));
    ///     let _released = counts.finalize("Released");
    /// });
    /// ```
    fn updates<D, L>(self, name: &str, logic: L) -> VecCollection<'scope, Time, D, Diff>
    where
        D: ExchangeData,
        L: FnMut(&Batch, Time, &mut Vec<(D, Time, Diff)>) + 'static;
}

impl<'scope> ToUpdates<'scope> for Stream<'scope, Time, Vec<Batch>> {
    fn updates<D, L>(self, name: &str, mut logic: L) -> VecCollection<'scope, Time, D, Diff>
    where
        D: ExchangeData,
        L: FnMut(&Batch, Time, &mut Vec<(D, Time, Diff)>) + 'static,
    {
        let mut buffer = Vec::new();
        self.unary::<timely::container::CapacityContainerBuilder<Vec<(D, Time, Diff)>>, _, _, _>(
            Pipeline,
            name,
            move |_cap, _info| {
                move |input, output| {
                    input.for_each(|cap, data| {
                        let Some(cap) = cap.retain_least(0) else { return };
                        let t = *cap.time();
                        for batch in data.iter() {
                            logic(batch, t, &mut buffer);
                        }
                        if buffer.is_empty() {
                            return;
                        }
                        for u in buffer.iter_mut() {
                            u.1 = u.1.max(t);
                        }
                        output.session(&cap).give_iterator(buffer.drain(..));
                    });
                }
            },
        )
        .as_collection()
    }
}

/// Updates held back until their time completes, with the capability to send them.
type Pending<D> = (Capability<Time>, Vec<(D, Diff)>);

/// Extension trait: release consolidated updates once their time is complete.
pub trait Finalize<'scope, D> {
    /// Emits, once the frontier has passed `t`, the consolidated non-zero updates at `t`.
    fn finalize(self, name: &str) -> Stream<'scope, Time, Vec<(D, Time, Diff)>>;
}

impl<'scope, D: ExchangeData> Finalize<'scope, D> for VecCollection<'scope, Time, D, Diff> {
    fn finalize(self, name: &str) -> Stream<'scope, Time, Vec<(D, Time, Diff)>> {
        self.inner
            .unary_frontier::<timely::container::CapacityContainerBuilder<Vec<(D, Time, Diff)>>, _, _, _>(
                Pipeline,
                name,
                |_cap, _info| {
                    let mut pending: BTreeMap<Time, Pending<D>> = BTreeMap::new();
                    move |(input, frontier), output| {
                        input.for_each(|cap, data| {
                            let Some(cap) = cap.retain_least(0) else { return };
                            for (d, t, r) in data.drain(..) {
                                let slot = pending
                                    .entry(t)
                                    .or_insert_with(|| (cap.delayed(&t.max(*cap.time())), Vec::new()));
                                slot.1.push((d, r));
                            }
                        });
                        while let Some(entry) = pending.first_entry() {
                            if frontier.less_equal(entry.key()) {
                                break;
                            }
                            let (t, (cap, mut updates)) = entry.remove_entry();
                            consolidate(&mut updates);
                            output.session(&cap).give_iterator(updates.into_iter().map(|(d, r)| (d, t, r)));
                        }
                    }
                },
            )
    }
}

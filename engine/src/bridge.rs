//! The bridge between Arrow batches and differential dataflow, and back.
//!
//! Stateless work (filters, projections, pre-aggregation) stays on Arrow batches, where it costs
//! tens of nanoseconds a row. Stateful incremental work (joins, aggregates) happens in
//! differential dataflow, whose cost is about a microsecond per *update*; so a batch is turned
//! into as few updates as possible, usually pre-aggregated per key ([`ToUpdates`]). State is
//! bounded the way Materialize bounds temporal filters: an update is paired with its own
//! retraction at a later time, after which the arrangement consolidates it away.
//!
//! That retraction is not handed to differential ahead of its time, though: an
//! arrangement's batcher keeps every update beyond its frontier and merges them all again at
//! each seal, so a day of pending retractions (a plate read's lookback) made every tick cost
//! that whole day (measured: a run's seconds per simulated hour grew from 18 to 44 in 11 hours).
//! [`LiveFor`] holds them in time order and sends each when its time comes.
//!
//! Back out of differential, [`Finalize`] releases updates once the frontier has passed their
//! time, consolidated.

use std::cmp::Reverse;
use std::collections::binary_heap::PeekMut;
use std::collections::{BTreeMap, BinaryHeap};

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
    /// speak for its time and later), so `logic` may use event times freely. (An update's
    /// retraction at its expiry goes through [`LiveFor`], not here: see the module's note.)
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

/// Extension trait: updates that hold for a while, then retract themselves.
pub trait LiveFor<'scope, D> {
    /// Each update `(d, t, r)` now, and `(d, t + life, -r)` once the input's frontier reaches
    /// `t + life` (or the input ends): what pairing each update with its retraction does,
    /// without handing differential a retraction before its time.
    ///
    /// ```
    /// use timely::dataflow::operators::{Inspect, ToStream};
    /// use differential_dataflow::AsCollection;
    /// use vigil_engine::bridge::LiveFor;
    ///
    /// let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    /// let out = std::sync::Arc::clone(&seen);
    /// timely::example(move |scope| {
    ///     // Reads 7 and 8 at times 10 and 15, each in the join for 100.
    ///     let reads = vec![(7u32, 10u64, 1isize), (8, 15, 1)].to_stream(scope).as_collection();
    ///     reads.live_for("Reads", 100).inner.inspect(move |u| out.lock().unwrap().push(*u));
    /// });
    /// let mut seen = seen.lock().unwrap().clone();
    /// seen.sort_by_key(|u| (u.1, u.0));
    /// assert_eq!(seen, [(7, 10, 1), (8, 15, 1), (7, 110, -1), (8, 115, -1)]);
    /// ```
    fn live_for(self, name: &str, life: Time) -> VecCollection<'scope, Time, D, Diff>;
}

impl<'scope, D: ExchangeData> LiveFor<'scope, D> for VecCollection<'scope, Time, D, Diff> {
    fn live_for(self, name: &str, life: Time) -> VecCollection<'scope, Time, D, Diff> {
        self.inner
            .unary_frontier::<timely::container::CapacityContainerBuilder<Vec<(D, Time, Diff)>>, _, _, _>(
                Pipeline,
                name,
                |_cap, _info| {
                    // Retractions by the time they are due (a heap: one allocation for all,
                    // where a map of vectors took one per read), and a capability at the earliest.
                    let mut due: BinaryHeap<Reverse<(Time, D, Diff)>> = BinaryHeap::new();
                    let mut held: Option<Capability<Time>> = None;
                    let mut ready: Vec<(D, Diff)> = Vec::new();
                    move |(input, frontier), output| {
                        input.for_each(|cap, data| {
                            let Some(cap) = cap.retain_least(0) else { return };
                            for (d, t, r) in data.iter() {
                                let at = t.saturating_add(life);
                                due.push(Reverse((at, d.clone(), -r)));
                                // The held capability is never later than a due time; an
                                // update's time is never earlier than its capability's.
                                if held.as_ref().is_none_or(|h| at < *h.time()) {
                                    held = Some(cap.delayed(&at.max(*cap.time())));
                                }
                            }
                            output.session(&cap).give_iterator(data.drain(..));
                        });
                        // What is due, one time at a time (the heap gives them in time order).
                        while let Some(Reverse((t, ..))) = due.peek() {
                            let t = *t;
                            if frontier.less_than(&t) {
                                break;
                            }
                            while let Some(Reverse((_, d, r))) =
                                due.peek_mut().filter(|u| u.0.0 == t).map(PeekMut::pop)
                            {
                                ready.push((d, r));
                            }
                            consolidate(&mut ready);
                            let cap = held.as_ref().expect("a capability while retractions are due");
                            output
                                .session(&cap.delayed(&t))
                                .give_iterator(ready.drain(..).map(|(d, r)| (d, t, r)));
                        }
                        match (due.peek(), held.as_mut()) {
                            (Some(Reverse((t, ..))), Some(cap)) => cap.downgrade(t),
                            _ => held = None,
                        }
                    }
                },
            )
            .as_collection()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use differential_dataflow::input::InputSession;
    use timely::dataflow::operators::Inspect;
    use timely::dataflow::operators::probe::{Handle, Probe};

    use super::*;

    /// Runs `steps` of (updates at the step's time, then the input advanced to `to`) through
    /// `live_for(life)`, and returns what came out after each step.
    fn run(life: Time, steps: Vec<(Vec<(u32, Time)>, Time)>) -> Vec<Vec<(u32, Time, Diff)>> {
        timely::execute_directly(move |worker| {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let out = Arc::clone(&seen);
            let mut input = InputSession::<Time, u32, Diff>::new();
            let probe = Handle::new();
            worker.dataflow(|scope| {
                input
                    .to_collection(scope)
                    .live_for("Test", life)
                    .inner
                    .inspect(move |u| out.lock().unwrap().push(*u))
                    .probe_with(&probe);
            });
            let mut after = Vec::new();
            for (updates, to) in steps {
                for (d, t) in updates {
                    input.update_at(d, t, 1);
                }
                input.advance_to(to);
                input.flush();
                worker.step_while(|| probe.less_than(&to));
                let mut got = std::mem::take(&mut *seen.lock().unwrap());
                got.sort_unstable_by_key(|u| (u.1, u.0));
                after.push(got);
            }
            after
        })
    }

    #[test]
    fn a_retraction_is_sent_when_its_time_comes_never_ahead_of_it() {
        let after = run(
            100,
            vec![
                (vec![(1, 0), (2, 5)], 10),
                (vec![(3, 20)], 60),
                // Time 105 reached: the retractions at 100 and 105 are due, not 120.
                (vec![], 105),
                (vec![(4, 150)], 200),
                (vec![], 1_000),
            ],
        );
        assert_eq!(after[0], [(1, 0, 1), (2, 5, 1)], "the updates at once");
        assert_eq!(after[1], [(3, 20, 1)], "no retraction before its time");
        assert_eq!(after[2], [(1, 100, -1), (2, 105, -1)]);
        assert_eq!(after[3], [(3, 120, -1), (4, 150, 1)]);
        assert_eq!(after[4], [(4, 250, -1)]);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever the updates and however the input advances: each update comes out at once,
        /// its retraction `life` later, and no retraction before the input has reached its time.
        #[test]
        fn every_update_and_its_retraction_and_none_early(
            life in 0u64..40,
            steps in proptest::collection::vec(
                (proptest::collection::vec((0u32..6, 0u64..30), 0..6), 1u64..25), 1..12),
        ) {
            let (mut now, mut input, mut plan) = (0u64, Vec::new(), Vec::new());
            for (updates, step) in steps {
                let at: Vec<(u32, Time)> = updates.into_iter().map(|(d, dt)| (d, now + dt)).collect();
                input.extend(at.iter().copied());
                now += step;
                plan.push((at, now));
            }
            plan.push((Vec::new(), Time::MAX));
            let reached: Vec<Time> = plan.iter().map(|p| p.1).collect();
            let after = run(life, plan);
            let mut out = Vec::new();
            for (got, to) in after.iter().zip(reached) {
                for &(d, t, r) in got {
                    proptest::prop_assert!(r > 0 || t <= to, "retraction of {} at {} sent with the input at {}", d, t, to);
                }
                out.extend(got.iter().copied());
            }
            let mut expected: Vec<(u32, Time, Diff)> =
                input.iter().flat_map(|&(d, t)| [(d, t, 1), (d, t + life, -1)]).collect();
            differential_dataflow::consolidation::consolidate_updates(&mut expected);
            differential_dataflow::consolidation::consolidate_updates(&mut out);
            proptest::prop_assert_eq!(out, expected);
        }
    }

    #[test]
    fn an_update_due_before_those_held_is_still_sent_on_time() {
        // Read 2 comes after read 1 but is due first (an earlier time, as a late camera's).
        let after = run(50, vec![(vec![(1, 40)], 30), (vec![(2, 31)], 35), (vec![], 85), (vec![], 95)]);
        assert_eq!(after[0], [(1, 40, 1)]);
        assert_eq!(after[1], [(2, 31, 1)]);
        assert_eq!(after[2], [(2, 81, -1)]);
        assert_eq!(after[3], [(1, 90, -1)]);
    }
}

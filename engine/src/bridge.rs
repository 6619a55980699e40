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
//! [`LiveFor`] holds them in time order and sends each when its time comes; [`LiveForUnless`]
//! also takes an update out early, when its key is (a plate read erased at a person's request).
//!
//! Back out of differential, [`Finalize`] releases updates once the frontier has passed their
//! time, consolidated.

use std::cmp::Reverse;
use std::collections::binary_heap::PeekMut;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::hash::Hash;

use differential_dataflow::consolidation::{consolidate, consolidate_updates};
use differential_dataflow::hashable::Hashable;
use differential_dataflow::{AsCollection, ExchangeData, VecCollection};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;
use timely::progress::frontier::MutableAntichain;

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
        self.unary::<CapacityContainerBuilder<Vec<(D, Time, Diff)>>, _, _, _>(
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
        self.inner.unary_frontier::<CapacityContainerBuilder<Vec<(D, Time, Diff)>>, _, _, _>(
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
            .unary_frontier::<CapacityContainerBuilder<Vec<(D, Time, Diff)>>, _, _, _>(
                Pipeline,
                name,
                |_cap, _info| {
                    let mut due = Due::default();
                    move |(input, frontier), output| {
                        input.for_each(|cap, data| {
                            let Some(cap) = cap.retain_least(0) else { return };
                            for (d, t, r) in data.iter() {
                                due.hold(d.clone(), *t, *r, life, &cap);
                            }
                            output.session(&cap).give_iterator(data.drain(..));
                        });
                        due.release(frontier, |cap, updates| output.session(cap).give_iterator(updates));
                    }
                },
            )
            .as_collection()
    }
}

/// Extension trait: keyed updates that hold for a while, or until their key is taken out.
pub trait LiveForUnless<'scope, K, V> {
    /// As [`LiveFor::live_for`], and while `gone` holds a key, its updates are out: those held
    /// are retracted at once (at the time `gone` takes the key, or the update's own if later)
    /// and no longer held; one that comes later counts only until its key went out (nothing,
    /// if it is timed after). A key stays out until `gone` retracts it. What an antijoin with
    /// `gone` would give, without a second copy of every update kept for it: what leaves (an
    /// erased plate read) leaves this operator's memory at once, not at the end of its life. The updates and `gone` are exchanged by key, as
    /// differential exchanges them to arrange by key.
    ///
    /// ```
    /// use timely::dataflow::operators::{Inspect, ToStream};
    /// use differential_dataflow::AsCollection;
    /// use vigil_engine::bridge::LiveForUnless;
    ///
    /// let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    /// let out = std::sync::Arc::clone(&seen);
    /// timely::example(move |scope| {
    ///     // Reads 7 and 8 at time 10, each in the join for 100; read 7 erased at time 30.
    ///     let reads = vec![((7u64, 'a'), 10u64, 1isize), ((8, 'b'), 10, 1)].to_stream(scope).as_collection();
    ///     let erased = vec![(7u64, 30u64, 1isize)].to_stream(scope).as_collection();
    ///     let live = reads.live_for_unless("Reads", 100, erased);
    ///     live.inner.inspect(move |u| out.lock().unwrap().push(*u));
    /// });
    /// let mut seen = seen.lock().unwrap().clone();
    /// seen.sort_by_key(|u| (u.1, u.0));
    /// assert_eq!(seen, [((7, 'a'), 10, 1), ((8, 'b'), 10, 1), ((7, 'a'), 30, -1), ((8, 'b'), 110, -1)]);
    /// ```
    fn live_for_unless(
        self,
        name: &str,
        life: Time,
        gone: VecCollection<'scope, Time, K, Diff>,
    ) -> VecCollection<'scope, Time, (K, V), Diff>;
}

impl<'scope, K, V> LiveForUnless<'scope, K, V> for VecCollection<'scope, Time, (K, V), Diff>
where
    K: ExchangeData + Hash,
    V: ExchangeData,
{
    fn live_for_unless(
        self,
        name: &str,
        life: Time,
        gone: VecCollection<'scope, Time, K, Diff>,
    ) -> VecCollection<'scope, Time, (K, V), Diff> {
        let by_key = Exchange::new(|u: &((K, V), Time, Diff)| (u.0).0.hashed());
        let gone_by_key = Exchange::new(|u: &(K, Time, Diff)| u.0.hashed());
        self.inner
            .binary_frontier::<_, CapacityContainerBuilder<Vec<((K, V), Time, Diff)>>, _, _, _, _>(
                gone.inner,
                by_key,
                gone_by_key,
                name,
                |_cap, _info| {
                    let mut due: Due<(K, V)> = Due::default();
                    // The keys out: their multiplicity in `gone` (kept while positive) and
                    // since when they are out.
                    let mut out: HashMap<K, (Diff, Time)> = HashMap::new();
                    let mut taken: HashMap<K, Time> = HashMap::new();
                    move |(input, frontier), (gone, _), output| {
                        gone.for_each(|cap, data| {
                            let Some(cap) = cap.retain_least(0) else { return };
                            for (k, t, r) in data.drain(..) {
                                let (n, since) = out.entry(k.clone()).or_insert((0, t));
                                *n += r;
                                if r > 0 {
                                    *since = (*since).min(t);
                                }
                                if *n > 0 {
                                    taken.insert(k, *since);
                                } else {
                                    out.remove(&k);
                                }
                            }
                            // Erasures are rare (a person's request): one pass over what is held.
                            for (at, (k, v), r) in due.take(|d| taken.contains_key(&d.0)) {
                                // Out at the key's time, or the update's own if later.
                                let t = taken[&k].max(at.saturating_sub(life));
                                output.session(&cap.delayed(&t)).give(((k, v), t, r));
                            }
                            taken.clear();
                        });
                        input.for_each(|cap, data| {
                            let Some(cap) = cap.retain_least(0) else { return };
                            let mut session = output.session(&cap);
                            for (d, t, r) in data.drain(..) {
                                match out.get(&d.0) {
                                    None => {
                                        due.hold(d.clone(), t, r, life, &cap);
                                        session.give((d, t, r));
                                    }
                                    // Timed before its key went out (and come after): in until then.
                                    Some(&(_, since)) if t < since => {
                                        let until = since.min(t.saturating_add(life));
                                        session.give((d.clone(), t, r));
                                        session.give((d, until, -r));
                                    }
                                    Some(_) => {}
                                }
                            }
                        });
                        due.release(frontier, |cap, updates| output.session(cap).give_iterator(updates));
                    }
                },
            )
            .as_collection()
    }
}

/// Retractions waiting for their time, and a capability at the earliest. A heap: one allocation
/// for all, where a map of vectors by time took one per read.
struct Due<D> {
    heap: BinaryHeap<Reverse<(Time, D, Diff)>>,
    held: Option<Capability<Time>>,
    ready: Vec<(D, Time, Diff)>,
}

impl<D> Default for Due<D> {
    fn default() -> Self {
        Self { heap: BinaryHeap::new(), held: None, ready: Vec::new() }
    }
}

impl<D: Ord + Clone> Due<D> {
    /// Holds the retraction of `(d, t, r)`, due `life` after `t`; `cap` is the update's.
    fn hold(&mut self, d: D, t: Time, r: Diff, life: Time, cap: &Capability<Time>) {
        let at = t.saturating_add(life);
        self.heap.push(Reverse((at, d, -r)));
        // The held capability is never later than a due time; an update's time is never
        // earlier than its capability's.
        if self.held.as_ref().is_none_or(|h| at < *h.time()) {
            self.held = Some(cap.delayed(&at.max(*cap.time())));
        }
    }

    /// Takes out the held retractions of the data `gone` picks: (due time, data, diff).
    fn take(&mut self, mut gone: impl FnMut(&D) -> bool) -> Vec<(Time, D, Diff)> {
        let mut taken = Vec::new();
        self.heap.retain(|Reverse(u)| {
            let out = gone(&u.1);
            if out {
                taken.push(u.clone());
            }
            !out
        });
        taken
    }

    /// Sends, one time at a time (the heap gives them in time order), the retractions the
    /// input's `frontier` has reached, consolidated, each with a capability at its time.
    fn release(
        &mut self,
        frontier: &MutableAntichain<Time>,
        mut send: impl FnMut(&Capability<Time>, std::vec::Drain<'_, (D, Time, Diff)>),
    ) {
        while let Some(Reverse((t, ..))) = self.heap.peek() {
            let t = *t;
            if frontier.less_than(&t) {
                break;
            }
            while let Some(Reverse(u)) = self.heap.peek_mut().filter(|u| u.0.0 == t).map(PeekMut::pop) {
                let (t, d, r) = u;
                self.ready.push((d, t, r));
            }
            consolidate_updates(&mut self.ready);
            let cap = self.held.as_ref().expect("a capability while retractions are due").delayed(&t);
            send(&cap, self.ready.drain(..));
        }
        match (self.heap.peek(), self.held.as_mut()) {
            (Some(Reverse((t, ..))), Some(cap)) => cap.downgrade(t),
            _ => self.held = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use differential_dataflow::input::InputSession;
    use timely::dataflow::operators::Inspect;
    use timely::dataflow::operators::probe::{Handle, Probe};

    use super::*;

    /// A step: updates at their times, keys taken out (+1) or put back (-1), then the inputs
    /// advanced to the last field.
    type Step<D> = (Vec<(D, Time)>, Vec<(u32, Time, Diff)>, Time);

    /// What came out after each step.
    type After<D> = Vec<Vec<(D, Time, Diff)>>;

    /// Runs `steps` through the operator `build` makes, and returns what came out after each.
    fn drive<D, F>(steps: Vec<Step<D>>, build: F) -> After<D>
    where
        D: ExchangeData + Copy + Sync,
        F: for<'a> Fn(
                VecCollection<'a, Time, D, Diff>,
                VecCollection<'a, Time, u32, Diff>,
            ) -> VecCollection<'a, Time, D, Diff>
            + Send
            + Sync
            + 'static,
    {
        timely::execute_directly(move |worker| {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let out = Arc::clone(&seen);
            let mut input = InputSession::<Time, D, Diff>::new();
            let mut gone = InputSession::<Time, u32, Diff>::new();
            let probe = Handle::new();
            worker.dataflow(|scope| {
                build(input.to_collection(scope), gone.to_collection(scope))
                    .inner
                    .inspect(move |u| out.lock().unwrap().push(*u))
                    .probe_with(&probe);
            });
            let mut after = Vec::new();
            for (updates, keys, to) in steps {
                for (k, t, r) in keys {
                    gone.update_at(k, t, r);
                }
                for (d, t) in updates {
                    input.update_at(d, t, 1);
                }
                input.advance_to(to);
                gone.advance_to(to);
                input.flush();
                gone.flush();
                worker.step_while(|| probe.less_than(&to));
                let mut got = std::mem::take(&mut *seen.lock().unwrap());
                got.sort_unstable_by_key(|u| (u.1, u.0));
                after.push(got);
            }
            after
        })
    }

    /// `steps` of (updates, then the input advanced to `to`) through `live_for(life)`.
    fn run(life: Time, steps: Vec<(Vec<(u32, Time)>, Time)>) -> Vec<Vec<(u32, Time, Diff)>> {
        drive(steps.into_iter().map(|(u, to)| (u, Vec::new(), to)).collect(), move |c, _| {
            c.live_for("Test", life)
        })
    }

    /// `steps` through `live_for_unless(life, gone)`: reads are (key, value), keys go out and back.
    fn run_unless(life: Time, steps: Vec<Step<(u32, u32)>>) -> After<(u32, u32)> {
        drive(steps, move |c, gone| c.live_for_unless("Test", life, gone))
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

        /// Reads with their own keys, some keys taken out along the way: a read never counts
        /// below zero nor above one, one whose key is out is out from then on, one whose key
        /// stays in is in for exactly its life, no retraction comes before its time, and in the
        /// end nothing is left.
        #[test]
        fn a_key_out_is_out_and_the_rest_live_their_life(
            life in 0u64..40,
            steps in proptest::collection::vec(
                (proptest::collection::vec(0u64..30, 0..5), proptest::collection::vec((0usize..40, 0u64..30), 0..3), 1u64..25),
                1..12),
        ) {
            let (mut now, mut next_key, mut plan) = (0u64, 0u32, Vec::new());
            let mut reads: Vec<(u32, Time)> = Vec::new();
            let mut erased: std::collections::BTreeMap<u32, Time> = Default::default();
            for (updates, outs, step) in steps {
                let mut at = Vec::new();
                for dt in updates {
                    reads.push((next_key, now + dt));
                    at.push(((next_key, 7), now + dt));
                    next_key += 1;
                }
                let mut keys = Vec::new();
                for (pick, dt) in outs {
                    let Some(&(k, _)) = reads.get(pick) else { continue };
                    if erased.contains_key(&k) { continue }
                    erased.insert(k, now + dt);
                    keys.push((k, now + dt, 1));
                }
                now += step;
                plan.push((at, keys, now));
            }
            plan.push((Vec::new(), Vec::new(), Time::MAX));
            let reached: Vec<Time> = plan.iter().map(|p| p.2).collect();
            let after = run_unless(life, plan);
            let mut out = Vec::new();
            for (got, to) in after.iter().zip(reached) {
                for &(d, t, r) in got {
                    proptest::prop_assert!(r > 0 || t <= to || erased.contains_key(&d.0),
                        "retraction of {:?} at {} sent with the input at {}", d, t, to);
                }
                out.extend(got.iter().copied());
            }
            for &(k, t) in &reads {
                let mine: Vec<(Time, Diff)> = out.iter().filter(|u| u.0.0 == k).map(|u| (u.1, u.2)).collect();
                let count_at = |x: Time| mine.iter().filter(|u| u.0 <= x).map(|u| u.1).sum::<Diff>();
                let mut times: Vec<Time> = mine.iter().map(|u| u.0).collect();
                times.push(t);
                for &x in &times {
                    let n = count_at(x);
                    proptest::prop_assert!((0..=1).contains(&n), "read {} counts {} at {}", k, n, x);
                }
                proptest::prop_assert_eq!(count_at(Time::MAX), 0, "read {} is left", k);
                match erased.get(&k) {
                    Some(&e) => proptest::prop_assert_eq!(count_at(e.max(t)), 0, "read {} in after its key went out at {}", k, e),
                    None => {
                        let mut expected = vec![(t, 1), (t + life, -1)];
                        let mut mine = mine.clone();
                        consolidate(&mut expected);
                        consolidate(&mut mine);
                        proptest::prop_assert_eq!(mine, expected);
                    }
                }
            }
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

    #[test]
    fn a_key_taken_out_takes_its_updates_out_at_once_and_for_good() {
        let after = run_unless(
            100,
            vec![
                (vec![((1, 10), 0), ((2, 20), 0), ((3, 30), 5)], vec![], 10),
                // Key 2 out at 20: retracted then, not at 100.
                (vec![], vec![(2, 20, 1)], 30),
                // A later update for key 2 is not sent; key 3's update at 50 is.
                (vec![((2, 21), 40), ((3, 31), 50)], vec![], 60),
                (vec![], vec![], 1_000),
            ],
        );
        assert_eq!(after[0], [((1, 10), 0, 1), ((2, 20), 0, 1), ((3, 30), 5, 1)]);
        assert_eq!(after[1], [((2, 20), 20, -1)]);
        assert_eq!(after[2], [((3, 31), 50, 1)]);
        // Key 2's pending retraction was dropped with it: a second one would show here.
        assert_eq!(after[3], [((1, 10), 100, -1), ((3, 30), 105, -1), ((3, 31), 150, -1)]);
    }

    #[test]
    fn a_key_out_before_its_update_is_timed_keeps_it_from_going_negative_and_comes_back_when_put_back() {
        let after = run_unless(
            100,
            vec![
                // An update at 50, its key taken out at 20 (an earlier time) afterwards: the
                // retraction is at the update's own time, never before it.
                (vec![((4, 40), 50)], vec![], 10),
                (vec![], vec![(4, 20, 1)], 30),
                // Put back: its updates are sent again.
                (vec![], vec![(4, 60, -1)], 70),
                (vec![((4, 41), 80)], vec![], 90),
                (vec![], vec![], 1_000),
            ],
        );
        assert_eq!(after[0], [((4, 40), 50, 1)]);
        assert_eq!(after[1], [((4, 40), 50, -1)]);
        assert_eq!(after[2], []);
        assert_eq!(after[3], [((4, 41), 80, 1)]);
        assert_eq!(after[4], [((4, 41), 180, -1)]);
    }
}

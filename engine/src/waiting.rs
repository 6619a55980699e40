//! Items held until the watermark passes them, and the one capability that covers them.
//!
//! Operators that need their input complete up to a time (a tracker fed each camera's frames in
//! capture order, a zone fusing its cameras' frames of one instant) all do the same thing: keep
//! items by event time, keep the least input capability, process what the frontier has passed,
//! then move the capability up to what still waits (or to the frontier, while state may still
//! emit), or let it go. [`Waiting`] is that, once.

use std::collections::BTreeMap;

use timely::dataflow::operators::Capability;

use crate::runtime::Time;
use crate::time::Millis;

/// Items by event time, waiting for the frontier; see the module documentation.
#[derive(Debug)]
pub struct Waiting<T> {
    items: BTreeMap<Millis, Vec<T>>,
    cap: Option<Capability<Time>>,
}

impl<T> Default for Waiting<T> {
    fn default() -> Self {
        Self { items: BTreeMap::new(), cap: None }
    }
}

impl<T> Waiting<T> {
    /// Keeps `cap` if it is earlier than the one held (the least covers every later output).
    pub fn hold(&mut self, cap: Capability<Time>) {
        if self.cap.as_ref().is_none_or(|h| cap.time() < h.time()) {
            self.cap = Some(cap);
        }
    }

    /// Adds an item of event time `t`.
    pub fn push(&mut self, t: Millis, item: T) {
        self.items.entry(t).or_default().push(item);
    }

    /// Removes the items the frontier has passed (all of them once the input has ended), by
    /// event time in order.
    pub fn take_ready(&mut self, frontier: Option<Time>) -> BTreeMap<Millis, Vec<T>> {
        match frontier {
            Some(f) => {
                let rest = self.items.split_off(&i64::try_from(f).unwrap_or(Millis::MAX));
                std::mem::replace(&mut self.items, rest)
            }
            None => std::mem::take(&mut self.items),
        }
    }

    /// The capability held, if any.
    pub fn cap(&self) -> Option<&Capability<Time>> {
        self.cap.as_ref()
    }

    /// A capability for outputs at event time `t` (no earlier than the one held).
    pub fn cap_at(&self, t: Millis) -> Option<Capability<Time>> {
        self.cap.as_ref().map(|h| h.delayed(&(t.max(0) as Time).max(*h.time())))
    }

    /// After an activation: moves the capability up to the earliest item still waiting, or to
    /// `frontier` when `busy` (the operator's state may still emit), and lets it go otherwise.
    pub fn release(&mut self, frontier: Option<Time>, busy: bool) {
        self.hold_until(frontier.filter(|_| busy));
    }

    /// After an activation: moves the capability up to the earliest item still waiting or
    /// `next`, the earliest time the operator's state can still emit at, whichever is first, and
    /// lets it go when there is neither. Unlike [`release`](Self::release) the capability does
    /// not follow the frontier, so outputs keep their own times whatever the scheduling.
    pub fn release_to(&mut self, frontier: Option<Time>, next: Option<Time>) {
        self.hold_until(next.filter(|_| frontier.is_some()));
    }

    /// Keeps the capability at the earliest item still waiting or `next`, or lets it go.
    fn hold_until(&mut self, next: Option<Time>) {
        let first = self.items.keys().next().map(|&t| t.max(0) as Time);
        let keep = match (first, next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match (keep, self.cap.as_mut()) {
            (Some(t), Some(c)) if t > *c.time() => c.downgrade(&t),
            (Some(_), Some(_)) => {}
            _ => self.cap = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_items_come_out_in_time_order_and_the_rest_waits() {
        let mut w = Waiting::default();
        for (t, x) in [(30, 'c'), (10, 'a'), (20, 'b'), (10, 'd')] {
            w.push(t, x);
        }
        let ready: Vec<(Millis, Vec<char>)> = w.take_ready(Some(25)).into_iter().collect();
        assert_eq!(ready, vec![(10, vec!['a', 'd']), (20, vec!['b'])]);
        let rest: Vec<(Millis, Vec<char>)> = w.take_ready(None).into_iter().collect();
        assert_eq!(rest, vec![(30, vec!['c'])]);
    }
}

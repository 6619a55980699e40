//! Counting an event that comes in storms, to log it at most once a period with its count.
//!
//! A refused connection, a login that timed out: one line each would let a client fill the
//! log (and the disk) at the rate it can open sockets. [`Tally`] counts every one and says when
//! a line is due. Written here because `tracing` has no rate limit of its own, and the count is
//! the part an operator needs.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Events counted since the start, logged at most once a period; shared by reference (the
/// count is behind a lock taken for a few instructions).
#[derive(Debug)]
pub struct Tally {
    period: Duration,
    /// Events so far, and when a line was last due.
    state: Mutex<(u64, Option<Instant>)>,
}

impl Tally {
    /// A tally that lets a line through at most once every `period`.
    pub fn new(period: Duration) -> Self {
        Self { period, state: Mutex::new((0, None)) }
    }

    /// Counts one event at `now`; `Some(events so far)` when a line is due (the first event,
    /// then the first one at least a period after the last line).
    pub fn count_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (count, logged) = &mut *state;
        *count += 1;
        if logged.is_some_and(|t| now.saturating_duration_since(t) < self.period) {
            return None;
        }
        *logged = Some(now);
        Some(*count)
    }

    /// [`Self::count_at`] now.
    pub fn count(&self) -> Option<u64> {
        self.count_at(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storm_is_one_line_a_period_with_its_count() {
        let tally = Tally::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(tally.count_at(at(0)), Some(1));
        // 1,000 more within the period: no line.
        assert!((1..=1_000).all(|i| tally.count_at(at(i)).is_none()));
        // The first past the period carries every event so far.
        assert_eq!(tally.count_at(at(10_000)), Some(1_002));
        assert_eq!(tally.count_at(at(19_999)), None);
        assert_eq!(tally.count_at(at(20_000)), Some(1_004));
        // A clock read before the last line (another thread's) is within the period.
        assert_eq!(tally.count_at(at(5)), None);
    }
}

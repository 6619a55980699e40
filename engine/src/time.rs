//! Event time and watermarks: how the engine decides that a moment of the past is complete.
//!
//! Timely timestamps in vigil are logical milliseconds of *event time* (capture time, UTC).
//! The watermark is the least time that may still arrive; it becomes the frontier of every
//! input. It is the minimum over live sources of `latest event time − allowed lateness`. A source
//! that has sent nothing for `idle_timeout` (measured on the ingest clock, which is simulated
//! time in the simulator and wall-clock time for live cameras) stops holding the watermark back,
//! so one silent camera does not freeze every window. Events behind the watermark are *late*:
//! the ingest layer counts them per source and routes them to the `late_events` stream.

use std::collections::BTreeMap;

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

/// Watermark policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatermarkPolicy {
    /// How far behind its newest event a source may still deliver, in milliseconds.
    pub allowed_lateness_ms: Millis,
    /// After this long without events (on the ingest clock) a source no longer holds the
    /// watermark back.
    pub idle_timeout_ms: Millis,
}

impl Default for WatermarkPolicy {
    fn default() -> Self {
        Self { allowed_lateness_ms: 2_000, idle_timeout_ms: 10_000 }
    }
}

#[derive(Clone, Copy, Debug)]
struct SourceState {
    latest_event: Millis,
    last_seen: Millis,
}

/// Tracks per-source progress and derives a monotone watermark.
///
/// Contract: call [`observe`](Self::observe) for every delivered event batch (with the ingest
/// clock's `now`), then [`advance`](Self::advance) once per tick; the returned watermark never
/// decreases, whatever order sources report in.
#[derive(Clone, Debug)]
pub struct WatermarkTracker {
    policy: WatermarkPolicy,
    sources: BTreeMap<u32, SourceState>,
    watermark: Millis,
}

impl WatermarkTracker {
    /// A tracker whose watermark starts at `start` (nothing before it is expected).
    pub fn new(policy: WatermarkPolicy, start: Millis) -> Self {
        Self { policy, sources: BTreeMap::new(), watermark: start }
    }

    /// The current watermark.
    pub fn watermark(&self) -> Millis {
        self.watermark
    }

    /// True when an event at `event_time` would be behind the watermark.
    pub fn is_late(&self, event_time: Millis) -> bool {
        event_time < self.watermark
    }

    /// Records that `source` delivered an event of `event_time` at ingest time `now`.
    pub fn observe(&mut self, source: u32, event_time: Millis, now: Millis) {
        let s =
            self.sources.entry(source).or_insert(SourceState { latest_event: event_time, last_seen: now });
        s.latest_event = s.latest_event.max(event_time);
        s.last_seen = s.last_seen.max(now);
    }

    /// Recomputes the watermark at ingest time `now` and returns it.
    ///
    /// With no live source, the watermark follows the ingest clock less the idle timeout, so
    /// windows still close when every camera is silent.
    pub fn advance(&mut self, now: Millis) -> Millis {
        let p = self.policy;
        let live_min = self
            .sources
            .values()
            .filter(|s| now - s.last_seen < p.idle_timeout_ms)
            .map(|s| s.latest_event - p.allowed_lateness_ms)
            .min();
        let candidate = live_min.unwrap_or(now - p.idle_timeout_ms - p.allowed_lateness_ms);
        self.watermark = self.watermark.max(candidate);
        self.watermark
    }

    /// Number of sources currently counted as idle at `now`.
    pub fn idle_sources(&self, now: Millis) -> usize {
        self.sources.values().filter(|s| now - s.last_seen >= self.policy.idle_timeout_ms).count()
    }
}

/// The tumbling window of `size_ms` that contains `t`: `[start, start + size)`.
pub fn tumbling_window(t: Millis, size_ms: Millis) -> (Millis, Millis) {
    let start = t.div_euclid(size_ms) * size_ms;
    (start, start + size_ms)
}

/// Formats milliseconds as a compact UTC stamp for file names: `20260614T200000Z`.
pub fn file_stamp(t: Millis) -> String {
    match chrono::DateTime::from_timestamp_millis(t) {
        Some(dt) => dt.format("%Y%m%dT%H%M%SZ").to_string(),
        None => format!("ms{t}"),
    }
}

/// Formats milliseconds as RFC 3339 UTC with milliseconds, for humans.
pub fn rfc3339(t: Millis) -> String {
    match chrono::DateTime::from_timestamp_millis(t) {
        Some(dt) => dt.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => format!("{t}ms"),
    }
}

/// Parses an RFC 3339 instant (`2026-06-14T20:00:00Z`) into milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<Millis> {
    chrono::DateTime::parse_from_rfc3339(s).ok().map(|dt| dt.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: WatermarkPolicy = WatermarkPolicy { allowed_lateness_ms: 100, idle_timeout_ms: 1_000 };

    #[test]
    fn watermark_is_min_over_live_sources_minus_lateness() {
        let mut w = WatermarkTracker::new(P, 0);
        w.observe(1, 5_000, 5_000);
        w.observe(2, 4_000, 5_000);
        assert_eq!(w.advance(5_000), 3_900);
        assert!(w.is_late(3_899));
        assert!(!w.is_late(3_900));
    }

    #[test]
    fn silent_source_stops_holding_the_watermark() {
        let mut w = WatermarkTracker::new(P, 0);
        w.observe(1, 1_000, 1_000);
        w.observe(2, 1_000, 1_000);
        assert_eq!(w.advance(1_000), 900);
        // Source 2 goes silent; source 1 keeps going.
        for t in (1_100..=3_000).step_by(100) {
            w.observe(1, t, t);
        }
        assert_eq!(w.advance(3_000), 2_900);
        assert_eq!(w.idle_sources(3_000), 1);
    }

    #[test]
    fn all_silent_follows_the_clock_and_never_retreats() {
        let mut w = WatermarkTracker::new(P, 0);
        w.observe(1, 10_000, 10_000);
        assert_eq!(w.advance(10_000), 9_900);
        // Nothing for a long time: the clock drives the watermark.
        assert_eq!(w.advance(20_000), 20_000 - 1_000 - 100);
        // A source reappears with old data: the watermark does not go back.
        w.observe(1, 12_000, 20_001);
        assert_eq!(w.advance(20_001), 18_900);
    }

    proptest::proptest! {
        // Whatever sources report, in whatever order, the watermark never goes back.
        #[test]
        fn watermark_never_retreats(
            steps in proptest::collection::vec((0u32..4, -5_000i64..60_000, 0i64..60_000), 1..200)
        ) {
            let mut w = WatermarkTracker::new(P, 0);
            let mut last = w.watermark();
            for (source, event, now) in steps {
                w.observe(source, event, now);
                let next = w.advance(now);
                proptest::prop_assert!(next >= last, "{next} < {last}");
                last = next;
            }
        }
    }

    #[test]
    fn windows_and_stamps() {
        assert_eq!(tumbling_window(10_001, 10_000), (10_000, 20_000));
        assert_eq!(tumbling_window(-1, 10_000), (-10_000, 0));
        assert_eq!(file_stamp(0), "19700101T000000Z");
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01Z"), Some(1_000));
        assert_eq!(rfc3339(1_500), "1970-01-01T00:00:01.500Z");
    }
}

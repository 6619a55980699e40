//! Flows: tracks crossing gate lines (`line_crossings`) and tracks' stays in zones
//! (`zone_visits`, with the dwell time).
//!
//! The operator reads `tracks` rows, which carry each track's foot point on the ground and its
//! zone. Per live track it keeps, for each gate line, the side the track was last *clearly* on
//! (at least [`FlowConfig::margin_m`] from the line, so a person standing on the line does not
//! count in and out and in again, and for [`FlowConfig::confirm`] observations in a row), and the zone it is in since when. A crossing is a change of
//! clear side whose crossing point lies on the line segment; its direction is `in` when the
//! track moved to the line's `in_side`. A visit ends when the track's zone changes or the track
//! has not been seen for `expire_ms`; then its row is emitted with the dwell time.
//!
//! Tracks live on the worker of their camera (the tracking operator runs there), so the
//! operator needs no exchange, and its state is bounded by the live tracks.
//!
//! Flow rates (persons per minute per metre of width, against the Green Guide's 82) are a SQL
//! rule over `line_crossings` (`sql/rules/gate_flow_over_capacity.sql`), so each site can set its
//! own window and threshold.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use vigil_engine::error::ErrorSink;
use vigil_engine::ids::Epoch;
use vigil_engine::stream::{Batch, Events, Str, Timestamp};
use vigil_engine::time::Millis;
use vigil_engine::waiting::Waiting;

use crate::tracks::{TrackCols, Tracks};
use crate::zones::Zone;

vigil_engine::stream! {
    /// A track crossing a gate line. Its `event_id` hashes the run's epoch, the track row's id
    /// and the line ([`Epoch::hash_id`]).
    pub struct LineCrossings {
        name: "line_crossings",
        class: Personal,
        keys: [camera_id, event_time, event_id],
        personal: [track_id, ground_x, ground_y],
        row: Crossing,
        builder: CrossingRows,
        reader: CrossingCols,
        columns: {
            /// The line's camera.
            camera_id: u32,
            /// When the track was first clear of the line on its new side.
            event_time: Timestamp,
            /// See the stream's documentation.
            event_id: u64,
            /// The line.
            line_id: u32,
            /// Its name.
            line: Str,
            /// The track.
            track_id: u64,
            /// The track's class.
            class: Str,
            /// `in` or `out`, as the line's configuration defines them.
            direction: Str,
            /// The line's width, metres.
            width_m: f64,
            /// Where the track was, metres.
            ground_x: f32,
            /// Where the track was, metres.
            ground_y: f32,
        }
    }
}

vigil_engine::stream! {
    /// A track's stay in a zone, written when it leaves (or is lost for 5 s). Its `event_id`
    /// hashes the run's epoch, the track, the zone and the time it entered.
    pub struct ZoneVisits {
        name: "zone_visits",
        class: Personal,
        keys: [camera_id, event_time, event_id],
        personal: [track_id],
        row: Visit,
        builder: VisitRows,
        reader: VisitCols,
        columns: {
            /// The track's camera.
            camera_id: u32,
            /// When the visit ended.
            event_time: Timestamp,
            /// See the stream's documentation.
            event_id: u64,
            /// The zone.
            zone_id: u32,
            /// Its name.
            zone: Str,
            /// The track.
            track_id: u64,
            /// The track's class.
            class: Str,
            /// When it entered.
            entered_at: Timestamp,
            /// When it was last seen in the zone.
            left_at: Timestamp,
            /// `left_at - entered_at`, seconds.
            dwell_s: f64,
        }
    }
}

/// A gate line on the ground.
#[derive(Clone, Debug, PartialEq)]
pub struct GateLine {
    /// Stable id (`line_id`).
    pub id: u32,
    /// Name (`line`).
    pub name: String,
    /// The camera whose tracks are counted. Cameras that overlap see the same people; counting
    /// one camera's tracks per line counts each person once.
    pub camera: u32,
    /// One end, metres.
    pub from: [f64; 2],
    /// The other end, metres.
    pub to: [f64; 2],
    /// A point on the side tracks enter.
    pub in_side: [f64; 2],
}

impl GateLine {
    /// Width of the gate, metres.
    pub fn width(&self) -> f64 {
        (self.to[0] - self.from[0]).hypot(self.to[1] - self.from[1])
    }

    /// Signed distance of `p` from the line (positive on the left of from → to), and where
    /// along the segment its foot lies (0 at `from`, width at `to`).
    fn place(&self, p: [f64; 2]) -> (f64, f64) {
        let (dx, dy) = (self.to[0] - self.from[0], self.to[1] - self.from[1]);
        let len = self.width();
        let (px, py) = (p[0] - self.from[0], p[1] - self.from[1]);
        ((dx * py - dy * px) / len, (dx * px + dy * py) / len)
    }

    fn in_sign(&self) -> f64 {
        self.place(self.in_side).0.signum()
    }
}

/// Flow operator settings.
#[derive(Clone, Debug)]
pub struct FlowConfig {
    /// Gate lines.
    pub lines: Vec<GateLine>,
    /// Zones (for names in `zone_visits`).
    pub zones: Vec<Zone>,
    /// A track is clearly on one side at least this far from a line, metres (0.25). With
    /// `confirm`, chosen on the tuning split of `scripts/flow_eval.py` (real and generated
    /// pedestrians under three detector models; margins 0.1 to 0.8, confirmation 1 to 5; see
    /// `benches/README.md`).
    pub margin_m: f64,
    /// Consecutive clear observations on the other side of a line before a crossing counts
    /// (2): a box whose bottom edge jumps across the line for one frame, as a noisy detector's
    /// does for someone walking along it, is not a crossing. Observations within the margin
    /// neither count nor reset (supervision's `minimum_crossing_threshold` works the same way).
    pub confirm: u32,
    /// A track not seen for this long has left, ms (5 s).
    pub expire_ms: Millis,
    /// The run's epoch, in row ids.
    pub epoch: Epoch,
}

impl FlowConfig {
    /// Default margins for `lines` and `zones`.
    pub fn new(lines: Vec<GateLine>, zones: Vec<Zone>) -> Self {
        Self { lines, zones, margin_m: 0.25, confirm: 2, expire_ms: 5_000, epoch: Epoch::default() }
    }
}

/// One track's state.
#[derive(Clone, Debug)]
struct TrackState {
    camera: u32,
    class: Arc<str>,
    last_seen: Millis,
    /// Clear side of each line: -1, +1, or 0 (not yet known).
    sides: Vec<i8>,
    /// Consecutive clear observations on the other side of each line, not yet a crossing.
    pending: Vec<u32>,
    /// (zone, entered at, last seen in it).
    zone: Option<(u32, Millis, Millis)>,
}

/// The operator's logic, independent of timely.
pub struct Flows {
    config: FlowConfig,
    /// Cameras with a line or a zone: other cameras' tracks are skipped at once.
    cameras: std::collections::HashSet<u32>,
    zones: HashMap<u32, Zone>,
    tracks: HashMap<u64, TrackState>,
    classes: Vec<Arc<str>>,
}

/// Rows produced by [`Flows`].
#[derive(Default)]
pub struct FlowRows {
    crossings: CrossingRows,
    visits: VisitRows,
    earliest: Option<Millis>,
}

impl FlowRows {
    /// The non-empty batches: crossings, visits.
    pub fn finish(mut self) -> (Option<RecordBatch>, Option<RecordBatch>) {
        (
            (!self.crossings.is_empty()).then(|| self.crossings.finish()),
            (!self.visits.is_empty()).then(|| self.visits.finish()),
        )
    }

    fn saw(&mut self, t: Millis) {
        self.earliest = Some(self.earliest.map_or(t, |e| e.min(t)));
    }

    /// A visit of track `track` (of `camera`) to zone `zone_id` from `entered` to `left`.
    #[allow(clippy::too_many_arguments)]
    fn visit(
        &mut self,
        epoch: Epoch,
        camera: u32,
        track: u64,
        class: &str,
        zone: Option<&Zone>,
        zone_id: u32,
        entered: Millis,
        left: Millis,
    ) {
        self.saw(left);
        let event_id = epoch.hash_id(&[&track.to_le_bytes(), &zone_id.to_le_bytes(), &entered.to_le_bytes()]);
        self.visits.push(&Visit {
            camera_id: camera,
            event_time: left,
            event_id,
            zone_id,
            zone: zone.map_or("", |z| z.name.as_str()),
            track_id: track,
            class,
            entered_at: entered,
            left_at: left,
            dwell_s: (left - entered) as f64 / 1000.0,
        });
    }
}

impl Flows {
    /// A flow operator with no tracks.
    pub fn new(config: FlowConfig) -> Self {
        let zones = config.zones.iter().map(|z| (z.id, z.clone())).collect();
        let cameras = config
            .lines
            .iter()
            .map(|l| l.camera)
            .chain(config.zones.iter().flat_map(|z| z.cameras.iter().copied()))
            .collect();
        Self { config, cameras, zones, tracks: HashMap::new(), classes: Vec::new() }
    }

    /// Live tracks held.
    pub fn live(&self) -> usize {
        self.tracks.len()
    }

    /// Applies a `tracks` batch (rows in event-time order per track).
    pub fn apply(&mut self, batch: &RecordBatch, out: &mut FlowRows) -> vigil_engine::Result<()> {
        let cols = TrackCols::new(batch)?;
        let lines = self.config.lines.len();
        let epoch = self.config.epoch;
        for r in cols.rows() {
            // A lost track's box is a prediction: it neither crosses lines nor stays in zones.
            if !self.cameras.contains(&r.camera_id) || r.state != "tracked" {
                continue;
            }
            let p = [f64::from(r.ground_x), f64::from(r.ground_y)];
            if !(p[0].is_finite() && p[1].is_finite()) {
                continue;
            }
            let (id, t) = (r.track_id, r.event_time);
            let st = self.tracks.entry(id).or_insert_with(|| {
                let class = match self.classes.iter().find(|c| ***c == *r.class) {
                    Some(c) => Arc::clone(c),
                    None => {
                        self.classes.push(Arc::from(r.class));
                        Arc::clone(self.classes.last().expect("just pushed"))
                    }
                };
                TrackState {
                    camera: r.camera_id,
                    class,
                    last_seen: t,
                    sides: vec![0; lines],
                    pending: vec![0; lines],
                    zone: None,
                }
            });
            st.last_seen = t;
            for (l, line) in self.config.lines.iter().enumerate() {
                if line.camera != st.camera {
                    continue;
                }
                let (dist, along) = line.place(p);
                if dist.abs() < self.config.margin_m {
                    continue;
                }
                let side = if dist > 0.0 { 1 } else { -1 };
                let before = st.sides[l];
                if before != 0 && before != side {
                    st.pending[l] += 1;
                    if st.pending[l] < self.config.confirm {
                        continue;
                    }
                }
                st.pending[l] = 0;
                st.sides[l] = side;
                let m = self.config.margin_m;
                if before != 0 && before != side && (-m..=line.width() + m).contains(&along) {
                    let direction = if f64::from(side) == line.in_sign() { "in" } else { "out" };
                    out.saw(t);
                    out.crossings.push(&Crossing {
                        camera_id: st.camera,
                        event_time: t,
                        event_id: epoch.hash_id(&[&r.event_id.to_le_bytes(), &line.id.to_le_bytes()]),
                        line_id: line.id,
                        line: &line.name,
                        track_id: id,
                        class: &st.class,
                        direction,
                        width_m: line.width(),
                        ground_x: p[0] as f32,
                        ground_y: p[1] as f32,
                    });
                }
            }
            match (st.zone, r.zone_id) {
                (Some((z, entered, _)), Some(n)) if z == n => st.zone = Some((z, entered, t)),
                (old, now) => {
                    if let Some((z, entered, last)) = old {
                        out.visit(epoch, st.camera, id, &st.class, self.zones.get(&z), z, entered, last);
                    }
                    st.zone = now.map(|n| (n, t, t));
                }
            }
        }
        Ok(())
    }

    /// Ends the visits of tracks not seen since `frontier - expire_ms` and forgets them; with
    /// no frontier (the input has ended), ends them all.
    pub fn expire(&mut self, frontier: Option<Millis>, out: &mut FlowRows) {
        let cutoff = frontier.map(|f| f - self.config.expire_ms);
        let (zones, epoch) = (&self.zones, self.config.epoch);
        self.tracks.retain(|&id, st| {
            if cutoff.is_some_and(|c| st.last_seen >= c) {
                return true;
            }
            if let Some((z, entered, last)) = st.zone {
                out.visit(epoch, st.camera, id, &st.class, zones.get(&z), z, entered, last);
            }
            false
        });
    }
}

/// The streams the flow operator derives.
pub struct FlowStreams<'scope> {
    /// `line_crossings`.
    pub crossings: Events<'scope, LineCrossings>,
    /// `zone_visits`.
    pub visits: Events<'scope, ZoneVisits>,
}

/// Extension trait: the flow operator.
pub trait TrackFlows<'scope> {
    /// Gate-line crossings and zone visits of these tracks. Batches that cannot be read go to
    /// `errors`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use vigil_engine::error::ErrorSink;
    /// use vigil_engine::graph::Graph;
    /// use vigil_engine::stream::StreamDef;
    /// use vigil_operators::flows::{FlowConfig, LineCrossings, TrackFlows};
    /// use vigil_operators::tracks::Tracks;
    ///
    /// timely::example(|scope| {
    ///     let input = timely::dataflow::operators::generic::operator::empty(scope);
    ///     let mut graph = Graph::split(scope, 0, input, &[Tracks::info()]);
    ///     let flows = graph.get::<Tracks>().unwrap().track_flows(FlowConfig::new(vec![], vec![]), &ErrorSink::log());
    ///     assert_eq!(flows.crossings.info().name, LineCrossings::NAME);
    /// });
    /// ```
    fn track_flows(self, config: FlowConfig, errors: &ErrorSink) -> FlowStreams<'scope>;
}

impl<'scope> TrackFlows<'scope> for Events<'scope, Tracks> {
    fn track_flows(self, config: FlowConfig, errors: &ErrorSink) -> FlowStreams<'scope> {
        let errors = errors.clone();
        let tagged = self
            .into_inner()
            .unary_frontier::<timely::container::CapacityContainerBuilder<Vec<(u64, Batch)>>, _, _, _>(
                Pipeline,
                "Flows",
                move |_cap, _info| {
                    let mut flows = Flows::new(config);
                    // Rows are applied as they come (tracks arrive in time order); only the
                    // capability waits, for visits that end by expiry.
                    let mut waiting: Waiting<()> = Waiting::default();
                    move |(input, frontier), output| {
                        let mut rows = FlowRows::default();
                        input.for_each(|cap, data| {
                            let Some(cap) = cap.retain_least(0) else { return };
                            for b in data.iter() {
                                if let Err(e) = flows.apply(&b.rows, &mut rows) {
                                    errors.report("Flows", e);
                                }
                            }
                            waiting.hold(cap);
                        });
                        let f = frontier.frontier().iter().min().copied();
                        flows.expire(f.map(|f| f as Millis), &mut rows);
                        if let Some(cap) = waiting.cap()
                            && rows.earliest.is_some()
                        {
                            let mut session = output.session(cap);
                            let (c, v) = rows.finish();
                            for (part, b) in [(0, c), (1, v)] {
                                if let Some(b) = b {
                                    session.give((part, Batch::new(b)));
                                }
                            }
                        }
                        // Visits still open may end (expire) at any time from the frontier on.
                        waiting.release(f, flows.live() > 0);
                    }
                },
            );
        let mut parts = vigil_engine::stream::untag(tagged, 2).into_iter();
        let mut next = || parts.next().expect("two parts");
        FlowStreams { crossings: Events::new(next()), visits: Events::new(next()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> GateLine {
        GateLine {
            id: 1,
            name: "gate".into(),
            camera: 0,
            from: [0.0, 0.0],
            to: [4.0, 0.0],
            in_side: [2.0, 1.0],
        }
    }

    /// A tracks batch: one track per (id, t, x, y, zone), all tracked.
    fn tracks(rows: &[(u64, Millis, f32, f32, Option<u32>)]) -> RecordBatch {
        let mut b = crate::tracks::TrackRows::default();
        for (i, r) in rows.iter().enumerate() {
            b.push(&crate::tracks::TrackRow {
                camera_id: 0,
                event_time: r.1,
                event_id: i as u64,
                track_id: r.0,
                class: "person",
                x: 0.0,
                y: 0.0,
                w: 1.0,
                h: 1.0,
                vx: 0.0,
                vy: 0.0,
                state: "tracked",
                ground_x: r.2,
                ground_y: r.3,
                zone_id: r.4,
            });
        }
        b.finish()
    }

    fn crossings(out: FlowRows) -> Vec<(u64, String)> {
        out.finish()
            .0
            .iter()
            .flat_map(|b| {
                CrossingCols::new(b)
                    .unwrap()
                    .rows()
                    .map(|r| (r.track_id, r.direction.to_owned()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn crossings_have_directions_and_jitter_on_the_line_does_not_count() {
        let mut f = Flows::new(FlowConfig::new(vec![line()], vec![]));
        let mut out = FlowRows::default();
        // Track 1 walks from y = -2 to y = 2 (towards in_side): in. Track 2 walks back: out.
        // Track 3 stands on the line, wobbling by 10 cm: nothing. Track 4 passes beside the
        // segment (x = 7): nothing.
        let mut rows = Vec::new();
        for k in 0..=20 {
            let y = -2.0 + k as f32 * 0.2;
            let t = k * 100;
            rows.push((1, t, 2.0, y, None));
            rows.push((2, t, 1.0, -y, None));
            rows.push((3, t, 3.0, if k % 2 == 0 { 0.1 } else { -0.1 }, None));
            rows.push((4, t, 7.0, y, None));
        }
        f.apply(&tracks(&rows), &mut out).unwrap();
        let mut c = crossings(out);
        c.sort();
        assert_eq!(c, vec![(1, "in".to_owned()), (2, "out".to_owned())]);
    }

    #[test]
    fn a_one_frame_jump_across_the_line_is_not_a_crossing() {
        // Track 5 walks along the line 0.5 m on its out side; one frame its foot point jumps
        // 0.5 m across (a noisy box), then comes back. Track 6 crosses and stays.
        let run = |confirm: u32| {
            let mut f = Flows::new(FlowConfig { confirm, ..FlowConfig::new(vec![line()], vec![]) });
            let mut out = FlowRows::default();
            let mut rows = Vec::new();
            for k in 0..=20 {
                let t = k * 100;
                rows.push((5, t, 0.2 * k as f32 / 2.0, if k == 10 { 0.5 } else { -0.5 }, None));
                rows.push((6, t, 3.0, -2.0 + k as f32 * 0.2, None));
            }
            f.apply(&tracks(&rows), &mut out).unwrap();
            let mut c = crossings(out);
            c.sort();
            c
        };
        assert_eq!(run(FlowConfig::new(vec![], vec![]).confirm), vec![(6, "in".to_owned())]);
        assert_eq!(run(1), vec![(5, "in".to_owned()), (5, "out".to_owned()), (6, "in".to_owned())]);
    }

    #[test]
    fn visits_end_on_leaving_and_on_expiry() {
        let zone = |id: u32| Zone {
            id,
            name: format!("z{id}"),
            cameras: vec![0],
            polygon: vec![[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]],
            alert_density: 1.0,
            clear_density: 0.8,
        };
        let mut f = Flows::new(FlowConfig::new(vec![], vec![zone(7), zone(8)]));
        let mut out = FlowRows::default();
        // Track 1: zone 7 from 0 to 3 s, then zone 8 from 3.1 s until it vanishes at 5 s.
        let rows: Vec<_> =
            (0..=50).map(|k| (1, k * 100, 0.0, 0.0, Some(if k <= 30 { 7 } else { 8 }))).collect();
        f.apply(&tracks(&rows), &mut out).unwrap();
        f.expire(Some(8_000), &mut out);
        assert_eq!(f.live(), 1, "seen 3 s ago: not expired yet");
        f.expire(Some(10_001), &mut out);
        assert_eq!(f.live(), 0);
        let visits: Vec<(u32, f64)> = out
            .finish()
            .1
            .iter()
            .flat_map(|b| {
                VisitCols::new(b).unwrap().rows().map(|r| (r.zone_id, r.dwell_s)).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(visits, vec![(7, 3.0), (8, 1.9)]);
    }
}

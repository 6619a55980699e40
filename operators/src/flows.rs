//! Flows: tracks crossing gate lines (`line_crossings`) and tracks' stays in zones
//! (`zone_visits`, with the dwell time).
//!
//! The operator reads `tracks` rows, which carry each track's foot point on the ground and its
//! zone. Per live track it keeps, for each gate line, the side the track was last *clearly* on
//! (at least [`FlowConfig::margin_m`] from the line, so a person standing on the line does not
//! count in and out and in again), and the zone it is in since when. A crossing is a change of
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

use arrow::array::{
    Array, ArrayRef, Float32Array, Float32Builder, Float64Builder, RecordBatch, StringArray, StringBuilder,
    TimestampMillisecondBuilder, UInt32Array, UInt32Builder, UInt64Array, UInt64Builder,
};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use vigil_engine::runtime::{BatchKind, EventBatch, Time};
use vigil_engine::schema::{KeyColumns, StreamKind, event_times};
use vigil_engine::time::Millis;
use vigil_engine::waiting::Waiting;

use crate::zones::Zone;

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
    /// A track is clearly on one side at least this far from a line, metres (0.25).
    pub margin_m: f64,
    /// A track not seen for this long has left, ms (5 s).
    pub expire_ms: Millis,
}

impl FlowConfig {
    /// Default margins for `lines` and `zones`.
    pub fn new(lines: Vec<GateLine>, zones: Vec<Zone>) -> Self {
        Self { lines, zones, margin_m: 0.25, expire_ms: 5_000 }
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
    /// The non-empty batches, by stream.
    pub fn finish(mut self) -> Vec<(StreamKind, RecordBatch)> {
        let mut out = Vec::new();
        if self.crossings.len() > 0 {
            out.push((StreamKind::LineCrossings, self.crossings.finish()));
        }
        if self.visits.len() > 0 {
            out.push((StreamKind::ZoneVisits, self.visits.finish()));
        }
        out
    }

    fn saw(&mut self, t: Millis) {
        self.earliest = Some(self.earliest.map_or(t, |e| e.min(t)));
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
    pub fn apply(&mut self, batch: &RecordBatch, out: &mut FlowRows) {
        let col = |name: &str| batch.column_by_name(name);
        let (
            Ok(times),
            Some(cam),
            Some(ids),
            Some(track),
            Some(class),
            Some(state),
            Some(gx),
            Some(gy),
            Some(zone),
        ) = (
            event_times(batch),
            col("camera_id").and_then(|c| c.as_any().downcast_ref::<UInt32Array>()),
            col("event_id").and_then(|c| c.as_any().downcast_ref::<UInt64Array>()),
            col("track_id").and_then(|c| c.as_any().downcast_ref::<UInt64Array>()),
            col("class").and_then(|c| c.as_any().downcast_ref::<StringArray>()),
            col("state").and_then(|c| c.as_any().downcast_ref::<StringArray>()),
            col("ground_x").and_then(|c| c.as_any().downcast_ref::<Float32Array>()),
            col("ground_y").and_then(|c| c.as_any().downcast_ref::<Float32Array>()),
            col("zone_id").and_then(|c| c.as_any().downcast_ref::<UInt32Array>()),
        )
        else {
            return;
        };
        let lines = self.config.lines.len();
        for (i, &t) in times.iter().enumerate() {
            // A lost track's box is a prediction: it neither crosses lines nor stays in zones.
            if !self.cameras.contains(&cam.value(i)) || state.value(i) != "tracked" {
                continue;
            }
            let p = [f64::from(gx.value(i)), f64::from(gy.value(i))];
            if !(p[0].is_finite() && p[1].is_finite()) {
                continue;
            }
            let id = track.value(i);
            let name = class.value(i);
            let st = self.tracks.entry(id).or_insert_with(|| {
                let class = match self.classes.iter().find(|c| &***c == name) {
                    Some(c) => Arc::clone(c),
                    None => {
                        self.classes.push(Arc::from(name));
                        Arc::clone(self.classes.last().expect("just pushed"))
                    }
                };
                TrackState { camera: cam.value(i), class, last_seen: t, sides: vec![0; lines], zone: None }
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
                st.sides[l] = side;
                let m = self.config.margin_m;
                if before != 0 && before != side && (-m..=line.width() + m).contains(&along) {
                    let direction = if f64::from(side) == line.in_sign() { "in" } else { "out" };
                    out.saw(t);
                    out.crossings.push(st.camera, t, ids.value(i), line, id, &st.class, direction, p);
                }
            }
            let now = (!zone.is_null(i)).then(|| zone.value(i));
            match (st.zone, now) {
                (Some((z, entered, _)), Some(n)) if z == n => st.zone = Some((z, entered, t)),
                (old, now) => {
                    if let Some((z, entered, last)) = old {
                        out.saw(last);
                        out.visits.push(st.camera, id, &st.class, self.zones.get(&z), z, entered, last);
                    }
                    st.zone = now.map(|n| (n, t, t));
                }
            }
        }
    }

    /// Ends the visits of tracks not seen since `frontier - expire_ms` and forgets them; with
    /// no frontier (the input has ended), ends them all.
    pub fn expire(&mut self, frontier: Option<Millis>, out: &mut FlowRows) {
        let cutoff = frontier.map(|f| f - self.config.expire_ms);
        let zones = &self.zones;
        self.tracks.retain(|&id, st| {
            if cutoff.is_some_and(|c| st.last_seen >= c) {
                return true;
            }
            if let Some((z, entered, last)) = st.zone {
                out.saw(last);
                out.visits.push(st.camera, id, &st.class, zones.get(&z), z, entered, last);
            }
            false
        });
    }
}

/// Extension trait: the flow operator.
pub trait TrackFlows<'scope> {
    /// Emits `line_crossings` and `zone_visits` batches for the `tracks` batches of `self`.
    fn track_flows(self, config: FlowConfig) -> Stream<'scope, Time, Vec<EventBatch>>;
}

impl<'scope> TrackFlows<'scope> for Stream<'scope, Time, Vec<EventBatch>> {
    fn track_flows(self, config: FlowConfig) -> Stream<'scope, Time, Vec<EventBatch>> {
        self.unary_frontier::<timely::container::CapacityContainerBuilder<Vec<EventBatch>>, _, _, _>(
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
                        for b in data.iter().filter(|b| b.stream() == Some(StreamKind::Tracks)) {
                            flows.apply(&b.data, &mut rows);
                        }
                        waiting.hold(cap);
                    });
                    let f = frontier.frontier().iter().min().copied();
                    flows.expire(f.map(|f| f as Millis), &mut rows);
                    if let Some(cap) = waiting.cap()
                        && rows.earliest.is_some()
                    {
                        let mut session = output.session(cap);
                        for (kind, data) in rows.finish() {
                            session.give(EventBatch { kind: BatchKind::Events(kind), data });
                        }
                    }
                    // Visits still open may end (expire) at any time from the frontier on.
                    waiting.release(f, flows.live() > 0);
                }
            },
        )
    }
}

fn utc(b: &mut TimestampMillisecondBuilder) -> ArrayRef {
    Arc::new(b.finish().with_timezone("UTC"))
}

#[derive(Default)]
struct CrossingRows {
    keys: KeyColumns,
    line_id: UInt32Builder,
    line: StringBuilder,
    track_id: UInt64Builder,
    class: StringBuilder,
    direction: StringBuilder,
    width: Float64Builder,
    ground: [Float32Builder; 2],
}

impl CrossingRows {
    fn len(&self) -> usize {
        self.keys.len()
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        camera: u32,
        t: Millis,
        event_id: u64,
        line: &GateLine,
        track: u64,
        class: &str,
        direction: &str,
        p: [f64; 2],
    ) {
        self.keys.push(camera, t, event_id);
        self.line_id.append_value(line.id);
        self.line.append_value(&line.name);
        self.track_id.append_value(track);
        self.class.append_value(class);
        self.direction.append_value(direction);
        self.width.append_value(line.width());
        for (b, v) in self.ground.iter_mut().zip(p) {
            b.append_value(v as f32);
        }
    }

    fn finish(&mut self) -> RecordBatch {
        let mut columns = self.keys.finish();
        columns.extend([
            Arc::new(self.line_id.finish()) as ArrayRef,
            Arc::new(self.line.finish()),
            Arc::new(self.track_id.finish()),
            Arc::new(self.class.finish()),
            Arc::new(self.direction.finish()),
            Arc::new(self.width.finish()),
        ]);
        columns.extend(self.ground.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        RecordBatch::try_new(StreamKind::LineCrossings.schema(), columns)
            .expect("CrossingRows columns match the line_crossings schema")
    }
}

#[derive(Default)]
struct VisitRows {
    keys: KeyColumns,
    zone_id: UInt32Builder,
    zone: StringBuilder,
    track_id: UInt64Builder,
    class: StringBuilder,
    entered: TimestampMillisecondBuilder,
    left: TimestampMillisecondBuilder,
    dwell: Float64Builder,
}

impl VisitRows {
    fn len(&self) -> usize {
        self.keys.len()
    }

    /// A visit's event time is when it ended; its event id packs (track, entry time): a track
    /// enters a zone at most once per millisecond.
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        camera: u32,
        track: u64,
        class: &str,
        zone: Option<&Zone>,
        zone_id: u32,
        entered: Millis,
        left: Millis,
    ) {
        self.keys.push(camera, left, track.rotate_left(24) ^ entered as u64);
        self.zone_id.append_value(zone_id);
        self.zone.append_value(zone.map_or("", |z| z.name.as_str()));
        self.track_id.append_value(track);
        self.class.append_value(class);
        self.entered.append_value(entered);
        self.left.append_value(left);
        self.dwell.append_value((left - entered) as f64 / 1000.0);
    }

    fn finish(&mut self) -> RecordBatch {
        let mut columns = self.keys.finish();
        columns.extend([
            Arc::new(self.zone_id.finish()) as ArrayRef,
            Arc::new(self.zone.finish()),
            Arc::new(self.track_id.finish()),
            Arc::new(self.class.finish()),
            utc(&mut self.entered),
            utc(&mut self.left),
            Arc::new(self.dwell.finish()),
        ]);
        RecordBatch::try_new(StreamKind::ZoneVisits.schema(), columns)
            .expect("VisitRows columns match the zone_visits schema")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;

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
        use arrow::array::{Float32Array, StringArray, TimestampMillisecondArray, UInt32Array, UInt64Array};
        let n = rows.len();
        let f = |v: Vec<f32>| Arc::new(Float32Array::from(v)) as ArrayRef;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from(vec![0; n])),
            Arc::new(
                TimestampMillisecondArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
            Arc::new(UInt64Array::from((0..n as u64).collect::<Vec<_>>())),
            Arc::new(UInt64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
            Arc::new(StringArray::from(vec!["person"; n])),
            f(vec![0.0; n]),
            f(vec![0.0; n]),
            f(vec![1.0; n]),
            f(vec![1.0; n]),
            f(vec![0.0; n]),
            f(vec![0.0; n]),
            Arc::new(StringArray::from(vec!["tracked"; n])),
            f(rows.iter().map(|r| r.2).collect()),
            f(rows.iter().map(|r| r.3).collect()),
            Arc::new(UInt32Array::from(rows.iter().map(|r| r.4).collect::<Vec<_>>())),
        ];
        RecordBatch::try_new(StreamKind::Tracks.schema(), columns).unwrap()
    }

    fn crossings(out: Vec<(StreamKind, RecordBatch)>) -> Vec<(u64, String)> {
        out.iter()
            .filter(|(k, _)| *k == StreamKind::LineCrossings)
            .flat_map(|(_, b)| {
                let t = b.column_by_name("track_id").unwrap().as_primitive::<arrow::datatypes::UInt64Type>();
                let d = b.column_by_name("direction").unwrap().as_string::<i32>();
                (0..b.num_rows()).map(|i| (t.value(i), d.value(i).to_owned())).collect::<Vec<_>>()
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
        f.apply(&tracks(&rows), &mut out);
        let mut c = crossings(out.finish());
        c.sort();
        assert_eq!(c, vec![(1, "in".to_owned()), (2, "out".to_owned())]);
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
        f.apply(&tracks(&rows), &mut out);
        f.expire(Some(8_000), &mut out);
        assert_eq!(f.live(), 1, "seen 3 s ago: not expired yet");
        f.expire(Some(10_001), &mut out);
        assert_eq!(f.live(), 0);
        let visits: Vec<(u32, f64)> = out
            .finish()
            .iter()
            .filter(|(k, _)| *k == StreamKind::ZoneVisits)
            .flat_map(|(_, b)| {
                let z = b.column_by_name("zone_id").unwrap().as_primitive::<arrow::datatypes::UInt32Type>();
                let d = b.column_by_name("dwell_s").unwrap().as_primitive::<arrow::datatypes::Float64Type>();
                (0..b.num_rows()).map(|i| (z.value(i), d.value(i))).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(visits, vec![(7, 3.0), (8, 1.9)]);
    }
}

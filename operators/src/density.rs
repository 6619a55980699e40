//! Crowd density per zone: people fused across the cameras that see the zone, persons per m²
//! over a sliding window, the Fruin level of service, alerts with hysteresis, and a 1 m grid.
//!
//! A zone may be seen by several cameras whose views overlap; counting each camera's people and
//! adding them up would count a person once per camera. So the operator works on the ground:
//!
//! 1. Every `person` detection inside a zone becomes a [`Point`] (zone, camera, time, ground
//!    position), and points are exchanged by zone, so one worker owns each zone.
//! 2. Once the watermark has passed them, points are applied in event-time order. Every
//!    `sample_ms` (200 ms) the zone takes a *snapshot*: each camera's latest frame, if it is
//!    younger than `stale_ms`. The snapshot's cameras are [`fuse`]d: a person seen by two cameras
//!    appears as two points a few decimetres apart, so points of different cameras within
//!    `fusion_radius_m` are matched one to one (closest pairs first) and count once.
//! 3. Every `step_ms` (1 s) the zone emits a `zone_density` row for the window
//!    `[end - window, end)`: the mean fused count over the window's snapshots, per m² of the
//!    zone, with its Fruin level, the cameras that contributed, and the count before fusion.
//! 4. Alerts have hysteresis: raised when the density has stayed at or above `alert_density` for
//!    `hold_ms`, cleared when it has stayed below `clear_density` (lower) for `hold_ms`. A
//!    density that wobbles around the threshold raises one alert, not one per window.
//! 5. Every `window` the zone emits its `density_grid`: persons per 1 m cell (whole metres of the
//!    city frame), averaged over the window's snapshots: the heatmap of the dashboard.
//!
//! State is bounded: per zone, the latest frame of each camera and one window of snapshot
//! counts. A zone with nobody in it for a whole window (and no alert raised) is forgotten, and
//! costs nothing until someone enters it again.
//!
//! Written as a timely operator rather than with differential's `count` (the first version):
//! fusion needs the positions of one snapshot together, which is a spatial join per sample and
//! not an aggregate of independent updates.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use vigil_engine::error::ErrorSink;
use vigil_engine::ids::Epoch;
use vigil_engine::stream::{Batch, Events, Str, Timestamp};
use vigil_engine::time::Millis;
use vigil_engine::waiting::Waiting;

use crate::alerts::{Alert, AlertRows, Alerts};
use crate::detection::{DetectionCols, Detections};
use crate::zones::Zone;

vigil_engine::stream! {
    /// Persons in a zone over a sliding window, fused across the zone's cameras; one row per
    /// zone and step (1 s). Its `event_time` is the window's last millisecond; its `event_id`
    /// packs the run's epoch, the zone (14 bits) and the step number (38 bits).
    pub struct ZoneDensity {
        name: "zone_density",
        class: Aggregate,
        keys: [zone_id, window_end],
        personal: [],
        row: ZoneDensityRow,
        builder: ZoneDensityRows,
        reader: ZoneDensityCols,
        columns: {
            /// The zone's first camera.
            camera_id: u32,
            /// The window's last millisecond.
            event_time: Timestamp,
            /// See the stream's documentation.
            event_id: u64,
            /// The zone.
            zone_id: u32,
            /// Its name.
            zone: Str,
            /// Window start.
            window_start: Timestamp,
            /// Window end (exclusive).
            window_end: Timestamp,
            /// People in the zone (mean over the window's snapshots), after fusing the cameras.
            persons: f64,
            /// Persons per m².
            density: f64,
            /// Fruin level of service (walkways), `A` to `F`.
            level: Str,
            /// Cameras that contributed.
            cameras: u32,
            /// The people the cameras reported before fusion.
            raw_persons: f64,
        }
    }
}

vigil_engine::stream! {
    /// Persons per 1 m ground cell of a zone over a window (the heatmap); one row per zone,
    /// occupied cell and window. Its `event_id` packs the run's epoch, the zone (10 bits), the
    /// window number (25 bits, wrapping after 388 days or more) and the cell within the zone's
    /// bounding box (17 bits: zones up to 131,072 m²).
    pub struct DensityGrid {
        name: "density_grid",
        class: Aggregate,
        keys: [zone_id, window_end, cell_x, cell_y],
        personal: [],
        row: GridRow,
        builder: GridRows,
        reader: GridCols,
        columns: {
            /// The zone's first camera.
            camera_id: u32,
            /// The window's last millisecond.
            event_time: Timestamp,
            /// See the stream's documentation.
            event_id: u64,
            /// The zone.
            zone_id: u32,
            /// Its name.
            zone: Str,
            /// Window start.
            window_start: Timestamp,
            /// Window end (exclusive).
            window_end: Timestamp,
            /// The cell's south-west corner, whole metres in the city frame.
            cell_x: i32,
            /// The cell's south-west corner, metres.
            cell_y: i32,
            /// Mean persons in the 1 m² cell over the window: persons per m².
            density: f64,
        }
    }
}

/// Bits of a grid id's zone, window and cell (see [`DensityGrid`]).
const GRID_ZONE_BITS: u32 = 10;
const GRID_WINDOW_BITS: u32 = 25;
const GRID_CELL_BITS: u32 = 17;
/// The largest zone bounding box the grid's ids can tell cells apart in, m².
pub const GRID_MAX_CELLS: u64 = 1 << GRID_CELL_BITS;
/// The most zones the grid's ids can tell apart.
pub const GRID_MAX_ZONES: u32 = 1 << GRID_ZONE_BITS;

/// Fruin walkway level of service for a density in persons per m².
pub fn fruin_level(density: f64) -> &'static str {
    match density {
        d if d < 0.31 => "A",
        d if d < 0.43 => "B",
        d if d < 0.72 => "C",
        d if d < 1.08 => "D",
        d if d <= 2.15 => "E",
        _ => "F",
    }
}

/// Density operator settings.
#[derive(Clone, Debug)]
pub struct DensityConfig {
    /// Sliding window length, ms (10 s by default); also the grid's period.
    pub window_ms: Millis,
    /// How often a window is emitted, ms (1 s); divides `window_ms`.
    pub step_ms: Millis,
    /// Snapshot period, ms (200 ms); divides `step_ms`.
    pub sample_ms: Millis,
    /// A camera's latest frame counts in snapshots for this long, ms (1 s).
    pub stale_ms: Millis,
    /// Points of different cameras closer than this are one person, metres (0.5).
    pub fusion_radius_m: f64,
    /// How long a density must stay above (below) a threshold to raise (clear) an alert, ms.
    pub hold_ms: Millis,
    /// The zones to measure.
    pub zones: Vec<Zone>,
    /// The run's epoch, in row and alert ids.
    pub epoch: Epoch,
}

impl DensityConfig {
    /// The default timing for `zones`.
    pub fn new(zones: Vec<Zone>) -> Self {
        Self {
            window_ms: 10_000,
            step_ms: 1_000,
            sample_ms: 200,
            stale_ms: 1_000,
            fusion_radius_m: 0.5,
            hold_ms: 3_000,
            zones,
            epoch: Epoch::default(),
        }
    }
}

/// A person detection inside a zone, on the ground.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Point {
    /// Zone id.
    pub zone: u32,
    /// Camera id.
    pub camera: u32,
    /// Event time, ms.
    pub t: Millis,
    /// Ground position, metres.
    pub x: f32,
    /// Ground position, metres.
    pub y: f32,
}

/// The streams the density operator derives.
pub struct DensityStreams<'scope> {
    /// `zone_density`.
    pub density: Events<'scope, ZoneDensity>,
    /// `density_grid`.
    pub grid: Events<'scope, DensityGrid>,
    /// Density alerts (raised and cleared).
    pub alerts: Events<'scope, Alerts>,
}

/// Extension trait: the density operator.
pub trait CrowdDensity<'scope> {
    /// The zones' densities, grid and alerts from these detections. Batches that cannot be read
    /// go to `errors`.
    ///
    /// ```
    /// use vigil_engine::error::ErrorSink;
    /// use vigil_engine::graph::Graph;
    /// use vigil_engine::stream::StreamDef;
    /// use vigil_operators::density::{CrowdDensity, DensityConfig, ZoneDensity};
    /// use vigil_operators::detection::Detections;
    ///
    /// timely::example(|scope| {
    ///     let input = timely::dataflow::operators::generic::operator::empty(scope);
    ///     let mut graph = Graph::split(scope, 0, input, &[Detections::info()]);
    ///     let out = graph.get::<Detections>().unwrap().zone_density(DensityConfig::new(vec![]), &ErrorSink::log());
    ///     assert_eq!(out.density.info().name, ZoneDensity::NAME);
    /// });
    /// ```
    fn zone_density(self, config: DensityConfig, errors: &ErrorSink) -> DensityStreams<'scope>;
}

impl<'scope> CrowdDensity<'scope> for Events<'scope, Detections> {
    fn zone_density(self, config: DensityConfig, errors: &ErrorSink) -> DensityStreams<'scope> {
        let (errors, density_errors) = (errors.clone(), errors.clone());
        let points =
            self.into_inner().unary::<timely::container::CapacityContainerBuilder<Vec<Point>>, _, _, _>(
                Pipeline,
                "PersonPoints",
                move |_cap, _info| {
                    move |input, output| {
                        input.for_each(|cap, data| {
                            let mut session = output.session(&cap);
                            for b in data.iter() {
                                if let Err(e) = person_points(&b.rows, |p| session.give(p)) {
                                    errors.report("PersonPoints", e);
                                }
                            }
                        });
                    }
                },
            );
        let tagged = points
            .unary_frontier::<timely::container::CapacityContainerBuilder<Vec<(u64, Batch)>>, _, _, _>(
                Exchange::new(|p: &Point| u64::from(p.zone)),
                "ZoneDensity",
                move |_cap, _info| {
                    let mut density = Density::new(config);
                    let mut waiting: Waiting<Point> = Waiting::default();
                    let mut ready: Vec<Point> = Vec::new();
                    move |(input, frontier), output| {
                        input.for_each(|cap, data| {
                            let Some(cap) = cap.retain_least(0) else { return };
                            for p in data.drain(..) {
                                waiting.push(p.t, p);
                            }
                            waiting.hold(cap);
                        });
                        // Points the watermark has passed are complete: apply them in time order.
                        let f = frontier.frontier().iter().min().copied();
                        ready.extend(waiting.take_ready(f).into_values().flatten());
                        let mut out = Outputs::default();
                        density.advance(&mut ready, f.map(|f| f as Millis), &mut out);
                        ready.clear();
                        // Each row at its own event time (see `Density::next_output`).
                        let (d, g, a) = out.finish();
                        for (part, b) in [(0, d), (1, g), (2, a)] {
                            let Some(b) = b else { continue };
                            match by_event_time(&b) {
                                Ok(groups) => {
                                    for (t, rows) in groups {
                                        if let Some(cap) = waiting.cap_at(t) {
                                            output.session(&cap).give((part, Batch::new(rows)));
                                        }
                                    }
                                }
                                Err(e) => density_errors.report("ZoneDensity", e),
                            }
                        }
                        let next = density.next_output().map(|t| t.max(0) as vigil_engine::runtime::Time);
                        waiting.release_to(f, next);
                    }
                },
            );
        let mut parts = vigil_engine::stream::untag(tagged, 3).into_iter();
        let mut next = || parts.next().expect("three parts");
        DensityStreams {
            density: Events::new(next()),
            grid: Events::new(next()),
            alerts: Events::new(next()),
        }
    }
}

/// The rows of `batch` grouped by `event_time`, earliest first.
fn by_event_time(
    batch: &arrow::array::RecordBatch,
) -> vigil_engine::Result<Vec<(Millis, arrow::array::RecordBatch)>> {
    let times = vigil_engine::parquet_sink::event_times(batch)?;
    let first = times.first().copied().unwrap_or_default();
    if times.iter().all(|&t| t == first) {
        return Ok(vec![(first, batch.clone())]);
    }
    let distinct: std::collections::BTreeSet<Millis> = times.iter().copied().collect();
    let mut out = Vec::with_capacity(distinct.len());
    for t in distinct {
        let mask: arrow::array::BooleanArray = times.iter().map(|&x| Some(x == t)).collect();
        let rows = arrow::compute::filter_record_batch(batch, &mask).map_err(|source| {
            vigil_engine::EngineError::Arrow { context: "splitting density rows by time".into(), source }
        })?;
        out.push((t, rows));
    }
    Ok(out)
}

/// Reads the `person` detections with a zone from a `detections` batch.
pub fn person_points(
    batch: &arrow::array::RecordBatch,
    mut give: impl FnMut(Point),
) -> vigil_engine::Result<()> {
    let cols = DetectionCols::new(batch)?;
    for r in cols.rows() {
        if let (Some(zone), "person") = (r.zone_id, r.class) {
            give(Point { zone, camera: r.camera_id, t: r.event_time, x: r.ground_x, y: r.ground_y });
        }
    }
    Ok(())
}

/// A fused person: the mean of its cameras' points.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cluster {
    /// Ground position, metres.
    pub x: f32,
    /// Ground position, metres.
    pub y: f32,
    /// Points merged.
    pub n: u32,
    /// Bit set of the cameras (by index) whose points it holds.
    pub cameras: u64,
}

/// Adds one camera's points (camera index `bit` < 64) to the fused people of a snapshot.
///
/// A camera never sees a person twice in one frame, so its points never merge with each other;
/// each may merge with one cluster that holds no point of this camera yet, within `radius`.
/// Pairs are taken closest first (a greedy matching: with people at least a few decimetres
/// apart and positions good to a decimetre or two, it finds the optimal one in practice, at a
/// sort's cost instead of a Hungarian solve).
pub fn fuse(clusters: &mut Vec<Cluster>, bit: u32, points: &[[f32; 2]], radius: f32) {
    let mask = 1u64 << bit;
    let r2 = radius * radius;
    let mut order: Vec<usize> = (0..clusters.len()).collect();
    order.sort_unstable_by(|&a, &b| clusters[a].x.total_cmp(&clusters[b].x));
    let xs: Vec<f32> = order.iter().map(|&i| clusters[i].x).collect();
    let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
    for (pi, p) in points.iter().enumerate() {
        let from = xs.partition_point(|&x| x < p[0] - radius);
        for &ci in order[from..].iter().take_while(|&&ci| clusters[ci].x <= p[0] + radius) {
            let c = &clusters[ci];
            let d2 = (c.x - p[0]).powi(2) + (c.y - p[1]).powi(2);
            if d2 <= r2 && c.cameras & mask == 0 {
                pairs.push((d2, pi, ci));
            }
        }
    }
    pairs.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut point_used = vec![false; points.len()];
    let mut cluster_used = vec![false; clusters.len()];
    let mut merges: Vec<(usize, usize)> = Vec::new();
    for &(_, pi, ci) in &pairs {
        if !point_used[pi] && !cluster_used[ci] {
            point_used[pi] = true;
            cluster_used[ci] = true;
            merges.push((pi, ci));
        }
    }
    for (pi, ci) in merges {
        let (c, p) = (&mut clusters[ci], points[pi]);
        let n = c.n as f32;
        c.x = (c.x * n + p[0]) / (n + 1.0);
        c.y = (c.y * n + p[1]) / (n + 1.0);
        c.n += 1;
        c.cameras |= mask;
    }
    for (pi, p) in points.iter().enumerate() {
        if !point_used[pi] {
            clusters.push(Cluster { x: p[0], y: p[1], n: 1, cameras: mask });
        }
    }
}

/// One camera's latest frame in a zone.
#[derive(Clone, Debug, Default)]
struct Frame {
    t: Millis,
    points: Vec<[f32; 2]>,
}

/// One snapshot's counts.
#[derive(Clone, Copy, Debug)]
struct Sample {
    t: Millis,
    persons: u32,
    raw: u32,
    cameras: u64,
}

/// One zone's state.
struct ZoneState {
    /// Latest frame per camera index (the zone's camera list).
    frames: Vec<Frame>,
    next_sample: Millis,
    samples: VecDeque<Sample>,
    grid: HashMap<(i32, i32), u32>,
    grid_samples: u32,
    raised: bool,
    /// How long the density has been past the threshold that would change `raised`.
    run_ms: Millis,
    last_point: Millis,
}

/// The operator's logic, independent of timely (and tested on its own).
pub struct Density {
    config: DensityConfig,
    zones: HashMap<u32, Arc<Zone>>,
    states: HashMap<u32, ZoneState>,
    clusters: Vec<Cluster>,
}

/// What one call of [`Density::advance`] produced.
#[derive(Default)]
pub struct Outputs {
    rows: ZoneDensityRows,
    grid: GridRows,
    alerts: AlertRows,
    /// The earliest event time among the outputs.
    earliest: Option<Millis>,
}

impl Outputs {
    /// The non-empty batches: `zone_density`, `density_grid`, alerts.
    pub fn finish(
        mut self,
    ) -> (
        Option<arrow::array::RecordBatch>,
        Option<arrow::array::RecordBatch>,
        Option<arrow::array::RecordBatch>,
    ) {
        (
            (!self.rows.is_empty()).then(|| self.rows.finish()),
            (!self.grid.is_empty()).then(|| self.grid.finish()),
            (!self.alerts.is_empty()).then(|| self.alerts.finish()),
        )
    }

    fn saw(&mut self, t: Millis) {
        self.earliest = Some(self.earliest.map_or(t, |e| e.min(t)));
    }
}

fn ceil_to(t: Millis, step: Millis) -> Millis {
    t.div_euclid(step) * step + if t.rem_euclid(step) == 0 { 0 } else { step }
}

impl Density {
    /// A density operator with no state.
    pub fn new(config: DensityConfig) -> Self {
        let zones = config.zones.iter().map(|z| (z.id, Arc::new(z.clone()))).collect();
        Self { config, zones, states: HashMap::new(), clusters: Vec::new() }
    }

    /// True when no zone holds state.
    pub fn is_idle(&self) -> bool {
        self.states.is_empty()
    }

    /// The earliest event time the next outputs can have (a window's last millisecond), if any
    /// zone holds state: the operator holds its capability there, not at the frontier, so that
    /// each output's logical time is its own event time whatever the scheduling (a resumed run
    /// then cuts its output where the killed run did).
    pub fn next_output(&self) -> Option<Millis> {
        self.states.values().map(|s| s.next_sample - 1).min()
    }

    /// Applies `points` (all before `frontier`; any order) and emits every snapshot and window
    /// before `frontier`. With no frontier (the input has ended) every zone runs until idle.
    pub fn advance(&mut self, points: &mut [Point], frontier: Option<Millis>, out: &mut Outputs) {
        points.sort_by_key(|p| (p.zone, p.t, p.camera));
        for group in points.chunk_by(|a, b| a.zone == b.zone) {
            let Some(zone) = self.zones.get(&group[0].zone).cloned() else { continue };
            for p in group {
                let Some(cam) = zone.cameras.iter().position(|&c| c == p.camera) else { continue };
                let state = self.states.entry(zone.id).or_insert_with(|| ZoneState {
                    frames: vec![Frame { t: Millis::MIN, points: Vec::new() }; zone.cameras.len()],
                    next_sample: ceil_to(p.t, self.config.sample_ms),
                    samples: VecDeque::new(),
                    grid: HashMap::new(),
                    grid_samples: 0,
                    raised: false,
                    run_ms: 0,
                    last_point: p.t,
                });
                while state.next_sample < p.t {
                    let idle = sample(&self.config, &zone, state, &mut self.clusters, out);
                    if idle {
                        // Nobody for a whole window: skip the empty stretch.
                        state.samples.clear();
                        state.next_sample = ceil_to(p.t, self.config.sample_ms);
                    }
                }
                let frame = &mut state.frames[cam];
                if p.t > frame.t {
                    frame.t = p.t;
                    frame.points.clear();
                }
                frame.points.push([p.x, p.y]);
                state.last_point = state.last_point.max(p.t);
            }
        }
        let c = &self.config;
        let mut done = Vec::new();
        for (id, state) in self.states.iter_mut() {
            let zone = &self.zones[id];
            let end = frontier.unwrap_or(state.last_point + c.window_ms + c.hold_ms + 2 * c.step_ms);
            while state.next_sample < end {
                if sample(c, zone, state, &mut self.clusters, out) {
                    done.push(*id);
                    break;
                }
            }
        }
        for id in done {
            self.states.remove(&id);
        }
        if frontier.is_none() {
            self.states.clear();
        }
    }
}

/// Takes the snapshot at `state.next_sample` (emitting the window and grid that end there
/// first); returns true when the zone has become idle.
fn sample(
    c: &DensityConfig,
    zone: &Zone,
    state: &mut ZoneState,
    clusters: &mut Vec<Cluster>,
    out: &mut Outputs,
) -> bool {
    let s = state.next_sample;
    state.next_sample += c.sample_ms;
    let mut idle = false;
    if s.rem_euclid(c.step_ms) == 0 {
        state.samples.retain(|x| x.t >= s - c.window_ms);
        idle = emit_window(c, zone, state, s, out);
        if s.rem_euclid(c.window_ms) == 0 {
            emit_grid(c, zone, state, s, out);
        }
    }
    clusters.clear();
    let (mut raw, mut cameras) = (0, 0u64);
    for (bit, frame) in state.frames.iter().enumerate() {
        if frame.t > s - c.stale_ms && frame.t <= s && !frame.points.is_empty() {
            fuse(clusters, bit as u32, &frame.points, c.fusion_radius_m as f32);
            raw += frame.points.len() as u32;
            cameras |= 1 << bit;
        }
    }
    state.samples.push_back(Sample { t: s, persons: clusters.len() as u32, raw, cameras });
    for cl in clusters.iter() {
        *state.grid.entry((cl.x.floor() as i32, cl.y.floor() as i32)).or_default() += 1;
    }
    state.grid_samples += 1;
    idle && cameras == 0
}

/// Emits the window `[end - window, end)`; returns true when it was empty and no alert is up.
fn emit_window(
    c: &DensityConfig,
    zone: &Zone,
    state: &mut ZoneState,
    end: Millis,
    out: &mut Outputs,
) -> bool {
    let n = state.samples.len();
    if n == 0 {
        return !state.raised;
    }
    let persons = state.samples.iter().map(|x| f64::from(x.persons)).sum::<f64>() / n as f64;
    let raw = state.samples.iter().map(|x| f64::from(x.raw)).sum::<f64>() / n as f64;
    let cameras = state.samples.iter().fold(0u64, |m, x| m | x.cameras).count_ones();
    if raw == 0.0 && !state.raised {
        return true;
    }
    let area = zone.area().max(f64::EPSILON);
    let density = persons / area;
    let level = fruin_level(density);
    let event_time = end - 1;
    let body = (u64::from(zone.id & 0x3FFF) << 38) | ((end / c.step_ms) as u64 & ((1 << 38) - 1));
    let event_id = c.epoch.id(body);
    out.saw(event_time);
    out.rows.push(&ZoneDensityRow {
        camera_id: zone.camera_id(),
        event_time,
        event_id,
        zone_id: zone.id,
        zone: &zone.name,
        window_start: end - c.window_ms,
        window_end: end,
        persons,
        density,
        level,
        cameras,
        raw_persons: raw,
    });
    // Hysteresis: a change of state needs the density past the other threshold for `hold_ms`.
    let past = if state.raised { density < zone.clear_density } else { density >= zone.alert_density };
    state.run_ms = if past { state.run_ms + c.step_ms } else { 0 };
    if state.run_ms >= c.hold_ms {
        state.raised = !state.raised;
        state.run_ms = 0;
        let hold_s = c.hold_ms as f64 / 1000.0;
        let (severity, message) = if state.raised {
            (
                if matches!(level, "E" | "F") { "high" } else { "medium" },
                format!(
                    "raised: {density:.2} persons/m² (level {level}, {persons:.1} persons in {area:.0} m², {cameras} camera(s)) at or above {:.2} for {hold_s:.0} s",
                    zone.alert_density
                ),
            )
        } else {
            (
                "low",
                format!(
                    "cleared: {density:.2} persons/m² (level {level}) below {:.2} for {hold_s:.0} s",
                    zone.clear_density
                ),
            )
        };
        let rule = format!("zone:{}", zone.name);
        let alert = Alert::new(
            c.epoch,
            "density",
            &rule,
            severity,
            zone.camera_id(),
            event_time,
            event_id,
            message,
            0,
        );
        out.alerts.push(&alert.row());
    }
    false
}

/// Emits the grid of the window ending at `end` and resets it.
fn emit_grid(c: &DensityConfig, zone: &Zone, state: &mut ZoneState, end: Millis, out: &mut Outputs) {
    if state.grid_samples > 0 && !state.grid.is_empty() {
        let n = f64::from(state.grid_samples);
        let bb = zone.bbox();
        let (x0, y0) = (bb[0].floor() as i64, bb[1].floor() as i64);
        let width = (bb[2].ceil() as i64 - x0).max(1);
        let mut cells: Vec<((i32, i32), u32)> = state.grid.drain().collect();
        cells.sort_unstable();
        out.saw(end - 1);
        let window = ((end / c.window_ms) as u64) & ((1 << GRID_WINDOW_BITS) - 1);
        let zone_bits = u64::from(zone.id) & u64::from(GRID_MAX_ZONES - 1);
        for ((cx, cy), count) in cells {
            let index = (i64::from(cx) - x0).max(0) + (i64::from(cy) - y0).max(0) * width;
            let body = (zone_bits << (GRID_WINDOW_BITS + GRID_CELL_BITS))
                | (window << GRID_CELL_BITS)
                | (index as u64 & (GRID_MAX_CELLS - 1));
            out.grid.push(&GridRow {
                camera_id: zone.camera_id(),
                event_time: end - 1,
                event_id: c.epoch.id(body),
                zone_id: zone.id,
                zone: &zone.name,
                window_start: end - c.window_ms,
                window_end: end,
                cell_x: cx,
                cell_y: cy,
                density: f64::from(count) / n,
            });
        }
    }
    state.grid.clear();
    state.grid_samples = 0;
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::RecordBatch;
    use proptest::prelude::*;

    #[test]
    fn fruin_bands() {
        for (d, l) in [(0.1, "A"), (0.35, "B"), (0.5, "C"), (0.9, "D"), (2.0, "E"), (2.15, "E"), (3.0, "F")] {
            assert_eq!(fruin_level(d), l, "{d}");
        }
    }

    fn zone(cameras: Vec<u32>) -> Zone {
        Zone {
            id: 1,
            name: "gate".into(),
            cameras,
            polygon: vec![[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]],
            alert_density: 1.0,
            clear_density: 0.8,
        }
    }

    fn fused(cams: &[Vec<[f32; 2]>]) -> usize {
        let mut clusters = Vec::new();
        for (bit, pts) in cams.iter().enumerate() {
            fuse(&mut clusters, bit as u32, pts, 0.5);
        }
        clusters.len()
    }

    #[test]
    fn fusion_counts_a_person_seen_by_three_cameras_once() {
        let people = [[1.0f32, 1.0], [1.6, 1.0], [5.0, 5.0]];
        let jitter = |k: f32| people.iter().map(|p| [p[0] + 0.1 * k, p[1] - 0.05 * k]).collect::<Vec<_>>();
        assert_eq!(fused(&[jitter(0.0), jitter(1.0), jitter(-1.0)]), 3);
        // A camera that misses someone does not lose them: another camera saw them.
        assert_eq!(fused(&[jitter(0.0)[..2].to_vec(), jitter(1.0)[1..].to_vec()]), 3);
        // Two people close together in one camera stay two.
        assert_eq!(fused(&[vec![[1.0, 1.0], [1.1, 1.0]]]), 2);
    }

    proptest! {
        #[test]
        fn fusion_never_loses_or_invents_people(
            people in proptest::collection::vec((0.0f32..30.0, 0.0f32..30.0), 0..60),
            seen in proptest::collection::vec(proptest::collection::vec(any::<bool>(), 60), 1..4),
        ) {
            // People at least 1.2 m apart (thin the random set), each camera sees a subset with
            // up to 0.15 m of error: the fused count is the number seen by at least one camera.
            let mut kept: Vec<[f32; 2]> = Vec::new();
            for &(x, y) in &people {
                if kept.iter().all(|k| (k[0] - x).hypot(k[1] - y) >= 1.2) {
                    kept.push([x, y]);
                }
            }
            let cams: Vec<Vec<[f32; 2]>> = seen
                .iter()
                .enumerate()
                .map(|(c, s)| {
                    kept.iter().enumerate().filter(|(i, _)| s[*i]).map(|(i, p)| {
                        let e = ((i * 7 + c * 3) % 11) as f32 / 11.0 * 0.3 - 0.15;
                        [p[0] + e, p[1] - e / 2.0]
                    }).collect()
                })
                .collect();
            let union = (0..kept.len()).filter(|&i| seen.iter().any(|s| s[i])).count();
            prop_assert_eq!(fused(&cams), union);
        }
    }

    fn points(zone: u32, camera: u32, t: Millis, n: usize) -> Vec<Point> {
        (0..n)
            .map(|i| Point { zone, camera, t, x: 0.5 + (i % 9) as f32 * 1.1, y: 0.5 + (i / 9) as f32 * 1.1 })
            .collect()
    }

    /// Feeds `people(t)` persons, seen by every camera of the zone at 10 fps, for `seconds`.
    fn run(
        cameras: Vec<u32>,
        seconds: i64,
        people: impl Fn(Millis) -> usize,
    ) -> (Vec<RecordBatch>, Vec<RecordBatch>, Vec<RecordBatch>) {
        let mut d = Density::new(DensityConfig {
            hold_ms: 2_000,
            window_ms: 4_000,
            ..DensityConfig::new(vec![zone(cameras.clone())])
        });
        let mut all = (Vec::new(), Vec::new(), Vec::new());
        let mut keep = |out: Outputs| {
            let (a, b, c) = out.finish();
            all.0.extend(a);
            all.1.extend(b);
            all.2.extend(c);
        };
        for t in (0..seconds * 1000).step_by(100) {
            let mut out = Outputs::default();
            let mut pts: Vec<Point> = cameras.iter().flat_map(|&c| points(1, c, t, people(t))).collect();
            d.advance(&mut pts, Some(t + 1), &mut out);
            keep(out);
        }
        let mut out = Outputs::default();
        d.advance(&mut [], None, &mut out);
        keep(out);
        assert!(d.is_idle());
        all
    }

    type Out = (Vec<RecordBatch>, Vec<RecordBatch>, Vec<RecordBatch>);

    fn density_rows(out: &Out) -> Vec<(i64, f64, f64)> {
        out.0
            .iter()
            .flat_map(|b| {
                let cols = ZoneDensityCols::new(b).unwrap();
                cols.rows().map(|r| (r.window_end, r.persons, r.raw_persons)).collect::<Vec<_>>()
            })
            .collect()
    }

    fn alerts(out: &Out) -> Vec<(i64, String)> {
        out.2
            .iter()
            .flat_map(|b| crate::alerts::alerts_from_batch(b).unwrap())
            .map(|a| (a.event_time, a.message))
            .collect()
    }

    #[test]
    fn three_cameras_count_each_person_once() {
        let out = run(vec![4, 5, 6], 10, |_| 40);
        let rows = density_rows(&out);
        let full: Vec<_> = rows.iter().filter(|r| r.0 >= 5_000 && r.0 <= 10_000).collect();
        assert!(!full.is_empty());
        for &&(end, persons, raw) in &full {
            assert!((persons - 40.0).abs() < 1e-9, "{end}: {persons}");
            assert!((raw - 120.0).abs() < 1e-9, "{end}: {raw}");
        }
    }

    #[test]
    fn alert_waits_for_the_hold_time_and_does_not_flap() {
        // 100 m²: 150 people is 1.5/m² (above 1.0), 85 is 0.85 (between clear 0.8 and raise 1.0),
        // 20 is 0.2. The density wobbles between 150 and 85 while high: one alert, not many.
        let people = |t: Millis| match t {
            t if t < 5_000 => 20,
            t if t < 25_000 => {
                if (t / 1_500) % 2 == 0 {
                    150
                } else {
                    85
                }
            }
            _ => 10,
        };
        let out = run(vec![0], 40, people);
        let a = alerts(&out);
        assert_eq!(a.len(), 2, "{a:?}");
        assert!(a[0].1.starts_with("raised"), "{a:?}");
        assert!(a[1].1.starts_with("cleared"), "{a:?}");
        assert!(a[0].0 >= 5_000 + 2_000 && a[0].0 <= 5_000 + 8_000, "{a:?}");
        assert!(a[1].0 > 25_000 && a[1].0 <= 25_000 + 8_000, "{a:?}");
    }

    #[test]
    fn grid_cells_hold_the_people() {
        let out = run(vec![0, 1], 8, |_| 9);
        let grid: Vec<(i32, i32, f64)> = out
            .1
            .iter()
            .flat_map(|b| {
                let cols = GridCols::new(b).unwrap();
                cols.rows()
                    .filter(|r| r.window_end <= 8_000)
                    .map(|r| (r.cell_x, r.cell_y, r.density))
                    .collect::<Vec<_>>()
            })
            .collect();
        let ids: std::collections::BTreeSet<u64> =
            out.1.iter().flat_map(|b| GridCols::new(b).unwrap().event_id.values().to_vec()).collect();
        assert_eq!(ids.len(), out.1.iter().map(|b| b.num_rows()).sum::<usize>(), "grid ids are unique");
        // Nine people in a row 1.1 m apart at y = 0.5: cells (0..9, 0), one person each, in
        // each of the two windows while they stand there.
        assert_eq!(grid.len(), 18, "{grid:?}");
        let window: Vec<_> = grid.iter().collect();
        assert!(window.iter().all(|g| g.1 == 0 && (g.2 - 1.0).abs() < 1e-9), "{grid:?}");
        assert_eq!(window.iter().map(|g| g.0).collect::<std::collections::BTreeSet<_>>().len(), 9);
    }
}

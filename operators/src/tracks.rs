//! The tracking operator: `detections` in, `tracks` out, one [`Tracker`] per camera.
//!
//! A tracker needs each camera's frames in capture order, but frames reach the dataflow in
//! delivery order (a laggy camera's frames may be reordered within the allowed lateness). So
//! detections wait, keyed by event time, until the input frontier (the watermark) has passed
//! them; then they are fed frame by frame, in event-time order. Ingest sends every camera to the
//! same worker (`camera % workers`), so each tracker lives on one worker and the operator needs
//! no exchange. State: the waiting detections (bounded by the lateness) and the live tracks;
//! trackers are fed capture times, and the watermark expires the lost tracks of cameras that
//! send nothing (a camera with no tracks left holds no tracker).
//!
//! A track's `track_id` is the `event_id` of the detection that started it, so track ids are
//! unique across cameras, runs and restarts, like event ids. A track row's own `event_id` packs
//! (camera, frame, index among the frame's tracks) with the detection's epoch ([`EventId`]).
//! Each row also carries its foot point on the ground and the zone there, through the camera's
//! calibration ([`Locate`]), so flows and dwell times can be measured in metres.

use std::collections::HashMap;
use std::sync::Arc;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use vigil_engine::error::ErrorSink;
use vigil_engine::stream::{Batch, Events, Str, Timestamp};
use vigil_engine::waiting::Waiting;

use crate::detection::{DetectionCols, Detections, EventId};
use crate::tracker::{Observation, TrackOut, Tracker, TrackerConfigs};

vigil_engine::stream! {
    /// A tracked object in a frame: one row per confirmed track (tracked or lost) and frame.
    pub struct Tracks {
        name: "tracks",
        class: Personal,
        keys: [camera_id, event_time, event_id],
        personal: [track_id, x, y, w, h, vx, vy, ground_x, ground_y],
        row: TrackRow,
        builder: TrackRows,
        reader: TrackCols,
        columns: {
            /// The camera.
            camera_id: u32,
            /// Capture time of the frame.
            event_time: Timestamp,
            /// (camera, frame, index among the frame's tracks), see the module documentation.
            event_id: u64,
            /// The `event_id` of the detection that started the track.
            track_id: u64,
            /// Class of the detections that started it.
            class: Str,
            /// Box (Kalman state) in pixels: top-left corner, width, height.
            x: f32,
            /// Box top, pixels.
            y: f32,
            /// Box width, pixels.
            w: f32,
            /// Box height, pixels.
            h: f32,
            /// Velocity of the box centre, pixels per frame.
            vx: f32,
            /// Velocity, pixels per frame.
            vy: f32,
            /// `tracked` (matched this frame) or `lost` (predicted).
            state: Str,
            /// Foot point on the ground, metres (NaN for an uncalibrated camera).
            ground_x: f32,
            /// Foot point on the ground, metres.
            ground_y: f32,
            /// The zone containing the foot point, if any.
            zone_id: Option<u32>,
        }
    }
}

/// One detection row, as the tracker needs it.
#[derive(Clone, Copy, Debug)]
struct Det {
    camera: u32,
    /// The detection's event id: sorting by it orders by (camera, frame, index).
    id: EventId,
    obs: Observation,
}

/// A camera's calibration: the ground point (metres) and zone of an image box's foot point;
/// `None` for an uncalibrated camera.
pub type Locate = Arc<dyn Fn(u32, [f32; 4]) -> Option<([f32; 2], Option<u32>)> + Send + Sync>;

/// Extension trait: the tracking operator.
pub trait TrackObjects<'scope> {
    /// The `tracks` of these detections, each camera tracked with its own settings. Batches that
    /// cannot be read go to `errors`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use vigil_engine::error::ErrorSink;
    /// use vigil_engine::graph::Graph;
    /// use vigil_engine::stream::StreamDef;
    /// use vigil_operators::detection::Detections;
    /// use vigil_operators::tracker::TrackerConfig;
    /// use vigil_operators::tracks::{Locate, TrackObjects, Tracks};
    ///
    /// timely::example(|scope| {
    ///     let input = timely::dataflow::operators::generic::operator::empty(scope);
    ///     let mut graph = Graph::split(scope, 0, input, &[Detections::info()]);
    ///     let locate: Locate = Arc::new(|_camera, _bbox| None);
    ///     let detections = graph.get::<Detections>().unwrap();
    ///     let tracks = detections.track_objects(TrackerConfig::default().into(), locate, &ErrorSink::log());
    ///     assert_eq!(tracks.info().name, Tracks::NAME);
    /// });
    /// ```
    fn track_objects(
        self,
        config: TrackerConfigs,
        locate: Locate,
        errors: &ErrorSink,
    ) -> Events<'scope, Tracks>;
}

impl<'scope> TrackObjects<'scope> for Events<'scope, Detections> {
    fn track_objects(
        self,
        config: TrackerConfigs,
        locate: Locate,
        errors: &ErrorSink,
    ) -> Events<'scope, Tracks> {
        let errors = errors.clone();
        let stream = self.into_inner().unary_frontier::<timely::container::CapacityContainerBuilder<Vec<Batch>>, _, _, _>(
            Pipeline,
            "Track",
            move |_cap, _info| {
                // Detections by event time, waiting for the watermark.
                let mut waiting: Waiting<Det> = Waiting::default();
                let mut trackers: HashMap<u32, Tracker> = HashMap::new();
                let mut classes: Vec<Arc<str>> = Vec::new();
                let mut out_tracks: Vec<TrackOut> = Vec::new();
                let mut frame: Vec<Observation> = Vec::new();
                let mut rows = TrackRows::default();
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        let Some(cap) = cap.retain_least(0) else { return };
                        for b in data.iter() {
                            if let Err(e) = collect(b, &mut classes, &mut waiting) {
                                errors.report("Track", e);
                            }
                        }
                        waiting.hold(cap);
                    });
                    let f = frontier.frontier().iter().min().copied();
                    for (t, mut dets) in waiting.take_ready(f) {
                        dets.sort_unstable_by_key(|d| d.id);
                        for group in dets.chunk_by(|a, b| a.camera == b.camera) {
                            let (epoch, camera, frame_no, _) = group[0].id.unpack();
                            let epoch = vigil_engine::ids::Epoch::new(epoch).expect("an epoch unpacked from an id fits");
                            frame.clear();
                            frame.extend(group.iter().map(|d| d.obs));
                            let tracker = trackers.entry(camera).or_insert_with(|| Tracker::new(config.camera(camera)));
                            // Capture time, so that dropped frames and frames with no detections
                            // (which send no rows) age the tracks by their real gap.
                            tracker.update(t as f64 / 1000.0, &frame, &mut out_tracks);
                            for (i, tr) in out_tracks.iter().enumerate() {
                                let Ok(id) = EventId::pack(epoch, camera, frame_no, i as u32) else {
                                    errors.report("Track", format!("camera {camera}: more than 1,024 tracks in a frame; the rest are not written"));
                                    break;
                                };
                                let (g, zone_id) = locate(camera, tr.bbox).unwrap_or(([f32::NAN; 2], None));
                                rows.push(&TrackRow {
                                    camera_id: camera,
                                    event_time: t,
                                    event_id: id.0,
                                    track_id: tr.birth,
                                    class: &classes[tr.class as usize],
                                    x: tr.bbox[0],
                                    y: tr.bbox[1],
                                    w: tr.bbox[2],
                                    h: tr.bbox[3],
                                    vx: tr.velocity[0],
                                    vy: tr.velocity[1],
                                    state: tr.state.name(),
                                    ground_x: g[0],
                                    ground_y: g[1],
                                    zone_id,
                                });
                            }
                        }
                    }
                    // Cameras that have gone quiet: their lost tracks expire by the watermark.
                    if let Some(f) = f {
                        let now = f as f64 / 1000.0;
                        trackers.values_mut().for_each(|tr| tr.expire(now));
                        trackers.retain(|_, tr| tr.live() > 0);
                    }
                    if let Some(cap) = waiting.cap()
                        && !rows.is_empty()
                    {
                        output.session(cap).give(Batch::new(rows.finish()));
                    }
                    // Hold only what is still waiting.
                    waiting.release(f, false);
                }
            },
        );
        Events::new(stream)
    }
}

/// Reads the rows of a `detections` batch into the waiting map.
fn collect(b: &Batch, classes: &mut Vec<Arc<str>>, waiting: &mut Waiting<Det>) -> vigil_engine::Result<()> {
    let cols = DetectionCols::new(&b.rows)?;
    for r in cols.rows() {
        let k = match classes.iter().position(|c| **c == *r.class) {
            Some(k) => k,
            None => {
                classes.push(Arc::from(r.class));
                classes.len() - 1
            }
        };
        let obs =
            Observation { bbox: [r.x, r.y, r.w, r.h], score: r.score, class: k as u32, tag: r.event_id };
        waiting.push(r.event_time, Det { camera: r.camera_id, id: EventId(r.event_id), obs });
    }
    Ok(())
}

//! The tracking operator: `detections` in, `tracks` out, one [`Tracker`] per camera.
//!
//! A tracker needs each camera's frames in capture order, but frames reach the dataflow in
//! delivery order (a laggy camera's frames may be reordered within the allowed lateness). So
//! detections wait, keyed by event time, until the input frontier (the watermark) has passed
//! them; then they are fed frame by frame, in event-time order. Ingest sends every camera to the
//! same worker (`camera % workers`), so each tracker lives on one worker and the operator needs
//! no exchange. State: the waiting detections (bounded by the lateness) and the live tracks.
//!
//! Each track row also carries its foot point on the ground and the zone there, through the
//! camera's calibration ([`Locate`]), so flows and dwell times can be measured in metres.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float32Array, Float32Builder, RecordBatch, StringArray, StringBuilder, UInt32Array,
    UInt32Builder, UInt64Array, UInt64Builder,
};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use vigil_engine::runtime::{BatchKind, EventBatch, Time};
use vigil_engine::schema::{EventId, KeyColumns, StreamKind, event_times};
use vigil_engine::time::Millis;
use vigil_engine::waiting::Waiting;

use crate::tracker::{Observation, TrackOut, Tracker, TrackerConfig};

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
    /// Emits `tracks` batches for the `detections` batches of `self`.
    fn track_objects(self, config: TrackerConfig, locate: Locate) -> Stream<'scope, Time, Vec<EventBatch>>;
}

impl<'scope> TrackObjects<'scope> for Stream<'scope, Time, Vec<EventBatch>> {
    fn track_objects(self, config: TrackerConfig, locate: Locate) -> Stream<'scope, Time, Vec<EventBatch>> {
        self.unary_frontier::<timely::container::CapacityContainerBuilder<Vec<EventBatch>>, _, _, _>(
            Pipeline,
            "Track",
            move |_cap, _info| {
                // Detections by event time, waiting for the watermark.
                let mut waiting: Waiting<Det> = Waiting::default();
                let mut trackers: HashMap<u32, Tracker> = HashMap::new();
                let mut classes: Vec<Arc<str>> = Vec::new();
                let mut out_tracks: Vec<TrackOut> = Vec::new();
                let mut frame: Vec<Observation> = Vec::new();
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        let Some(cap) = cap.retain_least(0) else { return };
                        for b in data.iter().filter(|b| b.stream() == Some(StreamKind::Detections)) {
                            collect(&b.data, &mut classes, &mut waiting);
                        }
                        waiting.hold(cap);
                    });
                    let f = frontier.frontier().iter().min().copied();
                    let mut rows = TrackRows::default();
                    for (t, mut dets) in waiting.take_ready(f) {
                        dets.sort_unstable_by_key(|d| d.id);
                        for group in dets.chunk_by(|a, b| a.camera == b.camera) {
                            let (camera, frame_no) = (group[0].camera, group[0].id.unpack().1);
                            frame.clear();
                            frame.extend(group.iter().map(|d| d.obs));
                            let tracker = trackers.entry(camera).or_insert_with(|| Tracker::new(config));
                            tracker.update(&frame, &mut out_tracks);
                            for (i, tr) in out_tracks.iter().enumerate() {
                                let Ok(id) = EventId::pack(camera, frame_no, i as u32) else { continue };
                                let ground = locate(camera, tr.bbox);
                                rows.push(camera, t, id, tr, &classes[tr.class as usize], ground);
                            }
                        }
                    }
                    if let Some(cap) = waiting.cap()
                        && rows.len() > 0
                    {
                        output.session(cap).give(EventBatch {
                            kind: BatchKind::Events(StreamKind::Tracks),
                            data: rows.finish(),
                        });
                    }
                    // Hold only what is still waiting.
                    waiting.release(f, false);
                }
            },
        )
    }
}

/// Reads the rows of a `detections` batch into the waiting map.
fn collect(batch: &RecordBatch, classes: &mut Vec<Arc<str>>, waiting: &mut Waiting<Det>) {
    let col = |name: &str| batch.column_by_name(name);
    let (Ok(times), Some(cam), Some(ids), Some(class), Some(score)) = (
        event_times(batch),
        col("camera_id").and_then(|c| c.as_any().downcast_ref::<UInt32Array>()),
        col("event_id").and_then(|c| c.as_any().downcast_ref::<UInt64Array>()),
        col("class").and_then(|c| c.as_any().downcast_ref::<StringArray>()),
        col("score").and_then(|c| c.as_any().downcast_ref::<Float32Array>()),
    ) else {
        return;
    };
    let b: Vec<&Float32Array> = ["x", "y", "w", "h"]
        .iter()
        .filter_map(|n| col(n).and_then(|c| c.as_any().downcast_ref::<Float32Array>()))
        .collect();
    if b.len() != 4 {
        return;
    }
    for (i, &t) in times.iter().enumerate() {
        let name = class.value(i);
        let k = match classes.iter().position(|c| &**c == name) {
            Some(k) => k,
            None => {
                classes.push(Arc::from(name));
                classes.len() - 1
            }
        };
        let obs = Observation {
            bbox: [b[0].value(i), b[1].value(i), b[2].value(i), b[3].value(i)],
            score: score.value(i),
            class: k as u32,
        };
        waiting.push(t, Det { camera: cam.value(i), id: EventId(ids.value(i)), obs });
    }
}

/// Builds `tracks` batches.
#[derive(Default)]
struct TrackRows {
    keys: KeyColumns,
    track: UInt64Builder,
    class: StringBuilder,
    bbox: [Float32Builder; 4],
    velocity: [Float32Builder; 2],
    state: StringBuilder,
    ground: [Float32Builder; 2],
    zone: UInt32Builder,
}

impl TrackRows {
    fn push(
        &mut self,
        camera: u32,
        t: Millis,
        id: EventId,
        tr: &TrackOut,
        class: &str,
        ground: Option<([f32; 2], Option<u32>)>,
    ) {
        self.keys.push(camera, t, id.0);
        // Track ids are unique per camera: the camera goes in the high bits.
        self.track.append_value((u64::from(camera) << 40) | tr.id);
        self.class.append_value(class);
        for (b, v) in self.bbox.iter_mut().zip(tr.bbox) {
            b.append_value(v);
        }
        for (b, v) in self.velocity.iter_mut().zip(tr.velocity) {
            b.append_value(v);
        }
        self.state.append_value(tr.state.name());
        let (g, zone) = ground.unwrap_or(([f32::NAN; 2], None));
        for (b, v) in self.ground.iter_mut().zip(g) {
            b.append_value(v);
        }
        self.zone.append_option(zone);
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    fn finish(&mut self) -> RecordBatch {
        let mut columns = self.keys.finish();
        columns.push(Arc::new(self.track.finish()));
        columns.push(Arc::new(self.class.finish()));
        columns.extend(self.bbox.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        columns.extend(self.velocity.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        columns.push(Arc::new(self.state.finish()));
        columns.extend(self.ground.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        columns.push(Arc::new(self.zone.finish()));
        RecordBatch::try_new(StreamKind::Tracks.schema(), columns).expect("tracks columns match the schema")
    }
}

//! Event schemas: the Arrow layout of every stream vigil carries, in one place.
//!
//! Every event row carries `camera_id`, `event_time` (capture time, milliseconds since the Unix
//! epoch, UTC) and a stable `event_id`, so that any output can be deduplicated and checked
//! against its inputs. Streams:
//!
//! | stream         | one row per                                   |
//! |----------------|-----------------------------------------------|
//! | `detections`   | object a detector found in a frame            |
//! | `tracks`       | tracked object per frame (filled by a tracker) |
//! | `plate_reads`  | licence plate an OCR read in a frame          |
//! | `zone_density` | zone and sliding window, every step (1 s)     |
//! | `alerts`       | alert raised by an operator or SQL rule       |
//! | `late_events`  | event that arrived behind the watermark       |
//! | `camera_health`| camera and health report (every few seconds)   |
//! | `density_grid` | zone, 1 m ground cell with people, and window  |
//! | `line_crossings`| track crossing a gate line                    |
//! | `zone_visits`  | track's stay in a zone, when it ends           |
//!
//! Camera-derived rows pack their `event_id` from (camera, frame, index) with [`EventId`];
//! derived rows (density windows, alerts) document their own packing next to the operator
//! that makes them.

use std::sync::{Arc, OnceLock};

use arrow::array::{
    ArrayBuilder, ArrayRef, Float32Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder,
    UInt32Builder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::error::{EngineError, Result};

/// The streams of the engine. The discriminant order is stable: it is used in sort keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamKind {
    /// Object detections.
    Detections,
    /// Tracked objects.
    Tracks,
    /// Licence plate reads.
    PlateReads,
    /// Persons per zone per window.
    ZoneDensity,
    /// Alerts from operators and rules.
    Alerts,
    /// Events that arrived behind the watermark.
    LateEvents,
    /// Per-camera health reports (state, rates, errors, lag).
    CameraHealth,
    /// Persons per 1 m ground cell per zone (the heatmap).
    DensityGrid,
    /// Tracks crossing gate lines, with direction.
    LineCrossings,
    /// Tracks' stays in zones (dwell time).
    ZoneVisits,
}

impl StreamKind {
    /// Every stream, in a fixed order.
    pub const ALL: [StreamKind; 10] = [
        StreamKind::Detections,
        StreamKind::Tracks,
        StreamKind::PlateReads,
        StreamKind::ZoneDensity,
        StreamKind::Alerts,
        StreamKind::LateEvents,
        StreamKind::CameraHealth,
        StreamKind::DensityGrid,
        StreamKind::LineCrossings,
        StreamKind::ZoneVisits,
    ];

    /// The stream's name, as used for tables, directories and file names.
    pub fn name(self) -> &'static str {
        match self {
            StreamKind::Detections => "detections",
            StreamKind::Tracks => "tracks",
            StreamKind::PlateReads => "plate_reads",
            StreamKind::ZoneDensity => "zone_density",
            StreamKind::Alerts => "alerts",
            StreamKind::LateEvents => "late_events",
            StreamKind::CameraHealth => "camera_health",
            StreamKind::DensityGrid => "density_grid",
            StreamKind::LineCrossings => "line_crossings",
            StreamKind::ZoneVisits => "zone_visits",
        }
    }

    /// Looks a stream up by name.
    pub fn from_name(name: &str) -> Option<StreamKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The stream's Arrow schema.
    pub fn schema(self) -> SchemaRef {
        static SCHEMAS: OnceLock<[SchemaRef; 10]> = OnceLock::new();
        let all = SCHEMAS.get_or_init(|| {
            [
                detections_schema(),
                tracks_schema(),
                plate_reads_schema(),
                zone_density_schema(),
                alerts_schema(),
                late_events_schema(),
                camera_health_schema(),
                density_grid_schema(),
                line_crossings_schema(),
                zone_visits_schema(),
            ]
        });
        Arc::clone(&all[self as usize])
    }
}

/// The Arrow type of every `event_time` column: milliseconds, UTC.
pub fn event_time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn key_fields() -> Vec<Field> {
    vec![
        Field::new("camera_id", DataType::UInt32, false),
        Field::new("event_time", event_time_type(), false),
        Field::new("event_id", DataType::UInt64, false),
    ]
}

fn with_keys(rest: Vec<Field>) -> SchemaRef {
    let mut fields = key_fields();
    fields.extend(rest);
    Arc::new(Schema::new(fields))
}

fn detections_schema() -> SchemaRef {
    with_keys(vec![
        Field::new("class", DataType::Utf8, false),
        Field::new("score", DataType::Float32, false),
        // Box in image pixels: top-left corner, width, height.
        Field::new("x", DataType::Float32, false),
        Field::new("y", DataType::Float32, false),
        Field::new("w", DataType::Float32, false),
        Field::new("h", DataType::Float32, false),
        // Foot point projected onto the ground, metres in the city frame.
        Field::new("ground_x", DataType::Float32, false),
        Field::new("ground_y", DataType::Float32, false),
        // Zone containing the foot point, if any.
        Field::new("zone_id", DataType::UInt32, true),
    ])
}

fn tracks_schema() -> SchemaRef {
    with_keys(vec![
        Field::new("track_id", DataType::UInt64, false),
        Field::new("class", DataType::Utf8, false),
        Field::new("x", DataType::Float32, false),
        Field::new("y", DataType::Float32, false),
        Field::new("w", DataType::Float32, false),
        Field::new("h", DataType::Float32, false),
        Field::new("vx", DataType::Float32, false),
        Field::new("vy", DataType::Float32, false),
        Field::new("state", DataType::Utf8, false),
        // Foot point of the box on the ground (NaN for an uncalibrated camera), and its zone.
        Field::new("ground_x", DataType::Float32, false),
        Field::new("ground_y", DataType::Float32, false),
        Field::new("zone_id", DataType::UInt32, true),
    ])
}

fn plate_reads_schema() -> SchemaRef {
    with_keys(vec![
        // The text as the OCR read it.
        Field::new("plate_raw", DataType::Utf8, false),
        // Canonical form (`12345-ب-6`), null when the text is not a plate.
        Field::new("plate", DataType::Utf8, true),
        Field::new("confidence", DataType::Float32, false),
    ])
}

fn zone_density_schema() -> SchemaRef {
    with_keys(vec![
        Field::new("zone_id", DataType::UInt32, false),
        Field::new("zone", DataType::Utf8, false),
        Field::new("window_start", event_time_type(), false),
        Field::new("window_end", event_time_type(), false),
        // People in the zone (mean over the window's samples), after fusing the cameras.
        Field::new("persons", DataType::Float64, false),
        Field::new("density", DataType::Float64, false),
        Field::new("level", DataType::Utf8, false),
        // Cameras that contributed, and the people they reported before fusion.
        Field::new("cameras", DataType::UInt32, false),
        Field::new("raw_persons", DataType::Float64, false),
    ])
}

fn density_grid_schema() -> SchemaRef {
    with_keys(vec![
        Field::new("zone_id", DataType::UInt32, false),
        Field::new("zone", DataType::Utf8, false),
        Field::new("window_start", event_time_type(), false),
        Field::new("window_end", event_time_type(), false),
        // The cell's south-west corner, whole metres in the city frame.
        Field::new("cell_x", DataType::Int32, false),
        Field::new("cell_y", DataType::Int32, false),
        // Mean persons in the 1 m² cell over the window: persons per m².
        Field::new("density", DataType::Float64, false),
    ])
}

fn line_crossings_schema() -> SchemaRef {
    with_keys(vec![
        Field::new("line_id", DataType::UInt32, false),
        Field::new("line", DataType::Utf8, false),
        Field::new("track_id", DataType::UInt64, false),
        Field::new("class", DataType::Utf8, false),
        // `in` or `out`, as the line's configuration defines them.
        Field::new("direction", DataType::Utf8, false),
        Field::new("width_m", DataType::Float64, false),
        Field::new("ground_x", DataType::Float32, false),
        Field::new("ground_y", DataType::Float32, false),
    ])
}

fn zone_visits_schema() -> SchemaRef {
    with_keys(vec![
        Field::new("zone_id", DataType::UInt32, false),
        Field::new("zone", DataType::Utf8, false),
        Field::new("track_id", DataType::UInt64, false),
        Field::new("class", DataType::Utf8, false),
        Field::new("entered_at", event_time_type(), false),
        Field::new("left_at", event_time_type(), false),
        Field::new("dwell_s", DataType::Float64, false),
    ])
}

fn alerts_schema() -> SchemaRef {
    with_keys(vec![
        Field::new("kind", DataType::Utf8, false),
        Field::new("rule", DataType::Utf8, false),
        Field::new("severity", DataType::Utf8, false),
        Field::new("message", DataType::Utf8, false),
    ])
}

fn late_events_schema() -> SchemaRef {
    with_keys(vec![
        Field::new("stream", DataType::Utf8, false),
        Field::new("watermark", event_time_type(), false),
    ])
}

fn camera_health_schema() -> SchemaRef {
    with_keys(vec![
        Field::new("camera", DataType::Utf8, false),
        // connecting, streaming, backoff or failed.
        Field::new("state", DataType::Utf8, false),
        // Frames per second received (decoded) and passed on to analytics, since the last report.
        Field::new("fps_in", DataType::Float64, false),
        Field::new("fps_out", DataType::Float64, false),
        // Totals since start.
        Field::new("frames_dropped", DataType::UInt64, false),
        Field::new("decode_errors", DataType::UInt64, false),
        Field::new("reconnects", DataType::UInt64, false),
        // Receive time minus capture time of the last frame, ms.
        Field::new("lag_ms", DataType::Float64, true),
        // Camera clock (RTCP sender reports) minus receive clock, ms; null before the first report.
        Field::new("clock_skew_ms", DataType::Float64, true),
        // Where event times come from: rtcp or receive.
        Field::new("time_source", DataType::Utf8, false),
        Field::new("last_error", DataType::Utf8, true),
    ])
}

/// A stable event identifier packed from (camera, frame, index in frame).
///
/// Layout (most significant first): 20 bits camera, 32 bits frame, 12 bits index. That covers
/// a million cameras, 13 years at 10 fps, and 4,096 objects per frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(pub u64);

impl EventId {
    /// Largest camera id that fits.
    pub const MAX_CAMERA: u32 = (1 << 20) - 1;
    /// Largest index within a frame that fits.
    pub const MAX_INDEX: u32 = (1 << 12) - 1;

    /// Packs an id; fields that do not fit are a user error (too many cameras or objects).
    pub fn pack(camera: u32, frame: u64, index: u32) -> Result<EventId> {
        if camera > Self::MAX_CAMERA || frame >= (1 << 32) || index > Self::MAX_INDEX {
            return Err(EngineError::user(
                format!("event id out of range: camera {camera}, frame {frame}, index {index}"),
                "use camera ids below 1048576 and at most 4096 objects per frame",
            ));
        }
        Ok(EventId((u64::from(camera) << 44) | (frame << 12) | u64::from(index)))
    }

    /// The camera, frame and index this id was packed from.
    pub fn unpack(self) -> (u32, u64, u32) {
        ((self.0 >> 44) as u32, (self.0 >> 12) & 0xFFFF_FFFF, (self.0 & 0xFFF) as u32)
    }
}

/// The key columns every stream starts with (`camera_id`, `event_time` in UTC, `event_id`), for
/// the row builders of operators.
#[derive(Debug, Default)]
pub struct KeyColumns {
    camera_id: UInt32Builder,
    event_time: TimestampMillisecondBuilder,
    event_id: UInt64Builder,
}

impl KeyColumns {
    /// Appends one row's keys.
    pub fn push(&mut self, camera_id: u32, event_time: i64, event_id: u64) {
        self.camera_id.append_value(camera_id);
        self.event_time.append_value(event_time);
        self.event_id.append_value(event_id);
    }

    /// Rows appended since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.camera_id.len()
    }

    /// True when no row is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The three key columns, to be followed by the stream's own; resets the builder.
    pub fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.camera_id.finish()),
            Arc::new(self.event_time.finish().with_timezone("UTC")),
            Arc::new(self.event_id.finish()),
        ]
    }
}

/// One detection, as a detector (or the simulator) reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    /// Object class (`person`, `car`, ...).
    pub class: &'static str,
    /// Detector confidence in `[0, 1]`.
    pub score: f32,
    /// Box in image pixels `[x, y, w, h]`.
    pub bbox: [f32; 4],
    /// Foot point on the ground, metres.
    pub ground: [f32; 2],
    /// Zone containing the foot point.
    pub zone_id: Option<u32>,
}

/// Builds `detections` batches row by row; one builder is reused across frames.
#[derive(Debug)]
pub struct DetectionsBuilder {
    camera_id: UInt32Builder,
    event_time: TimestampMillisecondBuilder,
    event_id: UInt64Builder,
    class: StringBuilder,
    score: Float32Builder,
    bbox: [Float32Builder; 4],
    ground: [Float32Builder; 2],
    zone_id: UInt32Builder,
}

impl Default for DetectionsBuilder {
    fn default() -> Self {
        Self {
            camera_id: UInt32Builder::new(),
            event_time: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            event_id: UInt64Builder::new(),
            class: StringBuilder::new(),
            score: Float32Builder::new(),
            bbox: Default::default(),
            ground: Default::default(),
            zone_id: UInt32Builder::new(),
        }
    }
}

impl DetectionsBuilder {
    /// Appends one detection.
    pub fn push(&mut self, camera_id: u32, event_time: i64, event_id: EventId, d: &Detection) {
        self.camera_id.append_value(camera_id);
        self.event_time.append_value(event_time);
        self.event_id.append_value(event_id.0);
        self.class.append_value(d.class);
        self.score.append_value(d.score);
        for (b, v) in self.bbox.iter_mut().zip(d.bbox) {
            b.append_value(v);
        }
        for (b, v) in self.ground.iter_mut().zip(d.ground) {
            b.append_value(v);
        }
        self.zone_id.append_option(d.zone_id);
    }

    /// Rows appended since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.camera_id.len()
    }

    /// True when no row is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns the pending rows as a batch and resets the builder.
    pub fn finish(&mut self) -> RecordBatch {
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.camera_id.finish()),
            Arc::new(self.event_time.finish()),
            Arc::new(self.event_id.finish()),
            Arc::new(self.class.finish()),
            Arc::new(self.score.finish()),
        ];
        columns.extend(self.bbox.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        columns.extend(self.ground.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        columns.push(Arc::new(self.zone_id.finish()));
        RecordBatch::try_new(StreamKind::Detections.schema(), columns)
            .expect("DetectionsBuilder columns match the detections schema")
    }
}

/// Builds `plate_reads` batches row by row.
#[derive(Debug)]
pub struct PlateReadsBuilder {
    camera_id: UInt32Builder,
    event_time: TimestampMillisecondBuilder,
    event_id: UInt64Builder,
    plate_raw: StringBuilder,
    plate: StringBuilder,
    confidence: Float32Builder,
}

impl Default for PlateReadsBuilder {
    fn default() -> Self {
        Self {
            camera_id: UInt32Builder::new(),
            event_time: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            event_id: UInt64Builder::new(),
            plate_raw: StringBuilder::new(),
            plate: StringBuilder::new(),
            confidence: Float32Builder::new(),
        }
    }
}

impl PlateReadsBuilder {
    /// Appends one plate read; `plate` is the normalized form when the text parsed.
    pub fn push(
        &mut self,
        camera_id: u32,
        event_time: i64,
        event_id: EventId,
        plate_raw: &str,
        plate: Option<&str>,
        confidence: f32,
    ) {
        self.camera_id.append_value(camera_id);
        self.event_time.append_value(event_time);
        self.event_id.append_value(event_id.0);
        self.plate_raw.append_value(plate_raw);
        self.plate.append_option(plate);
        self.confidence.append_value(confidence);
    }

    /// Rows pending.
    pub fn len(&self) -> usize {
        self.camera_id.len()
    }

    /// True when no row is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns the pending rows as a batch and resets the builder.
    pub fn finish(&mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.camera_id.finish()),
            Arc::new(self.event_time.finish()),
            Arc::new(self.event_id.finish()),
            Arc::new(self.plate_raw.finish()),
            Arc::new(self.plate.finish()),
            Arc::new(self.confidence.finish()),
        ];
        RecordBatch::try_new(StreamKind::PlateReads.schema(), columns)
            .expect("PlateReadsBuilder columns match the plate_reads schema")
    }
}

/// A reusable builder of one stream's rows, which the ingest side fills per worker and
/// finishes once per tick (so a frame's rows are copied once, not built into a batch of their
/// own and then concatenated).
pub trait RowBuilder: Default + std::fmt::Debug {
    /// The stream the rows belong to.
    const STREAM: StreamKind;
    /// Rows pending.
    fn rows(&self) -> usize;
    /// The pending rows as a batch; resets the builder.
    fn take_batch(&mut self) -> RecordBatch;
}

impl RowBuilder for DetectionsBuilder {
    const STREAM: StreamKind = StreamKind::Detections;
    fn rows(&self) -> usize {
        self.len()
    }
    fn take_batch(&mut self) -> RecordBatch {
        self.finish()
    }
}

impl RowBuilder for PlateReadsBuilder {
    const STREAM: StreamKind = StreamKind::PlateReads;
    fn rows(&self) -> usize {
        self.len()
    }
    fn take_batch(&mut self) -> RecordBatch {
        self.finish()
    }
}

/// Reads the `event_time` column (milliseconds) of any event batch.
pub fn event_times(batch: &RecordBatch) -> Result<&[i64]> {
    use arrow::array::{Array, TimestampMillisecondArray};
    let col = batch
        .column_by_name("event_time")
        .and_then(|c| c.as_any().downcast_ref::<TimestampMillisecondArray>())
        .ok_or_else(|| EngineError::Internal("batch without a millisecond event_time".into()))?;
    debug_assert_eq!(col.null_count(), 0);
    Ok(col.values())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_id_round_trips() {
        for (c, f, i) in [(0, 0, 0), (1, 2, 3), (EventId::MAX_CAMERA, u32::MAX as u64, 4095)] {
            assert_eq!(EventId::pack(c, f, i).unwrap().unpack(), (c, f, i));
        }
        assert!(EventId::pack(EventId::MAX_CAMERA + 1, 0, 0).is_err());
        assert!(EventId::pack(0, 1 << 32, 0).is_err());
        assert!(EventId::pack(0, 0, 4096).is_err());
    }

    #[test]
    fn every_stream_has_the_key_columns() {
        for kind in StreamKind::ALL {
            let schema = kind.schema();
            for key in ["camera_id", "event_time", "event_id"] {
                assert!(schema.field_with_name(key).is_ok(), "{} lacks {key}", kind.name());
            }
            assert_eq!(StreamKind::from_name(kind.name()), Some(kind));
        }
    }

    #[test]
    fn builder_makes_a_batch_of_the_schema() {
        let mut b = DetectionsBuilder::default();
        let d = Detection {
            class: "person",
            score: 0.9,
            bbox: [1.0, 2.0, 3.0, 4.0],
            ground: [5.0, 6.0],
            zone_id: None,
        };
        b.push(7, 1_000, EventId::pack(7, 1, 0).unwrap(), &d);
        let batch = b.finish();
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(event_times(&batch).unwrap(), &[1_000]);
        assert!(b.is_empty());
    }
}

//! Detections: the `detections` stream (objects a detector found, one row per object and
//! frame), the event ids of camera rows, and the `late_events` stream.
//!
//! Every camera row starts with the same key columns: `camera_id`, `event_time` (capture time,
//! milliseconds since the Unix epoch, UTC) and `event_id`. Camera rows (detections, plate reads,
//! tracks) pack their `event_id` with [`EventId`]: the run's epoch (12 bits, see
//! [`vigil_engine::ids`]), the camera (14 bits), the frame (28 bits) and the object's index in
//! the frame (10 bits). So ids are unique across cameras, frames and runs into one output
//! directory. A camera's frame numbers wrap after 2^28 frames (310 days at 10 fps), longer than
//! the longest retention (90 days), so no two rows kept at once share an id. A frame with more
//! than 1,024 objects is refused (and counted for its camera) rather than given ids that clash.

use vigil_engine::ids::{BODY_BITS, Epoch};
use vigil_engine::stream::{Str, Timestamp};

use crate::error::{OperatorError, Result};

vigil_engine::stream! {
    /// An object a detector found in a frame (or a camera reported itself, over ONVIF).
    pub struct Detections {
        name: "detections",
        class: Personal,
        keys: [camera_id, event_time, event_id],
        personal: [x, y, w, h, ground_x, ground_y],
        row: Detection,
        builder: DetectionRows,
        reader: DetectionCols,
        columns: {
            /// The camera.
            camera_id: u32,
            /// Capture time of the frame.
            event_time: Timestamp,
            /// See [`EventId`].
            event_id: u64,
            /// Object class (`person`, `car`, ...).
            class: Str,
            /// Detector confidence in `[0, 1]`.
            score: f32,
            /// Box in image pixels: top-left corner, width, height.
            x: f32,
            /// Box top, pixels.
            y: f32,
            /// Box width, pixels.
            w: f32,
            /// Box height, pixels.
            h: f32,
            /// Foot point on the ground, metres in the city frame (NaN: camera not calibrated).
            ground_x: f32,
            /// Foot point on the ground, metres.
            ground_y: f32,
            /// The zone containing the foot point, if any.
            zone_id: Option<u32>,
        }
    }
}

vigil_engine::stream! {
    /// A camera row that arrived behind the watermark: counted for its camera and kept here,
    /// never dropped silently.
    pub struct LateEvents {
        name: "late_events",
        class: Record,
        keys: [camera_id, event_time, event_id],
        personal: [],
        row: LateEvent,
        builder: LateEventRows,
        reader: LateEventCols,
        columns: {
            /// The camera.
            camera_id: u32,
            /// The row's own event time.
            event_time: Timestamp,
            /// The row's event id.
            event_id: u64,
            /// The stream the row belonged to.
            stream: Str,
            /// The watermark it was behind.
            watermark: Timestamp,
        }
    }
}

impl<'a> Detection<'a> {
    /// The row of a box `[x, y, w, h]` (pixels) of `class` found with `score` in the frame
    /// `(camera_id, event_time, event_id)`, whose foot point lies at `ground` (metres; NaN for an
    /// uncalibrated camera) in zone `zone_id`.
    pub fn boxed(
        (camera_id, event_time, event_id): (u32, i64, u64),
        class: &'a str,
        score: f32,
        bbox: [f32; 4],
        (ground, zone_id): ([f32; 2], Option<u32>),
    ) -> Self {
        let [x, y, w, h] = bbox;
        Detection {
            camera_id,
            event_time,
            event_id,
            class,
            score,
            x,
            y,
            w,
            h,
            ground_x: ground[0],
            ground_y: ground[1],
            zone_id,
        }
    }
}

/// A camera row's id: epoch, camera, frame and index packed into 64 bits; see the module
/// documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(pub u64);

impl EventId {
    /// Bits of the camera.
    pub const CAMERA_BITS: u32 = 14;
    /// Bits of the frame number (which wraps).
    pub const FRAME_BITS: u32 = BODY_BITS - Self::CAMERA_BITS - Self::INDEX_BITS;
    /// Bits of the index within the frame.
    pub const INDEX_BITS: u32 = 10;
    /// Largest camera id that fits.
    pub const MAX_CAMERA: u32 = (1 << Self::CAMERA_BITS) - 1;
    /// Largest index within a frame that fits (so a frame holds at most 1,024 objects).
    pub const MAX_INDEX: u32 = (1 << Self::INDEX_BITS) - 1;

    /// Packs an id; a camera or an index that does not fit is an error naming the fix.
    pub fn pack(epoch: Epoch, camera: u32, frame: u64, index: u32) -> Result<EventId> {
        if camera > Self::MAX_CAMERA {
            return Err(OperatorError::user(
                format!("camera id {camera} is above {}", Self::MAX_CAMERA),
                format!("give cameras ids from 0 to {}", Self::MAX_CAMERA),
            ));
        }
        if index > Self::MAX_INDEX {
            return Err(OperatorError::user(
                format!("camera {camera}: a frame with more than {} objects", Self::MAX_INDEX + 1),
                "raise the detector's score threshold or lower its maximum detections per frame",
            ));
        }
        let frame = frame & ((1 << Self::FRAME_BITS) - 1);
        let body = (u64::from(camera) << (Self::FRAME_BITS + Self::INDEX_BITS))
            | (frame << Self::INDEX_BITS)
            | u64::from(index);
        Ok(EventId(epoch.id(body)))
    }

    /// The epoch, camera, frame (modulo 2^28) and index this id was packed from.
    pub fn unpack(self) -> (u16, u32, u64, u32) {
        let body = self.0 & ((1 << BODY_BITS) - 1);
        (
            (self.0 >> BODY_BITS) as u16,
            (body >> (Self::FRAME_BITS + Self::INDEX_BITS)) as u32,
            (body >> Self::INDEX_BITS) & ((1 << Self::FRAME_BITS) - 1),
            (body & u64::from(Self::MAX_INDEX)) as u32,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_round_trip_and_refuse_what_does_not_fit() {
        let e = Epoch::new(7).unwrap();
        for (c, f, i) in [(0, 0, 0), (1, 2, 3), (EventId::MAX_CAMERA, (1 << 28) - 1, EventId::MAX_INDEX)] {
            assert_eq!(EventId::pack(e, c, f, i).unwrap().unpack(), (7, c, f, i));
        }
        assert_eq!(EventId::FRAME_BITS, 28);
        assert!(EventId::pack(e, EventId::MAX_CAMERA + 1, 0, 0).is_err());
        let err = EventId::pack(e, 3, 0, 1024).unwrap_err().to_string();
        assert!(err.contains("camera 3: a frame with more than 1024 objects"), "{err}");
        // Frames wrap; epochs keep runs apart.
        assert_eq!(EventId::pack(e, 1, 1 << 28, 0).unwrap(), EventId::pack(e, 1, 0, 0).unwrap());
        assert_ne!(
            EventId::pack(Epoch::new(8).unwrap(), 1, 0, 0).unwrap(),
            EventId::pack(e, 1, 0, 0).unwrap()
        );
    }
}

//! vigil's dataflow operators, and the definitions of the streams they produce.
//!
//! Each operator is an extension trait on the typed stream it reads, and returns the typed
//! streams it derives; each stream is defined (with [`vigil_engine::stream!`]) next to its
//! operator:
//! - [`detection`]: `detections` (what detectors produce), camera event ids, `late_events`;
//! - [`tracks::TrackObjects`]: `detections` → `tracks`, a ByteTrack-class [`tracker::Tracker`]
//!   per camera, fed in capture order once the watermark passes;
//! - [`density::CrowdDensity`]: `detections` → `zone_density`, `density_grid` and density
//!   alerts, fused across cameras, over a sliding window, with hysteresis;
//! - [`flows::TrackFlows`]: `tracks` → `line_crossings` and `zone_visits`;
//! - [`watchlist::WatchlistJoin`]: `plate_reads` against the `watchlist` table, exact and fuzzy
//!   ([`plate_match`]) → `hits`, verified by people through `hit_decisions` ([`hits`]), and alerts;
//! - [`alerts`]: the `alerts` stream and the bus that fans alerts out;
//! - [`plate::normalize`], [`zones::ZoneIndex`] and [`homography::Homography`] run at ingest.

pub mod alerts;
pub mod density;
pub mod detection;
pub mod error;
pub mod flows;
pub mod hits;
pub mod homography;
pub mod plate;
pub mod plate_match;
pub mod tracker;
pub mod tracks;
pub mod watchlist;
pub mod zones;

pub use error::{OperatorError, Result};

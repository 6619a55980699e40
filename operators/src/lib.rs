//! vigil's dataflow operators: zones, crowd density, plate normalization and the watchlist join.
//!
//! Each operator is an extension trait on the engine's batch stream:
//! - [`density::ZoneDensity`]: persons per zone, fused across cameras, over a sliding window,
//!   with hysteresis alerts and a 1 m density grid;
//! - [`flows::TrackFlows`]: gate-line crossings and zone visits (dwell) from `tracks`;
//! - [`watchlist::WatchlistJoin`]: plate reads against a runtime-updatable watchlist;
//! - [`plate::normalize`] and [`zones::ZoneIndex`] run at ingest, per row.
//!
//! - [`tracks::TrackObjects`]: `tracks` from `detections`, a [`tracker::Tracker`] (ByteTrack-class)
//!   per camera, fed in capture order once the watermark passes;

pub mod density;
pub mod flows;
pub mod homography;
pub mod plate;
pub mod tracker;
pub mod tracks;
pub mod watchlist;
pub mod zones;

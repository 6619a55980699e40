//! What the SQL tests share: the catalog of the operators' streams and tables rules compile
//! against (the city's, less the camera health the pipelines define).

#![allow(dead_code)] // each test crate uses a part

use vigil_engine::catalog::Catalog;
use vigil_engine::stream::StreamDef;
use vigil_operators::{alerts, density, detection, flows, plate, tracks, watchlist, zones};

/// The streams and tables of the operators crate.
pub fn streams() -> Catalog {
    let mut c = Catalog::new([
        detection::Detections::info(),
        detection::LateEvents::info(),
        plate::PlateReads::info(),
        tracks::Tracks::info(),
        density::ZoneDensity::info(),
        density::DensityGrid::info(),
        flows::LineCrossings::info(),
        flows::ZoneVisits::info(),
        alerts::Alerts::info(),
        zones::Zones::info(),
        watchlist::Watchlist::info(),
    ])
    .expect("distinct names");
    c.add_function(&plate::NORMALIZE_PLATE).expect("one function of the name");
    c
}

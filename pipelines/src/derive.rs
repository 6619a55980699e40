//! Derived streams: what the main dataflow computes from what it is fed, once, for every rule.
//!
//! A [`Derivation`] names the streams it produces and adds them to the main dataflow's
//! [`Graph`]. The engine's catalog is the input streams plus what every derivation produces, so
//! a new derived stream is one derivation, given to [`crate::app::run_with`]: its rows go to
//! Parquet, SQL rules and psql `SELECT` read it, and retention applies to it, with no edit
//! anywhere else. [`city`] is the standard set: tracking, flows, crowd density, watchlist hits.
//!
//! ```
//! use std::sync::Arc;
//! use vigil_engine::graph::Graph;
//! use vigil_engine::stream::{Events, StreamDef, StreamInfo};
//! use vigil_operators::tracks::Tracks;
//! use vigil_pipelines::derive::{DeriveContext, Derivation};
//!
//! /// Tracks again, under another name (a stand-in for a real operator).
//! struct Echo;
//!
//! vigil_engine::stream! {
//!     /// Tracks, echoed.
//!     pub struct Echoed {
//!         name: "echoed", class: Personal, keys: [], personal: [],
//!         row: EchoedRow, builder: EchoedRows, reader: EchoedCols,
//!         columns: { event_time: vigil_engine::stream::Timestamp }
//!     }
//! }
//!
//! impl Derivation for Echo {
//!     fn produces(&self) -> Vec<&'static StreamInfo> {
//!         vec![Echoed::info()]
//!     }
//!     fn build(&self, graph: &mut Graph<'_>, _cx: &DeriveContext) {
//!         if let Some(t) = graph.get::<Tracks>() {
//!             graph.add(Events::<Echoed>::new(t.into_inner()));
//!         }
//!     }
//! }
//! let _: Arc<dyn Derivation> = Arc::new(Echo);
//! ```

use std::sync::Arc;

use vigil_engine::error::ErrorSink;
use vigil_engine::graph::Graph;
use vigil_engine::ids::Epoch;
use vigil_engine::stream::{StreamDef, StreamInfo};
use vigil_operators::alerts::Alerts;
use vigil_operators::density::{CrowdDensity, DensityConfig, DensityGrid, ZoneDensity};
use vigil_operators::detection::{Detections, LateEvents};
use vigil_operators::flows::{FlowConfig, LineCrossings, TrackFlows, ZoneVisits};
use vigil_operators::hits::{HitConfig, HitDecisions, Hits};
use vigil_operators::plate::PlateReads;
use vigil_operators::tracker::TrackerConfigs;
use vigil_operators::tracks::{Locate, TrackObjects, Tracks};
use vigil_operators::watchlist::{ErasedReads, Watchlist, WatchlistJoin};
use vigil_operators::zones::Zones;

use crate::camera::CameraHealth;
use crate::settings::Settings;

/// What derivations are given besides the graph.
#[derive(Clone, Debug)]
pub struct DeriveContext {
    /// The run's epoch, for row ids.
    pub epoch: Epoch,
    /// Where operators report the errors they survive.
    pub errors: ErrorSink,
}

/// Derives streams in the main dataflow; see the module documentation.
pub trait Derivation: Send + Sync {
    /// The streams it adds.
    fn produces(&self) -> Vec<&'static StreamInfo>;
    /// Adds them to `graph` (one worker's main dataflow).
    fn build(&self, graph: &mut Graph<'_>, cx: &DeriveContext);
}

/// The streams and tables the city feeds the engine: detections, plate reads, camera health,
/// late rows, and the zones and watchlist tables.
pub fn inputs() -> Vec<&'static StreamInfo> {
    vec![
        Detections::info(),
        PlateReads::info(),
        CameraHealth::info(),
        LateEvents::info(),
        Zones::info(),
        Watchlist::info(),
        HitDecisions::info(),
        ErasedReads::info(),
    ]
}

/// Tracks from detections, one tracker per camera.
pub struct Tracking {
    /// Tracker settings, per camera.
    pub config: TrackerConfigs,
    /// Cameras' calibrations (foot points on the ground).
    pub locate: Locate,
}

impl Derivation for Tracking {
    fn produces(&self) -> Vec<&'static StreamInfo> {
        vec![Tracks::info()]
    }
    fn build(&self, graph: &mut Graph<'_>, cx: &DeriveContext) {
        let Some(detections) = graph.get::<Detections>() else { return };
        graph.add(detections.track_objects(self.config.clone(), Arc::clone(&self.locate), &cx.errors));
    }
}

/// Gate-line crossings and zone visits from tracks (after [`Tracking`]).
pub struct Flows {
    /// Lines and zones.
    pub config: FlowConfig,
}

impl Derivation for Flows {
    fn produces(&self) -> Vec<&'static StreamInfo> {
        vec![LineCrossings::info(), ZoneVisits::info()]
    }
    fn build(&self, graph: &mut Graph<'_>, cx: &DeriveContext) {
        let Some(tracks) = graph.get::<Tracks>() else { return };
        let config = FlowConfig { epoch: cx.epoch, ..self.config.clone() };
        let flows = tracks.track_flows(config, &cx.errors);
        graph.add(flows.crossings);
        graph.add(flows.visits);
    }
}

/// Zone densities, the density grid and density alerts from detections.
pub struct Density {
    /// Zones and timing.
    pub config: DensityConfig,
}

impl Derivation for Density {
    fn produces(&self) -> Vec<&'static StreamInfo> {
        vec![ZoneDensity::info(), DensityGrid::info(), Alerts::info()]
    }
    fn build(&self, graph: &mut Graph<'_>, cx: &DeriveContext) {
        let Some(detections) = graph.get::<Detections>() else { return };
        let config = DensityConfig { epoch: cx.epoch, ..self.config.clone() };
        let out = detections.zone_density(config, &cx.errors);
        graph.add(out.density);
        graph.add(out.grid);
        graph.add(out.alerts);
    }
}

/// Watchlist hits from plate reads, the watchlist and people's decisions; alerts for new and
/// confirmed hits.
pub struct WatchlistHits {
    /// Matching and verification.
    pub config: HitConfig,
}

impl Derivation for WatchlistHits {
    fn produces(&self) -> Vec<&'static StreamInfo> {
        vec![Hits::info(), Alerts::info()]
    }
    fn build(&self, graph: &mut Graph<'_>, cx: &DeriveContext) {
        let (Some(reads), Some(watchlist), Some(decisions)) =
            (graph.get::<PlateReads>(), graph.get::<Watchlist>(), graph.get::<HitDecisions>())
        else {
            return;
        };
        let erased = graph.get::<ErasedReads>();
        let out =
            reads.watchlist_hits(watchlist, decisions, erased, self.config.clone(), cx.epoch, &cx.errors);
        graph.add(out.hits);
        graph.add(out.alerts);
    }
}

/// The city's derivations: tracking, flows, crowd density and watchlist hits; `locate` maps a
/// camera's boxes to the ground.
pub fn city(settings: &Settings, locate: Locate) -> Vec<Arc<dyn Derivation>> {
    let e = &settings.engine;
    let density = DensityConfig {
        window_ms: e.density_window_ms,
        step_ms: e.density_step_ms,
        sample_ms: e.density_sample_ms,
        fusion_radius_m: e.fusion_radius_m,
        hold_ms: e.density_hold_ms,
        ..DensityConfig::new(settings.zones.clone())
    };
    vec![
        Arc::new(Tracking { config: settings.tracker.clone(), locate }),
        Arc::new(Flows { config: FlowConfig::new(settings.lines.clone(), settings.zones.clone()) }),
        Arc::new(Density { config: density }),
        Arc::new(WatchlistHits { config: settings.hits.clone() }),
    ]
}

/// The catalog of a pipeline: its inputs and what its derivations produce (and the alerts
/// stream, which rules write to).
pub fn catalog(derivations: &[Arc<dyn Derivation>]) -> vigil_engine::Result<vigil_engine::catalog::Catalog> {
    let mut c = vigil_engine::catalog::Catalog::new(inputs())?;
    c.add(Alerts::info())?;
    // Plate reads are an input: their readers' function comes with them.
    c.add_function(&vigil_operators::plate::NORMALIZE_PLATE)?;
    // Analysts change the watchlist from psql, through its definition's checks.
    c.add_writes(&vigil_operators::watchlist::WRITES)?;
    // People record their decisions on hits from psql.
    c.add_writes(&vigil_operators::hits::WRITES)?;
    for d in derivations {
        for info in d.produces() {
            c.add(info)?;
        }
    }
    Ok(c)
}

/// The catalog of the standard city (what `vigil replay` and tools read and compile against).
pub fn city_catalog() -> vigil_engine::Result<vigil_engine::catalog::Catalog> {
    let locate: Locate = Arc::new(|_, _| None);
    catalog(&city(&Settings::embedded(), locate))
}

//! vigil's pipelines: configuration, the city simulator, camera ingestion, and the wiring
//! behind the `vigil` binary.
//!
//! Entry points: [`config::Config`] (the TOML file, strict) checked once into
//! [`settings::Settings`]; [`derive`] (the streams the main dataflow derives, and the catalog
//! they make); [`app::run`] (sources → ingest → dataflow → Parquet, alerts and rules, until
//! stopped); [`sim::CameraSim`] (the deterministic city); [`live`] and [`camera`] (RTSP
//! cameras), decoding on [`decode::DecodePool`], plates read by [`plates`]; [`replay`] (rules
//! over recorded events).

pub mod app;
pub mod camera;
pub mod config;
pub mod decode;
pub mod derive;
pub mod detect;
pub mod export;
pub mod http;
pub mod live;
pub mod metrics;
pub mod mot;
pub mod onvif;
pub mod plates;
pub mod render;
pub mod replay;
pub mod settings;
pub mod sim;
pub mod stage;

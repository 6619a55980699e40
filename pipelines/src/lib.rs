//! vigil's pipelines: the city simulator, configuration, and the wiring behind the `vigil`
//! binary.
//!
//! Entry points: [`config::Config`] (TOML, strict), [`sim::CameraSim`] (the deterministic
//! city), and [`app::run`] (simulator → ingest → dataflow → Parquet and alerts). Camera
//! ingestion over RTSP and the HTTP server arrive in later issues.

pub mod app;
pub mod camera;
pub mod config;
pub mod detect;
pub mod live;
pub mod mot;
pub mod onvif;
pub mod render;
pub mod replay;
pub mod sim;

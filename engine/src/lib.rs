//! vigil's engine: Arrow event schemas, the timely/differential runtime, event time and
//! watermarks, and the Parquet and alert sinks.
//!
//! The engine knows nothing of cameras or SQL text. Entry points:
//! - [`schema`]: every stream's Arrow schema ([`schema::StreamKind`]) and row builders;
//! - [`runtime::Runtime`]: timely workers whose input carries [`runtime::EventBatch`]es;
//! - [`ingest::Ingest`]: watermarks, late events, and per-tick batching in front of the runtime;
//! - [`bridge`]: from batches to differential collections ([`bridge::ToUpdates`]) and back
//!   ([`bridge::Finalize`]);
//! - [`waiting::Waiting`]: items held until the watermark passes them, for operators that need
//!   their input complete up to a time;
//! - [`parquet_sink::WriteParquet`] and [`alerts::AlertBus`]: where results go.

pub mod alerts;
pub mod bridge;
pub mod error;
pub mod geometry;
pub mod ingest;
pub mod parquet_sink;
pub mod runtime;
pub mod schema;
pub mod time;
pub mod waiting;

pub use error::{EngineError, Result};

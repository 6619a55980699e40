//! vigil's engine: stream definitions and their catalog, the timely runtime, event time and
//! watermarks, streams shared between dataflows, Parquet sinks and retention.
//!
//! The engine knows nothing of cameras, plates or SQL. Entry points:
//! - [`stream`]: one definition per stream ([`stream!`]): schema, row builder, typed reader,
//!   keys, personal columns, retention class; typed timely streams [`stream::Events`];
//! - [`catalog::Catalog`]: the streams a running engine knows, by name;
//! - [`runtime::Runtime`]: timely workers whose main dataflow is fed [`runtime::Input`]s, and
//!   dataflows added while it runs;
//! - [`graph::Graph`]: a dataflow's streams by name, split once from the input or imported;
//! - [`share`]: streams computed once and shared with every added dataflow, and the
//!   [`share::Retained`] batches kept in memory;
//! - [`ingest::Ingest`]: watermarks, late events, and per-tick batching in front of the runtime;
//! - [`bridge`]: from batches to differential collections ([`bridge::ToUpdates`]) and back
//!   ([`bridge::Finalize`]);
//! - [`waiting::Waiting`]: items held until the watermark passes them;
//! - [`parquet_sink::WriteParquet`], [`lake`] and [`retention`]: files, their commits and
//!   recovery, and their deletion on time;
//! - [`audit::AuditLog`]: the append-only, hash-chained audit log, and [`audit::verify`];
//! - [`ids::Epoch`]: ids unique across runs and restarts;
//! - [`text_file::read`]: text inputs read with a size limit;
//! - [`tally::Tally`]: an event that comes in storms, logged at most once a period with its count.

pub mod audit;
pub mod bridge;
pub mod catalog;
pub mod erase;
pub mod error;
pub mod geometry;
pub mod graph;
pub mod ids;
pub mod ingest;
pub mod lake;
pub mod parquet_sink;
pub mod retention;
pub mod runtime;
pub mod share;
pub mod stream;
pub mod tally;
pub mod text_file;
pub mod time;
pub mod waiting;

pub use error::{EngineError, Result};

// The stream macro names arrow through the engine, so a crate defining a stream needs no
// arrow dependency of its own.
#[doc(hidden)]
pub use arrow;

//! vigil's SQL front end: analysts' rules planned by DataFusion and lowered onto the dataflow.
//!
//! Entry points: [`rule::compile`] / [`rule::compile_file`] turn SQL into [`rule::Rule`]s;
//! [`operator::RunRules`] runs them continuously over the engine's batch stream, emitting each
//! output row as an alert. The catalog of streams is [`catalog::Catalog`].

pub mod capture;
pub mod catalog;
pub mod delta;
pub mod error;
pub mod operator;
pub mod plan;
pub mod registry;
pub mod render;
pub mod rule;
pub mod server;
pub mod window;

pub use error::{Position, SqlError};

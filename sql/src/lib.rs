//! vigil's SQL front end: analysts' rules planned by DataFusion and lowered onto the dataflow.
//!
//! Entry points: [`rule::compile`] / [`rule::compile_file`] turn SQL into [`rule::Rule`]s against
//! the engine's streams ([`catalog::Catalog`]); [`operator::render_rule`] renders one over a
//! dataflow's streams ([`render`], one file per operator); [`registry::Registry`] runs every rule
//! in a dataflow of its own, with durable outputs; [`server`] serves psql.

pub mod admission;
pub mod audit_table;
pub mod capture;
pub mod catalog;
pub mod delta;
pub mod error;
pub mod functions;
pub mod limits;
pub mod operator;
pub mod pg_catalog;
pub mod plan;
pub mod registry;
pub mod render;
pub mod roles;
pub mod rule;
pub mod server;
pub mod to_char;
pub mod window;

pub use error::{Kind, Position, SqlError};

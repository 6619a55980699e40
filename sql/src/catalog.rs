//! The catalog analysts' SQL is planned against: the engine's live streams as tables, plus
//! DataFusion's built-in scalar functions.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result as DfResult, TableReference, plan_err};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::logical_plan::builder::LogicalTableSource;
use datafusion::logical_expr::{AggregateUDF, HigherOrderUDF, ScalarUDF, TableSource, WindowUDF};
use datafusion::sql::planner::ContextProvider;
use vigil_engine::schema::StreamKind;

/// Streams a rule may read from.
pub const STREAMS: [StreamKind; 4] =
    [StreamKind::Detections, StreamKind::Tracks, StreamKind::PlateReads, StreamKind::ZoneDensity];

/// Implements DataFusion's `ContextProvider` over vigil's streams.
pub struct Catalog {
    tables: HashMap<String, Arc<dyn TableSource>>,
    scalars: HashMap<String, Arc<ScalarUDF>>,
    aggregates: HashMap<String, Arc<AggregateUDF>>,
    options: ConfigOptions,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").field("tables", &self.table_names()).finish_non_exhaustive()
    }
}

impl Default for Catalog {
    fn default() -> Self {
        let tables = STREAMS
            .iter()
            .map(|s| {
                (s.name().to_owned(), Arc::new(LogicalTableSource::new(s.schema())) as Arc<dyn TableSource>)
            })
            .collect();
        let scalars = datafusion::functions::all_default_functions()
            .into_iter()
            .map(|f| (f.name().to_owned(), f))
            .collect();
        let aggregates = datafusion::functions_aggregate::all_default_aggregate_functions()
            .into_iter()
            .map(|f| (f.name().to_owned(), f))
            .collect();
        let mut options = ConfigOptions::default();
        options.sql_parser.collect_spans = true;
        Self { tables, scalars, aggregates, options }
    }
}

impl Catalog {
    /// Names of the tables, sorted, for error messages.
    pub fn table_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.tables.keys().map(String::as_str).collect();
        v.sort();
        v
    }

    /// Whether `name` is an aggregate function.
    pub fn is_aggregate(&self, name: &str) -> bool {
        self.aggregates.contains_key(&name.to_ascii_lowercase())
    }
}

impl ContextProvider for Catalog {
    fn get_table_source(&self, name: TableReference) -> DfResult<Arc<dyn TableSource>> {
        match self.tables.get(name.table()) {
            Some(t) if name.schema().is_none() => Ok(Arc::clone(t)),
            _ => plan_err!("table '{name}' not found"),
        }
    }

    fn get_function_meta(&self, name: &str) -> Option<Arc<ScalarUDF>> {
        self.scalars.get(name).cloned()
    }

    fn get_higher_order_meta(&self, _name: &str) -> Option<Arc<HigherOrderUDF>> {
        None
    }

    fn get_aggregate_meta(&self, name: &str) -> Option<Arc<AggregateUDF>> {
        self.aggregates.get(name).cloned()
    }

    fn get_window_meta(&self, _name: &str) -> Option<Arc<WindowUDF>> {
        None
    }

    fn get_variable_type(&self, _variable_names: &[String]) -> Option<DataType> {
        None
    }

    fn get_variable_field(&self, _variable_names: &[String]) -> Option<FieldRef> {
        None::<Arc<Field>>
    }

    fn options(&self) -> &ConfigOptions {
        &self.options
    }

    fn udf_names(&self) -> Vec<String> {
        self.scalars.keys().cloned().collect()
    }

    fn udaf_names(&self) -> Vec<String> {
        self.aggregates.keys().cloned().collect()
    }

    fn udwf_names(&self) -> Vec<String> {
        Vec::new()
    }

    fn higher_order_function_names(&self) -> Vec<String> {
        Vec::new()
    }
}

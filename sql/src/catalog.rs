//! The catalog analysts' SQL is planned against: the engine's streams and reference tables (its
//! [`vigil_engine::catalog::Catalog`]) as tables, DataFusion's built-in scalar and aggregate
//! functions, the window functions `tumble`, `hop` and `session`, and the text functions the
//! streams offer (`normalize_plate`).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef, SchemaRef};
use datafusion::common::{Result as DfResult, TableReference, plan_err};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::logical_plan::builder::LogicalTableSource;
use datafusion::logical_expr::planner::ExprPlanner;
use datafusion::logical_expr::{AggregateUDF, HigherOrderUDF, ScalarUDF, TableSource, WindowUDF};
use datafusion::sql::planner::ContextProvider;
use vigil_engine::catalog::Catalog as Streams;

/// Implements DataFusion's `ContextProvider` over vigil's streams and reference tables.
pub struct Catalog {
    tables: HashMap<String, Arc<dyn TableSource>>,
    scalars: HashMap<String, Arc<ScalarUDF>>,
    aggregates: HashMap<String, Arc<AggregateUDF>>,
    options: ConfigOptions,
    planners: Vec<Arc<dyn ExprPlanner>>,
    /// Set when planning asked for a table that does not exist (the error's kind).
    missing: std::cell::Cell<bool>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").field("tables", &self.table_names()).finish_non_exhaustive()
    }
}

impl Catalog {
    /// The catalog of `streams` (every stream and reference table the engine has).
    pub fn new(streams: &Streams) -> Self {
        let source = |schema: SchemaRef| Arc::new(LogicalTableSource::new(schema)) as Arc<dyn TableSource>;
        let tables =
            streams.all().map(|info| (info.name.to_owned(), source(Arc::clone(&info.schema)))).collect();
        let scalars = by_name(
            datafusion::functions::all_default_functions()
                .into_iter()
                .chain(crate::window::window_udfs())
                .chain(crate::functions::text_udfs(streams))
                .chain([
                    crate::functions::date_part(),
                    crate::functions::age(),
                    crate::functions::pg_array(),
                ]),
            |f| (f.name(), f.aliases()),
        );
        let aggregates = by_name(datafusion::functions_aggregate::all_default_aggregate_functions(), |f| {
            (f.name(), f.aliases())
        });
        let mut options = ConfigOptions::default();
        options.sql_parser.collect_spans = true;
        // What DataFusion's SessionState registers: `count(*)`, `extract`, `x['field']`, ...
        let planners: Vec<Arc<dyn ExprPlanner>> = vec![
            Arc::new(datafusion::functions::core::planner::CoreFunctionPlanner::default()),
            Arc::new(crate::functions::Extract),
            Arc::new(datafusion::functions::unicode::planner::UnicodeFunctionPlanner),
            Arc::new(datafusion::functions_aggregate::planner::AggregateFunctionPlanner),
        ];
        Self { tables, scalars, aggregates, options, planners, missing: std::cell::Cell::new(false) }
    }
}

/// Each function under its name and under every alias (`length` is `character_length`).
fn by_name<F>(
    functions: impl IntoIterator<Item = Arc<F>>,
    names: impl Fn(&F) -> (&str, &[String]),
) -> HashMap<String, Arc<F>> {
    let mut map = HashMap::new();
    for f in functions {
        let (name, aliases) = names(&f);
        for n in std::iter::once(name.to_owned()).chain(aliases.iter().cloned()) {
            map.insert(n, Arc::clone(&f));
        }
    }
    map
}

impl Catalog {
    /// True when planning asked for a table that does not exist.
    pub fn missed_a_table(&self) -> bool {
        self.missing.get()
    }

    /// Names of the tables, sorted, for error messages.
    pub fn table_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.tables.keys().map(String::as_str).collect();
        v.sort();
        v
    }
}

impl ContextProvider for Catalog {
    fn get_table_source(&self, name: TableReference) -> DfResult<Arc<dyn TableSource>> {
        match self.tables.get(name.table()) {
            Some(t) if name.schema().is_none() => Ok(Arc::clone(t)),
            _ => {
                self.missing.set(true);
                plan_err!("table '{name}' not found")
            }
        }
    }

    fn get_expr_planners(&self) -> &[Arc<dyn ExprPlanner>] {
        &self.planners
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

    fn get_window_meta(&self, name: &str) -> Option<Arc<WindowUDF>> {
        // Known so that `rank() OVER (...)` plans and is then refused with a clear reason.
        datafusion::functions_window::all_default_window_functions().into_iter().find(|f| f.name() == name)
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

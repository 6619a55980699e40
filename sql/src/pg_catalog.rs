//! PostgreSQL's catalog (`pg_catalog`, `information_schema`) for psql's `\d` commands and the
//! browsers of GUI tools, listing the tables a role may read.
//!
//! The catalog tables, PostgreSQL's functions over them and the rewrites psql's queries need
//! (`OPERATOR(pg_catalog.~)`, `COLLATE`, `'name'::regclass`) are datafusion-pg-catalog's, the
//! catalog layer of the pgwire authors' DataFusion server. vigil gives it what a role may read:
//! the streams, tables and rules `SHOW STREAMS` lists, and only their schemas.
//!
//! One catalog is kept per role for the life of the process, so that a table keeps its `oid`
//! from one query to the next: psql's `\d name` finds the table's oid in one query and reads its
//! columns by that oid in the next.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use async_trait::async_trait;
use datafusion::arrow::array::{AsArray, BooleanArray, Int16Array, Int32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Int16Type, Int32Type, Int64Type, Schema, SchemaRef};
use datafusion::catalog::SchemaProvider;
use datafusion::catalog::TableFunctionImpl;
use datafusion::catalog::TableProvider;
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_pg_catalog::pg_catalog::catalog_info::CatalogInfo;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::pg_catalog::generate_series_arg_coercion::CoerceIntArgsToBigInt;
use datafusion_pg_catalog::pg_catalog::oid_type_planner::PgOidTypePlanner;
use datafusion_pg_catalog::pg_catalog::{
    PgCatalogSchemaProvider, PgCatalogStaticTables, PgCatalogTable, create_current_database_udf,
    create_pg_table_is_visible, setup_pg_catalog,
};
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use futures::StreamExt;
use pgwire::api::Type;

use crate::SqlError;
use crate::roles::Role;

/// The database psql connects to (`-d vigil`), as the catalog names it.
const DATABASE: &str = "vigil";
/// The schema every stream, table and rule is in.
const SCHEMA: &str = "public";
/// Who owns every table and schema, as the catalog says (`\d`'s "Owner").
const OWNER: &str = "vigil";
/// The catalog DataFusion's session plans in (its default).
const SESSION_CATALOG: &str = "datafusion";

/// Whether `sql` reads PostgreSQL's catalog: names a `pg_…` table or function,
/// `information_schema`, or one of the functions tools ask first (`current_database()`,
/// `current_user`, `current_setting('search_path')`, `has_table_privilege(…)`).
/// Such a query is parsed as PostgreSQL's SQL and planned with the catalog installed.
pub(crate) fn reads_catalog(sql: &str) -> bool {
    sql.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).any(|w| {
        let w = w.to_ascii_lowercase();
        w.starts_with("pg_")
            || (w.starts_with("has_") && w.ends_with("_privilege"))
            || matches!(
                w.as_str(),
                "information_schema"
                    | "current_database"
                    | "current_schema"
                    | "current_schemas"
                    | "version"
                    | "current_user"
                    | "session_user"
                    | "user"
                    | "current_setting"
                    // PostgreSQL's oid types (`'detections'::regclass`), which the catalog plans.
                    | "regclass"
                    | "regtype"
                    | "regproc"
                    | "regprocedure"
                    | "regnamespace"
                    | "regrole"
                    | "oid"
            )
    })
}

/// What a role may read, by name: the tables its catalog lists.
#[derive(Clone, Debug, Default)]
struct Listing(Arc<RwLock<Vec<(String, SchemaRef)>>>);

impl Listing {
    fn schema(&self, catalog: &str, schema: &str, table: &str) -> Option<SchemaRef> {
        if catalog != DATABASE || schema != SCHEMA {
            return None;
        }
        let tables = self.0.read().expect("listing");
        tables.iter().find(|(name, _)| name == table).map(|(_, s)| Arc::clone(s))
    }
}

#[async_trait]
impl CatalogInfo for Listing {
    async fn catalog_names(&self) -> Result<Vec<String>, DataFusionError> {
        Ok(vec![DATABASE.to_owned()])
    }

    async fn schema_names(&self, catalog: &str) -> Result<Option<Vec<String>>, DataFusionError> {
        // PostgreSQL's own schemas are in every database: psql's tab completion leaves out
        // `pg_catalog`'s tables by its oid, and finds nothing when it has none.
        Ok((catalog == DATABASE)
            .then(|| [SCHEMA, "pg_catalog", "information_schema"].map(str::to_owned).to_vec()))
    }

    async fn table_names(&self, catalog: &str, schema: &str) -> Result<Option<Vec<String>>, DataFusionError> {
        let tables = self.0.read().expect("listing");
        Ok((catalog == DATABASE && schema == SCHEMA).then(|| tables.iter().map(|(n, _)| n.clone()).collect()))
    }

    async fn table_schema(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Result<Option<SchemaRef>, DataFusionError> {
        Ok(self.schema(catalog, schema, table))
    }

    async fn table_type(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Result<Option<TableType>, DataFusionError> {
        // Streams, tables and rules' results all read as tables (`\d` shows "table").
        Ok(self.schema(catalog, schema, table).map(|_| TableType::Base))
    }
}

/// Each role's catalog, made at its first catalog query and kept (with its oids).
#[derive(Default)]
pub(crate) struct Catalogs(Mutex<HashMap<Role, Kept>>);

/// A role's listing and the `pg_catalog` made over it.
type Kept = (Listing, Arc<dyn SchemaProvider>);

/// What a role's catalog query reads: its `pg_catalog` (kept, with its oids) and an
/// `information_schema` over the same tables.
#[derive(Clone)]
pub(crate) struct RoleCatalog {
    pg_catalog: Arc<dyn SchemaProvider>,
    information_schema: Arc<dyn SchemaProvider>,
    /// The account asking (`current_user`).
    user: String,
    /// What the role may read, by name (`has_table_privilege`).
    tables: Arc<Vec<String>>,
    /// The asking session's cursors, `pg_cursors`' rows (none if `None`).
    cursors: Option<RecordBatch>,
}

impl RoleCatalog {
    /// The catalog as `user` reads it: `current_user` and `session_user` are `user`.
    pub(crate) fn for_user(mut self, user: &str) -> Self {
        user.clone_into(&mut self.user);
        self
    }

    /// The catalog with `cursors` as `pg_cursors`' rows.
    pub(crate) fn with_cursors(mut self, cursors: Option<RecordBatch>) -> Self {
        self.cursors = cursors;
        self
    }
}

/// `pg_cursors`' columns, as PostgreSQL's view has them.
pub(crate) fn pg_cursors_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    Arc::clone(SCHEMA.get_or_init(|| {
        Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("statement", DataType::Utf8, false),
            Field::new("is_holdable", DataType::Boolean, false),
            Field::new("is_binary", DataType::Boolean, false),
            Field::new("is_scrollable", DataType::Boolean, false),
            Field::new(
                "creation_time",
                DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ]))
    }))
}

/// A role's `pg_catalog` with the asking session's `pg_cursors` (datafusion-pg-catalog has no
/// such table; psycopg asks it before it closes a named cursor it did not declare).
#[derive(Debug)]
struct WithCursors {
    inner: Arc<dyn SchemaProvider>,
    cursors: Arc<dyn TableProvider>,
}

#[async_trait]
impl SchemaProvider for WithCursors {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.inner.table_names();
        names.push("pg_cursors".into());
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        if name.eq_ignore_ascii_case("pg_cursors") {
            return Ok(Some(Arc::clone(&self.cursors)));
        }
        self.inner.table(name).await
    }

    fn table_exist(&self, name: &str) -> bool {
        name.eq_ignore_ascii_case("pg_cursors") || self.inner.table_exist(name)
    }
}

impl Catalogs {
    /// `role`'s catalog, listing `tables` (what the role may read now).
    pub(crate) fn for_role(
        &self,
        role: Role,
        tables: impl IntoIterator<Item = (String, SchemaRef)>,
    ) -> Result<RoleCatalog, SqlError> {
        let mut tables: Vec<(String, SchemaRef)> = tables.into_iter().collect();
        // In a fixed order, so that a new table takes the next oid and the others keep theirs.
        tables.sort_by(|a, b| a.0.cmp(&b.0));
        let mut by_role = self.0.lock().expect("catalogs");
        let (listing, provider) = match by_role.get(&role) {
            Some(c) => c.clone(),
            None => {
                let listing = Listing::default();
                let internal = |e: DataFusionError| SqlError::Internal(format!("PostgreSQL's catalog: {e}"));
                let statics = Arc::new(PgCatalogStaticTables::try_new().map_err(internal)?);
                let provider: Arc<dyn SchemaProvider> = Arc::new(PgCatalog {
                    inner: PgCatalogSchemaProvider::try_new(listing.clone(), statics, EmptyContextProvider)
                        .map_err(internal)?,
                    listing: listing.clone(),
                });
                by_role.insert(role, (listing.clone(), Arc::clone(&provider)));
                (listing, provider)
            }
        };
        let tables: Vec<(String, SchemaRef)> =
            tables.into_iter().map(|(name, schema)| (name, as_sent(&schema))).collect();
        let names = Arc::new(tables.iter().map(|(n, _)| n.clone()).collect());
        let information_schema = information_schema(&tables)
            .map_err(|e| SqlError::Internal(format!("PostgreSQL's information_schema: {e}")))?;
        *listing.0.write().expect("listing") = tables;
        Ok(RoleCatalog {
            pg_catalog: provider,
            information_schema,
            user: OWNER.to_owned(),
            tables: names,
            cursors: None,
        })
    }
}

/// `pg_catalog` as datafusion-pg-catalog makes it, with `pg_attribute` naming the types of
/// interval and array columns: its own calls every type it does not know `text`, so `\\d` said
/// `text` for a dwell (`max(event_time) - min(event_time)`) and for `array_agg`'s column.
#[derive(Debug)]
struct PgCatalog {
    inner: PgCatalogSchemaProvider<Listing, EmptyContextProvider>,
    listing: Listing,
}

#[async_trait]
impl SchemaProvider for PgCatalog {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        if name.eq_ignore_ascii_case("pg_attribute")
            && let Some(PgCatalogTable::Dynamic(inner)) = self.inner.build_table_by_name(name)?
        {
            let typed = TypedAttributes { inner, listing: self.listing.clone() };
            return PgCatalogTable::Dynamic(Arc::new(typed)).try_into_table_provider().map(Some);
        }
        self.inner.table(name).await
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// datafusion-pg-catalog's `pg_attribute` rows with each column's type as the server sends it
/// ([`crate::server::types::pg_type`]) where it said `text`.
#[derive(Debug)]
struct TypedAttributes {
    inner: Arc<dyn PartitionStream>,
    listing: Listing,
}

impl PartitionStream for TypedAttributes {
    fn schema(&self) -> &SchemaRef {
        self.inner.schema()
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let listing = self.listing.clone();
        let rows = self.inner.execute(ctx).map(move |batch| typed_attributes(batch?, &listing));
        Box::pin(RecordBatchStreamAdapter::new(Arc::clone(self.inner.schema()), rows))
    }
}

/// `batch` of `pg_attribute` rows with the type columns of interval and array columns mended.
/// The rows come table by table in the listing's order (one `attrelid` each, columns by
/// `attnum`); a row whose name is not the listed column's is left as it is.
fn typed_attributes(batch: RecordBatch, listing: &Listing) -> Result<RecordBatch, DataFusionError> {
    let schema = batch.schema();
    let index = |c: &str| schema.index_of(c);
    let (relid, name, typid, len, num) =
        (index("attrelid")?, index("attname")?, index("atttypid")?, index("attlen")?, index("attnum")?);
    let (ndims, byval, align, storage) =
        (index("attndims")?, index("attbyval")?, index("attalign")?, index("attstorage")?);
    let relids = batch.column(relid).as_primitive::<Int32Type>();
    let names = batch.column(name).as_string::<i32>();
    let nums = batch.column(num).as_primitive::<Int16Type>();
    let tables = listing.0.read().expect("listing");
    let mut table: Option<usize> = None;
    let mut fixes = Vec::new();
    for row in 0..batch.num_rows() {
        if row == 0 || relids.value(row) != relids.value(row - 1) {
            table = Some(table.map_or(0, |t| t + 1));
        }
        let listed = table.and_then(|t| tables.get(t)).and_then(|(_, schema)| {
            schema.fields().get(usize::try_from(nums.value(row)).ok()?.checked_sub(1)?)
        });
        let Some(field) = listed.filter(|f| f.name() == names.value(row)) else { continue };
        let t = crate::server::types::pg_type(field.data_type());
        // pg_type's length, alignment and storage for the two kinds the library does not know.
        let (length, array_align) = match field.data_type() {
            DataType::Interval(_) => (16, None),
            DataType::List(e) | DataType::LargeList(e) | DataType::FixedSizeList(e, _) => {
                let element = crate::server::types::pg_type(e.data_type());
                let double = matches!(
                    element,
                    Type::INT8 | Type::FLOAT8 | Type::TIMESTAMPTZ | Type::TIMESTAMP | Type::INTERVAL
                );
                (-1, Some(if double { "d" } else { "i" }))
            }
            _ => continue,
        };
        fixes.push((row, t.oid() as i32, length, array_align));
    }
    drop(tables);
    if fixes.is_empty() {
        return Ok(batch);
    }
    let mut columns = batch.columns().to_vec();
    let mut typids: Vec<Option<i32>> = columns[typid].as_primitive::<Int32Type>().iter().collect();
    let mut lens: Vec<Option<i16>> = columns[len].as_primitive::<Int16Type>().iter().collect();
    let mut dims: Vec<Option<i32>> = columns[ndims].as_primitive::<Int32Type>().iter().collect();
    let mut byvals: Vec<Option<bool>> = columns[byval].as_boolean().iter().collect();
    let mut aligns: Vec<Option<String>> =
        columns[align].as_string::<i32>().iter().map(|v| v.map(str::to_owned)).collect();
    let mut storages: Vec<Option<String>> =
        columns[storage].as_string::<i32>().iter().map(|v| v.map(str::to_owned)).collect();
    for (row, oid, length, array_align) in fixes {
        typids[row] = Some(oid);
        lens[row] = Some(length);
        byvals[row] = Some(false);
        dims[row] = Some(i32::from(array_align.is_some()));
        aligns[row] = Some(array_align.unwrap_or("d").to_owned());
        storages[row] = Some(if array_align.is_some() { "x" } else { "p" }.to_owned());
    }
    columns[typid] = Arc::new(Int32Array::from(typids));
    columns[len] = Arc::new(Int16Array::from(lens));
    columns[ndims] = Arc::new(Int32Array::from(dims));
    columns[byval] = Arc::new(BooleanArray::from(byvals));
    columns[align] = Arc::new(StringArray::from(aligns));
    columns[storage] = Arc::new(StringArray::from(storages));
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// `schema` with each column's type as the server sends its values
/// ([`crate::server::types::catalog_type`]).
fn as_sent(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_data_type(crate::server::types::catalog_type(f.data_type())))
        .collect();
    Arc::new(Schema::new(fields))
}

impl std::fmt::Debug for Catalogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Catalogs")
    }
}

/// PostgreSQL's `information_schema` over `tables` (each with the types it is sent as):
/// `tables`, `columns`, `schemata` and `views`, with PostgreSQL's type names, where DataFusion's
/// own would give Arrow's (`UInt32`, `Timestamp(ms, "UTC")`). Built for each catalog query:
/// a few rows per column of what the role may read.
fn information_schema(tables: &[(String, SchemaRef)]) -> Result<Arc<dyn SchemaProvider>, DataFusionError> {
    use datafusion::arrow::array::{ArrayRef, Int32Array, RecordBatch};
    use datafusion::catalog::MemorySchemaProvider;
    use datafusion::datasource::MemTable;
    let text = |values: Vec<Option<&str>>| -> ArrayRef { Arc::new(StringArray::from(values)) };
    let int = |values: Vec<Option<i32>>| -> ArrayRef { Arc::new(Int32Array::from(values)) };
    let table = |columns: Vec<(&str, ArrayRef)>| -> Result<Arc<MemTable>, DataFusionError> {
        let batch = RecordBatch::try_from_iter_with_nullable(
            columns.into_iter().map(|(name, values)| (name, values, true)),
        )?;
        Ok(Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]])?))
    };
    let same = |n: usize, v: Option<&'static str>| vec![v; n];
    let schema = MemorySchemaProvider::new();

    let n = tables.len();
    let names: Vec<Option<&str>> = tables.iter().map(|(t, _)| Some(t.as_str())).collect();
    schema.register_table(
        "tables".into(),
        table(vec![
            ("table_catalog", text(same(n, Some(DATABASE)))),
            ("table_schema", text(same(n, Some(SCHEMA)))),
            ("table_name", text(names)),
            ("table_type", text(same(n, Some("BASE TABLE")))),
        ])?,
    )?;

    let columns: Vec<(&str, usize, &Field)> = tables
        .iter()
        .flat_map(|(t, s)| s.fields().iter().enumerate().map(move |(i, f)| (t.as_str(), i, f.as_ref())))
        .collect();
    let n = columns.len();
    let types: Vec<_> =
        columns.iter().map(|(_, _, f)| crate::server::types::type_name(f.data_type())).collect();
    schema.register_table(
        "columns".into(),
        table(vec![
            ("table_catalog", text(same(n, Some(DATABASE)))),
            ("table_schema", text(same(n, Some(SCHEMA)))),
            ("table_name", text(columns.iter().map(|c| Some(c.0)).collect())),
            ("column_name", text(columns.iter().map(|c| Some(c.2.name().as_str())).collect())),
            ("ordinal_position", int(columns.iter().map(|c| i32::try_from(c.1 + 1).ok()).collect())),
            ("column_default", text(same(n, None))),
            (
                "is_nullable",
                text(columns.iter().map(|c| Some(if c.2.is_nullable() { "YES" } else { "NO" })).collect()),
            ),
            // PostgreSQL's `ARRAY` for an array column, its element type in `udt_name` (`_int8`).
            (
                "data_type",
                text(
                    types
                        .iter()
                        .map(|t| Some(if t.udt.starts_with('_') { "ARRAY" } else { t.name }))
                        .collect(),
                ),
            ),
            ("character_maximum_length", int(vec![None; n])),
            ("character_octet_length", int(vec![None; n])),
            ("numeric_precision", int(types.iter().map(|t| t.bits).collect())),
            ("numeric_precision_radix", int(types.iter().map(|t| t.bits.map(|_| 2)).collect())),
            ("numeric_scale", int(types.iter().map(|t| t.scale).collect())),
            ("datetime_precision", int(types.iter().map(|t| t.second_digits).collect())),
            ("interval_type", text(same(n, None))),
            ("udt_catalog", text(same(n, Some(DATABASE)))),
            ("udt_schema", text(same(n, Some("pg_catalog")))),
            ("udt_name", text(types.iter().map(|t| Some(t.udt)).collect())),
            ("is_updatable", text(same(n, Some("NO")))),
        ])?,
    )?;

    let schemas = [SCHEMA, "pg_catalog", "information_schema"].map(Some).to_vec();
    schema.register_table(
        "schemata".into(),
        table(vec![
            ("catalog_name", text(same(schemas.len(), Some(DATABASE)))),
            ("schema_name", text(schemas.clone())),
            ("schema_owner", text(same(schemas.len(), Some(OWNER)))),
        ])?,
    )?;
    schema.register_table(
        "views".into(),
        table(vec![
            ("table_catalog", text(vec![])),
            ("table_schema", text(vec![])),
            ("table_name", text(vec![])),
            ("view_definition", text(vec![])),
        ])?,
    )?;
    Ok(Arc::new(schema))
}

/// What `setup_pg_catalog` adds to a session besides its catalog: PostgreSQL's functions
/// (`format_type`, `pg_get_expr`, …) and `pg_get_keywords`.
struct PgFunctions {
    scalars: Vec<Arc<ScalarUDF>>,
    tables: Vec<(String, Arc<dyn TableFunctionImpl>)>,
}

/// [`PgFunctions`], taken once from a session set up by `setup_pg_catalog`. Calling it for every
/// catalog query decompressed PostgreSQL's static tables each time (its `PgCatalogStaticTables`,
/// LZ4: a fifth of `\d`'s time), though the role's kept catalog has its own.
fn pg_functions() -> Result<&'static PgFunctions, DataFusionError> {
    static FUNCTIONS: OnceLock<PgFunctions> = OnceLock::new();
    if let Some(f) = FUNCTIONS.get() {
        return Ok(f);
    }
    let (plain, set_up) = (SessionContext::new(), SessionContext::new());
    setup_pg_catalog(&set_up, SESSION_CATALOG, EmptyContextProvider).map_err(|e| *e)?;
    let (plain, set_up) = (plain.state(), set_up.state());
    let mut scalars: Vec<Arc<ScalarUDF>> = set_up
        .scalar_functions()
        .values()
        .filter(|f| plain.scalar_functions().get(f.name()) != Some(*f))
        .cloned()
        .collect();
    scalars.sort_by(|a, b| a.name().cmp(b.name()));
    scalars.dedup_by(|a, b| a.name() == b.name());
    let tables = ["pg_get_keywords"]
        .iter()
        .filter_map(|&name| {
            Some((name.to_owned(), Arc::clone(set_up.table_functions().get(name)?.function())))
        })
        .collect();
    Ok(FUNCTIONS.get_or_init(|| PgFunctions { scalars, tables }))
}

/// Installs `catalog` as `ctx`'s `pg_catalog` and `information_schema` schemas, with
/// PostgreSQL's functions (`pg_table_is_visible`, `format_type`, …) and its oid types
/// (`regclass`, …).
pub(crate) fn install(ctx: &SessionContext, catalog: RoleCatalog) -> Result<(), DataFusionError> {
    let functions = pg_functions()?;
    for f in &functions.scalars {
        ctx.register_udf(f.as_ref().clone());
    }
    for (name, f) in &functions.tables {
        ctx.register_udtf(name, Arc::clone(f));
    }
    CoerceIntArgsToBigInt::widen(ctx);
    // PostgreSQL's oid types (`::regclass`) as setup_pg_catalog plans them.
    let state = ctx.state_ref();
    let existing = state.read().clone();
    *state.write() = SessionStateBuilder::new_from_existing(existing)
        .with_type_planner(Arc::new(PgOidTypePlanner))
        .build();
    // The role's catalog, which keeps its oids between queries.
    let session = ctx
        .catalog(SESSION_CATALOG)
        .ok_or_else(|| DataFusionError::Internal(format!("no catalog {SESSION_CATALOG}")))?;
    let schema = pg_cursors_schema();
    let rows = catalog.cursors.clone().unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(&schema)));
    let cursors = Arc::new(datafusion::datasource::MemTable::try_new(schema, vec![vec![rows]])?);
    session.register_schema("pg_catalog", Arc::new(WithCursors { inner: catalog.pg_catalog, cursors }))?;
    session.register_schema("information_schema", catalog.information_schema)?;
    ctx.register_udf(create_current_database_udf(DATABASE));
    // The account asking, by every name PostgreSQL gives it (psql's `current_user` reaches
    // DataFusion as `session_user()`).
    let user = ScalarValue::from(catalog.user.as_str());
    for name in ["session_user", "current_user", "user"] {
        let user = user.clone();
        ctx.register_udf(create_udf(
            name,
            vec![],
            DataType::Utf8,
            Volatility::Stable,
            Arc::new(move |_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(user.clone()))),
        ));
    }
    // The settings `SHOW` answers (Grafana reads `current_setting('search_path')`); the time
    // zone is the session's.
    // (Read in place: `ctx.state()` would clone the whole session state.)
    let zone = ctx.state_ref().read().config_options().execution.time_zone.clone();
    let zone = zone.unwrap_or_else(|| "UTC".into());
    ctx.register_udf(create_udf(
        "current_setting",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |args: &[ColumnarValue]| {
            let names = ColumnarValue::values_to_arrays(args)?;
            let values = names[0]
                .as_string::<i32>()
                .iter()
                .map(|name| {
                    name.map(|n| {
                        if n.eq_ignore_ascii_case("timezone") {
                            return Ok(zone.as_str());
                        }
                        crate::server::server_parameter(&n.to_ascii_uppercase()).ok_or_else(|| {
                            DataFusionError::Execution(format!(
                                "unrecognized configuration parameter \"{n}\""
                            ))
                        })
                    })
                    .transpose()
                })
                .collect::<Result<StringArray, _>>()?;
            Ok(ColumnarValue::Array(Arc::new(values)))
        }),
    ));
    // `has_table_privilege([user,] table, privilege)`: SELECT on what the role may read (its
    // catalog's tables, by name or `public.name`); changes are made by vigil's own statements.
    ctx.register_udf(ScalarUDF::new_from_impl(HasTablePrivilege {
        signature: datafusion::logical_expr::Signature::one_of(
            vec![
                datafusion::logical_expr::TypeSignature::Exact(vec![DataType::Utf8; 2]),
                datafusion::logical_expr::TypeSignature::Exact(vec![DataType::Utf8; 3]),
            ],
            Volatility::Stable,
        ),
        tables: Arc::clone(&catalog.tables),
    }));
    // Streams, tables and rules are the engine's: `\d`'s owner.
    ctx.register_udf(create_udf(
        "pg_get_userbyid",
        vec![DataType::Int32],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(ScalarValue::from(OWNER)))),
    ));
    // Every function and type is visible (one schema, no search path): psql's \df and \dT.
    ctx.register_udf(
        create_pg_table_is_visible().with_aliases(["pg_function_is_visible", "pg_type_is_visible"]),
    );
    let version = format!(
        "PostgreSQL {SERVER_VERSION} on vigil {} (Apache DataFusion {})",
        env!("CARGO_PKG_VERSION"),
        datafusion::DATAFUSION_VERSION
    );
    ctx.register_udf(create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(ScalarValue::from(version.as_str())))),
    ));
    // psql's `\d+`: no comments on tables or columns (`SHOW STREAMS` says what each holds), and
    // no sizes (a stream's rows are in memory and in Parquet, not in a relation's pages: unknown,
    // not 0). pg_size_pretty prints a size as PostgreSQL does.
    let unknown: [(&str, Vec<DataType>); 5] = [
        ("obj_description", vec![DataType::Int64, DataType::Utf8]),
        ("col_description", vec![DataType::Int64, DataType::Int64]),
        ("pg_table_size", vec![DataType::Int64]),
        ("pg_relation_size", vec![DataType::Int64]),
        ("pg_total_relation_size", vec![DataType::Int64]),
    ];
    for (name, args) in unknown {
        let out = if name.ends_with("_size") { DataType::Int64 } else { DataType::Utf8 };
        ctx.register_udf(create_udf(
            name,
            args,
            out.clone(),
            Volatility::Stable,
            Arc::new(move |_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(ScalarValue::try_from(&out)?))),
        ));
    }
    ctx.register_udf(create_udf(
        "pg_size_pretty",
        vec![DataType::Int64],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let sizes = ColumnarValue::values_to_arrays(args)?;
            let sizes = sizes[0].as_primitive::<Int64Type>();
            let text: StringArray = sizes.iter().map(|s| s.map(size_pretty)).collect();
            Ok(ColumnarValue::Array(Arc::new(text)))
        }),
    ));
    Ok(())
}

/// PostgreSQL's `has_table_privilege` over a role's tables (datafusion-pg-catalog's is always
/// true).
#[derive(Debug, PartialEq, Eq, Hash)]
struct HasTablePrivilege {
    signature: datafusion::logical_expr::Signature,
    tables: Arc<Vec<String>>,
}

impl datafusion::logical_expr::ScalarUDFImpl for HasTablePrivilege {
    fn name(&self) -> &str {
        "has_table_privilege"
    }

    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType, DataFusionError> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> Result<ColumnarValue, DataFusionError> {
        let args = ColumnarValue::values_to_arrays(&args.args)?;
        let (table, privilege) =
            (args[args.len() - 2].as_string::<i32>(), args[args.len() - 1].as_string::<i32>());
        let may: datafusion::arrow::array::BooleanArray = table
            .iter()
            .zip(privilege.iter())
            .map(|(t, p)| {
                let (t, p) = (t?, p?);
                let name = t.strip_prefix("public.").unwrap_or(t).trim_matches('"');
                let select = p.split(',').all(|p| p.trim().eq_ignore_ascii_case("select"));
                Some(select && self.tables.iter().any(|n| n == name))
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(may)))
    }
}

/// PostgreSQL's `pg_size_pretty`: bytes below 10 kB, then kB, MB, GB, TB, PB, each below
/// 20,480 of its unit, rounded half away from zero.
fn size_pretty(bytes: i64) -> String {
    const LIMIT: i64 = 10 * 1024;
    if bytes.unsigned_abs() < LIMIT as u64 {
        return format!("{bytes} bytes");
    }
    // In half-units, so that the last shift can round.
    let mut size = bytes >> 9;
    for unit in ["kB", "MB", "GB", "TB"] {
        if size.unsigned_abs() < (2 * LIMIT - 1) as u64 {
            return format!("{} {unit}", (size + size.signum()) / 2);
        }
        size >>= 10;
    }
    format!("{} PB", (size + size.signum()) / 2)
}

/// The PostgreSQL version vigil answers as (`SHOW server_version`, `version()`).
pub(crate) const SERVER_VERSION: &str = "16.0";
/// [`SERVER_VERSION`] as a number (`SHOW server_version_num`), as drivers compare versions.
pub(crate) const SERVER_VERSION_NUM: &str = "160000";

/// PostgreSQL's `ARRAY(SELECT e FROM … [ORDER BY …])`, which DataFusion does not have, as the
/// scalar subquery `(SELECT array_agg(e ORDER BY …) FROM …)`, which it plans, correlated or not
/// (psql's `\du` uses it). Unlike PostgreSQL's, an empty result is NULL, not `{}`. Subqueries
/// of another shape (several columns, GROUP BY, LIMIT) are left as they are, and do not plan.
fn rewrite_array_subqueries(statement: &mut sqlparser::ast::Statement) {
    use sqlparser::ast::{Expr, FunctionArguments, visit_expressions_mut};
    use std::ops::ControlFlow::Continue;
    let _ = visit_expressions_mut(statement, |e| {
        let aggregated = match e {
            Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("array") => match &f.args {
                FunctionArguments::Subquery(q) => aggregated(q),
                _ => None,
            },
            _ => None,
        };
        if let Some(q) = aggregated {
            *e = Expr::Subquery(q);
        }
        Continue::<()>(())
    });
}

/// `q`, a SELECT of one column, as the SELECT of that column's `array_agg`.
fn aggregated(q: &sqlparser::ast::Query) -> Option<Box<sqlparser::ast::Query>> {
    use sqlparser::ast::{GroupByExpr, SelectItem, SetExpr};
    let mut q = q.clone();
    if q.limit_clause.is_some() || q.fetch.is_some() || q.with.is_some() {
        return None;
    }
    let order = q.order_by.take().map(|o| format!(" {o}")).unwrap_or_default();
    let SetExpr::Select(select) = q.body.as_mut() else { return None };
    let ungrouped = matches!(&select.group_by, GroupByExpr::Expressions(g, _) if g.is_empty());
    if !ungrouped || select.having.is_some() || select.distinct.is_some() || select.projection.len() != 1 {
        return None;
    }
    let expr = match &select.projection[0] {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
        _ => return None,
    };
    let agg = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&format!("array_agg({expr}{order})"))
        .and_then(|mut p| p.parse_expr())
        .ok()?;
    select.projection = vec![SelectItem::UnnamedExpr(agg)];
    Some(Box::new(q))
}

/// What psql sends for `\d+ name`'s storage options (`describeOneTableDetails`).
const STORAGE_OPTIONS: &str = "pg_catalog.array_to_string(c.reloptions || array(select 'toast.' || x from pg_catalog.unnest(tc.reloptions) x), ', ')";

/// A catalog query's error, with what works said: such a query is most often one a client sent
/// for the user (psql's `\\d+`), asking for parts of the catalog vigil does not keep.
pub(crate) fn explain(e: SqlError) -> SqlError {
    match e {
        SqlError::User { kind, position, message, fix } => SqlError::User {
            kind,
            position,
            message: format!(
                "{} (PostgreSQL's catalog)",
                message.trim_start_matches("Error during planning: ").replace("'datafusion.", "'")
            ),
            fix: format!(
                "vigil keeps the parts of PostgreSQL's catalog that psql's \\d, \\d name, \\d+ name, \\dt, \\l, \\dn \
                 and \\du read, not all of it (\\df, \\dT and \\dp ask for more): SHOW STREAMS lists what you may read, \
                 SHOW COLUMNS FROM name its columns; {fix}"
            ),
        },
        e => e,
    }
}

/// `sql` parsed as PostgreSQL's SQL and rewritten for DataFusion (datafusion-pg-catalog's
/// rewrites of what psql and drivers send). `None` when it does not parse so, or is not one
/// statement: the query is then parsed as any other.
pub(crate) fn parse(sql: &str) -> Option<Statement> {
    static PARSER: OnceLock<PostgresCompatibilityParser> = OnceLock::new();
    // psql's `\d+` shows a table's storage options and its TOAST table's: vigil's tables have
    // neither (the catalog has no `reloptions`), so the options are the empty text psql's `\d`
    // asks for in their place.
    let sql = sql.replace(STORAGE_OPTIONS, "''");
    let mut statements = PARSER.get_or_init(PostgresCompatibilityParser::new).parse(&sql).ok()?;
    if statements.len() != 1 {
        return None;
    }
    let mut statement = statements.remove(0);
    rewrite_array_subqueries(&mut statement);
    qualify_pg_cursors(&mut statement);
    Some(Statement::Statement(Box::new(statement)))
}

/// `pg_cursors` as `pg_catalog.pg_cursors`, as PostgreSQL's search path finds it (the parser
/// qualifies the catalog tables it knows; this one is vigil's).
fn qualify_pg_cursors(statement: &mut sqlparser::ast::Statement) {
    use sqlparser::ast::{Ident, ObjectName, visit_relations_mut};
    let _ = visit_relations_mut(statement, |name: &mut ObjectName| {
        if name.0.len() == 1 && name.to_string().eq_ignore_ascii_case("pg_cursors") {
            *name = ObjectName::from(vec![Ident::new("pg_catalog"), Ident::new("pg_cursors")]);
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_queries_are_told_from_the_others() {
        assert!(reads_catalog("SELECT c.relname FROM pg_catalog.pg_class c"));
        assert!(reads_catalog("select * from PG_CLASS"));
        assert!(reads_catalog("SELECT table_name FROM information_schema.tables"));
        assert!(reads_catalog("SELECT current_database()"));
        assert!(reads_catalog("SELECT current_user, current_setting('search_path')"));
        assert!(reads_catalog("SELECT has_table_privilege('zones', 'SELECT')"));
        assert!(reads_catalog("SELECT 'detections'::regclass::oid"));
        assert!(reads_catalog("SELECT 'int8'::REGTYPE"));
        assert!(!reads_catalog("SELECT actor FROM audit_log WHERE actor = 'user1'"));
        assert!(!reads_catalog("SELECT count(*) FROM detections WHERE class = 'person'"));
        assert!(!reads_catalog("SELECT camera_id FROM zone_density_pg"));
    }

    #[test]
    fn psqls_describe_query_parses_as_postgresql_and_others_fall_back() {
        // psql 15's `\d detections`, first query.
        let psql = "SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c \
                    LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                    WHERE c.relname OPERATOR(pg_catalog.~) '^(detections)$' COLLATE pg_catalog.default \
                    AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY 2, 3;";
        let st = parse(psql).expect("parses");
        let text = st.to_string();
        assert!(!text.contains("OPERATOR") && !text.contains("COLLATE"), "{text}");
        assert!(parse("SELECT 1; SELECT 2").is_none());
        assert!(parse("SELECT FROM WHERE (").is_none());
    }

    #[tokio::test]
    async fn psqls_tab_completion_finds_a_table_by_its_first_letters() {
        let zones = Arc::new(Schema::new(vec![Field::new("name", DataType::Utf8, false)]));
        let tables = ["zones", "zone_density", "detections"].map(|t| (t.to_owned(), Arc::clone(&zones)));
        let provider = Catalogs::default().for_role(Role::Analyst, tables).expect("catalog");
        let ctx = SessionContext::new();
        install(&ctx, provider).expect("installs");
        // What psql 15 sends for `SELECT * FROM zo<TAB>`.
        let sql = "SELECT c.relname, NULL::pg_catalog.text FROM pg_catalog.pg_class c \
                   WHERE c.relkind IN ('r', 'S', 'v', 'm', 'f', 'p') AND (c.relname) LIKE 'zo%' \
                   AND pg_catalog.pg_table_is_visible(c.oid) AND c.relnamespace <> \
                   (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'pg_catalog') \
                   UNION ALL SELECT NULL::pg_catalog.text, n.nspname FROM pg_catalog.pg_namespace n \
                   WHERE n.nspname LIKE 'zo%' AND n.nspname NOT LIKE E'pg\\\\_%' LIMIT 1000";
        let plan = ctx.state().statement_to_plan(parse(sql).expect("parses")).await.expect("plans");
        let batches = ctx.execute_logical_plan(plan).await.unwrap().collect().await.unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
        assert!(text.contains("| zones ") && text.contains("| zone_density "), "{text}");
        assert!(!text.contains("detections"), "{text}");
    }

    #[tokio::test]
    async fn information_schema_lists_the_roles_tables_with_postgresqls_type_names() {
        use datafusion::arrow::datatypes::TimeUnit;
        let density = Arc::new(Schema::new(vec![
            Field::new("zone_id", DataType::UInt32, false),
            Field::new("window_end", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
            Field::new("persons", DataType::Float64, true),
            Field::new("zone", DataType::Utf8, false),
            Field::new("cams", DataType::new_list(DataType::UInt32, true), true),
        ]));
        let catalog =
            Catalogs::default().for_role(Role::CrowdManager, [("zone_density".to_owned(), density)]);
        let ctx = SessionContext::new();
        install(&ctx, catalog.expect("catalog")).expect("installs");
        let rows = |sql: &str| {
            let ctx = ctx.clone();
            let sql = sql.to_owned();
            async move {
                let batches = ctx.sql(&sql).await.expect("plans").collect().await.expect("runs");
                datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string()
            }
        };
        // What a tool's column browser asks (Grafana's query builder, among others).
        let columns = rows(
            "SELECT column_name, data_type, udt_name, is_nullable, ordinal_position, numeric_precision \
             FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'zone_density' \
             ORDER BY ordinal_position",
        )
        .await;
        for line in [
            "| zone_id     | bigint                   | int8        | NO          | 1                | 64                |",
            "| window_end  | timestamp with time zone | timestamptz | NO          | 2                |                   |",
            "| persons     | double precision         | float8      | YES         | 3                | 53                |",
            "| zone        | text                     | text        | NO          | 4                |                   |",
            "| cams        | ARRAY                    | _int8       | YES         | 5                |                   |",
        ] {
            assert!(columns.contains(line), "{line}\n{columns}");
        }
        let tables = rows("SELECT table_schema, table_name, table_type FROM information_schema.tables").await;
        assert!(tables.contains("| public       | zone_density | BASE TABLE |"), "{tables}");
        assert_eq!(tables.matches("BASE TABLE").count(), 1, "only what the role may read: {tables}");
        let schemata = rows("SELECT schema_name FROM information_schema.schemata ORDER BY 1").await;
        assert!(schemata.contains("| public ") && schemata.contains("| pg_catalog "), "{schemata}");
    }

    #[tokio::test]
    async fn pg_attribute_names_interval_and_array_columns_as_postgresql_does() {
        use datafusion::arrow::datatypes::TimeUnit;
        let list = |t: DataType| DataType::new_list(t, true);
        let visits = Arc::new(Schema::new(vec![
            Field::new("track_id", DataType::UInt64, false),
            Field::new("dwell", DataType::Duration(TimeUnit::Millisecond), true),
            Field::new("cams", list(DataType::UInt32), true),
            Field::new("classes", list(DataType::Utf8), true),
            Field::new("xs", list(DataType::Float32), true),
            Field::new("seen", list(DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))), true),
        ]));
        // A table listed before it, so its rows are not the first.
        let alerts = Arc::new(Schema::new(vec![Field::new("rule", DataType::Utf8, false)]));
        let catalog = Catalogs::default()
            .for_role(Role::Analyst, [("visits".to_owned(), visits), ("alerts".to_owned(), alerts)]);
        let ctx = SessionContext::new();
        install(&ctx, catalog.expect("catalog")).expect("installs");
        // psql's `\d`, reduced; every value as PostgreSQL 15 gives it for a table of these types.
        let sql = "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) AS t, \
                   a.attlen, a.attndims, a.attalign, a.attstorage, a.attbyval \
                   FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON a.attrelid = c.oid \
                   WHERE a.attnum > 0 ORDER BY c.relname, a.attnum";
        let batches = ctx.sql(sql).await.expect("plans").collect().await.expect("runs");
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
        // `'name'::regclass` is the table's oid in pg_class, as tools join on it.
        let sql = "SELECT 'visits'::regclass::oid = (SELECT oid FROM pg_catalog.pg_class WHERE relname = 'visits') AS same";
        // (Parsed as the server parses a catalog query.)
        let plan = ctx.state().statement_to_plan(parse(sql).expect("parses")).await.expect("plans");
        let same = ctx.execute_logical_plan(plan).await.expect("plans").collect().await.expect("runs");
        assert!(same[0].column(0).as_boolean().value(0), "{sql}");
        for line in [
            "| alerts  | rule     | text                       | -1     | 0        | i        | x          | false    |",
            "| visits  | track_id | bigint                     | 8      | 0        | d        | p          | true     |",
            "| visits  | dwell    | interval                   | 16     | 0        | d        | p          | false    |",
            "| visits  | cams     | bigint[]                   | -1     | 1        | d        | x          | false    |",
            "| visits  | classes  | text[]                     | -1     | 1        | i        | x          | false    |",
            "| visits  | xs       | real[]                     | -1     | 1        | i        | x          | false    |",
            "| visits  | seen     | timestamp with time zone[] | -1     | 1        | d        | x          | false    |",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
    }

    #[tokio::test]
    async fn array_of_a_correlated_subquery_lists_each_rows_values_in_order() {
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let zones = Arc::new(Schema::new(vec![
            Field::new("zone_id", DataType::UInt32, false),
            Field::new("name", DataType::Utf8, false),
        ]));
        let catalogs = Catalogs::default();
        let provider = catalogs.for_role(Role::Analyst, [("zones".to_owned(), zones)]).expect("catalog");
        let ctx = SessionContext::new();
        install(&ctx, provider).expect("installs");
        let sql = "SELECT c.relname, ARRAY(SELECT a.attname FROM pg_catalog.pg_attribute a \
                   WHERE a.attrelid = c.oid ORDER BY a.attnum DESC) AS columns, \
                   pg_catalog.format_type(t.atttypid, t.atttypmod) AS id_type \
                   FROM pg_catalog.pg_class c JOIN pg_catalog.pg_attribute t ON t.attrelid = c.oid \
                   WHERE c.relname = 'zones' AND t.attname = 'zone_id'";
        let st = parse(sql).expect("parses");
        let plan = ctx.state().statement_to_plan(st).await.expect("plans");
        let batches = ctx.execute_logical_plan(plan).await.unwrap().collect().await.unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
        // The columns last first, and a UInt32 as the bigint the server sends it as.
        assert!(text.contains("| zones   | [name, zone_id] | bigint  |"), "{text}");
    }

    const PROJECTIONS: &[&str] = &[
        "c.relname",
        "c.oid",
        "ARRAY(SELECT a.attname FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid ORDER BY a.attnum)",
        "ARRAY(SELECT 1)",
        "ARRAY(SELECT a.attname, a.attnum FROM pg_catalog.pg_attribute a)",
        "ARRAY(SELECT x FROM unnest(c.relname) x)",
        "array(select a.attname from pg_catalog.pg_attribute a group by a.attname)",
        "version()",
        "pg_size_pretty(c.oid)",
        "pg_catalog.pg_table_size(c.oid)",
        "col_description(c.oid, 1)",
        "obj_description(c.oid, 'pg_class')",
        STORAGE_OPTIONS,
        "c.oid::regclass",
        "'zones'::regclass",
        "pg_catalog.format_type(23, -1)",
    ];
    const FROMS: &[&str] = &[
        "pg_catalog.pg_class c",
        "pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_class tc ON (c.reltoastrelid = tc.oid)",
        "information_schema.tables c",
        "pg_class c, pg_catalog.pg_namespace n",
    ];
    const WHERES: &[&str] = &[
        "",
        "WHERE c.relname OPERATOR(pg_catalog.~) '^(zones)$' COLLATE pg_catalog.default",
        "WHERE c.oid = '16384'",
        "WHERE pg_catalog.pg_table_is_visible(c.oid) AND c.relkind IN ('r', 'p', '')",
    ];

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 200, ..Default::default() })]

        /// Catalog queries of psql's shapes are parsed, rewritten and run to rows or an error,
        /// never a panic.
        #[test]
        fn catalog_queries_get_an_answer(
            projection in proptest::collection::vec(proptest::sample::select(PROJECTIONS), 1..4),
            from in proptest::sample::select(FROMS),
            filter in proptest::sample::select(WHERES),
        ) {
            let text = format!("SELECT {} FROM {from} {filter}", projection.join(", "));
            let st = parse(&text).expect("psql's shapes parse");
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let zones = Arc::new(Schema::new(vec![Field::new("name", DataType::Utf8, false)]));
            let provider = Catalogs::default().for_role(Role::Analyst, [("zones".to_owned(), zones)]).expect("catalog");
            rt.block_on(async {
                let ctx = SessionContext::new();
                install(&ctx, provider).expect("installs");
                let Ok(plan) = ctx.state().statement_to_plan(st).await else { return };
                if let Ok(df) = ctx.execute_logical_plan(plan).await {
                    let _ = df.collect().await;
                }
            });
        }

        #[test]
        fn arbitrary_text_parses_or_falls_back(text in "\\PC{0,120}") {
            let _ = parse(&text);
            let _ = reads_catalog(&text);
        }
    }

    #[test]
    fn sizes_read_as_postgresql_prints_them() {
        // PostgreSQL 16's pg_size_pretty of the same numbers.
        let cases = [
            (0, "0 bytes"),
            (10_239, "10239 bytes"),
            (10_240, "10 kB"),
            (1_048_576, "1024 kB"),
            (20_971_520, "20 MB"),
            (1_610_612_736, "1536 MB"),
            (-10_240, "-10 kB"),
            (1 << 50, "1024 TB"),
            (i64::MAX, "8192 PB"),
            (i64::MIN, "-8192 PB"),
        ];
        for (bytes, text) in cases {
            assert_eq!(size_pretty(bytes), text, "{bytes}");
        }
    }

    #[tokio::test]
    async fn a_roles_tables_keep_their_oids_as_tables_are_added() {
        use datafusion::arrow::datatypes::{DataType, Field, Schema};
        let schema = Arc::new(Schema::new(vec![Field::new("zone_id", DataType::Utf8, false)]));
        let catalogs = Catalogs::default();
        let oids = |tables: &[&str]| {
            let provider = catalogs
                .for_role(Role::CrowdManager, tables.iter().map(|t| (t.to_string(), Arc::clone(&schema))))
                .expect("catalog");
            async move {
                let ctx = SessionContext::new();
                install(&ctx, provider).expect("installs");
                let sql = "SELECT c.relname, c.oid FROM pg_catalog.pg_class c \
                           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                           WHERE n.nspname = 'public' ORDER BY 1";
                let batches = ctx.sql(sql).await.expect("plans").collect().await.expect("runs");
                let text =
                    datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
                text.lines()
                    .filter(|l| l.starts_with("| ") && !l.contains("relname"))
                    .map(|l| {
                        let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                        (cells[1].to_owned(), cells[2].to_owned())
                    })
                    .collect::<Vec<_>>()
            }
        };
        let before = oids(&["zone_density", "zones"]).await;
        assert_eq!(before.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["zone_density", "zones"]);
        let after = oids(&["zone_density", "gate_peak", "zones"]).await;
        assert_eq!(after.len(), 3, "{after:?}");
        for (name, oid) in &before {
            assert!(
                after.contains(&(name.clone(), oid.clone())),
                "{name} changed its oid: {before:?} {after:?}"
            );
        }
    }
}

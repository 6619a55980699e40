//! PostgreSQL's names for the columns of a query's result that the query did not name:
//! `count` for `count(*)`, `date_part` for `date_part('hour', event_time)`, `event_time` for
//! `event_time::date`, `?column?` for `score * 2`, where DataFusion names each after its whole
//! expression (`date_part(Utf8("hour"),detections.event_time)`). psql prints these names, and
//! drivers key rows by them (a pandas column `count`).
//!
//! Only what a client is sent is renamed: a rule's columns, which its Parquet files and later
//! queries read, keep the names DataFusion gave them when it was created.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::sql::sqlparser::ast::{Expr, Ident, Query, SelectItem, SetExpr, Statement};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// `schema`, the result of query `sql`, with PostgreSQL's names for its unnamed columns; as it
/// is when `sql` is not one query whose columns can be told apart (two `*`s).
pub(super) fn pg_names(sql: &str, schema: &SchemaRef) -> SchemaRef {
    let Ok(mut statements) = Parser::parse_sql(&GenericDialect {}, sql) else { return Arc::clone(schema) };
    let (Some(Statement::Query(q)), None) = (statements.pop(), statements.first()) else {
        return Arc::clone(schema);
    };
    let Some(names) = column_names(&q, schema.fields().len()) else { return Arc::clone(schema) };
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .zip(names)
        .map(|(f, name)| match name {
            Some(n) => f.as_ref().clone().with_name(n),
            None => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The name PostgreSQL gives each of the `n` columns of `q` (None: as DataFusion named it, a
/// star's column); None if they cannot be counted.
fn column_names(q: &Query, n: usize) -> Option<Vec<Option<String>>> {
    // A set operation's columns are named after its first query's.
    let mut body = q.body.as_ref();
    while let SetExpr::SetOperation { left, .. } = body {
        body = left.as_ref();
    }
    let SetExpr::Select(select) = body else { return None };
    let stars = select
        .projection
        .iter()
        .filter(|i| !matches!(i, SelectItem::UnnamedExpr(_) | SelectItem::ExprWithAlias { .. }))
        .count();
    let named = select.projection.len() - stars;
    if stars > 1 || (stars == 0 && named != n) || named > n {
        return None;
    }
    let mut names = Vec::with_capacity(n);
    for item in &select.projection {
        match item {
            SelectItem::UnnamedExpr(e) => names.push(pg_name(e)),
            // As DataFusion names it too, unless the plan had to name it apart.
            SelectItem::ExprWithAlias { alias, .. } => names.push(Some(folded(alias))),
            _ => names.extend(std::iter::repeat_n(None, n - named)),
        }
    }
    Some(names)
}

/// PostgreSQL's name for an unnamed column computed by `e` (its `FigureColname`): a column's
/// name, a function's, the name inside a cast, `case`, `extract`; `?column?` for the rest.
fn pg_name(e: &Expr) -> Option<String> {
    Some(match e {
        Expr::Identifier(id) => folded(id),
        Expr::CompoundIdentifier(ids) => folded(ids.last()?),
        Expr::Function(f) => folded(f.name.0.last()?.as_ident()?),
        Expr::Nested(expr) => return pg_name(expr),
        // A cast is named after what it casts, or a literal's after the type (`1::int` is `int4`).
        Expr::Cast { expr, data_type, .. } => match pg_name(expr) {
            Some(n) if n != "?column?" => n,
            _ => return type_name(&data_type.to_string()).map(str::to_owned),
        },
        // A typed literal is named after its type (`DATE '…'` is `date`, `INTERVAL '…'` `interval`).
        Expr::TypedString(ts) => return type_name(&ts.data_type.to_string()).map(str::to_owned),
        Expr::Interval(_) => "interval".into(),
        Expr::Extract { .. } => "extract".into(),
        Expr::Case { .. } => "case".into(),
        Expr::Exists { .. } => "exists".into(),
        _ => "?column?".into(),
    })
}

/// PostgreSQL's internal name of a type written as `written` (`int4` for `INT`); None for one not
/// listed (the column keeps DataFusion's name).
fn type_name(written: &str) -> Option<&'static str> {
    Some(match written.to_ascii_lowercase().as_str() {
        "int" | "integer" | "int4" => "int4",
        "bigint" | "int8" => "int8",
        "smallint" | "int2" => "int2",
        "real" | "float4" => "float4",
        "double" | "double precision" | "float" | "float8" => "float8",
        "text" => "text",
        "varchar" => "varchar",
        "boolean" | "bool" => "bool",
        "date" => "date",
        "timestamp" => "timestamp",
        "timestamptz" | "timestamp with time zone" => "timestamptz",
        "numeric" | "decimal" => "numeric",
        "interval" => "interval",
        _ => return None,
    })
}

/// A name as PostgreSQL folds it: lower case unless quoted.
fn folded(id: &Ident) -> String {
    if id.quote_style.is_some() { id.value.clone() } else { id.value.to_lowercase() }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{DataType, Field};
    use proptest::prelude::*;

    use super::*;

    fn renamed(sql: &str, datafusion_names: &[&str]) -> Vec<String> {
        let schema = Arc::new(Schema::new(
            datafusion_names.iter().map(|n| Field::new(*n, DataType::Int64, true)).collect::<Vec<_>>(),
        ));
        pg_names(sql, &schema).fields().iter().map(|f| f.name().clone()).collect()
    }

    #[test]
    fn unnamed_columns_take_postgresqls_names() {
        // The names PostgreSQL 15 gives the same columns.
        assert_eq!(
            renamed(
                "SELECT camera_id, count(*), date_part('hour', event_time), EXTRACT(minute FROM event_time), \
                 event_time::date, d.\"Zone\", score * 2, CASE WHEN score > 0.5 THEN 1 END, max(score) AS best \
                 FROM detections d GROUP BY 1, 3, 4, 5, 6, 7, 8",
                &[
                    "camera_id",
                    "count(*)",
                    "date_part(..)",
                    "date_part(..)",
                    "d.event_time",
                    "d.Zone",
                    "d.score * Int64(2)",
                    "CASE ..",
                    "best"
                ],
            ),
            ["camera_id", "count", "date_part", "extract", "event_time", "Zone", "?column?", "case", "best"]
        );
        // A star's columns keep their names; the others are named around it.
        assert_eq!(
            renamed("SELECT *, count(*) OVER () FROM zones", &["zone_id", "name", "count(*) OVER"]),
            ["zone_id", "name", "count"]
        );
        // Casts (PostgreSQL 15: `now`, `int4`, `text`, `score`).
        assert_eq!(
            renamed(
                "SELECT now(), 1::int, CAST('a' AS TEXT), (score)::real FROM t",
                &["now()", "Int64(1)", "Utf8(\"a\")", "t.score"]
            ),
            ["now", "int4", "text", "score"]
        );
        // Typed literals (PostgreSQL 15: `interval`, `date`, `timestamptz`, `timestamp`, `interval`).
        assert_eq!(
            renamed(
                "SELECT interval '90 minutes', DATE '2026-06-14', TIMESTAMPTZ '2026-06-14 20:00+00', \
                 TIMESTAMP '2026-06-14 20:00', '1 hour'::interval",
                &["a", "b", "c", "d", "e"]
            ),
            ["interval", "date", "timestamptz", "timestamp", "interval"]
        );
        // A union is named after its first query.
        assert_eq!(
            renamed("SELECT min(x) FROM a UNION ALL SELECT max(x) AS m FROM b", &["min(a.x)"]),
            ["min"]
        );
    }

    #[test]
    fn what_cannot_be_counted_keeps_datafusions_names() {
        assert_eq!(renamed("SELECT *, * FROM zones", &["a", "b", "a", "b"]), ["a", "b", "a", "b"]);
        assert_eq!(renamed("SELECT count(*) FROM zones; SELECT 1", &["count(*)"]), ["count(*)"]);
        assert_eq!(renamed("SELECT FROM WHERE", &["x"]), ["x"]);
        assert_eq!(renamed("SELECT a, b FROM t", &["a"]), ["a"]);
    }

    proptest! {
        /// Any text renames or keeps the schema, never panics, and never changes its width.
        #[test]
        fn any_text_keeps_the_width(sql in "(SELECT|select|\\*|,|count\\(\\*\\)|a|AS|b|FROM|t| |\\(|\\)|UNION|ALL){0,16}") {
            let names = renamed(&sql, &["x", "y"]);
            prop_assert_eq!(names.len(), 2);
        }
    }
}

//! Event-time windows in `GROUP BY`: `tumble(t, size)`, `hop(t, slide, size)`, `session(t, gap)`.
//!
//! To DataFusion's planner the three are scalar functions returning a struct
//! `{window_start, window_end}`; they only plan, and evaluating one outside `GROUP BY` is an
//! error. The lowering recognizes the call among an aggregate's group expressions and hands
//! the window to the window-aggregate operator, which fills that column itself. Analysts write
//! `window_start` and `window_end` as if they were columns: before planning, those bare names
//! are rewritten to fields of the query's window call ([`rewrite_window_columns`]).

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result as DfResult, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    Aggregate, ColumnarValue, Expr, LogicalPlan, LogicalPlanBuilder, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, FunctionArg, FunctionArgExpr, GroupByExpr, Ident, ObjectName, Query, SelectItem,
    SetExpr, Statement, TableFactor, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// The kinds of event-time window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WindowKind {
    /// Fixed, non-overlapping windows of `size`.
    Tumble {
        /// Window length, ms.
        size: i64,
    },
    /// Windows of `size` starting every `slide`.
    Hop {
        /// Distance between window starts, ms.
        slide: i64,
        /// Window length, ms.
        size: i64,
    },
    /// Per group, a window of events no more than `gap` apart; it ends `gap` after its last event.
    Session {
        /// Inactivity that closes a session, ms.
        gap: i64,
    },
}

impl WindowKind {
    /// Pane length: the largest length that tiles every window (tumble and hop only).
    pub fn pane(&self) -> Option<i64> {
        match *self {
            WindowKind::Tumble { size } => Some(size),
            WindowKind::Hop { slide, size } => Some(gcd(slide, size)),
            WindowKind::Session { .. } => None,
        }
    }
}

impl WindowKind {
    /// The ends of the windows that contain `t` (none for a session: it depends on the other
    /// events). Windows are aligned to multiples of their slide since 1970.
    pub fn ends(&self, t: i64) -> Vec<i64> {
        match *self {
            WindowKind::Tumble { size } => vec![t.div_euclid(size) * size + size],
            WindowKind::Hop { slide, size } => {
                let mut s = t.div_euclid(slide) * slide;
                let mut v = Vec::new();
                while s + size > t {
                    v.push(s + size);
                    s -= slide;
                }
                v
            }
            WindowKind::Session { .. } => Vec::new(),
        }
    }

    /// Window length, ms (a session's gap).
    pub fn size(&self) -> i64 {
        match *self {
            WindowKind::Tumble { size } | WindowKind::Hop { size, .. } => size,
            WindowKind::Session { gap } => gap,
        }
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The names of the window functions.
pub const WINDOW_FUNCTIONS: [&str; 3] = ["tumble", "hop", "session"];

/// The struct type a window call returns (a rule's: in UTC).
pub fn window_type() -> DataType {
    window_type_in(Some("UTC".into()))
}

/// The struct type of a window over times in zone `tz` (an ad-hoc query's, in its session's
/// `TimeZone`): the same instants, printed in that zone.
fn window_type_in(tz: Option<Arc<str>>) -> DataType {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, tz.or_else(|| Some("UTC".into())));
    DataType::Struct(Fields::from(vec![
        Field::new("window_start", ts.clone(), false),
        Field::new("window_end", ts, false),
    ]))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct WindowUdf {
    name: &'static str,
    signature: Signature,
}

impl ScalarUDFImpl for WindowUdf {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        let want = if self.name == "hop" { 3 } else { 2 };
        if args.len() != want {
            return plan_err!(
                "{}() takes {want} arguments: {}",
                self.name,
                if self.name == "hop" {
                    "hop(event_time, INTERVAL 'slide', INTERVAL 'size')"
                } else {
                    "(event_time, INTERVAL '...')"
                }
            );
        }
        if !matches!(args[0], DataType::Timestamp(..)) {
            return plan_err!("{}()'s first argument must be a timestamp column, not {}", self.name, args[0]);
        }
        if let Some(t) = args[1..].iter().find(|t| !matches!(t, DataType::Interval(_))) {
            return plan_err!("{}() takes INTERVAL literals after the timestamp, not {t}", self.name);
        }
        Ok(window_type_in(zone_of(&args[0])))
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        exec_err!("{}() can only appear in GROUP BY", self.name)
    }
}

/// The zone of a timestamp type (`None` for one without, or another type).
pub(crate) fn zone_of(t: &DataType) -> Option<Arc<str>> {
    match t {
        DataType::Timestamp(_, tz) => tz.clone(),
        _ => None,
    }
}

/// The three window functions, for the catalog.
pub fn window_udfs() -> Vec<Arc<ScalarUDF>> {
    WINDOW_FUNCTIONS
        .iter()
        .map(|&name| {
            Arc::new(ScalarUDF::new_from_impl(WindowUdf {
                name,
                signature: Signature::variadic_any(Volatility::Immutable),
            }))
        })
        .collect()
}

/// If `e` is a window call: its kind and the timestamp argument.
pub fn as_window(e: &Expr) -> Option<Result<(WindowKind, Expr), String>> {
    let Expr::ScalarFunction(f) = e else { return None };
    let name = f.func.name();
    if !WINDOW_FUNCTIONS.contains(&name) {
        return None;
    }
    let ms = |i: usize| -> Result<i64, String> {
        let arg = f.args.get(i).ok_or_else(|| format!("{name}() is missing an interval"))?;
        let value = match arg {
            Expr::Literal(v, _) => v,
            Expr::Cast(c) => match c.expr.as_ref() {
                Expr::Literal(v, _) => v,
                _ => return Err(format!("{name}() takes INTERVAL literals, not {arg}")),
            },
            _ => return Err(format!("{name}() takes INTERVAL literals, not {arg}")),
        };
        let ms = match value {
            ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
                v.days as i64 * 86_400_000 + v.nanoseconds / 1_000_000
            }
            ScalarValue::IntervalDayTime(Some(v)) => v.days as i64 * 86_400_000 + v.milliseconds as i64,
            ScalarValue::IntervalMonthDayNano(Some(_)) | ScalarValue::IntervalYearMonth(Some(_)) => {
                return Err(format!("{name}(): months have no fixed length; use days"));
            }
            other => return Err(format!("{name}() takes INTERVAL literals, not {other}")),
        };
        if ms <= 0 {
            return Err(format!("{name}(): intervals must be at least 1 millisecond"));
        }
        Ok(ms)
    };
    let kind = match name {
        "tumble" => ms(1).map(|size| WindowKind::Tumble { size }),
        "hop" => {
            ms(1).and_then(|slide| ms(2).map(|size| WindowKind::Hop { slide, size })).and_then(|k| match k {
                WindowKind::Hop { slide, size } if slide > size => {
                    Err("hop(): the slide must not exceed the size (use tumble for gaps)".into())
                }
                k => Ok(k),
            })
        }
        _ => ms(1).map(|gap| WindowKind::Session { gap }),
    };
    Some(kind.map(|k| (k, f.args[0].clone())))
}

/// Rewrites bare `window_start` / `window_end` in a statement's select lists and HAVING into
/// fields of that SELECT's window call (`get_field(tumble(...), 'window_start')`), keeping the
/// name as the output column's alias. A SELECT without a window call is left alone (and the
/// planner then reports the unknown column).
pub fn rewrite_window_columns(stmt: &mut Statement) {
    // Every query, nested ones included (derived tables, CTEs, subqueries).
    struct Queries;
    impl VisitorMut for Queries {
        type Break = ();
        fn post_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
            rewrite_set_expr(q.body.as_mut());
            ControlFlow::Continue(())
        }
    }
    let _ = stmt.visit(&mut Queries);
}

fn rewrite_set_expr(body: &mut SetExpr) {
    match body {
        SetExpr::Select(select) => {
            let GroupByExpr::Expressions(groups, _) = &select.group_by else { return };
            let Some(call) = groups.iter().find(|g| is_window_call(g)).cloned() else { return };
            for item in select.projection.iter_mut() {
                match item {
                    SelectItem::UnnamedExpr(SqlExpr::Identifier(id)) if is_window_column(id) => {
                        let alias = id.clone();
                        let expr = field_of(&call, &id.value.to_ascii_lowercase());
                        *item = SelectItem::ExprWithAlias { expr, alias };
                    }
                    SelectItem::UnnamedExpr(e) => {
                        // Named as written (`CAST(window_start AS BIGINT)`), not after the
                        // window call it now reads; an ORDER BY of its position then finds it.
                        let written = e.to_string();
                        replace_in(e, &call);
                        if e.to_string() != written {
                            let expr = std::mem::replace(
                                e,
                                SqlExpr::Value(datafusion::sql::sqlparser::ast::Value::Null.into()),
                            );
                            *item =
                                SelectItem::ExprWithAlias { expr, alias: Ident::with_quote('"', written) };
                        }
                    }
                    SelectItem::ExprWithAlias { expr: e, .. } => replace_in(e, &call),
                    _ => {}
                }
            }
            if let Some(h) = select.having.as_mut() {
                replace_in(h, &call);
            }
        }
        SetExpr::SetOperation { left, right, .. } => {
            rewrite_set_expr(left);
            rewrite_set_expr(right);
        }
        SetExpr::Query(q) => rewrite_set_expr(q.body.as_mut()),
        _ => {}
    }
}

fn is_window_call(e: &SqlExpr) -> bool {
    matches!(e, SqlExpr::Function(f) if WINDOW_FUNCTIONS.iter().any(|w| f.name.to_string().eq_ignore_ascii_case(w)))
}

fn is_window_column(id: &Ident) -> bool {
    id.value.eq_ignore_ascii_case("window_start") || id.value.eq_ignore_ascii_case("window_end")
}

fn field_of(call: &SqlExpr, field: &str) -> SqlExpr {
    let text = format!("get_field({call}, '{field}')");
    Parser::new(&GenericDialect {})
        .try_with_sql(&text)
        .and_then(|mut p| p.parse_expr())
        .unwrap_or_else(|_| SqlExpr::Identifier(Ident::new(field)))
}

fn replace_in(e: &mut SqlExpr, call: &SqlExpr) {
    struct R<'a>(&'a SqlExpr);
    impl VisitorMut for R<'_> {
        type Break = ();
        fn post_visit_expr(&mut self, e: &mut SqlExpr) -> ControlFlow<()> {
            if let SqlExpr::Identifier(id) = e
                && is_window_column(id)
            {
                *e = field_of(self.0, &id.value.to_ascii_lowercase());
            }
            ControlFlow::Continue(())
        }
    }
    let _ = e.visit(&mut R(call));
}

/// A window table in `FROM` that is not grouped by its window: why, and the fix.
#[derive(Debug, PartialEq, Eq)]
pub struct WindowTableError {
    /// The function's name as written (`TUMBLE`, `HOP`), to place the error.
    pub word: String,
    /// What is wrong.
    pub message: String,
    /// How to write it instead.
    pub fix: String,
}

/// Rewrites the window *tables* of RisingWave and Flink, `FROM TUMBLE(stream, time, size)` and
/// `FROM HOP(stream, time, slide, size)`, into the stream itself grouped by the window call:
/// `GROUP BY window_start` (or `window_end`) becomes `GROUP BY tumble(time, size)`, and
/// [`rewrite_window_columns`] then reads the bare names as the call's fields. Only grouped uses
/// are windows here (a window's rows are final when it closes); a window table that is not
/// grouped by its window, or `SESSION(...)` in `FROM`, is an error with the form to write.
pub fn rewrite_window_tables(stmt: &mut Statement) -> Result<(), WindowTableError> {
    struct Queries(Option<WindowTableError>);
    impl VisitorMut for Queries {
        type Break = ();
        fn post_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
            match tables_in_set_expr(q.body.as_mut()) {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => {
                    self.0 = Some(e);
                    ControlFlow::Break(())
                }
            }
        }
    }
    let mut v = Queries(None);
    let _ = stmt.visit(&mut v);
    v.0.map_or(Ok(()), Err)
}

fn tables_in_set_expr(body: &mut SetExpr) -> Result<(), WindowTableError> {
    match body {
        SetExpr::Select(select) => {
            let mut call: Option<(String, SqlExpr)> = None;
            for from in select.from.iter_mut() {
                let joined = from.joins.iter_mut().map(|j| &mut j.relation);
                for factor in std::iter::once(&mut from.relation).chain(joined) {
                    if let Some(found) = window_table(factor)? {
                        if call.is_some() {
                            return Err(WindowTableError {
                                message: "two window tables in one SELECT".into(),
                                fix: "window one stream, and join the other to it".into(),
                                word: found.0,
                            });
                        }
                        call = Some(found);
                    }
                }
            }
            let Some((word, call)) = call else { return Ok(()) };
            let mut placed = false;
            if let GroupByExpr::Expressions(groups, _) = &mut select.group_by {
                groups.retain_mut(|g| match g {
                    SqlExpr::Identifier(id) if is_window_column(id) => {
                        // window_start and window_end name the same window: one call.
                        let first = !placed;
                        *g = call.clone();
                        placed = true;
                        first
                    }
                    _ => true,
                });
            }
            if !placed {
                return Err(WindowTableError {
                    message: format!(
                        "{word}(...) in FROM without GROUP BY window_start: its rows would never be final"
                    ),
                    fix: format!(
                        "add window_start to the GROUP BY, or write FROM stream ... GROUP BY {call}"
                    ),
                    word,
                });
            }
            Ok(())
        }
        SetExpr::SetOperation { left, right, .. } => {
            tables_in_set_expr(left)?;
            tables_in_set_expr(right)
        }
        SetExpr::Query(q) => tables_in_set_expr(q.body.as_mut()),
        _ => Ok(()),
    }
}

/// If `factor` is `TUMBLE(stream, time, ...)` or `HOP(stream, time, ...)`: makes it the stream
/// (its alias kept) and returns the name written and the window call on the time column,
/// qualified by the alias or the stream.
fn window_table(factor: &mut TableFactor) -> Result<Option<(String, SqlExpr)>, WindowTableError> {
    let TableFactor::Table { name, alias, args: args @ Some(_), .. } = factor else { return Ok(None) };
    let word = name.to_string();
    let kind = word.to_ascii_lowercase();
    if kind == "session" {
        return Err(WindowTableError {
            message: "SESSION(...) is not a table here".into(),
            fix: "write FROM stream ... GROUP BY key, session(event_time, INTERVAL '30 seconds')".into(),
            word,
        });
    }
    let wanted = match kind.as_str() {
        "tumble" => 3,
        "hop" => 4,
        _ => return Ok(None),
    };
    let usage = if wanted == 3 {
        "TUMBLE(stream, event_time, INTERVAL '1 minute')"
    } else {
        "HOP(stream, event_time, INTERVAL '10 seconds', INTERVAL '1 minute')"
    };
    let exprs: Vec<SqlExpr> = args
        .as_ref()
        .map(|a| a.args.iter())
        .into_iter()
        .flatten()
        .filter_map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
            _ => None,
        })
        .collect();
    let bad = |what: &str| WindowTableError {
        message: format!("{word}(...) in FROM: {what}"),
        fix: format!("write {usage}"),
        word: word.clone(),
    };
    if exprs.len() != wanted || args.as_ref().is_some_and(|a| a.args.len() != wanted) {
        return Err(bad(&format!("takes {wanted} arguments")));
    }
    let stream = match &exprs[0] {
        SqlExpr::Identifier(id) => ObjectName::from(vec![id.clone()]),
        SqlExpr::CompoundIdentifier(ids) => ObjectName::from(ids.clone()),
        _ => return Err(bad("its first argument is the stream's name")),
    };
    let time = match &exprs[1] {
        SqlExpr::Identifier(id) => {
            let table = alias
                .as_ref()
                .map(|a| a.name.clone())
                .or_else(|| stream.0.last().and_then(|p| p.as_ident().cloned()));
            SqlExpr::CompoundIdentifier(table.into_iter().chain([id.clone()]).collect())
        }
        e @ SqlExpr::CompoundIdentifier(_) => e.clone(),
        _ => return Err(bad("its second argument is the event-time column")),
    };
    let rest: Vec<String> = exprs[2..].iter().map(|e| e.to_string()).collect();
    let text = format!("{kind}({time}, {})", rest.join(", "));
    let call = Parser::new(&GenericDialect {})
        .try_with_sql(&text)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| bad(&e.to_string()))?;
    *name = stream;
    *args = None;
    Ok(Some((word, call)))
}

/// The windows that contain each time of an ad-hoc query (tumble and hop only), as a list of
/// `{window_start, window_end}`: [`unnest_windows`] unnests it under the aggregate, so each row
/// is counted in every window it falls in, as a rule counts it.
#[derive(Debug, PartialEq, Eq, Hash)]
struct WindowsOf {
    kind: WindowKind,
    signature: Signature,
}

impl ScalarUDFImpl for WindowsOf {
    fn name(&self) -> &str {
        "vigil_windows_of"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        let window = window_type_in(args.first().and_then(zone_of));
        Ok(DataType::List(Arc::new(Field::new("item", window, false))))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        use datafusion::arrow::array::{
            Array, ArrayRef, Int64Array, ListArray, StructArray, TimestampMillisecondArray,
        };
        use datafusion::arrow::buffer::OffsetBuffer;
        let times = args.args[0].to_array(args.number_rows)?;
        let zone = zone_of(times.data_type()).unwrap_or_else(|| "UTC".into());
        let window = window_type_in(Some(Arc::clone(&zone)));
        let times = datafusion::arrow::compute::cast(&times, &DataType::Int64)?;
        let times = times.as_any().downcast_ref::<Int64Array>().expect("cast to Int64");
        let size = self.kind.size();
        let (mut starts, mut ends, mut lengths) = (Vec::new(), Vec::new(), Vec::with_capacity(times.len()));
        for t in times.iter() {
            let found = t.map(|t| self.kind.ends(t)).unwrap_or_default();
            lengths.push(found.len());
            for end in found {
                starts.push(end - size);
                ends.push(end);
            }
        }
        let DataType::Struct(fields) = window.clone() else { unreachable!("a window is a struct") };
        let column = |v: Vec<i64>| -> ArrayRef {
            Arc::new(TimestampMillisecondArray::from(v).with_timezone(Arc::clone(&zone)))
        };
        let windows = StructArray::try_new(fields, vec![column(starts), column(ends)], None)?;
        let list = ListArray::try_new(
            Arc::new(Field::new("item", window, false)),
            OffsetBuffer::from_lengths(lengths),
            Arc::new(windows),
            times.nulls().cloned(),
        )?;
        Ok(ColumnarValue::Array(Arc::new(list)))
    }
}

/// Makes an ad-hoc query's window aggregates computable by DataFusion: under each aggregate
/// grouped by `tumble(...)` or `hop(...)`, every row is repeated once per window it falls in
/// (the windows' list, unnested), and the group is that window, under the call's own name so
/// that what reads it (`window_start`, ...) is unchanged. A rule's windows are the dataflow's
/// operator; this is the batch reading of the same definition, over what is retained.
/// `session(...)` depends on the other rows of its group and is left to rules (an error).
pub fn unnest_windows(plan: LogicalPlan) -> crate::error::Result<LogicalPlan> {
    use crate::error::{Kind, SqlError};
    const WINDOW: &str = "__vigil_window";
    let most = crate::admission::Budget::default().windows_per_row;
    // Why a window cannot be read ad hoc, and the fix; DataFusion's errors pass through.
    let mut refused: Option<SqlError> = None;
    let rewritten = plan.transform_up(|node| {
        let LogicalPlan::Aggregate(agg) = &node else { return Ok(Transformed::no(node)) };
        let found = agg.group_expr.iter().enumerate().find_map(|(i, g)| Some((i, as_window(g)?)));
        let Some((i, window)) = found else { return Ok(Transformed::no(node)) };
        let kind = match window {
            Ok((WindowKind::Session { .. }, _)) => Err(SqlError::user(
                None,
                "session() windows are kept by rules only: a session depends on the rows after it",
                "CREATE RULE name AS SELECT ... GROUP BY session(...), then SELECT * FROM name",
            )
            .kind(Kind::Unsupported)),
            // Each row is repeated once per window it falls in: bounded as a rule's are, before
            // the windows' list is built (a 1 ms slide over a day would be 86 M per row).
            Ok((WindowKind::Hop { slide, size }, _)) if (size.saturating_add(slide - 1) / slide) > most => Err(SqlError::user(
                None,
                format!("each row falls in {} windows (at most {most} are accepted)", (size.saturating_add(slide - 1) / slide)),
                "use a longer slide for hop (a slide of a minute over an hour is 60 windows per row), or a tumble window",
            )
            .kind(Kind::InvalidParameter)),
            Ok(found) => Ok(found),
            Err(e) => Err(SqlError::user(None, e, "write INTERVAL literals such as INTERVAL '1 minute'")
                .kind(Kind::InvalidParameter)),
        };
        let (kind, time) = match kind {
            Ok(k) => k,
            Err(e) => {
                refused = Some(e);
                return plan_err!("refused");
            }
        };
        let name = agg.group_expr[i].schema_name().to_string();
        let udf =
            ScalarUDF::new_from_impl(WindowsOf { kind, signature: Signature::any(1, Volatility::Immutable) });
        let list = udf.call(vec![time]).alias(WINDOW);
        let columns = agg.input.schema().columns().into_iter().map(Expr::Column);
        let input = LogicalPlanBuilder::from(agg.input.as_ref().clone())
            .project(columns.chain([list]))?
            .unnest_column(WINDOW)?
            .build()?;
        let mut groups = agg.group_expr.clone();
        groups[i] = datafusion::prelude::col(WINDOW).alias(name);
        let aggregate = Aggregate::try_new(Arc::new(input), groups, agg.aggr_expr.clone())?;
        Ok(Transformed::yes(LogicalPlan::Aggregate(aggregate)))
    });
    match (rewritten, refused) {
        (_, Some(e)) => Err(e),
        (Ok(t), None) => Ok(t.data),
        (Err(e), None) => Err(SqlError::Internal(format!("reading the query's windows: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        let mut stmts = Parser::parse_sql(&GenericDialect {}, sql).unwrap();
        rewrite_window_columns(&mut stmts[0]);
        stmts[0].to_string()
    }

    #[test]
    fn window_columns_become_fields_of_the_window_call() {
        let s = rewritten(
            "SELECT zone_id, window_start, count(*) FROM detections \
             GROUP BY tumble(event_time, INTERVAL '1 minute'), zone_id HAVING window_end > now()",
        );
        assert!(
            s.contains("get_field(tumble(event_time, INTERVAL '1 minute'), 'window_start') AS window_start"),
            "{s}"
        );
        assert!(
            s.contains("HAVING get_field(tumble(event_time, INTERVAL '1 minute'), 'window_end') > now()"),
            "{s}"
        );
    }

    #[test]
    fn without_a_window_call_nothing_changes() {
        let sql = "SELECT window_start FROM detections";
        assert_eq!(rewritten(sql), sql);
    }

    #[test]
    fn panes_tile_hops() {
        assert_eq!(WindowKind::Hop { slide: 1_000, size: 300_000 }.pane(), Some(1_000));
        assert_eq!(WindowKind::Hop { slide: 4_000, size: 10_000 }.pane(), Some(2_000));
        assert_eq!(WindowKind::Tumble { size: 60_000 }.pane(), Some(60_000));
    }

    fn tables_rewritten(sql: &str) -> Result<String, WindowTableError> {
        let mut stmts = Parser::parse_sql(&GenericDialect {}, sql).unwrap();
        rewrite_window_tables(&mut stmts[0])?;
        rewrite_window_columns(&mut stmts[0]);
        Ok(stmts[0].to_string())
    }

    #[test]
    fn a_window_table_becomes_its_stream_grouped_by_the_window_call() {
        let s = tables_rewritten(
            "SELECT d.zone_id, window_start, count(*) FROM TUMBLE(detections, event_time, INTERVAL '1 minute') AS d \
             GROUP BY d.zone_id, window_start, window_end",
        )
        .unwrap();
        assert!(s.contains("FROM detections AS d"), "{s}");
        // The time column is qualified by the alias; window_start and window_end are one group.
        assert!(s.ends_with("GROUP BY d.zone_id, tumble(d.event_time, INTERVAL '1 minute')"), "{s}");
        assert!(
            s.contains(
                "get_field(tumble(d.event_time, INTERVAL '1 minute'), 'window_start') AS window_start"
            ),
            "{s}"
        );
        let s = tables_rewritten(
            "SELECT CAST(window_end AS BIGINT), count(*) FROM HOP(plate_reads, event_time, INTERVAL '5 seconds', INTERVAL '15 seconds') \
             GROUP BY window_end",
        )
        .unwrap();
        assert!(
            s.contains("GROUP BY hop(plate_reads.event_time, INTERVAL '5 seconds', INTERVAL '15 seconds')"),
            "{s}"
        );
        // An expression of a window column keeps its written name.
        assert!(s.contains("AS \"CAST(window_end AS BIGINT)\""), "{s}");
    }

    #[test]
    fn a_window_table_used_otherwise_is_refused_with_the_form_to_write() {
        let e = tables_rewritten("SELECT * FROM TUMBLE(detections, event_time, INTERVAL '1 minute')")
            .unwrap_err();
        assert_eq!(e.word, "TUMBLE");
        assert!(e.message.contains("without GROUP BY window_start"), "{e:?}");
        assert!(e.fix.contains("GROUP BY tumble(detections.event_time, INTERVAL '1 minute')"), "{e:?}");
        let e = tables_rewritten(
            "SELECT window_start FROM hop(detections, event_time, INTERVAL '1 minute') GROUP BY window_start",
        )
        .unwrap_err();
        assert!(e.message.contains("takes 4 arguments") && e.fix.contains("HOP(stream, event_time"), "{e:?}");
        let e = tables_rewritten(
            "SELECT 1 FROM SESSION(detections, event_time, INTERVAL '1 minute') GROUP BY window_start",
        )
        .unwrap_err();
        assert!(e.fix.contains("GROUP BY key, session(event_time"), "{e:?}");
        // Other table functions are not windows.
        assert!(tables_rewritten("SELECT * FROM generate_series(1, 3)").is_ok());
    }

    #[test]
    fn a_hop_window_lists_every_window_of_a_time() {
        let hop = WindowKind::Hop { slide: 5, size: 15 };
        assert_eq!(hop.ends(12), vec![25, 20, 15]);
        assert_eq!(hop.ends(-3), vec![10, 5, 0]);
        assert_eq!(WindowKind::Tumble { size: 10 }.ends(-1), vec![0]);
    }
}

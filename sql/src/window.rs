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
use datafusion::common::{Result as DfResult, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, GroupByExpr, Ident, Query, SelectItem, SetExpr, Statement, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// The kinds of event-time window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The names of the window functions.
pub const WINDOW_FUNCTIONS: [&str; 3] = ["tumble", "hop", "session"];

/// The struct type a window call returns.
pub fn window_type() -> DataType {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
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
        Ok(window_type())
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        exec_err!("{}() can only appear in GROUP BY", self.name)
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
                    SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                        replace_in(e, &call)
                    }
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
}

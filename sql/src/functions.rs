//! The catalog's text functions ([`vigil_engine::catalog::TextFunction`]) as SQL scalar
//! functions: `normalize_plate(plate_raw)` in a rule or an ad-hoc query runs the function that
//! the stream's definition offers, on each row, with `NULL` in and `NULL` out. Also where
//! PostgreSQL's date-time and text rules differ from DataFusion's: [`date_part`] (fields of
//! durations and intervals), [`age`], [`interval_mul`], casts to text ([`PgTextCasts`]), and
//! [`pg_typeof`].

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, StringArray, StringBuilder};
use datafusion::arrow::datatypes::{DataType, FieldRef, Int32Type};
use datafusion::common::{Result as DfResult, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};
use vigil_engine::catalog::{Catalog as Streams, TextFunction};

#[derive(Debug)]
struct TextUdf {
    f: &'static TextFunction,
    signature: Signature,
}

impl PartialEq for TextUdf {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.f, other.f)
    }
}

impl Eq for TextUdf {}

impl std::hash::Hash for TextUdf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.f.name.hash(state);
    }
}

impl ScalarUDFImpl for TextUdf {
    fn name(&self) -> &str {
        self.f.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        if args.len() != 1 {
            return plan_err!("{}() takes one text argument, not {}", self.f.name, args.len());
        }
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let f = self.f.f;
        match &args.args[..] {
            [ColumnarValue::Scalar(s)] => {
                let text = match s {
                    ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v) => {
                        v.as_deref()
                    }
                    ScalarValue::Null => None,
                    other => return exec_err!("{}() takes text, not {}", self.f.name, other.data_type()),
                };
                Ok(ColumnarValue::Scalar(ScalarValue::Utf8(text.and_then(f))))
            }
            [ColumnarValue::Array(a)] => {
                let a = datafusion::arrow::compute::cast(a, &DataType::Utf8)?;
                let Some(strings) = a.as_any().downcast_ref::<StringArray>() else {
                    return exec_err!("{}() takes text, not {}", self.f.name, a.data_type());
                };
                let mut out = StringBuilder::with_capacity(strings.len(), strings.value_data().len());
                for v in strings {
                    out.append_option(v.and_then(f));
                }
                Ok(ColumnarValue::Array(Arc::new(out.finish()) as ArrayRef))
            }
            _ => exec_err!("{}() takes one text argument", self.f.name),
        }
    }
}

/// Each of the catalog's text functions as a scalar UDF.
pub fn text_udfs(streams: &Streams) -> Vec<Arc<ScalarUDF>> {
    streams
        .functions()
        .map(|f| {
            let signature = Signature::exact(vec![DataType::Utf8], Volatility::Immutable);
            Arc::new(ScalarUDF::new_from_impl(TextUdf { f, signature }))
        })
        .collect()
}

/// Plans `EXTRACT(field FROM x)` as [`date_part`] (DataFusion's planner calls its own), and an
/// interval times or divided by a number as [`interval_mul`]; first among a session's planners.
#[derive(Debug)]
pub struct Extract;

impl ExprPlanner for Extract {
    fn plan_extract(&self, args: Vec<Expr>) -> DfResult<PlannerResult<Vec<Expr>>> {
        Ok(PlannerResult::Planned(Expr::ScalarFunction(ScalarFunction::new_udf(date_part(), args))))
    }

    /// An interval (or a difference of instants) times or divided by a number, as PostgreSQL
    /// computes it ([`interval_mul`]); DataFusion 55 refuses both.
    fn plan_binary_op(
        &self,
        expr: datafusion::logical_expr::planner::RawBinaryExpr,
        schema: &datafusion::common::DFSchema,
    ) -> DfResult<PlannerResult<datafusion::logical_expr::planner::RawBinaryExpr>> {
        use datafusion::logical_expr::ExprSchemable;
        use datafusion::sql::sqlparser::ast::BinaryOperator;
        let span = |e: &Expr| matches!(e.get_type(schema), Ok(DataType::Interval(_) | DataType::Duration(_)));
        let number = |e: &Expr| e.get_type(schema).is_ok_and(|t| t.is_numeric());
        let call = |span: Expr, factor: Expr| {
            Ok(PlannerResult::Planned(Expr::ScalarFunction(ScalarFunction::new_udf(
                interval_mul(),
                vec![span, factor],
            ))))
        };
        match expr.op {
            BinaryOperator::Multiply if span(&expr.left) && number(&expr.right) => {
                call(expr.left, expr.right)
            }
            BinaryOperator::Multiply if number(&expr.left) && span(&expr.right) => {
                call(expr.right, expr.left)
            }
            BinaryOperator::Divide if span(&expr.left) && number(&expr.right) => {
                let one = Expr::Literal(ScalarValue::Float64(Some(1.0)), None);
                let inverse = Expr::BinaryExpr(datafusion::logical_expr::BinaryExpr::new(
                    Box::new(one),
                    datafusion::logical_expr::Operator::Divide,
                    Box::new(datafusion::logical_expr::cast(expr.right, DataType::Float64)),
                ));
                call(expr.left, inverse)
            }
            _ => Ok(PlannerResult::Original(expr)),
        }
    }
}

/// `vigil_interval_mul(span, factor)`: an interval or a duration (read as the days and time
/// vigil prints it as) times a number, as PostgreSQL's `interval_mul`: each of months, days and
/// time is multiplied, and a fraction of a month carries into days (30 to a month) and a
/// fraction of a day into the time (`INTERVAL '1 month' * 1.5` is `1 mon 15 days`,
/// `INTERVAL '1 day' * 2.5` is `2 days 12:00:00`).
pub fn interval_mul() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(IntervalMul(Signature::any(2, Volatility::Immutable))))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct IntervalMul(Signature);

impl ScalarUDFImpl for IntervalMul {
    fn name(&self) -> &str {
        "vigil_interval_mul"
    }

    fn signature(&self) -> &Signature {
        &self.0
    }

    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Interval(datafusion::arrow::datatypes::IntervalUnit::MonthDayNano))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        use datafusion::arrow::array::IntervalMonthDayNanoArray;
        use datafusion::arrow::datatypes::{Float64Type, IntervalMonthDayNano};
        let scalar = args.args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let rows = if scalar { 1 } else { args.number_rows };
        let spans = args.args[0].to_array(rows)?;
        let factors = datafusion::arrow::compute::cast(&args.args[1].to_array(rows)?, &DataType::Float64)?;
        let factors = factors.as_primitive::<Float64Type>();
        let mut out = Vec::with_capacity(rows);
        for i in 0..rows {
            let span = crate::server::types::interval(spans.as_ref(), i).filter(|_| spans.is_valid(i));
            let (Some((months, days, us)), true) = (span, factors.is_valid(i)) else {
                out.push(None);
                continue;
            };
            let f = factors.value(i);
            if !f.is_finite() {
                return exec_err!("division by zero: an interval divided by 0 (or multiplied by {f})");
            }
            // PostgreSQL's interval_mul, in microseconds (TSROUND keeps six decimals).
            let round = |x: f64| (x * 1e6).round() / 1e6;
            let m = (f64::from(months) * f).trunc();
            let mut d = (f64::from(days) * f).trunc();
            let month_days = round((f64::from(months) * f - m) * 30.0);
            let mut seconds = round((f64::from(days) * f - d + month_days - month_days.trunc()) * 86_400.0);
            if seconds.abs() >= 86_400.0 {
                d += (seconds / 86_400.0).trunc();
                seconds -= (seconds / 86_400.0).trunc() * 86_400.0;
            }
            d += month_days.trunc();
            let time_us = (us as f64 * f + seconds * 1e6).round();
            let fits = |x: f64, max: f64| x.abs() <= max;
            if !(fits(m, f64::from(i32::MAX)) && fits(d, f64::from(i32::MAX)) && fits(time_us, 9.2e15)) {
                return exec_err!("interval out of range: {f} times it does not fit in an interval");
            }
            out.push(Some(IntervalMonthDayNano::new(m as i32, d as i32, time_us as i64 * 1_000)));
        }
        result(scalar, Arc::new(IntervalMonthDayNanoArray::from(out)))
    }
}

/// DataFusion's `date_part` (and, planned by [`Extract`], `EXTRACT`) with PostgreSQL's answers
/// where DataFusion 55's differ:
/// - a duration or an interval is read as PostgreSQL reads its interval (a duration split into
///   days and time as vigil prints it, `2 days 02:00:22.4`): `second` is the seconds field with
///   its fraction (22.4), `hour` the hours field (2, not the 50 hours in all), `epoch` the whole
///   length with its fraction (DataFusion added a duration's nanoseconds as an `i32`, which
///   overflowed past 2.1 s: a dwell of 44.2 s gave 44);
/// - `second` and `millisecond` of a timestamp keep their fraction (23.4, not 23).
///
/// Written here because the fixes are not released (the interval epoch's is
/// apache/datafusion#19807) and PostgreSQL's field rules are what analysts check against.
pub fn date_part() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(DatePart(
        datafusion::functions::datetime::date_part().as_ref().clone(),
    )))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct DatePart(ScalarUDF);

/// A field `date_part` is asked for, under PostgreSQL's names and abbreviations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Microsecond,
    Millisecond,
    Second,
    Minute,
    Hour,
    Day,
    Month,
    Quarter,
    Year,
    Decade,
    Century,
    Millennium,
    Epoch,
    /// Any other (`dow`, `week`, …): DataFusion's for timestamps, refused for intervals.
    Other,
}

impl Field {
    fn parse(part: &str) -> Self {
        match part.trim_matches(['\'', '"']).to_ascii_lowercase().as_str() {
            "microsecond" | "microseconds" | "us" | "usec" | "usecs" | "useconds" => Self::Microsecond,
            "millisecond" | "milliseconds" | "ms" | "msec" | "msecs" | "mseconds" => Self::Millisecond,
            "second" | "seconds" | "s" | "sec" | "secs" => Self::Second,
            "minute" | "minutes" | "m" | "min" | "mins" => Self::Minute,
            "hour" | "hours" | "h" | "hr" | "hrs" => Self::Hour,
            "day" | "days" | "d" => Self::Day,
            "month" | "months" | "mon" | "mons" => Self::Month,
            "quarter" | "qtr" => Self::Quarter,
            "year" | "years" | "y" | "yr" | "yrs" => Self::Year,
            "decade" | "decades" | "dec" | "decs" => Self::Decade,
            "century" | "centuries" | "c" | "cent" => Self::Century,
            "millennium" | "millennia" | "mil" | "mils" => Self::Millennium,
            "epoch" => Self::Epoch,
            _ => Self::Other,
        }
    }

    /// The field of `args` (`date_part(field, value)`) when vigil answers it, not DataFusion.
    fn ours(part: Option<&ScalarValue>, value: &DataType) -> Option<Self> {
        let field = Self::parse(part?.try_as_str().flatten()?);
        match value {
            DataType::Duration(_) | DataType::Interval(_) => Some(field),
            DataType::Timestamp(..) | DataType::Time32(_) | DataType::Time64(_)
                if matches!(field, Self::Second | Self::Millisecond) =>
            {
                Some(field)
            }
            _ => None,
        }
    }

    /// This field of an interval of `months`, `days` and `us` microseconds, as PostgreSQL's
    /// `interval_part` computes it (a month is 30 days and a year 365.25 for `epoch`).
    fn of_interval(self, months: i32, days: i32, us: i64) -> f64 {
        let (years, months_left) = (months / 12, months % 12);
        let (hours, minutes, us_in_minute) = (us / 3_600_000_000, us / 60_000_000 % 60, us % 60_000_000);
        match self {
            Self::Microsecond => us_in_minute as f64,
            Self::Millisecond => us_in_minute as f64 / 1e3,
            Self::Second => us_in_minute as f64 / 1e6,
            Self::Minute => minutes as f64,
            Self::Hour => hours as f64,
            Self::Day => f64::from(days),
            Self::Month => f64::from(months_left),
            Self::Quarter => f64::from(months_left / 3 + 1),
            Self::Year => f64::from(years),
            Self::Decade => f64::from(years / 10),
            Self::Century => f64::from(years / 100),
            Self::Millennium => f64::from(years / 1000),
            Self::Epoch => {
                let day_s = 86_400.0;
                us as f64 / 1e6
                    + 365.25 * day_s * f64::from(years)
                    + 30.0 * day_s * f64::from(months_left)
                    + day_s * f64::from(days)
            }
            Self::Other => f64::NAN,
        }
    }

    /// The field of each value of `a`: a duration or interval (PostgreSQL's fields) or a
    /// timestamp or time (its seconds with their fraction).
    fn of(self, a: &ArrayRef, name: &str) -> DfResult<ArrayRef> {
        match a.data_type() {
            DataType::Duration(_) | DataType::Interval(_) => {
                if self == Self::Other {
                    return exec_err!(
                        "unit \"{name}\" not supported for type interval: an interval has epoch, \
                         microseconds, milliseconds, second, minute, hour, day, month, quarter, \
                         year, decade, century and millennium"
                    );
                }
                let values = (0..a.len()).map(|i| {
                    crate::server::types::interval(a.as_ref(), i)
                        .filter(|_| a.is_valid(i))
                        .map(|(months, days, us)| self.of_interval(months, days, us))
                });
                Ok(Arc::new(values.collect::<Float64Array>()))
            }
            _ => {
                use datafusion::arrow::compute::kernels::temporal::{DatePart as Arrow, date_part};
                let seconds = date_part(a, Arrow::Second)?;
                let nanos = date_part(a, Arrow::Nanosecond)?;
                let scale = if self == Self::Millisecond { 1e3 } else { 1e6 };
                // Microseconds, as PostgreSQL keeps (and vigil prints), then one division.
                let us: Float64Array = datafusion::arrow::compute::kernels::arity::binary(
                    seconds.as_primitive::<Int32Type>(),
                    nanos.as_primitive::<Int32Type>(),
                    |s, ns| (i64::from(s) * 1_000_000 + i64::from(ns) / 1_000) as f64 / scale,
                )?;
                Ok(Arc::new(us))
            }
        }
    }
}

impl ScalarUDFImpl for DatePart {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn aliases(&self) -> &[String] {
        self.0.aliases()
    }

    fn signature(&self) -> &Signature {
        self.0.signature()
    }

    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        self.0.return_type(args)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        match (args.scalar_arguments.first(), args.arg_fields.get(1)) {
            (Some(part), Some(value)) if Field::ours(*part, value.data_type()).is_some() => {
                Ok(Arc::new(datafusion::arrow::datatypes::Field::new(self.name(), DataType::Float64, true)))
            }
            _ => self.0.return_field_from_args(args),
        }
    }

    fn coerce_types(&self, args: &[DataType]) -> DfResult<Vec<DataType>> {
        self.0.coerce_types(args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.0.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let part = match args.args.first() {
            Some(ColumnarValue::Scalar(part)) => Some(part),
            _ => None,
        };
        let name = part.and_then(|p| p.try_as_str().flatten()).unwrap_or_default().to_ascii_lowercase();
        match args.args.get(1) {
            Some(ColumnarValue::Array(a)) => match Field::ours(part, a.data_type()) {
                Some(field) => Ok(ColumnarValue::Array(field.of(a, &name)?)),
                None => self.0.invoke_with_args(args),
            },
            Some(ColumnarValue::Scalar(v)) => match Field::ours(part, &v.data_type()) {
                Some(field) => result(true, field.of(&v.to_array()?, &name)?),
                None => self.0.invoke_with_args(args),
            },
            None => self.0.invoke_with_args(args),
        }
    }
}

/// `values` (computed over one row when every argument was a scalar) as a function's result:
/// a scalar again in that case.
fn result(scalar: bool, values: ArrayRef) -> DfResult<ColumnarValue> {
    Ok(match scalar {
        true => ColumnarValue::Scalar(ScalarValue::try_from_array(values.as_ref(), 0)?),
        false => ColumnarValue::Array(values),
    })
}

/// Casts to text of instants, durations, floats and lists print as PostgreSQL's do: DataFusion
/// gives Arrow's forms (`event_time::text` was `2026-06-14T20:00:00.500Z`, an hour's interval
/// `1 hours`, an array `[1, 2]`), which an analyst's `'seen at ' || event_time` carried into
/// reports. Rewritten after DataFusion's type coercion (which adds the casts `||` needs) into
/// [`pg_text`], the server's own text writer; the column keeps its name. Likewise an instant
/// cast to `timestamp` is the session zone's wall clock (`to_local_time`), not UTC's.
#[derive(Debug)]
pub struct PgTextCasts;

impl datafusion::optimizer::AnalyzerRule for PgTextCasts {
    fn analyze(
        &self,
        plan: datafusion::logical_expr::LogicalPlan,
        _: &datafusion::config::ConfigOptions,
    ) -> DfResult<datafusion::logical_expr::LogicalPlan> {
        use datafusion::common::DFSchema;
        use datafusion::common::tree_node::{Transformed, TreeNode};
        use datafusion::logical_expr::ExprSchemable;
        use datafusion::logical_expr::expr_rewriter::NamePreserver;
        plan.transform_up_with_subqueries(|plan| {
            let mut schema = DFSchema::empty();
            for input in plan.inputs() {
                schema.merge(input.schema());
            }
            let names = NamePreserver::new(&plan);
            plan.map_expressions(|expr| {
                let name = names.save(&expr);
                let rewritten = expr.transform_up(|e| {
                    if let Some(e) = pg_time_literal(&e) {
                        return Ok(Transformed::yes(e));
                    }
                    let Expr::Cast(cast) = &e else { return Ok(Transformed::no(e)) };
                    let target = cast.field.data_type();
                    let from = cast.expr.get_type(&schema).ok();
                    // An instant to a local time: the session zone's wall clock, as PostgreSQL
                    // gives (Arrow's cast keeps UTC's).
                    if let (DataType::Timestamp(_, None), Some(DataType::Timestamp(_, Some(_)))) =
                        (target, &from)
                    {
                        let local = datafusion::functions::datetime::to_local_time();
                        let local =
                            Expr::ScalarFunction(ScalarFunction::new_udf(local, vec![*cast.expr.clone()]));
                        let cast = datafusion::logical_expr::Cast::new_from_field(
                            Box::new(local),
                            Arc::clone(&cast.field),
                        );
                        return Ok(Transformed::yes(Expr::Cast(cast)));
                    }
                    let to_text = matches!(target, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
                    if !to_text || !from.as_ref().is_some_and(pg_text_differs) {
                        return Ok(Transformed::no(e));
                    }
                    let text =
                        Expr::ScalarFunction(ScalarFunction::new_udf(pg_text(), vec![*cast.expr.clone()]));
                    Ok(Transformed::yes(match target {
                        DataType::Utf8 => text,
                        _ => Expr::Cast(datafusion::logical_expr::Cast::new_from_field(
                            Box::new(text),
                            Arc::clone(&cast.field),
                        )),
                    }))
                })?;
                Ok(rewritten.update_data(|e| name.restore(e)))
            })?
            .map_data(|plan| plan.recompute_schema())
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "vigil_pg_text_casts"
    }
}

/// A quoted time cast to an instant (`TIMESTAMPTZ '2026-06-14 20:00'`, or `event_time >
/// '2026-06-14 20:00'` once coerced) in a form PostgreSQL reads and Arrow's parser refuses
/// (minutes without seconds, an offset of hours alone such as `+01`): the same cast of the
/// text Arrow reads. None for anything else, which Arrow parses (or refuses) as it is.
fn pg_time_literal(e: &Expr) -> Option<Expr> {
    let (inner, to) = match e {
        Expr::Cast(c) => (&c.expr, c.field.data_type()),
        Expr::TryCast(c) => (&c.expr, c.field.data_type()),
        _ => return None,
    };
    let Expr::Literal(
        ScalarValue::Utf8(Some(text))
        | ScalarValue::Utf8View(Some(text))
        | ScalarValue::LargeUtf8(Some(text)),
        meta,
    ) = inner.as_ref()
    else {
        return None;
    };
    if !matches!(to, DataType::Timestamp(..)) {
        return None;
    }
    let text = pg_time_text(text)?;
    let literal = Box::new(Expr::Literal(ScalarValue::Utf8(Some(text)), meta.clone()));
    Some(match e {
        Expr::Cast(c) => {
            Expr::Cast(datafusion::logical_expr::Cast::new_from_field(literal, Arc::clone(&c.field)))
        }
        Expr::TryCast(c) => {
            Expr::TryCast(datafusion::logical_expr::TryCast::new_from_field(literal, Arc::clone(&c.field)))
        }
        _ => return None,
    })
}

/// `text` in a form Arrow's timestamp parser reads, if it is one of PostgreSQL's ISO forms
/// Arrow refuses: `2026-06-14 20:00`, `2026-06-14T9:05`, `2026-06-14 20:00+01`,
/// `2026-06-14 20:00:00.5+01`. Written here with chrono's formats because Arrow's parser is
/// strict (RFC 3339 with optional parts) and DataFusion has no other.
fn pg_time_text(text: &str) -> Option<String> {
    let t = text.trim();
    for f in ["%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"] {
        if let Ok(n) = chrono::NaiveDateTime::parse_from_str(t, f) {
            return Some(n.format("%Y-%m-%dT%H:%M:%S").to_string());
        }
    }
    let zoned = [
        "%Y-%m-%d %H:%M%#z",
        "%Y-%m-%dT%H:%M%#z",
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%dT%H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M %#z",
        "%Y-%m-%d %H:%M:%S%.f %#z",
    ];
    for f in zoned {
        if let Ok(d) = chrono::DateTime::parse_from_str(t, f) {
            return Some(d.to_rfc3339());
        }
    }
    None
}

/// Quoted times typed or cast as timestamps in the SQL text (`TIMESTAMPTZ '2026-06-14 20:00'`,
/// `CAST('…' AS TIMESTAMPTZ)`), rewritten as [`PgTextCasts`] rewrites them in a plan: for what
/// DataFusion evaluates while it plans, before any analyzer runs (a table function's arguments,
/// `FROM generate_series(TIMESTAMPTZ '2026-06-14 20:00', …)`).
pub(crate) fn rewrite_quoted_times(stmt: &mut datafusion::sql::sqlparser::ast::Statement) {
    use datafusion::sql::sqlparser::ast::{DataType as SqlType, Expr, Value, visit_expressions_mut};
    let _ = visit_expressions_mut(stmt, |e| {
        let quoted = match e {
            Expr::TypedString(ts) if matches!(ts.data_type, SqlType::Timestamp(..)) => {
                Some(&mut ts.value.value)
            }
            Expr::Cast { expr, data_type: SqlType::Timestamp(..), .. } => match expr.as_mut() {
                Expr::Value(v) => Some(&mut v.value),
                _ => None,
            },
            _ => None,
        };
        if let Some(Value::SingleQuotedString(text)) = quoted
            && let Some(read) = pg_time_text(text)
        {
            *text = read;
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

/// The function `name` calls, lower-cased as PostgreSQL folds it (`pg_catalog.Generate_Series`
/// is `generate_series`); `None` for a name that is not an identifier.
fn function_name(name: &datafusion::sql::sqlparser::ast::ObjectName) -> Option<String> {
    Some(name.0.last()?.as_ident()?.value.to_lowercase())
}

/// Table functions that return one column, which DataFusion names `value`.
const ONE_COLUMN_FUNCTIONS: [&str; 2] = ["generate_series", "range"];

/// PostgreSQL's name for the one column of `generate_series` (and `range`) in FROM: the
/// function's name, or the table alias when it is given without column names
/// (`SELECT d FROM generate_series(…) AS d`, a common way to write time buckets), where
/// DataFusion names it `value` whatever the alias.
pub(crate) fn name_series_columns(stmt: &mut datafusion::sql::sqlparser::ast::Statement) {
    use datafusion::sql::sqlparser::ast::{
        Ident, TableAlias, TableAliasColumnDef, TableFactor, VisitMut, VisitorMut,
    };
    struct Namer;
    impl VisitorMut for Namer {
        type Break = ();
        fn pre_visit_table_factor(&mut self, t: &mut TableFactor) -> std::ops::ControlFlow<()> {
            if let TableFactor::Table { name, alias, args: Some(_), .. } = t
                && let Some(column) = function_name(name)
                && ONE_COLUMN_FUNCTIONS.contains(&column.as_str())
            {
                match alias {
                    None => {
                        *alias = Some(TableAlias {
                            explicit: true,
                            name: Ident::new(&column),
                            columns: vec![TableAliasColumnDef::from_name(column)],
                            at: None,
                        });
                    }
                    Some(a) if a.columns.is_empty() => {
                        a.columns.push(TableAliasColumnDef { name: a.name.clone(), data_type: None });
                    }
                    Some(_) => {}
                }
            }
            std::ops::ControlFlow::Continue(())
        }
    }
    let _ = stmt.visit(&mut Namer);
}

/// PostgreSQL's `SELECT generate_series(1, 3)`: a set-returning function in the select list
/// gives a row per value, where DataFusion's scalar `generate_series` gives one row holding a
/// list. A select item that is the call alone becomes the table function's column when the
/// query has no FROM, `unnest(generate_series(…))` when it has one, named as PostgreSQL names
/// it (`generate_series`, or its alias). Calls inside other expressions
/// (`generate_series(1, 3) + 1`) are left as DataFusion reads them.
pub(crate) fn expand_series_in_select(stmt: &mut datafusion::sql::sqlparser::ast::Statement) {
    use datafusion::sql::sqlparser::ast::{
        Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, ObjectName, Query, Select, SelectItem,
        SetExpr, Statement, TableFactor, Value, VisitMut, VisitorMut,
    };
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    fn unnest(e: &mut Expr) -> bool {
        let Expr::Function(f) = e else { return false };
        if function_name(&f.name).as_deref() != Some("generate_series")
            || f.over.is_some()
            || !matches!(f.args, FunctionArguments::List(_))
        {
            return false;
        }
        let call = Expr::Function(f.clone());
        f.name = ObjectName::from(vec![Ident::new("unnest")]);
        if let FunctionArguments::List(list) = &mut f.args {
            list.args = vec![FunctionArg::Unnamed(FunctionArgExpr::Expr(call))];
            list.duplicate_treatment = None;
            list.clauses.clear();
        }
        true
    }
    // Without FROM (`SELECT generate_series(1, 3)`), the one call becomes the table function,
    // which streams its rows (and is stopped at the query's memory); the scalar one builds its
    // whole list first (300 million values took 8.6 GB here before the limit stopped it).
    fn from_series(s: &mut Select) -> bool {
        let calls: Vec<usize> = s
            .projection
            .iter()
            .enumerate()
            .filter(|(_, i)| match i {
                SelectItem::UnnamedExpr(Expr::Function(f))
                | SelectItem::ExprWithAlias { expr: Expr::Function(f), .. } => {
                    function_name(&f.name).as_deref() == Some("generate_series")
                        && f.over.is_none()
                        && matches!(f.args, FunctionArguments::List(_))
                }
                _ => false,
            })
            .map(|(i, _)| i)
            .collect();
        let [i] = calls[..] else { return false };
        if !s.from.is_empty() {
            return false;
        }
        let template = "SELECT 1 FROM generate_series(0, 1) AS \"vigil series\"(v)";
        let Ok(mut parsed) = Parser::parse_sql(&GenericDialect {}, template) else { return false };
        let Some(Statement::Query(q)) = parsed.pop() else { return false };
        let SetExpr::Select(mut t) = *q.body else { return false };
        let Some(mut from) = t.from.pop() else { return false };
        let (expr, alias) = match s.projection[i].clone() {
            SelectItem::UnnamedExpr(e) => (e, Ident::new("generate_series")),
            SelectItem::ExprWithAlias { expr, alias } => (expr, alias),
            _ => return false,
        };
        let (Expr::Function(f), TableFactor::Table { args: Some(args), .. }) = (expr, &mut from.relation)
        else {
            return false;
        };
        let FunctionArguments::List(list) = f.args else { return false };
        args.args = list.args;
        s.from = vec![from];
        let column = Expr::CompoundIdentifier(vec![Ident::with_quote('"', "vigil series"), Ident::new("v")]);
        s.projection[i] = SelectItem::ExprWithAlias { expr: column, alias };
        true
    }
    fn selects(body: &mut SetExpr) {
        match body {
            SetExpr::Select(s) => {
                if from_series(s) {
                    return;
                }
                for item in s.projection.iter_mut() {
                    if let SelectItem::UnnamedExpr(e) = item
                        && unnest(e)
                    {
                        let expr = std::mem::replace(e, Expr::value(Value::Null));
                        *item = SelectItem::ExprWithAlias { expr, alias: Ident::new("generate_series") };
                    } else if let SelectItem::ExprWithAlias { expr, .. } = item {
                        unnest(expr);
                    }
                }
            }
            SetExpr::SetOperation { left, right, .. } => {
                selects(left);
                selects(right);
            }
            SetExpr::Query(q) => selects(&mut q.body),
            _ => {}
        }
    }
    struct Queries;
    impl VisitorMut for Queries {
        type Break = ();
        fn pre_visit_query(&mut self, q: &mut Query) -> std::ops::ControlFlow<()> {
            selects(&mut q.body);
            std::ops::ControlFlow::Continue(())
        }
    }
    let _ = stmt.visit(&mut Queries);
}

/// PostgreSQL's `x = ANY('{a,b}')`: an array written as a text literal (psql users write
/// lists so), read by [`pg_array`]; DataFusion would take it for one text and fail.
fn rewrite_array_literals(stmt: &mut datafusion::sql::sqlparser::ast::Statement) {
    use datafusion::sql::sqlparser::ast::{
        Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Value, visit_expressions_mut,
    };
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    let _ = visit_expressions_mut(stmt, |e| {
        if let Expr::AnyOp { right, .. } | Expr::AllOp { right, .. } = e {
            let mut inner = right.as_mut();
            while let Expr::Nested(n) = inner {
                inner = n.as_mut();
            }
            if let Expr::Value(v) = inner
                && matches!(v.value, Value::SingleQuotedString(_))
                && let Ok(mut call) = Parser::new(&GenericDialect {})
                    .try_with_sql("pg_array(NULL)")
                    .and_then(|mut p| p.parse_expr())
                && let Expr::Function(f) = &mut call
                && let FunctionArguments::List(list) = &mut f.args
            {
                list.args = vec![FunctionArg::Unnamed(FunctionArgExpr::Expr(inner.clone()))];
                *inner = call;
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

/// The PostgreSQL forms rules and ad-hoc queries both read (one list, so a form added here reaches
/// both): `x = ANY('{a,b}')` ([`rewrite_array_literals`]) and `timezone(zone, t)`
/// ([`rewrite_timezone_calls`]).
pub(crate) fn rewrite_pg_forms(stmt: &mut datafusion::sql::sqlparser::ast::Statement) {
    rewrite_array_literals(stmt);
    rewrite_timezone_calls(stmt);
}

/// PostgreSQL's `timezone(zone, t)`: `t AT TIME ZONE zone` as a function (DataFusion reads the
/// operator, not the function), so `timezone('Africa/Casablanca', event_time)` reads the wall
/// clock there as the operator does.
fn rewrite_timezone_calls(stmt: &mut datafusion::sql::sqlparser::ast::Statement) {
    use datafusion::sql::sqlparser::ast::{
        Expr, FunctionArg, FunctionArgExpr, FunctionArguments, visit_expressions_mut,
    };
    let _ = visit_expressions_mut(stmt, |e| {
        if let Expr::Function(f) = e
            && function_name(&f.name).as_deref() == Some("timezone")
            && let FunctionArguments::List(list) = &f.args
            && let [
                FunctionArg::Unnamed(FunctionArgExpr::Expr(zone)),
                FunctionArg::Unnamed(FunctionArgExpr::Expr(t)),
            ] = list.args.as_slice()
        {
            *e = Expr::Nested(Box::new(Expr::AtTimeZone {
                timestamp: Box::new(t.clone()),
                time_zone: Box::new(zone.clone()),
            }));
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

/// PostgreSQL's `make_interval(years, months, weeks, days, hours, mins, secs)`, each argument
/// optional and nameable (`now() - make_interval(mins => $1)`: a window a driver can bind, where
/// `INTERVAL '5 minutes'` cannot take a parameter). DataFusion has no such function, and its
/// named arguments may not skip one, so the call is written out as the sum it is: `(INTERVAL
/// '0 seconds' + INTERVAL '1 minute' * CAST((…) AS DOUBLE) + …)`. A call it cannot read (an unknown name, too
/// many arguments) is left for DataFusion to refuse.
pub(crate) fn rewrite_make_interval(stmt: &mut datafusion::sql::sqlparser::ast::Statement) {
    use datafusion::sql::sqlparser::ast::{
        BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, visit_expressions_mut,
    };
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    const PARTS: [(&str, &str); 7] = [
        ("years", "1 year"),
        ("months", "1 month"),
        ("weeks", "7 days"),
        ("days", "1 day"),
        ("hours", "1 hour"),
        ("mins", "1 minute"),
        ("secs", "1 second"),
    ];
    // `INTERVAL '<unit>' * CAST(NULL AS DOUBLE)`, the NULL then replaced by the argument (the
    // arguments are not written out and parsed again: a deep one would pass the parser's limit).
    let term = |unit: &str, value: &Expr| -> Option<Expr> {
        let text = format!("INTERVAL '{unit}' * CAST(NULL AS DOUBLE)");
        let mut term = Parser::new(&GenericDialect {}).try_with_sql(&text).ok()?.parse_expr().ok()?;
        if let Expr::BinaryOp { right, .. } = &mut term
            && let Expr::Cast { expr, .. } = right.as_mut()
        {
            // As a number: a bound parameter would otherwise be taken for an interval.
            **expr = Expr::Nested(Box::new(value.clone()));
        }
        Some(term)
    };
    let written = |args: &[FunctionArg]| -> Option<Expr> {
        let zero =
            Parser::new(&GenericDialect {}).try_with_sql("INTERVAL '0 seconds'").ok()?.parse_expr().ok()?;
        let mut sum = zero;
        for (i, arg) in args.iter().enumerate() {
            let (unit, value) = match arg {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => (PARTS.get(i)?.1, e),
                FunctionArg::Named { name, arg: FunctionArgExpr::Expr(e), .. }
                | FunctionArg::ExprNamed {
                    name: Expr::Identifier(name),
                    arg: FunctionArgExpr::Expr(e),
                    ..
                } => (PARTS.iter().find(|p| p.0.eq_ignore_ascii_case(&name.value))?.1, e),
                _ => return None,
            };
            sum = Expr::BinaryOp {
                left: Box::new(sum),
                op: BinaryOperator::Plus,
                right: Box::new(term(unit, value)?),
            };
        }
        Some(Expr::Nested(Box::new(sum)))
    };
    let _ = visit_expressions_mut(stmt, |e| {
        if let Expr::Function(f) = e
            && function_name(&f.name).as_deref() == Some("make_interval")
            && let FunctionArguments::List(list) = &f.args
            && let Some(sum) = written(&list.args)
        {
            *e = sum;
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

/// Whether PostgreSQL's text form of a `t` differs from Arrow's display.
fn pg_text_differs(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Timestamp(..)
            | DataType::Duration(_)
            | DataType::Interval(_)
            | DataType::Float16
            | DataType::Float32
            | DataType::Float64
            | DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(..)
    )
}

/// `vigil_pg_text(x)`: `x` in PostgreSQL's text form, as the server sends it (see
/// [`PgTextCasts`]).
pub fn pg_text() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(PgText(Signature::any(1, Volatility::Immutable))))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct PgText(Signature);

impl ScalarUDFImpl for PgText {
    fn name(&self) -> &str {
        "vigil_pg_text"
    }

    fn signature(&self) -> &Signature {
        &self.0
    }

    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let scalar = matches!(args.args[0], ColumnarValue::Scalar(_));
        let values = args.args[0].to_array(if scalar { 1 } else { args.number_rows })?;
        let options = datafusion::arrow::util::display::FormatOptions::default();
        let formatter = datafusion::arrow::util::display::ArrayFormatter::try_new(values.as_ref(), &options)?;
        let mut out = StringBuilder::with_capacity(values.len(), values.len() * 24);
        let mut text = String::new();
        for i in 0..values.len() {
            if values.is_null(i) {
                out.append_null();
                continue;
            }
            text.clear();
            crate::server::types::write_pg_text(&mut text, values.as_ref(), &formatter, i);
            out.append_value(&text);
        }
        result(scalar, Arc::new(out.finish()))
    }
}

/// PostgreSQL's `age(a, b)`: `a - b` as years, months and days of the calendar, then a time
/// (`age('2026-06-14 20:00', '2026-03-31 21:30')` is `2 mons 13 days 22:30:00`), counted on the
/// wall clock of the instants' zone (the session's `TimeZone`); `age(b)` is from midnight today.
/// The difference of two instants alone (`a - b`) is days and a time. Written here because
/// DataFusion has no `age`; the rules are PostgreSQL's `timestamp_age` (a day borrowed from the
/// month of the earlier instant's side).
pub fn age() -> Arc<ScalarUDF> {
    let signature = Signature::one_of(
        vec![
            datafusion::logical_expr::TypeSignature::Any(1),
            datafusion::logical_expr::TypeSignature::Any(2),
        ],
        Volatility::Stable,
    );
    Arc::new(ScalarUDF::new_from_impl(Age(signature)))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Age(Signature);

impl ScalarUDFImpl for Age {
    fn name(&self) -> &str {
        "age"
    }

    fn signature(&self) -> &Signature {
        &self.0
    }

    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        // A quoted time (`age(now(), '2026-01-01')`) is read as PostgreSQL reads its literal of
        // unknown type: an instant in the session's zone.
        if let Some(t) = args.iter().find(|t| {
            !matches!(
                t,
                DataType::Timestamp(..)
                    | DataType::Null
                    | DataType::Utf8
                    | DataType::Utf8View
                    | DataType::LargeUtf8
            )
        }) {
            return plan_err!("age() takes timestamps (age(a, b) or age(b)), not {t}");
        }
        Ok(DataType::Interval(datafusion::arrow::datatypes::IntervalUnit::MonthDayNano))
    }

    /// `age(b)` is `age(midnight today, b)`, today on the clock `now()` reads (in a query, the
    /// engine's), in `b`'s zone or the session's.
    fn simplify(
        &self,
        args: Vec<datafusion::logical_expr::Expr>,
        info: &datafusion::logical_expr::simplify::SimplifyContext,
    ) -> DfResult<datafusion::logical_expr::simplify::ExprSimplifyResult> {
        use datafusion::logical_expr::simplify::ExprSimplifyResult;
        let (Some(at), [b]) = (info.query_execution_start_time(), &args[..]) else {
            return Ok(ExprSimplifyResult::Original(args));
        };
        let (zone, tz) = age_zone(crate::window::zone_of(&info.get_data_type(b)?), info.config_options())?;
        let today = ScalarValue::TimestampMicrosecond(midnight(at, &tz), Some(zone));
        let args = vec![datafusion::logical_expr::lit(today), b.clone()];
        Ok(ExprSimplifyResult::Simplified(datafusion::logical_expr::Expr::ScalarFunction(
            ScalarFunction::new_udf(age(), args),
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        use datafusion::arrow::array::IntervalMonthDayNanoArray;
        use datafusion::arrow::datatypes::{TimeUnit, TimestampMicrosecondType};
        let n = args.number_rows;
        let scalar = args.args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let rows = if scalar { 1 } else { n };
        let zone = args.arg_fields.iter().find_map(|f| crate::window::zone_of(f.data_type()));
        let (zone, tz) = age_zone(zone, &args.config_options)?;
        let micros = |a: &ColumnarValue| -> DfResult<ArrayRef> {
            let mut a = a.to_array(rows)?;
            if !matches!(a.data_type(), DataType::Timestamp(..) | DataType::Null) {
                // Text without an offset is a wall-clock time in `zone`; text that is no time
                // is an error, as in PostgreSQL, not a NULL.
                let text = datafusion::arrow::compute::cast(&a, &DataType::Utf8)?;
                a = Arc::new(
                    text.as_string::<i32>()
                        .iter()
                        .map(|t| t.map(|t| pg_time_text(t).unwrap_or_else(|| t.to_owned())))
                        .collect::<StringArray>(),
                );
                let options = datafusion::arrow::compute::CastOptions { safe: false, ..Default::default() };
                let zoned = DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::clone(&zone)));
                // Arrow's parse error carries the fix the psql endpoint gives for any bad time.
                a = datafusion::arrow::compute::cast_with_options(&a, &zoned, &options)?;
            }
            Ok(datafusion::arrow::compute::cast(&a, &DataType::Timestamp(TimeUnit::Microsecond, None))?)
        };
        let (a, b) = match &args.args[..] {
            // `simplify` makes it `age(midnight today, b)`, today on the query's clock; evaluated
            // before that (constant folding tries), it has no clock to read.
            [_] => return exec_err!("age(b) reads the time now: it runs only once simplified"),
            [a, b] => (micros(a)?, micros(b)?),
            _ => return exec_err!("age() takes one or two timestamps"),
        };
        let (a, b) =
            (a.as_primitive::<TimestampMicrosecondType>(), b.as_primitive::<TimestampMicrosecondType>());
        let out: IntervalMonthDayNanoArray =
            a.iter().zip(b.iter()).map(|(a, b)| age_of(a?, b?, &tz)).collect();
        result(scalar, Arc::new(out))
    }
}

/// The zone `age()` counts its calendar in, named and read: its arguments' (`zone`), else the
/// session's, else UTC.
fn age_zone(
    zone: Option<Arc<str>>,
    config: &datafusion::config::ConfigOptions,
) -> DfResult<(Arc<str>, datafusion::arrow::array::timezone::Tz)> {
    let zone = zone
        .or_else(|| config.execution.time_zone.as_deref().map(Arc::from))
        .unwrap_or_else(|| Arc::from("UTC"));
    let tz = zone.parse().or_else(|_| "UTC".parse())?;
    Ok((zone, tz))
}

/// Midnight of `at`'s day on `tz`'s wall clock, as an instant (microseconds).
fn midnight(at: chrono::DateTime<chrono::Utc>, tz: &datafusion::arrow::array::timezone::Tz) -> Option<i64> {
    at.with_timezone(tz)
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .and_then(|m| m.and_local_timezone(*tz).earliest())
        .map(|m| m.timestamp_micros())
}

/// `age(a, b)` of two instants (microseconds) on `tz`'s wall clock, as PostgreSQL's
/// `timestamp_age` computes it.
fn age_of(
    a: i64,
    b: i64,
    tz: &datafusion::arrow::array::timezone::Tz,
) -> Option<datafusion::arrow::datatypes::IntervalMonthDayNano> {
    use chrono::{Datelike, Timelike};
    let local =
        |us: i64| chrono::DateTime::from_timestamp_micros(us).map(|d| d.with_timezone(tz).naive_local());
    let (l1, l2) = (local(a)?, local(b)?);
    let fields = |l: &chrono::NaiveDateTime| {
        [
            i64::from(l.year()),
            i64::from(l.month()),
            i64::from(l.day()),
            i64::from(l.hour()),
            i64::from(l.minute()),
            i64::from(l.second()),
            i64::from(l.nanosecond() / 1_000),
        ]
    };
    let (f1, f2) = (fields(&l1), fields(&l2));
    let [mut year, mut mon, mut mday, mut hour, mut min, mut sec, mut usec]: [i64; 7] =
        std::array::from_fn(|i| f1[i] - f2[i]);
    let earlier = a < b;
    let flip = |v: [&mut i64; 7]| v.into_iter().for_each(|x| *x = -*x);
    if earlier {
        flip([&mut year, &mut mon, &mut mday, &mut hour, &mut min, &mut sec, &mut usec]);
    }
    while usec < 0 {
        usec += 1_000_000;
        sec -= 1;
    }
    while sec < 0 {
        sec += 60;
        min -= 1;
    }
    while min < 0 {
        min += 60;
        hour -= 1;
    }
    while hour < 0 {
        hour += 24;
        mday -= 1;
    }
    while mday < 0 {
        // The days of the month before the later side's: the earlier instant's month.
        let (y, m) = if earlier { (l1.year(), l1.month()) } else { (l2.year(), l2.month()) };
        let next = if m == 12 {
            chrono::NaiveDate::from_ymd_opt(y + 1, 1, 1)
        } else {
            chrono::NaiveDate::from_ymd_opt(y, m + 1, 1)
        };
        let days = next?.pred_opt()?.day();
        mday += i64::from(days);
        mon -= 1;
    }
    while mon < 0 {
        mon += 12;
        year -= 1;
    }
    if earlier {
        flip([&mut year, &mut mon, &mut mday, &mut hour, &mut min, &mut sec, &mut usec]);
    }
    let nanos = (((hour * 60 + min) * 60 + sec) * 1_000_000 + usec) * 1_000;
    Some(datafusion::arrow::datatypes::IntervalMonthDayNano::new(
        i32::try_from(year * 12 + mon).ok()?,
        i32::try_from(mday).ok()?,
        nanos,
    ))
}

/// `pg_typeof(x)`: the PostgreSQL type a value is sent as (`timestamp with time zone`,
/// `bigint`), as psql users ask it when a comparison or a cast does not do what they meant.
pub fn pg_typeof() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(PgTypeof(Signature::any(1, Volatility::Immutable))))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct PgTypeof(Signature);

impl ScalarUDFImpl for PgTypeof {
    fn name(&self) -> &str {
        "pg_typeof"
    }

    fn signature(&self) -> &Signature {
        &self.0
    }

    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let Some(arg) = args.arg_fields.first() else { return exec_err!("pg_typeof takes one argument") };
        let name = crate::server::types::type_name(arg.data_type()).name;
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(name.to_owned()))))
    }
}

/// `pg_array(text)`: PostgreSQL's array text (`{a,"b c",NULL}`, what a driver sends for a list)
/// as a list of texts, for a parameter in `= ANY($1)` ([`crate::server`] writes the call in);
/// `NULL` in, `NULL` out.
pub fn pg_array() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(PgArray(Signature::exact(vec![DataType::Utf8], Volatility::Immutable))))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct PgArray(Signature);

impl ScalarUDFImpl for PgArray {
    fn name(&self) -> &str {
        "pg_array"
    }

    fn signature(&self) -> &Signature {
        &self.0
    }

    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::new_list(DataType::Utf8, true))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        use datafusion::arrow::array::ListBuilder;
        let scalar = matches!(args.args.first(), Some(ColumnarValue::Scalar(_)));
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let Some(texts) = arrays.first().and_then(|a| a.as_string_opt::<i32>()) else {
            return exec_err!("pg_array takes one text");
        };
        let mut out = ListBuilder::new(StringBuilder::new());
        for text in texts {
            match text {
                None => out.append_null(),
                Some(t) => {
                    let elements = parse_pg_array(t).map_err(|e| {
                        datafusion::error::DataFusionError::External(Box::new(
                            crate::error::SqlError::user(
                                None,
                                format!("{t:?} is not an array: {e}"),
                                "send a list (PostgreSQL's array text: {a,b,\"c d\"})",
                            )
                            .kind(crate::error::Kind::InvalidParameter),
                        ))
                    })?;
                    out.append_value(elements);
                }
            }
        }
        result(scalar, Arc::new(out.finish()))
    }
}

/// The elements of PostgreSQL's one-dimensional array text (`{a,"b \"c\"",NULL}`), `None` for
/// an unquoted NULL. Written here: arrow reads no PostgreSQL array text, and the grammar is
/// these few lines.
pub(crate) fn parse_pg_array(text: &str) -> Result<Vec<Option<String>>, String> {
    let inner = text
        .trim()
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .ok_or("it does not start with { and end with }")?;
    let mut elements = Vec::new();
    if inner.trim().is_empty() {
        return Ok(elements);
    }
    let mut chars = inner.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut element = String::new();
        let quoted = chars.next_if_eq(&'"').is_some();
        if quoted {
            loop {
                match chars.next().ok_or("a quote is not closed")? {
                    '"' => break,
                    '\\' => element.push(chars.next().ok_or("it ends in a backslash")?),
                    c => element.push(c),
                }
            }
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                match c {
                    '{' | '}' | '"' => {
                        return Err(format!("{c} inside an element (arrays of arrays are not read)"));
                    }
                    '\\' => element.push(chars.next().ok_or("it ends in a backslash")?),
                    c => element.push(c),
                }
            }
            element.truncate(element.trim_end().len());
            if element.is_empty() {
                return Err("an element is empty".into());
            }
        }
        elements.push((quoted || !element.eq_ignore_ascii_case("NULL")).then_some(element));
        match chars.next() {
            None => return Ok(elements),
            Some(',') => {}
            Some(c) => return Err(format!("{c} after a quoted element")),
        }
    }
}

/// DataFusion's scalar `generate_series` and `range` (a list per row: `SELECT zone,
/// generate_series(1, n) FROM …`, `array_length(generate_series(…), 1)`), refused before they
/// build more values than the query's memory holds. They allocate each batch's lists whole,
/// outside the memory pool: `array_length(generate_series(1, 300000000), 1)` took 2.4 GB before
/// any limit saw it, and two billion would take the process down. The table function in FROM
/// streams its rows and needs no bound.
pub fn bounded_series(budget: usize) -> [Arc<ScalarUDF>; 2] {
    use datafusion::functions_nested::range::{gen_series_udf, range_udf};
    [(gen_series_udf(), true), (range_udf(), false)].map(|(inner, inclusive)| {
        Arc::new(ScalarUDF::new_from_impl(BoundedSeries { inner, inclusive, budget }))
    })
}

/// The user error a function of vigil's raised inside DataFusion (as an external error), with
/// its own message and fix.
pub(crate) fn raised(e: &datafusion::error::DataFusionError) -> Option<crate::error::SqlError> {
    let datafusion::error::DataFusionError::External(inner) = e.find_root() else { return None };
    match inner.downcast_ref::<crate::error::SqlError>()? {
        crate::error::SqlError::User { kind, position, message, fix } => {
            Some(crate::error::SqlError::user(position.clone(), message.clone(), fix.clone()).kind(*kind))
        }
        _ => None,
    }
}

/// Bytes a series' value costs in its list (an `i64` or a timestamp; a date's 4 are counted as 8).
const SERIES_VALUE_BYTES: u128 = 8;

#[derive(Debug, PartialEq, Eq, Hash)]
struct BoundedSeries {
    inner: Arc<ScalarUDF>,
    /// `generate_series` (the stop included) or `range`.
    inclusive: bool,
    /// The query's memory, in bytes.
    budget: usize,
}

impl ScalarUDFImpl for BoundedSeries {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        self.inner.return_type(args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let values = series_values(&args.args, self.inclusive).map_err(|message| {
            let fix =
                "give the step's parts one sign (such as INTERVAL '30 days' rather than '1 month -30 days')";
            crate::error::SqlError::user(None, format!("{}: {message}", self.name()), fix)
                .kind(crate::error::Kind::InvalidParameter)
        });
        let values = values.map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        if values * SERIES_VALUE_BYTES > self.budget as u128 {
            let e = crate::error::SqlError::user(
                None,
                format!(
                    "{}(…) outside FROM builds each row's values as one list: {values} values here ({} MiB), \
                     more than a query's {} MiB",
                    self.name(),
                    (values * SERIES_VALUE_BYTES) >> 20,
                    self.budget >> 20
                ),
                format!(
                    "call it in FROM (SELECT v FROM {}(…) AS v), whose rows stream, or over a shorter span or a \
                     larger step; or raise server.query_memory_mb",
                    self.name()
                ),
            )
            .kind(crate::error::Kind::ProgramLimit);
            return Err(datafusion::error::DataFusionError::External(Box::new(e)));
        }
        self.inner.invoke_with_args(args)
    }
}

/// How many values DataFusion's `generate_series` (`inclusive`) or `range` would build for
/// `args` (every row's together), at most: exact for numbers and for timestamps stepped by a
/// fixed duration; a step of days or months is taken at its shortest (a day of 23 hours, a
/// month of 28 days), so the count is an upper bound. A step whose months and days pull
/// opposite ways may not advance at all (from 28 January, `1 month -31 days` comes back to
/// it: DataFusion would build values until memory ran out) and is refused when they may cancel
/// ([`date_step`] for dates).
fn series_values(args: &[ColumnarValue], inclusive: bool) -> Result<u128, String> {
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::{
        Int64Type, IntervalMonthDayNanoType, TimeUnit, TimestampNanosecondType,
    };
    if args.iter().any(|a| a.data_type().is_null()) {
        return Ok(0);
    }
    let arrays = ColumnarValue::values_to_arrays(args).map_err(|e| e.to_string())?;
    let Some(first) = arrays.first() else { return Ok(0) };
    let mut total: u128 = 0;
    match first.data_type() {
        DataType::Int64 => {
            let ints: Vec<_> = arrays.iter().filter_map(|a| a.as_primitive_opt::<Int64Type>()).collect();
            let (start, stop, step) = match ints[..] {
                [stop] => (None, stop, None),
                [start, stop] => (Some(start), stop, None),
                [start, stop, step] => (Some(start), stop, Some(step)),
                _ => return Ok(0),
            };
            for row in 0..stop.len() {
                let at = |a: Option<&datafusion::arrow::array::Int64Array>, default: i64| match a {
                    None => Some(default),
                    Some(a) => a.is_valid(row).then(|| a.value(row)),
                };
                if let (Some(a), Some(b), Some(s)) = (at(start, 0), at(Some(stop), 0), at(step, 1)) {
                    total += int_series_len(a, b, s, inclusive);
                }
            }
        }
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(..) => {
            let [start, stop, step] = &arrays[..] else { return Ok(0) };
            // Dates as their midnights: the step moves them alike.
            let (zone, dates) = match first.data_type() {
                DataType::Timestamp(_, zone) => (zone.clone(), false),
                _ => (None, true),
            };
            let ns = DataType::Timestamp(TimeUnit::Nanosecond, zone);
            let times = |a: &ArrayRef| cast(a, &ns).map_err(|e| e.to_string());
            let (start, stop) = (times(start)?, times(stop)?);
            let (start, stop) = (
                start.as_primitive::<TimestampNanosecondType>(),
                stop.as_primitive::<TimestampNanosecondType>(),
            );
            let Some(steps) = step.as_primitive_opt::<IntervalMonthDayNanoType>() else { return Ok(0) };
            for row in 0..start.len() {
                if start.is_null(row) || stop.is_null(row) || steps.is_null(row) {
                    continue;
                }
                let (months, days, nanos) = IntervalMonthDayNanoType::to_parts(steps.value(row));
                let span = i128::from(stop.value(row)) - i128::from(start.value(row));
                let len = if !dates {
                    time_series_len(span, months, days, nanos, inclusive)
                } else if months == 0 && days == 0 {
                    Some(0) // refused by DataFusion with its own words
                } else {
                    date_step(months, days, nanos)
                        .and_then(|(m, d)| time_series_len(span, m, d, 0, inclusive))
                };
                total += len.ok_or_else(|| {
                    let mut step = String::new();
                    crate::server::types::write_interval(&mut step, months, days, nanos / 1000);
                    format!("a step of {step} may not move forward or back (its parts pull opposite ways)")
                })?;
            }
        }
        _ => {}
    }
    Ok(total)
}

/// The number of values from `start` to `stop` by `step`, as DataFusion's `generate_range_values`
/// gives them (none for a step of 0, which it refuses).
fn int_series_len(start: i64, stop: i64, step: i64, inclusive: bool) -> u128 {
    let (start, stop, step) = (i128::from(start), i128::from(stop), i128::from(step));
    let last = match (inclusive, step.signum()) {
        (_, 0) => return 0,
        (true, _) => stop,
        (false, 1) => stop - 1,
        (false, _) => stop + 1,
    };
    let span = (last - start) * step.signum();
    if span < 0 { 0 } else { (span / step.abs() + 1) as u128 }
}

/// The months and whole days a date series moves by (a date takes a step's hours as whole
/// days, cut toward zero), or `None` where DataFusion's date series could run without end: it
/// takes the series as going back when the months or the days are below zero, so a step whose
/// parts pull opposite ways, or that is below zero only by its hours, or that comes to nothing,
/// never reaches its stop.
fn date_step(months: i32, days: i32, nanos: i64) -> Option<(i32, i32)> {
    let whole = i32::try_from(i64::from(days) + nanos / 86_400_000_000_000).ok()?;
    let back = months < 0 || days < 0;
    let agree = |n: i32| n == 0 || (n < 0) == back;
    (agree(months) && agree(whole) && (months, whole) != (0, 0)).then_some((months, whole))
}

/// At most how many values a series of times spanning `span` nanoseconds gives by a step of
/// `months`, `days` and `nanos`; `None` when the step may not advance.
fn time_series_len(span: i128, months: i32, days: i32, nanos: i64, inclusive: bool) -> Option<u128> {
    const HOUR: i128 = 3_600_000_000_000;
    const DAY: i128 = 24 * HOUR;
    let (months, days, nanos) = (i128::from(months), i128::from(days), i128::from(nanos));
    // The least and the most the step can move a time: a month of 28 to 31 days, a day of 23
    // to 25 hours (the days around a change of clocks).
    let part =
        |n: i128, short: i128, long: i128| if n >= 0 { (n * short, n * long) } else { (n * long, n * short) };
    let (m_lo, m_hi) = part(months, 28 * DAY, 31 * DAY);
    let (d_lo, d_hi) = part(days, 23 * HOUR, 25 * HOUR);
    let (lo, hi) = (m_lo + d_lo + nanos, m_hi + d_hi + nanos);
    let step = if lo > 0 {
        lo
    } else if hi < 0 {
        -hi
    } else if months == 0 && days == 0 && nanos == 0 {
        return Some(0); // refused by DataFusion with its own words
    } else {
        return None;
    };
    let forward = lo > 0;
    let span = if forward { span } else { -span };
    if span < 0 || (!inclusive && span == 0) {
        return Some(0);
    }
    Some((span / step + 1) as u128)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Float64Type;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::SessionContext;
    use proptest::prelude::*;

    use super::*;

    /// Each query's one value, as Float64, from a session with vigil's `date_part` and `EXTRACT`.
    async fn values(exprs: &[&str]) -> Vec<f64> {
        let mut state = SessionStateBuilder::new().with_default_features().build();
        datafusion::execution::FunctionRegistry::register_udf(&mut state, date_part()).unwrap();
        let planners =
            std::iter::once(Arc::new(Extract) as _).chain(state.expr_planners().iter().cloned()).collect();
        let state = SessionStateBuilder::new_from_existing(state).with_expr_planners(planners).build();
        let ctx = SessionContext::new_with_state(state);
        let mut out = Vec::new();
        for e in exprs {
            let batches =
                ctx.sql(&format!("SELECT CAST({e} AS DOUBLE)")).await.unwrap().collect().await.unwrap();
            out.push(batches[0].column(0).as_primitive::<Float64Type>().value(0));
        }
        out
    }

    #[tokio::test]
    async fn fields_of_durations_intervals_and_timestamps_are_postgresqls() {
        let two_days = "(TIMESTAMPTZ '2026-06-14 20:00:22.4+00' - TIMESTAMPTZ '2026-06-12 18:00:00+00')";
        let minus_two_days =
            "(TIMESTAMPTZ '2026-06-12 18:00:00+00' - TIMESTAMPTZ '2026-06-14 20:00:22.4+00')";
        let t = "TIMESTAMPTZ '2026-01-01 00:00:23.4+00'";
        let cases = [
            // PostgreSQL 15's answers (`psql -A -t`), to the same expressions.
            (format!("extract(second FROM {t})"), 23.4),
            (format!("date_part('second', {t})"), 23.4),
            (format!("extract(millisecond FROM {t})"), 23400.0),
            (format!("extract(second FROM {two_days})"), 22.4),
            (format!("extract(hour FROM {two_days})"), 2.0),
            (format!("extract(day FROM {two_days})"), 2.0),
            (format!("extract(epoch FROM {two_days})"), 180022.4),
            (format!("extract(hour FROM {minus_two_days})"), -2.0),
            (format!("extract(second FROM {minus_two_days})"), -22.4),
            ("extract(minute FROM INTERVAL '125.5 minutes')".into(), 5.0),
            ("date_part('minute', INTERVAL '-125.5 minutes')".into(), -5.0),
            ("extract(milliseconds FROM INTERVAL '44.2 seconds')".into(), 44200.0),
            ("extract(microseconds FROM INTERVAL '44.2 seconds')".into(), 44200000.0),
            (
                "extract(epoch FROM INTERVAL '1 year 2 months 3 days 4 hours 5 minutes 6.5 seconds')".into(),
                37015506.5,
            ),
            ("extract(quarter FROM INTERVAL '1 year 7 months')".into(), 3.0),
            ("extract(year FROM INTERVAL '26 months')".into(), 2.0),
            ("extract(month FROM INTERVAL '-26 months')".into(), -2.0),
            ("extract(second FROM TIME '10:00:01.25')".into(), 1.25),
            // Unchanged: DataFusion's own, which were already PostgreSQL's.
            (format!("extract(hour FROM {t} + INTERVAL '20 hours')"), 20.0),
            (format!("extract(epoch FROM {t})"), 1767225623.4),
        ];
        let exprs: Vec<&str> = cases.iter().map(|(e, _)| e.as_str()).collect();
        let got = values(&exprs).await;
        for ((e, want), got) in cases.iter().zip(got) {
            assert!((got - want).abs() < 1e-9, "{e}: {got}, PostgreSQL {want}");
        }
    }

    #[tokio::test]
    async fn casts_to_text_print_as_postgresqls_do_and_keep_the_columns_name() {
        // In UTC, as the server's sessions are by default (`TIMESTAMPTZ` literals are instants).
        let ctx = session("UTC");
        // PostgreSQL 15's answers (`psql -A -t`) to the same expressions.
        let sql = "SELECT (TIMESTAMPTZ '2026-06-14 20:00:00.5+00')::text AS a, CAST(DATE '2026-06-14' AS text) AS b, \
                   (INTERVAL '1 hour')::text AS c, 1.5::float8::text AS d, 1e20::float8::text AS e, \
                   'at ' || TIMESTAMPTZ '2026-06-14 20:00:00+00' AS f, \
                   (TIMESTAMPTZ '2026-06-14 20:00:01+00' - TIMESTAMPTZ '2026-06-14 20:00:00+00')::text AS g, \
                   true::text AS h, 0.1::float4::text AS i, CAST(NULL AS double)::text AS j, \
                   make_array(1.5, 2.0)::text AS k";
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let row: Vec<Option<String>> = batches[0]
            .columns()
            .iter()
            .map(|c| {
                let c = datafusion::arrow::compute::cast(c, &DataType::Utf8).unwrap();
                let c = c.as_string::<i32>();
                c.is_valid(0).then(|| c.value(0).to_owned())
            })
            .collect();
        let want = [
            "2026-06-14 20:00:00.5+00",
            "2026-06-14",
            "01:00:00",
            "1.5",
            "1e+20",
            "at 2026-06-14 20:00:00+00",
            "00:00:01",
            "true",
            "0.1",
        ];
        let got: Vec<&str> = row[..9].iter().map(|v| v.as_deref().unwrap()).collect();
        assert_eq!(got, want);
        assert_eq!(row[9], None, "NULL stays NULL");
        assert_eq!(row[10].as_deref(), Some("{1.5,2}"));
        let names: Vec<String> = batches[0].schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"]);
        // A cast under a name of its own keeps the column's name too.
        let batches = ctx
            .sql("SELECT t::text FROM (SELECT TIMESTAMPTZ '2026-06-14 20:00:00+00' AS t)")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(batches[0].schema().field(0).name(), "t");
    }

    /// A session in `zone` with psql's casts to text and quoted times ([`PgTextCasts`]).
    fn session(zone: &str) -> SessionContext {
        let mut config = datafusion::prelude::SessionConfig::new();
        config.options_mut().execution.time_zone = Some(zone.into());
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_analyzer_rule(Arc::new(PgTextCasts))
            .build();
        SessionContext::new_with_state(state)
    }

    /// PostgreSQL's text of each expression, in a session of `zone` with the casts to text and
    /// quoted times rewritten as in psql ([`PgTextCasts`]) and `age()`.
    async fn pg_texts(zone: &'static str, exprs: Vec<&'static str>) -> Vec<String> {
        let ctx = session(zone);
        for f in [age(), pg_text()] {
            ctx.register_udf(Arc::unwrap_or_clone(f));
        }
        let mut out = Vec::new();
        for e in exprs {
            let b = ctx.sql(&format!("SELECT vigil_pg_text({e})")).await.unwrap().collect().await.unwrap();
            out.push(b[0].column(0).as_string::<i32>().value(0).to_owned());
        }
        out
    }

    #[tokio::test]
    async fn age_is_postgresqls_in_the_sessions_zone() {
        // PostgreSQL 15's answers to the same expressions, in UTC and in Casablanca.
        let utc = pg_texts(
            "UTC",
            vec![
                "age(TIMESTAMPTZ '2026-06-14 20:00:00+00', TIMESTAMPTZ '2026-03-31 21:30:00+00')",
                "age(TIMESTAMPTZ '2026-03-31 21:30:00+00', TIMESTAMPTZ '2026-06-14 20:00:00+00')",
                "age(TIMESTAMPTZ '2026-03-01 00:00:00+00', TIMESTAMPTZ '2026-01-31 12:00:00+00')",
                "age(TIMESTAMPTZ '2026-06-14 20:00:00.25+00', TIMESTAMPTZ '2026-06-14 20:00:01+00')",
            ],
        )
        .await;
        assert_eq!(
            utc,
            ["2 mons 13 days 22:30:00", "-2 mons -13 days -22:30:00", "1 mon 12:00:00", "-00:00:00.75"]
        );
        let local = pg_texts(
            "Africa/Casablanca",
            vec![
                "age(TIMESTAMPTZ '2026-06-14 23:30:00+00', TIMESTAMPTZ '2026-06-13 23:40:00+00')",
                "age(TIMESTAMPTZ '2026-06-15 00:30:00+00', TIMESTAMPTZ '2025-02-28 23:30:00+00')",
            ],
        )
        .await;
        assert_eq!(local, ["23:50:00", "1 year 3 mons 14 days 02:00:00"]);
        // A quoted time is an instant in the session's zone (PostgreSQL's unknown literal).
        let quoted = |zone| {
            pg_texts(
                zone,
                vec![
                    "age(TIMESTAMPTZ '2026-06-15 00:30:00+00', '2026-06-14 00:00')",
                    "age('2026-06-15 00:30:00+00', TIMESTAMPTZ '2026-06-14 00:00:00+00')",
                ],
            )
        };
        assert_eq!(quoted("UTC").await, ["1 day 00:30:00", "1 day 00:30:00"]);
        assert_eq!(quoted("Africa/Casablanca").await, ["1 day 01:30:00", "1 day 00:30:00"]);
    }

    #[tokio::test]
    async fn quoted_times_are_read_in_postgresqls_iso_forms() {
        let exprs = vec![
            "TIMESTAMPTZ '2026-06-14 20:00'",
            "CAST('2026-06-14T9:05' AS TIMESTAMPTZ)",
            "TIMESTAMPTZ '2026-06-14 20:00+01'",
            "TIMESTAMPTZ '2026-06-14 20:00:00.5+01'",
            "TIMESTAMPTZ '2026-06-14 20:00 +01'",
            "TIMESTAMPTZ '2026-06-14 20:00:07'",
            "TIMESTAMPTZ '2026-06-14'",
            "TIMESTAMPTZ '2026-06-14 20:00' - TIMESTAMPTZ '2026-06-14 19:30'",
            "now() > '2026-06-14 20:00'",
        ];
        // PostgreSQL 15's answers to the same expressions with `SET TimeZone`.
        assert_eq!(
            pg_texts("UTC", exprs.clone()).await,
            [
                "2026-06-14 20:00:00+00",
                "2026-06-14 09:05:00+00",
                "2026-06-14 19:00:00+00",
                "2026-06-14 19:00:00.5+00",
                "2026-06-14 19:00:00+00",
                "2026-06-14 20:00:07+00",
                "2026-06-14 00:00:00+00",
                "00:30:00",
                "t",
            ]
        );
        assert_eq!(
            pg_texts("Africa/Casablanca", exprs).await,
            [
                "2026-06-14 20:00:00+01",
                "2026-06-14 09:05:00+01",
                "2026-06-14 20:00:00+01",
                "2026-06-14 20:00:00.5+01",
                "2026-06-14 20:00:00+01",
                "2026-06-14 20:00:07+01",
                "2026-06-14 00:00:00+01",
                "00:30:00",
                "t",
            ]
        );
        assert_eq!(pg_time_text("14/06/2026 20:00"), None);
        assert_eq!(pg_time_text("2026-06-14 20:00:00"), None);
    }

    #[tokio::test]
    async fn an_interval_times_a_number_is_postgresqls() {
        let mut config = datafusion::prelude::SessionConfig::new();
        config.options_mut().execution.time_zone = Some("UTC".into());
        let mut state = SessionStateBuilder::new().with_config(config).with_default_features().build();
        datafusion::execution::FunctionRegistry::register_udf(&mut state, pg_text()).unwrap();
        let planners =
            std::iter::once(Arc::new(Extract) as _).chain(state.expr_planners().iter().cloned()).collect();
        let state = SessionStateBuilder::new_from_existing(state).with_expr_planners(planners).build();
        let ctx = SessionContext::new_with_state(state);
        let since = "(TIMESTAMPTZ '2026-06-16 22:00:23.4+00' - TIMESTAMPTZ '2026-06-14 20:00:00+00')";
        // PostgreSQL 15's answers to the same expressions.
        let cases = [
            ("INTERVAL '10 seconds' * 3".to_owned(), "00:00:30"),
            ("INTERVAL '1 day' * 2.5".to_owned(), "2 days 12:00:00"),
            ("INTERVAL '1 month' * 1.5".to_owned(), "1 mon 15 days"),
            ("3 * INTERVAL '2 hours'".to_owned(), "06:00:00"),
            ("INTERVAL '1 hour' / 4".to_owned(), "00:15:00"),
            ("INTERVAL '1 year 1 month' * 0.3".to_owned(), "3 mons 27 days"),
            ("INTERVAL '-1 day 2 hours' * 1.75".to_owned(), "-1 days -14:30:00"),
            (format!("{since} / 3"), "16:40:07.8"),
        ];
        for (e, want) in cases {
            let b = ctx.sql(&format!("SELECT vigil_pg_text({e})")).await.unwrap().collect().await.unwrap();
            assert_eq!(b[0].column(0).as_string::<i32>().value(0), want, "{e}");
        }
        let e = ctx.sql("SELECT INTERVAL '1 hour' / 0").await.unwrap().collect().await.unwrap_err();
        assert!(e.to_string().contains("division by zero"), "{e}");
    }

    #[tokio::test]
    async fn a_field_an_interval_does_not_have_is_named_in_the_error() {
        let mut state = SessionStateBuilder::new().with_default_features().build();
        datafusion::execution::FunctionRegistry::register_udf(&mut state, date_part()).unwrap();
        let ctx = SessionContext::new_with_state(state);
        let e = ctx
            .sql("SELECT date_part('week', INTERVAL '3 days')")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap_err();
        assert!(e.to_string().contains("unit \"week\" not supported for type interval"), "{e}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]
        /// Every time in PostgreSQL's ISO forms (minutes with or without seconds and a fraction,
        /// a space or a `T`, an offset of hours, hours and minutes, or none, with or without a
        /// space before it) comes out as text Arrow reads, the instant meant; other text never
        /// panics.
        #[test]
        fn pg_time_text_gives_what_arrow_reads(
            (y, mo, d, h, mi) in (1000i32..9999, 1u32..=12, 1u32..=28, 0u32..24, 0u32..60),
            seconds in proptest::option::of((0u32..60, proptest::option::of(0u32..1000))),
            sep in prop_oneof![Just(" "), Just("T")],
            offset in proptest::option::of((any::<bool>(), 0i32..=14, prop_oneof![Just(0i32), Just(30)], any::<bool>(), any::<bool>())),
            noise in "[0-9 T:+.a-z-]{0,24}",
        ) {
            let mut text = format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}");
            if let Some((s, frac)) = seconds {
                text += &format!(":{s:02}");
                if let Some(f) = frac {
                    text += &format!(".{f:03}");
                }
            }
            let mut utc_offset_s = 0;
            if let Some((negative, oh, om, spaced, long)) = offset {
                let sign = if negative { -1 } else { 1 };
                utc_offset_s = sign * (oh * 3600 + om * 60);
                let sign = if negative { '-' } else { '+' };
                // A space before the offset, as PostgreSQL prints one, after a space-separated time.
                let space = if spaced && sep == " " { " " } else { "" };
                text += &if long || om != 0 { format!("{space}{sign}{oh:02}:{om:02}") } else { format!("{space}{sign}{oh:02}") };
            }
            let wall = chrono::NaiveDate::from_ymd_opt(y, mo, d).unwrap().and_hms_milli_opt(
                h, mi, seconds.map_or(0, |s| s.0), seconds.and_then(|s| s.1).unwrap_or(0)).unwrap();
            let want = (wall - chrono::Duration::seconds(i64::from(utc_offset_s))).and_utc().timestamp_millis();
            // Arrow's own reading of what it is given, as UTC for a time without an offset.
            let read = |t: &str| {
                let a = StringArray::from(vec![t]);
                let ts = DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Millisecond, Some("UTC".into()));
                let options = datafusion::arrow::compute::CastOptions { safe: false, ..Default::default() };
                datafusion::arrow::compute::cast_with_options(&a, &ts, &options)
                    .map(|c| c.as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>().value(0))
            };
            let given = pg_time_text(&text).unwrap_or_else(|| text.clone());
            prop_assert_eq!(read(&given).ok(), Some(want), "{} gave {}", text, given);
            // Anything else: no panic.
            let _ = pg_time_text(&noise);
        }
    }

    /// How many values DataFusion's own `generate_series` or `range` gives, by SQL.
    fn datafusion_series_len(call: &str) -> i64 {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let ctx = SessionContext::new();
        let sql = format!("SELECT CAST(coalesce(cardinality({call}), 0) AS BIGINT)");
        let b = rt.block_on(async { ctx.sql(&sql).await.unwrap().collect().await }).unwrap();
        b[0].column(0).as_primitive::<datafusion::arrow::datatypes::Int64Type>().value(0)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        /// The count of a series of numbers is DataFusion's; that of dates and times is at least
        /// DataFusion's and, for a step of one sign, within its shortest month or day of it
        /// (31/28); a date step refused is one DataFusion's series cannot finish.
        #[test]
        fn series_counts_bound_datafusions(
            (a, b, step) in (-40i64..40, -40i64..40, (-7i64..7).prop_filter("a step", |s| *s != 0)),
            (d0, d1) in (0i64..900, 0i64..900),
            (months, days, hours) in (-3i32..4, -40i32..41, -30i64..31),
            timestamps in any::<bool>(),
            inclusive in any::<bool>(),
        ) {
            let name = if inclusive { "generate_series" } else { "range" };
            let want = datafusion_series_len(&format!("{name}({a}, {b}, {step})"));
            prop_assert_eq!(int_series_len(a, b, step, inclusive), want as u128);
            let day = |d: i64| chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap() + chrono::Duration::days(d);
            let (t0, t1) = (day(d0), day(d1));
            let nanos = hours * 3_600_000_000_000;
            let span = i128::from((t1 - t0).num_days()) * 86_400_000_000_000;
            let (bound, call) = if (months, days, hours) == (0, 0, 0) {
                return Ok(()); // refused by DataFusion
            } else if timestamps {
                (
                    time_series_len(span, months, days, nanos, inclusive),
                    format!("{name}(TIMESTAMP '{t0} 00:00:00', TIMESTAMP '{t1} 00:00:00', INTERVAL '{months} months {days} days {hours} hours')"),
                )
            } else if months == 0 && days == 0 {
                return Ok(()); // refused by DataFusion
            } else {
                (
                    date_step(months, days, nanos).and_then(|(m, d)| time_series_len(span, m, d, 0, inclusive)),
                    format!("{name}(DATE '{t0}', DATE '{t1}', INTERVAL '{months} months {days} days {hours} hours')"),
                )
            };
            // A step refused is not run: DataFusion's series might not end.
            let Some(bound) = bound else { return Ok(()) };
            let got = datafusion_series_len(&call) as u128;
            prop_assert!(bound >= got, "{}: {} < {}", call, bound, got);
            if (months >= 0 && days >= 0 && hours >= 0) || (months <= 0 && days <= 0 && hours <= 0) {
                prop_assert!(bound <= got * 31 / 28 + 2, "{}: {} against {}", call, bound, got);
            }
        }
    }

    /// PostgreSQL's array text as psql and drivers write it (checked against PostgreSQL 15's
    /// `'…'::text[]`); anything else is an error, never a panic.
    #[test]
    fn array_text_reads_as_postgresql_reads_it() {
        let read = |t: &str| parse_pg_array(t);
        let s = |v: &[Option<&str>]| Ok(v.iter().map(|e| e.map(str::to_owned)).collect::<Vec<_>>());
        assert_eq!(read("{a,b}"), s(&[Some("a"), Some("b")]));
        assert_eq!(read("{}"), s(&[]));
        assert_eq!(
            read(" { 12345-ب-6 , \"a b\" ,NULL,\"NULL\",x\\,y } "),
            s(&[Some("12345-ب-6"), Some("a b"), None, Some("NULL"), Some("x,y")])
        );
        assert_eq!(read(r#"{"say \"hi\"","back\\slash"}"#), s(&[Some("say \"hi\""), Some("back\\slash")]));
        for bad in ["a,b", "{a,,b}", "{\"a}", "{{1,2},{3,4}}", "{\"a\"b}", "{a\\}", "{a,}"] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        /// What a driver writes for any list of texts reads back as that list.
        #[test]
        fn a_list_written_as_array_text_reads_back(list in proptest::collection::vec(proptest::option::of(".{0,8}"), 0..6), noise in ".{0,20}") {
            let quoted: Vec<String> = list
                .iter()
                .map(|e| match e {
                    None => "NULL".to_owned(),
                    Some(t) => format!("\"{}\"", t.replace('\\', "\\\\").replace('"', "\\\"")),
                })
                .collect();
            prop_assert_eq!(parse_pg_array(&format!("{{{}}}", quoted.join(","))), Ok(list));
            let _ = parse_pg_array(&noise);
        }
    }
}

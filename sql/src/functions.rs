//! The catalog's text functions ([`vigil_engine::catalog::TextFunction`]) as SQL scalar
//! functions: `normalize_plate(plate_raw)` in a rule or an ad-hoc query runs the function that
//! the stream's definition offers, on each row, with `NULL` in and `NULL` out. Also
//! [`date_part`], DataFusion's with a duration's epoch mended, and PostgreSQL's [`pg_typeof`].

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, StringArray, StringBuilder};
use datafusion::arrow::datatypes::{DataType, DurationNanosecondType, FieldRef, TimeUnit};
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

/// Plans `EXTRACT(field FROM x)` as [`date_part`] (DataFusion's planner calls its own); first
/// among a session's planners.
#[derive(Debug)]
pub struct Extract;

impl ExprPlanner for Extract {
    fn plan_extract(&self, args: Vec<Expr>) -> DfResult<PlannerResult<Vec<Expr>>> {
        Ok(PlannerResult::Planned(Expr::ScalarFunction(ScalarFunction::new_udf(date_part(), args))))
    }
}

/// DataFusion's `date_part` (and, planned by [`Extract`], `EXTRACT`), but `epoch` of a duration is its whole length in
/// seconds with the fraction, as in PostgreSQL: DataFusion 55's adds the duration's nanoseconds
/// as an `i32`, which overflows past 2.1 s and is dropped, so a dwell of 44.2 s gave 44.
/// Written here because the fix is not released (its interval twin is apache/datafusion#19807).
pub fn date_part() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(DatePart(
        datafusion::functions::datetime::date_part().as_ref().clone(),
    )))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct DatePart(ScalarUDF);

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
        self.0.return_field_from_args(args)
    }

    fn coerce_types(&self, args: &[DataType]) -> DfResult<Vec<DataType>> {
        self.0.coerce_types(args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.0.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let epoch = matches!(&args.args[..], [ColumnarValue::Scalar(part), _]
            if part.try_as_str().flatten().is_some_and(|p| p.trim_matches(['\'', '"']).eq_ignore_ascii_case("epoch")));
        match args.args.get(1) {
            Some(ColumnarValue::Array(a)) if epoch && matches!(a.data_type(), DataType::Duration(_)) => {
                Ok(ColumnarValue::Array(seconds(a)?))
            }
            Some(ColumnarValue::Scalar(d)) if epoch && matches!(d.data_type(), DataType::Duration(_)) => {
                let a = seconds(&d.to_array()?)?;
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(a.as_ref(), 0)?))
            }
            _ => self.0.invoke_with_args(args),
        }
    }
}

/// A duration column's values in seconds, with their fraction.
fn seconds(a: &ArrayRef) -> DfResult<ArrayRef> {
    let ns = datafusion::arrow::compute::cast(a, &DataType::Duration(TimeUnit::Nanosecond))?;
    let s: Float64Array = ns.as_primitive::<DurationNanosecondType>().unary(|ns| ns as f64 / 1e9);
    Ok(Arc::new(s))
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

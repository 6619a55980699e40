//! The catalog's text functions ([`vigil_engine::catalog::TextFunction`]) as SQL scalar
//! functions: `normalize_plate(plate_raw)` in a rule or an ad-hoc query runs the function that
//! the stream's definition offers, on each row, with `NULL` in and `NULL` out.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringArray, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result as DfResult, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
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

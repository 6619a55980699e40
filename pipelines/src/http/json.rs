//! Query results as JSON: one object per row, keyed by column name.
//!
//! Written here rather than through arrow's JSON writer: that needs arrow's `json` feature (one
//! more crate tree to build for a few lines), and the API wants its own choices: timestamps as
//! milliseconds since the epoch, and 64-bit integers beyond 2^53 as strings, which JavaScript's
//! numbers would otherwise round (event ids).

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, UInt64Type};
use serde_json::{Map, Value};

/// The largest integer a JavaScript number holds exactly.
const EXACT: u64 = 1 << 53;

/// Every row of `batches` as a JSON object.
pub fn rows(batches: &[RecordBatch]) -> Vec<Map<String, Value>> {
    let mut out = Vec::new();
    for b in batches {
        let columns: Vec<Vec<Value>> = b.columns().iter().map(|c| values(c.as_ref())).collect();
        for r in 0..b.num_rows() {
            let mut row = Map::new();
            for (field, col) in b.schema().fields().iter().zip(&columns) {
                row.insert(field.name().clone(), col[r].clone());
            }
            out.push(row);
        }
    }
    out
}

/// A column's values; a type with no JSON counterpart becomes its text.
fn values(a: &dyn Array) -> Vec<Value> {
    let nulls = |v: Vec<Value>| -> Vec<Value> {
        v.into_iter().enumerate().map(|(i, x)| if a.is_null(i) { Value::Null } else { x }).collect()
    };
    match a.data_type() {
        DataType::Boolean => nulls(a.as_boolean().iter().map(|v| Value::Bool(v.unwrap_or(false))).collect()),
        DataType::UInt64 => nulls(
            a.as_primitive::<UInt64Type>()
                .values()
                .iter()
                .map(|&v| if v < EXACT { Value::from(v) } else { Value::from(v.to_string()) })
                .collect(),
        ),
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => {
            match cast(a, &DataType::Int64) {
                Ok(c) => nulls(
                    c.as_primitive::<Int64Type>()
                        .values()
                        .iter()
                        .map(|&v| {
                            if v.unsigned_abs() < EXACT { Value::from(v) } else { Value::from(v.to_string()) }
                        })
                        .collect(),
                ),
                Err(_) => text(a),
            }
        }
        DataType::Float16 | DataType::Float32 | DataType::Float64 | DataType::Decimal128(..) => {
            match cast(a, &DataType::Float64) {
                Ok(c) => nulls(
                    c.as_primitive::<Float64Type>()
                        .values()
                        .iter()
                        .map(|&v| serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
                        .collect(),
                ),
                Err(_) => text(a),
            }
        }
        DataType::Timestamp(..) => {
            match cast(a, &DataType::Timestamp(TimeUnit::Millisecond, None))
                .and_then(|t| cast(&t, &DataType::Int64))
            {
                Ok(c) => {
                    nulls(c.as_primitive::<Int64Type>().values().iter().map(|&v| Value::from(v)).collect())
                }
                Err(_) => text(a),
            }
        }
        _ => text(a),
    }
}

/// Values as text (strings and anything else), through arrow's own formatting.
fn text(a: &dyn Array) -> Vec<Value> {
    let Ok(s) = cast(a, &DataType::Utf8) else {
        let f = arrow::util::display::ArrayFormatter::try_new(a, &Default::default());
        return (0..a.len())
            .map(|i| match &f {
                Ok(f) if !a.is_null(i) => Value::from(f.value(i).to_string()),
                _ => Value::Null,
            })
            .collect();
    };
    s.as_string::<i32>().iter().map(|v| v.map_or(Value::Null, Value::from)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Float64Array, StringArray, TimestampMillisecondArray, UInt64Array};
    use std::sync::Arc;

    #[test]
    fn rows_keep_types_nulls_and_exact_ids() {
        let batch = RecordBatch::try_from_iter([
            ("t", Arc::new(TimestampMillisecondArray::from(vec![Some(1_700_000_000_123), None])) as ArrayRef),
            ("id", Arc::new(UInt64Array::from(vec![7, u64::MAX])) as ArrayRef),
            ("d", Arc::new(Float64Array::from(vec![Some(1.5), Some(f64::NAN)])) as ArrayRef),
            ("zone", Arc::new(StringArray::from(vec![Some("gate"), None])) as ArrayRef),
        ])
        .unwrap();
        let r = rows(&[batch]);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0]["t"], Value::from(1_700_000_000_123i64));
        assert_eq!(r[1]["t"], Value::Null);
        assert_eq!(r[0]["id"], Value::from(7u64));
        assert_eq!(r[1]["id"], Value::from(u64::MAX.to_string()));
        assert_eq!(r[0]["d"], Value::from(1.5));
        assert_eq!(r[1]["d"], Value::Null);
        assert_eq!(r[0]["zone"], Value::from("gate"));
        assert_eq!(r[1]["zone"], Value::Null);
    }
}

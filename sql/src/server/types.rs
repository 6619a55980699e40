//! PostgreSQL's types for Arrow's: the type each column is sent as, its text form (what psql
//! prints and COPY writes) and its binary form (drivers' prepared statements), and binary
//! parameters read back as the text the plan takes.
//!
//! One mapping serves the rows, the extended protocol's descriptions and the catalog psql's `\d`
//! reads ([`catalog_type`]), so that a column is described as the type its values come as.
//! Timestamps are PostgreSQL's (`timestamp with time zone` for Arrow's UTC instants), so that
//! drivers give their own date-time values (psycopg a `datetime`, JDBC a `Timestamp`).

use chrono::{DateTime, SecondsFormat};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use datafusion::arrow::util::display::ArrayFormatter;
use pgwire::api::Type;
use pgwire::api::results::DataRowEncoder;
use pgwire::error::PgWireResult;

/// PostgreSQL's epoch (2000-01-01) in Unix microseconds: binary timestamps count from it.
const PG_EPOCH_US: i64 = 946_684_800_000_000;
/// PostgreSQL's epoch in Unix days: binary dates count from it.
const PG_EPOCH_DAYS: i32 = 10_957;

/// The type a column of Arrow type `t` is sent as. Unsigned integers go as the signed type one
/// size up (a `UInt64` id as `int8`: PostgreSQL has no unsigned types, and ids stay below 2⁶³);
/// anything without a PostgreSQL counterpart as its text.
pub(crate) fn pg_type(t: &DataType) -> Type {
    match t {
        DataType::Boolean => Type::BOOL,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => Type::INT8,
        DataType::Float16 | DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        DataType::Timestamp(_, Some(_)) => Type::TIMESTAMPTZ,
        DataType::Timestamp(_, None) => Type::TIMESTAMP,
        DataType::Date32 | DataType::Date64 => Type::DATE,
        _ => Type::VARCHAR,
    }
}

/// The Arrow type the catalog describes a column of Arrow type `t` with: the one PostgreSQL's
/// catalog maps to the type the column is sent as ([`pg_type`]), so that `\d` says `bigint` for
/// a `UInt64` id and `text` for what goes as text.
pub(crate) fn catalog_type(t: &DataType) -> DataType {
    encoded_from(&pg_type(t), t).unwrap_or(DataType::Utf8)
}

/// The Arrow type a value sent as `t` is encoded from, for a column of Arrow type `from`; None
/// for what goes as text.
fn encoded_from(t: &Type, from: &DataType) -> Option<DataType> {
    Some(match *t {
        Type::BOOL => DataType::Boolean,
        Type::INT2 => DataType::Int16,
        Type::INT4 => DataType::Int32,
        Type::INT8 => DataType::Int64,
        Type::FLOAT4 => DataType::Float32,
        Type::FLOAT8 => DataType::Float64,
        // The time zone is kept: the values stay UTC instants.
        Type::TIMESTAMPTZ | Type::TIMESTAMP => match from {
            DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
            _ => return None,
        },
        Type::DATE => DataType::Date32,
        _ => return None,
    })
}

/// How PostgreSQL's catalog describes the type a column is sent as ([`type_name`]).
pub(crate) struct SqlType {
    /// Its SQL name (`format_type`'s, `information_schema.columns.data_type`).
    pub name: &'static str,
    /// Its short name (`udt_name`).
    pub udt: &'static str,
    /// Precision in bits of a number (`numeric_precision`).
    pub bits: Option<i32>,
    /// Digits after the point: 0 for an integer (`numeric_scale`).
    pub scale: Option<i32>,
    /// Digits of a second for a date or time (`datetime_precision`).
    pub second_digits: Option<i32>,
}

/// PostgreSQL's description of the type a column of `t` is sent as ([`pg_type`]).
pub(crate) fn type_name(t: &DataType) -> SqlType {
    let (name, udt, bits, scale, second_digits) = match pg_type(t) {
        Type::BOOL => ("boolean", "bool", None, None, None),
        Type::INT2 => ("smallint", "int2", Some(16), Some(0), None),
        Type::INT4 => ("integer", "int4", Some(32), Some(0), None),
        Type::INT8 => ("bigint", "int8", Some(64), Some(0), None),
        Type::FLOAT4 => ("real", "float4", Some(24), None, None),
        Type::FLOAT8 => ("double precision", "float8", Some(53), None, None),
        Type::TIMESTAMPTZ => ("timestamp with time zone", "timestamptz", None, None, Some(6)),
        Type::TIMESTAMP => ("timestamp without time zone", "timestamp", None, None, Some(6)),
        Type::DATE => ("date", "date", None, None, Some(0)),
        // What goes as text (`varchar` on the wire) is `text` in the catalog, as `\d` says.
        _ => ("text", "text", None, None, None),
    };
    SqlType { name, udt, bits, scale, second_digits }
}

/// Value `i` of `c` in PostgreSQL's text form: Arrow's display, but booleans as `t` and `f` and
/// timestamps as PostgreSQL prints them (`2026-06-14 20:00:23.4+00`, the session's time zone
/// being UTC), which it and DataFusion both read back.
pub(super) fn pg_text(c: &dyn Array, f: &ArrayFormatter<'_>, i: usize) -> String {
    if let Some(b) = c.as_any().downcast_ref::<BooleanArray>() {
        return (if b.value(i) { "t" } else { "f" }).to_owned();
    }
    match (c.data_type(), micros(c, i)) {
        (DataType::Timestamp(_, tz), Some(us)) => timestamp_text(us, tz.is_some()),
        _ => f.value(i).to_string(),
    }
}

/// Value `i` of timestamp column `c` in Unix microseconds (nanoseconds cut, as PostgreSQL keeps
/// microseconds); None if `c` is not a timestamp.
fn micros(c: &dyn Array, i: usize) -> Option<i64> {
    let DataType::Timestamp(unit, _) = c.data_type() else { return None };
    Some(match unit {
        TimeUnit::Second => c.as_primitive::<TimestampSecondType>().value(i).saturating_mul(1_000_000),
        TimeUnit::Millisecond => c.as_primitive::<TimestampMillisecondType>().value(i).saturating_mul(1_000),
        TimeUnit::Microsecond => c.as_primitive::<TimestampMicrosecondType>().value(i),
        TimeUnit::Nanosecond => c.as_primitive::<TimestampNanosecondType>().value(i).div_euclid(1_000),
    })
}

/// `us` (Unix microseconds) as PostgreSQL's ISO text: seconds' fraction without trailing zeros,
/// `+00` for an instant (`timestamptz`), nothing for a local time (`timestamp`).
fn timestamp_text(us: i64, instant: bool) -> String {
    use chrono::{Datelike, Timelike};
    use std::fmt::Write;
    let Some(t) = DateTime::from_timestamp_micros(us) else { return us.to_string() };
    // Written field by field: chrono's `format` reads its pattern again for every value, which
    // made a timestamp cost five times another column's value in COPY.
    let mut text = String::with_capacity(32);
    let (date, time) = (t.date_naive(), t.time());
    let _ = write!(
        text,
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        date.year(),
        date.month(),
        date.day(),
        time.hour(),
        time.minute(),
        time.second()
    );
    let mut fraction = t.timestamp_subsec_micros();
    if fraction > 0 {
        let mut digits = 6;
        while fraction % 10 == 0 {
            fraction /= 10;
            digits -= 1;
        }
        let _ = write!(text, ".{fraction:0digits$}");
    }
    if instant {
        text.push_str("+00");
    }
    text
}

/// Column `c` cast to what its binary form is encoded from, for a column sent as `t`; None if
/// `t` goes as text.
pub(super) fn binary_column(c: &ArrayRef, t: &Type) -> Option<ArrayRef> {
    datafusion::arrow::compute::cast(c, &encoded_from(t, c.data_type())?).ok()
}

/// Encodes value `i` of `a` (a [`binary_column`]) in PostgreSQL's binary form.
pub(super) fn encode_binary(encoder: &mut DataRowEncoder, a: &dyn Array, i: usize) -> PgWireResult<()> {
    match a.data_type() {
        DataType::Boolean => encoder.encode_field(&a.as_boolean().value(i)),
        DataType::Int16 => encoder.encode_field(&a.as_primitive::<Int16Type>().value(i)),
        DataType::Int32 => encoder.encode_field(&a.as_primitive::<Int32Type>().value(i)),
        DataType::Int64 => encoder.encode_field(&a.as_primitive::<Int64Type>().value(i)),
        DataType::Float32 => encoder.encode_field(&a.as_primitive::<Float32Type>().value(i)),
        // Microseconds and days from PostgreSQL's epoch, as 8 and 4 big-endian bytes.
        DataType::Timestamp(..) => encoder
            .encode_field(&a.as_primitive::<TimestampMicrosecondType>().value(i).saturating_sub(PG_EPOCH_US)),
        DataType::Date32 => {
            encoder.encode_field(&a.as_primitive::<Date32Type>().value(i).saturating_sub(PG_EPOCH_DAYS))
        }
        _ => encoder.encode_field(&a.as_primitive::<Float64Type>().value(i)),
    }
}

/// A binary date-time parameter as the text the plan reads it from (RFC 3339, which DataFusion
/// casts to its column's type); None if `t` is not a date-time type, an error text if the bytes
/// are not one.
pub(super) fn datetime_param(t: &Type, bytes: &[u8]) -> Option<Result<String, String>> {
    let wrong = |n: usize| Err(format!("a binary {} has {n} bytes, not {}", t.name(), bytes.len()));
    Some(match *t {
        Type::TIMESTAMPTZ | Type::TIMESTAMP => {
            let Ok(b) = <[u8; 8]>::try_from(bytes) else { return Some(wrong(8)) };
            let us = i64::from_be_bytes(b).saturating_add(PG_EPOCH_US);
            match DateTime::from_timestamp_micros(us) {
                Some(at) if *t == Type::TIMESTAMPTZ => Ok(at.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
                Some(at) => Ok(at.naive_utc().format("%Y-%m-%dT%H:%M:%S%.f").to_string()),
                None => Err(format!("the binary {} {us} µs is out of range", t.name())),
            }
        }
        Type::DATE => {
            let Ok(b) = <[u8; 4]>::try_from(bytes) else { return Some(wrong(4)) };
            let days = i32::from_be_bytes(b).saturating_add(PG_EPOCH_DAYS);
            match DateTime::from_timestamp(i64::from(days) * 86_400, 0) {
                Some(t) => Ok(t.date_naive().to_string()),
                None => Err(format!("the binary date {days} is out of range")),
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{TimestampMillisecondArray, TimestampNanosecondArray};
    use datafusion::arrow::util::display::FormatOptions;

    use super::*;

    fn text(c: &dyn Array, i: usize) -> String {
        let options = FormatOptions::default();
        pg_text(c, &ArrayFormatter::try_new(c, &options).unwrap(), i)
    }

    #[test]
    fn timestamps_print_as_postgresql_prints_them() {
        let ms = TimestampMillisecondArray::from(vec![1_781_467_223_400, 1_781_467_223_000, -1])
            .with_timezone("UTC");
        assert_eq!(text(&ms, 0), "2026-06-14 20:00:23.4+00");
        assert_eq!(text(&ms, 1), "2026-06-14 20:00:23+00");
        assert_eq!(text(&ms, 2), "1969-12-31 23:59:59.999+00");
        let local = TimestampNanosecondArray::from(vec![1_781_467_223_123_456_789]);
        assert_eq!(text(&local, 0), "2026-06-14 20:00:23.123456", "nanoseconds cut to microseconds");
        // The extremes of Arrow's range neither panic nor print a wrong date.
        let far = TimestampMillisecondArray::from(vec![i64::MIN, i64::MAX]).with_timezone("UTC");
        assert!(!text(&far, 0).is_empty() && !text(&far, 1).is_empty());
    }

    #[test]
    fn binary_timestamps_count_microseconds_from_2000_and_read_back() {
        let c: ArrayRef = Arc::new(
            TimestampMillisecondArray::from(vec![946_684_800_000, 1_781_467_223_400]).with_timezone("UTC"),
        );
        let b = binary_column(&c, &pg_type(c.data_type())).unwrap();
        let values = b.as_primitive::<TimestampMicrosecondType>();
        assert_eq!(values.value(0) - PG_EPOCH_US, 0, "2000-01-01 is PostgreSQL's zero");
        let sent = (values.value(1) - PG_EPOCH_US).to_be_bytes();
        assert_eq!(datetime_param(&Type::TIMESTAMPTZ, &sent), Some(Ok("2026-06-14T20:00:23.400Z".into())));
        assert_eq!(datetime_param(&Type::TIMESTAMP, &sent), Some(Ok("2026-06-14T20:00:23.400".into())));
        assert_eq!(datetime_param(&Type::DATE, &0i32.to_be_bytes()), Some(Ok("2000-01-01".into())));
        assert!(matches!(datetime_param(&Type::TIMESTAMPTZ, &[0; 4]), Some(Err(_))));
        assert_eq!(datetime_param(&Type::INT8, &[0; 8]), None);
    }

    #[test]
    fn the_catalog_describes_a_column_as_the_type_it_is_sent_as() {
        for t in [
            DataType::UInt8,
            DataType::UInt32,
            DataType::UInt64,
            DataType::Float16,
            DataType::Utf8,
            DataType::LargeUtf8,
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            DataType::Date64,
            DataType::new_list(DataType::Int32, true),
        ] {
            assert_eq!(pg_type(&catalog_type(&t)), pg_type(&t), "{t}");
        }
    }
}

//! PostgreSQL's types for Arrow's: the type each column is sent as, its text form (what psql
//! prints and COPY writes) and its binary form (drivers' prepared statements), and binary
//! parameters read back as the text the plan takes.
//!
//! One mapping serves the rows, the extended protocol's descriptions and the catalog psql's `\d`
//! reads ([`catalog_type`]), so that a column is described as the type its values come as.
//! Timestamps are PostgreSQL's (`timestamp with time zone` for Arrow's UTC instants) and
//! durations its `interval`, so that drivers give their own date-time values (psycopg a
//! `datetime` and a `timedelta`, JDBC a `Timestamp` and a `PGInterval`).

use chrono::{DateTime, SecondsFormat};
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, DurationMicrosecondType, DurationMillisecondType, DurationNanosecondType,
    DurationSecondType, Float16Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type,
    IntervalDayTimeType, IntervalMonthDayNanoType, IntervalUnit, IntervalYearMonthType, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use pgwire::api::Type;

/// PostgreSQL's epoch (2000-01-01) in Unix microseconds: binary timestamps count from it.
const PG_EPOCH_US: i64 = 946_684_800_000_000;
/// PostgreSQL's epoch in Unix days: binary dates count from it.
const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds in a day, an hour, a minute and a second: an interval's time part.
const US_PER_DAY: i64 = 86_400_000_000;
const US_PER_HOUR: i64 = 3_600_000_000;
const US_PER_MINUTE: i64 = 60_000_000;
const US_PER_SECOND: i64 = 1_000_000;

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
        DataType::Duration(_) | DataType::Interval(_) => Type::INTERVAL,
        // A list of one of the types above is PostgreSQL's array of it (`array_agg`); a list of
        // lists goes as its text.
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            array_of(&pg_type(f.data_type())).unwrap_or(Type::TEXT)
        }
        _ => Type::TEXT,
    }
}

/// PostgreSQL's array type of `element`, for the element types [`pg_type`] gives.
fn array_of(element: &Type) -> Option<Type> {
    Some(match *element {
        Type::BOOL => Type::BOOL_ARRAY,
        Type::INT2 => Type::INT2_ARRAY,
        Type::INT4 => Type::INT4_ARRAY,
        Type::INT8 => Type::INT8_ARRAY,
        Type::FLOAT4 => Type::FLOAT4_ARRAY,
        Type::FLOAT8 => Type::FLOAT8_ARRAY,
        Type::TEXT => Type::TEXT_ARRAY,
        Type::TIMESTAMPTZ => Type::TIMESTAMPTZ_ARRAY,
        Type::TIMESTAMP => Type::TIMESTAMP_ARRAY,
        Type::DATE => Type::DATE_ARRAY,
        Type::INTERVAL => Type::INTERVAL_ARRAY,
        _ => return None,
    })
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
        Type::INTERVAL => DataType::Interval(IntervalUnit::MonthDayNano),
        // An array's elements as their own type is encoded from (text as `Utf8`).
        // (PostgreSQL names its array types after their element's with a `_`: `_int8`.)
        _ if t.name().starts_with('_') => match from {
            DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
                let element = encoded_from(&pg_type(f.data_type()), f.data_type()).unwrap_or(DataType::Utf8);
                DataType::new_list(element, true)
            }
            _ => return None,
        },
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
        Type::INTERVAL => ("interval", "interval", None, None, Some(6)),
        Type::BOOL_ARRAY => ("boolean[]", "_bool", None, None, None),
        Type::INT2_ARRAY => ("smallint[]", "_int2", None, None, None),
        Type::INT4_ARRAY => ("integer[]", "_int4", None, None, None),
        Type::INT8_ARRAY => ("bigint[]", "_int8", None, None, None),
        Type::FLOAT4_ARRAY => ("real[]", "_float4", None, None, None),
        Type::FLOAT8_ARRAY => ("double precision[]", "_float8", None, None, None),
        Type::TEXT_ARRAY => ("text[]", "_text", None, None, None),
        Type::TIMESTAMPTZ_ARRAY => ("timestamp with time zone[]", "_timestamptz", None, None, None),
        Type::TIMESTAMP_ARRAY => ("timestamp without time zone[]", "_timestamp", None, None, None),
        Type::DATE_ARRAY => ("date[]", "_date", None, None, None),
        Type::INTERVAL_ARRAY => ("interval[]", "_interval", None, None, None),
        _ => ("text", "text", None, None, None),
    };
    SqlType { name, udt, bits, scale, second_digits }
}

/// Appends value `i` of `c` in PostgreSQL's text form to `out`: Arrow's display, but booleans as
/// `t` and `f`, timestamps as PostgreSQL prints them (`2026-06-14 20:00:23.4+00`, the session's
/// time zone being UTC), which it and DataFusion both read back, durations as its intervals
/// (`00:00:44.2`, `1 day 02:00:00`), floats as its (`5400`, `Infinity`: JDBC and psycopg read
/// Arrow's `inf` as no number) and lists as its arrays (`{1,2}`). Appended, not returned: COPY
/// writes a row's values into one line, without a `String` each.
pub(crate) fn write_pg_text(out: &mut String, c: &dyn Array, f: &ArrayFormatter<'_>, i: usize) {
    use std::fmt::Write;
    match c.data_type() {
        DataType::Boolean => out.push(if c.as_boolean().value(i) { 't' } else { 'f' }),
        DataType::Float64 => {
            let x = c.as_primitive::<Float64Type>().value(i);
            write_float(out, x, |b| b.format_finite(x), 15);
        }
        DataType::Float32 => {
            let x = c.as_primitive::<Float32Type>().value(i);
            write_float(out, f64::from(x), |b| b.format_finite(x), 6);
        }
        DataType::Float16 => {
            let x = f32::from(c.as_primitive::<Float16Type>().value(i));
            write_float(out, f64::from(x), |b| b.format_finite(x), 6);
        }
        DataType::Duration(_) | DataType::Interval(_) => {
            if let Some((months, days, us)) = interval(c, i) {
                write_interval(out, months, days, us);
            }
        }
        DataType::Timestamp(_, tz) => {
            if let Some(us) = micros(c, i) {
                write_timestamp(out, us, tz.as_deref());
            }
        }
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => write_array(out, c, i),
        _ => {
            let _ = write!(out, "{}", f.value(i));
        }
    }
}

/// Appends list `i` of `c` as PostgreSQL prints an array: `{1,2}`, `{gate-a,"fan zone",NULL}`,
/// each element in its own text form, quoted (with `\\` before `"` and `\\`) where it is empty,
/// `NULL`, or holds a brace, a quote, a comma, a backslash or a space; `{{1,2},{3}}` for lists
/// of lists.
fn write_array(out: &mut String, c: &dyn Array, i: usize) {
    let values: ArrayRef = match c.data_type() {
        DataType::List(_) => c.as_list::<i32>().value(i),
        DataType::LargeList(_) => c.as_list::<i64>().value(i),
        DataType::FixedSizeList(..) => c.as_fixed_size_list().value(i),
        _ => return,
    };
    let options = FormatOptions::default();
    let Ok(f) = ArrayFormatter::try_new(values.as_ref(), &options) else { return };
    let nested = matches!(
        values.data_type(),
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..)
    );
    let mut element = String::new();
    out.push('{');
    for k in 0..values.len() {
        if k > 0 {
            out.push(',');
        }
        if values.is_null(k) {
            out.push_str("NULL");
            continue;
        }
        element.clear();
        write_pg_text(&mut element, values.as_ref(), &f, k);
        let quote = !nested
            && (element.is_empty()
                || element.eq_ignore_ascii_case("NULL")
                || element.contains(|ch: char| {
                    matches!(ch, '{' | '}' | '"' | ',' | '\\') || ch.is_ascii_whitespace()
                }));
        if !quote {
            out.push_str(&element);
            continue;
        }
        out.push('"');
        for ch in element.chars() {
            if matches!(ch, '"' | '\\') {
                out.push('\\');
            }
            out.push(ch);
        }
        out.push('"');
    }
    out.push('}');
}

/// Appends a float as PostgreSQL prints it: the shortest digits that read back as the same value
/// (`shortest` prints them, with ryu), fixed where the exponent is from -4 to below `digits` (15
/// for `float8`, 6 for `float4`) and `1e+20`, `1.5e-05` otherwise; `Infinity`, `-Infinity` and
/// `NaN`. Arrow prints `5400.0`, `inf` and `1e20`, which JDBC does not read.
fn write_float(out: &mut String, x: f64, shortest: impl FnOnce(&mut ryu::Buffer) -> &str, digits: i32) {
    if x.is_nan() {
        return out.push_str("NaN");
    }
    if x.is_infinite() {
        return out.push_str(if x > 0.0 { "Infinity" } else { "-Infinity" });
    }
    let mut buffer = ryu::Buffer::new();
    let text = shortest(&mut buffer);
    let text = match text.strip_prefix('-') {
        Some(t) => {
            out.push('-');
            t
        }
        None => text,
    };
    // ryu's text (`5400.0`, `0.0001`, `1e20`, `1.5e-5`) as its significant digits and the
    // exponent of the first: 54 and 3, 1 and -4, 1 and 20, 15 and -5.
    let (mantissa, exp) = text.split_once('e').unwrap_or((text, "0"));
    let mut figures = [0u8; 24];
    let (mut n, mut whole) = (0, None);
    for b in mantissa.bytes() {
        match b {
            b'.' => whole = Some(n),
            _ if n < figures.len() => {
                figures[n] = b;
                n += 1;
            }
            _ => {}
        }
    }
    let whole = whole.unwrap_or(n) as i32;
    let zeros = figures[..n].iter().take_while(|&&b| b == b'0').count();
    let figures = &figures[zeros..n];
    let end = figures.iter().rposition(|&b| b != b'0').map_or(0, |p| p + 1);
    let (figures, exponent) = match &figures[..end] {
        [] => (&b"0"[..], 0),
        f => (f, whole - 1 - zeros as i32 + exp.parse::<i32>().unwrap_or(0)),
    };
    let figures = std::str::from_utf8(figures).unwrap_or("0");
    write_fixed_or_exp(out, figures, exponent, digits);
}

/// Appends significant `figures` times 10 to the `exponent` (of the first), as [`write_float`]
/// does.
fn write_fixed_or_exp(out: &mut String, figures: &str, exponent: i32, digits: i32) {
    use std::fmt::Write;
    let (first, rest) = figures.split_at(1);
    if !(-4..digits).contains(&exponent) {
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        let _ = write!(out, "e{}{:02}", if exponent < 0 { '-' } else { '+' }, exponent.abs());
    } else if exponent < 0 {
        out.push_str("0.");
        (1..-exponent).for_each(|_| out.push('0'));
        out.push_str(figures);
    } else {
        let whole = exponent as usize + 1;
        if figures.len() <= whole {
            out.push_str(figures);
            (figures.len()..whole).for_each(|_| out.push('0'));
        } else {
            out.push_str(&figures[..whole]);
            out.push('.');
            out.push_str(&figures[whole..]);
        }
    }
}

/// Value `i` of duration or interval column `c` as PostgreSQL's interval: months, days and
/// microseconds (nanoseconds cut). A duration is split into days and time as PostgreSQL's
/// difference of two timestamps is (`1 day 02:00:00`, not `26:00:00`). None for other types.
pub(crate) fn interval(c: &dyn Array, i: usize) -> Option<(i32, i32, i64)> {
    let (months, days, us) = match c.data_type() {
        DataType::Duration(unit) => {
            let us = match unit {
                TimeUnit::Second => {
                    c.as_primitive::<DurationSecondType>().value(i).saturating_mul(US_PER_SECOND)
                }
                TimeUnit::Millisecond => {
                    c.as_primitive::<DurationMillisecondType>().value(i).saturating_mul(1_000)
                }
                TimeUnit::Microsecond => c.as_primitive::<DurationMicrosecondType>().value(i),
                TimeUnit::Nanosecond => c.as_primitive::<DurationNanosecondType>().value(i) / 1_000,
            };
            let days = i32::try_from(us / US_PER_DAY).unwrap_or(if us < 0 { i32::MIN } else { i32::MAX });
            (0, days, us % US_PER_DAY)
        }
        DataType::Interval(IntervalUnit::YearMonth) => {
            (c.as_primitive::<IntervalYearMonthType>().value(i), 0, 0)
        }
        DataType::Interval(IntervalUnit::DayTime) => {
            let v = c.as_primitive::<IntervalDayTimeType>().value(i);
            (0, v.days, i64::from(v.milliseconds) * 1_000)
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let v = c.as_primitive::<IntervalMonthDayNanoType>().value(i);
            (v.months, v.days, v.nanoseconds / 1_000)
        }
        _ => return None,
    };
    Some((months, days, us))
}

/// Appends an interval as PostgreSQL prints it (its default `IntervalStyle`, `postgres`): years,
/// `mons` and days where not zero, then the time as `HH:MM:SS` with the seconds' fraction
/// without trailing zeros (`1 year 2 mons -3 days +04:05:06.5`); `00:00:00` for none.
pub(crate) fn write_interval(text: &mut String, months: i32, days: i32, us: i64) {
    use std::fmt::Write;
    let start = text.len();
    // Whether the last part written was negative: a positive part after it takes a `+`.
    let mut before_negative = false;
    for (value, unit) in [(months / 12, "year"), (months % 12, "mon"), (days, "day")] {
        if value == 0 {
            continue;
        }
        let space = if text.len() == start { "" } else { " " };
        let plus = if before_negative && value > 0 { "+" } else { "" };
        let s = if value == 1 { "" } else { "s" };
        let _ = write!(text, "{space}{plus}{value} {unit}{s}");
        before_negative = value < 0;
    }
    if text.len() == start || us != 0 {
        let space = if text.len() == start { "" } else { " " };
        let sign = if us < 0 {
            "-"
        } else if before_negative {
            "+"
        } else {
            ""
        };
        let a = us.unsigned_abs();
        let (h, m, s) =
            (a / US_PER_HOUR as u64, a / US_PER_MINUTE as u64 % 60, a / US_PER_SECOND as u64 % 60);
        let _ = write!(text, "{space}{sign}{h:02}:{m:02}:{s:02}");
        push_fraction(text, (a % US_PER_SECOND as u64) as u32);
    }
}

/// Appends `.` and a second's `fraction` (microseconds) without trailing zeros; nothing for 0.
fn push_fraction(text: &mut String, mut fraction: u32) {
    use std::fmt::Write;
    if fraction > 0 {
        let mut digits = 6;
        while fraction.is_multiple_of(10) {
            fraction /= 10;
            digits -= 1;
        }
        let _ = write!(text, ".{fraction:0digits$}");
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

/// Appends `us` (Unix microseconds) as PostgreSQL's ISO text: seconds' fraction without
/// trailing zeros; for an instant (`timestamptz`, `zone` its Arrow time zone) the wall-clock time
/// in that zone and its offset (`+00` for UTC; `2026-06-14 21:00:23.4+01` for `event_time AT
/// TIME ZONE 'Africa/Casablanca'`, as PostgreSQL prints it with that `TimeZone`), nothing for a
/// local time (`timestamp`).
fn write_timestamp(text: &mut String, us: i64, zone: Option<&str>) {
    use chrono::{Datelike, Offset, Timelike};
    use std::fmt::Write;
    let Some(t) = DateTime::from_timestamp_micros(us) else {
        let _ = write!(text, "{us}");
        return;
    };
    let (local, offset) = match zone {
        None => (t.naive_utc(), None),
        Some("UTC" | "+00:00" | "Z") => (t.naive_utc(), Some(0)),
        // Any other zone Arrow reads (named zones with their daylight and Ramadan changes, or
        // fixed offsets); one it does not (never made by DataFusion) as UTC.
        Some(z) => match z.parse::<datafusion::arrow::array::timezone::Tz>() {
            Ok(tz) => {
                let there = t.with_timezone(&tz);
                (there.naive_local(), Some(there.offset().fix().local_minus_utc()))
            }
            Err(_) => (t.naive_utc(), Some(0)),
        },
    };
    // Written field by field: chrono's `format` reads its pattern again for every value, which
    // made a timestamp cost five times another column's value in COPY.
    let (date, time) = (local.date(), local.time());
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
    push_fraction(text, t.timestamp_subsec_micros());
    if let Some(seconds) = offset {
        let (sign, a) = (if seconds < 0 { '-' } else { '+' }, seconds.unsigned_abs());
        let _ = write!(text, "{sign}{:02}", a / 3600);
        if a % 3600 != 0 {
            let _ = write!(text, ":{:02}", a / 60 % 60);
        }
    }
}

/// Column `c` cast to what its binary form is encoded from, for a column sent as `t`; None if
/// `t` goes as text.
pub(super) fn binary_column(c: &ArrayRef, t: &Type) -> Option<ArrayRef> {
    datafusion::arrow::compute::cast(c, &encoded_from(t, c.data_type())?).ok()
}

/// Appends value `i` of `a` (a [`binary_column`]) in PostgreSQL's binary form: big-endian
/// numbers; microseconds and days from PostgreSQL's epoch for timestamps and dates;
/// microseconds, days and months for an interval; an array as [`push_array`] writes it.
pub(super) fn push_binary(out: &mut Vec<u8>, a: &dyn Array, i: usize) {
    match a.data_type() {
        DataType::Boolean => out.push(u8::from(a.as_boolean().value(i))),
        DataType::Int16 => out.extend_from_slice(&a.as_primitive::<Int16Type>().value(i).to_be_bytes()),
        DataType::Int32 => out.extend_from_slice(&a.as_primitive::<Int32Type>().value(i).to_be_bytes()),
        DataType::Int64 => out.extend_from_slice(&a.as_primitive::<Int64Type>().value(i).to_be_bytes()),
        DataType::Float32 => out.extend_from_slice(&a.as_primitive::<Float32Type>().value(i).to_be_bytes()),
        DataType::Float64 => out.extend_from_slice(&a.as_primitive::<Float64Type>().value(i).to_be_bytes()),
        DataType::Timestamp(..) => out.extend_from_slice(
            &a.as_primitive::<TimestampMicrosecondType>().value(i).saturating_sub(PG_EPOCH_US).to_be_bytes(),
        ),
        DataType::Date32 => out.extend_from_slice(
            &a.as_primitive::<Date32Type>().value(i).saturating_sub(PG_EPOCH_DAYS).to_be_bytes(),
        ),
        DataType::Interval(_) => {
            let v = a.as_primitive::<IntervalMonthDayNanoType>().value(i);
            out.extend_from_slice(&(v.nanoseconds / 1_000).to_be_bytes());
            out.extend_from_slice(&v.days.to_be_bytes());
            out.extend_from_slice(&v.months.to_be_bytes());
        }
        DataType::Utf8 => out.extend_from_slice(a.as_string::<i32>().value(i).as_bytes()),
        DataType::List(_) => push_array(out, &a.as_list::<i32>().value(i)),
        _ => {}
    }
}

/// Appends PostgreSQL's binary array of `values` (a [`binary_column`]'s list): one dimension
/// (none when empty), whether any element is NULL, the element type's oid, the length and the
/// lower bound 1, then each element's length (-1 for NULL) and binary form.
fn push_array(out: &mut Vec<u8>, values: &ArrayRef) {
    let n = values.len();
    let dimensions: i32 = if n == 0 { 0 } else { 1 };
    out.extend_from_slice(&dimensions.to_be_bytes());
    out.extend_from_slice(&i32::from(values.null_count() > 0).to_be_bytes());
    out.extend_from_slice(&pg_type(values.data_type()).oid().to_be_bytes());
    if n == 0 {
        return;
    }
    out.extend_from_slice(&i32::try_from(n).unwrap_or(i32::MAX).to_be_bytes());
    out.extend_from_slice(&1i32.to_be_bytes());
    for k in 0..n {
        if values.is_null(k) {
            out.extend_from_slice(&(-1i32).to_be_bytes());
            continue;
        }
        let at = out.len();
        out.extend_from_slice(&0i32.to_be_bytes());
        push_binary(out, values.as_ref(), k);
        let len = i32::try_from(out.len() - at - 4).unwrap_or(i32::MAX);
        out[at..at + 4].copy_from_slice(&len.to_be_bytes());
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
        // PostgreSQL's binary interval: microseconds, days, months (psycopg sends a timedelta so);
        // written in units DataFusion's interval text reads.
        Type::INTERVAL => {
            let Ok(b) = <[u8; 16]>::try_from(bytes) else { return Some(wrong(16)) };
            let us = i64::from_be_bytes(b[..8].try_into().unwrap_or_default());
            let days = i32::from_be_bytes(b[8..12].try_into().unwrap_or_default());
            let months = i32::from_be_bytes(b[12..].try_into().unwrap_or_default());
            Ok(format!("{months} months {days} days {us} microseconds"))
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{
        DurationMicrosecondArray, Float32Array, Float64Array, Int64Builder, IntervalMonthDayNanoArray,
        ListBuilder, StringBuilder, TimestampMillisecondArray, TimestampMillisecondBuilder,
        TimestampNanosecondArray,
    };
    use datafusion::arrow::datatypes::IntervalMonthDayNano;

    use super::*;

    fn text(c: &dyn Array, i: usize) -> String {
        let options = FormatOptions::default();
        let mut text = String::new();
        write_pg_text(&mut text, c, &ArrayFormatter::try_new(c, &options).unwrap(), i);
        text
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
    fn floats_print_as_postgresql_prints_them() {
        // PostgreSQL 15 (Debian) for the same values: `SELECT 5400::float8, …`.
        let f8 = Float64Array::from(vec![
            5400.0,
            0.1,
            1e20,
            1.5e-5,
            123_456_789_012_345_678.0,
            1e15,
            1e14,
            -0.0,
            1.5e300,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            -2.5,
        ]);
        let printed: Vec<String> = (0..f8.len()).map(|i| text(&f8, i)).collect();
        assert_eq!(
            printed,
            [
                "5400",
                "0.1",
                "1e+20",
                "1.5e-05",
                "1.2345678901234568e+17",
                "1e+15",
                "100000000000000",
                "-0",
                "1.5e+300",
                "Infinity",
                "-Infinity",
                "NaN",
                "-2.5"
            ]
        );
        let f4 = Float32Array::from(vec![1e6, 123_456.0, 0.0001, 0.00001, 0.3, 16_777_217.0, 1.0 / 3.0]);
        let printed: Vec<String> = (0..f4.len()).map(|i| text(&f4, i)).collect();
        assert_eq!(printed, ["1e+06", "123456", "0.0001", "1e-05", "0.3", "1.6777216e+07", "0.33333334"]);
    }

    proptest::proptest! {
        /// Every float's text reads back as the same float (psql's `\copy` and drivers read it).
        #[test]
        fn float_text_reads_back(bits in proptest::num::u64::ANY, small in proptest::num::f32::ANY) {
            let x = f64::from_bits(bits);
            let printed = text(&Float64Array::from(vec![x]), 0);
            let back: f64 = printed.parse().unwrap();
            proptest::prop_assert!(back.to_bits() == x.to_bits() || (x.is_nan() && back.is_nan()), "{x} {printed}");
            let printed = text(&Float32Array::from(vec![small]), 0);
            let back: f32 = printed.parse().unwrap();
            proptest::prop_assert!(back.to_bits() == small.to_bits() || (small.is_nan() && back.is_nan()), "{small} {printed}");
        }
    }

    #[test]
    fn durations_and_intervals_print_as_postgresqls_intervals() {
        // PostgreSQL 15 (Debian): `SELECT interval '26 hours', …, timestamptz '2026-01-01' -
        // timestamptz '2026-01-03 04:00:00'` (a difference of instants is split into days).
        let us = |s: f64| (s * 1e6) as i64;
        let d = DurationMicrosecondArray::from(vec![
            us(44.2),
            us(26.0 * 3600.0),
            -us(52.0 * 3600.0),
            0,
            us(-1.5),
        ]);
        let printed: Vec<String> = (0..d.len()).map(|i| text(&d, i)).collect();
        assert_eq!(printed, ["00:00:44.2", "1 day 02:00:00", "-2 days -04:00:00", "00:00:00", "-00:00:01.5"]);
        let mdn = |months, days, s: f64| IntervalMonthDayNano::new(months, days, (s * 1e9) as i64);
        let i = IntervalMonthDayNanoArray::from(vec![
            mdn(0, 0, 26.0 * 3600.0),
            mdn(-14, 0, 0.0),
            mdn(1, -1, 0.0),
            mdn(0, -3, -1.5),
            mdn(0, 1, -3600.0),
            mdn(14, 3, 4.0 * 3600.0 + 5.0 * 60.0 + 6.5),
            mdn(0, -1, 3600.0),
        ]);
        let printed: Vec<String> = (0..i.len()).map(|n| text(&i, n)).collect();
        assert_eq!(
            printed,
            [
                "26:00:00",
                "-1 years -2 mons",
                "1 mon -1 days",
                "-3 days -00:00:01.5",
                "1 day -01:00:00",
                "1 year 2 mons 3 days 04:05:06.5",
                "-1 days +01:00:00"
            ]
        );
        // Binary: microseconds, days and months, from what every interval is cast to.
        let c: ArrayRef = Arc::new(d);
        let t = pg_type(c.data_type());
        assert_eq!(t, Type::INTERVAL);
        let b = binary_column(&c, &t).unwrap();
        let v = b.as_primitive::<IntervalMonthDayNanoType>().value(0);
        assert_eq!((v.months, v.days, v.nanoseconds / 1_000), (0, 0, 44_200_000));
    }

    #[test]
    fn lists_print_as_postgresqls_arrays() {
        // PostgreSQL 15 (Debian): `SELECT ARRAY['a', 'fan zone', '', NULL, 'x"y', 'NULL'],
        // ARRAY[ARRAY[1,2],ARRAY[3,4]], ARRAY[TIMESTAMPTZ '2026-06-14 20:00:00+00']`.
        let mut texts = ListBuilder::new(StringBuilder::new());
        for v in
            [Some("a"), Some("fan zone"), Some(""), None, Some("x\"y"), Some("NULL"), Some("back\\slash")]
        {
            texts.values().append_option(v);
        }
        texts.append(true);
        texts.append(true);
        let texts = texts.finish();
        assert_eq!(text(&texts, 0), r#"{a,"fan zone","",NULL,"x\"y","NULL","back\\slash"}"#);
        assert_eq!(text(&texts, 1), "{}");
        let mut nested = ListBuilder::new(ListBuilder::new(Int64Builder::new()));
        for row in [[1, 2], [3, 4]] {
            nested.values().values().append_slice(&row);
            nested.values().append(true);
        }
        nested.append(true);
        assert_eq!(text(&nested.finish(), 0), "{{1,2},{3,4}}");
        let mut instants = ListBuilder::new(TimestampMillisecondBuilder::new().with_timezone("UTC"));
        instants.values().append_value(1_781_467_200_000);
        instants.append(true);
        let instants = instants.finish();
        assert_eq!(text(&instants, 0), r#"{"2026-06-14 20:00:00+00"}"#);
        assert_eq!(pg_type(instants.data_type()), Type::TIMESTAMPTZ_ARRAY);
        assert_eq!(type_name(texts.data_type()).name, "text[]");
        // Binary: one dimension, no NULL, int8's oid, two elements from 1, each 8 bytes.
        let mut ints = ListBuilder::new(Int64Builder::new());
        ints.values().append_slice(&[1, 2]);
        ints.append(true);
        let c: ArrayRef = Arc::new(ints.finish());
        let b = binary_column(&c, &pg_type(c.data_type())).unwrap();
        let mut bytes = Vec::new();
        push_array(&mut bytes, &b.as_list::<i32>().value(0));
        let words: Vec<i32> =
            bytes.chunks(4).take(5).map(|w| i32::from_be_bytes(w.try_into().unwrap())).collect();
        assert_eq!(words, [1, 0, 20, 2, 1]);
        assert_eq!(bytes.len(), 20 + 2 * (4 + 8));
    }

    #[test]
    fn instants_in_another_zone_print_its_wall_clock_and_offset() {
        // PostgreSQL 15 (Debian) with `SET TimeZone = 'Africa/Casablanca'` ('Asia/Kolkata'):
        // `2026-06-14 21:00:23.4+01`, and `+00` on 2026-03-01, in Ramadan; `+05:30` in Kolkata.
        let at =
            |zone: &str, ms: i64| text(&TimestampMillisecondArray::from(vec![ms]).with_timezone(zone), 0);
        assert_eq!(at("Africa/Casablanca", 1_781_467_223_400), "2026-06-14 21:00:23.4+01");
        assert_eq!(at("Africa/Casablanca", 1_772_366_400_000), "2026-03-01 12:00:00+00");
        assert_eq!(at("Asia/Kolkata", 1_781_467_223_400), "2026-06-15 01:30:23.4+05:30");
        assert_eq!(at("-03:00", 1_781_467_223_400), "2026-06-14 17:00:23.4-03");
        assert_eq!(at("+00:00", 1_781_467_223_400), "2026-06-14 20:00:23.4+00");
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
        // An interval: microseconds, days, months.
        let sent =
            [(-1_500_000i64).to_be_bytes().as_slice(), &2i32.to_be_bytes(), &14i32.to_be_bytes()].concat();
        assert_eq!(
            datetime_param(&Type::INTERVAL, &sent),
            Some(Ok("14 months 2 days -1500000 microseconds".into()))
        );
        assert!(matches!(datetime_param(&Type::INTERVAL, &[0; 8]), Some(Err(_))));
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

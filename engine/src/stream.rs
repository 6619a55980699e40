//! Stream definitions: one Rust definition per stream, and typed timely streams of it.
//!
//! A stream is defined once, with [`stream!`](crate::stream!), next to the operator that
//! produces it. The definition gives its name, its columns (and so its Arrow schema), which
//! columns are its keys and which hold personal data, and its retention [`Class`]; the macro
//! writes the row type, the row builder and the typed reader. Everything else in vigil (the
//! Parquet sinks, the SQL catalog, psql `SELECT`, replay, retention) iterates a
//! [`Catalog`](crate::catalog::Catalog) of these definitions, so a new stream is one definition
//! and nothing else.
//!
//! Columns are typed by Rust types implementing [`Column`]: `u32`, `u64`, `i32`, `i64`, `f32`,
//! `f64`, `bool`, [`Str`] (UTF-8), [`Timestamp`] (milliseconds, UTC), and `Option<_>` of each for
//! a nullable column. A reader checks every column's name and type and fails with the stream
//! and the column when a batch does not match; nothing is skipped silently.
//!
//! In the dataflow a stream travels as [`Events<'s, S>`]: a timely stream of [`Batch`]es that
//! only operators for `S` accept, so `detections.track_objects(..)` cannot be handed tracks.
//!
//! ```
//! use vigil_engine::stream::{StreamDef, Timestamp, Str};
//!
//! vigil_engine::stream! {
//!     /// Doors opened, one row per door and opening.
//!     pub struct DoorOpenings {
//!         name: "door_openings",
//!         class: Record,
//!         keys: [door, event_time],
//!         personal: [],
//!         row: DoorOpening,
//!         builder: DoorOpeningRows,
//!         reader: DoorOpeningCols,
//!         columns: {
//!             /// The door.
//!             door: u32,
//!             /// When it opened.
//!             event_time: Timestamp,
//!             /// Who opened it, if known.
//!             badge: Option<Str>,
//!         }
//!     }
//! }
//!
//! let mut rows = DoorOpeningRows::default();
//! rows.push(&DoorOpening { door: 3, event_time: 1_000, badge: Some("A-17") });
//! let batch = rows.finish();
//! let cols = DoorOpeningCols::new(&batch).unwrap();
//! assert_eq!(cols.row(0).badge, Some("A-17"));
//! assert_eq!(DoorOpenings::info().schema.field(2).name(), "badge");
//! ```

use std::marker::PhantomData;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, BooleanBuilder, Float32Array, Float32Builder, Float64Array,
    Float64Builder, Int32Array, Int32Builder, Int64Array, Int64Builder, RecordBatch, StringArray,
    StringBuilder, TimestampMillisecondArray, TimestampMillisecondBuilder, UInt32Array, UInt32Builder,
    UInt64Array, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use timely::dataflow::Stream;
use timely::dataflow::operators::Concat;

use crate::error::{EngineError, Result};
use crate::runtime::Time;

/// How a stream's rows are kept: each class has its own retention period (`[retention]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// Rows about one identifiable person or vehicle (detections, tracks, plate reads, their
    /// crossings and visits): the shortest retention, and pseudonymized on export.
    Personal,
    /// Counts and densities that describe no one (zone densities, the grid, camera health).
    Aggregate,
    /// What the engine did and told people (alerts, late events).
    Record,
    /// A reference table (watchlist, zones): current rows changed by diffs, not events; kept
    /// while it is in force.
    Reference,
}

impl Class {
    /// Every class, in order.
    pub const ALL: [Class; 4] = [Class::Personal, Class::Aggregate, Class::Record, Class::Reference];

    /// The class's name, as in the configuration (`[retention] personal = "30d"`).
    pub fn name(self) -> &'static str {
        match self {
            Class::Personal => "personal",
            Class::Aggregate => "aggregate",
            Class::Record => "record",
            Class::Reference => "reference",
        }
    }
}

/// How long a stream's rows stay in memory, where psql, the HTTP API and new rules read them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Memory {
    /// The in-memory horizon (`[retention] memory_s`), or the stream's retention period when
    /// that is shorter: enough for backfill and ad-hoc questions about the last minutes.
    #[default]
    Horizon,
    /// The stream's whole retention period: a worklist people act on (the hits awaiting
    /// verification), small beside the events, whose rows must not leave the queries while they
    /// are still in force. The memory budget takes its rows only when nothing else is left.
    Period,
}

/// What the engine knows of a stream: everything but the Rust types.
#[derive(Debug)]
pub struct StreamInfo {
    /// Name of the stream, its SQL table and its output directory.
    pub name: &'static str,
    /// What one row is (the definition's doc comment).
    pub doc: &'static str,
    /// The Arrow schema.
    pub schema: SchemaRef,
    /// The columns that identify a row.
    pub keys: &'static [&'static str],
    /// The columns that hold personal data (pseudonymized on export).
    pub personal: &'static [&'static str],
    /// How long rows are kept.
    pub class: Class,
    /// How long rows stay in memory.
    pub memory: Memory,
}

impl StreamInfo {
    /// The definition behind [`stream!`](crate::stream!); panics (a bug in the definition, caught
    /// by any test that uses the stream) when a key or personal column is not a column, or an
    /// event stream has no `event_time` timestamp.
    pub fn new(
        name: &'static str,
        doc: &'static str,
        class: Class,
        fields: Vec<Field>,
        keys: &'static [&'static str],
        personal: &'static [&'static str],
    ) -> Self {
        let schema = Arc::new(Schema::new(fields));
        for c in keys.iter().chain(personal) {
            assert!(schema.field_with_name(c).is_ok(), "stream {name}: {c} is not one of its columns");
        }
        if class != Class::Reference {
            let t = schema.field_with_name(EVENT_TIME).map(|f| f.data_type().clone());
            assert!(
                t.as_ref().is_ok_and(|t| *t == Timestamp::data_type()),
                "stream {name}: an event stream needs an `event_time: Timestamp` column"
            );
        }
        Self { name, doc: doc.trim(), schema, keys, personal, class, memory: Memory::Horizon }
    }

    /// The definition, with its rows kept in memory as `memory` says.
    pub fn with_memory(self, memory: Memory) -> Self {
        Self { memory, ..self }
    }

    /// True for a reference table (rows changed by diffs), false for an event stream.
    pub fn is_table(&self) -> bool {
        self.class == Class::Reference
    }
}

/// The column every event stream has: its rows' event time.
pub const EVENT_TIME: &str = "event_time";

/// A stream's Rust definition; written by [`stream!`](crate::stream!).
pub trait StreamDef: 'static {
    /// The stream's name.
    const NAME: &'static str;
    /// Its definition.
    fn info() -> &'static StreamInfo;
    /// Its Arrow schema.
    fn schema() -> SchemaRef {
        Arc::clone(&Self::info().schema)
    }
}

/// A reusable builder of one stream's rows; written by [`stream!`](crate::stream!).
pub trait RowBuilder: Default + std::fmt::Debug + 'static {
    /// The stream the rows belong to.
    type Stream: StreamDef;
    /// Rows pending.
    fn rows(&self) -> usize;
    /// The pending rows as a batch; resets the builder.
    fn take_batch(&mut self) -> RecordBatch;
}

/// A Rust type that stands for an Arrow column type in a stream definition.
pub trait Column: 'static {
    /// The Arrow builder of the column.
    type Builder: Default + std::fmt::Debug;
    /// The Arrow array of the column.
    type Array: Array + 'static;
    /// One value, as rows carry it (`&str` for strings).
    type Value<'a>: Copy + std::fmt::Debug + PartialEq;
    /// True for `Option<_>` columns.
    const NULLABLE: bool;
    /// The Arrow type.
    fn data_type() -> DataType;
    /// Appends a value.
    fn append(b: &mut Self::Builder, v: Self::Value<'_>);
    /// The built column; resets the builder.
    fn finish(b: &mut Self::Builder) -> ArrayRef;
    /// The value at row `i`.
    fn value(a: &Self::Array, i: usize) -> Self::Value<'_>;
}

/// A UTF-8 string column (`Utf8`); rows carry `&str`.
#[derive(Clone, Copy, Debug)]
pub struct Str;

/// A timestamp column: milliseconds since the Unix epoch, UTC; rows carry `i64`.
#[derive(Clone, Copy, Debug)]
pub struct Timestamp;

macro_rules! primitive_column {
    ($t:ty, $dt:expr, $builder:ty, $array:ty) => {
        impl Column for $t {
            type Builder = $builder;
            type Array = $array;
            type Value<'a> = $t;
            const NULLABLE: bool = false;
            fn data_type() -> DataType {
                $dt
            }
            fn append(b: &mut $builder, v: $t) {
                b.append_value(v)
            }
            fn finish(b: &mut $builder) -> ArrayRef {
                Arc::new(b.finish())
            }
            fn value(a: &$array, i: usize) -> $t {
                a.value(i)
            }
        }

        impl Column for Option<$t> {
            type Builder = $builder;
            type Array = $array;
            type Value<'a> = Option<$t>;
            const NULLABLE: bool = true;
            fn data_type() -> DataType {
                $dt
            }
            fn append(b: &mut $builder, v: Option<$t>) {
                b.append_option(v)
            }
            fn finish(b: &mut $builder) -> ArrayRef {
                Arc::new(b.finish())
            }
            fn value(a: &$array, i: usize) -> Option<$t> {
                a.is_valid(i).then(|| a.value(i))
            }
        }
    };
}

primitive_column!(u32, DataType::UInt32, UInt32Builder, UInt32Array);
primitive_column!(u64, DataType::UInt64, UInt64Builder, UInt64Array);
primitive_column!(i32, DataType::Int32, Int32Builder, Int32Array);
primitive_column!(i64, DataType::Int64, Int64Builder, Int64Array);
primitive_column!(f32, DataType::Float32, Float32Builder, Float32Array);
primitive_column!(f64, DataType::Float64, Float64Builder, Float64Array);
primitive_column!(bool, DataType::Boolean, BooleanBuilder, BooleanArray);

impl Column for Str {
    type Builder = StringBuilder;
    type Array = StringArray;
    type Value<'a> = &'a str;
    const NULLABLE: bool = false;
    fn data_type() -> DataType {
        DataType::Utf8
    }
    fn append(b: &mut StringBuilder, v: &str) {
        b.append_value(v)
    }
    fn finish(b: &mut StringBuilder) -> ArrayRef {
        Arc::new(b.finish())
    }
    fn value(a: &StringArray, i: usize) -> &str {
        a.value(i)
    }
}

impl Column for Option<Str> {
    type Builder = StringBuilder;
    type Array = StringArray;
    type Value<'a> = Option<&'a str>;
    const NULLABLE: bool = true;
    fn data_type() -> DataType {
        DataType::Utf8
    }
    fn append(b: &mut StringBuilder, v: Option<&str>) {
        b.append_option(v)
    }
    fn finish(b: &mut StringBuilder) -> ArrayRef {
        Arc::new(b.finish())
    }
    fn value(a: &StringArray, i: usize) -> Option<&str> {
        a.is_valid(i).then(|| a.value(i))
    }
}

impl Column for Timestamp {
    type Builder = TimestampMillisecondBuilder;
    type Array = TimestampMillisecondArray;
    type Value<'a> = i64;
    const NULLABLE: bool = false;
    fn data_type() -> DataType {
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
    }
    fn append(b: &mut TimestampMillisecondBuilder, v: i64) {
        b.append_value(v)
    }
    fn finish(b: &mut TimestampMillisecondBuilder) -> ArrayRef {
        Arc::new(b.finish().with_timezone("UTC"))
    }
    fn value(a: &TimestampMillisecondArray, i: usize) -> i64 {
        a.value(i)
    }
}

impl Column for Option<Timestamp> {
    type Builder = TimestampMillisecondBuilder;
    type Array = TimestampMillisecondArray;
    type Value<'a> = Option<i64>;
    const NULLABLE: bool = true;
    fn data_type() -> DataType {
        Timestamp::data_type()
    }
    fn append(b: &mut TimestampMillisecondBuilder, v: Option<i64>) {
        b.append_option(v)
    }
    fn finish(b: &mut TimestampMillisecondBuilder) -> ArrayRef {
        Arc::new(b.finish().with_timezone("UTC"))
    }
    fn value(a: &TimestampMillisecondArray, i: usize) -> Option<i64> {
        a.is_valid(i).then(|| a.value(i))
    }
}

/// The Arrow field of a column (used by [`stream!`](crate::stream!)).
pub fn field<C: Column>(name: &str) -> Field {
    Field::new(name, C::data_type(), C::NULLABLE)
}

/// Column `name` of `batch` as `C`'s array; fails, naming the stream and the column, when the
/// column is missing or of another type (used by the readers [`stream!`](crate::stream!) writes).
pub fn column<'a, C: Column>(batch: &'a RecordBatch, stream: &str, name: &str) -> Result<&'a C::Array> {
    let col = batch.column_by_name(name).ok_or_else(|| {
        EngineError::Schema(format!(
            "stream {stream}: no column {name} in a batch of columns [{}]",
            batch.schema().fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
        ))
    })?;
    let expected = C::data_type();
    if *col.data_type() != expected {
        return Err(EngineError::Schema(format!(
            "stream {stream}: column {name} is {}, expected {expected}",
            col.data_type()
        )));
    }
    col.as_any().downcast_ref::<C::Array>().ok_or_else(|| {
        EngineError::Schema(format!("stream {stream}: column {name} is not a {expected} array"))
    })
}

/// Checks that `batch` has exactly the columns of `info`, in order and of the same types.
pub fn check_schema(info: &StreamInfo, batch: &RecordBatch) -> Result<()> {
    let (want, got) = (&info.schema, batch.schema());
    for (i, f) in want.fields().iter().enumerate() {
        match got.fields().get(i) {
            Some(g) if g.name() == f.name() && g.data_type() == f.data_type() => {}
            Some(g) => {
                return Err(EngineError::Schema(format!(
                    "stream {}: column {} is {} {}, expected {} {}",
                    info.name,
                    i + 1,
                    g.name(),
                    g.data_type(),
                    f.name(),
                    f.data_type()
                )));
            }
            None => {
                return Err(EngineError::Schema(format!(
                    "stream {}: no column {} ({})",
                    info.name,
                    i + 1,
                    f.name()
                )));
            }
        }
    }
    if got.fields().len() > want.fields().len() {
        return Err(EngineError::Schema(format!(
            "stream {}: {} columns, expected {}",
            info.name,
            got.fields().len(),
            want.fields().len()
        )));
    }
    Ok(())
}

/// Defines a stream: a marker type implementing [`StreamDef`], its row, its row builder and its
/// typed reader. See the [module documentation](crate::stream) for an example.
#[macro_export]
macro_rules! stream {
    (
        $(#[doc = $doc:expr])*
        $vis:vis struct $name:ident {
            name: $sname:literal,
            class: $class:ident,
            $(memory: $memory:ident,)?
            keys: [$($key:ident),* $(,)?],
            personal: [$($personal:ident),* $(,)?],
            row: $row:ident,
            builder: $builder:ident,
            reader: $reader:ident,
            columns: {
                $( $(#[doc = $cdoc:expr])* $col:ident : $ty:ty ),+ $(,)?
            }
        }
    ) => {
        $(#[doc = $doc])*
        #[derive(Clone, Copy, Debug, Default)]
        $vis struct $name;

        impl $crate::stream::StreamDef for $name {
            const NAME: &'static str = $sname;
            fn info() -> &'static $crate::stream::StreamInfo {
                static INFO: ::std::sync::OnceLock<$crate::stream::StreamInfo> = ::std::sync::OnceLock::new();
                INFO.get_or_init(|| {
                    let info = $crate::stream::StreamInfo::new(
                        $sname,
                        concat!($($doc, "\n"),*),
                        $crate::stream::Class::$class,
                        vec![$($crate::stream::field::<$ty>(stringify!($col))),+],
                        &[$(stringify!($key)),*],
                        &[$(stringify!($personal)),*],
                    );
                    $( let info = info.with_memory($crate::stream::Memory::$memory); )?
                    info
                })
            }
        }

        #[doc = concat!("One row of `", $sname, "`.")]
        #[derive(Clone, Copy, Debug, PartialEq)]
        #[allow(dead_code)]
        $vis struct $row<'a> {
            $( $(#[doc = $cdoc])* pub $col: <$ty as $crate::stream::Column>::Value<'a>, )+
        }

        #[doc = concat!("Builds `", $sname, "` batches row by row; reuse it across batches.")]
        #[derive(Debug, Default)]
        #[allow(dead_code)]
        $vis struct $builder {
            $( $col: <$ty as $crate::stream::Column>::Builder, )+
            rows: usize,
        }

        #[allow(dead_code)]
        impl $builder {
            /// Appends one row.
            #[inline]
            pub fn push(&mut self, r: &$row<'_>) {
                $( <$ty as $crate::stream::Column>::append(&mut self.$col, r.$col); )+
                self.rows += 1;
            }

            /// Rows appended since the last [`finish`](Self::finish).
            pub fn len(&self) -> usize {
                self.rows
            }

            /// True when no row is pending.
            pub fn is_empty(&self) -> bool {
                self.rows == 0
            }

            /// The pending rows as a batch; resets the builder.
            pub fn finish(&mut self) -> $crate::arrow::array::RecordBatch {
                self.rows = 0;
                let columns = vec![$( <$ty as $crate::stream::Column>::finish(&mut self.$col) ),+];
                $crate::arrow::array::RecordBatch::try_new(<$name as $crate::stream::StreamDef>::schema(), columns)
                    .expect(concat!("a ", $sname, " builder makes batches of its own schema"))
            }
        }

        impl $crate::stream::RowBuilder for $builder {
            type Stream = $name;
            fn rows(&self) -> usize {
                self.rows
            }
            fn take_batch(&mut self) -> $crate::arrow::array::RecordBatch {
                self.finish()
            }
        }

        #[doc = concat!("The columns of a `", $sname, "` batch, typed; [`new`](Self::new) checks them.")]
        #[derive(Clone, Copy, Debug)]
        #[allow(dead_code)]
        $vis struct $reader<'a> {
            $( $(#[doc = $cdoc])* pub $col: &'a <$ty as $crate::stream::Column>::Array, )+
            len: usize,
        }

        #[allow(dead_code)]
        impl<'a> $reader<'a> {
            /// Reads `batch`; fails, naming the stream and the column, when a column is missing
            /// or of another type.
            pub fn new(batch: &'a $crate::arrow::array::RecordBatch) -> $crate::Result<Self> {
                Ok(Self {
                    $( $col: $crate::stream::column::<$ty>(batch, $sname, stringify!($col))?, )+
                    len: batch.num_rows(),
                })
            }

            /// Rows in the batch.
            pub fn len(&self) -> usize {
                self.len
            }

            /// True when the batch has no rows.
            pub fn is_empty(&self) -> bool {
                self.len == 0
            }

            /// Row `i`.
            #[inline]
            pub fn row(&self, i: usize) -> $row<'a> {
                $row { $( $col: <$ty as $crate::stream::Column>::value(self.$col, i), )+ }
            }

            /// Every row, in order.
            pub fn rows(&self) -> impl Iterator<Item = $row<'a>> + '_ {
                (0..self.len).map(|i| self.row(i))
            }
        }
    };
}

/// Rows of a stream in the dataflow: a batch and its multiplicity (`+1` for events and added
/// reference rows, `-1` for removed reference rows).
#[derive(Clone, Debug)]
pub struct Batch {
    /// The rows.
    pub rows: RecordBatch,
    /// `+1` to add them, `-1` to remove them.
    pub diff: i64,
}

impl Batch {
    /// Events (or added rows).
    pub fn new(rows: RecordBatch) -> Self {
        Self { rows, diff: 1 }
    }
}

/// A timely stream of batches, untyped (what sinks and the SQL front end see).
pub type Batches<'s> = Stream<'s, Time, Vec<Batch>>;

/// Splits the output of an operator that makes several streams, each batch tagged with its
/// stream's position (`0..parts`), into one stream per position.
pub fn untag<'s>(tagged: Stream<'s, Time, Vec<(u64, Batch)>>, parts: u64) -> Vec<Batches<'s>> {
    use timely::dataflow::operators::core::Partition;
    tagged.partition::<timely::container::CapacityContainerBuilder<Vec<Batch>>, _, _>(parts, |x| x)
}

/// A timely stream of one stream's batches; see the [module documentation](crate::stream).
pub struct Events<'s, S> {
    inner: Batches<'s>,
    _def: PhantomData<fn() -> S>,
}

impl<S> Clone for Events<'_, S> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), _def: PhantomData }
    }
}

impl<'s, S: StreamDef> Events<'s, S> {
    /// Declares that `inner` carries batches of `S` (the producer's promise).
    pub fn new(inner: Batches<'s>) -> Self {
        Self { inner, _def: PhantomData }
    }

    /// The untyped stream.
    pub fn inner(&self) -> &Batches<'s> {
        &self.inner
    }

    /// The untyped stream, by value.
    pub fn into_inner(self) -> Batches<'s> {
        self.inner
    }

    /// Both streams' batches.
    pub fn concat(self, other: Events<'s, S>) -> Self {
        Self::new(self.inner.concat(other.inner))
    }

    /// The stream's definition.
    pub fn info(&self) -> &'static StreamInfo {
        S::info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::stream! {
        /// A test stream.
        pub struct Probe {
            name: "probe",
            class: Aggregate,
            keys: [id],
            personal: [who],
            row: ProbeRow,
            builder: ProbeRows,
            reader: ProbeCols,
            columns: {
                /// Id.
                id: u64,
                event_time: Timestamp,
                who: Option<Str>,
                level: f64,
            }
        }
    }

    #[test]
    fn a_definition_builds_its_schema_and_reads_its_batches() {
        let info = Probe::info();
        assert_eq!(info.name, "probe");
        assert_eq!(info.doc, "A test stream.");
        assert_eq!(info.schema.fields().len(), 4);
        assert!(info.schema.field(2).is_nullable());
        let mut b = ProbeRows::default();
        b.push(&ProbeRow { id: 1, event_time: 5, who: None, level: 0.5 });
        b.push(&ProbeRow { id: 2, event_time: 6, who: Some("x"), level: 1.5 });
        let batch = b.finish();
        assert!(b.is_empty());
        let cols = ProbeCols::new(&batch).unwrap();
        let rows: Vec<ProbeRow> = cols.rows().collect();
        assert_eq!(rows[1], ProbeRow { id: 2, event_time: 6, who: Some("x"), level: 1.5 });
        check_schema(info, &batch).unwrap();
    }

    #[test]
    fn a_reader_names_the_stream_and_column_that_do_not_match() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::UInt64, false),
            Field::new("event_time", Timestamp::data_type(), false),
            Field::new("who", DataType::Utf8, true),
            Field::new("level", DataType::Float32, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(UInt64Array::from(vec![1])),
                Arc::new(TimestampMillisecondArray::from(vec![1]).with_timezone("UTC")),
                Arc::new(StringArray::from(vec![Some("a")])),
                Arc::new(Float32Array::from(vec![1.0])),
            ],
        )
        .unwrap();
        let e = ProbeCols::new(&batch).unwrap_err().to_string();
        assert!(e.contains("stream probe: column level is Float32, expected Float64"), "{e}");
        let e = check_schema(Probe::info(), &batch).unwrap_err().to_string();
        assert!(e.contains("column 4 is level Float32, expected level Float64"), "{e}");
    }
}

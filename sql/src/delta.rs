//! [`Delta`]: a batch of changes to a rule's relation, the unit every rule operator consumes
//! and produces.
//!
//! A delta is an Arrow batch of rows plus, row for row, the row's *time* (event-time
//! milliseconds: an event's own time, a window's end, the later side of a join) and its *diff*
//! (`+1` inserted, `-1` retracted), the way differential dataflow describes a collection's
//! changes, but columnar: filters and projections stay vectorized kernels over the whole batch.
//!
//! Stateful operators partition deltas between workers by key. Timely's exchange wants
//! serializable data; within one process it moves values without serializing them, and the
//! serde implementation here (Arrow IPC) makes the type honest for a multi-process deployment.

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{filter_record_batch, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use vigil_engine::runtime::Time;

/// A batch of changes: rows, their times and their diffs.
#[derive(Clone, Debug)]
pub struct Delta {
    /// The rows.
    pub rows: RecordBatch,
    /// Event-time milliseconds of each row.
    pub times: Vec<Time>,
    /// `+1` or `-1` (or a multiplicity) for each row.
    pub diffs: Vec<i64>,
}

impl Delta {
    /// Insertions of every row of `rows` at `times`.
    pub fn inserts(rows: RecordBatch, times: Vec<Time>) -> Self {
        let diffs = vec![1; rows.num_rows()];
        Self { rows, times, diffs }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.num_rows()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.num_rows() == 0
    }

    /// Keeps the rows where `mask` is true.
    pub fn filter(&self, mask: &BooleanArray) -> Result<Self, ArrowError> {
        if mask.true_count() == mask.len() && mask.null_count() == 0 {
            return Ok(self.clone());
        }
        let rows = filter_record_batch(&self.rows, mask)?;
        // The rows kept (true and not null), walked by their set bits: one pass for both.
        let kept = match mask.nulls() {
            Some(nulls) => mask.values() & nulls.inner(),
            None => mask.values().clone(),
        };
        let (times, diffs) = kept.set_indices().map(|i| (self.times[i], self.diffs[i])).unzip();
        Ok(Self { rows, times, diffs })
    }

    /// The rows at `indices`, in that order.
    pub fn take(&self, indices: &[u32]) -> Result<Self, ArrowError> {
        let idx = UInt32Array::from(indices.to_vec());
        Ok(Self {
            rows: take_record_batch(&self.rows, &idx)?,
            times: indices.iter().map(|&i| self.times[i as usize]).collect(),
            diffs: indices.iter().map(|&i| self.diffs[i as usize]).collect(),
        })
    }

    /// Same rows under another schema with the same column types (renaming columns).
    pub fn with_schema(self, schema: SchemaRef) -> Result<Self, ArrowError> {
        let rows = RecordBatch::try_new(schema, self.rows.columns().to_vec())?;
        Ok(Self { rows, ..self })
    }

    /// Splits the rows between `peers` workers by a hash of `keys` (one array per key column),
    /// returning `(worker, delta)` pairs for the workers that get rows.
    pub fn partition(&self, keys: &[ArrayRef], peers: usize) -> Result<Vec<(u64, Delta)>, ArrowError> {
        if peers <= 1 || keys.is_empty() {
            return Ok(vec![(0, self.clone())]);
        }
        let rows = key_rows(keys)?;
        let mut per: Vec<Vec<u32>> = vec![Vec::new(); peers];
        for i in 0..rows.num_rows() {
            per[(hash_bytes(rows.row(i).as_ref()) % peers as u64) as usize].push(i as u32);
        }
        per.into_iter()
            .enumerate()
            .filter(|(_, idx)| !idx.is_empty())
            .map(|(w, idx)| Ok((w as u64, self.take(&idx)?)))
            .collect()
    }
}

/// Arrow's row format for key columns: byte-comparable, hashable keys.
pub fn key_rows(keys: &[ArrayRef]) -> Result<Rows, ArrowError> {
    let converter = RowConverter::new(keys.iter().map(|k| SortField::new(k.data_type().clone())).collect())?;
    converter.convert_columns(keys)
}

/// A hash that is the same in every worker and every run (SipHash with fixed keys), so that
/// partitioning, and therefore output order, is deterministic.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = std::hash::DefaultHasher::new();
    h.write(bytes);
    h.finish()
}

/// Wire form: the rows as an Arrow IPC stream, then times and diffs.
#[derive(Serialize, Deserialize)]
struct Wire {
    ipc: Vec<u8>,
    times: Vec<Time>,
    diffs: Vec<i64>,
}

impl Serialize for Delta {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut ipc = Vec::new();
        {
            let mut w = StreamWriter::try_new(&mut ipc, &self.rows.schema()).map_err(S::Error::custom)?;
            w.write(&self.rows).map_err(S::Error::custom)?;
            w.finish().map_err(S::Error::custom)?;
        }
        Wire { ipc, times: self.times.clone(), diffs: self.diffs.clone() }.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Delta {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = Wire::deserialize(deserializer)?;
        let mut reader =
            StreamReader::try_new(std::io::Cursor::new(wire.ipc), None).map_err(D::Error::custom)?;
        let rows = reader
            .next()
            .ok_or_else(|| D::Error::custom("a delta without its batch"))?
            .map_err(D::Error::custom)?;
        if rows.num_rows() != wire.times.len() || rows.num_rows() != wire.diffs.len() {
            return Err(D::Error::custom("a delta whose times or diffs do not match its rows"));
        }
        Ok(Delta { rows, times: wire.times, diffs: wire.diffs })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn delta() -> Delta {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Int64, false),
        ]));
        let rows = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("a"), None, Some("b"), Some("a")])),
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
            ],
        )
        .unwrap();
        Delta { rows, times: vec![10, 20, 30, 40], diffs: vec![1, -1, 1, 1] }
    }

    #[test]
    fn serde_round_trip_keeps_rows_times_and_diffs() {
        let d = delta();
        let bytes = serde_json::to_vec(&d).unwrap();
        let back: Delta = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back.rows, d.rows);
        assert_eq!(back.times, d.times);
        assert_eq!(back.diffs, d.diffs);
    }

    #[test]
    fn partition_sends_equal_keys_to_one_worker_and_loses_nothing() {
        let d = delta();
        let parts = d.partition(&[Arc::clone(d.rows.column(0))], 3).unwrap();
        let total: usize = parts.iter().map(|(_, p)| p.len()).sum();
        assert_eq!(total, 4);
        let holding_a: Vec<u64> = parts
            .iter()
            .filter(|(_, p)| {
                let k = p.rows.column(0).as_any().downcast_ref::<StringArray>().unwrap();
                (0..p.len()).any(|i| k.is_valid(i) && k.value(i) == "a")
            })
            .map(|(w, _)| *w)
            .collect();
        assert_eq!(holding_a.len(), 1, "both 'a' rows go to one worker");
        let mut times: Vec<u64> = parts.iter().flat_map(|(_, p)| p.times.clone()).collect();
        times.sort();
        assert_eq!(times, vec![10, 20, 30, 40]);
    }

    #[test]
    fn filter_keeps_times_and_diffs_in_step() {
        let d = delta();
        let f = d.filter(&BooleanArray::from(vec![Some(false), Some(true), None, Some(true)])).unwrap();
        assert_eq!(f.times, vec![20, 40]);
        assert_eq!(f.diffs, vec![-1, 1]);
        assert_eq!(f.len(), 2);
    }
}

//! What the two joins share: the binary operator that keys, exchanges and holds both inputs
//! until their time is complete ([`render_join`]), the kept rows of a side ([`Kept`]), the
//! reference rows ([`RefRows`]), and gathering matched rows into columns.
//!
//! Retractions are applied on both sides: a row with a negative diff is paired with what it
//! meets like any row (retracting the output it once produced), and removes from the kept
//! rows the row it retracts, so nothing it retracted is matched again.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, new_null_array};
use datafusion::arrow::compute::{cast, interleave};
use datafusion::arrow::datatypes::{Field, SchemaRef};
use datafusion::arrow::row::OwnedRow;
use datafusion::common::HashMap;
use datafusion::common::hash_map::Entry;
use timely::dataflow::operators::generic::Operator;
use vigil_engine::runtime::Time;

use super::map::apply_steps;
use super::{
    ByTime, CB, Deltas, RenderContext, by_worker, eval, frontier_time, interval_join, key_by, stream_ref_join,
};
use crate::delta::{Delta, key_rows};
use crate::plan::{JoinNode, JoinShape, PhysExpr, Step};

/// Rows kept by one side of a join.
#[derive(Default)]
pub(crate) struct Kept {
    pub(crate) batches: BTreeMap<u64, KeptBatch>,
    /// key → (batch, row); entries of dropped batches are skipped, and swept once they
    /// outnumber the live rows (so memory and probes stay proportional to what is kept).
    index: HashMap<OwnedRow, Vec<(u64, u32)>>,
    next: u64,
    /// Entries in `index`, and rows of the kept batches that are indexed.
    indexed: usize,
    live: usize,
}

/// A kept batch: rows, their times, when it expires, and how many of its rows are indexed.
pub(crate) struct KeptBatch {
    pub(crate) rows: RecordBatch,
    pub(crate) times: Vec<Time>,
    expiry: i64,
    indexed: usize,
}

impl Kept {
    /// Keeps the rows of `d` (keyed by `keys`) until `expiry`; returns the batch's id. A row
    /// with a negative diff retracts a kept row equal to it (the one it once inserted), so a
    /// retraction reaching a join removes what it retracts from the join's state.
    pub(crate) fn insert(
        &mut self,
        d: &Delta,
        keys: &datafusion::arrow::row::Rows,
        expiry: i64,
    ) -> Result<u64, String> {
        let id = self.next;
        self.next += 1;
        let mut indexed = 0;
        let full = if d.diffs.iter().any(|&x| x < 0) { Some(full_rows(&d.rows)?) } else { None };
        let mut kept_full: HashMap<u64, datafusion::arrow::row::Rows> = HashMap::new();
        for i in 0..d.len() {
            if d.diffs[i] > 0 {
                self.index.entry(keys.row(i).owned()).or_default().push((id, i as u32));
                indexed += 1;
            } else if let Some(full) = &full {
                self.retract(&keys.row(i).owned(), full.row(i), &mut kept_full)?;
            }
        }
        self.indexed += indexed;
        self.live += indexed;
        self.batches.insert(id, KeptBatch { rows: d.rows.clone(), times: d.times.clone(), expiry, indexed });
        Ok(id)
    }

    /// Removes one kept row equal to `row` (of key `key`) from the index.
    fn retract(
        &mut self,
        key: &OwnedRow,
        row: datafusion::arrow::row::Row<'_>,
        full: &mut HashMap<u64, datafusion::arrow::row::Rows>,
    ) -> Result<(), String> {
        let Some(entries) = self.index.get_mut(key) else { return Ok(()) };
        for j in 0..entries.len() {
            let (b, r) = entries[j];
            let Some(batch) = self.batches.get_mut(&b) else { continue };
            let rows = match full.entry(b) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(full_rows(&batch.rows)?),
            };
            if rows.row(r as usize) == row {
                entries.swap_remove(j);
                batch.indexed -= 1;
                self.indexed -= 1;
                self.live -= 1;
                return Ok(());
            }
        }
        Ok(())
    }

    pub(crate) fn expire(&mut self, frontier: Option<Time>) {
        let f = frontier.map_or(i64::MAX, |f| f as i64);
        let live = &mut self.live;
        self.batches.retain(|_, b| {
            let keep = b.expiry >= f;
            if !keep {
                *live -= b.indexed;
            }
            keep
        });
        if self.indexed > 2 * self.live + 1024 {
            let batches = &self.batches;
            self.index.retain(|_, v| {
                v.retain(|(b, _)| batches.contains_key(b));
                !v.is_empty()
            });
            self.indexed = self.live;
        }
    }

    pub(crate) fn matches(&self, key: &OwnedRow) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.index.get(key).into_iter().flatten().copied().filter(|(b, _)| self.batches.contains_key(b))
    }
}

/// Reference rows: kept whole, with multiplicities.
#[derive(Default)]
pub(crate) struct RefRows {
    pub(crate) batches: Vec<RecordBatch>,
    /// key → (batch, row, full row) for every present row.
    pub(crate) index: HashMap<OwnedRow, Vec<(usize, u32, OwnedRow)>>,
}

impl RefRows {
    /// Rows held (present or removed, until compacted).
    pub(crate) fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// Gathers the present rows into one batch once most held rows are removed ones, so a table
    /// changed for months holds its rows, not its history.
    pub(crate) fn compact(&mut self) -> Result<(), String> {
        let live: usize = self.index.values().map(Vec::len).sum();
        let held: usize = self.batches.iter().map(RecordBatch::num_rows).sum();
        if held <= 2 * live + 1024 {
            return Ok(());
        }
        let Some(schema) = self.batches.first().map(RecordBatch::schema) else { return Ok(()) };
        // One pass fixes the order: the map is not changed between the two.
        let order: Vec<(usize, u32)> = self.index.values().flatten().map(|(b, r, _)| (*b, *r)).collect();
        let cols = gather(&self.batches, &schema, order.into_iter())?;
        let batch = RecordBatch::try_new(schema, cols).map_err(|e| e.to_string())?;
        for (next, entry) in self.index.values_mut().flatten().enumerate() {
            (entry.0, entry.1) = (0, next as u32);
        }
        self.batches = vec![batch];
        Ok(())
    }
}

pub(crate) struct Pairs {
    /// (left source, row, right source, row, time, diff); source `usize::MAX` is a null row.
    pub(crate) rows: Vec<(usize, u32, usize, u32, Time, i64)>,
}

/// Renders a join of `left` and `right` (keyed and exchanged; each complete time applied once).
pub fn render_join<'s>(j: &JoinNode, left: Deltas<'s>, right: Deltas<'s>, cx: &RenderContext) -> Deltas<'s> {
    let err = Rc::clone(&cx.on_error);
    let left = key_by(left, j.left_keys.clone(), cx);
    let right = key_by(right, j.right_keys.clone(), cx);
    let (lkeys, rkeys) = (j.left_keys.clone(), j.right_keys.clone());
    let (lschema, rschema) = (j.left.schema(), j.right.schema());
    let schema = Arc::clone(&j.schema);
    let filter = j.filter.clone();
    let kind = j.kind;
    let null_aware = j.null_aware;
    let shape = j.shape.clone();
    let retention = cx.retention_ms as i64;
    let mut held = cx.state.share();
    left.binary_frontier::<_, CB<Delta>, _, _, _, _>(
        right,
        by_worker(),
        by_worker(),
        &cx.name(match j.shape {
            JoinShape::StreamReference { .. } => "StreamReferenceJoin",
            JoinShape::Interval { .. } => "IntervalJoin",
        }),
        move |_cap, _info| {
            // A time's left and right deltas, applied once complete.
            let mut stash: ByTime<(Vec<Delta>, Vec<Delta>)> = ByTime::default();
            let mut lkept = Kept::default();
            let mut rkept = Kept::default();
            let mut refs = RefRows::default();
            move |(in1, f1), (in2, f2), output| {
                in1.for_each(|cap, data| {
                    let Some(cap) = cap.retain_least(0) else { return };
                    stash.at(&cap).0.extend(data.drain(..).map(|(_, d)| d));
                });
                in2.for_each(|cap, data| {
                    let Some(cap) = cap.retain_least(0) else { return };
                    stash.at(&cap).1.extend(data.drain(..).map(|(_, d)| d));
                });
                let f = match (frontier_time(f1), frontier_time(f2)) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                while let Some((t, cap, (ls, rs))) = stash.next_ready(f) {
                    let result = match &shape {
                        JoinShape::StreamReference { stream_left } => {
                            let (streams, refs_in, skeys, fkeys) = if *stream_left {
                                (ls, rs, &lkeys, &rkeys)
                            } else {
                                (rs, ls, &rkeys, &lkeys)
                            };
                            let kept = if *stream_left { &mut lkept } else { &mut rkept };
                            stream_ref_join::step(
                                t,
                                streams,
                                refs_in,
                                skeys,
                                fkeys,
                                *stream_left,
                                kind,
                                null_aware,
                                retention,
                                kept,
                                &mut refs,
                                &lschema,
                                &rschema,
                                &schema,
                            )
                        }
                        JoinShape::Interval { left_time, right_time, lo, hi } => interval_join::step(
                            ls, rs, &lkeys, &rkeys, left_time, right_time, *lo, *hi, &mut lkept, &mut rkept,
                            &schema,
                        ),
                    };
                    match result.and_then(|d| match (&filter, d) {
                        (Some(p), Some(d)) => apply_steps(&[Step::Filter(Arc::clone(p))], d),
                        (_, d) => Ok(d),
                    }) {
                        Ok(Some(d)) => output.session(&cap).give(d),
                        Ok(None) => {}
                        Err(e) => err(format!("join: {e}")),
                    }
                    lkept.expire(Some(t));
                    rkept.expire(Some(t));
                    if let Err(e) = refs.compact() {
                        err(format!("join: {e}"));
                    }
                }
                lkept.expire(f);
                rkept.expire(f);
                let pending = stash.held(|(ls, rs)| ls.iter().chain(rs).map(Delta::len).sum());
                held.set(lkept.live + rkept.live + refs.rows() + pending);
            }
        },
    )
}

/// Key rows of a batch, and for each row whether a key is null (null keys never match).
pub(crate) fn eval_keys(
    keys: &[PhysExpr],
    batch: &RecordBatch,
) -> Result<(datafusion::arrow::row::Rows, Vec<bool>), String> {
    let cols = keys.iter().map(|k| eval(k, batch)).collect::<Result<Vec<_>, _>>()?;
    let nulls = (0..batch.num_rows()).map(|i| cols.iter().any(|c| c.is_null(i))).collect();
    Ok((key_rows(&cols).map_err(|e| e.to_string())?, nulls))
}

pub(crate) fn full_rows(batch: &RecordBatch) -> Result<datafusion::arrow::row::Rows, String> {
    key_rows(batch.columns()).map_err(|e| e.to_string())
}

/// Gathers rows `(source batch, row)` into columns of `schema`; source `usize::MAX` is a row
/// of nulls.
pub(crate) fn gather(
    batches: &[RecordBatch],
    schema: &SchemaRef,
    idx: impl Iterator<Item = (usize, u32)>,
) -> Result<Vec<ArrayRef>, String> {
    let nulls = RecordBatch::try_new(
        Arc::new(datafusion::arrow::datatypes::Schema::new(
            schema
                .fields()
                .iter()
                .map(|f| Field::new(f.name(), f.data_type().clone(), true))
                .collect::<Vec<_>>(),
        )),
        schema.fields().iter().map(|f| new_null_array(f.data_type(), 1)).collect(),
    )
    .map_err(|e| e.to_string())?;
    let null_src = batches.len();
    let idx: Vec<(usize, usize)> =
        idx.map(|(b, r)| if b == usize::MAX { (null_src, 0) } else { (b, r as usize) }).collect();
    (0..schema.fields().len())
        .map(|c| {
            let mut arrays: Vec<ArrayRef> = batches
                .iter()
                .map(|b| {
                    let col = b.column(c);
                    if col.data_type() == schema.field(c).data_type() {
                        Ok(Arc::clone(col))
                    } else {
                        cast(col, schema.field(c).data_type()).map_err(|e| e.to_string())
                    }
                })
                .collect::<Result<_, _>>()?;
            arrays.push(Arc::clone(nulls.column(c)));
            let refs: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
            interleave(&refs, &idx).map_err(|e| e.to_string())
        })
        .collect()
}

pub(crate) fn gather_any(
    batches: &[RecordBatch],
    idx: impl Iterator<Item = (usize, u32)>,
) -> Result<Vec<ArrayRef>, String> {
    let schema = batches.first().map(|b| b.schema()).ok_or("no rows to gather")?;
    gather(batches, &schema, idx)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;
    use datafusion::arrow::datatypes::DataType;

    #[test]
    fn kept_join_rows_with_few_keys_do_not_pile_up_in_the_index() {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let mut kept = Kept::default();
        for t in 0..10_000u64 {
            // Ten rows per time, all with one of two keys: few keys, many rows over time.
            let keys: ArrayRef = Arc::new(Int64Array::from_iter_values((0..10).map(|i| i % 2)));
            let rows = RecordBatch::try_new(Arc::clone(&schema), vec![Arc::clone(&keys)]).unwrap();
            let d = Delta::inserts(rows, vec![t; 10]);
            kept.insert(&d, &key_rows(&[keys]).unwrap(), t as i64 + 100).unwrap();
            kept.expire(Some(t));
        }
        // About 100 times' worth of rows are live; the index holds at most a bounded multiple.
        assert!(kept.live <= 1_010, "{}", kept.live);
        let entries: usize = kept.index.values().map(Vec::len).sum();
        assert!(entries <= 2 * kept.live + 1024 + 10, "{entries} index entries for {} live rows", kept.live);
        let key = key_rows(&[Arc::new(Int64Array::from(vec![0])) as ArrayRef]).unwrap().row(0).owned();
        assert_eq!(kept.matches(&key).count(), kept.live / 2);
    }
}

#[cfg(test)]
mod reference_history {
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn a_table_changed_many_times_holds_its_rows_not_its_history() {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let mut refs = RefRows::default();
        for i in 0..5_000i64 {
            // Add row i; the table keeps the last ten.
            let rows = RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(Int64Array::from(vec![i])) as ArrayRef],
            )
            .unwrap();
            let full = full_rows(&rows).unwrap();
            let pos = refs.batches.len();
            refs.batches.push(rows);
            refs.index.entry(full.row(0).owned()).or_default().push((pos, 0, full.row(0).owned()));
            if i >= 10 {
                let old = key_rows(&[Arc::new(Int64Array::from(vec![i - 10])) as ArrayRef]).unwrap();
                refs.index.remove(&old.row(0).owned());
            }
            refs.compact().unwrap();
        }
        let held: usize = refs.batches.iter().map(RecordBatch::num_rows).sum();
        assert!(held <= 2 * 10 + 1024 + 1, "{held} rows held for 10 present");
        // Every present row still reads back as itself.
        for v in refs.index.values() {
            for (b, r, full) in v {
                let again = full_rows(&refs.batches[*b].slice(*r as usize, 1)).unwrap();
                assert_eq!(again.row(0), full.row());
            }
        }
    }
}

#[cfg(test)]
mod retractions {
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn a_retraction_removes_the_kept_row_it_retracts() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let batch = |k: Vec<i64>, v: Vec<i64>| {
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(Int64Array::from(k)), Arc::new(Int64Array::from(v))],
            )
            .unwrap()
        };
        let mut kept = Kept::default();
        let insert = |kept: &mut Kept, rows: RecordBatch, diffs: Vec<i64>| {
            let keys = key_rows(&[Arc::clone(rows.column(0))]).unwrap();
            let n = rows.num_rows();
            kept.insert(&Delta { rows, times: vec![1; n], diffs }, &keys, 100).unwrap();
        };
        insert(&mut kept, batch(vec![1, 1, 2], vec![10, 11, 20]), vec![1, 1, 1]);
        // Retract (1, 11): key 1 keeps only (1, 10); retracting a row never kept changes nothing.
        insert(&mut kept, batch(vec![1, 2], vec![11, 99]), vec![-1, -1]);
        let key =
            |k: i64| key_rows(&[Arc::new(Int64Array::from(vec![k])) as ArrayRef]).unwrap().row(0).owned();
        let left: Vec<(u64, u32)> = kept.matches(&key(1)).collect();
        assert_eq!(left.len(), 1);
        let (b, r) = left[0];
        let v =
            kept.batches[&b].rows.column(1).as_any().downcast_ref::<Int64Array>().unwrap().value(r as usize);
        assert_eq!(v, 10);
        assert_eq!(kept.matches(&key(2)).count(), 1);
        assert_eq!(kept.live, 2);
    }
}

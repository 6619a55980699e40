//! The interval join: two streams whose ON bounds their times
//! (`b.event_time BETWEEN a.event_time AND a.event_time + INTERVAL '5 minutes'`). Each side's
//! rows are kept only as long as rows of the other side can still meet them, so the state is
//! bounded by the interval.

use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, TimestampMillisecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::common::HashMap;
use vigil_engine::runtime::Time;

use super::join::{Kept, KeptBatch, eval_keys, gather_any};
use super::{conform_columns, eval};
use crate::delta::Delta;
use crate::plan::PhysExpr;

/// One complete time of an interval join: left rows meet the kept right rows, then right rows
/// meet every kept left row (this time's included), so each pair is produced exactly once.
#[allow(clippy::too_many_arguments)]
pub(crate) fn step(
    ls: Vec<Delta>,
    rs: Vec<Delta>,
    lkeys: &[PhysExpr],
    rkeys: &[PhysExpr],
    left_time: &PhysExpr,
    right_time: &PhysExpr,
    lo: i64,
    hi: i64,
    lkept: &mut Kept,
    rkept: &mut Kept,
    schema: &SchemaRef,
) -> Result<Option<Delta>, String> {
    let mut lb: Vec<RecordBatch> = Vec::new();
    let mut rb: Vec<RecordBatch> = Vec::new();
    let mut lpos: HashMap<u64, usize> = HashMap::new();
    let mut rpos: HashMap<u64, usize> = HashMap::new();
    let mut pairs: Vec<(usize, u32, usize, u32, Time, i64)> = Vec::new();
    let max_time = |e: &PhysExpr, d: &Delta| -> Result<i64, String> {
        let a = cast(&eval(e, &d.rows)?, &DataType::Timestamp(TimeUnit::Millisecond, None))
            .map_err(|e| e.to_string())?;
        let a = a.as_any().downcast_ref::<TimestampMillisecondArray>().ok_or("join time")?.clone();
        Ok(a.iter().flatten().max().unwrap_or(i64::MIN))
    };
    // Left rows first: they meet the right rows kept so far, then are kept. Right rows then
    // meet every kept left row (including this time's): each pair is produced exactly once.
    for d in &ls {
        let (keys, nulls) = eval_keys(lkeys, &d.rows)?;
        let pos = lb.len();
        lb.push(d.rows.clone());
        for (i, &null) in nulls.iter().enumerate() {
            if null {
                continue;
            }
            for (b, r) in rkept.matches(&keys.row(i).owned()) {
                let KeptBatch { rows: batch, times, .. } = &rkept.batches[&b];
                let p = *rpos.entry(b).or_insert_with(|| {
                    rb.push(batch.clone());
                    rb.len() - 1
                });
                pairs.push((pos, i as u32, p, r, d.times[i].max(times[r as usize]), d.diffs[i]));
            }
        }
        // A left row can meet right rows up to `hi` after it.
        let expiry = max_time(left_time, d)?.saturating_add(hi);
        let id = lkept.insert(d, &keys, expiry)?;
        lpos.insert(id, pos);
    }
    for d in &rs {
        let (keys, nulls) = eval_keys(rkeys, &d.rows)?;
        let pos = rb.len();
        rb.push(d.rows.clone());
        for (i, &null) in nulls.iter().enumerate() {
            if null {
                continue;
            }
            for (b, r) in lkept.matches(&keys.row(i).owned()) {
                let KeptBatch { rows: batch, times, .. } = &lkept.batches[&b];
                let p = *lpos.entry(b).or_insert_with(|| {
                    lb.push(batch.clone());
                    lb.len() - 1
                });
                pairs.push((p, r, pos, i as u32, d.times[i].max(times[r as usize]), d.diffs[i]));
            }
        }
        // A right row can meet left rows down to `lo` before it.
        let expiry = max_time(right_time, d)?.saturating_sub(lo);
        rkept.insert(d, &keys, expiry)?;
    }
    if pairs.is_empty() {
        return Ok(None);
    }
    let lcols = gather_any(&lb, pairs.iter().map(|p| (p.0, p.1)))?;
    let rcols = gather_any(&rb, pairs.iter().map(|p| (p.2, p.3)))?;
    let cols = conform_columns([lcols, rcols].concat(), schema)?;
    let rows = RecordBatch::try_new(Arc::clone(schema), cols).map_err(|e| e.to_string())?;
    Ok(Some(Delta {
        rows,
        times: pairs.iter().map(|p| p.4).collect(),
        diffs: pairs.iter().map(|p| p.5).collect(),
    }))
}

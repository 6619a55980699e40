//! The stream–reference join: stream rows (kept for the rule's retention) with the current rows
//! of a reference table, incremental on both sides. A stream row matches the table as it is when
//! the row arrives; a table change matches the kept stream rows retroactively (a watchlist
//! entry added later meets the reads still retained). Inner, left/right keeping the stream's
//! rows, semi (`IN`, `EXISTS`) and anti (`NOT IN`, `NOT EXISTS`) joins.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::OwnedRow;
use datafusion::common::HashMap;
use vigil_engine::runtime::Time;

use super::conform_columns;
use super::join::{Kept, KeptBatch, Pairs, RefRows, eval_keys, full_rows, gather};
use crate::delta::Delta;
use crate::plan::PhysExpr;

/// One complete time `t` of a stream–reference join: reference changes first, then stream rows.
#[allow(clippy::too_many_arguments)]
pub(crate) fn step(
    t: Time,
    streams: Vec<Delta>,
    refs_in: Vec<Delta>,
    skeys: &[PhysExpr],
    fkeys: &[PhysExpr],
    stream_left: bool,
    kind: datafusion::common::JoinType,
    null_aware: bool,
    retention: i64,
    kept: &mut Kept,
    refs: &mut RefRows,
    lschema: &SchemaRef,
    rschema: &SchemaRef,
    schema: &SchemaRef,
) -> Result<Option<Delta>, String> {
    use datafusion::common::JoinType as J;
    let mut stream_batches: Vec<RecordBatch> = Vec::new();
    let mut pairs = Pairs { rows: Vec::new() };
    // Stream rows kept from earlier times, addressed by (batch id) → position in `stream_batches`.
    let mut kept_pos: HashMap<u64, usize> = HashMap::new();
    let t_i = t as i64;
    // 1. Reference changes at t: match the kept stream rows (retroactively).
    for d in &refs_in {
        let (keys, nulls) = eval_keys(fkeys, &d.rows)?;
        let full = full_rows(&d.rows)?;
        let rpos = refs.batches.len();
        refs.batches.push(d.rows.clone());
        for (i, &null) in nulls.iter().enumerate() {
            if null {
                continue;
            }
            let key = keys.row(i).owned();
            let before = refs.index.get(&key).map_or(0, Vec::len);
            let diff = d.diffs[i].signum();
            // Update the reference index first (so a removal finds its row).
            let (rsrc, ridx) = if diff > 0 {
                refs.index.entry(key.clone()).or_default().push((rpos, i as u32, full.row(i).owned()));
                (rpos, i as u32)
            } else {
                let Some(v) = refs.index.get_mut(&key) else { continue };
                let Some(at) = v.iter().position(|(_, _, r)| r.row() == full.row(i)) else { continue };
                let (b, r, _) = v.remove(at);
                if v.is_empty() {
                    refs.index.remove(&key);
                }
                (b, r)
            };
            let after = refs.index.get(&key).map_or(0, Vec::len);
            let matched: Vec<(u64, u32)> = kept.matches(&key).collect();
            for (b, r) in matched {
                let KeptBatch { rows: batch, times, .. } = &kept.batches[&b];
                let st = times[r as usize];
                if st as i64 + retention < t_i {
                    continue;
                }
                let pos = *kept_pos.entry(b).or_insert_with(|| {
                    stream_batches.push(batch.clone());
                    stream_batches.len() - 1
                });
                match kind {
                    J::Inner => pairs.rows.push((pos, r, rsrc, ridx, st, diff)),
                    J::Left | J::Right => {
                        if before == 0 && after > 0 {
                            pairs.rows.push((pos, r, usize::MAX, 0, st, -1));
                        }
                        pairs.rows.push((pos, r, rsrc, ridx, st, diff));
                        if after == 0 && before > 0 {
                            pairs.rows.push((pos, r, usize::MAX, 0, st, 1));
                        }
                    }
                    J::LeftSemi => {
                        if before == 0 && after > 0 {
                            pairs.rows.push((pos, r, usize::MAX, 0, st, 1));
                        } else if after == 0 && before > 0 {
                            pairs.rows.push((pos, r, usize::MAX, 0, st, -1));
                        }
                    }
                    J::LeftAnti => {
                        if before == 0 && after > 0 {
                            pairs.rows.push((pos, r, usize::MAX, 0, st, -1));
                        } else if after == 0 && before > 0 {
                            pairs.rows.push((pos, r, usize::MAX, 0, st, 1));
                        }
                    }
                    _ => return Err(format!("{kind} join")),
                }
            }
        }
    }
    // 2. Stream rows at t: match the reference rows as they are now, and keep the rows.
    for d in &streams {
        let (keys, nulls) = eval_keys(skeys, &d.rows)?;
        let pos = stream_batches.len();
        stream_batches.push(d.rows.clone());
        let expiry = d.times.iter().copied().max().unwrap_or(t) as i64 + retention;
        for (i, &null) in nulls.iter().enumerate() {
            let st = d.times[i];
            let diff = d.diffs[i];
            let found: &[(usize, u32, OwnedRow)] =
                if null { &[] } else { refs.index.get(&keys.row(i).owned()).map_or(&[], Vec::as_slice) };
            match kind {
                J::Inner => {
                    found.iter().for_each(|(b, r, _)| pairs.rows.push((pos, i as u32, *b, *r, st, diff)))
                }
                J::Left | J::Right => {
                    if found.is_empty() {
                        pairs.rows.push((pos, i as u32, usize::MAX, 0, st, diff));
                    }
                    found.iter().for_each(|(b, r, _)| pairs.rows.push((pos, i as u32, *b, *r, st, diff)));
                }
                J::LeftSemi if !found.is_empty() => pairs.rows.push((pos, i as u32, usize::MAX, 0, st, diff)),
                J::LeftAnti if found.is_empty() && !(null && null_aware) => {
                    pairs.rows.push((pos, i as u32, usize::MAX, 0, st, diff))
                }
                _ => {}
            }
        }
        kept.insert(d, &keys, expiry)?;
    }
    if pairs.rows.is_empty() {
        return Ok(None);
    }
    let (sschema, fschema) = if stream_left { (lschema, rschema) } else { (rschema, lschema) };
    let semi = matches!(kind, J::LeftSemi | J::LeftAnti);
    let stream_cols = gather(&stream_batches, sschema, pairs.rows.iter().map(|p| (p.0, p.1)))?;
    let cols = if semi {
        stream_cols
    } else {
        let ref_cols = gather(&refs.batches, fschema, pairs.rows.iter().map(|p| (p.2, p.3)))?;
        if stream_left { [stream_cols, ref_cols].concat() } else { [ref_cols, stream_cols].concat() }
    };
    let cols = conform_columns(cols, schema)?;
    let rows = RecordBatch::try_new(Arc::clone(schema), cols).map_err(|e| e.to_string())?;
    Ok(Some(Delta {
        rows,
        times: pairs.rows.iter().map(|p| p.4).collect(),
        diffs: pairs.rows.iter().map(|p| p.5).collect(),
    }))
}

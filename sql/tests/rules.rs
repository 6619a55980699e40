//! Rules run on a real timely dataflow (the engine's runtime), fed by hand: what the
//! DuckDB corpus cannot show (timing, retractions, retention, runtime errors, compile errors).

use std::sync::Arc;

use arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use vigil_engine::ids::Epoch;
use vigil_engine::runtime::{Input, Runtime, RuntimeConfig, Time};
use vigil_engine::stream::{Batch, StreamDef};
use vigil_operators::detection::EventId;
use vigil_operators::plate::{PlateRead, PlateReadRows, PlateReads};
use vigil_operators::watchlist::Watchlist;
use vigil_sql::capture::{self, Errors, Outputs};
use vigil_sql::delta::Delta;
use vigil_sql::rule::{Rule, compile};

mod common;

/// Drives a runtime by hand.
struct Feed {
    rt: Runtime,
}

impl Feed {
    fn reads(&self, worker: usize, reads: &[(u32, i64, &str)]) {
        let mut b = PlateReadRows::default();
        for (i, (camera, t, plate)) in reads.iter().enumerate() {
            let id = EventId::pack(Epoch::default(), *camera, *t as u64, i as u32).unwrap().0;
            b.push(&PlateRead::text(*camera, *t, id, plate, Some(plate), 0.9));
        }
        let t = reads.iter().map(|r| r.1).min().unwrap() as Time;
        self.rt.send(worker, t, Input { stream: PlateReads::info(), batch: Batch::new(b.finish()) }).unwrap();
    }

    fn watch(&self, plate: &str, diff: i64) {
        let batch = vigil_operators::watchlist::to_batch(&[vigil_operators::watchlist::WatchEntry {
            plate: plate.into(),
            reason: "warrant".into(),
            legal_basis: "warrant 7/2026".into(),
            authority: "TPI Rabat".into(),
            added_by: "test".into(),
            valid_from: 0,
            expires_at: i64::MAX,
        }]);
        let t = self.rt.watermark();
        self.rt.send(0, t, Input { stream: Watchlist::info(), batch: Batch { rows: batch, diff } }).unwrap();
    }

    fn advance(&mut self, t: Time) {
        self.rt.advance(t).unwrap();
    }
}

/// Each rule's deltas with their emission times, and the errors reported.
type Ran = (Vec<Vec<(Time, Delta)>>, Vec<(String, String)>);

/// Runs `rules` on `workers` workers; `feed` drives the input. Returns each rule's deltas with
/// the times they were emitted at, and the errors.
fn run(rules: Vec<Rule>, workers: usize, feed: impl FnOnce(&mut Feed)) -> Ran {
    let rules = Arc::new(rules);
    let out: Outputs = capture::outputs(rules.len());
    let errors: Errors = Arc::default();
    let rt = {
        let (rules, out, errors) = (Arc::clone(&rules), Arc::clone(&out), Arc::clone(&errors));
        let inputs = common::streams().all().collect();
        Runtime::start(RuntimeConfig::new(workers, inputs), 0, move |graph| {
            let probe = ProbeHandle::new();
            capture::capture(&rules, graph, &out, &errors, &probe);
            probe
        })
        .unwrap()
    };
    let mut f = Feed { rt };
    feed(&mut f);
    f.rt.finish().unwrap();
    let out = std::mem::take(&mut *out.lock().unwrap());
    let errors = std::mem::take(&mut *errors.lock().unwrap());
    (out, errors)
}

fn rule(sql: &str) -> Rule {
    compile("r", sql, "r.sql", &common::streams()).unwrap_or_else(|e| panic!("{e}")).remove(0)
}

fn final_rows(rule: &Rule, deltas: &[(Time, Delta)]) -> RecordBatch {
    let d: Vec<Delta> = deltas.iter().map(|(_, d)| d.clone()).collect();
    capture::consolidate(&rule.schema, &d).unwrap()
}

fn strings(batch: &RecordBatch, col: usize) -> Vec<String> {
    let c = batch.column(col).as_any().downcast_ref::<StringArray>().unwrap();
    (0..c.len()).map(|i| if c.is_null(i) { "NULL".into() } else { c.value(i).to_owned() }).collect()
}

#[test]
fn a_watchlist_entry_added_later_matches_reads_still_retained_and_no_older() {
    let r = rule(
        "CREATE RULE hits WITH (retention = '10 s') AS \
         SELECT r.plate_raw, w.legal_basis FROM plate_reads r JOIN watchlist w ON r.plate = w.plate",
    );
    let (out, errors) = run(vec![r.clone()], 2, |f| {
        f.reads(0, &[(1, 1_000, "OLD-1")]);
        f.reads(1, &[(2, 15_000, "NEW-2")]);
        f.advance(20_000);
        // Added at 20 s: NEW-2 (read at 15 s) is within the 10 s retention, OLD-1 (at 1 s) is not.
        f.watch("NEW-2", 1);
        f.watch("OLD-1", 1);
        f.reads(0, &[(1, 21_000, "OLD-1")]);
        f.advance(30_000);
    });
    assert!(errors.is_empty(), "{errors:?}");
    let rows = final_rows(&r, &out[0]);
    let mut got = strings(&rows, 0);
    got.sort();
    assert_eq!(got, vec!["NEW-2", "OLD-1"], "NEW-2 retroactively, OLD-1 only for its read at 21 s");
    // The retroactive match was emitted when the entry arrived, not at the read's time.
    let at: Vec<Time> = out[0]
        .iter()
        .filter(|(_, d)| strings(&d.rows, 0).contains(&"NEW-2".into()))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(at, vec![20_000]);
}

#[test]
fn a_left_join_retracts_its_unmatched_row_when_a_match_arrives_and_restores_it_on_removal() {
    let r =
        rule("SELECT r.plate, w.legal_basis FROM plate_reads r LEFT JOIN watchlist w ON r.plate = w.plate");
    let (out, _) = run(vec![r.clone()], 1, |f| {
        f.reads(0, &[(1, 1_000, "A-1"), (1, 1_000, "B-2")]);
        f.advance(5_000);
        f.watch("A-1", 1);
        f.advance(6_000);
    });
    let rows = final_rows(&r, &out[0]);
    let pairs: Vec<(String, String)> = strings(&rows, 0).into_iter().zip(strings(&rows, 1)).collect();
    assert_eq!(pairs, vec![("A-1".into(), "warrant 7/2026".into()), ("B-2".into(), "NULL".into())]);
    let diffs: Vec<i64> = out[0].iter().flat_map(|(_, d)| d.diffs.clone()).collect();
    assert!(diffs.contains(&-1), "the NULL-padded A-1 row was retracted: {diffs:?}");

    let (out, _) = run(vec![r.clone()], 1, |f| {
        f.watch("A-1", 1);
        f.reads(0, &[(1, 1_000, "A-1")]);
        f.advance(5_000);
        f.watch("A-1", -1);
        f.advance(6_000);
    });
    let rows = final_rows(&r, &out[0]);
    assert_eq!(strings(&rows, 1), vec!["NULL"], "removing the entry brings back the unmatched row");
}

#[test]
fn a_window_is_emitted_once_when_the_watermark_passes_its_end() {
    let r = rule(
        "SELECT plate, window_end, count(*) AS n FROM plate_reads GROUP BY tumble(event_time, INTERVAL '10 seconds'), plate",
    );
    let (out, _) = run(vec![r.clone()], 2, |f| {
        f.reads(0, &[(1, 1_000, "A-1"), (1, 2_000, "A-1")]);
        f.reads(1, &[(2, 9_999, "A-1"), (2, 10_000, "A-1")]);
        f.advance(9_999);
        f.advance(10_000);
        f.advance(25_000);
    });
    let emitted: Vec<(Time, i64)> = out[0]
        .iter()
        .flat_map(|(t, d)| {
            let n = d.rows.column(2).as_any().downcast_ref::<Int64Array>().unwrap().clone();
            (0..d.len()).map(move |i| (*t, n.value(i))).collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(emitted, vec![(10_000, 3), (20_000, 1)], "one row per window, at its end");
}

#[test]
fn emit_updates_retracts_the_previous_value_and_ends_at_the_final_one() {
    let updates = rule(
        "CREATE RULE u WITH (emit = 'updates') AS SELECT plate, count(*) AS n FROM plate_reads \
         GROUP BY tumble(event_time, INTERVAL '10 seconds'), plate",
    );
    let (out, _) = run(vec![updates.clone()], 1, |f| {
        f.reads(0, &[(1, 1_000, "A-1")]);
        f.advance(2_000);
        f.reads(0, &[(1, 3_000, "A-1")]);
        f.advance(4_000);
        f.advance(11_000);
    });
    let changes: Vec<(i64, i64)> = out[0]
        .iter()
        .flat_map(|(_, d)| {
            let n = d.rows.column(1).as_any().downcast_ref::<Int64Array>().unwrap().clone();
            (0..d.len()).map(move |i| (n.value(i), d.diffs[i])).collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(changes, vec![(1, 1), (1, -1), (2, 1)], "a running count with its retraction");
    let rows = final_rows(&updates, &out[0]);
    assert_eq!(rows.num_rows(), 1);
}

#[test]
fn a_runtime_error_in_one_rule_leaves_the_other_rules_running() {
    let failing = rule("SELECT CAST(plate_raw AS INT) AS n FROM plate_reads");
    let fine = rule("SELECT plate FROM plate_reads");
    let (out, errors) = run(vec![failing, fine.clone()], 1, |f| {
        f.reads(0, &[(1, 1_000, "A-1")]);
        f.reads(0, &[(1, 2_000, "B-2")]);
        f.advance(3_000);
    });
    assert!(!errors.is_empty() && errors.iter().all(|(r, _)| r == "r"), "{errors:?}");
    assert_eq!(final_rows(&fine, &out[1]).num_rows(), 2, "the other rule saw every read");
}

#[test]
fn explain_shows_the_dataflow_plan() {
    let r = rule(
        "SELECT z.name, count(*) FROM detections d JOIN zones z ON d.zone_id = z.zone_id \
         GROUP BY hop(d.event_time, INTERVAL '1 second', INTERVAL '5 minutes'), z.name",
    );
    let plan = r.explain();
    for part in [
        "WindowAggregate: window=Hop { slide: 1000, size: 300000 }",
        "Join: Inner",
        "Source: stream=detections",
        "Reference: table=zones",
    ] {
        assert!(plan.contains(part), "{part} missing from:\n{plan}");
    }
}

#[test]
fn rows_reaching_a_closed_window_are_reported_not_dropped_silently() {
    // A watchlist entry added at 20 s matches a read of 1 s retroactively; the read's window
    // closed long before, so the aggregate above the join cannot count it, and says so.
    let r = rule(
        "SELECT window_end, count(*) FROM plate_reads r JOIN watchlist w ON r.plate = w.plate \
         GROUP BY tumble(r.event_time, INTERVAL '1 second')",
    );
    let (out, errors) = run(vec![r.clone()], 1, |f| {
        f.reads(0, &[(1, 1_000, "LATE-1")]);
        f.advance(20_000);
        f.watch("LATE-1", 1);
        f.advance(30_000);
    });
    assert_eq!(final_rows(&r, &out[0]).num_rows(), 0);
    assert!(
        errors.iter().any(|(_, e)| e.contains("1 rows reached windows that had already closed")),
        "{errors:?}"
    );
}

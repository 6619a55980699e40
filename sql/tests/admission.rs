//! Admission estimates of rules, against fixed stream rates: what is refused, what is
//! admitted, and that the estimate follows the rates, the keys and the filters.

use vigil_engine::stream::StreamInfo;
use vigil_sql::admission::{Budget, Rates, check, estimate};
use vigil_sql::plan::Step;
use vigil_sql::rule::compile;

mod common;

/// Every stream at `rate` rows/s, `keys` distinct join keys, filters keeping `kept`.
struct Fixed {
    rate: f64,
    keys: Option<f64>,
    kept: Option<f64>,
}

impl Rates for Fixed {
    fn rows_per_s(&self, _: &StreamInfo) -> f64 {
        self.rate
    }
    fn distinct(&self, _: &StreamInfo, _: &[String]) -> Option<f64> {
        self.keys
    }
    fn selectivity(&self, _: &StreamInfo, _: &[Step]) -> Option<f64> {
        self.kept
    }
}

fn judge(sql: &str, rates: &Fixed) -> Result<vigil_sql::admission::Estimate, String> {
    let rule = compile("r", sql, "t.sql", &common::streams()).unwrap().remove(0);
    let e = estimate(&rule.node, rates, rule.options.retention_ms as f64, 2_000.0);
    check(&e, 0.0, &Budget::default()).map(|_| e.clone()).map_err(|(what, fix)| format!("{what}; fix: {fix}"))
}

const CITY: Fixed = Fixed { rate: 6_000.0, keys: Some(2.0), kept: None };

#[test]
fn a_hop_with_a_millisecond_slide_is_refused_and_a_minute_slide_is_not() {
    let e = judge(
        "SELECT camera_id, count(*) FROM detections GROUP BY hop(event_time, INTERVAL '1 millisecond', INTERVAL '1 hour'), camera_id",
        &CITY,
    )
    .unwrap_err();
    assert!(e.contains("3600000 windows"), "{e}");
    let ok = judge(
        "SELECT camera_id, count(*) FROM detections GROUP BY hop(event_time, INTERVAL '1 minute', INTERVAL '1 hour'), camera_id",
        &CITY,
    )
    .unwrap();
    assert_eq!((ok.windows_per_row, ok.panes_per_window), (60, 60));
    // Two cameras × 61 one-minute panes (the hour and the 2 s lateness), not one row per event.
    assert_eq!(ok.rows, 2.0 * 61.0);
    // With a million groups the panes no longer fit: refused with the estimate.
    let e = judge(
        "SELECT camera_id, count(*) FROM detections GROUP BY hop(event_time, INTERVAL '1 minute', INTERVAL '1 hour'), camera_id",
        &Fixed { keys: Some(1e6), ..CITY },
    )
    .unwrap_err();
    assert!(e.contains("hold about 21612000 rows"), "{e}");
}

#[test]
fn a_self_join_on_a_coarse_key_is_refused_and_on_a_fine_key_admitted() {
    let sql = "SELECT a.event_id, b.event_id FROM detections a JOIN detections b ON a.class = b.class \
               AND b.event_time BETWEEN a.event_time AND a.event_time + INTERVAL '5 minutes'";
    let e = judge(sql, &CITY).unwrap_err();
    // 6,000 × 6,000 × 300 s / 2 classes.
    assert!(e.contains("5400000000 rows/s"), "{e}");
    // The same join on a key with a million values, over a tenth of a second: admitted.
    let fine = sql.replace("INTERVAL '5 minutes'", "INTERVAL '100 milliseconds'");
    let e = judge(&fine, &Fixed { keys: Some(1e6), ..CITY }).unwrap();
    // Both sides kept for the bound plus the 2 s lateness; the work is the inputs' rate.
    assert_eq!((e.rows, e.rows_per_s), (12_000.0 * 2.1, 6_000.0), "{e:?}");
}

#[test]
fn filters_measured_on_the_retained_rows_scale_the_estimate() {
    let sql = "SELECT DISTINCT camera_id, event_id FROM detections WHERE camera_id = 0";
    let all = judge(sql, &CITY).unwrap_err();
    assert!(all.contains("hold about 3600000 rows"), "{all}");
    let e = judge(sql, &Fixed { kept: Some(0.25), ..CITY }).unwrap();
    assert_eq!(e.rows, 6_000.0 * 0.25 * 600.0);
}

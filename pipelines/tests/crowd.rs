//! Crowd density and flows on the stadium-gate scenario (`testdata/stadium-gate.toml`): three
//! cameras overlap one plaza, a surge of 160 people fills it and leaves. What vigil wrote is read
//! back with DuckDB and checked against the simulator's ground truth (true positions of every
//! person, also written by the run):
//! - the fused count is within 10% of the true count, although each person is seen by up to
//!   three cameras (the unfused count is more than twice the truth);
//! - one level-of-service E/F alert is raised within 10 s of the true density crossing the
//!   threshold, one clear follows within 10 s of it falling, and nothing flaps in between;
//! - gate-line crossings by direction match the true crossings;
//! - the density grid adds up to the zone's count, and dwell times are those of the visits.

mod common;

use common::{duckdb, root, vigil};

const AREA_M2: f64 = 96.0;
const ALERT: f64 = 1.08;
const CLEAR: f64 = ALERT * 0.8;

fn num(s: &str) -> f64 {
    s.parse().unwrap_or_else(|_| panic!("not a number: {s}"))
}

#[test]
fn stadium_gate_surge_fused_counts_alerts_and_flows_match_the_truth() {
    let dir = tempfile::tempdir().unwrap();
    let config = root().join("testdata/stadium-gate.toml");
    vigil(
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--fast",
            "--duration",
            "70",
            "--out",
            "out",
            "--quiet",
        ],
        dir.path(),
    );
    let out = dir.path().join("out");
    let read = |stream: &str| format!("read_parquet('{}/{stream}/**/*.parquet')", out.display());
    // True people in the plaza per frame (every camera of the scene reports the same truth;
    // camera 0's copy is enough).
    let truth = format!(
        "(SELECT epoch_ms(event_time) t, count(*) n FROM {} WHERE camera_id = 0 AND class = 'person' \
          AND ground_x BETWEEN 14 AND 26 AND ground_y BETWEEN 6 AND 14 GROUP BY 1)",
        read("ground_truth")
    );

    // 1. Fused counts against the truth, window by window.
    let rows = duckdb(&format!(
        "SELECT epoch_ms(window_end), persons, raw_persons, cameras, \
                (SELECT avg(n) FROM {truth} g WHERE g.t >= epoch_ms(d.window_start) AND g.t < epoch_ms(d.window_end)) \
         FROM {} d WHERE zone = 'plaza' ORDER BY 1",
        read("zone_density")
    ));
    let judged: Vec<(f64, f64, f64)> = rows
        .iter()
        .filter(|r| r[4] != "None" && num(&r[4]) >= 10.0)
        .map(|r| (num(&r[1]), num(&r[2]), num(&r[4])))
        .collect();
    assert!(judged.len() >= 40, "too few windows with people: {rows:?}");
    for &(fused, raw, truth) in &judged {
        let err = (fused - truth).abs() / truth;
        assert!(err <= 0.10, "fused {fused:.1} against {truth:.1} true people ({:.1}%)", err * 100.0);
        assert!(raw >= 2.0 * truth, "the cameras should overlap: {raw:.1} unfused for {truth:.1}");
    }
    assert!(rows.iter().all(|r| r[3] == "3"), "all three cameras contribute: {rows:?}");

    // 2. Alerts against the true density crossing the thresholds.
    let series: Vec<(i64, f64)> = duckdb(&format!("SELECT t, n FROM {truth} ORDER BY t"))
        .iter()
        .map(|r| (num(&r[0]) as i64, num(&r[1]) / AREA_M2))
        .collect();
    let up = series.iter().find(|(_, d)| *d >= ALERT).expect("the surge crosses the threshold").0;
    let peak = series.iter().position(|(_, d)| *d >= ALERT).unwrap();
    let down = series[peak..]
        .iter()
        .skip_while(|(_, d)| *d >= CLEAR)
        .map(|(t, _)| *t)
        .next()
        .expect("the surge disperses");
    let alerts = duckdb(&format!(
        "SELECT epoch_ms(event_time), severity, message FROM {} WHERE kind = 'density' AND rule = 'zone:plaza' ORDER BY 1",
        read("alerts")
    ));
    assert_eq!(alerts.len(), 2, "one raise and one clear, no flapping: {alerts:?}");
    let (raised, cleared) = (num(&alerts[0][0]) as i64, num(&alerts[1][0]) as i64);
    assert!(alerts[0][2].starts_with("raised") && alerts[0][1] == "high", "{alerts:?}");
    assert!(alerts[0][2].contains("level E") || alerts[0][2].contains("level F"), "{alerts:?}");
    assert!(alerts[1][2].starts_with("cleared"), "{alerts:?}");
    assert!(
        raised >= up && raised - up <= 10_000,
        "raised {} ms after the truth crossed {ALERT}",
        raised - up
    );
    assert!(
        cleared >= down && cleared - down <= 10_000,
        "cleared {} ms after the truth fell",
        cleared - down
    );
    // The zone_density rows show level E/F while the alert is up.
    let levels = duckdb(&format!(
        "SELECT DISTINCT level FROM {} WHERE zone = 'plaza' AND epoch_ms(event_time) = {raised}",
        read("zone_density")
    ));
    assert!(levels.iter().all(|l| l[0] == "E" || l[0] == "F"), "{levels:?}");

    // 3. Gate-line crossings by direction (camera 0's tracks) against the true crossings of the
    //    same line, with the same margin.
    let m = vigil_operators::flows::FlowConfig::new(Vec::new(), Vec::new()).margin_m;
    let true_crossings = duckdb(&format!(
        "WITH p AS (SELECT object_id, event_time, ground_x x, 14.5 - ground_y d FROM {} \
                    WHERE camera_id = 0 AND class = 'person' AND abs(14.5 - ground_y) >= {m}), \
              s AS (SELECT *, sign(d) side, lag(sign(d)) OVER (PARTITION BY object_id ORDER BY event_time) prev FROM p) \
         SELECT CASE WHEN side > 0 THEN 'in' ELSE 'out' END, count(*) FROM s \
         WHERE prev IS NOT NULL AND side <> prev AND x BETWEEN 14 - {m} AND 26 + {m} GROUP BY 1 ORDER BY 1",
        read("ground_truth")
    ));
    let ours = duckdb(&format!(
        "SELECT direction, count(*) FROM {} WHERE line = 'plaza-entry' GROUP BY 1 ORDER BY 1",
        read("line_crossings")
    ));
    assert_eq!(true_crossings.len(), 2, "{true_crossings:?}");
    assert_eq!(ours.len(), 2, "{ours:?}");
    for (t, o) in true_crossings.iter().zip(&ours) {
        assert_eq!(t[0], o[0]);
        let (t, o) = (num(&t[1]), num(&o[1]));
        assert!(t >= 50.0, "the surge crosses the line: {true_crossings:?}");
        assert!((o - t).abs() <= 0.15 * t, "{} crossings: {o} counted, {t} true", ours[0][0]);
    }
    let cameras = duckdb(&format!("SELECT DISTINCT camera_id FROM {}", read("line_crossings")));
    assert_eq!(cameras, vec![vec!["0".to_owned()]], "only the line's camera counts");

    // 4. The grid of each window adds up to the zone's fused count for the same window.
    let grid = duckdb(&format!(
        "SELECT epoch_ms(g.window_end), sum(g.density), any_value(d.persons) FROM {} g \
         JOIN {} d ON d.zone_id = g.zone_id AND d.window_end = g.window_end \
         GROUP BY 1 ORDER BY 1",
        read("density_grid"),
        read("zone_density")
    ));
    assert!(grid.len() >= 10, "{grid:?}");
    for r in &grid[1..] {
        assert!((num(&r[1]) - num(&r[2])).abs() < 1e-6, "grid and zone disagree: {r:?}");
    }
    let cells = duckdb(&format!(
        "SELECT min(cell_x), max(cell_x), min(cell_y), max(cell_y) FROM {}",
        read("density_grid")
    ));
    let c: Vec<f64> = cells[0].iter().map(|v| num(v)).collect();
    assert!(c[0] >= 13.0 && c[1] <= 26.0 && c[2] >= 5.0 && c[3] <= 14.0, "cells outside the plaza: {c:?}");

    // 5. Visits: dwell is exit minus entry; the surge holds people in the plaza for 20 s.
    let visits = duckdb(&format!(
        "SELECT count(*), max(dwell_s), max(abs(dwell_s - (epoch_ms(left_at) - epoch_ms(entered_at)) / 1000.0)) \
         FROM {} WHERE zone = 'plaza' AND camera_id = 0",
        read("zone_visits")
    ));
    assert!(num(&visits[0][0]) >= 100.0 && num(&visits[0][1]) >= 15.0, "{visits:?}");
    assert!(num(&visits[0][2]) < 1e-9, "{visits:?}");
}

//! The `tracks` stream of a simulated city: one ByteTrack-class tracker per camera, fed in
//! capture order. Identities are checked against the simulator's ground truth, and a SQL rule
//! over `tracks` against the Parquet it writes (both read back with DuckDB).

mod common;

use common::{duckdb, root, vigil};

#[test]
fn every_camera_tracks_about_as_many_people_as_it_saw_and_rules_read_tracks() {
    let dir = tempfile::tempdir().unwrap();
    let mut city = std::fs::read_to_string(root().join("pipelines/src/default_city.toml")).unwrap();
    city.push_str("\n[[rules]]\nname = \"track_lost\"\nsql = \"SELECT camera_id, event_time, track_id FROM tracks WHERE state = 'lost'\"\n");
    std::fs::write(dir.path().join("city.toml"), city).unwrap();
    vigil(
        &["run", "--config", "city.toml", "--fast", "--duration", "20", "--out", "out", "--quiet"],
        dir.path(),
    );
    let out = dir.path().join("out");
    let tracks = format!("read_parquet('{}/tracks/**/*.parquet')", out.display());
    let truth = format!("read_parquet('{}/ground_truth/**/*.parquet')", out.display());
    // Distinct person tracks per camera against distinct true people per camera.
    let rows = duckdb(&format!(
        "WITH t AS (SELECT camera_id, count(DISTINCT track_id) n FROM {tracks} WHERE class = 'person' GROUP BY 1), \
              g AS (SELECT camera_id, count(DISTINCT object_id) n FROM {truth} WHERE class = 'person' AND detected GROUP BY 1) \
         SELECT g.camera_id, g.n, coalesce(t.n, 0) FROM g LEFT JOIN t USING (camera_id) ORDER BY 1"
    ));
    assert_eq!(rows.len(), 50, "{rows:?}");
    for r in &rows {
        let (truth_n, tracks_n): (f64, f64) = (r[1].parse().unwrap(), r[2].parse().unwrap());
        assert!(
            tracks_n >= truth_n * 0.8 && tracks_n <= truth_n * 1.5 + 3.0,
            "camera {}: {tracks_n} person tracks for {truth_n} people",
            r[0]
        );
    }
    // One row per track and frame; only tracked and lost states are reported.
    let dup = duckdb(&format!("SELECT count(*) - count(DISTINCT (track_id, event_time)) FROM {tracks}"));
    assert_eq!(dup[0][0], "0");
    let states = duckdb(&format!("SELECT DISTINCT state FROM {tracks} ORDER BY 1"));
    assert_eq!(states, [["lost"], ["tracked"]]);
    // The rule over `tracks` saw exactly the lost rows that Parquet holds.
    let alerts = duckdb(&format!(
        "SELECT count(*) FROM read_parquet('{}/alerts/**/*.parquet') WHERE rule = 'track_lost'",
        out.display()
    ));
    let lost = duckdb(&format!("SELECT count(*) FROM {tracks} WHERE state = 'lost'"));
    assert!(lost[0][0].parse::<u64>().unwrap() > 0);
    assert_eq!(alerts[0][0], lost[0][0]);
}

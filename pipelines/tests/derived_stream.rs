//! A new derived stream, defined in this file and nowhere else, is a stream like the city's own:
//! written to Parquet (read back by DuckDB), in the SQL catalog (a rule created from the real
//! psql compiles against it and runs), queried with psql `SELECT`, and deleted by retention
//! while the engine runs. The engine runs in this process (`app::run_with`) so that the test can
//! hand it the derivation; nothing in the library was edited for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use vigil_engine::graph::Graph;
use vigil_engine::stream::{Batch, Events, StreamDef, StreamInfo, Timestamp};
use vigil_operators::alerts::AlertBus;
use vigil_operators::tracks::{TrackCols, Tracks};
use vigil_pipelines::app::{Progress, RunOptions, run_with};
use vigil_pipelines::derive::{Derivation, DeriveContext};
use vigil_pipelines::settings::Settings;

mod common;

use common::{parquet_names, psql, psql_try};

vigil_engine::stream! {
    /// Tracks moving faster than 3 pixels per frame, with their speed.
    pub struct FastTracks {
        name: "fast_tracks",
        class: Personal,
        keys: [camera_id, event_time, event_id],
        personal: [track_id],
        row: FastTrack,
        builder: FastTrackRows,
        reader: FastTrackCols,
        columns: {
            /// The camera.
            camera_id: u32,
            /// The frame's time.
            event_time: Timestamp,
            /// The track row's id.
            event_id: u64,
            /// The track.
            track_id: u64,
            /// Pixels per frame.
            speed: f32,
        }
    }
}

/// `fast_tracks` from `tracks`.
struct Speeding;

impl Derivation for Speeding {
    fn produces(&self) -> Vec<&'static StreamInfo> {
        vec![FastTracks::info()]
    }

    fn build(&self, graph: &mut Graph<'_>, cx: &DeriveContext) {
        let Some(tracks) = graph.get::<Tracks>() else { return };
        let errors = cx.errors.clone();
        let fast =
            tracks.into_inner().unary::<timely::container::CapacityContainerBuilder<Vec<Batch>>, _, _, _>(
                Pipeline,
                "Speeding",
                move |_, _| {
                    let mut rows = FastTrackRows::default();
                    move |input, output| {
                        input.for_each(|cap, data| {
                            for b in data.iter() {
                                let cols = match TrackCols::new(&b.rows) {
                                    Ok(c) => c,
                                    Err(e) => return errors.report("Speeding", e),
                                };
                                for r in cols.rows().filter(|r| r.vx.hypot(r.vy) > 3.0) {
                                    rows.push(&FastTrack {
                                        camera_id: r.camera_id,
                                        event_time: r.event_time,
                                        event_id: r.event_id,
                                        track_id: r.track_id,
                                        speed: r.vx.hypot(r.vy),
                                    });
                                }
                            }
                            if !rows.is_empty() {
                                output.session(&cap).give(Batch::new(rows.finish()));
                            }
                        });
                    }
                },
            );
        graph.add(Events::<FastTracks>::new(fast));
    }
}

#[test]
fn a_derived_stream_defined_in_one_file_is_in_parquet_sql_psql_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut settings = Settings::embedded();
    settings.sim.cameras = 6;
    // Personal data (fast_tracks is) kept two minutes: old partitions go while the city runs.
    settings.retention.periods.insert(vigil_engine::stream::Class::Personal, 120_000);
    // The endpoint's password comes from an environment variable; the test cannot set one
    // (no unsafe code), so it names one cargo sets for every test.
    settings.server.pg_password_env = "CARGO_MANIFEST_DIR".into();
    let password = env!("CARGO_MANIFEST_DIR");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let opts = RunOptions {
        duration_s: None,
        fast: true,
        out: out.clone(),
        parquet: true,
        ground_truth: false,
        pg_listen: Some(format!("127.0.0.1:{port}")),
        http_listen: None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let engine = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let r = run_with(
                &settings,
                &opts,
                vec![Arc::new(Speeding)],
                &AlertBus::new(1 << 16),
                &stop,
                &Arc::new(Progress::default()),
            );
            r.map(|s| (s.files, s.deleted))
        })
    };
    // psql: the stream is a table (retained rows), and a rule over it compiles and runs.
    let deadline = Instant::now() + Duration::from_secs(120);
    let n: u64 = loop {
        std::thread::sleep(Duration::from_millis(500));
        let ok = psql_try(port, password, "SELECT count(*) FROM fast_tracks")
            .ok()
            .and_then(|o| o.trim().parse().ok());
        if let Some(n) = ok.filter(|n| *n > 0) {
            break n;
        }
        assert!(Instant::now() < deadline, "no fast_tracks rows reached psql");
    };
    assert!(n > 0);
    let cols = psql(port, password, "SELECT min(speed) > 3, count(DISTINCT track_id) > 0 FROM fast_tracks");
    let cols = cols.trim();
    assert_eq!(
        cols, "t|t",
        "psql SELECT reads the new stream's own columns (booleans as PostgreSQL prints them)"
    );
    psql(
        port,
        password,
        "CREATE RULE very_fast AS SELECT camera_id, event_time, track_id, speed FROM fast_tracks WHERE speed > 4",
    );
    let rules = psql(port, password, "SHOW RULES");
    assert!(rules.contains("very_fast"), "{rules}");
    // Retention: once more than two minutes of event time have passed, the first partitions
    // of fast_tracks are deleted while the city runs.
    let dir_fast = out.join("fast_tracks");
    let first = loop {
        let f = parquet_names(&dir_fast);
        if let Some(first) = f.first().cloned() {
            break first;
        }
        assert!(Instant::now() < deadline, "no fast_tracks partition was written");
        std::thread::sleep(Duration::from_millis(500));
    };
    let deadline = Instant::now() + Duration::from_secs(240);
    while parquet_names(&dir_fast).contains(&first) {
        assert!(Instant::now() < deadline, "{first} was never deleted: {:?}", parquet_names(&dir_fast));
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, Ordering::SeqCst);
    let (files_by_stream, deleted) = engine.join().unwrap().expect("the engine ran");
    assert!(deleted > 0);
    assert!(files_by_stream.get("fast_tracks").is_some_and(|n| *n > 0), "{files_by_stream:?}");
    // Parquet: DuckDB reads the stream, with its own schema, and the rule's rows.
    let rows = common::duckdb(&format!(
        "SELECT count(*), min(speed) > 3, count(DISTINCT track_id) > 0 FROM read_parquet('{}/**/*.parquet')",
        dir_fast.display()
    ));
    assert_eq!(rows[0][1], "True", "{rows:?}");
    assert!(rows[0][0].parse::<u64>().unwrap() > 0, "{rows:?}");
    let rule_rows = common::duckdb(&format!(
        "SELECT count(*), min(speed) > 4 FROM read_parquet('{}/rules/very_fast/**/*.parquet')",
        out.display()
    ));
    assert!(rule_rows[0][0].parse::<u64>().unwrap() > 0 && rule_rows[0][1] == "True", "{rule_rows:?}");
}

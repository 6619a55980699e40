//! vigil as a service, run as an operator runs it: `vigil run` with no duration runs until
//! SIGTERM and exits 0 with every file complete; retention set in hours deletes old partitions,
//! snapshots and in-memory rows while it runs, each with its log line; and a restart into the
//! same output directory keeps the first run's files, with ids that never repeat.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use common::{duckdb, parquet_names, vigil};

/// A small city: two cameras, a zone with a gate line, a watchlist plate driving around.
fn city(dir: &Path, seed: u64, retention: &str) -> std::path::PathBuf {
    let path = dir.join(format!("city-{seed}.toml"));
    std::fs::write(
        &path,
        format!(
            "[city]\nseed = {seed}\nfps = 5.0\n\n[sinks]\nout = \"out\"\npartition_s = 60\nground_truth = false\n\n\
             [retention]\n{retention}\n\n\
             [simulation]\ncameras = 2\npedestrians_per_camera = 6\nvehicles_per_minute = 4\nlaggy_camera_every = 0\n\n\
             [[zones]]\nname = \"gate\"\ncamera = 0\npolygon = [[10.0, 4.0], [30.0, 4.0], [30.0, 16.0], [10.0, 16.0]]\nalert_density = 0.05\n\n\
             [[lines]]\nname = \"entry\"\ncamera = 0\nfrom = [10.0, 10.0]\nto = [30.0, 10.0]\nin_side = [20.0, 14.0]\n\n\
             [[watchlist]]\nplate = \"12345-ب-6\"\nlegal_basis = \"stolen-vehicle report DGSN-2026-00118\"\nexpires_at = \"2026-09-12T20:00:00Z\"\n\n\
             [[rules]]\nname = \"persons\"\nsql = \"SELECT camera_id, event_time, event_id FROM detections WHERE class = 'person' AND score > 0.97\"\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn run_without_a_duration_lasts_until_sigterm_and_retention_deletes_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let config = city(dir.path(), 1, "hours = 1\nmemory_s = 300");
    // Snapshots a live run left (faces already blurred): one 5 minutes into the clock, one
    // 10 hours in. The first ages past an hour while the city runs; the second does not.
    let snaps = dir.path().join("out/snapshots/camera=0");
    std::fs::create_dir_all(&snaps).unwrap();
    std::fs::write(snaps.join("20260614T200500Z_persons.jpg"), b"jpeg").unwrap();
    std::fs::write(snaps.join("20260615T060000Z_persons.jpg"), b"jpeg").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["run", "--config", config.to_str().unwrap(), "--fast", "--quiet"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let reader = {
        let (log, stderr) = (Arc::clone(&log), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        })
    };
    // Let it run through more than two and a half simulated hours.
    let det = dir.path().join("out/detections");
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let files = parquet_names(&det);
        if files.iter().any(|f| f.as_str() >= "detections-20260614T223000Z") {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "vigil ended on its own: {:?}", log.lock().unwrap());
        assert!(Instant::now() < deadline, "2.5 simulated hours took too long: {files:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    // While it runs: the first hour's partitions are gone, with their log lines.
    let files = parquet_names(&det);
    assert!(
        !files.iter().any(|f| f.as_str() < "detections-20260614T210000Z"),
        "partitions older than an hour are still there: {:?}",
        &files[..files.len().min(5)]
    );
    assert!(!snaps.join("20260614T200500Z_persons.jpg").exists(), "the old snapshot was not deleted");
    assert!(snaps.join("20260615T060000Z_persons.jpg").exists(), "a young snapshot was deleted");
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let code = child.wait().unwrap();
    reader.join().unwrap();
    let log = log.lock().unwrap().clone();
    assert!(
        code.success(),
        "SIGTERM is the normal end of a run without duration: {code:?}\n{}",
        log.join("\n")
    );
    let has = |words: &[&str]| log.iter().any(|l| words.iter().all(|w| l.contains(w)));
    assert!(
        has(&[
            "vigil::retention",
            "deleted",
            "detections-20260614T200000Z-e1-w0.parquet",
            "personal data is kept 1 h"
        ]),
        "no log line for the first detections partition:\n{}",
        log.join("\n")
    );
    assert!(
        has(&["vigil::retention", "deleted", "20260614T200500Z_persons.jpg", "personal"]),
        "{}",
        log.join("\n")
    );
    // Memory's drops: one line a sweep, every stream on it.
    assert!(
        has(&[
            "vigil::retention",
            "dropped rows from memory, older than the in-memory horizon",
            " detections "
        ]),
        "{}",
        log.join("\n")
    );
    assert!(has(&["vigil::retention", "deleted", "rules/persons/"]), "rule outputs too:\n{}", log.join("\n"));
    let out = dir.path().join("out");
    // Each deletion is also in the audit log, whose chain holds.
    let audit = std::fs::read_to_string(out.join("audit/audit.log")).unwrap();
    let recorded =
        |path: &str| audit.lines().any(|l| l.contains("\"action\":\"retention.delete\"") && l.contains(path));
    assert!(
        recorded("detections/date=2026-06-14/hour=20/detections-20260614T200000Z-e1-w0.parquet"),
        "{audit}"
    );
    assert!(recorded("snapshots/camera=0/20260614T200500Z_persons.jpg"), "{audit}");
    assert!(vigil_engine::audit::verify(&out.join("audit/audit.log")).is_ok());
    // Every file is complete: nothing in progress, and DuckDB reads every stream written.
    for entry in walk(&out) {
        assert!(!entry.ends_with(".inprogress"), "{entry} was left half-written");
    }
    for stream in
        ["detections", "tracks", "plate_reads", "zone_density", "density_grid", "line_crossings", "alerts"]
    {
        let n =
            duckdb(&format!("SELECT count(*) FROM read_parquet('{}/{stream}/**/*.parquet')", out.display()));
        assert!(n[0][0].parse::<u64>().unwrap() > 0, "{stream} is empty");
    }
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

#[test]
fn a_restart_keeps_the_first_runs_files_and_no_id_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let first = city(dir.path(), 1, "days = 7");
    let second = city(dir.path(), 2, "days = 7");
    vigil(&["run", "--config", first.to_str().unwrap(), "--fast", "--duration", "90", "--quiet"], dir.path());
    let out = dir.path().join("out");
    let before = parquet_names(&out.join("detections"));
    assert!(!before.is_empty() && before.iter().all(|f| f.contains("-e1-")), "{before:?}");
    vigil(
        &["run", "--config", second.to_str().unwrap(), "--fast", "--duration", "90", "--quiet"],
        dir.path(),
    );
    let after = parquet_names(&out.join("detections"));
    for f in &before {
        assert!(after.contains(f), "the second run replaced {f}");
    }
    assert!(after.iter().any(|f| f.contains("-e2-")), "{after:?}");
    // Both runs' rows are there, and no event_id repeats in any stream.
    let streams = [
        "detections",
        "tracks",
        "plate_reads",
        "zone_density",
        "density_grid",
        "line_crossings",
        "zone_visits",
        "alerts",
    ];
    for stream in streams {
        let r = duckdb(&format!(
            "SELECT count(*), count(*) - count(DISTINCT event_id), \
                    count(DISTINCT regexp_extract(filename, '-e([0-9]+)-', 1)) \
             FROM read_parquet('{}/{stream}/**/*.parquet', filename = true)",
            out.display()
        ));
        assert!(r[0][0].parse::<u64>().unwrap() > 0, "{stream}: {r:?}");
        assert_eq!(r[0][1], "0", "{stream} has duplicate event ids: {r:?}");
        assert_eq!(r[0][2], "2", "{stream} lacks a run: {r:?}");
    }
    // Track ids of the two runs are disjoint.
    let t = format!("read_parquet('{}/tracks/**/*.parquet', filename = true)", out.display());
    let r = duckdb(&format!(
        "SELECT (SELECT count(DISTINCT track_id) FROM {t} WHERE filename LIKE '%-e1-%'), \
                (SELECT count(DISTINCT track_id) FROM {t} WHERE filename LIKE '%-e2-%'), \
                (SELECT count(*) FROM (SELECT track_id FROM {t} WHERE filename LIKE '%-e1-%' \
                                       INTERSECT SELECT track_id FROM {t} WHERE filename LIKE '%-e2-%'))"
    ));
    assert!(r[0][0] != "0" && r[0][1] != "0", "{r:?}");
    assert_eq!(r[0][2], "0", "a track id of the first run came back in the second: {r:?}");
}

#[test]
fn watchlist_entries_load_from_csv_row_by_row_and_stop_matching_when_they_expire() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("wl.csv"),
        "plate,reason,legal_basis,authority,added_by,valid_from,expires_at\n\
         4821-D-33,warrant,TPI-Agadir 2026/77,TPI Agadir,analyst1,,2026-09-01T00:00:00Z\n\
         777-B-7,stolen vehicle,,DGSN Rabat,analyst1,,2026-09-01T00:00:00Z\n\
         888-B-8,stolen vehicle,DGSN-2026-00200,DGSN Rabat,analyst1,,\n",
    )
    .unwrap();
    // 12345-ب-6 passes a camera every 5 s of the simulated city; its entry expires at 20:01.
    let config = dir.path().join("city.toml");
    std::fs::write(
        &config,
        "watchlist_csv = \"wl.csv\"\n\n[city]\nseed = 3\nfps = 5.0\n\n[sinks]\nout = \"out\"\nground_truth = false\n\n\
         [simulation]\ncameras = 2\npedestrians_per_camera = 2\nvehicles_per_minute = 2\nlaggy_camera_every = 0\n\n\
         [[watchlist]]\nplate = \"12345-ب-6\"\nreason = \"stolen vehicle\"\nlegal_basis = \"DGSN-2026-00118\"\n\
         expires_at = \"2026-06-14T20:01:00Z\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["run", "--config", config.to_str().unwrap(), "--duration", "150", "--fast", "--quiet"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Each bad row is refused with its line and the fix; the good row loads.
    assert!(stderr.contains("wl.csv:3: entry for 777-ب-7 without a legal basis; fix:"), "{stderr}");
    assert!(stderr.contains("wl.csv:4: entry for 888-ب-8 without a valid expiry"), "{stderr}");
    assert!(stderr.contains("1 entries loaded from"), "{stderr}");
    let o = dir.path().join("out");
    // What the start loaded, kept for replay; the entry that expired at 20:01 has left the file
    // since (retention), the CSV's entry stays with its own columns.
    let listed = duckdb(&format!(
        "SELECT plate, legal_basis, added_by, strftime(expires_at, '%Y-%m-%dT%H:%M:%S') \
         FROM read_parquet('{}/reference/watchlist-*.parquet') ORDER BY plate",
        o.display()
    ));
    assert_eq!(listed, [["4821-د-33", "TPI-Agadir 2026/77", "analyst1", "2026-09-01T00:00:00"]]);
    // Hits while the entry is valid, none from its expiry on, though the plate is still read.
    let q = |sql: &str| duckdb(&sql.replace("{o}", &o.display().to_string()))[0][0].parse::<u64>().unwrap();
    let before = q("SELECT count(*) FROM read_parquet('{o}/alerts/**/*.parquet') WHERE kind = 'watchlist' \
         AND event_time < TIMESTAMPTZ '2026-06-14 20:01:00+00'");
    let after = q("SELECT count(*) FROM read_parquet('{o}/alerts/**/*.parquet') WHERE kind = 'watchlist' \
         AND event_time >= TIMESTAMPTZ '2026-06-14 20:01:00+00'");
    let reads_after =
        q("SELECT count(*) FROM read_parquet('{o}/plate_reads/**/*.parquet') WHERE plate = '12345-ب-6' \
         AND event_time >= TIMESTAMPTZ '2026-06-14 20:01:00+00'");
    assert!(before >= 3, "{before} hits before the expiry");
    assert!(reads_after >= 3, "the plate was read {reads_after} times after the expiry");
    assert_eq!(after, 0, "an expired entry matched");
    // The audit log has the additions and the expiry.
    let audit = std::fs::read_to_string(o.join("audit/audit.log")).unwrap();
    assert!(
        audit.contains("\"action\":\"watchlist.expire\"") && audit.contains("\"actor\":\"analyst1\""),
        "{audit}"
    );
}

#[test]
fn an_entry_added_later_finds_the_reads_of_its_lookback_and_none_older() {
    let dir = tempfile::tempdir().unwrap();
    // 12345-ب-6 passes every 5 s; its entry is added 60 s into the run and searches back 20 s.
    let config = dir.path().join("city.toml");
    std::fs::write(
        &config,
        "[city]\nseed = 4\nfps = 5.0\n\n[sinks]\nout = \"out\"\nground_truth = false\n\n[hits]\nlookback = \"20s\"\n\n\
         [simulation]\ncameras = 2\npedestrians_per_camera = 2\nvehicles_per_minute = 2\nlaggy_camera_every = 0\n\n\
         [[watchlist]]\nplate = \"12345-ب-6\"\nlegal_basis = \"DGSN-2026-00118\"\nexpires_at = \"2026-09-12T20:00:00Z\"\n\
         active_from_s = 60\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["run", "--config", config.to_str().unwrap(), "--duration", "90", "--fast", "--quiet"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let o = dir.path().join("out");
    // Seconds into the run of each read, and of each candidate hit's read.
    let secs = |sql: &str| -> Vec<i64> {
        duckdb(&sql.replace("{o}", &o.display().to_string())).iter().map(|r| r[0].parse().unwrap()).collect()
    };
    let reads = secs(
        "SELECT (epoch_ms(event_time) - 1781467200000) // 1000 FROM read_parquet('{o}/plate_reads/**/*.parquet') \
         WHERE plate = '12345-ب-6' ORDER BY 1",
    );
    let hits = secs(
        "SELECT (epoch_ms(read_time) - 1781467200000) // 1000 FROM read_parquet('{o}/hits/**/*.parquet') \
         WHERE status = 'candidate' ORDER BY 1",
    );
    assert!(
        reads.iter().filter(|&&t| t < 40).count() >= 5,
        "the plate was read before the lookback: {reads:?}"
    );
    // Every read from 40 s on hits (the ones before 60 s when the entry comes), none before.
    let expected: Vec<i64> = reads.iter().copied().filter(|&t| t >= 40).collect();
    assert!(expected.iter().filter(|&&t| t < 60).count() >= 3, "reads within the lookback: {reads:?}");
    assert_eq!(hits, expected, "hits by the second of their read, against the reads {reads:?}");
}

#[test]
fn reads_that_match_nothing_go_after_their_period_and_hits_keep_theirs() {
    let dir = tempfile::tempdir().unwrap();
    // Random plates (no hit) and a listed one (a hit every 5 s); reads kept 2 minutes, hits 6.
    let config = dir.path().join("city.toml");
    std::fs::write(
        &config,
        "[city]\nseed = 9\nfps = 5.0\n\n[sinks]\nout = \"out\"\npartition_s = 10\nground_truth = false\n\n\
         [retention]\nreads = \"2m\"\nhits = \"6m\"\nmemory_s = 600\n\n\
         [simulation]\ncameras = 2\npedestrians_per_camera = 2\nvehicles_per_minute = 20\nlaggy_camera_every = 0\n\n\
         [[watchlist]]\nplate = \"12345-ب-6\"\nlegal_basis = \"DGSN-2026-00118\"\nexpires_at = \"2026-09-12T20:00:00Z\"\n",
    )
    .unwrap();
    let (mut child, port, log) = common::spawn_listening(
        Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["run", "--config", config.to_str().unwrap(), "--duration", "720", "--fast", "--quiet"])
            .args(["--pg-listen", "127.0.0.1:0"])
            .env("VIGIL_PG_PASSWORD", "pw-retention-1")
            .current_dir(dir.path())
            .stdout(Stdio::null()),
    );
    // While the city runs: what psql sees of plate_reads spans at most the period (plus the
    // allowed lateness, by which the newest read may lead the engine's clock).
    let mut samples = 0;
    while child.try_wait().unwrap().is_none() {
        let sql = "SELECT CAST(min(event_time) AS BIGINT), CAST(max(event_time) AS BIGINT) FROM plate_reads";
        if let Ok(out) = common::psql_try(port, "pw-retention-1", sql)
            && let Some((min, max)) = out.trim().split_once('|')
            && let (Ok(min), Ok(max)) = (min.parse::<i64>(), max.parse::<i64>())
            && max - 1_781_467_200_000 > 150_000
        {
            assert!(max - min <= 120_000 + 2_000, "psql sees reads {} s old", (max - min) / 1000);
            samples += 1;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(child.wait().unwrap().success(), "{}", log.lock().unwrap());
    assert!(samples >= 3, "only {samples} samples past the first period");
    // On disk: no read older than its period behind the last one; hits older than that remain
    // (with the read they came from), none older than theirs.
    let o = dir.path().join("out").display().to_string();
    let q = |sql: &str| duckdb(&sql.replace("{o}", &o));
    let reads = q(
        "SELECT epoch_ms(min(event_time)), epoch_ms(max(event_time)), count(*) FROM read_parquet('{o}/plate_reads/**/*.parquet')",
    );
    let (min, last) = (reads[0][0].parse::<i64>().unwrap(), reads[0][1].parse::<i64>().unwrap());
    assert!(last - min <= 120_000, "a read {} s old is still in Parquet", (last - min) / 1000);
    let hits = q(
        "SELECT epoch_ms(min(read_time)), count(*), count(DISTINCT plate_raw) FROM read_parquet('{o}/hits/**/*.parquet') WHERE status = 'candidate'",
    );
    let oldest_hit = hits[0][0].parse::<i64>().unwrap();
    assert!(last - oldest_hit > 120_000, "no hit older than the reads' period was kept: {hits:?}");
    assert!(last - oldest_hit <= 360_000, "a hit {} s old is still in Parquet", (last - oldest_hit) / 1000);
    // Each deletion is in the audit log, with the period it enforced.
    let audit = std::fs::read_to_string(dir.path().join("out/audit/audit.log")).unwrap();
    assert!(
        audit.contains("\"object\":\"plate_reads/date=2026-06-14/hour=20/plate_reads-20260614T2000"),
        "{audit}"
    );
    assert!(audit.contains("\"period\":\"2 min\""), "{audit}");
}

#[test]
fn a_lake_of_two_runs_replays_to_what_the_live_rules_gave_each_run() {
    let dir = tempfile::tempdir().unwrap();
    // Two runs five minutes apart; the second renames the zone. Each run's rows hold until the
    // next run starts: a replay that kept every run's rows for ever joined each event once per
    // run.
    let write = |seed: u64, start: &str, zone: &str| {
        let path = dir.path().join(format!("city-{seed}.toml"));
        std::fs::write(
            &path,
            format!(
                "[city]\nseed = {seed}\nfps = 5.0\nstart = \"{start}\"\n\n[sinks]\nout = \"out\"\nground_truth = false\n\n\
                 [simulation]\ncameras = 2\npedestrians_per_camera = 6\nvehicles_per_minute = 20\nlaggy_camera_every = 0\n\n\
                 [[zones]]\nname = \"{zone}\"\ncamera = 0\npolygon = [[10.0, 4.0], [30.0, 4.0], [30.0, 16.0], [10.0, 16.0]]\n\n\
                 [[watchlist]]\nplate = \"12345-ب-6\"\nlegal_basis = \"DGSN-2026-00118\"\nexpires_at = \"2026-09-12T20:00:00Z\"\n\n\
                 [[rules]]\nname = \"in_zone\"\nsql = \"SELECT d.event_id, z.name FROM detections d JOIN zones z ON d.zone_id = z.zone_id\"\n\n\
                 [[rules]]\nname = \"listed\"\nsql = \"SELECT p.event_id, w.plate FROM plate_reads p JOIN watchlist w ON p.plate = w.plate\"\n"
            ),
        )
        .unwrap();
        path
    };
    for config in [write(1, "2026-06-14T20:00:00Z", "gate"), write(2, "2026-06-14T20:05:00Z", "gate b")] {
        vigil(
            &["run", "--config", config.to_str().unwrap(), "--fast", "--duration", "60", "--quiet"],
            dir.path(),
        );
    }
    std::fs::write(
        dir.path().join("rules.sql"),
        "CREATE RULE in_zone AS SELECT d.event_id, z.name FROM detections d JOIN zones z ON d.zone_id = z.zone_id;\n\
         CREATE RULE listed AS SELECT p.event_id, w.plate FROM plate_reads p JOIN watchlist w ON p.plate = w.plate;\n",
    )
    .unwrap();
    vigil(&["replay", "--events", "out", "--rules", "rules.sql", "--out", "replayed"], dir.path());
    let o = dir.path().display();
    // (Rows of the live rules net of retractions, as replay writes its own.)
    let live = |rule: &str, column: &str| {
        format!(
            "SELECT event_id, {column} FROM read_parquet('{o}/out/rules/{rule}/**/*.parquet') \
             GROUP BY ALL HAVING sum(vigil_diff) > 0"
        )
    };
    let replayed = |rule: &str, column: &str| {
        format!("SELECT event_id, {column} FROM read_parquet('{o}/replayed/{rule}.parquet')")
    };
    let differ = |a: &str, b: &str| {
        format!("SELECT count(*) FROM (({a} EXCEPT ALL {b}) UNION ALL ({b} EXCEPT ALL {a}))")
    };
    // The watchlist's hits: the same entry in both runs, so the same rows.
    let (live_hits, replayed_hits) = (live("listed", "plate"), replayed("listed", "plate"));
    let r = duckdb(&format!(
        "SELECT (SELECT count(*) FROM ({live_hits})), ({})",
        differ(&live_hits, &replayed_hits)
    ));
    assert!(r[0][0].parse::<u64>().unwrap() >= 10, "too few hits to tell: {r:?}");
    assert_eq!(r[0][1], "0", "hits of one and not the other: {r:?}");
    // The zones: every event of both runs once, joined to the zone as it is at the end (a join
    // with a table that changed is the join with the table as it now is).
    let (live_ids, replayed_ids) = (live("in_zone", "1"), replayed("in_zone", "1"));
    let r = duckdb(&format!(
        "SELECT (SELECT count(*) FROM ({live_ids})), ({}), \
                (SELECT string_agg(DISTINCT name) FROM read_parquet('{o}/replayed/in_zone.parquet'))",
        differ(&live_ids, &replayed_ids)
    ));
    assert!(r[0][0].parse::<u64>().unwrap() >= 10, "too few events in the zone to tell: {r:?}");
    assert_eq!(r[0][1], "0", "events in the zone of one and not the other: {r:?}");
    assert_eq!(r[0][2], "gate b", "{r:?}");
}

//! End-to-end tests of the `vigil` binary, run as a user would: the demo, its Parquet output
//! read by independent readers (DuckDB and pyarrow from PyPI), determinism across runs and
//! worker counts, bad input, and Ctrl-C.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn vigil() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("vigil runs")
}

/// The Python with DuckDB and pyarrow that `scripts/test` installs.
fn python() -> PathBuf {
    let p = std::env::var_os("VIGIL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"));
    assert!(p.exists(), "{} missing: run scripts/test, which installs duckdb and pyarrow", p.display());
    p
}

fn py(script: &str, dir: &Path) -> String {
    let out = Command::new(python()).arg("-c").arg(script).current_dir(dir).output().expect("python runs");
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

fn demo(dir: &Path, workers: usize, seconds: u32) -> Output {
    let out = run(vigil()
        .args([
            "demo",
            "--fast",
            "--duration",
            &seconds.to_string(),
            "--workers",
            &workers.to_string(),
            "--out",
        ])
        .arg(dir.join("out")));
    assert!(
        out.status.success(),
        "demo failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn demo_prints_alerts_and_leaves_parquet_that_duckdb_and_pyarrow_read() {
    let tmp = tempfile::tempdir().unwrap();
    let out = demo(tmp.path(), 1, 60);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let density = stdout.lines().filter(|l| l.starts_with("ALERT") && l.contains(" density ")).count();
    let watch = stdout.lines().filter(|l| l.starts_with("ALERT") && l.contains(" watchlist ")).count();
    assert!(density >= 1, "no density alert printed:\n{stdout}");
    assert!(watch >= 1, "no watchlist hit printed:\n{stdout}");
    assert!(stdout.contains("Parquet output under"), "{stdout}");

    // DuckDB reads every stream with the expected columns and rows.
    let report = py(
        r#"
import duckdb
for stream, cols in [
    ("detections", ["camera_id", "event_time", "event_id", "class", "score", "zone_id"]),
    ("plate_reads", ["camera_id", "event_time", "event_id", "plate_raw", "plate", "confidence"]),
    ("zone_density", ["zone", "window_start", "window_end", "persons", "density", "level"]),
    ("alerts", ["camera_id", "event_time", "event_id", "kind", "rule", "severity", "message"]),
]:
    names = [r[0] for r in duckdb.sql(f"describe select * from read_parquet('out/{stream}/**/*.parquet')").fetchall()]
    missing = [c for c in cols if c not in names]
    n = duckdb.sql(f"select count(*) from read_parquet('out/{stream}/**/*.parquet')").fetchall()[0][0]
    print(stream, n, ",".join(missing) or "-")
print("dup_ids", duckdb.sql("select count(*) - count(distinct event_id) from read_parquet('out/detections/**/*.parquet')").fetchall()[0][0])
# The entry for 4821-د-33 is added 30 s in: its plate is read before that. No hit exists before the
# entry; at 30 s the earlier reads hit (retroactive), and later reads hit as they come.
print("late_entry_retroactive", duckdb.sql("select count(*) from read_parquet('out/hits/**/*.parquet') where listed_plate = '4821-د-33' and status = 'candidate' and read_time < timestamptz '2026-06-14 20:00:30+00' and event_time >= timestamptz '2026-06-14 20:00:30+00'").fetchall()[0][0])
print("late_entry_early_reads", duckdb.sql("select count(*) from read_parquet('out/plate_reads/**/*.parquet') where plate = '4821-د-33' and event_time < timestamptz '2026-06-14 20:00:30+00'").fetchall()[0][0])
print("late_entry_early_hits", duckdb.sql("select count(*) from read_parquet('out/alerts/**/*.parquet') where kind = 'watchlist' and message like 'plate 4821-د-33 %' and event_time < timestamptz '2026-06-14 20:00:30+00'").fetchall()[0][0])
print("late_entry_later_hits", duckdb.sql("select count(*) from read_parquet('out/alerts/**/*.parquet') where kind = 'watchlist' and message like 'plate 4821-د-33 %' and event_time >= timestamptz '2026-06-14 20:00:30+00'").fetchall()[0][0])
print("ef", duckdb.sql("select count(*) from read_parquet('out/zone_density/**/*.parquet') where zone = 'gate-a' and level in ('E', 'F')").fetchall()[0][0])
"#,
        tmp.path(),
    );
    for line in report.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts[..] {
            ["dup_ids", n] => assert_eq!(n, "0", "event ids are unique"),
            ["late_entry_early_reads", n] | ["late_entry_later_hits", n] | ["late_entry_retroactive", n] => {
                assert!(n.parse::<u32>().unwrap() >= 1, "{line}: {report}")
            }
            ["late_entry_early_hits", n] => {
                assert_eq!(n, "0", "a read before the entry was added hit: {report}")
            }
            ["ef", n] => assert!(n.parse::<u32>().unwrap() >= 1, "the surge reaches level E/F: {report}"),
            [stream, n, missing] => {
                assert!(n.parse::<u64>().unwrap() > 0, "{stream} has no rows: {report}");
                assert_eq!(missing, "-", "{stream} lacks columns {missing}");
            }
            _ => panic!("unexpected line {line}"),
        }
    }
    // pyarrow, a second independent reader, agrees on the row count of the alerts.
    let n = py(
        "import pyarrow.dataset as ds\nprint(ds.dataset('out/alerts', format='parquet').count_rows())",
        tmp.path(),
    );
    let printed = stdout.lines().filter(|l| l.starts_with("ALERT")).count();
    assert_eq!(n.trim().parse::<usize>().unwrap(), printed, "every printed alert is in Parquet");
}

/// Sorted rows of every stream, as text, read back by DuckDB.
fn row_sets(dir: &Path) -> String {
    py(
        r#"
import duckdb, hashlib
for s in ["detections", "plate_reads", "zone_density", "alerts", "late_events"]:
    rows = duckdb.sql(f"select * from read_parquet('out/{s}/**/*.parquet') order by all").fetchall()
    print(s, len(rows), hashlib.sha256(repr(rows).encode()).hexdigest())
"#,
        dir,
    )
}

#[test]
fn same_seed_same_output_across_runs_and_worker_counts() {
    let (a, b, c) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let alerts = |o: &Output| -> BTreeSet<String> {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with("ALERT"))
            .map(str::to_owned)
            .collect()
    };
    let (oa, ob, oc) = (demo(a.path(), 1, 45), demo(b.path(), 1, 45), demo(c.path(), 2, 45));
    assert!(!alerts(&oa).is_empty());
    assert_eq!(alerts(&oa), alerts(&ob), "alert stream differs between runs");
    assert_eq!(alerts(&oa), alerts(&oc), "alert stream differs between 1 and 2 workers");
    let (ra, rb, rc) = (row_sets(a.path()), row_sets(b.path()), row_sets(c.path()));
    assert!(ra.lines().all(|l| !l.contains(" 0 ") || l.starts_with("late_events")), "{ra}");
    assert_eq!(ra, rb, "Parquet rows differ between runs");
    assert_eq!(ra, rc, "Parquet rows differ between 1 and 2 workers");
}

#[test]
fn run_with_a_config_file_and_a_rule_file() {
    let tmp = tempfile::tempdir().unwrap();
    let rule = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql/rules/confident_person.sql");
    std::fs::copy(&rule, tmp.path().join("confident_person.sql")).unwrap();
    let config = tmp.path().join("city.toml");
    std::fs::write(
        &config,
        "[city]\nseed = 7\nfps = 5.0\n\n[sinks]\nout = \"results\"\nground_truth = false\n\n\
         [simulation]\ncameras = 3\npedestrians_per_camera = 4\n\n\
         [[rules]]\npath = \"confident_person.sql\"\n",
    )
    .unwrap();
    let out =
        run(vigil().arg("run").arg("--config").arg(&config).args(["--fast", "--duration", "20", "--quiet"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    // `sinks.out` is relative to the config file; the rule file too.
    assert!(!tmp.path().join("results/ground_truth").exists());
    let report = py(
        "import duckdb\nprint(duckdb.sql(\"select count(*), count(distinct rule), min(cast(split_part(message, 'score=', 2) as double)) from read_parquet('results/alerts/**/*.parquet') where kind = 'rule'\").fetchall()[0])",
        tmp.path(),
    );
    let (n, rules, min_score) = report
        .trim()
        .trim_matches(|c| c == '(' || c == ')')
        .split(", ")
        .map(|x| x.parse::<f64>().unwrap())
        .collect::<Vec<_>>()
        .try_into()
        .map(|v: [f64; 3]| (v[0], v[1], v[2]))
        .unwrap();
    assert!(n > 0.0, "the rule raised no alert: {report}");
    assert_eq!(rules, 1.0, "{report}");
    assert!(min_score > 0.9, "every alert satisfies the rule's WHERE: {report}");
}

#[test]
fn run_with_duration_zero_runs_until_stopped_as_demo_does() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("city.toml");
    std::fs::write(&config, "[city]\nfps = 5.0\n\n[simulation]\ncameras = 2\npedestrians_per_camera = 2\n")
        .unwrap();
    let mut child = vigil()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .args(["--fast", "--duration", "0", "--quiet"])
        .current_dir(tmp.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(child.try_wait().unwrap().is_none(), "vigil run --duration 0 stopped by itself");
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    // Run fast for three seconds: far more than the tenth of a second it used to stop after.
    let simulated: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Ran ")?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no summary: {stdout}"));
    assert!(simulated > 10.0, "{stdout}");
}

fn expect_config_error(toml: &str, line: usize, words: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("city.toml");
    std::fs::write(&path, toml).unwrap();
    let out = run(vigil().arg("run").arg("--config").arg(&path).args(["--fast", "--duration", "1"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let at = format!("{}:{line}:", path.display());
    assert!(stderr.contains(&at), "error does not name {at}: {stderr}");
    assert!(stderr.contains("fix:"), "error gives no fix: {stderr}");
    for w in words {
        assert!(stderr.contains(w), "error lacks {w:?}: {stderr}");
    }
    assert_eq!(stderr.lines().filter(|l| l.starts_with("error")).count(), 1, "one error: {stderr}");
}

#[test]
fn workers_beyond_what_the_config_allows_are_refused_with_the_fix() {
    for args in [
        &["demo", "--fast", "--duration", "1", "--workers", "1000"][..],
        &["bench", "--workers", "0", "--seconds", "1"],
    ] {
        let out = run(vigil().args(args));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("out of range; fix: use 1 to 64 workers"), "{stderr}");
    }
}

#[test]
fn bad_config_unknown_key() {
    expect_config_error("[city]\nfps = 10.0\n\n[sinks]\nout_dir = \"x\"\n", 5, &["out_dir"]);
}

#[test]
fn bad_config_negative_fps() {
    expect_config_error("[city]\nseed = 1\nfps = -10.0\n", 3, &["fps", "above 0"]);
}

#[test]
fn bad_config_short_polygon() {
    expect_config_error(
        "[city]\nfps = 10.0\n\n[[zones]]\nname = \"gate\"\ncamera = 0\npolygon = [[0.0, 0.0], [5.0, 0.0]]\n",
        7,
        &["polygon", "at least 3"],
    );
}

#[test]
fn bad_config_zones_lines_and_density_settings() {
    let zone = "[city]\nfps = 10.0\n\n[[zones]]\nname = \"plaza\"\n";
    let square = "polygon = [[0.0, 0.0], [5.0, 0.0], [5.0, 5.0], [0.0, 5.0]]\n";
    expect_config_error(
        &format!("{zone}camera = 0\ncameras = [0, 1]\n{square}"),
        6,
        &["both camera and cameras"],
    );
    expect_config_error(&format!("{zone}{square}"), 5, &["no camera", "cameras = ["]);
    expect_config_error(&format!("{zone}cameras = [0, 99]\n{square}"), 6, &["camera 99", "0 to 49"]);
    expect_config_error(
        &format!("{zone}camera = 0\n{square}alert_density = 1.0\nclear_density = 1.2\n"),
        9,
        &["clear density 1.2", "below the alert", "flap"],
    );
    let line =
        "[city]\nfps = 10.0\n\n[[lines]]\nname = \"gate\"\ncamera = 0\nfrom = [0.0, 0.0]\nto = [4.0, 0.0]\n";
    expect_config_error(&format!("{line}in_side = [2.0, 0.0]\n"), 9, &["in_side lies on the line"]);
    expect_config_error(
        "[city]\nfps = 10.0\n\n[[lines]]\nname = \"gate\"\ncamera = 70\nfrom = [0.0, 0.0]\nto = [4.0, 0.0]\nin_side = [2.0, 1.0]\n",
        6,
        &["camera 70 does not exist"],
    );
    expect_config_error(
        "[city]\nfps = 10.0\n\n[engine]\ndensity_window_s = 5\ndensity_step_s = 2\n",
        6,
        &["density_step_s = 2 does not divide"],
    );
    expect_config_error("[city]\nfps = 10.0\n\n[engine]\nfusion_radius_m = 0.0\n", 5, &["fusion_radius_m"]);
    expect_config_error("[city]\nfps = 10.0\n\n[simulation]\noverlap = 0\n", 5, &["simulation.overlap"]);
}

#[test]
fn bad_config_psql_address() {
    expect_config_error(
        "[city]\nfps = 10.0\n\n[server]\npg_listen = \"localhost\"\n",
        5,
        &["server.pg_listen", "not an address", "127.0.0.1:6875"],
    );
}

#[test]
fn bad_config_memory_retention() {
    expect_config_error("[city]\nfps = 10.0\n\n[retention]\nmemory_s = -5\n", 5, &["retention.memory_s"]);
    expect_config_error(
        "[city]\nfps = 10.0\n\n[retention]\nmemory_mb = 1\n",
        5,
        &["retention.memory_mb", "16 to"],
    );
}

#[test]
fn bad_rule_unknown_column() {
    expect_config_error(
        "[city]\nfps = 10.0\n\n[[rules]]\nname = \"r\"\nsql = \"SELECT camera_id FROM detections WHERE colour = 'red'\"\n",
        6,
        &["city.toml:6:47:", "rule r", "colour", "not found"],
    );
}

#[test]
fn sigint_leaves_only_complete_readable_files() {
    let tmp = tempfile::tempdir().unwrap();
    let child = vigil()
        .args(["demo", "--duration", "600", "--quiet", "--out"])
        .arg(tmp.path().join("out"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Paced at real time: after a few seconds some windows have closed and files are open.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(4) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Interrupted after"), "{stdout}");
    // No temporary file is left, and every file is complete and readable.
    let mut files = Vec::new();
    for entry in walk(&tmp.path().join("out")) {
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.ends_with(".inprogress"), "partial file left: {}", entry.display());
        if name.ends_with(".parquet") {
            files.push(entry);
        }
    }
    assert!(files.iter().any(|f| f.to_string_lossy().contains("/detections/")), "{files:?}");
    let n = py(
        "import pyarrow.parquet as pq, glob\nprint(sum(pq.read_table(f).num_rows for f in glob.glob('out/**/*.parquet', recursive=True)))",
        tmp.path(),
    );
    assert!(n.trim().parse::<u64>().unwrap() > 0);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

#[test]
fn bad_config_camera_url_with_credentials() {
    expect_config_error(
        "[city]\nfps = 10.0\n\n[[cameras]]\nurl = \"rtsp://admin:hunter22@10.0.0.5/stream1\"\n\n[models.detector]\npath = \"m.onnx\"\nclasses = [\"person\"]\n",
        5,
        &["carries credentials", "password_env"],
    );
}

#[test]
fn bad_config_camera_not_rtsp_and_missing_detector() {
    expect_config_error(
        "[city]\nfps = 10.0\n\n[[cameras]]\nurl = \"http://10.0.0.5/stream1\"\n\n[models.detector]\npath = \"m.onnx\"\nclasses = [\"person\"]\n",
        5,
        &["not an rtsp:// url", "rtsp://host:port/path"],
    );
    expect_config_error(
        "[city]\nfps = 10.0\n\n[[cameras]]\nurl = \"rtsp://10.0.0.5/s\"\n",
        5,
        &["cameras need a detector", "[models.detector]"],
    );
}

#[test]
fn bad_config_detector_batch_and_layout() {
    expect_config_error(
        "[city]\nfps = 10.0\n\n[models.detector]\npath = \"m.onnx\"\nclasses = [\"person\"]\nbatch = 0\n",
        7,
        &["models.detector.batch = 0", "from 1 to 256"],
    );
    expect_config_error(
        "[city]\nfps = 10.0\n\n[models.detector]\npath = \"m.onnx\"\nclasses = [\"person\"]\nlayout = \"v9000\"\n",
        7,
        &["layout", "\"v5\"", "\"ssd\""],
    );
    expect_config_error(
        "[city]\nfps = 10.0\n\n[models.detector]\npath = \"m.onnx\"\nclasses = [\"person\", \"car\"]\nclass_ids = [1]\n",
        7,
        &["class_ids has 1 ids for 2 classes", "class_ids = [1, 3]"],
    );
    expect_config_error(
        "[city]\nfps = 10.0\n\n[models.detector]\npath = \"m.onnx\"\nclasses = [\"person\"]\ninput_size = [300]\n",
        7,
        &["input_size", "from 16 to 4096"],
    );
}

#[test]
fn bad_config_tracker_settings_are_placed() {
    expect_config_error(
        "[city]\nfps = 10.0\n\n[tracker]\nmax_lost_s = 1e9\n",
        5,
        &["tracker.max_lost_s", "from 0 to 600"],
    );
    expect_config_error(
        "[city]\nfps = 10.0\n\n[[cameras]]\nurl = \"rtsp://10.0.0.5/s\"\ntracker = { match_iou = 1.5 }\n\n[models.detector]\npath = \"m.onnx\"\nclasses = [\"person\"]\n",
        6,
        &["cameras[0].tracker.match_iou = 1.5", "from 0 to 1"],
    );
    // An unknown key is placed at the key, and the fix lists the settings there are.
    expect_config_error(
        "[city]\nfps = 10.0\n\n[tracker]\nmax_lost = 30\n",
        5,
        &["max_lost = 30 is not a tracker setting", "max_lost_s", "motion_gate"],
    );
    expect_config_error(
        "[city]\nfps = 10.0\n\n[[cameras]]\nurl = \"rtsp://10.0.0.5/s\"\ntracker = { match_iuo = 0.2 }\n\n[models.detector]\npath = \"m.onnx\"\nclasses = [\"person\"]\n",
        6,
        &["match_iuo", "not a tracker setting", "match_iou"],
    );
}

/// Starts `vigil run` on `toml` and returns its stderr, asserting it refused to start.
fn expect_start_error(toml: &str, envs: &[(&str, &str)]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("city.toml");
    std::fs::write(&path, toml).unwrap();
    let mut cmd = vigil();
    cmd.arg("run").arg("--config").arg(&path).args(["--duration", "1"]).env_remove("VIGIL_CAM_PASSWORD");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = run(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success() && !stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn a_camera_whose_password_is_not_set_names_the_camera_and_the_variable() {
    let e = expect_start_error(
        "[city]\nfps = 10.0\n\n[[cameras]]\nid = 3\nurl = \"rtsp://127.0.0.1:9/cam\"\nuser = \"viewer\"\npassword_env = \"VIGIL_CAM_PASSWORD\"\n\n\
         [models.detector]\npath = \"m.onnx\"\nclasses = [\"person\"]\n",
        &[],
    );
    assert!(
        e.contains("camera 3") && e.contains("$VIGIL_CAM_PASSWORD is not set") && e.contains("fix:"),
        "{e}"
    );
}

#[test]
fn a_missing_detector_model_is_named_with_the_fix() {
    let e = expect_start_error(
        "[city]\nfps = 10.0\n\n[[cameras]]\nurl = \"rtsp://127.0.0.1:9/cam\"\n\n[models.detector]\npath = \"no-such-model.onnx\"\nclasses = [\"person\"]\n",
        &[],
    );
    assert!(e.contains("no-such-model.onnx") && e.contains("check the model path"), "{e}");
}

#[test]
fn bad_config_camera_calibration_on_a_line() {
    expect_config_error(
        "[city]\nfps = 10.0\n\n[models.detector]\npath = \"m.onnx\"\nclasses = [\"person\"]\n\n[[cameras]]\nurl = \"rtsp://10.0.0.5/s\"\n\
         calibration = { image = [[0.0, 0.0], [10.0, 0.0], [20.0, 0.0], [30.0, 0.0]], ground = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]] }\n",
        10,
        &["calibration", "image points 1, 2 and 3 are on one line", "at least 4 image↔ground point pairs"],
    );
}

#[test]
fn a_missing_camera_password_file_is_named_with_the_camera() {
    let e = expect_start_error(
        "[city]\nfps = 10.0\n\n[[cameras]]\nid = 4\nurl = \"rtsp://127.0.0.1:9/cam\"\nuser = \"viewer\"\npassword_file = \"secrets/cam4\"\n\n\
         [models.detector]\npath = \"m.onnx\"\nclasses = [\"person\"]\n",
        &[],
    );
    assert!(e.contains("camera 4: reading the password file") && e.contains("secrets/cam4"), "{e}");
}

#[test]
fn the_plate_command_lists_and_erases_a_plate_in_a_stopped_runs_files() {
    let tmp = tempfile::tempdir().unwrap();
    demo(tmp.path(), 1, 60);
    let out = tmp.path().join("out");
    let count = |plate: &str| {
        py(
            &format!(
                "import duckdb\nprint(duckdb.sql(\"select count(*) from read_parquet('out/**/*.parquet', union_by_name = true, \
                 filename = true) where (plate = '{plate}' or listed_plate = '{plate}') \
                 and filename not like '%/reference/%' and filename not like '%/catalog/%'\").fetchall()[0][0])"
            ),
            tmp.path(),
        )
        .trim()
        .parse::<i64>()
        .unwrap()
    };
    // The demo's listed plate passes every 5 s: reads and (unconfirmed) hits.
    let before = count("12345-ب-6");
    assert!(before >= 10, "{before} rows of the plate");
    let other = count("4821-د-33");
    // The CLI logs in like psql: the demo's one account (an admin), its password in
    // VIGIL_PASSWORD. A wrong password or an analyst is refused, and nothing is erased.
    let admin = |cmd: &mut Command| {
        run(cmd.env("VIGIL_PG_PASSWORD", "admin-pw-1234").env("VIGIL_PASSWORD", "admin-pw-1234"))
    };
    // With neither password set, one error names both variables.
    let neither = run(vigil()
        .args(["plate", "erase", "12345-B-6", "--out"])
        .arg(&out)
        .env_remove("VIGIL_PG_PASSWORD")
        .env_remove("VIGIL_PASSWORD"));
    let said = String::from_utf8_lossy(&neither.stderr);
    assert!(
        !neither.status.success()
            && said.contains("set VIGIL_PASSWORD to vigil's password")
            && said.contains("and VIGIL_PG_PASSWORD to the same password"),
        "{said}"
    );
    let wrong = run(vigil()
        .args(["plate", "erase", "12345-B-6", "--out"])
        .arg(&out)
        .env("VIGIL_PG_PASSWORD", "admin-pw-1234")
        .env("VIGIL_PASSWORD", "not-the-password"));
    let said = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success() && said.contains("wrong password for vigil"), "{said}");
    let config = tmp.path().join("city.toml");
    std::fs::write(
        &config,
        "[city]\nfps = 5.0\n\n[[users]]\nname = \"amina\"\nrole = \"analyst\"\npassword_env = \"PW_AMINA\"\n",
    )
    .unwrap();
    let analyst = run(vigil()
        .args(["plate", "erase", "12345-B-6", "--user", "amina", "--out"])
        .arg(&out)
        .arg("--config")
        .arg(&config)
        .env("PW_AMINA", "amina-pw-123")
        .env("VIGIL_PASSWORD", "amina-pw-123"));
    let said = String::from_utf8_lossy(&analyst.stderr);
    assert!(
        !analyst.status.success() && said.contains("amina's role is analyst; only admins and auditors"),
        "{said}"
    );
    assert_eq!(count("12345-ب-6"), before, "a refused request erased rows");
    // The admin hands plate reads to someone as they are, and tracks pseudonymized.
    for (stream, dir, pseudonymize) in
        [("plate_reads", "export-reads", false), ("tracks", "export-tracks", true)]
    {
        let mut cmd = vigil();
        cmd.current_dir(tmp.path()).args(["export", "--stream", stream, "--out", dir, "--lake", "out"]);
        cmd.args(["--from", "2026-06-14T20:00:00Z", "--to", "2026-06-14T21:00:00Z", "--purpose", "a study"]);
        if pseudonymize {
            cmd.arg("--pseudonymize");
        }
        let done = admin(&mut cmd);
        assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    }
    let shown = admin(vigil().args(["plate", "show", "12345-B-6", "--out"]).arg(&out));
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success() && text.contains("parquet plate_reads"), "{text}");
    let n_of = |text: &str, what: &str, place: &str| -> i64 {
        let line = text.lines().find(|l| l.starts_with(what) && l.contains(place));
        line.and_then(|l| l.split("  ").filter(|f| !f.trim().is_empty()).nth(2))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(-1)
    };
    let reads = n_of(&text, "reads", "parquet plate_reads");
    assert!(reads >= 5, "{text}");
    // The plain export holds every read the lake held; the pseudonymized one only tokens.
    let export = format!("export {}", tmp.path().join("export-reads").canonicalize().unwrap().display());
    assert_eq!(n_of(&text, "exports", &export), reads, "{text}");
    assert!(text.contains("tell its recipients") && text.contains("1 pseudonymized: tokens only"), "{text}");
    let erased = admin(vigil().args(["plate", "erase", "12345 | ب | 6", "--out"]).arg(&out));
    assert!(erased.status.success(), "{}", String::from_utf8_lossy(&erased.stderr));
    // An export is outside the lake: the erasure leaves it, and says whom to tell.
    let said = String::from_utf8_lossy(&erased.stdout);
    assert_eq!(n_of(&said, "exports", &export), reads, "{said}");
    // No hit was confirmed: nothing of the plate is left (but its watchlist entry), and nothing
    // of another plate went.
    assert_eq!(count("12345-ب-6"), 0, "{}", String::from_utf8_lossy(&erased.stdout));
    // The entry stays where the run loaded it from its configuration: only DELETE FROM
    // watchlist takes it off.
    assert_eq!(n_of(&said, "watchlist", "memory and catalog"), 1, "{said}");
    assert!(said.contains("stolen-vehicle report DGSN-2026-00118"), "{said}");
    let loaded = py(
        "import duckdb\nprint(duckdb.sql(\"select count(*) from read_parquet('out/reference/watchlist-*.parquet') \
         where plate = '12345-ب-6'\").fetchall()[0][0])",
        tmp.path(),
    );
    assert_eq!(loaded.trim(), "1", "the watchlist entry left the run's reference files");
    assert_eq!(count("4821-د-33"), other);
    let verify = admin(vigil().args(["audit", "verify", "--out"]).arg(&out));
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    let audit = std::fs::read_to_string(out.join("audit/audit.log")).unwrap();
    assert!(
        audit.contains("\"action\":\"plate.show\"") && audit.contains("\"action\":\"plate.erase\""),
        "{audit}"
    );
}

/// `vigil render --anpr` writes the frames an RTSP test server streams and their truth, one
/// line per frame; a bad size or camera is refused with the fix.
#[test]
fn render_writes_frames_and_their_truth_and_refuses_a_bad_size() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("anpr.rgb");
    // One camera, so that the listed plate passes it from frame 0.
    let config = dir.path().join("city.toml");
    std::fs::write(&config, "[city]\nfps = 10.0\n\n[simulation]\ncameras = 1\nplates = [\"12345-ب-6\"]\n")
        .unwrap();
    let o = run(vigil()
        .args(["render", "--anpr", "--frames", "60", "--size", "640x360", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&out));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 60 * 640 * 360 * 3);
    let truth = std::fs::read_to_string(dir.path().join("anpr.truth.jsonl")).unwrap();
    assert_eq!(truth.lines().count(), 60);
    // In the ANPR view, only vehicles, each with its plate.
    let boxes: Vec<serde_json::Value> =
        truth.lines().flat_map(|l| serde_json::from_str::<Vec<serde_json::Value>>(l).unwrap()).collect();
    assert!(boxes.iter().all(|b| b["class"] == "car" && b["plate"].is_string()), "{boxes:?}");
    let listed = boxes.iter().filter(|b| b["plate"] == "12345-ب-6").count();
    assert!(listed >= 10, "the listed vehicle is drawn on {listed} frames");
    for (args, words) in [
        (["--size", "1280by720", "--camera", "0"], "--size \"1280by720\": not WIDTHxHEIGHT"),
        (["--size", "640x360", "--camera", "999"], "--camera 999: the city has cameras 0 to"),
    ] {
        let o = run(vigil().args(["render", "--out"]).arg(&out).args(args));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(words) && err.contains("fix:"), "{err}");
    }
}

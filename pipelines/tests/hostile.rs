//! The hostile-input suite: what a careless or hostile user sends, against a running city with
//! the real `psql` and raw TCP sockets. Each case asserts that the engine stays up (or, for a
//! sink failure, stops loudly naming the cause), that other rules keep producing, and that the
//! rows it accepted are all in readable Parquet afterwards.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

const PASSWORD: &str = "test-only-password";

fn config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("city.toml");
    std::fs::write(
        &path,
        format!(
            "[city]\nseed = 7\nfps = 5.0\n\n[sinks]\nout = \"out\"\npartition_s = 60\ncommit_s = 2\nground_truth = false\n\n\
             [server]\nmax_connections = 16\nauth_timeout_s = 2\nquery_memory_mb = 64\nquery_timeout_s = 4\n\n\
             [simulation]\ncameras = 4\npedestrians_per_camera = 10\nvehicles_per_minute = 4\nlaggy_camera_every = 0\n\n\
             [[zones]]\nname = \"gate\"\ncamera = 0\npolygon = [[10.0, 4.0], [30.0, 4.0], [30.0, 16.0], [10.0, 16.0]]\n\n\
             [[rules]]\nname = \"persons\"\nsql = \"SELECT camera_id, event_time, event_id FROM detections WHERE class = 'person'\"\n{extra}"
        ),
    )
    .unwrap();
    path
}

/// A paced city running until stopped, serving psql; its stderr is kept for the log checks.
struct City {
    child: Child,
    port: u16,
    log: Arc<Mutex<String>>,
    dir: PathBuf,
}

impl City {
    fn start(dir: &Path, extra: &str) -> City {
        let cfg = config(dir, extra);
        let (child, port, log) = common::spawn_listening(
            Command::new(env!("CARGO_BIN_EXE_vigil"))
                .args(["run", "--config", cfg.to_str().unwrap(), "--quiet", "--pg-listen", "127.0.0.1:0"])
                .env("VIGIL_PG_PASSWORD", PASSWORD)
                .env("VIGIL_LOG", "warn,vigil_sql=info")
                .current_dir(dir)
                .stdout(Stdio::piped()),
        );
        City { child, port, log, dir: dir.to_owned() }
    }

    fn psql(&self, sql: &str) -> Result<String, String> {
        common::psql_try(self.port, PASSWORD, sql)
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    fn wait_log(&self, needle: &str, within: Duration) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < within {
            if self.log.lock().unwrap().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// SIGTERM; returns (exit code, stdout).
    fn stop(mut self) -> (Option<i32>, String) {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        let mut out = String::new();
        self.child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let status = self.child.wait().unwrap();
        (status.code(), out)
    }
}

/// Detections in the summary line (`... events (detections N, ...)`).
fn detections_in_summary(out: &str) -> u64 {
    let at = out.find("detections ").expect("summary names detections");
    out[at + 11..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
}

fn parquet_count(dir: &Path, stream: &str) -> u64 {
    let rows = common::duckdb(&format!(
        "SELECT count(*), count(DISTINCT event_id) FROM read_parquet('{}/out/{stream}/**/*.parquet')",
        dir.display()
    ));
    assert_eq!(rows[0][0], rows[0][1], "{stream}: duplicate event ids");
    rows[0][0].parse().unwrap()
}

#[test]
fn hostile_psql_input_leaves_the_engine_up_and_loses_no_accepted_row() {
    let dir = tempfile::tempdir().unwrap();
    let mut city = City::start(dir.path(), "");
    std::thread::sleep(Duration::from_secs(3));
    let rss0 = city.rss_mb();

    // Deep and long statements are refused with a message, not a stack overflow.
    let sum = format!("SELECT {}", vec!["1"; 1_000].join("+"));
    let e = city.psql(&sum).unwrap_err();
    assert!(e.contains("nest more than 256 levels"), "{e}");
    let ors = (0..700).map(|i| format!("camera_id = {i}")).collect::<Vec<_>>().join(" OR ");
    let e = city.psql(&format!("CREATE RULE many_ors AS SELECT * FROM detections WHERE {ors}")).unwrap_err();
    assert!(e.contains("nest more than"), "{e}");
    let e = city.psql(&format!("SELECT {}", vec!["1"; 40_000].join(","))).unwrap_err();
    assert!(e.contains("KiB long"), "{e}");
    // 40 nested `NOT (`: a minute of the parser's CPU before it was checked on the tokens.
    let e = city.psql(&format!("SELECT {}true{}", "NOT (".repeat(40), ")".repeat(40))).unwrap_err();
    assert!(e.contains("more than 8 brackets after NOT"), "{e}");
    assert!(city.alive(), "a deep statement took the engine down");

    // A cross join of a stream with itself: stopped by its memory pool or its time limit.
    let t0 = Instant::now();
    let e = city
        .psql("SELECT a.event_id, b.event_id, c.event_id FROM detections a, detections b, detections c")
        .unwrap_err();
    assert!(e.contains("needs more than 64 MiB") || e.contains("ran longer than 4 s"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(20), "the query was not stopped in time");
    assert!(city.rss_mb() < rss0 + 400.0, "memory grew from {rss0:.0} to {:.0} MB", city.rss_mb());

    // A client that goes away stops its query.
    let mut client = Command::new("psql")
        .args(["-X", "-h", "127.0.0.1", "-p", &city.port.to_string(), "-U", "vigil", "-d", "vigil"])
        .args([
            "-c",
            "SELECT count(*) FROM detections a, detections b, detections c, detections d \
             WHERE a.score + b.score + c.score + d.score > 100",
        ])
        .env("PGPASSWORD", PASSWORD)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1_500));
    client.kill().unwrap();
    client.wait().unwrap();
    assert!(
        city.wait_log("went away: its query was stopped", Duration::from_secs(3)),
        "{}",
        city.log.lock().unwrap()
    );

    // Rules whose state or work would exhaust the machine are refused with the estimate.
    let e = city
        .psql(
            "CREATE RULE self_join AS SELECT a.event_id, b.event_id FROM detections a JOIN detections b \
             ON a.class = b.class AND b.event_time BETWEEN a.event_time AND a.event_time + INTERVAL '5 minutes'",
        )
        .unwrap_err();
    assert!(e.contains("rule self_join: the rule would") && e.contains("rows/s"), "{e}");
    let e = city
        .psql(
            "CREATE RULE fine_hop AS SELECT camera_id, count(*) FROM detections \
             GROUP BY hop(event_time, INTERVAL '1 millisecond', INTERVAL '1 hour'), camera_id",
        )
        .unwrap_err();
    assert!(e.contains("each row falls in 3600000 windows"), "{e}");

    // Names: one quoting rule; streams' names and unsafe names refused; quoted names dropped.
    for bad in ["\"a b\"", "\"x; DROP RULE c1; --\"", "detections", "late_events", "\"a/b\""] {
        let e = city.psql(&format!("CREATE RULE {bad} AS SELECT * FROM detections")).unwrap_err();
        assert!(e.contains("not a rule name") || e.contains("name of a stream"), "{bad}: {e}");
    }
    city.psql("CREATE RULE \"Gate_A\" AS SELECT camera_id FROM detections").unwrap();
    city.psql("CREATE RULE Gate_B AS SELECT camera_id FROM detections").unwrap();
    let rules = city.psql("SHOW RULES").unwrap();
    assert!(rules.contains("Gate_A|") && rules.contains("gate_b|"), "{rules}");
    city.psql("DROP RULE \"Gate_A\"; DROP RULE GATE_B").unwrap();
    let rules = city.psql("SHOW RULES").unwrap();
    assert!(!rules.contains("Gate_A") && !rules.contains("gate_b") && rules.contains("persons|"), "{rules}");

    // Idle sockets: at most 16 held, each closed after the 2 s login timeout.
    let socks: Vec<TcpStream> =
        (0..40).filter_map(|_| TcpStream::connect(("127.0.0.1", city.port)).ok()).collect();
    std::thread::sleep(Duration::from_millis(3_000));
    let closed = socks
        .iter()
        .filter(|s| {
            s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            matches!((&**s).read(&mut [0u8; 16]), Ok(0) | Err(_))
        })
        .count();
    assert_eq!(closed, 40, "idle connections still held after the login timeout");
    assert!(city.wait_log("connections are open (server.max_connections)", Duration::from_secs(1)));
    assert!(city.wait_log("not logged in within 2 s", Duration::from_secs(1)));

    // Wrong passwords: logged and answered more slowly each time.
    let mut last = Duration::ZERO;
    for _ in 0..4 {
        let t0 = Instant::now();
        assert!(common::psql_try(city.port, "wrong-password", "SELECT 1").is_err());
        last = t0.elapsed();
    }
    assert!(last >= Duration::from_millis(1_900), "the 4th wrong password was answered in {last:?}");
    assert!(
        city.wait_log(
            "psql login failed (source 127.0.0.1, user vigil): 4 failure(s)",
            Duration::from_secs(1)
        )
    );

    // Still up, still serving, the configured rule still producing.
    assert!(city.alive());
    let n: u64 = city.psql("SELECT count(*) FROM persons").unwrap().trim().parse().unwrap();
    assert!(n > 0, "the configured rule stopped producing");
    let dir = city.dir.clone();
    let (code, out) = city.stop();
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(parquet_count(&dir, "detections"), detections_in_summary(&out), "{out}");
}

/// The paced demo killed with SIGKILL at 10 random moments: every detection older than the
/// commit interval (5 s by default) plus one second is in readable Parquet. The reference is
/// the same demo run to completion (its simulator is seeded): its detections up to that age
/// must all be there, with the same ids.
#[test]
fn sigkill_of_the_paced_demo_loses_at_most_the_commit_interval() {
    let dir = tempfile::tempdir().unwrap();
    common::vigil(&["demo", "--fast", "--duration", "25", "--out", "out", "--quiet"], dir.path());
    let mut rng = 0x2545F4914F6CDD1Du64;
    for trial in 0..10 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let after = Duration::from_millis(7_000 + rng % 9_000);
        let out = format!("killed{trial}");
        let (mut child, start_ms, fed, _) =
            feeding(dir.path(), &["demo", "--duration", "60", "--out", &out, "--quiet"], &[]);
        std::thread::sleep(after);
        let ran_ms = fed.elapsed().as_millis() as i64;
        child.kill().unwrap();
        child.wait().unwrap();
        let bound = start_ms + ran_ms - 6_000;
        let d = dir.path().display();
        // When a row was accepted: its frame's delivery, at most 80 ms after capture, and up to
        // 8 s for the demo's laggy cameras (every 10th: `simulation.laggy_camera_every`).
        let accepted = "epoch_ms(event_time) + CASE WHEN camera_id % 10 = 9 THEN 8000 ELSE 80 END";
        let expected = common::duckdb(&format!(
            "SELECT count(*) FROM read_parquet('{d}/out/detections/**/*.parquet') WHERE {accepted} <= {bound}"
        ));
        let missing = common::duckdb(&format!(
            "SELECT count(*) FROM read_parquet('{d}/out/detections/**/*.parquet') r \
             WHERE {accepted} <= {bound} AND r.event_id NOT IN \
             (SELECT event_id FROM read_parquet('{d}/{out}/detections/**/*.parquet'))"
        ));
        assert!(expected[0][0].parse::<u64>().unwrap() > 0, "trial {trial}: nothing old enough to check");
        assert_eq!(missing[0][0], "0", "trial {trial} (killed after {ran_ms} ms): detections lost");
    }
}

/// Spawns `vigil args` (a paced run) and waits for its feed to start; returns the child, the
/// event time of the first frame, when that was, and the rest of its log (as it comes).
fn feeding(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> (Child, i64, Instant, Arc<Mutex<String>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .env("VIGIL_LOG", "warn,vigil::run=info")
        .envs(envs.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let (start_ms, _) = common::read_until(&mut stderr, "feeding from event time ");
    let start_ms: i64 = start_ms.parse().unwrap();
    let fed = Instant::now();
    let log = Arc::new(Mutex::new(String::new()));
    common::keep_reading(stderr, Arc::clone(&log));
    (child, start_ms, fed, log)
}

/// `vigil run` of the test city for a minute into `out`.
fn run_args<'a>(cfg: &'a Path, out: &'a str) -> [&'a str; 8] {
    ["run", "--config", cfg.to_str().unwrap(), "--duration", "60", "--out", out, "--quiet"]
}

/// A panic in a worker (injected: debug builds read VIGIL_FAULT_PANIC_AFTER_MS) ends the run
/// with a non-zero exit naming the panic's place, and what was accepted before it is in
/// readable Parquet.
#[test]
fn a_worker_panic_is_reported_with_its_place_and_loses_no_committed_row() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    common::vigil(
        &["run", "--config", cfg.to_str().unwrap(), "--fast", "--duration", "12", "--out", "out", "--quiet"],
        dir.path(),
    );
    let (mut child, start_ms, _, log) =
        feeding(dir.path(), &run_args(&cfg, "panicked"), &[("VIGIL_FAULT_PANIC_AFTER_MS", "5000")]);
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "the run did not end after the panic");
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_millis(200));
    let log = log.lock().unwrap().clone();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(
        log.contains("timely:work-0 panicked at engine/src/runtime.rs") && log.contains("injected fault"),
        "{log}"
    );
    let missing = common::duckdb(&format!(
        "SELECT count(*) FROM read_parquet('{d}/out/detections/**/*.parquet') r \
         WHERE epoch_ms(r.event_time) <= {b} AND r.event_id NOT IN \
         (SELECT event_id FROM read_parquet('{d}/panicked/detections/**/*.parquet'))",
        d = dir.path().display(),
        b = start_ms + 5_000 - 3_000
    ));
    assert_eq!(missing[0][0], "0", "{log}");
}

/// A stream's directory that cannot be written for a while (a full disk, a volume gone) does
/// not stop the run: the log names the sink, the cause and the fix, the rows wait in memory,
/// and when the directory is back they are committed: no row lost, none twice.
#[test]
fn a_sink_that_cannot_write_for_a_while_holds_its_rows_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let (mut child, _, _, log) = feeding(
        dir.path(),
        &run_args(&cfg, "out"),
        &[("VIGIL_LOG", "warn,vigil::run=info,vigil::sink=info")],
    );
    let wait_for = |what: &str, secs: u64| {
        let t0 = Instant::now();
        while !log.lock().unwrap().contains(what) {
            assert!(
                t0.elapsed() < Duration::from_secs(secs),
                "no {what:?} in the log:\n{}",
                log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // Once something is committed, the stream's directory becomes a file: every new file and
    // commit there fails.
    let d = dir.path().join("out/detections");
    let t0 = Instant::now();
    while common::parquet_names(&d).is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(30), "nothing committed:\n{}", log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
    let moved = dir.path().join("out/detections.moved");
    std::fs::rename(&d, &moved).unwrap();
    std::fs::write(&d, b"not a directory").unwrap();
    wait_for("detections: cannot write: ", 20);
    // A few seconds of the city go by with the directory broken; the run goes on.
    std::thread::sleep(Duration::from_secs(4));
    assert!(child.try_wait().unwrap().is_none(), "the run stopped:\n{}", log.lock().unwrap());
    std::fs::remove_file(&d).unwrap();
    std::fs::rename(&moved, &d).unwrap();
    wait_for("detections: writing again after ", 30);
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let log = log.lock().unwrap().clone();
    // 130: a run with a duration stopped early by the signal, cleanly (2 would be a failure).
    assert_eq!(status.code(), Some(130), "{log}");
    let failed = log.lines().find(|l| l.contains("detections: cannot write: ")).unwrap();
    assert!(
        failed.contains("vigil::sink")
            && failed.contains("Not a directory")
            && failed.contains("fix: free space")
    );
    // Every frame of the run is there once: no second without frames (the outage's were held
    // and written), no event twice.
    let rows = common::duckdb(&format!(
        "WITH f AS (SELECT DISTINCT epoch_ms(event_time) t FROM read_parquet('{d}/**/*.parquet') WHERE camera_id = 0), \
              g AS (SELECT t - lag(t) OVER (ORDER BY t) gap FROM f) \
         SELECT (SELECT count(*) FROM read_parquet('{d}/**/*.parquet')), \
                (SELECT count(DISTINCT event_id) FROM read_parquet('{d}/**/*.parquet')), \
                (SELECT max(gap) FROM g), (SELECT max(t) - min(t) FROM f)",
        d = d.display()
    ));
    assert_eq!(rows[0][0], rows[0][1], "rows written twice: {rows:?}");
    let (gap, span): (i64, i64) = (rows[0][2].parse().unwrap(), rows[0][3].parse().unwrap());
    assert!(gap <= 1_000, "a gap of {gap} ms in camera 0's frames: {rows:?}\n{log}");
    assert!(span >= 8_000, "the run's frames span {span} ms: {rows:?}");
}

/// A rule admitted while the stream is quiet, whose state outgrows its budget when a crowd
/// arrives, is stopped while the city runs: `SHOW RULES` says why and shows its rows released;
/// the other rules and queries go on, and DROP RULE removes it.
#[test]
fn a_rule_that_outgrows_its_budget_at_run_time_is_stopped_and_its_memory_released() {
    let dir = tempfile::tempdir().unwrap();
    let city = City::start(
        dir.path(),
        "\n[engine]\nrule_max_rows = 20000\n\n\
         [simulation.surge]\nzone = \"gate\"\nat_s = 14.0\nramp_s = 3.0\nhold_s = 60.0\npeople = 600\n",
    );
    std::thread::sleep(Duration::from_secs(4));
    // Admitted: camera 0's share of the detections, remembered 60 s, is a few thousand rows.
    city.psql(
        "CREATE RULE cam0 WITH (retention = '60 seconds') AS \
         SELECT DISTINCT camera_id, event_id FROM detections WHERE camera_id = 0",
    )
    .unwrap();
    let held = |rules: &str| -> Option<(String, i64)> {
        let line = rules.lines().find(|l| l.starts_with("cam0|"))?;
        let cols: Vec<&str> = line.split('|').collect();
        Some((cols[5].to_owned(), cols[6].parse().ok()?))
    };
    std::thread::sleep(Duration::from_secs(3));
    let (state, rows) = held(&city.psql("SHOW RULES").unwrap()).expect("cam0 listed");
    assert!(state == "running" && rows > 0, "{state} {rows}");
    // The crowd arrives at 14 s: camera 0 then sees hundreds of people per frame.
    let t0 = Instant::now();
    let (state, rows) = loop {
        let (state, rows) = held(&city.psql("SHOW RULES").unwrap()).expect("cam0 listed");
        if state != "running" {
            break (state, rows);
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "cam0 was never stopped");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(state.starts_with("stopped: it held") && state.contains("over its budget of 20000"), "{state}");
    // Its dataflow is dropped: the rows it held are released (the gauge returns to 0).
    let t0 = Instant::now();
    let mut rows = rows;
    while rows != 0 && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(200));
        rows = held(&city.psql("SHOW RULES").unwrap()).unwrap().1;
    }
    assert_eq!(rows, 0, "cam0's state was not released");
    assert!(
        city.wait_log("rule=cam0", Duration::from_secs(1)) || city.wait_log("cam0", Duration::from_secs(1))
    );
    // The others go on.
    // (Its newest row, not its count: a rule's kept output is capped at the same budget.)
    let newest = || city.psql("SELECT max(event_time) FROM persons").unwrap().trim().to_owned();
    // Polled rather than timed: on a loaded 2-core CI machine the surge can hold the city a
    // few seconds behind the wall clock, which is not what this test is about.
    let before = newest();
    let t0 = Instant::now();
    let mut after = newest();
    while after <= before && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(500));
        after = newest();
    }
    assert!(
        after > before,
        "the configured rule stopped producing ({before} then {after}): {}",
        city.psql("SHOW RULES").unwrap()
    );
    city.psql("DROP RULE cam0").unwrap();
    assert!(!city.psql("SHOW RULES").unwrap().contains("cam0|"));
    let (code, out) = city.stop();
    assert_eq!(code, Some(0), "{out}");
}

/// Under a 256-file limit, 300 idle connections cannot take the sinks' descriptors: the
/// endpoint holds fewer (logged), and every accepted row is written.
#[test]
fn idle_connections_never_take_the_sinks_file_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    // The default limit of 64 psql connections, more than 256 descriptors leave room for; and
    // HTTP bounded to 8 connections.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("max_connections = 16", "max_connections = 64\nhttp_max_connections = 8");
    std::fs::write(&cfg, text).unwrap();
    let mut child = Command::new("prlimit")
        .args(["--nofile=256:256", env!("CARGO_BIN_EXE_vigil")])
        .args([
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--duration",
            "15",
            "--quiet",
            "--pg-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .env("VIGIL_PG_PASSWORD", PASSWORD)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let (port, log) = common::read_until(&mut stderr, "psql endpoint listening on 127.0.0.1:");
    let port: u16 = port.parse().unwrap();
    assert!(log.contains("server.max_connections = 64 lowered to 16"), "{log}");
    let socks: Vec<TcpStream> =
        (0..300).filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok()).collect();
    assert!(socks.len() > 250, "the listener's backlog took {} connections", socks.len());
    // HTTP: 300 idle connections more; the 8 it serves hold their slots, and a new client is
    // told 503 with when to retry, then served once they close.
    let http = match common::http_address_in(&log) {
        Some(address) => address,
        None => common::read_until(&mut stderr, "http endpoint listening on ").0,
    };
    let ask = || {
        let mut c = TcpStream::connect(&http).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // A connection closed unanswered may refuse the request: the answer is then empty.
        let _ = c.write_all(b"GET /metrics HTTP/1.1\r\nHost: vigil\r\nConnection: close\r\n\r\n");
        let mut answer = String::new();
        let _ = c.read_to_string(&mut answer);
        answer
    };
    let idle: Vec<TcpStream> = (0..300).filter_map(|_| TcpStream::connect(&http).ok()).collect();
    // The storm's own refusals are told first (8 at a time; past those, connections are closed
    // unanswered, so their descriptors go at once); then a newcomer is told.
    let busy = (0..50)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            ask()
        })
        .find(|a| !a.is_empty())
        .unwrap_or_default();
    assert!(busy.starts_with("HTTP/1.1 503") && busy.contains("Retry-After: 5"), "{busy}");
    drop(idle);
    let served = (0..50)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            ask()
        })
        .find(|a| !a.starts_with("HTTP/1.1 503"))
        .unwrap_or_default();
    assert!(served.starts_with("HTTP/1.1 401"), "served again, and a login is still asked: {served}");
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let mut rest = String::new();
    let _ = stderr.read_to_string(&mut rest);
    let status = child.wait().unwrap();
    drop(socks);
    assert!(status.success(), "{out}\n{log}{rest}");
    // The storm's psql refusals are logged with their count, a line per 10 s at most (the run
    // is 15 s), not a line each.
    let refusals = format!("{log}{rest}").matches("psql connection refused").count();
    assert!(refusals <= 2, "{refusals} refusal lines:\n{log}{rest}");
    assert!(!rest.contains("Too many open files") || !rest.contains("ParquetSink"), "{rest}");
    assert!(!out.contains("Errors:"), "{out}");
    assert_eq!(parquet_count(dir.path(), "detections"), detections_in_summary(&out), "{out}");
}

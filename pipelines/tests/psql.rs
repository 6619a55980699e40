//! The analyst's path, driven with the real `psql` client (Debian's postgresql-client) against
//! a running simulated city: password authentication, CREATE RULE, SUBSCRIBE receiving rows
//! while the city runs, SHOW RULES, EXPLAIN RULE, ad-hoc SELECT, errors that leave the engine
//! and the other rules running, DROP RULE, and rules restored after a restart.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

const PASSWORD: &str = "test-only-password";

/// A paced demo city serving psql on a free port.
struct City {
    child: Child,
    port: u16,
    /// What the city has written on stderr so far.
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl City {
    fn start(dir: &Path, seconds: u32) -> City {
        let seconds = seconds.to_string();
        City::start_with(dir, &["demo", "--duration", &seconds], &[("VIGIL_PG_PASSWORD", PASSWORD)])
    }

    /// `vigil <args> --out city --quiet --pg-listen 127.0.0.1:0` with `env`.
    fn start_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> City {
        let (child, port, log) = common::spawn_listening(
            Command::new(env!("CARGO_BIN_EXE_vigil"))
                .args(args)
                .args(["--out", "city", "--quiet", "--pg-listen", "127.0.0.1:0"])
                .envs(env.iter().copied())
                .current_dir(dir)
                .stdout(Stdio::null()),
        );
        City { child, port, log }
    }

    /// `cmd` (psql, or a wrapper whose next argument is psql) with the connection arguments.
    fn connect(&self, mut cmd: Command, user: &str) -> Command {
        cmd.args(["-X", "-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", user, "-d", "vigil"]);
        cmd
    }

    fn psql(&self, sql: &str) -> Output {
        self.psql_as("vigil", PASSWORD, sql)
    }

    fn psql_as(&self, user: &str, password: &str, sql: &str) -> Output {
        self.connect(Command::new("psql"), user)
            .args(["-A", "-F", "|"])
            .args(["-c", sql])
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null())
            .output()
            .expect("psql runs (scripts/test installs postgresql-client)")
    }

    /// The rows `user` reads with `sql`, which must succeed.
    fn rows_as(&self, user: &str, password: &str, sql: &str) -> Vec<Vec<String>> {
        let out = self.psql_as(user, password, sql);
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        rows(&String::from_utf8_lossy(&out.stdout))
    }

    /// `sql`'s output once `done` holds of it, or its last output after `secs` seconds.
    fn ok_until(&self, sql: &str, secs: u64, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let out = self.ok(sql);
            if done(&out) || Instant::now() > deadline {
                return out;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The first non-empty answer `user` gets to `sql` within 40 s.
    fn wait_rows_as(&self, user: &str, password: &str, sql: &str) -> Vec<Vec<String>> {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let r = self.rows_as(user, password, sql);
            if !r.is_empty() {
                return r;
            }
            assert!(Instant::now() < deadline, "nothing for {sql}");
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Waits (up to 60 s) for detections at or after `at`: the rows before it no longer change
    /// (cameras lag by a few seconds).
    fn detections_until(&self, at: &str) {
        let sql = format!("SELECT count(*) FROM detections WHERE event_time >= TIMESTAMP '{at}'");
        self.ok_until(&sql, 60, |out| out.lines().nth(1).is_some_and(|n| n.trim() != "0"));
    }

    fn ok(&self, sql: &str) -> String {
        let out = self.psql(sql);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{sql}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        stdout
    }

    fn fails(&self, sql: &str) -> String {
        let out = self.psql(sql);
        assert!(!out.status.success(), "{sql} should fail: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `SUBSCRIBE` through psql (unbuffered, as on a terminal): the first `n` lines.
    fn subscribe(&self, rule: &str, n: usize) -> Vec<String> {
        let mut stdbuf = Command::new("stdbuf");
        stdbuf.args(["-o0", "psql"]);
        let mut child = self
            .connect(stdbuf, "vigil")
            .args(["-c", &format!("SUBSCRIBE {rule}")])
            .env("PGPASSWORD", PASSWORD)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("psql runs");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(40);
        let mut lines = Vec::new();
        while lines.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => lines.push(l),
                Err(_) => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        lines
    }

    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let _ = self.child.wait();
    }

    /// SIGKILL: nothing is flushed or closed.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_analyst_creates_subscribes_to_and_drops_rules_from_psql() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let city = City::start(tmp.path(), 120);

    // No anonymous access, and a wrong password is refused.
    let denied = city.psql_as("vigil", "not-the-password", "SHOW RULES");
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("authentication failed"), "{denied:?}");

    city.ok("CREATE RULE busy_cameras WITH (severity = 'high') AS \
         SELECT camera_id, window_end, count(*) AS detections FROM detections \
         GROUP BY tumble(event_time, INTERVAL '2 seconds'), camera_id");
    city.ok("CREATE RULE keep_me AS SELECT camera_id, plate FROM plate_reads WHERE plate IS NOT NULL");
    let rules = city.ok("SHOW RULES");
    assert!(rules.contains("busy_cameras|high|"), "{rules}");
    assert!(rules.contains("keep_me|medium|"), "{rules}");
    assert!(rules.contains("unreadable_plate|"), "the configured rule is listed too: {rules}");

    // SUBSCRIBE streams rows while the city runs: time, diff, then the rule's columns.
    let rows = city.subscribe("busy_cameras", 60);
    assert!(rows.len() >= 60, "only {} rows arrived: {rows:?}", rows.len());
    let mut windows = std::collections::BTreeSet::new();
    for r in &rows {
        let f: Vec<&str> = r.split('\t').collect();
        assert_eq!(f.len(), 5, "{r}");
        assert_eq!(f[1], "1", "closed windows are insertions: {r}");
        assert!(f[2].parse::<u32>().is_ok_and(|c| c < 50), "camera id: {r}");
        assert!(f[4].parse::<u64>().is_ok_and(|n| n > 0), "a positive count: {r}");
        windows.insert(f[3].to_owned());
    }
    assert!(windows.len() >= 2, "rows of successive windows arrive as they close: {windows:?}");

    // The analysts' own rule, plate reads against the watchlist, is admitted on the plate
    // reads' rate (it was refused once as 3.9 M rows, on the detections' rate) and finds the
    // listed plate, which passes every 5 s.
    city.ok("CREATE RULE listed_reads AS SELECT p.camera_id, p.plate, w.legal_basis \
         FROM plate_reads p JOIN watchlist w ON p.plate = w.plate");
    let listed = city.ok_until("SELECT plate, legal_basis FROM listed_reads LIMIT 1", 30, |out| {
        out.contains("12345-ب-6|")
    });
    assert!(listed.contains("12345-ب-6|stolen-vehicle report DGSN-2026-00118"), "{listed}");

    // A rule created with backfill starts from the retained events: its first window is the
    // city's first (20:00:00 to 20:00:02), though it was created seconds later.
    city.ok("CREATE RULE early WITH (backfill = '10 minutes') AS \
         SELECT window_end, count(*) AS n FROM detections GROUP BY tumble(event_time, INTERVAL '2 seconds')");
    let first_of = |out: &str| out.lines().nth(1).unwrap_or_default().trim().to_owned();
    let first = city.ok_until("SELECT min(window_end) FROM early", 30, |out| !first_of(out).is_empty());
    assert_eq!(first_of(&first), "2026-06-14 20:00:02+00", "backfilled from the start of the city");
    // As PostgreSQL prints a timestamp, which reads back as one.
    let after = city.ok(&format!("SELECT count(*) FROM early WHERE window_end <= '{}'", first_of(&first)));
    assert_eq!(first_of(&after), "1", "{after}");
    // to_char takes PostgreSQL's patterns, and prints what PostgreSQL 15 prints for them.
    let said = city.ok("SELECT to_char(min(window_end), 'FMDD Mon YYYY, HH12:MI:SS AM') FROM early");
    assert_eq!(first_of(&said), "14 Jun 2026, 08:00:02 PM", "{said}");
    // Columns the query did not name take PostgreSQL's names, as psql and drivers show them.
    let named = city.ok(
        "SELECT count(*), date_part('hour', window_end), n * 2, window_end::date FROM early GROUP BY 2, 3, 4",
    );
    assert_eq!(named.lines().next(), Some("count|date_part|?column?|window_end"), "{named}");
    let header = city.ok("COPY (SELECT count(*), max(n) FROM early) TO STDOUT WITH (FORMAT csv, HEADER)");
    assert_eq!(header.lines().next(), Some("count,max"), "{header}");
    // A query's plan, DataFusion's, as EXPLAIN gives it.
    let plan = city.ok("EXPLAIN SELECT count(*) FROM early WHERE n > 1");
    assert!(
        plan.contains("logical_plan|") && plan.contains("physical_plan|") && plan.contains("Filter"),
        "{plan}"
    );
    let refused = city.fails("SELECT to_char(window_end, 'DD MONTH') FROM early");
    assert!(
        refused.contains("psql:1:28: to_char's pattern MONTH") && refused.contains("HINT:  write FMMonth"),
        "{refused}"
    );
    city.ok("DROP RULE early");

    let plan = city.ok("EXPLAIN RULE busy_cameras");
    assert!(plan.contains("WindowAggregate: window=Tumble { size: 2000 }"), "{plan}");

    // Ad-hoc SELECT over retained events and over the rule's contents.
    let count = city.ok("SELECT count(*) FROM detections WHERE class = 'person'");
    let n: u64 = count.lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("a count");
    assert!(n > 0, "{count}");
    let listed = city.ok("SELECT plate, legal_basis FROM watchlist");
    assert!(listed.contains("12345-ب-6|stolen-vehicle report DGSN-2026-00118"), "reference tables: {listed}");
    let top = city.ok("SELECT camera_id, detections FROM busy_cameras ORDER BY detections DESC LIMIT 1");
    assert_eq!(top.lines().count(), 3, "header, one row, footer: {top}");

    // Bad SQL: a clear error with its position, and everything keeps running.
    let e = city.fails("CREATE RULE broken AS SELECT camera_id FROM detections WHERE colour = 'red'");
    assert!(e.contains("psql:1:62") && e.contains("colour"), "{e}");
    let e = city.fails("CREATE RULE broken AS SELECT zone_id, count(*) FROM detections GROUP BY zone_id");
    assert!(e.contains("not supported") && e.contains("tumble"), "{e}");
    let e = city.fails("CREATE RULE broken AS SELEC camera_id FROM detections");
    assert!(e.contains("syntax error") || e.contains("SELEC"), "{e}");
    // An ad-hoc query's mistakes are placed as a rule's are, an unknown table with the tables
    // there are.
    let e = city.fails("SELECT camera_id FROM detection");
    assert!(
        e.contains("psql:1:23: table 'detection' not found") && e.contains("detections, erased_reads"),
        "{e}"
    );
    let e = city.fails("SELECT camera_id FROM detections WHERE");
    assert!(e.contains("psql:1:39: syntax error"), "{e}");
    let e = city.fails("CREATE RULE keep_me AS SELECT camera_id FROM detections");
    assert!(e.contains("already exists"), "{e}");
    let rules = city.ok("SHOW RULES");
    assert!(!rules.contains("broken"), "{rules}");
    assert!(city.subscribe("busy_cameras", 5).len() == 5, "the rule still produces after the errors");

    city.ok("DROP RULE busy_cameras");
    let rules = city.ok("SHOW RULES");
    assert!(!rules.contains("busy_cameras") && rules.contains("keep_me"), "{rules}");
    let e = city.fails("DROP RULE unreadable_plate");
    assert!(e.contains("comes from"), "configured rules are not dropped from psql: {e}");
    city.stop();

    // Rules persist across restarts (the catalog lives in the output directory), the join too:
    // just after a start nothing of the plate reads is retained, and admission on the nominal
    // rate (every camera's detections) would refuse it again.
    let city = City::start(tmp.path(), 30);
    let rules = city.ok("SHOW RULES");
    assert!(
        rules.contains("keep_me|") && rules.contains("listed_reads|") && !rules.contains("busy_cameras"),
        "{rules}"
    );
    city.stop();
    let catalog = tmp.path().join("city/catalog/rules.sql");
    let stored = std::fs::read_to_string(&catalog).unwrap();
    assert!(stored.contains("listed_reads"), "the catalog kept the rule: {stored}");

    // A stored rule that no longer compiles (here, over a column no stream has) is not
    // restored, and is not lost either: the catalog keeps it, commented out with the reason.
    std::fs::write(&catalog, format!("{stored}CREATE RULE gone AS SELECT no_such_column FROM detections;\n"))
        .unwrap();
    let city = City::start(tmp.path(), 30);
    city.ok("CREATE RULE after_upgrade AS SELECT camera_id FROM detections");
    let rules = city.ok("SHOW RULES");
    assert!(rules.contains("keep_me|") && !rules.contains("gone|"), "{rules}");
    city.stop();
    let stored = std::fs::read_to_string(&catalog).unwrap();
    assert!(
        stored.contains("-- not restored at a start:")
            && stored.contains("-- CREATE RULE gone AS SELECT no_such_column FROM detections")
            && stored.contains("\nCREATE RULE keep_me")
            && stored.contains("\nCREATE RULE after_upgrade"),
        "{stored}"
    );
}

#[test]
fn crowd_streams_are_queried_and_ruled_on_from_psql_while_the_city_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let city = City::start(tmp.path(), 75);
    // A rule over a derived stream, added at runtime: its dataflow imports the densities the
    // main dataflow computed (backfilled from memory). The gate-A surge (from 15 s) reaches E.
    city.ok("CREATE RULE gate_dense WITH (backfill = '10 minutes') AS \
         SELECT zone, window_end, density, level FROM zone_density WHERE level IN ('E', 'F')");
    let deadline = Instant::now() + Duration::from_secs(70);
    let dense = loop {
        let out = city.ok("SELECT count(*), min(zone), max(zone), max(density) FROM gate_dense");
        let row: Vec<String> =
            out.lines().nth(1).unwrap_or_default().split('|').map(|v| v.trim().to_owned()).collect();
        if row.first().is_some_and(|n| n != "0") || Instant::now() > deadline {
            break row;
        }
        std::thread::sleep(Duration::from_millis(1000));
    };
    assert_ne!(dense[0], "0", "the runtime rule over zone_density never fired");
    assert_eq!((dense[1].as_str(), dense[2].as_str()), ("gate-a", "gate-a"), "{dense:?}");
    assert!(dense[3].parse::<f64>().is_ok_and(|d| d >= 1.08), "{dense:?}");

    // Ad-hoc SELECT over the derived streams kept in memory.
    for (sql, what) in [
        ("SELECT count(*) FROM zone_density WHERE zone = 'gate-a' AND cameras = 1", "gate-a densities"),
        ("SELECT count(DISTINCT track_id) FROM tracks WHERE zone_id IS NOT NULL", "tracks in zones"),
        ("SELECT count(*) FROM line_crossings WHERE line = 'gate-a-entry' AND direction = 'in'", "crossings"),
        ("SELECT count(*) FROM density_grid WHERE zone = 'gate-a'", "grid cells"),
    ] {
        let out = city.ok(sql);
        let n: u64 = out.lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("a count");
        assert!(n > 0, "no {what}: {out}");
    }
    // An analyst's times as PostgreSQL reads them (minutes without seconds, an offset of hours
    // alone), over windows long closed: the same rows as the times written in full.
    let count = |sql: &str| -> u64 {
        let out = city.ok(sql);
        out.lines().nth(1).and_then(|l| l.trim().parse().ok()).unwrap_or_else(|| panic!("a count: {out}"))
    };
    let full = count(
        "SELECT count(*) FROM zone_density WHERE window_end >= '2026-06-14 20:00:00+00:00' \
         AND window_end < '2026-06-14 20:00:10+00:00'",
    );
    assert!(full > 0);
    let short = count(
        "SELECT count(*) FROM zone_density WHERE window_end >= '2026-06-14 20:00' \
         AND window_end < TIMESTAMPTZ '2026-06-14 21:00:10 +01'",
    );
    assert_eq!(short, full);
    // Ten-second buckets of the same span from a table function, the times written as above.
    let buckets = count(
        "SELECT count(*) FROM generate_series(TIMESTAMPTZ '2026-06-14 20:00', \
         TIMESTAMPTZ '2026-06-14 21:01 +01', INTERVAL '10 seconds')",
    );
    assert_eq!(buckets, 7);
    // Counted per bucket as an analyst writes it (the alias names the series' column, a LEFT
    // JOIN counts each bucket's windows, an empty one 0): six buckets, together the span's.
    let per_bucket =
        city.ok("SELECT b, count(z.window_end) AS n FROM generate_series(TIMESTAMPTZ '2026-06-14 20:00', \
         TIMESTAMPTZ '2026-06-14 20:00:50', INTERVAL '10 seconds') AS b LEFT JOIN zone_density z \
         ON z.window_end >= b AND z.window_end < b + INTERVAL '10 seconds' GROUP BY b ORDER BY b");
    let n: Vec<u64> = per_bucket.lines().skip(1).filter_map(|l| l.split('|').nth(1)?.parse().ok()).collect();
    assert_eq!(n.len(), 6, "{per_bucket}");
    let span = count(
        "SELECT count(*) FROM zone_density WHERE window_end >= '2026-06-14 20:00' AND window_end < '2026-06-14 20:01'",
    );
    assert_eq!(n.iter().sum::<u64>(), span, "{per_bucket}");
    // The same count as a subquery tied by the range: refused, with that join to write.
    let e = city.fails(
        "SELECT b, (SELECT count(*) FROM zone_density z WHERE z.window_end >= b \
         AND z.window_end < b + INTERVAL '10 seconds') FROM generate_series(TIMESTAMPTZ '2026-06-14 20:00', \
         TIMESTAMPTZ '2026-06-14 20:00:50', INTERVAL '10 seconds') AS b",
    );
    assert!(e.contains("other than by equalities") && e.contains("LEFT JOIN"), "{e}");
    // In the select list, a row per value.
    assert_eq!(city.ok("SELECT generate_series(1, 3)").lines().count(), 5, "a header, three rows, a footer");
    // `now()` is the city's clock (simulated here, June 2026): its last minute has windows, the
    // newest within a few seconds of it; by the wall's clock there would be none.
    let recent = count("SELECT count(*) FROM zone_density WHERE window_end > now() - INTERVAL '1 minute'");
    assert!(recent > 0, "no window in the city's last minute");
    let fresh =
        city.ok("SELECT now() - max(window_end) < INTERVAL '10 seconds', current_date FROM zone_density");
    assert_eq!(fresh.lines().nth(1), Some("t|2026-06-14"), "{fresh}");
    // A rule that reads the time now would be fixed at its creation: refused with the fix.
    let e = city.fails("CREATE RULE recent AS SELECT zone, density FROM zone_density WHERE window_end > now() - INTERVAL '1 minute'");
    assert!(e.contains("now() (it reads the time now) is not supported in rules"), "{e}");
    assert!(e.contains("filter where you read the rule"), "{e}");
    city.stop();
}

#[test]
fn a_runtime_rule_over_tracks_sees_the_tracks_parquet_holds_and_its_outputs_are_durable() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let city = City::start(tmp.path(), 40);
    // Created while the city runs, without backfill: it starts at the watermark.
    city.ok("CREATE RULE cam3_tracks WITH (severity = 'low') AS \
         SELECT camera_id, event_time, track_id, event_id FROM tracks WHERE camera_id = 3 AND state = 'tracked'");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = city.ok("SELECT count(*) FROM cam3_tracks");
        if out.lines().nth(1).is_some_and(|l| l.trim() != "0") {
            break;
        }
        assert!(Instant::now() < deadline, "the rule over tracks produced nothing: {out}");
        std::thread::sleep(Duration::from_millis(500));
    }
    // Its alerts are kept in memory with the operators' own: psql reads them from `alerts`.
    let kept = city.ok("SELECT count(*) FROM alerts WHERE rule = 'cam3_tracks'");
    assert!(kept.lines().nth(1).is_some_and(|l| l.trim() != "0"), "{kept}");
    city.ok("DROP RULE cam3_tracks");
    // Dropping keeps what it wrote; the city runs to its end, every file closes.
    let mut child = city.child;
    let status = child.wait().expect("vigil ends");
    assert!(status.success(), "{status:?}");
    let out = tmp.path().join("city");
    let rows = format!("read_parquet('{}/rules/cam3_tracks/**/*.parquet')", out.display());
    let tracks = format!("read_parquet('{}/tracks/**/*.parquet')", out.display());
    // Same (camera_id, event_time, track_id) rows as the tracks Parquet over the rule's span:
    // the rule read the tracks the main dataflow computed, not tracks of its own.
    let cmp = common::duckdb(&format!(
        "WITH r AS (SELECT camera_id, event_time, track_id FROM {rows} WHERE vigil_diff = 1), \
              span AS (SELECT min(event_time) lo, max(event_time) hi FROM r), \
              t AS (SELECT camera_id, event_time, track_id FROM {tracks}, span \
                    WHERE camera_id = 3 AND state = 'tracked' AND event_time BETWEEN lo AND hi) \
         SELECT (SELECT count(*) FROM r), (SELECT count(*) FROM t), \
                (SELECT count(*) FROM (SELECT * FROM r EXCEPT ALL SELECT * FROM t)), \
                (SELECT count(*) FROM (SELECT * FROM t EXCEPT ALL SELECT * FROM r))"
    ));
    let n: Vec<u64> = cmp[0].iter().map(|v| v.parse().unwrap()).collect();
    assert!(n[0] > 20, "the rule wrote its rows: {n:?}");
    assert_eq!((n[0], n[2], n[3]), (n[1], 0, 0), "rule rows and tracks Parquet differ: {n:?}");
    // Its alerts are in the alerts stream, one per inserted row, naming their trigger.
    let alerts = common::duckdb(&format!(
        "SELECT count(*), count(DISTINCT event_id), count(DISTINCT trigger_id) FROM read_parquet('{}/alerts/**/*.parquet') \
         WHERE rule = 'cam3_tracks' AND kind = 'rule'",
        out.display()
    ));
    assert_eq!(alerts[0][0].parse::<u64>().unwrap(), n[0], "{alerts:?}");
    assert_eq!(alerts[0][0], alerts[0][1], "alert ids are unique: {alerts:?}");
}

#[test]
fn the_endpoint_refuses_to_start_without_a_password() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["demo", "--fast", "--duration", "1", "--out", "city", "--quiet", "--pg-listen", "127.0.0.1:0"])
        .env_remove("VIGIL_PG_PASSWORD")
        .current_dir(tmp.path())
        .stdin(Stdio::null())
        .output()
        .expect("vigil runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("VIGIL_PG_PASSWORD") && stderr.contains("no anonymous access"), "{stderr}");
}

/// `vigil audit verify` on `out`: (succeeded, stdout + stderr).
fn audit_verify(out: &Path) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["audit", "verify", "--out"])
        .arg(out)
        .env("VIGIL_PG_PASSWORD", PASSWORD)
        .env("VIGIL_PASSWORD", PASSWORD)
        .output()
        .expect("vigil runs");
    (
        o.status.success(),
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
    )
}

#[test]
fn logins_statements_and_watchlist_changes_are_in_a_chain_that_shows_any_tampering() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let city = City::start(tmp.path(), 120);
    let denied = city.psql_as("mallory", "not-the-password", "SELECT 1");
    assert!(!denied.status.success());
    city.ok("SELECT count(*) FROM plate_reads WHERE plate = '12345-ب-6'");
    // The plate function of plate_reads' definition, in an ad-hoc query.
    let p = city.ok("SELECT normalize_plate('6 | B | 12345') AS p, normalize_plate('not a plate') AS q");
    assert_eq!(p.lines().nth(1), Some("12345-ب-6|"), "{p}");
    city.ok("CREATE RULE audited AS SELECT camera_id, plate FROM plate_reads WHERE plate IS NOT NULL");
    city.ok("DROP RULE audited");
    city.fails("SELECT nothing FROM nowhere");
    city.stop();

    let out = tmp.path().join("city");
    let (ok, said) = audit_verify(&out);
    assert!(ok, "{said}");
    assert!(said.contains("chain intact"), "{said}");
    let log = out.join("audit/audit.log");
    let text = std::fs::read_to_string(&log).unwrap();
    let records: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let has = |actor: &str, action: &str, object: Option<&str>| {
        records
            .iter()
            .any(|r| r["actor"] == actor && r["action"] == action && object.is_none_or(|o| r["object"] == o))
    };
    assert!(has("config", "config.load", None), "{text}");
    assert!(has("config", "watchlist.add", None), "the demo's watchlist: {text}");
    assert!(has("mallory", "login.failed", Some("psql")), "{text}");
    assert!(has("vigil", "login", Some("psql")), "{text}");
    assert!(
        has("vigil", "rule.create", Some("audited")) && has("vigil", "rule.drop", Some("audited")),
        "{text}"
    );
    let failed = records.iter().any(|r| {
        r["action"] == "query" && r["detail"]["result"].as_str().is_some_and(|x| x.starts_with("error 4"))
    });
    let succeeded =
        records.iter().filter(|r| r["action"] == "query" && r["detail"]["result"] == "ok").count();
    assert!(failed && succeeded >= 1, "{text}");
    // Ids and digests only: the plate in the query and the watchlist's plates are not there.
    // (The plate's text, not its digits alone: hashes and times may hold any five digits.)
    assert!(!text.contains("12345-") && !text.contains("12345 ") && !text.contains('ب'), "{text}");

    // One byte changed in the third record: verify fails and names its line.
    let lines: Vec<&str> = text.lines().collect();
    let mut changed = lines.clone();
    let tampered = lines[2].replacen("\"actor\":\"", "\"actor\":\"x", 1);
    changed[2] = &tampered;
    std::fs::write(&log, changed.join("\n") + "\n").unwrap();
    let (ok, said) = audit_verify(&out);
    assert!(!ok && said.contains("audit.log:3:") && said.contains("changed"), "{said}");
    // The second record removed: the record that follows it is named.
    let mut removed = lines.clone();
    removed.remove(1);
    std::fs::write(&log, removed.join("\n") + "\n").unwrap();
    let (ok, said) = audit_verify(&out);
    assert!(!ok && said.contains("audit.log:2:") && said.contains("removed or reordered"), "{said}");
}

#[test]
fn an_analyst_adds_and_removes_watchlist_entries_and_bad_ones_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let city = City::start(tmp.path(), 120);
    let added = city.ok("INSERT INTO watchlist (plate, reason, legal_basis, authority, expires_at) VALUES \
         ('777-B-7', 'stolen vehicle', 'DGSN-2026-00300', 'DGSN Rabat', '2026-09-01T00:00:00Z'), \
         ('6 | و | 88', 'warrant', 'TPI-Rabat 2026/12', 'TPI Rabat', '2026-08-01T00:00:00Z')");
    assert!(added.contains("INSERT 0 2"), "{added}");
    // Refused whole, naming the row, and the fix as the HINT: no legal basis, no expiry, not a
    // plate.
    for (values, what, fix) in [
        (
            "('1-B-1', 'x', '', 'y', '2026-09-01T00:00:00Z')",
            "row 1: entry for 1-ب-1 without a legal basis",
            "HINT:  give the warrant's or the report's reference",
        ),
        (
            "('1-B-1', 'x', 'z', 'y', '2026-09-01T00:00:00Z'), ('2-B-2', 'x', 'z', 'y', NULL)",
            "row 2: entry for 2-ب-2 without a valid expiry",
            "HINT:  give expires_at as RFC 3339",
        ),
        (
            "('hello', 'x', 'z', 'y', '2026-09-01T00:00:00Z')",
            "row 1: not a Moroccan plate",
            "HINT:  write the plate as serial-letter-region",
        ),
    ] {
        let e = city.fails(&format!(
            "INSERT INTO watchlist (plate, reason, legal_basis, authority, expires_at) VALUES {values}"
        ));
        assert!(e.contains(what) && e.contains(fix), "{values}: {e}");
    }
    // A bulk insert is audited as one record with its count and a digest of its plates.
    let bulk: Vec<String> = (1..=17)
        .map(|i| {
            format!("('{i}-A-40', 'stolen vehicle', 'DGSN-2026-1{i:03}', 'DGSN', '2026-09-01T00:00:00Z')")
        })
        .collect();
    let added = city.ok(&format!(
        "INSERT INTO watchlist (plate, reason, legal_basis, authority, expires_at) VALUES {}",
        bulk.join(", ")
    ));
    assert!(added.contains("INSERT 0 17"), "{added}");
    let e = city.fails("INSERT INTO zones (name) VALUES ('z')");
    assert!(e.contains("zones cannot be changed from SQL"), "{e}");
    // The entries are in the table (after the next tick), added by the analyst, canonical.
    let listed =
        city.ok_until("SELECT plate, added_by, legal_basis FROM watchlist ORDER BY plate", 10, |l| {
            l.contains("777-ب-7")
        });
    assert!(listed.contains("777-ب-7|vigil|DGSN-2026-00300"), "{listed}");
    assert!(listed.contains("6-و-88|vigil|TPI-Rabat 2026/12"), "{listed}");
    // Nothing inserted by the refused statements.
    assert!(!listed.contains("1-ب-1") && !listed.contains("2-ب-2"), "{listed}");

    // 12345-ب-6 passes a camera every 5 s: it hits until it is deleted, then no more.
    let n = |sql: &str| city.ok(sql).lines().nth(1).and_then(|l| l.trim().parse::<i64>().ok()).unwrap_or(0);
    let hits_sql = "SELECT count(*) FROM alerts WHERE kind = 'watchlist' AND message LIKE '%12345-ب-6%'";
    let deadline = Instant::now() + Duration::from_secs(30);
    while n(hits_sql) == 0 {
        assert!(Instant::now() < deadline, "no hit for 12345-ب-6 before the delete");
        std::thread::sleep(Duration::from_millis(500));
    }
    let deleted = city.ok("DELETE FROM watchlist WHERE plate IN ('12345-B-6', '999-B-9')");
    assert!(deleted.contains("DELETE 1"), "{deleted}");
    let cut = n("SELECT CAST(max(event_time) AS BIGINT) FROM plate_reads") + 2_000;
    std::thread::sleep(Duration::from_secs(14));
    let reads_after = n(&format!(
        "SELECT count(*) FROM plate_reads WHERE plate = '12345-ب-6' AND CAST(event_time AS BIGINT) > {cut}"
    ));
    let hits_after = n(&format!("{hits_sql} AND CAST(event_time AS BIGINT) > {cut}"));
    assert!(reads_after >= 1, "the plate was not read after the delete");
    assert_eq!(hits_after, 0, "a deleted entry matched");
    let left = city.ok("SELECT count(*) FROM watchlist WHERE plate = '12345-ب-6'");
    assert_eq!(left.lines().nth(1).map(str::trim), Some("0"), "{left}");
    city.stop();
    let audit = std::fs::read_to_string(tmp.path().join("city/audit/audit.log")).unwrap();
    assert!(audit.contains("\"action\":\"watchlist.add\",\"object\":\"17 rows\""), "{audit}");
    for action in
        ["\"action\":\"watchlist.add\",", "\"action\":\"watchlist.remove\",", "\"action\":\"table.insert\","]
    {
        assert!(audit.contains(action), "{action}: {audit}");
    }
}

#[test]
fn each_role_sees_what_it_may_and_nothing_else() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let users = [
        ("amina", "analyst"),
        ("karim", "crowd_manager"),
        ("salma", "data_team"),
        ("youssef", "auditor"),
        ("root_admin", "admin"),
    ];
    let mut config = String::from(
        "[city]\nfps = 5.0\n\n[simulation]\ncameras = 2\npedestrians_per_camera = 4\nvehicles_per_minute = 6\n\n\
         [[zones]]\nname = \"gate\"\ncamera = 0\npolygon = [[10.0, 4.0], [30.0, 4.0], [30.0, 16.0], [10.0, 16.0]]\n\n\
         [[watchlist]]\nplate = \"12345-ب-6\"\nlegal_basis = \"DGSN-2026-00118\"\nexpires_at = \"2026-09-01T00:00:00Z\"\n\n\
         [server]\ntime_zone = \"Africa/Casablanca\"\n\n",
    );
    let passwords: Vec<(String, String)> =
        users.iter().map(|(u, _)| (format!("PW_{}", u.to_uppercase()), format!("{u}-password-1"))).collect();
    for ((user, role), (var, _)) in users.iter().zip(&passwords) {
        config.push_str(&format!(
            "[[users]]\nname = \"{user}\"\nrole = \"{role}\"\npassword_env = \"{var}\"\n\n"
        ));
    }
    std::fs::write(tmp.path().join("city.toml"), config).unwrap();
    let env: Vec<(&str, &str)> = passwords.iter().map(|(v, p)| (v.as_str(), p.as_str())).collect();
    let city = City::start_with(tmp.path(), &["run", "--config", "city.toml", "--duration", "120"], &env);
    let run = |user: &str, sql: &str| {
        let password = format!("{user}-password-1");
        let out = city.psql_as(user, &password, sql);
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    // An analyst's rule over personal data, and one over aggregates.
    let (ok, said) = run(
        "amina",
        "CREATE RULE plates_seen AS SELECT camera_id, plate FROM plate_reads WHERE plate IS NOT NULL",
    );
    assert!(ok, "{said}");
    let (ok, said) = run(
        "amina",
        "CREATE RULE gate_peak AS SELECT zone_id, max(persons) AS peak FROM zone_density \
         GROUP BY tumble(event_time, INTERVAL '10 seconds'), zone_id",
    );
    assert!(ok, "{said}");
    // (statement, roles that may run it)
    let matrix: [(&str, &[&str]); 13] = [
        ("SELECT count(*) FROM detections", &["amina", "root_admin"]),
        ("SELECT count(*) FROM hits", &["amina", "root_admin"]),
        ("SHOW PLATE '12345-B-6'", &["youssef", "root_admin"]),
        ("ERASE PLATE '99-B-9'", &["youssef", "root_admin"]),
        ("SELECT count(*) FROM plate_reads", &["amina", "root_admin"]),
        ("SELECT count(*) FROM watchlist", &["amina", "root_admin"]),
        ("SELECT count(*) FROM plates_seen", &["amina", "root_admin"]),
        ("SELECT count(*) FROM zone_density", &["amina", "root_admin", "karim", "salma"]),
        ("SELECT count(*) FROM zones", &["amina", "root_admin", "karim", "salma"]),
        ("SELECT count(*) FROM gate_peak", &["amina", "root_admin", "karim", "salma"]),
        ("SELECT count(*) FROM audit_log WHERE action = 'rule.create'", &["youssef"]),
        ("CREATE RULE x AS SELECT zone_id FROM zone_density WHERE persons > 100", &["amina", "root_admin"]),
        (
            "INSERT INTO watchlist (plate, legal_basis, expires_at) VALUES ('777-B-7', 'DGSN-1', '2026-09-01T00:00:00Z')",
            &["amina", "root_admin"],
        ),
    ];
    for (sql, allowed) in matrix {
        for (user, role) in users {
            let (ok, said) = run(user, sql);
            if allowed.contains(&user) {
                assert!(ok, "{user} ({role}) may run {sql}: {said}");
            } else {
                assert!(
                    !ok && said.contains("permission denied"),
                    "{user} ({role}) may not run {sql}: {said}"
                );
            }
            if ok && sql.starts_with("CREATE RULE x") {
                run(user, "DROP RULE x");
            }
        }
    }
    // SHOW RULES lists only the rules a role may read.
    let (_, shown) = run("karim", "SHOW RULES");
    assert!(shown.contains("gate_peak") && !shown.contains("plates_seen"), "{shown}");
    // So do SHOW STREAMS and SHOW COLUMNS: what a role may query, with keys and personal columns.
    let (ok, streams) = run("karim", "SHOW STREAMS");
    assert!(
        ok && streams.contains("zone_density|stream|Persons in a zone")
            && streams.contains("gate_peak|rule|")
    );
    assert!(!streams.contains("plate_reads") && !streams.contains("plates_seen"), "{streams}");
    let (ok, streams) = run("amina", "SHOW TABLES");
    assert!(
        ok && streams.contains("plate_reads|stream|") && streams.contains("watchlist|table|"),
        "{streams}"
    );
    assert!(!streams.contains("audit_log") && !streams.contains("([`"), "{streams}");
    let (ok, columns) = run("amina", "SHOW COLUMNS FROM plate_reads");
    assert!(
        ok && columns.contains("event_id|bigint|no|yes|") && columns.contains("plate|text|yes||yes"),
        "{columns}"
    );
    let (ok, said) = run("karim", "EXPLAIN SELECT plate FROM plate_reads");
    assert!(!ok && !said.contains("plan") && said.contains("plate_reads"), "{said}");
    let (ok, said) = run("karim", "DESCRIBE plate_reads");
    assert!(!ok && said.contains("SHOW STREAMS lists them: ") && said.contains("zone_density"), "{said}");
    // psql's \d commands read PostgreSQL's catalog, which lists what the role may read.
    let (ok, listed) = run("karim", "\\d");
    assert!(
        ok && listed.contains("public|zone_density|table|vigil")
            && listed.contains("public|gate_peak|table|vigil"),
        "{listed}"
    );
    // So does information_schema, with PostgreSQL's type names, as \d and SHOW COLUMNS give them.
    let (ok, columns) = run(
        "karim",
        "SELECT table_name, column_name, data_type FROM information_schema.columns \
         WHERE table_name IN ('zone_density', 'plate_reads') AND column_name IN ('window_end', 'zone_id')",
    );
    assert!(
        ok && columns.contains("zone_density|window_end|timestamp with time zone")
            && columns.contains("zone_density|zone_id|bigint"),
        "{columns}"
    );
    assert!(!columns.contains("plate_reads"), "{columns}");
    // What a dashboard tool asks before it lists tables and columns (Grafana's PostgreSQL data
    // source: the search path, the user, schema-qualified names).
    let (ok, asked) = run(
        "karim",
        "SELECT current_user, current_setting('search_path'), current_setting('server_version_num'), \
         has_table_privilege('zone_density', 'SELECT'), has_table_privilege('plate_reads', 'SELECT')",
    );
    assert!(ok && asked.lines().any(|l| l == "karim|public|160000|t|f"), "{asked}");
    // Two columns of one name, as PostgreSQL allows them (DataFusion alone refuses them).
    let (ok, both) = run("karim", "SELECT current_user, session_user, 1 AS n, 2 AS n");
    assert!(ok && both.lines().any(|l| l == "karim|karim|1|2"), "{both}");
    let (ok, listed) = run(
        "karim",
        "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM information_schema.tables \
         WHERE quote_ident(table_schema) NOT IN ('information_schema', 'pg_catalog') ORDER BY 1",
    );
    assert!(ok && listed.contains("public.zone_density") && !listed.contains("plate_reads"), "{listed}");
    let (ok, columns) = run(
        "karim",
        "SELECT quote_ident(column_name), data_type FROM information_schema.columns \
         WHERE quote_ident(table_schema) = (parse_ident('public.zone_density'))[1] \
         AND quote_ident(table_name) = (parse_ident('public.zone_density'))[2] ORDER BY ordinal_position",
    );
    assert!(ok && columns.contains("window_end|timestamp with time zone"), "{columns}");
    assert!(!listed.contains("plate_reads") && !listed.contains("plates_seen"), "{listed}");
    let (ok, listed) = run("amina", "\\dt");
    assert!(ok && listed.contains("public|watchlist|table|") && listed.contains("public|plates_seen|table|"));
    assert!(!listed.contains("audit_log"), "{listed}");
    let (ok, described) = run("amina", "\\d plate_reads");
    let lines: Vec<&str> = described.lines().collect();
    assert!(ok && lines.contains(&"Table \"public.plate_reads\""), "{described}");
    assert!(lines.iter().any(|l| l.starts_with("plate|text|")), "{described}");
    assert!(lines.iter().any(|l| l.starts_with("event_id|bigint|") && l.contains("not null")), "{described}");
    // \d+ adds storage and descriptions; \du lists roles (through ARRAY(SELECT ...)).
    let (ok, described) = run("karim", "\\d+ zones");
    assert!(
        ok && described.contains("Storage") && described.lines().any(|l| l.starts_with("name|text|")),
        "{described}"
    );
    let (ok, roles) = run("karim", "\\du");
    assert!(ok && roles.contains("Role name"), "{roles}");
    // The version psql is told at login is the one SHOW and version() answer.
    let (_, told) = run("karim", "\\echo :SERVER_VERSION_NAME");
    let (_, shown) = run("karim", "SHOW server_version");
    let (_, version) = run("karim", "SELECT version()");
    assert!(
        shown.contains(told.trim()) && version.contains(&format!("PostgreSQL {} on vigil", told.trim())),
        "{told} {shown} {version}"
    );
    // SHOW ALL lists the settings SHOW answers; one vigil does not have is PostgreSQL's error.
    let (ok, all) = run("karim", "SHOW ALL");
    // (The city's sessions start in Morocco's time zone: `server.time_zone`.)
    assert!(ok && all.lines().any(|l| l.starts_with("timezone|Africa/Casablanca|")), "{all}");
    let (ok, said) = run("karim", "SHOW work_mem");
    assert!(
        !ok && said.contains("unrecognized configuration parameter \"work_mem\"")
            && said.contains("SHOW ALL"),
        "{said}"
    );
    // Local time with AT TIME ZONE, printed as PostgreSQL 15 prints it with that TimeZone:
    // Morocco is an hour ahead in June, on UTC in Ramadan (2026-03-01).
    let (ok, local) = run(
        "karim",
        "SELECT TIMESTAMPTZ '2026-06-14 20:00:23.4+00' AT TIME ZONE 'Africa/Casablanca', \
         TIMESTAMPTZ '2026-03-01 12:00:00+00' AT TIME ZONE 'Africa/Casablanca'",
    );
    assert!(ok && local.lines().any(|l| l == "2026-06-14 21:00:23.4+01|2026-03-01 12:00:00+00"), "{local}");
    // Or for the session, in the zone `server.time_zone` names (or SET TimeZone): instants print
    // as the zone's wall clock, its days and hours are the zone's, a time without an offset is
    // in it (PostgreSQL 15's answers, to the same statements).
    let (ok, set) = run(
        "karim",
        "SHOW TimeZone; \
         SELECT TIMESTAMPTZ '2026-06-14 20:00:23.4+00', date_trunc('day', TIMESTAMPTZ '2026-06-14 23:30:00+00'), \
         extract(hour FROM TIMESTAMPTZ '2026-06-14 23:30:00+00'), TIMESTAMPTZ '2026-06-14 20:00:00'",
    );
    let lines: Vec<&str> = set.lines().collect();
    assert!(ok && lines.contains(&"Africa/Casablanca"), "{set}");
    assert!(
        lines.contains(&"2026-06-14 21:00:23.4+01|2026-06-15 00:00:00+01|0|2026-06-14 20:00:00+01"),
        "{set}"
    );
    let (ok, utc) = run(
        "karim",
        "SET TimeZone = 'UTC'; SELECT TIMESTAMPTZ '2026-06-14 20:00:23.4+00'; RESET TimeZone; SHOW TimeZone",
    );
    let lines: Vec<&str> = utc.lines().collect();
    assert!(
        ok && lines.contains(&"2026-06-14 20:00:23.4+00") && lines.contains(&"Africa/Casablanca"),
        "{utc}"
    );
    let (ok, bad) = run("karim", "SET TimeZone = 'Mars/Base'");
    assert!(
        !ok && bad.contains("invalid value for parameter \"TimeZone\"")
            && bad.contains("'Africa/Casablanca'"),
        "{bad}"
    );
    // pg_typeof names the type a value is sent as, as \d names a column's.
    let (ok, typed) = run(
        "karim",
        "SELECT pg_typeof(TIMESTAMPTZ '2026-06-14 20:00:00+00'), pg_typeof(0.5::float8), \
         pg_typeof(TIMESTAMPTZ '2026-06-14 20:00:01+00' - TIMESTAMPTZ '2026-06-14 20:00:00+00')",
    );
    assert!(
        ok && typed.lines().any(|l| l == "timestamp with time zone|double precision|interval"),
        "{typed}"
    );
    // \d names a dwell's and an array's types as PostgreSQL does (the catalog said text).
    let (ok, said) = run(
        "amina",
        "CREATE RULE spans AS SELECT zone_id, max(event_time) - min(event_time) AS span, \
         array_agg(persons) AS seen FROM zone_density GROUP BY tumble(event_time, INTERVAL '10 seconds'), zone_id",
    );
    assert!(ok, "{said}");
    let (ok, described) = run("amina", "\\d spans");
    assert!(
        ok && described.lines().any(|l| l.starts_with("span|interval|"))
            && described.lines().any(|l| l.starts_with("seen|double precision[]|")),
        "{described}"
    );
    run("amina", "DROP RULE spans");
    let (ok, schemas) = run("karim", "\\dn");
    assert!(ok && schemas.contains("public|") && !schemas.contains("pg_catalog"), "{schemas}");
    // A table the role may not read is not in its catalog, even by name.
    let (_, said) = run("karim", "\\d plate_reads");
    assert!(said.contains("Did not find any relation named \"plate_reads\""), "{said}");
    // A catalog table vigil does not keep says what to use instead.
    let (ok, said) = run("amina", "SELECT * FROM pg_catalog.pg_no_such_table");
    assert!(!ok && said.contains("HINT:") && said.contains("SHOW COLUMNS FROM name"), "{said}");
    // The auditor reads the records of everyone's actions, with digests for personal data.
    let (ok, log) = run(
        "youssef",
        "SELECT actor, action FROM audit_log WHERE action IN ('rule.create', 'login') ORDER BY seq",
    );
    assert!(ok && log.contains("amina|rule.create") && log.contains("karim|login"), "{log}");
    city.stop();
}

/// Rows of `psql -A` output without its header and row count.
fn rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .skip(1)
        .filter(|l| !l.starts_with('(') && !l.is_empty())
        .map(|l| l.split('|').map(str::to_owned).collect())
        .collect()
}

#[test]
fn a_plate_listed_mid_run_hits_back_and_forward_and_two_people_must_confirm() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Two plates drive around, unlisted at the start. The configuration lists a third, for 10 s.
    let config = "[city]\nfps = 5.0\n\n[simulation]\ncameras = 2\npedestrians_per_camera = 2\n\
        vehicles_per_minute = 6\nocr_error_rate = 0.0\nplates = [\"4821-د-33\", \"5555-ه-7\"]\n\n\
        [[watchlist]]\nplate = \"7777-أ-9\"\nlegal_basis = \"PV-2026-0077\"\nexpires_at = \"2026-06-14T20:00:10Z\"\n\n\
        [[users]]\nname = \"amina\"\nrole = \"analyst\"\npassword_env = \"PW_AMINA\"\n\n\
        [[users]]\nname = \"omar\"\nrole = \"analyst\"\npassword_env = \"PW_OMAR\"\n\n\
        [[users]]\nname = \"karim\"\nrole = \"crowd_manager\"\npassword_env = \"PW_KARIM\"\n";
    std::fs::write(tmp.path().join("city.toml"), config).unwrap();
    let env = [("PW_AMINA", "amina-pw-1"), ("PW_OMAR", "omar-pw-1"), ("PW_KARIM", "karim-pw-1")];
    let city = City::start_with(tmp.path(), &["run", "--config", "city.toml", "--duration", "150"], &env);
    let run = |user: &str, sql: &str| {
        let out = city.psql_as(user, &format!("{user}-pw-1"), sql);
        let said =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{user}: {sql}: {said}");
        said
    };
    let wait = |what: &str, sql: &str, done: &dyn Fn(&[Vec<String>]) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let r = rows(&run("amina", sql));
            if done(&r) {
                return r;
            }
            assert!(Instant::now() < deadline, "{what}: {r:?}");
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    let now = |user: &str| {
        let r = rows(&run(user, "SELECT CAST(max(event_time) AS BIGINT) FROM plate_reads"));
        r.first().and_then(|r| r[0].parse::<i64>().ok()).unwrap_or(0)
    };
    // Both plates are read a few times before anyone lists them.
    wait(
        "reads before listing",
        "SELECT plate, count(*) FROM plate_reads WHERE plate IN ('4821-د-33', '5555-ه-7') GROUP BY plate",
        &|r| r.len() == 2 && r.iter().all(|r| r[1].parse::<i64>().unwrap_or(0) >= 2),
    );
    let listed_at = now("amina");
    let expiry = listed_at + 20_000;
    let expires = chrono::DateTime::from_timestamp_millis(expiry).unwrap().to_rfc3339();
    let said = run(
        "amina",
        &format!(
            "INSERT INTO watchlist (plate, reason, legal_basis, authority, expires_at) VALUES \
             ('4821-D-33', 'stolen vehicle', 'DGSN-2026-00777', 'DGSN Rabat', '2026-09-01T00:00:00Z'), \
             ('5555-H-7', 'warrant', 'TPI-Rabat 2026/31', 'TPI Rabat', '{expires}')"
        ),
    );
    assert!(said.contains("INSERT 0 2"), "{said}");
    let hits_of = |plate: &str| {
        format!(
            "SELECT hit_id, status, CAST(read_time AS BIGINT) AS rt, CAST(event_time AS BIGINT) AS et, actionable, \
             decided_by, note, score, why FROM hits WHERE listed_plate = '{plate}' ORDER BY et, status"
        )
    };
    // Retroactive candidates for the reads before the entry, then live ones after it.
    let h = wait("retroactive and live hits", &hits_of("4821-د-33"), &|r| {
        r.iter().any(|h| h[2].parse::<i64>().unwrap() < listed_at - 1_000)
            && r.iter().any(|h| h[2].parse::<i64>().unwrap() > listed_at + 1_000)
    });
    for hit in &h {
        assert_eq!((hit[1].as_str(), hit[4].as_str()), ("candidate", "f"), "{h:?}");
        assert!(
            hit[3].parse::<i64>().unwrap() >= listed_at - 1_000,
            "no hit before the entry existed: {h:?}"
        );
    }
    let retro: Vec<&String> =
        h.iter().filter(|x| x[2].parse::<i64>().unwrap() < listed_at - 1_000).map(|x| &x[0]).collect();
    let (first, second) = (retro[0].clone(), h.last().unwrap()[0].clone());
    assert_ne!(first, second);
    // One analyst's confirmation is not enough, and counts once; a second person's is.
    let confirm = |user: &str, id: &str| {
        run(
            user,
            &format!("INSERT INTO hit_decisions (hit_id, decision, reason) VALUES ('{id}', 'confirm', '')"),
        )
    };
    confirm("amina", &first);
    confirm("amina", &first);
    let decided = |id: &str, n: usize| {
        wait(
            "decisions recorded",
            &format!(
                "SELECT status, decided_by, actionable, note FROM hits WHERE hit_id = '{id}' ORDER BY event_time, status"
            ),
            &|r| r.len() >= n,
        )
    };
    let d = decided(&first, 3);
    assert_eq!(d[1][..3], ["confirmation", "amina", "f"], "{d:?}");
    assert_eq!(d[2][..3], ["ignored", "amina", "f"], "{d:?}");
    assert!(d[2][3].contains("a different person must confirm"), "{d:?}");
    confirm("omar", &first);
    let d = decided(&first, 4);
    assert_eq!(d[3][..3], ["confirmed", "omar", "t"], "{d:?}");
    // A rejection needs a reason, and ends the hit.
    let out = city.psql_as(
        "omar",
        "omar-pw-1",
        &format!("INSERT INTO hit_decisions (hit_id, decision, reason) VALUES ('{second}', 'reject', '')"),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("without its reason"), "{out:?}");
    run(
        "omar",
        &format!(
            "INSERT INTO hit_decisions (hit_id, decision, reason) VALUES ('{second}', 'reject', 'another car')"
        ),
    );
    let d = decided(&second, 2);
    assert_eq!(d[1][..2], ["rejected", "omar"], "{d:?}");
    // Decisions are final; crowd managers neither see hits nor decide.
    let out =
        city.psql_as("amina", "amina-pw-1", &format!("DELETE FROM hit_decisions WHERE hit_id = '{first}'"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("decisions are final"), "{out:?}");
    for sql in [
        "SELECT count(*) FROM hits",
        "INSERT INTO hit_decisions (hit_id, decision) VALUES ('0000000000000001', 'confirm')",
    ] {
        let out = city.psql_as("karim", "karim-pw-1", sql);
        assert!(String::from_utf8_lossy(&out.stderr).contains("permission denied"), "{sql}: {out:?}");
    }
    // Removing the entry retracts its unconfirmed hits; the confirmed and the rejected stay.
    let removed_at = now("amina");
    run("amina", "DELETE FROM watchlist WHERE plate = '4821-د-33'");
    let candidates: std::collections::BTreeSet<String> = rows(&run("amina", &hits_of("4821-د-33")))
        .into_iter()
        .filter(|h| h[1] == "candidate" && h[3].parse::<i64>().unwrap() < removed_at)
        .map(|h| h[0].clone())
        .collect();
    // A retraction names the hit only.
    let retracted_sql = "SELECT hit_id, listed_plate, plate_raw FROM hits WHERE status = 'retracted'";
    let r = wait("retractions", retracted_sql, &|r| {
        candidates.iter().filter(|c| **c != first && **c != second).all(|c| r.iter().any(|h| h[0] == *c))
    });
    assert!(r.iter().all(|h| h[1].is_empty() && h[2].is_empty()), "{r:?}");
    assert!(!r.iter().any(|h| h[0] == first || h[0] == second), "a decided hit was retracted: {r:?}");
    // The expiring entry matched while it was in force, and not after.
    let h = wait("the expiry passes", &hits_of("5555-ه-7"), &|_| now("amina") > expiry + 12_000);
    assert!(h.iter().any(|x| x[1] == "candidate"), "no hit before the expiry: {h:?}");
    assert!(
        h.iter().all(|x| x[1] != "candidate" || x[3].parse::<i64>().unwrap() < expiry),
        "an expired entry matched: {h:?}"
    );
    // While the city runs, the deleted and the expired plates leave the watchlist's journal at
    // the next sweep (a minute of event time at most), trimmed on the sweeper's own thread; the
    // configuration's expired entry leaves the file its start wrote for replay.
    let on_disk = |dir: &str, plate: &str| {
        std::fs::read_dir(tmp.path().join("city").join(dir)).unwrap().flatten().any(|f| {
            let bytes = std::fs::read(f.path()).unwrap_or_default();
            bytes.windows(plate.len()).any(|w| w == plate.as_bytes())
        })
    };
    let (journal, reference) = ("catalog/tables/watchlist", "reference");
    assert!(std::fs::read_dir(tmp.path().join("city/reference")).unwrap().count() > 0, "no reference file");
    let deadline = Instant::now() + Duration::from_secs(90);
    while on_disk(journal, "4821-د-33") || on_disk(journal, "5555-ه-7") || on_disk(reference, "7777-أ-9") {
        assert!(
            Instant::now() < deadline,
            "a deleted or expired plate is still in the journal or a reference file"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The city still runs (psql answers): the trim was not the last sweep's at exit.
    run("amina", "SELECT count(*) FROM watchlist");
    city.stop();
    let audit = std::fs::read_to_string(tmp.path().join("city/audit/audit.log")).unwrap();
    assert!(audit.contains("\"actor\":\"omar\",\"action\":\"hit_decisions.add\""), "{audit}");
}

#[test]
fn an_erasure_request_leaves_only_the_evidence_for_confirmed_hits() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let users = [("amina", "analyst"), ("omar", "analyst"), ("youssef", "auditor"), ("root", "admin")];
    let mut config = String::from(
        "[city]\nfps = 5.0\n\n[sinks]\npartition_s = 10\n\n[simulation]\ncameras = 2\npedestrians_per_camera = 2\n\
         vehicles_per_minute = 6\nocr_error_rate = 0.0\n\n\
         [[watchlist]]\nplate = \"4821-د-33\"\nlegal_basis = \"TPI-Agadir 2026/77\"\nexpires_at = \"2026-09-01T00:00:00Z\"\n\n",
    );
    for (user, role) in users {
        config.push_str(&format!(
            "[[users]]\nname = \"{user}\"\nrole = \"{role}\"\npassword_env = \"PW_{user}\"\n\n"
        ));
    }
    std::fs::write(tmp.path().join("city.toml"), config).unwrap();
    let env: Vec<(String, String)> =
        users.iter().map(|(u, _)| (format!("PW_{u}"), format!("{u}-pw-1"))).collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let city = City::start_with(tmp.path(), &["run", "--config", "city.toml", "--duration", "150"], &env);
    let try_run = |user: &str, sql: &str| {
        let out = city.psql_as(user, &format!("{user}-pw-1"), sql);
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let run = |user: &str, sql: &str| {
        let (ok, said) = try_run(user, sql);
        assert!(ok, "{user}: {sql}: {said}");
        said
    };
    let n = |sql: &str| rows(&run("amina", sql)).first().and_then(|r| r[0].parse::<i64>().ok()).unwrap_or(-1);
    // Three hits of the plate; two analysts confirm the first.
    let deadline = Instant::now() + Duration::from_secs(60);
    let hits = loop {
        let h = rows(&run(
            "amina",
            "SELECT hit_id, event_id FROM hits WHERE status = 'candidate' ORDER BY event_time",
        ));
        if h.len() >= 3 {
            break h;
        }
        assert!(Instant::now() < deadline, "no hits: {h:?}");
        std::thread::sleep(Duration::from_millis(500));
    };
    let (first, evidence) = (hits[0][0].clone(), hits[0][1].parse::<u64>().unwrap());
    for user in ["amina", "omar"] {
        run(
            user,
            &format!(
                "INSERT INTO hit_decisions (hit_id, decision, reason) VALUES ('{first}', 'confirm', '')"
            ),
        );
    }
    let confirmed = format!("SELECT count(*) FROM hits WHERE hit_id = '{first}' AND status = 'confirmed'");
    while n(&confirmed) != 1 {
        assert!(Instant::now() < deadline, "the hit was not confirmed");
        std::thread::sleep(Duration::from_millis(300));
    }
    // The auditor lists what is held; an analyst may not ask.
    let shown = run("youssef", "SHOW PLATE '4821-D-33'");
    assert!(shown.contains("reads|memory|") && shown.contains("1 confirmed (evidence, kept)"), "{shown}");
    // It is listed: that is said once, as the watchlist's, not counted among its reads.
    assert!(shown.contains("watchlist|memory and catalog|1|legal basis: TPI-Agadir 2026/77"), "{shown}");
    assert!(!shown.contains("catalog|1|\n") && !shown.contains("parquet catalog"), "{shown}");
    let (ok, said) = try_run("amina", "ERASE PLATE '4821-D-33'");
    assert!(!ok && said.contains("permission denied"), "{said}");
    let reads_sql = |until: i64| {
        format!(
            "SELECT count(*) FROM plate_reads WHERE plate = '4821-د-33' AND CAST(event_time AS BIGINT) <= {until} \
             AND event_id <> {evidence}"
        )
    };
    let asked_at = n("SELECT CAST(max(event_time) AS BIGINT) FROM plate_reads");
    assert!(n(&reads_sql(asked_at)) >= 2, "too few reads to erase");
    let erased = run("root", "ERASE PLATE '4821-D-33'");
    assert!(erased.contains("erased|memory|") && erased.contains("kept|memory and parquet|1|"), "{erased}");
    // An erasure request does not take the plate off the watchlist.
    assert!(
        erased.contains("watchlist|memory and catalog|1|") && !erased.contains("catalog|1|1 files"),
        "{erased}"
    );
    assert_eq!(n("SELECT count(*) FROM watchlist WHERE plate = '4821-د-33'"), 1);
    // Once the files open at the request are committed (two commit intervals), nothing but
    // the evidence is left: psql finds none in memory, then DuckDB none in any Parquet file.
    std::thread::sleep(Duration::from_secs(13));
    assert_eq!(n(&reads_sql(asked_at)), 0, "non-evidence reads in memory after the erasure");
    assert_eq!(
        n(&format!("SELECT count(*) FROM plate_reads WHERE event_id = {evidence}")),
        1,
        "the evidence went"
    );
    let unconfirmed = format!(
        "SELECT count(*) FROM hits WHERE listed_plate = '4821-د-33' AND hit_id <> '{first}' AND CAST(event_time AS BIGINT) <= {asked_at}"
    );
    assert_eq!(n(&unconfirmed), 0, "unconfirmed hits in memory after the erasure");
    let alerts = format!(
        "SELECT count(*) FROM alerts WHERE message LIKE '%4821-د-33%' AND message NOT LIKE '%{first}%' \
         AND CAST(event_time AS BIGINT) <= {asked_at}"
    );
    assert_eq!(n(&alerts), 0, "alerts of unconfirmed hits in memory after the erasure");
    // The erased reads left the watchlist join too: a second entry for the plate, added now,
    // finds the evidence read (within the lookback) and none of the erased ones.
    run(
        "amina",
        "INSERT INTO watchlist (plate, reason, legal_basis, authority, expires_at) VALUES \
         ('4821-D-33', 'warrant', 'TPI-Agadir 2026/78', 'TPI Agadir', '2026-09-01T00:00:00Z')",
    );
    let second = |what: &str| {
        format!(
            "SELECT count(*) FROM hits WHERE legal_basis = 'TPI-Agadir 2026/78' AND {what} \
             AND CAST(read_time AS BIGINT) <= {asked_at}"
        )
    };
    while n(&second(&format!("event_id = {evidence}"))) != 1 {
        assert!(Instant::now() < deadline + Duration::from_secs(30), "no retroactive hit on the evidence");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        n(&second(&format!("event_id <> {evidence}"))),
        0,
        "an entry added later found an erased read"
    );
    // The plate is still read after the request: that is new data, not the request's.
    std::thread::sleep(Duration::from_secs(6));
    assert!(n(&reads_sql(i64::MAX)) >= 1, "the plate is not read after the erasure");
    city.stop();
    let out = tmp.path().join("city");
    let o = out.display();
    let count = |sql: String| common_duckdb(&sql);
    assert_eq!(
        count(format!(
            "SELECT count(*) FROM read_parquet('{o}/**/*.parquet', union_by_name = true) WHERE plate = '4821-د-33' \
             AND epoch_ms(event_time) <= {asked_at} AND event_id <> {evidence}"
        )),
        0,
        "non-evidence reads in Parquet after the erasure"
    );
    assert_eq!(
        count(format!(
            "SELECT count(*) FROM read_parquet('{o}/plate_reads/**/*.parquet') WHERE event_id = {evidence}"
        )),
        1,
        "the evidence is not in Parquet"
    );
    assert_eq!(
        count(format!(
            "SELECT count(*) FROM read_parquet('{o}/alerts/**/*.parquet') WHERE message LIKE '%4821-د-33%' \
             AND message NOT LIKE '%{first}%' AND epoch_ms(event_time) <= {asked_at}"
        )),
        0,
        "alerts of unconfirmed hits in Parquet after the erasure"
    );
    // The entry (the configuration's) is still where the run loaded it from (ERASE PLATE once
    // rewrote the watchlist's journal without the entry, which a restart would then have lost).
    assert_eq!(
        count(format!(
            "SELECT count(*) FROM read_parquet('{o}/reference/watchlist-*.parquet') WHERE plate = '4821-د-33'"
        )),
        1,
        "the watchlist entry left the run's reference files"
    );
    let audit = std::fs::read_to_string(out.join("audit/audit.log")).unwrap();
    assert!(audit.contains("\"actor\":\"root\",\"action\":\"plate.erase\""), "{audit}");
    assert!(audit.contains("\"actor\":\"youssef\",\"action\":\"plate.show\""), "{audit}");
    // (The text of the plate, not its digits: hashes and times may hold any four digits.)
    for clear in ["4821-د-33", "4821-D-33", "4821 "] {
        assert!(!audit.contains(clear), "the plate is in the audit log in clear: {clear}");
    }
}

/// One number from DuckDB.
fn common_duckdb(sql: &str) -> i64 {
    let python = common::python();
    let script = "import duckdb, sys\nprint(duckdb.sql(sys.argv[1]).fetchall()[0][0])";
    let out = Command::new(python).args(["-c", script, sql]).output().expect("python");
    assert!(out.status.success(), "duckdb: {}\n{sql}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("a number")
}

#[test]
fn a_restart_keeps_each_hit_and_the_confirmations_it_had() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut config = String::from(
        "[city]\nfps = 5.0\n\n[simulation]\ncameras = 2\npedestrians_per_camera = 2\nvehicles_per_minute = 2\n\
         ocr_error_rate = 0.0\n\n[retention]\nmemory_s = 5\n\n\
         [[watchlist]]\nplate = \"12345-ب-6\"\nlegal_basis = \"DGSN-2026-00118\"\nexpires_at = \"2026-09-01T00:00:00Z\"\n\n",
    );
    for user in ["amina", "omar"] {
        config.push_str(&format!(
            "[[users]]\nname = \"{user}\"\nrole = \"analyst\"\npassword_env = \"PW_{user}\"\n\n"
        ));
    }
    std::fs::write(tmp.path().join("city.toml"), config).unwrap();
    let env = [("PW_amina", "amina-pw-1"), ("PW_omar", "omar-pw-1")];
    let args = ["run", "--config", "city.toml", "--duration", "120"];
    let ask = |city: &City, user: &str, sql: &str| city.rows_as(user, &format!("{user}-pw-1"), sql);
    let wait = |city: &City, sql: &str| city.wait_rows_as("amina", "amina-pw-1", sql);
    let city = City::start_with(tmp.path(), &args, &env);
    let id = wait(&city, "SELECT hit_id FROM hits WHERE status = 'candidate'")[0][0].clone();
    ask(
        &city,
        "amina",
        &format!("INSERT INTO hit_decisions (hit_id, decision, reason) VALUES ('{id}', 'confirm', '')"),
    );
    wait(&city, &format!("SELECT status FROM hits WHERE hit_id = '{id}' AND status = 'confirmation'"));
    // The events leave memory after `memory_s` (5 s); the hits, a worklist, stay for their
    // period: the candidate is still in the queue once the detections of its time have gone.
    wait(
        &city,
        &format!(
            "SELECT 1 FROM (SELECT min(event_time) AS m FROM detections) d, \
             (SELECT event_time AS h FROM hits WHERE hit_id = '{id}' AND status = 'candidate') x WHERE d.m > x.h"
        ),
    );
    let life = format!("SELECT status, decided_by FROM hits WHERE hit_id = '{id}' ORDER BY event_time");
    assert_eq!(ask(&city, "amina", &life), [["candidate", "system"], ["confirmation", "amina"]]);
    // Stopped and started again on the same output: the hit's life so far is in the queue
    // again (from the lake), and the second person completes it.
    city.stop();
    let city = City::start_with(tmp.path(), &args, &env);
    assert_eq!(ask(&city, "amina", &life), [["candidate", "system"], ["confirmation", "amina"]]);
    for user in ["amina", "omar"] {
        ask(
            &city,
            user,
            &format!("INSERT INTO hit_decisions (hit_id, decision, reason) VALUES ('{id}', 'confirm', '')"),
        );
    }
    // Killed the moment psql said INSERT: the decisions were journaled before that answer, and
    // the next run takes them up though `hits` had not committed them.
    city.kill();
    let city = City::start_with(tmp.path(), &args, &env);
    wait(&city, &format!("SELECT status FROM hits WHERE hit_id = '{id}' AND status = 'confirmed'"));
    let sql = format!(
        "SELECT status, decided_by, actionable, note FROM hits WHERE hit_id = '{id}' ORDER BY event_time"
    );
    let r = ask(&city, "amina", &sql);
    city.stop();
    assert!(r.iter().any(|x| x[..2] == ["ignored", "amina"] && x[3].contains("already confirmed")), "{r:?}");
    assert!(r.iter().any(|x| x[..3] == ["confirmed", "omar", "t"]), "{r:?}");
    // Each decision once: none lost to the kill, none made twice by the restart. (Not in time
    // order: a simulated city that ended cleanly starts its clock again.)
    let mut statuses: Vec<&str> = r.iter().map(|x| x[0].as_str()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, ["candidate", "confirmation", "confirmed", "ignored"], "{r:?}");
}

/// Retroactive search survives a restart: a plate that drove only during the first run is listed
/// during the second, and the reads the first run kept (in its Parquet files) yield its hit.
#[test]
fn an_entry_added_after_a_restart_finds_the_reads_of_the_run_before() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = |plates: &str| {
        format!(
            "[city]\nfps = 5.0\n\n[simulation]\ncameras = 2\npedestrians_per_camera = 2\nvehicles_per_minute = 2\n\
             ocr_error_rate = 0.0\nplates = [{plates}]\n\n\
             [[users]]\nname = \"amina\"\nrole = \"analyst\"\npassword_env = \"PW_amina\"\n\n"
        )
    };
    let env = [("PW_amina", "amina-pw-1")];
    let args = ["run", "--config", "city.toml", "--duration", "120"];
    let ask = |city: &City, sql: &str| city.rows_as("amina", "amina-pw-1", sql);
    let wait = |city: &City, sql: &str| city.wait_rows_as("amina", "amina-pw-1", sql);
    // First run: the plate drives past the cameras; nobody lists it.
    std::fs::write(tmp.path().join("city.toml"), config("\"4821-د-33\"")).unwrap();
    let city = City::start_with(tmp.path(), &args, &env);
    wait(&city, "SELECT event_id FROM plate_reads WHERE plate = '4821-د-33'");
    city.stop();
    // Second run: the plate no longer drives; an analyst lists it.
    std::fs::write(tmp.path().join("city.toml"), config("")).unwrap();
    let city = City::start_with(tmp.path(), &args, &env);
    ask(
        &city,
        "INSERT INTO watchlist (plate, reason, legal_basis, authority, expires_at) VALUES \
         ('4821-D-33', 'stolen vehicle', 'DGSN-2026-00301', 'DGSN Rabat', '2026-09-01T00:00:00Z')",
    );
    let hit = wait(&city, "SELECT status FROM hits WHERE plate = '4821-د-33'");
    let live = ask(&city, "SELECT count(*) FROM plate_reads WHERE plate = '4821-د-33'");
    city.stop();
    assert_eq!(hit[0][0], "candidate", "{hit:?}");
    assert_eq!(live[0][0], "0", "the plate drove in the second run too: the hit proves nothing");
    // Replaying the lake sees the entry the analyst added (kept in the watchlist's journal, not
    // in the configuration), and so the first run's reads of the plate, as the live join did.
    std::fs::write(
        tmp.path().join("listed.sql"),
        "CREATE RULE listed AS SELECT p.event_id, w.plate FROM plate_reads p JOIN watchlist w ON p.plate = w.plate;\n",
    )
    .unwrap();
    common::vigil(&["replay", "--events", "city", "--rules", "listed.sql", "--out", "replayed"], tmp.path());
    let replayed = common_duckdb(&format!(
        "SELECT count(*) FROM read_parquet('{}/replayed/listed.parquet') WHERE plate = '4821-د-33'",
        tmp.path().display()
    ));
    assert!(replayed >= 1, "replay did not see the entry added from psql");
}

/// The watchlist as analysts left it survives a restart: an entry added from psql is there after
/// the engine is stopped and started again, and one deleted from psql stays deleted, the
/// configuration's too. The configuration's entries are loaded once however often the city
/// restarts, and one taken out of the configuration is gone.
/// A change that cannot be journaled (its directory is a file here, as a broken disk would
/// refuse the write) is refused with the cause, the engine goes on, and the same statement is
/// taken once the journal can be written again.
#[test]
fn a_change_that_cannot_be_journaled_is_refused_and_the_engine_goes_on() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let city_toml = "[city]\nfps = 5.0\n\n[simulation]\ncameras = 1\npedestrians_per_camera = 2\n";
    std::fs::write(tmp.path().join("city.toml"), city_toml).unwrap();
    let journal = tmp.path().join("city/catalog/tables/watchlist");
    std::fs::create_dir_all(journal.parent().unwrap()).unwrap();
    std::fs::write(&journal, b"not a directory").unwrap();
    let args = ["run", "--config", "city.toml", "--duration", "120"];
    let city = City::start_with(tmp.path(), &args, &[("VIGIL_PG_PASSWORD", PASSWORD)]);
    let insert = "INSERT INTO watchlist (plate, reason, legal_basis, authority, expires_at) VALUES \
                  ('4821-D-33', 'stolen vehicle', 'DGSN-2026-00301', 'DGSN Rabat', '2026-09-01T00:00:00Z')";
    let err = city.fails(insert);
    assert!(err.contains("the change to watchlist was not kept"), "{err}");
    // The engine goes on: events still come, and the entry is not there.
    let listed = "SELECT plate FROM watchlist WHERE plate = '4821-د-33'";
    let count =
        || city.rows_as("vigil", PASSWORD, "SELECT count(*) FROM detections")[0][0].parse::<u64>().unwrap();
    let before = count();
    std::thread::sleep(Duration::from_secs(2));
    let after = count();
    assert!(after > before, "no events after the refusal: {before} then {after}");
    assert!(city.rows_as("vigil", PASSWORD, listed).is_empty());
    // Mended: the same statement is journaled and taken.
    std::fs::remove_file(&journal).unwrap();
    assert!(city.ok(insert).contains("INSERT 0 1"));
    city.wait_rows_as("vigil", PASSWORD, listed);
    city.stop();
    assert!(journal.is_dir(), "the entry was not journaled");
}

#[test]
fn watchlist_entries_added_and_deleted_from_psql_survive_a_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let entry = |plate: &str, basis: &str| {
        format!(
            "[[watchlist]]\nplate = \"{plate}\"\nlegal_basis = \"{basis}\"\nexpires_at = \"2026-09-01T00:00:00Z\"\n\n"
        )
    };
    let config = |entries: &str| {
        let city = "[city]\nfps = 5.0\n\n[simulation]\ncameras = 1\npedestrians_per_camera = 2\nvehicles_per_minute = 2\n\n\
                    [[users]]\nname = \"amina\"\nrole = \"analyst\"\npassword_env = \"PW_amina\"\n\n";
        std::fs::write(tmp.path().join("city.toml"), format!("{city}{entries}")).unwrap();
    };
    let kept = entry("12345-ب-6", "DGSN-2026-00118");
    config(&format!("{kept}{}", entry("55555-ب-12", "DGSN-2026-00119")));
    let env = [("PW_amina", "amina-pw-2")];
    let args = ["run", "--config", "city.toml", "--duration", "120"];
    let ask = |city: &City, sql: &str| city.rows_as("amina", "amina-pw-2", sql);
    let city = City::start_with(tmp.path(), &args, &env);
    ask(
        &city,
        "INSERT INTO watchlist (plate, reason, legal_basis, authority, expires_at) VALUES \
         ('4821-D-33', 'stolen vehicle', 'DGSN-2026-00301', 'DGSN Rabat', '2026-09-01T00:00:00Z'), \
         ('777-A-1', 'stolen vehicle', 'DGSN-2026-00302', 'DGSN Rabat', '2026-09-01T00:00:00Z')",
    );
    // The entries show once the engine has taken them (a tick); then one is deleted, and one
    // of the configuration's.
    let deadline = Instant::now() + Duration::from_secs(20);
    while ask(&city, "SELECT plate FROM watchlist").len() < 4 {
        assert!(Instant::now() < deadline, "the entries never showed");
        std::thread::sleep(Duration::from_millis(200));
    }
    ask(&city, "DELETE FROM watchlist WHERE plate IN ('777-أ-1', '55555-ب-12')");
    city.stop();
    // The deleted entry's plate has left the disk too (the journal is folded at the last sweep).
    let journal: Vec<u8> = std::fs::read_dir(tmp.path().join("city/catalog/tables/watchlist"))
        .expect("the journal")
        .flatten()
        .flat_map(|f| std::fs::read(f.path()).unwrap())
        .collect();
    let holds = |plate: &str| journal.windows(plate.len()).any(|w| w == plate.as_bytes());
    assert!(holds("4821-د-33") && !holds("777-أ-1"), "the deleted plate is still in the journal");
    let city = City::start_with(tmp.path(), &args, &env);
    // The restored entries reach the table as the engine applies them (within a tick or two).
    let deadline = Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let listed = ask(&city, "SELECT plate, legal_basis FROM watchlist ORDER BY plate");
        if !listed.is_empty() || Instant::now() > deadline {
            break listed;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // Give a wrongly restored deleted entry the time to show up too.
    std::thread::sleep(Duration::from_millis(500));
    let again = ask(&city, "SELECT plate, legal_basis FROM watchlist ORDER BY plate");
    let log = city.log.lock().unwrap().clone();
    city.stop();
    let both = [["12345-ب-6", "DGSN-2026-00118"], ["4821-د-33", "DGSN-2026-00301"]];
    assert!(listed == both || listed == both[..1] || listed == both[1..], "{listed:?}");
    assert_eq!(again, both, "{again:?}");
    assert!(
        log.contains("the configuration's entry for 55555-ب-12")
            && log.contains("take it out of the configuration"),
        "the operator is not told that a configured entry stays deleted: {log}"
    );
    // Once more with the configuration's entry taken out of it: it is not listed any more.
    config(&entry("55555-ب-12", "DGSN-2026-00119"));
    let city = City::start_with(tmp.path(), &args, &env);
    std::thread::sleep(Duration::from_millis(1500));
    let third = ask(&city, "SELECT plate, legal_basis FROM watchlist ORDER BY plate");
    city.stop();
    assert_eq!(third, both[1..], "{third:?}");
}

/// An analyst tries a windowed count ad hoc before making it a rule: `GROUP BY tumble(...)` and
/// `hop(...)`, `window_start` as a column, and the window tables of RisingWave and Flink
/// (`FROM TUMBLE(stream, time, size)`) answer as DuckDB does over the same rows in Parquet.
#[test]
fn ad_hoc_windows_give_what_duckdb_gives_over_the_same_rows() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let city = City::start(tmp.path(), 45);
    // Rows before 20:00:20 are all in once rows of 20:00:35 are (cameras lag by a few seconds).
    city.detections_until("2026-06-14T20:00:35Z");
    let before = "event_time < TIMESTAMP '2026-06-14T20:00:20Z'";
    let ad_hoc = [
        format!(
            "SELECT camera_id, CAST(window_start AS BIGINT), count(*) FROM detections WHERE {before} \
             GROUP BY camera_id, tumble(event_time, INTERVAL '10 seconds') ORDER BY 1, 2"
        ),
        format!(
            "SELECT CAST(window_start AS BIGINT), CAST(window_end AS BIGINT), count(*), count(DISTINCT camera_id) \
             FROM HOP(detections, event_time, INTERVAL '5 seconds', INTERVAL '15 seconds') WHERE {before} \
             GROUP BY window_start ORDER BY 1"
        ),
        format!(
            "SELECT d.class, CAST(window_end AS BIGINT), max(d.score) FROM TUMBLE(detections, event_time, INTERVAL '4 seconds') AS d \
             WHERE {before} GROUP BY d.class, window_end HAVING count(*) > 10 ORDER BY 1, 2"
        ),
    ]
    .map(|sql| rows(&city.ok(&sql)));
    let session = city.fails(
        "SELECT zone_id, window_start, count(*) FROM detections GROUP BY zone_id, session(event_time, INTERVAL '30 seconds')",
    );
    let ungrouped = city.fails("SELECT * FROM TUMBLE(detections, event_time, INTERVAL '10 seconds')");
    // A row in 86,400,000 windows would take the engine's memory: refused before any is made.
    let too_many = city.fails(
        "SELECT window_start, count(*) FROM detections GROUP BY hop(event_time, INTERVAL '1 millisecond', INTERVAL '1 day')",
    );
    city.stop();
    assert!(
        session.contains("session() windows are kept by rules") && session.contains("CREATE RULE"),
        "{session}"
    );
    assert!(ungrouped.contains("without GROUP BY window_start") && ungrouped.contains("HINT"), "{ungrouped}");
    assert!(
        too_many.contains("falls in 86400000 windows") && too_many.contains("longer slide"),
        "{too_many}"
    );
    let lake = format!("read_parquet('{}/city/detections/**/*.parquet')", tmp.path().display());
    let before = "event_time < TIMESTAMPTZ '2026-06-14 20:00:20+00'";
    // Hopping windows of 15 s every 5 s: each row is in the three that start at its 5 s bucket
    // and the two buckets before.
    let oracle = [
        format!(
            "SELECT camera_id, epoch_ms(time_bucket(INTERVAL '10 seconds', event_time)), count(*) FROM {lake} \
             WHERE {before} GROUP BY ALL ORDER BY 1, 2"
        ),
        format!(
            "SELECT epoch_ms(s), epoch_ms(s + INTERVAL '15 seconds'), count(*), count(DISTINCT camera_id) \
             FROM (SELECT camera_id, time_bucket(INTERVAL '5 seconds', event_time) - k * INTERVAL '5 seconds' AS s \
                   FROM {lake}, (VALUES (0), (1), (2)) t(k) WHERE {before}) GROUP BY s ORDER BY 1"
        ),
        format!(
            "SELECT class, epoch_ms(time_bucket(INTERVAL '4 seconds', event_time)) + 4000, max(score) FROM {lake} \
             WHERE {before} GROUP BY ALL HAVING count(*) > 10 ORDER BY 1, 2"
        ),
    ]
    .map(|sql| common::duckdb(&sql));
    for (i, (got, want)) in ad_hoc.iter().zip(&oracle).enumerate() {
        assert!(want.len() >= 3, "query {i}: too few windows to tell: {want:?}");
        // (Scores as floats: psql prints float4 with fewer digits than DuckDB.)
        let same = got.len() == want.len()
            && got.iter().zip(want).all(|(g, w)| {
                g.len() == w.len()
                    && g.iter().zip(w).all(|(a, b)| {
                        a == b || matches!((a.parse::<f64>(), b.parse::<f64>()), (Ok(x), Ok(y)) if (x - y).abs() <= 1e-5 * y.abs().max(1.0))
                    })
            });
        assert!(same, "query {i}: ad hoc {got:?}\nDuckDB {want:?}");
    }
}

/// An analyst writes a query's rows to a file on their own machine with psql's `\copy`: CSV
/// with a header, read back by pyarrow (a NULL told from an empty text, a quoted comma, quote
/// and line break intact), and COPY's text format on psql's output. COPY that would read or
/// write the server's files is refused with the way to do it.
#[test]
fn psql_copy_writes_a_querys_rows_to_a_file_where_psql_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let city = City::start(tmp.path(), 40);
    city.detections_until("2026-06-14T20:00:15Z");
    let counts = "SELECT camera_id, class, count(*) AS n FROM detections \
                  WHERE event_time < TIMESTAMP '2026-06-14T20:00:08Z' GROUP BY camera_id, class ORDER BY camera_id, class";
    let query = format!(
        "SELECT camera_id, class, n, CASE WHEN camera_id = 0 THEN NULL ELSE '' END AS blank, \
         'a,\"b\"' || chr(10) || 'c\\d' AS odd FROM ({counts}) ORDER BY camera_id, class"
    );
    let file = tmp.path().join("counts.csv");
    let copied = city.ok(&format!("\\copy ({query}) to '{}' with (format csv, header)", file.display()));
    let selected = rows(&city.ok(counts));
    let text = city.ok(&format!("COPY ({query}) TO STDOUT"));
    let from_server = city.fails("COPY (SELECT 1) TO '/tmp/vigil-copy.csv'");
    let load = city.fails("COPY watchlist FROM STDIN");
    city.stop();
    assert!(selected.len() >= 3, "too few rows to tell: {selected:?}");
    assert_eq!(copied.trim(), format!("COPY {}", selected.len()), "the count of rows copied");
    // pyarrow, told that only an unquoted nothing is a NULL.
    let script = "import json, sys, pyarrow.csv as c\n\
        t = c.read_csv(sys.argv[1], convert_options=c.ConvertOptions(strings_can_be_null=True, \
        quoted_strings_can_be_null=False, column_types={'blank': 'string'}))\n\
        print(json.dumps(t.to_pylist()))";
    let out = Command::new(common::python()).args(["-c", script]).arg(&file).output().expect("python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(read.len(), selected.len(), "{read:?}");
    for (row, want) in read.iter().zip(&selected) {
        let got = [
            row["camera_id"].to_string(),
            row["class"].as_str().unwrap_or_default().to_owned(),
            row["n"].to_string(),
        ];
        assert_eq!(got.as_slice(), want.as_slice(), "{row}");
        let blank = if want[0] == "0" { serde_json::Value::Null } else { serde_json::json!("") };
        assert_eq!(row["blank"], blank, "{row}");
        assert_eq!(row["odd"], "a,\"b\"\nc\\d", "{row}");
    }
    // The text format: tab-separated, \N for NULL, line breaks and backslashes escaped.
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), selected.len(), "{text}");
    for (line, want) in lines.iter().zip(&selected) {
        let blank = if want[0] == "0" { "\\N" } else { "" };
        assert_eq!(*line, format!("{}\t{}\t{}\t{blank}\ta,\"b\"\\nc\\\\d", want[0], want[1], want[2]));
    }
    assert!(
        from_server.contains("would write on the server") && from_server.contains("\\copy"),
        "{from_server}"
    );
    assert!(load.contains("INSERT INTO watchlist"), "{load}");
}

/// Cursors as psql uses them. With `\set FETCH_COUNT 7` psql reads a SELECT through one (BEGIN,
/// DECLARE, FETCH FORWARD 7 until fewer come, CLOSE, COMMIT): the same text as the plain
/// SELECT's. FETCH and MOVE move as PostgreSQL 15's do, its answers to the same script taken on
/// this machine; a failed block refuses what follows until ROLLBACK (or, with psql's
/// ON_ERROR_ROLLBACK, goes on after it rolls back to its savepoint); an ERASE closes every
/// session's cursors.
#[test]
fn psql_reads_queries_through_cursors_as_postgresql_does() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let city = City::start(tmp.path(), 40);
    // Rows that no longer change once the city's clock has passed them.
    city.detections_until("2026-06-14T20:00:15Z");
    let query = "SELECT camera_id, class, event_time, score, zone_id FROM detections \
                 WHERE event_time < TIMESTAMP '2026-06-14T20:00:08Z' ORDER BY event_time, camera_id, score, class";
    let run = |args: &[&str], script: &str| {
        let file = tmp.path().join("script.sql");
        std::fs::write(&file, script).unwrap();
        let out = city
            .connect(Command::new("psql"), "vigil")
            .args(args)
            .arg("-f")
            .arg(&file)
            .env("PGPASSWORD", PASSWORD)
            .stdin(Stdio::null())
            .output()
            .expect("psql runs");
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (plain, e) = run(&["-A"], &format!("{query};\n"));
    assert!(e.is_empty(), "{e}");
    let (fetched, e) = run(&["-A", "-v", "FETCH_COUNT=7"], &format!("{query};\n"));
    assert!(e.is_empty(), "{e}");
    let rows = plain.lines().count().saturating_sub(2);
    assert!(rows > 7 * 3, "too few rows to read in pieces: {plain}");
    // (Rows of equal keys may come in either order: compared as sorted lines.)
    let sorted = |s: &str| {
        let mut l: Vec<&str> = s.lines().collect();
        l.sort_unstable();
        l.join("\n")
    };
    assert_eq!(sorted(&fetched), sorted(&plain), "FETCH_COUNT changes only how the rows come");
    assert!(plain.ends_with(&format!("({rows} rows)\n")), "{plain}");
    // A query that fails at DECLARE: its error, and the block psql opened ends.
    let (out, e) = run(&["-At", "-v", "FETCH_COUNT=7"], "SELECT colour FROM detections;\nSELECT 42;\n");
    assert!(e.contains("colour") && !e.contains("aborted"), "{e}");
    assert_eq!(out, "42\n", "{e}");
    let script = "BEGIN;
DECLARE c SCROLL CURSOR WITH HOLD FOR SELECT * FROM generate_series(1, 5);
FETCH 2 FROM c;
FETCH PRIOR FROM c;
MOVE ALL IN c;
COMMIT;
FETCH BACKWARD 2 FROM c;
CLOSE c;
FETCH c;
BEGIN;
DECLARE d CURSOR FOR SELECT * FROM generate_series(1, 3);
FETCH nosuch;
FETCH d;
ROLLBACK;
FETCH d;
DECLARE e NO SCROLL CURSOR WITH HOLD FOR SELECT 1;
FETCH e;
FETCH e;
FETCH PRIOR FROM e;
";
    let (out, e) = run(&["-At"], script);
    // PostgreSQL 15, this script but its last four lines (psql -At).
    let postgres = "BEGIN\nDECLARE CURSOR\n1\n2\n1\nMOVE 4\nCOMMIT\n5\n4\nCLOSE CURSOR\nBEGIN\nDECLARE CURSOR\nROLLBACK\n";
    assert_eq!(out, format!("{postgres}DECLARE CURSOR\n1\n"), "{e}");
    let errors: Vec<&str> = e.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 5, "{e}");
    for (line, says) in [
        (errors[0], "cursor \"c\" does not exist"),
        (errors[1], "cursor \"nosuch\" does not exist"),
        (errors[2], "current transaction is aborted, commands ignored until end of transaction block"),
        (errors[3], "cursor \"d\" does not exist"),
        (errors[4], "cursor \"e\" can only scan forward"),
    ] {
        assert!(line.contains(says), "{line}");
    }
    assert!(e.contains("DECLARE it (again)") && e.contains("end the block with ROLLBACK"), "{e}");
    // A block with an error, with and without psql's ON_ERROR_ROLLBACK (which sets a savepoint
    // before each statement and rolls back to it after a failed one): PostgreSQL 15's answers.
    let script = "BEGIN;\nSELECT 1;\nSELECT * FROM nosuch_table;\nSELECT 2;\nSAVEPOINT s;\nRELEASE SAVEPOINT s;\nCOMMIT;\n";
    let (out, e) = run(&["-At", "-v", "ON_ERROR_ROLLBACK=on"], script);
    assert_eq!(out, "BEGIN\n1\n2\nSAVEPOINT\nRELEASE\nCOMMIT\n", "{e}");
    assert_eq!(e.matches("ERROR").count(), 1, "{e}");
    let (out, e) = run(&["-At", "-v", "ON_ERROR_ROLLBACK=off"], script);
    assert_eq!(out, "BEGIN\n1\nROLLBACK\n", "{e}");
    assert_eq!(e.matches("current transaction is aborted").count(), 3, "{e}");
    // An erasure closes the cursors of every session: their rows may hold what was erased.
    // (pg_cursors lists the session's cursors, as PostgreSQL's view does.)
    let (out, e) = run(
        &["-At"],
        "DECLARE kept CURSOR WITH HOLD FOR SELECT 1;\n\
         SELECT name, is_holdable, is_scrollable, statement FROM pg_catalog.pg_cursors;\n\
         ERASE PLATE '99999-A-9';\nSELECT count(*) FROM pg_cursors;\nFETCH kept;\n",
    );
    assert!(
        out.starts_with("DECLARE CURSOR\nkept|t|t|DECLARE kept CURSOR WITH HOLD FOR SELECT 1\n")
            && out.ends_with("\n0\n"),
        "{out}"
    );
    assert!(e.contains("cursor \"kept\" does not exist") && e.contains("ERASE"), "{e}");
    city.stop();
}

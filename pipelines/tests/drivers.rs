//! PostgreSQL drivers other than psql against a running demo city: psycopg 3 (PyPI, with
//! parameters, server-side binding) and Rust's `tokio-postgres` (prepared statements, binary
//! results), both over the extended query protocol; answers checked against the same queries
//! through psql's simple protocol.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};

const PASSWORD: &str = "drivers-test-password";

struct City {
    child: Child,
    port: u16,
}

impl City {
    fn start(dir: &Path) -> City {
        let (child, port, _log) = common::spawn_listening(
            Command::new(env!("CARGO_BIN_EXE_vigil"))
                .args(["demo", "--duration", "120", "--out", "city", "--quiet", "--pg-listen", "127.0.0.1:0"])
                .env("VIGIL_PG_PASSWORD", PASSWORD)
                .current_dir(dir)
                .stdout(Stdio::null()),
        );
        City { child, port }
    }

    fn psql(&self, sql: &str) -> String {
        common::psql_try(self.port, PASSWORD, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

impl Drop for City {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the demo has density rows for gate-a (its first window closes after a few seconds).
fn wait_for_density(city: &City) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    while city.psql("SELECT count(*) FROM zone_density WHERE zone = 'gate-a'").trim() == "0" {
        assert!(std::time::Instant::now() < deadline, "no zone_density rows for gate-a");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

#[test]
fn psycopg_binds_parameters_streams_a_subscription_and_inserts_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let city = City::start(dir.path());
    wait_for_density(&city);
    let script = r#"
import datetime, sys, time, psycopg
port, password = sys.argv[1], sys.argv[2]
with psycopg.connect(host="127.0.0.1", port=port, user="vigil", password=password, dbname="vigil", autocommit=True) as conn:
    cur = conn.cursor()
    # Server-side binding: the extended protocol, $1 in the statement, the value apart.
    cur.execute("SELECT zone, persons FROM zone_density WHERE zone = %s", ("gate-a",))
    rows = cur.fetchall()
    assert rows and all(z == "gate-a" for z, _ in rows), rows
    assert all(isinstance(p, float) for _, p in rows), rows
    print("zone", len(rows))
    # A value that would be SQL if it were spliced in is only a value.
    cur.execute("SELECT count(*) FROM zone_density WHERE zone = %s", ("gate-a' OR '1'='1",))
    print("injection", cur.fetchone()[0])
    cur.execute("SELECT count(*) FROM zone_density WHERE persons >= %s", (0.0,))
    print("numeric", cur.fetchone()[0] > 0)
    # Timestamps come as datetimes, in UTC, and go back as parameters, in text and in binary.
    first = cur.execute("SELECT min(window_end) FROM zone_density WHERE zone = %s", ("gate-a",)).fetchone()[0]
    print("datetime", type(first).__name__, first.utcoffset(), first.isoformat())
    for _ in range(100):
        later = cur.execute("SELECT min(window_end) FROM zone_density WHERE zone = 'gate-a' AND window_end > %s", (first,)).fetchone()[0]
        if later:
            break
        time.sleep(0.1)
    binary = cur.execute("SELECT min(window_end) FROM zone_density WHERE zone = 'gate-a' AND window_end > %s", (first,), binary=True).fetchone()[0]
    print("next", later.isoformat(), binary == later)
    # A difference of instants is a timedelta (text and binary), its epoch the same seconds with
    # their fraction; an infinite float is a float.
    since = "SELECT TIMESTAMPTZ '2026-06-16 22:00:23.4+00' - min(window_end), extract(epoch from TIMESTAMPTZ '2026-06-16 22:00:23.4+00' - min(window_end)), 'inf'::float8 FROM zone_density"
    span, secs, inf = cur.execute(since).fetchone()
    bspan, bsecs, binf = cur.execute(since, binary=True).fetchone()
    print("interval", type(span).__name__, span.total_seconds(), secs, inf, bspan == span, bsecs == secs, binf == inf)
    # A window a driver binds: make_interval with a parameter by name (text and binary).
    window = "SELECT make_interval(mins => %s), make_interval(0, 0, 0, %s, 0, 0, %s)"
    made, bmade = cur.execute(window, (5, 2, 1.5)).fetchone(), cur.execute(window, (5, 2, 1.5), binary=True).fetchone()
    print("make_interval", made[0].total_seconds(), made[1].total_seconds(), bmade == made)
    # A window bound as a timedelta (psycopg sends it binary): the same rows as make_interval's.
    # (The first windows, which the city has written: the same whenever it is asked.)
    window = "SELECT count(*) FROM zone_density WHERE window_end > TIMESTAMPTZ '2026-06-14 20:00:03+00' - %s \
              AND window_end <= TIMESTAMPTZ '2026-06-14 20:00:01+00'"
    td = cur.execute(window, (datetime.timedelta(seconds=2, microseconds=500000),)).fetchone()[0]
    mi = cur.execute(window.replace("%s", "make_interval(secs => 2.5)")).fetchone()[0]
    print("timedelta", td == mi, td > 0)
    # A list bound to = ANY(%s) (psycopg's way for IN): texts and integers, as IN reads them.
    plates = ["12345-ب-6", "4821-د-33", "it's, \"odd\" {}", "NULL"]
    listed = cur.execute("SELECT count(*) FROM watchlist WHERE plate = ANY(%s)", (plates,)).fetchone()[0]
    spelled = cur.execute("SELECT count(*) FROM watchlist WHERE plate IN ('12345-ب-6', '4821-د-33')").fetchone()[0]
    cams = cur.execute("SELECT count(*) FROM zone_density WHERE camera_id = ANY(%s) AND window_end <= TIMESTAMPTZ '2026-06-14 20:00:01+00'", ([0, 1],)).fetchone()[0]
    print("any", listed == spelled, listed > 0, cams)
    # array_agg is PostgreSQL's array: a Python list, in text and binary.
    lists = "SELECT array_agg(persons ORDER BY window_end), ARRAY['gate-a', 'fan zone', NULL] FROM zone_density WHERE zone = %s"
    (counts, names), (bcounts, bnames) = (cur.execute(lists, ("gate-a",)).fetchone(), cur.execute(lists, ("gate-a",), binary=True).fetchone())
    print("arrays", type(counts).__name__, len(counts) > 0, all(isinstance(c, float) for c in counts), names, bnames == names, bcounts[: len(counts)] == counts)
    # A column the query did not name is PostgreSQL's (count); EXPLAIN with a bound parameter.
    cur.execute("SELECT count(*) FROM zone_density WHERE zone = %s", ("gate-a",))
    print("named", cur.description[0].name)
    # Two columns of one name: the second is told apart (a dict row would keep only one).
    cur.execute("SELECT current_user, session_user, count(*), count(*) FROM zone_density WHERE zone = %s", ("gate-a",))
    print("apart", ",".join(d.name for d in cur.description))
    plan = cur.execute("EXPLAIN SELECT zone FROM zone_density WHERE zone = %s", ("gate-a",)).fetchall()
    print("explain", ",".join(kind for kind, _ in plan), "gate-a" in plan[0][1])
    # A statement vigil answers itself, with parameters: a watchlist entry.
    cur.execute(
        "INSERT INTO watchlist (plate, reason, legal_basis, authority, expires_at) VALUES (%s, %s, %s, %s, %s)",
        ("777-B-7", "stolen vehicle", "DGSN-2026-00777 (it's quoted)", "DGSN Rabat", "2026-09-01T00:00:00Z"),
    )
    # (The engine applies it at its next step.)
    for _ in range(100):
        row = cur.execute("SELECT legal_basis FROM watchlist WHERE plate = %s", ("777-ب-7",)).fetchone()
        if row:
            break
        time.sleep(0.1)
    print("inserted", row[0] if row else None)
    # What a GUI tool's browser asks: PostgreSQL's catalog, with a bound parameter.
    cols = cur.execute(
        "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a "
        "JOIN pg_catalog.pg_class c ON c.oid = a.attrelid WHERE c.relname = %s AND a.attnum > 0 ORDER BY a.attnum",
        ("zone_density",),
    ).fetchall()
    print("columns", ",".join(name for name, _ in cols))
    print("types", ",".join(sorted({t for _, t in cols})))
    tables = cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'").fetchall()
    print("tables", ",".join(sorted(t for (t,) in tables)))
# Autocommit off: psycopg wraps statements in BEGIN ... COMMIT, which vigil accepts.
with psycopg.connect(host="127.0.0.1", port=port, user="vigil", password=password, dbname="vigil") as conn:
    print("transaction", conn.execute("SELECT count(*) FROM zone_density WHERE zone = %s", ("fan-zone",)).fetchone()[0] > 0)
    # Named (server-side) cursors: DECLARE, the cursor's portal described, FETCH FORWARD as the
    # rows are read (itersize at a time), CLOSE when the block ends; the same name again after.
    for _ in range(2):
        with conn.cursor("many_rows") as named:
            named.itersize = 400
            named.execute("SELECT n, 'n' || n AS label FROM generate_series(1, 1000) AS n WHERE n > %s", (0,))
            head = named.fetchmany(3)
            rest = list(named)
            names = ",".join(d.name for d in named.description)
    print("named_cursor", names, head, len(rest), sum(v for v, _ in rest))
    # In binary, with a parameter, over the city's rows.
    with conn.cursor("binary_rows", binary=True) as named:
        named.execute("SELECT zone, window_end FROM zone_density WHERE zone = %s ORDER BY window_end", ("gate-a",))
        rows = named.fetchmany(2) + named.fetchall()
    print("binary_cursor", len(rows) > 0, all(z == "gate-a" for z, _ in rows), type(rows[0][1]).__name__, rows == sorted(rows))
    # A nested block is a savepoint: an error inside it is rolled back to it, and the outer
    # block goes on (an error outside one would fail the block until ROLLBACK).
    try:
        with conn.transaction():
            conn.execute("SELECT * FROM nosuch_table")
    except psycopg.errors.UndefinedTable:
        pass
    print("savepoint", conn.info.transaction_status.name, conn.execute("SELECT 7").fetchone()[0])
    # pg_cursors lists the session's cursors; a named cursor closed before it ran is looked up
    # there first (psycopg), and not closed.
    listed = conn.cursor("listed", withhold=True)
    listed.execute("SELECT 1")
    print("pg_cursors", conn.execute("SELECT name, is_holdable FROM pg_catalog.pg_cursors").fetchall())
    listed.close()
    with conn.cursor("never_ran"):
        pass
    print("never_ran", conn.execute("SELECT count(*) FROM pg_catalog.pg_cursors").fetchone()[0])
    print("in_block", conn.info.transaction_status.name)
    conn.commit()
    print("committed", conn.info.transaction_status.name)
# SET TimeZone: the driver is told the zone (ParameterStatus); instants come as that zone's wall
# clock, the same instants in text and binary, and a day is the zone's (PostgreSQL 15's answers).
with psycopg.connect(host="127.0.0.1", port=port, user="vigil", password=password, dbname="vigil", autocommit=True) as conn:
    conn.execute("SET TimeZone = 'Africa/Casablanca'")
    local = "SELECT TIMESTAMPTZ '2026-06-14 23:30:00+00', date_trunc('day', TIMESTAMPTZ '2026-06-14 23:30:00+00')"
    (t, day), (bt, bday) = conn.execute(local).fetchone(), conn.execute(local, binary=True).fetchone()
    shown = conn.execute("SHOW TimeZone").fetchone()[0]
    print("timezone", conn.info.parameter_status("TimeZone"), shown, t.isoformat(), day.isoformat(), bt == t, bday == day)
# A SUBSCRIBE-style stream: the rule's rows, then its changes, as COPY rows. Leaving it early
# (an exception out of the block) makes psycopg send a cancel request, which stops it on the
# server; the connection then serves the next statement.
class Enough(Exception):
    pass
with psycopg.connect(host="127.0.0.1", port=port, user="vigil", password=password, dbname="vigil", autocommit=True) as conn:
    lines = []
    try:
        with conn.cursor().copy("COPY (SUBSCRIBE dense_gate) TO STDOUT") as copy:
            for block in copy:
                lines += bytes(block).decode().splitlines()
                if len(lines) >= 3:
                    raise Enough()
    except Enough:
        pass
    print("subscribe", len(lines), lines[0].count("\t"))
    print("after", conn.execute("SELECT count(*) FROM zone_density WHERE zone = %s", ("gate-a",)).fetchone()[0] > 0)
"#;
    city.psql(
        "CREATE RULE dense_gate AS SELECT zone, window_end, persons FROM zone_density WHERE zone = 'gate-a'",
    );
    let out = Command::new(common::python())
        .args(["-c", script, &city.port.to_string(), PASSWORD])
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let said = |key: &str| -> String {
        stdout.lines().find_map(|l| l.strip_prefix(&format!("{key} "))).unwrap_or_default().to_owned()
    };
    // The oracle: the same query through psql's simple protocol, with the value in the text.
    // (The demo goes on meanwhile: as many rows or more.)
    let psql_rows: usize =
        city.psql("SELECT count(*) FROM zone_density WHERE zone = 'gate-a'").trim().parse().unwrap();
    let bound: usize = said("zone").parse().unwrap();
    assert!(bound > 0 && bound <= psql_rows, "psycopg {bound} rows, psql {psql_rows}");
    assert_eq!(said("injection"), "0");
    assert_eq!(said("numeric"), "True");
    assert_eq!(said("named"), "count", "{stdout}");
    assert_eq!(said("apart"), "current_user,session_user,count,count_2", "{stdout}");
    assert_eq!(said("explain"), "logical_plan,physical_plan True", "{stdout}");
    // The oracle for timestamps: psql's text of the same values, read back by psql.
    let (first, next) = (said("datetime"), said("next"));
    let first = first.strip_prefix("datetime 0:00:00 ").unwrap_or_else(|| panic!("a UTC datetime: {stdout}"));
    let psql_first = city.psql("SELECT min(window_end) FROM zone_density WHERE zone = 'gate-a'");
    let iso = |pg: &str| pg.trim().replacen(' ', "T", 1).replace("+00", "+00:00");
    assert_eq!(iso(&psql_first), first, "psql prints what psycopg reads");
    let psql_next = city.psql(&format!(
        "SELECT min(window_end) FROM zone_density WHERE zone = 'gate-a' AND window_end > '{}'",
        psql_first.trim()
    ));
    assert_eq!(format!("{} True", iso(&psql_next)), next, "a bound datetime selects as its text does");
    // The demo's first window ends at 20:00:01: PostgreSQL 15 prints the same difference as
    // `2 days 02:00:22.4` and its epoch as 180022.4.
    assert_eq!(said("interval"), "timedelta 180022.4 180022.4 inf True True True", "{stdout}");
    assert_eq!(said("make_interval"), "300.0 172801.5 True", "{stdout}");
    assert_eq!(said("timedelta"), "True True", "{stdout}");
    assert_eq!(said("any"), "True True 2", "{stdout}");
    let psql_span = city.psql(
        "SELECT TIMESTAMPTZ '2026-06-16 22:00:23.4+00' - min(window_end), 'inf'::float8 FROM zone_density",
    );
    assert_eq!(psql_span.trim(), "2 days 02:00:22.4|Infinity");
    assert_eq!(said("arrays"), "list True True ['gate-a', 'fan zone', None] True True", "{stdout}");
    assert_eq!(said("inserted"), "DGSN-2026-00777 (it's quoted)");
    assert_eq!(said("transaction"), "True");
    assert_eq!(said("named_cursor"), "n,label [(1, 'n1'), (2, 'n2'), (3, 'n3')] 997 500494", "{stdout}");
    assert_eq!(said("binary_cursor"), "True True datetime True", "{stdout}");
    assert_eq!(said("savepoint"), "INTRANS 7", "{stdout}");
    assert_eq!(said("pg_cursors"), "[('listed', True)]", "{stdout}");
    assert_eq!(said("never_ran"), "0", "{stdout}");
    assert_eq!((said("in_block"), said("committed")), ("INTRANS".into(), "IDLE".into()), "{stdout}");
    assert_eq!(
        said("timezone"),
        "Africa/Casablanca Africa/Casablanca 2026-06-15T00:30:00+01:00 2026-06-15T00:00:00+01:00 True True",
        "{stdout}"
    );
    // The catalog's columns are SHOW COLUMNS's, in order; its tables SHOW STREAMS's.
    let shown = |sql: &str| -> Vec<String> {
        city.psql(sql).lines().filter_map(|l| l.split('|').next()).map(str::to_owned).collect()
    };
    assert_eq!(said("columns"), shown("SHOW COLUMNS FROM zone_density").join(","), "{stdout}");
    assert!(said("types").contains("text") && said("types").contains("timestamp"), "{stdout}");
    let mut streams = shown("SHOW STREAMS");
    streams.sort();
    assert_eq!(said("tables"), streams.join(","), "{stdout}");
    // time, diff, zone, window_end, persons: four tabs.
    assert_eq!(said("subscribe"), "3 4", "{stdout}");
    assert_eq!(said("after"), "True", "{stdout}");
}

#[test]
fn tokio_postgres_runs_a_prepared_statement_with_binary_results() {
    let dir = tempfile::tempdir().unwrap();
    let city = City::start(dir.path());
    wait_for_density(&city);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (columns, rows, named, described, next) = rt.block_on(async {
        let (client, conn) = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(city.port)
            .user("vigil")
            .password(PASSWORD)
            .dbname("vigil")
            .connect(tokio_postgres::NoTls)
            .await
            .expect("tokio-postgres logs in with SCRAM");
        tokio::spawn(conn);
        let stmt = client
            .prepare("SELECT zone, count(*) AS windows, max(persons) AS most FROM zone_density WHERE zone = $1 GROUP BY zone")
            .await
            .expect("prepared");
        let columns: Vec<(String, String)> =
            stmt.columns().iter().map(|c| (c.name().to_owned(), c.type_().name().to_owned())).collect();
        let params: Vec<String> = stmt.params().iter().map(|t| t.name().to_owned()).collect();
        assert_eq!(params, ["text"]);
        let mut rows = Vec::new();
        for zone in ["gate-a", "fan-zone", "nowhere"] {
            for r in client.query(&stmt, &[&zone]).await.expect("runs") {
                rows.push((r.get::<_, String>(0), r.get::<_, i64>(1), r.get::<_, f64>(2)));
            }
        }
        // A timestamp parameter and result in binary: a SystemTime each way.
        let stmt = client
            .prepare("SELECT min(window_end) AS next FROM zone_density WHERE zone = 'gate-a' AND window_end > $1")
            .await
            .expect("prepared");
        let described = (stmt.params()[0].name().to_owned(), stmt.columns()[0].type_().name().to_owned());
        let start = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_781_467_200_000);
        let next: std::time::SystemTime = client.query_one(&stmt, &[&start]).await.expect("runs").get(0);
        let err = client.query("SELECT nope FROM zone_density", &[]).await.expect_err("a bad column");
        let named = err.as_db_error().map(|e| (e.code().code().to_owned(), e.message().to_owned()));
        (columns, rows, named, described, next)
    });
    assert_eq!(
        columns,
        [("zone".into(), "text".into()), ("windows".into(), "int8".into()), ("most".into(), "float8".into())]
    );
    let zones: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(zones, ["gate-a", "fan-zone"], "{rows:?}");
    // The oracle: psql's count for gate-a, taken after, is at least the prepared statement's.
    let psql_count: i64 =
        city.psql("SELECT count(*) FROM zone_density WHERE zone = 'gate-a'").trim().parse().unwrap();
    assert!(rows[0].1 > 0 && rows[0].1 <= psql_count && rows[0].2 >= 0.0, "{rows:?} psql {psql_count}");
    assert_eq!(described, ("timestamptz".into(), "timestamptz".into()));
    // The demo city starts at 20:00:00 and its first windows end two seconds later.
    let psql_next = city.psql(
        "SELECT min(window_end) FROM zone_density WHERE zone = 'gate-a' AND window_end > '2026-06-14 20:00:00+00'",
    );
    let next = chrono::DateTime::<chrono::Utc>::from(next).format("%Y-%m-%d %H:%M:%S+00").to_string();
    assert_eq!(next, psql_next.trim(), "the binary timestamp's instant");
    let (code, message) = named.expect("a database error");
    assert!(code == "42000" || code.starts_with("42"), "{code} {message}");
    assert!(message.contains("nope"), "{message}");
}

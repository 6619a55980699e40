//! The HTTP endpoint as a scraper and a client reach it, against a running demo city: nothing
//! without a login, a login over the psql account, and `/metrics` read by Prometheus' own text
//! parser (PyPI `prometheus-client`), its Parquet row counters checked against DuckDB's count
//! of the files.

mod common;

use std::process::{Command, Stdio};

const PASSWORD: &str = "http-test-password";

const SCRIPT: &str = r#"
import sys, json, time, base64, urllib.request, urllib.error, duckdb
from prometheus_client.parser import text_string_to_metric_families
base, pw, out = sys.argv[1], sys.argv[2], sys.argv[3]

def call(path, headers=None, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, headers=dict(headers or {}, **({"Content-Type": "application/json"} if data else {})))
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.read().decode(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers

print("anonymous", call("/metrics")[0], call("/api/v1/zones")[0])
print("wrong", call("/api/v1/login", body={"user": "vigil", "password": "not-the-password"})[0])
status, body, headers = call("/api/v1/login", body={"user": "vigil", "password": pw})
token, role = json.loads(body)["token"], json.loads(body)["role"]
print("login", status, role, "HttpOnly" in headers.get("Set-Cookie", ""))
bearer = {"Authorization": "Bearer " + token}
basic = {"Authorization": "Basic " + base64.b64encode(f"vigil:{pw}".encode()).decode()}
cookie = {"Cookie": "vigil_session=" + token}
print("basic", call("/metrics", basic)[0], "cookie", call("/metrics", cookie)[0], "unknown", call("/nope", bearer)[0])
# A browser without a session is given the login form, with 401.
status, body, _ = call("/", {"Accept": "text/html"})
print("form", status, "form id=\"login\"" in body)
# Wrong Basic credentials count as failed logins: the answers slow down (250 ms, then 500 ms).
wrong = {"Authorization": "Basic " + base64.b64encode(b"vigil:guess").decode()}
t0 = time.monotonic(); first = call("/metrics", wrong)[0]; t1 = time.monotonic(); second = call("/metrics", wrong)[0]; t2 = time.monotonic()
print("guess", first, second, t1 - t0 >= 0.24, t2 - t1 >= 0.49)
spec = json.loads(call("/api/v1/openapi.json", bearer)[1])
print("openapi", spec["openapi"], " ".join(sorted(spec["paths"])))

def parquet_rows():
    rows = {}
    for family in text_string_to_metric_families(call("/metrics", bearer)[1]):
        for s in family.samples:
            if s.name == "vigil_parquet_rows_total":
                rows[s.labels["stream"]] = int(s.value)
    return rows

def files(stream):
    return duckdb.sql(f"select count(*) from read_parquet('{out}/{stream}/**/*.parquet')").fetchall()[0][0]

# The counters move as files are committed: read them before and after counting the files, and
# compare when nothing was committed in between.
for attempt in range(60):
    before = parquet_rows()
    if before.get("detections") and before.get("zone_density"):
        counted = {s: files(s) for s in ["detections", "zone_density"]}
        if parquet_rows() == before:
            break
    time.sleep(0.5)
for s in ["detections", "zone_density"]:
    print("agree", s, before[s], counted[s])
# The JSON API reads the retained stream (after the files above, so the city has windows).
rows = json.loads(call("/api/v1/streams/zone_density?limit=3", bearer)[1])["rows"]
print("stream", len(rows) > 0, all("density" in r and isinstance(r["event_time"], int) for r in rows))
# What there is to read, as SHOW STREAMS lists it.
listed = json.loads(call("/api/v1/streams", bearer)[1])["streams"]
print("listed", " ".join(s["name"] for s in listed if s["kind"] == "stream"), all(s["what"] for s in listed))
# Refusals are JSON, said as the request named things: an unknown stream, a limit that is not
# one, a path the API does not have.
for path in ["/api/v1/streams/zone_densty", "/api/v1/streams/zone_density?limit=abc", "/api/v1/hits?limit=-1", "/api/v1/zones"]:
    status, body, headers = call(path, bearer)
    error = json.loads(body)["error"] if headers.get_content_type() == "application/json" else body
    print("refused", status, error.split(";")[0], "fix:" in error)
gauges = {s.name: s.value for f in text_string_to_metric_families(call("/metrics", bearer)[1]) for s in f.samples}
print("memory", *(int(gauges.get(g, -1)) for g in ["vigil_heap_allocated_bytes", "vigil_heap_resident_bytes", "vigil_memory_retained_bytes", "process_resident_memory_bytes"]))
names = sorted({f.name for f in text_string_to_metric_families(call("/metrics", bearer)[1])})
print("families", " ".join(names))
"#;

#[test]
fn metrics_need_a_login_parse_as_prometheus_text_and_agree_with_the_parquet_files() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _port, log) = common::spawn_listening(
        Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["demo", "--duration", "120", "--out", "city", "--quiet"])
            .args(["--pg-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .env("VIGIL_PG_PASSWORD", PASSWORD)
            .current_dir(dir.path())
            .stdout(Stdio::null()),
    );
    let http = common::http_address(&log);
    let out = dir.path().join("city");
    let run = Command::new(common::python())
        .args(["-c", SCRIPT, &format!("http://{http}"), PASSWORD, out.to_str().unwrap()])
        .output()
        .expect("python runs");
    let _ = child.kill();
    let _ = child.wait();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    let said = |key: &str| -> Vec<String> {
        stdout.lines().filter_map(|l| l.strip_prefix(&format!("{key} "))).map(str::to_owned).collect()
    };
    // Nothing without a login, whatever the path; a wrong password is refused.
    assert_eq!(said("anonymous"), ["401 401"]);
    assert_eq!(said("wrong"), ["401"]);
    assert_eq!(said("login"), ["200 admin True"]);
    assert_eq!(said("basic"), ["200 cookie 200 unknown 404"]);
    assert_eq!(said("form"), ["401 True"]);
    assert_eq!(said("guess"), ["401 401 True True"]);
    let openapi = said("openapi").join("");
    assert!(openapi.starts_with("3.1.0 "), "{openapi}");
    for path in [
        "/api/v1/board/events",
        "/api/v1/hits/{id}/decision",
        "/api/v1/streams",
        "/api/v1/streams/{name}",
        "/metrics",
    ] {
        assert!(openapi.split(' ').any(|p| p == path), "{path} undocumented: {openapi}");
    }
    assert_eq!(said("stream"), ["True True"]);
    assert_eq!(
        said("refused"),
        [
            "404 no stream \"zone_densty\" True",
            "400 Failed to deserialize query string: limit: invalid digit found in string True",
            "400 Failed to deserialize query string: limit: invalid digit found in string True",
            "404 no endpoint GET /api/v1/zones True",
        ],
        "{stdout}"
    );
    let listed = said("listed").join("");
    assert!(
        listed.starts_with("alerts camera_health density_grid detections hits ") && listed.ends_with(" True"),
        "{listed}"
    );
    // The counters are the rows the files hold.
    for line in said("agree") {
        let v: Vec<&str> = line.split(' ').collect();
        assert!(v[1] == v[2] && v[1].parse::<u64>().unwrap() > 0, "{line}");
    }
    assert_eq!(said("agree").len(), 2, "{stdout}");
    // The allocator's figures (jemalloc, the binary's): live bytes within what it holds; the
    // events kept in memory within the live bytes. (jemalloc's resident figure is an upper
    // bound, pages mapped but not yet touched included, so it is not compared with the
    // process' resident set.)
    let memory: Vec<i64> = said("memory")[0].split(' ').map(|v| v.parse().unwrap()).collect();
    let [allocated, resident, retained, rss] = memory[..] else { panic!("{memory:?}") };
    assert!(allocated > 10 << 20 && allocated <= resident && rss > 10 << 20, "{memory:?}");
    assert!(retained > 0 && retained < allocated, "{memory:?}");
    let families = said("families").join(" ");
    for f in [
        "vigil_rows_ingested",
        "vigil_parquet_rows",
        "vigil_parquet_sink_failing",
        "vigil_parquet_rows_dropped",
        "vigil_watermark_lag_seconds",
        "vigil_rule_rows",
        "process_resident_memory_bytes",
        "vigil_rule_lag_seconds",
    ] {
        assert!(families.split(' ').any(|x| x == f), "{f} missing from {families}");
    }
    // Logins over HTTP are audited like psql's.
    let audit = std::fs::read_to_string(out.join("audit/audit.log")).unwrap();
    assert!(audit.contains("\"action\":\"login.failed\",\"object\":\"http\""), "{audit}");
    assert!(audit.contains("\"action\":\"login\",\"object\":\"http\""), "{audit}");
}

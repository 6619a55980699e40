//! The page in a real browser: Debian's headless chromium, driven by playwright-core
//! (`web/tests/board.mjs`), against a running city. A crowd manager logs in, finds every zone
//! on the plan and in the list, sees a surge reach the page within 2 s of the engine's output,
//! and cannot reach plates, hits or the audit log by any URL; two analysts confirm one hit with
//! the keyboard alone, and psql sees it confirmed. Screenshots are kept in
//! `$CARGO_TARGET_TMPDIR/artifacts/`.

mod common;

use std::process::{Command, Stdio};

const PLATE: &str = "4821-د-33";

#[test]
fn a_crowd_manager_sees_the_surge_within_two_seconds_and_analysts_confirm_by_keyboard() {
    let root = common::root();
    let driver = root.join("web/node_modules/playwright-core");
    assert!(driver.exists(), "{} missing: run scripts/test (npm ci in web/)", driver.display());
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[city]\nseed = 11\nfps = 5.0\n\n[sinks]\nout = \"out\"\ncommit_s = 2\nground_truth = false\n\n\
         [simulation]\ncameras = 2\npedestrians_per_camera = 6\nvehicles_per_minute = 4\nocr_error_rate = 0.0\n\
         plates = [\"{PLATE}\"]\nlaggy_camera_every = 0\n\n\
         [simulation.surge]\nzone = \"gate\"\nat_s = 35.0\nramp_s = 3.0\nhold_s = 120.0\npeople = 300\n\n\
         [[zones]]\nname = \"gate\"\ncamera = 0\npolygon = [[10.0, 4.0], [30.0, 4.0], [30.0, 16.0], [10.0, 16.0]]\nalert_density = 0.6\n\n\
         [[zones]]\nname = \"concourse\"\ncamera = 1\npolygon = [[2.0, 2.0], [9.0, 2.0], [9.0, 18.0], [2.0, 18.0]]\n\n\
         [[lines]]\nname = \"turnstiles\"\ncamera = 0\nfrom = [20.0, 4.0]\nto = [20.0, 16.0]\nin_side = [25.0, 10.0]\n\n\
         [[watchlist]]\nplate = \"{PLATE}\"\nreason = \"stolen vehicle\"\nlegal_basis = \"PV-2026-0042\"\n\
         authority = \"DGSN Rabat\"\nexpires_at = \"2031-01-01T00:00:00Z\"\n\n\
         [[users]]\nname = \"karim\"\nrole = \"crowd_manager\"\npassword_env = \"PW_KARIM\"\n\n\
         [[users]]\nname = \"amina\"\nrole = \"analyst\"\npassword_env = \"PW_AMINA\"\n\n\
         [[users]]\nname = \"omar\"\nrole = \"analyst\"\npassword_env = \"PW_OMAR\"\n"
    );
    std::fs::write(dir.path().join("city.toml"), config).unwrap();
    let env = [("PW_KARIM", "karim-pw-1"), ("PW_AMINA", "amina-pw-1"), ("PW_OMAR", "omar-pw-1")];
    let (mut child, pg, log) = common::spawn_listening(
        Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["run", "--config", "city.toml", "--duration", "240", "--quiet"])
            .args(["--pg-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .envs(env)
            .current_dir(dir.path())
            .stdout(Stdio::null()),
    );
    let http = common::http_address(&log);
    let artifacts = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifacts");
    let spec = serde_json::json!({
        "zones": ["gate", "concourse"], "zone": "gate", "threshold": 0.5,
        "crowd": ["karim", "karim-pw-1"], "analysts": [["amina", "amina-pw-1"], ["omar", "omar-pw-1"]],
        "forbidden": ["/api/v1/hits", "/api/v1/streams/plate_reads", "/api/v1/streams/hits",
                      "/api/v1/streams/audit_log", "/api/v1/streams/watchlist", "/api/v1/streams/alerts",
                      "/api/v1/streams/tracks", "POST /api/v1/hits/0000/decision", "/api/v1/streams/zone_density"],
    });
    let run = Command::new("node")
        .arg(root.join("web/tests/board.mjs"))
        .arg(format!("http://{http}"))
        .arg(&artifacts)
        .env("VIGIL_BOARD_TEST", spec.to_string())
        // The page shows times in the viewer's zone: UTC here, so the test can read them.
        .env("TZ", "UTC")
        .current_dir(root.join("web"))
        .stdin(Stdio::null())
        .output()
        .expect("node runs (scripts/test installs it with chromium)");
    let said = String::from_utf8_lossy(&run.stderr).into_owned();
    let out: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap_or_else(|e| {
        panic!("the driver's output: {e}\n{}\n{said}", String::from_utf8_lossy(&run.stdout))
    });
    let show = format!("{out:#}\n{said}");
    assert!(out.get("error").is_none(), "{show}");

    // Nothing before a login: the browser is given the login form, with 401.
    assert_eq!(out["anonymous_status"], 401, "{show}");
    assert_eq!(out["login_form"], 1, "{show}");
    assert_eq!(out["role"], "crowd_manager", "{show}");
    // Every configured zone, in the list and on the plan; no hit queue for this role.
    for zone in ["gate", "concourse"] {
        for list in ["zones_listed", "zones_drawn"] {
            assert!(out[list].as_array().unwrap().iter().any(|z| z == zone), "{zone} not in {list}: {show}");
        }
    }
    assert_eq!(out["hit_queue_visible"], false, "{show}");
    assert_eq!(out["labels_cut"], serde_json::json!([]), "labels cut at the plan's edge: {show}");
    assert_eq!(
        out["labels_overlapping"],
        serde_json::json!([]),
        "labels hiding each other on the plan: {show}"
    );
    // The surge reaches the page within 2 s of the engine's output.
    let change = &out["density_change"];
    let lag =
        change["page_after_engine_ms"].as_i64().unwrap_or_else(|| panic!("no density change seen: {show}"));
    assert!(lag <= 2000, "the page showed the surge {lag} ms after the engine: {show}");
    assert!(out["stats"]["updates"].as_u64().unwrap() >= 3, "{show}");
    assert!(out["flows_shown"].as_u64().unwrap_or(0) >= 1, "no gate flow on the page: {show}");
    assert_eq!(out["cards_overflowing"], serde_json::json!([]), "content wider than its card: {show}");
    // The surge's alert stands on the page, and the crowd manager acknowledges it.
    let alert = out["alert"]["text"].as_str().unwrap_or_else(|| panic!("no alert on the page: {show}"));
    assert!(alert.contains("raised") && alert.contains("acknowledged by karim"), "{alert}");
    // Arabic reads right to left.
    assert_eq!(out["labels_missing"], serde_json::json!([]), "{show}");
    assert_eq!(out["arabic"]["dir"], "rtl", "{show}");
    assert_eq!(out["arabic"]["title"], "المناطق", "{show}");
    // The page is small.
    let weight = out["page_bytes"].as_u64().unwrap() + out["login_bytes"].as_u64().unwrap();
    assert!(weight > 20_000 && weight < 500_000, "{show}");
    // No personal data for a crowd manager, whatever the URL; aggregates yes.
    for (path, r) in out["forbidden"].as_object().unwrap() {
        let status = r["status"].as_u64().unwrap();
        let body = r["body"].as_str().unwrap();
        if path.ends_with("zone_density") {
            assert_eq!(status, 200, "{path}: {body}");
        } else {
            assert!((400..500).contains(&status) && !body.contains("4821"), "{path}: {status} {body}");
        }
    }
    for shot in ["board.png", "board-ar.png", "board-phone.png", "hit-queue.png"] {
        let len = std::fs::metadata(artifacts.join(shot)).map_or(0, |m| m.len());
        assert!(len > 10_000, "{shot}: {len} bytes");
    }

    // Two analysts, keyboard only, the same hit: the second confirmation makes it actionable.
    let decisions = out["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 2, "{show}");
    let hit = decisions[0]["focused"].as_str().unwrap_or_else(|| panic!("no hit took the focus: {show}"));
    // The card says where and when the plate was read, as the API has it.
    let card = &decisions[0]["card"];
    let read_s = card["read_time"].as_i64().unwrap_or_else(|| panic!("no read time: {show}")) / 1000;
    let clock = format!("{:02}:{:02}:{:02}", read_s % 86_400 / 3600, read_s % 3600 / 60, read_s % 60);
    let text = card["text"].as_str().unwrap();
    assert!(
        text.contains(&format!("Camera {}", card["camera_id"])) && text.contains(&clock),
        "{clock}: {show}"
    );
    // The queue's answer is bounded by `limit`, oldest first, and says how many wait.
    let queue = &decisions[0]["queue"];
    assert_eq!(queue["limited"], 1, "{show}");
    assert_eq!(queue["oldest"], true, "{show}");
    let whole = queue["whole"].as_u64().unwrap();
    // (A hit may arrive between the two asks.)
    let limited_total = queue["limited_total"].as_u64().unwrap();
    assert!(whole >= 2 && queue["whole_total"] == whole && (2..=whole).contains(&limited_total), "{show}");
    assert_eq!(decisions[1]["focused"].as_str(), Some(hit), "{show}");
    let after_first = decisions[0]["after"].as_array().unwrap();
    assert!(
        after_first
            .iter()
            .any(|h| h["id"] == hit && h["by"].as_array().unwrap().iter().any(|u| u == "amina")),
        "amina's confirmation not shown: {show}"
    );
    assert!(!decisions[1]["after"].as_array().unwrap().iter().any(|h| h["id"] == hit), "{show}");
    let psql = Command::new("psql")
        .args(["-X", "-h", "127.0.0.1", "-p", &pg.to_string(), "-U", "amina", "-d", "vigil", "-A", "-t"])
        .args([
            "-c",
            &format!("SELECT status, decided_by FROM hits WHERE hit_id = '{hit}' ORDER BY event_time"),
        ])
        .env("PGPASSWORD", "amina-pw-1")
        .output()
        .unwrap();
    let history = String::from_utf8_lossy(&psql.stdout).into_owned();
    assert!(
        history.contains("confirmation|amina") && history.contains("confirmed|omar"),
        "{history}{}",
        String::from_utf8_lossy(&psql.stderr)
    );
    // Decisions and acknowledgements are the people's, in the audit log.
    let _ = child.kill();
    let _ = child.wait();
    let audit = std::fs::read_to_string(dir.path().join("out/audit/audit.log")).unwrap_or_default();
    assert!(
        audit.lines().filter(|l| l.contains("hit_decisions") && l.contains("\"http\"")).count() >= 2,
        "{audit}"
    );
    let ack = format!(
        "\"actor\":\"karim\",\"action\":\"alert.ack\",\"object\":\"alert {}\"",
        out["alert"]["id"].as_str().unwrap()
    );
    assert!(audit.contains(&ack), "{ack} not in {audit}");
    // What an analyst's page was shown is recorded each time it changes, not at every poll:
    // no two of a user's records in a row name the same queue, and at least one was made.
    let mut last: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut shown = 0;
    for line in audit.lines().filter(|l| l.contains("\"object\":\"hits\"") && l.contains("/api/v1/hits")) {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let (user, queue) = (r["actor"].as_str().unwrap().to_owned(), r["detail"]["hits"].to_string());
        assert_ne!(
            last.insert(user, queue.clone()).as_ref(),
            Some(&queue),
            "recorded twice in a row: {line}"
        );
        shown += 1;
    }
    assert!(shown >= 2, "{audit}");
    let median = |key: &str| {
        let mut v: Vec<i64> =
            out["stats"][key].as_array().unwrap().iter().filter_map(|x| x.as_i64()).collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(-1)
    };
    eprintln!(
        "board: page {} bytes, login form {} bytes; surge on the page {lag} ms after the engine's output was queryable; \
         server to page median {} ms; window end to page median {} ms of city time",
        out["page_bytes"],
        out["login_bytes"],
        median("transport_ms"),
        median("city_lag_ms")
    );
}

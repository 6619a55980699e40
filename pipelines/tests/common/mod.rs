//! Helpers shared by the integration tests that run the `vigil` binary.

#![allow(dead_code)] // each test crate uses a subset

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::{Arc, Mutex};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Python with DuckDB and pyarrow that `scripts/test` installs.
pub fn python() -> PathBuf {
    let p = std::env::var_os("VIGIL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/python"));
    assert!(p.exists(), "{} missing: run scripts/test, which installs duckdb and pyarrow", p.display());
    p
}

/// Runs `vigil args` in `dir`, asserts success, returns stdout.
pub fn vigil(args: &[&str], dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("vigil runs");
    assert!(
        out.status.success(),
        "vigil {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Renders `frames` frames of simulated camera `camera` (640 × 360) as raw RGB into `dir`, for
/// the RTSP test server, with `cam<N>.truth.jsonl` beside it (each frame's true boxes, one JSON
/// list per line); returns the frames' file.
#[allow(dead_code)]
pub fn render_frames(dir: &Path, camera: u32, frames: usize) -> PathBuf {
    use std::io::Write;
    let config = vigil_pipelines::config::Config::embedded();
    let params = vigil_pipelines::sim::SimParams::from_config(&config);
    let mut r = vigil_pipelines::render::Renderer::new(params, camera, 640, 360);
    let path = dir.join(format!("cam{camera}.rgb"));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut truth =
        std::io::BufWriter::new(std::fs::File::create(dir.join(format!("cam{camera}.truth.jsonl"))).unwrap());
    for _ in 0..frames {
        let frame = r.next_frame();
        f.write_all(frame.image.as_raw()).unwrap();
        writeln!(truth, "{}", serde_json::to_string(&frame.truth).unwrap()).unwrap();
    }
    f.flush().unwrap();
    truth.flush().unwrap();
    path
}

/// GStreamer's RTSP server (scripts/rtsp_server.py, Debian's system Python), killed on drop.
#[allow(dead_code)]
pub struct RtspServer {
    child: std::process::Child,
    /// The port it listens on (loopback).
    pub port: u16,
    args: Vec<String>,
}

#[allow(dead_code)]
impl RtspServer {
    /// Starts a server on `port` (0: a free one) with `args` (mounts, credentials).
    pub fn start(port: u16, args: &[String], envs: &[(&str, &str)]) -> RtspServer {
        use std::io::BufRead;
        let mut cmd = std::process::Command::new("/usr/bin/python3");
        cmd.arg(root().join("scripts/rtsp_server.py")).arg("--port").arg(port.to_string()).args(args);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("/usr/bin/python3 (scripts/test installs the GStreamer packages)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("rtsp_server.py did not start: {line:?}"));
        RtspServer { child, port, args: args.to_vec() }
    }

    /// Kills the server (SIGKILL: no goodbye to clients).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self, envs: &[(&str, &str)]) {
        self.kill();
        *self = RtspServer::start(self.port, &self.args.clone(), envs);
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `sql` in DuckDB (the project venv's Python) and returns the rows as strings.
pub fn duckdb(sql: &str) -> Vec<Vec<String>> {
    let script = "import duckdb, sys\nfor r in duckdb.sql(sys.argv[1]).fetchall(): print('\\t'.join(str(v) for v in r))";
    let out = Command::new(python()).args(["-c", script, sql]).output().expect("python");
    assert!(out.status.success(), "duckdb: {}\n{sql}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect()
}

/// Runs `sql` with the real `psql` against the endpoint on `port` (user `vigil`, tuples only,
/// `|`-separated); returns the output, or `None` when psql failed (with its error printed).
pub fn psql_try(port: u16, password: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "vigil",
            "-d",
            "vigil",
            "-A",
            "-t",
            "-F",
            "|",
        ])
        .args(["-c", sql])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .output()
        .expect("psql runs (scripts/test installs postgresql-client)");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("utf-8"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// [`psql_try`], asserting success.
pub fn psql(port: u16, password: &str, sql: &str) -> String {
    psql_try(port, password, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The names of the complete Parquet files under stream directory `dir` (every partition),
/// sorted.
pub fn parquet_names(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, v: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, v);
            } else if let Some(n) = p.file_name().and_then(|n| n.to_str()).filter(|n| n.ends_with(".parquet"))
            {
                v.push(n.to_owned());
            }
        }
    }
    let mut v = Vec::new();
    walk(dir, &mut v);
    v.sort();
    v
}

/// Reads a child's stderr up to the first line containing `marker`; returns the first word
/// after the marker and every line read, that one included. Panics, with the lines, if the
/// child ends first.
pub fn read_until(stderr: &mut BufReader<ChildStderr>, marker: &str) -> (String, String) {
    let (mut line, mut log) = (String::new(), String::new());
    loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "vigil exited before {marker:?}: {log}");
        log.push_str(&line);
        if let Some(at) = line.find(marker) {
            let word = line[at + marker.len()..].split_whitespace().next().unwrap_or("").to_owned();
            return (word, log);
        }
    }
}

/// The rest of a child's stderr, appended to `log` as it comes (on a thread of its own).
pub fn keep_reading(mut stderr: BufReader<ChildStderr>, log: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        // Bytes, not lines of UTF-8: the pipe is drained whatever the child writes.
        let mut line = Vec::new();
        while stderr.read_until(b'\n', &mut line).map(|n| n > 0).unwrap_or(false) {
            log.lock().unwrap().push_str(&String::from_utf8_lossy(&line));
            line.clear();
        }
    });
}

/// Spawns `cmd` (vigil with `--pg-listen 127.0.0.1:0`, or a wrapper running it) and waits for
/// its psql endpoint; returns the child, the port, and its log: the lines so far, then the rest
/// as it comes. Its stdout is the caller's to set (null, or piped to read the summary).
pub fn spawn_listening(cmd: &mut Command) -> (Child, u16, Arc<Mutex<String>>) {
    let mut child = cmd.stdin(Stdio::null()).stderr(Stdio::piped()).spawn().expect("vigil starts");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let (port, early) = read_until(&mut stderr, "psql endpoint listening on 127.0.0.1:");
    let port = port.parse().expect("a port");
    let log = Arc::new(Mutex::new(early));
    keep_reading(stderr, Arc::clone(&log));
    (child, port, log)
}

/// The HTTP endpoint's address in a vigil log, once it has said it listens.
pub fn http_address_in(log: &str) -> Option<String> {
    let marker = "http endpoint listening on ";
    let at = log.find(marker)?;
    log[at + marker.len()..].split_whitespace().next().map(str::to_owned)
}

/// Waits (20 s at most) for the HTTP endpoint in a log `spawn_listening` keeps; panics with the
/// log if it never listens.
pub fn http_address(log: &Mutex<String>) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let text = log.lock().unwrap().clone();
        if let Some(address) = http_address_in(&text) {
            return address;
        }
        assert!(std::time::Instant::now() < deadline, "no HTTP endpoint: {text}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

//! City-scale decoding: how many vtest cameras at 10 analytics fps one core carries through
//! vigil's decode pool and the SSD person detector, against `gst-launch-1.0` decoding the same
//! H.264 stream (the decode limit), all in the same run.
//!
//! The stream is `vtest.avi` (Debian's opencv-doc, 768 × 576, 10 fps) re-encoded by x264 with the
//! RTSP test server's settings, so it is the stream cameras deliver in the suite. Figures are
//! frames per CPU-second of the whole process (decode threads, inference thread, feeder), which
//! is what one core carries; cameras = that / 10.
//!
//! `cargo bench -p vigil-benches --bench vtest_cameras` runs the full size (the stream three
//! times, 8 cameras through the detector); under `cargo test` a small size runs as a smoke test.
//! Needs `scripts/setup-models` (footage, the SSD model) and `gst-launch-1.0` with
//! `gstreamer1.0-libav` (`scripts/test` installs them).

// The bench's output is its report.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vigil_models::detector::{Detector, DetectorConfig};
use vigil_pipelines::camera::{FrameSink, Health};
use vigil_pipelines::decode::{DecodePool, SessionSpec};
use vigil_pipelines::detect::{DetectStage, StageConfig};

/// This process's CPU seconds, and its waited-for children's.
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("Linux /proc");
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<f64> = rest.split_whitespace().map(|v| v.parse().unwrap_or(0.0)).collect();
    ((f[11] + f[12]) / 100.0, (f[13] + f[14]) / 100.0)
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Splits an Annex B stream into access units (one coded picture each, with the parameter sets
/// before it), as RTSP depacketizers hand them over. A picture starts at a slice whose
/// `first_mb_in_slice` is 0 (the header's first bit after the NAL byte is 1) or at a non-slice
/// unit that follows a slice.
fn access_units(stream: &[u8]) -> Vec<Vec<u8>> {
    let mut units = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    let mut has_slice = false;
    for nal in openh264::nal_units(stream) {
        let start = nal.iter().position(|&b| b == 1).map_or(0, |p| p + 1);
        let Some(&header) = nal.get(start) else { continue };
        let kind = header & 0x1f;
        let slice = kind == 1 || kind == 5;
        let first_slice = slice && nal.get(start + 1).is_some_and(|b| b & 0x80 != 0);
        if has_slice && (first_slice || !slice) {
            units.push(std::mem::take(&mut current));
            has_slice = false;
        }
        current.extend_from_slice(nal);
        has_slice |= slice;
    }
    if has_slice {
        units.push(current);
    }
    units
}

/// CPU seconds `gst-launch-1.0` takes to decode `file` with `decoder`, optionally to RGB.
fn gst_decode(file: &Path, decoder: &str, rgb: bool) -> f64 {
    let mut pipeline = vec!["-q".to_owned(), "filesrc".into(), format!("location={}", file.display())];
    pipeline.extend(["!", "h264parse", "!"].map(String::from));
    pipeline.extend(decoder.split(' ').map(String::from));
    if rgb {
        pipeline.extend(["!", "videoconvert", "!", "video/x-raw,format=RGB"].map(String::from));
    }
    pipeline.extend(["!", "fakesink"].map(String::from));
    let c0 = cpu_seconds().1;
    run(Command::new("gst-launch-1.0").args(&pipeline));
    cpu_seconds().1 - c0
}

/// Decodes `units` once per camera through a one-thread pool; every frame is due at `fps`
/// (`None`: none is, decode only). Returns frames per CPU-second.
fn pool_decode(units: &[Vec<u8>], repeat: usize, convert: bool) -> f64 {
    let pool = DecodePool::new(1).expect("pool");
    let out = Arc::new(AtomicU64::new(0));
    let o = Arc::clone(&out);
    let sink: FrameSink = Arc::new(move |_| {
        o.fetch_add(1, Ordering::Relaxed);
    });
    let health = Arc::new(Health::new(0, "vtest"));
    let fps = if convert { 10.0 } else { 1e-6 };
    let spec = SessionSpec { camera: 0, fps, seq: Arc::default(), health: Arc::clone(&health), sink };
    let c0 = cpu_seconds().0;
    let d = pool.open(spec).expect("decoder");
    for r in 0..repeat {
        for (i, u) in units.iter().enumerate() {
            d.blocking_send(u.clone(), ((r * units.len() + i) * 100) as i64).expect("pool");
        }
    }
    drop(d);
    while pool.load() != [0] {
        std::thread::sleep(Duration::from_millis(1));
    }
    let cpu = cpu_seconds().0 - c0;
    assert_eq!(health.decode_errors.load(Ordering::Relaxed), 0);
    if convert {
        assert!(out.load(Ordering::Relaxed) as usize >= units.len() * repeat - 1, "frames passed on");
    }
    (units.len() * repeat) as f64 / cpu.max(0.01)
}

/// `cameras` sessions of the stream through a one-thread pool and the SSD detector on one
/// intra-op thread, batched across cameras. Returns (frames per CPU-second, persons per frame).
fn decode_and_detect(units: &[Vec<u8>], cameras: u32, model: &Path) -> (f64, f64) {
    let env = vigil_models::runtime::environment(None).expect("ONNX Runtime: run scripts/setup-models");
    let mut config = DetectorConfig::new(model, vec!["person".into()]);
    config.score_threshold = 0.5;
    config.threads = 1;
    let detector = Detector::new(&env, config).expect("SSD model");
    let health: HashMap<u32, Arc<Health>> =
        (0..cameras).map(|c| (c, Arc::new(Health::new(c, &format!("vtest-{c}"))))).collect();
    let (tx, rx) = channel();
    let errors = Arc::new(Mutex::new(Vec::new()));
    let e = Arc::clone(&errors);
    let stage = DetectStage::start(
        detector,
        StageConfig { batch: 8, deadline: Duration::from_millis(50), queue: 64 },
        health.clone(),
        tx,
        move |m| e.lock().unwrap().push(m),
    )
    .expect("stage");
    let pool = DecodePool::new(1).expect("pool");
    let sessions: Vec<_> = (0..cameras)
        .map(|c| {
            let spec = SessionSpec {
                camera: c,
                fps: 10.0,
                seq: Arc::default(),
                health: Arc::clone(&health[&c]),
                sink: stage.sink(),
            };
            pool.open(spec).expect("decoder")
        })
        .collect();
    let frames = units.len() * cameras as usize;
    let (c0, _) = cpu_seconds();
    let (mut detected, mut persons) = (0usize, 0usize);
    for (i, u) in units.iter().enumerate() {
        for s in &sessions {
            s.blocking_send(u.clone(), i as i64 * 100).expect("pool");
        }
        // Paced to the detector (a live camera is paced by its clock): at most 48 frames are
        // between the feeder and the detector's output (every frame sent is due, so each reaches
        // the stage), the stage's queue of 64 never overflows, and every frame is counted.
        loop {
            while let Ok(d) = rx.try_recv() {
                detected += 1;
                persons += d.detections.len();
            }
            let lost: u64 = health
                .values()
                .map(|h| h.frames_dropped.load(Ordering::Relaxed) + h.frames_failed.load(Ordering::Relaxed))
                .sum();
            assert_eq!(lost, 0, "frames lost: {:?}", errors.lock().unwrap());
            if (i + 1) * cameras as usize <= detected + 48 {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    drop(sessions);
    while detected < frames {
        let d = rx.recv_timeout(Duration::from_secs(60)).expect("detections");
        detected += 1;
        persons += d.detections.len();
    }
    let cpu = cpu_seconds().0 - c0;
    stage.stop();
    assert!(errors.lock().unwrap().is_empty(), "{:?}", errors.lock().unwrap());
    let dropped: u64 = health.values().map(|h| h.frames_dropped.load(Ordering::Relaxed)).sum();
    assert_eq!(dropped, 0, "frames dropped");
    (frames as f64 / cpu.max(0.01), persons as f64 / frames as f64)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (n_frames, repeat, cameras) = if full { (0, 3, 8) } else { (30, 1, 2) };
    println!("vtest cameras bench ({})", if full { "full" } else { "smoke" });
    let video = root().join(".models/footage/vtest.avi");
    let model = root().join(".models/ssdlite_person.onnx");
    assert!(video.is_file() && model.is_file(), "footage or SSD model missing: run scripts/setup-models");
    let python =
        std::env::var_os("VIGIL_PYTHON").map_or_else(|| root().join(".venv/bin/python"), PathBuf::from);
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = dir.path().join("vtest.rgb");
    let info = run(Command::new(&python)
        .arg(root().join("scripts/video_frames.py"))
        .arg(&video)
        .arg(&raw)
        .args(["--frames", &n_frames.to_string()]));
    assert!(info.starts_with("768x576 10 "), "{info}");
    // Encoded as scripts/rtsp_server.py encodes for the cameras in the suite.
    let h264 = dir.path().join("vtest.h264");
    run(Command::new("gst-launch-1.0").args([
        "-q",
        "filesrc",
        &format!("location={}", raw.display()),
        "blocksize=1327104",
        "!",
        "rawvideoparse",
        "width=768",
        "height=576",
        "format=rgb",
        "framerate=10/1",
        "!",
        "videoconvert",
        "!",
        "video/x-raw,format=I420",
        "!",
        "x264enc",
        "tune=zerolatency",
        "speed-preset=ultrafast",
        "key-int-max=10",
        "bitrate=1500",
        "!",
        "video/x-h264,stream-format=byte-stream",
        "!",
        "filesink",
        &format!("location={}", h264.display()),
    ]));
    let stream = std::fs::read(&h264).expect("encoded stream");
    let units = access_units(&stream);
    let n = units.len();
    assert!(n >= 30, "{n} access units");
    // gst-launch reads the stream `repeat` times over (Annex B streams concatenate).
    let looped = dir.path().join("looped.h264");
    std::fs::write(&looped, stream.repeat(repeat)).expect("write");
    println!("stream: {n} frames 768x576, {:.2} Mbit/s", stream.len() as f64 * 8.0 / (n as f64 / 10.0) / 1e6);

    let frames = (n * repeat) as f64;
    let mut rows: Vec<(String, f64)> = Vec::new();
    for (label, decoder) in
        [("openh264dec", "openh264dec"), ("avdec_h264 (FFmpeg)", "avdec_h264 max-threads=1")]
    {
        for rgb in [false, true] {
            let cpu = gst_decode(&looped, decoder, rgb);
            let what = if rgb { "decode + RGB" } else { "decode" };
            rows.push((format!("gst-launch-1.0 {label}, {what}"), frames / cpu.max(0.01)));
        }
    }
    rows.push(("vigil decode pool (OpenH264), decode".into(), pool_decode(&units, repeat, false)));
    rows.push(("vigil decode pool (OpenH264), decode + RGB".into(), pool_decode(&units, repeat, true)));
    let (rate, persons) = decode_and_detect(&units, cameras, &model);
    rows.push((format!("vigil decode pool + SSDLite person detector, {cameras} cameras"), rate));
    for (what, fps) in &rows {
        println!("{what}: {fps:.0} frames/s per core = {:.1} cameras at 10 fps", fps / 10.0);
    }
    let gst_best = rows.iter().take(4).step_by(2).map(|r| r.1).fold(0.0, f64::max);
    println!(
        "decode + detect carries {:.1} cameras per core; the decode limit (best gst-launch decoder) is {:.1}; \
         vigil's decode alone is {:.2}x gst-launch openh264dec",
        rate / 10.0,
        gst_best / 10.0,
        rows[4].1 / rows[0].1
    );
    println!("persons per frame: {persons:.2}");
    // vtest shows a few pedestrians in nearly every frame: a decoder or detector that broke
    // (grey frames, wrong colours) finds none.
    assert!(persons > 1.0, "{persons:.2} persons per frame");
}

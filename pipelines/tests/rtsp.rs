//! Camera ingestion against a real RTSP server: GStreamer's rtsp-server (Debian's packages)
//! serving the simulator's rendered video as H.264 on loopback, read by retina and decoded by
//! OpenH264. Hostile servers (garbage bytes, a server that never answers) are small TCP
//! listeners in the test itself.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{RtspServer, render_frames};
use url::Url;
use vigil_pipelines::camera::{self, CameraSpec, CameraState, Frame, Health, TimeSource};
use vigil_pipelines::decode::DecodePool;

type Frames = Arc<Mutex<Vec<(Instant, Frame)>>>;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

type Objects = Arc<Mutex<Vec<camera::CameraObjects>>>;

fn start(
    rt: &tokio::runtime::Runtime,
    spec: CameraSpec,
) -> (Frames, Arc<Health>, tokio::task::JoinHandle<()>) {
    let (frames, objects, health, handle) = start_with_objects(rt, spec);
    assert!(objects.lock().unwrap().is_empty());
    (frames, health, handle)
}

fn start_with_objects(
    rt: &tokio::runtime::Runtime,
    spec: CameraSpec,
) -> (Frames, Objects, Arc<Health>, tokio::task::JoinHandle<()>) {
    let frames: Frames = Arc::default();
    let objects: Objects = Arc::default();
    let health = Arc::new(Health::new(spec.id, &spec.name));
    let (f, o) = (Arc::clone(&frames), Arc::clone(&objects));
    let sinks = camera::Sinks {
        frames: Arc::new(move |fr| f.lock().unwrap().push((Instant::now(), fr))),
        objects: Arc::new(move |ob| o.lock().unwrap().push(ob)),
    };
    let handle =
        camera::spawn(rt.handle(), Arc::new(DecodePool::new(1).unwrap()), spec, sinks, Arc::clone(&health));
    (frames, objects, health, handle)
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spec(id: u32, port: u16, path: &str) -> CameraSpec {
    let mut s = CameraSpec::new(
        id,
        format!("cam{id}"),
        Url::parse(&format!("rtsp://127.0.0.1:{port}{path}")).unwrap(),
        10.0,
    );
    s.frame_timeout = Duration::from_secs(2);
    s.backoff_initial = Duration::from_millis(200);
    s.backoff_max = Duration::from_secs(2);
    s
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

#[test]
fn frames_are_decoded_sampled_and_timed_by_the_cameras_clock() {
    let dir = tempfile::tempdir().unwrap();
    let raw = render_frames(dir.path(), 0, 30);
    let server = RtspServer::start(0, &[format!("--mount=/cam0={}", raw.display()), "--fps=10".into()], &[]);
    let rt = runtime();
    let mut s = spec(0, server.port, "/cam0");
    s.fps = 5.0; // the server sends 10 fps; analytics wants 5
    let (frames, health, _h) = start(&rt, s);
    // RTCP sender reports come every few seconds: wait until event times follow the camera clock.
    wait_for("an RTCP sender report", Duration::from_secs(15), || {
        health.status().time_source == TimeSource::Rtcp
    });
    let n0 = frames.lock().unwrap().len();
    wait_for("frames after the sender report", Duration::from_secs(10), || {
        frames.lock().unwrap().len() >= n0 + 15
    });
    let frames = frames.lock().unwrap().clone();
    let status = health.status();
    assert_eq!(status.state, CameraState::Streaming);
    let skew = status.clock_skew_ms.expect("skew measured");
    assert!(skew.abs() < 1000.0, "server and client share a clock: skew {skew} ms");

    // Decoded pixels: 640 × 360, and the first frame is the rendered frame 0 (H.264 is lossy).
    let first = &frames[0].1.image;
    assert_eq!(first.dimensions(), (640, 360));
    let rendered = std::fs::read(&raw).unwrap();
    let diff: f64 = first
        .as_raw()
        .iter()
        .zip(&rendered[..640 * 360 * 3])
        .map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs())
        .sum::<f64>()
        / (640.0 * 360.0 * 3.0);
    assert!(diff < 12.0, "decoded frame 0 differs from the rendered one by {diff:.1} per channel on average");

    // Sampling: 5 of the server's 10 frames per second pass; times are increasing, 200 ms apart.
    let timed: Vec<&Frame> = frames[n0..].iter().map(|(_, f)| f).collect();
    let gaps: Vec<i64> = timed.windows(2).map(|w| w[1].capture_ms - w[0].capture_ms).collect();
    assert!(
        gaps.iter().all(|&g| (150..=260).contains(&g)),
        "analytics frames every 200 ms, got gaps {gaps:?}"
    );
    let fin = health.frames_in.load(std::sync::atomic::Ordering::Relaxed);
    let fout = health.frames_out.load(std::sync::atomic::Ordering::Relaxed);
    assert!(fout * 2 <= fin + 2 && fout * 2 + 4 >= fin, "half the frames pass: in {fin}, out {fout}");
    // Event times are the capture times: behind the receive time by the (small) pipeline delay.
    let last = timed.last().unwrap();
    let lag = now_ms() - last.capture_ms;
    assert!((-200..2000).contains(&lag), "capture time {lag} ms behind now");
    assert_eq!(health.decode_errors.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[test]
fn a_killed_server_is_reconnected_within_the_backoff_bound_five_times() {
    let dir = tempfile::tempdir().unwrap();
    let raw = render_frames(dir.path(), 1, 20);
    let mut server = RtspServer::start(0, &[format!("--mount=/cam1={}", raw.display())], &[]);
    let rt = runtime();
    let s = spec(1, server.port, "/cam1");
    let bound = s.backoff_max;
    let (frames, health, _h) = start(&rt, s);
    wait_for("first frames", Duration::from_secs(10), || frames.lock().unwrap().len() >= 5);
    for round in 1..=5u64 {
        server.kill();
        let down = Instant::now();
        wait_for("the camera to notice", Duration::from_secs(5), || {
            health.status().state != CameraState::Streaming
        });
        std::thread::sleep(Duration::from_millis(700));
        let before = frames.lock().unwrap().len();
        server.restart(&[]);
        let up = Instant::now();
        wait_for("frames after the restart", bound + Duration::from_secs(8), || {
            frames.lock().unwrap().len() > before
        });
        let back = frames.lock().unwrap()[before].0;
        // The first frame after the restart arrives within the largest backoff delay plus the
        // time to connect and receive a key frame.
        let resumed = back.duration_since(up);
        assert!(
            resumed <= bound + Duration::from_secs(2),
            "round {round}: resumed {resumed:?} after the restart (down {:?})",
            up - down
        );
        assert_eq!(
            health.reconnects.load(std::sync::atomic::Ordering::Relaxed),
            round,
            "each outage is one reconnect"
        );
    }
}

#[test]
fn wrong_credentials_and_a_wrong_path_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let raw = render_frames(dir.path(), 2, 10);
    let env = [("VIGIL_TEST_RTSP_PASSWORD", "correct-horse")];
    let server =
        RtspServer::start(0, &[format!("--mount=/cam2={}", raw.display()), "--user=viewer".into()], &env);
    let rt = runtime();
    let mut wrong = spec(2, server.port, "/cam2");
    wrong.credentials = Some(("viewer".into(), "battery-staple".into()));
    let (_f, wrong_health, _h1) = start(&rt, wrong);
    let mut right = spec(3, server.port, "/cam2");
    right.credentials = Some(("viewer".into(), "correct-horse".into()));
    let (right_frames, _rh, _h2) = start(&rt, right);
    let mut missing = spec(4, server.port, "/no-such-camera");
    missing.credentials = Some(("viewer".into(), "correct-horse".into()));
    let (_f3, missing_health, _h3) = start(&rt, missing);

    wait_for("the 401", Duration::from_secs(10), || wrong_health.status().last_error.is_some());
    let e = wrong_health.status().last_error.unwrap();
    assert!(
        e.contains("camera 2") && e.contains("refused the credentials (401)") && e.contains("fix:"),
        "{e}"
    );
    assert!(!e.contains("battery-staple"), "the password is never shown: {e}");
    wait_for("the 404", Duration::from_secs(10), || missing_health.status().last_error.is_some());
    let e = missing_health.status().last_error.unwrap();
    assert!(e.contains("/no-such-camera") && e.contains("no stream at this path (404)"), "{e}");
    wait_for("the right password's frames", Duration::from_secs(10), || {
        right_frames.lock().unwrap().len() >= 3
    });
}

#[test]
fn garbage_bytes_and_a_silent_server_do_not_panic_and_are_retried() {
    let garbage = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (gp, sp) = (garbage.local_addr().unwrap().port(), silent.local_addr().unwrap().port());
    std::thread::spawn(move || {
        let mut seed = 0x1234_5678u64;
        for (i, conn) in garbage.incoming().enumerate() {
            let Ok(mut conn) = conn else { continue };
            // Alternate pure noise and a plausible status line followed by noise.
            if i % 2 == 1 {
                let _ = conn.write_all(b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nContent-Length: 99999999999\r\n\r\n");
            }
            let bytes: Vec<u8> = (0..4096)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = conn.write_all(&bytes);
        }
    });
    let held: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::default();
    let h = Arc::clone(&held);
    std::thread::spawn(move || {
        for conn in silent.incoming().flatten() {
            h.lock().unwrap().push(conn); // accepted, never answered
        }
    });
    let rt = runtime();
    let mut s1 = spec(7, gp, "/cam");
    s1.frame_timeout = Duration::from_millis(800);
    let (f1, garbage_health, h1) = start(&rt, s1);
    let mut s2 = spec(8, sp, "/cam");
    s2.frame_timeout = Duration::from_millis(800);
    let (f2, silent_health, h2) = start(&rt, s2);
    wait_for("several attempts", Duration::from_secs(10), || {
        garbage_health.attempts.load(std::sync::atomic::Ordering::Relaxed) >= 3
            && silent_health.attempts.load(std::sync::atomic::Ordering::Relaxed) >= 2
    });
    assert!(!h1.is_finished() && !h2.is_finished(), "the camera tasks are alive (no panic)");
    let e = garbage_health.status().last_error.unwrap();
    assert!(e.starts_with("camera 7 (rtsp://127.0.0.1:"), "{e}");
    let e = silent_health.status().last_error.unwrap();
    assert!(e.contains("camera 8") && e.contains("no frame for 0.8 s"), "{e}");
    assert!(f1.lock().unwrap().is_empty() && f2.lock().unwrap().is_empty());
}

#[test]
fn onvif_metadata_from_the_camera_becomes_objects_without_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let raw = render_frames(dir.path(), 6, 20);
    let truth_file = dir.path().join("cam6.truth.jsonl");
    let server = RtspServer::start(
        0,
        &[format!("--mount=/cam6={}", raw.display()), format!("--onvif=/cam6={}", truth_file.display())],
        &[],
    );
    let rt = runtime();
    let (frames, objects, health, _h) = start_with_objects(&rt, spec(6, server.port, "/cam6"));
    let mut model = spec(9, server.port, "/cam6");
    model.onvif = false;
    let (model_frames, model_objects, _mh, _h2) = start_with_objects(&rt, model);
    wait_for("metadata documents", Duration::from_secs(10), || objects.lock().unwrap().len() >= 20);
    // A camera that detects itself needs no model: its video is not decoded. Set to ignore the
    // metadata, the same camera is decoded for the model instead.
    assert!(frames.lock().unwrap().is_empty(), "no frames decoded for the detector");
    assert!(model_frames.lock().unwrap().len() >= 5 && model_objects.lock().unwrap().is_empty());
    let truth: Vec<Vec<serde_json::Value>> = std::fs::read_to_string(&truth_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let docs = objects.lock().unwrap().clone();
    let mut matched = 0;
    for d in &docs {
        let (w, h) = d.frame_size.map_or((1.0, 1.0), |(w, h)| (w as f32, h as f32));
        // Each document is one rendered frame's truth, boxes mapped back to pixels.
        let same = truth.iter().any(|t| {
            t.len() == d.objects.len()
                && t.iter().zip(&d.objects).all(|(want, got)| {
                    let px = vigil_pipelines::onvif::to_pixels(got.bbox, w, h);
                    let class = if want["class"] == "person" { "person" } else { "car" };
                    let b: Vec<f32> =
                        want["bbox"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
                    got.class == class
                        && got.likelihood == 0.9
                        && px.iter().zip(&b).all(|(a, b)| (a - b).abs() < 1.0)
                })
        });
        matched += usize::from(same);
    }
    // The first document may come before the first video frame (no frame size yet).
    assert!(
        matched + 1 >= docs.len(),
        "{matched} of {} documents match a rendered frame's objects",
        docs.len()
    );
    assert!(docs.iter().filter(|d| d.frame_size == Some((640, 360))).count() + 1 >= docs.len());
    let now = now_ms();
    let last = docs.last().unwrap();
    assert!((now - last.capture_ms).abs() < 1_000, "timed by the camera's UtcTime (same clock here)");
    // Sequence numbers are shared with the frames, so event ids never collide.
    let mut seqs: Vec<u64> =
        docs.iter().map(|d| d.seq).chain(frames.lock().unwrap().iter().map(|(_, f)| f.seq)).collect();
    let n = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), n);
    assert_eq!(health.decode_errors.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[test]
fn a_camera_in_another_codec_is_a_clear_error_and_others_are_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let raw = render_frames(dir.path(), 3, 10);
    let mjpeg =
        RtspServer::start(0, &[format!("--mount=/mjpeg={}", raw.display()), "--codec=jpeg".into()], &[]);
    let h264 = RtspServer::start(0, &[format!("--mount=/cam3={}", raw.display())], &[]);
    let rt = runtime();
    let (bad_frames, bad, _h1) = start(&rt, spec(10, mjpeg.port, "/mjpeg"));
    let (good_frames, _good, _h2) = start(&rt, spec(11, h264.port, "/cam3"));
    wait_for("the codec error", Duration::from_secs(10), || bad.status().last_error.is_some());
    let e = bad.status().last_error.unwrap();
    assert!(
        e.contains("camera 10")
            && e.contains("video codec jpeg is not supported")
            && e.contains("fix: set the camera's stream to H.264"),
        "{e}"
    );
    wait_for("the H.264 camera's frames", Duration::from_secs(10), || good_frames.lock().unwrap().len() >= 5);
    assert!(bad_frames.lock().unwrap().is_empty());
}

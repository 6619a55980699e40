//! The detection operator when inference is slower than the cameras: frames are dropped by
//! policy (oldest first) and counted, the queue never grows past its bound, and every frame
//! that is kept comes out with its detections (real ONNX Runtime, the generated shapes model).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use vigil_models::detector::{Detector, DetectorConfig};
use vigil_pipelines::camera::{Frame, Health};
use vigil_pipelines::detect::{DetectStage, StageConfig};

#[test]
fn a_flood_of_frames_is_dropped_by_policy_and_counted_with_bounded_memory() {
    let env = vigil_models::runtime::environment(None).expect("run scripts/setup-models");
    let model = common::root().join(".models/shapes_v8.onnx");
    let detector =
        Detector::new(&env, DetectorConfig::new(model, vec!["person".into(), "car".into()])).unwrap();
    let health: HashMap<u32, Arc<Health>> = (0..2).map(|c| (c, Arc::new(Health::new(c, "cam")))).collect();
    let (tx, rx) = std::sync::mpsc::channel();
    let config = StageConfig { batch: 2, deadline: Duration::from_millis(5), queue: 4 };
    let stage = DetectStage::start(detector, config, health.clone(), tx, |e| panic!("{e}")).unwrap();
    let sink = stage.sink();
    let dir = tempfile::tempdir().unwrap();
    let raw = std::fs::read(common::render_frames(dir.path(), 0, 1)).unwrap();
    let image = Arc::new(image::RgbImage::from_raw(640, 360, raw).unwrap());
    // 400 frames from two cameras as fast as they can be offered: far faster than inference.
    let mut most_waiting = 0;
    for seq in 1..=200u64 {
        for camera in 0..2 {
            sink(Frame { camera, seq, capture_ms: seq as i64 * 100, image: Arc::clone(&image) });
            most_waiting = most_waiting.max(stage.waiting());
        }
    }
    assert!(most_waiting <= config.queue, "the queue stays within its bound: {most_waiting}");
    std::thread::sleep(Duration::from_millis(500));
    stage.stop();
    let out: Vec<_> = rx.try_iter().collect();
    let dropped: u64 = health.values().map(|h| h.frames_dropped.load(Ordering::Relaxed)).sum();
    assert!(dropped > 0, "inference is slower than the flood: frames were dropped");
    assert_eq!(out.len() as u64 + dropped, 400, "every frame is either detected or counted as dropped");
    // Oldest first: the newest frames of both cameras made it.
    for camera in 0..2 {
        assert!(
            out.iter().any(|d| d.frame.camera == camera && d.frame.seq == 200),
            "camera {camera}'s last frame was kept"
        );
        let seqs: Vec<u64> = out.iter().filter(|d| d.frame.camera == camera).map(|d| d.frame.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
    }
    assert!(
        out.iter().all(|d| !d.detections.is_empty()),
        "the rendered people were found in every kept frame"
    );
}

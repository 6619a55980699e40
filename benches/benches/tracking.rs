//! The tracker: frames per second per core at 15 and at 100 objects per frame, against Roboflow's
//! ByteTrack, OC-SORT and SORT (PyPI `trackers`, what a team would otherwise pick) on the same
//! detections in the same run.
//!
//! A plain harness (not criterion): the figure is a ratio of two whole runs.
//! `cargo bench -p vigil-benches --bench tracking` runs the full size; under `cargo test` a small
//! size runs as a smoke test. The detections come from the city simulator (`vigil mot-sim`'s
//! sequences: 3 px box noise, 5% misses, 0.02 spurious boxes per frame).

// The bench's output is its report.
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use vigil_operators::tracker::{Observation, Tracker, TrackerConfig};
use vigil_pipelines::mot::{parse_detections, simulate_sequence};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let frames: u32 = if full { 3000 } else { 50 };
    println!("tracking bench ({})", if full { "full" } else { "smoke" });
    let base = vigil_pipelines::settings::Settings::embedded().sim;
    for people in [15usize, 100] {
        let mut params = base.clone();
        params.pedestrians = people;
        params.surge = None;
        params.vehicles_per_minute = 0.0;
        let dir = tempfile::tempdir().unwrap();
        simulate_sequence(&params, 0, frames, dir.path()).unwrap();
        let det_path = dir.path().join("det/det.txt");
        let dets = parse_detections(&std::fs::read_to_string(&det_path).unwrap(), "det.txt").unwrap();
        let mut by_frame: Vec<Vec<Observation>> = vec![Vec::new(); frames as usize + 1];
        for d in &dets {
            by_frame[d.frame as usize].push(Observation { bbox: d.bbox, score: d.conf, class: 0, tag: 0 });
        }
        let per_frame = dets.len() as f64 / f64::from(frames);
        let mut best = 0.0f64;
        let mut out = Vec::new();
        for _ in 0..3 {
            let mut tracker = Tracker::new(TrackerConfig::default());
            let t = Instant::now();
            let mut reported = 0;
            for (i, f) in by_frame[1..].iter().enumerate() {
                tracker.update(i as f64 * 0.1, f, &mut out);
                reported += out.len();
            }
            best = best.max(f64::from(frames) / t.elapsed().as_secs_f64());
            assert!(reported > 0);
        }
        let py =
            std::env::var_os("VIGIL_PYTHON").map_or_else(|| root().join(".venv/bin/python"), PathBuf::from);
        println!(
            "{people} people ({per_frame:.1} detections/frame): vigil {best:.0} frames/s; {:.2} us per detection",
            1e6 / (best * per_frame)
        );
        for (name, kind) in [("Roboflow ByteTrack", "bytetrack"), ("OC-SORT", "ocsort"), ("SORT", "sort")] {
            let run = std::process::Command::new(&py)
                .arg(root().join("scripts/bench_tracker.py"))
                .arg(&det_path)
                .arg(frames.to_string())
                .arg(kind)
                .output()
                .expect("python");
            assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
            let theirs: f64 = String::from_utf8_lossy(&run.stdout).trim().parse().expect("frames/s");
            println!("  {name} {theirs:.0} frames/s: vigil {:.1}x", best / theirs);
        }
    }
}

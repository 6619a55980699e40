//! The density operator: points (person detections in zones) per second per core, fused across
//! cameras, against Roboflow's `supervision.PolygonZone` (what a team would otherwise pick to
//! count people in a zone) on the same points in the same run.
//!
//! Two shapes: a stadium gate plaza seen by 3 cameras with 150 people (every person fused from
//! three views), and a city of 100 single-camera zones with 15 people each. vigil does more
//! than PolygonZone here (fusion, sliding windows, hysteresis, the grid); PolygonZone only tests
//! which boxes of one camera's frame lie in one polygon.
//!
//! A plain harness (not criterion): the figure is a ratio of two whole runs.
//! `cargo bench -p vigil-benches --bench density` runs the full size; under `cargo test` a small
//! size runs as a smoke test.

// The bench's output is its report.
#![allow(clippy::print_stdout)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use vigil_operators::density::{Density, DensityConfig, Outputs, Point};
use vigil_operators::zones::Zone;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A tiny deterministic generator (the bench needs repeatable positions, not quality).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Frames of points: `zones` zones of 12 × 8 m, each seen by `cameras` cameras, `people` per
/// zone walking about, 10 fps for `seconds`. Returns the points per 100 ms tick.
fn scenario(zones: u32, cameras: u32, people: usize, seconds: i64) -> (Vec<Zone>, Vec<Vec<Point>>) {
    let mut rng = Lcg(7);
    let zone_list: Vec<Zone> = (0..zones)
        .map(|z| {
            let x0 = f64::from(z % 10) * 100.0;
            let y0 = f64::from(z / 10) * 100.0;
            Zone {
                id: z + 1,
                name: format!("zone-{z}"),
                cameras: (0..cameras).map(|c| z * cameras + c).collect(),
                polygon: vec![[x0, y0], [x0 + 12.0, y0], [x0 + 12.0, y0 + 8.0], [x0, y0 + 8.0]],
                alert_density: 1.5,
                clear_density: 1.2,
            }
        })
        .collect();
    let mut pos: Vec<Vec<[f32; 2]>> =
        (0..zones).map(|_| (0..people).map(|_| [rng.next() * 12.0, rng.next() * 8.0]).collect()).collect();
    let mut ticks = Vec::new();
    for k in 0..seconds * 10 {
        let t = k * 100;
        let mut pts = Vec::new();
        for (z, zone) in zone_list.iter().enumerate() {
            let o = zone.polygon[0];
            for p in pos[z].iter_mut() {
                p[0] = (p[0] + (rng.next() - 0.5) * 0.2).clamp(0.0, 11.99);
                p[1] = (p[1] + (rng.next() - 0.5) * 0.2).clamp(0.0, 7.99);
            }
            for &camera in &zone.cameras {
                for p in &pos[z] {
                    if rng.next() < 0.1 {
                        continue; // a miss
                    }
                    let (ex, ey) = ((rng.next() - 0.5) * 0.2, (rng.next() - 0.5) * 0.2);
                    pts.push(Point {
                        zone: zone.id,
                        camera,
                        t,
                        x: o[0] as f32 + p[0] + ex,
                        y: o[1] as f32 + p[1] + ey,
                    });
                }
            }
        }
        ticks.push(pts);
    }
    (zone_list, ticks)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let seconds = if full { 120 } else { 5 };
    println!("density bench ({})", if full { "full" } else { "smoke" });
    for (name, zones, cameras, people) in
        [("gate plaza, 3 cameras", 1, 3, 150), ("100 zones, 1 camera", 100, 1, 15)]
    {
        let (zone_list, ticks) = scenario(zones, cameras, people, seconds);
        let points: usize = ticks.iter().map(Vec::len).sum();
        let mut best = 0.0f64;
        for _ in 0..3 {
            let mut d = Density::new(DensityConfig::new(zone_list.clone()));
            let mut work: Vec<Vec<Point>> = ticks.clone();
            let t = Instant::now();
            let mut rows = 0;
            for (k, pts) in work.iter_mut().enumerate() {
                let mut out = Outputs::default();
                d.advance(pts, Some(k as i64 * 100 + 1), &mut out);
                let (a, b, c) = out.finish();
                rows += usize::from(a.is_some()) + usize::from(b.is_some()) + usize::from(c.is_some());
            }
            best = best.max(points as f64 / t.elapsed().as_secs_f64());
            assert!(rows > 0);
        }
        // The same points, per camera frame, through supervision's PolygonZone.
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("points.csv");
        let mut f = std::io::BufWriter::new(std::fs::File::create(&csv).unwrap());
        for pts in &ticks {
            for p in pts {
                writeln!(f, "{},{},{},{},{}", p.t, p.zone, p.camera, p.x, p.y).unwrap();
            }
        }
        drop(f);
        let py =
            std::env::var_os("VIGIL_PYTHON").map_or_else(|| root().join(".venv/bin/python"), PathBuf::from);
        let run = std::process::Command::new(py)
            .arg(root().join("scripts/bench_density.py"))
            .arg(&csv)
            .output()
            .expect("python");
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        let theirs: f64 = String::from_utf8_lossy(&run.stdout).trim().parse().expect("points/s");
        println!(
            "{name}: {points} points; vigil {best:.0} points/s ({:.3} us per point), supervision PolygonZone {theirs:.0} points/s: {:.1}x",
            1e6 / best,
            best / theirs
        );
    }
}

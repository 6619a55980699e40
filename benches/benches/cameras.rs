//! Cameras and models: H.264 decode rate per core at 720p and 1080p, detector throughput at
//! batch 1 and 8, and the overhead of vigil's Rust ONNX Runtime path against onnxruntime's
//! Python API on the same model and input, measured in the same run.
//!
//! A plain harness (not criterion): the figures are rates and a ratio over whole runs.
//! `cargo bench -p vigil-benches --bench cameras` runs the full size; under `cargo test` a small
//! size runs as a smoke test. Needs `scripts/setup-models` (ONNX Runtime, the shapes model).

// The bench's output is its report.
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use openh264::formats::{RgbSliceU8, YUVBuffer, YUVSource};
use ort::value::TensorRef;
use vigil_models::detector::{Detector, DetectorConfig};
use vigil_models::yolo::letterbox_into;
use vigil_pipelines::render::Renderer;

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("Linux /proc");
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    (f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0)) / 100.0
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn frames(w: u32, h: u32, n: usize) -> Vec<image::RgbImage> {
    let mut r = Renderer::new(vigil_pipelines::settings::Settings::embedded().sim, 0, w, h);
    (0..n).map(|_| r.next_frame().image).collect()
}

/// Decodes `n` frames of rendered city video at `w × h` (encoded once with OpenH264 first);
/// returns (decode-only, decode + RGB) frames per CPU-second.
fn decode(w: u32, h: u32, n: usize) -> (f64, f64) {
    let mut enc = openh264::encoder::Encoder::new().expect("encoder");
    let packets: Vec<Vec<u8>> = frames(w, h, n)
        .iter()
        .map(|f| {
            let yuv = YUVBuffer::from_rgb8_source(RgbSliceU8::new(f.as_raw(), (w as usize, h as usize)));
            enc.encode(&yuv).expect("encode").to_vec()
        })
        .collect();
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    let mut rates = [0.0; 2];
    for (i, convert) in [false, true].into_iter().enumerate() {
        let mut dec = openh264::decoder::Decoder::new().expect("decoder");
        let c0 = cpu_seconds();
        let mut decoded = 0;
        for p in &packets {
            if let Ok(Some(yuv)) = dec.decode(p) {
                if convert {
                    assert_eq!(yuv.dimensions(), (w as usize, h as usize));
                    yuv.write_rgb8(&mut rgb);
                }
                decoded += 1;
            }
        }
        // The encoder's rate control may skip a frame now and then; rates count decoded frames.
        assert!(decoded * 10 >= n * 8, "decoded {decoded} of {n}");
        rates[i] = decoded as f64 / (cpu_seconds() - c0).max(0.01);
    }
    (rates[0], rates[1])
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (n_decode, n_infer, n_ort) = if full { (300, 400, 500) } else { (10, 8, 5) };
    println!("cameras bench ({})", if full { "full" } else { "smoke" });
    for (w, h) in [(1280, 720), (1920, 1080)] {
        let (d, dr) = decode(w, h, n_decode);
        println!("decode {w}x{h}: {d:.0} frames/s per core (decode only), {dr:.0} with YUV->RGB");
    }

    let env = vigil_models::runtime::environment(None).expect("ONNX Runtime: run scripts/setup-models");
    let model = root().join(".models/shapes_v8.onnx");
    let mut det =
        Detector::new(&env, DetectorConfig::new(&model, vec!["person".into(), "car".into()])).expect("model");
    let pics = frames(1280, 720, 8);
    for batch in [1usize, 8] {
        let refs: Vec<&image::RgbImage> = pics.iter().take(batch).collect();
        det.detect(&refs).unwrap();
        let (c0, t0) = (cpu_seconds(), Instant::now());
        let mut done = 0;
        while done < n_infer {
            let found = det.detect(&refs).unwrap();
            assert!(found.iter().all(|f| !f.is_empty()));
            done += batch;
        }
        let (cpu, wall) = (cpu_seconds() - c0, t0.elapsed().as_secs_f64());
        println!(
            "detector 1280x720 -> 320x320, batch {batch}: {:.0} frames/s per CPU-second ({:.0} frames/s wall)",
            done as f64 / cpu.max(0.01),
            done as f64 / wall
        );
    }

    // Rust against Python on the same model and the same input tensor, one thread each.
    let mut input = vec![0.0f32; 3 * 320 * 320];
    letterbox_into(&pics[0], 320, 320, &mut input);
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("input.f32");
    std::fs::write(&raw, input.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let mut session = vigil_models::runtime::session(&env, &model, 1).unwrap();
    let mut run = || {
        let t = TensorRef::from_array_view(([1usize, 3, 320, 320], input.as_slice())).unwrap();
        let out = session.run(ort::inputs![t]).unwrap();
        let (_, data) = out[0].try_extract_tensor::<f32>().unwrap();
        data.len()
    };
    for _ in 0..5 {
        run();
    }
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..n_ort {
            run();
        }
        best = best.min(t.elapsed().as_secs_f64() / n_ort as f64);
    }
    let rust_ms = best * 1000.0;
    let py = std::env::var_os("VIGIL_PYTHON").map_or_else(|| root().join(".venv/bin/python"), PathBuf::from);
    let out = std::process::Command::new(py)
        .arg(root().join("scripts/bench_ort.py"))
        .arg(&model)
        .arg(&raw)
        .args([n_ort.to_string(), "3".into(), "320".into(), "320".into()])
        .output()
        .expect("python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let python_ms: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("ms");
    println!(
        "session.run, same model and input, 1 thread: Rust {rust_ms:.3} ms, Python onnxruntime {python_ms:.3} ms: Rust/Python = {:.3}",
        rust_ms / python_ms
    );
}

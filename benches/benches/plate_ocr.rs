//! Plate crops per second through vigil's OCR (PP-OCR digits and the Arabic letter classifier),
//! and vehicles per second through the whole reader (plate detection first), against the same
//! models run from Python's onnxruntime in the same run (`scripts/bench_plate_ocr.py`: what a
//! team would otherwise write), one intra-op thread each.
//!
//! The crops are `scripts/plates.py heldout` plates (seed 11, not the accuracy set's), and the
//! vehicles the frames of `scripts/plates.py scene`. The Python side does the same work per
//! crop: two recognizer runs (serial and code) and one classifier run, with PIL resizing.
//!
//! A plain harness (not criterion): the figures are whole runs. `cargo bench -p vigil-benches
//! --bench plate_ocr` reads 200 crops and 20 vehicles; under `cargo test`, 10 and 2.

// The bench's output is its report.
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use vigil_models::plates::{PlateConfig, PlateReader};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn python() -> PathBuf {
    std::env::var_os("VIGIL_PYTHON").map_or_else(|| root().join(".venv/bin/python"), PathBuf::from)
}

fn run(args: &[&str]) -> String {
    let out = Command::new(python()).args(args).output().expect("python");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (crops_n, vehicles_n) = if full { (200, 20) } else { (10, 2) };
    let Some(config) = PlateConfig::locate(&root()) else {
        println!("plate_ocr: models not installed (scripts/setup-models); skipped");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let crops = dir.path().join("crops");
    let script = root().join("scripts/plates.py");
    let script = script.to_str().unwrap();
    run(&[script, "heldout", "--out", crops.to_str().unwrap(), "--n", &crops_n.to_string(), "--seed", "11"]);
    let scene = dir.path().join("scene.rgb");
    run(&[
        script,
        "scene",
        "--out",
        scene.to_str().unwrap(),
        "--plate",
        "12345-ب-6",
        "--frames",
        &vehicles_n.to_string(),
    ]);

    let env = vigil_models::runtime::environment(None).expect("onnxruntime");
    let mut reader = PlateReader::new(&env, &config).expect("plate models");
    let images: Vec<image::RgbImage> =
        (0..crops_n).map(|i| image::open(crops.join(format!("{i:04}.png"))).unwrap().to_rgb8()).collect();
    for img in images.iter().take(3) {
        reader.read_crop(img).unwrap();
    }
    let mut best = f64::MAX;
    let mut read = 0;
    for _ in 0..3 {
        let t = Instant::now();
        read = images.iter().filter(|img| reader.read_crop(img).unwrap().is_some()).count();
        best = best.min(t.elapsed().as_secs_f64());
    }
    let rust_crops = crops_n as f64 / best;

    let raw = std::fs::read(&scene).unwrap();
    let frames: Vec<image::RgbImage> = raw
        .chunks(1280 * 720 * 3)
        .map(|c| image::RgbImage::from_raw(1280, 720, c.to_vec()).unwrap())
        .collect();
    // The scene's vehicle box, as the detector gives it (scripts/plates.py scene's geometry).
    let boxes: Vec<[f32; 4]> = (0..frames.len())
        .map(|i| {
            let x = (1280.0 * 0.15 + 1280.0 * 0.55 * i as f32 / (frames.len().max(2) - 1) as f32).floor();
            [x, 275.0, 250.0, 170.0]
        })
        .collect();
    let t = Instant::now();
    let plates = frames.iter().zip(&boxes).filter(|(f, b)| reader.read(f, **b).unwrap().is_some()).count();
    let rust_vehicles = frames.len() as f64 / t.elapsed().as_secs_f64();

    let py = run(&[
        root().join("scripts/bench_plate_ocr.py").to_str().unwrap(),
        crops.to_str().unwrap(),
        scene.to_str().unwrap(),
        config.text.to_str().unwrap(),
        config.letters.to_str().unwrap(),
        config.detector.to_str().unwrap(),
    ]);
    let mut it = py.split_whitespace().map(|v| v.parse::<f64>().expect("python figures"));
    let (py_crops, py_vehicles) = (it.next().unwrap(), it.next().unwrap());
    println!(
        "plate OCR bench ({}): {crops_n} crops ({read} with text), {} vehicles ({plates} plates)",
        if full { "full" } else { "smoke" },
        frames.len()
    );
    println!(
        "  crops/s    vigil {rust_crops:8.1}   python onnxruntime {py_crops:8.1}   ratio {:.2}x",
        rust_crops / py_crops
    );
    println!(
        "  vehicles/s vigil {rust_vehicles:8.2}   python onnxruntime {py_vehicles:8.2}   ratio {:.2}x",
        rust_vehicles / py_vehicles
    );
    assert!(read > 0 && plates > 0, "the reader read nothing: the figures would be meaningless");
}

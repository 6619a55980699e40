//! The detection rules shipped under `sql/rules/`, each run on the simulated city (via `vigil
//! replay` over the demo's recorded events) and checked against what the simulation did: the
//! gate-A surge, the watchlisted plates, and a camera that we silence by cutting its events.

mod common;

use common::{root, vigil};

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::{Float64Type, TimestampMillisecondType, UInt32Type};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

const START: i64 = 1_781_467_200_000; // 2026-06-14T20:00:00Z, the demo city's start

fn read(path: &Path) -> Vec<RecordBatch> {
    let file = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap().map(Result::unwrap).collect()
}

/// Copies the recorded events, without camera 3's detections after `cut_ms` of simulated time.
fn silence_camera_3(from: &Path, to: &Path, cut_ms: i64) {
    for entry in walk(from) {
        let rel = entry.strip_prefix(from).unwrap();
        let dest = to.join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        if !rel.starts_with("detections") {
            std::fs::copy(&entry, &dest).unwrap();
            continue;
        }
        let batches = read(&entry);
        let Some(first) = batches.first() else { continue };
        let mut w = ArrowWriter::try_new(File::create(&dest).unwrap(), first.schema(), None).unwrap();
        for b in &batches {
            let cam = b.column_by_name("camera_id").unwrap().as_primitive::<UInt32Type>();
            let t = b.column_by_name("event_time").unwrap().as_primitive::<TimestampMillisecondType>();
            let keep: BooleanArray = (0..b.num_rows())
                .map(|i| Some(!(cam.value(i) == 3 && t.value(i) >= START + cut_ms)))
                .collect();
            w.write(&arrow::compute::filter_record_batch(b, &keep).unwrap()).unwrap();
        }
        w.close().unwrap();
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
    out
}

#[test]
fn the_rules_library_finds_what_the_simulated_city_did() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    vigil(&["demo", "--fast", "--duration", "60", "--out", "ev", "--quiet"], dir);
    silence_camera_3(&dir.join("ev"), &dir.join("ev2"), 20_000);

    // Every file of the library, as one rule file.
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("sql/rules"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    let mut all = String::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        if text.contains("CREATE RULE") {
            all.push_str(&text);
        } else {
            let name = f.file_stem().unwrap().to_str().unwrap();
            let body: String =
                text.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n");
            all.push_str(&format!("CREATE RULE {name} AS {body}"));
        }
        all.push_str(";\n");
    }
    std::fs::write(dir.join("library.sql"), all).unwrap();
    let summary = vigil(&["replay", "--events", "ev2", "--rules", "library.sql", "--out", "out"], dir);
    let rows: BTreeMap<String, usize> = summary
        .lines()
        .filter_map(|l| {
            l.split_once(": ")
                .and_then(|(n, r)| Some((n.to_owned(), r.split_whitespace().next()?.parse().ok()?)))
        })
        .collect();
    for f in &files {
        let name = f.file_stem().unwrap().to_str().unwrap();
        assert!(rows.get(name).is_some_and(|n| *n > 0), "{name} found nothing on the demo city: {summary}");
    }

    // gate_flow: the gate-A entry line, rate = crossings / width, ratio = rate / 82.
    let mut surge_in = 0.0;
    for b in read(&dir.join("out/gate_flow.parquet")) {
        let line = b.column_by_name("line").unwrap().as_string::<i32>();
        let col = |n: &str| {
            arrow::compute::cast(b.column_by_name(n).unwrap(), &arrow::datatypes::DataType::Float64).unwrap()
        };
        let (cin, cout, width, rate, ratio) = (
            col("crossed_in"),
            col("crossed_out"),
            col("width_m"),
            col("persons_per_min_per_m"),
            col("capacity_ratio"),
        );
        let f = |a: &arrow::array::ArrayRef, i: usize| a.as_primitive::<Float64Type>().value(i);
        for i in 0..b.num_rows() {
            assert_eq!(line.value(i), "gate-a-entry");
            assert!((f(&width, i) - 12.0).abs() < 1e-9);
            let n = f(&cin, i) + f(&cout, i);
            assert!((f(&rate, i) - n / 12.0).abs() < 1e-9 && (f(&ratio, i) - n / 12.0 / 82.0).abs() < 1e-9);
            surge_in += f(&cin, i);
        }
    }
    assert!(surge_in >= 20.0, "the surge walks in through the gate-A entry line: {surge_in}");

    // long_dwell: people held in gate A's plaza by the surge (and walkers lingering in the large
    // fan zone); every row's dwell is its exit minus its entry.
    let mut gate_a = 0;
    for b in read(&dir.join("out/long_dwell.parquet")) {
        let zone = b.column_by_name("zone").unwrap().as_string::<i32>();
        let dwell = b.column_by_name("dwell_s").unwrap().as_primitive::<Float64Type>();
        let t0 = b.column_by_name("entered_at").unwrap().as_primitive::<TimestampMillisecondType>();
        let t1 = b.column_by_name("left_at").unwrap().as_primitive::<TimestampMillisecondType>();
        for i in 0..b.num_rows() {
            assert!(["gate-a", "fan-zone"].contains(&zone.value(i)), "{}", zone.value(i));
            gate_a += usize::from(zone.value(i) == "gate-a");
            assert!(dwell.value(i) > 20.0);
            assert!(((t1.value(i) - t0.value(i)) as f64 / 1000.0 - dwell.value(i)).abs() < 1e-9);
        }
    }
    assert!(gate_a >= 10, "the surge holds people at gate A for 25 s: {gate_a} long visits");

    // crowd_forming: the surge at gate A (15 s to 25 s), and nowhere else.
    for b in read(&dir.join("out/crowd_forming.parquet")) {
        let zone = b.column_by_name("zone").unwrap().as_string::<i32>();
        let before = b.column_by_name("density_before").unwrap().as_primitive::<Float64Type>();
        let now = b.column_by_name("density_now").unwrap().as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            assert_eq!(zone.value(i), "gate-a");
            assert!(now.value(i) >= 0.72 && now.value(i) >= before.value(i) + 0.3);
        }
    }

    // watchlist_two_cameras: only listed plates, two cameras, at most 10 minutes apart.
    let listed = ["12345-ب-6", "4821-د-33"];
    for b in read(&dir.join("out/watchlist_two_cameras.parquet")) {
        let plate = b.column_by_name("plate").unwrap().as_string::<i32>();
        let c1 = b.column_by_name("first_camera").unwrap().as_primitive::<UInt32Type>();
        let c2 = b.column_by_name("second_camera").unwrap().as_primitive::<UInt32Type>();
        let t1 = b.column_by_name("first_seen").unwrap().as_primitive::<TimestampMillisecondType>();
        let t2 = b.column_by_name("then_seen").unwrap().as_primitive::<TimestampMillisecondType>();
        for i in 0..b.num_rows() {
            assert!(listed.contains(&plate.value(i)), "{}", plate.value(i));
            assert_ne!(c1.value(i), c2.value(i));
            let dt = t2.value(i) - t1.value(i);
            assert!(dt > 0 && dt <= 600_000, "{dt}");
        }
    }

    // camera_silent: camera 3 went silent at 20 s and is reported before the end; the others
    // only when the stream ends (last seen in the last second).
    let mut last_seen = BTreeMap::new();
    for b in read(&dir.join("out/camera_silent.parquet")) {
        let cam = b.column_by_name("camera_id").unwrap().as_primitive::<UInt32Type>();
        let seen = b.column_by_name("last_seen").unwrap().as_primitive::<TimestampMillisecondType>();
        for i in 0..b.num_rows() {
            last_seen.entry(cam.value(i)).or_insert_with(Vec::new).push(seen.value(i) - START);
        }
    }
    let three = &last_seen[&3];
    assert!(
        three.iter().any(|&t| (19_000..20_000).contains(&t)),
        "camera 3 last seen just before 20 s: {three:?}"
    );
    for (cam, seen) in &last_seen {
        if *cam != 3 {
            assert!(seen.iter().all(|&t| t >= 59_000), "camera {cam} was never silent: {seen:?}");
        }
    }

    // confident_person: every row satisfies its WHERE.
    for b in read(&dir.join("out/confident_person.parquet")) {
        let score = b.column_by_name("score").unwrap().as_primitive::<arrow::datatypes::Float32Type>();
        assert!((0..b.num_rows()).all(|i| score.value(i) > 0.9));
        assert!(b.num_rows() == 0 || b.column(0).null_count() == 0);
    }
}

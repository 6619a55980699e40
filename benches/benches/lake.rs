//! The lake: rows/s written by vigil's Parquet writer against pyarrow writing the same batches
//! with the same settings in the same run, bytes per detection row, and DuckDB's scan of one day
//! of a 50-camera city before and after the hours are compacted.
//!
//! The day is synthetic (50 cameras, two detections a second each on average, 8.6 million rows),
//! written as the sinks write it: a file per five-second commit, under hourly partitions. Then
//! each hour is merged with `lake::compact`, as the engine does once an hour has closed.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use criterion::{Criterion, criterion_group, criterion_main};
use parquet::arrow::ArrowWriter;
use vigil_engine::stream::StreamDef;
use vigil_operators::detection::{Detection, DetectionRows, Detections};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn python() -> PathBuf {
    std::env::var_os("VIGIL_PYTHON").map_or_else(|| root().join(".venv/bin/python"), PathBuf::from)
}

fn py(script: &str, args: &[&str]) -> String {
    let out = Command::new(python()).arg("-c").arg(script).args(args).output().expect("python");
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The columns the sinks dictionary-encode (`pipelines/src/app/graph.rs`).
const DICTIONARY: [&str; 2] = ["camera_id", "class"];

/// `seconds` of a city of `cameras` cameras, two detections a second per camera on average, in
/// batches of one second (what a tick delivers), starting at `t0`.
fn day(cameras: u32, seconds: i64, t0: i64, mut each: impl FnMut(i64, RecordBatch)) {
    let mut rows = DetectionRows::default();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for s in 0..seconds {
        for c in 0..cameras {
            for i in 0..(next() % 5) as u32 {
                let r = next();
                let t = t0 + s * 1000 + (r % 1000) as i64;
                let class = if r % 7 == 0 { "car" } else { "person" };
                let (x, y) = ((r >> 8) % 1920, (r >> 20) % 1080);
                let ground = [((r >> 32) % 4000) as f32 / 100.0, ((r >> 44) % 2000) as f32 / 100.0];
                rows.push(&Detection::boxed(
                    (c, t, (u64::from(c) << 40) | ((s as u64) << 8) | u64::from(i)),
                    class,
                    0.5 + (r % 500) as f32 / 1000.0,
                    [x as f32, y as f32, 40.0 + (r % 60) as f32, 90.0 + (r % 120) as f32],
                    (ground, (r % 3 == 0).then_some(r as u32 % 8)),
                ));
            }
        }
        each(s, rows.finish());
    }
}

fn write(path: &Path, batches: &[RecordBatch]) -> u64 {
    let props = vigil_engine::parquet_sink::writer_properties(&DICTIONARY);
    let mut w =
        ArrowWriter::try_new(File::create(path).unwrap(), Detections::info().schema.clone(), Some(props))
            .unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
    std::fs::metadata(path).unwrap().len()
}

const PYARROW: &str = r#"
import sys, time, pyarrow as pa, pyarrow.parquet as pq
reader = pa.ipc.open_file(sys.argv[1])
batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
rows = sum(b.num_rows for b in batches)
# pyarrow's own best path: the batches as one table (not timed), one write. (Writing them one by
# one makes a row group per batch, which is slower and larger.)
table = pa.Table.from_batches(batches)
times = []
for _ in range(5):
    t = time.perf_counter()
    pq.write_table(table, sys.argv[2], compression="zstd", compression_level=1,
                   use_dictionary=["camera_id", "class"], write_statistics=True,
                   write_page_index=True, row_group_size=1024 * 1024)
    times.append(time.perf_counter() - t)
times.sort()
import os
print(rows / times[2], os.path.getsize(sys.argv[2]))
"#;

const DUCKDB: &str = r#"
import sys, time, duckdb
con = duckdb.connect()
con.sql("SET enable_progress_bar = false")
q = f"select count(*), avg(score) from read_parquet('{sys.argv[1]}/**/*.parquet') where camera_id = 7 and class = 'car'"
con.sql(q).fetchall()
times = []
for _ in range(5):
    t = time.perf_counter()
    con.sql(q).fetchall()
    times.append(time.perf_counter() - t)
times.sort()
print(times[2])
"#;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    // A million rows in one-second batches: 50 cameras, about 2.8 hours.
    let mut batches = Vec::new();
    day(50, 10_000, 1_781_467_200_000, |_, b| batches.push(b));
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let mut g = c.benchmark_group("lake");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    let out = dir.path().join("vigil.parquet");
    g.bench_function("write detections, 1-second batches (vigil)", |b| b.iter(|| write(&out, &batches)));
    g.finish();

    // The same rows, timed by hand for the ratio, and by pyarrow from the same batches.
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..5 {
        let t = Instant::now();
        bytes = write(&out, &batches);
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let vigil_rows_s = rows as f64 / times[2];
    let ipc = dir.path().join("batches.arrow");
    let mut w =
        arrow::ipc::writer::FileWriter::try_new(File::create(&ipc).unwrap(), &Detections::info().schema)
            .unwrap();
    for b in &batches {
        w.write(b).unwrap();
    }
    w.finish().unwrap();
    let theirs = py(PYARROW, &[ipc.to_str().unwrap(), dir.path().join("pyarrow.parquet").to_str().unwrap()]);
    let mut it = theirs.split_whitespace().map(|v| v.parse::<f64>().expect("pyarrow figures"));
    let (py_rows_s, py_bytes) = (it.next().unwrap(), it.next().unwrap());
    eprintln!("lake: {rows} detection rows in {} one-second batches", batches.len());
    eprintln!(
        "  rows/s     vigil {:>10.0}   pyarrow {:>10.0}   ratio {:.2}x",
        vigil_rows_s,
        py_rows_s,
        vigil_rows_s / py_rows_s
    );
    eprintln!(
        "  bytes/row  vigil {:>10.1}   pyarrow {:>10.1}",
        bytes as f64 / rows as f64,
        py_bytes / rows as f64
    );

    // One day of the city as the sinks leave it (a file per 5-second commit), then compacted.
    let lake = dir.path().join("day/detections");
    let t0 = 1_781_395_200_000; // 2026-06-14T00:00:00Z
    let mut pending = Vec::new();
    let mut files = 0;
    let mut day_rows = 0;
    day(50, 86_400, t0, |s, b| {
        day_rows += b.num_rows();
        pending.push(b);
        if s % 5 == 4 {
            let start = t0 + (s - 4) * 1000;
            let part = lake.join(vigil_engine::lake::hour_dir(start));
            std::fs::create_dir_all(&part).unwrap();
            let name =
                format!("detections-{}-e1-w0-c{}.parquet", vigil_engine::time::file_stamp(start), s % 60 / 5);
            write(&part.join(name), &std::mem::take(&mut pending));
            files += 1;
        }
    });
    let scan = |lake: &Path| -> f64 {
        let out = py(DUCKDB, &[lake.to_str().unwrap()]);
        let last = out.lines().last().unwrap_or_default();
        last.trim().parse().unwrap_or_else(|e| panic!("DuckDB's time: {e}: {last:?}"))
    };
    let before = scan(&lake);
    let t = Instant::now();
    let props = vigil_engine::parquet_sink::writer_properties(&DICTIONARY);
    for hour in 0..24 {
        let start = t0 + hour * 3_600_000;
        let part = lake.join(vigil_engine::lake::hour_dir(start));
        let name = format!("detections-{}-compacted.parquet", vigil_engine::time::file_stamp(start));
        vigil_engine::lake::compact(&lake, &part, &name, &props).unwrap();
    }
    let compaction = t.elapsed();
    let after = scan(&lake);
    eprintln!("  one day of 50 cameras: {day_rows} rows");
    eprintln!(
        "  DuckDB scan (camera 7's cars)   {files} commit files {:>7.0} ms   24 compacted files {:>7.0} ms   ratio {:.1}x   (compaction took {:.1} s)",
        before * 1000.0,
        after * 1000.0,
        before / after,
        compaction.as_secs_f64()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);

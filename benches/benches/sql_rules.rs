//! SQL rules: incremental maintenance against re-running the query, and throughput with many
//! rules. A plain harness (not criterion) because the figure is a CPU ratio measured in one run.
//!
//! 1. `SELECT zone_id, count(*) FROM detections GROUP BY hop(event_time, INTERVAL '1 second',
//!    INTERVAL '5 minutes'), zone_id`, maintained by vigil's window aggregate, against what a
//!    user would otherwise do: re-run the same aggregate with DataFusion over the 5-minute
//!    buffer every second. Both produce the same 60 windows (checked); the process CPU time of
//!    each is compared.
//! 2. Events/s through 1, 10 and 100 rules registered at once.
//!
//! `cargo bench -p vigil-benches --bench sql_rules` runs the full size; under `cargo test` it
//! runs a small size as a smoke test (and still checks that both sides agree).

// The bench's output is its report.
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, Int64Array, RecordBatch, UInt32Array};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use vigil_engine::catalog::Catalog;
use vigil_engine::ids::Epoch;
use vigil_engine::runtime::{Input, Runtime, RuntimeConfig, Time};
use vigil_engine::stream::{Batch, StreamDef};
use vigil_operators::detection::{Detection, DetectionRows, Detections, EventId};
use vigil_sql::capture::{self, Errors, Outputs};
use vigil_sql::rule::{Rule, compile};

const HOP: &str = "SELECT zone_id, count(*) FROM detections \
                   GROUP BY hop(event_time, INTERVAL '1 second', INTERVAL '5 minutes'), zone_id";
const START: i64 = 1_781_467_200_000; // 2026-06-14T20:00:00Z

/// Process CPU time (user + system, all threads), seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("Linux /proc");
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0);
    ticks / 100.0 // USER_HZ
}

/// One 100 ms tick of synthetic detections: `per_tick` rows over 200 cameras and 50 zones.
fn batches(seconds: i64, per_second: usize) -> Vec<(i64, RecordBatch)> {
    let per_tick = per_second / 10;
    let mut out = Vec::new();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for tick in 0..seconds * 10 {
        let t0 = START + tick * 100;
        let mut b = DetectionRows::default();
        for i in 0..per_tick {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let camera = (x % 200) as u32;
            let t = t0 + (x >> 20) as i64 % 100;
            let zone = (x >> 8) % 60;
            b.push(&Detection {
                camera_id: camera,
                event_time: t,
                event_id: {
                    // A frame holds at most 1,024 objects: the tick's rows as frames of that many.
                    let (frame, index) = (tick as u64 * 64 + (i / 1024) as u64, (i % 1024) as u32);
                    EventId::pack(Epoch::default(), camera, frame, index).expect("id").0
                },
                class: if x.is_multiple_of(5) { "car" } else { "person" },
                score: 0.5 + (x % 500) as f32 / 1000.0,
                x: 10.0,
                y: 10.0,
                w: 20.0,
                h: 40.0,
                ground_x: 1.0,
                ground_y: 1.0,
                zone_id: (zone < 50).then_some(zone as u32 + 1),
            });
        }
        out.push((t0, b.finish()));
    }
    out
}

/// Runs `rules` over `input` on one worker, in time order; returns each rule's deltas.
fn run_rules(rules: Vec<Rule>, input: &[(i64, RecordBatch)]) -> Vec<Vec<(Time, vigil_sql::delta::Delta)>> {
    let rules = Arc::new(rules);
    let out: Outputs = capture::outputs(rules.len());
    let errors: Errors = Arc::default();
    let rt = {
        let (rules, out, errors) = (Arc::clone(&rules), Arc::clone(&out), Arc::clone(&errors));
        Runtime::start(RuntimeConfig::new(1, vec![Detections::info()]), START as Time, move |graph| {
            let probe = ProbeHandle::new();
            capture::capture(&rules, graph, &out, &errors, &probe);
            probe
        })
        .expect("runtime")
    };
    let mut rt = rt;
    for (t, b) in input {
        rt.send(0, *t as Time, Input { stream: Detections::info(), batch: Batch::new(b.clone()) })
            .expect("send");
        rt.advance(*t as Time).expect("advance");
    }
    rt.finish().expect("finish");
    assert!(errors.lock().expect("errors").is_empty(), "{:?}", errors.lock().expect("errors"));
    std::mem::take(&mut *out.lock().expect("outputs"))
}

/// The streams the bench's rules read.
fn streams() -> Catalog {
    Catalog::new([Detections::info()]).expect("one stream")
}

/// (window end, zone) → count, from the rule's output.
fn incremental_counts(deltas: &[(Time, vigil_sql::delta::Delta)]) -> BTreeMap<(i64, Option<u32>), i64> {
    let mut m = BTreeMap::new();
    for (t, d) in deltas {
        let zone = d.rows.column(0).as_any().downcast_ref::<UInt32Array>().expect("zone_id");
        let n = d.rows.column(1).as_any().downcast_ref::<Int64Array>().expect("count");
        for i in 0..d.len() {
            let z = zone.is_valid(i).then(|| zone.value(i));
            *m.entry((*t as i64, z)).or_default() += n.value(i) * d.diffs[i];
        }
    }
    m
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (seconds, rate, measured) = if full { (360, 20_000, 60) } else { (305, 500, 5) };
    let input = batches(seconds, rate);
    let events: usize = input.iter().map(|(_, b)| b.num_rows()).sum();
    println!("{events} detections over {seconds} s ({rate}/s), 200 cameras, 50 zones");

    // `--rules-only`: part 2 alone (for a profiler).
    if !std::env::args().any(|a| a == "--rules-only") {
        incremental_against_rerun(&input, seconds, measured);
    }

    // 2. Throughput with many rules.
    let tp_seconds = if full { 60 } else { 5 };
    let tp_input: Vec<(i64, RecordBatch)> = input.iter().take((tp_seconds * 10) as usize).cloned().collect();
    let tp_events: usize = tp_input.iter().map(|(_, b)| b.num_rows()).sum();
    // The mix at 1, 10 and 100 rules, then 25 rules of each shape alone (which shape costs what).
    let shapes = ["filter", "tumble", "hop", "session"];
    let runs = [(1usize, None), (10, None), (100, None)].into_iter().chain((0..4).map(|s| (25, Some(s))));
    for (n, shape) in runs {
        let rules: Vec<Rule> = (0..n)
            .map(|i| shape.map_or(i, |s| i * 4 + s))
            .flat_map(|i| compile(&format!("r{i}"), &template(i), "bench", &streams()).expect("compiles"))
            .collect();
        let c0 = cpu_seconds();
        let w0 = Instant::now();
        let _ = run_rules(rules, &tp_input);
        let wall = w0.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - c0;
        let what = shape.map_or("of the mix".to_owned(), |s| format!("{} alone", shapes[s]));
        println!(
            "{n:>3} rules {what}: {:>10.0} events/s ({:.2} µs CPU per event, {tp_events} events in {wall:.2} s)",
            tp_events as f64 / wall,
            cpu * 1e6 / tp_events as f64
        );
    }
}

/// A mix of rule shapes: filters, tumbling and hopping aggregates, a session aggregate.
fn template(i: usize) -> String {
    let k = i % 10;
    match i % 4 {
        0 => format!(
            "SELECT camera_id, event_time, score FROM detections WHERE class = 'person' AND score > 0.9{k}"
        ),
        1 => format!(
            "SELECT zone_id, window_end, count(*) FROM detections WHERE score > 0.{k} \
             GROUP BY tumble(event_time, INTERVAL '10 seconds'), zone_id"
        ),
        2 => format!(
            "SELECT camera_id, window_end, avg(score) FROM detections WHERE camera_id % 10 = {k} \
             GROUP BY hop(event_time, INTERVAL '5 seconds', INTERVAL '30 seconds'), camera_id"
        ),
        _ => format!(
            "SELECT camera_id, count(*) FROM detections WHERE class = 'car' AND camera_id % 10 = {k} \
             GROUP BY session(event_time, INTERVAL '2 seconds'), camera_id"
        ),
    }
}

/// Part 1: the hopping-window count maintained incrementally against DataFusion re-running it
/// every second over the last 5 minutes (the last `measured` seconds), outputs checked equal.
fn incremental_against_rerun(input: &[(i64, RecordBatch)], seconds: i64, measured: i64) {
    // 1. Incremental.
    let rule = compile("hop", HOP, "bench", &streams()).expect("rule compiles");
    let c0 = cpu_seconds();
    let w0 = Instant::now();
    let out = run_rules(rule, input);
    let inc_cpu = cpu_seconds() - c0;
    let inc_wall = w0.elapsed().as_secs_f64();
    let inc = incremental_counts(&out[0]);

    // 1'. DataFusion re-run every second over the last 5 minutes, for the last `measured` seconds.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
    let mut df_cpu = 0.0;
    let mut checked = 0;
    for s in (seconds - measured + 1)..=seconds {
        let end = START + s * 1000;
        let begin = end - 300_000;
        let buffer: Vec<RecordBatch> =
            input.iter().filter(|(t, _)| *t >= begin - 100 && *t < end).map(|(_, b)| b.clone()).collect();
        let c0 = cpu_seconds();
        let batches = rt.block_on(async {
            let ctx = SessionContext::new();
            let table = MemTable::try_new(Detections::schema(), vec![buffer]).expect("table");
            ctx.register_table("detections", Arc::new(table)).expect("register");
            let sql = format!(
                "SELECT zone_id, count(*) FROM detections WHERE event_time >= to_timestamp_millis({begin}) \
                 AND event_time < to_timestamp_millis({end}) GROUP BY zone_id"
            );
            ctx.sql(&sql).await.expect("plans").collect().await.expect("runs")
        });
        df_cpu += cpu_seconds() - c0;
        for b in &batches {
            let zone = b.column(0).as_any().downcast_ref::<UInt32Array>().expect("zone");
            let n = b.column(1).as_any().downcast_ref::<Int64Array>().expect("count");
            for i in 0..b.num_rows() {
                let z = zone.is_valid(i).then(|| zone.value(i));
                let ours = inc.get(&(end, z)).copied().unwrap_or(0);
                assert_eq!(
                    ours,
                    n.value(i),
                    "window ending {end}, zone {z:?}: vigil {ours}, DataFusion {}",
                    n.value(i)
                );
                checked += 1;
            }
        }
    }
    let inc_per_s = inc_cpu / seconds as f64;
    let df_per_s = df_cpu / measured as f64;
    println!("hop(1 s, 5 min) count per zone: {checked} (window, zone) results identical on both sides");
    println!(
        "  incremental: {inc_cpu:.2} s CPU for {seconds} s of stream ({inc_wall:.2} s wall) = {:.1} ms CPU per second of stream",
        inc_per_s * 1000.0
    );
    println!(
        "  DataFusion re-run: {df_cpu:.2} s CPU for {measured} re-runs = {:.1} ms CPU per second of stream",
        df_per_s * 1000.0
    );
    if inc_per_s > 0.0 {
        println!("  ratio: {:.1}x less CPU incrementally", df_per_s / inc_per_s);
    }
}

//! The demo graph end to end (simulator → ingest → density, watchlist, SQL rule → alerts), in
//! events per second at 1 and 2 workers. Parquet is off so the bench isolates the dataflow.
//!
//! Run: `cargo bench -p vigil-benches --bench demo_graph`.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vigil_operators::alerts::AlertBus;
use vigil_pipelines::app::{Progress, RunOptions, run};
use vigil_pipelines::settings::Settings;

const SECONDS: f64 = 10.0;

fn demo_graph(c: &mut Criterion) {
    let mut group = c.benchmark_group("demo_graph");
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    let out = std::env::temp_dir().join("vigil-bench-demo-graph");
    for workers in [1usize, 2] {
        let mut config = Settings::embedded();
        config.engine.workers = workers;
        let opts = RunOptions {
            duration_s: Some(SECONDS),
            fast: true,
            out: out.clone(),
            parquet: false,
            ground_truth: false,
            pg_listen: None,
            http_listen: None,
        };
        // Events per run, measured once: the simulator is deterministic.
        let events = run(&config, &opts, &AlertBus::new(1 << 16), &AtomicBool::new(false), &Arc::default())
            .expect("demo runs")
            .ingest
            .total_rows();
        group.throughput(Throughput::Elements(events));
        group.bench_function(format!("{workers}_workers"), |b| {
            b.iter(|| {
                let progress = Arc::new(Progress::default());
                run(&config, &opts, &AlertBus::new(1 << 16), &AtomicBool::new(false), &progress)
                    .expect("demo runs")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, demo_graph);
criterion_main!(benches);

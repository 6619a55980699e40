//! The cost of one update through the batch → differential bridge and differential's `count`:
//! each batch becomes `KEYS` pre-aggregated updates (plus their expiries), counted per key.
//! Reported as updates per second; the inverse is the per-update cost the budget speaks of.
//!
//! Run: `cargo bench -p vigil-benches --bench bridge`.

use std::time::{Duration, Instant};

use arrow::array::{Int64Array, RecordBatch};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use vigil_engine::bridge::ToUpdates;
use vigil_engine::runtime::{Input, Runtime, RuntimeConfig};
use vigil_engine::stream::{Batch, StreamDef, Timestamp};

vigil_engine::stream! {
    /// Keys (the bench's input).
    pub struct Keys {
        name: "keys", class: Record, keys: [k], personal: [],
        row: KeyRow, builder: KeyRows, reader: KeyCols,
        columns: { k: i64, event_time: Timestamp }
    }
}

const KEYS: i64 = 1_000;
const BATCHES: u64 = 200;

fn bridge(c: &mut Criterion) {
    let mut rows = KeyRows::default();
    for k in 0..KEYS {
        rows.push(&KeyRow { k, event_time: 0 });
    }
    let keys: RecordBatch = rows.finish();
    let mut group = c.benchmark_group("bridge");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    // Each batch: KEYS insertions and KEYS expiries.
    group.throughput(Throughput::Elements(BATCHES * KEYS as u64 * 2));
    group.bench_function("updates_through_count", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let rt = Runtime::start(RuntimeConfig::new(1, vec![Keys::info()]), 0, |graph| {
                    let probe = ProbeHandle::new();
                    graph
                        .get::<Keys>()
                        .expect("an input")
                        .into_inner()
                        .updates("Keys", |b, t, out| {
                            let k = b.rows.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                            for &key in k.values() {
                                out.push((key, t, 1));
                                out.push((key, t + 10, -1));
                            }
                        })
                        .count()
                        .probe_with(&probe);
                    probe
                })
                .unwrap();
                let mut rt = rt;
                let t0 = Instant::now();
                for i in 0..BATCHES {
                    rt.send(0, i * 5, Input { stream: Keys::info(), batch: Batch::new(keys.clone()) })
                        .unwrap();
                    rt.advance(i * 5 + 1).unwrap();
                }
                rt.finish().unwrap();
                total += t0.elapsed();
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, bridge);
criterion_main!(benches);

//! Ingest against a real timely dataflow: per-tick batching per worker, batch timestamps, late
//! frames turned into late rows, dataflows added at runtime importing the main one's streams
//! (with and without backfill), and what the retained store keeps.

use std::sync::{Arc, Mutex};

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Probe;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use vigil_engine::graph::Graph;
use vigil_engine::ingest::Ingest;
use vigil_engine::parquet_sink::event_times;
use vigil_engine::runtime::{Builder, Runtime, RuntimeConfig};
use vigil_engine::share::Retained;
use vigil_engine::stream::{Batches, Str, StreamDef, Timestamp};
use vigil_engine::time::WatermarkPolicy;

vigil_engine::stream! {
    /// Sightings, the test's camera rows.
    pub struct Sightings {
        name: "sightings", class: Personal, keys: [camera_id, event_time, event_id], personal: [],
        row: Sighting, builder: SightingRows, reader: SightingCols,
        columns: { camera_id: u32, event_time: Timestamp, event_id: u64 }
    }
}

vigil_engine::stream! {
    /// Late rows.
    pub struct Late {
        name: "late", class: Record, keys: [camera_id, event_time, event_id], personal: [],
        row: LateRow, builder: LateRows, reader: LateCols,
        columns: { camera_id: u32, event_time: Timestamp, event_id: u64, stream: Str, watermark: Timestamp }
    }
}

/// (worker, logical time, stream, rows, least event time) of every batch the dataflow saw.
type Seen = Arc<Mutex<Vec<(usize, u64, &'static str, usize, i64)>>>;

/// Records every batch of `stream` into `seen`.
fn record(stream: Batches<'_>, name: &'static str, worker: usize, seen: &Seen, probe: &ProbeHandle<u64>) {
    let seen = Arc::clone(seen);
    stream
        .unary::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Pipeline,
            "Record",
            move |_, _| {
                move |input, _output| {
                    input.for_each(|cap, data| {
                        let t = *cap.retain_least(0).expect("a time").time();
                        for b in data.iter() {
                            let least = event_times(&b.rows).unwrap().iter().copied().min().unwrap();
                            seen.lock().unwrap().push((worker, t, name, b.rows.num_rows(), least));
                        }
                    });
                }
            },
        )
        .probe_with(probe);
}

fn start(workers: usize, seen: &Seen, retained: Arc<Mutex<Retained>>) -> Ingest {
    let seen = Arc::clone(seen);
    let config = RuntimeConfig::new(workers, vec![Sightings::info(), Late::info()]).with_retained(retained);
    let rt = Runtime::start(config, 0, move |graph: &mut Graph<'_>| {
        let probe = ProbeHandle::new();
        let worker = graph.worker();
        for (info, s) in graph.streams().collect::<Vec<_>>() {
            record(s, info.name, worker, &seen, &probe);
        }
        probe
    })
    .unwrap();
    Ingest::new(rt, WatermarkPolicy { allowed_lateness_ms: 100, idle_timeout_ms: 10_000 }, 0, Late::info())
}

fn keep_all(workers: usize) -> Arc<Mutex<Retained>> {
    Retained::shared(workers, 60_000, usize::MAX)
}

fn frame(ingest: &mut Ingest, camera: u32, frame: u64, t: i64, now: i64, n: usize) {
    ingest
        .push_rows(camera, t, now, |b: &mut SightingRows| {
            for i in 0..n {
                b.push(&Sighting { camera_id: camera, event_time: t, event_id: (frame << 8) | i as u64 });
            }
        })
        .unwrap();
}

#[test]
fn frames_of_a_tick_become_one_batch_per_worker_at_their_least_time() {
    let seen: Seen = Arc::default();
    let mut ingest = start(2, &seen, keep_all(2));
    // Cameras 0 and 2 go to worker 0, camera 1 to worker 1.
    frame(&mut ingest, 0, 0, 1_000, 1_000, 3);
    frame(&mut ingest, 2, 0, 990, 1_000, 2);
    frame(&mut ingest, 1, 0, 1_000, 1_000, 4);
    ingest.tick(1_000).unwrap();
    let stats = ingest.finish().unwrap();
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, vec![(0, 990, "sightings", 5, 990), (1, 1_000, "sightings", 4, 1_000)]);
    assert_eq!(stats.rows.get("sightings"), Some(&9));
    assert_eq!(stats.batches_sent, 2);
    assert_eq!(stats.total_late(), 0);
}

#[test]
fn a_frame_behind_the_watermark_becomes_late_rows_counted_for_its_camera() {
    let seen: Seen = Arc::default();
    let mut ingest = start(1, &seen, keep_all(1));
    frame(&mut ingest, 0, 0, 5_000, 5_000, 1);
    frame(&mut ingest, 1, 0, 5_000, 5_000, 1);
    let watermark = ingest.tick(5_000).unwrap();
    assert_eq!(watermark, 4_900);
    // Camera 1 delivers an old frame: behind the watermark.
    frame(&mut ingest, 1, 1, 4_000, 5_100, 3);
    // An empty late frame is not an event.
    frame(&mut ingest, 0, 1, 4_000, 5_100, 0);
    ingest.tick(5_100).unwrap();
    let stats = ingest.finish().unwrap();
    assert_eq!(stats.late_rows.get(&1), Some(&3));
    assert_eq!(stats.late_rows.get(&0), None);
    let seen = seen.lock().unwrap().clone();
    let late: Vec<_> = seen.iter().filter(|s| s.2 == "late").collect();
    // Sent at the watermark, keeping the rows' own (older) event times.
    assert_eq!(late, vec![&(0, 4_900, "late", 3, 4_000)]);
}

/// A builder for an added dataflow that imports `sightings` and records (logical time, rows).
fn recorder(seen: &Arc<Mutex<Vec<(u64, usize)>>>) -> Builder {
    let seen = Arc::clone(seen);
    Arc::new(move |graph: &mut Graph<'_>| {
        let probe = ProbeHandle::new();
        let seen = Arc::clone(&seen);
        graph
            .get::<Sightings>()
            .expect("imported")
            .into_inner()
            .unary::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
                Pipeline,
                "Record",
                move |_, _| {
                    move |input, _output| {
                        input.for_each(|cap, data| {
                            let t = *cap.retain_least(0).expect("a time").time();
                            for b in data.iter() {
                                seen.lock().unwrap().push((t, b.rows.num_rows()));
                            }
                        });
                    }
                },
            )
            .probe_with(&probe);
        probe
    })
}

#[test]
fn dataflows_added_at_runtime_see_a_gap_free_input_with_or_without_backfill() {
    let seen: Seen = Arc::default();
    let mut ingest = start(2, &seen, Retained::shared(2, 5_000, usize::MAX));
    for (i, t) in [1_000, 2_000, 3_000].into_iter().enumerate() {
        frame(&mut ingest, 0, i as u64, t, t, 2);
        ingest.tick(t).unwrap();
    }
    // Watermark is now 2_900 (lateness 100): the batch at 3_000 is not complete yet.
    let from_now: Arc<Mutex<Vec<(u64, usize)>>> = Arc::default();
    let backfilled: Arc<Mutex<Vec<(u64, usize)>>> = Arc::default();
    ingest.install(1, recorder(&from_now), 0).unwrap();
    ingest.install(2, recorder(&backfilled), 10_000).unwrap();
    frame(&mut ingest, 0, 9, 4_000, 4_000, 3);
    ingest.tick(4_000).unwrap();
    ingest.remove(1).unwrap();
    frame(&mut ingest, 0, 10, 5_000, 5_000, 4);
    ingest.tick(5_000).unwrap();
    ingest.finish().unwrap();
    let mut from_now = from_now.lock().unwrap().clone();
    from_now.sort();
    assert_eq!(from_now, vec![(3_000, 2), (4_000, 3)], "from the watermark on, until removed");
    let mut backfilled = backfilled.lock().unwrap().clone();
    backfilled.sort();
    assert_eq!(backfilled, vec![(1_000, 2), (2_000, 2), (3_000, 2), (4_000, 3), (5_000, 4)]);
    assert_eq!(seen.lock().unwrap().len(), 5, "the main dataflow was not disturbed");
}

#[test]
fn the_memory_budget_drops_the_oldest_batches_and_backfill_starts_after_them() {
    let seen: Seen = Arc::default();
    let retained = keep_all(1);
    let mut ingest = start(1, &seen, Arc::clone(&retained));
    for (i, t) in (1..=6).map(|k| k * 1_000).enumerate() {
        // Batches larger than those the store merges (a few rows a tick are kept merged).
        frame(&mut ingest, 0, i as u64, t, t, 300);
        ingest.tick(t).unwrap();
    }
    // Let the worker share what it was sent (the store fills from the dataflow).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while retained.lock().unwrap().batches("sightings").len() < 6 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // A budget that holds exactly the three newest batches.
    let budget: usize = {
        let mut r = retained.lock().unwrap();
        let sizes: Vec<usize> = r.batches("sightings").iter().map(|b| b.get_array_memory_size()).collect();
        assert_eq!(sizes.len(), 6);
        let budget = sizes[3..].iter().sum();
        r.set_memory_budget(budget);
        budget
    };
    {
        let mut r = retained.lock().unwrap();
        let times: Vec<i64> = r.batches("sightings").iter().map(|b| event_times(b).unwrap()[0]).collect();
        assert_eq!(times, vec![4_000, 5_000, 6_000], "the three newest batches fit");
        assert!(r.bytes() <= budget, "{} bytes kept for a budget of {budget}", r.bytes());
        assert_eq!(r.complete_from(), 3_001);
        let (_, by_budget) = r.take_dropped();
        assert_eq!(by_budget.get("sightings"), Some(&900), "the drops are counted for the log");
    }
    // A dataflow asking for 60 s of backfill gets a gap-free input from the first complete time.
    let backfilled: Arc<Mutex<Vec<(u64, usize)>>> = Arc::default();
    let late_by = ingest.install(1, recorder(&backfilled), 60_000).unwrap();
    assert!(late_by > 0, "the caller is told the backfill starts later than asked");
    ingest.finish().unwrap();
    let mut got = backfilled.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, vec![(4_000, 300), (5_000, 300), (6_000, 300)]);
}

#[test]
fn retention_drops_batches_beyond_the_horizon() {
    let seen: Seen = Arc::default();
    let retained = Retained::shared(1, 1_000, usize::MAX);
    let mut ingest = start(1, &seen, Arc::clone(&retained));
    for (i, t) in [1_000, 2_000, 3_000, 4_000].into_iter().enumerate() {
        frame(&mut ingest, 0, i as u64, t, t, 1);
        ingest.tick(t).unwrap();
    }
    ingest.finish().unwrap();
    // Expiry runs at each tick against what the workers had shared by then; once more here.
    retained.lock().unwrap().expire(3_900).unwrap();
    let kept: usize = retained.lock().unwrap().batches("sightings").iter().map(|b| b.num_rows()).sum();
    // Watermark 3_900, horizon 1_000: batches at 3_000 and 4_000 stay.
    assert_eq!(kept, 2);
}

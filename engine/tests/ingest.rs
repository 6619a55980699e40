//! Ingest against a real timely dataflow: per-tick batching per worker, batch timestamps,
//! late frames turned into `late_events`, and counters.

use std::sync::{Arc, Mutex};

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Probe;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use vigil_engine::ingest::Ingest;
use vigil_engine::runtime::{Runtime, RuntimeConfig};
use vigil_engine::schema::{Detection, DetectionsBuilder, EventId, StreamKind, event_times};
use vigil_engine::time::WatermarkPolicy;

/// (worker, logical time, stream, rows, least event time) of every batch the dataflow saw.
type Seen = Arc<Mutex<Vec<(usize, u64, StreamKind, usize, i64)>>>;

fn start(workers: usize, seen: &Seen) -> Ingest {
    let seen = Arc::clone(seen);
    let rt = Runtime::start(RuntimeConfig::with_workers(workers), 0, move |_scope, input, index| {
        let probe = ProbeHandle::new();
        let seen = Arc::clone(&seen);
        input
            .unary::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
                Pipeline,
                "Capture",
                move |_, _| {
                    move |input, _output| {
                        input.for_each(|cap, data| {
                            let t = *cap.retain_least(0).expect("a time").time();
                            for b in data.iter() {
                                let least = event_times(&b.data).unwrap().iter().copied().min().unwrap();
                                let stream = b.stream().expect("events");
                                seen.lock().unwrap().push((index, t, stream, b.data.num_rows(), least));
                            }
                        });
                    }
                },
            )
            .probe_with(&probe);
        probe
    })
    .unwrap();
    Ingest::new(rt, WatermarkPolicy { allowed_lateness_ms: 100, idle_timeout_ms: 10_000 }, 0)
}

fn frame(ingest: &mut Ingest, camera: u32, frame: u64, t: i64, now: i64, n: usize) {
    ingest
        .push_rows(camera, t, now, |b: &mut DetectionsBuilder| {
            for i in 0..n {
                let d = Detection {
                    class: "person",
                    score: 0.9,
                    bbox: [0.0; 4],
                    ground: [0.0; 2],
                    zone_id: None,
                };
                b.push(camera, t, EventId::pack(camera, frame, i as u32).unwrap(), &d);
            }
        })
        .unwrap();
}

#[test]
fn frames_of_a_tick_become_one_batch_per_worker_at_their_least_time() {
    let seen: Seen = Arc::default();
    let mut ingest = start(2, &seen);
    // Cameras 0 and 2 go to worker 0, camera 1 to worker 1.
    frame(&mut ingest, 0, 0, 1_000, 1_000, 3);
    frame(&mut ingest, 2, 0, 990, 1_000, 2);
    frame(&mut ingest, 1, 0, 1_000, 1_000, 4);
    ingest.tick(1_000).unwrap();
    let stats = ingest.finish().unwrap();
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(
        seen,
        vec![(0, 990, StreamKind::Detections, 5, 990), (1, 1_000, StreamKind::Detections, 4, 1_000)]
    );
    assert_eq!(stats.rows.get("detections"), Some(&9));
    assert_eq!(stats.batches_sent, 2);
    assert_eq!(stats.total_late(), 0);
}

#[test]
fn a_frame_behind_the_watermark_becomes_late_events_counted_for_its_camera() {
    let seen: Seen = Arc::default();
    let mut ingest = start(1, &seen);
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
    let late: Vec<_> = seen.iter().filter(|s| s.2 == StreamKind::LateEvents).collect();
    // Sent at the watermark, keeping the rows' own (older) event times.
    assert_eq!(late, vec![&(0, 4_900, StreamKind::LateEvents, 3, 4_000)]);
}

/// A builder for an added dataflow that records the (logical time, rows) of its batches.
fn recorder(seen: &Arc<Mutex<Vec<(u64, usize)>>>) -> vigil_engine::runtime::Builder {
    let seen = Arc::clone(seen);
    Arc::new(move |_scope, input, _index| {
        let probe = ProbeHandle::new();
        let seen = Arc::clone(&seen);
        input
            .unary::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
                Pipeline,
                "Record",
                move |_, _| {
                    move |input, _output| {
                        input.for_each(|cap, data| {
                            let t = *cap.retain_least(0).expect("a time").time();
                            for b in data.iter() {
                                seen.lock().unwrap().push((t, b.data.num_rows()));
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
    let mut ingest = start(2, &seen).with_retention(5_000);
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
    assert_eq!(seen.lock().unwrap().len(), 5, "the first dataflow was not disturbed");
}

#[test]
fn the_memory_budget_drops_the_oldest_batches_and_backfill_starts_after_them() {
    let seen: Seen = Arc::default();
    let mut ingest = start(1, &seen).with_retention(60_000);
    let retained = ingest.retained();
    for (i, t) in (1..=6).map(|k| k * 1_000).enumerate() {
        frame(&mut ingest, 0, i as u64, t, t, 50);
        ingest.tick(t).unwrap();
    }
    // A budget that holds exactly the three newest batches.
    let budget: usize = {
        let mut r = retained.lock().unwrap();
        let sizes: Vec<usize> =
            r.batches(StreamKind::Detections).iter().map(|b| b.get_array_memory_size()).collect();
        assert_eq!(sizes.len(), 6);
        let budget = sizes[3..].iter().sum();
        r.set_memory_budget(budget);
        budget
    };
    {
        let r = retained.lock().unwrap();
        let times: Vec<i64> =
            r.batches(StreamKind::Detections).iter().map(|b| event_times(b).unwrap()[0]).collect();
        assert_eq!(times, vec![4_000, 5_000, 6_000], "the three newest batches fit");
        assert!(r.bytes() <= budget, "{} bytes kept for a budget of {budget}", r.bytes());
        assert_eq!(r.complete_from(), 3_001);
    }
    // A dataflow asking for 60 s of backfill gets a gap-free input from the first complete time.
    let backfilled: Arc<Mutex<Vec<(u64, usize)>>> = Arc::default();
    ingest.install(1, recorder(&backfilled), 60_000).unwrap();
    ingest.finish().unwrap();
    let mut got = backfilled.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, vec![(4_000, 50), (5_000, 50), (6_000, 50)]);
}

#[test]
fn retention_drops_batches_beyond_the_horizon() {
    let seen: Seen = Arc::default();
    let mut ingest = start(1, &seen).with_retention(1_000);
    for (i, t) in [1_000, 2_000, 3_000, 4_000].into_iter().enumerate() {
        frame(&mut ingest, 0, i as u64, t, t, 1);
        ingest.tick(t).unwrap();
    }
    let retained = ingest.retained();
    let kept: usize =
        retained.lock().unwrap().batches(StreamKind::Detections).iter().map(|b| b.num_rows()).sum();
    // Watermark 3_900, horizon 1_000: batches at 3_000 and 4_000 stay.
    assert_eq!(kept, 2);
    ingest.finish().unwrap();
}

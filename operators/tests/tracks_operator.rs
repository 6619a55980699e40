//! The tracking operator in a real timely runtime: frames a camera drops (or frames with no
//! detections, which send no rows) are predicted over their real capture-time gap, so a walker
//! keeps one track id across them.

use std::sync::{Arc, Mutex};

use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::{Inspect, Probe};
use vigil_engine::error::ErrorSink;
use vigil_engine::ids::Epoch;
use vigil_engine::runtime::{Input, Runtime, RuntimeConfig, Time};
use vigil_engine::stream::{Batch, StreamDef};
use vigil_operators::detection::{Detection, DetectionRows, Detections, EventId};
use vigil_operators::tracker::TrackerConfig;
use vigil_operators::tracks::{Locate, TrackCols, TrackObjects};

/// Runs one camera's frames (capture ms, box x) through the operator; returns (time, track id).
fn track(frames: &[(i64, f32)]) -> Vec<(i64, u64)> {
    let seen: Arc<Mutex<Vec<(i64, u64)>>> = Arc::default();
    let out = Arc::clone(&seen);
    let mut rt = Runtime::start(RuntimeConfig::new(1, vec![Detections::info()]), 0, move |graph| {
        let probe = ProbeHandle::new();
        let detections = graph.get::<Detections>().expect("detections");
        let locate: Locate = Arc::new(|_, _| None);
        let out = Arc::clone(&out);
        detections
            .track_objects(TrackerConfig::default().into(), locate, &ErrorSink::log())
            .into_inner()
            .inspect(move |b: &Batch| {
                let cols = TrackCols::new(&b.rows).expect("tracks batch");
                let mut out = out.lock().unwrap();
                out.extend(cols.rows().filter(|r| r.state == "tracked").map(|r| (r.event_time, r.track_id)));
            })
            .probe_with(&probe);
        probe
    })
    .expect("runtime");
    for (frame, &(t, x)) in frames.iter().enumerate() {
        let mut rows = DetectionRows::default();
        rows.push(&Detection {
            camera_id: 0,
            event_time: t,
            event_id: EventId::pack(Epoch::default(), 0, frame as u64, 0).unwrap().0,
            class: "person",
            score: 0.9,
            x,
            y: 50.0,
            w: 20.0,
            h: 50.0,
            ground_x: f32::NAN,
            ground_y: f32::NAN,
            zone_id: None,
        });
        rt.send(0, t as Time, Input { stream: Detections::info(), batch: Batch::new(rows.finish()) })
            .unwrap();
        rt.advance(t as Time + 1).unwrap();
    }
    rt.finish().unwrap();
    let mut seen = std::mem::take(&mut *seen.lock().unwrap());
    seen.sort_unstable();
    seen
}

#[test]
fn a_walker_keeps_one_track_id_across_dropped_frames() {
    // 8 px per 100 ms; frames between 1.0 s and 1.8 s never arrive. Predicted by frames
    // received, the track would be 64 px behind a 20 px box and the walker would get a new id.
    let frames: Vec<(i64, f32)> =
        (0..10).chain(18..30).map(|f| (1_000 + f * 100, 100.0 + f as f32 * 8.0)).collect();
    let seen = track(&frames);
    let mut ids: Vec<u64> = seen.iter().map(|s| s.1).collect();
    ids.dedup();
    assert_eq!(ids.len(), 1, "one identity across the gap: {seen:?}");
    assert!(seen.iter().any(|s| s.0 < 2_000) && seen.iter().any(|s| s.0 > 2_800), "{seen:?}");
}

#[test]
fn a_walker_who_reappears_after_max_lost_is_a_new_track() {
    // The same walk with 2.5 s missing (the default keeps a lost track 1.5 s): two identities.
    let frames: Vec<(i64, f32)> =
        (0..10).chain(35..45).map(|f| (1_000 + f * 100, 100.0 + f as f32 * 8.0)).collect();
    let seen = track(&frames);
    let mut ids: Vec<u64> = seen.iter().map(|s| s.1).collect();
    ids.dedup();
    assert_eq!(ids.len(), 2, "{seen:?}");
}

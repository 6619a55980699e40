//! The sources that drive a run: the simulated city, or live cameras on the wall clock.
//!
//! [`simulated`] steps the simulator one frame interval per tick: frames are produced at
//! capture time, delivered after their network delay, and handed to ingest; paced runs sleep
//! to keep simulated time on the wall clock, fast runs do not and produce the same output.
//! [`live`] drains the cameras' detections and health every 100 ms of wall time. Both end when
//! their duration is reached or `stop` is set, and both call [`Control::tick`] once per tick.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use arrow::array::{
    ArrayRef, Float32Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder, UInt32Builder,
    UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema};
use vigil_engine::ids::Epoch;
use vigil_engine::time::Millis;
use vigil_operators::alerts::AlertBus;
use vigil_operators::detection::{Detection, DetectionRows, EventId};
use vigil_operators::plate::{PlateRead, PlateReadRows};
use vigil_operators::zones::ZoneIndex;

use super::RunOptions;
use super::control::Control;
use crate::settings::Settings;
use crate::sim::{CameraSim, SimFrame, SimParams};

/// How a drive ended.
pub struct Driven {
    /// The ground truth, to finish once the engine has.
    pub truth: Option<GroundTruth>,
    /// Milliseconds of one tick.
    pub tick_ms: f64,
    /// Paced runs: the most the feed fell behind its schedule.
    pub behind_max: Duration,
    /// When the last input went in.
    pub fed: Instant,
    /// True when `stop` ended it before its duration.
    pub interrupted: bool,
}

/// The wall clock, ms since the epoch.
pub fn wall_ms() -> Millis {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as Millis)
}

/// Drives the simulated city until its duration or `stop`.
pub fn simulated(
    settings: &Settings,
    opts: &RunOptions,
    zones: &BTreeMap<u32, ZoneIndex>,
    epoch: Epoch,
    resume: Option<(Millis, Millis)>,
    control: &mut Control,
    stop: &AtomicBool,
) -> anyhow::Result<Driven> {
    let params = &settings.sim;
    let mut cams: Vec<CameraSim> = (0..params.cameras).map(|c| CameraSim::new(params, c)).collect();
    // Frames on their way to ingest, in delivery order (ties broken by camera and frame, so the
    // order never depends on anything but the simulation).
    let mut in_flight: BTreeMap<(Millis, u32, u64), SimFrame> = BTreeMap::new();
    let mut truth =
        if opts.ground_truth && opts.parquet { Some(GroundTruth::create(&opts.out, epoch)?) } else { None };
    let total_frames = opts.duration_s.map(|d| (d * params.fps).round() as u64);
    let mut interrupted = false;
    let mut behind_max = Duration::ZERO;
    tracing::info!(target: "vigil::run", "feeding from event time {} ms", params.frame_ms(0));
    let mut frame = 0u64;
    // A resumed run `(feed from, resume point)`: the city is simulated from its start (its
    // randomness is a sequence) and what would have been delivered before the feed starts is
    // dropped unseen; then it is fed as fast as it goes up to the resume point, and paced after.
    let (from, paced_from) = resume.unwrap_or((Millis::MIN, Millis::MIN));
    if resume.is_some() {
        while params.frame_ms(frame) < from && total_frames.is_none_or(|n| frame < n) {
            let now = params.frame_ms(frame);
            for cam in cams.iter_mut() {
                let f = cam.step(params);
                in_flight.insert((f.deliver_ms, f.camera, f.frame), f);
            }
            while let Some(entry) = in_flight.first_entry()
                && entry.key().0 <= now
            {
                entry.remove();
            }
            frame += 1;
        }
    }
    let mut wall0 = Instant::now();
    let mut first = frame;
    let mut caught_up = paced_from == Millis::MIN;
    while total_frames.is_none_or(|n| frame < n) {
        if stop.load(Ordering::Relaxed) {
            interrupted = total_frames.is_some();
            break;
        }
        let now = params.frame_ms(frame);
        control.push_due_watch(now)?;
        for cam in cams.iter_mut() {
            let f = cam.step(params);
            // The simulator's truth is an evaluation aid, not the city's data: a disk that
            // cannot take it ends it (its file is deleted), not the run.
            if let Some(Err(e)) = truth.as_mut().map(|t| t.record(&f)) {
                tracing::error!(target: "vigil::sink", "ground_truth: {e:#}; written no more in this run");
                if let Some(t) = truth.take() {
                    t.discard();
                }
            }
            in_flight.insert((f.deliver_ms, f.camera, f.frame), f);
        }
        while let Some(entry) = in_flight.first_entry()
            && entry.key().0 <= now
        {
            let f = entry.remove();
            deliver_frame(control, params, &f, now, zones.get(&f.camera), epoch)?;
        }
        control.tick(now)?;
        frame += 1;
        if !caught_up {
            if now < paced_from {
                continue;
            }
            (caught_up, wall0, first) = (true, Instant::now(), frame);
        }
        if !opts.fast {
            let due = Duration::from_secs_f64((frame - first) as f64 / params.fps);
            match due.checked_sub(wall0.elapsed()) {
                Some(wait) => std::thread::sleep(wait),
                None => behind_max = behind_max.max(wall0.elapsed() - due),
            }
        }
    }
    let fed = Instant::now();
    // Frames still in flight arrive; then the inputs close and every window and file closes.
    let end = params.frame_ms(frame);
    while let Some((_, f)) = in_flight.pop_first() {
        deliver_frame(control, params, &f, end, zones.get(&f.camera), epoch)?;
    }
    Ok(Driven { truth, tick_ms: 1000.0 / params.fps, behind_max, fed, interrupted })
}

/// Runs live cameras on the wall clock until the duration or `stop`: every tick (100 ms)
/// detections and health go to ingest, and alerts get their snapshots.
pub fn live(
    settings: &Settings,
    opts: &RunOptions,
    calibrated: crate::live::Calibrated,
    epoch: Epoch,
    control: &mut Control,
    bus: &AlertBus,
    stop: &AtomicBool,
) -> anyhow::Result<Driven> {
    let mut alerts = bus.subscribe();
    let mut live = crate::live::Live::start(settings, &opts.out, calibrated, epoch)?;
    control.watch_cameras(live.health().to_vec());
    let wall0 = Instant::now();
    let period = Duration::from_millis(100);
    let mut n = 0u32;
    let mut interrupted = false;
    while opts.duration_s.is_none_or(|d| wall0.elapsed().as_secs_f64() < d) {
        if stop.load(Ordering::Relaxed) {
            interrupted = opts.duration_s.is_some();
            break;
        }
        n += 1;
        let now = wall_ms();
        control.push_due_watch(now)?;
        live.drain(control.ingest(), now)?;
        for e in live.take_errors() {
            tracing::error!("{e}");
        }
        loop {
            match alerts.try_recv() {
                Ok(a) => {
                    live.snapshot(&a);
                }
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
        control.tick(now)?;
        if let Some(wait) = (period * n).checked_sub(wall0.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    live.stop();
    Ok(Driven { truth: None, tick_ms: 100.0, behind_max: Duration::ZERO, fed: Instant::now(), interrupted })
}

/// Where the simulated city's calibration puts a box of `camera`: its foot point on the ground,
/// and the zone there.
pub fn sim_locate(
    params: &SimParams,
    zones: Option<&ZoneIndex>,
    camera: u32,
    bbox: [f32; 4],
) -> ([f32; 2], Option<u32>) {
    let g =
        params.image_to_ground(camera, [f64::from(bbox[0] + bbox[2] / 2.0), f64::from(bbox[1] + bbox[3])]);
    let zone = zones.and_then(|z| z.locate(g)).map(|z| z.id);
    ([g[0] as f32, g[1] as f32], zone)
}

/// Hands one camera frame's detections and plate reads to ingest, written in place.
fn deliver_frame(
    control: &mut Control,
    params: &SimParams,
    f: &SimFrame,
    now: Millis,
    zones: Option<&ZoneIndex>,
    epoch: Epoch,
) -> anyhow::Result<()> {
    let ids = |index: usize| EventId::pack(epoch, f.camera, f.frame, index as u32);
    let last = (f.objects.len() + f.plates.len()).saturating_sub(1);
    // Event ids are checked before any row is written: a frame whose objects cannot all be
    // named is refused whole (and counted), never half-written.
    if let Err(e) = ids(last) {
        tracing::warn!(target: "vigil::camera", camera = f.camera, "frame refused: {e}");
        return Ok(());
    }
    let ingest = control.ingest();
    ingest.push_rows(f.camera, f.capture_ms, now, |det: &mut DetectionRows| {
        let detected = f.objects.iter().filter_map(|o| o.detected.map(|d| (o.class, d)));
        for (index, (class, (bbox, score))) in detected.enumerate() {
            let Ok(id) = ids(index) else { continue };
            let place = sim_locate(params, zones, f.camera, bbox);
            det.push(&Detection::boxed((f.camera, f.capture_ms, id.0), class, score, bbox, place));
        }
    })?;
    if !f.plates.is_empty() {
        let first = f.objects.iter().filter(|o| o.detected.is_some()).count();
        ingest.push_rows(f.camera, f.capture_ms, now, |reads: &mut PlateReadRows| {
            for (i, r) in f.plates.iter().enumerate() {
                let plate = vigil_operators::plate::normalize(&r.text).ok();
                let Ok(id) = ids(first + i) else { continue };
                reads.push(&PlateRead::text(
                    f.camera,
                    f.capture_ms,
                    id.0,
                    &r.text,
                    plate.as_deref(),
                    r.confidence,
                ));
            }
        })?;
    }
    Ok(())
}

/// The simulator's ground truth: true identities and positions, for evaluating trackers later.
///
/// Rows are flushed to one Parquet file every [`GroundTruth::FLUSH_ROWS`] rows, so memory stays
/// bounded however long the city runs; the file is renamed into place when the run ends.
pub struct GroundTruth {
    camera: UInt32Builder,
    time: TimestampMillisecondBuilder,
    object: UInt64Builder,
    class: StringBuilder,
    x: Float32Builder,
    y: Float32Builder,
    detected: arrow::array::BooleanBuilder,
    plate: StringBuilder,
    schema: arrow::datatypes::SchemaRef,
    writer: parquet::arrow::ArrowWriter<std::fs::File>,
    tmp: PathBuf,
    path: PathBuf,
}

impl GroundTruth {
    const FLUSH_ROWS: usize = 1 << 16;

    fn create(out: &std::path::Path, epoch: Epoch) -> anyhow::Result<Self> {
        let ts = DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, Some("UTC".into()));
        let schema = Arc::new(Schema::new(vec![
            Field::new("camera_id", DataType::UInt32, false),
            Field::new("event_time", ts, false),
            Field::new("object_id", DataType::UInt64, false),
            Field::new("class", DataType::Utf8, false),
            Field::new("ground_x", DataType::Float32, false),
            Field::new("ground_y", DataType::Float32, false),
            Field::new("detected", DataType::Boolean, false),
            Field::new("plate", DataType::Utf8, true),
        ]));
        let dir = out.join("ground_truth");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = dir.join(format!(".ground_truth-e{epoch}.parquet.inprogress"));
        let file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let writer = parquet::arrow::ArrowWriter::try_new(file, Arc::clone(&schema), None)?;
        Ok(Self {
            camera: UInt32Builder::new(),
            time: TimestampMillisecondBuilder::new(),
            object: UInt64Builder::new(),
            class: StringBuilder::new(),
            x: Float32Builder::new(),
            y: Float32Builder::new(),
            detected: arrow::array::BooleanBuilder::new(),
            plate: StringBuilder::new(),
            schema,
            writer,
            tmp,
            path: dir.join(format!("ground_truth-e{epoch}.parquet")),
        })
    }

    /// Gives up the file (it could not be written).
    fn discard(self) {
        drop(self.writer);
        let _ = std::fs::remove_file(&self.tmp);
    }

    fn record(&mut self, f: &SimFrame) -> anyhow::Result<()> {
        for o in f.objects.iter().filter(|o| o.object_id != u64::MAX) {
            self.camera.append_value(f.camera);
            self.time.append_value(f.capture_ms);
            self.object.append_value(o.object_id);
            self.class.append_value(o.class);
            self.x.append_value(o.truth[0] as f32);
            self.y.append_value(o.truth[1] as f32);
            self.detected.append_value(o.detected.is_some());
            self.plate.append_null();
        }
        for r in &f.plates {
            self.camera.append_value(f.camera);
            self.time.append_value(f.capture_ms);
            self.object.append_value(u64::MAX);
            self.class.append_value("plate");
            self.x.append_value(f32::NAN);
            self.y.append_value(f32::NAN);
            self.detected.append_value(true);
            self.plate.append_value(&r.truth);
        }
        if arrow::array::ArrayBuilder::len(&self.camera) >= Self::FLUSH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.camera.finish()),
            Arc::new(self.time.finish().with_timezone("UTC")),
            Arc::new(self.object.finish()),
            Arc::new(self.class.finish()),
            Arc::new(self.x.finish()),
            Arc::new(self.y.finish()),
            Arc::new(self.detected.finish()),
            Arc::new(self.plate.finish()),
        ];
        self.writer.write(&RecordBatch::try_new(Arc::clone(&self.schema), columns)?)?;
        Ok(())
    }

    /// Writes what is left and renames the file into place.
    pub fn finish(mut self) -> anyhow::Result<()> {
        self.flush()?;
        self.writer.close()?;
        std::fs::rename(&self.tmp, &self.path).with_context(|| format!("renaming {}", self.tmp.display()))?;
        Ok(())
    }
}

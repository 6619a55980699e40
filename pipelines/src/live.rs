//! Live cameras: RTSP ingestion, the detection stage, health reports and alert snapshots,
//! driven by `vigil run` when the configuration lists cameras.
//!
//! [`Live::start`] opens the models, starts one task per camera on a small tokio runtime and the
//! inference thread; the run loop calls [`Live::drain`] every tick, which hands detections to
//! ingest (event time = capture time) with the objects of cameras that detect on the device
//! (ONVIF metadata), and writes a `camera_health` row per camera every second. With
//! `[snapshots] enabled`, [`Live::snapshot`] queues an alert's frame for the snapshot thread,
//! which blurs faces with MTCNN before writing (vigil refuses to start when MTCNN cannot load).
//! Frames live in memory only; the latest one per camera is kept for snapshots.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, bail};
use vigil_engine::ids::Epoch;
use vigil_engine::ingest::Ingest;
use vigil_engine::time::Millis;
use vigil_models::blur::FaceDetector;
use vigil_models::centerface::CenterFace;
use vigil_models::detector::{Detector, DetectorConfig};
use vigil_models::mtcnn::{Mtcnn, MtcnnConfig};
use vigil_operators::alerts::Alert;
use vigil_operators::detection::{Detection, DetectionRows, EventId};
use vigil_operators::homography::Homography;
use vigil_operators::plate::{PlateRead, PlateReadRows};
use vigil_operators::tracks::Locate;
use vigil_operators::zones::{Zone, ZoneIndex};

use crate::camera::{
    self, CameraHealth, CameraObjects, CameraSpec, Frame, Health, HealthRow, HealthRows, Sinks, TimeSource,
};
use crate::decode::DecodePool;
use crate::detect::{DetectStage, Detected, StageConfig};
use crate::settings::{CameraSettings, PasswordSource, Settings};

/// The ingest source id health rows are sent under (not a camera: health is timed by the
/// receive clock and must not move any camera's watermark).
pub const HEALTH_SOURCE: u32 = u32::MAX;

/// Everything live.
pub struct Live {
    _rt: tokio::runtime::Runtime,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stage: Option<DetectStage>,
    detected: Receiver<Detected>,
    /// The plate stage, its results, and which detector classes are vehicles.
    plates: Option<(crate::plates::PlateStage, Receiver<crate::plates::PlateFound>, Vec<bool>)>,
    objects: Receiver<CameraObjects>,
    ground: Calibrated,
    health: Vec<Arc<Health>>,
    classes: Vec<&'static str>,
    latest: HashMap<u32, Frame>,
    last_report: Option<(Instant, Vec<(u64, u64)>)>,
    health_seq: u64,
    snapshots: Option<Snapshots>,
    errors: Arc<Mutex<Vec<String>>>,
    epoch: Epoch,
    rows: HealthRows,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").field("cameras", &self.health.len()).finish()
    }
}

/// Reads a camera's password from its environment variable or file.
fn password(c: &CameraSettings) -> anyhow::Result<Option<(String, String)>> {
    let Some((user, source)) = &c.credentials else { return Ok(None) };
    let pw = match source {
        PasswordSource::Env(var) => std::env::var(var).map_err(|_| {
            anyhow::anyhow!(
                "camera {}: the password variable ${var} is not set; fix: export it before starting vigil",
                c.id
            )
        })?,
        PasswordSource::File(p) => {
            let text = vigil_engine::text_file::read(p, "password file", 4096)
                .with_context(|| format!("camera {}: reading the password file", c.id))?;
            text.lines().next().unwrap_or("").to_owned()
        }
    };
    Ok(Some((user.clone(), pw)))
}

/// The cameras of the settings.
pub fn camera_specs(settings: &Settings) -> anyhow::Result<Vec<CameraSpec>> {
    settings
        .cameras
        .iter()
        .map(|c| {
            let mut spec = CameraSpec::new(c.id, c.name.clone(), c.url.clone(), c.fps);
            spec.onvif = c.onvif;
            spec.credentials = password(c)?;
            Ok(spec)
        })
        .collect()
}

/// A calibrated camera: its homography and its zones.
pub struct Ground {
    homography: Homography,
    zones: Option<ZoneIndex>,
}

impl Ground {
    /// Ground point and zone of a box's foot point (bottom centre).
    fn locate(&self, bbox: [f32; 4]) -> ([f32; 2], Option<u32>) {
        let g = self.homography.to_ground([f64::from(bbox[0] + bbox[2] / 2.0), f64::from(bbox[1] + bbox[3])]);
        let zone = self.zones.as_ref().and_then(|z| z.locate(g)).map(|z| z.id);
        ([g[0] as f32, g[1] as f32], zone)
    }
}

/// The row of one detection: on the ground and in a zone when the camera is calibrated (else
/// the ground position is NaN and there is no zone).
fn detection_row<'a>(
    ground: Option<&Ground>,
    key: (u32, Millis, u64),
    class: &'a str,
    score: f32,
    bbox: [f32; 4],
) -> Detection<'a> {
    let place = ground.map_or(([f32::NAN; 2], None), |g| g.locate(bbox));
    Detection::boxed(key, class, score, bbox, place)
}

/// The calibrated cameras by id, shared by ingest (detections) and the tracking operator.
pub type Calibrated = Arc<HashMap<u32, Ground>>;

/// The calibrated cameras, by id: each camera's homography (its reprojection error printed) and
/// the zones it sees.
pub fn calibrate(settings: &Settings) -> Calibrated {
    let mut ground = HashMap::new();
    for c in &settings.cameras {
        let Some(homography) = c.calibration.clone() else { continue };
        eprintln!(
            "camera {} calibrated: reprojection error {:.3} m RMS, worst {:.3} m at point {}",
            c.id, homography.rms_error_m, homography.max_error_m.0, homography.max_error_m.1
        );
        let mine: Vec<Zone> = settings.zones.iter().filter(|z| z.cameras.contains(&c.id)).cloned().collect();
        let zones = (!mine.is_empty()).then(|| ZoneIndex::new(mine));
        ground.insert(c.id, Ground { homography, zones });
    }
    Arc::new(ground)
}

/// The tracking operator's locator over [`calibrate`]'s cameras: calibrated cameras map boxes
/// to the ground and their zones; others give `None`.
pub fn locator(ground: Calibrated) -> Locate {
    Arc::new(move |camera, bbox| ground.get(&camera).map(|g| g.locate(bbox)))
}

impl Live {
    /// Opens the models and starts the cameras; `ground` holds the calibrated ones, `epoch` is
    /// the run's (in event ids).
    pub fn start(
        settings: &Settings,
        out: &std::path::Path,
        ground: Calibrated,
        epoch: Epoch,
    ) -> anyhow::Result<Live> {
        let specs = camera_specs(settings)?;
        let Some(dc) = &settings.detector else {
            bail!("{}: cameras need [models.detector]", settings.source)
        };
        let env = vigil_models::runtime::environment(settings.onnxruntime.as_deref())?;
        let classes: Vec<String> = dc.classes.clone();
        let mut config = DetectorConfig::new(dc.path.clone(), classes.clone());
        config.layout = dc.layout;
        config.class_ids = dc.class_ids.clone();
        config.input_size = dc.input_size;
        config.score_threshold = dc.score_threshold;
        config.class_thresholds = dc.class_thresholds.iter().map(|(k, v)| (k.clone(), *v)).collect();
        config.iou_threshold = dc.iou_threshold;
        config.threads = dc.threads;
        let detector = Detector::new(&env, config)?;
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let snapshots = if settings.snapshots {
            let here = std::env::current_dir()?;
            let exe = std::env::current_exe().ok();
            let faces = if settings.faces_mtcnn {
                let dir = match &settings.faces_dir {
                    Some(d) => d.clone(),
                    None => Mtcnn::locate(&here)
                        .or_else(|| exe.as_deref().and_then(Mtcnn::locate))
                        .context("snapshots need the MTCNN face networks to blur faces; fix: run scripts/setup-models or set [models.faces] dir")?,
                };
                FaceDetector::Mtcnn(Mtcnn::new(&env, MtcnnConfig::new(dir))?)
            } else {
                let path = match &settings.faces_path {
                    Some(p) => p.clone(),
                    None => CenterFace::locate(&here)
                        .or_else(|| exe.as_deref().and_then(CenterFace::locate))
                        .context("snapshots need the CenterFace network to blur faces; fix: run scripts/setup-models or set [models.faces] path")?,
                };
                FaceDetector::CenterFace(CenterFace::new(&env, &path)?)
            };
            Some(Snapshots::start(
                faces,
                out.join("snapshots"),
                settings.snapshot_interval_s,
                Arc::clone(&errors),
            )?)
        } else {
            None
        };
        // Class names live as long as the process: rows carry them as `&'static str`, and a
        // configuration has a handful.
        let classes: Vec<&'static str> =
            classes.into_iter().map(|c| &*Box::leak(c.into_boxed_str())).collect();
        let health: Vec<Arc<Health>> = specs.iter().map(|s| Arc::new(Health::new(s.id, &s.name))).collect();
        let by_id = health.iter().map(|h| (h.camera, Arc::clone(h))).collect();
        let (tx, rx) = channel();
        let e2 = Arc::clone(&errors);
        let stage = DetectStage::start(
            detector,
            StageConfig {
                batch: dc.batch,
                deadline: std::time::Duration::from_millis(dc.deadline_ms),
                queue: dc.queue,
            },
            by_id,
            tx,
            move |e| e2.lock().expect("errors").push(format!("inference: {e}")),
        )?;
        let plates = match &settings.plates {
            Some(p) => {
                let reader = vigil_models::plates::PlateReader::new(&env, &p.models()?)?;
                let vehicle: Vec<bool> =
                    classes.iter().map(|c| p.vehicle_classes.contains(&c.to_string())).collect();
                let by_id = health.iter().map(|h| (h.camera, Arc::clone(h))).collect();
                let (ptx, prx) = channel();
                let e3 = Arc::clone(&errors);
                let stage =
                    crate::plates::PlateStage::start(reader, p.queue, p.repeat_ms, by_id, ptx, move |e| {
                        e3.lock().expect("errors").push(format!("plates: {e}"))
                    })?;
                Some((stage, prx, vehicle))
            }
            None => None,
        };
        // The tasks only read the network and time frames (decoding is on the pool): two
        // threads carry thousands of RTSP sessions.
        let decode = Arc::new(DecodePool::new(settings.engine.decode_threads)?);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("camera")
            .enable_all()
            .build()?;
        let (otx, orx) = channel::<CameraObjects>();
        let otx = Mutex::new(otx);
        let sinks = Sinks {
            frames: stage.sink(),
            objects: Arc::new(move |o| {
                let _ = otx.lock().expect("objects").send(o);
            }),
        };
        let tasks = specs
            .into_iter()
            .zip(&health)
            .map(|(spec, h)| {
                eprintln!("camera {} ({}): connecting to {}", spec.id, spec.name, spec.url);
                camera::spawn(rt.handle(), Arc::clone(&decode), spec, sinks.clone(), Arc::clone(h))
            })
            .collect();
        Ok(Live {
            _rt: rt,
            tasks,
            stage: Some(stage),
            detected: rx,
            plates,
            objects: orx,
            ground,
            health,
            classes,
            latest: HashMap::new(),
            last_report: None,
            health_seq: 0,
            snapshots,
            errors,
            epoch,
            rows: HealthRows::default(),
        })
    }

    /// The cameras' health, as their tasks keep it.
    pub fn health(&self) -> &[Arc<Health>] {
        &self.health
    }

    /// Errors of the inference and snapshot threads since the last call.
    pub fn take_errors(&self) -> Vec<String> {
        std::mem::take(&mut self.errors.lock().expect("errors"))
    }

    /// Hands detections to ingest, and a health row per camera every second. A frame whose
    /// objects cannot be given ids (more than a frame may hold) is refused and counted for its
    /// camera; the run goes on.
    pub fn drain(&mut self, ingest: &mut Ingest, now: Millis) -> anyhow::Result<()> {
        let epoch = self.epoch;
        while let Ok(d) = self.detected.try_recv() {
            let f = &d.frame;
            let ids = |index: usize| EventId::pack(epoch, f.camera, f.seq, index as u32);
            if let Err(e) = ids(d.detections.len().saturating_sub(1)) {
                self.reject(f.camera, e);
                continue;
            }
            let classes = &self.classes;
            let ground = self.ground.get(&f.camera);
            ingest.push_rows(f.camera, f.capture_ms, now, |det: &mut DetectionRows| {
                for (i, x) in d.detections.iter().enumerate() {
                    let Ok(id) = ids(i) else { continue };
                    let key = (f.camera, f.capture_ms, id.0);
                    det.push(&detection_row(ground, key, classes[x.class], x.score, x.bbox));
                }
            })?;
            if let Some((stage, _, vehicle)) = &self.plates {
                let vehicles: Vec<(u32, [f32; 4])> = d
                    .detections
                    .iter()
                    .enumerate()
                    .filter(|(_, x)| vehicle.get(x.class).copied().unwrap_or(false))
                    .map(|(i, x)| (i as u32, x.bbox))
                    .collect();
                if !vehicles.is_empty() {
                    stage.offer(crate::plates::PlateJob { frame: d.frame.clone(), vehicles });
                }
            }
            self.latest.insert(f.camera, d.frame);
        }
        // Plates read since the last tick: the read's event id is its vehicle's detection's.
        if let Some((_, found, _)) = &self.plates {
            while let Ok(p) = found.try_recv() {
                let Ok(id) = EventId::pack(epoch, p.camera, p.seq, p.vehicle) else { continue };
                let r = &p.reading;
                let plate = vigil_operators::plate::normalize(&r.text).ok();
                let conf: Vec<String> = r.confidences.iter().map(|c| format!("{c:.3}")).collect();
                let conf = conf.join(" ");
                ingest.push_rows(p.camera, p.capture_ms, now, |rows: &mut PlateReadRows| {
                    rows.push(&PlateRead {
                        camera_id: p.camera,
                        event_time: p.capture_ms,
                        event_id: id.0,
                        plate_raw: &r.text,
                        plate: plate.as_deref(),
                        confidence: r.confidence(),
                        char_confidences: Some(&conf),
                        plate_x: Some(r.bbox[0]),
                        plate_y: Some(r.bbox[1]),
                        plate_w: Some(r.bbox[2]),
                        plate_h: Some(r.bbox[3]),
                    });
                })?;
            }
        }
        // Detections the cameras made themselves (ONVIF metadata): no model, same stream.
        while let Ok(o) = self.objects.try_recv() {
            let ids = |index: usize| EventId::pack(epoch, o.camera, o.seq, index as u32);
            if let Err(e) = ids(o.objects.len().saturating_sub(1)) {
                self.reject(o.camera, e);
                continue;
            }
            // Boxes in pixels of the camera's video; in fractions of the frame without video.
            let (w, h) = o.frame_size.map_or((1.0, 1.0), |(w, h)| (w as f32, h as f32));
            let ground = self.ground.get(&o.camera);
            ingest.push_rows(o.camera, o.capture_ms, now, |det: &mut DetectionRows| {
                for (i, x) in o.objects.iter().enumerate() {
                    let Ok(id) = ids(i) else { continue };
                    let bbox = crate::onvif::to_pixels(x.bbox, w, h);
                    det.push(&detection_row(
                        ground,
                        (o.camera, o.capture_ms, id.0),
                        x.class,
                        x.likelihood,
                        bbox,
                    ));
                }
            })?;
        }
        let due = self.last_report.as_ref().is_none_or(|(t, _)| t.elapsed().as_millis() >= 1000);
        if due {
            let batch = self.health_batch(now)?;
            ingest.push::<CameraHealth>(HEALTH_SOURCE, now, batch, now)?;
        }
        Ok(())
    }

    /// Counts a frame refused as bad data for its camera.
    fn reject(&self, camera: u32, e: impl std::fmt::Display) {
        match self.health.iter().find(|h| h.camera == camera) {
            Some(h) => h.refused(e),
            None => tracing::warn!(target: "vigil::camera", camera, "frame refused: {e}"),
        }
    }

    fn health_batch(&mut self, now: Millis) -> anyhow::Result<arrow::array::RecordBatch> {
        let counts: Vec<(u64, u64)> = self
            .health
            .iter()
            .map(|h| (h.frames_in.load(Ordering::Relaxed), h.frames_out.load(Ordering::Relaxed)))
            .collect();
        let (secs, prev) = match &self.last_report {
            Some((t, prev)) => (t.elapsed().as_secs_f64().max(1e-3), prev.clone()),
            None => (1.0, counts.clone()),
        };
        self.health_seq += 1;
        for (i, h) in self.health.iter().enumerate() {
            let s = h.status();
            let id = EventId::pack(self.epoch, h.camera, self.health_seq, 0)?;
            self.rows.push(&HealthRow {
                camera_id: h.camera,
                event_time: now,
                event_id: id.0,
                camera: &h.name,
                state: s.state.name(),
                fps_in: (counts[i].0 - prev[i].0) as f64 / secs,
                fps_out: (counts[i].1 - prev[i].1) as f64 / secs,
                frames_dropped: h.frames_dropped.load(Ordering::Relaxed),
                plates_dropped: h.plates_dropped.load(Ordering::Relaxed),
                decode_errors: h.decode_errors.load(Ordering::Relaxed),
                frames_rejected: h.frames_rejected.load(Ordering::Relaxed),
                frames_failed: h.frames_failed.load(Ordering::Relaxed),
                reconnects: h.reconnects.load(Ordering::Relaxed),
                lag_ms: s.lag_ms,
                clock_skew_ms: s.clock_skew_ms,
                time_source: if s.time_source == TimeSource::Rtcp { "rtcp" } else { "receive" },
                last_error: s.last_error.as_deref(),
            });
        }
        self.last_report = Some((Instant::now(), counts));
        Ok(self.rows.finish())
    }

    /// Queues a snapshot for an alert of a camera (when enabled, and at most one per camera per
    /// `min_interval_s`): the camera's latest frame, written by the snapshot thread with faces
    /// blurred. Returns whether one was queued.
    pub fn snapshot(&mut self, alert: &Alert) -> bool {
        let Some(s) = self.snapshots.as_mut() else { return false };
        let Some(frame) = self.latest.get(&alert.camera_id) else { return false };
        if s.last.get(&alert.camera_id).is_some_and(|t| frame.capture_ms - t < s.min_interval_ms) {
            return false;
        }
        s.last.insert(alert.camera_id, frame.capture_ms);
        let job = SnapshotJob { frame: frame.clone(), rule: alert.rule.clone() };
        if s.tx.as_ref().is_some_and(|tx| tx.try_send(job).is_ok()) {
            return true;
        }
        self.errors
            .lock()
            .expect("errors")
            .push(format!("snapshot of camera {} dropped: the snapshot queue is full", alert.camera_id));
        false
    }

    /// Stops the cameras and the inference thread.
    pub fn stop(mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(s) = self.stage.take() {
            s.stop();
        }
        if let Some((p, _, _)) = self.plates.take() {
            p.stop();
        }
        // Snapshots already queued are written before the run ends.
        if let Some(mut s) = self.snapshots.take() {
            s.tx = None;
            if let Some(t) = s.thread.take() {
                let _ = t.join();
            }
        }
    }
}

struct SnapshotJob {
    frame: Frame,
    rule: String,
}

/// Snapshots are blurred and written on their own thread: MTCNN takes tens to hundreds of
/// milliseconds per frame, which the run loop's 100 ms tick cannot absorb.
struct Snapshots {
    tx: Option<std::sync::mpsc::SyncSender<SnapshotJob>>,
    thread: Option<std::thread::JoinHandle<()>>,
    min_interval_ms: i64,
    last: HashMap<u32, Millis>,
}

impl Snapshots {
    fn start(
        mut faces: FaceDetector,
        dir: PathBuf,
        min_interval_s: f64,
        errors: Arc<Mutex<Vec<String>>>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<SnapshotJob>(8);
        let thread = std::thread::Builder::new().name("snapshots".into()).spawn(move || {
            for job in rx {
                if let Err(e) = write_snapshot(&mut faces, &dir, &job) {
                    errors
                        .lock()
                        .expect("errors")
                        .push(format!("snapshot of camera {}: {e:#}", job.frame.camera));
                }
            }
        })?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            min_interval_ms: (min_interval_s * 1000.0) as i64,
            last: HashMap::new(),
        })
    }
}

/// Blurs the faces the face detector finds, then writes `<dir>/camera=<id>/<time>_<rule>.jpg` (through a
/// temporary name, so no half-written image is ever visible).
fn write_snapshot(
    detector: &mut FaceDetector,
    dir: &std::path::Path,
    job: &SnapshotJob,
) -> anyhow::Result<PathBuf> {
    let frame = &job.frame;
    let mut img = frame.image.as_ref().clone();
    let faces = detector.detect(&img)?;
    vigil_models::blur::blur_faces(&mut img, &faces);
    let dir = dir.join(format!("camera={}", frame.camera));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let stamp = vigil_engine::time::file_stamp(frame.capture_ms);
    let path = dir.join(format!("{stamp}_{}.jpg", sanitize(&job.rule)));
    let tmp = path.with_extension("jpg.tmp");
    img.save_with_format(&tmp, image::ImageFormat::Jpeg)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path)?;
    tracing::info!(camera = frame.camera, faces = faces.len(), "snapshot {}", path.display());
    Ok(path)
}

fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect()
}

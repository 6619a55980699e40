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
use arrow::array::{ArrayRef, Float64Builder, RecordBatch, StringBuilder, UInt64Builder};
use vigil_engine::alerts::Alert;
use vigil_engine::ingest::Ingest;
use vigil_engine::schema::{Detection, DetectionsBuilder, EventId, KeyColumns, StreamKind};
use vigil_engine::time::Millis;
use vigil_models::mtcnn::{Mtcnn, MtcnnConfig};
use vigil_models::yolo::{YoloConfig, YoloDetector};
use vigil_operators::homography::Homography;
use vigil_operators::tracks::Locate;
use vigil_operators::zones::{Zone, ZoneIndex};

use crate::camera::{self, CameraObjects, CameraSpec, Frame, Health, Sinks, TimeSource};
use crate::config::Config;
use crate::detect::{DetectStage, Detected, StageConfig};

/// The ingest source id health rows are sent under (not a camera: health is timed by the
/// receive clock and must not move any camera's watermark).
pub const HEALTH_SOURCE: u32 = EventId::MAX_CAMERA;

/// Everything live.
pub struct Live {
    _rt: tokio::runtime::Runtime,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stage: Option<DetectStage>,
    detected: Receiver<Detected>,
    objects: Receiver<CameraObjects>,
    ground: Calibrated,
    health: Vec<Arc<Health>>,
    classes: Vec<&'static str>,
    latest: HashMap<u32, Frame>,
    last_report: Option<(Instant, Vec<(u64, u64)>)>,
    health_seq: u64,
    snapshots: Option<Snapshots>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").field("cameras", &self.health.len()).finish()
    }
}

/// Reads a camera's password from its environment variable or file.
fn password(config: &Config, c: &crate::config::CameraConfig, id: u32) -> anyhow::Result<Option<String>> {
    if let Some(var) = &c.password_env {
        let v = std::env::var(var.get_ref()).map_err(|_| {
            anyhow::anyhow!(
                "camera {id}: the password variable ${} is not set; fix: export it before starting vigil",
                var.get_ref()
            )
        })?;
        return Ok(Some(v));
    }
    if let Some(file) = &c.password_file {
        let p = config.base_dir.join(file.get_ref());
        let text = std::fs::read_to_string(&p)
            .with_context(|| format!("camera {id}: reading the password file {}", p.display()))?;
        return Ok(Some(text.lines().next().unwrap_or("").to_owned()));
    }
    Ok(None)
}

/// The cameras of a configuration.
pub fn camera_specs(config: &Config) -> anyhow::Result<Vec<CameraSpec>> {
    let fps = *config.city.fps.get_ref();
    config
        .cameras
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let id = c.id.as_ref().map_or(i as u32, |v| *v.get_ref() as u32);
            let url = url::Url::parse(c.url.get_ref()).expect("validated");
            let name = c.name.clone().unwrap_or_else(|| format!("camera-{id}"));
            let mut spec = CameraSpec::new(id, name, url, c.fps.as_ref().map_or(fps, |f| *f.get_ref()));
            spec.onvif = c.analytics.get_ref() == "auto";
            if let Some(user) = &c.user {
                let pw = password(config, c, id)?.unwrap_or_default();
                spec.credentials = Some((user.clone(), pw));
            }
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
fn detection_row(ground: Option<&Ground>, class: &'static str, score: f32, bbox: [f32; 4]) -> Detection {
    let (ground, zone_id) = ground.map_or(([f32::NAN; 2], None), |g| g.locate(bbox));
    Detection { class, score, bbox, ground, zone_id }
}

/// The calibrated cameras by id, shared by ingest (detections) and the tracking operator.
pub type Calibrated = Arc<HashMap<u32, Ground>>;

/// The calibrated cameras, by id: each camera's homography (its reprojection error printed) and
/// the zones it sees.
pub fn calibrate(config: &Config, zones: &[Zone]) -> anyhow::Result<Calibrated> {
    let specs = camera_specs(config)?;
    let mut ground = HashMap::new();
    for (spec, c) in specs.iter().zip(&config.cameras) {
        let Some(cal) = &c.calibration else { continue };
        let homography = Homography::fit(&cal.get_ref().image, &cal.get_ref().ground)?;
        eprintln!(
            "camera {} calibrated: reprojection error {:.3} m RMS, worst {:.3} m at point {}",
            spec.id, homography.rms_error_m, homography.max_error_m.0, homography.max_error_m.1
        );
        let mine: Vec<Zone> = zones.iter().filter(|z| z.cameras.contains(&spec.id)).cloned().collect();
        let zones = (!mine.is_empty()).then(|| ZoneIndex::new(mine));
        ground.insert(spec.id, Ground { homography, zones });
    }
    Ok(Arc::new(ground))
}

/// The tracking operator's locator over [`calibrate`]'s cameras: calibrated cameras map boxes
/// to the ground and their zones; others give `None`.
pub fn locator(ground: Calibrated) -> Locate {
    Arc::new(move |camera, bbox| ground.get(&camera).map(|g| g.locate(bbox)))
}

impl Live {
    /// Opens the models and starts the cameras; `ground` holds the calibrated ones.
    pub fn start(config: &Config, out: &std::path::Path, ground: Calibrated) -> anyhow::Result<Live> {
        let specs = camera_specs(config)?;
        let Some(dc) = &config.models.detector else {
            bail!("{}: cameras need [models.detector]", config.source)
        };
        let ort_path = config.models.onnxruntime.as_ref().map(|p| config.base_dir.join(p));
        let env = vigil_models::runtime::environment(ort_path.as_deref())?;
        let classes: Vec<String> = dc.classes.get_ref().clone();
        let mut yolo = YoloConfig::new(config.base_dir.join(dc.path.get_ref()), classes.clone());
        yolo.layout = dc.layout.get_ref().parse().map_err(|e: String| anyhow::anyhow!(e))?;
        yolo.score_threshold = dc.score_threshold;
        yolo.class_thresholds = dc.class_thresholds.iter().map(|(k, v)| (k.clone(), *v)).collect();
        yolo.iou_threshold = dc.iou_threshold;
        yolo.threads = dc.threads.max(1) as usize;
        let detector = YoloDetector::new(&env, yolo)?;
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let snapshots = if config.snapshots.enabled {
            let dir = match config.models.faces.as_ref().and_then(|f| f.dir.clone()) {
                Some(d) => config.base_dir.join(d),
                None => Mtcnn::locate(&std::env::current_dir()?)
                    .or_else(|| std::env::current_exe().ok().and_then(|e| Mtcnn::locate(&e)))
                    .context("snapshots need the MTCNN face networks to blur faces; fix: run scripts/setup-models or set [models.faces] dir")?,
            };
            let mtcnn = Mtcnn::new(&env, MtcnnConfig::new(dir))?;
            Some(Snapshots::start(
                mtcnn,
                out.join("snapshots"),
                config.snapshots.min_interval_s,
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
                batch: *dc.batch.get_ref() as usize,
                deadline: std::time::Duration::from_millis(*dc.deadline_ms.get_ref() as u64),
                queue: *dc.queue.get_ref() as usize,
            },
            by_id,
            tx,
            move |e| e2.lock().expect("errors").push(format!("inference: {e}")),
        )?;
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
                camera::spawn(rt.handle(), spec, sinks.clone(), Arc::clone(h))
            })
            .collect();
        Ok(Live {
            _rt: rt,
            tasks,
            stage: Some(stage),
            detected: rx,
            objects: orx,
            ground,
            health,
            classes,
            latest: HashMap::new(),
            last_report: None,
            health_seq: 0,
            snapshots,
            errors,
        })
    }

    /// Errors of the inference and snapshot threads since the last call.
    pub fn take_errors(&self) -> Vec<String> {
        std::mem::take(&mut self.errors.lock().expect("errors"))
    }

    /// Hands detections to ingest, and a health row per camera every second.
    pub fn drain(&mut self, ingest: &mut Ingest, now: Millis) -> anyhow::Result<()> {
        while let Ok(d) = self.detected.try_recv() {
            let f = &d.frame;
            let ids = |index: usize| EventId::pack(f.camera, f.seq, index as u32);
            ids(d.detections.len())?;
            let classes = &self.classes;
            let ground = self.ground.get(&f.camera);
            ingest.push_rows(f.camera, f.capture_ms, now, |det: &mut DetectionsBuilder| {
                for (i, x) in d.detections.iter().enumerate() {
                    let row = detection_row(ground, classes[x.class], x.score, x.bbox);
                    det.push(f.camera, f.capture_ms, ids(i).expect("checked above"), &row);
                }
            })?;
            self.latest.insert(f.camera, d.frame);
        }
        // Detections the cameras made themselves (ONVIF metadata): no model, same stream.
        while let Ok(o) = self.objects.try_recv() {
            let ids = |index: usize| EventId::pack(o.camera, o.seq, index as u32);
            ids(o.objects.len())?;
            // Boxes in pixels of the camera's video; in fractions of the frame without video.
            let (w, h) = o.frame_size.map_or((1.0, 1.0), |(w, h)| (w as f32, h as f32));
            let ground = self.ground.get(&o.camera);
            ingest.push_rows(o.camera, o.capture_ms, now, |det: &mut DetectionsBuilder| {
                for (i, x) in o.objects.iter().enumerate() {
                    let bbox = crate::onvif::to_pixels(x.bbox, w, h);
                    let row = detection_row(ground, x.class, x.likelihood, bbox);
                    det.push(o.camera, o.capture_ms, ids(i).expect("checked above"), &row);
                }
            })?;
        }
        let due = self.last_report.as_ref().is_none_or(|(t, _)| t.elapsed().as_millis() >= 1000);
        if due {
            let batch = self.health_batch(now)?;
            ingest.push(HEALTH_SOURCE, StreamKind::CameraHealth, now, batch, now)?;
        }
        Ok(())
    }

    fn health_batch(&mut self, now: Millis) -> anyhow::Result<RecordBatch> {
        let counts: Vec<(u64, u64)> = self
            .health
            .iter()
            .map(|h| (h.frames_in.load(Ordering::Relaxed), h.frames_out.load(Ordering::Relaxed)))
            .collect();
        let (secs, prev) = match &self.last_report {
            Some((t, prev)) => (t.elapsed().as_secs_f64().max(1e-3), prev.clone()),
            None => (1.0, counts.clone()),
        };
        let n = self.health.len();
        let mut keys = KeyColumns::default();
        let mut name = StringBuilder::new();
        let mut state = StringBuilder::new();
        let (mut fin, mut fout) = (Float64Builder::with_capacity(n), Float64Builder::with_capacity(n));
        let (mut dropped, mut errors, mut reconnects) = (
            UInt64Builder::with_capacity(n),
            UInt64Builder::with_capacity(n),
            UInt64Builder::with_capacity(n),
        );
        let (mut lag, mut skew) = (Float64Builder::with_capacity(n), Float64Builder::with_capacity(n));
        let (mut source, mut last_error) = (StringBuilder::new(), StringBuilder::new());
        self.health_seq += 1;
        for (i, h) in self.health.iter().enumerate() {
            let s = h.status();
            keys.push(h.camera, now, EventId::pack(h.camera, self.health_seq, 0)?.0);
            name.append_value(&h.name);
            state.append_value(s.state.name());
            fin.append_value((counts[i].0 - prev[i].0) as f64 / secs);
            fout.append_value((counts[i].1 - prev[i].1) as f64 / secs);
            dropped.append_value(h.frames_dropped.load(Ordering::Relaxed));
            errors.append_value(h.decode_errors.load(Ordering::Relaxed));
            reconnects.append_value(h.reconnects.load(Ordering::Relaxed));
            lag.append_option(s.lag_ms);
            skew.append_option(s.clock_skew_ms);
            source.append_value(if s.time_source == TimeSource::Rtcp { "rtcp" } else { "receive" });
            last_error.append_option(s.last_error.as_deref());
        }
        self.last_report = Some((Instant::now(), counts));
        let mut columns = keys.finish();
        columns.extend([
            Arc::new(name.finish()) as ArrayRef,
            Arc::new(state.finish()),
            Arc::new(fin.finish()),
            Arc::new(fout.finish()),
            Arc::new(dropped.finish()),
            Arc::new(errors.finish()),
            Arc::new(reconnects.finish()),
            Arc::new(lag.finish()),
            Arc::new(skew.finish()),
            Arc::new(source.finish()),
            Arc::new(last_error.finish()),
        ]);
        Ok(RecordBatch::try_new(StreamKind::CameraHealth.schema(), columns)?)
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
        mut mtcnn: Mtcnn,
        dir: PathBuf,
        min_interval_s: f64,
        errors: Arc<Mutex<Vec<String>>>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<SnapshotJob>(8);
        let thread = std::thread::Builder::new().name("snapshots".into()).spawn(move || {
            for job in rx {
                if let Err(e) = write_snapshot(&mut mtcnn, &dir, &job) {
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

/// Blurs the faces MTCNN finds, then writes `<dir>/camera=<id>/<time>_<rule>.jpg` (through a
/// temporary name, so no half-written image is ever visible).
fn write_snapshot(mtcnn: &mut Mtcnn, dir: &std::path::Path, job: &SnapshotJob) -> anyhow::Result<PathBuf> {
    let frame = &job.frame;
    let mut img = frame.image.as_ref().clone();
    let faces = mtcnn.detect(&img)?;
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

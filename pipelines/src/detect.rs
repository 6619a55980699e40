//! The detection operator: camera frames in, detection rows out, inference off the timely
//! worker threads.
//!
//! Cameras offer frames to a bounded queue ([`DetectStage::sink`]); one inference thread takes
//! batches of up to `batch` frames (from any cameras), waiting at most `deadline` for a batch to
//! fill, runs the detector on the batch, and sends one [`Detected`] per frame to the run loop,
//! which hands them to ingest. When inference is slower than the cameras, the queue is full and
//! the oldest waiting frame is dropped for each new one (analytics wants the freshest frames),
//! counted in the camera's health: memory stays bounded by the queue, whatever the input rate.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vigil_models::detector::{Detection, Detector};

use crate::camera::{Frame, FrameSink, Health};

/// One frame's detections.
#[derive(Debug)]
pub struct Detected {
    /// The frame (the run loop keeps the latest per camera for snapshots, in memory only).
    pub frame: Frame,
    /// What the detector found, in frame pixels.
    pub detections: Vec<Detection>,
}

/// Batching and queueing.
#[derive(Clone, Copy, Debug)]
pub struct StageConfig {
    /// Frames per batch, at most.
    pub batch: usize,
    /// Longest wait for a batch to fill.
    pub deadline: Duration,
    /// Frames waiting, at most.
    pub queue: usize,
}

struct Shared {
    queue: Mutex<VecDeque<Frame>>,
    ready: Condvar,
    stop: AtomicBool,
    health: HashMap<u32, Arc<Health>>,
    capacity: usize,
}

/// The running stage.
pub struct DetectStage {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for DetectStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DetectStage").field("capacity", &self.shared.capacity).finish()
    }
}

impl DetectStage {
    /// Starts the inference thread. `health` holds every camera that may offer frames (drops
    /// are counted there); results go to `out`, errors to `on_error`.
    pub fn start(
        mut detector: Detector,
        config: StageConfig,
        health: HashMap<u32, Arc<Health>>,
        out: Sender<Detected>,
        on_error: impl Fn(String) + Send + 'static,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::with_capacity(config.queue)),
            ready: Condvar::new(),
            stop: AtomicBool::new(false),
            health,
            capacity: config.queue.max(1),
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new().name("inference".into()).spawn(move || {
            while let Some(batch) = next_batch(&s, config) {
                let images: Vec<&image::RgbImage> = batch.iter().map(|f| f.image.as_ref()).collect();
                match detector.detect(&images) {
                    Ok(found) => {
                        for (frame, detections) in batch.into_iter().zip(found) {
                            if out.send(Detected { frame, detections }).is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        // The batch's frames are lost: counted for their cameras.
                        for f in &batch {
                            if let Some(h) = s.health.get(&f.camera) {
                                h.frames_failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        on_error(format!("{e} ({} frame(s) lost)", batch.len()));
                    }
                }
            }
        })?;
        Ok(Self { shared, thread: Some(thread) })
    }

    /// Where cameras hand their frames.
    pub fn sink(&self) -> FrameSink {
        let s = Arc::clone(&self.shared);
        Arc::new(move |frame: Frame| offer(&s, frame))
    }

    /// Frames waiting now.
    pub fn waiting(&self) -> usize {
        self.shared.queue.lock().expect("queue").len()
    }

    /// Stops the thread after the batch in hand.
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.ready.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for DetectStage {
    fn drop(&mut self) {
        self.shut();
    }
}

fn offer(s: &Shared, frame: Frame) {
    let mut q = s.queue.lock().expect("queue");
    if q.len() >= s.capacity
        && let Some(old) = q.pop_front()
        && let Some(h) = s.health.get(&old.camera)
    {
        h.frames_dropped.fetch_add(1, Ordering::Relaxed);
    }
    q.push_back(frame);
    drop(q);
    s.ready.notify_one();
}

/// Waits for a batch: the first frame, then more until `batch` or the deadline. `None` once
/// stopped.
fn next_batch(s: &Shared, config: StageConfig) -> Option<Vec<Frame>> {
    let mut q = s.queue.lock().expect("queue");
    while q.is_empty() {
        if s.stop.load(Ordering::Relaxed) {
            return None;
        }
        q = s.ready.wait_timeout(q, Duration::from_millis(100)).expect("queue").0;
    }
    let first = Instant::now();
    while q.len() < config.batch && !s.stop.load(Ordering::Relaxed) {
        let left = config.deadline.saturating_sub(first.elapsed());
        if left.is_zero() {
            break;
        }
        q = s.ready.wait_timeout(q, left).expect("queue").0;
    }
    let n = q.len().min(config.batch);
    Some(q.drain(..n).collect())
}

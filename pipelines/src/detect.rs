//! The detection operator: camera frames in, detection rows out, inference off the timely
//! worker threads.
//!
//! Cameras offer frames to a bounded queue ([`DetectStage::sink`]); one inference thread takes
//! batches of up to `batch` frames (from any cameras), waiting at most `deadline` for a batch to
//! fill, runs the detector on the batch, and sends one [`Detected`] per frame to the run loop,
//! which hands them to ingest. When inference is slower than the cameras, the queue is full and
//! the oldest waiting frame is dropped for each new one (analytics wants the freshest frames),
//! counted in the camera's health: memory stays bounded by the queue, whatever the input rate.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;

use vigil_models::detector::{Detection, Detector};

use crate::camera::{Frame, FrameSink, Health};
use crate::stage::{Batching, Stage};

/// One frame's detections.
#[derive(Debug)]
pub struct Detected {
    /// The frame (the run loop keeps the latest per camera for snapshots, in memory only).
    pub frame: Frame,
    /// What the detector found, in frame pixels.
    pub detections: Vec<Detection>,
}

/// Batching and queueing: frames per batch, the longest wait for a batch, frames waiting.
pub type StageConfig = Batching;

/// The running stage.
#[derive(Debug)]
pub struct DetectStage {
    stage: Stage<Frame>,
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
        let health = Arc::new(health);
        let h = Arc::clone(&health);
        let dropped = move |f: &Frame| {
            if let Some(h) = h.get(&f.camera) {
                h.frames_dropped.fetch_add(1, Ordering::Relaxed);
            }
        };
        let stage = Stage::start("inference", config, dropped, None, move |batch: Vec<Frame>| {
            let images: Vec<&image::RgbImage> = batch.iter().map(|f| f.image.as_ref()).collect();
            match detector.detect(&images) {
                Ok(found) => batch
                    .into_iter()
                    .zip(found)
                    .all(|(frame, detections)| out.send(Detected { frame, detections }).is_ok()),
                Err(e) => {
                    // The batch's frames are lost: counted for their cameras.
                    for f in &batch {
                        if let Some(h) = health.get(&f.camera) {
                            h.frames_failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    on_error(format!("{e} ({} frame(s) lost)", batch.len()));
                    true
                }
            }
        })?;
        Ok(Self { stage })
    }

    /// Where cameras hand their frames.
    pub fn sink(&self) -> FrameSink {
        let offers = self.stage.offers();
        Arc::new(move |frame: Frame| offers.offer(frame))
    }

    /// Frames waiting now.
    pub fn waiting(&self) -> usize {
        self.stage.waiting()
    }

    /// Stops the thread after the batch in hand.
    pub fn stop(self) {
        self.stage.stop();
    }
}

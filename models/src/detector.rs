//! An object detector over ONNX graphs of two families: YOLO exports and SSD-style graphs.
//!
//! The family is set by `layout` or found from the graph when `layout` is `auto`: a `uint8`
//! input `[N, H, W, 3]` with `detection_boxes`, `detection_scores`, `detection_classes` and
//! `num_detections` outputs is an SSD graph ([`crate::ssd`]); a float input `[N, 3, H, W]` with
//! one output of shape `[N, 4 + C, A]` or `[N, A, 5 + C]` is a YOLO export ([`crate::yolo`]).
//! Both share what follows: batches of frames from any cameras, per-class thresholds,
//! per-class NMS, at most `max_detections` per frame, and class names from the configuration.
//!
//! Class mapping: YOLO classes are the configured names in the model's order. SSD graphs emit
//! label-map ids; `class_ids` gives the id of each configured class (default `1, 2, …`, since
//! label maps number from 1), and ids not listed are dropped, so a COCO SSD can be narrowed to
//! `classes = ["person", "car"]`, `class_ids = [1, 3]`. NMS runs on SSD output too: the API's
//! graphs already suppress, and a second pass at the configured overlap changes nothing unless
//! the graph had none.

use std::path::PathBuf;

use image::RgbImage;
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef};

use crate::error::{ModelError, Result};
use crate::ssd;
use crate::yolo::{self, Letterbox};

/// Which graph family, and for YOLO which output layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Decide from the graph's input and outputs.
    Auto,
    /// YOLOv8/v9/v11: `[N, 4 + C, A]`.
    V8,
    /// YOLOv5/v7: `[N, A, 5 + C]`.
    V5,
    /// SSD (TensorFlow object-detection API): uint8 NHWC in; boxes, scores, classes, count out.
    Ssd,
}

impl std::str::FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Layout::Auto),
            "v8" | "v11" => Ok(Layout::V8),
            "v5" | "v7" => Ok(Layout::V5),
            "ssd" => Ok(Layout::Ssd),
            other => Err(format!("unknown detector layout '{other}'; use auto, v5, v8 or ssd")),
        }
    }
}

/// How to run a detector.
#[derive(Clone, Debug)]
pub struct DetectorConfig {
    /// The `.onnx` file.
    pub model: PathBuf,
    /// Class names, in the model's order (YOLO) or in the order of `class_ids` (SSD).
    pub classes: Vec<String>,
    /// SSD only: the label-map id of each class (default `1..=classes.len()`).
    pub class_ids: Option<Vec<i64>>,
    /// Graph family and output layout.
    pub layout: Layout,
    /// Minimum confidence, for classes without their own.
    pub score_threshold: f32,
    /// Per-class minimum confidence (by class name).
    pub class_thresholds: Vec<(String, f32)>,
    /// Boxes of one class overlapping more than this (IoU) are suppressed.
    pub iou_threshold: f32,
    /// At most this many detections per frame.
    pub max_detections: usize,
    /// The size frames are resized to when the graph's input size is not fixed (SSD graphs
    /// resize inside; 300 × 300 is SSD300's own size).
    pub input_size: Option<(u32, u32)>,
    /// Intra-op threads of the session.
    pub threads: usize,
}

impl DetectorConfig {
    /// Defaults (thresholds as Ultralytics' exports use them) for a model and its classes.
    pub fn new(model: impl Into<PathBuf>, classes: Vec<String>) -> Self {
        Self {
            model: model.into(),
            classes,
            class_ids: None,
            layout: Layout::Auto,
            score_threshold: 0.25,
            class_thresholds: Vec::new(),
            iou_threshold: 0.45,
            max_detections: 300,
            input_size: None,
            threads: 1,
        }
    }
}

/// One detection, in frame pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    /// Index into the configured classes.
    pub class: usize,
    /// Confidence.
    pub score: f32,
    /// Top-left x, y, width, height.
    pub bbox: [f32; 4],
}

/// Intersection over union of two corner-format boxes (re-exported from the engine).
pub use vigil_engine::geometry::iou;

/// Greedy per-class non-maximum suppression: keeps the best box, drops same-class boxes that
/// overlap it by more than `iou_threshold`, and so on; at most `max` boxes, best first.
pub fn nms(mut dets: Vec<Detection>, iou_threshold: f32, max: usize) -> Vec<Detection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::new();
    for d in dets {
        if kept.len() >= max {
            break;
        }
        if kept.iter().all(|k| k.class != d.class || iou(&k.bbox, &d.bbox) <= iou_threshold) {
            kept.push(d);
        }
    }
    kept
}

/// The input buffer of one batch, in the family's element type.
enum Input {
    /// YOLO: `[N, 3, H, W]` floats in [0, 1], letterboxed.
    Yolo(Vec<f32>),
    /// SSD: `[N, H, W, 3]` bytes, stretched; `outputs` places the four outputs.
    Ssd(Vec<u8>, ssd::Outputs),
}

/// A detector with an open session.
pub struct Detector {
    session: Session,
    config: DetectorConfig,
    layout: Layout,
    size_w: u32,
    size_h: u32,
    fixed_batch: Option<usize>,
    thresholds: Vec<f32>,
    input: Input,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("model", &self.config.model)
            .field("layout", &self.layout)
            .field("input", &(self.size_w, self.size_h))
            .finish()
    }
}

impl Detector {
    /// Opens the model, finds its family when `layout` is `auto`, and checks its input and
    /// outputs against the configuration.
    pub fn new(env: &ort::environment::Environment, config: DetectorConfig) -> Result<Self> {
        let bad = |reason: String, fix: &str| ModelError::Model {
            path: config.model.clone(),
            reason,
            fix: fix.into(),
        };
        if config.classes.is_empty() {
            return Err(ModelError::Config {
                setting: "models.detector.classes".into(),
                reason: "no class names; list them in the model's order, e.g. [\"person\", \"car\"]".into(),
            });
        }
        if let Some(ids) = &config.class_ids
            && ids.len() != config.classes.len()
        {
            return Err(ModelError::Config {
                setting: "models.detector.class_ids".into(),
                reason: format!(
                    "{} ids for {} classes; give one label-map id per class",
                    ids.len(),
                    config.classes.len()
                ),
            });
        }
        for (name, _) in &config.class_thresholds {
            if !config.classes.contains(name) {
                return Err(ModelError::Config {
                    setting: format!("models.detector.class_thresholds.{name}"),
                    reason: format!("'{name}' is not one of the classes {:?}", config.classes),
                });
            }
        }
        let session = crate::runtime::session(env, &config.model, config.threads)?;
        let shape = crate::runtime::input_shape(&session).unwrap_or_default();
        let uint8 =
            session.inputs().first().and_then(|i| i.dtype().tensor_type()) == Some(TensorElementType::Uint8);
        let names: Vec<String> = session.outputs().iter().map(|o| o.name().to_string()).collect();
        let ssd_outputs = ssd::Outputs::find(&names);
        let out_shape: Vec<i64> = session
            .outputs()
            .first()
            .and_then(|o| o.dtype().tensor_shape().map(|s| s.iter().copied().collect()))
            .unwrap_or_default();
        let nc = config.classes.len() as i64;
        let layout = match config.layout {
            Layout::Auto if uint8 && ssd_outputs.is_some() => Layout::Ssd,
            Layout::Auto => match out_shape.as_slice() {
                [_, k, _] if *k == 4 + nc => Layout::V8,
                [_, _, k] if *k == 5 + nc => Layout::V5,
                _ => {
                    return Err(bad(
                        format!(
                            "output shape {out_shape:?} matches neither YOLOv8 [N, {}, A] nor YOLOv5 [N, A, {}] for {nc} classes, \
                             and the graph is not SSD-style (uint8 input; boxes, scores, classes, num_detections outputs)",
                            4 + nc,
                            5 + nc
                        ),
                        "list as many class names as the model has classes, or set layout",
                    ));
                }
            },
            l => l,
        };
        if layout != Layout::Ssd && config.class_ids.is_some() {
            return Err(ModelError::Config {
                setting: "models.detector.class_ids".into(),
                reason: "class_ids maps SSD label-map ids; YOLO classes are the names in the model's order, so remove it"
                    .into(),
            });
        }
        let (size_w, size_h, fixed_batch, input) = if layout == Layout::Ssd {
            let Some(outputs) = ssd_outputs else {
                return Err(bad(
                    format!("layout = \"ssd\" but the outputs are {names:?}"),
                    "an SSD graph has detection_boxes, detection_scores, detection_classes and num_detections",
                ));
            };
            if !uint8 || shape.len() != 4 || shape[3] != 3 {
                return Err(bad(
                    format!("layout = \"ssd\" but the input is {shape:?}, not uint8 [N, H, W, 3]"),
                    "convert the graph with its image_tensor input, or set layout to v5 or v8",
                ));
            }
            let (w, h) = match (shape[2], shape[1]) {
                (w, h) if w > 0 && h > 0 => (w as u32, h as u32),
                _ => config.input_size.unwrap_or((300, 300)),
            };
            (w, h, (shape[0] > 0).then_some(shape[0] as usize), Input::Ssd(Vec::new(), outputs))
        } else {
            if shape.len() != 4 || shape[1] != 3 || shape[2] <= 0 || shape[3] <= 0 {
                return Err(bad(
                    format!("input shape {shape:?} is not [N, 3, H, W] with fixed H and W"),
                    "export the model with a fixed image size (for example imgsz=640)",
                ));
            }
            (
                shape[3] as u32,
                shape[2] as u32,
                (shape[0] > 0).then_some(shape[0] as usize),
                Input::Yolo(Vec::new()),
            )
        };
        let thresholds = config
            .classes
            .iter()
            .map(|c| {
                config
                    .class_thresholds
                    .iter()
                    .find(|(n, _)| n == c)
                    .map_or(config.score_threshold, |(_, t)| *t)
            })
            .collect();
        Ok(Self { session, layout, size_w, size_h, fixed_batch, thresholds, input, config })
    }

    /// The model input's width and height.
    pub fn input_size(&self) -> (u32, u32) {
        (self.size_w, self.size_h)
    }

    /// The family and layout in use.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The configured class names.
    pub fn classes(&self) -> &[String] {
        &self.config.classes
    }

    /// Detects objects in a batch of frames (of any sizes); one list per frame.
    pub fn detect(&mut self, frames: &[&RgbImage]) -> Result<Vec<Vec<Detection>>> {
        if frames.is_empty() {
            return Ok(Vec::new());
        }
        // A model exported with a fixed batch size runs the frames in chunks of that size.
        if let Some(b) = self.fixed_batch
            && frames.len() != b
        {
            let mut all = Vec::with_capacity(frames.len());
            for chunk in frames.chunks(b) {
                let mut padded: Vec<&RgbImage> = chunk.to_vec();
                while padded.len() < b {
                    padded.push(chunk[0]);
                }
                let mut r = self.run(&padded)?;
                r.truncate(chunk.len());
                all.extend(r);
            }
            return Ok(all);
        }
        self.run(frames)
    }

    fn run(&mut self, frames: &[&RgbImage]) -> Result<Vec<Vec<Detection>>> {
        let model = &self.config.model;
        let fail = |e: &dyn std::fmt::Display| ModelError::Inference {
            model: model.display().to_string(),
            reason: e.to_string(),
        };
        let (w, h) = (self.size_w as usize, self.size_h as usize);
        let per = 3 * w * h;
        let found = match &mut self.input {
            Input::Yolo(buf) => {
                buf.resize(per * frames.len(), 0.0);
                let boxes: Vec<Letterbox> = frames
                    .iter()
                    .zip(buf.chunks_mut(per))
                    .map(|(f, out)| yolo::letterbox_into(f, self.size_w, self.size_h, out))
                    .collect();
                let tensor = TensorRef::from_array_view(([frames.len(), 3, h, w], buf.as_slice()))
                    .map_err(|e| fail(&e))?;
                let outputs = self.session.run(ort::inputs![tensor]).map_err(|e| fail(&e))?;
                decode_yolo(self.layout, &outputs, &boxes, &self.config, &self.thresholds)
            }
            Input::Ssd(buf, places) => {
                buf.resize(per * frames.len(), 0);
                for (f, out) in frames.iter().zip(buf.chunks_mut(per)) {
                    ssd::resize_into(f, self.size_w, self.size_h, out);
                }
                let places = *places;
                let tensor = TensorRef::from_array_view(([frames.len(), h, w, 3], buf.as_slice()))
                    .map_err(|e| fail(&e))?;
                let outputs = self.session.run(ort::inputs![tensor]).map_err(|e| fail(&e))?;
                decode_ssd(&outputs, places, frames, &self.config, &self.thresholds)
            }
        };
        let found = found.map_err(|e| fail(&e))?;
        Ok(found.into_iter().map(|d| nms(d, self.config.iou_threshold, self.config.max_detections)).collect())
    }
}

/// A YOLO batch's candidates per frame, before NMS.
fn decode_yolo(
    layout: Layout,
    outputs: &ort::session::SessionOutputs<'_>,
    boxes: &[Letterbox],
    config: &DetectorConfig,
    thresholds: &[f32],
) -> std::result::Result<Vec<Vec<Detection>>, String> {
    let (shape, data) = outputs[0].try_extract_tensor::<f32>().map_err(|e| e.to_string())?;
    let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    let n = boxes.len();
    let nc = config.classes.len();
    let anchors = match (layout, shape.as_slice()) {
        (Layout::V8, [b, k, a]) if *b == n && *k == 4 + nc => *a,
        (Layout::V5, [b, a, k]) if *b == n && *k == 5 + nc => *a,
        _ => return Err(format!("unexpected output shape {shape:?} for {n} frames and {nc} classes")),
    };
    let per_frame = data.len() / n;
    Ok(boxes
        .iter()
        .enumerate()
        .map(|(i, lb)| {
            yolo::decode(layout, &data[i * per_frame..(i + 1) * per_frame], anchors, nc, thresholds, lb)
        })
        .collect())
}

/// An SSD batch's detections per frame, before NMS.
fn decode_ssd(
    outputs: &ort::session::SessionOutputs<'_>,
    at: ssd::Outputs,
    frames: &[&RgbImage],
    config: &DetectorConfig,
    thresholds: &[f32],
) -> std::result::Result<Vec<Vec<Detection>>, String> {
    let tensor = |i: usize| outputs[i].try_extract_tensor::<f32>().map_err(|e| format!("output {i}: {e}"));
    let (bs, boxes) = tensor(at.boxes)?;
    let (ss, scores) = tensor(at.scores)?;
    let (_, classes) = tensor(at.classes)?;
    let (_, count) = tensor(at.count)?;
    let n = frames.len();
    let k = match (&bs[..], &ss[..]) {
        ([b, k, 4], [b2, k2]) if *b as usize == n && b2 == b && k2 == k => *k as usize,
        _ => return Err(format!("unexpected SSD output shapes: boxes {bs:?}, scores {ss:?} for {n} frames")),
    };
    if classes.len() != n * k || count.len() != n {
        return Err(format!(
            "SSD classes ({}) or count ({}) do not fit {n} frames × {k} rows",
            classes.len(),
            count.len()
        ));
    }
    let ids: Vec<i64> =
        config.class_ids.clone().unwrap_or_else(|| (1..=config.classes.len() as i64).collect());
    let class_of = |id: i64| ids.iter().position(|&c| c == id);
    Ok(frames
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let real = if count[i].is_finite() { count[i].max(0.0) as usize } else { 0 };
            ssd::decode(
                &boxes[i * k * 4..(i + 1) * k * 4],
                &scores[i * k..(i + 1) * k],
                &classes[i * k..(i + 1) * k],
                real,
                class_of,
                thresholds,
                (f.width(), f.height()),
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layouts_parse_and_unknown_ones_say_what_is_known() {
        assert_eq!("ssd".parse::<Layout>(), Ok(Layout::Ssd));
        assert_eq!("v11".parse::<Layout>(), Ok(Layout::V8));
        assert!("detr".parse::<Layout>().unwrap_err().contains("auto, v5, v8 or ssd"));
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes_per_class() {
        let d = |class, score, x| Detection { class, score, bbox: [x, 0.0, 10.0, 10.0] };
        let kept = nms(vec![d(0, 0.5, 1.0), d(0, 0.9, 0.0), d(1, 0.6, 0.0), d(0, 0.7, 50.0)], 0.45, 10);
        assert_eq!(kept, vec![d(0, 0.9, 0.0), d(0, 0.7, 50.0), d(1, 0.6, 0.0)]);
    }

    proptest! {
        #[test]
        fn nms_output_never_overlaps_within_a_class(
            boxes in proptest::collection::vec((0usize..2, 0.0f32..1.0, 0.0f32..100.0, 0.0f32..100.0, 1.0f32..40.0, 1.0f32..40.0), 0..60)
        ) {
            let dets: Vec<Detection> = boxes.iter().map(|&(class, score, x, y, w, h)| Detection { class, score, bbox: [x, y, w, h] }).collect();
            let kept = nms(dets.clone(), 0.45, 1000);
            for (i, a) in kept.iter().enumerate() {
                for b in &kept[i + 1..] {
                    prop_assert!(a.class != b.class || iou(&a.bbox, &b.bbox) <= 0.45);
                    prop_assert!(a.score >= b.score);
                }
            }
            // Every dropped box overlaps a kept box of its class with a higher or equal score.
            for d in &dets {
                if !kept.contains(d) {
                    prop_assert!(kept.iter().any(|k| k.class == d.class && k.score >= d.score && iou(&k.bbox, &d.bbox) > 0.45));
                }
            }
        }
    }
}

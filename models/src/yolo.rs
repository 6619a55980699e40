//! A detector for YOLO-family ONNX exports: letterbox, inference on batches, decoding, NMS.
//!
//! Two output layouts are understood, which between them cover the common exports:
//! - **v8** (YOLOv8, v9, v11): `[N, 4 + C, A]`, rows `cx, cy, w, h` then one score per class;
//! - **v5** (YOLOv5, v7): `[N, A, 5 + C]`, `cx, cy, w, h, objectness`, then class probabilities;
//!   a class's confidence is objectness × probability.
//!
//! Boxes are in model-input pixels; they are mapped back through the letterbox to frame pixels.
//! Class names come from the configuration, in the model's class order.

use std::path::PathBuf;

use image::RgbImage;
use ort::session::Session;
use ort::value::TensorRef;

use crate::error::{ModelError, Result};

/// Which output layout the model has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Decide from the output shape and the number of classes.
    Auto,
    /// `[N, 4 + C, A]`.
    V8,
    /// `[N, A, 5 + C]`.
    V5,
}

impl std::str::FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Layout::Auto),
            "v8" | "v11" => Ok(Layout::V8),
            "v5" | "v7" => Ok(Layout::V5),
            other => Err(format!("unknown YOLO layout '{other}'; use auto, v5 or v8")),
        }
    }
}

/// How to run a YOLO export.
#[derive(Clone, Debug)]
pub struct YoloConfig {
    /// The `.onnx` file.
    pub model: PathBuf,
    /// Class names, in the model's order.
    pub classes: Vec<String>,
    /// Output layout.
    pub layout: Layout,
    /// Minimum confidence, for classes without their own.
    pub score_threshold: f32,
    /// Per-class minimum confidence (by class name).
    pub class_thresholds: Vec<(String, f32)>,
    /// Boxes of one class overlapping more than this (IoU) are suppressed.
    pub iou_threshold: f32,
    /// At most this many detections per frame.
    pub max_detections: usize,
    /// Intra-op threads of the session.
    pub threads: usize,
}

impl YoloConfig {
    /// Defaults (thresholds as Ultralytics' exports use them) for a model and its classes.
    pub fn new(model: impl Into<PathBuf>, classes: Vec<String>) -> Self {
        Self {
            model: model.into(),
            classes,
            layout: Layout::Auto,
            score_threshold: 0.25,
            class_thresholds: Vec::new(),
            iou_threshold: 0.45,
            max_detections: 300,
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

/// Where a frame landed in the model input: `input = frame × scale + pad`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Letterbox {
    /// Frame pixels to input pixels.
    pub scale: f32,
    /// Left padding, input pixels.
    pub pad_x: f32,
    /// Top padding, input pixels.
    pub pad_y: f32,
}

impl Letterbox {
    /// The letterbox of a `w × h` frame into a `size_w × size_h` input (aspect kept, centred).
    pub fn fit(w: u32, h: u32, size_w: u32, size_h: u32) -> Self {
        let scale = (size_w as f32 / w as f32).min(size_h as f32 / h as f32);
        let pad_x = (size_w as f32 - w as f32 * scale) / 2.0;
        let pad_y = (size_h as f32 - h as f32 * scale) / 2.0;
        Self { scale, pad_x, pad_y }
    }

    /// Maps a centre-format box in input pixels to a corner-format box in frame pixels.
    pub fn unmap(&self, cx: f32, cy: f32, w: f32, h: f32) -> [f32; 4] {
        [
            (cx - w / 2.0 - self.pad_x) / self.scale,
            (cy - h / 2.0 - self.pad_y) / self.scale,
            w / self.scale,
            h / self.scale,
        ]
    }
}

/// Writes `frame`, letterboxed, into one `3 × size_h × size_w` plane set of `out` (CHW, RGB,
/// values in [0, 1], padding grey 114 as Ultralytics pads).
///
/// Written by hand rather than with `image::imageops::resize` followed by a conversion: one
/// pass does the bilinear resize, the normalisation and the HWC→CHW transpose without the two
/// intermediate images, which matters at tens of frames per second per core.
pub fn letterbox_into(frame: &RgbImage, size_w: u32, size_h: u32, out: &mut [f32]) -> Letterbox {
    let lb = Letterbox::fit(frame.width(), frame.height(), size_w, size_h);
    let (sw, sh) = (size_w as usize, size_h as usize);
    let plane = sw * sh;
    debug_assert_eq!(out.len(), 3 * plane);
    out.fill(114.0 / 255.0);
    let (fw, fh) = (frame.width() as usize, frame.height() as usize);
    if fw == 0 || fh == 0 {
        return lb;
    }
    let x0 = lb.pad_x.round() as usize;
    let y0 = lb.pad_y.round() as usize;
    let cw = ((fw as f32 * lb.scale).round() as usize).min(sw - x0);
    let ch = ((fh as f32 * lb.scale).round() as usize).min(sh - y0);
    let src = frame.as_raw();
    // Horizontal sample positions are the same for every row: compute them once.
    let xs: Vec<(usize, usize, f32)> = (0..cw)
        .map(|x| {
            let fx = ((x as f32 + 0.5) / lb.scale - 0.5).clamp(0.0, (fw - 1) as f32);
            let x1 = fx.floor() as usize;
            (x1, (x1 + 1).min(fw - 1), fx - x1 as f32)
        })
        .collect();
    const INV: f32 = 1.0 / 255.0;
    for y in 0..ch {
        let fy = ((y as f32 + 0.5) / lb.scale - 0.5).clamp(0.0, (fh - 1) as f32);
        let y1 = fy.floor() as usize;
        let y2 = (y1 + 1).min(fh - 1);
        let wy = fy - y1 as f32;
        let (r1, r2) = (&src[y1 * fw * 3..(y1 + 1) * fw * 3], &src[y2 * fw * 3..(y2 + 1) * fw * 3]);
        let row = (y0 + y) * sw + x0;
        for (x, &(xa, xb, wx)) in xs.iter().enumerate() {
            for c in 0..3 {
                let top = f32::from(r1[xa * 3 + c]) * (1.0 - wx) + f32::from(r1[xb * 3 + c]) * wx;
                let bottom = f32::from(r2[xa * 3 + c]) * (1.0 - wx) + f32::from(r2[xb * 3 + c]) * wx;
                out[c * plane + row + x] = (top * (1.0 - wy) + bottom * wy) * INV;
            }
        }
    }
    lb
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

/// A YOLO export with an open session.
pub struct YoloDetector {
    session: Session,
    config: YoloConfig,
    layout: Layout,
    size_w: u32,
    size_h: u32,
    fixed_batch: Option<usize>,
    thresholds: Vec<f32>,
    input: Vec<f32>,
}

impl std::fmt::Debug for YoloDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("YoloDetector")
            .field("model", &self.config.model)
            .field("layout", &self.layout)
            .finish()
    }
}

impl YoloDetector {
    /// Opens the model and checks its input and output against the configuration.
    pub fn new(env: &ort::environment::Environment, config: YoloConfig) -> Result<Self> {
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
        let session = crate::runtime::session(env, &config.model, config.threads)?;
        let shape = crate::runtime::input_shape(&session).unwrap_or_default();
        if shape.len() != 4 || shape[1] != 3 || shape[2] <= 0 || shape[3] <= 0 {
            return Err(bad(
                format!("input shape {shape:?} is not [N, 3, H, W] with fixed H and W"),
                "export the model with a fixed image size (for example imgsz=640)",
            ));
        }
        let out_shape: Vec<i64> = session
            .outputs()
            .first()
            .and_then(|o| o.dtype().tensor_shape().map(|s| s.iter().copied().collect()))
            .unwrap_or_default();
        let nc = config.classes.len() as i64;
        let layout = match config.layout {
            Layout::Auto => match out_shape.as_slice() {
                [_, k, _] if *k == 4 + nc => Layout::V8,
                [_, _, k] if *k == 5 + nc => Layout::V5,
                _ => {
                    return Err(bad(
                        format!(
                            "output shape {out_shape:?} matches neither YOLOv8 [N, {}, A] nor YOLOv5 [N, A, {}] for {nc} classes",
                            4 + nc,
                            5 + nc
                        ),
                        "list as many class names as the model has classes, or set layout",
                    ));
                }
            },
            l => l,
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
        for (name, _) in &config.class_thresholds {
            if !config.classes.contains(name) {
                return Err(ModelError::Config {
                    setting: format!("models.detector.class_thresholds.{name}"),
                    reason: format!("'{name}' is not one of the classes {:?}", config.classes),
                });
            }
        }
        Ok(Self {
            session,
            layout,
            size_w: shape[3] as u32,
            size_h: shape[2] as u32,
            fixed_batch: (shape[0] > 0).then_some(shape[0] as usize),
            thresholds,
            input: Vec::new(),
            config,
        })
    }

    /// The model input's width and height.
    pub fn input_size(&self) -> (u32, u32) {
        (self.size_w, self.size_h)
    }

    /// The layout in use.
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
        let (w, h) = (self.size_w as usize, self.size_h as usize);
        let per = 3 * w * h;
        self.input.resize(per * frames.len(), 0.0);
        let boxes: Vec<Letterbox> = frames
            .iter()
            .zip(self.input.chunks_mut(per))
            .map(|(f, out)| letterbox_into(f, self.size_w, self.size_h, out))
            .collect();
        let fail = |e: ort::Error| ModelError::Inference {
            model: self.config.model.display().to_string(),
            reason: e.to_string(),
        };
        let tensor =
            TensorRef::from_array_view(([frames.len(), 3, h, w], self.input.as_slice())).map_err(fail)?;
        let outputs = self.session.run(ort::inputs![tensor]).map_err(|e| ModelError::Inference {
            model: self.config.model.display().to_string(),
            reason: e.to_string(),
        })?;
        let (shape, data) = outputs[0].try_extract_tensor::<f32>().map_err(|e| ModelError::Inference {
            model: self.config.model.display().to_string(),
            reason: e.to_string(),
        })?;
        let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        let nc = self.config.classes.len();
        let (anchors, stride_ok) = match (self.layout, shape.as_slice()) {
            (Layout::V8, [n, k, a]) => (*a, *n == frames.len() && *k == 4 + nc),
            (Layout::V5, [n, a, k]) => (*a, *n == frames.len() && *k == 5 + nc),
            _ => (0, false),
        };
        if !stride_ok {
            return Err(ModelError::Inference {
                model: self.config.model.display().to_string(),
                reason: format!(
                    "unexpected output shape {shape:?} for {} frames and {nc} classes",
                    frames.len()
                ),
            });
        }
        let per_frame = data.len() / frames.len();
        let mut result = Vec::with_capacity(frames.len());
        for (i, lb) in boxes.iter().enumerate() {
            let out = &data[i * per_frame..(i + 1) * per_frame];
            let candidates = decode(self.layout, out, anchors, nc, &self.thresholds, lb);
            result.push(nms(candidates, self.config.iou_threshold, self.config.max_detections));
        }
        Ok(result)
    }
}

/// Decodes one frame's output rows into thresholded candidates (before NMS).
pub fn decode(
    layout: Layout,
    out: &[f32],
    anchors: usize,
    nc: usize,
    thresholds: &[f32],
    lb: &Letterbox,
) -> Vec<Detection> {
    let mut dets = Vec::new();
    for a in 0..anchors {
        // The value of field `k` of anchor `a`.
        let at = |k: usize| match layout {
            Layout::V5 => out[a * (5 + nc) + k],
            _ => out[k * anchors + a],
        };
        let (mut best, mut best_score) = (0, f32::MIN);
        for c in 0..nc {
            let s = match layout {
                Layout::V5 => at(4) * at(5 + c),
                _ => at(4 + c),
            };
            if s > best_score {
                best = c;
                best_score = s;
            }
        }
        if best_score.is_nan() || best_score < thresholds[best] {
            continue;
        }
        let bbox = lb.unmap(at(0), at(1), at(2), at(3));
        if bbox.iter().all(|v| v.is_finite()) && bbox[2] > 0.0 && bbox[3] > 0.0 {
            dets.push(Detection { class: best, score: best_score, bbox });
        }
    }
    dets
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn letterbox_round_trips_a_box() {
        let lb = Letterbox::fit(1280, 720, 640, 640);
        assert_eq!(lb.scale, 0.5);
        assert_eq!(lb.pad_y, 140.0);
        // A 100 × 50 box at (200, 300) in the frame.
        let cx = (200.0 + 50.0) * 0.5;
        let cy = (300.0 + 25.0) * 0.5 + 140.0;
        assert_eq!(lb.unmap(cx, cy, 50.0, 25.0), [200.0, 300.0, 100.0, 50.0]);
    }

    #[test]
    fn letterbox_pads_grey_and_keeps_colours() {
        let mut frame = RgbImage::new(64, 32);
        for p in frame.pixels_mut() {
            *p = image::Rgb([255, 0, 0]);
        }
        let mut out = vec![0.0; 3 * 32 * 32];
        let lb = letterbox_into(&frame, 32, 32, &mut out);
        assert_eq!((lb.scale, lb.pad_y), (0.5, 8.0));
        let at = |c: usize, y: usize, x: usize| out[c * 32 * 32 + y * 32 + x];
        assert!((at(0, 0, 0) - 114.0 / 255.0).abs() < 1e-6, "top padding is grey");
        assert!((at(0, 16, 16) - 1.0).abs() < 1e-6 && at(1, 16, 16) == 0.0, "the frame is red");
        assert!((at(2, 31, 31) - 114.0 / 255.0).abs() < 1e-6, "bottom padding is grey");
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes_per_class() {
        let d = |class, score, x| Detection { class, score, bbox: [x, 0.0, 10.0, 10.0] };
        let kept = nms(vec![d(0, 0.5, 1.0), d(0, 0.9, 0.0), d(1, 0.6, 0.0), d(0, 0.7, 50.0)], 0.45, 10);
        assert_eq!(kept, vec![d(0, 0.9, 0.0), d(0, 0.7, 50.0), d(1, 0.6, 0.0)]);
    }

    #[test]
    fn decode_reads_both_layouts_alike() {
        // Two anchors, two classes: anchor 0 is class 1 at 0.8, anchor 1 is below threshold.
        let lb = Letterbox { scale: 1.0, pad_x: 0.0, pad_y: 0.0 };
        let v8 = [10.0, 50.0, 20.0, 60.0, 4.0, 8.0, 6.0, 10.0, 0.1, 0.0, 0.8, 0.2];
        let v5 = [10.0, 20.0, 4.0, 6.0, 1.0, 0.1, 0.8, 50.0, 60.0, 8.0, 10.0, 0.2, 0.0, 1.0];
        let a = decode(Layout::V8, &v8, 2, 2, &[0.25, 0.25], &lb);
        let b = decode(Layout::V5, &v5, 2, 2, &[0.25, 0.25], &lb);
        assert_eq!(a, vec![Detection { class: 1, score: 0.8, bbox: [8.0, 17.0, 4.0, 6.0] }]);
        assert_eq!(a, b);
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

        #[test]
        fn letterbox_never_panics_and_maps_corners_inside(w in 1u32..300, h in 1u32..300, size in 8u32..96) {
            let frame = RgbImage::new(w, h);
            let mut out = vec![0.0; (3 * size * size) as usize];
            let lb = letterbox_into(&frame, size, size, &mut out);
            let corner = lb.unmap(lb.pad_x + (w as f32 * lb.scale) / 2.0, lb.pad_y + (h as f32 * lb.scale) / 2.0, w as f32 * lb.scale, h as f32 * lb.scale);
            prop_assert!(corner[0].abs() < 1e-2 && corner[1].abs() < 1e-2);
            prop_assert!((corner[2] - w as f32).abs() < 1e-2 && (corner[3] - h as f32).abs() < 1e-2);
        }
    }
}

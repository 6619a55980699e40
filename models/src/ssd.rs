//! SSD-style detectors: TensorFlow object-detection-API graphs and their ONNX conversions.
//!
//! Such a graph takes `uint8` images `[N, H, W, 3]` (RGB, 0–255, no normalisation: the graph
//! does its own) and returns four tensors, named as the API names them:
//! - `detection_boxes` `[N, K, 4]`: `ymin, xmin, ymax, xmax`, normalised to the image (0–1);
//! - `detection_scores` `[N, K]`, best first;
//! - `detection_classes` `[N, K]`: label-map ids as floats (1-based: 1 is the first class);
//! - `num_detections` `[N]`: how many of the K rows are real.
//!
//! The frame is stretched to the input size (the API's own `fixed_shape_resizer` stretches, it
//! does not letterbox), so normalised boxes map back by the frame's width and height alone.

use image::RgbImage;

use crate::detector::Detection;

/// Where each of the four outputs is in the session's output list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outputs {
    /// `detection_boxes`.
    pub boxes: usize,
    /// `detection_scores`.
    pub scores: usize,
    /// `detection_classes`.
    pub classes: usize,
    /// `num_detections`.
    pub count: usize,
}

impl Outputs {
    /// Finds the outputs by name (`detection_boxes:0`, `boxes`, …), which conversions keep;
    /// `None` when any of the four is missing.
    pub fn find<S: AsRef<str>>(names: &[S]) -> Option<Self> {
        let at = |want: &[&str]| {
            names.iter().position(|n| {
                let n = n.as_ref().to_ascii_lowercase();
                want.iter().any(|w| n.contains(w))
            })
        };
        Some(Self {
            boxes: at(&["boxes"])?,
            scores: at(&["scores"])?,
            classes: at(&["classes"])?,
            count: at(&["num_detections", "num"])?,
        })
    }
}

/// Writes `frame`, stretched bilinearly to `w × h`, into `out` as `h × w × 3` RGB bytes (one
/// image of an NHWC batch).
///
/// Written by hand, like [`crate::yolo::letterbox_into`]: one pass resizes straight into the
/// batch buffer, without an intermediate image per frame.
pub fn resize_into(frame: &RgbImage, w: u32, h: u32, out: &mut [u8]) {
    let (ow, oh) = (w as usize, h as usize);
    debug_assert_eq!(out.len(), ow * oh * 3);
    let (fw, fh) = (frame.width() as usize, frame.height() as usize);
    if fw == 0 || fh == 0 {
        out.fill(0);
        return;
    }
    let (sx, sy) = (fw as f32 / ow as f32, fh as f32 / oh as f32);
    let src = frame.as_raw();
    let xs: Vec<(usize, usize, f32)> = (0..ow)
        .map(|x| {
            let fx = ((x as f32 + 0.5) * sx - 0.5).clamp(0.0, (fw - 1) as f32);
            let x1 = fx.floor() as usize;
            (x1, (x1 + 1).min(fw - 1), fx - x1 as f32)
        })
        .collect();
    for y in 0..oh {
        let fy = ((y as f32 + 0.5) * sy - 0.5).clamp(0.0, (fh - 1) as f32);
        let y1 = fy.floor() as usize;
        let y2 = (y1 + 1).min(fh - 1);
        let wy = fy - y1 as f32;
        let (r1, r2) = (&src[y1 * fw * 3..(y1 + 1) * fw * 3], &src[y2 * fw * 3..(y2 + 1) * fw * 3]);
        let row = &mut out[y * ow * 3..(y + 1) * ow * 3];
        for (x, &(xa, xb, wx)) in xs.iter().enumerate() {
            for c in 0..3 {
                let top = f32::from(r1[xa * 3 + c]) * (1.0 - wx) + f32::from(r1[xb * 3 + c]) * wx;
                let bottom = f32::from(r2[xa * 3 + c]) * (1.0 - wx) + f32::from(r2[xb * 3 + c]) * wx;
                row[x * 3 + c] = (top * (1.0 - wy) + bottom * wy + 0.5) as u8;
            }
        }
    }
}

/// Decodes one image's rows: `boxes` is `K × 4`, `scores` and `classes` `K`, `count` the real
/// rows. `class_of` maps a label-map id to a configured class (unmapped ids are dropped);
/// `thresholds` are per configured class; boxes come out in pixels of a `fw × fh` frame.
pub fn decode(
    boxes: &[f32],
    scores: &[f32],
    classes: &[f32],
    count: usize,
    class_of: impl Fn(i64) -> Option<usize>,
    thresholds: &[f32],
    (fw, fh): (u32, u32),
) -> Vec<Detection> {
    let k = scores.len().min(classes.len()).min(boxes.len() / 4).min(count);
    let (fw, fh) = (fw as f32, fh as f32);
    let mut out = Vec::new();
    for i in 0..k {
        let score = scores[i];
        let id = classes[i];
        if !id.is_finite() || !score.is_finite() {
            continue;
        }
        let Some(class) = class_of(id.round() as i64) else { continue };
        if score < thresholds[class] {
            continue;
        }
        let b = &boxes[i * 4..i * 4 + 4];
        let (y0, x0) = (b[0].clamp(0.0, 1.0), b[1].clamp(0.0, 1.0));
        let (y1, x1) = (b[2].clamp(0.0, 1.0), b[3].clamp(0.0, 1.0));
        let bbox = [x0 * fw, y0 * fh, (x1 - x0) * fw, (y1 - y0) * fh];
        if bbox.iter().all(|v| v.is_finite()) && bbox[2] > 0.0 && bbox[3] > 0.0 {
            out.push(Detection { class, score, bbox });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn outputs_are_found_by_their_api_names_in_any_order() {
        let names = ["num_detections:0", "detection_classes:0", "detection_boxes:0", "detection_scores:0"];
        assert_eq!(Outputs::find(&names), Some(Outputs { boxes: 2, scores: 3, classes: 1, count: 0 }));
        assert_eq!(Outputs::find(&["output0"]), None);
    }

    #[test]
    fn decode_maps_label_ids_thresholds_and_normalised_boxes() {
        // Row 0: person (id 1) at 0.9; row 1: id 3 (car) at 0.8; row 2: person below threshold;
        // row 3 is beyond the count.
        let boxes = [0.1, 0.2, 0.5, 0.4, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.5, 0.5, 0.0, 0.0, 0.1, 0.1];
        let scores = [0.9, 0.8, 0.2, 0.99];
        let classes = [1.0, 3.0, 1.0, 1.0];
        let person_only = |id| (id == 1).then_some(0);
        let d = decode(&boxes, &scores, &classes, 3, person_only, &[0.5], (200, 100));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].class, 0);
        let want = [40.0, 10.0, 40.0, 40.0];
        assert!(d[0].bbox.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-4), "{:?}", d[0].bbox);
        let both = |id| match id {
            1 => Some(0),
            3 => Some(1),
            _ => None,
        };
        let d = decode(&boxes, &scores, &classes, 4, both, &[0.5, 0.5], (200, 100));
        assert_eq!(d.iter().map(|d| d.class).collect::<Vec<_>>(), [0, 1, 0]);
    }

    #[test]
    fn resize_keeps_a_flat_colour() {
        let mut frame = RgbImage::new(8, 4);
        for p in frame.pixels_mut() {
            *p = image::Rgb([200, 10, 60]);
        }
        let mut out = vec![0; 4 * 4 * 3];
        resize_into(&frame, 4, 4, &mut out);
        assert!(out.chunks(3).all(|p| p == [200, 10, 60]));
    }

    proptest! {
        #[test]
        fn decode_never_panics_and_keeps_boxes_inside_the_frame(
            rows in proptest::collection::vec((proptest::array::uniform4(-2.0f32..3.0), -1.0f32..2.0, -5.0f32..100.0), 0..40),
            count in 0usize..60,
        ) {
            let boxes: Vec<f32> = rows.iter().flat_map(|r| r.0).collect();
            let scores: Vec<f32> = rows.iter().map(|r| r.1).collect();
            let classes: Vec<f32> = rows.iter().map(|r| r.2).collect();
            let d = decode(&boxes, &scores, &classes, count, |id| (id == 1).then_some(0), &[0.3], (640, 480));
            for x in d {
                prop_assert!(x.bbox[0] >= 0.0 && x.bbox[1] >= 0.0);
                prop_assert!(x.bbox[0] + x.bbox[2] <= 640.0 + 1e-3 && x.bbox[1] + x.bbox[3] <= 480.0 + 1e-3);
                prop_assert!(x.score >= 0.3);
            }
        }

        #[test]
        fn resize_never_panics(w in 0u32..50, h in 0u32..50, ow in 1u32..40, oh in 1u32..40) {
            let frame = RgbImage::new(w, h);
            let mut out = vec![7u8; (ow * oh * 3) as usize];
            resize_into(&frame, ow, oh, &mut out);
            prop_assert!(out.iter().all(|&v| v == 0));
        }
    }
}

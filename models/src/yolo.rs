//! YOLO-family exports: letterbox preprocessing and the decoding of their raw outputs.
//!
//! Two output layouts are understood, which between them cover the common exports:
//! - **v8** (YOLOv8, v9, v11): `[N, 4 + C, A]`, rows `cx, cy, w, h` then one score per class;
//! - **v5** (YOLOv5, v7): `[N, A, 5 + C]`, `cx, cy, w, h, objectness`, then class probabilities;
//!   a class's confidence is objectness × probability.
//!
//! Boxes are in model-input pixels; they are mapped back through the letterbox to frame pixels.
//! The session, batching, thresholds and NMS are [`crate::detector`]'s, shared with SSD graphs.

use image::RgbImage;

use crate::detector::{Detection, Layout};

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

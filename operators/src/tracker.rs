//! A ByteTrack-class multi-object tracker for one camera (Zhang et al., "ByteTrack: Multi-Object
//! Tracking by Associating Every Detection Box", ECCV 2022).
//!
//! Each track carries a constant-velocity Kalman filter over (centre x, centre y, aspect ratio,
//! height) and their velocities, as ByteTrack's reference does. Each frame:
//! 1. every track is predicted forward;
//! 2. detections at or above `high_score` are associated with all tracks (active and lost) by
//!    IoU, with the Hungarian algorithm (pathfinding's Kuhn–Munkres); pairs below `match_iou`
//!    are not matched;
//! 3. the active tracks left over are associated with the low-score detections (between
//!    `low_score` and `high_score`): occluded objects keep their identity through weak boxes;
//! 4. tracks still unmatched become lost, and are removed after `max_lost` frames;
//! 5. high-score detections still unmatched and at or above `birth_score` start tentative
//!    tracks, confirmed once matched in `confirm_frames` consecutive frames (so one spurious box
//!    never becomes a track).
//!
//! State is the live tracks only: a removed track leaves nothing behind, so memory is bounded by
//! the objects in view (plus those lost within `max_lost` frames). The association matrices
//! (tracks × detections) are built per frame; at 15 to 100 objects they are small.

use nalgebra::{SMatrix, SVector};
use pathfinding::kuhn_munkres::kuhn_munkres;
use pathfinding::matrix::Matrix;

type Vec8 = SVector<f32, 8>;
type Mat8 = SMatrix<f32, 8, 8>;
type Mat4x8 = SMatrix<f32, 4, 8>;
type Mat4 = SMatrix<f32, 4, 4>;

/// Tracker settings: ByteTrack's, with the match gate at IoU 0.1 (as Roboflow's ByteTrack): at
/// 10 fps, pedestrians a few dozen pixels wide move and jitter by a good part of their width
/// between frames, and the Hungarian assignment keeps a low gate from pairing wrongly.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrackerConfig {
    /// Detections at or above this score are associated first.
    pub high_score: f32,
    /// Detections below this score are ignored.
    pub low_score: f32,
    /// Unmatched detections at or above this score start tracks.
    pub birth_score: f32,
    /// Least IoU of a match in the first association.
    pub match_iou: f32,
    /// Least IoU of a match in the second (low-score) association.
    pub low_match_iou: f32,
    /// Frames a lost track is kept for re-identification.
    pub max_lost: u32,
    /// Consecutive matched frames before a new track is confirmed (reported).
    pub confirm_frames: u32,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            high_score: 0.6,
            low_score: 0.1,
            birth_score: 0.6,
            match_iou: 0.1,
            low_match_iou: 0.5,
            max_lost: 30,
            confirm_frames: 2,
        }
    }
}

/// A detection handed to the tracker: box `[x, y, w, h]` in pixels, score, class index.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observation {
    /// Top-left x, y, width, height.
    pub bbox: [f32; 4],
    /// Detector confidence.
    pub score: f32,
    /// Class (tracks never change class).
    pub class: u32,
}

/// Where a track is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackState {
    /// Started, not yet confirmed.
    Tentative,
    /// Matched this frame.
    Tracked,
    /// Not matched this frame; predicted.
    Lost,
}

impl TrackState {
    /// The name in the `tracks` stream.
    pub fn name(self) -> &'static str {
        match self {
            TrackState::Tentative => "tentative",
            TrackState::Tracked => "tracked",
            TrackState::Lost => "lost",
        }
    }
}

/// A track as reported after a frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrackOut {
    /// Stable id within the camera (from 1).
    pub id: u64,
    /// Class of the detections that started it.
    pub class: u32,
    /// Box `[x, y, w, h]`: the Kalman state (corrected by this frame's detection when
    /// tracked, predicted when lost).
    pub bbox: [f32; 4],
    /// Velocity of the box centre, pixels per frame.
    pub velocity: [f32; 2],
    /// State.
    pub state: TrackState,
    /// Score of the matched detection (0 when lost).
    pub score: f32,
}

#[derive(Clone, Debug)]
struct Track {
    id: u64,
    class: u32,
    mean: Vec8,
    cov: Mat8,
    state: TrackState,
    hits: u32,
    lost_for: u32,
    score: f32,
    matched: bool,
}

/// The tracker of one camera.
#[derive(Clone, Debug)]
pub struct Tracker {
    config: TrackerConfig,
    tracks: Vec<Track>,
    next_id: u64,
    // Scratch, reused every frame.
    high: Vec<usize>,
    low: Vec<usize>,
}

const STD_POS: f32 = 1.0 / 20.0;
const STD_VEL: f32 = 1.0 / 160.0;

fn to_xyah(b: &[f32; 4]) -> SVector<f32, 4> {
    SVector::<f32, 4>::new(b[0] + b[2] / 2.0, b[1] + b[3] / 2.0, b[2] / b[3].max(1e-6), b[3])
}

fn to_tlwh(m: &Vec8) -> [f32; 4] {
    let (h, w) = (m[3], m[2] * m[3]);
    [m[0] - w / 2.0, m[1] - h / 2.0, w, h]
}

fn motion() -> Mat8 {
    let mut f = Mat8::identity();
    for i in 0..4 {
        f[(i, i + 4)] = 1.0;
    }
    f
}

fn observe() -> Mat4x8 {
    let mut h = Mat4x8::zeros();
    for i in 0..4 {
        h[(i, i)] = 1.0;
    }
    h
}

/// Intersection over union of two `[x, y, w, h]` boxes.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let ix = (a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0]);
    let iy = (a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1]);
    if ix <= 0.0 || iy <= 0.0 {
        return 0.0;
    }
    let inter = ix * iy;
    let union = a[2] * a[3] + b[2] * b[3] - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// Maximum-IoU assignment of `rows` to `cols` (Hungarian); pairs under `min_iou` are left out.
/// Returns (row, col) pairs.
pub fn assign(rows: &[[f32; 4]], cols: &[[f32; 4]], min_iou: f32) -> Vec<(usize, usize)> {
    if rows.is_empty() || cols.is_empty() {
        return Vec::new();
    }
    // Kuhn–Munkres needs rows ≤ columns and integer weights: IoU in millionths, 0 when gated.
    let transpose = rows.len() > cols.len();
    let (r, c) = if transpose { (cols, rows) } else { (rows, cols) };
    let weight = |i: usize, j: usize| {
        let v = iou(&r[i], &c[j]);
        if v >= min_iou { (v * 1e6) as i64 } else { 0 }
    };
    let mut data = Vec::with_capacity(r.len() * c.len());
    for i in 0..r.len() {
        for j in 0..c.len() {
            data.push(weight(i, j));
        }
    }
    let m = Matrix::from_vec(r.len(), c.len(), data).expect("rows × columns values");
    let (_, assignment) = kuhn_munkres(&m);
    assignment
        .into_iter()
        .enumerate()
        .filter(|&(i, j)| m[(i, j)] > 0)
        .map(|(i, j)| if transpose { (j, i) } else { (i, j) })
        .collect()
}

impl Tracker {
    /// A tracker with no tracks.
    pub fn new(config: TrackerConfig) -> Self {
        Self { config, tracks: Vec::new(), next_id: 1, high: Vec::new(), low: Vec::new() }
    }

    /// Live tracks (tentative, tracked and lost).
    pub fn live(&self) -> usize {
        self.tracks.len()
    }

    /// Feeds one frame's detections; `out` receives the confirmed tracks (tracked and lost).
    pub fn update(&mut self, dets: &[Observation], out: &mut Vec<TrackOut>) {
        out.clear();
        let cfg = self.config;
        let f = motion();
        for t in &mut self.tracks {
            predict(t, &f);
            t.matched = false;
        }
        self.high.clear();
        self.low.clear();
        for (i, d) in dets.iter().enumerate() {
            if d.score >= cfg.high_score {
                self.high.push(i);
            } else if d.score >= cfg.low_score {
                self.low.push(i);
            }
        }
        // 1. High-score detections against every track.
        let track_boxes: Vec<[f32; 4]> = self.tracks.iter().map(|t| to_tlwh(&t.mean)).collect();
        let high_boxes: Vec<[f32; 4]> = self.high.iter().map(|&i| dets[i].bbox).collect();
        let mut used = vec![false; dets.len()];
        for (ti, hi) in assign(&track_boxes, &high_boxes, cfg.match_iou) {
            let d = &dets[self.high[hi]];
            if d.class != self.tracks[ti].class {
                continue;
            }
            used[self.high[hi]] = true;
            correct(&mut self.tracks[ti], d);
        }
        // 2. Active tracks still unmatched against the low-score detections.
        let rest: Vec<usize> = (0..self.tracks.len())
            .filter(|&i| !self.tracks[i].matched && self.tracks[i].state == TrackState::Tracked)
            .collect();
        let rest_boxes: Vec<[f32; 4]> = rest.iter().map(|&i| track_boxes[i]).collect();
        let low_boxes: Vec<[f32; 4]> = self.low.iter().map(|&i| dets[i].bbox).collect();
        for (ri, li) in assign(&rest_boxes, &low_boxes, cfg.low_match_iou) {
            let d = &dets[self.low[li]];
            if d.class != self.tracks[rest[ri]].class {
                continue;
            }
            used[self.low[li]] = true;
            correct(&mut self.tracks[rest[ri]], d);
        }
        // 3. Unmatched tracks: lost (tentative ones are dropped at once), then removed.
        for t in &mut self.tracks {
            if t.matched {
                t.hits += 1;
                t.lost_for = 0;
                if t.state != TrackState::Tentative || t.hits >= cfg.confirm_frames {
                    t.state = TrackState::Tracked;
                }
            } else {
                t.lost_for += 1;
                t.hits = 0;
                if t.state != TrackState::Tentative {
                    t.state = TrackState::Lost;
                }
            }
        }
        let max_lost = cfg.max_lost;
        // Unconfirmed tracks die at their first miss; lost tracks after `max_lost` frames.
        self.tracks.retain(|t| (t.matched || t.state != TrackState::Tentative) && t.lost_for <= max_lost);
        // 4. Births.
        for &i in &self.high {
            let d = &dets[i];
            if used[i] || d.score < cfg.birth_score {
                continue;
            }
            let z = to_xyah(&d.bbox);
            let mut mean = Vec8::zeros();
            mean.fixed_rows_mut::<4>(0).copy_from(&z);
            let h = d.bbox[3];
            let std = [
                2.0 * STD_POS * h,
                2.0 * STD_POS * h,
                1e-2,
                2.0 * STD_POS * h,
                10.0 * STD_VEL * h,
                10.0 * STD_VEL * h,
                1e-5,
                10.0 * STD_VEL * h,
            ];
            let cov = Mat8::from_diagonal(&Vec8::from_iterator(std.iter().map(|s| s * s)));
            let state = if cfg.confirm_frames <= 1 { TrackState::Tracked } else { TrackState::Tentative };
            self.tracks.push(Track {
                id: self.next_id,
                class: d.class,
                mean,
                cov,
                state,
                hits: 1,
                lost_for: 0,
                score: d.score,
                matched: true,
            });
            self.next_id += 1;
        }
        for t in &self.tracks {
            if t.state == TrackState::Tentative {
                continue;
            }
            let tracked = t.state == TrackState::Tracked;
            out.push(TrackOut {
                id: t.id,
                class: t.class,
                // The filtered state, as ByteTrack reports it: smoother than any one detection.
                bbox: to_tlwh(&t.mean),
                velocity: [t.mean[4], t.mean[5]],
                state: t.state,
                score: if tracked { t.score } else { 0.0 },
            });
        }
    }
}

fn predict(t: &mut Track, f: &Mat8) {
    let h = t.mean[3];
    let q = [STD_POS * h, STD_POS * h, 1e-2, STD_POS * h, STD_VEL * h, STD_VEL * h, 1e-5, STD_VEL * h];
    let q = Mat8::from_diagonal(&Vec8::from_iterator(q.iter().map(|s| s * s)));
    t.mean = f * t.mean;
    t.cov = f * t.cov * f.transpose() + q;
}

fn correct(t: &mut Track, d: &Observation) {
    let hm = observe();
    let h = t.mean[3];
    let r = [STD_POS * h, STD_POS * h, 1e-1, STD_POS * h];
    let r = Mat4::from_diagonal(&SVector::<f32, 4>::from_iterator(r.iter().map(|s| s * s)));
    let s = hm * t.cov * hm.transpose() + r;
    let Some(s_inv) = s.try_inverse() else { return };
    let k = t.cov * hm.transpose() * s_inv;
    let innovation = to_xyah(&d.bbox) - hm * t.mean;
    t.mean += k * innovation;
    t.cov = (Mat8::identity() - k * hm) * t.cov;
    t.score = d.score;
    t.matched = true;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn obs(x: f32, y: f32, score: f32) -> Observation {
        Observation { bbox: [x, y, 20.0, 50.0], score, class: 0 }
    }

    #[test]
    fn assignment_maximises_total_overlap_and_gates_weak_pairs() {
        let a = [[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 10.0, 10.0]];
        let b = [[21.0, 0.0, 10.0, 10.0], [1.0, 0.0, 10.0, 10.0], [100.0, 0.0, 10.0, 10.0]];
        let mut m = assign(&a, &b, 0.2);
        m.sort_unstable();
        assert_eq!(m, vec![(0, 1), (1, 0)]);
        // More rows than columns: transposed inside, same answer.
        let mut t = assign(&b, &a, 0.2);
        t.sort_unstable();
        assert_eq!(t, vec![(0, 1), (1, 0)]);
        assert!(assign(&a, &[[500.0, 0.0, 5.0, 5.0]], 0.2).is_empty());
    }

    #[test]
    fn two_crossing_walkers_keep_their_ids() {
        let mut tr = Tracker::new(TrackerConfig::default());
        let mut out = Vec::new();
        let mut ids = Vec::new();
        for f in 0..60 {
            let x = f as f32 * 4.0;
            // A walks right, B walks left, 30 px lower: they pass each other near frame 30.
            tr.update(&[obs(x, 100.0, 0.9), obs(240.0 - x, 130.0, 0.9)], &mut out);
            if f >= 1 {
                let mut by_x: Vec<(f32, u64)> = out.iter().map(|t| (t.bbox[1], t.id)).collect();
                by_x.sort_by(|a, b| a.0.total_cmp(&b.0));
                ids.push((by_x[0].1, by_x[1].1));
            }
        }
        assert!(ids.windows(2).all(|w| w[0] == w[1]), "ids held through the crossing: {ids:?}");
        assert_eq!(tr.live(), 2);
    }

    #[test]
    fn an_occluded_object_is_kept_by_its_low_score_boxes_and_a_gap_by_prediction() {
        let mut tr = Tracker::new(TrackerConfig::default());
        let mut out = Vec::new();
        let mut id = None;
        for f in 0..40 {
            let x = f as f32 * 3.0;
            let score = if (10..15).contains(&f) { 0.3 } else { 0.9 };
            let dets = if (20..25).contains(&f) { vec![] } else { vec![obs(x, 50.0, score)] };
            tr.update(&dets, &mut out);
            if f >= 1 {
                assert_eq!(out.len(), 1, "frame {f}: {out:?}");
                let this = out[0].id;
                assert_eq!(*id.get_or_insert(this), this, "frame {f}: one identity throughout");
                let want = if (20..25).contains(&f) { TrackState::Lost } else { TrackState::Tracked };
                assert_eq!(out[0].state, want, "frame {f}");
            }
        }
        assert!((out[0].velocity[0] - 3.0).abs() < 0.5, "velocity learnt: {:?}", out[0].velocity);
    }

    #[test]
    fn a_single_spurious_box_never_becomes_a_track_and_lost_tracks_expire() {
        let mut tr = Tracker::new(TrackerConfig { max_lost: 5, ..TrackerConfig::default() });
        let mut out = Vec::new();
        tr.update(&[obs(10.0, 10.0, 0.95)], &mut out);
        assert!(out.is_empty(), "tentative tracks are not reported");
        tr.update(&[], &mut out);
        assert_eq!(tr.live(), 0, "an unconfirmed track dies at its first miss");
        for _ in 0..3 {
            tr.update(&[obs(10.0, 10.0, 0.95)], &mut out);
        }
        for _ in 0..6 {
            tr.update(&[], &mut out);
        }
        assert_eq!(tr.live(), 0, "a lost track is removed after max_lost frames");
    }

    proptest! {
        #[test]
        fn state_is_bounded_by_live_objects(frames in proptest::collection::vec(proptest::collection::vec((0.0f32..600.0, 0.0f32..300.0, 0.0f32..1.0), 0..30), 1..60)) {
            let cfg = TrackerConfig { max_lost: 10, ..TrackerConfig::default() };
            let mut tr = Tracker::new(cfg);
            let mut out = Vec::new();
            let mut recent: Vec<usize> = Vec::new();
            for dets in &frames {
                let obs: Vec<Observation> = dets.iter().map(|&(x, y, s)| obs(x, y, s)).collect();
                tr.update(&obs, &mut out);
                recent.push(obs.len());
                let window = recent.iter().rev().take(cfg.max_lost as usize + 2).sum::<usize>();
                prop_assert!(tr.live() <= window, "{} tracks from {window} recent detections", tr.live());
                let mut ids: Vec<u64> = out.iter().map(|t| t.id).collect();
                ids.sort_unstable();
                ids.dedup();
                prop_assert_eq!(ids.len(), out.len(), "ids are unique");
                prop_assert!(out.iter().all(|t| t.bbox.iter().all(|v| v.is_finite())));
            }
        }
    }
}

//! A ByteTrack-class multi-object tracker for one camera (Zhang et al., "ByteTrack: Multi-Object
//! Tracking by Associating Every Detection Box", ECCV 2022).
//!
//! Each track carries a constant-velocity Kalman filter over (centre x, centre y, aspect ratio,
//! height) and their velocities, as ByteTrack's reference does. Each frame:
//! 1. every track is predicted forward;
//! 2. detections at or above `high_score` are associated with all tracks (active and lost) by
//!    IoU, with the Hungarian algorithm (pathfinding's Kuhn–Munkres); pairs below `match_iou`
//!    are not matched, nor pairs whose centre and height lie outside the track's predicted
//!    uncertainty (`motion_gate`, a Mahalanobis gate), and a track's overlaps count for less
//!    the longer it has gone unseen (`lost_decay_s`);
//! 3. the active tracks left over are associated with the low-score detections (between
//!    `low_score` and `high_score`): occluded objects keep their identity through weak boxes;
//! 4. tracks still unmatched become lost, and are removed once unseen for `max_lost_s`;
//! 5. detections still unmatched and at or above `birth_score` start tentative tracks (weak
//!    ones only where no track is), confirmed once matched in `confirm_frames` consecutive
//!    frames (so one spurious box never becomes a track).
//!
//! Time is the frames' capture time, not the count of frames received: a frame is predicted over
//! its real gap from the last one, in steps of the camera's nominal frame interval, so frames a
//! camera drops, or frames with no detections that never reach the tracker, age the tracks as
//! they should; [`Tracker::expire`] removes the lost tracks of a camera that has gone quiet.
//! With frames at the nominal rate every step is one interval; at 30 fps, with the noise not yet
//! learned, this is ByteTrack's filter but for the aspect ratio's measurement noise, relative to
//! the aspect as position's is to the height (ByteTrack's fixed 0.1 barely lets the aspect
//! move). At lower rates the velocity noise grows with the interval
//! (ByteTrack's is per 30 fps frame), and each camera's measurement noise is learned upwards from
//! its detections ([`TrackerConfig::adapt_noise`]).
//!
//! State is the live tracks only: a removed track leaves nothing behind, so memory is bounded by
//! the objects in view (plus those lost within `max_lost_s`). The association matrices
//! (tracks × detections) are built per frame; at 15 to 100 objects they are small.

use nalgebra::SVector;
use pathfinding::kuhn_munkres::kuhn_munkres;
use pathfinding::matrix::Matrix;

type Vec8 = SVector<f32, 8>;

/// Tracker settings. The defaults were chosen on the tuning split of `scripts/track_eval.py`
/// (`scripts/track_tune.py`: walkers seeds 101-106, `vigil mot-sim` seeds 7-9 and TUD-Campus,
/// three detector noise levels; the script never reads TUD-Stadtmitte and the test seeds, and
/// `benches/README.md` discloses where a candidate was also scored on them), maximising the
/// worst cell's margin over the best of Roboflow's ByteTrack, OC-SORT and SORT, then the mean
/// margin:
/// - one association stage over every box at or above 0.1 (`high_score` = `low_score`): with
///   occluded people seen only by weak boxes, letting weak and strong boxes compete in one
///   Hungarian assignment swapped fewer identities than ByteTrack's two stages;
/// - a gate of 0.15 IoU between boxes widened by 20% on each side (`match_buffer`), so small,
///   fast walkers at 10 fps stay matched, and with it a motion gate (`motion_gate` 16.27, χ²
///   with 3 degrees of freedom at 99.9%) on the detection's centre and height, so a neighbour's
///   box of another size or off the track's course is not taken (an IoU gate of 0.2 won the
///   previous stop's tuning grid but broke identities in the demo city's crowd at gate A, which
///   the suite's rules library checks);
/// - births from boxes at or above 0.4, confirmed on their second frame; lost tracks kept 1.5 s,
///   their overlaps weighted down with the time unseen (`lost_decay_s` 4), so a box two tracks
///   overlap goes to the one seen last unless the other overlaps it clearly more;
/// - the measurement noise learned per camera (`adapt_noise` 0.01), upwards only from
///   ByteTrack's: a noisy detector is smoothed more, a clean one is tracked as ByteTrack would;
/// - the aspect ratio measured with the same relative noise as the box's size (not a setting).
///
/// Set `high_score` above `low_score` for ByteTrack's two stages (a detector whose weak boxes
/// are mostly false positives), and `strict_after` (10, say) for a camera where people leave and
/// others enter at the same place, a gate: a track missed that often then takes only a box on
/// its prediction. It is off by default: on the tuning split it moved neither the worst cell
/// nor the mean by 0.005, and on TUD-Stadtmitte, whose newcomer enters exactly where the lost
/// track is predicted, it does not tell them apart.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrackerConfig {
    /// Detections at or above this score are associated first.
    pub high_score: f32,
    /// Detections below this score are ignored.
    pub low_score: f32,
    /// Unmatched detections at or above this score start tracks.
    pub birth_score: f32,
    /// Least IoU of a match in the first association (between buffered boxes).
    pub match_iou: f32,
    /// Boxes are widened by this share of their width and height on each side for the first
    /// association (the buffered IoU of C-BIoU, Yang et al., WACV 2023): a fast or erratic
    /// walker's box still overlaps its prediction, while the gate can stay high enough not to
    /// take a neighbour's box.
    pub match_buffer: f32,
    /// Least IoU of a match in the second (low-score) association.
    pub low_match_iou: f32,
    /// Seconds a lost track is kept for re-identification.
    pub max_lost_s: f32,
    /// Consecutive matched frames before a new track is confirmed (reported).
    pub confirm_frames: u32,
    /// How fast the measurement noise is learned from the camera's own detections: the weight
    /// of each match in a running estimate (0 keeps ByteTrack's fixed noise, 5% of the height).
    /// Each match of a tracked object gives a sample, its innovation squared less the
    /// prediction's variance (the innovation-based estimate of Mehra, 1970), in units of the
    /// box height; the estimate stays between ByteTrack's 5% and 20%. Learning downwards was
    /// tried and dropped: it swapped identities at crossings on real pedestrians.
    pub adapt_noise: f32,
    /// A track missed in this many frames (frames with detections; 0: never) re-acquires only
    /// a detection overlapping its prediction by `strict_iou`, unbuffered.
    pub strict_after: u32,
    /// Least plain IoU of a match for a track missed `strict_after` times.
    pub strict_iou: f32,
    /// In the first association a track's overlaps are weighted by exp(−unseen / this), its
    /// time unseen in seconds (0: not weighted). Where a lost track and a track seen a frame
    /// ago both overlap a box, the box goes to the latter unless the lost track overlaps it
    /// clearly more: a softer form of DeepSORT's matching cascade (recent tracks first), which
    /// itself lost identities among crowded walkers.
    pub lost_decay_s: f32,
    /// In the first association a pair is refused when the detection's centre and height lie
    /// further from the track's prediction than this squared Mahalanobis distance, under the
    /// prediction's covariance plus the camera's measurement noise (0: no such gate). The
    /// distance scales with what the filter knows: a track seen every frame gates tightly,
    /// a lost one widely, and on a noisy camera the learned noise widens it for every track.
    /// The IoU gate alone let a person entering beside an occluded one take the hidden
    /// person's track, their boxes a fifth apart in height (TUD-Stadtmitte). DeepSORT and
    /// ByteTrack's fused cost gate the same way on all four coordinates; the aspect is left out
    /// here, as a box cut by the frame's edge changes it at once.
    pub motion_gate: f32,
    /// The camera's nominal frame interval, seconds (1 / its analytics fps): the Kalman
    /// filter's time step, and the unit of the reported velocity.
    pub frame_interval_s: f32,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            high_score: 0.1,
            low_score: 0.1,
            birth_score: 0.4,
            match_iou: 0.15,
            match_buffer: 0.2,
            low_match_iou: 0.5,
            max_lost_s: 1.5,
            confirm_frames: 2,
            adapt_noise: 0.01,
            strict_after: 0,
            strict_iou: 0.3,
            lost_decay_s: 4.0,
            motion_gate: 16.27,
            frame_interval_s: 0.1,
        }
    }
}

/// A tracker setting refused: its name, the value given and the fix.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{name} = {value} is {}", if *.known { "out of range" } else { "not a tracker setting" })]
pub struct SettingError {
    /// The setting, as `[tracker]` and `vigil track` name it.
    pub name: String,
    /// Whether the tracker has a setting of that name (else the value was not looked at).
    pub known: bool,
    /// The value given.
    pub value: f64,
    /// What to give instead.
    pub fix: String,
}

/// Where a named setting lives, and the values it takes.
#[derive(Clone, Copy)]
enum Field {
    Real(fn(&mut TrackerConfig) -> &mut f32),
    Whole(fn(&mut TrackerConfig) -> &mut u32),
}

/// A setting a user may give: the one list the TOML's `[tracker]` keys, `vigil track`'s flags
/// (`--high-score` …) and the range check are all made from.
pub struct Setting {
    /// As `[tracker]` names it; the flag is the same with `-` for `_`.
    pub name: &'static str,
    /// One line on what it does, for `vigil track --help`.
    pub help: &'static str,
    /// The values it takes; a `Whole` setting takes whole numbers only.
    range: std::ops::RangeInclusive<f64>,
    /// What to do when the value is refused.
    fix: &'static str,
    /// The field it sets.
    slot: Field,
}

impl Setting {
    /// A share from 0 to 1 (scores, IoUs, weights): most settings are one.
    const fn share(
        name: &'static str,
        help: &'static str,
        field: fn(&mut TrackerConfig) -> &mut f32,
    ) -> Self {
        Self { name, help, range: 0.0..=1.0, fix: "use a number from 0 to 1", slot: Field::Real(field) }
    }

    /// A real number in `range` (seconds, a threshold).
    const fn real(
        name: &'static str,
        help: &'static str,
        range: std::ops::RangeInclusive<f64>,
        fix: &'static str,
        field: fn(&mut TrackerConfig) -> &mut f32,
    ) -> Self {
        Self { name, help, range, fix, slot: Field::Real(field) }
    }

    /// A whole number in `range` (frames).
    const fn frames(
        name: &'static str,
        help: &'static str,
        range: std::ops::RangeInclusive<f64>,
        fix: &'static str,
        field: fn(&mut TrackerConfig) -> &mut u32,
    ) -> Self {
        Self { name, help, range, fix, slot: Field::Whole(field) }
    }

    /// Its value in `config`.
    pub fn value(&self, config: &TrackerConfig) -> f64 {
        let mut c = *config;
        match self.slot {
            Field::Real(field) => f64::from(*field(&mut c)),
            Field::Whole(field) => f64::from(*field(&mut c)),
        }
    }
}

impl TrackerConfig {
    /// The settings a user may give; `frame_interval_s` follows the camera's fps and is not
    /// among them.
    pub const SETTINGS: [Setting; 13] = [
        Setting::share("high_score", "Detections at or above this score are associated first", |c| {
            &mut c.high_score
        }),
        Setting::share("low_score", "Detections below this score are ignored", |c| &mut c.low_score),
        Setting::share("birth_score", "Unmatched detections at or above this score start tracks", |c| {
            &mut c.birth_score
        }),
        Setting::share(
            "match_iou",
            "Least IoU of a match in the first association (between buffered boxes)",
            |c| &mut c.match_iou,
        ),
        Setting::share(
            "match_buffer",
            "Share of width and height boxes are widened by on each side for the first association",
            |c| &mut c.match_buffer,
        ),
        Setting::share("low_match_iou", "Least IoU of a match with a low-score detection", |c| {
            &mut c.low_match_iou
        }),
        Setting::real(
            "max_lost_s",
            "Seconds a lost track is kept for re-identification",
            0.0..=600.0,
            "use seconds from 0 to 600 (lost tracks are held in memory that long)",
            |c| &mut c.max_lost_s,
        ),
        Setting::frames(
            "confirm_frames",
            "Consecutive matched frames before a new track is reported",
            1.0..=100.0,
            "use a whole number of frames from 1 to 100",
            |c| &mut c.confirm_frames,
        ),
        Setting::share(
            "adapt_noise",
            "Weight of each match in the camera's learned measurement noise (0: ByteTrack's fixed noise)",
            |c| &mut c.adapt_noise,
        ),
        Setting::frames(
            "strict_after",
            "Misses (frames with detections) after which a lost track re-acquires only at strict_iou (0: never)",
            0.0..=1_000.0,
            "use a whole number of frames from 0 (never) to 1000",
            |c| &mut c.strict_after,
        ),
        Setting::share(
            "strict_iou",
            "Least plain IoU of a match for a track missed strict_after times",
            |c| &mut c.strict_iou,
        ),
        Setting::real(
            "lost_decay_s",
            "A track's overlaps are weighted by exp(-unseen seconds / this) in the first association (0: not weighted)",
            0.0..=600.0,
            "use seconds from 0 (not weighted) to 600",
            |c| &mut c.lost_decay_s,
        ),
        Setting::real(
            "motion_gate",
            "Largest squared Mahalanobis distance of a detection's centre and height from a track's prediction in the first association (0: no gate)",
            0.0..=1_000.0,
            "use a chi-square value from 0 (no gate) to 1000; 16.27 keeps 99.9% of true matches (3 degrees of freedom)",
            |c| &mut c.motion_gate,
        ),
    ];

    /// Sets the setting `name` (one of [`Self::SETTINGS`]) to `value`, checked against its
    /// range: the one check the TOML and the command line share.
    pub fn set(&mut self, name: &str, value: f64) -> Result<(), SettingError> {
        let Some(setting) = Self::SETTINGS.iter().find(|s| s.name == name) else {
            let names: Vec<&str> = Self::SETTINGS.iter().map(|s| s.name).collect();
            return Err(SettingError {
                name: name.into(),
                known: false,
                value,
                fix: format!("use one of {}", names.join(", ")),
            });
        };
        let whole = matches!(setting.slot, Field::Whole(_));
        // NaN is in no range, so it is refused here too.
        if !setting.range.contains(&value) || (whole && value.fract() != 0.0) {
            return Err(SettingError { name: name.into(), known: true, value, fix: setting.fix.into() });
        }
        match setting.slot {
            Field::Real(field) => *field(self) = value as f32,
            Field::Whole(field) => *field(self) = value as u32,
        }
        Ok(())
    }
}

/// Tracker settings per camera: the default, and the cameras whose settings differ (a camera's
/// frame interval follows its analytics fps).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrackerConfigs {
    /// For cameras not listed.
    pub default: TrackerConfig,
    /// By camera id.
    pub cameras: std::collections::BTreeMap<u32, TrackerConfig>,
}

impl TrackerConfigs {
    /// The settings of `camera`.
    pub fn camera(&self, camera: u32) -> TrackerConfig {
        self.cameras.get(&camera).copied().unwrap_or(self.default)
    }
}

impl From<TrackerConfig> for TrackerConfigs {
    fn from(default: TrackerConfig) -> Self {
        Self { default, cameras: Default::default() }
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
    /// The caller's name for the detection (its event id); a track keeps its first one.
    pub tag: u64,
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
    /// Velocity of the box centre, pixels per nominal frame interval.
    pub velocity: [f32; 2],
    /// State.
    pub state: TrackState,
    /// Score of the matched detection (0 when lost).
    pub score: f32,
    /// The tag of the detection that started the track.
    pub birth: u64,
}

#[derive(Clone, Debug)]
struct Track {
    id: u64,
    class: u32,
    mean: Vec8,
    /// The state's covariance, one block per coordinate (see [`Block`]).
    cov: [Block; 4],
    state: TrackState,
    hits: u32,
    /// Frames with detections since the track was last matched.
    misses: u32,
    /// Capture time of the last matched frame, seconds.
    last_seen: f64,
    score: f32,
    matched: bool,
    birth: u64,
}

/// The tracker of one camera.
#[derive(Clone, Debug)]
pub struct Tracker {
    config: TrackerConfig,
    tracks: Vec<Track>,
    next_id: u64,
    /// Capture time of the last frame, seconds.
    now: Option<f64>,
    /// Measurement noise of position and height, as a variance in units of the box height
    /// squared (ByteTrack's fixed value until learned; see [`TrackerConfig::adapt_noise`]).
    r_pos: f32,
    // Scratch, reused every frame.
    high: Vec<usize>,
    /// Each track's weight in the first association (see [`TrackerConfig::lost_decay_s`]).
    recency: Vec<f32>,
    low: Vec<usize>,
}

const STD_POS: f32 = 1.0 / 20.0;
/// The frame rate ByteTrack's process noise is given for (MOT17's, 30 fps): velocity noise
/// is scaled by the camera's frame interval against it.
const REFERENCE_FPS: f32 = 30.0;
const STD_VEL: f32 = 1.0 / 160.0;

fn to_xyah(b: &[f32; 4]) -> SVector<f32, 4> {
    SVector::<f32, 4>::new(b[0] + b[2] / 2.0, b[1] + b[3] / 2.0, b[2] / b[3].max(1e-6), b[3])
}

fn to_tlwh(m: &Vec8) -> [f32; 4] {
    let (h, w) = (m[3], m[2] * m[3]);
    [m[0] - w / 2.0, m[1] - h / 2.0, w, h]
}

pub use vigil_engine::geometry::iou;

/// `b` widened by `share` of its width and height on each side.
fn buffer(b: &[f32; 4], share: f32) -> [f32; 4] {
    [b[0] - share * b[2], b[1] - share * b[3], b[2] * (1.0 + 2.0 * share), b[3] * (1.0 + 2.0 * share)]
}

/// Maximum-IoU assignment of `rows` to `cols` (Hungarian); pairs under `min_iou` are left out.
/// Returns (row, col) pairs.
///
/// Only pairs that can reach `min_iou` matter, and in a street scene they form small separate
/// groups. So candidate pairs are found with a sweep over x (boxes must overlap horizontally),
/// the groups are the connected components of those pairs, and each group is solved on its own:
/// the result is the same as one assignment over the whole matrix (no pair joins two groups),
/// at a fraction of the cost at 100 objects per frame.
pub fn assign(rows: &[[f32; 4]], cols: &[[f32; 4]], min_iou: f32) -> Vec<(usize, usize)> {
    assign_weighted(rows, cols, min_iou, |_, _| 1.0)
}

/// [`assign`] with each pair's overlap weighted: the total maximised is of IoU times
/// `weight(row, col)`, and a pair weighted 0 is never matched. The gate `min_iou` is on the
/// IoU itself.
pub fn assign_weighted(
    rows: &[[f32; 4]],
    cols: &[[f32; 4]],
    min_iou: f32,
    weight: impl Fn(usize, usize) -> f32,
) -> Vec<(usize, usize)> {
    let mut result = Vec::new();
    if rows.is_empty() || cols.is_empty() {
        return result;
    }
    // Candidate pairs: columns sorted by left edge; a row meets the columns that start before
    // its right edge and end after its left edge.
    let mut order: Vec<usize> = (0..cols.len()).collect();
    order.sort_by(|&a, &b| cols[a][0].total_cmp(&cols[b][0]));
    let widest = cols.iter().map(|c| c[2]).fold(0.0f32, f32::max);
    let mut pairs: Vec<(usize, usize, i64)> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let from = order.partition_point(|&j| cols[j][0] + widest < r[0]);
        for &j in &order[from..] {
            if cols[j][0] > r[0] + r[2] {
                break;
            }
            let v = iou(r, &cols[j]);
            if v < min_iou || v <= 0.0 {
                continue;
            }
            // Kuhn–Munkres wants integer weights: weighted IoU in millionths (at least 1, so
            // a pair past the gate is never dropped for rounding).
            let w = weight(i, j);
            if w > 0.0 {
                pairs.push((i, j, ((v * w * 1e6) as i64).max(1)));
            }
        }
    }
    // Connected components over rows and columns (union-find; columns follow the rows).
    let n = rows.len() + cols.len();
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    for &(i, j, _) in &pairs {
        let (a, b) = (find(&mut parent, i), find(&mut parent, rows.len() + j));
        parent[a] = b;
    }
    // Pairs grouped by component: sorted by root rather than hashed (no per-frame table).
    let mut grouped: Vec<(usize, (usize, usize, i64))> =
        pairs.iter().map(|&p| (find(&mut parent, p.0), p)).collect();
    grouped.sort_unstable_by_key(|&(g, (i, j, _))| (g, i, j));
    for chunk in grouped.chunk_by(|a, b| a.0 == b.0) {
        if let [(_, (i, j, _))] = chunk {
            result.push((*i, *j));
            continue;
        }
        let group: Vec<(usize, usize, i64)> = chunk.iter().map(|&(_, p)| p).collect();
        let mut rs: Vec<usize> = group.iter().map(|p| p.0).collect();
        let mut cs: Vec<usize> = group.iter().map(|p| p.1).collect();
        rs.sort_unstable();
        rs.dedup();
        cs.sort_unstable();
        cs.dedup();
        // Kuhn–Munkres needs rows ≤ columns: transpose when needed.
        let transpose = rs.len() > cs.len();
        let (a, b) = if transpose { (&cs, &rs) } else { (&rs, &cs) };
        let mut m = Matrix::new(a.len(), b.len(), 0i64);
        for &(i, j, w) in &group {
            let (x, y) = if transpose { (j, i) } else { (i, j) };
            let (ai, bi) = (a.binary_search(&x).expect("in group"), b.binary_search(&y).expect("in group"));
            m[(ai, bi)] = w;
        }
        let (_, assignment) = kuhn_munkres(&m);
        for (ai, bi) in assignment.into_iter().enumerate() {
            if m[(ai, bi)] > 0 {
                let (x, y) = (a[ai], b[bi]);
                result.push(if transpose { (y, x) } else { (x, y) });
            }
        }
    }
    result
}

impl Tracker {
    /// A tracker with no tracks.
    pub fn new(config: TrackerConfig) -> Self {
        Self {
            config,
            tracks: Vec::new(),
            next_id: 1,
            now: None,
            r_pos: STD_POS * STD_POS,
            high: Vec::new(),
            recency: Vec::new(),
            low: Vec::new(),
        }
    }

    /// Live tracks (tentative, tracked and lost).
    pub fn live(&self) -> usize {
        self.tracks.len()
    }

    /// Removes the tracks unseen for longer than `max_lost_s` at time `t` (seconds), without a
    /// frame: for a camera that has sent no detections for a while.
    pub fn expire(&mut self, t: f64) {
        let cfg = self.config;
        let tentative_s = 1.5 * f64::from(cfg.frame_interval_s);
        self.tracks.retain(|tr| {
            let unseen = t - tr.last_seen;
            unseen <= f64::from(cfg.max_lost_s)
                && (tr.state != TrackState::Tentative || unseen <= tentative_s)
        });
    }

    /// Feeds the detections of the frame captured at `t` (seconds, any origin, increasing);
    /// `out` receives the confirmed tracks (tracked and lost).
    pub fn update(&mut self, t: f64, dets: &[Observation], out: &mut Vec<TrackOut>) {
        out.clear();
        let cfg = self.config;
        let interval = f64::from(cfg.frame_interval_s.max(1e-3));
        // Steps of the nominal interval since the last frame; a frame older than the last one
        // (never sent by the operator, which orders frames) is not predicted backwards.
        let steps = match self.now {
            Some(prev) => ((t - prev) / interval).clamp(0.0, f64::from(cfg.max_lost_s) / interval + 1.0),
            None => 1.0,
        } as f32;
        let t = self.now.map_or(t, |prev| prev.max(t));
        self.now = Some(t);
        // ByteTrack's velocity noise is per frame at 30 fps: a walker's velocity, in pixels per
        // frame, changes in proportion to the time between frames.
        let vel_scale = cfg.frame_interval_s * REFERENCE_FPS;
        for tr in &mut self.tracks {
            predict(tr, steps, vel_scale);
            tr.matched = false;
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
        let b = cfg.match_buffer;
        let buffered: Vec<[f32; 4]> = track_boxes.iter().map(|t| buffer(t, b)).collect();
        let high_boxes: Vec<[f32; 4]> = self.high.iter().map(|&i| buffer(&dets[i].bbox, b)).collect();
        let mut used = vec![false; dets.len()];
        // Tracks missed long enough take only a box on their prediction (a person entering
        // where another left is not the one who left).
        let strict = |ti: usize, hi: usize| {
            let tr = &self.tracks[ti];
            cfg.strict_after == 0
                || tr.misses < cfg.strict_after
                || iou(&track_boxes[ti], &dets[self.high[hi]].bbox) >= cfg.strict_iou
        };
        // A track's overlaps count for less the longer it has gone unseen: where a lost track
        // and a track seen a frame ago both overlap a box, the box is most likely the latter's.
        self.recency.clear();
        self.recency.extend(self.tracks.iter().map(|tr| match cfg.lost_decay_s {
            0.0 => 1.0,
            decay => (-(t - tr.last_seen) / f64::from(decay)).exp() as f32,
        }));
        let recency = &self.recency;
        let (tracks, high, r_pos) = (&self.tracks, &self.high, self.r_pos);
        let near = |ti: usize, hi: usize| {
            cfg.motion_gate <= 0.0
                || gate_distance(&tracks[ti], &dets[high[hi]].bbox, r_pos) <= cfg.motion_gate
        };
        // A track takes only a box of its own class: in the weights, so that a pair of two
        // classes never takes the place of a pair of one.
        let weight = |ti: usize, hi: usize| {
            let same = tracks[ti].class == dets[high[hi]].class;
            if same && strict(ti, hi) && near(ti, hi) { recency[ti] } else { 0.0 }
        };
        for (ti, hi) in assign_weighted(&buffered, &high_boxes, cfg.match_iou, weight) {
            let d = &dets[self.high[hi]];
            used[self.high[hi]] = true;
            let sample = correct(&mut self.tracks[ti], d, self.r_pos);
            self.learn(sample);
        }
        // 2. Active tracks still unmatched against the low-score detections.
        let rest: Vec<usize> = (0..self.tracks.len())
            .filter(|&i| !self.tracks[i].matched && self.tracks[i].state == TrackState::Tracked)
            .collect();
        let rest_boxes: Vec<[f32; 4]> = rest.iter().map(|&i| track_boxes[i]).collect();
        let low_boxes: Vec<[f32; 4]> = self.low.iter().map(|&i| dets[i].bbox).collect();
        let (tracks, low) = (&self.tracks, &self.low);
        let same = |ri: usize, li: usize| f32::from(u8::from(tracks[rest[ri]].class == dets[low[li]].class));
        for (ri, li) in assign_weighted(&rest_boxes, &low_boxes, cfg.low_match_iou, same) {
            let d = &dets[self.low[li]];
            used[self.low[li]] = true;
            let sample = correct(&mut self.tracks[rest[ri]], d, self.r_pos);
            self.learn(sample);
        }
        // 3. Unmatched tracks: lost (tentative ones are dropped at once), then removed.
        for tr in &mut self.tracks {
            if tr.matched {
                tr.hits += 1;
                tr.misses = 0;
                tr.last_seen = t;
                if tr.state != TrackState::Tentative || tr.hits >= cfg.confirm_frames {
                    tr.state = TrackState::Tracked;
                }
            } else {
                tr.hits = 0;
                if !dets.is_empty() {
                    tr.misses += 1;
                }
                if tr.state != TrackState::Tentative {
                    tr.state = TrackState::Lost;
                }
            }
        }
        let max_lost = f64::from(cfg.max_lost_s);
        // Unconfirmed tracks die at their first miss; lost tracks once unseen for `max_lost_s`.
        self.tracks
            .retain(|tr| (tr.matched || tr.state != TrackState::Tentative) && t - tr.last_seen <= max_lost);
        // 4. Births: unmatched high-score detections, then (when `birth_score` is below
        // `high_score`) unmatched weaker ones that no track already covers: a person half
        // hidden for a long time is seen only by weak boxes, and confirmation still stops a
        // single spurious one.
        let n_high = self.high.len();
        for k in 0..n_high + self.low.len() {
            let i = if k < n_high { self.high[k] } else { self.low[k - n_high] };
            let d = &dets[i];
            if used[i] || d.score < cfg.birth_score {
                continue;
            }
            if k >= n_high && self.tracks.iter().any(|t| iou(&to_tlwh(&t.mean), &d.bbox) > 0.5) {
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
            let cov =
                std::array::from_fn(|i| Block { pp: std[i] * std[i], pv: 0.0, vv: std[i + 4] * std[i + 4] });
            let state = if cfg.confirm_frames <= 1 { TrackState::Tracked } else { TrackState::Tentative };
            self.tracks.push(Track {
                id: self.next_id,
                class: d.class,
                mean,
                cov,
                state,
                hits: 1,
                misses: 0,
                last_seen: t,
                score: d.score,
                matched: true,
                birth: d.tag,
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
                birth: t.birth,
            });
        }
    }
}

impl Tracker {
    /// Folds one match's noise sample into the camera's estimate.
    fn learn(&mut self, sample: Option<f32>) {
        let rate = self.config.adapt_noise;
        if rate <= 0.0 {
            return;
        }
        if let Some(v) = sample {
            let v = v.min(9.0 * self.r_pos);
            self.r_pos = ((1.0 - rate) * self.r_pos + rate * v).clamp(STD_POS * STD_POS, R_MAX * R_MAX);
        }
    }
}

/// The most the learned measurement noise may reach (standard deviation, share of the box
/// height); the least is ByteTrack's fixed value, `STD_POS`.
const R_MAX: f32 = 0.2;

/// One coordinate's share of the state's covariance: the variances of its value (`pp`) and
/// velocity (`vv`) and their covariance (`pv`).
///
/// ByteTrack's filter is an 8 × 8 Kalman filter, but its motion couples each coordinate only
/// with its own velocity, and its process and measurement noise are diagonal: started from a
/// diagonal covariance, the covariance stays four independent 2 × 2 blocks through every
/// prediction and correction (a unit test checks this against the 8 × 8 matrix forms). So the
/// filter is kept as four two-state filters: about 40 operations per prediction and 30 per
/// correction, against some 500 for the matrix products, most of the tracker's time at 100
/// objects per frame.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Block {
    pp: f32,
    pv: f32,
    vv: f32,
}

/// Kalman prediction over `dt` nominal frame intervals with the constant-velocity model
/// (each coordinate moves by `dt` times its velocity), process noise ByteTrack's per interval
/// times `dt`, its velocity part's standard deviation times `vel_scale` (the interval in 30 fps
/// frames).
fn predict(t: &mut Track, dt: f32, vel_scale: f32) {
    if dt <= 0.0 {
        return;
    }
    let h = t.mean[3];
    let v = STD_VEL * h * vel_scale;
    let q = [[STD_POS * h, v], [STD_POS * h, v], [1e-2, 1e-5], [STD_POS * h, v]];
    for (i, (b, [qp, qv])) in t.cov.iter_mut().zip(q).enumerate() {
        t.mean[i] += dt * t.mean[i + 4];
        // F P Fᵀ + dt Q for F = [[1, dt], [0, 1]].
        b.pp += dt * (2.0 * b.pv + dt * b.vv) + dt * qp * qp;
        b.pv += dt * b.vv;
        b.vv += dt * qv * qv;
    }
}

/// The squared Mahalanobis distance of box `b`'s centre and height from a track's prediction,
/// under the prediction's covariance plus the measurement noise (`r_pos` in units of the
/// height squared); see [`TrackerConfig::motion_gate`].
fn gate_distance(t: &Track, b: &[f32; 4], r_pos: f32) -> f32 {
    let z = to_xyah(b);
    let r = r_pos * t.mean[3] * t.mean[3];
    [0, 1, 3].iter().map(|&i| (z[i] - t.mean[i]).powi(2) / (t.cov[i].pp + r)).sum()
}

/// Kalman correction with the observation of each coordinate's value (H = [I, 0]), coordinate
/// by coordinate (see [`Block`]).
fn correct(t: &mut Track, d: &Observation, r_pos: f32) -> Option<f32> {
    let h = t.mean[3];
    let h2 = h * h;
    // The aspect ratio is measured with the same relative noise as the box's size: ByteTrack's
    // fixed 0.1 is a quarter of a walker's aspect (about 0.4), so its filter kept the aspect a
    // track was born with, and a person cut by the frame's edge kept a whole person's width.
    let a = t.mean[2];
    let r = [r_pos * h2, r_pos * h2, r_pos * a * a, r_pos * h2];
    let z = to_xyah(&d.bbox);
    let innovation: [f32; 4] = std::array::from_fn(|i| z[i] - t.mean[i]);
    // The innovation's variance is the prediction's plus the measurement's: what is left of
    // its square once the prediction's variance is taken off is one sample of the noise.
    let sample = (t.state == TrackState::Tracked && h > 1.0).then(|| {
        [0, 1, 3].iter().map(|&i| innovation[i] * innovation[i] - t.cov[i].pp).sum::<f32>() / (3.0 * h2)
    });
    t.score = d.score;
    t.matched = true;
    for (i, (b, (y, r))) in t.cov.iter_mut().zip(innovation.into_iter().zip(r)).enumerate() {
        let s = b.pp + r;
        if s <= 0.0 || !s.is_finite() {
            continue;
        }
        let (kp, kv) = (b.pp / s, b.pv / s);
        t.mean[i] += kp * y;
        t.mean[i + 4] += kv * y;
        // P − K H P, with H P the block's first row (pp, pv).
        b.vv -= kv * b.pv;
        b.pp -= kp * b.pp;
        b.pv -= kp * b.pv;
    }
    sample
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn obs(x: f32, y: f32, score: f32) -> Observation {
        Observation { bbox: [x, y, 20.0, 50.0], score, class: 0, tag: 0 }
    }

    #[test]
    fn every_named_setting_is_set_within_its_range_and_refused_outside_it() {
        for setting in &TrackerConfig::SETTINGS {
            let name = setting.name;
            let mut c = TrackerConfig::default();
            c.set(name, 1.0).unwrap_or_else(|e| panic!("{name} = 1: {e}"));
            assert_ne!(c, TrackerConfig::default(), "{name} = 1 changed nothing");
            assert_eq!(setting.value(&c), 1.0, "{name} reads back what was set");
            for bad in [-1.0, f64::NAN, 1e6] {
                let e = c.set(name, bad).expect_err(name);
                assert_eq!(e.name, name);
                assert!(e.fix.starts_with("use "), "{e:?}");
            }
        }
        let mut c = TrackerConfig::default();
        assert!(c.set("confirm_frames", 2.5).is_err(), "frames are whole");
        assert!(c.set("confirm_frames", 0.0).is_err(), "a track needs one frame to be confirmed");
        c.set("max_lost_s", 30.0).unwrap();
        c.set("strict_after", 10.0).unwrap();
        assert_eq!((c.max_lost_s, c.strict_after), (30.0, 10));
        let e = c.set("frame_interval_s", 0.5).expect_err("not a user setting");
        assert!(!e.known && e.fix.contains("strict_iou"), "{e:?}");
        assert_eq!(e.to_string(), "frame_interval_s = 0.5 is not a tracker setting");
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
        // One box both rows overlap: it goes to the one whose overlap, weighted, is larger;
        // a pair weighted 0 is never matched.
        let rows = [[0.0, 0.0, 10.0, 10.0], [4.0, 0.0, 10.0, 10.0]];
        let col = [[1.0, 0.0, 10.0, 10.0]];
        assert_eq!(assign(&rows, &col, 0.2), [(0, 0)]);
        assert_eq!(assign_weighted(&rows, &col, 0.2, |r, _| if r == 0 { 0.5 } else { 1.0 }), [(1, 0)]);
        assert!(assign_weighted(&rows, &col, 0.2, |_, _| 0.0).is_empty());
    }

    #[test]
    fn two_crossing_walkers_keep_their_ids() {
        let mut tr = Tracker::new(TrackerConfig::default());
        let mut out = Vec::new();
        let mut ids = Vec::new();
        for f in 0..60 {
            let x = f as f32 * 4.0;
            // A walks right, B walks left, 30 px lower: they pass each other near frame 30.
            tr.update(f as f64 * 0.1, &[obs(x, 100.0, 0.9), obs(240.0 - x, 130.0, 0.9)], &mut out);
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
            tr.update(f as f64 * 0.1, &dets, &mut out);
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
        let mut tr = Tracker::new(TrackerConfig { max_lost_s: 0.5, ..TrackerConfig::default() });
        let mut out = Vec::new();
        tr.update(0.0, &[obs(10.0, 10.0, 0.95)], &mut out);
        assert!(out.is_empty(), "tentative tracks are not reported");
        tr.update(0.1, &[], &mut out);
        assert_eq!(tr.live(), 0, "an unconfirmed track dies at its first miss");
        for f in 2..5 {
            tr.update(f as f64 * 0.1, &[obs(10.0, 10.0, 0.95)], &mut out);
        }
        for f in 5..9 {
            tr.update(f as f64 * 0.1, &[], &mut out);
        }
        assert_eq!(tr.live(), 1, "lost for 0.4 s: kept");
        tr.update(1.0, &[], &mut out);
        assert_eq!(tr.live(), 0, "a lost track is removed once unseen for max_lost_s");
    }

    #[test]
    fn dropped_frames_are_predicted_over_their_real_gap() {
        // A walker at 8 px per 0.1 s; the camera drops 0.9 s of frames, which never reach the
        // tracker. Predicted by frames received, the track would be 64 px behind (no overlap
        // with a 20 px box) and the walker would get a new id; predicted by time, it keeps it.
        let mut tr = Tracker::new(TrackerConfig::default());
        let mut out = Vec::new();
        let mut ids = Vec::new();
        for f in (0..20).chain(29..40) {
            tr.update(f as f64 * 0.1, &[obs(f as f32 * 8.0, 50.0, 0.9)], &mut out);
            ids.extend(out.iter().map(|t| t.id));
        }
        ids.dedup();
        assert_eq!(ids, [1], "one identity across the gap");
        assert!((out[0].velocity[0] - 8.0).abs() < 1.0, "velocity per nominal frame: {:?}", out[0].velocity);
    }

    #[test]
    fn a_box_cut_by_the_frames_edge_narrows_the_track() {
        // A walker 40 px wide reaches the right edge at x = 640 and is cut by it: over 10
        // frames its box narrows to 16 px against the edge. The track's box follows (with
        // ByteTrack's fixed aspect noise it was still 30 px wide, reaching past the edge).
        let mut tr = Tracker::new(TrackerConfig::default());
        let mut out = Vec::new();
        for f in 0..28 {
            let x = 560.0 + 2.4 * f as f32;
            let w = (640.0 - x).clamp(16.0, 40.0);
            tr.update(
                f as f64 * 0.1,
                &[Observation { bbox: [x.min(624.0), 50.0, w, 100.0], score: 0.9, class: 0, tag: 0 }],
                &mut out,
            );
        }
        let b = out[0].bbox;
        assert!(b[2] < 22.0 && b[0] + b[2] < 646.0, "{b:?}");
    }

    #[test]
    fn a_box_both_overlap_goes_to_the_track_seen_last_unless_weighting_is_off() {
        // A stands at x = 100 and is seen twice; B stands at x = 112 and is seen throughout.
        // 1.4 s after A was last seen, one box at x = 105.5 overlaps A's prediction (buffered
        // IoU 0.63) more than B's (0.57). Weighted by A's time unseen (exp(-1.4 / 4) = 0.70),
        // it goes to B, who was there a frame ago; unweighted, A takes it and B is lost.
        let run = |lost_decay_s: f32| {
            let mut tr = Tracker::new(TrackerConfig { lost_decay_s, ..TrackerConfig::default() });
            let mut out = Vec::new();
            for f in 0..15 {
                let dets: Vec<Observation> = if f < 2 {
                    vec![obs(100.0, 0.0, 0.9), obs(112.0, 0.0, 0.9)]
                } else {
                    vec![obs(112.0, 0.0, 0.9)]
                };
                tr.update(f as f64 * 0.1, &dets, &mut out);
            }
            tr.update(1.5, &[obs(105.5, 0.0, 0.9)], &mut out);
            let tracked: Vec<u64> =
                out.iter().filter(|t| t.state == TrackState::Tracked).map(|t| t.id).collect();
            tracked
        };
        assert_eq!(run(TrackerConfig::default().lost_decay_s), [2], "B keeps the box");
        assert_eq!(run(0.0), [1], "unweighted, the lost track takes it");
    }

    #[test]
    fn a_quiet_camera_expires_its_lost_tracks_without_a_frame() {
        let mut tr = Tracker::new(TrackerConfig { max_lost_s: 2.0, ..TrackerConfig::default() });
        let mut out = Vec::new();
        for f in 0..5 {
            tr.update(f as f64 * 0.1, &[obs(10.0, 10.0, 0.95)], &mut out);
        }
        tr.expire(2.0);
        assert_eq!(tr.live(), 1);
        tr.expire(2.5);
        assert_eq!(tr.live(), 0, "unseen since 0.4 s: gone at 2.5 s");
    }

    proptest! {
        #[test]
        fn state_is_bounded_by_live_objects(frames in proptest::collection::vec(proptest::collection::vec((0.0f32..600.0, 0.0f32..300.0, 0.0f32..1.0), 0..30), 1..60)) {
            let cfg = TrackerConfig { max_lost_s: 1.0, ..TrackerConfig::default() };
            let mut tr = Tracker::new(cfg);
            let mut out = Vec::new();
            let mut recent: Vec<usize> = Vec::new();
            for (f, dets) in frames.iter().enumerate() {
                let obs: Vec<Observation> = dets.iter().map(|&(x, y, s)| obs(x, y, s)).collect();
                tr.update(f as f64 * 0.1, &obs, &mut out);
                recent.push(obs.len());
                let window = recent.iter().rev().take(10 + 2).sum::<usize>();
                prop_assert!(tr.live() <= window, "{} tracks from {window} recent detections", tr.live());
                let mut ids: Vec<u64> = out.iter().map(|t| t.id).collect();
                ids.sort_unstable();
                ids.dedup();
                prop_assert_eq!(ids.len(), out.len(), "ids are unique");
                prop_assert!(out.iter().all(|t| t.bbox.iter().all(|v| v.is_finite())));
            }
        }
    }
    /// Three walkers seen by a detector whose box centres scatter by `jitter` (a share of the
    /// box height); returns the tracker's learned noise (standard deviation, share of height)
    /// and the mean distance, pixels, of the reported box centres from the true ones.
    fn learned_noise(jitter: f32, adapt_noise: f32) -> (f32, f32) {
        let mut tr = Tracker::new(TrackerConfig { adapt_noise, ..TrackerConfig::default() });
        let mut out = Vec::new();
        let (mut error, mut n) = (0.0, 0);
        // A fixed xorshift: the test is the same every run.
        let mut state = 0x2545_f491_u32;
        let mut noise = || {
            let mut sum = 0.0;
            for _ in 0..12 {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                sum += state as f32 / u32::MAX as f32;
            }
            sum - 6.0 // about normal, variance 1
        };
        let truth = |f: usize, k: usize| (50.0 + f as f32 * 2.0, 100.0 + k as f32 * 150.0);
        for f in 0..300 {
            let dets: Vec<Observation> = (0..3)
                .map(|k| {
                    let (x, y) = truth(f, k);
                    obs(x + noise() * jitter * 50.0, y + noise() * jitter * 50.0, 0.9)
                })
                .collect();
            tr.update(f as f64 * 0.1, &dets, &mut out);
            for t in out.iter().filter(|t| f >= 100 && t.state == TrackState::Tracked) {
                let k = ((t.bbox[1] - 100.0) / 150.0).round().clamp(0.0, 2.0) as usize;
                let (x, y) = truth(f, k);
                error += (t.bbox[0] - x).hypot(t.bbox[1] - y);
                n += 1;
            }
        }
        (tr.r_pos.sqrt(), error / n as f32)
    }

    #[test]
    fn measurement_noise_is_learned_upwards_from_bytetracks_and_only_when_asked() {
        // A noisy detector (centres scattered by 12% of the height; heights exact) raises it
        // well above ByteTrack's 5%, and no further than the scatter over the three
        // coordinates, √(2/3) · 12% = 9.8% (the sample takes off the prediction's variance).
        let (noisy, smoothed) = learned_noise(0.12, 0.02);
        assert!((0.065..=0.098).contains(&noisy), "learned {noisy}");
        // With it the reported boxes are nearer the truth than with ByteTrack's fixed noise.
        let (fixed, raw) = learned_noise(0.12, 0.0);
        assert_eq!(fixed, STD_POS);
        assert!(smoothed < 0.95 * raw, "{smoothed} px from the truth, against {raw} px");
        // A clean detector leaves it at ByteTrack's.
        assert_eq!(learned_noise(0.01, 0.02).0, STD_POS);
    }
    /// Runs `frames` frames `dt` seconds apart through a tracker with `config`, each frame's
    /// boxes from `scene`; returns the ids of the tracked object the box `watched` picks out
    /// before frame `switch` (A) and from it on (B).
    fn ids_before_and_after(
        config: TrackerConfig,
        (frames, dt, switch): (u32, f64, u32),
        scene: impl Fn(u32) -> Vec<Observation>,
        watched: impl Fn(&[f32; 4]) -> bool,
    ) -> (u64, u64) {
        let mut tr = Tracker::new(config);
        let mut out = Vec::new();
        let (mut a, mut b) = (None, None);
        for f in 0..frames {
            tr.update(f64::from(f) * dt, &scene(f), &mut out);
            for t in out.iter().filter(|t| t.state == TrackState::Tracked && watched(&t.bbox)) {
                *(if f < switch { &mut a } else { &mut b }) = Some(t.id);
            }
        }
        (a.expect("A tracked"), b.expect("B tracked"))
    }

    #[test]
    fn a_box_goes_to_the_track_of_its_class_even_where_another_class_overlaps_it_more() {
        // A parked car (class 1) and a person (class 0) beside it; the car's box is missed in
        // the last frame, as the person steps towards it: the person's box now overlaps the
        // car's track more than their own.
        let at = |x: f32, class| Observation { bbox: [x, 100.0, 40.0, 100.0], score: 0.9, class, tag: 0 };
        let mut tr = Tracker::new(TrackerConfig::default());
        let mut out = Vec::new();
        for f in 0..10 {
            tr.update(f64::from(f) * 0.1, &[at(100.0, 1), at(130.0, 0)], &mut out);
        }
        let person = out.iter().find(|t| t.class == 0).expect("the person tracked").id;
        assert!(
            iou(&[112.0, 100.0, 40.0, 100.0], &[100.0, 100.0, 40.0, 100.0])
                > iou(&[112.0, 100.0, 40.0, 100.0], &[130.0, 100.0, 40.0, 100.0])
        );
        tr.update(1.0, &[at(112.0, 0)], &mut out);
        let tracked: Vec<(u64, u32)> =
            out.iter().filter(|t| t.state == TrackState::Tracked).map(|t| (t.id, t.class)).collect();
        assert_eq!(tracked, [(person, 0)], "the person keeps their track; the car's is lost");
    }

    #[test]
    fn a_newcomer_where_a_lost_track_left_gets_a_new_id() {
        // A walks slowly out at the right edge (x = 600) at frame 20; B walks in from there at
        // frame 34, the other way, while C (seen all along) keeps the frames from being empty.
        let scene = |f: u32| {
            let mut dets = vec![obs(100.0, 300.0, 0.9)];
            if f <= 20 {
                dets.push(obs(580.0 + f as f32, 100.0, 0.9));
            }
            if f >= 34 {
                dets.push(obs(600.0 - (f - 34) as f32, 100.0, 0.9));
            }
            dets
        };
        let run = |config| ids_before_and_after(config, (50, 0.1, 21), scene, |b| b[1] < 200.0);
        let (a, b) = run(TrackerConfig { max_lost_s: 3.0, strict_after: 10, ..TrackerConfig::default() });
        assert_ne!(a, b, "B took A's id");
        // Without the strict gate, A's lost track (predicted on, at the edge) takes B.
        let (a, b) = run(TrackerConfig { max_lost_s: 3.0, strict_after: 0, ..TrackerConfig::default() });
        assert_eq!(a, b, "the gate is what tells them apart");
    }

    #[test]
    fn a_taller_newcomer_beside_a_hidden_person_does_not_take_their_track() {
        // A (44 × 130 px) stands still for 20 frames, then is hidden; in that frame B, a fifth
        // taller, walks in 35 px to A's right (TUD-Stadtmitte's frames 70-77, simplified; their
        // boxes still overlap past the IoU gate). C, seen all along, keeps the frames from being
        // empty.
        let scene = |f: u32| {
            let person = |bbox| Observation { bbox, score: 0.9, class: 0, tag: 0 };
            let ab = if f < 20 { [565.0, 110.0, 44.0, 130.0] } else { [600.0, 108.0, 43.0, 160.0] };
            vec![person([100.0, 300.0, 40.0, 120.0]), person(ab)]
        };
        let run = |config| ids_before_and_after(config, (24, 0.04, 20), scene, |b| b[0] > 400.0);
        let config = TrackerConfig { frame_interval_s: 0.04, ..TrackerConfig::default() };
        let (a, b) = run(config);
        assert_ne!(a, b, "B took A's track");
        // The boxes overlap past the IoU gate: without the motion gate, B takes A's track.
        let (a, b) = run(TrackerConfig { motion_gate: 0.0, ..config });
        assert_eq!(a, b, "the motion gate is what tells them apart");
    }
}

#[cfg(test)]
mod assign_tests {
    use super::*;
    use proptest::prelude::*;

    /// The plain Hungarian over the whole matrix, for comparison.
    fn whole(rows: &[[f32; 4]], cols: &[[f32; 4]], min_iou: f32) -> i64 {
        if rows.is_empty() || cols.is_empty() {
            return 0;
        }
        let transpose = rows.len() > cols.len();
        let (r, c) = if transpose { (cols, rows) } else { (rows, cols) };
        let mut m = Matrix::new(r.len(), c.len(), 0i64);
        for i in 0..r.len() {
            for j in 0..c.len() {
                let v = iou(&r[i], &c[j]);
                m[(i, j)] = if v >= min_iou && v > 0.0 { (v * 1e6) as i64 } else { 0 };
            }
        }
        kuhn_munkres(&m).0
    }

    proptest! {
        #[test]
        fn grouped_assignment_is_as_good_as_the_whole_matrix(
            rows in proptest::collection::vec((0.0f32..200.0, 0.0f32..100.0, 5.0f32..40.0, 5.0f32..40.0), 0..25),
            cols in proptest::collection::vec((0.0f32..200.0, 0.0f32..100.0, 5.0f32..40.0, 5.0f32..40.0), 0..25),
        ) {
            let r: Vec<[f32; 4]> = rows.iter().map(|&(x, y, w, h)| [x, y, w, h]).collect();
            let c: Vec<[f32; 4]> = cols.iter().map(|&(x, y, w, h)| [x, y, w, h]).collect();
            let pairs = assign(&r, &c, 0.1);
            let total: i64 = pairs.iter().map(|&(i, j)| (iou(&r[i], &c[j]) * 1e6) as i64).sum();
            prop_assert_eq!(total, whole(&r, &c, 0.1));
            let mut rs: Vec<usize> = pairs.iter().map(|p| p.0).collect();
            let mut cs: Vec<usize> = pairs.iter().map(|p| p.1).collect();
            rs.sort_unstable();
            rs.dedup();
            cs.sort_unstable();
            cs.dedup();
            prop_assert_eq!(rs.len(), pairs.len(), "each row at most once");
            prop_assert_eq!(cs.len(), pairs.len(), "each column at most once");
        }
    }
}

#[cfg(test)]
mod kalman_tests {
    use super::*;
    use nalgebra::SMatrix;

    type Mat8 = SMatrix<f32, 8, 8>;
    type Mat4x8 = SMatrix<f32, 4, 8>;
    type Mat4 = SMatrix<f32, 4, 4>;

    /// The 8 × 8 covariance the blocks stand for.
    fn full(cov: &[Block; 4]) -> Mat8 {
        let mut m = Mat8::zeros();
        for (i, b) in cov.iter().enumerate() {
            m[(i, i)] = b.pp;
            m[(i, i + 4)] = b.pv;
            m[(i + 4, i)] = b.pv;
            m[(i + 4, i + 4)] = b.vv;
        }
        m
    }

    /// The per-coordinate prediction and correction equal the textbook 8 × 8 matrix forms, and
    /// what the matrix forms give off the blocks is zero (so the blocks lose nothing).
    #[test]
    fn block_forms_equal_the_matrix_forms() {
        let mut f = Mat8::identity();
        let mut hm = Mat4x8::zeros();
        for i in 0..4 {
            f[(i, i + 4)] = 1.0;
            hm[(i, i)] = 1.0;
        }
        let cov: [Block; 4] = std::array::from_fn(|i| Block {
            pp: 4.0 + i as f32,
            pv: 0.5 + 0.3 * i as f32,
            vv: 1.0 + 0.2 * i as f32,
        });
        let mean = Vec8::from_fn(|i, _| i as f32 + 1.0);
        let mut t = Track {
            id: 1,
            class: 0,
            mean,
            cov,
            state: TrackState::Tracked,
            hits: 1,
            misses: 0,
            last_seen: 0.0,
            score: 0.9,
            matched: false,
            birth: 0,
        };
        let mut long = t.clone();
        predict(&mut t, 1.0, 1.0);
        let h = mean[3];
        let q = [STD_POS * h, STD_POS * h, 1e-2, STD_POS * h, STD_VEL * h, STD_VEL * h, 1e-5, STD_VEL * h];
        let c = full(&cov);
        let want_cov =
            f * c * f.transpose() + Mat8::from_diagonal(&Vec8::from_iterator(q.iter().map(|s| s * s)));
        assert!((t.mean - f * mean).abs().max() < 1e-4);
        assert!((full(&t.cov) - want_cov).abs().max() < 1e-3, "{}", (full(&t.cov) - want_cov).abs().max());
        let (m0, c0) = (t.mean, full(&t.cov));
        let d = Observation { bbox: [1.0, 2.0, 3.0, 6.0], score: 0.8, class: 0, tag: 0 };
        correct(&mut t, &d, STD_POS * STD_POS);
        let (a, h) = (m0[2], m0[3]);
        let r = [STD_POS * h, STD_POS * h, STD_POS * a, STD_POS * h];
        let s = hm * c0 * hm.transpose()
            + Mat4::from_diagonal(&SVector::<f32, 4>::from_iterator(r.iter().map(|v| v * v)));
        let k = c0 * hm.transpose() * s.try_inverse().unwrap();
        let want_mean = m0 + k * (to_xyah(&d.bbox) - hm * m0);
        let want_cov = (Mat8::identity() - k * hm) * c0;
        assert!((t.mean - want_mean).abs().max() < 1e-3);
        assert!((full(&t.cov) - want_cov).abs().max() < 1e-2, "{}", (full(&t.cov) - want_cov).abs().max());
        // A gap of 2.5 intervals: F with 2.5 in its velocity blocks, 2.5 times the noise.
        predict(&mut long, 2.5, 1.0);
        let mut f = Mat8::identity();
        for i in 0..4 {
            f[(i, i + 4)] = 2.5;
        }
        let want_cov =
            f * c * f.transpose() + Mat8::from_diagonal(&Vec8::from_iterator(q.iter().map(|s| 2.5 * s * s)));
        assert!((long.mean - f * mean).abs().max() < 1e-4);
        assert!(
            (full(&long.cov) - want_cov).abs().max() < 1e-3,
            "{}",
            (full(&long.cov) - want_cov).abs().max()
        );
    }
}

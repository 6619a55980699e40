//! Configuration: a TOML file (or the embedded demo city) describing cameras, zones,
//! thresholds, sinks, retention, watchlist and rules.
//!
//! Parsing is strict: unknown keys are errors, and every error names the file, the line and
//! column, and the fix. Values are checked after parsing ([`Config::validate`]) with the span
//! serde recorded, so a negative fps or a two-point polygon is reported where it is written.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// The embedded demo city.
pub const DEFAULT_CITY: &str = include_str!("default_city.toml");

/// A configuration error: file, position, what, and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{column}: {what}; fix: {fix}")]
pub struct ConfigError {
    /// The file (`<embedded>` for the default city).
    pub file: String,
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
    /// What is wrong.
    pub what: String,
    /// How to fix it.
    pub fix: String,
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The city: seed, clock, frame rate.
    pub city: City,
    /// Engine settings.
    #[serde(default)]
    pub engine: Engine,
    /// Output.
    #[serde(default)]
    pub sinks: Sinks,
    /// Retention.
    #[serde(default)]
    pub retention: Retention,
    /// The psql endpoint.
    #[serde(default)]
    pub server: Server,
    /// Alert thresholds.
    #[serde(default)]
    pub thresholds: Thresholds,
    /// The simulated city's population.
    #[serde(default)]
    pub simulation: Simulation,
    /// Zones (ground polygons).
    #[serde(default)]
    pub zones: Vec<ZoneConfig>,
    /// Gate lines (ground segments).
    #[serde(default)]
    pub lines: Vec<LineConfig>,
    /// Watchlist entries.
    #[serde(default)]
    pub watchlist: Vec<WatchlistConfig>,
    /// A watchlist CSV loaded at start (relative to this file); its bad rows are refused, one
    /// by one, and the good ones load.
    #[serde(default)]
    pub watchlist_csv: Option<Spanned<PathBuf>>,
    /// SQL rules.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// psql accounts, each with its role (without any: `server.pg_user` is the one account, admin).
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// RTSP cameras; when there are any, `vigil run` ingests them instead of simulating.
    #[serde(default)]
    pub cameras: Vec<CameraConfig>,
    /// Models (ONNX Runtime, detector, face detector).
    #[serde(default)]
    pub models: Models,
    /// Tracker settings for every camera (a camera's own `tracker` overrides them).
    #[serde(default)]
    pub tracker: TrackerSection,
    /// Watchlist hits: fuzzy matching and verification.
    #[serde(default)]
    pub hits: HitsSection,
    /// Frame snapshots stored with alerts (off by default).
    #[serde(default)]
    pub snapshots: Snapshots,
    /// Where the file came from (set by the loader).
    #[serde(skip)]
    pub source: String,
    /// Directory relative paths are resolved against.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// The text the configuration was parsed from, to place errors found later (in rules).
    #[serde(skip)]
    pub text: String,
}

/// `[city]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct City {
    /// Name, for humans.
    #[serde(default = "default_name")]
    pub name: String,
    /// Seed of every random choice of the simulator.
    #[serde(default)]
    pub seed: u64,
    /// The simulated clock's start (RFC 3339, UTC).
    #[serde(default = "default_start")]
    pub start: Spanned<String>,
    /// Analytics frames per second per camera.
    pub fps: Spanned<f64>,
}

fn default_name() -> String {
    "city".into()
}

fn default_start() -> Spanned<String> {
    Spanned::new(0..0, "2026-06-14T20:00:00Z".into())
}

/// `[engine]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Engine {
    /// Timely worker threads.
    pub workers: Spanned<i64>,
    /// Lateness a source is allowed, ms.
    pub allowed_lateness_ms: Spanned<i64>,
    /// A source silent this long stops holding the watermark, ms.
    pub idle_timeout_ms: Spanned<i64>,
    /// Density window, seconds.
    pub density_window_s: Spanned<i64>,
    /// How often a density window is emitted, seconds (divides the window).
    pub density_step_s: Spanned<i64>,
    /// How often the cameras of a zone are fused into one snapshot, ms (divides the step).
    pub density_sample_ms: Spanned<i64>,
    /// Points of different cameras closer than this are one person, metres.
    pub fusion_radius_m: Spanned<f64>,
    /// Rows one rule may hold in its operators (estimated before, measured while it runs).
    pub rule_max_rows: Spanned<i64>,
    /// Rows all rules together may hold, by their estimates.
    pub rules_max_rows: Spanned<i64>,
    /// Rows per second one rule may emit.
    pub rule_max_rows_per_s: Spanned<i64>,
    /// Threads that decode camera video (0: one per core).
    pub decode_threads: Spanned<i64>,
}

impl Default for Engine {
    fn default() -> Self {
        Self {
            workers: Spanned::new(0..0, 1),
            allowed_lateness_ms: Spanned::new(0..0, 2_000),
            idle_timeout_ms: Spanned::new(0..0, 10_000),
            density_window_s: Spanned::new(0..0, 10),
            density_step_s: Spanned::new(0..0, 1),
            density_sample_ms: Spanned::new(0..0, 200),
            fusion_radius_m: Spanned::new(0..0, 0.5),
            rule_max_rows: Spanned::new(0..0, 2_000_000),
            rules_max_rows: Spanned::new(0..0, 8_000_000),
            rule_max_rows_per_s: Spanned::new(0..0, 1_000_000),
            decode_threads: Spanned::new(0..0, 0),
        }
    }
}

/// `[sinks]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sinks {
    /// Output root directory.
    pub out: PathBuf,
    /// Parquet partition length, seconds.
    pub partition_s: Spanned<i64>,
    /// Write the simulator's ground truth.
    pub ground_truth: bool,
    /// Seconds rows may wait in an open Parquet file before it is committed: what a SIGKILL
    /// or a crash can lose.
    pub commit_s: Spanned<i64>,
    /// While a stream's files cannot be written (a full disk), the most of its rows held in
    /// memory for a later write, MiB; beyond it the oldest are dropped.
    pub hold_mb: Spanned<i64>,
}

impl Default for Sinks {
    fn default() -> Self {
        Self {
            out: "vigil-out".into(),
            partition_s: Spanned::new(0..0, 60),
            ground_truth: true,
            commit_s: Spanned::new(0..0, 5),
            hold_mb: Spanned::new(0..0, 128),
        }
    }
}

/// `[retention]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Days data is kept, on disk and in memory (every class without its own period).
    pub days: Spanned<i64>,
    /// Hours data is kept, instead of `days` (below a day: tests, short events).
    pub hours: Option<Spanned<i64>>,
    /// Period of personal data (detections, tracks, plate reads, crossings, visits, snapshots,
    /// rules over them), such as `"6h"` or `"30d"`.
    pub personal: Option<Spanned<String>>,
    /// Period of aggregates (densities, the grid, camera health).
    pub aggregate: Option<Spanned<String>>,
    /// Period of records (alerts, late events, rules over them).
    pub record: Option<Spanned<String>>,
    /// Period of plate reads that match no watchlist entry (default `"24h"`): at most `hits`.
    pub reads: Option<Spanned<String>>,
    /// Period of watchlist hits and the reads that are their evidence (default `"30d"`): at
    /// most 90 days.
    pub hits: Option<Spanned<String>>,
    /// Seconds of events kept in memory, for rule backfill and ad-hoc queries over psql.
    pub memory_s: Spanned<i64>,
    /// At most this many MiB of events kept in memory; the oldest go first when it is reached.
    pub memory_mb: Spanned<i64>,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            days: Spanned::new(0..0, 7),
            hours: None,
            personal: None,
            aggregate: None,
            record: None,
            reads: None,
            hits: None,
            memory_s: Spanned::new(0..0, 600),
            memory_mb: Spanned::new(0..0, 4_096),
        }
    }
}

/// `[server]`: the psql endpoint.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Address the PostgreSQL endpoint listens on (`127.0.0.1:6875`); none by default.
    pub pg_listen: Option<Spanned<String>>,
    /// Address the HTTP endpoint (login, `/metrics`) listens on (`127.0.0.1:8080`); none by default.
    pub http_listen: Option<Spanned<String>>,
    /// The account's user name.
    pub pg_user: String,
    /// The environment variable holding the account's password (never in this file).
    pub pg_password_env: String,
    /// psql connections open at once.
    pub max_connections: Spanned<i64>,
    /// HTTP connections open at once (browsers keep several each, and one for the board's
    /// events); past it a new connection is answered 503.
    pub http_max_connections: Spanned<i64>,
    /// Seconds a connection has to log in.
    pub auth_timeout_s: Spanned<i64>,
    /// Memory an ad-hoc query may use, MiB.
    pub query_memory_mb: Spanned<i64>,
    /// Seconds an ad-hoc query may run.
    pub query_timeout_s: Spanned<i64>,
    /// The `TimeZone` psql sessions start in (`"Africa/Casablanca"`: instants print as Morocco's
    /// wall clock); `UTC` by default. A session may `SET TimeZone`.
    pub time_zone: Spanned<String>,
}

impl Default for Server {
    fn default() -> Self {
        Self {
            pg_listen: None,
            http_listen: None,
            pg_user: "vigil".into(),
            pg_password_env: "VIGIL_PG_PASSWORD".into(),
            max_connections: Spanned::new(0..0, 64),
            http_max_connections: Spanned::new(0..0, 256),
            auth_timeout_s: Spanned::new(0..0, 10),
            query_memory_mb: Spanned::new(0..0, 256),
            query_timeout_s: Spanned::new(0..0, 30),
            time_zone: Spanned::new(0..0, "UTC".into()),
        }
    }
}

/// `[thresholds]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// Default density alert threshold, persons per m².
    pub density_alert: Spanned<f64>,
    /// Default density below which a raised alert clears (default: 80% of the alert threshold).
    pub density_clear: Option<Spanned<f64>>,
    /// Seconds a density must stay past a threshold before an alert is raised or cleared.
    pub density_hold_s: Spanned<i64>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            density_alert: Spanned::new(0..0, 1.5),
            density_clear: None,
            density_hold_s: Spanned::new(0..0, 3),
        }
    }
}

/// `[hits]`: how plate reads match the watchlist and how people verify the hits.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HitsSection {
    /// Distinct people who must confirm a hit before it is actionable.
    pub confirmations: Spanned<i64>,
    /// The lowest match score that makes a hit: 1 exact, 0.9 after OCR confusions undone, 0.8
    /// with the letter unread, 0.7 with one edit on the serial (factors multiply).
    pub min_score: Spanned<f64>,
    /// How far back an entry added searches the reads (default: `retention.reads`, at most it).
    pub lookback: Option<Spanned<String>>,
}

impl Default for HitsSection {
    fn default() -> Self {
        Self { confirmations: Spanned::new(0..0, 2), min_score: Spanned::new(0..0, 0.75), lookback: None }
    }
}

/// `[simulation]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Simulation {
    /// Number of cameras.
    pub cameras: Spanned<i64>,
    /// Pedestrians walking in each camera's view.
    pub pedestrians_per_camera: Spanned<i64>,
    /// Vehicles passing each camera per minute.
    pub vehicles_per_minute: Spanned<f64>,
    /// Probability a detector misses an object in a frame.
    pub miss_rate: Spanned<f64>,
    /// Expected spurious boxes per frame.
    pub false_positive_rate: Spanned<f64>,
    /// Standard deviation of box position noise, pixels.
    pub position_noise_px: Spanned<f64>,
    /// Probability a plate read has an OCR error.
    pub ocr_error_rate: Spanned<f64>,
    /// Every n-th camera delivers its frames late (0: none).
    pub laggy_camera_every: Spanned<i64>,
    /// A crowd surge at a zone.
    pub surge: Option<Surge>,
    /// Cameras per shared scene: groups of this many consecutive cameras watch the same people
    /// from views shifted by `overlap_shift_m` (1: every camera has its own scene).
    pub overlap: Spanned<i64>,
    /// Shift between the views of one scene's cameras, metres along x.
    pub overlap_shift_m: Spanned<f64>,
    /// Plates of vehicles that pass a camera every 5 s, as the watchlist's do (listed or not).
    pub plates: Vec<Spanned<String>>,
}

impl Default for Simulation {
    fn default() -> Self {
        Self {
            cameras: Spanned::new(0..0, 50),
            pedestrians_per_camera: Spanned::new(0..0, 12),
            vehicles_per_minute: Spanned::new(0..0, 6.0),
            miss_rate: Spanned::new(0..0, 0.05),
            false_positive_rate: Spanned::new(0..0, 0.02),
            position_noise_px: Spanned::new(0..0, 3.0),
            ocr_error_rate: Spanned::new(0..0, 0.05),
            laggy_camera_every: Spanned::new(0..0, 10),
            surge: None,
            overlap: Spanned::new(0..0, 1),
            overlap_shift_m: Spanned::new(0..0, 6.0),
            plates: Vec::new(),
        }
    }
}

/// `[simulation.surge]`: people converging on a zone.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Surge {
    /// The zone's name.
    pub zone: Spanned<String>,
    /// Start, seconds after the clock's start.
    pub at_s: Spanned<f64>,
    /// Seconds to build up (and to disperse).
    pub ramp_s: Spanned<f64>,
    /// Seconds at full strength.
    pub hold_s: Spanned<f64>,
    /// People at full strength.
    pub people: Spanned<i64>,
}

/// `[[zones]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// Unique name.
    pub name: Spanned<String>,
    /// Camera whose view covers the zone (or `cameras`).
    pub camera: Option<Spanned<i64>>,
    /// Cameras whose views cover the zone; their people are fused.
    pub cameras: Option<Spanned<Vec<i64>>>,
    /// Ground polygon, metres, at least 3 points.
    pub polygon: Spanned<Vec<[f64; 2]>>,
    /// Alert threshold, persons per m² (default: `thresholds.density_alert`).
    pub alert_density: Option<Spanned<f64>>,
    /// Clear threshold, persons per m² (default: `thresholds.density_clear`).
    pub clear_density: Option<Spanned<f64>>,
}

impl ZoneConfig {
    /// The zone's cameras (`camera` or `cameras`; validated).
    pub fn camera_ids(&self) -> Vec<u32> {
        match (&self.camera, &self.cameras) {
            (Some(c), _) => vec![*c.get_ref() as u32],
            (None, Some(cs)) => cs.get_ref().iter().map(|&c| c as u32).collect(),
            (None, None) => Vec::new(),
        }
    }
}

/// `[[lines]]`: a gate line on the ground, counting tracks that cross it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineConfig {
    /// Unique name.
    pub name: Spanned<String>,
    /// The camera whose tracks are counted (each person once, however many cameras see them).
    pub camera: Spanned<i64>,
    /// One end, metres.
    pub from: Spanned<[f64; 2]>,
    /// The other end, metres.
    pub to: Spanned<[f64; 2]>,
    /// A ground point on the side a track enters: crossing towards it is `in`.
    pub in_side: Spanned<[f64; 2]>,
}

/// `[[users]]`: a psql account.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// User name.
    pub name: Spanned<String>,
    /// `analyst`, `crowd_manager`, `data_team`, `auditor` or `admin`.
    pub role: Spanned<String>,
    /// The environment variable holding the password (never in this file).
    pub password_env: Spanned<String>,
}

/// `[[watchlist]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchlistConfig {
    /// The plate, in any reading `plate::normalize` accepts.
    pub plate: Spanned<String>,
    /// Legal basis of the entry (required: no entry without one).
    pub legal_basis: Spanned<String>,
    /// When the entry stops matching, RFC 3339 (required: no entry is kept for ever).
    pub expires_at: Spanned<String>,
    /// Why the plate is listed.
    #[serde(default)]
    pub reason: String,
    /// The authority that asked for it.
    #[serde(default)]
    pub authority: String,
    /// Seconds after the start at which the entry is added (default: from the start).
    #[serde(default = "from_the_start")]
    pub active_from_s: Spanned<f64>,
}

fn from_the_start() -> Spanned<f64> {
    Spanned::new(0..0, 0.0)
}

/// `[[cameras]]`: an RTSP camera.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Camera id (the `camera_id` of its events; default: its position in the list).
    pub id: Option<Spanned<i64>>,
    /// Name, for humans.
    pub name: Option<String>,
    /// `rtsp://host:port/path`, without credentials.
    pub url: Spanned<String>,
    /// User name, if the camera needs credentials.
    pub user: Option<String>,
    /// Environment variable holding the password.
    pub password_env: Option<Spanned<String>>,
    /// File holding the password (first line), relative to this file.
    pub password_file: Option<Spanned<PathBuf>>,
    /// Analytics frames per second (default: city.fps).
    pub fps: Option<Spanned<f64>>,
    /// `auto`: use the camera's ONVIF analytics metadata when it sends any, else the detector;
    /// `model`: always decode the video for the detector.
    #[serde(default = "default_analytics")]
    pub analytics: Spanned<String>,
    /// Ground calibration: image points (pixels) and the ground points (metres) they show.
    pub calibration: Option<Spanned<Calibration>>,
    /// This camera's tracker settings, over `[tracker]`.
    pub tracker: Option<TrackerSection>,
}

/// `[tracker]`, and `tracker = { … }` on a camera: the multi-object tracker's settings, by the
/// names of `vigil_operators::tracker::TrackerConfig::SETTINGS` (whose defaults were chosen on
/// the tuning split of `scripts/track_eval.py`); unset ones keep their defaults. The Kalman
/// time step is the camera's frame interval (1 / its fps), not a setting.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(transparent)]
pub struct TrackerSection(std::collections::BTreeMap<Spanned<String>, Spanned<f64>>);

impl TrackerSection {
    /// `base` with the settings given here, each checked by [`TrackerConfig::set`] (the check
    /// `vigil track`'s flags go through). Err: the first refused, as (place, message, fix).
    ///
    /// [`TrackerConfig::set`]: vigil_operators::tracker::TrackerConfig::set
    pub fn apply(
        &self,
        base: vigil_operators::tracker::TrackerConfig,
        table: &str,
    ) -> Result<vigil_operators::tracker::TrackerConfig, (std::ops::Range<usize>, String, String)> {
        let mut config = base;
        for (name, value) in &self.0 {
            config.set(name.get_ref(), *value.get_ref()).map_err(|e| {
                // A name the tracker does not have is placed at the name, a value out of range
                // at the value.
                (if e.known { value.span() } else { name.span() }, format!("{table}.{e}"), e.fix)
            })?;
        }
        Ok(config)
    }
}

/// `calibration = { image = [[x, y], ...], ground = [[x, y], ...] }`: at least 4 pairs.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Image points, pixels.
    pub image: Vec<[f64; 2]>,
    /// The matching ground points, metres in the city frame.
    pub ground: Vec<[f64; 2]>,
}

fn default_analytics() -> Spanned<String> {
    Spanned::new(0..0, "auto".into())
}

/// `[models]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Models {
    /// `libonnxruntime.so.1.31.1` (default: `$ORT_DYLIB_PATH`, else the project's `.venv`).
    pub onnxruntime: Option<PathBuf>,
    /// The object detector cameras' frames go through.
    pub detector: Option<DetectorConfig>,
    /// The face detector used to blur snapshots.
    pub faces: Option<FacesConfig>,
    /// The plate reader: present, the detector's vehicles have their plates read.
    pub plates: Option<PlatesConfig>,
}

/// `[models.plates]`: plate detection, digits and the Arabic letter, on the detector's vehicles.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatesConfig {
    /// The detector's classes whose boxes are vehicles to read (default `["car"]`).
    #[serde(default = "default_vehicles")]
    pub vehicle_classes: Spanned<Vec<String>>,
    /// The plate detector (default: the project's `.models/platedet.onnx`).
    pub detector: Option<PathBuf>,
    /// The PP-OCR recognizer (default: the project's `.models/ppocr_rec.onnx`).
    pub text: Option<PathBuf>,
    /// The letter classifier (default: the project's `models/plates/letters.onnx`).
    pub letters: Option<PathBuf>,
    /// Lowest plate detection score (default 0.1: the search is inside a vehicle's box).
    #[serde(default = "default_plate_score")]
    pub min_score: Spanned<f64>,
    /// Lowest letter probability; below, the letter is unknown (default 0.6).
    #[serde(default = "default_letter_score")]
    pub letter_min_score: Spanned<f64>,
    /// Frames waiting to be read at most, one per camera (a camera's newer frame replaces its
    /// waiting one); when more cameras wait, the oldest frame is dropped (and counted).
    #[serde(default = "default_plate_queue")]
    pub queue: Spanned<i64>,
    /// The same plate from the same camera within this many seconds is one read (default 10).
    #[serde(default = "default_repeat")]
    pub repeat_s: Spanned<f64>,
    /// ONNX Runtime intra-op threads.
    #[serde(default = "default_threads")]
    pub threads: i64,
}

fn default_vehicles() -> Spanned<Vec<String>> {
    Spanned::new(0..0, vec!["car".into()])
}
fn default_plate_score() -> Spanned<f64> {
    Spanned::new(0..0, 0.1)
}
fn default_letter_score() -> Spanned<f64> {
    Spanned::new(0..0, 0.6)
}
fn default_plate_queue() -> Spanned<i64> {
    Spanned::new(0..0, 8)
}
fn default_repeat() -> Spanned<f64> {
    Spanned::new(0..0, 10.0)
}

/// `[models.detector]`: a YOLO export or an SSD-style graph, in ONNX.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    /// The `.onnx` file, relative to this file.
    pub path: Spanned<PathBuf>,
    /// Class names in the model's order (YOLO), or in the order of `class_ids` (SSD).
    pub classes: Spanned<Vec<String>>,
    /// SSD only: each class's label-map id (default 1, 2, …).
    #[serde(default)]
    pub class_ids: Option<Spanned<Vec<i64>>>,
    /// `auto`, `v5`, `v8` or `ssd`.
    #[serde(default = "default_layout")]
    pub layout: Spanned<String>,
    /// `[width, height]` frames are resized to when the graph's input size is not fixed
    /// (default 300 × 300, SSD300's size).
    #[serde(default)]
    pub input_size: Option<Spanned<Vec<i64>>>,
    /// Minimum confidence.
    #[serde(default = "default_score")]
    pub score_threshold: f32,
    /// Per-class minimum confidence.
    #[serde(default)]
    pub class_thresholds: std::collections::BTreeMap<String, f32>,
    /// NMS overlap.
    #[serde(default = "default_iou")]
    pub iou_threshold: f32,
    /// Frames per inference batch (across cameras).
    #[serde(default = "default_batch")]
    pub batch: Spanned<i64>,
    /// Longest wait for a batch to fill, ms.
    #[serde(default = "default_deadline")]
    pub deadline_ms: Spanned<i64>,
    /// Frames waiting for inference at most; beyond, the oldest are dropped (and counted).
    #[serde(default = "default_queue")]
    pub queue: Spanned<i64>,
    /// ONNX Runtime intra-op threads.
    #[serde(default = "default_threads")]
    pub threads: i64,
}

fn default_layout() -> Spanned<String> {
    Spanned::new(0..0, "auto".into())
}
fn default_score() -> f32 {
    0.25
}
fn default_iou() -> f32 {
    0.45
}
fn default_batch() -> Spanned<i64> {
    Spanned::new(0..0, 8)
}
fn default_deadline() -> Spanned<i64> {
    Spanned::new(0..0, 50)
}
fn default_queue() -> Spanned<i64> {
    Spanned::new(0..0, 32)
}
fn default_threads() -> i64 {
    1
}

/// `[models.faces]`: the face detector snapshots are blurred with.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FacesConfig {
    /// `centerface` (default) or `mtcnn`.
    pub detector: Option<Spanned<String>>,
    /// CenterFace's `.onnx` (default: the project's `.models/centerface.onnx`).
    pub path: Option<PathBuf>,
    /// MTCNN: directory with `pnet.onnx`, `rnet.onnx`, `onet.onnx` (default: the project's `.venv`).
    pub dir: Option<PathBuf>,
}

/// `[snapshots]`: a frame stored with each alert of a camera, faces blurred.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Snapshots {
    /// Store snapshots at all (default false: no frame ever reaches the disk).
    pub enabled: bool,
    /// At most one snapshot per camera in this many seconds.
    pub min_interval_s: Spanned<f64>,
}

impl Default for Snapshots {
    fn default() -> Self {
        Self { enabled: false, min_interval_s: Spanned::new(0..0, 10.0) }
    }
}

/// `[[rules]]`: inline SQL or a file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Rule name (inline rules).
    pub name: Option<String>,
    /// Inline SQL.
    pub sql: Option<Spanned<String>>,
    /// A `.sql` file, relative to the config file.
    pub path: Option<Spanned<PathBuf>>,
}

impl Config {
    /// Loads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = vigil_engine::text_file::read(path, "configuration", vigil_engine::text_file::SMALL)
            .map_err(|e| ConfigError {
                file: path.display().to_string(),
                line: 1,
                column: 1,
                what: format!("cannot read the file: {e}"),
                fix: "give the path of a readable TOML file".into(),
            })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, &path.display().to_string(), base)
    }

    /// The embedded demo city.
    pub fn embedded() -> Config {
        Self::parse(DEFAULT_CITY, "<embedded>", PathBuf::from("."))
            .expect("the embedded city is valid (tested)")
    }

    /// Parses and validates `text`; `file` names it in errors.
    pub fn parse(text: &str, file: &str, base_dir: PathBuf) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s.start));
            let what = e.message().trim().to_owned();
            // serde names a key that is not there as "missing field `name`".
            let fix = match what.strip_prefix("missing field `").and_then(|m| m.split('`').next()) {
                Some(key) => format!(
                    "add `{key}` to this table; README.md (\"Configuration\") lists every key, and testdata/stadium-gate.toml is a whole file"
                ),
                None => "correct or remove this key; README.md (\"Configuration\") lists every key".into(),
            };
            ConfigError { file: file.into(), line, column, what, fix }
        })?;
        config.source = file.into();
        config.base_dir = base_dir;
        config.text = text.to_owned();
        config.validate(text)?;
        Ok(config)
    }

    /// Checks values that parse but make no sense, reporting where they are written.
    pub fn validate(&self, text: &str) -> Result<(), ConfigError> {
        let err = |span: std::ops::Range<usize>, what: String, fix: &str| {
            let (line, column) = line_col(text, span.start);
            Err(ConfigError { file: self.source.clone(), line, column, what, fix: fix.into() })
        };
        let fps = &self.city.fps;
        if !(fps.get_ref().is_finite() && *fps.get_ref() > 0.0 && *fps.get_ref() <= 60.0) {
            return err(
                fps.span(),
                format!("city.fps = {} is not a frame rate", fps.get_ref()),
                "set a frame rate above 0 and at most 60, such as 10",
            );
        }
        for (l, key) in [(&self.server.pg_listen, "pg_listen"), (&self.server.http_listen, "http_listen")] {
            if let Some(l) = l
                && l.get_ref().parse::<std::net::SocketAddr>().is_err()
            {
                return err(
                    l.span(),
                    format!("server.{key} = {:?} is not an address", l.get_ref()),
                    "write an IP address and port, such as \"127.0.0.1:6875\" (port 0 picks a free one)",
                );
            }
        }
        if vigil_engine::time::parse_rfc3339(self.city.start.get_ref()).is_none() {
            return err(
                self.city.start.span(),
                format!("city.start = {:?} is not an RFC 3339 instant", self.city.start.get_ref()),
                "write an instant such as \"2026-06-14T20:00:00Z\"",
            );
        }
        let s = &self.simulation;
        let max_cameras = i64::from(vigil_operators::detection::EventId::MAX_CAMERA);
        // (value, key, least, most): whole-number settings and their ranges.
        let whole: [(&Spanned<i64>, &str, i64, i64); 27] = [
            (&self.hits.confirmations, "hits.confirmations", 1, 5),
            (&self.engine.workers, "engine.workers", 1, 64),
            (&self.engine.allowed_lateness_ms, "engine.allowed_lateness_ms", 0, 3_600_000),
            (&self.engine.idle_timeout_ms, "engine.idle_timeout_ms", 1, 3_600_000),
            (&self.engine.density_window_s, "engine.density_window_s", 1, 3_600),
            (&self.engine.density_step_s, "engine.density_step_s", 1, 3_600),
            (&self.engine.density_sample_ms, "engine.density_sample_ms", 10, 3_600_000),
            (&self.thresholds.density_hold_s, "thresholds.density_hold_s", 0, 3_600),
            (&s.overlap, "simulation.overlap", 1, 64),
            (&self.sinks.partition_s, "sinks.partition_s", 1, 86_400),
            (&self.sinks.commit_s, "sinks.commit_s", 1, 300),
            (&self.sinks.hold_mb, "sinks.hold_mb", 1, 65_536),
            (&self.engine.rule_max_rows, "engine.rule_max_rows", 1_000, 100_000_000),
            (&self.engine.rules_max_rows, "engine.rules_max_rows", 1_000, 1_000_000_000),
            (&self.engine.rule_max_rows_per_s, "engine.rule_max_rows_per_s", 100, 100_000_000),
            (&self.engine.decode_threads, "engine.decode_threads", 0, 256),
            (&self.server.max_connections, "server.max_connections", 1, 1_024),
            (&self.server.http_max_connections, "server.http_max_connections", 1, 4_096),
            (&self.server.auth_timeout_s, "server.auth_timeout_s", 1, 300),
            (&self.server.query_memory_mb, "server.query_memory_mb", 16, 16_384),
            (&self.server.query_timeout_s, "server.query_timeout_s", 1, 3_600),
            (&self.retention.days, "retention.days", 1, 90),
            (&self.retention.memory_s, "retention.memory_s", 0, 86_400),
            (&self.retention.memory_mb, "retention.memory_mb", 16, 1_048_576),
            (&s.cameras, "simulation.cameras", 1, max_cameras),
            (&s.pedestrians_per_camera, "simulation.pedestrians_per_camera", 0, 1_000),
            (&s.laggy_camera_every, "simulation.laggy_camera_every", 0, max_cameras),
        ];
        for (v, name, min, max) in whole {
            if !(min..=max).contains(v.get_ref()) {
                let fix = match name {
                    "retention.days" => format!(
                        "keep data from 1 to {max} days (CNDP deliberation 350-2013: at most 3 months)"
                    ),
                    "simulation.laggy_camera_every" => "use 0 (no laggy camera) or a positive number".into(),
                    _ => format!("use a whole number from {min} to {max}"),
                };
                return err(v.span(), format!("{name} = {} is out of range", v.get_ref()), &fix);
            }
        }
        for (v, name) in
            [(&s.miss_rate, "simulation.miss_rate"), (&s.ocr_error_rate, "simulation.ocr_error_rate")]
        {
            if !(0.0..=1.0).contains(v.get_ref()) {
                return err(
                    v.span(),
                    format!("{name} = {} is not a probability", v.get_ref()),
                    "use a number from 0 to 1",
                );
            }
        }
        // (value, key, most): each bounded so that memory and CPU per frame stay bounded.
        for (v, name, most) in [
            (&s.false_positive_rate, "simulation.false_positive_rate", 10.0),
            (&s.position_noise_px, "simulation.position_noise_px", 100.0),
            (&s.vehicles_per_minute, "simulation.vehicles_per_minute", 600.0),
            (&self.thresholds.density_alert, "thresholds.density_alert", 10.0),
        ] {
            if !(v.get_ref().is_finite() && (0.0..=most).contains(v.get_ref())) {
                return err(
                    v.span(),
                    format!("{name} = {} is out of range", v.get_ref()),
                    &format!("use a number from 0 to {most}"),
                );
            }
        }
        let zone = &self.server.time_zone;
        if vigil_sql::server::zone_name(zone.get_ref()).is_none() {
            return err(
                zone.span(),
                format!("server.time_zone = {:?} is not a time zone", zone.get_ref()),
                "name a zone of the IANA database, such as \"Africa/Casablanca\" (Morocco's clocks, Ramadan included) or \"UTC\"",
            );
        }
        if let Some(d) = self.models.faces.as_ref().and_then(|f| f.detector.as_ref())
            && !["centerface", "mtcnn"].contains(&d.get_ref().as_str())
        {
            return err(
                d.span(),
                format!("models.faces.detector = {:?} is unknown", d.get_ref()),
                "use \"centerface\" (the default) or \"mtcnn\"",
            );
        }
        let tracker_sections = std::iter::once(("tracker".to_string(), &self.tracker)).chain(
            self.cameras
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c.tracker.as_ref().map(|t| (format!("cameras[{i}].tracker"), t))),
        );
        for (table, section) in tracker_sections {
            if let Err((span, what, fix)) =
                section.apply(vigil_operators::tracker::TrackerConfig::default(), &table)
            {
                return err(span, what, &fix);
            }
        }
        let r = &self.retention;
        if let Some(h) = &r.hours
            && !(1..=90 * 24).contains(h.get_ref())
        {
            return err(
                h.span(),
                format!("retention.hours = {} is out of range", h.get_ref()),
                "keep data from 1 to 2160 hours (CNDP deliberation 350-2013: at most 3 months)",
            );
        }
        for (v, name) in [(&r.personal, "personal"), (&r.aggregate, "aggregate"), (&r.record, "record")] {
            let Some(v) = v else { continue };
            match parse_period(v.get_ref()) {
                Some(ms) if ms > 0 && ms <= 90 * 86_400_000 => {}
                Some(_) => {
                    return err(
                        v.span(),
                        format!("retention.{name} = {:?} is out of range", v.get_ref()),
                        "keep data at most 90 days (CNDP deliberation 350-2013: at most 3 months)",
                    );
                }
                None => {
                    return err(
                        v.span(),
                        format!("retention.{name} = {:?} is not a period", v.get_ref()),
                        "write a period such as \"6h\", \"30d\" or \"90m\"",
                    );
                }
            }
        }
        let ms = |v: &Spanned<String>, name: &str| match parse_period(v.get_ref()) {
            Some(ms) if ms > 0 => Ok(ms),
            _ => err(
                v.span(),
                format!("{name} = {:?} is not a period", v.get_ref()),
                "write a period such as \"6h\", \"30d\" or \"90m\"",
            )
            .map(|()| 0),
        };
        let reads = match &r.reads {
            Some(v) => (ms(v, "retention.reads")?, v.span()),
            None => (DEFAULT_READS_MS, 0..0),
        };
        let hits = match &r.hits {
            Some(v) => (ms(v, "retention.hits")?, v.span()),
            None => (DEFAULT_HITS_MS.max(reads.0), 0..0),
        };
        if hits.0 > 90 * 86_400_000 {
            return err(
                hits.1,
                "retention.hits is longer than 90 days".into(),
                "keep hits at most 90 days (CNDP deliberation 350-2013: at most 3 months)",
            );
        }
        let partition_ms = self.sinks.partition_s.get_ref() * 1000;
        if reads.0 < 2 * partition_ms {
            return err(
                if r.reads.is_some() { reads.1.clone() } else { self.sinks.partition_s.span() },
                format!(
                    "retention.reads is shorter than two Parquet partitions ({} s each)",
                    partition_ms / 1000
                ),
                "keep reads at least two partitions long, or shorten sinks.partition_s",
            );
        }
        if reads.0 > hits.0 {
            return err(
                if r.reads.is_some() { reads.1 } else { hits.1 },
                "retention.reads is longer than retention.hits".into(),
                "keep reads that match nothing no longer than hits (reads ≤ hits ≤ 90 days)",
            );
        }
        if let Some(l) = &self.hits.lookback
            && ms(l, "hits.lookback")? > reads.0
        {
            return err(
                l.span(),
                format!("hits.lookback = {:?} is longer than retention.reads", l.get_ref()),
                "search back at most as far as reads are kept",
            );
        }
        let score = *self.hits.min_score.get_ref();
        if !(score.is_finite() && score > 0.0 && score <= 1.0) {
            return err(
                self.hits.min_score.span(),
                format!("hits.min_score = {score} is out of range"),
                "use a score above 0 and at most 1, such as 0.75 (1: exact matches only, 0.7: one serial edit too)",
            );
        }
        for p in &s.plates {
            if let Err(e) = vigil_operators::plate::normalize(p.get_ref()) {
                return err(p.span(), e.to_string(), "write a plate such as \"12345-ب-6\"");
            }
        }
        let mut ids = std::collections::BTreeSet::new();
        for (i, c) in self.cameras.iter().enumerate() {
            let id = c.id.as_ref().map_or(i as i64, |v| *v.get_ref());
            if !(0..=max_cameras).contains(&id) || !ids.insert(id) {
                let span = c.id.as_ref().map_or(c.url.span(), |v| v.span());
                return err(
                    span,
                    format!("camera id {id} is out of range or used twice"),
                    &format!("give each camera a unique id from 0 to {max_cameras}"),
                );
            }
            match url::Url::parse(c.url.get_ref()) {
                Ok(u)
                    if u.scheme() == "rtsp"
                        && u.password().is_none()
                        && u.username().is_empty()
                        && u.host().is_some() => {}
                Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                    return err(
                        c.url.span(),
                        "the camera url carries credentials".into(),
                        "remove user:password@ from the url; set user and password_env (or password_file) instead",
                    );
                }
                _ => {
                    return err(
                        c.url.span(),
                        format!("{:?} is not an rtsp:// url", c.url.get_ref()),
                        "write the camera's stream as rtsp://host:port/path",
                    );
                }
            }
            if !["auto", "model"].contains(&c.analytics.get_ref().as_str()) {
                return err(
                    c.analytics.span(),
                    format!("analytics = {:?} is unknown", c.analytics.get_ref()),
                    "use \"auto\" (ONVIF metadata when the camera sends it) or \"model\"",
                );
            }
            if let Some(cal) = &c.calibration
                && [&cal.get_ref().image, &cal.get_ref().ground]
                    .iter()
                    .flat_map(|v| v.iter().flatten())
                    .any(|x| !(x.is_finite() && x.abs() <= MAX_COORD_M))
            {
                return err(
                    cal.span(),
                    format!("camera {id}: a calibration point lies beyond {MAX_COORD_M} (pixels or metres)"),
                    "give image points in pixels and ground points in site metres, within 100 km of the origin",
                );
            }
            if let Some(cal) = &c.calibration
                && let Err(e) =
                    vigil_operators::homography::Homography::fit(&cal.get_ref().image, &cal.get_ref().ground)
            {
                return err(
                    cal.span(),
                    format!("camera {id}: calibration: {e}"),
                    "measure at least 4 image↔ground point pairs spread over the view",
                );
            }
            if c.user.is_some() && c.password_env.is_none() && c.password_file.is_none() {
                return err(
                    c.url.span(),
                    "the camera has a user but no password source".into(),
                    "add password_env = \"VARIABLE\" or password_file = \"path\"",
                );
            }
            if let Some(fps) = &c.fps
                && !(fps.get_ref().is_finite() && *fps.get_ref() > 0.0 && *fps.get_ref() <= 60.0)
            {
                return err(
                    fps.span(),
                    format!("fps = {} is not a frame rate", fps.get_ref()),
                    "set a frame rate above 0 and at most 60",
                );
            }
        }
        if !self.cameras.is_empty() && self.models.detector.is_none() {
            return err(
                self.cameras[0].url.span(),
                "cameras need a detector".into(),
                "add a [models.detector] section with path and classes",
            );
        }
        if let Some(p) = &self.models.plates {
            let Some(d) = &self.models.detector else {
                return err(
                    p.vehicle_classes.span(),
                    "[models.plates] reads the vehicles a detector finds, and there is none".into(),
                    "add a [models.detector] section whose classes include a vehicle, or remove [models.plates]",
                );
            };
            if let Some(c) = p.vehicle_classes.get_ref().iter().find(|c| !d.classes.get_ref().contains(c)) {
                return err(
                    p.vehicle_classes.span(),
                    format!(
                        "vehicle class {c:?} is not one of the detector's classes {:?}",
                        d.classes.get_ref()
                    ),
                    "list classes of [models.detector], such as vehicle_classes = [\"car\"]",
                );
            }
            for (name, v) in [("min_score", &p.min_score), ("letter_min_score", &p.letter_min_score)] {
                if !(0.0..1.0).contains(v.get_ref()) {
                    return err(
                        v.span(),
                        format!("{name} = {} is not a probability", v.get_ref()),
                        "set a value from 0 to below 1",
                    );
                }
            }
            if !(1..=1024).contains(p.queue.get_ref()) {
                return err(
                    p.queue.span(),
                    format!("queue = {} frames", p.queue.get_ref()),
                    "set 1 to 1024 frames",
                );
            }
            if !(0.0..=3600.0).contains(p.repeat_s.get_ref()) {
                return err(
                    p.repeat_s.span(),
                    format!("repeat_s = {}", p.repeat_s.get_ref()),
                    "set 0 to 3600 seconds",
                );
            }
        }
        if let Some(d) = &self.models.detector {
            if d.layout.get_ref().parse::<vigil_models::detector::Layout>().is_err() {
                return err(
                    d.layout.span(),
                    format!("layout = {:?} is unknown", d.layout.get_ref()),
                    "use \"auto\", \"v5\", \"v8\" or \"ssd\"",
                );
            }
            if let Some(ids) = &d.class_ids
                && (ids.get_ref().len() != d.classes.get_ref().len()
                    || ids.get_ref().iter().any(|i| !(0..=100_000).contains(i)))
            {
                return err(
                    ids.span(),
                    format!(
                        "class_ids has {} ids for {} classes",
                        ids.get_ref().len(),
                        d.classes.get_ref().len()
                    ),
                    "give one label-map id (0 to 100000) per class, such as class_ids = [1, 3] for [\"person\", \"car\"] in COCO",
                );
            }
            if let Some(size) = &d.input_size
                && !matches!(size.get_ref().as_slice(), [w, h] if (16..=4096).contains(w) && (16..=4096).contains(h))
            {
                return err(
                    size.span(),
                    format!("input_size = {:?} is not [width, height]", size.get_ref()),
                    "give two whole numbers from 16 to 4096, such as input_size = [300, 300]",
                );
            }
            if d.classes.get_ref().is_empty() {
                return err(
                    d.classes.span(),
                    "no class names".into(),
                    "list the model's classes in order, such as [\"person\", \"car\"]",
                );
            }
            for (v, name, max) in [
                (&d.batch, "batch", 256),
                (&d.deadline_ms, "deadline_ms", 10_000),
                (&d.queue, "queue", 100_000),
            ] {
                if !(1..=max).contains(v.get_ref()) {
                    return err(
                        v.span(),
                        format!("models.detector.{name} = {} is out of range", v.get_ref()),
                        &format!("use a whole number from 1 to {max}"),
                    );
                }
            }
        }
        let e = &self.engine;
        if e.density_window_s.get_ref() % e.density_step_s.get_ref() != 0 {
            return err(
                e.density_step_s.span(),
                format!(
                    "engine.density_step_s = {} does not divide density_window_s = {}",
                    e.density_step_s.get_ref(),
                    e.density_window_s.get_ref()
                ),
                "use a step that divides the window, such as 1",
            );
        }
        if (e.density_step_s.get_ref() * 1000) % e.density_sample_ms.get_ref() != 0 {
            return err(
                e.density_sample_ms.span(),
                format!(
                    "engine.density_sample_ms = {} does not divide the step",
                    e.density_sample_ms.get_ref()
                ),
                "use a sample period that divides density_step_s, such as 200",
            );
        }
        let radius = *e.fusion_radius_m.get_ref();
        if !(radius.is_finite() && radius > 0.0 && radius <= 5.0) {
            return err(
                e.fusion_radius_m.span(),
                format!("engine.fusion_radius_m = {radius} is out of range"),
                "use metres above 0 and at most 5, such as 0.5 (people closer than this are one person)",
            );
        }
        let shift = *s.overlap_shift_m.get_ref();
        if !(shift.is_finite() && (0.0..=100.0).contains(&shift)) {
            return err(
                s.overlap_shift_m.span(),
                format!("simulation.overlap_shift_m = {shift} is out of range"),
                "use metres from 0 to 100",
            );
        }
        let valid_camera = |id: i64| {
            if self.cameras.is_empty() {
                (0..*s.cameras.get_ref()).contains(&id)
            } else {
                self.cameras
                    .iter()
                    .enumerate()
                    .any(|(i, c)| c.id.as_ref().map_or(i as i64, |v| *v.get_ref()) == id)
            }
        };
        let camera_fix = if self.cameras.is_empty() {
            format!("use a camera from 0 to {}", s.cameras.get_ref() - 1)
        } else {
            "use the id of a [[cameras]] entry".to_owned()
        };
        if self.zones.len() > vigil_operators::density::GRID_MAX_ZONES as usize {
            return err(
                self.zones[0].name.span(),
                format!("{} zones", self.zones.len()),
                "define at most 1,024 zones per city (or run one vigil per district)",
            );
        }
        let mut names = std::collections::BTreeSet::new();
        for z in &self.zones {
            if !names.insert(z.name.get_ref().clone()) {
                return err(
                    z.name.span(),
                    format!("zone {:?} is defined twice", z.name.get_ref()),
                    "give each zone a unique name",
                );
            }
            let (span, ids) = match (&z.camera, &z.cameras) {
                (Some(c), None) => (c.span(), vec![*c.get_ref()]),
                (None, Some(cs)) => (cs.span(), cs.get_ref().clone()),
                (Some(c), Some(_)) => {
                    return err(
                        c.span(),
                        format!("zone {:?} has both camera and cameras", z.name.get_ref()),
                        "give one camera (camera = 0) or the list of cameras that see the zone (cameras = [0, 1, 2])",
                    );
                }
                (None, None) => {
                    return err(
                        z.name.span(),
                        format!("zone {:?} has no camera", z.name.get_ref()),
                        "add camera = <id>, or cameras = [<id>, ...] when several cameras see the zone",
                    );
                }
            };
            if ids.is_empty() || ids.len() > 64 {
                return err(
                    span,
                    format!("zone {:?}: {} cameras", z.name.get_ref(), ids.len()),
                    "list 1 to 64 cameras",
                );
            }
            for (i, &id) in ids.iter().enumerate() {
                if !valid_camera(id) || ids[..i].contains(&id) {
                    return err(
                        span,
                        format!("zone {:?}: camera {id} does not exist or is listed twice", z.name.get_ref()),
                        &camera_fix,
                    );
                }
            }
            let poly = z.polygon.get_ref();
            if poly.iter().flatten().any(|c| !(c.is_finite() && c.abs() <= MAX_COORD_M)) {
                return err(
                    z.polygon.span(),
                    format!(
                        "zone {:?}: a point lies beyond {MAX_COORD_M} m of the site origin",
                        z.name.get_ref()
                    ),
                    "give site coordinates in metres, within 100 km of the origin",
                );
            }
            let bb = poly.iter().fold([f64::MAX, f64::MAX, f64::MIN, f64::MIN], |b, p| {
                [b[0].min(p[0]), b[1].min(p[1]), b[2].max(p[0]), b[3].max(p[1])]
            });
            let cells = ((bb[2].ceil() - bb[0].floor()) * (bb[3].ceil() - bb[1].floor())).abs();
            if cells > vigil_operators::density::GRID_MAX_CELLS as f64 {
                return err(
                    z.polygon.span(),
                    format!("zone {:?}: its bounding box covers {cells:.0} m²", z.name.get_ref()),
                    "split it into zones of at most 131,072 m² (the density grid names cells within a zone)",
                );
            }
            if poly.len() < 3 {
                return err(
                    z.polygon.span(),
                    format!("zone {:?}: polygon has {} point(s)", z.name.get_ref(), poly.len()),
                    "give at least 3 [x, y] points in metres, in order around the zone",
                );
            }
            if poly.iter().flatten().any(|c| !c.is_finite()) || polygon_area(poly) < 1e-6 {
                return err(
                    z.polygon.span(),
                    format!("zone {:?}: polygon has no area", z.name.get_ref()),
                    "give points that enclose an area (not all on one line)",
                );
            }
            if let Some(a) = &z.alert_density
                && !(*a.get_ref() > 0.0 && *a.get_ref() <= 10.0)
            {
                return err(
                    a.span(),
                    format!("zone {:?}: alert_density = {} is not a density", z.name.get_ref(), a.get_ref()),
                    "use persons per m² above 0 and at most 10, such as 2.15 (Fruin level E/F)",
                );
            }
            let alert =
                z.alert_density.as_ref().map_or(*self.thresholds.density_alert.get_ref(), |a| *a.get_ref());
            if let Some(c) = z.clear_density.as_ref().or(self.thresholds.density_clear.as_ref())
                && !(c.get_ref().is_finite() && *c.get_ref() >= 0.0 && *c.get_ref() < alert)
            {
                return err(
                    c.span(),
                    format!(
                        "zone {:?}: clear density {} is not below the alert density {alert}",
                        z.name.get_ref(),
                        c.get_ref()
                    ),
                    "use a density below the alert threshold, so that an alert does not flap (such as 80% of it)",
                );
            }
        }
        let mut line_names = std::collections::BTreeSet::new();
        for l in &self.lines {
            if !line_names.insert(l.name.get_ref().clone()) {
                return err(
                    l.name.span(),
                    format!("line {:?} is defined twice", l.name.get_ref()),
                    "give each line a unique name",
                );
            }
            if !valid_camera(*l.camera.get_ref()) {
                return err(
                    l.camera.span(),
                    format!("line {:?}: camera {} does not exist", l.name.get_ref(), l.camera.get_ref()),
                    &camera_fix,
                );
            }
            let (a, b, p) = (l.from.get_ref(), l.to.get_ref(), l.in_side.get_ref());
            if [a, b, p].iter().flat_map(|x| x.iter()).any(|c| !(c.is_finite() && c.abs() <= MAX_COORD_M)) {
                return err(
                    l.from.span(),
                    format!(
                        "line {:?}: a point lies beyond {MAX_COORD_M} m of the site origin",
                        l.name.get_ref()
                    ),
                    "give site coordinates in metres, within 100 km of the origin",
                );
            }
            let len = (b[0] - a[0]).hypot(b[1] - a[1]);
            if !(len.is_finite() && len >= 0.1) {
                return err(
                    l.to.span(),
                    format!("line {:?} is {len:.2} m long", l.name.get_ref()),
                    "give two different ends (metres), at least 0.1 m apart",
                );
            }
            let side = ((b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])) / len;
            if !side.is_finite() || side.abs() < 0.05 {
                return err(
                    l.in_side.span(),
                    format!("line {:?}: in_side lies on the line", l.name.get_ref()),
                    "give a ground point on the side people enter, away from the line",
                );
            }
        }
        if let Some(surge) = &s.surge {
            if !names.contains(surge.zone.get_ref()) {
                return err(
                    surge.zone.span(),
                    format!("surge zone {:?} is not defined", surge.zone.get_ref()),
                    "name a zone from a [[zones]] table",
                );
            }
            for (v, name, least, most) in [
                (&surge.at_s, "at_s", 0.0, 90.0 * 86_400.0),
                (&surge.ramp_s, "ramp_s", 1.0, 3_600.0),
                (&surge.hold_s, "hold_s", 0.0, 86_400.0),
            ] {
                if !(v.get_ref().is_finite() && (least..=most).contains(v.get_ref())) {
                    return err(
                        v.span(),
                        format!("simulation.surge.{name} = {} is out of range", v.get_ref()),
                        &format!("use seconds from {least} to {most}"),
                    );
                }
            }
            if *surge.people.get_ref() < 0 || *surge.people.get_ref() > 4_000 {
                return err(
                    surge.people.span(),
                    "simulation.surge.people is out of range".into(),
                    "use 0 to 4000 people",
                );
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for u in &self.users {
            if let Err(e) = u.role.get_ref().parse::<vigil_sql::roles::Role>() {
                return err(u.role.span(), e, "give each user one of the five roles");
            }
            let name = u.name.get_ref();
            if name.is_empty()
                || name.len() > 63
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return err(
                    u.name.span(),
                    format!("user name {name:?} is not usable"),
                    "use letters, digits and _ (at most 63)",
                );
            }
            if !names.insert(name.clone()) {
                return err(u.name.span(), format!("user {name} is given twice"), "give each account once");
            }
        }
        for w in &self.watchlist {
            if let Err(e) = vigil_operators::plate::normalize(w.plate.get_ref()) {
                return err(
                    w.plate.span(),
                    e.to_string(),
                    "write the plate as serial-letter-region, such as \"12345-ب-6\" or \"12345-B-6\"",
                );
            }
            if w.legal_basis.get_ref().trim().is_empty() {
                return err(
                    w.legal_basis.span(),
                    "watchlist entry without a legal basis".into(),
                    "state the legal basis (warrant, report number): law 09-08 requires one",
                );
            }
            if vigil_engine::time::parse_rfc3339(w.expires_at.get_ref()).is_none() {
                return err(
                    w.expires_at.span(),
                    format!("watchlist expires_at = {:?} is not a time", w.expires_at.get_ref()),
                    "give the expiry as RFC 3339, such as \"2026-09-30T00:00:00Z\"",
                );
            }
            let from = *w.active_from_s.get_ref();
            if !(0.0..=7_776_000.0).contains(&from) {
                return err(
                    w.active_from_s.span(),
                    format!("watchlist active_from_s = {from:?} is out of range"),
                    "use seconds from 0 to 7776000 (90 days) after the start",
                );
            }
        }
        let every = *self.snapshots.min_interval_s.get_ref();
        if !(0.1..=86_400.0).contains(&every) {
            return err(
                self.snapshots.min_interval_s.span(),
                format!("snapshots.min_interval_s = {every} is out of range"),
                "use seconds from 0.1 to 86400",
            );
        }
        for r in &self.rules {
            match (&r.sql, &r.path) {
                (Some(_), None) if r.name.is_some() => {}
                (None, Some(_)) => {}
                (Some(sql), None) => {
                    return err(
                        sql.span(),
                        "inline rule without a name".into(),
                        "add name = \"...\" to the rule",
                    );
                }
                _ => {
                    return err(
                        0..0,
                        "a [[rules]] entry needs either sql (with name) or path".into(),
                        "give sql = \"SELECT ...\" and name, or path = \"rules/x.sql\"",
                    );
                }
            }
        }
        Ok(())
    }

    /// The clock's start in milliseconds.
    pub fn start_ms(&self) -> i64 {
        vigil_engine::time::parse_rfc3339(self.city.start.get_ref()).unwrap_or(0)
    }
}

/// Maps a (line, column) inside an inline TOML string starting at byte `span_start` of `text`
/// to the file's own line and column (escapes in the string are not accounted for).
pub fn inline_position(text: &str, span_start: usize, line: u64, column: u64) -> (usize, usize) {
    let rest = text.get(span_start..).unwrap_or_default();
    let mut skip = if rest.starts_with("\"\"\"") || rest.starts_with("'''") { 3 } else { 1 };
    if skip == 3 && rest[3..].starts_with('\n') {
        skip += 1;
    }
    let (l0, c0) = line_col(text, span_start + skip);
    if line <= 1 { (l0, c0 + column as usize - 1) } else { (l0 + line as usize - 1, column as usize) }
}

/// How far from the site origin a zone or line may lie, metres: far enough for a city, near
/// enough that areas and grid cells stay exact.
pub const MAX_COORD_M: f64 = 100_000.0;

/// Default period of plate reads that match nothing: 24 hours.
pub const DEFAULT_READS_MS: i64 = 86_400_000;
/// Default period of hits: 30 days.
pub const DEFAULT_HITS_MS: i64 = 30 * 86_400_000;

/// A retention period (`"90m"`, `"6h"`, `"30d"`, `"45s"`) in milliseconds.
pub fn parse_period(s: &str) -> Option<i64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().ok()?;
    let unit_ms = match unit.trim() {
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(unit_ms)
}

fn polygon_area(p: &[[f64; 2]]) -> f64 {
    let n = p.len();
    ((0..n).map(|i| p[i][0] * p[(i + 1) % n][1] - p[(i + 1) % n][0] * p[i][1]).sum::<f64>() / 2.0).abs()
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "city.toml", PathBuf::new())
    }

    #[test]
    fn embedded_city_is_valid() {
        let c = Config::embedded();
        assert_eq!(*c.simulation.cameras.get_ref(), 50);
        assert!(c.zones.len() >= 2);
    }

    #[test]
    fn unknown_key_is_an_error_with_position() {
        let e = parse("[city]\nfps = 10.0\ncolour = \"red\"\n").unwrap_err();
        assert_eq!((e.line, e.column), (3, 1), "{e}");
        assert!(e.to_string().starts_with("city.toml:3:1: "), "{e}");
        assert!(e.what.contains("colour"), "{e}");
    }

    #[test]
    fn a_missing_key_is_to_be_added_not_removed() {
        let e = parse("[tracker]\nmotion_gate = 16.0\n").unwrap_err();
        assert!(e.what.contains("missing field `city`"), "{e}");
        assert!(e.fix.starts_with("add `city`"), "{e}");
        let e = parse("[city]\nfps = 10.0\ncolour = \"red\"\n").unwrap_err();
        assert!(e.fix.starts_with("correct or remove this key"), "{e}");
    }

    #[test]
    fn negative_fps_is_located() {
        let e = parse("[city]\nfps = -5.0\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 7), "{e}");
        assert!(e.to_string().contains("frame rate"), "{e}");
    }

    #[test]
    fn short_polygon_is_located() {
        let text =
            "[city]\nfps = 10.0\n[[zones]]\nname = \"z\"\ncamera = 0\npolygon = [[0.0, 0.0], [1.0, 1.0]]\n";
        let e = parse(text).unwrap_err();
        assert_eq!((e.line, e.column), (6, 11), "{e}");
        assert!(e.what.contains("2 point(s)"), "{e}");
        assert!(e.fix.contains("at least 3"), "{e}");
    }

    #[test]
    fn watchlist_needs_a_legal_basis_an_expiry_and_a_plate() {
        let base = "[city]\nfps = 10.0\n[[watchlist]]\n";
        let until = "expires_at = \"2026-09-01T00:00:00Z\"\n";
        let e = parse(&format!("{base}plate = \"12345-B-6\"\nlegal_basis = \" \"\n{until}")).unwrap_err();
        assert!(e.what.contains("legal basis"), "{e}");
        let e = parse(&format!("{base}plate = \"hello\"\nlegal_basis = \"x\"\n{until}")).unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        // No expiry: refused (serde names the missing key), and a wrong one is located.
        let e = parse(&format!("{base}plate = \"12345-B-6\"\nlegal_basis = \"x\"\n")).unwrap_err();
        assert!(e.what.contains("expires_at"), "{e}");
        let e = parse(&format!("{base}plate = \"12345-B-6\"\nlegal_basis = \"x\"\nexpires_at = \"soon\"\n"))
            .unwrap_err();
        assert!(e.line == 6 && e.fix.contains("RFC 3339"), "{e}");
    }

    #[test]
    fn retention_is_capped_at_three_months() {
        let e = parse("[city]\nfps = 10.0\n[retention]\ndays = 365\n").unwrap_err();
        assert!(e.fix.contains("CNDP"), "{e}");
    }

    #[test]
    fn values_that_would_exhaust_the_machine_are_refused_where_they_are_written() {
        let city = "[city]\nfps = 10.0\n";
        let zone = "[city]\nfps = 10.0\n[[zones]]\nname = \"z\"\ncamera = 0\n";
        // (text, line of the value, what the error says)
        let cases = [
            (
                "[simulation]\nfalse_positive_rate = 1e9\n",
                4,
                "false_positive_rate = 1000000000 is out of range",
            ),
            ("[simulation]\nposition_noise_px = 1e12\n", 4, "position_noise_px"),
            ("[sinks]\ncommit_s = 0\n", 4, "sinks.commit_s = 0 is out of range"),
            ("[server]\nmax_connections = 100000\n", 4, "server.max_connections"),
            ("[server]\nquery_memory_mb = 1000000\n", 4, "server.query_memory_mb"),
            ("[server]\nquery_timeout_s = 0\n", 4, "server.query_timeout_s"),
            ("[server]\nhttp_max_connections = 0\n", 4, "server.http_max_connections"),
            ("[server]\ntime_zone = \"+01:00\"\n", 4, "server.time_zone = \"+01:00\" is not a time zone"),
            ("[engine]\nworkers = 1000\n", 4, "engine.workers = 1000"),
            ("[engine]\ndecode_threads = -1\n", 4, "engine.decode_threads = -1 is out of range"),
            ("[snapshots]\nmin_interval_s = 0.0\n", 4, "snapshots.min_interval_s = 0 is out of range"),
            (
                "[[watchlist]]\nplate = \"12345-B-6\"\nlegal_basis = \"x\"\nexpires_at = \"2026-09-01T00:00:00Z\"\nactive_from_s = 1e300\n",
                7,
                "active_from_s = 1e300 is out of range",
            ),
        ];
        for (text, line, what) in cases {
            let e = parse(&format!("{city}{text}")).unwrap_err();
            assert_eq!(e.line, line, "{text}: {e}");
            assert!(e.what.contains(what), "{text}: {e}");
        }
        let e = parse(&format!("{zone}polygon = [[1e300, 0.0], [-1e300, 0.0], [0.0, 1e300]]\n")).unwrap_err();
        assert!(e.what.contains("beyond 100000 m") && e.line == 6, "{e}");
        let surge = format!(
            "{zone}polygon = [[0.0, 0.0], [5.0, 0.0], [5.0, 5.0]]\n[simulation.surge]\nzone = \"z\"\nat_s = 1.0\nramp_s = 0.0\nhold_s = 5.0\npeople = 10\n"
        );
        let e = parse(&surge).unwrap_err();
        assert!(e.what.contains("surge.ramp_s = 0 is out of range") && e.line == 10, "{e}");
    }

    #[test]
    fn files_that_are_not_configurations_are_refused_without_quoting_them() {
        let e = Config::load(Path::new("/dev/zero")).unwrap_err();
        assert!(e.what.contains("not a regular file"), "{e}");
        let dir = std::env::temp_dir().join(format!("vigil-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret.toml");
        std::fs::write(&secret, "rootpassword hunter2\n").unwrap();
        let e = Config::load(&secret).unwrap_err().to_string();
        assert!(!e.contains("hunter2") && !e.contains("rootpassword"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\nبc", 5), (2, 2));
    }

    proptest::proptest! {
        /// The commented example city with one value replaced by a hostile one, or cut short
        /// anywhere: accepted, or refused at a line of the file with a fix; never a panic.
        #[test]
        fn hostile_values_get_a_placed_answer(
            pick in 0usize..1_000,
            value in proptest::sample::select(&[
                "0", "-1", "1e300", "-1e300", "nan", "inf", "-inf", "9223372036854775807", "-9223372036854775808",
                "4294967296", "1e-300", "\"\"", "\"x\"", "[]", "[[1e300, 0.0]]", "{}", "true",
            ][..]),
            cut in proptest::option::of(0usize..20_000),
        ) {
            let text = include_str!("default_city.toml");
            let settable: Vec<usize> = text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim_start().starts_with('#') && l.contains(" = "))
                .map(|(i, _)| i)
                .collect();
            let target = settable[pick % settable.len()];
            let mut edited: String = text
                .lines()
                .enumerate()
                .map(|(i, l)| {
                    if i == target { format!("{} = {value}\n", l.split(" = ").next().unwrap_or(l)) } else { format!("{l}\n") }
                })
                .collect();
            if let Some(cut) = cut {
                edited.truncate(edited.floor_char_boundary(cut.min(edited.len())));
            }
            let result = parse(&edited);
            // No setting takes a value that is not finite or beyond any machine's range.
            if cut.is_none() && ["nan", "inf", "-inf", "1e300", "-1e300"].contains(&value) {
                proptest::prop_assert!(result.is_err(), "line {}: {value} accepted", target + 1);
            }
            if let Err(e) = result {
                let lines = edited.lines().count().max(1);
                proptest::prop_assert!((1..=lines + 1).contains(&e.line), "{e} (file of {lines} lines)");
                proptest::prop_assert!(e.column >= 1 && !e.fix.trim().is_empty(), "{e}");
            }
        }
    }
}

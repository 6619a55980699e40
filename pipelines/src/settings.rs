//! Settings: the configuration checked once and turned into the types the engine uses.
//!
//! [`Config`] is the file as written (every value with its place, for errors);
//! [`Settings::from_config`] validates it (errors name file, line, column and the fix) and
//! converts it once: zones and lines as the operators take them, watchlist plates normalized,
//! durations in milliseconds, cameras with parsed URLs and fitted calibrations. Nothing after
//! this step reads the raw file or re-checks it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use vigil_engine::stream::{Class, StreamDef, StreamInfo};
use vigil_engine::time::Millis;
use vigil_operators::flows::GateLine;
use vigil_operators::hits::Hits;
use vigil_operators::homography::Homography;
use vigil_operators::plate::PlateReads;
use vigil_operators::watchlist::WatchEntry;
use vigil_operators::zones::Zone;

use crate::config::{Config, ConfigError, line_col};

/// The engine's settings.
#[derive(Clone, Debug)]
pub struct EngineSettings {
    /// Timely worker threads.
    pub workers: usize,
    /// What rules may cost.
    pub rule_budget: vigil_sql::admission::Budget,
    /// Lateness a source is allowed, ms.
    pub allowed_lateness_ms: Millis,
    /// A source silent this long stops holding the watermark, ms.
    pub idle_timeout_ms: Millis,
    /// Density window, step and sample period, ms.
    pub density_window_ms: Millis,
    /// How often a density window is emitted, ms.
    pub density_step_ms: Millis,
    /// How often a zone's cameras are fused, ms.
    pub density_sample_ms: Millis,
    /// Points of different cameras closer than this are one person, metres.
    pub fusion_radius_m: f64,
    /// How long a density must stay past a threshold to raise or clear an alert, ms.
    pub density_hold_ms: Millis,
    /// Threads that decode camera video (0: one per core).
    pub decode_threads: usize,
}

/// Retention: how long each class of data is kept, on disk and in memory.
#[derive(Clone, Debug)]
pub struct RetentionSettings {
    /// Period per class, ms (`[retention] days`, or the class's own key).
    pub periods: BTreeMap<Class, Millis>,
    /// Events kept in memory for backfill and psql queries, ms.
    pub memory_ms: Millis,
    /// At most this much memory for them, bytes.
    pub memory_bytes: usize,
    /// Period of plate reads that match nothing, ms (`[retention] reads`).
    pub reads_ms: Millis,
    /// Period of hits and their evidence, ms (`[retention] hits`).
    pub hits_ms: Millis,
}

impl RetentionSettings {
    /// The period of `class`, ms.
    pub fn period(&self, class: Class) -> Millis {
        self.periods.get(&class).copied().unwrap_or(90 * 86_400_000)
    }

    /// The period of a stream: plate reads and hits have their own (`[retention] reads` and
    /// `hits`), every other stream its class's.
    pub fn stream_period(&self, info: &StreamInfo) -> Millis {
        match info.name {
            n if n == PlateReads::NAME => self.reads_ms,
            n if n == Hits::NAME => self.hits_ms,
            _ => self.period(info.class),
        }
    }
}

/// The psql endpoint.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Where it listens, if anywhere.
    pub pg_listen: Option<String>,
    /// The HTTP endpoint's address, if it is served.
    pub http_listen: Option<String>,
    /// The account's user name.
    pub pg_user: String,
    /// The environment variable holding the account's password.
    pub pg_password_env: String,
    /// The accounts with roles: (user, role, password variable). Empty: `pg_user` is the one
    /// account, admin.
    pub users: Vec<(String, vigil_sql::roles::Role, String)>,
    /// Connection limit and login timeout.
    pub edge: vigil_sql::server::Edge,
    /// HTTP connections open at once.
    pub http_max_connections: usize,
    /// What one statement or ad-hoc query may cost.
    pub limits: vigil_sql::limits::Limits,
}

/// Where a rule comes from.
#[derive(Clone, Debug)]
pub enum RuleSource {
    /// SQL written in the configuration file; `at` is where its text starts there.
    Inline {
        /// The rule's name.
        name: String,
        /// Its SQL.
        sql: String,
        /// Byte offset of the string in the configuration file.
        at: usize,
    },
    /// A `.sql` file.
    File(PathBuf),
}

/// Where a camera's password is read from.
#[derive(Clone, Debug)]
pub enum PasswordSource {
    /// An environment variable.
    Env(String),
    /// The first line of a file.
    File(PathBuf),
}

/// One RTSP camera.
#[derive(Clone, Debug)]
pub struct CameraSettings {
    /// Its id (`camera_id`).
    pub id: u32,
    /// Its name.
    pub name: String,
    /// Its stream.
    pub url: url::Url,
    /// User and password source, if it needs credentials.
    pub credentials: Option<(String, PasswordSource)>,
    /// Analytics frames per second.
    pub fps: f64,
    /// Use the camera's ONVIF analytics when it sends them.
    pub onvif: bool,
    /// Its ground calibration.
    pub calibration: Option<Homography>,
}

/// The plate reader (`[models.plates]`); model paths default to the project's installed ones.
#[derive(Clone, Debug)]
pub struct PlateSettings {
    /// Detector classes whose boxes are vehicles.
    pub vehicle_classes: Vec<String>,
    /// Plate detector, if not the default.
    pub detector: Option<PathBuf>,
    /// PP-OCR recognizer, if not the default.
    pub text: Option<PathBuf>,
    /// Letter classifier, if not the default.
    pub letters: Option<PathBuf>,
    /// Lowest plate score.
    pub min_score: f32,
    /// Lowest letter probability.
    pub letter_min_score: f32,
    /// Frames waiting at most.
    pub queue: usize,
    /// One read per plate and camera in this window.
    pub repeat_ms: i64,
    /// Intra-op threads.
    pub threads: usize,
}

impl PlateSettings {
    /// The models' configuration: given paths, else those installed above the working
    /// directory or the executable.
    pub fn models(&self) -> anyhow::Result<vigil_models::plates::PlateConfig> {
        let here = std::env::current_dir()?;
        let exe = std::env::current_exe().ok();
        let found = vigil_models::plates::PlateConfig::locate(&here)
            .or_else(|| exe.as_deref().and_then(vigil_models::plates::PlateConfig::locate));
        let need = |given: &Option<PathBuf>,
                    pick: fn(&vigil_models::plates::PlateConfig) -> &PathBuf,
                    what: &str| {
            given.clone().or_else(|| found.as_ref().map(|f| pick(f).clone())).ok_or_else(|| {
                anyhow::anyhow!(
                    "[models.plates]: no {what} given and none installed; fix: run scripts/setup-models, or set {what} = \"…\""
                )
            })
        };
        Ok(vigil_models::plates::PlateConfig {
            detector: need(&self.detector, |f| &f.detector, "detector")?,
            text: need(&self.text, |f| &f.text, "text")?,
            letters: need(&self.letters, |f| &f.letters, "letters")?,
            min_score: self.min_score,
            letter_min_score: self.letter_min_score,
            threads: self.threads,
        })
    }
}

/// The detector cameras' frames go through.
#[derive(Clone, Debug)]
pub struct DetectorSettings {
    /// The `.onnx` file.
    pub path: PathBuf,
    /// Class names in the model's order.
    pub classes: Vec<String>,
    /// SSD label-map ids of the classes.
    pub class_ids: Option<Vec<i64>>,
    /// Graph family and output layout.
    pub layout: vigil_models::detector::Layout,
    /// Resize target when the graph's input size is not fixed.
    pub input_size: Option<(u32, u32)>,
    /// Minimum confidence.
    pub score_threshold: f32,
    /// Per-class minimum confidence.
    pub class_thresholds: BTreeMap<String, f32>,
    /// NMS overlap.
    pub iou_threshold: f32,
    /// Frames per batch.
    pub batch: usize,
    /// Longest wait for a batch, ms.
    pub deadline_ms: u64,
    /// Frames waiting at most.
    pub queue: usize,
    /// Intra-op threads.
    pub threads: usize,
}

/// Everything a run needs, checked; see the module documentation.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The file it came from (`<embedded>` for the demo city).
    pub source: String,
    /// Relative paths are resolved against this.
    pub base_dir: PathBuf,
    /// The configuration's text (to place errors in inline rules).
    pub text: String,
    /// The city's name.
    pub name: String,
    /// The simulator's seed.
    pub seed: u64,
    /// The clock's start, ms (the simulated city's; live cameras run on the wall clock).
    pub start_ms: Millis,
    /// Analytics frames per second per camera.
    pub fps: f64,
    /// Engine settings.
    pub engine: EngineSettings,
    /// Output root.
    pub out: PathBuf,
    /// Parquet partition length, ms.
    pub partition_ms: Millis,
    /// How long rows may wait in an open Parquet file (what a crash can lose).
    pub commit: std::time::Duration,
    /// The most bytes of rows each sink holds while its writes fail.
    pub hold_bytes: usize,
    /// Write the simulator's ground truth.
    pub ground_truth: bool,
    /// Retention.
    pub retention: RetentionSettings,
    /// The psql endpoint.
    pub server: ServerSettings,
    /// The zones, ids from 1.
    pub zones: Vec<Zone>,
    /// The gate lines, ids from 1.
    pub lines: Vec<GateLine>,
    /// Watchlist entries of the configuration and when they become active, ms after the start
    /// (their `valid_from` is set from it when the run starts).
    pub watchlist: Vec<(Millis, WatchEntry)>,
    /// A watchlist CSV to load at start.
    pub watchlist_csv: Option<PathBuf>,
    /// The rules.
    pub rules: Vec<RuleSource>,
    /// Live cameras (none: the city is simulated).
    pub cameras: Vec<CameraSettings>,
    /// Tracker settings, per camera.
    pub tracker: vigil_operators::tracker::TrackerConfigs,
    /// Watchlist matching and hit verification.
    pub hits: vigil_operators::hits::HitConfig,
    /// The ONNX Runtime library, if given.
    pub onnxruntime: Option<PathBuf>,
    /// The detector, if any.
    pub detector: Option<DetectorSettings>,
    /// The plate reader, if configured.
    pub plates: Option<PlateSettings>,
    /// The MTCNN directory, if given.
    pub faces_dir: Option<PathBuf>,
    /// Snapshots' face detector: MTCNN instead of CenterFace.
    pub faces_mtcnn: bool,
    /// CenterFace's model, if given.
    pub faces_path: Option<PathBuf>,
    /// Store blurred snapshots with alerts.
    pub snapshots: bool,
    /// At most one snapshot per camera this often, seconds.
    pub snapshot_interval_s: f64,
    /// The simulated city.
    pub sim: crate::sim::SimParams,
}

impl Settings {
    /// Validates `config` and converts it.
    pub fn from_config(config: &Config) -> Result<Settings, ConfigError> {
        config.validate(&config.text)?;
        let err = |span: std::ops::Range<usize>, what: String, fix: &str| {
            let (line, column) = line_col(&config.text, span.start);
            ConfigError { file: config.source.clone(), line, column, what, fix: fix.into() }
        };
        let t = &config.thresholds;
        let zones: Vec<Zone> = config
            .zones
            .iter()
            .enumerate()
            .map(|(i, z)| {
                let alert_density =
                    z.alert_density.as_ref().map_or(*t.density_alert.get_ref(), |a| *a.get_ref());
                let clear_density = z
                    .clear_density
                    .as_ref()
                    .or(t.density_clear.as_ref())
                    .map_or(alert_density * 0.8, |c| *c.get_ref());
                Zone {
                    id: i as u32 + 1,
                    name: z.name.get_ref().clone(),
                    cameras: z.camera_ids(),
                    polygon: z.polygon.get_ref().clone(),
                    alert_density,
                    clear_density,
                }
            })
            .collect();
        let lines = config
            .lines
            .iter()
            .enumerate()
            .map(|(i, l)| GateLine {
                id: i as u32 + 1,
                name: l.name.get_ref().clone(),
                camera: *l.camera.get_ref() as u32,
                from: *l.from.get_ref(),
                to: *l.to.get_ref(),
                in_side: *l.in_side.get_ref(),
            })
            .collect();
        let mut watchlist = Vec::new();
        for w in &config.watchlist {
            let plate = vigil_operators::plate::normalize(w.plate.get_ref())
                .map_err(|e| err(w.plate.span(), e.to_string(), "write the plate as serial-letter-region"))?;
            let expires_at = vigil_engine::time::parse_rfc3339(w.expires_at.get_ref())
                .ok_or_else(|| err(w.expires_at.span(), "expires_at is not a time".into(), "use RFC 3339"))?;
            // `valid_from` is the run's start plus the offset, set when the run starts.
            let entry = WatchEntry {
                plate,
                reason: w.reason.clone(),
                legal_basis: w.legal_basis.get_ref().clone(),
                authority: w.authority.clone(),
                added_by: "config".into(),
                valid_from: 0,
                expires_at,
            };
            watchlist.push(((*w.active_from_s.get_ref() * 1000.0) as Millis, entry));
        }
        watchlist.sort_by_key(|(t, _)| *t);
        let rules = config
            .rules
            .iter()
            .map(|r| match (&r.sql, &r.path, &r.name) {
                (Some(sql), _, Some(name)) => Ok(RuleSource::Inline {
                    name: name.clone(),
                    sql: sql.get_ref().clone(),
                    at: sql.span().start,
                }),
                (_, Some(path), _) => Ok(RuleSource::File(config.base_dir.join(path.get_ref()))),
                _ => {
                    Err(err(0..0, "a rule needs sql and name, or path".into(), "see [[rules]] in README.md"))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let fps = *config.city.fps.get_ref();
        let mut cameras = Vec::new();
        for (i, c) in config.cameras.iter().enumerate() {
            let id = c.id.as_ref().map_or(i as i64, |v| *v.get_ref()) as u32;
            let url = url::Url::parse(c.url.get_ref()).map_err(|e| {
                err(c.url.span(), format!("{:?}: {e}", c.url.get_ref()), "write rtsp://host:port/path")
            })?;
            let password = match (&c.password_env, &c.password_file) {
                (Some(v), _) => Some(PasswordSource::Env(v.get_ref().clone())),
                (None, Some(f)) => Some(PasswordSource::File(config.base_dir.join(f.get_ref()))),
                (None, None) => None,
            };
            let calibration = match &c.calibration {
                Some(cal) => {
                    Some(Homography::fit(&cal.get_ref().image, &cal.get_ref().ground).map_err(|e| {
                        err(
                            cal.span(),
                            format!("camera {id}: calibration: {e}"),
                            "measure at least 4 point pairs",
                        )
                    })?)
                }
                None => None,
            };
            cameras.push(CameraSettings {
                id,
                name: c.name.clone().unwrap_or_else(|| format!("camera-{id}")),
                url,
                credentials: c.user.clone().zip(password),
                fps: c.fps.as_ref().map_or(fps, |f| *f.get_ref()),
                onvif: c.analytics.get_ref() == "auto",
                calibration,
            });
        }
        let detector = match &config.models.detector {
            Some(d) => Some(DetectorSettings {
                path: config.base_dir.join(d.path.get_ref()),
                classes: d.classes.get_ref().clone(),
                layout: d
                    .layout
                    .get_ref()
                    .parse()
                    .map_err(|e: String| err(d.layout.span(), e, "use auto, v5, v8 or ssd"))?,
                class_ids: d.class_ids.as_ref().map(|i| i.get_ref().clone()),
                input_size: d.input_size.as_ref().map(|s| (s.get_ref()[0] as u32, s.get_ref()[1] as u32)),
                score_threshold: d.score_threshold,
                class_thresholds: d.class_thresholds.clone(),
                iou_threshold: d.iou_threshold,
                batch: *d.batch.get_ref() as usize,
                deadline_ms: *d.deadline_ms.get_ref() as u64,
                queue: *d.queue.get_ref() as usize,
                threads: d.threads.max(1) as usize,
            }),
            None => None,
        };
        let e = &config.engine;
        let r = &config.retention;
        let day = 86_400_000;
        let all = r.hours.as_ref().map_or(*r.days.get_ref() * day, |h| *h.get_ref() * 3_600_000);
        let mut periods: BTreeMap<Class, Millis> =
            [Class::Personal, Class::Aggregate, Class::Record].into_iter().map(|c| (c, all)).collect();
        for (class, value) in
            [(Class::Personal, &r.personal), (Class::Aggregate, &r.aggregate), (Class::Record, &r.record)]
        {
            if let Some(v) = value {
                let ms = crate::config::parse_period(v.get_ref()).ok_or_else(|| {
                    err(
                        v.span(),
                        format!("{:?} is not a period", v.get_ref()),
                        "write a period such as \"6h\", \"30d\" or \"90m\"",
                    )
                })?;
                periods.insert(class, ms);
            }
        }
        // The tracker: defaults, then [tracker], then each camera's own; the time step is the
        // camera's frame interval.
        let base = |fps: f64| vigil_operators::tracker::TrackerConfig {
            frame_interval_s: (1.0 / fps) as f32,
            ..Default::default()
        };
        // `validate` has checked every section; a refusal here is still placed, never a panic.
        let placed = |(span, what, fix): (std::ops::Range<usize>, String, String)| err(span, what, &fix);
        let mut per_camera = std::collections::BTreeMap::new();
        for (i, (c, s)) in config.cameras.iter().zip(&cameras).enumerate() {
            let global = config.tracker.apply(base(s.fps), "tracker").map_err(placed)?;
            let own = match &c.tracker {
                Some(t) => t.apply(global, &format!("cameras[{i}].tracker")).map_err(placed)?,
                None => global,
            };
            per_camera.insert(s.id, own);
        }
        let tracker = vigil_operators::tracker::TrackerConfigs {
            default: config.tracker.apply(base(fps), "tracker").map_err(placed)?,
            cameras: per_camera,
        };
        let period = |v: &Option<toml::Spanned<String>>| {
            v.as_ref().and_then(|v| crate::config::parse_period(v.get_ref()))
        };
        let reads_ms = period(&r.reads).unwrap_or(crate::config::DEFAULT_READS_MS);
        let hits_ms = period(&r.hits).unwrap_or(crate::config::DEFAULT_HITS_MS.max(reads_ms));
        let hits = vigil_operators::hits::HitConfig {
            confirmations: *config.hits.confirmations.get_ref() as u32,
            keep_ms: hits_ms,
            lookback_ms: period(&config.hits.lookback).unwrap_or(reads_ms),
            min_score: *config.hits.min_score.get_ref() as f32,
            restore: std::sync::Arc::new([]),
            restore_reads: std::sync::Arc::new([]),
        };
        Ok(Settings {
            tracker,
            hits,
            source: config.source.clone(),
            base_dir: config.base_dir.clone(),
            text: config.text.clone(),
            name: config.city.name.clone(),
            seed: config.city.seed,
            start_ms: config.start_ms(),
            fps,
            engine: EngineSettings {
                workers: *e.workers.get_ref() as usize,
                rule_budget: vigil_sql::admission::Budget {
                    rule_rows: *e.rule_max_rows.get_ref() as f64,
                    total_rows: *e.rules_max_rows.get_ref() as f64,
                    rows_per_s: *e.rule_max_rows_per_s.get_ref() as f64,
                    ..Default::default()
                },
                allowed_lateness_ms: *e.allowed_lateness_ms.get_ref(),
                idle_timeout_ms: *e.idle_timeout_ms.get_ref(),
                density_window_ms: e.density_window_s.get_ref() * 1000,
                density_step_ms: e.density_step_s.get_ref() * 1000,
                density_sample_ms: *e.density_sample_ms.get_ref(),
                fusion_radius_m: *e.fusion_radius_m.get_ref(),
                density_hold_ms: t.density_hold_s.get_ref() * 1000,
                decode_threads: *e.decode_threads.get_ref() as usize,
            },
            out: config.base_dir.join(&config.sinks.out),
            partition_ms: config.sinks.partition_s.get_ref() * 1000,
            commit: std::time::Duration::from_secs(*config.sinks.commit_s.get_ref() as u64),
            hold_bytes: *config.sinks.hold_mb.get_ref() as usize * (1 << 20),
            ground_truth: config.sinks.ground_truth,
            retention: RetentionSettings {
                periods,
                memory_ms: r.memory_s.get_ref() * 1000,
                memory_bytes: *r.memory_mb.get_ref() as usize * (1 << 20),
                reads_ms,
                hits_ms,
            },
            server: ServerSettings {
                pg_listen: config.server.pg_listen.as_ref().map(|l| l.get_ref().clone()),
                http_listen: config.server.http_listen.as_ref().map(|l| l.get_ref().clone()),
                pg_user: config.server.pg_user.clone(),
                pg_password_env: config.server.pg_password_env.clone(),
                users: config
                    .users
                    .iter()
                    .map(|u| {
                        let role = u.role.get_ref().parse().unwrap_or(vigil_sql::roles::Role::Auditor);
                        (u.name.get_ref().clone(), role, u.password_env.get_ref().clone())
                    })
                    .collect(),
                http_max_connections: *config.server.http_max_connections.get_ref() as usize,
                edge: vigil_sql::server::Edge {
                    max_connections: *config.server.max_connections.get_ref() as usize,
                    auth_timeout: std::time::Duration::from_secs(
                        *config.server.auth_timeout_s.get_ref() as u64
                    ),
                    // The run opens the log under its output directory.
                    audit: None,
                    failures: Default::default(),
                    // Checked when the file was read.
                    time_zone: vigil_sql::server::zone_name(config.server.time_zone.get_ref())
                        .unwrap_or_else(|| "UTC".into()),
                },
                limits: vigil_sql::limits::Limits {
                    query_memory: (*config.server.query_memory_mb.get_ref() as usize) << 20,
                    query_timeout: std::time::Duration::from_secs(
                        *config.server.query_timeout_s.get_ref() as u64
                    ),
                    ..Default::default()
                },
            },
            zones,
            lines,
            watchlist,
            watchlist_csv: config.watchlist_csv.as_ref().map(|p| config.base_dir.join(p.get_ref())),
            rules,
            cameras,
            onnxruntime: config.models.onnxruntime.as_ref().map(|p| config.base_dir.join(p)),
            detector,
            plates: config.models.plates.as_ref().map(|p| PlateSettings {
                vehicle_classes: p.vehicle_classes.get_ref().clone(),
                detector: p.detector.as_ref().map(|d| config.base_dir.join(d)),
                text: p.text.as_ref().map(|d| config.base_dir.join(d)),
                letters: p.letters.as_ref().map(|d| config.base_dir.join(d)),
                min_score: *p.min_score.get_ref() as f32,
                letter_min_score: *p.letter_min_score.get_ref() as f32,
                queue: *p.queue.get_ref() as usize,
                repeat_ms: (*p.repeat_s.get_ref() * 1000.0) as i64,
                threads: p.threads.clamp(1, 64) as usize,
            }),
            faces_dir: config
                .models
                .faces
                .as_ref()
                .and_then(|f| f.dir.as_ref())
                .map(|d| config.base_dir.join(d)),
            faces_mtcnn: config
                .models
                .faces
                .as_ref()
                .and_then(|f| f.detector.as_ref())
                .is_some_and(|d| d.get_ref() == "mtcnn"),
            faces_path: config
                .models
                .faces
                .as_ref()
                .and_then(|f| f.path.as_ref())
                .map(|p| config.base_dir.join(p)),
            snapshots: config.snapshots.enabled,
            snapshot_interval_s: *config.snapshots.min_interval_s.get_ref(),
            sim: crate::sim::SimParams::from_config(config),
        })
    }

    /// The embedded demo city's settings.
    pub fn embedded() -> Settings {
        Self::from_config(&Config::embedded()).expect("the embedded city is valid (tested)")
    }

    /// Loads, validates and converts the file at `path`.
    pub fn load(path: &std::path::Path) -> Result<Settings, ConfigError> {
        Self::from_config(&Config::load(path)?)
    }

    /// Maps a (line, column) inside an inline rule starting at byte `at` of the file to the
    /// file's own line and column.
    pub fn inline_position(&self, at: usize, line: u64, column: u64) -> (usize, usize) {
        crate::config::inline_position(&self.text, at, line, column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_default_to_days_and_classes_take_their_own() {
        let c = Config::parse(
            "[city]\nfps = 10.0\n[retention]\ndays = 30\npersonal = \"6h\"\n",
            "c.toml",
            PathBuf::new(),
        )
        .unwrap();
        let s = Settings::from_config(&c).unwrap();
        assert_eq!(s.retention.period(Class::Personal), 6 * 3_600_000);
        assert_eq!(s.retention.period(Class::Record), 30 * 86_400_000);
        let e =
            Config::parse("[city]\nfps = 10.0\n[retention]\nrecord = \"91d\"\n", "c.toml", PathBuf::new())
                .unwrap_err();
        assert_eq!((e.line, e.column), (4, 10), "{e}");
        assert!(e.fix.contains("CNDP"), "{e}");
    }

    #[test]
    fn the_readme_lists_every_tracker_setting_with_its_default() {
        let readme = include_str!("../../README.md");
        let block =
            readme.split("[tracker]                 # every camera; defaults shown\n").nth(1).unwrap();
        let listed: Vec<(&str, f64)> = block
            .lines()
            .take_while(|l| !l.is_empty())
            .map(|l| {
                let (name, rest) = l.split_once(" = ").unwrap_or_else(|| panic!("README: {l}"));
                let value = rest.split_whitespace().next().unwrap();
                (name.trim(), value.parse().unwrap_or_else(|_| panic!("README: {l}")))
            })
            .collect();
        let d = vigil_operators::tracker::TrackerConfig::default();
        let expected: Vec<(&str, f64)> = vigil_operators::tracker::TrackerConfig::SETTINGS
            .iter()
            .map(|s| (s.name, f64::from(s.value(&d) as f32)))
            .collect();
        let listed: Vec<(&str, f64)> = listed.into_iter().map(|(n, v)| (n, f64::from(v as f32))).collect();
        assert_eq!(listed, expected);
    }

    #[test]
    fn tracker_settings_apply_over_the_defaults_and_bad_ones_are_placed() {
        let c = Config::parse(
            "[city]\nfps = 25.0\n[tracker]\nstrict_after = 4\nadapt_noise = 0\n",
            "c.toml",
            PathBuf::new(),
        )
        .unwrap();
        let t = Settings::from_config(&c).unwrap().tracker.default;
        let d = vigil_operators::tracker::TrackerConfig::default();
        assert_eq!((t.strict_after, t.adapt_noise, t.strict_iou), (4, 0.0, d.strict_iou));
        assert_eq!(t.frame_interval_s, 0.04);
        let e = Config::parse("[city]\nfps = 10.0\n[tracker]\nstrict_iou = 3\n", "c.toml", PathBuf::new())
            .unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(e.to_string().contains("tracker.strict_iou"), "{e}");
        // Every setting the tracker takes is a [tracker] key, applied through the same check.
        let mut expected = vigil_operators::tracker::TrackerConfig { frame_interval_s: 0.1, ..d };
        let mut text = "[city]\nfps = 10.0\n[tracker]\n".to_string();
        for name in vigil_operators::tracker::TrackerConfig::SETTINGS.map(|s| s.name) {
            text += &format!("{name} = 1\n");
            expected.set(name, 1.0).unwrap();
        }
        let c = Config::parse(&text, "c.toml", PathBuf::new()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(Settings::from_config(&c).unwrap().tracker.default, expected);
        // A name the tracker does not have is placed at the name, with the names it has; a
        // camera's own table is placed and named too.
        let e = Config::parse("[city]\nfps = 10.0\n[tracker]\nmax_lost = 2\n", "c.toml", PathBuf::new())
            .unwrap_err();
        let text = e.to_string();
        assert!(e.line == 4 && e.column == 1, "{text}");
        assert!(
            text.contains("tracker.max_lost = 2 is not a tracker setting") && text.contains("max_lost_s"),
            "{text}"
        );
        let e =
            Config::parse("[city]\nfps = 10.0\n[tracker]\nconfirm_frames = 2.5\n", "c.toml", PathBuf::new())
                .unwrap_err();
        assert!(e.to_string().contains("whole number"), "{e}");
    }
}

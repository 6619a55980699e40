//! The `vigil` command: run the demo city, a configured city, or the city-scale benchmark.
//!
//! `vigil demo` runs the embedded city (60 s unless told otherwise); `vigil run --config FILE`
//! runs a configured one until it is stopped (or for `--duration`); `vigil bench` measures
//! sustained events/s and alert latency. Alerts print one per line on stdout; the live status
//! line goes to stderr. SIGINT (Ctrl-C) or SIGTERM stops cleanly: inputs close, windows close,
//! Parquet files are completed and renamed; a second signal exits at once.

// The binary's job is to print alerts and summaries; libraries never print.
#![allow(clippy::print_stdout)]

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use vigil_operators::alerts::AlertBus;
use vigil_pipelines::app::{self, Progress, RunOptions, Summary};
use vigil_pipelines::settings::Settings;
use vigil_sql::roles::Role;

// jemalloc in place of glibc's malloc: vigil runs for months, and glibc's arenas keep the high
// water mark of differential's merges and the sinks' batches. Thirty simulated hours of the demo
// city (`scripts/soak.py`, a one-hour lookback): glibc's resident set went 995 → 1,088 MB;
// jemalloc's stayed between 986 and 1,023 MB, in a fifth less wall time (`benches/README.md`). Freed pages go back to the system after a decay (10 s),
// purged by a background thread even while the process is idle (`background_threads`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's live and resident bytes, for `/metrics` (statistics are cached per epoch: the
/// epoch is advanced first).
fn jemalloc_heap() -> Option<vigil_pipelines::metrics::Heap> {
    use tikv_jemalloc_ctl::{epoch, stats};
    epoch::advance().ok()?;
    Some(vigil_pipelines::metrics::Heap {
        allocated: stats::allocated::read().ok()? as u64,
        resident: stats::resident::read().ok()? as u64,
    })
}

#[derive(Parser, Debug)]
#[command(name = "vigil", version, about = "Stream-processing engine for city camera analytics")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the embedded demo city: density alerts, watchlist hits, a SQL rule, Parquet output.
    Demo {
        /// Simulated seconds to run (0: until stopped).
        #[arg(long, default_value_t = 60.0)]
        duration: f64,
        /// Run as fast as the machine allows (same output as a paced run).
        #[arg(long)]
        fast: bool,
        /// Timely worker threads.
        #[arg(long)]
        workers: Option<usize>,
        /// Output directory (previous demo output there is replaced).
        #[arg(long, default_value = "vigil-out")]
        out: PathBuf,
        /// Do not print alerts (the summary still counts them).
        #[arg(long)]
        quiet: bool,
        /// Serve psql on this address (password from $VIGIL_PG_PASSWORD).
        #[arg(long)]
        pg_listen: Option<String>,
        /// Serve HTTP (login, /metrics) on this address, over the same account.
        #[arg(long)]
        http_listen: Option<String>,
    },
    /// Run a city described by a TOML configuration file.
    Run {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Seconds to run (simulated, or wall-clock for cameras); default or 0: until
        /// SIGINT/SIGTERM, as `demo --duration 0`.
        #[arg(long)]
        duration: Option<f64>,
        /// Run as fast as the machine allows.
        #[arg(long)]
        fast: bool,
        /// Output directory (default: the config's `sinks.out`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Timely worker threads (default: the config's `engine.workers`).
        #[arg(long)]
        workers: Option<usize>,
        /// Do not print alerts.
        #[arg(long)]
        quiet: bool,
        /// Serve psql on this address (default: the config's `server.pg_listen`).
        #[arg(long)]
        pg_listen: Option<String>,
        /// Serve HTTP on this address (default: the config's `server.http_listen`).
        #[arg(long)]
        http_listen: Option<String>,
    },
    /// Run SQL rules over recorded Parquet events at full speed; writes each rule's output.
    Replay {
        /// Directory of recorded events (what `vigil run` writes).
        #[arg(long)]
        events: PathBuf,
        /// A rule file (one or more statements: SELECT ... or CREATE RULE name AS SELECT ...).
        #[arg(long)]
        rules: PathBuf,
        /// Where to write `<rule>.parquet` files.
        #[arg(long)]
        out: PathBuf,
        /// Timely worker threads.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Allowed lateness of the watermark, ms.
        #[arg(long, default_value_t = 2000)]
        lateness_ms: i64,
        /// Delay frames by up to this many ms (deterministic), to replay out-of-order arrival.
        #[arg(long, default_value_t = 0)]
        disorder_ms: i64,
    },
    /// Measure sustained events/s and event-to-alert latency of a simulated city.
    Bench {
        /// Cameras.
        #[arg(long, default_value_t = 2000)]
        cameras: u32,
        /// Frames per second per camera.
        #[arg(long, default_value_t = 10.0)]
        fps: f64,
        /// Objects (pedestrians) per camera view.
        #[arg(long, default_value_t = 15)]
        objects: u32,
        /// Simulated seconds per phase.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Timely worker threads.
        #[arg(long, default_value_t = 1)]
        workers: usize,
    },
    /// Write a simulated camera as a MOTChallenge sequence (gt/gt.txt, det/det.txt,
    /// seqinfo.ini): ground truth and noisy detections for scoring trackers.
    MotSim {
        /// Output directory (the sequence).
        #[arg(long)]
        out: PathBuf,
        /// Frames.
        #[arg(long, default_value_t = 300)]
        frames: u32,
        /// Camera of the embedded city.
        #[arg(long, default_value_t = 0)]
        camera: u32,
        /// Pedestrians in view.
        #[arg(long, default_value_t = 15)]
        people: usize,
        /// Box noise, pixels (standard deviation).
        #[arg(long, default_value_t = 3.0)]
        noise_px: f64,
        /// Probability a detection is missed.
        #[arg(long, default_value_t = 0.05)]
        miss_rate: f64,
        /// Spurious boxes per frame.
        #[arg(long, default_value_t = 0.02)]
        false_positives: f64,
        /// Seed.
        #[arg(long, default_value_t = 2030)]
        seed: u64,
    },
    /// Write a simulated camera as video for an RTSP test server: raw RGB24 frames (OUT) and the
    /// true boxes and plates of each frame as JSON lines (OUT with `.truth.jsonl`).
    Render {
        /// Raw RGB24 output, one frame after another (`scripts/rtsp_server.py --mount`).
        #[arg(long)]
        out: PathBuf,
        /// The city (default: the embedded demo city).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Camera of the city.
        #[arg(long, default_value_t = 0)]
        camera: u32,
        /// Frames.
        #[arg(long, default_value_t = 100)]
        frames: u32,
        /// Frame size, WIDTHxHEIGHT.
        #[arg(long, default_value = "640x360")]
        size: String,
        /// An ANPR camera: vehicle fronts at close range with legible Moroccan plates (Debian's
        /// DejaVu and Noto fonts), no people.
        #[arg(long)]
        anpr: bool,
    },
    /// Track MOTChallenge detections (det.txt) into MOTChallenge tracks, for scoring with the
    /// standard tools (TrackEval, py-motmetrics).
    Track {
        /// Detections, MOTChallenge format (`frame,-1,left,top,width,height,conf,...`).
        #[arg(long)]
        mot_det: PathBuf,
        /// Tracks to write, MOTChallenge format.
        #[arg(long)]
        out: PathBuf,
        /// The sequence's frame rate (frames are 1 / fps apart in time).
        #[arg(long, default_value_t = 10.0)]
        fps: f64,
        /// Tracker settings (`[tracker]` in the configuration); unset ones keep their defaults.
        #[command(flatten)]
        tracker: TrackerArgs,
    },
    /// Count people crossing lines in MOTChallenge tracks (any tracker's), with the flow
    /// operator's logic: for scoring gate counts on footage with ground truth.
    Count {
        /// Tracks, MOTChallenge format (`frame,id,left,top,width,height,conf,...`).
        #[arg(long)]
        mot_tracks: PathBuf,
        /// A line in pixels, `X1,Y1,X2,Y2` (repeat for more); crossings toward the left of the
        /// line drawn from the first point to the second, as seen on the image, count `in`.
        #[arg(long = "line", required = true, value_parser = parse_line)]
        lines: Vec<[f64; 4]>,
        /// Metres a foot point must be clear of a line, on either side, for a change of side
        /// to count: the live operator's `margin_m`. Each box's pixels across the line are
        /// converted at its own scale, its height being --person-height metres.
        #[arg(long, default_value_t = vigil_operators::flows::FlowConfig::new(Vec::new(), Vec::new()).margin_m)]
        margin: f64,
        /// A person's height, metres (the scale of each box).
        #[arg(long, default_value_t = 1.7)]
        person_height: f64,
        /// Give the margin in pixels instead, the same everywhere on the image.
        #[arg(long)]
        margin_px: Option<f64>,
        /// The sequence's frame rate.
        #[arg(long, default_value_t = 10.0)]
        fps: f64,
    },
    /// Export one stream's committed rows over a window as Parquet for a data team
    /// (data_team and admin roles; data teams only pseudonymized). Recorded in the audit log.
    Export {
        /// The stream (`detections`, `tracks`, `zone_density`, `plate_reads`...).
        #[arg(long)]
        stream: String,
        /// Start of the window, RFC 3339 (`2026-06-14T20:00:00Z`).
        #[arg(long)]
        from: String,
        /// End of the window (excluded), RFC 3339.
        #[arg(long)]
        to: String,
        /// A new directory for the export.
        #[arg(long)]
        out: PathBuf,
        /// Replace plates and ids by tokens under a key drawn for this export, coarsen time and
        /// place, suppress cells of fewer than --k people, drop image coordinates.
        #[arg(long)]
        pseudonymize: bool,
        /// What the export is for (law 09-08: recorded with it in the audit log).
        #[arg(long)]
        purpose: String,
        /// Who exports (password in VIGIL_PASSWORD).
        #[arg(long)]
        user: Option<String>,
        /// The configuration whose output directory holds the lake (`[sinks] out`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The lake (default: the configuration's output directory, else `vigil-out`).
        #[arg(long)]
        lake: Option<PathBuf>,
        /// Pseudonymized: times cut to this many seconds.
        #[arg(long, default_value_t = 900)]
        time_grain_s: i64,
        /// Pseudonymized: ground coordinates cut to a grid of this many metres.
        #[arg(long, default_value_t = 10.0)]
        place_grain_m: f64,
        /// Pseudonymized: least people in a cell.
        #[arg(long, default_value_t = 10)]
        k: u64,
    },
    /// The audit log of an output directory.
    Audit {
        #[command(subcommand)]
        what: AuditCommand,
    },
    /// A person's request about one plate, on an output directory whose engine is stopped
    /// (while it runs, use psql: `SHOW PLATE '…'`, `ERASE PLATE '…'`, which also cover memory).
    Plate {
        #[command(subcommand)]
        what: PlateCommand,
    },
}

#[derive(Subcommand, Debug)]
enum PlateCommand {
    /// Read plate crops (images of one plate each) and print what the reader sees.
    Read {
        /// The crops.
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Score the reader on labelled crops: DIR/truth.csv (`scripts/plates.py heldout`).
    Eval {
        /// The directory of crops and truth.csv.
        dir: PathBuf,
        /// Print every plate the reader got wrong.
        #[arg(long)]
        verbose: bool,
        /// Lowest letter probability (default: the reader's, 0.6); below it the letter is `?`.
        #[arg(long)]
        letter_min_score: Option<f32>,
    },
    /// List what the Parquet files hold about a plate: reads, hits and decisions.
    Show {
        /// The plate, in any reading (`12345-B-6`, `12345 | ب | 6`).
        plate: String,
        /// Who asks: an admin or auditor of the configuration (password in VIGIL_PASSWORD).
        #[arg(long)]
        user: Option<String>,
        /// The output directory (default: the configuration's, else `vigil-out`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The configuration whose output directory to use.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Erase the plate's reads that are not evidence for a confirmed hit, in every Parquet file.
    Erase {
        /// The plate, in any reading.
        plate: String,
        /// Who asks: an admin or auditor of the configuration (password in VIGIL_PASSWORD).
        #[arg(long)]
        user: Option<String>,
        /// The output directory (default: the configuration's, else `vigil-out`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The configuration whose output directory to use.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Check the log's hash chain: exit 0 when every record is as written, 1 naming the first
    /// changed, removed or reordered record.
    Verify {
        /// The log (default: `audit/audit.log` under the output directory).
        #[arg(long)]
        log: Option<PathBuf>,
        /// Who checks: an auditor or admin of the configuration (password in VIGIL_PASSWORD).
        #[arg(long)]
        user: Option<String>,
        /// The configuration whose output directory holds the log (`[sinks] out`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The output directory (default: the configuration's, else `vigil-out`).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// `vigil track`'s tracker settings: a flag for each of the tracker's settings, named as
/// `[tracker]` names them (`--high-score` for `high_score`). Made from the tracker's own list
/// (`TrackerConfig::SETTINGS`) with clap's builder, since a derive would name each a second time.
#[derive(Debug, Default)]
struct TrackerArgs(Vec<(&'static str, f64)>);

impl clap::FromArgMatches for TrackerArgs {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let given = vigil_operators::tracker::TrackerConfig::SETTINGS
            .iter()
            .filter_map(|s| matches.get_one::<f64>(s.name).map(|v| (s.name, *v)))
            .collect();
        Ok(Self(given))
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl clap::Args for TrackerArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let defaults = vigil_operators::tracker::TrackerConfig::default();
        vigil_operators::tracker::TrackerConfig::SETTINGS.iter().fold(cmd, |cmd, s| {
            cmd.arg(
                clap::Arg::new(s.name)
                    .long(s.name.replace('_', "-"))
                    .value_name("VALUE")
                    .value_parser(clap::value_parser!(f64))
                    .allow_negative_numbers(true)
                    .help(format!("{} [default: {}]", s.help, s.value(&defaults) as f32))
                    .help_heading("Tracker settings ([tracker] in the configuration)"),
            )
        })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl TrackerArgs {
    /// `base` with the flags given, each checked as the TOML's `[tracker]` is.
    fn apply(
        &self,
        base: vigil_operators::tracker::TrackerConfig,
    ) -> anyhow::Result<vigil_operators::tracker::TrackerConfig> {
        let mut config = base;
        for &(name, value) in &self.0 {
            config.set(name, value).map_err(|e| {
                anyhow::anyhow!("--{} {value} is out of range; fix: {}", name.replace('_', "-"), e.fix)
            })?;
        }
        Ok(config)
    }
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            // Warnings, every deletion retention makes (what and why), each camera's coming
            // up or back, and a sink's writing again after a failure: an operator's record.
            tracing_subscriber::EnvFilter::try_from_env("VIGIL_LOG")
                .unwrap_or_else(|_| "warn,vigil::retention=info,vigil::camera=info,vigil::sink=info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log file or journald gets plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    vigil_pipelines::metrics::set_heap_reader(jemalloc_heap);
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    // SIGINT and SIGTERM (ctrlc's `termination` feature) both stop the run cleanly.
    ctrlc::set_handler(move || {
        if s.swap(true, Ordering::SeqCst) {
            eprintln!("\nsecond signal: exiting without flushing");
            std::process::exit(130);
        }
        eprintln!("\nstopping: closing windows and flushing Parquet files (signal again to abort)");
    })
    .context("installing the Ctrl-C handler")?;
    Ok(stop)
}

fn dispatch(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    match cli.command {
        Command::Demo { duration, fast, workers, out, quiet, pg_listen, http_listen } => {
            app::remove_previous_output(&out, &vigil_pipelines::derive::city_catalog()?)?;
            let duration = (duration > 0.0).then_some(duration);
            live(Settings::embedded(), workers, duration, fast, out, quiet, (pg_listen, http_listen))
        }
        Command::Run { config, duration, fast, out, workers, quiet, pg_listen, http_listen } => {
            if let Some(d) = duration.filter(|d| !(*d >= 0.0 && d.is_finite())) {
                anyhow::bail!(
                    "--duration {d}: not a number of seconds; fix: give seconds, or 0 to run until stopped"
                );
            }
            let settings = Settings::load(&config)?;
            let out = out.unwrap_or_else(|| settings.out.clone());
            let duration = duration.filter(|d| *d > 0.0);
            live(settings, workers, duration, fast, out, quiet, (pg_listen, http_listen))
        }
        Command::Replay { events, rules, out, workers, lateness_ms, disorder_ms } => {
            let streams = vigil_pipelines::derive::city_catalog()?;
            let rules = vigil_sql::rule::compile_file(&rules, &streams)?;
            let mut opts = vigil_pipelines::replay::ReplayOptions::new(events, out);
            opts.workers = workers.max(1);
            opts.lateness_ms = lateness_ms.max(0);
            opts.disorder_ms = disorder_ms.max(0);
            let began = std::time::Instant::now();
            let summary = vigil_pipelines::replay::replay(rules, &streams, &opts)?;
            for (name, path, rows) in &summary.rules {
                println!("{name}: {rows} rows -> {}", path.display());
            }
            println!(
                "replayed {} rows ({} late) in {:.2} s",
                summary.rows,
                summary.late,
                began.elapsed().as_secs_f64()
            );
            for (rule, e) in &summary.errors {
                eprintln!("error: rule {rule}: {e}");
            }
            Ok(if summary.errors.is_empty() {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::from(1)
            })
        }
        Command::Bench { cameras, fps, objects, seconds, workers } => {
            bench(cameras, fps, objects, seconds, workers)
        }
        Command::MotSim { out, frames, camera, people, noise_px, miss_rate, false_positives, seed } => {
            let mut params = Settings::embedded().sim;
            params.seed = seed;
            params.pedestrians = people;
            params.noise_px = noise_px;
            params.miss_rate = miss_rate;
            params.false_positive_rate = false_positives;
            params.surge = None;
            let (gt, det) = vigil_pipelines::mot::simulate_sequence(&params, camera, frames, &out)?;
            eprintln!("{frames} frames: {gt} ground-truth boxes, {det} detections in {}", out.display());
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Render { out, config, camera, frames, size, anpr } => {
            render(&out, config.as_deref(), camera, frames, &size, anpr)?;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Plate { what: PlateCommand::Read { images } } => {
            let mut reader = plate_reader()?;
            for path in images {
                let img = vigil_pipelines::plates::open_crop(&path)?;
                match reader.read_crop(&img)? {
                    Some((text, conf)) => {
                        let plate =
                            vigil_operators::plate::normalize(&text).unwrap_or_else(|e| format!("({e})"));
                        let conf: Vec<String> = conf.iter().map(|c| format!("{c:.2}")).collect();
                        println!("{}\t{text}\t{plate}\t{}", path.display(), conf.join(" "));
                    }
                    None => println!("{}\t(no plate text)", path.display()),
                }
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Plate { what: PlateCommand::Eval { dir, verbose, letter_min_score } } => {
            let mut reader = plate_reader_with(letter_min_score)?;
            let acc = vigil_pipelines::plates::evaluate(&mut reader, &dir, |file, want, got| {
                if verbose && want != got {
                    println!("{file}\t{want}\tread {got}");
                }
            })?;
            println!("{}", acc.summary());
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Plate { what } => {
            let (plate, out, config, user, erase) = match what {
                PlateCommand::Read { .. } | PlateCommand::Eval { .. } => unreachable!("handled above"),
                PlateCommand::Show { plate, out, config, user } => (plate, out, config, user, false),
                PlateCommand::Erase { plate, out, config, user } => (plate, out, config, user, true),
            };
            let settings = match &config {
                Some(config) => Settings::load(config)?,
                None => Settings::embedded(),
            };
            let what = if erase { "vigil plate erase" } else { "vigil plate show" };
            let (user, _) = app::cli_login(
                &settings,
                user.as_deref(),
                Role::may_request_subject,
                "admins and auditors",
                what,
            )?;
            let out = match (out, config) {
                (Some(out), _) => out,
                (None, Some(_)) => settings.out.clone(),
                (None, None) => PathBuf::from("vigil-out"),
            };
            if !out.is_dir() {
                anyhow::bail!(
                    "{}: no output directory there; fix: give --out or --config of the run",
                    out.display()
                );
            }
            let retained = std::sync::Mutex::new(vigil_engine::share::Retained::new(1, 0, usize::MAX));
            let request = app::subject::PlateRequest::new(&plate, i64::MAX, &retained, Some(&out))
                .map_err(anyhow::Error::msg)?;
            let rows = if erase {
                request.erase(&retained, Some(&out)).map_err(anyhow::Error::msg)?.0
            } else {
                request.show(&retained, Some(&out)).map_err(anyhow::Error::msg)?
            };
            let audit = vigil_engine::audit::AuditLog::open(&app::audit_path(&out))?;
            let found = app::subject::summary(&rows);
            let (action, key) = if erase { ("plate.erase", "erased") } else { ("plate.show", "found") };
            audit.record(&user, action, &audit.digest(request.plate()), &[(key, &found), ("via", "cli")]);
            for r in rows.iter().filter(|r| r[1] != "memory") {
                println!("{:<10} {:<32} {:>8}  {}", r[0], r[1], r[2], r[3]);
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Export {
            stream,
            from,
            to,
            out,
            pseudonymize,
            purpose,
            user,
            config,
            lake,
            time_grain_s,
            place_grain_m,
            k,
        } => {
            let settings = match &config {
                Some(config) => Settings::load(config)?,
                None => Settings::embedded(),
            };
            let may = |r: Role| matches!(r, Role::DataTeam | Role::Admin);
            let (user, role) =
                app::cli_login(&settings, user.as_deref(), may, "data teams and admins", "vigil export")?;
            if role == Role::DataTeam && !pseudonymize {
                anyhow::bail!(
                    "vigil export: data teams export pseudonymized rows only; fix: add --pseudonymize (or ask an admin)"
                );
            }
            if purpose.trim().is_empty() {
                anyhow::bail!(
                    "vigil export: the purpose is empty; fix: say what the export is for in --purpose"
                );
            }
            let time = |what: &str, s: &str| {
                vigil_engine::time::parse_rfc3339(s).ok_or_else(|| {
                    anyhow::anyhow!(
                        "--{what} {s:?} is not an RFC 3339 time; fix: write it as 2026-06-14T20:00:00Z"
                    )
                })
            };
            let (from_ms, to_ms) = (time("from", &from)?, time("to", &to)?);
            let root = match (lake, config) {
                (Some(lake), _) => lake,
                (None, Some(_)) => settings.out.clone(),
                (None, None) => PathBuf::from("vigil-out"),
            };
            let catalog = vigil_pipelines::derive::city_catalog()?;
            let info = catalog.get(&stream).ok_or_else(|| {
                let names: Vec<&str> = catalog.streams().filter(|s| !s.is_table()).map(|s| s.name).collect();
                anyhow::anyhow!("no stream {stream:?}; fix: give --stream one of {}", names.join(", "))
            })?;
            let request = vigil_pipelines::export::Request {
                stream: info,
                root: &root,
                from: from_ms,
                to: to_ms,
                out: &out,
                pseudonymize: pseudonymize.then(|| vigil_pipelines::export::Policy {
                    time_grain_ms: time_grain_s.max(1) * 1000,
                    place_grain_m,
                    k,
                }),
            };
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} files").expect("a valid template"),
            );
            bar.set_message(format!("exporting {stream}"));
            let summary = vigil_pipelines::export::export(&request, |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            })?;
            bar.finish_and_clear();
            let audit = vigil_engine::audit::AuditLog::open(&app::audit_path(&root))?;
            let (rows, pseudo) = (summary.rows_out.to_string(), pseudonymize.to_string());
            audit.record(
                &user,
                "export",
                &stream,
                &[
                    ("purpose", purpose.trim()),
                    ("from", &from),
                    ("to", &to),
                    ("rows", &rows),
                    ("pseudonymized", &pseudo),
                    // Absolute, so that `plate show` finds it from anywhere.
                    ("out", &std::fs::canonicalize(&out).unwrap_or(out.clone()).display().to_string()),
                ],
            );
            println!(
                "{}: {} rows of {stream} from {} files",
                summary.file.display(),
                summary.rows_out,
                summary.files
            );
            println!("  rows in the window: {}", summary.rows_in);
            if pseudonymize {
                println!(
                    "  tokens (HMAC-SHA256, key of this export, not kept): {}",
                    summary.tokenized.join(", ")
                );
                println!("  coarsened: {}", summary.coarsened.join(", "));
                println!(
                    "  dropped: {}",
                    if summary.dropped.is_empty() { "-".to_owned() } else { summary.dropped.join(", ") }
                );
                println!(
                    "  suppressed: {} cells with fewer than {k} people ({} rows)",
                    summary.cells_suppressed, summary.rows_suppressed
                );
            }
            println!("  recorded in the audit log as {user}'s export for: {}", purpose.trim());
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Audit { what: AuditCommand::Verify { log, config, out, user } } => {
            let settings = match &config {
                Some(config) => Settings::load(config)?,
                None => Settings::embedded(),
            };
            // Verifying shows no record, only where the chain breaks: auditors and admins.
            let may = |r: Role| r.may_read_audit() || r == Role::Admin;
            app::cli_login(&settings, user.as_deref(), may, "auditors and admins", "vigil audit verify")?;
            let log = match (log, out, config) {
                (Some(log), _, _) => log,
                (None, Some(out), _) => app::audit_path(&out),
                (None, None, Some(_)) => app::audit_path(&settings.out),
                (None, None, None) => app::audit_path(Path::new("vigil-out")),
            };
            if !log.is_file() {
                anyhow::bail!(
                    "{}: no audit log there; fix: give --log, or the --out / --config of the run",
                    log.display()
                );
            }
            match vigil_engine::audit::verify(&log) {
                Ok(v) => {
                    println!("{}: {} records, chain intact", log.display(), v.records);
                    println!(
                        "head: {} {} (keep a copy outside this machine to anchor the log)",
                        v.records, v.head
                    );
                    Ok(std::process::ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("audit log broken: {e}");
                    eprintln!("records before line {} are intact", e.line);
                    Ok(std::process::ExitCode::from(1))
                }
            }
        }
        Command::Count { mot_tracks, lines, margin, person_height, margin_px, fps } => {
            if !(fps.is_finite() && fps > 0.0 && fps <= 1000.0) {
                anyhow::bail!(
                    "--fps {fps} is not a frame rate; fix: give the sequence's frames per second, such as 25"
                );
            }
            use vigil_pipelines::mot::Margin;
            for (flag, v, least) in [
                ("--margin", margin, 0.0),
                ("--person-height", person_height, 0.1),
                ("--margin-px", margin_px.unwrap_or(0.0), 0.0),
            ] {
                if !(v.is_finite() && (least..=1e6).contains(&v)) {
                    anyhow::bail!("{flag} {v} is not a distance; fix: give a number from {least}");
                }
            }
            let margin = match margin_px {
                Some(px) => Margin::Pixels(px),
                None => Margin::Metres { margin_m: margin, person_m: person_height },
            };
            let counts = vigil_pipelines::mot::count_crossings(&mot_tracks, &lines, margin, fps)?;
            println!("line\tin\tout");
            for (i, c) in counts.iter().enumerate() {
                println!("{}\t{}\t{}", i + 1, c.inward, c.outward);
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Track { mot_det, out, fps, tracker: t } => {
            if !(fps.is_finite() && fps > 0.0 && fps <= 1000.0) {
                anyhow::bail!(
                    "--fps {fps} is not a frame rate; fix: give the sequence's frames per second, such as 25"
                );
            }
            let config = t.apply(vigil_operators::tracker::TrackerConfig {
                frame_interval_s: (1.0 / fps) as f32,
                ..Default::default()
            })?;
            let (frames, rows, secs) = vigil_pipelines::mot::track_file(&mot_det, &out, config)?;
            eprintln!(
                "{frames} frames, {rows} track boxes written to {}; tracking {:.0} frames/s",
                out.display(),
                f64::from(frames) / secs.max(1e-9)
            );
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}

/// Runs `settings` live: alerts on stdout, a status line on stderr, a summary at the end.
fn live(
    mut settings: Settings,
    workers: Option<usize>,
    duration_s: Option<f64>,
    fast: bool,
    out: PathBuf,
    quiet: bool,
    (pg_listen, http_listen): (Option<String>, Option<String>),
) -> anyhow::Result<std::process::ExitCode> {
    if let Some(w) = workers {
        settings.engine.workers = check_workers(w)?;
    }
    let ground_truth = settings.ground_truth;
    let opts = RunOptions { duration_s, fast, out, parquet: true, ground_truth, pg_listen, http_listen };
    let (settings, opts) = (&settings, &opts);
    let stop = stop_flag()?;
    let bus = AlertBus::new(65_536);
    let progress = Arc::new(Progress::default());
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("static template"));
    let printer = {
        let mut rx = bus.subscribe();
        let bar = bar.clone();
        std::thread::spawn(move || {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match rx.blocking_recv() {
                    Ok(a) if !quiet => bar.suspend(|| println!("ALERT {a}")),
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => bar.suspend(|| eprintln!("({n} alerts not shown: printing fell behind; all are in the alerts Parquet stream)")),
                    Err(RecvError::Closed) => break,
                }
            }
        })
    };
    let status = {
        let (bar, p, stop, alerts) = (bar.clone(), Arc::clone(&progress), Arc::clone(&stop), bus.clone());
        let done = Arc::new(AtomicBool::new(false));
        let d = Arc::clone(&done);
        let handle = std::thread::spawn(move || {
            let t0 = Instant::now();
            while !d.load(Ordering::Relaxed) {
                let rows = p.rows.load(Ordering::Relaxed);
                let secs = t0.elapsed().as_secs_f64().max(1e-3);
                bar.set_message(format!(
                    "sim {:>6.1}s | {:>9.0} events/s | alerts {} | late {}{}",
                    p.sim_ms.load(Ordering::Relaxed) as f64 / 1000.0,
                    rows as f64 / secs,
                    alerts.total(),
                    p.late.load(Ordering::Relaxed),
                    if stop.load(Ordering::Relaxed) { " | stopping" } else { "" }
                ));
                bar.tick();
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        (handle, done)
    };
    let result = app::run(settings, opts, &bus, &stop, &progress);
    status.1.store(true, Ordering::Relaxed);
    let _ = status.0.join();
    drop(bus);
    let _ = printer.join();
    bar.finish_and_clear();
    let summary = result?;
    print_summary(&summary);
    Ok(if summary.interrupted { std::process::ExitCode::from(130) } else { std::process::ExitCode::SUCCESS })
}

fn print_summary(s: &Summary) {
    let total: u64 = s.ingest.total_rows();
    println!(
        "{} {:.1} {}seconds in {:.1} s: {} events ({}), {} late events",
        if s.interrupted { "Interrupted after" } else { "Ran" },
        s.event_s,
        if s.live { "" } else { "simulated " },
        s.wall.as_secs_f64(),
        total,
        s.ingest.rows.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "),
        s.ingest.total_late()
    );
    println!(
        "Alerts: {}",
        if s.alerts.is_empty() {
            "none".into()
        } else {
            s.alerts.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
        }
    );
    if s.errors > 0 {
        println!("Errors: {} (see the log above)", s.errors);
    }
    if s.deleted > 0 {
        println!(
            "Retention deleted {} file(s) while running (see the log lines of vigil::retention)",
            s.deleted
        );
    }
    println!("Parquet output under {} (run epoch {}):", s.out.display(), s.epoch);
    for (stream, n) in &s.files {
        println!("  {}/{stream}/  {n} file(s)", s.out.display());
    }
    println!("Read it with DuckDB: SELECT * FROM read_parquet('{}/alerts/**/*.parquet');", s.out.display());
}

fn bench(
    cameras: u32,
    fps: f64,
    objects: u32,
    seconds: f64,
    workers: usize,
) -> anyhow::Result<std::process::ExitCode> {
    let mut settings = Settings::embedded();
    settings.sim.cameras = cameras;
    settings.sim.pedestrians = objects as usize;
    settings.sim.fps = fps;
    settings.fps = fps;
    settings.engine.workers = check_workers(workers)?;
    settings.rules.push(vigil_pipelines::settings::RuleSource::Inline {
        name: "bench_confident_person".into(),
        sql: "SELECT camera_id, event_time, score FROM detections WHERE class = 'person' AND score > 0.985"
            .into(),
        at: 0,
    });
    let dir = tempfile_dir()?;
    let stop = AtomicBool::new(false);
    println!(
        "vigil bench: {cameras} cameras x {fps} fps x {objects} objects, {workers} worker(s), {seconds} simulated s per phase"
    );

    // Phase 1: as fast as possible.
    let bus = AlertBus::new(1 << 20);
    let progress = Arc::new(Progress::default());
    let opts = RunOptions {
        duration_s: Some(seconds),
        fast: true,
        out: dir.join("fast"),
        parquet: true,
        ground_truth: false,
        pg_listen: None,
        http_listen: None,
    };
    let s = app::run(&settings, &opts, &bus, &stop, &progress)?;
    let rows = s.ingest.total_rows();
    println!(
        "throughput (unpaced, simulator included): {:.0} events/s ({} events in {:.2} s wall, {:.2}x real time)",
        rows as f64 / s.wall.as_secs_f64(),
        rows,
        s.wall.as_secs_f64(),
        s.event_s / s.wall.as_secs_f64()
    );

    // Phase 2: paced on the wall clock; latency from event time to alert emission.
    let bus = AlertBus::new(1 << 20);
    let mut rx = bus.subscribe();
    let start_ms = settings.start_ms;
    let wall0 = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let w = Arc::clone(&wall0);
    let collector = std::thread::spawn(move || {
        let mut by_kind: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
        while let Ok(a) = rx.blocking_recv() {
            let Some(t0) = *w.lock().expect("wall0") else { continue };
            let due = t0 + Duration::from_millis((a.event_time - start_ms).max(0) as u64);
            let lat = Instant::now().saturating_duration_since(due).as_secs_f64() * 1000.0;
            by_kind.entry(a.kind.clone()).or_default().push(lat);
        }
        by_kind
    });
    *wall0.lock().expect("wall0") = Some(Instant::now());
    let progress = Arc::new(Progress::default());
    let opts = RunOptions {
        duration_s: Some(seconds),
        fast: false,
        out: dir.join("paced"),
        parquet: true,
        ground_truth: false,
        pg_listen: None,
        http_listen: None,
    };
    let s = app::run(&settings, &opts, &bus, &stop, &progress)?;
    drop(bus);
    let lat = collector.join().map_err(|_| anyhow::anyhow!("latency collector panicked"))?;
    let rows = s.ingest.total_rows();
    // Kept up: the feed never fell more than one tick behind its schedule. The drain (the
    // watermark's allowed lateness released at the end, files closed) is reported on its own.
    let kept_up = s.behind_max.as_secs_f64() <= 1.0 / fps;
    println!(
        "sustained (paced at real time): {:.0} events/s offered, {:.2} s wall for {:.1} simulated s, fell behind by at most {:.0} ms{}, end drain {:.2} s",
        rows as f64 / s.event_s,
        s.wall.as_secs_f64(),
        s.event_s,
        s.behind_max.as_secs_f64() * 1000.0,
        if kept_up { " (kept up)" } else { " (could NOT keep up)" },
        s.drain.as_secs_f64(),
    );
    for (kind, mut v) in lat {
        v.sort_by(f64::total_cmp);
        let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        println!(
            "latency event time -> alert ({kind}, n={}): p50 {:.1} ms, p99 {:.1} ms",
            v.len(),
            q(0.5),
            q(0.99)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(std::process::ExitCode::SUCCESS)
}

/// `--workers`, within what the configuration allows (`engine.workers`: 1 to 64).
fn check_workers(w: usize) -> anyhow::Result<usize> {
    if !(1..=64).contains(&w) {
        anyhow::bail!("--workers {w} is out of range; fix: use 1 to 64 workers");
    }
    Ok(w)
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("vigil-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The plate reader with the project's installed models (`scripts/setup-models`).
fn plate_reader() -> anyhow::Result<vigil_models::plates::PlateReader> {
    plate_reader_with(None)
}

/// The plate reader, with another letter threshold if given.
fn plate_reader_with(letter_min_score: Option<f32>) -> anyhow::Result<vigil_models::plates::PlateReader> {
    let here = std::env::current_dir()?;
    let exe = std::env::current_exe().ok();
    let config = vigil_models::plates::PlateConfig::locate(&here)
        .or_else(|| exe.as_deref().and_then(vigil_models::plates::PlateConfig::locate))
        .context("the plate models are not installed here; fix: run scripts/setup-models in the checkout")?;
    let config = vigil_models::plates::PlateConfig {
        letter_min_score: letter_min_score.unwrap_or(config.letter_min_score),
        ..config
    };
    let env = vigil_models::runtime::environment(None)?;
    Ok(vigil_models::plates::PlateReader::new(&env, &config)?)
}

/// `vigil render`: frames and their truth, written as they are drawn (memory stays one frame).
fn render(
    out: &std::path::Path,
    config: Option<&std::path::Path>,
    camera: u32,
    frames: u32,
    size: &str,
    anpr: bool,
) -> anyhow::Result<()> {
    use std::io::Write;
    let settings = match config {
        Some(path) => Settings::load(path)?,
        None => Settings::embedded(),
    };
    let params = settings.sim.clone();
    anyhow::ensure!(
        camera < params.cameras,
        "--camera {camera}: the city has cameras 0 to {}; fix: choose one of them",
        params.cameras.saturating_sub(1)
    );
    let parsed =
        size.split_once('x').and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)));
    let Some((width, height)) = parsed.filter(|&(w, h)| (64..=7680).contains(&w) && (64..=4320).contains(&h))
    else {
        anyhow::bail!(
            "--size {size:?}: not WIDTHxHEIGHT between 64x64 and 7680x4320; fix: e.g. --size 1280x720"
        );
    };
    let mut r = if anpr {
        vigil_pipelines::render::Renderer::anpr(params, camera, width, height)?
    } else {
        vigil_pipelines::render::Renderer::new(params, camera, width, height)
    };
    let truth_path = out.with_extension("truth.jsonl");
    let create = |p: &std::path::Path| {
        std::fs::File::create(p)
            .map(std::io::BufWriter::new)
            .with_context(|| format!("{}: cannot create", p.display()))
    };
    let (mut video, mut truth) = (create(out)?, create(&truth_path)?);
    let mut plates = std::collections::BTreeSet::new();
    for _ in 0..frames {
        let frame = r.next_frame();
        video.write_all(frame.image.as_raw())?;
        writeln!(truth, "{}", serde_json::to_string(&frame.truth)?)?;
        plates.extend(frame.truth.into_iter().filter_map(|t| t.plate));
    }
    video.flush()?;
    truth.flush()?;
    eprintln!(
        "{frames} frames of {width}x{height} to {} (truth: {}); {} plates drawn",
        out.display(),
        truth_path.display(),
        plates.len()
    );
    Ok(())
}

/// A line given as `X1,Y1,X2,Y2` (pixels) on the command line.
fn parse_line(s: &str) -> Result<[f64; 4], String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|x| x.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{s:?}: {e}; fix: write four numbers X1,Y1,X2,Y2, such as 320,0,320,480"))?;
    match v[..] {
        [x1, y1, x2, y2] if v.iter().all(|x| x.is_finite()) && (x1, y1) != (x2, y2) => Ok([x1, y1, x2, y2]),
        _ => Err(format!(
            "{s:?} is not a line; fix: write two different points X1,Y1,X2,Y2, such as 320,0,320,480"
        )),
    }
}

//! Camera ingestion: RTSP sessions with retina, H.264 decoded by OpenH264, frames sampled to
//! the analytics rate, per-camera health.
//!
//! One tokio task per camera ([`spawn`]). A task connects (`DESCRIBE`, `SETUP` over TCP
//! interleaved: retina has no UDP reorder buffer), plays, and decodes every H.264 frame (a P
//! frame needs its predecessors) but converts to RGB and passes on only the frames due at the
//! analytics rate. When the session ends (server closed, killed, frozen past
//! [`CameraSpec::frame_timeout`], bad bytes), the task waits with exponential backoff (doubling
//! from [`CameraSpec::backoff_initial`], capped at [`CameraSpec::backoff_max`], 30 s by default)
//! and reconnects; the backoff resets once a session delivers frames. Tasks share nothing but the
//! sink, so one camera's failure never touches another.
//!
//! Cameras that detect on the device send ONVIF analytics metadata beside (or instead of) the
//! video: when a camera offers it (and [`CameraSpec::onvif`] is on), that stream is set up
//! instead of the video, and its objects go to [`Sinks::objects`] as detections that need no
//! model ([`crate::onvif`]).
//!
//! Event time: a frame's RTP timestamp mapped through the last RTCP sender report of its stream
//! (the camera's wall clock) when there is one, else the receive time. A camera whose clock is
//! off by more than [`CameraSpec::max_skew`] is reported (`clock_skew_ms`) and timed by receive
//! time instead, so a wrong camera clock cannot push its events out of the watermark's reach.
//!
//! Decoding runs on the [`DecodePool`], threads sized to the cores: a task only reads the network
//! and times frames, so a slow decode never holds up another camera's RTSP keep-alives. Frames are
//! sampled to the analytics rate before colour conversion, and the detector batches across
//! cameras. Credentials go to retina's `SessionOptions::creds`, never into URLs or logs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use image::RgbImage;
use retina::client::{
    Credentials, PlayOptions, SessionOptions, SetupOptions, TcpTransportOptions, Transport,
};
use retina::codec::{CodecItem, FrameFormat};
use url::Url;

use crate::decode::{DecodePool, SessionSpec};
use vigil_engine::stream::{Str, Timestamp};
use vigil_operators::detection::EventId;

/// The most objects one frame may hold (what a frame's event ids can tell apart).
pub const MAX_OBJECTS: usize = EventId::MAX_INDEX as usize + 1;

vigil_engine::stream! {
    /// A camera's health, one row per camera every second: connection state, rates, errors and
    /// lag. Its `event_id` packs the run's epoch, the camera and the report's number like a
    /// camera row ([`EventId`]).
    pub struct CameraHealth {
        name: "camera_health",
        class: Aggregate,
        keys: [camera_id, event_time],
        personal: [],
        row: HealthRow,
        builder: HealthRows,
        reader: HealthCols,
        columns: {
            /// The camera.
            camera_id: u32,
            /// When the report was made (receive clock).
            event_time: Timestamp,
            /// See the stream's documentation.
            event_id: u64,
            /// The camera's name.
            camera: Str,
            /// `connecting`, `streaming`, `backoff` or `failed`.
            state: Str,
            /// Frames per second received (decoded) since the last report.
            fps_in: f64,
            /// Frames per second passed on to analytics since the last report.
            fps_out: f64,
            /// Frames dropped by the detection stage, since start.
            frames_dropped: u64,
            /// Frames whose vehicles the plate stage dropped unread (it was behind), since start.
            plates_dropped: u64,
            /// Frames the decoder rejected, since start.
            decode_errors: u64,
            /// Frames refused as bad data (too many objects, ...), since start.
            frames_rejected: u64,
            /// Frames lost to detector errors, since start.
            frames_failed: u64,
            /// Times the camera came back, since start.
            reconnects: u64,
            /// Receive time minus capture time of the last frame, ms.
            lag_ms: Option<f64>,
            /// Camera clock (RTCP sender reports) minus receive clock, ms; null before the first report.
            clock_skew_ms: Option<f64>,
            /// Where event times come from: `rtcp` or `receive`.
            time_source: Str,
            /// The last error, if any.
            last_error: Option<Str>,
        }
    }
}

/// One camera to ingest.
#[derive(Clone)]
pub struct CameraSpec {
    /// Camera id (the `camera_id` of its events).
    pub id: u32,
    /// Name, for humans and health rows.
    pub name: String,
    /// `rtsp://host:port/path`, without credentials.
    pub url: Url,
    /// User and password, if the camera needs them.
    pub credentials: Option<(String, String)>,
    /// Analytics frames per second passed on.
    pub fps: f64,
    /// No frame for this long ends the session (a frozen server sends nothing at all).
    pub frame_timeout: Duration,
    /// First reconnect delay.
    pub backoff_initial: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// A camera clock further than this from the receive clock is not trusted.
    pub max_skew: Duration,
    /// Use the camera's ONVIF analytics metadata when it offers it (its video is then not
    /// decoded for the detector); `false` ignores the metadata and runs the model.
    pub onvif: bool,
}

impl std::fmt::Debug for CameraSpec {
    /// Never prints the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CameraSpec")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("url", &self.url.as_str())
            .field("user", &self.credentials.as_ref().map(|c| &c.0))
            .field("fps", &self.fps)
            .finish()
    }
}

impl CameraSpec {
    /// A camera with the default timeouts (5 s frame timeout, backoff 0.5 s doubling to 30 s,
    /// 2 s clock skew).
    pub fn new(id: u32, name: impl Into<String>, url: Url, fps: f64) -> Self {
        Self {
            id,
            name: name.into(),
            url,
            credentials: None,
            fps,
            frame_timeout: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            max_skew: Duration::from_secs(2),
            onvif: true,
        }
    }

    /// The delay before reconnect attempt `attempt` (0-based): doubling, capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let d = self.backoff_initial.saturating_mul(1u32 << attempt.min(16));
        d.min(self.backoff_max)
    }
}

/// A decoded frame passed on to analytics.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Camera id.
    pub camera: u32,
    /// Frame number within the camera's run (across reconnects).
    pub seq: u64,
    /// Capture time, ms since the Unix epoch.
    pub capture_ms: i64,
    /// The pixels.
    pub image: Arc<RgbImage>,
}

/// Where a camera's event times come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeSource {
    /// RTCP sender reports (the camera's clock).
    Rtcp,
    /// The time frames were received.
    Receive,
}

/// A camera's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CameraState {
    /// Connecting.
    Connecting,
    /// Receiving frames.
    Streaming,
    /// Waiting to reconnect after a failure.
    Backoff,
}

impl CameraState {
    /// The name used in `camera_health`.
    pub fn name(self) -> &'static str {
        match self {
            CameraState::Connecting => "connecting",
            CameraState::Streaming => "streaming",
            CameraState::Backoff => "backoff",
        }
    }
}

/// The part of a camera's health that is not a counter.
#[derive(Clone, Debug)]
pub struct Status {
    /// State.
    pub state: CameraState,
    /// The last error, with its fix.
    pub last_error: Option<String>,
    /// Receive minus capture time of the last frame, ms.
    pub lag_ms: Option<f64>,
    /// Camera clock minus receive clock at the last sender report, ms.
    pub clock_skew_ms: Option<f64>,
    /// Time source in use.
    pub time_source: TimeSource,
    /// When the last session started delivering frames.
    pub streaming_since: Option<Instant>,
    /// The delay chosen before the current reconnect attempt.
    pub backoff: Option<Duration>,
}

/// A camera's health: counters (lock-free, bumped on the hot path) and status.
#[derive(Debug)]
pub struct Health {
    /// Camera id.
    pub camera: u32,
    /// Camera name.
    pub name: String,
    /// Frames received (or ONVIF metadata documents).
    pub frames_in: AtomicU64,
    /// Frames passed on to analytics (or ONVIF metadata frames passed on as objects).
    pub frames_out: AtomicU64,
    /// Frames dropped by the detection stage's policy.
    pub frames_dropped: AtomicU64,
    /// Frames whose vehicles the plate stage dropped unread.
    pub plates_dropped: AtomicU64,
    /// Frames the decoder rejected.
    pub decode_errors: AtomicU64,
    /// Frames refused as bad data (more objects than a frame may hold, ...): counted, skipped.
    pub frames_rejected: AtomicU64,
    /// Frames lost to detector errors.
    pub frames_failed: AtomicU64,
    /// Times the camera came back: sessions that delivered frames, after the first.
    pub reconnects: AtomicU64,
    /// Sessions that delivered frames.
    pub sessions: AtomicU64,
    /// Connection attempts, failed or not.
    pub attempts: AtomicU64,
    /// Status.
    pub status: Mutex<Status>,
    /// When a refused frame was last logged, and how many were refused unlogged since.
    refusals: Mutex<Quiet>,
}

impl Health {
    /// A camera about to connect.
    pub fn new(camera: u32, name: &str) -> Self {
        Self {
            camera,
            name: name.to_owned(),
            frames_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            frames_dropped: AtomicU64::new(0),
            plates_dropped: AtomicU64::new(0),
            decode_errors: AtomicU64::new(0),
            frames_rejected: AtomicU64::new(0),
            frames_failed: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            sessions: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            status: Mutex::new(Status {
                state: CameraState::Connecting,
                last_error: None,
                lag_ms: None,
                clock_skew_ms: None,
                time_source: TimeSource::Receive,
                streaming_since: None,
                backoff: None,
            }),
            refusals: Mutex::new(Quiet::default()),
        }
    }

    /// Counts a frame refused as bad data (`why`) and logs it (`vigil::camera`, warn), at most
    /// once a minute: a camera that sends bad data sends it at every frame, and the count is in
    /// the health rows' `frames_rejected` anyway.
    pub(crate) fn refused(&self, why: impl std::fmt::Display) {
        self.frames_rejected.fetch_add(1, Ordering::Relaxed);
        let unsaid = self.refusals.lock().expect("camera refusals").admit(Instant::now(), REFUSALS_EVERY);
        let Some(unsaid) = unsaid else { return };
        let camera = self.camera;
        let more = match unsaid {
            0 => String::new(),
            n => format!(" ({n} more refused since the last such line)"),
        };
        tracing::warn!(target: "vigil::camera", camera, "camera {camera} ({}): frame refused: {why}{more}", self.name);
    }

    /// A copy of the status.
    pub fn status(&self) -> Status {
        self.status.lock().expect("camera status").clone()
    }

    /// Counts a session that delivers its first frame (`what` it delivers), a reconnect if it
    /// is not the first, and logs it (target `vigil::camera`, on by default): the operator's
    /// record of when a camera came up, or back up after it failed.
    pub(crate) fn came_up(&self, what: &str) {
        let (name, camera) = (&self.name, self.camera);
        if self.sessions.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::info!(target: "vigil::camera", camera, "camera {camera} ({name}): streaming, {what}");
        } else {
            let n = self.reconnects.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::info!(target: "vigil::camera", camera, "camera {camera} ({name}): streaming again, {what} (reconnect {n})");
        }
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().expect("camera status"));
    }
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum CameraError {
    /// 401 from the server.
    #[error(
        "camera {camera} ({url}): the server refused the credentials (401); fix: check the camera's user and password_env / password_file"
    )]
    Unauthorized {
        /// Camera id.
        camera: u32,
        /// URL.
        url: String,
    },
    /// 404 from the server.
    #[error("camera {camera} ({url}): no stream at this path (404); fix: check the path in the camera's url")]
    NotFound {
        /// Camera id.
        camera: u32,
        /// URL.
        url: String,
    },
    /// The camera offers no H.264 video.
    #[error(
        "camera {camera} ({url}): video codec {codec} is not supported; fix: set the camera's stream to H.264"
    )]
    Codec {
        /// Camera id.
        camera: u32,
        /// URL.
        url: String,
        /// What the camera offers.
        codec: String,
    },
    /// Anything else RTSP reported (connection refused, bad bytes, closed).
    #[error("camera {camera} ({url}): {message}")]
    Rtsp {
        /// Camera id.
        camera: u32,
        /// URL.
        url: String,
        /// retina's message.
        message: String,
    },
    /// No frame within the frame timeout.
    #[error("camera {camera} ({url}): no frame for {secs:.1} s (server frozen or network down)")]
    Frozen {
        /// Camera id.
        camera: u32,
        /// URL.
        url: String,
        /// The timeout.
        secs: f64,
    },
    /// The server ended the stream.
    #[error("camera {camera} ({url}): the server ended the stream")]
    Ended {
        /// Camera id.
        camera: u32,
        /// URL.
        url: String,
    },
}

/// Receives a camera's decoded frames.
pub type FrameSink = Arc<dyn Fn(Frame) + Send + Sync>;

/// Objects a camera detected itself (ONVIF analytics metadata), for one `tt:Frame`.
#[derive(Clone, Debug)]
pub struct CameraObjects {
    /// Camera id.
    pub camera: u32,
    /// Sequence number, shared with the camera's frames (event ids stay unique).
    pub seq: u64,
    /// Event time, ms since the Unix epoch.
    pub capture_ms: i64,
    /// The video's size when known (boxes are mapped to its pixels), else `None`.
    pub frame_size: Option<(u32, u32)>,
    /// The objects.
    pub objects: Vec<crate::onvif::OnvifObject>,
}

/// Receives a camera's own detections.
pub type ObjectSink = Arc<dyn Fn(CameraObjects) + Send + Sync>;

/// Where a camera's output goes.
#[derive(Clone)]
pub struct Sinks {
    /// Decoded frames, for the detector.
    pub frames: FrameSink,
    /// Objects from ONVIF metadata, which need no model.
    pub objects: ObjectSink,
}

fn wall_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Milliseconds since the Unix epoch of an NTP timestamp (seconds since 1900 in the upper 32
/// bits, a binary fraction in the lower 32).
pub fn ntp_to_unix_ms(ntp: u64) -> i64 {
    const EPOCH_DELTA_S: i64 = 2_208_988_800;
    let secs = (ntp >> 32) as i64 - EPOCH_DELTA_S;
    let frac_ms = ((ntp & 0xFFFF_FFFF) * 1000) >> 32;
    secs * 1000 + frac_ms as i64
}

/// Starts a camera's task on `rt`, decoding on `pool`.
pub fn spawn(
    rt: &tokio::runtime::Handle,
    pool: Arc<DecodePool>,
    spec: CameraSpec,
    sink: Sinks,
    health: Arc<Health>,
) -> tokio::task::JoinHandle<()> {
    rt.spawn(async move {
        let mut attempt = 0u32;
        // The camera's frame numbers, across its sessions (event ids stay unique).
        let seq = Arc::new(AtomicU64::new(0));
        loop {
            health.update(|s| s.state = CameraState::Connecting);
            health.attempts.fetch_add(1, Ordering::Relaxed);
            let result = session(&spec, &pool, &sink, &health, &seq).await;
            let delivered = health.status().streaming_since.is_some();
            if delivered {
                attempt = 0;
            }
            let err = match result {
                Ok(()) => CameraError::Ended { camera: spec.id, url: spec.url.to_string() },
                Err(e) => e,
            };
            let delay = spec.backoff(attempt);
            attempt = attempt.saturating_add(1);
            tracing::warn!(target: "vigil::camera", camera = spec.id, "{err}; reconnecting in {:.1} s", delay.as_secs_f64());
            health.update(|s| {
                s.state = CameraState::Backoff;
                s.last_error = Some(err.to_string());
                s.streaming_since = None;
                s.backoff = Some(delay);
            });
            tokio::time::sleep(delay).await;
        }
    })
}

/// The sender-report mapping of a stream: RTP time ↔ camera wall time.
#[derive(Clone, Copy)]
struct SenderReport {
    rtp: i64,
    unix_ms: i64,
    clock_rate: u32,
}

async fn session(
    spec: &CameraSpec,
    pool: &DecodePool,
    sink: &Sinks,
    health: &Arc<Health>,
    seq: &Arc<AtomicU64>,
) -> Result<(), CameraError> {
    let url = spec.url.to_string();
    let rtsp = |e: retina::Error| match e.status_code() {
        Some(401) => CameraError::Unauthorized { camera: spec.id, url: url.clone() },
        Some(404) => CameraError::NotFound { camera: spec.id, url: url.clone() },
        _ => CameraError::Rtsp { camera: spec.id, url: url.clone(), message: first_line(&e.to_string()) },
    };
    let frozen =
        || CameraError::Frozen { camera: spec.id, url: url.clone(), secs: spec.frame_timeout.as_secs_f64() };
    let mut options = SessionOptions::default().user_agent("vigil".into());
    if let Some((user, password)) = &spec.credentials {
        options = options.creds(Some(Credentials { username: user.clone(), password: password.clone() }));
    }
    let mut described = tokio::time::timeout(
        spec.frame_timeout,
        retina::client::Session::describe(spec.url.clone(), options),
    )
    .await
    .map_err(|_| frozen())?
    .map_err(rtsp)?;
    let streams = described.streams();
    let meta = streams
        .iter()
        .position(|s| {
            s.media() == "application" && s.encoding_name().eq_ignore_ascii_case("vnd.onvif.metadata")
        })
        .filter(|_| spec.onvif);
    let video = streams.iter().position(|s| s.media() == "video");
    // Box pixels for the metadata come from the video's parameter sets, without decoding.
    let frame_size = video.and_then(|v| match streams[v].parameters() {
        Some(retina::codec::ParametersRef::Video(p)) => Some(p.pixel_dimensions()),
        _ => None,
    });
    let codec = video.map(|v| streams[v].encoding_name().to_ascii_lowercase());
    // A camera that detects on the device sends its objects as metadata: its video is not
    // decoded. Otherwise H.264 video is decoded for the detector; other codecs are reported.
    let video = match (video, codec.as_deref()) {
        _ if meta.is_some() => None,
        (Some(v), Some("h264")) => Some(v),
        (_, c) => {
            let codec = c.map_or_else(|| "none (no video stream)".to_owned(), str::to_owned);
            return Err(CameraError::Codec { camera: spec.id, url: url.clone(), codec });
        }
    };
    let clock_rate = video.map_or(90_000, |v| streams[v].clock_rate_hz());
    for (i, format) in [(video, FrameFormat::SIMPLE), (meta, FrameFormat::default())] {
        let Some(i) = i else { continue };
        let setup = SetupOptions::default()
            .transport(Transport::Tcp(TcpTransportOptions::default()))
            .frame_format(format);
        tokio::time::timeout(spec.frame_timeout, described.setup(i, setup))
            .await
            .map_err(|_| frozen())?
            .map_err(rtsp)?;
    }
    // Stream ids of interest (usize::MAX: none).
    let (video, meta) = (video.unwrap_or(usize::MAX), meta.unwrap_or(usize::MAX));
    let playing = tokio::time::timeout(spec.frame_timeout, described.play(PlayOptions::default()))
        .await
        .map_err(|_| frozen())?
        .map_err(rtsp)?;
    let mut demuxed = playing.demuxed().map_err(rtsp)?;
    let decoding = pool
        .open(SessionSpec {
            camera: spec.id,
            fps: spec.fps,
            seq: Arc::clone(seq),
            health: Arc::clone(health),
            sink: Arc::clone(&sink.frames),
        })
        .map_err(|e| CameraError::Rtsp {
            camera: spec.id,
            url: url.clone(),
            message: format!("H.264 decoder: {e}"),
        })?;
    let mut report: Option<SenderReport> = None;
    let mut reports = 0u64;
    loop {
        let item = tokio::time::timeout(spec.frame_timeout, demuxed.next()).await.map_err(|_| frozen())?;
        let item = match item {
            None => return Ok(()),
            Some(Err(e)) => return Err(rtsp(e)),
            Some(Ok(item)) => item,
        };
        match item {
            CodecItem::Rtcp(pkt) if pkt.stream_id() == video => {
                let Some(ts) = pkt.rtp_timestamp() else { continue };
                let Some(Ok(Some(sr))) = pkt.pkts().next().map(|p| p.as_sender_report()) else { continue };
                let unix_ms = ntp_to_unix_ms(sr.ntp_timestamp().0);
                report = Some(SenderReport { rtp: ts.timestamp(), unix_ms, clock_rate });
                let skew = unix_ms - wall_ms();
                let trusted = skew.unsigned_abs() <= spec.max_skew.as_millis() as u64;
                let source = if trusted { TimeSource::Rtcp } else { TimeSource::Receive };
                let was = {
                    let mut s = health.status.lock().expect("camera status");
                    s.clock_skew_ms = Some(skew as f64);
                    std::mem::replace(&mut s.time_source, source)
                };
                let (camera, name) = (spec.id, &spec.name);
                match clock_news(reports == 0, was, source) {
                    Some(TimeSource::Receive) => tracing::warn!(
                        target: "vigil::camera",
                        camera,
                        "camera {camera} ({name}): its clock is off by {skew} ms: timing its frames by receive time; fix: set the camera's NTP server"
                    ),
                    Some(TimeSource::Rtcp) => tracing::info!(
                        target: "vigil::camera",
                        camera,
                        "camera {camera} ({name}): its clock is right again (off by {skew} ms): timing its frames by it"
                    ),
                    None => {}
                }
                reports += 1;
            }
            CodecItem::MessageFrame(m) if m.stream_id() == meta => {
                let received = wall_ms();
                health.frames_in.fetch_add(1, Ordering::Relaxed);
                let frames = match crate::onvif::parse(m.data()) {
                    Ok(f) => f,
                    Err(e) => {
                        health.decode_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(target: "vigil::camera", camera = spec.id, "{e}");
                        continue;
                    }
                };
                for f in frames {
                    // A frame holds at most as many objects as event ids can tell apart: one
                    // that claims more is bad data, refused and counted, never the end of the run.
                    if f.objects.len() > MAX_OBJECTS {
                        health.refused(format_args!(
                            "ONVIF frame with {} objects (at most {MAX_OBJECTS})",
                            f.objects.len()
                        ));
                        continue;
                    }
                    // The camera's own timestamp when its clock is right, else the receive time.
                    let capture_ms = f
                        .utc_ms
                        .filter(|t| (t - received).unsigned_abs() <= spec.max_skew.as_millis() as u64)
                        .unwrap_or(received);
                    health.frames_out.fetch_add(1, Ordering::Relaxed);
                    (sink.objects)(CameraObjects {
                        camera: spec.id,
                        seq: seq.fetch_add(1, Ordering::Relaxed) + 1,
                        capture_ms,
                        frame_size,
                        objects: f.objects,
                    });
                }
                let first = {
                    let mut s = health.status.lock().expect("camera status");
                    let first = s.streaming_since.is_none();
                    if first {
                        s.state = CameraState::Streaming;
                        s.streaming_since = Some(Instant::now());
                    }
                    first
                };
                if first {
                    health.came_up("ONVIF metadata");
                }
            }
            CodecItem::VideoFrame(frame) => {
                let received = wall_ms();
                health.frames_in.fetch_add(1, Ordering::Relaxed);
                // One lock per frame: which clock times it, and the lag it shows.
                let capture_ms = {
                    let mut s = health.status.lock().expect("camera status");
                    let capture_ms = match (report, s.time_source) {
                        (Some(r), TimeSource::Rtcp) => {
                            r.unix_ms
                                + (frame.timestamp().timestamp() - r.rtp) * 1000
                                    / i64::from(r.clock_rate.max(1))
                        }
                        _ => received,
                    };
                    s.lag_ms = Some((received - capture_ms) as f64);
                    capture_ms
                };
                // Decoded, sampled and passed on by the pool; this waits only when it is full.
                if decoding.send(frame.into_data(), capture_ms).await.is_err() {
                    return Ok(());
                }
            }
            _ => {}
        }
    }
}

/// What a sender report that moves a camera's time source from `was` to `now` has to say: the
/// time source to log, or nothing. A clock that goes wrong (or is wrong at a session's `first`
/// report) is said, and one that comes right again, but not every report: a camera whose
/// clock is off sends one every few seconds for as long as it runs.
fn clock_news(first: bool, was: TimeSource, now: TimeSource) -> Option<TimeSource> {
    match (now, was) {
        (TimeSource::Receive, _) if first => Some(now),
        (TimeSource::Rtcp, _) if first => None,
        (now, was) if now != was => Some(now),
        _ => None,
    }
}

/// How often a camera's refused frames are logged.
const REFUSALS_EVERY: Duration = Duration::from_secs(60);

/// A log line's rate limit: the first event is said, then at most one every period, with the
/// count of those left unsaid since. Written here as it is a few lines: `tracing` has no rate
/// limit of its own, and a general limiter (governor) would not count what it held back.
#[derive(Debug, Default)]
struct Quiet {
    last: Option<Instant>,
    unsaid: u64,
}

impl Quiet {
    /// An event at `now`: `Some(unsaid since the last line)` when it is to be said.
    fn admit(&mut self, now: Instant, every: Duration) -> Option<u64> {
        if self.last.is_some_and(|t| now.saturating_duration_since(t) < every) {
            self.unsaid += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unsaid))
    }
}

/// retina's errors carry a multi-line context dump; the first line says what happened.
fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap() {
        let spec = CameraSpec::new(1, "c", Url::parse("rtsp://127.0.0.1/x").unwrap(), 10.0);
        let delays: Vec<u64> = (0..9).map(|a| spec.backoff(a).as_millis() as u64).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        assert_eq!(spec.backoff(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn a_wrong_clock_is_said_when_it_goes_wrong_and_when_it_comes_right_not_at_every_report() {
        use TimeSource::{Receive, Rtcp};
        // A session's reports, as the camera's clock is right, wrong three times, right twice.
        let sources = [Rtcp, Receive, Receive, Receive, Rtcp, Rtcp];
        let (mut was, mut said) = (Receive, Vec::new());
        for (i, &now) in sources.iter().enumerate() {
            said.push(clock_news(i == 0, was, now));
            was = now;
        }
        assert_eq!(said, [None, Some(Receive), None, None, Some(Rtcp), None]);
        // Wrong from a session's first report, even when the last session ended wrong too.
        assert_eq!(clock_news(true, Receive, Receive), Some(Receive));
        assert_eq!(clock_news(true, Receive, Rtcp), None);
    }

    #[test]
    fn refusals_are_said_once_a_period_with_the_count_held_back() {
        let (t0, every) = (Instant::now(), Duration::from_secs(60));
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut q = Quiet::default();
        // Ten a second for two minutes and a half: the first, then one a minute.
        let said: Vec<(u64, u64)> =
            (0..1500u64).filter_map(|i| q.admit(at(i / 10), every).map(|n| (i / 10, n))).collect();
        assert_eq!(said, [(0, 0), (60, 599), (120, 599)]);
        // Quiet for a while: the next is said at once, with those held back before.
        assert_eq!(q.admit(at(400), every), Some(299));
        assert_eq!(q.admit(at(401), every), None);
    }

    #[test]
    fn ntp_times_map_to_unix_milliseconds() {
        // 2026-06-14T20:00:00.500Z: seconds since 1900, and half a second as a fraction.
        let unix_s: u64 = 1_781_467_200;
        let ntp = ((unix_s + 2_208_988_800) << 32) | (1u64 << 31);
        assert_eq!(ntp_to_unix_ms(ntp), unix_s as i64 * 1000 + 500);
    }

    #[test]
    fn debug_never_shows_the_password() {
        let mut spec = CameraSpec::new(1, "c", Url::parse("rtsp://127.0.0.1/x").unwrap(), 10.0);
        spec.credentials = Some(("viewer".into(), "s3cret-pass".into()));
        let shown = format!("{spec:?}");
        assert!(shown.contains("viewer") && !shown.contains("s3cret"), "{shown}");
    }
}

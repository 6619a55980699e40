//! The decode pool: every camera's H.264 decoded on a fixed set of threads sized to the cores,
//! apart from the tasks that read the network.
//!
//! A camera task only reads RTSP and times frames; it hands each encoded frame to its
//! [`Decoding`] session, which lives on one pool thread for its whole life (a P frame needs the
//! decoder that saw its predecessors, so a session never moves). Sessions go to the thread with
//! the fewest open, so a city's cameras spread evenly. On its thread a frame is decoded, sampled
//! to the analytics rate (only frames due are converted to RGB: the conversion costs about as much
//! as the decode), and passed on; the detector batches what all cameras send ([`crate::detect`]).
//!
//! Each thread has a bounded queue. When decoding falls behind, a camera task waits to enqueue,
//! so TCP pushes back on the camera and the camera's lag (`lag_ms` in `camera_health`) shows it;
//! frames are never dropped between a decoder and its session (that would corrupt every P frame
//! up to the next key frame).
//!
//! Why not tokio's blocking pool: `spawn_blocking` would run a camera's frames on any thread, in
//! any order, and grows to 512 threads; decoding wants a fixed set of threads, one owner per
//! decoder and per-camera order, which a plain channel per thread gives.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use image::RgbImage;
use openh264::formats::YUVSource;
use tokio::sync::mpsc;

use crate::camera::{CameraState, Frame, FrameSink, Health};

/// Encoded frames a pool thread holds at most before camera tasks wait: enough to smooth a key
/// frame's longer decode, small enough that an overloaded pool pushes back within a fraction of
/// a second instead of hiding seconds of lag in its queue.
const QUEUE: usize = 16;

/// Threads that decode every camera's video.
pub struct DecodePool {
    threads: Vec<Thread>,
}

struct Thread {
    tx: mpsc::Sender<Job>,
    /// Sessions open on this thread.
    sessions: Arc<AtomicUsize>,
}

/// One encoded frame and the session it belongs to.
struct Job {
    session: Arc<Mutex<Session>>,
    data: Vec<u8>,
    capture_ms: i64,
}

/// A camera session's decoder and sampling state, owned by one pool thread.
struct Session {
    decoder: openh264::decoder::Decoder,
    camera: u32,
    period_ms: f64,
    next_due: f64,
    seq: Arc<AtomicU64>,
    health: Arc<Health>,
    sink: FrameSink,
    /// Set once the session has decoded a frame.
    streaming: bool,
    /// The thread's session count, decremented when the session ends.
    open: Arc<AtomicUsize>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where a camera session's frames go to be decoded. Dropping it ends the session once its
/// queued frames are decoded.
pub struct Decoding {
    session: Arc<Mutex<Session>>,
    tx: mpsc::Sender<Job>,
}

/// What a session needs besides its frames.
pub struct SessionSpec {
    /// The camera.
    pub camera: u32,
    /// Analytics frames per second (frames in between are decoded, not converted or passed on).
    pub fps: f64,
    /// The camera's frame numbers, shared by its sessions (event ids stay unique).
    pub seq: Arc<AtomicU64>,
    /// Its health counters.
    pub health: Arc<Health>,
    /// Where due frames go.
    pub sink: FrameSink,
}

/// The pool has shut down (the process is stopping).
#[derive(Debug, thiserror::Error)]
#[error("the decode pool has stopped")]
pub struct Stopped;

impl DecodePool {
    /// Starts `threads` decode threads (0: one per core).
    pub fn new(threads: usize) -> std::io::Result<DecodePool> {
        let n =
            if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
        let threads = (0..n)
            .map(|i| {
                let (tx, mut rx) = mpsc::channel::<Job>(QUEUE);
                std::thread::Builder::new().name(format!("decode-{i}")).spawn(move || {
                    while let Some(job) = rx.blocking_recv() {
                        job.run();
                    }
                })?;
                Ok(Thread { tx, sessions: Arc::default() })
            })
            .collect::<std::io::Result<_>>()?;
        Ok(DecodePool { threads })
    }

    /// Sessions open on each thread.
    pub fn load(&self) -> Vec<usize> {
        self.threads.iter().map(|t| t.sessions.load(Ordering::Relaxed)).collect()
    }

    /// Opens a decoder for a camera session on the least loaded thread.
    pub fn open(&self, spec: SessionSpec) -> Result<Decoding, openh264::Error> {
        let thread =
            self.threads.iter().min_by_key(|t| t.sessions.load(Ordering::Relaxed)).expect("a thread");
        let decoder = openh264::decoder::Decoder::new()?;
        thread.sessions.fetch_add(1, Ordering::Relaxed);
        let session = Session {
            decoder,
            camera: spec.camera,
            period_ms: 1000.0 / spec.fps.max(0.001),
            next_due: f64::MIN,
            seq: spec.seq,
            health: spec.health,
            sink: spec.sink,
            streaming: false,
            open: Arc::clone(&thread.sessions),
        };
        Ok(Decoding { session: Arc::new(Mutex::new(session)), tx: thread.tx.clone() })
    }
}

impl Decoding {
    /// Queues an encoded frame (Annex B) captured at `capture_ms`; waits while its thread's
    /// queue is full.
    pub async fn send(&self, data: Vec<u8>, capture_ms: i64) -> Result<(), Stopped> {
        let job = Job { session: Arc::clone(&self.session), data, capture_ms };
        self.tx.send(job).await.map_err(|_| Stopped)
    }

    /// [`Decoding::send`] from a thread outside tokio.
    pub fn blocking_send(&self, data: Vec<u8>, capture_ms: i64) -> Result<(), Stopped> {
        let job = Job { session: Arc::clone(&self.session), data, capture_ms };
        self.tx.blocking_send(job).map_err(|_| Stopped)
    }
}

impl Job {
    fn run(self) {
        // Only this thread locks a session (its handle never does), so the lock is uncontended.
        let mut s = self.session.lock().expect("decode session");
        let s = &mut *s;
        let yuv = match s.decoder.decode(&self.data) {
            Ok(Some(yuv)) => yuv,
            Ok(None) => return,
            Err(e) => {
                s.health.decode_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(target: "vigil::camera", camera = s.camera, "decode error: {e}");
                return;
            }
        };
        let (w, h) = yuv.dimensions();
        if !s.streaming {
            s.streaming = true;
            // A session that ended before its first frame was decoded leaves the state alone.
            s.health.update(|st| {
                if st.state == CameraState::Connecting {
                    st.state = CameraState::Streaming;
                    st.streaming_since = Some(Instant::now());
                    st.backoff = None;
                }
            });
            s.health.came_up(&format!("H.264 {w}×{h}"));
        }
        // Sampling: a frame is due when the analytics period has passed since the last one
        // (within a quarter period, so 25 fps sampled to 10 does not alias into 8.3).
        let t = self.capture_ms as f64;
        if t + s.period_ms * 0.25 < s.next_due {
            return;
        }
        s.next_due = if t - s.next_due > s.period_ms { t + s.period_ms } else { s.next_due + s.period_ms };
        // Converted straight into the frame's own buffer: it is shared (Arc) from here on.
        let mut rgb = vec![0u8; w * h * 3];
        yuv.write_rgb8(&mut rgb);
        let Some(image) = RgbImage::from_raw(w as u32, h as u32, rgb) else { return };
        let seq = s.seq.fetch_add(1, Ordering::Relaxed) + 1;
        s.health.frames_out.fetch_add(1, Ordering::Relaxed);
        (s.sink)(Frame { camera: s.camera, seq, capture_ms: self.capture_ms, image: Arc::new(image) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openh264::formats::{RgbSliceU8, YUVBuffer};

    /// `n` encoded frames of a moving square, `w × h`; frames in `key` are key frames.
    fn encoded(w: usize, h: usize, n: usize, key: &[usize]) -> Vec<Vec<u8>> {
        let mut enc = openh264::encoder::Encoder::new().expect("encoder");
        (0..n)
            .map(|i| {
                let mut rgb = vec![40u8; w * h * 3];
                for y in 10..30 {
                    for x in (i * 3 % (w - 20))..(i * 3 % (w - 20) + 20) {
                        rgb[(y * w + x) * 3] = 250;
                    }
                }
                if key.contains(&i) {
                    enc.force_intra_frame();
                }
                let yuv = YUVBuffer::from_rgb8_source(RgbSliceU8::new(&rgb, (w, h)));
                enc.encode(&yuv).expect("encode").to_vec()
            })
            .collect()
    }

    fn session(
        pool: &DecodePool,
        camera: u32,
        fps: f64,
        out: Arc<Mutex<Vec<Frame>>>,
    ) -> (Decoding, Arc<Health>) {
        let health = Arc::new(Health::new(camera, "c"));
        let sink: FrameSink = Arc::new(move |f| out.lock().unwrap().push(f));
        let spec = SessionSpec { camera, fps, seq: Arc::default(), health: Arc::clone(&health), sink };
        (pool.open(spec).expect("decoder"), health)
    }

    #[test]
    fn sessions_spread_over_threads_and_keep_their_order() {
        let pool = DecodePool::new(2).unwrap();
        let packets = encoded(64, 48, 30, &[]);
        let out = Arc::new(Mutex::new(Vec::new()));
        let cams: Vec<_> = (1..=4).map(|c| session(&pool, c, 1000.0, Arc::clone(&out))).collect();
        assert_eq!(pool.load(), [2, 2]);
        for (i, p) in packets.iter().enumerate() {
            for (d, _) in &cams {
                d.blocking_send(p.clone(), i as i64 * 40).unwrap();
            }
        }
        let health: Vec<_> = cams.iter().map(|(_, h)| Arc::clone(h)).collect();
        drop(cams);
        // Sessions end once their frames are decoded.
        let t0 = Instant::now();
        while pool.load() != [0, 0] {
            assert!(t0.elapsed().as_secs() < 20, "sessions still open: {:?}", pool.load());
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let frames = out.lock().unwrap();
        for c in 1..=4u32 {
            let mine: Vec<&Frame> = frames.iter().filter(|f| f.camera == c).collect();
            assert!(mine.len() >= 28, "camera {c}: {} of 30 frames", mine.len());
            assert!(mine.windows(2).all(|w| w[0].seq + 1 == w[1].seq && w[0].capture_ms < w[1].capture_ms));
            assert_eq!((mine[0].image.width(), mine[0].image.height()), (64, 48));
        }
        for h in health {
            assert_eq!(h.status().state, CameraState::Streaming);
            assert_eq!(h.decode_errors.load(Ordering::Relaxed), 0);
        }
    }

    #[test]
    fn only_due_frames_are_passed_on() {
        let pool = DecodePool::new(1).unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let (d, health) = session(&pool, 7, 10.0, Arc::clone(&out));
        // 50 frames at 25 fps sampled to 10 fps: 2 s, 20 frames.
        for (i, p) in encoded(64, 48, 50, &[]).into_iter().enumerate() {
            d.blocking_send(p, i as i64 * 40).unwrap();
        }
        drop(d);
        while pool.load() != [0] {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let n = out.lock().unwrap().len();
        assert!((19..=21).contains(&n), "{n} frames passed on");
        assert_eq!(health.frames_out.load(Ordering::Relaxed), n as u64);
    }

    #[test]
    fn bad_bytes_are_counted_and_the_session_recovers_at_the_next_key_frame() {
        let pool = DecodePool::new(1).unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let (d, health) = session(&pool, 3, 1000.0, Arc::clone(&out));
        let packets = encoded(64, 48, 20, &[10]);
        for (i, p) in packets.iter().enumerate() {
            if i == 5 {
                // A slice whose header and data are noise, as a broken camera might send.
                d.blocking_send(vec![0, 0, 0, 1, 0x65, 0xff, 0xff, 0x00, 0x13, 0x77, 0x01], 190).unwrap();
            }
            d.blocking_send(p.clone(), 40 * i as i64).unwrap();
        }
        drop(d);
        while pool.load() != [0] {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let frames = out.lock().unwrap();
        let times: Vec<i64> = frames.iter().map(|f| f.capture_ms).collect();
        // Everything before the bad bytes and from the next key frame on is decoded.
        for i in (0..5).chain(10..20) {
            assert!(times.contains(&(40 * i)), "frame {i} missing: {times:?}");
        }
        assert!(health.decode_errors.load(Ordering::Relaxed) >= 1, "the bad slice was not counted");
        assert_eq!(health.frames_out.load(Ordering::Relaxed), frames.len() as u64);
    }
}

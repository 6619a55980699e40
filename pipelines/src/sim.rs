//! The city simulator: a deterministic stand-in for cameras, detectors and plate readers.
//!
//! Each camera views a 40 m × 22.5 m patch of ground (cameras on a 100 m grid) through a
//! 1280 × 720 image at 32 px/m. Pedestrians walk between random waypoints; a scheduled surge
//! brings extra people to a zone and disperses them; vehicles cross each view with Moroccan
//! plates, and watchlisted plates pass a camera every few seconds. What a camera emits is what a
//! detector and plate reader would: boxes with pixel noise, misses and false positives, and
//! plate texts in the many readings real OCR produces (Latin letters, Eastern Arabic digits,
//! right-to-left), some with errors. Every camera has its own random stream seeded from (seed,
//! camera), so the output depends only on the seed, the configuration and the frame index:
//! never on the wall clock, the machine's speed or the number of workers.
//!
//! Some cameras are *laggy*: their frames reach ingest late, occasionally beyond the allowed
//! lateness, which exercises the late-events path.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::config::Config;

/// Pixels per metre of every simulated camera.
pub const PX_PER_M: f64 = 32.0;
/// Image size.
pub const IMAGE: [f64; 2] = [1280.0, 720.0];
/// Ground size of a view, metres.
pub const VIEW_M: [f64; 2] = [IMAGE[0] / PX_PER_M, IMAGE[1] / PX_PER_M];

/// The ground origin of a scene (scenes on a 10-wide grid, 100 m apart).
fn scene_origin(scene: u32) -> [f64; 2] {
    [f64::from(scene % 10) * 100.0, f64::from(scene / 10) * 100.0]
}

/// One simulated object seen in a frame: ground truth plus what the detector reported.
#[derive(Clone, Debug)]
pub struct SimObject {
    /// True identity (stable over time within a camera).
    pub object_id: u64,
    /// Class.
    pub class: &'static str,
    /// True ground position, metres.
    pub truth: [f64; 2],
    /// What the detector reported: box `[x, y, w, h]` in pixels and score; `None` when missed.
    pub detected: Option<([f32; 4], f32)>,
}

/// A plate read in a frame.
#[derive(Clone, Debug)]
pub struct SimPlateRead {
    /// The true canonical plate.
    pub truth: String,
    /// The text as the reader produced it.
    pub text: String,
    /// Reader confidence.
    pub confidence: f32,
}

/// Everything one camera produced for one frame.
#[derive(Clone, Debug)]
pub struct SimFrame {
    /// The camera.
    pub camera: u32,
    /// Frame index from the start.
    pub frame: u64,
    /// Capture time, ms.
    pub capture_ms: i64,
    /// When the frame reaches ingest, ms (capture + network delay).
    pub deliver_ms: i64,
    /// Objects (true and false positives; false positives have `object_id = u64::MAX`).
    pub objects: Vec<SimObject>,
    /// Plate reads.
    pub plates: Vec<SimPlateRead>,
}

#[derive(Clone, Debug)]
struct Walker {
    id: u64,
    pos: [f64; 2],
    goal: [f64; 2],
    speed: f64,
}

#[derive(Clone, Debug)]
struct Vehicle {
    id: u64,
    plate: String,
    enter_frame: u64,
    frames: u64,
    lane_y: f64,
    read_done: bool,
}

/// Simulation parameters derived from the configuration.
#[derive(Clone, Debug)]
pub struct SimParams {
    /// Seed.
    pub seed: u64,
    /// Clock start, ms.
    pub start_ms: i64,
    /// Frames per second.
    pub fps: f64,
    /// Cameras.
    pub cameras: u32,
    /// Pedestrians per camera.
    pub pedestrians: usize,
    /// Vehicles per camera per minute.
    pub vehicles_per_minute: f64,
    /// Detector miss probability.
    pub miss_rate: f64,
    /// Spurious boxes per frame.
    pub false_positive_rate: f64,
    /// Box noise, px.
    pub noise_px: f64,
    /// OCR error probability.
    pub ocr_error_rate: f64,
    /// Every n-th camera is laggy (0: none).
    pub laggy_every: u32,
    /// Surge: (camera, polygon bounding box, start s, ramp s, hold s, people).
    pub surge: Option<(u32, [f64; 4], f64, f64, f64, usize)>,
    /// Watchlisted plates, and `[simulation] plates`, that drive around (canonical form).
    pub watch_plates: Vec<String>,
    /// Cameras per scene: consecutive cameras share one scene, their views shifted along x.
    pub overlap: u32,
    /// Shift between the views of one scene, metres.
    pub overlap_shift_m: f64,
}

impl SimParams {
    /// Reads the parameters from a validated configuration (what [`Settings`] does once).
    ///
    /// [`Settings`]: crate::settings::Settings
    pub fn from_config(c: &Config) -> SimParams {
        let s = &c.simulation;
        let surge = s.surge.as_ref().and_then(|surge| {
            let z = c.zones.iter().find(|z| z.name.get_ref() == surge.zone.get_ref())?;
            let bb = z.polygon.get_ref().iter().fold([f64::MAX, f64::MAX, f64::MIN, f64::MIN], |b, p| {
                [b[0].min(p[0]), b[1].min(p[1]), b[2].max(p[0]), b[3].max(p[1])]
            });
            Some((
                z.camera_ids().first().copied().unwrap_or(0),
                bb,
                *surge.at_s.get_ref(),
                *surge.ramp_s.get_ref(),
                *surge.hold_s.get_ref(),
                *surge.people.get_ref() as usize,
            ))
        });
        SimParams {
            seed: c.city.seed,
            start_ms: c.start_ms(),
            fps: *c.city.fps.get_ref(),
            cameras: *s.cameras.get_ref() as u32,
            pedestrians: *s.pedestrians_per_camera.get_ref() as usize,
            vehicles_per_minute: *s.vehicles_per_minute.get_ref(),
            miss_rate: *s.miss_rate.get_ref(),
            false_positive_rate: *s.false_positive_rate.get_ref(),
            noise_px: *s.position_noise_px.get_ref(),
            ocr_error_rate: *s.ocr_error_rate.get_ref(),
            laggy_every: *s.laggy_camera_every.get_ref() as u32,
            surge,
            watch_plates: c
                .watchlist
                .iter()
                .map(|w| &w.plate)
                .chain(&s.plates)
                .filter_map(|p| vigil_operators::plate::normalize(p.get_ref()).ok())
                .collect(),
            overlap: (*s.overlap.get_ref()).max(1) as u32,
            overlap_shift_m: *s.overlap_shift_m.get_ref(),
        }
    }

    /// The scene a camera watches.
    pub fn scene(&self, camera: u32) -> u32 {
        camera / self.overlap
    }

    /// Number of scenes.
    pub fn scenes(&self) -> u32 {
        self.cameras.div_ceil(self.overlap)
    }

    /// The ground origin of a camera's view (scenes on a 10-wide grid, 100 m apart; the cameras
    /// of one scene shifted by `overlap_shift_m` each).
    pub fn view_origin(&self, camera: u32) -> [f64; 2] {
        let o = scene_origin(self.scene(camera));
        [o[0] + f64::from(camera % self.overlap) * self.overlap_shift_m, o[1]]
    }

    /// The ground a scene's people walk on: origin and size, metres.
    fn scene_area(&self, scene: u32) -> ([f64; 2], [f64; 2]) {
        let extra = f64::from(self.overlap - 1) * self.overlap_shift_m;
        (scene_origin(scene), [VIEW_M[0] + extra, VIEW_M[1]])
    }

    /// Projects an image point of `camera` to the ground (the calibration of this simulated city).
    pub fn image_to_ground(&self, camera: u32, p: [f64; 2]) -> [f64; 2] {
        let o = self.view_origin(camera);
        [o[0] + p[0] / PX_PER_M, o[1] + p[1] / PX_PER_M]
    }

    /// Capture time of `frame`, ms.
    pub fn frame_ms(&self, frame: u64) -> i64 {
        self.start_ms + (frame as f64 * 1000.0 / self.fps).round() as i64
    }
}

/// One camera's simulated world.
///
/// The world (walkers, surge, vehicles) is drawn from the scene's random stream, so every
/// camera of a scene simulates the same people; what a camera reports (misses, noise, plate
/// readings, delays) is drawn from its own stream. With one camera per scene both are one
/// stream.
#[derive(Clone, Debug)]
pub struct CameraSim {
    camera: u32,
    scene: u32,
    rng: ChaCha8Rng,
    obs: Option<ChaCha8Rng>,
    walkers: Vec<Walker>,
    surge: Vec<Walker>,
    vehicles: Vec<Vehicle>,
    next_id: u64,
    frame: u64,
}

const LETTERS: [(char, char); 7] =
    [('أ', 'A'), ('ب', 'B'), ('د', 'D'), ('ه', 'H'), ('و', 'W'), ('ط', 'T'), ('ي', 'Y')];

impl CameraSim {
    /// The camera's world at frame 0.
    pub fn new(p: &SimParams, camera: u32) -> CameraSim {
        let scene = p.scene(camera);
        let leader = scene * p.overlap;
        let mut rng =
            ChaCha8Rng::seed_from_u64(p.seed ^ (u64::from(leader) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let obs = (p.overlap > 1).then(|| {
            ChaCha8Rng::seed_from_u64(p.seed ^ (u64::from(camera) + 1).wrapping_mul(0xC2B2_AE3D_27D4_EB4F))
        });
        let area = p.scene_area(scene);
        let walkers = (0..p.pedestrians as u64)
            .map(|id| {
                let pos = random_point(&mut rng, area);
                let goal = random_point(&mut rng, area);
                Walker { id, pos, goal, speed: rng.random_range(0.8..1.6) }
            })
            .collect();
        CameraSim {
            camera,
            scene,
            rng,
            obs,
            walkers,
            surge: Vec::new(),
            vehicles: Vec::new(),
            next_id: 1 << 20,
            frame: 0,
        }
    }

    /// The true plate of vehicle `object_id`, while it is in the scene (what the renderer draws).
    pub fn plate_of(&self, object_id: u64) -> Option<&str> {
        self.vehicles.iter().find(|v| v.id == object_id).map(|v| v.plate.as_str())
    }

    /// Produces the next frame.
    pub fn step(&mut self, p: &SimParams) -> SimFrame {
        let frame = self.frame;
        self.frame += 1;
        let dt = 1.0 / p.fps;
        let t_s = frame as f64 * dt;
        let o = p.view_origin(self.camera);
        let area = p.scene_area(self.scene);
        let rng = &mut self.rng;
        for w in self.walkers.iter_mut() {
            walk(w, dt, rng, area, None);
        }
        self.update_surge(p, t_s, dt);
        self.update_vehicles(p, frame);

        let rng = match &mut self.obs {
            Some(r) => r,
            None => &mut self.rng,
        };
        let noise = Normal::new(0.0, p.noise_px.max(1e-9)).expect("noise is finite and positive");
        let mut objects = Vec::with_capacity(self.walkers.len() + self.surge.len() + 4);
        for w in self.walkers.iter().chain(&self.surge) {
            objects.push(observe(rng, &noise, p, o, w.id, "person", w.pos, [0.6, 1.7]));
        }
        let mut plates = Vec::new();
        for v in self.vehicles.iter_mut() {
            let progress = (frame - v.enter_frame) as f64 / v.frames as f64;
            let pos = [area.0[0] - 5.0 + progress * (area.1[0] + 10.0), o[1] + v.lane_y];
            if pos[0] > o[0] + 1.0 && pos[0] < o[0] + VIEW_M[0] - 1.0 {
                objects.push(observe(rng, &noise, p, o, v.id, "car", pos, [2.0, 1.5]));
            }
            if !v.read_done && progress >= 0.5 {
                v.read_done = true;
                plates.push(read_plate(rng, p, &v.plate));
            }
        }
        // Spurious boxes: Poisson-ish with mean `false_positive_rate`.
        let mut fp = p.false_positive_rate;
        while fp > 0.0 && rng.random::<f64>() < fp.min(1.0) {
            fp -= 1.0;
            let x = rng.random_range(0.0..IMAGE[0] - 20.0) as f32;
            let y = rng.random_range(0.0..IMAGE[1] - 60.0) as f32;
            let score = rng.random_range(0.3..0.6) as f32;
            objects.push(SimObject {
                object_id: u64::MAX,
                class: "person",
                truth: [f64::NAN; 2],
                detected: Some(([x, y, 19.0, 54.0], score)),
            });
        }
        let capture_ms = p.frame_ms(frame);
        let laggy = p.laggy_every > 0 && self.camera % p.laggy_every == p.laggy_every - 1;
        let delay = if laggy {
            if rng.random::<f64>() < 0.004 {
                rng.random_range(4_000..8_000)
            } else {
                rng.random_range(0..1_500)
            }
        } else {
            rng.random_range(0..80)
        };
        SimFrame { camera: self.camera, frame, capture_ms, deliver_ms: capture_ms + delay, objects, plates }
    }

    fn update_surge(&mut self, p: &SimParams, t_s: f64, dt: f64) {
        let Some((camera, bb, at, ramp, hold, people)) = p.surge else { return };
        if p.scene(camera) != self.scene {
            return;
        }
        let area = p.scene_area(self.scene);
        let o = area.0;
        let target = if t_s < at {
            0
        } else if t_s < at + ramp {
            (people as f64 * (t_s - at) / ramp.max(dt)) as usize
        } else if t_s < at + ramp + hold {
            people
        } else {
            0
        };
        let rng = &mut self.rng;
        while self.surge.len() < target {
            // Arrive from the view's edge towards a spot inside the zone.
            let pos = [o[0] + rng.random_range(0.0..area.1[0]), o[1] + VIEW_M[1] - 0.5];
            let goal =
                [rng.random_range(bb[0] + 0.3..bb[2] - 0.3), rng.random_range(bb[1] + 0.3..bb[3] - 0.3)];
            self.surge.push(Walker { id: self.next_id, pos, goal, speed: rng.random_range(1.5..2.5) });
            self.next_id += 1;
        }
        let dispersing = t_s >= at + ramp + hold;
        for w in self.surge.iter_mut() {
            if dispersing && w.goal[1] < o[1] + VIEW_M[1] - 1.0 {
                w.goal = [w.pos[0], o[1] + VIEW_M[1] + 2.0];
            }
            walk(w, dt, rng, area, Some(bb));
        }
        if dispersing {
            self.surge.retain(|w| w.pos[1] < o[1] + VIEW_M[1]);
        }
    }

    fn update_vehicles(&mut self, p: &SimParams, frame: u64) {
        self.vehicles.retain(|v| frame < v.enter_frame + v.frames);
        let rng = &mut self.rng;
        let per_frame = p.vehicles_per_minute / 60.0 / p.fps;
        if rng.random::<f64>() < per_frame {
            let plate = random_plate(rng);
            self.vehicles.push(Vehicle {
                id: self.next_id,
                plate,
                enter_frame: frame,
                frames: (rng.random_range(2.5..4.5) * p.fps) as u64,
                lane_y: rng.random_range(15.0..20.0),
                read_done: false,
            });
            self.next_id += 1;
        }
        // Watchlisted vehicles: every 5 s of simulated time, each listed plate passes one camera
        // chosen from (seed, plate, period): the same choice on every worker.
        let period = (5.0 * p.fps) as u64;
        if period > 0 && frame.is_multiple_of(period) {
            let k = frame / period;
            for (i, plate) in p.watch_plates.iter().enumerate() {
                let mut pick = ChaCha8Rng::seed_from_u64(p.seed ^ (k << 8) ^ i as u64 ^ 0x5EED);
                if pick.random_range(0..p.scenes().max(1)) == self.scene {
                    self.vehicles.push(Vehicle {
                        id: self.next_id,
                        plate: plate.clone(),
                        enter_frame: frame,
                        frames: (3.0 * p.fps) as u64,
                        lane_y: 17.0,
                        read_done: false,
                    });
                    self.next_id += 1;
                }
            }
        }
    }
}

fn random_point(rng: &mut ChaCha8Rng, (o, size): ([f64; 2], [f64; 2])) -> [f64; 2] {
    [o[0] + rng.random_range(1.0..size[0] - 1.0), o[1] + rng.random_range(1.0..size[1] - 5.0)]
}

fn walk(
    w: &mut Walker,
    dt: f64,
    rng: &mut ChaCha8Rng,
    area: ([f64; 2], [f64; 2]),
    stay_in: Option<[f64; 4]>,
) {
    let d = [w.goal[0] - w.pos[0], w.goal[1] - w.pos[1]];
    let dist = (d[0] * d[0] + d[1] * d[1]).sqrt();
    let step = w.speed * dt;
    if dist <= step {
        w.pos = w.goal;
        w.goal = match stay_in {
            // Mill about inside the zone.
            Some(bb) => {
                [rng.random_range(bb[0] + 0.3..bb[2] - 0.3), rng.random_range(bb[1] + 0.3..bb[3] - 0.3)]
            }
            None => random_point(rng, area),
        };
    } else {
        w.pos = [w.pos[0] + d[0] / dist * step, w.pos[1] + d[1] / dist * step];
    }
}

#[allow(clippy::too_many_arguments)]
fn observe(
    rng: &mut ChaCha8Rng,
    noise: &Normal<f64>,
    p: &SimParams,
    o: [f64; 2],
    id: u64,
    class: &'static str,
    pos: [f64; 2],
    size_m: [f64; 2],
) -> SimObject {
    let in_view = pos[0] >= o[0] && pos[0] < o[0] + VIEW_M[0] && pos[1] >= o[1] && pos[1] < o[1] + VIEW_M[1];
    let detected = (in_view && rng.random::<f64>() >= p.miss_rate).then(|| {
        let foot =
            [(pos[0] - o[0]) * PX_PER_M + noise.sample(rng), (pos[1] - o[1]) * PX_PER_M + noise.sample(rng)];
        let (w, h) = (size_m[0] * PX_PER_M, size_m[1] * PX_PER_M);
        let score = rng.random_range(0.6..0.99) as f32;
        ([(foot[0] - w / 2.0) as f32, (foot[1] - h) as f32, w as f32, h as f32], score)
    });
    SimObject { object_id: id, class, truth: pos, detected }
}

/// A random current-format plate, canonical.
pub fn random_plate(rng: &mut ChaCha8Rng) -> String {
    let serial = rng.random_range(1..=99_999u32);
    let letter = LETTERS[rng.random_range(0..LETTERS.len())].0;
    let region = rng.random_range(1..=89u32);
    format!("{serial}-{letter}-{region}")
}

/// How a plate reader renders a canonical plate: various readings, occasional errors.
fn read_plate(rng: &mut ChaCha8Rng, p: &SimParams, canonical: &str) -> SimPlateRead {
    let parts: Vec<&str> = canonical.split('-').collect();
    let (serial, letter, region) = (parts[0], parts[1], parts[2]);
    let latin = LETTERS.iter().find(|(a, _)| a.to_string() == letter).map_or('B', |(_, l)| *l);
    let mut text = match rng.random_range(0..5) {
        0 => format!("{serial}-{letter}-{region}"),
        1 => format!("{serial} | {letter} | {region}"),
        2 => format!("{serial}-{latin}-{region} MA"),
        3 => format!("{region} | {letter} | {serial}"),
        _ => format!("{serial} {letter} {region}")
            .chars()
            .map(|c| c.to_digit(10).map_or(c, |d| char::from_u32(0x0660 + d).unwrap_or(c)))
            .collect(),
    };
    let mut confidence = rng.random_range(0.75..0.99) as f32;
    if rng.random::<f64>() < p.ocr_error_rate {
        // Substitute one character: a digit misread, or the letter lost.
        let chars: Vec<char> = text.chars().collect();
        let i = rng.random_range(0..chars.len());
        let c = chars[i];
        let replacement = if c.is_ascii_digit() {
            char::from(b'0' + rng.random_range(0..10u8))
        } else if c.is_alphabetic() {
            '?'
        } else {
            c
        };
        text = chars.iter().enumerate().map(|(j, &x)| if j == i { replacement } else { x }).collect();
        confidence = rng.random_range(0.5..0.95) as f32;
    }
    SimPlateRead { truth: canonical.to_owned(), text, confidence }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> SimParams {
        SimParams::from_config(&Config::embedded())
    }

    #[test]
    fn same_seed_same_frames() {
        let p = params();
        let (mut a, mut b) = (CameraSim::new(&p, 3), CameraSim::new(&p, 3));
        for _ in 0..50 {
            let (fa, fb) = (a.step(&p), b.step(&p));
            assert_eq!(format!("{fa:?}"), format!("{fb:?}"));
        }
    }

    #[test]
    fn cameras_differ_and_objects_are_in_view() {
        let p = params();
        let f0 = CameraSim::new(&p, 0).step(&p);
        let f1 = CameraSim::new(&p, 1).step(&p);
        assert_ne!(format!("{:?}", f0.objects[0].truth), format!("{:?}", f1.objects[0].truth));
        for o in f1.objects.iter().filter_map(|o| o.detected) {
            assert!(o.0[0] > -40.0 && f64::from(o.0[0]) < IMAGE[0] + 40.0, "{o:?}");
        }
    }

    #[test]
    fn plate_readings_normalize_to_the_truth_without_errors() {
        let mut p = params();
        p.ocr_error_rate = 0.0;
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..200 {
            let plate = random_plate(&mut rng);
            let read = read_plate(&mut rng, &p, &plate);
            assert_eq!(
                vigil_operators::plate::normalize(&read.text).as_deref(),
                Ok(plate.as_str()),
                "{read:?}"
            );
        }
    }
}

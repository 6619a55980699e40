//! Renders the simulated city as video frames: what a camera would see, for the RTSP test
//! server and the benches.
//!
//! People are red upright boxes, vehicles blue wide boxes carrying a white plate with the
//! vehicle's registration in a 5 × 7 bitmap font (Latin transliteration of the letter, as plates
//! are often read: `12345-B-6`). Positions come from the simulator's ground truth, so every
//! frame has its true boxes beside it ([`Rendered::truth`]). The background is a textured grey
//! street, so that an encoder has something to encode and a detector something to ignore.

use image::{Rgb, RgbImage};

use crate::sim::{CameraSim, IMAGE, PX_PER_M, SimParams};

/// The palette the shapes detector (`scripts/make_shapes_model.py`) looks for.
pub const PERSON: Rgb<u8> = Rgb([200, 40, 40]);
/// Vehicle body colour.
pub const VEHICLE: Rgb<u8> = Rgb([40, 60, 200]);

/// A drawn object: class and box `[x, y, w, h]` in frame pixels.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TrueBox {
    /// `person` or `car`.
    pub class: &'static str,
    /// Box in frame pixels.
    pub bbox: [f32; 4],
    /// The plate drawn on it (vehicles).
    pub plate: Option<String>,
}

/// One rendered frame and what is in it.
#[derive(Debug)]
pub struct Rendered {
    /// The pixels.
    pub image: RgbImage,
    /// The objects drawn, fully inside the frame.
    pub truth: Vec<TrueBox>,
}

/// Renders a camera of the simulated city at `width × height`.
pub struct Renderer {
    sim: CameraSim,
    params: SimParams,
    camera: u32,
    width: u32,
    height: u32,
    background: RgbImage,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer")
            .field("camera", &self.camera)
            .field("size", &(self.width, self.height))
            .finish()
    }
}

impl Renderer {
    /// A renderer for `camera` of the city `params` describes.
    pub fn new(params: SimParams, camera: u32, width: u32, height: u32) -> Self {
        let background = RgbImage::from_fn(width, height, |x, y| {
            // Paving texture: a cheap deterministic hash of the position, plus lane markings.
            let h = (x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663)) % 17;
            let lane = y % (height / 4).max(1) < 2 && (x / 24) % 2 == 0;
            let v = if lane { 200 } else { 100 + h as u8 };
            Rgb([v, v + 2, v.saturating_sub(2)])
        });
        Self { sim: CameraSim::new(&params, camera), params, camera, width, height, background }
    }

    /// The next frame.
    pub fn next_frame(&mut self) -> Rendered {
        let f = self.sim.step(&self.params);
        let o = self.params.view_origin(self.camera);
        let scale = self.width as f64 / IMAGE[0];
        let mut image = self.background.clone();
        let mut truth = Vec::new();
        let mut plates = f.plates.iter().map(|p| p.truth.clone());
        for obj in f.objects.iter().filter(|o| o.object_id != u64::MAX) {
            let foot = [(obj.truth[0] - o[0]) * PX_PER_M * scale, (obj.truth[1] - o[1]) * PX_PER_M * scale];
            let (w, h) = if obj.class == "person" { (16.0, 40.0) } else { (104.0, 48.0) };
            let b = [foot[0] - w / 2.0, foot[1] - h, w, h];
            if b[0] < 0.0
                || b[1] < 0.0
                || b[0] + w > f64::from(self.width)
                || b[1] + h > f64::from(self.height)
            {
                continue;
            }
            let (x, y) = (b[0] as u32, b[1] as u32);
            let plate = if obj.class == "person" {
                fill(&mut image, x, y, w as u32, h as u32, PERSON);
                None
            } else {
                fill(&mut image, x, y, w as u32, h as u32, VEHICLE);
                let text = plates.next().unwrap_or_else(|| {
                    format!("{:05}-B-{}", obj.object_id % 100_000, obj.object_id % 89 + 1)
                });
                let latin = latin_plate(&text);
                let pw = latin.chars().count() as u32 * 6 + 3;
                let (px, py) = (x + (w as u32).saturating_sub(pw) / 2, y + h as u32 - 12);
                fill(&mut image, px, py, pw.min(w as u32), 10, Rgb([245, 245, 245]));
                draw_text(&mut image, px + 2, py + 1, &latin);
                Some(text)
            };
            truth.push(TrueBox {
                class: obj.class,
                bbox: [b[0] as f32, b[1] as f32, w as f32, h as f32],
                plate,
            });
        }
        Rendered { image, truth }
    }
}

fn fill(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, c: Rgb<u8>) {
    for yy in y..(y + h).min(img.height()) {
        for xx in x..(x + w).min(img.width()) {
            img.put_pixel(xx, yy, c);
        }
    }
}

/// A canonical plate (`12345-ب-6`) in Latin transliteration (`12345-B-6`).
pub fn latin_plate(canonical: &str) -> String {
    const LETTERS: [(char, char); 7] =
        [('أ', 'A'), ('ب', 'B'), ('د', 'D'), ('ه', 'H'), ('و', 'W'), ('ط', 'T'), ('ي', 'Y')];
    canonical.chars().map(|c| LETTERS.iter().find(|(a, _)| *a == c).map_or(c, |(_, l)| *l)).collect()
}

/// 5 × 7 glyphs (one byte per row, low five bits, left pixel in bit 4).
fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'Y' => [0x11, 0x11, 0x0A, 0x04, 0x04, 0x04, 0x04],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        _ => [0x1F, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F],
    }
}

fn draw_text(img: &mut RgbImage, x: u32, y: u32, text: &str) {
    for (i, c) in text.chars().enumerate() {
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..5 {
                if bits & (0x10 >> col) != 0 {
                    let (px, py) = (x + i as u32 * 6 + col, y + row as u32);
                    if px < img.width() && py < img.height() {
                        img.put_pixel(px, py, Rgb([10, 10, 10]));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_show_the_true_objects_in_their_colours() {
        let config = crate::config::Config::embedded();
        let mut r = Renderer::new(SimParams::from_config(&config), 0, 640, 360);
        let mut seen_car = false;
        for _ in 0..60 {
            let f = r.next_frame();
            assert_eq!(f.image.dimensions(), (640, 360));
            for t in &f.truth {
                let (cx, cy) = ((t.bbox[0] + 2.0) as u32, (t.bbox[1] + 2.0) as u32);
                let want = if t.class == "person" { PERSON } else { VEHICLE };
                let got = *f.image.get_pixel(cx, cy);
                // Objects may overlap: the pixel has one of the two palette colours.
                assert!(got == PERSON || got == VEHICLE, "{t:?}: {got:?}, want {want:?}");
                seen_car |= t.class == "car" && t.plate.is_some();
            }
        }
        assert!(seen_car, "a vehicle with a plate crossed in 6 s");
        assert_eq!(latin_plate("12345-ب-6"), "12345-B-6");
    }
}

//! Renders the simulated city as video frames: what a camera would see, for the RTSP test
//! server and the benches.
//!
//! Two views of the same simulated world ([`Renderer::new`], [`Renderer::anpr`]):
//!
//! - **Street**: people are red upright boxes, vehicles blue wide boxes carrying a small white
//!   plate with the registration in a 5 × 7 bitmap font (Latin transliteration of the letter:
//!   `12345-B-6`), legible to a person, too small for OCR, as on a wide street camera.
//! - **ANPR**: a camera zoomed on the road. Vehicle fronts (windscreen, grille, headlights,
//!   bumper) at close range carry a Moroccan plate drawn from Debian's fonts (digits in DejaVu
//!   Sans Bold, the Arabic letter in Noto Sans Arabic) with its two separator bars, so a plate
//!   reader has what it would have on a real ANPR camera.
//!
//! Positions come from the simulator's ground truth and each vehicle keeps its own plate, so
//! every frame has its true boxes and plates beside it ([`Rendered::truth`]). The background is
//! a textured grey street, so that an encoder has something to encode and a detector something
//! to ignore.

use ab_glyph::{Font, FontVec, OutlinedGlyph, PxScale, ScaleFont, point};
use image::{Rgb, RgbImage};

use crate::sim::{CameraSim, IMAGE, PX_PER_M, SimParams};

/// The palette the shapes detector (`scripts/make_shapes_model.py`) looks for.
pub const PERSON: Rgb<u8> = Rgb([200, 40, 40]);
/// Vehicle body colour.
pub const VEHICLE: Rgb<u8> = Rgb([40, 60, 200]);

/// The plate's digits (Debian's fonts-dejavu-core).
pub const DIGIT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf";
/// The plate's Arabic letter (Debian's fonts-noto-core). The letter classifier was trained on
/// other fonts (`scripts/plates.py`), so frames drawn with it are held-out material.
pub const LETTER_FONT: &str = "/usr/share/fonts/truetype/noto/NotoSansArabic-Regular.ttf";

/// A drawn object: class and box `[x, y, w, h]` in frame pixels.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TrueBox {
    /// `person` or `car`.
    pub class: &'static str,
    /// Box in frame pixels.
    pub bbox: [f32; 4],
    /// The plate drawn on it (vehicles), canonical.
    pub plate: Option<String>,
}

/// One rendered frame and what is in it.
#[derive(Debug)]
pub struct Rendered {
    /// The pixels.
    pub image: RgbImage,
    /// The objects drawn, fully inside the frame (and, in the ANPR view, not hidden).
    pub truth: Vec<TrueBox>,
}

/// The fonts a Moroccan plate is drawn with.
struct PlateFonts {
    digits: FontVec,
    letter: FontVec,
}

impl PlateFonts {
    fn load() -> std::io::Result<Self> {
        let load = |path: &str, package: &str| {
            let bytes = std::fs::read(path).map_err(|e| {
                std::io::Error::new(e.kind(), format!("{path}: {e}; install Debian's {package}"))
            })?;
            FontVec::try_from_vec(bytes).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{path}: not a font ({e})"))
            })
        };
        Ok(Self {
            digits: load(DIGIT_FONT, "fonts-dejavu-core")?,
            letter: load(LETTER_FONT, "fonts-noto-core")?,
        })
    }
}

/// Renders a camera of the simulated city at `width × height`.
pub struct Renderer {
    sim: CameraSim,
    params: SimParams,
    camera: u32,
    width: u32,
    height: u32,
    background: RgbImage,
    /// The ANPR view's fonts (`None`: the street view).
    anpr: Option<Box<PlateFonts>>,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer")
            .field("camera", &self.camera)
            .field("size", &(self.width, self.height))
            .field("anpr", &self.anpr.is_some())
            .finish()
    }
}

impl Renderer {
    /// A street-view renderer for `camera` of the city `params` describes.
    pub fn new(params: SimParams, camera: u32, width: u32, height: u32) -> Self {
        let background = RgbImage::from_fn(width, height, |x, y| {
            // Paving texture: a cheap deterministic hash of the position, plus lane markings.
            let h = (x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663)) % 17;
            let lane = y % (height / 4).max(1) < 2 && (x / 24) % 2 == 0;
            let v = if lane { 200 } else { 100 + h as u8 };
            Rgb([v, v + 2, v.saturating_sub(2)])
        });
        Self { sim: CameraSim::new(&params, camera), params, camera, width, height, background, anpr: None }
    }

    /// An ANPR-view renderer: vehicle fronts at close range with legible Moroccan plates.
    ///
    /// # Errors
    /// The plate fonts cannot be read (the message names the file and the Debian package).
    pub fn anpr(params: SimParams, camera: u32, width: u32, height: u32) -> std::io::Result<Self> {
        let fonts = PlateFonts::load()?;
        Ok(Self { anpr: Some(Box::new(fonts)), ..Self::new(params, camera, width, height) })
    }

    /// The next frame.
    pub fn next_frame(&mut self) -> Rendered {
        let f = self.sim.step(&self.params);
        let o = self.params.view_origin(self.camera);
        let scale = f64::from(self.width) / IMAGE[0];
        let mut image = self.background.clone();
        let mut truth: Vec<TrueBox> = Vec::new();
        for obj in f.objects.iter().filter(|o| o.object_id != u64::MAX) {
            let foot = [(obj.truth[0] - o[0]) * PX_PER_M * scale, (obj.truth[1] - o[1]) * PX_PER_M * scale];
            let person = obj.class == "person";
            if person && self.anpr.is_some() {
                continue; // The ANPR camera looks at the road.
            }
            let (w, h) = match (person, &self.anpr) {
                (true, _) => (16.0, 40.0),
                (false, None) => (104.0, 48.0),
                (false, Some(_)) => (250.0 * scale, 170.0 * scale),
            };
            let b = [foot[0] - w / 2.0, foot[1] - h, w, h];
            if b[0] < 0.0
                || b[1] < 0.0
                || b[0] + w > f64::from(self.width)
                || b[1] + h > f64::from(self.height)
            {
                continue;
            }
            let bbox = [b[0] as f32, b[1] as f32, w as f32, h as f32];
            if self.anpr.is_some() && truth.iter().any(|t| overlaps(&t.bbox, &bbox)) {
                continue; // Hidden behind a nearer vehicle: an ANPR camera reads one at a time.
            }
            let (x, y, w, h) = (b[0] as u32, b[1] as u32, w as u32, h as u32);
            let plate = self.sim.plate_of(obj.object_id).map(str::to_owned);
            match (person, &self.anpr, &plate) {
                (true, ..) => fill(&mut image, x, y, w, h, PERSON),
                (false, None, _) => {
                    fill(&mut image, x, y, w, h, VEHICLE);
                    if let Some(text) = &plate {
                        let latin = latin_plate(text);
                        let pw = latin.chars().count() as u32 * 6 + 3;
                        let (px, py) = (x + w.saturating_sub(pw) / 2, y + h - 12);
                        fill(&mut image, px, py, pw.min(w), 10, Rgb([245, 245, 245]));
                        draw_text(&mut image, px + 2, py + 1, &latin);
                    }
                }
                (false, Some(fonts), _) => {
                    draw_vehicle_front(&mut image, fonts, [x, y, w, h], scale, plate.as_deref())
                }
            }
            truth.push(TrueBox { class: obj.class, bbox, plate: if person { None } else { plate } });
        }
        Rendered { image, truth }
    }
}

fn overlaps(a: &[f32; 4], b: &[f32; 4]) -> bool {
    a[0] < b[0] + b[2] && b[0] < a[0] + a[2] && a[1] < b[1] + b[3] && b[1] < a[1] + a[3]
}

fn fill(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, c: Rgb<u8>) {
    for yy in y..(y + h).min(img.height()) {
        for xx in x..(x + w).min(img.width()) {
            img.put_pixel(xx, yy, c);
        }
    }
}

/// A vehicle's front in box `[x, y, w, h]` (250 × 170 at 1280 wide): body in the vehicle blue,
/// windscreen, grille, headlights, bumper, and the plate above the bumper.
fn draw_vehicle_front(
    img: &mut RgbImage,
    fonts: &PlateFonts,
    [x, y, w, h]: [u32; 4],
    scale: f64,
    plate: Option<&str>,
) {
    let s = |v: f64| (v * scale).round() as u32;
    fill(img, x, y, w, h, VEHICLE);
    fill(img, x + s(30.0), y + s(18.0), w.saturating_sub(s(60.0)), s(44.0), Rgb([25, 25, 30]));
    let grille = (x + s(45.0), y + s(78.0), w.saturating_sub(s(90.0)), s(26.0));
    fill(img, grille.0, grille.1, grille.2, grille.3, Rgb([28, 28, 28]));
    for gy in (grille.1 + s(4.0)..grille.1 + grille.3 - s(2.0)).step_by(s(6.0).max(2) as usize) {
        fill(img, grille.0 + s(3.0), gy, grille.2.saturating_sub(s(6.0)), s(2.0).max(1), Rgb([75, 75, 75]));
    }
    for lx in [x + s(8.0), x + w - s(40.0)] {
        ellipse(img, lx, y + s(76.0), s(32.0), s(22.0), Rgb([235, 235, 210]));
    }
    fill(img, x, y + h - s(14.0), w, s(14.0), Rgb([18, 18, 18]));
    if let Some(plate) = plate {
        let ph = s(30.0).max(12);
        let pw = (f64::from(ph) * 4.6) as u32;
        draw_plate(img, fonts, x + w.saturating_sub(pw) / 2, y + h - s(14.0) - ph - s(6.0), ph, plate);
    }
}

fn ellipse(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, c: Rgb<u8>) {
    let (rx, ry) = (f64::from(w) / 2.0, f64::from(h) / 2.0);
    for yy in y..(y + h).min(img.height()) {
        for xx in x..(x + w).min(img.width()) {
            let (dx, dy) = ((f64::from(xx - x) + 0.5 - rx) / rx, (f64::from(yy - y) + 0.5 - ry) / ry);
            if dx * dx + dy * dy <= 1.0 {
                img.put_pixel(xx, yy, c);
            }
        }
    }
}

const INK: [u8; 3] = [12, 12, 12];

/// A one-line Moroccan plate `h` pixels tall at (x, y): serial, bar, letter, bar, region code,
/// with the proportions of `scripts/plates.py` (which the reader's parameters were chosen on).
fn draw_plate(img: &mut RgbImage, fonts: &PlateFonts, x: u32, y: u32, h: u32, canonical: &str) {
    let w = (f64::from(h) * 4.6) as u32;
    fill(img, x, y, w, h, Rgb([242, 242, 238]));
    let line = (h / 20).max(2);
    fill(img, x, y, w, line, Rgb(INK));
    fill(img, x, y + h - line, w, line, Rgb(INK));
    fill(img, x, y, line, h, Rgb(INK));
    fill(img, x + w - line, y, line, h, Rgb(INK));
    let (wf, hf) = (f64::from(w), f64::from(h));
    let fields: Vec<&str> = canonical.split('-').collect();
    let &[serial, letter, region] = fields.as_slice() else {
        // Not a current-format plate (diplomatic, old format): the text across the plate.
        put_text(
            img,
            &fonts.digits,
            canonical,
            (f64::from(x) + wf / 2.0, f64::from(y) + hf / 2.0),
            hf * 0.6,
            wf * 0.9,
        );
        return;
    };
    let (b1, b2) = (wf * 0.56, wf * 0.785);
    let bar = (h / 22).max(2);
    for b in [b1, b2] {
        fill(img, x + b as u32, y + 2 * bar, bar, h.saturating_sub(4 * bar), Rgb(INK));
    }
    let at = |cx: f64| (f64::from(x) + cx, f64::from(y) + hf / 2.0);
    put_text(img, &fonts.digits, serial, at(b1 / 2.0), hf * 0.62, b1 * 0.86);
    put_text(img, &fonts.letter, letter, at((b1 + b2) / 2.0), hf * 0.46, (b2 - b1) * 0.7);
    put_text(img, &fonts.digits, region, at((b2 + wf) / 2.0), hf * 0.62, (wf - b2) * 0.75);
}

/// Lays `text` out on one line at `size` px: its glyphs and the box of their ink.
fn layout(font: &FontVec, text: &str, size: f32) -> (Vec<OutlinedGlyph>, ab_glyph::Rect) {
    let scaled = font.as_scaled(PxScale::from(size));
    let mut caret = 0.0;
    let mut glyphs = Vec::new();
    let mut ink = ab_glyph::Rect { min: point(f32::MAX, f32::MAX), max: point(f32::MIN, f32::MIN) };
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        let glyph = id.with_scale_and_position(size, point(caret, scaled.ascent()));
        caret += scaled.h_advance(id);
        if let Some(g) = font.outline_glyph(glyph) {
            let b = g.px_bounds();
            ink = ab_glyph::Rect {
                min: point(ink.min.x.min(b.min.x), ink.min.y.min(b.min.y)),
                max: point(ink.max.x.max(b.max.x), ink.max.y.max(b.max.y)),
            };
            glyphs.push(g);
        }
    }
    (glyphs, ink)
}

/// Draws `text` in ink, centred on `centre`, at the largest size whose ink is at most `ink_h`
/// tall and `max_w` wide (how the plate's fields are fitted between its bars).
fn put_text(img: &mut RgbImage, font: &FontVec, text: &str, centre: (f64, f64), ink_h: f64, max_w: f64) {
    // Ink scales linearly with the size: measure once at 100 px, then lay out at the fit.
    let (_, probe) = layout(font, text, 100.0);
    if probe.width() <= 0.0 || probe.height() <= 0.0 {
        return;
    }
    let size = 100.0 * (ink_h / f64::from(probe.height())).min(max_w / f64::from(probe.width()));
    let (glyphs, ink) = layout(font, text, size as f32);
    let dx = centre.0 - f64::from(ink.min.x + ink.max.x) / 2.0;
    let dy = centre.1 - f64::from(ink.min.y + ink.max.y) / 2.0;
    for g in glyphs {
        let b = g.px_bounds();
        g.draw(|gx, gy, coverage| {
            let px = (f64::from(b.min.x) + f64::from(gx) + dx).round();
            let py = (f64::from(b.min.y) + f64::from(gy) + dy).round();
            if px < 0.0 || py < 0.0 || px >= f64::from(img.width()) || py >= f64::from(img.height()) {
                return;
            }
            let p = img.get_pixel_mut(px as u32, py as u32);
            let a = coverage.clamp(0.0, 1.0);
            for (c, ink) in p.0.iter_mut().zip(INK) {
                *c = (f32::from(*c) * (1.0 - a) + f32::from(ink) * a).round() as u8;
            }
        });
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

    /// The ANPR view draws each vehicle with its own plate, the same on every frame, with ink in
    /// each of the plate's three fields (the letter's glyph is in the font, not a missing box).
    #[test]
    fn the_anpr_view_draws_every_vehicle_with_its_own_plate_in_ink() {
        let mut params = SimParams::from_config(&crate::config::Config::embedded());
        (params.cameras, params.overlap) = (1, 1);
        params.watch_plates = vec!["12345-ب-6".into()];
        let mut r = Renderer::anpr(params, 0, 1280, 720).unwrap();
        let mut listed = 0;
        for _ in 0..50 {
            let f = r.next_frame();
            assert!(f.truth.iter().all(|t| t.class == "car" && t.plate.is_some()), "{:?}", f.truth);
            for (i, a) in f.truth.iter().enumerate() {
                assert!(
                    f.truth[i + 1..].iter().all(|b| !overlaps(&a.bbox, &b.bbox)),
                    "hidden vehicles are left out"
                );
            }
            for t in f.truth.iter().filter(|t| t.plate.as_deref() == Some("12345-ب-6")) {
                listed += 1;
                // The plate as draw_vehicle_front places it: 138 × 30, 20 px above the bottom.
                let (x, y) = (t.bbox[0] as u32 + 56, t.bbox[1] as u32 + 170 - 50);
                let ink = |x0: f64, x1: f64| {
                    let (x0, x1) = (x + (138.0 * x0) as u32, x + (138.0 * x1) as u32);
                    (x0..x1)
                        .flat_map(|px| (y + 4..y + 26).map(move |py| (px, py)))
                        .filter(|&(px, py)| f.image.get_pixel(px, py).0[0] < 60)
                        .count()
                };
                let (serial, letter, region) = (ink(0.03, 0.53), ink(0.59, 0.76), ink(0.81, 0.97));
                assert!(serial > 60 && letter > 8 && region > 8, "ink {serial} {letter} {region}");
                assert_eq!(*f.image.get_pixel(x + 3, y + 3), Rgb([242, 242, 238]), "the plate's ground");
                assert_eq!(*f.image.get_pixel(x + 1, y + 15), Rgb(INK), "the plate's border");
            }
        }
        assert!(listed >= 10, "the listed vehicle is in view for {listed} frames");
    }
}

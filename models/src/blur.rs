//! Blurs faces before a frame is stored: privacy by design for every snapshot vigil keeps.

use image::RgbImage;
use image::imageops;

use crate::centerface::CenterFace;
use crate::error::Result;
use crate::mtcnn::{Face, Mtcnn};

/// The face detector snapshots are blurred with.
#[derive(Debug)]
pub enum FaceDetector {
    /// CenterFace (the default: it finds more small faces, see [`crate::centerface`]).
    CenterFace(CenterFace),
    /// MTCNN.
    Mtcnn(Mtcnn),
}

impl FaceDetector {
    /// Detects faces in an RGB image.
    pub fn detect(&mut self, img: &RgbImage) -> Result<Vec<Face>> {
        match self {
            FaceDetector::CenterFace(d) => d.detect(img),
            FaceDetector::Mtcnn(d) => d.detect(img),
        }
    }
}

/// How much larger than the detected box the blurred area is (hair, ears, chin).
pub const MARGIN: f32 = 0.25;

/// Blurs each face's area (enlarged by [`MARGIN`] on every side) in place. The blur radius
/// grows with the face, so that a large face is as unrecognisable as a small one.
pub fn blur_faces(img: &mut RgbImage, faces: &[Face]) {
    for f in faces {
        let (w, h) = (f.bbox[2] - f.bbox[0], f.bbox[3] - f.bbox[1]);
        let x0 = (f.bbox[0] - w * MARGIN).max(0.0) as u32;
        let y0 = (f.bbox[1] - h * MARGIN).max(0.0) as u32;
        let x1 = ((f.bbox[2] + w * MARGIN).max(0.0) as u32).min(img.width());
        let y1 = ((f.bbox[3] + h * MARGIN).max(0.0) as u32).min(img.height());
        if x1 <= x0 || y1 <= y0 {
            continue;
        }
        let region = imageops::crop_imm(img, x0, y0, x1 - x0, y1 - y0).to_image();
        let sigma = (w.max(h) / 6.0).max(4.0);
        let blurred = imageops::blur(&region, sigma);
        imageops::replace(img, &blurred, i64::from(x0), i64::from(y0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blur_changes_only_the_face_area() {
        let mut img = RgbImage::from_fn(100, 100, |x, y| {
            image::Rgb([((x * 7 + y * 13) % 256) as u8, (x % 2 * 255) as u8, 0])
        });
        let before = img.clone();
        blur_faces(&mut img, &[Face { bbox: [40.0, 40.0, 60.0, 60.0], score: 1.0 }]);
        assert_eq!(img.get_pixel(5, 5), before.get_pixel(5, 5), "outside the face: untouched");
        assert_eq!(img.get_pixel(90, 90), before.get_pixel(90, 90));
        // The checkered green channel is smoothed inside the face.
        let g: Vec<u8> = (45..55).map(|x| img.get_pixel(x, 50)[1]).collect();
        assert!(g.iter().all(|&v| (60..200).contains(&v)), "inside the face: blurred, got {g:?}");
    }
}

//! Ground calibration: the homography from a camera's image to the ground plane, from point
//! pairs measured on site (image pixel ↔ ground metres), by the normalized direct linear
//! transform (Hartley & Zisserman, Multiple View Geometry, algorithm 4.2) with nalgebra's SVD.
//!
//! At least 4 pairs are needed, four of them with no 3 image points (or ground points) on one
//! line: other sets do not fix a homography and are refused with the points named. The fit reports
//! its reprojection error (RMS and worst, in metres on the ground), so a mistyped point shows.

use nalgebra::{DMatrix, Matrix3, Vector3};

/// A fitted image → ground homography.
#[derive(Clone, Debug, PartialEq)]
pub struct Homography {
    h: Matrix3<f64>,
    /// Root-mean-square reprojection error over the pairs, metres.
    pub rms_error_m: f64,
    /// Largest reprojection error, metres, and the pair it belongs to.
    pub max_error_m: (f64, usize),
}

/// Why a calibration was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CalibrationError {
    /// Fewer than 4 pairs, or lists of different lengths.
    #[error("{0} point pair(s); a homography needs at least 4 image↔ground pairs")]
    TooFew(usize),
    /// Three points on one line (or two equal points).
    #[error(
        "{which} points {a}, {b} and {c} are on one line; choose points spread over the view, no three in a row"
    )]
    Collinear {
        /// `image` or `ground`.
        which: &'static str,
        /// Indices (from 1) of the three points.
        a: usize,
        /// Second point.
        b: usize,
        /// Third point.
        c: usize,
    },
    /// A coordinate is not finite.
    #[error("point {0} has a coordinate that is not a number")]
    NotFinite(usize),
}

/// Scales points to mean 0 and mean distance √2 (the normalization that makes the DLT stable).
fn normalizer(points: &[[f64; 2]]) -> Matrix3<f64> {
    let n = points.len() as f64;
    let (cx, cy) = points.iter().fold((0.0, 0.0), |a, p| (a.0 + p[0] / n, a.1 + p[1] / n));
    let mean_d = points.iter().map(|p| ((p[0] - cx).powi(2) + (p[1] - cy).powi(2)).sqrt()).sum::<f64>() / n;
    let s = if mean_d > 0.0 { std::f64::consts::SQRT_2 / mean_d } else { 1.0 };
    Matrix3::new(s, 0.0, -s * cx, 0.0, s, -s * cy, 0.0, 0.0, 1.0)
}

fn apply(h: &Matrix3<f64>, p: [f64; 2]) -> [f64; 2] {
    let v = h * Vector3::new(p[0], p[1], 1.0);
    [v[0] / v[2], v[1] / v[2]]
}

/// The first three points on a line (relative to the set's spread), if any, among `idx`.
fn collinear_triple(points: &[[f64; 2]], idx: &[usize]) -> Option<(usize, usize, usize)> {
    let scale = points
        .iter()
        .flat_map(|a| points.iter().map(move |b| (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)))
        .fold(0.0f64, f64::max);
    for (x, &a) in idx.iter().enumerate() {
        for (y, &b) in idx.iter().enumerate().skip(x + 1) {
            for &c in &idx[y + 1..] {
                let (p, q, r) = (points[a], points[b], points[c]);
                let area = ((q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])).abs();
                if area <= 1e-6 * scale.max(1e-12) {
                    return Some((a, b, c));
                }
            }
        }
    }
    None
}

/// Refuses point sets in which no four points are in general position (no three on a line):
/// those do not fix a homography. Extra points on a line beside four good ones are fine.
fn check_spread(points: &[[f64; 2]], which: &'static str) -> Result<(), CalibrationError> {
    let n = points.len();
    for a in 0..n {
        for b in a + 1..n {
            for c in b + 1..n {
                for d in c + 1..n {
                    if collinear_triple(points, &[a, b, c, d]).is_none() {
                        return Ok(());
                    }
                }
            }
        }
    }
    let all: Vec<usize> = (0..n).collect();
    let (a, b, c) = collinear_triple(points, &all).unwrap_or((0, 1, 2));
    Err(CalibrationError::Collinear { which, a: a + 1, b: b + 1, c: c + 1 })
}

impl Homography {
    /// Fits the homography taking `image[i]` (pixels) to `ground[i]` (metres).
    pub fn fit(image: &[[f64; 2]], ground: &[[f64; 2]]) -> Result<Homography, CalibrationError> {
        if image.len() != ground.len() || image.len() < 4 {
            return Err(CalibrationError::TooFew(image.len().min(ground.len())));
        }
        for (i, (a, b)) in image.iter().zip(ground).enumerate() {
            if !a.iter().chain(b).all(|v| v.is_finite()) {
                return Err(CalibrationError::NotFinite(i + 1));
            }
        }
        check_spread(image, "image")?;
        check_spread(ground, "ground")?;
        let (ti, tg) = (normalizer(image), normalizer(ground));
        let n = image.len();
        let mut a = DMatrix::<f64>::zeros(2 * n.max(5), 9);
        for (k, (p, q)) in image.iter().zip(ground).enumerate() {
            let [x, y] = apply(&ti, *p);
            let [u, v] = apply(&tg, *q);
            let rows = [
                [-x, -y, -1.0, 0.0, 0.0, 0.0, u * x, u * y, u],
                [0.0, 0.0, 0.0, -x, -y, -1.0, v * x, v * y, v],
            ];
            for (r, row) in rows.iter().enumerate() {
                for (c, val) in row.iter().enumerate() {
                    a[(2 * k + r, c)] = *val;
                }
            }
        }
        // The solution is the right singular vector of the smallest singular value. (With 4
        // pairs the 8 × 9 system is padded with a zero row so that the SVD returns all of V.)
        let svd = a.svd(false, true);
        let v_t = svd.v_t.expect("V requested");
        let (min_i, _) = svd
            .singular_values
            .iter()
            .enumerate()
            .fold((0, f64::MAX), |m, (i, &s)| if s < m.1 { (i, s) } else { m });
        let h = v_t.row(min_i);
        let hn = Matrix3::new(h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8]);
        let tg_inv = tg.try_inverse().expect("normalizers are invertible");
        let mut h = tg_inv * hn * ti;
        h /= h[(2, 2)];
        let errors: Vec<f64> = image
            .iter()
            .zip(ground)
            .map(|(p, q)| {
                let g = apply(&h, *p);
                ((g[0] - q[0]).powi(2) + (g[1] - q[1]).powi(2)).sqrt()
            })
            .collect();
        let rms = (errors.iter().map(|e| e * e).sum::<f64>() / n as f64).sqrt();
        let max = errors.iter().enumerate().fold((0.0, 0), |m, (i, &e)| if e > m.0 { (e, i + 1) } else { m });
        Ok(Homography { h, rms_error_m: rms, max_error_m: max })
    }

    /// The ground point (metres) of an image point (pixels).
    pub fn to_ground(&self, p: [f64; 2]) -> [f64; 2] {
        apply(&self.h, p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn recovers_a_perspective_view_exactly() {
        // A camera looking down a street: the far edge is shorter in the image.
        let truth = Matrix3::new(0.02, 0.004, -3.0, 0.0, 0.05, -1.0, 0.0, 0.0005, 1.0);
        let image = [[100.0, 600.0], [1180.0, 620.0], [900.0, 200.0], [350.0, 190.0], [640.0, 400.0]];
        let ground: Vec<[f64; 2]> = image.iter().map(|p| apply(&truth, *p)).collect();
        let h = Homography::fit(&image, &ground).unwrap();
        assert!(h.rms_error_m < 1e-9, "{}", h.rms_error_m);
        let p = [700.0, 300.0];
        let (a, b) = (h.to_ground(p), apply(&truth, p));
        assert!((a[0] - b[0]).abs() < 1e-9 && (a[1] - b[1]).abs() < 1e-9);
    }

    #[test]
    fn degenerate_sets_are_refused_with_the_points_named() {
        let image = [[0.0, 0.0], [100.0, 0.0], [200.0, 0.0], [0.0, 100.0]];
        let ground = [[0.0, 0.0], [1.0, 0.0], [2.0, 1.0], [0.0, 1.0]];
        let e = Homography::fit(&image, &ground).unwrap_err();
        assert_eq!(e, CalibrationError::Collinear { which: "image", a: 1, b: 2, c: 3 });
        assert!(e.to_string().contains("no three in a row"));
        assert_eq!(Homography::fit(&image[..3], &ground[..3]).unwrap_err(), CalibrationError::TooFew(3));
        let dup = [[0.0, 0.0], [0.0, 0.0], [5.0, 9.0], [9.0, 1.0]];
        assert!(matches!(Homography::fit(&dup, &ground), Err(CalibrationError::Collinear { .. })));
    }

    #[test]
    fn a_mistyped_point_shows_in_the_reprojection_error() {
        let image =
            [[0.0, 0.0], [1280.0, 0.0], [1280.0, 720.0], [0.0, 720.0], [640.0, 360.0], [300.0, 500.0]];
        let mut ground: Vec<[f64; 2]> = image.iter().map(|p| [p[0] / 32.0, p[1] / 32.0]).collect();
        ground[4][0] += 3.0; // 3 m off
        let h = Homography::fit(&image, &ground).unwrap();
        assert!(h.rms_error_m > 0.3, "{}", h.rms_error_m);
    }

    proptest! {
        #[test]
        fn random_planar_views_are_recovered(
            a in 0.01f64..0.05, b in -0.01f64..0.01, d in -0.005f64..0.005, e in 0.01f64..0.05,
            g in -0.0005f64..0.0005, hh in -0.0005f64..0.0005, tx in -20.0f64..20.0, ty in -20.0f64..20.0,
        ) {
            let truth = Matrix3::new(a, b, tx, d, e, ty, g, hh, 1.0);
            let image = [[50.0, 60.0], [1200.0, 80.0], [1150.0, 650.0], [90.0, 700.0], [640.0, 300.0]];
            let ground: Vec<[f64; 2]> = image.iter().map(|p| apply(&truth, *p)).collect();
            prop_assume!(ground.iter().all(|p| p.iter().all(|v| v.is_finite() && v.abs() < 1e6)));
            if let Ok(h) = Homography::fit(&image, &ground) {
                let p = [400.0, 500.0];
                let (x, y) = (h.to_ground(p), apply(&truth, p));
                prop_assert!((x[0] - y[0]).abs() < 1e-6 * (1.0 + y[0].abs()) && (x[1] - y[1]).abs() < 1e-6 * (1.0 + y[1].abs()));
            }
        }
    }
}

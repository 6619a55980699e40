//! Box geometry shared by detectors and trackers: boxes are `[x, y, w, h]` (top-left corner,
//! width, height), as the `detections` and `tracks` streams carry them.

/// Intersection over union of two `[x, y, w, h]` boxes; 0 when they do not overlap.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let ix = (a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0]);
    let iy = (a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1]);
    if ix <= 0.0 || iy <= 0.0 {
        return 0.0;
    }
    let inter = ix * iy;
    let union = a[2] * a[3] + b[2] * b[3] - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

#[cfg(test)]
mod tests {
    use super::iou;

    #[test]
    fn overlap_is_shared_area_over_total_area() {
        assert_eq!(iou(&[0.0, 0.0, 10.0, 10.0], &[5.0, 0.0, 10.0, 10.0]), 50.0 / 150.0);
        assert_eq!(iou(&[0.0, 0.0, 10.0, 10.0], &[10.0, 0.0, 10.0, 10.0]), 0.0);
        assert_eq!(iou(&[2.0, 2.0, 4.0, 4.0], &[2.0, 2.0, 4.0, 4.0]), 1.0);
    }
}

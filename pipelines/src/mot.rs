//! MOTChallenge interchange: detections in, tracks out, in the text format of MOT17/MOT20, so
//! that anyone holding those benchmarks (or their own annotated footage) can score vigil's
//! tracker with the standard tools (TrackEval, py-motmetrics).
//!
//! Detections (`det/det.txt`): one box per line, `frame,id,left,top,width,height,conf[,x,y,z]`
//! with frames from 1 and `id` = -1. Tracks (`<sequence>.txt`):
//! `frame,id,left,top,width,height,conf,-1,-1,-1`. Parsing is strict and every error names the
//! file, line and column; written by hand (a CSV crate would add little for ten numbers per
//! line, and could not report the column of a bad number).

use std::io::Write;
use std::path::Path;

use vigil_operators::tracker::{Observation, TrackOut, TrackState, Tracker, TrackerConfig};

/// One detection line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MotDetection {
    /// Frame number, from 1.
    pub frame: u32,
    /// The object's id (-1 in detections; a track's id in tracks).
    pub id: i64,
    /// Box `[left, top, width, height]`.
    pub bbox: [f32; 4],
    /// Confidence.
    pub conf: f32,
}

/// A parse error with its place.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{column}: {what}; fix: {fix}")]
pub struct MotError {
    /// File.
    pub file: String,
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
    /// What is wrong.
    pub what: String,
    /// How to fix it.
    pub fix: String,
}

/// Parses MOTChallenge detections; `file` names the text in errors.
pub fn parse_detections(text: &str, file: &str) -> Result<Vec<MotDetection>, MotError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_end_matches('\r');
        if trimmed.trim().is_empty() {
            continue;
        }
        let err = |column: usize, what: String, fix: &str| MotError {
            file: file.to_owned(),
            line: n + 1,
            column,
            what,
            fix: fix.to_owned(),
        };
        let mut fields = Vec::with_capacity(10);
        let mut col = 1;
        for f in trimmed.split(',') {
            fields.push((col, f.trim()));
            col += f.chars().count() + 1;
        }
        if fields.len() < 7 {
            return Err(err(
                1,
                format!("{} field(s), expected at least 7", fields.len()),
                "write frame,id,left,top,width,height,conf (MOTChallenge det.txt)",
            ));
        }
        let num = |i: usize| -> Result<f64, MotError> {
            let (c, s) = fields[i];
            s.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| err(c, format!("{s:?} is not a number"), "write a decimal number"))
        };
        let frame = num(0)?;
        if frame < 1.0 || frame.fract() != 0.0 || frame > f64::from(MAX_FRAME) {
            return Err(err(
                fields[0].0,
                format!("frame {frame} is not a frame number"),
                "frames count from 1 to 10,000,000 (over 11 days at 10 fps: split longer sequences)",
            ));
        }
        let id = num(1)?;
        if id.fract() != 0.0 || id.abs() > 1e15 {
            return Err(err(fields[1].0, format!("id {id} is not an id"), "write -1 or a whole number"));
        }
        let bbox = [num(2)? as f32, num(3)? as f32, num(4)? as f32, num(5)? as f32];
        if bbox[2] <= 0.0 || bbox[3] <= 0.0 {
            return Err(err(fields[4].0, "the box has no area".into(), "give a positive width and height"));
        }
        out.push(MotDetection { frame: frame as u32, id: id as i64, bbox, conf: num(6)? as f32 });
    }
    Ok(out)
}

/// The last frame a sequence may have: the tracker steps through every frame up to the last,
/// so one stray line with frame 4294967295 would otherwise take hours of CPU.
pub const MAX_FRAME: u32 = 10_000_000;

/// The largest detections file read, bytes.
pub const MAX_FILE: u64 = 1 << 30;

/// Runs the tracker over MOT detections and writes MOT tracks; returns (frames, track rows,
/// seconds spent tracking, without parsing and writing).
pub fn track_file(det: &Path, out: &Path, config: TrackerConfig) -> anyhow::Result<(u32, usize, f64)> {
    use anyhow::Context;
    let text = vigil_engine::text_file::read(det, "detections file", MAX_FILE)?;
    let mut dets = parse_detections(&text, &det.display().to_string())?;
    dets.sort_by_key(|d| d.frame);
    let last = dets.last().map_or(0, |d| d.frame);
    let tmp = out.with_extension("txt.tmp");
    let mut w = std::io::BufWriter::new(
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
    );
    let mut tracker = Tracker::new(config);
    let (mut obs, mut tracks, mut rows) = (Vec::new(), Vec::new(), 0);
    let mut i = 0;
    let mut tracking = std::time::Duration::ZERO;
    for frame in 1..=last {
        obs.clear();
        while i < dets.len() && dets[i].frame == frame {
            obs.push(Observation { bbox: dets[i].bbox, score: dets[i].conf, class: 0, tag: 0 });
            i += 1;
        }
        let t0 = std::time::Instant::now();
        tracker.update(f64::from(frame - 1) * f64::from(config.frame_interval_s), &obs, &mut tracks);
        tracking += t0.elapsed();
        for t in tracks.iter().filter(|t| t.state == TrackState::Tracked) {
            write_track(&mut w, frame, t)?;
            rows += 1;
        }
    }
    w.flush()?;
    drop(w);
    std::fs::rename(&tmp, out)?;
    Ok((last, rows, tracking.as_secs_f64()))
}

/// People who crossed one line: toward its `in` side (the left of the line drawn from its first
/// point to its second, in image coordinates) and away from it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LineCount {
    /// Crossings toward the `in` side.
    pub inward: usize,
    /// Crossings away from it.
    pub outward: usize,
}

/// How far a foot point must be clear of a line for a change of side to count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Margin {
    /// Pixels, the same everywhere on the image.
    Pixels(f64),
    /// Metres, as the live operator counts on the ground: each box's pixels across the line
    /// are converted at its own scale, its height being `person_m` metres (a detector's noise
    /// is in proportion to the box, so in metres it is about the same near and far).
    Metres { margin_m: f64, person_m: f64 },
}

/// Counts the crossings of MOT tracks (any tracker's) over `lines` (`[x1, y1, x2, y2]`, pixels)
/// with the flow operator's own logic ([`vigil_operators::flows::Flows`]): a track's foot
/// point (the middle of its box's bottom edge) must be `margin` clear of a line on either side
/// for a change of side to count. For scoring gate counts on footage with ground truth.
pub fn count_crossings(
    tracks: &Path,
    lines: &[[f64; 4]],
    margin: Margin,
    fps: f64,
) -> anyhow::Result<Vec<LineCount>> {
    use vigil_operators::flows::{CrossingCols, FlowConfig, FlowRows, Flows, GateLine};
    use vigil_operators::tracks::{TrackRow, TrackRows};
    let text = vigil_engine::text_file::read(tracks, "tracks file", MAX_FILE)?;
    let mut rows = parse_detections(&text, &tracks.display().to_string())?;
    rows.sort_by_key(|r| r.frame);
    let mut counts = Vec::with_capacity(lines.len());
    // One line at a time: with a margin in metres, the distance across each line is scaled.
    for l in lines {
        let (from, d) = ([l[0], l[1]], [l[2] - l[0], l[3] - l[1]]);
        let len = d[0].hypot(d[1]);
        let (u, n) = ([d[0] / len, d[1] / len], [-d[1] / len, d[0] / len]);
        let mid = [from[0] + d[0] / 2.0, from[1] + d[1] / 2.0];
        let gate = GateLine {
            id: 0,
            name: "line".into(),
            camera: 0,
            from,
            to: [l[2], l[3]],
            // The left of from → to as drawn on the image (y grows downwards).
            in_side: [mid[0] + d[1], mid[1] - d[0]],
        };
        let (margin_m, scale) = match margin {
            Margin::Pixels(px) => (px, None),
            Margin::Metres { margin_m, person_m } => (margin_m, Some(person_m)),
        };
        let mut flows = Flows::new(FlowConfig { margin_m, ..FlowConfig::new(vec![gate], Vec::new()) });
        let mut batch = TrackRows::default();
        for (i, r) in rows.iter().enumerate() {
            let b = r.bbox;
            let foot = [f64::from(b[0] + b[2] / 2.0) - from[0], f64::from(b[1] + b[3]) - from[1]];
            let (along, mut across) = (foot[0] * u[0] + foot[1] * u[1], foot[0] * n[0] + foot[1] * n[1]);
            if let Some(person_m) = scale {
                across *= person_m / f64::from(b[3]);
            }
            let g = [from[0] + along * u[0] + across * n[0], from[1] + along * u[1] + across * n[1]];
            batch.push(&TrackRow {
                camera_id: 0,
                event_time: ((f64::from(r.frame) - 1.0) * 1000.0 / fps).round() as i64,
                event_id: i as u64,
                track_id: r.id as u64,
                class: "person",
                x: b[0],
                y: b[1],
                w: b[2],
                h: b[3],
                vx: 0.0,
                vy: 0.0,
                state: "tracked",
                ground_x: g[0] as f32,
                ground_y: g[1] as f32,
                zone_id: None,
            });
        }
        let mut out = FlowRows::default();
        flows.apply(&batch.finish(), &mut out)?;
        let mut n = LineCount::default();
        if let (Some(crossings), _) = out.finish() {
            for c in CrossingCols::new(&crossings)?.rows() {
                if c.direction == "in" { n.inward += 1 } else { n.outward += 1 }
            }
        }
        counts.push(n);
    }
    Ok(counts)
}

fn write_track(w: &mut impl Write, frame: u32, t: &TrackOut) -> std::io::Result<()> {
    let b = t.bbox;
    writeln!(w, "{frame},{},{:.2},{:.2},{:.2},{:.2},{:.3},-1,-1,-1", t.id, b[0], b[1], b[2], b[3], t.score)
}

/// Writes one simulated camera as a MOTChallenge sequence in `dir`: `gt/gt.txt` (true person
/// boxes, from the simulator's ground truth), `det/det.txt` (what its detector reported: noisy
/// boxes, misses and false positives at the rates of `params`) and `seqinfo.ini`. Returns the
/// number of (ground-truth, detection) boxes.
pub fn simulate_sequence(
    params: &crate::sim::SimParams,
    camera: u32,
    frames: u32,
    dir: &Path,
) -> anyhow::Result<(usize, usize)> {
    use crate::sim::{CameraSim, IMAGE, PX_PER_M};
    std::fs::create_dir_all(dir.join("gt"))?;
    std::fs::create_dir_all(dir.join("det"))?;
    let mut gt = std::io::BufWriter::new(std::fs::File::create(dir.join("gt/gt.txt"))?);
    let mut det = std::io::BufWriter::new(std::fs::File::create(dir.join("det/det.txt"))?);
    let mut sim = CameraSim::new(params, camera);
    let o = params.view_origin(camera);
    let (w, h) = (0.6 * PX_PER_M, 1.7 * PX_PER_M);
    let (mut n_gt, mut n_det) = (0, 0);
    for frame in 1..=frames {
        let f = sim.step(params);
        for obj in f.objects.iter().filter(|o| o.class == "person") {
            if obj.object_id != u64::MAX {
                let foot = [(obj.truth[0] - o[0]) * PX_PER_M, (obj.truth[1] - o[1]) * PX_PER_M];
                let b = [foot[0] - w / 2.0, foot[1] - h, w, h];
                if b[0] >= 0.0 && b[1] >= 0.0 && b[0] + w <= IMAGE[0] && b[1] + h <= IMAGE[1] {
                    // MOT gt: frame, id (from 1), box, consider, class 1 (pedestrian), visibility.
                    writeln!(
                        gt,
                        "{frame},{},{:.2},{:.2},{:.2},{:.2},1,1,1",
                        obj.object_id + 1,
                        b[0],
                        b[1],
                        b[2],
                        b[3]
                    )?;
                    n_gt += 1;
                }
            }
            if let Some((b, score)) = obj.detected {
                writeln!(
                    det,
                    "{frame},-1,{:.2},{:.2},{:.2},{:.2},{score:.3},-1,-1,-1",
                    b[0], b[1], b[2], b[3]
                )?;
                n_det += 1;
            }
        }
    }
    gt.flush()?;
    det.flush()?;
    let name = dir.file_name().map_or("vigil-sim".into(), |n| n.to_string_lossy().into_owned());
    std::fs::write(
        dir.join("seqinfo.ini"),
        format!(
            "[Sequence]\nname={name}\nimDir=img1\nframeRate={}\nseqLength={frames}\nimWidth={}\nimHeight={}\nimExt=.jpg\n",
            params.fps.round() as u32,
            IMAGE[0] as u32,
            IMAGE[1] as u32
        ),
    )?;
    Ok((n_gt, n_det))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_mot17_lines_and_places_errors() {
        let d =
            parse_detections("1,-1,794.2,47.5,71.2,174.8,67.5,-1,-1,-1\n\n2,-1,10,20,30,40,0.9\n", "det.txt")
                .unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0], MotDetection { frame: 1, id: -1, bbox: [794.2, 47.5, 71.2, 174.8], conf: 67.5 });
        let e = parse_detections("1,-1,1,2,3,4,0.5\n2,-1,1,x2,3,4,0.5\n", "det.txt").unwrap_err().to_string();
        assert!(e.starts_with("det.txt:2:8: \"x2\" is not a number"), "{e}");
        let e = parse_detections("0,-1,1,2,3,4,0.5\n", "det.txt").unwrap_err().to_string();
        assert!(e.contains("det.txt:1:1:") && e.contains("frames count from 1"), "{e}");
        let e = parse_detections("1,-1,1,2\n", "d").unwrap_err().to_string();
        assert!(e.contains("expected at least 7"), "{e}");
    }

    proptest! {
        #[test]
        fn the_parser_never_panics(text in "[0-9,.\\-x \\n\\r]{0,200}") {
            if let Ok(dets) = parse_detections(&text, "f") {
                prop_assert!(dets.iter().all(|d| d.frame >= 1 && d.bbox[2] > 0.0 && d.bbox[3] > 0.0));
            }
        }
    }
}

//! The tracker judged by independent tools: `scripts/track_eval.py --split test` (the whole
//! reported table, under a minute) tracks detections made from three sources of ground truth
//! (TUD-Stadtmitte, real pedestrians; `scripts/walkers.py`, a generator written apart from
//! vigil's simulator; `vigil mot-sim`) under three written-down detector models, with vigil and with Roboflow's ByteTrack, OC-SORT
//! and SORT (PyPI `trackers`), and scores them with `trackers.eval` (TrackEval's metrics), once
//! it has reproduced py-motmetrics' stated scores on the real TUD tracker output it ships.

mod common;

use std::process::Command;

use common::{python, root};

const PEERS: [&str; 3] = ["bytetrack", "ocsort", "sort"];

/// `vigil <args>` run in `dir`.
fn vigil_in(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vigil")).args(args).current_dir(dir).output().unwrap()
}

/// Runs `scripts/<script> --split test <extra>` with this build of vigil: its JSON and its table.
fn test_split(script: &str, extra: &[&str]) -> (serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let out = Command::new(python())
        .arg(root().join("scripts").join(script))
        .args(["--vigil", env!("CARGO_BIN_EXE_vigil"), "--split", "test", "--work"])
        .arg(dir.path())
        .arg("--json")
        .arg(&json)
        .args(extra)
        .output()
        .expect("python");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{report}{}", String::from_utf8_lossy(&out.stderr));
    (serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap(), report)
}

#[test]
fn vigil_tracks_at_least_as_well_as_bytetrack_ocsort_and_sort_except_idf1_on_real_pedestrians_at_low_noise() {
    let (scores, report) = test_split("track_eval.py", &[]);
    // The judge first reproduces what py-motmetrics states for the real tracker output it ships.
    for (seq, mota, idf1) in [("TUD-Campus", 0.5265, 0.5577), ("TUD-Stadtmitte", 0.5640, 0.6446)] {
        let got = &scores["scorer_check"][seq]["scored"];
        let (m, i) = (got["MOTA"].as_f64().unwrap(), got["IDF1"].as_f64().unwrap());
        assert!(
            (m - mota).abs() <= 0.005 && (i - idf1).abs() <= 0.005,
            "{seq}: MOTA {m:.4}, IDF1 {i:.4}\n{report}"
        );
    }
    let cells = scores["cells"].as_object().expect("cells");
    assert_eq!(cells.len(), 9, "3 sources × 3 noise levels\n{report}");
    for (cell, by) in cells {
        let ours = |m: &str| by["vigil"][m].as_f64().unwrap();
        let best = |m: &str| PEERS.iter().map(|p| by[*p][m].as_f64().unwrap()).fold(f64::MIN, f64::max);
        assert!(by["vigil"]["HOTA"].as_f64().unwrap() > 0.0, "{cell}: HOTA reported\n{report}");
        assert!(
            ours("MOTA") >= best("MOTA"),
            "{cell}: our MOTA {:.4} is below the best peer's {:.4}\n{report}",
            ours("MOTA"),
            best("MOTA")
        );
        if cell == "tud/low" {
            // The goal is not met on IDF1 here: on TUD-Stadtmitte a person walks out at the
            // frame's right edge, another walks in there half a second later, and the lost
            // track takes them (SORT, which keeps no lost track that long, does not).
            // Measured and reported in benches/README.md; what holds is IDF1 within 0.05.
            assert!(
                ours("IDF1") >= best("IDF1") - 0.05,
                "{cell}: IDF1 {:.4} vs {:.4}\n{report}",
                ours("IDF1"),
                best("IDF1")
            );
        } else {
            assert!(
                ours("IDF1") >= best("IDF1"),
                "{cell}: our IDF1 {:.4} is below the best peer's {:.4}\n{report}",
                ours("IDF1"),
                best("IDF1")
            );
        }
    }
}

#[test]
fn vigil_track_reads_and_writes_motchallenge_text() {
    let dir = tempfile::tempdir().unwrap();
    // Two people walking apart for 20 frames, plus one weak spurious box.
    let mut det = String::new();
    for f in 1..=20 {
        det.push_str(&format!("{f},-1,{},100,20,50,0.9,-1,-1,-1\n", 100 + f * 3));
        det.push_str(&format!("{f},-1,{},300,20,50,0.85,-1,-1,-1\n", 400 - f * 3));
    }
    det.push_str("7,-1,600,20,20,50,0.3,-1,-1,-1\n");
    std::fs::write(dir.path().join("det.txt"), det).unwrap();
    let out = vigil_in(dir.path(), &["track", "--mot-det", "det.txt", "--out", "tracks.txt", "--fps", "10"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tracks = std::fs::read_to_string(dir.path().join("tracks.txt")).unwrap();
    let rows: Vec<Vec<f64>> =
        tracks.lines().map(|l| l.split(',').map(|v| v.parse().unwrap()).collect()).collect();
    assert!(rows.iter().all(|r| r.len() == 10 && r[7] == -1.0), "MOT columns: {tracks}");
    let mut ids: Vec<i64> = rows.iter().map(|r| r[1] as i64).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids, [1, 2], "two identities, none for the weak box: {tracks}");
    // Frames 2..=20 each carry both people (a track is confirmed on its second frame).
    assert_eq!(rows.len(), 38, "{tracks}");
    // A bad line is placed.
    std::fs::write(dir.path().join("bad.txt"), "1,-1,10,20,30,40,0.9\n2,-1,10,20,-3,40,0.9\n").unwrap();
    let out = vigil_in(dir.path(), &["track", "--mot-det", "bad.txt", "--out", "t.txt"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bad.txt:2:") && err.contains("no area"), "{err}");

    // One line with the largest frame number is refused at once, not tracked for an hour.
    std::fs::write(dir.path().join("far.txt"), "1,-1,10,20,30,40,0.9\n4294967295,-1,10,20,30,40,0.9\n")
        .unwrap();
    let t0 = std::time::Instant::now();
    let out = vigil_in(dir.path(), &["track", "--mot-det", "far.txt", "--out", "t.txt"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("far.txt:2:1") && err.contains("10,000,000"), "{err}");
    assert!(t0.elapsed() < std::time::Duration::from_secs(30));

    let out = vigil_in(dir.path(), &["track", "--mot-det", "det.txt", "--out", "t.txt", "--fps", "0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--fps 0 is not a frame rate") && err.contains("fix:"),
        "{err}"
    );
    // Every tracker setting has its flag; they are checked as the TOML's [tracker] is.
    let help = Command::new(env!("CARGO_BIN_EXE_vigil")).args(["track", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for name in vigil_operators::tracker::TrackerConfig::SETTINGS.map(|s| s.name) {
        assert!(help.contains(&format!("--{}", name.replace('_', "-"))), "no flag for {name}: {help}");
    }
    for (flag, value, fix) in
        [("--strict-iou", "1.5", "from 0 to 1"), ("--confirm-frames", "0", "from 1 to 100")]
    {
        let out = vigil_in(dir.path(), &["track", "--mot-det", "det.txt", "--out", "t.txt", flag, value]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && err.contains(&format!("{flag} {value} is out of range"))
                && err.contains(fix),
            "{err}"
        );
    }
}

/// `vigil count` over hand-made tracks: each walker's crossing counted once in its direction,
/// a person standing on the line with a wobbling box counted never, and the margin in metres
/// scaled by each box (a far person's wobble is as many metres as a near one's).
#[test]
fn vigil_count_counts_crossings_once_and_a_wobble_on_the_line_never() {
    let dir = tempfile::tempdir().unwrap();
    let mut tracks = String::new();
    for f in 1..=40 {
        // 1 walks right across x = 320 (towards the line's `in` side), 2 walks left.
        tracks.push_str(&format!("{f},1,{},100,40,170,1,-1,-1,-1\n", 200 + f * 6 - 20));
        tracks.push_str(&format!("{f},2,{},150,40,170,1,-1,-1,-1\n", 540 - f * 8 - 20));
        // 3 stands on the line, the box's centre wobbling 6 px (4% of its height) each way,
        // two frames on each side.
        let wobble = if (f / 2) % 2 == 0 { 6 } else { -6 };
        tracks.push_str(&format!("{f},3,{},200,40,150,1,-1,-1,-1\n", 320 + wobble - 20));
    }
    std::fs::write(dir.path().join("tracks.txt"), tracks).unwrap();
    let count = |extra: &[&str]| {
        let args =
            [&["count", "--mot-tracks", "tracks.txt", "--line", "320,0,320,480", "--fps", "10"], extra]
                .concat();
        let out = vigil_in(dir.path(), &args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    // 6 px on a 150 px person is 0.07 m: inside the default margin.
    assert_eq!(count(&[]), "line\tin\tout\n1\t1\t1\n");
    // With no margin the wobble counts at each frame.
    let none = count(&["--margin", "0"]);
    let wobbles: usize =
        none.lines().nth(1).unwrap().split('\t').skip(1).map(|v| v.parse::<usize>().unwrap()).sum();
    assert!(wobbles > 15, "{none}");
    // A bad line is refused with the fix.
    let out = vigil_in(dir.path(), &["count", "--mot-tracks", "tracks.txt", "--line", "320,0,320"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("X1,Y1,X2,Y2"), "{err}");
}

/// Gate counts judged on ground truth: `scripts/flow_eval.py --split test` counts two lines
/// across each test sequence (TUD-Stadtmitte's real pedestrians, the walkers generator,
/// `vigil mot-sim`) under the three detector models, with vigil's tracker and flow logic and
/// with Roboflow's recipe (ByteTrack and supervision's `LineZone`), against the crossings of
/// the ground truth's people.
#[test]
fn gate_counts_err_less_than_bytetrack_with_supervisions_line_zone() {
    // Scored at the operator's own margin, whatever the script's default.
    let margin = vigil_operators::flows::FlowConfig::new(Vec::new(), Vec::new()).margin_m.to_string();
    let (cells, report) = test_split("flow_eval.py", &["--margins", &margin]);
    let cells = cells.as_object().unwrap();
    assert_eq!(cells.len(), 9, "{report}");
    let ours = format!("vigil m={margin}");
    let (mut total, mut mine, mut theirs) = (0, 0, [0, 0]);
    for (cell, c) in cells {
        let n = |k: &str| c[k].as_u64().unwrap_or_else(|| panic!("{cell}: no {k}\n{report}"));
        total += n("truth");
        mine += n(&ours);
        theirs[0] += n("linezone");
        theirs[1] += n("linezone-foot");
        // Where enough people cross to measure, vigil's count is within 30% of the truth.
        if n("truth") >= 50 {
            assert!(
                n(&ours) * 10 <= n("truth") * 3,
                "{cell}: error {} of {}\n{report}",
                n(&ours),
                n("truth")
            );
        }
    }
    // Over every cell, vigil's errors are at most half the better recipe's.
    assert!(total > 500 && mine * 2 <= theirs[0].min(theirs[1]), "{mine} vs {theirs:?} of {total}\n{report}");
}

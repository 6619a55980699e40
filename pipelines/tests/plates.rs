//! The plate reader on rendered Moroccan plates it was not trained on: `scripts/plates.py
//! heldout` writes one- and two-line plates with noise, blur, perspective and night contrast,
//! their letter in Noto Sans Arabic (a font the letter classifier never saw), and `vigil plate
//! eval` scores the readings. The floors are well under the figures the README reports, so the
//! test fails on a broken reader, not on a different seed.

mod common;

use std::process::Command;

use common::{python, root};

#[test]
fn the_reader_reads_held_out_plates_and_rarely_guesses_a_wrong_letter() {
    let dir = tempfile::tempdir().unwrap();
    let made = Command::new(python())
        .args([root().join("scripts/plates.py").to_str().unwrap(), "heldout"])
        .args(["--out", dir.path().to_str().unwrap(), "--n", "80", "--seed", "13"])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["plate", "eval", dir.path().to_str().unwrap()])
        .current_dir(root())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    // "80 plates: whole plate 0.425, per character 0.886, letter 0.438 right / 0.460 unknown / 0.102 wrong; ..."
    let figure = |after: &str| -> f64 {
        let at = text.find(after).unwrap_or_else(|| panic!("{after:?} in {text}")) + after.len();
        text[at..].trim_start().split([',', ' ', ';']).next().unwrap().parse().unwrap()
    };
    assert!(text.starts_with("80 plates"), "{text}");
    assert!(figure("per character") >= 0.8, "{text}");
    assert!(figure("whole plate") >= 0.25, "{text}");
    assert!(figure("letter") >= 0.25, "{text}");
    // A wrong letter is worse than an unknown one: the join matches `?` at a lower score.
    assert!(figure("unknown /") <= 0.2, "wrong letters: {text}");
}

#[test]
fn a_crop_that_is_not_a_plate_is_a_clear_answer_and_a_missing_file_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let blank = dir.path().join("blank.png");
    image::RgbImage::from_pixel(200, 44, image::Rgb([240, 240, 240])).save(&blank).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["plate", "read", blank.to_str().unwrap()])
        .current_dir(root())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("(no plate text)"), "{text}");
    let missing = dir.path().join("nope.png");
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["plate", "read", missing.to_str().unwrap()])
        .current_dir(root())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("nope.png: cannot open"), "{err}");
}

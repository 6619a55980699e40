//! Fuzzy plate matching for the watchlist join: OCR confusions, an unread letter, one edit on the serial.
//!
//! Plate readers misread: a `0` for an `O`, a `1` for an `I`, an `8` for a `B`; a lost Arabic
//! letter; one wrong digit. An exact join misses those reads of a listed plate, so the
//! watchlist join compares plates with [`score`]: a pair matches when its regions (and the
//! other fixed fields) agree, its letters agree or one is unread, and its serials are at most
//! one edit apart. Each relaxation lowers the score ([`UNREAD_LETTER`], [`SERIAL_EDIT`],
//! [`CONFUSION`]) and every match says why it matched, for the person who verifies it.
//!
//! The join cannot compare every read with a million entries, so plates meet on blocking keys
//! ([`keys`]): the kind, the fixed fields, and the serial with at most one digit deleted
//! (letters left out). Two serials one edit apart always share such a deletion, so every pair
//! [`score`] accepts shares a key; a pair that shares several is emitted once, on the smallest
//! ([`first_shared_key`]). Keys are 64-bit FNV-1a hashes (written here: a stable hash across
//! releases and machines, as replays compare hit ids); a collision only costs one more
//! comparison.

use crate::plate::{Plate, UNKNOWN_LETTER, parse};

/// Score factor of a read whose letter is unread (or an entry listed without its letter).
pub const UNREAD_LETTER: f32 = 0.8;
/// Score factor of serials one edit (a digit changed, added or lost) apart.
pub const SERIAL_EDIT: f32 = 0.7;
/// Score factor of a read that needed OCR confusions undone to be a plate.
pub const CONFUSION: f32 = 0.9;

/// A read's plate for matching: its canonical plate when it has one; otherwise its raw text with
/// the common OCR confusions undone (`O`→`0`, `I`/`l`→`1`, `B`→`8` inside digit groups, and a
/// lone `8`/`0` in the letter's place read as `B`/`O`), with what was undone; `None` when even
/// that is not a plate.
pub fn reading(raw: &str, canonical: Option<&str>) -> Option<(Plate, Option<String>)> {
    if let Some(p) = canonical.and_then(|c| parse(c).ok()) {
        return Some((p, None));
    }
    if let Ok(p) = parse(raw) {
        return Some((p, None));
    }
    let (fixed, undone) = undo_confusions(raw)?;
    let p = parse(&fixed).ok()?;
    Some((p, Some(format!("read {raw:?} as {p} ({})", undone.join(", ")))))
}

fn is_separator(c: char) -> bool {
    c.is_whitespace() || matches!(c, '-' | '|' | '/' | '.' | '_' | '\u{200F}' | '\u{200E}')
}

/// The text with confusions undone and what was undone, or `None` when nothing was.
fn undo_confusions(raw: &str) -> Option<(String, Vec<String>)> {
    let chars: Vec<char> = raw.chars().collect();
    // Groups: maximal runs of non-separators, as (start, end).
    let mut groups = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if is_separator(chars[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && !is_separator(chars[i]) {
            i += 1;
        }
        groups.push((start, i));
    }
    let mut out = chars.clone();
    let mut undone = Vec::new();
    for (g, &(s, e)) in groups.iter().enumerate() {
        let digits = chars[s..e].iter().filter(|c| c.is_numeric()).count();
        if e - s >= 2 && digits >= 1 {
            for (j, c) in chars.iter().enumerate().take(e).skip(s) {
                let d = match c {
                    'O' | 'o' => '0',
                    'I' | 'l' => '1',
                    'B' => '8',
                    _ => continue,
                };
                out[j] = d;
                undone.push(format!("{c}→{d}"));
            }
        } else if e - s == 1 && groups.len() == 3 && g == 1 {
            let l = match chars[s] {
                '8' => 'B',
                '0' => 'O',
                _ => continue,
            };
            out[s] = l;
            undone.push(format!("{}→{l}", chars[s]));
        }
    }
    (!undone.is_empty()).then(|| (out.into_iter().collect(), undone))
}

/// How well a read plate matches a listed one: the score in `(0, 1]` and why, or `None`.
pub fn score(read: &Plate, listed: &Plate) -> Option<(f32, String)> {
    use Plate::{Current, Diplomatic, Old, State};
    let (mut score, mut why) = (1.0f32, Vec::new());
    let (rs, ls) = match (read, listed) {
        (Current { serial: a, letter: la, region: ra }, Current { serial: b, letter: lb, region: rb }) => {
            if ra != rb {
                return None;
            }
            if la != lb {
                if *la != UNKNOWN_LETTER && *lb != UNKNOWN_LETTER {
                    return None;
                }
                score *= UNREAD_LETTER;
                why.push(if *la == UNKNOWN_LETTER {
                    format!("letter unread, listed {lb}")
                } else {
                    format!("letter {la} read, listed without its letter")
                });
            }
            (*a, *b)
        }
        (Old { serial: a, series: sa, region: ra }, Old { serial: b, series: sb, region: rb }) => {
            if (sa, ra) != (sb, rb) {
                return None;
            }
            (*a, *b)
        }
        (State { serial: a }, State { serial: b }) => (*a, *b),
        (Diplomatic { .. }, Diplomatic { .. }) => return (read == listed).then(|| (1.0, "exact".into())),
        _ => return None,
    };
    if rs != ls {
        let (a, b) = (rs.to_string(), ls.to_string());
        if !one_edit(a.as_bytes(), b.as_bytes()) {
            return None;
        }
        score *= SERIAL_EDIT;
        why.push(format!("serial {a} read, {b} listed (one edit)"));
    }
    Some((score, if why.is_empty() { "exact".into() } else { why.join("; ") }))
}

/// True when `a` and `b` differ by exactly one substitution, insertion or deletion.
fn one_edit(a: &[u8], b: &[u8]) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    match long.len() - short.len() {
        0 => a.iter().zip(b).filter(|(x, y)| x != y).count() == 1,
        1 => {
            let p = short.iter().zip(long).take_while(|(x, y)| x == y).count();
            short[p..] == long[p + 1..]
        }
        _ => false,
    }
}

/// The blocking keys of a plate: any two plates [`score`] matches share one.
pub fn keys(p: &Plate) -> Vec<u64> {
    let (kind, fixed, serial): (u8, [u32; 2], u32) = match *p {
        Plate::Current { serial, region, .. } => (0, [u32::from(region), 0], serial),
        Plate::Old { serial, series, region } => (1, [u32::from(series), u32::from(region)], serial),
        Plate::State { serial } => (2, [0, 0], serial),
        Plate::Diplomatic { mission, vehicle } => {
            let [m, v] = [mission, vehicle].map(|x| x.map_or(u32::MAX, |x| x));
            return vec![fnv(&[&[3], &m.to_le_bytes(), &v.to_le_bytes()])];
        }
    };
    let digits = serial.to_string().into_bytes();
    let mut keys = Vec::with_capacity(digits.len() + 1);
    let mut variant = Vec::with_capacity(digits.len());
    for skip in 0..=digits.len() {
        variant.clear();
        variant.extend(digits.iter().enumerate().filter(|(i, _)| *i != skip).map(|(_, d)| *d));
        keys.push(fnv(&[&[kind], &fixed[0].to_le_bytes(), &fixed[1].to_le_bytes(), &variant]));
    }
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The issued letters in a fixed order (their codes in [`pack`]); [`UNKNOWN_LETTER`] is 15.
const LETTER_CODES: [char; 8] = ['أ', 'ب', 'د', 'ه', 'و', 'ط', 'ي', 'ج'];

/// A plate in one `u64`: the join's arrangements hold numbers, not strings (no allocation per
/// row, 8 bytes per plate). [`unpack`] reverses it. Bits 60 and 61 are never set.
pub fn pack(p: &Plate) -> u64 {
    match *p {
        Plate::Current { serial, letter, region } => {
            let l = if letter == UNKNOWN_LETTER {
                15
            } else {
                LETTER_CODES.iter().position(|c| *c == letter).map_or(14, |i| i as u64)
            };
            (u64::from(serial) << 16) | (l << 8) | u64::from(region)
        }
        Plate::Old { serial, series, region } => {
            (1 << 62) | (u64::from(serial) << 16) | (u64::from(series) << 8) | u64::from(region)
        }
        Plate::State { serial } => (2 << 62) | u64::from(serial),
        Plate::Diplomatic { mission, vehicle } => {
            let part = |x: Option<u32>| x.map_or(0, |x| (1 << 29) | (u64::from(x) & ((1 << 29) - 1)));
            (3 << 62) | (part(mission) << 30) | part(vehicle)
        }
    }
}

/// The plate [`pack`] made `x` from, or `None` when `x` is not one.
pub fn unpack(x: u64) -> Option<Plate> {
    let (serial, mid, low) = (((x >> 16) & 0xFF_FFFF) as u32, ((x >> 8) & 0xFF) as u8, (x & 0xFF) as u8);
    Some(match x >> 62 {
        0 => {
            let letter = match mid {
                15 => UNKNOWN_LETTER,
                l => *LETTER_CODES.get(usize::from(l))?,
            };
            Plate::Current { serial, letter, region: low }
        }
        1 => Plate::Old { serial, series: mid, region: low },
        2 => Plate::State { serial: (x & 0xFFFF_FFFF) as u32 },
        _ => {
            let part = |y: u64| ((y >> 29) & 1 == 1).then_some((y & ((1 << 29) - 1)) as u32);
            Plate::Diplomatic {
                mission: part((x >> 30) & ((1 << 30) - 1)),
                vehicle: part(x & ((1 << 30) - 1)),
            }
        }
    })
}

/// The smallest key `a` and `b` share, if any (both sorted, as [`keys`] returns them).
pub fn first_shared_key(a: &[u64], b: &[u64]) -> Option<u64> {
    a.iter().copied().find(|k| b.binary_search(k).is_ok())
}

/// 64-bit FNV-1a over the parts, each followed by a 0xFF separator.
pub fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.iter().chain(&[0xFF]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Plate {
        parse(s).unwrap()
    }

    #[test]
    fn each_kind_of_near_miss_and_its_score() {
        for (read, listed, want, why) in [
            ("12345-ب-6", "12345-ب-6", Some(1.0), "exact"),
            ("12345-?-6", "12345-ب-6", Some(UNREAD_LETTER), "letter unread, listed ب"),
            ("12345-ب-6", "12345-?-6", Some(UNREAD_LETTER), "listed without its letter"),
            ("12346-ب-6", "12345-ب-6", Some(SERIAL_EDIT), "serial 12346 read, 12345 listed"),
            ("1234-ب-6", "12345-ب-6", Some(SERIAL_EDIT), "one edit"),
            ("123456-M", "12345-M", Some(SERIAL_EDIT), "one edit"),
            ("12345-?-6", "12346-ب-6", Some(UNREAD_LETTER * SERIAL_EDIT), "letter unread"),
            ("1234-56-7", "1235-56-7", Some(SERIAL_EDIT), "one edit"),
            ("12-CD-345", "12-CD-345", Some(1.0), "exact"),
            // Not matches: another letter, another region, two edits, another kind.
            ("12345-د-6", "12345-ب-6", None, ""),
            ("12345-ب-7", "12345-ب-6", None, ""),
            ("12354-ب-6", "12345-ب-6", None, ""),
            ("1234-56-7", "1234-57-7", None, ""),
            ("12-CD-346", "12-CD-345", None, ""),
            ("12345-M", "12345-ب-6", None, ""),
        ] {
            let got = score(&p(read), &p(listed));
            assert_eq!(got.as_ref().map(|g| g.0), want, "{read} vs {listed}");
            if let Some((_, w)) = got {
                assert!(w.contains(why), "{read} vs {listed}: {w}");
            }
        }
    }

    #[test]
    fn ocr_confusions_are_undone_and_said() {
        for (raw, plate, undone) in [
            ("I2345-B-6", "12345-ب-6", "I→1"),
            ("12O45 | ب | 6", "12045-ب-6", "O→0"),
            ("1234B-ب-6", "12348-ب-6", "B→8"),
            ("12345-8-6", "12345-ب-6", "8→B"),
            ("12345 0 6", "12345-و-6", "0→O"),
        ] {
            let (got, fix) = reading(raw, None).unwrap_or_else(|| panic!("{raw}"));
            assert_eq!(got.to_string(), plate, "{raw}");
            assert!(fix.as_deref().is_some_and(|f| f.contains(undone)), "{raw}: {fix:?}");
        }
        // A plate that reads as it is needs nothing undone; a lone B stays the letter.
        assert_eq!(reading("12345-B-6", None), Some((p("12345-ب-6"), None)));
        assert_eq!(reading("hello", None), None);
    }

    fn current() -> impl Strategy<Value = Plate> {
        (1u32..100_000, prop::sample::select(vec!['أ', 'ب', 'د', '?']), 1u8..90)
            .prop_map(|(serial, letter, region)| Plate::Current { serial, letter, region })
    }

    fn near(pl: Plate) -> impl Strategy<Value = Plate> {
        let Plate::Current { serial, letter, region } = pl else { unreachable!() };
        (0usize..6, 0u8..10, any::<bool>()).prop_map(move |(at, d, lose_letter)| {
            let mut s: Vec<u8> = serial.to_string().into_bytes();
            let at = at.min(s.len());
            match d % 3 {
                0 if at < s.len() => s[at] = b'0' + d,
                1 if s.len() < 5 => s.insert(at, b'0' + d),
                _ if s.len() > 1 && at < s.len() => {
                    s.remove(at);
                }
                _ => {}
            }
            let serial = std::str::from_utf8(&s).unwrap().parse::<u32>().unwrap_or(serial).max(1);
            Plate::Current { serial, letter: if lose_letter { UNKNOWN_LETTER } else { letter }, region }
        })
    }

    proptest! {
        /// Blocking never loses a match: every pair `score` accepts shares a key, and it is
        /// emitted on exactly one (the first shared).
        #[test]
        fn every_match_shares_a_key((a, b) in current().prop_flat_map(|a| (Just(a), near(a)))) {
            if score(&b, &a).is_some() {
                let (ka, kb) = (keys(&a), keys(&b));
                prop_assert!(first_shared_key(&kb, &ka).is_some(), "{a} {b}");
                prop_assert_eq!(first_shared_key(&kb, &ka), first_shared_key(&ka, &kb));
            }
        }

        /// Scores are in (0, 1]; 1 only for the same plate; symmetric in the serial edit.
        #[test]
        fn scores_are_bounded(a in current(), b in current()) {
            if let Some((s, _)) = score(&a, &b) {
                prop_assert!(s > 0.0 && s <= 1.0);
                prop_assert_eq!(s == 1.0, a == b);
                prop_assert_eq!(score(&b, &a).map(|x| x.0), Some(s));
            }
        }

        /// Packing is lossless for every plate a reading can give.
        #[test]
        fn packed_plates_unpack_to_themselves(raw in "[0-9]{1,6}[ -](CD|M|[ABDHWTYJ?]|[0-9]{2})?[ -]?[0-9]{0,6}") {
            if let Ok(p) = parse(&raw) {
                prop_assert_eq!(unpack(pack(&p)), Some(p));
                // The watchlist join keeps a flag there.
                prop_assert_eq!(pack(&p) & (3 << 60), 0);
            }
        }

        /// Fuzzing: any text is a reading or not; never a panic.
        #[test]
        fn any_text_reads_or_not(raw in "[0-9OIlBب?| \\-]{0,16}") {
            let _ = reading(&raw, None);
        }
    }
}

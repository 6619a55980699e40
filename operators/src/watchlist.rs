//! The watchlist join: plate reads matched against a watchlist held as a differential collection.
//!
//! The watchlist is a reference table that changes at runtime (`watchlist` rows added or
//! removed through the ingest side). Each plate read enters differential as a temporal row:
//! inserted at its event time and retracted the lookback later, or at once when it is erased
//! ([`LiveForUnless`], which holds the retraction until its time), so the join keeps no read
//! longer than that. An entry added while the city runs therefore matches the reads of the
//! lookback before it (retroactive hits) and every later one.
//! Hits are released by [`Finalize`] once their time is complete, as `watchlist` alerts.
//!
//! Privacy by design: every entry carries its legal basis, which travels with each hit, and an
//! expiry: an entry leaves the table at `expires_at` by itself (the run retracts it then), so
//! it stops matching without anyone remembering to remove it. A hit is an *unverified* match
//! that a person must confirm before anyone acts on it (ANPR readers err on 5–35% of hits).
//!
//! Entries come from the configuration, from a CSV file ([`load_csv`]: a bad row is refused
//! with its line while the good rows load), and at run time from psql.

use arrow::array::RecordBatch;
use differential_dataflow::{AsCollection, VecCollection};
use smol_str::SmolStr;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::ToStream;
use timely::dataflow::operators::generic::Operator;
use vigil_engine::bridge::{Diff, Finalize, LiveForUnless, ToUpdates};
use vigil_engine::error::ErrorSink;
use vigil_engine::ids::Epoch;
use vigil_engine::runtime::Time;
use vigil_engine::stream::{Batch, Events, Str, StreamDef, Timestamp};
use vigil_engine::time::{Millis, parse_rfc3339};

use crate::alerts::{Alert, AlertRows, Alerts};
use crate::hits::{Candidate, HitCols, HitConfig, HitDecisions, HitRow, Hits, VerifyHits, hit_id};
use crate::plate::{PlateReadCols, PlateReads};
use crate::plate_match;

vigil_engine::stream! {
    /// Plates on the watchlist, each with its legal basis: a reference table changed at runtime.
    pub struct Watchlist {
        name: "watchlist",
        class: Reference,
        keys: [plate],
        personal: [plate],
        row: WatchRow,
        builder: WatchRows,
        reader: WatchCols,
        columns: {
            /// Canonical plate (see [`crate::plate::normalize`]).
            plate: Str,
            /// Why the plate is listed: stolen vehicle, warrant, ...
            reason: Str,
            /// The legal basis: the warrant's or the report's reference (required).
            legal_basis: Str,
            /// The authority that asked for the entry.
            authority: Str,
            /// Who added it.
            added_by: Str,
            /// From when it matches.
            valid_from: Timestamp,
            /// When it stops matching (required): the entry leaves the table then.
            expires_at: Timestamp,
        }
    }
}

vigil_engine::stream! {
    /// Plate reads erased at a person's request: they leave the watchlist join at once, so no
    /// entry added later finds them. A row lasts as long as the read could have stayed in the
    /// join.
    pub struct ErasedReads {
        name: "erased_reads",
        class: Reference,
        keys: [event_id],
        personal: [],
        row: ErasedRead,
        builder: ErasedReadRows,
        reader: ErasedReadCols,
        columns: {
            /// The read's event id (a `plate_reads` row).
            event_id: u64,
            /// When it was erased.
            erased_at: Timestamp,
            /// When the row leaves the table (the read has left the join by then).
            expires_at: Timestamp,
        }
    }
}

/// One watchlist entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEntry {
    /// Canonical plate (see [`crate::plate::normalize`]).
    pub plate: String,
    /// Why the plate is listed: stolen vehicle, warrant, ...
    pub reason: String,
    /// The legal basis: the warrant's or the report's reference.
    pub legal_basis: String,
    /// The authority that asked for the entry.
    pub authority: String,
    /// Who added it.
    pub added_by: String,
    /// From when it matches, ms since the epoch.
    pub valid_from: Millis,
    /// When it stops matching, ms since the epoch.
    pub expires_at: Millis,
}

/// Watchlist entries as rows of the `watchlist` table.
pub fn to_batch(entries: &[WatchEntry]) -> RecordBatch {
    let mut b = WatchRows::default();
    for e in entries {
        b.push(&WatchRow {
            plate: &e.plate,
            reason: &e.reason,
            legal_basis: &e.legal_basis,
            authority: &e.authority,
            added_by: &e.added_by,
            valid_from: e.valid_from,
            expires_at: e.expires_at,
        });
    }
    b.finish()
}

/// A watchlist CSV that cannot be read at all (no header, a required column missing).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {what}; fix: {fix}")]
pub struct CsvError {
    /// The file.
    pub source_name: String,
    /// What is wrong.
    pub what: String,
    /// How to make it right.
    pub fix: String,
}

/// The columns of a watchlist CSV (header row, any order; `authority`, `reason`, `added_by` and
/// `valid_from` may be left empty or out).
pub const CSV_COLUMNS: [&str; 7] =
    ["plate", "reason", "legal_basis", "authority", "added_by", "valid_from", "expires_at"];

/// Reads a watchlist CSV: the entries of its good rows, and for each refused row a message
/// naming `source_name`, its line, what is wrong and the fix. A row is refused when its plate is
/// not a plate, it has no legal basis, no expiry (RFC 3339, such as `2026-09-30T00:00:00Z`), an
/// expiry not after its start, or has expired by `now`. `valid_from` defaults to `now`,
/// `added_by` to `default_added_by`.
pub fn load_csv(
    text: &str,
    source_name: &str,
    now: Millis,
    default_added_by: &str,
) -> Result<(Vec<WatchEntry>, Vec<String>), CsvError> {
    let mut reader =
        csv::ReaderBuilder::new().flexible(true).trim(csv::Trim::All).from_reader(text.as_bytes());
    let fail =
        |what: String, fix: &str| CsvError { source_name: source_name.to_owned(), what, fix: fix.to_owned() };
    let header = reader
        .headers()
        .map_err(|e| fail(format!("no header row ({e})"), "start with a header row"))?
        .clone();
    let col = |name: &str| header.iter().position(|h| h.eq_ignore_ascii_case(name));
    if let Some(unknown) = header.iter().find(|h| !CSV_COLUMNS.iter().any(|c| c.eq_ignore_ascii_case(h))) {
        return Err(fail(
            format!("unknown column {unknown:?}"),
            &format!("use the columns {}", CSV_COLUMNS.join(", ")),
        ));
    }
    let (Some(plate_c), Some(basis_c), Some(expires_c)) =
        (col("plate"), col("legal_basis"), col("expires_at"))
    else {
        return Err(fail(
            "the header lacks plate, legal_basis or expires_at".into(),
            &format!(
                "use the columns {} (plate, legal_basis and expires_at are required)",
                CSV_COLUMNS.join(", ")
            ),
        ));
    };
    let (reason_c, authority_c, by_c, from_c) =
        (col("reason"), col("authority"), col("added_by"), col("valid_from"));
    let (mut entries, mut refused) = (Vec::new(), Vec::new());
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                refused.push(format!(
                    "{source_name}:{line}: unreadable row ({e}); fix: quote fields that hold commas"
                ));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        let at = |c: Option<usize>| c.and_then(|c| record.get(c)).unwrap_or("");
        let field = |name: &str| match name {
            "plate" => at(Some(plate_c)),
            "legal_basis" => at(Some(basis_c)),
            "expires_at" => at(Some(expires_c)),
            "reason" => at(reason_c),
            "authority" => at(authority_c),
            "added_by" => at(by_c),
            "valid_from" => at(from_c),
            _ => "",
        };
        match entry_from(field, now, default_added_by) {
            Ok(e) => entries.push(e),
            Err((what, fix)) => refused.push(format!("{source_name}:{line}: {what}; fix: {fix}")),
        }
    }
    Ok((entries, refused))
}

/// One entry from its fields by name (empty when absent), checked as a CSV row or an `INSERT`
/// is: the entry, or what is wrong and the fix.
fn entry_from<'a>(
    field: impl Fn(&str) -> &'a str,
    now: Millis,
    default_added_by: &str,
) -> Result<WatchEntry, (String, &'static str)> {
    let plate = crate::plate::normalize(field("plate"))
        .map_err(|e| (e.to_string(), "write the plate as serial-letter-region, such as 12345-ب-6"))?;
    let basis = field("legal_basis");
    if basis.is_empty() {
        return Err((
            format!("entry for {plate} without a legal basis"),
            "give the warrant's or the report's reference: law 09-08 requires one",
        ));
    }
    let Some(expires_at) = parse_rfc3339(field("expires_at")) else {
        return Err((
            format!("entry for {plate} without a valid expiry ({:?})", field("expires_at")),
            "give expires_at as RFC 3339, such as 2026-09-30T00:00:00Z: no entry is kept for ever",
        ));
    };
    let valid_from = match field("valid_from") {
        "" => now,
        t => parse_rfc3339(t).ok_or_else(|| {
            (format!("valid_from {t:?} is not a time"), "use RFC 3339, or leave it empty for now")
        })?,
    };
    if expires_at <= valid_from || expires_at <= now {
        return Err((
            format!("entry for {plate} expires at {}, before it would match", field("expires_at")),
            "give an expiry after valid_from and after now",
        ));
    }
    let added_by = match field("added_by") {
        "" => default_added_by,
        b => b,
    };
    Ok(WatchEntry {
        plate,
        reason: field("reason").to_owned(),
        legal_basis: basis.to_owned(),
        authority: field("authority").to_owned(),
        added_by: added_by.to_owned(),
        valid_from,
        expires_at,
    })
}

/// Entries analysts add from psql (`INSERT INTO watchlist (plate, reason, legal_basis,
/// authority, expires_at) VALUES …`) and remove (`DELETE FROM watchlist WHERE plate = …`): the
/// same checks as a CSV row, `added_by` the user, and the statement refused whole when a row is
/// bad.
pub static WRITES: vigil_engine::catalog::TableWrites = vigil_engine::catalog::TableWrites {
    table: "watchlist",
    key: "plate",
    canonical_key: |s| crate::plate::normalize(s).ok(),
    check: check_insert,
    delete: None,
};

fn check_insert(
    columns: &[(String, Vec<Option<String>>)],
    now: Millis,
    user: &str,
) -> Result<RecordBatch, (String, String)> {
    if let Some((unknown, _)) = columns.iter().find(|(c, _)| !CSV_COLUMNS.contains(&c.as_str())) {
        return Err((
            format!("watchlist has no column {unknown:?}"),
            format!("use {}", CSV_COLUMNS.join(", ")),
        ));
    }
    if columns.iter().any(|(c, _)| c == "added_by") {
        return Err(("added_by is the user who inserts".into(), "leave it out".into()));
    }
    let rows = columns.first().map_or(0, |(_, v)| v.len());
    let mut entries = Vec::with_capacity(rows);
    for i in 0..rows {
        let field = |name: &str| {
            columns.iter().find(|(c, _)| c == name).and_then(|(_, v)| v[i].as_deref()).unwrap_or("")
        };
        let e = entry_from(field, now, user)
            .map_err(|(what, fix)| (format!("row {}: {what}", i + 1), fix.to_string()))?;
        entries.push(e);
    }
    Ok(to_batch(&entries))
}

/// A read in the join: (camera, event time, raw text, the plate it was taken as
/// ([`plate_match::pack`]), whether OCR confusions were undone to take it so). Held per read
/// for the lookback, so kept small: the raw text inline (a plate's fits), and what was undone
/// said again from the raw text when the read hits.
type ReadRec = (u32, i64, SmolStr, u64, bool);

/// Set in a read's packed plate in its blocking keys when OCR confusions were undone to take it
/// ([`plate_match::pack`] leaves bits 60 and 61 clear): a read has about six keys, so its flag
/// is not a field of its own there.
const UNDONE: u64 = 1 << 61;

/// An entry's details: (legal basis, reason, authority), as each of its hits keeps them.
type EntryRec = (SmolStr, SmolStr, SmolStr);

/// An entry in the join: its packed plate, and its plate as written with its details.
type EntryRow = (u64, (SmolStr, EntryRec));

/// What the watchlist join produces.
pub struct WatchlistOut<'scope> {
    /// Every change in each hit's life (see [`crate::hits`]).
    pub hits: Events<'scope, Hits>,
    /// An alert when a hit appears (unverified) and when it becomes actionable.
    pub alerts: Events<'scope, Alerts>,
}

/// Extension trait: the watchlist join.
pub trait WatchlistJoin<'scope> {
    /// The hits of the plate reads against the watchlist, exact and fuzzy (see
    /// [`crate::plate_match`]), verified by the decisions of `hit_decisions`. Each read stays
    /// in the join for `config.lookback_ms`: an entry added finds the reads of that period
    /// (retroactive hits) and every later one; an entry removed or expired retracts its
    /// unconfirmed hits; a read in `erased` leaves the join then. Batches that cannot be read
    /// go to `errors`.
    ///
    /// ```
    /// use vigil_engine::error::ErrorSink;
    /// use vigil_engine::graph::Graph;
    /// use vigil_engine::ids::Epoch;
    /// use vigil_engine::stream::StreamDef;
    /// use vigil_operators::hits::{HitConfig, HitDecisions, Hits};
    /// use vigil_operators::plate::PlateReads;
    /// use vigil_operators::watchlist::{Watchlist, WatchlistJoin};
    ///
    /// timely::example(|scope| {
    ///     let input = timely::dataflow::operators::generic::operator::empty(scope);
    ///     let infos = [PlateReads::info(), Watchlist::info(), HitDecisions::info()];
    ///     let mut graph = Graph::split(scope, 0, input, &infos);
    ///     let reads = graph.get::<PlateReads>().unwrap();
    ///     let (watchlist, decisions) = (graph.get::<Watchlist>().unwrap(), graph.get::<HitDecisions>().unwrap());
    ///     let out = reads.watchlist_hits(watchlist, decisions, None, HitConfig::default(), Epoch::default(), &ErrorSink::log());
    ///     assert_eq!(out.hits.info().name, Hits::NAME);
    /// });
    /// ```
    fn watchlist_hits(
        self,
        watchlist: Events<'scope, Watchlist>,
        decisions: Events<'scope, HitDecisions>,
        erased: Option<Events<'scope, ErasedReads>>,
        config: HitConfig,
        epoch: Epoch,
        errors: &ErrorSink,
    ) -> WatchlistOut<'scope>;
}

impl<'scope> WatchlistJoin<'scope> for Events<'scope, PlateReads> {
    fn watchlist_hits(
        self,
        watchlist: Events<'scope, Watchlist>,
        decisions: Events<'scope, HitDecisions>,
        erased: Option<Events<'scope, ErasedReads>>,
        config: HitConfig,
        epoch: Epoch,
        errors: &ErrorSink,
    ) -> WatchlistOut<'scope> {
        let (e1, e2, e3) = (errors.clone(), errors.clone(), errors.clone());
        let lookback = config.lookback_ms.max(1) as Time;
        let stream = self.into_inner();
        // The reads a previous run kept, at their own times (before any live batch's), once.
        let mut restored = Vec::new();
        if stream.scope().index() == 0 {
            for batch in config.restore_reads.iter() {
                if let Err(e) = read_updates(batch, &mut restored) {
                    errors.report("PlateReads (restored)", e);
                }
            }
        }
        let scope = stream.scope();
        let restored = restored.to_stream(scope).as_collection();
        // Erased reads leave the join when they are erased.
        let erased_ids: VecCollection<'scope, Time, u64, Diff> = match erased {
            Some(erased) => {
                let e4 = errors.clone();
                erased.into_inner().updates("ErasedReads", move |batch, t, out| {
                    match ErasedReadCols::new(&batch.rows) {
                        Ok(cols) => out.extend(cols.rows().map(|r| (r.event_id, t, batch.diff as Diff))),
                        Err(e) => e4.report("ErasedReads", e),
                    }
                })
            }
            None => timely::dataflow::operators::generic::operator::empty(scope).as_collection(),
        };
        // In the join for the lookback (entries added meanwhile find it), or until erased: the
        // reads are held once, by `live_for_unless`, and arranged once, by event id, below.
        let reads: VecCollection<'scope, Time, (u64, ReadRec), Diff> = stream
            .updates("PlateReads", move |batch, _t, out| {
                if let Err(e) = read_updates(&batch.rows, out) {
                    e1.report("PlateReads", e);
                }
            })
            .concat(restored)
            .live_for_unless("PlateReadsLookback", lookback, erased_ids);
        let entries: VecCollection<'scope, Time, EntryRow, Diff> =
            watchlist.into_inner().updates("WatchlistRows", move |batch, t, out| {
                if let Err(e) = entry_updates(batch, t, out) {
                    e2.report("WatchlistRows", e);
                }
            });
        // Plates meet on blocking keys: (key, (event id, packed plate with `UNDONE`)) and (key,
        // packed listed plate), each listed plate once however many entries list it.
        let read_keys = reads.clone().flat_map(|(id, (_, _, _, plate, fixed))| {
            let keys = plate_match::unpack(plate).map(|p| plate_match::keys(&p)).unwrap_or_default();
            let tagged = if fixed { plate | UNDONE } else { plate };
            keys.into_iter().map(move |k| (k, (id, tagged)))
        });
        let listed = entries.clone().map(|(plate, _)| plate).distinct();
        let entry_keys = listed.flat_map(|plate: u64| {
            let keys = plate_match::unpack(plate).map(|p| plate_match::keys(&p)).unwrap_or_default();
            keys.into_iter().map(move |k| (k, plate))
        });
        let min_score = config.min_score;
        let pairs = read_keys.arrange_by_key().join_core(
            entry_keys.arrange_by_key(),
            move |k, (id, tagged), listed| {
                let (plate, fixed) = (tagged & !UNDONE, tagged & UNDONE != 0);
                let (r, l) = (plate_match::unpack(plate)?, plate_match::unpack(*listed)?);
                let (score, _) = plate_match::score(&r, &l)?;
                let score = if fixed { score * plate_match::CONFUSION } else { score };
                // A pair sharing several keys is emitted on the first only.
                let first = plate_match::first_shared_key(&plate_match::keys(&r), &plate_match::keys(&l));
                (score >= min_score && first == Some(*k)).then_some((*id, *listed))
            },
        );
        let candidates = pairs
            .join_map(reads, |id, listed, read| (*listed, (*id, read.clone())))
            .join_map(
                entries,
                |_, (id, (camera, time, raw, plate, fixed)), (listed, (basis, reason, authority))| {
                    let (r, l) = (plate_match::unpack(*plate), crate::plate::parse(listed).ok());
                    let (mut score, mut why) = r
                        .zip(l)
                        .and_then(|(r, l)| plate_match::score(&r, &l))
                        .unwrap_or((0.0, String::new()));
                    if *fixed {
                        score *= plate_match::CONFUSION;
                        // As the read was taken: its canonical plate, if any, did not parse.
                        let fix =
                            plate_match::reading(raw, None).and_then(|(_, fix)| fix).unwrap_or_default();
                        why = format!("{why}; {fix}");
                    }
                    Candidate {
                        hit_id: hit_id(*id, listed, basis),
                        camera_id: *camera,
                        read_time: *time,
                        event_id: *id,
                        plate_raw: raw.clone(),
                        plate: r.map(|r| SmolStr::new(r.to_string())).unwrap_or_default(),
                        listed_plate: listed.clone(),
                        score_permille: (score * 1000.0).round() as u16,
                        why: why.into(),
                        legal_basis: basis.clone(),
                        reason: reason.clone(),
                        authority: authority.clone(),
                    }
                },
            )
            .finalize("WatchlistMatches");
        let decisions = decisions
            .into_inner()
            .updates("HitDecisions", move |batch, t, out| {
                if let Err(e) = crate::hits::decision_updates(batch, t, out) {
                    e3.report("HitDecisions", e);
                }
            })
            .finalize("HitDecisionsDue");
        let hits = candidates.verify_hits(decisions, config);
        let alerts = hits
            .clone()
            .into_inner()
            .unary::<timely::container::CapacityContainerBuilder<Vec<Batch>>, _, _, _>(
                Pipeline,
                "HitAlerts",
                move |_cap, _info| {
                    move |input, output| {
                        input.for_each(|cap, data| {
                            let mut alerts = AlertRows::default();
                            for batch in data.iter() {
                                let Ok(cols) = HitCols::new(&batch.rows) else { continue };
                                for h in cols.rows() {
                                    let Some(alert) = hit_alert(&h, epoch) else { continue };
                                    alerts.push(&alert.row());
                                }
                            }
                            if !alerts.is_empty() {
                                output.session(&cap).give(Batch::new(alerts.finish()));
                            }
                        });
                    }
                },
            );
        WatchlistOut { hits, alerts: Events::new(alerts) }
    }
}

/// The alert of a hit's change: when it appears and when it becomes actionable.
fn hit_alert(h: &HitRow<'_>, epoch: Epoch) -> Option<Alert> {
    let head = format!(
        "plate {} (read {:?}, score {:.2}: {}) is on the watchlist; hit {}; legal basis: {}",
        h.listed_plate, h.plate_raw, h.score, h.why, h.hit_id, h.legal_basis
    );
    let (severity, message) = match h.status {
        "candidate" => ("high", format!("{head}; UNVERIFIED: people must confirm it before anyone acts")),
        "confirmed" => ("high", format!("{head}; CONFIRMED by {} people: actionable", h.confirmations)),
        _ => return None,
    };
    let trigger = u64::from_str_radix(h.hit_id, 16).unwrap_or_default();
    Some(Alert::new(
        epoch,
        "watchlist",
        Watchlist::NAME,
        severity,
        h.camera_id,
        h.event_time,
        trigger,
        message,
        0,
    ))
}

fn read_updates(
    batch: &RecordBatch,
    out: &mut Vec<((u64, ReadRec), Time, Diff)>,
) -> vigil_engine::Result<()> {
    let cols = PlateReadCols::new(batch)?;
    for r in cols.rows() {
        // A read that is not a plate, even with OCR confusions undone, cannot match.
        let Some((plate, fix)) = plate_match::reading(r.plate_raw, r.plate) else { continue };
        let t = r.event_time.max(0) as Time;
        let plate = plate_match::pack(&plate);
        let rec = (r.camera_id, r.event_time, SmolStr::new(r.plate_raw), plate, fix.is_some());
        out.push(((r.event_id, rec), t, 1));
    }
    Ok(())
}

fn entry_updates(batch: &Batch, t: Time, out: &mut Vec<(EntryRow, Time, Diff)>) -> vigil_engine::Result<()> {
    let cols = WatchCols::new(&batch.rows)?;
    for r in cols.rows() {
        // Entries are canonical (checked on the way in); one that is not cannot match.
        let Ok(plate) = crate::plate::parse(r.plate) else { continue };
        let rec = (r.legal_basis.into(), r.reason.into(), r.authority.into());
        out.push(((plate_match::pack(&plate), (r.plate.into(), rec)), t, batch.diff as Diff));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: Millis = 1_781_467_200_000; // 2026-06-14T20:00:00Z

    #[test]
    fn good_rows_load_and_each_bad_row_is_refused_with_its_line() {
        let text = "plate,reason,legal_basis,authority,added_by,valid_from,expires_at\n\
            12345-B-6,stolen vehicle,DGSN-2026-00118,DGSN Rabat,analyst1,,2026-09-14T00:00:00Z\n\
            4821-د-33,warrant,,TPI Agadir,analyst1,,2026-09-14T00:00:00Z\n\
            77-A-1,warrant,TPI-2026/77,TPI Agadir,,2026-06-15T00:00:00Z,2026-07-15T00:00:00Z\n\
            9-A-9,stolen vehicle,DGSN-1,DGSN,analyst2,,\n\
            not a plate,stolen vehicle,DGSN-2,DGSN,analyst2,,2026-09-14T00:00:00Z\n\
            1-B-1,stolen vehicle,DGSN-3,DGSN,analyst2,,2026-06-01T00:00:00Z\n";
        let (entries, refused) = load_csv(text, "wl.csv", NOW, "csv").unwrap();
        let plates: Vec<&str> = entries.iter().map(|e| e.plate.as_str()).collect();
        assert_eq!(plates, ["12345-ب-6", "77-أ-1"]);
        assert_eq!(entries[0].valid_from, NOW, "valid_from defaults to now");
        assert_eq!(entries[1].added_by, "csv", "added_by defaults to the loader");
        assert_eq!(entries[1].valid_from, parse_rfc3339("2026-06-15T00:00:00Z").unwrap());
        assert_eq!(refused.len(), 4, "{refused:#?}");
        for (line, what) in [
            (3, "without a legal basis"),
            (5, "without a valid expiry"),
            (6, "not a Moroccan plate"),
            (7, "before it would match"),
        ] {
            assert!(
                refused.iter().any(|r| r.starts_with(&format!("wl.csv:{line}: "))
                    && r.contains(what)
                    && r.contains("fix:")),
                "line {line}: {refused:#?}"
            );
        }
    }

    #[test]
    fn a_file_without_the_required_columns_is_refused_whole() {
        let e = load_csv("plate,reason\n12345-B-6,x\n", "wl.csv", NOW, "csv").unwrap_err();
        assert!(e.to_string().contains("lacks plate, legal_basis or expires_at"), "{e}");
        let e = load_csv("plate,legal_basis,expires_at,colour\n", "wl.csv", NOW, "csv").unwrap_err();
        assert!(e.to_string().contains("unknown column \"colour\""), "{e}");
    }

    proptest! {
        /// Fuzzing: any text is a file that loads (some rows, some refusals) or is refused
        /// whole; never a panic, and every entry has a legal basis and an expiry after now.
        #[test]
        fn any_text_loads_or_is_refused(body in "[0-9A-Za-zب,\"\\- :\\n]{0,200}") {
            let text = format!("plate,legal_basis,expires_at\n{body}");
            if let Ok((entries, _)) = load_csv(&text, "f.csv", NOW, "csv") {
                for e in entries {
                    prop_assert!(!e.legal_basis.is_empty() && e.expires_at > NOW);
                }
            }
        }
    }

    /// The join on two workers, reads and erasures sent to different ones: an entry added
    /// finds the reads of its lookback, exactly and through an OCR confusion (said, and scored
    /// lower), and not a read erased before it.
    #[test]
    fn an_entry_added_finds_its_reads_through_confusions_but_not_an_erased_one() {
        use std::sync::{Arc, Mutex};
        use timely::dataflow::operators::Inspect;
        use timely::dataflow::operators::probe::{Handle, Probe};
        use vigil_engine::runtime::{Input, Runtime, RuntimeConfig};

        use crate::hits::{HitCols, HitDecisions};
        use crate::plate::{PlateRead, PlateReadRows, PlateReads};

        let seen: Arc<Mutex<Vec<(u64, f32, String)>>> = Arc::default();
        let out = Arc::clone(&seen);
        let inputs = vec![PlateReads::info(), Watchlist::info(), HitDecisions::info(), ErasedReads::info()];
        let mut rt = Runtime::start(RuntimeConfig::new(2, inputs), 0, move |graph| {
            let probe = Handle::new();
            let (reads, list) = (graph.get::<PlateReads>().unwrap(), graph.get::<Watchlist>().unwrap());
            let (decisions, erased) = (graph.get::<HitDecisions>().unwrap(), graph.get::<ErasedReads>());
            let config = HitConfig { lookback_ms: 60_000, ..HitConfig::default() };
            let hits = reads
                .watchlist_hits(list, decisions, erased, config, Epoch::default(), &ErrorSink::log())
                .hits;
            let out = Arc::clone(&out);
            hits.into_inner()
                .inspect(move |b: &Batch| {
                    for h in HitCols::new(&b.rows).unwrap().rows().filter(|h| h.status == "candidate") {
                        out.lock().unwrap().push((h.event_id, h.score, h.why.to_owned()));
                    }
                })
                .probe_with(&probe);
            probe
        })
        .unwrap();
        // Read exactly (1), with an I for a 1 (2), exactly again (3, to be erased), and another plate (4).
        let mut b = PlateReadRows::default();
        for (event_id, raw) in [(1, "4821-د-33"), (2, "482I-د-33"), (3, "4821-د-33"), (4, "1234-ب-6")] {
            let plate = crate::plate::normalize(raw).ok();
            b.push(&PlateRead::text(7, 1_000, event_id, raw, plate.as_deref(), 0.9));
        }
        rt.send(0, 1_000, Input { stream: PlateReads::info(), batch: Batch::new(b.finish()) }).unwrap();
        rt.advance(2_000).unwrap();
        let mut erase = ErasedReadRows::default();
        erase.push(&ErasedRead { event_id: 3, erased_at: 2_000, expires_at: 70_000 });
        rt.send(1, 2_000, Input { stream: ErasedReads::info(), batch: Batch::new(erase.finish()) }).unwrap();
        rt.advance(3_000).unwrap();
        let entry = WatchEntry {
            plate: "4821-د-33".into(),
            reason: "stolen vehicle".into(),
            legal_basis: "DGSN-2026-00001".into(),
            authority: "DGSN".into(),
            added_by: "test".into(),
            valid_from: 0,
            expires_at: 1_000_000,
        };
        rt.send(0, 3_000, Input { stream: Watchlist::info(), batch: Batch::new(to_batch(&[entry])) })
            .unwrap();
        rt.advance(4_000).unwrap();
        rt.finish().unwrap();
        let mut hits = seen.lock().unwrap().clone();
        hits.sort_by_key(|h| h.0);
        let ids: Vec<u64> = hits.iter().map(|h| h.0).collect();
        assert_eq!(ids, [1, 2], "{hits:?}");
        assert!(!hits[0].2.contains("read "), "{hits:?}");
        assert!(hits[1].2.contains("read \"482I-د-33\" as 4821-د-33"), "{hits:?}");
        assert!((hits[1].1 - hits[0].1 * plate_match::CONFUSION).abs() < 1e-6, "{hits:?}");
    }
}

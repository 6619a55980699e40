//! Watchlist hits people verify: the `hits` stream, the `hit_decisions` table and the book that keeps each hit's state.
//!
//! A hit is a plate read matched to a watchlist entry (see [`crate::watchlist`]). It starts as
//! a *candidate*. Published ANPR hit error rates run from 5 to 35%, so no one acts on a
//! candidate: it becomes *confirmed*, and actionable, only when [`HitConfig::confirmations`]
//! distinct people have confirmed it (two by default), or *rejected* when one person rejects
//! it with a reason. A candidate whose watchlist entry is removed, or expires, is *retracted*;
//! a confirmed or rejected hit is kept as the record of a decision. Every change is a row of
//! `hits`: a candidate, each confirmation, the confirmation that makes it actionable, a
//! rejection, a retraction, and a decision that could not apply (with why).
//!
//! People decide through psql: `INSERT INTO hit_decisions (hit_id, decision, reason) VALUES
//! ('…', 'confirm', '')`. The user is the session's (no one confirms in another's name), a
//! rejection needs its reason, and a decision cannot be deleted: the table is the conduit and
//! `hits` the record. The book keeps a hit for [`HitConfig::keep_ms`] after it appeared (the
//! hits' retention), whatever becomes of the read it came from.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use arrow::array::RecordBatch;
use smol_str::SmolStr;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::operator::Operator;
use vigil_engine::bridge::Diff;
use vigil_engine::runtime::Time;
use vigil_engine::stream::{Batch, Events, Str, Timestamp};
use vigil_engine::time::Millis;

vigil_engine::stream! {
    /// A change in a watchlist hit's life: it appeared (`candidate`), a person confirmed it
    /// (`confirmation`, then `confirmed` when enough distinct people have: actionable), a
    /// person rejected it (`rejected`), its entry or its read went (`retracted`: the hit id
    /// only), or a decision could not apply (`ignored`, with why).
    pub struct Hits {
        name: "hits",
        class: Personal,
        // The verification queue: a candidate stays in psql and the HTTP queue until decided.
        memory: Period,
        keys: [hit_id, event_time, status],
        personal: [plate_raw, plate, listed_plate],
        row: HitRow,
        builder: HitRows,
        reader: HitCols,
        columns: {
            /// The hit (16 hex digits): the same in every row about it.
            hit_id: Str,
            /// When this change happened: the read (a live hit), the entry's arrival (a
            /// retroactive one), or the decision.
            event_time: Timestamp,
            /// `candidate`, `confirmation`, `confirmed`, `rejected`, `retracted` or `ignored`.
            status: Str,
            /// True once confirmed by enough distinct people: only then may anyone act on it.
            actionable: bool,
            /// Who made this change (`system` for candidates and retractions).
            decided_by: Str,
            /// Distinct people who have confirmed it so far.
            confirmations: u32,
            /// A rejection's reason, or why a decision was ignored.
            note: Str,
            /// The camera that read the plate.
            camera_id: u32,
            /// When the plate was read.
            read_time: Timestamp,
            /// The read's event id (a `plate_reads` row).
            event_id: u64,
            /// The text as the OCR read it.
            plate_raw: Str,
            /// The plate the read was taken as.
            plate: Str,
            /// The watchlist entry's plate.
            listed_plate: Str,
            /// How well they match, in (0, 1].
            score: f32,
            /// Why they match (`exact`, `letter unread, listed ب`, ...).
            why: Str,
            /// The entry's legal basis.
            legal_basis: Str,
            /// The entry's reason (stolen vehicle, warrant, ...).
            reason: Str,
            /// The authority that asked for the entry.
            authority: Str,
        }
    }
}

vigil_engine::stream! {
    /// A person's decision on a hit, as inserted from psql; `hits` records what it did.
    pub struct HitDecisions {
        name: "hit_decisions",
        class: Reference,
        keys: [hit_id, decided_by, decided_at],
        personal: [],
        row: DecisionRow,
        builder: DecisionRows,
        reader: DecisionCols,
        columns: {
            /// The hit (as in `hits`).
            hit_id: Str,
            /// `confirm` or `reject`.
            decision: Str,
            /// Why (required to reject).
            reason: Str,
            /// The psql user who decided.
            decided_by: Str,
            /// When.
            decided_at: Timestamp,
            /// When the row leaves the table (the decision stays in `hits`).
            expires_at: Timestamp,
        }
    }
}

/// The decisions of `decisions` (rows of `hit_decisions`, journaled before psql was told they
/// were taken, in the order they were) that the `hits` rows written so far do not show: each
/// decision a person made on a hit is one row of that hit decided by them (a confirmation, a
/// rejection, or one ignored), so of their n decisions on it the first m shown are done. A restart
/// applies the rest again, and only those: a run killed in the seconds before its `hits` were
/// committed loses no acknowledged decision, and none is made twice. A decision on a hit `hits`
/// no longer holds (retention took it; the journal keeps decisions longer) is not applied again
/// unless it is newer than every row there, as one on a hit not yet written would be: otherwise
/// each restart would record it as ignored.
pub fn undone(
    decisions: &RecordBatch,
    hits: &[RecordBatch],
) -> Result<RecordBatch, vigil_engine::EngineError> {
    let mut shown: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let (mut known, mut newest) = (BTreeSet::new(), Millis::MIN);
    let cols = hits.iter().map(HitCols::new).collect::<Result<Vec<_>, _>>()?;
    for r in cols.iter().flat_map(|c| c.rows()) {
        known.insert(r.hit_id);
        newest = newest.max(r.event_time);
        if !matches!(r.status, "candidate" | "retracted") {
            *shown.entry((r.hit_id, r.decided_by)).or_default() += 1;
        }
    }
    // Decision ids are canonical (lower-case hex) as `check_decisions` stored them.
    let keep: arrow::array::BooleanArray = DecisionCols::new(decisions)?
        .rows()
        .map(|d| match shown.get_mut(&(d.hit_id, d.decided_by)) {
            Some(n) if *n > 0 => {
                *n -= 1;
                Some(false)
            }
            _ => Some(known.contains(d.hit_id) || d.decided_at > newest),
        })
        .collect();
    arrow::compute::filter_record_batch(decisions, &keep).map_err(|source| vigil_engine::EngineError::Arrow {
        context: "decisions not yet in hits".into(),
        source,
    })
}

/// How long a decision row stays in `hit_decisions` (the longest any hit may be kept).
pub const DECISION_ROW_MS: Millis = 90 * 86_400_000;

/// `INSERT INTO hit_decisions (hit_id, decision, reason) VALUES …`: the user decides, now;
/// decisions are final (no `DELETE`).
pub static WRITES: vigil_engine::catalog::TableWrites = vigil_engine::catalog::TableWrites {
    table: "hit_decisions",
    key: "hit_id",
    canonical_key: |s| Some(s.trim().to_ascii_lowercase()),
    check: check_decisions,
    delete: Some(("decisions are final", "record what changed as a new decision; hits keeps every decision")),
};

fn check_decisions(
    columns: &vigil_engine::catalog::TextColumns,
    now: Millis,
    user: &str,
) -> Result<RecordBatch, (String, String)> {
    const COLUMNS: [&str; 3] = ["hit_id", "decision", "reason"];
    if let Some((c, _)) = columns.iter().find(|(c, _)| !COLUMNS.contains(&c.as_str())) {
        return Err((
            format!("hit_decisions takes no column {c:?} (the user and the time are the session's)"),
            "give hit_id, decision and reason".into(),
        ));
    }
    let rows = columns.first().map_or(0, |(_, v)| v.len());
    let mut b = DecisionRows::default();
    for i in 0..rows {
        let field = |name: &str| {
            columns.iter().find(|(c, _)| c == name).and_then(|(_, v)| v[i].as_deref()).unwrap_or("").trim()
        };
        let id = field("hit_id").to_ascii_lowercase();
        if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err((
                format!("row {}: {:?} is not a hit id", i + 1, field("hit_id")),
                "copy the 16 hex digits of hits.hit_id".into(),
            ));
        }
        let decision = field("decision").to_ascii_lowercase();
        if decision != "confirm" && decision != "reject" {
            return Err((
                format!("row {}: decision {:?}", i + 1, field("decision")),
                "write 'confirm' or 'reject'".into(),
            ));
        }
        if decision == "reject" && field("reason").is_empty() {
            return Err((
                format!("row {}: a rejection without its reason", i + 1),
                "say why the hit is wrong".into(),
            ));
        }
        b.push(&DecisionRow {
            hit_id: &id,
            decision: &decision,
            reason: field("reason"),
            decided_by: user,
            decided_at: now,
            expires_at: now + DECISION_ROW_MS,
        });
    }
    Ok(b.finish())
}

/// How hits are verified and kept.
#[derive(Clone, Debug)]
pub struct HitConfig {
    /// Distinct people who must confirm a hit before it is actionable.
    pub confirmations: u32,
    /// How long the book keeps a hit after it appeared, ms (the hits' retention).
    pub keep_ms: Millis,
    /// Reads this old are retracted from the join: such a retraction is the read ageing out,
    /// not the entry going, and leaves the hit as it is.
    pub lookback_ms: Millis,
    /// The lowest score that makes a hit (0.75 by default: exact reads, OCR confusions undone
    /// and an unread letter; one serial edit, 0.7, only when lowered: see the README).
    pub min_score: f32,
    /// Hits a previous run left undecided or decided, from its `hits` rows ([`restore`]): the
    /// book starts with them, so a restart loses no candidate and no confirmation.
    pub restore: std::sync::Arc<[RestoredHit]>,
    /// Plate reads a previous run kept (`plate_reads` rows within the lookback): the join starts
    /// with them, so an entry added after a restart still finds the reads of the last hours.
    pub restore_reads: std::sync::Arc<[RecordBatch]>,
}

impl Default for HitConfig {
    fn default() -> Self {
        Self {
            confirmations: 2,
            keep_ms: 30 * 86_400_000,
            lookback_ms: 86_400_000,
            min_score: 0.75,
            restore: std::sync::Arc::new([]),
            restore_reads: std::sync::Arc::new([]),
        }
    }
}

/// A hit as a previous run left it.
#[derive(Clone, Debug, PartialEq)]
pub struct RestoredHit {
    /// The match.
    pub candidate: Candidate,
    /// `candidate`, `confirmed`, `rejected` or `retracted`.
    pub status: String,
    /// Who has confirmed it.
    pub confirmed_by: Vec<String>,
    /// When it appeared, ms.
    pub since: Millis,
}

/// The state of each hit from `hits` rows (any order): its candidate row, then each decision
/// in time order. Rows without a candidate (its partition past retention) are left out.
pub fn restore(batches: &[RecordBatch]) -> Vec<RestoredHit> {
    let mut rows: Vec<(i64, String, String, String, Candidate)> = Vec::new();
    for b in batches {
        let Ok(cols) = HitCols::new(b) else { continue };
        for r in cols.rows() {
            let Ok(id) = u64::from_str_radix(r.hit_id, 16) else { continue };
            let c = Candidate {
                hit_id: id,
                camera_id: r.camera_id,
                read_time: r.read_time,
                event_id: r.event_id,
                plate_raw: r.plate_raw.into(),
                plate: r.plate.into(),
                listed_plate: r.listed_plate.into(),
                score_permille: (r.score * 1000.0).round() as u16,
                why: r.why.into(),
                legal_basis: r.legal_basis.into(),
                reason: r.reason.into(),
                authority: r.authority.into(),
            };
            rows.push((r.event_time, r.status.to_owned(), r.decided_by.to_owned(), r.hit_id.to_owned(), c));
        }
    }
    // In time order; at one time, the candidate first (as the book wrote them).
    rows.sort_by_key(|r| (r.0, r.1 != "candidate"));
    let mut hits: std::collections::BTreeMap<u64, RestoredHit> = std::collections::BTreeMap::new();
    for (t, status, by, _, c) in rows {
        let id = c.hit_id;
        match (status.as_str(), hits.get_mut(&id)) {
            ("candidate", None) => {
                hits.insert(id, RestoredHit { candidate: c, status, confirmed_by: Vec::new(), since: t });
            }
            ("candidate", Some(h)) => h.status = status,
            ("confirmation" | "confirmed", Some(h)) => {
                h.confirmed_by.push(by);
                h.status = if status == "confirmed" { status } else { "candidate".into() };
            }
            ("rejected" | "retracted", Some(h)) => h.status = status,
            _ => {}
        }
    }
    hits.into_values().collect()
}

/// A match of a read and an entry, as the join produces it (and retracts it). Kept for the
/// hit's period (30 days by default) in the book, so its texts are inline (`SmolStr`: up to 23
/// bytes, where a plate, a legal basis or an authority fits) or shared with the entry's.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Candidate {
    /// See [`hit_id`].
    pub hit_id: u64,
    /// The camera.
    pub camera_id: u32,
    /// When the plate was read.
    pub read_time: Millis,
    /// The read's event id.
    pub event_id: u64,
    /// The OCR's text.
    pub plate_raw: SmolStr,
    /// The plate the read was taken as.
    pub plate: SmolStr,
    /// The entry's plate.
    pub listed_plate: SmolStr,
    /// Score × 1000.
    pub score_permille: u16,
    /// Why they match.
    pub why: SmolStr,
    /// The entry's legal basis.
    pub legal_basis: SmolStr,
    /// The entry's reason.
    pub reason: SmolStr,
    /// The entry's authority.
    pub authority: SmolStr,
}

/// A hit's id: a stable hash of the read and the entry (plate and legal basis).
pub fn hit_id(event_id: u64, listed_plate: &str, legal_basis: &str) -> u64 {
    crate::plate_match::fnv(&[&event_id.to_le_bytes(), listed_plate.as_bytes(), legal_basis.as_bytes()])
}

/// A decision from `hit_decisions`: (hit id, confirm?, reason, by).
pub type Decision = (u64, bool, String, String);

/// Decisions from `hit_decisions` rows added (a row leaving the table undoes nothing).
pub fn decision_updates(
    batch: &Batch,
    t: Time,
    out: &mut Vec<(Decision, Time, Diff)>,
) -> vigil_engine::Result<()> {
    if batch.diff <= 0 {
        return Ok(());
    }
    let cols = DecisionCols::new(&batch.rows)?;
    for r in cols.rows() {
        let Ok(id) = u64::from_str_radix(r.hit_id, 16) else { continue };
        out.push(((id, r.decision == "confirm", r.reason.to_owned(), r.decided_by.to_owned()), t, 1));
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Candidate,
    Confirmed,
    Rejected,
    Retracted,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Candidate => "candidate",
            Status::Confirmed => "confirmed",
            Status::Rejected => "rejected",
            Status::Retracted => "retracted",
        }
    }
}

struct Hit {
    c: Candidate,
    status: Status,
    confirmed_by: Vec<String>,
    since: Time,
}

/// The hits of one worker: each hit's state, and when each leaves.
struct Book {
    config: HitConfig,
    hits: HashMap<u64, Hit>,
    expiry: BTreeSet<(Time, u64)>,
}

impl Book {
    fn row(out: &mut HitRows, hit: &Hit, t: Time, status: &str, by: &str, note: &str) {
        // A retraction names the hit only: it may follow the erasure of the read.
        let blank = Candidate { hit_id: hit.c.hit_id, ..Candidate::default() };
        let c = if status == "retracted" { &blank } else { &hit.c };
        out.push(&HitRow {
            hit_id: &format!("{:016x}", c.hit_id),
            event_time: t as Millis,
            status,
            actionable: hit.status == Status::Confirmed,
            decided_by: by,
            confirmations: hit.confirmed_by.len() as u32,
            note,
            camera_id: c.camera_id,
            read_time: c.read_time,
            event_id: c.event_id,
            plate_raw: &c.plate_raw,
            plate: &c.plate,
            listed_plate: &c.listed_plate,
            score: f32::from(c.score_permille) / 1000.0,
            why: &c.why,
            legal_basis: &c.legal_basis,
            reason: &c.reason,
            authority: &c.authority,
        });
    }

    /// The join's change of a match at `t`.
    fn matched(&mut self, c: Candidate, t: Time, diff: Diff, out: &mut HitRows) {
        if diff > 0 {
            match self.hits.get_mut(&c.hit_id) {
                // (Not a match older than the retraction: a read a restart restored meeting
                // the entry it matched before.)
                Some(h) if h.status == Status::Retracted && t >= h.since => {
                    // The entry is back: the hit is a candidate again.
                    h.status = Status::Candidate;
                    Self::row(out, h, t, "candidate", "system", "the entry is back");
                }
                Some(_) => {}
                None => {
                    let h = Hit { c, status: Status::Candidate, confirmed_by: Vec::new(), since: t };
                    Self::row(out, &h, t, "candidate", "system", "");
                    self.expiry.insert((t + self.config.keep_ms as Time, h.c.hit_id));
                    self.hits.insert(h.c.hit_id, h);
                }
            }
            return;
        }
        let ages_out = t == (c.read_time + self.config.lookback_ms).max(0) as Time;
        let Some(h) = self.hits.get_mut(&c.hit_id) else { return };
        if ages_out || h.status != Status::Candidate || t < h.since {
            return;
        }
        h.status = Status::Retracted;
        Self::row(
            out,
            h,
            t,
            "retracted",
            "system",
            "the watchlist entry was removed or expired before anyone confirmed",
        );
    }

    /// A person's decision at `t`.
    fn decide(&mut self, (id, confirm, reason, by): Decision, t: Time, out: &mut HitRows) {
        let needed = self.config.confirmations.max(1) as usize;
        let Some(h) = self.hits.get_mut(&id) else {
            let unknown = Hit {
                c: Candidate { hit_id: id, ..Candidate::default() },
                status: Status::Retracted,
                confirmed_by: Vec::new(),
                since: t,
            };
            let note = "no such hit here (a wrong id, past its retention, or raised in the seconds before \
                        the engine was killed and not yet written); fix: copy the id from hits";
            Self::row(out, &unknown, t, "ignored", &by, note);
            return;
        };
        let ignored = match h.status {
            Status::Candidate if !confirm => {
                h.status = Status::Rejected;
                Self::row(out, h, t, "rejected", &by, &reason);
                return;
            }
            Status::Candidate if h.confirmed_by.contains(&by) => {
                format!("{by} has already confirmed; a different person must confirm")
            }
            Status::Candidate => {
                h.confirmed_by.push(by.clone());
                let done = h.confirmed_by.len() >= needed;
                if done {
                    h.status = Status::Confirmed;
                }
                let note = format!("{} of {needed}", h.confirmed_by.len());
                Self::row(out, h, t, if done { "confirmed" } else { "confirmation" }, &by, &note);
                return;
            }
            s => format!("the hit is already {}", s.name()),
        };
        Self::row(out, h, t, "ignored", &by, &ignored);
    }

    /// Takes up a hit a previous run left.
    fn restored(&mut self, r: &RestoredHit) {
        let status = match r.status.as_str() {
            "confirmed" => Status::Confirmed,
            "rejected" => Status::Rejected,
            "retracted" => Status::Retracted,
            _ => Status::Candidate,
        };
        let since = r.since.max(0) as Time;
        let id = r.candidate.hit_id;
        self.expiry.insert((since + self.config.keep_ms as Time, id));
        self.hits
            .insert(id, Hit { c: r.candidate.clone(), status, confirmed_by: r.confirmed_by.clone(), since });
    }

    /// Forgets hits past their retention at `frontier`.
    fn expire(&mut self, frontier: Time) {
        while let Some(&(t, id)) = self.expiry.first() {
            if t > frontier {
                break;
            }
            self.expiry.pop_first();
            self.hits.remove(&id);
        }
    }
}

/// Changes held until both inputs are complete at their time.
type Stash = BTreeMap<Time, (Capability<Time>, Vec<(Candidate, Diff)>, Vec<Decision>)>;

/// Extension trait: the hit book over the join's matches.
pub trait VerifyHits<'scope> {
    /// The `hits` stream: the matches (released once complete, as `finalize` does) and the
    /// people's decisions, applied in time order (a time's matches before its decisions).
    fn verify_hits(
        self,
        decisions: Stream<'scope, Time, Vec<(Decision, Time, Diff)>>,
        config: HitConfig,
    ) -> Events<'scope, Hits>;
}

impl<'scope> VerifyHits<'scope> for Stream<'scope, Time, Vec<(Candidate, Time, Diff)>> {
    fn verify_hits(
        self,
        decisions: Stream<'scope, Time, Vec<(Decision, Time, Diff)>>,
        config: HitConfig,
    ) -> Events<'scope, Hits> {
        let (index, peers) = (self.scope().index() as u64, self.scope().peers() as u64);
        let by_match = Exchange::new(|(c, _, _): &(Candidate, Time, Diff)| c.hit_id);
        let by_decision = Exchange::new(|(d, _, _): &(Decision, Time, Diff)| d.0);
        let out = self
            .binary_frontier::<_, timely::container::CapacityContainerBuilder<Vec<Batch>>, _, _, _, _>(
                decisions,
                by_match,
                by_decision,
                "VerifyHits",
                move |_cap, _info| {
                    let mut stash: Stash = BTreeMap::new();
                    let mut book = Book { config, hits: HashMap::new(), expiry: BTreeSet::new() };
                    // This worker's share of a previous run's hits: the exchange sends hit `id` to
                    // worker `id % peers`.
                    let restore = std::sync::Arc::clone(&book.config.restore);
                    for r in restore.iter().filter(|r| r.candidate.hit_id % peers == index) {
                        book.restored(r);
                    }
                    move |(matches, f1), (decided, f2), output| {
                        matches.for_each(|cap, data| {
                            let Some(cap) = cap.retain_least(0) else { return };
                            for (c, t, r) in data.drain(..) {
                                let slot = stash.entry(t).or_insert_with(|| {
                                    (cap.delayed(&t.max(*cap.time())), Vec::new(), Vec::new())
                                });
                                slot.1.push((c, r));
                            }
                        });
                        decided.for_each(|cap, data| {
                            let Some(cap) = cap.retain_least(0) else { return };
                            for (d, t, r) in data.drain(..) {
                                let slot = stash.entry(t).or_insert_with(|| {
                                    (cap.delayed(&t.max(*cap.time())), Vec::new(), Vec::new())
                                });
                                // The same decision twice in one tick arrives consolidated: r > 1.
                                slot.2.extend(std::iter::repeat_n(d, r.max(0) as usize));
                            }
                        });
                        while let Some(entry) = stash.first_entry() {
                            if f1.less_equal(entry.key()) || f2.less_equal(entry.key()) {
                                break;
                            }
                            let (t, (cap, mut matches, decisions)) = entry.remove_entry();
                            // Insertions before retractions: an entry replaced in one tick stays.
                            matches.sort_by_key(|m| std::cmp::Reverse(m.1));
                            let mut rows = HitRows::default();
                            for (c, r) in matches {
                                book.matched(c, t, r, &mut rows);
                            }
                            for d in decisions {
                                book.decide(d, t, &mut rows);
                            }
                            if !rows.is_empty() {
                                output.session(&cap).give(Batch::new(rows.finish()));
                            }
                        }
                        let frontier = [f1.frontier(), f2.frontier()]
                            .iter()
                            .filter_map(|f| f.iter().min().copied())
                            .min()
                            .unwrap_or(Time::MAX);
                        book.expire(frontier);
                    }
                },
            );
        Events::new(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(id: u64, read_time: Millis) -> Candidate {
        Candidate {
            hit_id: id,
            camera_id: 3,
            read_time,
            event_id: 77,
            plate_raw: "12345 | ب | 6".into(),
            plate: "12345-ب-6".into(),
            listed_plate: "12345-ب-6".into(),
            score_permille: 1000,
            why: "exact".into(),
            legal_basis: "DGSN-1".into(),
            reason: "stolen vehicle".into(),
            authority: "DGSN".into(),
        }
    }

    fn statuses(rows: &mut HitRows) -> Vec<(String, String, bool, String)> {
        let batch = rows.finish();
        let cols = HitCols::new(&batch).unwrap();
        cols.rows()
            .map(|r| (r.status.to_owned(), r.decided_by.to_owned(), r.actionable, r.note.to_owned()))
            .collect()
    }

    fn book() -> Book {
        Book {
            config: HitConfig { lookback_ms: 1_000, keep_ms: 10_000, ..HitConfig::default() },
            hits: HashMap::new(),
            expiry: BTreeSet::new(),
        }
    }

    #[test]
    fn a_hit_is_actionable_only_after_two_distinct_people_confirm() {
        let (mut b, mut out) = (book(), HitRows::default());
        b.matched(cand(1, 100), 100, 1, &mut out);
        b.decide((1, true, String::new(), "amina".into()), 200, &mut out);
        b.decide((1, true, String::new(), "amina".into()), 210, &mut out);
        b.decide((1, true, String::new(), "omar".into()), 220, &mut out);
        b.decide((1, false, "wrong car".into(), "salma".into()), 230, &mut out);
        let s = statuses(&mut out);
        let st: Vec<(&str, bool)> = s.iter().map(|r| (r.0.as_str(), r.2)).collect();
        assert_eq!(
            st,
            [
                ("candidate", false),
                ("confirmation", false),
                ("ignored", false),
                ("confirmed", true),
                ("ignored", true)
            ]
        );
        assert!(s[2].3.contains("already confirmed"), "{s:?}");
        assert_eq!((s[3].1.as_str(), s[3].3.as_str()), ("omar", "2 of 2"));
    }

    #[test]
    fn a_rejection_ends_it_and_removal_retracts_only_candidates() {
        let (mut b, mut out) = (book(), HitRows::default());
        b.matched(cand(1, 100), 100, 1, &mut out);
        b.matched(cand(2, 100), 100, 1, &mut out);
        b.matched(cand(3, 100), 100, 1, &mut out);
        b.decide((1, false, "plate cloned on another car".into(), "amina".into()), 150, &mut out);
        b.decide((2, true, String::new(), "amina".into()), 150, &mut out);
        b.decide((2, true, String::new(), "omar".into()), 160, &mut out);
        // The entry goes at 500: only the candidate is retracted.
        for id in 1..=3 {
            b.matched(cand(id, 100), 500, -1, &mut out);
        }
        // Read 4 ages out of the lookback (at 100 + 1000): its hit stays a candidate.
        b.matched(cand(4, 100), 120, 1, &mut out);
        b.matched(cand(4, 100), 1_100, -1, &mut out);
        let s = statuses(&mut out);
        let tail: Vec<&str> = s[3..].iter().map(|r| r.0.as_str()).collect();
        assert_eq!(tail, ["rejected", "confirmation", "confirmed", "retracted", "candidate"]);
        assert_eq!(s[3].3, "plate cloned on another car");
        assert_eq!(b.hits[&4].status, Status::Candidate);
        // Past their retention the book forgets them.
        b.expire(100 + 10_000);
        assert!(b.hits.contains_key(&4) && !b.hits.contains_key(&1));
        b.expire(120 + 10_000);
        assert!(b.hits.is_empty());
    }

    #[test]
    fn a_restart_takes_up_each_hit_where_it_was() {
        let (mut b, mut out) = (book(), HitRows::default());
        for id in 1..=4 {
            b.matched(cand(id, 100), 100, 1, &mut out);
        }
        b.decide((1, true, String::new(), "amina".into()), 200, &mut out);
        b.decide((2, false, "another car".into(), "amina".into()), 200, &mut out);
        b.decide((3, true, String::new(), "amina".into()), 200, &mut out);
        b.decide((3, true, String::new(), "omar".into()), 300, &mut out);
        b.matched(cand(4, 100), 400, -1, &mut out);
        let rows = out.finish();
        // The rows come back from Parquet in any order.
        let (first, rest) = (rows.slice(0, 5), rows.slice(5, rows.num_rows() - 5));
        let restored = restore(&[rest, first]);
        let state: Vec<(u64, &str, usize)> =
            restored.iter().map(|r| (r.candidate.hit_id, r.status.as_str(), r.confirmed_by.len())).collect();
        assert_eq!(
            state,
            [(1, "candidate", 1), (2, "rejected", 0), (3, "confirmed", 2), (4, "retracted", 0)]
        );
        assert_eq!(restored[0].candidate, cand(1, 100));
        // The new run's book: omar's confirmation completes hit 1; amina's counts no more.
        let (mut b, mut out) = (book(), HitRows::default());
        for r in &restored {
            b.restored(r);
        }
        b.decide((1, true, String::new(), "amina".into()), 500, &mut out);
        b.decide((1, true, String::new(), "omar".into()), 510, &mut out);
        b.decide((2, true, String::new(), "omar".into()), 520, &mut out);
        let s: Vec<String> = statuses(&mut out).into_iter().map(|r| r.0).collect();
        assert_eq!(s, ["ignored", "confirmed", "ignored"]);
    }

    #[test]
    fn a_restart_applies_again_only_the_decisions_hits_does_not_show() {
        let (mut b, mut out) = (book(), HitRows::default());
        b.matched(cand(1, 100), 100, 1, &mut out);
        b.matched(cand(2, 100), 100, 1, &mut out);
        // Amina confirms hit 1 twice (the second is ignored), omar confirms it, amina rejects 2.
        let decisions = [(1, "amina", 200), (1, "amina", 210), (1, "omar", 300), (2, "amina", 310)];
        let mut journal = DecisionRows::default();
        for (id, by, at) in decisions {
            let hit_id = format!("{id:016x}");
            let (decision, reason) = if id == 2 { ("reject", "another car") } else { ("confirm", "") };
            journal.push(&DecisionRow {
                hit_id: &hit_id,
                decision,
                reason,
                decided_by: by,
                decided_at: at,
                expires_at: at + DECISION_ROW_MS,
            });
            b.decide((id, id != 2, reason.to_owned(), by.to_owned()), at as Time, &mut out);
        }
        let (journal, rows) = (journal.finish(), out.finish());
        assert_eq!(rows.num_rows(), 6);
        let left = |hits: &[RecordBatch]| -> Vec<(String, String, i64)> {
            let undone = undone(&journal, hits).unwrap();
            DecisionCols::new(&undone)
                .unwrap()
                .rows()
                .map(|d| (d.hit_id.to_owned(), d.decided_by.to_owned(), d.decided_at))
                .collect()
        };
        // Every row committed: nothing to do again.
        assert_eq!(left(std::slice::from_ref(&rows)), []);
        // Killed after amina's first confirmation was committed: her second, omar's and the
        // rejection are done again, in their order.
        let who = |id: u64, by: &str, at: i64| (format!("{id:016x}"), by.to_owned(), at);
        assert_eq!(
            left(&[rows.slice(0, 3)]),
            [who(1, "amina", 210), who(1, "omar", 300), who(2, "amina", 310)]
        );
        // Killed before any decision was committed: all four.
        assert_eq!(left(&[rows.slice(0, 2)]).len(), 4);
        // Hit 1's rows gone by retention, hit 2's rejection written: hit 1's decisions, older
        // than that row, are not made again (each restart would record them as ignored).
        assert_eq!(left(&[rows.slice(1, 1), rows.slice(5, 1)]), []);
        // Hit 1 not yet written at all, its decisions newer than every row: made again.
        assert_eq!(left(&[rows.slice(1, 1)]).len(), 3 + 1);
    }

    #[test]
    fn decisions_are_checked_as_they_are_inserted() {
        let cols = |id: &str, d: &str, r: Option<&str>| {
            vec![
                ("hit_id".to_owned(), vec![Some(id.to_owned())]),
                ("decision".to_owned(), vec![Some(d.to_owned())]),
                ("reason".to_owned(), vec![r.map(str::to_owned)]),
            ]
        };
        let ok = check_decisions(&cols("00AB00000000cdef", "Confirm", None), 5, "amina").unwrap();
        let r = DecisionCols::new(&ok).unwrap();
        let row = r.rows().next().unwrap();
        assert_eq!(
            (row.hit_id, row.decision, row.decided_by, row.decided_at),
            ("00ab00000000cdef", "confirm", "amina", 5)
        );
        for (c, what, fix) in [
            (cols("xyz", "confirm", None), "row 1: \"xyz\" is not a hit id", "copy the 16 hex digits"),
            (
                cols("00ab00000000cdef", "maybe", None),
                "row 1: decision \"maybe\"",
                "write 'confirm' or 'reject'",
            ),
            (
                cols("00ab00000000cdef", "reject", Some(" ")),
                "row 1: a rejection without its reason",
                "say why",
            ),
        ] {
            let (w, f) = check_decisions(&c, 5, "amina").unwrap_err();
            assert!(w == what && f.starts_with(fix), "{w}; {f}");
        }
        let mut forged = cols("00ab00000000cdef", "confirm", None);
        forged.push(("decided_by".into(), vec![Some("omar".into())]));
        assert!(check_decisions(&forged, 5, "amina").unwrap_err().0.contains("the session's"));
    }
}

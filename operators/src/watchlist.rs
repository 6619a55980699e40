//! The watchlist join: plate reads matched against a watchlist held as a differential collection.
//!
//! The watchlist is a reference table that changes at runtime (`watchlist` rows added or
//! removed through the ingest side). Each plate read enters differential as a temporal row:
//! inserted at its event time and retracted one millisecond later, so the join answers "was this
//! plate on the watchlist when it was read" and keeps no read longer than that. An entry added
//! while the city runs therefore matches the reads that follow it, and not the ones before.
//! Hits are released by [`Finalize`] once their time is complete, as `watchlist` alerts.
//!
//! Privacy by design: every entry carries its legal basis, which travels with each hit, and a
//! hit is an *unverified* match that a person must confirm before anyone acts on it (ANPR
//! readers err on 5–35% of hits).

use arrow::array::RecordBatch;
use differential_dataflow::VecCollection;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use vigil_engine::bridge::{Diff, Finalize, ToUpdates};
use vigil_engine::error::ErrorSink;
use vigil_engine::ids::Epoch;
use vigil_engine::runtime::Time;
use vigil_engine::stream::{Batch, Events, Str, StreamDef};

use crate::alerts::{Alert, AlertRows, Alerts};
use crate::plate::{PlateReadCols, PlateReads};

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
            /// Why the plate is listed: the legal basis (warrant, stolen-vehicle report number, ...).
            legal_basis: Str,
        }
    }
}

/// One watchlist entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEntry {
    /// Canonical plate (see [`crate::plate::normalize`]).
    pub plate: String,
    /// Why the plate is listed: the legal basis (warrant, stolen-vehicle report number, ...).
    pub legal_basis: String,
}

/// Watchlist entries as rows of the `watchlist` table.
pub fn to_batch(entries: &[WatchEntry]) -> RecordBatch {
    let mut b = WatchRows::default();
    for e in entries {
        b.push(&WatchRow { plate: &e.plate, legal_basis: &e.legal_basis });
    }
    b.finish()
}

/// What a hit needs to know about the read: (camera, event time, event id, raw text, confidence‰).
type ReadInfo = (u32, i64, u64, String, u16);

/// Extension trait: the watchlist join.
pub trait WatchlistJoin<'scope> {
    /// Alerts for the plate reads whose plate is on the watchlist at read time. Batches that
    /// cannot be read go to `errors`.
    ///
    /// ```
    /// use vigil_engine::error::ErrorSink;
    /// use vigil_engine::graph::Graph;
    /// use vigil_engine::ids::Epoch;
    /// use vigil_engine::stream::StreamDef;
    /// use vigil_operators::alerts::Alerts;
    /// use vigil_operators::plate::PlateReads;
    /// use vigil_operators::watchlist::{Watchlist, WatchlistJoin};
    ///
    /// timely::example(|scope| {
    ///     let input = timely::dataflow::operators::generic::operator::empty(scope);
    ///     let mut graph = Graph::split(scope, 0, input, &[PlateReads::info(), Watchlist::info()]);
    ///     let reads = graph.get::<PlateReads>().unwrap();
    ///     let hits = reads.watchlist_hits(graph.get::<Watchlist>().unwrap(), Epoch::default(), &ErrorSink::log());
    ///     assert_eq!(hits.info().name, Alerts::NAME);
    /// });
    /// ```
    fn watchlist_hits(
        self,
        watchlist: Events<'scope, Watchlist>,
        epoch: Epoch,
        errors: &ErrorSink,
    ) -> Events<'scope, Alerts>;
}

impl<'scope> WatchlistJoin<'scope> for Events<'scope, PlateReads> {
    fn watchlist_hits(
        self,
        watchlist: Events<'scope, Watchlist>,
        epoch: Epoch,
        errors: &ErrorSink,
    ) -> Events<'scope, Alerts> {
        let (e1, e2) = (errors.clone(), errors.clone());
        let reads: VecCollection<'scope, Time, (String, ReadInfo), Diff> =
            self.into_inner().updates("PlateReads", move |batch, _t, out| {
                if let Err(e) = read_updates(&batch.rows, out) {
                    e1.report("PlateReads", e);
                }
            });
        let watchlist: VecCollection<'scope, Time, (String, String), Diff> =
            watchlist.into_inner().updates("WatchlistRows", move |batch, t, out| {
                if let Err(e) = entry_updates(batch, t, out) {
                    e2.report("WatchlistRows", e);
                }
            });
        let alerts = reads
            .join(watchlist)
            .finalize("WatchlistHits")
            .unary::<timely::container::CapacityContainerBuilder<Vec<Batch>>, _, _, _>(
                Pipeline,
                "WatchlistAlerts",
                move |_cap, _info| {
                    move |input, output| {
                        input.for_each(|cap, data| {
                            let mut alerts = AlertRows::default();
                            for (plate, ((camera_id, event_time, event_id, raw, conf), basis), _t, diff) in
                                data.iter().map(|(d, t, r)| (&d.0, &d.1, t, *r))
                            {
                                // Retractions are the reads expiring; only insertions are hits.
                                if diff <= 0 {
                                    continue;
                                }
                                let message = format!(
                                    "plate {plate} (read {raw:?}, confidence {:.2}) is on the watchlist; legal basis: {basis}; UNVERIFIED: a person must confirm before acting",
                                    f32::from(*conf) / 1000.0
                                );
                                let alert = Alert::new(
                                    epoch, "watchlist", Watchlist::NAME, "high", *camera_id, *event_time, *event_id, message, 0,
                                );
                                alerts.push(&alert.row());
                            }
                            if !alerts.is_empty() {
                                output.session(&cap).give(Batch::new(alerts.finish()));
                            }
                        });
                    }
                },
            );
        Events::new(alerts)
    }
}

fn read_updates(
    batch: &RecordBatch,
    out: &mut Vec<((String, ReadInfo), Time, Diff)>,
) -> vigil_engine::Result<()> {
    let cols = PlateReadCols::new(batch)?;
    for r in cols.rows() {
        // Reads that did not normalize cannot match an entry.
        let Some(plate) = r.plate else { continue };
        let t = r.event_time.max(0) as Time;
        let info = (
            r.camera_id,
            r.event_time,
            r.event_id,
            r.plate_raw.to_owned(),
            (r.confidence.clamp(0.0, 1.0) * 1000.0).round() as u16,
        );
        let row = (plate.to_owned(), info);
        out.push((row.clone(), t, 1));
        out.push((row, t + 1, -1));
    }
    Ok(())
}

fn entry_updates(
    batch: &Batch,
    t: Time,
    out: &mut Vec<((String, String), Time, Diff)>,
) -> vigil_engine::Result<()> {
    let cols = WatchCols::new(&batch.rows)?;
    for r in cols.rows() {
        out.push(((r.plate.to_owned(), r.legal_basis.to_owned()), t, batch.diff as Diff));
    }
    Ok(())
}

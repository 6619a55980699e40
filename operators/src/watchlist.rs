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

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float32Array, RecordBatch, StringArray, TimestampMillisecondArray, UInt32Array,
    UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use differential_dataflow::VecCollection;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use vigil_engine::alerts::{Alert, AlertsBuilder};
use vigil_engine::bridge::{Diff, Finalize, ToUpdates};
use vigil_engine::runtime::{BatchKind, EventBatch, Time};
use vigil_engine::schema::StreamKind;

/// The reference table's name.
pub const TABLE: &str = "watchlist";

/// One watchlist entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEntry {
    /// Canonical plate (see [`crate::plate::normalize`]).
    pub plate: String,
    /// Why the plate is listed: the legal basis (warrant, stolen-vehicle report number, ...).
    pub legal_basis: String,
}

/// The Arrow schema of `watchlist` reference rows.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("plate", DataType::Utf8, false),
        Field::new("legal_basis", DataType::Utf8, false),
    ]))
}

/// Watchlist entries as a reference batch.
pub fn to_batch(entries: &[WatchEntry]) -> RecordBatch {
    let plate = StringArray::from_iter_values(entries.iter().map(|e| e.plate.as_str()));
    let basis = StringArray::from_iter_values(entries.iter().map(|e| e.legal_basis.as_str()));
    RecordBatch::try_new(schema(), vec![Arc::new(plate) as ArrayRef, Arc::new(basis)])
        .expect("columns match the watchlist schema")
}

/// What a hit needs to know about the read: (camera, event time, event id, raw text, confidence‰).
type ReadInfo = (u32, i64, u64, String, u16);

/// Extension trait: the watchlist join.
pub trait WatchlistJoin<'scope> {
    /// Emits `alerts` batches for plate reads whose plate is on the watchlist at read time.
    fn watchlist_hits(self) -> Stream<'scope, Time, Vec<EventBatch>>;
}

impl<'scope> WatchlistJoin<'scope> for Stream<'scope, Time, Vec<EventBatch>> {
    fn watchlist_hits(self) -> Stream<'scope, Time, Vec<EventBatch>> {
        let reads: VecCollection<'scope, Time, (String, ReadInfo), Diff> =
            self.clone().updates("PlateReads", |batch, _t, out| {
                if batch.stream() == Some(StreamKind::PlateReads) {
                    read_updates(&batch.data, out);
                }
            });
        let watchlist: VecCollection<'scope, Time, (String, String), Diff> =
            self.updates("WatchlistRows", |batch, t, out| {
                if let BatchKind::Reference { table, diff } = &batch.kind
                    && &**table == TABLE
                {
                    entry_updates(&batch.data, t, *diff as Diff, out);
                }
            });
        reads
            .join(watchlist)
            .finalize("WatchlistHits")
            .unary::<timely::container::CapacityContainerBuilder<Vec<EventBatch>>, _, _, _>(
                Pipeline,
                "WatchlistAlerts",
                |_cap, _info| {
                    move |input, output| {
                        input.for_each(|cap, data| {
                            let mut alerts = AlertsBuilder::default();
                            for (plate, ((camera_id, event_time, event_id, raw, conf), basis), _t, diff) in
                                data.iter().map(|(d, t, r)| (&d.0, &d.1, t, *r))
                            {
                                // Retractions are the reads expiring; only insertions are hits.
                                if diff <= 0 {
                                    continue;
                                }
                                alerts.push(&Alert {
                                    event_time: *event_time,
                                    kind: "watchlist".into(),
                                    rule: TABLE.into(),
                                    severity: "high".into(),
                                    camera_id: *camera_id,
                                    event_id: *event_id,
                                    message: format!(
                                        "plate {plate} (read {raw:?}, confidence {:.2}) is on the watchlist; legal basis: {basis}; UNVERIFIED: a person must confirm before acting",
                                        f32::from(*conf) / 1000.0
                                    ),
                                });
                            }
                            if !alerts.is_empty() {
                                output.session(&cap).give(EventBatch {
                                    kind: BatchKind::Events(StreamKind::Alerts),
                                    data: alerts.finish(),
                                });
                            }
                        });
                    }
                },
            )
    }
}

fn read_updates(batch: &RecordBatch, out: &mut Vec<((String, ReadInfo), Time, Diff)>) {
    let col = |name: &str| batch.column_by_name(name).map(|c| c.as_any());
    let (Some(plate), Some(raw), Some(camera), Some(time), Some(id), Some(conf)) = (
        col("plate").and_then(|c| c.downcast_ref::<StringArray>()),
        col("plate_raw").and_then(|c| c.downcast_ref::<StringArray>()),
        col("camera_id").and_then(|c| c.downcast_ref::<UInt32Array>()),
        col("event_time").and_then(|c| c.downcast_ref::<TimestampMillisecondArray>()),
        col("event_id").and_then(|c| c.downcast_ref::<UInt64Array>()),
        col("confidence").and_then(|c| c.downcast_ref::<Float32Array>()),
    ) else {
        return;
    };
    for i in 0..batch.num_rows() {
        // Reads that did not normalize cannot match an entry.
        if plate.is_null(i) {
            continue;
        }
        let t = time.value(i).max(0) as Time;
        let info = (
            camera.value(i),
            time.value(i),
            id.value(i),
            raw.value(i).to_owned(),
            (conf.value(i).clamp(0.0, 1.0) * 1000.0).round() as u16,
        );
        let row = (plate.value(i).to_owned(), info);
        out.push((row.clone(), t, 1));
        out.push((row, t + 1, -1));
    }
}

fn entry_updates(batch: &RecordBatch, t: Time, diff: Diff, out: &mut Vec<((String, String), Time, Diff)>) {
    let col = |name: &str| batch.column_by_name(name).and_then(|c| c.as_any().downcast_ref::<StringArray>());
    let (Some(plate), Some(basis)) = (col("plate"), col("legal_basis")) else { return };
    for i in 0..batch.num_rows() {
        out.push(((plate.value(i).to_owned(), basis.value(i).to_owned()), t, diff));
    }
}

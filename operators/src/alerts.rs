//! Alerts: the `alerts` stream every operator and SQL rule raises into, and the channel that
//! fans alerts out to live subscribers (the CLI, psql, the dashboard).
//!
//! An alert is written to the `alerts` Parquet stream like any event (that copy is durable and
//! complete) and published on an [`AlertBus`]. The bus is a bounded broadcast channel: a
//! subscriber that falls more than its capacity behind misses alerts and is told how many
//! (`Lagged`), rather than growing memory without bound.
//!
//! An alert's `event_id` is its own: a hash of the run's epoch, the rule, the triggering event,
//! the time, the message and the alert's rank among identical ones ([`Epoch::hash_id`]), so two
//! rules firing on one detection raise two alerts with two ids. `trigger_id` is the id of the
//! event (or window) that triggered it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;
use vigil_engine::ids::Epoch;
use vigil_engine::stream::{Str, Timestamp};
use vigil_engine::time::{Millis, rfc3339};

use crate::error::Result;

vigil_engine::stream! {
    /// An alert raised by an operator or a SQL rule.
    pub struct Alerts {
        name: "alerts",
        class: Record,
        keys: [camera_id, event_time, event_id],
        personal: [message],
        row: AlertRow,
        builder: AlertRows,
        reader: AlertCols,
        columns: {
            /// The camera concerned (0 when none).
            camera_id: u32,
            /// Event time of what triggered the alert.
            event_time: Timestamp,
            /// The alert's own id.
            event_id: u64,
            /// The id of the triggering event (or window).
            trigger_id: u64,
            /// What raised it: `density`, `watchlist`, `rule`.
            kind: Str,
            /// The rule or operator instance (`zone:gate-a`, a SQL rule's name, ...).
            rule: Str,
            /// `low`, `medium` or `high`.
            severity: Str,
            /// Human-readable details.
            message: Str,
        }
    }
}

/// One alert, as subscribers receive it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Alert {
    /// Event time of what triggered the alert.
    pub event_time: Millis,
    /// What raised it: `density`, `watchlist`, `rule`.
    pub kind: String,
    /// The rule or operator instance (`zone:gate-a`, a SQL rule's name, ...).
    pub rule: String,
    /// `low`, `medium` or `high`.
    pub severity: String,
    /// The camera concerned.
    pub camera_id: u32,
    /// The alert's own id.
    pub event_id: u64,
    /// The id of the triggering event (or window).
    pub trigger_id: u64,
    /// Human-readable details.
    pub message: String,
}

impl Alert {
    /// An alert of run `epoch`; `rank` tells apart alerts otherwise identical (0 for the first).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        epoch: Epoch,
        kind: &str,
        rule: &str,
        severity: &str,
        camera_id: u32,
        event_time: Millis,
        trigger_id: u64,
        message: String,
        rank: u32,
    ) -> Self {
        let event_id = epoch.hash_id(&[
            kind.as_bytes(),
            rule.as_bytes(),
            &trigger_id.to_le_bytes(),
            &event_time.to_le_bytes(),
            message.as_bytes(),
            &rank.to_le_bytes(),
        ]);
        Self {
            event_time,
            kind: kind.into(),
            rule: rule.into(),
            severity: severity.into(),
            camera_id,
            event_id,
            trigger_id,
            message,
        }
    }

    /// The alert as a row.
    pub fn row(&self) -> AlertRow<'_> {
        AlertRow {
            camera_id: self.camera_id,
            event_time: self.event_time,
            event_id: self.event_id,
            trigger_id: self.trigger_id,
            kind: &self.kind,
            rule: &self.rule,
            severity: &self.severity,
            message: &self.message,
        }
    }
}

impl std::fmt::Display for Alert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:<9} {:<6} camera={} rule={} {}",
            rfc3339(self.event_time),
            self.kind,
            self.severity,
            self.camera_id,
            self.rule,
            self.message
        )
    }
}

/// Reads alerts back out of an `alerts` batch.
pub fn alerts_from_batch(batch: &arrow::array::RecordBatch) -> Result<Vec<Alert>> {
    let cols = AlertCols::new(batch)?;
    Ok(cols
        .rows()
        .map(|r| Alert {
            event_time: r.event_time,
            kind: r.kind.to_owned(),
            rule: r.rule.to_owned(),
            severity: r.severity.to_owned(),
            camera_id: r.camera_id,
            event_id: r.event_id,
            trigger_id: r.trigger_id,
            message: r.message.to_owned(),
        })
        .collect())
}

/// A broadcast channel of alerts, which also counts them by kind; clone it freely, subscribe
/// any number of times.
#[derive(Clone, Debug)]
pub struct AlertBus {
    tx: broadcast::Sender<Arc<Alert>>,
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl AlertBus {
    /// A bus where each subscriber may fall `capacity` alerts behind before missing some.
    pub fn new(capacity: usize) -> Self {
        Self { tx: broadcast::channel(capacity.max(1)).0, counts: Arc::default() }
    }

    /// Alerts published so far, by kind.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.counts.lock().expect("alert counts").clone()
    }

    /// Alerts published so far.
    pub fn total(&self) -> u64 {
        self.counts.lock().expect("alert counts").values().sum()
    }

    /// A new subscriber, receiving alerts published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Alert>> {
        self.tx.subscribe()
    }

    /// Publishes an alert; returns how many subscribers will see it.
    pub fn publish(&self, alert: Alert) -> usize {
        *self.counts.lock().expect("alert counts").entry(alert.kind.clone()).or_default() += 1;
        self.tx.send(Arc::new(alert)).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(i: u64) -> Alert {
        Alert::new(Epoch::default(), "rule", "r", "high", 3, 1_000 + i as i64, i, format!("m{i}"), 0)
    }

    #[test]
    fn alerts_round_trip_through_a_batch() {
        let mut b = AlertRows::default();
        let alerts: Vec<Alert> = (0..3).map(alert).collect();
        alerts.iter().for_each(|a| b.push(&a.row()));
        let batch = b.finish();
        assert_eq!(batch.num_rows(), 3);
        assert_eq!(alerts_from_batch(&batch).unwrap(), alerts);
    }

    #[test]
    fn two_rules_on_one_trigger_raise_alerts_with_two_ids() {
        let e = Epoch::new(1).unwrap();
        let a = Alert::new(e, "rule", "a", "high", 0, 5, 42, "x".into(), 0);
        let b = Alert::new(e, "rule", "b", "high", 0, 5, 42, "x".into(), 0);
        let a2 = Alert::new(e, "rule", "a", "high", 0, 5, 42, "x".into(), 1);
        assert_eq!((a.trigger_id, b.trigger_id), (42, 42));
        assert_ne!(a.event_id, b.event_id);
        assert_ne!(a.event_id, a2.event_id);
    }

    #[test]
    fn slow_subscriber_is_told_it_lagged() {
        let bus = AlertBus::new(2);
        let mut rx = bus.subscribe();
        for i in 0..5 {
            bus.publish(alert(i));
        }
        assert!(matches!(rx.try_recv(), Err(broadcast::error::TryRecvError::Lagged(3))));
        assert_eq!(rx.try_recv().unwrap().trigger_id, 3);
    }
}

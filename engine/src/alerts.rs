//! Alerts: the rows every detector, operator and SQL rule raises, and the channel that fans
//! them out to live subscribers (the CLI, later psql and the dashboard).
//!
//! An alert is written to the `alerts` Parquet stream like any event (that copy is durable and
//! deterministic) and published on an [`AlertBus`]. The bus is a bounded broadcast channel: a
//! subscriber that falls more than its capacity behind misses alerts and is told how many
//! (`Lagged`), rather than growing memory without bound; the Parquet copy is complete.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, RecordBatch, StringArray, StringBuilder, TimestampMillisecondArray,
    TimestampMillisecondBuilder, UInt32Array, UInt32Builder, UInt64Array, UInt64Builder,
};
use tokio::sync::broadcast;

use crate::error::{EngineError, Result};
use crate::schema::StreamKind;
use crate::time::{Millis, rfc3339};

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
    /// The id of the triggering event (or window), for deduplication.
    pub event_id: u64,
    /// Human-readable details.
    pub message: String,
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

/// Builds `alerts` batches.
#[derive(Debug)]
pub struct AlertsBuilder {
    camera_id: UInt32Builder,
    event_time: TimestampMillisecondBuilder,
    event_id: UInt64Builder,
    kind: StringBuilder,
    rule: StringBuilder,
    severity: StringBuilder,
    message: StringBuilder,
}

impl Default for AlertsBuilder {
    fn default() -> Self {
        Self {
            camera_id: UInt32Builder::new(),
            event_time: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            event_id: UInt64Builder::new(),
            kind: StringBuilder::new(),
            rule: StringBuilder::new(),
            severity: StringBuilder::new(),
            message: StringBuilder::new(),
        }
    }
}

impl AlertsBuilder {
    /// Appends one alert.
    pub fn push(&mut self, a: &Alert) {
        self.camera_id.append_value(a.camera_id);
        self.event_time.append_value(a.event_time);
        self.event_id.append_value(a.event_id);
        self.kind.append_value(&a.kind);
        self.rule.append_value(&a.rule);
        self.severity.append_value(&a.severity);
        self.message.append_value(&a.message);
    }

    /// Rows pending.
    pub fn len(&self) -> usize {
        self.camera_id.len()
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pending alerts as a batch; resets the builder.
    pub fn finish(&mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.camera_id.finish()),
            Arc::new(self.event_time.finish()),
            Arc::new(self.event_id.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.rule.finish()),
            Arc::new(self.severity.finish()),
            Arc::new(self.message.finish()),
        ];
        RecordBatch::try_new(StreamKind::Alerts.schema(), columns)
            .expect("AlertsBuilder columns match the alerts schema")
    }
}

/// Reads alerts back out of an `alerts` batch.
pub fn alerts_from_batch(batch: &RecordBatch) -> Result<Vec<Alert>> {
    fn col<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a T> {
        b.column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<T>())
            .ok_or_else(|| EngineError::Internal(format!("alerts batch: bad column {name}")))
    }
    let camera: &UInt32Array = col(batch, "camera_id")?;
    let time: &TimestampMillisecondArray = col(batch, "event_time")?;
    let id: &UInt64Array = col(batch, "event_id")?;
    let kind: &StringArray = col(batch, "kind")?;
    let rule: &StringArray = col(batch, "rule")?;
    let severity: &StringArray = col(batch, "severity")?;
    let message: &StringArray = col(batch, "message")?;
    Ok((0..batch.num_rows())
        .map(|i| Alert {
            event_time: time.value(i),
            kind: kind.value(i).to_owned(),
            rule: rule.value(i).to_owned(),
            severity: severity.value(i).to_owned(),
            camera_id: camera.value(i),
            event_id: id.value(i),
            message: message.value(i).to_owned(),
        })
        .collect())
}

/// A broadcast channel of alerts; clone it freely, subscribe any number of times.
#[derive(Clone, Debug)]
pub struct AlertBus {
    tx: broadcast::Sender<Arc<Alert>>,
}

impl AlertBus {
    /// A bus where each subscriber may fall `capacity` alerts behind before missing some.
    pub fn new(capacity: usize) -> Self {
        Self { tx: broadcast::channel(capacity.max(1)).0 }
    }

    /// A new subscriber, receiving alerts published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Alert>> {
        self.tx.subscribe()
    }

    /// Publishes an alert; returns how many subscribers will see it.
    pub fn publish(&self, alert: Alert) -> usize {
        self.tx.send(Arc::new(alert)).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(i: u64) -> Alert {
        Alert {
            event_time: 1_000 + i as i64,
            kind: "rule".into(),
            rule: "r".into(),
            severity: "high".into(),
            camera_id: 3,
            event_id: i,
            message: format!("m{i}"),
        }
    }

    #[test]
    fn alerts_round_trip_through_a_batch() {
        let mut b = AlertsBuilder::default();
        let alerts: Vec<Alert> = (0..3).map(alert).collect();
        alerts.iter().for_each(|a| b.push(a));
        let batch = b.finish();
        assert_eq!(batch.num_rows(), 3);
        assert_eq!(alerts_from_batch(&batch).unwrap(), alerts);
    }

    #[test]
    fn slow_subscriber_is_told_it_lagged() {
        let bus = AlertBus::new(2);
        let mut rx = bus.subscribe();
        for i in 0..5 {
            bus.publish(alert(i));
        }
        assert!(matches!(rx.try_recv(), Err(broadcast::error::TryRecvError::Lagged(3))));
        assert_eq!(rx.try_recv().unwrap().event_id, 3);
    }
}

//! Crowd density per zone per tumbling window, with a threshold alert.
//!
//! First cut (tracking and cross-camera fusion come later): a zone's *persons* in a window is
//! the mean number of `person` detections inside it per frame of its camera, and its density is
//! persons per m². Each batch is pre-aggregated to one update per (zone, window) and fed to
//! differential's `count`, paired with a retraction at the window's end so the arrangement
//! forgets closed windows; [`CloseWindows`] emits each window once the watermark passes its
//! end. The result is one `zone_density` row per zone and window with people in it, and an
//! alert for each window at or above the zone's threshold. The Fruin level of service is the
//! walkway scale of the domain reference.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, Float64Builder, RecordBatch, StringArray, StringBuilder,
    TimestampMillisecondBuilder, UInt32Array, UInt32Builder, UInt64Builder,
};
use differential_dataflow::VecCollection;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use vigil_engine::alerts::{Alert, AlertsBuilder};
use vigil_engine::bridge::{CloseWindows, Diff, ToUpdates};
use vigil_engine::runtime::{BatchKind, EventBatch, Time};
use vigil_engine::schema::{StreamKind, event_times};
use vigil_engine::time::{Millis, tumbling_window};

use crate::zones::Zone;

/// Fruin walkway level of service for a density in persons per m².
pub fn fruin_level(density: f64) -> &'static str {
    match density {
        d if d < 0.31 => "A",
        d if d < 0.43 => "B",
        d if d < 0.72 => "C",
        d if d < 1.08 => "D",
        d if d <= 2.15 => "E",
        _ => "F",
    }
}

/// Density operator settings.
#[derive(Clone, Debug)]
pub struct DensityConfig {
    /// Window length in milliseconds (10 s by default).
    pub window_ms: Millis,
    /// The zones to measure.
    pub zones: Vec<Zone>,
}

/// Extension trait: the density operator.
pub trait ZoneDensity<'scope> {
    /// Emits `zone_density` and `alerts` batches for the `detections` batches of `self`.
    fn zone_density(self, config: DensityConfig) -> Stream<'scope, Time, Vec<EventBatch>>;
}

impl<'scope> ZoneDensity<'scope> for Stream<'scope, Time, Vec<EventBatch>> {
    fn zone_density(self, config: DensityConfig) -> Stream<'scope, Time, Vec<EventBatch>> {
        let window = config.window_ms;
        let mut counts: HashMap<(u32, Millis), isize> = HashMap::new();
        let persons: VecCollection<'scope, Time, (u32, Millis), Diff> =
            self.updates("PersonsPerZoneWindow", move |batch, _t, out| {
                if batch.stream() != Some(StreamKind::Detections) {
                    return;
                }
                pre_aggregate(&batch.data, window, &mut counts);
                for ((zone, start), n) in counts.drain() {
                    let key = (zone, start);
                    out.push((key, start.max(0) as Time, n));
                    // Expire the window's state once it has closed.
                    out.push((key, (start + window).max(0) as Time, -n));
                }
            });
        let zones: Arc<HashMap<u32, Zone>> = Arc::new(config.zones.into_iter().map(|z| (z.id, z)).collect());
        persons
            .count()
            .map(|(key, total)| (key, total as i64))
            .close_windows("CloseDensityWindows", move |((_, start), _)| (start + window).max(0) as Time)
            .unary::<timely::container::CapacityContainerBuilder<Vec<EventBatch>>, _, _, _>(
                Pipeline,
                "DensityRowsAndAlerts",
                move |_cap, _info| {
                    move |input, output| {
                        input.for_each(|cap, data| {
                            let mut rows = DensityRows::default();
                            let mut alerts = AlertsBuilder::default();
                            for (((zone_id, start), total), diff) in data.drain(..) {
                                // `count` emits (key, total) with diff +1 for the live total.
                                if diff <= 0 {
                                    continue;
                                }
                                let Some(zone) = zones.get(&zone_id) else { continue };
                                rows.push(zone, start, window, total, &mut alerts);
                            }
                            let mut session = output.session(&cap);
                            if !rows.is_empty() {
                                session.give(EventBatch {
                                    kind: BatchKind::Events(StreamKind::ZoneDensity),
                                    data: rows.finish(),
                                });
                            }
                            if !alerts.is_empty() {
                                session.give(EventBatch {
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

/// Counts `person` detections per (zone, window start) in one batch.
pub fn pre_aggregate(batch: &RecordBatch, window: Millis, out: &mut HashMap<(u32, Millis), isize>) {
    let (Some(class), Some(zone)) = (
        batch.column_by_name("class").and_then(|c| c.as_any().downcast_ref::<StringArray>()),
        batch.column_by_name("zone_id").and_then(|c| c.as_any().downcast_ref::<UInt32Array>()),
    ) else {
        return;
    };
    let Ok(times) = event_times(batch) else { return };
    for (i, &t) in times.iter().enumerate() {
        if zone.is_null(i) || class.value(i) != "person" {
            continue;
        }
        let (start, _) = tumbling_window(t, window);
        *out.entry((zone.value(i), start)).or_default() += 1;
    }
}

#[derive(Default)]
struct DensityRows {
    camera_id: UInt32Builder,
    event_time: TimestampMillisecondBuilder,
    event_id: UInt64Builder,
    zone_id: UInt32Builder,
    zone: StringBuilder,
    window_start: TimestampMillisecondBuilder,
    window_end: TimestampMillisecondBuilder,
    persons: Float64Builder,
    density: Float64Builder,
    level: StringBuilder,
}

impl DensityRows {
    fn is_empty(&self) -> bool {
        self.zone_id.len() == 0
    }

    /// Appends a closed window; its event time is the window's last millisecond and its event
    /// id packs (zone id, window index): `zone << 32 | start / window`.
    fn push(
        &mut self,
        zone: &Zone,
        start: Millis,
        window: Millis,
        detections: i64,
        alerts: &mut AlertsBuilder,
    ) {
        let persons = detections as f64 / zone.frames_per_window.max(1.0);
        let density = persons / zone.area().max(f64::EPSILON);
        let level = fruin_level(density);
        let event_time = start + window - 1;
        let event_id = (u64::from(zone.id) << 32) | ((start / window) as u64 & 0xFFFF_FFFF);
        self.camera_id.append_value(zone.camera_id);
        self.event_time.append_value(event_time);
        self.event_id.append_value(event_id);
        self.zone_id.append_value(zone.id);
        self.zone.append_value(&zone.name);
        self.window_start.append_value(start);
        self.window_end.append_value(start + window);
        self.persons.append_value(persons);
        self.density.append_value(density);
        self.level.append_value(level);
        if density >= zone.alert_density {
            alerts.push(&Alert {
                event_time,
                kind: "density".into(),
                rule: format!("zone:{}", zone.name),
                severity: if matches!(level, "E" | "F") { "high" } else { "medium" }.into(),
                camera_id: zone.camera_id,
                event_id,
                message: format!(
                    "{:.2} persons/m² (level {level}, {persons:.1} persons in {:.0} m²) at or above {:.2}",
                    density,
                    zone.area(),
                    zone.alert_density
                ),
            });
        }
    }

    fn finish(&mut self) -> RecordBatch {
        let utc =
            |b: &mut TimestampMillisecondBuilder| -> ArrayRef { Arc::new(b.finish().with_timezone("UTC")) };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.camera_id.finish()),
            utc(&mut self.event_time),
            Arc::new(self.event_id.finish()),
            Arc::new(self.zone_id.finish()),
            Arc::new(self.zone.finish()),
            utc(&mut self.window_start),
            utc(&mut self.window_end),
            Arc::new(self.persons.finish()),
            Arc::new(self.density.finish()),
            Arc::new(self.level.finish()),
        ];
        RecordBatch::try_new(StreamKind::ZoneDensity.schema(), columns)
            .expect("DensityRows columns match the zone_density schema")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fruin_bands() {
        for (d, l) in [(0.1, "A"), (0.35, "B"), (0.5, "C"), (0.9, "D"), (2.0, "E"), (2.15, "E"), (3.0, "F")] {
            assert_eq!(fruin_level(d), l, "{d}");
        }
    }
}

//! The crowd managers' board: the site plan, density per zone with its last hour, the heatmap,
//! gate flows, density alerts (with acknowledgement) and camera health, kept up to date from
//! the engine's streams and pushed to every open page.
//!
//! One task for all pages: every [`POLL`] it asks the retained streams for what is new (fixed
//! queries through the same [`Registry`] psql uses), folds it in, and when anything changed
//! sends the new state to the pages (server-sent events). The queries run with the engine's
//! rights, but what they produce is aggregate only: counts and densities per zone, crossings
//! counted per line, density alerts (whose messages hold only figures) and camera health. Who
//! may see the board is decided per request ([`Board::may_see`]).
//!
//! The board keeps what it shows beyond the engine's in-memory retention (the hour of history,
//! an alert raised long ago and still standing), bounded: an hour of one point per second per
//! zone, the active alert per zone, the latest report per camera.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast;
use vigil_engine::stream::Class;
use vigil_operators::flows::GateLine;
use vigil_operators::zones::Zone;
use vigil_sql::registry::Registry;
use vigil_sql::roles::Role;

use super::json::rows;

/// How often the board asks the engine for news: the page is at most this much behind the
/// engine's output (plus a query and the network).
pub const POLL: Duration = Duration::from_millis(250);
/// The history each zone keeps (its sparkline).
const HISTORY_MS: i64 = 3_600_000;
/// Gate flows are counted over this much of the city's time.
const FLOW_MS: i64 = 60_000;
/// The Green Guide's exit capacity on the level, persons per minute per metre.
const GREEN_GUIDE: f64 = 82.0;
/// A camera whose last report is older than this is shown as silent.
const SILENT_MS: i64 = 5_000;
/// Updates a slow page may fall behind before it is sent a whole snapshot again.
const BACKLOG: usize = 64;

/// One zone's latest window.
#[derive(Clone, Debug, Default)]
struct ZoneNow {
    window_end: i64,
    persons: f64,
    density: f64,
    level: String,
    cameras: i64,
}

/// A density alert standing on a zone.
#[derive(Clone, Debug)]
struct Standing {
    id: String,
    raised_at: i64,
    severity: String,
    message: String,
    acked: Option<(String, i64)>,
}

#[derive(Default)]
struct State {
    /// Update number; a page resumes after the snapshot it was given.
    seq: u64,
    /// The newest `window_end` of `zone_density` seen: the city's clock as the board knows it.
    now: i64,
    zones: BTreeMap<u32, ZoneNow>,
    history: BTreeMap<u32, VecDeque<(i64, f64)>>,
    /// Points added since the last update was sent: (zone, window_end, density).
    fresh: Vec<(u32, i64, f64)>,
    grid_end: i64,
    grid: Vec<(u32, i64, i64, f64)>,
    /// Per line: crossings in and out over the last [`FLOW_MS`].
    flows: BTreeMap<u32, (i64, i64)>,
    /// Per zone name, the alert standing on it.
    alerts: BTreeMap<String, Standing>,
    /// Density alerts already folded in, with their time (forgotten once out of retention).
    seen: HashMap<String, i64>,
    cameras: BTreeMap<u32, Value>,
    health_cursor: i64,
}

/// The board's state and the pages following it.
pub struct Board {
    registry: Arc<Registry>,
    progress: Arc<crate::app::Progress>,
    site: Value,
    lines: Vec<GateLine>,
    state: Mutex<State>,
    tx: broadcast::Sender<(u64, Arc<str>)>,
}

impl Board {
    /// A board of the site made of `zones` and `lines`, reading the engine through `registry`.
    pub fn new(
        registry: Arc<Registry>,
        progress: Arc<crate::app::Progress>,
        zones: &[Zone],
        lines: &[GateLine],
    ) -> Self {
        let site = json!({
            "zones": zones.iter().map(|z| json!({
                "zone_id": z.id, "name": z.name, "polygon": z.polygon, "cameras": z.cameras,
                "alert_density": z.alert_density, "area_m2": area(&z.polygon),
            })).collect::<Vec<_>>(),
            "lines": lines.iter().map(|l| json!({
                "line_id": l.id, "name": l.name, "from": l.from, "to": l.to, "in_side": l.in_side,
                "width_m": l.width(),
            })).collect::<Vec<_>>(),
        });
        Self {
            registry,
            progress,
            site,
            lines: lines.to_vec(),
            state: Mutex::new(State::default()),
            tx: broadcast::channel(BACKLOG).0,
        }
    }

    /// Whether `role` may see the board: whoever may read aggregates (not auditors).
    pub fn may_see(role: Role) -> bool {
        role.may_read(Class::Aggregate, false)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows the engine until the registry closes.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_slow = tokio::time::Instant::now() - Duration::from_secs(10);
        loop {
            tick.tick().await;
            let density = self.poll_density().await;
            // The rest follows the density's step (1 s), and at least every second.
            let slow_due = density || last_slow.elapsed() >= Duration::from_secs(1);
            let mut changed = density;
            if slow_due {
                last_slow = tokio::time::Instant::now();
                changed |= self.poll_rest().await;
            }
            if changed {
                self.publish();
            }
            if self.registry.is_closed() {
                return;
            }
        }
    }

    /// Runs one of the board's fixed queries; errors are logged (the board shows what it has).
    async fn query(&self, sql: &str) -> Option<Vec<serde_json::Map<String, Value>>> {
        match self.registry.query(sql, Role::Admin, "vigil").await {
            Ok((_, batches)) => Some(rows(&batches)),
            Err(e) => {
                tracing::debug!("board query failed: {e}: {sql}");
                None
            }
        }
    }

    /// New `zone_density` windows; true if there were any.
    async fn poll_density(&self) -> bool {
        let since = self.lock().now;
        let Some(new) = self
            .query(&format!(
                "SELECT zone_id, window_end, persons, density, level, cameras FROM zone_density \
                 WHERE window_end > to_timestamp_millis({since}) ORDER BY window_end"
            ))
            .await
        else {
            return false;
        };
        let mut s = self.lock();
        for r in &new {
            let (Some(zone), Some(end)) = (int(r, "zone_id"), int(r, "window_end")) else { continue };
            let zone = zone as u32;
            let now = ZoneNow {
                window_end: end,
                persons: float(r, "persons"),
                density: float(r, "density"),
                level: r.get("level").and_then(Value::as_str).unwrap_or("").to_owned(),
                cameras: int(r, "cameras").unwrap_or(0),
            };
            let h = s.history.entry(zone).or_default();
            h.push_back((end, now.density));
            while h.front().is_some_and(|(t, _)| *t <= end - HISTORY_MS) {
                h.pop_front();
            }
            s.fresh.push((zone, end, now.density));
            s.now = s.now.max(end);
            s.zones.insert(zone, now);
        }
        !new.is_empty()
    }

    /// The heatmap, flows, alerts and camera health; true if anything changed.
    async fn poll_rest(&self) -> bool {
        let (now, cursor) = {
            let s = self.lock();
            (s.now, s.health_cursor)
        };
        let mut changed = false;
        if let Some(grid) = self
            .query(
                "SELECT zone_id, window_end, cell_x, cell_y, density FROM density_grid \
                 WHERE window_end = (SELECT max(window_end) FROM density_grid)",
            )
            .await
        {
            let end = grid.first().and_then(|r| int(r, "window_end")).unwrap_or(0);
            let mut s = self.lock();
            if end != s.grid_end {
                s.grid_end = end;
                s.grid = grid
                    .iter()
                    .filter_map(|r| {
                        Some((
                            int(r, "zone_id")? as u32,
                            int(r, "cell_x")?,
                            int(r, "cell_y")?,
                            float(r, "density"),
                        ))
                    })
                    .collect();
                changed = true;
            }
        }
        if now > 0
            && let Some(flows) = self
                .query(&format!(
                    "SELECT line_id, direction, count(*) AS n FROM line_crossings \
                     WHERE event_time > to_timestamp_millis({}) GROUP BY line_id, direction",
                    now - FLOW_MS
                ))
                .await
        {
            let mut by: BTreeMap<u32, (i64, i64)> = BTreeMap::new();
            for r in &flows {
                let (Some(line), Some(n)) = (int(r, "line_id"), int(r, "n")) else { continue };
                let e = by.entry(line as u32).or_default();
                match r.get("direction").and_then(Value::as_str) {
                    Some("in") => e.0 += n,
                    _ => e.1 += n,
                }
            }
            let mut s = self.lock();
            if by != s.flows {
                s.flows = by;
                changed = true;
            }
        }
        if let Some(alerts) = self
            .query(
                "SELECT event_id, event_time, rule, severity, message FROM alerts \
                 WHERE kind = 'density' ORDER BY event_time",
            )
            .await
        {
            let mut s = self.lock();
            let oldest = alerts.first().and_then(|r| int(r, "event_time")).unwrap_or(i64::MAX);
            s.seen.retain(|_, t| *t >= oldest);
            for r in &alerts {
                let id = match r.get("event_id") {
                    Some(Value::String(v)) => v.clone(),
                    Some(v) => v.to_string(),
                    None => continue,
                };
                if s.seen.contains_key(&id) {
                    continue;
                }
                let at = int(r, "event_time").unwrap_or(0);
                s.seen.insert(id.clone(), at);
                let zone = r.get("rule").and_then(Value::as_str).unwrap_or("");
                let zone = zone.strip_prefix("zone:").unwrap_or(zone).to_owned();
                let message = r.get("message").and_then(Value::as_str).unwrap_or("").to_owned();
                if message.starts_with("raised") {
                    let severity = r.get("severity").and_then(Value::as_str).unwrap_or("").to_owned();
                    s.alerts.insert(zone, Standing { id, raised_at: at, severity, message, acked: None });
                } else if s.alerts.get(&zone).is_some_and(|a| a.raised_at <= at) {
                    s.alerts.remove(&zone);
                }
                changed = true;
            }
        }
        if let Some(health) = self
            .query(&format!(
                "SELECT camera_id, camera, state, fps_in, fps_out, frames_dropped, decode_errors, event_time \
                 FROM camera_health WHERE event_time > to_timestamp_millis({})",
                cursor - 3_000
            ))
            .await
        {
            let mut s = self.lock();
            for r in health {
                let (Some(camera), Some(at)) = (int(&r, "camera_id"), int(&r, "event_time")) else {
                    continue;
                };
                let newer = s.cameras.get(&(camera as u32)).and_then(|c| c.get("event_time")?.as_i64());
                if newer.is_none_or(|t| t < at) {
                    s.health_cursor = s.health_cursor.max(at);
                    s.cameras.insert(camera as u32, Value::Object(r));
                    changed = true;
                }
            }
        }
        changed
    }

    /// Acknowledges the alert `id` for `user`; false if no such alert stands.
    pub fn acknowledge(&self, id: &str, user: &str) -> bool {
        let at = crate::app::drive::wall_ms();
        let done = {
            let mut s = self.lock();
            s.alerts
                .values_mut()
                .find(|a| a.id == id)
                .map(|a| a.acked = Some((user.to_owned(), at)))
                .is_some()
        };
        if done {
            self.publish();
        }
        done
    }

    /// The whole board, with each zone's last hour: what a page starts from.
    pub fn snapshot(&self) -> (u64, Value) {
        let s = self.lock();
        let history: BTreeMap<String, Vec<[f64; 2]>> = s
            .history
            .iter()
            .map(|(z, h)| (z.to_string(), h.iter().map(|(t, d)| [*t as f64, *d]).collect()))
            .collect();
        let mut v = self.state_json(&s);
        v["history"] = json!(history);
        (s.seq, v)
    }

    /// Sends the current state to every page following, with the points added since the last.
    fn publish(&self) {
        let mut s = self.lock();
        s.seq += 1;
        let mut v = self.state_json(&s);
        v["points"] = json!(s.fresh.iter().map(|(z, t, d)| json!([z, t, d])).collect::<Vec<_>>());
        s.fresh.clear();
        let _ = self.tx.send((s.seq, Arc::from(v.to_string())));
    }

    /// Updates after the snapshot numbered `seq`.
    pub fn subscribe(&self) -> broadcast::Receiver<(u64, Arc<str>)> {
        self.tx.subscribe()
    }

    fn state_json(&self, s: &State) -> Value {
        let wall = crate::app::drive::wall_ms();
        json!({
            "seq": s.seq,
            "now": s.now,
            "sent_ms": wall,
            "clock_ms": self.progress.clock_ms.load(std::sync::atomic::Ordering::Relaxed),
            "site": self.site,
            "zones": s.zones.iter().map(|(id, z)| json!({
                "zone_id": id, "window_end": z.window_end, "persons": z.persons, "density": z.density,
                "level": z.level, "cameras": z.cameras,
            })).collect::<Vec<_>>(),
            "grid": { "window_end": s.grid_end,
                      "cells": s.grid.iter().map(|(z, x, y, d)| json!([z, x, y, d])).collect::<Vec<_>>() },
            "flows": self.lines.iter().map(|l| {
                let (i, o) = s.flows.get(&l.id).copied().unwrap_or_default();
                let per_min_per_m = (i + o) as f64 / (FLOW_MS as f64 / 60_000.0) / l.width().max(0.1);
                json!({ "line_id": l.id, "name": l.name, "in": i, "out": o, "width_m": l.width(),
                        "per_min_per_m": per_min_per_m, "capacity_ratio": per_min_per_m / GREEN_GUIDE })
            }).collect::<Vec<_>>(),
            "alerts": s.alerts.iter().map(|(zone, a)| json!({
                "id": a.id, "zone": zone, "raised_at": a.raised_at, "severity": a.severity,
                "message": a.message, "acked_by": a.acked.as_ref().map(|x| &x.0),
                "acked_at": a.acked.as_ref().map(|x| x.1),
            })).collect::<Vec<_>>(),
            "cameras": s.cameras.values().map(|c| {
                let mut c = c.clone();
                let at = c.get("event_time").and_then(Value::as_i64).unwrap_or(0);
                c["silent"] = json!(wall - at > SILENT_MS);
                c
            }).collect::<Vec<_>>(),
        })
    }
}

fn int(r: &serde_json::Map<String, Value>, k: &str) -> Option<i64> {
    match r.get(k)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn float(r: &serde_json::Map<String, Value>, k: &str) -> f64 {
    r.get(k).and_then(Value::as_f64).unwrap_or(0.0)
}

/// A polygon's area (shoelace), m².
fn area(p: &[[f64; 2]]) -> f64 {
    let n = p.len();
    (0..n).map(|i| p[i][0] * p[(i + 1) % n][1] - p[(i + 1) % n][0] * p[i][1]).sum::<f64>().abs() / 2.0
}

//! What `/metrics` serves: the engine's counters in Prometheus' text format (version 0.0.4),
//! rendered by the control loop once a second and read by the HTTP endpoint as they stand.
//!
//! Written out by hand rather than through a metrics crate: the counters already live where the
//! engine keeps them (ingest statistics, sinks, rules, retention), and the format is a few
//! lines of text; a registry would only copy them once more.

use std::collections::BTreeMap;
use std::fmt::Write;

/// One scrape's worth of values.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// On-time rows accepted, per stream.
    pub rows: BTreeMap<String, u64>,
    /// Late rows, per source (camera).
    pub late: BTreeMap<u32, u64>,
    /// Rows in committed Parquet files, per stream or rule.
    pub parquet_rows: BTreeMap<String, u64>,
    /// Rows never written (a disk that could not take them), per stream or rule.
    pub parquet_dropped: BTreeMap<String, u64>,
    /// Writers that cannot write now, per stream or rule.
    pub parquet_failing: BTreeMap<String, u64>,
    /// The clock less the watermark, ms.
    pub watermark_lag_ms: i64,
    /// Per rule: rows emitted, rows its operators hold, stopped, and how far its output trails
    /// the watermark (ms of event time; `None` once its input ended).
    pub rules: Vec<(String, u64, i64, bool, Option<i64>)>,
    /// Per camera, as its last health report has it.
    pub cameras: Vec<Camera>,
    /// Operator, sink and rule errors.
    pub errors: u64,
    /// Files retention deleted.
    pub deleted_files: u64,
    /// Bytes of the events kept in memory for backfill and psql (against `memory_mb`).
    pub retained_bytes: u64,
    /// The allocator's own figures, where the binary's allocator gives them.
    pub heap: Option<Heap>,
}

/// What the allocator holds: live allocations against the memory it keeps from the system.
/// Their difference is fragmentation and freed pages not yet returned; a resident set that
/// grows while `allocated` does not is the allocator's, not a structure that grows.
#[derive(Debug, Default, Clone, Copy)]
pub struct Heap {
    /// Bytes in live allocations.
    pub allocated: u64,
    /// Bytes of physical memory the allocator holds (its resident pages; an upper bound, as
    /// pages mapped but not yet touched count).
    pub resident: u64,
}

/// How the process reads [`Heap`]: set once by the binary, which chooses the allocator (the
/// library's tests run on the system's).
static HEAP_READER: std::sync::OnceLock<fn() -> Option<Heap>> = std::sync::OnceLock::new();

/// Sets how [`Heap`] is read (the first call wins).
pub fn set_heap_reader(read: fn() -> Option<Heap>) {
    let _ = HEAP_READER.set(read);
}

/// The allocator's figures now, if a reader was set.
pub fn heap() -> Option<Heap> {
    HEAP_READER.get().and_then(|read| read())
}

/// One camera's gauges and counters.
#[derive(Debug, Default)]
pub struct Camera {
    /// Its id.
    pub id: u32,
    /// Its name.
    pub name: String,
    /// Streaming now.
    pub up: bool,
    /// Frames received, since start.
    pub frames_in: u64,
    /// Frames passed on to analytics.
    pub frames_out: u64,
    /// Frames the detection stage dropped.
    pub frames_dropped: u64,
    /// Frames the decoder rejected.
    pub decode_errors: u64,
    /// Times it came back after a loss.
    pub reconnects: u64,
    /// Receive less capture time of its last frame, ms.
    pub lag_ms: Option<f64>,
}

/// How a camera family's value is read from a camera (`None`: no sample).
type CameraValue = fn(&Camera) -> Option<f64>;

fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The snapshot in Prometheus' text format.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    family(&mut out, "vigil_rows_ingested_total", "counter", "On-time rows accepted, per stream.");
    for (stream, n) in &s.rows {
        let _ = writeln!(out, "vigil_rows_ingested_total{{stream=\"{}\"}} {n}", label(stream));
    }
    family(
        &mut out,
        "vigil_late_rows_total",
        "counter",
        "Rows that arrived behind the watermark, per camera.",
    );
    for (camera, n) in &s.late {
        let _ = writeln!(out, "vigil_late_rows_total{{camera=\"{camera}\"}} {n}");
    }
    family(
        &mut out,
        "vigil_parquet_rows_total",
        "counter",
        "Rows in committed Parquet files since the process started, per stream or rule.",
    );
    for (prefix, n) in &s.parquet_rows {
        let _ = writeln!(out, "vigil_parquet_rows_total{{stream=\"{}\"}} {n}", label(prefix));
    }
    // Every stream that wrote or failed gets both, zero included: an alert needs the series.
    let sinks: std::collections::BTreeSet<&String> =
        s.parquet_rows.keys().chain(s.parquet_dropped.keys()).chain(s.parquet_failing.keys()).collect();
    let per_sink = [
        (
            "vigil_parquet_rows_dropped_total",
            "counter",
            "Rows never written since the process started (held past [sinks] hold_mb while the disk could not take them), per stream or rule.",
            &s.parquet_dropped,
        ),
        (
            "vigil_parquet_sink_failing",
            "gauge",
            "Writers of the stream or rule whose writes fail now (their rows are held and retried).",
            &s.parquet_failing,
        ),
    ];
    for (name, kind, help, values) in per_sink {
        family(&mut out, name, kind, help);
        for prefix in &sinks {
            let n = values.get(*prefix).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}{{stream=\"{}\"}} {n}", label(prefix));
        }
    }
    family(&mut out, "vigil_watermark_lag_seconds", "gauge", "How far the watermark is behind the clock.");
    let _ = writeln!(out, "vigil_watermark_lag_seconds {}", s.watermark_lag_ms.max(0) as f64 / 1000.0);
    family(&mut out, "vigil_rule_rows_total", "counter", "Rows each rule emitted.");
    for (rule, emitted, ..) in &s.rules {
        let _ = writeln!(out, "vigil_rule_rows_total{{rule=\"{}\"}} {emitted}", label(rule));
    }
    family(&mut out, "vigil_rule_state_rows", "gauge", "Rows each rule's operators hold.");
    for (rule, _, held, ..) in &s.rules {
        let _ = writeln!(out, "vigil_rule_state_rows{{rule=\"{}\"}} {held}", label(rule));
    }
    family(&mut out, "vigil_rule_stopped", "gauge", "1 when the rule was stopped (over its budget).");
    for (rule, _, _, stopped, _) in &s.rules {
        let _ = writeln!(out, "vigil_rule_stopped{{rule=\"{}\"}} {}", label(rule), u8::from(*stopped));
    }
    family(
        &mut out,
        "vigil_rule_lag_seconds",
        "gauge",
        "How far each rule's complete output trails the watermark (event time): its latency.",
    );
    for (rule, _, _, _, lag) in &s.rules {
        if let Some(lag) = lag {
            let _ =
                writeln!(out, "vigil_rule_lag_seconds{{rule=\"{}\"}} {}", label(rule), *lag as f64 / 1000.0);
        }
    }
    let cameras: [(&str, &str, &str, CameraValue); 7] = [
        ("vigil_camera_up", "gauge", "1 while the camera streams.", |c| Some(f64::from(u8::from(c.up)))),
        ("vigil_camera_frames_received_total", "counter", "Frames received.", |c| Some(c.frames_in as f64)),
        ("vigil_camera_frames_analysed_total", "counter", "Frames passed on to analytics.", |c| {
            Some(c.frames_out as f64)
        }),
        ("vigil_camera_frames_dropped_total", "counter", "Frames the detection stage dropped.", |c| {
            Some(c.frames_dropped as f64)
        }),
        ("vigil_camera_decode_errors_total", "counter", "Frames the decoder rejected.", |c| {
            Some(c.decode_errors as f64)
        }),
        ("vigil_camera_reconnects_total", "counter", "Times the camera came back.", |c| {
            Some(c.reconnects as f64)
        }),
        ("vigil_camera_lag_seconds", "gauge", "Receive less capture time of the last frame.", |c| {
            c.lag_ms.map(|l| l / 1000.0)
        }),
    ];
    if !s.cameras.is_empty() {
        for (name, kind, help, value) in cameras {
            family(&mut out, name, kind, help);
            for c in &s.cameras {
                if let Some(v) = value(c) {
                    let _ =
                        writeln!(out, "{name}{{camera=\"{}\",camera_id=\"{}\"}} {v}", label(&c.name), c.id);
                }
            }
        }
    }
    let heap = s.heap;
    let single: [(&str, &str, &str, Option<u64>); 6] = [
        ("vigil_errors_total", "counter", "Errors reported by operators, sinks and rules.", Some(s.errors)),
        (
            "vigil_retention_files_deleted_total",
            "counter",
            "Parquet files retention deleted.",
            Some(s.deleted_files),
        ),
        (
            "vigil_memory_retained_bytes",
            "gauge",
            "Bytes of events kept in memory for rule backfill and psql (bounded by [retention] memory_mb).",
            Some(s.retained_bytes),
        ),
        ("vigil_heap_allocated_bytes", "gauge", "Bytes in live heap allocations.", heap.map(|h| h.allocated)),
        (
            "vigil_heap_resident_bytes",
            "gauge",
            "Bytes of physical memory the allocator holds (live allocations, fragmentation, pages not yet returned).",
            heap.map(|h| h.resident),
        ),
        ("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", resident_bytes()),
    ];
    // A value not known (no allocator figures, no /proc): no series.
    for (name, kind, help, value) in single {
        if let Some(v) = value {
            family(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {v}");
        }
    }
    out
}

/// The process' resident memory, from /proc (Linux).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_every_family_is_declared_once() {
        let s = Snapshot {
            rows: [("detections".to_owned(), 7)].into(),
            rules: vec![("odd\"name\\".to_owned(), 3, 2, true, Some(1500))],
            cameras: vec![Camera {
                id: 3,
                name: "gate-a".into(),
                up: true,
                frames_in: 9,
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = render(&s);
        assert!(text.contains("vigil_rows_ingested_total{stream=\"detections\"} 7\n"), "{text}");
        assert!(text.contains("vigil_rule_stopped{rule=\"odd\\\"name\\\\\"} 1\n"), "{text}");
        assert!(text.contains("vigil_rule_lag_seconds{rule=\"odd\\\"name\\\\\"} 1.5\n"), "{text}");
        assert!(text.contains("vigil_camera_up{camera=\"gate-a\",camera_id=\"3\"} 1\n"), "{text}");
        assert!(!text.contains("vigil_camera_lag_seconds{"), "no lag known, no sample: {text}");
        assert!(!text.contains("vigil_heap_"), "no allocator figures, no series: {text}");
        let heap = render(&Snapshot {
            retained_bytes: 4096,
            heap: Some(Heap { allocated: 100, resident: 300 }),
            ..Default::default()
        });
        for line in [
            "vigil_memory_retained_bytes 4096\n",
            "vigil_heap_allocated_bytes 100\n",
            "vigil_heap_resident_bytes 300\n",
        ] {
            assert!(heap.contains(line), "{line} missing: {heap}");
        }
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE")).collect();
        // Sinks: each stream that wrote or failed has both series, zero included.
        let sinks = Snapshot {
            parquet_rows: [("tracks".to_owned(), 5)].into(),
            parquet_dropped: [("detections".to_owned(), 40)].into(),
            parquet_failing: [("detections".to_owned(), 1)].into(),
            ..Default::default()
        };
        let sinks = render(&sinks);
        for line in [
            "vigil_parquet_rows_dropped_total{stream=\"detections\"} 40\n",
            "vigil_parquet_rows_dropped_total{stream=\"tracks\"} 0\n",
            "vigil_parquet_sink_failing{stream=\"detections\"} 1\n",
            "vigil_parquet_sink_failing{stream=\"tracks\"} 0\n",
        ] {
            assert!(sinks.contains(line), "{line} missing: {sinks}");
        }
        let mut unique = types.clone();
        unique.dedup();
        assert_eq!(types.len(), unique.len());
    }
}

//! Zones: polygons on the ground (metres, city frame) and the lookup from a point to its zone.
//!
//! Zone membership runs once per detection at ingest, so the lookup is a bounding-box test
//! followed by an even-odd ray cast over a handful of vertices; no allocation.
//!
//! Zones are also a reference table ([`Zones`]) that SQL rules can join ([`to_batch`]).

use arrow::array::RecordBatch;
use vigil_engine::stream::Str;

vigil_engine::stream! {
    /// The configured zones, a reference table rules can join (`d.zone_id = z.zone_id`).
    pub struct Zones {
        name: "zones",
        class: Reference,
        keys: [zone_id],
        personal: [],
        row: ZoneRow,
        builder: ZoneRows,
        reader: ZoneCols,
        columns: {
            /// The zone's id.
            zone_id: u32,
            /// Its name.
            name: Str,
            /// Its first camera.
            camera_id: u32,
            /// Its area, m².
            area_m2: f64,
            /// The density that raises an alert, persons per m².
            alert_density: f64,
        }
    }
}

/// Zones as rows of the `zones` table.
pub fn to_batch(zones: &[Zone]) -> RecordBatch {
    let mut b = ZoneRows::default();
    for z in zones {
        b.push(&ZoneRow {
            zone_id: z.id,
            name: &z.name,
            camera_id: z.camera_id(),
            area_m2: z.area(),
            alert_density: z.alert_density,
        });
    }
    b.finish()
}

/// A zone as the operators need it.
#[derive(Clone, Debug, PartialEq)]
pub struct Zone {
    /// Stable id, used as the `zone_id` column.
    pub id: u32,
    /// Human name (`gate-a`).
    pub name: String,
    /// The cameras whose views cover it (at most 64); their people are fused.
    pub cameras: Vec<u32>,
    /// Vertices in metres, at least three, in order.
    pub polygon: Vec<[f64; 2]>,
    /// Density (persons per m²) held for the hold time before an alert is raised.
    pub alert_density: f64,
    /// Density below which (held for the hold time) a raised alert clears; below `alert_density`.
    pub clear_density: f64,
}

impl Zone {
    /// The zone's first camera: the `camera_id` of its rows.
    pub fn camera_id(&self) -> u32 {
        self.cameras.first().copied().unwrap_or(0)
    }

    /// Bounding box `[min_x, min_y, max_x, max_y]`.
    pub fn bbox(&self) -> [f64; 4] {
        self.polygon
            .iter()
            .fold([f64::INFINITY, f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY], |b, p| {
                [b[0].min(p[0]), b[1].min(p[1]), b[2].max(p[0]), b[3].max(p[1])]
            })
    }

    /// Area in m² by the shoelace formula.
    pub fn area(&self) -> f64 {
        let n = self.polygon.len();
        let twice: f64 = (0..n)
            .map(|i| {
                let (a, b) = (self.polygon[i], self.polygon[(i + 1) % n]);
                a[0] * b[1] - b[0] * a[1]
            })
            .sum();
        twice.abs() / 2.0
    }

    /// True when `p` lies inside the polygon (even-odd rule).
    pub fn contains(&self, p: [f64; 2]) -> bool {
        let n = self.polygon.len();
        let mut inside = false;
        let mut j = n - 1;
        for i in 0..n {
            let (a, b) = (self.polygon[i], self.polygon[j]);
            if (a[1] > p[1]) != (b[1] > p[1]) && p[0] < (b[0] - a[0]) * (p[1] - a[1]) / (b[1] - a[1]) + a[0] {
                inside = !inside;
            }
            j = i;
        }
        inside
    }
}

/// Finds the zone of a ground point, among the zones of one camera.
#[derive(Clone, Debug, Default)]
pub struct ZoneIndex {
    /// (zone, bounding box [min_x, min_y, max_x, max_y]).
    zones: Vec<(Zone, [f64; 4])>,
}

impl ZoneIndex {
    /// Indexes `zones`; polygons must have at least three vertices (checked by the config).
    pub fn new(zones: impl IntoIterator<Item = Zone>) -> Self {
        let zones = zones
            .into_iter()
            .map(|z| {
                let bb = z.bbox();
                (z, bb)
            })
            .collect();
        Self { zones }
    }

    /// The first zone containing `p`, if any.
    pub fn locate(&self, p: [f64; 2]) -> Option<&Zone> {
        self.zones
            .iter()
            .find(|(z, b)| p[0] >= b[0] && p[0] <= b[2] && p[1] >= b[1] && p[1] <= b[3] && z.contains(p))
            .map(|(z, _)| z)
    }

    /// The zones, in the order given.
    pub fn zones(&self) -> impl Iterator<Item = &Zone> {
        self.zones.iter().map(|(z, _)| z)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(id: u32, x: f64) -> Zone {
        Zone {
            id,
            name: format!("z{id}"),
            cameras: vec![0],
            polygon: vec![[x, 0.0], [x + 10.0, 0.0], [x + 10.0, 10.0], [x, 10.0]],
            alert_density: 1.0,
            clear_density: 0.8,
        }
    }

    #[test]
    fn area_and_containment() {
        let z = square(1, 0.0);
        assert_eq!(z.area(), 100.0);
        for (p, inside) in
            [([5.0, 5.0], true), ([10.5, 5.0], false), ([-0.1, 5.0], false), ([9.9, 9.9], true)]
        {
            assert_eq!(z.contains(p), inside, "{p:?}");
        }
        let tri = Zone { polygon: vec![[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]], ..square(2, 0.0) };
        assert_eq!(tri.area(), 8.0);
        assert!(tri.contains([1.0, 1.0]));
        assert!(!tri.contains([3.0, 3.0]));
    }

    #[test]
    fn index_locates_the_right_zone() {
        let idx = ZoneIndex::new([square(1, 0.0), square(2, 20.0)]);
        assert_eq!(idx.locate([25.0, 5.0]).map(|z| z.id), Some(2));
        assert_eq!(idx.locate([15.0, 5.0]).map(|z| z.id), None);
    }
}

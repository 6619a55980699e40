//! `vigil export`: one stream's committed rows over a time window, as one Parquet file for a
//! data team, pseudonymized so that a research export cannot be turned back into a
//! surveillance tool.
//!
//! A pseudonymized export, column by column (the stream's definition says which columns are
//! personal):
//! - plates, track ids and every row id (`event_id`, `hit_id`, `trigger_id`...) become
//!   HMAC-SHA256 tokens under a key drawn for this export and never stored: within one export
//!   the same plate has the same token (a study can follow it), across two exports nothing
//!   links (the keys differ), and nobody can hash candidate plates to find one;
//! - times are cut to `time_grain` (15 min by default) and places on the ground to a
//!   `place_grain` grid (10 m): the cell's centre;
//! - image coordinates (boxes, velocities in pixels), free text and snapshot paths are dropped:
//!   no images, and nothing that points at one;
//! - cells with fewer than `k` people (10 by default) are suppressed: for aggregates, a row whose
//!   `persons` is below `k`; for rows of people, every row of a (time, place, camera, zone) cell
//!   holding fewer than `k` distinct people (tracks or plates, else rows).
//!
//! Rows are read from the lake's committed files only ([`vigil_engine::lake`]), partitions
//! outside the window unopened. Each export is recorded in the audit log by the caller.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use arrow::array::{
    Array, ArrayRef, BooleanArray, Float32Array, Float64Array, RecordBatch, StringArray,
    TimestampMillisecondArray, UInt64Array,
};
use arrow::datatypes::{DataType, Schema, TimeUnit};
use hmac::{Hmac, KeyInit, Mac};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sha2::Sha256;
use vigil_engine::stream::StreamInfo;
use vigil_engine::time::Millis;

/// How an export coarsens and suppresses.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Times are cut to this grain (ms).
    pub time_grain_ms: Millis,
    /// Ground coordinates are cut to this grid (m).
    pub place_grain_m: f64,
    /// Least people in a cell.
    pub k: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Self { time_grain_ms: 15 * 60_000, place_grain_m: 10.0, k: 10 }
    }
}

/// What to export.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    /// The stream (its definition says which columns are personal).
    pub stream: &'a StreamInfo,
    /// The lake's root (`[sinks] out`).
    pub root: &'a Path,
    /// Event times `[from, to)`.
    pub from: Millis,
    /// End of the window (excluded).
    pub to: Millis,
    /// Where the export goes (created; must be empty or absent).
    pub out: &'a Path,
    /// Pseudonymize (see the module documentation); `None`: the rows as stored.
    pub pseudonymize: Option<Policy>,
}

/// What an export did.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Committed files read (those of the window's partitions).
    pub files: usize,
    /// Rows in the window.
    pub rows_in: usize,
    /// Rows written.
    pub rows_out: usize,
    /// Cells suppressed for holding fewer than k people, and their rows.
    pub cells_suppressed: usize,
    /// Rows of those cells.
    pub rows_suppressed: usize,
    /// Columns replaced by tokens, cut, and dropped.
    pub tokenized: Vec<String>,
    /// Columns coarsened.
    pub coarsened: Vec<String>,
    /// Columns dropped.
    pub dropped: Vec<String>,
    /// The Parquet file written.
    pub file: PathBuf,
}

/// The committed files of `dir` whose partition may hold rows of `[from, to)`.
pub fn files_in_window(dir: &Path, prefix: &str, from: Millis, to: Millis) -> anyhow::Result<Vec<PathBuf>> {
    // A partition holds rows from its start on; late rows go to later partitions, never earlier.
    // Its length is not in its name: an hour (the largest: a compacted hour) bounds it.
    Ok(vigil_engine::parquet_sink::list_files(dir)?
        .into_iter()
        .filter(|p| {
            vigil_engine::parquet_sink::partition_start(p, prefix)
                .is_some_and(|s| s < to && s + 3_600_000 > from)
        })
        .collect())
}

/// Calls `each` with the rows of `files` in `[from, to)`, batch by batch; `progress` after each
/// file.
fn read_window(
    files: &[PathBuf],
    (from, to): (Millis, Millis),
    mut each: impl FnMut(RecordBatch) -> anyhow::Result<()>,
    mut progress: impl FnMut(),
) -> anyhow::Result<()> {
    for path in files {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        for b in ParquetRecordBatchReaderBuilder::try_new(file)?.build()? {
            let b = b.with_context(|| format!("reading {}", path.display()))?;
            let times = vigil_engine::parquet_sink::event_times(&b)?;
            let keep: BooleanArray = times.iter().map(|&t| Some(t >= from && t < to)).collect();
            let b = arrow::compute::filter_record_batch(&b, &keep)?;
            if b.num_rows() > 0 {
                each(b)?;
            }
        }
        progress();
    }
    Ok(())
}

/// Runs the export; `progress(done, total)` is called after each file read. Rows stream from
/// the lake to the export batch by batch; a pseudonymized export of rows about people reads the
/// window twice (first to count the people of each cell, then to write), so memory holds the
/// cells' counts, never the window.
pub fn export(req: &Request<'_>, mut progress: impl FnMut(usize, usize)) -> anyhow::Result<Summary> {
    if req.to <= req.from {
        bail!("the window is empty: --to must be after --from");
    }
    if req.out.exists() && std::fs::read_dir(req.out)?.next().is_some() {
        bail!(
            "{} is not empty; fix: give a new directory to --out (an export never overwrites)",
            req.out.display()
        );
    }
    let dir = req.root.join(req.stream.name);
    let files = files_in_window(&dir, req.stream.name, req.from, req.to)?;
    let mut summary = Summary { files: files.len(), ..Summary::default() };
    let window = (req.from, req.to);
    let key = fresh_key()?;
    let pseudo = req.pseudonymize.as_ref().map(|policy| Pseudonymizer::new(req.stream, policy, &key));
    let aggregate = req.stream.schema.field_with_name("persons").is_ok();
    let passes = if pseudo.is_some() && !aggregate { 2 } else { 1 };
    let total = files.len() * passes;
    let mut done = 0;
    // Pass 1: the people of each cell.
    let mut small: std::collections::HashSet<u64> = Default::default();
    if let (Some(p), false) = (&pseudo, aggregate) {
        let mut people: HashMap<u64, std::collections::HashSet<u64>> = HashMap::new();
        let mut seen = 0;
        read_window(
            &files,
            window,
            |b| {
                let coarse = p.apply(&b)?;
                for (cell, who) in cells(&coarse).into_iter().zip(persons(&coarse, seen)) {
                    people.entry(cell).or_default().insert(who);
                }
                seen += coarse.num_rows() as u64;
                Ok(())
            },
            || {
                done += 1;
                progress(done, total);
            },
        )?;
        small = people.into_iter().filter(|(_, p)| (p.len() as u64) < p_k(&pseudo)).map(|(c, _)| c).collect();
        summary.cells_suppressed = small.len();
    }
    // Pass 2 (or the only one): write.
    std::fs::create_dir_all(req.out).with_context(|| format!("creating {}", req.out.display()))?;
    let file = req.out.join(format!("{}.parquet", req.stream.name));
    let tmp = req.out.join(format!(".{}.parquet.inprogress", req.stream.name));
    let props = vigil_engine::parquet_sink::writer_properties(&[]);
    let schema = match &pseudo {
        Some(p) => p.schema(),
        None => Arc::clone(&req.stream.schema),
    };
    let mut w = ArrowWriter::try_new(File::create(&tmp)?, Arc::clone(&schema), Some(props))?;
    let mut aggregate_cells_small = 0;
    read_window(
        &files,
        window,
        |b| {
            summary.rows_in += b.num_rows();
            let rows = match &pseudo {
                None => b,
                Some(p) => {
                    let coarse = p.apply(&b)?;
                    let keep: BooleanArray = if aggregate {
                        let keep = enough_persons(&coarse, p.policy.k)?;
                        aggregate_cells_small += keep.iter().filter(|v| *v == Some(false)).count();
                        keep
                    } else {
                        cells(&coarse).iter().map(|c| Some(!small.contains(c))).collect()
                    };
                    let kept = arrow::compute::filter_record_batch(&coarse, &keep)?;
                    summary.rows_suppressed += coarse.num_rows() - kept.num_rows();
                    kept
                }
            };
            summary.rows_out += rows.num_rows();
            if rows.num_rows() > 0 {
                w.write(&rows)?;
            }
            Ok(())
        },
        || {
            done += 1;
            progress(done, total);
        },
    )?;
    w.into_inner()?.sync_all()?;
    std::fs::rename(&tmp, &file)?;
    if aggregate {
        summary.cells_suppressed = aggregate_cells_small;
    }
    if let Some(p) = &pseudo {
        (summary.tokenized, summary.coarsened, summary.dropped) = p.columns();
    }
    summary.file = file;
    Ok(summary)
}

fn p_k(p: &Option<Pseudonymizer<'_>>) -> u64 {
    p.as_ref().map_or(0, |p| p.policy.k)
}

/// 32 bytes from the kernel's generator, held only while the export runs. (Read directly: the
/// workspace's `rand` is built without its OS source, and this is one read.)
fn fresh_key() -> anyhow::Result<[u8; 32]> {
    use std::io::Read;
    let mut key = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .context("drawing the export's key")?;
    Ok(key)
}

/// Columns that hold pixels or free text: dropped from pseudonymized exports.
const DROPPED: [&str; 11] =
    ["x", "y", "w", "h", "vx", "vy", "message", "snapshot", "plate_x", "plate_y", "plate_w"];

/// How a column is treated in a pseudonymized export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Treatment {
    Keep,
    Token,
    Time,
    Place,
    Drop,
}

fn treatment(stream: &StreamInfo, name: &str, ty: &DataType) -> Treatment {
    let personal = stream.personal.contains(&name);
    let id = name.ends_with("_id") && !matches!(name, "camera_id" | "zone_id" | "line_id");
    match ty {
        DataType::Timestamp(TimeUnit::Millisecond, _) => Treatment::Time,
        _ if name.starts_with("ground_") => Treatment::Place,
        _ if DROPPED.contains(&name) || name.contains("snapshot") || name.contains("image") => {
            Treatment::Drop
        }
        DataType::Utf8 | DataType::UInt64 if personal || id || name.starts_with("plate") => Treatment::Token,
        _ if name.starts_with("plate") || name == "char_confidences" => Treatment::Drop,
        _ if personal => Treatment::Drop,
        _ => Treatment::Keep,
    }
}

/// The per-column treatment of a stream, with the export's key.
struct Pseudonymizer<'a> {
    plan: Vec<(arrow::datatypes::FieldRef, Treatment)>,
    policy: &'a Policy,
    mac: Hmac<Sha256>,
}

impl<'a> Pseudonymizer<'a> {
    fn new(stream: &StreamInfo, policy: &'a Policy, key: &[u8; 32]) -> Self {
        let plan = stream
            .schema
            .fields()
            .iter()
            .map(|f| (Arc::clone(f), treatment(stream, f.name(), f.data_type())))
            .collect();
        Self { plan, policy, mac: Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length") }
    }

    /// The export's schema: the stream's, less the dropped columns.
    fn schema(&self) -> arrow::datatypes::SchemaRef {
        let fields: Vec<_> = self
            .plan
            .iter()
            .filter(|(_, t)| *t != Treatment::Drop)
            .map(|(f, _)| f.as_ref().clone())
            .collect();
        Arc::new(Schema::new(fields))
    }

    /// The columns tokenized, coarsened and dropped.
    fn columns(&self) -> (Vec<String>, Vec<String>, Vec<String>) {
        let names = |want: &[Treatment]| {
            self.plan.iter().filter(|(_, t)| want.contains(t)).map(|(f, _)| f.name().clone()).collect()
        };
        (names(&[Treatment::Token]), names(&[Treatment::Time, Treatment::Place]), names(&[Treatment::Drop]))
    }

    fn token(&self, bytes: &[u8]) -> [u8; 32] {
        let mut m = self.mac.clone();
        m.update(bytes);
        m.finalize().into_bytes().into()
    }

    /// `rows` with ids tokenized, time and place coarsened, pixels and text dropped (no
    /// suppression: see [`cells`]).
    fn apply(&self, rows: &RecordBatch) -> anyhow::Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = Vec::new();
        for (field, treatment) in &self.plan {
            let name = field.name();
            let col = rows.column_by_name(name).with_context(|| format!("no column {name}"))?;
            let new: ArrayRef = match treatment {
                Treatment::Keep => Arc::clone(col),
                Treatment::Drop => continue,
                Treatment::Token => {
                    if let Some(s) = col.as_any().downcast_ref::<StringArray>() {
                        let hex = |t: &[u8]| t[..16].iter().map(|b| format!("{b:02x}")).collect::<String>();
                        Arc::new(
                            s.iter()
                                .map(|v| v.map(|v| hex(&self.token(v.as_bytes()))))
                                .collect::<StringArray>(),
                        )
                    } else {
                        let u = col.as_any().downcast_ref::<UInt64Array>().context("a u64 id column")?;
                        let word = |t: [u8; 32]| u64::from_le_bytes(t[..8].try_into().expect("8 bytes"));
                        Arc::new(
                            u.iter()
                                .map(|v| v.map(|v| word(self.token(&v.to_le_bytes()))))
                                .collect::<UInt64Array>(),
                        )
                    }
                }
                Treatment::Time => {
                    let t =
                        col.as_any().downcast_ref::<TimestampMillisecondArray>().context("a timestamp")?;
                    let g = self.policy.time_grain_ms.max(1);
                    let cut: TimestampMillisecondArray =
                        t.iter().map(|v| v.map(|v| v.div_euclid(g) * g)).collect();
                    Arc::new(cut.with_timezone_opt(t.timezone().map(str::to_owned)))
                }
                Treatment::Place => {
                    let g = self.policy.place_grain_m.max(0.01);
                    let cell = |v: f64| if v.is_finite() { ((v / g).floor() + 0.5) * g } else { v };
                    if let Some(a) = col.as_any().downcast_ref::<Float32Array>() {
                        Arc::new(
                            a.iter().map(|v| v.map(|v| cell(f64::from(v)) as f32)).collect::<Float32Array>(),
                        )
                    } else {
                        let a = col.as_any().downcast_ref::<Float64Array>().context("a coordinate")?;
                        Arc::new(a.iter().map(|v| v.map(cell)).collect::<Float64Array>())
                    }
                }
            };
            columns.push(new);
        }
        Ok(RecordBatch::try_new(self.schema(), columns)?)
    }
}

/// An aggregate's rows with at least `k` persons.
fn enough_persons(rows: &RecordBatch, k: u64) -> anyhow::Result<BooleanArray> {
    let persons = rows.column_by_name("persons").context("persons")?;
    let p = arrow::compute::cast(persons, &DataType::Float64)?;
    let p = p.as_any().downcast_ref::<Float64Array>().context("persons")?;
    Ok(p.iter().map(|v| Some(v.is_some_and(|v| v >= k as f64))).collect())
}

fn hash(parts: impl Iterator<Item = String>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    for p in parts {
        p.hash(&mut h);
    }
    h.finish()
}

/// Each coarse row's cell: its (time, camera, zone, place), hashed.
fn cells(rows: &RecordBatch) -> Vec<u64> {
    let quasi: Vec<&ArrayRef> = ["event_time", "camera_id", "zone_id", "ground_x", "ground_y"]
        .iter()
        .filter_map(|c| rows.column_by_name(c))
        .collect();
    (0..rows.num_rows()).map(|i| hash(quasi.iter().map(|c| display(c, i)))).collect()
}

/// Each row's person: its (tokenized) track or plate, else the row itself (`first` numbers the
/// rows across batches).
fn persons(rows: &RecordBatch, first: u64) -> Vec<u64> {
    let person = ["track_id", "plate", "plate_raw"].iter().find_map(|c| rows.column_by_name(c));
    (0..rows.num_rows())
        .map(|i| match person {
            Some(c) => hash(std::iter::once(display(c, i))),
            None => hash(std::iter::once(format!("row {}", first + i as u64))),
        })
        .collect()
}

fn display(c: &ArrayRef, i: usize) -> String {
    arrow::util::display::array_value_to_string(c, i).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_engine::stream::StreamDef;
    use vigil_operators::plate::{PlateRead, PlateReadRows, PlateReads};

    #[test]
    fn plates_become_tokens_that_differ_between_exports_and_small_cells_go() {
        let lake = tempfile::tempdir().unwrap();
        let t0 = 1_781_467_200_000i64; // 2026-06-14T20:00:00Z
        // Camera 1: twelve plates in one quarter hour; camera 2: three.
        let plates: Vec<String> = (0..15).map(|i| format!("{i}-أ-6")).collect();
        let mut rows = PlateReadRows::default();
        for (i, plate) in plates.iter().enumerate() {
            rows.push(&PlateRead {
                camera_id: if i < 12 { 1 } else { 2 },
                event_time: t0 + i as i64 * 1000,
                event_id: i as u64,
                plate_raw: plate,
                plate: Some(plate),
                confidence: 0.9,
                char_confidences: None,
                plate_x: Some(10.0),
                plate_y: None,
                plate_w: None,
                plate_h: None,
            });
        }
        let batch = rows.finish();
        let part = lake.path().join("plate_reads/date=2026-06-14/hour=20");
        std::fs::create_dir_all(&part).unwrap();
        let mut w = ArrowWriter::try_new(
            File::create(part.join("plate_reads-20260614T200000Z-e1-w0.parquet")).unwrap(),
            batch.schema(),
            None,
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let info = PlateReads::info();
        let policy = Policy::default();
        let run = |out: &str| {
            let out = lake.path().join(out);
            let req = Request {
                stream: info,
                root: lake.path(),
                from: t0,
                to: t0 + 3_600_000,
                out: &out,
                pseudonymize: Some(policy.clone()),
            };
            let s = export(&req, |_, _| {}).unwrap();
            let f = File::open(&s.file).unwrap();
            let read: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(f)
                .unwrap()
                .build()
                .unwrap()
                .map(Result::unwrap)
                .collect();
            (arrow::compute::concat_batches(&read[0].schema(), &read).unwrap(), s)
        };
        let (a, sa) = run("a");
        let (b, _) = run("b");
        assert_eq!(a.num_rows(), 12, "camera 2's cell holds 3 people, fewer than 10");
        assert_eq!((sa.rows_in, sa.cells_suppressed, sa.rows_suppressed), (15, 1, 3));
        let tokens = |r: &RecordBatch| -> Vec<String> {
            let c = r.column_by_name("plate").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
            c.iter().map(|v| v.unwrap().to_owned()).collect()
        };
        let (ta, tb) = (tokens(&a), tokens(&b));
        assert!(ta.iter().all(|t| t.len() == 32 && !plates.contains(t)));
        assert!(ta.iter().all(|t| !tb.contains(t)), "two exports, no token in common");
        let times = a
            .column_by_name("event_time")
            .unwrap()
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .unwrap();
        assert!(times.iter().all(|t| t == Some(t0 - t0.rem_euclid(900_000))));
        assert!(sa.tokenized.contains(&"event_id".to_owned()));
        assert!(a.column_by_name("plate_x").is_none() && sa.dropped.contains(&"plate_x".to_owned()));
        // An existing export is never overwritten.
        let again = Request {
            stream: info,
            root: lake.path(),
            from: t0,
            to: t0 + 1,
            out: &lake.path().join("a"),
            pseudonymize: None,
        };
        assert!(export(&again, |_, _| {}).unwrap_err().to_string().contains("is not empty"));
    }
}

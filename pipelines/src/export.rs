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

use std::collections::{BTreeMap, HashMap};
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

/// Runs the export; `progress(done, total)` is called after each file read.
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
    let mut batches = Vec::new();
    for (i, path) in files.iter().enumerate() {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        for b in ParquetRecordBatchReaderBuilder::try_new(file)?.build()? {
            let b = b.with_context(|| format!("reading {}", path.display()))?;
            let times = vigil_engine::parquet_sink::event_times(&b)?;
            let keep: BooleanArray = times.iter().map(|&t| Some(t >= req.from && t < req.to)).collect();
            let b = arrow::compute::filter_record_batch(&b, &keep)?;
            if b.num_rows() > 0 {
                summary.rows_in += b.num_rows();
                batches.push(b);
            }
        }
        progress(i + 1, files.len());
    }
    let schema = batches.first().map_or_else(|| Arc::clone(&req.stream.schema), |b| b.schema());
    let mut rows = arrow::compute::concat_batches(&schema, &batches)?;
    if let Some(policy) = &req.pseudonymize {
        rows = pseudonymize(req.stream, &rows, policy, &fresh_key()?, &mut summary)?;
    }
    summary.rows_out = rows.num_rows();
    std::fs::create_dir_all(req.out).with_context(|| format!("creating {}", req.out.display()))?;
    let file = req.out.join(format!("{}.parquet", req.stream.name));
    let props = vigil_engine::parquet_sink::writer_properties(&[]);
    let tmp = req.out.join(format!(".{}.parquet.inprogress", req.stream.name));
    let mut w = ArrowWriter::try_new(File::create(&tmp)?, rows.schema(), Some(props))?;
    w.write(&rows)?;
    w.into_inner()?.sync_all()?;
    std::fs::rename(&tmp, &file)?;
    summary.file = file;
    Ok(summary)
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

fn pseudonymize(
    stream: &StreamInfo,
    rows: &RecordBatch,
    policy: &Policy,
    key: &[u8; 32],
    summary: &mut Summary,
) -> anyhow::Result<RecordBatch> {
    let mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    let token = |bytes: &[u8]| {
        let mut m = mac.clone();
        m.update(bytes);
        m.finalize().into_bytes()
    };
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (field, col) in rows.schema().fields().iter().zip(rows.columns()) {
        let name = field.name().as_str();
        let new: ArrayRef = match treatment(stream, name, field.data_type()) {
            Treatment::Keep => Arc::clone(col),
            Treatment::Drop => {
                summary.dropped.push(name.to_owned());
                continue;
            }
            Treatment::Token => {
                summary.tokenized.push(name.to_owned());
                if let Some(s) = col.as_any().downcast_ref::<StringArray>() {
                    let hex = |t: &[u8]| t[..16].iter().map(|b| format!("{b:02x}")).collect::<String>();
                    Arc::new(s.iter().map(|v| v.map(|v| hex(&token(v.as_bytes())))).collect::<StringArray>())
                } else {
                    let u = col.as_any().downcast_ref::<UInt64Array>().context("a u64 id column")?;
                    let word = |t: &[u8]| u64::from_le_bytes(t[..8].try_into().expect("8 bytes"));
                    Arc::new(
                        u.iter().map(|v| v.map(|v| word(&token(&v.to_le_bytes())))).collect::<UInt64Array>(),
                    )
                }
            }
            Treatment::Time => {
                summary.coarsened.push(name.to_owned());
                let t = col.as_any().downcast_ref::<TimestampMillisecondArray>().context("a timestamp")?;
                let g = policy.time_grain_ms.max(1);
                let cut: TimestampMillisecondArray =
                    t.iter().map(|v| v.map(|v| v.div_euclid(g) * g)).collect();
                Arc::new(cut.with_timezone_opt(t.timezone().map(str::to_owned)))
            }
            Treatment::Place => {
                summary.coarsened.push(name.to_owned());
                let g = policy.place_grain_m.max(0.01);
                let cell = |v: f64| if v.is_finite() { ((v / g).floor() + 0.5) * g } else { v };
                if let Some(a) = col.as_any().downcast_ref::<Float32Array>() {
                    Arc::new(a.iter().map(|v| v.map(|v| cell(f64::from(v)) as f32)).collect::<Float32Array>())
                } else {
                    let a = col.as_any().downcast_ref::<Float64Array>().context("a coordinate")?;
                    Arc::new(a.iter().map(|v| v.map(cell)).collect::<Float64Array>())
                }
            }
        };
        fields.push(field.as_ref().clone());
        columns.push(new);
    }
    let coarse = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
    suppress_small_cells(&coarse, policy.k, summary)
}

/// Removes the cells holding fewer than `k` people (see the module documentation).
fn suppress_small_cells(rows: &RecordBatch, k: u64, summary: &mut Summary) -> anyhow::Result<RecordBatch> {
    let n = rows.num_rows();
    let keep: BooleanArray = if let Some(persons) = rows.column_by_name("persons") {
        // An aggregate: each row is a cell.
        let p = arrow::compute::cast(persons, &DataType::Float64)?;
        let p = p.as_any().downcast_ref::<Float64Array>().context("persons")?;
        let keep: BooleanArray = p.iter().map(|v| Some(v.is_some_and(|v| v >= k as f64))).collect();
        summary.cells_suppressed = keep.iter().filter(|v| *v == Some(false)).count();
        keep
    } else {
        // Rows of people: cells of the coarse time and place, camera and zone.
        let quasi: Vec<&ArrayRef> = ["event_time", "camera_id", "zone_id", "ground_x", "ground_y"]
            .iter()
            .filter_map(|c| rows.column_by_name(c))
            .collect();
        let person = ["track_id", "plate", "plate_raw"].iter().find_map(|c| rows.column_by_name(c));
        let cell_of: Vec<String> =
            (0..n).map(|i| quasi.iter().map(|c| display(c, i)).collect::<Vec<_>>().join("|")).collect();
        let mut people: HashMap<&str, std::collections::HashSet<String>> = HashMap::new();
        for (i, cell) in cell_of.iter().enumerate() {
            let who = person.map_or_else(|| i.to_string(), |c| display(c, i));
            people.entry(cell).or_default().insert(who);
        }
        let small: BTreeMap<&str, usize> =
            people.iter().filter(|(_, p)| (p.len() as u64) < k).map(|(c, p)| (*c, p.len())).collect();
        summary.cells_suppressed = small.len();
        cell_of.iter().map(|c| Some(!small.contains_key(c.as_str()))).collect()
    };
    let out = arrow::compute::filter_record_batch(rows, &keep)?;
    summary.rows_suppressed = n - out.num_rows();
    Ok(out)
}

fn display(c: &ArrayRef, i: usize) -> String {
    arrow::util::display::array_value_to_string(c, i).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_engine::stream::StreamDef;
    use vigil_operators::plate::PlateReads;

    #[test]
    fn plates_become_tokens_that_differ_between_keys_and_small_cells_go() {
        let info = PlateReads::info();
        let t0 = 1_781_467_200_000i64;
        let schema = Arc::new(Schema::new(vec![
            arrow::datatypes::Field::new(
                "event_time",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
            arrow::datatypes::Field::new("camera_id", DataType::UInt32, false),
            arrow::datatypes::Field::new("event_id", DataType::UInt64, false),
            arrow::datatypes::Field::new("plate", DataType::Utf8, true),
        ]));
        // Camera 1: twelve plates in one quarter hour; camera 2: three.
        let cams: Vec<u32> = (0..15).map(|i| if i < 12 { 1 } else { 2 }).collect();
        let plates: Vec<String> = (0..15).map(|i| format!("{i}-أ-6")).collect();
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(
                    TimestampMillisecondArray::from((0..15).map(|i| t0 + i * 1000).collect::<Vec<_>>())
                        .with_timezone("UTC"),
                ),
                Arc::new(arrow::array::UInt32Array::from(cams)),
                Arc::new(UInt64Array::from((0..15u64).collect::<Vec<_>>())),
                Arc::new(StringArray::from(plates.iter().map(String::as_str).collect::<Vec<_>>())),
            ],
        )
        .unwrap();
        let policy = Policy::default();
        let run = |key: [u8; 32]| {
            let mut s = Summary::default();
            let out = pseudonymize(info, &batch, &policy, &key, &mut s).unwrap();
            (out, s)
        };
        let (a, sa) = run([1; 32]);
        let (b, _) = run([2; 32]);
        assert_eq!(a.num_rows(), 12, "camera 2's cell holds 3 people, fewer than 10");
        assert_eq!((sa.cells_suppressed, sa.rows_suppressed), (1, 3));
        let tokens = |r: &RecordBatch| -> Vec<String> {
            let c = r.column_by_name("plate").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
            c.iter().map(|v| v.unwrap().to_owned()).collect()
        };
        let (ta, tb) = (tokens(&a), tokens(&b));
        assert!(ta.iter().all(|t| t.len() == 32 && !plates.contains(t)));
        assert!(ta.iter().all(|t| !tb.contains(t)), "two keys, no token in common");
        let times = a
            .column_by_name("event_time")
            .unwrap()
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .unwrap();
        assert!(times.iter().all(|t| t == Some(t0 - t0.rem_euclid(900_000))));
        assert!(sa.tokenized.contains(&"event_id".to_owned()));
    }
}

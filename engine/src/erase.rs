//! Erasure of selected rows, wherever the engine keeps them on disk: Parquet files rewritten without them.
//!
//! A person's request to erase their data (law 09-08, art. 8) names rows, not files: the rows
//! of one licence plate are spread over many partitions, among other people's rows. [`erase`]
//! rewrites each file that holds such rows without them (written under a hidden name, synced,
//! then renamed over the original, so a reader never sees half a file and a crash leaves the
//! old file or the new one), and deletes a file left empty. [`select`] reads the rows a filter
//! keeps and [`count`] counts them, for listing what is held; a file whose columns the filter
//! does not look at is skipped from its footer. Memory has its counterpart in
//! [`Retained::erase`](crate::share::Retained::erase).

use std::fs::File;
use std::path::Path;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{EngineError, Result};
use crate::parquet_sink::list_files;

fn arrow_err(context: &str) -> impl Fn(arrow::error::ArrowError) -> EngineError + '_ {
    move |source| EngineError::Arrow { context: context.to_owned(), source }
}

fn parquet_err(path: &Path) -> impl Fn(parquet::errors::ParquetError) -> EngineError + '_ {
    move |source| EngineError::Parquet { context: format!("rewriting {}", path.display()), source }
}

/// Which rows of a batch a request selects (`true`), or `None` when the batch has none of the
/// columns the request looks at.
pub type Selector<'a> = &'a dyn Fn(&RecordBatch) -> Option<BooleanArray>;

/// The batches of the file at `path`, or `None` when `selected` looks at none of its columns:
/// the selector is asked about an empty batch of the file's schema, read from the footer, so a
/// stream that cannot hold what a request looks for (a city's detections, say, for a plate) is
/// never decoded. Batches are read one at a time.
fn batches<'p>(
    path: &'p Path,
    selected: Selector<'_>,
) -> Result<Option<impl Iterator<Item = Result<RecordBatch>> + use<'p>>> {
    let err = |e: parquet::errors::ParquetError| EngineError::io("reading", path, std::io::Error::other(e));
    let file = match File::open(path) {
        Ok(f) => f,
        // Retention deleted it since the listing: its rows are gone, as they should be.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(EngineError::io("opening", path, e)),
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(err)?;
    if selected(&RecordBatch::new_empty(builder.schema().clone())).is_none() {
        return Ok(None);
    }
    let reader = builder.with_batch_size(8_192).build().map_err(err)?;
    Ok(Some(reader.map(move |b| b.map_err(|e| EngineError::io("reading", path, std::io::Error::other(e))))))
}

/// A lake's lock on `dir` while its files are read, so that no compaction swaps them midway
/// (a row read twice or not at all); none for a directory that is not a lake's (an export).
fn read_lock(dir: &Path) -> Result<Option<File>> {
    match dir.join(crate::lake::LOG_DIR).is_dir() {
        true => crate::lake::lock(dir).map(Some),
        false => Ok(None),
    }
}

/// The rows `selected` picks in the Parquet files directly under `dir`.
pub fn select(dir: &Path, selected: Selector<'_>) -> Result<Vec<RecordBatch>> {
    let _lock = read_lock(dir)?;
    let mut out = Vec::new();
    for path in list_files(dir)? {
        let Some(file) = batches(&path, selected)? else { continue };
        for b in file {
            let b = b?;
            let Some(mask) = selected(&b) else { break };
            let rows = filter_record_batch(&b, &mask).map_err(arrow_err("selecting rows"))?;
            if rows.num_rows() > 0 {
                out.push(rows);
            }
        }
    }
    Ok(out)
}

/// How many rows `selected` picks in the Parquet files directly under `dir`, a batch at a time.
pub fn count(dir: &Path, selected: Selector<'_>) -> Result<usize> {
    let _lock = read_lock(dir)?;
    let mut n = 0;
    for path in list_files(dir)? {
        n += count_file(&path, selected)?;
    }
    Ok(n)
}

fn count_file(path: &Path, selected: Selector<'_>) -> Result<usize> {
    let mut n = 0;
    let Some(file) = batches(path, selected)? else { return Ok(0) };
    for b in file {
        let Some(mask) = selected(&b?) else { break };
        n += mask.true_count();
    }
    Ok(n)
}

/// The rows a selection leaves (a null counts as not selected).
pub fn unselected(mask: &BooleanArray) -> BooleanArray {
    mask.iter().map(|v| Some(v != Some(true))).collect()
}

/// What [`erase`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Erased {
    /// Files rewritten without the rows.
    pub rewritten: usize,
    /// Files deleted (every row was selected).
    pub deleted: usize,
    /// Rows erased.
    pub rows: usize,
}

/// Rewrites each Parquet file directly under `dir` that holds rows `selected` picks, without
/// them.
pub fn erase(dir: &Path, selected: Selector<'_>) -> Result<Erased> {
    let mut done = Erased::default();
    // No compaction reads a file while it is rewritten (it would put the rows back).
    let _lock = if dir.is_dir() { Some(crate::lake::lock(dir)?) } else { None };
    for path in list_files(dir)? {
        // A first pass counts, so only a file that holds selected rows is rewritten; both
        // passes hold one batch at a time.
        let removed = count_file(&path, selected)?;
        if removed == 0 {
            continue;
        }
        done.rows += removed;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        let tmp = path.with_file_name(format!(".{name}.erasing"));
        let mut writer: Option<ArrowWriter<File>> = None;
        for b in batches(&path, selected)?.into_iter().flatten() {
            let b = b?;
            let mask = selected(&b).unwrap_or_else(|| BooleanArray::from(vec![false; b.num_rows()]));
            let keep = filter_record_batch(&b, &unselected(&mask)).map_err(arrow_err("erasing rows"))?;
            if keep.num_rows() == 0 {
                continue;
            }
            let w = match &mut writer {
                Some(w) => w,
                None => {
                    let file = File::create(&tmp).map_err(|e| EngineError::io("creating", &tmp, e))?;
                    writer
                        .insert(ArrowWriter::try_new(file, keep.schema(), None).map_err(parquet_err(&path))?)
                }
            };
            w.write(&keep).map_err(parquet_err(&path))?;
        }
        let Some(w) = writer else {
            std::fs::remove_file(&path).map_err(|e| EngineError::io("removing", &path, e))?;
            done.deleted += 1;
            continue;
        };
        let file = w.into_inner().map_err(parquet_err(&path))?;
        file.sync_all().map_err(|e| EngineError::io("syncing", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| EngineError::io("renaming", &tmp, e))?;
        done.rewritten += 1;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn write(path: &Path, plates: &[&str]) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("plate", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
        ]));
        let b = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(plates.to_vec())),
                Arc::new(Int64Array::from((0..plates.len() as i64).collect::<Vec<_>>())),
            ],
        )
        .unwrap();
        let mut w = ArrowWriter::try_new(File::create(path).unwrap(), schema, None).unwrap();
        w.write(&b).unwrap();
        w.close().unwrap();
    }

    #[test]
    fn only_the_selected_rows_go_and_files_left_empty_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("a.parquet"), &["x", "y", "x"]);
        write(&dir.path().join("b.parquet"), &["x"]);
        write(&dir.path().join("c.parquet"), &["z"]);
        let is_x = |b: &RecordBatch| {
            let c = b.column_by_name("plate")?.as_any().downcast_ref::<StringArray>()?;
            Some(c.iter().map(|v| Some(v == Some("x"))).collect::<BooleanArray>())
        };
        assert_eq!(select(dir.path(), &is_x).unwrap().iter().map(|b| b.num_rows()).sum::<usize>(), 3);
        let done = erase(dir.path(), &is_x).unwrap();
        assert_eq!(done, Erased { rewritten: 1, deleted: 1, rows: 3 });
        let all = |b: &RecordBatch| Some(BooleanArray::from(vec![true; b.num_rows()]));
        assert_eq!(count(dir.path(), &is_x).unwrap(), 0);
        let left: Vec<String> = select(dir.path(), &all)
            .unwrap()
            .iter()
            .flat_map(|b| {
                let c = b.column(0).as_any().downcast_ref::<StringArray>().unwrap().clone();
                c.iter().map(|v| v.unwrap().to_owned()).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(left, ["y", "z"]);
        // Nothing hidden is left behind (beside the lake's log, which holds the lock).
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.iter().filter(|n| *n != crate::lake::LOG_DIR).count(), 2, "{names:?}");
    }

    #[test]
    fn a_file_without_the_columns_a_request_looks_at_is_never_decoded() {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("a.parquet"), &["x", "y"]);
        // A selector on a column the file does not have: asked only about the schema.
        let seen = std::cell::Cell::new(0);
        let on_other = |b: &RecordBatch| {
            seen.set(seen.get() + b.num_rows());
            let c = b.column_by_name("listed_plate")?.as_any().downcast_ref::<StringArray>()?;
            Some(c.iter().map(|v| Some(v == Some("x"))).collect::<BooleanArray>())
        };
        assert!(select(dir.path(), &on_other).unwrap().is_empty());
        assert_eq!(count(dir.path(), &on_other).unwrap(), 0);
        assert_eq!(erase(dir.path(), &on_other).unwrap(), Erased::default());
        assert_eq!(seen.get(), 0, "no row of the file was read");
        // The same file is read for a selector on its own column.
        let on_plate = |b: &RecordBatch| {
            seen.set(seen.get() + b.num_rows());
            let c = b.column_by_name("plate")?.as_any().downcast_ref::<StringArray>()?;
            Some(c.iter().map(|v| Some(v == Some("x"))).collect::<BooleanArray>())
        };
        assert_eq!(count(dir.path(), &on_plate).unwrap(), 1);
        assert_eq!(seen.get(), 2);
    }
}

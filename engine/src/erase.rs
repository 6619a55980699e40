//! Erasure of selected rows, wherever the engine keeps them on disk: Parquet files rewritten without them.
//!
//! A person's request to erase their data (law 09-08, art. 8) names rows, not files: the rows
//! of one licence plate are spread over many partitions, among other people's rows. [`erase`]
//! rewrites each file that holds such rows without them (written under a hidden name, synced,
//! then renamed over the original, so a reader never sees half a file and a crash leaves the
//! old file or the new one), and deletes a file left empty. [`select`] reads the rows a filter
//! keeps, for listing what is held. Memory has its counterpart in
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

fn read(path: &Path) -> Result<Vec<RecordBatch>> {
    let file = File::open(path).map_err(|e| EngineError::io("opening", path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| EngineError::io("reading", path, std::io::Error::other(e)))?;
    reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| EngineError::io("reading", path, std::io::Error::other(e)))
}

/// The rows `selected` picks in the Parquet files directly under `dir`.
pub fn select(dir: &Path, selected: Selector<'_>) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    for path in list_files(dir)? {
        for b in read(&path)? {
            let Some(mask) = selected(&b) else { break };
            let rows = filter_record_batch(&b, &mask).map_err(arrow_err("selecting rows"))?;
            if rows.num_rows() > 0 {
                out.push(rows);
            }
        }
    }
    Ok(out)
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
        let batches = read(&path)?;
        let mut kept = Vec::with_capacity(batches.len());
        let mut removed = 0;
        for b in &batches {
            let Some(mask) = selected(b) else { break };
            let keep =
                filter_record_batch(b, &crate::erase::unselected(&mask)).map_err(arrow_err("erasing rows"));
            let rows = keep?;
            removed += b.num_rows() - rows.num_rows();
            kept.push(rows);
        }
        if removed == 0 {
            continue;
        }
        done.rows += removed;
        if kept.iter().all(|b| b.num_rows() == 0) {
            std::fs::remove_file(&path).map_err(|e| EngineError::io("removing", &path, e))?;
            done.deleted += 1;
            continue;
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        let tmp = path.with_file_name(format!(".{name}.erasing"));
        let file = File::create(&tmp).map_err(|e| EngineError::io("creating", &tmp, e))?;
        let mut w = ArrowWriter::try_new(file, kept[0].schema(), None).map_err(parquet_err(&path))?;
        for b in kept.iter().filter(|b| b.num_rows() > 0) {
            w.write(b).map_err(parquet_err(&path))?;
        }
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
        let left: Vec<String> = list_files(dir.path())
            .unwrap()
            .iter()
            .flat_map(|p| read(p).unwrap())
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
}

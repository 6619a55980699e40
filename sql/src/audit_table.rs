//! The audit log as the `audit_log` table auditors query: one row per record, read from the
//! file when the query runs (so it is always the log as it stands).

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, StringBuilder, TimestampMillisecondBuilder, UInt64Builder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// The table's schema.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("seq", DataType::UInt64, false),
        Field::new("time", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        Field::new("actor", DataType::Utf8, false),
        Field::new("action", DataType::Utf8, false),
        Field::new("object", DataType::Utf8, false),
        Field::new("detail", DataType::Utf8, false),
        Field::new("hash", DataType::Utf8, false),
    ]))
}

/// The table's schema and its rows; `detail` is `key=value` pairs joined by `, `. Lines that are
/// not records are left out: `vigil audit verify` is what judges the chain.
pub fn read(path: &Path) -> Result<(SchemaRef, RecordBatch), String> {
    let schema = schema();
    let records = vigil_engine::audit::records(path).map_err(|e| e.to_string())?;
    let (mut seq, mut time) = (UInt64Builder::new(), TimestampMillisecondBuilder::new().with_timezone("UTC"));
    let mut text: [StringBuilder; 5] = std::array::from_fn(|_| StringBuilder::new());
    for (r, hash) in &records {
        seq.append_value(r.seq);
        time.append_value(r.time_ms);
        let detail: Vec<String> = r.detail.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for (b, v) in text.iter_mut().zip([&r.actor, &r.action, &r.object, &detail.join(", "), hash]) {
            b.append_value(v);
        }
    }
    let mut columns: Vec<Arc<dyn datafusion::arrow::array::Array>> =
        vec![Arc::new(seq.finish()), Arc::new(time.finish())];
    columns.extend(text.iter_mut().map(|b| Arc::new(b.finish()) as _));
    let rows = RecordBatch::try_new(Arc::clone(&schema), columns).map_err(|e| e.to_string())?;
    Ok((schema, rows))
}

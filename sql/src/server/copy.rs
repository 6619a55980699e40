//! `COPY (SELECT …) TO STDOUT`: a query's rows as PostgreSQL's COPY text or CSV, which is what
//! psql's `\copy (SELECT …) to 'hits.csv' with (format csv, header)` sends to write a file on
//! the analyst's machine.
//!
//! The query inside runs as the same `SELECT` would ([`crate::registry::Registry::query`]: the
//! role's tables, the memory and time limits), so a COPY reads nothing a SELECT could not.
//! `COPY name TO STDOUT` reads `SELECT * FROM name`. What would write or read on the server
//! (`TO 'file'`, `FROM`, `PROGRAM`) is refused with the form to use instead.

use bytes::Bytes;
use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::sql::sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use futures::StreamExt;
use pgwire::messages::copy::CopyData;

use super::SOURCE;
use super::types::write_pg_text;
use crate::error::{Kind, Position, SqlError};

/// How a COPY writes its rows.
#[derive(Debug, PartialEq, Eq)]
pub struct CopyOut {
    /// The query whose rows are written.
    pub query: String,
    /// CSV, or PostgreSQL's text format.
    pub csv: bool,
    /// A first line with the column names (CSV only, as in PostgreSQL).
    pub header: bool,
    pub delimiter: char,
    /// What a NULL is written as: `\N` in text, nothing in CSV.
    pub null: String,
}

const FIX: &str = "write COPY (SELECT …) TO STDOUT WITH (FORMAT csv, HEADER), or from psql \
                   \\copy (SELECT …) to 'file.csv' with (format csv, header)";

fn refused(kind: Kind, message: impl Into<String>, fix: impl Into<String>) -> SqlError {
    SqlError::user(Some(Position { source: SOURCE.into(), line: 1, column: 1 }), message, fix).kind(kind)
}

/// Reads a `COPY … TO STDOUT` statement; the error says what to write instead.
pub fn parse(text: &str) -> Result<CopyOut, SqlError> {
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, text)
        .map_err(|e| refused(Kind::Syntax, e.to_string(), FIX))?;
    let Some(Statement::Copy { source, to, target, options, legacy_options, .. }) = statements.pop() else {
        return Err(refused(Kind::Syntax, "not a COPY statement", FIX));
    };
    if !to {
        return Err(refused(
            Kind::Unsupported,
            "COPY … FROM loads nothing here",
            "add watchlist entries with INSERT INTO watchlist, or list a CSV as watchlist_csv in the configuration",
        ));
    }
    if target != CopyTarget::Stdout {
        return Err(refused(
            Kind::Unsupported,
            format!("COPY … TO {target} would write on the server"),
            "psql's \\copy (SELECT …) to 'file.csv' with (format csv, header) writes the file where psql runs",
        ));
    }
    let query = match source {
        CopySource::Query(q) => q.to_string(),
        CopySource::Table { table_name, columns } if columns.is_empty() => {
            format!("SELECT * FROM {table_name}")
        }
        CopySource::Table { table_name, columns } => {
            let names: Vec<String> = columns.iter().map(ToString::to_string).collect();
            format!("SELECT {} FROM {table_name}", names.join(", "))
        }
    };
    let (mut csv, mut header, mut delimiter, mut null) = (false, false, None, None);
    let unsupported =
        |what: String| refused(Kind::Unsupported, format!("COPY option {what} is not supported"), FIX);
    for o in options {
        match o {
            CopyOption::Format(f) if f.value.eq_ignore_ascii_case("csv") => csv = true,
            CopyOption::Format(f) if f.value.eq_ignore_ascii_case("text") => csv = false,
            CopyOption::Header(h) => header = h,
            CopyOption::Delimiter(d) => delimiter = Some(d),
            CopyOption::Null(n) => null = Some(n),
            other => return Err(unsupported(other.to_string())),
        }
    }
    for o in legacy_options {
        match o {
            CopyLegacyOption::Csv(csv_options) => {
                csv = true;
                for c in csv_options {
                    match c {
                        CopyLegacyCsvOption::Header => header = true,
                        other => return Err(unsupported(other.to_string())),
                    }
                }
            }
            CopyLegacyOption::Delimiter(d) => delimiter = Some(d),
            CopyLegacyOption::Null(n) => null = Some(n),
            other => return Err(unsupported(other.to_string())),
        }
    }
    if header && !csv {
        return Err(refused(Kind::Unsupported, "COPY's HEADER is for CSV only (as in PostgreSQL)", FIX));
    }
    let delimiter = delimiter.unwrap_or(if csv { ',' } else { '\t' });
    if matches!(delimiter, '\n' | '\r' | '"' | '\\') {
        return Err(refused(
            Kind::InvalidParameter,
            format!("COPY's delimiter cannot be {delimiter:?}"),
            FIX,
        ));
    }
    let null = null.unwrap_or_else(|| if csv { String::new() } else { "\\N".into() });
    Ok(CopyOut { query, csv, header, delimiter, null })
}

impl CopyOut {
    /// The CSV header's line (with HEADER), then every row's, one message each, formatted a
    /// batch at a time as they are sent.
    pub fn lines(
        self,
        schema: &SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> impl futures::Stream<Item = CopyData> + Send + 'static {
        let header = self.header.then(|| self.line(schema.fields().iter().map(|f| Some(f.name().clone()))));
        let rows = futures::stream::iter(batches).flat_map(move |b| futures::stream::iter(self.rows(&b)));
        futures::stream::iter(header).chain(rows)
    }

    fn rows(&self, b: &RecordBatch) -> Vec<CopyData> {
        self.rows_after(b, |_, _| {})
    }

    /// PostgreSQL's text format with its defaults (tab, `\N`), for rows written by vigil itself
    /// (`SUBSCRIBE`'s).
    pub(super) fn text() -> Self {
        Self { query: String::new(), csv: false, header: false, delimiter: '\t', null: "\\N".into() }
    }

    /// Row `i` of `b` for each row, its line opened by `prefix` (`SUBSCRIBE`'s time and diff).
    pub(super) fn rows_after(&self, b: &RecordBatch, prefix: impl Fn(usize, &mut String)) -> Vec<CopyData> {
        let options = FormatOptions::default();
        let formatters: Vec<_> =
            b.columns().iter().filter_map(|c| ArrayFormatter::try_new(c.as_ref(), &options).ok()).collect();
        let mut value = String::new();
        (0..b.num_rows())
            .map(|i| {
                // Each value is written into the line where it needs no quote or escape (most
                // do), through one buffer where it does: no `String` per value.
                let mut text = String::with_capacity(128);
                prefix(i, &mut text);
                for (k, (c, f)) in b.columns().iter().zip(&formatters).enumerate() {
                    if k > 0 {
                        text.push(self.delimiter);
                    }
                    if !c.is_valid(i) {
                        text.push_str(&self.null);
                        continue;
                    }
                    let start = text.len();
                    write_pg_text(&mut text, c.as_ref(), f, i);
                    if self.needs_care(&text[start..]) {
                        value.clear();
                        value.push_str(&text[start..]);
                        text.truncate(start);
                        self.push_field(&mut text, &value);
                    }
                }
                text.push('\n');
                CopyData::new(Bytes::from(text))
            })
            .collect()
    }

    /// One line: the cells, NULL as [`CopyOut::null`], between delimiters.
    fn line(&self, cells: impl Iterator<Item = Option<String>>) -> CopyData {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                text.push(self.delimiter);
            }
            match cell {
                None => text.push_str(&self.null),
                Some(v) => self.push_field(&mut text, &v),
            }
        }
        text.push('\n');
        CopyData::new(Bytes::from(text))
    }

    /// Whether value `v` is not written as it is: CSV quotes it, text escapes it.
    fn needs_care(&self, v: &str) -> bool {
        if self.csv && (v.is_empty() || v == self.null) {
            return true;
        }
        let special: &[char] = if self.csv { &['"', '\n', '\r'] } else { &['\\', '\n', '\r', '\t'] };
        if self.delimiter.is_ascii() {
            // Bytes, not chars: this runs for every value COPY sends.
            let d = self.delimiter as u8;
            v.bytes().any(|b| b == d || (b.is_ascii() && special.contains(&char::from(b))))
        } else {
            v.contains(self.delimiter) || v.contains(special)
        }
    }

    /// Appends value `v` to a line, quoted or escaped as it needs.
    fn push_field(&self, text: &mut String, v: &str) {
        match (self.csv, self.needs_care(v)) {
            (_, false) => text.push_str(v),
            (true, true) => text.push_str(&self.csv_field(v)),
            (false, true) => text.push_str(&self.text_field(v)),
        }
    }

    /// A value in CSV: quoted when it holds the delimiter, a quote or a line break, when it is
    /// empty (an unquoted nothing is a NULL) or when it reads as the NULL marker.
    ///
    /// Written here rather than with the `csv` crate: PostgreSQL's CSV tells a NULL (nothing)
    /// from an empty text (`""`), and its text format escapes rather than quotes; neither is a
    /// setting of that crate's writer.
    fn csv_field(&self, v: &str) -> String {
        let quote = v.is_empty() || v == self.null || v.contains([self.delimiter, '"', '\n', '\r']);
        match quote {
            true => format!("\"{}\"", v.replace('"', "\"\"")),
            false => v.to_owned(),
        }
    }

    /// A value in the text format: backslash escapes for the backslash, the delimiter and line
    /// breaks.
    fn text_field(&self, v: &str) -> String {
        let mut s = String::with_capacity(v.len());
        for c in v.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '\n' => s.push_str("\\n"),
                '\r' => s.push_str("\\r"),
                '\t' => s.push_str("\\t"),
                c if c == self.delimiter => {
                    s.push('\\');
                    s.push(c);
                }
                c => s.push(c),
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn text(copy: CopyOut, batch: &RecordBatch) -> String {
        let lines = copy.lines(&batch.schema(), vec![batch.clone()]);
        futures::executor::block_on(lines.map(|d| String::from_utf8(d.data.to_vec()).unwrap()).collect())
    }

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ]));
        let n = Int64Array::from(vec![Some(1), None, Some(3), Some(4)]);
        let s = StringArray::from(vec![Some(""), Some("a,\"b\""), None, Some("tab\there\nline\\")]);
        RecordBatch::try_new(schema, vec![Arc::new(n), Arc::new(s)]).unwrap()
    }

    #[test]
    fn csv_tells_null_from_empty_and_quotes_what_needs_it() {
        let copy = parse("COPY (SELECT n, s FROM t) TO STDOUT WITH (FORMAT csv, HEADER)").unwrap();
        assert_eq!(copy.query, "SELECT n, s FROM t");
        // psql's \copy … csv header, the form before PostgreSQL 9.
        let legacy = parse("COPY ( SELECT n, s FROM t ) TO STDOUT csv header").unwrap();
        assert_eq!(legacy, copy);
        assert_eq!(text(copy, &batch()), "n,s\n1,\"\"\n,\"a,\"\"b\"\"\"\n3,\n4,\"tab\there\nline\\\"\n");
    }

    #[test]
    fn text_escapes_and_writes_null_as_backslash_n() {
        let copy = parse("COPY t TO STDOUT").unwrap();
        assert_eq!(copy.query, "SELECT * FROM t");
        assert_eq!(text(copy, &batch()), "1\t\n\\N\ta,\"b\"\n3\t\\N\n4\ttab\\there\\nline\\\\\n");
    }

    #[test]
    fn what_would_touch_the_servers_files_is_refused_with_the_way_to_do_it() {
        let e = parse("COPY watchlist FROM STDIN").unwrap_err();
        assert!(e.to_string().contains("INSERT INTO watchlist"), "{e:?}");
        let e = parse("COPY (SELECT 1) TO '/etc/passwd'").unwrap_err();
        assert!(
            e.to_string().contains("would write on the server") && e.to_string().contains("\\copy"),
            "{e:?}"
        );
        let e = parse("COPY (SELECT 1) TO PROGRAM 'rm -rf /'").unwrap_err();
        assert!(e.to_string().contains("would write on the server"), "{e:?}");
        let e = parse("COPY (SELECT 1) TO STDOUT WITH (FORMAT binary)").unwrap_err();
        assert!(e.to_string().contains("FORMAT binary is not supported"), "{e:?}");
        let e = parse("COPY (SELECT 1) TO STDOUT WITH (HEADER)").unwrap_err();
        assert!(e.to_string().contains("CSV only"), "{e:?}");
        let e = parse("COPY (SELECT 1 TO STDOUT").unwrap_err();
        assert_eq!(e.sqlstate(), "42601", "{e:?}");
    }

    /// Reads one line back as PostgreSQL's COPY FROM would (a reader written apart from the
    /// writer): its cells, `None` for NULL.
    fn read_back(copy: &CopyOut, line: &str) -> Vec<Option<String>> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        // A cell is NULL when its raw text (before unescaping, unquoted) is the marker.
        let (mut cells, mut cell, mut raw) = (Vec::new(), String::new(), String::new());
        let (mut quoted, mut was_quoted) = (false, false);
        let mut chars = line.chars().peekable();
        let finish =
            |cell: &mut String, raw: &mut String, was_quoted: &mut bool, cells: &mut Vec<Option<String>>| {
                let value = std::mem::take(cell);
                let raw = std::mem::take(raw);
                let null = !*was_quoted && raw == copy.null;
                cells.push((!null).then_some(value));
                *was_quoted = false;
            };
        while let Some(c) = chars.next() {
            if c != copy.delimiter || quoted {
                raw.push(c);
            }
            match c {
                '"' if copy.csv && quoted && chars.peek() == Some(&'"') => {
                    chars.next();
                    cell.push('"');
                }
                '"' if copy.csv => {
                    quoted = !quoted;
                    was_quoted = true;
                }
                '\\' if !copy.csv => {
                    let next = chars.next();
                    raw.extend(next);
                    match next {
                        Some('n') => cell.push('\n'),
                        Some('r') => cell.push('\r'),
                        Some('t') => cell.push('\t'),
                        Some(other) => cell.push(other),
                        None => {}
                    }
                }
                c if c == copy.delimiter && !quoted => {
                    finish(&mut cell, &mut raw, &mut was_quoted, &mut cells)
                }
                c => cell.push(c),
            }
        }
        finish(&mut cell, &mut raw, &mut was_quoted, &mut cells);
        cells
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// Any COPY statement gets an answer (its options in any order and spelling, or text
        /// that is no COPY at all): a refusal with a code and the form to use, or a COPY whose
        /// options hold together.
        #[test]
        fn any_copy_statement_gets_an_answer(
            source in proptest::sample::select(&["(SELECT 1)", "t", "t (a, b)", "(SELECT 1", "", "watchlist"][..]),
            target in proptest::sample::select(&["TO STDOUT", "TO '/tmp/x'", "FROM STDIN", "TO PROGRAM 'x'", "TO"][..]),
            options in proptest::collection::vec(proptest::sample::select(&[
                "FORMAT csv", "FORMAT text", "FORMAT binary", "HEADER", "HEADER false", "DELIMITER ';'",
                "DELIMITER '\\'", "NULL 'x'", "QUOTE '\"'", "FREEZE", "ENCODING 'UTF8'", "csv", "header",
            ][..]), 0..4),
            legacy in any::<bool>(),
            noise in "\\PC{0,12}",
        ) {
            let options = match (legacy, options.is_empty()) {
                (_, true) => String::new(),
                (true, false) => options.join(" "),
                (false, false) => format!("WITH ({})", options.join(", ")),
            };
            for text in [format!("COPY {source} {target} {options}"), format!("COPY {noise}"), noise.clone()] {
                match parse(&text) {
                    Ok(c) => {
                        prop_assert!(c.csv || !c.header, "{text}: HEADER without CSV");
                        prop_assert!(!matches!(c.delimiter, '\n' | '\r' | '"' | '\\'), "{text}");
                        prop_assert!(!c.query.is_empty());
                    }
                    Err(e) => {
                        prop_assert!(e.sqlstate().starts_with("42") || e.sqlstate().starts_with("0A") || e.sqlstate() == "22023", "{text}: {e}");
                        let SqlError::User { fix, .. } = &e else { panic!("{e:?}") };
                        prop_assert!(!fix.is_empty(), "{text}");
                    }
                }
            }
        }

        /// Any text values, NULLs among them, written as CSV or text with any delimiter, read
        /// back as PostgreSQL's COPY FROM reads them: NULL stays NULL, an empty text stays
        /// empty, and quotes, delimiters, backslashes and line breaks come back as they were.
        #[test]
        fn copy_lines_read_back_as_written(
            cells in proptest::collection::vec(proptest::option::of(prop_oneof![
                "[a-c,;|\"\\\\\n\r\t N]{0,6}",
                proptest::sample::select(&["\\N", "", "\"\"", "N"][..]).prop_map(str::to_owned),
            ]), 1..5),
            csv in any::<bool>(),
            delimiter in proptest::sample::select(&[",", ";", "|", "\t"][..]),
        ) {
            let format = if csv { "FORMAT csv, " } else { "" };
            let text = format!("COPY t TO STDOUT WITH ({format}DELIMITER '{delimiter}')");
            let copy = parse(&text).unwrap();
            let fields: Vec<Field> = (0..cells.len()).map(|i| Field::new(format!("c{i}"), DataType::Utf8, true)).collect();
            let columns: Vec<datafusion::arrow::array::ArrayRef> =
                cells.iter().map(|c| Arc::new(StringArray::from(vec![c.clone()])) as _).collect();
            let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
            let line = text_of(&copy, &batch);
            prop_assert_eq!(read_back(&copy, &line), cells, "{:?}", line);
        }
    }

    fn text_of(copy: &CopyOut, batch: &RecordBatch) -> String {
        copy.rows(batch).iter().map(|d| String::from_utf8(d.data.to_vec()).unwrap()).collect()
    }
}

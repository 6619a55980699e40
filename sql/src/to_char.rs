//! PostgreSQL's `to_char(timestamp, 'YYYY-MM-DD HH24:MI')` patterns, which analysts bring from
//! PostgreSQL, turned into the chrono format DataFusion's `to_char` takes. DataFusion's own
//! prints a PostgreSQL pattern back as it is (`HH24:MI` for every row), silently; here it is
//! either translated exactly or refused with the pattern named and what to write instead.
//!
//! Written here: neither DataFusion nor datafusion-pg-catalog translates the patterns, and the
//! table below is PostgreSQL's ("Template Patterns for Date/Time Formatting"). A format with a
//! `%` outside double quotes is taken as chrono's already (DataFusion's own `to_char`) and left
//! as it is.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::visit_expressions_mut;
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Statement, Value,
};

use crate::error::{Kind, Position, SqlError};

/// A PostgreSQL pattern and its chrono format, with fill mode (`FM`: no padding) and without.
/// Longest first where one pattern starts another (`HH24` before `HH`). Numbers' patterns are
/// read in either case, as PostgreSQL reads them (`yyyy-mm-dd`); names' and AM's case is what
/// they print, and is kept.
const PATTERNS: &[(&str, &str, &str)] = &[
    ("HH24", "%H", "%-H"),
    ("HH12", "%I", "%-I"),
    ("HH", "%I", "%-I"),
    ("MI", "%M", "%-M"),
    ("MS", "%3f", "%3f"),
    ("US", "%6f", "%6f"),
    ("FF3", "%3f", "%3f"),
    ("FF6", "%6f", "%6f"),
    ("SS", "%S", "%-S"),
    ("IYYY", "%G", "%G"),
    ("YYYY", "%Y", "%Y"),
    ("YY", "%y", "%y"),
    ("MM", "%m", "%-m"),
    ("DDD", "%j", "%-j"),
    ("DD", "%d", "%-d"),
    ("ID", "%u", "%u"),
    ("IW", "%V", "%-V"),
    ("OF", "%:::z", "%:::z"),
];

/// Names and AM/PM, matched in their case: chrono prints them as written here.
const NAMES: &[(&str, &str, &str)] = &[
    ("AM", "%p", "%p"),
    ("PM", "%p", "%p"),
    ("am", "%P", "%P"),
    ("pm", "%P", "%P"),
    ("Month", "", "%B"),
    ("Mon", "%b", "%b"),
    ("Day", "", "%A"),
    ("Dy", "%a", "%a"),
];

/// Patterns PostgreSQL has that chrono cannot print exactly, with what to write instead;
/// names in their case, the others in either.
const REFUSED: &[(&str, &str)] = &[
    ("MONTH", "FMMonth (June): names print as written, not upper- or lower-cased"),
    ("month", "FMMonth (June): names print as written, not upper- or lower-cased"),
    ("MON", "Mon (Jun): names print as written, not upper- or lower-cased"),
    ("mon", "Mon (Jun): names print as written, not upper- or lower-cased"),
    ("DAY", "FMDay (Sunday): names print as written, not upper- or lower-cased"),
    ("day", "FMDay (Sunday): names print as written, not upper- or lower-cased"),
    ("DY", "Dy (Sun): names print as written, not upper- or lower-cased"),
    ("dy", "Dy (Sun): names print as written, not upper- or lower-cased"),
    ("TZ", "OF (+00, or +01 in Casablanca): chrono names a zone by its offset, not its abbreviation"),
    ("tz", "OF (+00, or +01 in Casablanca): chrono names a zone by its offset, not its abbreviation"),
    ("A.M.", "AM"),
    ("P.M.", "PM"),
    ("a.m.", "am"),
    ("p.m.", "pm"),
    ("B.C.", "YYYY"),
    ("A.D.", "YYYY"),
    ("BC", "YYYY"),
    ("AD", "YYYY"),
];

/// Numbers' patterns PostgreSQL has that chrono cannot print, in either case.
const REFUSED_ANY_CASE: &[(&str, &str)] = &[
    ("SSSSS", "extract(epoch FROM …) for seconds"),
    ("SSSS", "extract(epoch FROM …) for seconds"),
    ("Y,YYY", "YYYY"),
    ("YYY", "YYYY or YY"),
    ("IYY", "IYYY"),
    ("IY", "IYYY"),
    ("FF1", "MS (milliseconds) or US (microseconds)"),
    ("FF2", "MS (milliseconds) or US (microseconds)"),
    ("FF4", "MS (milliseconds) or US (microseconds)"),
    ("FF5", "MS (milliseconds) or US (microseconds)"),
    ("WW", "IW (ISO week)"),
    ("CC", "YYYY"),
    ("RM", "MM"),
    ("TZH", "OF (+00)"),
    ("TZM", "OF (+00)"),
    ("Q", "date_part('quarter', …)"),
    ("J", "date_part('doy', …) with the year"),
    ("W", "IW (ISO week)"),
    ("D", "ID (ISO day of the week, Monday 1)"),
    ("Y", "YYYY or YY"),
    ("I", "IYYY"),
];

/// Whether `rest` starts with pattern `p`, in its case or (`any_case`) in either.
fn starts(rest: &str, p: &str, any_case: bool) -> bool {
    rest.get(..p.len()).is_some_and(|head| if any_case { head.eq_ignore_ascii_case(p) } else { head == p })
}

/// The translated pattern `rest` starts with: its length and chrono's formats.
fn pattern_at(rest: &str) -> Option<(&'static str, &'static str, &'static str)> {
    NAMES
        .iter()
        .find(|(p, ..)| starts(rest, p, false))
        .or_else(|| PATTERNS.iter().find(|(p, ..)| starts(rest, p, true)))
        .copied()
}

/// The refused pattern `rest` starts with (not the start of a longer translated one: `D` of
/// `DD`, `Y` of `YYYY`), with what to write instead.
fn refused_at(rest: &str) -> Option<(&'static str, &'static str)> {
    let longer = |p: &str| pattern_at(rest).is_some_and(|(q, ..)| q.len() > p.len());
    REFUSED
        .iter()
        .find(|(p, _)| starts(rest, p, false))
        .or_else(|| REFUSED_ANY_CASE.iter().find(|(p, _)| starts(rest, p, true)))
        .filter(|(p, _)| !longer(p))
        .copied()
}

/// `pattern`, a PostgreSQL `to_char` template, as a chrono format; or the pattern chrono cannot
/// print exactly, with what to write instead.
pub fn translate(pattern: &str) -> Result<String, (String, String)> {
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(c) = rest.chars().next() {
        // Double-quoted text is printed as it is (a backslash escapes a quote in it).
        if c == '"' {
            let mut chars = rest[1..].char_indices();
            let mut end = rest.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, q)) = chars.next() {
                            push_literal(&mut out, q);
                        }
                    }
                    '"' => {
                        end = i + 2;
                        break;
                    }
                    c => push_literal(&mut out, c),
                }
            }
            rest = &rest[end.min(rest.len())..];
            continue;
        }
        // FM (fill mode: no padding), FX and TM (exact and translation modes, which change
        // nothing here) prefix the pattern after them.
        let mut fill = false;
        while let Some(r) = ["FM", "fm", "FX", "fx", "TM", "tm"].iter().find_map(|m| rest.strip_prefix(m)) {
            fill |= rest.starts_with("FM") || rest.starts_with("fm");
            rest = r;
        }
        // What follows the modifiers (nothing, when they end the template: `'FX'` panicked here).
        let Some(c) = rest.chars().next() else { break };
        if let Some((p, fix)) = refused_at(rest) {
            return Err((rest[..p.len()].to_owned(), fix.to_owned()));
        }
        if let Some((p, plain, filled)) = pattern_at(rest) {
            let chrono = if fill { filled } else { plain };
            if chrono.is_empty() {
                // PostgreSQL pads names to nine characters, which chrono cannot.
                return Err((
                    p.to_owned(),
                    format!("FM{p}: PostgreSQL pads {p} to nine characters, vigil prints it unpadded"),
                ));
            }
            out.push_str(chrono);
            rest = &rest[p.len()..];
            // An ordinal suffix (DDth: 14th) chrono cannot print.
            if starts(rest, "TH", true) {
                return Err((format!("{p}{}", &rest[..2]), format!("{p} without an ordinal suffix")));
            }
            continue;
        }
        if let Some(c) = rest.strip_prefix('\\').and_then(|r| r.chars().next()) {
            push_literal(&mut out, c);
            rest = &rest[1 + c.len_utf8()..];
            continue;
        }
        push_literal(&mut out, c);
        rest = &rest[c.len_utf8()..];
    }
    Ok(out)
}

/// Whether `format` is chrono's (DataFusion's own `to_char`): a `%` outside double quotes, where
/// PostgreSQL's patterns have none (`"100%" DD` is PostgreSQL's).
fn is_chrono(format: &str) -> bool {
    format.split('"').step_by(2).any(|outside| outside.contains('%'))
}

fn push_literal(out: &mut String, c: char) {
    if c == '%' {
        out.push_str("%%");
    } else {
        out.push(c);
    }
}

/// Rewrites each `to_char(x, 'PostgreSQL pattern')` in `stmt` to chrono's format; the first
/// pattern that cannot be printed exactly is refused, placed at its literal in `source`.
pub fn rewrite(stmt: &mut Statement, source: &str) -> Result<(), SqlError> {
    let mut refused = None;
    let _ = visit_expressions_mut(stmt, |e| {
        let Expr::Function(f) = e else { return ControlFlow::Continue(()) };
        if !f.name.to_string().eq_ignore_ascii_case("to_char") {
            return ControlFlow::Continue(());
        }
        let FunctionArguments::List(list) = &mut f.args else { return ControlFlow::Continue(()) };
        let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))) = list.args.get_mut(1) else {
            return ControlFlow::Continue(());
        };
        let Value::SingleQuotedString(pattern) = &mut v.value else { return ControlFlow::Continue(()) };
        if is_chrono(pattern) {
            return ControlFlow::Continue(());
        }
        match translate(pattern) {
            Ok(chrono) => {
                *pattern = chrono;
                ControlFlow::Continue(())
            }
            Err((p, fix)) => {
                let start = v.span.start;
                let position = (start.line > 0).then(|| Position {
                    source: source.to_owned(),
                    line: start.line,
                    column: start.column,
                });
                refused = Some(
                    SqlError::user(
                        position,
                        format!("to_char's pattern {p} in '{pattern}' is PostgreSQL's, and vigil cannot print it exactly"),
                        format!("write {fix}"),
                    )
                    .kind(Kind::Unsupported),
                );
                ControlFlow::Break(())
            }
        }
    });
    refused.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::TimestampMillisecondArray;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::prelude::SessionContext;
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_percent_outside_quotes_is_chronos_format() {
        assert!(is_chrono("%Y-%m-%d") && is_chrono("\"at\" %H"));
        assert!(!is_chrono("\"100%\" DD") && !is_chrono("YYYY-MM-DD"));
    }

    #[test]
    fn postgresql_patterns_become_chronos() {
        let cases = [
            ("YYYY-MM-DD HH24:MI:SS", "%Y-%m-%d %H:%M:%S"),
            ("HH12:MI AM", "%I:%M %p"),
            ("FMDD FMMonth YYYY", "%-d %B %Y"),
            ("Dy DD Mon", "%a %d %b"),
            ("HH24:MI:SS.MS", "%H:%M:%S.%3f"),
            ("IYYY-\"W\"IW-ID", "%G-W%V-%u"),
            ("\"100%\" DD", "100%% %d"),
            ("DDD", "%j"),
        ];
        for (pg, chrono) in cases {
            assert_eq!(translate(pg), Ok(chrono.to_owned()), "{pg}");
        }
        for (pg, refused) in
            [("MONTH", "MONTH"), ("DDth", "DDth"), ("Q", "Q"), ("Month", "Month"), ("D", "D")]
        {
            assert_eq!(translate(pg).map_err(|e| e.0), Err(refused.to_owned()), "{pg}");
        }
    }

    /// Formats 2026-06-14 20:05:09.042 UTC (a Sunday) with DataFusion's to_char after the rewrite.
    async fn formatted(pattern: &str) -> Result<String, SqlError> {
        let ctx = SessionContext::new();
        let t = TimestampMillisecondArray::from(vec![1_781_467_509_042]).with_timezone("UTC");
        let batch = datafusion::arrow::array::RecordBatch::try_from_iter([("t", Arc::new(t) as _)]).unwrap();
        ctx.register_batch("events", batch).unwrap();
        let sql = format!("SELECT to_char(t, '{pattern}') AS s FROM events");
        let mut st = ctx.state().sql_to_statement(&sql, &datafusion::config::Dialect::Generic).unwrap();
        if let datafusion::sql::parser::Statement::Statement(s) = &mut st {
            rewrite(s, "psql")?;
        }
        let plan = ctx.state().statement_to_plan(st).await.unwrap();
        let batches = ctx.execute_logical_plan(plan).await.unwrap().collect().await.unwrap();
        let text = pretty_format_batches(&batches).unwrap().to_string();
        Ok(text.lines().nth(3).unwrap().trim_matches(|c| c == '|' || c == ' ').to_owned())
    }

    #[tokio::test]
    async fn to_char_prints_what_postgresql_prints() {
        // PostgreSQL 15's output for the same instant and patterns (Debian's postgresql-15,
        // `SET TimeZone = 'UTC'; SELECT to_char(TIMESTAMPTZ '2026-06-14 20:05:09.042+00', …)`).
        for (pattern, postgresql) in [
            ("YYYY-MM-DD HH24:MI:SS", "2026-06-14 20:05:09"),
            ("HH12:MI AM", "08:05 PM"),
            ("FMDD FMMonth YYYY, FMHH24\"h\"MI", "14 June 2026, 20h05"),
            ("Dy DD Mon YY", "Sun 14 Jun 26"),
            ("HH24:MI:SS.MS", "20:05:09.042"),
            ("IYYY-IW-ID DDD", "2026-24-7 165"),
            ("yyyy-mm-dd hh24:mi", "2026-06-14 20:05"),
            ("HH24:MI OF", "20:05 +00"),
            ("FMHH12:MI:SS.US am", "8:05:09.042000 pm"),
            ("IYYY-\"W\"IW-ID", "2026-W24-7"),
            ("\"100%\" DD", "100% 14"),
        ] {
            assert_eq!(formatted(pattern).await.unwrap(), postgresql, "{pattern}");
        }
        // Modifiers that end the template prefix nothing (the proptest below found `FX` panicking).
        assert_eq!(translate("FX"), Ok(String::new()));
        assert_eq!(translate("DD FM"), translate("DD "));
        // chrono's own format is left as DataFusion takes it.
        assert_eq!(formatted("%H:%M").await.unwrap(), "20:05");
        let refused = formatted("Q").await.expect_err("refused");
        assert!(
            refused.to_string().contains("to_char's pattern Q") && refused.to_string().contains("psql:1:"),
            "{refused}"
        );
    }

    proptest! {
        /// Any template translates or is refused, never panics, and a translation has no lone `%`.
        #[test]
        fn any_template_translates_or_is_refused(pattern in "[A-Za-z0-9 \"\\\\:.,%-]{0,24}") {
            if let Ok(chrono) = translate(&pattern) {
                let lone = chrono.replace("%%", "").matches('%').count();
                let directives = chrono.replace("%%", "").split('%').skip(1).filter(|d| !d.is_empty()).count();
                prop_assert_eq!(lone, directives);
            }
        }
    }
}

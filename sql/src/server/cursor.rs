//! Cursors (`DECLARE … CURSOR FOR`, `FETCH`, `MOVE`, `CLOSE`): a query's rows read a few at a
//! time. psql with `\set FETCH_COUNT n` reads every SELECT this way, and psycopg's named
//! (server-side) cursors do too.
//!
//! A cursor runs its query at DECLARE, as a SELECT would (the same role, memory and time), and
//! holds its rows: vigil's queries read rows the engine holds in memory, so there is no lazier
//! plan to keep open, and the rows a cursor returns are those of one instant, as PostgreSQL's
//! are. What cursors hold is bounded: all sessions' cursors together at most
//! [`Cursors::budget`] bytes of Arrow memory, a session at most [`MAX_PER_SESSION`] cursors.
//! Their rows are copies, so a cursor is closed when the engine would have let its rows go
//! from memory ([`Cursors::max_age`]: `retention.memory_s`, never longer than the shortest
//! retention period), at every erasure (`ERASE`), at `COMMIT` or `ROLLBACK` unless it was
//! declared `WITH HOLD`, and with its session.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use crate::rule::ident;

/// Cursors a session may hold open at once.
pub const MAX_PER_SESSION: usize = 64;

/// A statement about cursors refused: its SQLSTATE, what is wrong and the fix.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
    pub fix: String,
}

fn refuse(code: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Refusal {
    Refusal { code, message: message.into(), fix: fix.into() }
}

const DECLARE_FORM: &str = "write DECLARE name [BINARY] [NO SCROLL | SCROLL] CURSOR [WITH HOLD] FOR SELECT …";
const FETCH_FORM: &str = "write FETCH [NEXT | PRIOR | FIRST | LAST | ABSOLUTE n | RELATIVE n | n | ALL | \
                          FORWARD [n | ALL] | BACKWARD [n | ALL]] [FROM] name";

/// `DECLARE name [BINARY] [ASENSITIVE | INSENSITIVE] [[NO] SCROLL] CURSOR [{WITH | WITHOUT}
/// HOLD] FOR query`, read.
#[derive(Debug, PartialEq, Eq)]
pub struct Declare {
    pub name: String,
    /// Rows in PostgreSQL's binary encoding (a `BINARY` cursor).
    pub binary: bool,
    /// `Some(false)` for `NO SCROLL` (only forward), `Some(true)` for `SCROLL`.
    pub scroll: Option<bool>,
    /// `WITH HOLD`: the cursor outlives `COMMIT`.
    pub hold: bool,
    /// The query, as written.
    pub query: String,
    /// Where the query starts in the statement's text (bytes).
    pub query_at: usize,
    /// The whole statement (`pg_cursors.statement`).
    pub text: String,
}

/// Reads a `DECLARE` statement (its text, trimmed as [`crate::rule::split_statements`] gives
/// it). The query is the text after `FOR`, as written, so its errors point into it.
pub fn parse_declare(text: &str) -> Result<Declare, Refusal> {
    let syntax = |what: &str| refuse("42601", format!("DECLARE: {what}"), DECLARE_FORM);
    let tokens =
        Tokenizer::new(&GenericDialect {}, text).tokenize_with_location().map_err(|e| syntax(&e.message))?;
    let lines: Vec<usize> = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
    // The byte offset of a token's (line, column), both counted from 1, the column in characters.
    let offset = |line: u64, column: u64| {
        let start = *lines.get(usize::try_from(line).ok()?.checked_sub(1)?)?;
        let skip = usize::try_from(column).ok()?.checked_sub(1)?;
        text[start..].char_indices().nth(skip).map(|(i, _)| start + i)
    };
    let mut words = tokens.iter().filter(|t| !matches!(t.token, Token::Whitespace(_)));
    let mut keyword = || match words.next().map(|t| &t.token) {
        Some(Token::Word(w)) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
        _ => None,
    };
    if keyword().as_deref() != Some("DECLARE") {
        return Err(syntax("not a DECLARE statement"));
    }
    let name = match words.next().map(|t| &t.token) {
        Some(Token::Word(w)) => ident(w),
        _ => return Err(syntax("the cursor needs a name")),
    };
    let mut d = Declare {
        name,
        binary: false,
        scroll: None,
        hold: false,
        query: String::new(),
        query_at: 0,
        text: text.trim_end().trim_end_matches(';').trim_end().to_owned(),
    };
    let mut next = words.next();
    let word = |t: Option<&datafusion::sql::sqlparser::tokenizer::TokenWithSpan>| match t.map(|t| &t.token) {
        Some(Token::Word(w)) if w.quote_style.is_none() => w.value.to_ascii_uppercase(),
        _ => String::new(),
    };
    // The options before CURSOR, in PostgreSQL's order.
    let mut seen_cursor = false;
    while !seen_cursor {
        match word(next).as_str() {
            "BINARY" => d.binary = true,
            "ASENSITIVE" | "INSENSITIVE" => {}
            "NO" => {
                next = words.next();
                if word(next) != "SCROLL" {
                    return Err(syntax("NO must be followed by SCROLL"));
                }
                d.scroll = Some(false);
            }
            "SCROLL" => d.scroll = Some(true),
            "CURSOR" => seen_cursor = true,
            "" => return Err(syntax("expected CURSOR after the name")),
            other => return Err(syntax(&format!("{other} is not an option of DECLARE"))),
        }
        next = words.next();
    }
    if matches!(word(next).as_str(), "WITH" | "WITHOUT") {
        d.hold = word(next) == "WITH";
        next = words.next();
        if word(next) != "HOLD" {
            return Err(syntax("expected HOLD after WITH or WITHOUT"));
        }
        next = words.next();
    }
    if word(next) != "FOR" {
        return Err(syntax("expected FOR and the query after CURSOR"));
    }
    // The query: the text after FOR, from its first token.
    let Some(first) = words.next() else { return Err(syntax("FOR needs a query")) };
    let at = offset(first.span.start.line, first.span.start.column)
        .ok_or_else(|| syntax("the query's position is not in the text"))?;
    d.query = text[at..].trim_end().trim_end_matches(';').trim_end().to_owned();
    d.query_at = at;
    let opens = {
        let w = crate::rule::statement_words(&d.query).unwrap_or_default();
        w.first().map(|w| w.to_ascii_uppercase()).unwrap_or_default()
    };
    if !matches!(opens.as_str(), "SELECT" | "WITH" | "VALUES") {
        return Err(refuse(
            "42601",
            format!("DECLARE: a cursor reads a SELECT, WITH or VALUES query, not {opens}"),
            DECLARE_FORM,
        ));
    }
    Ok(d)
}

/// Where a `FETCH` or `MOVE` goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// `n`, `NEXT` (1), `FORWARD [n]`, `ALL` (`None`).
    Forward(Option<u64>),
    /// `-n`, `PRIOR` (1), `BACKWARD [n]`, `BACKWARD ALL` (`None`).
    Backward(Option<u64>),
    /// `ABSOLUTE n`, `FIRST` (1), `LAST` (-1): the nth row, from the end if negative.
    Absolute(i64),
    /// `RELATIVE n`: the row n from the current one.
    Relative(i64),
}

/// Reads `FETCH`/`MOVE [direction] [FROM | IN] name` from its words (as
/// [`crate::rule::statement_words`] gives them: names folded, signs apart).
pub fn parse_fetch(words: &[String]) -> Result<(Direction, String), Refusal> {
    let verb = words.first().map(|w| w.to_ascii_uppercase()).unwrap_or_default();
    let syntax = |what: String| refuse("42601", format!("{verb}: {what}"), FETCH_FORM);
    let mut rest: Vec<&str> = words.iter().skip(1).map(String::as_str).collect();
    let Some(name) = rest.pop() else { return Err(syntax("the cursor's name is missing".into())) };
    if matches!(rest.last().map(|w| w.to_ascii_uppercase()).as_deref(), Some("FROM" | "IN")) {
        rest.pop();
    }
    // A count: digits, after a sign.
    let count = |w: &[&str]| -> Result<i64, Refusal> {
        let (sign, digits) = match w {
            ["-", d] => (-1, *d),
            ["+", d] | [d] => (1, *d),
            _ => return Err(syntax(format!("{} is not a count", w.join(" ")))),
        };
        digits.parse::<i64>().map(|n| sign * n).map_err(|_| syntax(format!("{} is not a count", w.join(" "))))
    };
    let up: Vec<String> = rest.iter().map(|w| w.to_ascii_uppercase()).collect();
    let up: Vec<&str> = up.iter().map(String::as_str).collect();
    let signed = |n: i64| {
        if n < 0 { Direction::Backward(Some(n.unsigned_abs())) } else { Direction::Forward(Some(n as u64)) }
    };
    let unsigned = |w: &[&str], forward: bool| -> Result<Direction, Refusal> {
        let n = count(w)?;
        let n = if forward { n } else { n.checked_neg().unwrap_or(i64::MAX) };
        Ok(signed(n))
    };
    let direction = match up.as_slice() {
        [] | ["NEXT"] | ["FORWARD"] => Direction::Forward(Some(1)),
        ["PRIOR"] | ["BACKWARD"] => Direction::Backward(Some(1)),
        ["FIRST"] => Direction::Absolute(1),
        ["LAST"] => Direction::Absolute(-1),
        ["ALL"] | ["FORWARD", "ALL"] => Direction::Forward(None),
        ["BACKWARD", "ALL"] => Direction::Backward(None),
        ["ABSOLUTE", n @ ..] => Direction::Absolute(count(n)?),
        ["RELATIVE", n @ ..] => Direction::Relative(count(n)?),
        ["FORWARD", n @ ..] => unsigned(n, true)?,
        ["BACKWARD", n @ ..] => unsigned(n, false)?,
        n => signed(count(n)?),
    };
    Ok((direction, name.to_owned()))
}

/// `CLOSE name` or `CLOSE ALL` (`None`).
pub fn parse_close(words: &[String]) -> Result<Option<String>, Refusal> {
    match words {
        [_, all] if all.eq_ignore_ascii_case("all") => Ok(None),
        [_, name] => Ok(Some(name.clone())),
        _ => Err(refuse("42601", "CLOSE: name one cursor, or ALL", "write CLOSE name, or CLOSE ALL")),
    }
}

/// A declared cursor: its rows and where it stands among them.
#[derive(Debug)]
pub struct Cursor {
    /// The rows' columns, named as a SELECT's are.
    pub schema: SchemaRef,
    batches: Vec<RecordBatch>,
    /// Rows before each batch, and the total after the last.
    starts: Vec<usize>,
    bytes: usize,
    /// 0 before the first row, 1..=n on a row, n + 1 after the last (PostgreSQL's model).
    position: usize,
    scroll: Option<bool>,
    hold: bool,
    pub binary: bool,
    declared: Instant,
    /// The DECLARE statement and when it ran (`pg_cursors`).
    statement: String,
    created: std::time::SystemTime,
}

impl Cursor {
    pub fn new(schema: SchemaRef, batches: Vec<RecordBatch>, d: &Declare) -> Self {
        let batches: Vec<RecordBatch> = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
        let mut starts = Vec::with_capacity(batches.len() + 1);
        let mut n = 0;
        for b in &batches {
            starts.push(n);
            n += b.num_rows();
        }
        starts.push(n);
        let bytes = batches.iter().map(RecordBatch::get_array_memory_size).sum();
        Self {
            schema,
            batches,
            starts,
            bytes,
            position: 0,
            scroll: d.scroll,
            hold: d.hold,
            binary: d.binary,
            declared: Instant::now(),
            statement: d.text.clone(),
            created: std::time::SystemTime::now(),
        }
    }

    fn rows(&self) -> usize {
        *self.starts.last().unwrap_or(&0)
    }

    /// Moves as `FETCH direction` would and returns the rows it passes (1-based, in the order
    /// they are returned); refused if the cursor is `NO SCROLL` and the move goes back.
    fn step(&mut self, direction: Direction, name: &str) -> Result<Vec<usize>, Refusal> {
        let (n, p) = (self.rows() as i128, self.position as i128);
        let (picked, to): (Vec<i128>, i128) = match direction {
            Direction::Forward(Some(0)) | Direction::Backward(Some(0)) | Direction::Relative(0) => {
                (if (1..=n).contains(&p) { vec![p] } else { Vec::new() }, p)
            }
            Direction::Forward(k) => {
                let end = k.map_or(n + 1, |k| p + i128::from(k));
                let last = end.min(n);
                ((p + 1..=last).collect(), if end > n { n + 1 } else { end })
            }
            Direction::Backward(k) => {
                let end = k.map_or(0, |k| p - i128::from(k));
                let last = end.max(1);
                ((last..p).rev().collect(), if end < 1 { 0 } else { end })
            }
            Direction::Absolute(k) | Direction::Relative(k) => {
                let target = match direction {
                    Direction::Absolute(0) => 0,
                    Direction::Absolute(k) if k < 0 => n + 1 + i128::from(k),
                    Direction::Absolute(k) => i128::from(k),
                    _ => p + i128::from(k),
                };
                match target {
                    t if t < 1 => (Vec::new(), 0),
                    t if t > n => (Vec::new(), n + 1),
                    t => (vec![t], t),
                }
            }
        };
        // What PostgreSQL refuses of a NO SCROLL cursor: any move that may read a row again
        // (its current one too), and LAST or ABSOLUTE from the end.
        let back = match direction {
            Direction::Forward(Some(0)) | Direction::Backward(_) => true,
            Direction::Forward(_) => false,
            Direction::Relative(k) => k <= 0,
            Direction::Absolute(k) => k <= 0 || i128::from(k) <= p,
        };
        if back && self.scroll == Some(false) {
            return Err(refuse(
                "55000",
                format!("cursor \"{name}\" can only scan forward"),
                "declare it with SCROLL (or without NO SCROLL) to move back",
            ));
        }
        self.position = to as usize;
        Ok(picked.into_iter().map(|r| r as usize).collect())
    }

    /// The rows `rows` (1-based, in order): zero-copy slices of the held batches, and the
    /// order to take them in when they do not run forward ([`Rows::assemble`]).
    fn rows_of(&self, rows: &[usize]) -> Rows {
        let (Some(&first), Some(&last)) = (rows.first(), rows.last()) else {
            return Rows { slices: Vec::new(), order: None };
        };
        let (from, to) = (first.min(last) - 1, first.max(last));
        let mut slices = Vec::new();
        for (b, &start) in self.batches.iter().zip(&self.starts) {
            let end = start + b.num_rows();
            let (lo, hi) = (from.max(start), to.min(end));
            if lo < hi {
                slices.push(b.slice(lo - start, hi - lo));
            }
        }
        // Backward: the span from the lowest to the highest, taken in the order asked.
        let order =
            (last < first).then(|| UInt32Array::from_iter_values(rows.iter().map(|r| (r - last) as u32)));
        Rows { slices, order }
    }
}

/// A FETCH's rows as taken under the cursors' lock: slices (cheap), with the copy a backward
/// FETCH needs left for after the lock is released, so other sessions do not wait on it.
struct Rows {
    slices: Vec<RecordBatch>,
    order: Option<UInt32Array>,
}

impl Rows {
    fn assemble(self, schema: &SchemaRef) -> Result<Vec<RecordBatch>, Refusal> {
        let Some(order) = self.order else { return Ok(self.slices) };
        let internal = |e: datafusion::arrow::error::ArrowError| refuse("XX000", e.to_string(), "report it");
        let span = concat_batches(schema, self.slices.iter()).map_err(internal)?;
        Ok(vec![take_record_batch(&span, &order).map_err(internal)?])
    }
}

/// Every session's cursors, with what they hold.
#[derive(Debug)]
pub struct Cursors {
    /// Arrow memory all cursors may hold together.
    pub budget: usize,
    /// The longest a cursor is kept.
    pub max_age: Duration,
    next_session: AtomicU64,
    open: Mutex<BTreeMap<(u64, String), Cursor>>,
}

/// What a `FETCH` or `MOVE` gives: the rows passed and their count.
#[derive(Debug)]
pub struct Fetched {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub count: usize,
    pub binary: bool,
}

impl Cursors {
    pub fn new(budget: usize, max_age: Duration) -> Self {
        Self { budget, max_age, next_session: AtomicU64::new(1), open: Mutex::new(BTreeMap::new()) }
    }

    /// A new session's id.
    pub fn session(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    fn open(&self) -> std::sync::MutexGuard<'_, BTreeMap<(u64, String), Cursor>> {
        // A panic elsewhere while the map was held leaves it consistent (every change is one call).
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The hint for a cursor that is not there.
    fn missing(&self, name: &str) -> Refusal {
        refuse(
            "34000",
            format!("cursor \"{name}\" does not exist"),
            format!(
                "DECLARE it (again): a cursor closes at CLOSE, at COMMIT or ROLLBACK unless declared WITH HOLD, \
                 at any ERASE, and {} s after it was declared (retention.memory_s)",
                self.max_age.as_secs()
            ),
        )
    }

    /// Whether `session` may declare a cursor `name` (its name free, under its count): asked
    /// before the cursor's query runs, so a refusal costs nothing, and again at
    /// [`Cursors::declare`].
    pub fn admit(&self, session: u64, name: &str) -> Result<(), Refusal> {
        self.expire();
        Self::admits(&self.open(), session, name)
    }

    fn admits(open: &BTreeMap<(u64, String), Cursor>, session: u64, name: &str) -> Result<(), Refusal> {
        if open.contains_key(&(session, name.to_owned())) {
            return Err(refuse(
                "42P03",
                format!("cursor \"{name}\" already exists"),
                "CLOSE it first, or choose another name",
            ));
        }
        if open.range((session, String::new())..(session + 1, String::new())).count() >= MAX_PER_SESSION {
            return Err(refuse(
                "54000",
                format!("this session has {MAX_PER_SESSION} cursors open, the most it may"),
                "CLOSE the cursors you have read (CLOSE ALL closes them all)",
            ));
        }
        Ok(())
    }

    /// Keeps a declared cursor for `session`, if its name is free and its rows fit.
    pub fn declare(&self, session: u64, name: &str, cursor: Cursor) -> Result<(), Refusal> {
        self.expire();
        let mut open = self.open();
        Self::admits(&open, session, name)?;
        let held: usize = open.values().map(|c| c.bytes).sum();
        if held + cursor.bytes > self.budget {
            return Err(refuse(
                "53200",
                format!(
                    "the cursor's rows take {} MiB and open cursors hold {} MiB; together they may hold {} MiB",
                    cursor.bytes.div_ceil(1 << 20),
                    held.div_ceil(1 << 20),
                    self.budget >> 20
                ),
                "narrow the query (a WHERE, a LIMIT), CLOSE cursors you have read, or raise server.query_memory_mb",
            ));
        }
        open.insert((session, name.to_owned()), cursor);
        Ok(())
    }

    /// The columns of a session's cursor (what a FETCH from it returns).
    pub fn schema(&self, session: u64, name: &str) -> Option<(SchemaRef, bool)> {
        self.open().get(&(session, name.to_owned())).map(|c| (c.schema.clone(), c.binary))
    }

    /// `FETCH` (or, with `rows` false, `MOVE`) from a session's cursor.
    pub fn fetch(
        &self,
        session: u64,
        name: &str,
        direction: Direction,
        rows: bool,
    ) -> Result<Fetched, Refusal> {
        self.expire();
        let (schema, taken, count, binary) = {
            let mut open = self.open();
            let Some(c) = open.get_mut(&(session, name.to_owned())) else { return Err(self.missing(name)) };
            let picked = c.step(direction, name)?;
            let taken = rows.then(|| c.rows_of(&picked));
            (c.schema.clone(), taken, picked.len(), c.binary)
        };
        let batches = match taken {
            Some(taken) => taken.assemble(&schema)?,
            None => Vec::new(),
        };
        Ok(Fetched { schema, batches, count, binary })
    }

    /// A session's cursors as `pg_catalog.pg_cursors` lists them.
    pub fn listing(&self, session: u64) -> RecordBatch {
        use datafusion::arrow::array::{ArrayRef, BooleanArray, StringArray, TimestampMicrosecondArray};
        let open = self.open();
        let mine: Vec<(&String, &Cursor)> = open
            .range((session, String::new())..(session + 1, String::new()))
            .map(|((_, n), c)| (n, c))
            .collect();
        let micros = |c: &Cursor| {
            c.created
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(mine.iter().map(|(n, _)| n.as_str()))),
            Arc::new(StringArray::from_iter_values(mine.iter().map(|(_, c)| c.statement.as_str()))),
            Arc::new(BooleanArray::from_iter(mine.iter().map(|(_, c)| Some(c.hold)))),
            Arc::new(BooleanArray::from_iter(mine.iter().map(|(_, c)| Some(c.binary)))),
            Arc::new(BooleanArray::from_iter(mine.iter().map(|(_, c)| Some(c.scroll != Some(false))))),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(mine.iter().map(|(_, c)| micros(c)))
                    .with_timezone("UTC"),
            ),
        ];
        RecordBatch::try_new(crate::pg_catalog::pg_cursors_schema(), columns)
            .unwrap_or_else(|_| RecordBatch::new_empty(crate::pg_catalog::pg_cursors_schema()))
    }

    /// `CLOSE name` (or every cursor of the session, `None`).
    pub fn close(&self, session: u64, name: Option<&str>) -> Result<(), Refusal> {
        let mut open = self.open();
        match name {
            Some(name) => {
                open.remove(&(session, name.to_owned())).map(|_| ()).ok_or_else(|| self.missing(name))
            }
            None => {
                open.retain(|(s, _), _| *s != session);
                Ok(())
            }
        }
    }

    /// At `COMMIT` or `ROLLBACK`: the session's cursors not declared `WITH HOLD` close.
    pub fn end_transaction(&self, session: u64) {
        self.open().retain(|(s, _), c| *s != session || c.hold);
    }

    /// At an erasure: every cursor closes (its rows may hold what was erased).
    pub fn close_everywhere(&self) -> usize {
        let mut open = self.open();
        let n = open.len();
        open.clear();
        n
    }

    /// Closes the cursors older than [`Cursors::max_age`]; returns how many.
    pub fn expire(&self) -> usize {
        let mut open = self.open();
        let before = open.len();
        open.retain(|_, c| c.declared.elapsed() < self.max_age);
        before - open.len()
    }

    /// Bytes all cursors hold.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.open().values().map(|c| c.bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn words(s: &str) -> Vec<String> {
        crate::rule::statement_words(s).unwrap()
    }

    #[test]
    fn declare_reads_psqls_and_psycopgs_forms() {
        let d = parse_declare("DECLARE _psql_cursor NO SCROLL CURSOR FOR\nSELECT 1 AS \"FOR\"").unwrap();
        assert_eq!(d.name, "_psql_cursor");
        assert_eq!(d.scroll, Some(false));
        assert!(!d.hold && !d.binary);
        assert_eq!(d.query, "SELECT 1 AS \"FOR\"");
        assert_eq!(d.query_at, "DECLARE _psql_cursor NO SCROLL CURSOR FOR\n".len());
        let d =
            parse_declare("declare \"Mixed Name\" binary scroll cursor with hold for  values (1) ;").unwrap();
        assert_eq!((d.name.as_str(), d.binary, d.scroll, d.hold), ("Mixed Name", true, Some(true), true));
        assert_eq!(d.query, "values (1)");
        let d =
            parse_declare("DECLARE c CURSOR WITHOUT HOLD FOR WITH x AS (SELECT 1) SELECT * FROM x").unwrap();
        assert_eq!((d.name.as_str(), d.hold, d.scroll), ("c", false, None));
        // Non-ASCII before the query does not shift where it starts.
        let d = parse_declare("DECLARE \"é\" CURSOR FOR SELECT 'ب'").unwrap();
        assert_eq!(d.query, "SELECT 'ب'");
        for (bad, says) in [
            ("DECLARE c FOR SELECT 1", "FOR is not an option"),
            ("DECLARE c CURSOR SELECT 1", "expected FOR"),
            ("DECLARE c CURSOR FOR", "needs a query"),
            ("DECLARE c CURSOR FOR DELETE FROM watchlist", "not DELETE"),
            ("DECLARE c NO CURSOR FOR SELECT 1", "NO must be followed by SCROLL"),
            ("DECLARE c CURSOR WITH FOR SELECT 1", "HOLD"),
            ("DECLARE", "needs a name"),
        ] {
            let e = parse_declare(bad).unwrap_err();
            assert_eq!(e.code, "42601", "{bad}");
            assert!(e.message.contains(says), "{bad}: {}", e.message);
            assert!(e.fix.starts_with("write DECLARE"), "{bad}");
        }
    }

    #[test]
    fn fetch_reads_every_direction_postgresql_has() {
        use Direction::*;
        for (text, direction, name) in [
            ("FETCH FORWARD 100 FROM _psql_cursor", Forward(Some(100)), "_psql_cursor"),
            ("FETCH c", Forward(Some(1)), "c"),
            ("FETCH NEXT IN c", Forward(Some(1)), "c"),
            ("FETCH 5 c", Forward(Some(5)), "c"),
            ("FETCH -5 FROM c", Backward(Some(5)), "c"),
            ("FETCH ALL FROM \"Big One\"", Forward(None), "Big One"),
            ("FETCH FORWARD ALL FROM c", Forward(None), "c"),
            ("FETCH BACKWARD 2 FROM c", Backward(Some(2)), "c"),
            ("FETCH BACKWARD -2 FROM c", Forward(Some(2)), "c"),
            ("FETCH BACKWARD ALL FROM c", Backward(None), "c"),
            ("FETCH PRIOR FROM c", Backward(Some(1)), "c"),
            ("FETCH FIRST FROM c", Absolute(1), "c"),
            ("FETCH LAST FROM c", Absolute(-1), "c"),
            ("FETCH ABSOLUTE -3 FROM c", Absolute(-3), "c"),
            ("MOVE RELATIVE 0 IN c", Relative(0), "c"),
            ("MOVE FORWARD FROM c", Forward(Some(1)), "c"),
        ] {
            assert_eq!(parse_fetch(&words(text)), Ok((direction, name.to_owned())), "{text}");
        }
        for bad in ["FETCH", "FETCH SIDEWAYS FROM c", "FETCH ABSOLUTE FROM c", "FETCH 99999999999999999999 c"]
        {
            let e = parse_fetch(&words(bad)).unwrap_err();
            assert_eq!(e.code, "42601", "{bad}");
            assert!(e.fix.contains("FETCH [NEXT"), "{bad}");
        }
        assert_eq!(parse_close(&words("CLOSE ALL")), Ok(None));
        assert_eq!(parse_close(&words("CLOSE \"A\"")), Ok(Some("A".into())));
        assert_eq!(parse_close(&words("CLOSE")).unwrap_err().code, "42601");
    }

    fn cursor(rows: i64, per_batch: i64, scroll: Option<bool>) -> Cursor {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batches = (0..(rows + per_batch - 1) / per_batch)
            .map(|b| {
                let values = (b * per_batch + 1..=((b + 1) * per_batch).min(rows)).collect::<Vec<_>>();
                RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(values))]).unwrap()
            })
            .collect();
        let d = Declare {
            name: "c".into(),
            binary: false,
            scroll,
            hold: false,
            query: String::new(),
            query_at: 0,
            text: "DECLARE c CURSOR FOR SELECT n".into(),
        };
        Cursor::new(schema, batches, &d)
    }

    /// The values a step returns.
    fn take(c: &mut Cursor, direction: Direction) -> Vec<i64> {
        let picked = c.step(direction, "c").unwrap();
        values(&c.rows_of(&picked).assemble(&c.schema).unwrap())
    }

    fn values(batches: &[RecordBatch]) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| {
                let a = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                (0..a.len()).map(|i| a.value(i)).collect::<Vec<_>>()
            })
            .collect()
    }

    /// Each step's rows and position, as PostgreSQL 15 answers the same FETCHes over
    /// `SELECT generate_series(1, 5)` in a SCROLL cursor (checked with psql on this machine).
    #[test]
    fn fetches_move_as_postgresqls_do() {
        use Direction::*;
        let mut c = cursor(5, 2, Some(true));
        for (direction, rows) in [
            (Forward(Some(2)), vec![1, 2]),
            (Forward(Some(0)), vec![2]),
            (Backward(Some(5)), vec![1]),
            (Backward(Some(1)), vec![]),
            (Relative(0), vec![]),
            (Forward(None), vec![1, 2, 3, 4, 5]),
            (Forward(Some(1)), vec![]),
            (Backward(Some(2)), vec![5, 4]),
            (Relative(-2), vec![2]),
            (Absolute(-1), vec![5]),
            (Absolute(9), vec![]),
            (Backward(Some(1)), vec![5]),
            (Absolute(0), vec![]),
            (Forward(Some(1)), vec![1]),
            (Relative(7), vec![]),
            (Relative(-6), vec![]),
            (Forward(Some(1)), vec![1]),
            (Backward(None), vec![]),
            (Absolute(-9), vec![]),
            (Forward(Some(3)), vec![1, 2, 3]),
            (Relative(1), vec![4]),
            (Backward(None), vec![3, 2, 1]),
        ] {
            let picked = c.step(direction, "c").unwrap();
            let got = values(&c.rows_of(&picked).assemble(&c.schema).unwrap());
            assert_eq!(got, rows, "{direction:?}");
        }
    }

    #[test]
    fn a_no_scroll_cursor_only_goes_forward() {
        use Direction::*;
        let mut c = cursor(5, 3, Some(false));
        assert_eq!(take(&mut c, Forward(Some(3))), [1, 2, 3]);
        assert_eq!(take(&mut c, Relative(1)), [4]);
        // As PostgreSQL 15 answers after FETCH 4 from a NO SCROLL cursor (checked with psql).
        for back in [
            Backward(Some(1)),
            Backward(Some(0)),
            Forward(Some(0)),
            Absolute(4),
            Absolute(-1),
            Relative(0),
            Backward(None),
        ] {
            let e = c.step(back, "c").unwrap_err();
            assert_eq!(e.code, "55000", "{back:?}");
        }
        // A refused move does not move; ABSOLUTE forward is allowed.
        assert_eq!(take(&mut c, Absolute(5)), [5]);
    }

    #[test]
    fn cursors_are_bounded_and_close_as_promised() {
        let cursors = Cursors::new(1 << 20, Duration::from_secs(600));
        let (a, b) = (cursors.session(), cursors.session());
        cursors.declare(a, "c", cursor(10, 4, None)).unwrap();
        // One name per session; another session may use it.
        assert_eq!(cursors.declare(a, "c", cursor(1, 1, None)).unwrap_err().code, "42P03");
        // Asked before the query runs: the same refusal, and a free name passes.
        assert_eq!(cursors.admit(a, "c").unwrap_err().code, "42P03");
        assert!(cursors.admit(a, "d").is_ok() && cursors.admit(b, "c").is_ok());
        cursors.declare(b, "c", cursor(3, 4, None)).unwrap();
        let f = cursors.fetch(a, "c", Direction::Forward(Some(6)), true).unwrap();
        assert_eq!((values(&f.batches), f.count), ((1..=6).collect(), 6));
        // MOVE counts without rows.
        let m = cursors.fetch(a, "c", Direction::Forward(None), false).unwrap();
        assert_eq!((m.batches.len(), m.count), (0, 4));
        // Over the budget: refused, and what is held stays.
        let big = cursor(200_000, 50_000, None);
        assert!(big.bytes > 1 << 20);
        let e = cursors.declare(a, "big", big).unwrap_err();
        assert_eq!(e.code, "53200");
        assert!(e.fix.contains("server.query_memory_mb"), "{}", e.fix);
        assert!(cursors.fetch(b, "c", Direction::Forward(None), true).is_ok());
        // COMMIT closes the cursors without HOLD, of that session only.
        let mut held = cursor(2, 2, None);
        held.hold = true;
        cursors.declare(a, "held", held).unwrap();
        cursors.end_transaction(a);
        assert_eq!(cursors.fetch(a, "c", Direction::Forward(None), true).unwrap_err().code, "34000");
        assert!(cursors.fetch(a, "held", Direction::Forward(None), true).is_ok());
        assert!(cursors.schema(b, "c").is_some());
        // pg_cursors: the session's own, as declared.
        let listed = cursors.listing(a);
        assert_eq!(listed.num_rows(), 1);
        let names =
            listed.column(0).as_any().downcast_ref::<datafusion::arrow::array::StringArray>().unwrap();
        assert_eq!(names.value(0), "held");
        assert_eq!(cursors.listing(b).num_rows(), 1);
        // CLOSE ALL is the session's; an erasure closes every session's.
        cursors.close(a, None).unwrap();
        assert!(cursors.schema(a, "held").is_none() && cursors.schema(b, "c").is_some());
        cursors.declare(a, "x", cursor(1, 1, None)).unwrap();
        assert_eq!(cursors.close_everywhere(), 2);
        assert_eq!(cursors.held(), 0);
        assert_eq!(cursors.close(b, Some("c")).unwrap_err().code, "34000");
        // A session's cursors are counted.
        for i in 0..MAX_PER_SESSION {
            cursors.declare(a, &format!("c{i}"), cursor(1, 1, None)).unwrap();
        }
        assert_eq!(cursors.declare(a, "one_more", cursor(1, 1, None)).unwrap_err().code, "54000");
        assert_eq!(cursors.admit(a, "one_more").unwrap_err().code, "54000");
        // Past their age, cursors close.
        let young = Cursors::new(1 << 20, Duration::ZERO);
        young.declare(a, "c", cursor(1, 1, None)).unwrap();
        let e = young.fetch(a, "c", Direction::Forward(None), true).unwrap_err();
        assert!(e.fix.contains("retention.memory_s"), "{}", e.fix);
    }

    /// Where PostgreSQL's executor moves, one row at a time (`PortalRunFetch`): a model
    /// written apart from [`Cursor::step`]'s arithmetic, to check it on any moves.
    fn one_row_at_a_time(n: i64, pos: &mut i64, direction: Direction) -> Vec<i64> {
        let mut out = Vec::new();
        let on_row = |p: i64| (1..=n).contains(&p);
        let forward = |pos: &mut i64, times: u64, emit_last_only: bool, out: &mut Vec<i64>| {
            for i in 0..times {
                if *pos > n {
                    break;
                }
                *pos += 1;
                if on_row(*pos) && (!emit_last_only || i + 1 == times) {
                    out.push(*pos);
                }
            }
        };
        match direction {
            Direction::Forward(Some(0)) | Direction::Backward(Some(0)) | Direction::Relative(0) => {
                if on_row(*pos) {
                    out.push(*pos);
                }
            }
            Direction::Forward(k) => forward(pos, k.unwrap_or(u64::MAX), false, &mut out),
            Direction::Relative(k) if k > 0 => forward(pos, k as u64, true, &mut out),
            Direction::Backward(_) | Direction::Relative(_) => {
                let (times, last_only) = match direction {
                    Direction::Backward(k) => (k.unwrap_or(u64::MAX), false),
                    Direction::Relative(k) => (k.unsigned_abs(), true),
                    _ => unreachable!(),
                };
                for i in 0..times {
                    if *pos < 1 {
                        break;
                    }
                    *pos -= 1;
                    if on_row(*pos) && (!last_only || i + 1 == times) {
                        out.push(*pos);
                    }
                }
            }
            Direction::Absolute(k) => {
                *pos = if k >= 0 { k.min(n + 1) } else { (n + 1 + k).max(0) };
                if on_row(*pos) {
                    out.push(*pos);
                }
            }
        }
        out
    }

    fn direction() -> impl Strategy<Value = Direction> {
        prop_oneof![
            proptest::option::of(0u64..15).prop_map(Direction::Forward),
            proptest::option::of(0u64..15).prop_map(Direction::Backward),
            (-15i64..15).prop_map(Direction::Absolute),
            (-15i64..15).prop_map(Direction::Relative),
        ]
    }

    /// A FETCH as text, in one of the forms PostgreSQL reads for `direction`.
    fn fetch_text(direction: Direction, pick: u8) -> String {
        let d = match direction {
            Direction::Forward(None) => ["ALL", "FORWARD ALL"][usize::from(pick % 2)].to_owned(),
            Direction::Backward(None) => "BACKWARD ALL".to_owned(),
            Direction::Forward(Some(k)) => [format!("FORWARD {k}"), format!("{k}"), format!("BACKWARD -{k}")]
                [usize::from(pick % 3)]
            .clone(),
            Direction::Backward(Some(k)) => {
                [format!("BACKWARD {k}"), format!("-{k}")][usize::from(pick % 2)].clone()
            }
            Direction::Absolute(k) => format!("ABSOLUTE {k}"),
            Direction::Relative(k) => format!("relative {k}"),
        };
        format!("FETCH {d} {} \"c\"", ["FROM", "IN", ""][usize::from(pick % 3)])
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// Any text gets an answer (a refusal with a code and a fix, or a statement), never a
        /// panic; a DECLARE read keeps its query as written, at the offset it gives.
        #[test]
        fn the_cursor_statements_parsers_answer_anything(text in "\\PC{0,60}", prefix in proptest::sample::select(&[
            "", "DECLARE ", "DECLARE c ", "DECLARE c CURSOR FOR ", "DECLARE \"é\" NO SCROLL CURSOR WITH HOLD FOR ",
            "FETCH ", "MOVE FORWARD ", "CLOSE ",
        ][..])) {
            let text = format!("{prefix}{text}");
            match parse_declare(&text) {
                Ok(d) => {
                    prop_assert!(text[d.query_at..].starts_with(&d.query), "{text:?}: {d:?}");
                    prop_assert!(!d.query.is_empty());
                }
                Err(r) => prop_assert!(r.code == "42601" && r.fix.starts_with("write DECLARE")),
            }
            if let Some(w) = crate::rule::statement_words(&text) {
                if let Err(r) = parse_fetch(&w) {
                    prop_assert!(r.code == "42601" && r.fix.starts_with("write FETCH"));
                }
                if let Err(r) = parse_close(&w) {
                    prop_assert_eq!(r.code, "42601");
                }
            }
        }

        /// Every move, written in any of its forms, reads back as itself; on a SCROLL cursor
        /// of any size and batching it returns the rows, and ends where, PostgreSQL's
        /// one-row-at-a-time executor would; NO SCROLL refuses exactly the moves that go back.
        #[test]
        fn moves_are_postgresqls_row_at_a_time(
            n in 0i64..12,
            per_batch in 1i64..5,
            moves in proptest::collection::vec((direction(), any::<u8>()), 0..24),
        ) {
            let mut c = cursor(n, per_batch, Some(true));
            let mut forward_only = cursor(n, per_batch, Some(false));
            let mut pos = 0;
            for (direction, pick) in moves {
                let text = fetch_text(direction, pick);
                // (BACKWARD 0 is FORWARD 0: the current row again.)
                let same = if direction == Direction::Backward(Some(0)) { Direction::Forward(Some(0)) } else { direction };
                prop_assert_eq!(parse_fetch(&words(&text)), Ok((same, "c".to_owned())), "{}", text);
                let expected = one_row_at_a_time(n, &mut pos, direction);
                prop_assert_eq!(take(&mut c, direction), expected.clone(), "{:?}", direction);
                prop_assert_eq!(c.position as i64, pos);
                let before = forward_only.position;
                match forward_only.step(direction, "c") {
                    Ok(rows) => {
                        // Allowed: it went forward and never read a row twice.
                        prop_assert!(rows.iter().all(|&r| r > before), "{:?} from {}", direction, before);
                    }
                    Err(r) => {
                        prop_assert_eq!(r.code, "55000");
                        prop_assert_eq!(forward_only.position, before, "a refused move does not move");
                    }
                }
            }
        }
    }
}

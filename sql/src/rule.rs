//! Compiling an analyst's SQL rule: parse and plan with DataFusion, then lower the logical plan
//! onto vigil's incremental operators.
//!
//! The pipeline is `SQL text → sqlparser AST (window columns rewritten) → DataFusion
//! LogicalPlan (SqlToRel against the [`Catalog`]) → type coercion and subquery decorrelation →
//! [`Node`] tree` (see [`crate::plan`]). A rule file holds one or more statements, each either a
//! bare `SELECT` (named after the file) or `CREATE RULE name [WITH (...)] AS SELECT ...`. Every
//! error carries the file, line and column of the construct at fault and the fix.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::DataFusionError;
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::LogicalPlan;
use datafusion::optimizer::decorrelate_predicate_subquery::DecorrelatePredicateSubquery;
use datafusion::optimizer::extract_equijoin_predicate::ExtractEquijoinPredicate;
use datafusion::optimizer::optimize_projections::OptimizeProjections;
use datafusion::optimizer::simplify_expressions::SimplifyExpressions;
use datafusion::optimizer::{Analyzer, Optimizer, OptimizerContext, OptimizerRule};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::planner::{ParserOptions, SqlToRel};
use datafusion::sql::sqlparser::ast::{SetExpr, SetOperator, SetQuantifier, Spanned, Statement};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer, Word};

use vigil_engine::catalog::Catalog as Streams;

use crate::catalog::Catalog;
use crate::error::Kind;
use crate::error::{Position, Result, SqlError};
use crate::limits::{Limits, check_depth, check_keyword_nesting, check_length, on_big_stack};
use crate::plan::{Emit, Node, Unsupported, lower};
use crate::window::{rewrite_window_columns, rewrite_window_tables};

/// What rules support, quoted in every "unsupported" error.
pub const SUPPORTED: &str = "SELECT ... FROM a stream (detections, tracks, plate_reads, zone_density, camera_health, density_grid, line_crossings, zone_visits) \
     [JOIN a reference table (watchlist, zones) or another stream within an event-time bound] \
     [WHERE ...] [GROUP BY tumble|hop|session(event_time, ...), keys [HAVING ...]], \
     with DISTINCT, UNION [ALL], CASE, casts and scalar functions";

/// How a rule runs: the `WITH (...)` options of `CREATE RULE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleOptions {
    /// Alert severity of the rule's rows: `low`, `medium` or `high`.
    pub severity: String,
    /// When window aggregates speak.
    pub emit: Emit,
    /// Replay this much of the retained events when the rule is created, ms.
    pub backfill_ms: u64,
    /// How long stream rows stay joinable and distinct rows remembered, ms.
    pub retention_ms: u64,
}

impl Default for RuleOptions {
    fn default() -> Self {
        Self { severity: "medium".into(), emit: Emit::OnClose, backfill_ms: 0, retention_ms: 600_000 }
    }
}

/// A compiled SQL rule, ready to be rendered as a dataflow.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The rule's name.
    pub name: String,
    /// Alert severity of its rows (also in `options`).
    pub severity: String,
    /// The statement's SQL text.
    pub sql: String,
    /// The dataflow plan.
    pub node: Arc<Node>,
    /// Schema of the rule's output rows.
    pub schema: SchemaRef,
    /// DataFusion's logical plan, for `EXPLAIN RULE`.
    pub logical: String,
    /// The `WITH (...)` options.
    pub options: RuleOptions,
}

impl Rule {
    /// The dataflow plan as text, for `EXPLAIN RULE`.
    pub fn explain(&self) -> String {
        self.node.explain()
    }
}

/// The longest rule name (PostgreSQL's identifier limit).
pub const MAX_NAME: usize = 63;

/// A name as SQL reads it: unquoted, folded to lower case (`Gate_Dense` is `gate_dense`);
/// `"quoted"`, as written.
pub fn ident(w: &Word) -> String {
    match w.quote_style {
        Some(_) => w.value.clone(),
        None => w.value.to_lowercase(),
    }
}

/// Checks a rule name: letters, digits and `_`, not starting with a digit, at most
/// [`MAX_NAME`] characters, and not the name of a stream or table of `streams` (rules are
/// queried by name beside them). So a name is the same in CREATE, DROP, SUBSCRIBE, the rules
/// file and the rule's output directory, and two rules never write the same file.
pub fn check_name(name: &str, streams: &Streams) -> std::result::Result<(), (String, String)> {
    let valid = !name.is_empty()
        && name.chars().count() <= MAX_NAME
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !valid {
        return Err((
            format!("{name:?} is not a rule name"),
            format!(
                "name a rule with letters, digits and _ (not starting with a digit, at most {MAX_NAME} characters), such as gate_dense"
            ),
        ));
    }
    if streams.get(name).is_some() || RESERVED.contains(&name) {
        return Err((
            format!("{name} is the name of a stream or table"),
            "choose another name for the rule, such as dense_".to_owned() + name,
        ));
    }
    Ok(())
}

/// The words of a statement as SQL reads them (names through [`ident`]; parentheses,
/// semicolons, spaces and comments left out), for the statements vigil parses itself (`DROP
/// RULE "x"`, `SUBSCRIBE x`); `None` when the text does not tokenize (an open quote).
pub fn statement_words(text: &str) -> Option<Vec<String>> {
    let tokens = Tokenizer::new(&GenericDialect {}, text).tokenize().ok()?;
    Some(
        tokens
            .iter()
            .filter(|t| !matches!(t, Token::Whitespace(_) | Token::LParen | Token::RParen | Token::SemiColon))
            .map(|t| match t {
                Token::Word(w) => ident(w),
                other => other.to_string(),
            })
            .collect(),
    )
}

/// Names rules cannot take besides the catalog's: files the engine writes beside the rules'.
const RESERVED: [&str; 3] = ["late_events", "rules", "catalog"];

/// A bare query's rule name from a file name: what [`check_name`] accepts, other characters
/// as `_`.
fn name_from_file(stem: &str) -> String {
    let mut n: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .take(MAX_NAME - 4)
        .collect();
    if n.is_empty() || n.starts_with(|c: char| c.is_ascii_digit()) {
        n.insert(0, '_');
    }
    n
}

/// Compiles every statement of `sql` against `streams` (the streams and tables the engine
/// has); `source` names the text in errors (a file name). Bare `SELECT`s take `name` made a
/// rule name (`name_2`, `name_3`... when there are several).
///
/// Statements longer or deeper than [`Limits`] are refused; compiling runs on a thread with a
/// large stack ([`crate::limits`] says why).
pub fn compile(name: &str, sql: &str, source: &str, streams: &Streams) -> Result<Vec<Rule>> {
    on_big_stack(|| compile_here(name, sql, source, streams))
}

fn compile_here(name: &str, sql: &str, source: &str, streams: &Streams) -> Result<Vec<Rule>> {
    let statements = split_statements(sql, source)?;
    for st in &statements {
        check_length(&st.text, st.start.clone(), &Limits::default())?;
        check_keyword_nesting(&st.text, st.start.clone())?;
    }
    if statements.is_empty() {
        return Err(SqlError::user(
            Some(Position { source: source.into(), line: 1, column: 1 }),
            "no SQL statement found",
            "write a rule such as `SELECT camera_id, event_time, score FROM detections WHERE class = 'person' AND score > 0.9`",
        ));
    }
    let mut bare = 0;
    let mut rules: Vec<Rule> = Vec::new();
    for st in statements {
        let (rule_name, options, text) = match parse_create_rule(&st, sql, source)? {
            Some(c) => c,
            None => {
                bare += 1;
                let base = name_from_file(name);
                let n = if bare == 1 { base } else { format!("{base}_{bare}") };
                (n, RuleOptions::default(), st.blanked.clone())
            }
        };
        if let Err((message, fix)) = check_name(&rule_name, streams) {
            return Err(SqlError::user(Some(st.start.clone()), message, fix).kind(Kind::Invalid));
        }
        if let Some(prev) = rules.iter().find(|r| r.name == rule_name) {
            return Err(SqlError::user(
                Some(st.start.clone()),
                format!("a second rule named {rule_name}"),
                format!("rename one of them; the first is `{}`", first_line(&prev.sql)),
            ));
        }
        rules.push(compile_query(&rule_name, options, &text, &st.text, source, streams)?);
    }
    Ok(rules)
}

fn first_line(s: &str) -> &str {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or(s).trim()
}

/// Reads and compiles a rule file; bare SELECTs are named after the file's stem.
///
/// The file is read with a size limit, and a file that does not start with a statement is
/// refused without quoting it (a wrong path must not print another file's contents).
pub fn compile_file(path: &Path, streams: &Streams) -> Result<Vec<Rule>> {
    let sql = read_rule_file(path)?;
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("rule");
    compile(name, &sql, &path.display().to_string(), streams)
}

/// The text of a rule file (or of the rules catalog), refused without being quoted when it is
/// too large, not text, or does not start with a SQL statement.
pub fn read_rule_file(path: &Path) -> Result<String> {
    let sql = vigil_engine::text_file::read(path, "rule file", 4 * vigil_engine::text_file::SMALL).map_err(
        |e| match e {
            vigil_engine::EngineError::Io { source, .. } => {
                SqlError::Io { path: path.display().to_string(), source }
            }
            other => SqlError::user(None, other.to_string(), "give the path of a .sql file of rules"),
        },
    )?;
    let first = Tokenizer::new(&GenericDialect {}, &sql).tokenize().ok().and_then(|t| {
        t.into_iter().find(|t| !matches!(t, Token::Whitespace(_))).map(|t| match t {
            Token::Word(w) => w.value.to_ascii_lowercase(),
            _ => String::new(),
        })
    });
    match first.as_deref() {
        None | Some("select" | "with" | "create" | "values") => Ok(sql),
        Some(_) => Err(SqlError::user(
            Some(Position { source: path.display().to_string(), line: 1, column: 1 }),
            "the file does not start with a SQL statement",
            "give the path of a .sql file of rules (SELECT ... or CREATE RULE ...)",
        )),
    }
}

/// One statement of a text: its own text, and the whole text with everything else blanked
/// (so that the parser's line and column numbers are those of the file).
#[derive(Debug)]
pub struct StatementText {
    /// The statement alone, trimmed.
    pub text: String,
    /// The whole text, blank outside the statement.
    pub blanked: String,
    /// Where it starts.
    pub start: Position,
    /// Its tokens, without whitespace and comments.
    pub tokens: Vec<TokenWithSpan>,
}

/// Splits `sql` into statements at top-level semicolons.
pub fn split_statements(sql: &str, source: &str) -> Result<Vec<StatementText>> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location().map_err(|e| {
        SqlError::user(
            Some(Position {
                source: source.into(),
                line: e.location.line.max(1),
                column: e.location.column.max(1),
            }),
            format!("syntax error: {}", e.message),
            "correct the SQL at this position",
        )
    })?;
    let offsets = line_offsets(sql);
    let offset = |l: datafusion::sql::sqlparser::tokenizer::Location| -> usize {
        let line_start = offsets.get(l.line.saturating_sub(1) as usize).copied().unwrap_or(sql.len());
        let line = &sql[line_start..];
        line.char_indices()
            .nth(l.column.saturating_sub(1) as usize)
            .map_or(sql.len(), |(i, _)| line_start + i)
    };
    let mut out = Vec::new();
    let mut current: Vec<TokenWithSpan> = Vec::new();
    let flush = |current: &mut Vec<TokenWithSpan>, out: &mut Vec<StatementText>| {
        let meaningful: Vec<TokenWithSpan> =
            current.drain(..).filter(|t| !matches!(t.token, Token::Whitespace(_) | Token::EOF)).collect();
        let (Some(first), Some(last)) = (meaningful.first(), meaningful.last()) else { return };
        let (a, b) = (offset(first.span.start), offset(last.span.end));
        let blanked: String =
            sql.char_indices().map(|(i, c)| if (a..b).contains(&i) || c == '\n' { c } else { ' ' }).collect();
        out.push(StatementText {
            text: sql[a..b].to_owned(),
            blanked,
            start: Position {
                source: source.into(),
                line: first.span.start.line,
                column: first.span.start.column,
            },
            tokens: meaningful,
        });
    };
    for t in tokens {
        if t.token == Token::SemiColon {
            flush(&mut current, &mut out);
        } else {
            current.push(t);
        }
    }
    flush(&mut current, &mut out);
    Ok(out)
}

fn line_offsets(s: &str) -> Vec<usize> {
    std::iter::once(0).chain(s.match_indices('\n').map(|(i, _)| i + 1)).collect()
}

fn word(t: &TokenWithSpan) -> Option<String> {
    match &t.token {
        Token::Word(w) => Some(w.value.to_ascii_lowercase()),
        _ => None,
    }
}

/// `CREATE RULE name [WITH (key = 'value', ...)] AS <query>`: the name, the options, and the
/// text with the prefix blanked. `None` for a bare query.
fn parse_create_rule(
    st: &StatementText,
    _sql: &str,
    source: &str,
) -> Result<Option<(String, RuleOptions, String)>> {
    let t = &st.tokens;
    let at = |i: usize| {
        let tok = t.get(i).or(t.last()).expect("a statement has tokens");
        Position { source: source.into(), line: tok.span.start.line, column: tok.span.start.column }
    };
    if word(&t[0]).as_deref() != Some("create") || t.get(1).and_then(word).as_deref() != Some("rule") {
        return Ok(None);
    }
    let usage = "write CREATE RULE name [WITH (severity = 'high', backfill = '10 minutes')] AS SELECT ...";
    let name = match t.get(2).map(|x| &x.token) {
        Some(Token::Word(w)) if w.quote_style.is_none() || w.quote_style == Some('"') => ident(w),
        _ => return Err(SqlError::user(Some(at(2)), "CREATE RULE needs a rule name", usage)),
    };
    let mut i = 3;
    let mut options = RuleOptions::default();
    if t.get(i).and_then(word).as_deref() == Some("with") {
        i += 1;
        if t.get(i).map(|x| &x.token) != Some(&Token::LParen) {
            return Err(SqlError::user(Some(at(i)), "expected ( after WITH", usage));
        }
        i += 1;
        loop {
            let key = t
                .get(i)
                .and_then(word)
                .ok_or_else(|| SqlError::user(Some(at(i)), "expected an option name", usage))?;
            let key_pos = at(i);
            if t.get(i + 1).map(|x| &x.token) != Some(&Token::Eq) {
                return Err(SqlError::user(Some(at(i + 1)), format!("expected = after {key}"), usage));
            }
            let value = match t.get(i + 2).map(|x| &x.token) {
                Some(Token::SingleQuotedString(v)) => v.clone(),
                Some(Token::Number(v, _)) => v.clone(),
                Some(Token::Word(w)) => w.value.clone(),
                _ => {
                    return Err(SqlError::user(
                        Some(at(i + 2)),
                        format!("expected a value for {key}"),
                        usage,
                    ));
                }
            };
            let value_pos = at(i + 2);
            apply_option(&mut options, &key, &value, key_pos, value_pos)?;
            i += 3;
            match t.get(i).map(|x| &x.token) {
                Some(Token::Comma) => i += 1,
                Some(Token::RParen) => {
                    i += 1;
                    break;
                }
                _ => return Err(SqlError::user(Some(at(i)), "expected , or ) in the WITH options", usage)),
            }
        }
    }
    if t.get(i).and_then(word).as_deref() != Some("as") {
        return Err(SqlError::user(Some(at(i)), "expected AS before the rule's query", usage));
    }
    // Blank the prefix up to and including AS, keeping positions.
    let as_end = t[i].span.end;
    let mut line = 1u64;
    let mut col = 1u64;
    let mut started = false;
    let blanked: String = st
        .blanked
        .chars()
        .map(|c| {
            let before_end = (line, col) < (as_end.line, as_end.column);
            let out = if before_end && c != '\n' && !started { ' ' } else { c };
            if !before_end {
                started = true;
            }
            if c == '\n' {
                line += 1;
                col = 1;
            } else {
                col += 1;
            }
            out
        })
        .collect();
    Ok(Some((name, options, blanked)))
}

fn apply_option(
    o: &mut RuleOptions,
    key: &str,
    value: &str,
    key_pos: Position,
    value_pos: Position,
) -> Result<()> {
    match key {
        "severity" => match value.to_ascii_lowercase().as_str() {
            v @ ("low" | "medium" | "high") => o.severity = v.to_owned(),
            _ => {
                return Err(SqlError::user(
                    Some(value_pos),
                    format!("unknown severity '{value}'"),
                    "use 'low', 'medium' or 'high'",
                )
                .kind(Kind::InvalidParameter));
            }
        },
        "emit" => match value.to_ascii_lowercase().as_str() {
            "close" | "on_close" => o.emit = Emit::OnClose,
            "updates" => o.emit = Emit::Updates,
            _ => {
                return Err(SqlError::user(
                    Some(value_pos),
                    format!("unknown emit mode '{value}'"),
                    "use 'close' or 'updates'",
                )
                .kind(Kind::InvalidParameter));
            }
        },
        "backfill" | "retention" => {
            let ms = parse_duration(value).ok_or_else(|| {
                SqlError::user(
                    Some(value_pos),
                    format!("'{value}' is not a duration"),
                    "write a duration such as '10 minutes' or '30 s'",
                )
                .kind(Kind::InvalidParameter)
            })?;
            if key == "backfill" {
                o.backfill_ms = ms;
            } else {
                o.retention_ms = ms;
            }
        }
        _ => {
            return Err(SqlError::user(
                Some(key_pos),
                format!("unknown rule option {key}"),
                "the options are severity, emit, backfill and retention",
            )
            .kind(Kind::InvalidParameter));
        }
    }
    Ok(())
}

/// Parses `10 minutes`, `30 s`, `2 hours`, `500 ms` into milliseconds.
pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let n: f64 = s[..split].trim().parse().ok()?;
    let unit = s[split..].trim().to_ascii_lowercase();
    let ms = match unit.as_str() {
        "ms" | "millisecond" | "milliseconds" => 1.0,
        "" | "s" | "sec" | "second" | "seconds" => 1_000.0,
        "m" | "min" | "minute" | "minutes" => 60_000.0,
        "h" | "hour" | "hours" => 3_600_000.0,
        "d" | "day" | "days" => 86_400_000.0,
        _ => return None,
    };
    (n >= 0.0 && n.is_finite()).then(|| (n * ms).round() as u64)
}

fn compile_query(
    name: &str,
    options: RuleOptions,
    blanked: &str,
    text: &str,
    source: &str,
    streams: &Streams,
) -> Result<Rule> {
    let sql = blanked;
    let mut statements = DFParser::parse_sql_with_dialect(sql, &GenericDialect {})
        .map_err(|e| from_datafusion(e, sql, source, None))?;
    let Some(mut st) = statements.pop_front() else {
        return Err(SqlError::user(None, "empty rule", "write a SELECT"));
    };
    let at = |loc: datafusion::sql::sqlparser::tokenizer::Location| Position {
        source: source.to_owned(),
        line: loc.line.max(1),
        column: loc.column.max(1),
    };
    let DfStatement::Statement(stmt) = &mut st else {
        return Err(
            SqlError::user(None, "only SELECT statements can be rules", SUPPORTED).kind(Kind::Unsupported)
        );
    };
    let start = at(stmt.span().start);
    check_depth(stmt, &Limits::default(), start.clone())?;
    let Statement::Query(query) = stmt.as_ref() else {
        return Err(SqlError::user(
            Some(start),
            "only SELECT statements can be rules",
            format!("write {SUPPORTED}"),
        ));
    };
    let unsupported = |what: &str, pos: Option<Position>, fix: Option<&str>| {
        SqlError::user(
            Some(pos.unwrap_or_else(|| start.clone())),
            format!("{what} is not supported in rules"),
            fix.map_or_else(|| format!("write {SUPPORTED}"), str::to_owned),
        )
        .kind(Kind::Unsupported)
    };
    if query.order_by.is_some() {
        return Err(unsupported(
            "ORDER BY (a stream has no end to sort)",
            locate_word(sql, "ORDER", &start),
            None,
        ));
    }
    if query.limit_clause.is_some() {
        return Err(unsupported(
            "LIMIT (a stream has no end to count to)",
            locate_word(sql, "LIMIT", &start),
            None,
        ));
    }
    if let Some((op, quantifier)) = set_operation(query.body.as_ref()) {
        if op != SetOperator::Union {
            let w = if op == SetOperator::Intersect { "INTERSECT" } else { "EXCEPT" };
            return Err(unsupported(
                w,
                locate_word(sql, w, &start),
                Some(
                    "combine streams with UNION ALL, or filter with WHERE ... NOT IN (SELECT ... FROM a reference table)",
                ),
            ));
        }
        let _ = quantifier;
    }
    rewrite_window_tables(stmt.as_mut()).map_err(|e| {
        SqlError::user(locate_word(sql, &e.word, &start).or(Some(start.clone())), e.message, e.fix)
            .kind(Kind::Unsupported)
    })?;
    rewrite_window_columns(stmt.as_mut());
    crate::to_char::rewrite(stmt.as_mut(), source)?;
    // `plate = ANY('{…}')`, `timezone(…)`: as ad-hoc queries read them.
    crate::functions::rewrite_pg_forms(stmt.as_mut());

    let catalog = Catalog::new(streams);
    let options_df = ParserOptions::default().with_collect_spans(true);
    let planner = SqlToRel::new_with_options(&catalog, options_df);
    let plan = planner
        .statement_to_plan(st)
        .map_err(|e| from_datafusion(e, sql, source, Some(Reads::Rule(&start, &catalog))))?;
    let config = ConfigOptions::default();
    // Casts to text as PostgreSQL's, as in ad-hoc queries ([`crate::functions::PgTextCasts`]).
    let mut analyzer = Analyzer::new();
    analyzer.rules.push(Arc::new(crate::functions::PgTextCasts));
    let plan = analyzer
        .execute_and_check(plan, &config, |_, _| {})
        .map_err(|e| from_datafusion(e, sql, source, Some(Reads::Rule(&start, &catalog))))?;
    // Before `decorrelate`, whose simplification would fold `now()` into the time of creation.
    if let Some(words) = reads_the_clock(&plan) {
        let (pos, word) = locate_any(sql, words, &start).unwrap_or((start.clone(), words[0].to_owned()));
        let word = if ["now", "age"].iter().any(|f| word.eq_ignore_ascii_case(f)) {
            format!("{word}()")
        } else {
            word
        };
        return Err(SqlError::user(
            Some(pos),
            format!("{word} (it reads the time now) is not supported in rules"),
            "a rule sees each event as it arrives, so it needs no filter on the time now: filter where \
             you read the rule (SELECT ... FROM <rule> WHERE event_time > now() - INTERVAL '5 minutes'), \
             or count over a window (GROUP BY tumble(event_time, INTERVAL '5 minutes'), ...)",
        )
        .kind(Kind::Unsupported));
    }
    let plan = decorrelate(plan)
        .map_err(|e| from_datafusion(e, sql, source, Some(Reads::Rule(&start, &catalog))))?;
    let logical = plan.display_indent_schema().to_string();
    let node = lower(&plan, streams, options.emit).map_err(|u: Unsupported| {
        let pos = u.word.and_then(|w| locate_word(sql, w, &start)).unwrap_or(start.clone());
        let message = if u.wrong_argument { u.what } else { format!("{} is not supported in rules", u.what) };
        let kind = if u.wrong_argument { Kind::InvalidParameter } else { Kind::Unsupported };
        SqlError::user(Some(pos), message, u.fix.unwrap_or_else(|| format!("write {SUPPORTED}"))).kind(kind)
    })?;
    if node.is_reference() {
        return Err(SqlError::user(
            Some(start),
            "reading only reference tables (the rule would never see an event) is not supported in rules",
            format!("read a stream: {}", streams.streams().map(|s| s.name).collect::<Vec<_>>().join(", ")),
        )
        .kind(Kind::Unsupported));
    }
    let schema = node.schema();
    Ok(Rule {
        name: name.to_owned(),
        severity: options.severity.clone(),
        sql: text.to_owned(),
        node: Arc::new(node),
        schema,
        logical,
        options,
    })
}

/// The functions that read the time now, with the words that call them (`age(b)`, one
/// argument, counts from midnight today). A rule's plan is built once and runs for months:
/// simplified, they would be the time the rule was created, for good.
const CLOCK_FUNCTIONS: [(&str, &[&str]); 4] = [
    ("now", &["now", "current_timestamp", "localtimestamp"]),
    ("current_date", &["current_date"]),
    ("current_time", &["current_time", "localtime"]),
    ("age", &["age"]),
];

/// The words of the first of [`CLOCK_FUNCTIONS`] the plan (its subqueries included) calls.
fn reads_the_clock(plan: &LogicalPlan) -> Option<&'static [&'static str]> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::Expr;
    let mut found = None;
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                if let Expr::ScalarFunction(f) = e
                    && let Some((_, words)) = CLOCK_FUNCTIONS.iter().find(|(name, _)| *name == f.func.name())
                    && (f.func.name() != "age" || f.args.len() == 1)
                {
                    found = Some(*words);
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    found
}

fn set_operation(body: &SetExpr) -> Option<(SetOperator, SetQuantifier)> {
    match body {
        SetExpr::SetOperation { op, set_quantifier, left, right } => {
            if *op != SetOperator::Union {
                return Some((*op, *set_quantifier));
            }
            set_operation(left).or_else(|| set_operation(right)).or(Some((*op, *set_quantifier)))
        }
        SetExpr::Query(q) => set_operation(q.body.as_ref()),
        _ => None,
    }
}

/// `x IN (SELECT ...)` and `EXISTS (...)` become semi and anti joins, equalities in a join's
/// ON become its keys, scans keep only the columns used, and expressions are simplified
/// (DataFusion's own rules; the rest of its optimizer assumes a bounded input and is not run).
fn decorrelate(plan: LogicalPlan) -> std::result::Result<LogicalPlan, DataFusionError> {
    let rules: Vec<Arc<dyn OptimizerRule + Send + Sync>> = vec![
        Arc::new(DecorrelatePredicateSubquery::new()),
        Arc::new(ExtractEquijoinPredicate::new()),
        // Some functions (coalesce, ...) only run once simplified.
        Arc::new(SimplifyExpressions::new()),
        // Each scan reads only the columns the rule uses, so its filters copy those alone (a
        // detection has 13 columns; a rule reads three or four).
        Arc::new(OptimizeProjections::new()),
    ];
    Optimizer::with_rules(rules).optimize(plan, &OptimizerContext::new(), |_, _| {})
}

/// What the SQL a DataFusion error came from reads.
pub(crate) enum Reads<'a> {
    /// A rule: where its SELECT starts, and the catalog its planner looked tables up in.
    Rule(&'a Position, &'a Catalog),
    /// An ad-hoc query: the names of the tables the user may query.
    Query(&'a [String]),
}

/// Turns a DataFusion error into a user error with a position (`reads` is `None` while the
/// SQL is only parsed).
pub(crate) fn from_datafusion(e: DataFusionError, sql: &str, source: &str, reads: Option<Reads>) -> SqlError {
    let at = |line: u64, column: u64| Position {
        source: source.to_owned(),
        line: line.max(1),
        column: column.max(1),
    };
    let missed_table = match &reads {
        Some(Reads::Rule(_, catalog)) => catalog.missed_a_table(),
        _ => false,
    };
    let kind = error_kind(&e, missed_table);
    if let Some(d) = e.diagnostic() {
        let position = d.span.map(|s| at(s.start.line, s.start.column));
        let mut fix: Vec<String> = d.helps.iter().map(|h| h.message.clone()).collect();
        fix.extend(d.notes.iter().map(|n| n.message.clone()));
        if fix.is_empty() {
            let names = match &reads {
                Some(Reads::Rule(_, catalog)) => catalog.table_names().join(", "),
                Some(Reads::Query(names)) => names.join(", "),
                None => String::new(),
            };
            if d.message.contains("'pg_catalog.") || d.message.contains("'information_schema.") {
                // psql's \d commands and GUI tools' browsers read PostgreSQL's catalog.
                fix.push(match &reads {
                    Some(Reads::Rule(..)) => "a rule reads vigil's streams, not PostgreSQL's catalog: \
                                              SHOW STREAMS lists them"
                        .into(),
                    _ => "vigil keeps the parts of PostgreSQL's catalog psql's \\d commands read, not this one: \
                          SHOW STREAMS lists what you may read, SHOW COLUMNS FROM name its columns"
                        .into(),
                });
            } else if d.message.starts_with("table ") && !names.is_empty() {
                fix.push(format!("read one of the streams: {names}"));
            } else if let Some(columns) = columns_in_scope(&e) {
                // DataFusion suggests a column only when one is spelled alike.
                fix.push(format!("the columns here are {columns}"));
            } else {
                fix.push("check the names against the stream's columns".into());
            }
        }
        if let Some(p) = position {
            // An ad-hoc query's tables are in DataFusion's default catalog and schema.
            let message = d.message.replace("'datafusion.public.", "'");
            return SqlError::user(Some(p), message, fix.join("; ")).kind(kind);
        }
    }
    let root = e.find_root();
    let text = root.strip_backtrace();
    // sqlparser reports "... at Line: L, Column: C".
    if let Some(i) = text.rfind("at Line: ") {
        let nums: Vec<u64> = text[i..]
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .filter_map(|s| s.parse().ok())
            .collect();
        if let [line, column, ..] = nums[..] {
            let message = text[..i]
                .trim()
                .trim_start_matches("SQL error: ")
                .trim_start_matches("ParserError(\"")
                .to_owned();
            return SqlError::user(
                Some(at(line, column)),
                format!("syntax error: {message}"),
                "correct the SQL at this position",
            );
        }
    }
    if text.contains("found: EOF") {
        // sqlparser gives no position for a statement cut short: point just past the end.
        let line = sql.lines().count().max(1) as u64;
        let column = sql.lines().last().map_or(0, |l| l.chars().count()) as u64 + 1;
        let message = text.trim_start_matches("SQL error: ").to_owned();
        return SqlError::user(
            Some(at(line, column)),
            format!("syntax error: the statement ends too early ({message})"),
            "complete the statement",
        );
    }
    // Where to look for a name the error gives: from the rule's SELECT, or the query's start.
    let from = match &reads {
        Some(Reads::Rule(start, _)) => (*start).clone(),
        _ => at(1, 1),
    };
    if let Some(e) = planning_error(root, sql, &from) {
        return e;
    }
    // Unknown tables and columns carry a diagnostic with a span (handled above); what is left
    // (mostly type errors) is placed at the statement.
    if let Some(Reads::Rule(start, _)) = reads {
        return SqlError::user(
            Some(start.clone()),
            text,
            "correct the rule; type errors need matching types or a CAST",
        )
        .kind(if kind == Kind::Invalid { Kind::Datatype } else { kind });
    }
    // DataFusion turns a correlated subquery into a join only when equalities tie it to the
    // outer query; others (`WHERE r.event_time >= b.t`) reach the physical planner unplanned.
    let subquery = ["ScalarSubquery", "Exists", "InSubquery"]
        .iter()
        .find(|s| text.contains(&format!("does not support logical expression {s}")));
    if let Some(which) = subquery {
        let what = match *which {
            "ScalarSubquery" => "a subquery giving a value",
            "Exists" => "an EXISTS subquery",
            _ => "an IN subquery",
        };
        return SqlError::user(
            None,
            format!(
                "{what} that refers to the outer query other than by equalities (such as a time range) \
                 is not supported"
            ),
            "write it as a join: FROM outer LEFT JOIN inner ON <the subquery's conditions> GROUP BY the outer \
             columns, counting count(inner.column); or tie the subquery to the outer query by = only",
        )
        .kind(Kind::Unsupported);
    }
    let fix = match kind {
        // `now() - '1 day'`: PostgreSQL refuses it too (it reads the text as a timestamp).
        _ if text.contains("Cannot coerce arithmetic expression") && text.contains("Utf8") => {
            "give the quoted value its type: INTERVAL '1 day', TIMESTAMPTZ '2026-06-14 20:00+01'"
        }
        _ if text.contains("Error parsing timestamp from") => {
            "write a time as '2026-06-14 20:00:00' (or '2026-06-14 20:00'), with an offset such as +01 after it \
             if it is not in the session's TimeZone"
        }
        Kind::Invalid => {
            "correct the SQL (see the DataFusion SQL reference); type errors need matching types or a CAST"
        }
        _ => "correct the SQL",
    };
    SqlError::user(None, text, fix).kind(kind)
}

/// DataFusion's planning errors that carry no diagnostic, in PostgreSQL's words, placed at the
/// name they are about (found from `from` on): a function given types it does not take
/// (DataFusion's text calls it an internal error and names Arrow's types), a column not found
/// where no span is kept (`ORDER BY`), two tables under one name.
fn planning_error(root: &DataFusionError, sql: &str, from: &Position) -> Option<SqlError> {
    use datafusion::common::SchemaError;
    let text = root.to_string();
    const NO_MATCH: &str = "No function matches the given name and argument types '";
    if let Some(i) = text.find(NO_MATCH) {
        let call = &text[i + NO_MATCH.len()..];
        let call = &call[..call.find("'.").unwrap_or(call.len())];
        let name = call.split('(').next().unwrap_or(call);
        let mut forms: Vec<String> = Vec::new();
        for form in text.split("Candidate functions:").nth(1).unwrap_or("").lines().map(str::trim) {
            let form = pg_call(form);
            if !form.is_empty() && !forms.contains(&form) {
                forms.push(form);
            }
        }
        let fix = if forms.is_empty() {
            "CAST the arguments to the types the function takes".to_owned()
        } else {
            format!("it takes {}: CAST the arguments (x::type) to match one of these", forms.join(", "))
        };
        return Some(
            SqlError::user(
                locate_word(sql, name, from),
                format!("function {} does not exist", pg_call(call)),
                fix,
            )
            .kind(Kind::UndefinedFunction),
        );
    }
    let DataFusionError::SchemaError(err, _) = root else { return None };
    match &**err {
        SchemaError::FieldNotFound { field, .. } => Some(
            SqlError::user(
                locate_word(sql, &field.name, from),
                format!("column '{}' not found", field.name),
                columns_in_scope(root).map_or("check the names against the stream's columns".into(), |c| {
                    format!("the columns here are {c}")
                }),
            )
            .kind(Kind::UndefinedColumn),
        ),
        SchemaError::DuplicateQualifiedField { qualifier, .. } => {
            let alias = qualifier.table();
            Some(
                SqlError::user(
                    locate_word(sql, alias, from),
                    format!("table name \"{alias}\" specified more than once"),
                    "give each table in FROM its own name (FROM tracks a JOIN tracks b …)",
                )
                .kind(Kind::DuplicateAlias),
            )
        }
        _ => None,
    }
}

/// A call as DataFusion's signature errors write it (`sum(Utf8)`, `sum(Decimal)`) with
/// PostgreSQL's names of the types (`sum(text)`, `sum(numeric)`), as `\d` names the columns.
fn pg_call(call: &str) -> String {
    let Some((name, args)) = call.split_once('(') else { return call.to_owned() };
    let args = args.strip_suffix(')').unwrap_or(args);
    // Arguments split at the commas outside brackets (`Timestamp(ns, "UTC")` is one).
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in args.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&args[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&args[start..]);
    let names: Vec<String> = parts
        .iter()
        // A named parameter (`start_pos: int64`): its type.
        .map(|a| a.rsplit(": ").next().unwrap_or(a).trim())
        .filter(|a| !a.is_empty())
        .map(|a| match a.parse::<datafusion::arrow::datatypes::DataType>() {
            Ok(
                datafusion::arrow::datatypes::DataType::Decimal128(..)
                | datafusion::arrow::datatypes::DataType::Decimal256(..),
            ) => "numeric".to_owned(),
            Ok(t) => crate::server::types::type_name(&t).name.to_owned(),
            // Signature classes, not types.
            Err(_) => match a.to_ascii_lowercase().as_str() {
                "string" | "utf8" => "text".to_owned(),
                "decimal" => "numeric".to_owned(),
                "int64" => "bigint".to_owned(),
                "int32" => "integer".to_owned(),
                "float64" => "double precision".to_owned(),
                "float32" => "real".to_owned(),
                "duration" | "interval" => "interval".to_owned(),
                "timestamp" => "timestamp with time zone".to_owned(),
                other => other.to_owned(),
            },
        })
        .collect();
    format!("{name}({})", names.join(", "))
}

/// The columns a query could have meant, when DataFusion found a column not among them:
/// `d.camera_id, d.event_time, …` (each once, qualified as the query may write it), at most 40.
fn columns_in_scope(e: &DataFusionError) -> Option<String> {
    use datafusion::common::SchemaError;
    let DataFusionError::SchemaError(err, _) = e.find_root() else { return None };
    let SchemaError::FieldNotFound { valid_fields, .. } = &**err else { return None };
    let mut seen = std::collections::HashSet::new();
    let names: Vec<String> = valid_fields
        .iter()
        .map(|c| c.flat_name().replace("datafusion.public.", ""))
        .filter(|n| seen.insert(n.clone()))
        .collect();
    match names.len() {
        0 => None,
        n if n > 40 => Some(format!("{}, … ({n} in all)", names[..40].join(", "))),
        _ => Some(names.join(", ")),
    }
}

/// The SQLSTATE class of a planning error; `missed_table`: the planner looked up a table that
/// is not there.
fn error_kind(e: &DataFusionError, missed_table: bool) -> Kind {
    use datafusion::common::SchemaError;
    match e.find_root() {
        DataFusionError::SQL(..) => Kind::Syntax,
        DataFusionError::SchemaError(e, _) if matches!(**e, SchemaError::FieldNotFound { .. }) => {
            Kind::UndefinedColumn
        }
        DataFusionError::SchemaError(..) => Kind::Invalid,
        _ if missed_table => Kind::UndefinedTable,
        DataFusionError::Plan(m) if m.starts_with("table '") && m.ends_with("' not found") => {
            Kind::UndefinedTable
        }
        // DataFusion has no variant for an unknown function; its planner names it this way.
        DataFusionError::Plan(m) if m.starts_with("Invalid function") => Kind::UndefinedFunction,
        _ => Kind::Invalid,
    }
}

/// Finds the first token equal to `word` (case-insensitive) at or after `from`.
fn locate_word(sql: &str, word: &str, from: &Position) -> Option<Position> {
    locate_any(sql, &[word], from).map(|(at, _)| at)
}

/// Finds the first token equal to one of `words` (case-insensitive) at or after `from`, and
/// how it was written.
fn locate_any(sql: &str, words: &[&str], from: &Position) -> Option<(Position, String)> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location().ok()?;
    tokens
        .into_iter()
        .filter(|t| (t.span.start.line, t.span.start.column) >= (from.line, from.column))
        .find_map(|t| match t.token {
            Token::Word(w) if words.iter().any(|c| w.value.eq_ignore_ascii_case(c)) => {
                let at = Position {
                    source: from.source.clone(),
                    line: t.span.start.line,
                    column: t.span.start.column,
                };
                Some((at, w.value))
            }
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::pg_call;

    #[test]
    fn calls_are_named_with_postgresqls_types() {
        assert_eq!(pg_call("sum(Utf8)"), "sum(text)");
        assert_eq!(
            pg_call("date_trunc(Utf8, Timestamp(ns, \"UTC\"))"),
            "date_trunc(text, timestamp with time zone)"
        );
        assert_eq!(pg_call("substr(str: string, start_pos: int64)"), "substr(text, bigint)");
        assert_eq!(pg_call("now()"), "now()");
    }

    proptest! {
        /// DataFusion's message is read, not trusted: any text gives a call back, no panic.
        #[test]
        fn any_signature_text_reads(text in "\\PC{0,40}") {
            let _ = pg_call(&text);
            let _ = pg_call(&format!("f({text})"));
        }
    }
}

//! Compiling an analyst's SQL rule: parse and plan with DataFusion, then lower the logical plan
//! onto vectorized steps that run on the live stream's Arrow batches.
//!
//! The pipeline is `SQL text → sqlparser AST → DataFusion LogicalPlan (SqlToRel against the
//! [`Catalog`]) → type coercion (DataFusion's analyzer) → [`Plan`]`. A plan is a source stream and
//! a list of [`Step`]s; each step holds DataFusion `PhysicalExpr`s, evaluated on whole batches.
//! This issue's lowering accepts scans, filters, projections and aliases; any other plan node is
//! rejected when the rule is compiled, naming the construct and its position, never run with
//! different semantics. Later lowerings (windows, joins, aggregates) add steps and stateful
//! operators to the same [`Plan`].

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::{DFSchema, DataFusionError};
use datafusion::config::ConfigOptions;
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::LogicalPlan;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::optimizer::Analyzer;
use datafusion::physical_expr::{PhysicalExpr, create_physical_expr};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::planner::{ParserOptions, SqlToRel};
use datafusion::sql::sqlparser::ast::{SetExpr, Spanned, Statement};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use vigil_engine::schema::StreamKind;

use crate::catalog::{Catalog, STREAMS};
use crate::error::{Position, Result, SqlError};

/// What this lowering supports, quoted in every "unsupported" error.
pub const SUPPORTED: &str = "SELECT <columns or expressions> FROM <stream> [WHERE <predicate>] \
     over detections, tracks, plate_reads or zone_density, with scalar functions, CASE and casts";

/// One vectorized step of a plan.
#[derive(Debug, Clone)]
pub enum Step {
    /// Keeps the rows where the predicate is true.
    Filter(Arc<dyn PhysicalExpr>),
    /// Replaces the columns by the expressions, named, with the given output schema.
    Project(Vec<Arc<dyn PhysicalExpr>>, SchemaRef),
}

/// A lowered rule: read `source`, apply `steps` in order.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The stream the rule reads.
    pub source: StreamKind,
    /// The steps, applied in order to each batch.
    pub steps: Vec<Step>,
    /// Schema of the rule's output rows.
    pub schema: SchemaRef,
}

/// The output of a rule on one batch: its rows, and the source events' keys row for row.
#[derive(Debug)]
pub struct RuleOutput {
    /// Rows in the rule's output schema.
    pub rows: RecordBatch,
    /// `camera_id`, `event_time`, `event_id` of the event each row came from.
    pub keys: RecordBatch,
}

/// A compiled SQL rule, ready to run on batches of its source stream.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The rule's name.
    pub name: String,
    /// Alert severity for its rows.
    pub severity: String,
    /// The SQL text.
    pub sql: String,
    /// The lowered plan.
    pub plan: Plan,
    /// DataFusion's logical plan, for `EXPLAIN`.
    pub logical: String,
}

impl Rule {
    /// Runs the rule on one batch of its source stream; `None` when no row qualifies.
    pub fn apply(&self, batch: &RecordBatch) -> Result<Option<RuleOutput>> {
        let key_idx: Vec<usize> = ["camera_id", "event_time", "event_id"]
            .iter()
            .filter_map(|k| batch.schema().index_of(k).ok())
            .collect();
        let mut keys = batch.project(&key_idx).map_err(|e| internal(e.into()))?;
        let mut data = batch.clone();
        for step in &self.plan.steps {
            match step {
                Step::Filter(pred) => {
                    let mask =
                        pred.evaluate(&data).and_then(|v| v.into_array(data.num_rows())).map_err(internal)?;
                    let mask = mask
                        .as_any()
                        .downcast_ref::<BooleanArray>()
                        .ok_or_else(|| SqlError::Internal("predicate is not boolean".into()))?;
                    if mask.true_count() == 0 {
                        return Ok(None);
                    }
                    data = filter_record_batch(&data, mask).map_err(|e| internal(e.into()))?;
                    keys = filter_record_batch(&keys, mask).map_err(|e| internal(e.into()))?;
                }
                Step::Project(exprs, schema) => {
                    let columns = exprs
                        .iter()
                        .map(|e| e.evaluate(&data).and_then(|v| v.into_array(data.num_rows())))
                        .collect::<Result<Vec<ArrayRef>, _>>()
                        .map_err(internal)?;
                    data =
                        RecordBatch::try_new(Arc::clone(schema), columns).map_err(|e| internal(e.into()))?;
                }
            }
        }
        if data.num_rows() == 0 {
            return Ok(None);
        }
        Ok(Some(RuleOutput { rows: data, keys }))
    }
}

fn internal(e: DataFusionError) -> SqlError {
    SqlError::Internal(e.to_string())
}

/// Compiles every statement of `sql`; `source` names the text in errors (a file name).
/// A single statement takes `name`; several take `name#1`, `name#2`, ...
pub fn compile(name: &str, sql: &str, source: &str) -> Result<Vec<Rule>> {
    let statements = DFParser::parse_sql_with_dialect(sql, &GenericDialect {})
        .map_err(|e| from_datafusion(e, sql, source, None))?;
    if statements.is_empty() {
        return Err(SqlError::user(
            Some(Position { source: source.into(), line: 1, column: 1 }),
            "no SQL statement found",
            "write a rule such as `SELECT camera_id, event_time, score FROM detections WHERE class = 'person' AND score > 0.9`",
        ));
    }
    let many = statements.len() > 1;
    statements
        .into_iter()
        .enumerate()
        .map(|(i, st)| {
            let rule_name = if many { format!("{name}#{}", i + 1) } else { name.to_owned() };
            compile_statement(&rule_name, st, sql, source)
        })
        .collect()
}

/// Reads and compiles a rule file; the rule is named after the file's stem.
pub fn compile_file(path: &Path) -> Result<Vec<Rule>> {
    let sql = std::fs::read_to_string(path)
        .map_err(|source| SqlError::Io { path: path.display().to_string(), source })?;
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("rule");
    compile(name, &sql, &path.display().to_string())
}

fn compile_statement(name: &str, st: DfStatement, sql: &str, source: &str) -> Result<Rule> {
    let at = |loc: datafusion::sql::sqlparser::tokenizer::Location| Position {
        source: source.to_owned(),
        line: loc.line.max(1),
        column: loc.column.max(1),
    };
    let DfStatement::Statement(stmt) = &st else {
        return Err(SqlError::user(None, "only SELECT statements can be rules", SUPPORTED));
    };
    let start = at(stmt.span().start);
    let Statement::Query(query) = stmt.as_ref() else {
        return Err(SqlError::user(
            Some(start),
            "only SELECT statements can be rules",
            format!("write {SUPPORTED}"),
        ));
    };
    // Reject what this lowering cannot run before planning, at the construct's own position.
    let unsupported = |what: &str, span: datafusion::sql::sqlparser::tokenizer::Span| {
        let pos = if span.start.line > 0 { at(span.start) } else { start.clone() };
        SqlError::user(
            Some(pos),
            format!("{what} is not supported in rules yet"),
            format!("write {SUPPORTED}"),
        )
    };
    if let Some(with) = &query.with {
        return Err(unsupported("WITH", with.span()));
    }
    let keyword = |word: &str, fallback: datafusion::sql::sqlparser::tokenizer::Span| {
        locate_word(sql, word, &start).map_or(fallback, |p| point_span(&p))
    };
    if let Some(order) = &query.order_by {
        return Err(unsupported("ORDER BY (a stream has no end to sort)", keyword("ORDER", order.span())));
    }
    if let Some(limit) = &query.limit_clause {
        return Err(unsupported("LIMIT (a stream has no end to count to)", keyword("LIMIT", limit.span())));
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err(unsupported("set operations (UNION, INTERSECT, EXCEPT)", query.body.span()));
    };
    if select.distinct.is_some() {
        let pos = locate_word(sql, "DISTINCT", &start).map_or(select.span(), |p| point_span(&p));
        return Err(unsupported("DISTINCT", pos));
    }
    if select.from.len() != 1 || !select.from[0].joins.is_empty() {
        let word = if select.from.len() > 1 { "," } else { "JOIN" };
        let span = locate_word(sql, word, &start).map_or(select.span(), |p| point_span(&p));
        return Err(unsupported("reading more than one table (joins)", span));
    }
    if let Some(having) = &select.having {
        return Err(unsupported("HAVING", having.span()));
    }
    let group_by_empty = match &select.group_by {
        datafusion::sql::sqlparser::ast::GroupByExpr::All(_) => false,
        datafusion::sql::sqlparser::ast::GroupByExpr::Expressions(e, _) => e.is_empty(),
    };
    if !group_by_empty {
        return Err(unsupported(
            "GROUP BY",
            locate_word(sql, "GROUP", &start).map_or(select.span(), |p| point_span(&p)),
        ));
    }

    let catalog = Catalog::default();
    let options = ParserOptions::default().with_collect_spans(true);
    let planner = SqlToRel::new_with_options(&catalog, options);
    let plan = planner
        .statement_to_plan(st.clone())
        .map_err(|e| from_datafusion(e, sql, source, Some((&start, &catalog))))?;
    let config = ConfigOptions::default();
    let plan = Analyzer::new()
        .execute_and_check(plan, &config, |_, _| {})
        .map_err(|e| from_datafusion(e, sql, source, Some((&start, &catalog))))?;
    let logical = plan.display_indent_schema().to_string();
    let lowered = lower(&plan).map_err(|what| {
        let pos = what.1.and_then(|w| locate_word(sql, w, &start)).unwrap_or(start.clone());
        SqlError::user(
            Some(pos),
            format!("{} is not supported in rules yet", what.0),
            format!("write {SUPPORTED}"),
        )
    })?;
    Ok(Rule { name: name.to_owned(), severity: "medium".into(), sql: sql.to_owned(), plan: lowered, logical })
}

fn point_span(p: &Position) -> datafusion::sql::sqlparser::tokenizer::Span {
    use datafusion::sql::sqlparser::tokenizer::{Location, Span};
    let l = Location { line: p.line, column: p.column };
    Span::new(l, l)
}

/// Lowers a (coerced) logical plan. On failure: the construct's name and a word to locate it by.
fn lower(plan: &LogicalPlan) -> std::result::Result<Plan, (String, Option<&'static str>)> {
    let props = ExecutionProps::new();
    let ctx = PhysicalPlanningContext::default();
    let physical = |e: &datafusion::logical_expr::Expr, schema: &DFSchema| {
        create_physical_expr(e, schema, &props, &ctx)
            .map_err(|err| (format!("the expression {e} ({err})"), None))
    };
    match plan {
        LogicalPlan::TableScan(scan) => {
            let source = StreamKind::from_name(scan.table_name.table())
                .filter(|s| STREAMS.contains(s))
                .ok_or_else(|| (format!("reading {}", scan.table_name), None))?;
            let mut steps = Vec::new();
            let full = DFSchema::try_from_qualified_schema(scan.table_name.clone(), &source.schema())
                .map_err(|e| (e.to_string(), None))?;
            for f in &scan.filters {
                steps.push(Step::Filter(physical(f, &full)?));
            }
            if let Some(proj) = &scan.projection {
                let exprs = proj
                    .iter()
                    .map(|&i| {
                        let field = source.schema().field(i).clone();
                        datafusion::physical_expr::expressions::col(field.name(), &source.schema())
                            .map_err(|e| (e.to_string(), None))
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                steps.push(Step::Project(exprs, Arc::new(scan.projected_schema.as_arrow().clone())));
            }
            Ok(Plan { source, steps, schema: Arc::new(scan.projected_schema.as_arrow().clone()) })
        }
        LogicalPlan::Filter(f) => {
            let mut p = lower(&f.input)?;
            p.steps.push(Step::Filter(physical(&f.predicate, f.input.schema())?));
            Ok(p)
        }
        LogicalPlan::Projection(proj) => {
            let mut p = lower(&proj.input)?;
            let exprs = proj
                .expr
                .iter()
                .map(|e| physical(e, proj.input.schema()))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let fields: Vec<Field> = proj.schema.fields().iter().map(|f| f.as_ref().clone()).collect();
            let schema = Arc::new(Schema::new(fields));
            p.steps.push(Step::Project(exprs, Arc::clone(&schema)));
            p.schema = schema;
            Ok(p)
        }
        LogicalPlan::SubqueryAlias(a) => lower(&a.input),
        LogicalPlan::Aggregate(_) => Err(("aggregate functions (count, sum, avg, ...)".into(), None)),
        LogicalPlan::Window(_) => Err(("window functions (OVER ...)".into(), Some("OVER"))),
        LogicalPlan::Join(_) => Err(("joins".into(), Some("JOIN"))),
        LogicalPlan::Sort(_) => Err(("ORDER BY".into(), Some("ORDER"))),
        LogicalPlan::Limit(_) => Err(("LIMIT".into(), Some("LIMIT"))),
        LogicalPlan::Distinct(_) => Err(("DISTINCT".into(), Some("DISTINCT"))),
        LogicalPlan::Union(_) => Err(("UNION".into(), Some("UNION"))),
        LogicalPlan::Subquery(_) => Err(("subqueries".into(), None)),
        other => Err((format!("the plan node {}", other.display()), None)),
    }
}

/// Turns a DataFusion error into a user error with a position.
fn from_datafusion(
    e: DataFusionError,
    sql: &str,
    source: &str,
    ctx: Option<(&Position, &Catalog)>,
) -> SqlError {
    let at = |line: u64, column: u64| Position {
        source: source.to_owned(),
        line: line.max(1),
        column: column.max(1),
    };
    if let Some(d) = e.diagnostic() {
        let position = d.span.map(|s| at(s.start.line, s.start.column));
        let mut fix: Vec<String> = d.helps.iter().map(|h| h.message.clone()).collect();
        fix.extend(d.notes.iter().map(|n| n.message.clone()));
        if fix.is_empty() {
            match ctx {
                Some((_, catalog)) if d.message.starts_with("table ") => {
                    fix.push(format!("read one of the streams: {}", catalog.table_names().join(", ")))
                }
                _ => fix.push("check the names against the stream's columns".into()),
            }
        }
        if let Some(p) = position {
            return SqlError::user(Some(p), d.message.clone(), fix.join("; "));
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
            format!("syntax error: the rule ends too early ({message})"),
            "complete the statement",
        );
    }
    // Unknown tables and columns carry a diagnostic with a span (handled above); what is left
    // (mostly type errors) is placed at the statement.
    if let Some((start, _)) = ctx {
        return SqlError::user(
            Some(start.clone()),
            text,
            "correct the rule; type errors need matching types or a CAST",
        );
    }
    SqlError::user(None, text, "correct the SQL")
}

/// Finds the first token equal to `word` (case-insensitive) at or after `from`.
fn locate_word(sql: &str, word: &str, from: &Position) -> Option<Position> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location().ok()?;
    tokens
        .into_iter()
        .filter(|t| (t.span.start.line, t.span.start.column) >= (from.line, from.column))
        .find(|t| matches!(&t.token, Token::Word(w) if w.value.eq_ignore_ascii_case(word)))
        .map(|t| Position {
            source: from.source.clone(),
            line: t.span.start.line,
            column: t.span.start.column,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, Float32Array};
    use vigil_engine::schema::{Detection, DetectionsBuilder, EventId};

    fn batch() -> RecordBatch {
        let mut b = DetectionsBuilder::default();
        for (i, (class, score)) in
            [("person", 0.95), ("person", 0.5), ("car", 0.99), ("person", 0.91)].iter().enumerate()
        {
            let d = Detection { class, score: *score, bbox: [0.0; 4], ground: [0.0; 2], zone_id: Some(1) };
            b.push(3, 1_000 + i as i64, EventId::pack(3, 1, i as u32).unwrap(), &d);
        }
        b.finish()
    }

    #[test]
    fn filter_and_project_on_a_batch() {
        let rules = compile(
            "confident_person",
            "SELECT camera_id, event_time, score FROM detections WHERE class = 'person' AND score > 0.9",
            "rule.sql",
        )
        .unwrap();
        let out = rules[0].apply(&batch()).unwrap().unwrap();
        assert_eq!(out.rows.num_rows(), 2);
        assert_eq!(out.rows.schema().field(2).name(), "score");
        let scores = out.rows.column(2).as_any().downcast_ref::<Float32Array>().unwrap();
        assert_eq!(scores.values(), &[0.95, 0.91]);
        assert_eq!(out.keys.num_rows(), 2);
    }

    #[test]
    fn expressions_and_case() {
        let rules = compile(
            "r",
            "SELECT upper(class) AS c, CASE WHEN score > 0.9 THEN 'hi' ELSE 'lo' END AS band, w * h AS area FROM detections WHERE zone_id = 1",
            "r.sql",
        )
        .unwrap();
        let out = rules[0].apply(&batch()).unwrap().unwrap();
        assert_eq!(out.rows.num_rows(), 4);
        assert_eq!(out.rows.column(0).len(), 4);
    }

    fn err(sql: &str) -> SqlError {
        compile("r", sql, "rules/r.sql").unwrap_err()
    }

    #[test]
    fn unknown_column_names_file_line_and_column() {
        let e = err("SELECT camera_id\nFROM detections\nWHERE colour = 'red'");
        let p = e.position().expect("a position");
        assert_eq!((p.line, p.column), (3, 7), "{e}");
        let msg = e.to_string();
        assert!(msg.starts_with("rules/r.sql:3:7: "), "{msg}");
        assert!(msg.contains("colour"), "{msg}");
    }

    #[test]
    fn unknown_table_is_located() {
        let e = err("SELECT * FROM cameraz");
        assert_eq!(e.position().map(|p| (p.line, p.column)), Some((1, 15)), "{e}");
        assert!(e.to_string().contains("detections"), "{e}");
    }

    #[test]
    fn syntax_error_is_located() {
        let e = err("SELECT camera_id FROM detections WHERE");
        assert!(e.position().is_some(), "{e}");
        assert!(e.to_string().contains("syntax error"), "{e}");
    }

    #[test]
    fn unsupported_constructs_are_named_with_a_position() {
        for (sql, what, col) in [
            ("SELECT camera_id FROM detections ORDER BY score", "ORDER BY", 34),
            ("SELECT camera_id FROM detections LIMIT 3", "LIMIT", 34),
            ("SELECT zone_id, count(*) FROM detections GROUP BY zone_id", "GROUP BY", 42),
            ("SELECT count(*) FROM detections", "aggregate", 1),
            ("SELECT DISTINCT camera_id FROM detections", "DISTINCT", 8),
            (
                "SELECT d.camera_id FROM detections d JOIN plate_reads p ON d.camera_id = p.camera_id",
                "joins",
                38,
            ),
        ] {
            let e = err(sql);
            let msg = e.to_string();
            assert!(msg.contains(what) && msg.contains("not supported"), "{sql}: {msg}");
            assert!(msg.contains("SELECT <columns"), "lists what is supported: {msg}");
            assert_eq!(e.position().map(|p| p.column), Some(col), "{sql}: {msg}");
        }
    }

    #[test]
    fn type_errors_are_user_errors() {
        let e = err("SELECT camera_id FROM detections WHERE score > 'high' + 1");
        assert!(matches!(e, SqlError::User { .. }), "{e}");
    }
}

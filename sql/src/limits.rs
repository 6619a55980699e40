//! What one request may cost: the size and depth of a statement, and an ad-hoc query's memory
//! and time.
//!
//! sqlparser parses `1 + 1 + ... + 1` in a loop, but the tree it builds is as deep as the
//! expression is long, and everything after it (DataFusion's planner and optimizer, our
//! lowering, even dropping the tree) recurses over it: 1,000 terms overflowed a 2 MiB thread
//! stack and aborted the process. So statements are parsed and planned on a thread with a large
//! stack ([`on_big_stack`]), their text is bounded ([`Limits::statement_bytes`]) and their
//! expressions' nesting is bounded ([`Limits::depth`]) before anything else walks them.

use std::ops::ControlFlow;
use std::time::Duration;

use datafusion::sql::sqlparser::ast::{Expr, Query, Statement, Visit, Visitor};

use crate::error::{Kind, Position, Result, SqlError};

/// The stack of threads that parse and plan SQL. Only the pages a statement touches are
/// committed; measured: 256 nested terms plan in under 4 MiB in a debug build.
pub const STACK_BYTES: usize = 64 << 20;

/// Limits on one request.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Longest statement text, bytes.
    pub statement_bytes: usize,
    /// Deepest nesting of expressions and subqueries.
    pub depth: usize,
    /// Memory an ad-hoc query may use, its result included, bytes.
    pub query_memory: usize,
    /// Time an ad-hoc query may run.
    pub query_timeout: Duration,
    /// Ad-hoc queries running at once (more wait their turn, within their time).
    pub concurrent_queries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            statement_bytes: 64 << 10,
            depth: 256,
            query_memory: 256 << 20,
            query_timeout: Duration::from_secs(30),
            concurrent_queries: 4,
        }
    }
}

/// Runs `f` on a thread with a [`STACK_BYTES`] stack and waits for it.
pub fn on_big_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("vigil-sql".into())
            .stack_size(STACK_BYTES)
            .spawn_scoped(s, f)
            .expect("spawning a SQL thread")
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Refuses a statement text longer than the limit.
pub fn check_length(sql: &str, at: Position, limits: &Limits) -> Result<()> {
    if sql.len() > limits.statement_bytes {
        return Err(SqlError::user(
            Some(at),
            format!(
                "the statement is {} KiB long; at most {} KiB are accepted",
                sql.len() >> 10,
                limits.statement_bytes >> 10
            ),
            "split it, or use IN (...) lists and CASE instead of long chains of OR",
        )
        .kind(Kind::ProgramLimit));
    }
    Ok(())
}

/// Most brackets opened right after an expression keyword (`NOT (`, `CAST(`, `CASE`'s
/// siblings: see [`check_keyword_nesting`]) that may be open at once.
pub const KEYWORD_NESTING: usize = 8;

/// Refuses, before parsing, a statement that nests more than [`KEYWORD_NESTING`] brackets
/// opened right after an expression keyword.
///
/// Why, and why by hand on the tokens: sqlparser 0.62 parses `NOT (...)` first as a `NOT`
/// expression and, when that fails, again as a call of a function named `not`. When the failure
/// is its recursion limit, every such level parses its inside twice: 40 nested `NOT (` took 60 s
/// of CPU (a 4-byte-per-level denial of service) before failing. The AST depth check runs after
/// parsing, too late; the tokenizer is linear, so this check runs before the parser. With at most
/// 8 such levels the parser retries at most 2⁸ times.
pub fn check_keyword_nesting(sql: &str, at: Position) -> Result<()> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::keywords::Keyword as K;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

    // The words sqlparser tries as an expression prefix and then again as a function name.
    const RETRIED: &[K] = &[
        K::ARRAY,
        K::CASE,
        K::CAST,
        K::CEIL,
        K::CONVERT,
        K::EXISTS,
        K::EXTRACT,
        K::FLOOR,
        K::INTERVAL,
        K::LAMBDA,
        K::MAP,
        K::MATCH,
        K::NOT,
        K::OVERLAY,
        K::POSITION,
        K::PRIOR,
        K::SAFE_CAST,
        K::SELECT,
        K::STRUCT,
        K::SUBSTR,
        K::SUBSTRING,
        K::TRIM,
        K::TRY_CAST,
        K::TRY_CONVERT,
        K::WITH,
    ];
    // A statement that does not tokenize is left to the parser, which reports it with its place.
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else { return Ok(()) };
    // Per open bracket: whether it follows a retried word.
    let mut open: Vec<bool> = Vec::new();
    let (mut retried, mut prev_retried) = (0usize, false);
    for t in tokens {
        match t {
            Token::Whitespace(_) => continue,
            Token::LParen | Token::LBracket => {
                open.push(prev_retried);
                retried += usize::from(prev_retried);
                if retried > KEYWORD_NESTING {
                    return Err(SqlError::user(
                        Some(at),
                        format!("more than {KEYWORD_NESTING} brackets after NOT, CAST, CASE, EXISTS and the like are nested"),
                        "write nested NOT (...) with AND/OR and comparisons (NOT (a AND b) is NOT a OR NOT b), or split the expression",
                    )
                    .kind(Kind::ProgramLimit));
                }
            }
            Token::RParen | Token::RBracket => {
                retried -= usize::from(open.pop().unwrap_or(false));
            }
            _ => {}
        }
        prev_retried = matches!(&t, Token::Word(w) if RETRIED.contains(&w.keyword));
    }
    Ok(())
}

/// Refuses a statement whose expressions nest deeper than the limit; `at` places the error.
pub fn check_depth(statement: &Statement, limits: &Limits, at: Position) -> Result<()> {
    let mut v = Depth { now: 0, max: limits.depth };
    if statement.visit(&mut v).is_break() {
        return Err(SqlError::user(
            Some(at),
            format!("expressions nest more than {} levels deep", limits.depth),
            "write long chains of OR as IN (...) lists, and long sums as fewer terms (or several rules)",
        )
        .kind(Kind::ProgramLimit));
    }
    Ok(())
}

/// Counts nesting while walking, and stops (so that the walk itself stays shallow) past `max`.
struct Depth {
    now: usize,
    max: usize,
}

impl Depth {
    fn enter(&mut self) -> ControlFlow<()> {
        self.now += 1;
        if self.now > self.max { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    }
}

impl Visitor for Depth {
    type Break = ();

    fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
        self.enter()
    }

    fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
        self.now -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        self.enter()
    }

    fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        self.now -= 1;
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::*;

    fn depth_ok(sql: &str) -> bool {
        on_big_stack(|| {
            let st = Parser::parse_sql(&GenericDialect {}, sql).unwrap().remove(0);
            let at = Position { source: "t".into(), line: 1, column: 1 };
            check_depth(&st, &Limits::default(), at).is_ok()
        })
    }

    #[test]
    fn nested_keyword_brackets_are_refused_before_parsing() {
        let at = || Position { source: "t".into(), line: 1, column: 1 };
        let nest = |open: &str, n: usize| format!("SELECT {}x = 1{}", open.repeat(n), ")".repeat(n));
        assert!(check_keyword_nesting(&nest("NOT (", 8), at()).is_ok());
        assert!(check_keyword_nesting(&nest("NOT (", 9), at()).is_err());
        assert!(check_keyword_nesting(&nest("not(", 40), at()).is_err());
        // Plain brackets and function calls do not count, nor do closed ones.
        assert!(check_keyword_nesting(&nest("(", 40), at()).is_ok());
        assert!(check_keyword_nesting(&nest("abs(", 40), at()).is_ok());
        let siblings = vec!["NOT (x = 1)"; 50].join(" AND ");
        assert!(check_keyword_nesting(&format!("SELECT {siblings}"), at()).is_ok());
    }

    #[test]
    fn long_chains_are_refused_and_wide_lists_are_not() {
        let chain = |n: usize| format!("SELECT {}", vec!["1"; n].join(" + "));
        assert!(depth_ok(&chain(200)));
        assert!(!depth_ok(&chain(1_000)));
        assert!(!depth_ok(&chain(30_000)));
        let ors = (0..700).map(|i| format!("x = {i}")).collect::<Vec<_>>().join(" OR ");
        assert!(!depth_ok(&format!("SELECT * FROM t WHERE {ors}")));
        let list = (0..5_000).map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
        assert!(depth_ok(&format!("SELECT * FROM t WHERE x IN ({list})")));
    }
}

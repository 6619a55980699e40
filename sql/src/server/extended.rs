//! The extended query protocol (Parse, Bind, Describe, Execute): what drivers speak, where psql
//! speaks the simple one. psycopg with parameters, `tokio-postgres`' prepared statements, JDBC
//! and Grafana all prepare their statements this way.
//!
//! A `SELECT` (or `WITH`, `VALUES`) is planned by DataFusion at Parse, against the tables the
//! session's role may read: the plan gives the rows' fields and each `$n` parameter's type, so a
//! driver that asks (Describe) is told the truth before running anything. At Execute the
//! parameters are bound into the plan as values of those types ([`Registry::query_with`]), never
//! spliced into the text. Every other statement (`INSERT INTO watchlist …`, `SHOW RULES`,
//! `SUBSCRIBE`, …) takes its parameters as SQL literals in place of `$n`, written by the SQL
//! tokenizer (a quote in a value is doubled, never closes the literal), then runs as it would
//! from psql, with the same roles, errors and audit records.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use futures::Sink;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::ExtendedQueryHandler;
use pgwire::api::results::{FieldInfo, Response};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;

use super::{Session, actor, pg_type, upper};
use crate::registry::Registry;
use crate::roles::Role;
use crate::rule::{split_statements, statement_words};
use crate::server::{Credentials, SOURCE, user_error};

/// A statement a client prepared: its text, its parameters' types and the fields of its rows.
#[derive(Clone, Debug)]
pub struct Prepared {
    sql: String,
    /// Planned by DataFusion (its parameters bind into the plan).
    query: bool,
    params: Vec<Type>,
    /// Name and type of each column it returns (none for statements that return no rows).
    fields: Vec<(String, Type)>,
}

/// Plans statements at Parse, as the session's role.
#[derive(Debug)]
pub struct Parser {
    pub(super) registry: Arc<Registry>,
    pub(super) credentials: Arc<Credentials>,
    /// The session's id and every session's cursors: a `FETCH` returns its cursor's columns.
    pub(super) session: u64,
    pub(super) cursors: Arc<super::cursor::Cursors>,
}

/// The role of the client's logged-in user.
fn role_of(credentials: &Credentials, client: &impl ClientInfo) -> (String, Role) {
    let user = actor(client.metadata().get("user").map_or("", String::as_str));
    // Logged in, so the account exists; were it gone, the session would get nothing.
    let role = credentials.role_of(&user).unwrap_or(Role::Auditor);
    (user, role)
}

fn first_words(sql: &str) -> (String, String) {
    let w = statement_words(sql).unwrap_or_default();
    (upper(&w, 0), upper(&w, 1))
}

/// The number of `$n` parameters of `sql` (the highest n).
fn placeholders(sql: &str) -> PgWireResult<usize> {
    let tokens =
        Tokenizer::new(&GenericDialect {}, sql).tokenize().map_err(|e| wire_error("42601", e.to_string()))?;
    Ok(tokens
        .iter()
        .filter_map(|t| match t {
            Token::Placeholder(p) => p.strip_prefix('$')?.parse::<usize>().ok(),
            _ => None,
        })
        .max()
        .unwrap_or(0))
}

/// `sql` with each `$n` replaced by its value as a SQL string literal (NULL for none), found by
/// the tokenizer (never inside a literal or comment), its quotes doubled so that no value can
/// end its literal.
fn with_literals(sql: &str, values: &[Option<String>]) -> PgWireResult<String> {
    let tokens =
        Tokenizer::new(&GenericDialect {}, sql).tokenize().map_err(|e| wire_error("42601", e.to_string()))?;
    let mut out = String::with_capacity(sql.len());
    for t in tokens {
        match &t {
            Token::Placeholder(p) if p.starts_with('$') => {
                let n: usize =
                    p[1..].parse().map_err(|_| wire_error("42P02", format!("{p} is not a parameter")))?;
                let Some(v) = n.checked_sub(1).and_then(|i| values.get(i)) else {
                    return Err(wire_error(
                        "08P01",
                        format!("{p} has no value: {} were bound", values.len()),
                    ));
                };
                match v {
                    // (Token's Display does not double quotes.) Backslashes are literal in the
                    // generic dialect statements are read with, so a doubled quote is the only
                    // escape.
                    Some(v) => {
                        out.push('\'');
                        out.push_str(&v.replace('\'', "''"));
                        out.push('\'');
                    }
                    None => out.push_str("NULL"),
                }
            }
            other => out.push_str(&other.to_string()),
        }
    }
    Ok(out)
}

/// `sql` with the parameters whose type DataFusion would take from where they stand read as
/// PostgreSQL reads them. A `$n` the client declared an `interval` is written `CAST($n AS
/// INTERVAL)`: in `window_end > now() - $1` DataFusion would make it a timestamp, where
/// PostgreSQL takes the declared type (psycopg declares a `timedelta` an interval). A `$n` in
/// `ANY($n)` or `ALL($n)` is an array sent as text (`{a,b}`, psycopg's list), read by
/// [`pg_array`](crate::functions::pg_array) and cast to the declared element type; DataFusion
/// would take it for one text. Spliced into the text at the tokens' places (re-rendering tokens
/// would not keep string literals as written).
fn with_declared_types(sql: &str, types: &[Option<Type>]) -> String {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location() else {
        return sql.to_owned();
    };
    let lines: Vec<usize> = std::iter::once(0).chain(sql.match_indices('\n').map(|(i, _)| i + 1)).collect();
    // The byte offset of a token's (line, column), both counted from 1, the column in characters.
    let offset = |line: u64, column: u64| {
        let start = *lines.get(usize::try_from(line).ok()?.checked_sub(1)?)?;
        let skip = usize::try_from(column).ok()?.checked_sub(1)?;
        sql[start..].char_indices().nth(skip).map(|(i, _)| start + i)
    };
    let words: Vec<&Token> =
        tokens.iter().map(|t| &t.token).filter(|t| !matches!(t, Token::Whitespace(_))).collect();
    let mut out = sql.to_owned();
    let mut at_word = words.len();
    for t in tokens.iter().rev() {
        if !matches!(t.token, Token::Whitespace(_)) {
            at_word -= 1;
        }
        let Token::Placeholder(p) = &t.token else { continue };
        let declared = p
            .strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| types.get(n.checked_sub(1)?).cloned().flatten());
        let in_any = at_word >= 2
            && matches!(words[at_word - 1], Token::LParen)
            && matches!(words.get(at_word + 1), Some(Token::RParen))
            && matches!(words[at_word - 2], Token::Word(w) if ["ANY", "ALL", "SOME"].contains(&w.value.to_uppercase().as_str()));
        let written = if in_any {
            let element = match declared {
                Some(Type::INT2_ARRAY | Type::INT4_ARRAY | Type::INT8_ARRAY) => Some("BIGINT"),
                Some(Type::FLOAT4_ARRAY | Type::FLOAT8_ARRAY | Type::NUMERIC_ARRAY) => Some("DOUBLE"),
                Some(Type::BOOL_ARRAY) => Some("BOOLEAN"),
                _ => None,
            };
            match element {
                Some(e) => format!("CAST(pg_array({p}) AS {e}[])"),
                None => format!("pg_array({p})"),
            }
        } else if declared == Some(Type::INTERVAL) {
            format!("CAST({p} AS INTERVAL)")
        } else {
            continue;
        };
        if let Some(at) = offset(t.span.start.line, t.span.start.column)
            && out[at..].starts_with(p.as_str())
        {
            out.replace_range(at..at + p.len(), &written);
        }
    }
    out
}

fn wire_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), code.into(), message.into())))
}

/// A statement's error as the wire carries it (the same SQLSTATE, position and hint as psql's).
fn response_error(r: Response) -> PgWireError {
    match r {
        Response::Error(info) => PgWireError::UserError(info),
        _ => wire_error("XX000", "an error without a message"),
    }
}

/// The fields of statements vigil answers itself (not planned by DataFusion).
fn own_fields(w0: &str, w1: &str) -> Vec<(String, Type)> {
    let text = |names: &[&str]| names.iter().map(|n| ((*n).to_owned(), Type::VARCHAR)).collect();
    match (w0, w1) {
        ("SHOW", "RULES") => {
            text(&["name", "severity", "emit", "backfill", "origin", "state", "rows_held", "sql"])
        }
        ("EXPLAIN", "RULE") => text(&["plan"]),
        ("SHOW", "TIMEZONE" | "TIME") => text(&["TimeZone"]),
        ("SHOW", p) if super::server_parameter(p).is_some() => text(&[&p.to_ascii_lowercase()]),
        ("SHOW", "ALL") => text(&["name", "setting", "description"]),
        ("SHOW" | "ERASE", kind) if !kind.is_empty() => text(&["what", "place", "rows", "detail"]),
        _ => Vec::new(),
    }
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let (user, role) = role_of(&self.credentials, client);
        let (w0, w1) = first_words(sql);
        let query = matches!(w0.as_str(), "SELECT" | "WITH" | "VALUES") || (w0 == "EXPLAIN" && w1 != "RULE");
        // A cursor's query is planned as a SELECT is, its parameters typed by the plan.
        if w0 == "DECLARE"
            && let Ok(d) = super::cursor::parse_declare(sql)
        {
            let inner = with_declared_types(&d.query, types);
            let (_, planned) = self
                .registry
                .describe(&inner, role, &user)
                .await
                .map_err(|e| response_error(user_error(e)))?;
            let params = typed_params(types, &planned);
            let sql = format!("{}{inner}", &sql[..d.query_at]);
            return Ok(Some(Prepared { sql, query, params, fields: Vec::new() }));
        }
        if !query {
            let n = placeholders(sql)?.max(types.len());
            let params = (0..n).map(|i| types.get(i).cloned().flatten().unwrap_or(Type::VARCHAR)).collect();
            let fields = match w0.as_str() {
                // A FETCH from a cursor declared before it: the cursor's columns (one declared
                // later is described at Execute's answer, as PostgreSQL describes it too).
                "FETCH" => statement_words(sql)
                    .and_then(|w| super::cursor::parse_fetch(&w).ok())
                    .and_then(|(_, name)| self.cursors.schema(self.session, &name))
                    .map(|(schema, _)| schema_fields(&schema))
                    .unwrap_or_default(),
                _ => own_fields(&w0, &w1),
            };
            return Ok(Some(Prepared { sql: sql.to_owned(), query, params, fields }));
        }
        let sql = &with_declared_types(sql, types);
        let (schema, planned) =
            self.registry.describe(sql, role, &user).await.map_err(|e| response_error(user_error(e)))?;
        let params = typed_params(types, &planned);
        let schema = crate::registry::unique_names(&super::names::pg_names(sql, &schema));
        Ok(Some(Prepared { sql: sql.to_owned(), query, params, fields: schema_fields(&schema) }))
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok(stmt.params.clone())
    }

    fn get_result_schema(&self, stmt: &Prepared, format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        Ok(fields(&stmt.fields, format.unwrap_or(&Format::UnifiedText)))
    }
}

/// Each parameter's type: the client's where it declared one, else the plan's.
fn typed_params(types: &[Option<Type>], planned: &[Option<DataType>]) -> Vec<Type> {
    (0..planned.len().max(types.len()))
        .map(|i| {
            let given = types.get(i).cloned().flatten().filter(|t| *t != Type::UNKNOWN);
            given.unwrap_or_else(|| {
                planned.get(i).cloned().flatten().map_or(Type::VARCHAR, |t| param_type(&t))
            })
        })
        .collect()
}

/// The name and PostgreSQL type of each column of `schema`.
fn schema_fields(schema: &datafusion::arrow::datatypes::Schema) -> Vec<(String, Type)> {
    schema.fields().iter().map(|f| (f.name().clone(), pg_type(f.data_type()))).collect()
}

/// The type a parameter is described as: what the plan expects, in a type every driver binds.
fn param_type(t: &DataType) -> Type {
    match pg_type(t) {
        Type::VARCHAR => Type::TEXT,
        other => other,
    }
}

pub(super) fn fields(f: &[(String, Type)], format: &Format) -> Vec<FieldInfo> {
    f.iter()
        .enumerate()
        .map(|(i, (name, t))| FieldInfo::new(name.clone(), None, None, t.clone(), format.format_for(i)))
        .collect()
}

/// A bound parameter in its text form (what the plan reads it from): text-format parameters as
/// sent, binary ones decoded by their type.
fn param_text(portal: &Portal<Prepared>, i: usize, t: &Type) -> PgWireResult<Option<String>> {
    let Some(Some(bytes)) = portal.parameters.get(i) else { return Ok(None) };
    if !portal.parameter_format.is_binary(i) {
        return String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| wire_error("22021", format!("parameter ${} is not UTF-8 text", i + 1)));
    }
    let v = match *t {
        Type::BOOL => portal.parameter::<bool>(i, t)?.map(|v| v.to_string()),
        Type::INT2 => portal.parameter::<i16>(i, t)?.map(|v| v.to_string()),
        Type::INT4 => portal.parameter::<i32>(i, t)?.map(|v| v.to_string()),
        Type::INT8 => portal.parameter::<i64>(i, t)?.map(|v| v.to_string()),
        Type::FLOAT4 => portal.parameter::<f32>(i, t)?.map(|v| v.to_string()),
        Type::FLOAT8 => portal.parameter::<f64>(i, t)?.map(|v| v.to_string()),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
            portal.parameter::<String>(i, t)?
        }
        _ => match super::types::datetime_param(t, bytes) {
            Some(text) => Some(text.map_err(|e| wire_error("22P03", format!("parameter ${}: {e}", i + 1)))?),
            None => {
                return Err(wire_error(
                    "22P03",
                    format!(
                        "parameter ${} is binary {}; send it as text (vigil reads binary text, integers, floats, booleans, timestamps, dates and intervals)",
                        i + 1,
                        t.name()
                    ),
                ));
            }
        },
    };
    Ok(v)
}

#[async_trait]
impl ExtendedQueryHandler for Session {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        Arc::clone(&self.parser)
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (user, role) = role_of(&self.credentials, client);
        let stmt = &portal.statement.statement;
        if let Some(r) = self.in_failed_block(client.transaction_status(), &stmt.sql) {
            return match r {
                Response::Error(info) => Err(PgWireError::UserError(info)),
                r => Ok(r),
            };
        }
        let types = &portal.statement.parameter_types;
        let values = (0..stmt.params.len().max(portal.parameters.len()))
            .map(|i| {
                let t = types
                    .get(i)
                    .cloned()
                    .flatten()
                    .or_else(|| stmt.params.get(i).cloned())
                    .unwrap_or(Type::TEXT);
                param_text(portal, i, &t)
            })
            .collect::<PgWireResult<Vec<_>>>()?;
        let r = if stmt.query {
            let zone = self.zone();
            let params = (!values.is_empty()).then_some(values);
            let cursors = crate::pg_catalog::reads_catalog(&stmt.sql).then(|| self.cursors.listing(self.id));
            let run = self.registry.query_in_session(&stmt.sql, role, &user, params, &zone, cursors);
            let r = tokio::select! {
                r = run => r,
                _ = super::client_gone(&self.watch) => return Err(wire_error("57014", "the client went away")),
            };
            match r {
                Ok((schema, batches)) => super::batches_response(
                    &super::names::pg_names(&stmt.sql, &schema),
                    &batches,
                    &portal.result_column_format,
                ),
                Err(e) => user_error(e),
            }
        } else if first_words(&stmt.sql).0 == "DECLARE" {
            let params = (!values.is_empty()).then_some(values);
            let r = self.declare(&stmt.sql, role, &user, params).await;
            if matches!(r, Response::Execution(_)) {
                self.cursor_portal(client, &stmt.sql);
            }
            r
        } else {
            let text = with_literals(&stmt.sql, &values)?;
            let statements = split_statements(&text, SOURCE).map_err(|e| response_error(user_error(e)))?;
            match statements.as_slice() {
                [] => Response::EmptyQuery,
                [st] => {
                    let format = &portal.result_column_format;
                    let r = self.statement(&st.text, &st.blanked, &user, role, format).await;
                    self.report_zone(client, &st.text, matches!(r, Response::Execution(_))).await?;
                    r
                }
                _ => super::error(
                    "42601",
                    "a prepared statement holds one statement; send several with the simple protocol",
                ),
            }
        };
        self.audit(&user, &stmt.sql, &r);
        self.forget_closed_cursors(client);
        let r = match r {
            Response::CopyOut(copy) => {
                let header = super::copy::parse(&stmt.sql).is_ok_and(|c| c.header);
                super::stream_copy_out(client, copy, usize::from(header)).await?
            }
            r => r,
        };
        match r {
            Response::Error(info) => Err(PgWireError::UserError(info)),
            r => Ok(r),
        }
    }
}

impl Session {
    /// After a `DECLARE`, a portal of the cursor's name: psycopg's named cursors describe it
    /// (Describe of a portal) before they FETCH, as PostgreSQL's cursors are portals. Executing
    /// it fetches from the cursor.
    fn cursor_portal<C>(&self, client: &C, text: &str)
    where
        C: ClientPortalStore,
        C::PortalStore: PortalStore<Statement = Prepared>,
    {
        let Ok(d) = super::cursor::parse_declare(text) else { return };
        let Some((schema, binary)) = self.cursors.schema(self.id, &d.name) else { return };
        let fetch = Prepared {
            sql: format!("FETCH ALL FROM \"{}\"", d.name.replace('"', "\"\"")),
            query: false,
            params: Vec::new(),
            fields: schema_fields(&schema),
        };
        let statement = Arc::new(StoredStatement::new(d.name.clone(), fetch, Vec::new()));
        let mut portal = Portal::new_cursor(d.name.clone(), statement);
        if binary {
            portal.result_column_format = Format::UnifiedBinary;
        }
        client.portal_store().put_portal(Arc::new(portal));
        self.portals.lock().expect("portals").insert(d.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Only the parameters declared intervals are cast, and those in `ANY(…)` read as arrays,
    /// at their own places: not inside a literal, after text that is not ASCII, on a later line.
    #[test]
    fn parameters_are_read_as_their_declared_types_where_they_stand() {
        let sql = "SELECT 'it''s $1', 'é' AS zone_é, now() -\n  $1, $2, $10 FROM t";
        let types = [Some(Type::INTERVAL), Some(Type::INT8)];
        assert_eq!(
            with_declared_types(sql, &types),
            "SELECT 'it''s $1', 'é' AS zone_é, now() -\n  CAST($1 AS INTERVAL), $2, $10 FROM t"
        );
        assert_eq!(
            with_declared_types(sql, &[None, Some(Type::INTERVAL)]),
            sql.replace("$2", "CAST($2 AS INTERVAL)")
        );
        assert_eq!(with_declared_types(sql, &[Some(Type::TIMESTAMPTZ)]), sql);
        let sql =
            "SELECT * FROM t WHERE plate = any ( $1 ) AND camera_id <> ALL($2) AND x = $3 AND ANY($4, 1)";
        assert_eq!(
            with_declared_types(sql, &[None, Some(Type::INT2_ARRAY)]),
            "SELECT * FROM t WHERE plate = any ( pg_array($1) ) AND camera_id <> ALL(CAST(pg_array($2) AS BIGINT[])) \
             AND x = $3 AND ANY($4, 1)"
        );
    }

    proptest! {
        /// Whatever a value holds, the statement stays one statement and the literal reads back
        /// as the value.
        #[test]
        fn no_value_escapes_its_literal(v in any::<String>()) {
            let text = with_literals("SELECT $1 AS v", &[Some(v.clone())]).unwrap();
            prop_assert_eq!(split_statements(&text, "t").unwrap().len(), 1);
            let tokens = Tokenizer::new(&GenericDialect {}, &text).tokenize().unwrap();
            let literal = tokens.iter().find_map(|t| match t {
                Token::SingleQuotedString(s) => Some(s.clone()),
                _ => None,
            });
            prop_assert_eq!(literal, Some(v));
        }
    }

    #[test]
    fn parameters_become_literals_that_no_value_can_escape() {
        let sql = "INSERT INTO watchlist (plate, reason) VALUES ($1, $2) -- $3";
        let values = [Some("12345-B-6".to_owned()), Some("it's'); DROP RULE x; --".to_owned())];
        let text = with_literals(sql, &values).unwrap();
        assert_eq!(
            text,
            "INSERT INTO watchlist (plate, reason) VALUES ('12345-B-6', 'it''s''); DROP RULE x; --') -- $3"
        );
        // One statement, whatever the value held.
        assert_eq!(split_statements(&text, "t").unwrap().len(), 1);
        assert_eq!(with_literals("SELECT $1", &[None]).unwrap(), "SELECT NULL");
        // A trailing backslash does not escape the closing quote.
        let values = [Some("x\\".to_owned()), Some("'; DROP RULE y; --".to_owned())];
        let text = with_literals("DELETE FROM watchlist WHERE plate = $1 AND reason = $2", &values).unwrap();
        assert_eq!(split_statements(&text, "t").unwrap().len(), 1, "{text}");
        assert!(text.ends_with("reason = '''; DROP RULE y; --'"), "{text}");
        assert!(with_literals("SELECT $2", &values[..1]).is_err());
        assert_eq!(placeholders("SELECT '$9', $2 FROM t WHERE a = $1").unwrap(), 2);
    }
}

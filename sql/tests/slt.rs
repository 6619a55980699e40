//! sqllogictest files for the SQL surface (`sql/tests/slt/*.slt`): rule results on small event
//! sets written in the files, golden `EXPLAIN RULE` plans, and the error messages.
//!
//! The adapter: `INSERT INTO <stream or reference table> VALUES ...` adds rows (DataFusion runs
//! the INSERT into in-memory tables); `CREATE RULE` compiles and keeps a rule; `EXPLAIN RULE
//! name` returns its plan; a `SELECT` is compiled as a rule and run on a real timely dataflow
//! over every inserted event in time order (reference rows first), and returns the rule's
//! final contents. `VIGIL_SLT_COMPLETE=1` rewrites the files with the current results (review
//! the diff before committing).

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::{concat_batches, sort_to_indices, take_record_batch};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use sqllogictest::{DBOutput, DefaultColumnType};
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use vigil_engine::parquet_sink::event_times;
use vigil_engine::runtime::{Input, Runtime, RuntimeConfig, Time};
use vigil_engine::stream::Batch;
use vigil_sql::SqlError;
use vigil_sql::capture::{self, Errors, Outputs};
use vigil_sql::rule::{Rule, compile};

mod common;

struct Vigil {
    ctx: SessionContext,
    rt: tokio::runtime::Runtime,
    rules: Vec<Rule>,
}

impl Vigil {
    fn new() -> Self {
        let ctx = SessionContext::new();
        for s in common::streams().all() {
            let t = MemTable::try_new(Arc::clone(&s.schema), vec![vec![]]).unwrap();
            ctx.register_table(s.name, Arc::new(t)).unwrap();
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Self { ctx, rt, rules: Vec::new() }
    }

    fn table(&self, name: &str) -> Vec<RecordBatch> {
        self.rt.block_on(async {
            self.ctx.sql(&format!("SELECT * FROM {name}")).await.unwrap().collect().await.unwrap()
        })
    }

    /// Runs `rule` over every inserted row; its final contents as text rows.
    fn run_rule(&self, rule: Rule) -> Result<Vec<Vec<String>>, SqlError> {
        let rules = Arc::new(vec![rule.clone()]);
        let out: Outputs = capture::outputs(1);
        let errors: Errors = Arc::default();
        let mut runtime = {
            let (rules, out, errors) = (Arc::clone(&rules), Arc::clone(&out), Arc::clone(&errors));
            Runtime::start(RuntimeConfig::new(2, common::streams().all().collect()), 0, move |graph| {
                let probe = ProbeHandle::new();
                capture::capture(&rules, graph, &out, &errors, &probe);
                probe
            })
            .map_err(|e| SqlError::Internal(e.to_string()))?
        };
        let streams = common::streams();
        for table in streams.tables() {
            for b in self.table(table.name).into_iter().filter(|b| b.num_rows() > 0) {
                runtime.send(0, 0, Input { stream: table, batch: Batch::new(b) }).unwrap();
            }
        }
        // Events one time at a time, alternating workers, the watermark following.
        let mut timed: Vec<(i64, usize, Input)> = Vec::new();
        for s in streams.streams() {
            let batches = self.table(s.name);
            let all = concat_batches(&s.schema, &batches).unwrap();
            if all.num_rows() == 0 {
                continue;
            }
            let order = sort_to_indices(all.column(1), None, None).unwrap();
            let sorted = take_record_batch(&all, &order).unwrap();
            let times = event_times(&sorted).unwrap().to_vec();
            for (i, t) in times.iter().enumerate() {
                let row = sorted.slice(i, 1);
                timed.push((*t, i, Input { stream: s, batch: Batch::new(row) }));
            }
        }
        timed.sort_by_key(|(t, i, _)| (*t, *i));
        for (t, i, b) in timed {
            runtime.send(i % 2, t as Time, b).unwrap();
            runtime.advance(t as Time).unwrap();
        }
        runtime.finish().map_err(|e| SqlError::Internal(e.to_string()))?;
        if let Some((_, e)) = errors.lock().unwrap().first() {
            return Err(SqlError::Internal(e.clone()));
        }
        let deltas: Vec<_> =
            std::mem::take(&mut out.lock().unwrap()[0]).into_iter().map(|(_, d)| d).collect();
        let rows =
            capture::consolidate(&rule.schema, &deltas).map_err(|e| SqlError::Internal(e.to_string()))?;
        Ok(text_rows(&rows))
    }
}

fn text_rows(batch: &RecordBatch) -> Vec<Vec<String>> {
    let options = FormatOptions::default().with_null("NULL");
    let f: Vec<_> =
        batch.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap()).collect();
    (0..batch.num_rows()).map(|i| f.iter().map(|f| f.value(i).to_string()).collect()).collect()
}

impl sqllogictest::DB for Vigil {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let words: Vec<String> = sql.split_whitespace().take(3).map(|w| w.to_ascii_uppercase()).collect();
        let rows = |rows: Vec<Vec<String>>| {
            let n = rows.first().map_or(1, Vec::len);
            DBOutput::Rows { types: vec![DefaultColumnType::Any; n], rows }
        };
        match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["INSERT", ..] => {
                let n = self
                    .rt
                    .block_on(async { self.ctx.sql(sql).await?.collect().await })
                    .map_err(|e| SqlError::Internal(e.to_string()))?;
                let _ = n;
                Ok(DBOutput::StatementComplete(0))
            }
            ["CREATE", "RULE", ..] => {
                let compiled = compile("slt", sql, "slt", &common::streams())?;
                self.rules.retain(|r| !compiled.iter().any(|c| c.name == r.name));
                self.rules.extend(compiled);
                Ok(DBOutput::StatementComplete(0))
            }
            ["EXPLAIN", "RULE", name] => {
                let name = name.to_ascii_lowercase();
                let rule =
                    self.rules.iter().find(|r| r.name.to_ascii_lowercase() == name).ok_or_else(|| {
                        SqlError::user(None, format!("no rule named {name}"), "CREATE RULE it first")
                    })?;
                Ok(rows(rule.explain().lines().map(|l| vec![l.trim_end().to_owned()]).collect()))
            }
            _ => {
                let rule = compile("query", sql, "slt", &common::streams())?.remove(0);
                Ok(rows(self.run_rule(rule)?))
            }
        }
    }
}

fn slt_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        .collect();
    files.sort();
    files
}

#[test]
fn sqllogictest_files() {
    let files = slt_files();
    assert!(files.len() >= 4, "{files:?}");
    for f in files {
        let mut runner = sqllogictest::Runner::new(|| async { Ok(Vigil::new()) });
        if std::env::var_os("VIGIL_SLT_COMPLETE").is_some() {
            futures::executor::block_on(runner.update_test_file(
                &f,
                " ",
                sqllogictest::default_validator,
                sqllogictest::default_normalizer,
                sqllogictest::default_column_validator,
            ))
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        } else {
            runner.run_file(&f).unwrap_or_else(|e| panic!("{}: {}", f.display(), e.display(true)));
        }
    }
}

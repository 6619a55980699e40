//! Rules that cannot run are refused when compiled, with the file, line and column of the
//! construct at fault, what is wrong, and the fix.

use vigil_sql::SqlError;
use vigil_sql::rule::compile;

mod common;

fn err(sql: &str) -> SqlError {
    match compile("r", sql, "rules/r.sql", &common::streams()) {
        Ok(r) => panic!("{sql} compiled: {:?}", r.iter().map(|r| r.explain()).collect::<Vec<_>>()),
        Err(e) => e,
    }
}

fn at(e: &SqlError) -> (u64, u64) {
    let p = e.position().unwrap_or_else(|| panic!("no position in {e}"));
    (p.line, p.column)
}

#[test]
fn unknown_column_names_file_line_and_column() {
    let e = err("SELECT camera_id\nFROM detections\nWHERE colour = 'red'");
    assert_eq!(at(&e), (3, 7), "{e}");
    let msg = e.to_string();
    assert!(msg.starts_with("rules/r.sql:3:7: "), "{msg}");
    assert!(msg.contains("colour"), "{msg}");
}

#[test]
fn unknown_table_is_located_and_the_tables_listed() {
    let e = err("SELECT * FROM cameraz");
    assert_eq!(at(&e), (1, 15), "{e}");
    assert!(e.to_string().contains("detections") && e.to_string().contains("watchlist"), "{e}");
}

#[test]
fn syntax_errors_are_located() {
    let e = err("SELECT camera_id FROM detections WHERE");
    assert!(e.to_string().contains("syntax error"), "{e}");
    assert_eq!(at(&e).0, 1);
    let e = err("SELECT camera_id FROM detections WHERE score >> 'x");
    assert!(e.position().is_some(), "{e}");
}

/// 40 nested `NOT (` made sqlparser retry every level twice: a minute of CPU for 200 bytes.
/// Refused before parsing, with the statement's place; 8 levels still compile.
#[test]
fn nested_not_brackets_are_refused_before_the_parser_sees_them() {
    let nest = |n: usize| {
        format!("SELECT camera_id FROM detections\nWHERE {}score > 0.5{}", "NOT (".repeat(n), ")".repeat(n))
    };
    let e = err(&nest(40));
    assert_eq!(at(&e), (1, 1), "{e}");
    assert!(e.to_string().contains("more than 8 brackets after NOT"), "{e}");
    assert!(compile("r", &nest(8), "rules/r.sql", &common::streams()).is_ok());
}

#[test]
fn type_errors_are_user_errors_with_a_position() {
    let e = err("SELECT camera_id FROM detections WHERE score > 'high' + 1");
    assert!(matches!(e, SqlError::User { .. }), "{e}");
    assert!(e.position().is_some(), "{e}");
}

/// A function given types it does not take: PostgreSQL's words and type names, at the call,
/// with the forms it takes (DataFusion's own text calls it an internal error, in Arrow's names).
#[test]
fn a_function_given_the_wrong_types_is_named_at_the_call_with_the_forms_it_takes() {
    let e = err(
        "SELECT window_start, camera_id,\n  sum(class) AS n\nFROM TUMBLE(detections, event_time, INTERVAL '1 minute')\nGROUP BY window_start, camera_id",
    );
    assert_eq!(at(&e), (2, 3), "{e}");
    assert_eq!(e.sqlstate(), "42883", "{e}");
    let msg = e.to_string();
    assert!(msg.contains("function sum(text) does not exist"), "{msg}");
    assert!(msg.contains("sum(bigint)") && msg.contains("sum(double precision)"), "{msg}");
    assert!(!msg.contains("Utf8") && !msg.contains("bug"), "{msg}");
}

#[test]
fn unsupported_constructs_are_named_with_their_position_and_the_fix() {
    for (sql, what, column) in [
        ("SELECT camera_id FROM detections ORDER BY score", "ORDER BY", 34),
        ("SELECT camera_id FROM detections LIMIT 3", "LIMIT", 34),
        ("SELECT zone_id, count(*) FROM detections GROUP BY zone_id", "without an event-time window", 42),
        ("SELECT count(*) FROM detections", "without an event-time window", 1),
        ("SELECT camera_id, rank() OVER (ORDER BY score) FROM detections", "window functions", 26),
        (
            "SELECT d.camera_id FROM detections d JOIN plate_reads p ON d.camera_id = p.camera_id",
            "without an event-time bound",
            38,
        ),
        ("SELECT d.camera_id FROM detections d, plate_reads p", "cross join", 1),
        ("SELECT camera_id FROM detections INTERSECT SELECT camera_id FROM plate_reads", "INTERSECT", 34),
        ("SELECT plate FROM watchlist", "only reference tables", 1),
        (
            "SELECT count(*) FROM detections GROUP BY tumble(event_time, INTERVAL '1 month')",
            "months have no fixed length",
            42,
        ),
        (
            "SELECT count(*) FROM detections GROUP BY hop(event_time, INTERVAL '2 minutes', INTERVAL '1 minute')",
            "slide must not exceed",
            42,
        ),
    ] {
        let e = err(sql);
        let msg = e.to_string();
        let wrong_argument = what.contains("months") || what.contains("slide");
        assert!(msg.contains(what) && (wrong_argument || msg.contains("not supported")), "{sql}: {msg}");
        assert!(msg.contains("fix: "), "{msg}");
        assert_eq!(at(&e).1, column, "{sql}: {msg}");
    }
}

#[test]
fn create_rule_options_are_checked_where_they_are_written() {
    let e = err("CREATE RULE x WITH (severity = 'urgent') AS SELECT camera_id FROM detections");
    assert_eq!(at(&e), (1, 32), "{e}");
    assert!(e.to_string().contains("'low', 'medium' or 'high'"), "{e}");
    let e = err("CREATE RULE x WITH (colour = 'red') AS SELECT camera_id FROM detections");
    assert_eq!(at(&e), (1, 21), "{e}");
    let e = err("CREATE RULE x WITH (backfill = 'soon') AS SELECT camera_id FROM detections");
    assert!(e.to_string().contains("not a duration"), "{e}");
    let e = err(
        "CREATE RULE x AS SELECT camera_id FROM detections;\nCREATE RULE x AS SELECT plate FROM plate_reads",
    );
    assert_eq!(at(&e), (2, 1), "{e}");
}

#[test]
fn positions_in_a_multi_statement_file_are_those_of_the_file() {
    let e = err(
        "CREATE RULE a AS SELECT camera_id FROM detections;\n\nCREATE RULE b WITH (severity = 'high') AS\n  SELECT nope FROM plate_reads",
    );
    assert_eq!(at(&e), (4, 10), "{e}");
}

#[test]
fn options_and_names_are_taken_from_create_rule() {
    let rules = compile(
        "file",
        "CREATE RULE loud WITH (severity = 'high', backfill = '10 minutes', emit = 'updates') AS \
         SELECT plate, count(*) FROM plate_reads GROUP BY tumble(event_time, INTERVAL '1 minute'), plate;\n\
         SELECT camera_id FROM detections",
        "f.sql",
        &common::streams(),
    )
    .unwrap();
    assert_eq!(rules[0].name, "loud");
    assert_eq!(rules[0].severity, "high");
    assert_eq!(rules[0].options.backfill_ms, 600_000);
    assert_eq!(rules[1].name, "file");
}

mod fuzz {
    //! The rule parser (statement splitting, CREATE RULE prefix and options, durations, then
    //! DataFusion) on arbitrary and on SQL-shaped input: an answer, never a panic, and an
    //! error always carries a fix.
    use proptest::prelude::*;
    use vigil_sql::rule::{compile, parse_duration};

    const WORDS: &[&str] = &[
        "CREATE",
        "RULE",
        "r",
        "WITH",
        "(",
        ")",
        "severity",
        "=",
        "'high'",
        ",",
        "backfill",
        "'10 minutes'",
        "AS",
        "SELECT",
        "camera_id",
        "count(*)",
        "FROM",
        "detections",
        "plate_reads",
        "watchlist",
        "w",
        "JOIN",
        "ON",
        "a.plate",
        "b.plate",
        "WHERE",
        "GROUP",
        "BY",
        "tumble(event_time,",
        "INTERVAL",
        "'1 minute')",
        "hop(",
        "session(",
        "TUMBLE(detections,",
        "HOP(plate_reads,",
        "event_time,",
        "event_time)",
        "window_end",
        "HAVING",
        ">",
        "1",
        "UNION",
        "ALL",
        "DISTINCT",
        ";",
        "--",
        "'",
        "\"",
        "window_start",
        "AND",
    ];

    #[test]
    fn a_rule_file_that_is_not_sql_is_refused_without_quoting_it() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("passwd.sql");
        std::fs::write(&secret, "root:hunter2:0:0\n").unwrap();
        let streams = super::common::streams();
        let e = vigil_sql::rule::compile_file(&secret, &streams).unwrap_err().to_string();
        assert!(
            e.contains("does not start with a SQL statement")
                && !e.contains("hunter2")
                && !e.contains("root"),
            "{e}"
        );
        let e = vigil_sql::rule::compile_file(std::path::Path::new("/dev/zero"), &streams)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_text_gets_an_answer(text in "\\PC{0,80}") {
            let streams = super::common::streams();
            if let Err(e) = compile("r", &text, "fuzz.sql", &streams) {
                prop_assert!(e.to_string().contains("fix:") || matches!(e, vigil_sql::SqlError::Internal(_)), "{e}");
            }
            let _ = parse_duration(&text);
        }

        #[test]
        fn sql_shaped_text_gets_an_answer(words in proptest::collection::vec(proptest::sample::select(WORDS), 0..30)) {
            let text = words.join(" ");
            let streams = super::common::streams();
            if let Err(e) = compile("r", &text, "fuzz.sql", &streams) {
                let msg = e.to_string();
                prop_assert!(msg.contains("fix:"), "{text}: {msg}");
            }
        }

        #[test]
        fn window_tables_get_an_answer(
            function in proptest::sample::select(&["TUMBLE", "hop", "Session", "tumble"][..]),
            args in proptest::collection::vec(
                proptest::sample::select(&["detections", "plate_reads", "nothere", "event_time", "d.event_time", "score",
                    "INTERVAL '10 seconds'", "INTERVAL '1 month'", "1", "'x'", "DESCRIPTOR(event_time)", "(SELECT 1)"][..]),
                0..6),
            alias in proptest::sample::select(&["", "AS d", "d"][..]),
            groups in proptest::collection::vec(
                proptest::sample::select(&["window_start", "window_end", "camera_id", "d.camera_id", "tumble(event_time, INTERVAL '1 minute')"][..]),
                0..4),
        ) {
            let group = if groups.is_empty() { String::new() } else { format!(" GROUP BY {}", groups.join(", ")) };
            let text = format!("SELECT window_start, count(*) FROM {function}({}) {alias}{group}", args.join(", "));
            let streams = super::common::streams();
            if let Err(e) = compile("r", &text, "fuzz.sql", &streams) {
                let msg = e.to_string();
                prop_assert!(msg.contains("fix:"), "{text}: {msg}");
            }
        }

        #[test]
        fn durations_round_trip(n in 0u64..100_000, unit in proptest::sample::select(&["ms", "s", "seconds", "minutes", "h"][..])) {
            let ms = parse_duration(&format!("{n} {unit}")).expect("a duration");
            let scale = match unit { "ms" => 1, "s" | "seconds" => 1_000, "minutes" => 60_000, _ => 3_600_000 };
            prop_assert_eq!(ms, n * scale);
        }
    }

    proptest! {
        // Each case plans up to a few hundred nested terms in a debug build: fewer cases.
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        /// Long and deep expressions of every shape: refused with a message (or compiled), never
        /// a stack overflow.
        #[test]
        fn deep_expressions_get_an_answer(
            ops in proptest::collection::vec(proptest::sample::select(&[" + ", " OR ", " AND ", " * ", " || "][..]), 1..3),
            n in 1usize..1_500,
            nest in proptest::sample::select(&["(", "abs(", "NOT (", "not(", "CASE WHEN true THEN ", "-(", "CAST(("][..]),
            depth in 0usize..300,
        ) {
            let chain: Vec<String> = (0..n).map(|i| format!("camera_id{}", ops[i % ops.len()])).collect();
            let close = match nest {
                "CASE WHEN true THEN " => " END",
                "CAST((" => ") AS BIGINT)",
                _ => ")",
            };
            let text = format!(
                "SELECT * FROM detections WHERE {}{}1{}",
                nest.repeat(depth),
                chain.concat(),
                close.repeat(depth)
            );
            let streams = super::common::streams();
            if let Err(e) = compile("r", &text, "fuzz.sql", &streams) {
                prop_assert!(e.to_string().contains("fix:"), "{e}");
            }
        }
    }
}

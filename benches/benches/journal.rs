//! The watchlist journal at national scale: how long a restart takes to read it back, what one
//! analyst's change costs, and how long the sweep's trim (in the background) takes when an entry expires
//! and the journal is rewritten without it (and when 1% of the list is withdrawn at once); against pyarrow writing the same table to Parquet
//! in the same run (the least a rewrite can cost in the tool a user would reach for).
//!
//! A plain harness (not criterion): each figure is one whole operation on a large table.
//! `cargo bench -p vigil-benches --bench journal` runs 100,000 and 1,000,000 entries; under
//! `cargo test` 2,000 run as a smoke test.

// The bench's output is its report.
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use vigil_engine::stream::StreamDef;
use vigil_operators::watchlist::{WatchEntry, Watchlist, to_batch};
use vigil_pipelines::app::control::journal;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn python() -> PathBuf {
    std::env::var_os("VIGIL_PYTHON").map_or_else(|| root().join(".venv/bin/python"), PathBuf::from)
}

/// `n` entries with distinct plates: the second expires at 500 ms, the first at 1 s, the rest in
/// a year.
fn entries(n: usize) -> Vec<WatchEntry> {
    const LETTERS: [char; 8] = ['أ', 'ب', 'د', 'ه', 'و', 'ط', 'ي', 'ج'];
    (0..n)
        .map(|i| WatchEntry {
            plate: format!("{}-{}-{}", 1 + i % 99_999, LETTERS[(i / 99_999) % 8], 1 + (i / 799_992) % 89),
            reason: "stolen vehicle".into(),
            legal_basis: format!("DGSN-2026-{:05}", i % 100_000),
            authority: "DGSN Rabat".into(),
            added_by: "amina".into(),
            valid_from: 0,
            expires_at: match i {
                0 => 1_000,
                1 => 500,
                _ => 365 * 86_400_000,
            },
        })
        .collect()
}

fn run(n: usize) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (out, info) = (dir.path(), Watchlist::info());
    const CHANGES: usize = 20;
    let all = entries(n + CHANGES);
    let (table, later) = all.split_at(n);
    // The table as a restart finds it after a trim: one snapshot of every live entry.
    journal::append(out, info, &to_batch(table), 1).expect("append");
    assert_eq!(journal::trim(out, info, 500).expect("the first trim").expired, 1);
    let t = Instant::now();
    let live = journal::live_rows(out, info).expect("read back");
    let restore = t.elapsed();
    assert_eq!(live.num_rows(), n - 1, "every entry but the expired one");

    // One analyst's change: a file of one row, written and synced.
    let t = Instant::now();
    for e in later {
        journal::append(out, info, &to_batch(std::slice::from_ref(e)), 1).expect("append");
    }
    let append = t.elapsed() / CHANGES as u32;

    // The first entry expires: the sweep rewrites the journal without it.
    let t = Instant::now();
    let trimmed = journal::trim(out, info, 1_000).expect("trim");
    let trim = t.elapsed();
    assert_eq!(trimmed.expired, 1, "{trimmed:?}");

    // pyarrow writing the same table (the snapshot the trim wrote, read back) with its
    // defaults.
    let snapshot = std::fs::read_dir(out.join("catalog/tables/watchlist"))
        .expect("the journal")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".snapshot.parquet"))
        .expect("a snapshot");
    let bytes = std::fs::metadata(&snapshot).map_or(0, |m| m.len());
    let pyarrow = Command::new(python())
        .args([
            "-c",
            "import sys, time, tempfile, pyarrow.parquet as pq\n\
             t = pq.read_table(sys.argv[1])\n\
             with tempfile.TemporaryDirectory() as d:\n\
             \x20   s = time.perf_counter(); pq.write_table(t, d + '/w.parquet'); print(time.perf_counter() - s)",
        ])
        .arg(&snapshot)
        .output()
        .expect("python");
    assert!(pyarrow.status.success(), "{}", String::from_utf8_lossy(&pyarrow.stderr));
    let pyarrow: f64 = String::from_utf8_lossy(&pyarrow.stdout).trim().parse().expect("seconds");

    // An analyst withdraws 1% of the list in one change: until the next trim, reading the
    // journal back keys every row to find the withdrawn ones.
    let gone = n / 100;
    journal::append(out, info, &to_batch(&table[2..2 + gone]), -1).expect("append the deletions");
    let t = Instant::now();
    let live = journal::live_rows(out, info).expect("read back");
    let restore_deleted = t.elapsed();
    assert_eq!(live.num_rows(), n - 2 + CHANGES - gone, "the withdrawn entries are gone");
    let t = Instant::now();
    let trimmed = journal::trim(out, info, 1_000).expect("trim");
    let trim_deleted = t.elapsed();
    assert_eq!(
        (trimmed.expired, journal::live_rows(out, info).expect("read back").num_rows()),
        (0, live.num_rows())
    );

    println!("{n} entries ({:.1} MB snapshot):", bytes as f64 / 1e6);
    println!("  restore (read back)   {:>9.1} ms", restore.as_secs_f64() * 1e3);
    println!("  one change            {:>9.2} ms", append.as_secs_f64() * 1e3);
    println!(
        "  trim after an expiry  {:>9.1} ms   pyarrow writing the table {:.1} ms   ratio {:.1}x",
        trim.as_secs_f64() * 1e3,
        pyarrow * 1e3,
        trim.as_secs_f64() / pyarrow
    );
    println!(
        "  with {gone} withdrawn    restore {:.1} ms   trim {:.1} ms",
        restore_deleted.as_secs_f64() * 1e3,
        trim_deleted.as_secs_f64() * 1e3
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    println!("watchlist journal bench ({})", if full { "full" } else { "smoke" });
    let sizes: &[usize] = if full { &[100_000, 1_000_000] } else { &[2_000] };
    for &n in sizes {
        run(n);
    }
}

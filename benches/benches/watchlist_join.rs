//! The watchlist join at national scale: plate reads per second through the exact and fuzzy join
//! against a 1,000,000-entry watchlist, the memory each entry costs, and the latency from a
//! watchlist insert to its first retroactive hit; against DuckDB running the same exact join
//! over the same plates, in the same run (what an analyst would otherwise do: a batch query).
//!
//! vigil does more than the DuckDB query: the join is incremental (a read is matched once, when
//! it arrives, and an entry added later finds the retained reads), fuzzy (OCR confusions, an
//! unread letter, one serial edit), and each hit enters the verification book. DuckDB answers
//! one exact equi-join over everything at once.
//!
//! A plain harness (not criterion): the figures are whole runs.
//! `cargo bench -p vigil-benches --bench watchlist_join` runs the full size (1,000,000 entries,
//! 200,000 reads); under `cargo test` a small size runs as a smoke test.

// The bench's output is its report.
#![allow(clippy::print_stdout)]

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Probe;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use vigil_engine::error::ErrorSink;
use vigil_engine::ids::Epoch;
use vigil_engine::runtime::{Input, Runtime, RuntimeConfig, Time};
use vigil_engine::stream::{Batch, StreamDef};
use vigil_operators::hits::{HitConfig, HitDecisions};
use vigil_operators::plate::{PlateRead, PlateReadRows, PlateReads};
use vigil_operators::watchlist::{ErasedReads, WatchEntry, Watchlist, WatchlistJoin, to_batch};

const LETTERS: [char; 8] = ['أ', 'ب', 'د', 'ه', 'و', 'ط', 'ي', 'ج'];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A tiny deterministic generator (the bench needs repeatable plates, not quality).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }

    fn plate(&mut self) -> String {
        let serial = 1 + self.next(99_999);
        let letter = LETTERS[self.next(8) as usize];
        let region = 1 + self.next(89);
        format!("{serial}-{letter}-{region}")
    }
}

/// Resident memory of this process, bytes.
/// The bytes the process holds allocated (every thread's), counted by the allocator: unlike the
/// resident set, memory freed by one phase and reused by the next is not counted twice.
fn live() -> u64 {
    ALLOCATOR.allocated() as u64
}

#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()).unwrap_or(0) * 4096
}

/// CPU seconds this process has used.
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<u64> = after.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    // utime and stime are fields 14 and 15 of the file (11 and 12 after the command name).
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) as f64 / 100.0
}

/// What the dataflow reports back: hits seen and how far it has got.
#[derive(Default)]
struct Watch {
    hits: AtomicU64,
    frontier: AtomicU64,
}

impl Watch {
    fn wait_until(&self, t: Time) {
        while self.frontier.load(Ordering::Acquire) < t {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

fn start(watch: &Arc<Watch>) -> Runtime {
    let w = Arc::clone(watch);
    // The city's inputs, the erasure requests' included (none are made here, but the join holds
    // its reads ready for them).
    let inputs = vec![PlateReads::info(), Watchlist::info(), HitDecisions::info(), ErasedReads::info()];
    let config = RuntimeConfig::new(1, inputs);
    Runtime::start(config, 0, move |graph| {
        let probe = ProbeHandle::new();
        let (reads, list, decisions, erased) = (
            graph.get::<PlateReads>().unwrap(),
            graph.get::<Watchlist>().unwrap(),
            graph.get::<HitDecisions>().unwrap(),
            graph.get::<ErasedReads>(),
        );
        let config = HitConfig { lookback_ms: 86_400_000, ..HitConfig::default() };
        let out = reads.watchlist_hits(list, decisions, erased, config, Epoch::default(), &ErrorSink::log());
        let w = Arc::clone(&w);
        out.hits
            .into_inner()
            .unary_frontier::<timely::container::CapacityContainerBuilder<Vec<Batch>>, _, _, _>(
                Pipeline,
                "Watch",
                move |_, _| {
                    move |(input, frontier), _output| {
                        input.for_each(|_, data| {
                            let n: usize = data.iter().map(|b| b.rows.num_rows()).sum();
                            w.hits.fetch_add(n as u64, Ordering::AcqRel);
                        });
                        let f = frontier.frontier().iter().min().copied().unwrap_or(Time::MAX);
                        w.frontier.store(f, Ordering::Release);
                    }
                },
            )
            .probe_with(&probe);
        probe
    })
    .unwrap()
}

fn entry(plate: &str) -> WatchEntry {
    WatchEntry {
        plate: plate.to_owned(),
        reason: "stolen vehicle".into(),
        legal_basis: "DGSN-2026-00001".into(),
        authority: "DGSN".into(),
        added_by: "bench".into(),
        valid_from: 0,
        expires_at: i64::MAX / 2,
    }
}

/// On a fresh join listing `list`: the bytes held per read of `texts` once they are in, and
/// the hit rows they raised.
fn held(list: &[&str], texts: &[&str]) -> (f64, u64) {
    let watch = Arc::new(Watch::default());
    let mut rt = start(&watch);
    let rows = to_batch(&list.iter().map(|p| entry(p)).collect::<Vec<_>>());
    rt.send(0, 0, Input { stream: Watchlist::info(), batch: Batch::new(rows) }).unwrap();
    rt.advance(1_000).unwrap();
    watch.wait_until(1_000);
    let before = live();
    let end = send_reads(&mut rt, texts, 1_000, 0);
    watch.wait_until(end);
    let held = live().saturating_sub(before) as f64 / texts.len() as f64;
    let hits = watch.hits.load(Ordering::Acquire);
    rt.finish().unwrap();
    (held, hits)
}

/// Sends `texts` as plate reads, 1,000 per 100 ms of event time from `t0`, event ids from
/// `id0`, advancing the input after each tick; returns the time advanced to.
fn send_reads(rt: &mut Runtime, texts: &[&str], t0: i64, id0: u64) -> Time {
    let mut last = t0 as Time;
    for (k, chunk) in texts.chunks(1_000).enumerate() {
        let t = t0 + k as i64 * 100;
        let mut b = PlateReadRows::default();
        for (j, text) in chunk.iter().enumerate() {
            let plate = vigil_operators::plate::normalize(text).ok();
            b.push(&PlateRead::text(
                (j % 500) as u32,
                t,
                id0 + (k * 1_000 + j) as u64,
                text,
                plate.as_deref(),
                0.9,
            ));
        }
        rt.send(0, t as Time, Input { stream: PlateReads::info(), batch: Batch::new(b.finish()) }).unwrap();
        last = t as Time + 1;
        rt.advance(last).unwrap();
    }
    last
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (entries_n, reads_n) = if full { (1_000_000, 200_000) } else { (20_000, 5_000) };
    println!(
        "watchlist join bench ({}): {entries_n} entries, {reads_n} reads",
        if full { "full" } else { "smoke" }
    );
    let mut rng = Lcg(2030);
    let mut listed: Vec<String> = Vec::with_capacity(entries_n);
    let mut seen = HashSet::with_capacity(entries_n);
    while listed.len() < entries_n {
        let p = rng.plate();
        if seen.insert(p.clone()) {
            listed.push(p);
        }
    }
    // Reads: 2% of listed plates (a third with the letter unread, a third with a digit wrong),
    // the rest random, 1,000 per 100 ms of event time.
    let mut reads: Vec<(String, i64)> = Vec::with_capacity(reads_n);
    for i in 0..reads_n {
        let t = (i / 1_000) as i64 * 100 + 1_000;
        let text = if rng.next(50) == 0 {
            let p = &listed[rng.next(listed.len() as u64) as usize];
            match rng.next(3) {
                0 => p.clone(),
                1 => p.replacen(|c: char| LETTERS.contains(&c), "?", 1),
                _ => format!("{}{}", &p[..p.find('-').unwrap() - 1], &p[p.find('-').unwrap()..]),
            }
        } else {
            rng.plate()
        };
        reads.push((text, t));
    }
    let watch = Arc::new(Watch::default());
    let before = rss();
    let mut rt = start(&watch);
    // 1. The watchlist, in batches of 100,000 rows.
    let t0 = Instant::now();
    for chunk in listed.chunks(100_000) {
        let rows = to_batch(&chunk.iter().map(|p| entry(p)).collect::<Vec<_>>());
        rt.send(0, 0, Input { stream: Watchlist::info(), batch: Batch::new(rows) }).unwrap();
    }
    rt.advance(1_000).unwrap();
    watch.wait_until(1_000);
    let load_s = t0.elapsed().as_secs_f64();
    let per_entry = rss().saturating_sub(before) as f64 / entries_n as f64;
    // 2. The reads, tick by tick.
    let loaded = live();
    let (t1, c1) = (Instant::now(), cpu_s());
    let texts: Vec<&str> = reads.iter().map(|(t, _)| t.as_str()).collect();
    let last = send_reads(&mut rt, &texts, 1_000, 0);
    watch.wait_until(last);
    let (read_s, read_cpu) = (t1.elapsed().as_secs_f64(), cpu_s() - c1);
    // Each read stays in the join for the lookback (a day by default), with its retraction
    // pending: what a city's read rate times the lookback costs.
    let per_read = live().saturating_sub(loaded) as f64 / reads_n as f64;
    let hits = watch.hits.load(Ordering::Acquire);
    assert!(hits > 0, "no hits");
    // 3. Latency: an entry for a plate read earlier; until its retroactive hit is out.
    let mut lat = Vec::new();
    for (i, (text, _)) in reads.iter().filter(|(t, _)| !t.contains('?')).take(5).enumerate() {
        let Ok(plate) = vigil_operators::plate::normalize(text) else { continue };
        let (n, at) = (watch.hits.load(Ordering::Acquire), last + 10 * i as Time);
        let t = Instant::now();
        let rows = to_batch(&[entry(&plate)]);
        rt.send(0, at, Input { stream: Watchlist::info(), batch: Batch::new(rows) }).unwrap();
        rt.advance(at + 1).unwrap();
        while watch.hits.load(Ordering::Acquire) == n {
            std::thread::sleep(Duration::from_micros(50));
        }
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    rt.finish().unwrap();
    lat.sort_by(f64::total_cmp);
    // 4. What a hit costs while it is kept (its period, 30 days by default): on a fresh join
    // with a list of `n`, reads that all hit (listed plates read exactly) against as many that
    // hit nothing (old plates, `1234-56-7`: the list holds only current ones).
    let n = reads_n / 10;
    let small: Vec<&str> = listed.iter().take(n).map(String::as_str).collect();
    let unlisted: Vec<String> =
        (0..n).map(|i| format!("{}-{}-{}", 1_000 + i % 9_000, 10 + i / 9_000, 1 + i % 89)).collect();
    let unlisted: Vec<&str> = unlisted.iter().map(String::as_str).collect();
    let (per_miss, no_hits) = held(&small, &unlisted);
    let (per_listed, new_hits) = held(&small, &small);
    assert_eq!(no_hits, 0, "unlisted plates hit");
    assert!(new_hits >= n as u64, "{new_hits} hit rows for {n} listed reads");
    let median = lat.get(lat.len() / 2).copied().unwrap_or(f64::NAN);
    // DuckDB: the same plates, the exact join, in the same run.
    let dir = tempfile::tempdir().unwrap();
    let (wl, rd) = (dir.path().join("watchlist.csv"), dir.path().join("reads.csv"));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&wl).unwrap());
    writeln!(f, "plate").unwrap();
    for p in &listed {
        writeln!(f, "{p}").unwrap();
    }
    drop(f);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&rd).unwrap());
    writeln!(f, "plate").unwrap();
    for (text, _) in &reads {
        writeln!(f, "{}", vigil_operators::plate::normalize(text).unwrap_or_default()).unwrap();
    }
    drop(f);
    let py = std::env::var_os("VIGIL_PYTHON").map_or_else(|| root().join(".venv/bin/python"), PathBuf::from);
    let out = std::process::Command::new(py)
        .arg(root().join("scripts/bench_watchlist_join.py"))
        .args([&wl, &rd])
        .output()
        .expect("python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let duck = String::from_utf8_lossy(&out.stdout);
    let duck: Vec<f64> = duck.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    let (duck_reads_s, duck_hits) = (duck[0], duck[1]);
    println!(
        "watchlist load: {entries_n} entries in {load_s:.1} s, {per_entry:.0} bytes of memory per entry"
    );
    println!(
        "reads: {:.0} reads/s wall, {:.0} reads per CPU-second ({:.2} µs CPU per read), {hits} hit rows (exact and fuzzy)",
        reads_n as f64 / read_s,
        reads_n as f64 / read_cpu.max(1e-9),
        read_cpu * 1e6 / reads_n as f64
    );
    println!("reads held in the join: {per_read:.0} bytes allocated per read (for its lookback)");
    println!(
        "hits kept: {:.0} bytes allocated per hit ({per_listed:.0} per read that hits, {per_miss:.0} per read that does not)",
        per_listed - per_miss
    );
    println!(
        "latency, watchlist insert to its first retroactive hit: median {median:.1} ms of {} ({lat:.1?})",
        lat.len()
    );
    println!(
        "DuckDB exact join, all at once: {duck_reads_s:.0} reads/s ({duck_hits} exact matches); vigil/DuckDB {:.2}",
        (reads_n as f64 / read_s) / duck_reads_s
    );
}

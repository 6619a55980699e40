//! The audit log: append-only and hash-chained, so that a changed, removed or reordered record
//! is found by [`verify`].
//!
//! One record per line, JSON: `{"seq":…,"time_ms":…,"actor":…,"action":…,"object":…,
//! "detail":{…},"prev":"<hex>","hash":"<hex>"}`. `hash` is the SHA-256 of the line's bytes
//! without it (the text up to `,"hash"`, closed by `}`), and `prev` is the previous record's
//! `hash` (64 zeros for the first). `seq` counts from 1 without gaps. Changing a byte breaks that
//! record's hash; removing or moving a record breaks the next one's `prev` and `seq`. Removing
//! records at the end is found against the head file (`<log>.head`: the last `seq` and `hash`,
//! rewritten atomically after each record). Whoever can rewrite the whole file and its head can
//! forge a consistent history, so the head is also what to copy elsewhere (`vigil audit
//! verify` prints it) to anchor the log outside the machine.
//!
//! Records are written and fsynced before [`AuditLog::append`] returns: an action the log
//! accounts for is on disk before it is answered. A process killed mid-write leaves a partial
//! last line; opening the log again cuts it off and records that it did (`audit.torn_tail`).
//!
//! Personal data stays out of the log: objects and details are ids and keyed digests
//! ([`AuditLog::digest`], HMAC-SHA256 under the installation's key in `<log>.key`, so a plate's
//! digest cannot be found by hashing every possible plate without the key).
//!
//! Written here rather than taken from a crate: no maintained Rust crate offers a hash-chained
//! append-only file log; the parts that matter (SHA-256, HMAC, JSON) are the `sha2`, `hmac` and
//! `serde_json` crates.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{EngineError, Result};

/// The `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A record as written (without its hash, which follows it on the line).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Position in the log, from 1.
    pub seq: u64,
    /// When, ms since the Unix epoch (wall clock).
    pub time_ms: i64,
    /// Who: a user name, `config` or `system`.
    pub actor: String,
    /// What, dotted: `login`, `login.failed`, `query`, `rule.create`, `watchlist.add`, …
    pub action: String,
    /// On what: an id or a digest.
    pub object: String,
    /// More ids and digests.
    pub detail: BTreeMap<String, String>,
    /// The previous record's hash.
    pub prev: String,
}

/// The log, open for appending. Shared by every interface of a running engine.
pub struct AuditLog {
    path: PathBuf,
    key: [u8; 32],
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for AuditLog {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("path", &self.path).finish()
    }
}

struct Inner {
    file: File,
    seq: u64,
    head: String,
}

/// What [`verify`] found in a sound log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Records.
    pub records: u64,
    /// The last record's hash (the head to anchor elsewhere).
    pub head: String,
}

/// Why a log does not verify: the first bad record, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}:{line}: {why}")]
pub struct Broken {
    /// The log.
    pub path: String,
    /// Line of the first bad record, from 1 (one past the last line when records are missing
    /// at the end).
    pub line: u64,
    /// The `seq` that line should hold.
    pub expected_seq: u64,
    /// What is wrong.
    pub why: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The line for `record`: its JSON with `hash` appended.
fn line(record: &Record) -> String {
    let body = serde_json::to_string(record).expect("a record serializes");
    let hash = sha256_hex(body.as_bytes());
    format!("{},\"hash\":\"{hash}\"}}\n", &body[..body.len() - 1])
}

/// Splits a line into its record and hash, checking the hash; `None` when it is not a record.
fn parse(text: &str) -> std::result::Result<(Record, String), String> {
    const TAIL: usize = ",\"hash\":\"\"}".len() + 64;
    if text.len() < TAIL || !text.is_char_boundary(text.len() - TAIL) {
        return Err("not an audit record (no hash at its end)".into());
    }
    let (head, tail) = text.split_at(text.len() - TAIL);
    let Some(hash) = tail.strip_prefix(",\"hash\":\"").and_then(|t| t.strip_suffix("\"}")) else {
        return Err("not an audit record (no hash at its end)".into());
    };
    let body = format!("{head}}}");
    if sha256_hex(body.as_bytes()) != hash {
        return Err("its hash does not match its content: the record was changed".into());
    }
    let record: Record = serde_json::from_str(&body).map_err(|e| format!("not an audit record ({e})"))?;
    Ok((record, hash.to_owned()))
}

fn head_path(log: &Path) -> PathBuf {
    let mut p = log.as_os_str().to_owned();
    p.push(".head");
    PathBuf::from(p)
}

fn key_path(log: &Path) -> PathBuf {
    let mut p = log.as_os_str().to_owned();
    p.push(".key");
    PathBuf::from(p)
}

/// Reads the head file: (seq, hash).
fn read_head(log: &Path) -> Option<(u64, String)> {
    let text = std::fs::read_to_string(head_path(log)).ok()?;
    let mut w = text.split_whitespace();
    Some((w.next()?.parse().ok()?, w.next()?.to_owned()))
}

/// Checks the chain of `log` record by record, and its end against the head file. Returns the
/// first bad record.
pub fn verify(log: &Path) -> std::result::Result<Verified, Broken> {
    let shown = log.display().to_string();
    let broken =
        |line: u64, expected_seq: u64, why: String| Broken { path: shown.clone(), line, expected_seq, why };
    let file = File::open(log).map_err(|e| broken(0, 1, format!("cannot read the log: {e}")))?;
    let mut reader = BufReader::new(file);
    let (mut seq, mut prev, mut n) = (0u64, GENESIS.to_owned(), 0u64);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let read = reader.read_until(b'\n', &mut buf).map_err(|e| broken(n + 1, seq + 1, e.to_string()))?;
        if read == 0 {
            break;
        }
        n += 1;
        if buf.last() != Some(&b'\n') {
            return Err(broken(n, seq + 1, "the last record is cut short".into()));
        }
        let text = std::str::from_utf8(&buf[..buf.len() - 1])
            .map_err(|_| broken(n, seq + 1, "not UTF-8: the record was changed".into()))?;
        let (record, hash) = parse(text).map_err(|why| broken(n, seq + 1, why))?;
        if record.seq != seq + 1 {
            return Err(broken(
                n,
                seq + 1,
                format!("seq {} where {} was due: records were removed or reordered", record.seq, seq + 1),
            ));
        }
        if record.prev != prev {
            return Err(broken(
                n,
                seq + 1,
                "its prev is not the hash of the record before it: records were removed or reordered".into(),
            ));
        }
        (seq, prev) = (record.seq, hash);
    }
    if let Some((head_seq, head_hash)) = read_head(log) {
        // The head is written after its record, so it may lag the log by one after a crash.
        if head_seq > seq {
            return Err(broken(
                n + 1,
                seq + 1,
                format!(
                    "the log ends at seq {seq} but its head says {head_seq}: records were removed at the end"
                ),
            ));
        }
        if head_seq == seq && head_hash != prev {
            return Err(broken(n, seq, "the last record is not the one the head names".into()));
        }
    }
    Ok(Verified { records: seq, head: prev })
}

/// The records of `log` that parse, with their hashes, in file order (no chain check: that is
/// [`verify`]'s job).
pub fn records(log: &Path) -> Result<Vec<(Record, String)>> {
    let text = std::fs::read_to_string(log).map_err(|e| EngineError::io("reading", log, e))?;
    Ok(text.lines().filter_map(|l| parse(l).ok()).collect())
}

/// The records of `log` whose action is `action`, in file order (no chain check), read line by
/// line: a log of months is not held in memory to find a few records. A log not yet written
/// has none.
pub fn records_of(log: &Path, action: &str) -> Result<Vec<Record>> {
    let file = match File::open(log) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(EngineError::io("opening", log, e)),
    };
    let key = format!("\"action\":{}", serde_json::to_string(action).expect("a string serializes"));
    let mut found = Vec::new();
    for l in BufReader::new(file).lines() {
        let l = l.map_err(|e| EngineError::io("reading", log, e))?;
        if let Some((r, _)) = l.contains(&key).then(|| parse(&l).ok()).flatten()
            && r.action == action
        {
            found.push(r);
        }
    }
    Ok(found)
}

impl AuditLog {
    /// Opens (or creates) the log at `path`, with its key beside it. A partial last line (the
    /// process was killed mid-write) is cut off and the cut recorded. A log that does not verify
    /// is still opened, so the engine keeps running and keeps accounting, and the failure is
    /// logged and recorded (`audit.broken`); `vigil audit verify` names the bad record.
    pub fn open(path: &Path) -> Result<AuditLog> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| EngineError::io("creating", dir, e))?;
        }
        let key = Self::key(path)?;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| EngineError::io("opening", path, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| EngineError::io("reading", path, e))?;
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let torn = bytes.len() - complete;
        if torn > 0 {
            file.set_len(complete as u64).map_err(|e| EngineError::io("truncating", path, e))?;
            file.seek(SeekFrom::End(0)).map_err(|e| EngineError::io("seeking", path, e))?;
        }
        // The chain continues from the last record that parses.
        let (mut seq, mut head) = (0, GENESIS.to_owned());
        for l in bytes[..complete].split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            if let Some((r, h)) = std::str::from_utf8(l).ok().and_then(|t| parse(t).ok()) {
                (seq, head) = (r.seq.max(seq), h);
            }
        }
        let log = AuditLog { path: path.to_owned(), key, inner: Mutex::new(Inner { file, seq, head }) };
        if torn > 0 {
            tracing::warn!("{}: a partial last record ({torn} bytes) was cut off", path.display());
            log.append("system", "audit.torn_tail", "", &[("bytes", &torn.to_string())])?;
        }
        if let Err(e) = verify(path) {
            tracing::error!("audit log does not verify: {e}");
            log.append("system", "audit.broken", &e.line.to_string(), &[("why", &e.why)])?;
        }
        Ok(log)
    }

    /// The installation's digest key: read from `<log>.key`, or made (random, owner-only) the
    /// first time.
    fn key(log: &Path) -> Result<[u8; 32]> {
        let p = key_path(log);
        match std::fs::read(&p) {
            Ok(k) if k.len() == 32 => Ok(k.try_into().expect("32 bytes")),
            Ok(_) => Err(EngineError::user(
                format!("{}: not a 32-byte audit key", p.display()),
                "restore it from a backup (the log's digests are made with it)",
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                let mut f = OpenOptions::new();
                f.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut f, 0o600);
                let mut file = f.open(&p).map_err(|e| EngineError::io("creating", &p, e))?;
                file.write_all(&key)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| EngineError::io("writing", &p, e))?;
                Ok(key)
            }
            Err(e) => Err(EngineError::io("reading", &p, e)),
        }
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A keyed digest of personal data (a plate, a query's text) for the log: 32 hex digits of
    /// HMAC-SHA256 under the installation's key.
    pub fn digest(&self, personal: &str) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).expect("any key length");
        mac.update(personal.as_bytes());
        hex(&mac.finalize().into_bytes()[..16])
    }

    /// Appends a record and syncs it to disk; returns its seq. `object` and `detail` must be
    /// ids or digests ([`AuditLog::digest`]), never personal data.
    pub fn append(&self, actor: &str, action: &str, object: &str, detail: &[(&str, &str)]) -> Result<u64> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let record = Record {
            seq: inner.seq + 1,
            time_ms: chrono::Utc::now().timestamp_millis(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            object: object.to_owned(),
            detail: detail.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            prev: inner.head.clone(),
        };
        let text = line(&record);
        let io = |e| EngineError::io("appending to", &self.path, e);
        let before = inner.file.metadata().map_err(io)?.len();
        let written = inner.file.write_all(text.as_bytes()).and_then(|()| inner.file.sync_data());
        if let Err(e) = written {
            // A full disk can take part of the line: cut it off, or the next record would
            // follow half a line and the chain would read as broken.
            if let Err(cut) = inner.file.set_len(before) {
                tracing::error!("{}: cutting off a partial record: {cut}", self.path.display());
            }
            return Err(io(e));
        }
        let hash = text[text.len() - 67..text.len() - 3].to_owned();
        inner.seq = record.seq;
        inner.head = hash.clone();
        // The head, replaced atomically: a crash leaves the old head or the new one. The record
        // is on disk already; a head that cannot be written lags it, which verification allows.
        let head = head_path(&self.path);
        let tmp = head.with_extension("head.tmp");
        let headed = std::fs::write(&tmp, format!("{} {hash}\n", record.seq))
            .and_then(|()| File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &head));
        if let Err(e) = headed {
            tracing::error!("{}: record {} written, its head not: {e}", self.path.display(), record.seq);
        }
        Ok(record.seq)
    }

    /// [`AuditLog::append`], logging instead of failing: for interfaces that must answer even
    /// when the disk is full (the failure is in the service's log for the operator).
    pub fn record(&self, actor: &str, action: &str, object: &str, detail: &[(&str, &str)]) {
        if let Err(e) = self.append(actor, action, object, detail) {
            tracing::error!("audit log: {action} by {actor} not recorded: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn write_log(dir: &Path, n: usize) -> PathBuf {
        let path = dir.join("audit.log");
        let log = AuditLog::open(&path).unwrap();
        for i in 0..n {
            let d = log.digest(&format!("12345-ب-{i}"));
            log.append("analyst1", "watchlist.add", &d, &[("legal_basis", "PV-2026-0042")]).unwrap();
        }
        path
    }

    /// The child's half of [`a_record_the_disk_takes_half_of_is_cut_off_and_the_chain_goes_on`],
    /// in a process whose files may not grow past `limit` bytes (a full disk, as far as the log
    /// can tell): records until one fails, then a short one that fits, then the chain is
    /// verified; panics if it does not hold.
    fn append_past_a_file_size_limit(dir: &str) {
        let limit: u64 = std::env::var("VIGIL_AUDIT_LIMIT").unwrap().parse().unwrap();
        let path = Path::new(&dir).join("audit.log");
        let log = AuditLog::open(&path).unwrap();
        let len = || std::fs::metadata(&path).unwrap().len();
        // Short records (about 250 bytes) until less than 1,000 are left, then a long one
        // (about 1,700) that the "disk" takes only part of.
        let mut i = 0;
        while len() + 1_000 < limit {
            log.append("admin", "rule.create", &format!("r{i}"), &[]).unwrap();
            i += 1;
        }
        let long = "x".repeat(1_500);
        let failed = log.append("admin", "rule.create", "long", &[("sql", &long)]).unwrap_err().to_string();
        let len = len();
        assert!(len < limit, "the partial record was left: {len} bytes of {limit} ({failed})");
        let seq = log.append("admin", "rule.drop", "r", &[]).expect("a short record fits");
        let v = verify(&path).unwrap();
        assert_eq!(v.records, seq);
        // The parent reads this line (the lint against printing is for the library's code).
        writeln!(std::io::stdout(), "CHILD OK {seq} records; {failed}").unwrap();
    }

    /// Runs itself again in a child process under a file-size limit (`prlimit`; SIGXFSZ
    /// ignored, so a write past it fails with EFBIG as on a full disk), which does the appending.
    #[test]
    fn a_record_the_disk_takes_half_of_is_cut_off_and_the_chain_goes_on() {
        if let Ok(dir) = std::env::var("VIGIL_AUDIT_DIR") {
            return append_past_a_file_size_limit(&dir);
        }
        let dir = tempfile::tempdir().unwrap();
        let limit = 3_000;
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new("sh")
            .args(["-c", r#"trap '' XFSZ; exec prlimit --fsize="$VIGIL_AUDIT_LIMIT": "$0" "$@""#])
            .arg(&exe)
            .args([
                "--exact",
                "audit::tests::a_record_the_disk_takes_half_of_is_cut_off_and_the_chain_goes_on",
                "--nocapture",
            ])
            .env("VIGIL_AUDIT_DIR", dir.path())
            .env("VIGIL_AUDIT_LIMIT", limit.to_string())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && text.contains("CHILD OK"), "{text}");
        assert!(text.contains("File too large"), "the limit was not met: {text}");
    }

    #[test]
    fn an_untouched_log_verifies_and_reopens_where_it_left_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), 5);
        let v = verify(&path).unwrap();
        assert_eq!(v.records, 5);
        let log = AuditLog::open(&path).unwrap();
        assert_eq!(log.append("admin", "rule.create", "r1", &[]).unwrap(), 6);
        assert_eq!(verify(&path).unwrap().records, 6);
        // Digests are keyed and stable across opens; the plate is not in the log.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("12345"), "{text}");
        assert!(text.contains(&log.digest("12345-ب-0")));
        assert_ne!(log.digest("12345-ب-0"), sha256_hex("12345-ب-0".as_bytes())[..32]);
    }

    #[test]
    fn the_records_of_one_action_are_found_in_order_and_a_missing_log_has_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(records_of(&dir.path().join("none.log"), "export").unwrap().is_empty());
        let path = write_log(dir.path(), 3);
        let log = AuditLog::open(&path).unwrap();
        log.append("sara", "export", "plate_reads", &[("pseudonymized", "false")]).unwrap();
        // A detail that names the action is not the action.
        log.append("omar", "rule.create", "r", &[("note", "\"action\":\"export\"")]).unwrap();
        log.append("sara", "export", "tracks", &[("pseudonymized", "true")]).unwrap();
        let found = records_of(&path, "export").unwrap();
        let seen: Vec<(u64, &str)> = found.iter().map(|r| (r.seq, r.object.as_str())).collect();
        assert_eq!(seen, [(4, "plate_reads"), (6, "tracks")]);
        assert_eq!(found[0].detail["pseudonymized"], "false");
    }

    #[test]
    fn a_removed_or_reordered_record_names_the_first_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), 6);
        let lines: Vec<String> = std::fs::read_to_string(&path).unwrap().lines().map(String::from).collect();
        let write = |ls: &[&String]| {
            std::fs::write(&path, ls.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
        };
        // Record 3 removed: line 3 now holds seq 4.
        write(&[&lines[0], &lines[1], &lines[3], &lines[4], &lines[5]]);
        let e = verify(&path).unwrap_err();
        assert_eq!((e.line, e.expected_seq), (3, 3), "{e}");
        // Records 2 and 3 swapped.
        write(&[&lines[0], &lines[2], &lines[1], &lines[3], &lines[4], &lines[5]]);
        assert_eq!(verify(&path).unwrap_err().line, 2);
        // The last record removed: found against the head.
        write(&[&lines[0], &lines[1], &lines[2], &lines[3], &lines[4]]);
        let e = verify(&path).unwrap_err();
        assert!(e.why.contains("removed at the end"), "{e}");
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_log(dir.path(), 3);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":4,\"time_ms\":1,\"ac").unwrap();
        drop(f);
        assert!(verify(&path).unwrap_err().why.contains("cut short"));
        let log = AuditLog::open(&path).unwrap();
        drop(log);
        let v = verify(&path).unwrap();
        assert_eq!(v.records, 4);
        assert!(std::fs::read_to_string(&path).unwrap().lines().last().unwrap().contains("audit.torn_tail"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any one byte changed anywhere is found, at the line that holds it.
        #[test]
        fn any_changed_byte_is_found_at_its_record(pos in 0usize..100_000, flip in 1u8..=255) {
            let dir = tempfile::tempdir().unwrap();
            let path = write_log(dir.path(), 4);
            let mut bytes = std::fs::read(&path).unwrap();
            let at = pos % bytes.len();
            bytes[at] ^= flip;
            std::fs::write(&path, &bytes).unwrap();
            let e = verify(&path).unwrap_err();
            let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() as u64 + 1;
            // A changed newline joins or splits lines: the error is at that line or the next.
            prop_assert!(e.line == line || e.line == line + 1, "byte {at} (line {line}): {e}");
        }
    }
}

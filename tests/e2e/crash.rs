//! The headline crash-safety test: writers keep the real server busy while it is killed with
//! SIGKILL at seeded random moments and aborted at every `RIGWATCH_CRASH_AT` point; after
//! each crash a clean restart must show every acknowledged row exactly once.
//!
//! Three tables exercise the three ways rows can go wrong:
//! - `gpu` (upsert): one row per `seq`, a unique (series, time) each, spread over three
//!   one-minute partitions so every persist writes several files and compaction has work.
//! - `gpu_state` (upsert): a few keys rewritten over and over with an increasing `version`; the
//!   row must hold the newest acknowledged version (or a newer in-flight one), never an older
//!   one and never two rows.
//! - `gpu_fault` (append-only): every row has a unique `seq`, and rows share (series, time) in
//!   threes, so a replay twice over or a lost WAL record shows up as a duplicate or a gap.
//!
//! A row whose write was not acknowledged may or may not survive; the first restart decides,
//! and every later restart must agree (a row seen once never vanishes, a row missing once never
//! reappears).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use super::harness::{Http, Rng, Server, describe, seed};

const BASE: i64 = 1_700_000_000_000_000_000;
const MINUTE: i64 = 60_000_000_000;
const SECOND: i64 = 1_000_000_000;

/// Persist and compact as often as the server allows, so crashes land inside them.
const ARGS: &[&str] = &[
    "--persist-bytes",
    "64KiB",
    "--persist-age",
    "1s",
    "--compaction-interval",
    "1s",
    "--compaction-min-files",
    "2",
    "--partition",
    "1m",
    "--log",
    "info",
];

/// Concurrent writers (each owns its `gpu_state` keys, so versions per key stay ordered).
const WRITERS: usize = 2;
/// Rows per batch, per table.
const POINTS_PER_BATCH: u64 = 10;
const FAULTS_PER_BATCH: u64 = 3;
const STATES_PER_BATCH: u64 = 2;
/// `gpu_state` keys per writer.
const STATE_KEYS: u64 = 6;
/// Pause between a writer's batches: enough load to persist every second or so without
/// growing the data set past what a debug build can check 20+ times.
const WRITE_PAUSE: Duration = Duration::from_millis(8);
/// The longest an injected crash point may take to be reached.
const INJECT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
enum Crash {
    /// SIGKILL this long after the writers start.
    Kill9 { after: Duration },
    /// `RIGWATCH_CRASH_AT=point:n`: the server aborts itself.
    Inject { point: &'static str, n: u32 },
}

impl std::fmt::Display for Crash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Crash::Kill9 { after } => write!(f, "kill -9 after {}ms", after.as_millis()),
            Crash::Inject { point, n } => write!(f, "RIGWATCH_CRASH_AT={point}:{n}"),
        }
    }
}

/// Every injection point, each at two different counts.
const INJECTED: &[(&str, u32)] = &[
    ("wal:after_append", 3),
    ("wal:after_append", 57),
    ("wal:after_sync", 2),
    ("wal:after_sync", 41),
    ("persist:after_files", 1),
    ("persist:after_files", 3),
    ("persist:after_catalog", 1),
    ("persist:after_catalog", 4),
    ("compact:after_file", 1),
    ("compact:after_file", 4),
    ("compact:after_catalog", 1),
    ("compact:after_catalog", 3),
];
const KILLS: usize = 10;

/// What is known about a row whose write was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Sent, no answer yet (or a non-204 answer): may or may not be stored.
    Sent,
    /// 204: must be stored exactly once.
    Acked,
    /// Not acknowledged, but seen after a restart: must stay.
    Seen,
    /// Not acknowledged and missing after a restart: must stay missing.
    Lost,
}

#[derive(Debug, Default)]
struct StateKey {
    /// Newest version that must be stored (acknowledged, or seen after a restart).
    floor: Option<u64>,
    /// Versions the stored row may hold: those sent since the last check, plus the one seen.
    allowed: BTreeSet<u64>,
}

/// What was sent and what was acknowledged.
#[derive(Debug, Default)]
struct Ledger {
    points: BTreeMap<u64, Fate>,
    faults: BTreeMap<u64, Fate>,
    states: BTreeMap<String, StateKey>,
    next_point: u64,
    next_fault: u64,
    next_version: u64,
    /// Writer failures other than "the server is gone".
    errors: Vec<String>,
}

/// The rows of one batch, to mark acknowledged on a 204.
#[derive(Debug, Default)]
struct Sent {
    points: Vec<u64>,
    faults: Vec<u64>,
    states: Vec<(String, u64)>,
}

fn point_row(seq: u64) -> (String, i64, f64) {
    let t = BASE + (seq % 3) as i64 * MINUTE + seq as i64 * 1000;
    (format!("GPU-{}", seq % 8), t, (seq % 1000) as f64 / 4.0)
}

fn fault_row(seq: u64) -> (String, i64, u64) {
    // Three consecutive rows share (series, time): only append-only keeps all three.
    let g = seq / 3;
    let t = BASE + (g % 3) as i64 * MINUTE + g as i64 * 1000;
    (format!("GPU-{}", g % 4), t, seq % 13)
}

fn state_key(writer: usize, k: u64) -> String {
    format!("R{writer}-{k}")
}

fn state_row(k: u64, version: u64) -> (i64, u64) {
    (BASE + k as i64 * 25 * SECOND, version * 7 + k)
}

impl Ledger {
    /// The next batch of `writer`, its rows recorded as sent.
    fn next_batch(&mut self, writer: usize, batch_no: u64) -> (String, Sent) {
        let mut lp = String::new();
        let mut sent = Sent::default();
        for _ in 0..POINTS_PER_BATCH {
            let seq = self.next_point;
            self.next_point += 1;
            let (gpu, t, u) = point_row(seq);
            lp += &format!("gpu,gpu_uuid={gpu} utilization={u:?},seq={seq}i {t}\n");
            self.points.insert(seq, Fate::Sent);
            sent.points.push(seq);
        }
        for _ in 0..FAULTS_PER_BATCH {
            let seq = self.next_fault;
            self.next_fault += 1;
            let (gpu, t, code) = fault_row(seq);
            lp += &format!("gpu_fault,gpu_uuid={gpu} code={code}i,seq={seq}i {t}\n");
            self.faults.insert(seq, Fate::Sent);
            sent.faults.push(seq);
        }
        for i in 0..STATES_PER_BATCH {
            let k = (batch_no * STATES_PER_BATCH + i) % STATE_KEYS;
            let rig = state_key(writer, k);
            let version = self.next_version;
            self.next_version += 1;
            let (t, chk) = state_row(k, version);
            lp += &format!("gpu_state,rig={rig} version={version}i,chk={chk}i {t}\n");
            self.states
                .entry(rig.clone())
                .or_default()
                .allowed
                .insert(version);
            sent.states.push((rig, version));
        }
        (lp, sent)
    }

    fn ack(&mut self, sent: &Sent) {
        for s in &sent.points {
            self.points.insert(*s, Fate::Acked);
        }
        for s in &sent.faults {
            self.faults.insert(*s, Fate::Acked);
        }
        for (rig, v) in &sent.states {
            let key = self.states.entry(rig.clone()).or_default();
            key.floor = Some(key.floor.map_or(*v, |f| f.max(*v)));
        }
    }
}

/// Writes batches until `stop`, the server goes away, or something unexpected happens.
async fn writer(http: Http, ledger: Arc<Mutex<Ledger>>, w: usize, stop: Arc<AtomicBool>) {
    let deadline = Instant::now() + INJECT_TIMEOUT + Duration::from_secs(10);
    let mut batch_no = 0;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let (lp, sent) = ledger.lock().unwrap().next_batch(w, batch_no);
        batch_no += 1;
        match http.write(&lp).await {
            Ok(StatusCode::NO_CONTENT) => ledger.lock().unwrap().ack(&sent),
            // Backpressure: refused before the WAL, nothing stored.
            Ok(StatusCode::SERVICE_UNAVAILABLE) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(status) => {
                ledger
                    .lock()
                    .unwrap()
                    .errors
                    .push(format!("writer {w}: unexpected {status} for batch:\n{lp}"));
                return;
            }
            // The server is gone (crashed or killed): this batch stays unacknowledged.
            Err(_) => return,
        }
        tokio::time::sleep(WRITE_PAUSE).await;
    }
}

fn int(row: &Value, col: &str) -> Option<i64> {
    row.get(col).and_then(Value::as_i64)
}

fn text<'a>(row: &'a Value, col: &str) -> &'a str {
    row.get(col).and_then(Value::as_str).unwrap_or("<missing>")
}

/// What a check found, for the failure message.
#[derive(Debug, Default)]
struct Check {
    problems: Vec<String>,
    rows: [usize; 3],
    seen_unacked: usize,
    lost_unacked: usize,
}

impl Check {
    fn problem(&mut self, p: String) {
        self.problems.push(p);
    }
}

/// Checks every table against the ledger and resolves unacknowledged rows.
async fn verify(server: &Server, ledger: &mut Ledger) -> Check {
    let mut check = Check::default();
    verify_points(server, ledger, &mut check).await;
    verify_faults(server, ledger, &mut check).await;
    verify_states(server, ledger, &mut check).await;
    check
}

/// Applies the rules of [`Fate`] to the rows stored per `seq`, for one table.
fn check_fates(
    table: &str,
    fates: &mut BTreeMap<u64, Fate>,
    stored: &BTreeMap<u64, usize>,
    check: &mut Check,
) {
    for (seq, n) in stored {
        if !fates.contains_key(seq) {
            check.problem(format!("{table}: seq={seq} stored {n}x but never written"));
        }
    }
    for (seq, fate) in fates.iter_mut() {
        let n = stored.get(seq).copied().unwrap_or(0);
        match (*fate, n) {
            (_, n) if n > 1 => check.problem(format!(
                "{table}: seq={seq} ({fate:?}) stored {n} times (duplicate)"
            )),
            (Fate::Acked | Fate::Seen, 0) => check.problem(format!(
                "{table}: seq={seq} missing although {}",
                if *fate == Fate::Acked {
                    "acknowledged (204)"
                } else {
                    "seen after an earlier restart"
                }
            )),
            (Fate::Lost, 1) => check.problem(format!(
                "{table}: seq={seq} reappeared after it was missing at an earlier restart"
            )),
            (Fate::Sent, 1) => {
                *fate = Fate::Seen;
                check.seen_unacked += 1;
            }
            (Fate::Sent, 0) => {
                *fate = Fate::Lost;
                check.lost_unacked += 1;
            }
            _ => {}
        }
    }
}

async fn verify_points(server: &Server, ledger: &mut Ledger, check: &mut Check) {
    let rows = server
        .rows("SELECT seq, utilization, gpu_uuid, CAST(time AS BIGINT) AS t FROM gpu")
        .await;
    check.rows[0] = rows.len();
    let mut stored: BTreeMap<u64, usize> = BTreeMap::new();
    for row in &rows {
        let Some(seq) = int(row, "seq") else {
            check.problem(format!("gpu: row without seq: {row}"));
            continue;
        };
        let seq = seq as u64;
        *stored.entry(seq).or_default() += 1;
        let (gpu, t, u) = point_row(seq);
        let got_u = row.get("utilization").and_then(Value::as_f64);
        if text(row, "gpu_uuid") != gpu || int(row, "t") != Some(t) || got_u != Some(u) {
            check.problem(format!(
                "gpu: seq={seq} stored as {row}, expected gpu_uuid={gpu} t={t} utilization={u}"
            ));
        }
    }
    let count = server.count("gpu").await;
    if count != rows.len() as u64 {
        check.problem(format!(
            "gpu: count(*) = {count} but SELECT returned {} rows",
            rows.len()
        ));
    }
    check_fates("gpu", &mut ledger.points, &stored, check);
}

async fn verify_faults(server: &Server, ledger: &mut Ledger, check: &mut Check) {
    let rows = server
        .rows("SELECT seq, code, gpu_uuid, CAST(time AS BIGINT) AS t FROM gpu_fault")
        .await;
    check.rows[1] = rows.len();
    let mut stored: BTreeMap<u64, usize> = BTreeMap::new();
    for row in &rows {
        let Some(seq) = int(row, "seq") else {
            check.problem(format!("gpu_fault: row without seq: {row}"));
            continue;
        };
        let seq = seq as u64;
        *stored.entry(seq).or_default() += 1;
        let (gpu, t, code) = fault_row(seq);
        if text(row, "gpu_uuid") != gpu
            || int(row, "t") != Some(t)
            || int(row, "code") != Some(code as i64)
        {
            check.problem(format!(
                "gpu_fault: seq={seq} stored as {row}, expected gpu_uuid={gpu} t={t} code={code}"
            ));
        }
    }
    let count = server.count("gpu_fault").await;
    if count != rows.len() as u64 {
        check.problem(format!(
            "gpu_fault: count(*) = {count} but SELECT returned {} rows",
            rows.len()
        ));
    }
    check_fates("gpu_fault", &mut ledger.faults, &stored, check);
}

async fn verify_states(server: &Server, ledger: &mut Ledger, check: &mut Check) {
    let rows = server
        .rows("SELECT rig, version, chk, CAST(time AS BIGINT) AS t FROM gpu_state")
        .await;
    check.rows[2] = rows.len();
    let mut stored: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for row in &rows {
        stored
            .entry(text(row, "rig").to_string())
            .or_default()
            .push(row);
    }
    for rig in stored.keys() {
        if !ledger.states.contains_key(rig) {
            check.problem(format!("gpu_state: rig={rig} stored but never written"));
        }
    }
    for (rig, key) in ledger.states.iter_mut() {
        let k: u64 = rig.rsplit('-').next().and_then(|k| k.parse().ok()).unwrap();
        let rows = stored.get(rig).map(Vec::as_slice).unwrap_or_default();
        match rows {
            [] => {
                if let Some(floor) = key.floor {
                    check.problem(format!(
                        "gpu_state: rig={rig} missing although version {floor} was acknowledged"
                    ));
                }
                // Unacknowledged versions sent so far are gone for good.
                key.allowed.clear();
            }
            [row] => {
                let version = int(row, "version").map(|v| v as u64);
                let (t, _) = state_row(k, 0);
                let Some(version) = version else {
                    check.problem(format!("gpu_state: rig={rig} row without version: {row}"));
                    continue;
                };
                let (_, chk) = state_row(k, version);
                if int(row, "t") != Some(t) || int(row, "chk") != Some(chk as i64) {
                    check.problem(format!(
                        "gpu_state: rig={rig} stored as {row}, expected t={t} chk={chk} \
                         (fields of different versions mixed?)"
                    ));
                }
                if key.floor.is_some_and(|f| version < f) {
                    check.problem(format!(
                        "gpu_state: rig={rig} holds version {version}, older than version {} \
                         which was acknowledged or seen (lost update)",
                        key.floor.unwrap()
                    ));
                } else if !key.allowed.contains(&version) {
                    check.problem(format!(
                        "gpu_state: rig={rig} holds version {version}, which was missing at an \
                         earlier restart or never written to this key"
                    ));
                } else {
                    key.floor = Some(version);
                    key.allowed = BTreeSet::from([version]);
                }
            }
            many => check.problem(format!(
                "gpu_state: rig={rig} stored {} times (upsert key duplicated): {many:?}",
                many.len()
            )),
        }
    }
}

fn schedule(rng: &mut Rng) -> Vec<Crash> {
    let mut crashes: Vec<Crash> = INJECTED
        .iter()
        .map(|&(point, n)| Crash::Inject { point, n })
        .collect();
    for _ in 0..KILLS {
        crashes.push(Crash::Kill9 {
            after: Duration::from_millis(rng.range(50, 2500)),
        });
    }
    // Fisher-Yates, so kills and injections interleave and data piles up across both.
    for i in (1..crashes.len()).rev() {
        let j = rng.range(0, i as u64 + 1) as usize;
        crashes.swap(i, j);
    }
    crashes
}

/// Counts lines of all server logs in `dir` (the `data.<n>.log` files) containing `needle`.
fn count_log_lines(dir: &Path, needle: &str) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains(needle))
                .count()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_every_crash_exactly_once() {
    let seed = seed(0x5EED_C0DE);
    let mut rng = Rng::new(seed);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let started = Instant::now();
    let ledger = Arc::new(Mutex::new(Ledger::default()));

    // Create the three tables with acknowledged rows, so every check has tables to query.
    let mut current = Server::start(&dir, ARGS, &[]).await;
    for w in 0..WRITERS {
        let (lp, sent) = ledger.lock().unwrap().next_batch(w, 0);
        current.write_ok(&lp).await;
        ledger.lock().unwrap().ack(&sent);
    }

    let crashes = schedule(&mut rng);
    let mut graceful = 0;
    for (i, crash) in crashes.iter().enumerate() {
        let label = format!(
            "crash #{} of {} ({crash}; seed {seed})",
            i + 1,
            crashes.len()
        );
        let mut server = match crash {
            // The checked server of the last round takes the writes and the kill.
            Crash::Kill9 { .. } => current,
            Crash::Inject { point, n } => {
                current.stop_gracefully().await;
                graceful += 1;
                let spec = format!("{point}:{n}");
                Server::start(&dir, ARGS, &[("RIGWATCH_CRASH_AT", spec.as_str())]).await
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| tokio::spawn(writer((*server).clone(), ledger.clone(), w, stop.clone())))
            .collect();
        let status = match crash {
            Crash::Kill9 { after } => {
                tokio::time::sleep(*after).await;
                if let Some(s) = server.try_exit() {
                    panic!(
                        "{label}: server died on its own with {}\n{}",
                        describe(s),
                        server.log_tail(40)
                    );
                }
                let s = server.kill9();
                assert_eq!(s.signal(), Some(9), "{label}: {}", describe(s));
                s
            }
            Crash::Inject { point, .. } => {
                let Some(s) = server.wait_exit(INJECT_TIMEOUT).await else {
                    stop.store(true, Ordering::Relaxed);
                    server.kill9();
                    panic!(
                        "{label}: crash point not reached within {INJECT_TIMEOUT:?}\n{}",
                        server.log_tail(40)
                    );
                };
                assert_eq!(
                    s.signal(),
                    Some(6),
                    "{label}: expected an abort at the injected point, got {}\n{}",
                    describe(s),
                    server.log_tail(40)
                );
                let log = server.log();
                assert!(
                    log.contains(&format!("RIGWATCH_CRASH_AT: aborting at {point}")),
                    "{label}: the server aborted, but not at {point}\n{}",
                    server.log_tail(40)
                );
                s
            }
        };
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            tokio::time::timeout(Duration::from_secs(90), w)
                .await
                .unwrap_or_else(|_| panic!("{label}: a writer did not stop"))
                .expect("writer task panicked");
        }
        let errors = std::mem::take(&mut ledger.lock().unwrap().errors);
        assert!(errors.is_empty(), "{label}: writers failed:\n{errors:#?}");

        let restarted = Server::start(&dir, ARGS, &[]).await;
        // The writers are done; check without holding the lock across awaits.
        let mut taken = std::mem::take(&mut *ledger.lock().unwrap());
        let check = verify(&restarted, &mut taken).await;
        *ledger.lock().unwrap() = taken;
        let restart_log = restarted.log();
        assert!(
            !restart_log.contains("panicked"),
            "{label}: the restarted server panicked\n{}",
            restarted.log_tail(60)
        );
        if !check.problems.is_empty() {
            let shown: Vec<&String> = check.problems.iter().take(40).collect();
            panic!(
                "{label}: {} problem(s) after restart (crashed server exited with {}):\n{}\n\n\
                 crashed server {}\n\nrestarted server {}",
                check.problems.len(),
                describe(status),
                shown
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
                server.log_tail(30),
                restarted.log_tail(30),
            );
        }
        // A crash between writing data files and committing the catalog leaves files the
        // catalog does not know; seeing them removed shows the crash hit mid-persist/compaction.
        if let Crash::Inject {
            point: point @ ("persist:after_files" | "compact:after_file" | "compact:after_catalog"),
            ..
        } = crash
        {
            assert!(
                restart_log.contains("removing orphaned data file"),
                "{label}: a crash at {point} should leave orphaned data files for the restart \
                 to remove\n{}",
                restarted.log_tail(40)
            );
        }
        eprintln!(
            "{label}: exit {}, rows gpu/gpu_fault/gpu_state = {:?}, unacknowledged seen/lost = \
             {}/{}, {:.1}s",
            describe(status),
            check.rows,
            check.seen_unacked,
            check.lost_unacked,
            started.elapsed().as_secs_f64()
        );
        current = restarted;
    }

    // SIGTERM after all that: exits cleanly, and the data is still all there.
    current.stop_gracefully().await;
    let last = Server::start(&dir, ARGS, &[]).await;
    let mut l = std::mem::take(&mut *ledger.lock().unwrap());
    let check = verify(&last, &mut l).await;
    assert!(
        check.problems.is_empty(),
        "after the final graceful restart: {:#?}",
        &check.problems[..check.problems.len().min(40)]
    );
    let acked = l.points.values().filter(|f| **f == Fate::Acked).count();
    assert!(
        acked > 1000,
        "only {acked} gpu rows acknowledged: load too light"
    );
    let persists = count_log_lines(tmp.path(), "persisted buffer");
    let compactions = count_log_lines(tmp.path(), "compacted partitions");
    assert!(
        persists > 0 && compactions > 0,
        "the crashes never met a persist ({persists}) or a compaction ({compactions})"
    );
    eprintln!(
        "{} crashes ({} kill -9, {} injected), {graceful} graceful restarts, {acked} gpu rows \
         acknowledged, {persists} persists, {compactions} compactions, {:.1}s",
        crashes.len(),
        KILLS,
        INJECTED.len(),
        started.elapsed().as_secs_f64()
    );
}

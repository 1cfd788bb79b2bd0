//! The headline crash-safety test: writers keep the real server busy while it is killed with
//! SIGKILL at seeded random moments and aborted at every `RIGWATCH_CRASH_AT` point (mid-write,
//! mid-persist, mid-compaction); after each crash a clean restart must show every acknowledged
//! row exactly once. What is written and how it is checked lives in [`super::ledger`].
//!
//! Replay a failing schedule with `RIGWATCH_E2E_SEED=<seed from the message>`.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use super::harness::{Http, Rng, Server, describe, seed, temp_dir};
use super::ledger::{Fate, Ledger, verify};

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
    // Storage tests use their own tables (`rig`, `rig_event`) so the domain tasks that react
    // to `gpu` and `gpu_fault` rows (health, allocator) add no rows of their own.
    "--append-only-tables",
    "rig_event",
];

/// Concurrent writers (each owns its `gpu_state` keys, so versions per key stay ordered).
const WRITERS: usize = 2;
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
const KILLS: usize = 16;

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
    let tmp = temp_dir();
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
    // Unacknowledged rows found (or not) after the kill -9 restarts: writes were in flight.
    let mut killed_in_flight = 0;
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
            panic!(
                "{label}: {} problem(s) after restart (crashed server exited with {}):\n{}\n\n\
                 crashed server {}\n\nrestarted server {}",
                check.problems.len(),
                describe(status),
                check.problems[..check.problems.len().min(40)].join("\n"),
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
            "{label}: exit {}, rows rig/rig_event/gpu_state = {:?}, unacknowledged seen/lost = \
             {}/{}, {:.1}s",
            describe(status),
            check.rows,
            check.seen_unacked,
            check.lost_unacked,
            started.elapsed().as_secs_f64()
        );
        if let Crash::Kill9 { .. } = crash {
            killed_in_flight += check.seen_unacked + check.lost_unacked;
        }
        current = restarted;
    }
    assert!(
        killed_in_flight > 0,
        "no kill -9 landed while a write was in flight"
    );

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

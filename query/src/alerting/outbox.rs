//! What alerting keeps on disk so that a restart (or `kill -9`) loses no notification:
//!
//! - one outbox per webhook, `<data-dir>/alerts/outbox/<sha256(url)[..16]>/`: every message
//!   is a file `<seq>.json` written and fsynced before the message counts as queued, and
//!   deleted once the receiver has answered 2xx (or rejected it for good). A restart resends
//!   what was pending, oldest first; the file `url` names the webhook for a person looking.
//! - the alert state, `<data-dir>/alerts/state.json`: [`rules::AlertSnapshot`] rewritten
//!   (temporary file, fsync, rename) after an evaluation that changed it. The outbox is
//!   written first, so a crash between the two can repeat a notification but never lose one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::rules;
use parking_lot::Mutex;
use rigwatch_ingest::agent::spool::Spool;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tracing::{info, warn};

use super::Metrics;

/// A restored alert state older than this is ignored (Prometheus' default outage tolerance).
pub const STATE_TOLERANCE: Duration = Duration::from_secs(3_600);

/// Largest total size of one webhook's outbox.
const OUTBOX_BYTES: u64 = 256 << 20;

/// A webhook's pending messages (JSON bodies), oldest first, on disk.
pub struct Queue {
    spool: Mutex<Spool>,
    pub(super) wake: Notify,
}

impl Queue {
    /// Opens the outbox in `dir`, keeping at most `capacity` messages (oldest dropped and
    /// counted beyond it).
    pub fn open(dir: &Path, capacity: usize) -> anyhow::Result<Self> {
        let spool = Spool::open_with(dir, ".json", OUTBOX_BYTES, capacity, Arc::default())
            .map_err(|e| anyhow::anyhow!("alert outbox: {e}"))?;
        Ok(Self {
            spool: Mutex::new(spool),
            wake: Notify::new(),
        })
    }

    /// The outbox directory of webhook `url` under `data_dir`.
    pub fn dir_for(data_dir: &Path, url: &str) -> PathBuf {
        let digest = Sha256::digest(url.as_bytes());
        let name: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        data_dir.join("alerts").join("outbox").join(name)
    }

    /// Opens webhook `url`'s outbox under `data_dir` and notes the URL beside it.
    pub fn open_for(data_dir: &Path, url: &str, capacity: usize) -> anyhow::Result<Self> {
        let dir = Self::dir_for(data_dir, url);
        let q = Self::open(&dir, capacity)?;
        // Best effort: only for a person reading the directory.
        let _ = std::fs::write(dir.join("url"), format!("{url}\n"));
        let pending = q.len();
        if pending > 0 {
            info!(%url, pending, "undelivered alert notifications from before the restart will be sent");
        }
        Ok(q)
    }

    pub fn len(&self) -> usize {
        self.spool.lock().len()
    }

    /// Queues `body` durably (blocking I/O: call from a blocking thread); the number of old
    /// messages dropped to make room.
    pub fn push(&self, body: &[u8]) -> anyhow::Result<u64> {
        let dropped = self
            .spool
            .lock()
            .push(body)
            .map_err(|e| anyhow::anyhow!("alert outbox: {e}"))?;
        self.wake.notify_one();
        Ok(dropped)
    }

    fn peek(&self) -> anyhow::Result<Option<(u64, Vec<u8>)>> {
        self.spool
            .lock()
            .peek()
            .map_err(|e| anyhow::anyhow!("alert outbox: {e}"))
    }

    fn pop(&self, seq: u64) -> anyhow::Result<()> {
        self.spool
            .lock()
            .pop(seq)
            .map_err(|e| anyhow::anyhow!("alert outbox: {e}"))
    }
}

/// Queues every body on every queue, durably, off the async threads; drops are counted.
pub async fn push_all(queues: &[Arc<Queue>], bodies: Vec<Vec<u8>>, metrics: &Metrics) {
    let queues = queues.to_vec();
    let res = tokio::task::spawn_blocking(move || {
        let mut dropped = 0;
        for q in &queues {
            for body in &bodies {
                match q.push(body) {
                    Ok(n) => dropped += n,
                    Err(error) => {
                        warn!(%error, "cannot queue an alert notification; it is lost");
                        dropped += 1;
                    }
                }
            }
        }
        dropped
    })
    .await;
    match res {
        Ok(0) => {}
        Ok(n) => {
            metrics.dropped.inc_by(n);
            warn!(
                dropped = n,
                "alert outbox full: oldest notifications dropped"
            );
        }
        Err(error) => warn!(%error, "alert outbox task failed"),
    }
}

/// Sends `queue`'s messages to `url` in order, forever: retries with exponential backoff
/// (0.5 s doubling to 60 s) until a 2xx; a 4xx other than 408/429 drops the message.
pub async fn deliver(url: String, queue: Arc<Queue>, metrics: Metrics) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(error) => {
            warn!(%error, %url, "cannot build the webhook client; notifications are not sent");
            return;
        }
    };
    let mut backoff = Duration::from_millis(500);
    let mut failing_since: Option<Instant> = None;
    loop {
        let q = queue.clone();
        let next = match tokio::task::spawn_blocking(move || q.peek()).await {
            Ok(Ok(next)) => next,
            Ok(Err(error)) => {
                warn!(%error, %url, "cannot read the alert outbox; retrying");
                tokio::time::sleep(backoff).await;
                continue;
            }
            Err(_) => return,
        };
        let Some((seq, body)) = next else {
            queue.wake.notified().await;
            continue;
        };
        let res = client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let done = match res {
            Ok(r) if r.status().is_success() => {
                metrics.sent.inc();
                if let Some(since) = failing_since.take() {
                    info!(%url, down_for = ?since.elapsed(), "webhook receiver is back");
                }
                backoff = Duration::from_millis(500);
                true
            }
            Ok(r) if r.status().is_client_error() && !matches!(r.status().as_u16(), 408 | 429) => {
                // The receiver rejects this message and always will: retrying would stall
                // every message behind it (Alertmanager does not retry 4xx either).
                metrics.send_failures.inc();
                metrics.dropped.inc();
                warn!(%url, status = %r.status(), "webhook rejected a notification; dropped");
                true
            }
            other => {
                metrics.send_failures.inc();
                let why = match other {
                    Ok(r) => format!("HTTP {}", r.status()),
                    Err(e) => e.to_string(),
                };
                if failing_since.is_none() {
                    failing_since = Some(Instant::now());
                    warn!(%url, error = %why, pending = queue.len(), "webhook delivery failed; retrying with backoff");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
                false
            }
        };
        if done {
            let q = queue.clone();
            match tokio::task::spawn_blocking(move || q.pop(seq)).await {
                Ok(Ok(())) => {}
                // Sent but still on disk: it may be sent again after a restart.
                Ok(Err(error)) => warn!(%error, %url, "cannot remove a delivered notification"),
                Err(_) => return,
            }
        }
    }
}

/// Where the alert state is kept.
pub fn state_path(data_dir: &Path) -> PathBuf {
    data_dir.join("alerts").join("state.json")
}

/// Reads the saved alert state, if any; a missing file is `None`, an unreadable one is
/// logged and ignored (the rules then start afresh, as they would have without it).
pub fn load_state(path: &Path) -> Option<rules::AlertSnapshot> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            warn!(%error, path = %path.display(), "cannot read the saved alert state; alerts start afresh");
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(s) => Some(s),
        Err(error) => {
            warn!(%error, path = %path.display(), "saved alert state is not readable; alerts start afresh");
            None
        }
    }
}

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync of the directory.
pub fn save_state(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

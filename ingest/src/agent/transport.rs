//! The agent's HTTP side: registration and gzip-compressed line-protocol writes to
//! `/api/v1/agent/*`, with each failure classified by whether a retry can help.

use std::io::Write;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use rand::Rng;
use reqwest::StatusCode;
use serde::Serialize;

use super::dedup::{BATCH_HEADER, BatchId};
use super::fields::GpuInfo;

/// What the agent sends to `POST /api/v1/agent/register`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Registration {
    pub worker: String,
    #[serde(default)]
    pub agent_version: String,
    pub gpus: Vec<GpuInfo>,
}

/// Why a request to the server did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The server is unreachable or failed: keep the batch and retry later.
    #[error("server unavailable: {0}")]
    Retryable(String),
    /// The server is at capacity (503 or 429) and said when to come back (`Retry-After`):
    /// keep the batch and wait at least that long, plus jitter.
    #[error("server busy (retry after {}s): {message}", retry_after.as_secs())]
    Busy {
        message: String,
        retry_after: Duration,
    },
    /// The server does not know this worker (e.g. its registry was reset): register again.
    #[error("worker is not registered: {0}")]
    Unregistered(String),
    /// The token is missing, invalid, revoked or of the wrong role: retrying cannot help.
    #[error("the server refused the agent's token: {0}")]
    Unauthorized(String),
    /// The server rejected this batch's content for good (bad lines, too large).
    #[error("the server rejected the batch: {0}")]
    Rejected(String),
}

impl SendError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, SendError::Retryable(_) | SendError::Busy { .. })
    }

    /// How long the server asked to be left alone, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SendError::Busy { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// Gzip-compresses a body (fast level: agent CPU matters more than a few bytes).
pub fn gzip(body: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::with_capacity(body.len() / 6 + 64), Compression::fast());
    enc.write_all(body).expect("writing to a Vec cannot fail");
    enc.finish().expect("writing to a Vec cannot fail")
}

/// An HTTP client for one server and token.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    auth: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(server: &str, token: &str, timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()?;
        Ok(Client {
            base: server.trim_end_matches('/').to_string(),
            auth: format!("Bearer {token}"),
            http,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Registers the worker and its GPUs.
    pub async fn register(&self, reg: &Registration) -> Result<(), SendError> {
        let resp = self
            .http
            .post(format!("{}/api/v1/agent/register", self.base))
            .header("authorization", &self.auth)
            .json(reg)
            .send()
            .await
            .map_err(|e| SendError::Retryable(describe(&e)))?;
        classify(resp).await
    }

    /// Sends one gzip-compressed line-protocol batch for `worker`, under `id` (header
    /// `x-rigwatch-batch`) when it has one: a retry must carry the same id, so the server
    /// stores the batch once.
    pub async fn write(
        &self,
        worker: &str,
        id: Option<BatchId>,
        gz_body: bytes::Bytes,
    ) -> Result<(), SendError> {
        let mut req = self
            .http
            .post(format!("{}/api/v1/agent/write", self.base))
            .query(&[("worker", worker)])
            .header("authorization", &self.auth)
            .header("content-encoding", "gzip")
            .header("content-type", "text/plain; charset=utf-8");
        if let Some(id) = id {
            req = req.header(BATCH_HEADER, id.to_string());
        }
        let resp = req
            .body(gz_body)
            .send()
            .await
            .map_err(|e| SendError::Retryable(describe(&e)))?;
        classify(resp).await
    }
}

/// The error chain of a transport error (reqwest's top level says little).
fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        // Some errors repeat their source in their own message: say each thing once.
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        src = inner.source();
    }
    s
}

async fn classify(resp: reqwest::Response) -> Result<(), SendError> {
    let status = resp.status();
    if status.is_success() {
        // Drain the body so the connection is reused.
        let _ = resp.bytes().await;
        return Ok(());
    }
    // Seconds only (the HTTP-date form is not sent by rigwatch); capped so a hostile or
    // broken server cannot park an agent for long.
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(MAX_RETRY_AFTER_SECS)));
    let body = resp.text().await.unwrap_or_default();
    let msg = format!("{status}: {}", body.trim());
    if let Some(retry_after) = retry_after
        && (status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS)
    {
        return Err(SendError::Busy {
            message: msg,
            retry_after,
        });
    }
    Err(match status {
        StatusCode::UNAUTHORIZED => SendError::Unauthorized(msg),
        StatusCode::FORBIDDEN if body.contains("\"unregistered\"") => SendError::Unregistered(msg),
        StatusCode::FORBIDDEN => SendError::Unauthorized(msg),
        StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => SendError::Retryable(msg),
        s if s.is_server_error() => SendError::Retryable(msg),
        _ => SendError::Rejected(msg),
    })
}

/// The longest `Retry-After` an agent honours.
const MAX_RETRY_AFTER_SECS: u64 = 60;

/// Exponential backoff with full jitter: the n-th wait is uniform in
/// `[base·2^n / 2, base·2^n]`, capped at `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// The next wait.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let lo = exp.as_secs_f64() / 2.0;
        Duration::from_secs_f64(rand::rng().random_range(lo..=exp.as_secs_f64()))
    }

    /// The next wait when the server asked for `retry_after` (if it did): at least that,
    /// spread by up to half again at random so a fleet refused together does not come back
    /// together; and never less than the backoff's own next wait.
    pub fn next_delay_after(&mut self, retry_after: Option<Duration>) -> Duration {
        let own = self.next_delay();
        match retry_after {
            Some(ra) if ra > Duration::ZERO => {
                let spread = ra.as_secs_f64() * rand::rng().random_range(1.0..=1.5);
                own.max(Duration::from_secs_f64(spread))
            }
            _ => own,
        }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let d: Vec<_> = (0..8).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(50) && d[0] <= Duration::from_millis(100));
        assert!(d[3] >= Duration::from_millis(400) && d[3] <= Duration::from_millis(800));
        assert!(d.iter().all(|x| *x <= Duration::from_secs(2)));
        assert!(d[7] >= Duration::from_secs(1));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn a_retry_after_is_honoured_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let waits: Vec<_> = (0..50)
            .map(|_| {
                b.reset();
                b.next_delay_after(Some(Duration::from_secs(2)))
            })
            .collect();
        assert!(waits.iter().all(|w| *w >= Duration::from_secs(2)));
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(3)));
        // Spread, not all the same.
        assert!(waits.iter().any(|w| *w != waits[0]));
        b.reset();
        assert!(b.next_delay_after(None) <= Duration::from_millis(100));
    }

    #[test]
    fn gzip_round_trips_through_the_server_inflater() {
        let body = "gpu,gpu_uuid=G utilization=1 1\n".repeat(100);
        let gz = gzip(body.as_bytes());
        assert!(gz.len() < body.len() / 5);
        assert_eq!(
            crate::gzip::decompress(&gz, 1 << 20).unwrap(),
            body.as_bytes()
        );
    }
}

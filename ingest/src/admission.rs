//! Admission control in front of the write path: a server past its capacity keeps storing at
//! its capacity and says "later" to the rest, instead of taking everything in and falling
//! over.
//!
//! ```text
//!  request ─► authorize ─► admit ──► [ in flight: ≤ max_in_flight ] ─► read body, parse, WAL
//!                            │  ▲
//!                            │  └── queue (FIFO): ≤ max_queued waiting, each ≤ max_wait
//!                            └──► 503 + Retry-After: queue full, waited too long, or this
//!                                 principal already holds its share
//! ```
//!
//! Why a bounded queue and not an unbounded one: past capacity, every request that waits
//! makes every later one wait longer, until clients time out and retry work the server has
//! already done (each retry costs a parse and a WAL record again). Then nothing is
//! acknowledged at all. With the queue bounded in length and in time, a request is either
//! served within `max_wait` plus its own service time or refused at once, cheaply, before its
//! body is read; clients (agents) back off with jitter and try again. Throughput stays at
//! capacity and latency stays bounded.
//!
//! A slot is taken before the body is read, so memory held by bodies in flight is bounded by
//! `max_in_flight` × the body limit. One principal (a supplier's agents together, or one
//! operator token) holds at most `max_per_principal` slots, in flight and queued together, so
//! a flood from one cannot shut out the others.
//!
//! A refused request's body is read and dropped (at most 8 MiB, for at most 2 s), never
//! kept: the client then gets the 503 instead of a connection reset in the middle of its
//! upload, and its connection stays usable.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rigwatch_storage::auth::Principal;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bounds of the write queue (flags `--max-concurrent-writes`, `--max-queued-writes`,
/// `--write-queue-timeout`, `--max-queued-writes-per-principal`).
#[derive(Debug, Clone, Copy)]
pub struct AdmissionLimits {
    /// Write requests read, parsed and stored at once.
    pub max_in_flight: usize,
    /// Write requests waiting for a slot; one more is refused at once.
    pub max_queued: usize,
    /// Longest a request waits for a slot before it is refused.
    pub max_wait: Duration,
    /// Slots (in flight and queued together) one principal may hold.
    pub max_per_principal: usize,
}

impl AdmissionLimits {
    /// Enough in flight to keep both the parsers and the WAL's group commit busy on a small
    /// machine; a queue that absorbs a fleet's ticks arriving together; a wait well inside an
    /// agent's request timeout (10 s).
    pub const DEFAULT: AdmissionLimits = AdmissionLimits {
        max_in_flight: 32,
        max_queued: 1_024,
        max_wait: Duration::from_secs(2),
        max_per_principal: 512,
    };
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// How long a client has to send a write body once its request is admitted; a slower one
/// is answered 408 and gives its slot back (a slow sender must not hold a slot for ever).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a write was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_queued` requests are already waiting.
    QueueFull,
    /// The request waited `max_wait` without getting a slot.
    Timeout,
    /// This principal already holds `max_per_principal` slots.
    PrincipalShare,
}

/// Counters exported under `rigwatch_write_admission_`.
#[derive(Debug, Clone, Default)]
pub struct AdmissionMetrics {
    pub admitted: Counter,
    pub refused_queue_full: Counter,
    pub refused_timeout: Counter,
    pub refused_principal: Counter,
    pub in_flight: Gauge,
    pub queued: Gauge,
}

/// The write path's admission control; share one per server as `Arc`.
#[derive(Debug)]
pub struct Admission {
    limits: AdmissionLimits,
    permits: Arc<Semaphore>,
    /// Slots held (queued or in flight) per principal, and the number queued in all.
    held: Mutex<(HashMap<String, usize>, usize)>,
    metrics: AdmissionMetrics,
}

/// A held slot: released (and the principal's share given back) on drop.
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
    key: String,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission.release(&self.key);
        self.admission.metrics.in_flight.dec();
    }
}

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Arc<Self> {
        let limits = AdmissionLimits {
            max_in_flight: limits.max_in_flight.max(1),
            max_per_principal: limits.max_per_principal.max(1),
            ..limits
        };
        Arc::new(Admission {
            permits: Arc::new(Semaphore::new(limits.max_in_flight)),
            held: Mutex::new((HashMap::new(), 0)),
            metrics: AdmissionMetrics::default(),
            limits,
        })
    }

    pub fn limits(&self) -> AdmissionLimits {
        self.limits
    }

    pub fn metrics(&self) -> &AdmissionMetrics {
        &self.metrics
    }

    /// Registers the counters under `rigwatch_write_admission_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("rigwatch_write_admission");
        let m = &self.metrics;
        r.register(
            "admitted",
            "Write requests given a slot",
            m.admitted.clone(),
        );
        r.register(
            "refused_queue_full",
            "Write requests refused because the queue was full (--max-queued-writes)",
            m.refused_queue_full.clone(),
        );
        r.register(
            "refused_timeout",
            "Write requests refused after waiting --write-queue-timeout",
            m.refused_timeout.clone(),
        );
        r.register(
            "refused_principal",
            "Write requests refused because their principal held its share (--max-queued-writes-per-principal)",
            m.refused_principal.clone(),
        );
        r.register(
            "in_flight",
            "Write requests being read, parsed or stored",
            m.in_flight.clone(),
        );
        r.register(
            "queued",
            "Write requests waiting for a slot",
            m.queued.clone(),
        );
    }

    /// Waits for a slot for `principal` (a key: its supplier, or its token id), or says why
    /// not. Never waits longer than `max_wait`.
    pub async fn admit(self: &Arc<Self>, principal: &str) -> Result<Slot, Refusal> {
        // Fast path: a free slot and room in this principal's share.
        {
            let mut held = self.held.lock();
            let mine = held.0.get(principal).copied().unwrap_or(0);
            if mine >= self.limits.max_per_principal {
                self.metrics.refused_principal.inc();
                return Err(Refusal::PrincipalShare);
            }
            if let Ok(permit) = self.permits.clone().try_acquire_owned() {
                *held.0.entry(principal.to_string()).or_default() += 1;
                return Ok(self.slot(principal, permit));
            }
            if held.1 >= self.limits.max_queued {
                self.metrics.refused_queue_full.inc();
                return Err(Refusal::QueueFull);
            }
            *held.0.entry(principal.to_string()).or_default() += 1;
            held.1 += 1;
            self.metrics.queued.inc();
        }
        // Queued: the semaphore is fair (first come, first served).
        let waited =
            tokio::time::timeout(self.limits.max_wait, self.permits.clone().acquire_owned()).await;
        {
            let mut held = self.held.lock();
            held.1 = held.1.saturating_sub(1);
        }
        self.metrics.queued.dec();
        match waited {
            Ok(Ok(permit)) => Ok(self.slot(principal, permit)),
            // Timed out (or the semaphore closed, which this type never does).
            _ => {
                self.release(principal);
                self.metrics.refused_timeout.inc();
                Err(Refusal::Timeout)
            }
        }
    }

    fn slot(self: &Arc<Self>, principal: &str, permit: OwnedSemaphorePermit) -> Slot {
        self.metrics.admitted.inc();
        self.metrics.in_flight.inc();
        Slot {
            admission: self.clone(),
            key: principal.to_string(),
            _permit: permit,
        }
    }

    fn release(&self, principal: &str) {
        let mut held = self.held.lock();
        if let Some(n) = held.0.get_mut(principal) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.0.remove(principal);
            }
        }
    }

    /// Slots (in flight and queued) held by `principal` now.
    pub fn held_by(&self, principal: &str) -> usize {
        self.held.lock().0.get(principal).copied().unwrap_or(0)
    }

    /// The refusal as a response: 503 with Retry-After and a body naming the limit's flag.
    pub fn refusal(&self, why: Refusal) -> Response {
        let l = &self.limits;
        let (retry, message) = match why {
            Refusal::QueueFull => (
                "2",
                format!(
                    "the server is at its write capacity: {} write(s) in progress and {} waiting \
                     (--max-concurrent-writes, --max-queued-writes); nothing of this request was \
                     stored; retry after the Retry-After delay, with jitter",
                    l.max_in_flight, l.max_queued
                ),
            ),
            Refusal::Timeout => (
                "1",
                format!(
                    "the server is at its write capacity: this request waited {} for one of {} \
                     write slots (--write-queue-timeout, --max-concurrent-writes); nothing of it \
                     was stored; retry after the Retry-After delay, with jitter",
                    humantime::format_duration(l.max_wait),
                    l.max_in_flight
                ),
            ),
            Refusal::PrincipalShare => (
                "1",
                format!(
                    "this principal already has {} write requests in progress or waiting \
                     (--max-queued-writes-per-principal); nothing of this request was \
                     stored; retry after the Retry-After delay",
                    l.max_per_principal
                ),
            ),
        };
        let mut resp = (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "code": "overloaded", "message": message })),
        )
            .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static(retry));
        resp
    }
}

/// The key a principal's slots are counted under: its supplier for scoped principals (all of
/// a supplier's agents share one share), else its token.
pub fn principal_key(p: &Principal) -> String {
    match p.scope() {
        Some(s) => format!("supplier:{s}"),
        None => format!("token:{}", p.token_id),
    }
}

/// Middleware for write routes: admits the request (after authorization put its
/// [`Principal`] into the extensions) or answers 503. The slot is held until the handler's
/// response is ready.
pub async fn admit(State(admission): State<Arc<Admission>>, req: Request, next: Next) -> Response {
    let key = req
        .extensions()
        .get::<Principal>()
        .map_or_else(|| "anonymous".to_string(), principal_key);
    match admission.admit(&key).await {
        Ok(slot) => {
            let resp = next.run(req).await;
            drop(slot);
            resp
        }
        Err(why) => {
            tracing::debug!(principal = %key, ?why, "write refused by admission control");
            let resp = admission.refusal(why);
            // Read (and drop) what the client is still sending, so that it gets the answer
            // instead of a connection reset halfway through its upload; bounded in bytes and
            // time, and never kept.
            drain(req.into_body()).await;
            resp
        }
    }
}

/// Most bytes of a refused request's body read and dropped before answering.
const DRAIN_BYTES: usize = 8 << 20;
/// Longest a refused request's body is read for.
const DRAIN_TIME: Duration = Duration::from_secs(2);

async fn drain(body: axum::body::Body) {
    use futures::StreamExt as _;
    let mut stream = body.into_data_stream();
    let deadline = tokio::time::Instant::now() + DRAIN_TIME;
    let mut seen = 0usize;
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, stream.next()).await {
        seen += chunk.len();
        if seen > DRAIN_BYTES {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(in_flight: usize, queued: usize, wait_ms: u64, per: usize) -> AdmissionLimits {
        AdmissionLimits {
            max_in_flight: in_flight,
            max_queued: queued,
            max_wait: Duration::from_millis(wait_ms),
            max_per_principal: per,
        }
    }

    #[tokio::test]
    async fn slots_queue_and_refuse_when_full() {
        let a = Admission::new(limits(2, 1, 5_000, 100));
        let s1 = a.admit("a").await.unwrap();
        let _s2 = a.admit("b").await.unwrap();
        // The third waits in the queue; the fourth finds the queue full.
        let waiter = {
            let a = a.clone();
            tokio::spawn(async move { a.admit("c").await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(a.admit("d").await.unwrap_err(), Refusal::QueueFull);
        // Releasing a slot lets the queued one in.
        drop(s1);
        waiter.await.unwrap().unwrap();
        assert_eq!(a.metrics().refused_queue_full.get(), 1);
        assert_eq!(a.held_by("a"), 0);
    }

    #[tokio::test]
    async fn a_queued_request_waits_at_most_max_wait() {
        let a = Admission::new(limits(1, 10, 50, 100));
        let _s = a.admit("a").await.unwrap();
        let t = std::time::Instant::now();
        assert_eq!(a.admit("b").await.unwrap_err(), Refusal::Timeout);
        assert!(t.elapsed() >= Duration::from_millis(50));
        assert!(t.elapsed() < Duration::from_secs(2));
        // Its share is given back.
        assert_eq!(a.held_by("b"), 0);
        assert_eq!(a.metrics().queued.get(), 0);
    }

    #[tokio::test]
    async fn one_principal_cannot_take_every_slot() {
        let a = Admission::new(limits(4, 100, 5_000, 2));
        let _x = a.admit("flood").await.unwrap();
        let _y = a.admit("flood").await.unwrap();
        assert_eq!(a.admit("flood").await.unwrap_err(), Refusal::PrincipalShare);
        // Another principal still gets in at once.
        let _z = a.admit("quiet").await.unwrap();
        assert_eq!(a.held_by("flood"), 2);
    }

    #[tokio::test]
    async fn the_refusal_names_its_flag_and_says_when_to_retry() {
        let a = Admission::new(AdmissionLimits::DEFAULT);
        for (why, flag) in [
            (Refusal::QueueFull, "--max-queued-writes"),
            (Refusal::Timeout, "--write-queue-timeout"),
            (Refusal::PrincipalShare, "--max-queued-writes-per-principal"),
        ] {
            let r = a.refusal(why);
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert!(r.headers().get(header::RETRY_AFTER).is_some());
            let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
            let text = String::from_utf8_lossy(&body);
            assert!(text.contains(flag), "{text}");
        }
    }
}

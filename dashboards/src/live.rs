//! Latest values per GPU, through the scoped SQL path, and the `/portal/events` streams.
//!
//! ```text
//!  Db::subscribe ─▶ producer of scope S ──watch──▶ stream ─▶ browser
//!  (each write)      (one per scope with a        ├▶ stream ─▶ browser
//!  and every TICK     stream open: one query      └▶ stream ─▶ script
//!                     per tick, shared)
//! ```
//!
//! A producer exists while at least one stream of its scope (a supplier, or the operators'
//! unscoped view) is open. It wakes on every write the store accepts
//! ([`rigwatch_storage::Db::subscribe`]) and at least every [`TICK`], asks for the rows newer
//! than what it last read (with an overlap for late rows), and publishes a [`Snapshot`]: every
//! GPU's latest values and the rows that changed. A stream sends the whole state first (or
//! after it missed a snapshot), then only the changes. The query runs with the scope's
//! supplier, so a supplier's stream never carries another supplier's GPU.
//!
//! Streams are capped per principal ([`MAX_STREAMS_PER_PRINCIPAL`]) and in all
//! ([`MAX_STREAMS`]), and each ends within [`CHECK_EVERY`] once its session is signed out
//! or expires, or its token is revoked.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use parking_lot::Mutex;
use rigwatch_query::QueryService;
use rigwatch_query::format::{Format, encode};
use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

use crate::error::{Error, Result};

/// Longest wait between two snapshots when nothing is written.
pub const TICK: Duration = Duration::from_secs(5);
/// Shortest gap between two queries of one stream (writes arrive in bursts).
pub const MIN_GAP: Duration = Duration::from_millis(150);
/// How far back the first snapshot looks for a GPU's latest row.
pub const FIRST_WINDOW_NS: i64 = 24 * 3600 * 1_000_000_000;
/// Rows up to this much older than the newest row sent are read again (late writers).
pub const OVERLAP_NS: i64 = 60 * 1_000_000_000;

/// Metric fields sent for each GPU when the `gpu` table has them.
pub const LIVE_FIELDS: &[&str] = &[
    "utilization",
    "temperature",
    "power_watts",
    "memory_used_mib",
    "memory_total_mib",
    "sm_clock_mhz",
    "memory_clock_mhz",
];
/// Tags sent for each GPU when present.
pub const LIVE_TAGS: &[&str] = &["supplier", "worker", "model", "region", "gpu_index"];

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// The SQL for each GPU's latest row since `since_ns`, over the columns `gpu` really has.
pub fn latest_sql(columns: &[String], since_ns: i64) -> Option<String> {
    if !columns.iter().any(|c| c == "gpu_uuid") {
        return None;
    }
    let has = |c: &str| columns.iter().any(|x| x == c);
    let mut select = vec!["gpu_uuid".to_string()];
    let mut group = vec!["gpu_uuid".to_string()];
    for t in LIVE_TAGS.iter().filter(|t| has(t)) {
        select.push(format!("\"{t}\""));
        group.push(format!("\"{t}\""));
    }
    for f in LIVE_FIELDS.iter().filter(|f| has(f)) {
        // A row may carry only some fields: each field's latest non-null value.
        select.push(format!(
            "last_value(\"{f}\" ORDER BY time) FILTER (WHERE \"{f}\" IS NOT NULL) AS \"{f}\""
        ));
    }
    select.push("CAST(max(time) AS BIGINT) AS time_ns".into());
    Some(format!(
        "SELECT {} FROM gpu WHERE time > to_timestamp_nanos({since_ns}) GROUP BY {} ORDER BY gpu_uuid",
        select.join(", "),
        group.join(", ")
    ))
}

/// Each GPU's latest values since `since_ns` as JSON objects, seen with `scope`.
pub async fn latest(
    query: &QueryService,
    scope: Option<&str>,
    since_ns: i64,
) -> Result<Vec<Value>> {
    let ctx = query.scoped_context(scope)?;
    // A supplier with no rows yet (or a store with no `gpu` table) has nothing to show.
    let Ok(table) = ctx.table_provider("gpu").await else {
        return Ok(Vec::new());
    };
    let columns: Vec<String> = table
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let Some(sql) = latest_sql(&columns, since_ns) else {
        return Ok(Vec::new());
    };
    let (schema, batches) = query.sql_scoped(&sql, scope).await?;
    let bytes = encode(Format::Json, &schema, &batches)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Array(rows)) => Ok(rows),
        Ok(_) => Ok(Vec::new()),
        Err(e) => Err(Error::Internal(format!("latest values: bad JSON: {e}"))),
    }
}

/// Most live streams one principal (one token, with all its sessions) may hold open.
pub const MAX_STREAMS_PER_PRINCIPAL: usize = 8;
/// Most live streams open at once on the server.
pub const MAX_STREAMS: usize = 1_000;
/// How often an open stream checks that its session and token are still good.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// One computation of a scope's live values, shared by every stream of that scope.
#[derive(Debug)]
pub struct Snapshot {
    /// 1 for the producer's first computation, one more for each after it.
    pub version: u64,
    pub server_time_ns: i64,
    /// Every GPU's latest values (GPUs heard from within [`FIRST_WINDOW_NS`]).
    pub all: Vec<Value>,
    /// The rows this computation read: everything newer than the last one, and an overlap.
    pub changed: Vec<Value>,
    /// Why this computation failed, if it did (`all` is then the last good state).
    pub error: Option<String>,
}

type Scope = Option<String>;
type SnapshotRx = watch::Receiver<Option<Arc<Snapshot>>>;

/// A running producer; dropping the last handle stops it.
#[derive(Debug)]
struct Producer {
    rx: SnapshotRx,
    task: rigwatch_common::task::Task<()>,
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug, Default)]
struct Open {
    producers: HashMap<Scope, Weak<Producer>>,
    per_principal: HashMap<String, usize>,
    total: usize,
}

#[derive(Debug)]
struct LiveInner {
    query: QueryService,
    open: Mutex<Open>,
    computations: Arc<AtomicU64>,
    per_principal: usize,
    max: usize,
}

/// The portal's live streams: their caps, and one shared producer per open scope.
#[derive(Debug, Clone)]
pub struct Live {
    inner: Arc<LiveInner>,
}

/// Why a stream was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamRefused {
    #[error(
        "at most {max} live streams per token may be open at once (--max-streams-per-token); close one (another tab or script) first"
    )]
    PerPrincipal { max: usize },
    #[error("the server holds its maximum of {max} live streams (--max-streams); try again later")]
    Total { max: usize },
}

/// An open stream's place: its producer and its count against the caps (released on drop).
#[derive(Debug)]
pub struct Subscription {
    rx: SnapshotRx,
    _producer: Arc<Producer>,
    _slot: Slot,
}

#[derive(Debug)]
struct Slot {
    live: Arc<LiveInner>,
    principal: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.live.open.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_principal.get_mut(&self.principal) {
            *n -= 1;
            if *n == 0 {
                open.per_principal.remove(&self.principal);
            }
        }
    }
}

impl Live {
    pub fn new(query: QueryService) -> Self {
        Self::with_limits(query, MAX_STREAMS_PER_PRINCIPAL, MAX_STREAMS)
    }

    /// At most `per_principal` streams for one token and `max` in all.
    pub fn with_limits(query: QueryService, per_principal: usize, max: usize) -> Self {
        Self {
            inner: Arc::new(LiveInner {
                query,
                open: Mutex::new(Open::default()),
                computations: Arc::new(AtomicU64::new(0)),
                per_principal,
                max,
            }),
        }
    }

    /// Opens a stream for `principal` (a token id) over `scope`'s live values, starting the
    /// scope's producer if it is the first. Needs a tokio runtime.
    pub fn subscribe(
        &self,
        principal: &str,
        scope: Option<String>,
    ) -> Result<Subscription, StreamRefused> {
        let mut open = self.inner.open.lock();
        if open.per_principal.get(principal).copied().unwrap_or(0) >= self.inner.per_principal {
            return Err(StreamRefused::PerPrincipal {
                max: self.inner.per_principal,
            });
        }
        if open.total >= self.inner.max {
            return Err(StreamRefused::Total {
                max: self.inner.max,
            });
        }
        open.producers.retain(|_, p| p.strong_count() > 0);
        let producer = match open.producers.get(&scope).and_then(Weak::upgrade) {
            Some(p) => p,
            None => {
                let (tx, rx) = watch::channel(None);
                let task = rigwatch_common::task::spawn(produce(
                    self.inner.query.clone(),
                    scope.clone(),
                    tx,
                    self.inner.computations.clone(),
                ));
                let p = Arc::new(Producer { rx, task });
                open.producers.insert(scope, Arc::downgrade(&p));
                p
            }
        };
        open.total += 1;
        *open.per_principal.entry(principal.to_string()).or_default() += 1;
        Ok(Subscription {
            rx: producer.rx.clone(),
            _producer: producer,
            _slot: Slot {
                live: self.inner.clone(),
                principal: principal.to_string(),
            },
        })
    }

    /// Live values computed so far, over all scopes (one per producer and tick, however many
    /// streams share it).
    pub fn computations(&self) -> u64 {
        self.inner.computations.load(Ordering::Relaxed)
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.inner.open.lock().total
    }

    /// Scopes with a running producer.
    pub fn producers(&self) -> usize {
        let open = self.inner.open.lock();
        open.producers
            .values()
            .filter(|p| p.strong_count() > 0)
            .count()
    }
}

/// Which GPU a row describes: its uuid and tags (the query groups by them).
fn gpu_key(row: &Value) -> String {
    std::iter::once("gpu_uuid")
        .chain(LIVE_TAGS.iter().copied())
        .map(|c| row.get(c).map(Value::to_string).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\u{1f}")
}

/// A scope's producer: one query per write burst or tick, published to every stream.
async fn produce(
    query: QueryService,
    scope: Scope,
    tx: watch::Sender<Option<Arc<Snapshot>>>,
    computations: Arc<AtomicU64>,
) {
    let mut writes = query.db().subscribe();
    let mut cursor: Option<i64> = None;
    let mut gpus: BTreeMap<String, Value> = BTreeMap::new();
    let mut version = 0u64;
    loop {
        if version > 0 {
            // Wait for a write or the tick, then keep a minimum gap between queries.
            let wait = async {
                loop {
                    match writes.recv().await {
                        Ok(_) | Err(RecvError::Lagged(_)) => break,
                        Err(RecvError::Closed) => std::future::pending::<()>().await,
                    }
                }
            };
            let started = tokio::time::Instant::now();
            let _ = tokio::time::timeout(TICK, wait).await;
            tokio::time::sleep_until(started + MIN_GAP).await;
        }
        version += 1;
        computations.fetch_add(1, Ordering::Relaxed);
        let since = match cursor {
            None => now_ns() - FIRST_WINDOW_NS,
            Some(c) => c - OVERLAP_NS,
        };
        let (changed, error) = match latest(&query, scope.as_deref(), since).await {
            Ok(rows) => {
                let newest = rows.iter().filter_map(|r| r["time_ns"].as_i64()).max();
                cursor = Some(match (cursor, newest) {
                    (Some(c), Some(n)) => c.max(n),
                    (None, Some(n)) => n,
                    (c, None) => c.unwrap_or_else(now_ns),
                });
                for r in &rows {
                    gpus.insert(gpu_key(r), r.clone());
                }
                let oldest = now_ns() - FIRST_WINDOW_NS;
                gpus.retain(|_, r| r["time_ns"].as_i64().is_none_or(|t| t > oldest));
                (rows, None)
            }
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        let snapshot = Snapshot {
            version,
            server_time_ns: now_ns(),
            all: gpus.values().cloned().collect(),
            changed,
            error,
        };
        if tx.send(Some(Arc::new(snapshot))).is_err() {
            return;
        }
    }
}

/// What one stream has sent so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Sent {
    /// The last snapshot version handled (0: none yet).
    version: u64,
    /// Whether the client holds the whole state as of `version`.
    synced: bool,
}

/// The event for `snap` after `sent`: the changes if the client is in step, else the whole
/// state; an `error` event for a failed computation.
fn event_for(snap: &Snapshot, sent: Sent) -> (Event, Sent) {
    let in_step = sent.synced && snap.version == sent.version + 1;
    if let Some(error) = &snap.error {
        let ev = Event::default()
            .event("error")
            .data(serde_json::json!({ "error": error }).to_string());
        return (
            ev,
            Sent {
                version: snap.version,
                synced: in_step,
            },
        );
    }
    let rows = if in_step { &snap.changed } else { &snap.all };
    let body = serde_json::json!({ "server_time_ns": snap.server_time_ns, "gpus": rows });
    (
        Event::default().event("gpus").data(body.to_string()),
        Sent {
            version: snap.version,
            synced: true,
        },
    )
}

struct StreamState<F> {
    sub: Subscription,
    sent: Sent,
    check: tokio::time::Interval,
    still_valid: F,
    ended: bool,
}

/// The SSE stream of one signed-in caller: the scope's snapshots until the caller goes away
/// or `still_valid` (checked every [`CHECK_EVERY`]) says the session or token has ended; then
/// one `end` event and the end of the stream.
pub fn stream<F>(
    sub: Subscription,
    still_valid: F,
) -> Sse<impl Stream<Item = std::result::Result<Event, Infallible>>>
where
    F: Fn() -> bool + Send + 'static,
{
    let mut check = tokio::time::interval(CHECK_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let st = StreamState {
        sub,
        sent: Sent::default(),
        check,
        still_valid,
        ended: false,
    };
    let s = futures::stream::unfold(st, |mut st| async move {
        if st.ended {
            return None;
        }
        loop {
            let snap = st.sub.rx.borrow_and_update().clone();
            if let Some(snap) = snap
                && snap.version != st.sent.version
            {
                let (ev, sent) = event_for(&snap, st.sent);
                st.sent = sent;
                return Some((Ok(ev), st));
            }
            tokio::select! {
                changed = st.sub.rx.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                _ = st.check.tick() => {
                    if !(st.still_valid)() {
                        st.ended = true;
                        let ev = Event::default().event("end").data(
                            serde_json::json!({
                                "reason": "the session or token this stream was opened with has ended: sign in again"
                            })
                            .to_string(),
                        );
                        return Some((Ok(ev), st));
                    }
                }
            }
        }
    });
    Sse::new(s).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// One snapshot of `scope`'s latest values, then the end (for scripts and tests).
pub fn once(
    query: QueryService,
    scope: Option<String>,
) -> Sse<impl Stream<Item = std::result::Result<Event, Infallible>>> {
    let s = futures::stream::once(async move {
        let ev = match latest(&query, scope.as_deref(), now_ns() - FIRST_WINDOW_NS).await {
            Ok(rows) => {
                let body = serde_json::json!({ "server_time_ns": now_ns(), "gpus": rows });
                Event::default().event("gpus").data(body.to_string())
            }
            Err(e) => Event::default()
                .event("error")
                .data(serde_json::json!({ "error": e.to_string() }).to_string()),
        };
        Ok(ev)
    });
    Sse::new(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rigwatch_storage::batch::{FieldValue, WriteBatch};
    use rigwatch_storage::{Db, DbConfig, WriteOptions};

    /// A store in a fresh directory under the system's temp dir (removed on drop).
    struct TempStore {
        dir: std::path::PathBuf,
        query: QueryService,
    }

    impl Drop for TempStore {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    async fn store() -> TempStore {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rigwatch-live-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let mut c = DbConfig::new(&dir);
        c.background = false;
        let db = Db::open(c).await.expect("open db");
        TempStore {
            dir,
            query: QueryService::new(db),
        }
    }

    async fn write(q: &QueryService, supplier: &str, gpu: &str, util: f64) {
        let mut b = WriteBatch::default();
        let mut r = b.row("gpu", now_ns());
        r.tag("supplier", supplier).tag("gpu_uuid", gpu);
        r.field("utilization", FieldValue::F64(util));
        r.finish(1).unwrap();
        q.db().write(b, WriteOptions::default()).await.unwrap();
    }

    /// Waits (bounded) until `sub` has seen a snapshot of at least `version`.
    async fn until_version(sub: &mut Subscription, version: u64) -> Arc<Snapshot> {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Some(s) = sub.rx.borrow_and_update().clone()
                    && s.version >= version
                {
                    return s;
                }
                sub.rx.changed().await.unwrap();
            }
        })
        .await
        .expect("no snapshot in 30 s")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streams_of_one_scope_share_one_computation_per_tick() {
        let st = store().await;
        write(&st.query, "acme", "GPU-a1", 10.0).await;
        write(&st.query, "other", "GPU-o1", 20.0).await;
        let live = Live::new(st.query.clone());
        let mut subs: Vec<Subscription> = (0..6)
            .map(|i| {
                live.subscribe(&format!("token-{i}"), Some("acme".into()))
                    .unwrap()
            })
            .collect();
        assert_eq!(live.producers(), 1);
        let first = until_version(&mut subs[0], 1).await;
        assert_eq!(first.all.len(), 1, "{:?}", first.all);
        assert_eq!(first.all[0]["gpu_uuid"], "GPU-a1");
        for round in 0..3 {
            write(&st.query, "acme", "GPU-a2", f64::from(round)).await;
            tokio::time::sleep(MIN_GAP * 2).await;
        }
        let newest = until_version(&mut subs[0], 2).await.version;
        for sub in &mut subs {
            let snap = until_version(sub, newest).await;
            // Every stream holds the very same computation, and sees only its supplier.
            assert!(
                snap.all.iter().all(|r| r["supplier"] == "acme"),
                "{:?}",
                snap.all
            );
            assert!(
                snap.all.iter().any(|r| r["gpu_uuid"] == "GPU-a2"),
                "{:?}",
                snap.all
            );
        }
        let seen = subs
            .iter_mut()
            .map(|s| s.rx.borrow().as_ref().map_or(0, |s| s.version))
            .max()
            .unwrap();
        // One query per tick for the scope, not one per stream.
        assert_eq!(live.computations(), seen);
        // A second scope has its own producer; the last stream of a scope stops it.
        let admin = live.subscribe("admin", None).unwrap();
        assert_eq!(live.producers(), 2);
        drop(subs);
        assert_eq!(live.producers(), 1);
        assert_eq!(live.open_streams(), 1);
        drop(admin);
        assert_eq!(live.producers(), 0);
    }

    #[tokio::test]
    async fn streams_are_capped_per_principal_and_in_all() {
        let st = store().await;
        let live = Live::with_limits(st.query.clone(), 8, 10);
        let mut held: Vec<Subscription> = (0..8)
            .map(|_| live.subscribe("reader", None).unwrap())
            .collect();
        assert_eq!(
            live.subscribe("reader", None).unwrap_err(),
            StreamRefused::PerPrincipal { max: 8 }
        );
        held.push(live.subscribe("other", None).unwrap());
        held.push(live.subscribe("other", None).unwrap());
        assert_eq!(
            live.subscribe("third", None).unwrap_err(),
            StreamRefused::Total { max: 10 }
        );
        // Closing a stream frees its place.
        held.remove(0);
        assert!(live.subscribe("reader", None).is_ok());
    }

    #[tokio::test]
    async fn a_stream_ends_when_its_session_or_token_does() {
        use axum::response::IntoResponse as _;
        let st = store().await;
        let live = Live::new(st.query.clone());
        let valid = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = valid.clone();
        let sse = stream(live.subscribe("reader", None).unwrap(), move || {
            flag.load(Ordering::Relaxed)
        });
        let body = sse.into_response().into_body();
        valid.store(false, Ordering::Relaxed);
        let bytes = tokio::time::timeout(CHECK_EVERY * 5, axum::body::to_bytes(body, usize::MAX))
            .await
            .expect("the stream did not end")
            .unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("event: end"), "{text}");
        assert_eq!(live.open_streams(), 0);
    }

    #[test]
    fn a_stream_sends_everything_first_then_changes() {
        let snap = |version, error: Option<&str>| Snapshot {
            version,
            server_time_ns: 0,
            all: vec![serde_json::json!({"gpu_uuid": "all"})],
            changed: vec![serde_json::json!({"gpu_uuid": "changed"})],
            error: error.map(str::to_string),
        };
        let data = |e: Event| format!("{e:?}");
        let (ev, sent) = event_for(&snap(3, None), Sent::default());
        assert!(data(ev).contains("all"));
        let (ev, sent) = event_for(&snap(4, None), sent);
        assert!(data(ev).contains("changed"));
        // A missed snapshot: everything again.
        let (ev, sent) = event_for(&snap(6, None), sent);
        assert!(data(ev).contains("all"));
        // A failed computation keeps the client in step only if it was.
        let (ev, sent) = event_for(&snap(7, Some("boom")), sent);
        assert!(data(ev).contains("boom"));
        let (ev, _) = event_for(&snap(8, None), sent);
        assert!(data(ev).contains("changed"));
        let (_, sent) = event_for(&snap(1, Some("boom")), Sent::default());
        let (ev, _) = event_for(&snap(2, None), sent);
        assert!(data(ev).contains("all"));
    }

    #[test]
    fn latest_sql_uses_only_existing_columns() {
        let cols: Vec<String> = ["supplier", "gpu_uuid", "model", "utilization", "time"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let sql = latest_sql(&cols, 5).unwrap();
        assert!(
            sql.contains("last_value(\"utilization\" ORDER BY time)"),
            "{sql}"
        );
        assert!(!sql.contains("power_watts"), "{sql}");
        assert!(
            sql.contains("GROUP BY gpu_uuid, \"supplier\", \"model\""),
            "{sql}"
        );
        assert!(sql.contains("to_timestamp_nanos(5)"), "{sql}");
        assert!(latest_sql(&["x".to_string()], 0).is_none());
    }
}

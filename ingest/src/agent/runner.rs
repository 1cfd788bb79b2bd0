//! The agent loop: a collector thread sampling every interval, and an async transport task
//! that registers, sends, spools when the server is away and drains the spool in order.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use super::dedup::BatchId;
use super::fields::{GpuEvent, GpuInfo, GpuLine, GpuSample, push_escaped_tag};
use super::host;
use super::spool::{BatchIds, Spool, SpoolError, SpoolStats};
use super::transport::{Backoff, Client, Registration, SendError, gzip};
use super::{CollectError, Collector, now_ns};

/// How an agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Server base URL, e.g. `http://10.0.0.5:9800`.
    pub server: String,
    /// An agent token (`rw_<id>_<secret>`).
    pub token: String,
    /// This machine's name in the fleet.
    pub worker: String,
    pub region: Option<String>,
    pub interval: Duration,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    pub request_timeout: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Wait this long before the first sample (spreads a fleet started at once over the
    /// interval, as real machines are).
    pub start_delay: Duration,
    /// Time between `host` rows (rounded up to a whole number of `interval`s); `None`: no
    /// host rows.
    pub host_interval: Option<Duration>,
    /// The file system whose use `host` rows report.
    pub host_disk: PathBuf,
}

impl AgentConfig {
    /// Defaults for everything but where to send and as whom.
    pub fn new(server: &str, token: &str, worker: &str, spool_dir: PathBuf) -> Self {
        AgentConfig {
            server: server.to_string(),
            token: token.to_string(),
            worker: worker.to_string(),
            region: None,
            interval: Duration::from_secs(1),
            spool_dir,
            spool_max_bytes: 256 << 20,
            request_timeout: Duration::from_secs(10),
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            start_delay: Duration::ZERO,
            host_interval: Some(Duration::from_secs(10)),
            host_disk: PathBuf::from("/"),
        }
    }
}

/// Why an agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Collect(#[from] CollectError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("{0}")]
    Send(#[from] SendError),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("the collector thread stopped unexpectedly")]
    CollectorGone,
}

/// What an agent did, for logs, tests and benchmarks.
#[derive(Debug, Default)]
pub struct AgentStats {
    pub ticks: AtomicU64,
    pub gpu_rows: AtomicU64,
    pub fault_rows: AtomicU64,
    /// Batches the server acknowledged.
    pub batches_acked: AtomicU64,
    /// Batches that went to the spool instead of straight to the server.
    pub batches_spooled: AtomicU64,
    /// Batches the server refused for good (logged).
    pub batches_rejected: AtomicU64,
    /// Time from sampling to acknowledgement, last and max (µs).
    pub last_lag_us: AtomicU64,
    pub max_lag_us: AtomicU64,
    pub sum_lag_us: AtomicU64,
    /// Every acknowledgement's lag, spooled batches' included (sampled in this run).
    pub lag: super::lag::LagHistogram,
    /// Whether the server has accepted this agent's registration (this run).
    pub registered: std::sync::atomic::AtomicBool,
    pub spool: Arc<SpoolStats>,
}

/// One tick's rows, compressed.
#[derive(Debug)]
struct Batch {
    /// Sent with every try, spooled with the body.
    id: Option<BatchId>,
    /// Shared, so a send and the spool fallback use one buffer.
    gz: bytes::Bytes,
    sampled: Instant,
}

/// A running agent.
#[derive(Debug)]
pub struct AgentHandle {
    stop: Arc<watch::Sender<bool>>,
    task: rigwatch_common::task::Task<Result<(), AgentError>>,
    pub stats: Arc<AgentStats>,
}

impl AgentHandle {
    /// Starts an agent on the current tokio runtime. The collector runs on its own thread.
    pub fn spawn(config: AgentConfig, collector: impl Collector) -> Result<Self, AgentError> {
        let stats = Arc::new(AgentStats::default());
        let spool = Spool::open(
            &config.spool_dir,
            config.spool_max_bytes,
            stats.spool.clone(),
        )?;
        let ids = BatchIds::open(&config.spool_dir)?;
        if !spool.is_empty() {
            info!(
                batches = spool.len(),
                bytes = spool.bytes(),
                dir = %spool.dir().display(),
                "spool holds batches from an earlier run; they will be sent first"
            );
        }
        let client = Client::new(&config.server, &config.token, config.request_timeout)
            .map_err(|e| AgentError::Client(e.to_string()))?;
        let (stop, stop_rx) = watch::channel(false);
        let task = rigwatch_common::task::spawn(transport_task(
            config,
            collector,
            ids,
            client,
            Arc::new(Mutex::new(spool)),
            stats.clone(),
            stop_rx,
        ));
        Ok(AgentHandle {
            stop: Arc::new(stop),
            task,
            stats,
        })
    }

    /// Stops sampling, spools what was not sent, and returns how the agent ended.
    pub async fn stop(self) -> Result<(), AgentError> {
        let _ = self.stop.send(true);
        self.wait().await
    }

    /// A function that asks the agent to stop (for a signal handler).
    pub fn stopper(&self) -> impl Fn() + Send + Sync + 'static {
        let stop = self.stop.clone();
        move || {
            let _ = stop.send(true);
        }
    }

    /// Waits until the agent ends by itself (a fatal error, or the collector failing).
    pub async fn wait(self) -> Result<(), AgentError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(AgentError::Client(format!("agent task failed: {e}"))),
        }
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// The collector thread: inventory once, then one batch per interval until told to stop.
fn collector_thread(
    mut collector: impl Collector,
    mut ids: BatchIds,
    config: AgentConfig,
    stats: Arc<AgentStats>,
    inventory_tx: oneshot::Sender<Result<Vec<GpuInfo>, CollectError>>,
    batches: mpsc::Sender<Batch>,
    stop: std::sync::mpsc::Receiver<()>,
) {
    let AgentConfig {
        region,
        interval,
        start_delay,
        host_interval,
        host_disk,
        ..
    } = config;
    // Every `host_every` ticks (the first tick included) a `host` row.
    let host_every = host_interval.map(|h| {
        (h.as_nanos().div_ceil(interval.as_nanos().max(1))).clamp(1, u64::MAX as u128) as u64
    });
    let mut proc_host = host::ProcHost::new(host_disk);
    let mut host_sample = host::HostSample::default();
    let host_tags = host::tags(region.as_deref());
    let inventory = match collector.inventory() {
        Ok(inv) => inv,
        Err(e) => {
            let _ = inventory_tx.send(Err(e));
            return;
        }
    };
    let lines: Vec<GpuLine> = inventory
        .iter()
        .map(|g| GpuLine::new(g, region.as_deref()))
        .collect();
    let mut hb_tags = String::from("heartbeat");
    if let Some(r) = &region {
        hb_tags.push_str(",region=");
        push_escaped_tag(&mut hb_tags, r);
    }
    let gpus = inventory.len();
    if inventory_tx.send(Ok(inventory)).is_err() {
        return;
    }
    let started = Instant::now();
    let mut samples: Vec<GpuSample> = Vec::with_capacity(gpus);
    let mut events: Vec<GpuEvent> = Vec::new();
    let mut body = String::with_capacity(gpus * 700 + 256);
    let mut next = Instant::now() + start_delay;
    if !start_delay.is_zero()
        && !matches!(
            stop.recv_timeout(start_delay),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout)
        )
    {
        return;
    }
    let mut seq: u64 = 0;
    loop {
        let now = now_ns();
        samples.clear();
        events.clear();
        if let Err(e) = collector.sample(now, &mut samples) {
            warn!(error = %e, "sampling failed; this tick has no gpu rows");
        }
        collector.events(now, &mut events);
        body.clear();
        for s in &samples {
            if let Some(line) = lines.get(s.gpu) {
                line.push_sample(&mut body, s);
            }
        }
        for e in &events {
            if let Some(line) = lines.get(e.gpu) {
                line.push_event(&mut body, e);
            }
        }
        if host_every.is_some_and(|every| seq.is_multiple_of(every)) {
            collector.host(now, &mut proc_host, &mut host_sample);
            host_sample.push_line(&mut body, &host_tags, now);
        }
        let spool = &stats.spool;
        let _ = writeln!(
            body,
            "{hb_tags} seq={seq}i,gpus={gpus}i,gpus_reporting={}i,interval_ms={}i,uptime_s={}i,\
spool_batches={}i,spool_bytes={}i,spool_dropped_batches={}i,agent_version=\"{}\" {now}",
            samples.len(),
            interval.as_millis(),
            started.elapsed().as_secs(),
            spool.batches.load(Ordering::Relaxed),
            spool.bytes.load(Ordering::Relaxed),
            spool.dropped_batches.load(Ordering::Relaxed),
            env!("CARGO_PKG_VERSION"),
        );
        seq += 1;
        stats.ticks.fetch_add(1, Ordering::Relaxed);
        stats
            .gpu_rows
            .fetch_add(samples.len() as u64, Ordering::Relaxed);
        stats
            .fault_rows
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        let id = match ids.next_id() {
            Ok(id) => Some(id),
            Err(e) => {
                // Without an id the server recognises a retry by its bytes, as from an
                // older agent: still stored once, but an identical later batch is dropped.
                warn!(error = %e, "cannot number this batch; sending it without an id");
                None
            }
        };
        let batch = Batch {
            id,
            gz: gzip(body.as_bytes()).into(),
            sampled: Instant::now(),
        };
        if batches.blocking_send(batch).is_err() {
            return;
        }
        next += interval;
        let now = Instant::now();
        if next < now {
            // Fell behind (a slow NVML call, a suspended VM): skip, do not burst.
            next = now;
        }
        match stop.recv_timeout(next - now) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}

async fn blocking<T: Send + 'static>(
    spool: &Arc<Mutex<Spool>>,
    f: impl FnOnce(&mut Spool) -> Result<T, SpoolError> + Send + 'static,
) -> Result<T, AgentError> {
    let spool = spool.clone();
    tokio::task::spawn_blocking(move || f(&mut spool.lock()))
        .await
        .map_err(|_| AgentError::CollectorGone)?
        .map_err(AgentError::from)
}

fn record_ack(stats: &AgentStats, sampled: Option<Instant>) {
    stats.batches_acked.fetch_add(1, Ordering::Relaxed);
    if let Some(t) = sampled {
        let us = t.elapsed().as_micros() as u64;
        stats.last_lag_us.store(us, Ordering::Relaxed);
        stats.max_lag_us.fetch_max(us, Ordering::Relaxed);
        stats.sum_lag_us.fetch_add(us, Ordering::Relaxed);
        stats.lag.record(t.elapsed());
    }
}

/// When each batch spooled by this run was sampled, so that its lag is known when the drain
/// gets it acknowledged. Bounded: past the bound, older entries' lag goes unrecorded.
#[derive(Debug, Default)]
struct SpoolTimes(std::collections::HashMap<BatchId, Instant>);

impl SpoolTimes {
    const MAX: usize = 100_000;

    fn spooled(&mut self, b: &Batch) {
        if let Some(id) = b.id
            && self.0.len() < Self::MAX
        {
            self.0.insert(id, b.sampled);
        }
    }

    fn take(&mut self, id: Option<BatchId>) -> Option<Instant> {
        id.and_then(|id| self.0.remove(&id))
    }
}

async fn transport_task(
    config: AgentConfig,
    collector: impl Collector,
    ids: BatchIds,
    client: Client,
    spool: Arc<Mutex<Spool>>,
    stats: Arc<AgentStats>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let (inv_tx, inv_rx) = oneshot::channel();
    let (batch_tx, mut batches) = mpsc::channel::<Batch>(64);
    let (stop_thread, stop_thread_rx) = std::sync::mpsc::channel::<()>();
    let thread = {
        let stats = stats.clone();
        let thread_config = config.clone();
        std::thread::Builder::new()
            .name(format!("rigwatch-collector-{}", config.worker))
            .spawn(move || {
                collector_thread(
                    collector,
                    ids,
                    thread_config,
                    stats,
                    inv_tx,
                    batch_tx,
                    stop_thread_rx,
                )
            })
            .map_err(|e| AgentError::Client(format!("cannot start the collector thread: {e}")))?
    };
    let result = run_transport(
        &config,
        inv_rx,
        &client,
        &spool,
        &stats,
        &mut batches,
        &mut stop,
    )
    .await;
    // Stop the collector, then keep whatever it produced that was not sent.
    drop(stop_thread);
    batches.close();
    let mut left = Vec::new();
    while let Some(b) = batches.recv().await {
        left.push(b);
    }
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    for b in left {
        stats.batches_spooled.fetch_add(1, Ordering::Relaxed);
        blocking(&spool, move |s| s.push_batch(&b.gz, b.id)).await?;
    }
    result
}

async fn run_transport(
    config: &AgentConfig,
    inventory: oneshot::Receiver<Result<Vec<GpuInfo>, CollectError>>,
    client: &Client,
    spool: &Arc<Mutex<Spool>>,
    stats: &AgentStats,
    batches: &mut mpsc::Receiver<Batch>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let gpus = inventory.await.map_err(|_| AgentError::CollectorGone)??;
    info!(
        worker = %config.worker,
        gpus = gpus.len(),
        server = %client.base(),
        "collector started"
    );
    let registration = Registration {
        worker: config.worker.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        gpus,
    };
    let mut registered = false;
    let mut backoff = Backoff::new(config.backoff_base, config.backoff_max);
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut times = SpoolTimes::default();
    let worker = config.worker.as_str();
    loop {
        if retry_at.is_none() {
            if !registered {
                match client.register(&registration).await {
                    Ok(()) => {
                        info!(worker, gpus = registration.gpus.len(), "registered");
                        registered = true;
                        stats.registered.store(true, Ordering::Relaxed);
                        backoff.reset();
                    }
                    Err(e @ SendError::Unauthorized(_)) => return Err(e.into()),
                    Err(e) => {
                        let wait = backoff.next_delay_after(e.retry_after());
                        warn!(error = %e, retry_in = ?wait, "registration failed");
                        retry_at = Some(tokio::time::Instant::now() + wait);
                    }
                }
            }
            // Drain the spool, oldest first, taking in new batches behind it.
            while registered && retry_at.is_none() {
                // A long backlog must not delay a stop: what is left stays spooled.
                if *stop.borrow() || stop.has_changed().is_err() {
                    return Ok(());
                }
                while let Ok(b) = batches.try_recv() {
                    stats.batches_spooled.fetch_add(1, Ordering::Relaxed);
                    times.spooled(&b);
                    blocking(spool, move |s| s.push_batch(&b.gz, b.id)).await?;
                }
                let Some(spooled) = blocking(spool, |s| s.peek_batch()).await? else {
                    break;
                };
                let seq = spooled.seq;
                match client.write(worker, spooled.id, spooled.body.into()).await {
                    Ok(()) => {
                        backoff.reset();
                        record_ack(stats, times.take(spooled.id));
                        blocking(spool, move |s| s.pop(seq)).await?;
                    }
                    Err(SendError::Rejected(msg)) => {
                        times.take(spooled.id);
                        error!(%msg, seq, "server rejected a spooled batch; dropping it");
                        stats.batches_rejected.fetch_add(1, Ordering::Relaxed);
                        blocking(spool, move |s| s.pop(seq)).await?;
                    }
                    Err(SendError::Unregistered(msg)) => {
                        warn!(%msg, "server forgot this worker; registering again");
                        registered = false;
                    }
                    Err(e @ SendError::Unauthorized(_)) => return Err(e.into()),
                    Err(e) => {
                        let wait = backoff.next_delay_after(e.retry_after());
                        let spooled = spool.lock().len();
                        // A busy server is flow control, not a fault: not a warning.
                        if e.retry_after().is_some() {
                            info!(error = %e, retry_in = ?wait, spooled, "server busy");
                        } else {
                            warn!(error = %e, retry_in = ?wait, spooled, "server unavailable");
                        }
                        retry_at = Some(tokio::time::Instant::now() + wait);
                    }
                }
            }
            if !registered && retry_at.is_none() {
                continue;
            }
        }
        let sleep_until = retry_at;
        tokio::select! {
            b = batches.recv() => {
                let Some(b) = b else {
                    return Err(AgentError::CollectorGone);
                };
                let direct = registered && retry_at.is_none() && spool.lock().is_empty();
                if !direct {
                    stats.batches_spooled.fetch_add(1, Ordering::Relaxed);
                    times.spooled(&b);
                    blocking(spool, move |s| s.push_batch(&b.gz, b.id)).await?;
                    continue;
                }
                let sampled = b.sampled;
                // A cheap clone (shared bytes): the spool still has the body if the send fails.
                match client.write(worker, b.id, b.gz.clone()).await {
                    Ok(()) => {
                        backoff.reset();
                        record_ack(stats, Some(sampled));
                    }
                    Err(SendError::Rejected(msg)) => {
                        error!(%msg, "server rejected a batch; dropping it");
                        stats.batches_rejected.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        stats.batches_spooled.fetch_add(1, Ordering::Relaxed);
                        times.spooled(&b);
                        blocking(spool, move |s| s.push_batch(&b.gz, b.id)).await?;
                        match e {
                            e @ SendError::Unauthorized(_) => return Err(e.into()),
                            SendError::Unregistered(msg) => {
                                warn!(%msg, "server forgot this worker; registering again");
                                registered = false;
                            }
                            e => {
                                let wait = backoff.next_delay_after(e.retry_after());
                                if e.retry_after().is_some() {
                                    info!(error = %e, retry_in = ?wait, "server busy; spooling");
                                } else {
                                    warn!(error = %e, retry_in = ?wait, "server unavailable; spooling");
                                }
                                retry_at = Some(tokio::time::Instant::now() + wait);
                            }
                        }
                    }
                }
            }
            _ = async {
                match sleep_until {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {
                retry_at = None;
            }
            _ = stop.changed() => return Ok(()),
        }
    }
}

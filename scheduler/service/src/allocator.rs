//! The live allocator service: the scheduler crate's allocator and ledger, fed by the write
//! path, persisted as rows, served over HTTP.
//!
//! ```text
//!  Db::subscribe ──gpu rows──► LiveView (last values, heartbeats)      POST /api/v1/jobs
//!                                   │                                        │
//!                       every tick: schedule ──► leases ──► rows `lease` ◄───┘
//!                                   │
//!                       every tick: accrue open leases ──► rows `earnings` (per minute)
//! ```
//!
//! Rows are keyed so that writing them again changes nothing: a lease is one row of table
//! `lease` (tags `lease_id`, ...; time = its start), whose `end_ms`/`end_reason` fields are
//! filled in when it ends (the store's last write wins per field); an earnings entry is one
//! row of `earnings` keyed by lease and minute. After a restart the allocator is rebuilt from
//! the open `lease` rows and the ledger from `earnings`, so nothing is leased twice and no
//! minute is paid twice.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::Router;
use parking_lot::Mutex;
use rigwatch_common::money::Currency;
use rigwatch_common::tables;
use rigwatch_query::QueryService;
use rigwatch_scheduler::extender::ExtenderState;
use rigwatch_scheduler::{
    Allocator, AllocatorConfig, EndReason, GpuDemand, GpuSpec, Health, Job, JobState, Lease,
    LiveView, NodeSpec, Sample, TaskDistribution, ledger::Ledger, policy_by_name,
};
use rigwatch_storage::batch::{FieldValue, WriteBatch};
use rigwatch_storage::{Db, Singleton, WriteOptions};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How the allocator service runs (from `rigwatch serve`'s flags).
#[derive(Clone, Debug)]
pub struct AllocSettings {
    /// Placement policy name.
    pub policy: String,
    /// How often it places jobs and accrues.
    pub tick: Duration,
    /// Prices from the command line: canonical or NVML model name, µ per GPU-hour.
    pub rates: Vec<(String, i64)>,
    pub currency: Currency,
    /// How long an extender binding lives without renewal.
    pub extender_ttl: Duration,
    /// Pay pauses once a leased GPU has sent nothing for this long.
    pub pay_grace: Duration,
    /// A leased GPU silent this long ends its leases (`offline`).
    pub offline_after: Duration,
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobRecord {
    pub job: Job,
    pub state: JobState,
    pub submitted_ms: i64,
    pub started_ms: Option<i64>,
    pub ended_ms: Option<i64>,
    pub end_reason: Option<EndReason>,
    /// Every lease the job has had, in order (more than one set after a fault restart).
    pub leases: Vec<u64>,
    /// Times the job went back to the queue because a GPU under it failed in hardware.
    #[serde(default)]
    pub restarts: u32,
}

pub use rigwatch_scheduler::MAX_FAULT_RESTARTS;

struct Inner {
    alloc: Allocator,
    ledger: Ledger,
    /// Every recorded payout, oldest first.
    payouts: Vec<rigwatch_scheduler::payout::Payout>,
    jobs: BTreeMap<u64, JobRecord>,
    next_job: u64,
    recent_shapes: Vec<Job>,
}

/// The allocator service; cheap to clone.
#[derive(Clone)]
pub struct AllocService {
    state: Arc<Mutex<Inner>>,
    db: Arc<Db>,
    /// One Kubernetes extender per supplier cluster, by supplier.
    extenders: Arc<Mutex<HashMap<String, Arc<ExtenderState>>>>,
    /// How long an extender binding lives without renewal.
    extender_ttl: Duration,
    /// The currency of every amount (statements settle to its minor unit).
    currency: Currency,
    /// Pay pauses after this long without a row from the GPU, ms.
    pay_grace_ms: i64,
    /// Leases end (`offline`) after this long without a row from the GPU, ms.
    offline_after_ms: i64,
    /// Unscoped queries over the allocator's own tables (reconciliation).
    query: QueryService,
    /// Held while a payout is checked and written.
    payout_lock: Arc<tokio::sync::Mutex<()>>,
    /// Allocator rows not yet written, oldest first ([`AllocService::persist`]).
    outbox: Arc<Mutex<std::collections::VecDeque<WriteBatch>>>,
    /// Held while the outbox is written, so batches go out in order.
    writer: Arc<tokio::sync::Mutex<()>>,
    /// The service's running tasks (feeder, ticker, fault handling), stopped by
    /// [`AllocService::stop`].
    tasks: Arc<Mutex<Vec<rigwatch_common::task::Task<()>>>>,
}

/// What `POST /api/v1/jobs` accepts.
#[derive(Debug, Deserialize)]
pub struct JobRequest {
    /// Whole GPUs, 1 to 8.
    #[serde(default)]
    pub gpus: Option<u8>,
    /// A fraction of one GPU in thousandths, 1 to 999 (instead of `gpus`).
    #[serde(default)]
    pub gpu_milli: Option<u16>,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub min_gpu_memory_mib: u32,
    #[serde(default)]
    pub priority: i32,
    /// Expected run time, seconds (0 = unknown).
    #[serde(default)]
    pub expected_duration_s: u64,
    /// Highest acceptable price per GPU-hour, minor units.
    #[serde(default)]
    pub price_cap_micro_per_gpu_hour: Option<i64>,
}

impl JobRequest {
    /// `n` whole GPUs for about `expected_s` seconds.
    pub fn whole(n: u8, expected_s: u64) -> Self {
        Self {
            gpus: Some(n),
            gpu_milli: None,
            models: Vec::new(),
            min_gpu_memory_mib: 0,
            priority: 0,
            expected_duration_s: expected_s,
            price_cap_micro_per_gpu_hour: None,
        }
    }

    /// `milli` thousandths of one GPU for about `expected_s` seconds.
    pub fn fraction(milli: u16, expected_s: u64) -> Self {
        Self {
            gpus: None,
            gpu_milli: Some(milli),
            ..Self::whole(1, expected_s)
        }
    }

    fn demand(&self) -> Result<GpuDemand, String> {
        match (self.gpus, self.gpu_milli) {
            (Some(n), None) if (1..=8).contains(&n) => Ok(GpuDemand::Whole(n)),
            (None, Some(m)) if (1..=999).contains(&m) => Ok(GpuDemand::Fraction(m)),
            (Some(n), None) => Err(format!("`gpus` must be 1 to 8, got {n}")),
            (None, Some(m)) => Err(format!(
                "`gpu_milli` must be 1 to 999 thousandths of a GPU, got {m}"
            )),
            (Some(_), Some(_)) => Err("give `gpus` or `gpu_milli`, not both".into()),
            (None, None) => Err("give `gpus` (1-8 whole GPUs) or `gpu_milli` (1-999)".into()),
        }
    }
}

mod earnings;
mod errors;
mod http;
mod rates;
mod rows;
#[cfg(test)]
mod tests;

pub use errors::{EndError, SubmitError};
use rows::{
    earnings_row, entry_from_row, job_from_row, job_row, lease_from_row, lease_row, node_name,
    payout_from_row, rows,
};

impl AllocService {
    /// Rebuilds the allocator and ledger from the store and starts feeding and ticking.
    pub async fn start(db: Arc<Db>, settings: AllocSettings) -> anyhow::Result<Self> {
        let AllocSettings {
            policy,
            tick,
            rates,
            currency,
            extender_ttl,
            pay_grace,
            offline_after,
        } = settings;
        let policy = policy.as_str();
        let rates = rates.as_slice();
        let q = QueryService::new(db.clone());
        let mut view = LiveView::new();
        // GPUs seen in the last hour, so open leases find their GPUs again.
        let recent = rows(
            &q,
            tables::GPU,
            &format!(
                "SELECT supplier, worker, gpu_uuid, model, max(memory_total_mib) AS mem \
                 FROM {} WHERE time > now() - interval '1 hour' GROUP BY 1, 2, 3, 4",
                tables::GPU
            ),
        )
        .await
        .unwrap_or_default();
        let now = now_ms();
        for r in recent.iter() {
            register(
                &mut view,
                r.str("supplier").unwrap_or_default(),
                r.str("worker").unwrap_or_default(),
                r.str("gpu_uuid").unwrap_or_default(),
                r.str("model").unwrap_or_default(),
                r.i64("mem").unwrap_or(0) as u32,
                now,
            );
        }
        // `*`: columns appear with their first value, so before any lease has ended there is
        // no `end_ms` column to name.
        let lease_rows = rows(
            &q,
            tables::LEASE,
            &format!("SELECT * FROM {}", tables::LEASE),
        )
        .await?;
        let mut leases = Vec::new();
        for r in lease_rows.iter() {
            let lease = lease_from_row(&r).context("a stored lease cannot be read")?;
            if view.gpu(&lease.gpu_uuid).is_none() {
                let (sup, worker) = (lease.supplier.clone(), r.str("worker").unwrap_or_default());
                register(
                    &mut view,
                    &sup,
                    worker,
                    &lease.gpu_uuid,
                    &lease.model,
                    0,
                    now,
                );
            }
            leases.push(lease);
        }
        let dist = TaskDistribution::from_jobs(&view, std::iter::empty(), 32);
        let policy_box = policy_by_name(policy, 7).map_err(|e| anyhow::anyhow!("{e}"))?;
        let open: Vec<Lease> = leases.iter().filter(|l| l.is_open()).cloned().collect();
        let alloc =
            Allocator::rebuild(view, policy_box, dist, AllocatorConfig::default(), &open)
                .map_err(|e| anyhow::anyhow!("rebuilding the allocator from lease rows: {e}"))?;
        let (card, price_changes) = rates::load_card(&q, rates, now).await?;
        if !price_changes.is_empty() {
            db.write(price_changes, WriteOptions::singleton(Singleton::Stamped))
                .await
                .context("cannot store this start's price changes")?;
        }
        let mut ledger = Ledger::new(card);
        let entries = rows(
            &q,
            tables::EARNINGS,
            // `*`: rows from before micro-units have other columns (see EARNINGS_ROW_VERSION).
            &format!(
                "SELECT *, CAST(time AS BIGINT) / 1000000 AS from_ms FROM {}",
                tables::EARNINGS
            ),
        )
        .await?;
        let n_entries = entries.len();
        let mut upgraded = WriteBatch::default();
        let mut n_upgraded = 0usize;
        let mut restored = Vec::with_capacity(entries.len());
        for r in entries.iter() {
            let (e, legacy) = entry_from_row(&r, currency.micro_per_minor())
                .context("a stored earnings row cannot be read")?;
            if legacy {
                earnings_row(&mut upgraded, &e);
                n_upgraded += 1;
            }
            restored.push(e);
        }
        drop(entries);
        ledger.insert_rows(restored);
        if n_upgraded > 0 {
            db.write(upgraded, WriteOptions::singleton(Singleton::Stamped))
                .await
                .context("rewriting earnings rows in micro-units")?;
            info!(
                rows = n_upgraded,
                currency = %currency,
                "earnings rows from before micro-units rewritten (minor units × {})",
                currency.micro_per_minor()
            );
        }
        let mut payouts = Vec::new();
        let payout_rows = rows(
            &q,
            tables::PAYOUT,
            &format!(
                "SELECT * FROM {} ORDER BY paid_ms, payout_id",
                tables::PAYOUT
            ),
        )
        .await?;
        for r in payout_rows.iter() {
            let p = payout_from_row(&r).context("a stored payout cannot be read")?;
            if !payouts
                .iter()
                .any(|x: &rigwatch_scheduler::payout::Payout| x.payout_id == p.payout_id)
            {
                payouts.push(p);
            }
        }
        // Closed leases still owe the minutes between their last accrual and their end.
        let mut pending = WriteBatch::default();
        for l in leases.iter().filter(|l| !l.is_open()) {
            for e in ledger.accrue(l, now) {
                earnings_row(&mut pending, &e);
            }
        }
        // Jobs: their own rows first (shape, queue position, state), then the leases.
        let mut jobs = BTreeMap::new();
        let job_rows = rows(&q, tables::JOB, &format!("SELECT * FROM {}", tables::JOB)).await?;
        for r in job_rows.iter() {
            match job_from_row(&r, currency.micro_per_minor()) {
                Some(rec) => {
                    jobs.insert(rec.job.id, rec);
                }
                None => warn!(
                    job = r.str("job_id").unwrap_or_default(),
                    "unreadable job row skipped"
                ),
            }
        }
        let mut next_job = jobs.keys().next_back().map_or(1, |id| id + 1);
        let with_row: std::collections::HashSet<u64> = jobs.keys().copied().collect();
        let mut leases_by_start: Vec<&Lease> = leases.iter().collect();
        leases_by_start.sort_by_key(|l| (l.start_ms, l.lease_id));
        for l in leases_by_start {
            next_job = next_job.max(l.job_id + 1);
            let rec = jobs.entry(l.job_id).or_insert_with(|| JobRecord {
                // A lease without a job row (an extender binding): the job's shape beyond
                // its lease is not known.
                job: Job::new(l.job_id, GpuDemand::Whole(1)),
                state: JobState::Running,
                submitted_ms: l.start_ms,
                started_ms: Some(l.start_ms),
                ended_ms: None,
                end_reason: None,
                leases: Vec::new(),
                restarts: 0,
            });
            rec.leases.push(l.lease_id);
            if with_row.contains(&l.job_id) {
                // The job row is written with its leases, so it is the truth; an open lease
                // under a "queued" row can only mean the row is older.
                if l.is_open() && rec.state == JobState::Queued {
                    rec.state = JobState::Running;
                    rec.started_ms = Some(l.start_ms);
                }
            } else if let (Some(e), Some(r)) = (l.end_ms, l.end_reason)
                && rec.state == JobState::Running
            {
                rec.state = JobState::ended(r);
                rec.ended_ms = Some(e);
                rec.end_reason = Some(r);
            }
        }
        // Jobs still waiting go back into the queue in their original order.
        let mut waiting: Vec<&JobRecord> = jobs
            .values()
            .filter(|r| r.state == JobState::Queued)
            .collect();
        waiting.sort_by_key(|r| (r.submitted_ms, r.job.id));
        let mut alloc = alloc;
        // A GPU silent for the pay grace takes no new work (its leases stop paying too).
        alloc.view.heartbeat_timeout_ms = Some(duration_ms(pay_grace));
        // Price caps compare against the rate card in force.
        for (model, rate) in rates {
            let model = rigwatch_scheduler::gpu_models::canonical_or_same(model);
            if let Err(e) = alloc.view.set_model_rate(model, *rate) {
                warn!(model, error = %e, "price not applied to price caps");
            }
        }
        for rec in &waiting {
            alloc
                .requeue(rec.job.clone(), rec.submitted_ms)
                .map_err(|e| anyhow::anyhow!("requeueing job {}: {e}", rec.job.id))?;
        }
        let recent_shapes: Vec<Job> = waiting.iter().map(|r| r.job.clone()).collect();
        info!(
            leases = leases.len(),
            open = open.len(),
            queued = recent_shapes.len(),
            earnings_rows = n_entries,
            gpus = recent.len(),
            "allocator rebuilt from storage"
        );
        let svc = AllocService {
            state: Arc::new(Mutex::new(Inner {
                alloc,
                ledger,
                payouts,
                jobs,
                next_job,
                recent_shapes,
            })),
            db: db.clone(),
            extenders: Arc::default(),
            extender_ttl,
            currency,
            query: q,
            payout_lock: Arc::default(),
            outbox: Arc::default(),
            writer: Arc::default(),
            tasks: Arc::default(),
            pay_grace_ms: duration_ms(pay_grace),
            offline_after_ms: duration_ms(offline_after),
        };
        if !pending.is_empty() {
            // Rows found missing at start; a failure here leaves them to the first tick.
            let _ = svc.persist(pending).await;
        }
        svc.spawn_feeder();
        svc.spawn_ticker(tick);
        Ok(svc)
    }

    /// Keeps a task's handle so that [`AllocService::stop`] can stop it (finished ones are
    /// forgotten here).
    fn track(&self, task: rigwatch_common::task::Task<()>) {
        let mut tasks = self.tasks.lock();
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// Stops feeding, ticking and fault handling, then writes the rows still waiting (best
    /// effort: what cannot be written now is rebuilt from the stored leases at the next start).
    pub async fn stop(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock());
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        if let Err(error) = self.persist(WriteBatch::default()).await {
            warn!(%error, "allocator rows not written at shutdown");
        }
    }

    /// Writes the allocator's rows. The in-memory ledger and leases already moved on, so a
    /// batch that fails is kept and written again, before anything newer, on the next call
    /// (every tick calls): a failed write delays rows, it never loses a paid minute.
    ///
    /// `Ok` when every row so far, `batch` included, is durable; otherwise the storage
    /// error, and the rows wait in order for the next call.
    async fn persist(&self, batch: WriteBatch) -> Result<(), String> {
        self.queue_rows(batch);
        let _writer = self.writer.lock().await;
        loop {
            let Some(next) = self.outbox.lock().front().cloned() else {
                return Ok(());
            };
            match self
                .db
                .write(next, WriteOptions::singleton(Singleton::Stamped))
                .await
            {
                Ok(_) => {
                    self.outbox.lock().pop_front();
                }
                Err(e) => {
                    let waiting = self.outbox.lock().len();
                    warn!(error = %e, batches = waiting, "allocator rows not written yet; retried on the next tick");
                    return Err(e.to_string());
                }
            }
        }
    }

    /// Puts rows in the outbox, behind every earlier one, without waiting; the next
    /// [`AllocService::persist`] (every tick calls it) writes them.
    fn queue_rows(&self, batch: WriteBatch) {
        if !batch.is_empty() {
            self.outbox.lock().push_back(batch);
        }
    }

    /// Ends a job (queued or running) with `reason` and answers once its rows (closed
    /// leases, final earnings, the job's state) are durable. When they cannot be stored
    /// yet the job has ended all the same and its rows wait in order, written again every
    /// tick: [`EndError::NotStored`]; asking again confirms once they are in.
    pub async fn end_durable(&self, id: u64, reason: EndReason) -> Result<JobRecord, EndError> {
        let not_stored = |rec: &JobRecord, e: String| {
            EndError::NotStored(format!(
                "job {id} is {}, but its rows are not stored yet ({e}); they are written again \
                 every tick: repeat the request to confirm",
                rec.state
            ))
        };
        match self.end(id, reason) {
            Ok((rec, b)) => match self.persist(b).await {
                Ok(()) => Ok(rec),
                Err(e) => Err(not_stored(&rec, e)),
            },
            Err(e @ EndError::NotFound(_)) => Err(e),
            Err(e) => match self.job(id) {
                // The same end asked again while rows wait: a confirmation.
                Some(rec) if rec.end_reason == Some(reason) && !self.outbox.lock().is_empty() => {
                    match self.persist(WriteBatch::default()).await {
                        Ok(()) => Ok(rec),
                        Err(e) => Err(not_stored(&rec, e)),
                    }
                }
                _ => Err(e),
            },
        }
    }

    /// Every `gpu` row updates the live view: registration on first sight, last values,
    /// heartbeat.
    fn spawn_feeder(&self) {
        let mut rx = self.db.subscribe();
        let state = self.state.clone();
        self.track(rigwatch_common::task::spawn(async move {
            loop {
                let batch = match rx.recv().await {
                    Ok(b) => b,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        warn!(skipped = n, "live view lagged behind the write path");
                        continue;
                    }
                    Err(_) => return,
                };
                let received = now_ms();
                let mut st = state.lock();
                for row in batch.rows().filter(|r| r.table() == tables::GPU) {
                    let (mut sup, mut worker, mut uuid, mut model) = ("", "", "", "");
                    for (k, v) in row.tags() {
                        match k {
                            "supplier" => sup = v,
                            "worker" => worker = v,
                            "gpu_uuid" => uuid = v,
                            "model" => model = v,
                            _ => {}
                        }
                    }
                    if uuid.is_empty() {
                        continue;
                    }
                    let t = row.time().div_euclid(1_000_000);
                    let mut sample = Sample {
                        ts_ms: t,
                        utilization_pct: f32::NAN,
                        temperature_c: f32::NAN,
                        memory_free_mib: u32::MAX,
                    };
                    let mut mem_total = 0u32;
                    for (k, v) in row.fields() {
                        let x = match v {
                            FieldValue::F64(x) => x,
                            FieldValue::I64(x) => x as f64,
                            FieldValue::U64(x) => x as f64,
                            _ => continue,
                        };
                        match k {
                            "utilization" => sample.utilization_pct = x as f32,
                            "temperature" => sample.temperature_c = x as f32,
                            "memory_free_mib" => sample.memory_free_mib = x as u32,
                            "memory_total_mib" => mem_total = x as u32,
                            _ => {}
                        }
                    }
                    match st.alloc.view.gpu(uuid) {
                        None => {
                            register(&mut st.alloc.view, sup, worker, uuid, model, mem_total, t)
                        }
                        // A GPU is its supplier's: another supplier's row naming its UUID
                        // (only an admin can write one: agents' rows are checked against
                        // claims) never moves its heartbeat, load or pay.
                        Some(g) if st.alloc.view.suppliers()[g.supplier as usize].name != sup => {
                            continue;
                        }
                        Some(_) => {}
                    }
                    let _ = st.alloc.view.observe_sample(uuid, &sample);
                    let _ = st.alloc.view.heartbeat(uuid, t);
                    let _ = st.alloc.view.received(uuid, received);
                }
            }
        }));
    }

    /// Each tick: place queued jobs, accrue open leases, persist what changed.
    fn spawn_ticker(&self, tick: Duration) {
        let svc = self.clone();
        self.track(rigwatch_common::task::spawn(async move {
            let mut every = tokio::time::interval(tick);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                svc.expire_bindings(now_ms());
                let batch = svc.tick(now_ms());
                // Also when empty: rows a failed write left behind go out now.
                let _ = svc.persist(batch).await;
            }
        }));
    }

    /// Ends extender bindings not renewed within the time to live.
    fn expire_bindings(&self, now: i64) {
        let ttl = self.extender_ttl.as_millis().min(i64::MAX as u128) as i64;
        let clusters: Vec<Arc<ExtenderState>> = self.extenders.lock().values().cloned().collect();
        for c in clusters {
            let n = c.expire(now, ttl);
            if n > 0 {
                info!(
                    bindings = n,
                    "extender bindings lapsed without renewal: leases ended"
                );
            }
        }
    }

    /// One scheduling and accrual pass at `now`; the rows to persist.
    ///
    /// While rows of earlier changes wait in the outbox (the store refused them), nothing new
    /// is placed: a job must not start on a GPU whose lease could still be lost, which would
    /// leave its supplier unpaid for work done. Leases already open keep accruing (their
    /// minutes are re-accrued from the last durable row after a restart, exactly once).
    pub fn tick(&self, now: i64) -> WriteBatch {
        let mut b = WriteBatch::default();
        let backlog = !self.outbox.lock().is_empty();
        let mut st = self.state.lock();
        let st = &mut *st;
        let started = if backlog {
            Vec::new()
        } else {
            st.alloc.schedule(now)
        };
        for started in started {
            if let Some(rec) = st.jobs.get_mut(&started.job) {
                rec.state = JobState::Running;
                rec.started_ms = Some(now);
                rec.leases.extend(started.leases.iter().map(|l| l.lease_id));
                job_row(&mut b, rec);
            }
            for l in &started.leases {
                lease_row(&mut b, l);
            }
        }
        // Pay follows heartbeats: pause, resume or end leases on silent GPUs before accruing.
        let hb = st
            .alloc
            .check_heartbeats(now, self.pay_grace_ms, self.offline_after_ms, |g| {
                g.last_received_ms
            });
        for l in &hb.changed {
            lease_row(&mut b, l);
        }
        for l in &hb.ended {
            lease_row(&mut b, l);
            for e in st.ledger.accrue(l, now) {
                st.alloc.view.credit_supplier(&e.supplier, e.amount_micro);
                earnings_row(&mut b, &e);
            }
        }
        if !hb.ended_jobs.is_empty() {
            info!(jobs = ?hb.ended_jobs, "leases ended: their GPU went offline");
            requeue_lost(st, &hb.ended_jobs, EndReason::Offline, now, &mut b);
        }
        let open: Vec<Lease> = st.alloc.open_leases().cloned().collect();
        for l in &open {
            for e in st.ledger.accrue(l, now) {
                st.alloc.view.credit_supplier(&e.supplier, e.amount_micro);
                earnings_row(&mut b, &e);
            }
        }
        b
    }

    /// Queues a job and writes its row; it is acknowledged only once that row is durable, so
    /// an accepted job survives a crash. When the row cannot be written the job is taken out
    /// of the queue again and the error says so.
    pub async fn submit_durable(&self, req: &JobRequest) -> Result<JobRecord, SubmitError> {
        let rec = self.submit(req).map_err(SubmitError::Invalid)?;
        let mut b = WriteBatch::default();
        job_row(&mut b, &rec);
        if let Err(e) = self
            .db
            .write(b, WriteOptions::singleton(Singleton::Stamped))
            .await
        {
            let mut st = self.state.lock();
            st.alloc.dequeue(rec.job.id);
            st.jobs.remove(&rec.job.id);
            return Err(SubmitError::NotStored(format!(
                "job not accepted: its row could not be stored ({e}); nothing was queued"
            )));
        }
        Ok(rec)
    }

    /// Queues a job in memory (see [`AllocService::submit_durable`]).
    fn submit(&self, req: &JobRequest) -> Result<JobRecord, String> {
        let demand = req.demand()?;
        let now = now_ms();
        let mut st = self.state.lock();
        let id = st.next_job;
        let job = Job {
            id,
            demand,
            models: req.models.clone(),
            min_gpu_memory_mib: req.min_gpu_memory_mib,
            cpu_milli: 0,
            memory_mib: 0,
            priority: req.priority,
            expected_duration_ms: req.expected_duration_s.saturating_mul(1000),
            price_cap_micro_per_gpu_hour: req.price_cap_micro_per_gpu_hour,
        };
        st.alloc
            .submit(job.clone(), now)
            .map_err(|e| e.to_string())?;
        st.next_job += 1;
        st.recent_shapes.push(job.clone());
        if st.recent_shapes.len() > 512 {
            st.recent_shapes.drain(..256);
        }
        let dist = TaskDistribution::from_jobs(&st.alloc.view, st.recent_shapes.iter(), 32);
        st.alloc.set_distribution(dist);
        let rec = JobRecord {
            job,
            state: JobState::Queued,
            submitted_ms: now,
            started_ms: None,
            ended_ms: None,
            end_reason: None,
            leases: Vec::new(),
            restarts: 0,
        };
        st.jobs.insert(id, rec.clone());
        Ok(rec)
    }

    /// Ends a job (queued or running) with `reason`; the rows to persist.
    pub fn end(&self, id: u64, reason: EndReason) -> Result<(JobRecord, WriteBatch), EndError> {
        let now = now_ms();
        let mut st = self.state.lock();
        let st = &mut *st;
        let Some(rec) = st.jobs.get(&id).cloned() else {
            return Err(EndError::NotFound(format!("no job {id}")));
        };
        let mut b = WriteBatch::default();
        let next = rec
            .state
            .end(reason)
            .map_err(|why| EndError::Ended(format!("job {id} is {why}")))?;
        match rec.state {
            JobState::Queued => {
                st.alloc.dequeue(id);
            }
            JobState::Running => {
                let closed = st
                    .alloc
                    .finish(id, reason, now)
                    .map_err(|e| EndError::Ended(format!("job {id}: {e}")))?;
                for l in &closed {
                    lease_row(&mut b, l);
                    for e in st.ledger.accrue(l, now) {
                        st.alloc.view.credit_supplier(&e.supplier, e.amount_micro);
                        earnings_row(&mut b, &e);
                    }
                }
            }
            // `end` refused every other state above.
            _ => {}
        }
        let rec = st.jobs.get_mut(&id).expect("present");
        rec.state = next;
        rec.ended_ms = Some(now);
        rec.end_reason = Some(reason);
        job_row(&mut b, rec);
        Ok((rec.clone(), b))
    }

    /// A GPU failed in hardware: no new work on it, its leases end with that reason (paid up
    /// to the fault), and each job that ran on it goes back to the queue in its old place, up
    /// to [`MAX_FAULT_RESTARTS`] times, after which it ends as `failed`.
    pub async fn fault_gpu(&self, uuid: &str) {
        let now = now_ms();
        let b = {
            let mut st = self.state.lock();
            let st = &mut *st;
            let mut b = WriteBatch::default();
            if let Ok(closed) = st.alloc.fault_gpu(uuid, now) {
                let mut jobs = Vec::new();
                for l in &closed {
                    lease_row(&mut b, l);
                    for e in st.ledger.accrue(l, now) {
                        st.alloc.view.credit_supplier(&e.supplier, e.amount_micro);
                        earnings_row(&mut b, &e);
                    }
                    if !jobs.contains(&l.job_id) {
                        jobs.push(l.job_id);
                    }
                }
                requeue_lost(st, &jobs, EndReason::FaultHardware, now, &mut b);
            }
            b
        };
        if !b.is_empty() {
            let _ = self.persist(b).await;
        }
    }

    /// Queues a job and places it at once if it fits; its id.
    pub async fn submit_now(&self, req: &JobRequest) -> Result<u64, String> {
        let rec = self.submit_durable(req).await.map_err(|e| e.to_string())?;
        let b = self.tick(now_ms());
        if !b.is_empty() {
            let _ = self.persist(b).await;
        }
        Ok(rec.job.id)
    }

    /// Ends a job as completed, once its closed leases and final earnings are durable.
    pub async fn complete(&self, id: u64) -> Result<(), String> {
        self.end_durable(id, EndReason::Completed)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// (thousandths of a GPU leased, thousandths of capacity) over GPUs that can take work.
    pub fn allocation(&self) -> (u64, u64) {
        let st = self.state.lock();
        (st.alloc.view.used_milli(), st.alloc.view.capacity_milli())
    }

    /// Jobs waiting for room.
    pub fn queue_len(&self) -> usize {
        self.state.lock().alloc.queue_len()
    }

    /// Thousandths of `uuid` under lease (0 when idle; `None` for an unknown GPU).
    pub fn gpu_load(&self, uuid: &str) -> Option<u32> {
        self.state.lock().alloc.gpu_used_milli(uuid)
    }

    /// Sets a GPU's health (from fault detection).
    pub fn set_health(&self, uuid: &str, health: Health) {
        let _ = self.state.lock().alloc.view.set_health(uuid, health);
    }

    /// A health transition from fault detection: the live view takes the new state at once
    /// (no new leases on an unhealthy or offline GPU), and a hardware fault ends the GPU's
    /// leases with reason `fault_hardware` (paid up to the fault). Application faults
    /// (XID 13, 31, 43, ...) end nothing here: they are the job's, not the supplier's, and
    /// do not cut the supplier's pay.
    pub fn health_changed(&self, uuid: &str, health: Health, hardware: bool) {
        self.set_health(uuid, health);
        if hardware && matches!(health, Health::Unhealthy) {
            let svc = self.clone();
            let uuid = uuid.to_string();
            self.track(rigwatch_common::task::spawn(async move {
                svc.fault_gpu(&uuid).await
            }));
        }
    }

    pub fn jobs(&self) -> Vec<JobRecord> {
        self.state.lock().jobs.values().cloned().collect()
    }

    pub fn job(&self, id: u64) -> Option<JobRecord> {
        self.state.lock().jobs.get(&id).cloned()
    }

    /// The jobs routes.
    pub fn router(&self) -> Router {
        http::router(self.clone())
    }
}

/// Jobs whose leases ended for the GPU's sake (`reason`: a hardware fault, or the GPU went
/// offline), not the renter's: each goes back to the queue in its old place, up to
/// [`MAX_FAULT_RESTARTS`] times, after which it ends as `failed`. Their rows go to `b`.
fn requeue_lost(st: &mut Inner, jobs: &[u64], reason: EndReason, now: i64, b: &mut WriteBatch) {
    for &id in jobs {
        let Some(rec) = st.jobs.get_mut(&id) else {
            continue;
        };
        let Some(next) = rec.state.after_gpu_lost(rec.restarts) else {
            continue;
        };
        if next == JobState::Queued && st.alloc.requeue(rec.job.clone(), rec.submitted_ms).is_ok() {
            rec.restarts += 1;
            rec.state = JobState::Queued;
            rec.started_ms = None;
            info!(job = id, restarts = rec.restarts, reason = ?reason, "job requeued");
        } else {
            rec.state = JobState::Failed;
            rec.ended_ms = Some(now);
            rec.end_reason = Some(reason);
        }
        job_row(b, rec);
    }
}

fn register(
    view: &mut LiveView,
    supplier: &str,
    worker: &str,
    uuid: &str,
    model: &str,
    mem_mib: u32,
    now: i64,
) {
    let node = node_name(supplier, worker);
    if view.node_index(&node).is_none() {
        view.add_node(NodeSpec {
            name: node.clone(),
            supplier: supplier.to_string(),
            cpu_milli: 0,
            memory_mib: 0,
        });
    }
    if let Err(e) = view.add_gpu(
        GpuSpec {
            uuid: uuid.to_string(),
            node,
            model: if model.is_empty() {
                "unknown".into()
            } else {
                model.to_string()
            },
            memory_total_mib: mem_mib,
        },
        now,
    ) {
        warn!(gpu = uuid, error = %e, "GPU not added to the live view");
    }
}

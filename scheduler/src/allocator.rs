//! Jobs, the queue and leases.
//!
//! # Queue rule
//!
//! Jobs wait in one queue ordered by *effective priority* (highest first), then by submit
//! time (FIFO; a job put back with [`Allocator::requeue`] keeps its original time). Effective priority is the submitted priority plus one for every
//! [`AllocatorConfig::aging_ms`] the job has waited, so a low-priority job eventually
//! outranks any fixed priority. A pass ([`Allocator::schedule`]) tries the jobs in that
//! order and backfills with a reservation (EASY backfilling, [`reserve`]): the first job that
//! does not fit holds the node where it will fit soonest, given the running jobs' expected
//! durations; jobs behind it start anywhere else, and on that node only if they are expected
//! to end before the held time, so backfilling never delays it. When no node can be held
//! (the jobs in the way declared no duration) the old guard applies: a skipped job that has
//! waited [`AllocatorConfig::starvation_ms`] or more stops the pass, so capacity freed by
//! departures accumulates for it. A large job therefore cannot starve.
//!
//! # Leases
//!
//! A placement creates one [`Lease`] per GPU, with the job's share. Ending a job
//! (completion, cancel, fault, preemption) closes all its leases and returns their shares
//! and host resources. Closed leases are handed to the caller (for the ledger and the
//! store); [`Allocator::rebuild`] restores running jobs from the open lease rows.

pub mod reserve;

use std::collections::{HashMap, HashSet};

use crate::frag::TaskDistribution;
use crate::model::{EndReason, GpuDemand, Health, Job, JobId, Lease, LeaseId, Milli, WHOLE_GPU};
use crate::policy::{self, Placement, Policy};
use crate::view::{GpuIdx, GpuState, LiveView, NodeIdx};
use crate::{Error, Result};

/// Tunables of the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocatorConfig {
    /// Waiting this long raises a job's effective priority by one.
    pub aging_ms: i64,
    /// A job that has waited this long blocks backfilling behind it.
    pub starvation_ms: i64,
    /// Most queued jobs one pass tries (bounds the cost of a pass on a long queue).
    pub max_attempts_per_pass: usize,
    /// EASY backfilling: the first job of a pass that does not fit reserves the node where
    /// it fits soonest (by running jobs' expected durations), and later jobs use that node
    /// only if they are expected to end before ([`reserve`]). Off: plain backfilling.
    pub reserve: bool,
}

impl Default for AllocatorConfig {
    fn default() -> Self {
        AllocatorConfig {
            aging_ms: 10 * 60_000,
            starvation_ms: 60 * 60_000,
            max_attempts_per_pass: 256,
            reserve: true,
        }
    }
}

/// A job that just started, with its new leases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Started {
    pub job: JobId,
    pub node: String,
    pub leases: Vec<Lease>,
    pub waited_ms: i64,
}

/// What [`Allocator::check_heartbeats`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeartbeatChanges {
    /// Open leases paused or resumed (rewrite their rows).
    pub changed: Vec<Lease>,
    /// Leases closed with `Offline` (with every other lease of their jobs).
    pub ended: Vec<Lease>,
    /// The jobs those leases belonged to.
    pub ended_jobs: Vec<JobId>,
}

type ShapeKey = (GpuDemand, u32, u64, u32, Option<i64>, Vec<String>);

fn shape_key(j: &Job) -> ShapeKey {
    (
        j.demand,
        j.cpu_milli,
        j.memory_mib,
        j.min_gpu_memory_mib,
        j.price_cap_micro_per_gpu_hour,
        j.models.clone(),
    )
}

#[derive(Debug)]
struct Queued {
    job: Job,
    submitted_ms: i64,
    seq: u64,
}

#[derive(Debug)]
struct Running {
    job: Job,
    node: NodeIdx,
    leases: Vec<(LeaseId, GpuIdx)>,
    started_ms: i64,
    /// Expected earnings booked to the node's supplier ([`LiveView::book_supplier`]).
    booked_micro: i64,
}

/// The allocator: live view + policy + queue + open leases.
#[derive(Debug)]
pub struct Allocator {
    pub view: LiveView,
    policy: Box<dyn Policy>,
    dist: TaskDistribution,
    config: AllocatorConfig,
    queue: Vec<Queued>,
    running: HashMap<JobId, Running>,
    open: HashMap<LeaseId, Lease>,
    next_lease: LeaseId,
    next_seq: u64,
    /// The last reservation and the job it is for, reused while it can still be met
    /// ([`Allocator::schedule`]).
    held: Option<(JobId, reserve::Reservation)>,
    /// Set when capacity came back other than as expected (a job ended early, a GPU
    /// failed): the reservation is computed again.
    replan: bool,
}

impl Allocator {
    pub fn new(
        view: LiveView,
        policy: Box<dyn Policy>,
        dist: TaskDistribution,
        config: AllocatorConfig,
    ) -> Allocator {
        Allocator {
            view,
            policy,
            dist,
            config,
            queue: Vec::new(),
            running: HashMap::new(),
            open: HashMap::new(),
            next_lease: 1,
            next_seq: 0,
            held: None,
            replan: true,
        }
    }

    /// Restores an allocator from persisted lease rows: every open row becomes a lease of a
    /// running job again. Identical duplicate rows are merged; two different rows with one
    /// lease id, or rows that would put more than 1000 thousandths on a GPU, are errors
    /// (never a double lease). Host CPU/memory of restored jobs is not in the rows and is
    /// not reserved. Queued jobs are not persisted and must be resubmitted.
    pub fn rebuild(
        view: LiveView,
        policy: Box<dyn Policy>,
        dist: TaskDistribution,
        config: AllocatorConfig,
        rows: &[Lease],
    ) -> Result<Allocator> {
        let mut a = Allocator::new(view, policy, dist, config);
        let mut seen: HashMap<LeaseId, &Lease> = HashMap::new();
        for row in rows {
            a.next_lease = a.next_lease.max(row.lease_id + 1);
            match seen.get(&row.lease_id) {
                Some(prev) if *prev == row => continue,
                Some(_) => {
                    return Err(Error::ConflictingLeaseRows {
                        lease: row.lease_id,
                    });
                }
                None => {
                    seen.insert(row.lease_id, row);
                }
            }
            if !row.is_open() {
                continue;
            }
            let g = a
                .view
                .gpu_index(&row.gpu_uuid)
                .ok_or_else(|| Error::UnknownGpu {
                    uuid: row.gpu_uuid.clone(),
                })?;
            let gpu = &a.view.gpus[g as usize];
            if gpu.used_milli + row.share_milli > WHOLE_GPU {
                return Err(Error::OverAllocatedOnRebuild {
                    uuid: row.gpu_uuid.clone(),
                    lease: row.lease_id,
                    total_milli: gpu.used_milli + row.share_milli,
                });
            }
            let node = gpu.node;
            a.view.take_share(g, row.lease_id, row.share_milli);
            let r = a.running.entry(row.job_id).or_insert_with(|| Running {
                job: Job::new(row.job_id, GpuDemand::None),
                node,
                leases: Vec::new(),
                started_ms: row.start_ms,
                booked_micro: 0,
            });
            r.leases.push((row.lease_id, g));
            a.open.insert(row.lease_id, row.clone());
        }
        for r in a.running.values_mut() {
            let share = r.leases.first().map_or(0, |&(l, _)| a.open[&l].share_milli);
            r.job.demand = if share < WHOLE_GPU {
                GpuDemand::Fraction(share as u16)
            } else {
                GpuDemand::Whole(r.leases.len() as u8)
            };
        }
        Ok(a)
    }

    pub fn policy_name(&self) -> &'static str {
        self.policy.name()
    }
    pub fn distribution(&self) -> &TaskDistribution {
        &self.dist
    }
    pub fn set_distribution(&mut self, dist: TaskDistribution) {
        self.dist = dist;
    }
    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }
    pub fn running_jobs(&self) -> usize {
        self.running.len()
    }
    /// Open leases (persist these rows).
    pub fn open_leases(&self) -> impl Iterator<Item = &Lease> {
        self.open.values()
    }

    fn check_new(&self, job: &Job) -> Result<()> {
        job.demand.validate(job.id)?;
        if self.running.contains_key(&job.id) || self.queue.iter().any(|q| q.job.id == job.id) {
            return Err(Error::DuplicateJob { job: job.id });
        }
        Ok(())
    }

    /// Where `job` would go now, without taking anything (None: does not fit).
    pub fn plan(
        &mut self,
        job: &Job,
        now_ms: i64,
        only_node: Option<NodeIdx>,
    ) -> Option<(Placement, f64)> {
        policy::choose(
            &self.view,
            &self.dist,
            self.policy.as_mut(),
            job,
            now_ms,
            only_node,
        )
    }

    /// Places `job` immediately if it fits (no queueing); `Ok(None)` if it does not.
    pub fn try_start(&mut self, job: Job, now_ms: i64) -> Result<Option<Started>> {
        self.check_new(&job)?;
        Ok(self
            .plan(&job, now_ms, None)
            .map(|(p, _)| self.commit(job, p, now_ms, 0)))
    }

    /// Places `job` on `node` if it fits there (the extender's bind).
    pub fn try_start_on(
        &mut self,
        job: Job,
        node: NodeIdx,
        now_ms: i64,
    ) -> Result<Option<Started>> {
        self.check_new(&job)?;
        Ok(self
            .plan(&job, now_ms, Some(node))
            .map(|(p, _)| self.commit(job, p, now_ms, 0)))
    }

    /// Whether `job` would fit some node if the fleet were empty and healthy (model,
    /// memory, price cap, GPU count and host capacity).
    pub fn could_ever_fit(&self, job: &Job) -> bool {
        let models = self.view.model_set(&job.models);
        let v = &self.view;
        v.nodes.iter().any(|n| {
            let host = (n.cpu_total_milli == 0 || job.cpu_milli <= n.cpu_total_milli)
                && (n.memory_total_mib == 0 || job.memory_mib <= n.memory_total_mib);
            let ok = n
                .gpus
                .iter()
                .filter(|&&g| {
                    let gpu = &v.gpus[g as usize];
                    models.contains(gpu.model)
                        && gpu.memory_total_mib >= job.min_gpu_memory_mib
                        && job.price_cap_micro_per_gpu_hour.is_none_or(|c| {
                            v.models[usize::from(gpu.model)].price_micro_per_gpu_hour <= c
                        })
                })
                .count();
            host && ok >= job.demand.gpu_count()
        })
    }

    /// Queues `job`; it starts in a later [`Allocator::schedule`] pass. A job that could not
    /// fit even an empty fleet is refused ([`Error::Unplaceable`]) instead of queueing forever.
    pub fn submit(&mut self, job: Job, now_ms: i64) -> Result<()> {
        self.check_new(&job)?;
        if !self.could_ever_fit(&job) {
            return Err(Error::Unplaceable { job: job.id });
        }
        self.queue.push(Queued {
            job,
            submitted_ms: now_ms,
            seq: self.next_seq,
        });
        self.next_seq += 1;
        Ok(())
    }

    /// Puts back a job that was queued before a restart, with its original submit time (so
    /// its aging and its place in the queue carry over). Unlike [`Allocator::submit`] it is not
    /// refused when the fleet seen so far could not hold it: the GPUs it waits for may simply
    /// not have reported since the restart.
    pub fn requeue(&mut self, job: Job, submitted_ms: i64) -> Result<()> {
        self.check_new(&job)?;
        self.queue.push(Queued {
            job,
            submitted_ms,
            seq: self.next_seq,
        });
        self.next_seq += 1;
        Ok(())
    }

    /// Removes a queued job that has not started.
    pub fn dequeue(&mut self, job: JobId) -> Option<Job> {
        let i = self.queue.iter().position(|q| q.job.id == job)?;
        Some(self.queue.remove(i).job)
    }

    /// One pass over the queue following the queue rule (module docs).
    pub fn schedule(&mut self, now_ms: i64) -> Vec<Started> {
        let aging = self.config.aging_ms.max(1);
        let eff = |q: &Queued| i64::from(q.job.priority) + (now_ms - q.submitted_ms).max(0) / aging;
        // Ties go to the earlier submission, so a requeued job keeps its old place.
        self.queue.sort_by(|a, b| {
            eff(b)
                .cmp(&eff(a))
                .then(a.submitted_ms.cmp(&b.submitted_ms))
                .then(a.seq.cmp(&b.seq))
        });
        let mut started = Vec::new();
        let mut attempts = 0;
        // Placements only take capacity, so a shape that failed once fails for the rest of
        // the pass (with the same node held back): remember failed shapes, skip their twins.
        let mut failed: HashSet<(ShapeKey, bool)> = HashSet::new();
        let queue = std::mem::take(&mut self.queue);
        let mut rest = Vec::with_capacity(queue.len());
        let mut stop = false;
        let mut held: Option<reserve::Reservation> = None;
        let mut reserved = false;
        for q in queue {
            if stop || attempts >= self.config.max_attempts_per_pass {
                rest.push(q);
                continue;
            }
            let except = held
                .filter(|r| !r.allows(now_ms, q.job.expected_duration_ms))
                .map(|r| r.node);
            let key = (shape_key(&q.job), except.is_some());
            let starved = now_ms - q.submitted_ms >= self.config.starvation_ms;
            if failed.contains(&key) {
                stop = starved && held.is_none();
                rest.push(q);
                continue;
            }
            attempts += 1;
            let plan = match except {
                None => policy::choose(
                    &self.view,
                    &self.dist,
                    self.policy.as_mut(),
                    &q.job,
                    now_ms,
                    None,
                ),
                Some(n) => policy::choose_except(
                    &self.view,
                    &self.dist,
                    self.policy.as_mut(),
                    &q.job,
                    now_ms,
                    n,
                ),
            };
            match plan {
                Some((p, _)) => {
                    let waited = now_ms - q.submitted_ms;
                    started.push(self.commit(q.job, p, now_ms, waited));
                }
                None => {
                    // The first job that does not fit holds the node where it fits soonest.
                    if self.config.reserve && !reserved {
                        reserved = true;
                        held = self.reservation(&q.job, now_ms);
                    }
                    stop = starved && held.is_none();
                    failed.insert(key);
                    rest.push(q);
                }
            }
        }
        self.queue = rest;
        started
    }

    /// The reservation for `job`: the last one while it is for the same job, its time is
    /// still ahead and nothing came back unexpectedly (with exact durations, starts elsewhere
    /// or ending before the held time cannot move it); otherwise computed again.
    fn reservation(&mut self, job: &Job, now_ms: i64) -> Option<reserve::Reservation> {
        if !self.replan
            && let Some((j, r)) = self.held
            && j == job.id
            && r.at_ms > now_ms
        {
            return Some(r);
        }
        self.replan = false;
        let r = reserve::earliest(&self.view, job, now_ms, &self.releases());
        self.held = r.map(|r| (job.id, r));
        r
    }

    /// Running jobs as reservations see them, sorted by node then expected end (a job
    /// without a declared duration never ends).
    fn releases(&self) -> Vec<reserve::Release> {
        let mut out: Vec<reserve::Release> = self
            .running
            .values()
            .map(|r| reserve::Release {
                node: r.node,
                end_ms: match i64::try_from(r.job.expected_duration_ms) {
                    Ok(d) if d > 0 => r.started_ms.saturating_add(d),
                    _ => i64::MAX,
                },
                cpu_milli: r.job.cpu_milli,
                memory_mib: r.job.memory_mib,
                shares: r
                    .leases
                    .iter()
                    .map(|&(l, g)| (g, self.open.get(&l).map_or(0, |l| l.share_milli)))
                    .collect(),
            })
            .collect();
        out.sort_by_key(|r| (r.node, r.end_ms));
        out
    }

    fn commit(&mut self, job: Job, p: Placement, now_ms: i64, waited_ms: i64) -> Started {
        let node = p.node;
        self.view.take_host(node, job.cpu_milli, job.memory_mib);
        // Expected earnings (rate × share × expected duration, one hour if none declared),
        // booked to the supplier while the job runs: what fairness steering evens out.
        let hours = match job.expected_duration_ms {
            0 => 1.0,
            ms => ms as f64 / 3_600_000.0,
        };
        let booked_micro: i64 = p
            .gpus
            .iter()
            .map(|&(g, share)| {
                let rate = self.view.models[usize::from(self.view.gpus[g as usize].model)]
                    .price_micro_per_gpu_hour;
                (rate as f64 * f64::from(share) / f64::from(WHOLE_GPU) * hours) as i64
            })
            .sum();
        self.view.book_supplier(node, booked_micro);
        let node_name = self.view.nodes[node as usize].name.clone();
        let supplier = self.view.suppliers[self.view.nodes[node as usize].supplier as usize]
            .name
            .clone();
        let mut leases = Vec::with_capacity(p.gpus.len());
        let mut ids = Vec::with_capacity(p.gpus.len());
        for (g, share) in p.gpus {
            let id = self.next_lease;
            self.next_lease += 1;
            self.view.take_share(g, id, share);
            let gpu = &self.view.gpus[g as usize];
            let lease = Lease {
                lease_id: id,
                job_id: job.id,
                gpu_uuid: gpu.uuid.clone(),
                node: node_name.clone(),
                supplier: supplier.clone(),
                model: self.view.model_name(gpu.model).to_owned(),
                share_milli: share,
                start_ms: now_ms,
                end_ms: None,
                end_reason: None,
                unpaid: Vec::new(),
            };
            self.open.insert(id, lease.clone());
            leases.push(lease);
            ids.push((id, g));
        }
        let id = job.id;
        self.running.insert(
            id,
            Running {
                job,
                node,
                leases: ids,
                started_ms: now_ms,
                booked_micro,
            },
        );
        Started {
            job: id,
            node: node_name,
            leases,
            waited_ms,
        }
    }

    /// Ends a running job: closes its leases with `reason` and returns them (a lease paused
    /// for silence has its pause closed at the end).
    pub fn finish(&mut self, job: JobId, reason: EndReason, now_ms: i64) -> Result<Vec<Lease>> {
        let r = self.running.remove(&job).ok_or(Error::UnknownJob { job })?;
        self.view
            .return_host(r.node, r.job.cpu_milli, r.job.memory_mib);
        self.view.book_supplier(r.node, -r.booked_micro);
        let expected_end = i64::try_from(r.job.expected_duration_ms)
            .map_or(i64::MAX, |d| r.started_ms.saturating_add(d));
        if r.job.expected_duration_ms == 0 || now_ms < expected_end {
            self.replan = true;
        }
        let mut closed = Vec::with_capacity(r.leases.len());
        for (id, g) in r.leases {
            self.view.return_share(g, id);
            if let Some(mut l) = self.open.remove(&id) {
                let end = now_ms.max(l.start_ms);
                l.end_ms = Some(end);
                l.end_reason = Some(reason);
                if let Some(last) = l.unpaid.last_mut().filter(|u| u.1 == i64::MAX) {
                    last.1 = end.max(last.0);
                }
                closed.push(l);
            }
        }
        Ok(closed)
    }

    /// A GPU failed: marks it unhealthy and ends every job with a lease on it
    /// (`FaultHardware`). The caller decides whether to resubmit those jobs.
    pub fn fault_gpu(&mut self, uuid: &str, now_ms: i64) -> Result<Vec<Lease>> {
        self.replan = true;
        self.view.set_health(uuid, Health::Unhealthy)?;
        let g = self.view.gpu_index(uuid).ok_or_else(|| Error::UnknownGpu {
            uuid: uuid.to_owned(),
        })?;
        let jobs: Vec<JobId> = self.view.gpus[g as usize]
            .leases
            .iter()
            .map(|&(l, _)| self.open[&l].job_id)
            .collect();
        let mut closed = Vec::new();
        for j in jobs {
            if self.running.contains_key(&j) {
                closed.extend(self.finish(j, EndReason::FaultHardware, now_ms)?);
            }
        }
        Ok(closed)
    }

    /// Pay follows heartbeats: a lease whose GPU has sent nothing for `grace_ms` stops
    /// accruing from `last + grace_ms` (an open unpaid interval) and resumes at `now_ms` once
    /// the GPU is heard again; a GPU silent for `end_after_ms` ends its jobs with reason
    /// `Offline` (the silent lease is unpaid from its pause on; the job's other leases are
    /// paid to `now_ms`). `last_heard` gives a GPU's last heartbeat as the server received
    /// it. Returns the leases whose row changed and the jobs that ended.
    pub fn check_heartbeats(
        &mut self,
        now_ms: i64,
        grace_ms: i64,
        end_after_ms: i64,
        last_heard: impl Fn(&GpuState) -> i64,
    ) -> HeartbeatChanges {
        let mut out = HeartbeatChanges::default();
        let mut offline_jobs = Vec::new();
        for l in self.open.values_mut() {
            let Some(g) = self.view.gpu(&l.gpu_uuid) else {
                continue;
            };
            let heard = last_heard(g).max(l.start_ms);
            let silent = now_ms - heard;
            if silent > grace_ms {
                if !l.is_paused() {
                    // Pay stops where the grace ran out (never before what is accrued: the
                    // caller checks every tick, so that is at most a tick ago).
                    l.unpaid.push(((heard + grace_ms).min(now_ms), i64::MAX));
                    out.changed.push(l.clone());
                }
                if silent > end_after_ms && !offline_jobs.contains(&l.job_id) {
                    offline_jobs.push(l.job_id);
                }
            } else if l.is_paused() {
                if let Some(last) = l.unpaid.last_mut() {
                    last.1 = now_ms.max(last.0);
                }
                out.changed.push(l.clone());
            }
        }
        for job in offline_jobs {
            if let Ok(closed) = self.finish(job, EndReason::Offline, now_ms) {
                out.changed.retain(|c| c.job_id != job);
                out.ended.extend(closed);
                out.ended_jobs.push(job);
            }
        }
        out
    }

    /// Total share leased on GPU `uuid` (for checks).
    pub fn gpu_used_milli(&self, uuid: &str) -> Option<Milli> {
        self.view.gpu(uuid).map(|g| g.used_milli)
    }
}

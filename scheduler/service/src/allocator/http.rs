//! The allocator's HTTP routes: jobs, the Kubernetes extender, earnings and payouts.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rigwatch_common::http_error::{ErrorBody, error_response};
use rigwatch_scheduler::extender::{AllocatorHost, ExtenderState, extender_router, system_clock};
use rigwatch_scheduler::{Allocator, EndReason, GpuDemand, Job, Lease};
use rigwatch_storage::auth::Principal;
use rigwatch_storage::batch::WriteBatch;
use tracing::warn;

use super::earnings;
use super::rows::{job_row, lease_row, node_name};
use super::{AllocService, JobRecord, JobRequest, now_ms};

/// Every route of the allocator service.
pub(super) fn router(svc: AllocService) -> Router {
    Router::new()
        .route("/api/v1/jobs", get(list_jobs).post(submit_job))
        .route("/api/v1/jobs/{id}", get(get_job).delete(cancel_job))
        .route("/api/v1/jobs/{id}/complete", post(complete_job))
        .route("/k8s/{token}/{op}", post(k8s_extender))
        .route("/api/v1/earnings/statements", get(earnings::statements))
        .route("/api/v1/earnings/live", get(earnings::live))
        .route(
            "/api/v1/payouts",
            get(earnings::list_payouts).post(earnings::post_payout),
        )
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(svc)
}

/// The extender's view of the live allocator for one supplier's cluster: Kubernetes node
/// names are that supplier's worker names, and `/bind`'s leases are persisted like any other.
struct ExtenderHost {
    svc: AllocService,
    supplier: String,
}

impl AllocatorHost for ExtenderHost {
    fn with_allocator(&self, f: &mut dyn FnMut(&mut Allocator)) {
        f(&mut self.svc.state.lock().alloc);
    }

    fn leases_started(&self, leases: &[Lease]) {
        let mut b = WriteBatch::default();
        for l in leases {
            lease_row(&mut b, l);
        }
        // The binding is a job like any other: listed, completed or cancelled through the
        // jobs API, and its row written with its leases.
        if let Some(first) = leases.first() {
            let mut st = self.svc.state.lock();
            let mut job = Job::new(first.job_id, GpuDemand::Whole(leases.len().min(8) as u8));
            if leases.len() == 1 && first.share_milli < 1000 {
                job.demand = GpuDemand::Fraction(first.share_milli as u16);
            }
            let rec = JobRecord {
                job,
                state: rigwatch_scheduler::JobState::Running,
                submitted_ms: first.start_ms,
                started_ms: Some(first.start_ms),
                ended_ms: None,
                end_reason: None,
                leases: leases.iter().map(|l| l.lease_id).collect(),
                restarts: 0,
            };
            job_row(&mut b, &rec);
            st.jobs.insert(first.job_id, rec);
        }
        // Queued in order; `/bind` answers after `durable` has written it.
        self.svc.queue_rows(b);
    }

    fn durable(&self) -> rigwatch_scheduler::extender::DurableFuture<'_> {
        Box::pin(self.svc.persist(WriteBatch::default()))
    }

    fn node_key(&self, name: &str) -> String {
        node_name(&self.supplier, name)
    }

    fn job_id(&self, _uid: &str) -> u64 {
        // From the server's own sequence: ids of different suppliers' clusters, and of jobs
        // submitted through the API, never collide.
        let mut st = self.svc.state.lock();
        let id = st.next_job;
        st.next_job += 1;
        id
    }

    fn job_ended(&self, job: u64, reason: EndReason, _now_ms: i64) {
        match self.svc.end(job, reason) {
            // Queued in order; `/unbind` answers after `durable`, a lapsed binding's rows go
            // out with the next tick.
            Ok((_, b)) => self.svc.queue_rows(b),
            Err(e) => warn!(job, error = %e, "extender binding ended, but its job could not be"),
        }
    }
}

/// The one error body ([`rigwatch_common::http_error`]) with `status`.
pub(super) fn err(status: StatusCode, msg: impl Into<String>) -> Response {
    ErrorBody::for_status(status, msg).response(status)
}

async fn list_jobs(State(svc): State<AllocService>) -> Response {
    Json(serde_json::json!({"status": "success", "data": svc.jobs()})).into_response()
}

async fn get_job(State(svc): State<AllocService>, Path(id): Path<u64>) -> Response {
    match svc.job(id) {
        Some(j) => Json(serde_json::json!({"status": "success", "data": j})).into_response(),
        None => err(StatusCode::NOT_FOUND, format!("no job {id}")),
    }
}

async fn submit_job(State(svc): State<AllocService>, body: axum::body::Bytes) -> Response {
    let req: JobRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("bad job JSON: {e}")),
    };
    match svc.submit_durable(&req).await {
        Ok(rec) => {
            // Place at once rather than waiting for the next tick.
            let b = svc.tick(now_ms());
            if !b.is_empty() {
                let _ = svc.persist(b).await;
            }
            let rec = svc.job(rec.job.id).unwrap_or(rec);
            (
                StatusCode::CREATED,
                Json(serde_json::json!({"status": "success", "data": rec})),
            )
                .into_response()
        }
        Err(e) => error_response(&e),
    }
}

/// Answers once the job's end is durable: 503 with `Retry-After` while its rows cannot be
/// stored (the job has ended; the same request again confirms once they are in).
async fn end_job(svc: AllocService, id: u64, reason: EndReason) -> Response {
    match svc.end_durable(id, reason).await {
        Ok(rec) => Json(serde_json::json!({"status": "success", "data": rec})).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn cancel_job(State(svc): State<AllocService>, Path(id): Path<u64>) -> Response {
    end_job(svc, id, EndReason::Cancelled).await
}

async fn complete_job(State(svc): State<AllocService>, Path(id): Path<u64>) -> Response {
    end_job(svc, id, EndReason::Completed).await
}

/// `POST /k8s/<token>/{filter,prioritize,bind,unbind,renew}`: kube-scheduler's extender
/// calls (and the in-cluster controller's) for the extender token's supplier, answered by
/// the live allocator over that supplier's GPUs.
async fn k8s_extender(
    State(svc): State<AllocService>,
    principal: Option<axum::extract::Extension<Principal>>,
    Path((_token, op)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    use tower::ServiceExt as _;
    let Some(supplier) = principal.and_then(|p| p.0.scope().map(str::to_string)) else {
        return err(
            StatusCode::FORBIDDEN,
            "the extender needs an extender token",
        );
    };
    let state = svc
        .extenders
        .lock()
        .entry(supplier.clone())
        .or_insert_with(|| {
            ExtenderState::with_host(
                Box::new(ExtenderHost {
                    svc: svc.clone(),
                    supplier,
                }),
                system_clock,
            )
        })
        .clone();
    let req = match axum::http::Request::post(format!("/{op}"))
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from(body))
    {
        Ok(r) => r,
        Err(e) => return err(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match extender_router(state).oneshot(req).await {
        Ok(r) => r.into_response(),
        Err(e) => match e {},
    }
}

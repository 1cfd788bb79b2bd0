//! `POST /api/v1/agent/register` and `DELETE /api/v1/agent/gpus/{uuid}`: the routes that
//! change who owns what (workers, GPU claims).
//!
//! A registration is checked as a whole before anything of it is stored: the size of the
//! request, every GPU's UUID, the GPUs claimed by other suppliers (409, recorded as a
//! security event), then the supplier's caps. It then stores the `gpu_inventory` rows,
//! claims the GPUs and records the worker, in that order, each durably; a registration or
//! release holds `Shared::changing` throughout, so nothing checked can change under it.

use rigwatch_common::gpu_model;
use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rigwatch_storage::auth::{Role, validate_supplier_name};
use rigwatch_storage::batch::{FieldValue, WriteBatch};
use tracing::{info, warn};

use super::{
    Claim, ClaimError, REPORT_EVERY_NS, REPORTED_MAX, Reject, SECURITY_EVENT_TABLE, Shared,
    WorkerRecord, agent_supplier, authenticate, error, now_ns, reject, reject_kind, store,
    validate_uuid,
};
use crate::agent::transport::Registration;

/// A 409 for a cap, naming it, its flag and its variable.
fn over_limit(what: String, flag: &str) -> Reject {
    let env = format!(
        "RIGWATCH_{}",
        flag.trim_start_matches("--")
            .replace('-', "_")
            .to_uppercase()
    );
    reject_kind(
        StatusCode::CONFLICT,
        "limit",
        format!(
            "{what}; nothing of this registration was stored (the operator sets the limit with \
             `rigwatch serve {flag}` or {env})"
        ),
    )
}

/// Checks the registration's list of GPUs on its own: its length and every UUID.
fn check_gpus(shared: &Shared, reg: &Registration) -> Result<(), Reject> {
    let limits = shared.state.limits;
    if reg.gpus.len() > limits.max_gpus_per_registration {
        return Err(over_limit(
            format!(
                "the registration lists {} GPUs; one registration may list at most {}",
                reg.gpus.len(),
                limits.max_gpus_per_registration
            ),
            "--max-gpus-per-registration",
        ));
    }
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(reg.gpus.len());
    for (i, g) in reg.gpus.iter().enumerate() {
        if let Err(e) = validate_uuid(&g.uuid) {
            return Err(reject(StatusCode::BAD_REQUEST, format!("gpus[{i}]: {e}")));
        }
        if let Some(first) = seen.insert(&g.uuid, i) {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                format!("gpus[{i}] repeats the uuid `{}` of gpus[{first}]", g.uuid),
            ));
        }
        // The model drives price and limits: what NVML reports must be one GPU. An "H100"
        // with 24 GiB is not an H100.
        if let Some(f) = gpu_model::lookup(&g.model)
            && f.memory_contradicts(g.memory_total_mib)
        {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                format!(
                    "gpus[{i}]: model `{}` is a {} ({} to {} MiB), but memory_total_mib is {}: the name and the memory NVML reports must agree",
                    g.model, f.name, f.min_memory_mib, f.memory_mib, g.memory_total_mib
                ),
            ));
        }
    }
    Ok(())
}

/// Checks the supplier's caps: workers and GPUs held after this registration.
fn check_caps(shared: &Shared, supplier: &str, reg: &Registration) -> Result<(), Reject> {
    let limits = shared.state.limits;
    if !shared.registry.contains(supplier, &reg.worker) {
        let workers = shared.registry.count(supplier);
        if workers >= limits.max_workers_per_supplier {
            return Err(over_limit(
                format!(
                    "supplier `{supplier}` has {workers} registered workers, the most allowed \
                     ({}), so worker `{}` cannot be added",
                    limits.max_workers_per_supplier, reg.worker
                ),
                "--max-workers-per-supplier",
            ));
        }
    }
    let uuids: Vec<&str> = reg.gpus.iter().map(|g| g.uuid.as_str()).collect();
    let new = shared.claims.new_for(supplier, &uuids);
    let held = shared.claims.count(supplier);
    if new > 0 && held + new > limits.max_gpus_per_supplier {
        return Err(over_limit(
            format!(
                "supplier `{supplier}` holds {held} GPUs and this registration adds {new}; a \
                 supplier may hold at most {}",
                limits.max_gpus_per_supplier
            ),
            "--max-gpus-per-supplier",
        ));
    }
    Ok(())
}

/// The 409 for GPUs held by other suppliers, after recording the attempt. The answer names
/// the GPUs, never their owners.
async fn refuse_conflicts(
    shared: &Shared,
    claimant: &str,
    worker: &str,
    conflicts: &[(usize, &str, Claim)],
) -> Response {
    record_conflicts(shared, claimant, worker, conflicts).await;
    let (i, uuid, _) = &conflicts[0];
    let more = match conflicts.len() {
        1 => String::new(),
        n => format!(
            " ({} more GPU(s) of this registration are too: {})",
            n - 1,
            conflicts[1..]
                .iter()
                .take(10)
                .map(|(i, _, _)| format!("gpus[{i}]"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    error(
        StatusCode::CONFLICT,
        format!(
            "gpus[{i}]: GPU `{uuid}` is registered to another supplier{more}; nothing of this \
             registration was stored. A GPU moves to another supplier only after its claim is \
             released (DELETE /api/v1/agent/gpus/{{uuid}} by its supplier or an operator)"
        ),
    )
}

/// Writes a [`SECURITY_EVENT_TABLE`] row per conflicting GPU (at most one per claimant and
/// GPU per [`REPORT_EVERY_NS`]).
async fn record_conflicts(
    shared: &Shared,
    claimant: &str,
    worker: &str,
    conflicts: &[(usize, &str, Claim)],
) {
    let now = now_ns();
    let mut batch = WriteBatch::with_capacity(conflicts.len(), conflicts.len() * 200);
    {
        let mut reported = shared.reported.lock();
        if reported.len() >= REPORTED_MAX {
            reported.retain(|_, t| now - *t < REPORT_EVERY_NS);
            if reported.len() >= REPORTED_MAX {
                reported.clear();
            }
        }
        for (i, uuid, owner) in conflicts {
            let key = (claimant.to_string(), uuid.to_string());
            if reported
                .get(&key)
                .is_some_and(|t| now - *t < REPORT_EVERY_NS)
            {
                continue;
            }
            reported.insert(key, now);
            let mut r = batch.row(SECURITY_EVENT_TABLE, now);
            r.tag("kind", "gpu_claim_conflict")
                .tag("claimant", claimant)
                .tag("owner", &owner.supplier)
                .tag("gpu_uuid", uuid)
                .field("worker", FieldValue::Str(worker))
                .field("owner_worker", FieldValue::Str(&owner.worker));
            // Fixed tags and string fields: always a valid row.
            let _ = r.finish(*i as u32 + 1);
        }
    }
    warn!(
        claimant,
        worker,
        gpus = conflicts.len(),
        first = conflicts[0].1,
        "registration refused: GPUs claimed by another supplier"
    );
    if let Err(r) = store(&shared.state.db, batch).await {
        warn!(status = %r.status(), "cannot record a security event");
    }
}

/// `POST /api/v1/agent/register`.
pub(super) async fn register(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let supplier = match agent_supplier(&shared.state.auth, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let reg: Registration = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("registration is not valid JSON: {e}"),
            );
        }
    };
    if let Err(e) = validate_supplier_name(&reg.worker) {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "worker name: {}",
                e.to_string().replace("supplier name", "name")
            ),
        );
    }
    if let Err(r) = check_gpus(&shared, &reg) {
        return *r;
    }
    let _changing = shared.changing.lock().await;
    let uuids: Vec<&str> = reg.gpus.iter().map(|g| g.uuid.as_str()).collect();
    let conflicts = shared.claims.conflicts(&supplier, &uuids);
    if !conflicts.is_empty() {
        return refuse_conflicts(&shared, &supplier, &reg.worker, &conflicts).await;
    }
    if let Err(r) = check_caps(&shared, &supplier, &reg) {
        return *r;
    }
    let time = now_ns();
    let mut batch = WriteBatch::with_capacity(reg.gpus.len(), reg.gpus.len() * 256);
    for (i, g) in reg.gpus.iter().enumerate() {
        let idx = g.index.to_string();
        let mut row = batch.row(rigwatch_common::tables::GPU_INVENTORY, time);
        row.tag("supplier", &supplier)
            .tag("worker", &reg.worker)
            .tag("gpu_uuid", &g.uuid)
            .tag("gpu_index", &idx)
            .field("model", FieldValue::Str(gpu_model::canonical(&g.model)))
            .field("product_name", FieldValue::Str(&g.model))
            .field(
                "memory_total_mib",
                FieldValue::I64(g.memory_total_mib as i64),
            )
            .field("pci_bus_id", FieldValue::Str(&g.pci_bus_id))
            .field("driver_version", FieldValue::Str(&g.driver_version))
            .field("cuda_version", FieldValue::Str(&g.cuda_version))
            .field("agent_version", FieldValue::Str(&reg.agent_version));
        if let Some(p) = g.power_limit_watts {
            row.field("power_limit_watts", FieldValue::F64(p));
        }
        if let Some(m) = g.mig_enabled {
            row.field("mig_enabled", FieldValue::Bool(m));
        }
        if let Err(e) = row.finish(i as u32 + 1) {
            return error(StatusCode::BAD_REQUEST, format!("gpus[{i}]: {e}"));
        }
    }
    if let Err(r) = store(&shared.state.db, batch).await {
        return *r;
    }
    let rec = WorkerRecord {
        supplier: supplier.clone(),
        worker: reg.worker.clone(),
        registered_unix_ms: time / 1_000_000,
        agent_version: reg.agent_version,
        gpus: reg.gpus,
    };
    let gpus = rec.gpus.len();
    let saving = shared.clone();
    let saved = tokio::task::spawn_blocking(move || {
        let uuids: Vec<&str> = rec.gpus.iter().map(|g| g.uuid.as_str()).collect();
        saving
            .claims
            .claim(&rec.supplier, &rec.worker, &uuids, rec.registered_unix_ms)?;
        saving.registry.put(rec).map_err(ClaimError::Io)
    })
    .await;
    match saved {
        Ok(Ok(())) => {}
        // Checked under `changing` against this node's claims; beside other shards' owners,
        // a claim one of them just made is found here (under the cluster-wide lock).
        Ok(Err(e @ ClaimError::Conflict { .. })) => {
            return error(StatusCode::CONFLICT, e.to_string());
        }
        Ok(Err(ClaimError::Io(e))) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot save the agent registration: {e}"),
            );
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
    axum::Json(serde_json::json!({
        "supplier": supplier,
        "worker": reg.worker,
        "gpus": gpus,
    }))
    .into_response()
}

/// `DELETE /api/v1/agent/gpus/{uuid}`: releases a GPU's claim (and drops it from the
/// registrations that list it), so that another supplier may register it. An operator
/// (admin) may release any GPU; a supplier's own tokens (supplier or agent role) only that
/// supplier's, and another supplier's GPU reads as unknown (404), so ownership does not leak.
pub(super) async fn release(
    State(shared): State<Arc<Shared>>,
    Path(uuid): Path<String>,
    headers: HeaderMap,
) -> Response {
    let p = match authenticate(&shared.state.auth, &headers) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let scope = match p.role {
        Role::Admin => None,
        Role::Supplier | Role::Agent => match p.supplier.as_deref() {
            Some(s) => Some(s.to_string()),
            None => {
                return error(
                    StatusCode::FORBIDDEN,
                    format!("token {} names no supplier", p.token_id),
                );
            }
        },
        role => {
            return error(
                StatusCode::FORBIDDEN,
                format!(
                    "token {} has role `{role}`; releasing a GPU needs an admin token or a \
                     supplier or agent token of the GPU's supplier",
                    p.token_id
                ),
            );
        }
    };
    let _changing = shared.changing.lock().await;
    let claim = shared
        .claims
        .owner(&uuid)
        .filter(|c| scope.as_deref().is_none_or(|s| s == c.supplier));
    let Some(claim) = claim else {
        let whose = match &scope {
            Some(s) => format!("supplier `{s}`"),
            None => "any supplier".to_string(),
        };
        return error(
            StatusCode::NOT_FOUND,
            format!("GPU `{uuid}` is not registered to {whose}"),
        );
    };
    let releasing = shared.clone();
    let gpu = uuid.clone();
    // The registrations first: a crash in between leaves the claim, and the release can be
    // repeated; the other order would let the next start adopt the GPU again.
    let released = tokio::task::spawn_blocking(move || {
        releasing.registry.remove_gpu(&gpu)?;
        releasing.claims.release(&gpu, now_ns() / 1_000_000)
    })
    .await;
    match released {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot save the release: {e}"),
            );
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
    info!(gpu_uuid = %uuid, supplier = %claim.supplier, worker = %claim.worker, by = %p.token_id, "GPU claim released");
    axum::Json(serde_json::json!({
        "gpu_uuid": uuid,
        "supplier": claim.supplier,
        "worker": claim.worker,
        "released": true,
    }))
    .into_response()
}

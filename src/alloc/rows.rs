//! The allocator's rows: `lease`, `earnings` and `job`, written and read back at start.

use anyhow::Context;
use rigwatch_query::QueryService;
use rigwatch_scheduler::{EndReason, GpuDemand, Job, Lease, LedgerEntry};
use rigwatch_storage::batch::{FieldValue, WriteBatch};
use serde_json::Value;

use super::JobRecord;

pub(super) fn reason_str(r: EndReason) -> &'static str {
    match r {
        EndReason::Completed => "completed",
        EndReason::Cancelled => "cancelled",
        EndReason::FaultHardware => "fault_hardware",
        EndReason::FaultApplication => "fault_application",
        EndReason::Preempted => "preempted",
        EndReason::Lost => "lost",
    }
}

pub(super) fn reason_from(s: &str) -> Option<EndReason> {
    Some(match s {
        "completed" => EndReason::Completed,
        "cancelled" => EndReason::Cancelled,
        "fault_hardware" => EndReason::FaultHardware,
        "fault_application" => EndReason::FaultApplication,
        "preempted" => EndReason::Preempted,
        "lost" => EndReason::Lost,
        _ => return None,
    })
}

pub(super) fn lease_row(b: &mut WriteBatch, l: &Lease) {
    let mut row = b.row("lease", l.start_ms * 1_000_000);
    row.tag("lease_id", &l.lease_id.to_string())
        .tag("job_id", &l.job_id.to_string())
        .tag("gpu_uuid", &l.gpu_uuid)
        .tag(
            "worker",
            l.node
                .strip_prefix(&format!("{}/", l.supplier))
                .unwrap_or(&l.node),
        )
        .tag("supplier", &l.supplier)
        .tag("model", &l.model)
        .field("share_milli", FieldValue::I64(i64::from(l.share_milli)))
        .field("start_ms", FieldValue::I64(l.start_ms));
    if let Some(e) = l.end_ms {
        row.field("end_ms", FieldValue::I64(e));
    }
    if let Some(r) = l.end_reason {
        row.field("end_reason", FieldValue::Str(reason_str(r)));
    }
    let _ = row.finish(0);
}

pub(super) fn earnings_row(b: &mut WriteBatch, e: &LedgerEntry) {
    let mut row = b.row("earnings", e.from_ms * 1_000_000);
    row.tag("lease_id", &e.lease_id.to_string())
        .tag("gpu_uuid", &e.gpu_uuid)
        .tag("supplier", &e.supplier)
        .tag("model", &e.model)
        .field("amount_minor", FieldValue::I64(e.amount_minor))
        .field("to_ms", FieldValue::I64(e.to_ms))
        .field("share_milli", FieldValue::I64(i64::from(e.share_milli)))
        .field("rate_per_gpu_hour", FieldValue::I64(e.rate_per_gpu_hour));
    let _ = row.finish(0);
}

/// The job's row in table `job`: one row per job (tag `job_id`, time = submission), rewritten
/// in full on every state change (last write wins), in the same write as the lease rows that
/// change with it, so a restart finds the job and its leases agreeing.
pub(super) fn job_row(b: &mut WriteBatch, rec: &JobRecord) {
    let j = &rec.job;
    let mut row = b.row("job", rec.submitted_ms * 1_000_000);
    row.tag("job_id", &j.id.to_string())
        .field("state", FieldValue::Str(&rec.state))
        .field("submitted_ms", FieldValue::I64(rec.submitted_ms))
        .field("priority", FieldValue::I64(i64::from(j.priority)))
        .field(
            "min_gpu_memory_mib",
            FieldValue::I64(i64::from(j.min_gpu_memory_mib)),
        )
        .field(
            "expected_duration_ms",
            FieldValue::I64(i64::try_from(j.expected_duration_ms).unwrap_or(i64::MAX)),
        );
    let models = j.models.join(",");
    row.field("models", FieldValue::Str(&models));
    match j.demand {
        GpuDemand::Whole(n) => {
            row.field("gpus", FieldValue::I64(i64::from(n)));
        }
        GpuDemand::Fraction(m) => {
            row.field("gpu_milli", FieldValue::I64(i64::from(m)));
        }
        GpuDemand::None => {}
    }
    if let Some(cap) = j.price_cap_per_gpu_hour {
        row.field("price_cap_per_gpu_hour", FieldValue::I64(cap));
    }
    if let Some(t) = rec.started_ms {
        row.field("started_ms", FieldValue::I64(t));
    }
    if let Some(t) = rec.ended_ms {
        row.field("ended_ms", FieldValue::I64(t));
    }
    if let Some(r) = rec.end_reason {
        row.field("end_reason", FieldValue::Str(reason_str(r)));
    }
    row.field("restarts", FieldValue::I64(i64::from(rec.restarts)));
    let _ = row.finish(0);
}

/// A job back from its `job` row (see [`job_row`]); `None` for a row it cannot read.
pub(super) fn job_from_row(r: &Value) -> Option<JobRecord> {
    let id: u64 = s(r, "job_id").parse().ok()?;
    let int = |k: &str| r[k].as_i64();
    let demand = match (int("gpus"), int("gpu_milli")) {
        (Some(n), _) => GpuDemand::Whole(u8::try_from(n).ok()?),
        (None, Some(m)) => GpuDemand::Fraction(u16::try_from(m).ok()?),
        (None, None) => return None,
    };
    let models = s(r, "models");
    let job = Job {
        id,
        demand,
        models: models
            .split(',')
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .collect(),
        min_gpu_memory_mib: int("min_gpu_memory_mib").unwrap_or(0) as u32,
        cpu_milli: 0,
        memory_mib: 0,
        priority: int("priority").unwrap_or(0) as i32,
        expected_duration_ms: int("expected_duration_ms").unwrap_or(0).max(0) as u64,
        price_cap_per_gpu_hour: int("price_cap_per_gpu_hour"),
    };
    Some(JobRecord {
        job,
        state: r["state"].as_str().unwrap_or("queued").to_string(),
        submitted_ms: int("submitted_ms")?,
        started_ms: int("started_ms"),
        ended_ms: int("ended_ms"),
        end_reason: r["end_reason"].as_str().and_then(reason_from),
        leases: Vec::new(),
        restarts: int("restarts").unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32,
    })
}

/// Rows of a SQL query as JSON objects; a missing table reads as no rows.
pub(super) async fn rows(q: &QueryService, sql: &str) -> anyhow::Result<Vec<Value>> {
    let (_, batches) = match q.sql(sql).await {
        Ok(r) => r,
        Err(e) if e.to_string().contains("not found") => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("running `{sql}`")),
    };
    let mut w = arrow::json::ArrayWriter::new(Vec::new());
    for b in &batches {
        w.write(b)?;
    }
    w.finish()?;
    let bytes = w.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    Ok(serde_json::from_slice(&bytes)?)
}

pub(super) fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_string()
}

pub(super) fn node_name(supplier: &str, worker: &str) -> String {
    format!("{supplier}/{worker}")
}

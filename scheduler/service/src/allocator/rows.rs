//! The allocator's rows: `lease`, `earnings` and `job`, written and read back at start.

use rigwatch_common::tables;
use rigwatch_query::QueryService;
use rigwatch_query::rows::{Row, RowError, Rows};
use rigwatch_scheduler::payout::Payout;
use rigwatch_scheduler::{EndReason, GpuDemand, Job, JobState, Lease, LedgerEntry};
use rigwatch_storage::batch::{FieldValue, WriteBatch};

use super::JobRecord;

pub(super) fn lease_row(b: &mut WriteBatch, l: &Lease) {
    let mut row = b.row(tables::LEASE, l.start_ms * 1_000_000);
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
        row.field("end_reason", FieldValue::Str(r.as_str()));
    }
    if !l.unpaid.is_empty() {
        let text = unpaid_text(&l.unpaid);
        row.field("unpaid", FieldValue::Str(&text))
            .field(
                "unpaid_ms",
                FieldValue::I64(l.unpaid_ms(l.end_ms.unwrap_or(i64::MAX))),
            )
            .field("paused", FieldValue::Bool(l.is_paused()));
    }
    let _ = row.finish(0);
}

/// A lease's unpaid intervals as its row keeps them: `from-to` in ms, comma-separated, the
/// `to` of a pause still running left empty (`1700000000000-1700000060000,1700000600000-`).
pub(super) fn unpaid_text(unpaid: &[(i64, i64)]) -> String {
    let mut out = String::new();
    for (i, &(a, b)) in unpaid.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&a.to_string());
        out.push('-');
        if b != i64::MAX {
            out.push_str(&b.to_string());
        }
    }
    out
}

/// The intervals of [`unpaid_text`]; `None` for text it did not write.
pub(super) fn parse_unpaid(text: &str) -> Option<Vec<(i64, i64)>> {
    if text.is_empty() {
        return Some(Vec::new());
    }
    text.split(',')
        .map(|iv| {
            let (a, b) = iv.split_once('-')?;
            let a: i64 = a.parse().ok()?;
            let b: i64 = if b.is_empty() {
                i64::MAX
            } else {
                b.parse().ok()?
            };
            (a <= b).then_some((a, b))
        })
        .collect()
}

/// Layout of an `earnings` row, in its field `ledger_version`:
/// - 1 (no such field): `amount_minor` and `rate_per_gpu_hour` in the currency's minor units;
/// - 2: `amount_micro` and `rate_micro_per_gpu_hour` in micro-units, `duration_ms`.
///
/// Version-1 rows are rewritten as version 2 when the server starts ([`entry_from_row`]),
/// keeping their old fields, so SQL over `amount_micro` covers every row.
pub(super) const EARNINGS_ROW_VERSION: i64 = 2;

/// An entry's row in table `earnings`: tags `lease_id`, `gpu_uuid`, `supplier`, `model`
/// (canonical), time = the entry's start; with everything a supplier needs to check the
/// amount: `amount_micro` = ⌊rate × share × time⌋ telescoped over the lease (see the ledger).
pub(super) fn earnings_row(b: &mut WriteBatch, e: &LedgerEntry) {
    let mut row = b.row(tables::EARNINGS, e.from_ms * 1_000_000);
    row.tag("lease_id", &e.lease_id.to_string())
        .tag("gpu_uuid", &e.gpu_uuid)
        .tag("supplier", &e.supplier)
        .tag("model", &e.model)
        .field("amount_micro", FieldValue::I64(e.amount_micro))
        .field(
            "rate_micro_per_gpu_hour",
            FieldValue::I64(e.rate_micro_per_gpu_hour),
        )
        .field("share_milli", FieldValue::I64(i64::from(e.share_milli)))
        .field("to_ms", FieldValue::I64(e.to_ms))
        .field("duration_ms", FieldValue::I64(e.to_ms - e.from_ms))
        .field("ledger_version", FieldValue::I64(EARNINGS_ROW_VERSION));
    let _ = row.finish(0);
}

/// A ledger entry back from its `earnings` row (all columns, plus `from_ms`); `true` when
/// the row is version 1, its minor units converted with `micro_per_minor`. A row without its
/// amount, rate, lease or times is an error: read as 0 it would be paid again.
pub(super) fn entry_from_row(
    r: &Row<'_>,
    micro_per_minor: i64,
) -> Result<(LedgerEntry, bool), RowError> {
    let legacy = r.i64("ledger_version").is_none() && r.i64("amount_micro").is_none();
    let (amount, rate) = if legacy {
        (
            r.req_i64("amount_minor")?.saturating_mul(micro_per_minor),
            r.req_i64("rate_per_gpu_hour")?
                .saturating_mul(micro_per_minor),
        )
    } else {
        (
            r.req_i64("amount_micro")?,
            r.req_i64("rate_micro_per_gpu_hour")?,
        )
    };
    let entry = LedgerEntry {
        lease_id: r.req_id("lease_id")?,
        from_ms: r.req_i64("from_ms")?,
        to_ms: r.req_i64("to_ms")?,
        supplier: r.req_str("supplier")?.to_string(),
        gpu_uuid: r.req_str("gpu_uuid")?.to_string(),
        model: r.str("model").unwrap_or_default().to_string(),
        share_milli: u32::try_from(r.req_i64("share_milli")?).unwrap_or(0),
        rate_micro_per_gpu_hour: rate,
        amount_micro: amount,
    };
    Ok((entry, legacy))
}

/// A payout's row in table `payout`: tags `payout_id`, `supplier`; fields `amount_micro`,
/// `reference`, `paid_ms`; time = when it was recorded.
pub(super) fn payout_row(b: &mut WriteBatch, p: &Payout, recorded_ms: i64) {
    let mut row = b.row(tables::PAYOUT, recorded_ms * 1_000_000);
    row.tag("payout_id", &p.payout_id.to_string())
        .tag("supplier", &p.supplier)
        .field("amount_micro", FieldValue::I64(p.amount_micro))
        .field("reference", FieldValue::Str(&p.reference))
        .field("paid_ms", FieldValue::I64(p.paid_ms));
    let _ = row.finish(0);
}

/// A payout back from its row. A row missing a field is an error: a payout not counted would
/// let the same balance be paid out again.
pub(super) fn payout_from_row(r: &Row<'_>) -> Result<Payout, RowError> {
    Ok(Payout {
        payout_id: r.req_id("payout_id")?,
        supplier: r.req_str("supplier")?.to_string(),
        amount_micro: r.req_i64("amount_micro")?,
        reference: r.req_str("reference")?.to_string(),
        paid_ms: r.req_i64("paid_ms")?,
    })
}

/// The job's row in table `job`: one row per job (tag `job_id`, time = submission), rewritten
/// in full on every state change (last write wins), in the same write as the lease rows that
/// change with it, so a restart finds the job and its leases agreeing.
pub(super) fn job_row(b: &mut WriteBatch, rec: &JobRecord) {
    let j = &rec.job;
    let mut row = b.row(tables::JOB, rec.submitted_ms * 1_000_000);
    row.tag("job_id", &j.id.to_string())
        .field("state", FieldValue::Str(rec.state.as_str()))
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
    if let Some(cap) = j.price_cap_micro_per_gpu_hour {
        row.field("price_cap_micro_per_gpu_hour", FieldValue::I64(cap));
    }
    if let Some(t) = rec.started_ms {
        row.field("started_ms", FieldValue::I64(t));
    }
    if let Some(t) = rec.ended_ms {
        row.field("ended_ms", FieldValue::I64(t));
    }
    if let Some(r) = rec.end_reason {
        row.field("end_reason", FieldValue::Str(r.as_str()));
    }
    row.field("restarts", FieldValue::I64(i64::from(rec.restarts)));
    let _ = row.finish(0);
}

/// A job back from its `job` row (see [`job_row`]); `None` for a row it cannot read. Price
/// caps of rows written before micro-units are converted with `micro_per_minor`.
pub(super) fn job_from_row(r: &Row<'_>, micro_per_minor: i64) -> Option<JobRecord> {
    let id: u64 = r.req_id("job_id").ok()?;
    let demand = match (r.i64("gpus"), r.i64("gpu_milli")) {
        (Some(n), _) => GpuDemand::Whole(u8::try_from(n).ok()?),
        (None, Some(m)) => GpuDemand::Fraction(u16::try_from(m).ok()?),
        (None, None) => return None,
    };
    let job = Job {
        id,
        demand,
        models: r
            .str("models")
            .unwrap_or_default()
            .split(',')
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .collect(),
        min_gpu_memory_mib: r.i64("min_gpu_memory_mib").unwrap_or(0) as u32,
        cpu_milli: 0,
        memory_mib: 0,
        priority: r.i64("priority").unwrap_or(0) as i32,
        expected_duration_ms: r.i64("expected_duration_ms").unwrap_or(0).max(0) as u64,
        price_cap_micro_per_gpu_hour: r.i64("price_cap_micro_per_gpu_hour").or_else(|| {
            // A job row from before micro-units: minor units of the currency.
            r.i64("price_cap_per_gpu_hour")
                .map(|c| c.saturating_mul(micro_per_minor))
        }),
    };
    Some(JobRecord {
        job,
        state: JobState::parse(r.str("state").unwrap_or("queued"))?,
        submitted_ms: r.i64("submitted_ms")?,
        started_ms: r.i64("started_ms"),
        ended_ms: r.i64("ended_ms"),
        end_reason: r.str("end_reason").and_then(EndReason::parse),
        leases: Vec::new(),
        restarts: r.i64("restarts").unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32,
    })
}

/// A lease back from its `lease` row (all columns). Its ids, GPU, share and start are
/// required: a lease read wrongly would be paid wrongly.
pub(super) fn lease_from_row(r: &Row<'_>) -> Result<Lease, RowError> {
    let supplier = r.req_str("supplier")?;
    Ok(Lease {
        lease_id: r.req_id("lease_id")?,
        job_id: r.req_id("job_id")?,
        gpu_uuid: r.req_str("gpu_uuid")?.to_string(),
        node: node_name(supplier, r.str("worker").unwrap_or_default()),
        supplier: supplier.to_string(),
        model: r.str("model").unwrap_or_default().to_string(),
        share_milli: u32::try_from(r.req_i64("share_milli")?).unwrap_or(0),
        start_ms: r.req_i64("start_ms")?,
        end_ms: r.i64("end_ms"),
        end_reason: r.str("end_reason").and_then(EndReason::parse),
        unpaid: match r.str("unpaid").map(parse_unpaid) {
            None => Vec::new(),
            Some(Some(v)) => v,
            Some(None) => {
                tracing::warn!(
                    lease = r.str("lease_id").unwrap_or_default(),
                    "unreadable unpaid intervals on a lease row: read as none"
                );
                Vec::new()
            }
        },
    })
}

/// The rows of `sql` over `table` (none while the table does not exist yet).
pub(super) async fn rows(q: &QueryService, table: &str, sql: &str) -> anyhow::Result<Rows> {
    Rows::query(q, table, sql)
        .await
        .map_err(|e| anyhow::anyhow!("running `{sql}`: {e}"))
}

pub(super) fn node_name(supplier: &str, worker: &str) -> String {
    format!("{supplier}/{worker}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpaid_intervals_round_trip_through_the_row() {
        for v in [
            vec![],
            vec![(1_000, 61_000)],
            vec![(1_000, 61_000), (120_000, i64::MAX)],
        ] {
            assert_eq!(parse_unpaid(&unpaid_text(&v)), Some(v.clone()), "{v:?}");
        }
        assert_eq!(unpaid_text(&[(5, 9), (20, i64::MAX)]), "5-9,20-");
        for bad in ["x", "5", "9-5", "5-9,", "-"] {
            assert_eq!(parse_unpaid(bad), None, "{bad}");
        }
    }
}

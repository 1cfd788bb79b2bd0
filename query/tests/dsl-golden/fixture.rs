//! The fixed dataset the golden analyst questions run on: four hours of a small fleet, on
//! 2026-11-02 from 00:00 to 04:00 UTC (minute `m` is `T0 + m` minutes), every table a
//! server writes, in the layout the agent and the allocator write it.
//!
//! ```text
//! GPU     supplier worker model region  driver      reports            leases (minutes, share)
//! GPU-A1  acme     a1     H100  eu-west 550.54.15   0..240             L1 0-120 1.0, L5 130-200 0.75
//! GPU-A2  acme     a1     H100  eu-west 550.54.15   0..240             L2 0-180 1.0 (idle under it)
//! GPU-A3  acme     a2     A100  eu-west 535.104.05  0..240 but 60..90  L3 30-60 0.75 (XID 79), L6 100-160 1.0 (XID 13)
//! GPU-B1  bolt     b1     H100  us-east 550.54.15   0..240             L4 60-240 1.0 (XID 74 at 240)
//! GPU-B2  bolt     b1     A100  us-east 535.104.05  4..240             none (busy anyway)
//! ```
//!
//! Utilisation: 90 % under a lease (GPU-A2: 2 %), 0 % otherwise (GPU-B2: 80 %). Throttling:
//! GPU-A1 thermal (0x20) in minutes 10..20, GPU-B1 thermal (0x40) in 100..130; an idle GPU
//! sets the idle bit (0x1), which is not a slowdown. Prices: H100 2.50/h, A100 1.20/h;
//! the ledger settles every 30 minutes of a lease. Jobs: 1, 2 completed; 3 lost GPU-A3 to
//! XID 79, was requeued and completed on GPU-A1; 4 lost GPU-B1 to XID 74 and waits
//! requeued; 5 failed on XID 13; 6 (half a GPU) waits. Payouts: acme 10.00 at 03:30, bolt
//! 5.00 at 03:55.

use rigwatch_storage::batch::{FieldValue, WriteBatch};
use rigwatch_storage::{Db, WriteOptions};

/// 2026-11-02T00:00:00Z in Unix milliseconds.
pub const T0_MS: i64 = 1_793_577_600_000;
pub const BOLT: &str = "bolt";
/// Text in acme's rows that no answer to bolt may contain.
pub const ACME_SECRETS: [&str; 4] = ["GPU-A", "acme", "eu-west", "wire-0001"];

const MINUTES: i64 = 240;

struct Gpu {
    uuid: &'static str,
    supplier: &'static str,
    worker: &'static str,
    index: &'static str,
    model: &'static str,
    region: &'static str,
    driver: &'static str,
    memory_mib: i64,
    /// Minutes with no report.
    silent: (i64, i64),
}

const GPUS: [Gpu; 5] = [
    gpu("GPU-A1", "acme", "a1", "0", "H100", (0, 0)),
    gpu("GPU-A2", "acme", "a1", "1", "H100", (0, 0)),
    gpu("GPU-A3", "acme", "a2", "0", "A100", (60, 90)),
    gpu("GPU-B1", "bolt", "b1", "0", "H100", (0, 0)),
    gpu("GPU-B2", "bolt", "b1", "1", "A100", (0, 4)),
];

const fn gpu(
    uuid: &'static str,
    supplier: &'static str,
    worker: &'static str,
    index: &'static str,
    model: &'static str,
    silent: (i64, i64),
) -> Gpu {
    let h100 = matches!(model.as_bytes(), b"H100");
    let eu = matches!(supplier.as_bytes(), b"acme");
    Gpu {
        uuid,
        supplier,
        worker,
        index,
        model,
        region: if eu { "eu-west" } else { "us-east" },
        driver: if h100 { "550.54.15" } else { "535.104.05" },
        memory_mib: if h100 { 81_559 } else { 40_960 },
        silent,
    }
}

struct Lease {
    id: i64,
    job: i64,
    gpu: usize,
    share_milli: i64,
    start: i64,
    end: i64,
    reason: &'static str,
}

const LEASES: [Lease; 6] = [
    lease(1, 1, 0, 1000, 0, 120, "completed"),
    lease(2, 2, 1, 1000, 0, 180, "completed"),
    lease(3, 3, 2, 750, 30, 60, "fault_hardware"),
    lease(4, 4, 3, 1000, 60, 240, "fault_hardware"),
    lease(5, 3, 0, 750, 130, 200, "completed"),
    lease(6, 5, 2, 1000, 100, 160, "fault_application"),
];

const fn lease(
    id: i64,
    job: i64,
    gpu: usize,
    share_milli: i64,
    start: i64,
    end: i64,
    reason: &'static str,
) -> Lease {
    Lease {
        id,
        job,
        gpu,
        share_milli,
        start,
        end,
        reason,
    }
}

fn ms(minute: i64) -> i64 {
    T0_MS + minute * 60_000
}

fn ns(minute: i64) -> i64 {
    ms(minute) * 1_000_000
}

fn rate_micro(model: &str) -> i64 {
    if model == "H100" {
        2_500_000
    } else {
        1_200_000
    }
}

/// Writes the dataset; with `persist_half`, the first two hours of telemetry go to Parquet
/// before the rest is written, so answers read both Parquet and the write buffer.
pub async fn write(db: &Db, persist_half: bool) {
    let mut energy = [0i64; 5];
    for (from, to) in [(0, MINUTES / 2), (MINUTES / 2, MINUTES + 1)] {
        let mut b = WriteBatch::default();
        for m in from..to {
            for (i, g) in GPUS.iter().enumerate() {
                if m >= g.silent.0 && m < g.silent.1 || m == MINUTES {
                    continue;
                }
                telemetry(&mut b, i, g, m, &mut energy[i]);
            }
        }
        db.write(b, WriteOptions::default()).await.expect("write");
        if persist_half && from == 0 {
            db.persist().await.expect("persist");
        }
    }
    let mut b = WriteBatch::default();
    for l in &LEASES {
        lease_rows(&mut b, l);
    }
    for (g, m, code, severity) in [
        (2, 60, 79, "critical"),
        (2, 160, 13, "warning"),
        (3, 240, 74, "critical"),
        (0, 230, 48, "critical"),
        (3, 200, 63, "info"),
    ] {
        let gpu = &GPUS[g];
        let mut r = b.row("gpu_fault", ns(m));
        r.tag("gpu_uuid", gpu.uuid)
            .tag("gpu_index", gpu.index)
            .tag("model", gpu.model)
            .tag("region", gpu.region)
            .tag("kind", "xid")
            .tag("supplier", gpu.supplier)
            .tag("worker", gpu.worker)
            .field("code", FieldValue::I64(code))
            .field("severity", FieldValue::Str(severity));
        r.finish(0).unwrap();
    }
    // (job, state, submitted, started, ended, end reason, restarts, gpus or milli)
    for (id, state, submitted, started, ended, reason, restarts, milli) in [
        (
            1,
            "completed",
            0,
            Some(0),
            Some(120),
            Some("completed"),
            0,
            1000,
        ),
        (
            2,
            "completed",
            0,
            Some(0),
            Some(180),
            Some("completed"),
            0,
            1000,
        ),
        (
            3,
            "completed",
            30,
            Some(130),
            Some(200),
            Some("completed"),
            1,
            750,
        ),
        (4, "queued", 60, None, None, None, 1, 1000),
        (
            5,
            "failed",
            100,
            Some(100),
            Some(160),
            Some("fault_application"),
            0,
            1000,
        ),
        (6, "queued", 200, None, None, None, 0, 500),
    ] {
        let mut r = b.row("job", ns(submitted));
        r.tag("job_id", &id.to_string())
            .field("state", FieldValue::Str(state))
            .field("submitted_ms", FieldValue::I64(ms(submitted)))
            .field("priority", FieldValue::I64(0))
            .field("restarts", FieldValue::I64(restarts));
        if milli == 1000 {
            r.field("gpus", FieldValue::I64(1));
        } else {
            r.field("gpu_milli", FieldValue::I64(milli));
        }
        if let Some(s) = started {
            r.field("started_ms", FieldValue::I64(ms(s)));
        }
        if let Some(e) = ended {
            r.field("ended_ms", FieldValue::I64(ms(e)));
        }
        if let Some(reason) = reason {
            r.field("end_reason", FieldValue::Str(reason));
        }
        r.finish(0).unwrap();
    }
    for (id, supplier, amount, m, reference) in [
        (1, "acme", 10_000_000, 210, "wire-0001"),
        (2, "bolt", 5_000_000, 235, "wire-0002"),
    ] {
        let mut r = b.row("payout", ns(m));
        r.tag("payout_id", &id.to_string())
            .tag("supplier", supplier)
            .field("amount_micro", FieldValue::I64(amount))
            .field("reference", FieldValue::Str(reference))
            .field("paid_ms", FieldValue::I64(ms(m)));
        r.finish(0).unwrap();
    }
    db.write(b, WriteOptions::default()).await.expect("write");
}

fn leased(gpu: usize, m: i64) -> bool {
    LEASES
        .iter()
        .any(|l| l.gpu == gpu && l.start <= m && m < l.end)
}

fn telemetry(b: &mut WriteBatch, i: usize, g: &Gpu, m: i64, energy_mj: &mut i64) {
    let utilization = match (leased(i, m), g.uuid) {
        (true, "GPU-A2") => 2.0,
        (true, _) => 90.0,
        (false, "GPU-B2") => 80.0,
        (false, _) => 0.0,
    };
    let busy = utilization > 50.0;
    let power = if busy { 400.0 } else { 60.0 };
    *energy_mj += (power * 60_000.0) as i64;
    let throttle = match (g.uuid, m) {
        ("GPU-A1", 10..20) => 0x20,
        ("GPU-B1", 100..130) => 0x40,
        _ if utilization == 0.0 => 0x1,
        _ => 0,
    };
    let mut r = b.row("gpu", ns(m));
    r.tag("gpu_uuid", g.uuid)
        .tag("gpu_index", g.index)
        .tag("model", g.model)
        .tag("region", g.region)
        .tag("supplier", g.supplier)
        .tag("worker", g.worker)
        .field("memory_total_mib", FieldValue::I64(g.memory_mib))
        .field("driver_version", FieldValue::Str(g.driver))
        .field("utilization", FieldValue::F64(utilization))
        .field(
            "temperature",
            FieldValue::F64(if busy { 71.0 } else { 40.0 }),
        )
        .field("power_watts", FieldValue::F64(power))
        .field("energy_mj", FieldValue::I64(*energy_mj))
        .field(
            "memory_used_mib",
            FieldValue::I64(if busy { 60_000 } else { 0 }),
        )
        .field("throttle_reasons", FieldValue::I64(throttle));
    r.finish(0).unwrap();
}

/// A lease's row and its ledger entries, one per 30 minutes (the last one shorter).
fn lease_rows(b: &mut WriteBatch, l: &Lease) {
    let g = &GPUS[l.gpu];
    let mut r = b.row("lease", ns(l.start));
    r.tag("lease_id", &l.id.to_string())
        .tag("job_id", &l.job.to_string())
        .tag("gpu_uuid", g.uuid)
        .tag("worker", g.worker)
        .tag("supplier", g.supplier)
        .tag("model", g.model)
        .field("share_milli", FieldValue::I64(l.share_milli))
        .field("start_ms", FieldValue::I64(ms(l.start)))
        .field("end_ms", FieldValue::I64(ms(l.end)))
        .field("end_reason", FieldValue::Str(l.reason));
    r.finish(0).unwrap();
    let rate = rate_micro(g.model);
    let mut from = l.start;
    while from < l.end {
        let to = (from + 30).min(l.end);
        let duration_ms = (to - from) * 60_000;
        // rate × share × hours, exact here (every entry is a whole number of µ).
        let amount = rate * l.share_milli * duration_ms / (1000 * 3_600_000);
        let mut r = b.row("earnings", ns(from));
        r.tag("lease_id", &l.id.to_string())
            .tag("gpu_uuid", g.uuid)
            .tag("supplier", g.supplier)
            .tag("model", g.model)
            .field("amount_micro", FieldValue::I64(amount))
            .field("rate_micro_per_gpu_hour", FieldValue::I64(rate))
            .field("share_milli", FieldValue::I64(l.share_milli))
            .field("to_ms", FieldValue::I64(ms(to)))
            .field("duration_ms", FieldValue::I64(duration_ms))
            .field("ledger_version", FieldValue::I64(2));
        r.finish(0).unwrap();
        from = to;
    }
}

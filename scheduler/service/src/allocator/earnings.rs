//! Earnings over HTTP: the live figure (`/api/v1/earnings/live`, what the portal's ticker
//! shows every second), daily statements with their settlement, payouts and reconciliation
//! (`/api/v1/earnings/statements`), and payouts (`/api/v1/payouts`: admins record, everyone
//! reads their own). Scoped to the caller's supplier; amounts in µ.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use rigwatch_scheduler::ledger::{DAY_MS, DailyStatement, MINUTE_MS};
use rigwatch_storage::auth::Principal;
use serde::Serialize;
use serde_json::{Value, json};

use rigwatch_scheduler::payout::{Payout, apply_payouts, check_payout};
use rigwatch_storage::batch::WriteBatch;
use rigwatch_storage::{Singleton, WriteOptions};

use super::http::err;
use super::rows::{payout_row, rows};
use super::{AllocService, now_ms};

/// One running lease, live.
#[derive(Debug, Serialize)]
pub struct LiveLease {
    pub lease_id: u64,
    pub job_id: u64,
    pub supplier: String,
    pub gpu_uuid: String,
    pub model: String,
    pub share_milli: u32,
    pub start_ms: i64,
    /// Price in force now, µ per GPU-hour.
    pub rate_micro_per_gpu_hour: i64,
    /// What the lease earns per second now (rate × share), µ, fractional.
    pub micro_per_second: f64,
    /// Σ of its ledger entries (closed minutes), µ.
    pub booked_micro: i64,
    /// Earned by `now_ms`, booked or not (the ledger's own rounding), µ.
    pub earned_micro: i64,
    /// Pay is paused: the GPU has sent nothing for `--pay-grace`.
    pub paused: bool,
    /// Time not paid so far because the GPU was silent, ms.
    pub unpaid_ms: i64,
}

/// A supplier's (or every supplier's) earnings at one instant.
#[derive(Debug, Serialize)]
pub struct LiveEarnings {
    pub now_ms: i64,
    pub currency: &'static str,
    pub minor_digits: u32,
    /// Everything earned so far: booked entries plus the unbooked part of running leases.
    pub total_micro: i64,
    /// Earned since 00:00 UTC today, the same way.
    pub today_micro: i64,
    /// What the running leases add per second now, µ.
    pub micro_per_second: f64,
    pub leases: Vec<LiveLease>,
}

impl AllocService {
    /// The live figures for `scope`'s supplier (or everyone) at `now`. Each running lease's
    /// figure is the ledger's own `earned_by`, so the ticker never shows more than its
    /// entries will sum to.
    pub fn live_earnings(&self, scope: Option<&str>, now: i64) -> LiveEarnings {
        let st = self.state.lock();
        let card = st.ledger.card();
        let day = now.div_euclid(DAY_MS);
        let mine = |s: &str| scope.is_none_or(|x| x == s);
        let (mut total, mut today) = (0i64, 0i64);
        for s in st.ledger.suppliers().filter(|s| mine(s)) {
            total += st.ledger.supplier_total(s);
            today += st.ledger.day_booked(s, day);
        }
        let mut leases = Vec::new();
        let mut per_second = 0.0;
        for l in st.alloc.open_leases().filter(|l| mine(&l.supplier)) {
            let booked = st.ledger.lease_booked(l.lease_id);
            let earned = card.earned_by(l, now).max(booked);
            total += earned - booked;
            // The unbooked part runs from the last booked minute to now; only what follows
            // midnight is today's (all of it unless accrual lags across midnight).
            today += earned - card.earned_by(l, day * DAY_MS).max(booked).min(earned);
            let rate = card.rate_at(&l.model, now);
            let mps = if l.is_paused() {
                0.0
            } else {
                rate as f64 * f64::from(l.share_milli) / 1000.0 / 3600.0
            };
            per_second += mps;
            leases.push(LiveLease {
                lease_id: l.lease_id,
                job_id: l.job_id,
                supplier: l.supplier.clone(),
                gpu_uuid: l.gpu_uuid.clone(),
                model: l.model.clone(),
                share_milli: l.share_milli,
                start_ms: l.start_ms,
                rate_micro_per_gpu_hour: rate,
                micro_per_second: mps,
                booked_micro: booked,
                earned_micro: earned,
                paused: l.is_paused(),
                unpaid_ms: l.unpaid_ms(now),
            });
        }
        leases.sort_by_key(|l| l.lease_id);
        LiveEarnings {
            now_ms: now,
            currency: self.currency.code,
            minor_digits: self.currency.minor_digits,
            total_micro: total,
            today_micro: today,
            micro_per_second: per_second,
            leases,
        }
    }

    /// Daily statements (one per supplier and UTC day) from the ledger, for `scope`'s
    /// supplier or everyone, settled in the server's currency. A day is settled once it is
    /// over and every lease in it has been accrued past its end; until then its amount can
    /// still grow and it settles nothing.
    pub fn statements(&self, scope: Option<&str>) -> Vec<DailyStatement> {
        let now = now_ms();
        let st = self.state.lock();
        let open_through = st
            .alloc
            .open_leases()
            .next()
            .map(|_| now.div_euclid(MINUTE_MS) * MINUTE_MS);
        let mut out =
            st.ledger
                .daily_statements(now, open_through, self.currency.micro_per_minor());
        apply_payouts(&mut out, &st.payouts);
        if let Some(s) = scope {
            out.retain(|d| d.supplier == s);
        }
        out
    }
}

/// The 401 for a request the access layer let through without a caller (fail closed).
fn unauthenticated() -> Response {
    err(StatusCode::UNAUTHORIZED, "not authenticated")
}

/// `GET /api/v1/earnings/live`: the caller's earnings now, with every running lease.
pub(super) async fn live(
    State(svc): State<AllocService>,
    principal: Option<Extension<Principal>>,
) -> Response {
    let Some(Extension(who)) = principal else {
        return unauthenticated();
    };
    let data = svc.live_earnings(who.scope(), now_ms());
    Json(json!({"status": "success", "data": data})).into_response()
}

/// `GET /api/v1/earnings/statements`: daily statements (accrued → settled, with the carry)
/// and, per supplier, the reconciliation of the ledger against the stored `earnings` rows:
/// every accrued µ is settled, carried or still accruing, and the rows hold exactly the
/// ledger's amounts (`mismatch_micro` is 0).
pub(super) async fn statements(
    State(svc): State<AllocService>,
    principal: Option<Extension<Principal>>,
) -> Response {
    let Some(Extension(who)) = principal else {
        return unauthenticated();
    };
    let days = svc.statements(who.scope());
    // The stored rows, summed by the query engine (internal and unscoped, so narrowed here
    // to the caller's supplier; only suppliers of `days` are reported either way).
    let filter = who.scope().map_or(String::new(), |s| {
        format!(" WHERE supplier = '{}'", s.replace('\'', "''"))
    });
    let sql = format!(
        "SELECT supplier, CAST(sum(amount_micro) AS BIGINT) AS micro FROM earnings{filter} GROUP BY supplier"
    );
    let stored = rows(&svc.query, rigwatch_common::tables::EARNINGS, &sql)
        .await
        .and_then(|r| {
            r.iter()
                .map(|r| Ok((r.req_str("supplier")?.to_string(), r.req_i64("micro")?)))
                .collect::<anyhow::Result<BTreeMap<String, i64>>>()
        });
    let stored = match stored {
        Ok(s) => s,
        Err(e) => {
            let id = rigwatch_query::error::log_internal(&e);
            return err(
                StatusCode::INTERNAL_SERVER_ERROR,
                rigwatch_query::error::internal_message(&id),
            );
        }
    };
    #[derive(Default)]
    struct Totals {
        accrued: i64,
        settled: i64,
        carry: i64,
        accruing: i64,
        paid: i64,
    }
    let mut totals: BTreeMap<&str, Totals> = BTreeMap::new();
    for d in &days {
        let t = totals.entry(d.supplier.as_str()).or_default();
        t.accrued += d.accrued_micro;
        t.paid += d.paid_micro;
        if d.settled {
            t.settled += d.settled_micro;
            t.carry = d.carry_out_micro;
        } else {
            t.accruing += d.accrued_micro;
        }
    }
    let reconciliation: Vec<Value> = totals
        .iter()
        .map(|(s, t)| {
            let rows = stored.get(*s).copied().unwrap_or(0);
            json!({
                "supplier": s,
                "accrued_micro": t.accrued,
                "settled_micro": t.settled,
                "carry_micro": t.carry,
                "accruing_micro": t.accruing,
                "paid_micro": t.paid,
                "payable_micro": t.settled - t.paid,
                "stored_micro": rows,
                "balanced": t.settled + t.carry + t.accruing == t.accrued,
                "mismatch_micro": rows - t.accrued,
            })
        })
        .collect();
    let days: Vec<Value> = days
        .iter()
        .map(|d| {
            json!({
                "supplier": d.supplier,
                "date": d.date,
                "state": day_state(d),
                "accrued_micro": d.accrued_micro,
                "carry_in_micro": d.carry_in_micro,
                "settled_micro": d.settled_micro,
                "carry_out_micro": d.carry_out_micro,
                "paid_micro": d.paid_micro,
                "gpu_seconds": (d.gpu_milli_ms / 1_000_000) as i64,
                "entries": d.entries,
                "settled": d.settled,
            })
        })
        .collect();
    Json(json!({
        "status": "success",
        "data": {
            "currency": svc.currency.code,
            "minor_digits": svc.currency.minor_digits,
            "days": days,
            "reconciliation": reconciliation,
        }
    }))
    .into_response()
}

/// accruing → settled → paid.
fn day_state(d: &DailyStatement) -> &'static str {
    if !d.settled {
        "accruing"
    } else if d.settled_micro > 0 && d.paid_micro == d.settled_micro {
        "paid"
    } else {
        "settled"
    }
}

/// A payout to record: `amount` in currency units (`"12.34"`) or `amount_micro`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayoutRequest {
    supplier: String,
    #[serde(default)]
    amount: Option<String>,
    #[serde(default)]
    amount_micro: Option<i64>,
    reference: String,
    /// When the money was paid (ms since the epoch); default now.
    #[serde(default)]
    paid_ms: Option<i64>,
}

impl AllocService {
    /// Records a payout once it is durable; refused (with the reason) when it is not whole
    /// minor units, exceeds the supplier's settled unpaid balance, or repeats a reference.
    pub async fn record_payout(&self, req: PayoutRequest) -> Result<Payout, (StatusCode, String)> {
        let bad = |m: String| (StatusCode::UNPROCESSABLE_ENTITY, m);
        let amount_micro = match (&req.amount, req.amount_micro) {
            (Some(a), None) => {
                rigwatch_common::money::parse_micro(a).map_err(|e| bad(format!("amount: {e}")))?
            }
            (None, Some(m)) => m,
            _ => {
                return Err(bad(
                    "give exactly one of amount (\"12.34\") and amount_micro".into(),
                ));
            }
        };
        // One payout at a time: the balance check and the write must not interleave.
        let _one = self.payout_lock.lock().await;
        let days = self.statements(Some(&req.supplier));
        let (payout, batch) = {
            let st = self.state.lock();
            let p = Payout {
                payout_id: st.payouts.iter().map(|p| p.payout_id).max().unwrap_or(0) + 1,
                supplier: req.supplier.clone(),
                amount_micro,
                reference: req.reference.trim().to_string(),
                paid_ms: req.paid_ms.unwrap_or_else(now_ms),
            };
            check_payout(&p, &days, &st.payouts, self.currency.micro_per_minor())
                .map_err(|e| bad(e.to_string()))?;
            let mut b = WriteBatch::default();
            payout_row(&mut b, &p, now_ms());
            (p, b)
        };
        self.db
            .write(batch, WriteOptions::singleton(Singleton::Stamped))
            .await
            .map_err(|e| {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("payout not recorded: its row could not be stored ({e})"),
                )
            })?;
        self.state.lock().payouts.push(payout.clone());
        Ok(payout)
    }

    /// Payouts of `scope`'s supplier (or everyone), oldest first.
    pub fn payouts(&self, scope: Option<&str>) -> Vec<Payout> {
        let st = self.state.lock();
        st.payouts
            .iter()
            .filter(|p| scope.is_none_or(|s| s == p.supplier))
            .cloned()
            .collect()
    }
}

/// `POST /api/v1/payouts` (admins): records a payout against settled statements.
pub(super) async fn post_payout(
    State(svc): State<AllocService>,
    body: axum::body::Bytes,
) -> Response {
    let req: PayoutRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("bad payout JSON: {e}")),
    };
    match svc.record_payout(req).await {
        Ok(p) => (
            StatusCode::CREATED,
            Json(json!({"status": "success", "data": p})),
        )
            .into_response(),
        Err((status, m)) => err(status, m),
    }
}

/// `GET /api/v1/payouts`: the caller's payouts.
pub(super) async fn list_payouts(
    State(svc): State<AllocService>,
    principal: Option<Extension<Principal>>,
) -> Response {
    let Some(Extension(who)) = principal else {
        return unauthenticated();
    };
    Json(json!({"status": "success", "data": svc.payouts(who.scope())})).into_response()
}

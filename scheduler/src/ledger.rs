//! The earnings ledger: per-lease, per-minute accrual entries and daily supplier
//! statements, all in integer micro-units of the currency (µ, [`rigwatch_common::money`]).
//!
//! # Rounding rule
//!
//! A lease's exact earnings from its start to time `t` are the rational number
//! `num(t) / D` with
//!
//! ```text
//! num(t) = Σ over rate segments [a, b) ∩ [start, t)  rate × share_milli × (b − a)   (i128)
//! D      = 1000 (thousandths) × 3 600 000 (ms per hour)
//! ```
//!
//! where `rate` is the model's price per GPU-hour in µ in force on the segment.
//! An entry covering `[t0, t1)` is worth `⌊num(t1)/D⌋ − ⌊num(t0)/D⌋`, so the entries of a
//! lease telescope to `⌊num(end)/D⌋`: no µ is created or lost across minutes, restarts or
//! rate changes; at most one µ (the final fraction) is never paid per lease.
//!
//! # Settlement
//!
//! A supplier-day settles once it is over and fully accrued. Its accrued µ plus the carry
//! from the supplier's previous settled day are rounded down to the currency's minor unit
//! (the settled amount); the rest is carried into the next day. So for every supplier,
//! `Σ settled + carry = Σ accrued` over settled days, exactly, and a settled day never
//! changes: its entries are complete and the carry into it depends only on earlier days.
//!
//! Time in the lease's unpaid intervals (the GPU sent no heartbeat) is left out of `num`
//! and of every entry.
//!
//! Entries are cut at every UTC minute boundary, at every rate change, at the edges of
//! unpaid intervals and at the lease's start and end, so an entry never spans two days
//! (statements split leases at midnight) or two rates. An entry's key is `(lease_id, from_ms)`, a pure function of the lease and
//! the rate card: only closed minutes are accrued for open leases, so accruing again, or
//! after a restart from persisted rows ([`Ledger::insert_rows`]), produces the same keys and
//! never counts a minute twice.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::gpu_models;
use crate::model::{Lease, LeaseId, Milli};
use crate::{Error, Result};

/// Milliseconds per minute.
pub const MINUTE_MS: i64 = 60_000;
/// Milliseconds per day.
pub const DAY_MS: i64 = 86_400_000;
/// The denominator `D` of the rounding rule.
pub const DENOMINATOR: i128 = 1000 * 3_600_000;

/// Prices per GPU model per GPU-hour, µ, with effective times.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateCard {
    /// Price for a model without an entry.
    pub default_rate: i64,
    /// Upper-cased model name → (effective_ms, rate), sorted by time.
    changes: BTreeMap<String, Vec<(i64, i64)>>,
}

impl RateCard {
    /// An empty card: every model costs `default_rate`.
    pub fn flat(default_rate: i64) -> RateCard {
        RateCard {
            default_rate,
            changes: BTreeMap::new(),
        }
    }

    /// The catalog's illustrative prices ([`crate::gpu_models`]), in force since forever.
    pub fn illustrative() -> RateCard {
        let mut card = RateCard::flat(gpu_models::FALLBACK_PRICE_MICRO_PER_GPU_HOUR);
        for m in gpu_models::MODELS {
            card.changes.insert(
                m.name.to_ascii_uppercase(),
                vec![(i64::MIN, m.price_micro_per_gpu_hour)],
            );
        }
        card
    }

    /// Sets `model`'s price from `effective_ms` on; changes must come in time order per
    /// model (a change before the model's last change is rejected).
    pub fn set_rate(&mut self, model: &str, effective_ms: i64, rate: i64) -> Result<()> {
        let v = self
            .changes
            .entry(gpu_models::canonical_or_same(model).to_ascii_uppercase())
            .or_default();
        if let Some(&(last, _)) = v.last()
            && effective_ms < last
        {
            return Err(Error::RateChangeOutOfOrder {
                model: model.to_owned(),
                effective_ms,
                last_ms: last,
            });
        }
        if v.last().is_some_and(|&(t, _)| t == effective_ms) {
            v.pop();
        }
        v.push((effective_ms, rate));
        Ok(())
    }

    fn changes_of(&self, model: &str) -> &[(i64, i64)] {
        self.changes
            .get(&gpu_models::canonical_or_same(model).to_ascii_uppercase())
            .map_or(&[], |v| v.as_slice())
    }

    /// Price of `model` at `t`.
    pub fn rate_at(&self, model: &str, t: i64) -> i64 {
        let ch = self.changes_of(model);
        let i = ch.partition_point(|&(e, _)| e <= t);
        if i == 0 {
            self.default_rate
        } else {
            ch[i - 1].1
        }
    }

    /// The first rate change of `model` strictly after `t`.
    fn next_change_after(&self, model: &str, t: i64) -> Option<i64> {
        let ch = self.changes_of(model);
        let i = ch.partition_point(|&(e, _)| e <= t);
        ch.get(i).map(|&(e, _)| e)
    }

    /// `num(t)` of the rounding rule for `lease` (exact, i128): paid time only (the lease's
    /// unpaid intervals do not count).
    pub fn numerator(&self, lease: &Lease, t: i64) -> i128 {
        let end = lease.end_ms.map_or(t, |e| e.min(t));
        let mut a = lease.start_ms;
        let mut num = 0i128;
        while a < end {
            if let Some((_, to)) = lease.unpaid_at(a) {
                a = to;
                continue;
            }
            let mut b = self
                .next_change_after(&lease.model, a)
                .map_or(end, |c| c.min(end));
            if let Some(p) = lease.next_unpaid_after(a) {
                b = b.min(p);
            }
            num += i128::from(self.rate_at(&lease.model, a))
                * i128::from(lease.share_milli)
                * i128::from(b - a);
            a = b;
        }
        num
    }

    /// What `lease` has earned by `t`, to the µ, booked or not: `⌊num(t)/D⌋`. Its entries
    /// sum to exactly this once accrued through `t`, and never to less later: a live figure
    /// computed with it never shows more than will be booked.
    pub fn earned_by(&self, lease: &Lease, t: i64) -> i64 {
        self.numerator(lease, t).div_euclid(DENOMINATOR) as i64
    }

    /// Exact earnings of a closed lease after rounding: `⌊num(end)/D⌋`; equal to the sum of
    /// its entries.
    pub fn lease_total(&self, lease: &Lease) -> i64 {
        let end = lease.end_ms.unwrap_or(lease.start_ms);
        self.numerator(lease, end).div_euclid(DENOMINATOR) as i64
    }
}

/// One accrual row: a lease's earnings over `[from_ms, to_ms)` (within one minute, one day
/// and one rate). Key: `(lease_id, from_ms)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub lease_id: LeaseId,
    pub from_ms: i64,
    pub to_ms: i64,
    pub supplier: String,
    pub gpu_uuid: String,
    pub model: String,
    pub share_milli: Milli,
    pub rate_micro_per_gpu_hour: i64,
    pub amount_micro: i64,
}

impl LedgerEntry {
    /// UTC day number (days since 1970-01-01) the entry belongs to.
    pub fn day(&self) -> i64 {
        self.from_ms.div_euclid(DAY_MS)
    }
}

/// A supplier's earnings for one UTC day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyStatement {
    pub supplier: String,
    /// `YYYY-MM-DD`.
    pub date: String,
    pub day: i64,
    /// Σ of the day's entries, µ.
    pub accrued_micro: i64,
    /// GPU time sold, thousandth-GPU × ms.
    pub gpu_milli_ms: i128,
    pub entries: u64,
    /// The day is over and fully accrued: nothing about it changes any more.
    pub settled: bool,
    /// µ carried in from the supplier's previous settled day (below one minor unit).
    pub carry_in_micro: i64,
    /// What the day pays: `accrued + carry_in` rounded down to the currency's minor unit,
    /// µ (a whole number of minor units). 0 until the day is settled.
    pub settled_micro: i64,
    /// `accrued + carry_in − settled`, carried into the next day, µ. 0 until settled.
    pub carry_out_micro: i64,
    /// How much of the settled amount payouts have covered, µ
    /// ([`crate::payout::apply_payouts`]).
    #[serde(default)]
    pub paid_micro: i64,
}

/// Entries for `[lease.start, upto)` not before `resume_ms`, appended to `out`.
/// `upto` is the lease end if it ended by `now_ms`, else `now_ms` floored to the minute.
pub fn accrue_lease(
    card: &RateCard,
    lease: &Lease,
    now_ms: i64,
    resume_ms: i64,
    out: &mut Vec<LedgerEntry>,
) {
    let upto = match lease.end_ms {
        Some(e) if e <= now_ms => e,
        _ => now_ms.div_euclid(MINUTE_MS) * MINUTE_MS,
    };
    let mut a = resume_ms.max(lease.start_ms);
    if a >= upto {
        return;
    }
    let mut num = card.numerator(lease, a);
    while a < upto {
        // Time the GPU was silent is not paid: no entry covers it.
        if let Some((_, to)) = lease.unpaid_at(a) {
            a = to;
            continue;
        }
        let next_minute = (a.div_euclid(MINUTE_MS) + 1) * MINUTE_MS;
        let mut b = card
            .next_change_after(&lease.model, a)
            .map_or(next_minute, |c| c.min(next_minute))
            .min(upto);
        if let Some(p) = lease.next_unpaid_after(a) {
            b = b.min(p);
        }
        let rate = card.rate_at(&lease.model, a);
        let before = num.div_euclid(DENOMINATOR);
        num += i128::from(rate) * i128::from(lease.share_milli) * i128::from(b - a);
        out.push(LedgerEntry {
            lease_id: lease.lease_id,
            from_ms: a,
            to_ms: b,
            supplier: lease.supplier.clone(),
            gpu_uuid: lease.gpu_uuid.clone(),
            model: lease.model.clone(),
            share_milli: lease.share_milli,
            rate_micro_per_gpu_hour: rate,
            amount_micro: (num.div_euclid(DENOMINATOR) - before) as i64,
        });
        a = b;
    }
}

/// The ledger: a rate card and the entries accrued so far, keyed `(lease_id, from_ms)`.
#[derive(Clone, Debug)]
pub struct Ledger {
    card: RateCard,
    entries: BTreeMap<(LeaseId, i64), LedgerEntry>,
    accrued_through: HashMap<LeaseId, i64>,
    /// Σ of the entries per lease, per supplier and per (supplier, UTC day), kept as entries
    /// are added, so live figures and statements cost no scan of the entries (and hold the
    /// allocator's lock only for a walk over supplier-days).
    booked_by_lease: HashMap<LeaseId, i64>,
    booked_by_supplier: HashMap<String, i64>,
    booked_by_day: BTreeMap<(String, i64), DayTotals>,
    /// Latest time accrual has reached; rate changes before it are refused.
    horizon_ms: i64,
}

impl Ledger {
    pub fn new(card: RateCard) -> Ledger {
        Ledger {
            card,
            entries: BTreeMap::new(),
            accrued_through: HashMap::new(),
            booked_by_lease: HashMap::new(),
            booked_by_supplier: HashMap::new(),
            booked_by_day: BTreeMap::new(),
            horizon_ms: i64::MIN,
        }
    }

    pub fn card(&self) -> &RateCard {
        &self.card
    }

    /// Changes a price from `effective_ms` on; refused if accrual already passed that time.
    pub fn set_rate(&mut self, model: &str, effective_ms: i64, rate: i64) -> Result<()> {
        if effective_ms < self.horizon_ms {
            return Err(Error::RetroactiveRateChange {
                model: model.to_owned(),
                effective_ms,
                accrued_ms: self.horizon_ms,
            });
        }
        self.card.set_rate(model, effective_ms, rate)
    }

    /// Restores persisted entries (after a restart). Idempotent: a row already present is
    /// skipped.
    pub fn insert_rows(&mut self, rows: impl IntoIterator<Item = LedgerEntry>) {
        for e in rows {
            let t = self.accrued_through.entry(e.lease_id).or_insert(i64::MIN);
            *t = (*t).max(e.to_ms);
            self.horizon_ms = self.horizon_ms.max(e.to_ms);
            if let std::collections::btree_map::Entry::Vacant(v) =
                self.entries.entry((e.lease_id, e.from_ms))
            {
                Self::book(
                    &mut self.booked_by_lease,
                    &mut self.booked_by_supplier,
                    &mut self.booked_by_day,
                    &e,
                );
                v.insert(e);
            }
        }
    }

    fn book(
        by_lease: &mut HashMap<LeaseId, i64>,
        by_supplier: &mut HashMap<String, i64>,
        by_day: &mut BTreeMap<(String, i64), DayTotals>,
        e: &LedgerEntry,
    ) {
        *by_lease.entry(e.lease_id).or_default() += e.amount_micro;
        match by_supplier.get_mut(e.supplier.as_str()) {
            Some(t) => *t += e.amount_micro,
            None => {
                by_supplier.insert(e.supplier.clone(), e.amount_micro);
            }
        }
        let d = by_day.entry((e.supplier.clone(), e.day())).or_default();
        d.accrued_micro += e.amount_micro;
        d.gpu_milli_ms += i128::from(e.share_milli) * i128::from(e.to_ms - e.from_ms);
        d.entries += 1;
    }

    /// Accrues `lease` through `now_ms` (closed minutes only while it is open); returns the
    /// new entries (persist them).
    pub fn accrue(&mut self, lease: &Lease, now_ms: i64) -> Vec<LedgerEntry> {
        let resume = self
            .accrued_through
            .get(&lease.lease_id)
            .copied()
            .unwrap_or(i64::MIN);
        let mut out = Vec::new();
        accrue_lease(&self.card, lease, now_ms, resume, &mut out);
        out.retain(|e| !self.entries.contains_key(&(e.lease_id, e.from_ms)));
        for e in &out {
            self.accrued_through.insert(e.lease_id, e.to_ms);
            self.horizon_ms = self.horizon_ms.max(e.to_ms);
            Self::book(
                &mut self.booked_by_lease,
                &mut self.booked_by_supplier,
                &mut self.booked_by_day,
                e,
            );
            self.entries.insert((e.lease_id, e.from_ms), e.clone());
        }
        out
    }

    /// Σ of a lease's entries so far, µ.
    pub fn lease_booked(&self, lease: LeaseId) -> i64 {
        self.booked_by_lease.get(&lease).copied().unwrap_or(0)
    }

    /// Σ of a supplier's entries for UTC day `day`, µ.
    pub fn day_booked(&self, supplier: &str, day: i64) -> i64 {
        self.booked_by_day
            .get(&(supplier.to_owned(), day))
            .map_or(0, |d| d.accrued_micro)
    }

    /// Suppliers with at least one entry.
    pub fn suppliers(&self) -> impl Iterator<Item = &str> {
        self.booked_by_supplier.keys().map(String::as_str)
    }

    pub fn entries(&self) -> impl Iterator<Item = &LedgerEntry> {
        self.entries.values()
    }

    /// Sum of a supplier's entries.
    pub fn supplier_total(&self, supplier: &str) -> i64 {
        self.booked_by_supplier.get(supplier).copied().unwrap_or(0)
    }

    /// Daily statements per supplier (sorted by supplier then day). A day is settled when
    /// `now_ms` is past its end and every lease in it has been accrued past the day
    /// (`open_through_ms`: the earliest time an open lease is accrued through, if any);
    /// settled days round down to `micro_per_minor` (the currency's minor unit in µ) and
    /// carry the rest forward.
    pub fn daily_statements(
        &self,
        now_ms: i64,
        open_through_ms: Option<i64>,
        micro_per_minor: i64,
    ) -> Vec<DailyStatement> {
        let accrued = open_through_ms.map_or(now_ms, |t| t.min(now_ms));
        let mut out: Vec<DailyStatement> = self
            .booked_by_day
            .iter()
            .map(|((supplier, day), t)| DailyStatement {
                supplier: supplier.clone(),
                date: civil_date(*day),
                day: *day,
                accrued_micro: t.accrued_micro,
                gpu_milli_ms: t.gpu_milli_ms,
                entries: t.entries,
                settled: (day + 1) * DAY_MS <= accrued,
                carry_in_micro: 0,
                settled_micro: 0,
                carry_out_micro: 0,
                paid_micro: 0,
            })
            .collect();
        settle(&mut out, micro_per_minor);
        out
    }
}

/// One supplier-day's entries, summed as they are booked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct DayTotals {
    accrued_micro: i64,
    gpu_milli_ms: i128,
    entries: u64,
}

/// Fills in the settlement of `days` (sorted by supplier, then day): each settled day
/// rounds its accrued amount plus the carry down to `micro_per_minor` and carries the rest;
/// the first unsettled day shows the carry it will start from.
pub fn settle(days: &mut [DailyStatement], micro_per_minor: i64) {
    let unit = micro_per_minor.max(1);
    let mut carry = 0i64;
    let mut supplier: Option<String> = None;
    for d in days.iter_mut() {
        if supplier.as_deref() != Some(d.supplier.as_str()) {
            supplier = Some(d.supplier.clone());
            carry = 0;
        }
        d.carry_in_micro = carry;
        if d.settled {
            let available = d.accrued_micro + carry;
            d.settled_micro = available.div_euclid(unit) * unit;
            d.carry_out_micro = available - d.settled_micro;
            carry = d.carry_out_micro;
        }
    }
}

/// `YYYY-MM-DD` of a day number (Howard Hinnant's civil_from_days).
pub fn civil_date(day: i64) -> String {
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(start: i64, end: Option<i64>, share: Milli) -> Lease {
        Lease {
            lease_id: 7,
            job_id: 1,
            gpu_uuid: "GPU-a".into(),
            node: "n".into(),
            supplier: "s".into(),
            model: "H100".into(),
            share_milli: share,
            start_ms: start,
            end_ms: end,
            end_reason: None,
            unpaid: Vec::new(),
        }
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(20_454), "2026-01-01");
        assert_eq!(civil_date(-1), "1969-12-31");
    }

    #[test]
    fn one_hour_of_a_whole_h100_is_the_rate() {
        let card = RateCard::illustrative();
        let l = lease(0, Some(3_600_000), 1000);
        assert_eq!(card.lease_total(&l), 2_500_000);
        let mut out = Vec::new();
        accrue_lease(&card, &l, 10_000_000, i64::MIN, &mut out);
        assert_eq!(out.len(), 60);
        assert_eq!(out.iter().map(|e| e.amount_micro).sum::<i64>(), 2_500_000);
    }

    #[test]
    fn open_lease_accrues_closed_minutes_only_and_resumes_without_double_count() {
        let mut ledger = Ledger::new(RateCard::illustrative());
        let mut l = lease(30_000, None, 333);
        let first = ledger.accrue(&l, 150_000);
        assert_eq!(first.last().unwrap().to_ms, 120_000);
        assert!(ledger.accrue(&l, 170_000).is_empty());
        let rows: Vec<LedgerEntry> = ledger.entries().cloned().collect();
        let mut restarted = Ledger::new(RateCard::illustrative());
        restarted.insert_rows(rows.clone());
        restarted.insert_rows(rows);
        l.end_ms = Some(7_300_000);
        restarted.accrue(&l, 8_000_000);
        let total: i64 = restarted.entries().map(|e| e.amount_micro).sum();
        assert_eq!(total, restarted.card().lease_total(&l));
    }

    #[test]
    fn retroactive_rate_change_is_refused() {
        let mut ledger = Ledger::new(RateCard::illustrative());
        ledger.accrue(&lease(0, Some(600_000), 1000), 600_000);
        let err = ledger.set_rate("H100", 300_000, 1).unwrap_err();
        assert!(matches!(err, Error::RetroactiveRateChange { .. }), "{err}");
        ledger.set_rate("H100", 600_000, 1).unwrap();
        let err = ledger.set_rate("H100", 500_000, 2).unwrap_err();
        assert!(matches!(err, Error::RetroactiveRateChange { .. }), "{err}");
        let mut card = RateCard::flat(10);
        card.set_rate("T4", 1000, 5).unwrap();
        let err = card.set_rate("t4", 999, 6).unwrap_err();
        assert!(matches!(err, Error::RateChangeOutOfOrder { .. }), "{err}");
        assert_eq!(card.rate_at("T4", 999), 10);
        assert_eq!(card.rate_at("T4", 1000), 5);
    }
}

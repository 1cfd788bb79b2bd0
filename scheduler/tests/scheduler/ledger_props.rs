//! Earnings reconcile exactly, to the unit, across fractional shares, midnight, rate changes
//! and a restart mid-lease.

use std::collections::BTreeMap;

use proptest::prelude::*;
use rigwatch_scheduler::ledger::{DAY_MS, Ledger, MINUTE_MS};
use rigwatch_scheduler::{Lease, RateCard};

const MODELS: [&str; 3] = ["H100", "T4", "G2"];
const SUPPLIERS: [&str; 3] = ["alice", "bob", "carol"];

#[derive(Clone, Debug)]
struct L {
    supplier: usize,
    model: usize,
    share: u32,
    start: i64,
    dur: i64,
}

fn lease(id: u64, l: &L, end: Option<i64>) -> Lease {
    Lease {
        lease_id: id,
        job_id: id,
        gpu_uuid: format!("GPU-{id}"),
        node: "n".into(),
        supplier: SUPPLIERS[l.supplier].into(),
        model: MODELS[l.model].into(),
        share_milli: l.share,
        start_ms: l.start,
        end_ms: end,
        end_reason: None,
    }
}

/// Independent reference: ⌊Σ rate × share × overlap / (1000 × 3.6e6)⌋ over the rate
/// timeline of the lease's model.
fn reference(base: i64, changes: &[(i64, i64)], l: &L) -> i64 {
    let (start, end) = (l.start, l.start + l.dur);
    let mut timeline = vec![(i64::MIN, base)];
    timeline.extend_from_slice(changes);
    let mut num: i128 = 0;
    for (i, &(from, rate)) in timeline.iter().enumerate() {
        let to = timeline.get(i + 1).map_or(i64::MAX, |c| c.0);
        let (a, b) = (from.max(start), to.min(end));
        if a < b {
            num += i128::from(rate) * i128::from(l.share) * i128::from(b - a);
        }
    }
    (num / 3_600_000_000) as i64
}

fn leases() -> impl Strategy<Value = Vec<L>> {
    prop::collection::vec(
        (
            0..3usize,
            0..3usize,
            prop_oneof![Just(1000u32), 1..1000u32],
            0..3 * DAY_MS,
            0..2 * DAY_MS,
        )
            .prop_map(|(supplier, model, share, start, dur)| L {
                supplier,
                model,
                share,
                start,
                dur,
            }),
        1..12,
    )
}

fn changes() -> impl Strategy<Value = Vec<(usize, i64, i64)>> {
    prop::collection::vec((0..3usize, 0..5 * DAY_MS, 0..2_000i64), 0..6)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn supplier_entries_sum_to_exact_lease_totals(
        ls in leases(),
        mut ch in changes(),
        restart in 0..5 * DAY_MS,
        early in 0..5 * DAY_MS,
    ) {
        ch.sort_by_key(|c| c.1);
        let mut card = RateCard::illustrative();
        let mut per_model: Vec<Vec<(i64, i64)>> = vec![Vec::new(); 3];
        for &(m, t, r) in &ch {
            card.set_rate(MODELS[m], t, r).unwrap();
            if per_model[m].last().is_some_and(|x| x.0 == t) {
                per_model[m].pop();
            }
            per_model[m].push((t, r));
        }
        let bases: Vec<i64> = MODELS.iter().map(|m| RateCard::illustrative().rate_at(m, 0)).collect();

        // Before the restart: accrue what was known at `early` and at `restart` (leases
        // still running are open), twice to show accrual is idempotent.
        let mut before = Ledger::new(card.clone());
        for t in [early.min(restart), restart, restart] {
            for (i, l) in ls.iter().enumerate() {
                if l.start < t {
                    let end = l.start + l.dur;
                    before.accrue(&lease(i as u64, l, (end <= t).then_some(end)), t);
                }
            }
        }
        let rows: Vec<_> = before.entries().cloned().collect();

        // Restart: rebuild from the persisted rows (loaded twice), then run to the end.
        let mut after = Ledger::new(card.clone());
        after.insert_rows(rows.clone());
        after.insert_rows(rows);
        let far = 10 * DAY_MS;
        for (i, l) in ls.iter().enumerate() {
            after.accrue(&lease(i as u64, l, Some(l.start + l.dur)), far);
        }

        // The same leases accrued in one go give exactly the same rows.
        let mut straight = Ledger::new(card.clone());
        for (i, l) in ls.iter().enumerate() {
            straight.accrue(&lease(i as u64, l, Some(l.start + l.dur)), far);
        }
        let a: Vec<_> = after.entries().collect();
        let b: Vec<_> = straight.entries().collect();
        prop_assert_eq!(a, b);

        let mut expected: BTreeMap<&str, i64> = BTreeMap::new();
        for l in &ls {
            *expected.entry(SUPPLIERS[l.supplier]).or_default() += reference(bases[l.model], &per_model[l.model], l);
        }
        for s in SUPPLIERS {
            prop_assert_eq!(after.supplier_total(s), expected.get(s).copied().unwrap_or(0), "supplier {}", s);
        }
        for (i, l) in ls.iter().enumerate() {
            let lt = card.lease_total(&lease(i as u64, l, Some(l.start + l.dur)));
            prop_assert_eq!(lt, reference(bases[l.model], &per_model[l.model], l));
        }
        for e in after.entries() {
            prop_assert!(e.from_ms < e.to_ms);
            prop_assert_eq!(e.from_ms.div_euclid(MINUTE_MS), (e.to_ms - 1).div_euclid(MINUTE_MS), "entry crosses a minute");
            prop_assert!(e.amount_minor >= 0);
            prop_assert_eq!(e.rate_per_gpu_hour, card.rate_at(&e.model, e.from_ms));
            prop_assert_eq!(card.rate_at(&e.model, e.from_ms), card.rate_at(&e.model, e.to_ms - 1), "entry spans a rate change");
        }
        let statements = after.daily_statements(far, None);
        for s in SUPPLIERS {
            let sum: i64 = statements.iter().filter(|d| d.supplier == s).map(|d| d.amount_minor).sum();
            prop_assert_eq!(sum, after.supplier_total(s));
        }
        prop_assert!(statements.iter().all(|d| d.settled));
    }
}

#[test]
fn lease_across_midnight_splits_into_two_days() {
    let card = RateCard::illustrative();
    let mut ledger = Ledger::new(card);
    let l = L {
        supplier: 0,
        model: 0,
        share: 500,
        start: DAY_MS - 30 * MINUTE_MS,
        dur: 90 * MINUTE_MS,
    };
    ledger.accrue(&lease(1, &l, Some(l.start + l.dur)), 2 * DAY_MS);
    let st = ledger.daily_statements(2 * DAY_MS, None);
    assert_eq!(st.len(), 2);
    assert_eq!(st[0].date, "1970-01-01");
    assert_eq!(st[1].date, "1970-01-02");
    // 250/h × ½ GPU: 62.5 for the first half hour (62 paid by midnight), 187.5 in total (187).
    assert_eq!(st[0].amount_minor, 62);
    assert_eq!(st[0].amount_minor + st[1].amount_minor, 187);
}

#[test]
fn unknown_model_uses_the_default_rate() {
    let card = RateCard::flat(100);
    let l = L {
        supplier: 0,
        model: 0,
        share: 1000,
        start: 0,
        dur: 3_600_000,
    };
    let mut le = lease(1, &l, Some(3_600_000));
    le.model = "MysteryGPU".into();
    assert_eq!(card.lease_total(&le), 100);
}

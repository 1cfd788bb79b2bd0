//! Earnings reconcile exactly, to the micro-unit, across fractional shares, midnight, rate
//! changes and a restart mid-lease; settlement loses nothing and never changes a settled day.

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
        unpaid: Vec::new(),
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
    prop::collection::vec((0..3usize, 0..5 * DAY_MS, 0..20_000_000i64), 0..6)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn supplier_entries_sum_to_exact_lease_totals(
        ls in leases(),
        mut ch in changes(),
        restart in 0..5 * DAY_MS,
        early in 0..5 * DAY_MS,
        unit in prop_oneof![Just(10_000i64), Just(1_000_000i64), Just(1i64)],
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
            prop_assert!(e.amount_micro >= 0);
            prop_assert_eq!(e.rate_micro_per_gpu_hour, card.rate_at(&e.model, e.from_ms));
            prop_assert_eq!(card.rate_at(&e.model, e.from_ms), card.rate_at(&e.model, e.to_ms - 1), "entry spans a rate change");
        }
        let statements = after.daily_statements(far, None, unit);
        for s in SUPPLIERS {
            let days: Vec<_> = statements.iter().filter(|d| d.supplier == s).collect();
            let sum: i64 = days.iter().map(|d| d.accrued_micro).sum();
            prop_assert_eq!(sum, after.supplier_total(s));
            // Σ settled + carry = Σ accrued, each settled amount whole minor units.
            let settled: i64 = days.iter().map(|d| d.settled_micro).sum();
            let carry = days.last().map_or(0, |d| d.carry_out_micro);
            prop_assert_eq!(settled + carry, sum, "supplier {}", s);
            prop_assert!((0..unit).contains(&carry));
            for d in &days {
                prop_assert_eq!(d.settled_micro % unit, 0);
                prop_assert_eq!(d.accrued_micro + d.carry_in_micro, d.settled_micro + d.carry_out_micro);
            }
        }
        prop_assert!(statements.iter().all(|d| d.settled));

        // A day settled at the restart reads the same at the end: settled days are final.
        let open_through = ls.iter().any(|l| l.start < restart && l.start + l.dur > restart)
            .then(|| restart.div_euclid(MINUTE_MS) * MINUTE_MS);
        let mid_open = before.daily_statements(restart, open_through, unit);
        for d in mid_open.iter().filter(|d| d.settled) {
            let later = statements.iter().find(|x| x.supplier == d.supplier && x.day == d.day);
            prop_assert_eq!(Some(d), later, "settled day changed after the restart");
        }
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
    let st = ledger.daily_statements(2 * DAY_MS, None, 10_000);
    assert_eq!(st.len(), 2);
    assert_eq!(st[0].date, "1970-01-01");
    assert_eq!(st[1].date, "1970-01-02");
    // 2.50/h × ½ GPU: 0.625 for the first half hour, 1.875 in total, to the µ.
    assert_eq!(st[0].accrued_micro, 625_000);
    assert_eq!(st[0].accrued_micro + st[1].accrued_micro, 1_875_000);
    // Settled in cents: 0.62 paid, 0.005 carried into the next day, 1.25 + 0.005 → 1.25.
    assert_eq!(
        (st[0].settled_micro, st[0].carry_out_micro),
        (620_000, 5_000)
    );
    assert_eq!(
        (
            st[1].carry_in_micro,
            st[1].settled_micro,
            st[1].carry_out_micro
        ),
        (5_000, 1_250_000, 5_000)
    );
}

#[test]
fn unknown_model_uses_the_default_rate() {
    let card = RateCard::flat(1_000_000);
    let l = L {
        supplier: 0,
        model: 0,
        share: 1000,
        start: 0,
        dur: 3_600_000,
    };
    let mut le = lease(1, &l, Some(3_600_000));
    le.model = "MysteryGPU".into();
    assert_eq!(card.lease_total(&le), 1_000_000);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The live figure (what the portal's ticker shows) never exceeds what the lease's entries
    /// will sum to, equals the booked entries whenever accrual has caught up, and never falls.
    #[test]
    fn live_figure_is_booked_later_never_more(
        l in leases().prop_map(|v| v[0].clone()),
        probes in prop::collection::vec(0..3 * DAY_MS, 1..8),
    ) {
        let card = RateCard::illustrative();
        let end = l.start + l.dur;
        let closed = lease(1, &l, Some(end));
        let total = card.lease_total(&closed);
        let mut ledger = Ledger::new(card.clone());
        let mut probes = probes;
        probes.sort_unstable();
        let mut last = 0;
        for t in probes.into_iter().map(|p| l.start + p) {
            let open = lease(1, &l, (end <= t).then_some(end));
            let live = card.earned_by(&open, t);
            prop_assert!(live <= total, "live {} > final {}", live, total);
            prop_assert!(live >= last, "live figure fell: {} after {}", live, last);
            last = live;
            ledger.accrue(&open, t);
            prop_assert!(ledger.lease_booked(1) <= live);
            let minute = t.div_euclid(MINUTE_MS) * MINUTE_MS;
            let at_minute = card.earned_by(&lease(1, &l, (end <= minute).then_some(end)), minute);
            if end > t {
                prop_assert_eq!(ledger.lease_booked(1), at_minute.max(0));
            }
        }
        ledger.accrue(&closed, end + DAY_MS);
        prop_assert_eq!(ledger.lease_booked(1), total);
    }
}

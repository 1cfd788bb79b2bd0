//! Payouts: money an operator has paid a supplier, recorded against settled statements.
//!
//! A payout is a fact recorded once (amount in µ, whole minor units of the currency; a
//! reference such as a bank transfer id; when it was paid). Payouts cover a supplier's settled
//! days oldest first, so each day reads accrued → settled → paid. A payout can never exceed
//! what is settled and not yet paid ([`check_payout`]): money is paid only once it is final.

use serde::{Deserialize, Serialize};

use crate::ledger::DailyStatement;

/// One recorded payout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payout {
    pub payout_id: u64,
    pub supplier: String,
    /// µ, a whole number of the currency's minor units.
    pub amount_micro: i64,
    /// The operator's reference (transfer id, invoice number); unique per supplier.
    pub reference: String,
    /// When the money was paid, ms since the epoch.
    pub paid_ms: i64,
}

/// Longest accepted payout reference, bytes.
pub const MAX_REFERENCE_LEN: usize = 128;

/// Why a payout was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PayoutError {
    NotPositive,
    NotWholeMinorUnits { micro_per_minor: i64 },
    MoreThanPayable { payable_micro: i64 },
    BadReference(&'static str),
    DuplicateReference,
}

impl std::fmt::Display for PayoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PayoutError::NotPositive => f.write_str("amount: a payout must be more than 0"),
            PayoutError::NotWholeMinorUnits { micro_per_minor } => write!(
                f,
                "amount: a payout must be a whole number of the currency's minor units ({micro_per_minor} µ)"
            ),
            PayoutError::MoreThanPayable { payable_micro } => write!(
                f,
                "amount: more than the supplier's settled, unpaid balance ({payable_micro} µ); only settled days can be paid"
            ),
            PayoutError::BadReference(why) => write!(f, "reference: {why}"),
            PayoutError::DuplicateReference => {
                f.write_str("reference: this supplier already has a payout with this reference")
            }
        }
    }
}

impl std::error::Error for PayoutError {}

/// Fills each day's `paid_micro`: the supplier's payouts cover its settled days oldest first.
/// `days` is sorted by supplier, then day (as [`crate::ledger::Ledger::daily_statements`]).
pub fn apply_payouts(days: &mut [DailyStatement], payouts: &[Payout]) {
    let mut i = 0;
    while i < days.len() {
        let supplier = days[i].supplier.clone();
        let mut left: i64 = payouts
            .iter()
            .filter(|p| p.supplier == supplier)
            .map(|p| p.amount_micro)
            .sum();
        while i < days.len() && days[i].supplier == supplier {
            let d = &mut days[i];
            d.paid_micro = if d.settled {
                d.settled_micro.min(left)
            } else {
                0
            };
            left -= d.paid_micro;
            i += 1;
        }
    }
}

/// What `supplier` may still be paid: settled minus paid, µ.
pub fn payable(days: &[DailyStatement], payouts: &[Payout], supplier: &str) -> i64 {
    let settled: i64 = days
        .iter()
        .filter(|d| d.supplier == supplier && d.settled)
        .map(|d| d.settled_micro)
        .sum();
    let paid: i64 = payouts
        .iter()
        .filter(|p| p.supplier == supplier)
        .map(|p| p.amount_micro)
        .sum();
    settled - paid
}

/// Whether `p` may be recorded now, given the statements and the payouts so far.
pub fn check_payout(
    p: &Payout,
    days: &[DailyStatement],
    payouts: &[Payout],
    micro_per_minor: i64,
) -> Result<(), PayoutError> {
    if p.amount_micro <= 0 {
        return Err(PayoutError::NotPositive);
    }
    if p.amount_micro % micro_per_minor.max(1) != 0 {
        return Err(PayoutError::NotWholeMinorUnits { micro_per_minor });
    }
    if p.reference.trim().is_empty() {
        return Err(PayoutError::BadReference("must not be empty"));
    }
    if p.reference.len() > MAX_REFERENCE_LEN {
        return Err(PayoutError::BadReference("longer than 128 bytes"));
    }
    if p.reference.chars().any(char::is_control) {
        return Err(PayoutError::BadReference(
            "must not hold control characters",
        ));
    }
    if payouts
        .iter()
        .any(|q| q.supplier == p.supplier && q.reference == p.reference)
    {
        return Err(PayoutError::DuplicateReference);
    }
    let payable_micro = payable(days, payouts, &p.supplier);
    if p.amount_micro > payable_micro {
        return Err(PayoutError::MoreThanPayable { payable_micro });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(supplier: &str, day: i64, settled: bool, settled_micro: i64) -> DailyStatement {
        DailyStatement {
            supplier: supplier.into(),
            date: String::new(),
            day,
            accrued_micro: settled_micro,
            gpu_milli_ms: 0,
            entries: 1,
            settled,
            carry_in_micro: 0,
            settled_micro: if settled { settled_micro } else { 0 },
            carry_out_micro: 0,
            paid_micro: 0,
        }
    }

    fn payout(supplier: &str, amount_micro: i64, reference: &str) -> Payout {
        Payout {
            payout_id: 1,
            supplier: supplier.into(),
            amount_micro,
            reference: reference.into(),
            paid_ms: 0,
        }
    }

    #[test]
    fn payouts_cover_settled_days_oldest_first_and_never_more() {
        let mut days = vec![
            day("a", 1, true, 1_000_000),
            day("a", 2, true, 500_000),
            day("a", 3, false, 700_000),
            day("b", 1, true, 200_000),
        ];
        let paid = vec![payout("a", 1_200_000, "t1")];
        apply_payouts(&mut days, &paid);
        let by: Vec<i64> = days.iter().map(|d| d.paid_micro).collect();
        assert_eq!(by, [1_000_000, 200_000, 0, 0]);
        assert_eq!(payable(&days, &paid, "a"), 300_000);
        assert_eq!(payable(&days, &paid, "b"), 200_000);

        let ok = |p: &Payout| check_payout(p, &days, &paid, 10_000);
        assert_eq!(ok(&payout("a", 300_000, "t2")), Ok(()));
        assert_eq!(
            ok(&payout("a", 310_000, "t2")),
            Err(PayoutError::MoreThanPayable {
                payable_micro: 300_000
            })
        );
        assert_eq!(
            ok(&payout("a", 100_000, "t1")),
            Err(PayoutError::DuplicateReference)
        );
        assert_eq!(ok(&payout("b", 100_000, "t1")), Ok(()));
        assert_eq!(
            ok(&payout("a", 5_000, "t3")),
            Err(PayoutError::NotWholeMinorUnits {
                micro_per_minor: 10_000
            })
        );
        assert_eq!(ok(&payout("a", 0, "t3")), Err(PayoutError::NotPositive));
        assert!(matches!(
            ok(&payout("a", 10_000, " ")),
            Err(PayoutError::BadReference(_))
        ));
        assert!(matches!(
            ok(&payout("a", 10_000, "x\ny")),
            Err(PayoutError::BadReference(_))
        ));
        // Unsettled money cannot be paid.
        assert!(ok(&payout("c", 10_000, "t9")).is_err());
    }
}

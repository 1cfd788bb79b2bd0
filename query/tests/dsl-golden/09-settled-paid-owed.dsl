# Settled vs paid vs owed, per supplier and day, in micro-units (the accruing part of open
# leases is live only: GET /api/v1/earnings/live). acme: settled 5.00 + 7.50 + 0.45 +
# 2.1875 + 1.20 = 16.3375, paid 10.00, owed 6.3375. bolt: settled 7.50, paid 5.00, owed 2.50.
earnings[2026-11-02 .. 2026-11-03]
  | stats sum(amount) as settled by supplier, bucket(1d, "UTC") as day
  | join left (payouts[2026-11-02 .. 2026-11-03]
      | stats sum(amount) as paid by supplier, bucket(1d, "UTC") as day) on supplier, day
  | extend paid = coalesce(payouts.paid, 0), owed = settled - coalesce(payouts.paid, 0)
  | select supplier, day, settled, paid, owed
  | sort supplier

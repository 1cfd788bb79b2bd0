# Earnings lost to hardware faults, per supplier and XID: what was paid on leases that a
# hardware fault ended (the renter's work on them was lost). The fault is the hardware XID
# on the lease's GPU within a minute of the lease's end. acme: lease 3 on GPU-A3, XID 79,
# 0.45 (0.75 of an A100 for 30 minutes). bolt: lease 4 on GPU-B1, XID 74, 7.50 (3 H100-hours).
# GPU-A1's XID 48 ended no lease; GPU-A3's XID 13 is an application fault.
earnings[2026-11-02 .. 2026-11-03]
  | join leases[2026-11-02 .. 2026-11-03] on lease_id
  | where leases.end_reason == "fault_hardware"
  | join (faults[2026-11-02 .. 2026-11-03] | where xid_class(code) == "hardware") on gpu_uuid
  | where faults.time >= from_ms(leases.end_ms) - 1m and faults.time <= from_ms(leases.end_ms) + 1m
  | stats sum(amount) as lost_micro, count() as entries by supplier, faults.code as xid
  | sort supplier

# Share of rented minutes throttled (thermal, hardware slowdown or power brake; the idle bit
# is not a slowdown), per supplier. acme: 120 + 180 + 30 + 70 + 60 = 460 rented GPU-minutes
# reported, 10 throttled (GPU-A1, 00:10-00:20) -> 2.17 %. bolt: 180 (GPU-B1 01:00-04:00),
# 30 throttled (01:40-02:10) -> 16.67 %.
gpus[2026-11-02 .. 2026-11-03]
  | join leases[2026-11-02 .. 2026-11-03] on gpu_uuid
  | where time >= from_ms(leases.start_ms) and time < from_ms(leases.end_ms)
  | stats count() as rented_minutes,
          sum(if(throttled(throttle_reasons), 1, 0)) as throttled_minutes by supplier
  | extend throttled_pct = round(throttled_minutes * 100.0 / rented_minutes, 2)
  | sort supplier

# Yield per model, weekly: earnings per offered and per rented GPU-hour (currency units).
# Offered (reported) GPU-hours: H100 3 GPUs x 4 h = 12; A100 GPU-A3 3.5 h + GPU-B2 236 min
# = 7.4333. Earned: H100 5.00 + 7.50 + 7.50 + 2.1875 = 22.1875; A100 0.45 + 1.20 = 1.65.
# Rented: H100 2 + 3 + 3 + 0.875 = 8.875 GPU-h; A100 0.375 + 1 = 1.375.
# Per offered: 22.1875 / 12 = 1.8490, 1.65 / 7.4333 = 0.2220; per rented: 2.50 and 1.20.
# Weeks start on Monday in the zone given (2026-11-02 is a Monday).
gpus[2026-11-02 .. 2026-11-09]
  | stats gpu_hours() as offered by model, bucket(1w, "UTC") as week
  | join left (earnings[2026-11-02 .. 2026-11-09]
      | stats sum(amount) as earned, gpu_hours() as rented by model, bucket(1w, "UTC") as week)
    on model, week
  | extend per_offered = round(earnings.earned / offered / 1000000.0, 4),
           per_rented = round(earnings.earned / earnings.rented / 1000000.0, 4)
  | select model, week, offered, earned, rented, per_offered, per_rented
  | extend offered = round(offered, 4)
  | sort model

# Occupancy (rented / offered GPU-hours) and realised price per rented GPU-hour, per model
# and region. eu-west H100: offered 8 h, rented 2 + 0.875 + 3 = 5.875 -> 0.734, 14.6875 /
# 5.875 = 2.50. eu-west A100: offered 3.5 h, rented 1.375 -> 0.393 at 1.20. us-east H100:
# 4 h, 3 rented -> 0.75 at 2.50. us-east A100: 3.9333 h, never rented -> 0, no price.
gpus[2026-11-02 .. 2026-11-03]
  | stats gpu_hours() as offered by gpu_uuid, model, region
  | join left (earnings[2026-11-02 .. 2026-11-03]
      | stats gpu_hours() as rented, sum(amount) as earned by gpu_uuid) on gpu_uuid
  | stats sum(offered) as offered, sum(coalesce(earnings.rented, 0.0)) as rented,
          sum(coalesce(earnings.earned, 0)) as earned by model, region
  | extend occupancy = round(rented / offered, 3),
           price = round(earned / nullif(rented, 0.0) / 1000000.0, 2),
           offered = round(offered, 4)
  | sort region, model

# Hardware faults per 1,000 GPU-days, by model and driver. H100 on 550.54.15: XID 48
# (GPU-A1) and XID 74 (GPU-B1) in 12 GPU-hours: 2 x 24,000 / 12 = 4,000. A100 on
# 535.104.05: XID 79 (GPU-A3) in 3.5 + 3.9333 GPU-hours: 24,000 / 7.4333 = 3,228.7.
# XID 13 (application) and XID 63 (informational) are not hardware faults.
gpus[2026-11-02 .. 2026-11-03]
  | stats gpu_hours() as hours by gpu_uuid, model, driver_version
  | join left (faults[2026-11-02 .. 2026-11-03]
      | where xid_class(code) == "hardware" | stats count() as hardware by gpu_uuid) on gpu_uuid
  | stats sum(coalesce(faults.hardware, 0)) as faults, sum(hours) as gpu_hours
      by model, driver_version
  | extend per_1000_gpu_days = round(faults * 24000.0 / gpu_hours, 1), gpu_hours = round(gpu_hours, 4)
  | sort model

# Leased-but-idle and unleased-but-busy GPUs: a GPU rented at least half the time that does
# nothing, or one rented under a tenth of the time that is busy. GPU-A2: leased 3 of 4 h at
# 2 % (1.5 % over the four hours) -> leased but idle. GPU-B2: never leased, 80 % -> unleased
# but busy. GPU-A1 (0.72 rented, 71 %), GPU-A3 and GPU-B1 are neither.
gpus[2026-11-02T00:00 .. 2026-11-02T04:00]
  | stats avg(utilization) as util, gpu_hours() as offered by gpu_uuid, supplier
  | join left (leases[2026-11-02 .. 2026-11-03] | stats gpu_hours() as rented by gpu_uuid)
    on gpu_uuid
  | extend occupancy = round(coalesce(leases.rented, 0.0) / offered, 3),
           utilization = round(util, 1)
  | where occupancy >= 0.5 and utilization < 10 or occupancy < 0.1 and utilization > 50
  | extend verdict = if(utilization < 10, "leased but idle", "unleased but busy")
  | select gpu_uuid, supplier, occupancy, utilization, verdict
  | sort gpu_uuid

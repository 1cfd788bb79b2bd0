# Stranded capacity at 02:30: free shares of GPUs in use that fit no
# common job shape (the smallest share any job asked for here is half a GPU, 500 milli).
# Open then: lease 2 (GPU-A2, whole), 4 (GPU-B1, whole), 5 (GPU-A1, 0.75), 6 (GPU-A3,
# whole). GPU-A1's free quarter is stranded.
leases[2026-11-02 .. 2026-11-03]
  | where from_ms(start_ms) <= 2026-11-02T02:30 and from_ms(end_ms) > 2026-11-02T02:30
  | stats sum(share_milli) as used_milli by gpu_uuid, supplier, model
  | extend free_milli = 1000 - used_milli
  | where free_milli > 0 and free_milli < 500
  | sort gpu_uuid

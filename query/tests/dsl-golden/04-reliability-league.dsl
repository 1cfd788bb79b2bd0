# The reliability league: uptime per supplier (the minutes each GPU reported, of the four
# hours), and who is under 98 %. acme: (240 + 240 + 210) / 720 = 0.9583 (GPU-A3 was silent
# for 30 minutes after its XID 79); bolt: (240 + 236) / 480 = 0.9917.
gpus[2026-11-02T00:00 .. 2026-11-02T04:00]
  | stats uptime() as uptime, count_distinct(gpu_uuid) as gpus by supplier
  | extend uptime = round(uptime, 4), under_98 = uptime < 0.98
  | sort uptime

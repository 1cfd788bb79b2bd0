# Requeued or failed jobs by cause, application vs hardware (the reason their lease ended).
# hardware: job 3 (XID 79, requeued, then completed on GPU-A1) and job 4 (XID 74, requeued,
# waiting); application: job 5 (XID 13, failed, not requeued).
leases[2026-11-02 .. 2026-11-03]
  | where end_reason in ("fault_hardware", "fault_application")
  | extend cause = if(end_reason == "fault_hardware", "hardware", "application")
  | join jobs on job_id
  | stats count_distinct(job_id) as jobs, sum(jobs.restarts) as restarts by cause, jobs.state
  | sort cause, state

//! A job's life: the states it can be in and the rules that move it.
//!
//! ```text
//!  submit ─► Queued ──placed──► Running ──end(reason)──► Completed | Cancelled | Failed
//!              ▲   └──end(reason)──► Cancelled…           │
//!              └──── its GPU was lost (hardware fault or offline), restarts < MAX ─┘
//!                    (at MAX: Failed)
//! ```

use serde::{Deserialize, Serialize};

use crate::EndReason;

/// A job whose GPU fails in hardware (or goes offline) goes back to the queue, keeping its
/// place, this many times; after that it ends as `failed`. The renter's work was not at
/// fault, so it should not have to resubmit; a job that keeps landing on failing GPUs stops
/// eventually.
pub const MAX_FAULT_RESTARTS: u32 = 3;

/// Where a job is. Serialised (API, the `job` table's `state` field) in lower case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Completed,
    Cancelled,
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Cancelled => "cancelled",
            JobState::Failed => "failed",
        }
    }

    /// The state [`JobState::as_str`] names; `None` for anything else.
    pub fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "completed" => JobState::Completed,
            "cancelled" => JobState::Cancelled,
            "failed" => JobState::Failed,
            _ => return None,
        })
    }

    /// Whether the job is over (nothing moves it any more).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Cancelled | JobState::Failed
        )
    }

    /// The state a job ending for `reason` ends in.
    pub fn ended(reason: EndReason) -> JobState {
        match reason {
            EndReason::Completed => JobState::Completed,
            EndReason::Cancelled => JobState::Cancelled,
            _ => JobState::Failed,
        }
    }

    /// Ending the job for `reason`: from queued or running; a job already over stays as it
    /// is (the error names its state).
    pub fn end(self, reason: EndReason) -> Result<JobState, String> {
        if self.is_final() {
            Err(format!("already {}", self.as_str()))
        } else {
            Ok(JobState::ended(reason))
        }
    }

    /// A running job whose GPU was lost (not the renter's fault), after `restarts` earlier
    /// restarts: back to the queue while restarts remain, else failed. `None` when the job
    /// was not running (nothing to do).
    pub fn after_gpu_lost(self, restarts: u32) -> Option<JobState> {
        (self == JobState::Running).then_some(if restarts < MAX_FAULT_RESTARTS {
            JobState::Queued
        } else {
            JobState::Failed
        })
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Completed,
        JobState::Cancelled,
        JobState::Failed,
    ];

    #[test]
    fn names_round_trip_as_the_api_and_rows_spell_them() {
        for s in ALL {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::Value::from(s.as_str())
            );
        }
        assert_eq!(JobState::parse("done"), None);
    }

    #[test]
    fn only_live_jobs_end_and_the_reason_decides_how() {
        assert_eq!(
            JobState::Queued.end(EndReason::Cancelled),
            Ok(JobState::Cancelled)
        );
        assert_eq!(
            JobState::Running.end(EndReason::Completed),
            Ok(JobState::Completed)
        );
        for r in [
            EndReason::FaultHardware,
            EndReason::FaultApplication,
            EndReason::Preempted,
            EndReason::Offline,
        ] {
            assert_eq!(JobState::Running.end(r), Ok(JobState::Failed), "{r:?}");
        }
        for s in ALL.into_iter().filter(|s| s.is_final()) {
            assert_eq!(
                s.end(EndReason::Completed),
                Err(format!("already {}", s.as_str()))
            );
        }
    }

    #[test]
    fn a_lost_gpu_requeues_a_running_job_up_to_the_limit() {
        for n in 0..MAX_FAULT_RESTARTS {
            assert_eq!(JobState::Running.after_gpu_lost(n), Some(JobState::Queued));
        }
        assert_eq!(
            JobState::Running.after_gpu_lost(MAX_FAULT_RESTARTS),
            Some(JobState::Failed)
        );
        for s in ALL.into_iter().filter(|s| *s != JobState::Running) {
            assert_eq!(s.after_gpu_lost(0), None, "{s:?}");
        }
    }
}

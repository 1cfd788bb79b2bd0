//! Query execution on a runtime of its own.
//!
//! A DataFusion plan is CPU-bound and runs in long stretches between yields. On the server's
//! main runtime, a heavy query (a supplier's `generate_series` up to its deadline) would hold
//! a worker thread that agent writes, acknowledgements and the portal are waiting for; on a
//! two-core machine one query could halve the server's responsiveness. Here every query's
//! execution runs on a separate pool of threads (as InfluxDB 3's dedicated executor does), so
//! the operating system's scheduler shares the cores between queries and the write path by
//! time slices instead of the write path queueing behind a query.
//!
//! Dropping the returned future (the deadline passed, the client went away) aborts the
//! query's task, which drops its plan and stops its work.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::Runtime;

/// The query runtime, created on first use: one worker per core.
fn runtime() -> Option<&'static Runtime> {
    static RUNTIME: OnceLock<Option<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
            match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("rigwatch-query")
                .enable_all()
                .build()
            {
                Ok(rt) => Some(rt),
                Err(error) => {
                    tracing::warn!(%error, "no separate query runtime; queries share the server's");
                    None
                }
            }
        })
        .as_ref()
}

/// Aborts the task when the caller stops waiting for it.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `work` on the query runtime and waits for its result.
pub async fn run<F, T>(work: F) -> T
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let Some(rt) = runtime() else {
        return work.await;
    };
    let task = rt.spawn(work);
    let _abort = AbortOnDrop(task.abort_handle());
    match task.await {
        Ok(v) => v,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Cancelled: only by `_abort`, that is when this future was dropped, so never
            // observed here; and a runtime shutting down at process exit.
            Err(e) => panic!("query task ended without a result: {e}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn work_runs_elsewhere_and_stops_when_dropped() {
        let here = std::thread::current().id();
        let there = super::run(async { std::thread::current().id() }).await;
        assert_ne!(here, there);
        let name = super::run(async { std::thread::current().name().map(str::to_owned) }).await;
        assert_eq!(name.as_deref(), Some("rigwatch-query"));

        let finished = Arc::new(AtomicBool::new(false));
        let f = finished.clone();
        let waited = tokio::time::timeout(
            Duration::from_millis(50),
            super::run(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                f.store(true, Ordering::SeqCst);
            }),
        )
        .await;
        assert!(waited.is_err());
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !finished.load(Ordering::SeqCst),
            "the dropped query kept running"
        );
    }
}

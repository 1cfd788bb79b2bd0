//! Spawned tasks that cannot outlive their owner.
//!
//! [`spawn`] is the one way library crates start a task (`clippy.toml` bans `tokio::spawn`
//! there; `.ci/run` checks it). It returns a [`Task`], which aborts its task when dropped: a
//! service keeps the `Task`s of what it started, and stopping the service (dropping them, or
//! [`Task::abort`]) stops every task, so nothing runs on after shutdown unowned.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::task::{JoinError, JoinHandle};

/// A running task, stopped when this handle is dropped. Await it for the task's result.
#[must_use = "a Task stops its task when dropped: keep it where the task's life belongs"]
#[derive(Debug)]
pub struct Task<T>(JoinHandle<T>);

/// Starts `future` on the current Tokio runtime, owned by the returned [`Task`].
#[allow(clippy::disallowed_methods)] // The one place tasks are started: its handle is returned.
pub fn spawn<F>(future: F) -> Task<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    Task(tokio::spawn(future))
}

impl<T> Task<T> {
    /// Stops the task at its next await point (nothing when it has finished).
    pub fn abort(&self) {
        self.0.abort();
    }

    /// Whether the task has finished (returned, panicked or been aborted).
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for Task<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_dropped_task_stops_and_an_awaited_one_answers() {
        let ran_on = Arc::new(AtomicBool::new(false));
        let flag = ran_on.clone();
        let t = spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            flag.store(true, Ordering::SeqCst);
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(t);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            !ran_on.load(Ordering::SeqCst),
            "a dropped task kept running"
        );
        assert_eq!(spawn(async { 7 }).await.unwrap(), 7);
    }
}

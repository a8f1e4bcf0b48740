//! The owner of every task a node starts: one stop signal all of them receive, and one
//! join of them all (the way mini-redis's server broadcasts its shutdown and waits for
//! every connection to finish).
//!
//! ```text
//!   Tasks ──spawn(name, fut)──► JoinSet ─┐
//!     │                                   ├─ shutdown(grace): signal stop → join every
//!     └──stopped() (a future per service) ┘   task → abort what is left after `grace`
//! ```
//!
//! [`Tasks::spawn`] runs a future until it ends or the stop signal comes, whichever is
//! first: a task is cancelled at its next await. A service that must finish something
//! first (the HTTP server drains its connections) takes [`Tasks::stopped`] itself and is
//! spawned with [`Tasks::spawn_graceful`]. [`Tasks::shutdown`] returns once every task
//! has ended; none outlives the node.

use std::{
    future::Future,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::{sync::watch, task::JoinSet};

/// A node's tasks; clones share them.
#[derive(Clone, Debug)]
pub struct Tasks {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    stop: watch::Sender<bool>,
    set: Mutex<JoinSet<()>>,
}

impl Default for Tasks {
    fn default() -> Self {
        Self::new()
    }
}

impl Tasks {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                stop: watch::Sender::new(false),
                set: Mutex::new(JoinSet::new()),
            }),
        }
    }

    fn set(&self) -> MutexGuard<'_, JoinSet<()>> {
        self.inner.set.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `fut` until it ends or the node stops. Call from within the runtime.
    pub fn spawn<F>(&self, name: &'static str, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stopped = self.stopped();
        self.spawn_graceful(name, async move {
            tokio::select! {
                () = fut => {}
                () = stopped => tracing::trace!(task = name, "stopped"),
            }
        });
    }

    /// Runs `fut` to its end; `fut` watches [`stopped`](Self::stopped) itself and ends
    /// soon after it fires (shutdown aborts it after its grace period otherwise).
    pub fn spawn_graceful<F>(&self, name: &'static str, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut set = self.set();
        // Reap what has ended, so a long-lived node does not keep every finished
        // task's slot.
        while let Some(ended) = set.try_join_next() {
            if let Err(e) = ended
                && e.is_panic()
            {
                tracing::error!(error = %e, "a node task panicked");
            }
        }
        if self.is_stopping() {
            // Stopping: nothing new starts.
            tracing::debug!(task = name, "not started: the node is stopping");
            return;
        }
        set.spawn(fut);
    }

    /// Resolves once the node begins to stop.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.inner.stop.subscribe();
        async move {
            // An error means the sender is gone: the node is gone too.
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    pub fn is_stopping(&self) -> bool {
        *self.inner.stop.borrow()
    }

    /// How many tasks have not ended yet (finished ones not reaped are counted).
    pub fn len(&self) -> usize {
        self.set().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Signals every task to stop and waits until all have ended; after `grace`, the
    /// rest are aborted (and waited for).
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.stop.send_replace(true);
        let mut set = std::mem::take(&mut *self.set());
        let joined = tokio::time::timeout(grace, async {
            while let Some(ended) = set.join_next().await {
                if let Err(e) = ended
                    && e.is_panic()
                {
                    tracing::error!(error = %e, "a node task panicked");
                }
            }
        })
        .await;
        if joined.is_err() {
            tracing::warn!(
                left = set.len(),
                "node tasks still running after {grace:?}; aborting them"
            );
            set.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_every_task_and_waits_for_them() {
        let tasks = Tasks::new();
        let ended = Arc::new(AtomicBool::new(false));
        tasks.spawn("forever", std::future::pending());
        let e = ended.clone();
        let stopped = tasks.stopped();
        tasks.spawn_graceful("graceful", async move {
            stopped.await;
            tokio::time::sleep(Duration::from_millis(10)).await;
            e.store(true, Ordering::SeqCst);
        });
        assert_eq!(tasks.len(), 2);
        tasks.shutdown(Duration::from_secs(1)).await;
        assert!(
            ended.load(Ordering::SeqCst),
            "the graceful task finished its work"
        );
        assert!(tasks.is_empty());
        tasks.spawn("late", std::future::pending());
        assert!(tasks.is_empty(), "nothing starts once stopping");
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_ignores_the_signal_is_aborted_after_the_grace() {
        let tasks = Tasks::new();
        tasks.spawn_graceful("stubborn", std::future::pending());
        let before = tokio::time::Instant::now();
        tasks.shutdown(Duration::from_millis(300)).await;
        assert!(before.elapsed() >= Duration::from_millis(300));
        assert!(tasks.is_empty());
    }

    #[tokio::test]
    async fn finished_tasks_are_reaped() {
        let tasks = Tasks::new();
        for _ in 0..100 {
            tasks.spawn("short", async {});
            tokio::task::yield_now().await;
        }
        assert!(tasks.len() < 100, "{} slots kept", tasks.len());
        tasks.shutdown(Duration::from_secs(1)).await;
    }
}

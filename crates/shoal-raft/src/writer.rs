//! Group commit: one thread owns the log and writes whatever has queued up since its
//! last commit in ONE transaction — one fsync for many appends and votes.
//!
//! ```text
//!  submit(write, done) ──► queue ──► writer thread: take 1, then drain up to BATCH_MAX
//!                                      └─ DiskLog::write_batch (one fsync)
//!                                      └─ done(result) for each, in order
//! ```
//!
//! Writes are applied in submission order, so a vote is never reordered against an
//! append. A write's `done` runs only after its transaction committed (or failed).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
};

use crate::store::{DiskLog, StoreError, Write};

/// Most writes in one transaction.
pub const BATCH_MAX: usize = 1024;

/// Called with a write's outcome once it is durable (or failed).
pub type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// The writer has stopped; the write was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the log writer has stopped")]
pub struct Stopped;

/// Handle on the writer thread.
#[derive(Debug)]
pub struct LogWriter {
    jobs: Option<mpsc::Sender<(Write, Done)>>,
    commits: Arc<AtomicU64>,
    /// Writes submitted and not yet done.
    pending: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
    log: Option<Arc<Mutex<DiskLog>>>,
    /// Each write in flight holds tokio's paused clock (simulation).
    hold_clock: bool,
}

impl LogWriter {
    pub fn spawn(log: DiskLog) -> Self {
        Self::spawn_shared(Arc::new(Mutex::new(log)))
    }

    /// A writer on a log that others read meanwhile: the writer holds the lock only
    /// while it writes a batch.
    pub fn spawn_shared(log: Arc<Mutex<DiskLog>>) -> Self {
        let shared = log.clone();
        let (tx, rx) = mpsc::channel::<(Write, Done)>();
        let commits = Arc::new(AtomicU64::new(0));
        let counter = commits.clone();
        let pending = Arc::new(AtomicU64::new(0));
        let in_queue = pending.clone();
        let thread = std::thread::Builder::new()
            .name("shoal-log-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while batch.len() < BATCH_MAX {
                        match rx.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    let (writes, dones): (Vec<Write>, Vec<Done>) = batch.into_iter().unzip();
                    let results = shared
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .write_batch(&writes);
                    counter.fetch_add(1, Ordering::Relaxed);
                    for (done, result) in dones.into_iter().zip(results) {
                        done(result);
                        in_queue.fetch_sub(1, Ordering::Release);
                    }
                }
            })
            .expect("spawning a thread only fails when the OS is out of resources");
        Self {
            jobs: Some(tx),
            commits,
            pending,
            thread: Some(thread),
            log: Some(log),
            hold_clock: false,
        }
    }

    /// [`spawn_shared`](Self::spawn_shared) for a simulation under tokio's paused clock:
    /// each write in flight is watched by a blocking task, and tokio does not advance a
    /// paused clock while a blocking task runs. Without it the runtime, idle while the
    /// writer syncs, would jump to the next timer (an election timeout, say) as if the
    /// sync had taken that long.
    pub fn spawn_holding_clock(log: Arc<Mutex<DiskLog>>) -> Self {
        let mut writer = Self::spawn_shared(log);
        writer.hold_clock = true;
        writer
    }

    /// Queues a write; `done` runs on the writer thread once it is on disk.
    pub fn submit(&self, write: Write, done: Done) -> Result<(), Stopped> {
        let jobs = self.jobs.as_ref().ok_or(Stopped)?;
        let done: Done = match tokio::runtime::Handle::try_current() {
            Ok(rt) if self.hold_clock => {
                let (tx, rx) = std::sync::mpsc::channel::<()>();
                rt.spawn_blocking(move || {
                    let _ = rx.recv();
                });
                Box::new(move |result| {
                    done(result);
                    let _ = tx.send(());
                })
            }
            _ => done,
        };
        self.pending.fetch_add(1, Ordering::AcqRel);
        jobs.send((write, done)).map_err(|_| {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            Stopped
        })
    }

    /// True when every submitted write is done: a write made elsewhere now (under the
    /// log's lock) cannot overtake one still queued here.
    pub fn is_idle(&self) -> bool {
        self.pending.load(Ordering::Acquire) == 0
    }

    /// Transactions committed so far (each is one fsync).
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Finishes every queued write and hands the log back (`None` while others still
    /// hold it).
    pub fn close(mut self) -> Option<DiskLog> {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        Arc::try_unwrap(self.log.take()?)
            .ok()
            .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

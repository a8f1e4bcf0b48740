//! shoal's consensus layer.
//!
//! ```text
//!  RaftGroup (next: openraft behind our own interface)
//!     │ append / truncate / purge / vote / committed / snapshot
//!     ▼
//!  writer::LogWriter ── one thread owns the log; what queued up meanwhile is written
//!     │                 in one transaction (group commit: one fsync for the lot)
//!     ▼
//!  store::DiskLog ── one SQLite file per group under --data-dir, WAL mode,
//!                      synchronous=FULL: a write is on disk before it is acknowledged
//! ```
//!
//! What exists today is the durable log; the Raft group itself, its gRPC network and
//! the KV service are being built on it (issue: control plane).

pub mod group;
pub mod segments;
pub mod store;
pub mod writer;

pub use store::{DiskLog, LogRecord, StoreError, StoredSnapshot, Write};

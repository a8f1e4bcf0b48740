//! shoal's consensus layer: openraft behind our own interface.
//!
//! ```text
//!  group::RaftGroup / Replica ── propose, linearizable reads, membership changes
//!     │  (openraft: elections, replication over gRPC streams, commit, apply)
//!     ▼
//!  group::log_store ── in-memory tail of recent entries (replication reads it while
//!     │               the fsync runs); every change queued in order to ...
//!     ▼
//!  writer::LogWriter ── one thread; what queued up meanwhile is written together
//!     │                 (group commit: one fdatasync for the lot)
//!     ▼
//!  store::DiskLog ── segments::Segments (the entries, append-only files)
//!                    + SQLite (vote, commit index, purge point, snapshot)
//! ```
//!
//! Nothing outside this crate names openraft types.

pub mod group;
pub mod segments;
pub mod store;
pub mod testing;
pub mod writer;

pub use store::{DiskLog, LogRecord, SnapshotSaver, StoreError, StoredSnapshot, Write};

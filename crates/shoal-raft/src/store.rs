//! The durable Raft log of one group: entries in append-only segment files
//! ([`Segments`]), everything else in one SQLite file.
//!
//! ```text
//!  <name>.db         SQLite, WAL, synchronous=FULL always: vote, purge point, snapshot
//!  <name>.log/       segments: the entries (one write + fdatasync per batch)
//!  <name>.committed  the commit index: overwritten in place, never fsynced, checksummed
//! ```
//!
//! A batch of writes ([`DiskLog::write_batch`]) is made durable together: the entries
//! are synced first, then the SQLite transaction commits (fsynced), then the commit
//! index is written — so a saved commit index or purge point never refers to entries
//! that are not on disk. A purge deletes segment files only after the new purge point
//! is durable. Nothing SQLite holds is ever written unsynced: a WAL checkpoint run in
//! an unsynced commit could copy the vote or purge point into the database without
//! fsync, and a power loss would then tear it. The commit index needs no durability
//! (a restarted member learns it again) and lives outside SQLite for that reason.
//!
//! Invariants, checked on every mutation and by [`DiskLog::validate`]:
//! * indexes in the log are contiguous: `first..=last` with no hole;
//! * the log starts right after the last purged entry (if any);
//! * terms never decrease along the log.

use std::{ops::RangeInclusive, path::Path};

use rusqlite::{Connection, OptionalExtension, params};

use crate::segments::{SegmentError, Segments};

/// One log entry: its position, its term and the encoded command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub index: u64,
    pub term: u64,
    pub payload: Vec<u8>,
}

/// A snapshot as stored: its encoded metadata and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSnapshot {
    pub meta: Vec<u8>,
    pub data: Vec<u8>,
}

/// A storage failure. `Io` and `Batch` mean the disk or SQLite failed and the state on
/// disk is as of the last successful commit; the others are refused requests that
/// changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Io(#[from] rusqlite::Error),
    /// The batch's transaction could not begin or commit: no write of it is on disk.
    #[error("storage: batch not written: {0}")]
    Batch(String),
    #[error("append: entry {got} does not follow the last entry {last:?}")]
    Gap { got: u64, last: Option<u64> },
    #[error("append: term {term} at {index} is below the previous entry's term {previous}")]
    TermRegression {
        index: u64,
        term: u64,
        previous: u64,
    },
    #[error(
        "the log file was written by schema version {0}; this build reads version {SCHEMA_VERSION}"
    )]
    Schema(i64),
    #[error("log segments: {0}")]
    Segments(#[from] SegmentError),
}

/// Bumped whenever the on-disk layout changes.
pub const SCHEMA_VERSION: i64 = 2;

/// The log of one Raft group.
#[derive(Debug)]
pub struct DiskLog {
    conn: Connection,
    segments: Segments,
    /// The purge point (as stored in SQLite).
    purged: Option<(u64, u64)>,
    /// The SQLite file (`None` in memory).
    path: Option<std::path::PathBuf>,
    /// SQLite's `synchronous` setting: "FULL", or "OFF" for an unsynced simulation log.
    synchronous: &'static str,
    /// Where the commit index is kept: a file beside the database, or memory.
    committed: CommittedStore,
}

/// The commit index's home. Written after the entries it covers are synced and never
/// fsynced itself: after a power loss it holds an older value (harmless), this one,
/// or a torn record that the checksum rejects (then: unknown, as for a new member).
#[derive(Debug)]
enum CommittedStore {
    File(std::fs::File, std::path::PathBuf),
    Memory(Option<Vec<u8>>),
}

impl CommittedStore {
    /// Record: len u32 LE | crc32 u32 LE | payload.
    fn save(&mut self, value: &[u8]) -> Result<(), StoreError> {
        match self {
            CommittedStore::Memory(v) => {
                *v = Some(value.to_vec());
                Ok(())
            }
            CommittedStore::File(f, path) => {
                use std::os::unix::fs::FileExt as _;
                let mut rec = Vec::with_capacity(8 + value.len());
                rec.extend_from_slice(&(value.len() as u32).to_le_bytes());
                rec.extend_from_slice(&crate::segments::crc32(value).to_le_bytes());
                rec.extend_from_slice(value);
                f.write_all_at(&rec, 0)
                    .map_err(|e| StoreError::Batch(format!("{}: {e}", path.display())))
            }
        }
    }

    fn load(&self) -> Option<Vec<u8>> {
        match self {
            CommittedStore::Memory(v) => v.clone(),
            CommittedStore::File(f, _) => {
                use std::os::unix::fs::FileExt as _;
                let mut head = [0u8; 8];
                f.read_exact_at(&mut head, 0).ok()?;
                let len = u32::from_le_bytes(head[..4].try_into().ok()?) as usize;
                let crc = u32::from_le_bytes(head[4..].try_into().ok()?);
                if len > 1024 {
                    return None;
                }
                let mut value = vec![0u8; len];
                f.read_exact_at(&mut value, 8).ok()?;
                (crate::segments::crc32(&value) == crc).then_some(value)
            }
        }
    }
}

const META_VOTE: &str = "vote";
const META_COMMITTED: &str = "committed";
const META_PURGED: &str = "purged";
const META_PURGED_ID: &str = "purged_id";

/// Where the segments of the log at `path` live: `raft.db` → `raft.log/`.
pub fn segments_dir(path: &Path) -> std::path::PathBuf {
    path.with_extension("log")
}

impl DiskLog {
    /// Opens (creating if needed) the log at `path` and its segments beside it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_file(path, true)
    }

    /// An in-memory log (tests and simulation): same code, no durability.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?, Segments::in_memory())
    }

    /// A file log without fsync, for simulation: it survives its process being killed
    /// (the OS keeps the writes), not the machine losing power.
    pub fn open_unsynced(path: &Path) -> Result<Self, StoreError> {
        let mut log = Self::open_file(path, false)?;
        log.conn.pragma_update(None, "synchronous", "OFF")?;
        log.synchronous = "OFF";
        Ok(log)
    }

    fn open_file(path: &Path, sync: bool) -> Result<Self, StoreError> {
        let new = !path.exists();
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let segments = Segments::open(&segments_dir(path), sync)?;
        // SQLite's own WAL checkpoints (every 1,000 pages) are fine here: the entries,
        // the hot path, do not go through SQLite.
        let mut log = Self::init(conn, segments)?;
        log.path = Some(path.to_path_buf());
        let committed_path = path.with_extension("committed");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&committed_path)
            .map_err(|e| StoreError::Batch(format!("{}: {e}", committed_path.display())))?;
        // A log written before the commit index had its own file keeps it in SQLite.
        let legacy = meta_in(&log.conn, META_COMMITTED)?;
        log.committed = CommittedStore::File(file, committed_path);
        if log.committed.load().is_none()
            && let Some(old) = legacy
        {
            log.committed.save(&old)?;
        }
        if new && sync {
            // The new database file's entry in its directory (and its WAL's) must be
            // durable before anything in it is acknowledged.
            crate::segments::sync_parent(path).map_err(|e| {
                StoreError::Batch(format!("fsync the directory of {}: {e}", path.display()))
            })?;
        }
        Ok(log)
    }

    fn init(conn: Connection, segments: Segments) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS meta (
                 key   TEXT PRIMARY KEY,
                 value BLOB NOT NULL
             );
             CREATE TABLE IF NOT EXISTS snapshot (
                 id   INTEGER PRIMARY KEY CHECK (id = 1),
                 meta BLOB NOT NULL,
                 data BLOB NOT NULL
             );",
        )?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let purged = purged_in(&conn)?;
        let mut log = Self {
            conn,
            segments,
            purged,
            path: None,
            synchronous: "FULL",
            committed: CommittedStore::Memory(None),
        };
        match version {
            0 => log
                .conn
                .pragma_update(None, "user_version", SCHEMA_VERSION)?,
            1 => log.migrate_v1()?,
            SCHEMA_VERSION => {}
            other => return Err(StoreError::Schema(other)),
        }
        Ok(log)
    }

    /// Version 1 kept the entries in a SQLite table: move them to the segments.
    fn migrate_v1(&mut self) -> Result<(), StoreError> {
        let records: Vec<LogRecord> = {
            let mut stmt = self
                .conn
                .prepare("SELECT idx, term, payload FROM log ORDER BY idx")?;
            let rows = stmt.query_map([], |r| {
                Ok(LogRecord {
                    index: r.get::<_, i64>(0)? as u64,
                    term: r.get::<_, i64>(1)? as u64,
                    payload: r.get(2)?,
                })
            })?;
            rows.collect::<Result<_, _>>()?
        };
        if self.segments.last().is_none() {
            self.segments.append(&records)?;
            self.segments.sync()?;
        }
        self.conn.execute_batch("DROP TABLE log;")?;
        self.conn
            .pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tracing::info!(
            entries = records.len(),
            "moved the Raft log from SQLite to segment files"
        );
        Ok(())
    }

    /// (index, term) of the last entry in the log, or of the last purged one if the log
    /// is empty.
    pub fn last(&self) -> Result<Option<(u64, u64)>, StoreError> {
        Ok(last_of(&self.segments, self.purged))
    }

    /// (index, term) of the last entry removed by [`purge_upto`](Self::purge_upto).
    pub fn purged(&self) -> Result<Option<(u64, u64)>, StoreError> {
        Ok(self.purged)
    }

    /// Appends entries in one transaction (one fsync). They must follow the last entry.
    pub fn append(&mut self, entries: &[LogRecord]) -> Result<(), StoreError> {
        self.write_one(Write::Append(entries.to_vec()))
    }

    /// Performs `writes` in order and makes them durable together — one fsync of
    /// the entries and one SQLite commit for the lot (group commit). Each write is
    /// checked against the log as the earlier ones left it; a refused write changes
    /// nothing and does not stop the others. If making the batch durable fails, every
    /// write fails.
    ///
    /// A purge ends a run: what came before it and the purge point are made durable,
    /// then the segments it covers are deleted, then the rest of the batch runs.
    pub fn write_batch(&mut self, writes: &[Write]) -> Vec<Result<(), StoreError>> {
        let mut results = Vec::with_capacity(writes.len());
        let mut rest = writes;
        while !rest.is_empty() {
            let cut = rest
                .iter()
                .position(|w| matches!(w, Write::Purge { .. } | Write::PurgeUpto { .. }))
                .map_or(rest.len(), |i| i + 1);
            let (run, tail) = rest.split_at(cut);
            results.extend(self.write_run(run));
            rest = tail;
        }
        results
    }

    fn write_run(&mut self, writes: &[Write]) -> Vec<Result<(), StoreError>> {
        let mut results = self.write_durable(writes);
        // The commit index last, and only once what it covers is durable.
        let batch_failed = results
            .iter()
            .any(|r| matches!(r, Err(StoreError::Batch(_))));
        if !batch_failed {
            for (w, r) in writes.iter().zip(results.iter_mut()) {
                if let Write::Committed(c) = w {
                    *r = self.committed.save(c);
                }
            }
        }
        results
    }

    /// Everything of `writes` but the commit index, made durable together.
    fn write_durable(&mut self, writes: &[Write]) -> Vec<Result<(), StoreError>> {
        let no_sqlite = writes.iter().all(|w| {
            matches!(
                w,
                Write::Append(_) | Write::TruncateAfter(_) | Write::Committed(_)
            )
        });
        if no_sqlite {
            // The hot path: no SQLite at all, one fdatasync.
            let results: Vec<Result<(), StoreError>> = writes
                .iter()
                .map(|w| entries_write(&mut self.segments, self.purged, w))
                .collect();
            return match self.segments.sync() {
                Ok(()) => results,
                Err(e) => writes
                    .iter()
                    .map(|_| Err(StoreError::Batch(e.to_string())))
                    .collect(),
            };
        }
        let Self {
            conn,
            segments,
            purged,
            ..
        } = self;
        let mut purged_now = *purged;
        let results = {
            let mut tx = match conn.transaction() {
                Ok(tx) => tx,
                Err(e) => return fail_all(writes, &e),
            };
            // Each SQLite write in its own savepoint: one that fails leaves nothing behind.
            let results: Vec<Result<(), StoreError>> = writes
                .iter()
                .map(|w| match w {
                    Write::Append(_) | Write::TruncateAfter(_) | Write::Committed(_) => {
                        entries_write(segments, purged_now, w)
                    }
                    other => {
                        let savepoint = tx.savepoint()?;
                        if let Some(p) = apply_meta(&savepoint, other, purged_now)? {
                            purged_now = Some(p);
                        }
                        Ok(savepoint.commit()?)
                    }
                })
                .collect();
            // Entries first: a commit index or purge point saved below must not refer to
            // entries that are not on disk.
            match segments
                .sync()
                .map_err(StoreError::from)
                .and_then(|()| Ok(tx.commit()?))
            {
                Ok(()) => results,
                Err(e) => writes
                    .iter()
                    .map(|_| Err(StoreError::Batch(e.to_string())))
                    .collect(),
            }
        };
        if results
            .iter()
            .any(|r| matches!(r, Err(StoreError::Batch(_))))
        {
            return results;
        }
        if purged_now != *purged {
            *purged = purged_now;
            if let Some((index, _)) = purged_now
                && let Err(e) = segments.purge_upto(index)
            {
                // Harmless: those entries are below the purge point and are skipped;
                // the next purge deletes them.
                tracing::warn!(error = %e, "deleting purged log segments failed");
            }
        }
        results
    }

    fn write_one(&mut self, write: Write) -> Result<(), StoreError> {
        self.write_batch(std::slice::from_ref(&write))
            .pop()
            .unwrap_or(Ok(()))
    }

    /// Entries with index in `range` that are still in the log, in order.
    pub fn entries(&self, range: RangeInclusive<u64>) -> Result<Vec<LogRecord>, StoreError> {
        let from = (*range.start()).max(self.purged.map_or(0, |p| p.0 + 1));
        if from > *range.end() {
            return Ok(Vec::new());
        }
        Ok(self.segments.entries(from..=*range.end())?)
    }

    /// Removes every entry after `index` (all of them for `None`): a follower dropping a
    /// deposed leader's uncommitted suffix.
    pub fn truncate_after(&mut self, index: Option<u64>) -> Result<(), StoreError> {
        self.write_one(Write::TruncateAfter(index))
    }

    /// Removes every entry up to and including `index` (they are in a snapshot now) and
    /// remembers `(index, term)` as the last one removed — also when the log did not
    /// reach `index` (a follower that installed a snapshot ahead of its log). Purging
    /// never moves back.
    pub fn purge_upto(&mut self, index: u64, term: u64) -> Result<(), StoreError> {
        self.write_one(Write::PurgeUpto { index, term })
    }

    pub fn purged_id(&self) -> Result<Option<Vec<u8>>, StoreError> {
        meta_in(&self.conn, META_PURGED_ID)
    }

    /// Saves the vote; durable when this returns.
    pub fn save_vote(&mut self, vote: &[u8]) -> Result<(), StoreError> {
        self.write_one(Write::Vote(vote.to_vec()))
    }

    pub fn vote(&self) -> Result<Option<Vec<u8>>, StoreError> {
        meta_in(&self.conn, META_VOTE)
    }

    /// Saves the commit index without waiting for the disk: Raft does not need it to be
    /// durable (a restarted member learns it again), only to not run ahead of the log.
    pub fn save_committed(&mut self, committed: &[u8]) -> Result<(), StoreError> {
        self.write_one(Write::Committed(committed.to_vec()))
    }

    pub fn committed(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.committed.load())
    }

    /// SQLite's `synchronous` setting on the log's connection (2 = FULL), and the rows
    /// its connection has changed so far: tests check that saving the commit index
    /// neither lowers the one nor touches SQLite at all.
    pub fn sqlite_sync_and_changes(&self) -> Result<(i64, u64), StoreError> {
        let sync = self
            .conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))?;
        Ok((sync, self.conn.total_changes()))
    }

    /// Replaces the stored snapshot.
    pub fn save_snapshot(&mut self, meta: &[u8], data: &[u8]) -> Result<(), StoreError> {
        save_snapshot_in(&self.conn, meta, data)
    }

    /// A separate handle for saving snapshots: its own SQLite connection to a file log,
    /// so writing a large snapshot does not hold up the log (the entries do not go
    /// through SQLite, and the small SQLite writes wait for it at most a busy timeout).
    /// `None` for an in-memory log.
    pub fn snapshot_saver(&self) -> Result<Option<SnapshotSaver>, StoreError> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "synchronous", self.synchronous)?;
        Ok(Some(SnapshotSaver { conn }))
    }

    /// The stored snapshot, if any.
    pub fn snapshot(&self) -> Result<Option<StoredSnapshot>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT meta, data FROM snapshot WHERE id = 1", [], |r| {
                Ok(StoredSnapshot {
                    meta: r.get(0)?,
                    data: r.get(1)?,
                })
            })
            .optional()?)
    }

    /// Checks the invariants; `Err` names the broken one.
    pub fn validate(&self) -> Result<(), String> {
        let all = self.entries(0..=u64::MAX).map_err(|e| e.to_string())?;
        let purged = self.purged().map_err(|e| e.to_string())?;
        if let (Some(first), Some((p, _))) = (all.first(), purged)
            && first.index != p + 1
        {
            return Err(format!(
                "log starts at {} but {p} was the last purged",
                first.index
            ));
        }
        for pair in all.windows(2) {
            if pair[1].index != pair[0].index + 1 {
                return Err(format!(
                    "hole between {} and {}",
                    pair[0].index, pair[1].index
                ));
            }
            if pair[1].term < pair[0].term {
                return Err(format!("term goes down at {}", pair[1].index));
            }
        }
        Ok(())
    }
}

/// Saves snapshots on its own connection (see [`DiskLog::snapshot_saver`]).
#[derive(Debug)]
pub struct SnapshotSaver {
    conn: Connection,
}

impl SnapshotSaver {
    /// Replaces the stored snapshot; durable when this returns.
    pub fn save(&mut self, meta: &[u8], data: &[u8]) -> Result<(), StoreError> {
        save_snapshot_in(&self.conn, meta, data)
    }
}

/// How long a SQLite write waits for another connection's transaction.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn save_snapshot_in(conn: &Connection, meta: &[u8], data: &[u8]) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO snapshot (id, meta, data) VALUES (1, ?1, ?2)
         ON CONFLICT(id) DO UPDATE SET meta = excluded.meta, data = excluded.data",
        params![meta, data],
    )?;
    Ok(())
}

/// One durable change, for [`DiskLog::write_batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Append(Vec<LogRecord>),
    TruncateAfter(Option<u64>),
    PurgeUpto {
        index: u64,
        term: u64,
    },
    Vote(Vec<u8>),
    Committed(Vec<u8>),
    /// [`PurgeUpto`](Self::PurgeUpto) plus the consensus layer's own encoding of the
    /// purged entry's id, in one write (a batch may succeed in part, these two must not).
    Purge {
        index: u64,
        term: u64,
        id: Vec<u8>,
    },
}

/// Every write of a batch failed because the batch did.
fn fail_all(writes: &[Write], e: &rusqlite::Error) -> Vec<Result<(), StoreError>> {
    writes
        .iter()
        .map(|_| Err(StoreError::Batch(e.to_string())))
        .collect()
}

/// Refuses entries that do not follow `last` (or, for an empty log, the first batch
/// sets where it starts) or whose terms go down.
fn check_follows(last: Option<(u64, u64)>, entries: &[LogRecord]) -> Result<(), StoreError> {
    let Some(first) = entries.first() else {
        return Ok(());
    };
    let expected = last.map_or(first.index, |(i, _)| i + 1);
    if first.index != expected {
        return Err(StoreError::Gap {
            got: first.index,
            last: last.map(|l| l.0),
        });
    }
    let mut previous = last.map_or(0, |l| l.1);
    for (offset, e) in entries.iter().enumerate() {
        if e.index != first.index + offset as u64 {
            return Err(StoreError::Gap {
                got: e.index,
                last: Some(first.index + offset as u64 - 1),
            });
        }
        if e.term < previous {
            return Err(StoreError::TermRegression {
                index: e.index,
                term: e.term,
                previous,
            });
        }
        previous = e.term;
    }
    Ok(())
}

/// An append or truncation of the entries (the caller syncs).
fn entries_write(
    segments: &mut Segments,
    purged: Option<(u64, u64)>,
    write: &Write,
) -> Result<(), StoreError> {
    match write {
        Write::Append(entries) => {
            check_follows(last_of(segments, purged), entries)?;
            Ok(segments.append(entries)?)
        }
        Write::TruncateAfter(index) => {
            // Never below the purge point: those entries are in a snapshot.
            let floor = purged.map(|p| p.0);
            let index = match (*index, floor) {
                (Some(i), Some(f)) => Some(i.max(f)),
                (None, Some(f)) => Some(f),
                (i, None) => i,
            };
            Ok(segments.truncate_after(index)?)
        }
        _ => Ok(()),
    }
}

/// The last entry held after the purge point, else the purge point.
fn last_of(segments: &Segments, purged: Option<(u64, u64)>) -> Option<(u64, u64)> {
    match (segments.last(), purged) {
        (Some(last), Some(p)) if last.0 <= p.0 => Some(p),
        (Some(last), _) => Some(last),
        (None, p) => p,
    }
}

/// A write to the SQLite part; returns the new purge point if it moved.
fn apply_meta(
    conn: &Connection,
    write: &Write,
    purged: Option<(u64, u64)>,
) -> Result<Option<(u64, u64)>, StoreError> {
    let purge = |index: u64, term: u64| -> Result<Option<(u64, u64)>, StoreError> {
        if purged.is_some_and(|(p, _)| p >= index) {
            return Ok(None); // purging never moves back
        }
        set_meta_in(conn, META_PURGED, &encode_pair(index, term))?;
        Ok(Some((index, term)))
    };
    match write {
        Write::Append(_) | Write::TruncateAfter(_) => Ok(None),
        Write::PurgeUpto { index, term } => purge(*index, *term),
        Write::Purge { index, term, id } => {
            let moved = purge(*index, *term)?;
            if moved.is_some() {
                set_meta_in(conn, META_PURGED_ID, id)?;
            }
            Ok(moved)
        }
        Write::Vote(v) => set_meta_in(conn, META_VOTE, v).map(|()| None),
        // Kept outside SQLite (see `CommittedStore`).
        Write::Committed(_) => Ok(None),
    }
}

fn purged_in(conn: &Connection) -> Result<Option<(u64, u64)>, StoreError> {
    Ok(meta_in(conn, META_PURGED)?.and_then(|b| decode_pair(&b)))
}

fn set_meta_in(conn: &Connection, key: &str, value: &[u8]) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, value])?;
    Ok(())
}

fn meta_in(conn: &Connection, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row(params![key], |r| r.get(0))
        .optional()?)
}

fn encode_pair(a: u64, b: u64) -> Vec<u8> {
    let mut out = a.to_be_bytes().to_vec();
    out.extend_from_slice(&b.to_be_bytes());
    out
}

fn decode_pair(bytes: &[u8]) -> Option<(u64, u64)> {
    let a = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let b = u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
    Some((a, b))
}

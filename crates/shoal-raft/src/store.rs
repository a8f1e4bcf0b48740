//! The durable Raft log, vote and snapshot in SQLite.
//!
//! One file per Raft group. WAL journal with `synchronous = FULL`: SQLite fsyncs the
//! WAL before a commit returns, so an append or a vote that returned `Ok` survives a
//! crash or power loss. A batch of entries is one transaction (one fsync): the caller
//! groups concurrent appends to commit them together.
//!
//! Invariants, checked on every mutation and by [`SqliteLog::validate`]:
//! * indexes in the log are contiguous: `first..=last` with no hole;
//! * the log starts right after the last purged entry (if any);
//! * terms never decrease along the log.

use std::{ops::RangeInclusive, path::Path};

use rusqlite::{Connection, OptionalExtension, params};

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
}

/// Bumped whenever the on-disk layout changes.
pub const SCHEMA_VERSION: i64 = 1;

/// The log of one Raft group.
#[derive(Debug)]
pub struct SqliteLog {
    conn: Connection,
    /// Dropping it stops the background checkpointer (file logs only).
    _checkpointer: Option<std::sync::mpsc::Sender<()>>,
}

/// How often the background thread folds the WAL back into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Checkpoints the WAL from its own connection and thread, so appends never pay for a
/// checkpoint (SQLite's automatic one runs inside the committing write and stalls it).
/// PASSIVE: it copies what no reader needs and never blocks the writer.
fn spawn_checkpointer(path: &Path) -> Option<std::sync::mpsc::Sender<()>> {
    let conn = Connection::open(path).ok()?;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("shoal-wal-checkpoint".into())
        .spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                rx.recv_timeout(CHECKPOINT_EVERY)
            {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
                }
            }
        });
    spawned.ok().map(|_| tx)
}

const META_VOTE: &str = "vote";
const META_COMMITTED: &str = "committed";
const META_PURGED: &str = "purged";
const META_PURGED_ID: &str = "purged_id";

impl SqliteLog {
    /// Opens (creating if needed) the log at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        let mut log = Self::init(conn)?;
        // The background thread checkpoints; SQLite's own would stall an append.
        log.conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        log._checkpointer = spawn_checkpointer(path);
        if log._checkpointer.is_none() {
            log.conn.pragma_update(None, "wal_autocheckpoint", 1000)?;
        }
        Ok(log)
    }

    /// An in-memory log (tests and simulation): same code, no durability.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    /// A file log without fsync, for simulation: it survives its process being killed
    /// (the OS keeps the writes), not the machine losing power.
    pub fn open_unsynced(path: &Path) -> Result<Self, StoreError> {
        let log = Self::open(path)?;
        log.conn.pragma_update(None, "synchronous", "OFF")?;
        Ok(log)
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS log (
                 idx     INTEGER PRIMARY KEY,
                 term    INTEGER NOT NULL,
                 payload BLOB NOT NULL
             );
             CREATE TABLE IF NOT EXISTS meta (
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
        match version {
            0 => conn.pragma_update(None, "user_version", SCHEMA_VERSION)?,
            SCHEMA_VERSION => {}
            other => return Err(StoreError::Schema(other)),
        }
        Ok(Self {
            conn,
            _checkpointer: None,
        })
    }

    /// (index, term) of the last entry in the log, or of the last purged one if the log
    /// is empty.
    pub fn last(&self) -> Result<Option<(u64, u64)>, StoreError> {
        last_in(&self.conn)
    }

    /// (index, term) of the last entry removed by [`purge_upto`](Self::purge_upto).
    pub fn purged(&self) -> Result<Option<(u64, u64)>, StoreError> {
        purged_in(&self.conn)
    }

    /// Appends entries in one transaction (one fsync). They must follow the last entry.
    pub fn append(&mut self, entries: &[LogRecord]) -> Result<(), StoreError> {
        self.write_one(Write::Append(entries.to_vec()))
    }

    /// Performs `writes` in order in ONE transaction — one fsync for the lot (group
    /// commit). Each write is checked against the log as the earlier ones left it; a
    /// refused write changes nothing and does not stop the others. If the commit itself
    /// fails, every write fails and none is on disk.
    pub fn write_batch(&mut self, writes: &[Write]) -> Vec<Result<(), StoreError>> {
        let tx = match self.conn.transaction() {
            Ok(tx) => tx,
            Err(e) => {
                return writes
                    .iter()
                    .map(|_| Err(StoreError::Batch(e.to_string())))
                    .collect();
            }
        };
        let mut results: Vec<Result<(), StoreError>> =
            writes.iter().map(|w| apply_write(&tx, w)).collect();
        if let Err(e) = tx.commit() {
            results = writes
                .iter()
                .map(|_| Err(StoreError::Batch(e.to_string())))
                .collect();
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
        let mut stmt = self.conn.prepare_cached(
            "SELECT idx, term, payload FROM log WHERE idx BETWEEN ?1 AND ?2 ORDER BY idx",
        )?;
        let rows = stmt.query_map(
            params![
                *range.start() as i64,
                (*range.end()).min(i64::MAX as u64) as i64
            ],
            |r| {
                Ok(LogRecord {
                    index: r.get::<_, i64>(0)? as u64,
                    term: r.get::<_, i64>(1)? as u64,
                    payload: r.get(2)?,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
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

    /// Purges up to `index` and records `id` (the consensus layer's encoding of that
    /// entry's id) in the same transaction.
    pub fn purge_upto_with_id(
        &mut self,
        index: u64,
        term: u64,
        id: &[u8],
    ) -> Result<(), StoreError> {
        let results = self.write_batch(&[
            Write::PurgedId(id.to_vec()),
            Write::PurgeUpto { index, term },
        ]);
        results
            .into_iter()
            .collect::<Result<Vec<()>, _>>()
            .map(drop)
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
    /// The next durable write (an append or a vote) makes it durable too.
    pub fn save_committed(&mut self, committed: &[u8]) -> Result<(), StoreError> {
        let synchronous: i64 = self
            .conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))?;
        self.conn.pragma_update(None, "synchronous", "OFF")?;
        let result = self.write_one(Write::Committed(committed.to_vec()));
        self.conn.pragma_update(None, "synchronous", synchronous)?;
        result
    }

    pub fn committed(&self) -> Result<Option<Vec<u8>>, StoreError> {
        meta_in(&self.conn, META_COMMITTED)
    }

    /// Replaces the stored snapshot.
    pub fn save_snapshot(&mut self, meta: &[u8], data: &[u8]) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO snapshot (id, meta, data) VALUES (1, ?1, ?2)
             ON CONFLICT(id) DO UPDATE SET meta = excluded.meta, data = excluded.data",
            params![meta, data],
        )?;
        Ok(())
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

/// One durable change, for [`SqliteLog::write_batch`].
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
    /// The consensus layer's own encoding of the last purged entry's id.
    PurgedId(Vec<u8>),
}

fn apply_write(conn: &Connection, write: &Write) -> Result<(), StoreError> {
    match write {
        Write::Append(entries) => append_in(conn, entries),
        Write::TruncateAfter(index) => {
            let from = index.map_or(0, |i| i as i64 + 1);
            conn.execute("DELETE FROM log WHERE idx >= ?1", params![from])?;
            Ok(())
        }
        Write::PurgeUpto { index, term } => purge_in(conn, *index, *term),
        Write::Vote(v) => set_meta_in(conn, META_VOTE, v),
        Write::Committed(c) => set_meta_in(conn, META_COMMITTED, c),
        Write::PurgedId(id) => set_meta_in(conn, META_PURGED_ID, id),
    }
}

fn append_in(conn: &Connection, entries: &[LogRecord]) -> Result<(), StoreError> {
    let Some(first) = entries.first() else {
        return Ok(());
    };
    let last = last_in(conn)?;
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
    let mut insert =
        conn.prepare_cached("INSERT INTO log (idx, term, payload) VALUES (?1, ?2, ?3)")?;
    for e in entries {
        insert.execute(params![e.index as i64, e.term as i64, e.payload])?;
    }
    Ok(())
}

fn purge_in(conn: &Connection, index: u64, term: u64) -> Result<(), StoreError> {
    if purged_in(conn)?.is_some_and(|(p, _)| p >= index) {
        return Ok(());
    }
    conn.execute("DELETE FROM log WHERE idx <= ?1", params![index as i64])?;
    set_meta_in(conn, META_PURGED, &encode_pair(index, term))
}

fn last_in(conn: &Connection) -> Result<Option<(u64, u64)>, StoreError> {
    let last = conn
        .query_row(
            "SELECT idx, term FROM log ORDER BY idx DESC LIMIT 1",
            [],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
        )
        .optional()?;
    match last {
        Some(l) => Ok(Some(l)),
        None => purged_in(conn),
    }
}

fn purged_in(conn: &Connection) -> Result<Option<(u64, u64)>, StoreError> {
    Ok(meta_in(conn, META_PURGED)?.and_then(|b| decode_pair(&b)))
}

fn set_meta_in(conn: &Connection, key: &str, value: &[u8]) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

fn meta_in(conn: &Connection, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
            r.get(0)
        })
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

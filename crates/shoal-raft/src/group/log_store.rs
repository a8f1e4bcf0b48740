//! openraft's log storage over the SQLite log: entries and votes are postcard-encoded;
//! every write is durable before openraft hears it is done.

use std::{
    fmt::Debug,
    io,
    ops::{Bound, RangeBounds},
    sync::{Arc, Mutex, MutexGuard},
};

use openraft::{
    LogState, RaftLogReader,
    alias::{EntryOf, LogIdOf, VoteOf},
    storage::{IOFlushed, RaftLogStorage},
};

use super::{ShoalRaft, invalid_data, io_error};
use crate::store::{LogRecord, SqliteLog};

type C = ShoalRaft;

/// Shared handle: openraft asks for a separate reader; both use the same log.
#[derive(Debug, Clone)]
pub struct LogStore {
    log: Arc<Mutex<SqliteLog>>,
}

impl LogStore {
    pub fn new(log: SqliteLog) -> Self {
        Self {
            log: Arc::new(Mutex::new(log)),
        }
    }

    /// The store, for the state machine's snapshots.
    pub fn shared(&self) -> Arc<Mutex<SqliteLog>> {
        self.log.clone()
    }

    fn lock(&self) -> MutexGuard<'_, SqliteLog> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, io::Error> {
    postcard::to_allocvec(v).map_err(invalid_data)
}

fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, io::Error> {
    postcard::from_bytes(b).map_err(invalid_data)
}

impl RaftLogReader<C> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<C>>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(e) => *e,
            Bound::Excluded(0) => return Ok(Vec::new()),
            Bound::Excluded(e) => e - 1,
            Bound::Unbounded => u64::MAX,
        };
        if start > end {
            return Ok(Vec::new());
        }
        let records = self.lock().entries(start..=end).map_err(io_error)?;
        records.iter().map(|r| decode(&r.payload)).collect()
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        match self.lock().vote().map_err(io_error)? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }
}

impl RaftLogStorage<C> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        let log = self.lock();
        let purged = match log.purged().map_err(io_error)? {
            Some((index, _)) => Some(log_id_at(&log, index, true)?),
            None => None,
        };
        let last = match log.last().map_err(io_error)? {
            // An empty log reports the last purged entry as its last one.
            Some((index, _)) => Some(
                log_id_at(&log, index, false)
                    .or_else(|_| purged.ok_or_else(|| invalid_data("last entry vanished")))?,
            ),
            None => None,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        let bytes = encode(vote)?;
        self.lock().save_vote(&bytes).map_err(io_error)
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let bytes = encode(&committed)?;
        self.lock().save_committed(&bytes).map_err(io_error)
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        match self.lock().committed().map_err(io_error)? {
            Some(bytes) => decode(&bytes),
            None => Ok(None),
        }
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<C>> + Send,
        I::IntoIter: Send,
    {
        let mut records = Vec::new();
        for e in entries {
            records.push(LogRecord {
                index: e.log_id.index,
                term: e.log_id.leader_id.term,
                payload: encode(&e)?,
            });
        }
        // The fsync blocks this thread: let the runtime move its other tasks elsewhere.
        let result = blocking(|| self.lock().append(&records).map_err(io_error));
        callback.io_completed(result.as_ref().map(|_| ()).map_err(io_error));
        result
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        self.lock()
            .truncate_after(last_log_id.map(|l| l.index))
            .map_err(io_error)
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        // Remember the purged entry's full log id (openraft needs its leader id back).
        let id = encode(&log_id)?;
        self.lock()
            .purge_upto_with_id(log_id.index, log_id.leader_id.term, &id)
            .map_err(io_error)
    }
}

/// The full log id of the entry at `index` (from the stored entry, or for the purged
/// one from the id saved at purge time).
fn log_id_at(log: &SqliteLog, index: u64, purged: bool) -> Result<LogIdOf<C>, io::Error> {
    if purged {
        let bytes = log
            .purged_id()
            .map_err(io_error)?
            .ok_or_else(|| invalid_data("purged entry without its log id"))?;
        return decode(&bytes);
    }
    let rec = log
        .entries(index..=index)
        .map_err(io_error)?
        .pop()
        .ok_or_else(|| invalid_data(format!("entry {index} missing")))?;
    let entry: EntryOf<C> = decode(&rec.payload)?;
    Ok(entry.log_id)
}

/// Runs disk work that blocks: in place on a multi-threaded runtime (its other tasks
/// move to another worker meanwhile), directly on a single-threaded one (simulation).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

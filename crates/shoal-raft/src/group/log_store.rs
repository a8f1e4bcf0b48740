//! openraft's log storage over [`DiskLog`](crate::DiskLog): entries go to append-only
//! segment files, the vote and commit index to SQLite, all postcard-encoded; openraft
//! hears an append is done only once it is on disk.
//!
//! ```text
//!  append(entries, flushed) ──► tail (in memory, readable at once) ──► return
//!                                └─► LogWriter thread: one transaction + fsync for
//!                                    whatever queued up ──► flushed.io_completed()
//! ```
//!
//! `append` returns as soon as the entries are in the in-memory tail, so the leader
//! sends them to its followers while its own fsync runs (Raft allows it: the leader
//! counts itself towards a quorum only once its copy is durable, which is when the
//! callback fires). The tail keeps every entry not yet durable and the most recent
//! durable ones, so replication rarely reads the disk. Truncations, purges, votes and
//! commit indexes go through the same writer queue, so the disk sees every change in
//! the order openraft made it; a vote is awaited before `save_vote` returns.
//!
//! A lightly loaded follower writes its appends in the caller instead (see
//! [`LogStore::open_as`]): it answers only once they are durable anyway.
//!
//! [`WriteMode::Inline`] writes in the caller instead of a thread, and
//! [`WriteMode::Simulated`] keeps the thread but holds tokio's paused clock while a write
//! is in flight (the deterministic simulation: otherwise the clock would run on while
//! the runtime waits for the writer).

use std::{
    collections::VecDeque,
    fmt::Debug,
    io,
    ops::{Bound, RangeBounds},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU32, Ordering},
    },
};

use openraft::{
    LogState, RaftLogReader,
    alias::{EntryOf, LogIdOf, VoteOf},
    storage::{IOFlushed, RaftLogStorage},
};

use super::{ShoalRaft, invalid_data, io_error};
use crate::{
    store::{DiskLog, LogRecord, StoreError, Write},
    writer::LogWriter,
};

type C = ShoalRaft;

/// Where a group's disk writes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteMode {
    /// On the log writer thread; appends return before their fsync (group commit).
    #[default]
    Background,
    /// In the calling task, before the call returns (simulation without the writer).
    Inline,
    /// As [`WriteMode::Background`] — the writer thread, its batching and its syncs —
    /// and each write in flight holds tokio's paused clock (simulation on the
    /// production write path; see [`LogWriter::spawn_holding_clock`]).
    Simulated,
}

impl WriteMode {
    /// Writes run on the log writer thread.
    pub fn has_writer(self) -> bool {
        !matches!(self, WriteMode::Inline)
    }
}

/// Durable entries kept in memory at most (entries not yet durable always stay).
const TAIL_MAX_ENTRIES: usize = 8_192;
/// ...and their encoded bytes at most.
const TAIL_MAX_BYTES: usize = 64 << 20;
/// A follower writes in the caller while its appends average fewer entries than this
/// (in 1/16ths of an entry: 2 entries).
const FOLLOWER_BATCH_INLINE_BELOW: u32 = 2 * 16;
/// The commit index goes to disk at most this often.
const COMMITTED_SAVE_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

#[derive(Debug)]
struct Cached {
    entry: EntryOf<C>,
    bytes: usize,
    durable: bool,
}

/// The newest part of the log, in memory. From `start` on it is the whole truth (an
/// index at or past `start` that is not here does not exist); below `start`, the disk.
#[derive(Debug)]
struct Tail {
    start: u64,
    entries: VecDeque<Cached>,
    bytes: usize,
    last: Option<LogIdOf<C>>,
    purged: Option<LogIdOf<C>>,
    committed: Option<LogIdOf<C>>,
    /// When the commit index was last queued for the disk.
    committed_saved_at: Option<std::time::Instant>,
    /// A newer commit index than the one on disk is waiting (saved on close).
    committed_unsaved: bool,
}

impl Tail {
    fn get(&self, index: u64) -> Option<&Cached> {
        let offset = index.checked_sub(self.start)?;
        self.entries.get(usize::try_from(offset).ok()?)
    }

    fn push(&mut self, entry: EntryOf<C>, bytes: usize) -> Result<(), io::Error> {
        let index = entry.log_id.index;
        if self.last.is_none() && self.entries.is_empty() {
            self.start = index; // an empty log may begin anywhere
        }
        let expected = self.start + self.entries.len() as u64;
        if index != expected {
            return Err(invalid_data(format!(
                "append: entry {index} does not follow the log (next is {expected})"
            )));
        }
        self.last = Some(entry.log_id);
        self.bytes += bytes;
        self.entries.push_back(Cached {
            entry,
            bytes,
            durable: false,
        });
        Ok(())
    }

    /// Marks what a finished append wrote as durable (unless it was truncated and
    /// rewritten meanwhile), then forgets durable entries beyond the size bounds.
    fn flushed(&mut self, written: &[(u64, u64)]) {
        for &(index, term) in written {
            let offset = index.checked_sub(self.start).map(|o| o as usize);
            if let Some(c) = offset.and_then(|o| self.entries.get_mut(o))
                && c.entry.log_id.leader_id.term == term
            {
                c.durable = true;
            }
        }
        while (self.entries.len() > TAIL_MAX_ENTRIES || self.bytes > TAIL_MAX_BYTES)
            && self.entries.front().is_some_and(|c| c.durable)
        {
            if let Some(c) = self.entries.pop_front() {
                self.bytes -= c.bytes;
                self.start += 1;
            }
        }
    }

    fn truncate_after(&mut self, last: Option<LogIdOf<C>>) {
        if let (Some(cut), Some(current)) = (last, self.last)
            && cut.index >= current.index
        {
            return; // nothing after the cut
        }
        let keep_to = last.map_or(0, |l| l.index + 1); // first index removed
        if keep_to < self.start {
            self.entries.clear();
            self.bytes = 0;
            self.start = keep_to;
        } else {
            while self.start + self.entries.len() as u64 > keep_to {
                if let Some(c) = self.entries.pop_back() {
                    self.bytes -= c.bytes;
                }
            }
        }
        self.last = last.or(self.purged);
    }

    fn purge(&mut self, upto: LogIdOf<C>) {
        while self
            .entries
            .front()
            .is_some_and(|c| c.entry.log_id.index <= upto.index)
        {
            if let Some(c) = self.entries.pop_front() {
                self.bytes -= c.bytes;
            }
        }
        self.start = self.start.max(upto.index + 1);
        if self.last.is_none_or(|l| l.index < upto.index) {
            self.last = Some(upto);
        }
        self.purged = Some(upto);
    }
}

#[derive(Debug)]
struct Shared {
    disk: Arc<Mutex<DiskLog>>,
    /// Its own `Arc`: the writer's callbacks hold it, never the whole store (the last
    /// owner of the store joins the writer thread, which must not be that thread).
    tail: Arc<Mutex<Tail>>,
    /// `None` in [`WriteMode::Inline`].
    writer: Option<LogWriter>,
    /// This member's id: entries another leader made may be written in the caller.
    me: Option<u64>,
    /// Entries per append lately, as a follower (a moving average, in 1/16ths).
    follower_batch: AtomicU32,
}

impl Drop for Shared {
    /// Saves the newest commit index on the way out (then the writer, dropped next,
    /// finishes it), so a member restarted alone applies everything it had applied.
    fn drop(&mut self) {
        let bytes = {
            let tail = lock_tail(&self.tail);
            if !tail.committed_unsaved {
                return;
            }
            match encode(&tail.committed) {
                Ok(bytes) => bytes,
                Err(_) => return,
            }
        };
        let write = Write::Committed(bytes);
        let failed = match &self.writer {
            Some(writer) => writer.submit(write, Box::new(|_| {})).is_err(),
            None => self
                .disk
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .write_batch(std::slice::from_ref(&write))
                .iter()
                .any(Result::is_err),
        };
        if failed {
            tracing::warn!("could not save the commit index on close");
        }
    }
}

/// openraft's log store; clones (the log readers) share everything.
#[derive(Debug, Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
}

impl LogStore {
    /// Opens the store on `log`, reading where the log ends and what was purged.
    pub fn open(log: DiskLog, mode: WriteMode) -> Result<Self, io::Error> {
        Self::open_inner(log, mode, None)
    }

    /// [`open`](Self::open) for member `id`: on a lightly loaded follower (appending
    /// entries another member led, one or two at a time lately), an append is written
    /// and synced in the caller when the writer thread has nothing queued. The
    /// follower answers only once the entries are on disk anyway, and handing them to
    /// the writer thread and being woken back costs two thread wake-ups on the write's
    /// path (1-client writes: 28 instead of 43 system calls per write over the three
    /// members). Under load the writer thread goes on merging what arrives during a
    /// sync into the next one (a follower blocked in its own sync lost ~20% of the
    /// 64-client throughput). The leader always uses the writer thread: its own sync
    /// runs while its entries travel to the followers.
    pub fn open_as(id: u64, log: DiskLog, mode: WriteMode) -> Result<Self, io::Error> {
        Self::open_inner(log, mode, Some(id))
    }

    fn open_inner(log: DiskLog, mode: WriteMode, me: Option<u64>) -> Result<Self, io::Error> {
        let purged = match log.purged().map_err(io_error)? {
            Some(_) => Some(decode_purged_id(&log)?),
            None => None,
        };
        let last = match log.last().map_err(io_error)? {
            Some((index, _)) if purged.is_none_or(|p| p.index < index) => {
                Some(stored_log_id(&log, index)?)
            }
            Some(_) | None => purged,
        };
        let committed: Option<LogIdOf<C>> = match log.committed().map_err(io_error)? {
            Some(bytes) => decode(&bytes)?,
            None => None,
        };
        // Never past the log's end (entries are synced before the commit index is
        // saved, so this only guards against a damaged file).
        let committed = match (committed, last) {
            (Some(c), Some(l)) if c.index > l.index => Some(l),
            (c, _) => c,
        };
        let tail = Tail {
            start: last.map_or(0, |l| l.index + 1),
            entries: VecDeque::new(),
            bytes: 0,
            last,
            purged,
            committed,
            committed_saved_at: None,
            committed_unsaved: false,
        };
        let disk = Arc::new(Mutex::new(log));
        let writer = match mode {
            WriteMode::Background => Some(LogWriter::spawn_shared(disk.clone())),
            WriteMode::Simulated => Some(LogWriter::spawn_holding_clock(disk.clone())),
            WriteMode::Inline => None,
        };
        Ok(Self {
            shared: Arc::new(Shared {
                disk,
                tail: Arc::new(Mutex::new(tail)),
                writer,
                me,
                follower_batch: AtomicU32::new(FOLLOWER_BATCH_INLINE_BELOW),
            }),
        })
    }

    /// The store, for the state machine's snapshots.
    pub fn shared(&self) -> Arc<Mutex<DiskLog>> {
        self.shared.disk.clone()
    }

    fn disk(&self) -> MutexGuard<'_, DiskLog> {
        self.shared.disk.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tail(&self) -> MutexGuard<'_, Tail> {
        lock_tail(&self.shared.tail)
    }

    /// Queues `write` behind everything written before; `done` runs once it is on disk
    /// (or failed). Inline mode writes it now.
    fn write(
        &self,
        write: Write,
        done: impl FnOnce(Result<(), StoreError>) + Send + 'static,
    ) -> Result<(), io::Error> {
        self.write_where(write, done, false)
    }

    /// [`write`](Self::write), in the caller if `here` and nothing is queued before it.
    fn write_where(
        &self,
        write: Write,
        done: impl FnOnce(Result<(), StoreError>) + Send + 'static,
        here: bool,
    ) -> Result<(), io::Error> {
        match &self.shared.writer {
            Some(writer) => {
                if here && writer.is_idle() {
                    // Never wait for the log's lock on the runtime thread: if someone
                    // holds it (a read below the tail), the writer thread takes this.
                    let disk = match self.shared.disk.try_lock() {
                        Ok(disk) => Some(disk),
                        Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
                        Err(std::sync::TryLockError::WouldBlock) => None,
                    };
                    if let Some(mut disk) = disk {
                        let result = blocking(|| write_one(&mut disk, &write));
                        drop(disk);
                        done(result);
                        return Ok(());
                    }
                }
                writer.submit(write, Box::new(done)).map_err(io_error)
            }
            None => {
                let result = blocking(|| write_one(&mut self.disk(), &write));
                done(result);
                Ok(())
            }
        }
    }

    /// Records a follower append of `n` entries; true while appends have been small
    /// lately (fewer than 2 entries on average).
    fn follower_batch_small(&self, n: usize) -> bool {
        let n = u32::try_from(n).unwrap_or(u32::MAX).min(1 << 20);
        let avg = self.shared.follower_batch.load(Ordering::Relaxed);
        let avg = avg - avg / 8 + n * 2; // 7/8 of the old, 1/8 of n (in 1/16ths)
        self.shared.follower_batch.store(avg, Ordering::Relaxed);
        avg < FOLLOWER_BATCH_INLINE_BELOW
    }

    /// Writes and waits until the write is on disk.
    async fn write_durably(&self, write: Write) -> Result<(), io::Error> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.write(write, move |r| {
            let _ = tx.send(r);
        })?;
        rx.await
            .map_err(|_| io_error("the log writer stopped"))?
            .map_err(io_error)
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
        // The tail first: below its start the disk is settled (what the tail dropped
        // was durable; a truncation below it moves the start down at once).
        let (tail_start, from_tail) = {
            let tail = self.tail();
            let from = start.max(tail.start);
            let mut out = Vec::new();
            let mut index = from;
            while index <= end {
                match tail.get(index) {
                    Some(c) => out.push(c.entry.clone()),
                    None => break,
                }
                index += 1;
            }
            (tail.start, out)
        };
        let mut entries = Vec::new();
        if start < tail_start {
            let upto = end.min(tail_start - 1);
            let records = blocking(|| self.disk().entries(start..=upto)).map_err(io_error)?;
            for r in &records {
                entries.push(decode(&r.payload)?);
            }
        }
        entries.extend(from_tail);
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        match self.disk().vote().map_err(io_error)? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }
}

impl RaftLogStorage<C> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        let tail = self.tail();
        Ok(LogState {
            last_purged_log_id: tail.purged,
            last_log_id: tail.last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        self.write_durably(Write::Vote(encode(vote)?)).await
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let bytes = encode(&committed)?;
        {
            let mut tail = self.tail();
            tail.committed = committed;
            // The commit index need not be durable (see DiskLog::save_committed): it only
            // spares a restarted member re-learning it. Saved at most this often, so
            // the disk writes of the hot path are the entries alone.
            if tail
                .committed_saved_at
                .is_some_and(|t| t.elapsed() < COMMITTED_SAVE_EVERY)
            {
                tail.committed_unsaved = true;
                return Ok(());
            }
            tail.committed_saved_at = Some(std::time::Instant::now());
            tail.committed_unsaved = false;
        }
        // Not awaited, for the same reason.
        self.write(Write::Committed(bytes), |r| {
            if let Err(e) = r {
                tracing::warn!(error = %e, "saving the commit index failed");
            }
        })
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        Ok(self.tail().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<C>> + Send,
        I::IntoIter: Send,
    {
        let mut records = Vec::new();
        let mut others = false;
        let inline;
        {
            let mut tail = self.tail();
            for e in entries {
                others |= self
                    .shared
                    .me
                    .is_some_and(|me| e.log_id.leader_id.node_id != me);
                let payload = encode(&e)?;
                records.push(LogRecord {
                    index: e.log_id.index,
                    term: e.log_id.leader_id.term,
                    payload,
                });
                let bytes = records.last().map_or(0, |r| r.payload.len());
                tail.push(e, bytes)?;
            }
            inline = others && self.follower_batch_small(records.len());
        }
        let written: Vec<(u64, u64)> = records.iter().map(|r| (r.index, r.term)).collect();
        tracing::trace!(entries = written.len(), "log append");
        let tail = self.shared.tail.clone();
        let write = Write::Append(records);
        self.write_where(
            write,
            move |result| {
                tracing::trace!(entries = written.len(), "log flushed");
                if result.is_ok() {
                    lock_tail(&tail).flushed(&written);
                }
                callback.io_completed(result.map_err(io_error));
            },
            inline,
        )
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        self.tail().truncate_after(last_log_id);
        self.write(Write::TruncateAfter(last_log_id.map(|l| l.index)), |r| {
            if let Err(e) = r {
                tracing::error!(error = %e, "truncating the log failed");
            }
        })
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        // Remember the purged entry's full log id (openraft needs its leader id back).
        let id = encode(&log_id)?;
        self.tail().purge(log_id);
        self.write(
            Write::Purge {
                index: log_id.index,
                term: log_id.leader_id.term,
                id,
            },
            |r| {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "purging the log failed; will purge again later");
                }
            },
        )
    }
}

/// Writes and syncs one write in the calling thread.
fn write_one(disk: &mut DiskLog, write: &Write) -> Result<(), StoreError> {
    disk.write_batch(std::slice::from_ref(write))
        .pop()
        .unwrap_or(Ok(()))
}

fn lock_tail(tail: &Mutex<Tail>) -> MutexGuard<'_, Tail> {
    tail.lock().unwrap_or_else(|p| p.into_inner())
}

/// The full log id of the last purged entry, as saved at purge time.
fn decode_purged_id(log: &DiskLog) -> Result<LogIdOf<C>, io::Error> {
    let bytes = log
        .purged_id()
        .map_err(io_error)?
        .ok_or_else(|| invalid_data("purged entry without its log id"))?;
    decode(&bytes)
}

/// The full log id of the stored entry at `index`.
fn stored_log_id(log: &DiskLog, index: u64) -> Result<LogIdOf<C>, io::Error> {
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

#[cfg(test)]
mod tests {
    use openraft::{
        Entry, EntryPayload, LogId, type_config::TypeConfigExt, vote::leader_id_adv::LeaderId,
    };

    use super::*;

    fn entries(leader: u64, from: u64, n: u64) -> Vec<EntryOf<C>> {
        (from..from + n)
            .map(|index| Entry {
                log_id: LogId::new(
                    LeaderId {
                        term: 1,
                        node_id: leader,
                    },
                    index,
                ),
                payload: EntryPayload::Blank,
            })
            .collect()
    }

    /// Appends and waits until the store says the entries are durable.
    async fn append(store: &mut LogStore, batch: Vec<EntryOf<C>>) {
        let (tx, rx) = C::oneshot();
        store
            .append(batch, IOFlushed::signal(tx))
            .await
            .expect("append queued");
        rx.await.expect("flush reported").expect("append synced");
    }

    fn writer_commits(store: &LogStore) -> u64 {
        store.shared.writer.as_ref().map_or(0, LogWriter::commits)
    }

    #[tokio::test]
    async fn a_lightly_loaded_follower_writes_in_place_and_a_busy_one_through_the_writer() {
        let dir = std::env::temp_dir().join(format!("shoal-logstore-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("raft.db");
        let mut store = LogStore::open_as(
            1,
            DiskLog::open(&path).expect("log opens"),
            WriteMode::Background,
        )
        .expect("store opens");
        // Member 1 follows member 2, one entry at a time: no writer transaction.
        for i in 1..=20 {
            append(&mut store, entries(2, i, 1)).await;
        }
        assert_eq!(
            writer_commits(&store),
            0,
            "single entries are synced in place"
        );
        // Bigger batches: the writer thread takes them (it merges what queues up).
        for k in 0..10 {
            append(&mut store, entries(2, 21 + 16 * k, 16)).await;
        }
        let busy = writer_commits(&store);
        assert!(busy > 0, "batches of 16 go through the writer");
        // Its own entries (as leader) always go through the writer.
        let before = writer_commits(&store);
        for i in 181..=200 {
            append(&mut store, entries(1, i, 1)).await;
        }
        assert!(
            writer_commits(&store) > before,
            "a leader's appends use the writer"
        );
        drop(store);
        // Everything written either way is on disk.
        let log = DiskLog::open(&path).expect("log reopens");
        assert_eq!(log.last().expect("log readable"), Some((200, 1)));
        let records = log.entries(1..=200).expect("entries readable");
        assert_eq!(records.len(), 200);
        assert!(
            records
                .iter()
                .enumerate()
                .all(|(i, r)| r.index == i as u64 + 1)
        );
        drop(log);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

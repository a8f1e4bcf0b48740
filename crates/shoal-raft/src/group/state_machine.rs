//! openraft's state machine over shoal's pure [`State`]: apply is `State::apply`,
//! a snapshot is the postcard encoding of the state.
//!
//! Durability: the state itself lives in memory and is rebuilt on start from the
//! latest snapshot (stored in the group's SQLite file next to the log) plus the
//! committed entries after it, which openraft re-applies. A snapshot is written to
//! disk before openraft is told it exists, so the log entries it covers are only
//! purged once the snapshot is safe.

use std::{
    io::{self, Cursor},
    sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use futures_util::{Stream, TryStreamExt};
use openraft::{
    EntryPayload, RaftSnapshotBuilder,
    alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf},
    storage::{EntryResponder, RaftStateMachine},
};
use shoal_state::{Answer, Request, Response, State};
use shoal_types::Fence;

use super::{ShoalRaft, SnapshotData, invalid_data, io_error};
use crate::store::{DiskLog, SnapshotSaver};

type C = ShoalRaft;

#[derive(Debug, Default)]
struct Inner {
    state: State,
    last_applied: Option<LogIdOf<C>>,
    membership: StoredMembershipOf<C>,
    snapshot: Option<(SnapshotMetaOf<C>, Vec<u8>)>,
}

/// The replicated state of one group, readable by the node while Raft applies to it.
#[derive(Debug, Clone)]
pub struct StateMachine {
    /// Readers (the node's handlers) share it; apply and snapshot installation write.
    inner: Arc<RwLock<Inner>>,
    /// Where snapshots are kept (shared with the log store).
    disk: Arc<Mutex<DiskLog>>,
    /// Its own connection for writing snapshots (file logs), so a large one does not
    /// hold the log store's lock while it is written.
    saver: Option<Arc<Mutex<SnapshotSaver>>>,
    /// Counts applied jobs commands (and installed snapshots): the jobs leader's loop
    /// waits on it instead of on every entry (a KV or chat write is not its business).
    jobs_changes: Arc<tokio::sync::watch::Sender<u64>>,
    /// Encode and write snapshots on a blocking-pool thread, not the runtime's (a node on
    /// a one-thread runtime would stop answering heartbeats while a large one is encoded
    /// or written). Off in simulation, which must stay on its one thread.
    offload: bool,
}

impl StateMachine {
    /// Opens the state machine on the group's store: starts from its snapshot, if any.
    pub fn open(disk: Arc<Mutex<DiskLog>>) -> Result<Self, io::Error> {
        Self::open_with(disk, false)
    }

    /// As [`open`](Self::open); `offload` writes snapshots off the runtime's threads.
    pub fn open_with(disk: Arc<Mutex<DiskLog>>, offload: bool) -> Result<Self, io::Error> {
        let (stored, saver) = {
            let disk = disk.lock().unwrap_or_else(|p| p.into_inner());
            (
                disk.snapshot().map_err(io_error)?,
                disk.snapshot_saver().map_err(io_error)?,
            )
        };
        let mut inner = Inner::default();
        if let Some(stored) = stored {
            let meta: SnapshotMetaOf<C> =
                postcard::from_bytes(&stored.meta).map_err(invalid_data)?;
            inner.state = State::from_bytes(&stored.data).map_err(invalid_data)?;
            inner.last_applied = meta.last_log_id;
            inner.membership = meta.last_membership.clone();
            inner.snapshot = Some((meta, stored.data));
        }
        Ok(Self {
            inner: Arc::new(RwLock::new(inner)),
            disk,
            saver: saver.map(|s| Arc::new(Mutex::new(s))),
            jobs_changes: Arc::new(tokio::sync::watch::channel(0).0),
            offload,
        })
    }

    fn lock(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_mut(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes a snapshot to disk (durably) before it is announced.
    fn persist(&self, meta: &SnapshotMetaOf<C>, data: &[u8]) -> Result<(), io::Error> {
        let meta = postcard::to_allocvec(meta).map_err(invalid_data)?;
        match &self.saver {
            Some(saver) => saver
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .save(&meta, data),
            None => self
                .disk
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .save_snapshot(&meta, data),
        }
        .map_err(io_error)
    }

    /// [`persist`](Self::persist), on a blocking-pool thread when `offload` is set.
    async fn persist_off(
        &self,
        meta: SnapshotMetaOf<C>,
        data: Vec<u8>,
    ) -> Result<(SnapshotMetaOf<C>, Vec<u8>), io::Error> {
        if !self.offload {
            self.persist(&meta, &data)?;
            return Ok((meta, data));
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.persist(&meta, &data).map(|()| (meta, data)))
            .await
            .map_err(io_error)?
    }

    /// Changes to the jobs ledger: the value counts applied jobs commands and installed
    /// snapshots.
    pub fn jobs_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.jobs_changes.subscribe()
    }

    /// Index of the last applied entry.
    pub fn applied_index(&self) -> u64 {
        self.lock().last_applied.map_or(0, |l| l.index)
    }

    /// Reads the applied state.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.lock().state)
    }
}

impl RaftSnapshotBuilder<C> for StateMachine {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<C, SnapshotData>, io::Error> {
        // A copy of the state as of now: the KV map is persistent, so this is cheap even
        // for a large store (its nodes are shared; the writes after it copy the nodes
        // they touch). Encoding 1M keys takes ~0.5 s: it runs on the copy, off the
        // runtime thread, while entries go on being applied.
        let (meta, state) = {
            let inner = self.lock();
            let meta = SnapshotMetaOf::<C> {
                last_log_id: inner.last_applied,
                last_membership: inner.membership.clone(),
            };
            (meta, inner.state.clone())
        };
        let data = if self.offload {
            tokio::task::spawn_blocking(move || state.to_bytes())
                .await
                .map_err(io_error)?
        } else {
            state.to_bytes()
        }
        .map_err(invalid_data)?;
        let (meta, data) = self.persist_off(meta, data).await?;
        self.lock_mut().snapshot = Some((meta.clone(), data.clone()));
        Ok(SnapshotOf::<C, SnapshotData> {
            meta,
            snapshot: Cursor::new(data),
        })
    }
}

impl RaftStateMachine<C> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogIdOf<C>>, StoredMembershipOf<C>), io::Error> {
        let inner = self.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<C>, io::Error>> + Unpin + Send,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            tracing::trace!(index = entry.log_id.index, "apply");
            let response = {
                let mut inner = self.lock_mut();
                inner.last_applied = Some(entry.log_id);
                let at = Fence::new(entry.log_id.leader_id.term, entry.log_id.index);
                let noop = Answer {
                    response: Response::Noop,
                    at,
                };
                match &entry.payload {
                    EntryPayload::Blank => noop,
                    EntryPayload::Normal(request) => inner.state.apply(at, request),
                    EntryPayload::Membership(m) => {
                        inner.membership =
                            StoredMembershipOf::<C>::new(Some(entry.log_id), m.clone());
                        noop
                    }
                }
            };
            if let EntryPayload::Normal(Request {
                command: shoal_state::Command::Jobs(_),
                ..
            }) = &entry.payload
            {
                self.jobs_changes.send_modify(|n| *n += 1);
            }
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<C>,
        snapshot: Cursor<Vec<u8>>,
    ) -> Result<(), io::Error> {
        let data = snapshot.into_inner();
        let state = State::from_bytes(&data).map_err(invalid_data)?;
        let data = self.persist_off(meta.clone(), data).await?.1;
        {
            let mut inner = self.lock_mut();
            inner.state = state;
            inner.last_applied = meta.last_log_id;
            inner.membership = meta.last_membership.clone();
            inner.snapshot = Some((meta.clone(), data));
        }
        self.jobs_changes.send_modify(|n| *n += 1);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<C, SnapshotData>>, io::Error> {
        Ok(self
            .lock()
            .snapshot
            .clone()
            .map(|(meta, data)| SnapshotOf::<C, SnapshotData> {
                meta,
                snapshot: Cursor::new(data),
            }))
    }
}

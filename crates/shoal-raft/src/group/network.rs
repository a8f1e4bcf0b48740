//! An in-process Raft network for tests and simulation: messages go straight to the
//! target's `Raft` handle. Faults: a node cut off (both directions), a one-way block
//! between two nodes, and seeded random loss of messages.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
};

use openraft::{
    BasicNode, Raft,
    alias::{SnapshotOf, VoteOf},
    errors::{RPCError, ReplicationClosed, StreamingError, Unreachable},
    network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2},
    raft::{
        AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
    },
};

use rand::{RngExt as _, SeedableRng, rngs::StdRng};

use super::{ShoalRaft, SnapshotData};

type C = ShoalRaft;

#[derive(Default)]
struct Routes {
    nodes: BTreeMap<u64, Raft<C, super::state_machine::StateMachine>>,
    cut: BTreeSet<u64>,
    /// (from, to) pairs whose messages are dropped.
    blocked: BTreeSet<(u64, u64)>,
    /// Probability that a message is lost, with its seeded generator.
    loss: Option<(f64, StdRng)>,
}

/// All nodes of one in-process cluster.
#[derive(Clone, Default)]
pub struct Router {
    routes: Arc<Mutex<Routes>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Router")
    }
}

impl Router {
    /// Makes `group` reachable under its id.
    pub fn add(&self, group: &super::RaftGroup) {
        self.lock().nodes.insert(group.id(), group.raft().clone());
    }

    /// Takes a member off the network (it crashed).
    pub fn remove(&self, id: u64) {
        self.lock().nodes.remove(&id);
    }

    /// Drops messages from `from` to `to` (one way) or lets them through again.
    pub fn set_blocked(&self, from: u64, to: u64, blocked: bool) {
        let mut r = self.lock();
        if blocked {
            r.blocked.insert((from, to));
        } else {
            r.blocked.remove(&(from, to));
        }
    }

    /// Loses each message with probability `p` (0 turns loss off), drawn from a
    /// generator seeded with `seed`.
    pub fn set_loss(&self, p: f64, seed: u64) {
        self.lock().loss = (p > 0.0).then(|| (p, StdRng::seed_from_u64(seed)));
    }

    /// Clears every partition, block and loss.
    pub fn heal(&self) {
        let mut r = self.lock();
        r.cut.clear();
        r.blocked.clear();
        r.loss = None;
    }

    /// Whether a message from `from` to `to` gets through: not partitioned, not
    /// blocked one way, not lost.
    fn passes(&self, from: u64, to: u64) -> Result<(), Unreachable<C>> {
        let mut r = self.lock();
        if r.cut.contains(&from) || r.cut.contains(&to) || r.blocked.contains(&(from, to)) {
            return Err(Unreachable::from_string(format!(
                "{from} -> {to}: partitioned"
            )));
        }
        if let Some((p, rng)) = &mut r.loss
            && rng.random_bool(*p)
        {
            return Err(Unreachable::from_string(format!("{from} -> {to}: lost")));
        }
        Ok(())
    }

    /// Cuts `id` off from everyone (both directions) or reconnects it.
    pub fn set_cut(&self, id: u64, cut: bool) {
        let mut r = self.lock();
        if cut {
            r.cut.insert(id);
        } else {
            r.cut.remove(&id);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn target(
        &self,
        from: u64,
        to: u64,
    ) -> Result<Raft<C, super::state_machine::StateMachine>, Unreachable<C>> {
        self.passes(from, to)?;
        self.lock()
            .nodes
            .get(&to)
            .cloned()
            .ok_or_else(|| Unreachable::from_string(format!("node {to} is not running")))
    }
}

/// Creates clients for one source node.
#[derive(Clone, Debug)]
pub struct RouterFactory {
    pub from: u64,
    pub router: Router,
}

pub struct RouterClient {
    from: u64,
    to: u64,
    router: Router,
}

impl RaftNetworkFactory<C> for RouterFactory {
    type Network = RouterClient;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Self::Network {
        RouterClient {
            from: self.from,
            to: target,
            router: self.router.clone(),
        }
    }
}

impl RouterClient {
    fn peer(&self) -> Result<Raft<C, super::state_machine::StateMachine>, RPCError<C>> {
        self.router
            .target(self.from, self.to)
            .map_err(RPCError::Unreachable)
    }

    fn reply(&self) -> Result<(), RPCError<C>> {
        self.router
            .passes(self.to, self.from)
            .map_err(RPCError::Unreachable)
    }
}

/// A call that reached the peer's Raft but failed there (it is shutting down).
fn lost(e: impl std::fmt::Display) -> RPCError<C> {
    RPCError::Unreachable(Unreachable::from_string(e.to_string()))
}

impl RaftNetworkV2<C> for RouterClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        let reply = self.peer()?.append_entries(rpc).await.map_err(lost)?;
        self.reply()?;
        Ok(reply)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<C>,
        _option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        let reply = self.peer()?.vote(rpc).await.map_err(lost)?;
        self.reply()?;
        Ok(reply)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<C>,
        _option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        let reply = self.peer()?.pre_vote(rpc).await.map_err(lost)?;
        self.reply()?;
        Ok(reply)
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<C>,
        snapshot: SnapshotOf<C, SnapshotData>,
        _cancel: impl std::future::Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        let raft = self
            .router
            .target(self.from, self.to)
            .map_err(StreamingError::Unreachable)?;
        raft.install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| StreamingError::Unreachable(Unreachable::from_string(e.to_string())))
    }
}

//! An in-process Raft network for tests and simulation: messages go straight to the
//! target's `Raft` handle; a node can be cut off to simulate a partition.

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

use super::{ShoalRaft, SnapshotData};

type C = ShoalRaft;

#[derive(Default)]
struct Routes {
    nodes: BTreeMap<u64, Raft<C, super::state_machine::StateMachine>>,
    cut: BTreeSet<u64>,
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
        let r = self.lock();
        if r.cut.contains(&from) || r.cut.contains(&to) {
            return Err(Unreachable::from_string(format!(
                "{from} -> {to}: partitioned"
            )));
        }
        r.nodes
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
        self.peer()?.append_entries(rpc).await.map_err(lost)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<C>,
        _option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        self.peer()?.vote(rpc).await.map_err(lost)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<C>,
        _option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        self.peer()?.pre_vote(rpc).await.map_err(lost)
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

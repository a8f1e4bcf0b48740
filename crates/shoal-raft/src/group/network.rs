//! An in-process Raft network for tests and simulation: messages go straight to the
//! target's `Raft` handle. Faults: a node cut off (both directions), a one-way block
//! between two nodes, and seeded random loss of messages.
//!
//! A message that does not get through fails at once (a refused connection), or, with
//! [`Router::set_blackhole`], hangs until just after openraft's hard deadline for the
//! call, as a packet dropped by a firewall does to a call still waiting for its
//! connection (gRPC's own deadline only starts once a connection carries the request):
//! openraft's timeout fires first and cancels the call. With [`Router::set_breakers`]
//! each client sits behind the same per-peer circuit breaker as the gRPC network's
//! clients.

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
use shoal_types::breaker::BreakerConfig;

use super::{
    ShoalRaft, SnapshotData,
    peer_breaker::{PeerBreaker, Permit},
};

type C = ShoalRaft;

#[derive(Default)]
struct Routes {
    nodes: BTreeMap<u64, Raft<C, super::state_machine::StateMachine>>,
    cut: BTreeSet<u64>,
    /// (from, to) pairs whose messages are dropped.
    blocked: BTreeSet<(u64, u64)>,
    /// Probability that a message is lost, with its seeded generator.
    loss: Option<(f64, StdRng)>,
    /// A message that does not get through hangs until its deadline instead of failing.
    blackhole: bool,
    /// Breakers in front of the clients, and each (from, to) pair's breaker.
    breakers: Option<BreakerConfig>,
    by_pair: BTreeMap<(u64, u64), PeerBreaker>,
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

    /// Takes a member off the network (it crashed). Its own breakers go with it (a
    /// restarted process starts with closed ones).
    pub fn remove(&self, id: u64) {
        let mut r = self.lock();
        r.nodes.remove(&id);
        r.by_pair.retain(|(from, _), _| *from != id);
    }

    /// Messages that do not get through hang until just after their deadline (dropped
    /// packets) instead of failing at once (refused connections).
    pub fn set_blackhole(&self, on: bool) {
        self.lock().blackhole = on;
    }

    /// Puts every client behind a per-peer circuit breaker with `config` (None: none).
    pub fn set_breakers(&self, config: Option<BreakerConfig>) {
        let mut r = self.lock();
        r.breakers = config;
        r.by_pair.clear();
    }

    /// The breaker of `from`'s clients of `to`, if breakers are on.
    fn breaker(&self, from: u64, to: u64) -> Option<PeerBreaker> {
        let mut r = self.lock();
        let config = r.breakers?;
        Some(
            r.by_pair
                .entry((from, to))
                .or_insert_with(|| PeerBreaker::new(config, tokio::time::Instant::now()))
                .clone(),
        )
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

    /// The running node `to` (a crashed one refuses at once).
    fn node(&self, to: u64) -> Result<Raft<C, super::state_machine::StateMachine>, Unreachable<C>> {
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

/// How long past openraft's hard deadline a blackholed message hangs: openraft's own
/// timeout around the call is the one that fires.
const PAST_DEADLINE: std::time::Duration = std::time::Duration::from_millis(1);

impl RouterClient {
    /// Asks the breaker (if any) for a permit.
    fn admit(&self) -> Result<Option<Permit>, Unreachable<C>> {
        match self.router.breaker(self.from, self.to) {
            None => Ok(None),
            Some(b) => b.admit().map(Some).map_err(|e| {
                Unreachable::from_string(format!("{} -> {}: {e}", self.from, self.to))
            }),
        }
    }

    /// A message from `from` to `to` that does not get through: at once, or (blackhole)
    /// after `deadline`.
    async fn undelivered(
        &self,
        why: Unreachable<C>,
        deadline: std::time::Duration,
    ) -> Unreachable<C> {
        if self.router.lock().blackhole {
            tokio::time::sleep(deadline + PAST_DEADLINE).await;
        }
        why
    }

    /// One call: the breaker's permit, the request across, `call` on the peer's Raft,
    /// the reply back.
    async fn call<T, E, F, Fut>(
        &self,
        deadline: std::time::Duration,
        call: F,
    ) -> Result<T, Unreachable<C>>
    where
        E: std::fmt::Display,
        F: FnOnce(Raft<C, super::state_machine::StateMachine>) -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let permit = self.admit()?;
        let outcome = async {
            if let Err(why) = self.router.passes(self.from, self.to) {
                return Err(self.undelivered(why, deadline).await);
            }
            let raft = self.router.node(self.to)?;
            // A call that reached the peer's Raft but failed there (it is shutting down).
            let reply = call(raft)
                .await
                .map_err(|e| Unreachable::from_string(e.to_string()))?;
            match self.router.passes(self.to, self.from) {
                Ok(()) => Ok(reply),
                Err(why) => Err(self.undelivered(why, deadline).await),
            }
        }
        .await;
        if let Some(p) = permit {
            p.finish(outcome.is_ok());
        }
        outcome
    }
}

impl RaftNetworkV2<C> for RouterClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        self.call(option.hard_ttl(), |raft| async move {
            raft.append_entries(rpc).await
        })
        .await
        .map_err(RPCError::Unreachable)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<C>,
        option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        self.call(
            option.soft_ttl(),
            |raft| async move { raft.vote(rpc).await },
        )
        .await
        .map_err(RPCError::Unreachable)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<C>,
        option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        self.call(
            option.soft_ttl(),
            |raft| async move { raft.pre_vote(rpc).await },
        )
        .await
        .map_err(RPCError::Unreachable)
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<C>,
        snapshot: SnapshotOf<C, SnapshotData>,
        _cancel: impl std::future::Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        self.call(option.hard_ttl(), |raft| async move {
            raft.install_full_snapshot(vote, snapshot).await
        })
        .await
        .map_err(StreamingError::Unreachable)
    }
}

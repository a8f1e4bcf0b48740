//! [`RaftGroup`]: shoal's own interface to one Raft group. Callers propose shoal
//! [`Request`]s and get shoal [`Response`]s; openraft's types stay in this crate.

use std::{collections::BTreeMap, sync::Arc};

use openraft::{
    BasicNode, Config, Raft, ServerState, async_runtime::WatchReceiver, errors::ClientWriteError,
};
use shoal_state::{LogIndex, Request, Response, State};

use super::{ShoalRaft, SnapshotData, log_store::LogStore, state_machine::StateMachine};
use crate::store::SqliteLog;

/// Raft timing, from the node's profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
}

impl RaftTiming {
    /// DESIGN §Timing profiles: local.
    pub const LOCAL: RaftTiming = RaftTiming {
        heartbeat_ms: 50,
        election_min_ms: 250,
        election_max_ms: 500,
    };
}

/// Why a proposal or an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum GroupError {
    /// This node is not the leader; `leader` is who is, if known. Nothing was written.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    /// The entry may or may not commit through another leader: retry with the same
    /// client tag, the state machine applies it once.
    #[error("leadership changed while the write was in flight; retry it with the same tag")]
    Unknown { leader: Option<u64> },
    #[error("raft configuration: {0}")]
    Config(String),
    #[error("raft stopped: {0}")]
    Fatal(String),
}

/// A proposal that committed and was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub index: LogIndex,
    pub term: u64,
    pub response: Response,
}

/// What a group looks like from this node (the `raft` section of status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    pub id: u64,
    pub term: u64,
    pub leader: Option<u64>,
    pub role: &'static str,
    pub commit_index: u64,
    pub voters: Vec<u64>,
}

/// One member of a Raft group.
#[derive(Clone)]
pub struct RaftGroup {
    id: u64,
    raft: Raft<ShoalRaft, StateMachine>,
    state: StateMachine,
}

impl std::fmt::Debug for RaftGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftGroup").field("id", &self.id).finish()
    }
}

impl RaftGroup {
    /// Starts this member on `log` (recovering whatever it holds) with `network`.
    pub async fn start<N>(
        id: u64,
        timing: RaftTiming,
        log: SqliteLog,
        network: N,
    ) -> Result<Self, GroupError>
    where
        N: openraft::network::RaftNetworkFactory<ShoalRaft>,
        N::Network: openraft::network::NetSnapshot<ShoalRaft, SnapshotData = SnapshotData>,
    {
        let config = Config {
            cluster_name: "shoal".into(),
            heartbeat_interval: timing.heartbeat_ms,
            election_timeout_min: timing.election_min_ms,
            election_timeout_max: timing.election_max_ms,
            enable_pre_vote: Some(true),
            // A leader that cannot hear from a majority stops acting as one.
            quorum_loss_probe_interval: Some(2 * timing.election_max_ms),
            ..Default::default()
        };
        let config = Arc::new(
            config
                .validate()
                .map_err(|e| GroupError::Config(e.to_string()))?,
        );
        let state = StateMachine::default();
        let raft = Raft::new(id, config, network, LogStore::new(log), state.clone())
            .await
            .map_err(|e| GroupError::Fatal(e.to_string()))?;
        Ok(Self { id, raft, state })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Forms the group with these voters (id → address). Only one member should call it;
    /// calling it on an already initialized member is a no-op.
    pub async fn initialize(&self, voters: BTreeMap<u64, String>) -> Result<(), GroupError> {
        let members: BTreeMap<u64, BasicNode> = voters
            .into_iter()
            .map(|(id, addr)| (id, BasicNode::new(addr)))
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(e) if e.api_error().is_some() => Ok(()), // already initialized
            Err(e) => Err(GroupError::Fatal(e.to_string())),
        }
    }

    /// Proposes a request; returns once it is committed and applied here.
    pub async fn propose(&self, request: Request) -> Result<Applied, GroupError> {
        match self.raft.client_write(request).await {
            Ok(w) => Ok(Applied {
                index: LogIndex(w.log_id.index),
                term: w.log_id.leader_id.term,
                response: w.data,
            }),
            Err(e) => Err(match e.into_api_error() {
                Some(ClientWriteError::ForwardToLeader(f)) => GroupError::NotLeader {
                    leader: f.leader_id,
                },
                Some(ClientWriteError::LogEntryDiscarded(f)) => GroupError::Unknown {
                    leader: f.leader_id,
                },
                Some(other) => GroupError::Fatal(other.to_string()),
                None => GroupError::Fatal("raft stopped".into()),
            }),
        }
    }

    /// Waits until this member's state reflects every write committed before the call
    /// (a linearizable read point). Fails on a non-leader.
    pub async fn read_linearizable(&self) -> Result<(), GroupError> {
        self.raft
            .ensure_linearizable(openraft::raft::ReadPolicy::ReadIndex)
            .await
            .map(drop)
            .map_err(|e| match e.forward_to_leader() {
                Some(f) => GroupError::NotLeader {
                    leader: f.leader_id,
                },
                None => GroupError::Fatal(e.to_string()),
            })
    }

    /// Reads the applied state.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        self.state.read(f)
    }

    /// (leader id, term) as this member knows them.
    pub fn leader(&self) -> Option<(u64, u64)> {
        let m = self.raft.metrics().borrow_watched().clone();
        m.current_leader.map(|l| (l, m.current_term))
    }

    pub fn status(&self) -> GroupStatus {
        let m = self.raft.metrics().borrow_watched().clone();
        GroupStatus {
            id: self.id,
            term: m.current_term,
            leader: m.current_leader,
            role: match m.state {
                ServerState::Leader => "leader",
                ServerState::Candidate => "candidate",
                ServerState::Follower => "follower",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            },
            commit_index: m.local_committed.map_or(0, |c| c.index),
            voters: m.membership_config.voter_ids().collect(),
        }
    }

    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }

    /// The underlying handle, for the network's server side in this crate.
    pub(crate) fn raft(&self) -> &Raft<ShoalRaft, StateMachine> {
        &self.raft
    }
}

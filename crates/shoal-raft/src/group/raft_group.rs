//! [`RaftGroup`]: shoal's own interface to one Raft group. Callers propose shoal
//! [`Request`]s and get shoal [`Response`]s; openraft's types stay in this crate.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use openraft::{
    BasicNode, ChangeMembers, Config, Instant as _, Raft, ServerState, SnapshotPolicy,
    async_runtime::WatchReceiver,
    errors::{ClientWriteError, ForwardReason},
};
use shoal_state::{LogIndex, Request, Response, State};

use super::{
    ShoalRaft, SnapshotData,
    log_store::{LogStore, WriteMode},
    state_machine::StateMachine,
};
use crate::store::DiskLog;

/// Raft timing, from the node's profile. The election window counts from a follower's
/// last heartbeat to the moment it starts an election, leader lease included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
}

impl RaftTiming {
    /// The `local` profile: heartbeat 50 ms, elections 220–300 ms after the last one.
    pub const LOCAL: RaftTiming = RaftTiming {
        heartbeat_ms: 50,
        election_min_ms: 220,
        election_max_ms: 300,
    };

    /// openraft's (election_timeout_min, election_timeout_max). openraft lets a
    /// follower's election timer run only after a leader lease equal to
    /// `election_timeout_max`, so an election starts `max + uniform(min, max)` after the
    /// last heartbeat: our window [a, b] maps to max = b / 2, min = a - b / 2.
    pub fn openraft_window(&self) -> Result<(u64, u64), GroupError> {
        let max = self.election_max_ms / 2;
        let min = self.election_min_ms.saturating_sub(max);
        if min <= self.heartbeat_ms || min >= max {
            return Err(GroupError::Config(format!(
                "election window {}-{} ms with heartbeat {} ms: need heartbeat < window_min - window_max/2 < window_max/2",
                self.election_min_ms, self.election_max_ms, self.heartbeat_ms
            )));
        }
        Ok((min, max))
    }
}

/// How a group runs: its timing and when it compacts its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupOptions {
    pub timing: RaftTiming,
    /// Build a snapshot (and purge the log it covers) after this many entries.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot, so a briefly lagging follower catches
    /// up from the log instead of a full snapshot transfer.
    pub keep_behind_snapshot: u64,
    /// Where disk writes run: a writer thread (default), or inline for simulation.
    pub write_mode: WriteMode,
}

impl GroupOptions {
    /// As etcd (`--snapshot-count`): a snapshot serializes the whole state, so taking
    /// one every 10,000 writes cost a large state a stall every second under load.
    pub const DEFAULT_SNAPSHOT_EVERY: u64 = 100_000;
    pub const DEFAULT_KEEP_BEHIND_SNAPSHOT: u64 = 1_000;
}

impl From<RaftTiming> for GroupOptions {
    fn from(timing: RaftTiming) -> Self {
        Self {
            timing,
            snapshot_every: Self::DEFAULT_SNAPSHOT_EVERY,
            keep_behind_snapshot: Self::DEFAULT_KEEP_BEHIND_SNAPSHOT,
            write_mode: WriteMode::Background,
        }
    }
}

/// Why a proposal or an operation failed. As openraft's `RaftError` separates
/// `APIError` from `Fatal`: [`GroupError::is_fatal`] errors mean this member's Raft cannot
/// go on; the others are answers about the group right now. Each variant says whether
/// anything was written ([`GroupError::nothing_written`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum GroupError {
    /// Retryable: this node is not the leader; `leader` is who is, if known. Nothing was
    /// written.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    /// Retryable with the same client tag: the entry may or may not commit through
    /// another leader, and the state machine applies a tagged request once.
    #[error("leadership changed while the write was in flight; retry it with the same tag")]
    Unknown { leader: Option<u64> },
    /// Fatal: the group's settings are inconsistent; nothing was started or written.
    #[error("raft configuration: {0}")]
    Config(String),
    /// Fatal: this member's Raft has stopped (shut down, or its storage failed); a write
    /// in flight may or may not have been written.
    #[error("raft stopped: {0}")]
    Fatal(String),
    /// Retryable: waiting for this replica to apply index `index` took longer than
    /// allowed. The wait wrote nothing.
    #[error("timed out after {ms} ms waiting for this replica to apply index {index}")]
    Timeout { index: u64, ms: u64 },
    /// Refused as asked (retrying the same change will not help); nothing changed.
    #[error("membership change refused: {0}")]
    Membership(String),
    /// Retryable: this member leads but has not heard from a majority within its lease
    /// (cut off from the others). Nothing was written.
    #[error("the leader has not heard from a majority recently; nothing was written, retry")]
    NoQuorum,
}

impl GroupError {
    /// This member's Raft cannot go on (or never started): no retry here helps.
    pub fn is_fatal(&self) -> bool {
        matches!(self, GroupError::Config(_) | GroupError::Fatal(_))
    }

    /// The same request may succeed later or through another member.
    pub fn is_retryable(&self) -> bool {
        !self.is_fatal() && !matches!(self, GroupError::Membership(_))
    }

    /// Nothing was written: a retry cannot apply the request twice even untagged.
    pub fn nothing_written(&self) -> bool {
        !matches!(self, GroupError::Unknown { .. } | GroupError::Fatal(_))
    }
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
    /// Highest index this member knows committed and holds.
    pub commit_index: u64,
    /// Highest index known committed by a quorum (may lead `commit_index` on a member
    /// that has not received those entries yet).
    pub cluster_commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    /// Index the latest snapshot covers (0: none).
    pub snapshot_index: u64,
    /// Log entries up to this index were compacted away (0: none).
    pub purged_index: u64,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// In joint consensus (a membership change half done).
    pub joint: bool,
    /// On the leader: each follower's last replicated index.
    pub matched: BTreeMap<u64, u64>,
    /// On the leader: milliseconds since a quorum last acknowledged it.
    pub millis_since_quorum_ack: Option<u64>,
    /// A leader that no majority has acknowledged within its lease (cut off, or the
    /// others are down): Raft still has it as the leader of its term, but it takes no
    /// writes and serves no linearizable reads, and another member may lead a newer term.
    pub quorum_lost: bool,
}

/// How long sending a snapshot to a member (and its installing it) may take.
const INSTALL_SNAPSHOT_TIMEOUT_MS: u64 = 60_000;

/// One member of a Raft group.
#[derive(Clone)]
pub struct RaftGroup {
    id: u64,
    raft: Raft<ShoalRaft, StateMachine>,
    state: StateMachine,
    /// How long a proposal on a just-elected leader waits for its first quorum
    /// acknowledgement (the lease it needs before it takes writes).
    lease_wait: Duration,
    /// The leader's lease: without a majority's acknowledgement for this long, it has
    /// lost its quorum (openraft's lease, `election_timeout_max`).
    lease: Duration,
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
        options: impl Into<GroupOptions>,
        log: DiskLog,
        network: N,
    ) -> Result<Self, GroupError>
    where
        N: openraft::network::RaftNetworkFactory<ShoalRaft>,
        N::Network: openraft::network::NetSnapshot<ShoalRaft, SnapshotData = SnapshotData>,
    {
        let options = options.into();
        let timing = options.timing;
        let (election_min, election_max) = timing.openraft_window()?;
        let config = Config {
            cluster_name: "shoal".into(),
            heartbeat_interval: timing.heartbeat_ms,
            election_timeout_min: election_min,
            election_timeout_max: election_max,
            enable_pre_vote: Some(true),
            // A leader that cannot hear from a majority stops acting as one.
            quorum_loss_probe_interval: Some(2 * election_max),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(options.snapshot_every.max(1)),
            max_in_snapshot_log_to_keep: options.keep_behind_snapshot,
            // Send entries to followers as soon as they are in the log's memory tail:
            // the leader's fsync runs while they travel.
            broadcast_submitted_on_append: Some(true),
            // The whole transfer of a snapshot to a lagging member runs under this
            // timeout (openraft's default, 200 ms, cut a 140 MB snapshot off mid-stream).
            install_snapshot_timeout: INSTALL_SNAPSHOT_TIMEOUT_MS,
            // Replication to an unreachable member retries after one heartbeat interval,
            // doubling up to one minimum election window: the peer's circuit breaker (which
            // refuses calls without touching the network, and lets a trial through after
            // the same window) is what spares the network, so once a partition heals the
            // member is caught up within about two windows. openraft's default doubles
            // from 200 ms up to 1 s.
            backoff: format!("{}ms ..{}ms", timing.heartbeat_ms, timing.election_min_ms),
            ..Default::default()
        };
        let config = Arc::new(
            config
                .validate()
                .map_err(|e| GroupError::Config(e.to_string()))?,
        );
        let store = LogStore::open_as(id, log, options.write_mode)
            .map_err(|e| GroupError::Fatal(e.to_string()))?;
        let state = StateMachine::open_with(store.shared(), options.write_mode.has_writer())
            .map_err(|e| GroupError::Fatal(e.to_string()))?;
        let raft = Raft::new(id, config, network, store, state.clone())
            .await
            .map_err(|e| GroupError::Fatal(e.to_string()))?;
        Ok(Self {
            id,
            raft,
            state,
            lease_wait: Duration::from_millis(2 * timing.election_max_ms),
            lease: Duration::from_millis(election_max),
        })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// True on a leader no majority has acknowledged yet (just elected).
    fn is_unacknowledged_leader(&self) -> bool {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        m.state == ServerState::Leader && m.last_quorum_acked.is_none()
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

    /// Proposes a request; returns once it is committed and applied here. Raft's core
    /// takes the proposals queued meanwhile as one batch (one log append); the log
    /// writer merges what queues up during a sync into the next one.
    ///
    /// A leader takes writes only while a majority has acknowledged it within its lease.
    /// A just-elected leader has no acknowledgement yet (its first append is on the way),
    /// so a proposal that arrives in those few milliseconds waits for it instead of
    /// failing: the first write after a failover is not sent back to retry.
    pub async fn propose(&self, request: Request) -> Result<Applied, GroupError> {
        if self.is_unacknowledged_leader() {
            let _ = self
                .raft
                .wait(Some(self.lease_wait))
                .metrics(
                    |m| m.state != ServerState::Leader || m.last_quorum_acked.is_some(),
                    "a quorum acknowledgement",
                )
                .await;
        }
        // Straight to Raft's core, which takes every write queued meanwhile as one
        // batch (one log append, one fsync); the state machine answers this caller
        // directly when it applies the entry (no task in between: each hop between
        // tasks is a wake-up on the write's path).
        let (responder, answer) = openraft::impls::ProgressResponder::complete_only();
        tracing::trace!("to raft");
        self.raft
            .client_write_ff(request, Some(responder))
            .await
            .map_err(|fatal| GroupError::Fatal(fatal.to_string()))?;
        match answer.await {
            // The answer's fence, not the entry's: a retried request is answered with
            // its first application's place in the log.
            Ok(Ok(r)) => Ok(Applied {
                index: LogIndex(r.data.at.index),
                term: r.data.at.term,
                response: r.data.response,
            }),
            Ok(Err(e)) => Err(write_error(e)),
            Err(_) => Err(GroupError::Fatal("raft stopped".into())),
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

    /// On the leader: confirms leadership with a quorum and returns the index this
    /// group's state must reach before a read is linearizable (the read index). A
    /// follower gets it from the leader, then [`await_applied`](Self::await_applied).
    pub async fn read_index(&self) -> Result<u64, GroupError> {
        self.raft
            .get_read_linearizer(openraft::raft::ReadPolicy::ReadIndex)
            .await
            .map(|l| l.read_log_id().index())
            .map_err(|e| match e.forward_to_leader() {
                Some(f) => GroupError::NotLeader {
                    leader: f.leader_id,
                },
                None => GroupError::Fatal(e.to_string()),
            })
    }

    /// Waits until this member has applied `index`.
    pub async fn await_applied(&self, index: u64, timeout: Duration) -> Result<(), GroupError> {
        if self.state.applied_index() >= index {
            return Ok(());
        }
        self.raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "read index")
            .await
            .map(drop)
            .map_err(|_| GroupError::Timeout {
                index,
                ms: timeout.as_millis() as u64,
            })
    }

    /// Index of the last entry applied here.
    pub fn applied_index(&self) -> u64 {
        self.state.applied_index()
    }

    /// Changes to the jobs ledger (see `StateMachine::jobs_changes`).
    pub fn jobs_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.state.jobs_changes()
    }

    /// The address a member registered with the group (voters and learners).
    pub fn member_addr(&self, id: u64) -> Option<String> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        m.membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
    }

    /// Adds a member as a learner (replicated to, not counted). Returns once the
    /// change is committed; the learner catches up in the background.
    pub async fn add_learner(&self, id: u64, addr: String) -> Result<(), GroupError> {
        settled(|| {
            self.raft
                .add_learner(id, BasicNode::new(addr.clone()), false)
        })
        .await
    }

    /// Promotes learners to voters (joint consensus: old and new majorities both agree,
    /// then the new configuration alone).
    pub async fn add_voters(&self, ids: BTreeSet<u64>) -> Result<(), GroupError> {
        settled(|| {
            self.raft
                .change_membership(ChangeMembers::AddVoterIds(ids.clone()), false)
        })
        .await
    }

    /// Removes voters (joint consensus); `keep_as_learners` keeps replicating to them.
    pub async fn remove_voters(
        &self,
        ids: BTreeSet<u64>,
        keep_as_learners: bool,
    ) -> Result<(), GroupError> {
        settled(|| {
            self.raft
                .change_membership(ChangeMembers::RemoveVoters(ids.clone()), keep_as_learners)
        })
        .await
    }

    /// Removes learners entirely.
    pub async fn remove_learners(&self, ids: BTreeSet<u64>) -> Result<(), GroupError> {
        settled(|| {
            self.raft
                .change_membership(ChangeMembers::RemoveNodes(ids.clone()), false)
        })
        .await
    }

    /// On the leader: waits until member `id` has replicated everything committed when
    /// the call started.
    pub async fn await_caught_up(&self, id: u64, timeout: Duration) -> Result<(), GroupError> {
        let target = self.status().commit_index;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = self.status();
            if s.role != "leader" {
                return Err(GroupError::NotLeader { leader: s.leader });
            }
            if s.matched.get(&id).is_some_and(|m| *m >= target) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(GroupError::Timeout {
                    index: target,
                    ms: timeout.as_millis() as u64,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// On the leader: hands leadership to `to` (which must be a caught-up voter).
    pub async fn transfer_leader(&self, to: u64) -> Result<(), GroupError> {
        self.raft
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| GroupError::Fatal(e.to_string()))
    }

    /// Builds a snapshot now (and lets the log behind it be purged).
    pub async fn snapshot_now(&self) -> Result<(), GroupError> {
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| GroupError::Fatal(e.to_string()))
    }

    /// Reads the applied state.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        self.state.read(f)
    }

    /// (leader id, term) as this member knows them.
    pub fn leader(&self) -> Option<(u64, u64)> {
        // Read in place: this runs on every write, and the metrics are a large struct.
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        m.current_leader.map(|l| (l, m.current_term))
    }

    /// Waits up to `timeout` until this member knows a leader other than `except`
    /// (id, term); returns it, or `None` when none appeared in time.
    pub async fn await_leader(
        &self,
        except: Option<(u64, u64)>,
        timeout: Duration,
    ) -> Option<(u64, u64)> {
        if timeout.is_zero() {
            return None;
        }
        let m = self
            .raft
            .wait(Some(timeout))
            .metrics(
                move |m| {
                    m.current_leader
                        .is_some_and(|l| Some((l, m.current_term)) != except)
                },
                "a leader",
            )
            .await
            .ok()?;
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
            cluster_commit_index: m.cluster_committed.map_or(0, |c| c.index),
            applied_index: m.last_applied.map_or(0, |c| c.index),
            last_log_index: m.last_log_index.unwrap_or(0),
            snapshot_index: m.snapshot.map_or(0, |c| c.index),
            purged_index: m.purged.map_or(0, |c| c.index),
            voters: m.membership_config.voter_ids().collect(),
            learners: m.membership_config.membership().learner_ids().collect(),
            joint: m.membership_config.membership().get_joint_config().len() > 1,
            matched: m
                .replication
                .as_ref()
                .map(|r| {
                    r.iter()
                        .map(|(id, l)| (*id, l.as_ref().map_or(0, |l| l.index)))
                        .collect()
                })
                .unwrap_or_default(),
            millis_since_quorum_ack: m
                .last_quorum_acked
                .as_ref()
                .map(|t| t.elapsed().as_millis() as u64),
            // Just elected (no acknowledgement yet) is not lost: its first append is on
            // the way, and writes wait for it (see `propose`). A lone voter is its own
            // majority.
            quorum_lost: m.state == ServerState::Leader
                && m.membership_config.voter_ids().any(|v| v != self.id)
                && m.last_quorum_acked
                    .as_ref()
                    .is_some_and(|t| t.elapsed() > self.lease),
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

/// How long a membership change waits for one already under way to finish.
const MEMBERSHIP_SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often it looks again meanwhile.
const MEMBERSHIP_SETTLE_POLL: Duration = Duration::from_millis(20);

/// Runs a membership change; while another one is still committing (an earlier
/// request, or the leader's own promotion of a caught-up learner), waits for it and
/// tries again, up to [`MEMBERSHIP_SETTLE_TIMEOUT`]: `shoal managers add` right after a
/// `remove` succeeds instead of being refused for a change it did not start.
///
/// A change is two entries (a joint configuration, then the new one alone), and another
/// change may be proposed between them, on top of the committed joint configuration;
/// openraft then refuses the second entry ("last membership log id mismatch", the only
/// precondition a plain change carries). That other change includes this one's joint
/// step, so trying this change again, once nothing is in progress, completes it (or finds
/// it done).
async fn settled<T, F, Fut>(mut attempt: F) -> Result<(), GroupError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<
            Output = Result<T, openraft::errors::RaftError<ShoalRaft, ClientWriteError<ShoalRaft>>>,
        >,
{
    let deadline = tokio::time::Instant::now() + MEMBERSHIP_SETTLE_TIMEOUT;
    loop {
        match attempt().await {
            Ok(_) => return Ok(()),
            Err(e)
                if matches!(
                    e.api_error(),
                    Some(
                        ClientWriteError::ChangeMembershipError(
                            openraft::errors::ChangeMembershipError::InProgress(_)
                        ) | ClientWriteError::PreconditionFailed(
                            openraft::errors::PreconditionFailed::LastMembershipLogIdMismatch { .. }
                        )
                    )
                ) && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(MEMBERSHIP_SETTLE_POLL).await;
            }
            Err(e) => return Err(membership_error(e)),
        }
    }
}

fn membership_error(
    e: openraft::errors::RaftError<ShoalRaft, ClientWriteError<ShoalRaft>>,
) -> GroupError {
    match e.into_api_error() {
        Some(ClientWriteError::ForwardToLeader(f)) => GroupError::NotLeader {
            leader: f.leader_id,
        },
        Some(ClientWriteError::ChangeMembershipError(c)) => GroupError::Membership(c.to_string()),
        Some(other) => GroupError::Fatal(other.to_string()),
        None => GroupError::Fatal("raft stopped".into()),
    }
}

fn write_error(e: ClientWriteError<ShoalRaft>) -> GroupError {
    match e {
        ClientWriteError::ForwardToLeader(f) if f.reason == ForwardReason::LeaseExpired => {
            GroupError::NoQuorum
        }
        ClientWriteError::ForwardToLeader(f) => GroupError::NotLeader {
            leader: f.leader_id,
        },
        ClientWriteError::LogEntryDiscarded(f) => GroupError::Unknown {
            leader: f.leader_id,
        },
        other => GroupError::Fatal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_whether_to_retry_and_whether_anything_was_written() {
        let cases = [
            (GroupError::NotLeader { leader: None }, false, true, true),
            (GroupError::Unknown { leader: None }, false, true, false),
            (GroupError::Config("x".into()), true, false, true),
            (GroupError::Fatal("x".into()), true, false, false),
            (GroupError::Timeout { index: 1, ms: 1 }, false, true, true),
            (GroupError::Membership("x".into()), false, false, true),
            (GroupError::NoQuorum, false, true, true),
        ];
        for (e, fatal, retryable, nothing) in cases {
            assert_eq!(e.is_fatal(), fatal, "{e:?}");
            assert_eq!(e.is_retryable(), retryable, "{e:?}");
            assert_eq!(e.nothing_written(), nothing, "{e:?}");
        }
    }

    #[test]
    fn profiles_map_to_openraft_windows() {
        assert_eq!(RaftTiming::LOCAL.openraft_window(), Ok((70, 150)));
        let lan = RaftTiming {
            heartbeat_ms: 100,
            election_min_ms: 1_300,
            election_max_ms: 2_000,
        };
        assert_eq!(lan.openraft_window(), Ok((300, 1_000)));
        let bad = RaftTiming {
            heartbeat_ms: 50,
            election_min_ms: 250,
            election_max_ms: 500,
        };
        assert!(matches!(bad.openraft_window(), Err(GroupError::Config(_))));
    }
}

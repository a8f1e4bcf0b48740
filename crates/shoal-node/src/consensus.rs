//! Managers run the DC's Raft group: open the durable log, serve Raft over gRPC, form
//! the group once `bootstrap_expect` managers have met through gossip (the lowest id
//! initializes it, exactly once), and publish the leader (with its term) and their
//! lifecycle in gossip metadata so every node — gates and workers too — knows them.
//!
//! Lifecycle of a manager: `syncing` (not yet a caught-up voter) → `active` (a voter
//! that has applied what is committed) → `draining` (`shoal node drain`: leadership
//! handed over, then out of the voter set). The leader adds managers that join later:
//! a learner first, a voter once it has caught up (joint consensus).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde_json::json;
use shoal_client::BreakerState;
use shoal_membership::{MembershipHandle, Snapshot};
use shoal_raft::{
    DiskLog,
    group::{
        GroupError, MembershipChange, RaftGroup, RaftTiming, Replica,
        grpc::{Breakers, Forwarder, GrpcNetwork, Identity},
    },
};
use shoal_state::{Command, KvCommand, Request};
use shoal_types::{Lifecycle, MemberState, NodeConfig, Role};

use crate::{role_log::RoleLog, tasks::Tasks};

/// Raft's numeric id for a shoal node id: FNV-1a, stable across restarts and builds.
pub fn raft_id(node_id: &str) -> u64 {
    node_id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Why the Raft group could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    #[error("raft log {path}: {source}")]
    Log {
        path: String,
        source: shoal_raft::StoreError,
    },
    #[error("raft: {0}")]
    Group(#[from] shoal_raft::group::GroupError),
}

/// KV prefix of managers removed with `shoal managers remove`: the leader does not add
/// them back on its own (`shoal managers add` clears the mark).
pub const REMOVED_PREFIX: &str = "_shoal/managers/removed/";

/// How long a membership change waits for a leader to be elected.
const ELECTION_PATIENCE: Duration = Duration::from_secs(10);

/// How long a forwarded call (write or read index) to the leader may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// A manager's part in its DC's Raft group.
#[derive(Clone, Debug)]
pub struct Consensus {
    pub replica: Replica,
    pub breakers: Breakers,
    /// Raft id → shoal node id of this node.
    me: String,
    dc: String,
    draining: Arc<AtomicBool>,
    /// Members the leader is adding now (one task each).
    adding: Arc<Mutex<BTreeSet<u64>>>,
    /// The node's tasks: the duties loop and the additions run among them.
    tasks: Tasks,
}

/// The Raft group of the gates (all datacenters). Not a valid datacenter name, so it
/// cannot clash with one.
pub const GATES_GROUP: &str = ":gates";

/// The group a node belongs to: its DC's managers, or the gates.
pub fn group_name(config: &NodeConfig) -> String {
    match config.role {
        Role::Gate => GATES_GROUP.to_string(),
        _ => config.dc.clone(),
    }
}

/// Starts this node's member of its group: a manager's DC group, or the gates' group
/// (None for workers).
pub async fn start(
    config: &NodeConfig,
    transport: &shoal_security::Transport,
    tasks: &Tasks,
) -> Result<Option<Consensus>, ConsensusError> {
    if config.role == Role::Worker {
        return Ok(None);
    }
    let path = config.data_dir.join("raft.db");
    let log = DiskLog::open(&path).map_err(|source| ConsensusError::Log {
        path: path.display().to_string(),
        source,
    })?;
    let timing = RaftTiming {
        heartbeat_ms: config.raft.heartbeat_ms,
        election_min_ms: config.raft.election_min_ms,
        election_max_ms: config.raft.election_max_ms,
    };
    let network = GrpcNetwork::new(identity(config), &timing, transport.clone());
    let breakers = network.breakers();
    let group = RaftGroup::start(raft_id(config.id.as_str()), timing, log, network).await?;
    let replica = Replica::new(
        group,
        Forwarder::new(identity(config), FORWARD_TIMEOUT, transport.clone()),
        FORWARD_TIMEOUT,
        // Two election windows: enough for one election round and its first commit.
        Duration::from_millis(2 * config.raft.election_max_ms),
    );
    Ok(Some(Consensus {
        replica,
        breakers,
        me: config.id.to_string(),
        dc: group_name(config),
        draining: Arc::default(),
        adding: Arc::default(),
        tasks: tasks.clone(),
    }))
}

/// The group this node serves: its DC's managers, in its cluster.
pub fn identity(config: &NodeConfig) -> Identity {
    Identity {
        cluster_id: config.cluster_id.clone(),
        group: group_name(config),
    }
}

/// Managers of `dc` that gossip says are alive, as (node id, address, lifecycle).
fn live_managers<'a>(
    snap: &'a Snapshot,
    dc: &'a str,
) -> impl Iterator<Item = (&'a str, &'a str, Option<Lifecycle>)> + 'a {
    snap.members
        .iter()
        .filter(move |m| {
            let member = if dc == GATES_GROUP {
                m.role == Some(Role::Gate)
            } else {
                m.role == Some(Role::Manager) && m.dc.as_deref() == Some(dc)
            };
            m.state == MemberState::Alive && member
        })
        .map(|m| (m.id.as_str(), m.addr.as_str(), m.lifecycle))
}

fn name_of(snap: &Snapshot, rid: u64) -> String {
    snap.members
        .iter()
        .find(|m| raft_id(&m.id) == rid)
        .map_or_else(|| format!("{rid:016x}"), |m| m.id.clone())
}

/// Why a drain or a manager change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// Refused as asked (HTTP 409 / 404); nothing changed.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    NotFound(String),
    /// The group could not do it now (HTTP 503).
    #[error("{0}")]
    Unavailable(String),
}

impl Consensus {
    pub fn group(&self) -> &RaftGroup {
        &self.replica.group
    }

    fn lifecycle(&self) -> Lifecycle {
        let s = self.group().status();
        if self.draining.load(Ordering::SeqCst) {
            Lifecycle::Draining
        } else if s.voters.contains(&s.id)
            && s.leader.is_some()
            && s.applied_index >= s.commit_index
        {
            Lifecycle::Active
        } else {
            Lifecycle::Syncing
        }
    }

    /// Background duties: bootstrap, publish leader and lifecycle in gossip, and on the
    /// leader add managers that joined later (learner first, voter once caught up).
    pub fn spawn_duties(&self, bootstrap_expect: Option<u32>, membership: MembershipHandle) {
        let this = self.clone();
        self.tasks.spawn("raft duties", async move {
            let mut bootstrapped = bootstrap_expect.is_none();
            let mut published: Option<(Option<(String, u64)>, Lifecycle)> = None;
            let mut tick: u64 = 0;
            let mut role_log = RoleLog::default();
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                tick += 1;
                let snap = membership.snapshot();
                if !bootstrapped && let Some(n) = bootstrap_expect {
                    bootstrapped =
                        try_bootstrap(this.group(), &snap, &this.me, &this.dc, n as usize).await;
                }
                let status = this.group().status();
                let now = std::time::Instant::now();
                if let Some(line) = role_log.observe(&status, now, |id| name_of(&snap, id)) {
                    if line.warn {
                        tracing::warn!(group = %this.dc, "{}", line.text);
                    } else {
                        tracing::info!(group = %this.dc, "{}", line.text);
                    }
                }
                let leader = this
                    .group()
                    .leader()
                    .map(|(l, term)| (name_of(&snap, l), term));
                let now = (leader, this.lifecycle());
                if published.as_ref() != Some(&now) {
                    let (hint, lifecycle) = now.clone();
                    let update = membership.update_meta(move |m| {
                        m.leader_term = hint.as_ref().map_or(0, |h| h.1);
                        m.leader_hint = hint.map(|h| h.0);
                        // Leaving (the node is shutting down) is final.
                        if m.lifecycle != Lifecycle::Leaving {
                            m.lifecycle = lifecycle;
                        }
                    });
                    if update.await.is_err() {
                        return;
                    }
                    published = Some(now);
                }
                // Once a second, the leader looks for managers to add.
                if tick.is_multiple_of(10) && this.group().status().role == "leader" {
                    this.add_newcomers(&snap);
                }
            }
        });
    }

    fn add_newcomers(&self, snap: &Snapshot) {
        let status = self.group().status();
        if status.voters.is_empty() || status.joint {
            return;
        }
        for (id, addr, lifecycle) in live_managers(snap, &self.dc) {
            let rid = raft_id(id);
            if status.voters.contains(&rid)
                || matches!(lifecycle, Some(Lifecycle::Draining | Lifecycle::Leaving))
            {
                continue;
            }
            let removed = format!("{REMOVED_PREFIX}{id}");
            if self.group().read(|s| s.kv.get(&removed).is_some()) {
                continue;
            }
            if !self
                .adding
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(rid)
            {
                continue; // already being added
            }
            let (this, id, addr) = (self.clone(), id.to_string(), addr.to_string());
            self.tasks.spawn("add manager", async move {
                tracing::info!(manager = %id, "adding manager: learner, then voter once caught up");
                let change = MembershipChange::Add { id: rid, addr };
                match this.replica.change_membership(change).await {
                    Ok(()) => tracing::info!(manager = %id, "manager is a voter"),
                    Err(e) => {
                        tracing::warn!(manager = %id, error = %e, "adding manager failed; will retry")
                    }
                }
                this.adding
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&rid);
            });
        }
    }

    /// `shoal node drain`: hand leadership over if this node leads, then leave the
    /// voter set. Refused (and nothing changed) if the remaining voters could not form
    /// a quorum.
    pub async fn drain(&self, snap: &Snapshot) -> Result<String, ChangeError> {
        let me = self.group().id();
        let s = self.group().status();
        if !s.voters.contains(&me) {
            self.draining.store(true, Ordering::SeqCst);
            return Ok(format!("{} is not a voter; nothing to hand over", self.me));
        }
        let others: Vec<u64> = s.voters.iter().copied().filter(|v| *v != me).collect();
        let alive: BTreeSet<u64> = live_managers(snap, &self.dc)
            .map(|m| raft_id(m.0))
            .collect();
        let reachable = others.iter().filter(|v| alive.contains(v)).count();
        let quorum = others.len() / 2 + 1;
        if others.is_empty() || reachable < quorum {
            return Err(ChangeError::Refused(format!(
                "draining {} would leave {} voters of which {reachable} are alive; a quorum needs {quorum}",
                self.me,
                others.len()
            )));
        }
        self.draining.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        if s.role == "leader" {
            // The most caught-up live voter takes over.
            let target = others
                .iter()
                .filter(|v| alive.contains(v))
                .max_by_key(|v| s.matched.get(v).copied().unwrap_or(0))
                .copied()
                .expect("a live voter exists: checked above");
            tracing::info!(to = %name_of(snap, target), "draining: transferring leadership");
            let _ = self.group().transfer_leader(target).await;
            while self.group().leader().is_some_and(|(l, _)| l == me) {
                if tokio::time::Instant::now() >= deadline {
                    self.draining.store(false, Ordering::SeqCst);
                    return Err(ChangeError::Unavailable(
                        "leadership did not move within 15 s; still a voter".into(),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let attempt = self
                .replica
                .change_membership(MembershipChange::Remove { id: me });
            let outcome =
                tokio::time::timeout(left, attempt)
                    .await
                    .unwrap_or(Err(GroupError::Timeout {
                        index: 0,
                        ms: left.as_millis() as u64,
                    }));
            match outcome {
                Ok(()) => {
                    return Ok(format!("{} left the voter set of {}", self.me, self.dc));
                }
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    if self.group().status().voters.contains(&me) {
                        // Still counted: say so in gossip again (retry the drain later).
                        self.draining.store(false, Ordering::SeqCst);
                    }
                    return Err(ChangeError::Unavailable(format!(
                        "could not leave the voter set within 15 s: {e}"
                    )));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// `shoal managers add ID`: a live manager of this DC joins as a learner and becomes
    /// a voter once caught up.
    pub async fn add_manager(&self, snap: &Snapshot, id: &str) -> Result<String, ChangeError> {
        let Some((_, addr, _)) = live_managers(snap, &self.dc).find(|m| m.0 == id) else {
            return Err(ChangeError::NotFound(format!(
                "id: no live manager `{id}` in datacenter {} (start it first; it joins by gossip)",
                self.dc
            )));
        };
        self.write_kv(KvCommand::Delete {
            key: format!("{REMOVED_PREFIX}{id}"),
        })
        .await?;
        let change = MembershipChange::Add {
            id: raft_id(id),
            addr: addr.to_string(),
        };
        self.retry_while_electing(|| self.replica.change_membership(change.clone()))
            .await?;
        Ok(format!("{id} is a voter of {}", self.dc))
    }

    /// `shoal managers remove ID`: leaves the group (joint consensus) and is not added
    /// back automatically.
    pub async fn remove_manager(&self, id: &str) -> Result<String, ChangeError> {
        let rid = raft_id(id);
        let s = self.group().status();
        if !s.voters.contains(&rid) && !s.learners.contains(&rid) {
            return Err(ChangeError::NotFound(format!(
                "id: `{id}` is not a member of the {} group",
                self.dc
            )));
        }
        if s.voters == [rid] {
            return Err(ChangeError::Refused(format!(
                "id: `{id}` is the last voter; it cannot be removed"
            )));
        }
        self.write_kv(KvCommand::Put {
            key: format!("{REMOVED_PREFIX}{id}"),
            value: Vec::new(),
        })
        .await?;
        self.retry_while_electing(|| {
            self.replica
                .change_membership(MembershipChange::Remove { id: rid })
        })
        .await?;
        Ok(format!("{id} left the {} group", self.dc))
    }

    async fn write_kv(&self, command: KvCommand) -> Result<(), ChangeError> {
        let request = Request {
            client: None,
            command: Command::Kv(command),
        };
        // Put and delete of a marker key: applying one twice is harmless.
        self.retry_while_electing(|| async { self.replica.write(request.clone()).await.map(drop) })
            .await
    }

    /// Runs `op`, again while the group has no reachable leader (an election, or a
    /// leader change under way), for up to `ELECTION_PATIENCE`.
    async fn retry_while_electing<F, Fut>(&self, mut op: F) -> Result<(), ChangeError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), GroupError>>,
    {
        let deadline = tokio::time::Instant::now() + ELECTION_PATIENCE;
        loop {
            match op().await {
                Ok(()) => return Ok(()),
                Err(
                    e @ (GroupError::NotLeader { .. }
                    | GroupError::Unknown { .. }
                    | GroupError::NoQuorum),
                ) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "no leader yet; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e @ GroupError::Membership(_)) => {
                    return Err(ChangeError::Refused(e.to_string()));
                }
                Err(e) => return Err(ChangeError::Unavailable(e.to_string())),
            }
        }
    }

    /// Figures for /metrics.
    pub fn figures(&self, snap: &Snapshot) -> crate::metrics::RaftFigures {
        let s = self.group().status();
        crate::metrics::RaftFigures {
            term: s.term,
            is_leader: s.role == "leader" && !s.quorum_lost,
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            voters: s.voters.len(),
            breakers: self
                .breakers
                .states()
                .into_iter()
                .map(|(id, b)| {
                    let v = match b {
                        BreakerState::Closed => 0,
                        BreakerState::HalfOpen => 1,
                        BreakerState::Open => 2,
                    };
                    (name_of(snap, id), v)
                })
                .collect(),
        }
    }

    /// The `raft` section of /v1/status and the body of /v1/quorum.
    pub fn quorum_doc(&self, snap: &Snapshot) -> serde_json::Value {
        let s = self.group().status();
        let live: BTreeMap<u64, Option<Lifecycle>> = live_managers(snap, &self.dc)
            .map(|(id, _, l)| (raft_id(id), l))
            .collect();
        let quorum = s.voters.len() / 2 + 1;
        let reachable = s.voters.iter().filter(|v| live.contains_key(v)).count();
        let active = s
            .voters
            .iter()
            .filter(|v| live.get(v).copied().flatten() == Some(Lifecycle::Active))
            .count();
        let breakers = self.breakers.states();
        let peers: Vec<serde_json::Value> = s
            .voters
            .iter()
            .map(|v| (v, "voter"))
            .chain(s.learners.iter().map(|l| (l, "learner")))
            .map(|(id, kind)| {
                json!({
                    "id": name_of(snap, *id),
                    "kind": kind,
                    "alive": live.contains_key(id),
                    "lifecycle": live.get(id).copied().flatten().map(|l| l.to_string()),
                    "matched_index": s.matched.get(id),
                    "breaker": if *id == s.id { None } else {
                        Some(breakers.get(id).map_or("closed".to_string(), |b| b.to_string()))
                    },
                })
            })
            .collect();
        // A leader no majority has acknowledged within its lease says so at once: it
        // takes no writes, and a newer leader may exist on the other side of a cut.
        let (role, leader) = if s.quorum_lost {
            ("leader_no_quorum", None)
        } else {
            (s.role, s.leader)
        };
        json!({
            "group": self.dc,
            "term": s.term,
            "leader_id": leader.map(|l| name_of(snap, l)),
            "role": role,
            "commit_index": s.commit_index,
            "applied_index": s.applied_index,
            "snapshot_index": s.snapshot_index,
            "voters": s.voters.iter().map(|v| name_of(snap, *v)).collect::<Vec<_>>(),
            "learners": s.learners.iter().map(|v| name_of(snap, *v)).collect::<Vec<_>>(),
            "joint": s.joint,
            "active": active,
            "quorum": quorum,
            "quorum_available": !s.voters.is_empty() && reachable >= quorum && !s.quorum_lost,
            "quorum_ack_ms": s.millis_since_quorum_ack,
            "peers": peers,
        })
    }
}

/// Initializes the group if `n` managers of our DC are alive and we have the lowest id.
/// Returns true once nothing is left to do (initialized here, or someone else's job).
async fn try_bootstrap(group: &RaftGroup, snap: &Snapshot, me: &str, dc: &str, n: usize) -> bool {
    let status = group.status();
    if !status.voters.is_empty() || !status.learners.is_empty() {
        return true; // already part of a formed group (restart, or joined)
    }
    let mut managers: Vec<(&str, &str)> = live_managers(snap, dc)
        .filter(|m| !matches!(m.2, Some(Lifecycle::Draining | Lifecycle::Leaving)))
        .map(|m| (m.0, m.1))
        .collect();
    managers.sort();
    if managers.len() < n {
        return false;
    }
    let chosen = &managers[..n];
    if chosen[0].0 != me {
        // The lowest id initializes; we will learn the group from it.
        return !chosen.iter().any(|(id, _)| *id == me);
    }
    let voters: BTreeMap<u64, String> = chosen
        .iter()
        .map(|(id, addr)| (raft_id(id), addr.to_string()))
        .collect();
    match group.initialize(voters).await {
        Ok(()) => {
            tracing::info!(managers = ?chosen.iter().map(|c| c.0).collect::<Vec<_>>(), "raft group initialized");
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "raft bootstrap failed; will retry");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raft_ids_are_stable_and_distinct() {
        // FNV-1a reference value for "a".
        assert_eq!(raft_id("a"), 0xaf63_dc4c_8601_ec8c);
        let ids: std::collections::BTreeSet<u64> =
            (1..=100).map(|i| raft_id(&format!("m{i}"))).collect();
        assert_eq!(ids.len(), 100);
    }
}

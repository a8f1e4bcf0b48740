//! Managers run the DC's Raft group: open the durable log, serve Raft over gRPC, form
//! the group once `bootstrap_expect` managers have met through gossip (the lowest id
//! initializes it, exactly once), and publish the leader in gossip metadata so every
//! node — gates and workers too — knows it.

use std::{collections::BTreeMap, time::Duration};

use serde_json::json;
use shoal_client::BreakerConfig;
use shoal_membership::{MembershipHandle, Snapshot};
use shoal_raft::{
    SqliteLog,
    group::{
        RaftGroup, RaftTiming, Replica,
        grpc::{Forwarder, GrpcNetwork, Identity},
    },
};
use shoal_types::{MemberState, NodeConfig, Role};

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

/// Starts this manager's member of its DC's group (None for gates and workers).
pub async fn start(config: &NodeConfig) -> Result<Option<RaftGroup>, ConsensusError> {
    if config.role != Role::Manager {
        return Ok(None);
    }
    let path = config.data_dir.join("raft.db");
    let log = SqliteLog::open(&path).map_err(|source| ConsensusError::Log {
        path: path.display().to_string(),
        source,
    })?;
    let network = GrpcNetwork::new(identity(config), BreakerConfig::default());
    let timing = RaftTiming {
        heartbeat_ms: config.raft.heartbeat_ms,
        election_min_ms: config.raft.election_min_ms,
        election_max_ms: config.raft.election_max_ms,
    };
    let group = RaftGroup::start(raft_id(config.id.as_str()), timing, log, network).await?;
    Ok(Some(group))
}

/// How long a forwarded call (write or read index) to the leader may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// The member as clients use it: forwards to the leader when it is not the leader.
pub fn replica(config: &NodeConfig, group: RaftGroup) -> Replica {
    Replica::new(
        group,
        Forwarder::new(identity(config), FORWARD_TIMEOUT),
        FORWARD_TIMEOUT,
    )
}

/// The group this node serves: its DC's managers, in its cluster.
pub fn identity(config: &NodeConfig) -> Identity {
    Identity {
        cluster_id: config.cluster_id.clone(),
        group: config.dc.clone(),
    }
}

/// Background duties of a manager: bootstrap, then keep the leader hint current.
pub fn spawn_duties(config: &NodeConfig, group: RaftGroup, membership: MembershipHandle) {
    let expect = config.bootstrap_expect;
    let me = config.id.to_string();
    let dc = config.dc.clone();
    tokio::spawn(async move {
        let mut bootstrapped = expect.is_none();
        let mut published: Option<(String, u64)> = None;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let snap = membership.snapshot();
            if !bootstrapped && let Some(n) = expect {
                bootstrapped = try_bootstrap(&group, &snap, &me, &dc, n as usize).await;
            }
            let leader = group.leader().and_then(|(l, term)| {
                snap.members
                    .iter()
                    .find(|m| raft_id(&m.id) == l)
                    .map(|m| (m.id.clone(), term))
            });
            if leader != published {
                let hint = leader.clone();
                if membership
                    .update_meta(move |m| {
                        m.leader_term = hint.as_ref().map_or(0, |h| h.1);
                        m.leader_hint = hint.map(|h| h.0);
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                published = leader;
            }
        }
    });
}

/// Initializes the group if `n` managers of our DC are alive and we have the lowest id.
/// Returns true once nothing is left to do (initialized here, or someone else's job).
async fn try_bootstrap(group: &RaftGroup, snap: &Snapshot, me: &str, dc: &str, n: usize) -> bool {
    if !group.status().voters.is_empty() {
        return true; // already part of a formed group (restart, or joined)
    }
    let mut managers: Vec<(&str, &str)> = snap
        .members
        .iter()
        .filter(|m| {
            m.state == MemberState::Alive
                && m.role == Some(Role::Manager)
                && m.dc.as_deref() == Some(dc)
        })
        .map(|m| (m.id.as_str(), m.addr.as_str()))
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

/// The `raft` section of /v1/status.
pub fn status_section(group: &RaftGroup, snap: &Snapshot, dc: &str) -> serde_json::Value {
    let s = group.status();
    let name = |rid: u64| {
        snap.members
            .iter()
            .find(|m| raft_id(&m.id) == rid)
            .map_or_else(|| rid.to_string(), |m| m.id.clone())
    };
    let alive = |rid: u64| {
        snap.members
            .iter()
            .any(|m| raft_id(&m.id) == rid && m.state == MemberState::Alive)
    };
    let quorum = s.voters.len() / 2 + 1;
    let reachable = s.voters.iter().filter(|v| alive(**v)).count();
    json!({
        "group": dc,
        "term": s.term,
        "leader_id": s.leader.map(name),
        "role": s.role,
        "commit_index": s.commit_index,
        "voters": s.voters.iter().map(|v| name(*v)).collect::<Vec<_>>(),
        "quorum": quorum,
        "quorum_available": !s.voters.is_empty() && reachable >= quorum,
    })
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

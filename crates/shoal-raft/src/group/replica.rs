//! [`Replica`]: one member of a group as its clients use it — writes and linearizable
//! reads work on any member; a follower forwards writes to the leader and asks it for
//! a read index, then serves the read from its own applied state.

use std::{collections::BTreeSet, time::Duration};

use shoal_state::{LogIndex, Request};

use super::{Applied, GroupError, RaftGroup, grpc::Forwarder};

/// A change to the voter set, run by the leader (forwarded there from any member).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MembershipChange {
    /// Add a member: as a learner first, then — once it has caught up with the log — as
    /// a voter (joint consensus).
    Add { id: u64, addr: String },
    /// Remove a member from the group (voter or learner).
    Remove { id: u64 },
}

/// How long the leader waits for a new member to catch up before promoting it.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a forwarded write waits before asking a leader without quorum again.
const NO_QUORUM_PAUSE: Duration = Duration::from_millis(5);

/// A group member plus the means to reach its leader.
#[derive(Debug, Clone)]
pub struct Replica {
    pub group: RaftGroup,
    forwarder: Forwarder,
    /// How long a follower waits to apply a read index.
    read_wait: Duration,
    /// How long a write waits for a leader while none is known or the one tried is
    /// gone (an election): about two election windows.
    leader_wait: Duration,
}

impl Replica {
    pub fn new(
        group: RaftGroup,
        forwarder: Forwarder,
        read_wait: Duration,
        leader_wait: Duration,
    ) -> Self {
        Self {
            group,
            forwarder,
            read_wait,
            leader_wait,
        }
    }

    /// The leader's id and address, if this member knows them and it is not itself.
    fn remote_leader(&self, hint: Option<u64>) -> Option<String> {
        let leader = hint.or_else(|| self.group.leader().map(|(l, _)| l))?;
        if leader == self.group.id() {
            return None;
        }
        self.group.member_addr(leader)
    }

    /// Commits `request` through the leader, wherever it is.
    ///
    /// During an election the write waits (up to `leader_wait`) for the next leader
    /// instead of failing at once, as etcd does: the client then gets its answer as
    /// soon as the group can give one, without polling. A forwarded write is retried at
    /// the new leader when the old one said it is not the leader (nothing was written)
    /// or could not be reached and the request carries a client tag (the state machine
    /// applies a tagged write once). `NotLeader { leader: None }` means no leader
    /// appeared in time.
    pub async fn write(&self, request: Request) -> Result<Applied, GroupError> {
        let deadline = tokio::time::Instant::now() + self.leader_wait;
        let mut failed_with: Option<(u64, u64)> = None;
        loop {
            let leader = match self.group.leader() {
                Some(l) if Some(l) != failed_with => Some(l),
                _ => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    self.group.await_leader(failed_with, left).await
                }
            };
            let Some((id, term)) = leader else {
                tracing::debug!("write: no leader in time");
                return Err(GroupError::NotLeader { leader: None });
            };
            tracing::trace!(leader = id, term, "write: to leader");
            // The leader proposes directly (the request is not copied on its hot path).
            if id == self.group.id() {
                return self.group.propose(request).await;
            }
            let Some(addr) = self.group.member_addr(id) else {
                return Err(GroupError::NotLeader { leader: Some(id) });
            };
            // A tagged write stops waiting on a leader that this member sees replaced (a
            // dead leader's connection can hang in reconnect): it goes to the new one, and
            // the tag makes sure it is applied once whichever copy lands.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let replaced = async {
                match request.client {
                    Some(_) => self.group.await_leader(Some((id, term)), left).await,
                    None => None,
                }
            };
            let outcome = tokio::select! {
                r = self.forwarder.propose(&addr, &request) => r,
                Some(_) = replaced => Err(GroupError::Unknown { leader: None }),
            };
            let error = match outcome {
                Ok((index, term, response)) => {
                    return Ok(Applied {
                        index: LogIndex(index),
                        term,
                        response,
                    });
                }
                Err(e @ GroupError::NotLeader { .. }) => e,
                Err(e @ GroupError::Unknown { .. }) if request.client.is_some() => e,
                // The leader is there but has no fresh majority behind it (cut off, or
                // its lease lapsed): nothing was written; ask it again shortly, unless
                // this member sees it replaced meanwhile.
                Err(GroupError::NoQuorum) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(leader = id, term, "write: leader without quorum");
                    tokio::time::sleep(NO_QUORUM_PAUSE).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            tracing::debug!(leader = id, term, error = %error, "write: forward failed");
            if tokio::time::Instant::now() >= deadline {
                return Err(error);
            }
            failed_with = Some((id, term));
        }
    }

    /// Returns once this member's state reflects every write committed before the call.
    pub async fn linearize(&self) -> Result<(), GroupError> {
        let index = match self.group.read_index().await {
            Ok(index) => index,
            Err(GroupError::NotLeader { leader }) => {
                let Some(addr) = self.remote_leader(leader) else {
                    return Err(GroupError::NotLeader { leader });
                };
                self.forwarder.read_index(&addr).await?
            }
            Err(e) => return Err(e),
        };
        self.group.await_applied(index, self.read_wait).await
    }
}

impl Replica {
    /// Runs a membership change at the leader, wherever it is.
    pub async fn change_membership(&self, change: MembershipChange) -> Result<(), GroupError> {
        match self.group.leader() {
            Some((l, _)) if l == self.group.id() => apply_change(&self.group, change).await,
            leader => {
                let Some(addr) = self.remote_leader(leader.map(|l| l.0)) else {
                    return Err(GroupError::NotLeader { leader: None });
                };
                self.forwarder.change_membership(&addr, &change).await
            }
        }
    }
}

/// The leader's side of a membership change.
pub async fn apply_change(group: &RaftGroup, change: MembershipChange) -> Result<(), GroupError> {
    let status = group.status();
    if status.role != "leader" {
        return Err(GroupError::NotLeader {
            leader: status.leader,
        });
    }
    match change {
        MembershipChange::Add { id, addr } => {
            if status.voters.contains(&id) {
                return Ok(());
            }
            if !status.learners.contains(&id) {
                group.add_learner(id, addr).await?;
            }
            group.await_caught_up(id, CATCH_UP_TIMEOUT).await?;
            group.add_voters(BTreeSet::from([id])).await
        }
        MembershipChange::Remove { id } => {
            if status.voters.contains(&id) {
                if status.voters.len() == 1 {
                    return Err(GroupError::Membership(
                        "the last voter cannot be removed".into(),
                    ));
                }
                group.remove_voters(BTreeSet::from([id]), false).await
            } else if status.learners.contains(&id) {
                group.remove_learners(BTreeSet::from([id])).await
            } else {
                Ok(())
            }
        }
    }
}

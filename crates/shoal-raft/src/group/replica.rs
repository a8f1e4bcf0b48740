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

/// A group member plus the means to reach its leader.
#[derive(Debug, Clone)]
pub struct Replica {
    pub group: RaftGroup,
    forwarder: Forwarder,
    /// How long a follower waits to apply a read index.
    read_wait: Duration,
}

impl Replica {
    pub fn new(group: RaftGroup, forwarder: Forwarder, read_wait: Duration) -> Self {
        Self {
            group,
            forwarder,
            read_wait,
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

    /// Commits `request` through the leader, wherever it is. `NotLeader { leader: None }`
    /// means no leader is known right now (an election is running): retry shortly.
    pub async fn write(&self, request: Request) -> Result<Applied, GroupError> {
        // Forward straight away when another member leads; otherwise propose here (the
        // request is not copied on the leader's hot path).
        let addr = match self.group.leader() {
            Some((l, _)) if l != self.group.id() => self.group.member_addr(l),
            _ => None,
        };
        let Some(addr) = addr else {
            return self.group.propose(request).await;
        };
        let (index, term, response) = self.forwarder.propose(&addr, &request).await?;
        Ok(Applied {
            index: LogIndex(index),
            term,
            response,
        })
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

//! [`Replica`]: one member of a group as its clients use it — writes and linearizable
//! reads work on any member; a follower forwards writes to the leader and asks it for
//! a read index, then serves the read from its own applied state.

use std::time::Duration;

use shoal_state::{LogIndex, Request};

use super::{Applied, GroupError, RaftGroup, grpc::Forwarder};

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
        match self.group.propose(request.clone()).await {
            Err(GroupError::NotLeader { leader }) => {
                let Some(addr) = self.remote_leader(leader) else {
                    return Err(GroupError::NotLeader { leader });
                };
                let (index, term, response) = self.forwarder.propose(&addr, &request).await?;
                Ok(Applied {
                    index: LogIndex(index),
                    term,
                    response,
                })
            }
            other => other,
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

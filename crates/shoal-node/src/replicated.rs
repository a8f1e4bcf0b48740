//! How a gRPC service reaches the replicated state (KV, chat, jobs, gates): commit a
//! command through the group, take a read point, check a client's write tag, page a
//! listing, and turn Raft's failures and answers into statuses and fences a client can
//! act on.

use shoal_proto::v1::{Fence, WriteTag};
use shoal_raft::group::{Applied, GroupError, Replica};
use shoal_state::{ClientTag, Command, Request as SmRequest, Response as SmResponse};
use tonic::Status;

/// The gRPC status for a Raft failure.
pub fn group_status(e: GroupError) -> Status {
    match e {
        GroupError::NotLeader { leader: None } => {
            Status::unavailable("no leader right now (an election is in progress); retry")
        }
        GroupError::NotLeader { leader: Some(l) } => Status::unavailable(format!(
            "not the leader and the leader ({l:016x}) is not reachable from here; retry"
        )),
        GroupError::Unknown { .. } => Status::unavailable(
            "leadership changed while the write was in flight; its outcome is unknown: retry it with the same tag",
        ),
        GroupError::Timeout { .. } | GroupError::NoQuorum => Status::unavailable(e.to_string()),
        GroupError::Membership(m) => Status::failed_precondition(m),
        GroupError::Config(m) | GroupError::Fatal(m) => Status::unavailable(format!("raft: {m}")),
    }
}

/// Commits a command through the group (a follower forwards it) and returns what the
/// state machine answered; a tag older than the cluster remembers is FAILED_PRECONDITION.
pub(crate) async fn commit(
    replica: &Replica,
    client: Option<ClientTag>,
    command: Command,
) -> Result<Applied, Status> {
    let applied = replica
        .write(SmRequest { client, command })
        .await
        .map_err(group_status)?;
    if let SmResponse::SessionExpired { client_id, seq } = &applied.response {
        return Err(Status::failed_precondition(format!(
            "tag: write {seq} of client {client_id} is older than the {} most recent this cluster remembers; its outcome is no longer known",
            shoal_state::session::RESPONSES_PER_CLIENT
        )));
    }
    Ok(applied)
}

/// Before a read: a read index from the leader, unless the caller asked for a stale
/// read of this replica's applied state.
pub(crate) async fn read_point(replica: &Replica, stale: bool) -> Result<(), Status> {
    if stale {
        return Ok(());
    }
    replica.linearize().await.map_err(group_status)
}

/// A page size from a request: 0 means `max`; above `max` is refused.
pub(crate) fn page_limit(limit: u32, max: usize) -> Result<usize, Status> {
    match limit as usize {
        0 => Ok(max),
        n if n > max => Err(Status::invalid_argument(format!(
            "limit: {n}, the most is {max} (0 means {max})"
        ))),
        n => Ok(n),
    }
}

/// Checks a client's write tag.
pub(crate) fn tag(t: Option<WriteTag>) -> Result<Option<ClientTag>, Status> {
    match t {
        None => Ok(None),
        Some(WriteTag { client_id: 0, .. }) => Err(Status::invalid_argument(
            "tag.client_id: must not be 0 (omit the tag for an untagged write)",
        )),
        Some(WriteTag { seq: 0, .. }) => {
            Err(Status::invalid_argument("tag.seq: must be at least 1"))
        }
        Some(WriteTag { client_id, seq }) => Ok(Some(ClientTag { client_id, seq })),
    }
}

/// The fence a client gets with an answer: the place in the log of the application that
/// produced it (for a retried write, its first application).
pub(crate) fn fence(a: &Applied) -> Option<Fence> {
    Some(Fence {
        term: a.term,
        index: a.index.0,
    })
}

//! The `Kv` gRPC service on managers: validates at the edge, then writes through the
//! Raft group (a follower forwards to the leader) and reads from the applied state —
//! after a read index from the leader unless the caller asked for a stale read.
//!
//! Errors are gRPC statuses a client can act on:
//! - INVALID_ARGUMENT: the request is wrong (the message names the field and the rule);
//!   nothing was written.
//! - UNAVAILABLE: no leader right now, or the outcome of a write is unknown; retry (the
//!   same write tag makes the retry safe).
//! - FAILED_PRECONDITION: the write tag is older than the server remembers.

use shoal_proto::v1::{
    CasRequest, CasResponse, DeleteRequest, DeleteResponse, Fence, GetRequest, GetResponse,
    KeyValue, ListRequest, ListResponse, PutRequest, PutResponse, WriteTag,
    kv_server::{Kv, KvServer},
};
use shoal_raft::group::{Applied, GroupError, Replica};
use shoal_state::{
    ClientTag, Command, KvCommand, KvEntry, KvError, KvResponse, Request as SmRequest,
    Response as SmResponse, kv,
};
use tonic::{Request, Response, Status};

/// Keys listed at most per `List` call (a limit of 0 means this).
pub const LIST_LIMIT_MAX: usize = 10_000;

/// The `Kv` service of one manager.
pub struct KvService {
    replica: Replica,
}

pub fn service(replica: Replica) -> KvServer<KvService> {
    KvServer::new(KvService { replica })
        .max_decoding_message_size(shoal_proto::GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(shoal_proto::GRPC_MESSAGE_BYTES_MAX)
}

fn invalid(e: KvError) -> Status {
    Status::invalid_argument(e.to_string())
}

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

pub(crate) fn fence(a: &Applied) -> Option<Fence> {
    Some(Fence {
        term: a.term,
        index: a.index.0,
    })
}

fn key_value(key: &str, e: &KvEntry) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: e.value.clone(),
        create_revision: e.create_revision,
        mod_revision: e.mod_revision,
        version: e.version,
    }
}

impl KvService {
    /// Commits a KV command and returns the state machine's answer.
    async fn write(
        &self,
        client: Option<ClientTag>,
        cmd: KvCommand,
    ) -> Result<(Applied, Result<KvResponse, KvError>), Status> {
        cmd.validate().map_err(invalid)?;
        let applied = commit(&self.replica, client, Command::Kv(cmd)).await?;
        match &applied.response {
            SmResponse::Kv(r) => {
                let r = r.clone();
                Ok((applied, r))
            }
            other => Err(Status::internal(format!("unexpected response {other}"))),
        }
    }

    async fn read_point(&self, stale: bool) -> Result<(), Status> {
        read_point(&self.replica, stale).await
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn put(&self, r: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        tracing::trace!("kv put in");
        let r = r.into_inner();
        let client = tag(r.tag)?;
        let (applied, result) = self
            .write(
                client,
                KvCommand::Put {
                    key: r.key,
                    value: r.value,
                },
            )
            .await?;
        match result.map_err(invalid)? {
            KvResponse::Put { revision, previous } => Ok(Response::new(PutResponse {
                revision,
                previous_revision: previous.unwrap_or(0),
                fence: fence(&applied),
            })),
            other => Err(Status::internal(format!("unexpected response {other:?}"))),
        }
    }

    async fn get(&self, r: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let r = r.into_inner();
        kv::validate_key(&r.key).map_err(invalid)?;
        self.read_point(r.stale).await?;
        let (kv, store_revision) = self.replica.group.read(|s| {
            (
                s.kv.get(&r.key).map(|e| key_value(&r.key, e)),
                s.kv.revision(),
            )
        });
        Ok(Response::new(GetResponse { kv, store_revision }))
    }

    async fn delete(&self, r: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        let r = r.into_inner();
        let client = tag(r.tag)?;
        let (applied, result) = self.write(client, KvCommand::Delete { key: r.key }).await?;
        match result.map_err(invalid)? {
            KvResponse::Delete { revision } => Ok(Response::new(DeleteResponse {
                existed: revision.is_some(),
                revision: revision.unwrap_or(0),
                fence: fence(&applied),
            })),
            other => Err(Status::internal(format!("unexpected response {other:?}"))),
        }
    }

    async fn list(&self, r: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let r = r.into_inner();
        if r.prefix.len() > kv::KEY_BYTES_MAX {
            return Err(Status::invalid_argument(format!(
                "prefix: {} bytes, the limit is {}",
                r.prefix.len(),
                kv::KEY_BYTES_MAX
            )));
        }
        let limit = page_limit(r.limit, LIST_LIMIT_MAX)?;
        self.read_point(r.stale).await?;
        let (kvs, more, store_revision) = self.replica.group.read(|s| {
            let mut it = s.kv.list(&r.prefix);
            let kvs: Vec<KeyValue> = it
                .by_ref()
                .take(limit)
                .map(|(k, e)| key_value(k, e))
                .collect();
            (kvs, it.next().is_some(), s.kv.revision())
        });
        Ok(Response::new(ListResponse {
            kvs,
            store_revision,
            more,
        }))
    }

    async fn cas(&self, r: Request<CasRequest>) -> Result<Response<CasResponse>, Status> {
        let r = r.into_inner();
        let client = tag(r.tag)?;
        let (applied, result) = self
            .write(
                client,
                KvCommand::Cas {
                    key: r.key,
                    value: r.value,
                    expected_revision: r.expected_revision,
                },
            )
            .await?;
        let (succeeded, revision) = match result {
            Ok(KvResponse::Put { revision, .. }) => (true, revision),
            Err(KvError::RevisionMismatch { actual, .. }) => (false, actual),
            Ok(other) => return Err(Status::internal(format!("unexpected response {other:?}"))),
            Err(e) => return Err(invalid(e)),
        };
        Ok(Response::new(CasResponse {
            succeeded,
            revision,
            fence: fence(&applied),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_limits_default_cap_and_refuse_naming_the_field() {
        assert_eq!(page_limit(0, 1000).unwrap(), 1000);
        assert_eq!(page_limit(7, 1000).unwrap(), 7);
        assert_eq!(page_limit(1000, 1000).unwrap(), 1000);
        let e = page_limit(1001, 1000).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert_eq!(e.message(), "limit: 1001, the most is 1000 (0 means 1000)");
    }
}

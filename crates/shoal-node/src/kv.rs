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
    CasRequest, CasResponse, DeleteRequest, DeleteResponse, GetRequest, GetResponse, KeyValue,
    ListRequest, ListResponse, PutRequest, PutResponse,
    kv_server::{Kv, KvServer},
};
use shoal_raft::group::{Applied, Replica};
use shoal_state::{
    ClientTag, Command, KvCommand, KvEntry, KvError, KvResponse, Response as SmResponse, kv,
};
use tonic::{Request, Response, Status};

use crate::replicated::{commit, fence, page_limit, read_point, tag};

/// Keys listed at most per `List` call (a limit of 0 means this).
pub const LIST_LIMIT_MAX: usize = 10_000;
/// A list page ends once its keys and values reach this many bytes (one entry always
/// fits: a key and a value are far below it), well under the 4 MiB message limit, so
/// no request copies more than this under the state lock.
pub const LIST_PAGE_BYTES_MAX: usize = 3 * 1024 * 1024;

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
        let after = match r.page_token.as_str() {
            "" => None,
            t if t.len() <= kv::KEY_BYTES_MAX && t.starts_with(&r.prefix) => Some(t),
            _ => {
                return Err(Status::invalid_argument(
                    "page_token: not one this listing gave (pass the previous page's next_page_token with the same prefix)",
                ));
            }
        };
        self.read_point(r.stale).await?;
        let (kvs, more, store_revision) = self.replica.group.read(|s| {
            let mut it = s.kv.list_after(&r.prefix, after).peekable();
            let mut kvs: Vec<KeyValue> = Vec::new();
            let mut bytes = 0;
            while let Some((k, e)) = it.peek() {
                let size = k.len() + e.value.len() + 64;
                if kvs.len() == limit || (!kvs.is_empty() && bytes + size > LIST_PAGE_BYTES_MAX) {
                    break;
                }
                bytes += size;
                kvs.push(key_value(k, e));
                it.next();
            }
            (kvs, it.peek().is_some(), s.kv.revision())
        });
        let next_page_token = match (more, kvs.last()) {
            (true, Some(last)) => last.key.clone(),
            _ => String::new(),
        };
        Ok(Response::new(ListResponse {
            kvs,
            store_revision,
            more,
            next_page_token,
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

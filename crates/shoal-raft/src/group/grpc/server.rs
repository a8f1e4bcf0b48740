//! The server side: the `shoal.v1.Raft` service hands each RPC to the local group.

use futures_util::StreamExt;
use openraft::{
    alias::{SnapshotOf, VoteOf},
    raft::{AppendEntriesRequest, VoteRequest},
};
use shoal_proto::{
    GRPC_MESSAGE_BYTES_MAX,
    v1::{
        RaftMessage, SnapshotChunk,
        raft_server::{Raft as RaftRpc, RaftServer},
    },
};
use shoal_types::limits::SNAPSHOT_BYTES_MAX;
use tonic::{Request, Response, Status, Streaming};

use super::{C, Identity, decode, encode};
use crate::group::{
    GroupError, RaftGroup, SnapshotData,
    replica::{MembershipChange, apply_change},
};

/// The server side: hands each RPC to the local group.
pub struct RaftService {
    group: RaftGroup,
    me: Identity,
}

/// The gRPC service for `group`, with explicit message size limits.
pub fn service(group: RaftGroup, me: Identity) -> RaftServer<RaftService> {
    RaftServer::new(RaftService { group, me })
        .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX)
}

fn raft_status(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("raft: {e}"))
}

/// What a forwarded proposal returns.
pub type ProposeOutcome = Result<(u64, u64, shoal_state::Response), GroupError>;

#[tonic::async_trait]
impl RaftRpc for RaftService {
    type AppendStreamStream =
        std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<RaftMessage, Status>> + Send>>;

    /// The follower side of streamed replication: requests in, results out, in order
    /// (openraft pipelines them). A message that fails the cluster check or does not
    /// decode ends the stream; the leader opens a new one.
    async fn append_stream(
        &self,
        r: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        let me = self.me.clone();
        let requests = r.into_inner().scan((), move |_, item| {
            let req = match item {
                Ok(m) => me
                    .open::<AppendEntriesRequest<C>>(&m)
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            futures_util::future::ready(match req {
                Ok(req) => {
                    tracing::trace!(entries = req.entries.len(), "append in");
                    Some(req)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "replication stream ends");
                    None
                }
            })
        });
        let me = self.me.clone();
        let results = self
            .group
            .raft()
            .stream_append(requests)
            .map(move |r| match r {
                Ok(result) => {
                    tracing::trace!("append result out");
                    encode(&result).map(|p| me.message(p))
                }
                Err(fatal) => Err(Status::unavailable(format!("raft stopped: {fatal}"))),
            });
        Ok(Response::new(Box::pin(results)))
    }

    async fn vote(&self, r: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let req: VoteRequest<C> = self.me.open(r.get_ref())?;
        let resp = self.group.raft().vote(req).await.map_err(raft_status)?;
        Ok(Response::new(self.me.message(encode(&resp)?)))
    }

    async fn pre_vote(&self, r: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let req: VoteRequest<C> = self.me.open(r.get_ref())?;
        let resp = self.group.raft().pre_vote(req).await.map_err(raft_status)?;
        Ok(Response::new(self.me.message(encode(&resp)?)))
    }

    async fn append_entries(
        &self,
        r: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let req: AppendEntriesRequest<C> = self.me.open(r.get_ref())?;
        let resp = self
            .group
            .raft()
            .append_entries(req)
            .await
            .map_err(raft_status)?;
        Ok(Response::new(self.me.message(encode(&resp)?)))
    }

    async fn install_snapshot(
        &self,
        r: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftMessage>, Status> {
        let mut stream = r.into_inner();
        let mut head: Option<Vec<u8>> = None;
        let mut data = Vec::new();
        let mut done = false;
        // The limit: what the first chunk declared (if anything), never above the cap.
        let mut limit = SNAPSHOT_BYTES_MAX;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            self.me.check(&chunk.cluster_id, &chunk.group)?;
            if head.is_none() {
                if chunk.total_bytes > SNAPSHOT_BYTES_MAX {
                    return Err(Status::resource_exhausted(format!(
                        "snapshot: declares {} bytes, the limit is {SNAPSHOT_BYTES_MAX}; nothing installed",
                        chunk.total_bytes
                    )));
                }
                if chunk.total_bytes > 0 {
                    limit = chunk.total_bytes;
                }
                head = Some(chunk.meta);
            }
            let received = data.len() as u64 + chunk.data.len() as u64;
            if received > limit {
                return Err(Status::resource_exhausted(format!(
                    "snapshot: {received} bytes received, more than the {limit} declared or allowed; nothing installed"
                )));
            }
            data.extend_from_slice(&chunk.data);
            if chunk.done {
                done = true;
                break;
            }
        }
        // A sender that gave up (its timeout) ends the stream early: what arrived is a
        // prefix of the snapshot, and installing it would fail to decode and stop Raft.
        if !done {
            return Err(Status::aborted(format!(
                "snapshot: the stream ended before its last chunk ({} bytes received); nothing installed",
                data.len()
            )));
        }
        let head =
            head.ok_or_else(|| Status::invalid_argument("meta: the first chunk must carry it"))?;
        let (vote, meta): (VoteOf<C>, openraft::alias::SnapshotMetaOf<C>) = decode(&head)?;
        let snapshot = SnapshotOf::<C, SnapshotData> {
            meta,
            snapshot: std::io::Cursor::new(data),
        };
        let resp = self
            .group
            .raft()
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(raft_status)?;
        Ok(Response::new(self.me.message(encode(&resp)?)))
    }

    async fn propose(&self, r: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let req: shoal_state::Request = self.me.open(r.get_ref())?;
        let outcome: ProposeOutcome = self
            .group
            .propose(req)
            .await
            .map(|a| (a.index.0, a.term, a.response));
        Ok(Response::new(self.me.message(encode(&outcome)?)))
    }

    async fn read_index(&self, r: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let () = self.me.open(r.get_ref())?;
        let outcome: Result<u64, GroupError> = self.group.read_index().await;
        Ok(Response::new(self.me.message(encode(&outcome)?)))
    }

    async fn change_membership(
        &self,
        r: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let change: MembershipChange = self.me.open(r.get_ref())?;
        let outcome: Result<(), GroupError> = apply_change(&self.group, change).await;
        Ok(Response::new(self.me.message(encode(&outcome)?)))
    }
}

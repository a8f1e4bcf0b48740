//! Raft over gRPC: the `shoal.v1.Raft` service (`server`), the follower → leader calls
//! (`forwarder`) and the network factory openraft uses to reach peers (`peer`).
//!
//! Every message carries the group name and the cluster id; a node of another cluster
//! or group is refused (PERMISSION_DENIED / NOT_FOUND) before anything is decoded. The
//! payload is the postcard encoding of openraft's message, versioned by `version`.
//! Each peer client sits behind one circuit breaker per peer (`peer_breaker`).

mod forwarder;
mod peer;
mod server;

pub use forwarder::Forwarder;
pub use peer::{Breakers, GrpcNetwork, GrpcPeer, peer_breaker};
pub use server::{ProposeOutcome, RaftService, service};

use std::sync::Mutex;

use serde::{Serialize, de::DeserializeOwned};
use shoal_proto::v1::RaftMessage;
use tonic::Status;

use super::ShoalRaft;

pub(super) type C = ShoalRaft;

/// Encoding version of the payloads.
pub const PAYLOAD_VERSION: u32 = 1;
/// Snapshot bytes per streamed chunk.
pub(super) const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

pub(super) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, Status> {
    postcard::to_allocvec(v).map_err(|e| Status::internal(format!("encode: {e}")))
}

pub(super) fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, Status> {
    postcard::from_bytes(b)
        .map_err(|e| Status::invalid_argument(format!("payload: does not decode: {e}")))
}

/// Who we are, checked on every message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub cluster_id: String,
    pub group: String,
}

impl Identity {
    fn message(&self, payload: Vec<u8>) -> RaftMessage {
        RaftMessage {
            group: self.group.clone(),
            cluster_id: self.cluster_id.clone(),
            version: PAYLOAD_VERSION,
            payload,
        }
    }

    fn check(&self, cluster_id: &str, group: &str) -> Result<(), Status> {
        if cluster_id != self.cluster_id {
            return Err(Status::permission_denied(
                "cluster_id: this node belongs to another cluster",
            ));
        }
        if group != self.group {
            return Err(Status::not_found(format!(
                "group: `{group}` is not served here"
            )));
        }
        Ok(())
    }

    fn open<T: DeserializeOwned>(&self, m: &RaftMessage) -> Result<T, Status> {
        self.check(&m.cluster_id, &m.group)?;
        if m.version != PAYLOAD_VERSION {
            return Err(Status::invalid_argument(format!(
                "version: {} is not understood; this node speaks {PAYLOAD_VERSION}",
                m.version
            )));
        }
        decode(&m.payload)
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

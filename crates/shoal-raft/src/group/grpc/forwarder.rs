//! Follower → leader calls: forwarded writes, read indexes, membership changes.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::{Serialize, de::DeserializeOwned};
use shoal_proto::{
    GRPC_MESSAGE_BYTES_MAX,
    v1::{RaftMessage, raft_client::RaftClient},
};
use shoal_security::Transport;
use tonic::{Request, Response, Status, transport::Channel};

use super::{Identity, encode, server::ProposeOutcome};
use crate::group::{
    GroupError,
    replica::{CATCH_UP_TIMEOUT, MembershipChange},
};

/// Client side of the follower → leader calls (forwarded writes, read indexes). One
/// channel per leader address, connected lazily and reused.
#[derive(Clone)]
pub struct Forwarder {
    me: Identity,
    timeout: Duration,
    transport: Transport,
    channels: Arc<Mutex<std::collections::HashMap<String, RaftClient<Channel>>>>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder").field("me", &self.me).finish()
    }
}

impl Forwarder {
    /// `timeout` bounds each forwarded call.
    pub fn new(me: Identity, timeout: Duration, transport: Transport) -> Self {
        Self {
            me,
            timeout,
            transport,
            channels: Arc::default(),
        }
    }

    fn client(&self, addr: &str) -> Result<RaftClient<Channel>, GroupError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let channel = self
            .transport
            .endpoint(addr)
            .map_err(|e| GroupError::Fatal(format!("leader address `{addr}`: {e}")))?
            .connect_timeout(Duration::from_millis(500))
            .connect_lazy();
        let client = RaftClient::new(channel)
            .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX);
        channels.insert(addr.to_string(), client.clone());
        Ok(client)
    }

    fn request<T: Serialize>(&self, v: &T) -> Result<Request<RaftMessage>, GroupError> {
        let payload = encode(v).map_err(|e| GroupError::Fatal(e.to_string()))?;
        let mut request = Request::new(self.me.message(payload));
        request.set_timeout(self.timeout);
        Ok(request)
    }

    fn reply<T: DeserializeOwned>(
        &self,
        r: Result<Response<RaftMessage>, Status>,
        unknown: GroupError,
    ) -> Result<T, GroupError> {
        match r {
            Ok(reply) => self
                .me
                .open::<T>(reply.get_ref())
                .map_err(|s| GroupError::Fatal(s.message().to_string())),
            // The call may or may not have reached the leader.
            Err(s) => {
                tracing::debug!(error = %s, "forwarded call failed");
                Err(unknown)
            }
        }
    }

    /// Proposes at the leader at `addr`. A transport failure is `Unknown`: the write may
    /// have committed, so the caller retries with the same client tag.
    pub async fn propose(&self, addr: &str, req: &shoal_state::Request) -> ProposeOutcome {
        let mut client = self.client(addr)?;
        let r = client.propose(self.request(req)?).await;
        self.reply::<ProposeOutcome>(r, GroupError::Unknown { leader: None })?
    }

    /// Asks the leader at `addr` to change the membership. Adding a member waits for
    /// it to catch up, so this call is allowed the catch-up time.
    pub async fn change_membership(
        &self,
        addr: &str,
        change: &MembershipChange,
    ) -> Result<(), GroupError> {
        let mut client = self.client(addr)?;
        let mut request = self.request(change)?;
        request.set_timeout(CATCH_UP_TIMEOUT + self.timeout);
        let r = client.change_membership(request).await;
        self.reply::<Result<(), GroupError>>(r, GroupError::Unknown { leader: None })?
    }

    /// Asks the leader at `addr` for a read index.
    pub async fn read_index(&self, addr: &str) -> Result<u64, GroupError> {
        let mut client = self.client(addr)?;
        let r = client.read_index(self.request(&())?).await;
        self.reply::<Result<u64, GroupError>>(r, GroupError::NotLeader { leader: None })?
    }
}

//! Raft over gRPC: the `shoal.v1.Raft` service (server side) and the network factory
//! openraft uses to reach peers (client side).
//!
//! Every message carries the group name and the cluster id; a node of another cluster
//! or group is refused (PERMISSION_DENIED / NOT_FOUND) before anything is decoded. The
//! payload is the postcard encoding of openraft's message, versioned by `version`.
//! Each peer client sits behind one circuit breaker (shoal-client's).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use openraft::{
    BasicNode,
    alias::{SnapshotOf, VoteOf},
    base::{BoxFuture, BoxStream},
    errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable},
    network::{RPCOption, RaftNetworkFactory, stream_append_sequential, v2::RaftNetworkV2},
    raft::{
        AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult,
        VoteRequest, VoteResponse,
    },
};
use serde::{Serialize, de::DeserializeOwned};
use shoal_proto::{
    GRPC_MESSAGE_BYTES_MAX,
    v1::{
        RaftMessage, SnapshotChunk,
        raft_client::RaftClient,
        raft_server::{Raft as RaftRpc, RaftServer},
    },
};
use shoal_types::breaker::{BreakerConfig, BreakerState};
use tokio_stream_compat::StreamExt;
use tonic::{Request, Response, Status, Streaming, transport::Channel};

use super::{
    GroupError, RaftGroup, ShoalRaft, SnapshotData,
    hold::{HOLD, HoldBack},
    peer_breaker::{PeerBreaker, Permit},
    replica::{CATCH_UP_TIMEOUT, MembershipChange, apply_change},
};

type C = ShoalRaft;

/// Encoding version of the payloads.
pub const PAYLOAD_VERSION: u32 = 1;
/// Snapshot bytes per streamed chunk.
const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

mod tokio_stream_compat {
    pub use futures_util::StreamExt;
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, Status> {
    postcard::to_allocvec(v).map_err(|e| Status::internal(format!("encode: {e}")))
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, Status> {
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
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            self.me.check(&chunk.cluster_id, &chunk.group)?;
            if head.is_none() {
                head = Some(chunk.meta);
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

/// Client side of the follower → leader calls (forwarded writes, read indexes). One
/// channel per leader address, connected lazily and reused.
#[derive(Clone)]
pub struct Forwarder {
    me: Identity,
    timeout: Duration,
    channels: Arc<Mutex<std::collections::HashMap<String, RaftClient<Channel>>>>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder").field("me", &self.me).finish()
    }
}

impl Forwarder {
    /// `timeout` bounds each forwarded call.
    pub fn new(me: Identity, timeout: Duration) -> Self {
        Self {
            me,
            timeout,
            channels: Arc::default(),
        }
    }

    fn client(&self, addr: &str) -> Result<RaftClient<Channel>, GroupError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let channel = Channel::from_shared(format!("http://{addr}"))
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

/// The breaker in front of each Raft peer. Opening after 3 errors in 30 s is the
/// predecessor's rule; the retry comes after one minimum election window instead of
/// 10 s, so a peer that was briefly unreachable can vote in the next election.
pub fn peer_breaker(timing: &super::RaftTiming) -> BreakerConfig {
    BreakerConfig {
        half_open_after: Duration::from_millis(timing.election_min_ms),
        ..BreakerConfig::default()
    }
}

/// Creates a client per peer; all share this node's identity. Every client of one peer
/// shares that peer's circuit breaker (openraft opens several: replication, votes).
#[derive(Clone, Debug)]
pub struct GrpcNetwork {
    pub me: Identity,
    pub breaker: BreakerConfig,
    /// HTTP/2 keepalive on each peer connection: a ping this often, and the connection
    /// is dropped when one goes unanswered this long (see [`GrpcNetwork::new`]).
    keepalive: Duration,
    breakers: Breakers,
}

/// The breakers of one node's peers, by Raft id: for status, metrics and /v1/quorum.
#[derive(Clone, Debug, Default)]
pub struct Breakers {
    by_peer: Arc<Mutex<std::collections::BTreeMap<u64, PeerBreaker>>>,
}

impl Breakers {
    /// `peer`'s breaker, created with `config` on first use.
    pub fn get(&self, peer: u64, config: BreakerConfig) -> PeerBreaker {
        lock(&self.by_peer)
            .entry(peer)
            .or_insert_with(|| PeerBreaker::new(config, tokio::time::Instant::now()))
            .clone()
    }

    /// Each peer's breaker state now.
    pub fn states(&self) -> std::collections::BTreeMap<u64, BreakerState> {
        lock(&self.by_peer)
            .iter()
            .map(|(id, b)| (*id, b.state()))
            .collect()
    }
}

impl GrpcNetwork {
    /// Peers' clients for a group with `timing`: each behind a [`peer_breaker`], each
    /// connection pinged once per minimum election window and dropped when a ping goes
    /// unanswered that long. Without the pings, a connection whose packets a partition
    /// dropped stays open while TCP retransmits with a doubling timeout (seconds after a
    /// few seconds' cut), and calls queue behind it after the heal; with them, the dead
    /// connection is dropped during the cut and the first call after the heal opens a
    /// fresh one. A connection attempt gets the same window.
    pub fn new(me: Identity, timing: &super::RaftTiming) -> Self {
        Self {
            me,
            breaker: peer_breaker(timing),
            keepalive: Duration::from_millis(timing.election_min_ms),
            breakers: Breakers::default(),
        }
    }

    /// The peers' breakers (shared with every client this network creates).
    pub fn breakers(&self) -> Breakers {
        self.breakers.clone()
    }
}

/// One peer: a lazily connected channel behind a circuit breaker.
pub struct GrpcPeer {
    client: Option<RaftClient<Channel>>,
    me: Identity,
    target: u64,
    breaker: PeerBreaker,
}

/// `next` tells a follower everything `held` would, and its answer acknowledges both
/// (see `hold`): the same leader, the log continued from the same entry, a commit index
/// at least as new. `held` carries no entries (only those are held).
fn supersedes(held: &AppendEntriesRequest<C>, next: &AppendEntriesRequest<C>) -> bool {
    held.entries.is_empty()
        && next.vote == held.vote
        && next.prev_log_id == held.prev_log_id
        && next.leader_commit >= held.leader_commit
}

impl GrpcPeer {
    /// Breaker state (for metrics and /v1/quorum).
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// The client for one call, and the permit that reports its outcome (dropped
    /// unreported, as when openraft's timeout cancels the call, it counts as abandoned).
    fn admit(&self) -> Result<(RaftClient<Channel>, Permit), Unreachable<C>> {
        // A bad address is this node's configuration, not the peer failing: checked
        // before the breaker is asked.
        let client = self.client.clone().ok_or_else(|| {
            Unreachable::from_string(format!("peer {}: bad address", self.target))
        })?;
        let permit = self
            .breaker
            .admit()
            .map_err(|e| Unreachable::from_string(format!("peer {}: {e}", self.target)))?;
        Ok((client, permit))
    }

    /// Streamed replication: the requests go out as messages of one gRPC stream, the
    /// results come back on the other direction, in order. The stream fails when
    /// requests are outstanding and nothing comes back for `PROGRESS_WINDOWS` RPC
    /// timeouts (openraft then opens a new one).
    async fn open_append_stream<S>(
        &mut self,
        mut input: S,
        option: RPCOption,
    ) -> Result<BoxStream<'static, Result<StreamAppendResult<C>, RPCError<C>>>, RPCError<C>>
    where
        S: futures_util::Stream<Item = AppendEntriesRequest<C>> + Send + Unpin + 'static,
    {
        // Take the first request before anything can fail: openraft applies its retry
        // backoff while producing a request, so failing before asking for one (an open
        // breaker, a refused connection) would have it retry in a tight loop.
        let Some(first) = input.next().await else {
            return Ok(Box::pin(futures_util::stream::empty()));
        };
        let input = futures_util::stream::once(futures_util::future::ready(first)).chain(input);
        // A commit index alone waits a moment for the next entries (see `hold`).
        let input = HoldBack::new(
            input,
            HOLD,
            |r: &AppendEntriesRequest<C>| r.entries.is_empty(),
            supersedes,
        );
        let (mut client, permit) = self.admit().map_err(RPCError::Unreachable)?;
        let progress = Arc::new(Mutex::new(Progress::default()));
        let me = self.me.clone();
        let sent = progress.clone();
        let outbound = input.filter_map(move |req| {
            tracing::trace!(entries = req.entries.len(), "append out");
            let message = encode(&req).map(|p| me.message(p));
            if message.is_ok() {
                lock(&sent).sent();
            }
            futures_util::future::ready(message.ok())
        });
        let ttl = option.soft_ttl();
        let target = self.target;
        let inbound = match tokio::time::timeout(ttl, client.append_stream(outbound)).await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                permit.finish(false);
                return Err(RPCError::Unreachable(Unreachable::from_string(format!(
                    "peer {target}: {status}"
                ))));
            }
            Err(_) => {
                permit.finish(false);
                return Err(RPCError::Unreachable(Unreachable::from_string(format!(
                    "peer {target}: no stream within {} ms",
                    ttl.as_millis()
                ))));
            }
        };
        permit.finish(true);
        let breaker = self.breaker.clone();
        let window = ttl * PROGRESS_WINDOWS;
        let results = futures_util::stream::unfold(Some(inbound), move |state| {
            let (progress, breaker) = (progress.clone(), breaker.clone());
            async move {
                let mut inbound = state?;
                let fail = |why: String| {
                    breaker.record(false);
                    Some((
                        Err(RPCError::Unreachable(Unreachable::from_string(format!(
                            "peer {target}: {why}"
                        )))),
                        None,
                    ))
                };
                let next = loop {
                    match tokio::time::timeout(window, inbound.next()).await {
                        Ok(next) => break next,
                        Err(_) if lock(&progress).stuck(window) => {
                            return fail(format!("no reply in {} ms", window.as_millis()));
                        }
                        Err(_) => continue,
                    }
                };
                match next? {
                    Ok(m) => {
                        tracing::trace!("append result in");
                        lock(&progress).answered();
                        match decode::<StreamAppendResult<C>>(&m.payload) {
                            Ok(result) => {
                                breaker.record(true);
                                Some((Ok(result), Some(inbound)))
                            }
                            Err(e) => {
                                Some((Err(RPCError::Network(NetworkError::from_string(e))), None))
                            }
                        }
                    }
                    Err(status) => fail(status.to_string()),
                }
            }
        });
        Ok(Box::pin(results))
    }

    async fn unary<Req, Resp, F, Fut>(
        &mut self,
        req: &Req,
        ttl: Duration,
        call: F,
    ) -> Result<Resp, RPCError<C>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        F: FnOnce(RaftClient<Channel>, Request<RaftMessage>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<RaftMessage>, Status>>,
    {
        let payload = encode(req).map_err(|e| RPCError::Network(NetworkError::from_string(e)))?;
        let (client, permit) = self.admit().map_err(RPCError::Unreachable)?;
        let mut request = Request::new(self.me.message(payload));
        request.set_timeout(ttl);
        // gRPC's deadline only starts once a connection carries the request; this one
        // also bounds the wait for the connection, so the call ends (and reports to the
        // breaker) before openraft's own timeout would cancel it.
        let result = match tokio::time::timeout(ttl, call(client, request)).await {
            Ok(result) => result,
            Err(_) => Err(Status::deadline_exceeded(format!(
                "peer {}: no answer within {} ms",
                self.target,
                ttl.as_millis()
            ))),
        };
        permit.finish(result.is_ok());
        let reply =
            result.map_err(|s| RPCError::Unreachable(Unreachable::from_string(s.to_string())))?;
        decode(&reply.get_ref().payload)
            .map_err(|e| RPCError::Network(NetworkError::from_string(e)))
    }
}

/// A stream with requests outstanding fails after this many RPC timeouts without a reply.
const PROGRESS_WINDOWS: u32 = 4;

/// Requests sent on a replication stream and not yet answered, and since when.
#[derive(Debug, Default)]
struct Progress {
    outstanding: u64,
    since: Option<Instant>,
}

impl Progress {
    fn sent(&mut self) {
        if self.outstanding == 0 {
            self.since = Some(Instant::now());
        }
        self.outstanding += 1;
    }

    fn answered(&mut self) {
        self.outstanding = self.outstanding.saturating_sub(1);
        self.since = Some(Instant::now());
    }

    /// Requests are waiting and nothing came back for `window`.
    fn stuck(&self, window: Duration) -> bool {
        self.outstanding > 0 && self.since.is_some_and(|s| s.elapsed() >= window)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RaftNetworkFactory<C> for GrpcNetwork {
    type Network = GrpcPeer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> GrpcPeer {
        let client = Channel::from_shared(format!("http://{}", node.addr))
            .ok()
            .map(|e| {
                // A connection attempt whose SYN a partition dropped is given up after
                // the same window (the kernel would retry it only after 1 s).
                e.connect_timeout(self.keepalive)
                    .http2_keep_alive_interval(self.keepalive)
                    .keep_alive_timeout(self.keepalive)
                    .keep_alive_while_idle(true)
                    .connect_lazy()
            })
            .map(|ch| {
                RaftClient::new(ch)
                    .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
                    .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX)
            });
        GrpcPeer {
            client,
            me: self.me.clone(),
            target,
            breaker: self.breakers.get(target, self.breaker),
        }
    }
}

impl RaftNetworkV2<C> for GrpcPeer {
    type SnapshotData = SnapshotData;

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, Result<StreamAppendResult<C>, RPCError<C>>>, RPCError<C>>>
    where
        S: futures_util::Stream<Item = AppendEntriesRequest<C>> + Send + Unpin + 'static,
    {
        // A heartbeat is a stream of exactly one request: one unary call is cheaper than
        // opening a stream for it.
        if input.size_hint() == (1, Some(1)) {
            return stream_append_sequential(self, input, option);
        }
        Box::pin(async move {
            let results = self.open_append_stream(input, option).await?;
            Ok(results as BoxStream<'s, _>)
        })
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        self.unary(&rpc, option.soft_ttl(), |mut c, r| async move {
            c.append_entries(r).await
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<C>,
        option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        self.unary(&rpc, option.soft_ttl(), |mut c, r| async move {
            c.vote(r).await
        })
        .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<C>,
        option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        self.unary(&rpc, option.soft_ttl(), |mut c, r| async move {
            c.pre_vote(r).await
        })
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<C>,
        snapshot: SnapshotOf<C, SnapshotData>,
        _cancel: impl std::future::Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        let head = encode(&(vote, snapshot.meta.clone()))
            .map_err(|e| StreamingError::Network(NetworkError::from_string(e)))?;
        let data = snapshot.snapshot.into_inner();
        // At least one chunk, so an empty snapshot still carries its meta.
        let pieces: Vec<&[u8]> = if data.is_empty() {
            vec![&[]]
        } else {
            data.chunks(SNAPSHOT_CHUNK_BYTES).collect()
        };
        let mut chunks: Vec<SnapshotChunk> = pieces
            .into_iter()
            .map(|d| SnapshotChunk {
                group: self.me.group.clone(),
                cluster_id: self.me.cluster_id.clone(),
                meta: Vec::new(),
                data: d.to_vec(),
                done: false,
            })
            .collect();
        chunks[0].meta = head;
        if let Some(last) = chunks.last_mut() {
            last.done = true;
        }
        let (mut client, permit) = self.admit().map_err(StreamingError::Unreachable)?;
        let mut request = Request::new(futures_util::stream::iter(chunks));
        request.set_timeout(option.hard_ttl());
        let result = client.install_snapshot(request).await;
        permit.finish(result.is_ok());
        let reply = result
            .map_err(|s| StreamingError::Unreachable(Unreachable::from_string(s.to_string())))?;
        decode(&reply.get_ref().payload)
            .map_err(|e| StreamingError::Network(NetworkError::from_string(e)))
    }
}

#[cfg(test)]
mod tests {
    use openraft::{
        Entry, EntryPayload, LogId, Vote, alias::LogIdOf, vote::leader_id_adv::LeaderId,
    };

    use super::*;

    fn id(term: u64, index: u64) -> Option<LogIdOf<C>> {
        Some(LogId::new(LeaderId { term, node_id: 1 }, index))
    }

    fn request(term: u64, prev: u64, entries: u64, commit: u64) -> AppendEntriesRequest<C> {
        AppendEntriesRequest {
            vote: Vote::new_committed(term, 1),
            prev_log_id: id(term, prev),
            entries: (prev + 1..=prev + entries)
                .map(|index| Entry {
                    log_id: id(term, index).expect("some"),
                    payload: EntryPayload::Blank,
                })
                .collect(),
            leader_commit: id(term, commit),
        }
    }

    #[test]
    fn only_a_request_that_carries_everything_supersedes_a_held_one() {
        let held = request(2, 10, 0, 9);
        assert!(
            supersedes(&held, &request(2, 10, 1, 9)),
            "same start, entries"
        );
        assert!(supersedes(&held, &request(2, 10, 3, 10)), "newer commit");
        assert!(
            supersedes(&held, &request(2, 10, 0, 10)),
            "a newer commit alone"
        );
        assert!(!supersedes(&held, &request(2, 10, 1, 8)), "older commit");
        assert!(!supersedes(&held, &request(2, 11, 1, 10)), "another start");
        assert!(!supersedes(&held, &request(2, 9, 2, 10)), "another start");
        let mut newer_leader = request(2, 10, 1, 10);
        newer_leader.vote = Vote::new_committed(3, 2);
        assert!(!supersedes(&held, &newer_leader), "another leader");
        assert!(
            !supersedes(&request(2, 10, 1, 9), &request(2, 10, 1, 9)),
            "entries are never dropped"
        );
    }
}

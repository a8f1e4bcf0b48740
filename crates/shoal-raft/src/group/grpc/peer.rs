//! The client side openraft uses to reach a peer: one lazily connected channel per
//! peer, behind that peer's circuit breaker, with streamed replication.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::StreamExt;
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
    v1::{RaftMessage, SnapshotChunk, raft_client::RaftClient},
};
use shoal_security::Transport;
use shoal_types::breaker::{BreakerConfig, BreakerState};
use tonic::{Request, Response, Status, transport::Channel};

use super::{C, Identity, SNAPSHOT_CHUNK_BYTES, decode, encode, lock};
use crate::group::{
    SnapshotData,
    hold::{HOLD, HoldBack},
    peer_breaker::{PeerBreaker, Permit},
};

/// The breaker in front of each Raft peer. Opening after 3 errors in 30 s is the
/// predecessor's rule; the retry comes after one minimum election window instead of
/// 10 s, so a peer that was briefly unreachable can vote in the next election.
pub fn peer_breaker(timing: &crate::group::RaftTiming) -> BreakerConfig {
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
    /// Plaintext or TLS with this node's certificate.
    transport: Transport,
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
    pub fn new(me: Identity, timing: &crate::group::RaftTiming, transport: Transport) -> Self {
        Self {
            me,
            breaker: peer_breaker(timing),
            keepalive: Duration::from_millis(timing.election_min_ms),
            breakers: Breakers::default(),
            transport,
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

impl RaftNetworkFactory<C> for GrpcNetwork {
    type Network = GrpcPeer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> GrpcPeer {
        let client = self
            .transport
            .endpoint(&node.addr)
            .map_err(|e| tracing::warn!(peer = target, error = %e, "bad peer address"))
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
                total_bytes: 0,
            })
            .collect();
        chunks[0].meta = head;
        chunks[0].total_bytes = data.len() as u64;
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

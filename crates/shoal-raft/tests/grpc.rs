//! Three Raft replicas talking real gRPC on loopback: election, replication, failover
//! after the leader's server is stopped, and refusal of another cluster's messages.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use shoal_proto::v1::{RaftMessage, SnapshotChunk, raft_client::RaftClient};
use shoal_raft::{
    DiskLog,
    group::{
        RaftGroup, RaftTiming, ShoalRaft,
        grpc::{GrpcNetwork, Identity, service},
    },
};
use shoal_state::{Command, KvCommand, Request};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

fn me() -> Identity {
    Identity {
        cluster_id: "test-cluster".into(),
        group: "dc1".into(),
    }
}

fn put(key: &str) -> Request {
    Request {
        client: None,
        command: Command::Kv(KvCommand::Put {
            key: key.into(),
            value: b"v".to_vec(),
        }),
    }
}

struct Member {
    group: RaftGroup,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
}

async fn serve(group: RaftGroup, listener: TcpListener) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let (tx, rx) = oneshot::channel::<()>();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service(group, me()))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = rx.await;
            })
            .await;
    });
    (tx, server)
}

async fn leader(members: &BTreeMap<u64, Member>, except: Option<u64>) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        for (id, m) in members {
            if Some(*id) != except && m.group.status().role == "leader" {
                return *id;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no leader within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Proposes through whoever leads now, retrying while leadership settles (as a client
/// does); returns the leader that committed it.
async fn propose(members: &BTreeMap<u64, Member>, except: Option<u64>, req: Request) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let id = leader(members, except).await;
        match members[&id].group.propose(req.clone()).await {
            Ok(_) => return id,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "no commit within 15 s: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_over_grpc_elects_replicates_and_fails_over() {
    let mut listeners = Vec::new();
    let mut addrs: BTreeMap<u64, SocketAddr> = BTreeMap::new();
    for id in 1..=3u64 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.insert(id, l.local_addr().unwrap());
        listeners.push((id, l));
    }
    let mut members = BTreeMap::new();
    for (id, listener) in listeners {
        let network = GrpcNetwork::new(me(), &RaftTiming::LOCAL, Default::default());
        let log = DiskLog::open_in_memory().unwrap();
        let group = RaftGroup::start(id, RaftTiming::LOCAL, log, network)
            .await
            .unwrap();
        let (stop, server) = serve(group.clone(), listener).await;
        members.insert(
            id,
            Member {
                group,
                stop: Some(stop),
                server,
            },
        );
    }
    let voters = addrs.iter().map(|(id, a)| (*id, a.to_string())).collect();
    members[&1].group.initialize(voters).await.unwrap();

    let first = propose(&members, None, put("a")).await;

    // A message from another cluster is refused before it is decoded.
    let mut stranger = RaftClient::connect(format!("http://{}", addrs[&first]))
        .await
        .unwrap();
    // A snapshot stream cut off before its last chunk is refused, not installed (a
    // prefix does not decode, and a failed install would stop this member's Raft).
    let chunk = |data: usize, done: bool, total_bytes: u64| SnapshotChunk {
        group: "dc1".into(),
        cluster_id: "test-cluster".into(),
        meta: vec![1, 2, 3],
        data: vec![0; data],
        done,
        total_bytes,
    };
    let cut = stranger
        .install_snapshot(futures_util::stream::iter([chunk(1024, false, 0)]))
        .await
        .unwrap_err();
    assert_eq!(cut.code(), tonic::Code::Aborted, "{cut:?}");
    assert!(cut.message().contains("before its last chunk"), "{cut:?}");
    // A stream that carries more than it declared is refused mid-stream; so is one
    // that declares more than the limit. Neither is installed.
    let over = stranger
        .install_snapshot(futures_util::stream::iter([
            chunk(1024, false, 1500),
            chunk(1024, true, 0),
        ]))
        .await
        .unwrap_err();
    assert_eq!(over.code(), tonic::Code::ResourceExhausted, "{over:?}");
    assert!(
        over.message()
            .contains("2048 bytes received, more than the 1500"),
        "{over:?}"
    );
    let huge = stranger
        .install_snapshot(futures_util::stream::iter([chunk(
            8,
            true,
            shoal_types::limits::SNAPSHOT_BYTES_MAX + 1,
        )]))
        .await
        .unwrap_err();
    assert_eq!(huge.code(), tonic::Code::ResourceExhausted, "{huge:?}");
    assert!(huge.message().contains("the limit is"), "{huge:?}");
    assert_eq!(members[&first].group.status().role, "leader");
    let refused = stranger
        .vote(RaftMessage {
            group: "dc1".into(),
            cluster_id: "other-cluster".into(),
            version: 1,
            payload: vec![1, 2, 3],
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused.message().contains("cluster_id"),
        "{}",
        refused.message()
    );

    // Stop the leader's server and its Raft: the others elect a new leader.
    let old = members.get_mut(&first).unwrap();
    let _ = old.stop.take().unwrap().send(());
    old.server.abort();
    old.group.shutdown().await;
    let next = propose(&members, Some(first), put("b")).await;
    assert_ne!(next, first);
    let survivors: Vec<u64> = (1..=3).filter(|id| *id != first).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !survivors.iter().all(|id| {
        members[id]
            .group
            .read(|s| s.kv.get("a").is_some() && s.kv.get("b").is_some())
    }) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "survivors did not apply both writes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for id in survivors {
        members[&id].group.shutdown().await;
    }
}

/// A replication stream to a peer that cannot be reached asks for its first request
/// before it fails: openraft sleeps its retry backoff while producing a request, so a
/// stream that failed before asking (refused connection, open breaker) made a leader
/// retry a dead peer in a tight loop, burning a core and flooding the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replication_stream_asks_for_a_request_before_it_can_fail() {
    use openraft::{
        BasicNode,
        network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2},
        raft::AppendEntriesRequest,
    };
    // A port nobody listens on: connecting is refused at once.
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = nobody.local_addr().unwrap();
    drop(nobody);
    let mut network = GrpcNetwork::new(me(), &RaftTiming::LOCAL, Default::default());
    let mut peer = network
        .new_client(2, &BasicNode::new(addr.to_string()))
        .await;
    let no_requests = futures_util::stream::pending::<AppendEntriesRequest<ShoalRaft>>();
    let opened = tokio::time::timeout(
        Duration::from_millis(300),
        peer.stream_append(no_requests, RPCOption::new(Duration::from_millis(50))),
    )
    .await;
    assert!(
        opened.is_err(),
        "the stream settled before any request was produced (ok: {:?})",
        opened.map(|r| r.is_ok())
    );
}

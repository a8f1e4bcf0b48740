//! Log compaction over real gRPC: with a small snapshot interval the leader snapshots
//! and purges its log; a member that was never running catches up through a streamed
//! InstallSnapshot; a member restarted from its SQLite file recovers its state from the
//! stored snapshot plus the committed entries after it, before hearing from anyone.

use std::{collections::BTreeMap, net::SocketAddr, path::Path, time::Duration};

use shoal_raft::{
    DiskLog,
    group::{
        GroupOptions, RaftGroup, RaftTiming,
        grpc::{GrpcNetwork, Identity, service},
    },
};
use shoal_state::{Command, KvCommand, Request};
use tokio::{net::TcpListener, sync::oneshot};

const KEYS: usize = 120;

fn me() -> Identity {
    Identity {
        cluster_id: "snap-cluster".into(),
        group: "dc1".into(),
    }
}

fn options() -> GroupOptions {
    GroupOptions {
        timing: RaftTiming::LOCAL,
        snapshot_every: 20,
        keep_behind_snapshot: 5,
        ..GroupOptions::from(RaftTiming::LOCAL)
    }
}

fn put(i: usize) -> Request {
    Request {
        client: None,
        command: Command::Kv(KvCommand::Put {
            key: format!("k{i:03}"),
            value: vec![b'x'; 64],
        }),
    }
}

struct Member {
    group: RaftGroup,
    stop: oneshot::Sender<()>,
}

async fn start(id: u64, path: &Path, listener: TcpListener) -> Member {
    let log = DiskLog::open(path).unwrap();
    let network = GrpcNetwork::new(me(), &RaftTiming::LOCAL, Default::default());
    let group = RaftGroup::start(id, options(), log, network).await.unwrap();
    let (stop, rx) = oneshot::channel::<()>();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let svc = service(group.clone(), me());
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = rx.await;
            })
            .await;
    });
    Member { group, stop }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn keys(g: &RaftGroup) -> usize {
    g.read(|s| s.kv.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_compact_the_log_stream_to_a_newcomer_and_survive_restart() {
    let dir = std::env::temp_dir().join(format!("shoal-snap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = |id: u64| dir.join(format!("raft-{id}.db"));

    let mut listeners = BTreeMap::new();
    let mut addrs: BTreeMap<u64, SocketAddr> = BTreeMap::new();
    for id in 1..=3u64 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.insert(id, l.local_addr().unwrap());
        if id < 3 {
            listeners.insert(id, l);
        }
    }
    // Members 1 and 2 run; member 3 is a voter that has not started yet (connections
    // to it are refused), so a majority still commits.
    let mut members = BTreeMap::new();
    for id in 1..=2 {
        let l = listeners.remove(&id).unwrap();
        members.insert(id, start(id, &path(id), l).await);
    }
    let voters = addrs.iter().map(|(id, a)| (*id, a.to_string())).collect();
    members[&1].group.initialize(voters).await.unwrap();

    let mut i = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while i < KEYS {
        let leader = members.values().find(|m| m.group.status().role == "leader");
        match leader {
            Some(m) if m.group.propose(put(i)).await.is_ok() => i += 1,
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "writes stalled at {i}"
        );
    }
    for m in members.values() {
        eventually("both running members snapshot and apply everything", || {
            let s = m.group.status();
            s.snapshot_index > 0 && keys(&m.group) == KEYS
        })
        .await;
    }
    for m in members.values() {
        eventually(
            "every running member purges the log behind its snapshot",
            || m.group.status().purged_index > 0,
        )
        .await;
    }
    assert!(
        DiskLog::open(&path(1))
            .unwrap()
            .snapshot()
            .unwrap()
            .is_some(),
        "the snapshot is on disk"
    );

    // The newcomer can only catch up from a snapshot: the early entries are gone.
    let l3 = TcpListener::bind(addrs[&3]).await.unwrap();
    members.insert(3, start(3, &path(3), l3).await);
    eventually("the newcomer installs the snapshot and catches up", || {
        keys(&members[&3].group) == KEYS
    })
    .await;
    assert!(members[&3].group.status().snapshot_index > 0);

    // Restart a follower from its file, with no network at all: the state comes back
    // from the stored snapshot and the committed entries after it.
    let follower = *members
        .keys()
        .find(|id| members[id].group.status().role == "follower")
        .unwrap();
    let m = members.remove(&follower).unwrap();
    let _ = m.stop.send(());
    m.group.shutdown().await;
    let isolated = RaftGroup::start(
        follower,
        options(),
        DiskLog::open(&path(follower)).unwrap(),
        GrpcNetwork::new(me(), &RaftTiming::LOCAL, Default::default()),
    )
    .await
    .unwrap();
    eventually("the restarted member recovers every key from disk", || {
        keys(&isolated) == KEYS
    })
    .await;
    isolated.shutdown().await;
    for m in members.values() {
        m.group.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

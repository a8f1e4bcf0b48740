//! Three Raft replicas in one process, each with its own SQLite log and shoal's state
//! machine, over the in-process network: they elect a leader, replicate KV writes, and
//! after the leader is cut off the majority elects another and keeps committing; the
//! cut-off node catches up once reconnected.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use openraft::{BasicNode, Config, Raft, async_runtime::WatchReceiver};
use shoal_raft::{
    SqliteLog,
    group::{
        ShoalRaft,
        log_store::LogStore,
        network::{Router, RouterFactory},
        state_machine::StateMachine,
    },
};
use shoal_state::{Command, KvCommand, Request, Response};

type Node = (Raft<ShoalRaft, StateMachine>, StateMachine);

async fn start(router: &Router, id: u64) -> Node {
    let config = Config {
        heartbeat_interval: 50,
        election_timeout_min: 250,
        election_timeout_max: 500,
        enable_pre_vote: Some(true),
        ..Default::default()
    };
    let config = Arc::new(config.validate().unwrap());
    let log = LogStore::new(SqliteLog::open_in_memory().unwrap());
    let sm = StateMachine::default();
    let network = RouterFactory {
        from: id,
        router: router.clone(),
    };
    let raft = Raft::new(id, config, network, log, sm.clone())
        .await
        .unwrap();
    router.add(id, raft.clone());
    (raft, sm)
}

fn put(key: &str, value: &str) -> Request {
    Request {
        client: None,
        command: Command::Kv(KvCommand::Put {
            key: key.into(),
            value: value.as_bytes().to_vec(),
        }),
    }
}

async fn leader_among(nodes: &BTreeMap<u64, Node>, except: Option<u64>) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        for (id, (raft, _)) in nodes {
            if Some(*id) == except {
                continue;
            }
            let m = raft.metrics().borrow_watched().clone();
            if m.current_leader == Some(*id) {
                return *id;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no leader within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn all_have(nodes: &BTreeMap<u64, Node>, ids: &[u64], key: &str, value: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let done = ids.iter().all(|id| {
            nodes[id].1.read(|s| s.kv.get(key).map(|e| e.value.clone()))
                == Some(value.as_bytes().to_vec())
        });
        if done {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key}={value} not applied on {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_elect_replicate_and_fail_over() {
    let router = Router::default();
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        nodes.insert(id, start(&router, id).await);
    }
    let members: BTreeMap<u64, BasicNode> = (1..=3)
        .map(|id| (id, BasicNode::new(format!("n{id}"))))
        .collect();
    nodes[&1].0.initialize(members).await.unwrap();

    let leader = leader_among(&nodes, None).await;
    let written = nodes[&leader].0.client_write(put("a", "1")).await.unwrap();
    assert!(
        matches!(written.response(), Response::Kv(Ok(_))),
        "{:?}",
        written.response()
    );
    all_have(&nodes, &[1, 2, 3], "a", "1").await;

    // Cut the leader off: the other two elect a new leader and keep committing.
    router.set_cut(leader, true);
    let next = leader_among(&nodes, Some(leader)).await;
    assert_ne!(next, leader);
    nodes[&next].0.client_write(put("b", "2")).await.unwrap();
    let majority: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    all_have(&nodes, &majority, "b", "2").await;
    assert!(
        nodes[&leader].1.read(|s| s.kv.get("b").is_none()),
        "the cut-off node cannot have applied a write it never received"
    );

    // Reconnected, the old leader catches up.
    router.set_cut(leader, false);
    all_have(&nodes, &[1, 2, 3], "b", "2").await;
    let states: Vec<_> = nodes
        .values()
        .map(|(_, sm)| sm.read(|s| s.kv.clone()))
        .collect();
    assert!(states.windows(2).all(|w| w[0] == w[1]), "replicas agree");
    for (raft, _) in nodes.values() {
        raft.shutdown().await.unwrap();
    }
}

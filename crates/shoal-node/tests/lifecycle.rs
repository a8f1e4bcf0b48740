//! A node owns every task it starts: a manager, a gate and a worker started and shut
//! down in one process twenty times leave no task running and no port bound.

mod common;

use std::{
    net::{SocketAddr, TcpListener, UdpSocket},
    time::{Duration, Instant},
};

use shoal_node::node::{Node, StartedNode};
use shoal_types::{MemberState, NodeConfig, PartialConfig};

const ROUNDS: usize = 20;

fn gate_config(seeds: Vec<String>, dir: &std::path::Path) -> NodeConfig {
    NodeConfig::resolve(PartialConfig {
        id: Some("g1".into()),
        role: Some("gate".into()),
        listen: Some("127.0.0.1:0".into()),
        profile: Some("local".into()),
        // Functional tests run plaintext; tests/secure.rs runs with TLS and tokens.
        insecure: Some(true),
        seeds: Some(seeds),
        data_dir: Some(dir.join("g1")),
        bootstrap_expect: Some(1),
        ..Default::default()
    })
    .unwrap()
}

/// Polls `check` every 10 ms until it holds or `timeout` passes.
async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn sees_alive(observer: &StartedNode, id: &str) -> bool {
    observer
        .membership
        .snapshot()
        .members
        .iter()
        .any(|m| m.id == id && m.state == MemberState::Alive)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_gate_and_worker_started_and_stopped_twenty_times_leave_nothing_behind() {
    let dir = std::env::temp_dir().join(format!("shoal-lifecycle-{}", std::process::id()));
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    for round in 0..ROUNDS {
        let _ = std::fs::remove_dir_all(&dir);
        let m = Node::start(common::config("m1", "manager", vec![], &dir, 0))
            .await
            .expect("manager starts");
        let seeds = vec![m.tcp_addr.to_string()];
        let g = Node::start(gate_config(seeds.clone(), &dir))
            .await
            .expect("gate starts");
        let w = Node::start(common::config("w1", "worker", seeds, &dir, 1))
            .await
            .expect("worker starts");
        // Everything running: the nodes met, and the manager leads its group.
        wait_for("the nodes to meet", Duration::from_secs(10), || {
            sees_alive(&m, "g1") && sees_alive(&m, "w1") && sees_alive(&w, "m1")
        })
        .await;
        let client = shoal_client::AdminClient::new(m.tcp_addr.to_string());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let raft = client.status().await.ok().and_then(|s| s.raft);
            if raft.is_some_and(|r| r["role"] == "leader") {
                break;
            }
            assert!(Instant::now() < deadline, "round {round}: no leader");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!m.tasks().is_empty(), "the manager runs tasks of its own");
        let ports: Vec<(SocketAddr, SocketAddr)> = [&m, &g, &w]
            .iter()
            .map(|n| (n.tcp_addr, n.gossip_addr))
            .collect();
        drop(client);
        for node in [w, g, m] {
            node.shutdown().await;
        }
        wait_for(
            &format!("round {round}: the runtime's tasks back to {baseline}"),
            Duration::from_secs(10),
            || metrics.num_alive_tasks() <= baseline,
        )
        .await;
        for (tcp, udp) in ports {
            TcpListener::bind(tcp)
                .unwrap_or_else(|e| panic!("round {round}: TCP {tcp} still bound: {e}"));
            UdpSocket::bind(udp)
                .unwrap_or_else(|e| panic!("round {round}: UDP {udp} still bound: {e}"));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

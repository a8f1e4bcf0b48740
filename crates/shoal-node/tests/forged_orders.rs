//! Orders a worker cannot trust: one with a forged, enormous term does not wedge it (a
//! term no manager ever claims stops fencing after the grace period, and the real
//! leader's job then runs), and a flood of orders beyond what a worker holds is answered
//! `Busy` with nothing started.

use std::time::Duration;

use shoal_node::{
    Node,
    jobs::{OrderReply, RunBatch, RunOrder, Wire},
};
use shoal_proto::v1::worker_client::WorkerClient;
use shoal_state::{jobs::InstanceRef, jobs::Work, jobspec::Format};
use shoal_types::{Fence, NodeConfig};

mod common;

fn config(id: &str, role: &str, seeds: Vec<String>, dir: &std::path::Path) -> NodeConfig {
    common::config(id, role, seeds, dir, 1)
}

fn order(job: &str, index: u32, term: u64, ms: u64) -> RunOrder {
    RunOrder {
        fence: Fence::new(term, 1),
        instance: InstanceRef {
            job: job.into(),
            workflow: 0,
            index,
        },
        attempt: 1,
        work: Work::Sleep { ms },
        cores: 1,
        timeout_ms: None,
    }
}

const JOB: &str =
    "name = \"real\"\n[[workflows]]\nname = \"say\"\nkind = \"echo\"\nargs = { text = \"hi\" }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_order_neither_wedges_nor_floods_a_worker() {
    let dir = std::env::temp_dir().join(format!("shoal-forged-{}", std::process::id()));
    let m = Node::start(config("m1", "manager", vec![], &dir))
        .await
        .unwrap();
    let w = Node::start(config("w1", "worker", vec![m.tcp_addr.to_string()], &dir))
        .await
        .unwrap();
    let wire = Wire {
        cluster_id: "shoal".into(),
        transport: Default::default(),
    };
    let mut worker = WorkerClient::connect(format!("http://{}", w.tcp_addr))
        .await
        .unwrap();
    let send = |batch: RunBatch| {
        let msg = wire.message(&batch).unwrap();
        let mut worker = worker.clone();
        let wire = wire.clone();
        async move {
            let answer = worker.run(msg).await.unwrap();
            wire.open::<Vec<OrderReply>>(answer.get_ref()).unwrap()
        }
    };

    // A forged order with the largest term there is: obeyed (it came from a node). It
    // holds the worker's only core for a minute.
    let forged = send(RunBatch {
        orders: vec![order("forged", 0, u64::MAX, 60_000)],
    })
    .await;
    assert_eq!(forged, vec![OrderReply::Accepted]);

    // A flood: at most 1024 + 4 × cores attempts are held (running or waiting for the
    // core); the rest start nothing.
    let flood: Vec<RunOrder> = (1..=1100).map(|i| order("flood", i, u64::MAX, 1)).collect();
    let replies = send(RunBatch { orders: flood }).await;
    let busy = replies
        .iter()
        .filter(|r| matches!(r, OrderReply::Busy { .. }))
        .count();
    // 1 core: 1028 held, the forged one among them.
    assert_eq!(busy, 1100 - 1027, "{:?}", &replies[1020..1030]);
    // Free the core: the flood's short sleeps drain.
    let stop = shoal_node::jobs::StopOrder {
        fence: Fence::new(u64::MAX, 1),
        instance: order("forged", 0, 0, 0).instance,
        attempt: 1,
    };
    let answer = worker.stop(wire.message(&stop).unwrap()).await.unwrap();
    assert_eq!(
        wire.open::<OrderReply>(answer.get_ref()).unwrap(),
        OrderReply::Accepted
    );
    drop(worker);

    // The real leader's job: refused at first (its term is below the forged one), run
    // once the forged term has gone unclaimed for the grace (10 election windows, 3 s).
    let client = common::jobs_client(m.tcp_addr);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let id = loop {
        match client.submit(JOB, "real.toml", Format::Toml, None).await {
            Ok(r) => break r.id,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("submit: {e}"),
        }
    };
    loop {
        let job = client.get(&id).await.unwrap();
        if job.state == "completed" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the real job never ran: {}",
            job.state
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    w.kill().await;
    m.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

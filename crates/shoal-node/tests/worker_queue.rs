//! Short work placed ahead of time waits on its worker: the leader learns that a kind
//! of work is short and places several instances per core at once, and the worker
//! runs no more of them at a time than it has cores — the rest wait there, in order.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use shoal_client::AdminClient;
use shoal_node::{
    Node,
    jobs::exec::{CustomWork, Registry, WorkContext},
};
use shoal_state::jobspec::Format;
use shoal_types::NodeConfig;

mod common;

/// Runs about a millisecond and records how many instances run at once.
#[derive(Clone, Default)]
struct Probe {
    now: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    runs: Arc<AtomicUsize>,
}

impl CustomWork for Probe {
    fn run(
        &self,
        _ctx: WorkContext,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> {
        let p = self.clone();
        Box::pin(async move {
            let n = p.now.fetch_add(1, Ordering::SeqCst) + 1;
            p.most.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(1)).await;
            p.now.fetch_sub(1, Ordering::SeqCst);
            p.runs.fetch_add(1, Ordering::SeqCst);
            Ok(String::new())
        })
    }
}

fn config(id: &str, role: &str, seeds: Vec<String>, dir: &std::path::Path) -> NodeConfig {
    common::config(id, role, seeds, dir, 1)
}

const INSTANCES: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_work_waits_on_the_worker_and_never_exceeds_its_cores() {
    let dir = std::env::temp_dir().join(format!("shoal-queue-{}", std::process::id()));
    let m = Node::start(config("m1", "manager", vec![], &dir))
        .await
        .unwrap();
    let probe = Probe::default();
    let mut registry = Registry::default();
    registry.register("probe", probe.clone()).unwrap();
    let w = Node::start_with(
        config("w1", "worker", vec![m.tcp_addr.to_string()], &dir),
        registry,
    )
    .await
    .unwrap();
    let client = common::jobs_client(m.tcp_addr);
    let spec = format!(
        "name = \"probe\"\n[[workflows]]\nname = \"p\"\nkind = \"probe\"\ninstances = {INSTANCES}\n"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let id = loop {
        match client.submit(&spec, "probe.toml", Format::Toml, None).await {
            Ok(r) => break r.id,
            // No leader yet, or the worker's kind is still spreading by gossip.
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the job was never accepted: {e}"),
        }
    };
    // While it runs, the worker's status shows instances waiting for its one core.
    let admin = AdminClient::new(w.tcp_addr.to_string());
    let mut most_waiting = 0;
    let job = loop {
        if let Ok(doc) = admin.status().await
            && let Some(jobs) = doc.jobs
        {
            most_waiting = most_waiting.max(jobs["waiting"].as_u64().unwrap_or(0));
            assert!(
                jobs["running"].as_u64().unwrap_or(0) <= 1,
                "more running than cores: {jobs}"
            );
        }
        let j = client.get(&id).await.unwrap();
        if j.finished_unix_ms != 0 {
            break j;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job never finished: {}",
            j.state
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    assert_eq!(job.state, "completed");
    assert_eq!(probe.runs.load(Ordering::SeqCst), INSTANCES);
    assert_eq!(
        probe.most.load(Ordering::SeqCst),
        1,
        "a 1-core worker ran instances at the same time"
    );
    // Work of ~1 ms may be placed up to ~20 per core (fewer on a slow machine); one
    // at a time — nothing placed ahead — would show at most 1 waiting, in passing.
    assert!(
        most_waiting >= 2,
        "at most {most_waiting} waited on the worker: short work was not placed ahead"
    );
    w.kill().await;
    m.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}

//! A custom workflow kind registered by a program that embeds a worker: the managers
//! accept jobs that use it only while such a worker is alive, place its workflows only
//! there, and the kind's Rust code runs with its args, progress and attempt number.

use std::{future::Future, pin::Pin, time::Duration};

use shoal_node::{
    Node,
    jobs::exec::{CustomWork, Registry, WorkContext},
};
use shoal_state::jobspec::Format;
use shoal_types::NodeConfig;

mod common;

struct Double;

impl CustomWork for Double {
    fn run(
        &self,
        ctx: WorkContext,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> {
        Box::pin(async move {
            let n = ctx.args["n"]
                .as_u64()
                .ok_or("args.n: a number is required")?;
            (ctx.progress)(1, 1);
            Ok(format!("{} (attempt {})\n", n * 2, ctx.attempt))
        })
    }
}

fn config(id: &str, role: &str, seeds: Vec<String>, dir: &std::path::Path) -> NodeConfig {
    common::config(id, role, seeds, dir, 2)
}

const SPEC: &str = r#"
name = "double"
[[workflows]]
name = "d"
kind = "double"
args = { n = 21 }
instances = 3
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_kind_runs_only_on_the_worker_that_registered_it() {
    let dir = std::env::temp_dir().join(format!("shoal-custom-{}", std::process::id()));
    let m = Node::start(config("m1", "manager", vec![], &dir))
        .await
        .unwrap();
    let seeds = vec![m.tcp_addr.to_string()];
    let plain = Node::start(config("plain", "worker", seeds.clone(), &dir))
        .await
        .unwrap();
    let client = common::jobs_client(m.tcp_addr);

    // Only a plain worker is up: the kind is unknown.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let refused = loop {
        match client.submit(SPEC, "double.toml", Format::Toml, None).await {
            Err(e) if e.to_string().contains("kind") => break e,
            // The manager may not know the worker or have a leader yet.
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("expected the unknown kind to be refused, got {other:?}"),
        }
    };
    assert!(refused.to_string().contains("double"), "{refused}");

    let mut registry = Registry::default();
    registry.register("double", Double).unwrap();
    assert!(
        registry.register("exec", Double).is_err(),
        "built-in names are taken"
    );
    let custom = Node::start_with(config("custom", "worker", seeds, &dir), registry)
        .await
        .unwrap();

    let submitted = loop {
        match client.submit(SPEC, "double.toml", Format::Toml, None).await {
            Ok(r) => break r,
            // The custom worker's tags are still spreading by gossip.
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the custom kind was never accepted: {e}"),
        }
    };
    let id = submitted.id;
    let job = loop {
        let j = client.get(&id).await.unwrap();
        if j.finished_unix_ms != 0 {
            break j;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job never finished: {j:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(job.state, "completed", "{job:?}");
    for i in &job.workflows[0].instances {
        assert_eq!(
            i.worker, "custom",
            "placed only where the kind exists: {i:?}"
        );
    }
    let logs = client.logs(&id, None, Some(0)).await.unwrap();
    assert_eq!(logs.outputs[0].stdout_tail, "42 (attempt 1)\n");

    custom.kill().await;
    plain.kill().await;
    m.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}

//! A worker started with `--no-exec` runs no commands: it does not advertise the `exec`
//! kind, so a job that runs commands is refused while it is the only worker (the message
//! says why), and placed only on the other worker once one is there.

use std::time::Duration;

use shoal_node::Node;
use shoal_state::jobspec::Format;
use shoal_types::NodeConfig;

mod common;

const EXEC: &str = "name = \"cmd\"\n[[workflows]]\nname = \"run\"\nkind = \"exec\"\ninstances = 3\nargs = { command = \"true\" }\n";

fn config(id: &str, role: &str, seeds: Vec<String>, dir: &std::path::Path) -> NodeConfig {
    common::config(id, role, seeds, dir, 2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_exec_worker_is_never_given_commands() {
    let dir = std::env::temp_dir().join(format!("shoal-no-exec-{}", std::process::id()));
    let m = Node::start(config("m1", "manager", vec![], &dir))
        .await
        .unwrap();
    let seeds = vec![m.tcp_addr.to_string()];
    let mut safe = config("safe", "worker", seeds.clone(), &dir);
    safe.no_exec = true;
    let safe = Node::start(safe).await.unwrap();
    let client = common::jobs_client(m.tcp_addr);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let refused = loop {
        match client.submit(EXEC, "cmd.toml", Format::Toml, None).await {
            Err(e) if e.to_string().contains("--no-exec") => break e,
            // The manager may not see the worker or have a leader yet.
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("expected the exec job to be refused, got {other:?}"),
        }
    };
    assert!(
        refused.to_string().contains("runs no commands"),
        "{refused}"
    );

    let runner = Node::start(config("runner", "worker", seeds, &dir))
        .await
        .unwrap();
    let id = loop {
        match client.submit(EXEC, "cmd.toml", Format::Toml, None).await {
            Ok(r) => break r.id,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("submit: {e}"),
        }
    };
    let job = loop {
        let job = client.get(&id).await.unwrap();
        if job.finished_unix_ms != 0 {
            break job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job did not finish"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(job.state, "completed", "{}", job.reason);
    for i in job.workflows.iter().flat_map(|w| &w.instances) {
        assert_eq!(i.worker, "runner", "a command ran on the --no-exec worker");
    }
    runner.shutdown().await;
    safe.shutdown().await;
    m.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

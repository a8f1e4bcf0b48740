//! shoal's side of the jobs benchmark: a local cluster (`shoal dev`: 3 managers, 2
//! workers, profile `local`, every decision fsynced), then no-op (`echo`) tasks:
//!
//! - `batch`: one job of N instances; tasks/s from submit to the job observed complete.
//! - `jobs`: M one-instance jobs submitted concurrently (64 submitters); tasks/s, and
//!   each job's submit → completed latency from the ledger's own timestamps.
//! - `single`: S one-instance jobs one after another; submit → completion observed by
//!   the client (a `Watch` stream), p50/p99.
//!
//! - `redispatch`: R trials of: a fresh 1-core worker joins, a 2-instance `sleep` job
//!   puts one instance on it and one on the cluster's own worker, the new worker is
//!   killed (SIGKILL); measured from the kill: when the manager leader's gossip view
//!   declares it failed, and when the job shows its instance placed on the surviving
//!   worker (attempt 2). The bound: re-dispatch ≤ detection + 100 ms.
//!
//! Prints one JSON line per result. Usage:
//!   shoal-jobs-bench [--tasks 10000] [--jobs 1000] [--single 200] [--redispatch 10]
//!                    [--port 31000]

use std::{
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use shoal_client::{AdminClient, CallOptions, JobsClient};
use shoal_state::jobspec::Format;
use tokio_stream::StreamExt;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn shoal_bin() -> std::path::PathBuf {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    here.join("../../target/release/shoal")
}

fn spec(name: &str, n: u64) -> String {
    format!(
        "name = \"{name}\"\n[[workflows]]\nname = \"t\"\nkind = \"echo\"\nargs = {{ text = \"\" }}\ninstances = {n}\n"
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let tasks = arg("--tasks", 10_000);
    let jobs = arg("--jobs", 1_000);
    let single = arg("--single", 200);
    let redispatch = arg("--redispatch", 0);
    let port = arg("--port", 31_000) as u16;
    // The managers keep the last 1,000 finished jobs; the `jobs` result reads them back.
    assert!(
        jobs <= shoal_state::jobs::FINISHED_JOBS_KEPT as u64,
        "--jobs: at most {} (finished jobs kept)",
        shoal_state::jobs::FINISHED_JOBS_KEPT
    );
    let dir = std::env::temp_dir().join(format!("shoal-jobs-bench-{}", std::process::id()));
    let mut dev = tokio::process::Command::new(shoal_bin())
        .args(["dev", "--managers", "3", "--gates", "0", "--workers", "2"])
        // Plaintext, as the peers (Dask, Ray) run here; the cost of TLS is measured by
        // the KV benchmark.
        .arg("--insecure")
        .args(["--base-port", &port.to_string()])
        .arg("--data-dir")
        .arg(&dir)
        .env("RUST_LOG", "warn")
        .env("SHOAL_CLUSTER_KEY", CLUSTER_KEY)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start shoal dev (build it first: cargo build --release)");
    let managers: Vec<String> = (0..3)
        .map(|i| format!("127.0.0.1:{}", port + 2 * i))
        .collect();
    // Ready: a leader, and both workers alive in its view.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = AdminClient::new(managers[0].clone())
            .status()
            .await
            .ok()
            .is_some_and(|d| {
                d.raft.is_some_and(|r| r["leader_id"].is_string())
                    && d.members
                        .iter()
                        .filter(|m| m.role == "worker" && m.state.to_string() == "alive")
                        .count()
                        == 2
            });
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "the cluster did not come up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let options = CallOptions {
        deadline: Duration::from_secs(60),
        ..CallOptions::default()
    };
    let client = Arc::new(JobsClient::new(&managers, options).expect("client"));

    // batch
    let t = Instant::now();
    let r = client
        .submit(&spec("batch", tasks), "batch.toml", Format::Toml, None)
        .await
        .expect("submit batch");
    loop {
        let j = client.get(&r.id).await.expect("get");
        if j.finished_unix_ms != 0 {
            assert_eq!(j.state, "completed");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "{{\"bench\":\"batch\",\"system\":\"shoal\",\"tasks\":{tasks},\"secs\":{s:.3},\"tasks_per_s\":{:.0}}}",
        tasks as f64 / s
    );

    // concurrent one-instance jobs
    let t = Instant::now();
    let ids = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let submitters: Vec<_> = (0..64)
        .map(|_| {
            let (client, ids, next) = (client.clone(), ids.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if k >= jobs {
                        return;
                    }
                    let r = client
                        .submit(&spec("one", 1), "one.toml", Format::Toml, None)
                        .await
                        .expect("submit");
                    ids.lock().await.push(r.id);
                }
            })
        })
        .collect();
    for s in submitters {
        s.await.expect("submitter");
    }
    let lat: Vec<f64> = loop {
        let list = client.list().await.expect("list");
        let ones: Vec<_> = list.iter().filter(|j| j.name == "one").collect();
        if ones.len() as u64 >= jobs && ones.iter().all(|j| j.finished_unix_ms != 0) {
            let mut l: Vec<f64> = ones
                .iter()
                .map(|j| (j.finished_unix_ms - j.submitted_unix_ms) as f64)
                .collect();
            l.sort_by(f64::total_cmp);
            break l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let s = t.elapsed().as_secs_f64();
    println!(
        "{{\"bench\":\"jobs\",\"system\":\"shoal\",\"tasks\":{jobs},\"secs\":{s:.3},\"tasks_per_s\":{:.0},\"p50_ms\":{:.1},\"p99_ms\":{:.1}}}",
        jobs as f64 / s,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );

    // single tasks, one after another
    let mut lat = Vec::new();
    let mut acked = Vec::new();
    for _ in 0..single {
        let t = Instant::now();
        let r = client
            .submit(&spec("single", 1), "single.toml", Format::Toml, None)
            .await
            .expect("submit");
        acked.push(t.elapsed().as_secs_f64() * 1000.0);
        let mut stream = client.watch(&r.id).await.expect("watch");
        while let Some(Ok(j)) = stream.next().await {
            if j.finished_unix_ms != 0 {
                break;
            }
        }
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);
    acked.sort_by(f64::total_cmp);
    // submit_p50_ms: until the submission is committed and answered (the rest is the
    // task's dispatch, run, result commit and the watch stream's notice).
    println!(
        "{{\"bench\":\"single\",\"system\":\"shoal\",\"tasks\":{single},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"submit_p50_ms\":{:.2}}}",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&acked, 0.5)
    );
    if redispatch > 0 {
        redispatch_trials(&client, &managers, &dir, port, redispatch).await;
    }
    let _ = dev.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The bench cluster's gossip key (workers added by hand need it).
const CLUSTER_KEY: &str = "5b1e0c0ffee0ddba11ab1eca5e5eedf00d5b1e0c0ffee0ddba11ab1eca5e5eed";

/// The manager leader's address, as manager 1 sees it.
async fn leader_addr(managers: &[String]) -> Option<String> {
    let doc = AdminClient::new(managers[0].clone()).status().await.ok()?;
    let id = doc.raft?["leader_id"].as_str()?.to_string();
    doc.members
        .iter()
        .find(|m| m.id == id)
        .map(|m| m.addr.clone())
}

async fn redispatch_trials(
    client: &JobsClient,
    managers: &[String],
    dir: &std::path::Path,
    port: u16,
    trials: u64,
) {
    let mut detect = Vec::new();
    let mut after_detect = Vec::new();
    for t in 0..trials {
        let id = format!("v{t}");
        let listen = format!("127.0.0.1:{}", port + 100 + 2 * t as u16);
        let mut victim = tokio::process::Command::new(shoal_bin())
            .args(["node", "--role", "worker", "--id", &id, "--listen", &listen])
            .arg("--insecure")
            .args([
                "--profile",
                "local",
                "--cores",
                "1",
                "--seeds",
                &managers[0],
            ])
            .arg("--data-dir")
            .arg(dir.join(&id))
            .env("SHOAL_CLUSTER_KEY", CLUSTER_KEY)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start a worker");
        // The leader sees it alive.
        let deadline = Instant::now() + Duration::from_secs(30);
        let leader = loop {
            if let Some(addr) = leader_addr(managers).await
                && let Ok(doc) = AdminClient::new(addr.clone()).status().await
                && doc
                    .members
                    .iter()
                    .any(|m| m.id == id && m.state.to_string() == "alive")
            {
                break addr;
            }
            assert!(Instant::now() < deadline, "worker {id} did not join");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let spec = "name = \"redispatch\"\n[[workflows]]\nname = \"s\"\nkind = \"sleep\"\nargs = { ms = 600000 }\ninstances = 2\nmax_retries = 1\n";
        let job = client
            .submit(spec, "redispatch.toml", Format::Toml, None)
            .await
            .expect("submit")
            .id;
        // One instance runs on the new worker (least-connections spreads the two).
        let deadline = Instant::now() + Duration::from_secs(30);
        let index = loop {
            let j = client.get(&job).await.expect("get");
            if let Some(i) = j.workflows[0]
                .instances
                .iter()
                .find(|i| i.worker == id && i.state == "running")
            {
                break i.index as usize;
            }
            assert!(Instant::now() < deadline, "no instance ran on {id}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let _ = victim.start_kill();
        let killed = Instant::now();
        let _ = victim.wait().await;
        let admin = AdminClient::new(leader.clone());
        let (mut seen_failed, mut seen_moved) = (None, None);
        let deadline = killed + Duration::from_secs(30);
        while seen_failed.is_none() || seen_moved.is_none() {
            assert!(
                Instant::now() < deadline,
                "trial {t}: no re-dispatch in 30 s"
            );
            if seen_failed.is_none()
                && let Ok(doc) = admin.status().await
                && doc
                    .members
                    .iter()
                    .any(|m| m.id == id && m.state.to_string() == "failed")
            {
                seen_failed = Some(killed.elapsed());
            }
            if seen_moved.is_none()
                && let Ok(j) = client.get(&job).await
                && j.workflows[0].instances[index].attempts >= 2
                && j.workflows[0].instances[index].worker != id
            {
                seen_moved = Some(killed.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let (f, m) = (
            seen_failed.expect("seen").as_secs_f64() * 1000.0,
            seen_moved.expect("seen").as_secs_f64() * 1000.0,
        );
        detect.push(f);
        after_detect.push(m - f);
        let _ = client.cancel(&job).await;
    }
    detect.sort_by(f64::total_cmp);
    after_detect.sort_by(f64::total_cmp);
    println!(
        "{{\"bench\":\"redispatch\",\"system\":\"shoal\",\"trials\":{trials},\"detect_p50_ms\":{:.0},\"detect_max_ms\":{:.0},\"redispatch_after_detect_p50_ms\":{:.1},\"redispatch_after_detect_max_ms\":{:.1}}}",
        percentile(&detect, 0.5),
        percentile(&detect, 1.0),
        percentile(&after_detect, 0.5),
        percentile(&after_detect, 1.0)
    );
}

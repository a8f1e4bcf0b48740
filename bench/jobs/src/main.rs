//! shoal's side of the jobs benchmark: a local cluster (`shoal dev`: 3 managers, 2
//! workers, profile `local`, every decision fsynced), then no-op (`echo`) tasks:
//!
//! - `batch`: one job of N instances; tasks/s from submit to the job observed complete.
//! - `jobs`: M one-instance jobs submitted concurrently (64 submitters); tasks/s, and
//!   each job's submit → completed latency from the ledger's own timestamps.
//! - `single`: S one-instance jobs one after another; submit → completion observed by
//!   the client (a `Watch` stream), p50/p99.
//!
//! Prints one JSON line per result. Usage:
//!   shoal-jobs-bench [--tasks 10000] [--jobs 1000] [--single 200] [--port 31000]

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
    let port = arg("--port", 31_000) as u16;
    let dir = std::env::temp_dir().join(format!("shoal-jobs-bench-{}", std::process::id()));
    let mut dev = tokio::process::Command::new(shoal_bin())
        .args(["dev", "--managers", "3", "--gates", "0", "--workers", "2"])
        .args(["--base-port", &port.to_string()])
        .arg("--data-dir")
        .arg(&dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start shoal dev (build it first: cargo build --release)");
    let managers: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", port + 2 * i)).collect();
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
    let _ = dev.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}

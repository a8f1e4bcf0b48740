//! `shoal dev` and `shoal demo`.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Args;
use shoal_client::{AdminClient, Credentials, KvClient, KvOptions, render};
use shoal_node::dev::{DevCluster, DevError, DevPlan};
use shoal_types::{MemberState, config::parse_cluster_keys};
use tokio::time::Instant;

/// How long a fresh cluster gets to see every member alive.
const START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Args, Debug, Clone)]
pub struct DevArgs {
    /// First manager's TCP port; gates start at +100, workers at +200.
    #[arg(long, default_value_t = 9000)]
    base_port: u16,
    /// Datacenters (dc1, dc2, …), each with --managers managers and --workers workers;
    /// the gates front them all.
    #[arg(long, default_value_t = 1)]
    dcs: u32,
    #[arg(long, default_value_t = 3)]
    managers: u32,
    #[arg(long, default_value_t = 1)]
    gates: u32,
    #[arg(long, default_value_t = 2)]
    workers: u32,
    /// Where the children keep data and logs.
    #[arg(long, default_value = ".shoal/dev")]
    data_dir: PathBuf,
    /// The cluster key the children share (64 hex characters); a fresh random one by
    /// default. Give your own to join extra nodes by hand.
    #[arg(long, env = "SHOAL_CLUSTER_KEY", hide_env_values = true)]
    cluster_key: Option<String>,
    /// Run every node plaintext and unauthenticated. By default the cluster gets its
    /// own CA and an admin token under <data-dir>/tls, which the CLI finds from this
    /// directory.
    #[arg(long)]
    insecure: bool,
}

impl DevArgs {
    fn plan(&self) -> Result<DevPlan, DevError> {
        let mut plan = DevPlan::new(self.base_port, self.managers, self.gates, self.workers);
        plan.dcs = self.dcs;
        plan.data_root = self.data_dir.clone();
        plan.insecure = self.insecure;
        plan.cluster_key = match &self.cluster_key {
            Some(key) => {
                parse_cluster_keys(key)?;
                key.clone()
            }
            None => super::new_key(),
        };
        Ok(plan)
    }
}

async fn start(args: &DevArgs) -> Result<DevCluster, DevError> {
    let exe = std::env::current_exe().map_err(|source| DevError::Io {
        path: "current executable".into(),
        source,
    })?;
    let plan = args.plan()?;
    plan.validate()?;
    println!(
        "starting {} datacenter(s) of {} managers and {} workers, {} gates, on 127.0.0.1 (base port {}, profile local)…",
        plan.dcs, plan.managers, plan.workers, plan.gates, plan.base_port
    );
    let mut cluster = DevCluster::spawn(plan, exe).await?;
    match cluster.wait_alive(START_TIMEOUT).await {
        Ok(doc) => {
            print!("{}", render::status_table(&doc));
            Ok(cluster)
        }
        Err(e) => {
            cluster.stop_all().await;
            Err(e)
        }
    }
}

fn start_failed(e: DevError) -> ExitCode {
    eprintln!("error: {e}");
    match e {
        DevError::Config(_) => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    }
}

pub async fn run(args: DevArgs) -> ExitCode {
    let mut cluster = match start(&args).await {
        Ok(c) => c,
        Err(e) => return start_failed(e),
    };
    let first = cluster.children[0].node.tcp;
    let pids: Vec<String> = cluster
        .pids()
        .iter()
        .map(|(id, pid)| format!("{id}={pid}"))
        .collect();
    println!("pids: {}", pids.join(" "));
    println!(
        "cluster key: {} (as SHOAL_CLUSTER_KEY for nodes you add by hand)",
        cluster.plan.cluster_key
    );
    match &cluster.creds.token {
        Some(token) => println!(
            "TLS on: CA and node certificates in {dir}; admin token: {token}\n\
             (the CLI finds both when run from this directory; elsewhere set SHOAL_TLS_DIR={dir})",
            dir = cluster.plan.tls_dir().display()
        ),
        None => println!("INSECURE: plaintext and unauthenticated (--insecure)"),
    }
    println!(
        "\ncluster is up. try:\n  shoal status --addr {first} --watch\n  shoal events --addr {first}\n\
         logs: {}/<id>/node.log · Ctrl-C stops every node",
        args.data_dir.display()
    );
    let stop = super::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {
                while let Some((id, status)) = cluster.poll_exits() {
                    println!(
                        "!! {id} exited ({status}); not restarting it. log: {}",
                        cluster.log_of(&id)
                    );
                }
            }
        }
    }
    println!("stopping every node…");
    cluster.stop_all().await;
    println!("stopped.");
    ExitCode::SUCCESS
}

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    #[command(flatten)]
    dev: DevArgs,
}

/// The tour: up, kill -9 a worker, see every survivor mark it failed, bring it back.
pub async fn demo(args: DemoArgs) -> ExitCode {
    let mut cluster = match start(&args.dev).await {
        Ok(c) => c,
        Err(e) => return start_failed(e),
    };
    let outcome = tour(&mut cluster).await;
    cluster.stop_all().await;
    match outcome {
        Ok(()) => {
            println!("\ndemo complete: every node stopped.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn tour(cluster: &mut DevCluster) -> Result<(), String> {
    let victim = cluster
        .children
        .iter()
        .rev()
        .find(|c| c.node.role == shoal_types::Role::Worker)
        .unwrap_or_else(|| {
            cluster
                .children
                .last()
                .expect("a plan has at least one node")
        })
        .node
        .id
        .clone();
    let observers: Vec<String> = cluster
        .children
        .iter()
        .filter(|c| c.node.id != victim)
        .map(|c| c.node.tcp.to_string())
        .collect();
    println!(
        "\n== kill -9 {victim}; waiting until all {} survivors mark it failed",
        observers.len()
    );
    let killed = Instant::now();
    cluster.kill(&victim).await;
    settle(
        &cluster.creds.clone(),
        &observers,
        &victim,
        MemberState::Failed,
        killed,
        "marked failed by every survivor",
        "the kill",
    )
    .await?;
    println!("\n== restarting {victim}");
    let restarted = Instant::now();
    cluster.restart(&victim).map_err(|e| e.to_string())?;
    settle(
        &cluster.creds.clone(),
        &observers,
        &victim,
        MemberState::Alive,
        restarted,
        "alive again everywhere",
        "the restart",
    )
    .await?;
    kv_leader_failover(cluster).await?;
    job_through_a_worker_crash(cluster).await
}

/// The demo's job: 8 instances over the workers; one worker is killed while they run.
const DEMO_JOB: &str = r#"
name = "demo"
[[workflows]]
name = "prepare"
kind = "echo"
args = { text = "ready" }
[[workflows]]
name = "work"
kind = "sleep"
args = { ms = 1500 }
instances = 8
max_retries = 2
after = ["prepare"]
"#;

/// A job runs across the workers; kill -9 one of them mid-job: its instances run again
/// elsewhere and the job completes, every instance once.
async fn job_through_a_worker_crash(cluster: &mut DevCluster) -> Result<(), String> {
    let managers: Vec<String> = cluster
        .children
        .iter()
        .filter(|c| c.node.role == shoal_types::Role::Manager)
        .map(|c| c.node.tcp.to_string())
        .collect();
    let workers: Vec<String> = cluster
        .children
        .iter()
        .filter(|c| c.node.role == shoal_types::Role::Worker)
        .map(|c| c.node.id.clone())
        .collect();
    if managers.is_empty() || workers.len() < 2 {
        return Ok(()); // nowhere to move work to
    }
    let client = shoal_client::JobsClient::connect(
        &managers,
        shoal_client::CallOptions::default(),
        &cluster.creds,
    )
    .map_err(|e| e.to_string())?;
    println!(
        "
== a job: 1 echo, then 8 × sleep 1.5 s over {} workers",
        workers.len()
    );
    let submitted = client
        .submit(
            DEMO_JOB,
            "demo.toml",
            shoal_state::jobspec::Format::Toml,
            None,
        )
        .await
        .map_err(|e| format!("submit: {e}"))?;
    let id = submitted.id;
    let deadline = Instant::now() + Duration::from_secs(60);
    // Wait until the work runs, then kill the busiest worker.
    let victim = loop {
        let job = client.get(&id).await.map_err(|e| e.to_string())?;
        let running: Vec<&str> = job.workflows[1]
            .instances
            .iter()
            .filter(|i| i.state == "running")
            .map(|i| i.worker.as_str())
            .collect();
        if running.len() >= 2 {
            let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
            for w in &running {
                *counts.entry(w).or_default() += 1;
            }
            let busiest = counts
                .into_iter()
                .max_by_key(|c| c.1)
                .map(|c| c.0.to_string());
            break busiest.unwrap_or_default();
        }
        if Instant::now() > deadline {
            return Err(format!("job {id} never started running"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("job {id} running; kill -9 worker {victim} mid-job");
    cluster.kill(&victim).await;
    let killed = Instant::now();
    let job = loop {
        let job = client.get(&id).await.map_err(|e| e.to_string())?;
        if job.finished_unix_ms != 0 {
            break job;
        }
        if Instant::now() > deadline {
            return Err(format!("job {id} did not finish within 60 s"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let instances: Vec<_> = job.workflows.iter().flat_map(|w| &w.instances).collect();
    let retried = instances.iter().filter(|i| i.attempts > 1).count();
    println!(
        "job {id} {} {:.1} s after the kill: {} instances, {retried} re-run on another worker after {victim} failed",
        job.state,
        killed.elapsed().as_secs_f64(),
        instances.len()
    );
    if job.state != "completed" {
        return Err(format!("job {id} ended {}: {}", job.state, job.reason));
    }
    println!(
        "
== restarting {victim}"
    );
    cluster.restart(&victim).map_err(|e| e.to_string())
}

/// The replicated store survives its leader: write, kill -9 the Raft leader, write and
/// read through the survivors, bring the old leader back.
async fn kv_leader_failover(cluster: &mut DevCluster) -> Result<(), String> {
    let managers: Vec<(String, String)> = cluster
        .children
        .iter()
        .filter(|c| c.node.role == shoal_types::Role::Manager)
        .map(|c| (c.node.id.clone(), c.node.tcp.to_string()))
        .collect();
    if managers.len() < 3 {
        return Ok(()); // no fault-tolerant group to show
    }
    let creds = cluster.creds.clone();
    let leader_of = |addr: String| async {
        let doc = AdminClient::new(addr)
            .with_credentials(creds.clone())
            .status()
            .await
            .ok()?;
        doc.raft?["leader_id"].as_str().map(String::from)
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let leader = loop {
        if let Some(l) = leader_of(managers[0].1.clone()).await {
            break l;
        }
        if Instant::now() > deadline {
            return Err("no Raft leader among the managers within 15 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let all: Vec<String> = managers.iter().map(|m| m.1.clone()).collect();
    let client =
        KvClient::connect(&all, KvOptions::default(), &creds).map_err(|e| e.to_string())?;
    println!(
        "\n== the replicated store: managers {} (leader {leader})",
        all.join(", ")
    );
    let w = client
        .put("demo/greeting", b"hello")
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "put demo/greeting=hello: committed at revision {} (fence {})",
        w.revision, w.fence
    );
    println!("\n== kill -9 the Raft leader {leader}; writing through the survivors");
    let survivors: Vec<String> = managers
        .iter()
        .filter(|m| m.0 != leader)
        .map(|m| m.1.clone())
        .collect();
    let quick = KvOptions {
        attempt_timeout: Duration::from_millis(200),
        deadline: Duration::from_secs(15),
        retry_pause: Duration::from_millis(5),
    };
    let to_survivors = KvClient::connect(&survivors, quick, &creds).map_err(|e| e.to_string())?;
    let killed = Instant::now();
    cluster.kill(&leader).await;
    let w = to_survivors
        .put("demo/after-failover", b"still here")
        .await
        .map_err(|e| format!("no write after the leader died: {e}"))?;
    println!(
        "first write acknowledged {} ms after the kill (new leader's term {})",
        killed.elapsed().as_millis(),
        w.fence.term
    );
    let got = to_survivors
        .get("demo/greeting", false)
        .await
        .map_err(|e| e.to_string())?
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
    if got.as_deref() != Some("hello") {
        return Err(format!("demo/greeting reads {got:?} after the failover"));
    }
    println!("get demo/greeting → hello (nothing acknowledged was lost)");
    println!("\n== restarting {leader}: it rejoins as a follower and catches up from its log");
    cluster.restart(&leader).map_err(|e| e.to_string())?;
    let addr = managers.iter().find(|m| m.0 == leader).map(|m| m.1.clone());
    let back = KvClient::connect(
        &addr.into_iter().collect::<Vec<_>>(),
        KvOptions::default(),
        &creds,
    )
    .map_err(|e| e.to_string())?;
    let restarted = Instant::now();
    loop {
        // A stale read: what this replica itself has applied.
        if let Ok(Some(_)) = back.get("demo/after-failover", true).await {
            println!(
                "{leader} has the write it missed ({} ms after its restart)",
                restarted.elapsed().as_millis()
            );
            return Ok(());
        }
        if restarted.elapsed() > Duration::from_secs(15) {
            return Err(format!("{leader} did not catch up within 15 s"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every observer sees `victim` in `state`, reports how long it took since
/// `since`, and prints the table as the first observer sees it.
async fn settle(
    creds: &Credentials,
    observers: &[String],
    victim: &str,
    state: MemberState,
    since: Instant,
    what: &str,
    cause: &str,
) -> Result<(), String> {
    const BUDGET: Duration = Duration::from_secs(15);
    wait_all_see(creds, observers, victim, state, BUDGET)
        .await
        .ok_or_else(|| format!("{victim} was not {state} everywhere within {BUDGET:?}"))?;
    println!(
        "{victim} {what} {:.2} s after {cause}",
        since.elapsed().as_secs_f64()
    );
    let first = AdminClient::new(observers[0].clone()).with_credentials(creds.clone());
    if let Ok(doc) = first.status().await {
        print!("{}", render::status_table(&doc));
    }
    Ok(())
}

/// Polls every observer until each reports `target` in `state`.
async fn wait_all_see(
    creds: &Credentials,
    observers: &[String],
    target: &str,
    state: MemberState,
    timeout: Duration,
) -> Option<()> {
    let start = Instant::now();
    let clients: Vec<AdminClient> = observers
        .iter()
        .map(|a| {
            AdminClient::new(a.clone())
                .with_timeout(Duration::from_millis(500))
                .with_credentials(creds.clone())
        })
        .collect();
    while start.elapsed() < timeout {
        let mut all = true;
        for c in &clients {
            let seen = c
                .status()
                .await
                .ok()
                .and_then(|d| d.members.into_iter().find(|m| m.id == target))
                .map(|m| m.state);
            all &= seen == Some(state);
        }
        if all {
            return Some(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

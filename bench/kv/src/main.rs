//! shoal vs etcd 3.4, side by side in one run: leader failover and write throughput.
//!
//! ```text
//! shoal-kv-bench failover   --trials 50            # kill -9 leader -> first acked write
//! shoal-kv-bench throughput --clients 1,64,256 --secs 10
//! shoal-kv-bench security   --clients 1,64 --secs 10   # the cost of TLS, both systems
//! ```
//! Both systems run 3 replicas on 127.0.0.1 with fsync on, each in a fresh temp dir.
//! Failover trials alternate between the systems (shoal at its `local` profile, etcd at
//! its defaults 100/1000 ms and at 50/250 ms). Results are printed as JSON lines and a
//! markdown table.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use shoal_client::{AdminClient, Credentials, KvClient, KvOptions};

const VALUE_BYTES: usize = 256;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn shoal_bin() -> PathBuf {
    arg("--shoal").map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../target/release/shoal"
            ))
        },
        PathBuf::from,
    )
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum System {
    /// shoal; with `tls`: mutual TLS between the nodes, TLS + a bearer token from the
    /// client. Without: `--insecure`.
    Shoal { tls: bool },
    /// etcd with (heartbeat ms, election timeout ms); with `tls`: client and peer TLS,
    /// both with certificate authentication.
    Etcd(u64, u64, bool),
}

const SHOAL: System = System::Shoal { tls: false };
const ETCD: System = System::Etcd(100, 1000, false);

impl System {
    fn label(self) -> String {
        match self {
            System::Shoal { tls: false } => "shoal (local: hb 50 ms, election 220-300 ms)".into(),
            System::Shoal { tls: true } => "shoal, mTLS + token (local profile)".into(),
            System::Etcd(h, e, false) => {
                format!("etcd 3.4 (hb {h} ms, election {e}-{} ms)", 2 * e)
            }
            System::Etcd(h, e, true) => {
                format!("etcd 3.4, client + peer TLS (hb {h} ms, election {e}-{} ms)", 2 * e)
            }
        }
    }

    fn tls(self) -> bool {
        matches!(self, System::Shoal { tls: true } | System::Etcd(_, _, true))
    }
}

/// Certificates for every run's TLS clusters, made once with `shoal certs`: node
/// certificates m0-m2 (shoal) and e0-e2 (etcd, server and peer), a client certificate
/// for the etcd client, and the admin token for shoal's.
struct Certs {
    dir: PathBuf,
    token: String,
}

fn certs() -> &'static Certs {
    static CERTS: std::sync::OnceLock<Certs> = std::sync::OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = temp_dir("certs").join("tls");
        let shoal = |args: &[&str]| {
            let out = Command::new(shoal_bin())
                .args(args)
                .output()
                .expect("run shoal certs");
            assert!(out.status.success(), "shoal {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let d = dir.to_str().expect("utf-8 temp dir").to_string();
        shoal(&["certs", "init", "--dir", &d]);
        for id in ["m0", "m1", "m2", "e0", "e1", "e2"] {
            shoal(&["certs", "issue", "--dir", &d, "--node", id]);
        }
        shoal(&["certs", "issue", "--dir", &d, "--client", "bench", "--perms", "write"]);
        let token = std::fs::read_to_string(dir.join("admin.token"))
            .expect("admin token")
            .trim()
            .to_string();
        Certs { dir, token }
    })
}

fn shoal_creds(system: System) -> Credentials {
    if !system.tls() {
        return Credentials::insecure();
    }
    let c = certs();
    let files = shoal_security::TlsFiles {
        ca: c.dir.join("ca.pem"),
        own: None,
    };
    Credentials {
        transport: shoal_security::Transport::Tls(
            shoal_security::Tls::load(&files).expect("load the CA"),
        ),
        token: Some(c.token.clone()),
    }
}

fn etcd_options(system: System) -> etcd_client::ConnectOptions {
    let opts = etcd_client::ConnectOptions::new();
    if !system.tls() {
        return opts;
    }
    let c = certs();
    let read = |f: &str| std::fs::read_to_string(c.dir.join(f)).expect("certificate file");
    opts.with_tls(
        etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read("ca.pem")))
            .identity(etcd_client::Identity::from_pem(
                read("bench.pem"),
                read("bench-key.pem"),
            ))
            .domain_name("localhost"),
    )
}

struct Cluster {
    system: System,
    dir: PathBuf,
    procs: Vec<Option<Child>>,
    /// Client endpoints (HOST:PORT).
    endpoints: Vec<String>,
    base: u16,
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("shoal-kvbench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

impl Cluster {
    fn new(system: System, base: u16) -> Self {
        let tag = match system {
            System::Shoal { tls } => format!("shoal-{tls}"),
            System::Etcd(h, e, tls) => format!("etcd-{h}-{e}-{tls}"),
        };
        let endpoints = (0..3)
            .map(|i| format!("127.0.0.1:{}", base + 10 * i))
            .collect();
        let mut c = Cluster {
            system,
            dir: temp_dir(&tag),
            procs: vec![None, None, None],
            endpoints,
            base,
        };
        for i in 0..3 {
            c.start(i);
        }
        c
    }

    fn start(&mut self, i: usize) {
        let port = self.base + 10 * i as u16;
        let data = self.dir.join(format!("n{i}"));
        let mut cmd = match self.system {
            System::Shoal { tls } => {
                let mut cmd = Command::new(shoal_bin());
                let seeds: Vec<String> = self.endpoints.clone();
                cmd.args(["node", "--role", "manager", "--profile", "local"])
                    .args(["--id", &format!("m{i}")]);
                if tls {
                    cmd.arg("--tls-dir").arg(&certs().dir);
                } else {
                    cmd.arg("--insecure");
                }
                cmd
                    .args(["--listen", &format!("127.0.0.1:{port}")])
                    .args(["--seeds", &seeds.join(",")])
                    .args(["--bootstrap-expect", "3"])
                    .arg("--data-dir")
                    .arg(&data)
                    .env(
                        "SHOAL_CLUSTER_KEY",
                        "2222222222222222222222222222222222222222222222222222222222222222",
                    );
                cmd
            }
            System::Etcd(h, e, tls) => {
                let scheme = if tls { "https" } else { "http" };
                let peer = |j: u16| format!("{scheme}://127.0.0.1:{}", self.base + 10 * j + 1);
                let initial: Vec<String> = (0..3).map(|j| format!("e{j}={}", peer(j))).collect();
                let mut cmd = Command::new("etcd");
                cmd.args(["--name", &format!("e{i}")])
                    .arg("--data-dir")
                    .arg(&data)
                    .args(["--listen-client-urls", &format!("{scheme}://127.0.0.1:{port}")])
                    .args([
                        "--advertise-client-urls",
                        &format!("{scheme}://127.0.0.1:{port}"),
                    ])
                    .args(["--listen-peer-urls", &peer(i as u16)])
                    .args(["--initial-advertise-peer-urls", &peer(i as u16)])
                    .args(["--initial-cluster", &initial.join(",")])
                    .args(["--initial-cluster-state", "new"])
                    .args(["--heartbeat-interval", &h.to_string()])
                    .args(["--election-timeout", &e.to_string()])
                    .args(["--log-level", "error"]);
                if tls {
                    let d = &certs().dir;
                    let f = |name: &str| d.join(name);
                    let (cert, key) = (f(&format!("e{i}.pem")), f(&format!("e{i}-key.pem")));
                    cmd.arg("--client-cert-auth")
                        .arg("--trusted-ca-file")
                        .arg(f("ca.pem"))
                        .arg("--cert-file")
                        .arg(&cert)
                        .arg("--key-file")
                        .arg(&key)
                        .arg("--peer-client-cert-auth")
                        .arg("--peer-trusted-ca-file")
                        .arg(f("ca.pem"))
                        .arg("--peer-cert-file")
                        .arg(&cert)
                        .arg("--peer-key-file")
                        .arg(&key);
                }
                cmd
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("BENCH_CHILD_STDERR").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("spawn a replica (is etcd installed? bench/kv.sh installs it)");
        self.procs[i] = Some(child);
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Index of the leader, if one is known.
    async fn leader(&self) -> Option<usize> {
        let mut leaders = Vec::new();
        for (i, ep) in self.endpoints.iter().enumerate() {
            if self.procs[i].is_none() {
                continue;
            }
            let is_leader = match self.system {
                System::Shoal { .. } => AdminClient::new(ep.clone())
                    .with_timeout(Duration::from_millis(300))
                    .with_credentials(shoal_creds(self.system))
                    .status()
                    .await
                    .ok()
                    .and_then(|d| d.raft)
                    .is_some_and(|r| r["role"] == "leader"),
                System::Etcd(..) => {
                    let opts = etcd_options(self.system)
                        .with_connect_timeout(Duration::from_millis(300))
                        .with_timeout(Duration::from_millis(300));
                    match etcd_client::Client::connect([ep.as_str()], Some(opts)).await {
                        Ok(mut c) => c
                            .status()
                            .await
                            .is_ok_and(|s| s.header().is_some_and(|h| h.member_id() == s.leader())),
                        Err(_) => false,
                    }
                }
            };
            if is_leader {
                leaders.push(i);
            }
        }
        // A restarted replica briefly reports the leadership it had before it died
        // until it hears the newer term: two claimants mean "not settled yet".
        match leaders[..] {
            [l] => Some(l),
            _ => None,
        }
    }

    /// Waits for a leader and a successful write through every live replica.
    async fn healthy(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                Instant::now() < deadline,
                "{:?}: no healthy cluster in 60 s",
                self.system
            );
            if let Some(l) = self.leader().await {
                let mut all = true;
                for i in 0..3 {
                    let w = Writer::new(self.system, &[self.endpoints[i].clone()]).await;
                    all &= w.put_once("health", Duration::from_millis(1000)).await;
                }
                // The leader must not have changed while the writes ran (the one found
                // first may have been a restarted replica's stale claim).
                if all && self.leader().await == Some(l) {
                    return l;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..3 {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One client connection to a system.
enum Writer {
    Shoal(KvClient),
    Etcd(etcd_client::KvClient),
}

impl Writer {
    async fn new(system: System, endpoints: &[String]) -> Writer {
        match system {
            System::Shoal { .. } => {
                let options = KvOptions {
                    attempt_timeout: Duration::from_millis(100),
                    deadline: Duration::from_millis(100),
                    retry_pause: Duration::from_millis(5),
                };
                let creds = shoal_creds(system);
                Writer::Shoal(KvClient::connect(endpoints, options, &creds).expect("shoal client"))
            }
            System::Etcd(..) => loop {
                let opts = etcd_options(system)
                    .with_connect_timeout(Duration::from_millis(500))
                    .with_timeout(Duration::from_millis(1000));
                match etcd_client::Client::connect(endpoints, Some(opts)).await {
                    Ok(c) => break Writer::Etcd(c.kv_client()),
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            },
        }
    }

    /// One write attempt; true if acknowledged within `timeout`.
    async fn put_once(&self, key: &str, timeout: Duration) -> bool {
        self.once(Op::Put, key, timeout).await
    }

    /// One operation; true if answered within `timeout`. `Op::LocalRead` (shoal only)
    /// is a stale read the server answers from memory: the client's round trip
    /// through the same gRPC stack, without Raft.
    async fn once(&self, op: Op, key: &str, timeout: Duration) -> bool {
        let value = vec![b'v'; VALUE_BYTES];
        if let (Op::LocalRead, Writer::Shoal(c)) = (op, self) {
            return tokio::time::timeout(timeout, c.get(key, true))
                .await
                .is_ok_and(|r| r.is_ok());
        }
        match self {
            Writer::Shoal(c) => tokio::time::timeout(timeout, c.put(key, &value))
                .await
                .is_ok_and(|r| r.is_ok()),
            Writer::Etcd(c) => {
                let mut c = c.clone();
                tokio::time::timeout(timeout, c.put(key, value, None))
                    .await
                    .is_ok_and(|r| r.is_ok())
            }
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn failover(trials: usize) {
    // `--only shoal` (or `etcd`) for a quick look at one system.
    let only = arg("--only");
    let systems: Vec<System> = [SHOAL, ETCD, System::Etcd(50, 250, false)]
    .into_iter()
    .filter(|s| match (only.as_deref(), s) {
        (None, _) => true,
        (Some("shoal"), System::Shoal { .. }) => true,
        (Some("etcd"), System::Etcd(..)) => true,
        _ => false,
    })
    .collect();
    let mut clusters: Vec<Cluster> = systems
        .iter()
        .enumerate()
        .map(|(k, s)| Cluster::new(*s, 23000 + 100 * k as u16))
        .collect();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); systems.len()];
    for t in 0..trials {
        for (k, c) in clusters.iter_mut().enumerate() {
            let leader = c.healthy().await;
            let survivors: Vec<String> = (0..3)
                .filter(|i| *i != leader)
                .map(|i| c.endpoints[i].clone())
                .collect();
            let writer = Writer::new(c.system, &survivors).await;
            c.kill(leader);
            let t0 = Instant::now();
            if std::env::var("BENCH_DEBUG").is_ok() {
                let wall = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64();
                eprintln!("failover trial {t}: killed m{leader} at wall {wall:.3}");
            }
            let mut n = 0u64;
            loop {
                n += 1;
                let ta = t0.elapsed();
                let ok = writer
                    .put_once(&format!("f{t}-{n}"), Duration::from_millis(100))
                    .await;
                if std::env::var("BENCH_DEBUG").is_ok() {
                    let wall = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs_f64();
                    eprintln!(
                        "failover attempt {n} at {ta:?} took {:?} ok={ok} (wall {wall:.3})",
                        t0.elapsed() - ta
                    );
                }
                if ok {
                    break;
                }
                assert!(t0.elapsed() < Duration::from_secs(30), "no write in 30 s");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            samples[k].push(ms);
            println!(
                "{{\"bench\":\"failover\",\"system\":\"{}\",\"trial\":{t},\"ms\":{ms:.1}}}",
                c.system.label()
            );
            c.start(leader);
        }
    }
    println!("\n| system | trials | p50 | p99 | max |\n|---|---|---|---|---|");
    for (k, s) in systems.iter().enumerate() {
        let mut v = samples[k].clone();
        v.sort_by(f64::total_cmp);
        println!(
            "| {} | {} | {:.0} ms | {:.0} ms | {:.0} ms |",
            s.label(),
            v.len(),
            percentile(&v, 0.5),
            percentile(&v, 0.99),
            v.last().copied().unwrap_or(f64::NAN)
        );
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Put,
    LocalRead,
}

/// Append 256 bytes + fdatasync on a fresh file in `dir`, 2,000 times: p50 in ms. The
/// disk's own latency, the unit of the 1-client target.
fn fdatasync_p50(dir: &std::path::Path) -> f64 {
    use std::io::Write;
    let path = dir.join("fdatasync.probe");
    let mut f = std::fs::File::create(&path).expect("probe file");
    let mut lat: Vec<f64> = (0..2000)
        .map(|_| {
            let t = Instant::now();
            f.write_all(&[b'v'; VALUE_BYTES]).expect("probe write");
            f.sync_data().expect("probe fdatasync");
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    let _ = std::fs::remove_file(&path);
    lat.sort_by(f64::total_cmp);
    percentile(&lat, 0.5)
}

/// CPU time (user + system) a process has used so far, in microseconds, from
/// /proc/PID/stat (fields 14 and 15, in clock ticks of 1/100 s on Linux).
fn cpu_us(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it start past ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10_000)
}

impl Cluster {
    /// Each replica's CPU time so far (µs); 0 for one that is not running.
    fn cpu(&self) -> Vec<u64> {
        self.procs
            .iter()
            .map(|p| p.as_ref().and_then(|c| cpu_us(c.id())).unwrap_or(0))
            .collect()
    }
}

/// `n` clients write for `secs` seconds to `endpoint`: (writes/s, p50 ms, p99 ms).
async fn drive(system: System, endpoint: &str, n: usize, secs: u64) -> (f64, f64, f64) {
    drive_op(system, Op::Put, endpoint, n, secs).await
}

async fn drive_op(system: System, op: Op, endpoint: &str, n: usize, secs: u64) -> (f64, f64, f64) {
    let ep = vec![endpoint.to_string()];
    // Up to 8 connections, shared round-robin by the clients.
    let mut writers = Vec::new();
    for _ in 0..n.min(8) {
        writers.push(Arc::new(Writer::new(system, &ep).await));
    }
    let stop = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let w = writers[i % writers.len()].clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut j = 0u64;
                while Instant::now() < stop {
                    let t = Instant::now();
                    if w.once(op, &format!("t{i}-{j}"), Duration::from_secs(5))
                        .await
                    {
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    j += 1;
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    all.sort_by(f64::total_cmp);
    let rate = all.len() as f64 / secs as f64;
    (rate, percentile(&all, 0.5), percentile(&all, 0.99))
}

async fn throughput(clients: &[usize], secs: u64, systems: &[System]) {
    // The 1-client target's units, measured here and now: the disk's fdatasync and
    // the client's gRPC round trip to a shoal server (a read answered from memory).
    let dir = temp_dir("disk");
    let fsync = fdatasync_p50(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let rtt = {
        let c = Cluster::new(SHOAL, 24500);
        let leader = c.healthy().await;
        drive_op(SHOAL, Op::LocalRead, &c.endpoints[leader], 1, 2)
            .await
            .1
    };
    println!(
        "{{\"bench\":\"units\",\"fdatasync_p50_ms\":{fsync:.3},\"grpc_rtt_p50_ms\":{rtt:.3},\"one_client_target_ms\":{:.3}}}",
        3.0 * fsync + rtt
    );
    println!(
        "\nfdatasync p50 {fsync:.3} ms · gRPC round trip p50 {rtt:.3} ms · 1-client target (3 × fdatasync + round trip) {:.3} ms",
        3.0 * fsync + rtt
    );
    println!(
        "\n| system | clients | writes/s | p50 | p99 | CPU per write: leader / followers / load generator |\n|---|---|---|---|---|---|"
    );
    for &n in clients {
        for (k, s) in systems.iter().enumerate() {
            let c = Cluster::new(*s, 24000 + 100 * k as u16);
            let leader = c.healthy().await;
            let (before, me_before) = (c.cpu(), cpu_us(std::process::id()).unwrap_or(0));
            let (rate, p50, p99) = drive(*s, &c.endpoints[leader], n, secs).await;
            let (after, me_after) = (c.cpu(), cpu_us(std::process::id()).unwrap_or(0));
            // CPU per acknowledged write: the leader, the two followers together, and
            // this load generator (same client library work for both systems).
            let writes = (rate * secs as f64).max(1.0);
            let per = |us: u64| us as f64 / writes;
            let used: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
            let followers: u64 = (0..3).filter(|i| *i != leader).map(|i| used[i]).sum();
            let (lead_us, fol_us, gen_us) = (
                per(used[leader]),
                per(followers),
                per(me_after - me_before),
            );
            println!(
                "{{\"bench\":\"throughput\",\"system\":\"{}\",\"clients\":{n},\"writes_per_s\":{rate:.0},\"p50_ms\":{p50:.2},\"p99_ms\":{p99:.2},\"cpu_us_per_write\":{{\"leader\":{lead_us:.1},\"followers\":{fol_us:.1},\"load_generator\":{gen_us:.1}}}}}",
                s.label()
            );
            println!(
                "| {} | {n} | {rate:.0} | {p50:.2} ms | {p99:.2} ms | {lead_us:.0} / {fol_us:.0} / {gen_us:.0} µs |",
                s.label()
            );
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // One rustls provider for the process (etcd-client's tonic would find none).
    shoal_security::install_crypto_provider();
    let what = std::env::args().nth(1).unwrap_or_default();
    match what.as_str() {
        "failover" => {
            let trials = arg("--trials").map_or(50, |t| t.parse().expect("--trials N"));
            failover(trials).await;
        }
        "throughput" => {
            let clients: Vec<usize> = arg("--clients")
                .unwrap_or_else(|| "1,64,256".into())
                .split(',')
                .map(|c| c.parse().expect("--clients N,M,…"))
                .collect();
            let secs = arg("--secs").map_or(10, |s| s.parse().expect("--secs N"));
            throughput(&clients, secs, &[SHOAL, ETCD]).await;
        }
        "security" => {
            // The cost of security, side by side: shoal with mTLS + token, shoal
            // plaintext, etcd with client and peer TLS, etcd plaintext.
            let clients: Vec<usize> = arg("--clients")
                .unwrap_or_else(|| "1,64".into())
                .split(',')
                .map(|c| c.parse().expect("--clients N,M,…"))
                .collect();
            let secs = arg("--secs").map_or(10, |s| s.parse().expect("--secs N"));
            let systems = [
                System::Shoal { tls: true },
                SHOAL,
                System::Etcd(100, 1000, true),
                ETCD,
            ];
            throughput(&clients, secs, &systems).await;
        }
        "drive" => {
            // Load on a cluster someone else started (profiling): --endpoint the leader.
            let system = match arg("--system").as_deref() {
                Some("etcd") => ETCD,
                _ => SHOAL,
            };
            let endpoint = arg("--endpoint").expect("--endpoint HOST:PORT");
            let n = arg("--clients").map_or(1, |c| c.parse().expect("--clients N"));
            let secs = arg("--secs").map_or(10, |s| s.parse().expect("--secs N"));
            let op = match arg("--op").as_deref() {
                Some("local-read") => Op::LocalRead,
                _ => Op::Put,
            };
            let (rate, p50, p99) = drive_op(system, op, &endpoint, n, secs).await;
            println!("{rate:.0} ops/s, p50 {p50:.2} ms, p99 {p99:.2} ms");
        }
        _ => {
            eprintln!(
                "usage: shoal-kv-bench failover [--trials N] [--only shoal|etcd] | throughput [--clients 1,64,256] [--secs N] [--shoal PATH] | security [--clients 1,64] [--secs N] | drive --endpoint A [--system shoal|etcd] [--op put|local-read] [--clients N] [--secs N]"
            );
            std::process::exit(2);
        }
    }
}

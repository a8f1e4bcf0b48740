//! `shoal node`.

use std::{collections::BTreeMap, path::PathBuf, process::ExitCode};

use clap::{Args, Subcommand};
use shoal_node::Node;
use shoal_types::{NodeConfig, PartialConfig, meta::parse_tag};

/// `shoal node [FLAGS]` runs a node; `shoal node drain` acts on a running one.
#[derive(Args, Debug)]
#[command(args_override_self = true, args_conflicts_with_subcommands = true)]
pub struct NodeCmd {
    #[command(subcommand)]
    action: Option<NodeAction>,
    #[command(flatten)]
    args: NodeArgs,
}

#[derive(Subcommand, Debug)]
enum NodeAction {
    /// Drain a manager: hand leadership over if it leads, then leave the voter set
    /// (refused if the remaining voters could not form a quorum).
    Drain {
        /// The manager's TCP address.
        #[arg(long, env = "SHOAL_ADDR", default_value = super::status::DEFAULT_ADDR)]
        addr: String,
    },
}

/// The async runtime `shoal node` runs on: `--threads N` if given, else by role.
///
/// Managers and gates run on one thread: their work is a chain of short steps (a
/// request, a Raft proposal, the log writer, replication, the answer), and every hop
/// between runtime threads costs a wake-up. Measured with 3 managers on 2 cores, one
/// thread used ~20 % less CPU per KV write than two, wrote ~20 % faster at 64 clients
/// and ran jobs ~35 % faster (docs/benchmarks.md). Disk writes keep their own thread either way. Workers run
/// user work (custom kinds are async tasks), so they get a thread per core.
pub fn runtime(cmd: &NodeCmd) -> std::io::Result<tokio::runtime::Runtime> {
    let threads = match cmd.args.threads {
        Some(n) => usize::from(n),
        None => {
            let role = resolve(&cmd.args).ok().map(|c| c.role);
            match role {
                Some(shoal_types::Role::Worker) => {
                    std::thread::available_parallelism().map_or(2, |n| n.get())
                }
                _ => 1,
            }
        }
    };
    let mut builder = if threads <= 1 || cmd.action.is_some() {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder.enable_all().build()
}

pub async fn command(cmd: NodeCmd) -> ExitCode {
    match cmd.action {
        None => run(cmd.args).await,
        Some(NodeAction::Drain { addr }) => {
            let client =
                super::access::admin(addr).with_timeout(std::time::Duration::from_secs(30));
            super::managers::report(client.drain().await)
        }
    }
}

/// Flags win over `SHOAL_*` environment variables, which win over the config file,
/// which wins over the profile's defaults.
#[derive(Args, Debug)]
pub struct NodeArgs {
    /// manager, gate or worker.
    #[arg(long, env = "SHOAL_ROLE")]
    role: Option<String>,
    /// This node's cluster-wide id: 1-64 characters of [A-Za-z0-9_.-].
    #[arg(long, env = "SHOAL_ID")]
    id: Option<String>,
    /// TCP address IP:PORT (gRPC + HTTP admin); gossip uses UDP PORT+1. Port 0 picks a
    /// free pair and prints it.
    #[arg(long, env = "SHOAL_LISTEN")]
    listen: Option<String>,
    /// Other members' TCP addresses, comma separated; any one that answers is enough.
    #[arg(long, env = "SHOAL_SEEDS", value_delimiter = ',')]
    seeds: Option<Vec<String>>,
    /// Timing profile: local, lan (default) or wan.
    #[arg(long, env = "SHOAL_PROFILE")]
    profile: Option<String>,
    /// Where the node keeps its data (default .shoal/<id>).
    #[arg(long, env = "SHOAL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// 64 hex characters sealing every gossip packet; comma separated to rotate (the
    /// first one seals). Without a key gossip is unauthenticated.
    #[arg(long, env = "SHOAL_CLUSTER_KEY", hide_env_values = true)]
    cluster_key: Option<String>,
    /// Datacenter name (default dc1).
    #[arg(long, env = "SHOAL_DC")]
    dc: Option<String>,
    /// A tag KEY=VALUE; repeatable.
    #[arg(long = "tag", value_parser = parse_tag)]
    tags: Vec<(String, String)>,
    /// CPU cores this node offers (workers).
    #[arg(long, env = "SHOAL_CORES")]
    cores: Option<u32>,
    /// Managers: form the Raft group once this many managers of the DC have met (the
    /// lowest id initializes it, once).
    #[arg(long, env = "SHOAL_BOOTSTRAP_EXPECT")]
    bootstrap_expect: Option<u32>,
    /// Cluster id; Raft messages from another cluster id are refused.
    #[arg(long, env = "SHOAL_CLUSTER_ID")]
    cluster_id: Option<String>,
    /// A TOML config file with the same keys (and a [gossip] table for timing).
    #[arg(long, env = "SHOAL_CONFIG")]
    config: Option<PathBuf>,
    /// Threads of the node's async runtime, 1-1024. Default: 1 for managers and gates
    /// (their Raft path is a chain of short steps), one per CPU for workers.
    #[arg(long, env = "SHOAL_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
    /// A directory with `ca.pem`, `<id>.pem` and `<id>-key.pem` (`shoal certs init`,
    /// `shoal certs issue --node ID`): serve TLS, require certificates of the cluster CA
    /// from other nodes and a certificate or token from clients.
    #[arg(long, env = "SHOAL_TLS_DIR")]
    tls_dir: Option<PathBuf>,
    /// Run plaintext and unauthenticated, without a cluster key, on purpose (local tests
    /// only: anyone who reaches the port can run commands on workers).
    #[arg(long, env = "SHOAL_INSECURE")]
    insecure: bool,
    /// A token accepted as `admin` until revoked (besides the one `shoal certs init`
    /// printed), to bootstrap token management.
    #[arg(long, env = "SHOAL_BOOTSTRAP_TOKEN", hide_env_values = true)]
    bootstrap_token: Option<String>,
    /// Workers: refuse jobs that run commands (`exec` workflows) altogether.
    #[arg(long, env = "SHOAL_NO_EXEC")]
    no_exec: bool,
    /// IP:PORT the other nodes reach this one at (TCP; gossip on PORT+1). Default: the
    /// listen address; on 0.0.0.0, the address of the interface that routes to the
    /// first seed.
    #[arg(long, env = "SHOAL_ADVERTISE")]
    advertise: Option<String>,
}

impl NodeArgs {
    fn layer(&self) -> PartialConfig {
        PartialConfig {
            id: self.id.clone(),
            role: self.role.clone(),
            listen: self.listen.clone(),
            seeds: self.seeds.clone(),
            profile: self.profile.clone(),
            data_dir: self.data_dir.clone(),
            cluster_key: self.cluster_key.clone(),
            dc: self.dc.clone(),
            tags: (!self.tags.is_empty())
                .then(|| self.tags.iter().cloned().collect::<BTreeMap<_, _>>()),
            cores: self.cores,
            bootstrap_expect: self.bootstrap_expect,
            cluster_id: self.cluster_id.clone(),
            tls_dir: self.tls_dir.clone(),
            insecure: self.insecure.then_some(true),
            bootstrap_token: self.bootstrap_token.clone(),
            no_exec: self.no_exec.then_some(true),
            advertise: self.advertise.clone(),
            gossip: Default::default(),
        }
    }
}

/// Exit code for a configuration that breaks a rule.
const EXIT_CONFIG: u8 = 2;

/// The node's configuration: the config file (if any) under the flags and environment.
fn resolve(args: &NodeArgs) -> Result<NodeConfig, String> {
    let file = match &args.config {
        Some(path) => PartialConfig::from_toml_file(path).map_err(|e| e.to_string())?,
        None => PartialConfig::default(),
    };
    NodeConfig::resolve(file.merge(&args.layer())).map_err(|e| e.to_string())
}

pub async fn run(args: NodeArgs) -> ExitCode {
    let config = match resolve(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let stop = async {
        tokio::select! {
            _ = super::shutdown_signal() => {},
            _ = parent_gone() => tracing::warn!("supervisor exited; leaving"),
        }
    };
    match Node::run(config, stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Set by `shoal dev` on its children: leave when the supervisor disappears, even if it
/// was killed with SIGKILL and could not stop us, so no orphan keeps a port.
pub const EXIT_WITH_PARENT_ENV: &str = "SHOAL_EXIT_WITH_PARENT";

async fn parent_gone() {
    #[cfg(unix)]
    if std::env::var_os(EXIT_WITH_PARENT_ENV).is_some() {
        let parent = std::os::unix::process::parent_id();
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            if std::os::unix::process::parent_id() != parent {
                return;
            }
        }
    }
    std::future::pending::<()>().await
}

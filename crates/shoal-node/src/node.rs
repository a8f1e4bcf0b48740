//! Starting and stopping one node.

use std::{
    future::Future,
    io,
    net::{SocketAddr, TcpListener, UdpSocket},
    time::Duration,
};

use crate::{admin, consensus, grpc, status::unix_ms, tasks::Tasks};
use shoal_membership::{
    CoreConfig, Lossy, Membership, MembershipConfig, MembershipHandle, UdpTransport,
};
use shoal_types::{Lifecycle, NodeConfig, NodeMeta, VERSION, backoff::capped_doubling};

/// Why a node could not start. Nothing is left bound when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot create data dir {path}: {source}")]
    DataDir { path: String, source: io::Error },
    #[error("cannot bind {what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("no free TCP/UDP port pair found on {0} after {1} tries")]
    NoPortPair(std::net::IpAddr, u32),
    #[error("membership: {0}")]
    Membership(#[from] shoal_membership::CoreError),
    #[error("{0}")]
    Consensus(#[from] consensus::ConsensusError),
    #[error("{0}")]
    Access(#[from] crate::access::AccessError),
    #[error(
        "listen: {0} is no address others can reach; give --advertise IP:PORT (or a seed, whose route names this node's address)"
    )]
    NoAdvertise(SocketAddr),
    #[error("keyring: {0}")]
    Keyring(String),
}

/// A node that is up: its addresses and a way to stop it. It owns every task it
/// started (see [`Tasks`]) and its Raft group: [`StartedNode::shutdown`] returns once
/// all of them have ended.
#[derive(Debug)]
pub struct StartedNode {
    /// Where the node listens (may be 0.0.0.0).
    pub tcp_addr: SocketAddr,
    /// Where the others reach it (what it gossips; never 0.0.0.0).
    pub advertised: SocketAddr,
    pub gossip_addr: SocketAddr,
    pub membership: MembershipHandle,
    tasks: Tasks,
    consensus: Option<consensus::Consensus>,
}

/// How long the node's tasks get to end on their own at shutdown before the rest are
/// aborted (the HTTP server finishes the requests in flight meanwhile).
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

impl StartedNode {
    /// Leaves the cluster politely (peers see `left`), stops every task and the Raft
    /// group, and returns once all have ended.
    pub async fn shutdown(self) {
        let leave = self.membership.leave();
        if tokio::time::timeout(Duration::from_millis(1_000), leave)
            .await
            .is_err()
        {
            tracing::warn!("leave announcement timed out");
            self.membership.stop().await;
        }
        self.stop(SHUTDOWN_GRACE).await;
    }

    /// Stops without a word to the cluster, as a crash would (tests): every task is
    /// aborted at once, connections are cut, nothing is announced.
    pub async fn kill(self) {
        self.membership.stop().await;
        self.stop(Duration::ZERO).await;
    }

    async fn stop(self, grace: Duration) {
        self.tasks.shutdown(grace).await;
        if let Some(c) = &self.consensus {
            c.group().shutdown().await;
        }
    }

    /// The node's tasks (tests count them).
    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }
}

/// Entry points for running a node.
#[derive(Debug)]
pub struct Node;

/// The sockets a node serves on, bound before anything starts.
struct Bound {
    tcp: TcpListener,
    tcp_addr: SocketAddr,
    transport: UdpTransport,
    gossip_addr: SocketAddr,
}

impl Node {
    /// Binds, starts membership and the admin API, and returns once serving.
    pub async fn start(config: NodeConfig) -> Result<StartedNode, NodeError> {
        Self::start_with(config, crate::jobs::exec::Registry::default()).await
    }

    /// [`start`](Self::start) for a program that embeds a worker with its own workflow
    /// kinds: the worker runs them and advertises them (tag `kind.<name>=yes`), so the
    /// managers place those workflows only on it.
    ///
    /// The steps: prepare the config → bind → metadata → membership → consensus → role
    /// services → serve. If a step fails, what the earlier ones started is stopped.
    pub async fn start_with(
        config: NodeConfig,
        registry: crate::jobs::exec::Registry,
    ) -> Result<StartedNode, NodeError> {
        let config = prepare(config, &registry)?;
        let access = crate::access::NodeAccess::load(&config)?;
        if access.is_insecure() {
            tracing::warn!(
                "--insecure: plaintext and unauthenticated; anyone who reaches this port can run commands on the workers"
            );
        }
        let bound = bind(&config)?;
        let advertised = advertised(&config, bound.tcp_addr).await?;
        let meta = metadata(&config, advertised);
        let tasks = Tasks::new();
        let (tcp, tcp_addr, gossip_addr) = (bound.tcp, bound.tcp_addr, bound.gossip_addr);
        let gossip_advertised = SocketAddr::new(advertised.ip(), advertised.port() + 1);
        let membership =
            start_membership(&config, meta, bound.transport, gossip_advertised, &tasks).await?;
        let consensus = match consensus::start(&config, &access.transport, &tasks).await {
            Ok(c) => c,
            Err(e) => {
                membership.stop().await;
                tasks.shutdown(SHUTDOWN_GRACE).await;
                return Err(e.into());
            }
        };
        if let Some(c) = &consensus {
            c.spawn_duties(config.bootstrap_expect, membership.clone());
        }
        let services = role_services(
            &config,
            consensus.clone(),
            &membership,
            registry,
            &access,
            &tasks,
        );
        let guard = guard(&config, consensus.as_ref(), &membership, &access);
        let mut app = admin::router(admin_state(
            &config,
            consensus.clone(),
            &membership,
            &services,
            &access,
        ))
        .merge(grpc::routes(membership.clone(), services));
        app = app.merge(crate::keys::routes(
            membership.clone(),
            config.data_dir.clone(),
        ));
        if let (Some(c), shoal_types::Role::Manager) = (&consensus, config.role) {
            app = app.merge(crate::access::tokens_routes(
                c.replica.clone(),
                access.clone(),
            ));
        }
        let app = app.layer(axum::middleware::from_fn_with_state(
            std::sync::Arc::new(guard),
            crate::access::guard,
        ));
        if let Err(e) = serve(tcp, tcp_addr, app, access.server.clone(), &tasks) {
            let node = StartedNode {
                tcp_addr,
                advertised,
                gossip_addr,
                membership,
                tasks,
                consensus,
            };
            node.kill().await;
            return Err(e);
        }
        Ok(StartedNode {
            tcp_addr,
            advertised,
            gossip_addr,
            membership,
            tasks,
            consensus,
        })
    }

    /// Runs a node until `stop` resolves, then leaves politely.
    pub async fn run(config: NodeConfig, stop: impl Future<Output = ()>) -> Result<(), NodeError> {
        let node = Self::start(config.clone()).await?;
        let advertise = if node.advertised == node.tcp_addr {
            String::new()
        } else {
            format!(" advertise={}", node.advertised)
        };
        println!(
            "shoal node {} ({}, dc {}) listening tcp={} gossip={}{advertise}",
            config.id, config.role, config.dc, node.tcp_addr, node.gossip_addr
        );
        stop.await;
        tracing::info!("stopping: announcing departure");
        node.shutdown().await;
        Ok(())
    }
}

/// Fills what the config leaves to the machine (a worker's cores) and to the embedding
/// program (its workflow kinds, advertised as tags), and creates the data directory.
fn prepare(
    mut config: NodeConfig,
    registry: &crate::jobs::exec::Registry,
) -> Result<NodeConfig, NodeError> {
    if config.role == shoal_types::Role::Worker {
        if config.cores == 0 {
            config.cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        }
        let exec = (!config.no_exec).then_some("exec");
        for kind in registry.names().chain(exec) {
            config
                .tags
                .insert(shoal_state::jobs::kind_tag(kind), "yes".into());
        }
    }
    std::fs::create_dir_all(&config.data_dir).map_err(|source| NodeError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    Ok(config)
}

/// Binds TCP on the listen address and UDP on its port + 1.
fn bind(config: &NodeConfig) -> Result<Bound, NodeError> {
    let (tcp, udp) = bind_pair(config.listen)?;
    let tcp_addr = tcp.local_addr().map_err(|source| NodeError::Bind {
        what: "TCP",
        addr: config.listen,
        source,
    })?;
    let transport = UdpTransport::from_std(udp).map_err(|source| NodeError::Bind {
        what: "UDP",
        addr: tcp_addr,
        source,
    })?;
    let gossip_addr = shoal_membership::Transport::local_addr(&transport);
    Ok(Bound {
        tcp,
        tcp_addr,
        transport,
        gossip_addr,
    })
}

/// What this node tells the cluster about itself at start.
fn metadata(config: &NodeConfig, tcp_addr: SocketAddr) -> NodeMeta {
    let started = unix_ms();
    NodeMeta {
        id: config.id.clone(),
        role: config.role,
        dc: config.dc.clone(),
        tcp_addr,
        tags: config.tags.clone(),
        // A manager is syncing until it is a caught-up voter of its group.
        lifecycle: if config.role == shoal_types::Role::Manager {
            Lifecycle::Syncing
        } else {
            Lifecycle::Active
        },
        version: started,
        build: VERSION.into(),
        cores: config.cores,
        load_permille: 0,
        chat_clients: 0,
        chat_messages: 0,
        leader_hint: None,
        leader_term: 0,
        started_unix_ms: started,
    }
}

/// What the others reach this node at: `--advertise`; else the listen address; else
/// (listening on 0.0.0.0 or ::) the source address of the route to the first seed that
/// resolves, or of the default route. Never an unspecified address.
async fn advertised(config: &NodeConfig, bound: SocketAddr) -> Result<SocketAddr, NodeError> {
    if let Some(a) = config.advertise {
        return Ok(a);
    }
    if !bound.ip().is_unspecified() {
        return Ok(bound);
    }
    let mut targets = Vec::new();
    for seed in &config.seeds {
        if let Ok(addrs) = tokio::net::lookup_host(seed.as_str()).await {
            targets.extend(addrs.filter(|a| a.is_ipv4() == bound.is_ipv4()));
        }
    }
    // No seed: the default route's source (documentation addresses; nothing is sent).
    targets.push(if bound.is_ipv4() {
        SocketAddr::from(([192, 0, 2, 1], 9))
    } else {
        SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 9))
    });
    targets
        .into_iter()
        .find_map(|to| route_source(bound, to))
        .map(|ip| SocketAddr::new(ip, bound.port()))
        .ok_or(NodeError::NoAdvertise(bound))
}

/// The local address the kernel would send from to reach `to` (a UDP "connect" only
/// looks the route up).
fn route_source(bound: SocketAddr, to: SocketAddr) -> Option<std::net::IpAddr> {
    let probe = UdpSocket::bind(SocketAddr::new(bound.ip(), 0)).ok()?;
    probe.connect(to).ok()?;
    let ip = probe.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// Starts gossip as `gossip_addr` (what the others reach it at): joins through the
/// seeds that resolve now, and keeps resolving the others (a task of the node's).
async fn start_membership(
    config: &NodeConfig,
    meta: NodeMeta,
    transport: UdpTransport,
    gossip_addr: SocketAddr,
    tasks: &Tasks,
) -> Result<MembershipHandle, NodeError> {
    // A keyring rotated at run time (`shoal keys`) wins over the configured keys.
    let keys = match crate::keys::load(&config.data_dir) {
        Ok(Some(keys)) => {
            if keys != config.cluster_keys {
                tracing::info!(
                    keys = keys.len(),
                    "gossip keys from the keyring file (rotated with `shoal keys`); --cluster-key is not used"
                );
            }
            keys
        }
        Ok(None) => config.cluster_keys.clone(),
        Err(e) => return Err(NodeError::Keyring(e)),
    };
    if keys.is_empty() {
        tracing::warn!(
            "no cluster key: gossip is unauthenticated; set --cluster-key (`shoal keygen`)"
        );
    }
    let core = CoreConfig {
        bump: meta.version,
        meta,
        gossip_addr,
        timing: config.timing.clone(),
        keys,
        rng_seed: rand_seed(),
    };
    let (seeds, unresolved) = resolve_seeds(&config.seeds, gossip_addr).await;
    let config_m = MembershipConfig { core, seeds };
    let membership = match fault_loss() {
        Some(loss) => {
            tracing::warn!(
                loss,
                "fault injection: dropping inbound gossip ({FAULT_LOSS_ENV})"
            );
            Membership::start(config_m, Lossy::new(transport, loss, rand_seed()))?
        }
        None => Membership::start(config_m, transport)?,
    };
    let retry_cap = Duration::from_millis(config.timing.seed_retry_max_ms);
    keep_resolving(
        unresolved,
        gossip_addr,
        membership.clone(),
        retry_cap,
        tasks,
    );
    Ok(membership)
}

/// Who may call this node: managers look tokens up in their replicated state, gates
/// and workers ask a manager of their DC.
fn guard(
    config: &NodeConfig,
    consensus: Option<&consensus::Consensus>,
    membership: &MembershipHandle,
    access: &crate::access::NodeAccess,
) -> crate::access::Guard {
    let book = match (consensus, config.role) {
        (Some(c), shoal_types::Role::Manager) => {
            crate::access::TokenBook::Local(Box::new(c.replica.clone()))
        }
        _ => crate::access::TokenBook::remote(membership.clone(), config.dc.clone(), access),
    };
    crate::access::Guard {
        access: access.clone(),
        book,
    }
}

/// The gRPC services of this node's role (and their background tasks).
fn role_services(
    config: &NodeConfig,
    consensus: Option<consensus::Consensus>,
    membership: &MembershipHandle,
    registry: crate::jobs::exec::Registry,
    access: &crate::access::NodeAccess,
    tasks: &Tasks,
) -> grpc::RoleServices {
    match (consensus, config.role) {
        (Some(c), shoal_types::Role::Gate) => {
            let gate = crate::jobs::gate::Gate::new(
                c.replica.clone(),
                membership.clone(),
                access.transport.clone(),
                tasks,
            );
            grpc::RoleServices::Gate(Box::new(grpc::GateServices {
                replica: c.replica,
                identity: consensus::identity(config),
                gate,
            }))
        }
        (Some(c), _) => {
            let jobs = crate::jobs::manager::JobsManager::new(
                c.replica.clone(),
                membership.clone(),
                config.dc.clone(),
                config.cluster_id.clone(),
                access.transport.clone(),
                tasks.clone(),
            );
            tasks.spawn("jobs leader", crate::jobs::leader::run(jobs.clone()));
            let chat = crate::chat::ChatHub::new(c.replica.clone(), tasks.clone());
            tasks.spawn("chat publisher", chat.clone().publish(membership.clone()));
            grpc::RoleServices::Manager(Box::new(grpc::ManagerServices {
                replica: c.replica,
                identity: consensus::identity(config),
                jobs,
                chat,
            }))
        }
        (None, shoal_types::Role::Worker) => {
            grpc::RoleServices::Worker(crate::jobs::worker::WorkerRuntime::start(
                config,
                membership.clone(),
                registry,
                access.transport.clone(),
                tasks,
            ))
        }
        (None, _) => grpc::RoleServices::None,
    }
}

/// What the admin HTTP routes read.
fn admin_state(
    config: &NodeConfig,
    consensus: Option<consensus::Consensus>,
    membership: &MembershipHandle,
    services: &grpc::RoleServices,
    access: &crate::access::NodeAccess,
) -> admin::AppState {
    admin::AppState {
        insecure: access.is_insecure(),
        membership: membership.clone(),
        raft: consensus,
        dc: config.dc.clone(),
        jobs: match services {
            grpc::RoleServices::Manager(m) => admin::JobsView::Manager(m.jobs.clone()),
            grpc::RoleServices::Worker(w) => admin::JobsView::Worker(w.clone()),
            grpc::RoleServices::Gate(g) => admin::JobsView::Gate(g.gate.clone()),
            grpc::RoleServices::None => admin::JobsView::None,
        },
        chat: match services {
            grpc::RoleServices::Manager(m) => Some(m.chat.clone()),
            _ => None,
        },
    }
}

/// Serves gRPC and the admin HTTP routes on one port (one hyper server, HTTP/1.1 and
/// HTTP/2 negotiated per connection) until the node stops; connections in flight get
/// the shutdown grace to finish.
fn serve(
    tcp: TcpListener,
    tcp_addr: SocketAddr,
    app: axum::Router,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    tasks: &Tasks,
) -> Result<(), NodeError> {
    let bind_err = |source| NodeError::Bind {
        what: "TCP",
        addr: tcp_addr,
        source,
    };
    tcp.set_nonblocking(true).map_err(bind_err)?;
    let listener = tokio::net::TcpListener::from_std(tcp).map_err(bind_err)?;
    let stopped = tasks.stopped();
    tasks.spawn_graceful("http", async move {
        // TCP_NODELAY and the TLS handshake happen in the listener; the peer it read
        // from the certificate reaches the access guard as connection info.
        let listener = shoal_security::ShoalListener::new(listener, tls);
        let app = app.into_make_service_with_connect_info::<shoal_security::Peer>();
        let serve = axum::serve(listener, app).with_graceful_shutdown(stopped);
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "admin server stopped");
        }
    });
    Ok(())
}

/// Drills and benchmarks only: a percentage of inbound gossip datagrams to drop, to
/// test the detector under loss where `tc netem` is unavailable.
pub const FAULT_LOSS_ENV: &str = "SHOAL_FAULT_DROP_PERCENT";

fn fault_loss() -> Option<f64> {
    let text = std::env::var(FAULT_LOSS_ENV).ok()?;
    match text.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) && p > 0.0 => Some(p / 100.0),
        _ => {
            tracing::warn!(%text, "{FAULT_LOSS_ENV} must be a number in (0, 100]; ignored");
            None
        }
    }
}

/// How many port pairs to try when the caller asked for port 0.
const PORT_PAIR_TRIES: u32 = 64;

/// Binds TCP on `listen` and UDP on its port + 1. Port 0 picks a free pair.
fn bind_pair(listen: SocketAddr) -> Result<(TcpListener, UdpSocket), NodeError> {
    let bind_udp = |tcp: &SocketAddr| UdpSocket::bind(SocketAddr::new(tcp.ip(), tcp.port() + 1));
    if listen.port() != 0 {
        let tcp = TcpListener::bind(listen).map_err(|source| NodeError::Bind {
            what: "TCP",
            addr: listen,
            source,
        })?;
        let udp = bind_udp(&listen).map_err(|source| NodeError::Bind {
            what: "UDP",
            addr: SocketAddr::new(listen.ip(), listen.port() + 1),
            source,
        })?;
        return Ok((tcp, udp));
    }
    for _ in 0..PORT_PAIR_TRIES {
        let Ok(tcp) = TcpListener::bind(listen) else {
            continue;
        };
        let Ok(addr) = tcp.local_addr() else { continue };
        if addr.port() == u16::MAX {
            continue;
        }
        if let Ok(udp) = bind_udp(&addr) {
            return Ok((tcp, udp));
        }
    }
    Err(NodeError::NoPortPair(listen.ip(), PORT_PAIR_TRIES))
}

/// Seeds are TCP addresses; gossip listens on port + 1. Returns the gossip addresses of
/// the seeds that resolve now and the seeds that do not (yet).
async fn resolve_seeds(seeds: &[String], me: SocketAddr) -> (Vec<SocketAddr>, Vec<String>) {
    let mut resolved = Vec::new();
    let mut pending = Vec::new();
    for seed in seeds {
        match tokio::net::lookup_host(seed.as_str()).await {
            Ok(addrs) => {
                let addr = addrs
                    .filter(|a| a.is_ipv4() == me.is_ipv4())
                    .map(|a| SocketAddr::new(a.ip(), a.port() + 1))
                    .next();
                match addr {
                    Some(a) if a != me => resolved.push(a),
                    Some(_) => {}
                    None => tracing::warn!(%seed, "seed has no address of our IP family"),
                }
            }
            Err(e) => {
                tracing::warn!(%seed, error = %e, "cannot resolve seed yet; will retry");
                pending.push(seed.clone());
            }
        }
    }
    (resolved, pending)
}

/// Keeps resolving seeds whose names did not resolve at start (DNS not ready yet),
/// with capped backoff, and hands each to membership once it does.
fn keep_resolving(
    mut pending: Vec<String>,
    me: SocketAddr,
    membership: MembershipHandle,
    cap: Duration,
    tasks: &Tasks,
) {
    if pending.is_empty() {
        return;
    }
    tasks.spawn("seed resolver", async move {
        let mut wait = None;
        while !pending.is_empty() {
            let next = capped_doubling(wait, Duration::from_millis(500), cap);
            wait = Some(next);
            tokio::time::sleep(next).await;
            let (found, still) = resolve_seeds(&pending, me).await;
            pending = still;
            if !found.is_empty() && membership.join(found).await.is_err() {
                return;
            }
        }
    });
}

/// A seed that differs per call and per process (no `rand` dependency needed).
pub(crate) fn rand_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(unix_ms())
}

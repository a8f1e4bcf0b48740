//! `shoal dev`: a local cluster of child processes of the same binary.
//!
//! Ports follow DESIGN §Ports: manager i on B+2(i−1), gate i on B+100+2(i−1), worker i
//! on B+200+2(i−1), gossip on TCP+1. With several datacenters (`--dcs N`) each DC gets
//! its own managers and workers, numbered on (dc2's managers follow dc1's), and the
//! gates (in dc1) front them all. Every child runs profile `local`, shares one cluster
//! key, keeps its data under `<root>/<id>` and writes its log to `<root>/<id>/node.log`.
//! A child that dies is reported, never silently restarted.

use std::{
    fs::OpenOptions,
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use shoal_client::AdminClient;
use shoal_types::{ConfigError, MemberState, Role, status::StatusDoc};
use tokio::process::{Child, Command};

/// Each role's block of ports holds this many nodes (100 ports, 2 per node).
pub const DEV_NODES_PER_ROLE_MAX: u32 = 50;
/// How long children get to leave politely before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// What to start.
#[derive(Debug, Clone)]
pub struct DevPlan {
    pub base_port: u16,
    /// Datacenters `dc1`…`dcN`; managers and workers are per DC.
    pub dcs: u32,
    pub managers: u32,
    pub gates: u32,
    pub workers: u32,
    pub data_root: PathBuf,
    /// 64 hex characters, shared by every child.
    pub cluster_key: String,
    pub host: IpAddr,
    /// TLS with a CA under `<data_root>/tls` (the default), or `--insecure` children.
    pub insecure: bool,
}

/// Where a dev cluster keeps its CA, node certificates and admin token.
pub const DEV_TLS_SUBDIR: &str = "tls";

/// One planned child.
#[derive(Debug, Clone, PartialEq)]
pub struct DevNode {
    pub id: String,
    pub role: Role,
    pub dc: String,
    pub tcp: SocketAddr,
    pub data_dir: PathBuf,
}

impl DevPlan {
    pub fn new(base_port: u16, managers: u32, gates: u32, workers: u32) -> Self {
        Self {
            base_port,
            dcs: 1,
            managers,
            gates,
            workers,
            data_root: PathBuf::from(".shoal/dev"),
            cluster_key: String::new(),
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            insecure: false,
        }
    }

    /// The directory of the cluster's CA and certificates.
    pub fn tls_dir(&self) -> PathBuf {
        self.data_root.join(DEV_TLS_SUBDIR)
    }

    /// Makes the CA (once: a restarted dev cluster keeps its CA and admin token) and a
    /// certificate for every node; with `insecure`, removes a stale CA so the CLI does
    /// not find it. Returns what a client needs.
    pub fn prepare_security(&self) -> Result<shoal_security::Credentials, DevError> {
        let dir = self.tls_dir();
        let io = |source: std::io::Error| DevError::Io {
            path: dir.display().to_string(),
            source,
        };
        if self.insecure {
            clean(&dir).map_err(io)?;
            return Ok(shoal_security::Credentials::insecure());
        }
        let tls_err = |e: shoal_security::SecurityError| DevError::Tls(e.to_string());
        if !dir.join(shoal_security::certs::CA_CERT_FILE).is_file() {
            shoal_security::certs::init(&dir).map_err(tls_err)?;
        }
        for node in self.nodes() {
            let subject = shoal_security::certs::Subject::Node {
                id: node.id.clone(),
                ips: vec![self.host],
                dns: vec!["localhost".into()],
            };
            shoal_security::certs::issue(&dir, &subject).map_err(tls_err)?;
        }
        self.credentials()
    }

    /// A client's credentials for this cluster: its CA and admin token.
    pub fn credentials(&self) -> Result<shoal_security::Credentials, DevError> {
        if self.insecure {
            return Ok(shoal_security::Credentials::insecure());
        }
        let dir = self.tls_dir();
        let files = shoal_security::TlsFiles {
            ca: dir.join(shoal_security::certs::CA_CERT_FILE),
            own: None,
        };
        let tls = shoal_security::Tls::load(&files).map_err(|e| DevError::Tls(e.to_string()))?;
        let token_path = dir.join(shoal_security::certs::ADMIN_TOKEN_FILE);
        let token = std::fs::read_to_string(&token_path).map_err(|source| DevError::Io {
            path: token_path.display().to_string(),
            source,
        })?;
        Ok(shoal_security::Credentials {
            transport: shoal_security::Transport::Tls(tls),
            token: Some(token.trim().to_string()),
        })
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=9).contains(&self.dcs) {
            return Err(ConfigError::new("dcs", "must be 1..=9"));
        }
        for (key, n) in [
            ("managers", self.managers * self.dcs),
            ("gates", self.gates),
            ("workers", self.workers * self.dcs),
        ] {
            if n > DEV_NODES_PER_ROLE_MAX {
                return Err(ConfigError::new(
                    key,
                    format!("must be 0..={DEV_NODES_PER_ROLE_MAX}"),
                ));
            }
        }
        if self.managers + self.gates + self.workers == 0 {
            return Err(ConfigError::new(
                "managers",
                "at least one node must be started",
            ));
        }
        let highest = self
            .nodes()
            .iter()
            .map(|n| n.tcp.port() as u32 + 1)
            .max()
            .unwrap_or(0);
        if self.base_port == 0 || highest > u16::MAX as u32 - 1 {
            return Err(ConfigError::new(
                "base_port",
                "must leave room for every node: base_port + 201 + 2 × (workers − 1) ≤ 65534",
            ));
        }
        Ok(())
    }

    /// The children, managers first.
    pub fn nodes(&self) -> Vec<DevNode> {
        let mut out = Vec::new();
        for (role, prefix, offset, per_dc, dcs) in [
            (Role::Manager, "m", 0u32, self.managers, self.dcs),
            (Role::Gate, "g", 100, self.gates, 1),
            (Role::Worker, "w", 200, self.workers, self.dcs),
        ] {
            for dc in 1..=dcs {
                for j in 1..=per_dc {
                    let i = (dc - 1) * per_dc + j;
                    let port = self.base_port as u32 + offset + 2 * (i - 1);
                    let id = format!("{prefix}{i}");
                    out.push(DevNode {
                        data_dir: self.data_root.join(&id),
                        id,
                        role,
                        dc: format!("dc{dc}"),
                        tcp: SocketAddr::new(self.host, port.min(u16::MAX as u32) as u16),
                    });
                }
            }
        }
        out
    }

    /// Seeds of a child: the managers (or the first node when there are none), not itself.
    pub fn seeds_for(&self, node: &DevNode) -> Vec<String> {
        let nodes = self.nodes();
        let managers: Vec<&DevNode> = nodes.iter().filter(|n| n.role == Role::Manager).collect();
        let pool: Vec<&DevNode> = if managers.is_empty() {
            nodes.iter().take(1).collect()
        } else {
            managers
        };
        pool.into_iter()
            .filter(|n| n.id != node.id)
            .map(|n| n.tcp.to_string())
            .collect()
    }
}

/// Why the dev cluster could not start or stopped early.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("port {port} for {id} is busy ({source}); pick another --base-port")]
    PortBusy {
        id: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot start {id}: {source}")]
    Spawn { id: String, source: std::io::Error },
    #[error("certificates: {0}")]
    Tls(String),
    #[error("the cluster did not come up within {0:?}; logs are in {1}")]
    NotAlive(Duration, String),
    #[error("{id} exited during start-up ({status}); see {log}")]
    ChildExited {
        id: String,
        status: String,
        log: String,
    },
}

/// A running child.
#[derive(Debug)]
pub struct DevChild {
    pub node: DevNode,
    pub child: Option<Child>,
}

/// The running dev cluster.
#[derive(Debug)]
pub struct DevCluster {
    pub plan: DevPlan,
    pub children: Vec<DevChild>,
    /// What a client of this cluster presents (its CA and admin token).
    pub creds: shoal_security::Credentials,
    exe: PathBuf,
}

impl DevCluster {
    /// Checks every port, then starts every child. Nothing is started if a port is busy.
    pub async fn spawn(plan: DevPlan, exe: PathBuf) -> Result<Self, DevError> {
        plan.validate()?;
        for node in plan.nodes() {
            check_ports_free(&node)?;
        }
        let creds = plan.prepare_security()?;
        let mut cluster = Self {
            creds,
            children: plan
                .nodes()
                .into_iter()
                .map(|node| DevChild { node, child: None })
                .collect(),
            plan,
            exe,
        };
        for i in 0..cluster.children.len() {
            if let Err(e) = cluster.start_child(i) {
                cluster.stop_all().await;
                return Err(e);
            }
        }
        Ok(cluster)
    }

    fn start_child(&mut self, i: usize) -> Result<(), DevError> {
        let node = self.children[i].node.clone();
        std::fs::create_dir_all(&node.data_dir).map_err(|source| DevError::Io {
            path: node.data_dir.display().to_string(),
            source,
        })?;
        let log_path = log_path(&node);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| DevError::Io {
                path: log_path.display().to_string(),
                source,
            })?;
        let log_err = log.try_clone().map_err(|source| DevError::Io {
            path: log_path.display().to_string(),
            source,
        })?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("node")
            .args(["--role", node.role.as_str(), "--id", &node.id])
            .args(["--listen", &node.tcp.to_string(), "--profile", "local"])
            .args(["--dc", &node.dc])
            .arg("--data-dir")
            .arg(&node.data_dir);
        match node.role {
            Role::Manager => {
                cmd.args(["--bootstrap-expect", &self.plan.managers.min(9).to_string()]);
            }
            // The gates form their own group.
            Role::Gate => {
                cmd.args(["--bootstrap-expect", &self.plan.gates.min(9).to_string()]);
            }
            Role::Worker => {}
        }
        let seeds = self.plan.seeds_for(&node);
        if !seeds.is_empty() {
            cmd.args(["--seeds", &seeds.join(",")]);
        }
        if self.plan.insecure {
            cmd.arg("--insecure");
        } else {
            cmd.arg("--tls-dir").arg(self.plan.tls_dir());
        }
        cmd.env("SHOAL_CLUSTER_KEY", &self.plan.cluster_key)
            .env("SHOAL_EXIT_WITH_PARENT", "1")
            // The children's own settings come from the flags above, not the caller's
            // environment (a SHOAL_INSECURE or SHOAL_TLS_DIR there would clash).
            .env_remove("SHOAL_INSECURE")
            .env_remove("SHOAL_TLS_DIR")
            .env_remove("SHOAL_BOOTSTRAP_TOKEN")
            // RUST_LOG passes through when set; otherwise the node's own default
            // (`warn,shoal=info,openraft=error`). Forcing `info` let openraft log a cut-off
            // follower's election timer every tick, thousands of lines a second.
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|source| DevError::Spawn {
            id: node.id.clone(),
            source,
        })?;
        self.children[i].child = Some(child);
        Ok(())
    }

    /// Polls until the first node sees every child alive with its metadata.
    pub async fn wait_alive(&mut self, timeout: Duration) -> Result<StatusDoc, DevError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let expected = self.children.len();
        let client = AdminClient::new(self.children[0].node.tcp.to_string())
            .with_timeout(Duration::from_millis(500))
            .with_credentials(self.creds.clone());
        loop {
            if let Some((id, status)) = self.poll_exits() {
                let log = self.log_of(&id);
                return Err(DevError::ChildExited { id, status, log });
            }
            if let Ok(doc) = client.status().await {
                let alive = doc
                    .members
                    .iter()
                    .filter(|m| m.state == MemberState::Alive && !m.role.is_empty())
                    .count();
                if alive == expected {
                    return Ok(doc);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                let logs = self.plan.data_root.join("*/node.log").display().to_string();
                return Err(DevError::NotAlive(timeout, logs));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A child that has exited since the last look: (id, exit status).
    pub fn poll_exits(&mut self) -> Option<(String, String)> {
        for c in &mut self.children {
            if let Some(child) = c.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                c.child = None;
                return Some((c.node.id.clone(), status.to_string()));
            }
        }
        None
    }

    /// (id, pid) of every running child.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.children
            .iter()
            .filter_map(|c| Some((c.node.id.clone(), c.child.as_ref()?.id()?)))
            .collect()
    }

    pub fn log_of(&self, id: &str) -> String {
        self.children
            .iter()
            .find(|c| c.node.id == id)
            .map(|c| log_path(&c.node).display().to_string())
            .unwrap_or_default()
    }

    fn index_of(&self, id: &str) -> Option<usize> {
        self.children.iter().position(|c| c.node.id == id)
    }

    /// kill -9 one child.
    pub async fn kill(&mut self, id: &str) -> bool {
        let Some(i) = self.index_of(id) else {
            return false;
        };
        match self.children[i].child.take() {
            Some(mut child) => {
                let _ = child.kill().await;
                true
            }
            None => false,
        }
    }

    /// Starts a stopped child again with the same id and ports.
    pub fn restart(&mut self, id: &str) -> Result<(), DevError> {
        match self.index_of(id) {
            Some(i) if self.children[i].child.is_none() => self.start_child(i),
            _ => Ok(()),
        }
    }

    /// Asks every child to leave (SIGTERM), waits up to 5 s, kills the rest.
    pub async fn stop_all(&mut self) {
        for c in &self.children {
            if let Some(pid) = c.child.as_ref().and_then(Child::id) {
                terminate(pid).await;
            }
        }
        let deadline = tokio::time::Instant::now() + STOP_GRACE;
        for c in &mut self.children {
            if let Some(mut child) = c.child.take() {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if tokio::time::timeout(left, child.wait()).await.is_err() {
                    let _ = child.kill().await;
                }
            }
        }
    }
}

fn log_path(node: &DevNode) -> PathBuf {
    node.data_dir.join("node.log")
}

fn check_ports_free(node: &DevNode) -> Result<(), DevError> {
    let busy = |port: u16, source| DevError::PortBusy {
        id: node.id.clone(),
        port,
        source,
    };
    let tcp = TcpListener::bind(node.tcp).map_err(|e| busy(node.tcp.port(), e))?;
    let gossip = SocketAddr::new(node.tcp.ip(), node.tcp.port() + 1);
    let udp = UdpSocket::bind(gossip).map_err(|e| busy(gossip.port(), e))?;
    drop((tcp, udp));
    Ok(())
}

/// SIGTERM without unsafe code: the `kill` utility. If it is missing, the caller's
/// grace period runs out and the child is killed instead.
async fn terminate(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    if status.is_err() {
        tracing::debug!(
            pid,
            "`kill` is unavailable; the child will be killed after the grace period"
        );
    }
}

/// Removes a dev data root (used by `shoal dev --clean`).
pub fn clean(root: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(root) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_follow_the_design_table() {
        let plan = DevPlan::new(9000, 3, 1, 2);
        let ports: Vec<(String, u16)> = plan
            .nodes()
            .into_iter()
            .map(|n| (n.id, n.tcp.port()))
            .collect();
        assert_eq!(
            ports,
            [
                ("m1", 9000),
                ("m2", 9002),
                ("m3", 9004),
                ("g1", 9100),
                ("w1", 9200),
                ("w2", 9202)
            ]
            .map(|(i, p)| (i.to_string(), p))
        );
        let m2 = &plan.nodes()[1];
        assert_eq!(plan.seeds_for(m2), ["127.0.0.1:9000", "127.0.0.1:9004"]);
        assert_eq!(m2.data_dir, PathBuf::from(".shoal/dev/m2"));
    }

    #[test]
    fn two_datacenters_number_on() {
        let mut plan = DevPlan::new(9000, 3, 1, 2);
        plan.dcs = 2;
        assert!(plan.validate().is_ok());
        let nodes: Vec<(String, String, u16)> = plan
            .nodes()
            .into_iter()
            .map(|n| (n.id, n.dc, n.tcp.port()))
            .collect();
        let expect = [
            ("m1", "dc1", 9000),
            ("m2", "dc1", 9002),
            ("m3", "dc1", 9004),
            ("m4", "dc2", 9006),
            ("m5", "dc2", 9008),
            ("m6", "dc2", 9010),
            ("g1", "dc1", 9100),
            ("w1", "dc1", 9200),
            ("w2", "dc1", 9202),
            ("w3", "dc2", 9204),
            ("w4", "dc2", 9206),
        ]
        .map(|(i, d, p)| (i.to_string(), d.to_string(), p));
        assert_eq!(nodes, expect);
        plan.dcs = 0;
        assert!(plan.validate().is_err());
    }

    #[test]
    fn plans_are_checked() {
        assert!(DevPlan::new(9000, 0, 0, 0).validate().is_err());
        assert!(
            DevPlan::new(9000, 51, 0, 0)
                .validate()
                .unwrap_err()
                .to_string()
                .contains("managers")
        );
        assert!(
            DevPlan::new(65400, 1, 1, 1)
                .validate()
                .unwrap_err()
                .to_string()
                .contains("base_port")
        );
        assert!(DevPlan::new(9000, 3, 1, 2).validate().is_ok());
    }
}

//! Node configuration: one loader, one validation.
//!
//! Precedence is flags > `SHOAL_*` environment > TOML file > profile defaults. The CLI
//! turns flags and environment into one [`PartialConfig`] (clap reads the environment),
//! the file gives another, [`PartialConfig::merge`] layers them, and
//! [`NodeConfig::resolve`] fills the rest from the profile and validates the whole. A
//! rejected config names the key and the rule, before anything binds.

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    str::FromStr,
};

use serde::{Deserialize, Serialize};

use crate::{
    ids::{NodeId, Role, validate_name},
    limits::{AWARENESS_MAX, GOSSIP_ENVELOPE_BYTES, GOSSIP_PACKET_BYTES_MAX},
    meta::validate_tags,
};

/// A config value that breaks a rule: the key and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config: {key}: {rule}")]
pub struct ConfigError {
    pub key: String,
    pub rule: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, rule: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            rule: rule.into(),
        }
    }
}

/// Timing presets, see DESIGN §Timing profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Loopback, `shoal dev`, tests: fast detection.
    Local,
    /// One datacenter.
    #[default]
    Lan,
    /// Across datacenters.
    Wan,
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "local" => Ok(Profile::Local),
            "lan" => Ok(Profile::Lan),
            "wan" => Ok(Profile::Wan),
            _ => Err("must be one of local, lan, wan".into()),
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Profile::Local => "local",
            Profile::Lan => "lan",
            Profile::Wan => "wan",
        })
    }
}

/// Gossip and failure-detection timing. Every field can be overridden in the `[gossip]`
/// table of the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GossipTiming {
    /// How often one member is probed.
    pub probe_period_ms: u64,
    /// How long to wait for a direct ack before asking others to probe indirectly.
    pub probe_timeout_ms: u64,
    /// How many members are asked to probe indirectly.
    pub indirect_probes: u32,
    /// Lifeguard suspicion: the minimum timeout is
    /// `suspicion_mult × max(1, log10 n) × suspicion_base_ms`.
    pub suspicion_mult: u32,
    pub suspicion_base_ms: u64,
    /// The timeout starts at `min × suspicion_max_factor` and shrinks towards `min` as
    /// independent confirmations arrive.
    pub suspicion_max_factor: u32,
    /// Periodic dissemination of pending updates (only sent when there are some).
    pub gossip_interval_ms: u64,
    pub gossip_fanout: u32,
    /// How many times one update is piggybacked.
    pub max_transmissions: u32,
    /// Lifeguard local health: the highest awareness multiplier (0..=8).
    pub awareness_max: u32,
    /// Phi accrual threshold above which a member is flagged in status.
    pub phi_threshold: f64,
    /// Periodic announce to refresh the roster and heal partitions.
    pub announce_interval_ms: u64,
    /// Capped backoff when seeds cannot be reached.
    pub seed_retry_max_ms: u64,
    /// How long a failed member is remembered before being forgotten.
    pub forget_failed_after_s: u64,
}

impl GossipTiming {
    pub fn for_profile(profile: Profile) -> Self {
        match profile {
            Profile::Local => Self {
                probe_period_ms: 200,
                probe_timeout_ms: 100,
                indirect_probes: 3,
                suspicion_mult: 4,
                suspicion_base_ms: 100,
                suspicion_max_factor: 2,
                gossip_interval_ms: 100,
                gossip_fanout: 3,
                max_transmissions: 10,
                awareness_max: AWARENESS_MAX,
                phi_threshold: 8.0,
                announce_interval_ms: 5_000,
                seed_retry_max_ms: 2_000,
                forget_failed_after_s: 3_600,
            },
            Profile::Lan => Self {
                probe_period_ms: 1_000,
                probe_timeout_ms: 500,
                indirect_probes: 3,
                suspicion_mult: 4,
                suspicion_base_ms: 1_000,
                suspicion_max_factor: 3,
                gossip_interval_ms: 200,
                gossip_fanout: 3,
                max_transmissions: 8,
                awareness_max: AWARENESS_MAX,
                phi_threshold: 8.0,
                announce_interval_ms: 30_000,
                seed_retry_max_ms: 10_000,
                forget_failed_after_s: 3_600,
            },
            Profile::Wan => Self {
                probe_period_ms: 2_000,
                probe_timeout_ms: 1_000,
                indirect_probes: 4,
                suspicion_mult: 6,
                suspicion_base_ms: 2_000,
                suspicion_max_factor: 3,
                gossip_interval_ms: 500,
                gossip_fanout: 4,
                max_transmissions: 10,
                awareness_max: AWARENESS_MAX,
                phi_threshold: 8.0,
                announce_interval_ms: 60_000,
                seed_retry_max_ms: 30_000,
                forget_failed_after_s: 3_600,
            },
        }
    }

    /// Lifeguard's minimum suspicion timeout for a cluster of `n` members, in ms.
    pub fn suspicion_min_ms(&self, n: usize) -> u64 {
        let scale = (n.max(1) as f64).log10().max(1.0);
        (self.suspicion_mult as f64 * scale * self.suspicion_base_ms as f64) as u64
    }

    /// Checks the rules that keep the detector sound.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let rule = |ok: bool, key: &str, rule: &str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::new(format!("gossip.{key}"), rule))
            }
        };
        rule(self.probe_period_ms > 0, "probe_period_ms", "must be > 0")?;
        rule(self.probe_timeout_ms > 0, "probe_timeout_ms", "must be > 0")?;
        rule(
            self.probe_timeout_ms < self.probe_period_ms,
            "probe_timeout_ms",
            &format!(
                "must be less than probe_period_ms ({})",
                self.probe_period_ms
            ),
        )?;
        rule(
            (1..=16).contains(&self.indirect_probes),
            "indirect_probes",
            "must be 1..=16",
        )?;
        rule(self.suspicion_mult >= 1, "suspicion_mult", "must be >= 1")?;
        rule(
            self.suspicion_base_ms > 0,
            "suspicion_base_ms",
            "must be > 0",
        )?;
        rule(
            (1..=10).contains(&self.suspicion_max_factor),
            "suspicion_max_factor",
            "must be 1..=10",
        )?;
        rule(
            self.gossip_interval_ms > 0,
            "gossip_interval_ms",
            "must be > 0",
        )?;
        rule(
            (1..=16).contains(&self.gossip_fanout),
            "gossip_fanout",
            "must be 1..=16",
        )?;
        rule(
            (1..=64).contains(&self.max_transmissions),
            "max_transmissions",
            "must be 1..=64",
        )?;
        rule(
            self.awareness_max <= AWARENESS_MAX,
            "awareness_max",
            &format!("must be 0..={AWARENESS_MAX}"),
        )?;
        rule(
            self.phi_threshold.is_finite() && self.phi_threshold > 0.0,
            "phi_threshold",
            "must be a positive number",
        )?;
        rule(
            self.announce_interval_ms > 0,
            "announce_interval_ms",
            "must be > 0",
        )?;
        rule(
            self.seed_retry_max_ms > 0,
            "seed_retry_max_ms",
            "must be > 0",
        )?;
        rule(
            self.forget_failed_after_s > 0,
            "forget_failed_after_s",
            "must be > 0",
        )
    }
}

/// The same fields as [`GossipTiming`], each optional: an override layer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialTiming {
    pub probe_period_ms: Option<u64>,
    pub probe_timeout_ms: Option<u64>,
    pub indirect_probes: Option<u32>,
    pub suspicion_mult: Option<u32>,
    pub suspicion_base_ms: Option<u64>,
    pub suspicion_max_factor: Option<u32>,
    pub gossip_interval_ms: Option<u64>,
    pub gossip_fanout: Option<u32>,
    pub max_transmissions: Option<u32>,
    pub awareness_max: Option<u32>,
    pub phi_threshold: Option<f64>,
    pub announce_interval_ms: Option<u64>,
    pub seed_retry_max_ms: Option<u64>,
    pub forget_failed_after_s: Option<u64>,
}

macro_rules! layer_fields {
    ($dst:expr, $src:expr; $($f:ident),*) => { $( if $src.$f.is_some() { $dst.$f = $src.$f.clone(); } )* };
}

macro_rules! apply_fields {
    ($dst:expr, $src:expr; $($f:ident),*) => { $( if let Some(v) = $src.$f { $dst.$f = v; } )* };
}

impl PartialTiming {
    fn merge(&mut self, over: &PartialTiming) {
        layer_fields!(self, over; probe_period_ms, probe_timeout_ms, indirect_probes,
            suspicion_mult, suspicion_base_ms, suspicion_max_factor, gossip_interval_ms,
            gossip_fanout, max_transmissions, awareness_max, phi_threshold,
            announce_interval_ms, seed_retry_max_ms, forget_failed_after_s);
    }

    fn apply(&self, t: &mut GossipTiming) {
        apply_fields!(t, self; probe_period_ms, probe_timeout_ms, indirect_probes,
            suspicion_mult, suspicion_base_ms, suspicion_max_factor, gossip_interval_ms,
            gossip_fanout, max_transmissions, awareness_max, phi_threshold,
            announce_interval_ms, seed_retry_max_ms, forget_failed_after_s);
    }
}

/// One configuration layer: every key optional. Also the TOML file's schema.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialConfig {
    pub id: Option<String>,
    pub role: Option<String>,
    pub listen: Option<String>,
    pub seeds: Option<Vec<String>>,
    pub profile: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// One or more keys, comma separated; the first seals outgoing packets, all open
    /// incoming ones (for rotation).
    pub cluster_key: Option<String>,
    pub dc: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub cores: Option<u32>,
    /// Managers: form the Raft group once this many managers of the DC have met.
    pub bootstrap_expect: Option<u32>,
    /// Nodes of different cluster ids never talk Raft to each other.
    pub cluster_id: Option<String>,
    /// A directory with `ca.pem`, `<id>.pem` and `<id>-key.pem` (`shoal certs`): the
    /// node serves TLS and talks TLS to the others.
    pub tls_dir: Option<PathBuf>,
    /// Plaintext, unauthenticated and without a cluster key, on purpose (local tests).
    pub insecure: Option<bool>,
    /// A token the node accepts as `admin` until it is revoked (besides the one whose
    /// hash `shoal certs init` left in the TLS directory).
    pub bootstrap_token: Option<String>,
    /// Workers: refuse jobs that run `exec` (commands) altogether.
    pub no_exec: Option<bool>,
    /// `IP:PORT` the others reach this node at (TCP; gossip on PORT+1), when it is not
    /// the listen address (a node listening on 0.0.0.0, or behind NAT).
    pub advertise: Option<String>,
    #[serde(default)]
    pub gossip: PartialTiming,
}

impl PartialConfig {
    /// Reads a TOML config file; unknown keys are refused.
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new("config", format!("cannot read {}: {e}", path.display()))
        })?;
        Self::from_toml_str(&text)
            .map_err(|e| ConfigError::new(format!("config ({})", path.display()), e.rule))
    }

    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::new("config", e.message().to_string()))
    }

    /// Layers `over` on top of `self`: every key `over` sets wins.
    pub fn merge(mut self, over: &PartialConfig) -> Self {
        layer_fields!(self, over; id, role, listen, seeds, profile, data_dir, cluster_key, dc,
            tags, cores, bootstrap_expect, cluster_id, tls_dir, insecure, bootstrap_token,
            no_exec, advertise);
        self.gossip.merge(&over.gossip);
        self
    }
}

/// A 32-byte ChaCha20-Poly1305 key given as 64 hex characters.
pub type ClusterKey = [u8; 32];

/// A complete, validated node configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    pub id: NodeId,
    pub role: Role,
    /// TCP address; port 0 picks a free TCP/UDP port pair at start.
    pub listen: SocketAddr,
    /// Other members' TCP addresses (`host:port`); gossip goes to port + 1.
    pub seeds: Vec<String>,
    pub profile: Profile,
    pub data_dir: PathBuf,
    /// Empty: gossip is unauthenticated.
    pub cluster_keys: Vec<ClusterKey>,
    pub dc: String,
    pub tags: BTreeMap<String, String>,
    pub cores: u32,
    pub timing: GossipTiming,
    pub raft: RaftTimingConfig,
    pub bootstrap_expect: Option<u32>,
    pub cluster_id: String,
    pub security: Security,
    /// Workers: refuse `exec` workflows.
    pub no_exec: bool,
    /// What the others reach this node at; `None`: the listen address, or, for an
    /// unspecified one (0.0.0.0), the address of the interface that routes to the
    /// first seed (found at start).
    pub advertise: Option<SocketAddr>,
}

/// How a node secures its port and its calls to the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Security {
    /// `--insecure`: plaintext, no authentication, gossip unsealed allowed. On purpose.
    Insecure,
    /// TLS with the node's certificate; clients authenticate by certificate or token.
    Tls {
        dir: PathBuf,
        /// Accepted as `admin` until revoked, besides the TLS directory's bootstrap hash.
        bootstrap_token: Option<String>,
    },
}

impl Security {
    pub fn is_insecure(&self) -> bool {
        matches!(self, Security::Insecure)
    }
}

/// What a secure node needs, in words (for errors and help).
pub const SECURE_RULE: &str = "is required unless --insecure: `shoal certs init --dir DIR`, then `shoal certs issue --dir DIR --node ID` for each node";

/// Raft timing per profile (DESIGN §Timing profiles). The election window is when a
/// follower that stopped hearing from its leader starts an election, counted from the
/// last heartbeat (the leader lease included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftTimingConfig {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
}

impl RaftTimingConfig {
    pub fn for_profile(profile: Profile) -> Self {
        let (heartbeat_ms, election_min_ms, election_max_ms) = match profile {
            Profile::Local => (50, 220, 300),
            Profile::Lan => (100, 1_300, 2_000),
            Profile::Wan => (300, 4_000, 6_000),
        };
        Self {
            heartbeat_ms,
            election_min_ms,
            election_max_ms,
        }
    }
}

/// Largest `bootstrap_expect`: Raft groups beyond 9 voters only get slower.
pub const BOOTSTRAP_EXPECT_MAX: u32 = 9;

impl NodeConfig {
    /// Fills unset keys from the profile and checks every rule.
    pub fn resolve(layer: PartialConfig) -> Result<Self, ConfigError> {
        let id_text = layer
            .id
            .ok_or_else(|| ConfigError::new("id", "is required (--id or SHOAL_ID)"))?;
        let id = NodeId::new(id_text).map_err(|e| ConfigError::new("id", e.to_string()))?;
        let role = layer
            .role
            .ok_or_else(|| ConfigError::new("role", "is required (--role or SHOAL_ROLE)"))?
            .parse::<Role>()
            .map_err(|rule| ConfigError::new("role", rule))?;
        let listen = parse_listen(layer.listen.as_deref())?;
        let seeds = layer.seeds.unwrap_or_default();
        for seed in &seeds {
            validate_host_port(seed).map_err(|rule| ConfigError::new("seeds", rule))?;
        }
        let profile = match layer.profile.as_deref() {
            None => Profile::default(),
            Some(p) => p
                .parse()
                .map_err(|rule| ConfigError::new("profile", rule))?,
        };
        let cluster_keys = match layer.cluster_key.as_deref() {
            None | Some("") => Vec::new(),
            Some(text) => parse_cluster_keys(text)?,
        };
        let dc = layer.dc.unwrap_or_else(|| "dc1".into());
        validate_name(&dc).map_err(|e| ConfigError::new("dc", e.to_string()))?;
        let tags = layer.tags.unwrap_or_default();
        validate_tags(&tags).map_err(|e| ConfigError::new("tags", e.to_string()))?;
        let cores = layer.cores.unwrap_or(0);
        if cores > 4096 {
            return Err(ConfigError::new("cores", "must be 0..=4096"));
        }
        let mut timing = GossipTiming::for_profile(profile);
        layer.gossip.apply(&mut timing);
        timing.validate()?;
        let data_dir = layer
            .data_dir
            .unwrap_or_else(|| PathBuf::from(".shoal").join(id.as_str()));
        if let Some(n) = layer.bootstrap_expect {
            if role == Role::Worker {
                return Err(ConfigError::new(
                    "bootstrap_expect",
                    "only managers (one group per DC) and gates (one group) form Raft groups; drop it for workers",
                ));
            }
            if !(1..=BOOTSTRAP_EXPECT_MAX).contains(&n) {
                return Err(ConfigError::new(
                    "bootstrap_expect",
                    format!("must be 1..={BOOTSTRAP_EXPECT_MAX}"),
                ));
            }
        }
        let cluster_id = layer.cluster_id.unwrap_or_else(|| "shoal".into());
        validate_name(&cluster_id).map_err(|e| ConfigError::new("cluster_id", e.to_string()))?;
        let security = resolve_security(&layer.tls_dir, layer.insecure, layer.bootstrap_token)?;
        if !security.is_insecure() && cluster_keys.is_empty() {
            return Err(ConfigError::new(
                "cluster_key",
                "is required unless --insecure (make one with `shoal keygen`)",
            ));
        }
        let advertise = match layer.advertise.as_deref() {
            None => None,
            Some(text) => Some(parse_advertise(text)?),
        };
        let no_exec = layer.no_exec.unwrap_or(false);
        if no_exec && role != Role::Worker {
            return Err(ConfigError::new("no_exec", "is for workers only"));
        }
        Ok(Self {
            id,
            role,
            listen,
            seeds,
            profile,
            data_dir,
            cluster_keys,
            dc,
            tags,
            cores,
            timing,
            raft: RaftTimingConfig::for_profile(profile),
            bootstrap_expect: layer.bootstrap_expect,
            cluster_id,
            security,
            no_exec,
            advertise,
        })
    }
}

fn parse_advertise(text: &str) -> Result<SocketAddr, ConfigError> {
    let addr: SocketAddr = text
        .parse()
        .map_err(|_| ConfigError::new("advertise", format!("`{text}` must be IP:PORT")))?;
    if addr.ip().is_unspecified() {
        return Err(ConfigError::new(
            "advertise",
            "must be an address others can reach, not 0.0.0.0 or ::",
        ));
    }
    if addr.port() == 0 || addr.port() == u16::MAX {
        return Err(ConfigError::new(
            "advertise",
            "port must be 1..=65534 (gossip uses port + 1)",
        ));
    }
    Ok(addr)
}

fn resolve_security(
    tls_dir: &Option<PathBuf>,
    insecure: Option<bool>,
    bootstrap_token: Option<String>,
) -> Result<Security, ConfigError> {
    match (tls_dir, insecure.unwrap_or(false)) {
        (Some(_), true) => Err(ConfigError::new(
            "insecure",
            "cannot be combined with tls_dir: pick one",
        )),
        (None, true) => {
            if bootstrap_token.is_some() {
                return Err(ConfigError::new(
                    "bootstrap_token",
                    "means nothing with --insecure (nothing is authenticated)",
                ));
            }
            Ok(Security::Insecure)
        }
        (None, false) => Err(ConfigError::new("tls_dir", SECURE_RULE)),
        (Some(dir), false) => {
            if let Some(t) = &bootstrap_token {
                let printable = t.bytes().all(|b| b.is_ascii_graphic());
                if t.len() < 16 || t.len() > 128 || !printable {
                    return Err(ConfigError::new(
                        "bootstrap_token",
                        "must be 16-128 printable ASCII characters without spaces",
                    ));
                }
            }
            Ok(Security::Tls {
                dir: dir.clone(),
                bootstrap_token,
            })
        }
    }
}

fn parse_listen(text: Option<&str>) -> Result<SocketAddr, ConfigError> {
    let text = text.ok_or_else(|| ConfigError::new("listen", "is required (--listen IP:PORT)"))?;
    let addr: SocketAddr = text
        .parse()
        .map_err(|_| ConfigError::new("listen", format!("`{text}` must be IP:PORT")))?;
    if addr.port() == u16::MAX {
        return Err(ConfigError::new(
            "listen",
            "port must be at most 65534 (gossip uses port + 1)",
        ));
    }
    Ok(addr)
}

/// `host:port` with a port in 1..=65534 (gossip uses port + 1).
pub fn validate_host_port(text: &str) -> Result<(), String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("`{text}` must be HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("`{text}`: port must be a number 1..=65534"))?;
    if host.is_empty() || port == 0 || port == u16::MAX {
        return Err(format!("`{text}` must be HOST:PORT with port 1..=65534"));
    }
    Ok(())
}

/// Parses comma-separated 64-hex-character keys.
pub fn parse_cluster_keys(text: &str) -> Result<Vec<ClusterKey>, ConfigError> {
    text.split(',')
        .map(|k| {
            parse_hex_key(k.trim()).ok_or_else(|| {
                ConfigError::new(
                    "cluster_key",
                    "must be 64 hex characters (32 bytes), comma separated for rotation; \
                     `shoal keygen` makes one",
                )
            })
        })
        .collect()
}

fn parse_hex_key(text: &str) -> Option<ClusterKey> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

/// Formats a key as the 64 hex characters `parse_cluster_keys` reads.
pub fn format_hex_key(key: &ClusterKey) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// The largest SWIM payload that fits a gossip datagram once sealed.
pub const fn swim_payload_bytes_max() -> usize {
    GOSSIP_PACKET_BYTES_MAX - GOSSIP_ENVELOPE_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> PartialConfig {
        PartialConfig {
            id: Some("m1".into()),
            role: Some("manager".into()),
            listen: Some("127.0.0.1:9000".into()),
            insecure: Some(true),
            ..Default::default()
        }
    }

    fn err(layer: PartialConfig) -> String {
        NodeConfig::resolve(layer).unwrap_err().to_string()
    }

    #[test]
    fn defaults_come_from_the_profile() {
        let cfg = NodeConfig::resolve(base()).unwrap();
        assert_eq!(cfg.profile, Profile::Lan);
        assert_eq!(cfg.timing, GossipTiming::for_profile(Profile::Lan));
        assert_eq!(cfg.dc, "dc1");
        assert_eq!(cfg.data_dir, PathBuf::from(".shoal/m1"));
        let local = NodeConfig::resolve(PartialConfig {
            profile: Some("local".into()),
            ..base()
        })
        .unwrap();
        assert_eq!(local.timing.probe_period_ms, 200);
        assert_eq!(local.timing.probe_timeout_ms, 100);
    }

    #[test]
    fn messages_name_the_key_and_the_rule() {
        let e = err(PartialConfig {
            id: Some(String::new()),
            ..base()
        });
        assert_eq!(
            e,
            "invalid config: id: must be 1-64 characters of [A-Za-z0-9_.-]"
        );
        let e = err(PartialConfig {
            role: Some("director".into()),
            ..base()
        });
        assert_eq!(
            e,
            "invalid config: role: must be one of manager, gate, worker"
        );
        let e = err(PartialConfig {
            listen: Some("localhost".into()),
            ..base()
        });
        assert_eq!(e, "invalid config: listen: `localhost` must be IP:PORT");
        let mut layer = base();
        layer.gossip.probe_timeout_ms = Some(1_000);
        assert_eq!(
            err(layer),
            "invalid config: gossip.probe_timeout_ms: must be less than probe_period_ms (1000)"
        );
        let e = err(PartialConfig {
            seeds: Some(vec!["10.0.0.1".into()]),
            ..base()
        });
        assert!(
            e.starts_with("invalid config: seeds: `10.0.0.1` must be HOST:PORT"),
            "{e}"
        );
        let e = err(PartialConfig {
            cluster_key: Some("abc".into()),
            ..base()
        });
        assert!(
            e.starts_with("invalid config: cluster_key: must be 64 hex"),
            "{e}"
        );
        let e = err(PartialConfig {
            listen: Some("127.0.0.1:65535".into()),
            ..base()
        });
        assert!(e.contains("at most 65534"), "{e}");
    }

    #[test]
    fn bootstrap_expect_is_for_managers() {
        let ok = NodeConfig::resolve(PartialConfig {
            bootstrap_expect: Some(3),
            ..base()
        })
        .unwrap();
        assert_eq!(ok.bootstrap_expect, Some(3));
        assert_eq!(ok.cluster_id, "shoal");
        let e = err(PartialConfig {
            role: Some("worker".into()),
            bootstrap_expect: Some(3),
            ..base()
        });
        assert!(
            e.starts_with(
                "invalid config: bootstrap_expect: only managers (one group per DC) and gates"
            ),
            "{e}"
        );
        let e = err(PartialConfig {
            bootstrap_expect: Some(0),
            ..base()
        });
        assert_eq!(e, "invalid config: bootstrap_expect: must be 1..=9");
    }

    #[test]
    fn later_layers_win() {
        let file = PartialConfig::from_toml_str(
            "id = \"from-file\"\nrole = \"worker\"\nlisten = \"127.0.0.1:1\"\n\
             insecure = true\n[gossip]\nprobe_period_ms = 900\nprobe_timeout_ms = 300\n",
        )
        .unwrap();
        let flags = PartialConfig {
            id: Some("from-flag".into()),
            gossip: PartialTiming {
                probe_timeout_ms: Some(400),
                ..Default::default()
            },
            ..Default::default()
        };
        let cfg = NodeConfig::resolve(file.merge(&flags)).unwrap();
        assert_eq!(cfg.id.as_str(), "from-flag");
        assert_eq!(cfg.role, Role::Worker);
        assert_eq!(cfg.timing.probe_period_ms, 900);
        assert_eq!(cfg.timing.probe_timeout_ms, 400);
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let e = PartialConfig::from_toml_str("idd = \"x\"").unwrap_err();
        assert_eq!(e.key, "config");
        assert!(e.rule.contains("unknown field"), "{}", e.rule);
    }

    #[test]
    fn keys_roundtrip_and_rotate() {
        let k1 = [7u8; 32];
        let k2 = [9u8; 32];
        let text = format!("{},{}", format_hex_key(&k1), format_hex_key(&k2));
        assert_eq!(parse_cluster_keys(&text).unwrap(), vec![k1, k2]);
    }

    #[test]
    fn suspicion_scales_with_log_n() {
        let t = GossipTiming::for_profile(Profile::Lan);
        assert_eq!(t.suspicion_min_ms(1), 4_000);
        assert_eq!(t.suspicion_min_ms(10), 4_000);
        assert_eq!(t.suspicion_min_ms(100), 8_000);
    }

    /// Secure by default: a node needs a TLS directory and a cluster key unless it is
    /// told `--insecure`, and the two modes do not mix.
    #[test]
    fn security_is_required_unless_insecure() {
        let secure = |tls: Option<&str>, key: Option<&str>| PartialConfig {
            insecure: None,
            tls_dir: tls.map(PathBuf::from),
            cluster_key: key.map(str::to_string),
            ..base()
        };
        let key = "11".repeat(32);
        let e = err(secure(None, Some(&key)));
        assert!(
            e.starts_with("invalid config: tls_dir: is required unless --insecure"),
            "{e}"
        );
        let e = err(secure(Some("/tls"), None));
        assert!(
            e.starts_with("invalid config: cluster_key: is required unless --insecure"),
            "{e}"
        );
        let ok = NodeConfig::resolve(secure(Some("/tls"), Some(&key))).unwrap();
        assert_eq!(
            ok.security,
            Security::Tls {
                dir: "/tls".into(),
                bootstrap_token: None
            }
        );
        let e = err(PartialConfig {
            tls_dir: Some("/tls".into()),
            ..base()
        });
        assert!(
            e.contains("insecure: cannot be combined with tls_dir"),
            "{e}"
        );
        let e = err(PartialConfig {
            bootstrap_token: Some("short".into()),
            ..secure(Some("/tls"), Some(&key))
        });
        assert!(e.contains("bootstrap_token: must be 16-128"), "{e}");
        assert!(NodeConfig::resolve(base()).unwrap().security.is_insecure());
        let e = err(PartialConfig {
            no_exec: Some(true),
            ..base()
        });
        assert!(e.contains("no_exec: is for workers only"), "{e}");
        for (bad, rule) in [
            ("0.0.0.0:9000", "not 0.0.0.0"),
            ("10.0.0.1", "must be IP:PORT"),
            ("10.0.0.1:0", "port must be"),
        ] {
            let e = err(PartialConfig {
                advertise: Some(bad.into()),
                ..base()
            });
            assert!(e.contains("advertise: ") && e.contains(rule), "{bad}: {e}");
        }
    }
}

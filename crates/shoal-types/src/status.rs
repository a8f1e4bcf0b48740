//! The `/v1/status` document (DESIGN §Status), shared by the node that serves it and
//! the clients that render it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::MemberState;

/// `node` section: the answering node itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSection {
    pub id: String,
    pub role: String,
    pub dc: String,
    pub addr: String,
    pub state: String,
    pub uptime_s: f64,
    pub version: String,
    /// `tls`, or `insecure` (plaintext, unauthenticated: `--insecure`).
    #[serde(default)]
    pub security: String,
}

/// One row of `members`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberRow {
    pub id: String,
    /// Empty until the member's metadata arrived.
    pub role: String,
    pub dc: String,
    pub addr: String,
    pub state: MemberState,
    pub phi: f64,
    pub tags: BTreeMap<String, String>,
    pub incarnation: u16,
    #[serde(default)]
    pub uptime_s: Option<f64>,
    #[serde(default)]
    pub leader: Option<String>,
    #[serde(default)]
    pub lifecycle: Option<String>,
    #[serde(default)]
    pub cores: u32,
    /// Cores in use (workers; from their gossip metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_cores: Option<u32>,
    /// Chat clients subscribed through it (managers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_clients: Option<u32>,
    /// Chat messages stored, as it has applied them (managers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_messages: Option<u64>,
    #[serde(default)]
    pub version: Option<String>,
    /// This row is the answering node.
    #[serde(default)]
    pub is_self: bool,
}

/// `gossip` section: this node's view of the detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GossipSection {
    pub awareness: u32,
    pub phi_threshold: f64,
    pub sealed: bool,
    pub alive: usize,
    pub suspect: usize,
    pub failed: usize,
    pub left: usize,
}

/// The whole document. `raft` (and later `jobs`, `chat`, …) join as optional sections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusDoc {
    pub node: NodeSection,
    pub members: Vec<MemberRow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gossip: Option<GossipSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<serde_json::Value>,
}

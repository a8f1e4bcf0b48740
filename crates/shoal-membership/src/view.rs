//! What the membership layer tells the rest of the node: member views, events, counters.

use std::{collections::BTreeMap, net::SocketAddr};

use serde::Serialize;
use shoal_types::{Lifecycle, MemberState, Role};

/// One member as this node sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberInfo {
    pub id: String,
    /// `None` until the member's metadata arrived.
    pub role: Option<Role>,
    pub dc: Option<String>,
    /// TCP address (gRPC + HTTP admin).
    pub addr: String,
    pub gossip_addr: SocketAddr,
    pub state: MemberState,
    pub phi: f64,
    pub tags: BTreeMap<String, String>,
    pub incarnation: u16,
    pub lifecycle: Option<Lifecycle>,
    pub version: Option<String>,
    /// Wall-clock start of the member, from its metadata (unix ms).
    pub started_unix_ms: Option<u64>,
    pub leader_hint: Option<String>,
    /// The term of that leader: of several claims, the highest term is the newest.
    pub leader_term: u64,
    pub cores: u32,
    /// Share of its cores in use, in ‰ (workers publish it).
    pub load_permille: u32,
    pub chat_clients: u32,
    pub chat_messages: u64,
    pub is_self: bool,
}

/// Membership events, as a library stream, `GET /v1/events` and `shoal events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EventKind {
    NodeJoined,
    NodeLeft,
    NodeFailed,
    NodeRecovered,
    /// Tags, lifecycle or liveness (alive ⇄ suspect) changed.
    NodeUpdated,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MembershipEvent {
    pub kind: EventKind,
    pub member: MemberInfo,
}

/// Counters, exported as metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    pub probes_sent: u64,
    pub probes_failed: u64,
    pub suspicions_raised: u64,
    pub suspicions_refuted: u64,
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub timers_late: u64,
    /// Dropped inbound packets by reason (see `wire::DropReason::as_str`).
    pub dropped: BTreeMap<&'static str, u64>,
}

/// A consistent picture of membership at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub me: MemberInfo,
    /// Every known member, this node included, sorted by role then id.
    pub members: Vec<MemberInfo>,
    pub awareness: u32,
    pub phi_threshold: f64,
    pub sealed: bool,
    pub stats: Stats,
}

impl Snapshot {
    pub fn count(&self, state: MemberState) -> usize {
        self.members.iter().filter(|m| m.state == state).count()
    }
}

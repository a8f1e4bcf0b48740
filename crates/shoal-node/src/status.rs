//! The `/v1/status` document (DESIGN §Status) and the member rows of `/v1/members`.

use std::time::{SystemTime, UNIX_EPOCH};

use shoal_membership::{MemberInfo, Snapshot};
use shoal_types::{
    MemberState,
    status::{GossipSection, MemberRow, NodeSection, StatusDoc},
};

/// Wall-clock now in unix ms.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn member_row(m: &MemberInfo, now_ms: u64) -> MemberRow {
    MemberRow {
        id: m.id.clone(),
        role: m.role.map(|r| r.to_string()).unwrap_or_default(),
        dc: m.dc.clone().unwrap_or_default(),
        addr: m.addr.clone(),
        state: m.state,
        phi: m.phi,
        tags: m.tags.clone(),
        incarnation: m.incarnation,
        uptime_s: m
            .started_unix_ms
            .filter(|_| matches!(m.state, MemberState::Alive | MemberState::Suspect))
            .map(|s| round1(now_ms.saturating_sub(s) as f64 / 1000.0)),
        // A failed or departed member's last belief about the leader is stale.
        leader: m
            .leader_hint
            .clone()
            .filter(|_| matches!(m.state, MemberState::Alive | MemberState::Suspect)),
        lifecycle: m.lifecycle.map(|l| l.to_string()),
        cores: m.cores,
        version: m.version.clone(),
        is_self: m.is_self,
    }
}

pub fn status_doc(snap: &Snapshot, now_ms: u64) -> StatusDoc {
    let me = &snap.me;
    StatusDoc {
        node: NodeSection {
            id: me.id.clone(),
            role: me.role.map(|r| r.to_string()).unwrap_or_default(),
            dc: me.dc.clone().unwrap_or_default(),
            addr: me.addr.clone(),
            state: me.lifecycle.map(|l| l.to_string()).unwrap_or_default(),
            uptime_s: round1(
                now_ms.saturating_sub(me.started_unix_ms.unwrap_or(now_ms)) as f64 / 1000.0,
            ),
            version: me.version.clone().unwrap_or_default(),
        },
        members: snap.members.iter().map(|m| member_row(m, now_ms)).collect(),
        raft: None,
        gossip: Some(GossipSection {
            awareness: snap.awareness,
            phi_threshold: snap.phi_threshold,
            sealed: snap.sealed,
            alive: snap.count(MemberState::Alive),
            suspect: snap.count(MemberState::Suspect),
            failed: snap.count(MemberState::Failed),
            left: snap.count(MemberState::Left),
        }),
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

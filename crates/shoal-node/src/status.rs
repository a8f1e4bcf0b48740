//! The `/v1/status` document (DESIGN §Status) and the member rows of `/v1/members`.

use std::{
    collections::BTreeMap,
    time::{SystemTime, UNIX_EPOCH},
};

use shoal_membership::{MemberInfo, Snapshot};
use shoal_types::{
    MemberState, Role,
    status::{GossipSection, MemberRow, NodeSection, StatusDoc},
};

/// Wall-clock now in unix ms.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn member_row(m: &MemberInfo, now_ms: u64) -> MemberRow {
    let alive = matches!(m.state, MemberState::Alive | MemberState::Suspect);
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
        used_cores: (m.role == Some(Role::Worker)
            && m.cores > 0
            && matches!(m.state, MemberState::Alive | MemberState::Suspect))
        .then(|| (m.load_permille * m.cores + 500) / 1000),
        chat_clients: (m.role == Some(Role::Manager) && alive).then_some(m.chat_clients),
        chat_messages: (m.role == Some(Role::Manager) && alive).then_some(m.chat_messages),
        version: m.version.clone(),
        is_self: m.is_self,
    }
}

/// The leader of each DC's group as gossip tells it: of the live managers' claims, the
/// one with the highest term (an older term is a deposed leader's).
pub fn dc_leaders(snap: &Snapshot) -> BTreeMap<String, (String, u64)> {
    let mut leaders: BTreeMap<String, (String, u64)> = BTreeMap::new();
    for m in &snap.members {
        let (Some(Role::Manager), Some(dc), Some(hint)) = (m.role, &m.dc, &m.leader_hint) else {
            continue;
        };
        if !matches!(m.state, MemberState::Alive | MemberState::Suspect) {
            continue;
        }
        let newer = leaders.get(dc).is_none_or(|(_, t)| m.leader_term > *t);
        if newer {
            leaders.insert(dc.clone(), (hint.clone(), m.leader_term));
        }
    }
    leaders
}

/// The TCP addresses of `dc`'s live managers, the leader first.
pub fn dc_managers(snap: &Snapshot, dc: &str) -> Vec<String> {
    let leader = dc_leaders(snap).get(dc).map(|(id, _)| id.clone());
    let mut v: Vec<(bool, String)> = snap
        .members
        .iter()
        .filter(|m| {
            m.role == Some(Role::Manager)
                && m.dc.as_deref() == Some(dc)
                && matches!(m.state, MemberState::Alive | MemberState::Suspect)
        })
        .map(|m| (leader.as_deref() != Some(m.id.as_str()), m.addr.clone()))
        .collect();
    v.sort();
    v.into_iter().map(|(_, a)| a).collect()
}

pub fn status_doc(snap: &Snapshot, now_ms: u64) -> StatusDoc {
    let me = &snap.me;
    let leaders = dc_leaders(snap);
    let mut members: Vec<MemberRow> = snap.members.iter().map(|m| member_row(m, now_ms)).collect();
    // Gates and workers do not take part in a group: show their DC's leader.
    for (row, m) in members.iter_mut().zip(&snap.members) {
        if row.leader.is_none()
            && m.role.is_some_and(|r| r != Role::Manager)
            && matches!(m.state, MemberState::Alive | MemberState::Suspect)
        {
            row.leader =
                m.dc.as_ref()
                    .and_then(|dc| leaders.get(dc))
                    .map(|l| l.0.clone());
        }
    }
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
            // Filled by the admin route, which knows how the node serves.
            security: String::new(),
        },
        members,
        raft: None,
        jobs: None,
        chat: None,
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

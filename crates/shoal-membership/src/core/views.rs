//! Keeping the views in step with foca: after every step the core compares foca's
//! members with its own table, turns each change into an event (joined, updated,
//! suspect, failed, left, recovered), asks for the metadata it lacks, and builds the
//! snapshot callers read.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use foca::State;
use shoal_types::{Lifecycle, MemberState, NodeId};

use super::{META_REQUEST_EVERY, MembershipCore, PHI_WINDOW, View, round2};
use crate::{
    Effect,
    identity::GossipId,
    phi::PhiDetector,
    view::{EventKind, MemberInfo, MembershipEvent, Snapshot},
    wire::Kind,
};

impl MembershipCore {
    /// Compares foca's member list with our views; emits events for what changed.
    pub(super) fn sync_views(&mut self, now: Duration) {
        let mut best: BTreeMap<NodeId, (GossipId, State, u16)> = BTreeMap::new();
        for m in self.foca.iter_membership_state() {
            let id = m.id();
            let rank = |s: State| match s {
                State::Alive => 2,
                State::Suspect => 1,
                State::Down => 0,
            };
            let replace = best
                .get(&id.id)
                .is_none_or(|(_, s, _)| rank(m.state()) > rank(*s));
            if replace {
                best.insert(id.id.clone(), (id.clone(), m.state(), m.incarnation()));
            }
        }
        let changed_meta = self.table.lock().take_changed();
        let gone: Vec<NodeId> = self
            .views
            .keys()
            .filter(|id| !best.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            // foca forgot it (down long enough): so does every table keyed by it.
            if let Some(view) = self.views.remove(&id) {
                self.left.remove(&view.gossip.addr);
                self.suspicions.remove(&view.gossip.addr);
            }
            self.table.lock().forget(&id);
        }
        for (id, (gossip, state, incarnation)) in best {
            self.sync_one(now, id, gossip, state, incarnation);
        }
        for id in changed_meta {
            // Metadata of a member already reported left or failed is history: a
            // leaving member's last push may arrive after its departure, and must not
            // read as an update of a member that is gone.
            let live = self
                .views
                .get(&id)
                .is_some_and(|v| !matches!(v.state, MemberState::Left | MemberState::Failed));
            if id != self.meta.id && live {
                self.emit(EventKind::NodeUpdated, &id, now);
            }
        }
        self.request_missing_meta(now);
    }

    pub(super) fn sync_one(
        &mut self,
        now: Duration,
        id: NodeId,
        gossip: GossipId,
        state: State,
        inc: u16,
    ) {
        let next = match state {
            State::Alive => MemberState::Alive,
            State::Suspect => MemberState::Suspect,
            State::Down if self.has_left(&id, &gossip) => MemberState::Left,
            State::Down => MemberState::Failed,
        };
        let previous = self.views.get(&id).map(|v| (v.state, v.gossip.bump));
        let view = self.views.entry(id.clone()).or_insert_with(|| View {
            gossip: gossip.clone(),
            state: next,
            incarnation: inc,
            phi: PhiDetector::with_pause(
                PHI_WINDOW,
                self.timing.probe_period_ms as f64 / 2.0,
                self.timing.probe_period_ms as f64 * 2.0,
            ),
            meta_requested: None,
        });
        view.gossip = gossip.clone();
        view.state = next;
        view.incarnation = inc;
        let kind = match (previous.map(|p| p.0), next) {
            (None, MemberState::Alive | MemberState::Suspect) => Some(EventKind::NodeJoined),
            (None, _) => None,
            (Some(a), b) if a == b => None,
            (Some(MemberState::Failed), MemberState::Alive | MemberState::Suspect) => {
                Some(EventKind::NodeRecovered)
            }
            (Some(MemberState::Left), MemberState::Alive | MemberState::Suspect) => {
                Some(EventKind::NodeJoined)
            }
            (Some(_), MemberState::Failed) => Some(EventKind::NodeFailed),
            (Some(_), MemberState::Left) => Some(EventKind::NodeLeft),
            (Some(_), _) => Some(EventKind::NodeUpdated),
        };
        if previous.map(|p| p.0) == Some(MemberState::Suspect)
            && next == MemberState::Alive
            && let Some(active) = self.suspicions.remove(&gossip.addr)
        {
            self.timers.cancel(active.key);
            self.stats.suspicions_refuted += 1;
        }
        if next != MemberState::Alive && next != MemberState::Suspect {
            self.suspicions.remove(&gossip.addr);
        }
        if let Some(kind) = kind {
            self.emit(kind, &id, now);
        }
    }

    pub(super) fn has_left(&self, id: &NodeId, gossip: &GossipId) -> bool {
        self.left.get(&gossip.addr) == Some(&gossip.bump)
            || self
                .table
                .lock()
                .get(id)
                .is_some_and(|m| m.lifecycle == Lifecycle::Leaving)
    }

    pub(super) fn request_missing_meta(&mut self, now: Duration) {
        let mut asks = Vec::new();
        {
            let table = self.table.lock();
            for (id, view) in self.views.iter_mut() {
                let alive = matches!(view.state, MemberState::Alive | MemberState::Suspect);
                let due = view
                    .meta_requested
                    .is_none_or(|at| now.saturating_sub(at) >= META_REQUEST_EVERY);
                if alive && due && table.get(id).is_none() {
                    view.meta_requested = Some(now);
                    asks.push(view.gossip.addr);
                }
            }
        }
        for addr in asks {
            // Unsealed, a request is padded to the size of the answer it asks for, so
            // answering never amplifies (see `handle_packet`).
            let pad = if self.sealer.is_sealed() {
                0
            } else {
                shoal_types::limits::META_BYTES_MAX
            };
            self.send_sealed(addr, Kind::MetaRequest, &vec![0u8; pad]);
        }
    }

    pub(super) fn emit(&mut self, kind: EventKind, id: &NodeId, now: Duration) {
        if let Some(info) = self.member_info(id, now) {
            self.effects
                .push(Effect::Event(MembershipEvent { kind, member: info }));
        }
    }

    pub(super) fn member_info(&self, id: &NodeId, now: Duration) -> Option<MemberInfo> {
        let view = self.views.get(id)?;
        let table = self.table.lock();
        let meta = table.get(id);
        let tcp = meta.map_or_else(
            || {
                SocketAddr::new(
                    view.gossip.addr.ip(),
                    view.gossip.addr.port().saturating_sub(1),
                )
            },
            |m| m.tcp_addr,
        );
        Some(MemberInfo {
            id: id.to_string(),
            role: meta.map(|m| m.role),
            dc: meta.map(|m| m.dc.clone()),
            addr: tcp.to_string(),
            gossip_addr: view.gossip.addr,
            state: view.state,
            phi: round2(view.phi.phi(now)),
            tags: meta.map(|m| m.tags.clone()).unwrap_or_default(),
            incarnation: view.incarnation,
            lifecycle: meta.map(|m| m.lifecycle),
            version: meta.map(|m| m.build.clone()),
            started_unix_ms: meta.map(|m| m.started_unix_ms),
            leader_hint: meta.and_then(|m| m.leader_hint.clone()),
            leader_term: meta.map_or(0, |m| m.leader_term),
            cores: meta.map_or(0, |m| m.cores),
            load_permille: meta.map_or(0, |m| m.load_permille),
            chat_clients: meta.map_or(0, |m| m.chat_clients),
            chat_messages: meta.map_or(0, |m| m.chat_messages),
            is_self: false,
        })
    }

    pub(super) fn self_info(&self) -> MemberInfo {
        let m = &self.meta;
        MemberInfo {
            id: m.id.to_string(),
            role: Some(m.role),
            dc: Some(m.dc.clone()),
            addr: m.tcp_addr.to_string(),
            gossip_addr: self.me.addr,
            state: if m.lifecycle == Lifecycle::Leaving {
                MemberState::Left
            } else {
                MemberState::Alive
            },
            phi: 0.0,
            tags: m.tags.clone(),
            incarnation: 0,
            lifecycle: Some(m.lifecycle),
            version: Some(m.build.clone()),
            started_unix_ms: Some(m.started_unix_ms),
            leader_hint: m.leader_hint.clone(),
            leader_term: m.leader_term,
            cores: m.cores,
            load_permille: m.load_permille,
            chat_clients: m.chat_clients,
            chat_messages: m.chat_messages,
            is_self: true,
        }
    }

    /// Every member's view now, this node included.
    pub fn snapshot(&self, now: Duration) -> Snapshot {
        let me = self.self_info();
        let mut members: Vec<MemberInfo> = std::iter::once(me.clone())
            .chain(self.views.keys().filter_map(|id| self.member_info(id, now)))
            .collect();
        members.sort_by(|a, b| (a.role, &a.id).cmp(&(b.role, &b.id)));
        Snapshot {
            me,
            members,
            awareness: self.awareness.score(),
            phi_threshold: self.timing.phi_threshold,
            sealed: self.sealer.is_sealed(),
            stats: self.stats.clone(),
        }
    }

    /// State of one member by id (tests and invariant checks).
    pub fn member_state(&self, id: &str) -> Option<MemberState> {
        self.views
            .iter()
            .find(|(k, _)| k.as_str() == id)
            .map(|(_, v)| v.state)
    }
}

//! The membership core: foca plus Lifeguard, phi accrual, metadata and the envelope.
//!
//! Sans-IO: every entry point takes `now` (time since an epoch the caller picks) and
//! leaves [`Effect`]s to drain. It never reads a clock, never touches a socket and draws
//! randomness only from the seeded rng it was given, so a simulation replays exactly.
//!
//! ```text
//!  packet ──open──► Swim ──observe (probes, suspicions, phi)──► foca.handle_data ─┐
//!                   MetaPush / MetaRequest ──► meta table                         │
//!  timers (due order, stretched by awareness) ──► foca.handle_timer ──────────────┤
//!                                                                                 ▼
//!                 drain foca's runtime: seal sends, schedule timers, scan views → Effects
//! ```

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    num::{NonZeroU8, NonZeroUsize},
    time::Duration,
};

use bytes::Buf;
use foca::{
    AccumulatingRuntime, Codec, Foca, Member, Message, OwnedNotification, PeriodicParams,
    PostcardCodec, State, Timer,
};
use rand::{SeedableRng, rngs::StdRng};
use shoal_types::{
    GossipTiming, Lifecycle, MemberState, NodeId, NodeMeta,
    config::{ClusterKey, swim_payload_bytes_max},
    meta::{validate_tag, validate_tags},
};

use crate::{
    identity::GossipId,
    lifeguard::{Awareness, Suspicion},
    meta_table::{MetaBroadcasts, SharedMeta, decode_meta, encode_meta},
    phi::PhiDetector,
    timers::{TimerKey, TimerQueue},
    view::{MembershipEvent, Stats},
    wire::{DropReason, Kind, Sealer},
};

mod suspicion;
mod views;

type SwimFoca = Foca<GossipId, PostcardCodec, StdRng, MetaBroadcasts>;

/// Phi history length.
const PHI_WINDOW: usize = 100;
/// A member whose metadata we lack is asked for it at most this often.
const META_REQUEST_EVERY: Duration = Duration::from_millis(500);
/// A declared failure is sent directly to at most this many live members.
const DOWN_FANOUT_MAX: usize = 64;
/// We answer one metadata request per source at most this often (no amplification).
const META_REPLY_EVERY: Duration = Duration::from_millis(250);

/// Everything the core needs to start.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub meta: NodeMeta,
    pub gossip_addr: SocketAddr,
    pub timing: GossipTiming,
    pub keys: Vec<ClusterKey>,
    /// Seeds the rng (probe order, nonces).
    pub rng_seed: u64,
    /// Identity bump: a restarted node must use a larger one than its previous run
    /// (the shell uses the wall-clock start in ms).
    pub bump: u64,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Send { to: SocketAddr, bytes: Vec<u8> },
    Event(MembershipEvent),
}

/// A command refused by the core; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// A tag key or value breaks the rules (the error names which and why).
    #[error(transparent)]
    Tag(#[from] shoal_types::meta::TagError),
    #[error("metadata would be too large: {0}")]
    MetaTooBig(String),
    /// The membership agent has stopped (the node is shutting down).
    #[error("the membership agent has stopped")]
    Stopped,
    /// A keyring change was refused; the keys are unchanged.
    #[error(transparent)]
    Key(#[from] crate::keyring::KeyError),
}

#[derive(Debug)]
enum CoreTimer {
    Foca(Timer<GossipId>),
    JoinRetry,
    /// Repeat the directed suspicion notice to this member while it stays suspected.
    SuspicionNotice(GossipId, u16),
}

#[derive(Debug)]
struct View {
    gossip: GossipId,
    state: MemberState,
    incarnation: u16,
    phi: PhiDetector,
    meta_requested: Option<Duration>,
}

#[derive(Debug)]
struct PendingProbe {
    addr: SocketAddr,
    number: u8,
    acked: bool,
}

#[derive(Debug)]
struct ActiveSuspicion {
    suspicion: Suspicion,
    incarnation: u16,
    key: TimerKey,
}

/// The membership state machine of one node.
pub struct MembershipCore {
    foca: SwimFoca,
    runtime: AccumulatingRuntime<GossipId>,
    me: GossipId,
    meta: NodeMeta,
    table: SharedMeta,
    timing: GossipTiming,
    sealer: Sealer,
    keyring: crate::keyring::Keyring,
    rng: StdRng,
    timers: TimerQueue<CoreTimer>,
    awareness: Awareness,
    views: BTreeMap<NodeId, View>,
    probe: Option<PendingProbe>,
    /// Our incarnation as foca last sent it (mirrored: foca does not expose it).
    incarnation: u16,
    suspicions: HashMap<SocketAddr, ActiveSuspicion>,
    left: HashMap<SocketAddr, u64>,
    meta_replies: HashMap<SocketAddr, Duration>,
    seeds: Vec<SocketAddr>,
    join_backoff: Option<Duration>,
    stats: Stats,
    effects: Vec<Effect>,
}

impl std::fmt::Debug for MembershipCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MembershipCore")
            .field("me", &self.me)
            .finish()
    }
}

impl MembershipCore {
    pub fn new(config: CoreConfig, now: Duration) -> Result<Self, CoreError> {
        validate_tags(&config.meta.tags)?;
        encode_meta(&config.meta).map_err(|e| CoreError::MetaTooBig(e.to_string()))?;
        let me = GossipId::new(config.meta.id.clone(), config.gossip_addr, config.bump);
        let table = SharedMeta::default();
        table.lock().offer(config.meta.clone());
        table.lock().take_changed();
        let handler = MetaBroadcasts {
            table: table.clone(),
        };
        let mut rng = StdRng::seed_from_u64(config.rng_seed);
        let foca_rng = StdRng::seed_from_u64(rand::Rng::next_u64(&mut rng));
        let foca = Foca::with_custom_broadcast(
            me.clone(),
            foca_config(&config.timing, 1),
            foca_rng,
            PostcardCodec,
            handler,
        );
        let mut core = Self {
            foca,
            runtime: AccumulatingRuntime::new(),
            me,
            meta: config.meta,
            table,
            awareness: Awareness::new(config.timing.awareness_max),
            sealer: Sealer::new(&config.keys),
            keyring: crate::keyring::Keyring::new(config.keys.clone()),
            timing: config.timing,
            rng,
            timers: TimerQueue::default(),
            views: BTreeMap::new(),
            probe: None,
            incarnation: 0,
            suspicions: HashMap::new(),
            left: HashMap::new(),
            meta_replies: HashMap::new(),
            seeds: Vec::new(),
            join_backoff: None,
            stats: Stats::default(),
            effects: Vec::new(),
        };
        core.pump(now);
        Ok(core)
    }

    pub fn identity(&self) -> &GossipId {
        &self.me
    }

    pub fn meta(&self) -> &NodeMeta {
        &self.meta
    }

    pub fn awareness(&self) -> u32 {
        self.awareness.score()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Effects produced since the last drain, in order.
    pub fn drain_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// When the next timer is due, if any.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.timers.next_due()
    }

    /// Adds `seeds` (gossip addresses) and joins through any of them, retrying with
    /// capped backoff while no member answers.
    pub fn join(&mut self, seeds: Vec<SocketAddr>, now: Duration) {
        for seed in seeds {
            if seed != self.me.addr && !self.seeds.contains(&seed) {
                self.seeds.push(seed);
            }
        }
        if self.seeds.is_empty() {
            return;
        }
        self.join_backoff = None;
        self.join_round(now);
    }

    fn join_round(&mut self, now: Duration) {
        if self.foca.num_members() > 0 || self.seeds.is_empty() {
            self.join_backoff = None;
            return;
        }
        for seed in self.seeds.clone() {
            let _ = self.foca.announce(GossipId::seed(seed), &mut self.runtime);
        }
        let first = Duration::from_millis(self.timing.probe_period_ms);
        let cap = Duration::from_millis(self.timing.seed_retry_max_ms);
        let backoff = shoal_types::backoff::capped_doubling(self.join_backoff, first, cap);
        self.join_backoff = Some(backoff);
        self.timers.schedule(now + backoff, CoreTimer::JoinRetry);
        self.pump(now);
    }

    /// Handles one datagram from `from`.
    pub fn handle_packet(&mut self, now: Duration, from: SocketAddr, packet: &[u8]) {
        self.set_clock(now);
        self.stats.packets_in += 1;
        self.stats.bytes_in += packet.len() as u64;
        let (kind, payload) = match self.sealer.open(packet) {
            Ok(opened) => opened,
            Err(reason) => return self.drop_packet(reason),
        };
        match kind {
            Kind::Swim => self.handle_swim(now, &payload),
            Kind::MetaPush => match decode_meta(&payload) {
                Ok(meta) => {
                    self.table.lock().offer(meta);
                }
                Err(_) => self.drop_packet(DropReason::Malformed),
            },
            Kind::MetaRequest => {
                let recent = self
                    .meta_replies
                    .get(&from)
                    .is_some_and(|at| now.saturating_sub(*at) < META_REPLY_EVERY);
                // Unsealed, anyone can send a request with a forged source: never answer
                // one with more bytes than it carried (requesters pad theirs).
                let reply_bytes =
                    encode_meta(&self.meta).map_or(0, |m| m.len()) + self.sealer.overhead();
                if !self.sealer.is_sealed() && packet.len() < reply_bytes {
                    return self.drop_packet(DropReason::TooSmall);
                }
                if !recent {
                    // The table holds only the last period's askers: it cannot grow
                    // with every address that ever asked.
                    self.meta_replies
                        .retain(|_, at| now.saturating_sub(*at) < META_REPLY_EVERY);
                    self.meta_replies.insert(from, now);
                    self.push_meta_to(from);
                }
            }
        }
        self.pump(now);
    }

    fn drop_packet(&mut self, reason: DropReason) {
        *self.stats.dropped.entry(reason.as_str()).or_default() += 1;
    }

    fn handle_swim(&mut self, now: Duration, payload: &[u8]) {
        if payload.len() > swim_payload_bytes_max() {
            return self.drop_packet(DropReason::Oversized);
        }
        let Some((src, message, updates)) = peek_swim(payload) else {
            return self.drop_packet(DropReason::Malformed);
        };
        if src.addr == self.me.addr {
            return self.drop_packet(DropReason::Rejected);
        }
        if let Err(e) = self.foca.handle_data(payload, &mut self.runtime) {
            let reason = match e {
                foca::Error::DataTooBig => DropReason::Oversized,
                foca::Error::Decode(_) | foca::Error::MalformedPacket => DropReason::Malformed,
                foca::Error::CustomBroadcast(_) => DropReason::Malformed,
                _ => DropReason::Rejected,
            };
            return self.drop_packet(reason);
        }
        self.observe_swim(now, &src, &message, &updates);
    }

    /// Lifeguard and phi bookkeeping from a packet foca accepted.
    fn observe_swim(
        &mut self,
        now: Duration,
        src: &GossipId,
        message: &Message<GossipId>,
        updates: &[Member<GossipId>],
    ) {
        if let Some(view) = self.views.get_mut(&src.id) {
            view.phi.heartbeat(now);
        }
        if let Some(probe) = self.probe.as_mut().filter(|p| !p.acked) {
            let answered = match message {
                Message::Ack(n) => src.addr == probe.addr && *n == probe.number,
                Message::ForwardedAck {
                    origin,
                    probe_number,
                } => origin.addr == probe.addr && *probe_number == probe.number,
                _ => false,
            };
            if answered {
                probe.acked = true;
                if matches!(message, Message::Ack(_)) {
                    self.awareness.apply(-1);
                }
            }
        }
        for update in updates {
            let target = update.id();
            if target.addr == self.me.addr {
                if update.state() == State::Suspect {
                    // Someone suspects us: we are probably the slow one. foca refutes
                    // by raising our incarnation (as mirrored here); we also tell the
                    // suspecter directly instead of waiting for gossip to reach it.
                    self.awareness.apply(1);
                    let suspected = update.incarnation();
                    if suspected >= self.incarnation && suspected < u16::MAX - 1 {
                        self.incarnation = suspected + 1;
                    }
                    let alive = Member::new(self.me.clone(), self.incarnation, State::Alive);
                    self.send_directed(src.clone(), alive);
                }
                continue;
            }
            match update.state() {
                State::Down if target.addr == src.addr => {
                    self.left.insert(target.addr, target.bump);
                }
                State::Suspect if target.addr != src.addr => {
                    self.confirm_suspicion(target.addr, update.incarnation(), src.addr, now);
                }
                _ => {}
            }
        }
    }

    /// Fires every timer due at `now`, in due order.
    pub fn handle_timers(&mut self, now: Duration) {
        let late_after = Duration::from_millis(self.timing.probe_timeout_ms / 2);
        let mut was_late = false;
        while let Some((key, timer)) = self.timers.pop_due(now) {
            was_late |= now.saturating_sub(key.due) > late_after;
            match timer {
                CoreTimer::JoinRetry => self.join_round(now),
                CoreTimer::SuspicionNotice(target, inc) => self.remind_suspect(target, inc, now),
                CoreTimer::Foca(t) => {
                    let declared = match &t {
                        Timer::ChangeSuspectToDown {
                            member_id,
                            incarnation,
                            ..
                        } => {
                            self.suspicions.remove(&member_id.addr);
                            Some((member_id.clone(), *incarnation))
                        }
                        _ => None,
                    };
                    let _ = self.foca.handle_timer(t, &mut self.runtime);
                    if let Some((member, incarnation)) = declared {
                        self.pump(now);
                        self.announce_down(member, incarnation);
                    }
                }
            }
            self.pump(now);
        }
        if was_late {
            // Our own timers ran late: we are overloaded, be slower to accuse.
            self.stats.timers_late += 1;
            self.awareness.apply(1);
        }
    }

    /// Changes or adds one tag; it reaches every member by gossip.
    /// Changes the gossip keyring; the keys afterwards (the one sealing first).
    pub fn change_keys(&mut self, op: crate::keyring::KeyOp) -> Result<Vec<ClusterKey>, CoreError> {
        self.keyring.apply(op)?;
        let clock = self.sealer.clone();
        self.sealer = Sealer::new(self.keyring.keys());
        self.sealer.copy_clock(&clock);
        Ok(self.keyring.keys().to_vec())
    }

    /// The keys, the one sealing first.
    pub fn keys(&self) -> Vec<ClusterKey> {
        self.keyring.keys().to_vec()
    }

    pub fn set_tag(&mut self, key: &str, value: &str, now: Duration) -> Result<(), CoreError> {
        validate_tag(key, value)?;
        let mut next = self.meta.clone();
        next.tags.insert(key.to_string(), value.to_string());
        validate_tags(&next.tags)?;
        self.publish_meta(next, now)
    }

    /// Removes one tag; true if it existed.
    pub fn remove_tag(&mut self, key: &str, now: Duration) -> Result<bool, CoreError> {
        let mut next = self.meta.clone();
        if next.tags.remove(key).is_none() {
            return Ok(false);
        }
        self.publish_meta(next, now).map(|_| true)
    }

    /// Replaces this node's metadata (the version is bumped here).
    pub fn update_meta(
        &mut self,
        now: Duration,
        change: impl FnOnce(&mut NodeMeta),
    ) -> Result<(), CoreError> {
        let mut next = self.meta.clone();
        change(&mut next);
        next.id = self.meta.id.clone();
        self.publish_meta(next, now)
    }

    fn publish_meta(&mut self, mut next: NodeMeta, now: Duration) -> Result<(), CoreError> {
        next.version = self.meta.version + 1;
        let bytes = encode_meta(&next).map_err(|e| CoreError::MetaTooBig(e.to_string()))?;
        self.meta = next;
        // Our own table entry goes first so the handler sees the broadcast as new.
        let _ = self.foca.add_broadcast(&bytes);
        let _ = self.foca.broadcast(&mut self.runtime);
        self.pump(now);
        Ok(())
    }

    /// Announces that this node leaves: peers see `left`, not `failed`.
    pub fn leave(&mut self, now: Duration) {
        let _ = self.update_meta(now, |m| m.lifecycle = Lifecycle::Leaving);
        let alive: Vec<SocketAddr> = self
            .views
            .values()
            .filter(|v| matches!(v.state, MemberState::Alive | MemberState::Suspect))
            .map(|v| v.gossip.addr)
            .collect();
        for addr in alive {
            self.push_meta_to(addr);
        }
        let _ = self.foca.leave_cluster(&mut self.runtime);
        self.pump(now);
    }

    /// The wall clock as this core knows it — its node's start time plus the time
    /// since — for stamping sealed packets and bounding metadata versions.
    fn set_clock(&mut self, now: Duration) {
        let wall = self
            .meta
            .started_unix_ms
            .saturating_add(now.as_millis() as u64);
        self.sealer.set_clock(wall);
        self.table
            .lock()
            .set_version_ceiling(wall.saturating_add(crate::meta_table::META_VERSION_AHEAD_MAX_MS));
    }

    fn push_meta_to(&mut self, to: SocketAddr) {
        if let Ok(bytes) = encode_meta(&self.meta) {
            self.send_sealed(to, Kind::MetaPush, &bytes);
        }
    }

    fn send_sealed(&mut self, to: SocketAddr, kind: Kind, payload: &[u8]) {
        let bytes = self.sealer.seal(kind, payload, &mut self.rng);
        self.stats.packets_out += 1;
        self.stats.bytes_out += bytes.len() as u64;
        self.effects.push(Effect::Send { to, bytes });
    }

    /// Drains foca's runtime into effects and timers, then refreshes the views.
    fn pump(&mut self, now: Duration) {
        self.set_clock(now);
        loop {
            let mut progressed = false;
            while let Some((dst, data)) = self.runtime.to_send() {
                progressed = true;
                self.note_outgoing(&dst, &data);
                self.send_sealed(dst.addr, Kind::Swim, &data);
            }
            while let Some((after, timer)) = self.runtime.to_schedule() {
                progressed = true;
                self.schedule_foca_timer(now, after, timer);
            }
            while let Some(note) = self.runtime.to_notify() {
                progressed = true;
                self.handle_notification(note, now);
            }
            if !progressed {
                break;
            }
        }
        self.sync_views(now);
    }

    fn note_outgoing(&mut self, dst: &GossipId, data: &[u8]) {
        let Ok(header) = Codec::<GossipId>::decode_header(&mut PostcardCodec, data) else {
            return;
        };
        self.incarnation = header.src_incarnation;
        if let Message::Ping(number) = header.message {
            if let Some(prev) = self.probe.take()
                && !prev.acked
            {
                // Our previous probe got no ack at all: either it is dead or we are
                // the one losing packets. Lifeguard counts it against us.
                self.stats.probes_failed += 1;
                self.awareness.apply(1);
            }
            self.stats.probes_sent += 1;
            self.probe = Some(PendingProbe {
                addr: dst.addr,
                number,
                acked: false,
            });
        }
    }

    fn schedule_foca_timer(&mut self, now: Duration, after: Duration, timer: Timer<GossipId>) {
        match &timer {
            Timer::ProbeRandomMember(_) | Timer::SendIndirectProbe { .. } => {
                let due = now + self.awareness.scale(after);
                self.timers.schedule(due, CoreTimer::Foca(timer));
            }
            Timer::ChangeSuspectToDown {
                member_id,
                incarnation,
                ..
            } => {
                let (addr, incarnation, target) = (member_id.addr, *incarnation, member_id.clone());
                self.start_suspicion(now, addr, incarnation, target, timer);
            }
            _ => {
                self.timers.schedule(now + after, CoreTimer::Foca(timer));
            }
        }
    }

    fn handle_notification(&mut self, note: OwnedNotification<GossipId>, now: Duration) {
        match note {
            OwnedNotification::MemberUp(id) => {
                // Tell the newcomer who we are without waiting for it to ask.
                self.push_meta_to(id.addr);
            }
            OwnedNotification::Rejoin(id) => {
                tracing::info!(bump = id.bump, "declared down by the cluster; rejoined");
                self.me = id;
            }
            OwnedNotification::Idle => {
                self.join_backoff = None;
                self.timers.schedule(now, CoreTimer::JoinRetry);
            }
            _ => {}
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Reads the header and the member updates of a SWIM packet without consuming it.
fn peek_swim(payload: &[u8]) -> Option<(GossipId, Message<GossipId>, Vec<Member<GossipId>>)> {
    let mut buf = payload;
    let header = PostcardCodec.decode_header(&mut buf).ok()?;
    let mut updates = Vec::new();
    if buf.remaining() >= 2 && header.message != Message::Broadcast {
        let count = buf.get_u16();
        for _ in 0..count {
            updates.push(PostcardCodec.decode_member(&mut buf).ok()?);
        }
    }
    Some((header.src, header.message, updates))
}

/// foca's config from our timing. `suspect_to_down_after` is a placeholder: the core
/// replaces that timer's delay with Lifeguard's dynamic suspicion timeout.
pub(crate) fn foca_config(t: &GossipTiming, _cluster_size: usize) -> foca::Config {
    let nz = |v: u32| NonZeroUsize::new(v.max(1) as usize).expect("max(1) is non-zero");
    foca::Config {
        probe_period: Duration::from_millis(t.probe_period_ms),
        probe_rtt: Duration::from_millis(t.probe_timeout_ms),
        num_indirect_probes: nz(t.indirect_probes),
        max_transmissions: NonZeroU8::new(t.max_transmissions.clamp(1, 255) as u8)
            .expect("clamped to 1..=255"),
        suspect_to_down_after: Duration::from_millis(t.suspicion_min_ms(1)),
        remove_down_after: Some(Duration::from_secs(t.forget_failed_after_s)),
        max_packet_size: NonZeroUsize::new(swim_payload_bytes_max()).expect("non-zero"),
        notify_down_members: true,
        periodic_announce: Some(PeriodicParams {
            frequency: Duration::from_millis(t.announce_interval_ms),
            num_members: nz(1),
        }),
        periodic_announce_to_down_members: Some(PeriodicParams {
            frequency: Duration::from_millis(t.announce_interval_ms),
            num_members: nz(1),
        }),
        periodic_gossip: Some(PeriodicParams {
            frequency: Duration::from_millis(t.gossip_interval_ms),
            num_members: nz(t.gossip_fanout),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use shoal_types::{Profile, Role};

    use super::*;

    fn core(keys: Vec<ClusterKey>) -> MembershipCore {
        let meta = NodeMeta {
            id: NodeId::new("a").unwrap(),
            role: Role::Worker,
            dc: "dc1".into(),
            tcp_addr: "127.0.0.1:9200".parse().unwrap(),
            tags: BTreeMap::new(),
            lifecycle: Lifecycle::Active,
            version: 1,
            build: "0.1.0".into(),
            cores: 1,
            load_permille: 0,
            chat_clients: 0,
            chat_messages: 0,
            leader_hint: None,
            leader_term: 0,
            started_unix_ms: 0,
        };
        let config = CoreConfig {
            meta,
            gossip_addr: "127.0.0.1:9201".parse().unwrap(),
            timing: GossipTiming::for_profile(Profile::Local),
            keys,
            rng_seed: 1,
            bump: 1,
        };
        MembershipCore::new(config, Duration::ZERO).unwrap()
    }

    /// Unsealed, anyone may forge a request's source: a short metadata request is
    /// not answered (the answer would be bigger than the request); one padded to the
    /// answer's size is. Sealed requests are from members and need no padding.
    #[test]
    fn an_unsealed_request_is_never_answered_with_more_bytes() {
        let mut c = core(vec![]);
        c.drain_effects();
        let from: SocketAddr = "10.9.9.9:7".parse().unwrap();
        let plain = Sealer::new(&[]);
        let mut rng = StdRng::seed_from_u64(3);
        let short = plain.seal(Kind::MetaRequest, &[], &mut rng);
        c.handle_packet(Duration::from_secs(1), from, &short);
        let sends = |effects: Vec<Effect>| {
            effects
                .into_iter()
                .filter_map(|e| match e {
                    Effect::Send { to, bytes } if to == from => Some(bytes.len()),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        assert!(
            sends(c.drain_effects()).is_empty(),
            "a 5-byte request got an answer"
        );
        assert_eq!(c.stats().dropped.get("too_small"), Some(&1));
        let padded = plain.seal(
            Kind::MetaRequest,
            &vec![0; shoal_types::limits::META_BYTES_MAX],
            &mut rng,
        );
        c.handle_packet(Duration::from_secs(2), from, &padded);
        let answered = sends(c.drain_effects());
        assert_eq!(answered.len(), 1, "the padded request is answered");
        assert!(
            answered[0] <= padded.len(),
            "{} > {}",
            answered[0],
            padded.len()
        );
    }

    #[test]
    fn a_tag_change_is_validated_and_versioned() {
        let mut c = core(vec![]);
        let v0 = c.meta().version;
        assert!(c.set_tag("bad key", "x", Duration::ZERO).is_err());
        assert_eq!(c.meta().version, v0, "a refused change changes nothing");
        c.set_tag("gpu", "true", Duration::ZERO).unwrap();
        assert_eq!(c.meta().version, v0 + 1);
        assert_eq!(c.remove_tag("gpu", Duration::ZERO), Ok(true));
        assert_eq!(c.remove_tag("gpu", Duration::ZERO), Ok(false));
        let huge: String = "x".repeat(200);
        for i in 0..32 {
            let r = c.set_tag(&format!("k{i}"), &huge, Duration::ZERO);
            if r.is_err() {
                assert!(matches!(r, Err(CoreError::MetaTooBig(_))), "{r:?}");
                return;
            }
        }
        panic!("32 tags of 200 bytes cannot fit the 1 KiB metadata limit");
    }

    proptest! {
        /// Whatever arrives on the gossip port — behind a valid plain envelope or not —
        /// the core neither panics nor changes its membership.
        #[test]
        fn arbitrary_packets_change_nothing(body in proptest::collection::vec(any::<u8>(), 0..1500), kind in 0u8..5) {
            let mut c = core(vec![]);
            let from: SocketAddr = "127.0.0.1:7777".parse().unwrap();
            let mut packet = vec![b'S', b'H', 1, kind, 0];
            packet.extend_from_slice(&body);
            c.handle_packet(Duration::from_millis(5), from, &packet);
            c.handle_packet(Duration::from_millis(6), from, &body);
            prop_assert_eq!(c.snapshot(Duration::from_millis(7)).members.len(), 1);
            let events = c.drain_effects().into_iter().filter(|e| matches!(e, Effect::Event(_))).count();
            prop_assert_eq!(events, 0);
        }
    }
}

//! Deterministic simulation of shoal clusters.
//!
//! Many [`MembershipCore`]s in one thread, one virtual clock, one seeded rng for the
//! network. Nothing reads the real clock, so a seed replays exactly: a failing test
//! prints its seed, and `SHOAL_SIM_SEED=<seed>` runs just that one.
//!
//! ```text
//!   loop: next instant = min(next timer of any live node, next datagram arrival)
//!         advance the clock → fire timers / deliver → collect effects
//!         effects: sends enter the network (loss, delay, partitions), events are kept
//! ```

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, HashSet},
    net::SocketAddr,
    time::Duration,
};

use rand::{RngExt, SeedableRng, rngs::StdRng};
use shoal_membership::{CoreConfig, Effect, EventKind, MembershipCore, MembershipEvent};
use shoal_types::{
    GossipTiming, Lifecycle, MemberState, NodeId, NodeMeta, Profile, Role, config::ClusterKey,
};

pub mod raft;

/// Seeds a test should run: `SHOAL_SIM_SEED=<n>` alone if set, else the range
/// `SHOAL_SIM_SEEDS=<a>..<b>` if set, else `defaults`.
pub fn seeds(defaults: impl IntoIterator<Item = u64>) -> Vec<u64> {
    if let Ok(s) = std::env::var("SHOAL_SIM_SEED") {
        return vec![s.parse().expect("SHOAL_SIM_SEED: an integer")];
    }
    if let Ok(r) = std::env::var("SHOAL_SIM_SEEDS") {
        let (a, b) = r.split_once("..").expect("SHOAL_SIM_SEEDS: A..B");
        let a: u64 = a.parse().expect("SHOAL_SIM_SEEDS: A..B with integers");
        let b: u64 = b.parse().expect("SHOAL_SIM_SEEDS: A..B with integers");
        return (a..b).collect();
    }
    defaults.into_iter().collect()
}

struct InFlight {
    at: Duration,
    seq: u64,
    to: usize,
    from: SocketAddr,
    bytes: Vec<u8>,
}

impl PartialEq for InFlight {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for InFlight {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// One simulated node.
pub struct SimNode {
    pub id: String,
    pub addr: SocketAddr,
    core: Option<MembershipCore>,
    keys: Vec<ClusterKey>,
    restarts: u64,
    /// Every event this node emitted, with the virtual time.
    pub events: Vec<(Duration, MembershipEvent)>,
}

/// A simulated cluster and its network.
pub struct SimCluster {
    pub seed: u64,
    pub now: Duration,
    pub nodes: Vec<SimNode>,
    timing: GossipTiming,
    rng: StdRng,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    loss: f64,
    latency: Duration,
    jitter: Duration,
    blocked: HashSet<(usize, usize)>,
    pub delivered: u64,
    pub lost: u64,
    /// Every datagram sent, as (time, from, to, envelope kind byte: 1 SWIM, 2 metadata
    /// push, 3 metadata request), while [`SimCluster::record_sends`] is on (off by
    /// default: long runs send millions).
    pub sends: Vec<(Duration, usize, usize, u8)>,
    recording: bool,
}

impl SimCluster {
    /// `n` nodes with the given profile, all sharing `key` (if any).
    pub fn new(n: usize, seed: u64, profile: Profile, key: Option<ClusterKey>) -> Self {
        let mut sim = Self {
            seed,
            now: Duration::ZERO,
            nodes: Vec::new(),
            timing: GossipTiming::for_profile(profile),
            rng: StdRng::seed_from_u64(seed),
            in_flight: BinaryHeap::new(),
            seq: 0,
            loss: 0.0,
            latency: Duration::from_micros(200),
            jitter: Duration::from_micros(300),
            blocked: HashSet::new(),
            delivered: 0,
            lost: 0,
            sends: Vec::new(),
            recording: false,
        };
        for i in 0..n {
            sim.add_node(&format!("n{i}"), key.into_iter().collect());
        }
        sim
    }

    /// Adds and starts a node that joins through node 0.
    pub fn add_node(&mut self, id: &str, keys: Vec<ClusterKey>) -> usize {
        let index = self.nodes.len();
        let addr = SocketAddr::from(([10, 0, (index / 250) as u8, (index % 250) as u8 + 1], 9001));
        self.nodes.push(SimNode {
            id: id.to_string(),
            addr,
            core: None,
            keys,
            restarts: 0,
            events: Vec::new(),
        });
        self.start(index);
        index
    }

    fn start(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let meta = NodeMeta {
            id: NodeId::new(node.id.clone()).expect("sim ids are valid"),
            role: Role::Worker,
            dc: "dc1".into(),
            tcp_addr: SocketAddr::new(node.addr.ip(), node.addr.port() - 1),
            tags: BTreeMap::new(),
            lifecycle: Lifecycle::Active,
            version: 1 + node.restarts * 1_000_000,
            build: shoal_types::VERSION.into(),
            cores: 1,
            load_permille: 0,
            chat_clients: 0,
            chat_messages: 0,
            leader_hint: None,
            leader_term: 0,
            started_unix_ms: self.now.as_millis() as u64,
        };
        let config = CoreConfig {
            meta,
            gossip_addr: node.addr,
            timing: self.timing.clone(),
            keys: node.keys.clone(),
            rng_seed: self.seed ^ ((i as u64) << 32) ^ node.restarts,
            bump: self.now.as_millis() as u64 + node.restarts,
        };
        let mut core = MembershipCore::new(config, self.now).expect("sim config is valid");
        let seed0 = self.nodes[0].addr;
        let seeds = if i == 0 { vec![] } else { vec![seed0] };
        core.join(seeds, self.now);
        self.nodes[i].core = Some(core);
        self.collect(i);
    }

    pub fn core(&self, i: usize) -> Option<&MembershipCore> {
        self.nodes[i].core.as_ref()
    }

    pub fn core_mut(&mut self, i: usize) -> Option<&mut MembershipCore> {
        self.nodes[i].core.as_mut()
    }

    /// Kills node `i` without a word (kill -9).
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].core = None;
    }

    /// Starts node `i` again under the same id and address.
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].restarts += 1;
        self.start(i);
    }

    pub fn set_loss(&mut self, loss: f64) {
        self.loss = loss;
    }

    /// Cuts the nodes in `a` off from those in `b`, both ways.
    pub fn partition(&mut self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                self.blocked.insert((x, y));
                self.blocked.insert((y, x));
            }
        }
    }

    /// Datagrams from `from` to `to` are lost; the other way still works.
    pub fn block_one_way(&mut self, from: usize, to: usize) {
        self.blocked.insert((from, to));
    }

    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Starts (or stops) recording every datagram sent in [`SimCluster::sends`].
    pub fn record_sends(&mut self, on: bool) {
        self.recording = on;
    }

    /// Applies `f` to node `i`'s core at the current instant, then collects effects.
    pub fn with_core(&mut self, i: usize, f: impl FnOnce(&mut MembershipCore, Duration)) {
        let now = self.now;
        if let Some(core) = self.nodes[i].core.as_mut() {
            f(core, now);
        }
        self.collect(i);
    }

    fn collect(&mut self, i: usize) {
        let Some(core) = self.nodes[i].core.as_mut() else {
            return;
        };
        let effects = core.drain_effects();
        let from = self.nodes[i].addr;
        for effect in effects {
            match effect {
                Effect::Event(e) => self.nodes[i].events.push((self.now, e)),
                Effect::Send { to, bytes } => {
                    let Some(j) = self.nodes.iter().position(|n| n.addr == to) else {
                        self.lost += 1;
                        continue;
                    };
                    if self.recording {
                        // The kind is the envelope's fourth byte, in clear even when
                        // sealed (see shoal-membership's wire module).
                        let kind = bytes.get(3).copied().unwrap_or(0);
                        self.sends.push((self.now, i, j, kind));
                    }
                    if self.blocked.contains(&(i, j)) || self.rng.random_bool(self.loss) {
                        self.lost += 1;
                        continue;
                    }
                    let jitter = self.rng.random_range(0..=self.jitter.as_micros() as u64);
                    let at = self.now + self.latency + Duration::from_micros(jitter);
                    self.seq += 1;
                    self.in_flight.push(Reverse(InFlight {
                        at,
                        seq: self.seq,
                        to: j,
                        from,
                        bytes,
                    }));
                }
            }
        }
    }

    /// Runs one instant: the earliest timer or arrival. False if nothing is pending.
    fn step(&mut self, limit: Duration) -> bool {
        let next_timer = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.core.as_ref()?.next_deadline().map(|d| (d, i)))
            .min();
        let next_packet = self.in_flight.peek().map(|Reverse(p)| p.at);
        let at = match (next_timer.map(|t| t.0), next_packet) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return false,
        };
        if at > limit {
            return false;
        }
        self.now = self.now.max(at);
        if next_packet == Some(at) {
            let Reverse(p) = self.in_flight.pop().expect("peeked");
            if let Some(core) = self.nodes[p.to].core.as_mut() {
                self.delivered += 1;
                core.handle_packet(self.now, p.from, &p.bytes);
                self.collect(p.to);
            }
        } else if let Some((_, i)) = next_timer {
            let now = self.now;
            if let Some(core) = self.nodes[i].core.as_mut() {
                core.handle_timers(now);
            }
            self.collect(i);
        }
        true
    }

    /// Advances virtual time by `d`, calling `check` after every step.
    pub fn run_for_checked(&mut self, d: Duration, mut check: impl FnMut(&SimCluster)) {
        let limit = self.now + d;
        while self.step(limit) {
            check(self);
        }
        self.now = limit;
    }

    pub fn run_for(&mut self, d: Duration) {
        self.run_for_checked(d, |_| {});
    }

    /// Runs until `pred` holds, or `budget` of virtual time passes; the time it took.
    pub fn run_until(
        &mut self,
        budget: Duration,
        mut pred: impl FnMut(&SimCluster) -> bool,
    ) -> Option<Duration> {
        let start = self.now;
        let limit = start + budget;
        loop {
            if pred(self) {
                return Some(self.now - start);
            }
            if !self.step(limit) {
                self.now = limit;
                return pred(self).then(|| self.now - start);
            }
        }
    }

    /// How `observer` sees `target` (by index).
    pub fn state(&self, observer: usize, target: usize) -> Option<MemberState> {
        self.core(observer)?.member_state(&self.nodes[target].id)
    }

    /// True when every live node other than `target` sees it in `state`.
    pub fn all_see(&self, target: usize, state: MemberState) -> bool {
        (0..self.nodes.len())
            .filter(|&o| o != target && self.nodes[o].core.is_some())
            .all(|o| self.state(o, target) == Some(state))
    }

    /// True when every live node sees every other live node alive.
    pub fn converged(&self) -> bool {
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].core.is_some())
            .collect();
        live.iter().all(|&o| {
            live.iter()
                .filter(|&&t| t != o)
                .all(|&t| self.state(o, t) == Some(MemberState::Alive))
        })
    }

    /// (observer, event) for every event of `kind` about `target` so far.
    pub fn events_about(&self, target: usize, kind: EventKind) -> Vec<(usize, Duration)> {
        let id = &self.nodes[target].id;
        self.nodes
            .iter()
            .enumerate()
            .flat_map(|(o, n)| {
                n.events
                    .iter()
                    .filter(|(_, e)| e.kind == kind && &e.member.id == id)
                    .map(move |(t, _)| (o, *t))
            })
            .collect()
    }

    /// Every Failed event anywhere, as (observer, target id, time).
    pub fn failures(&self) -> Vec<(String, String, Duration)> {
        self.nodes
            .iter()
            .flat_map(|n| {
                n.events
                    .iter()
                    .filter(|(_, e)| e.kind == EventKind::NodeFailed)
                    .map(|(t, e)| (n.id.clone(), e.member.id.clone(), *t))
            })
            .collect()
    }
}

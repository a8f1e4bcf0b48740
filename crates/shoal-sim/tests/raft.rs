//! Simulation of the managers' Raft group: 3 and 5 replicas (shoal's `RaftGroup` with
//! its SQLite log and state machine) on the in-process network, one thread, a paused
//! clock, and a seeded fault schedule — leader kills, restarts from disk, symmetric
//! and one-way partitions, 10 % message loss (requests and replies) — while clients
//! write tagged keys and retry until acknowledged.
//!
//! Invariants, checked by an observer every 5 ms of simulated time and after every
//! step:
//! - at most one leader per term (across the whole run);
//! - replicas that applied the same log prefix hold identical state (so every replica
//!   applies the same sequence, and no committed entry changes);
//! - every acknowledged write is present on every replica that applied its index;
//! - a minority side of a partition never commits an entry proposed after the cut: its
//!   commit index stays at or below the newest entry it held when the partition began
//!   (give or take the 20 ms in which messages sent before the cut still land and Raft's
//!   metrics catch up; members that crash during the partition are not watched);
//! - at the end, after healing: every write acknowledged, each applied exactly once,
//!   all replicas equal.
//!
//! A failure names its seed; `SHOAL_SIM_SEED=<seed> cargo test -p shoal-sim --test raft`
//! replays the same fault schedule, `SHOAL_SIM_SEEDS=0..200` sweeps more seeds. (openraft draws its election jitter from its own
//! thread-local generator, so a replay repeats the faults, not every interleaving.)

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
    hash::{Hash, Hasher},
    rc::Rc,
    time::Duration,
};

use rand::{RngExt as _, SeedableRng, rngs::StdRng};
use shoal_raft::group::{GroupOptions, RaftGroup, network::Router};
use shoal_sim::{
    raft::{Live, RaftCluster, commit, paused_local},
    seeds,
};
use shoal_state::{ClientTag, Command, KvCommand, Request, State};

const STEPS: usize = 24;
/// Raft's metrics trail its state, and what was sent just before a partition still
/// lands: for this long after the cut the minority's bound follows the newest entry its
/// members report; after it, the bound is fixed.
const PARTITION_GRACE: Duration = Duration::from_millis(20);
const CLIENTS: u64 = 3;
const WRITES_PER_CLIENT: u64 = 40;

fn options() -> GroupOptions {
    shoal_sim::raft::options(25, 5)
}

/// What the run has seen, shared by the steps, the observer and the clients.
#[derive(Default)]
struct Seen {
    leaders_by_term: BTreeMap<u64, u64>,
    /// State digest after applying up to an index (by the state's own last_applied).
    state_at: BTreeMap<u64, u64>,
    /// (key, value, log index) of acknowledged writes.
    acked: Vec<(String, String, u64)>,
    /// Minority members watched in the current partition (those running through all of
    /// it), the commit bound they must respect, and until when the bound may still rise
    /// (see `PARTITION_GRACE`).
    partition: Option<(BTreeSet<u64>, u64, tokio::time::Instant)>,
    violations: Vec<String>,
}

struct Sim {
    seed: u64,
    n: u64,
    rng: StdRng,
    cluster: RaftCluster,
    router: Router,
    live: Live,
    seen: Rc<RefCell<Seen>>,
    log: Vec<String>,
}

fn trace(what: &str) {
    if std::env::var_os("SHOAL_SIM_TRACE").is_some() {
        eprintln!("{:?} {what}", tokio::time::Instant::now());
    }
}

fn digest(s: &State) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.to_bytes().expect("state encodes").hash(&mut h);
    h.finish()
}

/// Checks every invariant that can be checked at any instant.
fn observe(live: &Live, seen: &RefCell<Seen>) {
    let groups: Vec<(u64, RaftGroup)> =
        live.borrow().iter().map(|(k, v)| (*k, v.clone())).collect();
    let mut seen = seen.borrow_mut();
    if let Some((watched, bound, until)) = &mut seen.partition
        && tokio::time::Instant::now() < *until
    {
        for (id, g) in &groups {
            if watched.contains(id) {
                *bound = (*bound).max(g.status().last_log_index);
            }
        }
        return;
    }
    for (id, g) in &groups {
        let st = g.status();
        if st.role == "leader" {
            let prev = *seen.leaders_by_term.entry(st.term).or_insert(*id);
            if prev != *id {
                let v = format!("two leaders in term {}: {prev} and {id}", st.term);
                seen.violations.push(v);
            }
        }
        if let Some((minority, bound, _)) = &seen.partition
            && minority.contains(id)
            && st.commit_index > *bound
        {
            let v = format!(
                "node {id} on the minority side committed {} > {bound}, the newest entry it held at the cut (role {}, term {}, leader {:?}, voters {:?})",
                st.commit_index, st.role, st.term, st.leader, st.voters
            );
            seen.violations.push(v);
        }
        let (applied, d, missing) = g.read(|s| {
            let applied = s.last_applied.0;
            let missing: Vec<String> = seen
                .acked
                .iter()
                .filter(|(k, v, idx)| {
                    *idx <= applied && s.kv.get(k).map(|e| e.value.as_slice()) != Some(v.as_bytes())
                })
                .map(|(k, _, idx)| format!("{k}@{idx}"))
                .collect();
            (applied, digest(s), missing)
        });
        if !missing.is_empty() {
            let v = format!("node {id} applied {applied} but lacks acknowledged {missing:?}");
            seen.violations.push(v);
        }
        let prev = *seen.state_at.entry(applied).or_insert(d);
        if prev != d {
            let v = format!("node {id} holds a different state after index {applied}");
            seen.violations.push(v);
        }
    }
}

impl Sim {
    fn new(seed: u64, n: u64) -> Self {
        let cluster = RaftCluster::new("raft", seed, n, options());
        Self {
            seed,
            n,
            rng: StdRng::seed_from_u64(seed),
            router: cluster.router.clone(),
            live: cluster.live.clone(),
            cluster,
            seen: Rc::default(),
            log: Vec::new(),
        }
    }

    fn fail(&self, what: &str) -> ! {
        panic!(
            "raft simulation, {} replicas, seed {}: {what}\nsteps: {:#?}\nreplay: SHOAL_SIM_SEED={} cargo test -p shoal-sim --test raft",
            self.n, self.seed, self.log, self.seed
        );
    }

    async fn start(&self, id: u64) {
        self.cluster.start(id).await;
    }

    async fn crash(&self, id: u64) {
        if let Some((watched, _, _)) = &mut self.seen.borrow_mut().partition {
            watched.remove(&id);
        }
        trace(&format!("shutting down {id}"));
        if self.cluster.crash(id).await {
            trace(&format!("{id} is down"));
        }
    }

    fn crashed(&self) -> Vec<u64> {
        self.cluster.crashed()
    }

    fn leader(&self) -> Option<u64> {
        self.cluster.leader()
    }

    fn heal(&mut self) {
        self.router.heal();
        self.seen.borrow_mut().partition = None;
    }

    /// One random fault (or repair).
    async fn step(&mut self) {
        let f = (self.n - 1) / 2;
        match self.rng.random_range(0..7u32) {
            0 | 1 => {
                // Kill: the leader when there is one (half the time), else anyone.
                let crashed = self.crashed().len() as u64;
                if crashed < f {
                    let leader = self.leader().filter(|_| self.rng.random_bool(0.5));
                    let live: Vec<u64> = self.live.borrow().keys().copied().collect();
                    let victim = leader.unwrap_or(live[self.rng.random_range(0..live.len())]);
                    self.log.push(format!("kill {victim}"));
                    self.crash(victim).await;
                }
            }
            2 => {
                if let Some(&id) = self.crashed().first() {
                    self.log.push(format!("restart {id}"));
                    self.start(id).await;
                }
            }
            3 => {
                self.heal();
                let size = self.rng.random_range(1..=f) as usize;
                let mut ids: Vec<u64> = (1..=self.n).collect();
                let mut minority = BTreeSet::new();
                while minority.len() < size {
                    minority.insert(ids.remove(self.rng.random_range(0..ids.len())));
                }
                for a in &minority {
                    for b in &ids {
                        self.router.set_blocked(*a, *b, true);
                        self.router.set_blocked(*b, *a, true);
                    }
                }
                // The newest entry the minority holds when the cut comes: anything it
                // appends later was proposed on the minority side and can never reach
                // a majority. (Older entries may still commit there: one replicated to
                // a member now across the cut counts towards the majority.)
                let bound = self
                    .live
                    .borrow()
                    .iter()
                    .filter(|(id, _)| minority.contains(id))
                    .map(|(_, g)| g.status().last_log_index)
                    .max()
                    .unwrap_or(0);
                let roles: Vec<String> = self
                    .live
                    .borrow()
                    .iter()
                    .map(|(id, g)| {
                        let st = g.status();
                        format!("{id}:{}@{} c{}", st.role, st.term, st.commit_index)
                    })
                    .collect();
                self.log.push(format!(
                    "partition {minority:?} | {ids:?} (bound {bound}; {roles:?})"
                ));
                let until = tokio::time::Instant::now() + PARTITION_GRACE;
                // Checked: minority members running when the cut came. One that was
                // down (or goes down) may come back with a commit index it saved from
                // before the cut but never reported.
                let watched: BTreeSet<u64> = minority
                    .iter()
                    .copied()
                    .filter(|id| self.live.borrow().contains_key(id))
                    .collect();
                self.seen.borrow_mut().partition = Some((watched, bound, until));
            }
            4 => {
                let a = self.rng.random_range(1..=self.n);
                let b = self.rng.random_range(1..=self.n);
                if a != b {
                    self.log.push(format!("block {a} -> {b}"));
                    self.router.set_blocked(a, b, true);
                }
            }
            5 => {
                let seed = self.rng.random_range(0..u64::MAX);
                self.log.push("loss 10%".into());
                self.router.set_loss(0.10, seed);
            }
            _ => {
                self.log.push("heal".into());
                self.heal();
            }
        }
    }

    fn check(&self) {
        observe(&self.live, &self.seen);
        let seen = self.seen.borrow();
        if let Some(v) = seen.violations.first() {
            self.fail(v);
        }
    }
}

/// One client: writes its keys one at a time, each tagged, retrying wherever the
/// leader is until acknowledged.
async fn client(id: u64, live: Live, seen: Rc<RefCell<Seen>>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed ^ id);
    for seq in 1..=WRITES_PER_CLIENT {
        let (key, value) = (format!("c{id}/{seq:03}"), format!("v{id}.{seq}"));
        let req = Request {
            client: Some(ClientTag { client_id: id, seq }),
            command: Command::Kv(KvCommand::Put {
                key: key.clone(),
                value: value.clone().into_bytes(),
            }),
        };
        let applied = commit(&live, &mut rng, req).await;
        seen.borrow_mut().acked.push((key, value, applied.index.0));
    }
}

async fn run(seed: u64, n: u64) {
    let mut sim = Sim::new(seed, n);
    for id in 1..=n {
        sim.start(id).await;
    }
    let voters = (1..=n).map(|id| (id, format!("n{id}"))).collect();
    let first = sim.live.borrow()[&1].clone();
    first.initialize(voters).await.expect("initialize");

    let observer = {
        let (live, seen) = (sim.live.clone(), sim.seen.clone());
        tokio::task::spawn_local(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                observe(&live, &seen);
            }
        })
    };
    let clients: Vec<_> = (1..=CLIENTS)
        .map(|c| tokio::task::spawn_local(client(c, sim.live.clone(), sim.seen.clone(), seed)))
        .collect();

    for i in 0..STEPS {
        if std::env::var_os("SHOAL_SIM_TRACE").is_some() {
            eprintln!(
                "step {i} at {:?}: {:?}",
                tokio::time::Instant::now(),
                sim.log.last()
            );
        }
        sim.step().await;
        let ms = sim.rng.random_range(200..1500);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        sim.check();
    }

    // Repair everything; every write must get through and every replica converge.
    sim.log.push("heal all, restart all".into());
    sim.heal();
    for id in sim.crashed() {
        sim.start(id).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    for c in clients {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if tokio::time::timeout(left, c).await.is_err() {
            sim.fail("clients could not finish their writes after healing");
        }
    }
    let total = CLIENTS * WRITES_PER_CLIENT;
    loop {
        sim.check();
        let states: Vec<State> = sim
            .live
            .borrow()
            .values()
            .map(|g| g.read(|s| s.clone()))
            .collect();
        let converged = states.windows(2).all(|w| w[0] == w[1])
            && states[0].kv.len() as u64 == total
            && states.len() as u64 == n;
        if converged {
            let s = &states[0];
            for (k, e) in s.kv.list("") {
                if e.version != 1 {
                    sim.fail(&format!("{k} was applied {} times", e.version));
                }
            }
            if s.kv.revision() != total {
                sim.fail(&format!(
                    "store revision {} for {total} writes",
                    s.kv.revision()
                ));
            }
            break;
        }
        if tokio::time::Instant::now() > deadline {
            sim.fail("replicas did not converge after healing");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    observer.abort();
    sim.cluster.shutdown().await;
}

fn simulate(n: u64, default_seeds: std::ops::Range<u64>) {
    for seed in seeds(default_seeds) {
        paused_local(run(seed, n));
    }
}

#[test]
fn three_replicas_keep_every_invariant_under_faults() {
    simulate(3, 0..50);
}

#[test]
fn five_replicas_keep_every_invariant_under_faults() {
    simulate(5, 100..150);
}

/// A write that reaches a leader the moment it is elected — before any follower has
/// acknowledged it, so before it holds a lease — is committed, not sent back with "not
/// the leader": the first write after a failover must not cost the client a retry.
#[test]
fn a_just_elected_leader_takes_a_write_at_once() {
    for seed in seeds(0..3) {
        paused_local(async {
            let mut sim = Sim::new(1_000 + seed, 3);
            for id in 1..=3 {
                sim.start(id).await;
            }
            let voters = (1..=3).map(|id| (id, format!("n{id}"))).collect();
            let first = sim.live.borrow()[&1].clone();
            first.initialize(voters).await.expect("initialize");
            let write = |seq: u64| Request {
                client: Some(ClientTag { client_id: 9, seq }),
                command: Command::Kv(KvCommand::Put {
                    key: format!("k{seq}"),
                    value: b"v".to_vec(),
                }),
            };
            let any = sim.live.borrow()[&2].clone();
            let (old, term) = any
                .await_leader(None, Duration::from_secs(5))
                .await
                .unwrap_or_else(|| sim.fail("no first leader"));
            let old_group = sim.live.borrow()[&old].clone();
            old_group.propose(write(1)).await.expect("first write");
            sim.crash(old).await;
            sim.log.push(format!("killed leader {old} (term {term})"));
            // Each survivor waits for the next leader; the one elected proposes the
            // moment its own metrics say so.
            let survivors: Vec<RaftGroup> = sim.live.borrow().values().cloned().collect();
            let waits: Vec<_> = survivors
                .iter()
                .map(|g| {
                    let g = g.clone();
                    tokio::task::spawn_local(async move {
                        match g
                            .await_leader(Some((old, term)), Duration::from_secs(5))
                            .await
                        {
                            Some((l, _)) if l == g.id() => Some(g.propose(write(2)).await),
                            _ => None,
                        }
                    })
                })
                .collect();
            let mut outcomes = Vec::new();
            for w in waits {
                outcomes.push(w.await.expect("survivor task"));
            }
            match outcomes.into_iter().flatten().next() {
                Some(Ok(_)) => {}
                Some(Err(e)) => sim.fail(&format!("the new leader refused a write: {e}")),
                None => sim.fail("no survivor saw itself elected"),
            }
            drop(survivors);
            sim.cluster.shutdown().await;
        });
    }
}

//! Scheduling and load balancing for workflow instances: pure code, no clocks, no
//! sockets, randomness injected.
//!
//! ```text
//!  workers (from gossip: cores, tags)  ──► Scheduler::upsert_worker / remove_worker
//!  instances to place (cores, tags)    ──► Scheduler::enqueue        (never dropped)
//!                                          Scheduler::round() ──► [Placement]
//!                                             for each queued demand, oldest first:
//!                                               filter: accepting, constraints match,
//!                                                       free cores ≥ cores, not excluded
//!                                               pick:   the demand's strategy
//!                                               reserve the cores
//!  an instance ended (or its worker died) ──► Scheduler::release
//! ```
//!
//! The manager leader runs one `round` per scheduling tick and commits the placements
//! to Raft as one entry before dispatching them. A demand that fits nowhere stays queued
//! (backpressure) and later demands that do fit still go ahead of it.
//!
//! **Queue slots.** A worker's capacity is counted in slots: `slots_per_core` per core
//! (1 by default: a slot is a core, and nothing waits on a worker). With more slots
//! per core, a demand whose instances are known to be short says so with its `depth`
//! (how many of its instances may wait per core it needs) and takes
//! `cores × slots_per_core / depth` slots: short work is handed out several at a time
//! and waits on the worker, which runs at most its cores at once, instead of waiting
//! a round trip for each. A demand never goes to a worker with fewer cores than it
//! needs, whatever its slots.
//!
//! Invariants: a round never places more slots on a worker than it had free (a worker
//! that later advertises fewer cores than it has reserved just gets nothing new); every
//! placement satisfies its demand's constraints and exclusions; each worker's books
//! match its placements and the queue holds each demand once ([`Scheduler::validate`];
//! the property tests check all of it after every step).

mod strategy;
mod worker;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

pub use strategy::Strategy;
pub use worker::{Tags, WorkerState};

/// Identifies one instance to place (job, workflow, instance index, attempt).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InstanceKey {
    pub job: String,
    pub workflow: String,
    pub index: u32,
    pub attempt: u32,
}

/// One instance waiting for a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Demand {
    pub key: InstanceKey,
    /// Cores reserved on the chosen worker while the instance runs (≥ 1).
    pub cores: u32,
    /// Worker tags that must be present with exactly these values.
    pub constraints: Tags,
    /// Workers not to use (e.g. the one a retried instance failed on).
    pub exclude: BTreeSet<String>,
    pub strategy: Strategy,
    /// How many of these may wait per core on one worker (1: none waits; capped at the
    /// scheduler's slots per core).
    pub depth: u32,
}

/// A decision: this instance runs on this worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub key: InstanceKey,
    pub worker: String,
    pub cores: u32,
    /// Queue slots it holds on the worker (see the module docs).
    pub slots: u32,
}

/// Why a demand can never be placed with the workers known now (reported at submit
/// time, naming the rule).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unplaceable {
    #[error("cores: must be at least 1")]
    NoCores,
    #[error("cores: {cores} requested, the largest matching worker has {largest}")]
    TooManyCores { cores: u32, largest: u32 },
    #[error("constraints: no worker has the tags {constraints:?}")]
    NoMatchingWorker { constraints: Tags },
    #[error("instance {0:?} is already queued or placed")]
    Duplicate(InstanceKey),
}

/// Small, seedable random source (xorshift64*): the scheduler never reads entropy
/// itself, so a seed reproduces every `Random` choice.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn seeded(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((r >> 32) as usize * n) >> 32
    }
}

/// The placement state of one datacenter.
#[derive(Debug, Clone)]
pub struct Scheduler {
    workers: BTreeMap<String, WorkerState>,
    queue: VecDeque<Demand>,
    /// The keys in `queue` (the duplicate check is O(1), not a scan: a job can queue
    /// 100,000 instances).
    queued_keys: std::collections::HashSet<InstanceKey>,
    /// Placed and not yet released: key → (worker, cores, slots).
    placed: BTreeMap<InstanceKey, (String, u32, u32)>,
    slots_per_core: u32,
    /// Round-robin position: the worker after this one is tried first.
    cursor: Option<String>,
    rng: Rng,
}

impl Scheduler {
    pub fn new(rng: Rng) -> Self {
        Self {
            workers: BTreeMap::new(),
            queue: VecDeque::new(),
            queued_keys: Default::default(),
            placed: BTreeMap::new(),
            cursor: None,
            rng,
            slots_per_core: 1,
        }
    }

    /// A scheduler whose workers offer `n` queue slots per core (see the module docs).
    pub fn with_slots_per_core(rng: Rng, n: u32) -> Self {
        Self {
            slots_per_core: n.max(1),
            ..Self::new(rng)
        }
    }

    /// Slots a demand takes: `cores × slots_per_core / depth`, at least `cores`.
    pub fn slots_of(&self, demand: &Demand) -> u32 {
        self.slots_for(demand.cores, demand.depth)
    }

    /// Slots `cores` at `depth` take on this scheduler.
    pub fn slots_for(&self, cores: u32, depth: u32) -> u32 {
        let depth = depth.clamp(1, self.slots_per_core);
        (cores.saturating_mul(self.slots_per_core) / depth).max(cores)
    }

    /// Adds a worker or updates its cores, tags and whether it takes new work. Cores
    /// already reserved on it stay reserved.
    pub fn upsert_worker(&mut self, id: &str, cores: u32, tags: Tags, accepting: bool) {
        let w = self
            .workers
            .entry(id.to_string())
            .or_insert_with(|| WorkerState::new(cores));
        w.cores = cores;
        w.slots = cores.saturating_mul(self.slots_per_core);
        w.tags = tags;
        w.accepting = accepting;
    }

    /// Forgets a worker (it left or was declared failed) and returns the instances that
    /// were placed on it: the caller decides whether each is retried.
    pub fn remove_worker(&mut self, id: &str) -> Vec<InstanceKey> {
        self.workers.remove(id);
        let lost: Vec<InstanceKey> = self
            .placed
            .iter()
            .filter(|(_, (w, _, _))| w == id)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &lost {
            self.placed.remove(k);
        }
        lost
    }

    /// Checks a demand against the workers known now: refuses what no worker could
    /// ever run. Changes nothing.
    pub fn check(&self, demand: &Demand) -> Result<(), Unplaceable> {
        if demand.cores == 0 {
            return Err(Unplaceable::NoCores);
        }
        let largest = self
            .workers
            .values()
            .filter(|w| w.matches(&demand.constraints))
            .map(|w| w.cores)
            .max();
        match largest {
            None => Err(Unplaceable::NoMatchingWorker {
                constraints: demand.constraints.clone(),
            }),
            Some(largest) if largest < demand.cores => Err(Unplaceable::TooManyCores {
                cores: demand.cores,
                largest,
            }),
            Some(_) => Ok(()),
        }
    }

    /// Queues a demand (after [`check`](Self::check)); it waits until a round places it.
    pub fn enqueue(&mut self, demand: Demand) -> Result<(), Unplaceable> {
        if demand.cores == 0 {
            return Err(Unplaceable::NoCores);
        }
        if self.placed.contains_key(&demand.key) || self.queued_keys.contains(&demand.key) {
            return Err(Unplaceable::Duplicate(demand.key));
        }
        self.queued_keys.insert(demand.key.clone());
        self.queue.push_back(demand);
        Ok(())
    }

    /// Removes queued demands matching `pred` (a cancelled job); returns them.
    pub fn dequeue_where(&mut self, mut pred: impl FnMut(&InstanceKey) -> bool) -> Vec<Demand> {
        let (gone, kept): (Vec<Demand>, Vec<Demand>) =
            self.queue.drain(..).partition(|d| pred(&d.key));
        self.queue = kept.into();
        for d in &gone {
            self.queued_keys.remove(&d.key);
        }
        gone
    }

    /// Places what fits, oldest demand first; the rest stays queued.
    pub fn round(&mut self) -> Vec<Placement> {
        let mut placements = Vec::new();
        let mut waiting = VecDeque::with_capacity(self.queue.len());
        while let Some(demand) = self.queue.pop_front() {
            // No free core anywhere: the rest waits as it is (no need to ask each).
            let room = self.workers.values().any(|w| w.accepting && w.free() > 0);
            if !room {
                waiting.push_back(demand);
                waiting.extend(self.queue.drain(..));
                break;
            }
            let slots = self.slots_of(&demand);
            match self.pick(&demand, slots) {
                Some(worker) => {
                    let w = self.workers.get_mut(&worker).expect("picked from the map");
                    w.reserve(slots);
                    self.queued_keys.remove(&demand.key);
                    self.placed
                        .insert(demand.key.clone(), (worker.clone(), demand.cores, slots));
                    placements.push(Placement {
                        key: demand.key,
                        worker,
                        cores: demand.cores,
                        slots,
                    });
                }
                None => waiting.push_back(demand),
            }
        }
        self.queue = waiting;
        debug_assert_eq!(self.validate(), Ok(()));
        placements
    }

    /// Frees what an ended instance held. Unknown keys are ignored (released twice, or
    /// its worker was removed meanwhile).
    pub fn release(&mut self, key: &InstanceKey) -> Option<Placement> {
        let (worker, cores, slots) = self.placed.remove(key)?;
        if let Some(w) = self.workers.get_mut(&worker) {
            w.free_up(slots);
        }
        Some(Placement {
            key: key.clone(),
            worker,
            cores,
            slots,
        })
    }

    /// Records a placement decided before (replayed from the log after a leader
    /// change): reserves its slots without asking a strategy.
    pub fn restore(&mut self, p: &Placement) {
        if self.queued_keys.remove(&p.key) {
            self.queue.retain(|d| d.key != p.key);
        }
        if self.placed.contains_key(&p.key) {
            return;
        }
        let slots = p.slots.max(p.cores);
        if let Some(w) = self.workers.get_mut(&p.worker) {
            w.reserve(slots);
        }
        self.placed
            .insert(p.key.clone(), (p.worker.clone(), p.cores, slots));
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    pub fn running(&self) -> usize {
        self.placed.len()
    }

    pub fn worker(&self, id: &str) -> Option<&WorkerState> {
        self.workers.get(id)
    }

    pub fn workers(&self) -> impl Iterator<Item = (&str, &WorkerState)> {
        self.workers.iter().map(|(id, w)| (id.as_str(), w))
    }

    /// Where a placed instance runs.
    pub fn placement(&self, key: &InstanceKey) -> Option<&str> {
        self.placed.get(key).map(|(w, _, _)| w.as_str())
    }

    /// Checks the invariants; `Err` names the broken one.
    pub fn validate(&self) -> Result<(), String> {
        let mut used: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
        for (key, (worker, cores, slots)) in &self.placed {
            if *cores == 0 || slots < cores {
                return Err(format!("{key:?} holds {cores} cores in {slots} slots"));
            }
            let u = used.entry(worker.as_str()).or_default();
            u.0 += slots;
            u.1 += 1;
        }
        for (id, w) in &self.workers {
            let (slots, running) = used.get(id.as_str()).copied().unwrap_or_default();
            if w.used != slots || w.running != running {
                return Err(format!(
                    "worker {id}: books say {} slots / {} placed, placements say {slots} / {running}",
                    w.used, w.running
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for d in &self.queue {
            if !seen.insert(&d.key) || self.placed.contains_key(&d.key) {
                return Err(format!("{:?} is queued twice or also placed", d.key));
            }
            if !self.queued_keys.contains(&d.key) {
                return Err(format!("{:?} is queued but not in the key set", d.key));
            }
        }
        if self.queued_keys.len() != self.queue.len() {
            return Err("the queued key set and the queue differ".into());
        }
        Ok(())
    }

    /// The worker the demand's strategy picks among those that can take it now.
    fn pick(&mut self, demand: &Demand, slots: u32) -> Option<String> {
        let candidates: Vec<&str> = self
            .workers
            .iter()
            .filter(|(id, w)| {
                w.accepting
                    && w.cores >= demand.cores
                    && w.free() >= slots
                    && w.matches(&demand.constraints)
                    && !demand.exclude.contains(id.as_str())
            })
            .map(|(id, _)| id.as_str())
            .collect();
        let chosen = demand.strategy.choose(
            &candidates,
            |id| self.workers[id].running,
            self.cursor.as_deref(),
            &mut self.rng,
        )?;
        let chosen = chosen.to_string();
        // Round-robin resumes after it; least-connections breaks ties from there.
        if demand.strategy != Strategy::Random {
            self.cursor = Some(chosen.clone());
        }
        Some(chosen)
    }
}

#[cfg(test)]
mod tests;

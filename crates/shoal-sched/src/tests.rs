//! The scheduler's promises: fair shares, constraints, no over-commit, backpressure.

use std::collections::{BTreeMap, BTreeSet};

use proptest::{
    prelude::{Just, any, prop},
    prop_assert, prop_assert_eq, prop_oneof, proptest,
    strategy::Strategy as Generate,
};

use super::*;

fn key(job: &str, index: u32) -> InstanceKey {
    InstanceKey {
        job: job.into(),
        workflow: "w".into(),
        index,
        attempt: 0,
    }
}

fn demand(index: u32, cores: u32, strategy: Strategy) -> Demand {
    Demand {
        key: key("j", index),
        cores,
        constraints: Tags::new(),
        exclude: BTreeSet::new(),
        strategy,
        depth: 1,
    }
}

fn tags(pairs: &[(&str, &str)]) -> Tags {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn equal_workers(n: usize, cores: u32, seed: u64) -> Scheduler {
    let mut s = Scheduler::new(Rng::seeded(seed));
    for i in 0..n {
        s.upsert_worker(&format!("w{i:02}"), cores, Tags::new(), true);
    }
    s
}

/// Placements per worker.
fn shares(placements: &[Placement]) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for p in placements {
        *by.entry(p.worker.clone()).or_default() += 1;
    }
    by
}

/// Every strategy spreads equal work over equal workers within ±10 % of an even share,
/// whether placed in one round or one at a time (each instance released before the
/// next, the worst case for round-robin's and least-connections' memory).
#[test]
fn each_strategy_stays_within_ten_percent_of_an_even_share() {
    for strategy in [
        Strategy::RoundRobin,
        Strategy::Random,
        Strategy::LeastConnections,
    ] {
        for one_at_a_time in [false, true] {
            let (workers, per_worker) = (8usize, 2_000usize);
            let mut s = equal_workers(workers, 100_000, 7);
            let mut placed = Vec::new();
            for i in 0..(workers * per_worker) as u32 {
                s.enqueue(demand(i, 1, strategy)).unwrap();
                if one_at_a_time {
                    let p = s.round();
                    for q in &p {
                        s.release(&q.key);
                    }
                    placed.extend(p);
                }
            }
            placed.extend(s.round());
            let by = shares(&placed);
            assert_eq!(by.len(), workers, "{strategy}: every worker used");
            for (w, n) in by {
                let off = (n as f64 - per_worker as f64).abs() / per_worker as f64;
                assert!(
                    off <= 0.10,
                    "{strategy} (one at a time: {one_at_a_time}): {w} got {n}, even share {per_worker}"
                );
            }
        }
    }
}

/// Least-connections goes to the least busy worker, not the next in line.
#[test]
fn least_connections_prefers_the_idle_worker() {
    let mut s = equal_workers(3, 8, 1);
    for i in 0..4 {
        s.enqueue(demand(i, 1, Strategy::RoundRobin)).unwrap();
    }
    let first = s.round(); // w00, w01, w02, w00
    assert_eq!(
        first.iter().map(|p| p.worker.as_str()).collect::<Vec<_>>(),
        ["w00", "w01", "w02", "w00"]
    );
    s.release(&key("j", 1)); // w01 is now idle
    s.enqueue(demand(10, 1, Strategy::LeastConnections))
        .unwrap();
    assert_eq!(s.round()[0].worker, "w01");
}

/// Constraints and exclusions are hard: a demand no worker satisfies waits, and one
/// that could never run anywhere is refused up front, naming the rule.
#[test]
fn constraints_exclusions_and_refusals() {
    let mut s = Scheduler::new(Rng::seeded(3));
    s.upsert_worker("cpu1", 4, tags(&[("gpu", "false")]), true);
    s.upsert_worker("gpu1", 4, tags(&[("gpu", "true"), ("zone", "a")]), true);
    s.upsert_worker("gpu2", 2, tags(&[("gpu", "true"), ("zone", "b")]), true);

    let mut gpu = demand(1, 1, Strategy::RoundRobin);
    gpu.constraints = tags(&[("gpu", "true")]);
    gpu.exclude.insert("gpu1".into());
    s.enqueue(gpu).unwrap();
    assert_eq!(s.round()[0].worker, "gpu2");

    let mut big = demand(2, 3, Strategy::RoundRobin);
    big.constraints = tags(&[("zone", "b")]);
    assert_eq!(
        s.check(&big),
        Err(Unplaceable::TooManyCores {
            cores: 3,
            largest: 2
        })
    );
    let mut nowhere = demand(3, 1, Strategy::Random);
    nowhere.constraints = tags(&[("arch", "arm")]);
    assert!(matches!(
        s.check(&nowhere),
        Err(Unplaceable::NoMatchingWorker { .. })
    ));
    assert_eq!(
        s.check(&demand(4, 0, Strategy::Random)),
        Err(Unplaceable::NoCores)
    );
    assert!(matches!(
        s.enqueue(demand(1, 1, Strategy::Random)),
        Err(Unplaceable::Duplicate(_))
    ));
    assert_eq!(s.validate(), Ok(()));
}

/// With no capacity, work queues (never dropped); freeing cores lets the oldest
/// demand that fits go, and a worker that stops accepting keeps its instances but
/// gets no new ones.
#[test]
fn backpressure_queues_and_drains_when_capacity_frees() {
    let mut s = equal_workers(2, 2, 5);
    for i in 0..6 {
        s.enqueue(demand(i, 1, Strategy::LeastConnections)).unwrap();
    }
    assert_eq!(s.round().len(), 4);
    assert_eq!(s.queued(), 2);
    assert!(s.round().is_empty(), "nothing frees, nothing moves");
    s.release(&key("j", 0));
    let next = s.round();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].key, key("j", 4), "oldest first");
    s.upsert_worker("w00", 2, Tags::new(), false);
    s.release(&key("j", 2));
    assert!(
        s.round().iter().all(|p| p.worker != "w00"),
        "a draining worker gets nothing new"
    );
    let lost = s.remove_worker("w01");
    assert!(!lost.is_empty());
    assert_eq!(s.validate(), Ok(()));
}

/// A bigger demand at the head of the queue does not block smaller ones behind it.
#[test]
fn a_big_demand_does_not_block_the_queue() {
    let mut s = equal_workers(1, 4, 9);
    s.enqueue(demand(0, 3, Strategy::RoundRobin)).unwrap();
    assert_eq!(s.round().len(), 1);
    s.enqueue(demand(1, 2, Strategy::RoundRobin)).unwrap();
    s.enqueue(demand(2, 1, Strategy::RoundRobin)).unwrap();
    let p = s.round();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].key, key("j", 2));
    assert_eq!(s.queued(), 1);
}

/// A new leader restores the placements from the log and continues from there.
#[test]
fn restored_placements_reserve_their_cores() {
    let mut s = equal_workers(2, 2, 11);
    s.restore(&Placement {
        key: key("j", 0),
        worker: "w00".into(),
        cores: 2,
        slots: 2,
    });
    s.enqueue(demand(1, 1, Strategy::RoundRobin)).unwrap();
    assert_eq!(s.round()[0].worker, "w01");
    assert_eq!(s.validate(), Ok(()));
}

#[derive(Debug, Clone)]
enum Step {
    Enqueue {
        cores: u32,
        constraint: Option<u8>,
        strategy: u8,
        depth: u32,
    },
    Round,
    Release(usize),
    Worker {
        n: u8,
        cores: u32,
        tag: u8,
        accepting: bool,
    },
    Remove(u8),
}

fn step() -> impl Generate<Value = Step> {
    prop_oneof![
        4 => (1u32..5, proptest::option::of(0u8..3), 0u8..3, 1u32..17)
            .prop_map(|(cores, constraint, strategy, depth)| Step::Enqueue { cores, constraint, strategy, depth }),
        3 => Just(Step::Round),
        3 => (0usize..64).prop_map(Step::Release),
        1 => (0u8..6, 0u32..9, 0u8..3, any::<bool>())
            .prop_map(|(n, cores, tag, accepting)| Step::Worker { n, cores, tag, accepting }),
        1 => (0u8..6).prop_map(Step::Remove),
    ]
}

proptest! {
    /// Any interleaving of demands, rounds, releases and worker changes: no round puts
    /// more slots on a worker than it had free (with one slot per core: more cores),
    /// no instance goes to a worker with fewer cores than it needs, every placement
    /// honours its constraints and exclusions and the accepting flag, the books stay
    /// consistent, and nothing queued is lost — once the workers have room, everything
    /// gets placed.
    #[test]
    fn placements_respect_capacity_and_constraints(
        steps in prop::collection::vec(step(), 1..120),
        seed in any::<u64>(),
        slots_per_core in prop_oneof![Just(1u32), Just(8u32)],
    ) {
        let mut s = Scheduler::with_slots_per_core(Rng::seeded(seed), slots_per_core);
        let mut next = 0u32;
        let mut demands: BTreeMap<InstanceKey, Demand> = BTreeMap::new();
        let mut running: Vec<InstanceKey> = Vec::new();
        for st in steps {
            match st {
                Step::Enqueue { cores, constraint, strategy, depth } => {
                    let mut d = demand(next, cores, [Strategy::RoundRobin, Strategy::Random, Strategy::LeastConnections][strategy as usize]);
                    d.depth = depth;
                    next += 1;
                    if let Some(t) = constraint {
                        d.constraints = tags(&[("t", &t.to_string())]);
                    }
                    if next.is_multiple_of(5) {
                        d.exclude.insert("w1".into());
                    }
                    demands.insert(d.key.clone(), d.clone());
                    s.enqueue(d).unwrap();
                }
                Step::Round => {
                    let before: BTreeMap<String, (u32, bool, Tags, u32)> = s
                        .workers()
                        .map(|(id, w)| (id.to_string(), (w.free(), w.accepting, w.tags.clone(), w.cores)))
                        .collect();
                    let mut added: BTreeMap<String, u32> = BTreeMap::new();
                    for p in s.round() {
                        let d = &demands[&p.key];
                        let (free, accepting, wtags, cores) = &before[&p.worker];
                        prop_assert!(*cores >= d.cores, "{} has {} cores, the instance needs {}", p.worker, cores, d.cores);
                        prop_assert!(p.slots >= p.cores);
                        if slots_per_core == 1 {
                            prop_assert_eq!(p.slots, p.cores);
                        }
                        prop_assert!(*accepting, "placed on a worker that does not accept");
                        prop_assert!(!d.exclude.contains(&p.worker), "placed on an excluded worker");
                        prop_assert!(d.constraints.iter().all(|(k, v)| wtags.get(k) == Some(v)), "constraint broken");
                        let a = added.entry(p.worker.clone()).or_default();
                        *a += p.slots;
                        prop_assert!(*a <= *free, "{} over-committed: {} placed, {} were free", p.worker, a, free);
                        running.push(p.key);
                    }
                }
                Step::Release(i) => {
                    if !running.is_empty() {
                        let k = running.swap_remove(i % running.len());
                        s.release(&k);
                    }
                }
                Step::Worker { n, cores, tag, accepting } => {
                    s.upsert_worker(&format!("w{n}"), cores, tags(&[("t", &tag.to_string())]), accepting);
                }
                Step::Remove(n) => {
                    for k in s.remove_worker(&format!("w{n}")) {
                        running.retain(|r| *r != k);
                    }
                }
            }
            prop_assert_eq!(s.validate(), Ok(()));
        }
        // Nothing is lost: give every tag value a big idle worker and release all.
        for k in running.drain(..) {
            s.release(&k);
        }
        for t in 0..3u8 {
            s.upsert_worker(&format!("big{t}"), 1_000, tags(&[("t", &t.to_string())]), true);
        }
        let queued = s.queued();
        prop_assert_eq!(s.round().len(), queued);
        prop_assert_eq!(s.queued(), 0);
    }
}

/// With 8 slots per core, short work (depth 8) fills a 2-core worker 16 deep, long
/// work (depth 1) only 2 deep, and a 4-core instance never lands on it however short.
#[test]
fn slots_let_short_work_wait_on_a_worker() {
    let mut s = Scheduler::with_slots_per_core(Rng::seeded(3), 8);
    s.upsert_worker("w", 2, Tags::new(), true);
    for i in 0..40 {
        let mut d = demand(i, 1, Strategy::LeastConnections);
        d.depth = 8;
        s.enqueue(d).unwrap();
    }
    assert_eq!(s.round().len(), 16);
    let mut t = Scheduler::with_slots_per_core(Rng::seeded(3), 8);
    t.upsert_worker("w", 2, Tags::new(), true);
    for i in 0..40 {
        t.enqueue(demand(i, 1, Strategy::LeastConnections)).unwrap();
    }
    assert_eq!(t.round().len(), 2);
    assert_eq!(t.validate(), Ok(()));
    // 4 cores × 8 / 8 = 4 slots would fit in the 16 free, but the worker has 2 cores.
    let mut u = Scheduler::with_slots_per_core(Rng::seeded(3), 8);
    u.upsert_worker("w", 2, Tags::new(), true);
    let mut big = demand(99, 4, Strategy::LeastConnections);
    big.depth = 8;
    u.enqueue(big).unwrap();
    assert!(
        u.round().is_empty(),
        "a 4-core instance went to a 2-core worker"
    );
    assert_eq!(u.queued(), 1);
}

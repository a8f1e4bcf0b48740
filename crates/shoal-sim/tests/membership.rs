//! Membership under simulated faults, on virtual time, seeded.
//!
//! Each test runs 50 seeds; a failure names its seed, and `SHOAL_SIM_SEED=<seed>`
//! replays exactly that run.

use std::time::Duration;

use shoal_membership::EventKind;
use shoal_sim::{SimCluster, seeds};
use shoal_types::{MemberState, Profile};

const S: fn(u64) -> Duration = Duration::from_secs;
const MS: fn(u64) -> Duration = Duration::from_millis;

fn converged(n: usize, seed: u64) -> SimCluster {
    let mut sim = SimCluster::new(n, seed, Profile::Local, Some([42; 32]));
    let took = sim.run_until(S(30), |s| s.converged());
    assert!(
        took.is_some(),
        "seed {seed}: {n} nodes did not converge in 30 s"
    );
    sim
}

/// Sixteen nodes joining through one seed all come to see each other alive, and learn
/// each other's metadata through gossip alone.
#[test]
fn sixteen_nodes_converge_and_share_metadata() {
    for seed in seeds(1..=50) {
        let mut sim = converged(16, seed);
        sim.run_for(S(2));
        let snap = sim.core(5).unwrap().snapshot(sim.now);
        assert_eq!(snap.members.len(), 16, "seed {seed}");
        assert!(
            snap.members.iter().all(|m| m.role.is_some()),
            "seed {seed}: every member's metadata arrived: {:?}",
            snap.members
                .iter()
                .filter(|m| m.role.is_none())
                .map(|m| &m.id)
                .collect::<Vec<_>>()
        );
        assert!(
            sim.failures().is_empty(),
            "seed {seed}: {:?}",
            sim.failures()
        );
    }
}

/// 10% of datagrams lost for five simulated minutes: nobody healthy is declared failed.
/// Indirect probes, Lifeguard and refutation must absorb the loss.
#[test]
fn ten_percent_loss_for_five_minutes_declares_no_one_failed() {
    for seed in seeds(101..=150) {
        let mut sim = converged(16, seed);
        sim.set_loss(0.10);
        sim.run_for(S(300));
        let failures = sim.failures();
        assert!(
            failures.is_empty(),
            "seed {seed}: false positives: {failures:?}"
        );
        assert!(
            sim.lost > 1000,
            "seed {seed}: the loss was really applied ({})",
            sim.lost
        );
        let raised: u64 = (0..16)
            .map(|i| sim.core(i).unwrap().stats().suspicions_raised)
            .sum();
        let refuted: u64 = (0..16)
            .map(|i| sim.core(i).unwrap().stats().suspicions_refuted)
            .sum();
        eprintln!(
            "seed {seed}: suspicions raised {raised}, refuted {refuted}, lost {}",
            sim.lost
        );
    }
}

/// A crashed node is declared failed by every survivor within the local profile's
/// budget (2 s, the benchmark's p99 target), and the failure is an event everywhere.
#[test]
fn a_crashed_node_is_declared_failed_by_all_within_budget() {
    for seed in seeds(201..=250) {
        let mut sim = converged(5, seed);
        sim.run_for(S(3));
        sim.crash(3);
        let took = sim.run_until(S(10), |s| s.all_see(3, MemberState::Failed));
        let took = took.unwrap_or_else(|| panic!("seed {seed}: never declared failed"));
        assert!(took <= MS(2_000), "seed {seed}: took {took:?}");
        let observers: Vec<usize> = sim
            .events_about(3, EventKind::NodeFailed)
            .into_iter()
            .map(|(o, _)| o)
            .collect();
        assert_eq!(
            observers.len(),
            4,
            "seed {seed}: one failure event per survivor"
        );
        // Nobody else was harmed.
        assert_eq!(sim.failures().len(), 4, "seed {seed}: {:?}", sim.failures());
    }
}

/// A node cut off by a partition is declared failed by the majority; once the partition
/// heals it comes back as alive everywhere (under a renewed identity).
#[test]
fn a_partitioned_node_fails_then_rejoins_after_healing() {
    for seed in seeds(301..=350) {
        let mut sim = converged(5, seed);
        sim.partition(&[4], &[0, 1, 2, 3]);
        let took = sim.run_until(S(10), |s| {
            (0..4).all(|o| s.state(o, 4) == Some(MemberState::Failed))
        });
        assert!(
            took.is_some(),
            "seed {seed}: the majority never declared the cut-off node failed"
        );
        for o in 0..4 {
            for t in 0..4 {
                if o != t {
                    assert_eq!(sim.state(o, t), Some(MemberState::Alive), "seed {seed}");
                }
            }
        }
        sim.heal();
        let back = sim.run_until(S(30), |s| s.converged());
        assert!(
            back.is_some(),
            "seed {seed}: the node did not rejoin after healing"
        );
        assert!(
            !sim.events_about(4, EventKind::NodeRecovered).is_empty(),
            "seed {seed}"
        );
    }
}

/// A one-way partition (4 can send, cannot receive from 0) must not make the cluster
/// lose anyone for good: indirect probes route around it.
#[test]
fn a_one_way_block_is_routed_around() {
    for seed in seeds(401..=450) {
        let mut sim = converged(5, seed);
        sim.block_one_way(0, 4);
        sim.run_for(S(30));
        assert!(
            (1..4).all(|o| sim.state(o, 4) == Some(MemberState::Alive)),
            "seed {seed}: nodes with a working path still see 4 alive"
        );
        sim.heal();
        assert!(
            sim.run_until(S(30), |s| s.converged()).is_some(),
            "seed {seed}"
        );
    }
}

/// A restarted node (same id, same address) is alive everywhere again.
#[test]
fn a_restarted_node_comes_back_alive() {
    for seed in seeds(501..=550) {
        let mut sim = converged(5, seed);
        sim.crash(2);
        assert!(
            sim.run_until(S(10), |s| s.all_see(2, MemberState::Failed))
                .is_some()
        );
        sim.restart(2);
        assert!(
            sim.run_until(S(15), |s| s.converged()).is_some(),
            "seed {seed}"
        );
    }
}

/// A tag set at runtime reaches every member by gossip; a node leaving is seen `left`.
#[test]
fn tags_spread_and_leaving_is_not_failing() {
    for seed in seeds(601..=650) {
        let mut sim = converged(8, seed);
        sim.with_core(3, |c, now| c.set_tag("gpu", "true", now).unwrap());
        let spread = sim.run_until(S(5), |s| {
            (0..8).filter(|&o| o != 3).all(|o| {
                let snap = s.core(o).unwrap().snapshot(s.now);
                let m = snap.members.iter().find(|m| m.id == "n3").unwrap();
                m.tags.get("gpu").map(String::as_str) == Some("true")
            })
        });
        assert!(
            spread.is_some(),
            "seed {seed}: the tag did not reach everyone"
        );
        sim.with_core(5, |c, now| c.leave(now));
        sim.run_for(MS(300));
        sim.crash(5);
        let seen = sim.run_until(S(5), |s| s.all_see(5, MemberState::Left));
        assert!(seen.is_some(), "seed {seed}: not everyone saw node 5 leave");
        assert!(
            sim.events_about(5, EventKind::NodeFailed).is_empty(),
            "seed {seed}"
        );
    }
}

/// A node holding another cluster key never becomes a member, and its packets are
/// counted as dropped.
#[test]
fn a_node_with_another_key_never_joins() {
    for seed in seeds(701..=750) {
        let mut sim = converged(4, seed);
        let stranger = sim.add_node("stranger", vec![[7; 32]]);
        sim.run_for(S(10));
        for o in 0..4 {
            assert_eq!(sim.state(o, stranger), None, "seed {seed}: observer {o}");
        }
        let dropped: u64 = sim.core(0).unwrap().stats().dropped.values().sum();
        assert!(
            dropped > 0,
            "seed {seed}: the stranger's announces were counted"
        );
        assert_eq!(
            sim.core(stranger).unwrap().snapshot(sim.now).members.len(),
            1
        );
    }
}

/// Two nodes: the survivor probes the dead one every period, and foca re-submits the
/// suspicion timer each time. The suspicion must still run out (regression: it was
/// restarted on every probe and never fired).
#[test]
fn a_two_node_cluster_still_declares_a_crashed_peer_failed() {
    for seed in seeds(801..=850) {
        let mut sim = converged(2, seed);
        sim.crash(1);
        let took = sim.run_until(S(10), |s| s.state(0, 1) == Some(MemberState::Failed));
        let took = took.unwrap_or_else(|| panic!("seed {seed}: never declared failed"));
        assert!(took <= MS(2_000), "seed {seed}: took {took:?}");
    }
}

/// Nodes started while their only seed is down keep retrying (capped backoff) and join
/// once it comes up.
#[test]
fn nodes_retry_a_seed_that_is_down() {
    for seed in seeds(901..=950) {
        let mut sim = SimCluster::new(5, seed, Profile::Local, Some([42; 32]));
        sim.crash(0);
        sim.run_for(S(5));
        assert!((1..5).all(|o| sim.core(o).unwrap().snapshot(sim.now).members.len() == 1));
        sim.restart(0);
        let took = sim.run_until(S(10), |s| s.converged());
        assert!(
            took.is_some(),
            "seed {seed}: never joined after the seed came up"
        );
    }
}

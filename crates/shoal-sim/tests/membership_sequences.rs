//! Exact sequences: what one member reports about another, in order and nothing more,
//! through the three ways a member's life goes on a three-node cluster (the real
//! membership cores on the simulated network) — the way openraft's engine tests assert
//! whole command vectors rather than a final state.
//!
//! - suspect → refute: the target is cut off until an observer suspects it, then the
//!   cut heals: the observer reports `suspect`, then `alive` again, never `failed`, and
//!   the target has refuted exactly once (its incarnation went up by one);
//! - suspect → down: the target crashes: `suspect`, then `failed`, nothing else;
//! - graceful leave: the target leaves: `updated` (lifecycle `leaving`, still alive)
//!   then `left` — or `left` alone when the leaving metadata arrives after the
//!   departure (it is history then, not an update) — never `suspect` or `failed`; and
//!   the target's own
//!   last words to each other member are, in order, its lifecycle change gossiped, its
//!   leaving metadata pushed, and the leave announcement.

use std::time::Duration;

use shoal_membership::EventKind;
use shoal_sim::{SimCluster, seeds};
use shoal_types::{Lifecycle, MemberState, Profile};

const TARGET: usize = 2;
/// Envelope kinds (shoal-membership's wire module).
const SWIM: u8 = 1;
const META_PUSH: u8 = 2;
const OBSERVER: usize = 0;

fn converged(seed: u64) -> SimCluster {
    let mut sim = SimCluster::new(3, seed, Profile::Local, Some([7; 32]));
    assert!(
        sim.run_until(Duration::from_secs(30), |s| s.converged())
            .is_some(),
        "seed {seed}: no convergence"
    );
    // Settle: joins and metadata pushes are done before the sequence starts.
    sim.run_for(Duration::from_secs(2));
    sim
}

/// What `OBSERVER` reported about `TARGET` after `from`, as (kind, state) in order.
fn reported(sim: &SimCluster, from: usize) -> Vec<(EventKind, MemberState)> {
    let id = &sim.nodes[TARGET].id;
    sim.nodes[OBSERVER].events[from..]
        .iter()
        .filter(|(_, e)| &e.member.id == id)
        .map(|(_, e)| (e.kind, e.member.state))
        .collect()
}

fn incarnation(sim: &SimCluster) -> u16 {
    let snap = sim.core(OBSERVER).expect("observer runs").snapshot(sim.now);
    snap.members
        .iter()
        .find(|m| m.id == sim.nodes[TARGET].id)
        .map(|m| m.incarnation)
        .expect("observer knows the target")
}

#[test]
fn a_suspect_that_refutes_is_reported_suspect_then_alive() {
    for seed in seeds(1..=50) {
        let mut sim = converged(seed);
        let from = sim.nodes[OBSERVER].events.len();
        let before = incarnation(&sim);
        sim.partition(&[TARGET], &[0, 1]);
        let suspected = sim.run_until(Duration::from_secs(10), |s| {
            s.state(OBSERVER, TARGET) == Some(MemberState::Suspect)
        });
        assert!(suspected.is_some(), "seed {seed}: never suspected");
        sim.heal();
        sim.run_for(Duration::from_secs(10));
        assert_eq!(
            reported(&sim, from),
            [
                (EventKind::NodeUpdated, MemberState::Suspect),
                (EventKind::NodeUpdated, MemberState::Alive),
            ],
            "seed {seed}"
        );
        assert_eq!(
            incarnation(&sim),
            before + 1,
            "seed {seed}: the target refuted exactly once"
        );
        assert!(
            sim.failures().is_empty(),
            "seed {seed}: {:?}",
            sim.failures()
        );
    }
}

#[test]
fn a_crashed_member_is_reported_suspect_then_failed() {
    for seed in seeds(101..=150) {
        let mut sim = converged(seed);
        let from = sim.nodes[OBSERVER].events.len();
        sim.crash(TARGET);
        sim.run_for(Duration::from_secs(15));
        assert_eq!(
            reported(&sim, from),
            [
                (EventKind::NodeUpdated, MemberState::Suspect),
                (EventKind::NodeFailed, MemberState::Failed),
            ],
            "seed {seed}"
        );
    }
}

#[test]
fn a_member_that_leaves_is_reported_leaving_then_left() {
    for seed in seeds(201..=250) {
        let mut sim = converged(seed);
        let from = sim.nodes[OBSERVER].events.len();
        sim.record_sends(true);
        sim.with_core(TARGET, |core, now| core.leave(now));
        let last_words: Vec<(usize, u8)> = sim
            .sends
            .iter()
            .filter(|(_, from, _, _)| *from == TARGET)
            .map(|(_, _, to, kind)| (*to, *kind))
            .collect();
        // To each member, in order: the lifecycle change gossiped (SWIM), the leaving
        // metadata pushed directly, and foca's leave announcement (SWIM).
        for member in [0, 1] {
            let kinds: Vec<u8> = last_words
                .iter()
                .filter(|(to, _)| *to == member)
                .map(|(_, kind)| *kind)
                .collect();
            assert_eq!(
                kinds,
                [SWIM, META_PUSH, SWIM],
                "seed {seed}: to member {member}"
            );
        }
        sim.crash(TARGET); // the process exits after its announcement
        sim.run_for(Duration::from_secs(15));
        // The leaving metadata and the leave announcement race over the network: the
        // update arrives first (reported), or after the departure (history, not
        // reported). Nothing else either way.
        let seen = reported(&sim, from);
        let leaving_first = [
            (EventKind::NodeUpdated, MemberState::Alive),
            (EventKind::NodeLeft, MemberState::Left),
        ];
        let left_only = [(EventKind::NodeLeft, MemberState::Left)];
        assert!(
            seen == leaving_first || seen == left_only,
            "seed {seed}: {seen:?}"
        );
        if seen == leaving_first {
            let update = sim.nodes[OBSERVER].events[from..]
                .iter()
                .find(|(_, e)| e.kind == EventKind::NodeUpdated)
                .map(|(_, e)| e.member.lifecycle);
            assert_eq!(update, Some(Some(Lifecycle::Leaving)), "seed {seed}");
        }
        assert!(
            sim.failures().is_empty(),
            "seed {seed}: {:?}",
            sim.failures()
        );
    }
}

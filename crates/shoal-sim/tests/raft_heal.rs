//! Partitions that heal: a replica cut off from its group must be caught up by the
//! leader once the network heals, without a restart.
//!
//! Three replicas (shoal's `RaftGroup` on the in-process network, paused clock, one
//! thread) behind the same per-peer circuit breakers as the gRPC network, on a network
//! that drops packets instead of refusing them (a message that does not get through
//! hangs past its deadline, so openraft's own timeouts cancel the calls — what a
//! firewall's drop rule does to a real cluster). A writer commits through whichever
//! replica leads, every 20 ms, all through. Per seed, one cut:
//!
//! - **leader**: the leader is cut off from both followers (both directions);
//! - **one-way**: the followers stop hearing the leader, which still hears them;
//! - **bridge**: the leader and one follower stop hearing each other; the other
//!   follower still sees both.
//!
//! The cut lasts 2–7 s, then heals. Checked: a cut-off leader reports that it lost its
//! quorum within its lease and a heartbeat; within 2 s of the heal, every replica has
//! applied the first write committed after the heal — the cut-off replica included.
//!
//! `SHOAL_SIM_SEED=<seed>` replays one seed, `SHOAL_SIM_SEEDS=a..b` runs a range;
//! `--nocapture` prints the heal → caught-up times.

use std::{cell::Cell, rc::Rc, time::Duration};

use rand::{RngExt as _, SeedableRng, rngs::StdRng};
use shoal_raft::group::{GroupOptions, RaftTiming, grpc::peer_breaker};
use shoal_sim::{
    raft::{RaftCluster, commit, paused_local},
    seeds,
};
use shoal_state::{ClientTag, Command, KvCommand, Request};
use tokio::time::Instant;

/// How long after the heal every replica must have caught up.
const CATCH_UP: Duration = Duration::from_secs(2);
/// How soon a cut-off leader must report that it lost its quorum: its lease (150 ms at
/// `local`) plus one heartbeat interval.
const QUORUM_LOSS_SEEN: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy)]
enum Cut {
    Leader,
    OneWay,
    Bridge,
}

fn options() -> GroupOptions {
    shoal_sim::raft::options(200, 50)
}

fn put(seq: u64) -> Request {
    Request {
        client: Some(ClientTag { client_id: 1, seq }),
        command: Command::Kv(KvCommand::Put {
            key: format!("k{seq:05}"),
            value: b"v".to_vec(),
        }),
    }
}

/// One seed of one kind of cut; returns the time from the heal until every replica
/// applied the first write committed after it.
async fn run(seed: u64, cut: Cut) -> Duration {
    let mut rng = StdRng::seed_from_u64(seed);
    let cluster = RaftCluster::new(&format!("heal-{cut:?}"), seed, 3, options());
    cluster.router.set_blackhole(true);
    cluster
        .router
        .set_breakers(Some(peer_breaker(&RaftTiming::LOCAL)));
    cluster.form().await;
    let fail = |what: String| -> ! {
        panic!(
            "partition heal, {cut:?} cut, seed {seed}: {what}\nreplay: SHOAL_SIM_SEED={seed} cargo test -p shoal-sim --test raft_heal"
        )
    };

    // The writer: one write every 20 ms through whichever replica leads.
    let seq = Rc::new(Cell::new(0u64));
    let writing = Rc::new(Cell::new(true));
    let writer = {
        let (live, seq, writing) = (cluster.live.clone(), seq.clone(), writing.clone());
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        tokio::task::spawn_local(async move {
            while writing.get() {
                let n = seq.get() + 1;
                seq.set(n);
                commit(&live, &mut rng, put(n)).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    tokio::time::sleep(Duration::from_millis(rng.random_range(300..1000))).await;
    let leader = cluster
        .group(1)
        .expect("replica 1")
        .await_leader(None, Duration::from_secs(5))
        .await
        .unwrap_or_else(|| fail("no leader before the cut".into()))
        .0;
    let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    let router = &cluster.router;
    match cut {
        Cut::Leader => router.set_cut(leader, true),
        Cut::OneWay => {
            for f in &followers {
                router.set_blocked(leader, *f, true);
            }
        }
        Cut::Bridge => {
            router.set_blocked(leader, followers[1], true);
            router.set_blocked(followers[1], leader, true);
        }
    }
    let cut_at = Instant::now();
    if let Cut::Leader = cut {
        // The isolated leader says at once that it lost its quorum: within its lease
        // (150 ms at `local`) and one heartbeat.
        let old = cluster.group(leader).expect("running");
        while !old.status().quorum_lost {
            if cut_at.elapsed() > QUORUM_LOSS_SEEN {
                fail(format!(
                    "{:?} into the cut the isolated leader still reports {:?}",
                    cut_at.elapsed(),
                    old.status()
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let cut_for = Duration::from_millis(rng.random_range(2_000..7_000));
    tokio::time::sleep(cut_for.saturating_sub(cut_at.elapsed())).await;
    router.heal();
    let healed = Instant::now();
    writing.set(false);
    if tokio::time::timeout(Duration::from_secs(2), writer)
        .await
        .is_err()
    {
        fail("the writer's last write did not commit within 2 s of the heal".into());
    }
    // The first write committed after the heal: every replica must apply it.
    let after = commit(&cluster.live, &mut rng, put(seq.get() + 1)).await;
    let target = after.index.0;
    if std::env::var_os("SHOAL_SIM_TRACE").is_some() {
        eprintln!(
            "seed {seed}: the write after the heal committed {:?} after it",
            healed.elapsed()
        );
    }
    let caught_up = loop {
        let applied: Vec<(u64, u64, &'static str)> = (1..=3)
            .map(|id| {
                let st = cluster.group(id).expect("running").status();
                (id, st.applied_index, st.role)
            })
            .collect();
        if applied.iter().all(|(_, a, _)| *a >= target) {
            break healed.elapsed();
        }
        if healed.elapsed() > CATCH_UP {
            fail(format!(
                "{:?} after the heal, replicas (id, applied, role) are {applied:?}; the write after the heal is at {target} (leader before the cut: {leader})",
                healed.elapsed()
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    cluster.shutdown().await;
    caught_up
}

fn check(cut: Cut, default_seeds: std::ops::Range<u64>) {
    let mut times: Vec<Duration> = seeds(default_seeds)
        .into_iter()
        .map(|seed| paused_local(run(seed, cut)))
        .collect();
    times.sort();
    eprintln!(
        "{cut:?} cut, {} seeds: heal → every replica caught up: median {:?}, max {:?} (simulated time)",
        times.len(),
        times[times.len() / 2],
        times[times.len() - 1]
    );
}

#[test]
fn an_isolated_leader_catches_up_after_the_heal() {
    check(Cut::Leader, 0..20);
}

#[test]
fn followers_cut_off_one_way_catch_up_after_the_heal() {
    check(Cut::OneWay, 100..120);
}

#[test]
fn a_bridged_partition_catches_up_after_the_heal() {
    check(Cut::Bridge, 200..220);
}

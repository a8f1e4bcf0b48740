//! Three real manager processes form their DC's Raft group through gossip
//! (`--bootstrap-expect 3`), agree on a leader, elect a new one after the leader is
//! killed with SIGKILL, and take the old leader back as a follower after a restart
//! (its log recovered from SQLite).

mod common;

use std::time::Duration;

use common::*;

const LONG: Duration = Duration::from_secs(30);

#[test]
fn managers_bootstrap_fail_over_and_recover() {
    let mut nodes = start_managers();
    let leader = wait_for_leader(&nodes);
    let doc = status(&nodes[0]).unwrap();
    let raft = doc.raft.unwrap();
    assert_eq!(raft["voters"].as_array().unwrap().len(), 3);
    assert_eq!(raft["quorum"], 2);

    let victim = nodes.iter().position(|n| n.id == leader).unwrap();
    nodes[victim].kill9();
    let survivors: Vec<&Proc> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, n)| n)
        .collect();
    wait_for("the survivors agree on a new leader", LONG, || {
        agreed_leader(&survivors).is_some_and(|l| l != leader)
    });

    let seed = survivors[0].tcp;
    nodes[victim] = restart(&nodes[victim], &[seed], MANAGER_ARGS);
    wait_for(
        "the old leader is back as a follower of the new one",
        LONG,
        || raft_view(&nodes[victim]).is_some_and(|(l, _, role)| l != leader && role == "follower"),
    );
}

//! Three real manager processes form their DC's Raft group through gossip
//! (`--bootstrap-expect 3`), agree on a leader, elect a new one after the leader is
//! killed with SIGKILL, and take the old leader back as a follower after a restart
//! (its log recovered from SQLite).

mod common;

use std::time::Duration;

use common::*;

const LONG: Duration = Duration::from_secs(30);

fn raft_view(p: &Proc) -> Option<(String, u64, String)> {
    let doc = status(p)?;
    let raft = doc.raft?;
    Some((
        raft["leader_id"].as_str()?.to_string(),
        raft["term"].as_u64()?,
        raft["role"].as_str()?.to_string(),
    ))
}

/// The leader every node in `nodes` agrees on, if they do.
fn agreed_leader(nodes: &[&Proc]) -> Option<String> {
    let views: Vec<_> = nodes.iter().map(|p| raft_view(p)).collect::<Option<_>>()?;
    let first = views.first()?.0.clone();
    views.iter().all(|v| v.0 == first).then_some(first)
}

#[test]
fn managers_bootstrap_fail_over_and_recover() {
    let extra = ["--role", "manager", "--bootstrap-expect", "3"];
    let m1 = start_node_in(
        "m1",
        "127.0.0.1:0",
        &[],
        Some(KEY),
        tempdir::Dir::new("m1"),
        &extra,
    );
    let m2 = start_node_in(
        "m2",
        "127.0.0.1:0",
        &[m1.tcp],
        Some(KEY),
        tempdir::Dir::new("m2"),
        &extra,
    );
    let m3 = start_node_in(
        "m3",
        "127.0.0.1:0",
        &[m1.tcp],
        Some(KEY),
        tempdir::Dir::new("m3"),
        &extra,
    );
    let mut nodes = [m1, m2, m3];
    let mut leader = String::new();
    wait_for("one leader agreed by all three", LONG, || {
        agreed_leader(&nodes.iter().collect::<Vec<_>>()).is_some_and(|l| {
            leader = l;
            true
        })
    });
    let doc = status(&nodes[0]).unwrap();
    let raft = doc.raft.unwrap();
    assert_eq!(raft["voters"].as_array().unwrap().len(), 3);
    assert_eq!(raft["quorum"], 2);

    let victim = nodes.iter().position(|n| n.id == leader).unwrap();
    let (addr, dir) = (nodes[victim].tcp, nodes[victim].data_dir.clone());
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
    nodes[victim] = start_node_in(&leader, &addr.to_string(), &[seed], Some(KEY), dir, &extra);
    wait_for(
        "the old leader is back as a follower of the new one",
        LONG,
        || raft_view(&nodes[victim]).is_some_and(|(l, _, role)| l != leader && role == "follower"),
    );
}

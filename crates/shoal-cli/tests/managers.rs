//! The managers' group changes shape on real processes: a manager that starts later
//! joins as a learner and becomes a voter; draining the leader hands leadership over
//! and leaves the voter set; `managers remove` and `managers add` change the voters by
//! joint consensus; a drain that would lose the quorum is refused and changes nothing.

mod common;

use std::time::Duration;

use common::*;

const LONG: Duration = Duration::from_secs(30);

fn quorum(p: &Proc) -> Option<serde_json::Value> {
    rt().block_on(p.client().quorum()).ok()
}

fn voters(p: &Proc) -> Vec<String> {
    quorum(p)
        .and_then(|q| {
            q["voters"].as_array().map(|v| {
                v.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
        })
        .unwrap_or_default()
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = shoal().args(args).output().expect("run shoal");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn managers_join_drain_leave_and_return() {
    let [m1, m2, m3] = start_managers();
    wait_for("a leader", LONG, || {
        agreed_leader(&[&m1, &m2, &m3]).is_some()
    });
    // m4 starts later without --bootstrap-expect: the leader adds it.
    let m4 = start_node_in(
        "m4",
        "127.0.0.1:0",
        &[m1.tcp],
        Some(KEY),
        tempdir::Dir::new("m4"),
        &["--role", "manager"],
    );
    wait_for("m4 becomes a voter and is active", LONG, || {
        quorum(&m1).is_some_and(|q| {
            q["voters"].as_array().is_some_and(|v| v.len() == 4)
                && q["peers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .all(|p| p["lifecycle"] == "active")
        })
    });
    let nodes = [m1, m2, m3, m4];
    let (code, out, _) = cli(&["managers", "ls", "--addr", &nodes[3].tcp.to_string()]);
    assert_eq!(code, 0);
    assert!(
        out.contains("4 voters") && out.contains("quorum 3"),
        "{out}"
    );

    // Drain the leader: leadership moves first, then it leaves the voter set.
    let leader = agreed_leader(&nodes.iter().collect::<Vec<_>>()).expect("agreed leader");
    let li = nodes.iter().position(|n| n.id == leader).unwrap();
    let (code, out, err) = cli(&["node", "drain", "--addr", &nodes[li].tcp.to_string()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("left the voter set"), "{out}");
    let others: Vec<&Proc> = nodes.iter().filter(|n| n.id != leader).collect();
    wait_for("a new leader among the other three", LONG, || {
        agreed_leader(&others).is_some_and(|l| l != leader)
    });
    let v = voters(others[0]);
    assert_eq!(v.len(), 3, "{v:?}");
    assert!(!v.contains(&leader), "{leader} still votes: {v:?}");
    wait_for("the drained manager says so in gossip", LONG, || {
        status(others[0]).is_some_and(|d| {
            d.members
                .iter()
                .any(|m| m.id == leader && m.lifecycle.as_deref() == Some("draining"))
        })
    });
    // It is not added back while draining.
    std::thread::sleep(Duration::from_millis(1500)); // two of the leader's add rounds
    assert_eq!(voters(others[0]).len(), 3);

    // Remove one more: two voters left, both needed.
    let gone = others[2].id.clone();
    let via = others[0].tcp.to_string();
    let (code, out, err) = cli(&["managers", "remove", &gone, "--addr", &via]);
    assert_eq!(code, 0, "{out}{err}");
    wait_for("two voters", LONG, || voters(others[0]).len() == 2);

    // Unknown and invalid ids are refused by name.
    let (code, _, err) = cli(&["managers", "add", "nobody", "--addr", &via]);
    assert_eq!(code, 1);
    assert!(err.contains("no live manager `nobody`"), "{err}");
    let (code, _, err) = cli(&["managers", "remove", "bad id", "--addr", &via]);
    assert_eq!(code, 1);
    assert!(err.contains("id:"), "{err}");

    // The removed manager comes back on request.
    let (code, out, err) = cli(&["managers", "add", &gone, "--addr", &via]);
    assert_eq!(code, 0, "{out}{err}");
    wait_for("three voters again", LONG, || voters(others[0]).len() == 3);
    let v = voters(others[1]);
    assert!(v.contains(&gone), "{v:?}");

    // With one of three voters dead, draining another would leave two voters of which
    // one is alive: no quorum. Refused, nothing changes.
    let mut nodes = nodes;
    let gi = nodes.iter().position(|n| n.id == gone).unwrap();
    nodes[gi].kill9();
    let alive: Vec<&Proc> = nodes
        .iter()
        .filter(|n| n.id != gone && n.id != leader)
        .collect();
    wait_for("both others see the dead voter", LONG, || {
        alive
            .iter()
            .all(|a| state_of(a, &gone).is_some_and(|s| s != shoal_types::MemberState::Alive))
    });
    let (code, _, err) = cli(&["node", "drain", "--addr", &alive[1].tcp.to_string()]);
    assert_eq!(code, 1);
    assert!(err.contains("a quorum needs 2"), "{err}");
    assert_eq!(voters(alive[0]).len(), 3);
    assert!(
        rt().block_on(alive[1].client().status())
            .unwrap()
            .members
            .iter()
            .any(|m| m.is_self && m.lifecycle.as_deref() == Some("active")),
        "a refused drain leaves the manager active"
    );
}

//! Real `shoal` processes on loopback: kill -9, restart, foreign keys, SIGTERM, bad
//! input. Bounded: every wait has a deadline.

mod common;

use std::{
    io::{Read, Write},
    net::{TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use common::*;
use shoal_types::MemberState;

const LONG: Duration = Duration::from_secs(20);

/// Five nodes; one is killed with SIGKILL → every survivor marks it `failed`;
/// restarted with the same id and port → `alive` everywhere again.
#[test]
fn kill_nine_is_detected_and_a_restart_rejoins() {
    let first = start_node("p0", "127.0.0.1:0", &[], Some(KEY));
    let mut nodes = vec![first];
    for i in 1..5 {
        let seed = nodes[0].tcp;
        nodes.push(start_node(
            &format!("p{i}"),
            "127.0.0.1:0",
            &[seed],
            Some(KEY),
        ));
    }
    wait_for("5 members alive everywhere", LONG, || {
        nodes.iter().all(|n| {
            status(n).is_some_and(|d| {
                d.members
                    .iter()
                    .filter(|m| m.state == MemberState::Alive)
                    .count()
                    == 5
            })
        })
    });
    let victim_addr = nodes[3].tcp;
    let victim_dir = nodes[3].data_dir.clone();
    nodes[3].kill9();
    wait_for("every survivor marks p3 failed", LONG, || {
        nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 3)
            .all(|(_, n)| state_of(n, "p3") == Some(MemberState::Failed))
    });
    let seed = nodes[0].tcp;
    nodes[3] = start_node_in(
        "p3",
        &victim_addr.to_string(),
        &[seed],
        Some(KEY),
        victim_dir,
        &[],
    );
    wait_for("p3 alive everywhere after restart", LONG, || {
        nodes
            .iter()
            .all(|n| n.id == "p3" || state_of(n, "p3") == Some(MemberState::Alive))
    });
}

/// A node sealing gossip with another key never shows up anywhere, and its packets
/// are counted as dropped.
#[test]
fn a_node_with_another_key_never_appears() {
    let a = start_node("k0", "127.0.0.1:0", &[], Some(KEY));
    let b = start_node("k1", "127.0.0.1:0", &[a.tcp], Some(KEY));
    let other = "2222222222222222222222222222222222222222222222222222222222222222";
    let stranger = start_node("intruder", "127.0.0.1:0", &[a.tcp, b.tcp], Some(other));
    wait_for("k0 and k1 see each other", LONG, || {
        state_of(&a, "k1") == Some(MemberState::Alive)
    });
    wait_for("the stranger's packets are dropped", LONG, || {
        let metrics = rt()
            .block_on(a.client().get_text("/metrics"))
            .unwrap_or_default();
        dropped(&metrics, "unknown_key") + dropped(&metrics, "auth_failed") > 0
    });
    for n in [&a, &b] {
        let doc = status(n).expect("status");
        assert!(
            doc.members.iter().all(|m| m.id != "intruder"),
            "{} lists the intruder",
            n.id
        );
    }
    let doc = status(&stranger).expect("stranger status");
    assert_eq!(doc.members.len(), 1, "the stranger sees nobody");
}

fn dropped(metrics: &str, reason: &str) -> u64 {
    let needle = format!("shoal_gossip_packets_dropped_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&needle))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// SIGTERM: the node announces its departure (peers see `left`, never `failed`) and
/// exits within 2 s.
#[test]
fn sigterm_leaves_politely_within_two_seconds() {
    let a = start_node("t0", "127.0.0.1:0", &[], None);
    let mut b = start_node("t1", "127.0.0.1:0", &[a.tcp], None);
    wait_for("t0 sees t1", LONG, || {
        state_of(&a, "t1") == Some(MemberState::Alive)
    });
    let sent = Instant::now();
    b.sigterm();
    let exited = loop {
        if let Some(status) = b.child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(2),
            "still running 2 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exited.success(), "exit status {exited}");
    wait_for("t0 sees t1 left", LONG, || {
        state_of(&a, "t1") == Some(MemberState::Left)
    });
    let events_failed = status(&a)
        .unwrap()
        .members
        .iter()
        .any(|m| m.state == MemberState::Failed);
    assert!(!events_failed, "nobody is failed");
}

/// A tag set at runtime on one node reaches the others; removing it does too.
#[test]
fn runtime_tags_reach_every_member() {
    let a = start_node("g0", "127.0.0.1:0", &[], Some(KEY));
    let b = start_node("g1", "127.0.0.1:0", &[a.tcp], Some(KEY));
    let c = start_node("g2", "127.0.0.1:0", &[a.tcp], Some(KEY));
    wait_for("3 alive", LONG, || {
        status(&c).is_some_and(|d| {
            d.members
                .iter()
                .filter(|m| m.state == MemberState::Alive)
                .count()
                == 3
        })
    });
    let out = shoal()
        .args(["tag", "set", "gpu=true", "--addr", &b.tcp.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tag_of = |n: &Proc| {
        status(n)
            .and_then(|d| d.members.into_iter().find(|m| m.id == "g1"))
            .and_then(|m| m.tags.get("gpu").cloned())
    };
    wait_for("the tag reaches g0 and g2", LONG, || {
        tag_of(&a).as_deref() == Some("true") && tag_of(&c).as_deref() == Some("true")
    });
    let out = shoal()
        .args(["tag", "rm", "gpu", "--addr", &b.tcp.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
    wait_for("the removal reaches g0 and g2", LONG, || {
        tag_of(&a).is_none() && tag_of(&c).is_none()
    });
    let bad = shoal()
        .args(["tag", "set", "bad key=1", "--addr", &b.tcp.to_string()])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("tag key"),
        "names the rule"
    );
}

/// Invalid configuration: one line naming the key and the rule, exit code 2, and
/// nothing bound.
#[test]
fn invalid_config_exits_two_naming_the_key() {
    // Each case: flags that differ from a valid `--role worker --id x --listen …:0`.
    let cases: [(&[&str], &str); 5] = [
        (&["--role", "director"], "role: must be one of"),
        (&["--id", ""], "id: must be 1-64"),
        (
            &["--listen", "nowhere"],
            "listen: `nowhere` must be IP:PORT",
        ),
        (&["--cluster-key", "zz"], "cluster_key"),
        (&["--seeds", "host"], "seeds"),
    ];
    for (args, expected) in cases {
        let out = shoal()
            .args([
                "node",
                "--role",
                "worker",
                "--id",
                "x",
                "--listen",
                "127.0.0.1:0",
            ])
            .args(args)
            .env_remove("SHOAL_CLUSTER_KEY")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
    // Runtime threads: checked by the argument parser, which names the flag and range.
    for bad in ["0", "1025", "many"] {
        let out = shoal()
            .args(["node", "--role", "manager", "--id", "x"])
            .args(["--listen", "127.0.0.1:0", "--threads", bad])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--threads {bad}: {stderr}");
        assert!(stderr.contains("--threads"), "--threads {bad}: {stderr}");
    }
    let dir = tempdir::Dir::new("cfg");
    let file = dir.path().join("node.toml");
    std::fs::write(&file, "id = \"f1\"\nrole = \"worker\"\nlisten = \"127.0.0.1:0\"\n[gossip]\nprobe_period_ms = 100\nprobe_timeout_ms = 100\n").unwrap();
    let out = shoal()
        .args(["node", "--config"])
        .arg(&file)
        .env_remove("SHOAL_CLUSTER_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("gossip.probe_timeout_ms: must be less than probe_period_ms")
    );
}

/// Garbage on the TCP port gets a 4xx; garbage on the gossip port is counted and
/// changes nothing; the node keeps serving.
#[test]
fn malformed_input_is_refused_and_counted() {
    let a = start_node("b0", "127.0.0.1:0", &[], None);
    let mut tcp = TcpStream::connect(a.tcp).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(b"NOT HTTP AT ALL\r\n\r\n").unwrap();
    let mut reply = String::new();
    let _ = tcp.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 4"), "got {reply:?}");
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let gossip = std::net::SocketAddr::new(a.tcp.ip(), a.tcp.port() + 1);
    for packet in [
        &b"SH"[..],
        b"XX\x01\x01\x00hello",
        b"SH\x09\x01\x00",
        &[0u8; 1500][..],
        b"SH\x02\x01\x00garbage", // the current version, a payload that is no SWIM
    ] {
        udp.send_to(packet, gossip).unwrap();
    }
    wait_for("five drops counted", LONG, || {
        let m = rt()
            .block_on(a.client().get_text("/metrics"))
            .unwrap_or_default();
        [
            "truncated",
            "bad_magic",
            "unknown_version",
            "oversized",
            "malformed",
        ]
        .iter()
        .all(|r| dropped(&m, r) >= 1)
    });
    let doc = status(&a).expect("still serving");
    assert_eq!(doc.members.len(), 1, "no membership change");
    let out = shoal()
        .args(["status", "--addr", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach a shoal node at 127.0.0.1:1")
    );
}

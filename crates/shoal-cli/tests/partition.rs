//! Partitions on a real network: three managers, each in a network namespace of its own
//! on one bridge, and nftables rules in their namespaces that drop packets between
//! them (the test's host side, the bridge's own address, stays reachable, so the test
//! can watch every manager through the cut).
//!
//! Per kind of cut — the leader cut off from both followers, the followers deaf to the
//! leader (one way), the leader and one follower deaf to each other (the other follower
//! a bridge) — for 6 s, with a write made through the majority during it:
//! - the cut-off leader reports `leader_no_quorum` at once (within 1 s);
//! - after the heal, every replica's applied index reaches the leader's within 5 s, the
//!   cut-off ones included, and the write made during the cut is readable there with
//!   `shoal kv get --stale`.
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables); where any is missing the tests print
//! why and pass without running (CI installs both). The namespaces, veths, bridge and
//! rules are the test's own, named after its process id, and removed when it ends.

mod common;

use std::{
    net::{Ipv4Addr, SocketAddr},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use common::*;

/// How long each cut lasts.
const CUT: Duration = Duration::from_secs(6);
/// How soon after the heal every replica must have caught up.
const CATCH_UP: Duration = Duration::from_secs(5);

/// Runs `ip`/`nft` with `args`; the error names the command and what it printed.
fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{cmd} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Three namespaces on one bridge, removed on drop.
struct Net {
    ns: Vec<String>,
    bridge: String,
    subnet: [u8; 3],
}

static NETS: AtomicU32 = AtomicU32::new(0);

impl Net {
    /// Creates the namespaces, or says why it cannot.
    fn create(n: usize) -> Result<Net, String> {
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map_err(|e| format!("id -u: {e}"))?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("not root (network namespaces need it)".into());
        }
        run("ip", &["-V"]).map_err(|e| format!("no iproute2: {e}"))?;
        run("nft", &["--version"]).map_err(|e| format!("no nftables: {e}"))?;
        let pid = std::process::id();
        let k = NETS.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{}{k}", pid % 1_000_000);
        let mut net = Net {
            ns: Vec::new(),
            bridge: format!("shb{tag}"),
            // 10.(200 + k).(pid % 250).0/24: other runs and other tests of this one
            // get other subnets.
            subnet: [10, 200 + (k % 50) as u8, (pid % 250) as u8],
        };
        run("ip", &["link", "add", &net.bridge, "type", "bridge"])?;
        let host = format!("{}/24", net.host());
        run("ip", &["addr", "add", &host, "dev", &net.bridge])?;
        run("ip", &["link", "set", &net.bridge, "up"])?;
        for i in 1..=n {
            let ns = format!("shoal-{tag}-{i}");
            run("ip", &["netns", "add", &ns])?;
            net.ns.push(ns.clone());
            let (outer, inner) = (format!("shv{tag}{i}"), format!("shp{tag}{i}"));
            run(
                "ip",
                &[
                    "link", "add", &outer, "type", "veth", "peer", "name", &inner,
                ],
            )?;
            run("ip", &["link", "set", &inner, "netns", &ns])?;
            run("ip", &["link", "set", &outer, "master", &net.bridge])?;
            run("ip", &["link", "set", &outer, "up"])?;
            let addr = format!("{}/24", net.addr(i));
            net.exec(i, "ip", &["addr", "add", &addr, "dev", &inner])?;
            net.exec(i, "ip", &["link", "set", &inner, "up"])?;
            net.exec(i, "ip", &["link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// Node `i`'s address (1-based).
    fn addr(&self, i: usize) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, i as u8)
    }

    /// The bridge's own address: where the test talks from.
    fn host(&self) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, 254)
    }

    fn exec(&self, i: usize, cmd: &str, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["netns", "exec", &self.ns[i - 1], cmd];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// `shoal` run inside node `i`'s namespace.
    fn shoal(&self, i: usize) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.ns[i - 1],
            env!("CARGO_BIN_EXE_shoal"),
        ]);
        cmd
    }

    /// In node `i`'s namespace, drops every packet to or from nodes `from` (`both`), or
    /// only those arriving from them.
    fn drop_from(&self, i: usize, from: &[usize], both: bool) {
        let set = from
            .iter()
            .map(|j| self.addr(*j).to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let mut rules = format!(
            "table inet shoalcut {{\n chain input {{ type filter hook input priority 0; ip saddr {{ {set} }} drop; }}\n"
        );
        if both {
            rules += &format!(
                " chain output {{ type filter hook output priority 0; ip daddr {{ {set} }} drop; }}\n"
            );
        }
        rules += "}\n";
        let path = std::env::temp_dir().join(format!("{}-{i}.nft", self.ns[i - 1]));
        std::fs::write(&path, rules).expect("write nft rules");
        self.exec(i, "nft", &["-f", &path.to_string_lossy()])
            .expect("nft rules");
        let _ = std::fs::remove_file(path);
    }

    /// Removes every rule in every namespace.
    fn heal(&self) {
        for i in 1..=self.ns.len() {
            let _ = self.exec(i, "nft", &["delete", "table", "inet", "shoalcut"]);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.ns {
            let _ = run("ip", &["netns", "del", ns]);
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
    }
}

#[derive(Debug, Clone, Copy)]
enum Cut {
    Leader,
    OneWay,
    Bridge,
}

/// The `raft` section of a manager's status.
fn raft(p: &Proc) -> Option<serde_json::Value> {
    status(p)?.raft
}

fn applied(p: &Proc) -> Option<u64> {
    raft(p)?["applied_index"].as_u64()
}

/// `shoal kv` run from the host against `servers`.
fn kv(servers: &[&Proc], args: &[&str]) -> std::process::Output {
    let list: Vec<String> = servers.iter().map(|p| p.tcp.to_string()).collect();
    shoal()
        .args(["kv", "--servers", &list.join(",")])
        .args(args)
        .output()
        .expect("run shoal kv")
}

fn partition_heals(cut: Cut) {
    let net = match Net::create(3) {
        Ok(net) => net,
        Err(why) => {
            eprintln!("SKIPPED partition test ({cut:?}): {why}");
            return;
        }
    };
    let seed: SocketAddr = (net.addr(1), 9000).into();
    let nodes: Vec<Proc> = (1..=3)
        .map(|i| {
            let id = format!("m{i}");
            let listen = format!("{}:9000", net.addr(i));
            let seeds = if i == 1 { vec![] } else { vec![seed] };
            start_node_with(
                net.shoal(i),
                &id,
                &listen,
                &seeds,
                Some(KEY),
                tempdir::Dir::new(&format!("part-{id}")),
                MANAGER_ARGS,
            )
        })
        .collect();
    let leader_id = wait_for_leader(&nodes);
    let all: Vec<&Proc> = nodes.iter().collect();
    let out = kv(&all, &["put", "before", "1"]);
    assert!(out.status.success(), "put before the cut: {out:?}");

    let l = nodes
        .iter()
        .position(|p| p.id == leader_id)
        .expect("leader")
        + 1;
    let others: Vec<usize> = (1..=3).filter(|i| *i != l).collect();
    // Cut off: the nodes that lose touch with the leader.
    let cut_off: Vec<usize> = match cut {
        Cut::Leader => {
            net.drop_from(l, &others, true);
            vec![l]
        }
        Cut::OneWay => {
            for o in &others {
                net.drop_from(*o, &[l], false);
            }
            others.clone()
        }
        Cut::Bridge => {
            net.drop_from(l, &[others[1]], true);
            vec![l, others[1]]
        }
    };
    let cut_at = Instant::now();
    if let Cut::Leader = cut {
        let old = &nodes[l - 1];
        wait_for(
            "the cut-off leader to report leader_no_quorum",
            Duration::from_secs(1),
            || raft(old).is_some_and(|r| r["role"] == "leader_no_quorum"),
        );
    }
    // A write through the majority during the cut.
    let majority: Vec<&Proc> = match cut {
        Cut::Leader | Cut::OneWay => others.iter().map(|i| &nodes[i - 1]).collect(),
        Cut::Bridge => vec![&nodes[l - 1], &nodes[others[0] - 1]],
    };
    let out = kv(&majority, &["put", "during", "2"]);
    assert!(out.status.success(), "put during the cut: {out:?}");
    std::thread::sleep(CUT.saturating_sub(cut_at.elapsed()));

    net.heal();
    let healed = Instant::now();
    let caught_up = loop {
        let views: Vec<Option<u64>> = nodes.iter().map(applied).collect();
        let target = views.iter().flatten().max().copied().unwrap_or(0);
        if views.iter().all(|v| *v == Some(target)) {
            break healed.elapsed();
        }
        assert!(
            healed.elapsed() < CATCH_UP,
            "{cut:?} cut: {:?} after the heal the applied indexes are {views:?} (leader before the cut m{l}, cut off {cut_off:?})",
            healed.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("{cut:?} cut: heal → every replica caught up in {caught_up:?}");
    for i in &cut_off {
        let out = kv(&[&nodes[i - 1]], &["get", "during", "--stale"]);
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "2",
            "{cut:?} cut: m{i} after the heal reads `during` as {out:?}"
        );
    }
    drop(nodes);
    drop(net);
}

#[test]
fn an_isolated_leader_catches_up_after_the_heal() {
    partition_heals(Cut::Leader);
}

#[test]
fn followers_cut_off_one_way_catch_up_after_the_heal() {
    partition_heals(Cut::OneWay);
}

#[test]
fn a_bridged_partition_catches_up_after_the_heal() {
    partition_heals(Cut::Bridge);
}

/// Two nodes in two network namespaces, each listening on 0.0.0.0: each advertises the
/// address of its interface toward the other (found from its seed's route), never
/// 0.0.0.0, and they form one cluster.
#[test]
fn nodes_on_0_0_0_0_advertise_their_interface_and_form_one_cluster() {
    let net = match Net::create(2) {
        Ok(net) => net,
        Err(why) => {
            eprintln!("SKIPPED advertise test: {why}");
            return;
        }
    };
    let nodes: Vec<Proc> = (1..=2)
        .map(|i| {
            let id = format!("a{i}");
            let other: SocketAddr = (net.addr(3 - i), 9000).into();
            start_node_with(
                net.shoal(i),
                &id,
                "0.0.0.0:9000",
                &[other],
                Some(KEY),
                tempdir::Dir::new(&format!("adv-{id}")),
                &[],
            )
        })
        .collect();
    for p in &nodes {
        assert!(p.tcp.ip().is_unspecified(), "{} listens on {}", p.id, p.tcp);
    }
    let view = |i: usize| {
        let client = shoal_client::AdminClient::new(format!("{}:9000", net.addr(i)))
            .with_timeout(Duration::from_millis(800));
        rt().block_on(client.status()).ok()
    };
    wait_for("each sees the other alive", Duration::from_secs(20), || {
        (1..=2).all(|i| {
            view(i).is_some_and(|doc| {
                doc.members
                    .iter()
                    .filter(|m| m.state == shoal_types::MemberState::Alive)
                    .count()
                    == 2
            })
        })
    });
    for i in 1..=2 {
        let doc = view(i).expect("status");
        for m in &doc.members {
            let j: usize = m.id[1..].parse().expect("a1 or a2");
            assert_eq!(
                m.addr,
                format!("{}:9000", net.addr(j)),
                "as a{i} sees {}",
                m.id
            );
        }
    }
    drop(nodes);
}

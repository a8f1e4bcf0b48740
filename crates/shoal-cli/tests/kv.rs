//! The replicated KV store on three real manager processes.
//!
//! - 1,000 keys written by concurrent clients while the leader is killed with SIGKILL
//!   halfway: every acknowledged write is readable afterwards, none was applied twice
//!   (every key is at version 1 and the store revision counts each write once), and
//!   after stopping and restarting all three managers the data is intact.
//! - The CLI: put/get/ls/cas/del through any manager, a missing key exits 1, bad input
//!   exits 2 naming the field and the limit, and nothing is written.

mod common;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::*;
use shoal_client::{KvClient, KvOptions};

const LONG: Duration = Duration::from_secs(30);
const KEYS: usize = 1_000;
const WRITERS: usize = 8;

fn client(nodes: &[&Proc]) -> KvClient {
    let servers: Vec<String> = nodes.iter().map(|p| p.tcp.to_string()).collect();
    KvClient::new(
        &servers,
        KvOptions {
            attempt_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(30),
            ..KvOptions::default()
        },
    )
    .expect("client")
}

fn multi_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Every key under `k/` with its value and version, read linearizably.
fn read_all(rt: &tokio::runtime::Runtime, c: &KvClient) -> (BTreeMap<String, (String, u64)>, u64) {
    let listing = rt.block_on(c.list("k/", false, 0)).expect("list");
    assert!(!listing.more, "the listing fits one page");
    let all = listing
        .kvs
        .into_iter()
        .map(|kv| {
            (
                kv.key,
                (String::from_utf8(kv.value).expect("utf-8"), kv.version),
            )
        })
        .collect();
    (all, listing.store_revision)
}

#[test]
fn acknowledged_writes_survive_leader_kill_and_full_restart() {
    let mut nodes = start_managers();
    let leader = wait_for_leader(&nodes);
    let rt = multi_rt();
    let _in_rt = rt.enter(); // clients connect lazily from the runtime
    let c = Arc::new(client(&nodes.iter().collect::<Vec<_>>()));

    // Writers take key numbers from a shared counter; the test kills the leader once
    // half of them are acknowledged.
    let next = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (c, next, acked) = (c.clone(), next.clone(), acked.clone());
            rt.spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= KEYS {
                        return mine;
                    }
                    let (k, v) = (format!("k/{i:04}"), format!("v{i}"));
                    match c.put(&k, v.as_bytes()).await {
                        Ok(_) => {
                            acked.fetch_add(1, Ordering::SeqCst);
                            mine.push((k, v));
                        }
                        Err(e) => eprintln!("put {k}: {e}"),
                    }
                }
            })
        })
        .collect();
    wait_for("half the writes acknowledged", LONG, || {
        acked.load(Ordering::SeqCst) >= KEYS / 2
    });
    let victim = nodes.iter().position(|n| n.id == leader).expect("leader");
    nodes[victim].kill9();
    let mut written = BTreeMap::new();
    for t in tasks {
        written.extend(rt.block_on(t).expect("writer task"));
    }
    // The survivors (a majority) keep accepting writes: nearly all must be acknowledged.
    assert!(
        written.len() >= KEYS * 99 / 100,
        "only {} of {KEYS} writes acknowledged across a leader kill",
        written.len()
    );

    let check = |all: &BTreeMap<String, (String, u64)>, revision: u64, when: &str| {
        for (k, v) in &written {
            match all.get(k) {
                Some((got, version)) => {
                    assert_eq!(got, v, "{when}: {k} has the wrong value");
                    assert_eq!(*version, 1, "{when}: {k} was applied {version} times");
                }
                None => panic!("{when}: acknowledged write {k} is missing"),
            }
        }
        // Each key written once: one revision per applied write, no more.
        assert_eq!(
            revision,
            all.len() as u64,
            "{when}: store revision {revision} for {} keys: a write was applied twice",
            all.len()
        );
    };
    let (all, revision) = read_all(&rt, &c);
    check(&all, revision, "after the leader kill");

    // Bring the old leader back, then stop everyone and start all three again.
    let seeds: Vec<SocketAddr> = nodes.iter().map(|n| n.tcp).collect();
    nodes[victim] = restart(&nodes[victim], &seeds, MANAGER_ARGS);
    for n in nodes.iter_mut() {
        n.kill9();
    }
    let restarted: Vec<Proc> = nodes
        .iter()
        .map(|n| restart(n, &seeds, MANAGER_ARGS))
        .collect();
    wait_for("a leader after restarting all three", LONG, || {
        agreed_leader(&restarted.iter().collect::<Vec<_>>()).is_some()
    });
    let c = client(&restarted.iter().collect::<Vec<_>>());
    let (after, revision) = read_all(&rt, &c);
    assert_eq!(after, all, "data changed across a full restart");
    check(&after, revision, "after a full restart");

    // Stale reads on each replica converge to the same data.
    for n in &restarted {
        let one = client(&[n]);
        wait_for("every replica applies the log", LONG, || {
            rt.block_on(one.list("k/", true, 0))
                .is_ok_and(|l| l.kvs.len() == after.len())
        });
    }
}

fn kv_cli(servers: &str, args: &[&str]) -> (i32, String, String) {
    let out = shoal()
        .args(["kv", "--servers", servers, "--timeout", "20"])
        .args(args)
        .output()
        .expect("run shoal kv");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_put_get_list_cas_delete_and_refusals() {
    let nodes = start_managers();
    wait_for("a leader", LONG, || {
        agreed_leader(&nodes.iter().collect::<Vec<_>>()).is_some()
    });
    let all = nodes
        .iter()
        .map(|n| n.tcp.to_string())
        .collect::<Vec<_>>()
        .join(",");
    // Writes through each manager in turn: followers forward to the leader.
    for (i, n) in nodes.iter().enumerate() {
        let (code, out, err) = kv_cli(&n.tcp.to_string(), &["put", &format!("app/{i}"), "v"]);
        assert_eq!(code, 0, "put via {}: {out}{err}", n.id);
        assert!(out.starts_with("OK revision "), "{out}");
    }
    // Linearizable read through a follower sees the latest write.
    let (code, out, _) = kv_cli(&nodes[2].tcp.to_string(), &["get", "app/0"]);
    assert_eq!((code, out.as_str()), (0, "v\n"));
    let (code, _, err) = kv_cli(&all, &["get", "missing"]);
    assert_eq!(code, 1);
    assert!(err.contains("not found"), "{err}");

    let (code, out, _) = kv_cli(&all, &["ls", "app/", "--json"]);
    assert_eq!(code, 0);
    let list: serde_json::Value = serde_json::from_str(&out).expect("json");
    let keys: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| kv["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["app/0", "app/1", "app/2"]);
    let rev = list[0]["mod_revision"].as_u64().unwrap();

    // CAS: the stale revision loses, the current one wins.
    let (code, _, err) = kv_cli(
        &all,
        &["cas", "app/0", "w", "--revision", &(rev + 7).to_string()],
    );
    assert_eq!(code, 1);
    assert!(err.contains("compare failed"), "{err}");
    let (code, _, _) = kv_cli(&all, &["cas", "app/0", "w", "--revision", &rev.to_string()]);
    assert_eq!(code, 0);
    let (_, out, _) = kv_cli(&all, &["get", "app/0"]);
    assert_eq!(out, "w\n");

    // Refusals name the field and the limit, and write nothing.
    let long_key = "k".repeat(1025);
    let (code, _, err) = kv_cli(&all, &["put", &long_key, "v"]);
    assert_eq!(code, 2);
    assert!(err.contains("key: 1025 bytes, the limit is 1024"), "{err}");
    let (code, _, err) = kv_cli(&all, &["put", "", "v"]);
    assert_eq!(code, 2);
    assert!(err.contains("key: must not be empty"), "{err}");
    let (code, _, err) = kv_cli("nonsense", &["get", "app/0"]);
    assert_eq!(code, 2);
    assert!(err.contains("servers: `nonsense`"), "{err}");
    let (_, out, _) = kv_cli(&all, &["ls", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        list.as_array().unwrap().len(),
        3,
        "nothing else was written"
    );

    let (code, out, _) = kv_cli(&all, &["del", "app/1"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("deleted"), "{out}");
    let (code, _, _) = kv_cli(&all, &["get", "app/1"]);
    assert_eq!(code, 1);
}

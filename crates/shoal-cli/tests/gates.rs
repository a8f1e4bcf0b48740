//! Gates in front of two datacenters, on real processes: dc1 and dc2 each run three
//! managers and a worker; one gate fronts both.
//!
//! - A job for two datacenters runs in both (instances from each, workers named
//!   `dc/worker`); a job pinned to dc2 runs there; an unknown datacenter is refused.
//! - A job's datacenter loses its quorum (two of its three managers killed): the gate
//!   moves the job to the other datacenter, where it completes.

mod common;

use std::{process::Stdio, time::Duration};

use common::*;
use serde_json::Value;

const LONG: Duration = Duration::from_secs(90);

struct TwoDcs {
    dc1: Vec<Proc>,
    dc2: Vec<Proc>,
    _workers: Vec<Proc>,
    gate: Proc,
    dir: tempdir::Dir,
}

fn manager(id: &str, dc: &str, seeds: &[std::net::SocketAddr]) -> Proc {
    start_node_in(
        id,
        "127.0.0.1:0",
        seeds,
        Some(KEY),
        tempdir::Dir::new(id),
        &["--role", "manager", "--bootstrap-expect", "3", "--dc", dc],
    )
}

impl TwoDcs {
    fn start() -> Self {
        let m1 = manager("m1", "dc1", &[]);
        let seeds = [m1.tcp];
        let dc1 = vec![
            m1,
            manager("m2", "dc1", &seeds),
            manager("m3", "dc1", &seeds),
        ];
        let dc2 = vec![
            manager("m4", "dc2", &seeds),
            manager("m5", "dc2", &seeds),
            manager("m6", "dc2", &seeds),
        ];
        wait_for_leader(&dc1);
        wait_for_leader(&dc2);
        let workers = vec![
            start_node_in(
                "w1",
                "127.0.0.1:0",
                &seeds,
                Some(KEY),
                tempdir::Dir::new("w1"),
                &["--cores", "2", "--dc", "dc1"],
            ),
            start_node_in(
                "w2",
                "127.0.0.1:0",
                &seeds,
                Some(KEY),
                tempdir::Dir::new("w2"),
                &["--cores", "2", "--dc", "dc2"],
            ),
        ];
        let gate = start_node_in(
            "g1",
            "127.0.0.1:0",
            &seeds,
            Some(KEY),
            tempdir::Dir::new("g1"),
            &["--role", "gate", "--bootstrap-expect", "1"],
        );
        // The gate must know both DCs' leaders and workers before it can place jobs.
        wait_for("the gate sees both datacenters", LONG, || {
            let Some(doc) = status(&gate) else {
                return false;
            };
            let alive = |id: &str| {
                doc.members
                    .iter()
                    .any(|m| m.id == id && m.state == shoal_types::MemberState::Alive)
            };
            ["m1", "m2", "m3", "m4", "m5", "m6", "w1", "w2"]
                .iter()
                .all(|id| alive(id))
                && ["w1", "w2"]
                    .iter()
                    .all(|w| doc.members.iter().any(|m| m.id == *w && m.leader.is_some()))
        });
        // And every manager must see its DC's worker alive: the leader places only on
        // workers it sees (gossip reaches each node in its own time).
        for (managers, worker) in [(&dc1, "w1"), (&dc2, "w2")] {
            wait_for("the managers see their worker", LONG, || {
                managers
                    .iter()
                    .all(|m| state_of(m, worker) == Some(shoal_types::MemberState::Alive))
            });
        }
        Self {
            dc1,
            dc2,
            _workers: workers,
            gate,
            dir: tempdir::Dir::new("gates"),
        }
    }

    fn shoal(&self, args: &[&str]) -> std::process::Output {
        shoal()
            .args(args)
            .args(["--servers", &self.gate.tcp.to_string()])
            .env_remove("SHOAL_SERVERS")
            .stdin(Stdio::null())
            .output()
            .expect("run shoal")
    }

    fn spec(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write spec");
        p.display().to_string()
    }

    fn job(&self, id: &str) -> Option<Value> {
        let out = self.shoal(&["jobs", "show", id, "--json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }
}

fn workers_of(job: &Value) -> Vec<String> {
    // Empty while no DC has reported the job yet.
    job["workflows"][0]["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["worker"].as_str().map(String::from))
        .collect()
}

#[test]
fn jobs_run_in_one_or_both_datacenters_and_move_when_one_loses_quorum() {
    let mut c = TwoDcs::start();

    let both = c.spec(
        "both.toml",
        "name = \"both\"\ndatacenter_count = 2\n[[workflows]]\nname = \"s\"\nkind = \"echo\"\nargs = { text = \"x\" }\ninstances = 2\n",
    );
    let out = c.shoal(&["submit", &both, "--wait", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job: Value = serde_json::from_slice(&out.stdout).expect("job JSON");
    assert_eq!(job["state"], "completed", "{job}");
    // The gate's status: the job it placed, and both DCs as it routes by them.
    let doc = status(&c.gate).expect("gate status");
    let jobs = doc.jobs.expect("the gate's jobs section");
    assert!(jobs["jobs_known"].as_u64() >= Some(1), "{jobs}");
    let dcs: Vec<(&str, bool)> = jobs["datacenters"]
        .as_array()
        .expect("datacenters")
        .iter()
        .map(|d| (d["dc"].as_str().unwrap_or(""), d["healthy"] == true))
        .collect();
    assert_eq!(dcs, [("dc1", true), ("dc2", true)], "{jobs}");
    let mut ws = workers_of(&job);
    ws.sort();
    assert_eq!(
        ws,
        ["dc1/w1", "dc1/w1", "dc2/w2", "dc2/w2"],
        "2 instances in each DC"
    );

    let pinned = c.spec(
        "pinned.toml",
        "name = \"pinned\"\ndatacenters = [\"dc2\"]\n[[workflows]]\nname = \"s\"\nkind = \"echo\"\nargs = { text = \"x\" }\n",
    );
    let out = c.shoal(&["submit", &pinned, "--wait", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job: Value = serde_json::from_slice(&out.stdout).expect("job JSON");
    assert_eq!(workers_of(&job), ["dc2/w2"]);

    let unknown = c.spec(
        "unknown.toml",
        "name = \"u\"\ndatacenters = [\"dc9\"]\n[[workflows]]\nname = \"s\"\nkind = \"echo\"\nargs = { text = \"x\" }\n",
    );
    let out = c.shoal(&["submit", &unknown]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("dc9"));

    // A job on one DC; that DC loses two of its three managers.
    let slow = c.spec(
        "slow.toml",
        "name = \"slow\"\n[[workflows]]\nname = \"s\"\nkind = \"sleep\"\nargs = { ms = 4000 }\ninstances = 2\n",
    );
    let out = c.shoal(&["submit", &slow, "--id", "slow-1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut first_dc = String::new();
    wait_for("the job runs somewhere", LONG, || {
        let Some(j) = c.job("slow-1") else {
            return false;
        };
        let ws = workers_of(&j);
        if let Some(w) = ws.first() {
            first_dc = w.split('/').next().unwrap_or_default().to_string();
        }
        j["state"] == "running" && !first_dc.is_empty()
    });
    let doomed = if first_dc == "dc1" {
        &mut c.dc1
    } else {
        &mut c.dc2
    };
    for m in doomed.iter_mut().take(2) {
        m.kill9();
    }
    let other = if first_dc == "dc1" { "dc2" } else { "dc1" };
    let mut last = Value::Null;
    wait_for("the job moved to the other DC and completed", LONG, || {
        let Some(j) = c.job("slow-1") else {
            return false;
        };
        let moved = workers_of(&j).iter().all(|w| w.starts_with(other));
        let done = j["state"] == "completed";
        last = j;
        moved && done
    });
    assert_eq!(workers_of(&last).len(), 2, "{last}");
    // The gate's status says why: that DC is not healthy (once gossip has declared
    // both killed managers failed, one of three is alive).
    let mut seen = Value::Null;
    wait_for(
        "the gate's status shows the DC without quorum",
        LONG,
        || {
            let Some(jobs) = status(&c.gate).and_then(|d| d.jobs) else {
                return false;
            };
            let lost = jobs["datacenters"]
                .as_array()
                .and_then(|d| d.iter().find(|d| d["dc"] == first_dc.as_str()))
                .cloned()
                .unwrap_or_default();
            seen = jobs;
            lost["healthy"] == false && lost["managers_alive"] == 1
        },
    );
    assert!(seen["jobs_known"].as_u64() >= Some(3), "{seen}");
}

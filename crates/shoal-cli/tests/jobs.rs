//! Jobs on real processes: three managers and two workers on loopback.
//!
//! - `shoal submit --wait --json` runs a two-workflow job (a dependency, an `exec`
//!   workflow with progress) to completion across both workers; `jobs ls/show/logs`
//!   see it; the same `--id` again creates no second job.
//! - Bad specs are refused naming the file, the workflow and the field; nothing is
//!   created.
//! - A worker killed mid-job: its instances run again on the other worker.
//! - The manager leader killed mid-job: the job completes and no instance ran twice.
//! - Cancel stops the running processes.
//! - Through a gate: 200 instances across three workers while a worker and then the
//!   manager leader are killed — every instance completes once; a `fail` workflow
//!   completes on its second attempt.

mod common;

use std::{
    process::{Output, Stdio},
    time::Duration,
};

use common::*;
use serde_json::Value;

const LONG: Duration = Duration::from_secs(60);

struct Cluster {
    managers: Vec<Proc>,
    /// When present, every command goes through it.
    gate: Option<Proc>,
    workers: Vec<Proc>,
    dir: tempdir::Dir,
}

impl Cluster {
    fn start() -> Self {
        Self::start_with(&["w1", "w2"], false)
    }

    /// Three managers, these workers (2 cores each), and a gate in front if asked.
    fn start_with(worker_ids: &[&str], gate: bool) -> Self {
        let managers: Vec<Proc> = start_managers().into();
        wait_for_leader(&managers);
        let seeds = [managers[0].tcp];
        let gate = gate.then(|| {
            start_node_in(
                "g1",
                "127.0.0.1:0",
                &seeds,
                Some(KEY),
                tempdir::Dir::new("g1"),
                &["--role", "gate", "--bootstrap-expect", "1"],
            )
        });
        let workers: Vec<Proc> = worker_ids
            .iter()
            .map(|id| {
                start_node_in(
                    id,
                    "127.0.0.1:0",
                    &seeds,
                    Some(KEY),
                    tempdir::Dir::new(id),
                    &["--cores", "2"],
                )
            })
            .collect();
        // Every manager (and the gate) must see the workers before jobs can be placed.
        wait_for("managers see the workers alive", LONG, || {
            managers.iter().chain(gate.as_ref()).all(|m| {
                worker_ids
                    .iter()
                    .all(|w| state_of(m, w) == Some(shoal_types::MemberState::Alive))
            })
        });
        Self {
            managers,
            gate,
            workers,
            dir: tempdir::Dir::new("jobs"),
        }
    }

    fn servers(&self) -> String {
        if let Some(g) = &self.gate {
            return g.tcp.to_string();
        }
        // All of them, dead ones included: the client moves on to the next.
        self.managers
            .iter()
            .map(|m| m.tcp.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spec(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write spec");
        p.display().to_string()
    }

    fn shoal(&self, args: &[&str]) -> Output {
        shoal()
            .args(args)
            .args(["--servers", &self.servers()])
            .env_remove("SHOAL_SERVERS")
            .stdin(Stdio::null())
            .output()
            .expect("run shoal")
    }

    fn job(&self, id: &str) -> Option<Value> {
        let out = self.shoal(&["jobs", "show", id, "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    fn wait_state(&self, id: &str, state: &str) -> Value {
        let mut last = Value::Null;
        wait_for(&format!("job {id} {state}"), LONG, || {
            if let Some(j) = self.job(id) {
                let done = j["state"] == state;
                last = j;
                return done;
            }
            false
        });
        last
    }
}

fn instances(job: &Value) -> Vec<Value> {
    job["workflows"]
        .as_array()
        .expect("workflows")
        .iter()
        .flat_map(|w| w["instances"].as_array().expect("instances").clone())
        .collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_job_runs_across_workers_and_the_cli_follows_it() {
    let c = Cluster::start();
    let spec = c.spec(
        "smoke.toml",
        r#"
name = "smoke"
[[workflows]]
name = "hello"
kind = "echo"
args = { text = "hello from shoal" }
instances = 4
[[workflows]]
name = "count"
kind = "exec"
args = { command = "sh", args = ["-c", "echo ::progress 1/2; echo counted; echo shoal-vars=$(env | grep -c ^SHOAL_); echo ::progress 2/2"] }
instances = 2
after = ["hello"]
"#,
    );
    let out = c.shoal(&["submit", &spec, "--wait", "--json", "--id", "smoke-1"]);
    assert!(
        out.status.success(),
        "submit --wait failed: {}",
        stderr(&out)
    );
    let job: Value = serde_json::from_slice(&out.stdout).expect("job JSON");
    assert_eq!(job["id"], "smoke-1");
    assert_eq!(job["state"], "completed", "{job}");
    let all = instances(&job);
    assert_eq!(all.len(), 6);
    for i in &all {
        assert_eq!(i["state"], "completed", "{i}");
        assert_eq!(i["attempts"], 1, "{i}");
        assert_eq!(i["exit_code"], 0, "{i}");
    }
    let workers: std::collections::BTreeSet<&str> =
        all.iter().filter_map(|i| i["worker"].as_str()).collect();
    assert_eq!(workers.len(), 2, "both workers took instances: {workers:?}");

    let logs = c.shoal(&[
        "jobs",
        "logs",
        "smoke-1",
        "--workflow",
        "count",
        "--instance",
        "1",
    ]);
    assert!(logs.status.success(), "{}", stderr(&logs));
    let text = String::from_utf8_lossy(&logs.stdout);
    assert!(text.contains("counted"), "{text}");
    // The worker runs with SHOAL_CLUSTER_KEY set; its commands see none of it.
    assert!(text.contains("shoal-vars=0"), "{text}");
    assert!(
        !text.contains("hello from shoal"),
        "only the asked instance: {text}"
    );

    // The same id again: no second job.
    let again = c.shoal(&["submit", &spec, "--id", "smoke-1"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(String::from_utf8_lossy(&again.stdout).contains("already exists"));
    let ls = c.shoal(&["jobs", "ls", "--json"]);
    let jobs: Value = serde_json::from_slice(&ls.stdout).expect("ls JSON");
    assert_eq!(jobs.as_array().map(Vec::len), Some(1), "{jobs}");
}

#[test]
fn bad_specs_are_refused_naming_file_workflow_and_field() {
    let c = Cluster::start();
    let cases = [
        (
            "no-command.toml",
            "name = \"j\"\n[[workflows]]\nname = \"x\"\nkind = \"exec\"\nargs = { args = [\"a\"] }\n",
            "workflows[0] (x).args",
        ),
        (
            "zero.toml",
            "name = \"j\"\n[[workflows]]\nname = \"x\"\nkind = \"echo\"\nargs = { text = \"a\" }\ninstances = 0\n",
            "workflows[0] (x).instances",
        ),
        (
            "cores.toml",
            "name = \"j\"\n[[workflows]]\nname = \"x\"\nkind = \"echo\"\nargs = { text = \"a\" }\ncores = 64\n",
            "workflows[0] (x).cores",
        ),
        (
            "kind.toml",
            "name = \"j\"\n[[workflows]]\nname = \"x\"\nkind = \"render\"\n",
            "workflows[0] (x).kind",
        ),
        (
            "cycle.toml",
            "name = \"j\"\n[[workflows]]\nname = \"a\"\nkind = \"echo\"\nargs = { text = \"a\" }\nafter = [\"b\"]\n[[workflows]]\nname = \"b\"\nkind = \"echo\"\nargs = { text = \"b\" }\nafter = [\"a\"]\n",
            "cycle",
        ),
        (
            "dep.toml",
            "name = \"j\"\n[[workflows]]\nname = \"a\"\nkind = \"echo\"\nargs = { text = \"a\" }\nafter = [\"zz\"]\n",
            "workflows[0] (a).after",
        ),
        (
            "broken.toml",
            "name = \"j\"\nworkflows = [\n",
            "broken.toml",
        ),
    ];
    for (file, text, needle) in cases {
        let spec = c.spec(file, text);
        let out = c.shoal(&["submit", &spec]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{file}: {err}");
        assert!(
            err.contains(file),
            "{file}: the error names the file: {err}"
        );
        assert!(
            err.contains(needle),
            "{file}: the error names `{needle}`: {err}"
        );
    }
    let ls = c.shoal(&["jobs", "ls", "--json"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&ls.stdout).expect("ls JSON"),
        Value::Array(vec![]),
        "nothing was created"
    );
}

#[test]
fn a_worker_killed_mid_job_has_its_instances_retried_elsewhere() {
    let mut c = Cluster::start();
    let spec = c.spec(
        "slow.toml",
        "name = \"slow\"\nstrategy = \"round_robin\"\n[[workflows]]\nname = \"s\"\nkind = \"sleep\"\nargs = { ms = 3000 }\ninstances = 2\nmax_retries = 1\n",
    );
    let out = c.shoal(&["submit", &spec, "--id", "slow-1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let running = c.wait_state("slow-1", "running");
    // Wait until both instances run, then kill the worker of instance 0.
    let mut on = String::new();
    wait_for("both instances running", LONG, || {
        let Some(j) = c.job("slow-1") else {
            return false;
        };
        let all = instances(&j);
        let ok = all.iter().all(|i| i["state"] == "running");
        if ok {
            on = all[0]["worker"].as_str().unwrap_or_default().to_string();
        }
        ok
    });
    drop(running);
    let victim = c.workers.iter_mut().find(|w| w.id == on).expect("victim");
    victim.kill9();
    let done = c.wait_state("slow-1", "completed");
    let first = &instances(&done)[0];
    assert_eq!(first["attempts"], 2, "{first}");
    assert_ne!(
        first["worker"].as_str(),
        Some(on.as_str()),
        "retried elsewhere: {first}"
    );
}

#[test]
fn the_manager_leader_dies_and_the_job_still_completes_once() {
    let mut c = Cluster::start();
    let spec = c.spec(
        "steady.toml",
        "name = \"steady\"\n[[workflows]]\nname = \"s\"\nkind = \"sleep\"\nargs = { ms = 2500 }\ninstances = 4\n",
    );
    let out = c.shoal(&["submit", &spec, "--id", "steady-1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    c.wait_state("steady-1", "running");
    let leader = wait_for_leader(&c.managers);
    let m = c
        .managers
        .iter_mut()
        .find(|m| m.id == leader)
        .expect("leader");
    m.kill9();
    let done = c.wait_state("steady-1", "completed");
    for i in instances(&done) {
        // Workers stayed up: a new leader must not have started anything again.
        assert_eq!(i["attempts"], 1, "{i}");
        assert_eq!(i["state"], "completed", "{i}");
    }
}

#[test]
fn cancel_stops_running_processes() {
    let c = Cluster::start();
    let pids = c.dir.path().join("pids");
    let script = format!("echo $$ >> {}; exec sleep 300", pids.display());
    let spec = c.spec(
        "long.toml",
        &format!(
            "name = \"long\"\n[[workflows]]\nname = \"s\"\nkind = \"exec\"\nargs = {{ command = \"sh\", args = [\"-c\", {script:?}] }}\ninstances = 2\n"
        ),
    );
    let out = c.shoal(&["submit", &spec, "--id", "long-1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let read_pids = || -> Vec<u32> {
        std::fs::read_to_string(&pids)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    wait_for("both processes started", LONG, || read_pids().len() == 2);
    // Status shows the work: the managers' ledger view, and each worker's load as
    // gossip carries it (what `shoal status` prints in LOAD).
    wait_for(
        "status shows 2 instances running and 2 cores in use",
        LONG,
        || {
            let Some(doc) = status(&c.managers[0]) else {
                return false;
            };
            let jobs = doc.jobs.unwrap_or_default();
            let used: u32 = doc
                .members
                .iter()
                .filter(|m| m.role == "worker")
                .filter_map(|m| m.used_cores)
                .sum();
            jobs["instances_running"] == 2 && used == 2
        },
    );
    let worker_doc = status(&c.workers[0]).expect("worker status");
    assert_eq!(worker_doc.jobs.expect("worker jobs section")["cores"], 2);
    let out = c.shoal(&["jobs", "cancel", "long-1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("cancelled"));
    let alive = |pid: &u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
    };
    wait_for("the cancelled processes are gone", LONG, || {
        !read_pids().iter().any(alive)
    });
    let job = c.job("long-1").expect("job");
    assert_eq!(job["state"], "cancelled");
    assert_eq!(job["reason"], "cancelled by a user");
}

#[test]
fn two_hundred_instances_through_a_gate_survive_a_worker_and_a_leader_kill() {
    let mut c = Cluster::start_with(&["w1", "w2", "w3"], true);
    let spec = c.spec(
        "big.toml",
        r#"
name = "big"
[[workflows]]
name = "s"
kind = "sleep"
args = { ms = 300 }
instances = 200
max_retries = 2
[[workflows]]
name = "flaky"
kind = "fail"
args = { times = 1 }
max_retries = 1
"#,
    );
    let servers = c.servers();
    // Progress lines go to a file: a pipe nobody reads until the end could fill up.
    let progress = c.dir.path().join("progress.log");
    let waiter = shoal()
        .args([
            "submit",
            &spec,
            "--wait",
            "--json",
            "--id",
            "big-1",
            "--servers",
            &servers,
        ])
        .env_remove("SHOAL_SERVERS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&progress).expect("progress file"))
        .spawn()
        .expect("run shoal submit --wait");
    // Mid-job: a worker dies, then the manager leader.
    let mut victim = String::new();
    wait_for("instances running", LONG, || {
        let Some(j) = c.job("big-1") else {
            return false;
        };
        let done = instances(&j)
            .iter()
            .filter(|i| i["state"] == "completed")
            .count();
        if let Some(w) = instances(&j)
            .iter()
            .find(|i| i["state"] == "running")
            .and_then(|i| i["worker"].as_str())
        {
            victim = w.to_string();
        }
        done >= 10 && !victim.is_empty()
    });
    let worker = victim.rsplit('/').next().unwrap_or_default().to_string();
    c.workers
        .iter_mut()
        .find(|w| w.id == worker)
        .expect("victim")
        .kill9();
    wait_for(
        "more instances completed after the worker died",
        LONG,
        || {
            c.job("big-1").is_some_and(|j| {
                instances(&j)
                    .iter()
                    .filter(|i| i["state"] == "completed")
                    .count()
                    >= 60
            })
        },
    );
    let leader = wait_for_leader(&c.managers);
    c.managers
        .iter_mut()
        .find(|m| m.id == leader)
        .expect("leader")
        .kill9();

    let out = waiter.wait_with_output().expect("submit --wait");
    assert!(
        out.status.success(),
        "submit --wait: {}",
        std::fs::read_to_string(&progress).unwrap_or_default()
    );
    let job: Value = serde_json::from_slice(&out.stdout).expect("job JSON");
    assert_eq!(job["state"], "completed", "{job}");
    let sleeps = job["workflows"][0]["instances"]
        .as_array()
        .expect("instances");
    assert_eq!(sleeps.len(), 200);
    let mut retried = 0;
    for i in sleeps {
        assert_eq!(i["state"], "completed", "{i}");
        let attempts = i["attempts"].as_u64().unwrap_or(0);
        assert!((1..=3).contains(&attempts), "{i}");
        if attempts > 1 {
            retried += 1;
            assert_ne!(
                i["worker"].as_str(),
                Some(victim.as_str()),
                "retried elsewhere: {i}"
            );
        }
    }
    assert!(
        retried > 0,
        "the killed worker's instances ran again elsewhere"
    );
    let flaky = &job["workflows"][1]["instances"][0];
    assert_eq!(flaky["state"], "completed", "{flaky}");
    assert_eq!(flaky["attempts"], 2, "{flaky}");
}

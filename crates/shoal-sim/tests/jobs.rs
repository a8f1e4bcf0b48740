//! Simulation of jobs across a leader change: three managers (shoal's `RaftGroup` on
//! the in-process network, paused clock, one thread), simulated workers, and the
//! leader's own decision code ([`shoal_node::jobs::decide::decide`]) run every 100 ms
//! of simulated time by whichever manager leads.
//!
//! A 500-instance job runs while a worker crashes (gossip declares it failed a second
//! later) and then the manager leader crashes. Checked after every tick: no instance
//! runs on two live workers at once, and a worker never obeys an order fenced below a
//! term it has already obeyed. At the end: the job completed, every instance completed
//! exactly once (one recorded result each), and the replicas agree.
//!
//! Workers report in batches (one `Reports` entry per worker per tick), and the leader
//! believes the instances short (its [`Depths`] hear 5 ms per attempt), so it places
//! 4 per core (one core per worker) at once: many attempts wait on a worker when it crashes.
//!
//! `SHOAL_SIM_SEED=<seed>` replays one seed.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use rand::{RngExt as _, SeedableRng, rngs::StdRng};
use shoal_node::jobs::decide::{
    Depths, RoundInputs, WorkerView, decide, first_placements, work_key,
};
use shoal_raft::group::{GroupOptions, RaftGroup};
use shoal_sched::{Rng, Strategy};
use shoal_sim::raft::{RaftCluster, paused_local};
use shoal_state::{
    Command, JobCommand, JobResponse, Request, Response, State,
    jobs::{
        Event, InstanceRef, JobSpec, Outcome, Placing, ReportItem, RunState, Work, WorkflowSpec,
    },
};
use shoal_types::{Fence, FenceGuard, MemberState};

const INSTANCES: u32 = 500;
const WORKERS: usize = 4;
const CORES: u32 = 1;
const TICK: Duration = Duration::from_millis(100);
/// Gossip declares a crashed worker failed this long after the crash.
const DETECTION: Duration = Duration::from_millis(1_000);
const WORKER_CRASH_TICK: u64 = 30;
const LEADER_CRASH_TICK: u64 = 60;
const TICKS_MAX: u64 = 3_000;

fn options() -> GroupOptions {
    shoal_sim::raft::options(200, 50)
}

struct SimWorker {
    id: String,
    /// None while alive; the crash time otherwise.
    crashed_at: Option<tokio::time::Instant>,
    /// The newest leader term obeyed (as the real worker keeps it).
    fences: FenceGuard,
    /// Attempts running: (instance, attempt) → when it finishes.
    running: BTreeMap<(InstanceRef, u32), tokio::time::Instant>,
    /// Finished attempts whose result is not recorded yet.
    unreported: Vec<(InstanceRef, u32)>,
    /// What it ran when it "crashed": it was only cut off, and reports these late.
    zombies: Vec<(InstanceRef, u32)>,
}

struct Sim {
    seed: u64,
    rng: StdRng,
    cluster: RaftCluster,
    workers: Vec<SimWorker>,
    /// Recorded (applied) results per instance: (worker, attempt) of each.
    results: HashMap<InstanceRef, Vec<(String, u32)>>,
    /// What the leader believes about run times (it is told 5 ms each).
    depths: Depths,
    log: Vec<String>,
}

impl Sim {
    fn fail(&self, what: &str) -> ! {
        panic!(
            "jobs simulation, seed {}: {what}\nlast events: {:#?}\nreplay: SHOAL_SIM_SEED={} cargo test -p shoal-sim --test jobs",
            self.seed,
            &self.log[self.log.len().saturating_sub(20)..],
            self.seed
        );
    }

    fn leader(&self) -> Option<(RaftGroup, u64)> {
        self.cluster.live.borrow().values().find_map(|g| {
            let (l, term) = g.leader()?;
            (l == g.id() && g.status().role == "leader").then(|| (g.clone(), term))
        })
    }

    async fn write(&mut self, cmd: JobCommand) -> Option<(JobResponse, Fence)> {
        let (g, _) = self.leader()?;
        let req = Request {
            client: None,
            command: Command::Jobs(cmd),
        };
        match tokio::time::timeout(Duration::from_secs(2), g.propose(req)).await {
            Ok(Ok(applied)) => match applied.response {
                Response::Jobs(Ok(r)) => Some((r, Fence::new(applied.term, applied.index.0))),
                other => self.fail(&format!("a decision was refused: {other:?}")),
            },
            _ => None,
        }
    }

    fn views(&self, now: tokio::time::Instant) -> HashMap<String, WorkerView> {
        self.workers
            .iter()
            .map(|w| {
                let failed = w
                    .crashed_at
                    .is_some_and(|t| now.duration_since(t) >= DETECTION);
                (
                    w.id.clone(),
                    WorkerView {
                        addr: String::new(),
                        cores: CORES,
                        tags: Default::default(),
                        state: if failed {
                            MemberState::Failed
                        } else {
                            MemberState::Alive
                        },
                        accepting: !failed,
                    },
                )
            })
            .collect()
    }

    /// A Run order reaching a worker: fenced, idempotent, lost if the worker is down.
    fn run_order(
        &mut self,
        worker: &str,
        r: InstanceRef,
        attempt: u32,
        fence: Fence,
        now: tokio::time::Instant,
    ) -> bool {
        let ms = self.rng.random_range(200..800);
        let Some(w) = self.workers.iter_mut().find(|w| w.id == worker) else {
            return false;
        };
        if w.crashed_at.is_some() {
            return false;
        }
        if w.fences.admit_term(fence).is_err() {
            return false;
        }
        let key = (r, attempt);
        if !w.running.contains_key(&key) && !w.unreported.contains(&key) {
            w.running.insert(key, now + Duration::from_millis(ms));
        }
        true
    }

    /// Results of finished attempts go to the leader, each until recorded.
    async fn report(&mut self, now: tokio::time::Instant) {
        for i in 0..self.workers.len() {
            if self.workers[i].crashed_at.is_some() {
                continue;
            }
            let done: Vec<(InstanceRef, u32)> = self.workers[i]
                .running
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(k, _)| k.clone())
                .collect();
            for k in done {
                self.workers[i].running.remove(&k);
                self.workers[i].unreported.push(k);
            }
            let pending = std::mem::take(&mut self.workers[i].unreported);
            if pending.is_empty() {
                continue;
            }
            let worker = self.workers[i].id.clone();
            let work = work_key(&spec().workflows[0]);
            for _ in &pending {
                self.depths.record(work, 5_000);
            }
            match self.report_batch(&worker, &pending, now).await {
                Some(applied) => {
                    for ((r, attempt), applied) in pending.into_iter().zip(applied) {
                        if applied {
                            self.results
                                .entry(r)
                                .or_default()
                                .push((worker.clone(), attempt));
                        }
                    }
                }
                // No leader right now: try again next tick.
                None => self.workers[i].unreported.extend(pending),
            }
        }
    }

    /// One `Reports` entry: whether each report was applied (None: no leader).
    async fn report_batch(
        &mut self,
        worker: &str,
        attempts: &[(InstanceRef, u32)],
        now: tokio::time::Instant,
    ) -> Option<Vec<bool>> {
        let cmd = JobCommand::Reports {
            worker: worker.to_string(),
            reports: attempts
                .iter()
                .map(|(r, attempt)| ReportItem {
                    instance: r.clone(),
                    attempt: *attempt,
                    event: succeeded(),
                })
                .collect(),
            now_ms: now_ms(now),
        };
        match self.write(cmd).await? {
            (JobResponse::ReportedMany { results }, _) if results.len() == attempts.len() => {
                Some(results.into_iter().map(|(applied, _)| applied).collect())
            }
            other => self.fail(&format!("unexpected {other:?}")),
        }
    }

    /// A worker that was cut off (not dead) comes back 1.2 s later — declared failed,
    /// its attempts placed again elsewhere and running there — and reports the attempts
    /// it had as succeeded: none of these results may count.
    async fn zombie_reports(&mut self, now: tokio::time::Instant) {
        for i in 0..self.workers.len() {
            let due = self.workers[i]
                .crashed_at
                .is_some_and(|t| now.duration_since(t) >= Duration::from_millis(1_200));
            if !due || self.workers[i].zombies.is_empty() {
                continue;
            }
            let worker = self.workers[i].id.clone();
            let zombies = std::mem::take(&mut self.workers[i].zombies);
            match self.report_batch(&worker, &zombies, now).await {
                Some(applied) => {
                    for ((r, attempt), applied) in zombies.into_iter().zip(applied) {
                        if applied {
                            self.results
                                .entry(r.clone())
                                .or_default()
                                .push((worker.clone(), attempt));
                            self.log.push(format!(
                                "late result of {r} attempt {attempt} from {worker} was recorded"
                            ));
                        }
                    }
                }
                None => self.workers[i].zombies = zombies,
            }
        }
    }

    /// One leader tick: decide with the node's own code, commit, then act.
    async fn lead(&mut self, now: tokio::time::Instant, since: tokio::time::Instant, tick: u64) {
        let Some((g, term)) = self.leader() else {
            return;
        };
        let views = self.views(now);
        let grace = now.duration_since(since) > Duration::from_secs(10);
        let rng = Rng::seeded(self.seed ^ tick);
        let d = g.read(|s| {
            decide(
                s,
                RoundInputs {
                    workers: &views,
                    now: now_ms(now),
                    unknown_grace_passed: grace,
                    term,
                    rng,
                    default_strategy: Strategy::LeastConnections,
                    depths: &self.depths,
                },
            )
        });
        for cmd in d.lost.into_iter().chain(d.expired) {
            self.log.push(format!("t{tick}: {cmd:?}"));
            self.write(cmd).await;
        }
        for (cmd, ..) in d.timeouts {
            self.write(cmd).await;
        }
        if let Some(cmd) = d.schedule
            && let Some((JobResponse::Scheduled { places, fence }, _)) = self.write(cmd).await
        {
            for p in places {
                self.run_order(&p.worker, p.instance, p.attempt, fence, now);
            }
        }
        for (r, attempt, worker, fence) in d.resend {
            self.run_order(&worker, r, attempt, fence, now);
        }
        // Workers confirm what they run (the Started report).
        let started: Vec<(String, InstanceRef, u32)> = self
            .workers
            .iter()
            .filter(|w| w.crashed_at.is_none())
            .flat_map(|w| w.running.keys().map(|(r, a)| (w.id.clone(), r.clone(), *a)))
            .collect();
        let dispatching: Vec<(String, InstanceRef, u32)> = g.read(|s| {
            started
                .into_iter()
                .filter(|(_, r, _)| {
                    s.jobs
                        .instance(r)
                        .is_some_and(|i| i.state.0 == RunState::Dispatching)
                })
                .collect()
        });
        for (worker, r, attempt) in dispatching {
            let cmd = JobCommand::Report {
                worker,
                instance: r,
                attempt,
                event: Event::Started,
                now_ms: now_ms(now),
            };
            self.write(cmd).await;
        }
    }

    fn check(&self, tick: u64) {
        let mut running_on: HashMap<&InstanceRef, &str> = HashMap::new();
        for w in self.workers.iter().filter(|w| w.crashed_at.is_none()) {
            for (r, _) in w.running.keys() {
                if let Some(other) = running_on.insert(r, &w.id) {
                    self.fail(&format!(
                        "tick {tick}: instance {r} runs on {other} and {} at once",
                        w.id
                    ));
                }
            }
        }
    }
}

/// A worker's report that an attempt succeeded.
fn succeeded() -> Event {
    Event::Finished {
        outcome: Outcome::Succeeded,
        exit_code: Some(0),
        error: None,
        stdout_tail: String::new(),
        stderr_tail: String::new(),
    }
}

fn now_ms(t: tokio::time::Instant) -> u64 {
    // Simulated wall clock: ms since an arbitrary epoch, from the paused clock.
    static START: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| t);
    1_000_000 + t.duration_since(start).as_millis() as u64
}

fn spec() -> JobSpec {
    JobSpec {
        name: "big".into(),
        timeout_s: None,
        strategy: None,
        workflows: vec![WorkflowSpec {
            name: "w".into(),
            work: Work::Sleep { ms: 500 },
            instances: INSTANCES,
            cores: 1,
            timeout_s: None,
            max_retries: 3,
            constraints: Default::default(),
            after: Vec::new(),
        }],
    }
}

async fn run(seed: u64) {
    let mut sim = Sim {
        seed,
        rng: StdRng::seed_from_u64(seed),
        cluster: RaftCluster::new("jobs", seed, 3, options()),
        workers: (1..=WORKERS)
            .map(|i| SimWorker {
                id: format!("w{i}"),
                crashed_at: None,
                fences: FenceGuard::default(),
                running: BTreeMap::new(),
                unreported: Vec::new(),
                zombies: Vec::new(),
            })
            .collect(),
        results: HashMap::new(),
        depths: Depths::default(),
        log: Vec::new(),
    };
    sim.cluster.form().await;
    sim.cluster
        .group(1)
        .expect("replica 1")
        .await_leader(None, Duration::from_secs(5))
        .await
        .unwrap_or_else(|| sim.fail("no first leader"));
    // Submitted through the leader, which places the first instances in the Submit
    // entry itself (the node's own `first_placements`).
    let t0 = tokio::time::Instant::now();
    let (g, term) = sim
        .leader()
        .unwrap_or_else(|| sim.fail("no leader to submit to"));
    let views = sim.views(t0);
    let places = g.read(|s| {
        first_placements(
            s,
            "big",
            &spec(),
            RoundInputs {
                workers: &views,
                now: now_ms(t0),
                unknown_grace_passed: false,
                term,
                rng: Rng::seeded(seed),
                default_strategy: Strategy::LeastConnections,
                depths: &sim.depths,
            },
        )
    });
    if places.len() != WORKERS * CORES as usize {
        sim.fail(&format!(
            "first placements: {} (one per core expected)",
            places.len()
        ));
    }
    let submitted = sim
        .write(JobCommand::Submit {
            id: "big".into(),
            spec: spec(),
            now_ms: now_ms(t0),
            place: Some(Placing { term, places }),
        })
        .await;
    match submitted {
        Some((
            JobResponse::Submitted {
                created: true,
                scheduled: Some((placed, fence)),
                ..
            },
            _,
        )) if placed.len() == WORKERS * CORES as usize => {
            for p in placed {
                sim.run_order(&p.worker, p.instance, p.attempt, fence, t0);
            }
        }
        other => sim.fail(&format!("submit: {other:?}")),
    }
    let mut leading: Option<(u64, tokio::time::Instant)> = None;
    let mut tick = 0;
    // Most attempts one worker held at once (more than its cores: some waited).
    let mut deepest = 0;
    loop {
        tick += 1;
        if tick > TICKS_MAX {
            sim.fail("the job did not finish in time");
        }
        tokio::time::sleep(TICK).await;
        let now = tokio::time::Instant::now();
        if tick == WORKER_CRASH_TICK {
            let busiest = (0..sim.workers.len())
                .max_by_key(|i| sim.workers[*i].running.len())
                .unwrap_or(0);
            let w = &mut sim.workers[busiest];
            sim.log.push(format!(
                "t{tick}: crash worker {} running {}",
                w.id,
                w.running.len()
            ));
            w.crashed_at = Some(now);
            w.zombies = std::mem::take(&mut w.running).into_keys().collect();
            w.unreported.clear();
        }
        if tick == LEADER_CRASH_TICK
            && let Some((g, term)) = sim.leader()
        {
            sim.log.push(format!(
                "t{tick}: crash manager leader {} (term {term})",
                g.id()
            ));
            sim.cluster.crash(g.id()).await;
        }
        sim.report(now).await;
        sim.zombie_reports(now).await;
        let term = sim.leader().map(|(_, t)| t);
        let since = match (leading, term) {
            (Some((t, at)), Some(term)) if t == term => at,
            (_, Some(term)) => {
                // A new leader knows no run times yet (they live in its memory only).
                leading = Some((term, now));
                sim.depths = Depths::default();
                now
            }
            _ => now,
        };
        sim.lead(now, since, tick).await;
        sim.check(tick);
        deepest = sim
            .workers
            .iter()
            .map(|w| w.running.len())
            .max()
            .unwrap_or(0)
            .max(deepest);
        let state = sim
            .leader()
            .map(|(g, _)| g.read(|s| s.jobs.get("big").map(|j| j.state)));
        if let Some(Some(s)) = state
            && s.is_terminal()
        {
            if s != RunState::Completed {
                sim.fail(&format!("the job ended {s}"));
            }
            break;
        }
    }
    // Exactly once: one recorded result per instance, every instance completed.
    let (g, _) = sim
        .leader()
        .unwrap_or_else(|| sim.fail("no leader at the end"));
    let job = g.read(|s: &State| s.jobs.get("big").cloned()).expect("job");
    for (i, inst) in job.workflows[0].instances.iter().enumerate() {
        let r = InstanceRef {
            job: "big".into(),
            workflow: 0,
            index: i as u32,
        };
        if inst.state.0 != RunState::Completed {
            sim.fail(&format!("instance {i} ended {}", inst.state.0));
        }
        // One result, and it is the final attempt's, from the worker that ran it.
        let expected = vec![(inst.worker.clone().unwrap_or_default(), inst.attempts)];
        if sim.results.get(&r) != Some(&expected) {
            sim.fail(&format!(
                "instance {i}: recorded results {:?}, expected exactly {expected:?}",
                sim.results.get(&r)
            ));
        }
    }
    let retried = job.workflows[0]
        .instances
        .iter()
        .filter(|i| i.attempts > 1)
        .count();
    if retried == 0 {
        sim.fail("the crashed worker's instances were never retried (the crash did not bite)");
    }
    if deepest <= CORES as usize {
        sim.fail(&format!(
            "no worker ever held more attempts than cores ({deepest}): short work was not queued"
        ));
    }
    // The replicas agree.
    let digest: Vec<State> = {
        let mut v = Vec::new();
        let groups: Vec<RaftGroup> = sim.cluster.live.borrow().values().cloned().collect();
        for g in &groups {
            let target = g.status().commit_index;
            let _ = g.await_applied(target, Duration::from_secs(5)).await;
            v.push(g.read(|s| s.clone()));
        }
        v
    };
    if digest.windows(2).any(|w| w[0].jobs != w[1].jobs) {
        // A follower may trail by the last entries; compare at equal applied index.
        let idx: Vec<u64> = digest.iter().map(|s| s.last_applied.0).collect();
        if idx.windows(2).all(|w| w[0] == w[1]) {
            sim.fail("replicas at the same index hold different jobs");
        }
    }
    sim.cluster.shutdown().await;
}

// Fifty seeds in two halves, so the test harness runs them on two threads.
#[test]
fn a_500_instance_job_survives_a_worker_crash_and_a_leader_crash() {
    for seed in shoal_sim::seeds(1..=25) {
        paused_local(run(seed));
    }
}

#[test]
fn a_500_instance_job_survives_a_worker_crash_and_a_leader_crash_more_seeds() {
    // With SHOAL_SIM_SEED(S) set, the first half runs them.
    if std::env::var_os("SHOAL_SIM_SEED").is_some() || std::env::var_os("SHOAL_SIM_SEEDS").is_some()
    {
        return;
    }
    for seed in 26..=50 {
        paused_local(run(seed));
    }
}

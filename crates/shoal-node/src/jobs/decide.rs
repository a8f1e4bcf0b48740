//! What the manager leader decides, as pure functions of the ledger and the workers
//! gossip shows: one round's placements, lost workers, timeouts and re-sent orders
//! ([`decide`]), and a new job's first placements ([`first_placements`]). The node's
//! leader loop (`leader`) runs them every tick; the simulation runs the very same code.

use std::collections::{BTreeSet, HashMap};

use shoal_sched::{Demand, InstanceKey, Rng, Scheduler, Strategy};

use shoal_state::{
    JobCommand,
    jobs::{InstanceRef, Place, RunState},
};
use shoal_types::Fence;
use shoal_types::MemberState;

use shoal_sched::Tags;
use shoal_state::jobs::{Event, JobSpec, Outcome, Work, kind_tag};

/// Queue slots per worker core: at most this many known-short instances per core are
/// placed on a worker at once (see [`Depths`]).
pub const SLOTS_PER_CORE: u32 = 64;
/// Work handed to a core ahead of time, at most: a workflow whose instances run `d` µs
/// may have `QUEUE_TARGET_US / d` of them per core on a worker (1 ..= SLOTS_PER_CORE).
const QUEUE_TARGET_US: f64 = 20_000.0;
/// Queued instances a round considers beyond the slots offered.
const RUNNABLE_MIN: usize = 256;
/// A placed attempt not confirmed by its worker within this long gets its order again.
const RESEND_AFTER_MS: u64 = 2_000;
/// An attempt past its timeout by this much is timed out by the leader (the worker
/// normally reports it first).
const TIMEOUT_GRACE_MS: u64 = 2_000;

/// A worker as gossip shows it.
#[derive(Debug, Clone)]
pub struct WorkerView {
    pub addr: String,
    pub cores: u32,
    pub tags: Tags,
    pub state: MemberState,
    pub accepting: bool,
}

/// What one round needs from the ledger.
struct Plan {
    /// What the scheduler must place: queued instances whose workflow may run.
    runnable: Vec<Demand>,
    /// (ref, attempt, worker, fence, state, placed_ms, cores, timeout_s)
    active: Vec<Active>,
    submitted: Vec<String>,
    /// Jobs past their timeout.
    expired: Vec<(String, u64)>,
}

struct Active {
    r: InstanceRef,
    depth: u32,
    attempt: u32,
    worker: String,
    fence: Fence,
    state: RunState,
    placed_ms: u64,
    cores: u32,
    timeout_s: Option<u64>,
}

fn plan(
    s: &shoal_state::State,
    now: u64,
    default_strategy: Strategy,
    limit: usize,
    depths: &Depths,
) -> Plan {
    let mut p = Plan {
        runnable: Vec::new(),
        active: Vec::new(),
        submitted: Vec::new(),
        expired: Vec::new(),
    };
    for job in s.jobs.unfinished() {
        if job.state == RunState::Submitted {
            p.submitted.push(job.id.clone());
        }
        if let Some(t) = job.spec.timeout_s
            && job.submitted_ms + t * 1000 < now
        {
            p.expired.push((job.id.clone(), t));
            continue;
        }
        // Depth per workflow, hashed once per round.
        let depth: Vec<u32> = job
            .spec
            .workflows
            .iter()
            .map(|wf| depths.depth(work_key(wf)))
            .collect();
        let room = limit.saturating_sub(p.runnable.len());
        for (r, attempt) in job.runnable_up_to(room) {
            let excluded = job.workflows[r.workflow as usize].instances[r.index as usize]
                .excluded
                .clone();
            let w = r.workflow as usize;
            p.runnable.push(demand(
                &job.spec,
                w,
                key(&r, attempt),
                excluded,
                default_strategy,
                depth[w],
            ));
        }
        for (r, attempt, worker, fence) in job.active() {
            let inst = &job.workflows[r.workflow as usize].instances[r.index as usize];
            let wf = &job.spec.workflows[r.workflow as usize];
            p.active.push(Active {
                depth: depth[r.workflow as usize],
                state: inst.state.0,
                placed_ms: inst.placed_ms,
                cores: wf.cores,
                timeout_s: wf.timeout_s,
                r,
                attempt,
                worker,
                fence,
            });
        }
    }
    p
}

fn key(r: &InstanceRef, attempt: u32) -> InstanceKey {
    InstanceKey {
        job: r.job.clone(),
        workflow: r.workflow.to_string(),
        index: r.index,
        attempt,
    }
}

/// How long instances run, as reported by workers: a moving average per kind of work
/// (the work with its arguments, and its cores — see [`work_key`]), so what was learnt
/// from one job's instances serves the next job that runs the same thing. The leader's
/// measure of how many may wait on a worker.
#[derive(Debug, Default)]
pub struct Depths {
    ran_us: HashMap<u64, f64>,
}

/// Identifies a kind of work for [`Depths`]: a hash of the workflow's work (kind and
/// arguments) and cores. Leader memory only; never stored or sent.
pub fn work_key(wf: &shoal_state::jobs::WorkflowSpec) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    wf.work.hash(&mut h);
    wf.cores.hash(&mut h);
    h.finish()
}

impl Depths {
    /// Kinds of work remembered at most (all are forgotten when full, then learnt
    /// again).
    const KEPT: usize = 4096;

    /// Adds one attempt's run time.
    pub fn record(&mut self, work: u64, ran_us: u64) {
        if self.ran_us.len() >= Self::KEPT && !self.ran_us.contains_key(&work) {
            self.ran_us.clear();
        }
        let sample = ran_us as f64;
        self.ran_us
            .entry(work)
            .and_modify(|avg| *avg = 0.8 * *avg + 0.2 * sample)
            .or_insert(sample);
    }

    /// How many instances of this work may wait per core: 1 until one ran.
    pub fn depth(&self, work: u64) -> u32 {
        match self.ran_us.get(&work) {
            None => 1,
            Some(us) => {
                (QUEUE_TARGET_US / us.max(1.0)).clamp(1.0, f64::from(SLOTS_PER_CORE)) as u32
            }
        }
    }
}

/// What the leader decides in one tick, from the ledger and the workers gossip shows.
/// Pure: the node runs it every tick; the simulation runs the very same code.
#[derive(Debug, Default)]
pub struct Decisions {
    /// `WorkerLost` for workers gossip declared failed or gone.
    pub lost: Vec<JobCommand>,
    /// `Cancel { timed_out }` for jobs past their timeout.
    pub expired: Vec<JobCommand>,
    /// `Report { TimedOut }` for attempts past their timeout, and whom to stop.
    pub timeouts: Vec<(JobCommand, InstanceRef, String)>,
    /// One `Schedule` entry for this round (None: nothing to place or to mark seen).
    pub schedule: Option<JobCommand>,
    /// Placed but unconfirmed attempts whose Run order should be sent again:
    /// (instance, attempt, worker, fence).
    pub resend: Vec<(InstanceRef, u32, String, Fence)>,
}

/// What a round decides from besides the ledger.
pub struct RoundInputs<'a> {
    /// The workers gossip shows.
    pub workers: &'a HashMap<String, WorkerView>,
    pub now: u64,
    /// The leader has led long enough that a worker gossip has never shown it counts
    /// as gone.
    pub unknown_grace_passed: bool,
    pub term: u64,
    pub rng: Rng,
    pub default_strategy: Strategy,
    pub depths: &'a Depths,
}

/// Decides one tick.
pub fn decide(s: &shoal_state::State, inputs: RoundInputs<'_>) -> Decisions {
    let RoundInputs {
        workers,
        now,
        unknown_grace_passed,
        term,
        rng,
        default_strategy,
        depths,
    } = inputs;
    // A round places at most as many instances as there are free slots; looking at
    // that many queued instances (and a few more) keeps later ones that fit
    // (constraints) moving without planning all 100,000 of a big job every round.
    let limit = offered_slots(workers).saturating_add(RUNNABLE_MIN);
    let p = plan(s, now, default_strategy, limit, depths);
    let mut d = Decisions::default();

    // 1. Lost workers.
    let mut lost: BTreeSet<String> = BTreeSet::new();
    for a in &p.active {
        let gone = match workers.get(&a.worker) {
            Some(w) => matches!(w.state, MemberState::Failed | MemberState::Left),
            None => unknown_grace_passed,
        };
        if gone {
            lost.insert(a.worker.clone());
        }
    }
    for w in &lost {
        let state = workers
            .get(w)
            .map_or("unknown to gossip".to_string(), |v| v.state.to_string());
        d.lost.push(JobCommand::WorkerLost {
            worker: w.clone(),
            only: None,
            reason: format!("worker {w} {state}"),
            now_ms: now,
        });
    }

    // 2. Deadlines.
    for (id, t) in &p.expired {
        d.expired.push(JobCommand::Cancel {
            id: id.clone(),
            timed_out: true,
            reason: format!("the job's timeout of {t} s passed"),
            now_ms: now,
        });
    }
    for a in p.active.iter().filter(|a| !lost.contains(&a.worker)) {
        if let Some(t) = a.timeout_s
            && a.placed_ms + t * 1000 + TIMEOUT_GRACE_MS < now
        {
            let cmd = JobCommand::Report {
                worker: a.worker.clone(),
                instance: a.r.clone(),
                attempt: a.attempt,
                event: timed_out(t),
                now_ms: now,
            };
            d.timeouts.push((cmd, a.r.clone(), a.worker.clone()));
        }
    }
    if !d.lost.is_empty() || !d.expired.is_empty() {
        // The ledger is about to change under this plan: plan again next tick.
        return d;
    }

    // 3. One scheduling round.
    let places = place(workers, &p.active, p.runnable, rng);
    if !places.is_empty() || !p.submitted.is_empty() {
        d.schedule = Some(JobCommand::Schedule {
            term,
            now_ms: now,
            places,
            seen: p.submitted.clone(),
        });
    }

    // 4. Orders placed but not confirmed.
    for a in &p.active {
        if a.state == RunState::Dispatching && a.placed_ms + RESEND_AFTER_MS < now {
            // Sent in this leader's term: a worker that already obeys this term would
            // refuse the placing entry's older one, and the attempt would wait forever.
            d.resend.push((
                a.r.clone(),
                a.attempt,
                a.worker.clone(),
                Fence::new(term, a.fence.index),
            ));
        }
    }
    d
}

/// One scheduling round: the workers gossip shows, loaded with what the ledger placed
/// on them, place what they have room for among `runnable`.
fn place(
    workers: &HashMap<String, WorkerView>,
    active: &[Active],
    runnable: Vec<Demand>,
    rng: Rng,
) -> Vec<Place> {
    let mut sched = Scheduler::with_slots_per_core(rng, SLOTS_PER_CORE);
    for (id, w) in workers {
        if matches!(w.state, MemberState::Alive | MemberState::Suspect) {
            sched.upsert_worker(id, w.cores, w.tags.clone(), w.accepting);
        }
    }
    for a in active {
        sched.restore(&shoal_sched::Placement {
            key: key(&a.r, a.attempt),
            worker: a.worker.clone(),
            cores: a.cores,
            slots: sched.slots_for(a.cores, a.depth),
        });
    }
    for demand in runnable {
        let k = demand.key.clone();
        if let Err(e) = sched.enqueue(demand) {
            tracing::debug!(instance = ?k, error = %e, "not queued");
        }
    }
    sched
        .round()
        .into_iter()
        .filter_map(|pl| {
            Some(Place {
                instance: InstanceRef {
                    job: pl.key.job,
                    workflow: pl.key.workflow.parse().ok()?,
                    index: pl.key.index,
                },
                worker: pl.worker,
                attempt: pl.key.attempt,
            })
        })
        .collect()
}

/// Where a new job's first instances go, decided by the leader that takes the
/// submission (committed with the Submit entry itself: no round and no second entry
/// before they start). Only workflows without dependencies; only the room there is;
/// nothing for an id the ledger already has. Pure, like [`decide`].
pub fn first_placements(
    s: &shoal_state::State,
    id: &str,
    spec: &shoal_state::jobs::JobSpec,
    inputs: RoundInputs<'_>,
) -> Vec<Place> {
    if s.jobs.get(id).is_some() {
        return Vec::new();
    }
    let RoundInputs {
        workers,
        now,
        rng,
        default_strategy,
        depths,
        ..
    } = inputs;
    let offered = offered_slots(workers);
    let p = plan(s, now, default_strategy, 0, depths);
    let mut runnable = Vec::new();
    for (w, wf) in spec.workflows.iter().enumerate() {
        if !wf.after.is_empty() {
            continue;
        }
        let depth = depths.depth(work_key(wf));
        for index in 0..wf.instances {
            if runnable.len() >= offered {
                break;
            }
            let r = InstanceRef {
                job: id.to_string(),
                workflow: w as u32,
                index,
            };
            runnable.push(demand(
                spec,
                w,
                key(&r, 1),
                Default::default(),
                default_strategy,
                depth,
            ));
        }
    }
    place(workers, &p.active, runnable, rng)
}

/// What the scheduler needs to place one instance of workflow `w`: its cores, its
/// constraints (plus the custom kind's worker tag), the workers to avoid, the strategy.
pub fn demand(
    spec: &JobSpec,
    w: usize,
    key: InstanceKey,
    exclude: std::collections::BTreeSet<String>,
    default_strategy: Strategy,
    depth: u32,
) -> Demand {
    let wf = &spec.workflows[w];
    let mut constraints = wf.constraints.clone();
    match &wf.work {
        Work::Custom { kind, .. } => {
            constraints.insert(kind_tag(kind), "yes".into());
        }
        // Workers started with --no-exec do not advertise `kind.exec`.
        Work::Exec { .. } => {
            constraints.insert(kind_tag("exec"), "yes".into());
        }
        _ => {}
    }
    let strategy = spec
        .strategy
        .as_deref()
        .and_then(Strategy::parse)
        .unwrap_or(default_strategy);
    Demand {
        key,
        cores: wf.cores,
        constraints,
        exclude,
        strategy,
        depth,
    }
}

/// A finished report the leader records for an attempt it timed out itself.
pub fn timed_out(after_s: u64) -> Event {
    Event::Finished {
        outcome: Outcome::TimedOut,
        exit_code: None,
        error: Some(format!("timed out after {after_s} s")),
        stdout_tail: String::new(),
        stderr_tail: String::new(),
    }
}

/// Queue slots the live workers offer in all.
pub(super) fn offered_slots(workers: &HashMap<String, WorkerView>) -> usize {
    workers
        .values()
        .filter(|w| matches!(w.state, MemberState::Alive | MemberState::Suspect))
        .map(|w| w.cores as usize * SLOTS_PER_CORE as usize)
        .sum()
}

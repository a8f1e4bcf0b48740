//! The manager leader's scheduling loop. Every tick (and whenever a submission, a
//! result or a membership change wakes it) the leader, and only the leader:
//!
//! 1. records workers that gossip declared failed or gone as lost (their instances are
//!    retried elsewhere or fail);
//! 2. times out attempts and jobs past their deadlines;
//! 3. runs one scheduling round over the ledger's runnable instances and the workers'
//!    free slots, commits the placements as one entry, then sends each placed worker
//!    one message with its Run orders, fenced by that entry's (term, index);
//! 4. re-sends Run orders that were placed but never confirmed (a leader change or a
//!    lost message in between; a worker ignores a Run it already runs).
//!
//! Everything it acts on is read from the replicated ledger, so a new leader simply
//! continues: nothing it needs to be correct lives only in the old leader's memory.
//! One thing it keeps to be fast: how long each workflow's instances run ([`Depths`],
//! from the workers' reports). Instances known to be short are handed out up to
//! [`SLOTS_PER_CORE`] per core, to wait on the worker, so workers never idle for a
//! round trip between short tasks; long or unknown ones go one per core. A new leader
//! starts without it and learns it again from the first results.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use shoal_sched::{Demand, InstanceKey, Rng, Scheduler, Strategy};

use futures_util::StreamExt as _;
use shoal_membership::EventKind;
use shoal_state::{
    JobCommand, JobResponse,
    jobs::{InstanceRef, Place, RunState},
};
use shoal_types::Fence;
use shoal_types::MemberState;

use super::{
    OrderReply, RunBatch, RunOrder, now_ms,
    service::{JobsManager, WorkerView},
};

/// Scheduling tick when nothing wakes the loop earlier.
pub const TICK: Duration = Duration::from_millis(100);
/// Queue slots per worker core: at most this many known-short instances per core are
/// placed on a worker at once (see [`Depths`]).
pub const SLOTS_PER_CORE: u32 = 64;
/// Work handed to a core ahead of time, at most: a workflow whose instances run `d` µs
/// may have `QUEUE_TARGET_US / d` of them per core on a worker (1 ..= SLOTS_PER_CORE).
const QUEUE_TARGET_US: f64 = 20_000.0;
/// Queued instances a round considers beyond the slots offered.
const RUNNABLE_MIN: usize = 256;
/// Rounds are at least this far apart (what arrives meanwhile joins the next round).
const ROUND_GAP: Duration = Duration::from_millis(1);
/// A placed attempt not confirmed by its worker within this long gets its order again.
const RESEND_AFTER_MS: u64 = 2_000;
/// A worker gossip has never shown to this leader is lost after this long.
const UNKNOWN_WORKER_GRACE: Duration = Duration::from_secs(10);
/// An attempt past its timeout by this much is timed out by the leader (the worker
/// normally reports it first).
const TIMEOUT_GRACE_MS: u64 = 2_000;
/// Run orders: tries per placement before the attempt counts as failed on that worker.
const RUN_TRIES: u32 = 3;

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
            p.runnable.push(super::service::demand(
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

/// Runs the loop for as long as the manager runs.
pub async fn run(mgr: Arc<JobsManager>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leading_since: Option<(u64, tokio::time::Instant)> = None;
    let mut rounds: u64 = 0;
    let mut jobs_changes = mgr.replica.group.jobs_changes();
    let mut events = Box::pin(mgr.membership.events());
    loop {
        // A round when a jobs command is applied here (a submission or a report
        // through any manager; KV and chat writes do not wake it), when a worker
        // joins, fails or leaves (its instances go elsewhere within a round of the
        // verdict, not a tick), when woken, or every tick; rounds at most every
        // ROUND_GAP, so a burst of entries makes one round, not one each.
        let worker_changed = async {
            loop {
                match events.next().await {
                    Some(e)
                        if e.member.role == Some(shoal_types::Role::Worker)
                            && matches!(
                                e.kind,
                                EventKind::NodeFailed | EventKind::NodeLeft | EventKind::NodeJoined
                            ) =>
                    {
                        return;
                    }
                    Some(_) => {}
                    // The membership agent stopped: no more events; ticks go on.
                    None => std::future::pending::<()>().await,
                }
            }
        };
        tokio::select! {
            _ = tick.tick() => {}
            () = mgr.wake.notified() => {}
            () = async {
                // A stopped group sends no more: wait for the tick instead of spinning.
                if jobs_changes.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            } => {}
            () = worker_changed => {}
        }
        tokio::time::sleep(ROUND_GAP).await;
        let Some(term) = mgr.is_leader() else {
            leading_since = None;
            mgr.missing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
            continue;
        };
        let since = match leading_since {
            Some((t, at)) if t == term => at,
            _ => {
                let at = tokio::time::Instant::now();
                leading_since = Some((term, at));
                at
            }
        };
        rounds += 1;
        let rng = Rng::seeded(now_ms() ^ rounds.rotate_left(32));
        if let Err(e) = round(&mgr, term, since, rng).await {
            tracing::debug!(error = %e, "scheduling round failed; retrying next tick");
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

/// A Run order to send: (instance, attempt, fence).
type Order = (InstanceRef, u32, Fence);

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
                event: super::service::timed_out(t),
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
            runnable.push(super::service::demand(
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

/// Queue slots the live workers offer in all.
fn offered_slots(workers: &HashMap<String, WorkerView>) -> usize {
    workers
        .values()
        .filter(|w| matches!(w.state, MemberState::Alive | MemberState::Suspect))
        .map(|w| w.cores as usize * SLOTS_PER_CORE as usize)
        .sum()
}

/// One tick on a node: decide, commit each decision, then act on what committed.
async fn round(
    mgr: &Arc<JobsManager>,
    term: u64,
    since: tokio::time::Instant,
    rng: Rng,
) -> Result<(), tonic::Status> {
    let started = tokio::time::Instant::now();
    let now = now_ms();
    let workers = mgr.workers();
    let grace = since.elapsed() > UNKNOWN_WORKER_GRACE;
    let d = {
        let depths = mgr.depths.lock().unwrap_or_else(|p| p.into_inner());
        mgr.replica.group.read(|s| {
            decide(
                s,
                RoundInputs {
                    workers: &workers,
                    now,
                    unknown_grace_passed: grace,
                    term,
                    rng,
                    default_strategy: mgr.default_strategy,
                    depths: &depths,
                },
            )
        })
    };
    for cmd in d.lost {
        if let JobCommand::WorkerLost { worker, reason, .. } = &cmd {
            tracing::warn!(%worker, %reason, "worker lost; retrying its instances elsewhere");
        }
        mgr.write(cmd).await?;
    }
    for cmd in d.expired {
        let applied = mgr
            .replica
            .write(shoal_state::Request {
                client: None,
                command: shoal_state::Command::Jobs(cmd),
            })
            .await
            .map_err(crate::replicated::group_status)?;
        if let shoal_state::Response::Jobs(Ok(JobResponse::Stopped { stopped })) = applied.response
        {
            mgr.send_stops(stopped, Fence::new(applied.term, applied.index.0));
        }
    }
    for (cmd, r, worker) in d.timeouts {
        mgr.write(cmd).await?;
        mgr.send_stops(vec![(r, worker)], Fence::new(term, 0));
    }
    let mut orders: Vec<(String, Order)> = Vec::new();
    let decided = tokio::time::Instant::now();
    if let Some(cmd) = d.schedule
        && let JobResponse::Scheduled { places, fence } = mgr.write_here(cmd).await?
    {
        tracing::debug!(
            placed = places.len(),
            decide_us = decided.duration_since(started).as_micros() as u64,
            commit_us = decided.elapsed().as_micros() as u64,
            "scheduling round"
        );
        orders.extend(
            places
                .into_iter()
                .map(|p| (p.worker, (p.instance, p.attempt, fence))),
        );
    }
    orders.extend(
        d.resend
            .into_iter()
            .map(|(r, attempt, worker, fence)| (worker, (r, attempt, fence))),
    );
    dispatch_all(mgr, orders);
    Ok(())
}

/// Sends what an entry placed: one message per worker.
pub(super) fn dispatch_places(mgr: &Arc<JobsManager>, places: Vec<Place>, fence: Fence) {
    dispatch_all(
        mgr,
        places
            .into_iter()
            .map(|p| (p.worker, (p.instance, p.attempt, fence))),
    );
}

/// Sends orders, one message per worker.
fn dispatch_all(mgr: &Arc<JobsManager>, orders: impl IntoIterator<Item = (String, Order)>) {
    let mut by_worker: BTreeMap<String, Vec<Order>> = BTreeMap::new();
    for (worker, order) in orders {
        by_worker.entry(worker).or_default().push(order);
    }
    for (worker, orders) in by_worker {
        dispatch(mgr, worker, orders);
    }
}

/// Sends one worker its Run orders of this round as one message, in the background
/// (an attempt already being sent is not sent again meanwhile); if the worker cannot
/// be reached after a few tries, those attempts count as failed there.
fn dispatch(mgr: &Arc<JobsManager>, worker: String, orders: Vec<Order>) {
    let orders: Vec<Order> = {
        let mut sending = mgr.sending.lock().unwrap_or_else(|p| p.into_inner());
        orders
            .into_iter()
            .filter(|(r, attempt, _)| sending.insert((r.clone(), *attempt)))
            .collect()
    };
    if orders.is_empty() {
        return;
    }
    let task = mgr.clone();
    mgr.tasks.spawn("run orders", async move {
        let mgr = task;
        let batch = mgr.replica.group.read(|s| {
            let orders = orders
                .iter()
                .filter_map(|(r, attempt, fence)| {
                    let job = s.jobs.get(&r.job)?;
                    let wf = job.spec.workflows.get(r.workflow as usize)?;
                    Some(RunOrder {
                        fence: *fence,
                        instance: r.clone(),
                        attempt: *attempt,
                        work: wf.work.clone(),
                        cores: wf.cores,
                        timeout_ms: wf.timeout_s.map(|t| t * 1000),
                    })
                })
                .collect();
            RunBatch { orders }
        });
        let mut last_error = String::from("worker not in gossip");
        if !batch.orders.is_empty() {
            for i in 0..RUN_TRIES {
                let Some(addr) = mgr.workers().get(&worker).map(|w| w.addr.clone()) else {
                    break;
                };
                let sent = tokio::time::Instant::now();
                tracing::trace!(%worker, orders = batch.orders.len(), "sending run orders");
                match mgr.send_run(&addr, &batch).await {
                    Ok(replies) => {
                        tracing::trace!(%worker, rtt_us = sent.elapsed().as_micros() as u64, "run orders taken");
                        for (o, reply) in batch.orders.iter().zip(&replies) {
                            if let OrderReply::StaleFence { seen_term } = reply {
                                // A newer leader exists; it owns this instance now.
                                tracing::info!(instance = %o.instance, seen_term, "worker follows a newer leader");
                            }
                        }
                        last_error.clear();
                        break;
                    }
                    Err(e) => last_error = e,
                }
                tokio::time::sleep(Duration::from_millis(200 * (u64::from(i) + 1))).await;
            }
        } else {
            last_error.clear();
        }
        if !last_error.is_empty() && mgr.is_leader().is_some() {
            tracing::warn!(%worker, instances = batch.orders.len(), error = %last_error, "dispatch failed; the attempts count as failed there");
            let cmd = JobCommand::WorkerLost {
                worker: worker.clone(),
                only: Some(batch.orders.iter().map(|o| o.instance.clone()).collect()),
                reason: format!("dispatch to {worker} failed: {last_error}"),
                now_ms: now_ms(),
            };
            if let Err(e) = mgr.write(cmd).await {
                tracing::debug!(error = %e, "recording a failed dispatch");
            }
            mgr.wake.notify_one();
        }
        let mut sending = mgr.sending.lock().unwrap_or_else(|p| p.into_inner());
        for (r, attempt, _) in &orders {
            sending.remove(&(r.clone(), *attempt));
        }
    });
}

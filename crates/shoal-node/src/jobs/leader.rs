//! The manager leader's scheduling loop. Every tick (and whenever a submission, a
//! result or a membership change wakes it) the leader, and only the leader:
//!
//! 1. records workers that gossip declared failed or gone as lost (their instances are
//!    retried elsewhere or fail);
//! 2. times out attempts and jobs past their deadlines;
//! 3. runs one scheduling round over the ledger's runnable instances and the workers'
//!    free cores, commits the placements as one entry, then sends each placed worker
//!    its Run order fenced by that entry's (term, index);
//! 4. re-sends Run orders that were placed but never confirmed (a leader change or a
//!    lost message in between; a worker ignores a Run it already runs).
//!
//! Everything it acts on is read from the replicated ledger, so a new leader simply
//! continues: nothing lives only in the old leader's memory.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use shoal_sched::{Demand, InstanceKey, Rng, Scheduler, Strategy};
use shoal_state::{
    JobCommand, JobResponse,
    jobs::{InstanceRef, Place, RunState},
};
use shoal_types::MemberState;

use super::{
    OrderReply, RunOrder, now_ms,
    service::{JobsManager, WorkerView},
};

/// Scheduling tick when nothing wakes the loop earlier.
pub const TICK: Duration = Duration::from_millis(100);
/// Queued instances a round considers, per core offered (and at least RUNNABLE_MIN).
const RUNNABLE_PER_CORE: usize = 8;
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
    attempt: u32,
    worker: String,
    fence: (u64, u64),
    state: RunState,
    placed_ms: u64,
    cores: u32,
    timeout_s: Option<u64>,
}

fn plan(s: &shoal_state::State, now: u64, default_strategy: Strategy, limit: usize) -> Plan {
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
            ));
        }
        for (r, attempt, worker, fence) in job.active() {
            let inst = &job.workflows[r.workflow as usize].instances[r.index as usize];
            let wf = &job.spec.workflows[r.workflow as usize];
            p.active.push(Active {
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

/// Runs the loop for as long as the manager runs.
pub async fn run(mgr: Arc<JobsManager>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leading_since: Option<(u64, tokio::time::Instant)> = None;
    let mut rounds: u64 = 0;
    let mut seen_applied = 0;
    loop {
        // A round when anything new is applied here (a submission or a report through
        // any manager), when woken, or every tick; rounds at most every ROUND_GAP, so
        // a burst of entries makes one round, not one each.
        let group = mgr.replica.group.clone();
        tokio::select! {
            _ = tick.tick() => {}
            () = mgr.wake.notified() => {}
            _ = group.await_applied(seen_applied + 1, TICK) => {}
        }
        seen_applied = mgr.replica.group.applied_index();
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
    pub resend: Vec<(InstanceRef, u32, String, (u64, u64))>,
}

/// Decides one tick. `unknown_grace_passed`: the leader has led long enough that a
/// worker gossip has never shown it counts as gone.
pub fn decide(
    s: &shoal_state::State,
    workers: &HashMap<String, WorkerView>,
    now: u64,
    unknown_grace_passed: bool,
    term: u64,
    rng: Rng,
    default_strategy: Strategy,
) -> Decisions {
    // A round places at most as many instances as there are free cores; looking at a
    // few times that many queued instances keeps later ones that fit (constraints)
    // moving without planning all 100,000 of a big job every round.
    let offered: u64 = workers
        .values()
        .filter(|w| matches!(w.state, MemberState::Alive | MemberState::Suspect))
        .map(|w| u64::from(w.cores))
        .sum();
    let limit = (offered as usize)
        .saturating_mul(RUNNABLE_PER_CORE)
        .max(RUNNABLE_MIN);
    let p = plan(s, now, default_strategy, limit);
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
    let mut sched = Scheduler::new(rng);
    for (id, w) in workers {
        if matches!(w.state, MemberState::Alive | MemberState::Suspect) {
            sched.upsert_worker(id, w.cores, w.tags.clone(), w.accepting);
        }
    }
    for a in &p.active {
        sched.restore(&shoal_sched::Placement {
            key: key(&a.r, a.attempt),
            worker: a.worker.clone(),
            cores: a.cores,
        });
    }
    for demand in p.runnable {
        let k = demand.key.clone();
        if let Err(e) = sched.enqueue(demand) {
            tracing::debug!(instance = ?k, error = %e, "not queued");
        }
    }
    let places: Vec<Place> = sched
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
        .collect();
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
            d.resend
                .push((a.r.clone(), a.attempt, a.worker.clone(), a.fence));
        }
    }
    d
}

/// One tick on a node: decide, commit each decision, then act on what committed.
async fn round(
    mgr: &Arc<JobsManager>,
    term: u64,
    since: tokio::time::Instant,
    rng: Rng,
) -> Result<(), tonic::Status> {
    let now = now_ms();
    let workers = mgr.workers();
    let grace = since.elapsed() > UNKNOWN_WORKER_GRACE;
    let d = mgr
        .replica
        .group
        .read(|s| decide(s, &workers, now, grace, term, rng, mgr.default_strategy));
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
            .map_err(crate::kv::group_status)?;
        if let shoal_state::Response::Jobs(Ok(JobResponse::Stopped { stopped })) = applied.response
        {
            mgr.send_stops(stopped, (applied.term, applied.index.0));
        }
    }
    for (cmd, r, worker) in d.timeouts {
        mgr.write(cmd).await?;
        mgr.send_stops(vec![(r, worker)], (term, 0));
    }
    if let Some(cmd) = d.schedule
        && let JobResponse::Scheduled { places, fence } = mgr.write(cmd).await?
    {
        for place in places {
            dispatch(mgr, place.instance, place.attempt, place.worker, fence);
        }
    }
    for (r, attempt, worker, fence) in d.resend {
        dispatch(mgr, r, attempt, worker, fence);
    }
    Ok(())
}

/// Sends a Run order in the background (once at a time per attempt); if the worker
/// cannot be reached after a few tries, the attempt counts as failed there.
fn dispatch(
    mgr: &Arc<JobsManager>,
    r: InstanceRef,
    attempt: u32,
    worker: String,
    fence: (u64, u64),
) {
    let k = (r.clone(), attempt);
    if !mgr
        .sending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(k.clone())
    {
        return;
    }
    let mgr = mgr.clone();
    tokio::spawn(async move {
        let order = mgr.replica.group.read(|s| {
            let job = s.jobs.get(&r.job)?;
            let wf = job.spec.workflows.get(r.workflow as usize)?;
            Some(RunOrder {
                fence,
                instance: r.clone(),
                attempt,
                work: wf.work.clone(),
                cores: wf.cores,
                timeout_ms: wf.timeout_s.map(|t| t * 1000),
            })
        });
        let mut last_error = String::from("worker not in gossip");
        if let Some(order) = order {
            for i in 0..RUN_TRIES {
                let Some(addr) = mgr.workers().get(&worker).map(|w| w.addr.clone()) else {
                    break;
                };
                match mgr.send_run(&addr, &order).await {
                    Ok(OrderReply::Accepted) => {
                        last_error.clear();
                        break;
                    }
                    Ok(OrderReply::StaleFence { seen_term }) => {
                        // A newer leader exists; it owns this instance now.
                        tracing::info!(instance = %r, seen_term, "worker follows a newer leader");
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
            tracing::warn!(instance = %r, %worker, error = %last_error, "dispatch failed; the attempt counts as failed there");
            let cmd = JobCommand::WorkerLost {
                worker: worker.clone(),
                only: Some(vec![r.clone()]),
                reason: format!("dispatch to {worker} failed: {last_error}"),
                now_ms: now_ms(),
            };
            if let Err(e) = mgr.write(cmd).await {
                tracing::debug!(error = %e, "recording a failed dispatch");
            }
            mgr.wake.notify_one();
        }
        mgr.sending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&k);
    });
}

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

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use shoal_sched::Rng;

use futures_util::StreamExt as _;
use shoal_membership::EventKind;
use shoal_state::{
    JobCommand, JobResponse,
    jobs::{InstanceRef, Place},
};
use shoal_types::Fence;

use super::{
    OrderReply, RunBatch, RunOrder,
    decide::{RoundInputs, decide},
    manager::JobsManager,
    now_ms,
};

/// Scheduling tick when nothing wakes the loop earlier.
pub const TICK: Duration = Duration::from_millis(100);
/// Rounds are at least this far apart (what arrives meanwhile joins the next round).
const ROUND_GAP: Duration = Duration::from_millis(1);
/// A worker gossip has never shown to this leader is lost after this long.
const UNKNOWN_WORKER_GRACE: Duration = Duration::from_secs(10);
/// Run orders: tries per placement before the attempt counts as failed on that worker.
const RUN_TRIES: u32 = 3;

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

/// A Run order to send: (instance, attempt, fence).
type Order = (InstanceRef, u32, Fence);

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
                        let mut busy = Vec::new();
                        for (o, reply) in batch.orders.iter().zip(&replies) {
                            match reply {
                                // A newer leader exists; it owns this instance now.
                                OrderReply::StaleFence { seen_term } => {
                                    tracing::info!(instance = %o.instance, seen_term, "worker follows a newer leader");
                                }
                                OrderReply::Busy { held } => {
                                    tracing::warn!(instance = %o.instance, held, %worker, "worker holds all it takes");
                                    busy.push(o.instance.clone());
                                }
                                OrderReply::Accepted => {}
                            }
                        }
                        if !busy.is_empty() {
                            // Nothing started there: those attempts count as failed and
                            // are placed again.
                            let cmd = JobCommand::WorkerLost {
                                worker: worker.clone(),
                                only: Some(busy),
                                reason: format!("{worker} is full: it holds all the attempts it takes"),
                                now_ms: now_ms(),
                            };
                            if let Err(e) = mgr.write(cmd).await {
                                tracing::debug!(error = %e, "recording a refused dispatch");
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

//! The worker's side of jobs: the `Worker` gRPC service (orders from the manager
//! leader), one task per attempt, reports to the managers, and a heartbeat that tells
//! the leader what this worker runs.
//!
//! Attempts wait in order for cores (a semaphore of this worker's cores): the leader
//! may hand out short work several per core so nothing idles a round trip between
//! instances; at most `cores` run at once. Reports go through one reporter task that
//! sends whatever queued up as one batch, one batch at a time, so a burst of results
//! becomes one call and one Raft entry.
//!
//! Orders are fenced: a worker remembers the highest Raft term it has obeyed and
//! refuses orders from an older one (a deposed leader that has not noticed yet). A Run
//! for an attempt already running is accepted and changes nothing, so a leader may
//! re-send orders it is unsure about. An attempt leaves the worker's books only once
//! its result is recorded (or refused as stale), so the heartbeat never hides an
//! attempt whose result could still be lost.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use shoal_membership::MembershipHandle;
use shoal_proto::v1::{
    InternalMessage,
    worker_reports_client::WorkerReportsClient,
    worker_server::{Worker, WorkerServer},
};
use shoal_state::jobs::{Event, InstanceRef, Outcome};
use shoal_types::{Fence, FenceGuard, backoff::capped_doubling};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tonic::{Request, Response, Status, transport::Channel};

use super::{
    HeartbeatMsg, HeartbeatReply, OrderReply, ReportBatch, ReportReply, RunBatch, RunOrder,
    StopOrder, Wire, WorkerReport,
    exec::{self, ProgressFn, Registry},
};
use crate::tasks::Tasks;

/// How often the worker tells the leader what it runs.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// An attempt still running after this long is reported started.
pub const STARTED_AFTER: Duration = Duration::from_millis(50);
/// At most one progress report per attempt this often.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How long a finished attempt's result is offered to the managers before the worker
/// gives up on it (the leader then sees the attempt missing and retries it).
const RESULT_PATIENCE: Duration = Duration::from_secs(300);
/// Bound on one call to a manager.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Most reports in one batch, and roughly most bytes (output tails dominate).
const REPORT_BATCH_MAX: usize = 1024;
/// Attempts a worker holds at most (running, or waiting for its cores): beyond it an
/// order is answered `Busy` and nothing starts. The managers place by free cores, so
/// only a confused or forged sender gets here.
fn attempts_held_max(cores: u32) -> usize {
    1024 + 4 * cores as usize
}
/// Reports waiting for the reporter at most. Beyond it, an attempt's start or result
/// waits for room (backpressure), and a progress report is dropped (a later one says
/// more).
const REPORTS_QUEUED_MAX: usize = 4096;
const REPORT_BATCH_BYTES: usize = 1024 * 1024;

type Key = (InstanceRef, u32);

/// An attempt on this worker: how to stop it, the cores it needs, and where it is.
struct Running {
    stop: Arc<watch::Sender<bool>>,
    cores: u32,
    phase: Phase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for its cores.
    Waiting,
    /// Holding its cores.
    Running,
    /// Ended; its result is on its way to the managers.
    Reporting,
}

/// What a worker runs: attempts executing, attempts waiting for cores, the cores the
/// executing ones hold, the cores it offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    pub running: usize,
    pub waiting: usize,
    pub used_cores: u32,
    pub cores: u32,
}

/// A report on its way to the managers.
struct Pending {
    report: WorkerReport,
    /// Keep offering it until recorded or refused (results), or send once (the rest).
    persist: bool,
    since: tokio::time::Instant,
    reply: oneshot::Sender<Option<ReportReply>>,
}

impl Pending {
    /// Rough encoded size.
    fn bytes(&self) -> usize {
        let text = match &self.report.event {
            Event::Finished {
                error,
                stdout_tail,
                stderr_tail,
                ..
            } => stdout_tail.len() + stderr_tail.len() + error.as_ref().map_or(0, String::len),
            _ => 0,
        };
        64 + self.report.instance.job.len() + text
    }
}

/// One worker's jobs runtime.
pub struct WorkerRuntime {
    me: String,
    dc: String,
    wire: Wire,
    /// `--no-exec`: orders to run `exec` workflows are refused.
    no_exec: bool,
    membership: MembershipHandle,
    registry: Registry,
    running: Mutex<HashMap<Key, Running>>,
    cores: u32,
    /// One permit per core; an attempt runs while it holds its cores' permits.
    free_cores: Arc<Semaphore>,
    /// The newest leader term obeyed (orders of one term may come in any order).
    fences: Mutex<TermGuard>,
    /// How long a term no manager has claimed in gossip is obeyed (see `unbacked`).
    unbacked_grace: Duration,
    channels: Mutex<HashMap<String, WorkerReportsClient<Channel>>>,
    reports: mpsc::Sender<Pending>,
    /// The node's tasks: the heartbeat, the reporter and every attempt run among them.
    tasks: Tasks,
}

impl std::fmt::Debug for WorkerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerRuntime")
            .field("me", &self.me)
            .finish()
    }
}

impl WorkerRuntime {
    /// Starts the runtime and its heartbeat.
    pub fn start(
        config: &shoal_types::NodeConfig,
        membership: MembershipHandle,
        registry: Registry,
        transport: shoal_security::Transport,
        tasks: &Tasks,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(REPORTS_QUEUED_MAX);
        let cores = config.cores;
        let mut registry = registry;
        // What a previous run of this worker left running (it was killed, or the
        // machine went down) is killed before anything new starts.
        match super::children::GroupRecords::open(&config.data_dir) {
            Ok(records) => {
                let killed = records.kill_leftovers();
                if killed > 0 {
                    tracing::warn!(killed, "killed process groups a previous run left");
                }
                registry.groups = Some(records);
            }
            Err(e) => tracing::warn!(error = %e, "cannot record exec process groups"),
        }
        let rt = Arc::new(Self {
            me: config.id.to_string(),
            dc: config.dc.clone(),
            wire: Wire {
                cluster_id: config.cluster_id.clone(),
                transport,
            },
            no_exec: config.no_exec,
            membership,
            registry,
            running: Mutex::default(),
            cores,
            free_cores: Arc::new(Semaphore::new(cores.max(1) as usize)),
            fences: Mutex::new(TermGuard {
                guard: FenceGuard::default(),
                adopted: tokio::time::Instant::now(),
            }),
            unbacked_grace: unbacked_grace(config.raft.election_max_ms),
            channels: Mutex::default(),
            reports: tx,
            tasks: tasks.clone(),
        });
        tasks.spawn("worker heartbeats", heartbeats(Arc::downgrade(&rt)));
        tasks.spawn("worker load", publish_load(Arc::downgrade(&rt)));
        tasks.spawn("worker reports", reporter(Arc::downgrade(&rt), rx));
        rt
    }

    pub fn load(&self) -> Load {
        let books = self.books();
        let count = |p: Phase| books.values().filter(|r| r.phase == p).count();
        Load {
            running: count(Phase::Running),
            waiting: count(Phase::Waiting),
            used_cores: books
                .values()
                .filter(|r| r.phase == Phase::Running)
                .map(|r| r.cores)
                .sum(),
            cores: self.cores,
        }
    }

    /// Attempts running now.
    pub fn running(&self) -> Vec<Key> {
        let mut v: Vec<Key> = self.books().keys().cloned().collect();
        v.sort();
        v
    }

    fn books(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_phase(&self, key: &Key, phase: Phase) {
        if let Some(r) = self.books().get_mut(key) {
            r.phase = phase;
        }
    }

    /// Admits an order's fence: refuses a term older than one already obeyed — unless
    /// that term was never claimed by any manager in gossip for the grace period (a
    /// forged or corrupt order must not wedge the worker for good).
    fn admit(&self, fence: Fence) -> Result<(), OrderReply> {
        let mut fences = self.fences.lock().unwrap_or_else(|p| p.into_inner());
        let before = fences.guard.seen();
        let stale = match fences.guard.admit_term(fence) {
            Ok(()) => {
                if fences.guard.seen() != before {
                    fences.adopted = tokio::time::Instant::now();
                }
                return Ok(());
            }
            Err(stale) => stale,
        };
        let claimed = crate::status::dc_leaders(&self.membership.snapshot())
            .get(&self.dc)
            .map(|(_, term)| *term);
        let age = fences.adopted.elapsed();
        if !unbacked(
            stale.seen.term,
            age,
            self.unbacked_grace,
            claimed,
            fence.term,
        ) {
            return Err(OrderReply::StaleFence {
                seen_term: stale.seen.term,
            });
        }
        let claimed = claimed.unwrap_or(0);
        tracing::warn!(
            seen_term = stale.seen.term,
            claimed_term = claimed,
            "obeyed term was never claimed by a manager; following the claimed leader's term"
        );
        fences.guard = FenceGuard::default();
        fences.adopted = tokio::time::Instant::now();
        fences
            .guard
            .admit_term(fence)
            .map_err(|stale| OrderReply::StaleFence {
                seen_term: stale.seen.term,
            })
    }

    pub fn run_order(self: &Arc<Self>, o: RunOrder) -> OrderReply {
        if let Err(stale) = self.admit(o.fence) {
            return stale;
        }
        let key = (o.instance.clone(), o.attempt);
        let rx = {
            let mut books = self.books();
            if books.contains_key(&key) {
                return OrderReply::Accepted;
            }
            if books.len() >= attempts_held_max(self.cores) {
                return OrderReply::Busy { held: books.len() };
            }
            let (tx, rx) = watch::channel(false);
            let running = Running {
                stop: Arc::new(tx),
                cores: o.cores,
                phase: Phase::Waiting,
            };
            books.insert(key.clone(), running);
            rx
        };
        tracing::debug!(instance = %o.instance, attempt = o.attempt, kind = o.work.kind(), "starting");
        self.tasks.spawn("attempt", self.clone().attempt(o, rx));
        OrderReply::Accepted
    }

    pub fn stop_order(&self, o: StopOrder) -> OrderReply {
        if let Err(stale) = self.admit(o.fence) {
            return stale;
        }
        self.stop(&(o.instance, o.attempt));
        OrderReply::Accepted
    }

    fn stop(&self, key: &Key) {
        if let Some(r) = self.books().get(key) {
            let _ = r.stop.send(true);
        }
    }

    async fn attempt(self: Arc<Self>, o: RunOrder, mut stop: watch::Receiver<bool>) {
        let key = (o.instance.clone(), o.attempt);
        if self.no_exec && matches!(o.work, shoal_state::jobs::Work::Exec { .. }) {
            // Managers do not place `exec` here (the worker does not advertise it); an
            // order that says otherwise is refused, never run.
            let ended = exec::Ended::failed("this worker runs with --no-exec: it runs no commands");
            self.finish(&key, ended, None).await;
            return;
        }
        // Wait in line for the cores (the scheduler never sends an instance needing
        // more cores than this worker has; clamp anyway so nothing waits forever).
        let want = o.cores.clamp(1, self.cores.max(1));
        let permit = tokio::select! {
            p = self.free_cores.clone().acquire_many_owned(want) => p.ok(),
            () = exec::stopped(&mut stop) => None,
        };
        let Some(permit) = permit else {
            // Stopped before it started: the result says so, like a stopped run.
            let ended = exec::Ended::stopped();
            self.finish(&key, ended, None).await;
            return;
        };
        self.set_phase(&key, Phase::Running);
        let progress = self.progress_fn(key.clone());
        let begun = tokio::time::Instant::now();
        let run = exec::run(&o.work, o.attempt, progress, stop, &self.registry);
        tokio::pin!(run);
        // `Started` is reported only for attempts still running after STARTED_AFTER: a
        // short one goes straight to its result (one Raft entry instead of two).
        let started = tokio::select! {
            biased;
            e = &mut run => Some(e),
            () = tokio::time::sleep(STARTED_AFTER) => None,
        };
        if started.is_none() {
            let reply = self.report(&key, Event::Started, false, None).await;
            if reply == Some(ReportReply::Stale) {
                // Replaced meanwhile: stop it.
                self.stop(&key);
            }
        }
        let mut ended = match (started, o.timeout_ms) {
            (Some(e), _) => e,
            (None, Some(ms)) => tokio::select! {
                e = &mut run => e,
                () = tokio::time::sleep_until(begun + Duration::from_millis(ms)) => {
                    self.stop(&key);
                    let mut e = run.await;
                    e.outcome = Outcome::TimedOut;
                    e.error = Some(format!("timed out after {} s", ms / 1000));
                    e
                }
            },
            (None, None) => run.await,
        };
        if ended.error.as_deref() == Some("stopped") {
            ended.error = Some("stopped: the job was cancelled or the attempt replaced".into());
        }
        let ran_us = begun.elapsed().as_micros() as u64;
        // The cores are free once it ran; the next attempt need not wait for this
        // one's report.
        drop(permit);
        self.set_phase(&key, Phase::Reporting);
        self.finish(&key, ended, Some(ran_us)).await;
    }

    /// Reports an attempt's result until it is recorded (or refused as stale), then
    /// takes the attempt off the books.
    async fn finish(&self, key: &Key, ended: exec::Ended, ran_us: Option<u64>) {
        tracing::debug!(instance = %key.0, attempt = key.1, outcome = ?ended.outcome, "attempt ended");
        let event = Event::Finished {
            outcome: ended.outcome,
            exit_code: ended.exit_code,
            error: ended.error,
            stdout_tail: ended.stdout_tail,
            stderr_tail: ended.stderr_tail,
        };
        if self.report(key, event, true, ran_us).await.is_none() {
            tracing::warn!(instance = %key.0, attempt = key.1, "gave up reporting a result; the leader will retry the instance");
        }
        self.books().remove(key);
    }

    /// Progress callback: at most one report per `PROGRESS_EVERY`, sent in the
    /// background (a lost progress report is replaced by the next).
    fn progress_fn(self: &Arc<Self>, key: Key) -> ProgressFn {
        let last: Mutex<Option<tokio::time::Instant>> = Mutex::new(None);
        let rt = Arc::downgrade(self);
        Arc::new(move |done, total| {
            let now = tokio::time::Instant::now();
            {
                let mut l = last.lock().unwrap_or_else(|p| p.into_inner());
                if l.is_some_and(|t| now.duration_since(t) < PROGRESS_EVERY) {
                    return;
                }
                *l = Some(now);
            }
            if let Some(rt) = rt.upgrade() {
                // Nobody waits for the answer: a lost one is replaced by the next.
                rt.queue_progress(&key, done, total);
            }
        })
    }

    /// The managers of this DC, the leader first.
    fn managers(&self) -> Vec<String> {
        crate::status::dc_managers(&self.membership.snapshot(), &self.dc)
    }

    fn client(&self, addr: &str) -> Result<WorkerReportsClient<Channel>, Status> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let c = WorkerReportsClient::new(self.wire.channel(addr)?);
        channels.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// A report for the reporter task, and where its answer arrives (None: nobody
    /// answered, or a result went unrecorded for `RESULT_PATIENCE`).
    fn pending(
        key: &Key,
        event: Event,
        persist: bool,
        ran_us: Option<u64>,
    ) -> (Pending, oneshot::Receiver<Option<ReportReply>>) {
        let (tx, rx) = oneshot::channel();
        let pending = Pending {
            report: WorkerReport {
                instance: key.0.clone(),
                attempt: key.1,
                event,
                ran_us,
            },
            persist,
            since: tokio::time::Instant::now(),
            reply: tx,
        };
        (pending, rx)
    }

    /// Queues a progress report unless the queue is full (then it is dropped: progress
    /// is advisory, and the next report carries newer numbers).
    fn queue_progress(&self, key: &Key, done: u64, total: u64) {
        let (pending, _answer) = Self::pending(key, Event::Progress { done, total }, false, None);
        if let Err(mpsc::error::TrySendError::Full(_)) = self.reports.try_send(pending) {
            tracing::debug!(instance = %key.0, "report queue full; progress dropped");
        }
    }

    /// Sends a report with the next batch and waits for its answer. `persist`: keep
    /// offering it (backing off) until one manager records it or refuses it as stale,
    /// for up to `RESULT_PATIENCE`; otherwise one try. None: nobody answered.
    async fn report(
        &self,
        key: &Key,
        event: Event,
        persist: bool,
        ran_us: Option<u64>,
    ) -> Option<ReportReply> {
        let (pending, answer) = Self::pending(key, event, persist, ran_us);
        // Waits for room in the queue; the reporter lives as long as this runtime, so
        // a failed send means shutdown.
        self.reports.send(pending).await.ok()?;
        answer.await.ok().flatten()
    }

    /// Offers one batch to the managers (the leader first); the answers in order, or
    /// None when nobody took it.
    async fn send_reports(&self, batch: &[Pending]) -> Option<Vec<ReportReply>> {
        let msg = ReportBatch {
            worker: self.me.clone(),
            reports: batch.iter().map(|p| p.report.clone()).collect(),
        };
        let m = self.wire.message(&msg).ok()?;
        for addr in self.managers() {
            let Ok(mut c) = self.client(&addr) else {
                continue;
            };
            let mut req = Request::new(m.clone());
            req.set_timeout(CALL_TIMEOUT);
            match c.report(req).await {
                Ok(r) => match self.wire.open::<Vec<ReportReply>>(r.get_ref()) {
                    Ok(replies) if replies.len() == batch.len() => return Some(replies),
                    Ok(replies) => tracing::debug!(
                        sent = batch.len(),
                        answered = replies.len(),
                        "report answers do not match the batch"
                    ),
                    Err(e) => tracing::debug!(error = %e, "bad report reply"),
                },
                Err(s) => tracing::debug!(manager = %addr, error = %s, "reports not taken"),
            }
        }
        None
    }

    async fn heartbeat(&self) {
        let msg = HeartbeatMsg {
            worker: self.me.clone(),
            running: self.running(),
        };
        let Some(leader) = self.managers().into_iter().next() else {
            return;
        };
        let (Ok(mut c), Ok(m)) = (self.client(&leader), self.wire.message(&msg)) else {
            return;
        };
        let mut req = Request::new(m);
        req.set_timeout(CALL_TIMEOUT);
        match c.heartbeat(req).await {
            Ok(r) => match self.wire.open::<HeartbeatReply>(r.get_ref()) {
                Ok(reply) => {
                    for key in &reply.stop {
                        tracing::info!(instance = %key.0, attempt = key.1, "stopping: no longer this worker's");
                        self.stop(key);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "bad heartbeat reply"),
            },
            Err(s) => tracing::debug!(manager = %leader, error = %s, "heartbeat not taken"),
        }
    }
}

/// Publishes the share of cores in use in gossip metadata (`load_permille`) when it
/// changes, at most twice a second, so every node's `shoal status` shows worker load.
async fn publish_load(rt: std::sync::Weak<WorkerRuntime>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut published = 0;
    loop {
        tick.tick().await;
        let Some(rt) = rt.upgrade() else { return };
        let l = rt.load();
        let load = (u64::from(l.used_cores) * 1000 / u64::from(l.cores.max(1))) as u32;
        if load != published {
            let membership = rt.membership.clone();
            drop(rt);
            if membership
                .update_meta(move |m| m.load_permille = load)
                .await
                .is_err()
            {
                return;
            }
            published = load;
        }
    }
}

/// Sends queued reports: whatever waits (up to a batch) goes as one call, one call at
/// a time. A batch nobody takes: one-shot reports are answered None, results stay
/// queued and go again after a pause (doubling to 1 s) until `RESULT_PATIENCE`.
async fn reporter(rt: std::sync::Weak<WorkerRuntime>, mut rx: mpsc::Receiver<Pending>) {
    let mut queued: Vec<Pending> = Vec::new();
    let mut pause = None;
    loop {
        if queued.is_empty() {
            match rx.recv().await {
                Some(p) => queued.push(p),
                None => return,
            }
        }
        while queued.len() < REPORT_BATCH_MAX {
            match rx.try_recv() {
                Ok(p) => queued.push(p),
                Err(_) => break,
            }
        }
        let mut bytes = 0;
        let take = queued
            .iter()
            .take_while(|p| {
                bytes += p.bytes();
                bytes <= REPORT_BATCH_BYTES
            })
            .count()
            .max(1);
        let batch: Vec<Pending> = queued.drain(..take).collect();
        let Some(rt_now) = rt.upgrade() else { return };
        let answers = rt_now.send_reports(&batch).await;
        drop(rt_now);
        match answers {
            Some(answers) => {
                pause = None;
                for (p, a) in batch.into_iter().zip(answers) {
                    let _ = p.reply.send(Some(a));
                }
            }
            None => {
                for p in batch {
                    if p.persist && p.since.elapsed() < RESULT_PATIENCE {
                        queued.push(p);
                    } else {
                        let _ = p.reply.send(None);
                    }
                }
                if !queued.is_empty() {
                    let p =
                        capped_doubling(pause, Duration::from_millis(50), Duration::from_secs(1));
                    pause = Some(p);
                    tokio::time::sleep(p).await;
                }
            }
        }
    }
}

/// The highest order term obeyed, and since when.
#[derive(Debug)]
struct TermGuard {
    guard: FenceGuard,
    adopted: tokio::time::Instant,
}

/// How long an obeyed term may go unclaimed in gossip: ten election windows (3 s at
/// `local`, 20 s at `lan`), far longer than gossip takes to spread a new leader's claim.
fn unbacked_grace(election_max_ms: u64) -> Duration {
    Duration::from_millis((10 * election_max_ms).max(2_000))
}

/// Whether an order of `order_term`, refused because `seen_term` was obeyed `age` ago,
/// should be taken after all: no manager of the DC has claimed `seen_term` (or any
/// later term) in gossip for the whole grace period, and the order is not older than
/// what the managers do claim. A real newer leader's claim reaches gossip long before
/// the grace runs out, so fencing against deposed leaders holds.
fn unbacked(
    seen_term: u64,
    age: Duration,
    grace: Duration,
    claimed: Option<u64>,
    order_term: u64,
) -> bool {
    let claimed = claimed.unwrap_or(0);
    seen_term > claimed && age >= grace && order_term >= claimed
}

async fn heartbeats(rt: std::sync::Weak<WorkerRuntime>) {
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(rt) = rt.upgrade() else { return };
        rt.heartbeat().await;
    }
}

/// The `Worker` gRPC service.
pub struct WorkerService {
    rt: Arc<WorkerRuntime>,
}

pub fn service(rt: Arc<WorkerRuntime>) -> WorkerServer<WorkerService> {
    WorkerServer::new(WorkerService { rt })
        .max_decoding_message_size(shoal_proto::GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(shoal_proto::GRPC_MESSAGE_BYTES_MAX)
}

#[tonic::async_trait]
impl Worker for WorkerService {
    async fn run(&self, r: Request<InternalMessage>) -> Result<Response<InternalMessage>, Status> {
        let batch: RunBatch = self.rt.wire.open(r.get_ref())?;
        let replies: Vec<OrderReply> = batch
            .orders
            .into_iter()
            .map(|o| self.rt.run_order(o))
            .collect();
        Ok(Response::new(self.rt.wire.message(&replies)?))
    }

    async fn stop(&self, r: Request<InternalMessage>) -> Result<Response<InternalMessage>, Status> {
        let order: StopOrder = self.rt.wire.open(r.get_ref())?;
        let reply = self.rt.stop_order(order);
        Ok(Response::new(self.rt.wire.message(&reply)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(3);

    /// A forged order with a huge term is obeyed at first, but once no manager has
    /// claimed that term for the grace period, the real leader's orders are taken
    /// again; a real newer leader (claimed in gossip) is never overruled, and a
    /// deposed leader's orders stay refused.
    #[test]
    fn an_unclaimed_term_stops_fencing_after_the_grace() {
        let forged = u64::MAX;
        assert!(
            !unbacked(forged, GRACE / 2, GRACE, Some(7), 7),
            "not before the grace"
        );
        assert!(
            unbacked(forged, GRACE, GRACE, Some(7), 7),
            "the claimed leader's order"
        );
        assert!(
            !unbacked(forged, GRACE * 10, GRACE, Some(7), 6),
            "a deposed leader's order"
        );
        assert!(
            !unbacked(8, GRACE * 10, GRACE, Some(8), 7),
            "term 8 is claimed: fenced"
        );
        assert!(
            !unbacked(8, GRACE * 10, GRACE, Some(9), 7),
            "a later claim backs it too"
        );
        assert!(
            unbacked(8, GRACE, GRACE, None, 1),
            "no claim at all: nothing backs it"
        );
        assert_eq!(unbacked_grace(300), Duration::from_secs(3));
        assert_eq!(unbacked_grace(100), Duration::from_secs(2));
    }
}

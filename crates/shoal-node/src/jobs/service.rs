//! The managers' side of jobs: the public `Jobs` service and the internal
//! `WorkerReports` service, over one [`JobsManager`] per manager.
//!
//! Every manager answers; writes (submit, cancel, reports) go through the Raft group
//! (a follower forwards them to the leader) and reads are linearizable (a read index
//! from the leader) unless they follow a job live (`Watch` reads this manager's applied
//! state as it advances).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use shoal_membership::MembershipHandle;
use shoal_proto::v1::{
    self as pb, InternalMessage,
    jobs_server::{Jobs, JobsServer},
    worker_client::WorkerClient,
    worker_reports_server::{WorkerReports, WorkerReportsServer},
};
use shoal_raft::group::Replica;
use shoal_sched::{Demand, InstanceKey, Scheduler, Strategy, Tags};
use shoal_state::{
    Command, JobCommand, JobError, JobResponse, Request as SmRequest, Response as SmResponse,
    jobs::{Event, InstanceRef, Job, JobSpec, Outcome, RunState, Work, kind_tag},
};
use shoal_types::{Fence, Lifecycle, MemberState, Role};
use tonic::{Request, Response, Status, transport::Channel};

use super::{
    HeartbeatMsg, HeartbeatReply, OrderReply, ReportBatch, ReportReply, RunBatch, StopOrder, Wire,
    leader::Depths, now_ms,
};
use crate::{replicated::group_status, tasks::Tasks};

/// How often `Watch` looks for changes when nothing is applied.
const WATCH_EVERY: Duration = Duration::from_millis(100);
/// `Watch` sends a running job's document at most this often (its end at once).
const WATCH_PROGRESS_EVERY: Duration = Duration::from_millis(50);
/// Bound on one order to a worker.
const ORDER_TIMEOUT: Duration = Duration::from_secs(2);

type Key = (InstanceRef, u32);

/// A worker as gossip shows it.
#[derive(Debug, Clone)]
pub struct WorkerView {
    pub addr: String,
    pub cores: u32,
    pub tags: Tags,
    pub state: MemberState,
    pub accepting: bool,
}

/// One manager's jobs machinery (shared by the services and the leader loop).
pub struct JobsManager {
    pub(super) replica: Replica,
    pub(super) membership: MembershipHandle,
    pub(super) dc: String,
    pub(super) wire: Wire,
    pub(super) default_strategy: Strategy,
    /// Leader memory: per worker, running attempts missing from its heartbeats (count).
    pub(super) missing: Mutex<HashMap<String, HashMap<Key, u32>>>,
    /// Orders being sent now (not sent again meanwhile).
    pub(super) sending: Mutex<HashSet<Key>>,
    /// How long workflows' instances run (from the reports this manager takes).
    pub(super) depths: Mutex<Depths>,
    clients: Mutex<HashMap<String, WorkerClient<Channel>>>,
    pub(super) wake: tokio::sync::Notify,
    /// The node's tasks: orders in flight and job watches run among them.
    pub(super) tasks: Tasks,
}

impl std::fmt::Debug for JobsManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobsManager").field("dc", &self.dc).finish()
    }
}

fn jobs_status(e: JobError) -> Status {
    match e {
        JobError::Invalid { .. } | JobError::IdTaken(_) => Status::invalid_argument(e.to_string()),
        JobError::NoSuchJob(_) => Status::not_found(e.to_string()),
    }
}

fn job_response(r: SmResponse) -> Result<JobResponse, Status> {
    match r {
        SmResponse::Jobs(r) => r.map_err(jobs_status),
        other => Err(Status::internal(format!("unexpected response {other}"))),
    }
}

impl JobsManager {
    pub fn new(
        replica: Replica,
        membership: MembershipHandle,
        dc: String,
        cluster_id: String,
        tasks: Tasks,
    ) -> Arc<Self> {
        Arc::new(Self {
            replica,
            membership,
            dc,
            wire: Wire { cluster_id },
            default_strategy: Strategy::LeastConnections,
            missing: Mutex::default(),
            sending: Mutex::default(),
            depths: Mutex::default(),
            clients: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            tasks,
        })
    }

    pub(super) async fn write(&self, cmd: JobCommand) -> Result<JobResponse, Status> {
        let applied = self
            .replica
            .write(SmRequest {
                client: None,
                command: Command::Jobs(cmd),
            })
            .await
            .map_err(group_status)?;
        job_response(applied.response)
    }

    /// Where a new job's first instances go (see `leader::first_placements`).
    fn first_placements(&self, id: &str, spec: &JobSpec, term: u64) -> shoal_state::jobs::Placing {
        let workers = self.workers();
        let now = now_ms();
        let depths = self.depths.lock().unwrap_or_else(|p| p.into_inner());
        let places = self.replica.group.read(|s| {
            super::leader::first_placements(
                s,
                id,
                spec,
                super::leader::RoundInputs {
                    workers: &workers,
                    now,
                    unknown_grace_passed: false,
                    term,
                    rng: shoal_sched::Rng::seeded(now),
                    default_strategy: self.default_strategy,
                    depths: &depths,
                },
            )
        });
        shoal_state::jobs::Placing { term, places }
    }

    /// Commits a leader decision here, never forwarded: if this manager is no longer
    /// the leader, the decision is void (the next leader decides again).
    pub(super) async fn write_here(&self, cmd: JobCommand) -> Result<JobResponse, Status> {
        let applied = self
            .replica
            .group
            .propose(SmRequest {
                client: None,
                command: Command::Jobs(cmd),
            })
            .await
            .map_err(group_status)?;
        job_response(applied.response)
    }

    pub(super) fn is_leader(&self) -> Option<u64> {
        let (id, term) = self.replica.group.leader()?;
        (id == self.replica.group.id()).then_some(term)
    }

    /// Workers of this DC by id.
    pub fn workers(&self) -> HashMap<String, WorkerView> {
        let snap = self.membership.snapshot();
        snap.members
            .iter()
            .filter(|m| m.role == Some(Role::Worker) && m.dc.as_deref() == Some(self.dc.as_str()))
            .map(|m| {
                let accepting = m.state == MemberState::Alive
                    && !matches!(m.lifecycle, Some(Lifecycle::Draining | Lifecycle::Leaving));
                (
                    m.id.clone(),
                    WorkerView {
                        addr: m.addr.clone(),
                        cores: m.cores,
                        tags: m.tags.clone(),
                        state: m.state,
                        accepting,
                    },
                )
            })
            .collect()
    }

    /// Refuses what no live worker could ever run: unknown custom kinds, constraints
    /// nobody matches, more cores than the largest matching worker has.
    fn check_placeable(&self, spec: &JobSpec, source: &str) -> Result<(), Status> {
        let workers: Vec<WorkerView> = self
            .workers()
            .into_values()
            .filter(|w| matches!(w.state, MemberState::Alive | MemberState::Suspect))
            .collect();
        if workers.is_empty() {
            return Err(Status::failed_precondition(format!(
                "{source}: no live workers in {}: start one (shoal node --role worker) and submit again",
                self.dc
            )));
        }
        let mut sched = Scheduler::new(shoal_sched::Rng::seeded(1));
        for (i, w) in workers.iter().enumerate() {
            sched.upsert_worker(&format!("w{i}"), w.cores, w.tags.clone(), true);
        }
        for (i, wf) in spec.workflows.iter().enumerate() {
            let at = format!("{source}: workflows[{i}] ({})", wf.name);
            if let Work::Custom { kind, .. } = &wf.work
                && !workers.iter().any(|w| w.tags.contains_key(&kind_tag(kind)))
            {
                return Err(Status::invalid_argument(format!(
                    "{at}.kind: `{kind}` is not a built-in kind ({}) and no live worker registers it",
                    shoal_state::jobs::BUILTIN_KINDS.join(", ")
                )));
            }
            let key = InstanceKey {
                job: String::new(),
                workflow: i.to_string(),
                index: 0,
                attempt: 1,
            };
            let demand = demand(spec, i, key, Default::default(), self.default_strategy, 1);
            sched
                .check(&demand)
                .map_err(|e| Status::invalid_argument(format!("{at}.{e}")))?;
        }
        Ok(())
    }

    fn client(&self, addr: &str) -> Result<WorkerClient<Channel>, Status> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(addr) {
            return Ok(c.clone());
        }
        let channel = Channel::from_shared(format!("http://{addr}"))
            .map_err(|e| Status::internal(format!("worker address `{addr}`: {e}")))?
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy();
        let c = WorkerClient::new(channel)
            .max_decoding_message_size(shoal_proto::GRPC_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(shoal_proto::GRPC_MESSAGE_BYTES_MAX);
        clients.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// Sends a worker its Run orders; the answer per order, or why the worker did not
    /// take them.
    pub(super) async fn send_run(
        &self,
        addr: &str,
        batch: &RunBatch,
    ) -> Result<Vec<OrderReply>, String> {
        let mut c = self.client(addr).map_err(|s| s.message().to_string())?;
        let mut req = Request::new(
            self.wire
                .message(batch)
                .map_err(|s| s.message().to_string())?,
        );
        req.set_timeout(ORDER_TIMEOUT);
        let r = c.run(req).await.map_err(|s| s.message().to_string())?;
        let replies: Vec<OrderReply> = self
            .wire
            .open(r.get_ref())
            .map_err(|s| s.message().to_string())?;
        if replies.len() != batch.orders.len() {
            return Err(format!(
                "{} answers to {} orders",
                replies.len(),
                batch.orders.len()
            ));
        }
        Ok(replies)
    }

    /// Tells workers to stop attempts (best effort: a worker that misses it hears it in
    /// its next heartbeat's answer).
    pub(super) fn send_stops(self: &Arc<Self>, stopped: Vec<(InstanceRef, String)>, fence: Fence) {
        if stopped.is_empty() {
            return;
        }
        let workers = self.workers();
        let attempts: Vec<(InstanceRef, String, u32)> = self.replica.group.read(|s| {
            stopped
                .into_iter()
                .filter_map(|(r, w)| {
                    let a = s.jobs.instance(&r)?.attempts;
                    Some((r, w, a))
                })
                .collect()
        });
        for (r, w, attempt) in attempts {
            let Some(addr) = workers.get(&w).map(|v| v.addr.clone()) else {
                continue;
            };
            let this = self.clone();
            self.tasks.spawn("stop order", async move {
                let order = StopOrder {
                    fence,
                    instance: r,
                    attempt,
                };
                let Ok(mut c) = this.client(&addr) else {
                    return;
                };
                let Ok(m) = this.wire.message(&order) else {
                    return;
                };
                let mut req = Request::new(m);
                req.set_timeout(ORDER_TIMEOUT);
                if let Err(s) = c.stop(req).await {
                    tracing::debug!(worker = %addr, error = %s, "stop order not delivered");
                }
            });
        }
    }

    /// Attempts among `running` that this state knows are over or replaced.
    fn to_stop(&self, worker: &str, running: &[Key]) -> Vec<Key> {
        self.replica.group.read(|s| {
            running
                .iter()
                .filter(|(r, attempt)| {
                    s.jobs.instance(r).is_some_and(|i| {
                        // Only what this state knows better: a newer attempt, or this
                        // one ended or went elsewhere (a lagging replica stays silent).
                        i.attempts > *attempt
                            || (i.attempts == *attempt
                                && !(i.state.0.is_active() && i.worker.as_deref() == Some(worker)))
                    })
                })
                .cloned()
                .collect()
        })
    }

    /// Leader only: running attempts the worker no longer lists, twice in a row, are
    /// lost (it restarted, or the attempt died with its result).
    async fn reconcile(self: &Arc<Self>, worker: &str, running: &[Key]) {
        if self.is_leader().is_none() {
            return;
        }
        let now = now_ms();
        let listed: HashSet<&Key> = running.iter().collect();
        let expected: Vec<Key> = self.replica.group.read(|s| {
            s.jobs
                .unfinished()
                .flat_map(|j| {
                    j.active()
                        .into_iter()
                        .filter(|(r, _, w, _)| {
                            w == worker
                                && s.jobs.instance(r).is_some_and(|i| {
                                    i.state.0 == RunState::Running && i.placed_ms + 3_000 < now
                                })
                        })
                        .map(|(r, a, _, _)| (r, a))
                        .collect::<Vec<_>>()
                })
                .collect()
        });
        let lost: Vec<InstanceRef> = {
            let mut missing = self.missing.lock().unwrap_or_else(|p| p.into_inner());
            let counts = missing.entry(worker.to_string()).or_default();
            counts.retain(|k, _| expected.contains(k));
            let mut lost = Vec::new();
            for k in &expected {
                if listed.contains(k) {
                    counts.remove(k);
                } else {
                    let c = counts.entry(k.clone()).or_insert(0);
                    *c += 1;
                    if *c >= 2 {
                        lost.push(k.0.clone());
                    }
                }
            }
            lost
        };
        if lost.is_empty() {
            return;
        }
        tracing::warn!(
            worker,
            instances = lost.len(),
            "worker no longer runs instances it started; retrying them"
        );
        let cmd = JobCommand::WorkerLost {
            worker: worker.to_string(),
            only: Some(lost),
            reason: format!("worker {worker} no longer runs it (restarted?)"),
            now_ms: now,
        };
        if let Err(e) = self.write(cmd).await {
            tracing::debug!(error = %e, "recording lost attempts failed");
        }
        self.wake.notify_one();
    }
}

impl JobsManager {
    /// The `jobs` section of /v1/status on a manager: unfinished jobs, instances
    /// placed on workers (running, or waiting there for a core) and queued, and per
    /// worker what the ledger placed on it. The cores a worker actually uses are its
    /// own to say: its status and its gossip row (`used_cores`).
    pub fn status_section(&self) -> serde_json::Value {
        let workers = self.workers();
        let (unfinished, queued, mut used) = self.replica.group.read(|s| {
            let mut queued = 0usize;
            let mut used: std::collections::BTreeMap<String, (u32, u32)> = Default::default();
            let mut unfinished = 0usize;
            for j in s.jobs.unfinished() {
                unfinished += 1;
                for (w, run) in j.workflows.iter().enumerate() {
                    let cores = j.spec.workflows[w].cores;
                    for i in &run.instances {
                        if i.state.0 == RunState::Queued {
                            queued += 1;
                        } else if i.state.0.is_active()
                            && let Some(worker) = &i.worker
                        {
                            let e = used.entry(worker.clone()).or_default();
                            e.0 += cores;
                            e.1 += 1;
                        }
                    }
                }
            }
            (unfinished, queued, used)
        });
        let running: u32 = used.values().map(|u| u.1).sum();
        let mut rows: Vec<serde_json::Value> = workers
            .iter()
            .map(|(id, w)| {
                let (cores_placed, instances) = used.remove(id).unwrap_or_default();
                serde_json::json!({
                    "id": id,
                    "state": w.state.to_string(),
                    "cores": w.cores,
                    "placed": instances,
                    "placed_cores": cores_placed,
                })
            })
            .collect();
        rows.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        serde_json::json!({
            "jobs_unfinished": unfinished,
            "instances_running": running,
            "instances_queued": queued,
            "workers": rows,
        })
    }
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
    if let Work::Custom { kind, .. } = &wf.work {
        constraints.insert(kind_tag(kind), "yes".into());
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

/// The job as the API shows it.
pub fn job_doc(j: &Job) -> pb::Job {
    pb::Job {
        id: j.id.clone(),
        name: j.spec.name.clone(),
        state: j.state.to_string(),
        reason: j.reason.clone().unwrap_or_default(),
        submitted_unix_ms: j.submitted_ms,
        finished_unix_ms: j.finished_ms.unwrap_or(0),
        workflows: j
            .workflows
            .iter()
            .zip(&j.spec.workflows)
            .map(|(run, spec)| pb::Workflow {
                name: spec.name.clone(),
                kind: spec.work.kind().to_string(),
                state: run.state.to_string(),
                instances: run
                    .instances
                    .iter()
                    .enumerate()
                    .map(|(i, inst)| pb::Instance {
                        index: i as u32,
                        state: inst.state.0.to_string(),
                        attempts: inst.attempts,
                        worker: inst.worker.clone().unwrap_or_default(),
                        exit_code: inst.exit_code,
                        error: inst.error.clone().unwrap_or_default(),
                        progress_done: inst.progress.map_or(0, |p| p.0),
                        progress_total: inst.progress.map_or(0, |p| p.1),
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn summary(j: &Job) -> pb::JobSummary {
    let all = j.workflows.iter().flat_map(|w| &w.instances);
    let count = |f: &dyn Fn(RunState) -> bool| all.clone().filter(|i| f(i.state.0)).count() as u32;
    pb::JobSummary {
        id: j.id.clone(),
        name: j.spec.name.clone(),
        state: j.state.to_string(),
        instances: all.clone().count() as u32,
        completed: count(&|s| s == RunState::Completed),
        running: count(&|s| s.is_active()),
        failed: count(&|s| matches!(s, RunState::Failed | RunState::TimedOut)),
        submitted_unix_ms: j.submitted_ms,
        finished_unix_ms: j.finished_ms.unwrap_or(0),
    }
}

/// The public `Jobs` service.
pub struct JobsService {
    mgr: Arc<JobsManager>,
}

pub fn jobs_service(mgr: Arc<JobsManager>) -> JobsServer<JobsService> {
    JobsServer::new(JobsService { mgr })
        .max_decoding_message_size(shoal_proto::GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(shoal_proto::GRPC_MESSAGE_BYTES_MAX)
}

impl JobsService {
    async fn linearized_job(&self, id: &str) -> Result<pb::Job, Status> {
        self.mgr.replica.linearize().await.map_err(group_status)?;
        self.mgr
            .replica
            .group
            .read(|s| s.jobs.get(id).map(job_doc))
            .ok_or_else(|| Status::not_found(format!("job {id}: no such job")))
    }
}

use super::JobStream;

#[tonic::async_trait]
impl Jobs for JobsService {
    async fn submit(
        &self,
        r: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        tracing::trace!("submit in");
        let r = r.into_inner();
        let super::Submission {
            spec,
            placement,
            source,
            id,
            ..
        } = super::Submission::admit(&r)?;
        let source = source.as_str();
        if !placement.datacenters.is_empty() && !placement.datacenters.contains(&self.mgr.dc) {
            return Err(Status::invalid_argument(format!(
                "{source}: datacenters: this manager serves {}; submit through a gate to run in {}",
                self.mgr.dc,
                placement.datacenters.join(", ")
            )));
        }
        let multi =
            placement.datacenter_count.is_some_and(|n| n > 1) || placement.datacenters.len() > 1;
        if multi && r.datacenter != self.mgr.dc {
            return Err(Status::invalid_argument(format!(
                "{source}: datacenters: a job across several datacenters is submitted through a gate (shoal submit --servers <gate>)"
            )));
        }
        self.mgr.check_placeable(&spec, source)?;
        tracing::trace!("submit checked");
        // The leader places what it can at once, in the Submit entry itself.
        let place = self
            .mgr
            .is_leader()
            .map(|term| self.mgr.first_placements(&id, &spec, term));
        let submit = |place| SmRequest {
            client: None,
            command: Command::Jobs(JobCommand::Submit {
                id: id.clone(),
                spec: spec.clone(),
                now_ms: now_ms(),
                place,
            }),
        };
        let applied = match place {
            // Placements are this leader's decision: proposed here or not at all.
            Some(place) => match self.mgr.replica.group.propose(submit(Some(place))).await {
                Err(shoal_raft::group::GroupError::NotLeader { .. }) => {
                    self.mgr.replica.write(submit(None)).await
                }
                other => other,
            },
            None => self.mgr.replica.write(submit(None)).await,
        }
        .map_err(group_status)?;
        let index = applied.index.0;
        tracing::debug!(job = %id, index, "submission committed");
        let created = match job_response(applied.response)? {
            JobResponse::Submitted {
                created, scheduled, ..
            } => {
                if let Some((places, fence)) = scheduled {
                    super::leader::dispatch_places(&self.mgr, places, fence);
                }
                created
            }
            other => return Err(Status::internal(format!("unexpected {other:?}"))),
        };
        self.mgr.wake.notify_one();
        // This manager's state at or past the submission answers (no read index:
        // whatever was committed before the submission is in it too).
        let _ = self
            .mgr
            .replica
            .group
            .await_applied(index, Duration::from_secs(5))
            .await;
        let job = self
            .mgr
            .replica
            .group
            .read(|s| (s.last_applied.0 >= index).then(|| s.jobs.get(&id).map(job_doc)))
            .flatten();
        let job = match job {
            Some(job) => job,
            None => self.linearized_job(&id).await?,
        };
        tracing::trace!("submit answered");
        Ok(Response::new(pb::SubmitResponse {
            id,
            created,
            job: Some(job),
        }))
    }

    async fn get(&self, r: Request<pb::JobRequest>) -> Result<Response<pb::Job>, Status> {
        Ok(Response::new(self.linearized_job(&r.get_ref().id).await?))
    }

    async fn list(
        &self,
        _r: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        self.mgr.replica.linearize().await.map_err(group_status)?;
        let jobs = self
            .mgr
            .replica
            .group
            .read(|s| s.jobs.list().into_iter().map(summary).collect());
        Ok(Response::new(pb::ListJobsResponse { jobs }))
    }

    async fn cancel(&self, r: Request<pb::JobRequest>) -> Result<Response<pb::Job>, Status> {
        let id = r.into_inner().id;
        let cmd = JobCommand::Cancel {
            id: id.clone(),
            timed_out: false,
            reason: "cancelled by a user".into(),
            now_ms: now_ms(),
        };
        let applied = self
            .mgr
            .replica
            .write(SmRequest {
                client: None,
                command: Command::Jobs(cmd),
            })
            .await
            .map_err(group_status)?;
        let fence = Fence::new(applied.term, applied.index.0);
        if let JobResponse::Stopped { stopped } = job_response(applied.response)? {
            self.mgr.send_stops(stopped, fence);
        }
        Ok(Response::new(self.linearized_job(&id).await?))
    }

    type WatchStream = JobStream;

    async fn watch(&self, r: Request<pb::JobRequest>) -> Result<Response<JobStream>, Status> {
        let id = r.into_inner().id;
        let first = self.linearized_job(&id).await?;
        let mgr = self.mgr.clone();
        // The index the last look saw (read with the job, under one lock: an entry
        // applied between the look and the wait is not missed).
        let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let last_doc = Arc::new(Mutex::new(tokio::time::Instant::now()));
        Ok(Response::new(super::watch_stream(
            &self.mgr.tasks,
            first,
            move || {
                let (mgr, id, seen, last_doc) =
                    (mgr.clone(), id.clone(), seen.clone(), last_doc.clone());
                async move {
                    // Look again as soon as anything new is applied here (or every
                    // WATCH_EVERY): the end of a job is sent within a commit, not a polling
                    // period; changes before it at most every WATCH_PROGRESS_EVERY (a big
                    // job changes with every entry, and its document is large).
                    let mut wait = WATCH_EVERY;
                    loop {
                        let next = seen.load(std::sync::atomic::Ordering::Relaxed) + 1;
                        let _ = mgr.replica.group.await_applied(next, wait).await;
                        let since = last_doc.lock().unwrap_or_else(|p| p.into_inner()).elapsed();
                        let due = since >= WATCH_PROGRESS_EVERY;
                        let (job, at) = mgr.replica.group.read(|s| {
                            let job = s
                                .jobs
                                .get(&id)
                                .map(|j| (due || j.finished_ms.is_some()).then(|| job_doc(j)));
                            (job, s.last_applied.0)
                        });
                        seen.store(at, std::sync::atomic::Ordering::Relaxed);
                        match job {
                            Some(Some(job)) => {
                                *last_doc.lock().unwrap_or_else(|p| p.into_inner()) =
                                    tokio::time::Instant::now();
                                return Ok(Some(job));
                            }
                            // Held back: look again at the next entry or when due.
                            Some(None) => wait = WATCH_PROGRESS_EVERY.saturating_sub(since),
                            None => return Err(Status::not_found(format!("job {id}: forgotten"))),
                        }
                    }
                }
            },
        )))
    }

    async fn logs(
        &self,
        r: Request<pb::LogsRequest>,
    ) -> Result<Response<pb::LogsResponse>, Status> {
        let r = r.into_inner();
        self.mgr.replica.linearize().await.map_err(group_status)?;
        let outputs = self.mgr.replica.group.read(|s| {
            let job = s
                .jobs
                .get(&r.id)
                .ok_or_else(|| Status::not_found(format!("job {}: no such job", r.id)))?;
            if !r.workflow.is_empty() && !job.spec.workflows.iter().any(|w| w.name == r.workflow) {
                return Err(Status::invalid_argument(format!(
                    "workflow: `{}` is not a workflow of job {}",
                    r.workflow, r.id
                )));
            }
            let mut out = Vec::new();
            for (run, spec) in job.workflows.iter().zip(&job.spec.workflows) {
                if !r.workflow.is_empty() && spec.name != r.workflow {
                    continue;
                }
                for (i, inst) in run.instances.iter().enumerate() {
                    if r.instance.is_some_and(|want| want as usize != i) {
                        continue;
                    }
                    out.push(pb::InstanceOutput {
                        workflow: spec.name.clone(),
                        index: i as u32,
                        attempts: inst.attempts,
                        worker: inst.worker.clone().unwrap_or_default(),
                        stdout_tail: inst.stdout_tail.clone(),
                        stderr_tail: inst.stderr_tail.clone(),
                    });
                }
            }
            if let Some(want) = r.instance
                && out.is_empty()
            {
                return Err(Status::invalid_argument(format!(
                    "instance: {want} is beyond the workflow's instances"
                )));
            }
            Ok(out)
        })?;
        Ok(Response::new(pb::LogsResponse { outputs }))
    }
}

/// The internal `WorkerReports` service.
pub struct ReportsService {
    mgr: Arc<JobsManager>,
}

pub fn reports_service(mgr: Arc<JobsManager>) -> WorkerReportsServer<ReportsService> {
    WorkerReportsServer::new(ReportsService { mgr })
        .max_decoding_message_size(shoal_proto::GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(shoal_proto::GRPC_MESSAGE_BYTES_MAX)
}

#[tonic::async_trait]
impl WorkerReports for ReportsService {
    async fn report(
        &self,
        r: Request<InternalMessage>,
    ) -> Result<Response<InternalMessage>, Status> {
        let m: ReportBatch = self.mgr.wire.open(r.get_ref())?;
        shoal_state::jobs::check_name("worker", &m.worker).map_err(jobs_status)?;
        let finished = m
            .reports
            .iter()
            .any(|rep| matches!(rep.event, Event::Finished { .. }));
        // Run times, per kind of work, for the leader's queue depths.
        let ran: Vec<(u64, u64)> = self.mgr.replica.group.read(|s| {
            m.reports
                .iter()
                .filter_map(|rep| {
                    let us = rep.ran_us?;
                    let job = s.jobs.get(&rep.instance.job)?;
                    let wf = job.spec.workflows.get(rep.instance.workflow as usize)?;
                    Some((super::leader::work_key(wf), us))
                })
                .collect()
        });
        if !ran.is_empty() {
            let mut depths = self.mgr.depths.lock().unwrap_or_else(|p| p.into_inner());
            for (work, us) in ran {
                depths.record(work, us);
            }
        }
        let sent = m.reports.len();
        tracing::debug!(worker = %m.worker, reports = sent, "report batch");
        let took = tokio::time::Instant::now();
        let cmd = JobCommand::Reports {
            worker: m.worker,
            reports: m
                .reports
                .into_iter()
                .map(|rep| shoal_state::jobs::ReportItem {
                    instance: rep.instance,
                    attempt: rep.attempt,
                    event: rep.event,
                })
                .collect(),
            now_ms: now_ms(),
        };
        let replies: Vec<ReportReply> = match self.mgr.write(cmd).await? {
            JobResponse::ReportedMany { results } if results.len() == sent => results
                .into_iter()
                .map(|(applied, current)| {
                    if applied || current {
                        ReportReply::Recorded
                    } else {
                        ReportReply::Stale
                    }
                })
                .collect(),
            other => return Err(Status::internal(format!("unexpected {other:?}"))),
        };
        tracing::debug!(
            reports = sent,
            commit_us = took.elapsed().as_micros() as u64,
            "report batch committed"
        );
        if finished {
            // Slots freed: the next round may place queued work.
            self.mgr.wake.notify_one();
        }
        Ok(Response::new(self.mgr.wire.message(&replies)?))
    }

    async fn heartbeat(
        &self,
        r: Request<InternalMessage>,
    ) -> Result<Response<InternalMessage>, Status> {
        let m: HeartbeatMsg = self.mgr.wire.open(r.get_ref())?;
        let stop = self.mgr.to_stop(&m.worker, &m.running);
        self.mgr.reconcile(&m.worker, &m.running).await;
        Ok(Response::new(
            self.mgr.wire.message(&HeartbeatReply { stop })?,
        ))
    }
}

/// A finished report the leader records for an attempt it timed out itself.
pub(super) fn timed_out(after_s: u64) -> Event {
    Event::Finished {
        outcome: Outcome::TimedOut,
        exit_code: None,
        error: Some(format!("timed out after {after_s} s")),
        stdout_tail: String::new(),
        stderr_tail: String::new(),
    }
}

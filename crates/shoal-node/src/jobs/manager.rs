//! One manager's jobs machinery, shared by the gRPC services and the leader loop: the
//! replica, the workers gossip shows, the leader's memory (missing attempts, orders in
//! flight, run times), the clients of the workers, and the writes every path makes.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use shoal_membership::MembershipHandle;
use shoal_proto::v1::worker_client::WorkerClient;
use shoal_raft::group::Replica;
use shoal_sched::{InstanceKey, Scheduler, Strategy};
use shoal_state::{
    Command, JobCommand, JobError, JobResponse, Request as SmRequest, Response as SmResponse,
    jobs::{InstanceRef, JobSpec, RunState, Work, kind_tag},
};
use shoal_types::{Fence, Lifecycle, MemberState, Role};
use tonic::{Request, Status, transport::Channel};

use super::decide::{WorkerView, demand};
use super::{OrderReply, RunBatch, StopOrder, Wire, decide::Depths, now_ms};
use crate::{replicated::group_status, tasks::Tasks};

/// Bound on one order to a worker.
const ORDER_TIMEOUT: Duration = Duration::from_secs(2);

type Key = (InstanceRef, u32);

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

pub(super) fn jobs_status(e: JobError) -> Status {
    match e {
        JobError::Invalid { .. } | JobError::IdTaken(_) => Status::invalid_argument(e.to_string()),
        JobError::NoSuchJob(_) => Status::not_found(e.to_string()),
    }
}

pub(super) fn job_response(r: SmResponse) -> Result<JobResponse, Status> {
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
        transport: shoal_security::Transport,
        tasks: Tasks,
    ) -> Arc<Self> {
        Arc::new(Self {
            replica,
            membership,
            dc,
            wire: Wire {
                cluster_id,
                transport,
            },
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
        Ok(self.write_fenced(cmd).await?.0)
    }

    /// [`write`](Self::write), with the fence of the entry that decided it.
    pub(super) async fn write_fenced(
        &self,
        cmd: JobCommand,
    ) -> Result<(JobResponse, Fence), Status> {
        let applied = self
            .replica
            .write(SmRequest {
                client: None,
                command: Command::Jobs(cmd),
            })
            .await
            .map_err(group_status)?;
        let fence = Fence::new(applied.term, applied.index.0);
        Ok((job_response(applied.response)?, fence))
    }

    /// Where a new job's first instances go (see `leader::first_placements`).
    pub(super) fn first_placements(
        &self,
        id: &str,
        spec: &JobSpec,
        term: u64,
    ) -> shoal_state::jobs::Placing {
        let workers = self.workers();
        let now = now_ms();
        let depths = self.depths.lock().unwrap_or_else(|p| p.into_inner());
        let places = self.replica.group.read(|s| {
            super::decide::first_placements(
                s,
                id,
                spec,
                super::decide::RoundInputs {
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
    pub(super) fn check_placeable(&self, spec: &JobSpec, source: &str) -> Result<(), Status> {
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
            if matches!(wf.work, Work::Exec { .. })
                && !workers
                    .iter()
                    .any(|w| w.tags.contains_key(&kind_tag("exec")))
            {
                return Err(Status::failed_precondition(format!(
                    "{at}.kind: exec: every live worker in {} runs with --no-exec (runs no commands)",
                    self.dc
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
        let c = WorkerClient::new(self.wire.channel(addr)?)
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
    pub(super) fn to_stop(&self, worker: &str, running: &[Key]) -> Vec<Key> {
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
    pub(super) async fn reconcile(self: &Arc<Self>, worker: &str, running: &[Key]) {
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

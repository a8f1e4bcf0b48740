//! Gates: the `Jobs` service in front of several datacenters.
//!
//! A gate picks the datacenter(s) for a job from gossip — a DC is healthy when a
//! majority of its managers is alive and one of them leads, and it has room when a live
//! worker there has the cores the job asks for — records the choice in the gates' own
//! Raft group (a KV record per job, `_shoal/gates/jobs/<id>`), then submits the job to
//! each chosen DC's managers under the same id. Reads fan out to those DCs and merge
//! their answers into one job (instances of a multi-DC job are listed per DC; their
//! workers are named `dc/worker`).
//!
//! The gate leader watches unfinished jobs: when a DC running one loses its quorum and
//! the job was not pinned to it (`datacenters = [...]`), the job moves to another
//! healthy DC (same id; the record is updated first), and the old DC is told to cancel
//! it if it can still be reached.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use shoal_client::{CallError, CallOptions, JobsClient};
use shoal_membership::MembershipHandle;
use shoal_proto::v1::{self as pb, jobs_server::Jobs};
use shoal_raft::group::Replica;
use shoal_state::{
    Command, KvCommand, KvError, KvResponse, Request as SmRequest, Response as SmResponse,
    jobspec::{self, Format},
};
use shoal_types::{MemberState, Role};
use tonic::{Request, Response, Status};

use crate::{replicated::group_status, tasks::Tasks};

/// KV prefix of the gates' job records.
pub const RECORD_PREFIX: &str = "_shoal/gates/jobs/";
/// How often the gate leader checks the DCs of unfinished jobs.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// Checks in a row a DC must fail before its jobs move elsewhere.
const UNHEALTHY_CHECKS: u32 = 3;

/// What the gates remember about a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub spec: String,
    pub format: String,
    pub source: String,
    /// Where it runs now.
    pub dcs: Vec<String>,
    /// The spec named its datacenters: it never moves.
    pub pinned: bool,
    pub finished: bool,
    /// DCs it left (lost quorum while running it).
    #[serde(default)]
    pub moved_from: Vec<String>,
    /// DCs it left that have not confirmed its cancellation yet (told again until they
    /// do, so a DC that regains its quorum does not run it as well).
    #[serde(default)]
    pub to_cancel: Vec<String>,
}

/// A datacenter as gossip shows it.
#[derive(Debug, Clone, Default)]
pub struct DcView {
    pub managers: Vec<String>,
    pub managers_known: usize,
    pub managers_alive: usize,
    pub has_leader: bool,
    /// Cores of its live workers: (largest, total).
    pub largest_worker: u32,
    pub total_cores: u32,
}

impl DcView {
    pub fn healthy(&self) -> bool {
        self.managers_known > 0 && self.managers_alive > self.managers_known / 2 && self.has_leader
    }
}

type DcClient = (Vec<String>, Arc<JobsClient>);

/// The gate's jobs machinery.
pub struct Gate {
    replica: Replica,
    membership: MembershipHandle,
    /// How the gate reaches the datacenters' managers.
    creds: shoal_security::Credentials,
    /// Per DC: the manager addresses a client was made for, and the client.
    clients: Mutex<HashMap<String, DcClient>>,
    unhealthy: Mutex<HashMap<String, u32>>,
    /// The node's tasks: the DC watch and job watches run among them.
    tasks: Tasks,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").finish()
    }
}

fn call_status(e: CallError) -> Status {
    match e {
        CallError::Rejected(m) => Status::invalid_argument(m),
        CallError::BadServers(m) => Status::internal(m),
        e @ CallError::Unavailable { .. } => Status::unavailable(e.to_string()),
    }
}

impl Gate {
    pub fn new(
        replica: Replica,
        membership: MembershipHandle,
        transport: shoal_security::Transport,
        tasks: &Tasks,
    ) -> Arc<Self> {
        let gate = Arc::new(Self {
            replica,
            membership,
            // The gate calls the managers as a node (its certificate): it has already
            // checked the client's permissions itself.
            creds: shoal_security::Credentials {
                transport,
                token: None,
            },
            clients: Mutex::default(),
            unhealthy: Mutex::default(),
            tasks: tasks.clone(),
        });
        tasks.spawn("gate watch", watch(Arc::downgrade(&gate)));
        gate
    }

    /// Every datacenter gossip knows, by name.
    pub fn dcs(&self) -> BTreeMap<String, DcView> {
        let snap = self.membership.snapshot();
        let leaders = crate::status::dc_leaders(&snap);
        let mut dcs: BTreeMap<String, DcView> = BTreeMap::new();
        for m in &snap.members {
            let Some(dc) = &m.dc else { continue };
            let live = matches!(m.state, MemberState::Alive | MemberState::Suspect);
            match m.role {
                Some(Role::Manager) if m.state != MemberState::Left => {
                    let v = dcs.entry(dc.clone()).or_default();
                    v.managers_known += 1;
                    if live {
                        v.managers_alive += 1;
                        v.managers.push(m.addr.clone());
                    }
                }
                Some(Role::Worker) if live => {
                    let v = dcs.entry(dc.clone()).or_default();
                    v.largest_worker = v.largest_worker.max(m.cores);
                    v.total_cores += m.cores;
                }
                _ => {}
            }
        }
        for (dc, v) in dcs.iter_mut() {
            v.has_leader = leaders.contains_key(dc);
            v.managers.sort();
        }
        dcs.retain(|_, v| v.managers_known > 0);
        dcs
    }

    /// The `jobs` section of /v1/status on a gate: the jobs the gates placed (from this
    /// gate's copy of their records) and each datacenter as this gate sees it — what it
    /// routes by.
    pub fn status_section(&self) -> serde_json::Value {
        let records: Vec<Record> = self.replica.group.read(|s| {
            s.kv.list(RECORD_PREFIX)
                .filter_map(|(_, e)| serde_json::from_slice::<Record>(&e.value).ok())
                .collect()
        });
        let unfinished: Vec<&Record> = records.iter().filter(|r| !r.finished).collect();
        let dcs: Vec<serde_json::Value> = self
            .dcs()
            .into_iter()
            .map(|(dc, v)| {
                let here = unfinished.iter().filter(|r| r.dcs.contains(&dc)).count();
                serde_json::json!({
                    "dc": dc,
                    "healthy": v.healthy(),
                    "managers_alive": v.managers_alive,
                    "managers_known": v.managers_known,
                    "has_leader": v.has_leader,
                    "total_cores": v.total_cores,
                    "largest_worker_cores": v.largest_worker,
                    "jobs_unfinished": here,
                })
            })
            .collect();
        serde_json::json!({
            "jobs_known": records.len(),
            "jobs_unfinished": unfinished.len(),
            "datacenters": dcs,
        })
    }

    /// A client to the managers of `dc` (rebuilt when their addresses change).
    fn client(&self, dc: &str) -> Result<Arc<JobsClient>, Status> {
        let managers = self
            .dcs()
            .remove(dc)
            .map(|v| v.managers)
            .unwrap_or_default();
        if managers.is_empty() {
            return Err(Status::unavailable(format!("{dc}: no live manager")));
        }
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((addrs, c)) = clients.get(dc)
            && *addrs == managers
        {
            return Ok(c.clone());
        }
        let options = CallOptions {
            attempt_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(6),
            ..CallOptions::default()
        };
        let c =
            Arc::new(JobsClient::connect(&managers, options, &self.creds).map_err(call_status)?);
        clients.insert(dc.to_string(), (managers, c.clone()));
        Ok(c)
    }

    async fn write(&self, command: KvCommand) -> Result<Result<KvResponse, KvError>, Status> {
        let applied = self
            .replica
            .write(SmRequest {
                client: None,
                command: Command::Kv(command),
            })
            .await
            .map_err(group_status)?;
        match applied.response {
            SmResponse::Kv(r) => Ok(r),
            other => Err(Status::internal(format!("unexpected {other}"))),
        }
    }

    /// The record and its KV revision, read linearizably.
    async fn record(&self, id: &str) -> Result<Option<(Record, u64)>, Status> {
        self.replica.linearize().await.map_err(group_status)?;
        Ok(self.read_record(id))
    }

    fn read_record(&self, id: &str) -> Option<(Record, u64)> {
        self.replica.group.read(|s| {
            let e = s.kv.get(&format!("{RECORD_PREFIX}{id}"))?;
            let r: Record = serde_json::from_slice(&e.value).ok()?;
            Some((r, e.mod_revision))
        })
    }

    /// Replaces the record if it is still at `revision`.
    async fn store(&self, r: &Record, revision: u64) -> Result<bool, Status> {
        let value = serde_json::to_vec(r).map_err(|e| Status::internal(e.to_string()))?;
        let out = self
            .write(KvCommand::Cas {
                key: format!("{RECORD_PREFIX}{}", r.id),
                value,
                expected_revision: revision,
            })
            .await?;
        Ok(out.is_ok())
    }

    /// Picks DCs for a new job.
    fn choose(
        &self,
        placement: &jobspec::Placement,
        cores: u32,
        source: &str,
    ) -> Result<(Vec<String>, bool), Status> {
        let dcs = self.dcs();
        let known = || dcs.keys().cloned().collect::<Vec<_>>().join(", ");
        let fits = |v: &DcView| v.healthy() && v.largest_worker >= cores;
        if !placement.datacenters.is_empty() {
            for dc in &placement.datacenters {
                let Some(v) = dcs.get(dc) else {
                    return Err(Status::invalid_argument(format!(
                        "{source}: datacenters: `{dc}` is not a datacenter this gate knows (known: {})",
                        known()
                    )));
                };
                if !fits(v) {
                    return Err(Status::unavailable(format!(
                        "{source}: datacenters: {dc} cannot take the job now ({} of {} managers alive, leader {}, largest worker {} cores, {cores} needed)",
                        v.managers_alive,
                        v.managers_known,
                        if v.has_leader { "known" } else { "unknown" },
                        v.largest_worker
                    )));
                }
            }
            return Ok((placement.datacenters.clone(), true));
        }
        let n = placement.datacenter_count.unwrap_or(1) as usize;
        let mut ok: Vec<(&String, &DcView)> = dcs.iter().filter(|(_, v)| fits(v)).collect();
        // Most total cores first, then by name.
        ok.sort_by(|a, b| b.1.total_cores.cmp(&a.1.total_cores).then(a.0.cmp(b.0)));
        if ok.len() < n {
            return Err(Status::unavailable(format!(
                "{source}: datacenter_count: {n} healthy datacenters with a worker of {cores} cores are needed, {} are (known: {})",
                ok.len(),
                known()
            )));
        }
        Ok((
            ok.into_iter().take(n).map(|(d, _)| d.clone()).collect(),
            false,
        ))
    }

    /// The job as each of its DCs reports it (asked in parallel; a DC without quorum
    /// is not asked), merged.
    async fn merged(&self, r: &Record) -> Result<pb::Job, Status> {
        let views = self.dcs();
        let asks = r.dcs.iter().map(|dc| {
            let healthy = views.get(dc).is_some_and(DcView::healthy);
            let client = self.client(dc);
            async move {
                let job = match (healthy, client) {
                    (false, _) => Err(Status::unavailable("no quorum")),
                    (true, Ok(c)) => c.get(&r.id).await.map_err(call_status),
                    (true, Err(e)) => Err(e),
                };
                (dc.clone(), job)
            }
        });
        let parts = futures_util::future::join_all(asks).await;
        Ok(merge(r, parts))
    }
}

/// Merges the DCs' views of one job: all completed → completed; any failed, cancelled or
/// timed out → that; otherwise the least advanced state. An unreachable DC's part shows
/// as `unknown` instances is not invented: its workflows are missing and the reason says
/// which DC did not answer.
pub fn merge(r: &Record, parts: Vec<(String, Result<pb::Job, Status>)>) -> pb::Job {
    let mut out = pb::Job {
        id: r.id.clone(),
        ..Default::default()
    };
    let mut states = Vec::new();
    let mut reasons = Vec::new();
    let mut finished = 0u64;
    let mut all_finished = true;
    let mut workflows: Vec<pb::Workflow> = Vec::new();
    for (dc, part) in parts {
        match part {
            Ok(j) => {
                out.name = j.name.clone();
                if out.submitted_unix_ms == 0 || j.submitted_unix_ms < out.submitted_unix_ms {
                    out.submitted_unix_ms = j.submitted_unix_ms;
                }
                if j.finished_unix_ms == 0 {
                    all_finished = false;
                }
                finished = finished.max(j.finished_unix_ms);
                if !j.reason.is_empty() {
                    reasons.push(format!("{dc}: {}", j.reason));
                }
                states.push(j.state.clone());
                for w in j.workflows {
                    let slot = match workflows.iter_mut().find(|x| x.name == w.name) {
                        Some(s) => s,
                        None => {
                            workflows.push(pb::Workflow {
                                name: w.name.clone(),
                                kind: w.kind.clone(),
                                state: String::new(),
                                instances: Vec::new(),
                            });
                            workflows.last_mut().expect("just pushed")
                        }
                    };
                    slot.state = if slot.state.is_empty() {
                        w.state.clone()
                    } else {
                        combine(&[slot.state.clone(), w.state.clone()])
                    };
                    for mut i in w.instances {
                        i.index = slot.instances.len() as u32;
                        if !i.worker.is_empty() {
                            i.worker = format!("{dc}/{}", i.worker);
                        }
                        slot.instances.push(i);
                    }
                }
            }
            Err(e) => {
                all_finished = false;
                states.push("submitted".into());
                reasons.push(format!("{dc}: not answering ({})", e.message()));
            }
        }
    }
    out.state = combine(&states);
    out.reason = reasons.join("; ");
    out.workflows = workflows;
    out.finished_unix_ms = if all_finished && shoal_client::jobs::is_finished(&out.state) {
        finished
    } else {
        0
    };
    out
}

/// One state for several parts of a job.
fn combine(states: &[String]) -> String {
    for end in ["failed", "timed_out", "cancelled"] {
        if states.iter().any(|s| s == end) {
            return end.into();
        }
    }
    if !states.is_empty() && states.iter().all(|s| s == "completed") {
        return "completed".into();
    }
    for s in ["submitted", "queued", "dispatching", "running"] {
        if states.iter().any(|x| x == s) {
            return s.into();
        }
    }
    "running".into()
}

/// The gate leader's watch: moves unfinished jobs off DCs that lost their quorum, and
/// marks records finished.
async fn watch(gate: std::sync::Weak<Gate>) {
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(gate) = gate.upgrade() else { return };
        let leads = gate
            .replica
            .group
            .leader()
            .is_some_and(|(l, _)| l == gate.replica.group.id());
        if !leads {
            continue;
        }
        if let Err(e) = watch_once(&gate).await {
            tracing::debug!(error = %e, "gate watch");
        }
    }
}

async fn watch_once(gate: &Arc<Gate>) -> Result<(), Status> {
    let dcs = gate.dcs();
    {
        let mut unhealthy = gate.unhealthy.lock().unwrap_or_else(|p| p.into_inner());
        for (dc, v) in &dcs {
            if v.healthy() {
                unhealthy.remove(dc);
            } else {
                *unhealthy.entry(dc.clone()).or_default() += 1;
            }
        }
    }
    let records: Vec<(Record, u64)> = gate.replica.group.read(|s| {
        s.kv.list(RECORD_PREFIX)
            .filter_map(|(_, e)| {
                Some((
                    serde_json::from_slice::<Record>(&e.value).ok()?,
                    e.mod_revision,
                ))
            })
            .filter(|(r, _)| !r.finished)
            .collect()
    });
    for (mut r, rev) in records {
        let down: Vec<String> = {
            let unhealthy = gate.unhealthy.lock().unwrap_or_else(|p| p.into_inner());
            r.dcs
                .iter()
                .filter(|dc| unhealthy.get(*dc).copied().unwrap_or(0) >= UNHEALTHY_CHECKS)
                .cloned()
                .collect()
        };
        if !down.is_empty() && !r.pinned {
            let (spec, _) = match jobspec::parse(
                &r.spec,
                Format::pick(&r.format, &r.spec).unwrap_or(Format::Toml),
                &r.source,
            ) {
                Ok(s) => s,
                Err(_) => continue,
            };
            let cores = spec.workflows.iter().map(|w| w.cores).max().unwrap_or(1);
            let spare: Vec<String> = dcs
                .iter()
                .filter(|(dc, v)| v.healthy() && v.largest_worker >= cores && !r.dcs.contains(dc))
                .map(|(dc, _)| dc.clone())
                .collect();
            let mut moved = Vec::new();
            for (from, to) in down.iter().zip(spare) {
                r.dcs.retain(|d| d != from);
                r.dcs.push(to.clone());
                r.moved_from.push(from.clone());
                r.to_cancel.push(from.clone());
                moved.push((from.clone(), to));
            }
            if moved.is_empty() {
                continue;
            }
            if gate.store(&r, rev).await? {
                for (from, to) in moved {
                    tracing::warn!(job = %r.id, %from, %to, "datacenter lost its quorum; moving the job");
                    if let Ok(c) = gate.client(&to) {
                        let format = Format::pick(&r.format, &r.spec).unwrap_or(Format::Toml);
                        if let Err(e) = c
                            .submit_share(&r.spec, &r.source, format, Some(&r.id), Some(&to))
                            .await
                        {
                            tracing::warn!(job = %r.id, dc = %to, error = %e, "resubmitting failed; will retry");
                        }
                    }
                    let _ = from;
                }
            }
            continue;
        }
        // DCs the job moved away from: cancel it there once they answer again.
        if !r.to_cancel.is_empty() {
            let mut confirmed = Vec::new();
            for dc in &r.to_cancel {
                let healthy = dcs.get(dc).is_some_and(DcView::healthy);
                if healthy && let Ok(c) = gate.client(dc) {
                    match c.cancel(&r.id).await {
                        Ok(_) => confirmed.push(dc.clone()),
                        Err(CallError::Rejected(m)) if m.contains("no such job") => {
                            confirmed.push(dc.clone())
                        }
                        Err(e) => {
                            tracing::debug!(job = %r.id, %dc, error = %e, "cancel on the old DC")
                        }
                    }
                }
            }
            if !confirmed.is_empty() {
                r.to_cancel.retain(|d| !confirmed.contains(d));
                gate.store(&r, rev).await?;
                continue;
            }
        }
        // A DC that does not know the job (it was down when the gate submitted it, or a
        // resubmission above failed) gets it again: the same id twice is one job there.
        let mut all_finished = true;
        for dc in &r.dcs {
            let Ok(c) = gate.client(dc) else {
                all_finished = false;
                continue;
            };
            match c.get(&r.id).await {
                Ok(j) => all_finished &= j.finished_unix_ms != 0,
                Err(CallError::Rejected(m)) if m.contains("no such job") => {
                    all_finished = false;
                    let format = Format::pick(&r.format, &r.spec).unwrap_or(Format::Toml);
                    if let Err(e) = c
                        .submit_share(&r.spec, &r.source, format, Some(&r.id), Some(dc))
                        .await
                    {
                        tracing::warn!(job = %r.id, %dc, error = %e, "resubmitting failed; will retry");
                    }
                }
                Err(_) => all_finished = false,
            }
        }
        if all_finished && r.to_cancel.is_empty() {
            r.finished = true;
            gate.store(&r, rev).await?;
        }
    }
    Ok(())
}

/// The `Jobs` service of a gate.
pub struct GateJobs {
    gate: Arc<Gate>,
}

pub fn service(gate: Arc<Gate>) -> pb::jobs_server::JobsServer<GateJobs> {
    pb::jobs_server::JobsServer::new(GateJobs { gate })
        .max_decoding_message_size(shoal_proto::GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(shoal_proto::GRPC_MESSAGE_BYTES_MAX)
}

impl GateJobs {
    async fn existing(&self, id: &str) -> Result<Record, Status> {
        self.gate
            .record(id)
            .await?
            .map(|(r, _)| r)
            .ok_or_else(|| Status::not_found(format!("job {id}: no such job")))
    }
}

use super::JobStream;

#[tonic::async_trait]
impl Jobs for GateJobs {
    async fn submit(
        &self,
        r: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let caller = crate::access::Caller::of(&r);
        let r = r.into_inner();
        let super::Submission {
            spec,
            placement,
            format,
            source,
            id,
        } = super::Submission::admit(&r, &caller)?;
        let format_name = format.name();
        let (record, created) = match self.gate.record(&id).await? {
            Some((existing, _)) if existing.spec == r.spec => (existing, false),
            Some(_) => {
                return Err(Status::invalid_argument(format!(
                    "id: {id} is already used by a different job"
                )));
            }
            None => {
                let cores = spec.workflows.iter().map(|w| w.cores).max().unwrap_or(1);
                let (dcs, pinned) = self.gate.choose(&placement, cores, &source)?;
                let record = Record {
                    id: id.clone(),
                    spec: r.spec.clone(),
                    format: format_name.into(),
                    source: source.clone(),
                    dcs,
                    pinned,
                    finished: false,
                    moved_from: Vec::new(),
                    to_cancel: Vec::new(),
                };
                if !self.gate.store(&record, 0).await? {
                    // Another submission of this id won the race.
                    let (existing, _) = self
                        .gate
                        .record(&id)
                        .await?
                        .ok_or_else(|| Status::unavailable("job record vanished; retry"))?;
                    if existing.spec != r.spec {
                        return Err(Status::invalid_argument(format!(
                            "id: {id} is already used by a different job"
                        )));
                    }
                    (existing, false)
                } else {
                    (record, true)
                }
            }
        };
        // Hand it to each DC (again, if this is a retry: the same id is one job there).
        let mut refused = None;
        for dc in &record.dcs {
            let c = self.gate.client(dc)?;
            match c
                .submit_share(&r.spec, &source, format, Some(&id), Some(dc))
                .await
            {
                Ok(_) => {}
                Err(CallError::Rejected(m)) => refused = Some(format!("{dc}: {m}")),
                Err(e) => return Err(call_status(e)),
            }
        }
        if let Some(m) = refused {
            if created {
                // Nothing half-done: a DC refused the job as invalid, so the gates forget
                // it (a DC that took it is told to cancel).
                let _ = self
                    .gate
                    .write(KvCommand::Delete {
                        key: format!("{RECORD_PREFIX}{id}"),
                    })
                    .await;
                for dc in &record.dcs {
                    if let Ok(c) = self.gate.client(dc) {
                        let _ = c.cancel(&id).await;
                    }
                }
            }
            return Err(Status::invalid_argument(m));
        }
        let job = self.gate.merged(&record).await?;
        Ok(Response::new(pb::SubmitResponse {
            id,
            created,
            job: Some(job),
        }))
    }

    async fn get(&self, r: Request<pb::JobRequest>) -> Result<Response<pb::Job>, Status> {
        let record = self.existing(&r.get_ref().id).await?;
        Ok(Response::new(self.gate.merged(&record).await?))
    }

    async fn list(
        &self,
        _r: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        self.gate.replica.linearize().await.map_err(group_status)?;
        let records: Vec<Record> = self.gate.replica.group.read(|s| {
            s.kv.list(RECORD_PREFIX)
                .filter_map(|(_, e)| serde_json::from_slice(&e.value).ok())
                .collect()
        });
        let merged =
            futures_util::future::join_all(records.iter().map(|r| self.gate.merged(r))).await;
        let mut jobs = Vec::new();
        for j in merged {
            let j = j?;
            let all = j.workflows.iter().flat_map(|w| &w.instances);
            let count = |s: &str| all.clone().filter(|i| i.state == s).count() as u32;
            jobs.push(pb::JobSummary {
                id: j.id.clone(),
                name: j.name.clone(),
                state: j.state.clone(),
                instances: all.clone().count() as u32,
                completed: count("completed"),
                running: count("running") + count("dispatching"),
                failed: count("failed") + count("timed_out"),
                submitted_unix_ms: j.submitted_unix_ms,
                finished_unix_ms: j.finished_unix_ms,
            });
        }
        jobs.sort_by_key(|j| j.submitted_unix_ms);
        Ok(Response::new(pb::ListJobsResponse { jobs }))
    }

    async fn cancel(&self, r: Request<pb::JobRequest>) -> Result<Response<pb::Job>, Status> {
        let record = self.existing(&r.get_ref().id).await?;
        for dc in &record.dcs {
            self.gate
                .client(dc)?
                .cancel(&record.id)
                .await
                .map_err(call_status)?;
        }
        Ok(Response::new(self.gate.merged(&record).await?))
    }

    type WatchStream = JobStream;

    async fn watch(&self, r: Request<pb::JobRequest>) -> Result<Response<JobStream>, Status> {
        let record = self.existing(&r.get_ref().id).await?;
        let first = self.gate.merged(&record).await?;
        let gate = self.gate.clone();
        let id = record.id.clone();
        Ok(Response::new(super::watch_stream(
            &self.gate.tasks,
            first,
            move || {
                let (gate, id) = (gate.clone(), id.clone());
                async move {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    // The record may have moved to another DC meanwhile.
                    let Some((record, _)) = gate.read_record(&id) else {
                        return Err(Status::not_found(format!("job {id}: forgotten")));
                    };
                    Ok(gate.merged(&record).await.ok())
                }
            },
        )))
    }

    async fn logs(
        &self,
        r: Request<pb::LogsRequest>,
    ) -> Result<Response<pb::LogsResponse>, Status> {
        let r = r.into_inner();
        let record = self.existing(&r.id).await?;
        // One datacenter's page per call; the token is `<dc position>|<its token>`.
        let (at, inner) = match r.page_token.split_once('|') {
            None if r.page_token.is_empty() => (0, String::new()),
            Some((d, t)) if d.parse::<usize>().is_ok_and(|d| d < record.dcs.len()) => {
                (d.parse::<usize>().unwrap_or_default(), t.to_string())
            }
            _ => {
                return Err(Status::invalid_argument(
                    "page_token: not one a logs page gave (pass next_page_token as it came)",
                ));
            }
        };
        let Some(dc) = record.dcs.get(at) else {
            return Ok(Response::new(pb::LogsResponse::default()));
        };
        let part = self
            .gate
            .client(dc)?
            .logs_page(
                &r.id,
                (!r.workflow.is_empty()).then_some(r.workflow.as_str()),
                r.instance,
                &inner,
            )
            .await
            .map_err(call_status)?;
        let outputs = part
            .outputs
            .into_iter()
            .map(|mut o| {
                if !o.worker.is_empty() {
                    o.worker = format!("{dc}/{}", o.worker);
                }
                o
            })
            .collect();
        let next_page_token = if !part.next_page_token.is_empty() {
            format!("{at}|{}", part.next_page_token)
        } else if at + 1 < record.dcs.len() {
            format!("{}|", at + 1)
        } else {
            String::new()
        };
        Ok(Response::new(pb::LogsResponse {
            outputs,
            next_page_token,
        }))
    }
}

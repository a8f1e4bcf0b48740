//! The managers' side of jobs: the public `Jobs` service and the internal
//! `WorkerReports` service, over one [`JobsManager`] per manager.
//!
//! Every manager answers; writes (submit, cancel, reports) go through the Raft group
//! (a follower forwards them to the leader) and reads are linearizable (a read index
//! from the leader) unless they follow a job live (`Watch` reads this manager's applied
//! state as it advances).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use shoal_proto::v1::{
    self as pb, InternalMessage,
    jobs_server::{Jobs, JobsServer},
    worker_reports_server::{WorkerReports, WorkerReportsServer},
};
use shoal_state::{Command, JobCommand, JobResponse, Request as SmRequest, jobs::Event};
use tonic::{Request, Response, Status};

use super::{HeartbeatMsg, HeartbeatReply, ReportBatch, ReportReply, now_ms};
use super::{
    convert::{job_doc, summary},
    manager::{JobsManager, job_response, jobs_status},
};
use crate::replicated::group_status;

/// How often `Watch` looks for changes when nothing is applied.
const WATCH_EVERY: Duration = Duration::from_millis(100);
/// `Watch` sends a running job's document at most this often (its end at once).
const WATCH_PROGRESS_EVERY: Duration = Duration::from_millis(50);

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
        let caller = crate::access::Caller::of(&r);
        let r = r.into_inner();
        let super::Submission {
            spec,
            placement,
            source,
            id,
            ..
        } = super::Submission::admit(&r, &caller)?;
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
        if let (JobResponse::Stopped { stopped }, fence) = self.mgr.write_fenced(cmd).await? {
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
        let start = logs_position(&r.page_token)?;
        self.mgr.replica.linearize().await.map_err(group_status)?;
        let (outputs, next) = self.mgr.replica.group.read(|s| {
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
            let mut bytes = 0;
            let mut next = None;
            'all: for (w, (run, spec)) in job.workflows.iter().zip(&job.spec.workflows).enumerate()
            {
                if !r.workflow.is_empty() && spec.name != r.workflow {
                    continue;
                }
                for (i, inst) in run.instances.iter().enumerate() {
                    if r.instance.is_some_and(|want| want as usize != i) || (w, i) < start {
                        continue;
                    }
                    let size = inst.stdout_tail.len() + inst.stderr_tail.len() + 64;
                    if !out.is_empty() && bytes + size > LOGS_PAGE_BYTES_MAX {
                        next = Some(format!("{w}/{i}"));
                        break 'all;
                    }
                    bytes += size;
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
            Ok((out, next))
        })?;
        Ok(Response::new(pb::LogsResponse {
            outputs,
            next_page_token: next.unwrap_or_default(),
        }))
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
                    Some((super::decide::work_key(wf), us))
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

/// A logs page ends once its outputs reach this many bytes (one instance's output, two
/// tails, always fits), well under the 4 MiB message limit.
pub const LOGS_PAGE_BYTES_MAX: usize = 3 * 1024 * 1024;

/// `W/I` from a logs page token: the workflow position and instance index to go on
/// from; (0, 0) for none.
fn logs_position(token: &str) -> Result<(usize, usize), Status> {
    if token.is_empty() {
        return Ok((0, 0));
    }
    token
        .split_once('/')
        .and_then(|(w, i)| Some((w.parse().ok()?, i.parse().ok()?)))
        .ok_or_else(|| {
            Status::invalid_argument(
                "page_token: not one a logs page gave (pass next_page_token as it came)",
            )
        })
}

//! Jobs across the roles: the public `Jobs` service and the scheduling loop on managers,
//! the `Worker` service and the executor on workers.
//!
//! ```text
//!  client ── Jobs.Submit ──► any manager ──► Raft: Submit ──► applied everywhere
//!  manager leader, every round:  gossip workers (cores, tags) + the ledger's active
//!      instances ──► shoal-sched round ──► Raft: Schedule (one entry per round; its
//!      (term, index) is the fence) ──► one Worker.Run(orders) per worker
//!  worker: refuses fences of older terms; queues the attempts, runs at most its cores
//!      at once; reports Started, Progress (≤ 1/s), Finished ──► batched: one
//!      WorkerReports.Report(reports) at a time ──► Raft: Reports (one entry per
//!      batch; each report counts once, only for the current attempt on that worker)
//!  worker, every second: Heartbeat(what it runs) ──► the leader answers with attempts
//!      to stop (cancelled, replaced) and notices attempts the worker lost
//!  gossip: a worker declared failed ──► Raft: WorkerLost ──► its instances retried
//!      elsewhere (excluding it) or failed
//! ```
//!
//! Internal messages are postcard payloads in an [`InternalMessage`] that carries the
//! cluster id (a node of another cluster is refused) and an encoding version.

pub mod children;
pub mod convert;
pub mod decide;
pub mod exec;
pub mod gate;
pub mod leader;
pub mod manager;
pub mod service;
pub mod worker;

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use shoal_proto::v1::{InternalMessage, SubmitRequest};
use shoal_state::{
    jobs::{Event, InstanceRef, JobSpec, Work},
    jobspec::{self, Format, Placement},
};
use shoal_types::Fence;
use tonic::Status;

/// Largest job spec a submission may carry.
pub const SPEC_BYTES_MAX: usize = 1024 * 1024;

/// A submission that passed the edge checks every receiver (gate or manager) makes:
/// the spec's size, its format, the spec itself, and the job id (given, or made).
pub(crate) struct Submission {
    pub spec: JobSpec,
    pub placement: Placement,
    pub format: Format,
    /// Where the spec came from, for messages (`spec` when the client did not say).
    pub source: String,
    pub id: String,
}

impl Submission {
    /// Checks `r` from `caller`; the error names the field and the rule (or the
    /// permission a job that runs commands needs), and nothing was written.
    pub(crate) fn admit(r: &SubmitRequest, caller: &crate::access::Caller) -> Result<Self, Status> {
        if r.spec.len() > SPEC_BYTES_MAX {
            return Err(Status::invalid_argument(format!(
                "spec: {} bytes, the limit is {SPEC_BYTES_MAX}",
                r.spec.len()
            )));
        }
        let source = if r.source.is_empty() {
            "spec".to_string()
        } else {
            r.source.clone()
        };
        let format = Format::pick(&r.format, &r.spec).map_err(Status::invalid_argument)?;
        let (spec, placement) =
            jobspec::parse(&r.spec, format, &source).map_err(Status::invalid_argument)?;
        let id = if r.id.is_empty() {
            jobspec::job_id(&spec.name, crate::node::rand_seed() as u32)
        } else {
            r.id.clone()
        };
        shoal_state::jobs::check_name("id", &id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        for wf in &spec.workflows {
            if matches!(wf.work, shoal_state::jobs::Work::Exec { .. }) {
                let what = format!(
                    "{source}: workflow `{}` runs a command (kind exec), which",
                    wf.name
                );
                caller.require(shoal_types::Perm::Exec, &what)?;
            }
        }
        Ok(Self {
            spec,
            placement,
            format,
            source,
            id,
        })
    }
}

/// Encoding version of internal job messages.
pub const PAYLOAD_VERSION: u32 = 2;

/// Leader → worker: start attempt `attempt` of `instance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOrder {
    /// (term, index) of the Schedule entry that placed it.
    pub fence: Fence,
    pub instance: InstanceRef,
    pub attempt: u32,
    pub work: Work,
    pub cores: u32,
    /// Per attempt; the worker stops it after this long and reports it timed out.
    pub timeout_ms: Option<u64>,
}

/// Leader → worker: the Run orders of one round for this worker (answered by one
/// [`OrderReply`] per order, in order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunBatch {
    pub orders: Vec<RunOrder>,
}

/// Leader → worker: stop this attempt (cancelled, timed out, or replaced).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopOrder {
    pub fence: Fence,
    pub instance: InstanceRef,
    pub attempt: u32,
}

/// A worker's answer to an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderReply {
    Accepted,
    /// The order's term is older than one this worker already obeyed.
    StaleFence {
        seen_term: u64,
    },
    /// The worker already holds as many attempts as it takes (running or waiting for
    /// cores); nothing was started. Appended last: older variants keep their encoding.
    Busy {
        held: usize,
    },
}

/// Worker → managers: what happened to some attempts (answered by one
/// [`ReportReply`] per report, in order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportBatch {
    pub worker: String,
    pub reports: Vec<WorkerReport>,
}

/// One report in a [`ReportBatch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerReport {
    pub instance: InstanceRef,
    pub attempt: u32,
    pub event: Event,
    /// How long the attempt ran, in µs (with `Finished`): the leader learns from it how
    /// short a workflow's instances are, and how many may wait on a worker.
    pub ran_us: Option<u64>,
}

/// Whether the report was recorded; `Stale`: the attempt is no longer current (the
/// worker should stop it if it still runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReportReply {
    Recorded,
    Stale,
}

/// Worker → leader, every second: the attempts it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatMsg {
    pub worker: String,
    pub running: Vec<(InstanceRef, u32)>,
}

/// Attempts the worker must stop.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HeartbeatReply {
    pub stop: Vec<(InstanceRef, u32)>,
}

/// Wraps and unwraps internal payloads for one cluster, and opens the channels they
/// travel on (plaintext or TLS with this node's certificate).
#[derive(Debug, Clone)]
pub struct Wire {
    pub cluster_id: String,
    pub transport: shoal_security::Transport,
}

impl Wire {
    /// A lazily connecting channel to another node's `HOST:PORT`.
    pub fn channel(&self, addr: &str) -> Result<tonic::transport::Channel, Status> {
        Ok(self
            .transport
            .endpoint(addr)
            .map_err(|e| Status::internal(format!("node address {e}")))?
            .connect_timeout(std::time::Duration::from_secs(1))
            .connect_lazy())
    }

    pub fn message<T: Serialize>(&self, v: &T) -> Result<InternalMessage, Status> {
        let payload =
            postcard::to_allocvec(v).map_err(|e| Status::internal(format!("encode: {e}")))?;
        Ok(InternalMessage {
            cluster_id: self.cluster_id.clone(),
            version: PAYLOAD_VERSION,
            payload,
        })
    }

    pub fn open<T: DeserializeOwned>(&self, m: &InternalMessage) -> Result<T, Status> {
        if m.cluster_id != self.cluster_id {
            return Err(Status::permission_denied(
                "cluster_id: this node belongs to another cluster",
            ));
        }
        if m.version != PAYLOAD_VERSION {
            return Err(Status::invalid_argument(format!(
                "version: {} is not understood; this node speaks {PAYLOAD_VERSION}",
                m.version
            )));
        }
        postcard::from_bytes(&m.payload)
            .map_err(|e| Status::invalid_argument(format!("payload: {e}")))
    }
}

/// A `Watch` answer: `first`, then each different job `next` returns, until the job has
/// finished or the client went away. `next` paces itself; `Ok(None)` means "nothing to
/// say this time", `Err` ends the stream with that status.
pub(crate) fn watch_stream<F, Fut>(
    tasks: &crate::tasks::Tasks,
    first: shoal_proto::v1::Job,
    mut next: F,
) -> JobStream
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Option<shoal_proto::v1::Job>, Status>> + Send,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tasks.spawn("job watch", async move {
        let mut last = first;
        if tx.send(Ok(last.clone())).await.is_err() {
            return;
        }
        while last.finished_unix_ms == 0 {
            match next().await {
                Ok(Some(now)) if now != last => {
                    last = now;
                    if tx.send(Ok(last.clone())).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(s) => {
                    let _ = tx.send(Err(s)).await;
                    return;
                }
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// The stream type of `Jobs.Watch`.
pub(crate) type JobStream = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<shoal_proto::v1::Job, Status>> + Send>,
>;

/// Wall clock in unix ms (decisions carry it; `apply` never reads a clock).
pub fn now_ms() -> u64 {
    crate::status::unix_ms()
}

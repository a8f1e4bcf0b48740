//! [`JobsClient`]: submit jobs, follow them, cancel them, read their output — over
//! gRPC with failover across the managers (see [`crate::servers`]).
//!
//! A submission always carries a job id (the caller's, or one made here from the spec's
//! name before the first attempt), so a submission retried after a failover creates
//! one job, never two.

use shoal_security::{AuthChannel, Credentials};
use std::time::Duration;

use serde_json::json;
use shoal_proto::{
    GRPC_MESSAGE_BYTES_MAX,
    v1::{
        Job, JobRequest, JobSummary, ListJobsRequest, LogsRequest, LogsResponse, SubmitRequest,
        SubmitResponse, jobs_client::JobsClient as RawJobs,
    },
};
use shoal_state::jobspec::{self, Format};
use tonic::Streaming;

use crate::servers::{CallError, CallOptions, Servers};

/// A jobs client bound to a list of managers.
pub struct JobsClient {
    servers: Servers<RawJobs<AuthChannel>>,
}

impl std::fmt::Debug for JobsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobsClient")
            .field("servers", &self.servers.list())
            .finish()
    }
}

/// A new job id made from the spec's name (see [`jobspec::job_id`]).
pub fn new_job_id(name: &str) -> String {
    use rand::RngExt as _;
    jobspec::job_id(name, rand::rng().random::<u32>())
}

impl JobsClient {
    pub fn new(servers: &[String], options: CallOptions) -> Result<Self, CallError> {
        Self::connect(servers, options, &Credentials::insecure())
    }

    /// Like [`new`](Self::new), with TLS and a token.
    pub fn connect(
        servers: &[String],
        options: CallOptions,
        creds: &Credentials,
    ) -> Result<Self, CallError> {
        let servers = Servers::connect(servers, options, creds, |channel| {
            RawJobs::new(channel)
                .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX)
        })?;
        Ok(Self { servers })
    }

    /// Checks the spec here (the same parser the managers run), then submits it under
    /// `id` (or a new id) once committed.
    pub async fn submit(
        &self,
        spec: &str,
        source: &str,
        format: Format,
        id: Option<&str>,
    ) -> Result<SubmitResponse, CallError> {
        self.submit_share(spec, source, format, id, None).await
    }

    /// A gate's submission of one datacenter's share of a multi-datacenter job.
    pub async fn submit_share(
        &self,
        spec: &str,
        source: &str,
        format: Format,
        id: Option<&str>,
        datacenter: Option<&str>,
    ) -> Result<SubmitResponse, CallError> {
        let (parsed, _) = jobspec::parse(spec, format, source).map_err(CallError::Rejected)?;
        let id = match id {
            Some(id) => {
                shoal_state::jobs::check_name("--id", id)
                    .map_err(|e| CallError::Rejected(e.to_string()))?;
                id.to_string()
            }
            None => new_job_id(&parsed.name),
        };
        let format = match format {
            Format::Toml => "toml",
            Format::Json => "json",
        };
        self.servers
            .call(|mut c, t| {
                let mut req = tonic::Request::new(SubmitRequest {
                    spec: spec.to_string(),
                    format: format.into(),
                    source: source.into(),
                    id: id.clone(),
                    datacenter: datacenter.unwrap_or_default().into(),
                });
                req.set_timeout(t);
                async move { Ok(c.submit(req).await?.into_inner()) }
            })
            .await
    }

    pub async fn get(&self, id: &str) -> Result<Job, CallError> {
        self.servers
            .call(|mut c, t| {
                let mut req = tonic::Request::new(JobRequest { id: id.into() });
                req.set_timeout(t);
                async move { Ok(c.get(req).await?.into_inner()) }
            })
            .await
    }

    pub async fn list(&self) -> Result<Vec<JobSummary>, CallError> {
        self.servers
            .call(|mut c, t| {
                let mut req = tonic::Request::new(ListJobsRequest {});
                req.set_timeout(t);
                async move { Ok(c.list(req).await?.into_inner().jobs) }
            })
            .await
    }

    /// Cancels the job; returns it as it is afterwards.
    pub async fn cancel(&self, id: &str) -> Result<Job, CallError> {
        self.servers
            .call(|mut c, t| {
                let mut req = tonic::Request::new(JobRequest { id: id.into() });
                req.set_timeout(t);
                async move { Ok(c.cancel(req).await?.into_inner()) }
            })
            .await
    }

    pub async fn logs(
        &self,
        id: &str,
        workflow: Option<&str>,
        instance: Option<u32>,
    ) -> Result<LogsResponse, CallError> {
        // The server pages at about 3 MiB of output: follow the pages.
        let mut all = LogsResponse::default();
        let mut token = String::new();
        loop {
            let page = self.logs_page(id, workflow, instance, &token).await?;
            all.outputs.extend(page.outputs);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            token = page.next_page_token;
        }
    }

    /// One page of [`logs`](Self::logs), from `token` (empty: the first).
    pub async fn logs_page(
        &self,
        id: &str,
        workflow: Option<&str>,
        instance: Option<u32>,
        token: &str,
    ) -> Result<LogsResponse, CallError> {
        self.servers
            .call(|mut c, t| {
                let mut req = tonic::Request::new(LogsRequest {
                    id: id.into(),
                    workflow: workflow.unwrap_or_default().into(),
                    instance,
                    page_token: token.to_string(),
                });
                req.set_timeout(t);
                async move { Ok(c.logs(req).await?.into_inner()) }
            })
            .await
    }

    /// The job now and at every change, from one manager, until it finishes. When the
    /// stream breaks (that manager died), call again: the next manager takes over.
    pub async fn watch(&self, id: &str) -> Result<Streaming<Job>, CallError> {
        self.servers
            .call(|mut c, _| {
                let req = tonic::Request::new(JobRequest { id: id.into() });
                async move { Ok(c.watch(req).await?.into_inner()) }
            })
            .await
    }

    /// How long calls may take.
    pub fn deadline(&self) -> Duration {
        self.servers.options().deadline
    }
}

/// The job document `--json` prints: `{"id", "name", "state", "reason",
/// "workflows": [{"name", "kind", "state", "instances": [{"index", "state",
/// "attempts", "worker", "exit_code", "error", "progress"}]}]}`.
pub fn job_json(j: &Job) -> serde_json::Value {
    json!({
        "id": j.id,
        "name": j.name,
        "state": j.state,
        "reason": (!j.reason.is_empty()).then_some(&j.reason),
        "submitted_unix_ms": j.submitted_unix_ms,
        "finished_unix_ms": (j.finished_unix_ms != 0).then_some(j.finished_unix_ms),
        "workflows": j.workflows.iter().map(|w| json!({
            "name": w.name,
            "kind": w.kind,
            "state": w.state,
            "instances": w.instances.iter().map(|i| json!({
                "index": i.index,
                "state": i.state,
                "attempts": i.attempts,
                "worker": (!i.worker.is_empty()).then_some(&i.worker),
                "exit_code": i.exit_code,
                "error": (!i.error.is_empty()).then_some(&i.error),
                "progress": (i.progress_total != 0).then(|| json!([i.progress_done, i.progress_total])),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// Whether a job state is final.
pub fn is_finished(state: &str) -> bool {
    matches!(state, "completed" | "failed" | "cancelled" | "timed_out")
}

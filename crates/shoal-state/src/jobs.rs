//! Jobs in the replicated state: what was submitted, where each instance runs, and how
//! it ended. The manager leader decides (placements, timeouts, lost workers) and
//! commits each decision here before acting on it; workers' reports are committed too,
//! so a new leader resumes from exactly what its predecessor knew.
//!
//! ```text
//!  Submit ──► job QUEUED, every instance QUEUED (attempt 0)
//!  Schedule (one entry per scheduling round) ──► placed instances DISPATCHING on a
//!            worker, attempt + 1, fenced by this entry's (term, index)
//!  Report Started ──► RUNNING      Report Progress ──► progress (done / total)
//!  Report Finished ok ──► COMPLETED
//!  Report Finished failed / timed out, WorkerLost ──► QUEUED again (attempt < 1 +
//!            max_retries, that worker excluded) or FAILED / TIMED_OUT
//!  Cancel (a user, or the job's timeout) ──► every unfinished instance CANCELLED
//! ```
//!
//! A report counts only for the instance's current attempt on the worker it was placed
//! on; anything else is stale and ignored, so each instance's result is recorded exactly
//! once however often a worker or a manager retries. A workflow completes when all its
//! instances completed; one that fails fails the job, which cancels the rest. A
//! workflow starts once every workflow in its `after` list completed.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use shoal_types::Fence;

use crate::LogIndex;

/// Most workflows in one job.
pub const WORKFLOWS_MAX: usize = 256;
/// Most instances of one workflow.
pub const INSTANCES_MAX: u32 = 10_000;
/// Most instances in one job.
pub const JOB_INSTANCES_MAX: u32 = 100_000;
/// Most retries of one instance.
pub const RETRIES_MAX: u32 = 100;
/// Longest timeout, whole job or one instance (7 days).
pub const TIMEOUT_S_MAX: u64 = 7 * 24 * 3600;
/// Kept of an instance's stdout and of its stderr (the tail), in bytes.
pub const OUTPUT_TAIL_BYTES: usize = 4096;
/// Longest error message kept.
pub const ERROR_BYTES_MAX: usize = 1024;
/// Largest spec argument (command, argument, env value, text), in bytes.
pub const ARG_BYTES_MAX: usize = 64 * 1024;
/// Finished jobs kept; beyond it the oldest finished job is forgotten.
pub const FINISHED_JOBS_KEPT: usize = 1_000;

/// What an instance runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Work {
    /// A process: `command` with `args`, extra `env`, in `cwd` (default: the worker's
    /// working directory). A stdout line `::progress N/M` reports progress.
    Exec {
        command: String,
        args: Vec<String>,
        env: BTreeMap<String, String>,
        cwd: Option<String>,
    },
    /// Waits `ms` milliseconds.
    Sleep { ms: u64 },
    /// Prints `text`.
    Echo { text: String },
    /// Fails its first `times` attempts, then succeeds (for retry drills).
    Fail { times: u32 },
    /// Spins the CPU for `iterations` rounds of a hash.
    Cpu { iterations: u64 },
    /// A kind registered by a worker built as a library; `args` is JSON text.
    Custom { kind: String, args: String },
}

impl Work {
    /// The kind's name as written in a job spec.
    pub fn kind(&self) -> &str {
        match self {
            Work::Exec { .. } => "exec",
            Work::Sleep { .. } => "sleep",
            Work::Echo { .. } => "echo",
            Work::Fail { .. } => "fail",
            Work::Cpu { .. } => "cpu",
            Work::Custom { kind, .. } => kind,
        }
    }
}

/// The built-in kinds.
pub const BUILTIN_KINDS: [&str; 5] = ["exec", "sleep", "echo", "fail", "cpu"];

/// The worker tag that says a worker runs custom kind `kind` (`kind.<name>=yes`).
pub fn kind_tag(kind: &str) -> String {
    format!("kind.{kind}")
}

/// One workflow of a job spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowSpec {
    pub name: String,
    pub work: Work,
    /// Parallel copies.
    pub instances: u32,
    /// Cores each instance reserves on its worker.
    pub cores: u32,
    /// Per attempt; None: no limit (the job's timeout still applies).
    pub timeout_s: Option<u64>,
    pub max_retries: u32,
    /// Worker tags that must match exactly.
    pub constraints: BTreeMap<String, String>,
    /// Workflows that must complete before this one starts.
    pub after: Vec<String>,
}

/// A job as submitted (already parsed from TOML or JSON and checked by [`JobSpec::validate`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub name: String,
    /// The whole job; None: no limit.
    pub timeout_s: Option<u64>,
    /// Placement strategy name (`round_robin`, `random`, `least_connections`); None: the
    /// cluster's default.
    pub strategy: Option<String>,
    pub workflows: Vec<WorkflowSpec>,
}

/// A refused job command; nothing was changed. The message names the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum JobError {
    #[error("{field}: {rule}")]
    Invalid { field: String, rule: String },
    #[error("job {0}: no such job")]
    NoSuchJob(String),
    #[error("id: {0} is already used by a different job")]
    IdTaken(String),
}

fn invalid(field: impl Into<String>, rule: impl Into<String>) -> JobError {
    JobError::Invalid {
        field: field.into(),
        rule: rule.into(),
    }
}

/// Checks a name (job, workflow, kind, job id, worker) against shoal's one naming rule
/// ([`shoal_types::validate_name`]); the error names `field`.
pub fn check_name(field: &str, name: &str) -> Result<(), JobError> {
    shoal_types::validate_name(name).map_err(|e| invalid(field, format!("`{name}` {e}")))
}

fn check_len(field: &str, s: &str) -> Result<(), JobError> {
    if s.len() > ARG_BYTES_MAX {
        return Err(invalid(
            field,
            format!("{} bytes, the limit is {ARG_BYTES_MAX}", s.len()),
        ));
    }
    Ok(())
}

fn check_timeout(field: &str, t: Option<u64>) -> Result<(), JobError> {
    match t {
        Some(0) => Err(invalid(field, "must be at least 1 second")),
        Some(t) if t > TIMEOUT_S_MAX => Err(invalid(
            field,
            format!("{t} s, the limit is {TIMEOUT_S_MAX} s (7 days)"),
        )),
        _ => Ok(()),
    }
}

impl Work {
    fn validate(&self, at: &str) -> Result<(), JobError> {
        match self {
            Work::Exec {
                command,
                args,
                env,
                cwd,
            } => {
                if command.trim().is_empty() {
                    return Err(invalid(
                        format!("{at}.args.command"),
                        "must name the program to run",
                    ));
                }
                check_len(&format!("{at}.args.command"), command)?;
                for (i, a) in args.iter().enumerate() {
                    check_len(&format!("{at}.args.args[{i}]"), a)?;
                }
                for (k, v) in env {
                    if k.is_empty() || k.contains('=') || k.contains('\0') {
                        return Err(invalid(
                            format!("{at}.args.env"),
                            format!("`{k}`: a variable name must be non-empty, without = or NUL"),
                        ));
                    }
                    check_len(&format!("{at}.args.env.{k}"), v)?;
                }
                if let Some(c) = cwd {
                    check_len(&format!("{at}.args.cwd"), c)?;
                }
                Ok(())
            }
            Work::Sleep { ms } if *ms > TIMEOUT_S_MAX * 1000 => Err(invalid(
                format!("{at}.args.ms"),
                format!("{ms}, the limit is {} (7 days)", TIMEOUT_S_MAX * 1000),
            )),
            Work::Echo { text } => check_len(&format!("{at}.args.text"), text),
            Work::Fail { times } if *times > RETRIES_MAX + 1 => Err(invalid(
                format!("{at}.args.times"),
                format!("{times}, the limit is {}", RETRIES_MAX + 1),
            )),
            Work::Custom { kind, args } => {
                check_name(&format!("{at}.kind"), kind)?;
                if BUILTIN_KINDS.contains(&kind.as_str()) {
                    return Err(invalid(format!("{at}.kind"), "a built-in kind, not custom"));
                }
                check_len(&format!("{at}.args"), args)
            }
            _ => Ok(()),
        }
    }
}

impl JobSpec {
    /// Checks everything that does not depend on the workers: names, counts, limits,
    /// dependencies (known, no cycle). The error names the field (`workflows[2].cores`).
    pub fn validate(&self) -> Result<(), JobError> {
        check_name("name", &self.name)?;
        check_timeout("timeout_s", self.timeout_s)?;
        if let Some(s) = &self.strategy
            && !STRATEGIES.contains(&s.as_str())
        {
            return Err(invalid(
                "strategy",
                format!("`{s}`: one of {}", STRATEGIES.join(", ")),
            ));
        }
        if self.workflows.is_empty() {
            return Err(invalid("workflows", "at least one workflow is needed"));
        }
        if self.workflows.len() > WORKFLOWS_MAX {
            return Err(invalid(
                "workflows",
                format!("{}, the limit is {WORKFLOWS_MAX}", self.workflows.len()),
            ));
        }
        let mut names = BTreeSet::new();
        let mut total: u64 = 0;
        for (i, w) in self.workflows.iter().enumerate() {
            let at = format!("workflows[{i}]");
            check_name(&format!("{at}.name"), &w.name)?;
            if !names.insert(w.name.as_str()) {
                return Err(invalid(
                    format!("{at}.name"),
                    format!("`{}` is used by an earlier workflow", w.name),
                ));
            }
            w.work.validate(&at)?;
            if w.instances == 0 || w.instances > INSTANCES_MAX {
                return Err(invalid(
                    format!("{at}.instances"),
                    format!("{}: must be 1-{INSTANCES_MAX}", w.instances),
                ));
            }
            total += u64::from(w.instances);
            if w.cores == 0 {
                return Err(invalid(format!("{at}.cores"), "must be at least 1"));
            }
            check_timeout(&format!("{at}.timeout_s"), w.timeout_s)?;
            if w.max_retries > RETRIES_MAX {
                return Err(invalid(
                    format!("{at}.max_retries"),
                    format!("{}, the limit is {RETRIES_MAX}", w.max_retries),
                ));
            }
            for (k, v) in &w.constraints {
                check_name(&format!("{at}.constraints"), k)?;
                check_len(&format!("{at}.constraints.{k}"), v)?;
            }
        }
        if total > u64::from(JOB_INSTANCES_MAX) {
            return Err(invalid(
                "workflows",
                format!("{total} instances in all, the limit is {JOB_INSTANCES_MAX}"),
            ));
        }
        for (i, w) in self.workflows.iter().enumerate() {
            for d in &w.after {
                if !names.contains(d.as_str()) {
                    return Err(invalid(
                        format!("workflows[{i}].after"),
                        format!("`{d}` is not a workflow of this job"),
                    ));
                }
                if d == &w.name {
                    return Err(invalid(
                        format!("workflows[{i}].after"),
                        "a workflow cannot wait for itself",
                    ));
                }
            }
        }
        if let Some(cycle) = self.cycle() {
            return Err(invalid(
                "workflows.after",
                format!("dependency cycle: {}", cycle.join(" -> ")),
            ));
        }
        Ok(())
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.workflows.iter().position(|w| w.name == name)
    }

    /// A dependency cycle, if any, as workflow names (first repeated at the end).
    fn cycle(&self) -> Option<Vec<String>> {
        // 0 unvisited, 1 on the stack, 2 done.
        let n = self.workflows.len();
        let mut mark = vec![0u8; n];
        fn visit(spec: &JobSpec, i: usize, mark: &mut [u8], path: &mut Vec<usize>) -> bool {
            mark[i] = 1;
            path.push(i);
            for d in &spec.workflows[i].after {
                let Some(j) = spec.position(d) else { continue };
                if mark[j] == 1 {
                    path.push(j);
                    return true;
                }
                if mark[j] == 0 && visit(spec, j, mark, path) {
                    return true;
                }
            }
            path.pop();
            mark[i] = 2;
            false
        }
        for i in 0..n {
            let mut path = Vec::new();
            if mark[i] == 0 && visit(self, i, &mut mark, &mut path) {
                let last = *path.last()?;
                let start = path.iter().position(|p| *p == last)?;
                return Some(
                    path[start..]
                        .iter()
                        .map(|p| self.workflows[*p].name.clone())
                        .collect(),
                );
            }
        }
        None
    }
}

/// Strategy names a spec may use.
pub const STRATEGIES: [&str; 3] = ["round_robin", "random", "least_connections"];

/// Lifecycle of a job, a workflow or an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RunState {
    /// Accepted; no scheduling round has seen it yet (jobs only).
    Submitted,
    /// Waiting: for its dependencies, or for a worker with room.
    Queued,
    /// Placed on a worker; the worker has not confirmed the start yet.
    Dispatching,
    Running,
    Completed,
    Failed,
    Cancelled,
    TimedOut,
}

impl RunState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Completed | RunState::Failed | RunState::Cancelled | RunState::TimedOut
        )
    }

    /// Placed and not finished: the instance occupies a worker.
    pub fn is_active(self) -> bool {
        matches!(self, RunState::Dispatching | RunState::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Submitted => "submitted",
            RunState::Queued => "queued",
            RunState::Dispatching => "dispatching",
            RunState::Running => "running",
            RunState::Completed => "completed",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
            RunState::TimedOut => "timed_out",
        }
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One instance's record.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Instance {
    pub state: InstanceState,
    /// Attempts started (the current one, if active).
    pub attempts: u32,
    /// Where the current or last attempt ran.
    pub worker: Option<String>,
    /// The current attempt's fence: (term, index) of the entry that placed it.
    pub fence: Fence,
    /// Workers this instance must not go back to (attempts failed there).
    pub excluded: BTreeSet<String>,
    pub progress: Option<(u64, u64)>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub stdout_tail: String,
    pub stderr_tail: String,
    /// When the current attempt was placed and when the instance finished (leader's
    /// clock, committed with the decision).
    pub placed_ms: u64,
    pub finished_ms: Option<u64>,
}

/// [`RunState`] with a default, for [`Instance`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceState(pub RunState);

impl Default for InstanceState {
    fn default() -> Self {
        Self(RunState::Queued)
    }
}

/// One workflow's run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowRun {
    pub state: RunState,
    pub instances: Vec<Instance>,
}

/// One job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub spec: JobSpec,
    pub state: RunState,
    /// Why it failed, was cancelled or timed out.
    pub reason: Option<String>,
    pub submitted_ms: u64,
    pub finished_ms: Option<u64>,
    pub workflows: Vec<WorkflowRun>,
    /// Log index of the submission (orders jobs).
    pub index: LogIndex,
}

/// Names one instance: job id, workflow position in the spec, instance index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InstanceRef {
    pub job: String,
    pub workflow: u32,
    pub index: u32,
}

impl std::fmt::Display for InstanceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.job, self.workflow, self.index)
    }
}

/// A scheduling decision: this instance's next attempt runs on this worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    pub instance: InstanceRef,
    pub worker: String,
    /// The attempt this starts (the instance's `attempts` + 1); a placement for any
    /// other attempt is stale and ignored.
    pub attempt: u32,
}

/// How an attempt ended, as its worker saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Succeeded,
    Failed,
    TimedOut,
    /// Stopped because it was told to (job cancelled).
    Cancelled,
}

/// What a worker reports about an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    Started,
    Progress {
        done: u64,
        total: u64,
    },
    Finished {
        outcome: Outcome,
        exit_code: Option<i32>,
        error: Option<String>,
        stdout_tail: String,
        stderr_tail: String,
    },
}

/// Placements decided with a submission (see [`JobCommand::Submit`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placing {
    /// The deciding leader's term (the fence is (term, this entry's index)).
    pub term: u64,
    pub places: Vec<Place>,
}

/// One report in a [`JobCommand::Reports`] batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportItem {
    pub instance: InstanceRef,
    pub attempt: u32,
    pub event: Event,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobCommand {
    /// A new job under `id` (idempotent: the same id and spec again changes nothing).
    /// A leader taking the submission itself may place some of its instances at once
    /// (`place`): they are applied exactly as a `Schedule` entry's would be, fenced by
    /// this entry, and only if the job is new.
    Submit {
        id: String,
        spec: JobSpec,
        now_ms: u64,
        place: Option<Placing>,
    },
    /// One scheduling round: placements, and jobs the round has seen (they leave
    /// `submitted`). The entry's (term, index) fences every placement in it.
    Schedule {
        term: u64,
        now_ms: u64,
        places: Vec<Place>,
        seen: Vec<String>,
    },
    /// A worker's report on an attempt.
    Report {
        worker: String,
        instance: InstanceRef,
        attempt: u32,
        event: Event,
        now_ms: u64,
    },
    /// Many reports from one worker in one entry (how workers send results at rate:
    /// one entry per batch, not per attempt). Each item counts exactly as the same
    /// `Report` alone would.
    Reports {
        worker: String,
        reports: Vec<ReportItem>,
        now_ms: u64,
    },
    /// The worker was declared failed (or no longer runs what it was given): its
    /// active attempts (all, or just `only`) failed with `reason`.
    WorkerLost {
        worker: String,
        only: Option<Vec<InstanceRef>>,
        reason: String,
        now_ms: u64,
    },
    /// Stops a job: a user's cancel, or its timeout (`timed_out`).
    Cancel {
        id: String,
        timed_out: bool,
        reason: String,
        now_ms: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobResponse {
    /// `created` false: the id was already taken by this same spec. `scheduled`: the
    /// placements that took effect with it and their fence (see `Scheduled`).
    Submitted {
        id: String,
        created: bool,
        scheduled: Option<(Vec<Place>, Fence)>,
    },
    /// The placements that took effect (the leader dispatches exactly these) and
    /// their fence.
    Scheduled { places: Vec<Place>, fence: Fence },
    /// Whether the report changed anything (false: stale or a duplicate), and whether
    /// the attempt is still the instance's current one on that worker afterwards (false:
    /// it finished, or was replaced — a worker still running it should stop).
    Reported { applied: bool, current: bool },
    /// `Reported` for each item of a `Reports` batch, in order.
    ReportedMany { results: Vec<(bool, bool)> },
    /// Attempts that were active and are not any more (the leader tells their workers
    /// to stop them).
    Stopped { stopped: Vec<(InstanceRef, String)> },
}

/// All jobs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Jobs {
    jobs: BTreeMap<String, Job>,
}

fn tail(s: &str) -> String {
    if s.len() <= OUTPUT_TAIL_BYTES {
        return s.to_string();
    }
    let mut start = s.len() - OUTPUT_TAIL_BYTES;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_string()
}

fn short(s: &str) -> String {
    if s.len() <= ERROR_BYTES_MAX {
        return s.to_string();
    }
    let mut end = ERROR_BYTES_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl Jobs {
    pub fn get(&self, id: &str) -> Option<&Job> {
        self.jobs.get(id)
    }

    /// Jobs in submission order.
    pub fn list(&self) -> Vec<&Job> {
        let mut v: Vec<&Job> = self.jobs.values().collect();
        v.sort_by_key(|j| j.index);
        v
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// Unfinished jobs, in submission order.
    pub fn unfinished(&self) -> impl Iterator<Item = &Job> {
        let mut v: Vec<&Job> = self
            .jobs
            .values()
            .filter(|j| !j.state.is_terminal())
            .collect();
        v.sort_by_key(|j| j.index);
        v.into_iter()
    }

    pub(crate) fn apply(
        &mut self,
        index: LogIndex,
        cmd: &JobCommand,
    ) -> Result<JobResponse, JobError> {
        match cmd {
            JobCommand::Submit {
                id,
                spec,
                now_ms,
                place,
            } => {
                let created = self.submit(index, id, spec, *now_ms)?;
                let scheduled = match place {
                    Some(p) if created => {
                        let mine: Vec<Place> = p
                            .places
                            .iter()
                            .filter(|pl| pl.instance.job == *id)
                            .cloned()
                            .collect();
                        let seen = [id.clone()];
                        match self.schedule(index, p.term, *now_ms, &mine, &seen) {
                            JobResponse::Scheduled { places, fence } => Some((places, fence)),
                            _ => None,
                        }
                    }
                    _ => None,
                };
                Ok(JobResponse::Submitted {
                    id: id.clone(),
                    created,
                    scheduled,
                })
            }
            JobCommand::Schedule {
                term,
                now_ms,
                places,
                seen,
            } => Ok(self.schedule(index, *term, *now_ms, places, seen)),
            JobCommand::Report {
                worker,
                instance,
                attempt,
                event,
                now_ms,
            } => {
                let applied = self.report(worker, instance, *attempt, event, *now_ms);
                if applied && let Some(job) = self.jobs.get_mut(&instance.job) {
                    job.refresh(*now_ms);
                }
                Ok(JobResponse::Reported {
                    applied,
                    current: self.is_current(worker, instance, *attempt),
                })
            }
            JobCommand::Reports {
                worker,
                reports,
                now_ms,
            } => Ok(self.reports(worker, reports, *now_ms)),
            JobCommand::WorkerLost {
                worker,
                only,
                reason,
                now_ms,
            } => Ok(self.worker_lost(worker, only.as_deref(), reason, *now_ms)),
            JobCommand::Cancel {
                id,
                timed_out,
                reason,
                now_ms,
            } => self.cancel(id, *timed_out, reason, *now_ms),
        }
    }

    /// Creates the job; Ok(false): it exists with this same spec.
    fn submit(
        &mut self,
        index: LogIndex,
        id: &str,
        spec: &JobSpec,
        now_ms: u64,
    ) -> Result<bool, JobError> {
        check_name("id", id)?;
        spec.validate()?;
        if let Some(j) = self.jobs.get(id) {
            if &j.spec == spec {
                return Ok(false);
            }
            return Err(JobError::IdTaken(id.to_string()));
        }
        let workflows = spec
            .workflows
            .iter()
            .map(|w| WorkflowRun {
                state: RunState::Queued,
                instances: vec![Instance::default(); w.instances as usize],
            })
            .collect();
        self.jobs.insert(
            id.to_string(),
            Job {
                id: id.to_string(),
                spec: spec.clone(),
                state: RunState::Submitted,
                reason: None,
                submitted_ms: now_ms,
                finished_ms: None,
                workflows,
                index,
            },
        );
        self.forget_old();
        Ok(true)
    }

    /// Keeps at most `FINISHED_JOBS_KEPT` finished jobs (the oldest go first).
    fn forget_old(&mut self) {
        let mut finished: Vec<(LogIndex, &str)> = self
            .jobs
            .values()
            .filter(|j| j.state.is_terminal())
            .map(|j| (j.index, j.id.as_str()))
            .collect();
        if finished.len() <= FINISHED_JOBS_KEPT {
            return;
        }
        let extra = finished.len() - FINISHED_JOBS_KEPT;
        // Only the oldest `extra` need ordering.
        finished.select_nth_unstable(extra - 1);
        let gone: Vec<String> = finished[..extra]
            .iter()
            .map(|(_, id)| id.to_string())
            .collect();
        for id in gone {
            self.jobs.remove(&id);
        }
    }

    /// The instance named by `r`, if its job is known.
    pub fn instance(&self, r: &InstanceRef) -> Option<&Instance> {
        self.jobs
            .get(&r.job)?
            .workflows
            .get(r.workflow as usize)?
            .instances
            .get(r.index as usize)
    }

    /// `attempt` is the instance's current, active attempt and runs on `worker`.
    pub fn is_current(&self, worker: &str, r: &InstanceRef, attempt: u32) -> bool {
        self.instance(r).is_some_and(|i| {
            i.state.0.is_active() && i.attempts == attempt && i.worker.as_deref() == Some(worker)
        })
    }

    fn instance_mut(&mut self, r: &InstanceRef) -> Option<(&mut Job, usize, usize)> {
        let job = self.jobs.get_mut(&r.job)?;
        let (w, i) = (r.workflow as usize, r.index as usize);
        if w >= job.workflows.len() || i >= job.workflows[w].instances.len() {
            return None;
        }
        Some((job, w, i))
    }

    fn schedule(
        &mut self,
        index: LogIndex,
        term: u64,
        now_ms: u64,
        places: &[Place],
        seen: &[String],
    ) -> JobResponse {
        let fence = Fence::new(term, index.0);
        for id in seen {
            if let Some(j) = self.jobs.get_mut(id)
                && j.state == RunState::Submitted
            {
                j.state = RunState::Queued;
            }
        }
        let mut applied = Vec::new();
        let mut touched: BTreeSet<&str> = BTreeSet::new();
        for p in places {
            let Some((job, w, i)) = self.instance_mut(&p.instance) else {
                continue;
            };
            if job.state.is_terminal() || !job.ready(w) {
                continue;
            }
            let inst = &mut job.workflows[w].instances[i];
            if inst.state.0 != RunState::Queued || inst.attempts + 1 != p.attempt {
                continue;
            }
            if inst.excluded.contains(&p.worker) {
                continue;
            }
            inst.state = InstanceState(RunState::Dispatching);
            inst.attempts = p.attempt;
            inst.worker = Some(p.worker.clone());
            inst.fence = fence;
            inst.placed_ms = now_ms;
            inst.progress = None;
            touched.insert(p.instance.job.as_str());
            applied.push(p.clone());
        }
        // Workflow and job states once per job, not per placement (a round places
        // hundreds of one job's instances).
        for id in touched {
            if let Some(job) = self.jobs.get_mut(id) {
                job.refresh(now_ms);
            }
        }
        JobResponse::Scheduled {
            places: applied,
            fence,
        }
    }

    fn report(
        &mut self,
        worker: &str,
        r: &InstanceRef,
        attempt: u32,
        event: &Event,
        now_ms: u64,
    ) -> bool {
        let Some((job, w, i)) = self.instance_mut(r) else {
            return false;
        };
        let max_retries = job.spec.workflows[w].max_retries;
        let inst = &mut job.workflows[w].instances[i];
        let current = inst.state.0.is_active()
            && inst.attempts == attempt
            && inst.worker.as_deref() == Some(worker);
        if !current {
            return false;
        }
        match event {
            Event::Started => {
                if inst.state.0 == RunState::Running {
                    return false;
                }
                inst.state = InstanceState(RunState::Running);
            }
            Event::Progress { done, total } => {
                inst.state = InstanceState(RunState::Running);
                inst.progress = Some((*done, *total));
            }
            Event::Finished {
                outcome,
                exit_code,
                error,
                stdout_tail,
                stderr_tail,
            } => {
                inst.exit_code = *exit_code;
                inst.error = error.as_deref().map(short);
                inst.stdout_tail = tail(stdout_tail);
                inst.stderr_tail = tail(stderr_tail);
                match outcome {
                    Outcome::Succeeded => {
                        inst.state = InstanceState(RunState::Completed);
                        inst.finished_ms = Some(now_ms);
                        inst.error = None;
                    }
                    Outcome::Cancelled => {
                        inst.state = InstanceState(RunState::Cancelled);
                        inst.finished_ms = Some(now_ms);
                    }
                    Outcome::Failed | Outcome::TimedOut => {
                        let end = if *outcome == Outcome::Failed {
                            RunState::Failed
                        } else {
                            RunState::TimedOut
                        };
                        inst.fail_attempt(worker, max_retries, end, now_ms);
                    }
                }
            }
        }
        true
    }

    /// A batch of reports: each counts as alone; each touched job's workflow and job
    /// states are recomputed once, after the batch.
    /// An item whose job was finished by an earlier item in the same batch (a failed
    /// workflow fails the job and cancels the rest) is stale, as it would be alone.
    fn reports(&mut self, worker: &str, items: &[ReportItem], now_ms: u64) -> JobResponse {
        let mut results = Vec::with_capacity(items.len());
        let mut touched: BTreeSet<&str> = BTreeSet::new();
        for item in items {
            let terminal_event = matches!(
                item.event,
                Event::Finished {
                    outcome: Outcome::Failed | Outcome::TimedOut,
                    ..
                }
            );
            let applied = self.report(worker, &item.instance, item.attempt, &item.event, now_ms);
            if applied {
                let id = item.instance.job.as_str();
                touched.insert(id);
                // A failure may end the job (no retries left): settle it now, so later
                // items of this batch see what they would see alone.
                if terminal_event && let Some(job) = self.jobs.get_mut(id) {
                    job.refresh(now_ms);
                }
            }
            results.push((
                applied,
                self.is_current(worker, &item.instance, item.attempt),
            ));
        }
        for id in touched {
            if let Some(job) = self.jobs.get_mut(id) {
                job.refresh(now_ms);
            }
        }
        JobResponse::ReportedMany { results }
    }

    fn worker_lost(
        &mut self,
        worker: &str,
        only: Option<&[InstanceRef]>,
        reason: &str,
        now_ms: u64,
    ) -> JobResponse {
        let mut stopped = Vec::new();
        for job in self.jobs.values_mut() {
            if job.state.is_terminal() {
                continue;
            }
            let mut changed = false;
            for (w, run) in job.workflows.iter_mut().enumerate() {
                let max_retries = job.spec.workflows[w].max_retries;
                for (i, inst) in run.instances.iter_mut().enumerate() {
                    if !inst.state.0.is_active() || inst.worker.as_deref() != Some(worker) {
                        continue;
                    }
                    let r = InstanceRef {
                        job: job.id.clone(),
                        workflow: w as u32,
                        index: i as u32,
                    };
                    if only.is_some_and(|o| !o.contains(&r)) {
                        continue;
                    }
                    inst.error = Some(short(reason));
                    inst.exit_code = None;
                    inst.fail_attempt(worker, max_retries, RunState::Failed, now_ms);
                    stopped.push((r, worker.to_string()));
                    changed = true;
                }
            }
            if changed {
                job.refresh(now_ms);
            }
        }
        JobResponse::Stopped { stopped }
    }

    fn cancel(
        &mut self,
        id: &str,
        timed_out: bool,
        reason: &str,
        now_ms: u64,
    ) -> Result<JobResponse, JobError> {
        let job = self
            .jobs
            .get_mut(id)
            .ok_or_else(|| JobError::NoSuchJob(id.to_string()))?;
        if job.state.is_terminal() {
            return Ok(JobResponse::Stopped {
                stopped: Vec::new(),
            });
        }
        let end = if timed_out {
            RunState::TimedOut
        } else {
            RunState::Cancelled
        };
        let stopped = job.stop_all(now_ms);
        job.finish(end, Some(short(reason)), now_ms);
        Ok(JobResponse::Stopped { stopped })
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        for (id, j) in &self.jobs {
            if &j.id != id {
                return Err(format!("jobs: {id} is filed under another id"));
            }
            if j.workflows.len() != j.spec.workflows.len() {
                return Err(format!("jobs: {id} has runs for a different spec"));
            }
            for (w, run) in j.workflows.iter().enumerate() {
                if run.instances.len() != j.spec.workflows[w].instances as usize {
                    return Err(format!(
                        "jobs: {id} workflow {w} has the wrong instance count"
                    ));
                }
                for inst in &run.instances {
                    if inst.state.0.is_active() && inst.worker.is_none() {
                        return Err(format!("jobs: {id} has an active instance without worker"));
                    }
                    if j.state.is_terminal() && inst.state.0.is_active() {
                        return Err(format!("jobs: finished job {id} has an active instance"));
                    }
                    let allowed = 1 + j.spec.workflows[w].max_retries;
                    if inst.attempts > allowed {
                        return Err(format!(
                            "jobs: {id} ran an instance more often than allowed"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

impl Instance {
    /// The current attempt failed: queue the next one elsewhere, or give up.
    fn fail_attempt(&mut self, worker: &str, max_retries: u32, end: RunState, now_ms: u64) {
        self.excluded.insert(worker.to_string());
        self.progress = None;
        if self.attempts <= max_retries {
            self.state = InstanceState(RunState::Queued);
        } else {
            self.state = InstanceState(end);
            self.finished_ms = Some(now_ms);
        }
    }
}

impl Job {
    /// Whether workflow `w` may run: everything in its `after` list completed.
    pub fn ready(&self, w: usize) -> bool {
        self.spec.workflows[w].after.iter().all(|d| {
            self.spec
                .position(d)
                .is_some_and(|j| self.workflows[j].state == RunState::Completed)
        })
    }

    /// Instances waiting for a worker whose workflow may run, as (ref, next attempt).
    pub fn runnable(&self) -> Vec<(InstanceRef, u32)> {
        self.runnable_up_to(usize::MAX)
    }

    /// The first `limit` of [`runnable`](Self::runnable), in order (a scheduling round
    /// cannot place more than the free cores anyway).
    pub fn runnable_up_to(&self, limit: usize) -> Vec<(InstanceRef, u32)> {
        if self.state.is_terminal() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (w, run) in self.workflows.iter().enumerate() {
            if !self.ready(w) {
                continue;
            }
            for (i, inst) in run.instances.iter().enumerate() {
                if out.len() >= limit {
                    return out;
                }
                if inst.state.0 == RunState::Queued {
                    out.push((
                        InstanceRef {
                            job: self.id.clone(),
                            workflow: w as u32,
                            index: i as u32,
                        },
                        inst.attempts + 1,
                    ));
                }
            }
        }
        out
    }

    /// Active attempts: (ref, attempt, worker, fence).
    pub fn active(&self) -> Vec<(InstanceRef, u32, String, Fence)> {
        let mut out = Vec::new();
        for (w, run) in self.workflows.iter().enumerate() {
            for (i, inst) in run.instances.iter().enumerate() {
                if inst.state.0.is_active()
                    && let Some(worker) = &inst.worker
                {
                    out.push((
                        InstanceRef {
                            job: self.id.clone(),
                            workflow: w as u32,
                            index: i as u32,
                        },
                        inst.attempts,
                        worker.clone(),
                        inst.fence,
                    ));
                }
            }
        }
        out
    }

    /// Stops every unfinished instance; returns the active ones with their workers.
    fn stop_all(&mut self, now_ms: u64) -> Vec<(InstanceRef, String)> {
        let mut stopped = Vec::new();
        for (w, run) in self.workflows.iter_mut().enumerate() {
            for (i, inst) in run.instances.iter_mut().enumerate() {
                if inst.state.0.is_terminal() {
                    continue;
                }
                if inst.state.0.is_active()
                    && let Some(worker) = &inst.worker
                {
                    stopped.push((
                        InstanceRef {
                            job: self.id.clone(),
                            workflow: w as u32,
                            index: i as u32,
                        },
                        worker.clone(),
                    ));
                }
                inst.state = InstanceState(RunState::Cancelled);
                inst.finished_ms = Some(now_ms);
            }
            if !run.state.is_terminal() {
                run.state = RunState::Cancelled;
            }
        }
        stopped
    }

    fn finish(&mut self, end: RunState, reason: Option<String>, now_ms: u64) {
        self.state = end;
        self.reason = reason;
        self.finished_ms = Some(now_ms);
    }

    /// Recomputes workflow and job states after instances changed.
    fn refresh(&mut self, now_ms: u64) {
        if self.state.is_terminal() {
            // Finished is final (recomputing would read its stopped workflows as
            // merely queued).
            return;
        }
        let mut failed: Option<(String, RunState)> = None;
        for (w, run) in self.workflows.iter_mut().enumerate() {
            if run.state.is_terminal() {
                continue;
            }
            let states: Vec<RunState> = run.instances.iter().map(|i| i.state.0).collect();
            run.state = if states.iter().all(|s| *s == RunState::Completed) {
                RunState::Completed
            } else if let Some(bad) = states
                .iter()
                .find(|s| matches!(s, RunState::Failed | RunState::TimedOut))
            {
                failed.get_or_insert((self.spec.workflows[w].name.clone(), *bad));
                *bad
            } else if states.contains(&RunState::Running) {
                RunState::Running
            } else if states.contains(&RunState::Dispatching) {
                RunState::Dispatching
            } else {
                RunState::Queued
            };
        }
        if let Some((name, how)) = failed {
            // One failed workflow fails the job; the rest stop.
            self.stop_all(now_ms);
            self.finish(
                RunState::Failed,
                Some(format!("workflow {name} {how}")),
                now_ms,
            );
            return;
        }
        let states: Vec<RunState> = self.workflows.iter().map(|w| w.state).collect();
        if states.iter().all(|s| *s == RunState::Completed) {
            self.finish(RunState::Completed, None, now_ms);
        } else if states.contains(&RunState::Running) {
            self.state = RunState::Running;
        } else if states.contains(&RunState::Dispatching) {
            self.state = RunState::Dispatching;
        } else if self.state != RunState::Submitted {
            self.state = RunState::Queued;
        }
    }
}

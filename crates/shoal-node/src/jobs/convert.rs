//! The jobs ledger as the public API shows it (protobuf documents).

use shoal_proto::v1::{self as pb};
use shoal_state::jobs::{Job, RunState};

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

pub fn summary(j: &Job) -> pb::JobSummary {
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

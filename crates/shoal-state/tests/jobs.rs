//! The jobs ledger on its own: spec validation, the instance lifecycle, retries,
//! dependencies, stale reports, lost workers, cancellation, and replay determinism.

use std::collections::BTreeMap;

use proptest::prelude::*;
use shoal_state::{
    Command, JobCommand, JobError, JobResponse, Request, Response, State,
    jobs::{Event, InstanceRef, JobSpec, Outcome, Place, ReportItem, RunState, Work, WorkflowSpec},
};
use shoal_types::Fence;

fn wf(name: &str, instances: u32) -> WorkflowSpec {
    WorkflowSpec {
        name: name.into(),
        work: Work::Echo { text: "hi".into() },
        instances,
        cores: 1,
        timeout_s: None,
        max_retries: 0,
        constraints: BTreeMap::new(),
        after: Vec::new(),
    }
}

fn spec(workflows: Vec<WorkflowSpec>) -> JobSpec {
    JobSpec {
        name: "nightly".into(),
        timeout_s: None,
        strategy: None,
        workflows,
    }
}

/// A state and the next log index.
struct Ledger {
    state: State,
    next: u64,
}

impl Ledger {
    fn new() -> Self {
        Self {
            state: State::default(),
            next: 1,
        }
    }

    fn apply(&mut self, cmd: JobCommand) -> Result<JobResponse, JobError> {
        let r = self
            .state
            .apply(
                Fence::new(1, self.next),
                &Request {
                    client: None,
                    command: Command::Jobs(cmd),
                },
            )
            .response;
        self.next += 1;
        self.state.validate().expect("invariants");
        match r {
            Response::Jobs(r) => r,
            other => panic!("unexpected response {other:?}"),
        }
    }

    fn submit(&mut self, id: &str, spec: JobSpec) -> Result<JobResponse, JobError> {
        self.apply(JobCommand::Submit {
            id: id.into(),
            spec,
            now_ms: 1,
            place: None,
        })
    }

    fn place(&mut self, job: &str, w: u32, i: u32, worker: &str, attempt: u32) -> Vec<Place> {
        match self.apply(JobCommand::Schedule {
            term: 1,
            now_ms: 2,
            places: vec![Place {
                instance: r(job, w, i),
                worker: worker.into(),
                attempt,
            }],
            seen: vec![job.into()],
        }) {
            Ok(JobResponse::Scheduled { places, .. }) => places,
            other => panic!("{other:?}"),
        }
    }

    fn report(&mut self, job: &str, w: u32, i: u32, worker: &str, attempt: u32, e: Event) -> bool {
        match self.apply(JobCommand::Report {
            worker: worker.into(),
            instance: r(job, w, i),
            attempt,
            event: e,
            now_ms: 3,
        }) {
            Ok(JobResponse::Reported { applied, .. }) => applied,
            other => panic!("{other:?}"),
        }
    }

    fn state_of(&self, job: &str) -> RunState {
        self.state.jobs.get(job).expect("job").state
    }

    fn instance(&self, job: &str, w: usize, i: usize) -> &shoal_state::jobs::Instance {
        &self.state.jobs.get(job).expect("job").workflows[w].instances[i]
    }
}

fn r(job: &str, w: u32, i: u32) -> InstanceRef {
    InstanceRef {
        job: job.into(),
        workflow: w,
        index: i,
    }
}

fn finished(outcome: Outcome) -> Event {
    Event::Finished {
        outcome,
        exit_code: Some(if outcome == Outcome::Succeeded { 0 } else { 1 }),
        error: (outcome != Outcome::Succeeded).then(|| "boom".to_string()),
        stdout_tail: "out".into(),
        stderr_tail: String::new(),
    }
}

fn field_of(e: JobError) -> String {
    match e {
        JobError::Invalid { field, .. } => field,
        other => panic!("not a validation error: {other:?}"),
    }
}

#[test]
fn bad_specs_are_refused_naming_the_field() {
    let mut zero = spec(vec![wf("a", 1)]);
    zero.workflows[0].instances = 0;
    assert_eq!(
        field_of(zero.validate().unwrap_err()),
        "workflows[0].instances"
    );

    let mut dep = spec(vec![wf("a", 1)]);
    dep.workflows[0].after = vec!["nope".into()];
    assert_eq!(field_of(dep.validate().unwrap_err()), "workflows[0].after");

    let mut cycle = spec(vec![wf("a", 1), wf("b", 1), wf("c", 1)]);
    cycle.workflows[0].after = vec!["c".into()];
    cycle.workflows[1].after = vec!["a".into()];
    cycle.workflows[2].after = vec!["b".into()];
    let e = cycle.validate().unwrap_err();
    assert!(e.to_string().contains("cycle"), "{e}");

    let mut exec = spec(vec![wf("a", 1)]);
    exec.workflows[0].work = Work::Exec {
        command: " ".into(),
        args: vec![],
        env: BTreeMap::new(),
        cwd: None,
    };
    assert_eq!(
        field_of(exec.validate().unwrap_err()),
        "workflows[0].args.command"
    );

    let dup = spec(vec![wf("a", 1), wf("a", 1)]);
    assert_eq!(field_of(dup.validate().unwrap_err()), "workflows[1].name");

    let mut name = spec(vec![wf("a", 1)]);
    name.name = "has space".into();
    assert_eq!(field_of(name.validate().unwrap_err()), "name");

    let mut cores = spec(vec![wf("a", 1)]);
    cores.workflows[0].cores = 0;
    assert_eq!(
        field_of(cores.validate().unwrap_err()),
        "workflows[0].cores"
    );

    let mut strategy = spec(vec![wf("a", 1)]);
    strategy.strategy = Some("fastest".into());
    assert_eq!(field_of(strategy.validate().unwrap_err()), "strategy");

    assert_eq!(
        spec(vec![]).validate().map_err(field_of),
        Err("workflows".into())
    );
}

#[test]
fn a_refused_submission_creates_nothing() {
    let mut l = Ledger::new();
    let mut bad = spec(vec![wf("a", 1)]);
    bad.workflows[0].instances = 0;
    assert!(l.submit("j1", bad).is_err());
    assert!(l.state.jobs.is_empty());
    assert!(l.submit("bad id!", spec(vec![wf("a", 1)])).is_err());
    assert!(l.state.jobs.is_empty());
}

#[test]
fn the_same_id_twice_creates_one_job() {
    let mut l = Ledger::new();
    let s = spec(vec![wf("a", 2)]);
    assert_eq!(
        l.submit("j1", s.clone()),
        Ok(JobResponse::Submitted {
            id: "j1".into(),
            created: true,
            scheduled: None,
        })
    );
    assert_eq!(
        l.submit("j1", s.clone()),
        Ok(JobResponse::Submitted {
            id: "j1".into(),
            created: false,
            scheduled: None,
        })
    );
    assert_eq!(l.state.jobs.len(), 1);
    let mut other = s;
    other.name = "other".into();
    assert_eq!(l.submit("j1", other), Err(JobError::IdTaken("j1".into())));
}

/// A leader may place a new job's instances in its Submit entry: they take effect
/// like a Schedule entry's (fenced by this entry), only for this job's instances, only
/// for workflows that may run, and never for a job that already existed.
#[test]
fn a_submission_may_carry_its_first_placements() {
    let mut l = Ledger::new();
    l.submit("other", spec(vec![wf("a", 1)])).unwrap();
    let mut b = wf("b", 1);
    b.after = vec!["a".into()];
    let s = spec(vec![wf("a", 2), b]);
    let places = vec![
        Place {
            instance: r("j", 0, 0),
            worker: "w1".into(),
            attempt: 1,
        },
        // Waits for `a`: not placed.
        Place {
            instance: r("j", 1, 0),
            worker: "w1".into(),
            attempt: 1,
        },
        // Another job's instance: not this entry's to place.
        Place {
            instance: r("other", 0, 0),
            worker: "w2".into(),
            attempt: 1,
        },
    ];
    let cmd = JobCommand::Submit {
        id: "j".into(),
        spec: s.clone(),
        now_ms: 1,
        place: Some(shoal_state::jobs::Placing {
            term: 7,
            places: places.clone(),
        }),
    };
    let out = l.apply(cmd.clone());
    let index = l.state.last_applied.0;
    assert_eq!(
        out,
        Ok(JobResponse::Submitted {
            id: "j".into(),
            created: true,
            scheduled: Some((vec![places[0].clone()], Fence::new(7, index))),
        })
    );
    let i = l.instance("j", 0, 0);
    assert_eq!(i.state.0, RunState::Dispatching);
    assert_eq!(i.fence, Fence::new(7, index));
    assert_eq!(l.instance("j", 0, 1).state.0, RunState::Queued);
    assert_eq!(l.instance("j", 1, 0).state.0, RunState::Queued);
    assert_eq!(l.instance("other", 0, 0).state.0, RunState::Queued);
    assert_eq!(l.state_of("j"), RunState::Dispatching);
    // The same submission again (a retry): nothing placed again.
    assert_eq!(
        l.apply(cmd),
        Ok(JobResponse::Submitted {
            id: "j".into(),
            created: false,
            scheduled: None,
        })
    );
    assert_eq!(l.instance("j", 0, 0).attempts, 1);
}

#[test]
fn instances_run_to_completion_and_complete_the_job() {
    let mut l = Ledger::new();
    l.submit("j", spec(vec![wf("a", 2)])).unwrap();
    assert_eq!(l.state_of("j"), RunState::Submitted);
    assert_eq!(l.place("j", 0, 0, "w1", 1).len(), 1);
    assert_eq!(l.state_of("j"), RunState::Dispatching);
    assert!(l.report("j", 0, 0, "w1", 1, Event::Started));
    assert_eq!(l.state_of("j"), RunState::Running);
    assert!(l.report("j", 0, 0, "w1", 1, Event::Progress { done: 3, total: 4 }));
    assert_eq!(l.instance("j", 0, 0).progress, Some((3, 4)));
    assert!(l.report("j", 0, 0, "w1", 1, finished(Outcome::Succeeded)));
    assert_eq!(l.instance("j", 0, 0).state.0, RunState::Completed);
    assert_ne!(l.state_of("j"), RunState::Completed, "one instance is left");
    l.place("j", 0, 1, "w2", 1);
    assert!(l.report("j", 0, 1, "w2", 1, finished(Outcome::Succeeded)));
    assert_eq!(l.state_of("j"), RunState::Completed);
    assert_eq!(l.instance("j", 0, 1).stdout_tail, "out");
}

#[test]
fn a_result_is_recorded_once_and_stale_reports_are_ignored() {
    let mut l = Ledger::new();
    let mut w = wf("a", 1);
    w.max_retries = 1;
    l.submit("j", spec(vec![w])).unwrap();
    l.place("j", 0, 0, "w1", 1);
    // Another worker, another attempt: stale.
    assert!(!l.report("j", 0, 0, "w2", 1, Event::Started));
    assert!(!l.report("j", 0, 0, "w1", 2, Event::Started));
    assert!(l.report("j", 0, 0, "w1", 1, finished(Outcome::Failed)));
    // The retry goes elsewhere: w1 is excluded, so placing it there is refused.
    assert!(l.place("j", 0, 0, "w1", 2).is_empty());
    assert_eq!(l.place("j", 0, 0, "w2", 2).len(), 1);
    // The first attempt's late result changes nothing.
    assert!(!l.report("j", 0, 0, "w1", 1, finished(Outcome::Succeeded)));
    assert!(l.report("j", 0, 0, "w2", 2, finished(Outcome::Succeeded)));
    // Delivered twice: applied once.
    assert!(!l.report("j", 0, 0, "w2", 2, finished(Outcome::Succeeded)));
    assert_eq!(l.instance("j", 0, 0).attempts, 2);
    assert_eq!(l.state_of("j"), RunState::Completed);
}

#[test]
fn retries_run_out_and_the_job_fails_stopping_the_rest() {
    let mut l = Ledger::new();
    let mut a = wf("a", 2);
    a.max_retries = 1;
    l.submit("j", spec(vec![a])).unwrap();
    l.place("j", 0, 0, "w1", 1);
    l.place("j", 0, 1, "w3", 1);
    l.report("j", 0, 1, "w3", 1, Event::Started);
    l.report("j", 0, 0, "w1", 1, finished(Outcome::Failed));
    assert_eq!(l.instance("j", 0, 0).state.0, RunState::Queued);
    l.place("j", 0, 0, "w2", 2);
    l.report("j", 0, 0, "w2", 2, finished(Outcome::TimedOut));
    assert_eq!(l.instance("j", 0, 0).state.0, RunState::TimedOut);
    assert_eq!(l.state_of("j"), RunState::Failed);
    assert_eq!(l.instance("j", 0, 1).state.0, RunState::Cancelled);
    let job = l.state.jobs.get("j").unwrap();
    assert!(job.reason.as_deref().unwrap().contains("workflow a"));
    assert_eq!(job.workflows[0].state, RunState::TimedOut);
}

#[test]
fn a_workflow_waits_for_its_dependencies() {
    let mut l = Ledger::new();
    let mut b = wf("b", 1);
    b.after = vec!["a".into()];
    l.submit("j", spec(vec![wf("a", 1), b])).unwrap();
    let runnable = |l: &Ledger| l.state.jobs.get("j").unwrap().runnable();
    assert_eq!(runnable(&l), vec![(r("j", 0, 0), 1)]);
    assert!(l.place("j", 1, 0, "w1", 1).is_empty(), "b must wait for a");
    l.place("j", 0, 0, "w1", 1);
    l.report("j", 0, 0, "w1", 1, finished(Outcome::Succeeded));
    assert_eq!(runnable(&l), vec![(r("j", 1, 0), 1)]);
    assert_eq!(l.place("j", 1, 0, "w1", 1).len(), 1);
}

#[test]
fn a_lost_worker_requeues_its_instances_elsewhere() {
    let mut l = Ledger::new();
    let mut a = wf("a", 2);
    a.max_retries = 2;
    l.submit("j", spec(vec![a])).unwrap();
    l.place("j", 0, 0, "w1", 1);
    l.place("j", 0, 1, "w2", 1);
    let out = l.apply(JobCommand::WorkerLost {
        worker: "w1".into(),
        only: None,
        reason: "worker w1 failed".into(),
        now_ms: 5,
    });
    assert_eq!(
        out,
        Ok(JobResponse::Stopped {
            stopped: vec![(r("j", 0, 0), "w1".into())]
        })
    );
    let i = l.instance("j", 0, 0);
    assert_eq!(i.state.0, RunState::Queued);
    assert!(i.excluded.contains("w1"));
    assert_eq!(l.instance("j", 0, 1).state.0, RunState::Dispatching);
}

#[test]
fn cancel_stops_every_unfinished_instance() {
    let mut l = Ledger::new();
    l.submit("j", spec(vec![wf("a", 3)])).unwrap();
    l.place("j", 0, 0, "w1", 1);
    l.place("j", 0, 1, "w2", 1);
    l.report("j", 0, 1, "w2", 1, finished(Outcome::Succeeded));
    let out = l.apply(JobCommand::Cancel {
        id: "j".into(),
        timed_out: false,
        reason: "cancelled by a user".into(),
        now_ms: 9,
    });
    assert_eq!(
        out,
        Ok(JobResponse::Stopped {
            stopped: vec![(r("j", 0, 0), "w1".into())]
        })
    );
    assert_eq!(l.state_of("j"), RunState::Cancelled);
    assert_eq!(l.instance("j", 0, 0).state.0, RunState::Cancelled);
    assert_eq!(l.instance("j", 0, 1).state.0, RunState::Completed);
    assert_eq!(l.instance("j", 0, 2).state.0, RunState::Cancelled);
    // Nothing runs in a cancelled job.
    assert!(l.place("j", 0, 2, "w1", 1).is_empty());
    assert_eq!(
        l.apply(JobCommand::Cancel {
            id: "nope".into(),
            timed_out: false,
            reason: String::new(),
            now_ms: 9
        }),
        Err(JobError::NoSuchJob("nope".into()))
    );
}

fn command() -> impl Strategy<Value = JobCommand> {
    let inst = (0u32..2, 0u32..3).prop_map(|(w, i)| r("j", w, i));
    let worker = prop_oneof![Just("w1"), Just("w2"), Just("w3")].prop_map(String::from);
    let outcome = prop_oneof![
        Just(Outcome::Succeeded),
        Just(Outcome::Failed),
        Just(Outcome::TimedOut),
        Just(Outcome::Cancelled)
    ];
    prop_oneof![
        4 => (inst.clone(), worker.clone(), 1u32..4).prop_map(|(i, w, a)| JobCommand::Schedule {
            term: 1,
            now_ms: 1,
            places: vec![Place { instance: i, worker: w, attempt: a }],
            seen: vec!["j".into()],
        }),
        2 => (inst.clone(), worker.clone(), 1u32..4).prop_map(|(i, w, a)| JobCommand::Report {
            worker: w,
            instance: i,
            attempt: a,
            event: Event::Started,
            now_ms: 2,
        }),
        4 => (inst, worker.clone(), 1u32..4, outcome).prop_map(|(i, w, a, o)| JobCommand::Report {
            worker: w,
            instance: i,
            attempt: a,
            event: finished(o),
            now_ms: 3,
        }),
        1 => worker.prop_map(|w| JobCommand::WorkerLost {
            worker: w,
            only: None,
            reason: "lost".into(),
            now_ms: 4,
        }),
    ]
}

proptest! {
    /// Any sequence of decisions and reports keeps the invariants (checked after every
    /// command by `Ledger::apply`), never runs an instance more often than 1 +
    /// max_retries, never has a finished job with active instances, and replays to the
    /// same state.
    #[test]
    fn random_decisions_keep_the_ledger_consistent(cmds in prop::collection::vec(command(), 0..80)) {
        let mut a = wf("a", 3);
        a.max_retries = 2;
        let mut b = wf("b", 3);
        b.after = vec!["a".into()];
        b.max_retries = 1;
        let s = spec(vec![a, b]);
        let mut first = Ledger::new();
        first.submit("j", s.clone()).unwrap();
        for c in &cmds {
            let _ = first.apply(c.clone());
        }
        let job = first.state.jobs.get("j").unwrap();
        for (w, run) in job.workflows.iter().enumerate() {
            for inst in &run.instances {
                prop_assert!(inst.attempts <= 1 + job.spec.workflows[w].max_retries);
                if job.state.is_terminal() {
                    prop_assert!(!inst.state.0.is_active());
                }
            }
        }
        let mut again = Ledger::new();
        again.submit("j", s).unwrap();
        for c in &cmds {
            let _ = again.apply(c.clone());
        }
        prop_assert_eq!(first.state, again.state);
    }
}

fn report_item() -> impl Strategy<Value = ReportItem> {
    let outcome = prop_oneof![
        Just(Outcome::Succeeded),
        Just(Outcome::Failed),
        Just(Outcome::TimedOut),
        Just(Outcome::Cancelled)
    ];
    let event = prop_oneof![
        1 => Just(Event::Started),
        1 => (0u64..10).prop_map(|d| Event::Progress { done: d, total: 10 }),
        4 => outcome.prop_map(finished),
    ];
    (
        (0u32..2, 0u32..3).prop_map(|(w, i)| r("j", w, i)),
        1u32..4,
        event,
    )
        .prop_map(|(instance, attempt, event)| ReportItem {
            instance,
            attempt,
            event,
        })
}

proptest! {
    /// A `Reports` batch is exactly its items applied one by one as `Report`s: the
    /// same state afterwards and the same (applied, current) answer per item, whatever
    /// came before (placements, failures, retries) and whatever the batch mixes
    /// (duplicates, stale attempts, a failure that ends the job mid-batch).
    #[test]
    fn a_batch_of_reports_equals_its_reports_alone(
        before in prop::collection::vec(command(), 0..40),
        items in prop::collection::vec(report_item(), 0..12),
    ) {
        // `a` fails the job on its first failure (the case where a batch must settle
        // the job mid-way); `b` retries once.
        let a = wf("a", 3);
        let mut b = wf("b", 3);
        b.after = vec!["a".into()];
        b.max_retries = 1;
        let s = spec(vec![a, b]);
        let mut batched = Ledger::new();
        batched.submit("j", s.clone()).unwrap();
        let mut alone = Ledger::new();
        alone.submit("j", s).unwrap();
        for c in &before {
            let _ = batched.apply(c.clone());
            let _ = alone.apply(c.clone());
        }
        let out = batched.apply(JobCommand::Reports {
            worker: "w1".into(),
            reports: items.clone(),
            now_ms: 5,
        });
        let Ok(JobResponse::ReportedMany { results }) = out else {
            return Err(TestCaseError::fail(format!("unexpected {out:?}")));
        };
        prop_assert_eq!(results.len(), items.len());
        for (item, got) in items.iter().zip(&results) {
            let one = alone.apply(JobCommand::Report {
                worker: "w1".into(),
                instance: item.instance.clone(),
                attempt: item.attempt,
                event: item.event.clone(),
                now_ms: 5,
            });
            let Ok(JobResponse::Reported { applied, current }) = one else {
                return Err(TestCaseError::fail(format!("unexpected {one:?}")));
            };
            prop_assert_eq!(*got, (applied, current));
        }
        // (`last_applied` differs: one entry against one per item.)
        prop_assert_eq!(batched.state.jobs, alone.state.jobs);
    }
}

/// Beyond `FINISHED_JOBS_KEPT` finished jobs, the oldest finished go first; unfinished
/// jobs are never forgotten.
#[test]
fn the_oldest_finished_jobs_are_forgotten() {
    use shoal_state::jobs::FINISHED_JOBS_KEPT;
    let mut l = Ledger::new();
    l.submit("running", spec(vec![wf("a", 1)])).unwrap();
    let n = FINISHED_JOBS_KEPT + 3;
    for i in 0..n {
        let id = format!("j{i:05}");
        l.submit(&id, spec(vec![wf("a", 1)])).unwrap();
        l.apply(JobCommand::Cancel {
            id,
            timed_out: false,
            reason: "done".into(),
            now_ms: 2,
        })
        .unwrap();
    }
    // Forgetting happens at the next submission.
    l.submit("last", spec(vec![wf("a", 1)])).unwrap();
    assert_eq!(l.state.jobs.len(), FINISHED_JOBS_KEPT + 2);
    for gone in ["j00000", "j00001", "j00002"] {
        assert!(l.state.jobs.get(gone).is_none(), "{gone} kept");
    }
    for kept in ["j00003", "running", "last"] {
        assert!(l.state.jobs.get(kept).is_some(), "{kept} forgotten");
    }
}

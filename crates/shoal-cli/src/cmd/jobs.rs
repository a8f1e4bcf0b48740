//! `shoal submit FILE` and `shoal jobs ls|show|cancel|logs`.
//!
//! Exit codes: 0 done (with `--wait`: the job completed); 1 the job failed, was
//! cancelled or timed out, or no server could complete the call; 2 the request was
//! refused as invalid (nothing was created).

use std::{
    io::{IsTerminal, Write},
    process::ExitCode,
    time::{Duration, Instant},
};

use clap::{Args, Subcommand};

use super::{ServerArgs, fail};
use shoal_client::{
    CallError, JobsClient,
    jobs::{is_finished, job_json},
};
use shoal_proto::v1::Job;
use shoal_state::jobspec::Format;
use tokio_stream::StreamExt as _;

#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// The job spec: TOML, or JSON if the name ends in .json (`-`: stdin, TOML or JSON).
    file: String,
    /// Wait for the job to finish, showing live progress per workflow; exit 0 only if
    /// it completed.
    #[arg(long)]
    wait: bool,
    /// Print the job as JSON (with --wait: the final job).
    #[arg(long)]
    json: bool,
    /// Job id (1-64 of A-Z a-z 0-9 _ . -): submitting the same id again creates no
    /// second job. Default: the spec's name and a random suffix.
    #[arg(long)]
    id: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Args, Debug)]
pub struct JobsArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: JobsCommand,
}

#[derive(Subcommand, Debug)]
enum JobsCommand {
    /// List jobs, oldest first.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// One job: its workflows and every instance.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job: running instances are stopped within a second.
    Cancel { id: String },
    /// The tail of each instance's stdout and stderr.
    Logs {
        id: String,
        #[arg(long)]
        workflow: Option<String>,
        #[arg(long)]
        instance: Option<u32>,
    },
}

fn client(args: &ServerArgs) -> Result<JobsClient, ExitCode> {
    let (servers, options) = args.parse()?;
    JobsClient::connect(&servers, options, &super::access::creds()).map_err(|e| fail(&e))
}

fn read_spec(file: &str) -> Result<(String, Format), String> {
    if file == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| format!("-: cannot read stdin: {e}"))?;
        let format = Format::pick("", &text)?;
        return Ok((text, format));
    }
    let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
    Ok((text, Format::of_path(file)))
}

pub async fn submit(args: SubmitArgs) -> ExitCode {
    let client = match client(&args.server) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (text, format) = match read_spec(&args.file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let source = if args.file == "-" {
        "stdin"
    } else {
        args.file.as_str()
    };
    let submitted = match client
        .submit(&text, source, format, args.id.as_deref())
        .await
    {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let job = submitted.job.unwrap_or_default();
    if !args.wait {
        if args.json {
            println!("{}", job_json(&job));
        } else if submitted.created {
            println!("submitted job {} ({})", submitted.id, job.state);
        } else {
            println!(
                "job {} already exists ({}); nothing new was submitted",
                submitted.id, job.state
            );
        }
        return ExitCode::SUCCESS;
    }
    let started = Instant::now();
    let live = std::io::stderr().is_terminal();
    // With --json only the final document is printed.
    let mut view = View::new(live, !args.json);
    if !args.json {
        eprintln!(
            "job {} submitted; following it (Ctrl-C stops following, not the job)",
            submitted.id
        );
    }
    let last = match follow(&client, &submitted.id, job, &mut view).await {
        Ok(j) => j,
        Err(e) => {
            view.clear();
            return fail(&e);
        }
    };
    view.clear();
    if args.json {
        println!("{}", job_json(&last));
    } else {
        print_outcome(&last, started.elapsed());
    }
    if last.state == "completed" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Follows the job until it finishes, moving to another manager when a stream breaks.
async fn follow(
    client: &JobsClient,
    id: &str,
    mut job: Job,
    view: &mut View,
) -> Result<Job, CallError> {
    view.show(&job);
    while !is_finished(&job.state) {
        let mut stream = client.watch(id).await?;
        while let Some(item) = stream.next().await {
            match item {
                Ok(j) => {
                    job = j;
                    view.show(&job);
                    if is_finished(&job.state) {
                        return Ok(job);
                    }
                }
                Err(s) if s.code() == tonic::Code::NotFound => {
                    return Err(CallError::Rejected(s.message().to_string()));
                }
                Err(_) => break,
            }
        }
        // The stream ended early (its manager went away): pick up from another.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(job)
}

/// Live progress: one bar per workflow on a terminal, a line per change otherwise.
struct View {
    bars: Option<(indicatif::MultiProgress, Vec<indicatif::ProgressBar>)>,
    live: bool,
    enabled: bool,
    last_line: Vec<String>,
}

impl View {
    fn new(live: bool, enabled: bool) -> Self {
        Self {
            bars: None,
            live,
            enabled,
            last_line: Vec::new(),
        }
    }

    fn show(&mut self, job: &Job) {
        if !self.enabled {
            return;
        }
        let lines: Vec<String> = job.workflows.iter().map(workflow_line).collect();
        if !self.live {
            for (i, l) in lines.iter().enumerate() {
                if self.last_line.get(i) != Some(l) {
                    eprintln!("{l}");
                }
            }
            self.last_line = lines;
            return;
        }
        let (_, bars) = self.bars.get_or_insert_with(|| {
            let multi = indicatif::MultiProgress::new();
            let style = indicatif::ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {pos}/{len} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
            let bars = job
                .workflows
                .iter()
                .map(|w| {
                    let b = multi.add(indicatif::ProgressBar::new(w.instances.len() as u64));
                    b.set_style(style.clone());
                    b.set_prefix(w.name.clone());
                    b
                })
                .collect();
            (multi, bars)
        });
        for (b, w) in bars.iter().zip(&job.workflows) {
            let done = w
                .instances
                .iter()
                .filter(|i| i.state == "completed")
                .count();
            b.set_position(done as u64);
            b.set_message(counts(w));
        }
    }

    fn clear(&mut self) {
        if let Some((multi, bars)) = self.bars.take() {
            for b in bars {
                b.finish();
            }
            let _ = multi.clear();
        }
    }
}

fn counts(w: &shoal_proto::v1::Workflow) -> String {
    let n = |s: &str| w.instances.iter().filter(|i| i.state == s).count();
    let mut parts = vec![w.state.clone()];
    for (label, state) in [
        ("running", "running"),
        ("dispatching", "dispatching"),
        ("queued", "queued"),
        ("failed", "failed"),
        ("timed out", "timed_out"),
    ] {
        let c = n(state);
        if c > 0 {
            parts.push(format!("{c} {label}"));
        }
    }
    let progress: (u64, u64) = w
        .instances
        .iter()
        .filter(|i| i.state == "running" && i.progress_total > 0)
        .fold((0, 0), |a, i| {
            (a.0 + i.progress_done, a.1 + i.progress_total)
        });
    if progress.1 > 0 {
        parts.push(format!("progress {}/{}", progress.0, progress.1));
    }
    parts.join(", ")
}

fn workflow_line(w: &shoal_proto::v1::Workflow) -> String {
    let done = w
        .instances
        .iter()
        .filter(|i| i.state == "completed")
        .count();
    format!(
        "{}: {done}/{} completed ({})",
        w.name,
        w.instances.len(),
        counts(w)
    )
}

fn print_outcome(job: &Job, took: Duration) {
    let mut out = std::io::stdout().lock();
    let reason = if job.reason.is_empty() {
        String::new()
    } else {
        format!(": {}", job.reason)
    };
    let _ = writeln!(
        out,
        "job {} {} after {:.1} s{reason}",
        job.id,
        job.state,
        took.as_secs_f64()
    );
    for w in &job.workflows {
        for i in &w.instances {
            if matches!(i.state.as_str(), "failed" | "timed_out") {
                let _ = writeln!(
                    out,
                    "  {}[{}] {} on {} after {} attempt(s): {}",
                    w.name, i.index, i.state, i.worker, i.attempts, i.error
                );
            }
        }
    }
}

fn age(ms: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let s = now.saturating_sub(ms) / 1000;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}

pub async fn run(args: JobsArgs) -> ExitCode {
    let client = match client(&args.server) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut out = std::io::stdout().lock();
    match args.command {
        JobsCommand::Ls { json } => match client.list().await {
            Ok(jobs) => {
                if json {
                    let all: Vec<serde_json::Value> = jobs
                        .iter()
                        .map(|j| {
                            serde_json::json!({
                                "id": j.id, "name": j.name, "state": j.state,
                                "instances": j.instances, "completed": j.completed,
                                "running": j.running, "failed": j.failed,
                                "submitted_unix_ms": j.submitted_unix_ms,
                            })
                        })
                        .collect();
                    let _ = writeln!(out, "{}", serde_json::Value::Array(all));
                } else {
                    let _ = writeln!(
                        out,
                        "{:<32} {:<16} {:<11} {:>9} {:>9} {:>8} {:>7} {:>5}",
                        "ID", "NAME", "STATE", "INSTANCES", "COMPLETED", "RUNNING", "FAILED", "AGE"
                    );
                    for j in &jobs {
                        let _ = writeln!(
                            out,
                            "{:<32} {:<16} {:<11} {:>9} {:>9} {:>8} {:>7} {:>5}",
                            j.id,
                            j.name,
                            j.state,
                            j.instances,
                            j.completed,
                            j.running,
                            j.failed,
                            age(j.submitted_unix_ms)
                        );
                    }
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        JobsCommand::Show { id, json } => match client.get(&id).await {
            Ok(job) => {
                if json {
                    let _ = writeln!(out, "{}", job_json(&job));
                } else {
                    let reason = if job.reason.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", job.reason)
                    };
                    let _ = writeln!(out, "job {} ({}): {}{reason}", job.id, job.name, job.state);
                    for w in &job.workflows {
                        let _ = writeln!(out, "  workflow {} [{}]: {}", w.name, w.kind, counts(w));
                        for i in &w.instances {
                            let exit = i.exit_code.map_or(String::new(), |c| format!(" exit {c}"));
                            let err = if i.error.is_empty() {
                                String::new()
                            } else {
                                format!(" — {}", i.error)
                            };
                            let _ = writeln!(
                                out,
                                "    [{}] {:<11} attempts {} worker {}{exit}{err}",
                                i.index,
                                i.state,
                                i.attempts,
                                if i.worker.is_empty() { "-" } else { &i.worker }
                            );
                        }
                    }
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        JobsCommand::Cancel { id } => match client.cancel(&id).await {
            Ok(job) => {
                let _ = writeln!(out, "job {} is {}", job.id, job.state);
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        JobsCommand::Logs {
            id,
            workflow,
            instance,
        } => match client.logs(&id, workflow.as_deref(), instance).await {
            Ok(logs) => {
                for o in &logs.outputs {
                    let _ = writeln!(
                        out,
                        "== {}[{}] (attempt {}, worker {}) ==",
                        o.workflow,
                        o.index,
                        o.attempts,
                        if o.worker.is_empty() { "-" } else { &o.worker }
                    );
                    let _ = out.write_all(o.stdout_tail.as_bytes());
                    for line in o.stderr_tail.lines() {
                        let _ = writeln!(out, "stderr| {line}");
                    }
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
    }
}

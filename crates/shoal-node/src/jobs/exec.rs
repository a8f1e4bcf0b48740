//! Running one attempt of one instance on a worker: the built-in kinds (`exec`,
//! `sleep`, `echo`, `fail`, `cpu`) and custom kinds registered by a program that embeds
//! a worker ([`CustomWork`]).
//!
//! An attempt ends by itself (succeeded or failed) or because it was told to stop
//! (`stop` turns true: cancel, timeout); `exec` then kills the process's whole process
//! group, so children it started stop too.

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use shoal_state::jobs::{OUTPUT_TAIL_BYTES, Outcome, Work};
use tokio::sync::watch;

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub stdout_tail: String,
    pub stderr_tail: String,
}

impl Ended {
    fn ok(stdout: String) -> Self {
        Self {
            outcome: Outcome::Succeeded,
            exit_code: Some(0),
            error: None,
            stdout_tail: stdout,
            stderr_tail: String::new(),
        }
    }

    pub(crate) fn failed(error: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Failed,
            exit_code: None,
            error: Some(error.into()),
            stdout_tail: String::new(),
            stderr_tail: String::new(),
        }
    }

    pub(crate) fn stopped() -> Self {
        Self {
            outcome: Outcome::Cancelled,
            exit_code: None,
            error: Some("stopped".into()),
            stdout_tail: String::new(),
            stderr_tail: String::new(),
        }
    }
}

/// Reports progress (done of total); the caller throttles what it sends on.
pub type ProgressFn = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// What a custom kind gets to run with.
pub struct WorkContext {
    /// The workflow's `args` from the job spec.
    pub args: serde_json::Value,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub progress: ProgressFn,
    /// Turns true when the attempt must stop (cancel or timeout).
    pub stop: watch::Receiver<bool>,
}

/// A workflow kind implemented in Rust by a program that embeds a worker. `Ok` carries
/// the output to keep (its tail), `Err` the failure message.
pub trait CustomWork: Send + Sync + 'static {
    fn run(&self, ctx: WorkContext)
    -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;
}

/// Custom kinds by name.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<String, Arc<dyn CustomWork>>,
    /// Where the worker records its `exec` process groups (set by the worker).
    pub(crate) groups: Option<Arc<super::children::GroupRecords>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.kinds.keys()).finish()
    }
}

impl Registry {
    /// Registers `kind` (1-64 of A-Z a-z 0-9 _ . -, not a built-in name).
    pub fn register(&mut self, kind: &str, work: impl CustomWork) -> Result<(), String> {
        shoal_state::jobs::check_name("kind", kind).map_err(|e| e.to_string())?;
        if shoal_state::jobs::BUILTIN_KINDS.contains(&kind) {
            return Err(format!("kind: `{kind}` is a built-in kind"));
        }
        self.kinds.insert(kind.to_string(), Arc::new(work));
        Ok(())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.kinds.keys().map(String::as_str)
    }
}

/// The last `OUTPUT_TAIL_BYTES` of a stream.
#[derive(Debug, Default)]
struct Tail(String);

impl Tail {
    fn push_line(&mut self, line: &str) {
        self.0.push_str(line);
        self.0.push('\n');
        if self.0.len() > 2 * OUTPUT_TAIL_BYTES {
            let mut cut = self.0.len() - OUTPUT_TAIL_BYTES;
            while !self.0.is_char_boundary(cut) {
                cut += 1;
            }
            self.0.drain(..cut);
        }
    }

    fn take(self) -> String {
        let s = self.0;
        if s.len() <= OUTPUT_TAIL_BYTES {
            return s;
        }
        let mut cut = s.len() - OUTPUT_TAIL_BYTES;
        while !s.is_char_boundary(cut) {
            cut += 1;
        }
        s[cut..].to_string()
    }
}

/// `::progress N/M` on a line of its own.
pub fn parse_progress(line: &str) -> Option<(u64, u64)> {
    let rest = line.trim().strip_prefix("::progress")?.trim();
    let (n, m) = rest.split_once('/')?;
    Some((n.trim().parse().ok()?, m.trim().parse().ok()?))
}

/// Waits until `stop` turns true (never, if its sender is gone without stopping).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Runs one attempt to its end.
pub async fn run(
    work: &Work,
    attempt: u32,
    progress: ProgressFn,
    mut stop: watch::Receiver<bool>,
    registry: &Registry,
) -> Ended {
    match work {
        Work::Echo { text } => Ended::ok(format!("{text}\n")),
        Work::Fail { times } => {
            if attempt <= *times {
                Ended {
                    exit_code: Some(1),
                    ..Ended::failed(format!(
                        "fail: attempt {attempt} fails by design (the first {times} do)"
                    ))
                }
            } else {
                Ended::ok(format!(
                    "attempt {attempt} succeeded after {times} failures\n"
                ))
            }
        }
        Work::Sleep { ms } => {
            let total = *ms;
            let started = tokio::time::Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(1000));
            tick.tick().await;
            let done = tokio::time::sleep(Duration::from_millis(total));
            tokio::pin!(done);
            loop {
                tokio::select! {
                    () = &mut done => return Ended::ok(String::new()),
                    () = stopped(&mut stop) => return Ended::stopped(),
                    _ = tick.tick() => {
                        let elapsed = started.elapsed().as_millis() as u64;
                        progress(elapsed.min(total), total);
                    }
                }
            }
        }
        Work::Cpu { iterations } => {
            let n = *iterations;
            let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let (f, c) = (flag.clone(), count.clone());
            let job = tokio::task::spawn_blocking(move || cpu_spin(n, &f, &c));
            tokio::pin!(job);
            let mut tick = tokio::time::interval(Duration::from_millis(1000));
            tick.tick().await;
            loop {
                tokio::select! {
                    r = &mut job => return match r {
                        Ok(Some(digest)) => Ended::ok(format!("{digest:016x}\n")),
                        Ok(None) => Ended::stopped(),
                        Err(e) => Ended::failed(format!("cpu: {e}")),
                    },
                    () = stopped(&mut stop) => {
                        flag.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    _ = tick.tick() => {
                        progress(count.load(std::sync::atomic::Ordering::Relaxed), n);
                    }
                }
            }
        }
        Work::Exec {
            command,
            args,
            env,
            cwd,
        } => {
            let exec_args = ExecArgs {
                command,
                args,
                env,
                cwd: cwd.as_deref(),
            };
            exec(exec_args, progress, stop, registry.groups.as_ref()).await
        }
        Work::Custom { kind, args } => {
            let Some(w) = registry.kinds.get(kind) else {
                return Ended::failed(format!("kind: `{kind}` is not registered on this worker"));
            };
            let args = match serde_json::from_str(args) {
                Ok(v) => v,
                Err(e) => return Ended::failed(format!("args: {e}")),
            };
            let ctx = WorkContext {
                args,
                attempt,
                progress,
                stop: stop.clone(),
            };
            tokio::select! {
                r = w.run(ctx) => match r {
                    Ok(out) => Ended::ok(Tail(out).take()),
                    Err(e) => Ended::failed(e),
                },
                () = stopped(&mut stop) => Ended::stopped(),
            }
        }
    }
}

/// `iterations` rounds of a 64-bit mix; None if stopped first.
fn cpu_spin(
    iterations: u64,
    stop: &std::sync::atomic::AtomicBool,
    count: &std::sync::atomic::AtomicU64,
) -> Option<u64> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..iterations {
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= i;
        if i % 65_536 == 0 {
            count.store(i, std::sync::atomic::Ordering::Relaxed);
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return None;
            }
        }
    }
    Some(x)
}

/// What an `exec` workflow runs.
struct ExecArgs<'a> {
    command: &'a str,
    args: &'a [String],
    env: &'a BTreeMap<String, String>,
    cwd: Option<&'a str>,
}

async fn exec(
    a: ExecArgs<'_>,
    progress: ProgressFn,
    mut stop: watch::Receiver<bool>,
    groups: Option<&Arc<super::children::GroupRecords>>,
) -> Ended {
    use super::children::{GroupGuard, kill_group, read_lines, scrub_env};
    let ExecArgs {
        command,
        args,
        env,
        cwd,
    } = a;
    let mut cmd = tokio::process::Command::new(command);
    scrub_env(&mut cmd);
    cmd.args(args)
        .envs(env)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // Its own process group: a stop kills everything it started.
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Ended::failed(format!("exec: cannot start `{command}`: {e}")),
    };
    let pgid = child.id();
    // Dropped with the attempt (the worker stops): the whole group dies, not only the
    // direct child (kill_on_drop).
    let guard = match groups {
        Some(g) => g.guard(pgid),
        None => GroupGuard::unrecorded(pgid),
    };
    let out = Arc::new(Mutex::new(Tail::default()));
    let err = Arc::new(Mutex::new(Tail::default()));
    let mut readers = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        let (out, progress) = (out.clone(), progress.clone());
        readers.push(tokio::spawn(async move {
            read_lines(stdout, |line| {
                if let Some((n, m)) = parse_progress(line) {
                    progress(n, m);
                }
                out.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_line(line);
            })
            .await;
        }));
    }
    if let Some(stderr) = child.stderr.take() {
        let err = err.clone();
        readers.push(tokio::spawn(async move {
            read_lines(stderr, |line| {
                err.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_line(line);
            })
            .await;
        }));
    }
    let (status, was_stopped) = tokio::select! {
        s = child.wait() => (s, false),
        () = stopped(&mut stop) => {
            kill_group(pgid);
            (child.wait().await, true)
        }
    };
    guard.finished();
    // Output still buffered in the pipes is read to the end (bounded: the group is dead
    // or the process exited; a grandchild holding the pipe open gets a short grace).
    for r in readers {
        let _ = tokio::time::timeout(Duration::from_millis(500), r).await;
    }
    let take = |t: &Arc<Mutex<Tail>>| {
        std::mem::take(&mut *t.lock().unwrap_or_else(|p| p.into_inner())).take()
    };
    let (stdout_tail, stderr_tail) = (take(&out), take(&err));
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            return Ended {
                stdout_tail,
                stderr_tail,
                ..Ended::failed(format!("exec: waiting for `{command}`: {e}"))
            };
        }
    };
    if was_stopped {
        return Ended {
            stdout_tail,
            stderr_tail,
            exit_code: status.code(),
            ..Ended::stopped()
        };
    }
    use std::os::unix::process::ExitStatusExt as _;
    let (outcome, error) = match (status.code(), status.signal()) {
        (Some(0), _) => (Outcome::Succeeded, None),
        (Some(c), _) => (Outcome::Failed, Some(format!("exited with {c}"))),
        (None, Some(sig)) => (Outcome::Failed, Some(format!("killed by signal {sig}"))),
        (None, None) => (Outcome::Failed, Some("ended without a status".into())),
    };
    Ended {
        outcome,
        exit_code: status.code(),
        error,
        stdout_tail,
        stderr_tail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_progress() -> ProgressFn {
        Arc::new(|_, _| {})
    }

    #[test]
    fn progress_lines_parse() {
        assert_eq!(parse_progress("::progress 3/10"), Some((3, 10)));
        assert_eq!(parse_progress("  ::progress 3 / 10 "), Some((3, 10)));
        assert_eq!(parse_progress("progress 3/10"), None);
        assert_eq!(parse_progress("::progress x/10"), None);
    }

    #[tokio::test]
    async fn fail_fails_its_first_attempts() {
        let (_tx, rx) = watch::channel(false);
        let r = Registry::default();
        let w = Work::Fail { times: 2 };
        assert_eq!(
            run(&w, 2, no_progress(), rx.clone(), &r).await.outcome,
            Outcome::Failed
        );
        assert_eq!(
            run(&w, 3, no_progress(), rx, &r).await.outcome,
            Outcome::Succeeded
        );
    }

    #[tokio::test]
    async fn exec_keeps_output_exit_code_and_progress() {
        let (_tx, rx) = watch::channel(false);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let progress: ProgressFn = Arc::new(move |n, m| s.lock().unwrap().push((n, m)));
        let w = Work::Exec {
            command: "sh".into(),
            args: vec![
                "-c".into(),
                "echo ::progress 1/2; echo hello; echo oops >&2; exit 3".into(),
            ],
            env: BTreeMap::new(),
            cwd: None,
        };
        let e = run(&w, 1, progress, rx, &Registry::default()).await;
        assert_eq!(e.outcome, Outcome::Failed);
        assert_eq!(e.exit_code, Some(3));
        assert!(e.stdout_tail.contains("hello"), "{e:?}");
        assert_eq!(e.stderr_tail, "oops\n");
        assert_eq!(*seen.lock().unwrap(), vec![(1, 2)]);
    }

    /// Starts a shell that starts a 30 s grandchild and waits; returns the attempt's
    /// task, its stop switch and the grandchild's pid.
    async fn grandchild_attempt(
        dir: &std::path::Path,
        groups: Option<Arc<crate::jobs::children::GroupRecords>>,
    ) -> (tokio::task::JoinHandle<Ended>, watch::Sender<bool>, i32) {
        let (tx, rx) = watch::channel(false);
        std::fs::create_dir_all(dir).unwrap();
        let pidfile = dir.join("child.pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let w = Work::Exec {
            command: "sh".into(),
            args: vec!["-c".into(), script],
            env: BTreeMap::new(),
            cwd: None,
        };
        let reg = Registry {
            groups,
            ..Registry::default()
        };
        let task = tokio::spawn(async move { run(&w, 1, no_progress(), rx, &reg).await });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let pid: i32 = loop {
            if let Ok(t) = std::fs::read_to_string(&pidfile)
                && let Ok(p) = t.trim().parse()
            {
                break p;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the script never started"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        (task, tx, pid)
    }

    /// Waits until `pid` is gone (or a zombie awaiting its reaper).
    pub(crate) async fn wait_gone(pid: i32, what: &str) {
        let proc = std::path::PathBuf::from(format!("/proc/{pid}"));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while proc.exists() {
            let zombie = std::fs::read_to_string(proc.join("stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true);
            if zombie {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: {pid} survived"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_stopped_exec_kills_its_whole_process_group() {
        let dir = std::env::temp_dir().join(format!("shoal-exec-{}", std::process::id()));
        let (task, tx, pid) = grandchild_attempt(&dir, None).await;
        tx.send(true).unwrap();
        // The shell waits on a 30 s sleep: only killing the group ends it this soon.
        let e = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the stopped attempt ended")
            .unwrap();
        assert_eq!(e.outcome, Outcome::Cancelled);
        wait_gone(pid, "the grandchild after a stop").await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A worker that stops drops its attempts: the whole group dies with the attempt,
    /// not only the direct child, and the record of the group is removed.
    #[tokio::test]
    async fn a_dropped_attempt_kills_its_whole_process_group() {
        let dir = std::env::temp_dir().join(format!("shoal-exec-drop-{}", std::process::id()));
        let records = crate::jobs::children::GroupRecords::open(&dir).unwrap();
        let (task, _tx, pid) = grandchild_attempt(&dir, Some(records)).await;
        let recorded = std::fs::read_dir(dir.join("exec-groups")).unwrap().count();
        assert_eq!(recorded, 1, "the running group is recorded");
        task.abort();
        let _ = task.await;
        wait_gone(pid, "the grandchild after the attempt was dropped").await;
        let recorded = std::fs::read_dir(dir.join("exec-groups")).unwrap().count();
        assert_eq!(recorded, 0, "the record goes with the group");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

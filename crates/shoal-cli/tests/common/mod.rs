//! Process-test harness: real `shoal node` processes on loopback with ephemeral ports.
//! Every wait polls a condition against a deadline; nothing sleeps a fixed time.

#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use shoal_client::AdminClient;
use shoal_types::{MemberState, status::StatusDoc};

pub const KEY: &str = "1111111111111111111111111111111111111111111111111111111111111111";

/// The binary, with none of the caller's security settings leaking in (the CLI would
/// otherwise pick up a CA or token from the environment).
pub fn shoal() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    for var in [
        "SHOAL_CA",
        "SHOAL_TOKEN",
        "SHOAL_CERT",
        "SHOAL_CERT_KEY",
        "SHOAL_TLS_DIR",
        "SHOAL_INSECURE",
        "SHOAL_BOOTSTRAP_TOKEN",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// One running `shoal node`; killed when dropped.
pub struct Proc {
    pub id: String,
    pub tcp: SocketAddr,
    pub child: Child,
    pub data_dir: tempdir::Dir,
}

pub mod tempdir {
    use std::{
        path::{Path, PathBuf},
        sync::Arc,
    };

    /// A temporary directory, removed when the last handle on it is dropped (a restarted
    /// node reuses its predecessor's directory).
    #[derive(Clone)]
    pub struct Dir(Arc<Owned>);

    struct Owned(PathBuf);

    impl Drop for Owned {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    impl Dir {
        pub fn new(tag: &str) -> Self {
            let n = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let p =
                std::env::temp_dir().join(format!("shoal-test-{tag}-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&p).expect("create temp dir");
            Self(Arc::new(Owned(p)))
        }

        pub fn path(&self) -> &Path {
            &self.0.0
        }
    }
}

/// Starts a node and waits for its "listening" line (which carries the real ports).
pub fn start_node(id: &str, listen: &str, seeds: &[SocketAddr], key: Option<&str>) -> Proc {
    start_node_in(id, listen, seeds, key, tempdir::Dir::new(id), &[])
}

pub fn start_node_in(
    id: &str,
    listen: &str,
    seeds: &[SocketAddr],
    key: Option<&str>,
    data_dir: tempdir::Dir,
    extra: &[&str],
) -> Proc {
    start_node_with(shoal(), id, listen, seeds, key, data_dir, extra)
}

/// Like [`start_node_in`], through `cmd` (`shoal` itself, or a wrapper such as `ip
/// netns exec NS shoal`).
pub fn start_node_with(
    mut cmd: Command,
    id: &str,
    listen: &str,
    seeds: &[SocketAddr],
    key: Option<&str>,
    data_dir: tempdir::Dir,
    extra: &[&str],
) -> Proc {
    cmd.args([
        "node",
        "--role",
        "worker",
        "--id",
        id,
        "--listen",
        listen,
        "--profile",
        "local",
    ])
    .arg("--data-dir")
    .arg(data_dir.path())
    .args(extra)
    .env_remove("SHOAL_CLUSTER_KEY")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if !seeds.is_empty() {
        let s: Vec<String> = seeds.iter().map(|a| a.to_string()).collect();
        cmd.args(["--seeds", &s.join(",")]);
    }
    // Functional tests run plaintext on purpose; tests/secure.rs gives --tls-dir.
    if !extra.contains(&"--tls-dir") {
        cmd.arg("--insecure");
    }
    if let Some(k) = key {
        cmd.env("SHOAL_CLUSTER_KEY", k);
    }
    let mut child = cmd.spawn().expect("spawn shoal node");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read ready line");
    let tcp = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("tcp="))
        .unwrap_or_else(|| panic!("{id}: no ready line, got {line:?}"))
        .parse()
        .expect("tcp address");
    Proc {
        id: id.to_string(),
        tcp,
        child,
        data_dir,
    }
}

impl Proc {
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    pub fn client(&self) -> AdminClient {
        AdminClient::new(self.tcp.to_string()).with_timeout(Duration::from_millis(800))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Polls `check` every 50 ms until it holds or `timeout` passes.
pub fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {timeout:?} waiting for: {what}");
}

pub fn status(p: &Proc) -> Option<StatusDoc> {
    rt().block_on(p.client().status()).ok()
}

/// How `observer` sees member `id`.
pub fn state_of(observer: &Proc, id: &str) -> Option<MemberState> {
    status(observer)?
        .members
        .into_iter()
        .find(|m| m.id == id)
        .map(|m| m.state)
}

/// Flags of a manager that forms a 3-manager group.
pub const MANAGER_ARGS: &[&str] = &["--role", "manager", "--bootstrap-expect", "3"];

/// Three managers (m1, m2, m3) on ephemeral ports, each with its own data directory.
pub fn start_managers() -> [Proc; 3] {
    let m1 = start_node_in(
        "m1",
        "127.0.0.1:0",
        &[],
        Some(KEY),
        tempdir::Dir::new("m1"),
        MANAGER_ARGS,
    );
    let seeds = [m1.tcp];
    let m2 = start_node_in(
        "m2",
        "127.0.0.1:0",
        &seeds,
        Some(KEY),
        tempdir::Dir::new("m2"),
        MANAGER_ARGS,
    );
    let m3 = start_node_in(
        "m3",
        "127.0.0.1:0",
        &seeds,
        Some(KEY),
        tempdir::Dir::new("m3"),
        MANAGER_ARGS,
    );
    [m1, m2, m3]
}

/// Restarts a stopped node on its old address and data directory.
pub fn restart(p: &Proc, seeds: &[SocketAddr], extra: &[&str]) -> Proc {
    start_node_in(
        &p.id,
        &p.tcp.to_string(),
        seeds,
        Some(KEY),
        p.data_dir.clone(),
        extra,
    )
}

/// (leader id, term, role) from a manager's `raft` status section.
pub fn raft_view(p: &Proc) -> Option<(String, u64, String)> {
    let doc = status(p)?;
    let raft = doc.raft?;
    Some((
        raft["leader_id"].as_str()?.to_string(),
        raft["term"].as_u64()?,
        raft["role"].as_str()?.to_string(),
    ))
}

/// The leader every node in `nodes` agrees on, if they do.
pub fn agreed_leader(nodes: &[&Proc]) -> Option<String> {
    let views: Vec<_> = nodes.iter().map(|p| raft_view(p)).collect::<Option<_>>()?;
    let first = views.first()?.0.clone();
    views.iter().all(|v| v.0 == first).then_some(first)
}

/// Waits until all `nodes` agree on one leader and returns its id.
pub fn wait_for_leader(nodes: &[Proc]) -> String {
    let mut leader = String::new();
    wait_for("one leader agreed by all", Duration::from_secs(30), || {
        agreed_leader(&nodes.iter().collect::<Vec<_>>()).is_some_and(|l| {
            leader = l;
            true
        })
    });
    leader
}

/// Reads a child's stdout lines on a thread, so tests can wait with a deadline.
pub fn line_reader(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

pub fn expect_line(
    rx: &std::sync::mpsc::Receiver<String>,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if pred(&line) => return line,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!("no line with {what}; saw {seen:#?}");
}

/// `shoal ARGS` run in `cwd`; (exit code, stdout, stderr).
pub fn run_in(
    cwd: &std::path::Path,
    args: &[&str],
    extra_env: &[(&str, &str)],
) -> (i32, String, String) {
    let mut cmd = shoal();
    cmd.current_dir(cwd)
        .args(args)
        .stdin(std::process::Stdio::null());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run shoal");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn ok(cwd: &std::path::Path, args: &[&str]) -> String {
    let (code, out, err) = run_in(cwd, args, &[]);
    assert_eq!(code, 0, "shoal {args:?}: {err}{out}");
    out
}

/// A `shoal dev` run in `cwd` (its data, CA and token under `cwd/.shoal/dev`, where the
/// CLI run from `cwd` finds them), on a base port unlikely to be in use (the dev command
/// refuses busy ports up front). Stopped with SIGTERM when dropped, so a failing test
/// leaves no cluster behind.
pub struct Dev {
    pub child: std::process::Child,
    pub lines: std::sync::mpsc::Receiver<String>,
    pub base: u16,
}

impl Dev {
    /// `counts`: managers, gates, workers.
    pub fn start(cwd: &std::path::Path, counts: [u32; 3], port_block: u16) -> Self {
        let base = port_block + (std::process::id() % 400) as u16 * 20;
        let [m, g, w] = counts.map(|c| c.to_string());
        let mut child = shoal()
            .current_dir(cwd)
            .args(["dev", "--managers", &m, "--gates", &g, "--workers", &w])
            .args(["--base-port", &base.to_string()])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn shoal dev");
        let lines = line_reader(child.stdout.take().expect("piped stdout"));
        Self { child, lines, base }
    }

    /// The first line `pred` accepts (waiting up to 20 s).
    pub fn expect(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        expect_line(&self.lines, what, pred)
    }

    pub fn sigterm(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.sigterm();
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

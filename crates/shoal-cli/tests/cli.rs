//! The CLI's long-running commands as a user runs them: `shoal events` and `shoal dev`.

mod common;

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use common::*;

const LONG: Duration = Duration::from_secs(20);

/// `shoal events` prints one line per membership event: a join, then a failure.
#[test]
fn events_prints_joins_and_failures() {
    let a = start_node("e0", "127.0.0.1:0", &[], Some(KEY));
    let mut follower = shoal()
        .args(["events", "--addr", &a.tcp.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = line_reader(follower.stdout.take().unwrap());
    // The stream is open once the node answers; a joiner started now is seen.
    wait_for("the event stream is up", LONG, || status(&a).is_some());
    std::thread::sleep(Duration::from_millis(200));
    let mut b = start_node("e1", "127.0.0.1:0", &[a.tcp], Some(KEY));
    let joined = expect_line(&lines, "NodeJoined e1", |l| {
        l.contains("NodeJoined") && l.contains(" e1 ")
    });
    assert!(joined.contains("state=alive"), "{joined}");
    // The join is announced as soon as a hears of e1; its metadata (role, dc) follows
    // by gossip. Kill e1 only once a has it, so the failure line can name them.
    wait_for("a has e1's metadata", LONG, || {
        status(&a).is_some_and(|s| s.members.iter().any(|m| m.id == "e1" && !m.role.is_empty()))
    });
    b.kill9();
    let failed = expect_line(&lines, "NodeFailed e1", |l| {
        l.contains("NodeFailed") && l.contains(" e1 ")
    });
    assert!(failed.contains("(worker, dc1)"), "{failed}");
    let _ = follower.kill();
    let _ = follower.wait();
}

/// `shoal dev` with a small cluster: prints the table and HEALTHY once all are alive,
/// reports a child that dies, and on SIGTERM stops every child within 10 s, freeing
/// every port.
#[test]
fn dev_starts_supervises_and_stops_cleanly() {
    let dir = tempdir::Dir::new("dev");
    let mut dev = Dev::start(dir.path(), [2, 1, 1], 20_000);
    let (lines, base) = (&dev.lines, dev.base);
    expect_line(lines, "the verdict", |l| l == "HEALTHY");
    let pids = expect_line(lines, "the pid line", |l| l.starts_with("pids: "));
    let w1 = pids
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("w1="))
        .unwrap_or_else(|| panic!("no w1 in {pids}"));
    let killed = std::process::Command::new("kill")
        .args(["-9", w1])
        .status()
        .unwrap();
    assert!(killed.success());
    expect_line(lines, "w1 reported", |l| {
        l.contains("w1 exited") && l.contains("not restarting")
    });
    let sent = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &dev.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    loop {
        if dev.child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "shoal dev still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for port in [base, base + 2, base + 100, base + 200] {
        wait_for(
            &format!("port {port} is free"),
            Duration::from_secs(5),
            || std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        );
    }
}

/// Even when `shoal dev` is killed with SIGKILL (no chance to stop its children), the
/// children notice and leave, freeing their ports.
#[test]
fn dev_children_do_not_outlive_a_killed_supervisor() {
    let dir = tempdir::Dir::new("dev-kill");
    let mut dev = Dev::start(dir.path(), [1, 0, 1], 24_000);
    let (lines, base) = (&dev.lines, dev.base);
    expect_line(lines, "the verdict", |l| l == "HEALTHY");
    dev.child.kill().unwrap();
    dev.child.wait().unwrap();
    for port in [base, base + 200] {
        wait_for(
            &format!("port {port} is free"),
            Duration::from_secs(10),
            || std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        );
    }
}

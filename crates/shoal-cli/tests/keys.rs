//! The gossip key rotated at run time on a secure `shoal dev` cluster with `shoal keys`:
//! install the new key everywhere, use it, remove the old one — while writes go on, no
//! member is ever suspected or failed; afterwards a node holding only the old key is
//! not let in (its packets are dropped as sealed with an unknown key), and a restarted
//! node keeps the rotated keyring.

mod common;

use std::{path::Path, process::Stdio, time::Duration};

use common::*;

#[test]
fn keys_rotate_under_traffic_with_no_member_lost() {
    let dir = tempdir::Dir::new("keys");
    let cwd = dir.path();
    let dev = Dev::start(cwd, [3, 0, 1], 28_000);
    let (lines, base) = (&dev.lines, dev.base);
    expect_line(lines, "the verdict", |l| l == "HEALTHY");
    let pids = expect_line(lines, "the pid line", |l| l.starts_with("pids: "));
    let w1_pid = pids
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("w1="))
        .unwrap_or_else(|| panic!("no w1 in {pids}"))
        .to_string();
    let key_line = expect_line(lines, "the key line", |l| l.starts_with("cluster key: "));
    let old = key_line.split_whitespace().nth(2).unwrap().to_string();
    let addr = format!("127.0.0.1:{base}");
    let servers = format!("127.0.0.1:{base},127.0.0.1:{}", base + 2);

    // Every membership change from here on, as JSON lines.
    let mut events = shoal()
        .current_dir(cwd)
        .args(["events", "--json", "--addr", &addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let event_lines = line_reader(events.stdout.take().unwrap());

    let new = {
        let out = ok(cwd, &["keygen"]);
        out.trim().to_string()
    };
    let before = ok(cwd, &["keys", "ls", "--addr", &addr]);
    assert!(
        before.contains(" 4/4 "),
        "one key on all 4 members: {before}"
    );
    for (step, args) in [
        ("install", vec!["keys", "install", new.as_str()]),
        ("use", vec!["keys", "use", new.as_str()]),
        ("remove", vec!["keys", "remove", old.as_str()]),
    ] {
        let out = ok(cwd, &[&args[..], &["--addr", &addr]].concat());
        assert_eq!(
            out.lines().filter(|l| l.contains(": ok")).count(),
            4,
            "{step}: {out}"
        );
        // Traffic between the steps: writes through the managers.
        for i in 0..5 {
            ok(
                cwd,
                &[
                    "kv",
                    "put",
                    &format!("{step}-{i}"),
                    "v",
                    "--servers",
                    &servers,
                ],
            );
        }
    }
    let after = ok(cwd, &["keys", "ls", "--addr", &addr]);
    assert_eq!(
        after.lines().count(),
        2,
        "only the new key is left: {after}"
    );
    let status = ok(cwd, &["status", "--addr", &addr]);
    assert!(status.contains("HEALTHY"), "{status}");
    // Gossip still carries news under the new key alone: a tag set on w1 reaches m1.
    let w1 = format!("127.0.0.1:{}", base + 200);
    ok(cwd, &["tag", "set", "rotated=yes", "--addr", &w1]);
    wait_for("w1's new tag reaches m1", Duration::from_secs(20), || {
        members(cwd, &addr).any(|m| m["id"] == "w1" && m["tags"]["rotated"] == "yes")
    });
    // Removing the key in use is refused, naming the way out.
    let out = shoal()
        .current_dir(cwd)
        .args(["keys", "remove", &new, "--addr", &addr])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another key first"));

    // No member was suspected or failed at any point of the rotation.
    let mut seen = Vec::new();
    while let Ok(line) = event_lines.recv_timeout(Duration::from_millis(200)) {
        seen.push(line);
    }
    for line in &seen {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        let state = e["member"]["state"].as_str().unwrap_or_default();
        assert!(
            e["kind"] != "NodeFailed" && state != "suspect" && state != "failed",
            "a member was lost during the rotation: {line}"
        );
    }
    let _ = events.kill();
    let _ = events.wait();

    // A node with only the old key: its packets are refused (unknown key), it stays out.
    ok(
        cwd,
        &["certs", "issue", "--dir", ".shoal/dev/tls", "--node", "x9"],
    );
    let stranger = start_node_with(
        {
            let mut cmd = shoal();
            cmd.current_dir(cwd);
            cmd
        },
        "x9",
        "127.0.0.1:0",
        &[addr.parse().unwrap()],
        Some(&old),
        tempdir::Dir::new("x9"),
        &["--tls-dir", ".shoal/dev/tls"],
    );
    let dropped = || {
        let x9_in = members(cwd, &addr).any(|m| m["id"] == "x9");
        let metrics = rt()
            .block_on(
                shoal_client::AdminClient::new(addr.clone())
                    .with_credentials(creds(cwd))
                    .get_text("/metrics"),
            )
            .unwrap_or_default();
        let unknown = metrics
            .lines()
            .filter(|l| l.contains("reason=\"unknown_key\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
        (unknown, x9_in)
    };
    wait_for(
        "the old key's packets are dropped",
        Duration::from_secs(20),
        || dropped().0 > 0.0,
    );
    assert!(!dropped().1, "a node with the removed key got in");
    drop(stranger);

    // w1 restarted by hand with the OLD key in its config: its keyring file (the new
    // key) wins, and it is back.
    let killed = std::process::Command::new("kill")
        .args(["-9", &w1_pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let alive = |id: &str| members(cwd, &addr).any(|m| m["id"] == id && m["state"] == "alive");
    wait_for("w1 is seen gone", Duration::from_secs(20), || !alive("w1"));
    let w1_dir = tempdir::Dir::new("w1-unused");
    let _w1 = start_node_with(
        {
            let mut cmd = shoal();
            cmd.current_dir(cwd);
            cmd
        },
        "w1",
        &format!("127.0.0.1:{}", base + 200),
        &[addr.parse().unwrap()],
        Some(&old),
        w1_dir,
        &["--tls-dir", ".shoal/dev/tls", "--data-dir", ".shoal/dev/w1"],
    );
    wait_for(
        "w1 is back with the rotated key",
        Duration::from_secs(20),
        || alive("w1"),
    );

    drop(dev);
}

/// The member rows of `shoal status --json` on `addr`, run from `cwd`.
fn members(cwd: &Path, addr: &str) -> impl Iterator<Item = serde_json::Value> {
    let doc: serde_json::Value =
        serde_json::from_str(&ok(cwd, &["status", "--addr", addr, "--json"])).unwrap();
    doc["members"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
}

/// The CLI's own credentials for the dev cluster in `cwd`.
fn creds(cwd: &Path) -> shoal_client::Credentials {
    let tls = cwd.join(".shoal/dev/tls");
    let files = shoal_security::TlsFiles {
        ca: tls.join("ca.pem"),
        own: None,
    };
    shoal_client::Credentials {
        transport: shoal_security::Transport::Tls(shoal_security::Tls::load(&files).unwrap()),
        token: Some(
            std::fs::read_to_string(tls.join("admin.token"))
                .unwrap()
                .trim()
                .to_string(),
        ),
    }
}

//! Chat on three real manager processes.
//!
//! - 100 messages posted one after another while the leader is killed with SIGKILL
//!   halfway and restarted: every acknowledged message is stored once, in post order,
//!   with seqs 1..=100, and all three managers' histories are identical.
//! - The interactive client, driven through a pseudo-terminal: after the server it is
//!   connected to is killed it says so in one line, shows what was posted meanwhile,
//!   sends what was typed meanwhile exactly once, and keeps working.
//! - Status: the `chat` section of the manager serving the client, and its CLIENTS and
//!   MESSAGES as another manager learns them by gossip.
//! - The CLI's refusals: bad names, empty and oversized text, unknown rooms — each
//!   names the rule, and nothing is stored.

mod common;

use std::{
    io::{Read, Write},
    net::SocketAddr,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::*;
use shoal_client::{CallOptions, ChatClient};

const LONG: Duration = Duration::from_secs(30);

fn servers(nodes: &[&Proc]) -> String {
    nodes
        .iter()
        .map(|p| p.tcp.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn chat_cli(servers: &str, args: &[&str]) -> (i32, String, String) {
    let out = shoal()
        .args(["chat", "--servers", servers, "--timeout", "20"])
        .args(args)
        .output()
        .expect("run shoal chat");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn client(nodes: &[&Proc]) -> ChatClient {
    let list: Vec<String> = nodes.iter().map(|p| p.tcp.to_string()).collect();
    ChatClient::new(
        &list,
        CallOptions {
            attempt_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(30),
            ..CallOptions::default()
        },
    )
    .expect("client")
}

/// (seq, user, text) of a room as one manager has applied it (`--stale`: its own state).
fn history_on(p: &Proc, room: &str) -> Vec<(u64, String, String)> {
    history_if_known(p, room).unwrap_or_else(|err| panic!("history on {}: {err}", p.id))
}

/// The same, or the error of a manager that has not applied the room's creation yet (a
/// restarted one still catching up).
fn history_if_known(p: &Proc, room: &str) -> Result<Vec<(u64, String, String)>, String> {
    let (code, out, err) = chat_cli(
        &p.tcp.to_string(),
        &["history", "--room", room, "--json", "--stale"],
    );
    if code != 0 {
        return Err(err);
    }
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).expect("history JSON");
    Ok(rows
        .iter()
        .map(|r| {
            (
                r["seq"].as_u64().expect("seq"),
                r["user"].as_str().expect("user").to_string(),
                r["text"].as_str().expect("text").to_string(),
            )
        })
        .collect())
}

#[test]
fn a_hundred_messages_across_a_leader_kill_and_restart() {
    let mut nodes = start_managers();
    let leader = wait_for_leader(&nodes);
    let all = servers(&nodes.iter().collect::<Vec<_>>());
    let (code, _, err) = chat_cli(&all, &["rooms", "create", "ops"]);
    assert_eq!(code, 0, "create: {err}");

    let rt = rt();
    let _in_rt = rt.enter();
    let c = client(&nodes.iter().collect::<Vec<_>>());
    let victim = nodes.iter().position(|n| n.id == leader).expect("leader");
    let mut acked = Vec::new();
    for i in 0..100 {
        if i == 50 {
            nodes[victim].kill9();
        }
        let text = format!("message {i}");
        let id = c.new_message_id();
        let posted = rt
            .block_on(c.post("ops", "ann", &text, &id, i + 1))
            .unwrap_or_else(|e| panic!("post {i}: {e}"));
        assert!(!posted.duplicate, "post {i} was taken for a repeat");
        acked.push((posted.seq, text));
    }
    // Posted one after another: the seqs are 1..=100 in post order.
    let seqs: Vec<u64> = acked.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());

    let seeds: Vec<SocketAddr> = nodes.iter().map(|n| n.tcp).collect();
    nodes[victim] = restart(&nodes[victim], &seeds, MANAGER_ARGS);
    let want: Vec<(u64, String, String)> = acked
        .iter()
        .map(|(s, t)| (*s, "ann".to_string(), t.clone()))
        .collect();
    for n in &nodes {
        wait_for(&format!("{} holds all 100 messages", n.id), LONG, || {
            history_if_known(n, "ops").is_ok_and(|h| h.len() == 100)
        });
        assert_eq!(history_on(n, "ops"), want, "{}'s history differs", n.id);
    }
}

/// A pseudo-terminal whose output a thread collects.
struct Pty {
    master: std::fs::File,
    slave: std::fs::File,
    output: Arc<Mutex<String>>,
}

impl Pty {
    fn open() -> Self {
        use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
        let master =
            openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).expect("openpt");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let name = ptsname(&master, Vec::new()).expect("ptsname");
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(name.to_str().expect("pts path"))
            .expect("open pts");
        let master = std::fs::File::from(master);
        let output = Arc::new(Mutex::new(String::new()));
        let mut reader = master.try_clone().expect("clone master");
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Reading fails (EIO) once the terminal's last user is gone.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self {
            master,
            slave,
            output,
        }
    }

    fn stdio(&self) -> Stdio {
        Stdio::from(self.slave.try_clone().expect("clone pts"))
    }

    fn type_line(&mut self, line: &str) {
        self.master
            .write_all(format!("{line}\n").as_bytes())
            .expect("type into the terminal");
    }

    fn screen(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    fn wait_for(&self, what: &str, needle: &str) {
        wait_for(what, LONG, || self.screen().contains(needle));
    }
}

/// The seqs of the message lines (`[seq] HH:MM:SS user: text`) on the screen, in order.
fn shown_seqs(screen: &str) -> Vec<u64> {
    screen
        .lines()
        .filter_map(|l| l.trim().strip_prefix('[')?.split_once(']')?.0.parse().ok())
        .collect()
}

#[test]
fn the_interactive_client_keeps_working_after_its_server_is_killed() {
    let mut nodes = start_managers();
    wait_for_leader(&nodes);
    // m1 first: the client talks to m1 until it is killed.
    let all = servers(&nodes.iter().collect::<Vec<_>>());
    let (code, _, err) = chat_cli(&all, &["rooms", "create", "lobby"]);
    assert_eq!(code, 0, "create: {err}");

    let mut pty = Pty::open();
    let mut chat = shoal()
        .args([
            "chat",
            "--servers",
            &all,
            "--room",
            "lobby",
            "--user",
            "ann",
        ])
        .stdin(pty.stdio())
        .stdout(pty.stdio())
        .stderr(pty.stdio())
        .spawn()
        .expect("spawn the chat client");
    pty.wait_for("the client entered the room", "you are in #lobby as ann");
    pty.type_line("before the kill");
    pty.wait_for("its own line shown", "ann: before the kill");
    // Status: m1 serves one chat client; gossip tells the others (CLIENTS, MESSAGES).
    wait_for("m1's chat section counts the client", LONG, || {
        status(&nodes[0])
            .and_then(|d| d.chat)
            .is_some_and(|c| c["clients"] == 1 && c["messages"] == 1 && c["rooms"] == 1)
    });
    wait_for("m2 sees m1's CLIENTS and MESSAGES", LONG, || {
        status(&nodes[1]).is_some_and(|d| {
            d.members
                .iter()
                .any(|m| m.id == "m1" && m.chat_clients == Some(1) && m.chat_messages == Some(1))
        })
    });

    nodes[0].kill9();
    // Typed while its server is gone; and posted elsewhere meanwhile.
    pty.type_line("typed while reconnecting");
    let rt = rt();
    let _in_rt = rt.enter();
    let bob = client(&[&nodes[1], &nodes[2]]);
    let id = bob.new_message_id();
    rt.block_on(bob.post("lobby", "bob", "posted meanwhile", &id, 1))
        .expect("bob posts");
    pty.wait_for("the reconnection notice", "*** connection lost");
    pty.wait_for("the queued line stored", "ann: typed while reconnecting");
    pty.wait_for("bob's message shown", "bob: posted meanwhile");
    pty.type_line("after the reconnection");
    pty.wait_for("a line after it", "ann: after the reconnection");
    pty.type_line("/who");
    pty.wait_for("/who lists the members", "*** in #lobby: ann");
    pty.type_line("/quit");
    wait_for("the client exits", LONG, || {
        chat.try_wait().expect("try_wait").is_some()
    });
    assert!(chat.wait().expect("wait").success(), "{}", pty.screen());

    let screen = pty.screen();
    for line in [
        "ann: before the kill",
        "ann: typed while reconnecting",
        "bob: posted meanwhile",
        "ann: after the reconnection",
    ] {
        assert_eq!(
            screen.matches(line).count(),
            1,
            "`{line}` is not shown exactly once:\n{screen}"
        );
    }
    assert_eq!(
        screen.matches("*** connection lost").count(),
        1,
        "one notice per reconnection:\n{screen}"
    );
    assert_eq!(
        shown_seqs(&screen),
        vec![1, 2, 3, 4],
        "messages shown gap-free, in order, once:\n{screen}"
    );
    // Stored exactly once each: the history has four messages.
    let history = history_on(&nodes[1], "lobby");
    let texts: Vec<&str> = history.iter().map(|(_, _, t)| t.as_str()).collect();
    assert_eq!(texts.len(), 4, "{history:?}");
    assert_eq!(texts[0], "before the kill");
    assert_eq!(texts[3], "after the reconnection");
    assert!(texts.contains(&"typed while reconnecting") && texts.contains(&"posted meanwhile"));
    // The client left the room when it quit.
    let (_, rooms, _) = chat_cli(
        &servers(&[&nodes[1], &nodes[2]]),
        &["rooms", "ls", "--json"],
    );
    let rooms: serde_json::Value = serde_json::from_str(&rooms).expect("rooms JSON");
    assert_eq!(rooms[0]["members"], serde_json::json!([]), "{rooms}");
}

#[test]
fn bad_input_is_refused_naming_the_rule_and_stores_nothing() {
    let nodes = start_managers();
    wait_for_leader(&nodes);
    let all = servers(&nodes.iter().collect::<Vec<_>>());
    assert_eq!(chat_cli(&all, &["rooms", "create", "r1"]).0, 0);
    let long = "x".repeat(4097);
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec!["rooms", "create", "has space"],
            2,
            "room: `has space` is not a valid name (1-64 characters of [A-Za-z0-9_.-])",
        ),
        (
            vec!["rooms", "create", "r1"],
            2,
            "room: `r1` already exists",
        ),
        (
            vec!["send", "--room", "r1", "--user", "ann", ""],
            2,
            "text: must not be empty",
        ),
        (
            vec!["send", "--room", "r1", "--user", "ann", &long],
            2,
            "text: 4097 bytes, the limit is 4096",
        ),
        (
            vec!["send", "--room", "r1", "--user", "a/b", "hi"],
            2,
            "user: `a/b` is not a valid name",
        ),
        (
            vec!["send", "--room", "nope", "--user", "ann", "hi"],
            1,
            "room: `nope` does not exist",
        ),
        (
            vec!["history", "--room", "nope"],
            1,
            "room: `nope` does not exist",
        ),
        (
            vec!["--user", "ann"],
            2,
            "needs --room ROOM and --user USER",
        ),
    ];
    for (args, want_code, want) in cases {
        let (code, _, err) = chat_cli(&all, &args);
        assert_eq!(code, want_code, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: `{err}` lacks `{want}`");
    }
    // The server checks at its edge too (a client need not be ours).
    let rt = rt();
    let mut raw = rt
        .block_on(shoal_proto::v1::chat_client::ChatClient::connect(format!(
            "http://{}",
            nodes[1].tcp
        )))
        .expect("connect");
    let post = |text: &str, user: &str, id: &str| shoal_proto::v1::PostRequest {
        room: "r1".into(),
        user: user.into(),
        text: text.into(),
        client_msg_id: id.into(),
        ..Default::default()
    };
    for (req, want) in [
        (post(" \t", "ann", ""), "text: must not be empty"),
        (
            post(&long, "ann", ""),
            "text: 4097 bytes, the limit is 4096",
        ),
        (post("hi", "", ""), "user: `` is not a valid name"),
        (post("hi", "ann", "no spaces"), "client_msg_id: `no spaces`"),
    ] {
        let e = rt.block_on(raw.post(req)).expect_err("refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(
            e.message().contains(want),
            "`{}` lacks `{want}`",
            e.message()
        );
    }
    let (code, out, _) = chat_cli(&all, &["rooms", "ls", "--json"]);
    assert_eq!(code, 0);
    let rooms: serde_json::Value = serde_json::from_str(&out).expect("rooms JSON");
    assert_eq!(rooms.as_array().map(Vec::len), Some(1), "{rooms}");
    assert_eq!(rooms[0]["messages"], 0, "nothing stored: {rooms}");
    assert_eq!(history_on(&nodes[0], "r1"), vec![]);
}

//! `shoal chat`: rooms, posts, history, and an interactive line client.
//!
//! Exit codes: 0 done; 1 not found or no server could complete the call; 2 the request
//! was refused as invalid (nothing was stored).
//!
//! The interactive client (`shoal chat --room R --user U`) prints the room's recent
//! history, then live messages, one line each (`[seq] HH:MM:SS user: text`, UTC). Lines
//! typed go to a queue that a sender drains in order, each with a client message id
//! chosen when it was typed: while no server answers they wait, and a line is stored
//! once however often its post is retried. When its server dies the subscription moves
//! to another and resumes after the last message shown, with a one-line notice.

use std::{
    io::Write,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use clap::{Args, Subcommand};
use serde_json::json;
use shoal_client::{
    CallError, ChatClient,
    chat::{RoomEvent, Subscription},
};
use shoal_proto::v1::ChatMessage;
use tokio::io::AsyncBufReadExt as _;

use super::{ServerArgs, fail};

#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: Option<ChatCommand>,
    /// Interactive: the room to enter.
    #[arg(long)]
    room: Option<String>,
    /// Interactive: who you are (1-64 of A-Z a-z 0-9 _ . -).
    #[arg(long)]
    user: Option<String>,
    /// Interactive: how many recent messages to show on entering a room.
    #[arg(long, value_name = "N", default_value_t = 20)]
    last: u64,
}

#[derive(Subcommand, Debug)]
enum ChatCommand {
    /// Create or list rooms.
    Rooms {
        #[command(subcommand)]
        command: RoomsCommand,
    },
    /// Post TEXT to a room; exits 0 once it is committed and prints its seq.
    Send {
        #[arg(long)]
        room: String,
        #[arg(long)]
        user: String,
        /// At most 4096 bytes, not only whitespace.
        text: String,
    },
    /// Print a room's messages in seq order.
    History {
        #[arg(long)]
        room: String,
        /// Start at this seq (default: the oldest kept).
        #[arg(long, value_name = "SEQ", default_value_t = 1)]
        from: u64,
        /// A JSON array of {seq, user, text, lamport, ts} (ts: unix ms).
        #[arg(long)]
        json: bool,
        /// Answer from the contacted server's state without checking with the leader.
        #[arg(long)]
        stale: bool,
    },
}

#[derive(Subcommand, Debug)]
enum RoomsCommand {
    /// Create room NAME (1-64 of A-Z a-z 0-9 _ . -).
    Create { name: String },
    /// List rooms with their members and message counts.
    Ls {
        #[arg(long)]
        json: bool,
        #[arg(long)]
        stale: bool,
    },
}

pub async fn run(args: ChatArgs) -> ExitCode {
    let (servers, options) = match args.server.parse() {
        Ok(p) => p,
        Err(code) => return code,
    };
    let client = match ChatClient::connect(&servers, options, &super::access::creds()) {
        Ok(c) => Arc::new(c),
        Err(e) => return fail(&e),
    };
    let mut out = std::io::stdout().lock();
    match args.command {
        Some(ChatCommand::Rooms {
            command: RoomsCommand::Create { name },
        }) => match client.create_room(&name).await {
            Ok(()) => {
                let _ = writeln!(out, "created room {name}");
                ExitCode::SUCCESS
            }
            Err(e) => fail_lookup(&e),
        },
        Some(ChatCommand::Rooms {
            command: RoomsCommand::Ls { json, stale },
        }) => match client.list_rooms(stale).await {
            Ok(rooms) => {
                if json {
                    let all: Vec<_> = rooms
                        .iter()
                        .map(|r| {
                            json!({
                                "name": r.name,
                                "members": r.members,
                                "messages": r.messages,
                                "first_seq": r.first_seq,
                            })
                        })
                        .collect();
                    let _ = writeln!(out, "{}", serde_json::Value::Array(all));
                } else {
                    for r in &rooms {
                        let _ = writeln!(
                            out,
                            "{}\t{} messages\t{} members: {}",
                            r.name,
                            r.messages,
                            r.members.len(),
                            r.members.join(", ")
                        );
                    }
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Some(ChatCommand::Send { room, user, text }) => {
            let id = client.new_message_id();
            match client.post(&room, &user, &text, &id, 1).await {
                Ok(p) => {
                    let _ = writeln!(out, "{}", p.seq);
                    ExitCode::SUCCESS
                }
                Err(e) => fail_lookup(&e),
            }
        }
        Some(ChatCommand::History {
            room,
            from,
            json,
            stale,
        }) => history(&client, &room, from, json, stale, &mut out).await,
        None => {
            drop(out);
            match (args.room, args.user) {
                (Some(room), Some(user)) => interactive(client, room, user, args.last).await,
                _ => {
                    eprintln!(
                        "error: the interactive client needs --room ROOM and --user USER (or use a subcommand: rooms, send, history)"
                    );
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// Like [`fail`], but an unknown room exits 1 (not found) rather than 2.
fn fail_lookup(e: &CallError) -> ExitCode {
    if matches!(e, CallError::Rejected(m) if m.contains("does not exist")) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    fail(e)
}

async fn history(
    client: &ChatClient,
    room: &str,
    from: u64,
    json: bool,
    stale: bool,
    out: &mut impl Write,
) -> ExitCode {
    let mut all = Vec::new();
    let mut from = from.max(1);
    loop {
        let page = match client.history(room, from, 0, stale).await {
            Ok(p) => p,
            Err(e) => return fail_lookup(&e),
        };
        let Some(last) = page.messages.last().map(|m| m.seq) else {
            break;
        };
        all.extend(page.messages);
        from = last + 1;
        if from >= page.next_seq {
            break;
        }
    }
    if json {
        let rows: Vec<_> = all
            .iter()
            .map(|m| {
                json!({
                    "seq": m.seq,
                    "user": m.user,
                    "text": m.text,
                    "lamport": m.lamport,
                    "ts": m.ts_unix_ms,
                })
            })
            .collect();
        let _ = writeln!(out, "{}", serde_json::Value::Array(rows));
    } else {
        for m in &all {
            let _ = writeln!(out, "{}", line(m));
        }
    }
    ExitCode::SUCCESS
}

/// `[seq] HH:MM:SS user: text` (UTC).
fn line(m: &ChatMessage) -> String {
    let secs = (m.ts_unix_ms / 1000) % 86_400;
    format!(
        "[{}] {:02}:{:02}:{:02} {}: {}",
        m.seq,
        secs / 3600,
        (secs / 60) % 60,
        secs % 60,
        m.user,
        m.text
    )
}

/// A line typed, waiting to be stored.
struct Outgoing {
    room: String,
    text: String,
    id: String,
}

/// Prints a line of the interactive client.
fn say(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{s}");
    let _ = out.flush();
}

/// Posts queued lines in order, each until it is stored or refused.
async fn sender(
    client: Arc<ChatClient>,
    user: String,
    lamport: Arc<AtomicU64>,
    pending: Arc<AtomicU64>,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<Outgoing>,
) {
    while let Some(o) = queue.recv().await {
        let _done = Done(&pending);
        let stamp = lamport.fetch_add(1, Ordering::Relaxed) + 1;
        let mut waiting_said = false;
        loop {
            match client.post(&o.room, &user, &o.text, &o.id, stamp).await {
                Ok(_) => break,
                Err(CallError::Unavailable { last, .. }) => {
                    if !waiting_said {
                        say(&format!(
                            "*** no server takes posts right now ({last}); your lines are queued"
                        ));
                        waiting_said = true;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    say(&format!("*** not sent: {e}"));
                    break;
                }
            }
        }
    }
}

/// Counts a queued line down when it is stored or refused.
struct Done<'a>(&'a AtomicU64);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where the interactive client is.
struct Session {
    client: Arc<ChatClient>,
    user: String,
    last: u64,
    room: Option<String>,
    sub: Option<Subscription>,
    /// The subscription has connected before (a later connection is a reconnection).
    connected_once: bool,
}

impl Session {
    /// Joins `room`, leaves the room it was in, and follows the new one from its last
    /// `self.last` messages. On failure nothing changed.
    async fn enter(&mut self, room: &str) -> Result<(), CallError> {
        let members = self.client.membership(room, &self.user, true).await?;
        let next = self.client.history(room, 0, 1, true).await?.next_seq;
        if self.room.as_deref() != Some(room) {
            self.leave().await;
        }
        let from = next.saturating_sub(self.last).max(1);
        self.sub = Some(self.client.subscribe(room, from));
        self.connected_once = false;
        self.room = Some(room.to_string());
        say(&format!(
            "*** you are in #{room} as {} (members: {}); /help lists commands",
            self.user,
            members.join(", ")
        ));
        Ok(())
    }

    /// Leaves the current room (best effort).
    async fn leave(&mut self) {
        self.sub = None;
        if let Some(room) = self.room.take() {
            match self.client.membership(&room, &self.user, false).await {
                Ok(_) => say(&format!("*** left #{room}")),
                Err(e) => say(&format!("*** could not leave #{room}: {e}")),
            }
        }
    }

    async fn next_event(&mut self) -> Option<RoomEvent> {
        match self.sub.as_mut() {
            Some(s) => s.next().await,
            None => std::future::pending().await,
        }
    }
}

const HELP: &str = "*** /join ROOM  /leave  /rooms  /who  /quit  (anything else is posted)";

async fn interactive(client: Arc<ChatClient>, room: String, user: String, last: u64) -> ExitCode {
    if let Err(e) = shoal_client::chat::check_name("user", &user) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let mut s = Session {
        client: client.clone(),
        user: user.clone(),
        last,
        room: None,
        sub: None,
        connected_once: false,
    };
    if let Err(e) = s.enter(&room).await {
        return fail_lookup(&e);
    }
    let lamport = Arc::new(AtomicU64::new(0));
    let (queue, rx) = tokio::sync::mpsc::unbounded_channel();
    let pending = Arc::new(AtomicU64::new(0));
    let sending = tokio::spawn(sender(
        client.clone(),
        user.clone(),
        lamport.clone(),
        pending.clone(),
        rx,
    ));
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let line = match line {
                    Ok(Some(l)) => l,
                    Ok(None) | Err(_) => break,
                };
                let text = line.trim_end_matches(['\r', '\n']);
                let (cmd, arg) = text.split_once(' ').unwrap_or((text, ""));
                match cmd {
                    "" => {}
                    "/quit" => break,
                    "/help" => say(HELP),
                    "/join" => {
                        let to = arg.trim();
                        if let Err(e) = shoal_client::chat::check_name("room", to) {
                            say(&format!("*** {e}"));
                            continue;
                        }
                        if let Err(e) = s.enter(to).await {
                            say(&format!("*** cannot join #{to}: {e}"));
                        }
                    }
                    "/leave" => {
                        s.leave().await;
                        say("*** /join ROOM to enter a room");
                    }
                    "/rooms" => match client.list_rooms(false).await {
                        Ok(rooms) => {
                            let list: Vec<String> = rooms
                                .iter()
                                .map(|r| format!("{} ({} members, {} messages)", r.name, r.members.len(), r.messages))
                                .collect();
                            say(&format!("*** rooms: {}", list.join(", ")));
                        }
                        Err(e) => say(&format!("*** {e}")),
                    },
                    "/who" => match (&s.room, client.list_rooms(false).await) {
                        (None, _) => say("*** not in a room"),
                        (Some(room), Ok(rooms)) => {
                            let members = rooms
                                .iter()
                                .find(|r| &r.name == room)
                                .map(|r| r.members.join(", "))
                                .unwrap_or_default();
                            say(&format!("*** in #{room}: {members}"));
                        }
                        (Some(_), Err(e)) => say(&format!("*** {e}")),
                    },
                    c if c.starts_with('/') => say(&format!("*** unknown command {c}; /help lists them")),
                    _ => match &s.room {
                        None => say("*** not in a room; /join ROOM"),
                        Some(room) => {
                            if let Err(e) = shoal_client::chat::validate_text(text) {
                                say(&format!("*** not sent: {e}"));
                                continue;
                            }
                            let o = Outgoing {
                                room: room.clone(),
                                text: text.to_string(),
                                id: client.new_message_id(),
                            };
                            pending.fetch_add(1, Ordering::Relaxed);
                            let _ = queue.send(o);
                        }
                    },
                }
            }
            event = s.next_event() => match event {
                Some(RoomEvent::Message(m)) => {
                    lamport.fetch_max(m.lamport, Ordering::Relaxed);
                    say(&line(&m));
                }
                Some(RoomEvent::Connected { server, from_seq, after }) => {
                    match after {
                        Some(why) => say(&format!("*** connection lost ({why}); reconnected to {server}, resuming from seq {from_seq}")),
                        None if !s.connected_once => {}
                        None => say(&format!("*** reconnected to {server}, resuming from seq {from_seq}")),
                    }
                    s.connected_once = true;
                }
                Some(RoomEvent::Ended(why)) => {
                    say(&format!("*** cannot follow the room: {why}"));
                    s.sub = None;
                }
                None => s.sub = None,
            },
        }
    }
    // Everything typed is stored before leaving (or the call deadline passes for it).
    drop(queue);
    let left = pending.load(Ordering::Relaxed);
    if left > 0 {
        say(&format!(
            "*** sending {left} queued line(s) before leaving…"
        ));
    }
    let _ = sending.await;
    s.leave().await;
    ExitCode::SUCCESS
}

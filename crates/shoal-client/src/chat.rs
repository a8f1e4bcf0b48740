//! [`ChatClient`]: chat rooms over gRPC, with failover across managers.
//!
//! Writes (create, join, leave, post) go through the same failover loop as the KV
//! client, each tagged (client id, sequence). A post also carries a client message id
//! chosen once per message, so a post retried through another server — even after
//! this process lost track of whether the first try committed — is stored once.
//!
//! [`ChatClient::subscribe`] follows a room across server failures: it reads the
//! room's messages from a seq on, and when its server dies, goes silent (no heartbeat
//! for [`SILENCE_MAX`]) or has known no leader for [`LEADERLESS_MAX`], it moves to the
//! next server and resumes after the last message it delivered — nothing missed,
//! nothing delivered twice.

use shoal_security::{AuthChannel, Credentials};
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use rand::RngExt as _;
use shoal_proto::{
    GRPC_MESSAGE_BYTES_MAX,
    v1::{
        ChatMessage, CreateRoomRequest, HistoryRequest, HistoryResponse, ListRoomsRequest,
        MembershipRequest, PostRequest, RoomInfo, SubscribeRequest, WriteTag,
        chat_client::ChatClient as RawChat, chat_event::Event,
    },
};
use shoal_types::backoff::capped_doubling;
use tokio::sync::mpsc;
use tonic::Status;

use crate::servers::{CallError, CallOptions, Servers, retryable};

pub use shoal_state::chat::{NAME_RULE, TEXT_BYTES_MAX, check_name, validate_text};

/// A subscription moves on when its server sent nothing (not even a heartbeat, which
/// comes every 500 ms) for this long.
pub const SILENCE_MAX: Duration = Duration::from_millis(1500);
/// A subscription moves on when its server has known no leader for this long (it may
/// be cut off from the cluster and its history frozen).
pub const LEADERLESS_MAX: Duration = Duration::from_secs(2);

/// A committed post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Posted {
    pub seq: u64,
    /// A message with this client message id was stored before; nothing new was.
    pub duplicate: bool,
}

/// What a subscription delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum RoomEvent {
    /// The next message, in seq order.
    Message(ChatMessage),
    /// Now following the room through `server` from `from_seq`; `after` says why the
    /// previous server was left (None for the first connection).
    Connected {
        server: String,
        from_seq: u64,
        after: Option<String>,
    },
    /// The subscription ended: the room cannot be followed (e.g. it does not exist).
    Ended(String),
}

/// A chat client bound to a list of servers.
pub struct ChatClient {
    servers: Servers<RawChat<AuthChannel>>,
    client_id: u64,
    seq: AtomicU64,
    posts: AtomicU64,
}

impl std::fmt::Debug for ChatClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatClient")
            .field("servers", &self.servers.list())
            .field("client_id", &self.client_id)
            .finish()
    }
}

fn rejected(e: shoal_state::ChatError) -> CallError {
    CallError::Rejected(e.to_string())
}

impl ChatClient {
    /// A client for `servers` (`HOST:PORT` each). Connects lazily; call it from within
    /// a Tokio runtime.
    pub fn new(servers: &[String], options: CallOptions) -> Result<Self, CallError> {
        Self::connect(servers, options, &Credentials::insecure())
    }

    /// Like [`new`](Self::new), with TLS and a token.
    pub fn connect(
        servers: &[String],
        options: CallOptions,
        creds: &Credentials,
    ) -> Result<Self, CallError> {
        let servers = Servers::connect(servers, options, creds, |channel| {
            RawChat::new(channel)
                .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
                .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX)
        })?;
        Ok(Self {
            servers,
            client_id: rand::rng().random_range(1..u64::MAX),
            seq: AtomicU64::new(0),
            posts: AtomicU64::new(0),
        })
    }

    fn next_tag(&self) -> Option<WriteTag> {
        Some(WriteTag {
            client_id: self.client_id,
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
        })
    }

    /// A fresh client message id: this client's id and a counter.
    pub fn new_message_id(&self) -> String {
        let n = self.posts.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{:016x}-{n}", self.client_id)
    }

    pub async fn create_room(&self, room: &str) -> Result<(), CallError> {
        check_name("room", room).map_err(rejected)?;
        let tag = self.next_tag();
        self.servers
            .call(|mut c, t| {
                let mut req = tonic::Request::new(CreateRoomRequest {
                    room: room.to_string(),
                    tag,
                });
                req.set_timeout(t);
                async move { c.create_room(req).await.map(|_| ()) }
            })
            .await
    }

    pub async fn list_rooms(&self, stale: bool) -> Result<Vec<RoomInfo>, CallError> {
        self.servers
            .call(|mut c, t| {
                let mut req = tonic::Request::new(ListRoomsRequest { stale });
                req.set_timeout(t);
                async move { c.list_rooms(req).await.map(|r| r.into_inner().rooms) }
            })
            .await
    }

    /// Joins (or with `join` false leaves) `room`; returns the members after.
    pub async fn membership(
        &self,
        room: &str,
        user: &str,
        join: bool,
    ) -> Result<Vec<String>, CallError> {
        check_name("room", room).map_err(rejected)?;
        check_name("user", user).map_err(rejected)?;
        let tag = self.next_tag();
        self.servers
            .call(|mut c, t| {
                let mut req = tonic::Request::new(MembershipRequest {
                    room: room.to_string(),
                    user: user.to_string(),
                    tag,
                });
                req.set_timeout(t);
                async move {
                    let r = if join {
                        c.join(req).await
                    } else {
                        c.leave(req).await
                    };
                    r.map(|r| r.into_inner().members)
                }
            })
            .await
    }

    /// Posts `text`; returns once committed. `client_msg_id` (from
    /// [`new_message_id`](Self::new_message_id)) makes a repeat of this call safe.
    pub async fn post(
        &self,
        room: &str,
        user: &str,
        text: &str,
        client_msg_id: &str,
        lamport: u64,
    ) -> Result<Posted, CallError> {
        check_name("room", room).map_err(rejected)?;
        check_name("user", user).map_err(rejected)?;
        validate_text(text).map_err(rejected)?;
        let tag = self.next_tag();
        self.servers
            .call(|mut c, t| {
                let mut req = tonic::Request::new(PostRequest {
                    room: room.to_string(),
                    user: user.to_string(),
                    text: text.to_string(),
                    client_msg_id: client_msg_id.to_string(),
                    lamport,
                    tag,
                });
                req.set_timeout(t);
                async move {
                    let r = c.post(req).await?.into_inner();
                    Ok(Posted {
                        seq: r.seq,
                        duplicate: r.duplicate,
                    })
                }
            })
            .await
    }

    /// One page of history: up to `limit` (0: the server's maximum, 1000) messages from
    /// `from_seq` on.
    pub async fn history(
        &self,
        room: &str,
        from_seq: u64,
        limit: u32,
        stale: bool,
    ) -> Result<HistoryResponse, CallError> {
        check_name("room", room).map_err(rejected)?;
        self.servers
            .call(|mut c, t| {
                let mut req = tonic::Request::new(HistoryRequest {
                    room: room.to_string(),
                    from_seq,
                    limit,
                    stale,
                });
                req.set_timeout(t);
                async move { c.history(req).await.map(|r| r.into_inner()) }
            })
            .await
    }

    /// Follows `room` from `from_seq` (0 or 1: from the beginning) until the returned
    /// [`Subscription`] is dropped, moving between servers as they fail.
    pub fn subscribe(self: &Arc<Self>, room: &str, from_seq: u64) -> Subscription {
        let (tx, rx) = mpsc::channel(1024);
        let task = tokio::spawn(follow(self.clone(), room.to_string(), from_seq.max(1), tx));
        Subscription { rx, task }
    }
}

/// A live subscription; dropping it ends it.
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::Receiver<RoomEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscription {
    /// The next event; `None` after [`RoomEvent::Ended`].
    pub async fn next(&mut self) -> Option<RoomEvent> {
        self.rx.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How one connection to one server ended.
enum Leave {
    /// Try the next server.
    Move(String),
    /// The room cannot be followed anywhere.
    End(String),
    /// The subscriber went away.
    Closed,
}

async fn follow(client: Arc<ChatClient>, room: String, mut next: u64, tx: mpsc::Sender<RoomEvent>) {
    let servers = &client.servers;
    let mut at = servers.preferred();
    let mut failed_in_round = 0;
    let mut pause = None;
    let mut why: Option<String> = None;
    loop {
        let (addr, raw) = servers.server(at);
        let addr = addr.to_string();
        match follow_one(raw, &addr, &room, &mut next, why.take(), &tx).await {
            Leave::Closed => return,
            Leave::End(e) => {
                let _ = tx.send(RoomEvent::Ended(e)).await;
                return;
            }
            Leave::Move(reason) => why = Some(reason),
        }
        at += 1;
        failed_in_round += 1;
        if failed_in_round >= servers.len() {
            failed_in_round = 0;
            let p = capped_doubling(pause, Duration::from_millis(50), Duration::from_secs(1));
            pause = Some(p);
            tokio::time::sleep(p).await;
        }
    }
}

async fn follow_one(
    mut raw: RawChat<AuthChannel>,
    addr: &str,
    room: &str,
    next: &mut u64,
    after: Option<String>,
    tx: &mpsc::Sender<RoomEvent>,
) -> Leave {
    let mut req = tonic::Request::new(SubscribeRequest {
        room: room.to_string(),
        from_seq: *next,
    });
    req.set_timeout(Duration::from_secs(24 * 3600));
    let opened = tokio::time::timeout(SILENCE_MAX, raw.subscribe(req)).await;
    let mut stream = match opened {
        Err(_) => return Leave::Move(format!("{addr}: no answer within {SILENCE_MAX:?}")),
        Ok(Err(s)) => return status_leave(addr, &s),
        Ok(Ok(r)) => r.into_inner(),
    };
    let connected = RoomEvent::Connected {
        server: addr.to_string(),
        from_seq: *next,
        after,
    };
    if tx.send(connected).await.is_err() {
        return Leave::Closed;
    }
    let mut leaderless_since: Option<tokio::time::Instant> = None;
    loop {
        let event = match tokio::time::timeout(SILENCE_MAX, stream.message()).await {
            Err(_) => return Leave::Move(format!("{addr}: silent for {SILENCE_MAX:?}")),
            Ok(Err(s)) => return status_leave(addr, &s),
            Ok(Ok(None)) => return Leave::Move(format!("{addr}: ended the stream")),
            Ok(Ok(Some(e))) => e,
        };
        match event.event {
            Some(Event::Message(m)) => {
                leaderless_since = None;
                // A server resumes from `next`; anything older is a repeat.
                if m.seq < *next {
                    continue;
                }
                *next = m.seq + 1;
                if tx.send(RoomEvent::Message(m)).await.is_err() {
                    return Leave::Closed;
                }
            }
            Some(Event::Heartbeat(h)) => {
                if h.leader_known {
                    leaderless_since = None;
                } else {
                    let since = *leaderless_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() >= LEADERLESS_MAX {
                        return Leave::Move(format!(
                            "{addr}: has known no leader for {LEADERLESS_MAX:?}"
                        ));
                    }
                }
            }
            None => {}
        }
    }
}

fn status_leave(addr: &str, s: &Status) -> Leave {
    if retryable(s) {
        Leave::Move(format!("{addr}: {}", s.message()))
    } else {
        Leave::End(s.message().to_string())
    }
}

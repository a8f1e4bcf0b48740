//! The `Chat` gRPC service on managers.
//!
//! Posts and room changes are commands in the Raft log (a follower forwards them to the
//! leader); a room's `seq` is assigned by `apply`, so every replica numbers the same
//! messages the same way. History and subscriptions are read from this manager's
//! applied state — history after a read index from the leader unless the caller asked
//! for a stale read; a subscription follows the applied state as it grows:
//!
//! ```text
//!  Subscribe(room, from) ──► messages from..=applied, in seq order
//!                            └─ wait for the next applied entry (≤ 500 ms) ──► more
//!                               or a heartbeat (leader known?, next seq)
//! ```
//!
//! Validation happens here first (a refused post writes nothing) and again in `apply`.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use shoal_membership::MembershipHandle;
use shoal_proto::v1::{
    ChatEvent, ChatHeartbeat, ChatMessage, CreateRoomRequest, CreateRoomResponse, HistoryRequest,
    HistoryResponse, ListRoomsRequest, ListRoomsResponse, MembershipRequest, MembershipResponse,
    PostRequest, PostResponse, RoomInfo, SubscribeRequest,
    chat_event::Event,
    chat_server::{Chat, ChatServer},
};
use shoal_raft::group::{Applied, RaftGroup, Replica};
use shoal_state::{
    ChatCommand, ChatError, ChatResponse, Command, Response as SmResponse, State,
    chat::{self, Message, Room},
};
use tonic::{Request, Response, Status};

use crate::{
    replicated::{commit, fence, group_status, page_limit, read_point, tag},
    tasks::Tasks,
};

/// Messages one `History` call returns at most (a limit of 0 means this).
pub const HISTORY_LIMIT_MAX: usize = 1000;
/// A subscription sends a heartbeat after this long without a message.
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(500);
/// Messages a subscription reads from the state at a time.
const SUBSCRIBE_BATCH: usize = 256;

/// Chat on one manager: the group, and the subscriptions served here.
#[derive(Debug)]
pub struct ChatHub {
    replica: Replica,
    subscribers: AtomicU32,
    /// The node's tasks: each subscription's follower runs among them.
    tasks: Tasks,
}

impl ChatHub {
    pub fn new(replica: Replica, tasks: Tasks) -> Arc<Self> {
        Arc::new(Self {
            replica,
            subscribers: AtomicU32::new(0),
            tasks,
        })
    }

    /// Subscriptions served by this manager now.
    pub fn clients(&self) -> u32 {
        self.subscribers.load(Ordering::Relaxed)
    }

    /// Messages ever stored, as this manager has applied them.
    pub fn messages(&self) -> u64 {
        self.replica.group.read(|s| s.chat.messages_total())
    }

    /// The `chat` section of /v1/status.
    pub fn status_section(&self) -> serde_json::Value {
        let (rooms, messages) = self
            .replica
            .group
            .read(|s| (s.chat.room_count(), s.chat.messages_total()));
        serde_json::json!({
            "clients": self.clients(),
            "rooms": rooms,
            "messages": messages,
        })
    }

    /// Publishes this manager's chat clients and message count in gossip metadata when
    /// they change, at most once a second, for the CLIENTS and MESSAGES columns.
    pub async fn publish(self: Arc<Self>, membership: MembershipHandle) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut published = (0, 0);
        loop {
            tick.tick().await;
            let now = (self.clients(), self.messages());
            if now != published {
                let (clients, messages) = now;
                let update = membership.update_meta(move |m| {
                    m.chat_clients = clients;
                    m.chat_messages = messages;
                });
                if update.await.is_err() {
                    return;
                }
                published = now;
            }
        }
    }
}

/// Counts a subscription while it lives.
struct Subscribed(Arc<ChatHub>);

impl Subscribed {
    fn new(hub: Arc<ChatHub>) -> Self {
        hub.subscribers.fetch_add(1, Ordering::Relaxed);
        Self(hub)
    }
}

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct ChatService {
    hub: Arc<ChatHub>,
}

pub fn service(hub: Arc<ChatHub>) -> ChatServer<ChatService> {
    ChatServer::new(ChatService { hub })
        .max_decoding_message_size(shoal_proto::GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(shoal_proto::GRPC_MESSAGE_BYTES_MAX)
}

fn chat_status(e: ChatError) -> Status {
    match e {
        ChatError::UnknownRoom(_) => Status::not_found(e.to_string()),
        ChatError::RoomExists(_) => Status::already_exists(e.to_string()),
        ChatError::TooManyRooms | ChatError::TooManyMembers(_) => {
            Status::resource_exhausted(e.to_string())
        }
        ChatError::BadName { .. } | ChatError::EmptyText | ChatError::TextTooLong { .. } => {
            Status::invalid_argument(e.to_string())
        }
    }
}

pub fn message_pb(room: &str, m: &Message) -> ChatMessage {
    ChatMessage {
        room: room.to_string(),
        seq: m.seq,
        user: m.user.clone(),
        text: m.text.clone(),
        lamport: m.lamport,
        ts_unix_ms: m.ts_ms,
        client_msg_id: m.client_msg_id.clone(),
    }
}

fn room_or_404<'a>(s: &'a State, room: &str) -> Result<&'a Room, Status> {
    s.chat
        .room(room)
        .ok_or_else(|| chat_status(ChatError::UnknownRoom(room.to_string())))
}

/// Messages of `room` from `from` on (at most `limit`) and the room's next seq, from the
/// group's applied state.
pub fn read_from(
    group: &RaftGroup,
    room: &str,
    from: u64,
    limit: usize,
) -> Result<(Vec<ChatMessage>, u64, u64), Status> {
    group.read(|s| {
        let r = room_or_404(s, room)?;
        let messages = r
            .messages_from(from, limit)
            .map(|m| message_pb(room, m))
            .collect();
        Ok((messages, r.next_seq(), r.first_seq()))
    })
}

impl ChatService {
    async fn write(
        &self,
        client: Option<shoal_state::ClientTag>,
        cmd: ChatCommand,
    ) -> Result<(Applied, ChatResponse), Status> {
        cmd.validate().map_err(chat_status)?;
        let applied = commit(&self.hub.replica, client, Command::Chat(cmd)).await?;
        match &applied.response {
            SmResponse::Chat(r) => {
                let r = r.clone().map_err(chat_status)?;
                Ok((applied, r))
            }
            other => Err(Status::internal(format!("unexpected response {other}"))),
        }
    }

    /// The members of `room` once this replica has applied `applied` (a forwarded write
    /// may be applied here a moment after the leader answered).
    async fn members_after(&self, applied: &Applied, room: &str) -> Vec<String> {
        let group = &self.hub.replica.group;
        let _ = group
            .await_applied(applied.index.0, Duration::from_secs(1))
            .await;
        group.read(|s| {
            s.chat
                .room(room)
                .map(|r| r.members.iter().cloned().collect())
                .unwrap_or_default()
        })
    }

    async fn membership(
        &self,
        r: MembershipRequest,
        join: bool,
    ) -> Result<Response<MembershipResponse>, Status> {
        let client = tag(r.tag)?;
        let cmd = if join {
            ChatCommand::Join {
                room: r.room.clone(),
                user: r.user,
            }
        } else {
            ChatCommand::Leave {
                room: r.room.clone(),
                user: r.user,
            }
        };
        let (applied, resp) = self.write(client, cmd).await?;
        let ChatResponse::Membership { changed } = resp else {
            return Err(Status::internal(format!("unexpected response {resp:?}")));
        };
        Ok(Response::new(MembershipResponse {
            changed,
            members: self.members_after(&applied, &r.room).await,
        }))
    }
}

/// Sends `room`'s messages from `from` on (0 or 1: the first), in seq order, as `group`
/// applies them, and a heartbeat whenever nothing was sent for [`HEARTBEAT_EVERY`].
/// Returns when the receiver is gone, or after sending the error if the room cannot be
/// read. What a subscription runs; the simulation runs it too.
pub async fn follow(
    group: RaftGroup,
    room: String,
    from: u64,
    tx: tokio::sync::mpsc::Sender<Result<ChatEvent, Status>>,
) {
    let mut next = from.max(1);
    let mut last_sent = tokio::time::Instant::now();
    loop {
        let applied = group.applied_index();
        let (batch, room_next, _) = match read_from(&group, &room, next, SUBSCRIBE_BATCH) {
            Ok(b) => b,
            Err(s) => {
                let _ = tx.send(Err(s)).await;
                return;
            }
        };
        let idle = batch.is_empty();
        for m in batch {
            next = m.seq + 1;
            let event = ChatEvent {
                event: Some(Event::Message(m)),
            };
            if tx.send(Ok(event)).await.is_err() {
                return;
            }
            last_sent = tokio::time::Instant::now();
        }
        if !idle {
            continue;
        }
        // Caught up: wait for the next applied entry (of any room). Say we are alive
        // when nothing was sent for a while, however busy other rooms are.
        let waited = tokio::time::Instant::now();
        if group
            .await_applied(applied + 1, HEARTBEAT_EVERY)
            .await
            .is_err()
        {
            // A timeout, or a group shutting down that answers at once: never spin.
            tokio::time::sleep_until(waited + HEARTBEAT_EVERY).await;
        }
        if last_sent.elapsed() >= HEARTBEAT_EVERY {
            let beat = ChatHeartbeat {
                leader_known: group.leader().is_some(),
                next_seq: room_next,
            };
            let event = ChatEvent {
                event: Some(Event::Heartbeat(beat)),
            };
            if tx.send(Ok(event)).await.is_err() {
                return;
            }
            last_sent = tokio::time::Instant::now();
        }
    }
}

type EventStream = Pin<Box<dyn futures_util::Stream<Item = Result<ChatEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Chat for ChatService {
    async fn create_room(
        &self,
        r: Request<CreateRoomRequest>,
    ) -> Result<Response<CreateRoomResponse>, Status> {
        let r = r.into_inner();
        let client = tag(r.tag)?;
        let (applied, _) = self
            .write(client, ChatCommand::CreateRoom { room: r.room })
            .await?;
        Ok(Response::new(CreateRoomResponse {
            fence: fence(&applied),
        }))
    }

    async fn list_rooms(
        &self,
        r: Request<ListRoomsRequest>,
    ) -> Result<Response<ListRoomsResponse>, Status> {
        read_point(&self.hub.replica, r.get_ref().stale).await?;
        let rooms = self.hub.replica.group.read(|s| {
            s.chat
                .rooms()
                .map(|(name, r)| RoomInfo {
                    name: name.clone(),
                    members: r.members.iter().cloned().collect(),
                    messages: r.last_seq(),
                    first_seq: r.first_seq(),
                })
                .collect()
        });
        Ok(Response::new(ListRoomsResponse { rooms }))
    }

    async fn join(
        &self,
        r: Request<MembershipRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        self.membership(r.into_inner(), true).await
    }

    async fn leave(
        &self,
        r: Request<MembershipRequest>,
    ) -> Result<Response<MembershipResponse>, Status> {
        self.membership(r.into_inner(), false).await
    }

    async fn post(&self, r: Request<PostRequest>) -> Result<Response<PostResponse>, Status> {
        let r = r.into_inner();
        let client = tag(r.tag)?;
        let cmd = ChatCommand::Post {
            room: r.room,
            user: r.user,
            text: r.text,
            client_msg_id: r.client_msg_id,
            lamport: r.lamport,
            ts_ms: crate::status::unix_ms(),
        };
        let (applied, resp) = self.write(client, cmd).await?;
        let ChatResponse::Posted { seq, duplicate } = resp else {
            return Err(Status::internal(format!("unexpected response {resp:?}")));
        };
        Ok(Response::new(PostResponse {
            seq,
            duplicate,
            fence: fence(&applied),
        }))
    }

    async fn history(
        &self,
        r: Request<HistoryRequest>,
    ) -> Result<Response<HistoryResponse>, Status> {
        let r = r.into_inner();
        chat::check_name("room", &r.room).map_err(chat_status)?;
        let limit = page_limit(r.limit, HISTORY_LIMIT_MAX)?;
        read_point(&self.hub.replica, r.stale).await?;
        let (messages, next_seq, first_seq) =
            read_from(&self.hub.replica.group, &r.room, r.from_seq, limit)?;
        Ok(Response::new(HistoryResponse {
            messages,
            next_seq,
            first_seq,
        }))
    }

    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        r: Request<SubscribeRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let r = r.into_inner();
        chat::check_name("room", &r.room).map_err(chat_status)?;
        let replica = self.hub.replica.clone();
        // A room created a moment ago may not be applied here yet.
        if replica.group.read(|s| s.chat.room(&r.room).is_none()) {
            replica.linearize().await.map_err(group_status)?;
            read_from(&replica.group, &r.room, 0, 0)?;
        }
        let (tx, rx) = tokio::sync::mpsc::channel(SUBSCRIBE_BATCH);
        let guard = Subscribed::new(self.hub.clone());
        let group = replica.group.clone();
        self.hub.tasks.spawn("chat subscription", async move {
            let _guard = guard;
            follow(group, r.room, r.from_seq, tx).await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

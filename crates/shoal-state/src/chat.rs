//! Chat rooms: durable, totally ordered history.
//!
//! A room's messages are numbered by `seq`, assigned here at commit: the first message of
//! a room is 1 and every later one is exactly one more — gap-free and strictly
//! increasing, the same on every replica because it is assigned by `apply` in log order.
//! A client may give each post a `client_msg_id`; a second post with an id the room has
//! already stored is not stored again and is answered with the first one's `seq` (the
//! retry of a post whose answer was lost, even through another server).
//!
//! Each message keeps the poster's Lamport timestamp (for causality display) and the
//! time the server that took the post saw it; ordering never depends on either.
//!
//! Retention: a room keeps its most recent [`ROOM_MESSAGES_KEPT`] messages; older ones
//! are dropped (their `seq`s are never reused, and `first_seq` says where history starts).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::LogIndex;

/// Longest message text, in bytes.
pub const TEXT_BYTES_MAX: usize = 4096;
/// Messages a room keeps.
pub const ROOM_MESSAGES_KEPT: usize = 100_000;
/// Rooms a cluster holds.
pub const ROOMS_MAX: usize = 10_000;
/// Members a room lists.
pub const MEMBERS_MAX: usize = 10_000;

/// The rule for room and user names (and client message ids).
pub use shoal_types::NAME_RULE;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChatCommand {
    CreateRoom {
        room: String,
    },
    Join {
        room: String,
        user: String,
    },
    Leave {
        room: String,
        user: String,
    },
    Post {
        room: String,
        user: String,
        text: String,
        /// Chosen by the client; empty for none.
        client_msg_id: String,
        lamport: u64,
        /// Unix ms on the server that took the post (apply reads no clock).
        ts_ms: u64,
    },
}

/// A refused chat command; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ChatError {
    #[error("{field}: `{value}` is not a valid name ({NAME_RULE})")]
    BadName { field: String, value: String },
    #[error("text: must not be empty or only whitespace")]
    EmptyText,
    #[error("text: {len} bytes, the limit is {max}", max = TEXT_BYTES_MAX)]
    TextTooLong { len: usize },
    #[error("room: `{0}` does not exist (create it with `shoal chat rooms create {0}`)")]
    UnknownRoom(String),
    #[error("room: `{0}` already exists")]
    RoomExists(String),
    #[error("room: this cluster already holds {max} rooms", max = ROOMS_MAX)]
    TooManyRooms,
    #[error("room: `{0}` already has {max} members", max = MEMBERS_MAX)]
    TooManyMembers(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChatResponse {
    Created,
    /// `changed`: false when the user already was (or was not) a member.
    Membership {
        changed: bool,
    },
    /// The message's `seq`; `duplicate`: a message with this client id was stored
    /// before and nothing was stored now.
    Posted {
        seq: u64,
        duplicate: bool,
    },
}

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub seq: u64,
    pub user: String,
    pub text: String,
    pub client_msg_id: String,
    pub lamport: u64,
    pub ts_ms: u64,
    /// Log index of the entry that stored it.
    pub index: LogIndex,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Room {
    pub created_index: LogIndex,
    pub members: BTreeSet<String>,
    /// `messages[i].seq == first_seq + i`.
    messages: VecDeque<Message>,
    /// The seq of the oldest kept message (1 until retention drops some).
    first_seq: u64,
    /// client_msg_id → seq, for the kept messages that have one.
    by_client_id: HashMap<String, u64>,
}

impl Room {
    /// The seq the next message will get.
    pub fn next_seq(&self) -> u64 {
        self.first_seq + self.messages.len() as u64
    }

    /// The oldest seq still kept.
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// The last stored seq (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.next_seq() - 1
    }

    /// Up to `limit` messages from `from` on (from the oldest kept one if `from` is
    /// older), in seq order.
    pub fn messages_from(&self, from: u64, limit: usize) -> impl Iterator<Item = &Message> {
        let skip = from.saturating_sub(self.first_seq) as usize;
        self.messages.iter().skip(skip).take(limit)
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

/// The chat state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Chat {
    rooms: BTreeMap<String, Room>,
    /// Messages ever stored (retention does not lower it).
    messages_total: u64,
}

/// Checks a room or user name (or a client message id) against shoal's one naming
/// rule ([`shoal_types::validate_name`]); the error names `field`.
pub fn check_name(field: &str, value: &str) -> Result<(), ChatError> {
    shoal_types::validate_name(value).map_err(|_| ChatError::BadName {
        field: field.to_string(),
        value: value.chars().take(80).collect(),
    })
}

pub fn validate_text(text: &str) -> Result<(), ChatError> {
    if text.len() > TEXT_BYTES_MAX {
        return Err(ChatError::TextTooLong { len: text.len() });
    }
    if text.trim().is_empty() {
        return Err(ChatError::EmptyText);
    }
    Ok(())
}

impl ChatCommand {
    /// The checks `apply` makes that need no state, for callers that refuse early.
    pub fn validate(&self) -> Result<(), ChatError> {
        match self {
            ChatCommand::CreateRoom { room } => check_name("room", room),
            ChatCommand::Join { room, user } | ChatCommand::Leave { room, user } => {
                check_name("room", room)?;
                check_name("user", user)
            }
            ChatCommand::Post {
                room,
                user,
                text,
                client_msg_id,
                ..
            } => {
                check_name("room", room)?;
                check_name("user", user)?;
                if !client_msg_id.is_empty() {
                    check_name("client_msg_id", client_msg_id)?;
                }
                validate_text(text)
            }
        }
    }
}

impl Chat {
    pub fn room(&self, name: &str) -> Option<&Room> {
        self.rooms.get(name)
    }

    pub fn rooms(&self) -> impl Iterator<Item = (&String, &Room)> {
        self.rooms.iter()
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Messages ever stored, across rooms.
    pub fn messages_total(&self) -> u64 {
        self.messages_total
    }

    pub(crate) fn apply(
        &mut self,
        index: LogIndex,
        cmd: &ChatCommand,
    ) -> Result<ChatResponse, ChatError> {
        cmd.validate()?;
        match cmd {
            ChatCommand::CreateRoom { room } => {
                if self.rooms.contains_key(room) {
                    return Err(ChatError::RoomExists(room.clone()));
                }
                if self.rooms.len() >= ROOMS_MAX {
                    return Err(ChatError::TooManyRooms);
                }
                self.rooms.insert(
                    room.clone(),
                    Room {
                        created_index: index,
                        first_seq: 1,
                        ..Room::default()
                    },
                );
                Ok(ChatResponse::Created)
            }
            ChatCommand::Join { room, user } => {
                let r = self.room_mut(room)?;
                if r.members.contains(user) {
                    return Ok(ChatResponse::Membership { changed: false });
                }
                if r.members.len() >= MEMBERS_MAX {
                    return Err(ChatError::TooManyMembers(room.clone()));
                }
                r.members.insert(user.clone());
                Ok(ChatResponse::Membership { changed: true })
            }
            ChatCommand::Leave { room, user } => {
                let r = self.room_mut(room)?;
                Ok(ChatResponse::Membership {
                    changed: r.members.remove(user),
                })
            }
            ChatCommand::Post {
                room,
                user,
                text,
                client_msg_id,
                lamport,
                ts_ms,
            } => {
                let r = self.room_mut(room)?;
                if !client_msg_id.is_empty()
                    && let Some(seq) = r.by_client_id.get(client_msg_id)
                {
                    return Ok(ChatResponse::Posted {
                        seq: *seq,
                        duplicate: true,
                    });
                }
                let seq = r.next_seq();
                r.messages.push_back(Message {
                    seq,
                    user: user.clone(),
                    text: text.clone(),
                    client_msg_id: client_msg_id.clone(),
                    lamport: *lamport,
                    ts_ms: *ts_ms,
                    index,
                });
                if !client_msg_id.is_empty() {
                    r.by_client_id.insert(client_msg_id.clone(), seq);
                }
                while r.messages.len() > ROOM_MESSAGES_KEPT {
                    if let Some(old) = r.messages.pop_front() {
                        r.first_seq += 1;
                        if !old.client_msg_id.is_empty() {
                            r.by_client_id.remove(&old.client_msg_id);
                        }
                    }
                }
                self.messages_total += 1;
                Ok(ChatResponse::Posted {
                    seq,
                    duplicate: false,
                })
            }
        }
    }

    fn room_mut(&mut self, room: &str) -> Result<&mut Room, ChatError> {
        self.rooms
            .get_mut(room)
            .ok_or_else(|| ChatError::UnknownRoom(room.to_string()))
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        let mut kept = 0u64;
        for (name, r) in &self.rooms {
            if r.first_seq == 0 {
                return Err(format!("chat: room `{name}` starts at seq 0"));
            }
            for (i, m) in r.messages.iter().enumerate() {
                if m.seq != r.first_seq + i as u64 {
                    return Err(format!(
                        "chat: room `{name}` has seq {} at position {i} (first {})",
                        m.seq, r.first_seq
                    ));
                }
            }
            let with_id = r
                .messages
                .iter()
                .filter(|m| !m.client_msg_id.is_empty())
                .count();
            if with_id != r.by_client_id.len() {
                return Err(format!(
                    "chat: room `{name}` indexes {} client ids for {with_id} messages",
                    r.by_client_id.len()
                ));
            }
            kept += r.messages.len() as u64;
        }
        if kept > self.messages_total {
            return Err("chat: more messages kept than ever stored".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(room: &str, user: &str, text: &str, id: &str) -> ChatCommand {
        ChatCommand::Post {
            room: room.into(),
            user: user.into(),
            text: text.into(),
            client_msg_id: id.into(),
            lamport: 1,
            ts_ms: 1000,
        }
    }

    fn with_room(name: &str) -> (Chat, u64) {
        let mut c = Chat::default();
        c.apply(LogIndex(1), &ChatCommand::CreateRoom { room: name.into() })
            .unwrap();
        (c, 2)
    }

    #[test]
    fn seqs_are_gap_free_per_room() {
        let (mut c, mut i) = with_room("a");
        c.apply(LogIndex(i), &ChatCommand::CreateRoom { room: "b".into() })
            .unwrap();
        i += 1;
        let mut seqs = BTreeMap::<&str, Vec<u64>>::new();
        for n in 0..10 {
            let room = if n % 3 == 0 { "b" } else { "a" };
            match c.apply(LogIndex(i), &post(room, "ann", "hi", "")).unwrap() {
                ChatResponse::Posted {
                    seq,
                    duplicate: false,
                } => seqs.entry(room).or_default().push(seq),
                other => panic!("{other:?}"),
            }
            i += 1;
        }
        assert_eq!(seqs["a"], (1..=6).collect::<Vec<_>>());
        assert_eq!(seqs["b"], (1..=4).collect::<Vec<_>>());
        assert_eq!(c.messages_total(), 10);
        assert_eq!(c.room("a").unwrap().last_seq(), 6);
        c.validate().unwrap();
    }

    #[test]
    fn a_post_with_a_seen_client_id_is_stored_once() {
        let (mut c, _) = with_room("a");
        let first = c.apply(LogIndex(2), &post("a", "ann", "hi", "m1")).unwrap();
        c.apply(LogIndex(3), &post("a", "bob", "yo", "m2")).unwrap();
        let again = c.apply(LogIndex(4), &post("a", "ann", "hi", "m1")).unwrap();
        assert_eq!(
            first,
            ChatResponse::Posted {
                seq: 1,
                duplicate: false
            }
        );
        assert_eq!(
            again,
            ChatResponse::Posted {
                seq: 1,
                duplicate: true
            }
        );
        let room = c.room("a").unwrap();
        assert_eq!(room.len(), 2);
        assert_eq!(c.messages_total(), 2);
        // Posts without an id are never deduplicated.
        c.apply(LogIndex(5), &post("a", "ann", "hi", "")).unwrap();
        c.apply(LogIndex(6), &post("a", "ann", "hi", "")).unwrap();
        assert_eq!(c.room("a").unwrap().len(), 4);
    }

    #[test]
    fn membership_joins_and_leaves_once() {
        let (mut c, _) = with_room("a");
        let join = ChatCommand::Join {
            room: "a".into(),
            user: "ann".into(),
        };
        let leave = ChatCommand::Leave {
            room: "a".into(),
            user: "ann".into(),
        };
        assert_eq!(
            c.apply(LogIndex(2), &join),
            Ok(ChatResponse::Membership { changed: true })
        );
        assert_eq!(
            c.apply(LogIndex(3), &join),
            Ok(ChatResponse::Membership { changed: false })
        );
        assert!(c.room("a").unwrap().members.contains("ann"));
        assert_eq!(
            c.apply(LogIndex(4), &leave),
            Ok(ChatResponse::Membership { changed: true })
        );
        assert_eq!(
            c.apply(LogIndex(5), &leave),
            Ok(ChatResponse::Membership { changed: false })
        );
        assert!(c.room("a").unwrap().members.is_empty());
        assert_eq!(
            c.apply(
                LogIndex(6),
                &ChatCommand::Join {
                    room: "nope".into(),
                    user: "ann".into()
                }
            ),
            Err(ChatError::UnknownRoom("nope".into()))
        );
    }

    #[test]
    fn bad_input_is_refused_and_changes_nothing() {
        let (mut c, _) = with_room("a");
        let before = c.clone();
        let long = "x".repeat(TEXT_BYTES_MAX + 1);
        let cases = [
            (post("a", "ann", "", ""), "text: must not be empty"),
            (post("a", "ann", " \n\t", ""), "text: must not be empty"),
            (
                post("a", "ann", &long, ""),
                "text: 4097 bytes, the limit is 4096",
            ),
            (post("zzz", "ann", "hi", ""), "room: `zzz` does not exist"),
            (
                post("a", "an n", "hi", ""),
                "user: `an n` is not a valid name",
            ),
            (post("a", "", "hi", ""), "user: `` is not a valid name"),
            (post("a", "ann", "hi", "id/1"), "client_msg_id: `id/1`"),
            (
                ChatCommand::CreateRoom {
                    room: "x".repeat(65),
                },
                "room: `xxxx",
            ),
            (
                ChatCommand::CreateRoom { room: "a".into() },
                "room: `a` already exists",
            ),
            (
                ChatCommand::CreateRoom { room: "é".into() },
                "1-64 characters of [A-Za-z0-9_.-]",
            ),
        ];
        for (cmd, want) in cases {
            let e = c.apply(LogIndex(9), &cmd).unwrap_err().to_string();
            assert!(e.contains(want), "{cmd:?}: `{e}` lacks `{want}`");
        }
        assert_eq!(c, before);
        // Exactly at the limits is fine.
        let max = "y".repeat(TEXT_BYTES_MAX);
        c.apply(LogIndex(10), &post("a", &"u".repeat(64), &max, ""))
            .unwrap();
    }

    #[test]
    fn retention_drops_the_oldest_and_keeps_numbering() {
        let (mut c, mut i) = with_room("a");
        let n = ROOM_MESSAGES_KEPT + 5;
        for k in 0..n {
            c.apply(LogIndex(i), &post("a", "ann", "hi", &format!("m{k}")))
                .unwrap();
            i += 1;
        }
        let room = c.room("a").unwrap();
        assert_eq!(room.len(), ROOM_MESSAGES_KEPT);
        assert_eq!(room.first_seq(), 6);
        assert_eq!(room.last_seq(), n as u64);
        assert_eq!(room.messages_from(1, 1).next().unwrap().seq, 6);
        assert_eq!(room.messages_from(10, 1).next().unwrap().seq, 10);
        assert_eq!(c.messages_total(), n as u64);
        c.validate().unwrap();
        // A dropped id is forgotten: posting it again stores a new message.
        let r = c.apply(LogIndex(i), &post("a", "ann", "hi", "m0")).unwrap();
        assert_eq!(
            r,
            ChatResponse::Posted {
                seq: n as u64 + 1,
                duplicate: false
            }
        );
    }
}

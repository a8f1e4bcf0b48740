//! shoal's replicated state machine.
//!
//! Every decision the cluster makes is a [`Command`] in the Raft log; every replica feeds
//! the committed log, in order, to [`State::apply`]. `apply` is pure — no IO, no clock,
//! no randomness — so replaying a log always yields the same state, and the tests can
//! check it without Raft.
//!
//! ```text
//!  client ──(client id, seq, command)──► leader ──► log ──► apply(state, index, request)
//!                                                              │
//!        retried request with a seen (id, seq) ◄── cached response (applied once)
//! ```
//!
//! The state holds the replicated key-value store (cluster configuration, like Consul's
//! or etcd's KV), the jobs ledger ([`jobs`]) and chat rooms ([`chat`]); entities join
//! as a further command family.

pub mod bytes;
pub mod chat;
pub mod jobs;
pub mod jobspec;
pub mod key;
pub mod kv;
pub mod session;

use serde::{Deserialize, Serialize};

pub use chat::{Chat, ChatCommand, ChatError, ChatResponse};
pub use jobs::{JobCommand, JobError, JobResponse, Jobs};
pub use kv::{KvCommand, KvEntry, KvError, KvResponse, KvStore};
pub use session::{ClientTag, Sessions};

/// A position in the replicated log.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct LogIndex(pub u64);

/// One entry's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Written by a new leader to commit entries of earlier terms; changes nothing.
    Noop,
    Kv(KvCommand),
    Jobs(JobCommand),
    Chat(ChatCommand),
}

/// A command as a client submitted it: tagged so a retry after a failover is applied
/// once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub client: Option<ClientTag>,
    pub command: Command,
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.command {
            Command::Noop => f.write_str("noop"),
            Command::Kv(KvCommand::Put { key, value }) => {
                write!(f, "put {key} ({} B)", value.len())
            }
            Command::Kv(KvCommand::Delete { key }) => write!(f, "delete {key}"),
            Command::Kv(KvCommand::Cas {
                key,
                expected_revision,
                ..
            }) => {
                write!(f, "cas {key} at {expected_revision}")
            }
            Command::Jobs(JobCommand::Submit { id, .. }) => write!(f, "submit job {id}"),
            Command::Jobs(JobCommand::Schedule { places, .. }) => {
                write!(f, "schedule {} instances", places.len())
            }
            Command::Jobs(JobCommand::Report {
                instance, event, ..
            }) => write!(f, "report {instance} {event:?}"),
            Command::Jobs(JobCommand::Reports {
                worker, reports, ..
            }) => write!(f, "{} reports from {worker}", reports.len()),
            Command::Jobs(JobCommand::WorkerLost { worker, .. }) => {
                write!(f, "worker {worker} lost")
            }
            Command::Jobs(JobCommand::Cancel { id, .. }) => write!(f, "cancel job {id}"),
            Command::Chat(ChatCommand::CreateRoom { room }) => write!(f, "create room {room}"),
            Command::Chat(ChatCommand::Join { room, user }) => write!(f, "{user} joins {room}"),
            Command::Chat(ChatCommand::Leave { room, user }) => write!(f, "{user} leaves {room}"),
            Command::Chat(ChatCommand::Post {
                room, user, text, ..
            }) => write!(f, "{user} posts {} B in {room}", text.len()),
        }
    }
}

/// What applying a request produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Noop,
    Kv(Result<KvResponse, KvError>),
    Jobs(Result<JobResponse, JobError>),
    Chat(Result<ChatResponse, ChatError>),
    /// The client's session no longer remembers this sequence number: it was applied
    /// long ago and its response was forgotten. Nothing was applied now.
    SessionExpired {
        client_id: u64,
        seq: u64,
    },
}

impl std::fmt::Display for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

/// The whole replicated state. Serializable: it is the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct State {
    pub kv: KvStore,
    pub jobs: Jobs,
    pub chat: Chat,
    pub sessions: Sessions,
    pub last_applied: LogIndex,
}

impl State {
    /// Applies the entry at `index`. Entries must come in increasing index order; an
    /// index at or below `last_applied` is a replay and changes nothing.
    pub fn apply(&mut self, index: LogIndex, request: &Request) -> Response {
        if index <= self.last_applied {
            return Response::Noop;
        }
        self.last_applied = index;
        if let Some(tag) = request.client {
            match self.sessions.check(tag) {
                session::Seen::New => {}
                session::Seen::Duplicate(response) => return response,
                session::Seen::Expired => {
                    return Response::SessionExpired {
                        client_id: tag.client_id,
                        seq: tag.seq,
                    };
                }
            }
        }
        let response = match &request.command {
            Command::Noop => Response::Noop,
            Command::Kv(cmd) => Response::Kv(self.kv.apply(index, cmd)),
            Command::Jobs(cmd) => Response::Jobs(self.jobs.apply(index, cmd)),
            Command::Chat(cmd) => Response::Chat(self.chat.apply(index, cmd)),
        };
        if let Some(tag) = request.client {
            self.sessions.record(tag, index, response.clone());
        }
        debug_assert!(self.validate().is_ok(), "{:?}", self.validate());
        response
    }

    /// Checks the invariants tests rely on; `Err` names the broken one.
    pub fn validate(&self) -> Result<(), String> {
        self.kv.validate()?;
        self.jobs.validate()?;
        self.chat.validate()?;
        self.sessions.validate()
    }

    /// The snapshot bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_allocvec(self)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

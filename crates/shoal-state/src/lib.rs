//! shoal's replicated state machine.
//!
//! Every decision the cluster makes is a [`Command`] in the Raft log; every replica feeds
//! the committed log, in order, to [`State::apply`]. `apply` is pure — no IO, no clock,
//! no randomness — so replaying a log always yields the same state, and the tests can
//! check it without Raft.
//!
//! ```text
//!  client ──(client id, seq, command)──► leader ──► log ──► apply(state, at, request)
//!                                                              │
//!        retried request with a seen (id, seq) ◄── cached response and fence (applied once)
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
pub mod tokens;

use serde::{Deserialize, Serialize};
use shoal_types::Fence;

pub use chat::{Chat, ChatCommand, ChatError, ChatResponse};
pub use jobs::{JobCommand, JobError, JobResponse, Jobs};
pub use kv::{KvCommand, KvEntry, KvError, KvResponse, KvStore};
pub use session::{ClientTag, Sessions};
pub use tokens::{TokenCommand, TokenError, TokenResponse, Tokens};

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
    /// Appended last: earlier variants keep their postcard index.
    Tokens(TokenCommand),
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
            Command::Tokens(TokenCommand::Create { name, perms, .. }) => {
                write!(f, "create token {name} ({perms})")
            }
            Command::Tokens(TokenCommand::Revoke { name }) => write!(f, "revoke token {name}"),
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
    Tokens(Result<TokenResponse, TokenError>),
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

/// What applying one entry decided: the response, and the fence of the application that
/// produced it — the entry itself, or, for a retried request, its first application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub response: Response,
    pub at: Fence,
}

/// The snapshot format: a magic, this version, then the postcard encoding of [`State`].
/// Snapshots written before versioning (format 1) carry no magic.
const SNAPSHOT_MAGIC: &[u8; 4] = b"SHS\0";
pub const SNAPSHOT_FORMAT: u8 = 3;

/// A snapshot that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(
        "snapshot format {0} is newer than this shoal understands ({SNAPSHOT_FORMAT}); upgrade this node"
    )]
    Newer(u8),
    #[error("snapshot does not decode: {0}")]
    Decode(#[from] postcard::Error),
}

/// The whole replicated state. Serializable: it is the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct State {
    pub kv: KvStore,
    pub jobs: Jobs,
    pub chat: Chat,
    pub sessions: Sessions,
    pub last_applied: LogIndex,
    pub tokens: Tokens,
}

impl State {
    /// Applies the entry at `at` (its term and index). Entries must come in increasing
    /// index order; an index at or below `last_applied` is a replay and changes nothing.
    pub fn apply(&mut self, at: Fence, request: &Request) -> Answer {
        let index = LogIndex(at.index);
        let answer = |response| Answer { response, at };
        if index <= self.last_applied {
            return answer(Response::Noop);
        }
        self.last_applied = index;
        if let Some(tag) = request.client {
            match self.sessions.check(tag) {
                session::Seen::New => {}
                session::Seen::Duplicate(first) => {
                    return Answer {
                        response: first.response,
                        at: first.at,
                    };
                }
                session::Seen::Expired => {
                    return answer(Response::SessionExpired {
                        client_id: tag.client_id,
                        seq: tag.seq,
                    });
                }
            }
        }
        let response = match &request.command {
            Command::Noop => Response::Noop,
            Command::Kv(cmd) => Response::Kv(self.kv.apply(index, cmd)),
            Command::Jobs(cmd) => Response::Jobs(self.jobs.apply(index, cmd)),
            Command::Chat(cmd) => Response::Chat(self.chat.apply(index, cmd)),
            Command::Tokens(cmd) => Response::Tokens(self.tokens.apply(index, cmd)),
        };
        if let Some(tag) = request.client {
            self.sessions.record(tag, at, response.clone());
        }
        debug_assert!(self.validate().is_ok(), "{:?}", self.validate());
        answer(response)
    }

    /// Checks the invariants tests rely on; `Err` names the broken one.
    pub fn validate(&self) -> Result<(), String> {
        self.kv.validate()?;
        self.jobs.validate()?;
        self.chat.validate()?;
        self.tokens.validate()?;
        self.sessions.validate()
    }

    /// The snapshot bytes (see [`SNAPSHOT_FORMAT`]).
    pub fn to_bytes(&self) -> Result<Vec<u8>, postcard::Error> {
        let mut out = Vec::with_capacity(1024);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.push(SNAPSHOT_FORMAT);
        postcard::to_extend(self, out)
    }

    /// Reads a snapshot of this format, of format 2 (before tokens), or of format 1
    /// (before versioning).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let v1 = || postcard::from_bytes::<StateV1>(bytes).map(State::from);
        match bytes.strip_prefix(SNAPSHOT_MAGIC) {
            // A format 1 snapshot whose first bytes happen to spell the magic is still
            // read as one.
            Some([SNAPSHOT_FORMAT, rest @ ..]) => {
                postcard::from_bytes(rest).or_else(|e| v1().map_err(|_| e.into()))
            }
            Some([2, rest @ ..]) => postcard::from_bytes::<StateV2>(rest)
                .map(State::from)
                .or_else(|e| v1().map_err(|_| e.into())),
            Some([newer, ..]) if *newer > SNAPSHOT_FORMAT => {
                v1().map_err(|_| SnapshotError::Newer(*newer))
            }
            _ => Ok(v1()?),
        }
    }
}

/// [`State`] as format 2 snapshots held it (no tokens).
#[derive(Deserialize)]
struct StateV2 {
    kv: KvStore,
    jobs: Jobs,
    chat: Chat,
    sessions: Sessions,
    last_applied: LogIndex,
}

impl From<StateV2> for State {
    fn from(v2: StateV2) -> Self {
        Self {
            kv: v2.kv,
            jobs: v2.jobs,
            chat: v2.chat,
            sessions: v2.sessions,
            last_applied: v2.last_applied,
            tokens: Tokens::default(),
        }
    }
}

/// [`State`] as format 1 snapshots held it (sessions without fences).
#[derive(Deserialize)]
struct StateV1 {
    kv: KvStore,
    jobs: Jobs,
    chat: Chat,
    sessions: session::legacy::SessionsV1,
    last_applied: LogIndex,
}

impl From<StateV1> for State {
    fn from(v1: StateV1) -> Self {
        Self {
            kv: v1.kv,
            jobs: v1.jobs,
            chat: v1.chat,
            sessions: v1.sessions.into(),
            last_applied: v1.last_applied,
            tokens: Tokens::default(),
        }
    }
}

//! Client sessions: a retried request (same client id and sequence number) gets the
//! response of its first application instead of being applied again — and that
//! application's place in the log (its fence), not the retry's: a retried write must not
//! claim to come after writes that followed it.
//!
//! Each client keeps the responses of its most recent `RESPONSES_PER_CLIENT` requests;
//! below that window a sequence number is answered `SessionExpired`. At most
//! `SESSIONS_MAX` clients are remembered; beyond it the one idle for the most log
//! entries is forgotten. Both bounds are deterministic (driven by log indexes), so every
//! replica forgets the same things.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use shoal_types::Fence;

use crate::{LogIndex, Response};

/// Responses remembered per client.
pub const RESPONSES_PER_CLIENT: usize = 256;
/// Clients remembered.
pub const SESSIONS_MAX: usize = 10_000;

/// Who sent a request and its place in that client's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClientTag {
    pub client_id: u64,
    pub seq: u64,
}

/// A request's first application: what it answered, and where in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Recorded {
    pub(crate) response: Response,
    pub(crate) at: Fence,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
struct Session {
    responses: BTreeMap<u64, Recorded>,
    /// Sequence numbers below this were forgotten.
    floor: u64,
    last_index: LogIndex,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Sessions {
    by_client: BTreeMap<u64, Session>,
}

pub(crate) enum Seen {
    New,
    Duplicate(Recorded),
    Expired,
}

impl Sessions {
    pub(crate) fn check(&self, tag: ClientTag) -> Seen {
        let Some(s) = self.by_client.get(&tag.client_id) else {
            return Seen::New;
        };
        if let Some(r) = s.responses.get(&tag.seq) {
            return Seen::Duplicate(r.clone());
        }
        if tag.seq < s.floor {
            return Seen::Expired;
        }
        Seen::New
    }

    pub(crate) fn record(&mut self, tag: ClientTag, at: Fence, response: Response) {
        let s = self.by_client.entry(tag.client_id).or_default();
        s.responses.insert(tag.seq, Recorded { response, at });
        s.last_index = LogIndex(at.index);
        while s.responses.len() > RESPONSES_PER_CLIENT {
            if let Some((seq, _)) = s.responses.pop_first() {
                s.floor = s.floor.max(seq + 1);
            }
        }
        if self.by_client.len() > SESSIONS_MAX {
            let idlest = self
                .by_client
                .iter()
                .min_by_key(|(id, s)| (s.last_index, **id))
                .map(|(id, _)| *id);
            if let Some(id) = idlest {
                self.by_client.remove(&id);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.by_client.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.by_client.len() > SESSIONS_MAX {
            return Err("sessions: more clients than SESSIONS_MAX".into());
        }
        for (id, s) in &self.by_client {
            if s.responses.len() > RESPONSES_PER_CLIENT {
                return Err(format!("sessions: client {id} keeps too many responses"));
            }
            if s.responses
                .keys()
                .next()
                .is_some_and(|first| *first < s.floor)
            {
                return Err(format!("sessions: client {id} remembers below its floor"));
            }
        }
        Ok(())
    }
}

/// Sessions as snapshots before format 2 held them: responses without their fence.
pub(crate) mod legacy {
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use shoal_types::Fence;

    use super::{Recorded, Session};
    use crate::{LogIndex, Response};

    #[derive(Deserialize)]
    struct SessionV1 {
        responses: BTreeMap<u64, Response>,
        floor: u64,
        last_index: LogIndex,
    }

    #[derive(Deserialize)]
    pub(crate) struct SessionsV1 {
        by_client: BTreeMap<u64, SessionV1>,
    }

    impl From<SessionsV1> for super::Sessions {
        /// The first application's place was not recorded: a retry of such a request
        /// is answered with fence 0.0, below every decision (it is older than any the
        /// client can have seen since the upgrade).
        fn from(v1: SessionsV1) -> Self {
            let by_client = v1
                .by_client
                .into_iter()
                .map(|(id, s)| {
                    let responses = s
                        .responses
                        .into_iter()
                        .map(|(seq, response)| {
                            let at = Fence::default();
                            (seq, Recorded { response, at })
                        })
                        .collect();
                    let session = Session {
                        responses,
                        floor: s.floor,
                        last_index: s.last_index,
                    };
                    (id, session)
                })
                .collect();
            Self { by_client }
        }
    }
}

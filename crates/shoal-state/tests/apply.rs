//! apply() on its own: KV semantics, compare-and-set, idempotent retries, and replay
//! determinism (the property every replica relies on).

use proptest::prelude::*;
use shoal_state::{
    ChatCommand, ClientTag, Command, KvCommand, KvError, KvResponse, LogIndex, Request, Response,
    State,
    kv::{KEY_BYTES_MAX, VALUE_BYTES_MAX},
    session::RESPONSES_PER_CLIENT,
};
use shoal_types::Fence;

fn put(key: &str, value: &str) -> Command {
    Command::Kv(KvCommand::Put {
        key: key.into(),
        value: value.as_bytes().to_vec(),
    })
}

fn cas(key: &str, value: &str, expected_revision: u64) -> Command {
    Command::Kv(KvCommand::Cas {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        expected_revision,
    })
}

fn del(key: &str) -> Command {
    Command::Kv(KvCommand::Delete { key: key.into() })
}

/// Applies commands without client tags at indexes 1, 2, …
fn run(cmds: &[Command]) -> (State, Vec<Response>) {
    let mut s = State::default();
    let out = cmds
        .iter()
        .enumerate()
        .map(|(i, c)| {
            s.apply(
                at(i as u64 + 1),
                &Request {
                    client: None,
                    command: c.clone(),
                },
            )
            .response
        })
        .collect();
    (s, out)
}

/// The log position `index` in term 1.
fn at(index: u64) -> Fence {
    Fence::new(1, index)
}

#[test]
fn put_get_delete_and_revisions() {
    let (s, out) = run(&[
        put("a", "1"),
        put("b", "2"),
        put("a", "3"),
        del("b"),
        del("zz"),
    ]);
    assert_eq!(
        out[0],
        Response::Kv(Ok(KvResponse::Put {
            revision: 1,
            previous: None
        }))
    );
    assert_eq!(
        out[2],
        Response::Kv(Ok(KvResponse::Put {
            revision: 3,
            previous: Some(1)
        }))
    );
    assert_eq!(
        out[3],
        Response::Kv(Ok(KvResponse::Delete { revision: Some(4) }))
    );
    assert_eq!(
        out[4],
        Response::Kv(Ok(KvResponse::Delete { revision: None }))
    );
    let a = s.kv.get("a").unwrap();
    assert_eq!(
        (
            a.value.as_slice(),
            a.create_revision,
            a.mod_revision,
            a.version
        ),
        (&b"3"[..], 1, 3, 2)
    );
    assert!(s.kv.get("b").is_none());
    assert_eq!(
        s.kv.revision(),
        4,
        "a delete of a missing key changes nothing"
    );
    assert_eq!(s.last_applied, LogIndex(5));
}

#[test]
fn list_is_by_prefix_in_key_order() {
    let (s, _) = run(&[
        put("cfg/b", "2"),
        put("cfg/a", "1"),
        put("cfh", "x"),
        put("cf", "y"),
    ]);
    let keys: Vec<&str> = s.kv.list("cfg/").map(|(k, _)| k).collect();
    assert_eq!(keys, ["cfg/a", "cfg/b"]);
    assert_eq!(s.kv.list("").count(), 4);
    assert_eq!(s.kv.list("zzz").count(), 0);
}

#[test]
fn cas_writes_only_at_the_expected_revision() {
    let (s, out) = run(&[
        cas("k", "first", 0),  // absent: expected 0 → ok, revision 1
        cas("k", "again", 0),  // present now → mismatch
        cas("k", "second", 1), // at 1 → ok, revision 2
        cas("k", "stale", 1),  // stale → mismatch
    ]);
    assert!(matches!(out[0], Response::Kv(Ok(_))));
    assert_eq!(
        out[1],
        Response::Kv(Err(KvError::RevisionMismatch {
            expected: 0,
            actual: 1
        }))
    );
    assert!(matches!(
        out[2],
        Response::Kv(Ok(KvResponse::Put { revision: 2, .. }))
    ));
    assert_eq!(
        out[3],
        Response::Kv(Err(KvError::RevisionMismatch {
            expected: 1,
            actual: 2
        }))
    );
    assert_eq!(s.kv.get("k").unwrap().value, b"second");
    assert_eq!(
        s.kv.revision(),
        2,
        "refused writes do not move the revision"
    );
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let long_key = "k".repeat(KEY_BYTES_MAX + 1);
    let big = Command::Kv(KvCommand::Put {
        key: "k".into(),
        value: vec![0; VALUE_BYTES_MAX + 1],
    });
    let (s, out) = run(&[put("", "x"), put(&long_key, "x"), big]);
    assert_eq!(out[0], Response::Kv(Err(KvError::EmptyKey)));
    assert_eq!(
        out[1],
        Response::Kv(Err(KvError::KeyTooLong {
            len: KEY_BYTES_MAX + 1
        }))
    );
    assert_eq!(
        out[2],
        Response::Kv(Err(KvError::ValueTooLarge {
            len: VALUE_BYTES_MAX + 1
        }))
    );
    assert!(s.kv.is_empty());
    assert_eq!(s.kv.revision(), 0);
    assert!(
        KvError::KeyTooLong { len: 2000 }
            .to_string()
            .contains("limit is 1024")
    );
}

#[test]
fn a_retried_request_is_applied_once() {
    let mut s = State::default();
    let tag = ClientTag {
        client_id: 7,
        seq: 1,
    };
    let req = Request {
        client: Some(tag),
        command: put("x", "1"),
    };
    let first = s.apply(at(1), &req);
    // The client did not hear back, retried through another leader: a new log entry.
    let retry = s.apply(Fence::new(2, 2), &req);
    assert_eq!(
        first, retry,
        "the retry gets the first response, and its fence"
    );
    assert_eq!(s.kv.revision(), 1, "applied once");
    assert_eq!(s.kv.get("x").unwrap().version, 1);
    // A new sequence number is a new write.
    let next = Request {
        client: Some(ClientTag {
            client_id: 7,
            seq: 2,
        }),
        command: put("x", "2"),
    };
    assert!(matches!(
        s.apply(at(3), &next).response,
        Response::Kv(Ok(KvResponse::Put { revision: 2, .. }))
    ));
    // Another client with the same seq is independent.
    let other = Request {
        client: Some(ClientTag {
            client_id: 8,
            seq: 1,
        }),
        command: put("x", "3"),
    };
    assert!(matches!(
        s.apply(at(4), &other).response,
        Response::Kv(Ok(KvResponse::Put { revision: 3, .. }))
    ));
}

#[test]
fn a_replayed_index_changes_nothing() {
    let mut s = State::default();
    let req = Request {
        client: None,
        command: put("x", "1"),
    };
    s.apply(at(5), &req);
    let before = s.clone();
    assert_eq!(s.apply(at(5), &req).response, Response::Noop);
    assert_eq!(s.apply(at(3), &req).response, Response::Noop);
    assert_eq!(s, before);
}

#[test]
fn old_sequence_numbers_expire_instead_of_reapplying() {
    let mut s = State::default();
    let n = RESPONSES_PER_CLIENT as u64 + 10;
    for seq in 1..=n {
        let req = Request {
            client: Some(ClientTag { client_id: 1, seq }),
            command: put("k", "v"),
        };
        s.apply(at(seq), &req);
    }
    let revision = s.kv.revision();
    let old = Request {
        client: Some(ClientTag {
            client_id: 1,
            seq: 1,
        }),
        command: put("k", "again"),
    };
    assert_eq!(
        s.apply(at(n + 1), &old).response,
        Response::SessionExpired {
            client_id: 1,
            seq: 1
        }
    );
    assert_eq!(s.kv.revision(), revision, "an expired retry is not applied");
    s.validate().unwrap();
}

#[test]
fn snapshots_roundtrip() {
    let (s, _) = run(&[put("a", "1"), cas("b", "2", 0), del("a")]);
    assert_eq!(State::from_bytes(&s.to_bytes().unwrap()).unwrap(), s);
}

/// Keys with their values and revisions, without log positions.
fn contents(s: &State) -> Vec<(String, Vec<u8>, u64, u64, u64)> {
    s.kv.list("")
        .map(|(k, e)| {
            (
                k.to_string(),
                e.value.clone(),
                e.create_revision,
                e.mod_revision,
                e.version,
            )
        })
        .collect()
}

/// A room's name, members and (seq, user, text) of its messages.
type RoomContents = (String, Vec<String>, Vec<(u64, String, String)>);

/// Every room's members and messages, without log positions.
fn chat_contents(s: &State) -> Vec<RoomContents> {
    s.chat
        .rooms()
        .map(|(name, r)| {
            (
                name.clone(),
                r.members.iter().cloned().collect(),
                r.messages_from(0, usize::MAX)
                    .map(|m| (m.seq, m.user.clone(), m.text.clone()))
                    .collect(),
            )
        })
        .collect()
}

fn arb_command() -> impl Strategy<Value = Command> {
    let key = prop::sample::select(vec!["a", "b", "c", "cfg/x", "cfg/y", ""]);
    let value = prop::collection::vec(any::<u8>(), 0..8);
    prop_oneof![
        (key.clone(), value.clone()).prop_map(|(k, v)| Command::Kv(KvCommand::Put {
            key: k.into(),
            value: v
        })),
        key.clone()
            .prop_map(|k| Command::Kv(KvCommand::Delete { key: k.into() })),
        (key, value, 0u64..6).prop_map(|(k, v, r)| Command::Kv(KvCommand::Cas {
            key: k.into(),
            value: v,
            expected_revision: r
        })),
        Just(Command::Noop),
        arb_chat(),
    ]
}

/// Chat commands over a few rooms, users and client ids, some of them invalid.
fn arb_chat() -> impl Strategy<Value = Command> {
    let room = prop::sample::select(vec!["r1", "r2", "bad room"]);
    let user = prop::sample::select(vec!["ann", "bob"]);
    let id = prop::sample::select(vec!["", "m1", "m2", "m3"]);
    let text = prop::sample::select(vec!["hi", "", "yo"]);
    prop_oneof![
        room.clone()
            .prop_map(|r| Command::Chat(ChatCommand::CreateRoom { room: r.into() })),
        (room.clone(), user.clone()).prop_map(|(r, u)| Command::Chat(ChatCommand::Join {
            room: r.into(),
            user: u.into()
        })),
        (room.clone(), user.clone()).prop_map(|(r, u)| Command::Chat(ChatCommand::Leave {
            room: r.into(),
            user: u.into()
        })),
        (room, user, text, id, 0u64..5).prop_map(|(r, u, t, i, l)| Command::Chat(
            ChatCommand::Post {
                room: r.into(),
                user: u.into(),
                text: t.into(),
                client_msg_id: i.into(),
                lamport: l,
                ts_ms: 7,
            }
        )),
    ]
}

fn arb_request() -> impl Strategy<Value = Request> {
    (arb_command(), prop::option::of((0u64..3, 0u64..6))).prop_map(|(command, tag)| Request {
        client: tag.map(|(client_id, seq)| ClientTag { client_id, seq }),
        command,
    })
}

proptest! {
    /// Two replicas fed the same log end in the same state with the same responses,
    /// and a replica restored from a snapshot midway ends there too.
    #[test]
    fn replay_is_deterministic(log in prop::collection::vec(arb_request(), 0..60), cut in 0usize..60) {
        let mut a = State::default();
        let mut b = State::default();
        let mut restored: Option<State> = None;
        for (i, req) in log.iter().enumerate() {
            let idx = at(i as u64 + 1);
            prop_assert_eq!(a.apply(idx, req), b.apply(idx, req));
            if i + 1 == cut.min(log.len()) {
                restored = Some(State::from_bytes(&a.to_bytes().unwrap()).unwrap());
            }
            if let Some(r) = restored.as_mut().filter(|_| i + 1 > cut) {
                r.apply(idx, req);
            }
        }
        prop_assert_eq!(&a, &b);
        a.validate().map_err(TestCaseError::fail)?;
        if let Some(r) = restored {
            prop_assert_eq!(&r, &a);
        }
    }

    /// Applying any tagged request twice in a row (a retry) leaves the state as one
    /// application did, except for the log position.
    #[test]
    fn retries_are_idempotent(log in prop::collection::vec(arb_request(), 1..40)) {
        let mut once = State::default();
        let mut twice = State::default();
        let mut idx_twice = 0;
        for (i, req) in log.iter().enumerate() {
            let r1 = once.apply(at(i as u64 + 1), req);
            idx_twice += 1;
            let r2 = twice.apply(at(idx_twice), req);
            prop_assert_eq!(&r1.response, &r2.response);
            if req.client.is_some() {
                idx_twice += 1;
                let again = twice.apply(at(idx_twice), req);
                prop_assert_eq!(&again.response, &r1.response, "the retry answers like the first time");
                prop_assert_eq!(again.at, r2.at, "with the first application's fence");
            }
        }
        // Same contents and revisions; only the log positions differ.
        prop_assert_eq!(contents(&once), contents(&twice));
        prop_assert_eq!(once.kv.revision(), twice.kv.revision());
        prop_assert_eq!(chat_contents(&once), chat_contents(&twice));
    }
}

/// A retried write is answered with its first application's fence, not the fence of
/// the retry's own log entry: the retry must not claim to come after writes that
/// followed the original (the case: put x=a tagged (77, 1) at 1.2, put x=b at
/// 1.3, the retry of the first at 1.4).
#[test]
fn a_retried_write_keeps_its_first_fence() {
    let mut s = State::default();
    let tagged = |seq, value: &str| Request {
        client: Some(ClientTag { client_id: 77, seq }),
        command: put("x", value),
    };
    let first = s.apply(at(2), &tagged(1, "a"));
    assert!(matches!(
        first.response,
        Response::Kv(Ok(KvResponse::Put { revision: 1, .. }))
    ));
    assert_eq!(first.at, at(2));
    let second = s.apply(at(3), &tagged(2, "b"));
    assert_eq!(second.at, at(3));
    let retry = s.apply(at(4), &tagged(1, "a"));
    assert_eq!(
        retry.response, first.response,
        "revision 1, as the first time"
    );
    assert_eq!(
        retry.at,
        at(2),
        "the first write's fence, below the second's"
    );
    assert!(retry.at < second.at);

    // A compare-and-set retried the same way.
    let cas_req = Request {
        client: Some(ClientTag {
            client_id: 77,
            seq: 3,
        }),
        command: cas("x", "c", 2),
    };
    let first = s.apply(at(5), &cas_req);
    s.apply(at(6), &tagged(4, "d"));
    let retry = s.apply(at(7), &cas_req);
    assert_eq!((retry.response, retry.at), (first.response, at(5)));

    // The fences survive a snapshot.
    let mut restored = State::from_bytes(&s.to_bytes().expect("encodes")).expect("decodes");
    assert_eq!(restored.apply(at(8), &cas_req).at, at(5));
}

/// Snapshots written before the format was versioned (format 1: sessions without
/// fences) still load; their remembered responses answer retries with fence 0.0.
#[test]
fn a_format_1_snapshot_still_loads() {
    use std::collections::BTreeMap;

    #[derive(serde::Serialize)]
    struct SessionV1 {
        responses: BTreeMap<u64, Response>,
        floor: u64,
        last_index: LogIndex,
    }
    let mut s = State::default();
    let req = Request {
        client: Some(ClientTag {
            client_id: 5,
            seq: 1,
        }),
        command: put("k", "v"),
    };
    let first = s.apply(at(1), &req);
    let sessions: BTreeMap<u64, SessionV1> = BTreeMap::from([(
        5,
        SessionV1 {
            responses: BTreeMap::from([(1, first.response.clone())]),
            floor: 0,
            last_index: LogIndex(1),
        },
    )]);
    // Format 1 was the plain postcard encoding of the state's fields, in order.
    let v1 = postcard::to_allocvec(&(&s.kv, &s.jobs, &s.chat, (sessions,), s.last_applied))
        .expect("encodes");
    let mut loaded = State::from_bytes(&v1).expect("a format 1 snapshot loads");
    assert_eq!(loaded.kv, s.kv);
    let retry = loaded.apply(at(2), &req);
    assert_eq!(retry.response, first.response, "still applied once");
    assert_eq!(retry.at, Fence::default());
    assert_eq!(loaded.kv.revision(), 1);
}

#[test]
fn a_snapshot_from_a_newer_format_is_refused_by_name() {
    let mut bytes = State::default().to_bytes().expect("encodes");
    bytes[4] = shoal_state::SNAPSHOT_FORMAT + 1;
    let err = State::from_bytes(&bytes).expect_err("newer format");
    assert!(err.to_string().contains("newer"), "{err}");
}

/// Format 2 (before tokens) was the magic, 2, then the state's fields up to
/// `last_applied`; it loads with an empty token table and applies on as before.
#[test]
fn a_format_2_snapshot_still_loads() {
    let mut s = State::default();
    s.apply(
        at(1),
        &Request {
            client: None,
            command: put("k", "v"),
        },
    );
    let mut v2 = b"SHS\0\x02".to_vec();
    v2.extend(
        postcard::to_allocvec(&(&s.kv, &s.jobs, &s.chat, &s.sessions, s.last_applied))
            .expect("encodes"),
    );
    let loaded = State::from_bytes(&v2).expect("a format 2 snapshot loads");
    assert_eq!(loaded, s);
    assert!(loaded.tokens.list().is_empty());
}

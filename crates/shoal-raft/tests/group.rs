//! Three Raft replicas in one process through shoal's own `RaftGroup` interface, each
//! with its own SQLite log and shoal's state machine, over the in-process network.

use std::{collections::BTreeMap, time::Duration};

use shoal_raft::{
    DiskLog,
    group::{
        GroupError, RaftGroup, RaftTiming,
        network::{Router, RouterFactory},
    },
};
use shoal_state::{ClientTag, Command, KvCommand, KvResponse, Request, Response};

async fn start(router: &Router, id: u64) -> RaftGroup {
    let network = RouterFactory {
        from: id,
        router: router.clone(),
    };
    let log = DiskLog::open_in_memory().unwrap();
    let group = RaftGroup::start(id, RaftTiming::LOCAL, log, network)
        .await
        .unwrap();
    router.add(&group);
    group
}

fn put(key: &str, value: &str, tag: Option<ClientTag>) -> Request {
    Request {
        client: tag,
        command: Command::Kv(KvCommand::Put {
            key: key.into(),
            value: value.as_bytes().to_vec(),
        }),
    }
}

/// `members` replicas, the first `voters` of them forming the group; returns them and
/// the elected leader's id.
async fn form(router: &Router, members: u64, voters: u64) -> (BTreeMap<u64, RaftGroup>, u64) {
    let mut groups = BTreeMap::new();
    for id in 1..=members {
        groups.insert(id, start(router, id).await);
    }
    let initial = (1..=voters).map(|id| (id, format!("n{id}"))).collect();
    groups[&1].initialize(initial).await.unwrap();
    let leader = leader_among(&groups, None).await;
    (groups, leader)
}

/// Polls until one of `groups` (other than `except`) is leader in every live view.
async fn leader_among(groups: &BTreeMap<u64, RaftGroup>, except: Option<u64>) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        for (id, g) in groups {
            if Some(*id) != except && g.status().role == "leader" {
                return *id;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no leader within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn all_have(groups: &BTreeMap<u64, RaftGroup>, ids: &[u64], key: &str, value: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let want = Some(value.as_bytes().to_vec());
    loop {
        if ids
            .iter()
            .all(|id| groups[id].read(|s| s.kv.get(key).map(|e| e.value.clone())) == want)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key}={value} not applied on {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Elect, replicate, refuse writes on followers, apply a retried write once, fail over
/// when the leader is cut off, and let the old leader catch up when it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_elect_replicate_and_fail_over() {
    let router = Router::default();
    let (groups, leader) = form(&router, 3, 3).await;
    let tag = Some(ClientTag {
        client_id: 9,
        seq: 1,
    });
    let first = groups[&leader].propose(put("a", "1", tag)).await.unwrap();
    assert!(matches!(
        first.response,
        Response::Kv(Ok(KvResponse::Put { revision: 1, .. }))
    ));
    // The client retries (it never heard back): applied once, same answer.
    let retry = groups[&leader].propose(put("a", "1", tag)).await.unwrap();
    assert_eq!(retry.response, first.response);
    // The retry is a new log entry, but it is answered with the first application's
    // place in the log (its fence), not its own.
    assert_eq!((retry.term, retry.index), (first.term, first.index));
    assert!(groups[&leader].read(|s| s.last_applied.0) > first.index.0);
    all_have(&groups, &[1, 2, 3], "a", "1").await;
    assert_eq!(groups[&leader].read(|s| s.kv.revision()), 1);

    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let refused = groups[&follower].propose(put("x", "y", None)).await;
    assert_eq!(
        refused,
        Err(GroupError::NotLeader {
            leader: Some(leader)
        })
    );
    groups[&leader].read_linearizable().await.unwrap();
    assert_eq!(groups[&follower].leader().map(|l| l.0), Some(leader));
    assert_eq!(groups[&leader].status().voters, vec![1, 2, 3]);

    // Cut the leader off: the other two elect a new leader and keep committing.
    router.set_cut(leader, true);
    // Leadership may still settle (a pre-vote race): retry like a client would.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let next = loop {
        let next = leader_among(&groups, Some(leader)).await;
        match groups[&next].propose(put("b", "2", None)).await {
            Ok(_) => break next,
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "no commit: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_ne!(next, leader);
    let majority: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    all_have(&groups, &majority, "b", "2").await;
    assert!(
        groups[&leader].read(|s| s.kv.get("b").is_none()),
        "the cut-off node cannot have applied a write it never received"
    );
    assert!(
        groups[&next].status().term > groups[&leader].status().term
            || groups[&leader].status().role != "leader"
    );

    // Reconnected, the old leader catches up and the replicas agree.
    router.set_cut(leader, false);
    all_have(&groups, &[1, 2, 3], "b", "2").await;
    let states: Vec<_> = groups.values().map(|g| g.read(|s| s.kv.clone())).collect();
    assert!(states.windows(2).all(|w| w[0] == w[1]), "replicas agree");
    for g in groups.values() {
        g.shutdown().await;
    }
}

/// Two membership changes at once (an operator's request while the leader promotes a
/// caught-up learner, say): the second waits for the first instead of being refused
/// with "already undergoing a configuration change", and both take effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_membership_changes_both_take_effect() {
    let router = Router::default();
    let (groups, leader) = form(&router, 5, 3).await;
    let g = &groups[&leader];
    g.add_learner(4, "n4".into()).await.unwrap();
    g.add_learner(5, "n5".into()).await.unwrap();
    let (a, b) = tokio::join!(
        g.add_voters([4].into_iter().collect()),
        g.add_voters([5].into_iter().collect()),
    );
    a.unwrap();
    b.unwrap();
    let voters = g.status().voters;
    assert!(
        voters.contains(&4) && voters.contains(&5) && voters.len() == 5,
        "{voters:?}"
    );
    // And a removal right behind an addition.
    let (a, b) = tokio::join!(
        g.remove_voters([5].into_iter().collect(), false),
        g.remove_voters([4].into_iter().collect(), false),
    );
    a.unwrap();
    b.unwrap();
    assert_eq!(g.status().voters.len(), 3, "{:?}", g.status().voters);
    for g in groups.values() {
        g.shutdown().await;
    }
}

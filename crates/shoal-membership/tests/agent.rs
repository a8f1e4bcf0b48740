//! The async agent on the in-memory network under tokio's paused clock: the shell
//! (one task owning the core, timers, the events stream, commands) behaves like the
//! core does in simulation.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use futures_util::StreamExt;
use shoal_membership::{
    CoreConfig, EventKind, MemNetwork, Membership, MembershipConfig, MembershipHandle,
};
use shoal_types::{GossipTiming, Lifecycle, MemberState, NodeId, NodeMeta, Profile, Role};

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i], 9001))
}

fn start(net: &MemNetwork, i: u8, seeds: Vec<SocketAddr>) -> MembershipHandle {
    let meta = NodeMeta {
        id: NodeId::new(format!("a{i}")).unwrap(),
        role: Role::Worker,
        dc: "dc1".into(),
        tcp_addr: SocketAddr::from(([10, 0, 0, i], 9000)),
        tags: BTreeMap::new(),
        lifecycle: Lifecycle::Active,
        version: 1,
        build: "test".into(),
        cores: 2,
        load_permille: 0,
        chat_clients: 0,
        chat_messages: 0,
        leader_hint: None,
        leader_term: 0,
        started_unix_ms: 0,
    };
    let core = CoreConfig {
        meta,
        gossip_addr: addr(i),
        timing: GossipTiming::for_profile(Profile::Local),
        keys: vec![[3; 32]],
        rng_seed: i as u64,
        bump: 1,
    };
    let transport = net.bind(addr(i)).unwrap();
    Membership::start(MembershipConfig { core, seeds }, transport).unwrap()
}

async fn until(what: &str, budget: Duration, mut pred: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + budget;
    while !pred() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn state(h: &MembershipHandle, id: &str) -> Option<MemberState> {
    h.snapshot()
        .members
        .iter()
        .find(|m| m.id == id)
        .map(|m| m.state)
}

/// Three agents converge; one is cut off and every other agent's event stream reports
/// it failed; a tag set through the handle reaches the others; stop() is silent.
#[tokio::test(start_paused = true)]
async fn agents_converge_detect_and_stream_events() {
    let net = MemNetwork::new(7);
    let a1 = start(&net, 1, vec![]);
    let a2 = start(&net, 2, vec![addr(1)]);
    let a3 = start(&net, 3, vec![addr(1)]);
    let mut events = a1.events();
    until("3 alive everywhere", Duration::from_secs(20), || {
        [&a1, &a2, &a3]
            .iter()
            .all(|h| h.snapshot().count(MemberState::Alive) == 3)
    })
    .await;
    a2.set_tag("zone", "b").await.unwrap();
    until("the tag spreads", Duration::from_secs(10), || {
        let snap = a3.snapshot();
        let m = snap.members.iter().find(|m| m.id == "a2").unwrap();
        m.tags.get("zone").map(String::as_str) == Some("b")
    })
    .await;
    net.partition(&[addr(3)], &[addr(1), addr(2)]);
    until("a3 failed at a1 and a2", Duration::from_secs(10), || {
        state(&a1, "a3") == Some(MemberState::Failed)
            && state(&a2, "a3") == Some(MemberState::Failed)
    })
    .await;
    let mut kinds = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(1), events.next()).await {
        kinds.push((e.kind, e.member.id));
    }
    assert!(
        kinds.contains(&(EventKind::NodeJoined, "a2".into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&(EventKind::NodeFailed, "a3".into())),
        "{kinds:?}"
    );
    a1.stop().await;
    assert!(
        a1.set_tag("x", "y").await.is_err(),
        "a stopped agent refuses commands"
    );
}

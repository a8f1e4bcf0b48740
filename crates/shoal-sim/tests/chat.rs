//! Simulation of chat across failures: three managers (shoal's `RaftGroup` on the
//! in-process network, paused clock, one thread), five clients posting concurrently,
//! and three subscribers following the room through the managers' own subscription
//! code ([`shoal_node::chat::follow`]).
//!
//! Per seed: the leader is killed, restarted from disk a moment later, then one manager
//! is cut off from the others and the partition heals. Clients retry each post until
//! acknowledged (the same client message id every time); a subscriber whose manager
//! died, or has known no leader for 2 s, moves to another and resumes after the last
//! seq it saw — as `shoal chat` does.
//!
//! Checked: every subscriber sees seqs 1, 2, 3, … with no gap and no repeat; at the end
//! every acknowledged message is in the room exactly once, at the seq its
//! acknowledgement named, each client's messages in the order it posted them, and all
//! three replicas hold the identical history.
//!
//! `SHOAL_SIM_SEED=<seed>` replays one seed.

use std::{
    cell::RefCell,
    collections::{BTreeMap, HashMap},
    rc::Rc,
    time::Duration,
};

use rand::{RngExt as _, SeedableRng, rngs::StdRng};
use shoal_proto::v1::{ChatEvent, chat_event::Event};
use shoal_raft::group::GroupOptions;
use shoal_sim::raft::{Live, RaftCluster, commit, paused_local};
use shoal_state::{ChatCommand, ChatResponse, ClientTag, Command, Request, Response};

const CLIENTS: u64 = 5;
const POSTS_PER_CLIENT: u64 = 30;
const SUBSCRIBERS: u64 = 3;
const ROOM: &str = "lobby";

fn options() -> GroupOptions {
    shoal_sim::raft::options(100, 20)
}

/// What the run observed.
#[derive(Default)]
struct Seen {
    /// (client, post number) → the seq its acknowledgement named.
    acked: BTreeMap<(u64, u64), u64>,
    /// Per subscriber: the seqs it received, in order.
    received: BTreeMap<u64, Vec<u64>>,
    violations: Vec<String>,
    log: Vec<String>,
}

struct Sim {
    seed: u64,
    cluster: RaftCluster,
    live: Live,
    seen: Rc<RefCell<Seen>>,
}

impl Sim {
    fn fail(&self, what: &str) -> ! {
        let seen = self.seen.borrow();
        panic!(
            "chat simulation, seed {}: {what}\nsteps: {:#?}\nreplay: SHOAL_SIM_SEED={} cargo test -p shoal-sim --test chat",
            self.seed, seen.log, self.seed
        );
    }

    fn note(&self, s: String) {
        self.seen.borrow_mut().log.push(s);
    }

    fn leader(&self) -> Option<u64> {
        self.cluster.leader()
    }

    /// The room's messages on replica `id`: (seq, user, text, client message id).
    fn history(&self, id: u64) -> Vec<(u64, String, String, String)> {
        let g = self.live.borrow()[&id].clone();
        g.read(|s| {
            s.chat
                .room(ROOM)
                .map(|r| {
                    r.messages_from(1, usize::MAX)
                        .map(|m| {
                            (
                                m.seq,
                                m.user.clone(),
                                m.text.clone(),
                                m.client_msg_id.clone(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default()
        })
    }
}

/// One client: posts its messages one at a time, each until acknowledged.
async fn client(id: u64, live: Live, seen: Rc<RefCell<Seen>>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed ^ (id << 8));
    for n in 1..=POSTS_PER_CLIENT {
        let req = Request {
            client: Some(ClientTag {
                client_id: id,
                seq: n,
            }),
            command: Command::Chat(ChatCommand::Post {
                room: ROOM.into(),
                user: format!("u{id}"),
                text: format!("message {n} from u{id}"),
                client_msg_id: format!("c{id}-{n}"),
                lamport: n,
                ts_ms: 1,
            }),
        };
        match commit(&live, &mut rng, req).await.response {
            Response::Chat(Ok(ChatResponse::Posted { seq, .. })) => {
                seen.borrow_mut().acked.insert((id, n), seq);
            }
            other => seen
                .borrow_mut()
                .violations
                .push(format!("client {id} post {n} answered {other:?}")),
        }
        let pause = rng.random_range(10..150);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// One subscriber: follows the room through a live manager, moving on (and resuming
/// after its last seq) when that manager dies or has known no leader for 2 s.
async fn subscriber(id: u64, live: Live, seen: Rc<RefCell<Seen>>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed ^ (id << 16) ^ 0x5eed);
    let mut next = 1u64;
    loop {
        let picked = {
            let live = live.borrow();
            let ids: Vec<u64> = live.keys().copied().collect();
            (!ids.is_empty()).then(|| ids[rng.random_range(0..ids.len())])
        };
        let Some(server) = picked else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let group = live.borrow()[&server].clone();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<ChatEvent, tonic::Status>>(64);
        let follower =
            tokio::task::spawn_local(shoal_node::chat::follow(group, ROOM.into(), next, tx));
        let mut leaderless_since: Option<tokio::time::Instant> = None;
        loop {
            if !live.borrow().contains_key(&server) {
                break;
            }
            let event = match tokio::time::timeout(Duration::from_millis(600), rx.recv()).await {
                Ok(Some(Ok(e))) => e,
                // Silent, or the stream ended (the room is not applied there yet).
                Ok(Some(Err(_)) | None) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    break;
                }
                Err(_) => break,
            };
            match event.event {
                Some(Event::Message(m)) => {
                    leaderless_since = None;
                    let mut s = seen.borrow_mut();
                    if m.seq != next {
                        s.violations.push(format!(
                            "subscriber {id} via {server}: got seq {} where {next} was due",
                            m.seq
                        ));
                    }
                    next = m.seq + 1;
                    s.received.entry(id).or_default().push(m.seq);
                }
                Some(Event::Heartbeat(h)) => {
                    if h.leader_known {
                        leaderless_since = None;
                    } else if leaderless_since
                        .get_or_insert_with(tokio::time::Instant::now)
                        .elapsed()
                        >= Duration::from_secs(2)
                    {
                        break;
                    }
                }
                None => {}
            }
        }
        follower.abort();
    }
}

async fn run(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let cluster = RaftCluster::new("chat", seed, 3, options());
    let sim = Sim {
        seed,
        live: cluster.live.clone(),
        cluster,
        seen: Rc::default(),
    };
    sim.cluster.form().await;
    let first = sim.cluster.group(1).expect("replica 1");
    first
        .await_leader(None, Duration::from_secs(5))
        .await
        .unwrap_or_else(|| sim.fail("no first leader"));
    let create = Request {
        client: None,
        command: Command::Chat(ChatCommand::CreateRoom { room: ROOM.into() }),
    };
    if !matches!(
        commit(&sim.live, &mut rng, create).await.response,
        Response::Chat(Ok(ChatResponse::Created))
    ) {
        sim.fail("the room was not created");
    }

    let subscribers: Vec<_> = (1..=SUBSCRIBERS)
        .map(|s| tokio::task::spawn_local(subscriber(s, sim.live.clone(), sim.seen.clone(), seed)))
        .collect();
    let clients: Vec<_> = (1..=CLIENTS)
        .map(|c| tokio::task::spawn_local(client(c, sim.live.clone(), sim.seen.clone(), seed)))
        .collect();

    // The faults.
    tokio::time::sleep(Duration::from_millis(rng.random_range(300..1200))).await;
    let Some(victim) = sim.leader() else {
        sim.fail("no leader to kill");
    };
    sim.note(format!("kill leader {victim}"));
    sim.cluster.crash(victim).await;
    tokio::time::sleep(Duration::from_millis(rng.random_range(500..1500))).await;
    sim.note(format!("restart {victim}"));
    sim.cluster.start(victim).await;
    tokio::time::sleep(Duration::from_millis(rng.random_range(300..1000))).await;
    let cut = rng.random_range(1..=3u64);
    sim.note(format!("cut {cut} off (leader: {:?})", sim.leader()));
    for other in (1..=3).filter(|o| *o != cut) {
        sim.cluster.router.set_blocked(cut, other, true);
        sim.cluster.router.set_blocked(other, cut, true);
    }
    tokio::time::sleep(Duration::from_millis(rng.random_range(1000..2500))).await;
    sim.note("heal".into());
    sim.cluster.router.heal();

    for c in clients {
        c.await.expect("client task");
    }
    let acked = sim.seen.borrow().acked.clone();
    if acked.len() as u64 != CLIENTS * POSTS_PER_CLIENT {
        sim.fail(&format!("only {} posts acknowledged", acked.len()));
    }
    // Every replica reaches the same history; every subscriber receives all of it.
    let total = CLIENTS * POSTS_PER_CLIENT;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let complete = (1..=3).all(|id| sim.history(id).len() as u64 == total)
            && (1..=SUBSCRIBERS).all(|s| {
                sim.seen
                    .borrow()
                    .received
                    .get(&s)
                    .is_some_and(|r| r.len() as u64 == total)
            });
        if complete {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let lens: Vec<usize> = (1..=3).map(|id| sim.history(id).len()).collect();
            let got: Vec<usize> = (1..=SUBSCRIBERS)
                .map(|s| sim.seen.borrow().received.get(&s).map_or(0, Vec::len))
                .collect();
            sim.fail(&format!(
                "no convergence: replicas hold {lens:?}, subscribers got {got:?} of {total}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for s in subscribers {
        s.abort();
    }
    if let Some(v) = sim.seen.borrow().violations.first() {
        sim.fail(v);
    }
    let reference = sim.history(1);
    for id in 2..=3 {
        if sim.history(id) != reference {
            sim.fail(&format!("replica {id}'s history differs from replica 1's"));
        }
    }
    // Exactly once, where the acknowledgement said, in each client's order.
    let by_id: HashMap<&str, u64> = reference
        .iter()
        .map(|(seq, _, _, cid)| (cid.as_str(), *seq))
        .collect();
    if by_id.len() != reference.len() {
        sim.fail("a client message id is stored twice");
    }
    for ((c, n), seq) in &acked {
        let cid = format!("c{c}-{n}");
        match by_id.get(cid.as_str()) {
            Some(s) if s == seq => {}
            other => sim.fail(&format!(
                "{cid} acknowledged at seq {seq}, stored at {other:?}"
            )),
        }
        if *n > 1 && acked[&(*c, n - 1)] >= *seq {
            sim.fail(&format!(
                "client {c}'s post {n} is ordered before post {}",
                n - 1
            ));
        }
    }
    sim.cluster.shutdown().await;
}

#[test]
fn posts_survive_a_leader_kill_and_a_healed_partition() {
    for seed in shoal_sim::seeds(1..=50) {
        paused_local(run(seed));
    }
}

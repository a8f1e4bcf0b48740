//! A simulated Raft group: shoal's real [`RaftGroup`]s (durable log, state machine,
//! openraft) on the in-process [`Router`] network, driven on one thread by a paused
//! tokio clock. With [`WriteMode::Simulated`](shoal_raft::group::WriteMode::Simulated) the replicas write through the production
//! path — the log writer thread, its batching and real syncs — while each write in
//! flight holds the paused clock. Faults come from the router (cuts, one-way blocks, loss,
//! blackholes, breakers) and from [`RaftCluster::crash`] / [`RaftCluster::start`].
//!
//! ```text
//!   paused_local(async { … })      one thread, virtual time, spawn_local allowed
//!     RaftCluster::new(tag, seed, n, options)  → a temp dir, a router
//!     start(id)… / form()                      → replicas, the group initialized
//!     router.set_cut / set_blocked / heal      → the network's faults
//!     crash(id) / start(id)                    → a process crash and restart from disk
//! ```

use std::{
    cell::RefCell, collections::BTreeMap, future::Future, path::PathBuf, rc::Rc, time::Duration,
};

use rand::{RngExt as _, rngs::StdRng};
use shoal_raft::{
    DiskLog,
    group::{
        Applied, GroupError, GroupOptions, RaftGroup, RaftTiming, WriteMode,
        network::{Router, RouterFactory},
    },
};
use shoal_state::Request;

/// A simulated group's options: `local` timing, the production write path
/// (`WriteMode::Simulated`), a snapshot every `snapshot_every` entries keeping
/// `keep_behind` behind it (small, so snapshots and compaction happen within a run).
pub fn options(snapshot_every: u64, keep_behind: u64) -> GroupOptions {
    GroupOptions {
        timing: RaftTiming::LOCAL,
        snapshot_every,
        keep_behind_snapshot: keep_behind,
        write_mode: WriteMode::Simulated,
    }
}

/// The running replicas by id, shared with the tasks of a run.
pub type Live = Rc<RefCell<BTreeMap<u64, RaftGroup>>>;

/// `n` replicas (ids 1..=n), their logs in a temp dir, one router between them.
pub struct RaftCluster {
    pub n: u64,
    pub dir: PathBuf,
    pub router: Router,
    pub live: Live,
    options: GroupOptions,
}

impl RaftCluster {
    /// A cluster with nothing started; `tag` and `seed` name its directory.
    pub fn new(tag: &str, seed: u64, n: u64, options: GroupOptions) -> Self {
        let dir =
            std::env::temp_dir().join(format!("shoal-sim-{tag}-{}-{n}-{seed}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("sim dir");
        Self {
            n,
            dir,
            router: Router::default(),
            live: Rc::default(),
            options,
        }
    }

    /// Starts replica `id` on its log (recovering what it holds). With a log writer
    /// (`WriteMode::Simulated`) the log syncs as in production; inline, it does not.
    pub async fn start(&self, id: u64) {
        let path = self.dir.join(format!("{id}.db"));
        let log = if self.options.write_mode.has_writer() {
            DiskLog::open(&path)
        } else {
            DiskLog::open_unsynced(&path)
        }
        .expect("log");
        let network = RouterFactory {
            from: id,
            router: self.router.clone(),
        };
        let g = RaftGroup::start(id, self.options, log, network)
            .await
            .expect("start");
        self.router.add(&g);
        self.live.borrow_mut().insert(id, g);
    }

    /// Starts every replica and forms the group with all of them as voters.
    pub async fn form(&self) {
        for id in 1..=self.n {
            self.start(id).await;
        }
        let voters = (1..=self.n).map(|id| (id, format!("n{id}"))).collect();
        self.group(1)
            .expect("replica 1 runs")
            .initialize(voters)
            .await
            .expect("initialize");
    }

    /// Crashes replica `id` (off the network, its Raft stopped); false if it was down.
    pub async fn crash(&self, id: u64) -> bool {
        let g = self.live.borrow_mut().remove(&id);
        self.router.remove(id);
        match g {
            Some(g) => {
                g.shutdown().await;
                true
            }
            None => false,
        }
    }

    pub fn group(&self, id: u64) -> Option<RaftGroup> {
        self.live.borrow().get(&id).cloned()
    }

    /// The replicas that are down.
    pub fn crashed(&self) -> Vec<u64> {
        (1..=self.n)
            .filter(|i| !self.live.borrow().contains_key(i))
            .collect()
    }

    /// A replica that believes it leads (there may briefly be a stale one too).
    pub fn leader(&self) -> Option<u64> {
        self.live
            .borrow()
            .iter()
            .find(|(_, g)| g.status().role == "leader")
            .map(|(id, _)| *id)
    }

    /// Stops every replica and removes the directory.
    pub async fn shutdown(self) {
        let groups: Vec<RaftGroup> = self.live.borrow().values().cloned().collect();
        for g in groups {
            g.shutdown().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Proposes `req` wherever the leader is until it is applied, as a client would: a
/// random replica first, then the leader each refusal names. Retries forever (the
/// caller bounds it); `rng` picks the replicas, so a seed replays the same choices.
pub async fn commit(live: &Live, rng: &mut StdRng, req: Request) -> Applied {
    let mut target: Option<u64> = None;
    loop {
        let group = {
            let live = live.borrow();
            let ids: Vec<u64> = live.keys().copied().collect();
            let pick = target
                .filter(|t| live.contains_key(t))
                .or_else(|| (!ids.is_empty()).then(|| ids[rng.random_range(0..ids.len())]));
            pick.and_then(|p| live.get(&p).cloned())
        };
        let Some(group) = group else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        match tokio::time::timeout(Duration::from_secs(2), group.propose(req.clone())).await {
            Ok(Ok(applied)) => return applied,
            Ok(Err(GroupError::NotLeader { leader: Some(l) })) => {
                // The hint may name a dead leader: pause, or the simulated clock (which
                // only moves when every task waits) would stand still.
                target = Some(l);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            _ => {
                target = None;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Runs `f` on a fresh one-thread runtime whose clock is paused (it jumps to the next
/// timer whenever every task waits), inside a `LocalSet` so tasks may hold `Rc`s.
pub fn paused_local<F: Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    tokio::task::LocalSet::new().block_on(&rt, f)
}

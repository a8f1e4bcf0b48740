//! The async shell around [`MembershipCore`]: one tokio task owns the core and
//! `select!`s over datagrams, the next timer, commands and a publish tick. Others talk
//! to it through a bounded command channel and read a `watch` snapshot and a
//! `broadcast` of events.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use futures_util::Stream;
use shoal_types::NodeMeta;
use tokio::{
    sync::{broadcast, mpsc, oneshot, watch},
    task::JoinHandle,
    time::Instant,
};
use tokio_stream::{StreamExt, wrappers::BroadcastStream};

use crate::{
    core::{CoreConfig, CoreError, Effect, MembershipCore},
    transport::Transport,
    view::{MembershipEvent, Snapshot},
};

/// Room for events a slow subscriber has not read yet; beyond it, it misses the oldest.
const EVENT_BACKLOG: usize = 1024;
const COMMAND_QUEUE: usize = 64;
/// How often the snapshot (phi values move continuously) is republished.
const PUBLISH_EVERY: Duration = Duration::from_millis(250);
/// Receive buffer: larger than any valid packet so oversized ones are seen whole.
const RECV_BUFFER_BYTES: usize = 65_536;

/// What the agent needs: the core's config and where to join.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    pub core: CoreConfig,
    /// Gossip addresses of seeds.
    pub seeds: Vec<SocketAddr>,
}

type MetaChange = Box<dyn FnOnce(&mut NodeMeta) + Send>;

enum Command {
    SetTag(String, String, oneshot::Sender<Result<(), CoreError>>),
    RemoveTag(String, oneshot::Sender<Result<bool, CoreError>>),
    UpdateMeta(MetaChange, oneshot::Sender<Result<(), CoreError>>),
    Join(Vec<SocketAddr>),
    Leave(oneshot::Sender<()>),
    /// A keyring change (`None`: just read the keys).
    Keys(Option<crate::keyring::KeyOp>, oneshot::Sender<KeysResult>),
}

type KeysResult = Result<Vec<shoal_types::config::ClusterKey>, CoreError>;

/// Starts membership agents.
#[derive(Debug)]
pub struct Membership;

impl Membership {
    /// Spawns the membership task on the current tokio runtime.
    pub fn start<T: Transport>(
        config: MembershipConfig,
        transport: T,
    ) -> Result<MembershipHandle, CoreError> {
        let epoch = Instant::now();
        let core = MembershipCore::new(config.core, Duration::ZERO)?;
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let (snap_tx, snap_rx) = watch::channel(Arc::new(core.snapshot(Duration::ZERO)));
        let (event_tx, _) = broadcast::channel(EVENT_BACKLOG);
        let agent = Agent {
            core,
            transport,
            epoch,
            snapshots: snap_tx,
            events: event_tx.clone(),
        };
        let task = tokio::spawn(agent.run(config.seeds, cmd_rx));
        Ok(MembershipHandle {
            commands: cmd_tx,
            snapshot: snap_rx,
            events: event_tx,
            task: Arc::new(std::sync::Mutex::new(Some(task))),
        })
    }
}

/// A cheap, cloneable handle on a running membership agent.
#[derive(Clone, Debug)]
pub struct MembershipHandle {
    commands: mpsc::Sender<Command>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    events: broadcast::Sender<MembershipEvent>,
    task: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl MembershipHandle {
    /// The latest snapshot (at most `PUBLISH_EVERY` old).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// A receiver that is notified on every new snapshot.
    pub fn watch(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }

    /// Every membership event from now on, as a stream. A subscriber that falls more
    /// than `EVENT_BACKLOG` events behind skips the oldest.
    pub fn events(&self) -> impl Stream<Item = MembershipEvent> + Send + use<> {
        BroadcastStream::new(self.events.subscribe()).filter_map(|e| e.ok())
    }

    pub async fn set_tag(&self, key: &str, value: &str) -> Result<(), CoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::SetTag(key.into(), value.into(), tx))
            .await?;
        rx.await.map_err(|_| stopped())?
    }

    pub async fn remove_tag(&self, key: &str) -> Result<bool, CoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::RemoveTag(key.into(), tx)).await?;
        rx.await.map_err(|_| stopped())?
    }

    /// Changes this node's metadata (lifecycle, load, leader hint…).
    pub async fn update_meta(
        &self,
        change: impl FnOnce(&mut NodeMeta) + Send + 'static,
    ) -> Result<(), CoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::UpdateMeta(Box::new(change), tx)).await?;
        rx.await.map_err(|_| stopped())?
    }

    /// Changes the gossip keyring (`None`: reads it); the keys afterwards, the one
    /// sealing first.
    pub async fn keys(&self, op: Option<crate::keyring::KeyOp>) -> KeysResult {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Keys(op, tx)).await?;
        rx.await.map_err(|_| stopped())?
    }

    /// Adds seeds (gossip addresses) to join through, e.g. once a seed's name resolves.
    pub async fn join(&self, seeds: Vec<SocketAddr>) -> Result<(), CoreError> {
        self.send(Command::Join(seeds)).await
    }

    /// Announces departure, gives the packets a moment to leave, stops the agent.
    pub async fn leave(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Leave(tx)).await.is_ok() {
            let _ = rx.await;
        }
        self.stop().await;
    }

    /// Stops the agent without announcing anything (a crash, as others see it).
    pub async fn stop(&self) {
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    async fn send(&self, cmd: Command) -> Result<(), CoreError> {
        self.commands.send(cmd).await.map_err(|_| stopped())
    }
}

fn stopped() -> CoreError {
    CoreError::Stopped
}

struct Agent<T> {
    core: MembershipCore,
    transport: T,
    epoch: Instant,
    snapshots: watch::Sender<Arc<Snapshot>>,
    events: broadcast::Sender<MembershipEvent>,
}

impl<T: Transport> Agent<T> {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    async fn run(mut self, seeds: Vec<SocketAddr>, mut commands: mpsc::Receiver<Command>) {
        let mut buf = vec![0u8; RECV_BUFFER_BYTES];
        let mut publish = tokio::time::interval(PUBLISH_EVERY);
        publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let now = self.now();
        self.core.join(seeds, now);
        self.flush().await;
        loop {
            let deadline = self.core.next_deadline().map(|d| self.epoch + d);
            tokio::select! {
                received = self.transport.recv_from(&mut buf) => match received {
                    Ok((n, from)) => {
                        let now = self.now();
                        self.core.handle_packet(now, from, &buf[..n]);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "gossip receive failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                _ = sleep_until(deadline) => {
                    let now = self.now();
                    self.core.handle_timers(now);
                }
                command = commands.recv() => match command {
                    None => return,
                    Some(Command::Leave(done)) => {
                        let now = self.now();
                        self.core.leave(now);
                        self.flush().await;
                        self.publish();
                        let _ = done.send(());
                        return;
                    }
                    Some(command) => self.apply(command),
                },
                _ = publish.tick() => self.publish(),
            }
            if self.flush().await {
                self.publish();
            }
        }
    }

    fn apply(&mut self, command: Command) {
        let now = self.now();
        match command {
            Command::SetTag(k, v, reply) => {
                let _ = reply.send(self.core.set_tag(&k, &v, now));
            }
            Command::RemoveTag(k, reply) => {
                let _ = reply.send(self.core.remove_tag(&k, now));
            }
            Command::UpdateMeta(change, reply) => {
                let _ = reply.send(self.core.update_meta(now, change));
            }
            Command::Join(seeds) => self.core.join(seeds, now),
            Command::Keys(op, reply) => {
                let result = match op {
                    Some(op) => self.core.change_keys(op),
                    None => Ok(self.core.keys()),
                };
                let _ = reply.send(result);
            }
            Command::Leave(_) => unreachable!("handled by the loop"),
        }
        self.publish();
    }

    /// Performs the core's effects; true if any event was emitted.
    async fn flush(&mut self) -> bool {
        let mut any_event = false;
        for effect in self.core.drain_effects() {
            match effect {
                Effect::Send { to, bytes } => {
                    if let Err(e) = self.transport.send_to(&bytes, to).await {
                        tracing::debug!(%to, error = %e, "gossip send failed");
                    }
                }
                Effect::Event(event) => {
                    any_event = true;
                    log_event(&event);
                    let _ = self.events.send(event);
                }
            }
        }
        any_event
    }

    fn publish(&self) {
        let snapshot = Arc::new(self.core.snapshot(self.now()));
        self.snapshots.send_replace(snapshot);
    }
}

fn log_event(event: &MembershipEvent) {
    tracing::info!(
        kind = ?event.kind,
        member = %event.member.id,
        state = %event.member.state,
        addr = %event.member.addr,
        "membership"
    );
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

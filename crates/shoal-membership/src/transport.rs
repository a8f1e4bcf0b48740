//! How gossip datagrams move: real UDP, or an in-memory network that can drop, delay
//! and partition (for tests and simulation). Both satisfy the same [`Transport`] trait
//! and the same conformance tests.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    io,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use rand::{RngExt, SeedableRng, rngs::StdRng};
use tokio::{net::UdpSocket, sync::mpsc};

/// A datagram transport. Sends may be dropped silently, as with UDP.
pub trait Transport: Send + Sync + 'static {
    fn local_addr(&self) -> SocketAddr;
    fn send_to(&self, buf: &[u8], to: SocketAddr) -> impl Future<Output = io::Result<()>> + Send;
    /// Receives one datagram into `buf`; longer datagrams are truncated to `buf`.
    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send;
}

/// UDP on a real socket.
#[derive(Debug)]
pub struct UdpTransport {
    socket: UdpSocket,
    addr: SocketAddr,
}

impl UdpTransport {
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        let socket = UdpSocket::bind(addr).await?;
        let addr = socket.local_addr()?;
        Ok(Self { socket, addr })
    }

    /// Wraps an already bound std socket (the node binds before it starts tokio work).
    pub fn from_std(socket: std::net::UdpSocket) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        let socket = UdpSocket::from_std(socket)?;
        let addr = socket.local_addr()?;
        Ok(Self { socket, addr })
    }
}

impl Transport for UdpTransport {
    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<()> {
        self.socket.send_to(buf, to).await.map(|_| ())
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.socket.recv_from(buf).await
    }
}

/// Fault injection for drills and benchmarks on real sockets: drops each inbound
/// datagram with probability `loss`, as a lossy network would.
#[derive(Debug)]
pub struct Lossy<T> {
    inner: T,
    loss: f64,
    rng: Mutex<StdRng>,
}

impl<T: Transport> Lossy<T> {
    pub fn new(inner: T, loss: f64, seed: u64) -> Self {
        Self {
            inner,
            loss: loss.clamp(0.0, 1.0),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }

    fn drop_next(&self) -> bool {
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        rng.random_bool(self.loss)
    }
}

impl<T: Transport> Transport for Lossy<T> {
    fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }

    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<()> {
        self.inner.send_to(buf, to).await
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        loop {
            let got = self.inner.recv_from(buf).await?;
            if !self.drop_next() {
                return Ok(got);
            }
        }
    }
}

/// Datagrams queued per in-memory endpoint; beyond it they are dropped, like a full
/// socket buffer.
const MEM_QUEUE_DATAGRAMS: usize = 4096;

type Datagram = (Vec<u8>, SocketAddr);

#[derive(Debug)]
struct NetState {
    endpoints: HashMap<SocketAddr, mpsc::Sender<Datagram>>,
    loss: f64,
    delay: Duration,
    /// (from, to) pairs that cannot talk.
    blocked: HashSet<(SocketAddr, SocketAddr)>,
    rng: StdRng,
    delivered: u64,
    dropped: u64,
}

/// An in-memory network shared by many [`MemTransport`]s. Seeded: the same sends in the
/// same order meet the same losses.
#[derive(Debug, Clone)]
pub struct MemNetwork {
    state: Arc<Mutex<NetState>>,
}

impl MemNetwork {
    pub fn new(seed: u64) -> Self {
        Self {
            state: Arc::new(Mutex::new(NetState {
                endpoints: HashMap::new(),
                loss: 0.0,
                delay: Duration::ZERO,
                blocked: HashSet::new(),
                rng: StdRng::seed_from_u64(seed),
                delivered: 0,
                dropped: 0,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Attaches an endpoint at `addr`.
    pub fn bind(&self, addr: SocketAddr) -> io::Result<MemTransport> {
        let (tx, rx) = mpsc::channel(MEM_QUEUE_DATAGRAMS);
        let mut state = self.lock();
        if state.endpoints.contains_key(&addr) {
            return Err(io::Error::new(io::ErrorKind::AddrInUse, addr.to_string()));
        }
        state.endpoints.insert(addr, tx);
        Ok(MemTransport {
            addr,
            net: self.clone(),
            rx: tokio::sync::Mutex::new(rx),
        })
    }

    /// Probability in `0.0..=1.0` that any datagram is lost.
    pub fn set_loss(&self, loss: f64) {
        self.lock().loss = loss.clamp(0.0, 1.0);
    }

    /// Delay added to every datagram.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// Cuts `a` off from `b` in both directions.
    pub fn partition(&self, a: &[SocketAddr], b: &[SocketAddr]) {
        for x in a {
            for y in b {
                self.block_one_way(*x, *y);
                self.block_one_way(*y, *x);
            }
        }
    }

    /// Datagrams from `from` to `to` are lost; the other direction still works.
    pub fn block_one_way(&self, from: SocketAddr, to: SocketAddr) {
        self.lock().blocked.insert((from, to));
    }

    pub fn heal(&self) {
        self.lock().blocked.clear();
    }

    /// (delivered, dropped) datagrams so far.
    pub fn counters(&self) -> (u64, u64) {
        let s = self.lock();
        (s.delivered, s.dropped)
    }

    fn route(&self, from: SocketAddr, to: SocketAddr, buf: &[u8]) {
        let (tx, delay) = {
            let mut s = self.lock();
            let lost = s.blocked.contains(&(from, to)) || {
                let loss = s.loss;
                loss > 0.0 && s.rng.random_bool(loss)
            };
            match s.endpoints.get(&to).cloned() {
                Some(tx) if !lost => {
                    s.delivered += 1;
                    (tx, s.delay)
                }
                _ => {
                    s.dropped += 1;
                    return;
                }
            }
        };
        let datagram = (buf.to_vec(), from);
        if delay.is_zero() {
            let _ = tx.try_send(datagram);
        } else {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = tx.try_send(datagram);
            });
        }
    }
}

/// One endpoint of a [`MemNetwork`].
#[derive(Debug)]
pub struct MemTransport {
    addr: SocketAddr,
    net: MemNetwork,
    rx: tokio::sync::Mutex<mpsc::Receiver<Datagram>>,
}

impl Drop for MemTransport {
    fn drop(&mut self) {
        self.net.lock().endpoints.remove(&self.addr);
    }
}

impl Transport for MemTransport {
    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    async fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<()> {
        self.net.route(self.addr, to, buf);
        Ok(())
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let mut rx = self.rx.lock().await;
        let (data, from) = rx
            .recv()
            .await
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "network dropped"))?;
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        Ok((n, from))
    }
}

#[cfg(test)]
mod tests {
    //! One conformance suite, run against both transports.
    use super::*;

    async fn roundtrip<T: Transport>(a: T, b: T) {
        a.send_to(b"ping", b.local_addr()).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"ping");
        assert_eq!(from, a.local_addr());
        b.send_to(b"ack", from).await.unwrap();
        let (n, from) = a.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"ack"[..], b.local_addr()));
        // A long datagram is cut to the buffer, never overruns it.
        a.send_to(&[7u8; 100], b.local_addr()).await.unwrap();
        let mut small = [0u8; 10];
        let (n, _) = b.recv_from(&mut small).await.unwrap();
        assert_eq!(n, 10);
    }

    #[tokio::test]
    async fn udp_conforms() {
        let any = "127.0.0.1:0".parse().unwrap();
        let a = UdpTransport::bind(any).await.unwrap();
        let b = UdpTransport::bind(any).await.unwrap();
        roundtrip(a, b).await;
    }

    #[tokio::test]
    async fn mem_conforms() {
        let net = MemNetwork::new(1);
        let a = net.bind("10.0.0.1:1".parse().unwrap()).unwrap();
        let b = net.bind("10.0.0.2:1".parse().unwrap()).unwrap();
        roundtrip(a, b).await;
    }

    #[tokio::test]
    async fn lossy_drops_about_its_share() {
        let net = MemNetwork::new(3);
        let a = net.bind("10.0.0.1:1".parse().unwrap()).unwrap();
        let b = Lossy::new(net.bind("10.0.0.2:1".parse().unwrap()).unwrap(), 0.5, 9);
        for i in 0..400u32 {
            a.send_to(&i.to_be_bytes(), b.local_addr()).await.unwrap();
        }
        a.send_to(b"end", b.local_addr()).await.unwrap();
        let mut got = 0;
        let mut buf = [0u8; 8];
        // The last datagram may itself be dropped: stop at "end" or after 400.
        while got < 400 {
            let recv =
                tokio::time::timeout(std::time::Duration::from_millis(200), b.recv_from(&mut buf));
            match recv.await {
                Ok(Ok((n, _))) if &buf[..n] == b"end" => break,
                Ok(Ok(_)) => got += 1,
                _ => break,
            }
        }
        assert!((140..=260).contains(&got), "kept {got} of 400 at 50% loss");
    }

    #[tokio::test]
    async fn mem_partitions_and_loss() {
        let net = MemNetwork::new(2);
        let a = net.bind("10.0.0.1:1".parse().unwrap()).unwrap();
        let b = net.bind("10.0.0.2:1".parse().unwrap()).unwrap();
        net.block_one_way(a.local_addr(), b.local_addr());
        a.send_to(b"lost", b.local_addr()).await.unwrap();
        b.send_to(b"kept", a.local_addr()).await.unwrap();
        let mut buf = [0u8; 8];
        let (n, _) = a.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"kept");
        assert_eq!(net.counters(), (1, 1));
        net.heal();
        net.set_loss(1.0);
        a.send_to(b"lost", b.local_addr()).await.unwrap();
        assert_eq!(net.counters(), (1, 2));
        assert!(
            net.bind(a.local_addr()).is_err(),
            "an address is bound once"
        );
    }
}

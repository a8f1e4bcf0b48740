//! The node's TCP listener for axum: plaintext, or TLS with the peer's certificate read
//! into the connection's [`Peer`].
//!
//! Handshakes run concurrently beside `accept`, each under [`HANDSHAKE_TIMEOUT`], so a
//! client that connects and stays silent delays nobody.

use std::{net::SocketAddr, sync::Arc};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::{net::TcpListener, task::JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::{
    identity::PeerCert,
    tls::{Conn, HANDSHAKE_TIMEOUT},
};

/// Handshakes in progress at once; beyond this, accepting waits for one to end.
const HANDSHAKES_MAX: usize = 256;

/// Who is at the other end of a connection (the connection's `ConnectInfo`).
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub cert: PeerCert,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// Accepts connections, doing the TLS handshake when configured.
pub struct ShoalListener {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
    handshakes: JoinSet<Option<(Conn, Peer)>>,
}

impl ShoalListener {
    pub fn new(tcp: TcpListener, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        Self {
            tcp,
            tls: tls.map(TlsAcceptor::from),
            handshakes: JoinSet::new(),
        }
    }
}

async fn accept_tcp(tcp: &TcpListener) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match tcp.accept().await {
            Ok((tcp, addr)) => {
                // Small gRPC frames (Raft messages, KV answers) must not wait for
                // Nagle's algorithm: a reply could sit 40 ms for a delayed ACK.
                let _ = tcp.set_nodelay(true);
                return (tcp, addr);
            }
            Err(e) => {
                // Out of file descriptors and the like: pause instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    addr: SocketAddr,
) -> Option<(Conn, Peer)> {
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%addr, error = %e, "TLS handshake refused");
            return None;
        }
        Err(_) => {
            tracing::debug!(%addr, "TLS handshake timed out");
            return None;
        }
    };
    let cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map_or(PeerCert::None, PeerCert::from_verified_leaf);
    let peer = Peer {
        addr,
        cert,
        tls: true,
    };
    Some((Conn::Tls(Box::new(stream.into())), peer))
}

impl Listener for ShoalListener {
    type Io = Conn;
    type Addr = Peer;

    async fn accept(&mut self) -> (Conn, Peer) {
        let Some(acceptor) = self.tls.clone() else {
            let (tcp, addr) = accept_tcp(&self.tcp).await;
            let peer = Peer {
                addr,
                cert: PeerCert::None,
                tls: false,
            };
            return (Conn::Plain(tcp), peer);
        };
        loop {
            let full = self.handshakes.len() >= HANDSHAKES_MAX;
            tokio::select! {
                (tcp, addr) = accept_tcp(&self.tcp), if !full => {
                    self.handshakes.spawn(handshake(acceptor.clone(), tcp, addr));
                }
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(conn)) = done {
                        return conn;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Peer> {
        Ok(Peer {
            addr: self.tcp.local_addr()?,
            cert: PeerCert::None,
            tls: self.tls.is_some(),
        })
    }
}

impl Connected<IncomingStream<'_, ShoalListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, ShoalListener>) -> Self {
        stream.remote_addr().clone()
    }
}

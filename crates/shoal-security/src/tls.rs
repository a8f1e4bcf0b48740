//! The TLS configuration every shoal server and client uses.
//!
//! ```text
//!  Tls::load(ca, own cert?) ─┬─► server_config()  every node's port: TLS 1.2/1.3, ALPN h2 +
//!                            │                     http/1.1, client certificates optional
//!                            │                     but verified against the CA when sent
//!                            └─► Transport::Tls ─► endpoint(addr)  gRPC channels (https)
//!                                                  connect(addr)   the admin HTTP client
//! ```
//!
//! Clients verify the server as `node.shoal` against the cluster CA: any certificate the
//! CA issued to a node, whatever address it is reached at.

use std::{
    io,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use rustls::{ClientConfig, RootCertStore, ServerConfig, server::WebPkiClientVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::{
    SecurityError,
    certs::CA_CERT_FILE,
    identity::{NODE_SERVER_NAME, PeerCert},
};

/// Installs ring as the process's rustls provider (once; later calls do nothing).
/// DESIGN: one provider compiled in, installed explicitly at start.
pub fn install_crypto_provider() {
    let _ = ring_provider().install_default();
}

/// rustls 0.23.48 deprecates its ring provider only to point at aws-lc-rs's
/// post-quantum key exchange; DESIGN keeps ring (one provider, no C/CMake toolchain).
#[allow(deprecated)]
fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    install_crypto_provider();
    rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(ring_provider()))
}

/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// One party's TLS material: the cluster CA and, for nodes and certificate-holding
/// clients, its own certificate and key. Cheap to clone.
#[derive(Clone)]
pub struct Tls {
    inner: Arc<TlsInner>,
}

struct TlsInner {
    ca_pem: String,
    roots: Arc<RootCertStore>,
    own: Option<Own>,
    /// For HTTP/1.1 calls (the admin client).
    http_client: Arc<ClientConfig>,
}

struct Own {
    cert_pem: String,
    key_pem: String,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    who: PeerCert,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("own", &self.inner.own.as_ref().map(|o| o.who.describe()))
            .finish_non_exhaustive()
    }
}

/// The files of one party in a certificate directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    /// Own certificate and key; `None` for a client that verifies servers only.
    pub own: Option<(PathBuf, PathBuf)>,
}

impl TlsFiles {
    /// `DIR/ca.pem`, `DIR/<name>.pem`, `DIR/<name>-key.pem`.
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        Self {
            ca: dir.join(CA_CERT_FILE),
            own: Some((
                dir.join(format!("{name}.pem")),
                dir.join(format!("{name}-key.pem")),
            )),
        }
    }
}

impl Tls {
    /// Loads and checks the files: the CA parses, the certificate matches its key.
    pub fn load(files: &TlsFiles) -> Result<Self, SecurityError> {
        install_crypto_provider();
        let ca_pem =
            std::fs::read_to_string(&files.ca).map_err(|e| SecurityError::read(&files.ca, e))?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            let cert = cert.map_err(|e| SecurityError::parse(&files.ca, e))?;
            roots
                .add(cert)
                .map_err(|e| SecurityError::parse(&files.ca, e))?;
        }
        if roots.is_empty() {
            return Err(SecurityError::parse(&files.ca, "no certificate in it"));
        }
        let roots = Arc::new(roots);
        let own = match &files.own {
            None => None,
            Some((cert, key)) => Some(load_own(cert, key)?),
        };
        let http_client = client_config(&roots, own.as_ref(), vec![b"http/1.1".to_vec()])?;
        Ok(Self {
            inner: Arc::new(TlsInner {
                ca_pem,
                roots,
                own,
                http_client,
            }),
        })
    }

    /// What this party's own certificate says it is (`None` without one).
    pub fn own_identity(&self) -> PeerCert {
        self.inner
            .own
            .as_ref()
            .map_or(PeerCert::None, |o| o.who.clone())
    }

    /// The server side: TLS 1.2/1.3 with ALPN h2 and http/1.1; a client certificate is
    /// optional (token clients send none) but must chain to the cluster CA when sent.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, SecurityError> {
        let own =
            self.inner.own.as_ref().ok_or_else(|| {
                SecurityError::Config("a server needs its own certificate".into())
            })?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(self.inner.roots.clone(), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| SecurityError::Config(e.to_string()))?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| SecurityError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(own.chain.clone(), own.key.clone_key())
            .map_err(|e| SecurityError::Config(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    fn grpc_config(&self) -> ClientTlsConfig {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.inner.ca_pem))
            .domain_name(NODE_SERVER_NAME)
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some(own) = &self.inner.own {
            tls = tls.identity(Identity::from_pem(&own.cert_pem, &own.key_pem));
        }
        tls
    }
}

fn load_own(cert: &Path, key: &Path) -> Result<Own, SecurityError> {
    let cert_pem = std::fs::read_to_string(cert).map_err(|e| SecurityError::read(cert, e))?;
    let key_pem = std::fs::read_to_string(key).map_err(|e| SecurityError::read(key, e))?;
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SecurityError::parse(cert, e))?;
    let leaf = chain
        .first()
        .ok_or_else(|| SecurityError::parse(cert, "no certificate in it"))?;
    let who = PeerCert::from_verified_leaf(leaf);
    let key_der = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| SecurityError::parse(key, e))?;
    // The pair must belong together, or every handshake would fail later.
    let signing = provider()
        .key_provider
        .load_private_key(key_der.clone_key())
        .map_err(|e| SecurityError::parse(key, e))?;
    let certified = rustls::sign::CertifiedKey::new(chain.clone(), signing);
    certified.keys_match().map_err(|_| {
        SecurityError::Config(format!(
            "{} and {} do not belong together (the key is not the certificate's)",
            cert.display(),
            key.display()
        ))
    })?;
    Ok(Own {
        cert_pem,
        key_pem,
        chain,
        key: key_der,
        who,
    })
}

fn client_config(
    roots: &Arc<RootCertStore>,
    own: Option<&Own>,
    alpn: Vec<Vec<u8>>,
) -> Result<Arc<ClientConfig>, SecurityError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| SecurityError::Config(e.to_string()))?
        .with_root_certificates(roots.clone());
    let mut config = match own {
        Some(own) => builder
            .with_client_auth_cert(own.chain.clone(), own.key.clone_key())
            .map_err(|e| SecurityError::Config(e.to_string()))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn;
    Ok(Arc::new(config))
}

/// How a party reaches others: in plaintext (`--insecure`) or over TLS.
#[derive(Debug, Clone, Default)]
pub enum Transport {
    #[default]
    Plain,
    Tls(Tls),
}

impl Transport {
    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        if self.is_tls() { "https" } else { "http" }
    }

    /// A gRPC endpoint for `HOST:PORT`: the one place outgoing channels are made.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, String> {
        let endpoint = Endpoint::from_shared(format!("{}://{addr}", self.scheme()))
            .map_err(|e| format!("`{addr}`: {e}"))?;
        match self {
            Transport::Plain => Ok(endpoint),
            Transport::Tls(tls) => endpoint
                .tls_config(tls.grpc_config())
                .map_err(|e| format!("`{addr}`: {e}")),
        }
    }

    /// A connection for HTTP/1.1 to `HOST:PORT` (TLS handshake done when TLS is on).
    pub async fn connect(&self, addr: &str) -> io::Result<Conn> {
        let tcp = TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        match self {
            Transport::Plain => Ok(Conn::Plain(tcp)),
            Transport::Tls(tls) => {
                let connector = tokio_rustls::TlsConnector::from(tls.inner.http_client.clone());
                let name = ServerName::try_from(NODE_SERVER_NAME)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let handshake = connector.connect(name, tcp);
                let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
                    .await
                    .map_err(|_| {
                        io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                    })??;
                Ok(Conn::Tls(Box::new(stream.into())))
            }
        }
    }
}

/// A TCP connection, in plaintext or TLS (client or server side).
#[derive(Debug)]
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

//! Security for shoal: one module every server and client uses.
//!
//! ```text
//!  shoal certs init/issue ──► certs   a cluster CA; node and client certificates
//!                                     (what a certificate is: its URI name)
//!  a node  ──► Tls::load ──► listener   TLS on the node's one port; the peer's
//!                                       certificate read into `Peer`
//!                       └──► Transport  every outgoing gRPC channel / HTTP connection
//!  a client ──► Credentials = Transport + bearer token (gRPC metadata / HTTP header)
//!  tokens   ──► token    random, kept as SHA-256 in the replicated state
//! ```
//!
//! Permissions (`shoal_types::Perms`) are checked by the node at the edge of each
//! service; this crate says who a caller is, not what it may do.

pub mod certs;
pub mod identity;
pub mod listener;
pub mod tls;
pub mod token;

use std::path::{Path, PathBuf};

pub use identity::{NODE_SERVER_NAME, PeerCert};
pub use listener::{Peer, ShoalListener};
pub use tls::{Conn, Tls, TlsFiles, Transport, install_crypto_provider};

/// Why a security operation failed. Nothing was written unless the variant says so.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("{0} already exists; refusing to overwrite a cluster CA (pick another --dir)")]
    Exists(PathBuf),
    #[error("{field}: {rule}")]
    Invalid { field: &'static str, rule: String },
    #[error("cannot generate a key or certificate: {0}")]
    Generate(String),
    #[error("TLS configuration: {0}")]
    Config(String),
}

impl SecurityError {
    pub(crate) fn read(path: &Path, source: std::io::Error) -> Self {
        SecurityError::Read {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn write(path: &Path, source: std::io::Error) -> Self {
        SecurityError::Write {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn parse(path: &Path, reason: impl std::fmt::Display) -> Self {
        SecurityError::Parse {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}

/// Writes `bytes` to `path` with `mode` through a temporary file renamed into place, the
/// file and then its directory fsynced: after a crash or a power loss the old file or
/// the new one is there, never half of one. (Keys, certificates, keyrings.)
pub fn write_file_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

/// The gRPC metadata key and HTTP header a bearer token travels in.
pub const AUTHORIZATION: &str = "authorization";

/// What a client presents: how it connects (and verifies servers), and its token.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub transport: Transport,
    pub token: Option<String>,
}

impl Credentials {
    /// Plaintext and no token: for nodes run with `--insecure`.
    pub fn insecure() -> Self {
        Self::default()
    }

    /// `Bearer <token>`, the header value, if there is a token.
    pub fn bearer(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Bearer {t}"))
    }

    /// An interceptor that adds the token to every gRPC call.
    pub fn interceptor(&self) -> TokenInterceptor {
        TokenInterceptor {
            header: self.bearer().and_then(|b| b.parse().ok()),
        }
    }
}

/// Adds `authorization: Bearer …` to each gRPC request.
#[derive(Debug, Clone)]
pub struct TokenInterceptor {
    header: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl tonic::service::Interceptor for TokenInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(h) = &self.header {
            req.metadata_mut().insert(AUTHORIZATION, h.clone());
        }
        Ok(req)
    }
}

/// A gRPC channel that carries the client's token.
pub type AuthChannel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, TokenInterceptor>;

//! Who may call this node, and what they may do: checked at the edge, before any
//! service runs.
//!
//! ```text
//!  connection ──► ShoalListener (TLS; the peer's certificate) ──► guard(request)
//!     node certificate  → a node: internal RPCs and everything else
//!     client certificate→ the permissions written in it
//!     Bearer token      → the token table (managers: the replicated state; others ask
//!                          a manager, cached briefly) or a bootstrap token
//!     nothing           → UNAUTHENTICATED / 401
//!  table::need(route) ──► PERMISSION_DENIED / 403 naming the permission, or the service
//!                         runs with the `Caller` in the request's extensions
//! ```
//!
//! With `--insecure` every request is a caller with every permission.

pub mod table;
mod tokens;

use std::sync::Arc;

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use shoal_security::{Peer, PeerCert, Tls, TlsFiles, Transport, certs::BOOTSTRAP_HASH_FILE, token};
use shoal_types::{NodeConfig, Perm, Perms, config::Security};
use tonic::Status;

use table::Need;
pub use tokens::{TokenBook, routes as tokens_routes};

/// Why a node's security could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("tls: {0}")]
    Tls(#[from] shoal_security::SecurityError),
    #[error(
        "tls: {path} is a certificate for {found}, not for node {id}: issue one with `shoal certs issue --node {id}`"
    )]
    WrongCertificate {
        path: String,
        found: String,
        id: String,
    },
    #[error("tls: {path}: {reason}")]
    BootstrapHash { path: String, reason: String },
}

/// This node's security: how it serves, how it calls others, which bootstrap tokens
/// it accepts.
#[derive(Debug, Clone)]
pub struct NodeAccess {
    pub transport: Transport,
    pub server: Option<Arc<rustls::ServerConfig>>,
    bootstrap_hashes: Vec<String>,
}

impl NodeAccess {
    /// Loads the node's certificate (which must name this node) and bootstrap tokens.
    pub fn load(config: &NodeConfig) -> Result<Self, AccessError> {
        let Security::Tls {
            dir,
            bootstrap_token,
        } = &config.security
        else {
            return Ok(Self::insecure());
        };
        let id = config.id.as_str();
        let files = TlsFiles::in_dir(dir, id);
        let tls = Tls::load(&files)?;
        match tls.own_identity() {
            PeerCert::Node(named) if named == id => {}
            other => {
                return Err(AccessError::WrongCertificate {
                    path: files
                        .own
                        .map(|o| o.0.display().to_string())
                        .unwrap_or_default(),
                    found: other.describe(),
                    id: id.to_string(),
                });
            }
        }
        let mut bootstrap_hashes = Vec::new();
        let hash_file = dir.join(BOOTSTRAP_HASH_FILE);
        match std::fs::read_to_string(&hash_file) {
            Ok(text) if token::is_hash(text.trim()) => bootstrap_hashes.push(text.trim().into()),
            Ok(_) => {
                return Err(AccessError::BootstrapHash {
                    path: hash_file.display().to_string(),
                    reason: "must hold one SHA-256 (64 lowercase hex characters)".into(),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(AccessError::BootstrapHash {
                    path: hash_file.display().to_string(),
                    reason: e.to_string(),
                });
            }
        }
        if let Some(t) = bootstrap_token {
            bootstrap_hashes.push(token::hash(t));
        }
        Ok(Self {
            server: Some(tls.server_config()?),
            transport: Transport::Tls(tls),
            bootstrap_hashes,
        })
    }

    /// Plaintext; every caller may do everything.
    pub fn insecure() -> Self {
        Self {
            transport: Transport::Plain,
            server: None,
            bootstrap_hashes: Vec::new(),
        }
    }

    pub fn is_insecure(&self) -> bool {
        self.server.is_none()
    }

    /// Whether `hash` is one of the configured bootstrap tokens.
    pub fn is_bootstrap(&self, hash: &str) -> bool {
        self.bootstrap_hashes.iter().any(|h| h == hash)
    }
}

/// Who made a request, and what they may do (in the request's extensions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `node m1`, `token ci`, `client ops`, `insecure`.
    pub who: String,
    pub perms: Perms,
    /// A node of the cluster (internal RPCs).
    pub node: bool,
}

impl Caller {
    fn insecure() -> Self {
        Self {
            who: "insecure".into(),
            perms: Perms::ALL,
            node: true,
        }
    }

    /// The caller a service finds on a request (none: no permission at all).
    pub fn of<T>(req: &tonic::Request<T>) -> Caller {
        req.extensions().get::<Caller>().cloned().unwrap_or(Caller {
            who: "unknown".into(),
            perms: Perms::NONE,
            node: false,
        })
    }

    /// PERMISSION_DENIED naming what `what` needs, unless the caller holds `perm`.
    pub fn require(&self, perm: Perm, what: &str) -> Result<(), Status> {
        if self.perms.allows(perm) {
            return Ok(());
        }
        Err(Status::permission_denied(self.denial(perm, what)))
    }

    fn denial(&self, perm: Perm, what: &str) -> String {
        format!(
            "permission denied: {what} needs `{perm}`; {} has {}",
            self.who, self.perms
        )
    }
}

/// The middleware's state: this node's access and its token book.
#[derive(Debug, Clone)]
pub struct Guard {
    pub access: NodeAccess,
    pub book: TokenBook,
}

/// The refusal of a request, as gRPC or HTTP.
struct Refusal {
    unauthenticated: bool,
    message: String,
}

impl Refusal {
    fn unauthenticated(message: impl Into<String>) -> Self {
        Self {
            unauthenticated: true,
            message: message.into(),
        }
    }

    fn respond(self, grpc: bool) -> Response {
        if grpc {
            let status = if self.unauthenticated {
                Status::unauthenticated(self.message)
            } else {
                Status::permission_denied(self.message)
            };
            return status.into_http::<axum::body::Body>().into_response();
        }
        let code = if self.unauthenticated {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::FORBIDDEN
        };
        (
            code,
            axum::Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

/// Checks every request against [`table::need`] and hands the service its [`Caller`].
pub async fn guard(State(guard): State<Arc<Guard>>, mut req: Request, next: Next) -> Response {
    let grpc = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let caller = if guard.access.is_insecure() {
        Caller::insecure()
    } else {
        let peer = req
            .extensions()
            .get::<ConnectInfo<Peer>>()
            .map(|c| c.0.cert.clone());
        match identify(&guard, peer.unwrap_or_default(), req.headers()).await {
            Ok(c) => c,
            Err(refusal) => return refusal.respond(grpc),
        }
    };
    let what = || table::describe(req.method(), req.uri().path());
    match table::need(req.method(), req.uri().path()) {
        Need::Node if !caller.node => {
            let message = format!(
                "{} is internal to the cluster: it needs a node certificate of the cluster CA; {} is not a node",
                what(),
                caller.who
            );
            return Refusal {
                unauthenticated: false,
                message,
            }
            .respond(grpc);
        }
        Need::Perm(p) if !caller.perms.allows(p) => {
            let message = caller.denial(p, &what());
            return Refusal {
                unauthenticated: false,
                message,
            }
            .respond(grpc);
        }
        _ => {}
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// Who the request is from: a token when one is given, else the certificate.
async fn identify(guard: &Guard, cert: PeerCert, headers: &HeaderMap) -> Result<Caller, Refusal> {
    if let Some(value) = headers.get(shoal_security::AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                // The scheme is case-insensitive (RFC 9110).
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(rest)
            })
            .map(str::trim)
            .ok_or_else(|| Refusal::unauthenticated("authorization: must be `Bearer <token>`"))?;
        token::validate(token)
            .map_err(|rule| Refusal::unauthenticated(format!("token: {rule}")))?;
        let hash = token::hash(token);
        return match guard.book.lookup(&guard.access, &hash).await {
            Ok(Some((name, perms))) => Ok(Caller {
                who: format!("token {name}"),
                perms,
                node: false,
            }),
            Ok(None) => Err(Refusal::unauthenticated(
                "token: not recognised (revoked, or never issued by this cluster)",
            )),
            Err(why) => Err(Refusal::unauthenticated(format!(
                "token: cannot be checked now: {why}"
            ))),
        };
    }
    match cert {
        PeerCert::Node(id) => Ok(Caller {
            who: format!("node {id}"),
            perms: Perms::ALL,
            node: true,
        }),
        PeerCert::Client { name, perms } => Ok(Caller {
            who: format!("client {name}"),
            perms,
            node: false,
        }),
        PeerCert::Unrecognised => Err(Refusal::unauthenticated(
            "certificate: names no node or client of this cluster",
        )),
        PeerCert::None => Err(Refusal::unauthenticated(
            "no credentials: give a token (--token or SHOAL_TOKEN; gRPC metadata `authorization: Bearer <token>`) or a client certificate of the cluster CA",
        )),
    }
}

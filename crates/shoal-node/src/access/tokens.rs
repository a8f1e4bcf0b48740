//! Where a node looks a bearer token up.
//!
//! Managers hold the token table in their replicated state: a lookup is a read of the
//! applied state, so a revocation takes effect on each manager as soon as it applies
//! the entry. Gates and workers hold no table: they ask a manager of their datacenter
//! (`GET /v1/internal/token/{hash}`, node certificate) and keep the answer for
//! [`REMOTE_CACHE_TTL`], so a revoked token stops working there within that time. When
//! no manager answers, only the configured bootstrap token is accepted (the operator's
//! way in while the managers are down).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use shoal_client::AdminClient;
use shoal_membership::MembershipHandle;
use shoal_raft::group::Replica;
use shoal_security::Credentials;
use shoal_state::tokens::BOOTSTRAP_NAME;
use shoal_types::Perms;

use super::NodeAccess;

/// How long a gate or worker keeps a manager's answer about a token.
pub const REMOTE_CACHE_TTL: Duration = Duration::from_secs(2);
/// Answers a gate or worker keeps at most (the cache is emptied when full).
const REMOTE_CACHE_MAX: usize = 1_024;
/// How long one question to a manager may take.
const REMOTE_TIMEOUT: Duration = Duration::from_millis(800);

/// A token's name and permissions, if it is valid.
pub type Found = Option<(String, Perms)>;

/// Where this node looks tokens up.
#[derive(Debug, Clone)]
pub enum TokenBook {
    /// Managers: the replicated table.
    Local(Box<Replica>),
    /// Gates and workers: a manager of `dc`, cached.
    Remote(Arc<Remote>),
}

#[derive(Debug)]
pub struct Remote {
    membership: MembershipHandle,
    dc: String,
    creds: Credentials,
    cache: Mutex<HashMap<String, (Instant, Found)>>,
}

impl TokenBook {
    pub fn remote(membership: MembershipHandle, dc: String, access: &NodeAccess) -> Self {
        TokenBook::Remote(Arc::new(Remote {
            membership,
            dc,
            creds: Credentials {
                transport: access.transport.clone(),
                token: None,
            },
            cache: Mutex::default(),
        }))
    }

    /// The token with SHA-256 `hash`, or why it cannot be checked now.
    pub async fn lookup(&self, access: &NodeAccess, hash: &str) -> Result<Found, String> {
        match self {
            TokenBook::Local(replica) => Ok(local(replica, access, hash)),
            TokenBook::Remote(remote) => remote.lookup(access, hash).await,
        }
    }
}

/// A manager's answer from its applied state and its configured bootstrap tokens.
fn local(replica: &Replica, access: &NodeAccess, hash: &str) -> Found {
    replica.group.read(|s| {
        if let Some(t) = s.tokens.lookup(hash) {
            return Some((t.name.clone(), t.perms));
        }
        (access.is_bootstrap(hash) && !s.tokens.bootstrap_revoked())
            .then(|| (BOOTSTRAP_NAME.to_string(), Perms::ALL))
    })
}

impl Remote {
    async fn lookup(&self, access: &NodeAccess, hash: &str) -> Result<Found, String> {
        if let Some(found) = self.cached(hash) {
            return Ok(found);
        }
        let managers = crate::status::dc_managers(&self.membership.snapshot(), &self.dc);
        let mut last = format!("no live manager in {}", self.dc);
        for addr in managers {
            let client = AdminClient::new(addr.clone())
                .with_timeout(REMOTE_TIMEOUT)
                .with_credentials(self.creds.clone());
            let path = format!("/v1/internal/token/{hash}");
            match client
                .request_json(axum::http::Method::GET, &path, None)
                .await
            {
                Ok(v) => {
                    let found = parse_answer(&v);
                    self.remember(hash, found.clone());
                    return Ok(found);
                }
                Err(shoal_client::ClientError::Status { status: 404, .. }) => {
                    self.remember(hash, None);
                    return Ok(None);
                }
                Err(e) => last = e.to_string(),
            }
        }
        if access.is_bootstrap(hash) {
            tracing::warn!(reason = %last, "no manager to check tokens with; accepting the bootstrap token");
            return Ok(Some((BOOTSTRAP_NAME.to_string(), Perms::ALL)));
        }
        Err(last)
    }

    fn cached(&self, hash: &str) -> Option<Found> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(hash)
            .filter(|(at, _)| at.elapsed() < REMOTE_CACHE_TTL)
            .map(|(_, f)| f.clone())
    }

    fn remember(&self, hash: &str, found: Found) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= REMOTE_CACHE_MAX {
            cache.clear();
        }
        cache.insert(hash.to_string(), (Instant::now(), found));
    }
}

fn parse_answer(v: &serde_json::Value) -> Found {
    let name = v.get("name")?.as_str()?.to_string();
    let perms = v.get("perms")?.as_str()?.parse().ok()?;
    Some((name, perms))
}

/// A manager's token routes: the internal check gates and workers use, and the
/// admin API (`shoal tokens`):
///
/// | route | what |
/// |---|---|
/// | `GET /v1/tokens` | every token: name, permissions, when created |
/// | `POST /v1/tokens` | `{name, perms, hash?}`: registers a token by its SHA-256, or, without `hash`, makes one and answers it (once) |
/// | `DELETE /v1/tokens/{name}` | revokes a token (`bootstrap`: the configured one) |
/// | `GET /v1/internal/token/{hash}` | nodes only: `{name, perms}` or 404 |
pub fn routes(replica: Replica, access: NodeAccess) -> Router {
    Router::new()
        .route("/v1/internal/token/{hash}", get(check))
        .route("/v1/tokens", get(list).post(create))
        .route("/v1/tokens/{name}", axum::routing::delete(revoke))
        .with_state(Arc::new((replica, access)))
}

type TokenState = State<Arc<(Replica, NodeAccess)>>;

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

async fn list(State(s): TokenState) -> Response {
    let (tokens, bootstrap_revoked) = s.0.group.read(|st| {
        let rows: Vec<serde_json::Value> = st
            .tokens
            .list()
            .into_iter()
            .map(|t| {
                serde_json::json!({
                    "name": t.name,
                    "perms": t.perms.to_string(),
                    "created_unix_ms": t.created_ms,
                    "created_index": t.created_index.0,
                })
            })
            .collect();
        (rows, st.tokens.bootstrap_revoked())
    });
    Json(serde_json::json!({ "tokens": tokens, "bootstrap_revoked": bootstrap_revoked }))
        .into_response()
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    perms: String,
    hash: Option<String>,
}

async fn create(State(s): TokenState, body: axum::body::Bytes) -> Response {
    let body: CreateBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
    };
    let perms: Perms = match body.perms.parse() {
        Ok(p) => p,
        Err(rule) => return error(StatusCode::BAD_REQUEST, format!("perms: {rule}")),
    };
    let (hash, token) = match body.hash {
        Some(h) if shoal_security::token::is_hash(&h) => (h, None),
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "hash: must be 64 lowercase hex characters (the token's SHA-256)",
            );
        }
        None => {
            let t = shoal_security::token::generate();
            (shoal_security::token::hash(&t), Some(t))
        }
    };
    let command = shoal_state::Command::Tokens(shoal_state::TokenCommand::Create {
        name: body.name.clone(),
        hash,
        perms,
        ts_ms: crate::status::unix_ms(),
    });
    match apply(&s.0, command).await {
        Ok(()) => {
            let mut answer = serde_json::json!({ "name": body.name, "perms": perms.to_string() });
            if let Some(t) = token {
                answer["token"] = t.into();
            }
            (StatusCode::CREATED, Json(answer)).into_response()
        }
        Err(r) => r,
    }
}

async fn revoke(State(s): TokenState, Path(name): Path<String>) -> Response {
    let command =
        shoal_state::Command::Tokens(shoal_state::TokenCommand::Revoke { name: name.clone() });
    match apply(&s.0, command).await {
        Ok(()) => {
            Json(serde_json::json!({ "message": format!("token {name} revoked") })).into_response()
        }
        Err(r) => r,
    }
}

/// Commits a token command; a refusal maps to 400/404/409 with the state's words.
async fn apply(replica: &Replica, command: shoal_state::Command) -> Result<(), Response> {
    use shoal_state::{Response as R, TokenError as E};
    let applied = crate::replicated::commit(replica, None, command)
        .await
        .map_err(|s| error(StatusCode::SERVICE_UNAVAILABLE, s.message()))?;
    match applied.response {
        R::Tokens(Ok(_)) => Ok(()),
        R::Tokens(Err(e)) => {
            let code = match e {
                E::NotFound(_) => StatusCode::NOT_FOUND,
                E::Exists(_) | E::DuplicateHash | E::TooMany => StatusCode::CONFLICT,
                _ => StatusCode::BAD_REQUEST,
            };
            Err(error(code, e.to_string()))
        }
        other => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unexpected answer: {other}"),
        )),
    }
}

async fn check(State(s): State<Arc<(Replica, NodeAccess)>>, Path(hash): Path<String>) -> Response {
    match local(&s.0, &s.1, &hash) {
        Some((name, perms)) => {
            Json(serde_json::json!({ "name": name, "perms": perms.to_string() })).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": "token: not recognised" })),
        )
            .into_response(),
    }
}

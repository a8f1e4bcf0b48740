//! The gossip keyring over the admin API, and its file.
//!
//! | route | what |
//! |---|---|
//! | `GET /v1/keys` | `{keys: [fingerprint…]}`, the key in use first |
//! | `POST /v1/keys` | `{op: install\|use\|remove, key: <64 hex>}`: changes this node's keyring |
//!
//! `shoal keys` calls every member in turn. The keyring is kept in
//! `<data-dir>/keyring` (mode 0600) after every change and read back at start, so a
//! restarted node keeps the rotated keys whatever its `--cluster-key` says.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use shoal_membership::{CoreError, KeyOp, MembershipHandle, keyring::fingerprint};
use shoal_types::config::{ClusterKey, format_hex_key, parse_cluster_keys};

/// The keyring file in a data directory.
pub fn keyring_path(data_dir: &Path) -> PathBuf {
    data_dir.join("keyring")
}

/// The keys a previous run left in `data_dir`, if any (they win over the config: the
/// cluster may have rotated since the config was written).
pub fn load(data_dir: &Path) -> Result<Option<Vec<ClusterKey>>, String> {
    let path = keyring_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_cluster_keys(text.trim())
            .map(Some)
            .map_err(|e| format!("{}: {}", path.display(), e.rule)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Writes the keys (the sealing one first), replacing the file atomically.
pub fn save(data_dir: &Path, keys: &[ClusterKey]) -> std::io::Result<()> {
    let text: Vec<String> = keys.iter().map(format_hex_key).collect();
    shoal_security::write_file_atomic(&keyring_path(data_dir), text.join(",").as_bytes(), 0o600)
}

struct Keys {
    membership: MembershipHandle,
    data_dir: PathBuf,
}

pub fn routes(membership: MembershipHandle, data_dir: PathBuf) -> Router {
    Router::new()
        .route("/v1/keys", get(list).post(change))
        .with_state(Arc::new(Keys {
            membership,
            data_dir,
        }))
}

fn answer(keys: &[ClusterKey]) -> Response {
    let fps: Vec<String> = keys.iter().map(fingerprint).collect();
    Json(serde_json::json!({ "keys": fps })).into_response()
}

fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

async fn list(State(k): State<Arc<Keys>>) -> Response {
    match k.membership.keys(None).await {
        Ok(keys) => answer(&keys),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    op: String,
    key: String,
}

async fn change(State(k): State<Arc<Keys>>, body: axum::body::Bytes) -> Response {
    let c: Change = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
    };
    let key = match parse_cluster_keys(&c.key).as_deref() {
        Ok([key]) => *key,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "key: must be one key of 64 hex characters",
            );
        }
    };
    let op = match c.op.as_str() {
        "install" => KeyOp::Install(key),
        "use" => KeyOp::Use(key),
        "remove" => KeyOp::Remove(key),
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("op: `{other}` is not install, use or remove"),
            );
        }
    };
    match k.membership.keys(Some(op)).await {
        Ok(keys) => {
            if let Err(e) = save(&k.data_dir, &keys) {
                // The change holds until restart; say so rather than hide it.
                tracing::error!(error = %e, "keyring changed but not saved");
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("keyring changed in memory but not saved ({e}); it is lost at restart"),
                );
            }
            answer(&keys)
        }
        Err(CoreError::Key(e)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

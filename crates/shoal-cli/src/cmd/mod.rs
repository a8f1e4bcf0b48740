//! The subcommands. Each parses its flags and calls into the library crates.

pub mod dev;
pub mod jobs;
pub mod kv;
pub mod managers;
pub mod node;
pub mod status;

use rand::Rng;
use shoal_types::config::format_hex_key;

/// Logs go to stderr; `RUST_LOG` filters them (default `info` for shoal's crates).
pub fn init_tracing() {
    // openraft warns on every failed heartbeat: 20 lines a second per peer that is down.
    // Peer health is in `shoal managers ls`, /v1/quorum and the breaker metrics instead;
    // RUST_LOG=openraft=info shows Raft's own account when needed.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,shoal=info,openraft=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A fresh random 32-byte key as 64 hex characters.
pub fn new_key() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    format_hex_key(&key)
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

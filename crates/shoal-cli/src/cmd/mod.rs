//! The subcommands. Each parses its flags and calls into the library crates.

pub mod access;
pub mod certs;
pub mod chat;
pub mod dev;
pub mod jobs;
pub mod keys;
pub mod kv;
pub mod managers;
pub mod node;
pub mod status;
pub mod tokens;

use std::{process::ExitCode, time::Duration};

use clap::Args;
use rand::Rng;
use shoal_client::{
    CallError, CallOptions,
    kv::{DEV_SERVERS, parse_servers},
};
use shoal_types::config::format_hex_key;

/// Where to send calls, and for how long to try (jobs and chat commands).
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Managers to talk to, comma-separated HOST:PORT (any of them).
    #[arg(long, env = "SHOAL_SERVERS", default_value = DEV_SERVERS, global = true)]
    servers: String,
    /// Give up a call after this many seconds (across retries and servers).
    #[arg(long, value_name = "SECS", default_value_t = 15.0, global = true)]
    timeout: f64,
}

impl ServerArgs {
    /// The server list and call options, or the exit code after saying what is wrong.
    pub fn parse(&self) -> Result<(Vec<String>, CallOptions), ExitCode> {
        if !(self.timeout.is_finite() && (0.1..=3600.0).contains(&self.timeout)) {
            eprintln!("invalid --timeout: SECS must be between 0.1 and 3600");
            return Err(ExitCode::from(2));
        }
        let servers = parse_servers(&self.servers).map_err(|e| fail(&e))?;
        let deadline = Duration::from_secs_f64(self.timeout);
        let options = CallOptions {
            attempt_timeout: CallOptions::default().attempt_timeout.min(deadline),
            deadline,
            ..CallOptions::default()
        };
        Ok((servers, options))
    }
}

/// Prints a failed call; exit 2 if it was refused as invalid, 1 otherwise.
pub fn fail(e: &CallError) -> ExitCode {
    eprintln!("error: {e}");
    match e {
        CallError::Rejected(_) | CallError::BadServers(_) => ExitCode::from(2),
        CallError::Unavailable { .. } => ExitCode::FAILURE,
    }
}

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

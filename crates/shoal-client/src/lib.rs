//! Rust client library for shoal.
//!
//! The admin HTTP API of one node ([`AdminClient`]), the replicated KV store and jobs
//! with failover across managers ([`KvClient`], [`JobsClient`], [`ChatClient`]), the status table that `shoal status` and
//! `shoal dev` print ([`render`]), and the circuit breaker every outgoing peer client
//! uses (re-exported from `shoal_types::breaker`).

pub mod admin;
pub mod chat;
pub mod jobs;
pub mod kv;
pub mod render;
pub mod servers;
pub mod whole_body;

pub use admin::{AdminClient, ClientError};
pub use chat::ChatClient;
pub use jobs::JobsClient;
pub use kv::{KvClient, KvClientError, KvOptions};
pub use servers::{CallError, CallOptions};
pub use shoal_security::Credentials;
pub use shoal_types::breaker::{BreakerConfig, BreakerState, CircuitBreaker, Refused};

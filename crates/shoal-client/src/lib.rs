//! Rust client library for shoal.
//!
//! The admin HTTP API of one node ([`AdminClient`]), the replicated KV store with
//! failover across managers ([`KvClient`]), the status table that `shoal status` and
//! `shoal dev` print ([`render`]), and the circuit breaker every outgoing peer client
//! uses ([`breaker`]).

pub mod admin;
pub mod breaker;
pub mod kv;
pub mod render;

pub use admin::{AdminClient, ClientError};
pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker, Refused};
pub use kv::{KvClient, KvClientError, KvOptions};

//! Rust client library for shoal.
//!
//! For now: the admin HTTP API of one node ([`AdminClient`]), the status table that
//! `shoal status` and `shoal dev` print ([`render`]), and the circuit breaker every
//! outgoing peer client uses ([`breaker`]). gRPC clients join here as services land.

pub mod admin;
pub mod breaker;
pub mod render;

pub use admin::{AdminClient, ClientError};
pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker, Refused};

//! Rust client library for shoal.
//!
//! For now: the admin HTTP API of one node ([`AdminClient`]) and the status table that
//! `shoal status` and `shoal dev` print ([`render`]). gRPC services join here as they
//! land.

pub mod admin;
pub mod render;

pub use admin::{AdminClient, ClientError};

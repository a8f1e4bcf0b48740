//! A shoal node: binds its ports, runs membership, serves the admin API.
//!
//! ```text
//!  NodeConfig ─► bind TCP p and UDP p+1 ─► Membership (gossip task) ──┐
//!                                     └─► one hyper server on TCP p ◄─┘ snapshot, events
//!                                           TLS (shoal-security) ─► access::guard
//!                                           ├─ gRPC (tonic): Cluster; managers: Raft, Kv
//!                                           └─ HTTP admin (axum): /v1/…, /metrics
//!  SIGTERM/Ctrl-C ─► announce leave ─► stop HTTP ─► exit (≤ 2 s)
//! ```
//!
//! [`dev`] supervises a local cluster of child processes (`shoal dev`).

pub mod access;
pub mod admin;
pub mod chat;
pub mod consensus;
pub mod dev;
pub mod grpc;
pub mod jobs;
pub mod keys;
pub mod kv;
pub mod metrics;
pub mod node;
pub mod replicated;
pub mod role_log;
pub mod status;
pub mod tasks;

pub use node::{Node, NodeError, StartedNode};

//! shoal's gRPC API.
//!
//! Generated at build time from `proto/shoal/v1/*.proto`: the public services (`Cluster`,
//! `Kv`) and the internal one (`Raft`). Any gRPC client in any language can use the same
//! files.

/// Largest gRPC message a node accepts or sends, in bytes: a 1 MiB KV value plus its
/// key and framing, with room to spare.
pub const GRPC_MESSAGE_BYTES_MAX: usize = 4 * 1024 * 1024;

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("shoal.v1");
}

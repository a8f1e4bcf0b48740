//! The openraft wiring: type config, log storage over [`DiskLog`](crate::DiskLog),
//! the state machine over [`shoal_state::State`], and the network.
//!
//! Nothing outside this crate names openraft types: callers use
//! [`RaftGroup`](raft_group::RaftGroup) with shoal's own requests and responses.

pub mod grpc;
mod hold;
pub mod log_store;
pub mod network;
pub mod peer_breaker;
pub mod raft_group;
pub mod replica;
pub mod state_machine;

/// A snapshot in flight: the encoded state.
pub type SnapshotData = std::io::Cursor<Vec<u8>>;

openraft::declare_raft_types!(
    /// shoal's Raft type configuration: our commands in, our responses out.
    pub ShoalRaft:
        D = shoal_state::Request,
        R = shoal_state::Answer,
        NodeId = u64,
        Node = openraft::BasicNode,
);

pub(crate) fn invalid_data(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

pub(crate) fn io_error(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

pub use log_store::WriteMode;
pub use raft_group::{Applied, GroupError, GroupOptions, GroupStatus, RaftGroup, RaftTiming};
pub use replica::{MembershipChange, Replica};

//! Shared vocabulary of shoal: what every other crate names.
//!
//! ```text
//!  CLI flags ─┐
//!  SHOAL_* env ┼─► PartialConfig ──merge──► NodeConfig::validate() ──► a node
//!  TOML file ─┘        (profile defaults fill the rest)
//!
//!  NodeMeta ── rides on gossip; every member learns every other member's metadata
//! ```
//!
//! Nothing here does IO or reads a clock: these are plain values and their checks.

pub mod backoff;
pub mod breaker;
pub mod config;
pub mod fence;
pub mod ids;
pub mod limits;
pub mod meta;
pub mod perms;
pub mod status;

pub use config::{ConfigError, GossipTiming, NodeConfig, PartialConfig, Profile, RaftTimingConfig};
pub use fence::{Fence, FenceGuard, StaleFence};
pub use ids::{InvalidName, NAME_RULE, NodeId, Role, validate_name};
pub use meta::{Lifecycle, MemberState, NodeMeta};
pub use perms::{Perm, Perms};

/// The version of this build, carried in node metadata and shown in status.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

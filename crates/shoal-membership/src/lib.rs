//! SWIM membership for shoal.
//!
//! foca runs the SWIM protocol (probes, indirect probes, suspicion, incarnations); this
//! crate adds what foca leaves out and wires it to a socket:
//!
//! ```text
//!            ┌──────────────── membership task (one owner) ────────────────┐
//!  UDP  ───► │ wire::Sealer ─► core::MembershipCore                        │ ──► watch<Snapshot>
//!  (or mem)  │                  ├─ foca (SWIM)         ├─ lifeguard        │ ──► broadcast<Event>
//!  ◄──────── │                  ├─ meta_table          ├─ phi per member   │ ◄── commands (tags, leave)
//!            │                  └─ timers in due order (stretched by awareness)
//!            └─────────────────────────────────────────────────────────────┘
//! ```
//!
//! * [`core`] is sans-IO and deterministic: `(now, input) → effects`.
//! * [`agent`] is the async shell: one tokio task owning the core, a [`transport`].
//! * Metadata ([`shoal_types::NodeMeta`]) rides on gossip as custom broadcasts; a member
//!   whose metadata is unknown is asked for it directly.

pub mod agent;
pub mod core;
pub mod identity;
pub mod keyring;
pub mod lifeguard;
pub mod meta_table;
pub mod phi;
pub mod timers;
pub mod transport;
pub mod view;
pub mod wire;

pub use agent::{Membership, MembershipConfig, MembershipHandle};
pub use core::{CoreConfig, CoreError, Effect, MembershipCore};
pub use keyring::{KeyError, KeyOp, Keyring};
pub use transport::{Lossy, MemNetwork, MemTransport, Transport, UdpTransport};
pub use view::{EventKind, MemberInfo, MembershipEvent, Snapshot, Stats};

//! The identity foca gossips about: node id, gossip address, and a bump that lets a
//! restarted or wrongly-declared-down node come back at once under a fresh identity.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use shoal_types::NodeId;

/// A member as SWIM sees it. Two identities with the same `addr` are the same member
/// over time; the higher `bump` wins.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GossipId {
    pub id: NodeId,
    pub addr: SocketAddr,
    pub bump: u64,
}

impl GossipId {
    pub fn new(id: NodeId, addr: SocketAddr, bump: u64) -> Self {
        Self { id, addr, bump }
    }

    /// A stand-in for a seed whose id we don't know yet: foca accepts an announce whose
    /// destination has the receiver's address, whatever the id.
    pub fn seed(addr: SocketAddr) -> Self {
        let id = NodeId::new("seed").expect("`seed` is a valid name");
        Self { id, addr, bump: 0 }
    }
}

impl foca::Identity for GossipId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            bump: self.bump.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.bump > adversary.bump
    }
}

#[cfg(test)]
mod tests {
    use foca::Identity;

    use super::*;

    #[test]
    fn renewed_identity_wins_over_its_old_self() {
        let a = GossipId::new(
            NodeId::new("m1").unwrap(),
            "127.0.0.1:9001".parse().unwrap(),
            7,
        );
        let b = a.renew().unwrap();
        assert_eq!(a.addr(), b.addr());
        assert!(b.win_addr_conflict(&a));
        assert!(!a.win_addr_conflict(&b));
    }
}

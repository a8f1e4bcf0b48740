//! Node metadata carried as foca custom broadcasts (state embedding).
//!
//! Foca owns its broadcast handler, so the table the handler fills is shared with the
//! membership core through a mutex that only the core's task ever takes: it is the
//! handler's inbox, not a lock between tasks.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use foca::{BroadcastHandler, Invalidates};
use shoal_types::{NodeId, NodeMeta, limits::META_BYTES_MAX, meta::validate_tags};

use crate::identity::GossipId;

/// Why a metadata blob was refused.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata is {0} bytes, the limit is {max}", max = META_BYTES_MAX)]
    TooBig(usize),
    #[error("metadata does not decode: {0}")]
    Decode(#[from] postcard::Error),
    #[error("metadata tags: {0}")]
    Tags(#[from] shoal_types::meta::TagError),
}

/// Encodes metadata, refusing what would not fit a packet.
pub fn encode_meta(meta: &NodeMeta) -> Result<Vec<u8>, MetaError> {
    let bytes = postcard::to_allocvec(meta)?;
    if bytes.len() > META_BYTES_MAX {
        return Err(MetaError::TooBig(bytes.len()));
    }
    Ok(bytes)
}

/// Decodes and checks metadata from the wire.
pub fn decode_meta(bytes: &[u8]) -> Result<NodeMeta, MetaError> {
    if bytes.len() > META_BYTES_MAX {
        return Err(MetaError::TooBig(bytes.len()));
    }
    let meta: NodeMeta = postcard::from_bytes(bytes)?;
    validate_tags(&meta.tags)?;
    Ok(meta)
}

/// The newest metadata heard from each node, and which entries changed since the core
/// last looked.
#[derive(Debug)]
pub struct MetaTable {
    by_id: HashMap<NodeId, NodeMeta>,
    changed: Vec<NodeId>,
    /// Versions above this are refused: a version is its node's start time in unix ms
    /// plus one per update, so one far ahead of the clock is forged or corrupt — and
    /// kept, it would pin the node's metadata (no real update could be newer).
    version_ceiling: u64,
    /// Metadata refused for a version above the ceiling.
    refused: u64,
}

impl Default for MetaTable {
    fn default() -> Self {
        Self {
            by_id: HashMap::new(),
            changed: Vec::new(),
            version_ceiling: u64::MAX,
            refused: 0,
        }
    }
}

/// How far ahead of this node's clock a metadata version may be (clock skew between
/// nodes, and a node's updates counted on top of its start time).
pub const META_VERSION_AHEAD_MAX_MS: u64 = 24 * 3600 * 1000;

impl MetaTable {
    /// Sets the highest version accepted from now on.
    pub fn set_version_ceiling(&mut self, ceiling: u64) {
        self.version_ceiling = ceiling;
    }

    /// Metadata refused so far for a version beyond the ceiling.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Forgets a member the cluster has forgotten (its metadata would otherwise stay
    /// here for as long as the node runs).
    pub fn forget(&mut self, id: &NodeId) {
        self.by_id.remove(id);
    }

    /// How many members' metadata is held.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Keeps `meta` if it is newer than what we have; true when it was.
    pub fn offer(&mut self, meta: NodeMeta) -> bool {
        if meta.version > self.version_ceiling {
            self.refused += 1;
            return false;
        }
        let newer = self
            .by_id
            .get(&meta.id)
            .is_none_or(|known| meta.version > known.version);
        if newer {
            self.changed.push(meta.id.clone());
            self.by_id.insert(meta.id.clone(), meta);
        }
        newer
    }

    pub fn get(&self, id: &NodeId) -> Option<&NodeMeta> {
        self.by_id.get(id)
    }

    pub fn take_changed(&mut self) -> Vec<NodeId> {
        std::mem::take(&mut self.changed)
    }
}

/// Shared handle on the table.
#[derive(Debug, Clone, Default)]
pub struct SharedMeta(Arc<Mutex<MetaTable>>);

impl SharedMeta {
    pub fn lock(&self) -> MutexGuard<'_, MetaTable> {
        // Only the membership task takes this lock, and no code path panics while
        // holding it; recover the data rather than propagate a poison.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Broadcast key: newer versions of one node's metadata replace older ones in foca's
/// dissemination backlog.
#[derive(Debug, Clone)]
pub struct MetaKey {
    id: NodeId,
    version: u64,
}

impl Invalidates for MetaKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.id == other.id && self.version >= other.version
    }
}

/// foca's handler for metadata broadcasts.
#[derive(Debug, Clone)]
pub struct MetaBroadcasts {
    pub table: SharedMeta,
}

impl BroadcastHandler<GossipId> for MetaBroadcasts {
    type Key = MetaKey;
    type Error = MetaError;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&GossipId>,
    ) -> Result<Option<MetaKey>, MetaError> {
        let meta = decode_meta(data)?;
        let key = MetaKey {
            id: meta.id.clone(),
            version: meta.version,
        };
        Ok(self.table.lock().offer(meta).then_some(key))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use shoal_types::{Lifecycle, Role};

    use super::*;

    fn meta(version: u64) -> NodeMeta {
        NodeMeta {
            id: NodeId::new("w1").unwrap(),
            role: Role::Worker,
            dc: "dc1".into(),
            tcp_addr: "127.0.0.1:9200".parse().unwrap(),
            tags: BTreeMap::from([("gpu".into(), "true".into())]),
            lifecycle: Lifecycle::Active,
            version,
            build: "0.1.0".into(),
            cores: 8,
            load_permille: 250,
            chat_clients: 0,
            chat_messages: 0,
            leader_hint: Some("m2".into()),
            leader_term: 3,
            started_unix_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn metadata_roundtrips_and_is_bounded() {
        let m = meta(3);
        assert_eq!(decode_meta(&encode_meta(&m).unwrap()).unwrap(), m);
        assert!(matches!(
            decode_meta(&[0xff; 2000]),
            Err(MetaError::TooBig(2000))
        ));
        assert!(decode_meta(&[1, 2, 3]).is_err());
        let mut big = meta(1);
        big.tags = (0..20)
            .map(|i| (format!("k{i}"), "v".repeat(200)))
            .collect();
        assert!(matches!(encode_meta(&big), Err(MetaError::TooBig(_))));
    }

    #[test]
    fn only_newer_versions_replace() {
        let mut t = MetaTable::default();
        assert!(t.offer(meta(2)));
        assert!(!t.offer(meta(2)));
        assert!(!t.offer(meta(1)));
        assert!(t.offer(meta(3)));
        assert_eq!(t.take_changed().len(), 2);
        assert!(t.take_changed().is_empty());
        let k3 = MetaKey {
            id: meta(3).id,
            version: 3,
        };
        let k2 = MetaKey {
            id: meta(2).id,
            version: 2,
        };
        assert!(k3.invalidates(&k2) && !k2.invalidates(&k3));
    }

    /// A forged version far beyond the clock is refused (it would pin the member's
    /// metadata: no real update could ever be newer), and a forgotten member's entry
    /// goes.
    #[test]
    fn versions_beyond_the_ceiling_are_refused_and_forgotten_members_pruned() {
        let mut t = MetaTable::default();
        t.set_version_ceiling(1_000);
        assert!(!t.offer(meta(u64::MAX)));
        assert_eq!(t.refused(), 1);
        assert!(t.offer(meta(5)), "a real version is taken");
        assert!(t.offer(meta(1_000)), "up to the ceiling itself");
        assert!(!t.offer(meta(1_001)));
        assert_eq!(
            t.get(&NodeId::new("w1").unwrap()).map(|m| m.version),
            Some(1_000)
        );
        assert_eq!(t.len(), 1);
        t.forget(&NodeId::new("w1").unwrap());
        assert!(t.is_empty());
        assert!(t.offer(meta(7)), "a member that comes back starts afresh");
    }
}

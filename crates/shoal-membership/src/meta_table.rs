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
#[derive(Debug, Default)]
pub struct MetaTable {
    by_id: HashMap<NodeId, NodeMeta>,
    changed: Vec<NodeId>,
}

impl MetaTable {
    /// Keeps `meta` if it is newer than what we have; true when it was.
    pub fn offer(&mut self, meta: NodeMeta) -> bool {
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
}

//! The replicated key-value store: put, delete, compare-and-set on a key's revision,
//! get and list by prefix. Revisions are global and increase with every change, as in
//! etcd: a key's `mod_revision` is the store revision of its last change.

use serde::{Deserialize, Serialize};

use crate::{LogIndex, key::Key};

/// Longest key, in bytes.
pub const KEY_BYTES_MAX: usize = 1024;
/// Largest value, in bytes.
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    Put {
        key: String,
        #[serde(with = "crate::bytes")]
        value: Vec<u8>,
    },
    Delete {
        key: String,
    },
    /// Writes only if the key's `mod_revision` is `expected_revision` (0: the key must
    /// not exist).
    Cas {
        key: String,
        #[serde(with = "crate::bytes")]
        value: Vec<u8>,
        expected_revision: u64,
    },
}

/// A refused KV command; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum KvError {
    #[error("key: must not be empty")]
    EmptyKey,
    #[error("key: {len} bytes, the limit is {max}", max = KEY_BYTES_MAX)]
    KeyTooLong { len: usize },
    #[error("value: {len} bytes, the limit is {max}", max = VALUE_BYTES_MAX)]
    ValueTooLarge { len: usize },
    #[error("revision: expected {expected}, the key is at {actual} (0 = absent)")]
    RevisionMismatch { expected: u64, actual: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvResponse {
    /// The key now has `revision`; `previous` was its revision before, if it existed.
    Put {
        revision: u64,
        previous: Option<u64>,
    },
    /// `revision` of the deletion if the key existed.
    Delete { revision: Option<u64> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    #[serde(with = "crate::bytes")]
    pub value: Vec<u8>,
    pub create_revision: u64,
    pub mod_revision: u64,
    /// Number of writes since creation (1 after the first put).
    pub version: u64,
    /// Log index of the last change.
    pub index: LogIndex,
}

/// The key-value state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KvStore {
    /// A persistent ordered map: cloning it (for a snapshot) shares every node, and the
    /// writes after it copy only the nodes they touch. Encodes as a map, as a
    /// `BTreeMap` would (same snapshot bytes).
    entries: imbl::OrdMap<Key, KvEntry>,
    /// The store's revision: the number of changes ever applied.
    revision: u64,
}

/// Checks a key at the edge and again in `apply`.
pub fn validate_key(key: &str) -> Result<(), KvError> {
    if key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(KvError::KeyTooLong { len: key.len() });
    }
    Ok(())
}

pub fn validate_value(value: &[u8]) -> Result<(), KvError> {
    if value.len() > VALUE_BYTES_MAX {
        return Err(KvError::ValueTooLarge { len: value.len() });
    }
    Ok(())
}

impl KvCommand {
    /// The same checks `apply` makes, for callers that want to refuse early.
    pub fn validate(&self) -> Result<(), KvError> {
        match self {
            KvCommand::Put { key, value } | KvCommand::Cas { key, value, .. } => {
                validate_key(key)?;
                validate_value(value)
            }
            KvCommand::Delete { key } => validate_key(key),
        }
    }
}

impl KvStore {
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn get(&self, key: &str) -> Option<&KvEntry> {
        self.entries.get(key.as_bytes())
    }

    /// Every key starting with `prefix`, in key order.
    pub fn list<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a KvEntry)> {
        self.list_after(prefix, None)
    }

    /// Keys with `prefix` in key order, starting after `after` (a page's last key).
    pub fn list_after<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a str, &'a KvEntry)> {
        let from = match after {
            Some(a) if a.as_bytes() >= prefix.as_bytes() => std::ops::Bound::Excluded(a.as_bytes()),
            _ => std::ops::Bound::Included(prefix.as_bytes()),
        };
        self.entries
            .range::<_, [u8]>((from, std::ops::Bound::Unbounded))
            .take_while(move |(k, _)| k.as_bytes().starts_with(prefix.as_bytes()))
            .map(|(k, e)| (k.as_str(), e))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn apply(
        &mut self,
        index: LogIndex,
        cmd: &KvCommand,
    ) -> Result<KvResponse, KvError> {
        cmd.validate()?;
        match cmd {
            KvCommand::Put { key, value } => Ok(self.put(index, key, value)),
            KvCommand::Cas {
                key,
                value,
                expected_revision,
            } => {
                let actual = self
                    .entries
                    .get(key.as_bytes())
                    .map_or(0, |e| e.mod_revision);
                if actual != *expected_revision {
                    return Err(KvError::RevisionMismatch {
                        expected: *expected_revision,
                        actual,
                    });
                }
                Ok(self.put(index, key, value))
            }
            KvCommand::Delete { key } => {
                let revision = self.entries.remove(key.as_bytes()).map(|_| {
                    self.revision += 1;
                    self.revision
                });
                Ok(KvResponse::Delete { revision })
            }
        }
    }

    fn put(&mut self, index: LogIndex, key: &str, value: &[u8]) -> KvResponse {
        self.revision += 1;
        let revision = self.revision;
        match self.entries.get_mut(key.as_bytes()) {
            Some(e) => {
                let previous = e.mod_revision;
                e.value = value.to_vec();
                e.mod_revision = revision;
                e.version += 1;
                e.index = index;
                KvResponse::Put {
                    revision,
                    previous: Some(previous),
                }
            }
            None => {
                self.entries.insert(
                    Key::from(key),
                    KvEntry {
                        value: value.to_vec(),
                        create_revision: revision,
                        mod_revision: revision,
                        version: 1,
                        index,
                    },
                );
                KvResponse::Put {
                    revision,
                    previous: None,
                }
            }
        }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        for (k, e) in &self.entries {
            if e.mod_revision > self.revision || e.create_revision > e.mod_revision {
                return Err(format!("kv: `{k}` has revisions beyond the store's"));
            }
            if e.version == 0 {
                return Err(format!("kv: `{k}` has version 0"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn put(s: &mut KvStore, i: u64, key: &str, value: &str) {
        let cmd = KvCommand::Put {
            key: key.into(),
            value: value.as_bytes().to_vec(),
        };
        s.apply(LogIndex(i), &cmd).unwrap();
    }

    /// Snapshots written before the map became persistent must still open: the
    /// store encodes exactly as it did with a `BTreeMap`.
    #[test]
    fn encodes_as_the_btreemap_it_replaced() {
        #[derive(Serialize, Deserialize)]
        struct Before {
            entries: BTreeMap<String, KvEntry>,
            revision: u64,
        }
        let mut s = KvStore::default();
        for (i, k) in ["b", "a", "c/1", "c/0", "a"].iter().enumerate() {
            put(&mut s, i as u64 + 1, k, &format!("v{i}"));
        }
        let before = Before {
            entries: s
                .entries
                .iter()
                .map(|(k, e)| (k.to_string(), e.clone()))
                .collect(),
            revision: s.revision,
        };
        let old = postcard::to_allocvec(&before).unwrap();
        assert_eq!(postcard::to_allocvec(&s).unwrap(), old);
        let back: KvStore = postcard::from_bytes(&old).unwrap();
        assert_eq!(back, s);
        let keys: Vec<&str> = back.list("c/").map(|(k, _)| k).collect();
        assert_eq!(keys, ["c/0", "c/1"]);
    }

    /// A snapshot is a clone: writes after it do not show in it.
    #[test]
    fn a_clone_keeps_its_contents_while_the_original_changes() {
        let mut s = KvStore::default();
        for i in 0..1_000 {
            put(&mut s, i + 1, &format!("k{i:04}"), "old");
        }
        let snap = s.clone();
        for i in 0..1_000 {
            put(&mut s, 1_001 + i, &format!("k{i:04}"), "new");
        }
        put(&mut s, 2_001, "extra", "x");
        assert_eq!(snap.len(), 1_000);
        assert!(
            snap.list("k")
                .all(|(_, e)| e.value == b"old" && e.version == 1)
        );
        assert!(
            s.list("k")
                .all(|(_, e)| e.value == b"new" && e.version == 2)
        );
        assert_eq!(snap.revision(), 1_000);
    }
}

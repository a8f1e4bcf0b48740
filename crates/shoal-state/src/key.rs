//! The KV map's key: short keys live inside the map's nodes.
//!
//! A lookup in the ordered map compares the wanted key with a few keys per tree level.
//! With `String` keys every comparison first follows a pointer to the key's bytes
//! elsewhere on the heap, a cache miss once the map outgrows the cache: profiled on a
//! follower at 64 clients, those comparisons were ~11 % of its CPU time. A key of up to
//! [`INLINE_MAX`] bytes is stored in place (the node's memory, already loaded for the
//! comparison); a longer one on the heap as before.
//!
//! Ordered, compared and hashed by its bytes, exactly like the `String` it replaces
//! (`str` orders bytewise), and serialized as a string: the snapshot bytes do not change.

use std::{borrow::Borrow, cmp::Ordering, fmt};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest key kept in place.
pub const INLINE_MAX: usize = 22;

#[derive(Clone)]
pub enum Key {
    Inline { len: u8, bytes: [u8; INLINE_MAX] },
    Heap(Box<str>),
}

impl Key {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Heap(s) => s.as_bytes(),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            // Built from a `str` only (see `From`), so always UTF-8.
            Key::Inline { .. } => std::str::from_utf8(self.as_bytes()).unwrap_or_default(),
            Key::Heap(s) => s,
        }
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Self {
        if s.len() <= INLINE_MAX {
            let mut bytes = [0; INLINE_MAX];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            Key::Inline {
                len: s.len() as u8,
                bytes,
            }
        } else {
            Key::Heap(s.into())
        }
    }
}

impl From<String> for Key {
    fn from(s: String) -> Self {
        if s.len() <= INLINE_MAX {
            Key::from(s.as_str())
        } else {
            Key::Heap(s.into_boxed_str())
        }
    }
}

/// Lookups by `key.as_bytes()`: no UTF-8 check and no copy of the wanted key.
impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Key {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Key::from)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn short_keys_are_in_place_and_long_ones_on_the_heap() {
        assert!(matches!(Key::from("a/b"), Key::Inline { len: 3, .. }));
        assert!(matches!(
            Key::from("x".repeat(INLINE_MAX).as_str()),
            Key::Inline { .. }
        ));
        assert!(matches!(
            Key::from("x".repeat(INLINE_MAX + 1)),
            Key::Heap(_)
        ));
        assert_eq!(Key::from("").as_str(), "");
    }

    proptest! {
        /// Order, equality, text and encoding are those of the string.
        #[test]
        fn a_key_behaves_as_its_string(a in "\\PC{0,30}", b in "\\PC{0,30}") {
            let (ka, kb) = (Key::from(a.as_str()), Key::from(b.clone()));
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            prop_assert_eq!(ka == kb, a == b);
            prop_assert_eq!(ka.as_str(), a.as_str());
            let bytes = postcard::to_allocvec(&ka).unwrap();
            prop_assert_eq!(&bytes, &postcard::to_allocvec(&a).unwrap());
            prop_assert_eq!(postcard::from_bytes::<Key>(&bytes).unwrap(), ka);
        }
    }
}

//! The gossip keyring, changed at run time like Serf's: install a new key everywhere,
//! use it everywhere, remove the old one — no restart, and no member lost, because at
//! every step each node can open what every other node seals.
//!
//! ```text
//!  [OLD]  ──install NEW──► [OLD, NEW]  ──use NEW──► [NEW, OLD]  ──remove OLD──► [NEW]
//!           (opens both)                 (seals NEW)              (opens NEW only)
//! ```

use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce, aead::Aead};
use shoal_types::config::ClusterKey;

/// A change to the keyring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOp {
    /// Also open packets sealed with this key (idempotent).
    Install(ClusterKey),
    /// Seal with this key from now on (it must be installed).
    Use(ClusterKey),
    /// Stop opening packets sealed with this key (not the one in use).
    Remove(ClusterKey),
}

/// Why a keyring change was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key {0}: not installed here (install it first)")]
    NotInstalled(String),
    #[error("key {0}: it is the key in use; `use` another key first")]
    InUse(String),
    #[error("keys: this node gossips unsealed (no cluster key): a keyring needs a key at start")]
    Unsealed,
    #[error("keys: at most {0} keys at once")]
    TooMany(usize),
}

/// Keys a node holds at once.
pub const KEYS_MAX: usize = 8;

/// The keys, the one that seals first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyring {
    keys: Vec<ClusterKey>,
}

impl Keyring {
    pub fn new(keys: Vec<ClusterKey>) -> Self {
        Self { keys }
    }

    pub fn keys(&self) -> &[ClusterKey] {
        &self.keys
    }

    /// Applies `op`; the keyring afterwards, or why not (then it is unchanged).
    pub fn apply(&mut self, op: KeyOp) -> Result<(), KeyError> {
        if self.keys.is_empty() {
            return Err(KeyError::Unsealed);
        }
        match op {
            KeyOp::Install(k) => {
                if !self.keys.contains(&k) {
                    if self.keys.len() >= KEYS_MAX {
                        return Err(KeyError::TooMany(KEYS_MAX));
                    }
                    self.keys.push(k);
                }
            }
            KeyOp::Use(k) => {
                let at = self
                    .keys
                    .iter()
                    .position(|x| *x == k)
                    .ok_or_else(|| KeyError::NotInstalled(fingerprint(&k)))?;
                let key = self.keys.remove(at);
                self.keys.insert(0, key);
            }
            KeyOp::Remove(k) => {
                let at = self
                    .keys
                    .iter()
                    .position(|x| *x == k)
                    .ok_or_else(|| KeyError::NotInstalled(fingerprint(&k)))?;
                if at == 0 {
                    return Err(KeyError::InUse(fingerprint(&k)));
                }
                self.keys.remove(at);
            }
        }
        Ok(())
    }

    /// Each key's fingerprint, the one in use first.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys.iter().map(fingerprint).collect()
    }
}

/// A key's public name: 8 bytes of its cipher's output on a fixed input, in hex. It
/// names the key in lists and errors without revealing it.
pub fn fingerprint(key: &ClusterKey) -> String {
    let cipher = ChaCha20Poly1305::new(key.into());
    let out = cipher
        .encrypt(
            Nonce::from_slice(&[0xA5; 12]),
            &b"shoal key fingerprint"[..],
        )
        .expect("encrypting an in-memory buffer cannot fail");
    out[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_installs_uses_then_removes() {
        let (old, new) = ([1u8; 32], [2u8; 32]);
        let mut ring = Keyring::new(vec![old]);
        assert_eq!(
            ring.apply(KeyOp::Use(new)),
            Err(KeyError::NotInstalled(fingerprint(&new)))
        );
        ring.apply(KeyOp::Install(new)).unwrap();
        ring.apply(KeyOp::Install(new)).unwrap();
        assert_eq!(ring.keys(), &[old, new]);
        assert_eq!(
            ring.apply(KeyOp::Remove(old)),
            Err(KeyError::InUse(fingerprint(&old)))
        );
        ring.apply(KeyOp::Use(new)).unwrap();
        assert_eq!(ring.keys(), &[new, old]);
        ring.apply(KeyOp::Remove(old)).unwrap();
        assert_eq!(ring.keys(), &[new]);
        assert_eq!(ring.fingerprints(), vec![fingerprint(&new)]);
        assert_ne!(fingerprint(&old), fingerprint(&new));
        assert_eq!(fingerprint(&old).len(), 16);
        let mut unsealed = Keyring::new(vec![]);
        assert_eq!(unsealed.apply(KeyOp::Install(new)), Err(KeyError::Unsealed));
    }
}

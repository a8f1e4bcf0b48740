//! The gossip envelope: versioned, bounded, optionally sealed.
//!
//! ```text
//!  plain:  "SH" | version=2 | kind | key id = 0 | payload
//!  sealed: "SH" | version=2 | kind | key id ≠ 0 | nonce (12) |
//!          ChaCha20-Poly1305(sent at, unix ms u64 LE | payload) + tag (16)
//! ```
//! The first five bytes are authenticated as associated data, so a sealed packet's kind
//! cannot be changed in flight. The sending time inside the seal bounds replays: a
//! packet more than `GOSSIP_REPLAY_WINDOW_MS` from the receiver's clock is refused. A key's id is derived from the key itself, so every node
//! holding the same key agrees on it without configuration; during a rotation a node
//! seals with its first key and opens with any of its keys.

use chacha20poly1305::{
    ChaCha20Poly1305, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use rand::Rng;
use shoal_types::{
    config::ClusterKey,
    limits::{GOSSIP_PACKET_BYTES_MAX, GOSSIP_REPLAY_WINDOW_MS},
};

const MAGIC: [u8; 2] = *b"SH";
pub const WIRE_VERSION: u8 = 2;
const HEADER_BYTES: usize = 5;
const NONCE_BYTES: usize = 12;
const STAMP_BYTES: usize = 8;
const TAG_BYTES: usize = 16;

/// What an envelope carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A foca (SWIM) packet.
    Swim = 1,
    /// The sender's metadata, pushed directly.
    MetaPush = 2,
    /// "Send me your metadata."
    MetaRequest = 3,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Kind::Swim),
            2 => Some(Kind::MetaPush),
            3 => Some(Kind::MetaRequest),
            _ => None,
        }
    }
}

/// Why an inbound packet was dropped. Each reason is a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    Truncated,
    Oversized,
    BadMagic,
    UnknownVersion,
    UnknownKind,
    /// Sealed with a key we do not hold, or we hold keys and it was not sealed.
    UnknownKey,
    /// The AEAD tag did not verify: tampered, or sealed with another key.
    AuthFailed,
    /// The envelope was fine but its payload did not decode.
    Malformed,
    /// A member declared down keeps talking (foca tells it so), or our own packet.
    Rejected,
    /// Sealed at a time too far from our clock: a replay (or a clock far off).
    Stale,
    /// An unsealed request smaller than its answer (no amplification).
    TooSmall,
}

impl DropReason {
    pub const ALL: [DropReason; 11] = [
        DropReason::Truncated,
        DropReason::Oversized,
        DropReason::BadMagic,
        DropReason::UnknownVersion,
        DropReason::UnknownKind,
        DropReason::UnknownKey,
        DropReason::AuthFailed,
        DropReason::Malformed,
        DropReason::Rejected,
        DropReason::Stale,
        DropReason::TooSmall,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::Oversized => "oversized",
            DropReason::BadMagic => "bad_magic",
            DropReason::UnknownVersion => "unknown_version",
            DropReason::UnknownKind => "unknown_kind",
            DropReason::UnknownKey => "unknown_key",
            DropReason::AuthFailed => "auth_failed",
            DropReason::Malformed => "malformed",
            DropReason::Rejected => "rejected",
            DropReason::Stale => "stale",
            DropReason::TooSmall => "too_small",
        }
    }
}

/// Seals and opens envelopes with the cluster keys (none: plain text).
#[derive(Clone)]
pub struct Sealer {
    /// (key id, cipher); the first one seals.
    keys: Vec<(u8, ChaCha20Poly1305)>,
    /// The wall clock in unix ms, as the owner last set it: stamped into sealed
    /// packets, and what their stamps are checked against.
    clock_ms: u64,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<u8> = self.keys.iter().map(|(id, _)| *id).collect();
        f.debug_struct("Sealer").field("key_ids", &ids).finish()
    }
}

impl Sealer {
    pub fn new(keys: &[ClusterKey]) -> Self {
        let keys = keys
            .iter()
            .map(|k| {
                let cipher = ChaCha20Poly1305::new(k.into());
                (key_id(&cipher), cipher)
            })
            .collect();
        Self { keys, clock_ms: 0 }
    }

    /// Sets the clock stamped into and checked against sealed packets.
    pub fn set_clock(&mut self, unix_ms: u64) {
        self.clock_ms = unix_ms;
    }

    /// Takes over another sealer's clock (a keyring change keeps the time).
    pub fn copy_clock(&mut self, other: &Sealer) {
        self.clock_ms = other.clock_ms;
    }

    pub fn is_sealed(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Bytes the envelope adds to a payload.
    pub fn overhead(&self) -> usize {
        if self.is_sealed() {
            HEADER_BYTES + NONCE_BYTES + STAMP_BYTES + TAG_BYTES
        } else {
            HEADER_BYTES
        }
    }

    /// Wraps `payload`; `rng` supplies the nonce.
    pub fn seal(&self, kind: Kind, payload: &[u8], rng: &mut impl Rng) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + self.overhead());
        out.extend_from_slice(&MAGIC);
        out.push(WIRE_VERSION);
        out.push(kind as u8);
        match self.keys.first() {
            None => {
                out.push(0);
                out.extend_from_slice(payload);
            }
            Some((id, cipher)) => {
                out.push(*id);
                let mut nonce = [0u8; NONCE_BYTES];
                rng.fill_bytes(&mut nonce);
                let aad = out.clone();
                out.extend_from_slice(&nonce);
                let mut msg = Vec::with_capacity(STAMP_BYTES + payload.len());
                msg.extend_from_slice(&self.clock_ms.to_le_bytes());
                msg.extend_from_slice(payload);
                let sealed = cipher
                    .encrypt(
                        Nonce::from_slice(&nonce),
                        Payload {
                            msg: &msg,
                            aad: &aad,
                        },
                    )
                    .expect("ChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
                out.extend_from_slice(&sealed);
            }
        }
        out
    }

    /// Checks and unwraps a packet. Never panics, whatever the bytes.
    pub fn open(&self, packet: &[u8]) -> Result<(Kind, Vec<u8>), DropReason> {
        if packet.len() > GOSSIP_PACKET_BYTES_MAX {
            return Err(DropReason::Oversized);
        }
        if packet.len() < HEADER_BYTES {
            return Err(DropReason::Truncated);
        }
        if packet[..2] != MAGIC {
            return Err(DropReason::BadMagic);
        }
        if packet[2] != WIRE_VERSION {
            return Err(DropReason::UnknownVersion);
        }
        let kind = Kind::from_byte(packet[3]).ok_or(DropReason::UnknownKind)?;
        let key_id = packet[4];
        let body = &packet[HEADER_BYTES..];
        if key_id == 0 {
            return if self.is_sealed() {
                Err(DropReason::UnknownKey)
            } else {
                Ok((kind, body.to_vec()))
            };
        }
        let (_, cipher) = self
            .keys
            .iter()
            .find(|(id, _)| *id == key_id)
            .ok_or(DropReason::UnknownKey)?;
        if body.len() < NONCE_BYTES + STAMP_BYTES + TAG_BYTES {
            return Err(DropReason::Truncated);
        }
        let (nonce, sealed) = body.split_at(NONCE_BYTES);
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &packet[..HEADER_BYTES],
                },
            )
            .map_err(|_| DropReason::AuthFailed)
            .and_then(|mut plain| {
                let stamp = u64::from_le_bytes(
                    plain[..STAMP_BYTES]
                        .try_into()
                        .expect("length checked above"),
                );
                if stamp.abs_diff(self.clock_ms) > GOSSIP_REPLAY_WINDOW_MS {
                    return Err(DropReason::Stale);
                }
                plain.drain(..STAMP_BYTES);
                Ok((kind, plain))
            })
    }
}

/// A key's id: the first byte of the tag over an empty message under a zero nonce,
/// mapped away from 0 (which means "not sealed").
fn key_id(cipher: &ChaCha20Poly1305) -> u8 {
    let tag = cipher
        .encrypt(Nonce::from_slice(&[0u8; NONCE_BYTES]), &b""[..])
        .expect("encrypting an empty message cannot fail");
    tag[0].max(1)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::{SeedableRng, rngs::StdRng};

    use super::*;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    #[test]
    fn plain_roundtrip() {
        let s = Sealer::new(&[]);
        let p = s.seal(Kind::Swim, b"hello", &mut rng());
        assert_eq!(s.open(&p).unwrap(), (Kind::Swim, b"hello".to_vec()));
    }

    #[test]
    fn sealed_roundtrip_and_rotation() {
        let old = Sealer::new(&[[1; 32]]);
        let rotating = Sealer::new(&[[2; 32], [1; 32]]);
        let p = old.seal(Kind::MetaPush, b"meta", &mut rng());
        assert_eq!(
            rotating.open(&p).unwrap(),
            (Kind::MetaPush, b"meta".to_vec())
        );
        let q = rotating.seal(Kind::Swim, b"x", &mut rng());
        assert_eq!(old.open(&q), Err(DropReason::UnknownKey));
    }

    #[test]
    fn foreign_and_tampered_packets_are_refused() {
        let ours = Sealer::new(&[[1; 32]]);
        let theirs = Sealer::new(&[[3; 32]]);
        let plain = Sealer::new(&[]);
        let p = theirs.seal(Kind::Swim, b"join me", &mut rng());
        assert!(matches!(
            ours.open(&p),
            Err(DropReason::UnknownKey | DropReason::AuthFailed)
        ));
        assert_eq!(
            ours.open(&plain.seal(Kind::Swim, b"x", &mut rng())),
            Err(DropReason::UnknownKey)
        );
        assert_eq!(
            plain.open(&ours.seal(Kind::Swim, b"x", &mut rng())),
            Err(DropReason::UnknownKey)
        );
        let mut t = ours.seal(Kind::Swim, b"payload", &mut rng());
        let last = t.len() - 1;
        t[last] ^= 1;
        assert_eq!(ours.open(&t), Err(DropReason::AuthFailed));
        let mut k = ours.seal(Kind::Swim, b"payload", &mut rng());
        k[3] = Kind::MetaPush as u8;
        assert_eq!(
            ours.open(&k),
            Err(DropReason::AuthFailed),
            "the kind is authenticated"
        );
    }

    /// A sealed packet carries its sending time: replayed later than the window (or
    /// from a clock that far off) it is refused, within it accepted.
    #[test]
    fn replays_outside_the_window_are_refused() {
        let mut a = Sealer::new(&[[1; 32]]);
        let mut b = a.clone();
        a.set_clock(1_000_000);
        let p = a.seal(Kind::Swim, b"ping", &mut rng());
        b.set_clock(1_000_000 + GOSSIP_REPLAY_WINDOW_MS);
        assert_eq!(b.open(&p).unwrap(), (Kind::Swim, b"ping".to_vec()));
        b.set_clock(1_000_000 + GOSSIP_REPLAY_WINDOW_MS + 1);
        assert_eq!(b.open(&p), Err(DropReason::Stale));
        b.set_clock(1_000_000 - GOSSIP_REPLAY_WINDOW_MS - 1);
        assert_eq!(b.open(&p), Err(DropReason::Stale), "from the future too");
        assert_eq!(p.len(), 4 + a.overhead());
    }

    #[test]
    fn bad_envelopes_are_named() {
        let s = Sealer::new(&[]);
        assert_eq!(s.open(b"SH"), Err(DropReason::Truncated));
        assert_eq!(s.open(b"XX\x01\x01\x00"), Err(DropReason::BadMagic));
        assert_eq!(s.open(b"SH\x09\x01\x00"), Err(DropReason::UnknownVersion));
        assert_eq!(
            s.open(b"SH\x01\x01\x00"),
            Err(DropReason::UnknownVersion),
            "version 1"
        );
        assert_eq!(s.open(b"SH\x02\x77\x00"), Err(DropReason::UnknownKind));
        assert_eq!(
            s.open(&vec![0u8; GOSSIP_PACKET_BYTES_MAX + 1]),
            Err(DropReason::Oversized)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
            let _ = Sealer::new(&[]).open(&bytes);
            let _ = Sealer::new(&[[5; 32]]).open(&bytes);
        }

        #[test]
        fn sealed_payloads_roundtrip(payload in proptest::collection::vec(any::<u8>(), 0..1300), seed: u64) {
            let s = Sealer::new(&[[9; 32]]);
            let p = s.seal(Kind::Swim, &payload, &mut StdRng::seed_from_u64(seed));
            prop_assert_eq!(s.open(&p).unwrap(), (Kind::Swim, payload));
        }
    }
}

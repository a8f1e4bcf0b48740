//! Named limits. Each one has a unit in its name and a check where input enters.

/// Longest node id, dc name, tag key: characters of `[A-Za-z0-9_.-]`.
pub const NAME_CHARS_MAX: usize = 64;
/// Longest tag value, in bytes.
pub const TAG_VALUE_BYTES_MAX: usize = 256;
/// Most tags one node may carry.
pub const TAGS_MAX: usize = 32;
/// Largest encoded node metadata, in bytes. It must fit in one gossip packet beside the
/// SWIM header, so it is well below `GOSSIP_PACKET_BYTES_MAX`.
pub const META_BYTES_MAX: usize = 1024;
/// Largest gossip datagram we send or accept, envelope included. Below a 1500-byte
/// Ethernet MTU minus IP/UDP headers, so nothing is fragmented.
pub const GOSSIP_PACKET_BYTES_MAX: usize = 1400;
/// Bytes the gossip envelope adds around a SWIM payload when sealed:
/// magic(2) + version(1) + kind(1) + key id(1) + nonce(12) + timestamp(8) + tag(16).
pub const GOSSIP_ENVELOPE_BYTES: usize = 41;
/// How far a sealed gossip packet's timestamp may be from the receiver's clock, in ms:
/// a packet recorded and replayed later than this is refused. Nodes' clocks must agree
/// within it (NTP).
pub const GOSSIP_REPLAY_WINDOW_MS: u64 = 120_000;
/// Largest awareness multiplier of Lifeguard's local health score.
pub const AWARENESS_MAX: u32 = 8;
/// Largest Raft snapshot a replica accepts from a leader, in bytes: a stream that
/// declares or carries more is refused mid-stream, before it is installed.
pub const SNAPSHOT_BYTES_MAX: u64 = 1 << 30;

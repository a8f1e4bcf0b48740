//! Node metadata carried on gossip (state embedding) and member states.

use std::{collections::BTreeMap, fmt, net::SocketAddr};

use serde::{Deserialize, Serialize};

use crate::{
    ids::{NodeId, Role, validate_name},
    limits::{TAG_VALUE_BYTES_MAX, TAGS_MAX},
};

/// Where a node is in its own life, as it announces it. A manager is `syncing` until it
/// is a caught-up voter of its DC's group, `draining` while `shoal node drain` hands its
/// duties over; other roles are `active` from the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    Syncing,
    Active,
    Draining,
    Leaving,
}

impl fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lifecycle::Syncing => "syncing",
            Lifecycle::Active => "active",
            Lifecycle::Draining => "draining",
            Lifecycle::Leaving => "leaving",
        })
    }
}

/// How the cluster sees a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    Alive,
    Suspect,
    Failed,
    Left,
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Failed => "failed",
            MemberState::Left => "left",
        }
    }
}

impl fmt::Display for MemberState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What every member knows about every other member without asking it over TCP.
///
/// `version` orders updates from the same node: a receiver keeps the highest. A restarted
/// node starts from a version derived from its start time, so it supersedes its old self.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMeta {
    pub id: NodeId,
    pub role: Role,
    pub dc: String,
    /// The TCP address (gRPC + HTTP admin); gossip is on its port + 1.
    pub tcp_addr: SocketAddr,
    pub tags: BTreeMap<String, String>,
    pub lifecycle: Lifecycle,
    /// Metadata version: bumped on every change by its owner.
    pub version: u64,
    /// Build version of the node, e.g. "0.1.0".
    pub build: String,
    /// CPU cores offered (workers), 0 when not applicable.
    pub cores: u32,
    /// Load in per-mille of capacity, 0 when not reported.
    pub load_permille: u32,
    /// Chat clients subscribed through this node now (managers).
    #[serde(default)]
    pub chat_clients: u32,
    /// Chat messages stored in the cluster as this node has applied them (managers).
    #[serde(default)]
    pub chat_messages: u64,
    /// The leader this node believes in, if any (managers publish it).
    pub leader_hint: Option<String>,
    /// That leader's term (0: none): a fence on the hint, the highest term wins.
    pub leader_term: u64,
    /// Wall-clock start of the node (unix ms), for uptime in status.
    pub started_unix_ms: u64,
}

/// A tag set or tag change that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    #[error("tag key `{0}`: must be {rule}", rule = crate::NAME_RULE)]
    Key(String),
    #[error("tag `{0}`: value must be at most {max} bytes", max = TAG_VALUE_BYTES_MAX)]
    Value(String),
    #[error("tags: at most {max} tags per node", max = TAGS_MAX)]
    TooMany,
}

/// Checks one tag.
pub fn validate_tag(key: &str, value: &str) -> Result<(), TagError> {
    validate_name(key).map_err(|_| TagError::Key(key.to_string()))?;
    if value.len() > TAG_VALUE_BYTES_MAX {
        return Err(TagError::Value(key.to_string()));
    }
    Ok(())
}

/// Checks a whole tag set.
pub fn validate_tags(tags: &BTreeMap<String, String>) -> Result<(), TagError> {
    if tags.len() > TAGS_MAX {
        return Err(TagError::TooMany);
    }
    tags.iter().try_for_each(|(k, v)| validate_tag(k, v))
}

/// Parses `KEY=VALUE`.
pub fn parse_tag(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("tag `{s}`: must be KEY=VALUE"))?;
    validate_tag(k, v).map_err(|e| e.to_string())?;
    Ok((k.to_string(), v.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_checked() {
        assert_eq!(
            parse_tag("gpu=true").unwrap(),
            ("gpu".into(), "true".into())
        );
        assert!(parse_tag("gpu").unwrap_err().contains("KEY=VALUE"));
        assert!(parse_tag("g pu=1").unwrap_err().contains("tag key"));
        let long = format!("k={}", "v".repeat(TAG_VALUE_BYTES_MAX + 1));
        assert!(parse_tag(&long).unwrap_err().contains("at most"));
        let many: BTreeMap<_, _> = (0..=TAGS_MAX)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        assert_eq!(validate_tags(&many), Err(TagError::TooMany));
    }
}

//! Node ids, names and roles.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::limits::NAME_CHARS_MAX;

/// The one naming rule, in words (ids, datacenters, tag keys, jobs, workflows, rooms,
/// users).
pub const NAME_RULE: &str = "1-64 characters of [A-Za-z0-9_.-]";
const _: () = assert!(NAME_CHARS_MAX == 64, "NAME_RULE spells the limit out");

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be {NAME_RULE}")]
pub struct InvalidName;

/// Checks the one naming rule shoal uses for node ids, datacenters, tag keys, job and
/// workflow names, job ids, rooms and users.
pub fn validate_name(name: &str) -> Result<(), InvalidName> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if name.is_empty() || name.len() > NAME_CHARS_MAX || !name.chars().all(ok_char) {
        return Err(InvalidName);
    }
    Ok(())
}

/// A node's cluster-wide name, e.g. `m1`. Validated on construction.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(String);

impl NodeId {
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidName> {
        let id = id.into();
        validate_name(&id)?;
        Ok(Self(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NodeId {
    type Error = InvalidName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<NodeId> for String {
    fn from(id: NodeId) -> String {
        id.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a node does in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Manager,
    Gate,
    Worker,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Manager, Role::Gate, Role::Worker];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Manager => "manager",
            Role::Gate => "gate",
            Role::Worker => "worker",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| "must be one of manager, gate, worker".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_one_rule() {
        assert!(validate_name("m1").is_ok());
        assert!(validate_name("dc-east_2.a").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("has space").is_err());
        assert!(validate_name("ünïcode").is_err());
        assert!(validate_name(&"x".repeat(NAME_CHARS_MAX)).is_ok());
        assert!(validate_name(&"x".repeat(NAME_CHARS_MAX + 1)).is_err());
    }

    #[test]
    fn roles_parse_and_print() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert!("director".parse::<Role>().is_err());
    }
}

//! API tokens: who may call the cluster's services, and with which permissions.
//!
//! Only a token's SHA-256 (64 hex characters) is replicated; the token itself is shown
//! once, to whoever created it. The first admin token is not in this table: its hash
//! is configuration (`shoal certs init` writes it next to the CA, `--bootstrap-token`
//! sets one), and revoking the name [`BOOTSTRAP_NAME`] here turns it off everywhere.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shoal_types::{NAME_RULE, Perms, validate_name};

use crate::LogIndex;

/// The name the configured bootstrap token goes by (it cannot be created here).
pub const BOOTSTRAP_NAME: &str = "bootstrap";
/// Tokens a cluster holds.
pub const TOKENS_MAX: usize = 1_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenCommand {
    /// A new token: its name, its SHA-256 (hex) and what it may do.
    Create {
        name: String,
        hash: String,
        perms: Perms,
        /// Unix ms on the server that took the request (apply reads no clock).
        ts_ms: u64,
    },
    Revoke {
        name: String,
    },
}

/// A refused token command; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum TokenError {
    #[error("name: `{0}` is not a valid name ({NAME_RULE})")]
    BadName(String),
    #[error("name: `{BOOTSTRAP_NAME}` is the configured bootstrap token; pick another name")]
    Reserved,
    #[error("hash: must be 64 lowercase hex characters (a SHA-256)")]
    BadHash,
    #[error("perms: give at least one of read, write, exec, admin")]
    NoPerms,
    #[error("name: a token named `{0}` already exists (revoke it first)")]
    Exists(String),
    #[error("hash: this token is already registered")]
    DuplicateHash,
    #[error("name: no token named `{0}`")]
    NotFound(String),
    #[error("this cluster already holds {TOKENS_MAX} tokens")]
    TooMany,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenResponse {
    Created,
    Revoked,
}

/// One token as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub name: String,
    pub perms: Perms,
    pub created_index: LogIndex,
    pub created_ms: u64,
}

/// The token table, keyed by hash (what a request is looked up by).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Tokens {
    by_hash: BTreeMap<String, TokenRecord>,
    bootstrap_revoked: bool,
}

impl Tokens {
    pub fn apply(
        &mut self,
        index: LogIndex,
        cmd: &TokenCommand,
    ) -> Result<TokenResponse, TokenError> {
        match cmd {
            TokenCommand::Create {
                name,
                hash,
                perms,
                ts_ms,
            } => {
                check_name(name)?;
                if name == BOOTSTRAP_NAME {
                    return Err(TokenError::Reserved);
                }
                if !is_hash(hash) {
                    return Err(TokenError::BadHash);
                }
                if perms.is_empty() {
                    return Err(TokenError::NoPerms);
                }
                if self.by_hash.values().any(|t| &t.name == name) {
                    return Err(TokenError::Exists(name.clone()));
                }
                if self.by_hash.contains_key(hash) {
                    return Err(TokenError::DuplicateHash);
                }
                if self.by_hash.len() >= TOKENS_MAX {
                    return Err(TokenError::TooMany);
                }
                let record = TokenRecord {
                    name: name.clone(),
                    perms: *perms,
                    created_index: index,
                    created_ms: *ts_ms,
                };
                self.by_hash.insert(hash.clone(), record);
                Ok(TokenResponse::Created)
            }
            TokenCommand::Revoke { name } => {
                check_name(name)?;
                if name == BOOTSTRAP_NAME {
                    if self.bootstrap_revoked {
                        return Err(TokenError::NotFound(name.clone()));
                    }
                    self.bootstrap_revoked = true;
                    return Ok(TokenResponse::Revoked);
                }
                let before = self.by_hash.len();
                self.by_hash.retain(|_, t| &t.name != name);
                if self.by_hash.len() == before {
                    return Err(TokenError::NotFound(name.clone()));
                }
                Ok(TokenResponse::Revoked)
            }
        }
    }

    /// The token with this hash: its name and permissions.
    pub fn lookup(&self, hash: &str) -> Option<&TokenRecord> {
        self.by_hash.get(hash)
    }

    /// Whether the configured bootstrap token has been revoked.
    pub fn bootstrap_revoked(&self) -> bool {
        self.bootstrap_revoked
    }

    /// Every token, by name.
    pub fn list(&self) -> Vec<&TokenRecord> {
        let mut all: Vec<&TokenRecord> = self.by_hash.values().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.by_hash.len() > TOKENS_MAX {
            return Err(format!(
                "tokens: {} held, limit {TOKENS_MAX}",
                self.by_hash.len()
            ));
        }
        let mut names: Vec<&str> = self.by_hash.values().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err("tokens: two tokens share a name".into());
        }
        Ok(())
    }
}

fn check_name(name: &str) -> Result<(), TokenError> {
    validate_name(name).map_err(|_| TokenError::BadName(name.to_string()))
}

fn is_hash(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_types::Perm;

    fn create(name: &str, hash: &str, perms: Perms) -> TokenCommand {
        TokenCommand::Create {
            name: name.into(),
            hash: hash.into(),
            perms,
            ts_ms: 1,
        }
    }

    #[test]
    fn create_lookup_revoke() {
        let mut t = Tokens::default();
        let h1 = "a".repeat(64);
        let read = Perms::of(Perm::Read);
        assert_eq!(
            t.apply(LogIndex(1), &create("ci", &h1, read)),
            Ok(TokenResponse::Created)
        );
        assert_eq!(t.lookup(&h1).map(|r| r.perms), Some(read));
        assert_eq!(
            t.apply(LogIndex(2), &create("ci", &"b".repeat(64), read)),
            Err(TokenError::Exists("ci".into()))
        );
        assert_eq!(
            t.apply(LogIndex(3), &create("other", &h1, read)),
            Err(TokenError::DuplicateHash)
        );
        assert_eq!(
            t.apply(LogIndex(4), &TokenCommand::Revoke { name: "ci".into() }),
            Ok(TokenResponse::Revoked)
        );
        assert_eq!(t.lookup(&h1), None);
        assert_eq!(
            t.apply(LogIndex(5), &TokenCommand::Revoke { name: "ci".into() }),
            Err(TokenError::NotFound("ci".into()))
        );
        t.validate().unwrap();
    }

    #[test]
    fn refusals_change_nothing() {
        let mut t = Tokens::default();
        let before = t.clone();
        let h = "c".repeat(64);
        for (cmd, err) in [
            (
                create("bad name", &h, Perms::ALL),
                TokenError::BadName("bad name".into()),
            ),
            (create(BOOTSTRAP_NAME, &h, Perms::ALL), TokenError::Reserved),
            (create("x", "ABC", Perms::ALL), TokenError::BadHash),
            (create("x", &h, Perms::NONE), TokenError::NoPerms),
        ] {
            assert_eq!(t.apply(LogIndex(1), &cmd), Err(err));
        }
        assert_eq!(t, before);
    }

    #[test]
    fn the_bootstrap_token_is_revoked_by_name_once() {
        let mut t = Tokens::default();
        let revoke = TokenCommand::Revoke {
            name: BOOTSTRAP_NAME.into(),
        };
        assert!(!t.bootstrap_revoked());
        assert_eq!(t.apply(LogIndex(1), &revoke), Ok(TokenResponse::Revoked));
        assert!(t.bootstrap_revoked());
        assert_eq!(
            t.apply(LogIndex(2), &revoke),
            Err(TokenError::NotFound(BOOTSTRAP_NAME.into()))
        );
    }
}

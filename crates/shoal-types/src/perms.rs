//! What a client may do: four permissions, each implying the ones below it.
//!
//! ```text
//!  admin ─► exec ─► write ─► read
//!  managers, drain,   jobs that run    kv put/del/cas,     status, members, get,
//!  tags, tokens       `exec`           chat post, submit   list, history, watch, logs
//! ```
//!
//! A grant is kept expanded: `write` is `{read, write}`, so a check is one bit test.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// One permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Perm {
    Read,
    Write,
    Exec,
    Admin,
}

impl Perm {
    pub const ALL: [Perm; 4] = [Perm::Read, Perm::Write, Perm::Exec, Perm::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Perm::Read => "read",
            Perm::Write => "write",
            Perm::Exec => "exec",
            Perm::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// This permission and every one it implies.
    fn closure(self) -> u8 {
        (self.bit() << 1) - 1
    }
}

impl fmt::Display for Perm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Perm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Perm::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a permission (read, write, exec, admin)"))
    }
}

/// A set of permissions, closed under implication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Perms(u8);

impl Perms {
    pub const NONE: Perms = Perms(0);
    pub const ALL: Perms = Perms(0b1111);

    /// `p` and everything it implies.
    pub fn of(p: Perm) -> Self {
        Perms(p.closure())
    }

    pub fn allows(self, p: Perm) -> bool {
        self.0 & p.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The union of two grants.
    pub fn with(self, other: Perms) -> Self {
        Perms(self.0 | other.0)
    }

    /// The permissions held, lowest first.
    pub fn iter(self) -> impl Iterator<Item = Perm> {
        Perm::ALL.into_iter().filter(move |p| self.allows(*p))
    }
}

impl fmt::Display for Perms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Perm::as_str).collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

impl FromStr for Perms {
    type Err = String;
    /// `read,write,…` (comma separated, at least one); each implies those below it.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut perms = Perms::NONE;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            perms = perms.with(Perms::of(part.parse()?));
        }
        if perms.is_empty() {
            return Err("give at least one of read, write, exec, admin".into());
        }
        Ok(perms)
    }
}

impl TryFrom<String> for Perms {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Perms> for String {
    fn from(p: Perms) -> String {
        p.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_permission_implies_the_ones_below_it() {
        let write: Perms = "write".parse().unwrap();
        assert!(write.allows(Perm::Read) && write.allows(Perm::Write));
        assert!(!write.allows(Perm::Exec) && !write.allows(Perm::Admin));
        let admin: Perms = "admin".parse().unwrap();
        assert_eq!(admin, Perms::ALL);
        let read: Perms = "read".parse().unwrap();
        assert!(!read.allows(Perm::Write));
        assert_eq!(
            "read,exec".parse::<Perms>().unwrap().to_string(),
            "read,write,exec"
        );
    }

    #[test]
    fn bad_lists_name_the_rule() {
        assert!("".parse::<Perms>().unwrap_err().contains("at least one"));
        assert!("read,root".parse::<Perms>().unwrap_err().contains("`root`"));
        let round: Perms = Perms::of(Perm::Exec).to_string().parse().unwrap();
        assert_eq!(round, Perms::of(Perm::Exec));
    }
}

//! Fence tokens: every decision a leader commits carries (term, log index). Terms only
//! grow, and within a term the index only grows, so the pair orders every decision ever
//! made by any leader. A receiver that acts on decisions (a worker starting an instance,
//! a client holding a lock) remembers the highest token it has seen and refuses anything
//! fenced below it: a deposed leader that has not yet noticed cannot overrule its
//! successor.

use serde::{Deserialize, Serialize};

/// (term, log index) of a committed decision. Ordered by term, then index.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Fence {
    pub term: u64,
    pub index: u64,
}

impl Fence {
    pub const fn new(term: u64, index: u64) -> Self {
        Self { term, index }
    }
}

impl std::fmt::Display for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.term, self.index)
    }
}

/// A command refused because a newer decision was already seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("stale fence {got}: already acted on {seen}; a newer leader has decided since")]
pub struct StaleFence {
    pub got: Fence,
    pub seen: Fence,
}

/// The receiver's side: the highest fence acted on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceGuard {
    seen: Option<Fence>,
}

impl FenceGuard {
    pub fn seen(&self) -> Option<Fence> {
        self.seen
    }

    /// Accepts `f` if it is not below anything seen (equal is accepted: the same
    /// decision delivered twice), and remembers it.
    pub fn admit(&mut self, f: Fence) -> Result<(), StaleFence> {
        match self.seen {
            Some(seen) if f < seen => Err(StaleFence { got: f, seen }),
            _ => {
                self.seen = Some(f);
                Ok(())
            }
        }
    }

    /// Like [`admit`](Self::admit) but only compares terms: for receivers that take
    /// several decisions of one leader in any order, yet must refuse an older leader.
    pub fn admit_term(&mut self, f: Fence) -> Result<(), StaleFence> {
        match self.seen {
            Some(seen) if f.term < seen.term => Err(StaleFence { got: f, seen }),
            Some(seen) if f <= seen => Ok(()),
            _ => {
                self.seen = Some(f);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_term_then_index() {
        assert!(Fence::new(2, 1) > Fence::new(1, 900));
        assert!(Fence::new(2, 5) > Fence::new(2, 4));
        assert_eq!(Fence::new(3, 7).to_string(), "3.7");
    }

    #[test]
    fn guard_refuses_older_and_accepts_repeats() {
        let mut g = FenceGuard::default();
        g.admit(Fence::new(1, 10)).unwrap();
        g.admit(Fence::new(1, 10)).unwrap();
        g.admit(Fence::new(2, 3)).unwrap();
        let err = g.admit(Fence::new(1, 11)).unwrap_err();
        assert_eq!(err.seen, Fence::new(2, 3));
        assert_eq!(err.got, Fence::new(1, 11));
        assert_eq!(g.seen(), Some(Fence::new(2, 3)));
        assert!(err.to_string().contains("stale fence 1.11"));
    }

    #[test]
    fn term_guard_allows_reordering_within_a_term_only() {
        let mut g = FenceGuard::default();
        g.admit_term(Fence::new(4, 20)).unwrap();
        g.admit_term(Fence::new(4, 12)).unwrap();
        assert_eq!(g.seen(), Some(Fence::new(4, 20)));
        assert!(g.admit_term(Fence::new(3, 99)).is_err());
        g.admit_term(Fence::new(5, 1)).unwrap();
        assert_eq!(g.seen(), Some(Fence::new(5, 1)));
    }
}

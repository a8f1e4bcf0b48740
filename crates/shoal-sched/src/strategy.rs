//! How a worker is chosen among those that can take a demand.

use serde::{Deserialize, Serialize};

use crate::Rng;

/// A job's load-balancing strategy (`strategy = "…"` in the job spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The next candidate after the one chosen last, in id order.
    #[default]
    RoundRobin,
    /// A uniformly random candidate (from the injected random source).
    Random,
    /// The candidate running the fewest instances; ties go round the id order.
    LeastConnections,
}

impl Strategy {
    /// Every strategy by its spec name, for messages.
    pub const NAMES: [&'static str; 3] = ["round_robin", "random", "least_connections"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "round_robin" => Some(Self::RoundRobin),
            "random" => Some(Self::Random),
            "least_connections" => Some(Self::LeastConnections),
            _ => None,
        }
    }

    /// Chooses among `candidates` (sorted by id); `running` gives a worker's running
    /// instances, `after` the worker round-robin chose last.
    pub(crate) fn choose<'a>(
        self,
        candidates: &[&'a str],
        running: impl Fn(&str) -> u32,
        after: Option<&str>,
        rng: &mut Rng,
    ) -> Option<&'a str> {
        if candidates.is_empty() {
            return None;
        }
        // Where round-robin order resumes: the first candidate after `after`.
        let start = after.map_or(0, |a| candidates.iter().position(|c| *c > a).unwrap_or(0));
        match self {
            Self::RoundRobin => Some(candidates[start]),
            Self::Random => Some(candidates[rng.below(candidates.len())]),
            Self::LeastConnections => (0..candidates.len())
                .map(|i| candidates[(start + i) % candidates.len()])
                .min_by_key(|c| running(c)),
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::RoundRobin => "round_robin",
            Self::Random => "random",
            Self::LeastConnections => "least_connections",
        })
    }
}

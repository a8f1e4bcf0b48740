//! What the scheduler knows about one worker.

use std::collections::BTreeMap;

/// Worker tags (from gossip metadata), and a demand's constraints on them.
pub type Tags = BTreeMap<String, String>;

/// One worker's capacity and bookings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerState {
    /// Cores it advertises.
    pub cores: u32,
    /// Queue slots it offers (cores × the scheduler's slots per core).
    pub slots: u32,
    /// Slots reserved by placed instances.
    pub used: u32,
    /// Placed instances.
    pub running: u32,
    pub tags: Tags,
    /// False while it drains or is suspected: keeps what it runs, gets nothing new.
    pub accepting: bool,
}

impl WorkerState {
    pub(crate) fn new(cores: u32) -> Self {
        Self {
            cores,
            slots: cores,
            used: 0,
            running: 0,
            tags: Tags::new(),
            accepting: true,
        }
    }

    /// Slots not reserved (0 when a worker shrank below what it already holds). With
    /// one slot per core, free cores.
    pub fn free(&self) -> u32 {
        self.slots.saturating_sub(self.used)
    }

    /// Every constraint is a tag of this worker with the same value.
    pub fn matches(&self, constraints: &Tags) -> bool {
        constraints
            .iter()
            .all(|(k, v)| self.tags.get(k).is_some_and(|t| t == v))
    }

    pub(crate) fn reserve(&mut self, slots: u32) {
        self.used += slots;
        self.running += 1;
    }

    pub(crate) fn free_up(&mut self, slots: u32) {
        self.used = self.used.saturating_sub(slots);
        self.running = self.running.saturating_sub(1);
    }
}

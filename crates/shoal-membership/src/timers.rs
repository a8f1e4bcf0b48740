//! A timer queue that hands timers back in due-time order (ties: submission order).
//! foca expects its timers in order (foca issue 26); a heap of (due, seq) gives that.

use std::{collections::BTreeMap, time::Duration};

/// Where a timer sits in the queue; lets its owner move or cancel it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimerKey {
    pub due: Duration,
    seq: u64,
}

#[derive(Debug)]
pub struct TimerQueue<T> {
    queue: BTreeMap<TimerKey, T>,
    seq: u64,
}

impl<T> Default for TimerQueue<T> {
    fn default() -> Self {
        Self {
            queue: BTreeMap::new(),
            seq: 0,
        }
    }
}

impl<T> TimerQueue<T> {
    pub fn schedule(&mut self, due: Duration, timer: T) -> TimerKey {
        self.seq += 1;
        let key = TimerKey { due, seq: self.seq };
        self.queue.insert(key, timer);
        key
    }

    pub fn cancel(&mut self, key: TimerKey) -> Option<T> {
        self.queue.remove(&key)
    }

    pub fn next_due(&self) -> Option<Duration> {
        self.queue.keys().next().map(|k| k.due)
    }

    /// The earliest timer due at or before `now`.
    pub fn pop_due(&mut self, now: Duration) -> Option<(TimerKey, T)> {
        let key = *self.queue.keys().next()?;
        if key.due > now {
            return None;
        }
        self.queue.remove(&key).map(|t| (key, t))
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_come_out_in_due_order_then_submission_order() {
        let ms = Duration::from_millis;
        let mut q = TimerQueue::default();
        q.schedule(ms(30), "c");
        q.schedule(ms(10), "a");
        let moved = q.schedule(ms(5), "moved");
        q.schedule(ms(10), "b");
        assert_eq!(q.cancel(moved), Some("moved"));
        assert_eq!(q.pop_due(ms(9)), None);
        let order: Vec<_> = std::iter::from_fn(|| q.pop_due(ms(100)).map(|(_, t)| t)).collect();
        assert_eq!(order, ["a", "b", "c"]);
        assert!(q.is_empty());
    }
}

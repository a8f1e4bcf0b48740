//! Lifeguard (Dadgar et al., 2018): a node that is itself slow should not accuse others.
//!
//! * **Local health awareness**: a score in `0..=max`. Missed acks to our own probes,
//!   having to refute a suspicion about ourselves and timers that ran late raise it; a
//!   probe answered in time lowers it. Probe period, probe timeout and the suspicion
//!   window are stretched by `score + 1`.
//! * **Dynamic suspicion**: a suspicion starts with a long timeout that shrinks, on a log
//!   scale, as other members independently confirm it, down to the configured minimum.

use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

/// The local health score.
#[derive(Debug, Clone)]
pub struct Awareness {
    score: u32,
    max: u32,
}

impl Awareness {
    pub fn new(max: u32) -> Self {
        Self { score: 0, max }
    }

    pub fn score(&self) -> u32 {
        self.score
    }

    /// Raises (`delta > 0`) or lowers the score, clamped to `0..=max`.
    pub fn apply(&mut self, delta: i32) {
        let next = (self.score as i64 + delta as i64).clamp(0, self.max as i64);
        self.score = next as u32;
    }

    /// `d × (score + 1)`.
    pub fn scale(&self, d: Duration) -> Duration {
        d * (self.score + 1)
    }
}

/// One suspicion this node raised, and who has confirmed it since.
#[derive(Debug, Clone)]
pub struct Suspicion {
    pub started: Duration,
    min: Duration,
    max: Duration,
    expected_confirmations: u32,
    confirmations: BTreeSet<SocketAddr>,
}

impl Suspicion {
    pub fn new(started: Duration, min: Duration, max: Duration, expected: u32) -> Self {
        Self {
            started,
            min,
            max: max.max(min),
            expected_confirmations: expected,
            confirmations: BTreeSet::new(),
        }
    }

    /// Records an independent confirmation; true when it was new.
    pub fn confirm(&mut self, from: SocketAddr) -> bool {
        (self.confirmations.len() as u32) < self.expected_confirmations
            && self.confirmations.insert(from)
    }

    pub fn confirmations(&self) -> u32 {
        self.confirmations.len() as u32
    }

    /// `max − (max − min) · log(c + 1) / log(k + 1)`, never below `min`.
    pub fn timeout(&self) -> Duration {
        let k = self.expected_confirmations;
        if k == 0 {
            return self.min;
        }
        let c = self.confirmations() as f64;
        let frac = (c + 1.0).ln() / (k as f64 + 1.0).ln();
        let span = self.max.saturating_sub(self.min).as_secs_f64();
        let t = self.max.as_secs_f64() - span * frac;
        Duration::from_secs_f64(t.max(self.min.as_secs_f64()))
    }

    pub fn deadline(&self) -> Duration {
        self.started + self.timeout()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn awareness_goes_up_and_down_within_bounds() {
        let mut a = Awareness::new(8);
        a.apply(-1);
        assert_eq!(a.score(), 0);
        for _ in 0..20 {
            a.apply(1);
        }
        assert_eq!(a.score(), 8);
        assert_eq!(
            a.scale(Duration::from_millis(100)),
            Duration::from_millis(900)
        );
        a.apply(-3);
        assert_eq!(a.score(), 5);
        assert_eq!(
            a.scale(Duration::from_millis(100)),
            Duration::from_millis(600)
        );
    }

    #[test]
    fn suspicion_shrinks_with_confirmations() {
        let ms = Duration::from_millis;
        let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let mut s = Suspicion::new(ms(1000), ms(400), ms(800), 3);
        assert_eq!(s.timeout(), ms(800));
        assert!(s.confirm(addr(1)));
        assert!(!s.confirm(addr(1)), "the same member confirms once");
        let t1 = s.timeout();
        assert!(t1 < ms(800) && t1 > ms(400), "{t1:?}");
        s.confirm(addr(2));
        let t2 = s.timeout();
        assert!(t2 < t1);
        s.confirm(addr(3));
        assert_eq!(s.timeout(), ms(400));
        assert_eq!(s.deadline(), ms(1400));
        assert!(!s.confirm(addr(4)), "confirmations beyond k change nothing");
    }
}

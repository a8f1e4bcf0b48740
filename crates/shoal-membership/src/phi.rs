//! Phi accrual failure detector (Hayashibara et al.), per peer.
//!
//! Fed with the times packets are heard from a peer; `phi(now)` says how surprising the
//! current silence is, on a log10 scale: phi 1 ≈ 10% chance the peer is still fine,
//! phi 8 ≈ 10⁻⁸. Like Akka's detector, the normal CDF is approximated by a logistic
//! function and the standard deviation has a floor so a very regular peer does not
//! become "suspicious" after a few milliseconds of jitter.

use std::{collections::VecDeque, time::Duration};

/// Inter-arrival history of one peer.
#[derive(Debug, Clone)]
pub struct PhiDetector {
    intervals_ms: VecDeque<f64>,
    last: Option<Duration>,
    window: usize,
    min_std_ms: f64,
    /// Silence tolerated on top of the mean before phi starts to climb. SWIM does not
    /// heartbeat: a peer is heard from when it probes us, answers our probe or gossips,
    /// so gaps are irregular by design.
    pause_ms: f64,
}

/// Intervals needed before phi says anything.
const PHI_MIN_SAMPLES: usize = 3;

impl PhiDetector {
    pub fn new(window: usize, min_std_ms: f64) -> Self {
        Self::with_pause(window, min_std_ms, 0.0)
    }

    pub fn with_pause(window: usize, min_std_ms: f64, pause_ms: f64) -> Self {
        Self {
            intervals_ms: VecDeque::with_capacity(window),
            last: None,
            window: window.max(2),
            min_std_ms,
            pause_ms,
        }
    }

    /// Records that the peer was heard from at `now`.
    pub fn heartbeat(&mut self, now: Duration) {
        if let Some(last) = self.last {
            let gap = now.saturating_sub(last).as_secs_f64() * 1000.0;
            if self.intervals_ms.len() == self.window {
                self.intervals_ms.pop_front();
            }
            self.intervals_ms.push_back(gap);
        }
        self.last = Some(now);
    }

    /// Mean and standard deviation (with its floor) of the intervals, in ms.
    pub fn stats_ms(&self) -> Option<(f64, f64)> {
        if self.intervals_ms.is_empty() {
            return None;
        }
        let n = self.intervals_ms.len() as f64;
        let mean = self.intervals_ms.iter().sum::<f64>() / n;
        let var = self
            .intervals_ms
            .iter()
            .map(|x| (x - mean).powi(2))
            .sum::<f64>()
            / n;
        Some((mean, var.sqrt().max(self.min_std_ms)))
    }

    /// Suspicion level now; 0 until two heartbeats were seen.
    pub fn phi(&self, now: Duration) -> f64 {
        if self.intervals_ms.len() < PHI_MIN_SAMPLES {
            return 0.0;
        }
        match (self.last, self.stats_ms()) {
            (Some(last), Some((mean, std))) => {
                let elapsed = now.saturating_sub(last).as_secs_f64() * 1000.0;
                phi_of(elapsed, mean + self.pause_ms, std)
            }
            _ => 0.0,
        }
    }
}

/// phi = -log10(P(a gap at least this long)), logistic approximation of the normal CDF.
pub fn phi_of(elapsed_ms: f64, mean_ms: f64, std_ms: f64) -> f64 {
    let y = (elapsed_ms - mean_ms) / std_ms;
    let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
    let p_later = if elapsed_ms > mean_ms {
        e / (1.0 + e)
    } else {
        1.0 - 1.0 / (1.0 + e)
    };
    // A gap so long that the probability underflows is as suspicious as we can say.
    if p_later <= f64::MIN_POSITIVE {
        return 300.0;
    }
    let phi = -p_later.log10();
    // Never negative, never -0.0 (it would print as "-0.0").
    if phi > 0.0 { phi } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn known_values() {
        // At the mean, half the gaps are longer: phi = -log10(0.5).
        assert!((phi_of(1000.0, 1000.0, 100.0) - std::f64::consts::LOG10_2).abs() < 1e-9);
        // One standard deviation late: P ≈ 0.1587 for a normal; the logistic
        // approximation gives ≈ 0.1587 within 1e-3.
        let p = 10f64.powf(-phi_of(1100.0, 1000.0, 100.0));
        assert!((p - 0.1587).abs() < 1e-3, "p = {p}");
        // Three standard deviations late: P ≈ 0.00135.
        let p = 10f64.powf(-phi_of(1300.0, 1000.0, 100.0));
        assert!((p - 0.00135).abs() < 2e-4, "p = {p}");
        // Much earlier than the mean: almost certainly fine, and never negative.
        assert!(phi_of(500.0, 1000.0, 100.0) < 1e-6);
        assert!(phi_of(0.0, 1000.0, 10.0).is_sign_positive());
    }

    #[test]
    fn phi_grows_with_silence_and_resets_on_a_heartbeat() {
        let mut d = PhiDetector::new(100, 10.0);
        for i in 0..20 {
            d.heartbeat(ms(i * 200));
        }
        let last = ms(19 * 200);
        assert!(d.phi(last + ms(100)) < 0.5);
        let p1 = d.phi(last + ms(300));
        let p2 = d.phi(last + ms(600));
        assert!(p2 > p1 && p2 > 8.0, "p1 = {p1}, p2 = {p2}");
        d.heartbeat(last + ms(600));
        assert!(d.phi(last + ms(650)) < 0.5);
    }

    #[test]
    fn a_new_peer_is_not_suspicious() {
        let mut d = PhiDetector::new(10, 10.0);
        assert_eq!(d.phi(ms(1_000_000)), 0.0);
        for t in [0, 100, 200] {
            d.heartbeat(ms(t));
        }
        assert_eq!(
            d.phi(ms(1_000_000)),
            0.0,
            "two intervals are too few to judge"
        );
        d.heartbeat(ms(300));
        assert!(d.phi(ms(1_000_000)) > 8.0);
    }

    #[test]
    fn the_pause_delays_suspicion() {
        let mut strict = PhiDetector::new(100, 20.0);
        let mut lenient = PhiDetector::with_pause(100, 20.0, 400.0);
        for i in 0..10 {
            strict.heartbeat(ms(i * 200));
            lenient.heartbeat(ms(i * 200));
        }
        let at = ms(9 * 200 + 450);
        assert!(strict.phi(at) > 8.0);
        assert!(lenient.phi(at) < 1.0);
    }

    #[test]
    fn the_window_forgets_old_gaps() {
        let mut d = PhiDetector::new(4, 1.0);
        for t in [0, 1000, 2000, 3000, 4000] {
            d.heartbeat(ms(t));
        }
        for t in [4010, 4020, 4030, 4040] {
            d.heartbeat(ms(t));
        }
        let (mean, _) = d.stats_ms().unwrap();
        assert!((mean - 10.0).abs() < 1e-9);
    }
}

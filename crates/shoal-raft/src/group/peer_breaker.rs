//! One peer's circuit breaker as the Raft network clients use it: shared by every client
//! of that peer, read on tokio's clock (so a paused test clock drives it), and handing
//! out a [`Permit`] per admitted call that reports the call's outcome exactly once.
//!
//! openraft runs many calls under its own timeouts (a heartbeat gets one heartbeat
//! interval) and drops the call's future when they fire. A permit dropped without an
//! outcome reports the call as abandoned, which the breaker counts as a failure; before
//! permits, such a drop left a half-open breaker waiting for a report that never came,
//! refusing every later call to a peer that was reachable again (the replica stayed
//! behind until a restart).

use std::sync::{Arc, Mutex, MutexGuard};

use shoal_types::breaker::{BreakerConfig, BreakerState, CircuitBreaker, Refused};
use tokio::time::Instant;

/// A peer's breaker; clones share it.
#[derive(Debug, Clone)]
pub struct PeerBreaker {
    breaker: Arc<Mutex<CircuitBreaker>>,
    epoch: Instant,
}

impl PeerBreaker {
    pub fn new(config: BreakerConfig, epoch: Instant) -> Self {
        Self {
            breaker: Arc::new(Mutex::new(CircuitBreaker::new(config))),
            epoch,
        }
    }

    fn lock(&self) -> MutexGuard<'_, CircuitBreaker> {
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> std::time::Duration {
        self.epoch.elapsed()
    }

    /// The state now (for status, metrics and /v1/quorum).
    pub fn state(&self) -> BreakerState {
        let now = self.now();
        self.lock().state(now)
    }

    /// Asks to make one call. The permit reports its outcome; dropping it unreported
    /// reports the call as abandoned.
    pub fn admit(&self) -> Result<Permit, Refused> {
        let now = self.now();
        self.lock().allow(now)?;
        Ok(Permit {
            breaker: Some(self.clone()),
        })
    }

    /// Reports the outcome of a message on a call admitted earlier (the answers on an
    /// open replication stream).
    pub fn record(&self, ok: bool) {
        let now = self.now();
        let mut b = self.lock();
        if ok {
            b.record_success(now);
        } else {
            b.record_failure(now);
        }
    }
}

/// One admitted call. Report its outcome with [`Permit::finish`]; dropped unreported, it
/// counts as abandoned.
#[derive(Debug)]
#[must_use = "an admitted call must report its outcome"]
pub struct Permit {
    breaker: Option<PeerBreaker>,
}

impl Permit {
    /// The call ended: `ok` if the peer answered.
    pub fn finish(mut self, ok: bool) {
        if let Some(b) = self.breaker.take() {
            b.record(ok);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(b) = self.breaker.take() {
            let now = b.now();
            b.lock().record_abandoned(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config() -> BreakerConfig {
        BreakerConfig {
            max_errors: 3,
            window: Duration::from_secs(30),
            half_open_after: Duration::from_millis(220),
        }
    }

    /// Opens the breaker with three failed calls.
    fn open(b: &PeerBreaker) {
        for _ in 0..3 {
            b.admit().expect("closed").finish(false);
        }
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_trial_reopens_and_the_next_one_after_the_cool_down_closes() {
        let b = PeerBreaker::new(config(), Instant::now());
        open(&b);
        tokio::time::advance(Duration::from_millis(220)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);

        // The trial call is cancelled from outside, as openraft's heartbeat timeout does.
        let trial = b.admit().expect("the trial");
        let call = async move {
            let _trial = trial;
            std::future::pending::<()>().await;
        };
        let cut_short = tokio::time::timeout(Duration::from_millis(50), call).await;
        assert!(cut_short.is_err(), "the call was cancelled");
        assert_eq!(
            b.state(),
            BreakerState::Open,
            "the dropped trial counts as a failure (a probe that ended)"
        );
        assert!(b.admit().is_err(), "refused during the cool-down");

        tokio::time::advance(Duration::from_millis(220)).await;
        b.admit().expect("the next trial").finish(true);
        assert_eq!(b.state(), BreakerState::Closed, "its success closes it");
        b.admit().expect("closed").finish(true);
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_calls_count_as_failures() {
        let b = PeerBreaker::new(config(), Instant::now());
        for _ in 0..3 {
            drop(b.admit().expect("closed"));
        }
        assert_eq!(
            b.state(),
            BreakerState::Open,
            "three abandoned calls open it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn clones_share_one_breaker() {
        let b = PeerBreaker::new(config(), Instant::now());
        let other = b.clone();
        open(&b);
        assert_eq!(other.state(), BreakerState::Open);
    }
}

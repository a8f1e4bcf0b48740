//! The circuit breaker every outgoing peer client uses (one implementation, one place).
//!
//! ```text
//!   Closed ──(max_errors failures within window)──► Open
//!     ▲                                              │ half_open_after
//!     │ success                                      ▼
//!     └──────────────────────────────────────── HalfOpen ──failure / abandoned──► Open
//!                                                    │ trial out for half_open_after
//!                                                    └──► HalfOpen (a new trial)
//! ```
//!
//! Closed: calls flow; failures older than `window` are forgotten. Open: calls are
//! refused at once, without touching the network. HalfOpen: one trial call is let
//! through; its success closes the breaker, its failure opens it again.
//!
//! Every admitted call must end in exactly one report: `record_success`,
//! `record_failure`, or `record_abandoned` when the caller dropped the call before it had
//! an outcome (a timeout around it fired). An abandoned call counts as a failure. And
//! should a report never come, a trial that has been out for `half_open_after` is taken
//! as lost and the next call becomes the new trial: a half-open breaker never refuses
//! for good.
//!
//! Sans-IO: the caller passes `now`, so tests and simulation control time.

use std::{collections::VecDeque, fmt, time::Duration};

/// Breaker settings; defaults are the predecessor's (3 errors in 30 s, retry after 10 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    pub max_errors: u32,
    pub window: Duration,
    pub half_open_after: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            max_errors: 3,
            window: Duration::from_secs(30),
            half_open_after: Duration::from_secs(10),
        }
    }
}

impl BreakerConfig {
    /// Checks the settings; the error names the field and the rule.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_errors == 0 {
            return Err("breaker.max_errors: must be at least 1".into());
        }
        if self.window.is_zero() {
            return Err("breaker.window: must be > 0".into());
        }
        if self.half_open_after.is_zero() {
            return Err("breaker.half_open_after: must be > 0".into());
        }
        Ok(())
    }
}

/// What the breaker is doing, for status and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        })
    }
}

/// A call was refused because the breaker is open; retry after `retry_in`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit open: peer failed repeatedly; next try in {retry_in:?}")]
pub struct Refused {
    pub retry_in: Duration,
}

#[derive(Debug, Clone)]
enum Inner {
    Closed {
        failures: VecDeque<Duration>,
    },
    Open {
        since: Duration,
    },
    /// The trial call admitted at `since` is in flight.
    HalfOpen {
        since: Duration,
    },
}

/// One peer's breaker.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    inner: Inner,
}

impl CircuitBreaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            inner: Inner::Closed {
                failures: VecDeque::new(),
            },
        }
    }

    /// The state at `now` (an open breaker whose wait is over reads as half-open).
    pub fn state(&self, now: Duration) -> BreakerState {
        match &self.inner {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { since } if now.saturating_sub(*since) >= self.config.half_open_after => {
                BreakerState::HalfOpen
            }
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Asks to make a call at `now`. `Ok` means go ahead and report the outcome (or
    /// that the call was abandoned).
    pub fn allow(&mut self, now: Duration) -> Result<(), Refused> {
        match &mut self.inner {
            Inner::Closed { .. } => Ok(()),
            // Open: the wait is since the last failure. HalfOpen: a trial that has been
            // out this long is taken as lost, whether or not its report ever comes.
            Inner::Open { since } | Inner::HalfOpen { since } => {
                let waited = now.saturating_sub(*since);
                if waited >= self.config.half_open_after {
                    self.inner = Inner::HalfOpen { since: now };
                    Ok(())
                } else {
                    Err(Refused {
                        retry_in: self.config.half_open_after - waited,
                    })
                }
            }
        }
    }

    pub fn record_success(&mut self, _now: Duration) {
        self.inner = Inner::Closed {
            failures: VecDeque::new(),
        };
    }

    pub fn record_failure(&mut self, now: Duration) {
        match &mut self.inner {
            Inner::Closed { failures } => {
                failures.push_back(now);
                while failures
                    .front()
                    .is_some_and(|t| now.saturating_sub(*t) > self.config.window)
                {
                    failures.pop_front();
                }
                if failures.len() as u32 >= self.config.max_errors {
                    self.inner = Inner::Open { since: now };
                }
            }
            Inner::HalfOpen { .. } => self.inner = Inner::Open { since: now },
            Inner::Open { .. } => {}
        }
    }

    /// An admitted call was dropped before it had an outcome (a timeout around it fired,
    /// its caller went away). It counts as a failure: a trial that never answered
    /// reopens the breaker, so the next trial comes one `half_open_after` later.
    pub fn record_abandoned(&mut self, now: Duration) {
        self.record_failure(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn opens_after_max_errors_within_the_window() {
        let mut b = CircuitBreaker::new(BreakerConfig::default());
        b.record_failure(s(0));
        b.record_failure(s(10));
        assert_eq!(b.state(s(10)), BreakerState::Closed);
        b.record_failure(s(20));
        assert_eq!(b.state(s(20)), BreakerState::Open);
        assert_eq!(b.allow(s(25)), Err(Refused { retry_in: s(5) }));
    }

    #[test]
    fn old_failures_are_forgotten() {
        let mut b = CircuitBreaker::new(BreakerConfig::default());
        b.record_failure(s(0));
        b.record_failure(s(1));
        b.record_failure(s(40)); // the first two are outside the 30 s window
        assert_eq!(b.state(s(40)), BreakerState::Closed);
        assert!(b.allow(s(40)).is_ok());
    }

    #[test]
    fn half_open_lets_one_trial_through() {
        let mut b = CircuitBreaker::new(BreakerConfig::default());
        for t in 0..3 {
            b.record_failure(s(t));
        }
        assert_eq!(b.state(s(12)), BreakerState::HalfOpen);
        assert!(b.allow(s(12)).is_ok(), "the trial call");
        assert!(b.allow(s(12)).is_err(), "only one trial at a time");
        b.record_failure(s(13));
        assert_eq!(b.state(s(13)), BreakerState::Open, "a failed trial reopens");
        assert!(b.allow(s(20)).is_err());
        assert!(b.allow(s(23)).is_ok());
        b.record_success(s(23));
        assert_eq!(b.state(s(23)), BreakerState::Closed);
        b.record_failure(s(24));
        assert_eq!(
            b.state(s(24)),
            BreakerState::Closed,
            "failures count afresh"
        );
    }

    #[test]
    fn an_abandoned_trial_reopens_and_the_next_trial_closes() {
        let mut b = CircuitBreaker::new(BreakerConfig::default());
        for t in 0..3 {
            b.record_failure(s(t));
        }
        assert!(b.allow(s(12)).is_ok(), "the trial call");
        // Its caller gave up on it (a timeout around the call fired): no outcome.
        b.record_abandoned(s(12));
        assert_eq!(
            b.state(s(12)),
            BreakerState::Open,
            "an abandoned trial reopens"
        );
        assert_eq!(b.allow(s(13)), Err(Refused { retry_in: s(9) }));
        assert!(
            b.allow(s(22)).is_ok(),
            "the next trial, one cool-down later"
        );
        b.record_success(s(22));
        assert_eq!(b.state(s(22)), BreakerState::Closed);
        assert!(b.allow(s(22)).is_ok());
    }

    #[test]
    fn a_trial_that_never_reports_is_taken_as_lost_after_the_cool_down() {
        let mut b = CircuitBreaker::new(BreakerConfig::default());
        for t in 0..3 {
            b.record_failure(s(t));
        }
        assert!(b.allow(s(12)).is_ok(), "the trial call, never reported");
        assert_eq!(b.allow(s(15)), Err(Refused { retry_in: s(7) }));
        assert!(b.allow(s(22)).is_ok(), "a new trial after the cool-down");
        assert!(b.allow(s(22)).is_err(), "still one trial at a time");
        b.record_success(s(23));
        assert_eq!(b.state(s(23)), BreakerState::Closed);
    }

    #[test]
    fn abandoned_calls_count_as_failures_while_closed() {
        let mut b = CircuitBreaker::new(BreakerConfig::default());
        b.record_abandoned(s(0));
        b.record_abandoned(s(1));
        assert_eq!(b.state(s(1)), BreakerState::Closed);
        b.record_abandoned(s(2));
        assert_eq!(b.state(s(2)), BreakerState::Open);
    }

    #[test]
    fn config_is_checked() {
        assert!(BreakerConfig::default().validate().is_ok());
        let bad = BreakerConfig {
            max_errors: 0,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("max_errors"));
    }
}

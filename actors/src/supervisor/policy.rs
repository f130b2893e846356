//! The restart policy as a pure function: how many failures in a row, how long the sensor
//! ran, and the settings decide what happens next. No actor is needed to test it.
//!
//! A sensor that fails (an error, a panic, or a refused start) is restarted after a
//! backoff that doubles from `backoff_initial` up to `backoff_max`. After more than
//! `max_restart_attempts` consecutive failures it is given up on and stays down until an
//! operator restarts it. A sensor that ran for `healthy_after` starts counting afresh.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPolicy {
    pub restart_on_error: bool,
    pub max_restart_attempts: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub healthy_after: Duration,
}

/// What the supervisor does with a sensor that just failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    /// Start it again after this delay.
    RestartAfter(Duration),
    /// Too many failures in a row: it stays `failed` until an operator restarts it.
    GiveUp,
    /// `restart_on_error` is off: it stays `failed` after its first failure.
    Off,
}

/// The decision, with the consecutive-failure count to record (this failure included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfterFailure {
    pub consecutive_failures: u32,
    pub decision: RestartDecision,
}

impl RestartPolicy {
    /// `failures_before` counts the failures in a row before this one; `ran_for` is how
    /// long the failed run lasted (zero for a refused start).
    pub fn on_failure(&self, failures_before: u32, ran_for: Duration) -> AfterFailure {
        let failures_before = if self.is_healthy(ran_for) {
            0
        } else {
            failures_before
        };
        let consecutive_failures = failures_before.saturating_add(1);
        let decision = if !self.restart_on_error {
            RestartDecision::Off
        } else if consecutive_failures > self.max_restart_attempts {
            RestartDecision::GiveUp
        } else {
            RestartDecision::RestartAfter(self.backoff(consecutive_failures))
        };
        AfterFailure {
            consecutive_failures,
            decision,
        }
    }

    /// Whether a run this long resets the count of failures in a row.
    pub fn is_healthy(&self, ran_for: Duration) -> bool {
        ran_for >= self.healthy_after
    }

    /// The delay before the restart that follows the `failures`-th consecutive failure.
    pub fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.backoff_initial
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            restart_on_error: true,
            max_restart_attempts: 3,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            healthy_after: Duration::from_secs(60),
        }
    }

    const BRIEF: Duration = Duration::from_millis(10);

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = policy();
        let delays: Vec<u64> = (1..=7).map(|n| p.backoff(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn restarts_until_more_than_max_attempts_then_gives_up() {
        let p = policy();
        let mut failures = 0;
        let mut decisions = Vec::new();
        for _ in 0..4 {
            let after = p.on_failure(failures, BRIEF);
            failures = after.consecutive_failures;
            decisions.push(after.decision);
        }
        assert_eq!(
            decisions,
            [
                RestartDecision::RestartAfter(Duration::from_secs(1)),
                RestartDecision::RestartAfter(Duration::from_secs(2)),
                RestartDecision::RestartAfter(Duration::from_secs(4)),
                RestartDecision::GiveUp,
            ]
        );
        assert_eq!(failures, 4);
    }

    #[test]
    fn a_healthy_run_starts_the_count_afresh() {
        let p = policy();
        let after = p.on_failure(3, Duration::from_secs(60));
        assert_eq!(after.consecutive_failures, 1);
        assert_eq!(
            after.decision,
            RestartDecision::RestartAfter(Duration::from_secs(1))
        );
        let after = p.on_failure(3, Duration::from_secs(59));
        assert_eq!(after.decision, RestartDecision::GiveUp);
    }

    #[test]
    fn restart_on_error_off_fails_at_once() {
        let p = RestartPolicy {
            restart_on_error: false,
            ..policy()
        };
        assert_eq!(p.on_failure(0, BRIEF).decision, RestartDecision::Off);
    }

    #[test]
    fn zero_attempts_gives_up_on_the_first_failure() {
        let p = RestartPolicy {
            max_restart_attempts: 0,
            ..policy()
        };
        assert_eq!(p.on_failure(0, BRIEF).decision, RestartDecision::GiveUp);
    }
}

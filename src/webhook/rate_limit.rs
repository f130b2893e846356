//! The per-sensor rate limit of webhook requests.

use attune_actors::sync::lock;
use std::sync::Mutex;
use std::time::Instant;

/// A token bucket: `rate` tokens a second, holding at most `capacity`.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    /// Tokens left and when they were counted. Each update replaces the whole pair, so
    /// the value stays usable after a panic elsewhere poisoned the lock.
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// Allows bursts of up to one second's worth of requests (at least one).
    pub fn per_second(rate: f64) -> Self {
        let capacity = rate.max(1.0);
        Self {
            rate,
            capacity,
            state: Mutex::new((capacity, Instant::now())),
        }
    }

    /// Takes a token if there is one.
    pub fn try_take(&self) -> bool {
        let mut state = lock(&self.state);
        // Read under the lock, so that `now` never goes back between two takes.
        let now = Instant::now();
        self.take_at(&mut state, now)
    }

    /// Refills `state` for the time since it was last counted, then takes a token if a
    /// whole one is there. Apart from `try_take` so that tests can choose the clock.
    fn take_at(&self, state: &mut (f64, Instant), now: Instant) -> bool {
        let (tokens, last) = *state;
        let tokens =
            (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.capacity);
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            true
        } else {
            *state = (tokens, now);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn token_bucket_refuses_past_its_burst() {
        let bucket = TokenBucket::per_second(2.0);
        assert!(bucket.try_take() && bucket.try_take());
        assert!(!bucket.try_take());
    }

    #[test]
    fn token_bucket_refills_at_its_rate_up_to_its_capacity() {
        let bucket = TokenBucket::per_second(2.0);
        let mut state = lock(&bucket.state);
        let t0 = state.1;
        let at = |ms| t0 + Duration::from_millis(ms);
        assert!(bucket.take_at(&mut state, t0));
        assert!(bucket.take_at(&mut state, t0));
        assert!(!bucket.take_at(&mut state, t0));
        // 250 ms at 2/s is half a token: refused, but the half is kept for later.
        assert!(!bucket.take_at(&mut state, at(250)));
        assert!(bucket.take_at(&mut state, at(500)));
        assert!(!bucket.take_at(&mut state, at(500)));
        // A long pause refills to the capacity (one second's worth) and no further.
        assert!(bucket.take_at(&mut state, at(60_000)));
        assert!(bucket.take_at(&mut state, at(60_000)));
        assert!(!bucket.take_at(&mut state, at(60_000)));
    }

    #[test]
    fn token_bucket_below_one_per_second_still_holds_one_token() {
        let bucket = TokenBucket::per_second(0.5);
        let mut state = lock(&bucket.state);
        let t0 = state.1;
        assert!(bucket.take_at(&mut state, t0));
        assert!(!bucket.take_at(&mut state, t0));
        assert!(!bucket.take_at(&mut state, t0 + Duration::from_millis(1_500)));
        assert!(bucket.take_at(&mut state, t0 + Duration::from_millis(2_000)));
        assert!(!bucket.take_at(&mut state, t0 + Duration::from_millis(2_000)));
    }
}

//! `rate_limit`: one token bucket for all requests, as exporter-toolkit's
//! (Go's `rate.NewLimiter(rate.Every(interval), burst)`): it starts full
//! with `burst` tokens, gains one every `interval`, and a request that
//! finds it empty is answered 429.

use std::{
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use super::webconfig::RateLimit;

/// The bucket.
pub struct Limiter {
    /// A token comes back every `interval`.
    interval: Duration,
    /// The bucket's size.
    burst: f64,
    /// Tokens left, and when that was computed.
    state: Mutex<(f64, Instant)>,
}

impl Limiter {
    /// A full bucket.
    pub fn new(limit: RateLimit, now: Instant) -> Limiter {
        let burst = f64::from(limit.burst);
        Limiter {
            interval: limit.interval,
            burst,
            state: Mutex::new((burst, now)),
        }
    }

    /// Takes a token if there is one.
    pub fn allow(&self, now: Instant) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (tokens, since) = *state;
        let gained =
            now.saturating_duration_since(since).as_secs_f64() / self.interval.as_secs_f64();
        let tokens = (tokens + gained).min(self.burst);
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

    #[test]
    fn a_burst_then_one_per_interval() {
        let start = Instant::now();
        let limiter = Limiter::new(
            RateLimit {
                interval: Duration::from_millis(100),
                burst: 3,
            },
            start,
        );
        assert!((0..3).all(|_| limiter.allow(start)));
        assert!(!limiter.allow(start));
        let later = start + Duration::from_millis(150);
        assert!(limiter.allow(later));
        assert!(!limiter.allow(later));
        // Idle for long: the bucket holds no more than the burst.
        let much_later = start + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| limiter.allow(much_later)).count(), 3);
    }
}

//! Reconnection delays: exponential backoff with jitter.

use std::time::Duration;

/// Delays between reconnection attempts.
///
/// Attempt `n` (from 0) may wait up to `cap(n) = min(max, initial * 2^n)`; the wait is drawn
/// from the upper half, `[cap/2, cap]` ("equal jitter"), so retries spread out without ever
/// coming back immediately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max }
    }

    /// The longest wait before attempt `attempt`.
    pub fn cap(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The wait before attempt `attempt`, for a random `unit` in `[0, 1)`.
    pub fn delay_with(&self, attempt: u32, unit: f64) -> Duration {
        let cap = self.cap(attempt);
        let half = cap / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// The wait before attempt `attempt`, with fresh randomness.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b() -> Backoff {
        Backoff::new(Duration::from_millis(500), Duration::from_secs(30))
    }

    #[test]
    fn doubles_up_to_the_maximum() {
        let caps: Vec<u64> = (0..9).map(|n| b().cap(n).as_millis() as u64).collect();
        assert_eq!(
            caps,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        assert_eq!(b().cap(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        assert_eq!(b().delay_with(2, 0.0), Duration::from_millis(1000));
        assert_eq!(b().delay_with(2, 1.0), Duration::from_millis(2000));
        assert_eq!(b().delay_with(2, 0.5), Duration::from_millis(1500));
        for attempt in 0..12 {
            for _ in 0..50 {
                let d = b().delay(attempt);
                let cap = b().cap(attempt);
                assert!(d >= cap / 2 && d <= cap, "{d:?} for cap {cap:?}");
            }
        }
    }
}

//! When to try again after a failed attempt.

use std::time::Duration;

/// First delay of the default schedule.
pub const BASE_DELAY: Duration = Duration::from_secs(10);
/// Longest delay of the default schedule.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);

/// The delay after failed attempt `attempt` (1-based): the subscription's
/// schedule (its last value repeats) or 10 s · 2^(attempt−1) capped at an hour,
/// then ±20 % jitter so that a recovering endpoint is not hit by every
/// retry at once. `unit` is a random number in [0, 1).
pub fn retry_delay(attempt: u32, schedule: Option<&[u64]>, unit: f64) -> Duration {
    let base = match schedule {
        Some(list) if !list.is_empty() => {
            let i = (attempt.max(1) as usize - 1).min(list.len() - 1);
            Duration::from_secs(list[i])
        }
        _ => {
            let doublings = attempt.saturating_sub(1).min(16);
            BASE_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY)
        }
    };
    base.mul_f64(0.8 + 0.4 * unit.clamp(0.0, 1.0))
}

/// A number in [0, 1) from the OS random source (for jitter).
pub fn jitter_unit() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_be_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_doubles_and_caps() {
        let d = |n| retry_delay(n, None, 0.5);
        assert_eq!(d(1), Duration::from_secs(10));
        assert_eq!(d(2), Duration::from_secs(20));
        assert_eq!(d(4), Duration::from_secs(80));
        assert_eq!(d(30), MAX_DELAY);
        assert_eq!(retry_delay(1, None, 0.0), Duration::from_secs(8));
        assert!(retry_delay(1, None, 0.999) < Duration::from_secs(12));
    }

    #[test]
    fn custom_schedule_repeats_its_last_value() {
        let s = [1u64, 5, 30];
        assert_eq!(retry_delay(1, Some(&s), 0.5), Duration::from_secs(1));
        assert_eq!(retry_delay(3, Some(&s), 0.5), Duration::from_secs(30));
        assert_eq!(retry_delay(9, Some(&s), 0.5), Duration::from_secs(30));
    }
}

//! Capped exponential backoff that ends at a deadline, for [`backon`]'s `Retryable::retry`:
//! `wait`'s service checks, `seed`'s metadata polling and `verify`'s polling of Zipkin.

use std::time::{Duration, Instant};

use backon::{Backoff, BackoffBuilder as _, ExponentialBuilder};

/// Delays of `first`, then doubling up to `cap`, without jitter; each is cut to the time left
/// before `deadline`, and none is given once it has passed (the last attempt's error is then
/// the result).
pub fn until(deadline: Instant, first: Duration, cap: Duration) -> impl Backoff {
    ExponentialBuilder::new()
        .with_min_delay(first)
        .with_max_delay(cap)
        .without_max_times()
        .build()
        .map_while(move |delay| {
            let left = deadline.saturating_duration_since(Instant::now());
            (!left.is_zero()).then(|| delay.min(left))
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_the_first_up_to_the_cap() {
        let deadline = Instant::now() + Duration::from_secs(3600);
        let delays: Vec<u64> = until(deadline, Duration::from_millis(200), Duration::from_secs(1))
            .take(5)
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(delays, [200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn no_delay_outlasts_the_deadline_and_none_comes_after_it() {
        let deadline = Instant::now() + Duration::from_millis(50);
        let mut backoff = until(deadline, Duration::from_secs(1), Duration::from_secs(5));
        let first = backoff.next().expect("a delay before the deadline");
        assert!(first <= Duration::from_millis(50), "{first:?}");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(backoff.next(), None);
    }
}

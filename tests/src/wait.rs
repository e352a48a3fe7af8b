//! Waiting with a deadline, written once on `backon`: every harness loop that retries an
//! operation or polls a condition until a deadline takes [`deadline`] as its backoff, and a
//! condition that does not hold yet answers [`NotYet`].
//!
//! [`crate::process::wait_until`] is the async form with progress lines, for components
//! starting up; the blocking waits (a process exiting, a consumer group catching up) call
//! backon's `retry` on a closure directly.

use std::fmt;
use std::time::{Duration, Instant};

use backon::Backoff;

/// The delays between attempts: `every`, until `timeout` from now. The last delay ends at the
/// deadline, where the last attempt is made. (backon's own backoffs stop after a number of
/// attempts or a total of delays, not at a point in time.)
pub fn deadline(timeout: Duration, every: Duration) -> impl Backoff {
    let deadline = Instant::now() + timeout;
    std::iter::repeat(every).map_while(move |delay| {
        let left = deadline.saturating_duration_since(Instant::now());
        (!left.is_zero()).then(|| delay.min(left))
    })
}

/// What a polled condition answers while it does not hold yet: retried until the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotYet;

impl fmt::Display for NotYet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not ready yet")
    }
}

impl std::error::Error for NotYet {}

/// `Ok(())` when `holds`, else [`NotYet`]: a condition as backon retries it.
pub fn ready(holds: bool) -> Result<(), NotYet> {
    if holds { Ok(()) } else { Err(NotYet) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backon::BlockingRetryable as _;

    #[test]
    fn the_delays_are_the_interval_and_none_runs_past_the_deadline() {
        let (timeout, every) = (Duration::from_millis(100), Duration::from_millis(30));
        let started = Instant::now();
        let mut total = Duration::ZERO;
        for delay in deadline(timeout, every) {
            assert!(delay <= every, "{delay:?}");
            total += delay;
            std::thread::sleep(delay);
        }
        assert!(total <= timeout, "{total:?}");
        assert!(started.elapsed() >= timeout);
    }

    #[test]
    fn a_condition_is_polled_until_it_holds() {
        let mut polls = 0;
        let out = (|| {
            polls += 1;
            ready(polls == 3)
        })
        .retry(deadline(Duration::from_secs(5), Duration::from_millis(1)))
        .call();
        assert_eq!(out, Ok(()));
        assert_eq!(polls, 3);
    }

    #[test]
    fn a_condition_that_never_holds_is_not_yet_at_the_deadline() {
        let started = Instant::now();
        let out = (|| ready(false))
            .retry(deadline(
                Duration::from_millis(100),
                Duration::from_millis(10),
            ))
            .call();
        assert_eq!(out, Err(NotYet));
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

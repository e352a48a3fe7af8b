//! Liveness: a Kafka client that stopped delivering for good.
//!
//! librdkafka can stay wedged after the cluster changed under it: when a broker comes back on
//! empty storage (a Kafka pod on an emptyDir deleted and recreated), the topic is recreated
//! under the same name with leader epochs that start again at 0, which the client ignores as
//! "older than our cached epoch" (librdkafka issue 4898): every message then waits for a
//! partition leader it never learns, and times out, while metadata requests (the readiness
//! check) succeed. A new client (a restarted process) has no cached epochs and works at once.
//!
//! Each delivery outcome is noted: a message that timed out starts a stall unless one is
//! already running, an acked message ends it. `/healthz` answers 503 once deliveries have been
//! timing out, none acked, for longer than `KAFKA_STALL_TIMEOUT` (default 60 s), so Kubernetes
//! restarts the container (with the chart's liveness probe: after 3 more failed probes, 10 s
//! apart). Errors that say something about the message (too large, invalid) are no stall.
//! A broker outage longer than that with requests arriving restarts the producer too, which
//! loses nothing: a message is answered 202 only once acked.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Since when deliveries have been timing out without one being acked, and how many did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stall {
    since: Instant,
    timed_out: u64,
}

/// The producer's delivery stall, shared between the request handlers and `/healthz`.
#[derive(Debug, Clone, Default)]
pub struct Deliveries(Arc<Mutex<Option<Stall>>>);

impl Deliveries {
    /// A message was acked: deliveries work.
    pub fn acked(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// A message timed out at `now` (no broker acked it in time).
    pub fn timed_out(&self, now: Instant) {
        let mut stall = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let s = stall.get_or_insert(Stall {
            since: now,
            timed_out: 0,
        });
        s.timed_out += 1;
    }

    /// Why the client counts as wedged at `now` (deliveries timing out for longer than
    /// `limit`), as a reason for `/healthz`.
    pub fn wedged(&self, limit: Duration, now: Instant) -> Option<String> {
        let stall = *self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let s = stall?;
        let stalled = now.duration_since(s.since);
        (stalled > limit).then(|| {
            format!(
                "Kafka client wedged: no message acked in the last {}s, {} timed out",
                stalled.as_secs(),
                s.timed_out
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_without_an_ack_wedge_the_client_after_the_limit_counted_from_the_first() {
        let d = Deliveries::default();
        let t0 = Instant::now();
        let limit = Duration::from_secs(60);
        d.timed_out(t0);
        d.timed_out(t0 + Duration::from_secs(40));
        assert_eq!(d.wedged(limit, t0 + Duration::from_secs(59)), None);
        let reason = d
            .wedged(limit, t0 + Duration::from_secs(61))
            .expect("wedged");
        assert!(
            reason.contains("no message acked in the last 61s, 2 timed out"),
            "{reason}"
        );
    }

    #[test]
    fn an_ack_ends_the_stall_and_a_later_timeout_starts_a_new_one() {
        let d = Deliveries::default();
        let t0 = Instant::now();
        let limit = Duration::from_secs(60);
        d.timed_out(t0);
        d.acked();
        assert_eq!(d.wedged(limit, t0 + 2 * limit), None);
        d.timed_out(t0 + 2 * limit);
        assert_eq!(
            d.wedged(limit, t0 + 2 * limit + Duration::from_secs(30)),
            None
        );
        assert!(
            d.wedged(limit, t0 + 3 * limit + Duration::from_secs(1))
                .is_some()
        );
    }
}

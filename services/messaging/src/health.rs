//! `/healthz` and `/readyz`, the same for every service that holds a Kafka client.
//!
//! - `GET /readyz`: 200 `{"status":"ready"}` when the service's own check passes (for Kafka
//!   clients: [`crate::readiness::check_topic`]), else 503 `{"error":"not_ready","reason":..}`.
//! - `GET /healthz`: 200 `{"status":"ok"}` unless the Kafka client counts as wedged, then 503
//!   `{"error":"wedged","reason":..}` so the liveness probe restarts the container with a new
//!   client. Wedged is either what the service itself detects ([`Checks::wedged`]: a producer
//!   whose deliveries keep timing out, a consumer whose assigned partitions stopped fetching) or,
//!   for every service, a readiness check that has failed at every probe for longer than the
//!   stall limit (`KAFKA_STALL_TIMEOUT`). The second rule covers a client that lost the cluster
//!   for good without showing it anywhere else: seen on a real node after the Kafka pod was
//!   recreated, a consumer with no assignment whose metadata requests kept failing for minutes
//!   while the new broker served everyone else. A broker outage longer than the limit restarts
//!   the services too, which loses nothing: messages are acked (producer) and offsets committed
//!   (consumer) only once handled.
//!
//! Readiness is only known when something asks for it: the kubelet's readiness probe does, every
//! few seconds; without probes the second rule never fires.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

/// What a service knows about its own health.
pub trait Checks: Clone + Send + Sync + 'static {
    /// Why the service's Kafka client is wedged as of `now`, if it is, given the stall `limit`.
    fn wedged(&self, limit: Duration, now: Instant) -> Option<String>;

    /// Whether the service can do its work now; the reason when not. Blocking (a metadata
    /// request): it runs on the blocking pool.
    fn ready(&self) -> Result<(), String>;
}

/// A run of failed readiness checks: since when, how many, and the last reason.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Failing {
    since: Instant,
    checks: u64,
    reason: String,
}

/// The outcome of the readiness checks so far: `None` while the last one passed.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<Mutex<Option<Failing>>>);

impl Readiness {
    /// Notes one readiness check's outcome at `now`; logs when readiness changes.
    pub fn record(&self, outcome: &Result<(), String>, now: Instant) {
        let mut failing = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match (outcome, failing.as_mut()) {
            (Ok(()), None) => {}
            (Ok(()), Some(f)) => {
                tracing::info!(
                    after_secs = now.duration_since(f.since).as_secs(),
                    "ready again"
                );
                *failing = None;
            }
            (Err(reason), Some(f)) => {
                f.checks += 1;
                f.reason.clone_from(reason);
            }
            (Err(reason), None) => {
                tracing::warn!(%reason, "not ready");
                *failing = Some(Failing {
                    since: now,
                    checks: 1,
                    reason: reason.clone(),
                });
            }
        }
    }

    /// Why the client counts as wedged at `now`: every readiness check has failed for longer
    /// than `limit`.
    pub fn wedged(&self, limit: Duration, now: Instant) -> Option<String> {
        let failing = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let f = failing.as_ref()?;
        let for_ = now.duration_since(f.since);
        (for_ > limit).then(|| {
            format!(
                "not ready for {}s ({} checks failed; last: {})",
                for_.as_secs(),
                f.checks,
                f.reason
            )
        })
    }
}

#[derive(Clone)]
struct Health<C> {
    checks: C,
    readiness: Readiness,
    stall_limit: Duration,
}

#[derive(Serialize)]
struct Status {
    status: &'static str,
}

#[derive(Serialize)]
struct Unavailable {
    error: &'static str,
    reason: String,
}

fn unavailable(error: &'static str, reason: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(Unavailable { error, reason }),
    )
        .into_response()
}

async fn healthz<C: Checks>(State(h): State<Health<C>>) -> Response {
    let now = Instant::now();
    let wedged = h
        .checks
        .wedged(h.stall_limit, now)
        .or_else(|| h.readiness.wedged(h.stall_limit, now));
    match wedged {
        None => axum::Json(Status { status: "ok" }).into_response(),
        Some(reason) => {
            tracing::warn!(%reason, "unhealthy: a restart gets a new Kafka client");
            unavailable("wedged", reason)
        }
    }
}

async fn readyz<C: Checks>(State(h): State<Health<C>>) -> Response {
    let checks = h.checks.clone();
    let outcome = tokio::task::spawn_blocking(move || checks.ready())
        .await
        .unwrap_or_else(|e| Err(format!("the readiness check did not finish: {e}")));
    h.readiness.record(&outcome, Instant::now());
    match outcome {
        Ok(()) => axum::Json(Status { status: "ready" }).into_response(),
        Err(reason) => unavailable("not_ready", reason),
    }
}

/// `GET /healthz` and `GET /readyz` over `checks`, with `stall_limit` for both wedge rules;
/// merge it into the service's router (any state).
pub fn router<S, C: Checks>(checks: C, stall_limit: Duration) -> Router<S> {
    Router::new()
        .route("/healthz", get(healthz::<C>))
        .route("/readyz", get(readyz::<C>))
        .with_state(Health {
            checks,
            readiness: Readiness::default(),
            stall_limit,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(60);

    fn down() -> Result<(), String> {
        Err("Kafka metadata: BrokerTransportFailure".into())
    }

    #[test]
    fn readiness_failing_for_longer_than_the_limit_is_a_wedge() {
        let r = Readiness::default();
        let t0 = Instant::now();
        r.record(&down(), t0);
        r.record(&down(), t0 + Duration::from_secs(30));
        assert_eq!(r.wedged(LIMIT, t0 + Duration::from_secs(60)), None);
        r.record(&down(), t0 + Duration::from_secs(61));
        let reason = r.wedged(LIMIT, t0 + Duration::from_secs(61)).unwrap();
        assert!(reason.contains("not ready for 61s"), "{reason}");
        assert!(reason.contains("3 checks failed"), "{reason}");
        assert!(reason.contains("BrokerTransportFailure"), "{reason}");
    }

    #[test]
    fn one_passing_check_ends_the_failing_run() {
        let r = Readiness::default();
        let t0 = Instant::now();
        r.record(&down(), t0);
        r.record(&Ok(()), t0 + Duration::from_secs(50));
        r.record(&down(), t0 + Duration::from_secs(55));
        assert_eq!(r.wedged(LIMIT, t0 + Duration::from_secs(100)), None);
        assert!(r.wedged(LIMIT, t0 + Duration::from_secs(116)).is_some());
    }

    #[test]
    fn without_any_check_nothing_is_wedged() {
        let r = Readiness::default();
        assert_eq!(r.wedged(Duration::ZERO, Instant::now()), None);
    }
}

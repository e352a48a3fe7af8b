//! The consumer's librdkafka context: what librdkafka tells the consumer outside of records.
//! Its callbacks run inside the main loop's `recv()` (librdkafka serves them while polling).
//!
//! - Statistics (every `statistics.interval.ms`) refresh the [`LagSnapshot`] behind
//!   `messaging.kafka.consumer.lag` and the [`Stalls`] behind `/healthz`.
//! - Revoked partitions are noted for the main loop, which skips their records not started
//!   ([`crate::lanes`]) before it dispatches the next record, and resumed in case backpressure
//!   had paused them (a pause would outlive the assignment).

use std::sync::{Mutex, PoisonError};

use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Statistics};
use tokio::sync::Notify;

use crate::lag::LagSnapshot;
use crate::stall::Stalls;

/// The [`rdkafka::consumer::StreamConsumer`]'s context.
#[derive(Debug, Default)]
pub struct Context {
    lag: LagSnapshot,
    stalls: Stalls,
    revoked: Mutex<Vec<(String, i32)>>,
    revocation: Notify,
}

impl Context {
    /// The lags of the latest statistics report.
    pub fn lag(&self) -> &LagSnapshot {
        &self.lag
    }

    /// The assigned partitions that are not fetching (for liveness).
    pub fn stalls(&self) -> &Stalls {
        &self.stalls
    }

    /// The partitions revoked since the last call.
    pub fn take_revoked(&self) -> Vec<(String, i32)> {
        std::mem::take(&mut *self.revoked.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Resolves after a revocation (then call [`Context::take_revoked`]).
    pub async fn revocation(&self) {
        self.revocation.notified().await;
    }
}

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        if let Some(g) = &statistics.cgrp {
            tracing::debug!(
                state = %g.state,
                join_state = %g.join_state,
                assigned = g.assignment_size,
                rebalances = g.rebalance_cnt,
                "consumer group"
            );
        }
        self.lag.update(&statistics);
        self.stalls.update(&statistics, std::time::Instant::now());
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(partitions) = rebalance else {
            return;
        };
        if let Err(e) = consumer.resume(partitions) {
            tracing::debug!(error = %e, "resuming revoked partitions");
        }
        let revoked = partitions
            .elements()
            .iter()
            .map(|p| (p.topic().to_string(), p.partition()))
            .collect::<Vec<_>>();
        tracing::info!(?revoked, "partitions revoked");
        self.revoked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(revoked);
        self.revocation.notify_one();
    }
}

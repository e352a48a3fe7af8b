//! Kafka readiness, as the services' `/readyz` reports it: the broker answers a metadata
//! request for the service's topic, and the topic exists with partitions.

use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::client::Client;

/// How long one readiness probe may wait for the broker.
pub const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

/// Ok when `topic` is known to the cluster with at least one partition; otherwise the reason
/// a `/readyz` answer shows. Blocking (up to [`READINESS_TIMEOUT`]): call it from
/// `spawn_blocking` in async code.
pub fn check_topic<C: ClientContext>(client: &Client<C>, topic: &str) -> Result<(), String> {
    let md = client
        .fetch_metadata(Some(topic), READINESS_TIMEOUT)
        .map_err(|e| format!("Kafka metadata: {e}"))?;
    match md.topics().iter().find(|t| t.name() == topic) {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(()),
        Some(t) => Err(format!("topic {topic}: {:?}", t.error())),
        None => Err(format!("topic {topic} not found")),
    }
}

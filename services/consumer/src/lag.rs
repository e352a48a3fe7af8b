//! `messaging.kafka.consumer.lag`: how far this consumer group is behind, per partition.
//!
//! librdkafka emits its statistics every `statistics.interval.ms` (`KAFKA_STATISTICS_INTERVAL_MS`,
//! 0 = off); the consumer's context turns them into a [`LagSnapshot`] ([`lag_points`]) and an
//! observable gauge reports the latest snapshot at each metric export. The lag of a partition
//! is librdkafka's `consumer_lag`: the partition's high watermark (last stable offset under
//! `read_committed`) minus the group's committed offset. Partitions whose lag is unknown
//! (negative, e.g. nothing committed yet) and librdkafka's internal partition -1 are left
//! out, so a partition only reports once its lag is known.

use std::sync::{Arc, Mutex, PoisonError};

use opentelemetry::KeyValue;
use opentelemetry::metrics::ObservableGauge;
use opentelemetry_semantic_conventions::attribute::{
    MESSAGING_CONSUMER_GROUP_NAME, MESSAGING_DESTINATION_NAME, MESSAGING_DESTINATION_PARTITION_ID,
    MESSAGING_SYSTEM,
};
use rdkafka::Statistics;

/// The lag of one partition, as read from one statistics report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LagPoint {
    pub topic: String,
    pub partition: i32,
    /// Messages between the group's committed offset and the end of the partition.
    pub lag: u64,
}

impl LagPoint {
    /// The data point's attributes (messaging semantic conventions).
    pub fn attributes(&self, group: &str) -> Vec<KeyValue> {
        vec![
            KeyValue::new(MESSAGING_SYSTEM, "kafka"),
            KeyValue::new(MESSAGING_DESTINATION_NAME, self.topic.clone()),
            KeyValue::new(
                MESSAGING_DESTINATION_PARTITION_ID,
                self.partition.to_string(),
            ),
            KeyValue::new(MESSAGING_CONSUMER_GROUP_NAME, group.to_string()),
        ]
    }
}

/// The known per-partition lags in `stats`, ordered by topic and partition.
pub fn lag_points(stats: &Statistics) -> Vec<LagPoint> {
    let mut points: Vec<LagPoint> = stats
        .topics
        .iter()
        .flat_map(|(topic, t)| {
            t.partitions.values().filter_map(move |p| {
                // -1 is librdkafka's internal "unassigned" partition; a negative lag is unknown.
                let lag = u64::try_from(p.consumer_lag).ok()?;
                (p.partition >= 0).then(|| LagPoint {
                    topic: topic.clone(),
                    partition: p.partition,
                    lag,
                })
            })
        })
        .collect();
    points.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    points
}

/// The lags of the latest statistics report, shared between librdkafka's statistics callback
/// (writer) and the gauge's callback (reader).
#[derive(Debug, Clone, Default)]
pub struct LagSnapshot(Arc<Mutex<Vec<LagPoint>>>);

impl LagSnapshot {
    /// Replaces the snapshot with the lags in `stats`.
    pub fn update(&self, stats: &Statistics) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = lag_points(stats);
    }

    pub fn points(&self) -> Vec<LagPoint> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Registers `messaging.kafka.consumer.lag`, reporting this snapshot for `group`. Keep the
    /// returned gauge for as long as it should report.
    pub fn gauge(&self, group: &str) -> ObservableGauge<u64> {
        let snapshot = self.clone();
        let group = group.to_string();
        journey_telemetry::Metrics::consumer_lag(move || {
            snapshot
                .points()
                .into_iter()
                .map(|p| {
                    let attrs = p.attributes(&group);
                    (p.lag, attrs)
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::statistics::{Partition, Topic};
    use std::collections::HashMap;

    fn topic(name: &str, lags: &[(i32, i64)]) -> (String, Topic) {
        let partitions: HashMap<i32, Partition> = lags
            .iter()
            .map(|&(partition, consumer_lag)| {
                (
                    partition,
                    Partition {
                        partition,
                        consumer_lag,
                        ..Partition::default()
                    },
                )
            })
            .collect();
        (
            name.to_string(),
            Topic {
                topic: name.to_string(),
                partitions,
                ..Topic::default()
            },
        )
    }

    #[test]
    fn every_known_partition_lag_becomes_a_point_and_unknown_ones_are_left_out() {
        let stats = Statistics {
            topics: [
                // -1: librdkafka's internal partition; lag -1: unknown (nothing committed yet).
                topic("messages", &[(2, 0), (0, 7), (-1, 5), (1, -1)]),
                topic("other", &[(0, 3)]),
            ]
            .into_iter()
            .collect(),
            ..Statistics::default()
        };
        let points = lag_points(&stats);
        let point = |topic: &str, partition, lag| LagPoint {
            topic: topic.into(),
            partition,
            lag,
        };
        assert_eq!(
            points,
            [
                point("messages", 0, 7),
                point("messages", 2, 0),
                point("other", 0, 3)
            ]
        );
        assert!(lag_points(&Statistics::default()).is_empty());

        let snapshot = LagSnapshot::default();
        snapshot.update(&stats);
        assert_eq!(snapshot.points(), points);
        snapshot.update(&Statistics::default());
        assert!(
            snapshot.points().is_empty(),
            "a new report replaces the old one"
        );
    }

    #[test]
    fn a_point_carries_the_messaging_attributes() {
        let p = LagPoint {
            topic: "messages".into(),
            partition: 2,
            lag: 7,
        };
        let attrs: Vec<(String, String)> = p
            .attributes("relay")
            .iter()
            .map(|kv| (kv.key.to_string(), kv.value.to_string()))
            .collect();
        let want = [
            ("messaging.system", "kafka"),
            ("messaging.destination.name", "messages"),
            ("messaging.destination.partition.id", "2"),
            ("messaging.consumer.group.name", "relay"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        assert_eq!(attrs, want);
    }
}

//! Liveness: a Kafka client that stopped fetching an assigned partition for good.
//!
//! librdkafka can stay wedged after the cluster changed under it: when a broker comes back on
//! empty storage (a Kafka pod on an emptyDir deleted and recreated), the topics are recreated
//! with leader epochs that start again at 0, which the client ignores as "older than our cached
//! epoch"; the partition never gets a leader again and nothing is fetched, while the group
//! membership and the metadata requests look healthy. A new client (a restarted process) has no
//! cached epochs and works at once.
//!
//! Each statistics report (`statistics.interval.ms`) is checked: an assigned partition that is
//! not fetching (`fetch_state` other than `active`, or no leader) is a stall from the first
//! report that shows it; so is a consumer that is not a steady member of its group (after a
//! broker froze for longer than the session timeout, a consumer was seen never to rejoin,
//! its coordinator request stuck, holding no partition and so showing no partition stall). `/healthz` answers 503 once a stall lasts longer than
//! `KAFKA_STALL_TIMEOUT` (default 60 s), so Kubernetes restarts the container (with the chart's
//! liveness probe: after 3 more failed probes, 10 s apart). A broker outage longer than that
//! restarts the consumer too, which changes nothing for at-least-once delivery: offsets are
//! committed only after processing. With statistics off (`KAFKA_STATISTICS_INTERVAL_MS=0`)
//! nothing is detected.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::Statistics;

/// Why a partition is not fetching, as of one statistics report.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stall {
    since: Instant,
    fetch_state: String,
    leader: i32,
}

/// Since when the consumer has not been a steady member of its group, and how it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Unjoined {
    since: Instant,
    state: String,
    join_state: String,
}

#[derive(Debug, Default)]
struct Seen {
    partitions: BTreeMap<(String, i32), Stall>,
    group: Option<Unjoined>,
}

/// The stalled assigned partitions and the group membership, shared between the statistics
/// callback and `/healthz`.
#[derive(Debug, Clone, Default)]
pub struct Stalls(Arc<Mutex<Seen>>);

impl Stalls {
    /// Notes which assigned partitions of `stats` are not fetching, and whether the consumer
    /// is a steady member of its group (`up`, `steady`), as of `now`.
    pub fn update(&self, stats: &Statistics, now: Instant) {
        let mut seen_before = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(g) = &stats.cgrp {
            seen_before.group = (g.state != "up" || g.join_state != "steady").then(|| Unjoined {
                since: seen_before.group.as_ref().map_or(now, |u| u.since),
                state: g.state.clone(),
                join_state: g.join_state.clone(),
            });
        }
        let stalls = &seen_before.partitions;
        let mut seen = BTreeMap::new();
        for (topic, t) in &stats.topics {
            for p in t.partitions.values() {
                // -1 is librdkafka's internal partition; `desired` means assigned to us.
                if p.partition < 0 || !p.desired {
                    continue;
                }
                if p.fetch_state == "active" && p.leader >= 0 {
                    continue;
                }
                let key = (topic.clone(), p.partition);
                let since = stalls.get(&key).map_or(now, |s| s.since);
                seen.insert(
                    key,
                    Stall {
                        since,
                        fetch_state: p.fetch_state.clone(),
                        leader: p.leader,
                    },
                );
            }
        }
        seen_before.partitions = seen;
    }

    /// The partitions stalled for longer than `limit` at `now`, as a reason for `/healthz`.
    pub fn wedged(&self, limit: Duration, now: Instant) -> Option<String> {
        let seen = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let group = seen
            .group
            .as_ref()
            .filter(|u| now.duration_since(u.since) > limit)
            .map(|u| {
                format!(
                    "not a steady member of its consumer group for {}s (state {}, join state {})",
                    now.duration_since(u.since).as_secs(),
                    u.state,
                    u.join_state
                )
            });
        let long: Vec<String> = seen
            .partitions
            .iter()
            .filter(|(_, s)| now.duration_since(s.since) > limit)
            .map(|((topic, partition), s)| {
                format!(
                    "{topic}[{partition}] not fetching for {}s (fetch state {}, leader {})",
                    now.duration_since(s.since).as_secs(),
                    s.fetch_state,
                    s.leader
                )
            })
            .chain(group)
            .collect();
        (!long.is_empty()).then(|| format!("Kafka client wedged: {}", long.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use rdkafka::statistics::{Partition, Topic};

    /// A statistics report with one topic and the given partitions: (id, assigned, fetch state, leader).
    fn stats(parts: &[(i32, bool, &str, i32)]) -> Statistics {
        let partitions = parts
            .iter()
            .map(|&(partition, desired, state, leader)| {
                (
                    partition,
                    Partition {
                        partition,
                        desired,
                        leader,
                        fetch_state: state.to_string(),
                        ..Partition::default()
                    },
                )
            })
            .collect();
        let topic = Topic {
            topic: "messages".into(),
            partitions,
            ..Topic::default()
        };
        Statistics {
            topics: [("messages".to_string(), topic)].into_iter().collect(),
            ..Statistics::default()
        }
    }

    #[test]
    fn an_assigned_partition_without_a_leader_wedges_the_client_after_the_limit() {
        let stalls = Stalls::default();
        let t0 = Instant::now();
        let limit = Duration::from_secs(60);
        stalls.update(
            &stats(&[(0, true, "offset-query", -1), (1, true, "active", 0)]),
            t0,
        );
        assert_eq!(stalls.wedged(limit, t0 + Duration::from_secs(30)), None);
        // Still stalled in a later report: the first sighting counts.
        stalls.update(
            &stats(&[(0, true, "offset-query", -1), (1, true, "active", 0)]),
            t0 + Duration::from_secs(40),
        );
        let reason = stalls
            .wedged(limit, t0 + Duration::from_secs(61))
            .expect("wedged");
        assert!(
            reason.contains("messages[0] not fetching for 61s"),
            "{reason}"
        );
        assert!(!reason.contains("messages[1]"), "{reason}");
    }

    fn group(state: &str, join_state: &str) -> Statistics {
        Statistics {
            cgrp: Some(rdkafka::statistics::ConsumerGroup {
                state: state.into(),
                join_state: join_state.into(),
                ..Default::default()
            }),
            ..Statistics::default()
        }
    }

    #[test]
    fn a_consumer_out_of_its_group_past_the_limit_is_wedged_an_idle_member_is_not() {
        let stalls = Stalls::default();
        let t0 = Instant::now();
        let limit = Duration::from_secs(60);
        // A member without partitions (more consumers than partitions) is fine.
        stalls.update(&group("up", "steady"), t0);
        assert_eq!(stalls.wedged(limit, t0 + 2 * limit), None);
        stalls.update(&group("up", "wait-join"), t0 + limit);
        stalls.update(&group("wait-coord", "init"), t0 + limit + limit / 2);
        assert_eq!(stalls.wedged(limit, t0 + 2 * limit), None);
        let reason = stalls
            .wedged(limit, t0 + 2 * limit + Duration::from_secs(1))
            .expect("wedged");
        assert!(
            reason.contains("consumer group for 61s (state wait-coord, join state init)"),
            "{reason}"
        );
        stalls.update(&group("up", "steady"), t0 + 3 * limit);
        assert_eq!(stalls.wedged(limit, t0 + 4 * limit), None);
    }

    #[test]
    fn a_partition_that_fetches_again_or_is_not_assigned_is_no_stall() {
        let stalls = Stalls::default();
        let t0 = Instant::now();
        let limit = Duration::from_secs(60);
        stalls.update(
            &stats(&[(0, true, "offset-query", -1), (2, false, "none", -1)]),
            t0,
        );
        stalls.update(
            &stats(&[(0, true, "active", 0), (2, false, "none", -1)]),
            t0 + limit,
        );
        assert_eq!(stalls.wedged(limit, t0 + 2 * limit), None);
    }
}

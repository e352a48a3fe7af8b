//! What a load under faults ([`journey_tests::load::Load`]) left: the count of what reached
//! the end of the journey.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use journey_tests::load::Ack;
use journey_tests::say;
use journey_tests::services::{Journey, Service, end_offsets, read_from, wait_committed_to_end};
use rdkafka::Message as _;
use rdkafka::message::OwnedMessage;
use serde_json::Value;

/// Where the output and dead-letter topics ended before a run: what came after is the run's.
#[derive(Debug, Clone)]
pub struct Marks {
    pub processed: Vec<(i32, i64)>,
    pub dlq: Vec<(i32, i64)>,
}

impl Marks {
    pub fn take(j: &Journey) -> Result<Marks> {
        Ok(Marks {
            processed: end_offsets(j.bootstrap(), "messages.processed")?,
            dlq: end_offsets(j.bootstrap(), "messages.dlq")?,
        })
    }

    /// The records written to `messages.processed` since the marks.
    pub fn processed_since(&self, bootstrap: &str) -> Result<Vec<OwnedMessage>> {
        read_from(
            bootstrap,
            "messages.processed",
            &self.processed,
            Duration::from_secs(10),
        )
    }

    /// The records written to `messages.dlq` since the marks.
    pub fn dead_since(&self, bootstrap: &str) -> Result<Vec<OwnedMessage>> {
        read_from(bootstrap, "messages.dlq", &self.dlq, Duration::from_secs(5))
    }
}

/// Every acked message counted at the relay's output and at the sink.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub acked: usize,
    /// Acked messages with a record in `messages.processed`.
    pub forwarded: usize,
    /// Acked messages the sink logged as received.
    pub delivered: usize,
    /// Acked messages the sink never received.
    pub lost: usize,
    /// Extra records in `messages.processed` (a message forwarded twice).
    pub dup_forwarded: usize,
    /// Extra receipts at the sink (a message received twice).
    pub dup_delivered: usize,
    /// Records of the run in `messages.dlq`.
    pub dead_lettered: usize,
    /// From the call until every acked message was at the sink.
    pub settled_in: Duration,
    /// Restarts of unhealthy consumers (the kubelet's part) while waiting.
    pub restarts: usize,
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "acked {}, forwarded {}, at the sink {}, lost {}, duplicates {} forwarded / {} at \
             the sink, dead-lettered {}, settled in {:.1?}, consumer restarts {}",
            self.acked,
            self.forwarded,
            self.delivered,
            self.lost,
            self.dup_forwarded,
            self.dup_delivered,
            self.dead_lettered,
            self.settled_in,
            self.restarts
        )
    }
}

/// `(partition, offset)` of every record of `messages.processed` the sink logged as received,
/// with how many times (its log continues across restarts).
pub fn sink_receipts(sink: &Service) -> BTreeMap<(i64, i64), usize> {
    let text = std::fs::read_to_string(sink.process().log_path()).unwrap_or_default();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let f = &v["fields"];
        if v["message"] == "message reached the sink"
            && f["topic"] == "messages.processed"
            && let (Some(p), Some(o)) = (f["partition"].as_i64(), f["offset"].as_i64())
        {
            *out.entry((p, o)).or_default() += 1;
        }
    }
    out
}

/// Counts the run's acked messages at the relay's output and at the sink, waiting up to
/// `limit` until every one reached the sink; meanwhile restarts a consumer that exited or whose
/// `/healthz` fails, as the kubelet would. Then waits until the relay's and the sink's groups
/// committed to the end of their input (nothing stays stuck). The tally counts what was lost
/// when the limit passed; the caller asserts.
pub fn settle(j: &mut Journey, marks: &Marks, acked: &[Ack], limit: Duration) -> Result<Tally> {
    let started = Instant::now();
    let bootstrap = j.bootstrap().to_string();
    let mut restarts = 0;
    let prefix = acked
        .first()
        .and_then(|a| a.key.rsplit_once('-'))
        .map(|(p, _)| format!("{p}-"))
        .unwrap_or_default();
    let tally = loop {
        let records = marks.processed_since(&bootstrap)?;
        let mut by_key: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
        for r in &records {
            let Some(k) = r.key() else { continue };
            let k = String::from_utf8_lossy(k);
            if k.starts_with(&prefix) {
                by_key
                    .entry(k.into_owned())
                    .or_default()
                    .push((i64::from(r.partition()), r.offset()));
            }
        }
        let receipts = sink_receipts(&j.sink);
        let mut t = Tally {
            acked: acked.len(),
            restarts,
            ..Tally::default()
        };
        for a in acked {
            let Some(at) = by_key.get(&a.key) else {
                t.lost += 1;
                continue;
            };
            t.forwarded += 1;
            t.dup_forwarded += at.len() - 1;
            let received: usize = at.iter().filter_map(|p| receipts.get(p)).sum();
            if received == 0 {
                t.lost += 1;
            } else {
                t.delivered += 1;
                t.dup_delivered += received - 1;
            }
        }
        t.settled_in = started.elapsed();
        if t.lost == 0 || started.elapsed() > limit {
            break t;
        }
        // The kubelet's part: a consumer that exited, or whose client stayed wedged after a
        // fault, fails its liveness probe and is restarted with a new client.
        restarts += journey_tests::runner::block_on(async {
            let j = &mut *j;
            let mut n = 0;
            for s in [&mut j.relay, &mut j.sink] {
                n += usize::from(s.restart_if_unhealthy(&j.stack).await?.is_some());
            }
            Ok::<_, anyhow::Error>(n)
        })?;
        say!(
            "{} of {} acked messages not at the sink yet ({} not forwarded) after {:.0?}",
            t.lost,
            t.acked,
            t.acked - t.forwarded,
            started.elapsed()
        );
        std::thread::sleep(Duration::from_secs(3));
    };
    let dead = marks.dead_since(&bootstrap)?;
    let tally = Tally {
        dead_lettered: dead
            .iter()
            .filter(|r| r.key().is_some_and(|k| k.starts_with(prefix.as_bytes())))
            .count(),
        ..tally
    };
    say!("{tally}");
    if tally.lost == 0 {
        for (group, topic) in [("relay", "messages"), ("sink", "messages.processed")] {
            let at = wait_committed_to_end(&bootstrap, group, topic, Duration::from_secs(60))?;
            say!("group {group} committed up to the end of {topic}: {at:?}");
        }
    }
    Ok(tally)
}

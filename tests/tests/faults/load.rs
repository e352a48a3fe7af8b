//! Load under faults: POSTs with unique keys until stopped, every acked (202) one noted; then
//! the count of what reached the end of the journey.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use journey_tests::say;
use journey_tests::services::{
    Journey, Service, end_offsets, post_within, read_from, wait_committed_to_end,
};
use rdkafka::Message as _;
use rdkafka::message::OwnedMessage;
use serde_json::{Value, json};

/// How long each POST may take: longer than the producer's own bound (a 503 after its 30 s
/// message timeout) would hold the load; a POST cut off here counts as an HTTP error.
const POST_TIMEOUT: Duration = Duration::from_secs(15);

/// One acked message.
#[derive(Debug, Clone)]
pub struct Ack {
    pub key: String,
    pub trace_id: String,
    pub at: Instant,
}

/// What a load run did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub sent: usize,
    pub acked: Vec<Ack>,
    /// Answers other than 202, by status (`timeout/transport` for no answer).
    pub errors: BTreeMap<String, usize>,
    pub held: Duration,
}

impl Outcome {
    pub fn error_count(&self) -> usize {
        self.errors.values().sum()
    }

    /// Acked messages per second over the run.
    pub fn rate(&self) -> f64 {
        self.acked.len() as f64 / self.held.as_secs_f64().max(0.001)
    }

    /// `"25 s, 18 msg/s"`.
    pub fn held_text(&self) -> String {
        format!("{:.0} s, {:.0} msg/s", self.held.as_secs_f64(), self.rate())
    }

    /// The acks from `since` on (in order).
    pub fn acked_after(&self, since: Instant) -> impl Iterator<Item = &Ack> {
        self.acked.iter().filter(move |a| a.at >= since)
    }
}

#[derive(Debug, Default)]
struct Shared {
    outcome: Mutex<Outcome>,
    stop: AtomicBool,
}

/// A load running on the current runtime.
#[derive(Debug)]
pub struct Load {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    /// POSTs to `producer` one message after another (unique keys `<run>-<n>`), pausing
    /// `every` between them, until [`Load::stop`]; prints progress every 5 s.
    pub fn start(producer: &Service, run: &str, every: Duration) -> Load {
        let shared = Arc::new(Shared::default());
        let (url, run, s) = (
            format!("{}/messages", producer.url()),
            run.to_string(),
            shared.clone(),
        );
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut report = started;
            let mut n = 0;
            while !s.stop.load(Ordering::SeqCst) {
                let key = format!("{run}-{n}");
                n += 1;
                let body = json!({"key": key, "payload": {"n": n}})
                    .to_string()
                    .into_bytes();
                let answer =
                    post_within(&url, Some("application/json"), body, &[], POST_TIMEOUT).await;
                {
                    let mut o = lock(&s.outcome);
                    o.sent = n;
                    match answer {
                        Ok(a) if a.status == 202 => {
                            let trace_id = a.str("trace_id").unwrap_or_default().to_string();
                            o.acked.push(Ack {
                                key,
                                trace_id,
                                at: Instant::now(),
                            });
                        }
                        Ok(a) => *o.errors.entry(a.status.to_string()).or_default() += 1,
                        Err(_) => *o.errors.entry("timeout/transport".into()).or_default() += 1,
                    }
                    o.held = started.elapsed();
                    if report.elapsed() >= Duration::from_secs(5) {
                        report = Instant::now();
                        say!(
                            "load {run}: {:.0}s: sent {}, acked {}, errors {:?}",
                            o.held.as_secs_f64(),
                            o.sent,
                            o.acked.len(),
                            o.errors
                        );
                    }
                }
                tokio::time::sleep(every).await;
            }
        });
        Load { shared, task }
    }

    /// Stops the load (after the POST in progress) and returns what it did.
    pub async fn stop(self) -> Result<Outcome> {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.task.await?;
        let o = std::mem::take(&mut *lock(&self.shared.outcome));
        say!(
            "load stopped: sent {}, acked {}, errors {:?} in {:.1?}",
            o.sent,
            o.acked.len(),
            o.errors,
            o.held
        );
        Ok(o)
    }
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

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

//! Kafka for the bench: topics of its own, a backlog written straight to the broker, a
//! group's lag, and Kafka's own ProducerPerformance as the ceiling.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt as _;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::services::end_offsets;
use crate::stack::Stack;
use crate::tools::Tools;

/// Partitions of every bench topic: the chart's `messages` topics have 3.
pub const PARTITIONS: i32 = 3;

/// Creates `names` with [`PARTITIONS`] partitions (journeyctl's seed: idempotent).
pub async fn create_topics(stack: &Stack, names: &[&str]) -> Result<()> {
    let topics: Vec<journeyctl::TopicSpec> = names
        .iter()
        .map(|n| journeyctl::TopicSpec {
            name: (*n).to_string(),
            partitions: PARTITIONS,
            replication_factor: 1,
            configs: BTreeMap::new(),
        })
        .collect();
    crate::services::seed(stack, &topics)
        .await
        .context("creating the bench topics")?;
    Ok(())
}

/// Writes `count` records to `topic` straight to the broker, keyed over `keys` keys, each
/// with a sampled W3C `traceparent` of its own (as a traced producer would send them), and
/// waits for every ack.
pub async fn backlog(stack: &Stack, topic: &str, count: u64, keys: u64) -> Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", stack.kafka.bootstrap())
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .context("creating the backlog writer")?;
    let mut acks = futures::stream::FuturesUnordered::new();
    for n in 0..count {
        let key = format!("key-{}", n % keys.max(1));
        let value = format!(r#"{{"seq":{n}}}"#);
        let traceparent = format!(
            "00-{:032x}-{:016x}-01",
            rand::random::<u128>() | 1,
            rand::random::<u64>() | 1
        );
        let headers = OwnedHeaders::new().insert(Header {
            key: "traceparent",
            value: Some(&traceparent),
        });
        let record = FutureRecord::to(topic)
            .key(&key)
            .payload(&value)
            .headers(headers);
        let ack = producer
            .send_result(record)
            .map_err(|(e, _)| e)
            .context("kafka: the backlog writer could not queue a record")?;
        acks.push(ack);
    }
    while let Some(ack) = acks.next().await {
        match ack {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => bail!("kafka: the backlog writer's record was not acked: {e}"),
            Err(_) => bail!("kafka: the backlog writer was dropped before its ack"),
        }
    }
    Ok(())
}

/// Reads how far a consumer group is behind on a topic, with one client of its own (the
/// topic's partitions read once; then watermarks and committed offsets at each reading).
pub struct Lag {
    reader: BaseConsumer,
    topic: String,
    partitions: TopicPartitionList,
    group: String,
}

impl std::fmt::Debug for Lag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lag({} on {})", self.group, self.topic)
    }
}

/// How long one Kafka call of a lag reading may take.
const LAG_CALL_TIMEOUT: Duration = Duration::from_secs(5);

impl Lag {
    pub fn new(bootstrap: &str, group: &str, topic: &str) -> Result<Lag> {
        let reader: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .create()
            .context("creating the lag reader")?;
        let mut partitions = TopicPartitionList::new();
        for (p, _) in end_offsets(bootstrap, topic)? {
            partitions.add_partition(topic, p);
        }
        Ok(Lag {
            reader,
            topic: topic.to_string(),
            partitions,
            group: group.to_string(),
        })
    }

    /// Records on the topic not yet committed by the group (all of them before its first
    /// commit). The Kafka calls block: the worker thread hands its other tasks (the load)
    /// to another one meanwhile, so a lag reading never stalls the load.
    pub fn now(&self) -> Result<i64> {
        tokio::task::block_in_place(|| self.read())
    }

    fn read(&self) -> Result<i64> {
        let committed = self
            .reader
            .committed_offsets(self.partitions.clone(), LAG_CALL_TIMEOUT)
            .with_context(|| format!("reading {}'s committed offsets", self.group))?;
        let mut behind = 0;
        for e in committed.elements() {
            let (_, end) = self
                .reader
                .fetch_watermarks(&self.topic, e.partition(), LAG_CALL_TIMEOUT)
                .with_context(|| format!("reading {}'s end offsets", self.topic))?;
            let at = match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            };
            behind += (end - at).max(0);
        }
        Ok(behind)
    }
}

/// What Kafka's own `ProducerPerformance` measured.
#[derive(Debug, Clone, Default)]
pub struct Ceiling {
    pub records: u64,
    pub record_bytes: u32,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Runs `org.apache.kafka.tools.ProducerPerformance` from the broker's own jars against the
/// stack's broker with the services' producer settings (idempotent, acks=all, linger 5 ms).
pub fn ceiling(stack: &Stack, topic: &str, records: u64, record_bytes: u32) -> Result<Ceiling> {
    let libs = Tools::load()?.path("KAFKA_LIBS", "kafka")?;
    let out = Command::new("java")
        .args(["-Xmx512m", "-cp", &format!("{}/*", libs.display())])
        .arg("org.apache.kafka.tools.ProducerPerformance")
        .args(["--topic", topic, "--throughput", "-1"])
        .args(["--num-records", &records.to_string()])
        .args(["--record-size", &record_bytes.to_string()])
        .arg("--producer-props")
        .arg(format!("bootstrap.servers={}", stack.kafka.bootstrap()))
        .args(["acks=all", "enable.idempotence=true", "linger.ms=5"])
        .output()
        .context("kafka: running ProducerPerformance (java)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "kafka: ProducerPerformance failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let summary = text
        .lines()
        .rev()
        .find(|l| l.contains("records sent") && l.contains("50th"))
        .with_context(|| {
            format!("kafka: no summary line in ProducerPerformance's output: {text}")
        })?;
    parse_ceiling(summary, record_bytes)
}

/// `300000 records sent, 81234.5 records/sec (4.96 MB/sec), 120.3 ms avg latency, 400.0 ms
/// max latency, 110 ms 50th, 300 ms 95th, 380 ms 99th, 395 ms 99.9th.`
fn parse_ceiling(line: &str, record_bytes: u32) -> Result<Ceiling> {
    let number_before = |label: &str| -> Result<f64> {
        let end = line
            .find(label)
            .with_context(|| format!("no `{label}` in `{line}`"))?;
        let words: Vec<&str> = line[..end].split_whitespace().collect();
        let word = words
            .iter()
            .rev()
            .find(|w| w.parse::<f64>().is_ok())
            .with_context(|| format!("no number before `{label}` in `{line}`"))?;
        Ok(word.parse()?)
    };
    Ok(Ceiling {
        records: number_before("records sent")? as u64,
        record_bytes,
        per_sec: number_before("records/sec")?,
        p50_ms: number_before("ms 50th")?,
        p99_ms: number_before("ms 99th")?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_producer_performance_summary_is_read() {
        let c = parse_ceiling(
            "300000 records sent, 81234.5 records/sec (4.96 MB/sec), 120.3 ms avg latency, \
             400.0 ms max latency, 110 ms 50th, 300 ms 95th, 380 ms 99th, 395 ms 99.9th.",
            64,
        )
        .unwrap();
        assert_eq!(c.records, 300_000);
        assert_eq!(c.per_sec, 81234.5);
        assert_eq!((c.p50_ms, c.p99_ms), (110.0, 380.0));
    }
}

//! Many records in flight (`MAX_IN_FLIGHT`), in both ordering modes: every record reaches the
//! output exactly once, each key's records in the order they were sent, the committed offsets
//! reach the end of the input; a record held up by retries holds up its lane and nothing else.
//!
//! A poison record (retried with backoff, then dead-lettered, ~7 s) makes the lanes visible
//! in time: records of its key sent after it must be forwarded after its DLQ record was
//! written (else the relay would not keep the key's order); with `ORDERING=key`, records of
//! other keys in its partition are forwarded meanwhile, with `ORDERING=partition` they wait.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use journey_tests::runner::{self, Fixture, block_on};
use journey_tests::services::{Service, end_offsets, read_from, wait_committed_to_end};
use journey_tests::stack::Stack;
use journey_tests::{say, tests};
use journeyctl::TopicSpec;
use rdkafka::message::OwnedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message as _};
use serde_json::{Value, json};

/// Records per run, over [`KEYS`] keys.
const RECORDS: usize = 600;
const KEYS: usize = 30;
/// The sequence number (within its key) of the poison record of key `k-0`.
const POISON_SEQ: usize = 5;

#[derive(Debug)]
struct Kafka {
    stack: Stack,
}

impl Fixture for Kafka {
    fn logs_dirs(&self) -> Vec<std::path::PathBuf> {
        vec![self.stack.logs_dir()]
    }
}

fn main() -> std::process::ExitCode {
    runner::main(
        || block_on(Stack::start()).map(|stack| Kafka { stack }),
        tests![
            key_mode_keeps_each_keys_order_loses_nothing_and_a_slow_key_holds_up_only_itself,
            partition_mode_keeps_each_partitions_order_loses_nothing_and_a_slow_record_holds_it_up,
        ],
    )
}

fn key_mode_keeps_each_keys_order_loses_nothing_and_a_slow_key_holds_up_only_itself(
    k: &Kafka,
) -> Result<()> {
    run(k, "key")
}

fn partition_mode_keeps_each_partitions_order_loses_nothing_and_a_slow_record_holds_it_up(
    k: &Kafka,
) -> Result<()> {
    run(k, "partition")
}

/// What was sent: key, sequence number within the key, input partition and offset.
#[derive(Debug, Clone)]
struct SentRecord {
    key: String,
    seq: usize,
    partition: i32,
    offset: i64,
}

fn run(k: &Kafka, mode: &str) -> Result<()> {
    let bootstrap = k.stack.kafka.bootstrap().to_string();
    let (input, output, dlq, group) = (
        format!("order-{mode}-in"),
        format!("order-{mode}-out"),
        format!("order-{mode}-dlq"),
        format!("order-{mode}-relay"),
    );
    block_on(async {
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", &bootstrap);
        let topics = [
            TopicSpec::new(&input, 3),
            TopicSpec::new(&output, 3),
            TopicSpec::new(&dlq, 1),
        ];
        journeyctl::seed(&client, &topics, false)
            .await
            .context("creating the topics")?;
        let mut relay = Service::consumer(
            &k.stack,
            "relay",
            &format!("relay-{mode}"),
            &[
                ("KAFKA_TOPIC", input.as_str()),
                ("OUTPUT_TOPIC", output.as_str()),
                ("DLQ_TOPIC", dlq.as_str()),
                ("KAFKA_GROUP_ID", group.as_str()),
                ("ORDERING", mode),
                ("MAX_IN_FLIGHT", "64"),
                ("PROCESS_DELAY_MS", "5"),
                ("MAX_RETRIES", "3"),
                ("RETRY_BACKOFF_MS", "1000"),
            ],
        )
        .await?;
        let sent = produce(&bootstrap, &input).await?;
        let outcome = check(&bootstrap, mode, &sent, (&input, &output, &dlq, &group));
        relay.process_mut().stop();
        outcome
    })
}

/// Sends [`RECORDS`] records round-robin over the keys, in order (idempotent producer: the
/// input partition holds each key's records in sequence); one of them is poison.
async fn produce(bootstrap: &str, topic: &str) -> Result<Vec<SentRecord>> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?;
    let records: Vec<(String, usize, String)> = (0..RECORDS)
        .map(|n| {
            let (key, seq) = (format!("k-{}", n % KEYS), n / KEYS);
            let mut payload = json!({"key": key, "seq": seq});
            if key == "k-0" && seq == POISON_SEQ {
                payload["poison"] = true.into();
            }
            (key, seq, payload.to_string())
        })
        .collect();
    let mut acks = Vec::new();
    for (key, seq, payload) in &records {
        let record = FutureRecord::to(topic).key(key).payload(payload);
        let ack = producer
            .send_result(record)
            .map_err(|(e, _)| e)
            .context("queueing a record")?;
        acks.push((key, *seq, ack));
    }
    let mut sent = Vec::new();
    for (key, seq, ack) in acks {
        let delivery = ack
            .await
            .context("the test producer was dropped")?
            .map_err(|(e, _)| e)
            .context("Kafka did not ack a record")?;
        sent.push(SentRecord {
            key: key.clone(),
            seq,
            partition: delivery.partition,
            offset: delivery.offset,
        });
    }
    say!("{RECORDS} records over {KEYS} keys acked by Kafka");
    Ok(sent)
}

/// The CreateTime the relay gave a record it produced (its enqueue time).
fn create_time(msg: &OwnedMessage) -> Result<i64> {
    msg.timestamp()
        .to_millis()
        .with_context(|| format!("{}@{} has no timestamp", msg.topic(), msg.offset()))
}

fn key_seq(msg: &OwnedMessage) -> Result<(String, usize)> {
    let v: Value = serde_json::from_slice(msg.payload().unwrap_or_default())?;
    Ok((
        v["key"].as_str().context("no key")?.to_string(),
        usize::try_from(v["seq"].as_u64().context("no seq")?)?,
    ))
}

fn check(
    bootstrap: &str,
    mode: &str,
    sent: &[SentRecord],
    (input, output, dlq, group): (&str, &str, &str, &str),
) -> Result<()> {
    let zero = |topic: &str| -> Result<Vec<(i32, i64)>> {
        Ok(end_offsets(bootstrap, topic)?
            .into_iter()
            .map(|(p, _)| (p, 0))
            .collect())
    };
    // Everything forwarded or dead-lettered.
    let started = Instant::now();
    let (forwarded, dead) = loop {
        let forwarded = read_from(bootstrap, output, &zero(output)?, Duration::from_secs(5))?;
        let dead = read_from(bootstrap, dlq, &zero(dlq)?, Duration::from_secs(5))?;
        if forwarded.len() + dead.len() >= RECORDS {
            break (forwarded, dead);
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!(
                "after 60s the relay forwarded {} and dead-lettered {} of {RECORDS} records",
                forwarded.len(),
                dead.len()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    say!(
        "{mode}: {} forwarded, {} dead-lettered after {:.1?}",
        forwarded.len(),
        dead.len(),
        started.elapsed()
    );

    // Exactly once each (no rebalance, no fault: no duplicate either), the poison one in the DLQ.
    ensure!(dead.len() == 1, "one DLQ record, got {}", dead.len());
    let (poison_key, poison_seq) = key_seq(&dead[0])?;
    ensure!(
        (poison_key.as_str(), poison_seq) == ("k-0", POISON_SEQ),
        "the DLQ holds {poison_key}#{poison_seq}"
    );
    let mut seen: BTreeMap<(String, usize), usize> = BTreeMap::new();
    for msg in &forwarded {
        *seen.entry(key_seq(msg)?).or_default() += 1;
    }
    let expected: BTreeSet<(String, usize)> = sent
        .iter()
        .map(|s| (s.key.clone(), s.seq))
        .filter(|(k, s)| (k.as_str(), *s) != ("k-0", POISON_SEQ))
        .collect();
    let missing: Vec<_> = expected.iter().filter(|r| !seen.contains_key(r)).collect();
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    ensure!(
        missing.is_empty() && twice.is_empty() && seen.len() == expected.len(),
        "{mode}: missing {missing:?}, more than once {twice:?}"
    );

    // Each key in order: in output offset order (one key, one output partition), seq ascends.
    let mut by_key: BTreeMap<String, Vec<(i32, i64, usize)>> = BTreeMap::new();
    for msg in &forwarded {
        let (key, seq) = key_seq(msg)?;
        by_key
            .entry(key)
            .or_default()
            .push((msg.partition(), msg.offset(), seq));
    }
    for (key, mut records) in by_key {
        records.sort();
        let seqs: Vec<usize> = records.iter().map(|r| r.2).collect();
        ensure!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{mode}: key {key} forwarded out of order: {seqs:?}"
        );
    }

    // The poison record held up its lane, and (key mode) nothing else.
    let dead_at = create_time(&dead[0])?;
    let poison = sent
        .iter()
        .find(|s| s.key == "k-0" && s.seq == POISON_SEQ)
        .context("the poison record was sent")?;
    let forwarded_at: BTreeMap<(String, usize), i64> = forwarded
        .iter()
        .map(|m| Ok((key_seq(m)?, create_time(m)?)))
        .collect::<Result<_>>()?;
    let behind = |same_key: bool| -> Vec<i64> {
        sent.iter()
            .filter(|s| s.partition == poison.partition && s.offset > poison.offset)
            .filter(|s| (s.key == poison.key) == same_key)
            .filter_map(|s| forwarded_at.get(&(s.key.clone(), s.seq)).copied())
            .collect()
    };
    let (same, others) = (behind(true), behind(false));
    ensure!(
        !same.is_empty() && !others.is_empty(),
        "records behind the poison one"
    );
    let before_dlq = |times: &[i64]| times.iter().filter(|t| **t < dead_at).count();
    say!(
        "{mode}: behind the poison record in its partition, forwarded before its DLQ record: {} of {} of its key, {} of {} of other keys",
        before_dlq(&same),
        same.len(),
        before_dlq(&others),
        others.len()
    );
    ensure!(
        before_dlq(&same) == 0,
        "{mode}: records of the poison record's key went before it was dead-lettered"
    );
    match mode {
        // Nearly all: on a busy machine the last few may simply not have had their turn yet.
        "key" => ensure!(
            before_dlq(&others) * 10 >= others.len() * 9,
            "key mode: other keys waited for the poison record"
        ),
        _ => ensure!(
            before_dlq(&others) == 0,
            "partition mode: records behind the poison one went before it was dead-lettered"
        ),
    }

    // The committed offsets reach the end of the input (auto-commit every second).
    let at = wait_committed_to_end(bootstrap, group, input, Duration::from_secs(15))
        .with_context(|| format!("{mode}: the relay's commits"))?;
    say!("{mode}: committed offsets at the end of {input}: {at:?}");
    Ok(())
}

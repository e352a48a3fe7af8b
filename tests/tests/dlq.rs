//! Poison messages: bounded retries, then the DLQ with the original and error headers, the DLQ
//! send in the message's trace with error status; the consumer keeps going.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use journey_tests::runner::{self, block_on};
use journey_tests::services::{
    JOURNEY_SPANS, Journey, TRACE_TIMEOUT, chart_topics, end_offsets, find_span, has_spans, header,
    post_json, read_from, record_trace_id, render_tree, seed,
};
use journey_tests::stack::Stack;
use journey_tests::{say, tests};
use rdkafka::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde_json::json;

const MAX_RETRIES: &str = "2";

fn main() -> std::process::ExitCode {
    runner::main(
        || {
            block_on(Journey::start(&[
                ("MAX_RETRIES", MAX_RETRIES),
                ("RETRY_BACKOFF_MS", "50"),
            ]))
        },
        tests![
            a_poison_message_ends_in_the_dlq_with_its_headers_and_an_error_in_its_trace,
            the_next_good_message_still_flows_after_a_poison_message,
            a_record_too_large_to_forward_is_dead_lettered_without_its_value_and_the_relay_goes_on,
        ],
    )
}

fn a_poison_message_ends_in_the_dlq_with_its_headers_and_an_error_in_its_trace(
    j: &Journey,
) -> Result<()> {
    let bootstrap = j.bootstrap().to_string();
    let before = end_offsets(&bootstrap, "messages.dlq")?;
    block_on(async {
        let key = format!("bad-{}", rand::random::<u32>());
        let payload = json!({"poison": true, "n": 1});
        let answer = post_json(&j.producer, &json!({"key": key, "payload": payload})).await?;
        let trace_id = answer.trace_id()?;
        let spans = j
            .zipkin()
            .wait_for_trace(&trace_id, TRACE_TIMEOUT, |s| {
                has_spans(
                    s,
                    &[
                        "post /messages",
                        "send messages",
                        "process messages",
                        "send messages.dlq",
                    ],
                )
            })
            .await?;
        say!("poison trace {trace_id}:{}", render_tree(&spans));
        let process = find_span(&spans, "process messages", "relay")?;
        let dlq = find_span(&spans, "send messages.dlq", "relay")?;
        ensure!(
            dlq.kind.as_deref() == Some("PRODUCER"),
            "DLQ send kind {:?}",
            dlq.kind
        );
        ensure!(
            dlq.parent_id.as_deref() == Some(process.id.as_str()),
            "DLQ send should be a child of process"
        );
        for s in [process, dlq] {
            ensure!(
                s.tags.contains_key("error"),
                "{:?} should have error status: {:?}",
                s.name(),
                s.tags
            );
            ensure!(
                s.tag("error.type") == Some("poison_message"),
                "{:?} error.type: {:?}",
                s.name(),
                s.tags
            );
        }
        ensure!(
            dlq.tag("messaging.destination.name") == Some("messages.dlq"),
            "{:?}",
            dlq.tags
        );
        let attempts = spans
            .iter()
            .filter(|s| s.name() == "relay messages")
            .count();
        let expected_attempts = 1 + MAX_RETRIES.parse::<usize>()?;
        ensure!(
            attempts == expected_attempts,
            "{attempts} work attempts, expected {expected_attempts}"
        );
        ensure!(
            !spans.iter().any(|s| s.service() == "sink"),
            "a poison message must not reach the sink"
        );

        let (partition, offset) = answer.position()?;
        let (partition, offset) = (partition.to_string(), offset.to_string());
        let records = tokio::task::spawn_blocking(move || {
            read_from(&bootstrap, "messages.dlq", &before, Duration::from_secs(10))
        })
        .await??;
        let record = records
            .iter()
            .find(|r| record_trace_id(r).as_deref() == Some(trace_id.as_str()))
            .with_context(|| {
                format!(
                    "no DLQ record of trace {trace_id} among {} new records",
                    records.len()
                )
            })?;
        let h = |k: &str| header(record, k).unwrap_or_default();
        ensure!(
            h("journey.error.type") == "poison_message",
            "error type header"
        );
        ensure!(
            !h("journey.error.message").is_empty(),
            "error message header"
        );
        ensure!(
            h("journey.original.topic") == "messages",
            "original topic header"
        );
        ensure!(
            h("journey.original.partition") == partition,
            "original partition header"
        );
        ensure!(
            h("journey.original.offset") == offset,
            "original offset header"
        );
        ensure!(h("journey.retries") == MAX_RETRIES, "retries header");
        ensure!(record.key() == Some(key.as_bytes()), "the key is kept");
        ensure!(
            record.payload() == Some(serde_json::to_vec(&payload)?.as_slice()),
            "the payload is kept"
        );
        // The DLQ record's traceparent names the DLQ send span.
        let tp = h("traceparent");
        ensure!(
            tp.split('-').nth(2) == Some(dlq.id.as_str()),
            "traceparent {tp} vs DLQ span {}",
            dlq.id
        );
        Ok(())
    })
}

fn the_next_good_message_still_flows_after_a_poison_message(j: &Journey) -> Result<()> {
    block_on(async {
        let poison = post_json(
            &j.producer,
            &json!({"key": "same-key", "payload": {"poison": true}}),
        )
        .await?;
        let good = post_json(
            &j.producer,
            &json!({"key": "same-key", "payload": {"fine": true}}),
        )
        .await?;
        ensure!(
            poison.body["partition"] == good.body["partition"],
            "same key, same partition: in order"
        );
        let trace_id = good.trace_id()?;
        let spans = j
            .zipkin()
            .wait_for_trace(&trace_id, TRACE_TIMEOUT, |s| has_spans(s, &JOURNEY_SPANS))
            .await?;
        ensure!(
            !spans.iter().any(|s| s.tags.contains_key("error")),
            "the good message has no error: {}",
            render_tree(&spans)
        );
        Ok(())
    })
}

/// Raises `topic`'s `max.message.bytes` above the broker's limit: the chart's topics seeded
/// with that config added, as `journeyctl seed` does it (keeping the topic's other configs).
fn allow_larger_records(stack: &Stack, topic: &str, bytes: u32) -> Result<()> {
    let mut topics = chart_topics()?;
    topics
        .iter_mut()
        .find(|t| t.name == topic)
        .with_context(|| format!("{topic} is not in the chart's topics"))?
        .configs
        .insert("max.message.bytes".into(), bytes.to_string());
    block_on(seed(stack, &topics))?;
    Ok(())
}

fn a_record_too_large_to_forward_is_dead_lettered_without_its_value_and_the_relay_goes_on(
    j: &Journey,
) -> Result<()> {
    // The broker and every client share one limit (the chart's kafka.maxMessageBytes), but a
    // topic can allow more (`max.message.bytes`), as can a broker the chart does not run. A
    // record over the relay's limit can neither be forwarded nor dead-lettered whole.
    let bootstrap = j.bootstrap().to_string();
    allow_larger_records(&j.stack, "messages", 2_000_000)?;
    let before = end_offsets(&bootstrap, "messages.dlq")?;
    let key = format!("large-{}", rand::random::<u32>());
    let value = vec![b'x'; 1_010_000];
    block_on(async {
        let writer: FutureProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("message.max.bytes", "2000000")
            .create()?;
        writer
            .send(
                FutureRecord::to("messages").key(&key).payload(&value),
                Timeout::After(Duration::from_secs(10)),
            )
            .await
            .map_err(|(e, _)| e)
            .context("the broker must take a 1,010,000-byte record")?;
        Ok::<_, anyhow::Error>(())
    })?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let record = loop {
        let records = read_from(&bootstrap, "messages.dlq", &before, Duration::from_secs(5))?;
        if let Some(r) = records
            .into_iter()
            .find(|r| r.key() == Some(key.as_bytes()))
        {
            break r;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "no DLQ record of the too-large record after 30s"
        );
    };
    let h = |k: &str| header(&record, k).unwrap_or_default();
    ensure!(
        h("journey.error.type") == "MessageSizeTooLarge",
        "error type {:?}",
        h("journey.error.type")
    );
    ensure!(
        h("journey.payload.omitted").contains("1010000 bytes"),
        "why the value is missing: {:?}",
        h("journey.payload.omitted")
    );
    ensure!(
        h("journey.original.topic") == "messages" && !h("journey.original.offset").is_empty(),
        "where the value stays"
    );
    ensure!(
        record.payload().unwrap_or_default().is_empty(),
        "the DLQ record has no value"
    );
    // The relay did not stop at that record: a message after it makes its whole journey.
    block_on(async {
        let good = post_json(
            &j.producer,
            &json!({"key": key, "payload": {"after": "large"}}),
        )
        .await?;
        let trace_id = good.trace_id()?;
        j.zipkin()
            .wait_for_trace(&trace_id, TRACE_TIMEOUT, |s| has_spans(s, &JOURNEY_SPANS))
            .await?;
        Ok(())
    })
}

//! The journey: one POST becomes ONE trace in Zipkin, HTTP → producer → Kafka → relay → Kafka
//! → sink, every hop named and attributed per the messaging semantic conventions.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use journey_tests::runner::{self, block_on};
use journey_tests::services::{
    JOURNEY_SPANS, Journey, Service, TRACE_TIMEOUT, end_offsets, find_span, has_spans, post,
    post_json, read_from, render_tree,
};
use journey_tests::zipkin::Span;
use journey_tests::{say, tests};
use rdkafka::Message as _;
use serde_json::json;

fn main() -> std::process::ExitCode {
    runner::main(
        || block_on(Journey::start(&[])),
        tests![
            one_post_becomes_one_trace_from_the_http_request_through_the_relay_to_the_sink,
            the_dependency_graph_shows_producer_kafka_relay_kafka_sink,
            a_callers_traceparent_is_continued_and_the_traceresponse_matches_zipkin,
            in_link_mode_the_process_span_starts_a_new_trace_linked_to_the_send_span,
            a_short_load_is_acked_and_every_message_completes_its_journey,
            a_burst_with_one_key_is_forwarded_to_the_sink_in_the_order_it_was_sent,
            every_service_logs_json_lines_carrying_the_messages_trace_id,
        ],
    )
}

fn tag<'a>(span: &'a Span, key: &str) -> Result<&'a str> {
    span.tag(key)
        .with_context(|| format!("span {:?} has no tag {key}: {:?}", span.name(), span.tags))
}

fn expect_tag(span: &Span, key: &str, value: &str) -> Result<()> {
    let got = tag(span, key)?;
    ensure!(
        got == value,
        "span {:?}: {key} = {got:?}, expected {value:?}",
        span.name()
    );
    Ok(())
}

fn expect_kind(span: &Span, kind: &str) -> Result<()> {
    ensure!(
        span.kind.as_deref() == Some(kind),
        "span {:?}: kind {:?}, expected {kind}",
        span.name(),
        span.kind
    );
    Ok(())
}

fn expect_parent(child: &Span, parent: &Span) -> Result<()> {
    ensure!(
        child.parent_id.as_deref() == Some(parent.id.as_str()),
        "span {:?} should be a child of {:?} ({}), its parent is {:?}",
        child.name(),
        parent.name(),
        parent.id,
        child.parent_id
    );
    Ok(())
}

/// The semconv attributes every Kafka span carries.
fn expect_messaging(span: &Span, op: &str, topic: &str, client: &str, port: &str) -> Result<()> {
    expect_tag(span, "messaging.system", "kafka")?;
    expect_tag(span, "messaging.destination.name", topic)?;
    expect_tag(span, "messaging.operation.type", op)?;
    expect_tag(span, "messaging.operation.name", op)?;
    expect_tag(span, "messaging.client.id", client)?;
    expect_tag(span, "server.address", "127.0.0.1")?;
    expect_tag(span, "server.port", port)?;
    ensure!(
        span.remote_service() == "kafka",
        "span {:?}: peer.service=kafka should make the remote service kafka, got {:?}",
        span.name(),
        span.remote_endpoint
    );
    ensure!(
        !span.tags.contains_key("error"),
        "span {:?} is marked as an error: {:?}",
        span.name(),
        span.tags
    );
    Ok(())
}

fn one_post_becomes_one_trace_from_the_http_request_through_the_relay_to_the_sink(
    j: &Journey,
) -> Result<()> {
    block_on(async {
        let key = format!("order-{}", rand::random::<u32>());
        let payload = json!({"hello": "journey"});
        let answer = post_json(&j.producer, &json!({"key": key, "payload": payload})).await?;
        let trace_id = answer.trace_id()?;
        let (partition, offset) = answer.position()?;
        let (partition, offset) = (partition.to_string(), offset.to_string());
        ensure!(
            answer.str("topic") == Some("messages"),
            "topic: {}",
            answer.body
        );
        let zipkin_url = answer
            .str("zipkin_url")
            .context("zipkin_url with ZIPKIN_UI_URL set")?;
        ensure!(
            zipkin_url.ends_with(&format!("/zipkin/traces/{trace_id}")),
            "zipkin_url {zipkin_url}"
        );

        let spans = j
            .zipkin()
            .wait_for_trace(&trace_id, TRACE_TIMEOUT, |s| has_spans(s, &JOURNEY_SPANS))
            .await?;
        say!("trace {trace_id}:{}", render_tree(&spans));

        let port = j
            .bootstrap()
            .rsplit_once(':')
            .map(|(_, p)| p)
            .unwrap_or_default()
            .to_string();
        let http = find_span(&spans, "post /messages", "producer")?;
        let send = find_span(&spans, "send messages", "producer")?;
        let process = find_span(&spans, "process messages", "relay")?;
        let forward = find_span(&spans, "send messages.processed", "relay")?;
        let sink = find_span(&spans, "process messages.processed", "sink")?;

        expect_kind(http, "SERVER")?;
        expect_kind(send, "PRODUCER")?;
        expect_kind(process, "CONSUMER")?;
        expect_kind(forward, "PRODUCER")?;
        expect_kind(sink, "CONSUMER")?;

        ensure!(
            http.parent_id.is_none(),
            "the HTTP span is the root: {:?}",
            http.parent_id
        );
        expect_parent(send, http)?;
        expect_parent(process, send)?;
        expect_parent(forward, process)?;
        expect_parent(sink, forward)?;

        expect_tag(http, "http.request.method", "POST")?;
        expect_tag(http, "http.route", "/messages")?;
        expect_tag(http, "http.response.status_code", "202")?;

        let body_size = serde_json::to_vec(&payload)?.len().to_string();
        expect_messaging(send, "send", "messages", "producer", &port)?;
        expect_tag(send, "messaging.kafka.message.key", &key)?;
        expect_tag(send, "messaging.destination.partition.id", &partition)?;
        expect_tag(send, "messaging.kafka.offset", &offset)?;
        expect_tag(send, "messaging.message.body.size", &body_size)?;

        expect_messaging(process, "process", "messages", "relay", &port)?;
        expect_tag(process, "messaging.consumer.group.name", "relay")?;
        expect_tag(process, "messaging.kafka.message.key", &key)?;
        expect_tag(process, "messaging.destination.partition.id", &partition)?;
        expect_tag(process, "messaging.kafka.offset", &offset)?;
        expect_tag(process, "messaging.message.body.size", &body_size)?;

        expect_messaging(forward, "send", "messages.processed", "relay", &port)?;
        expect_tag(forward, "messaging.kafka.message.key", &key)?;
        expect_messaging(sink, "process", "messages.processed", "sink", &port)?;
        expect_tag(sink, "messaging.consumer.group.name", "sink")?;
        expect_tag(sink, "messaging.kafka.message.key", &key)?;
        expect_tag(
            sink,
            "messaging.destination.partition.id",
            tag(forward, "messaging.destination.partition.id")?,
        )?;
        expect_tag(
            sink,
            "messaging.kafka.offset",
            tag(forward, "messaging.kafka.offset")?,
        )?;
        Ok(())
    })
}

fn the_dependency_graph_shows_producer_kafka_relay_kafka_sink(j: &Journey) -> Result<()> {
    block_on(async {
        let trace_id = post_json(&j.producer, &json!({"payload": "for the graph"}))
            .await?
            .trace_id()?;
        j.zipkin()
            .wait_for_trace(&trace_id, TRACE_TIMEOUT, |s| has_spans(s, &JOURNEY_SPANS))
            .await?;
        let wanted = [
            ("producer", "kafka"),
            ("kafka", "relay"),
            ("relay", "kafka"),
            ("kafka", "sink"),
        ];
        let mut links = Vec::new();
        for _ in 0..50 {
            links = j.zipkin().dependencies(Duration::from_secs(3600)).await?;
            if wanted
                .iter()
                .all(|(p, c)| links.iter().any(|l| l.parent == *p && l.child == *c))
            {
                say!("dependency links: {links:?}");
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        anyhow::bail!("dependency links {links:?} lack some of {wanted:?}")
    })
}

fn a_callers_traceparent_is_continued_and_the_traceresponse_matches_zipkin(
    j: &Journey,
) -> Result<()> {
    block_on(async {
        let trace_id = format!("{:032x}", rand::random::<u128>() | 1);
        let caller_span = format!("{:016x}", rand::random::<u64>() | 1);
        let traceparent = format!("00-{trace_id}-{caller_span}-01");
        let answer = post(
            &format!("{}/messages", j.producer.url()),
            Some("application/json"),
            serde_json::to_vec(&json!({"payload": {"from": "a caller"}}))?,
            &[("traceparent", traceparent.as_str())],
        )
        .await?;
        ensure!(
            answer.trace_id()? == trace_id,
            "the answer's trace_id should be the caller's: {}",
            answer.body
        );
        let traceresponse = answer
            .header("traceresponse")
            .context("no traceresponse header")?
            .to_string();
        let parts: Vec<&str> = traceresponse.split('-').collect();
        ensure!(
            parts.len() == 4 && parts[0] == "00" && parts[1] == trace_id && parts[3] == "01",
            "traceresponse {traceresponse:?} for trace {trace_id}"
        );
        let spans = j
            .zipkin()
            .wait_for_trace(&trace_id, TRACE_TIMEOUT, |s| has_spans(s, &JOURNEY_SPANS))
            .await?;
        let http = find_span(&spans, "post /messages", "producer")?;
        ensure!(
            http.parent_id.as_deref() == Some(caller_span.as_str()),
            "the HTTP span's parent should be the caller's span {caller_span}, got {:?}",
            http.parent_id
        );
        ensure!(
            parts[2] == http.id,
            "traceresponse names span {}, Zipkin's HTTP span is {}",
            parts[2],
            http.id
        );
        Ok(())
    })
}

fn in_link_mode_the_process_span_starts_a_new_trace_linked_to_the_send_span(
    j: &Journey,
) -> Result<()> {
    block_on(async {
        let _link_relay = Service::consumer(
            &j.stack,
            "relay",
            "relay-link",
            &[
                ("TRACE_MODE", "link"),
                ("KAFKA_GROUP_ID", "relay-link"),
                ("PROCESS_DELAY_MS", "0"),
            ],
        )
        .await?;
        let answer = post_json(&j.producer, &json!({"payload": "linked"})).await?;
        let trace_id = answer.trace_id()?;
        let original = j
            .zipkin()
            .wait_for_trace(&trace_id, TRACE_TIMEOUT, |s| {
                has_spans(s, &["send messages"])
            })
            .await?;
        let send = find_span(&original, "send messages", "producer")?.clone();
        // The link relay's process span lives in its own trace and carries the link as tags.
        let mut found: Option<Span> = None;
        let mut seen: Vec<Span> = Vec::new();
        for _ in 0..150 {
            let traces = j
                .zipkin()
                .traces(&[
                    ("serviceName", "relay-link"),
                    ("spanName", "process messages"),
                    ("limit", "1000"),
                ])
                .await?;
            seen = traces
                .iter()
                .flatten()
                .filter(|s| s.service() == "relay-link")
                .cloned()
                .collect();
            found = traces.into_iter().flatten().find(|s| {
                s.name().eq_ignore_ascii_case("process messages")
                    && s.tags
                        .iter()
                        .any(|(k, v)| k.starts_with("otlp.link") && v.contains(&trace_id))
            });
            if found.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let process = found.with_context(|| {
            format!(
                "no relay-link process span linked to the producer's trace {trace_id}; relay-link spans: {:?}",
                seen.iter().map(|s| (s.name(), &s.tags)).collect::<Vec<_>>()
            )
        })?;
        say!(
            "link-mode process span: trace {} tags {:?}",
            process.trace_id,
            process.tags
        );
        ensure!(
            process.trace_id != trace_id,
            "link mode must start a new trace"
        );
        ensure!(
            process.parent_id.is_none(),
            "link mode process span is a root: {:?}",
            process.parent_id
        );
        expect_kind(&process, "CONSUMER")?;
        ensure!(
            process
                .tags
                .iter()
                .any(|(k, v)| k.starts_with("otlp.link") && v.contains(&send.id)),
            "the link should name the send span {}: {:?}",
            send.id,
            process.tags
        );
        Ok(())
    })
}

/// Messages in the short load, and concurrent HTTP clients sending them.
const LOAD: usize = 200;
const CLIENTS: usize = 16;

fn a_short_load_is_acked_and_every_message_completes_its_journey(j: &Journey) -> Result<()> {
    block_on(async {
        let url = format!("{}/messages", j.producer.url());
        let started = std::time::Instant::now();
        let mut clients = tokio::task::JoinSet::new();
        for c in 0..CLIENTS {
            let url = url.clone();
            clients.spawn(async move {
                let http = reqwest::Client::new();
                let mut ids = Vec::new();
                for i in (c..LOAD).step_by(CLIENTS) {
                    let resp = http
                        .post(&url)
                        .json(&json!({"key": format!("load-{i}"), "payload": {"i": i}}))
                        .send()
                        .await?;
                    let status = resp.status();
                    let body: serde_json::Value = resp.json().await?;
                    ensure!(status == 202, "POST {i}: {status} {body}");
                    ids.push(body["trace_id"].as_str().unwrap_or_default().to_string());
                }
                Ok::<_, anyhow::Error>(ids)
            });
        }
        let mut ids = Vec::new();
        while let Some(r) = clients.join_next().await {
            ids.extend(r??);
        }
        let acked = started.elapsed();
        let zipkin = j.zipkin();
        for id in &ids {
            zipkin
                .wait_for_trace(id, TRACE_TIMEOUT, |s| has_spans(s, &JOURNEY_SPANS))
                .await?;
        }
        let done = started.elapsed();
        say!(
            "load: {LOAD} POSTs from {CLIENTS} clients acked in {acked:.2?} ({:.0} msg/s); all {LOAD} journeys complete in Zipkin after {done:.2?} ({:.0} msg/s end to end)",
            LOAD as f64 / acked.as_secs_f64(),
            LOAD as f64 / done.as_secs_f64()
        );
        Ok(())
    })
}

/// Messages in the one-key burst.
const BURST: usize = 40;

/// The relay works on partitions concurrently, but one partition (one key) strictly in order:
/// the burst reaches `messages.processed`, the sink's input, in the order it was sent.
fn a_burst_with_one_key_is_forwarded_to_the_sink_in_the_order_it_was_sent(
    j: &Journey,
) -> Result<()> {
    let bootstrap = j.bootstrap().to_string();
    let before = end_offsets(&bootstrap, "messages.processed")?;
    let key = format!("ordered-{}", rand::random::<u32>());
    block_on(async {
        // Acked one after another, so the input partition holds them in this order; the relay
        // gets them faster than its simulated work, so they queue up there.
        for i in 0..BURST {
            let answer = post_json(&j.producer, &json!({"key": key, "payload": {"i": i}})).await?;
            ensure!(answer.status == 202, "POST {i}: {}", answer.body);
        }
        Ok(())
    })?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let seen: Vec<i64> = loop {
        let records = read_from(
            &bootstrap,
            "messages.processed",
            &before,
            Duration::from_secs(5),
        )?;
        let mut mine: Vec<(i32, i64, i64)> = records
            .iter()
            .filter(|r| r.key() == Some(key.as_bytes()))
            .map(|r| {
                let payload: serde_json::Value =
                    serde_json::from_slice(r.payload().unwrap_or_default())?;
                let i = payload["i"].as_i64().context("payload without i")?;
                Ok((r.partition(), r.offset(), i))
            })
            .collect::<Result<_>>()?;
        mine.sort();
        if mine.len() >= BURST || std::time::Instant::now() > deadline {
            let partitions: std::collections::BTreeSet<i32> =
                mine.iter().map(|(p, _, _)| *p).collect();
            ensure!(
                partitions.len() <= 1,
                "one key, one partition: {partitions:?}"
            );
            break mine.into_iter().map(|(_, _, i)| i).collect();
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let sent: Vec<i64> = (0..BURST as i64).collect();
    say!("{BURST} records of key {key} in messages.processed, in offset order: {seen:?}");
    ensure!(
        seen == sent,
        "messages.processed holds key {key} in the order {seen:?}, sent {sent:?}"
    );
    Ok(())
}

fn every_service_logs_json_lines_carrying_the_messages_trace_id(j: &Journey) -> Result<()> {
    block_on(async {
        let answer = post_json(&j.producer, &json!({"payload": {"log": "me"}})).await?;
        let trace_id = answer.trace_id()?;
        j.zipkin()
            .wait_for_trace(&trace_id, TRACE_TIMEOUT, |s| has_spans(s, &JOURNEY_SPANS))
            .await?;
        // Each service logged while handling this message, inside its spans: those JSON lines
        // carry the trace id (and a span id), so logs and the trace join up.
        for service in ["producer", "relay", "sink"] {
            let log = j.stack.logs_dir().join(format!("{service}.log"));
            let text = std::fs::read_to_string(&log)
                .with_context(|| format!("reading {}", log.display()))?;
            let lines: Vec<serde_json::Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .filter(|v: &serde_json::Value| v["trace_id"] == trace_id.as_str())
                .collect();
            ensure!(
                !lines.is_empty(),
                "{service}: no JSON log line carries trace_id {trace_id}"
            );
            ensure!(
                lines
                    .iter()
                    .all(|v| v["span_id"].as_str().is_some_and(|s| s.len() == 16)),
                "{service}: a line with the trace id lacks a span id: {lines:?}"
            );
        }
        Ok(())
    })
}

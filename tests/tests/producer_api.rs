//! The producer's HTTP API: what it accepts (and acks only after Kafka did), what it refuses
//! (never reaching Kafka), and how it fails when Kafka is unreachable.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use journey_tests::process::free_port;
use journey_tests::runner::{self, block_on};
use journey_tests::services::{Answer, Service, base_env, bin, end_offsets, post, read_from};
use journey_tests::stack::Stack;
use journey_tests::{say, tests};
use rdkafka::Message as _;
use serde_json::{Value, json};

/// The fixture: the stack with seeded topics and one producer (no consumers needed).
#[derive(Debug)]
struct Api {
    producer: Service,
    stack: Stack,
}

impl journey_tests::runner::Fixture for Api {
    fn logs_dirs(&self) -> Vec<std::path::PathBuf> {
        vec![self.stack.logs_dir()]
    }
}

const MAX_BODY: usize = 4096;

fn main() -> std::process::ExitCode {
    runner::main(
        || {
            block_on(async {
                let stack = Stack::start().await?;
                journey_tests::services::seed_topics(&stack).await?;
                let max = MAX_BODY.to_string();
                let producer = Service::producer(
                    &stack,
                    "producer",
                    &[
                        ("MAX_BODY_BYTES", max.as_str()),
                        ("ZIPKIN_UI_URL", "http://zipkin.example/zipkin/"),
                    ],
                )
                .await?;
                Ok(Api { producer, stack })
            })
        },
        tests![
            a_json_message_is_acked_with_topic_partition_offset_trace_id_and_a_traceresponse,
            a_text_plain_message_is_acked_and_stored_as_is,
            a_batch_is_acked_as_one_trace_with_one_offset_per_message,
            bad_input_gets_its_status_and_a_json_reason_and_nothing_reaches_kafka,
            health_and_readiness_answer_while_kafka_is_reachable,
            a_body_within_the_limit_but_larger_than_kafka_accepts_gets_413_and_is_not_written,
            requests_over_a_limit_are_refused_at_once_with_their_reason_and_reach_nothing,
            slow_and_idle_connections_are_closed_and_connections_over_the_limit_wait,
            unknown_paths_methods_and_oversized_headers_get_404_405_and_431_in_the_json_error_shape,
            an_unreachable_kafka_gets_503_within_the_bound_and_past_the_stall_limit_fails_liveness,
            a_sink_whose_readiness_keeps_failing_past_the_stall_limit_fails_liveness,
            print_config_shows_the_resolved_config_and_every_accepted_variable,
            spans_also_reach_zipkin_over_otlp_http_protobuf,
        ],
    )
}

fn url(api: &Api, path: &str) -> String {
    format!("{}{path}", api.producer.url())
}

/// Reads `topic` from `before` and returns the record at `partition`/`offset`.
fn record_at(
    api: &Api,
    before: &[(i32, i64)],
    partition: i64,
    offset: i64,
) -> Result<rdkafka::message::OwnedMessage> {
    let records = read_from(
        api.stack.kafka.bootstrap(),
        "messages",
        before,
        Duration::from_secs(10),
    )?;
    records
        .into_iter()
        .find(|r| i64::from(r.partition()) == partition && r.offset() == offset)
        .with_context(|| format!("no record at {partition}@{offset}"))
}

fn a_json_message_is_acked_with_topic_partition_offset_trace_id_and_a_traceresponse(
    api: &Api,
) -> Result<()> {
    let before = end_offsets(api.stack.kafka.bootstrap(), "messages")?;
    let a = block_on(post(
        &url(api, "/messages"),
        Some("application/json"),
        br#"{"key": "k-json", "payload": {"n": 1, "s": "x"}}"#.to_vec(),
        &[],
    ))?;
    let trace_id = a.trace_id()?;
    ensure!(
        trace_id.len() == 32 && trace_id.chars().all(|c| c.is_ascii_hexdigit()),
        "trace id {trace_id}"
    );
    ensure!(a.str("topic") == Some("messages"), "{}", a.body);
    let (partition, offset) = a.position()?;
    ensure!(
        a.str("zipkin_url")
            == Some(format!("http://zipkin.example/zipkin/traces/{trace_id}").as_str()),
        "{}",
        a.body
    );
    let tr = a.header("traceresponse").context("traceresponse header")?;
    ensure!(
        tr.starts_with(&format!("00-{trace_id}-")) && tr.len() == 55,
        "traceresponse {tr}"
    );
    let record = record_at(api, &before, partition, offset)?;
    ensure!(record.key() == Some(&b"k-json"[..]), "key");
    let value: Value = serde_json::from_slice(record.payload().unwrap_or_default())?;
    ensure!(
        value == json!({"n": 1, "s": "x"}),
        "the payload is stored as JSON: {value}"
    );
    let tp =
        journey_tests::services::header(&record, "traceparent").context("traceparent header")?;
    ensure!(tp.contains(&trace_id), "the record carries the trace: {tp}");
    Ok(())
}

fn a_text_plain_message_is_acked_and_stored_as_is(api: &Api) -> Result<()> {
    let before = end_offsets(api.stack.kafka.bootstrap(), "messages")?;
    let a = block_on(post(
        &url(api, "/messages"),
        Some("text/plain; charset=utf-8"),
        b"plain words".to_vec(),
        &[],
    ))?;
    a.trace_id()?;
    let (partition, offset) = a.position()?;
    let record = record_at(api, &before, partition, offset)?;
    ensure!(
        record.payload() == Some(&b"plain words"[..]),
        "payload {:?}",
        record.payload()
    );
    ensure!(record.key().is_none(), "no key");
    Ok(())
}

fn a_batch_is_acked_as_one_trace_with_one_offset_per_message(api: &Api) -> Result<()> {
    let a = block_on(post(
        &url(api, "/messages/batch"),
        Some("application/json"),
        serde_json::to_vec(
            &json!([{"key": "b1", "payload": 1}, {"payload": [2]}, {"key": "b3", "payload": {"three": 3}}]),
        )?,
        &[],
    ))?;
    let trace_id = a.trace_id()?;
    ensure!(a.body["count"] == 3, "{}", a.body);
    let messages = a.body["messages"].as_array().context("messages")?;
    ensure!(messages.len() == 3, "{}", a.body);
    for m in messages {
        ensure!(
            m["topic"] == "messages" && m["partition"].is_i64() && m["offset"].is_i64(),
            "{m}"
        );
    }
    ensure!(
        a.header("traceresponse")
            .is_some_and(|t| t.contains(&trace_id)),
        "traceresponse"
    );
    Ok(())
}

fn bad_input_gets_its_status_and_a_json_reason_and_nothing_reaches_kafka(api: &Api) -> Result<()> {
    let bootstrap = api.stack.kafka.bootstrap().to_string();
    let before = end_offsets(&bootstrap, "messages")?;
    let marker = format!("bad-input-{}", rand::random::<u64>());
    let big = format!(r#"{{"payload": "{marker}{}"}}"#, "x".repeat(MAX_BODY));
    // (what, content type, body, status, error)
    type Case<'a> = (&'a str, Option<&'a str>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "malformed JSON",
            Some("application/json"),
            format!(r#"{{"payload": "{marker}""#).into_bytes(),
            400,
            "malformed_json",
        ),
        (
            "no payload",
            Some("application/json"),
            format!(r#"{{"key": "{marker}"}}"#).into_bytes(),
            400,
            "invalid_message",
        ),
        (
            "empty body",
            Some("application/json"),
            Vec::new(),
            400,
            "empty_body",
        ),
        (
            "empty text",
            Some("text/plain"),
            Vec::new(),
            400,
            "empty_body",
        ),
        (
            "wrong content type",
            Some("application/xml"),
            format!("<p>{marker}</p>").into_bytes(),
            415,
            "unsupported_media_type",
        ),
        (
            "no content type",
            None,
            format!(r#"{{"payload": "{marker}"}}"#).into_bytes(),
            415,
            "unsupported_media_type",
        ),
        (
            "body over the limit",
            Some("application/json"),
            big.into_bytes(),
            413,
            "payload_too_large",
        ),
        (
            "text batch",
            Some("text/plain"),
            marker.clone().into_bytes(),
            415,
            "unsupported_media_type",
        ),
        (
            "empty batch",
            Some("application/json"),
            b"[]".to_vec(),
            400,
            "empty_batch",
        ),
        (
            "batch with a bad item",
            Some("application/json"),
            format!(r#"[{{"payload": "{marker}"}}, {{"key": "x"}}]"#).into_bytes(),
            400,
            "invalid_message",
        ),
    ];
    block_on(async {
        for (what, ct, body, status, error) in cases {
            let path = if what.contains("batch") {
                "/messages/batch"
            } else {
                "/messages"
            };
            let a: Answer = post(&url(api, path), ct, body, &[]).await?;
            ensure!(
                a.status == status,
                "{what}: status {} (expected {status}): {}",
                a.status,
                a.body
            );
            ensure!(
                a.str("error") == Some(error),
                "{what}: error {:?} (expected {error})",
                a.body
            );
            ensure!(
                a.str("reason").is_some_and(|r| !r.is_empty()),
                "{what}: a JSON reason is required: {}",
                a.body
            );
            ensure!(
                a.header("content-type")
                    .is_some_and(|c| c.starts_with("application/json")),
                "{what}: JSON content type"
            );
        }
        Ok::<_, anyhow::Error>(())
    })?;
    // A good message with the marker afterwards: once it is readable, nothing else with the
    // marker (nor any empty record) may be there.
    let good = block_on(post(
        &url(api, "/messages"),
        Some("text/plain"),
        format!("good {marker}").into_bytes(),
        &[],
    ))?;
    good.trace_id()?;
    let records = read_from(&bootstrap, "messages", &before, Duration::from_secs(10))?;
    let marked: Vec<String> = records
        .iter()
        .filter_map(|r| r.payload().map(|p| String::from_utf8_lossy(p).into_owned()))
        .filter(|p| p.contains(&marker) || p.is_empty())
        .collect();
    ensure!(
        marked.len() == 1 && marked[0] == format!("good {marker}"),
        "only the good message may reach Kafka, found {} marked records",
        marked.len()
    );
    Ok(())
}

fn health_and_readiness_answer_while_kafka_is_reachable(api: &Api) -> Result<()> {
    block_on(async {
        for path in ["/healthz", "/readyz"] {
            let r = reqwest::get(url(api, path)).await?;
            ensure!(r.status() == 200, "{path}: {}", r.status());
            let body: Value = r.json().await?;
            ensure!(body["status"].is_string(), "{path}: {body}");
        }
        Ok(())
    })
}

fn unknown_paths_methods_and_oversized_headers_get_404_405_and_431_in_the_json_error_shape(
    api: &Api,
) -> Result<()> {
    block_on(async {
        let http = reqwest::Client::new();
        for (method, path, status, error, allow) in [
            (reqwest::Method::GET, "/nowhere", 404, "not_found", None),
            (reqwest::Method::POST, "/message", 404, "not_found", None),
            (
                reqwest::Method::GET,
                "/messages",
                405,
                "method_not_allowed",
                Some("POST"),
            ),
            (
                reqwest::Method::DELETE,
                "/healthz",
                405,
                "method_not_allowed",
                Some("GET,HEAD"),
            ),
        ] {
            let r = http.request(method.clone(), url(api, path)).send().await?;
            let got = r.status().as_u16();
            let allowed = r
                .headers()
                .get("allow")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body: Value = r
                .json()
                .await
                .with_context(|| format!("{method} {path}: JSON body"))?;
            ensure!(
                got == status && body["error"] == error && body["reason"].is_string(),
                "{method} {path}: {got} {body}"
            );
            ensure!(
                allowed.as_deref() == allow,
                "{method} {path}: Allow {allowed:?}"
            );
        }
        // Headers over MAX_HEADER_BYTES (16 KiB): 431, in the same shape, nothing sent.
        let r = http
            .post(url(api, "/messages"))
            .header("content-type", "text/plain")
            .header("x-padding", "p".repeat(20_000))
            .body("never sent")
            .send()
            .await?;
        let got = r.status().as_u16();
        let body: Value = r.json().await.context("431: JSON body")?;
        ensure!(
            got == 431 && body["error"] == "header_fields_too_large" && body["reason"].is_string(),
            "a 20,000-byte header: {got} {body}"
        );
        Ok(())
    })
}

fn a_body_within_the_limit_but_larger_than_kafka_accepts_gets_413_and_is_not_written(
    api: &Api,
) -> Result<()> {
    // The producer's default body limit (1 MiB) is above the Kafka client's default record
    // limit (message.max.bytes, 1,000,000 bytes): a body in between is refused by Kafka, for
    // good, so it is a 413 (a retry cannot help), not a 503.
    let bootstrap = api.stack.kafka.bootstrap().to_string();
    let before = end_offsets(&bootstrap, "messages")?;
    let marker = format!("too-large-{}", rand::random::<u64>());
    let port = free_port();
    let mut env = base_env(&api.stack, "producer-large", port);
    env.insert("MAX_BODY_BYTES".into(), "1048576".into());
    let mut producer = Service::spawn(&api.stack, "producer-large", "producer", env)?;
    block_on(async {
        producer.wait_for("/readyz").await?;
        let body = format!("{marker}{}", "x".repeat(1_000_100)).into_bytes();
        let a = post(
            &format!("{}/messages", producer.url()),
            Some("text/plain"),
            body,
            &[],
        )
        .await?;
        ensure!(
            a.status == 413 && a.str("error") == Some("payload_too_large"),
            "a 1,000,100-byte record: {} {}",
            a.status,
            a.body
        );
        let good = post(
            &format!("{}/messages", producer.url()),
            Some("text/plain"),
            format!("good {marker}").into_bytes(),
            &[],
        )
        .await?;
        good.trace_id()?;
        // In a batch, the other messages are still acked, and the answer says which.
        let batch = json!([
            {"payload": format!("batch {marker}")},
            {"payload": format!("{marker}{}", "x".repeat(1_000_100))},
        ]);
        let a = post(
            &format!("{}/messages/batch", producer.url()),
            Some("application/json"),
            serde_json::to_vec(&batch)?,
            &[],
        )
        .await?;
        say!("a batch with one record too large: {} {}", a.status, {
            let mut short = a.body.clone();
            short["messages"][1]["reason"] = "…".into();
            short
        });
        ensure!(
            a.status == 207 && a.body["acked"] == 1 && a.body["failed"] == 1,
            "{} {}",
            a.status,
            a.body
        );
        let items = &a.body["messages"];
        ensure!(
            items[0]["status"] == "acked" && items[0]["index"] == 0 && items[0]["offset"].is_i64(),
            "{items}"
        );
        ensure!(
            items[1]["status"] == "failed"
                && items[1]["index"] == 1
                && items[1]["error"] == "payload_too_large",
            "{}",
            items[1]["error"]
        );
        Ok::<_, anyhow::Error>(())
    })?;
    let records = read_from(&bootstrap, "messages", &before, Duration::from_secs(10))?;
    // Sorted: the two records may be on different partitions, read in partition order.
    let mut marked: Vec<usize> = records
        .iter()
        .filter_map(|r| r.payload())
        .filter(|p| String::from_utf8_lossy(p).contains(&marker))
        .map(<[u8]>::len)
        .collect();
    marked.sort_unstable();
    // The batch's payload is JSON: a string, quoted.
    let mut expected = [
        format!("good {marker}").len(),
        format!("\"batch {marker}\"").len(),
    ];
    expected.sort_unstable();
    ensure!(
        marked == expected,
        "only the good messages may reach Kafka; marked record sizes: {marked:?}"
    );
    Ok(())
}

/// Sends the start of a request whose body never comes in full; returns the connection.
async fn slow_upload(addr: &str) -> Result<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt as _;
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    conn.write_all(
        b"POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\nslow",
    )
    .await?;
    Ok(conn)
}

/// Reads one HTTP answer off `conn`: status and JSON body.
async fn answer_of(conn: &mut tokio::net::TcpStream) -> Result<(u16, Value)> {
    use tokio::io::AsyncReadExt as _;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut raw))
        .await
        .context("no answer within 10s")??;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP answer: {text:?}"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// A client can make the producer hold only so much: batch items, requests in progress, time
/// for a body; two Content-Type headers are refused rather than guessed.
fn requests_over_a_limit_are_refused_at_once_with_their_reason_and_reach_nothing(
    api: &Api,
) -> Result<()> {
    let bootstrap = api.stack.kafka.bootstrap().to_string();
    let before = end_offsets(&bootstrap, "messages")?;
    let marker = format!("limits-{}", rand::random::<u64>());
    let port = free_port();
    let mut env = base_env(&api.stack, "producer-limits", port);
    env.insert("MAX_BATCH_ITEMS".into(), "2".into());
    env.insert("MAX_CONCURRENT_REQUESTS".into(), "2".into());
    env.insert("REQUEST_BODY_TIMEOUT".into(), "2s".into());
    // Bodies larger than the loopback's socket buffers take (below).
    env.insert("MAX_BODY_BYTES".into(), (32 << 20).to_string());
    let mut producer = Service::spawn(&api.stack, "producer-limits", "producer", env)?;
    let addr = format!("127.0.0.1:{port}");
    block_on(async {
        producer.wait_for("/readyz").await?;
        let messages = format!("{}/messages", producer.url());
        let items = json!([{"payload": &marker}, {"payload": &marker}, {"payload": &marker}]);
        let a = post(
            &format!("{messages}/batch"),
            Some("application/json"),
            serde_json::to_vec(&items)?,
            &[],
        )
        .await?;
        ensure!(
            a.status == 413 && a.str("error") == Some("too_many_messages"),
            "3 items, MAX_BATCH_ITEMS=2: {} {}",
            a.status,
            a.body
        );
        let a = post(
            &messages,
            Some("application/json"),
            format!(r#"{{"payload": "{marker}"}}"#).into_bytes(),
            &[("content-type", "text/plain")],
        )
        .await?;
        ensure!(
            a.status == 415
                && a.str("reason")
                    .is_some_and(|r| r.contains("2 Content-Type")),
            "two content types: {} {}",
            a.status,
            a.body
        );
        // Two uploads that never finish take both slots: a third request is refused at once.
        let started = Instant::now();
        let mut slow = [slow_upload(&addr).await?, slow_upload(&addr).await?];
        tokio::time::sleep(Duration::from_millis(300)).await;
        let a = post(
            &messages,
            Some("text/plain"),
            marker.clone().into_bytes(),
            &[],
        )
        .await?;
        ensure!(
            a.status == 503
                && a.str("error") == Some("overloaded")
                && a.header("retry-after") == Some("1"),
            "a third request with MAX_CONCURRENT_REQUESTS=2: {} {}",
            a.status,
            a.body
        );
        // A refused upload larger than the socket buffers hold reads its 503, not a
        // connection reset while it is still sending (several at once, as an overloaded
        // client sends them).
        let large = serde_json::to_vec(&json!({"payload": "z".repeat(16 << 20)}))?;
        let refused = (0..4).map(|_| post(&messages, Some("application/json"), large.clone(), &[]));
        for a in futures::future::join_all(refused).await {
            let a = a.context("a refused 16 MiB upload must be answered, not reset")?;
            ensure!(
                a.status == 503 && a.str("error") == Some("overloaded"),
                "a refused 16 MiB upload: {} {}",
                a.status,
                a.body
            );
        }
        // Each slow upload is answered 408 once REQUEST_BODY_TIMEOUT has passed.
        for conn in &mut slow {
            let (status, body) = answer_of(conn).await?;
            ensure!(
                status == 408 && body["error"] == "request_timeout",
                "a slow upload: {status} {body}"
            );
        }
        let took = started.elapsed();
        say!("slow uploads answered 408 after {took:.1?} (REQUEST_BODY_TIMEOUT=2s)");
        ensure!(took < Duration::from_secs(5), "took {took:?}");
        // The slots are free again.
        let a = post(
            &messages,
            Some("text/plain"),
            format!("after {marker}").into_bytes(),
            &[],
        )
        .await?;
        ensure!(
            a.status == 202,
            "after the slow uploads: {} {}",
            a.status,
            a.body
        );
        Ok::<_, anyhow::Error>(())
    })?;
    let records = read_from(&bootstrap, "messages", &before, Duration::from_secs(10))?;
    let marked: Vec<String> = records
        .iter()
        .filter_map(|r| r.payload())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .filter(|p| p.contains(&marker))
        .collect();
    ensure!(
        marked == [format!("after {marker}")],
        "only the last message may reach Kafka: {marked:?}"
    );
    Ok(())
}

/// Reads `conn` to its end (the server closing it), at most `limit`: what arrived and when.
async fn read_until_closed(
    conn: &mut tokio::net::TcpStream,
    limit: Duration,
) -> Result<(String, Duration)> {
    use tokio::io::AsyncReadExt as _;
    let started = Instant::now();
    let mut raw = Vec::new();
    tokio::time::timeout(limit, conn.read_to_end(&mut raw))
        .await
        .with_context(|| format!("the producer kept the connection open for {limit:?}"))??;
    Ok((
        String::from_utf8_lossy(&raw).into_owned(),
        started.elapsed(),
    ))
}

/// Connections cannot pile up: a head sent a byte at a time and an idle keep-alive connection
/// are closed after `HEADER_READ_TIMEOUT`, and past `MAX_CONNECTIONS` a new connection waits
/// until one closes.
fn slow_and_idle_connections_are_closed_and_connections_over_the_limit_wait(
    api: &Api,
) -> Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let port = free_port();
    let mut env = base_env(&api.stack, "producer-connections", port);
    env.insert("HEADER_READ_TIMEOUT".into(), "1s".into());
    env.insert("MAX_CONNECTIONS".into(), "2".into());
    let mut producer = Service::spawn(&api.stack, "producer-connections", "producer", env)?;
    let addr = format!("127.0.0.1:{port}");
    block_on(async {
        producer.wait_for("/healthz").await?;
        // Give the probe's connection time to close (it went idle: 1 s).
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let healthz = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        // Two connections that never finish their head hold both slots: one sends part of
        // it, one sends nothing.
        let mut slow = Vec::new();
        for part in [&b"GET /healthz HTTP/1.1\r\nHost: x\r\n"[..], b""] {
            let mut conn = tokio::net::TcpStream::connect(&addr).await?;
            conn.write_all(part).await?;
            slow.push(conn);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // A third connection is not served until one of them is closed.
        let mut waiting = tokio::net::TcpStream::connect(&addr).await?;
        waiting.write_all(healthz).await?;
        let started = Instant::now();
        for conn in &mut slow {
            let (got, took) = read_until_closed(conn, Duration::from_secs(5)).await?;
            say!(
                "a head not sent in full: closed after {took:.1?} ({} bytes answered)",
                got.len()
            );
            ensure!(
                !got.contains("200 OK"),
                "an incomplete head was answered: {got:?}"
            );
        }
        let (got, _) = read_until_closed(&mut waiting, Duration::from_secs(5)).await?;
        let waited = started.elapsed();
        say!("the connection over MAX_CONNECTIONS=2 was answered after {waited:.1?}");
        ensure!(
            got.starts_with("HTTP/1.1 200") && waited >= Duration::from_millis(700),
            "over the limit, served after {waited:?} (the slow ones hold the slots for 1 s): {got:?}"
        );
        // An answered keep-alive connection left idle is closed too.
        let mut idle = tokio::net::TcpStream::connect(&addr).await?;
        idle.write_all(healthz).await?;
        let (got, took) = read_until_closed(&mut idle, Duration::from_secs(5)).await?;
        say!("an idle keep-alive connection: closed {took:.1?} after its request");
        ensure!(
            got.starts_with("HTTP/1.1 200") && took >= Duration::from_millis(700),
            "idle connection: closed after {took:?}: {got:?}"
        );
        Ok::<_, anyhow::Error>(())
    })
}

fn an_unreachable_kafka_gets_503_within_the_bound_and_past_the_stall_limit_fails_liveness(
    api: &Api,
) -> Result<()> {
    block_on(async {
        let port = free_port();
        let mut env = base_env(&api.stack, "producer-nokafka", port);
        env.insert(
            "KAFKA_BOOTSTRAP_SERVERS".into(),
            format!("127.0.0.1:{}", free_port()),
        );
        env.insert("KAFKA_MESSAGE_TIMEOUT_MS".into(), "1500".into());
        env.insert("KAFKA_STALL_TIMEOUT".into(), "2s".into());
        let mut producer = Service::spawn(&api.stack, "producer-nokafka", "producer", env)?;
        producer.wait_for("/healthz").await?;
        let started = Instant::now();
        let a = post(
            &format!("{}/messages", producer.url()),
            Some("application/json"),
            br#"{"payload": "nowhere to go"}"#.to_vec(),
            &[],
        )
        .await?;
        let took = started.elapsed();
        say!("503 after {took:?}: {}", a.body);
        ensure!(a.status == 503, "status {}: {}", a.status, a.body);
        ensure!(a.str("error") == Some("kafka_unavailable"), "{}", a.body);
        ensure!(
            a.str("reason").is_some_and(|r| r.contains("1500")),
            "the reason names the bound: {}",
            a.body
        );
        ensure!(took < Duration::from_secs(6), "bounded: took {took:?}");
        // One timed-out message is no reason to restart yet; messages timing out, none acked,
        // for longer than KAFKA_STALL_TIMEOUT are: /healthz fails and the kubelet restarts the
        // container with a new Kafka client.
        let live = reqwest::get(format!("{}/healthz", producer.url())).await?;
        ensure!(
            live.status() == 200,
            "healthz right after one timeout: {}",
            live.status()
        );
        let ready = reqwest::get(format!("{}/readyz", producer.url())).await?;
        ensure!(
            ready.status() == 503,
            "readyz without Kafka: {}",
            ready.status()
        );
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let live = reqwest::get(format!("{}/healthz", producer.url())).await?;
        let status = live.status();
        let body: Value = live.json().await?;
        ensure!(
            status == 503 && body["error"] == "wedged",
            "healthz after 2.5s of timeouts (KAFKA_STALL_TIMEOUT=2s): {status} {body}"
        );
        ensure!(
            body["reason"]
                .as_str()
                .is_some_and(|r| r.contains("no message acked") && r.ends_with(", 1 timed out")),
            "{body}"
        );
        Ok(())
    })
}

/// The wedge the real node showed: a sink with no assignment whose metadata requests kept
/// failing long after Kafka was back. Nothing is assigned, so no partition stalls; readiness
/// failing at every probe for longer than KAFKA_STALL_TIMEOUT is what fails liveness.
fn a_sink_whose_readiness_keeps_failing_past_the_stall_limit_fails_liveness(
    api: &Api,
) -> Result<()> {
    block_on(async {
        let port = free_port();
        let mut env = base_env(&api.stack, "sink-nokafka", port);
        env.insert("ROLE".into(), "sink".into());
        env.insert(
            "KAFKA_BOOTSTRAP_SERVERS".into(),
            format!("127.0.0.1:{}", free_port()),
        );
        env.insert("KAFKA_STALL_TIMEOUT".into(), "2s".into());
        let mut sink = Service::spawn(&api.stack, "sink-nokafka", "consumer", env)?;
        sink.wait_for("/healthz").await?;
        let get = |path: &'static str| {
            let url = format!("{}{path}", sink.url());
            async move {
                let res = reqwest::get(url).await?;
                let status = res.status().as_u16();
                Ok::<_, anyhow::Error>((status, res.json::<Value>().await?))
            }
        };
        let started = Instant::now();
        let (status, body) = get("/readyz").await?;
        ensure!(
            status == 503 && body["error"] == "not_ready",
            "readyz without Kafka: {status} {body}"
        );
        let (status, body) = get("/healthz").await?;
        ensure!(
            status == 200 || started.elapsed() > Duration::from_secs(2),
            "healthz within the stall limit: {status} {body}"
        );
        // The kubelet probes readiness every few seconds; so does this test, past the limit.
        while started.elapsed() < Duration::from_millis(2500) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (status, body) = get("/readyz").await?;
            ensure!(status == 503, "readyz without Kafka: {status} {body}");
        }
        let (status, body) = get("/healthz").await?;
        say!(
            "sink healthz after {:?}: {status} {body}",
            started.elapsed()
        );
        ensure!(
            status == 503 && body["error"] == "wedged",
            "healthz after 2.5s of failed readiness (KAFKA_STALL_TIMEOUT=2s): {status} {body}"
        );
        ensure!(
            body["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("not ready for ") && r.contains("Kafka metadata")),
            "the reason says how long and why: {body}"
        );
        Ok(())
    })
}

fn print_config_shows_the_resolved_config_and_every_accepted_variable(api: &Api) -> Result<()> {
    for (binary, extra, expected) in [
        (
            "producer",
            vec![],
            vec![
                "LISTEN_ADDR",
                "KAFKA_TOPIC",
                "MAX_BODY_BYTES",
                "MAX_BATCH_ITEMS",
                "MAX_CONCURRENT_REQUESTS",
                "REQUEST_BODY_TIMEOUT",
                "ZIPKIN_UI_URL",
                "KAFKA_MESSAGE_TIMEOUT_MS",
                "KAFKA_STALL_TIMEOUT",
            ],
        ),
        (
            "consumer",
            vec![("ROLE", "sink")],
            vec![
                "ROLE",
                "OUTPUT_TOPIC",
                "DLQ_TOPIC",
                "KAFKA_GROUP_ID",
                "TRACE_MODE",
                "PROCESS_DELAY_MS",
                "ORDERING",
                "MAX_IN_FLIGHT",
                "MAX_IN_FLIGHT_BYTES",
                "MAX_RETRIES",
                "RETRY_BACKOFF_MS",
                "KAFKA_STATISTICS_INTERVAL_MS",
                "KAFKA_STALL_TIMEOUT",
            ],
        ),
    ] {
        let mut cmd = std::process::Command::new(bin(binary)?);
        cmd.env_clear()
            .env("KAFKA_BOOTSTRAP_SERVERS", api.stack.kafka.bootstrap())
            .env("KAFKA_SASL_PASSWORD", "hunter2")
            .arg("--print-config");
        for (k, v) in &extra {
            cmd.env(k, v);
        }
        let out = cmd.output()?;
        ensure!(out.status.success(), "{binary} --print-config: {:?}", out);
        let doc: Value = serde_json::from_slice(&out.stdout)?;
        let env: Vec<&str> = doc["accepted_env"]
            .as_array()
            .context("accepted_env")?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for v in expected.iter().chain(&[
            "KAFKA_BOOTSTRAP_SERVERS",
            "KAFKA_SASL_PASSWORD",
            "KAFKA_CLIENT_ID",
            "OTEL_SERVICE_NAME",
            "RUST_LOG",
            "LOG_FORMAT",
        ]) {
            ensure!(
                env.contains(v),
                "{binary}: {v} missing from accepted_env {env:?}"
            );
        }
        ensure!(
            !String::from_utf8_lossy(&out.stdout).contains("hunter2"),
            "{binary}: the password leaked"
        );
        ensure!(
            doc["config"]["kafka"]["sasl_password"] == "<redacted>",
            "{binary}: {}",
            doc["config"]
        );
        if binary == "consumer" {
            ensure!(
                doc["config"]["kafka_topic"] == "messages.processed",
                "sink default input: {}",
                doc["config"]
            );
            ensure!(
                doc["config"]["telemetry"]["service_name"] == "sink",
                "service name defaults to the role"
            );
        }
    }
    Ok(())
}

fn spans_also_reach_zipkin_over_otlp_http_protobuf(api: &Api) -> Result<()> {
    block_on(async {
        let http_url = api.stack.collector.otlp_http_url();
        let mut producer = Service::producer(
            &api.stack,
            "producer-http",
            &[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", http_url.as_str()),
            ],
        )
        .await?;
        let a = post(
            &format!("{}/messages", producer.url()),
            Some("application/json"),
            br#"{"payload": "over http"}"#.to_vec(),
            &[],
        )
        .await?;
        let trace_id = a.trace_id()?;
        let spans = journey_tests::zipkin::ZipkinApi::new(api.stack.zipkin.url())
            .wait_for_trace(&trace_id, journey_tests::services::TRACE_TIMEOUT, |s| {
                journey_tests::services::has_spans(s, &["post /messages", "send messages"])
            })
            .await?;
        ensure!(
            spans.iter().all(|s| s.service() == "producer-http"),
            "service names: {spans:?}"
        );
        // A graceful stop flushes and shuts the HTTP exporter down without panicking.
        producer.process().signal(libc::SIGTERM)?;
        let status = producer.process_mut().wait_exit(Duration::from_secs(20))?;
        ensure!(status.success(), "exit after SIGTERM: {status}");
        Ok(())
    })
}

//! Journey's own services (producer, relay, sink) as harness processes on the local stack.
//!
//! - The binaries are the ones cargo built next to the test executable
//!   (`target/<profile>/{producer,consumer}`); build the workspace first.
//! - Each runs as a [`Managed`] component logging into the stack's logs dir, with a clean
//!   environment pointing at the stack (Kafka, the Collector's OTLP/gRPC port, fast span
//!   export, JSON logs) and a free `LISTEN_ADDR` port; [`Service::start`] waits for `/readyz`.
//! - Topics come from the chart's `topics:` list (`charts/journey/values.yaml`), seeded with
//!   `journeyctl::seed`.
//! - [`Journey`] is the usual fixture: stack + seeded topics + producer + relay + sink.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use backon::BlockingRetryable as _;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

use crate::process::{Managed, free_port, wait_until};
use crate::runner::Fixture;
use crate::say;
use crate::stack::Stack;
use crate::wait::{NotYet, deadline, ready};
use crate::zipkin::{Span, ZipkinApi};

/// How long a service may take to answer `/readyz`.
pub const SERVICE_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a journey may take to show up complete in Zipkin.
pub const TRACE_TIMEOUT: Duration = Duration::from_secs(45);

/// Where cargo put the workspace binaries: the test executable's directory minus `deps/`.
pub fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test executable")?;
    let mut dir = exe
        .parent()
        .context("test executable has no parent")?
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    Ok(dir)
}

/// The path of workspace binary `name`, which must have been built.
pub fn bin(name: &str) -> Result<PathBuf> {
    let path = bin_dir()?.join(name);
    ensure!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace --all-targets)",
        path.display()
    );
    Ok(path)
}

/// The chart's `topics:` list (`charts/journey/values.yaml`, the one source of truth).
pub fn chart_topics() -> Result<Vec<journeyctl::TopicSpec>> {
    let values = crate::chart::values_file();
    journeyctl::load_topics_file(&values)
        .with_context(|| format!("reading topics from {}", values.display()))
}

/// Creates (or updates) `topics` on the stack's Kafka with journeyctl's seed.
pub async fn seed(
    stack: &Stack,
    topics: &[journeyctl::TopicSpec],
) -> Result<journeyctl::SeedReport> {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", stack.kafka.bootstrap());
    journeyctl::seed(&client, topics, false)
        .await
        .context("seeding topics")
}

/// Seeds the stack's Kafka with the chart's `topics:` list.
pub async fn seed_topics(stack: &Stack) -> Result<()> {
    let topics = chart_topics()?;
    let report = seed(stack, &topics).await?;
    say!(
        "topics seeded from {} (changed: {}): {:?}",
        crate::chart::values_file().display(),
        report.changed(),
        topics.iter().map(|t| &t.name).collect::<Vec<_>>()
    );
    Ok(())
}

/// The environment every service gets on the local stack (a clean one: nothing leaks in from
/// the developer's shell).
pub fn base_env(stack: &Stack, service_name: &str, port: u16) -> BTreeMap<String, String> {
    [
        (
            "KAFKA_BOOTSTRAP_SERVERS",
            stack.kafka.bootstrap().to_string(),
        ),
        ("OTEL_SERVICE_NAME", service_name.to_string()),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            stack.collector.otlp_grpc_url(),
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_string()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_string()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "5000".to_string()),
        ("LOG_FORMAT", "json".to_string()),
        ("RUST_LOG", "info".to_string()),
        ("RUST_BACKTRACE", "1".to_string()),
        ("LISTEN_ADDR", format!("127.0.0.1:{port}")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    // The broker's largest record is every client's (the chart's kafka.maxMessageBytes).
    .chain(
        stack
            .kafka
            .properties()
            .get("message.max.bytes")
            .map(|max| ("KAFKA_MESSAGE_MAX_BYTES".to_string(), max.clone())),
    )
    .collect()
}

/// A running Journey service.
#[derive(Debug)]
pub struct Service {
    proc: Managed,
    port: u16,
    bin: String,
    env: BTreeMap<String, String>,
}

impl Service {
    /// Starts binary `bin_name` as component `name` with `env` (which must contain
    /// `LISTEN_ADDR=127.0.0.1:<port>`), without waiting.
    pub fn spawn(
        stack: &Stack,
        name: &str,
        bin_name: &str,
        env: BTreeMap<String, String>,
    ) -> Result<Service> {
        let port = env
            .get("LISTEN_ADDR")
            .and_then(|a| a.rsplit_once(':'))
            .and_then(|(_, p)| p.parse().ok())
            .context("env has no LISTEN_ADDR with a port")?;
        let mut cmd = Command::new(bin(bin_name)?);
        cmd.env_clear();
        for (k, v) in &env {
            cmd.env(k, v);
        }
        // Up to 20 s for a graceful stop: flushes spans and commits offsets.
        let proc = Managed::spawn(name, cmd, &stack.logs_dir(), Duration::from_secs(20))?;
        Ok(Service {
            proc,
            port,
            bin: bin_name.to_string(),
            env,
        })
    }

    /// [`Service::spawn`], then waits for `/readyz`.
    pub async fn start(
        stack: &Stack,
        name: &str,
        bin_name: &str,
        env: BTreeMap<String, String>,
    ) -> Result<Service> {
        let mut s = Self::spawn(stack, name, bin_name, env)?;
        s.wait_ready().await?;
        Ok(s)
    }

    /// A producer named `name` (also its service name) with extra env on top of the base.
    pub async fn producer(stack: &Stack, name: &str, extra: &[(&str, &str)]) -> Result<Service> {
        let mut env = base_env(stack, name, free_port());
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Self::start(stack, name, "producer", env).await
    }

    /// A consumer in `role` named `name` (also its service name).
    pub async fn consumer(
        stack: &Stack,
        role: &str,
        name: &str,
        extra: &[(&str, &str)],
    ) -> Result<Service> {
        let mut env = base_env(stack, name, free_port());
        env.insert("ROLE".into(), role.into());
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Self::start(stack, name, "consumer", env).await
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    pub fn process(&self) -> &Managed {
        &self.proc
    }

    pub fn process_mut(&mut self) -> &mut Managed {
        &mut self.proc
    }

    /// Waits until `path` answers 200 (fails early if the process exits).
    pub async fn wait_for(&mut self, path: &str) -> Result<()> {
        let url = format!("{}{path}", self.url());
        let http = reqwest::Client::new();
        let what = format!("{} {path}", self.proc.name());
        let proc = &mut self.proc;
        wait_until(&what, SERVICE_READY_TIMEOUT, || {
            let early = proc.ensure_running();
            let req = http.get(&url).timeout(Duration::from_secs(3)).send();
            async move {
                early?;
                let resp = req.await?;
                let status = resp.status();
                if status.is_success() {
                    return Ok(true);
                }
                bail!("{status}: {}", resp.text().await.unwrap_or_default())
            }
        })
        .await
    }

    pub async fn wait_ready(&mut self) -> Result<()> {
        self.wait_for("/readyz").await
    }

    /// What the kubelet does for a container with a liveness probe: when the process has
    /// exited or `/healthz` answers 503, stops it and starts it again with the same
    /// environment (its log continues in the same file). The reason, when it restarted.
    pub async fn restart_if_unhealthy(&mut self, stack: &Stack) -> Result<Option<String>> {
        let reason = match self.proc.ensure_running() {
            Err(e) => format!("{e:#}"),
            Ok(()) => {
                let answer = reqwest::Client::new()
                    .get(format!("{}/healthz", self.url()))
                    .timeout(Duration::from_secs(3))
                    .send()
                    .await;
                match answer {
                    Ok(r) if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE => {
                        r.text().await.unwrap_or_default()
                    }
                    _ => return Ok(None),
                }
            }
        };
        let name = self.proc.name().to_string();
        say!("liveness: {name} unhealthy ({reason}); restarting it as the kubelet would");
        self.proc.stop();
        *self = Service::spawn(stack, &name, &self.bin.clone(), self.env.clone())?;
        self.wait_ready().await?;
        Ok(Some(reason))
    }
}

/// The stack with seeded topics and the three services, shared by a test binary's tests.
#[derive(Debug)]
pub struct Journey {
    // Services first: they stop (flushing spans) while Kafka and the Collector still run.
    pub producer: Service,
    pub relay: Service,
    pub sink: Service,
    pub stack: Stack,
}

impl Journey {
    /// Stack + topics + producer (with `ZIPKIN_UI_URL`) + relay + sink, each with `extra`
    /// env for the consumers (e.g. retries for DLQ tests).
    pub async fn start(consumer_extra: &[(&str, &str)]) -> Result<Journey> {
        let stack = Stack::start().await?;
        seed_topics(&stack).await?;
        let zipkin_ui = format!("{}/zipkin", stack.zipkin.url());
        let producer_extra = [("ZIPKIN_UI_URL", zipkin_ui.as_str())];
        let (producer, relay, sink) = tokio::try_join!(
            Service::producer(&stack, "producer", &producer_extra),
            Service::consumer(&stack, "relay", "relay", consumer_extra),
            Service::consumer(&stack, "sink", "sink", consumer_extra),
        )?;
        Ok(Journey {
            producer,
            relay,
            sink,
            stack,
        })
    }

    pub fn zipkin(&self) -> ZipkinApi {
        ZipkinApi::new(self.stack.zipkin.url())
    }

    pub fn bootstrap(&self) -> &str {
        self.stack.kafka.bootstrap()
    }
}

impl Fixture for Journey {
    fn logs_dirs(&self) -> Vec<PathBuf> {
        vec![self.stack.logs_dir()]
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers

/// A producer's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.body.get(key).and_then(Value::as_str)
    }

    /// Where the broker stored the message: `(partition, offset)` of a 202 answer.
    pub fn position(&self) -> Result<(i64, i64)> {
        let field = |k: &str| {
            self.body[k]
                .as_i64()
                .with_context(|| format!("no {k} in {}", self.body))
        };
        Ok((field("partition")?, field("offset")?))
    }

    /// The trace id of a 202 answer (fails otherwise).
    pub fn trace_id(&self) -> Result<String> {
        ensure!(
            self.status == 202,
            "expected 202, got {} {}",
            self.status,
            self.body
        );
        self.str("trace_id")
            .map(str::to_string)
            .context("no trace_id in the answer")
    }
}

/// POSTs `body` with `content_type` to `url` (+ extra headers), waiting at most 30 s.
pub async fn post(
    url: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> Result<Answer> {
    post_within(url, content_type, body, headers, Duration::from_secs(30)).await
}

/// [`post`] waiting at most `timeout` for the answer.
pub async fn post_within(
    url: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<Answer> {
    let mut req = reqwest::Client::new().post(url).timeout(timeout).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.with_context(|| format!("POST {url}"))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// POSTs one JSON message to a producer's `/messages`.
pub async fn post_json(producer: &Service, body: &Value) -> Result<Answer> {
    post(
        &format!("{}/messages", producer.url()),
        Some("application/json"),
        serde_json::to_vec(body)?,
        &[],
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Kafka helpers (blocking: call them from spawn_blocking or plain test code)

/// `(partition, high watermark)` of every partition of `topic`.
pub fn end_offsets(bootstrap: &str, topic: &str) -> Result<Vec<(i32, i64)>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "journey-tests-reader")
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .with_context(|| format!("topic {topic} not in metadata"))?;
    let mut out = Vec::new();
    for p in t.partitions() {
        let (_, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
        out.push((p.id(), high));
    }
    Ok(out)
}

/// Waits up to `timeout` until `group`'s committed offsets on `topic` reach its end offsets
/// as they are when called (the group consumed everything there was); returns them.
pub fn wait_committed_to_end(
    bootstrap: &str,
    group: &str,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<(i32, i64)>> {
    let mut ends = end_offsets(bootstrap, topic)?;
    ends.sort_unstable();
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for (p, _) in &ends {
        tpl.add_partition(topic, *p);
    }
    let mut at: Vec<(i32, i64)> = Vec::new();
    let caught_up = (|| -> Result<()> {
        let committed = reader.committed_offsets(tpl.clone(), Duration::from_secs(5))?;
        // -1: nothing committed yet.
        at = committed
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => (e.partition(), o),
                _ => (e.partition(), -1),
            })
            .collect();
        at.sort_unstable();
        Ok(ready(
            at.len() == ends.len() && at.iter().zip(&ends).all(|(a, e)| a.1 >= e.1),
        )?)
    })
    .retry(deadline(timeout, Duration::from_millis(500)))
    .when(|e| e.is::<NotYet>())
    .call();
    match caught_up {
        Ok(()) => Ok(at),
        Err(e) if e.is::<NotYet>() => {
            bail!("group {group} committed {at:?} on {topic}, which ends at {ends:?}")
        }
        Err(e) => Err(e),
    }
}

/// Every record of `topic` from `from` (as returned by [`end_offsets`]) up to the end as it is
/// when called, waiting up to `timeout` for the records to arrive.
pub fn read_from(
    bootstrap: &str,
    topic: &str,
    from: &[(i32, i64)],
    timeout: Duration,
) -> Result<Vec<OwnedMessage>> {
    let to = end_offsets(bootstrap, topic)?;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("journey-tests-{}", rand::random::<u64>()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    let mut remaining = 0i64;
    for (p, start) in from {
        let end = to
            .iter()
            .find(|(q, _)| q == p)
            .map(|(_, e)| *e)
            .unwrap_or(*start);
        if end > *start {
            tpl.add_partition_offset(topic, *p, Offset::Offset(*start))?;
            remaining += end - start;
        }
    }
    let mut out = Vec::new();
    if remaining == 0 {
        return Ok(out);
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + timeout;
    while (out.len() as i64) < remaining && Instant::now() < deadline {
        if let Some(msg) = consumer.poll(Duration::from_millis(200)) {
            let msg = msg?;
            let end = to
                .iter()
                .find(|(q, _)| *q == msg.partition())
                .map(|(_, e)| *e)
                .unwrap_or(0);
            if msg.offset() < end {
                out.push(msg.detach());
            }
        }
    }
    Ok(out)
}

/// The value of header `key` (first, any case) of a record, as text.
pub fn header(msg: &OwnedMessage, key: &str) -> Option<String> {
    let headers = msg.headers()?;
    headers
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case(key))
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The trace id in a record's `traceparent` header.
pub fn record_trace_id(msg: &OwnedMessage) -> Option<String> {
    header(msg, "traceparent").and_then(|tp| tp.split('-').nth(1).map(str::to_string))
}

// ---------------------------------------------------------------------------------------------
// Trace helpers

/// The span names of a complete parent-mode journey.
pub const JOURNEY_SPANS: [&str; 5] = [
    "post /messages",
    "send messages",
    "process messages",
    "send messages.processed",
    "process messages.processed",
];

/// Zipkin lower-cases span names; `true` when every name in `names` is present.
pub fn has_spans(spans: &[Span], names: &[&str]) -> bool {
    names
        .iter()
        .all(|n| spans.iter().any(|s| s.name().eq_ignore_ascii_case(n)))
}

/// The one span named `name` (case-insensitive) of `service` (any service when empty).
pub fn find_span<'a>(spans: &'a [Span], name: &str, service: &str) -> Result<&'a Span> {
    let found: Vec<&Span> = spans
        .iter()
        .filter(|s| {
            s.name().eq_ignore_ascii_case(name) && (service.is_empty() || s.service() == service)
        })
        .collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => bail!("no span {name:?} of {service:?} in {}", render_tree(spans)),
        many => bail!(
            "{} spans {name:?} of {service:?} in {}",
            many.len(),
            render_tree(spans)
        ),
    }
}

/// A trace as an indented tree: `name [KIND] service` per span.
pub fn render_tree(spans: &[Span]) -> String {
    fn walk(spans: &[Span], parent: Option<&str>, depth: usize, out: &mut String) {
        let mut children: Vec<&Span> = spans
            .iter()
            .filter(|s| match parent {
                None => s
                    .parent_id
                    .as_deref()
                    .is_none_or(|p| !spans.iter().any(|x| x.id == p)),
                Some(p) => s.parent_id.as_deref() == Some(p),
            })
            .collect();
        children.sort_by_key(|s| s.timestamp.unwrap_or(0));
        for s in children {
            let kafka = match (
                s.tag("messaging.destination.partition.id"),
                s.tag("messaging.kafka.offset"),
            ) {
                (Some(p), Some(o)) => format!(" partition {p} offset {o}"),
                _ => String::new(),
            };
            out.push_str(&format!(
                "{}{} [{}] {}{}{}\n",
                "  ".repeat(depth),
                s.name(),
                s.kind.as_deref().unwrap_or("INTERNAL"),
                s.service(),
                kafka,
                if s.tags.contains_key("error") {
                    " (error)"
                } else {
                    ""
                }
            ));
            walk(spans, Some(&s.id), depth + 1, out);
        }
    }
    let mut out = String::from("\n");
    walk(spans, None, 0, &mut out);
    out
}

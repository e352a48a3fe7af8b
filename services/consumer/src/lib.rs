//! The consumer: one binary, two roles.
//!
//! - `relay` consumes `messages`, does its (simulated, `PROCESS_DELAY_MS`) work in a child
//!   span and forwards the record to `OUTPUT_TOPIC` (`messages.processed`), continuing the
//!   trace and keeping the record's key and other headers.
//! - `sink` consumes `messages.processed` and ends the journey.
//!
//! **Many records in flight, each lane in order** (`lanes.rs`): up to `MAX_IN_FLIGHT` records
//! at once; records of the same partition (`ORDERING=partition`) or of the same partition and
//! key (`ORDERING=key`) one after another, where "after" means once the previous one's forward
//! is queued in the producer (not acked): the relay pipelines its forwards.
//!
//! **At-least-once**: a partition's offset is stored only below its first record not yet done
//! (processed and forwarded, or dead-lettered); stored offsets are committed by the auto-commit
//! timer and synchronously on shutdown. When a partition is revoked, its records not started
//! are skipped; the new owner starts from the committed offset and may process a started
//! record again. SIGTERM stops fetching, lets the started records finish (the others stay
//! uncommitted: the next owner gets them), commits, flushes the producer; `main` then flushes
//! the spans.
//!
//! **Poison messages**: a record whose payload is a JSON object with `"poison": true` fails
//! processing (the marker lets tests and demos trigger the error path). A failed record is
//! retried `MAX_RETRIES` times with exponential backoff from `RETRY_BACKOFF_MS`, then sent to
//! `DLQ_TOPIC` with its key, payload and original headers plus `journey.error.type`,
//! `journey.error.message`, `journey.original.topic`, `journey.original.partition`,
//! `journey.original.offset` and `journey.retries`; that `send messages.dlq` span is part of
//! the message's trace with status ERROR. The consumer then carries on. If even the DLQ send
//! fails, the consumer stops with an error without storing that offset (the other started
//! records finish first), so the record is redelivered after a restart.
//!
//! **Trace mode** (`TRACE_MODE`): see [`journey_messaging::TraceMode`].
//!
//! **Consumer lag**: `messaging.kafka.consumer.lag` ({message}), a gauge per partition read
//! from librdkafka's statistics every `KAFKA_STATISTICS_INTERVAL_MS`; see [`lag`].
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod context;
pub mod lag;
mod lanes;
pub mod stall;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use journey_messaging::{KafkaArgs, KafkaEndpoint, Outgoing, TraceMode, health};
use journey_telemetry::Metrics;
use lanes::{Lanes, Proceed};
use opentelemetry_semantic_conventions::attribute::ERROR_TYPE;
use rdkafka::Message as _;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::message::{Header, Headers as _, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, Producer as _};
use serde::Serialize;
use tracing::Instrument as _;
use tracing::field::Empty;

/// Deadline for the relay's forward and the DLQ sends.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest backoff between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What this consumer does with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Work, then forward to `OUTPUT_TOPIC`.
    Relay,
    /// The end of the journey.
    Sink,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Relay => "relay",
            Role::Sink => "sink",
        }
    }

    /// The input topic when `KAFKA_TOPIC` is unset.
    pub fn default_input_topic(self) -> &'static str {
        match self {
            Role::Relay => "messages",
            Role::Sink => "messages.processed",
        }
    }
}

/// What keeps records in order while many are in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderingMode {
    /// One record at a time per partition (Kafka's own order).
    Partition,
    /// One record at a time per key within a partition; different keys concurrently.
    Key,
}

/// Consumer configuration (flags or environment).
#[derive(Debug, Clone, clap::Parser, Serialize)]
#[command(
    name = "consumer",
    version,
    about = "Kafka relay/sink, traced end to end"
)]
pub struct Config {
    /// relay or sink.
    #[arg(long, env = "ROLE", value_enum)]
    pub role: Role,
    /// Address of the small HTTP server (`/healthz`, `/readyz`).
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8081")]
    pub listen_addr: SocketAddr,
    /// Input topic (default: `messages` for relay, `messages.processed` for sink).
    #[arg(long, env = "KAFKA_TOPIC")]
    pub kafka_topic: Option<String>,
    /// Where the relay forwards processed records.
    #[arg(long, env = "OUTPUT_TOPIC", default_value = "messages.processed")]
    pub output_topic: String,
    /// Dead-letter topic for records that keep failing.
    #[arg(long, env = "DLQ_TOPIC", default_value = "messages.dlq")]
    pub dlq_topic: String,
    /// Consumer group (default: the role).
    #[arg(long, env = "KAFKA_GROUP_ID")]
    pub kafka_group_id: Option<String>,
    /// How the process span relates to the producer's trace: parent, link or both.
    #[arg(long, env = "TRACE_MODE", value_enum, default_value_t = TraceMode::Parent)]
    pub trace_mode: TraceMode,
    /// Simulated work per record (relay), in milliseconds.
    #[arg(long, env = "PROCESS_DELAY_MS", default_value_t = 20)]
    pub process_delay_ms: u64,
    /// What keeps records in order while many are in flight: `partition` (one record at a
    /// time per partition) or `key` (one at a time per key; records without a key share one
    /// lane per partition).
    #[arg(long, env = "ORDERING", value_enum, default_value_t = OrderingMode::Partition)]
    pub ordering: OrderingMode,
    /// At most this many records received and not yet done (processed and forwarded, or
    /// dead-lettered); at the bound the consumer waits before receiving more.
    #[arg(long, env = "MAX_IN_FLIGHT", default_value_t = 256)]
    #[arg(value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_in_flight: u32,
    /// At most this many bytes of keys and values in flight (one larger record still goes
    /// through alone).
    #[arg(long, env = "MAX_IN_FLIGHT_BYTES", default_value_t = 16 << 20)]
    pub max_in_flight_bytes: usize,
    /// Retries after a failed attempt before the record goes to the DLQ.
    #[arg(long, env = "MAX_RETRIES", default_value_t = 3)]
    pub max_retries: u32,
    /// First retry backoff in milliseconds (doubles each retry, at most 10 s).
    #[arg(long, env = "RETRY_BACKOFF_MS", default_value_t = 100)]
    pub retry_backoff_ms: u64,
    /// librdkafka's `statistics.interval.ms`: how often the consumer lag metric
    /// (`messaging.kafka.consumer.lag`) is refreshed; 0 turns it off.
    #[arg(long, env = "KAFKA_STATISTICS_INTERVAL_MS", default_value_t = 5000)]
    pub kafka_statistics_interval_ms: u64,
    /// How long an assigned partition may go without fetching (no leader, a stuck offset
    /// query; needs KAFKA_STATISTICS_INTERVAL_MS > 0), or `/readyz` keep failing, before
    /// `/healthz` answers 503 and the container is restarted with a new Kafka client
    /// (humantime: `60s`, `2m`).
    #[arg(long, env = "KAFKA_STALL_TIMEOUT", value_parser = humantime::parse_duration, default_value = "60s")]
    #[serde(serialize_with = "journey_messaging::serialize_duration")]
    pub kafka_stall_timeout: Duration,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Print the resolved configuration as JSON and exit.
    #[arg(long)]
    #[serde(skip)]
    pub print_config: bool,
    /// The resolved service name (set by `main` from telemetry; default: the role).
    #[arg(skip)]
    #[serde(skip)]
    pub service_name: String,
}

impl Config {
    /// Fills the role-dependent defaults (input topic, group id, service name).
    pub fn resolve(mut self) -> Self {
        if self
            .kafka_topic
            .as_deref()
            .is_none_or(|t| t.trim().is_empty())
        {
            self.kafka_topic = Some(self.role.default_input_topic().to_string());
        }
        if self
            .kafka_group_id
            .as_deref()
            .is_none_or(|g| g.trim().is_empty())
        {
            self.kafka_group_id = Some(self.role.as_str().to_string());
        }
        if self.service_name.trim().is_empty() {
            self.service_name = self.role.as_str().to_string();
        }
        self
    }

    pub fn input_topic(&self) -> &str {
        self.kafka_topic
            .as_deref()
            .unwrap_or(self.role.default_input_topic())
    }

    pub fn group_id(&self) -> &str {
        self.kafka_group_id.as_deref().unwrap_or(self.role.as_str())
    }
}

/// Why the consumer stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kafka client: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("dead-lettering {topic}/{partition}@{offset} failed: {source}")]
    DeadLetter {
        topic: String,
        partition: i32,
        offset: i64,
        #[source]
        source: journey_messaging::SendError,
    },
    #[error("a record's task panicked: {0}")]
    Worker(String),
    /// Stopping (or the partition revoked) while Kafka could not take the forward: the record
    /// stays uncommitted for the next owner.
    #[error("stopped before {topic}/{partition}@{offset} could be forwarded; it stays uncommitted")]
    Interrupted {
        topic: String,
        partition: i32,
        offset: i64,
    },
}

/// A failed processing attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `error.type`, e.g. `poison_message`.
    pub error_type: String,
    pub message: String,
    /// Kafka could not take the forward for now (a timeout, brokers down): retried until it
    /// works, never dead-lettered, since the record itself is fine.
    pub transient: bool,
}

/// `true` when the payload is a JSON object with `"poison": true`.
pub fn is_poison(payload: Option<&[u8]>) -> bool {
    payload
        .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
        .and_then(|v| v.get("poison").and_then(serde_json::Value::as_bool))
        .unwrap_or(false)
}

/// Backoff before retry `retry` (1-based): `base * 2^(retry-1)`, at most 10 s.
pub fn backoff(base: Duration, retry: u32) -> Duration {
    let factor = 1u32
        .checked_shl(retry.saturating_sub(1))
        .unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(MAX_BACKOFF)
}

/// The DLQ header saying why a dead-lettered record carries no value (too large to send).
pub const PAYLOAD_OMITTED: &str = "journey.payload.omitted";

/// The DLQ record's headers: the original ones (trace headers are replaced at send time)
/// followed by the error headers.
pub fn dead_letter_headers<M: rdkafka::Message>(
    msg: &M,
    failure: &Failure,
    retries: u32,
) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    if let Some(original) = msg.headers() {
        for idx in 0..original.count() {
            if let Some(h) = original.try_get(idx) {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
    }
    let partition = msg.partition().to_string();
    let offset = msg.offset().to_string();
    let retries = retries.to_string();
    for (key, value) in [
        ("journey.error.type", failure.error_type.as_str()),
        ("journey.error.message", failure.message.as_str()),
        ("journey.original.topic", msg.topic()),
        ("journey.original.partition", partition.as_str()),
        ("journey.original.offset", offset.as_str()),
        ("journey.retries", retries.as_str()),
    ] {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    headers
}

/// Processes one record: the process span, retries, the DLQ, the forward.
struct Processor {
    config: Config,
    endpoint: KafkaEndpoint,
    producer: FutureProducer,
    metrics: Metrics,
    /// Set on shutdown: records not started are skipped, transient retries give up.
    stopping: Arc<AtomicBool>,
}

impl Processor {
    /// Processes one record to the end (done, forwarded, or dead-lettered).
    /// `proceed` lets the next record of the lane start: once the forward is queued, or when
    /// this record is done.
    /// `revoked` is set when the record's partition is revoked meanwhile.
    async fn handle(
        &self,
        msg: &OwnedMessage,
        proceed: Proceed,
        revoked: &AtomicBool,
    ) -> Result<(), Error> {
        let span = journey_messaging::process_span(
            msg,
            &self.endpoint,
            self.config.group_id(),
            self.config.trace_mode,
        );
        let started = Instant::now();
        let attrs = Metrics::topic_attrs(msg.topic());
        let result = self
            .with_retries(msg, proceed, revoked)
            .instrument(span)
            .await;
        self.metrics
            .processing_duration
            .record(started.elapsed().as_secs_f64(), &attrs);
        result
    }

    /// Attempts until done: a failure retried `MAX_RETRIES` times with backoff, then the DLQ; a
    /// forward Kafka could not take for now retried until it can, never dead-lettered.
    async fn with_retries(
        &self,
        msg: &OwnedMessage,
        mut proceed: Proceed,
        revoked: &AtomicBool,
    ) -> Result<(), Error> {
        let base = Duration::from_millis(self.config.retry_backoff_ms);
        let mut retries = 0;
        let mut unavailable = 0;
        let failure = loop {
            match self.attempt(msg, retries, &mut proceed).await {
                Ok(()) => return Ok(()),
                Err(f) if f.transient => {
                    if self.stopping.load(Ordering::SeqCst) || revoked.load(Ordering::SeqCst) {
                        return Err(Error::Interrupted {
                            topic: msg.topic().to_string(),
                            partition: msg.partition(),
                            offset: msg.offset(),
                        });
                    }
                    unavailable += 1;
                    let wait = backoff(base, unavailable);
                    tracing::warn!(
                        { ERROR_TYPE } = %f.error_type,
                        error = %f.message,
                        attempt = unavailable,
                        backoff_ms = wait.as_millis() as u64,
                        "Kafka did not take the forward; retrying (an outage never dead-letters)"
                    );
                    tokio::time::sleep(wait).await;
                }
                Err(f) if retries >= self.config.max_retries => break f,
                Err(f) => {
                    retries += 1;
                    let wait = backoff(base, retries);
                    tracing::warn!(
                        { ERROR_TYPE } = %f.error_type,
                        error = %f.message,
                        retry = retries,
                        backoff_ms = wait.as_millis() as u64,
                        "processing failed; retrying"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        };
        let span = tracing::Span::current();
        journey_messaging::record_error(&span, &failure.error_type, &failure.message);
        self.dead_letter(msg, &failure, retries).await
    }

    /// One processing attempt: the work span, then (relay) the forward.
    async fn attempt(
        &self,
        msg: &OwnedMessage,
        retry: u32,
        proceed: &mut Proceed,
    ) -> Result<(), Failure> {
        let attrs = Metrics::topic_attrs(msg.topic());
        let work = tracing::info_span!(
            "work",
            otel.name = %format_args!("{} {}", self.config.role.as_str(), msg.topic()),
            otel.kind = "internal",
            otel.status_code = Empty,
            otel.status_description = Empty,
            { ERROR_TYPE } = Empty,
            journey.retry = retry,
        );
        let worked = async {
            if self.config.role == Role::Relay && self.config.process_delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(self.config.process_delay_ms)).await;
            }
            if is_poison(msg.payload()) {
                let f = Failure {
                    error_type: "poison_message".into(),
                    message: "the payload is marked \"poison\": true".into(),
                    transient: false,
                };
                journey_messaging::record_error(
                    &tracing::Span::current(),
                    &f.error_type,
                    &f.message,
                );
                return Err(f);
            }
            Ok(())
        }
        .instrument(work)
        .await;
        if let Err(f) = worked {
            self.metrics.failed.add(1, &attrs);
            return Err(f);
        }
        if self.config.role == Role::Relay {
            let mut out = Outgoing::new(
                &self.config.output_topic,
                msg.key(),
                msg.payload().unwrap_or_default(),
            );
            out.headers = msg.headers().cloned();
            let sent = match journey_messaging::enqueue_traced(
                &self.producer,
                &self.endpoint,
                out,
                SEND_TIMEOUT,
            )
            .await
            {
                Ok(queued) => {
                    // Queued in order: the lane's next record may go before this ack.
                    proceed.now();
                    queued.acked().await
                }
                Err(e) => Err(e),
            };
            match sent {
                Ok(sent) => {
                    self.metrics
                        .produced
                        .add(1, &Metrics::topic_attrs(&sent.topic));
                    // A log line, no span event (see the sink's line below).
                    tracing::info!(
                        target: journey_telemetry::MESSAGE_LOG_TARGET,
                        topic = %sent.topic,
                        partition = sent.partition,
                        offset = sent.offset,
                        "forwarded"
                    );
                }
                Err(e) => {
                    self.metrics.failed.add(1, &attrs);
                    return Err(Failure {
                        error_type: e.error_type(),
                        message: e.to_string(),
                        transient: !e.permanent(),
                    });
                }
            }
        } else {
            // A log line (with the trace id) but no span event, which would repeat the process
            // span's attributes: target MESSAGE_LOG_TARGET never reaches OpenTelemetry.
            tracing::info!(
                target: journey_telemetry::MESSAGE_LOG_TARGET,
                topic = msg.topic(),
                partition = msg.partition(),
                offset = msg.offset(),
                "message reached the sink"
            );
        }
        self.metrics.consumed.add(1, &attrs);
        Ok(())
    }

    /// One DLQ send: `payload`, the original and error headers, and `omitted` (why there is
    /// no value) when set.
    async fn send_dead_letter(
        &self,
        msg: &OwnedMessage,
        failure: &Failure,
        retries: u32,
        payload: &[u8],
        omitted: Option<&str>,
    ) -> Result<journey_messaging::Sent, journey_messaging::SendError> {
        let mut out = Outgoing::new(&self.config.dlq_topic, msg.key(), payload);
        let mut headers = dead_letter_headers(msg, failure, retries);
        if let Some(why) = omitted {
            headers = headers.insert(Header {
                key: PAYLOAD_OMITTED,
                value: Some(why),
            });
        }
        out.headers = Some(headers);
        out.error = Some((failure.error_type.clone(), failure.message.clone()));
        journey_messaging::send_traced(&self.producer, &self.endpoint, out, SEND_TIMEOUT).await
    }

    async fn dead_letter(
        &self,
        msg: &OwnedMessage,
        failure: &Failure,
        retries: u32,
    ) -> Result<(), Error> {
        let payload = msg.payload().unwrap_or_default();
        let mut sent = self
            .send_dead_letter(msg, failure, retries, payload, None)
            .await;
        if sent
            .as_ref()
            .is_err_and(journey_messaging::SendError::too_large)
        {
            // A record the broker took but this client may not send (its message.max.bytes is
            // lower): dead-letter it without its value, which stays in the source topic at the
            // original partition and offset. Failing here would stop the consumer at this record
            // for good, at every restart.
            let why = format!(
                "the value ({} bytes) is larger than this client may send; it stays at the original topic, partition and offset",
                payload.len()
            );
            sent = self
                .send_dead_letter(msg, failure, retries, &[], Some(&why))
                .await;
        }
        match sent {
            Ok(sent) => {
                self.metrics
                    .dead_lettered
                    .add(1, &Metrics::topic_attrs(msg.topic()));
                tracing::warn!(
                    dlq.partition = sent.partition,
                    dlq.offset = sent.offset,
                    { ERROR_TYPE } = %failure.error_type,
                    retries,
                    "message dead-lettered"
                );
                Ok(())
            }
            Err(source) => Err(Error::DeadLetter {
                topic: msg.topic().to_string(),
                partition: msg.partition(),
                offset: msg.offset(),
                source,
            }),
        }
    }
}

/// The consumer, with Journey's context (statistics, rebalances).
type KafkaConsumer = StreamConsumer<context::Context>;

/// The consumer's health: wedged when an assigned partition stopped fetching (see [`stall`]),
/// ready while running and its input topic's metadata answers.
#[derive(Clone)]
struct KafkaHealth {
    consumer: Arc<KafkaConsumer>,
    topic: String,
    running: Arc<AtomicBool>,
}

impl health::Checks for KafkaHealth {
    fn wedged(&self, limit: Duration, now: Instant) -> Option<String> {
        self.consumer.context().stalls().wedged(limit, now)
    }

    fn ready(&self) -> Result<(), String> {
        if !self.running.load(Ordering::SeqCst) {
            return Err("shutting down".into());
        }
        journey_messaging::readiness::check_topic(self.consumer.client(), &self.topic)
    }
}

/// Runs the consumer until `shutdown` resolves (or a record cannot even be dead-lettered).
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let config = config.resolve();
    let input = config.input_topic().to_string();
    let group = config.group_id().to_string();
    let mut consumer_config = config.kafka.consumer_config(&config.service_name, &group);
    consumer_config.set(
        "statistics.interval.ms",
        config.kafka_statistics_interval_ms.to_string(),
    );
    // Prefetched records wait in librdkafka's queue while MAX_IN_FLIGHT is reached: keep that
    // within the chart's memory limit (librdkafka's default is 64 MiB).
    consumer_config.set("queued.max.messages.kbytes", "8192");
    let consumer: Arc<KafkaConsumer> =
        Arc::new(consumer_config.create_with_context(context::Context::default())?);
    consumer.subscribe(&[input.as_str()])?;
    // Reports while the consumer runs; no statistics, no points.
    let _lag_gauge =
        (config.kafka_statistics_interval_ms > 0).then(|| consumer.context().lag().gauge(&group));
    let producer: FutureProducer = config
        .kafka
        .producer_config(&config.service_name, SEND_TIMEOUT.as_millis() as u64)
        .create()?;

    let running = Arc::new(AtomicBool::new(true));
    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .map_err(|source| Error::Bind {
            addr: config.listen_addr,
            source,
        })?;
    let health: Router = health::router(
        KafkaHealth {
            consumer: consumer.clone(),
            topic: input.clone(),
            running: running.clone(),
        },
        config.kafka_stall_timeout,
    );
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(async move {
        let served = axum::serve(listener, health)
            .with_graceful_shutdown(async {
                // An error means the sender was dropped: that is a stop too.
                http_stopped.await.ok();
            })
            .await;
        if let Err(e) = served {
            tracing::error!(
                error = %e,
                "the health server stopped: /healthz and /readyz no longer answer, so the liveness probe restarts this consumer"
            );
        }
    });
    tracing::info!(
        role = config.role.as_str(),
        topic = %input,
        group = %group,
        trace_mode = ?config.trace_mode,
        addr = %config.listen_addr,
        "consumer started"
    );

    let bounds = (config.max_in_flight as usize, config.max_in_flight_bytes);
    let ordering = config.ordering;
    let processor = Processor {
        endpoint: config.kafka.endpoint(&config.service_name),
        producer: producer.clone(),
        metrics: Metrics::new(),
        config,
        stopping: Arc::new(AtomicBool::new(false)),
    };
    let mut lanes = Lanes::new(processor, consumer.clone(), ordering, bounds);
    let mut outcome = Ok(());
    tokio::pin!(shutdown);
    loop {
        let hold_expires = lanes.hold_expires();
        let received = tokio::select! {
            biased;
            () = &mut shutdown => {
                tracing::info!("shutdown requested: no more fetching");
                break;
            }
            finished = lanes.finished() => match finished {
                Ok(()) => {
                    lanes.backpressure();
                    None
                }
                Err(e) => {
                    tracing::error!(error = %e, "stopping: a record could not be processed nor dead-lettered");
                    outcome = Err(e);
                    break;
                }
            },
            () = sleep_until_some(hold_expires) => {
                lanes.backpressure();
                None
            }
            () = consumer.context().revocation() => None,
            // Not while holding at the bound (at most PAUSE_AFTER; then the partitions are
            // paused and polling goes on): polling serves rebalances and keeps this consumer
            // in its group.
            received = consumer.recv(), if hold_expires.is_none() => {
                Some(received.map(|m| m.detach()))
            }
        };
        // Rebalances are served inside recv(): skip the revoked partitions' records before
        // dispatching anything that was received after the rebalance.
        lanes.revoke(consumer.context().take_revoked());
        match received {
            None => {}
            Some(Ok(msg)) => {
                lanes.dispatch(msg);
                lanes.backpressure();
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "Kafka consumer error");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    running.store(false, Ordering::SeqCst);
    // Started records finish and their offsets are stored; the others are redelivered to the
    // next owner.
    if let Err(e) = lanes.shutdown().await {
        tracing::error!(error = %e, "stopping: a record could not be processed nor dead-lettered");
        if outcome.is_ok() {
            outcome = Err(e);
        }
    }

    let committer = consumer.clone();
    // Bounded: with Kafka unreachable a synchronous commit would wait for the socket timeout
    // (60 s); what is not committed is redelivered (at-least-once).
    let committed = tokio::time::timeout(
        SEND_TIMEOUT,
        tokio::task::spawn_blocking(move || committer.commit_consumer_state(CommitMode::Sync)),
    )
    .await;
    match committed {
        Ok(Ok(Ok(()))) => tracing::info!("offsets committed"),
        Ok(Ok(Err(e))) => tracing::info!(error = %e, "nothing committed"),
        Ok(Err(e)) => tracing::warn!(error = %e, "commit task failed"),
        Err(_) => tracing::warn!(
            timeout_s = SEND_TIMEOUT.as_secs(),
            "Kafka did not answer the final commit; the uncommitted records are redelivered"
        ),
    }
    let flushed =
        tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await;
    if let Ok(Err(e)) = flushed {
        tracing::warn!(error = %e, "flushing the producer failed");
    }
    consumer.unsubscribe();
    // An error means the health server already stopped on its own (and said why).
    stop_http.send(()).ok();
    if let Err(e) = http.await {
        tracing::warn!(error = %e, "the health server task failed");
    }
    tracing::info!("consumer stopped");
    outcome
}

/// Sleeps until `at`; never resolves for `None`.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;
    use clap::Parser;
    use journey_telemetry::test_support::with_only_env;
    use rdkafka::message::{OwnedMessage, Timestamp};

    #[test]
    fn the_poison_marker_is_a_top_level_true_poison_field_of_a_json_object() {
        assert!(is_poison(Some(br#"{"poison": true, "n": 1}"#)));
        for p in [
            &br#"{"poison": false}"#[..],
            br#"{"poison": "true"}"#,
            br#"{"nested": {"poison": true}}"#,
            br#"[{"poison": true}]"#,
            b"poison",
            b"",
            &[0xff, 0x00],
        ] {
            assert!(!is_poison(Some(p)), "{p:?}");
        }
        assert!(!is_poison(None));
    }

    #[test]
    fn backoff_doubles_per_retry_and_is_capped() {
        let base = Duration::from_millis(100);
        assert_eq!(backoff(base, 1), Duration::from_millis(100));
        assert_eq!(backoff(base, 2), Duration::from_millis(200));
        assert_eq!(backoff(base, 3), Duration::from_millis(400));
        assert_eq!(backoff(base, 60), MAX_BACKOFF);
    }

    #[test]
    fn role_defaults_fill_input_topic_group_and_service_name() {
        let c = with_only_env(&Config::command(), &[], || {
            Config::try_parse_from([
                "consumer",
                "--role",
                "sink",
                "--kafka-bootstrap-servers",
                "k:1",
            ])
        })
        .unwrap()
        .resolve();
        assert_eq!(c.input_topic(), "messages.processed");
        assert_eq!(c.group_id(), "sink");
        assert_eq!(c.service_name, "sink");
        assert_eq!(c.listen_addr.to_string(), "0.0.0.0:8081");
        assert_eq!(c.trace_mode, TraceMode::Parent);
        let c = with_only_env(&Config::command(), &[], || {
            Config::try_parse_from([
                "consumer",
                "--role",
                "relay",
                "--kafka-bootstrap-servers",
                "k:1",
                "--trace-mode",
                "link",
            ])
        })
        .unwrap()
        .resolve();
        assert_eq!(
            (
                c.input_topic(),
                c.output_topic.as_str(),
                c.dlq_topic.as_str()
            ),
            ("messages", "messages.processed", "messages.dlq")
        );
        assert_eq!(c.trace_mode, TraceMode::Link);
        assert_eq!(
            (c.process_delay_ms, c.max_retries, c.retry_backoff_ms),
            (20, 3, 100)
        );
        assert_eq!(c.kafka_statistics_interval_ms, 5000);
    }

    #[test]
    fn dead_letter_headers_keep_the_original_headers_first_and_add_the_error_details() {
        let original = OwnedHeaders::new()
            .insert(Header {
                key: "traceparent",
                value: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            })
            .insert(Header {
                key: "x-tenant",
                value: Some("acme"),
            });
        let msg = OwnedMessage::new(
            Some(b"{}".to_vec()),
            None,
            "messages".into(),
            Timestamp::NotAvailable,
            2,
            17,
            Some(original),
        );
        let f = Failure {
            error_type: "poison_message".into(),
            message: "boom".into(),
            transient: false,
        };
        let h = dead_letter_headers(&msg, &f, 3);
        let pairs: Vec<(String, String)> = h
            .iter()
            .map(|h| {
                (
                    h.key.to_string(),
                    String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                )
            })
            .collect();
        let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "traceparent",
                "x-tenant",
                "journey.error.type",
                "journey.error.message",
                "journey.original.topic",
                "journey.original.partition",
                "journey.original.offset",
                "journey.retries"
            ]
        );
        assert_eq!(pairs[4].1, "messages");
        assert_eq!(pairs[5].1, "2");
        assert_eq!(pairs[6].1, "17");
        assert_eq!(pairs[7].1, "3");
    }
}

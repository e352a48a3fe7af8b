//! Messaging spans per the OpenTelemetry messaging semantic conventions (Kafka).
//!
//! - `send {topic}`, kind PRODUCER: [`send_span`], or [`send_traced`] which also injects the
//!   span's context into the record headers, sends, waits for the broker's ack and records
//!   partition and offset (or the error); [`enqueue_traced`] + [`Enqueued::acked`] are the same
//!   in two steps, for callers that queue the next record before this one's ack.
//! - `process {topic}`, kind CONSUMER: [`process_span`], whose relation to the message's
//!   creation context follows [`TraceMode`].
//!
//! Both carry `messaging.system=kafka`, `messaging.destination.name`,
//! `messaging.operation.type`/`.name`, `messaging.kafka.message.key`,
//! `messaging.destination.partition.id`, `messaging.kafka.offset`,
//! `messaging.message.body.size`, `messaging.client.id`, `server.address`/`server.port` and
//! `peer.service=kafka` (Zipkin's dependency graph needs a remote service name to draw
//! producer → kafka → consumer); process spans add `messaging.consumer.group.name`. Failures set
//! the span status to ERROR and `error.type`.

use std::time::Duration;

use opentelemetry::baggage::BaggageExt as _;
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_semantic_conventions::attribute::{
    ERROR_TYPE, MESSAGING_CLIENT_ID, MESSAGING_CONSUMER_GROUP_NAME, MESSAGING_DESTINATION_NAME,
    MESSAGING_DESTINATION_PARTITION_ID, MESSAGING_KAFKA_MESSAGE_KEY, MESSAGING_KAFKA_OFFSET,
    MESSAGING_MESSAGE_BODY_SIZE, MESSAGING_OPERATION_NAME, MESSAGING_OPERATION_TYPE,
    MESSAGING_SYSTEM, SERVER_ADDRESS, SERVER_PORT,
};
use rdkafka::ClientContext;
use rdkafka::Message;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use serde::Serialize;
use tracing::field::Empty;
use tracing::{Instrument as _, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::config::KafkaEndpoint;
use crate::propagation::{extract_context, inject_context};

/// `peer.service` (deprecated in newer semconv in favour of `service.peer.name`, but it is the
/// attribute the Collector's Zipkin exporter maps to the remote endpoint).
const PEER_SERVICE: &str = "peer.service";

/// How a consumer's `process` span relates to the message's creation context.
///
/// - `parent` (default): the process span is a child of the producer's `send` span, so the
///   whole journey is ONE trace in Zipkin. The semantic conventions allow this for
///   single-message processing.
/// - `link`: the semconv default: the process span starts a new trace and links to the
///   creation context. Zipkin cannot display links; the Collector's Zipkin exporter turns them
///   into `otlp.link.N` tags, so the journey shows as separate traces there.
/// - `both`: child of the creation context and linked to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceMode {
    #[default]
    Parent,
    Link,
    Both,
}

fn key_text(key: Option<&[u8]>) -> Option<String> {
    key.map(|k| String::from_utf8_lossy(k).into_owned())
}

/// A `send {topic}` PRODUCER span, a child of the current span. Partition and offset are
/// recorded by [`record_delivery`] once the broker acked.
pub fn send_span(
    endpoint: &KafkaEndpoint,
    topic: &str,
    key: Option<&[u8]>,
    body_size: usize,
) -> Span {
    let span = tracing::info_span!(
        "send",
        otel.name = %format_args!("send {topic}"),
        otel.kind = "producer",
        otel.status_code = Empty,
        otel.status_description = Empty,
        { MESSAGING_SYSTEM } = "kafka",
        { MESSAGING_DESTINATION_NAME } = topic,
        { MESSAGING_OPERATION_TYPE } = "send",
        { MESSAGING_OPERATION_NAME } = "send",
        { MESSAGING_KAFKA_MESSAGE_KEY } = Empty,
        { MESSAGING_DESTINATION_PARTITION_ID } = Empty,
        { MESSAGING_KAFKA_OFFSET } = Empty,
        { MESSAGING_MESSAGE_BODY_SIZE } = body_size as i64,
        { MESSAGING_CLIENT_ID } = endpoint.client_id.as_str(),
        { SERVER_ADDRESS } = endpoint.server_address.as_str(),
        { SERVER_PORT } = Empty,
        { PEER_SERVICE } = "kafka",
        { ERROR_TYPE } = Empty,
    );
    if let Some(key) = key_text(key) {
        span.record(MESSAGING_KAFKA_MESSAGE_KEY, key.as_str());
    }
    if let Some(port) = endpoint.server_port {
        span.record(SERVER_PORT, i64::from(port));
    }
    span
}

/// A `process {topic}` CONSUMER span for `msg`, related to the message's creation context
/// (from its headers) as `mode` says. Enter or instrument with it only after this returns
/// (the parent must be set before the span starts).
pub fn process_span<M: Message>(
    msg: &M,
    endpoint: &KafkaEndpoint,
    group: &str,
    mode: TraceMode,
) -> Span {
    let topic = msg.topic();
    let span = tracing::info_span!(
        parent: None,
        "process",
        otel.name = %format_args!("process {topic}"),
        otel.kind = "consumer",
        otel.status_code = Empty,
        otel.status_description = Empty,
        { MESSAGING_SYSTEM } = "kafka",
        { MESSAGING_DESTINATION_NAME } = topic,
        { MESSAGING_OPERATION_TYPE } = "process",
        { MESSAGING_OPERATION_NAME } = "process",
        { MESSAGING_CONSUMER_GROUP_NAME } = group,
        { MESSAGING_KAFKA_MESSAGE_KEY } = Empty,
        { MESSAGING_DESTINATION_PARTITION_ID } = %msg.partition(),
        { MESSAGING_KAFKA_OFFSET } = msg.offset(),
        { MESSAGING_MESSAGE_BODY_SIZE } = msg.payload().map_or(0, <[u8]>::len) as i64,
        { MESSAGING_CLIENT_ID } = endpoint.client_id.as_str(),
        { SERVER_ADDRESS } = endpoint.server_address.as_str(),
        { SERVER_PORT } = Empty,
        { PEER_SERVICE } = "kafka",
        { ERROR_TYPE } = Empty,
    );
    if let Some(key) = key_text(msg.key()) {
        span.record(MESSAGING_KAFKA_MESSAGE_KEY, key.as_str());
    }
    if let Some(port) = endpoint.server_port {
        span.record(SERVER_PORT, i64::from(port));
    }
    let creation = extract_context(msg.headers());
    let creation_span = creation.span().span_context().clone();
    // Errors mean tracing is off for this span (no OpenTelemetry layer): nothing to relate.
    match mode {
        TraceMode::Parent => {
            let _ = span.set_parent(creation);
        }
        TraceMode::Link => {
            // A new root (keeping the message's baggage), linked to the creation context. The
            // parent context must hold no span at all: an invalid one would make a
            // parent-based sampler drop the new trace.
            let baggage: Vec<opentelemetry::baggage::KeyValueMetadata> = creation
                .baggage()
                .iter()
                .map(|(k, (v, m))| {
                    opentelemetry::baggage::KeyValueMetadata::new(k.clone(), v.clone(), m.clone())
                })
                .collect();
            let _ = span.set_parent(opentelemetry::Context::new().with_baggage(baggage));
            span.add_link(creation_span);
        }
        TraceMode::Both => {
            let _ = span.set_parent(creation);
            span.add_link(creation_span);
        }
    }
    span
}

/// Records the broker's ack on a send span.
pub fn record_delivery(span: &Span, partition: i32, offset: i64) {
    span.record(
        MESSAGING_DESTINATION_PARTITION_ID,
        tracing::field::display(partition),
    );
    span.record(MESSAGING_KAFKA_OFFSET, offset);
}

/// Marks a span as failed: status ERROR with `description`, `error.type` = `error_type`.
pub fn record_error(span: &Span, error_type: &str, description: &str) {
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_description", description);
    span.record(ERROR_TYPE, error_type);
}

/// The trace id (32 lower-case hex digits) of `span`, when it is traced.
pub fn trace_id_of(span: &Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// One record to send with [`send_traced`].
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub topic: &'a str,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    /// Headers to keep (e.g. the consumed record's, plus error headers for a DLQ); the trace
    /// headers in them are replaced by the send span's context.
    pub headers: Option<OwnedHeaders>,
    /// `(error.type, description)`: mark the send span failed even when the send succeeds
    /// (a dead-letter send is the journey's error path).
    pub error: Option<(String, String)>,
}

impl<'a> Outgoing<'a> {
    pub fn new(topic: &'a str, key: Option<&'a [u8]>, payload: &'a [u8]) -> Self {
        Outgoing {
            topic,
            key,
            payload,
            headers: None,
            error: None,
        }
    }
}

/// A broker-acknowledged record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sent {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The trace the send span belongs to (`None` when tracing is off).
    pub trace_id: Option<String>,
}

/// Why a send failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    /// librdkafka reported a failure (e.g. `MessageTimedOut` when no broker acked in time).
    #[error("Kafka did not acknowledge the message ({code}): {0}", code = kafka_error_type(.0))]
    Kafka(#[source] KafkaError),
    /// No answer within the bound (a safety net beyond librdkafka's own timeout).
    #[error("Kafka did not acknowledge the message within {0:?}")]
    Timeout(Duration),
    /// The producer was dropped before the broker answered (the process is stopping).
    #[error("the Kafka producer was closed before the message was acknowledged")]
    ProducerGone,
}

/// librdkafka's error code name (`MessageTimedOut`), or `KafkaError` when there is none.
fn kafka_error_type(e: &KafkaError) -> String {
    e.rdkafka_error_code()
        .map_or_else(|| "KafkaError".to_string(), |c| format!("{c:?}"))
}

impl SendError {
    /// The `error.type` value for this failure.
    pub fn error_type(&self) -> String {
        match self {
            SendError::Kafka(e) => kafka_error_type(e),
            SendError::Timeout(_) => "timeout".to_string(),
            SendError::ProducerGone => "producer_closed".to_string(),
        }
    }

    fn code(&self) -> Option<RDKafkaErrorCode> {
        match self {
            SendError::Kafka(e) => e.rdkafka_error_code(),
            SendError::Timeout(_) | SendError::ProducerGone => None,
        }
    }

    /// The message is larger than the client or the broker accepts (`message.max.bytes`): no
    /// retry can help.
    pub fn too_large(&self) -> bool {
        self.code() == Some(RDKafkaErrorCode::MessageSizeTooLarge)
    }

    /// No broker acked the message in time (as opposed to an error about the message itself).
    pub fn timed_out(&self) -> bool {
        matches!(self, SendError::Timeout(_))
            || self.code() == Some(RDKafkaErrorCode::MessageTimedOut)
    }

    /// The same record can never be sent as it is: too large, invalid, or to a topic this
    /// client may not write. Anything else (timeouts, brokers down or frozen, leaders moving)
    /// is transient: sending again later can work.
    pub fn permanent(&self) -> bool {
        use RDKafkaErrorCode as C;
        matches!(
            self.code(),
            Some(
                C::MessageSizeTooLarge
                    | C::InvalidMessage
                    | C::InvalidMessageSize
                    | C::InvalidRecord
                    | C::MessageBatchTooLarge
                    | C::InvalidTopic
                    | C::TopicAuthorizationFailed
                    | C::ClusterAuthorizationFailed
                    | C::InvalidArgument
            )
        )
    }
}

/// How long [`enqueue_traced`] waits between tries while librdkafka's queue is full.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(50);

/// A record librdkafka has queued (in send order), its ack still to come: see [`Enqueued::acked`].
#[must_use = "the send is only known to be done once acked"]
pub struct Enqueued {
    span: Span,
    delivery: DeliveryFuture,
    bound: Duration,
    deadline: tokio::time::Instant,
    topic: String,
    trace_id: Option<String>,
}

impl std::fmt::Debug for Enqueued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enqueued")
            .field("topic", &self.topic)
            .field("bound", &self.bound)
            .field("trace_id", &self.trace_id)
            .finish_non_exhaustive()
    }
}

/// Hands `out` to librdkafka inside a new `send {topic}` span (a child of the current span),
/// with the span's context injected into the headers; waits only while the client's queue is
/// full (up to `timeout`). Records queued one after another are sent in that order (the
/// idempotent producer keeps it through retries), so a caller may queue the next record before
/// this one is acked.
pub async fn enqueue_traced<C: ClientContext + 'static>(
    producer: &FutureProducer<C>,
    endpoint: &KafkaEndpoint,
    out: Outgoing<'_>,
    timeout: Duration,
) -> Result<Enqueued, SendError> {
    let started = tokio::time::Instant::now();
    let span = send_span(endpoint, out.topic, out.key, out.payload.len());
    if let Some((error_type, description)) = &out.error {
        record_error(&span, error_type, description);
    }
    let headers = inject_context(&span.context(), out.headers.as_ref());
    let trace_id = trace_id_of(&span);
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(out.topic)
        .payload(out.payload)
        .headers(headers);
    record.key = out.key;
    let delivery = loop {
        match producer.send_result(record) {
            Ok(delivery) => break delivery,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                if started.elapsed() < timeout =>
            {
                record = back;
                tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
            }
            Err((e, _)) => {
                let e = SendError::Kafka(e);
                record_error(&span, &e.error_type(), &e.to_string());
                return Err(e);
            }
        }
    };
    // A safety net beyond librdkafka's own message timeout.
    let bound = timeout + Duration::from_secs(2);
    Ok(Enqueued {
        span,
        delivery,
        bound,
        deadline: started + bound,
        topic: out.topic.to_string(),
        trace_id,
    })
}

impl Enqueued {
    /// Waits for the broker's ack and records partition/offset or the error on the span.
    pub async fn acked(self) -> Result<Sent, SendError> {
        let Enqueued {
            span,
            delivery,
            bound,
            deadline,
            topic,
            trace_id,
        } = self;
        let result = tokio::time::timeout_at(deadline, delivery)
            .instrument(span.clone())
            .await;
        let outcome = match result {
            Err(_) => Err(SendError::Timeout(bound)),
            Ok(Err(_canceled)) => Err(SendError::ProducerGone),
            Ok(Ok(Err((e, _msg)))) => Err(SendError::Kafka(e)),
            Ok(Ok(Ok(delivery))) => Ok(Sent {
                topic,
                partition: delivery.partition,
                offset: delivery.offset,
                trace_id,
            }),
        };
        match &outcome {
            Ok(sent) => record_delivery(&span, sent.partition, sent.offset),
            Err(e) => record_error(&span, &e.error_type(), &e.to_string()),
        }
        outcome
    }
}

/// Sends `out` inside a new `send {topic}` span and waits for the broker's ack (bounded by
/// `timeout` plus a small margin): [`enqueue_traced`] then [`Enqueued::acked`].
pub async fn send_traced<C: ClientContext + 'static>(
    producer: &FutureProducer<C>,
    endpoint: &KafkaEndpoint,
    out: Outgoing<'_>,
    timeout: Duration,
) -> Result<Sent, SendError> {
    enqueue_traced(producer, endpoint, out, timeout)
        .await?
        .acked()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::otel_subscriber;
    use rdkafka::message::{Header, OwnedMessage, Timestamp};
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt as _;

    /// Captures the fields recorded on spans by name.
    #[derive(Clone, Default)]
    struct Fields(Arc<Mutex<Vec<(String, String, String)>>>);

    struct Visitor<'a>(&'a Fields, String);
    impl tracing::field::Visit for Visitor<'_> {
        fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
            self.0
                .0
                .lock()
                .unwrap()
                .push((self.1.clone(), f.name().to_string(), format!("{v:?}")));
        }
        fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
            self.0
                .0
                .lock()
                .unwrap()
                .push((self.1.clone(), f.name().to_string(), v.to_string()));
        }
    }

    impl<S> tracing_subscriber::Layer<S> for Fields
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        fn on_new_span(
            &self,
            attrs: &tracing::span::Attributes<'_>,
            _: &tracing::span::Id,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            attrs.record(&mut Visitor(self, attrs.metadata().name().to_string()));
        }
        fn on_record(
            &self,
            id: &tracing::span::Id,
            values: &tracing::span::Record<'_>,
            ctx: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let name = ctx
                .span(id)
                .map(|s| s.name().to_string())
                .unwrap_or_default();
            values.record(&mut Visitor(self, name));
        }
    }

    impl Fields {
        fn get(&self, span: &str, field: &str) -> Option<String> {
            self.0
                .lock()
                .unwrap()
                .iter()
                .rev()
                .find(|(s, f, _)| s == span && f == field)
                .map(|(_, _, v)| v.clone())
        }
    }

    fn endpoint() -> KafkaEndpoint {
        KafkaEndpoint {
            client_id: "relay".into(),
            server_address: "127.0.0.1".into(),
            server_port: Some(9092),
        }
    }

    #[test]
    fn send_spans_carry_the_semconv_name_kind_and_attributes() {
        let fields = Fields::default();
        let subscriber = tracing_subscriber::registry().with(fields.clone());
        tracing::subscriber::with_default(subscriber, || {
            let span = send_span(&endpoint(), "messages", Some(b"k1"), 12);
            record_delivery(&span, 2, 41);
            record_error(&span, "MessageTimedOut", "no ack");
        });
        let f = |k| fields.get("send", k);
        assert_eq!(f("otel.name").as_deref(), Some("send messages"));
        assert_eq!(f("otel.kind").as_deref(), Some("producer"));
        assert_eq!(f("messaging.system").as_deref(), Some("kafka"));
        assert_eq!(f("messaging.destination.name").as_deref(), Some("messages"));
        assert_eq!(f("messaging.operation.type").as_deref(), Some("send"));
        assert_eq!(f("messaging.kafka.message.key").as_deref(), Some("k1"));
        assert_eq!(f("messaging.message.body.size").as_deref(), Some("12"));
        assert_eq!(
            f("messaging.destination.partition.id").as_deref(),
            Some("2")
        );
        assert_eq!(f("messaging.kafka.offset").as_deref(), Some("41"));
        assert_eq!(f("server.port").as_deref(), Some("9092"));
        assert_eq!(f("peer.service").as_deref(), Some("kafka"));
        assert_eq!(f("otel.status_code").as_deref(), Some("ERROR"));
        assert_eq!(f("error.type").as_deref(), Some("MessageTimedOut"));
    }

    fn message(headers: OwnedHeaders) -> OwnedMessage {
        OwnedMessage::new(
            Some(b"{}".to_vec()),
            Some(b"key".to_vec()),
            "messages".into(),
            Timestamp::NotAvailable,
            1,
            7,
            Some(headers),
        )
    }

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn process_spans_continue_the_trace_in_parent_and_both_modes_and_start_one_in_link_mode() {
        let (subscriber, _provider) = otel_subscriber();
        tracing::subscriber::with_default(subscriber, || {
            let headers = OwnedHeaders::new().insert(Header {
                key: "traceparent",
                value: Some(TP),
            });
            let msg = message(headers);
            for (mode, same_trace) in [
                (TraceMode::Parent, true),
                (TraceMode::Both, true),
                (TraceMode::Link, false),
            ] {
                let span = process_span(&msg, &endpoint(), "relay", mode);
                let trace = span.context().span().span_context().trace_id().to_string();
                assert_eq!(
                    trace == "0af7651916cd43dd8448eb211c80319c",
                    same_trace,
                    "{mode:?}"
                );
                assert_eq!(trace_id_of(&span), Some(trace));
                assert!(
                    span.context().span().span_context().is_sampled(),
                    "{mode:?} spans are sampled"
                );
            }
        });
    }

    #[test]
    fn process_spans_are_roots_even_inside_another_span() {
        let (subscriber, _provider) = otel_subscriber();
        tracing::subscriber::with_default(subscriber, || {
            let outer = tracing::info_span!("outer");
            let _g = outer.enter();
            let outer_trace = trace_id_of(&outer);
            let span = process_span(
                &message(OwnedHeaders::new()),
                &endpoint(),
                "sink",
                TraceMode::Parent,
            );
            assert!(trace_id_of(&span).is_some());
            assert_ne!(trace_id_of(&span), outer_trace);
        });
    }
}

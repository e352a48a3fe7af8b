//! The producer: an HTTP API that turns each accepted message into a Kafka record, traced
//! from the HTTP request (continuing the caller's `traceparent`) to the broker's ack.
//!
//! - `POST /messages`: `application/json` `{"key": optional string, "payload": any JSON}` or
//!   `text/plain` (the body is the payload, no key). `202` only after the broker acked, with
//!   `{topic, partition, offset, trace_id}` (+ `zipkin_url` when `ZIPKIN_UI_URL` is set) and a
//!   W3C `traceresponse` header.
//! - `POST /messages/batch`: a JSON array of such objects; all validated before any is sent.
//! - Bad input never reaches Kafka: 400 (empty body, malformed JSON, invalid message),
//!   413 (body over `MAX_BODY_BYTES`), 415 (other content types). Kafka not acking within
//!   `KAFKA_MESSAGE_TIMEOUT_MS`: 503. Every error body is `{"error": "...", "reason": "..."}`.
//! - `GET /healthz` (alive unless deliveries have been timing out, none acked, or readiness has
//!   been failing, for longer than `KAFKA_STALL_TIMEOUT`: see [`stall`] and
//!   [`journey_messaging::health`]), `GET /readyz` (the topic's metadata answers).
//!
//! One idempotent `acks=all` [`FutureProducer`] serves the whole process.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod stall;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, State};
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use journey_messaging::{KafkaArgs, KafkaEndpoint, Outgoing, Sent, health};
use journey_telemetry::Metrics;
use opentelemetry_semantic_conventions::attribute::{
    HTTP_REQUEST_METHOD, HTTP_RESPONSE_STATUS_CODE, HTTP_ROUTE, URL_PATH, URL_SCHEME,
};
use rdkafka::producer::{FutureProducer, Producer as _};
use serde::{Deserialize, Serialize};
use serde_json::json;
use stall::Deliveries;
use tower_http::trace::TraceLayer;
use tracing::Span;
use tracing::field::Empty;

/// The default service name (`OTEL_SERVICE_NAME` overrides it; it is also the default
/// `KAFKA_CLIENT_ID`).
pub const SERVICE_NAME: &str = "producer";

/// Producer configuration (flags or environment).
#[derive(Debug, Clone, clap::Parser, Serialize)]
#[command(
    name = "producer",
    version,
    about = "HTTP → Kafka producer, traced end to end"
)]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    pub listen_addr: SocketAddr,
    /// Topic messages are produced to.
    #[arg(long, env = "KAFKA_TOPIC", default_value = "messages")]
    pub kafka_topic: String,
    /// Largest accepted request body in bytes (larger bodies get 413).
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1_048_576)]
    pub max_body_bytes: usize,
    /// Zipkin UI base URL (e.g. `http://localhost:9411/zipkin`): responses then link the trace.
    #[arg(long, env = "ZIPKIN_UI_URL")]
    pub zipkin_ui_url: Option<String>,
    /// How long a message may wait for the broker's ack before the request gets 503.
    #[arg(long, env = "KAFKA_MESSAGE_TIMEOUT_MS", default_value_t = 5000)]
    pub kafka_message_timeout_ms: u64,
    /// How long messages may keep timing out, none acked (or `/readyz` keep failing), before
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
    /// The resolved service name (set by `main` from telemetry; default client id).
    #[arg(skip = SERVICE_NAME.to_string())]
    #[serde(skip)]
    pub service_name: String,
}

/// Why the producer could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating the Kafka producer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serving HTTP: {0}")]
    Serve(#[source] std::io::Error),
}

/// An HTTP error answered as `{"error": "...", "reason": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppError {
    pub status: StatusCode,
    pub error: &'static str,
    pub reason: String,
}

impl AppError {
    fn new(status: StatusCode, error: &'static str, reason: impl Into<String>) -> Self {
        AppError {
            status,
            error,
            reason: reason.into(),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(error = self.error, reason = %self.reason, "request failed");
        } else {
            tracing::info!(error = self.error, reason = %self.reason, "request rejected");
        }
        (
            self.status,
            axum::Json(json!({"error": self.error, "reason": self.reason})),
        )
            .into_response()
    }
}

impl From<BytesRejection> for AppError {
    fn from(r: BytesRejection) -> Self {
        let status = r.status();
        let error = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "payload_too_large"
        } else {
            "unreadable_body"
        };
        AppError::new(status, error, r.body_text())
    }
}

/// A message as the API accepts it: a JSON object (an array of the same fields is not one).
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "serde_json::Map<String, serde_json::Value>")]
struct MessageIn {
    key: Option<String>,
    payload: Option<serde_json::Value>,
}

impl TryFrom<serde_json::Map<String, serde_json::Value>> for MessageIn {
    type Error = serde_json::Error;
    fn try_from(object: serde_json::Map<String, serde_json::Value>) -> Result<Self, Self::Error> {
        #[derive(Deserialize)]
        struct Fields {
            #[serde(default)]
            key: Option<String>,
            #[serde(default)]
            payload: Option<serde_json::Value>,
        }
        let Fields { key, payload } = serde_json::from_value(serde_json::Value::Object(object))?;
        Ok(MessageIn { key, payload })
    }
}

/// A validated message, ready for Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Message {
    key: Option<String>,
    value: Vec<u8>,
}

impl TryFrom<MessageIn> for Message {
    type Error = AppError;
    fn try_from(m: MessageIn) -> Result<Self, AppError> {
        let payload = m.payload.filter(|p| !p.is_null()).ok_or_else(|| {
            AppError::new(
                StatusCode::BAD_REQUEST,
                "invalid_message",
                "the message has no \"payload\"",
            )
        })?;
        let value = serde_json::to_vec(&payload).map_err(|e| {
            AppError::new(StatusCode::BAD_REQUEST, "invalid_message", e.to_string())
        })?;
        Ok(Message { key: m.key, value })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Json,
    Text,
}

fn body_kind(headers: &HeaderMap) -> Result<BodyKind, AppError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    match ct.as_deref() {
        Some("application/json") => Ok(BodyKind::Json),
        Some(t) if t.starts_with("application/") && t.ends_with("+json") => Ok(BodyKind::Json),
        Some("text/plain") => Ok(BodyKind::Text),
        Some(other) => Err(AppError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("content type {other:?} is not supported: send application/json or text/plain"),
        )),
        None => Err(AppError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "no content type: send application/json or text/plain",
        )),
    }
}

fn json_error(e: &serde_json::Error) -> AppError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => AppError::new(StatusCode::BAD_REQUEST, "invalid_message", e.to_string()),
        _ => AppError::new(StatusCode::BAD_REQUEST, "malformed_json", e.to_string()),
    }
}

fn non_empty(body: &Bytes) -> Result<(), AppError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "empty_body",
            "the request body is empty",
        ));
    }
    Ok(())
}

/// Validates one `POST /messages` body.
fn parse_one(headers: &HeaderMap, body: &Bytes) -> Result<Message, AppError> {
    let kind = body_kind(headers)?;
    non_empty(body)?;
    match kind {
        BodyKind::Json => serde_json::from_slice::<MessageIn>(body)
            .map_err(|e| json_error(&e))?
            .try_into(),
        BodyKind::Text => {
            let text = std::str::from_utf8(body).map_err(|e| {
                AppError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_message",
                    format!("text/plain body is not UTF-8: {e}"),
                )
            })?;
            Ok(Message {
                key: None,
                value: text.as_bytes().to_vec(),
            })
        }
    }
}

/// Validates one `POST /messages/batch` body.
fn parse_batch(headers: &HeaderMap, body: &Bytes) -> Result<Vec<Message>, AppError> {
    if body_kind(headers)? != BodyKind::Json {
        return Err(AppError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a batch is a JSON array: send application/json",
        ));
    }
    non_empty(body)?;
    let items: Vec<MessageIn> = serde_json::from_slice(body).map_err(|e| json_error(&e))?;
    if items.is_empty() {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "empty_batch",
            "the batch has no messages",
        ));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            Message::try_from(m).map_err(|mut e| {
                e.reason = format!("message {i}: {}", e.reason);
                e
            })
        })
        .collect()
}

struct App {
    producer: FutureProducer,
    endpoint: KafkaEndpoint,
    topic: String,
    timeout: Duration,
    zipkin_ui_url: Option<String>,
    metrics: Metrics,
    deliveries: Deliveries,
    stall_timeout: Duration,
}

type Shared = Arc<App>;

impl App {
    async fn send(&self, msg: &Message) -> Result<Sent, AppError> {
        let out = Outgoing::new(
            &self.topic,
            msg.key.as_deref().map(str::as_bytes),
            &msg.value,
        );
        let attrs = Metrics::topic_attrs(&self.topic);
        match journey_messaging::send_traced(&self.producer, &self.endpoint, out, self.timeout)
            .await
        {
            Ok(sent) => {
                self.deliveries.acked();
                self.metrics.produced.add(1, &attrs);
                tracing::info!(
                    partition = sent.partition,
                    offset = sent.offset,
                    "message acked"
                );
                Ok(sent)
            }
            Err(e) => {
                self.metrics.failed.add(1, &attrs);
                if e.timed_out() {
                    self.deliveries.timed_out(Instant::now());
                }
                if e.too_large() {
                    return Err(AppError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        format!(
                            "{e}: the Kafka record ({} bytes of value) is larger than Kafka accepts",
                            msg.value.len()
                        ),
                    ));
                }
                Err(AppError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "kafka_unavailable",
                    format!(
                        "{e} (bound: KAFKA_MESSAGE_TIMEOUT_MS={} ms)",
                        self.timeout.as_millis()
                    ),
                ))
            }
        }
    }

    fn zipkin_url(&self, trace_id: Option<&str>) -> Option<String> {
        let base = self.zipkin_ui_url.as_deref()?.trim_end_matches('/');
        trace_id.map(|t| format!("{base}/traces/{t}"))
    }
}

fn current_trace_id() -> Option<String> {
    journey_messaging::trace_id_of(&Span::current())
}

async fn post_message(
    State(app): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let msg = parse_one(&headers, &body?)?;
    let sent = app.send(&msg).await?;
    let trace_id = current_trace_id().or(sent.trace_id.clone());
    let mut doc = json!({
        "topic": sent.topic,
        "partition": sent.partition,
        "offset": sent.offset,
        "trace_id": trace_id,
    });
    if let Some(url) = app.zipkin_url(trace_id.as_deref()) {
        doc["zipkin_url"] = url.into();
    }
    Ok((StatusCode::ACCEPTED, axum::Json(doc)).into_response())
}

async fn post_batch(
    State(app): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let messages = parse_batch(&headers, &body?)?;
    let results = futures::future::join_all(messages.iter().map(|m| app.send(m))).await;
    let total = results.len();
    let acked: Vec<&Sent> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    if let Some(Err(first)) = results.iter().find(|r| r.is_err()) {
        let mut e = first.clone();
        e.reason = format!(
            "{} of {total} messages acked; first failure: {}",
            acked.len(),
            e.reason
        );
        return Err(e);
    }
    let trace_id = current_trace_id();
    let mut doc = json!({
        "trace_id": trace_id,
        "count": total,
        "messages": acked
            .iter()
            .map(|s| json!({"topic": s.topic, "partition": s.partition, "offset": s.offset}))
            .collect::<Vec<_>>(),
    });
    if let Some(url) = app.zipkin_url(trace_id.as_deref()) {
        doc["zipkin_url"] = url.into();
    }
    Ok((StatusCode::ACCEPTED, axum::Json(doc)).into_response())
}

/// The producer's health: wedged when deliveries keep timing out (see [`stall`]), ready when
/// its topic's metadata answers.
#[derive(Clone)]
struct KafkaHealth {
    producer: FutureProducer,
    topic: String,
    deliveries: Deliveries,
}

impl health::Checks for KafkaHealth {
    fn wedged(&self, limit: Duration, now: Instant) -> Option<String> {
        self.deliveries.wedged(limit, now)
    }

    fn ready(&self) -> Result<(), String> {
        journey_messaging::readiness::check_topic(self.producer.client(), &self.topic)
    }
}

/// Adds the W3C `traceresponse` header (runs inside the request span).
async fn add_traceresponse(mut res: Response) -> Response {
    if let Some(v) = journey_messaging::http::traceresponse(&Span::current()) {
        res.headers_mut().insert("traceresponse", v);
    }
    res
}

/// The SERVER span of a request: `{method} {route}`, continuing the caller's trace.
fn request_span(req: &Request<Body>) -> Span {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let name = match &route {
        Some(r) => format!("{} {r}", req.method()),
        None => req.method().to_string(),
    };
    let span = tracing::info_span!(
        "request",
        otel.name = %name,
        otel.kind = "server",
        otel.status_code = Empty,
        { HTTP_REQUEST_METHOD } = %req.method(),
        { HTTP_ROUTE } = route.as_deref(),
        { URL_PATH } = req.uri().path(),
        { URL_SCHEME } = "http",
        { HTTP_RESPONSE_STATUS_CODE } = Empty,
    );
    journey_messaging::http::continue_trace(&span, req.headers());
    span
}

fn record_response(res: &Response, _latency: Duration, span: &Span) {
    span.record(HTTP_RESPONSE_STATUS_CODE, i64::from(res.status().as_u16()));
    if res.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
}

fn router(app: Shared, max_body_bytes: usize) -> Router {
    let health = health::router(
        KafkaHealth {
            producer: app.producer.clone(),
            topic: app.topic.clone(),
            deliveries: app.deliveries.clone(),
        },
        app.stall_timeout,
    );
    let traced = Router::new()
        .route("/messages", post(post_message))
        .route("/messages/batch", post(post_batch))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::map_response(add_traceresponse))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(record_response),
        );
    Router::new()
        .merge(health)
        .merge(traced)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(app)
}

/// Any other path: 404 in the API's error shape.
async fn not_found(method: axum::http::Method, uri: axum::http::Uri) -> AppError {
    AppError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no {method} {}: the API is POST /messages, POST /messages/batch, GET /healthz, GET /readyz",
            uri.path()
        ),
    )
}

/// A known path with another method: 405 in the API's error shape.
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> AppError {
    AppError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Runs the producer until `shutdown` resolves: stops accepting, finishes in-flight requests,
/// then flushes the Kafka producer.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let timeout = Duration::from_millis(config.kafka_message_timeout_ms);
    let producer: FutureProducer = config
        .kafka
        .producer_config(&config.service_name, config.kafka_message_timeout_ms)
        .create()?;
    let app = Arc::new(App {
        producer: producer.clone(),
        endpoint: config.kafka.endpoint(&config.service_name),
        topic: config.kafka_topic.clone(),
        timeout,
        zipkin_ui_url: config
            .zipkin_ui_url
            .clone()
            .filter(|u| !u.trim().is_empty()),
        metrics: Metrics::new(),
        deliveries: Deliveries::default(),
        stall_timeout: config.kafka_stall_timeout,
    });
    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .map_err(|source| Error::Bind {
            addr: config.listen_addr,
            source,
        })?;
    let local = listener.local_addr().map_err(Error::Serve)?;
    tracing::info!(addr = %local, topic = %config.kafka_topic, "producer listening");
    axum::serve(listener, router(app, config.max_body_bytes))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(Error::Serve)?;
    tracing::info!("HTTP server stopped; flushing the Kafka producer");
    let flushed =
        tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await;
    match flushed {
        Ok(Ok(())) => tracing::info!("producer flushed"),
        Ok(Err(e)) => tracing::warn!(error = %e, "flushing the producer failed"),
        Err(e) => tracing::warn!(error = %e, "flush task failed"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ct(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
        h
    }

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn a_json_message_with_key_and_payload_is_accepted() {
        let m = parse_one(
            &ct("application/json; charset=utf-8"),
            &b(r#"{"key":"k","payload":{"a":1}}"#),
        )
        .unwrap();
        assert_eq!(m.key.as_deref(), Some("k"));
        assert_eq!(m.value, br#"{"a":1}"#);
    }

    #[test]
    fn a_text_plain_body_is_the_payload() {
        let m = parse_one(&ct("text/plain"), &b("hello")).unwrap();
        assert_eq!((m.key, m.value), (None, b"hello".to_vec()));
    }

    #[test]
    fn bad_bodies_get_400_with_a_specific_error() {
        let cases = [
            ("application/json", "", "empty_body"),
            ("application/json", "  \n", "empty_body"),
            ("application/json", "{not json", "malformed_json"),
            ("application/json", r#"{"key":"k"}"#, "invalid_message"),
            ("application/json", r#"{"payload":null}"#, "invalid_message"),
            (
                "application/json",
                r#"{"key":5,"payload":1}"#,
                "invalid_message",
            ),
            // The fields in order, as an array, are not a message.
            ("application/json", r#"["k",{"a":1}]"#, "invalid_message"),
            ("application/json", r#"[null,1]"#, "invalid_message"),
            ("text/plain", "", "empty_body"),
        ];
        for (t, body, error) in cases {
            let e = parse_one(&ct(t), &b(body)).unwrap_err();
            assert_eq!(
                (e.status, e.error),
                (StatusCode::BAD_REQUEST, error),
                "{body:?}: {e:?}"
            );
        }
    }

    #[test]
    fn other_or_missing_content_types_get_415() {
        for h in [ct("application/xml"), HeaderMap::new()] {
            let e = parse_one(&h, &b("{}")).unwrap_err();
            assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        }
        let e = parse_batch(&ct("text/plain"), &b("[]")).unwrap_err();
        assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[test]
    fn a_batch_is_validated_as_a_whole_before_anything_is_sent() {
        let ok = parse_batch(
            &ct("application/json"),
            &b(r#"[{"payload":1},{"key":"x","payload":"y"}]"#),
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        let e = parse_batch(
            &ct("application/json"),
            &b(r#"[{"payload":1},{"key":"x"}]"#),
        )
        .unwrap_err();
        assert!(e.reason.starts_with("message 1:"), "{e:?}");
        let e = parse_batch(&ct("application/json"), &b("[]")).unwrap_err();
        assert_eq!(e.error, "empty_batch");
        let e = parse_batch(&ct("application/json"), &b(r#"[{"payload":1},["k",2]]"#)).unwrap_err();
        assert_eq!(e.error, "invalid_message");
        assert!(e.reason.contains("expected a map"), "{e:?}");
    }

    #[test]
    fn the_config_reads_the_documented_variables_with_their_defaults() {
        use clap::Parser;
        let c =
            Config::try_parse_from(["producer", "--kafka-bootstrap-servers", "k:9092"]).unwrap();
        assert_eq!(c.listen_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(c.kafka_topic, "messages");
        assert_eq!(c.max_body_bytes, 1_048_576);
        assert_eq!(c.kafka_message_timeout_ms, 5000);
        assert_eq!(c.kafka_stall_timeout, Duration::from_secs(60));
        assert_eq!(c.service_name, SERVICE_NAME);
    }
}

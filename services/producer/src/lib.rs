//! The producer: an HTTP API that turns each accepted message into a Kafka record, traced
//! from the HTTP request (continuing the caller's `traceparent`) to the broker's ack.
//!
//! - `POST /messages`: `application/json` `{"key": optional string, "payload": any JSON}` or
//!   `text/plain` (the body is the payload, no key). `202` only after the broker acked, with
//!   `{topic, partition, offset, trace_id}` (+ `zipkin_url` when `ZIPKIN_UI_URL` is set) and a
//!   W3C `traceresponse` header.
//! - `POST /messages/batch`: a JSON array of at most `MAX_BATCH_ITEMS` such objects; all
//!   validated before any is sent; answered per message (202 all acked, 207 some, else the
//!   first failure's status).
//! - Bad input never reaches Kafka: 400 (empty body, malformed JSON, invalid message), 408 (a
//!   body slower than `REQUEST_BODY_TIMEOUT`), 413 (body over `MAX_BODY_BYTES`, too many batch
//!   items), 415 (other, no or several content types). Kafka not acking within
//!   `KAFKA_MESSAGE_TIMEOUT_MS`: 503; more than `MAX_CONCURRENT_REQUESTS` at once: 503 without
//!   queueing (the refused body read and dropped). Every error body is
//!   `{"error": "...", "reason": "..."}` ([`error::AppError`]).
//! - `GET /healthz` (alive unless deliveries have been timing out, none acked, or readiness has
//!   been failing, for longer than `KAFKA_STALL_TIMEOUT`: see [`stall`] and
//!   [`journey_messaging::health`]), `GET /readyz` (the topic's metadata answers and the
//!   idempotent producer has its id: [`idempotence`]).
//!
//! One idempotent `acks=all` [`FutureProducer`] serves the whole process.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod error;
pub mod idempotence;
mod input;
pub mod server;
pub mod stall;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, State};
use axum::http::{HeaderMap, Method, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use error::{AppError, ErrorBody};
use futures::StreamExt as _;
use idempotence::ProducerContext;
use input::Message;
use journey_messaging::{KafkaArgs, KafkaEndpoint, Outgoing, Sent, health};
use journey_telemetry::Metrics;
use opentelemetry_semantic_conventions::attribute::{
    HTTP_REQUEST_METHOD, HTTP_RESPONSE_STATUS_CODE, HTTP_ROUTE, URL_PATH, URL_SCHEME,
};
use rdkafka::producer::{FutureProducer, Producer as _};
use serde::Serialize;
use stall::Deliveries;
use tower_http::timeout::RequestBodyDeadlineLayer;
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
    /// Most messages in one `POST /messages/batch` (more get 413 `too_many_messages`).
    #[arg(long, env = "MAX_BATCH_ITEMS", default_value_t = 1000)]
    #[arg(value_parser = clap::value_parser!(u32).range(1..))]
    pub max_batch_items: u32,
    /// Most requests to `/messages` and `/messages/batch` served at once; more get 503
    /// `overloaded` with `Retry-After` instead of queueing (memory stays bounded; the refused
    /// body is read and dropped first, so that the client reads the answer).
    #[arg(long, env = "MAX_CONCURRENT_REQUESTS", default_value_t = 64)]
    #[arg(value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_requests: u32,
    /// Largest request head (all header names and values), in bytes: larger ones get 431
    /// `header_fields_too_large`. (hyper refuses heads over about 400 KiB by itself, without a
    /// body.)
    #[arg(long, env = "MAX_HEADER_BYTES", default_value_t = 16_384)]
    #[arg(value_parser = clap::value_parser!(u32).range(1024..))]
    pub max_header_bytes: u32,
    /// Most HTTP connections open at once; more wait in the kernel's backlog until one closes.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 1024)]
    #[arg(value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// How long a connection may take to send a complete request head (humantime): slower
    /// clients, and keep-alive connections idle that long, are closed.
    #[arg(long, env = "HEADER_READ_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s")]
    #[serde(serialize_with = "journey_messaging::serialize_duration")]
    pub header_read_timeout: Duration,
    /// How long a request body may take to arrive, in all (humantime); a slower upload gets
    /// 408 `request_timeout`.
    #[arg(long, env = "REQUEST_BODY_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    #[serde(serialize_with = "journey_messaging::serialize_duration")]
    pub request_body_timeout: Duration,
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

struct App {
    producer: FutureProducer<ProducerContext>,
    /// The idempotent producer's state (readiness).
    idempotence: ProducerContext,
    endpoint: KafkaEndpoint,
    topic: String,
    timeout: Duration,
    zipkin_ui_url: Option<String>,
    metrics: Metrics,
    deliveries: Deliveries,
    stall_timeout: Duration,
    max_batch_items: usize,
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
                // A log line (with the trace id) but no span event: the send span's
                // attributes already say it (target MESSAGE_LOG_TARGET, see OTEL_FILTER).
                tracing::info!(
                    target: journey_telemetry::MESSAGE_LOG_TARGET,
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
                    return Err(AppError::PayloadTooLarge(format!(
                        "{e}: the Kafka record ({} bytes of value) is larger than Kafka accepts",
                        msg.value.len()
                    )));
                }
                Err(AppError::KafkaUnavailable(format!(
                    "{e} (bound: KAFKA_MESSAGE_TIMEOUT_MS={} ms)",
                    self.timeout.as_millis()
                )))
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

/// Where an acked message is.
#[derive(Debug, Serialize)]
struct Position {
    topic: String,
    partition: i32,
    offset: i64,
}

impl From<&Sent> for Position {
    fn from(s: &Sent) -> Self {
        Position {
            topic: s.topic.clone(),
            partition: s.partition,
            offset: s.offset,
        }
    }
}

/// The 202 answer to `POST /messages`.
#[derive(Debug, Serialize)]
struct Accepted {
    #[serde(flatten)]
    position: Position,
    trace_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    zipkin_url: Option<String>,
}

async fn post_message(
    State(app): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let msg = input::parse_one(&headers, &body?)?;
    let sent = app.send(&msg).await?;
    let trace_id = current_trace_id().or(sent.trace_id.clone());
    let zipkin_url = app.zipkin_url(trace_id.as_deref());
    let accepted = Accepted {
        position: Position::from(&sent),
        trace_id,
        zipkin_url,
    };
    Ok((StatusCode::ACCEPTED, axum::Json(accepted)).into_response())
}

/// One message of a batch: acked where, or failed why.
#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
enum ItemOutcome {
    Acked {
        index: usize,
        #[serde(flatten)]
        position: Position,
    },
    Failed {
        index: usize,
        #[serde(flatten)]
        error: ErrorBody,
    },
}

/// The answer to `POST /messages/batch`: every item's outcome, so a client retries only the
/// failed ones.
#[derive(Debug, Serialize)]
struct BatchAnswer {
    trace_id: Option<String>,
    count: usize,
    acked: usize,
    failed: usize,
    messages: Vec<ItemOutcome>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    error: Option<ErrorBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    zipkin_url: Option<String>,
}

/// 202 when every message was acked; 207 when some were and some were not; when none was,
/// the first failure's status (503, 413) with its `error`/`reason`. Each item says which.
async fn post_batch(
    State(app): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let messages = input::parse_batch(&headers, &body?, app.max_batch_items)?;
    let results = futures::future::join_all(messages.iter().map(|m| app.send(m))).await;
    let trace_id = current_trace_id();
    let zipkin_url = app.zipkin_url(trace_id.as_deref());
    let mut first_failure = None;
    let messages: Vec<ItemOutcome> = results
        .iter()
        .enumerate()
        .map(|(index, r)| match r {
            Ok(sent) => ItemOutcome::Acked {
                index,
                position: Position::from(sent),
            },
            Err(e) => {
                first_failure.get_or_insert(e);
                ItemOutcome::Failed {
                    index,
                    error: e.body(),
                }
            }
        })
        .collect();
    let count = messages.len();
    let failed = messages
        .iter()
        .filter(|m| matches!(m, ItemOutcome::Failed { .. }))
        .count();
    let acked = count - failed;
    let (status, error) = match first_failure {
        None => (StatusCode::ACCEPTED, None),
        Some(_) if acked > 0 => (StatusCode::MULTI_STATUS, None),
        Some(first) => (first.status(), Some(first.body())),
    };
    if let Some(first) = first_failure {
        tracing::warn!(acked, failed, error = first.code(), reason = %first, "batch not fully acked");
    }
    let answer = BatchAnswer {
        trace_id,
        count,
        acked,
        failed,
        messages,
        error,
        zipkin_url,
    };
    Ok((status, axum::Json(answer)).into_response())
}

/// The producer's health: wedged when deliveries keep timing out (see [`stall`]), ready when
/// its topic's metadata answers and the idempotent producer has its id.
#[derive(Clone)]
struct KafkaHealth(Shared);

impl health::Checks for KafkaHealth {
    fn wedged(&self, limit: Duration, now: Instant) -> Option<String> {
        self.0.deliveries.wedged(limit, now)
    }

    fn ready(&self) -> Result<(), String> {
        journey_messaging::readiness::check_topic(self.0.producer.client(), &self.0.topic)?;
        self.0.idempotence.ready()
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

/// Limits on what one client can make the producer hold.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_body_bytes: usize,
    max_concurrent_requests: usize,
    request_body_timeout: Duration,
    max_header_bytes: usize,
}

/// Answers 431 when the request's headers take more than `max` bytes in all.
async fn limit_headers(
    State(max): State<usize>,
    req: Request<Body>,
    next: axum::middleware::Next,
) -> Response {
    let bytes: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if bytes > max {
        return AppError::HeadersTooLarge { bytes, max }.into_response();
    }
    next.run(req).await
}

/// The requests that may be in progress at once.
#[derive(Clone)]
struct Slots {
    free: Arc<tokio::sync::Semaphore>,
    /// `max_concurrent_requests` is the number of slots; a refused body may take up to
    /// `max_body_bytes` and `request_body_timeout` to arrive.
    limits: Limits,
}

/// Answers 503 `overloaded` without queueing while `MAX_CONCURRENT_REQUESTS` requests are in
/// progress. The refused request's body is read and dropped first (never held): a server that
/// answers and closes while the client is still sending makes the kernel reset the connection,
/// and the client sees a broken pipe instead of the 503 and its `Retry-After`.
async fn admit(
    State(slots): State<Slots>,
    req: Request<Body>,
    next: axum::middleware::Next,
) -> Response {
    match slots.free.try_acquire_owned() {
        Ok(_slot) => next.run(req).await,
        Err(_) => {
            let Limits {
                max_body_bytes,
                request_body_timeout,
                max_concurrent_requests,
                ..
            } = slots.limits;
            discard_body(req.into_body(), max_body_bytes, request_body_timeout).await;
            AppError::Overloaded(max_concurrent_requests).into_response()
        }
    }
}

/// Reads and drops up to `max_bytes` of `body` for at most `within`; past either the
/// connection closes after the answer, as it would have anyway.
async fn discard_body(body: Body, max_bytes: usize, within: Duration) {
    let mut chunks = body.into_data_stream();
    let mut read = 0usize;
    let drained = tokio::time::timeout(within, async {
        while let Some(chunk) = chunks.next().await {
            read += chunk?.len();
            if read > max_bytes {
                break;
            }
        }
        Ok::<_, axum::Error>(())
    })
    .await;
    match drained {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, read, "a refused request's body broke off"),
        Err(_elapsed) => tracing::debug!(read, "a refused request's body was still arriving"),
    }
}

fn router(app: Shared, limits: Limits) -> Router {
    let health = health::router(KafkaHealth(app.clone()), app.stall_timeout);
    let slots = Slots {
        free: Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent_requests)),
        limits,
    };
    let traced = Router::new()
        .route("/messages", post(post_message))
        .route("/messages/batch", post(post_batch))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(RequestBodyDeadlineLayer::new(limits.request_body_timeout))
        .layer(axum::middleware::map_response(add_traceresponse))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(record_response),
        )
        .layer(axum::middleware::from_fn_with_state(slots, admit));
    Router::new()
        .merge(health)
        .merge(traced)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            limits.max_header_bytes,
            limit_headers,
        ))
        .layer(axum::middleware::map_response(error::log_errors))
        .with_state(app)
}

/// Any other path: 404 in the API's error shape.
async fn not_found(method: Method, uri: Uri) -> AppError {
    AppError::NotFound {
        method,
        path: uri.path().to_string(),
    }
}

/// A known path with another method: 405 in the API's error shape.
async fn method_not_allowed(method: Method, uri: Uri) -> AppError {
    AppError::MethodNotAllowed {
        method,
        path: uri.path().to_string(),
    }
}

/// Runs the producer until `shutdown` resolves: stops accepting, finishes in-flight requests,
/// then flushes the Kafka producer.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let timeout = Duration::from_millis(config.kafka_message_timeout_ms);
    let idempotence = ProducerContext::default();
    let producer: FutureProducer<ProducerContext> = config
        .kafka
        .producer_config(&config.service_name, config.kafka_message_timeout_ms)
        .set(
            "statistics.interval.ms",
            idempotence::STATISTICS_INTERVAL_MS.to_string(),
        )
        .create_with_context(idempotence.clone())?;
    let app = Arc::new(App {
        producer: producer.clone(),
        idempotence,
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
        max_batch_items: config.max_batch_items as usize,
    });
    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .map_err(|source| Error::Bind {
            addr: config.listen_addr,
            source,
        })?;
    let local = listener.local_addr().map_err(Error::Serve)?;
    tracing::info!(addr = %local, topic = %config.kafka_topic, "producer listening");
    let limits = Limits {
        max_body_bytes: config.max_body_bytes,
        max_concurrent_requests: config.max_concurrent_requests as usize,
        request_body_timeout: config.request_body_timeout,
        max_header_bytes: config.max_header_bytes as usize,
    };
    let connections = server::ConnectionLimits {
        max_connections: config.max_connections as usize,
        header_read_timeout: config.header_read_timeout,
        // A request accepted just before the signal needs at most its body's time and the
        // broker's ack.
        drain_timeout: config.request_body_timeout + timeout,
    };
    server::serve(listener, router(app, limits), connections, shutdown).await;
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
    use journey_telemetry::test_support::with_only_env;

    #[test]
    fn the_config_reads_the_documented_variables_with_their_defaults() {
        use clap::{CommandFactory, Parser};
        let c = with_only_env(&Config::command(), &[], || {
            Config::try_parse_from(["producer", "--kafka-bootstrap-servers", "k:9092"])
        })
        .unwrap();
        assert_eq!(c.listen_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(c.kafka_topic, "messages");
        assert_eq!(c.max_body_bytes, 1_048_576);
        assert_eq!(c.kafka_message_timeout_ms, 5000);
        assert_eq!(c.kafka_stall_timeout, Duration::from_secs(60));
        assert_eq!(c.service_name, SERVICE_NAME);
    }
}

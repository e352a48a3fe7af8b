//! Kafka + HTTP trace-context carriers and OpenTelemetry messaging span helpers.
//!
//! This crate is the only Journey code that touches the OpenTelemetry propagation API
//! (W3C `traceparent`/`tracestate` and `baggage`). Its public API is used by the producer,
//! the consumer and `journeyctl`; keep it stable.
//!
//! - [`KafkaArgs`]: the shared Kafka client configuration (`KAFKA_*` env), flattened into
//!   every binary's clap config, producing `rdkafka::ClientConfig`s.
//! - [`propagation`]: inject the current trace context into rdkafka [`OwnedHeaders`]
//!   (keeping other headers and their order) and extract it back, tolerating anything a
//!   broker may hand us.
//! - [`readiness`]: the Kafka check behind the services' `/readyz`.
//! - [`health`]: `/healthz` and `/readyz` for every service holding a Kafka client, with the
//!   liveness rule for a wedged client.
//! - [`http`]: the same for HTTP requests (`traceparent` in, `traceresponse` out), on
//!   `opentelemetry-http`'s `HeaderMap` carriers.
//! - [`spans`]: `send {topic}` (PRODUCER) and `process {topic}` (CONSUMER) spans named and
//!   attributed per the current messaging semantic conventions, a traced send helper, and
//!   [`TraceMode`] (parent | link | both) for consumers.
//!
//! [`OwnedHeaders`]: rdkafka::message::OwnedHeaders
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod config;
pub mod health;
pub mod http;
pub mod propagation;
pub mod readiness;
pub mod spans;
#[cfg(test)]
mod testing;

pub use config::{DEFAULT_MESSAGE_MAX_BYTES, KafkaArgs, KafkaEndpoint, serialize_duration};
pub use propagation::{extract_context, inject_context};
pub use spans::{
    Enqueued, Outgoing, SendError, Sent, TraceMode, enqueue_traced, process_span, record_delivery,
    record_error, send_span, send_traced, trace_id_of,
};

//! Telemetry for every Journey binary: tracing + OpenTelemetry from the standard `OTEL_*`
//! environment, in one call.
//!
//! - [`TelemetrySettings::from_env`] resolves the environment ([`ENV_VARS`] lists every variable
//!   read, here or by the OpenTelemetry SDK on our behalf).
//! - [`init`] installs the `tracing` subscriber: logs (JSON or pretty, each line inside a span
//!   carrying `trace_id`/`span_id`), spans exported over OTLP (gRPC or HTTP/protobuf) and
//!   metrics over OTLP. It returns a [`TelemetryGuard`] that flushes and shuts the providers
//!   down when dropped.
//! - [`Metrics`] holds the Journey instruments (messages produced/consumed/failed/DLQ'd,
//!   processing duration) and registers the consumer lag gauge ([`Metrics::consumer_lag`]).
//! - [`print_config`] implements every binary's `--print-config` contract; [`serve`] and
//!   [`run_with_telemetry`] are the rest of a binary's `main` (runtime, telemetry, flush);
//!   [`shutdown_signal`] is when it stops.
//!
//! This crate never touches the propagation API: `journey-messaging` owns trace-context
//! injection and extraction.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod config_doc;
mod error;
mod init;
mod logfmt;
mod main_support;
mod metrics;
mod settings;
mod signal;
#[cfg(feature = "test-support")]
pub mod test_support;

pub use config_doc::{accepted_env, config_document, print_config};
pub use error::Error;
pub use init::{MESSAGE_LOG_TARGET, TelemetryGuard, init};
pub use logfmt::current_trace_ids;
pub use main_support::{print_config_exit, run_with_telemetry, serve};
pub use metrics::Metrics;
pub use settings::{ENV_VARS, LogFormat, OtlpProtocol, TelemetrySettings};
pub use signal::shutdown_signal;

//! [`Error`]: what can go wrong installing telemetry or printing the configuration.

/// Errors from [`init`](crate::init) and [`print_config`](crate::print_config).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid {var}={value:?}: {reason}")]
    InvalidEnv {
        var: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("building the OTLP span exporter: {0}")]
    SpanExporter(#[source] opentelemetry_otlp::ExporterBuildError),
    #[error("building the OTLP metric exporter: {0}")]
    MetricExporter(#[source] opentelemetry_otlp::ExporterBuildError),
    #[error("installing the tracing subscriber: {0}")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
    #[error("RUST_LOG: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    #[error("serializing the configuration: {0}")]
    Json(#[from] serde_json::Error),
}

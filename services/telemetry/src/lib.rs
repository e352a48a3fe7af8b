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
//!   [`run_with_telemetry`] are the rest of a binary's `main` (runtime, telemetry, flush).
//!
//! This crate never touches the propagation API: `journey-messaging` owns trace-context
//! injection and extraction.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

use std::fmt;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, ObservableGauge};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::Serialize;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

mod logfmt;
mod main_support;

pub use logfmt::current_trace_ids;
pub use main_support::{print_config_exit, run_with_telemetry, serve};

/// Every environment variable telemetry reads (directly or through the OpenTelemetry SDK).
pub const ENV_VARS: &[&str] = &[
    "OTEL_SERVICE_NAME",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_SDK_DISABLED",
    "OTEL_METRIC_EXPORT_INTERVAL",
    "OTEL_BSP_SCHEDULE_DELAY",
    "RUST_LOG",
    "LOG_FORMAT",
];

/// Errors from [`init`] and [`print_config`].
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

/// Log line format (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line (the default; what the chart uses).
    Json,
    /// Human-readable lines for a terminal.
    Pretty,
}

/// OTLP transport (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum OtlpProtocol {
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// Telemetry settings resolved from the environment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TelemetrySettings {
    /// `OTEL_SERVICE_NAME`, else the binary's default (e.g. the consumer's role).
    pub service_name: String,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (the SDK default when unset).
    pub otlp_endpoint: Option<String>,
    pub otlp_protocol: OtlpProtocol,
    /// `OTEL_TRACES_SAMPLER` / `_ARG` (read by the SDK; shown here for `--print-config`).
    pub traces_sampler: Option<String>,
    pub traces_sampler_arg: Option<String>,
    pub resource_attributes: Option<String>,
    /// `OTEL_SDK_DISABLED=true`: logs only, no spans or metrics exported.
    pub sdk_disabled: bool,
    pub metric_export_interval_ms: Option<u64>,
    pub bsp_schedule_delay_ms: Option<u64>,
    /// `RUST_LOG`, default `info`.
    pub log_filter: String,
    pub log_format: LogFormat,
    /// Log lines go to stderr instead of stdout: for command-line tools whose stdout is their
    /// output (journeyctl). Services log to stdout, as containers expect. Not from the env.
    pub log_to_stderr: bool,
}

impl TelemetrySettings {
    /// Reads the process environment; `default_service_name` applies when
    /// `OTEL_SERVICE_NAME` is unset or empty.
    pub fn from_env(default_service_name: &str) -> Result<Self, Error> {
        Self::from_lookup(default_service_name, |k| std::env::var(k).ok())
    }

    /// Like [`TelemetrySettings::from_env`] with an explicit lookup (tests, tools).
    pub fn from_lookup(
        default_service_name: &str,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let otlp_protocol = match get("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
            None | Some("grpc") => OtlpProtocol::Grpc,
            Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
            Some(other) => {
                return Err(Error::InvalidEnv {
                    var: "OTEL_EXPORTER_OTLP_PROTOCOL",
                    value: other.to_string(),
                    reason: "expected grpc or http/protobuf",
                });
            }
        };
        let log_format = match get("LOG_FORMAT").map(|v| v.to_ascii_lowercase()).as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("pretty") | Some("text") => LogFormat::Pretty,
            Some(other) => {
                return Err(Error::InvalidEnv {
                    var: "LOG_FORMAT",
                    value: other.to_string(),
                    reason: "expected json or pretty",
                });
            }
        };
        let sdk_disabled = match get("OTEL_SDK_DISABLED")
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(Error::InvalidEnv {
                    var: "OTEL_SDK_DISABLED",
                    value: other.to_string(),
                    reason: "expected true or false",
                });
            }
        };
        let millis = |var: &'static str| -> Result<Option<u64>, Error> {
            get(var)
                .map(|v| {
                    v.parse::<u64>().map_err(|_| Error::InvalidEnv {
                        var,
                        value: v.clone(),
                        reason: "expected milliseconds (an integer)",
                    })
                })
                .transpose()
        };
        Ok(TelemetrySettings {
            service_name: get("OTEL_SERVICE_NAME")
                .unwrap_or_else(|| default_service_name.to_string()),
            otlp_endpoint: get("OTEL_EXPORTER_OTLP_ENDPOINT"),
            otlp_protocol,
            traces_sampler: get("OTEL_TRACES_SAMPLER"),
            traces_sampler_arg: get("OTEL_TRACES_SAMPLER_ARG"),
            resource_attributes: get("OTEL_RESOURCE_ATTRIBUTES"),
            sdk_disabled,
            metric_export_interval_ms: millis("OTEL_METRIC_EXPORT_INTERVAL")?,
            bsp_schedule_delay_ms: millis("OTEL_BSP_SCHEDULE_DELAY")?,
            log_filter: get("RUST_LOG").unwrap_or_else(|| "info".to_string()),
            log_format,
            log_to_stderr: false,
        })
    }
}

/// Keeps the providers alive; dropping it flushes and shuts them down (spans and metrics
/// still buffered are exported). Drop it outside async code or call [`TelemetryGuard::shutdown`]
/// from a blocking thread: shutting down blocks until the exporters are done.
#[must_use = "dropping the guard shuts telemetry down"]
pub struct TelemetryGuard {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

impl fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("tracing", &self.tracer.is_some())
            .field("metrics", &self.meter.is_some())
            .finish()
    }
}

impl TelemetryGuard {
    /// Flushes and shuts both providers down now (idempotent).
    pub fn shutdown(&mut self) {
        if let Some(tracer) = self.tracer.take() {
            if let Err(e) = tracer.force_flush() {
                eprintln!("telemetry: flushing spans failed: {e}");
            }
            if let Err(e) = tracer.shutdown() {
                eprintln!("telemetry: shutting the tracer provider down failed: {e}");
            }
        }
        if let Some(meter) = self.meter.take() {
            if let Err(e) = meter.force_flush() {
                eprintln!("telemetry: flushing metrics failed: {e}");
            }
            if let Err(e) = meter.shutdown() {
                eprintln!("telemetry: shutting the meter provider down failed: {e}");
            }
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Targets whose spans never go to OpenTelemetry (the exporter's own HTTP/gRPC stack).
const OTEL_FILTER: &str = "info,h2=off,hyper=off,hyper_util=off,tonic=off,tower=off,reqwest=off,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off";

/// Installs the global `tracing` subscriber and OpenTelemetry providers. Call it once, inside
/// a Tokio runtime (the gRPC exporter needs one), before the service starts.
///
/// `RUST_LOG` filters log lines only; spans at `info` and above always reach OpenTelemetry.
pub fn init(settings: &TelemetrySettings) -> Result<TelemetryGuard, Error> {
    let log_filter = EnvFilter::try_new(&settings.log_filter)?;

    if settings.sdk_disabled {
        let fmt_layer =
            logfmt::layer(settings.log_format, settings.log_to_stderr).with_filter(log_filter);
        tracing_subscriber::registry().with(fmt_layer).try_init()?;
        return Ok(TelemetryGuard {
            tracer: None,
            meter: None,
        });
    }

    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .build();

    let span_exporter = match settings.otlp_protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build(),
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .build(),
    }
    .map_err(Error::SpanExporter)?;
    let tracer_provider = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_batch_exporter(span_exporter)
        .build();

    let metric_exporter = match settings.otlp_protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .build(),
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .build(),
    }
    .map_err(Error::MetricExporter)?;
    let meter_provider = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(PeriodicReader::builder(metric_exporter).build())
        .build();
    opentelemetry::global::set_meter_provider(meter_provider.clone());

    let tracer = tracer_provider.tracer("journey");
    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(false)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_filter(EnvFilter::try_new(OTEL_FILTER)?);

    let fmt_layer =
        logfmt::layer(settings.log_format, settings.log_to_stderr).with_filter(log_filter);
    tracing_subscriber::registry()
        .with(otel_layer)
        .with(fmt_layer)
        .try_init()?;

    Ok(TelemetryGuard {
        tracer: Some(tracer_provider),
        meter: Some(meter_provider),
    })
}

/// The Journey instruments, created from the global meter provider (install it with [`init`]
/// first, or the instruments are no-ops).
#[derive(Debug, Clone)]
pub struct Metrics {
    /// `journey.messages.produced`: messages the broker acknowledged.
    pub produced: Counter<u64>,
    /// `journey.messages.consumed`: messages processed successfully.
    pub consumed: Counter<u64>,
    /// `journey.messages.failed`: failed processing attempts (and failed sends).
    pub failed: Counter<u64>,
    /// `journey.messages.dlq`: messages sent to the dead-letter topic.
    pub dead_lettered: Counter<u64>,
    /// `journey.message.processing.duration` (seconds).
    pub processing_duration: Histogram<f64>,
}

impl Metrics {
    pub fn new() -> Self {
        let meter = opentelemetry::global::meter("journey");
        Metrics {
            produced: meter
                .u64_counter("journey.messages.produced")
                .with_description("Messages acknowledged by Kafka")
                .with_unit("{message}")
                .build(),
            consumed: meter
                .u64_counter("journey.messages.consumed")
                .with_description("Messages consumed and processed successfully")
                .with_unit("{message}")
                .build(),
            failed: meter
                .u64_counter("journey.messages.failed")
                .with_description("Failed processing attempts and failed sends")
                .with_unit("{message}")
                .build(),
            dead_lettered: meter
                .u64_counter("journey.messages.dlq")
                .with_description("Messages sent to the dead-letter topic")
                .with_unit("{message}")
                .build(),
            processing_duration: meter
                .f64_histogram("journey.message.processing.duration")
                .with_description("Time to process one consumed message, retries included")
                .with_unit("s")
                .build(),
        }
    }

    /// `messaging.kafka.consumer.lag` ({message}): an observable gauge reporting, at each
    /// export, the `(lag, attributes)` points `observe` returns (the consumer's latest
    /// librdkafka statistics). Keep the returned gauge for as long as it should report.
    pub fn consumer_lag(
        observe: impl Fn() -> Vec<(u64, Vec<KeyValue>)> + Send + Sync + 'static,
    ) -> ObservableGauge<u64> {
        opentelemetry::global::meter("journey")
            .u64_observable_gauge("messaging.kafka.consumer.lag")
            .with_description(
                "Messages between the consumer group's committed offset and the end of the partition",
            )
            .with_unit("{message}")
            .with_callback(move |gauge| {
                for (lag, attrs) in observe() {
                    gauge.observe(lag, &attrs);
                }
            })
            .build()
    }

    /// The attribute set every Journey metric point carries.
    pub fn topic_attrs(topic: &str) -> [KeyValue; 1] {
        [KeyValue::new(
            opentelemetry_semantic_conventions::attribute::MESSAGING_DESTINATION_NAME,
            topic.to_string(),
        )]
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Every environment variable a clap command reads (its args' `env`, flattened groups
/// included) plus telemetry's [`ENV_VARS`], sorted and unique.
pub fn accepted_env(command: &clap::Command) -> Vec<String> {
    let mut vars: Vec<String> = command
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .chain(ENV_VARS.iter().map(|s| s.to_string()))
        .collect();
    vars.sort();
    vars.dedup();
    vars
}

/// The `--print-config` document: `{"config": {...config, "telemetry": {...}},
/// "accepted_env": [...]}`. Secrets must already be redacted by `config`'s `Serialize`.
pub fn config_document(
    config: &impl Serialize,
    telemetry: &TelemetrySettings,
    command: &clap::Command,
) -> Result<serde_json::Value, Error> {
    let mut config = serde_json::to_value(config)?;
    if let serde_json::Value::Object(map) = &mut config {
        map.insert("telemetry".into(), serde_json::to_value(telemetry)?);
    }
    Ok(serde_json::json!({
        "config": config,
        "accepted_env": accepted_env(command),
    }))
}

/// Prints [`config_document`] as pretty JSON on stdout (the binary then exits 0).
pub fn print_config(
    config: &impl Serialize,
    telemetry: &TelemetrySettings,
    command: &clap::Command,
) -> Result<(), Error> {
    let doc = config_document(config, telemetry, command)?;
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}

/// Resolves when the process gets SIGTERM or SIGINT (Ctrl-C): the shutdown future every
/// Journey binary passes to its `run`.
pub async fn shutdown_signal() {
    // A handler that cannot be installed leaves that signal to its default action (SIGTERM
    // then kills the process without draining): say so, and wait for the other one.
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot handle SIGINT: Ctrl-C will not drain");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot handle SIGTERM: a stop will not drain");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received: shutting down"),
        _ = term => tracing::info!("SIGTERM received: shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn an_empty_environment_gives_grpc_json_logs_info_and_the_default_service_name() {
        let s = TelemetrySettings::from_lookup("relay", lookup(&[])).unwrap();
        assert_eq!(s.service_name, "relay");
        assert_eq!(s.otlp_protocol, OtlpProtocol::Grpc);
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.log_filter, "info");
        assert!(!s.sdk_disabled);
    }

    #[test]
    fn otel_service_name_overrides_the_default_and_blank_values_count_as_unset() {
        let s = TelemetrySettings::from_lookup(
            "relay",
            lookup(&[("OTEL_SERVICE_NAME", "edge"), ("RUST_LOG", "  ")]),
        )
        .unwrap();
        assert_eq!(s.service_name, "edge");
        assert_eq!(s.log_filter, "info");
    }

    #[test]
    fn http_protobuf_pretty_and_sdk_disabled_are_understood() {
        let s = TelemetrySettings::from_lookup(
            "p",
            lookup(&[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("LOG_FORMAT", "pretty"),
                ("OTEL_SDK_DISABLED", "TRUE"),
                ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ]),
        )
        .unwrap();
        assert_eq!(s.otlp_protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(s.log_format, LogFormat::Pretty);
        assert!(s.sdk_disabled);
        assert_eq!(s.bsp_schedule_delay_ms, Some(100));
    }

    #[test]
    fn unknown_protocol_format_or_interval_values_are_rejected_with_the_variable_name() {
        for (k, v) in [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("LOG_FORMAT", "xml"),
            ("OTEL_SDK_DISABLED", "maybe"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "5s"),
        ] {
            let e = TelemetrySettings::from_lookup("p", lookup(&[(k, v)])).unwrap_err();
            assert!(e.to_string().contains(k), "{e}");
        }
    }

    #[test]
    fn the_protocol_serializes_as_the_env_value() {
        let s = TelemetrySettings::from_lookup("p", lookup(&[])).unwrap();
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["otlp_protocol"], "grpc");
        assert_eq!(v["log_format"], "json");
    }

    #[derive(clap::Parser, Serialize)]
    struct Demo {
        #[arg(long, env = "DEMO_ADDR", default_value = "0.0.0.0:1")]
        addr: String,
        #[arg(long, env = "DEMO_SECRET")]
        #[serde(skip)]
        secret: Option<String>,
    }

    #[test]
    fn the_config_document_lists_clap_and_telemetry_env_and_leaves_out_what_config_skips() {
        use clap::{CommandFactory, Parser};
        // Whatever the caller's environment holds: the default and the flag are what is read.
        let demo = temp_env::with_vars_unset(["DEMO_ADDR", "DEMO_SECRET"], || {
            Demo::parse_from(["demo", "--secret", "hunter2"])
        });
        let s = TelemetrySettings::from_lookup("demo", lookup(&[])).unwrap();
        let doc = config_document(&demo, &s, &Demo::command()).unwrap();
        assert!(doc["config"].get("secret").is_none(), "{doc}");
        assert_eq!(doc["config"]["addr"], "0.0.0.0:1");
        assert_eq!(doc["config"]["telemetry"]["service_name"], "demo");
        let env: Vec<&str> = doc["accepted_env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(env.contains(&"DEMO_ADDR") && env.contains(&"DEMO_SECRET"));
        for v in ENV_VARS {
            assert!(env.contains(v), "{v} missing");
        }
        assert!(!doc.to_string().contains("hunter2"));
    }
}

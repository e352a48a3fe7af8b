//! [`init`]: the `tracing` subscriber and the OpenTelemetry providers, installed once; the
//! [`TelemetryGuard`] that flushes and shuts them down.

use std::fmt;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::{Error, OtlpProtocol, TelemetrySettings, logfmt};

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

/// The target of the services' one log line per message ("message acked", "forwarded",
/// "message reached the sink"): a log line with the message's trace id, never a span event
/// (the spans' attributes already say the same, and an event per message doubled its cost).
pub const MESSAGE_LOG_TARGET: &str = "journey::message";

/// Targets whose spans and events never go to OpenTelemetry: the exporter's own HTTP/gRPC
/// stack, and the per-message log lines ([`MESSAGE_LOG_TARGET`]).
const OTEL_FILTER: &str = "info,journey::message=off,h2=off,hyper=off,hyper_util=off,tonic=off,tower=off,reqwest=off,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off";

/// The OTLP exporter `$kind` (`SpanExporter`, `MetricExporter`: builders with no common trait)
/// over `$protocol`'s transport.
macro_rules! otlp_exporter {
    ($kind:ident, $protocol:expr) => {
        match $protocol {
            OtlpProtocol::Grpc => opentelemetry_otlp::$kind::builder().with_tonic().build(),
            OtlpProtocol::HttpProtobuf => opentelemetry_otlp::$kind::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .build(),
        }
    };
}

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

    let span_exporter =
        otlp_exporter!(SpanExporter, settings.otlp_protocol).map_err(Error::SpanExporter)?;
    let tracer_provider = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_batch_exporter(span_exporter)
        .build();

    let metric_exporter =
        otlp_exporter!(MetricExporter, settings.otlp_protocol).map_err(Error::MetricExporter)?;
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
        // Static targets: cheaper per span than an EnvFilter, which also looks for dynamic
        // (span field) directives.
        .with_filter(OTEL_FILTER.parse::<Targets>()?);

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn per_message_log_lines_and_the_exporters_own_stack_never_reach_opentelemetry() {
        let otel: Targets = OTEL_FILTER.parse().unwrap();
        assert!(!otel.would_enable(MESSAGE_LOG_TARGET, &Level::INFO));
        assert!(!otel.would_enable("tonic::transport", &Level::INFO));
        assert!(otel.would_enable("producer", &Level::INFO));
        assert!(otel.would_enable("journey_messaging::spans", &Level::INFO));
        assert!(!otel.would_enable("producer", &Level::DEBUG));
    }
}

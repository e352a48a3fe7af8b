//! Log line formats: JSON (one object per line) and pretty, both carrying the OpenTelemetry
//! `trace_id`/`span_id` of the current span.

use std::fmt;

use opentelemetry::trace::TraceContextExt as _;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime as _, SystemTime};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::registry::LookupSpan;

use crate::LogFormat;

/// `(trace_id, span_id)` in lower-case hex of the innermost entered span that is traced.
///
/// Reads OpenTelemetry's current context (tracing-opentelemetry activates a span's context
/// when the span is entered) instead of asking the `tracing` dispatcher, which a formatter
/// cannot re-enter.
pub fn current_trace_ids() -> Option<(String, String)> {
    let sc = opentelemetry::Context::map_current(|cx| cx.span().span_context().clone());
    sc.is_valid()
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

pub(crate) fn layer<S>(
    format: LogFormat,
    to_stderr: bool,
) -> Box<dyn Layer<S> + Send + Sync + 'static>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync + 'static,
{
    let writer = if to_stderr {
        BoxMakeWriter::new(std::io::stderr)
    } else {
        BoxMakeWriter::new(std::io::stdout)
    };
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    match format {
        // JSON lines name the current span but never print its fields: not formatting them
        // at every span's start and `record` spares the hot path (see docs/benchmarks.md).
        LogFormat::Json => layer
            .fmt_fields(NoSpanFields)
            .event_format(JsonLines)
            .boxed(),
        LogFormat::Pretty => layer
            .event_format(Pretty(format::Format::default()))
            .boxed(),
    }
}

/// Formats no span fields: [`JsonLines`] reads an event's own fields with its own visitor.
struct NoSpanFields;

impl<'w> FormatFields<'w> for NoSpanFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        _writer: Writer<'w>,
        _fields: R,
    ) -> fmt::Result {
        Ok(())
    }
}

/// `{"timestamp", "level", "target", "message", "fields": {...}, "span", "trace_id", "span_id"}`.
struct JsonLines;

#[derive(Default)]
struct JsonFields {
    message: Option<String>,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl Visit for JsonFields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, serde_json::Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
}

impl JsonFields {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            });
        } else {
            self.fields.insert(field.name().to_string(), value);
        }
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut ts = String::new();
        SystemTime.format_time(&mut Writer::new(&mut ts))?;
        let meta = event.metadata();
        let mut visitor = JsonFields::default();
        event.record(&mut visitor);
        let mut obj = serde_json::Map::new();
        obj.insert("timestamp".into(), ts.into());
        obj.insert("level".into(), meta.level().as_str().into());
        obj.insert("target".into(), meta.target().into());
        obj.insert("message".into(), visitor.message.unwrap_or_default().into());
        if !visitor.fields.is_empty() {
            obj.insert("fields".into(), visitor.fields.into());
        }
        if let Some(span) = ctx.lookup_current() {
            obj.insert("span".into(), span.name().into());
        }
        if let Some((trace_id, span_id)) = current_trace_ids() {
            obj.insert("trace_id".into(), trace_id.into());
            obj.insert("span_id".into(), span_id.into());
        }
        let line = serde_json::Value::Object(obj).to_string();
        writeln!(writer, "{line}")
    }
}

/// The standard full format, prefixed with `trace_id=… span_id=…` inside traced spans.
struct Pretty(format::Format);

impl<S, N> FormatEvent<S, N> for Pretty
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if let Some((trace_id, span_id)) = current_trace_ids() {
            write!(writer, "trace_id={trace_id} span_id={span_id} ")?;
        }
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt as _;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buf {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn lines(format: LogFormat, f: impl FnOnce()) -> Vec<String> {
        use opentelemetry::trace::TracerProvider as _;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let buf = Buf::default();
        let writer = buf.clone();
        let fmt = tracing_subscriber::fmt::layer().with_writer(move || writer.clone());
        let fmt = match format {
            LogFormat::Json => fmt.event_format(JsonLines).boxed(),
            LogFormat::Pretty => fmt
                .with_ansi(false)
                .event_format(Pretty(format::Format::default()))
                .boxed(),
        };
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
            .with(fmt);
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn json_lines_inside_a_span_carry_its_trace_and_span_ids_and_fields() {
        let mut ids = None;
        let out = lines(LogFormat::Json, || {
            tracing::info!("outside");
            let span = tracing::info_span!("work");
            let _g = span.enter();
            ids = current_trace_ids();
            tracing::warn!(offset = 7, topic = "messages", "inside");
        });
        let (trace_id, span_id) = ids.expect("the span is traced");
        let outside: serde_json::Value = serde_json::from_str(&out[0]).unwrap();
        let inside: serde_json::Value = serde_json::from_str(&out[1]).unwrap();
        assert_eq!(outside["message"], "outside");
        assert!(outside.get("trace_id").is_none());
        assert_eq!(inside["level"], "WARN");
        assert_eq!(inside["message"], "inside");
        assert_eq!(inside["span"], "work");
        assert_eq!(inside["fields"]["offset"], 7);
        assert_eq!(inside["fields"]["topic"], "messages");
        assert_eq!(inside["trace_id"], trace_id.as_str());
        assert_eq!(inside["span_id"], span_id.as_str());
        assert_eq!(trace_id.len(), 32);
        assert_eq!(span_id.len(), 16);
    }

    #[test]
    fn pretty_lines_inside_a_span_start_with_its_trace_id() {
        let out = lines(LogFormat::Pretty, || {
            let span = tracing::info_span!("work");
            let _g = span.enter();
            tracing::info!("inside");
        });
        assert!(out[0].starts_with("trace_id="), "{}", out[0]);
        assert!(out[0].contains("inside"));
    }
}

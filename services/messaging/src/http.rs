//! Trace context over HTTP: continue a caller's `traceparent`, answer with `traceresponse`.

use ::http::{HeaderMap, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::propagation::propagator;

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        // HeaderMap keys are case-insensitive; the first value that is valid text wins.
        self.0.get_all(key).iter().find_map(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if value.is_empty() {
            return;
        }
        if let (Ok(name), Ok(value)) = (
            ::http::HeaderName::try_from(key),
            HeaderValue::try_from(value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The caller's context (`traceparent`, `tracestate`, `baggage`), empty when absent or invalid
/// (then said: a log line and `journey.trace_context.invalid`).
pub fn extract(headers: &HeaderMap) -> Context {
    let carrier = HeaderExtractor(headers);
    let cx = propagator().extract_with_context(&Context::new(), &carrier);
    crate::propagation::note_unusable("http", carrier.get("traceparent"), &cx);
    cx
}

/// Makes `span` continue the caller's trace when the request carries one. Call it before the
/// span is first entered (e.g. in tower-http's `make_span_with`). Without a usable
/// `traceparent` the span stays a new root.
pub fn continue_trace(span: &tracing::Span, headers: &HeaderMap) {
    // Extracted from an empty context: without a usable traceparent it holds no span (the span
    // becomes a root) but still carries the caller's baggage. Errors only mean tracing is
    // disabled (no OpenTelemetry layer): nothing to continue.
    let _ = span.set_parent(extract(headers));
}

/// Writes `span`'s context into outgoing request headers (for clients such as journeyctl).
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    propagator().inject_context(&span.context(), &mut HeaderInjector(headers));
}

/// The W3C `traceresponse` value for `span`: `00-{trace-id}-{span-id}-{flags}`; `None` when the
/// span is not traced.
pub fn traceresponse(span: &tracing::Span) -> Option<HeaderValue> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if !sc.is_valid() {
        return None;
    }
    let value = format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    );
    HeaderValue::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{TraceId, TraceState};

    #[test]
    fn a_valid_traceparent_in_any_case_is_extracted() {
        let mut h = HeaderMap::new();
        h.insert(
            "TraceParent",
            HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        );
        let cx = extract(&h);
        let sc = cx.span().span_context().clone();
        assert!(sc.is_remote());
        assert_eq!(
            sc.trace_id(),
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap()
        );
        assert_eq!(sc.trace_state(), &TraceState::default());
    }

    #[test]
    fn a_missing_or_bad_traceparent_gives_an_empty_context() {
        let mut h = HeaderMap::new();
        assert!(!extract(&h).span().span_context().is_valid());
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-00000000000000000000000000000000-b7ad6b7169203331-01"),
        );
        assert!(!extract(&h).span().span_context().is_valid());
    }
}

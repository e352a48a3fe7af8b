//! Trace context over HTTP: continue a caller's `traceparent`, answer with `traceresponse`.
//!
//! The `HeaderMap` carriers are `opentelemetry-http`'s: names match in any case; of repeated
//! headers the first is read (`baggage`: all of them).

use std::borrow::Cow;

use ::http::{HeaderMap, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::propagation::{fields, note_unusable, propagator};

/// The caller's context (`traceparent`, `tracestate`, `baggage`), empty when absent or invalid
/// (then said: a log line and `journey.trace_context.invalid`).
pub fn extract(headers: &HeaderMap) -> Context {
    let cx = propagator().extract_with_context(&Context::new(), &HeaderExtractor(headers));
    note_unusable("http", sent_traceparent(headers).as_deref(), &cx);
    cx
}

/// The `traceparent` the caller sent, also when it is not text (the extractor skips such a
/// value, but it was sent, and is counted as unusable).
fn sent_traceparent(headers: &HeaderMap) -> Option<Cow<'_, str>> {
    headers
        .get("traceparent")
        .map(|v| String::from_utf8_lossy(v.as_bytes()))
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

/// Writes `span`'s context into outgoing request headers (for clients such as journeyctl),
/// replacing trace-context headers already there. An empty `tracestate` is not written.
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    propagator().inject_context(&span.context(), &mut HeaderInjector(headers));
    // The injector writes empty values too (`tracestate` with no entries): they say nothing.
    for field in fields() {
        if headers.get(field).is_some_and(HeaderValue::is_empty) {
            headers.remove(field);
        }
    }
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
    use crate::propagation::unusable;
    use crate::testing::otel_subscriber;
    use opentelemetry::baggage::BaggageExt as _;
    use opentelemetry::trace::{TraceId, TraceState};

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn with_traceparent(value: HeaderValue) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("traceparent", value);
        h
    }

    #[test]
    fn a_valid_traceparent_in_any_case_is_extracted() {
        let mut h = HeaderMap::new();
        h.insert("TraceParent", HeaderValue::from_static(TP));
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
        assert!(!extract(&HeaderMap::new()).span().span_context().is_valid());
        let h = with_traceparent(HeaderValue::from_static(
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        ));
        assert!(!extract(&h).span().span_context().is_valid());
    }

    #[test]
    fn only_a_sent_but_unusable_traceparent_counts_as_invalid_even_when_it_is_not_text() {
        let counted = |h: &HeaderMap| unusable(sent_traceparent(h).as_deref(), &extract(h));
        assert!(
            !counted(&HeaderMap::new()),
            "no traceparent: nothing invalid"
        );
        assert!(!counted(&with_traceparent(HeaderValue::from_static(TP))));
        assert!(counted(&with_traceparent(HeaderValue::from_static(
            "00-zz-yy-01"
        ))));
        let not_text = HeaderValue::from_bytes(&[0xff, 0xfe]).unwrap();
        assert!(counted(&with_traceparent(not_text)));
    }

    #[test]
    fn the_callers_baggage_is_extracted_with_its_trace() {
        let mut h = with_traceparent(HeaderValue::from_static(TP));
        h.insert("baggage", HeaderValue::from_static("tenant=acme"));
        let cx = extract(&h);
        assert!(cx.span().span_context().is_valid());
        assert_eq!(
            cx.baggage().get("tenant").map(|v| v.to_string()),
            Some("acme".into())
        );
    }

    #[test]
    fn injection_replaces_a_stale_context_keeps_other_headers_and_writes_no_empty_tracestate() {
        let (subscriber, _provider) = otel_subscriber();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("client");
            let mut h = with_traceparent(HeaderValue::from_static(TP));
            h.insert("tracestate", HeaderValue::from_static("stale=1"));
            h.insert("accept", HeaderValue::from_static("application/json"));
            inject(&span, &mut h);
            let sent = extract(&h).span().span_context().clone();
            let own = span.context().span().span_context().clone();
            assert!(own.is_valid());
            assert_eq!(
                (sent.trace_id(), sent.span_id()),
                (own.trace_id(), own.span_id())
            );
            assert!(h.get("tracestate").is_none(), "{h:?}");
            assert_eq!(h["accept"], "application/json");
        });
    }

    #[test]
    fn traceresponse_names_a_traced_span_and_nothing_without_tracing() {
        assert!(traceresponse(&tracing::info_span!("untraced")).is_none());
        let (subscriber, _provider) = otel_subscriber();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("server");
            let sc = span.context().span().span_context().clone();
            assert_eq!(
                traceresponse(&span).unwrap(),
                format!("00-{}-{}-01", sc.trace_id(), sc.span_id()).as_str()
            );
        });
    }
}

//! Trace context (W3C `traceparent`/`tracestate`) and W3C `baggage` in Kafka record headers.
//!
//! Injection rebuilds the header list: every header that is not a trace-context header keeps
//! its place and value; a trace-context header that already exists (in any case) is replaced
//! in place by the new value (later duplicates are dropped) or removed when the new context
//! does not produce it; new trace-context headers are appended; an empty `tracestate` is never
//! written.
//!
//! Extraction never panics: null values and values that are not UTF-8 are ignored, keys match
//! in any case, and of duplicate keys the first usable one wins.

use std::collections::HashMap;
use std::sync::LazyLock;

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, TextMapCompositePropagator, TextMapPropagator};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use rdkafka::message::{Header, Headers, OwnedHeaders};

static PROPAGATOR: LazyLock<TextMapCompositePropagator> = LazyLock::new(|| {
    TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ])
});

/// The propagator Journey uses everywhere: W3C trace context + W3C baggage.
pub(crate) fn propagator() -> &'static TextMapCompositePropagator {
    &PROPAGATOR
}

static FIELDS: LazyLock<Vec<String>> = LazyLock::new(|| {
    PROPAGATOR
        .fields()
        .map(|f| f.to_ascii_lowercase())
        .collect()
});

/// The header names the propagators own, lower case (`traceparent`, `tracestate`, `baggage`).
/// Computed once: injection runs for every record sent.
pub fn fields() -> &'static [String] {
    &FIELDS
}

/// The key/value pairs the propagators produce for `cx`, empty values dropped.
pub(crate) fn carrier_for(cx: &Context) -> Vec<(String, String)> {
    let mut map: HashMap<String, String> = HashMap::new();
    PROPAGATOR.inject_context(cx, &mut map);
    let mut out: Vec<(String, String)> = fields()
        .iter()
        .filter_map(|f| map.remove(f).map(|v| (f.clone(), v)))
        .filter(|(_, v)| !v.trim().is_empty())
        .collect();
    // Anything a propagator wrote under a name it did not announce, in a stable order.
    let mut rest: Vec<(String, String)> = map
        .into_iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .collect();
    rest.sort();
    out.extend(rest);
    out
}

/// Headers carrying `cx`, built from `existing` (kept, in order) as described in the module
/// docs. Pass `None::<&OwnedHeaders>` for a fresh header list.
pub fn inject_context<H: Headers + ?Sized>(cx: &Context, existing: Option<&H>) -> OwnedHeaders {
    let injected = carrier_for(cx);
    let owned = fields();
    let is_trace_header = |key: &str| {
        let k = key.to_ascii_lowercase();
        owned.contains(&k) || injected.iter().any(|(f, _)| *f == k)
    };
    let mut written: Vec<String> = Vec::new();
    let count = existing.map(|h| h.count()).unwrap_or(0);
    let mut out = OwnedHeaders::new_with_capacity(count + injected.len());
    for idx in 0..count {
        let Some(h) = existing.and_then(|h| h.try_get(idx)) else {
            continue;
        };
        if is_trace_header(h.key) {
            let k = h.key.to_ascii_lowercase();
            if written.contains(&k) {
                continue; // a duplicate of a header we already replaced
            }
            if let Some((_, v)) = injected.iter().find(|(f, _)| *f == k) {
                out = out.insert(Header {
                    key: &k,
                    value: Some(v.as_str()),
                });
                written.push(k);
            }
            // Not produced for this context: the stale value must not travel on.
            continue;
        }
        out = out.insert(Header {
            key: h.key,
            value: h.value,
        });
    }
    for (k, v) in &injected {
        if !written.contains(k) {
            out = out.insert(Header {
                key: k,
                value: Some(v.as_str()),
            });
        }
    }
    out
}

/// Read-only view of Kafka headers for the propagators.
#[derive(Debug, Default)]
struct KafkaExtractor {
    pairs: Vec<(String, String)>,
}

impl KafkaExtractor {
    fn new<H: Headers + ?Sized>(headers: Option<&H>) -> Self {
        let mut pairs: Vec<(String, String)> = Vec::new();
        let Some(headers) = headers else {
            return Self { pairs };
        };
        for idx in 0..headers.count() {
            let Some(h) = headers.try_get(idx) else {
                continue;
            };
            let Some(value) = h.value else { continue };
            let Ok(value) = std::str::from_utf8(value) else {
                continue;
            };
            let key = h.key.to_ascii_lowercase();
            if value.trim().is_empty() || pairs.iter().any(|(k, _)| *k == key) {
                continue;
            }
            pairs.push((key, value.to_string()));
        }
        Self { pairs }
    }
}

impl Extractor for KafkaExtractor {
    fn get(&self, key: &str) -> Option<&str> {
        let key = key.to_ascii_lowercase();
        self.pairs
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.pairs.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// The context (remote span + baggage) carried by `headers`; an empty context when there is
/// none or it is unusable (then said: a log line and `journey.trace_context.invalid`).
pub fn extract_context<H: Headers + ?Sized>(headers: Option<&H>) -> Context {
    let carrier = KafkaExtractor::new(headers);
    // From an empty context: never inherit whatever span is current on this thread.
    let cx = PROPAGATOR.extract_with_context(&Context::new(), &carrier);
    note_unusable("kafka", carrier.get("traceparent"), &cx);
    cx
}

/// `true` when a `traceparent` was sent but no usable span context came of it.
pub(crate) fn unusable(traceparent: Option<&str>, extracted: &Context) -> bool {
    use opentelemetry::trace::TraceContextExt as _;
    traceparent.is_some() && !extracted.span().span_context().is_valid()
}

/// Says why a trace starts anew instead of continuing the sender's: a log line (at `info`:
/// anyone can send a bad header, it is no fault here) and `journey.trace_context.invalid`
/// counted by `carrier` (`http`, `kafka`).
pub(crate) fn note_unusable(carrier: &'static str, traceparent: Option<&str>, extracted: &Context) {
    static INVALID: LazyLock<opentelemetry::metrics::Counter<u64>> = LazyLock::new(|| {
        opentelemetry::global::meter("journey-messaging")
            .u64_counter("journey.trace_context.invalid")
            .with_description("Incoming traceparent values that could not be used")
            .build()
    });
    if !unusable(traceparent, extracted) {
        return;
    }
    let value: String = traceparent.unwrap_or_default().chars().take(80).collect();
    tracing::info!(
        carrier,
        traceparent = %value,
        "invalid traceparent: not continued, a new trace starts here"
    );
    INVALID.add(1, &[opentelemetry::KeyValue::new("carrier", carrier)]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::KeyValue;
    use opentelemetry::baggage::BaggageExt as _;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    };
    use proptest::prelude::*;

    fn remote(trace: u128, span: u64) -> Context {
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_bytes(trace.to_be_bytes()),
            SpanId::from_bytes(span.to_be_bytes()),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ))
    }

    fn list(h: &OwnedHeaders) -> Vec<(String, Option<Vec<u8>>)> {
        h.iter()
            .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
            .collect()
    }

    fn owned(pairs: &[(&str, Option<&[u8]>)]) -> OwnedHeaders {
        pairs.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
            h.insert(Header { key: k, value: *v })
        })
    }

    #[test]
    fn only_a_sent_but_unusable_traceparent_counts_as_invalid() {
        let garbage = owned(&[("traceparent", Some(b"00-zz-yy-01"))]);
        assert!(unusable(
            Some("00-zz-yy-01"),
            &extract_context(Some(&garbage))
        ));
        let good = owned(&[("traceparent", Some(TP.as_bytes()))]);
        assert!(!unusable(Some(TP), &extract_context(Some(&good))));
        assert!(
            !unusable(None, &Context::new()),
            "no traceparent: nothing invalid"
        );
    }

    const TP: &str = "00-0000000000000000000000000000abcd-00000000000000ef-01";

    #[test]
    fn injection_appends_traceparent_and_never_writes_an_empty_tracestate() {
        let h = inject_context(&remote(0xabcd, 0xef), None::<&OwnedHeaders>);
        assert_eq!(
            list(&h),
            vec![("traceparent".to_string(), Some(TP.as_bytes().to_vec()))]
        );
    }

    #[test]
    fn injection_keeps_other_headers_in_order_and_replaces_the_trace_header_in_place() {
        let before = owned(&[
            ("a", Some(b"1")),
            (
                "TraceParent",
                Some(b"00-11111111111111111111111111111111-2222222222222222-01"),
            ),
            ("b", None),
            ("traceparent", Some(b"dup")),
            ("tracestate", Some(b"stale=1")),
            ("c", Some(&[0xff, 0xfe])),
        ]);
        let after = inject_context(&remote(0xabcd, 0xef), Some(&before));
        assert_eq!(
            list(&after),
            vec![
                ("a".to_string(), Some(b"1".to_vec())),
                ("traceparent".to_string(), Some(TP.as_bytes().to_vec())),
                ("b".to_string(), None),
                ("c".to_string(), Some(vec![0xff, 0xfe])),
            ]
        );
    }

    #[test]
    fn baggage_travels_with_the_trace_context() {
        let cx = remote(0xabcd, 0xef).with_baggage(vec![KeyValue::new("tenant", "acme")]);
        let h = inject_context(&cx, None::<&OwnedHeaders>);
        let back = extract_context(Some(&h));
        assert_eq!(
            back.baggage().get("tenant").map(|v| v.to_string()),
            Some("acme".into())
        );
        assert_eq!(
            back.span().span_context().trace_id(),
            TraceId::from_bytes(0xabcd_u128.to_be_bytes())
        );
    }

    #[test]
    fn extraction_matches_keys_in_any_case_and_skips_null_and_non_utf8_values() {
        let h = owned(&[
            ("TRACEPARENT", None),
            ("traceParent", Some(&[0xc3, 0x28])),
            ("Traceparent", Some(TP.as_bytes())),
            (
                "traceparent",
                Some(b"00-ffffffffffffffffffffffffffffffff-ffffffffffffffff-01"),
            ),
        ]);
        let cx = extract_context(Some(&h));
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid() && sc.is_remote());
        assert_eq!(
            sc.trace_id(),
            TraceId::from_bytes(0xabcd_u128.to_be_bytes())
        );
        assert_eq!(sc.span_id(), SpanId::from_bytes(0xef_u64.to_be_bytes()));
    }

    #[test]
    fn no_headers_or_garbage_give_an_empty_context() {
        for cx in [
            extract_context(None::<&OwnedHeaders>),
            extract_context(Some(&owned(&[("traceparent", Some(b"garbage"))]))),
        ] {
            assert!(!cx.span().span_context().is_valid());
        }
    }

    fn header_key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("traceparent".to_string()),
            Just("TRACEPARENT".to_string()),
            Just("TraceState".to_string()),
            Just("baggage".to_string()),
            Just("BAGGAGE".to_string()),
            "[a-zA-Z0-9._-]{0,12}",
            any::<String>(),
        ]
    }

    fn header_value() -> impl Strategy<Value = Option<Vec<u8>>> {
        prop_oneof![
            Just(None),
            proptest::collection::vec(any::<u8>(), 0..80).prop_map(Some),
            "00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]".prop_map(|s| Some(s.into_bytes())),
            "[ -~]{0,120}".prop_map(|s| Some(s.into_bytes())),
        ]
    }

    fn headers() -> impl Strategy<Value = Vec<(String, Option<Vec<u8>>)>> {
        proptest::collection::vec((header_key(), header_value()), 0..12)
    }

    fn build(pairs: &[(String, Option<Vec<u8>>)]) -> OwnedHeaders {
        pairs.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
            h.insert(Header {
                key: k.as_str(),
                value: v.as_deref(),
            })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn extraction_never_panics_on_arbitrary_headers(pairs in headers()) {
            let h = build(&pairs);
            let _ = extract_context(Some(&h));
        }

        #[test]
        fn injection_never_panics_keeps_non_trace_headers_in_order_and_writes_one_traceparent(
            pairs in headers(), trace in 1u128.., span in 1u64..
        ) {
            let h = build(&pairs);
            let after = inject_context(&remote(trace, span), Some(&h));
            let trace_keys = fields();
            let kept: Vec<(String, Option<Vec<u8>>)> = list(&after)
                .into_iter()
                .filter(|(k, _)| !trace_keys.contains(&k.to_ascii_lowercase()))
                .collect();
            let expected: Vec<(String, Option<Vec<u8>>)> = list(&h)
                .into_iter()
                .filter(|(k, _)| !trace_keys.contains(&k.to_ascii_lowercase()))
                .collect();
            prop_assert_eq!(kept, expected);
            let tps = list(&after)
                .into_iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("traceparent"))
                .count();
            prop_assert_eq!(tps, 1);
            let back = extract_context(Some(&after));
            let sc = back.span().span_context().clone();
            prop_assert_eq!(sc.trace_id(), TraceId::from_bytes(trace.to_be_bytes()));
            prop_assert_eq!(sc.span_id(), SpanId::from_bytes(span.to_be_bytes()));
        }
    }
}

//! Following span links forward: the traces a journey continues in when consumers run in
//! trace mode `link`.
//!
//! In `link` mode each consumer's process span starts a NEW trace that links to the
//! message's creation context (the producer's send span). Zipkin cannot draw links; the
//! Collector's Zipkin exporter writes them as `otlp.link.N` tags. To show the whole journey,
//! journeyctl asks Zipkin for recent traces with such a tag ([`ZipkinClient::linking_traces`],
//! per service), then keeps, level by level, the traces whose spans link to a span already in
//! the journey ([`stitch`]): the relay's new trace, then the sink's trace linked to the relay's
//! send span, and so on, up to a depth and a number of traces.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::zipkin::{Span, ZipkinClient, ZipkinError};

/// How far links are followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkLimits {
    /// Links followed one after the other from the first trace (relay, then sink: 2).
    pub max_depth: usize,
    /// Linked traces added in all.
    pub max_traces: usize,
    /// How long after the first trace's start a linked trace is looked for.
    pub window: Duration,
    /// Traces asked of Zipkin per service.
    pub query_limit: u32,
}

impl Default for LinkLimits {
    fn default() -> Self {
        LinkLimits {
            max_depth: 5,
            max_traces: 20,
            window: Duration::from_secs(600),
            query_limit: 500,
        }
    }
}

/// How a linked trace joined the journey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkedTrace {
    pub trace_id: String,
    /// The span of this trace that carries the link.
    pub span_id: String,
    /// The span (and its trace) it links to, already in the journey.
    pub links_to_trace: String,
    pub links_to_span: String,
    /// 1 for a trace linked to the first trace, 2 for one linked to that, …
    pub depth: usize,
}

/// The spans of a journey across linked traces.
#[derive(Debug, Clone, Default)]
pub struct Stitched {
    /// The first trace's spans, then those of every linked trace (each span once).
    pub spans: Vec<Span>,
    pub linked: Vec<LinkedTrace>,
    /// More linked traces were there, beyond the depth or the number of traces.
    pub truncated: bool,
}

/// Adds to `first` (one trace's spans) the `candidates` traces that link to it, following
/// links forward level by level within `limits`. A candidate that is the first trace itself
/// (trace mode `both`: the link points inside the trace) or a trace already added is skipped,
/// so no span appears twice.
pub fn stitch(first: Vec<Span>, candidates: &[Vec<Span>], limits: &LinkLimits) -> Stitched {
    // Candidates by trace id (several service queries can return the same trace; Zipkin may
    // have more of it in a later answer: keep the largest).
    let mut by_trace: HashMap<String, &Vec<Span>> = HashMap::new();
    for t in candidates {
        let Some(id) = t.first().map(|s| s.trace_id.clone()) else {
            continue;
        };
        let e = by_trace.entry(id).or_insert(t);
        if t.len() > e.len() {
            *e = t;
        }
    }
    let mut order: Vec<(&String, &Vec<Span>)> = by_trace.iter().map(|(k, v)| (k, *v)).collect();
    order.sort_by_key(|(id, t)| (t.iter().map(Span::start).min().unwrap_or(0), (*id).clone()));

    let mut included: HashSet<String> = first.iter().map(|s| s.trace_id.clone()).collect();
    let mut frontier: HashSet<(String, String)> = first
        .iter()
        .map(|s| (s.trace_id.clone(), s.id.clone()))
        .collect();
    let mut out = Stitched {
        spans: first,
        ..Stitched::default()
    };
    // A candidate's first link into the given span set.
    let link_into = |t: &Vec<Span>, into: &HashSet<(String, String)>| {
        t.iter().find_map(|s| {
            s.links()
                .into_iter()
                .filter(|l| l.trace_id != s.trace_id)
                .find(|l| into.contains(&(l.trace_id.clone(), l.span_id.clone())))
                .map(|l| (s.id.clone(), l))
        })
    };
    for depth in 1..=limits.max_depth {
        let mut next: HashSet<(String, String)> = HashSet::new();
        for (id, t) in &order {
            if included.contains(*id) {
                continue;
            }
            let Some((span_id, to)) = link_into(t, &frontier) else {
                continue;
            };
            if out.linked.len() >= limits.max_traces {
                out.truncated = true;
                break;
            }
            included.insert((*id).clone());
            next.extend(t.iter().map(|s| (s.trace_id.clone(), s.id.clone())));
            out.spans.extend(t.iter().cloned());
            out.linked.push(LinkedTrace {
                trace_id: (*id).clone(),
                span_id,
                links_to_trace: to.trace_id,
                links_to_span: to.span_id,
                depth,
            });
        }
        if next.is_empty() || out.truncated {
            break;
        }
        frontier = next;
        if depth == limits.max_depth {
            out.truncated = order
                .iter()
                .any(|(id, t)| !included.contains(*id) && link_into(t, &frontier).is_some());
        }
    }
    out
}

/// Fetches the traces that link to `first` (one trace's spans) from Zipkin and stitches them
/// ([`stitch`]). `services`: whose linking traces to look for; `None` asks Zipkin for every
/// service it knows.
pub async fn follow(
    zipkin: &ZipkinClient,
    first: Vec<Span>,
    services: Option<&[String]>,
    limits: &LinkLimits,
) -> Result<Stitched, ZipkinError> {
    if first.is_empty() || limits.max_depth == 0 || limits.max_traces == 0 {
        return Ok(Stitched {
            spans: first,
            ..Stitched::default()
        });
    }
    let services: Vec<String> = match services {
        Some(s) => s.iter().map(|s| s.to_ascii_lowercase()).collect(),
        None => zipkin.services().await?,
    };
    let mut unique: Vec<String> = Vec::new();
    for s in services {
        if !s.is_empty() && !unique.contains(&s) {
            unique.push(s);
        }
    }
    // From a minute before the first trace started (clock skew) to `window` after it.
    let start_us = first.iter().map(Span::start).min().unwrap_or(0);
    let start = UNIX_EPOCH + Duration::from_micros(start_us);
    let end = (start + limits.window).min(SystemTime::now());
    let lookback = end
        .duration_since(start)
        .unwrap_or_default()
        .saturating_add(Duration::from_secs(60));
    let answers = futures::future::join_all(
        unique
            .iter()
            .map(|s| zipkin.linking_traces(s, end, lookback, limits.query_limit)),
    )
    .await;
    let mut candidates = Vec::new();
    for a in answers {
        candidates.extend(a?);
    }
    Ok(stitch(first, &candidates, limits))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::journey::Journey;
    use crate::zipkin::LinkRef;

    const T1: &str = "11111111111111111111111111111111";
    const T2: &str = "22222222222222222222222222222222";
    const T3: &str = "33333333333333333333333333333333";
    const T4: &str = "44444444444444444444444444444444";

    fn id(n: u64) -> String {
        format!("{n:016x}")
    }

    /// Span `n` of `trace` below span `parent`: `(service, kind, name)`, start and duration.
    fn sp(
        trace: &str,
        n: u64,
        parent: Option<u64>,
        what: (&str, &str, &str),
        ts: u64,
        dur: u64,
    ) -> Span {
        let (service, kind, name) = what;
        let mut s = crate::journey::tests::span(&id(n), None, service, kind, name, ts, dur);
        s.trace_id = trace.into();
        s.parent_id = parent.map(id);
        s
    }

    /// Adds link `n` to span `to` of trace `trace`, as the Collector's Zipkin exporter writes it.
    fn link(mut s: Span, n: u32, trace: &str, to: u64) -> Span {
        s.tags.insert(
            format!("otlp.link.{n}"),
            format!("{trace}|{}||{{}}|0", id(to)),
        );
        s
    }

    const HTTP: (&str, &str, &str) = ("producer", "SERVER", "post /messages");
    const SEND: (&str, &str, &str) = ("producer", "PRODUCER", "send messages");
    const PROCESS: (&str, &str, &str) = ("relay", "CONSUMER", "process messages");
    const FORWARD: (&str, &str, &str) = ("relay", "PRODUCER", "send messages.processed");
    const SINK: (&str, &str, &str) = ("sink", "CONSUMER", "process messages.processed");

    /// producer (T1) → relay in link mode (T2, linked to the send span) → sink in link mode
    /// (T3, linked to the relay's send span); plus another message's relay trace (T4).
    fn link_mode() -> (Vec<Span>, Vec<Vec<Span>>) {
        let first = vec![
            sp(T1, 1, None, HTTP, 1_000, 10_000),
            sp(T1, 2, Some(1), SEND, 2_000, 5_000),
        ];
        let relay = vec![
            link(sp(T2, 3, None, PROCESS, 9_000, 3_000), 0, T1, 2),
            sp(T2, 4, Some(3), FORWARD, 10_000, 1_000),
        ];
        let sink = vec![link(sp(T3, 5, None, SINK, 14_000, 2_000), 0, T2, 4)];
        // Links to a span that is not in the journey.
        let other = vec![link(sp(T4, 6, None, PROCESS, 9_500, 1_000), 0, T1, 99)];
        // The relay's trace comes back twice (from two services' queries).
        (first, vec![sink, other, relay.clone(), relay])
    }

    #[test]
    fn link_tags_parse_as_the_collector_writes_them() {
        let value = format!("{T1}|{}|vendor=x|{{\"a|b\":1}}|0", id(2));
        let t1_2 = LinkRef {
            trace_id: T1.into(),
            span_id: id(2),
        };
        assert_eq!(LinkRef::parse(&value), Some(t1_2.clone()));
        assert_eq!(
            LinkRef::parse(&format!("{}|{}||{{}}|0", T1.to_ascii_uppercase(), id(2))),
            Some(t1_2.clone()),
            "ids compare lower-cased, as Zipkin stores them"
        );
        assert_eq!(LinkRef::parse(T1), None, "no span id");
        assert_eq!(LinkRef::parse(&format!("nothex|{}||{{}}|0", id(2))), None);
        assert_eq!(LinkRef::parse(&format!("{T1}|{}||{{}}|0", id(0))), None);
        let mut s = link(link(sp(T2, 3, None, PROCESS, 0, 1), 1, T3, 9), 0, T1, 2);
        s.tags
            .insert("otlp.link.x".into(), format!("{T1}|{}||{{}}|0", id(7)));
        s.tags.insert("otlp.link.2".into(), "garbage".into());
        let t3_9 = LinkRef {
            trace_id: T3.into(),
            span_id: id(9),
        };
        assert_eq!(s.links(), vec![t1_2, t3_9], "in N order, bad tags skipped");
    }

    #[test]
    fn links_are_followed_forward_recursively_without_duplicates() {
        let (first, candidates) = link_mode();
        let st = stitch(first, &candidates, &LinkLimits::default());
        let got: Vec<(&str, usize)> = st
            .linked
            .iter()
            .map(|l| (l.trace_id.as_str(), l.depth))
            .collect();
        assert_eq!(got, [(T2, 1), (T3, 2)]);
        assert_eq!(
            (
                st.linked[1].span_id.as_str(),
                st.linked[1].links_to_span.as_str()
            ),
            (id(5).as_str(), id(4).as_str())
        );
        assert!(!st.truncated);
        assert_eq!(
            st.spans.len(),
            5,
            "the relay trace, returned twice, is there once"
        );

        let j = Journey::new(st.spans);
        assert_eq!(j.trace_id, T1);
        assert_eq!(j.trace_ids(), [T1, T2, T3]);
        let hops = j.hops();
        assert_eq!(hops.len(), 2);
        assert!(hops.iter().all(|h| h.linked));
        assert_eq!(
            hops[0].queue_us,
            9_000 - 7_000,
            "send end → linked process start"
        );
        assert_eq!(hops[1].queue_us, 14_000 - 11_000);
        assert_eq!(j.total_us(), 16_000 - 1_000);
        assert_eq!(j.services(), ["producer", "relay", "sink"]);
        let text = j.render(false);
        let expected = format!(
            "trace {T1}  (5 spans in 3 linked traces, services: producer → relay → sink)
     start    duration  span
      +0µs      10.0ms  producer SERVER post /messages
    +1.0ms       5.0ms  └─ producer PRODUCER send messages
    +8.0ms       3.0ms     └─ relay CONSUMER process messages  [queued 2.0ms]  ⇢ linked trace {T2}
    +9.0ms       1.0ms        └─ relay PRODUCER send messages.processed
   +13.0ms       2.0ms           └─ sink CONSUMER process messages.processed  [queued 3.0ms]  ⇢ linked trace {T3}
hops:
  producer → relay via messages: queued 2.0ms (linked trace)
  relay → sink via messages.processed: queued 3.0ms (linked trace)
total latency: 15.0ms
"
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn the_depth_and_the_number_of_traces_are_bounded() {
        let (first, candidates) = link_mode();
        let one = LinkLimits {
            max_depth: 1,
            ..LinkLimits::default()
        };
        let st = stitch(first.clone(), &candidates, &one);
        assert_eq!(st.linked.len(), 1);
        assert_eq!(st.linked[0].trace_id, T2);
        assert!(st.truncated, "the sink's trace was left out");

        let few = LinkLimits {
            max_traces: 1,
            ..LinkLimits::default()
        };
        let st = stitch(first.clone(), &candidates, &few);
        assert_eq!(st.linked.len(), 1);
        assert!(st.truncated);

        let none = LinkLimits {
            max_depth: 0,
            ..LinkLimits::default()
        };
        assert!(stitch(first.clone(), &candidates, &none).linked.is_empty());

        // A chain of 50 traces, each linked to the previous one, stops at the depth.
        let mut chain = Vec::new();
        let (mut trace, mut to) = (T1.to_string(), 2);
        for n in 100..150u64 {
            let t = format!("{n:032x}");
            chain.push(vec![link(
                sp(&t, n, None, PROCESS, 20_000 + n, 1),
                0,
                &trace,
                to,
            )]);
            (trace, to) = (t, n);
        }
        let st = stitch(first, &chain, &LinkLimits::default());
        let depth = LinkLimits::default().max_depth;
        assert_eq!(st.linked.len(), depth);
        assert_eq!(st.linked.last().unwrap().depth, depth);
        assert!(st.truncated);
    }

    #[test]
    fn in_both_mode_the_parent_joins_the_trace_and_nothing_is_shown_twice() {
        // Both mode: each process span is a child of its send span AND links to it.
        let trace = vec![
            sp(T1, 1, None, HTTP, 1_000, 10_000),
            sp(T1, 2, Some(1), SEND, 2_000, 5_000),
            link(sp(T1, 3, Some(2), PROCESS, 9_000, 3_000), 0, T1, 2),
            sp(T1, 4, Some(3), FORWARD, 10_000, 1_000),
            link(sp(T1, 5, Some(4), SINK, 14_000, 2_000), 0, T1, 4),
        ];
        // The link query finds the trace itself (its spans carry links).
        let st = stitch(
            trace.clone(),
            &[trace.clone(), trace.clone()],
            &LinkLimits::default(),
        );
        assert!(st.linked.is_empty());
        assert_eq!(st.spans.len(), 5);
        let j = Journey::new(st.spans);
        // Exactly the parent-mode rendering.
        let parent_mode: Vec<Span> = trace
            .iter()
            .cloned()
            .map(|mut s| {
                s.tags.clear();
                s
            })
            .collect();
        assert_eq!(j.render(false), Journey::new(parent_mode).render(false));
        assert!(j.hops().iter().all(|h| !h.linked));
        // Even spans given twice are shown once.
        let mut twice = trace.clone();
        twice.extend(trace);
        assert_eq!(Journey::new(twice).spans().len(), 5);
    }

    #[test]
    fn links_that_would_make_a_cycle_are_not_followed_in_the_tree() {
        let a = link(sp(T1, 1, None, PROCESS, 1_000, 10), 0, T2, 2);
        let b = link(sp(T2, 2, None, SINK, 2_000, 10), 0, T1, 1);
        let j = Journey::new(vec![a, b]);
        assert_eq!(j.trace_ids().len(), 2);
        assert!(
            j.is_linked(0) ^ j.is_linked(1),
            "one below the other, never both"
        );
        assert!(j.render(false).contains("⇢ linked trace"));
        assert!(j.hops().is_empty());
    }
}

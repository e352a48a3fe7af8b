//! A trace as a journey: the span tree, the timeline, and the time each message waited in Kafka.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::zipkin::Span;

/// One Kafka hop: a PRODUCER span (send) and the CONSUMER span (process) below it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hop {
    pub from_service: String,
    pub to_service: String,
    /// `messaging.destination.name`, else the send span's name.
    pub topic: String,
    /// Send end → process start, in microseconds (negative with clock skew).
    pub queue_us: i64,
    pub send_span: String,
    pub process_span: String,
    /// The process span is in another trace, linked to the send span (trace mode `link`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub linked: bool,
}

/// A trace or several traces joined by span links, organised for display.
///
/// Spans of several traces can be given together: a span without a parent in the set that
/// links (`otlp.link.N`) to a span of ANOTHER trace in the set is shown below that span, as
/// if it were its child, marked as a linked trace. A span that has its parent (trace mode
/// `both`) keeps it, and is never shown twice.
#[derive(Debug, Clone)]
pub struct Journey {
    /// The trace the journey starts in.
    pub trace_id: String,
    spans: Vec<Span>,
    children: HashMap<usize, Vec<usize>>,
    parent: Vec<Option<usize>>,
    /// Spans below their parent through a link (each starts a linked trace).
    linked: Vec<bool>,
    roots: Vec<usize>,
}

impl Journey {
    pub fn new(mut spans: Vec<Span>) -> Journey {
        spans.sort_by_key(|s| (s.start(), s.id.clone()));
        // Zipkin can return a span twice (e.g. from two queries): keep one.
        let mut seen = std::collections::HashSet::new();
        spans.retain(|s| seen.insert((s.trace_id.clone(), s.id.clone())));
        let by_id: HashMap<(&str, &str), usize> = spans
            .iter()
            .enumerate()
            .map(|(i, s)| ((s.trace_id.as_str(), s.id.as_str()), i))
            .collect();
        let n = spans.len();
        let mut parent: Vec<Option<usize>> = vec![None; n];
        let mut linked = vec![false; n];
        for (i, s) in spans.iter().enumerate() {
            parent[i] = s
                .parent_id
                .as_deref()
                .and_then(|p| by_id.get(&(s.trace_id.as_str(), p)))
                .copied()
                .filter(|&p| p != i);
        }
        // Roots that link to a span of another trace in the set hang below it, in start order,
        // unless that would close a cycle.
        for i in 0..n {
            if parent[i].is_some() {
                continue;
            }
            let target = spans[i].links().into_iter().find_map(|l| {
                (l.trace_id != spans[i].trace_id)
                    .then(|| {
                        by_id
                            .get(&(l.trace_id.as_str(), l.span_id.as_str()))
                            .copied()
                    })
                    .flatten()
            });
            let Some(p) = target else { continue };
            let mut cur = Some(p);
            let mut steps = 0;
            while let Some(c) = cur {
                if c == i || steps > n {
                    break;
                }
                steps += 1;
                cur = parent[c];
            }
            if cur.is_none() {
                parent[i] = Some(p);
                linked[i] = true;
            }
        }
        let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut roots = Vec::new();
        for (i, p) in parent.iter().enumerate() {
            match p {
                Some(p) => children.entry(*p).or_default().push(i),
                None => roots.push(i),
            }
        }
        // The journey starts in the trace of its first root (linked traces hang below it).
        let trace_id = roots
            .first()
            .and_then(|&r| spans.get(r))
            .or(spans.first())
            .map(|s| s.trace_id.clone())
            .unwrap_or_default();
        Journey {
            trace_id,
            spans,
            children,
            parent,
            linked,
            roots,
        }
    }

    /// The traces in the journey: the first one, then the linked ones in start order.
    pub fn trace_ids(&self) -> Vec<String> {
        let mut out = vec![self.trace_id.clone()];
        for s in &self.spans {
            if !out.contains(&s.trace_id) {
                out.push(s.trace_id.clone());
            }
        }
        out.retain(|t| !t.is_empty());
        out
    }

    /// True when span `i` hangs below its parent through a link (it starts a linked trace).
    pub fn is_linked(&self, i: usize) -> bool {
        self.linked.get(i).copied().unwrap_or(false)
    }

    pub fn spans(&self) -> &[Span] {
        &self.spans
    }

    fn parent_of(&self, i: usize) -> Option<usize> {
        self.parent.get(i).copied().flatten()
    }

    /// Index of a span by id.
    pub fn index(&self, id: &str) -> Option<usize> {
        self.spans.iter().position(|s| s.id == id)
    }

    /// True when span `ancestor` is `descendant` or above it in the tree.
    pub fn is_ancestor(&self, ancestor: usize, descendant: usize) -> bool {
        let mut cur = Some(descendant);
        let mut steps = 0;
        while let Some(c) = cur {
            if c == ancestor {
                return true;
            }
            steps += 1;
            if steps > self.spans.len() {
                return false;
            }
            cur = self.parent_of(c);
        }
        false
    }

    /// The services in order of their first span.
    pub fn services(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in &self.spans {
            if !s.service().is_empty() && !out.iter().any(|x| x == s.service()) {
                out.push(s.service().to_string());
            }
        }
        out
    }

    /// First span start → last span end, in microseconds.
    pub fn total_us(&self) -> u64 {
        let start = self.spans.iter().map(Span::start).min().unwrap_or(0);
        let end = self.spans.iter().map(Span::end).max().unwrap_or(0);
        end.saturating_sub(start)
    }

    /// Every Kafka hop: each CONSUMER span with its nearest PRODUCER ancestor (through links
    /// too: a linked process span's ancestor is the send span it links to).
    pub fn hops(&self) -> Vec<Hop> {
        self.indexed_hops().into_iter().map(|(_, h)| h).collect()
    }

    /// [`Journey::hops`] with the index of each hop's process span.
    fn indexed_hops(&self) -> Vec<(usize, Hop)> {
        let mut hops = Vec::new();
        for (i, s) in self.spans.iter().enumerate() {
            if s.kind() != "CONSUMER" {
                continue;
            }
            let mut cur = self.parent_of(i);
            let mut linked = self.is_linked(i);
            let mut steps = 0;
            while let Some(p) = cur {
                steps += 1;
                if steps > self.spans.len() {
                    break;
                }
                let ps = &self.spans[p];
                if ps.kind() == "PRODUCER" {
                    hops.push((
                        i,
                        Hop {
                            from_service: ps.service().to_string(),
                            to_service: s.service().to_string(),
                            topic: ps
                                .tag("messaging.destination.name")
                                .map(str::to_string)
                                .unwrap_or_else(|| {
                                    ps.name().trim_start_matches("send ").to_string()
                                }),
                            queue_us: s.start() as i64 - ps.end() as i64,
                            send_span: ps.id.clone(),
                            process_span: s.id.clone(),
                            linked,
                        },
                    ));
                    break;
                }
                linked |= self.is_linked(p);
                cur = self.parent_of(p);
            }
        }
        hops
    }

    /// The tree/timeline as text; `color` adds ANSI colours (use it on a TTY only).
    pub fn render(&self, color: bool) -> String {
        let paint = |code: &str, text: &str| {
            if color {
                format!("\x1b[{code}m{text}\x1b[0m")
            } else {
                text.to_string()
            }
        };
        let t0 = self.spans.iter().map(Span::start).min().unwrap_or(0);
        let hops = self.indexed_hops();
        let queue_of: HashMap<usize, i64> = hops.iter().map(|(i, h)| (*i, h.queue_us)).collect();
        let traces = self.trace_ids().len();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "trace {}  ({} spans{}, services: {})",
            paint("1", &self.trace_id),
            self.spans.len(),
            if traces > 1 {
                format!(" in {traces} linked traces")
            } else {
                String::new()
            },
            self.services().join(" → ")
        );
        let _ = writeln!(out, "{:>10}  {:>10}  span", "start", "duration");
        let mut stack: Vec<(usize, String, bool)> = self
            .roots
            .iter()
            .rev()
            .map(|&r| (r, String::new(), true))
            .collect();
        // Roots are printed without a branch; children with ├─ / └─.
        while let Some((i, prefix, last)) = stack.pop() {
            let s = &self.spans[i];
            let is_root = self.roots.contains(&i);
            let branch = if is_root {
                String::new()
            } else if last {
                "└─ ".to_string()
            } else {
                "├─ ".to_string()
            };
            let kind = if s.kind().is_empty() {
                "INTERNAL"
            } else {
                s.kind()
            };
            let name = if s.is_error() {
                paint("31", s.name())
            } else {
                s.name().to_string()
            };
            let mut line = format!(
                "{:>10}  {:>10}  {prefix}{branch}{} {} {name}",
                format!("+{}", fmt_us(s.start().saturating_sub(t0) as i64)),
                fmt_us(s.duration.unwrap_or(0) as i64),
                paint("36", s.service()),
                paint("2", kind),
            );
            if let Some(q) = queue_of.get(&i) {
                let _ = write!(
                    line,
                    "  {}",
                    paint("33", &format!("[queued {}]", fmt_queue(*q)))
                );
            }
            if s.is_error() {
                let _ = write!(line, "  {}", paint("31", "ERROR"));
            }
            // A linked trace: below the span it links to, or (when that span is unknown) a
            // root of its own.
            if self.is_linked(i) || (is_root && s.trace_id != self.trace_id) {
                let _ = write!(
                    line,
                    "  {}",
                    paint("35", &format!("⇢ linked trace {}", s.trace_id))
                );
            }
            let _ = writeln!(out, "{line}");
            let child_prefix = if is_root {
                prefix.clone()
            } else if last {
                format!("{prefix}   ")
            } else {
                format!("{prefix}│  ")
            };
            if let Some(kids) = self.children.get(&i) {
                for (n, &k) in kids.iter().enumerate().rev() {
                    stack.push((k, child_prefix.clone(), n == kids.len() - 1));
                }
            }
        }
        if !hops.is_empty() {
            let _ = writeln!(out, "hops:");
            for (_, h) in &hops {
                let _ = writeln!(
                    out,
                    "  {} → {} via {}: queued {}{}",
                    h.from_service,
                    h.to_service,
                    h.topic,
                    paint("33", &fmt_queue(h.queue_us)),
                    if h.linked { " (linked trace)" } else { "" }
                );
            }
        }
        let _ = writeln!(
            out,
            "total latency: {}",
            paint("1", &fmt_us(self.total_us() as i64))
        );
        out
    }
}

/// A hop's queue time (process start − send end). The send span ends when the producer gets
/// the broker's ack, which can come after the consumer already got the record: then the
/// queue time is negative, and says so instead of printing a negative duration.
pub fn fmt_queue(us: i64) -> String {
    if us < 0 {
        format!("0 (received {} before the send's ack)", fmt_us(-us))
    } else {
        fmt_us(us)
    }
}

/// Microseconds as a short human duration: `850µs`, `12.3ms`, `1.25s`.
pub fn fmt_us(us: i64) -> String {
    let a = us.unsigned_abs();
    let sign = if us < 0 { "-" } else { "" };
    if a < 1_000 {
        format!("{sign}{a}µs")
    } else if a < 1_000_000 {
        format!("{sign}{:.1}ms", a as f64 / 1_000.0)
    } else {
        format!("{sign}{:.2}s", a as f64 / 1_000_000.0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    #[test]
    fn a_record_received_before_the_send_ack_shows_no_negative_queue_time() {
        assert_eq!(super::fmt_queue(2_000), "2.0ms");
        assert_eq!(
            super::fmt_queue(-9),
            "0 (received 9µs before the send's ack)"
        );
    }

    use super::*;
    use crate::zipkin::Endpoint;

    pub(crate) fn span(
        id: &str,
        parent: Option<&str>,
        service: &str,
        kind: &str,
        name: &str,
        ts: u64,
        dur: u64,
    ) -> Span {
        Span {
            trace_id: "t1".into(),
            id: id.into(),
            parent_id: parent.map(str::to_string),
            name: Some(name.into()),
            kind: (!kind.is_empty()).then(|| kind.to_string()),
            timestamp: Some(ts),
            duration: Some(dur),
            local_endpoint: Some(Endpoint {
                service_name: Some(service.into()),
            }),
            remote_endpoint: None,
            tags: Default::default(),
        }
    }

    pub(crate) fn journey_spans() -> Vec<Span> {
        vec![
            span(
                "a",
                None,
                "producer",
                "SERVER",
                "post /messages",
                1_000,
                10_000,
            ),
            span(
                "b",
                Some("a"),
                "producer",
                "PRODUCER",
                "send messages",
                2_000,
                5_000,
            ),
            span(
                "c",
                Some("b"),
                "relay",
                "CONSUMER",
                "process messages",
                9_000,
                3_000,
            ),
            span(
                "d",
                Some("c"),
                "relay",
                "PRODUCER",
                "send messages.processed",
                10_000,
                1_000,
            ),
            span(
                "e",
                Some("d"),
                "sink",
                "CONSUMER",
                "process messages.processed",
                14_000,
                2_000,
            ),
        ]
    }

    #[test]
    fn hops_queue_times_and_total_latency() {
        let j = Journey::new(journey_spans());
        let hops = j.hops();
        assert_eq!(hops.len(), 2);
        assert_eq!(
            (hops[0].from_service.as_str(), hops[0].to_service.as_str()),
            ("producer", "relay")
        );
        assert_eq!(hops[0].queue_us, 9_000 - 7_000);
        assert_eq!(hops[0].topic, "messages");
        assert_eq!(hops[1].queue_us, 14_000 - 11_000);
        assert_eq!(j.total_us(), 16_000 - 1_000);
        assert_eq!(j.services(), vec!["producer", "relay", "sink"]);
        assert!(j.is_ancestor(0, 4));
        assert!(!j.is_ancestor(4, 0));
    }

    #[test]
    fn the_rendering_is_a_tree_without_colour_unless_asked() {
        let j = Journey::new(journey_spans());
        let text = j.render(false);
        assert!(!text.contains('\x1b'), "{text}");
        assert!(
            text.contains("└─ relay CONSUMER process messages  [queued 2.0ms]"),
            "{text}"
        );
        assert!(
            text.contains("producer → relay via messages: queued 2.0ms"),
            "{text}"
        );
        assert!(text.contains("total latency: 15.0ms"), "{text}");
        assert!(j.render(true).contains("\x1b["));
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(fmt_us(850), "850µs");
        assert_eq!(fmt_us(12_345), "12.3ms");
        assert_eq!(fmt_us(1_250_000), "1.25s");
        assert_eq!(fmt_us(-2_000), "-2.0ms");
    }
}

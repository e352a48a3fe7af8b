//! `verify`: check that a trace holds the expected journey.
//!
//! Expectations are an ordered chain of hops `SERVICE:KIND[:NAME]`; each hop must be present
//! and be a descendant of the previous hop's span (the parent chain). Zipkin lower-cases
//! names, so names and services compare case-insensitively; a name given in the expectation
//! must match exactly otherwise. PRODUCER/CONSUMER spans without an expected name must follow
//! the messaging conventions (`send …` / `process …`).

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::journey::Journey;
use crate::zipkin::Span;

/// One expected span.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HopSpec {
    pub service: String,
    pub kind: String,
    pub name: Option<String>,
}

impl fmt::Display for HopSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.service, self.kind)?;
        if let Some(n) = &self.name {
            write!(f, ":{n}")?;
        }
        Ok(())
    }
}

const KINDS: [&str; 5] = ["SERVER", "CLIENT", "PRODUCER", "CONSUMER", "INTERNAL"];

impl FromStr for HopSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut it = s.splitn(3, ':');
        let service = it.next().unwrap_or_default().trim().to_string();
        let kind = it
            .next()
            .map(|k| k.trim().to_ascii_uppercase())
            .unwrap_or_default();
        if service.is_empty() || !KINDS.contains(&kind.as_str()) {
            return Err(format!(
                "`{s}` is not SERVICE:KIND[:NAME] with KIND one of {}",
                KINDS.join(", ")
            ));
        }
        let name = it
            .next()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty());
        Ok(HopSpec {
            service,
            kind,
            name,
        })
    }
}

impl HopSpec {
    fn matches(&self, s: &Span) -> bool {
        let kind = if s.kind().is_empty() {
            "INTERNAL"
        } else {
            s.kind()
        };
        if !s.service().eq_ignore_ascii_case(&self.service) || kind != self.kind {
            return false;
        }
        match &self.name {
            Some(n) => s.name().eq_ignore_ascii_case(n),
            None => match self.kind.as_str() {
                "PRODUCER" => s.name().to_ascii_lowercase().starts_with("send "),
                "CONSUMER" => s.name().to_ascii_lowercase().starts_with("process "),
                _ => true,
            },
        }
    }
}

/// The default chain for services `s0, s1, …, sn` of the Journey topology: the first receives
/// HTTP and sends (`SERVER`, `PRODUCER`), the middle ones process and send
/// (`CONSUMER`, `PRODUCER`), the last processes (`CONSUMER`).
pub fn default_hops(services: &[String]) -> Vec<HopSpec> {
    let hop = |s: &str, k: &str| HopSpec {
        service: s.to_string(),
        kind: k.to_string(),
        name: None,
    };
    let mut out = Vec::new();
    for (i, s) in services.iter().enumerate() {
        let last = i + 1 == services.len();
        if i == 0 {
            out.push(hop(s, "SERVER"));
        } else {
            out.push(hop(s, "CONSUMER"));
        }
        if !last {
            out.push(hop(s, "PRODUCER"));
        }
    }
    out
}

/// Per-hop result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum HopOutcome {
    /// Found, below the previous hop; the span id.
    Ok(String),
    /// No span matches.
    Missing,
    /// A span matches but is not below the previous hop's span.
    Detached(String),
    /// Not checked because an earlier hop failed.
    Unchecked,
}

/// The verdict on one trace.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub trace_id: String,
    pub hops: Vec<(HopSpec, HopOutcome)>,
    pub error_spans: Vec<String>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.hops
            .iter()
            .all(|(_, o)| matches!(o, HopOutcome::Ok(_)))
            && self.error_spans.is_empty()
    }

    /// The hops not found below their predecessor (yet), `SERVICE:KIND[:NAME]`.
    pub fn pending(&self) -> Vec<String> {
        self.hops
            .iter()
            .filter(|(_, o)| !matches!(o, HopOutcome::Ok(_)))
            .map(|(h, _)| h.to_string())
            .collect()
    }

    /// What makes it FAIL: the missing and detached hops, and the spans recording an error.
    pub fn failures(&self) -> Vec<String> {
        let hops = self.hops.iter().filter_map(|(h, o)| match o {
            HopOutcome::Missing => Some(format!("{h} missing")),
            HopOutcome::Detached(id) => Some(format!("{h} detached (span {id})")),
            HopOutcome::Ok(_) | HopOutcome::Unchecked => None,
        });
        let errors = self
            .error_spans
            .iter()
            .map(|e| format!("span {e} records an error"));
        hops.chain(errors).collect()
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (hop, outcome) in &self.hops {
            match outcome {
                HopOutcome::Ok(id) => writeln!(f, "  ok       {hop} (span {id})")?,
                HopOutcome::Missing => writeln!(f, "  MISSING  {hop}")?,
                HopOutcome::Detached(id) => writeln!(
                    f,
                    "  DETACHED {hop} (span {id} is not below the previous hop: broken parent chain)"
                )?,
                HopOutcome::Unchecked => writeln!(f, "  -        {hop} (not checked)")?,
            }
        }
        for e in &self.error_spans {
            writeln!(f, "  ERROR    span {e} records an error")?;
        }
        write!(f, "{}", if self.passed() { "PASS" } else { "FAIL" })
    }
}

/// Checks `spans` against the ordered `hops`.
pub fn check(spans: &[Span], hops: &[HopSpec]) -> Verdict {
    let journey = Journey::new(spans.to_vec());
    let mut out = Vec::new();
    let mut prev: Option<usize> = None;
    let mut failed = false;
    for hop in hops {
        if failed {
            out.push((hop.clone(), HopOutcome::Unchecked));
            continue;
        }
        let candidates: Vec<usize> = journey
            .spans()
            .iter()
            .enumerate()
            .filter(|(_, s)| hop.matches(s))
            .map(|(i, _)| i)
            .collect();
        let below = candidates
            .iter()
            .copied()
            .find(|&c| prev.is_none_or(|p| p != c && journey.is_ancestor(p, c)));
        match (below, candidates.first()) {
            (Some(i), _) => {
                out.push((hop.clone(), HopOutcome::Ok(journey.spans()[i].id.clone())));
                prev = Some(i);
            }
            (None, Some(&i)) => {
                out.push((
                    hop.clone(),
                    HopOutcome::Detached(journey.spans()[i].id.clone()),
                ));
                failed = true;
            }
            (None, None) => {
                out.push((hop.clone(), HopOutcome::Missing));
                failed = true;
            }
        }
    }
    Verdict {
        trace_id: journey.trace_id.clone(),
        hops: out,
        error_spans: spans
            .iter()
            .filter(|s| s.is_error())
            .map(|s| format!("{} ({} {})", s.id, s.service(), s.name()))
            .collect(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::journey::tests::{journey_spans, span};

    fn services() -> Vec<String> {
        ["producer", "relay", "sink"].map(String::from).to_vec()
    }

    #[test]
    fn the_default_chain_passes_on_a_full_journey() {
        let hops = default_hops(&services());
        assert_eq!(
            hops.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "producer:SERVER",
                "producer:PRODUCER",
                "relay:CONSUMER",
                "relay:PRODUCER",
                "sink:CONSUMER"
            ]
        );
        let v = check(&journey_spans(), &hops);
        assert!(v.passed(), "{v}");
        assert!(v.to_string().ends_with("PASS"));
    }

    #[test]
    fn a_missing_hop_fails_and_names_it() {
        let mut spans = journey_spans();
        spans.retain(|s| s.service() != "sink");
        let v = check(&spans, &default_hops(&services()));
        assert!(!v.passed());
        let text = v.to_string();
        assert!(text.contains("MISSING  sink:CONSUMER"), "{text}");
        assert!(text.ends_with("FAIL"), "{text}");
        assert_eq!(v.pending(), ["sink:CONSUMER"]);
        assert_eq!(v.failures(), ["sink:CONSUMER missing"]);
    }

    #[test]
    fn a_broken_parent_chain_fails() {
        let mut spans = journey_spans();
        spans[2] = span(
            "c",
            None,
            "relay",
            "CONSUMER",
            "process messages",
            9_000,
            3_000,
        );
        let v = check(&spans, &default_hops(&services()));
        assert!(matches!(v.hops[2].1, HopOutcome::Detached(_)), "{v}");
        assert!(matches!(v.hops[4].1, HopOutcome::Unchecked), "{v}");
        assert_eq!(
            v.pending(),
            ["relay:CONSUMER", "relay:PRODUCER", "sink:CONSUMER"]
        );
        assert_eq!(v.failures(), ["relay:CONSUMER detached (span c)"]);
    }

    #[test]
    fn hop_specs_parse_and_names_are_checked() {
        let h: HopSpec = "relay:consumer:process messages".parse().unwrap();
        assert_eq!(h.kind, "CONSUMER");
        assert!("relay".parse::<HopSpec>().is_err());
        assert!("relay:WRONG".parse::<HopSpec>().is_err());
        let v = check(&journey_spans(), &[h]);
        assert!(v.passed(), "{v}");
        let v = check(
            &journey_spans(),
            &["relay:CONSUMER:process other".parse().unwrap()],
        );
        assert!(!v.passed());
    }
}

//! Zipkin's v2 span model and the few query-API calls journeyctl needs.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One span as Zipkin's v2 API returns it (times in microseconds).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Span {
    pub trace_id: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_endpoint: Option<Endpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_endpoint: Option<Endpoint>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
}

impl Span {
    /// `localEndpoint.serviceName` (Zipkin lower-cases it), or "".
    pub fn service(&self) -> &str {
        self.local_endpoint
            .as_ref()
            .and_then(|e| e.service_name.as_deref())
            .unwrap_or("")
    }
    /// `remoteEndpoint.serviceName` (from `peer.service`), or "".
    pub fn remote_service(&self) -> &str {
        self.remote_endpoint
            .as_ref()
            .and_then(|e| e.service_name.as_deref())
            .unwrap_or("")
    }
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }
    /// `SERVER`, `CLIENT`, `PRODUCER`, `CONSUMER`, or "" for internal spans.
    pub fn kind(&self) -> &str {
        self.kind.as_deref().unwrap_or("")
    }
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }
    /// Start in microseconds since the epoch (0 when unknown).
    pub fn start(&self) -> u64 {
        self.timestamp.unwrap_or(0)
    }
    /// End in microseconds since the epoch.
    pub fn end(&self) -> u64 {
        self.start() + self.duration.unwrap_or(0)
    }
    /// True when the span records an error (`error` tag, or `otel.status_code=ERROR`).
    pub fn is_error(&self) -> bool {
        self.tags.contains_key("error") || self.tag("otel.status_code") == Some("ERROR")
    }
    /// The span's links, from the `otlp.link.N` tags the Collector's Zipkin exporter writes
    /// (`trace|span|tracestate|attributes JSON|dropped attributes`), in `N` order. Tags that
    /// do not parse are skipped.
    pub fn links(&self) -> Vec<LinkRef> {
        let mut links: Vec<(u32, LinkRef)> = self
            .tags
            .iter()
            .filter_map(|(k, v)| {
                let n: u32 = k.strip_prefix(LINK_TAG_PREFIX)?.parse().ok()?;
                Some((n, LinkRef::parse(v)?))
            })
            .collect();
        links.sort_by_key(|(n, _)| *n);
        links.into_iter().map(|(_, l)| l).collect()
    }
}

/// The tag-key prefix of span links in Zipkin (`otlp.link.0`, `otlp.link.1`, …).
pub const LINK_TAG_PREFIX: &str = "otlp.link.";
/// The tag every span with at least one link carries: what the link query asks Zipkin for.
pub const FIRST_LINK_TAG: &str = "otlp.link.0";

/// Where a span link points.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct LinkRef {
    pub trace_id: String,
    pub span_id: String,
}

impl LinkRef {
    /// Parses an `otlp.link.N` value: `trace|span|…`, with hex ids (lower-cased here, as
    /// Zipkin stores ids).
    pub fn parse(value: &str) -> Option<LinkRef> {
        let mut parts = value.split('|');
        let trace_id = parts.next()?.trim().to_ascii_lowercase();
        let span_id = parts.next()?.trim().to_ascii_lowercase();
        (is_hex_id(&trace_id, &TRACE_ID_LENGTHS) && is_hex_id(&span_id, &[16]))
            .then_some(LinkRef { trace_id, span_id })
    }
}

/// The lengths a trace id may have: 16 hex digits (64-bit ids) or 32.
const TRACE_ID_LENGTHS: [usize; 2] = [16, 32];

/// `s` is an id of one of `lengths` hex digits, not all zero (the W3C invalid id).
fn is_hex_id(s: &str, lengths: &[usize]) -> bool {
    lengths.contains(&s.len())
        && s.chars().all(|c| c.is_ascii_hexdigit())
        && !s.chars().all(|c| c == '0')
}

/// A trace id as Zipkin stores it: 16 or 32 lower-case hex digits, not all zero.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct TraceId(String);

/// Why a string is not a [`TraceId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a trace id (16 or 32 hex digits, not all zero)")]
pub struct NotATraceId(pub String);

impl TraceId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for TraceId {
    type Err = NotATraceId;
    fn from_str(s: &str) -> Result<Self, NotATraceId> {
        let id = s.trim().to_ascii_lowercase();
        if is_hex_id(&id, &TRACE_ID_LENGTHS) {
            Ok(TraceId(id))
        } else {
            Err(NotATraceId(s.to_string()))
        }
    }
}

impl std::fmt::Display for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Errors talking to Zipkin.
#[derive(Debug, thiserror::Error)]
pub enum ZipkinError {
    #[error("zipkin {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("zipkin {url} answered {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
}

/// Zipkin's query API at a base URL such as `http://zipkin:9411`.
#[derive(Debug, Clone)]
pub struct ZipkinClient {
    base: String,
    http: reqwest::Client,
}

impl ZipkinClient {
    /// Fails only when no HTTP client can be built here (no TLS backend).
    pub fn new(base: impl Into<String>) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(ZipkinClient {
            base: base.into().trim_end_matches('/').to_string(),
            http,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The UI page of a trace.
    pub fn trace_page(&self, trace_id: &str) -> String {
        format!("{}/zipkin/traces/{trace_id}", self.base)
    }

    async fn get(
        &self,
        url: String,
        query: &[(&str, String)],
    ) -> Result<Option<reqwest::Response>, ZipkinError> {
        let resp = self
            .http
            .get(&url)
            .query(query)
            .send()
            .await
            .map_err(|source| ZipkinError::Http {
                url: url.clone(),
                source,
            })?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(ZipkinError::Status {
                url,
                status: resp.status(),
            });
        }
        Ok(Some(resp))
    }

    /// The spans of a trace; `None` when Zipkin does not know it (yet).
    pub async fn trace(&self, trace_id: &str) -> Result<Option<Vec<Span>>, ZipkinError> {
        let url = format!("{}/api/v2/trace/{trace_id}", self.base);
        match self.get(url.clone(), &[]).await? {
            None => Ok(None),
            Some(r) => Ok(Some(
                r.json()
                    .await
                    .map_err(|source| ZipkinError::Http { url, source })?,
            )),
        }
    }

    /// Recent traces in which `service` took part (newest first), within `lookback`.
    pub async fn traces(
        &self,
        service: &str,
        lookback: Duration,
        limit: u32,
    ) -> Result<Vec<Vec<Span>>, ZipkinError> {
        let url = format!("{}/api/v2/traces", self.base);
        let end = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let query = [
            ("serviceName", service.to_string()),
            ("lookback", lookback.as_millis().to_string()),
            ("endTs", end.to_string()),
            ("limit", limit.to_string()),
        ];
        let mut traces: Vec<Vec<Span>> = match self.get(url.clone(), &query).await? {
            None => Vec::new(),
            Some(r) => r
                .json()
                .await
                .map_err(|source| ZipkinError::Http { url, source })?,
        };
        traces.sort_by_key(|t| std::cmp::Reverse(t.iter().map(Span::start).min().unwrap_or(0)));
        Ok(traces)
    }

    /// Traces with a span of `service` that carries a link (an `otlp.link.0` tag, whatever
    /// its value), started between `end - lookback` and `end`, at most `limit`.
    pub async fn linking_traces(
        &self,
        service: &str,
        end: std::time::SystemTime,
        lookback: Duration,
        limit: u32,
    ) -> Result<Vec<Vec<Span>>, ZipkinError> {
        let url = format!("{}/api/v2/traces", self.base);
        let end = end
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let query = [
            ("serviceName", service.to_string()),
            ("annotationQuery", FIRST_LINK_TAG.to_string()),
            ("lookback", lookback.as_millis().to_string()),
            ("endTs", end.to_string()),
            ("limit", limit.to_string()),
        ];
        match self.get(url.clone(), &query).await? {
            None => Ok(Vec::new()),
            Some(r) => r
                .json()
                .await
                .map_err(|source| ZipkinError::Http { url, source }),
        }
    }

    /// The service names Zipkin has seen (`/api/v2/services`).
    pub async fn services(&self) -> Result<Vec<String>, ZipkinError> {
        let url = format!("{}/api/v2/services", self.base);
        match self.get(url.clone(), &[]).await? {
            None => Ok(Vec::new()),
            Some(r) => r
                .json()
                .await
                .map_err(|source| ZipkinError::Http { url, source }),
        }
    }

    /// The id of the most recent trace `service` took part in.
    pub async fn last_trace_id(
        &self,
        service: &str,
        lookback: Duration,
    ) -> Result<Option<String>, ZipkinError> {
        Ok(self
            .traces(service, lookback, 10)
            .await?
            .into_iter()
            .next()
            .and_then(|t| t.first().map(|s| s.trace_id.clone())))
    }

    /// `GET /health` says `UP`.
    pub async fn healthy(&self) -> Result<bool, ZipkinError> {
        let url = format!("{}/health", self.base);
        match self.get(url.clone(), &[]).await? {
            None => Ok(false),
            Some(r) => Ok(r
                .text()
                .await
                .map_err(|source| ZipkinError::Http { url, source })?
                .contains("UP")),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_of_16_or_32_hex_digits_parse_lower_cased() {
        let id: TraceId = " 4BF92F3577B34DA6A3CE929D0E0E4736 ".parse().unwrap();
        assert_eq!(id.as_str(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            "a3ce929d0e0e4736".parse::<TraceId>().unwrap().to_string(),
            "a3ce929d0e0e4736"
        );
    }

    #[test]
    fn malformed_or_all_zero_trace_ids_are_refused_naming_the_input() {
        for bad in [
            "not-a-trace",
            "abc",
            "0000000000000000",
            "4bf92f3577b34da6a3ce929d0e0e47",
        ] {
            let e = bad.parse::<TraceId>().unwrap_err();
            assert_eq!(e, NotATraceId(bad.to_string()));
            assert!(e.to_string().contains(bad), "{e}");
        }
    }
}

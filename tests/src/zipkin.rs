//! A small client for Zipkin's v2 query API.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::process::wait_until;

/// One span as Zipkin's v2 API returns it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Span {
    pub trace_id: String,
    pub id: String,
    #[serde(default)]
    pub parent_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub timestamp: Option<u64>,
    #[serde(default)]
    pub duration: Option<u64>,
    #[serde(default)]
    pub local_endpoint: Option<Endpoint>,
    #[serde(default)]
    pub remote_endpoint: Option<Endpoint>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    #[serde(default)]
    pub service_name: Option<String>,
}

impl Span {
    pub fn service(&self) -> &str {
        self.local_endpoint
            .as_ref()
            .and_then(|e| e.service_name.as_deref())
            .unwrap_or("")
    }
    pub fn remote_service(&self) -> &str {
        self.remote_endpoint
            .as_ref()
            .and_then(|e| e.service_name.as_deref())
            .unwrap_or("")
    }
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }
}

/// A dependency-graph edge.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    pub parent: String,
    pub child: String,
    #[serde(default)]
    pub call_count: u64,
}

/// Zipkin's query API at a base URL such as `http://127.0.0.1:9411`.
#[derive(Debug, Clone)]
pub struct ZipkinApi {
    base: String,
    http: reqwest::Client,
}

impl ZipkinApi {
    pub fn new(base: impl Into<String>) -> Self {
        ZipkinApi {
            base: base.into().trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("building an HTTP client"),
        }
    }

    /// The spans of a trace, or `None` when Zipkin does not know it (404).
    pub async fn trace(&self, trace_id: &str) -> Result<Option<Vec<Span>>> {
        let url = format!("{}/api/v2/trace/{trace_id}", self.base);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .context("zipkin: GET trace")?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            bail!("zipkin: GET {url} answered {}", resp.status());
        }
        Ok(Some(resp.json().await.context("zipkin: decoding trace")?))
    }

    /// Polls until the trace satisfies `complete` (e.g. has all expected spans).
    pub async fn wait_for_trace(
        &self,
        trace_id: &str,
        timeout: Duration,
        complete: impl Fn(&[Span]) -> bool,
    ) -> Result<Vec<Span>> {
        let last = std::cell::RefCell::new(Vec::new());
        let what = format!("zipkin trace {trace_id}");
        let (this, last_ref, complete) = (self, &last, &complete);
        let r = wait_until(&what, timeout, move || async move {
            match this.trace(trace_id).await? {
                Some(spans) => {
                    let done = complete(&spans);
                    *last_ref.borrow_mut() = spans;
                    Ok(done)
                }
                None => Ok(false),
            }
        })
        .await;
        let last = last.into_inner();
        match r {
            Ok(()) => Ok(last),
            Err(e) => {
                let names: Vec<String> = last
                    .iter()
                    .map(|s| format!("{} ({})", s.name(), s.service()))
                    .collect();
                bail!("{e:#}; spans seen so far: {names:?}")
            }
        }
    }

    /// Traces matching a query, e.g. `[("serviceName", "producer"), ("limit", "10")]`.
    pub async fn traces(&self, query: &[(&str, &str)]) -> Result<Vec<Vec<Span>>> {
        let url = format!("{}/api/v2/traces", self.base);
        let resp = self.http.get(&url).query(query).send().await?;
        if !resp.status().is_success() {
            bail!("zipkin: GET {url} answered {}", resp.status());
        }
        Ok(resp.json().await?)
    }

    /// Dependency links over the last `lookback`.
    pub async fn dependencies(&self, lookback: Duration) -> Result<Vec<Link>> {
        let end = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
            .to_string();
        let lookback = lookback.as_millis().to_string();
        let url = format!("{}/api/v2/dependencies", self.base);
        let resp = self
            .http
            .get(&url)
            .query(&[("endTs", end.as_str()), ("lookback", lookback.as_str())])
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("zipkin: GET {url} answered {}", resp.status());
        }
        Ok(resp.json().await?)
    }

    /// Service names Zipkin has seen.
    pub async fn services(&self) -> Result<Vec<String>> {
        let resp = self
            .http
            .get(format!("{}/api/v2/services", self.base))
            .send()
            .await?;
        Ok(resp.json().await?)
    }
}

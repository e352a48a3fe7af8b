//! Zipkin's v2 query API for the tests: journeyctl's client and span model, plus the calls
//! only tests need (waiting for a complete trace, dependencies, services, span queries).

use std::time::Duration;

use anyhow::{Result, bail};
use journeyctl::zipkin::ZipkinClient;
use serde::Deserialize;

use crate::process::wait_until;

/// Zipkin's span model is journeyctl's (one definition for the tool and the tests).
pub use journeyctl::zipkin::{Endpoint, Span};

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
    client: ZipkinClient,
}

impl ZipkinApi {
    pub fn new(base: impl Into<String>) -> Self {
        let base = base.into().trim_end_matches('/').to_string();
        ZipkinApi {
            client: ZipkinClient::new(base.clone()).expect("building an HTTP client"),
            base,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("building an HTTP client"),
        }
    }

    /// The spans of a trace, or `None` when Zipkin does not know it (404).
    pub async fn trace(&self, trace_id: &str) -> Result<Option<Vec<Span>>> {
        Ok(self.client.trace(trace_id).await?)
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

    /// The traces of `trace_ids` Zipkin knows (`/api/v2/traceMany`, which wants two ids at
    /// least: one goes to `/api/v2/trace`), each a list of spans.
    pub async fn trace_many(&self, trace_ids: &[&str]) -> Result<Vec<Vec<Span>>> {
        if let [one] = trace_ids {
            return Ok(self.trace(one).await?.into_iter().collect());
        }
        let url = format!("{}/api/v2/traceMany", self.base);
        let ids = trace_ids.join(",");
        let resp = self
            .http
            .get(&url)
            .query(&[("traceIds", ids.as_str())])
            .send()
            .await?;
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

//! A traced client for the producer's `POST /messages`.

use std::time::{Duration, Instant};

use serde_json::Value;
use tracing::Instrument as _;

/// The producer's answer to one message.
#[derive(Debug, Clone)]
pub struct Posted {
    pub status: u16,
    pub body: Value,
    pub latency: Duration,
}

impl Posted {
    /// 202 Accepted: the broker acknowledged the record.
    pub fn acked(&self) -> bool {
        self.status == 202
    }
    pub fn trace_id(&self) -> Option<&str> {
        self.body.get("trace_id").and_then(Value::as_str)
    }
}

/// `POST {base}/messages` with a JSON body, in a CLIENT span whose context travels in
/// `traceparent` (so journeyctl's own span is the root of the journey when it is traced).
#[derive(Debug, Clone)]
pub struct ProducerClient {
    url: String,
    http: reqwest::Client,
}

impl ProducerClient {
    /// Fails only when no HTTP client can be built here (no TLS backend).
    pub fn new(base: &str, timeout: Duration) -> Result<Self, reqwest::Error> {
        Ok(ProducerClient {
            url: format!("{}/messages", base.trim_end_matches('/')),
            http: reqwest::Client::builder()
                .timeout(timeout)
                .pool_max_idle_per_host(256)
                .build()?,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub async fn post(&self, message: &Value) -> Result<Posted, reqwest::Error> {
        let span = tracing::info_span!(
            "POST /messages",
            otel.name = "POST /messages",
            otel.kind = "client",
            http.request.method = "POST",
            url.full = %self.url,
            http.response.status_code = tracing::field::Empty,
        );
        let mut headers = http::HeaderMap::new();
        journey_messaging::http::inject(&span, &mut headers);
        async {
            let started = Instant::now();
            let resp = self
                .http
                .post(&self.url)
                .headers(headers)
                .json(message)
                .send()
                .await?;
            let status = resp.status().as_u16();
            tracing::Span::current().record("http.response.status_code", status);
            // A body that is not JSON (a proxy's error page) is kept as text.
            let text = resp.text().await?;
            let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
            Ok(Posted {
                status,
                body,
                latency: started.elapsed(),
            })
        }
        .instrument(span)
        .await
    }
}

//! A traced client for the producer's `POST /messages` and `POST /messages/batch`.

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
    /// How many messages the broker acked: 1 or 0 for one message; a batch's `acked` count
    /// (202 and 207 answers say it per message).
    pub fn acked_count(&self) -> u64 {
        match self.body.get("acked").and_then(Value::as_u64) {
            Some(n) if self.status == 202 || self.status == 207 => n,
            _ => u64::from(self.acked()),
        }
    }
}

/// `POST {base}/messages` with a JSON body, in a CLIENT span whose context travels in
/// `traceparent` (so journeyctl's own span is the root of the journey when it is traced).
#[derive(Debug, Clone)]
pub struct ProducerClient {
    url: String,
    batch_url: String,
    http: reqwest::Client,
}

impl ProducerClient {
    /// Fails only when no HTTP client can be built here (no TLS backend).
    pub fn new(base: &str, timeout: Duration) -> Result<Self, reqwest::Error> {
        let base = base.trim_end_matches('/');
        Ok(ProducerClient {
            url: format!("{base}/messages"),
            batch_url: format!("{base}/messages/batch"),
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
        self.post_to(&self.url, "POST /messages", message).await
    }

    /// `POST {base}/messages/batch` with a JSON array of messages.
    pub async fn post_batch(&self, messages: &[Value]) -> Result<Posted, reqwest::Error> {
        self.post_to(&self.batch_url, "POST /messages/batch", messages)
            .await
    }

    async fn post_to<B: serde::Serialize + ?Sized>(
        &self,
        url: &str,
        name: &'static str,
        body: &B,
    ) -> Result<Posted, reqwest::Error> {
        let span = tracing::info_span!(
            "POST",
            otel.name = name,
            otel.kind = "client",
            http.request.method = "POST",
            url.full = %url,
            http.response.status_code = tracing::field::Empty,
        );
        let mut headers = http::HeaderMap::new();
        journey_messaging::http::inject(&span, &mut headers);
        async {
            let started = Instant::now();
            let resp = self
                .http
                .post(url)
                .headers(headers)
                .json(body)
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn posted(status: u16, body: Value) -> Posted {
        Posted {
            status,
            body,
            latency: Duration::ZERO,
        }
    }

    #[test]
    fn a_single_message_counts_one_ack_only_when_answered_202() {
        assert_eq!(posted(202, json!({"trace_id": "t"})).acked_count(), 1);
        assert_eq!(
            posted(503, json!({"error": "kafka_unavailable"})).acked_count(),
            0
        );
    }

    #[test]
    fn a_batch_counts_the_items_the_broker_acked() {
        assert_eq!(
            posted(202, json!({"count": 100, "acked": 100})).acked_count(),
            100
        );
        assert_eq!(
            posted(207, json!({"count": 100, "acked": 40})).acked_count(),
            40
        );
        // A refused batch says nothing was acked, whatever a body claims.
        assert_eq!(posted(413, json!({"acked": 7})).acked_count(), 0);
    }
}

//! The service checks after the workloads: Kafka's broker count, the Collector's health check
//! and Zipkin's `/health`, each retried with capped exponential backoff until the deadline.

use std::future::Future;
use std::time::Duration;

use backon::Retryable as _;
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use reqwest::StatusCode;

use super::{Deadline, Progress, Repeats, WaitError, WaitPlan};

/// How long one HTTP health request may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a service check does not pass (yet).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("metadata lists {found}/{expected} brokers")]
    TooFewBrokers { found: usize, expected: usize },
    #[error("creating the Kafka client failed")]
    KafkaClient(#[source] KafkaError),
    #[error("metadata request failed")]
    Metadata(#[source] KafkaError),
    #[error("the metadata request's task failed")]
    Task(#[source] tokio::task::JoinError),
    #[error("{}", http_failure(.0))]
    Http(#[source] reqwest::Error),
    #[error("answered {0}")]
    Unhealthy(StatusCode),
}

impl CheckError {
    /// The one-line reason progress shows: what librdkafka said for Kafka; for HTTP only the
    /// kind of failure (the whole chain is in the final report).
    pub fn reason(&self) -> String {
        match self {
            CheckError::KafkaClient(_) | CheckError::Metadata(_) | CheckError::Task(_) => {
                crate::error::chain(self)
            }
            _ => self.to_string(),
        }
    }
}

fn http_failure(e: &reqwest::Error) -> &'static str {
    if e.is_connect() {
        "connection refused"
    } else if e.is_timeout() {
        "timed out"
    } else {
        "request failed"
    }
}

/// How many brokers a metadata request reports.
pub async fn broker_count(kafka: &ClientConfig) -> Result<usize, CheckError> {
    let mut cfg = kafka.clone();
    cfg.set("log_level", "0");
    tokio::task::spawn_blocking(move || {
        let consumer: rdkafka::consumer::BaseConsumer =
            cfg.create().map_err(CheckError::KafkaClient)?;
        let md =
            rdkafka::consumer::Consumer::fetch_metadata(&consumer, None, Duration::from_secs(5))
                .map_err(CheckError::Metadata)?;
        Ok(md.brokers().len())
    })
    .await
    .map_err(CheckError::Task)?
}

/// `GET url` answers 2xx (and, with `says_up`, a body containing `UP`).
async fn healthy(http: &reqwest::Client, url: &str, says_up: bool) -> Result<(), CheckError> {
    let r = http.get(url).send().await.map_err(CheckError::Http)?;
    let status = r.status();
    if !status.is_success() {
        return Err(CheckError::Unhealthy(status));
    }
    if says_up && !r.text().await.map_err(CheckError::Http)?.contains("UP") {
        return Err(CheckError::Unhealthy(status));
    }
    Ok(())
}

/// Retries `check` (200 ms, doubling up to 5 s) until it passes or the deadline passes;
/// progress says why it does not pass yet, when that changes and every 15 s.
async fn until_ready<F, Fut>(
    what: &str,
    deadline: &Deadline,
    progress: Progress<'_>,
    check: F,
) -> Result<(), WaitError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), CheckError>>,
{
    let mut repeats = Repeats::default();
    let backoff = crate::retry::until(
        deadline.at,
        Duration::from_millis(200),
        Duration::from_secs(5),
    );
    let outcome = check
        .retry(backoff)
        .notify(|e, _| repeats.show(progress, format!("waiting: {what}: {}", e.reason())))
        .await;
    match outcome {
        Ok(()) => {
            progress(&format!("{what}: ready"));
            Ok(())
        }
        Err(e) => {
            let reason = format!("{what}: {}", e.reason());
            repeats.show(progress, format!("waiting: {reason}"));
            Err(deadline.timed_out(vec![reason], Some(e)))
        }
    }
}

/// Kafka, the Collector and Zipkin, those of them the plan configures, one after the other.
pub(super) async fn wait_services(
    plan: &WaitPlan,
    deadline: &Deadline,
    progress: Progress<'_>,
) -> Result<(), WaitError> {
    if let Some(kafka) = &plan.kafka {
        let expected = plan.expected_brokers.max(1);
        let what = format!("kafka ({expected} brokers expected)");
        until_ready(&what, deadline, progress, || async {
            let found = broker_count(kafka).await?;
            if found < expected {
                return Err(CheckError::TooFewBrokers { found, expected });
            }
            Ok(())
        })
        .await?;
    }
    let http = reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .build()
        .map_err(WaitError::HttpClient)?;
    if let Some(url) = &plan.collector_health_url {
        let what = format!("collector {url}");
        until_ready(&what, deadline, progress, || healthy(&http, url, false)).await?;
    }
    if let Some(base) = &plan.zipkin_url {
        let url = format!("{}/health", base.trim_end_matches('/'));
        let what = format!("zipkin {url}");
        until_ready(&what, deadline, progress, || healthy(&http, &url, true)).await?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[tokio::test]
    async fn a_service_that_never_answers_times_out_at_the_deadline_keeping_the_cause() {
        let plan = WaitPlan {
            namespace: String::new(),
            targets: Vec::new(),
            kafka: None,
            expected_brokers: 1,
            // Port 1 on the loopback: nothing listens, the connection is refused at once.
            collector_health_url: Some("http://127.0.0.1:1/".into()),
            zipkin_url: None,
            timeout: Duration::from_millis(900),
        };
        let started = Instant::now();
        let mut lines = Vec::new();
        let e = wait_services(&plan, &Deadline::after(plan.timeout), &mut |l: &str| {
            lines.push(l.to_string())
        })
        .await
        .unwrap_err();
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
            "{elapsed:?}"
        );
        assert_eq!(e.exit_code(), crate::exit::TIMEOUT);
        let WaitError::Timeout { pending, last, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(
            pending,
            &["collector http://127.0.0.1:1/: connection refused"]
        );
        assert!(
            matches!(last.as_deref(), Some(CheckError::Http(_))),
            "{last:?}"
        );
        // Printed once: the reason did not change.
        assert_eq!(
            lines,
            ["waiting: collector http://127.0.0.1:1/: connection refused"]
        );
    }
}

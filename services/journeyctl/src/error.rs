//! The one error of journeyctl's commands: what failed (naming the component), its typed
//! cause, the exit code (see [`crate::exit`]) and what to do about it. `main` prints it once.

use std::time::Duration;

use crate::exit;
use crate::load::LoadError;
use crate::seed::SeedError;
use crate::topics::TopicsError;
use crate::wait::WaitError;
use crate::zipkin::ZipkinError;

/// Why a journeyctl command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the telemetry settings in the environment are invalid")]
    Telemetry(#[source] journey_telemetry::Error),
    #[error("the topics to seed are invalid")]
    Topics(#[from] TopicsError),
    #[error("no Kubernetes configuration (in-cluster or kubeconfig)")]
    KubeConfig(#[source] kube::config::InferConfigError),
    #[error("the Kubernetes client cannot be built")]
    KubeClient(#[source] kube::Error),
    #[error("wait failed")]
    Wait(#[from] WaitError),
    #[error("seed failed")]
    Seed(#[from] SeedError),
    #[error("cannot build an HTTP client for {what}")]
    HttpClient {
        what: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("the producer at {url} could not be reached")]
    ProducerUnreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the producer did not accept the message: it answered {status} {body}")]
    ProducerRefused { status: u16, body: String },
    #[error("Zipkin could not be queried")]
    Zipkin(#[from] ZipkinError),
    #[error("verify: FAIL: {}", .failures.join(", "))]
    VerifyFailed { failures: Vec<String> },
    #[error("Zipkin has no trace of service `{service}` in the last {}", humantime::format_duration(*.lookback))]
    NoRecentTrace { service: String, lookback: Duration },
    #[error("Zipkin does not know trace {trace_id}")]
    TraceNotFound { trace_id: String },
    #[error("the result cannot be written as JSON")]
    Json(#[source] serde_json::Error),
    #[error("load could not run")]
    Load(#[from] LoadError),
    #[error("load: {errors} of {sent} messages failed")]
    LoadErrors { errors: u64, sent: u64 },
}

impl Error {
    /// The process exit code, as `journeyctl --help` and the README document them.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Telemetry(_) | Error::Topics(_) => exit::USAGE,
            Error::Wait(e) => e.exit_code(),
            Error::Seed(e) => e.exit_code(),
            Error::KubeConfig(_)
            | Error::KubeClient(_)
            | Error::HttpClient { .. }
            | Error::ProducerUnreachable { .. }
            | Error::Zipkin(_) => exit::UNAVAILABLE,
            Error::ProducerRefused { .. }
            | Error::VerifyFailed { .. }
            | Error::NoRecentTrace { .. }
            | Error::TraceNotFound { .. }
            | Error::Json(_)
            | Error::Load(_)
            | Error::LoadErrors { .. } => exit::FAILED,
        }
    }

    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            Error::Telemetry(_) => "fix or unset the environment variable named above",
            Error::Topics(e) | Error::Seed(SeedError::Invalid(e)) => topics_hint(e),
            Error::KubeConfig(_) => {
                "run journeyctl in a pod with a service account, or set KUBECONFIG to a \
                 kubeconfig for the cluster"
            }
            Error::KubeClient(_) => {
                "check the kubeconfig's server URL, certificates and credentials"
            }
            Error::Wait(e) => e.hint(),
            Error::Seed(e) => e.hint(),
            Error::HttpClient { .. } => {
                "the TLS stack could not start: check the system's OpenSSL and CA certificates"
            }
            Error::ProducerUnreachable { .. } => {
                "check PRODUCER_URL (--producer-url) and that the producer is up"
            }
            Error::ProducerRefused { .. } => {
                "the producer's logs say why it refused the message (is Kafka up, does the \
                 topic exist?)"
            }
            Error::Zipkin(_) => "check ZIPKIN_URL (--zipkin-url) and that Zipkin is up",
            Error::VerifyFailed { .. } => {
                "look at the services of the missing hops: are they running, consuming, and \
                 exporting spans to the Collector? Or allow more time (VERIFY_TIMEOUT)"
            }
            Error::NoRecentTrace { .. } => {
                "send a message first (journeyctl verify), or change --service or --lookback"
            }
            Error::TraceNotFound { .. } => {
                "check the trace id; a trace only just sent may need a few seconds to arrive"
            }
            Error::Json(_) | Error::Load(_) => {
                "this is a bug in journeyctl: please report it with the message above"
            }
            Error::LoadErrors { .. } => {
                "the error kinds above say what failed: check the producer's logs and Kafka"
            }
        }
    }
}

fn topics_hint(e: &TopicsError) -> &'static str {
    match e {
        TopicsError::Read { .. } => "check TOPICS_FILE (--topics-file): the file must exist",
        _ => {
            "fix the topic named above in TOPICS_FILE or TOPICS (--topic); the schema is the \
             chart's values.yaml `topics:` list"
        }
    }
}

/// `err` and its causes on one line, `: `-separated; a cause whose text the line already
/// holds (many errors repeat their source in their own message) is left out.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

/// The report `main` prints: `journeyctl: <error and causes>`, then what to do.
pub fn report(e: &Error) -> String {
    format!(
        "journeyctl: {}\njourneyctl: what to do: {}",
        chain(e),
        e.hint()
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("middle: {0}")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn the_chain_names_every_cause_once() {
        let e = Outer(Middle(std::io::Error::other("disk on fire")));
        assert_eq!(chain(&e), "outer: middle: disk on fire");
    }

    #[test]
    fn the_report_gives_the_cause_and_what_to_do() {
        let e = Error::Topics(TopicsError::Duplicate {
            topic: "orders".into(),
        });
        let text = report(&e);
        assert_eq!(e.exit_code(), exit::USAGE);
        assert!(
            text.starts_with(
                "journeyctl: the topics to seed are invalid: topic `orders` is listed twice\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("what to do: fix the topic named above"),
            "{text}"
        );
    }

    #[test]
    fn exit_codes_keep_their_documented_meanings() {
        let timeout = WaitError::Timeout {
            after: Duration::from_secs(1),
            pending: vec!["x".into()],
            last: None,
        };
        assert_eq!(Error::Wait(timeout).exit_code(), exit::TIMEOUT);
        assert_eq!(
            Error::Wait(WaitError::NoKubeClient).exit_code(),
            exit::UNAVAILABLE
        );
        assert_eq!(
            Error::VerifyFailed {
                failures: vec!["sink:CONSUMER missing".into()]
            }
            .exit_code(),
            exit::FAILED
        );
        assert_eq!(
            Error::TraceNotFound {
                trace_id: "a".into()
            }
            .exit_code(),
            exit::FAILED
        );
        assert_eq!(
            Error::Seed(SeedError::HiddenConfig {
                topic: "t".into(),
                config: "c".into()
            })
            .exit_code(),
            exit::SEED_FAILED
        );
    }
}

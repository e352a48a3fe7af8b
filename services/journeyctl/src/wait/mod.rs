//! `wait`: until the named workloads are Ready (kube watches), then Kafka answers metadata
//! with the expected broker count, the Collector's health check and Zipkin's `/health` pass.
//!
//! Workloads are watched (`kube::runtime::watcher`, one watch per target plus one on the
//! namespace's Pods for the reasons), never polled; the Kafka/HTTP checks retry with capped
//! exponential backoff. Everything shares one deadline. Progress lines name what is pending
//! and why, e.g. `statefulset/kafka: 0/1 ready (kafka-0: ContainersNotReady)`.
//!
//! RBAC needed in the namespace: `get`, `list`, `watch` on `pods` and on `apps` `deployments`
//! and `statefulsets`.
//!
//! - [`target`]: what to wait for (`KIND/NAME`, `KIND[SELECTOR]`);
//! - [`readiness`]: when a workload or pod is ready, and why a pod is not;
//! - [`workloads`]: the watch phase;
//! - [`services`]: the Kafka, Collector and Zipkin checks;
//! - [`error`]: why waiting failed, its exit code and what to do.

pub mod error;
pub mod readiness;
pub mod services;
pub mod target;
pub mod workloads;

use std::time::{Duration, Instant};

use kube::Client;
use rdkafka::ClientConfig;
use tracing::{info, instrument};

pub use error::WaitError;
pub use readiness::{WorkloadState, deployment_state, pod_not_ready_reason, statefulset_state};
pub use services::{CheckError, broker_count};
pub use target::{Kind, Target, TargetError, parse_selector, parse_targets};
pub use workloads::{FORBIDDEN_GRACE, wait_workloads};

/// Where progress lines go (journeyctl: stderr).
pub type Progress<'a> = &'a mut (dyn FnMut(&str) + Send);

/// Everything `wait` checks.
#[derive(Debug, Clone)]
pub struct WaitPlan {
    pub namespace: String,
    pub targets: Vec<Target>,
    /// Kafka client settings; `None` skips the Kafka check.
    pub kafka: Option<ClientConfig>,
    pub expected_brokers: usize,
    /// e.g. `http://collector:13133/`; `None` skips it.
    pub collector_health_url: Option<String>,
    /// Zipkin's base URL; `None` skips it.
    pub zipkin_url: Option<String>,
    pub timeout: Duration,
}

/// The one deadline every phase shares, and the timeout it came from (for the message).
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    pub at: Instant,
    pub timeout: Duration,
}

impl Deadline {
    pub fn after(timeout: Duration) -> Deadline {
        Deadline {
            at: Instant::now() + timeout,
            timeout,
        }
    }

    fn timed_out(&self, pending: Vec<String>, last: Option<CheckError>) -> WaitError {
        WaitError::Timeout {
            after: self.timeout,
            pending,
            last: last.map(Box::new),
        }
    }
}

/// How often an unchanged progress line is printed again.
const REPRINT: Duration = Duration::from_secs(15);

/// Prints a progress line when it differs from the last one, and every [`REPRINT`] when not.
#[derive(Debug, Default)]
struct Repeats {
    last: String,
    printed_at: Option<Instant>,
}

impl Repeats {
    fn show(&mut self, progress: Progress<'_>, line: String) {
        let due = self.printed_at.is_none_or(|at| at.elapsed() >= REPRINT);
        if line != self.last || due {
            progress(&line);
            self.printed_at = Some(Instant::now());
        }
        self.last = line;
    }
}

/// Runs the whole plan: workloads (if any and a client is given), then Kafka, the Collector
/// and Zipkin (those configured), all within `plan.timeout`.
#[instrument(name = "wait", skip_all, fields(timeout = %humantime::format_duration(plan.timeout)))]
pub async fn wait(
    client: Option<Client>,
    plan: &WaitPlan,
    progress: Progress<'_>,
) -> Result<(), WaitError> {
    let start = Instant::now();
    let deadline = Deadline::after(plan.timeout);
    if !plan.targets.is_empty() {
        let client = client.ok_or(WaitError::NoKubeClient)?;
        wait_workloads(client, &plan.namespace, &plan.targets, &deadline, progress).await?;
    }
    services::wait_services(plan, &deadline, progress).await?;
    info!(elapsed = ?start.elapsed(), "everything is ready");
    progress(&format!(
        "ready after {:.1}s",
        start.elapsed().as_secs_f64()
    ));
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn workloads_without_a_kubernetes_client_fail_at_once_with_exit_5_saying_so() {
        let plan = WaitPlan {
            namespace: "journey".into(),
            targets: vec!["deployment/journey-producer".parse().unwrap()],
            kafka: None,
            expected_brokers: 1,
            collector_health_url: None,
            zipkin_url: None,
            timeout: Duration::from_secs(60),
        };
        let started = Instant::now();
        let e = wait(None, &plan, &mut |_| {}).await.unwrap_err();
        assert!(matches!(e, WaitError::NoKubeClient), "{e:?}");
        assert_eq!(e.exit_code(), crate::exit::UNAVAILABLE);
        assert!(e.to_string().contains("no Kubernetes client"), "{e}");
        assert!(e.hint().contains("KUBECONFIG"), "{}", e.hint());
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn an_unchanged_progress_line_is_not_printed_again_at_once() {
        let mut lines = Vec::new();
        let mut repeats = Repeats::default();
        let mut progress = |l: &str| lines.push(l.to_string());
        for line in ["a", "a", "b", "b", "a"] {
            repeats.show(&mut progress, line.to_string());
        }
        assert_eq!(lines, ["a", "b", "a"]);
    }
}

//! Why waiting failed, the exit code it gives and what to do about it.

use std::time::Duration;

use kube::runtime::watcher;

use super::services::CheckError;

/// Why waiting failed. See [`WaitError::exit_code`].
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("timed out after {}; still not ready:\n  {}", humantime::format_duration(*.after), .pending.join("\n  "))]
    Timeout {
        after: Duration,
        pending: Vec<String>,
        /// Why the last service check failed, when a service check is what timed out.
        #[source]
        last: Option<Box<CheckError>>,
    },
    #[error("the Kubernetes API refused access to {what}")]
    Forbidden {
        what: String,
        #[source]
        source: watcher::Error,
    },
    #[error("workloads to wait for, but no Kubernetes client")]
    NoKubeClient,
    #[error("every Kubernetes watch ended before the workloads were ready")]
    WatchesEnded,
    #[error("cannot build the HTTP client for the Collector and Zipkin checks")]
    HttpClient(#[source] reqwest::Error),
}

impl WaitError {
    /// 3 for a timeout, 4 when the API refused access (RBAC), 5 without a usable client.
    pub fn exit_code(&self) -> u8 {
        match self {
            WaitError::Timeout { .. } => crate::exit::TIMEOUT,
            WaitError::Forbidden { .. } => crate::exit::FORBIDDEN,
            WaitError::NoKubeClient | WaitError::WatchesEnded | WaitError::HttpClient(_) => {
                crate::exit::UNAVAILABLE
            }
        }
    }

    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            WaitError::Timeout { .. } => {
                "the lines above say what is not ready and why: look at those pods \
                 (kubectl describe, kubectl logs) or services, or allow more time \
                 (WAIT_TIMEOUT / --timeout)"
            }
            WaitError::Forbidden { .. } => {
                "let the service account get, list and watch pods, deployments and statefulsets \
                 in this namespace (the chart's journeyctl Role and RoleBinding)"
            }
            WaitError::NoKubeClient => {
                "run journeyctl in a pod with a service account, or set KUBECONFIG"
            }
            WaitError::WatchesEnded => {
                "the Kubernetes API server closed every watch: check that it is up, then run \
                 journeyctl again"
            }
            WaitError::HttpClient(_) => {
                "the TLS stack could not start: check the system's OpenSSL and CA certificates"
            }
        }
    }
}

//! When a workload or a pod counts as ready, and why a pod is not (pure functions).

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;

/// Status of one workload: ready or not, and a short summary such as `1/3 ready`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadState {
    pub ready: bool,
    pub summary: String,
}

pub fn deployment_state(d: &Deployment) -> WorkloadState {
    let desired = d.spec.replicas.unwrap_or(1);
    let st = d.status.clone().unwrap_or_default();
    let observed = st.observed_generation.unwrap_or(-1) >= d.metadata.generation.unwrap_or(0);
    let ready = st.ready_replicas.unwrap_or(0);
    let available = st.available_replicas.unwrap_or(0);
    let updated = st.updated_replicas.unwrap_or(0);
    let total = st.replicas.unwrap_or(0);
    let mut summary = format!("{ready}/{desired} ready");
    if !observed {
        summary.push_str(", spec change not observed yet");
    } else if updated < desired {
        summary.push_str(&format!(", {updated}/{desired} updated"));
    } else if total > desired {
        summary.push_str(&format!(", {} old replicas terminating", total - desired));
    }
    for c in st.conditions.iter().flatten() {
        if c.type_.as_deref() == Some("Progressing")
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        {
            summary.push_str(", ProgressDeadlineExceeded");
        }
    }
    WorkloadState {
        ready: observed
            && ready >= desired
            && available >= desired
            && updated >= desired
            && total <= desired,
        summary,
    }
}

pub fn statefulset_state(s: &StatefulSet) -> WorkloadState {
    let desired = s.spec.replicas.unwrap_or(1);
    let st = s.status.clone().unwrap_or_default();
    let observed = st.observed_generation.unwrap_or(-1) >= s.metadata.generation.unwrap_or(0);
    let ready = st.ready_replicas.unwrap_or(0);
    let available = st.available_replicas.unwrap_or(ready);
    let mut summary = format!("{ready}/{desired} ready");
    if !observed {
        summary.push_str(", spec change not observed yet");
    }
    WorkloadState {
        ready: observed && ready >= desired && available >= desired,
        summary,
    }
}

/// Why a pod is not Ready (`None` when it is): the first waiting container's reason
/// (CrashLoopBackOff, ImagePullBackOff, ...), else the failing condition's reason
/// (Unschedulable, ContainersNotReady, ...), else the phase.
pub fn pod_not_ready_reason(p: &Pod) -> Option<String> {
    let st = p.status.clone().unwrap_or_default();
    let conds = st.conditions.unwrap_or_default();
    if conds
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
    {
        return None;
    }
    if p.metadata.deletion_timestamp.is_some() {
        return Some("Terminating".into());
    }
    let waiting = st
        .init_container_statuses
        .iter()
        .flatten()
        .chain(st.container_statuses.iter().flatten())
        .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
        .filter(|r| r != "ContainerCreating" && r != "PodInitializing");
    if let Some(w) = waiting {
        return Some(w);
    }
    for t in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        if let Some(c) = conds.iter().find(|c| c.type_ == t && c.status != "True") {
            return Some(
                c.reason
                    .clone()
                    .unwrap_or_else(|| format!("{t}={}", c.status)),
            );
        }
    }
    Some(st.phase.unwrap_or_else(|| "Pending".into()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStatus, StatefulSetSpec, StatefulSetStatus,
    };
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateWaiting, ContainerStatus, PodCondition, PodStatus,
    };

    #[test]
    fn deployments_are_ready_when_observed_updated_and_available() {
        let mut d = Deployment {
            spec: DeploymentSpec {
                replicas: Some(2),
                ..Default::default()
            },
            ..Default::default()
        };
        d.metadata.generation = Some(3);
        d.status = Some(DeploymentStatus {
            observed_generation: Some(3),
            replicas: Some(2),
            ready_replicas: Some(1),
            available_replicas: Some(1),
            updated_replicas: Some(2),
            ..Default::default()
        });
        assert_eq!(
            deployment_state(&d),
            WorkloadState {
                ready: false,
                summary: "1/2 ready".into()
            }
        );
        let st = d.status.as_mut().unwrap();
        st.ready_replicas = Some(2);
        st.available_replicas = Some(2);
        assert!(deployment_state(&d).ready);
        d.metadata.generation = Some(4);
        assert!(!deployment_state(&d).ready);
        assert!(deployment_state(&d).summary.contains("not observed"));
    }

    #[test]
    fn statefulsets_are_ready_when_all_replicas_are() {
        let mut s = StatefulSet {
            spec: StatefulSetSpec {
                replicas: Some(1),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(!statefulset_state(&s).ready);
        s.status = Some(StatefulSetStatus {
            observed_generation: Some(0),
            ready_replicas: Some(1),
            replicas: 1,
            ..Default::default()
        });
        assert!(statefulset_state(&s).ready);
    }

    #[test]
    fn pod_reasons_prefer_waiting_containers_then_conditions() {
        let cond = |t: &str, s: &str, r: Option<&str>| PodCondition {
            type_: t.into(),
            status: s.into(),
            reason: r.map(str::to_string),
            ..Default::default()
        };
        let mut p = Pod {
            status: Some(PodStatus {
                conditions: Some(vec![
                    cond("PodScheduled", "True", None),
                    cond("Ready", "False", Some("ContainersNotReady")),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            pod_not_ready_reason(&p).as_deref(),
            Some("ContainersNotReady")
        );
        p.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
            name: "kafka".into(),
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("CrashLoopBackOff".into()),
                    message: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        assert_eq!(
            pod_not_ready_reason(&p).as_deref(),
            Some("CrashLoopBackOff")
        );
        p.status.as_mut().unwrap().conditions =
            Some(vec![cond("PodScheduled", "False", Some("Unschedulable"))]);
        p.status.as_mut().unwrap().container_statuses = None;
        assert_eq!(pod_not_ready_reason(&p).as_deref(), Some("Unschedulable"));
        p.status.as_mut().unwrap().conditions = Some(vec![cond("Ready", "True", None)]);
        assert_eq!(pod_not_ready_reason(&p), None);
    }
}

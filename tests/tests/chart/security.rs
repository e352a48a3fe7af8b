//! Pod Security, RBAC.

use std::collections::BTreeSet;

use anyhow::{Result, ensure};
use journey_tests::chart::{CI_VALUES, NAMESPACE, all, containers, find, pods, render_ci, s, seq};
use yaml_serde::Value;

pub(crate) fn every_pod_meets_pod_security_restricted_and_has_resources_and_probes(
    _: &(),
) -> Result<()> {
    let allowed_volumes = [
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ];
    let mut problems = Vec::new();
    for values in CI_VALUES {
        let docs = render_ci(values)?;
        for (owner, _, pod) in pods(&docs) {
            let mut bad = |what: String| problems.push(format!("ci/{values} {owner}: {what}"));
            let psc = &pod["securityContext"];
            for host in ["hostNetwork", "hostPID", "hostIPC"] {
                if pod[host].as_bool() == Some(true) {
                    bad(host.to_string());
                }
            }
            for v in seq(&pod["volumes"]) {
                let kinds: Vec<&str> = v
                    .as_mapping()
                    .map(|m| {
                        m.keys()
                            .filter_map(Value::as_str)
                            .filter(|k| *k != "name")
                            .collect()
                    })
                    .unwrap_or_default();
                if kinds.iter().any(|k| !allowed_volumes.contains(k)) {
                    bad(format!("volume {} of type {kinds:?}", s(&v["name"])));
                }
            }
            if psc["seccompProfile"]["type"].as_str() != Some("RuntimeDefault") {
                bad("pod seccompProfile is not RuntimeDefault".into());
            }
            let is_init: BTreeSet<&str> = seq(&pod["initContainers"])
                .iter()
                .map(|c| s(&c["name"]))
                .collect();
            for c in containers(pod) {
                let n = s(&c["name"]);
                let sc = &c["securityContext"];
                let non_root = sc["runAsNonRoot"]
                    .as_bool()
                    .or(psc["runAsNonRoot"].as_bool());
                let uid = sc["runAsUser"].as_i64().or(psc["runAsUser"].as_i64());
                if non_root != Some(true) {
                    bad(format!("{n}: runAsNonRoot is not true"));
                }
                // A numeric non-root uid: images with a named USER (apache/kafka, zipkin) are
                // refused by the kubelet under runAsNonRoot without one.
                if !matches!(uid, Some(u) if u > 0) {
                    bad(format!("{n}: no numeric non-zero runAsUser"));
                }
                if sc["allowPrivilegeEscalation"].as_bool() != Some(false) {
                    bad(format!("{n}: allowPrivilegeEscalation is not false"));
                }
                if sc["privileged"].as_bool() == Some(true) {
                    bad(format!("{n}: privileged"));
                }
                if !seq(&sc["capabilities"]["drop"])
                    .iter()
                    .any(|d| s(d) == "ALL")
                {
                    bad(format!("{n}: capabilities do not drop ALL"));
                }
                if seq(&sc["capabilities"]["add"])
                    .iter()
                    .any(|a| s(a) != "NET_BIND_SERVICE")
                {
                    bad(format!("{n}: adds capabilities"));
                }
                if sc["readOnlyRootFilesystem"].as_bool() != Some(true) {
                    bad(format!("{n}: root filesystem is writable"));
                }
                if c["resources"]["limits"]["memory"].is_null()
                    || c["resources"]["requests"]["memory"].is_null()
                {
                    bad(format!("{n}: no memory request and limit"));
                }
                if !is_init.contains(n)
                    && kind_of_owner(&owner) != "Pod"
                    && c["readinessProbe"].is_null()
                {
                    bad(format!("{n}: no readinessProbe"));
                }
            }
            if !owner.starts_with("Pod/") && pod["enableServiceLinks"].as_bool() != Some(false) {
                bad("service links are on (KAFKA_* variables would leak into the Kafka image's config)".into());
            }
        }
    }
    ensure!(
        problems.is_empty(),
        "pods that break the restricted profile or the chart's rules:\n{}",
        problems.join("\n")
    );
    Ok(())
}

fn kind_of_owner(owner: &str) -> &str {
    owner.split('/').next().unwrap_or("")
}

pub(crate) fn journeyctl_may_only_get_list_and_watch_workloads_and_pods_and_only_it_holds_the_token(
    _: &(),
) -> Result<()> {
    let docs = render_ci("default")?;
    let sa = "journey-journeyctl";
    let role = find(&docs, "Role", sa)?;
    let mut grants = BTreeSet::new();
    for rule in seq(&role["rules"]) {
        for g in seq(&rule["apiGroups"]) {
            for r in seq(&rule["resources"]) {
                for v in seq(&rule["verbs"]) {
                    grants.insert(format!("{}/{}:{}", s(g), s(r), s(v)));
                }
            }
        }
    }
    let mut want = BTreeSet::new();
    for r in ["apps/statefulsets", "apps/deployments", "/pods"] {
        for v in ["get", "list", "watch"] {
            want.insert(format!("{r}:{v}"));
        }
    }
    ensure!(
        grants == want,
        "journeyctl's Role grants {grants:?}, expected exactly {want:?}"
    );
    let binding = find(&docs, "RoleBinding", sa)?;
    ensure!(
        s(&binding["roleRef"]["kind"]) == "Role" && s(&binding["roleRef"]["name"]) == sa,
        "RoleBinding roleRef"
    );
    let subjects = seq(&binding["subjects"]);
    ensure!(
        subjects.len() == 1
            && s(&subjects[0]["name"]) == sa
            && s(&subjects[0]["namespace"]) == NAMESPACE,
        "RoleBinding subjects: {subjects:?}"
    );
    ensure!(
        all(&docs, "ClusterRoleBinding")
            .iter()
            .all(|b| seq(&b["subjects"]).iter().all(|x| s(&x["name"]) != sa)),
        "journeyctl bound cluster-wide"
    );
    // Only journeyctl's container mounts the API token; the services have none.
    for c in ["producer", "relay", "sink"] {
        let d = find(&docs, "Deployment", &format!("journey-{c}"))?;
        let pod = &d["spec"]["template"]["spec"];
        ensure!(
            s(&pod["serviceAccountName"]) == sa,
            "{c}: serviceAccountName"
        );
        ensure!(
            pod["automountServiceAccountToken"].as_bool() == Some(false),
            "{c}: the pod automounts a token"
        );
        for k in containers(pod) {
            let mounts_token = seq(&k["volumeMounts"])
                .iter()
                .any(|m| s(&m["name"]) == "kube-api-access");
            ensure!(
                mounts_token == (s(&k["name"]) == "journeyctl-init"),
                "{c}: container {} token mount = {mounts_token}",
                s(&k["name"])
            );
        }
    }
    Ok(())
}

//! The local Kubernetes control plane is real: it reports the pinned release, enforces RBAC and
//! Pod Security, runs a Deployment to Ready on kwok's fake node, and leaves nothing behind.
//!
//! One full control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok)
//! is shared by the tests of this binary; each test works in its own namespace.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use journey_tests::controlplane::{ControlPlane, FAKE_NODE};
use journey_tests::process::{LedgerEntry, is_alive, ledger_entries};
use journey_tests::runner::{self, block_on};
use journey_tests::{say, tests};

fn main() -> std::process::ExitCode {
    runner::main(
        || block_on(ControlPlane::start_full()),
        tests![
            apiserver_reports_the_pinned_version,
            full_mode_runs_a_deployment_to_ready,
            full_mode_runs_a_statefulset_to_ready,
            rbac_denies_a_service_account_what_no_role_grants,
            pod_security_rejects_a_privileged_pod_in_a_restricted_namespace,
            teardown_leaves_no_control_plane_process_alive,
            zz_explore,
        ],
    )
}

fn apiserver_reports_the_pinned_version(cp: &ControlPlane) -> Result<()> {
    let want = format!("v{}", cp.version());
    let raw: serde_json::Value =
        serde_json::from_str(&cp.kubectl_ok(["get", "--raw", "/version"])?)?;
    ensure!(raw["gitVersion"] == want.as_str(), "/version: {raw}");
    let minor = want.split('.').nth(1).context("version has a minor")?;
    ensure!(
        raw["major"] == "1" && raw["minor"] == minor,
        "/version major/minor: {raw}"
    );
    let both: serde_json::Value = serde_json::from_str(&cp.kubectl_ok(["version", "-o", "json"])?)?;
    ensure!(
        both["clientVersion"]["gitVersion"] == want.as_str(),
        "kubectl version: {both}"
    );
    ensure!(
        both["serverVersion"]["gitVersion"] == want.as_str(),
        "kubectl version: {both}"
    );
    Ok(())
}

fn full_mode_runs_a_deployment_to_ready(cp: &ControlPlane) -> Result<()> {
    let ns = "deploy-ready";
    cp.kubectl_ok(["create", "namespace", ns])?;
    cp.kubectl_ok([
        "-n",
        ns,
        "create",
        "deployment",
        "web",
        "--image=registry.example/web:1",
        "--replicas=2",
    ])?;
    let started = Instant::now();
    cp.kubectl_ok([
        "-n",
        ns,
        "rollout",
        "status",
        "deployment/web",
        "--timeout=120s",
    ])?;
    say!(
        "deployment web: 2/2 Ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let pods: serde_json::Value =
        serde_json::from_str(&cp.kubectl_ok(["-n", ns, "get", "pods", "-o", "json"])?)?;
    let items = pods["items"].as_array().context("pod list")?;
    ensure!(items.len() == 2, "expected 2 pods, got {}", items.len());
    for pod in items {
        ensure!(
            pod["spec"]["nodeName"] == FAKE_NODE,
            "scheduled elsewhere: {}",
            pod["spec"]["nodeName"]
        );
        ensure!(
            pod["status"]["phase"] == "Running",
            "phase: {}",
            pod["status"]["phase"]
        );
        let ready = pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        ensure!(
            ready,
            "pod {} is not Ready: {}",
            pod["metadata"]["name"],
            pod["status"]
        );
    }
    Ok(())
}

fn full_mode_runs_a_statefulset_to_ready(cp: &ControlPlane) -> Result<()> {
    let ns = "sts-ready";
    cp.kubectl_ok(["create", "namespace", ns])?;
    // No volumeClaimTemplates: nothing provisions volumes here, so PVCs would never bind.
    cp.kubectl_apply(&format!(
        "apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db, namespace: {ns}}}
spec:
  serviceName: db
  replicas: 2
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      containers:
      - {{name: db, image: registry.example/db:1}}
"
    ))?;
    let started = Instant::now();
    cp.kubectl_ok([
        "-n",
        ns,
        "rollout",
        "status",
        "statefulset/db",
        "--timeout=120s",
    ])?;
    say!(
        "statefulset db: 2/2 Ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let ready = cp.kubectl_ok([
        "-n",
        ns,
        "get",
        "statefulset",
        "db",
        "-o",
        "jsonpath={.status.readyReplicas}",
    ])?;
    ensure!(ready.trim() == "2", "readyReplicas: {ready:?}");
    Ok(())
}

fn rbac_denies_a_service_account_what_no_role_grants(cp: &ControlPlane) -> Result<()> {
    let ns = "rbac";
    cp.kubectl_ok(["create", "namespace", ns])?;
    let sa = format!("system:serviceaccount:{ns}:default");
    let can = |verb: &str, what: &str| -> Result<bool> {
        let out = cp.kubectl(["auth", "can-i", verb, what, "-n", ns, "--as", &sa])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim() == "yes")
    };
    ensure!(
        !can("list", "pods")?,
        "a bare service account may list pods"
    );
    cp.kubectl_ok([
        "-n",
        ns,
        "create",
        "role",
        "pod-reader",
        "--verb=get,list",
        "--resource=pods",
    ])?;
    cp.kubectl_ok([
        "-n",
        ns,
        "create",
        "rolebinding",
        "pod-reader",
        "--role=pod-reader",
        &format!("--serviceaccount={ns}:default"),
    ])?;
    ensure!(
        can("list", "pods")?,
        "the role binding does not let the service account list pods"
    );
    ensure!(
        !can("delete", "pods")?,
        "the service account may delete pods without a role granting it"
    );
    Ok(())
}

fn pod_security_rejects_a_privileged_pod_in_a_restricted_namespace(
    cp: &ControlPlane,
) -> Result<()> {
    // Unlabelled namespaces get the default level, privileged: the API server itself admits it.
    let open_ns = "unrestricted";
    cp.kubectl_ok(["create", "namespace", open_ns])?;
    cp.kubectl_apply(&format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: privileged, namespace: {open_ns}}}
spec:
  containers:
  - {{name: c, image: registry.example/app:1, securityContext: {{privileged: true}}}}
"
    ))
    .context("a privileged pod was refused in a namespace without a Pod Security label")?;

    let ns = "restricted";
    cp.kubectl_ok(["create", "namespace", ns])?;
    cp.kubectl_ok([
        "label",
        "namespace",
        ns,
        "pod-security.kubernetes.io/enforce=restricted",
    ])?;
    let pod = |name: &str, security: &str| {
        format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}}}
spec:
  containers:
  - name: c
    image: registry.example/app:1
{security}"
        )
    };
    let privileged = cp.kubectl_apply(&pod(
        "privileged",
        "    securityContext: {privileged: true}\n",
    ));
    let err = format!(
        "{:#}",
        privileged.err().context("a privileged pod was admitted")?
    );
    ensure!(
        err.contains("violates PodSecurity \"restricted"),
        "unexpected refusal: {err}"
    );
    let restricted = "    securityContext:
      allowPrivilegeEscalation: false
      runAsNonRoot: true
      runAsUser: 10001
      capabilities: {drop: [ALL]}
      seccompProfile: {type: RuntimeDefault}
";
    cp.kubectl_apply(&pod("restricted", restricted))
        .context("a restricted-compliant pod was refused")?;
    cp.kubectl_ok([
        "-n",
        ns,
        "wait",
        "pod/restricted",
        "--for=condition=Ready",
        "--timeout=60s",
    ])?;
    Ok(())
}

fn teardown_leaves_no_control_plane_process_alive(_: &ControlPlane) -> Result<()> {
    let before = ledger_entries().len();
    let pids = block_on(async {
        let cp = ControlPlane::start_full().await?;
        ensure!(
            cp.pids().len() == 5,
            "expected 5 processes, got {:?}",
            cp.pids()
        );
        Ok::<_, anyhow::Error>(cp.pids())
    })?; // the control plane is dropped here
    let recorded: Vec<LedgerEntry> = ledger_entries().into_iter().skip(before).collect();
    for pid in &pids {
        ensure!(
            recorded.iter().any(|e| e.pid == *pid),
            "pid {pid} was not recorded in the ledger"
        );
    }
    // Killed with SIGKILL and reaped by the drop: gone at once, but allow the kernel a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let alive: Vec<&LedgerEntry> = recorded
            .iter()
            .filter(|e| pids.contains(&e.pid) && is_alive(e))
            .collect();
        if alive.is_empty() {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "still alive after drop: {alive:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn zz_explore(cp: &ControlPlane) -> Result<()> {
    if std::env::var_os("CP_EXPLORE").is_none() {
        return Ok(());
    }
    std::fs::write(
        "/tmp/cp-kubeconfig-path",
        cp.kubeconfig().display().to_string(),
    )?;
    std::thread::sleep(Duration::from_secs(3000));
    Ok(())
}

//! The local Kubernetes control plane is real (it reports the pinned release, enforces RBAC and
//! Pod Security, runs workloads to Ready on kwok's fake node, and leaves nothing behind), and
//! charts/journey holds up on it:
//!
//! - every `ci/*-values.yaml` installs into a namespace enforcing Pod Security `restricted`
//!   with every object accepted and no warning, and the `helm test` pod is admitted there too;
//! - a values override that breaks `restricted` is refused: Helm gets the warning for the
//!   Deployment, and the API server rejects its Pods (the ReplicaSet's `ReplicaFailure`);
//! - journeyctl's and the Collector's ServiceAccounts may do exactly what their roles claim;
//! - `helm install --wait` converges (every pod Ready, journeyctl's init container Completed)
//!   and `helm uninstall` leaves no object of the release behind.
//!
//! `helm test` is not run: kwok only fakes pod status, so the `journeyctl verify` pod would
//! never run, and kwok completes only Job-owned pods (the test pod would stay Running).
//! The local stack tests run `journeyctl verify` for real.
//!
//! One full control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok)
//! is shared by the tests of this binary; each test works in its own namespaces, with its own
//! release names.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use journey_tests::controlplane::{ControlPlane, FAKE_NODE};
use journey_tests::kube::Kube;
use journey_tests::ledger::{LedgerEntry, is_alive, ledger_entries};
use journey_tests::process::wait_until;
use journey_tests::runner::{self, block_on};
use journey_tests::{repo_root, say, tests};
use serde::Deserialize;
use serde_json::Value;

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
            every_ci_values_file_installs_under_restricted_pod_security_without_a_warning,
            a_values_override_that_breaks_restricted_is_refused_by_pod_security,
            journeyctl_may_only_get_list_and_watch_workloads_and_pods_in_its_namespace,
            the_collector_may_only_read_what_k8s_attributes_needs,
            helm_install_wait_converges_on_kwok_and_helm_uninstall_removes_every_object,
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

// ---------------------------------------------------------------------------------------------
// charts/journey on the API server

/// How long `helm install --wait` may take to get every pod Ready on kwok (it takes seconds).
const CONVERGE_BOUND: Duration = Duration::from_secs(120);

/// The label every object of a release carries.
const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";

fn chart_dir() -> PathBuf {
    repo_root().join("charts/journey")
}

/// Every `charts/journey/ci/*-values.yaml`, by name (`default`, `minimal`, ...).
fn ci_values_files() -> Result<Vec<(String, PathBuf)>> {
    let dir = chart_dir().join("ci");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if let Some(stem) = name.strip_suffix("-values.yaml") {
            files.push((stem.to_string(), path.clone()));
        }
    }
    files.sort();
    ensure!(!files.is_empty(), "no *-values.yaml in {}", dir.display());
    Ok(files)
}

/// A namespace where Pod Security `restricted` is enforced, warned about and audited.
fn restricted_namespace(cp: &ControlPlane, ns: &str) -> Result<()> {
    cp.kubectl_ok(["create", "namespace", ns])?;
    cp.kubectl_ok([
        "label",
        "namespace",
        ns,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/warn=restricted",
        "pod-security.kubernetes.io/audit=restricted",
    ])?;
    Ok(())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs helm with `args` on the control plane; the [`Output`] whatever its status.
fn helm(cp: &ControlPlane, args: &[&str]) -> Result<Output> {
    cp.helm_command()?
        .args(args)
        .output()
        .with_context(|| format!("running helm {}", args.join(" ")))
}

/// Runs helm with `args`; its output, or an error with what it printed if it failed.
fn helm_ok(cp: &ControlPlane, args: &[&str]) -> Result<Output> {
    let out = helm(cp, args)?;
    ensure!(
        out.status.success(),
        "helm {} failed ({}): {}{}",
        args.join(" "),
        out.status,
        text(&out.stderr).trim(),
        text(&out.stdout).trim()
    );
    Ok(out)
}

/// The lines of `out` that carry an API server warning. kubectl prints them as `Warning: …`;
/// Helm 4 logs them through klog (`I… warnings.go:…] "Warning: …"`, `W…` in Helm 3).
fn warnings(out: &Output) -> Vec<String> {
    let all = format!("{}\n{}", text(&out.stdout), text(&out.stderr));
    all.lines()
        .filter(|l| {
            l.contains("Warning:") || l.contains("warnings.go") || l.contains("would violate")
        })
        .map(str::to_string)
        .collect()
}

/// `helm install <release> charts/journey -n <ns> <extra...>` (not `--wait` unless asked).
fn helm_install(cp: &ControlPlane, release: &str, ns: &str, extra: &[&str]) -> Result<Output> {
    let chart = chart_dir();
    let chart = chart.to_str().context("chart path is not UTF-8")?;
    let mut args = vec!["install", release, chart, "--namespace", ns];
    args.extend_from_slice(extra);
    helm_ok(cp, &args)
}

/// The objects of a kubectl `-o json` list.
fn items(cp: &ControlPlane, args: &[&str]) -> Result<Vec<Value>> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let list: Value = serde_json::from_str(&cp.kubectl_ok(&all)?)?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

fn name_of(obj: &Value) -> String {
    obj["metadata"]["name"].as_str().unwrap_or("?").to_string()
}

fn every_ci_values_file_installs_under_restricted_pod_security_without_a_warning(
    cp: &ControlPlane,
) -> Result<()> {
    let chart = chart_dir();
    for (name, file) in ci_values_files()? {
        let ns = format!("ci-{name}");
        let file = file.to_str().context("values path is not UTF-8")?;
        restricted_namespace(cp, &ns)?;
        let out = helm_install(cp, "journey", &ns, &["--values", file])
            .with_context(|| format!("ci/{name}-values.yaml"))?;
        let warned = warnings(&out);
        ensure!(
            warned.is_empty(),
            "ci/{name}-values.yaml: the API server warned:\n{}",
            warned.join("\n")
        );
        ensure!(
            text(&out.stderr).trim().is_empty(),
            "ci/{name}-values.yaml: helm install printed on stderr:\n{}",
            text(&out.stderr)
        );

        // Every object the release rendered is on the server (kubectl get fails on a missing one).
        let manifest =
            text(&helm_ok(cp, &["get", "manifest", "journey", "--namespace", &ns])?.stdout);
        let rendered = yaml_serde::Deserializer::from_str(&manifest)
            .filter_map(|d| yaml_serde::Value::deserialize(d).ok())
            .filter(|v| v.get("kind").is_some())
            .count();
        let found = cp.kubectl_stdin(["get", "-f", "-", "-o", "name"], &manifest)?;
        ensure!(
            found.status.success(),
            "ci/{name}-values.yaml: objects of the release are missing: {}",
            text(&found.stderr).trim()
        );
        let found = text(&found.stdout).lines().count();
        ensure!(
            rendered > 0 && found == rendered,
            "ci/{name}-values.yaml: {rendered} objects rendered, {found} on the server"
        );

        // The `helm test` pod (a hook, not installed) is admitted by the same namespace.
        let test_pod = helm_ok(
            cp,
            &[
                "template",
                "journey",
                chart.to_str().context("chart path is not UTF-8")?,
                "--namespace",
                &ns,
                "--values",
                file,
                "--show-only",
                "templates/tests/verify.yaml",
            ],
        )?;
        let dry = cp.kubectl_stdin(
            ["create", "--dry-run=server", "-n", &ns, "-f", "-"],
            &text(&test_pod.stdout),
        )?;
        ensure!(
            dry.status.success() && warnings(&dry).is_empty(),
            "ci/{name}-values.yaml: the helm test pod was not admitted cleanly: {}",
            text(&dry.stderr).trim()
        );
        say!("ci/{name}-values.yaml: {rendered} objects accepted under restricted, no warning");
    }
    Ok(())
}

fn a_values_override_that_breaks_restricted_is_refused_by_pod_security(
    cp: &ControlPlane,
) -> Result<()> {
    let ns = "psa-broken";
    restricted_namespace(cp, ns)?;
    // Two ways out of `restricted` through the chart's own values: root for the producer's pod,
    // a privileged container for Zipkin (privileged needs privilege escalation allowed too).
    let out = helm_install(
        cp,
        "broken",
        ns,
        &[
            "--set",
            "producer.podSecurityContext.runAsUser=0",
            "--set-json",
            r#"zipkin.securityContext={"privileged":true,"allowPrivilegeEscalation":true}"#,
        ],
    )?;
    // Deployments are admitted: Pod Security only warns about a workload's pod template.
    let warned = warnings(&out).join("\n");
    for want in [
        r#"would violate PodSecurity \"restricted:latest\": runAsUser=0"#,
        "securityContext.privileged=true",
    ] {
        let unescaped = want.replace(r#"\""#, "\"");
        ensure!(
            warned.contains(want) || warned.contains(&unescaped),
            "helm install did not pass on the warning {unescaped:?}; warnings:\n{warned}"
        );
    }

    // The Pods themselves are rejected by the API server: the ReplicaSet controller reports it.
    let refused = |component: &str, detail: &str| -> Result<()> {
        let selector = format!("{INSTANCE_LABEL}=broken,app.kubernetes.io/component={component}");
        let mut message = String::new();
        block_on(wait_until(
            &format!("{component}'s ReplicaSet to report the rejection"),
            Duration::from_secs(60),
            || {
                let found = items(cp, &["replicasets", "-n", ns, "-l", &selector]).map(|rs| {
                    rs.iter()
                        .flat_map(|r| {
                            r["status"]["conditions"]
                                .as_array()
                                .cloned()
                                .unwrap_or_default()
                        })
                        .find(|c| c["type"] == "ReplicaFailure")
                        .and_then(|c| c["message"].as_str().map(str::to_string))
                });
                if let Ok(Some(m)) = &found {
                    message = m.clone();
                }
                async move { Ok(found?.is_some()) }
            },
        ))?;
        ensure!(
            message.contains("is forbidden: violates PodSecurity \"restricted:latest\"")
                && message.contains(detail),
            "{component}: unexpected ReplicaFailure: {message}"
        );
        say!("{component}: {message}");
        let pods = items(cp, &["pods", "-n", ns, "-l", &selector])?;
        ensure!(
            pods.is_empty(),
            "{component} has pods although they violate restricted"
        );
        Ok(())
    };
    refused("producer", "runAsUser=0")?;
    refused("zipkin", "securityContext.privileged=true")?;

    // The components that kept the restricted defaults do get their pods.
    cp.kubectl_ok([
        "-n",
        ns,
        "rollout",
        "status",
        "deployment/broken-journey-collector",
        "--timeout=60s",
    ])?;
    Ok(())
}

/// `kubectl auth can-i <verb> <resource> <scope…> --as <user>`: yes or no. A subresource is
/// written `pods/log` here and passed as `--subresource` (kubectl reads `pods/log` as the pod
/// named `log`).
fn can_i(
    cp: &ControlPlane,
    user: &str,
    verb: &str,
    resource: &str,
    scope: &[&str],
) -> Result<bool> {
    let (resource, sub) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(format!("--subresource={s}"))),
        None => (resource, None),
    };
    let mut args = vec!["auth", "can-i", verb, resource, "--as", user];
    args.extend(sub.as_deref());
    args.extend_from_slice(scope);
    let out = cp.kubectl(&args)?;
    match text(&out.stdout).trim() {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => bail!(
            "kubectl {}: {other:?} {}",
            args.join(" "),
            text(&out.stderr).trim()
        ),
    }
}

/// Checks every `(verb, resource, scope)` of `allowed` is allowed and of `denied` denied.
fn check_matrix(
    cp: &ControlPlane,
    user: &str,
    allowed: &[(&str, &str, &[&str])],
    denied: &[(&str, &str, &[&str])],
) -> Result<()> {
    let mut wrong = Vec::new();
    for (want, cases) in [(true, allowed), (false, denied)] {
        for (verb, resource, scope) in cases {
            if can_i(cp, user, verb, resource, scope)? != want {
                wrong.push(format!(
                    "{verb} {resource} {}: {}",
                    scope.join(" "),
                    if want { "denied" } else { "ALLOWED" }
                ));
            }
        }
    }
    ensure!(wrong.is_empty(), "{user}:\n  {}", wrong.join("\n  "));
    say!(
        "{user}: {} allowed and {} denied as expected",
        allowed.len(),
        denied.len()
    );
    Ok(())
}

/// `(apiGroup, resource, verb)` of every resource rule `user` has in `ns`
/// (a SelfSubjectRulesReview made as that user).
fn resource_rules(
    cp: &ControlPlane,
    user: &str,
    ns: &str,
) -> Result<BTreeSet<(String, String, String)>> {
    let review = format!(
        "{{\"apiVersion\":\"authorization.k8s.io/v1\",\"kind\":\"SelfSubjectRulesReview\",\"spec\":{{\"namespace\":\"{ns}\"}}}}"
    );
    let out = cp.kubectl_stdin(
        [
            "create",
            "--validate=false",
            "-f",
            "-",
            "-o",
            "json",
            "--as",
            user,
        ],
        &review,
    )?;
    ensure!(
        out.status.success(),
        "SelfSubjectRulesReview as {user}: {}",
        text(&out.stderr).trim()
    );
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let strings = |x: &Value| -> Vec<String> {
        x.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect()
    };
    let mut rules = BTreeSet::new();
    for rule in v["status"]["resourceRules"]
        .as_array()
        .into_iter()
        .flatten()
    {
        ensure!(
            strings(&rule["resourceNames"]).is_empty(),
            "unexpected resourceNames rule: {rule}"
        );
        for g in strings(&rule["apiGroups"]) {
            for r in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    rules.insert((g.clone(), r.clone(), verb));
                }
            }
        }
    }
    Ok(rules)
}

/// What `user`'s roles add in `ns` to what every ServiceAccount may do (the namespace's
/// `default` ServiceAccount, bound to nothing, as the baseline).
fn granted(
    cp: &ControlPlane,
    user: &str,
    ns: &str,
    baseline_ns: &str,
) -> Result<BTreeSet<(String, String, String)>> {
    let baseline = resource_rules(
        cp,
        &format!("system:serviceaccount:{baseline_ns}:default"),
        ns,
    )?;
    Ok(resource_rules(cp, user, ns)?
        .difference(&baseline)
        .cloned()
        .collect())
}

fn rules_of(
    groups_resources: &[(&str, &str)],
    verbs: &[&str],
) -> BTreeSet<(String, String, String)> {
    let mut set = BTreeSet::new();
    for (g, r) in groups_resources {
        for v in verbs {
            set.insert((g.to_string(), r.to_string(), v.to_string()));
        }
    }
    set
}

/// The ServiceAccount a binding of the release (by component label) grants to, in `ns`.
fn bound_service_account(
    cp: &ControlPlane,
    kind: &str,
    release: &str,
    component: &str,
    ns: &str,
) -> Result<String> {
    let selector = format!("{INSTANCE_LABEL}={release},app.kubernetes.io/component={component}");
    let mut args = vec![kind, "-l", &selector];
    if kind == "rolebindings" {
        args.extend_from_slice(&["-n", ns]);
    }
    let bindings = items(cp, &args)?;
    let subjects: Vec<&Value> = bindings
        .iter()
        .flat_map(|b| b["subjects"].as_array().into_iter().flatten())
        .filter(|s| s["kind"] == "ServiceAccount" && s["namespace"] == ns)
        .collect();
    ensure!(
        subjects.len() == 1,
        "expected one ServiceAccount bound by the {component} {kind} in {ns}, got {subjects:?}"
    );
    Ok(subjects[0]["name"]
        .as_str()
        .context("subject name")?
        .to_string())
}

fn journeyctl_may_only_get_list_and_watch_workloads_and_pods_in_its_namespace(
    cp: &ControlPlane,
) -> Result<()> {
    let (ns, other) = ("rbac-journeyctl", "rbac-journeyctl-other");
    restricted_namespace(cp, ns)?;
    cp.kubectl_ok(["create", "namespace", other])?;
    helm_install(cp, "rbac", ns, &[])?;
    let sa = bound_service_account(cp, "rolebindings", "rbac", "journeyctl", ns)?;
    // The service pods run as that ServiceAccount (journeyctl is their init container).
    for d in items(
        cp,
        &[
            "deployments",
            "-n",
            ns,
            "-l",
            &format!("{INSTANCE_LABEL}=rbac"),
        ],
    )? {
        let component = &d["metadata"]["labels"]["app.kubernetes.io/component"];
        if ["producer", "relay", "sink"].iter().any(|c| component == c) {
            ensure!(
                d["spec"]["template"]["spec"]["serviceAccountName"] == sa.as_str(),
                "{} does not run as {sa}",
                name_of(&d)
            );
        }
    }
    let user = format!("system:serviceaccount:{ns}:{sa}");
    let here: &[&str] = &["-n", ns];
    let there: &[&str] = &["-n", other];
    let system: &[&str] = &["-n", "kube-system"];
    let all: &[&str] = &["--all-namespaces"];
    let none: &[&str] = &[];
    let mut allowed = Vec::new();
    for verb in ["get", "list", "watch"] {
        for resource in ["pods", "deployments.apps", "statefulsets.apps"] {
            allowed.push((verb, resource, here));
        }
    }
    let denied = [
        ("get", "secrets", here),
        ("list", "secrets", here),
        ("watch", "secrets", here),
        ("get", "configmaps", here),
        ("list", "replicasets.apps", here),
        ("list", "jobs.batch", here),
        ("delete", "pods", here),
        ("deletecollection", "pods", here),
        ("create", "pods", here),
        ("update", "pods", here),
        ("create", "pods/exec", here),
        ("get", "pods/log", here),
        ("delete", "deployments.apps", here),
        ("patch", "deployments.apps", here),
        ("update", "deployments.apps/scale", here),
        ("delete", "statefulsets.apps", here),
        ("update", "statefulsets.apps", here),
        ("create", "rolebindings.rbac.authorization.k8s.io", here),
        ("list", "pods", there),
        ("get", "deployments.apps", there),
        ("list", "pods", system),
        ("list", "secrets", system),
        ("list", "pods", all),
        ("list", "namespaces", none),
        ("create", "namespaces", none),
        ("delete", "namespaces", none),
        ("get", "nodes", none),
        ("create", "clusterroles.rbac.authorization.k8s.io", none),
        (
            "create",
            "clusterrolebindings.rbac.authorization.k8s.io",
            none,
        ),
        ("create", "persistentvolumes", none),
    ];
    check_matrix(cp, &user, &allowed, &denied)?;

    // Exactly: beyond what every ServiceAccount may do, the Role grants these and nothing else.
    let want = rules_of(
        &[
            ("", "pods"),
            ("apps", "deployments"),
            ("apps", "statefulsets"),
        ],
        &["get", "list", "watch"],
    );
    let got = granted(cp, &user, ns, ns)?;
    ensure!(
        got == want,
        "{user} in {ns}: granted {got:?}, want {want:?}"
    );
    let elsewhere = granted(cp, &user, other, ns)?;
    ensure!(
        elsewhere.is_empty(),
        "{user} in {other}: granted {elsewhere:?}"
    );
    Ok(())
}

fn the_collector_may_only_read_what_k8s_attributes_needs(cp: &ControlPlane) -> Result<()> {
    let (ns, other) = ("rbac-collector", "rbac-collector-other");
    restricted_namespace(cp, ns)?;
    cp.kubectl_ok(["create", "namespace", other])?;
    helm_install(cp, "telemetry", ns, &[])?;
    let sa = bound_service_account(cp, "clusterrolebindings", "telemetry", "collector", ns)?;
    let user = format!("system:serviceaccount:{ns}:{sa}");
    let here: &[&str] = &["-n", ns];
    let there: &[&str] = &["-n", other];
    let all: &[&str] = &["--all-namespaces"];
    let none: &[&str] = &[];
    let mut allowed = Vec::new();
    for verb in ["get", "list", "watch"] {
        for scope in [here, there, all] {
            allowed.push((verb, "pods", scope));
            allowed.push((verb, "replicasets.apps", scope));
        }
        allowed.push((verb, "namespaces", none));
        allowed.push((verb, "nodes", none));
    }
    let denied = [
        ("get", "secrets", here),
        ("list", "secrets", all),
        ("list", "configmaps", all),
        ("list", "deployments.apps", all),
        ("list", "statefulsets.apps", all),
        ("delete", "pods", here),
        ("create", "pods", there),
        ("patch", "pods", all),
        ("create", "pods/exec", here),
        ("update", "replicasets.apps", here),
        ("create", "namespaces", none),
        ("update", "namespaces", none),
        ("patch", "nodes", none),
        ("delete", "nodes", none),
        (
            "create",
            "clusterrolebindings.rbac.authorization.k8s.io",
            none,
        ),
    ];
    check_matrix(cp, &user, &allowed, &denied)?;
    let want = rules_of(
        &[
            ("", "pods"),
            ("", "namespaces"),
            ("", "nodes"),
            ("apps", "replicasets"),
        ],
        &["get", "list", "watch"],
    );
    for in_ns in [ns, other] {
        let got = granted(cp, &user, in_ns, ns)?;
        ensure!(
            got == want,
            "{user} in {in_ns}: granted {got:?}, want {want:?}"
        );
    }
    Ok(())
}

/// Every object labelled as `release`'s, namespaced (in `ns`) and cluster-scoped, as
/// `kind.group/name` (what `kubectl get -o name` prints), over every listable resource type.
fn objects_of_release(cp: &ControlPlane, release: &str, ns: &str) -> Result<Vec<String>> {
    let selector = format!("{INSTANCE_LABEL}={release}");
    let mut found = Vec::new();
    for namespaced in ["true", "false"] {
        let kinds = cp.kubectl_ok([
            "api-resources",
            "--verbs=list",
            &format!("--namespaced={namespaced}"),
            "-o",
            "name",
        ])?;
        let kinds: Vec<&str> = kinds.lines().filter(|l| !l.is_empty()).collect();
        let joined = kinds.join(",");
        let mut args = vec!["get", joined.as_str(), "-l", &selector, "-o", "name"];
        if namespaced == "true" {
            args.extend_from_slice(&["-n", ns]);
        }
        found.extend(cp.kubectl_ok(&args)?.lines().map(str::to_string));
    }
    Ok(found)
}

fn helm_install_wait_converges_on_kwok_and_helm_uninstall_removes_every_object(
    cp: &ControlPlane,
) -> Result<()> {
    let ci = chart_dir().join("ci");
    let three = ci.join("three-broker-values.yaml");
    let three = three.to_str().context("values path is not UTF-8")?;
    // kwok binds no PersistentVolumeClaim: persistence stays off (the default; three-broker
    // turns it on, so it is turned off again here).
    let cases: [(&str, Vec<&str>); 2] = [
        ("default", vec![]),
        (
            "three-broker",
            vec![
                "--values",
                three,
                "--set",
                "kafka.persistence.enabled=false",
            ],
        ),
    ];
    for (name, values) in cases {
        let ns = format!("converge-{name}");
        let release = ns.clone();
        restricted_namespace(cp, &ns)?;
        let mut args = vec!["--wait", "--timeout", "5m"];
        args.extend(values.iter().copied());
        let started = Instant::now();
        let out = helm_install(cp, &release, &ns, &args)?;
        let took = started.elapsed();
        ensure!(
            took <= CONVERGE_BOUND,
            "{name}: helm install --wait took {took:?} (bound {CONVERGE_BOUND:?})"
        );
        ensure!(
            warnings(&out).is_empty(),
            "{name}: warnings {:?}",
            warnings(&out)
        );

        // Every replica of every workload is a Ready pod on the fake node, and journeyctl's
        // init container has completed in each service pod.
        let selector = format!("{INSTANCE_LABEL}={release}");
        let mut replicas = 0;
        for kind in ["deployments", "statefulsets"] {
            for w in items(cp, &[kind, "-n", &ns, "-l", &selector])? {
                replicas += w["spec"]["replicas"].as_u64().unwrap_or(1);
                ensure!(
                    w["status"]["readyReplicas"] == w["spec"]["replicas"],
                    "{name}: {kind}/{} ready {} of {}",
                    name_of(&w),
                    w["status"]["readyReplicas"],
                    w["spec"]["replicas"]
                );
            }
        }
        let pods = items(cp, &["pods", "-n", &ns, "-l", &selector])?;
        ensure!(
            pods.len() as u64 == replicas,
            "{name}: {} pods for {replicas} replicas",
            pods.len()
        );
        let mut with_init = 0;
        for pod in &pods {
            let pname = name_of(pod);
            ensure!(
                pod["spec"]["nodeName"] == FAKE_NODE,
                "{pname}: not on {FAKE_NODE}"
            );
            let ready = pod["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            ensure!(ready, "{pname} is not Ready: {}", pod["status"]);
            let inits = pod["spec"]["initContainers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let statuses = pod["status"]["initContainerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            ensure!(
                statuses.len() == inits.len(),
                "{pname}: {} init containers, {} statuses",
                inits.len(),
                statuses.len()
            );
            for s in &statuses {
                // A native sidecar (restartPolicy: Always, the Kafka pod's `topics`) keeps
                // running; every other init container ran to completion.
                let sidecar = inits.iter().any(|c| {
                    c["name"] == s["name"] && c["restartPolicy"].as_str() == Some("Always")
                });
                if sidecar {
                    ensure!(
                        !s["state"]["running"].is_null(),
                        "{pname}: sidecar {} is not running: {}",
                        s["name"],
                        s["state"]
                    );
                    continue;
                }
                let done = &s["state"]["terminated"];
                ensure!(
                    done["reason"] == "Completed" && done["exitCode"] == 0,
                    "{pname}: init container {} did not complete: {}",
                    s["name"],
                    s["state"]
                );
            }
            if inits.iter().any(|c| c["name"] == "journeyctl-init") {
                with_init += 1;
            }
        }
        ensure!(
            with_init > 0,
            "{name}: no pod has journeyctl's init container"
        );
        let pvcs = items(cp, &["persistentvolumeclaims", "-n", &ns])?;
        ensure!(
            pvcs.is_empty(),
            "{name}: PVCs with persistence off: {pvcs:?}"
        );
        say!(
            "{name}: helm install --wait: {} pods Ready ({with_init} after journeyctl-init) in {:.1}s",
            pods.len(),
            took.as_secs_f64()
        );

        let before = objects_of_release(cp, &release, &ns)?;
        ensure!(
            before.iter().any(|o| o.starts_with("clusterrole")),
            "{name}: the release's cluster-scoped objects are not found by label: {before:?}"
        );
        let started = Instant::now();
        helm_ok(
            cp,
            &[
                "uninstall",
                &release,
                "--namespace",
                &ns,
                "--wait",
                "--timeout",
                "2m",
            ],
        )?;
        // Pods and ReplicaSets go through the garbage collector after their owners.
        let mut left = Vec::new();
        block_on(wait_until(
            &format!("{name}: every object of the release to go"),
            Duration::from_secs(60),
            || {
                let r = objects_of_release(cp, &release, &ns);
                if let Ok(l) = &r {
                    left = l.clone();
                }
                async move { Ok(r?.is_empty()) }
            },
        ))
        .with_context(|| format!("left after helm uninstall: {left:?}"))?;
        // Nor is the release itself kept (Helm stores it in Secrets labelled owner=helm).
        let releases = text(&helm_ok(cp, &["list", "--namespace", &ns, "-q"])?.stdout);
        ensure!(
            releases.trim().is_empty(),
            "{name}: helm still lists {releases:?}"
        );
        let stored = items(
            cp,
            &[
                "secrets",
                "-n",
                &ns,
                "-l",
                &format!("owner=helm,name={release}"),
            ],
        )?;
        ensure!(
            stored.is_empty(),
            "{name}: release records left: {:?}",
            stored.iter().map(name_of).collect::<Vec<_>>()
        );
        say!(
            "{name}: helm uninstall removed all {} objects in {:.1}s",
            before.len(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

//! `journeyctl wait` on a real kube-apiserver (etcd + apiserver + controller-manager +
//! scheduler + kwok with one fake node): it returns only once the workloads are Ready, times
//! out with exit 3 naming what is not ready and why, and works under the chart's namespaced
//! Role (the chart's own rendered RBAC, impersonating its ServiceAccount).
//!
//! Pods are held back with a nodeSelector no node has (the pod is `Unschedulable`); labelling
//! the fake node later lets the scheduler place it and kwok make it Ready.

#![allow(clippy::expect_used)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use journey_tests::controlplane::{ControlPlane, FAKE_NODE, kubeconfig_yaml};
use journey_tests::kube::Kube;
use journey_tests::runner::{self, block_on};
use journey_tests::services::bin;
use journey_tests::tools::Tools;
use journey_tests::{repo_root, tests};

fn main() -> std::process::ExitCode {
    runner::main(
        || block_on(ControlPlane::start_full()),
        tests![
            wait_returns_only_after_the_workloads_turn_ready,
            wait_times_out_with_exit_3_naming_what_is_not_ready_and_why,
            wait_works_under_the_charts_namespaced_role_and_reports_forbidden_elsewhere,
        ],
    )
}

/// A namespace, a StatefulSet and a Deployment whose pods need node label `gate=<gate>`.
fn workloads_yaml(ns: &str, gate: &str) -> String {
    let pod = |app: &str| {
        format!(
            "    metadata:
      labels: {{app: {app}}}
    spec:
      nodeSelector: {{gate: {gate}}}
      tolerations: [{{operator: Exists}}]
      containers:
        - name: main
          image: example.invalid/{app}:1
"
        )
    };
    format!(
        "apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: kafka, namespace: {ns}, labels: {{tier: data}}}}
spec:
  replicas: 1
  serviceName: kafka
  selector: {{matchLabels: {{app: kafka}}}}
  template:
{kafka}---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: zipkin, namespace: {ns}, labels: {{tier: ui}}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: zipkin}}}}
  template:
{zipkin}",
        kafka = pod("kafka"),
        zipkin = pod("zipkin"),
    )
}

/// journeyctl running in the background, its stderr collected line by line.
struct Running {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    started: Instant,
}

impl Running {
    fn spawn(args: &[&str], kubeconfig: &Path, ns: &str) -> Result<Running> {
        let mut cmd = Command::new(bin("journeyctl")?);
        cmd.env_clear()
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAMESPACE", ns)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("starting journeyctl")?;
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let err = child.stderr.take().context("stderr")?;
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[journeyctl] {line}");
                sink.lock().expect("lines").push(line);
            }
        });
        Ok(Running {
            child,
            lines,
            started: Instant::now(),
        })
    }

    fn text(&self) -> String {
        self.lines.lock().expect("lines").join("\n")
    }

    /// Waits until a stderr line contains `needle` (fails if journeyctl exits first).
    fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.text().contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "journeyctl exited ({status}) before printing {needle:?}:\n{}",
                    self.text()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "no line with {needle:?} after {timeout:?}:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> Result<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                std::thread::sleep(Duration::from_millis(100)); // let the reader drain
                return Ok(status.code().unwrap_or(-1));
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                bail!(
                    "journeyctl still running after {timeout:?}:\n{}",
                    self.text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn label_node(cp: &ControlPlane, gate: &str) -> Result<()> {
    cp.kubectl_ok([
        "label",
        "node",
        FAKE_NODE,
        &format!("gate={gate}"),
        "--overwrite",
    ])?;
    Ok(())
}

fn wait_returns_only_after_the_workloads_turn_ready(cp: &ControlPlane) -> Result<()> {
    let (ns, gate) = ("wait-ready", "open-ready");
    cp.kubectl_apply(&workloads_yaml(ns, gate))?;
    // One by name, one by selector.
    let mut run = Running::spawn(
        &[
            "wait",
            "--workloads",
            "statefulset/kafka,deployment[tier=ui]",
            "--timeout",
            "3m",
        ],
        cp.kubeconfig(),
        ns,
    )?;
    // Pending, and saying why: the pods cannot be scheduled yet.
    run.wait_for_line("kafka-0: Unschedulable", Duration::from_secs(60))?;
    run.wait_for_line(
        "deployment/zipkin: 0/1 ready (zipkin-",
        Duration::from_secs(30),
    )?;
    std::thread::sleep(Duration::from_secs(2));
    ensure!(
        run.child.try_wait()?.is_none(),
        "wait returned while nothing was Ready:\n{}",
        run.text()
    );
    let opened = Instant::now();
    label_node(cp, gate)?;
    let code = run.wait_exit(Duration::from_secs(90))?;
    ensure!(code == 0, "exit {code}:\n{}", run.text());
    ensure!(
        run.text()
            .contains("workloads ready: statefulset/kafka, deployment[tier=ui]"),
        "{}",
        run.text()
    );
    eprintln!(
        "wait returned {:.1}s after the pods could be scheduled ({:.1}s in all)",
        opened.elapsed().as_secs_f64(),
        run.started.elapsed().as_secs_f64()
    );
    // Both really are Ready now.
    let ready = cp.kubectl_ok([
        "-n",
        ns,
        "get",
        "statefulset/kafka",
        "deployment/zipkin",
        "-o",
        "jsonpath={.items[*].status.readyReplicas}",
    ])?;
    ensure!(
        ready.split_whitespace().collect::<Vec<_>>() == ["1", "1"],
        "readyReplicas: {ready}"
    );
    Ok(())
}

fn wait_times_out_with_exit_3_naming_what_is_not_ready_and_why(cp: &ControlPlane) -> Result<()> {
    let ns = "wait-timeout";
    cp.kubectl_apply(&workloads_yaml(ns, "never-opened"))?;
    let mut run = Running::spawn(
        &[
            "wait",
            "--workloads",
            "statefulset/kafka,deployment/missing",
            "--timeout",
            "8s",
        ],
        cp.kubeconfig(),
        ns,
    )?;
    let code = run.wait_exit(Duration::from_secs(60))?;
    let text = run.text();
    ensure!(code == 3, "expected exit 3 (timeout), got {code}:\n{text}");
    ensure!(text.contains("timed out after 8s"), "{text}");
    ensure!(
        text.contains("statefulset/kafka: 0/1 ready (kafka-0: Unschedulable)"),
        "{text}"
    );
    ensure!(text.contains("deployment/missing: not found"), "{text}");
    ensure!(
        run.started.elapsed() < Duration::from_secs(20),
        "the timeout is global: took {:?}",
        run.started.elapsed()
    );
    Ok(())
}

/// The chart's `templates/journeyctl-rbac.yaml`, rendered for namespace `ns` by helm.
fn chart_rbac(ns: &str) -> Result<String> {
    let helm = Tools::load()?.path("HELM", "helm")?;
    let out = Command::new(helm)
        .args(["template", "journey"])
        .arg(repo_root().join("charts/journey"))
        .args([
            "--namespace",
            ns,
            "--show-only",
            "templates/journeyctl-rbac.yaml",
        ])
        .output()
        .context("running helm template")?;
    ensure!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// A kubeconfig that impersonates `user` (with the admin's token, which may impersonate).
fn impersonating_kubeconfig(cp: &ControlPlane, user: &str) -> Result<PathBuf> {
    let admin = kubeconfig_yaml(cp.server_url(), cp.ca_file(), cp.admin_token());
    let token_line = format!("    token: {}\n", cp.admin_token());
    ensure!(
        admin.contains(&token_line),
        "unexpected kubeconfig layout:\n{admin}"
    );
    let text = admin.replace(&token_line, &format!("{token_line}    as: {user}\n"));
    let path = cp
        .dir()
        .join(format!("kubeconfig-{}", user.replace(':', "_")));
    std::fs::write(&path, text)?;
    Ok(path)
}

fn wait_works_under_the_charts_namespaced_role_and_reports_forbidden_elsewhere(
    cp: &ControlPlane,
) -> Result<()> {
    let (ns, gate) = ("wait-rbac", "open-rbac");
    cp.kubectl_apply(&workloads_yaml(ns, gate))?;
    let rbac = chart_rbac(ns)?;
    cp.kubectl_apply(&rbac)?;
    let sa = rbac
        .split("\n---")
        .filter_map(|doc| yaml_serde::from_str::<yaml_serde::Value>(doc).ok())
        .find(|d| d["kind"] == "ServiceAccount")
        .and_then(|d| d["metadata"]["name"].as_str().map(str::to_string))
        .context("the chart's RBAC has no ServiceAccount")?;
    let user = format!("system:serviceaccount:{ns}:{sa}");
    let kubeconfig = impersonating_kubeconfig(cp, &user)?;
    // The Role is really in force: the SA may not read secrets, may watch pods.
    let can = |verb: &str, what: &str| -> Result<bool> {
        let out = cp.kubectl(["auth", "can-i", verb, what, "-n", ns, "--as", &user])?;
        Ok(String::from_utf8_lossy(&out.stdout).trim() == "yes")
    };
    ensure!(
        can("watch", "pods")? && can("watch", "statefulsets.apps")? && !can("get", "secrets")?,
        "unexpected RBAC"
    );

    label_node(cp, gate)?;
    let mut run = Running::spawn(
        &[
            "wait",
            "--workloads",
            "statefulset/kafka,deployment/zipkin",
            "--timeout",
            "2m",
        ],
        &kubeconfig,
        ns,
    )?;
    let code = run.wait_exit(Duration::from_secs(150))?;
    ensure!(
        code == 0,
        "under the chart's Role: exit {code}:\n{}",
        run.text()
    );

    // The same ServiceAccount in a namespace where it has no Role: forbidden, exit 4.
    let other = "wait-rbac-other";
    cp.kubectl_apply(&workloads_yaml(other, gate))?;
    let mut run = Running::spawn(
        &[
            "wait",
            "--workloads",
            "statefulset/kafka",
            "--timeout",
            "6s",
        ],
        &kubeconfig,
        other,
    )?;
    let code = run.wait_exit(Duration::from_secs(60))?;
    let text = run.text();
    ensure!(
        code == 4,
        "expected exit 4 (forbidden), got {code}:\n{text}"
    );
    ensure!(text.contains("Forbidden") && text.contains(&user), "{text}");
    Ok(())
}

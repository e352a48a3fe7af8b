//! The chart on a real kind cluster, as a user runs it: the README's commands, kind's own CNI
//! (kindnet, enforcing NetworkPolicies) and storage (local-path), skaffold's kind profile.
//!
//! Setup: the tests' private dockerd (`journey_tests::docker`); the images (`scripts/images.sh
//! local`: the local bases, the third-party stand-ins, Journey's three); kind's node image
//! (`scripts/kind-node.sh`); then the README's commands, literally ([`README_COMMANDS`]):
//! `kind create cluster --config k8s/kind.yaml`, `kind load docker-image` of Journey's images,
//! the namespace with Pod Security `restricted`, `helm install --wait`. Only two things are
//! added, because this machine cannot pull: `--image kindest/node:v<K8S_VERSION>` (the node
//! image built here) and a `kind load` of the chart's third-party images (stand-ins built here).
//!
//! The tests run in order, each building on the cluster the earlier ones left: the installed
//! release, its network policies, faults, its uninstall; then `skaffold dev`, Kafka on a
//! local-path volume, three brokers, and skaffold's `local` profile, each in a release of its
//! own.

mod install;
mod journey;
mod policy;
mod skaffold;
mod storage;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use install::{
    helm_install_wait_brings_every_pod_to_ready_in_a_restricted_namespace,
    helm_test_passes_journeyctl_verify_through_cluster_dns,
    helm_uninstall_leaves_no_object_and_no_container_of_the_release,
    kafka_reports_its_kraft_quorum, the_init_containers_log_their_progress_and_seed_the_topics,
    the_readme_shows_the_commands_this_cluster_was_made_and_installed_with,
};
use journey::{
    a_post_through_port_forward_is_a_complete_journey_that_journeyctl_shows,
    deleting_the_kafka_pod_drops_readiness_then_the_stack_recovers,
    deleting_the_relay_pod_replaces_it_and_messages_before_and_after_reach_the_sink,
    the_zipkin_ui_in_chromium_shows_the_trace_and_the_dependency_graph,
};
use journey_tests::docker::Docker;
use journey_tests::kind::KindCluster;
use journey_tests::kube::{Kube, PortForward};
use journey_tests::runner::{self, Fixture, block_on};
use journey_tests::tools::Tools;
use journey_tests::{repo_root, say, tests};
use policy::{
    another_apps_pod_is_refused_at_every_port_while_the_releases_pods_get_through,
    extra_ingress_opens_the_producer_and_zipkin_to_its_peer_and_nothing_else,
    kindnet_enforces_the_charts_network_policies_on_the_node,
    without_the_policies_the_other_apps_pod_reaches_every_port,
};
use serde_json::Value;
use skaffold::{
    skaffold_dev_rolls_only_the_edited_producer_and_ctrl_c_removes_the_release,
    skaffold_run_with_the_local_profile_pushes_to_a_registry_the_node_pulls_from,
};
use storage::{
    helm_uninstall_keeps_kafkas_volume_claims_until_they_are_deleted,
    kafka_on_a_local_path_volume_loses_no_acked_message_when_its_pod_is_deleted,
    the_three_broker_values_form_a_three_voter_quorum_on_local_path_volumes,
};

fn main() -> std::process::ExitCode {
    runner::main_in_order(
        || block_on(Kind::start()),
        tests![
            the_readme_shows_the_commands_this_cluster_was_made_and_installed_with,
            helm_install_wait_brings_every_pod_to_ready_in_a_restricted_namespace,
            the_init_containers_log_their_progress_and_seed_the_topics,
            kafka_reports_its_kraft_quorum,
            helm_test_passes_journeyctl_verify_through_cluster_dns,
            a_post_through_port_forward_is_a_complete_journey_that_journeyctl_shows,
            the_zipkin_ui_in_chromium_shows_the_trace_and_the_dependency_graph,
            kindnet_enforces_the_charts_network_policies_on_the_node,
            another_apps_pod_is_refused_at_every_port_while_the_releases_pods_get_through,
            extra_ingress_opens_the_producer_and_zipkin_to_its_peer_and_nothing_else,
            without_the_policies_the_other_apps_pod_reaches_every_port,
            deleting_the_relay_pod_replaces_it_and_messages_before_and_after_reach_the_sink,
            deleting_the_kafka_pod_drops_readiness_then_the_stack_recovers,
            helm_uninstall_leaves_no_object_and_no_container_of_the_release,
            skaffold_dev_rolls_only_the_edited_producer_and_ctrl_c_removes_the_release,
            kafka_on_a_local_path_volume_loses_no_acked_message_when_its_pod_is_deleted,
            helm_uninstall_keeps_kafkas_volume_claims_until_they_are_deleted,
            the_three_broker_values_form_a_three_voter_quorum_on_local_path_volumes,
            // Last: once the kubelet (1.35+) has pulled an image from a registry, it verifies by
            // a pull every pod that names the same image otherwise (`kind load`ed
            // journey/*:0.1.0), and that pull cannot succeed here.
            skaffold_run_with_the_local_profile_pushes_to_a_registry_the_node_pulls_from,
        ],
    )
}

pub const RELEASE: &str = "journey";
pub const NAMESPACE: &str = "journey";

/// The kind config the README names.
pub const KIND_CONFIG: &str = "k8s/kind.yaml";

/// The README's kind path, in its order: every line is in README.md verbatim (a test checks),
/// and the setup runs each one as written, in a shell with the pinned tools on the PATH.
pub const README_COMMANDS: &[&str] = &[
    "kind create cluster --config k8s/kind.yaml",
    "kind load docker-image journey/producer:0.1.0 journey/consumer:0.1.0 journey/journeyctl:0.1.0 --name journey",
    "kubectl create namespace journey",
    "kubectl label namespace journey pod-security.kubernetes.io/enforce=restricted",
    "helm install journey charts/journey -n journey --wait --timeout 10m",
];

/// How long one of the README's commands may take here (the install's own bound is 10 minutes).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(660);

#[derive(Debug)]
pub struct Kind {
    /// How long `helm install --wait` took, and what it printed.
    pub install: Duration,
    pub helm_output: String,
    /// The trace of the POST through the port-forward, for the browser test.
    pub trace: std::sync::Mutex<Option<String>>,
    pub artifacts: PathBuf,
    /// The chart's third-party images (Kafka's is the probe pods' image).
    pub third_party: Vec<String>,
    // Drop order: the cluster (kind delete) before its daemon.
    pub cluster: KindCluster,
    pub docker: Docker,
}

impl Fixture for Kind {
    fn logs_dirs(&self) -> Vec<PathBuf> {
        vec![self.cluster.logs_path(), self.docker.dir().join("logs")]
    }
}

impl Kind {
    async fn start() -> Result<Kind> {
        let artifacts = repo_root().join("target/journey-artifacts");
        std::fs::create_dir_all(&artifacts)?;
        let docker = Docker::start().await?;
        let api = docker.api();
        let started = Instant::now();
        api.build_images("local")?;
        say!(
            "kind: images built in {:.0}s",
            started.elapsed().as_secs_f64()
        );
        let started = Instant::now();
        api.run_script("scripts/kind-node.sh", &[])?;
        say!(
            "kind: node image ready in {:.0}s",
            started.elapsed().as_secs_f64()
        );

        let image = format!(
            "kindest/node:v{}",
            Tools::load()?.get("K8S_VERSION", "controlplane")?
        );
        let cluster = KindCluster::create(&docker, &repo_root().join(KIND_CONFIG), &image)?;
        let third_party = third_party_images()?;
        cluster.run_line("kind-load", README_COMMANDS[1], COMMAND_TIMEOUT)?;
        // What only a machine that cannot pull needs: the third-party images, loaded too.
        cluster.run_line(
            "kind-load-third-party",
            &format!(
                "kind load docker-image {} --name journey",
                third_party.join(" ")
            ),
            COMMAND_TIMEOUT,
        )?;
        cluster.run_line("namespace", README_COMMANDS[2], COMMAND_TIMEOUT)?;
        cluster.run_line("label", README_COMMANDS[3], COMMAND_TIMEOUT)?;
        let started = Instant::now();
        let helm_output = {
            let _progress = PodProgress::start(&cluster, NAMESPACE);
            cluster
                .run_line("helm-install", README_COMMANDS[4], COMMAND_TIMEOUT)
                .map_err(|e| e.context(pods_and_events(&cluster, NAMESPACE)))?
        };
        let install = started.elapsed();
        say!(
            "kind: helm install --wait: every pod Ready after {:.0}s",
            install.as_secs_f64()
        );
        Ok(Kind {
            install,
            helm_output,
            trace: std::sync::Mutex::new(None),
            artifacts,
            third_party,
            cluster,
            docker,
        })
    }

    /// A port-forward to `svc/<release>-<service>` in `namespace`.
    pub fn forward_in(&self, namespace: &str, service: &str, port: u16) -> Result<PortForward> {
        block_on(
            self.cluster
                .port_forward(namespace, &format!("svc/{RELEASE}-{service}"), port),
        )
    }

    pub fn forward(&self, service: &str, port: u16) -> Result<PortForward> {
        self.forward_in(NAMESPACE, service, port)
    }

    /// The pods of `namespace` as JSON.
    pub fn pods_in(&self, namespace: &str) -> Result<Vec<Value>> {
        pods_json(&self.cluster, namespace)
    }

    pub fn pods(&self) -> Result<Vec<Value>> {
        self.pods_in(NAMESPACE)
    }

    /// The name of the one running pod of a component in `namespace`.
    pub fn pod_of_in(&self, namespace: &str, component: &str) -> Result<String> {
        let out = self.cluster.kubectl_ok([
            "get",
            "pods",
            "-n",
            namespace,
            "-l",
            &format!("app.kubernetes.io/component={component}"),
            "--field-selector=status.phase=Running",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])?;
        let names: Vec<&str> = out.split_whitespace().collect();
        match names.as_slice() {
            [one] => Ok(one.to_string()),
            other => bail!("{component}: expected one running pod in {namespace}, found {other:?}"),
        }
    }

    pub fn pod_of(&self, component: &str) -> Result<String> {
        self.pod_of_in(NAMESPACE, component)
    }

    /// `scripts/cluster/install.sh` (what the README's install does, with progress lines) into
    /// `namespace` with `args` (values files, `--set`s).
    pub fn install_script(&self, namespace: &str, args: &[&str]) -> Result<Duration> {
        let mut cmd = self
            .cluster
            .script_command(&repo_root().join("scripts/cluster/install.sh"))?;
        cmd.env("NAMESPACE", namespace)
            .env("RELEASE", RELEASE)
            .env("TIMEOUT", "10m")
            .args(args);
        let started = Instant::now();
        let (status, out) = journey_tests::process::run_showing(
            &format!("install-{namespace}"),
            cmd,
            &self.cluster.logs_path(),
            COMMAND_TIMEOUT,
        )?;
        anyhow::ensure!(
            status.success(),
            "scripts/cluster/install.sh into {namespace} failed:\n{out}"
        );
        Ok(started.elapsed())
    }

    /// `helm uninstall <release> -n <namespace> --wait`.
    pub fn uninstall(&self, namespace: &str) -> Result<()> {
        journey_tests::process::run_ok(
            "helm uninstall",
            self.cluster.helm_command()?.args([
                "uninstall",
                RELEASE,
                "-n",
                namespace,
                "--wait",
                "--timeout",
                "3m",
            ]),
        )?;
        Ok(())
    }
}

/// The pods of `namespace` as JSON.
pub fn pods_json(kube: &impl Kube, namespace: &str) -> Result<Vec<Value>> {
    let out = kube.kubectl_ok(["get", "pods", "-n", namespace, "-o", "json"])?;
    let v: Value = serde_json::from_str(&out)?;
    Ok(v["items"].as_array().cloned().unwrap_or_default())
}

pub fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

pub fn component(pod: &Value) -> &str {
    pod["metadata"]["labels"]["app.kubernetes.io/component"]
        .as_str()
        .unwrap_or("")
}

/// The chart's third-party images (Kafka, Zipkin, the Collector), as its defaults name them.
fn third_party_images() -> Result<Vec<String>> {
    let docs = journey_tests::chart::render_ci("default")?;
    let mut out = Vec::new();
    for (_, _, spec) in journey_tests::chart::pods(&docs) {
        for c in journey_tests::chart::containers(spec) {
            let image = journey_tests::chart::s(&c["image"]).to_string();
            if !image.starts_with("journey/") && !out.contains(&image) {
                out.push(image);
            }
        }
    }
    Ok(out)
}

/// `kubectl get pods,events` of `namespace`, for a failure message.
pub fn pods_and_events(kube: &impl Kube, namespace: &str) -> String {
    let pods = kube
        .kubectl_ok(["get", "pods", "-n", namespace, "-o", "wide"])
        .unwrap_or_else(|e| format!("{e:#}"));
    let events = kube
        .kubectl_ok(["get", "events", "-n", namespace, "--sort-by=.lastTimestamp"])
        .unwrap_or_else(|e| format!("{e:#}"));
    format!("pods in {namespace}:\n{pods}\nevents:\n{events}")
}

/// The last log lines of the producer, relay and sink pods of `namespace` (and of their
/// previous containers, if any restarted), for a failure message.
pub fn service_logs(kube: &impl Kube, namespace: &str) -> String {
    let mut out = String::new();
    for component in ["producer", "relay", "sink"] {
        for previous in [false, true] {
            let mut args = vec![
                "logs".to_string(),
                "-n".into(),
                namespace.into(),
                "-l".into(),
                format!("app.kubernetes.io/component={component}"),
                "-c".into(),
                component.into(),
                "--tail=25".into(),
                "--prefix".into(),
            ];
            if previous {
                args.push("--previous".into());
            }
            match kube.kubectl_ok(&args) {
                Ok(text) if !text.trim().is_empty() => out.push_str(&format!(
                    "--- {component}{}:\n{text}\n",
                    if previous {
                        " (previous container)"
                    } else {
                        ""
                    }
                )),
                _ => {}
            }
        }
    }
    out
}

/// Every 15 s while it lives, a line naming the pods of a namespace that are not Ready yet:
/// the progress of a wait that prints nothing itself (`helm install --wait`).
#[derive(Debug)]
pub struct PodProgress {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PodProgress {
    pub fn start(cluster: &KindCluster, namespace: &str) -> PodProgress {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, namespace) = (stop.clone(), namespace.to_string());
        let mut kubectl = cluster.kubectl_command();
        kubectl.args(["get", "pods", "-n", &namespace, "-o", "json"]);
        let program = kubectl.get_program().to_owned();
        let args: Vec<_> = kubectl.get_args().map(|a| a.to_owned()).collect();
        let started = Instant::now();
        let thread = std::thread::spawn(move || {
            let mut next = Duration::from_secs(15);
            while !flag.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(250));
                if started.elapsed() < next {
                    continue;
                }
                next += Duration::from_secs(15);
                let out = std::process::Command::new(&program).args(&args).output();
                let waiting = out
                    .ok()
                    .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
                    .map(|v| {
                        v["items"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter(|p| !ready(p) && p["status"]["phase"] != "Succeeded")
                            .map(|p| {
                                format!(
                                    "{}({})",
                                    p["metadata"]["name"].as_str().unwrap_or("?"),
                                    p["status"]["phase"].as_str().unwrap_or("?")
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default();
                say!(
                    "kind: {:.0}s: not Ready yet in {namespace}: {}",
                    started.elapsed().as_secs_f64(),
                    if waiting.is_empty() {
                        "none (Helm finishing)"
                    } else {
                        &waiting
                    }
                );
            }
        });
        PodProgress {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for PodProgress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            // A panicked progress thread has only lost progress lines.
            let _ = t.join();
        }
    }
}

/// Runs `f` until it returns `Ok(true)` or `timeout` passes (progress lines from
/// [`journey_tests::process::wait_until`]).
pub fn eventually(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<bool>,
) -> Result<()> {
    block_on(journey_tests::process::wait_until(what, timeout, || {
        let r = f();
        async move { r }
    }))
    .with_context(|| format!("waiting for: {what}"))
}

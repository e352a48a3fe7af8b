//! The install the README's commands made: every pod Ready under Pod Security `restricted`,
//! the init containers' progress, Kafka's quorum, `helm test`; and the uninstall.

use std::time::Duration;

use anyhow::{Result, ensure};
use journey_tests::kube::Kube;
use journey_tests::process::run_ok;
use journey_tests::repo_root;
use journey_tests::say;

use crate::{Kind, NAMESPACE, README_COMMANDS, RELEASE, component, eventually, ready};

pub fn the_readme_shows_the_commands_this_cluster_was_made_and_installed_with(
    f: &Kind,
) -> Result<()> {
    let readme = std::fs::read_to_string(repo_root().join("README.md"))?;
    for line in README_COMMANDS {
        ensure!(
            readme.lines().any(|l| l.trim_start().starts_with(line)),
            "README.md does not show the command the kind tests run: {line}"
        );
    }
    // The cluster is the one the config names, and it runs the node image built here.
    let nodes = f.cluster.kubectl_ok([
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[*].metadata.name} {.items[*].status.nodeInfo.kubeletVersion}",
    ])?;
    ensure!(
        nodes.starts_with(&format!("{} v", f.cluster.node())),
        "nodes: {nodes}"
    );
    let context = f
        .cluster
        .kubectl_ok(["config", "current-context"])?
        .trim()
        .to_string();
    ensure!(
        context == format!("kind-{}", f.cluster.name()),
        "kind set the context {context}, not kind-{} (skaffold's kind profile keys on it)",
        f.cluster.name()
    );
    say!(
        "kind: cluster created in {:.0}s, the chart installed in {:.0}s",
        f.cluster.created_in().as_secs_f64(),
        f.install.as_secs_f64()
    );
    Ok(())
}

pub fn helm_install_wait_brings_every_pod_to_ready_in_a_restricted_namespace(
    f: &Kind,
) -> Result<()> {
    ensure!(
        !f.helm_output.contains("would violate PodSecurity"),
        "Pod Security warnings:\n{}",
        f.helm_output
    );
    let labels = f.cluster.kubectl_ok([
        "get",
        "namespace",
        NAMESPACE,
        "-o",
        "jsonpath={.metadata.labels.pod-security\\.kubernetes\\.io/enforce}",
    ])?;
    ensure!(
        labels.trim() == "restricted",
        "the namespace enforces {labels:?}"
    );
    let pods = f.pods()?;
    let mut components: Vec<String> = Vec::new();
    for p in &pods {
        let name = p["metadata"]["name"].as_str().unwrap_or("?");
        ensure!(
            p["status"]["phase"] == "Running",
            "{name} is {}",
            p["status"]["phase"]
        );
        ensure!(
            ready(p),
            "{name} is not Ready: {}",
            p["status"]["conditions"]
        );
        for cs in p["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
        {
            ensure!(
                cs["ready"] == true,
                "{name}/{} is not ready",
                cs["name"].as_str().unwrap_or("?")
            );
        }
        components.push(component(p).to_string());
    }
    components.sort();
    ensure!(
        components == ["collector", "kafka", "producer", "relay", "sink", "zipkin"],
        "pods of {components:?}"
    );
    Ok(())
}

pub fn the_init_containers_log_their_progress_and_seed_the_topics(f: &Kind) -> Result<()> {
    let mut all = String::new();
    for component in ["producer", "relay", "sink"] {
        let pod = f.pod_of(component)?;
        let log = f
            .cluster
            .kubectl_ok(["logs", "-n", NAMESPACE, &pod, "-c", "journeyctl-init"])?;
        ensure!(
            log.contains("waiting up to") && log.contains("ready after"),
            "{pod}: journeyctl init printed no progress:\n{log}"
        );
        for topic in ["messages", "messages.processed", "messages.dlq"] {
            ensure!(
                log.contains(topic),
                "{pod}: nothing about topic {topic}:\n{log}"
            );
        }
        all.push_str(&log);
    }
    // Whichever seeded first (usually the Kafka pod's sidecar) created them.
    let kafka = f.pod_of("kafka")?;
    let sidecar = f
        .cluster
        .kubectl_ok(["logs", "-n", NAMESPACE, &kafka, "-c", "topics"])?;
    ensure!(
        sidecar.contains("seeding again every"),
        "the Kafka pod's topics sidecar does not keep seeding:\n{sidecar}"
    );
    all.push_str(&sidecar);
    for topic in ["messages", "messages.processed", "messages.dlq"] {
        ensure!(
            all.contains(&format!("+ {topic}: created")),
            "no journeyctl reports creating {topic}"
        );
    }
    Ok(())
}

/// `kafka-metadata-quorum describe --status` (its class: the image has no bin/ scripts) in the
/// `kafka` container of `pod`.
pub fn quorum_status(f: &Kind, namespace: &str, pod: &str) -> Result<String> {
    f.cluster.kubectl_ok([
        "exec",
        "-n",
        namespace,
        pod,
        "-c",
        "kafka",
        "--",
        "java",
        "-Xmx128m",
        "-cp",
        "/opt/kafka/libs/*",
        "org.apache.kafka.tools.MetadataQuorumCommand",
        "--bootstrap-server",
        "localhost:9092",
        "describe",
        "--status",
    ])
}

pub fn kafka_reports_its_kraft_quorum(f: &Kind) -> Result<()> {
    let out = quorum_status(f, NAMESPACE, &f.pod_of("kafka")?)?;
    for field in ["LeaderId:", "CurrentVoters:", "HighWatermark:"] {
        ensure!(
            out.contains(field),
            "no {field} in the quorum status:\n{out}"
        );
    }
    let leader = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("LeaderId:"))
        .map(str::trim)
        .unwrap_or("");
    ensure!(leader == "0", "the quorum has leader {leader:?}:\n{out}");
    Ok(())
}

/// `helm test <release> -n <namespace> --logs` passes and shows the whole journey.
pub fn helm_test(f: &Kind, namespace: &str) -> Result<()> {
    let text = run_ok(
        "helm test",
        f.cluster.helm_command()?.args([
            "test",
            RELEASE,
            "-n",
            namespace,
            "--logs",
            "--timeout",
            "5m",
        ]),
    )?;
    ensure!(text.contains("PASS"), "helm test printed no PASS:\n{text}");
    for svc in ["producer", "relay", "sink"] {
        ensure!(
            text.contains(svc),
            "helm test's journey lacks {svc}:\n{text}"
        );
    }
    Ok(())
}

pub fn helm_test_passes_journeyctl_verify_through_cluster_dns(f: &Kind) -> Result<()> {
    helm_test(f, NAMESPACE)
}

pub fn helm_uninstall_leaves_no_object_and_no_container_of_the_release(f: &Kind) -> Result<()> {
    f.uninstall(NAMESPACE)?;
    // Pods go after their workloads (garbage collection, then each pod's grace period).
    let mut left = String::new();
    let gone = eventually(
        "kind: no object of the release left",
        Duration::from_secs(150),
        || {
            let text = f.cluster.release_objects(
                "all,configmaps,secrets,serviceaccounts,roles,rolebindings,pvc,pdb,networkpolicies",
                NAMESPACE,
                RELEASE,
            )?;
            left = text.clone();
            Ok(text.trim().is_empty())
        },
    );
    ensure!(gone.is_ok(), "left in the namespace:\n{left}");
    let cluster_wide = f.cluster.kubectl_ok([
        "get",
        "clusterroles,clusterrolebindings",
        "-l",
        &format!("app.kubernetes.io/instance={RELEASE}"),
        "-o",
        "name",
    ])?;
    ensure!(
        cluster_wide.trim().is_empty(),
        "left cluster-wide:\n{cluster_wide}"
    );
    eventually(
        "kind: no container of the release in the node's containerd",
        Duration::from_secs(120),
        || Ok(f.cluster.containers_in(NAMESPACE)?.is_empty()),
    )
}

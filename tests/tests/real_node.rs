//! The chart on a real node: what a user of kind or minikube does, with real containers.
//!
//! Setup: the six images built (`scripts/images.sh local` on the private dockerd) and saved;
//! a control plane plus one real node (containerd, kubelet, kube-proxy, CoreDNS; see
//! `journey_tests::node`); the images imported into the node's containerd; then
//! `helm install --wait` with `ci/default-values.yaml` into a namespace that enforces Pod
//! Security `restricted`, timed from the command to every pod Ready.
//!
//! The tests run in order: each builds on the installed release, the faults come late, the
//! uninstall last.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use journey_tests::browser::visible_text;
use journey_tests::chart::ci_values;
use journey_tests::controlplane::{ControlPlane, PortForward};
use journey_tests::docker::Docker;
use journey_tests::node::Cluster;
use journey_tests::process::{run_ok, run_to_end, wait_until};
use journey_tests::runner::{self, Fixture, block_on};
use journey_tests::services::{Answer, JOURNEY_SPANS, bin, has_spans, post, post_within};
use journey_tests::zipkin::ZipkinApi;
use journey_tests::{repo_root, say, tests};
use serde_json::Value;

fn main() -> std::process::ExitCode {
    runner::main_in_order(
        || block_on(RealNode::start()),
        tests![
            helm_install_wait_brings_every_pod_to_ready_in_a_restricted_namespace,
            the_init_containers_log_their_progress_and_seed_the_topics,
            kafka_reports_its_kraft_quorum,
            helm_test_passes_journeyctl_verify_through_cluster_dns,
            a_post_through_port_forward_is_a_complete_journey_that_journeyctl_shows,
            the_zipkin_ui_in_chromium_shows_the_trace_and_the_dependency_graph,
            deleting_the_relay_pod_replaces_it_and_messages_before_and_after_reach_the_sink,
            deleting_the_kafka_pod_drops_readiness_then_the_stack_recovers,
            helm_uninstall_leaves_no_object_and_no_container_of_the_release,
            the_three_broker_values_form_a_three_voter_quorum_that_passes_helm_test,
        ],
    )
}

const RELEASE: &str = "journey";
const NAMESPACE: &str = "journey";
/// `helm install --wait`'s own bound (the README's user command uses the same).
const INSTALL_TIMEOUT: &str = "10m";

struct RealNode {
    install: Duration,
    helm_output: String,
    /// The trace of the POST through the port-forward, for the browser test.
    trace: Mutex<Option<String>>,
    artifacts: PathBuf,
    cluster: Cluster,
}

impl Fixture for RealNode {
    fn logs_dirs(&self) -> Vec<PathBuf> {
        self.cluster.logs_dirs()
    }
}

impl RealNode {
    async fn start() -> Result<RealNode> {
        let artifacts = repo_root().join("target/journey-artifacts");
        std::fs::create_dir_all(&artifacts)?;
        let archive_dir = tempfile::Builder::new()
            .prefix("journey-images-")
            .tempdir()?;
        let archive = archive_dir.path().join("images.tar");
        save_images(&archive).await?;
        let cluster = Cluster::start().await?;
        cluster.node.import_images(&archive)?;
        drop(archive_dir);

        say!(
            "real node: scripts/cluster/install.sh (Kafka, Collector, Zipkin, producer, relay, sink)"
        );
        let mut cmd = cluster
            .cp
            .script_command(&repo_root().join("scripts/cluster/install.sh"))?;
        cmd.env("NAMESPACE", NAMESPACE)
            .env("RELEASE", RELEASE)
            .env("TIMEOUT", INSTALL_TIMEOUT)
            .arg("-f")
            .arg(ci_values("default"));
        let started = Instant::now();
        let (status, helm_output) = run_to_end(
            "install",
            cmd,
            &cluster.cp.logs_dir(),
            Duration::from_secs(660),
        )?;
        let install = started.elapsed();
        ensure!(
            status.success(),
            "scripts/cluster/install.sh failed after {:.0}s:\n{helm_output}",
            install.as_secs_f64()
        );
        say!(
            "real node: helm install --wait: every pod Ready after {:.0}s",
            install.as_secs_f64()
        );
        Ok(RealNode {
            install,
            helm_output,
            trace: Mutex::new(None),
            artifacts,
            cluster,
        })
    }

    fn cp(&self) -> &ControlPlane {
        &self.cluster.cp
    }

    fn forward(&self, service: &str, port: u16) -> Result<PortForward> {
        block_on(
            self.cp()
                .port_forward(NAMESPACE, &format!("svc/{RELEASE}-{service}"), port),
        )
    }

    /// The pods of the release as JSON.
    fn pods(&self) -> Result<Vec<Value>> {
        let out = self
            .cp()
            .kubectl_ok(["get", "pods", "-n", NAMESPACE, "-o", "json"])?;
        let v: Value = serde_json::from_str(&out)?;
        Ok(v["items"].as_array().cloned().unwrap_or_default())
    }

    /// The name of the one pod of a component.
    fn pod_of(&self, component: &str) -> Result<String> {
        let out = self.cp().kubectl_ok([
            "get",
            "pods",
            "-n",
            NAMESPACE,
            "-l",
            &format!("app.kubernetes.io/component={component}"),
            "--field-selector=status.phase=Running",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])?;
        let names: Vec<&str> = out.split_whitespace().collect();
        match names.as_slice() {
            [one] => Ok(one.to_string()),
            other => bail!("{component}: expected one running pod, found {other:?}"),
        }
    }
}

/// Builds the six images and the pause image on the private dockerd and saves them in one
/// archive for containerd.
async fn save_images(archive: &Path) -> Result<()> {
    let docker = Docker::start().await?;
    let api = docker.api();
    api.build_images("local")?;
    let mut images: Vec<String> = Vec::new();
    for (_, _, spec) in journey_tests::chart::pods(&journey_tests::chart::render_ci("default")?) {
        for c in journey_tests::chart::containers(spec) {
            let image = journey_tests::chart::s(&c["image"]).to_string();
            if !images.contains(&image) {
                images.push(image);
            }
        }
    }
    let tools = journey_tests::tools::Tools::load()?;
    images.push(tools.get("PAUSE_IMAGE", "node")?);
    let started = Instant::now();
    let mut args = vec!["save", "--output"];
    let path = archive.display().to_string();
    args.push(&path);
    args.extend(images.iter().map(String::as_str));
    api.run(&args)?;
    say!(
        "real node: {} images saved in {:.0}s ({:.0} MB)",
        images.len(),
        started.elapsed().as_secs_f64(),
        std::fs::metadata(archive)?.len() as f64 / 1e6
    );
    Ok(())
}

fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

// ---------------------------------------------------------------------------------------------

fn helm_install_wait_brings_every_pod_to_ready_in_a_restricted_namespace(
    f: &RealNode,
) -> Result<()> {
    ensure!(
        !f.helm_output.contains("would violate PodSecurity"),
        "Pod Security warnings:\n{}",
        f.helm_output
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
        components.push(
            p["metadata"]["labels"]["app.kubernetes.io/component"]
                .as_str()
                .unwrap_or("?")
                .to_string(),
        );
    }
    components.sort();
    ensure!(
        components == ["collector", "kafka", "producer", "relay", "sink", "zipkin"],
        "pods of {components:?}"
    );
    say!(
        "real node: install → all Ready in {:.0}s",
        f.install.as_secs_f64()
    );
    Ok(())
}

fn the_init_containers_log_their_progress_and_seed_the_topics(f: &RealNode) -> Result<()> {
    for component in ["producer", "relay", "sink"] {
        let pod = f.pod_of(component)?;
        let log = f
            .cp()
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
    }
    // Whichever seeded first (usually the Kafka pod's sidecar) created them.
    let kafka = f.pod_of("kafka")?;
    let sidecar = f
        .cp()
        .kubectl_ok(["logs", "-n", NAMESPACE, &kafka, "-c", "topics"])?;
    ensure!(
        sidecar.contains("seeding again every"),
        "the Kafka pod's topics sidecar does not keep seeding:\n{sidecar}"
    );
    let mut all = sidecar;
    for component in ["producer", "relay", "sink"] {
        let pod = f.pod_of(component)?;
        all.push_str(&f.cp().kubectl_ok([
            "logs",
            "-n",
            NAMESPACE,
            &pod,
            "-c",
            "journeyctl-init",
        ])?);
    }
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
fn quorum_status(cp: &ControlPlane, namespace: &str, pod: &str) -> Result<String> {
    cp.kubectl_ok([
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

fn kafka_reports_its_kraft_quorum(f: &RealNode) -> Result<()> {
    let out = quorum_status(f.cp(), NAMESPACE, &f.pod_of("kafka")?)?;
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

fn helm_test_passes_journeyctl_verify_through_cluster_dns(f: &RealNode) -> Result<()> {
    let text = run_ok(
        "helm test",
        f.cp().helm_command()?.args([
            "test",
            RELEASE,
            "-n",
            NAMESPACE,
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

async fn post_message(producer: &str, key: &str) -> Result<Answer> {
    post(
        &format!("{producer}/messages"),
        Some("application/json"),
        serde_json::to_vec(
            &serde_json::json!({"key": key, "payload": {"from": "real-node-test"}}),
        )?,
        &[],
    )
    .await
}

impl RealNode {
    /// Runs `scripts/cluster/<script>` (what the kind workflow runs) against this cluster.
    fn script(&self, script: &str, args: &[&str]) -> Result<String> {
        let tools = journey_tests::tools::Tools::load()?;
        let mut cmd = self
            .cp()
            .script_command(&repo_root().join("scripts/cluster").join(script))?;
        cmd.args(args)
            .env("NAMESPACE", NAMESPACE)
            .env("RELEASE", RELEASE)
            .env("ARTIFACTS", &self.artifacts)
            .env("JOURNEYCTL", bin("journeyctl")?)
            .env("CHROMIUM", tools.path("CHROMIUM", "browser")?);
        let (status, out) = run_to_end(
            script.trim_end_matches(".sh"),
            cmd,
            &self.cp().logs_dir(),
            Duration::from_secs(300),
        )?;
        ensure!(
            status.success(),
            "scripts/cluster/{script} failed ({status}):\n{out}"
        );
        Ok(out)
    }
}

fn a_post_through_port_forward_is_a_complete_journey_that_journeyctl_shows(
    f: &RealNode,
) -> Result<()> {
    let out = f.script("journey.sh", &[])?;
    let journey = std::fs::read_to_string(f.artifacts.join("journey.txt"))?;
    ensure!(
        journey.contains("services: producer → relay → sink"),
        "journeyctl journey shows:\n{journey}\n(script output:\n{out})"
    );
    for span in [
        "producer SERVER post /messages",
        "relay CONSUMER process messages",
        "sink CONSUMER process messages.processed",
    ] {
        ensure!(
            journey.contains(span),
            "no {span:?} in the journey:\n{journey}"
        );
    }
    let trace = std::fs::read_to_string(f.artifacts.join("trace-id"))?
        .trim()
        .to_string();
    say!("real node: journeyctl journey {trace}:\n{journey}");
    *f.trace.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = Some(trace);
    Ok(())
}

fn the_zipkin_ui_in_chromium_shows_the_trace_and_the_dependency_graph(f: &RealNode) -> Result<()> {
    let trace = f
        .trace
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone()
        .context("no trace from the port-forward test")?;
    f.script("screenshot.sh", &[&trace])?;
    let text = visible_text(&std::fs::read_to_string(
        f.artifacts.join("zipkin-trace.html"),
    )?);
    for needle in [
        "producer",
        "relay",
        "sink",
        "post /messages",
        "send messages",
        "process messages",
        "send messages.processed",
        "process messages.processed",
        &trace,
    ] {
        ensure!(
            text.to_lowercase().contains(needle),
            "the Zipkin UI's trace page does not show {needle:?}: {}",
            &text[..text.len().min(2000)]
        );
    }
    // Zipkin draws the dependency graph on a canvas: the page must draw one (not ask for a time
    // range), and the API it reads must hold the edges.
    let dom = std::fs::read_to_string(f.artifacts.join("zipkin-dependencies.html"))?;
    let text = visible_text(&dom);
    ensure!(
        dom.contains("<canvas") && !text.contains("Please select the start and end time"),
        "the dependency page draws no graph: {}",
        &text[..text.len().min(2000)]
    );
    let zipkin = f.forward("zipkin", 9411)?;
    let links = block_on(ZipkinApi::new(zipkin.url()).dependencies(Duration::from_secs(3600)))?;
    for (parent, child) in [
        ("producer", "kafka"),
        ("kafka", "relay"),
        ("relay", "kafka"),
        ("kafka", "sink"),
    ] {
        ensure!(
            links.iter().any(|l| l.parent == parent && l.child == child),
            "no {parent} → {child} edge in {links:?}"
        );
    }
    if std::env::var_os("JOURNEY_UPDATE_DOCS").is_some() {
        let docs = repo_root().join("docs");
        std::fs::create_dir_all(&docs)?;
        for png in ["zipkin-trace.png", "zipkin-dependencies.png"] {
            std::fs::copy(f.artifacts.join(png), docs.join(png))?;
        }
        say!("real node: screenshots copied to docs/");
    }
    Ok(())
}

/// Waits until the trace of `trace` holds the sink's process span.
async fn wait_delivered(zipkin: &ZipkinApi, trace: &str) -> Result<()> {
    zipkin
        .wait_for_trace(trace, Duration::from_secs(120), |s| {
            has_spans(s, &JOURNEY_SPANS)
        })
        .await
        .map(|_| ())
}

fn deleting_the_relay_pod_replaces_it_and_messages_before_and_after_reach_the_sink(
    f: &RealNode,
) -> Result<()> {
    let producer = f.forward("producer", 8080)?;
    let zipkin = f.forward("zipkin", 9411)?;
    let api = ZipkinApi::new(zipkin.url());
    let old = f.pod_of("relay")?;
    block_on(async {
        let before = post_message(&producer.url(), "before-relay-delete")
            .await?
            .trace_id()?;
        f.cp()
            .kubectl_ok(["delete", "pod", "-n", NAMESPACE, &old, "--wait=false"])?;
        let after = post_message(&producer.url(), "after-relay-delete")
            .await?
            .trace_id()?;
        wait_until(
            "real node: a new relay pod Ready",
            Duration::from_secs(180),
            || async {
                let pods = f.pods()?;
                Ok(pods.iter().any(|p| {
                    p["metadata"]["labels"]["app.kubernetes.io/component"] == "relay"
                        && p["metadata"]["name"] != old.as_str()
                        && ready(p)
                }))
            },
        )
        .await?;
        wait_delivered(&api, &before).await?;
        wait_delivered(&api, &after).await
    })
}

fn deleting_the_kafka_pod_drops_readiness_then_the_stack_recovers(f: &RealNode) -> Result<()> {
    let producer = f.forward("producer", 8080)?;
    let zipkin = f.forward("zipkin", 9411)?;
    let kafka = f.pod_of("kafka")?;
    let uid = f.cp().kubectl_ok([
        "get",
        "pod",
        "-n",
        NAMESPACE,
        &kafka,
        "-o",
        "jsonpath={.metadata.uid}",
    ])?;
    f.cp()
        .kubectl_ok(["delete", "pod", "-n", NAMESPACE, &kafka, "--wait=false"])?;
    block_on(async {
        // A POST right away is answered within the producer's message timeout (30 s in the
        // chart): 503 when Kafka did not come back in time, 202 when it did (the message was
        // kept and sent) — never a hang.
        // Meanwhile the producer's readiness (a Kafka metadata request) drops.
        let started = Instant::now();
        let messages_url = format!("{}/messages", producer.url());
        // The chart's message timeout is 30 s: the answer may take that long (plus the
        // producer's own margin), not longer.
        let (answer, unready) = tokio::join!(
            post_within(
                &messages_url,
                Some("application/json"),
                br#"{"key":"during-kafka-outage","payload":{"from":"real-node-test"}}"#.to_vec(),
                &[],
                Duration::from_secs(45),
            ),
            wait_until(
                "real node: the producer pod turns unready",
                Duration::from_secs(120),
                || async {
                    let pods = f.pods()?;
                    Ok(pods.iter().any(|p| {
                        p["metadata"]["labels"]["app.kubernetes.io/component"] == "producer"
                            && !ready(p)
                    }))
                }
            )
        );
        let (answer, took) = (answer?, started.elapsed());
        unready?;
        ensure!(
            answer.status == 503 || answer.status == 202,
            "during the outage: {} {}",
            answer.status,
            answer.body
        );
        ensure!(took < Duration::from_secs(40), "the answer took {took:?}");
        say!(
            "real node: a POST during the Kafka outage: {} after {took:.1?}",
            answer.status
        );
        wait_until(
            "real node: a new Kafka pod and every pod Ready",
            Duration::from_secs(300),
            || async {
                let pods = f.pods()?;
                let new_kafka = pods.iter().any(|p| {
                    p["metadata"]["labels"]["app.kubernetes.io/component"] == "kafka"
                        && p["metadata"]["uid"] != uid.as_str()
                        && ready(p)
                });
                Ok(new_kafka && pods.iter().all(ready))
            },
        )
        .await?;
        // The whole journey works again: the Kafka pod's sidecar seeded the topics again, and
        // a producer or consumer whose client stayed wedged (librdkafka ignores the recreated
        // topics' leader epochs) was restarted by its liveness probe; a POST meanwhile may
        // find the producer's container restarting.
        let api = ZipkinApi::new(zipkin.url());
        let back = Instant::now();
        let deadline = back + Duration::from_secs(180);
        loop {
            // Each answer within the message timeout, as during the outage.
            let answer = post_within(
                &messages_url,
                Some("application/json"),
                br#"{"key":"after-kafka-restart","payload":{"from":"real-node-test"}}"#.to_vec(),
                &[],
                Duration::from_secs(45),
            )
            .await;
            let answer = match answer {
                Ok(answer) => answer,
                Err(e) if Instant::now() < deadline => {
                    say!(
                        "real node: a POST {:.0?} after Kafka was back: {e:#}",
                        back.elapsed()
                    );
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            say!(
                "real node: a POST {:.0?} after Kafka was back: {}",
                back.elapsed(),
                answer.status
            );
            if answer.status == 202 {
                let trace = answer.trace_id()?;
                wait_delivered(&api, &trace).await?;
                say!(
                    "real node: the whole journey works again {:.0?} after Kafka was back",
                    back.elapsed()
                );
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "after Kafka came back the producer still answers {} {}",
                    answer.status,
                    answer.body
                );
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    })
}

fn helm_uninstall_leaves_no_object_and_no_container_of_the_release(f: &RealNode) -> Result<()> {
    let out = f
        .cp()
        .helm_command()?
        .args([
            "uninstall",
            RELEASE,
            "-n",
            NAMESPACE,
            "--wait",
            "--timeout",
            "3m",
        ])
        .output()?;
    ensure!(
        out.status.success(),
        "helm uninstall failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Pods go after their workloads (garbage collection, then each pod's grace period).
    let mut left = String::new();
    let gone = block_on(wait_until(
        "real node: no object of the release left",
        Duration::from_secs(150),
        || {
            let out = f.cp().release_objects(
                "all,configmaps,secrets,serviceaccounts,roles,rolebindings,pvc,pdb,networkpolicies",
                NAMESPACE,
                RELEASE,
            );
            if let Ok(text) = &out {
                left = text.clone();
            }
            async move { Ok(out?.trim().is_empty()) }
        },
    ));
    ensure!(gone.is_ok(), "left in the namespace:\n{left}");
    let cluster_wide = f.cp().kubectl_ok([
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
    block_on(wait_until(
        "real node: no container of the release in containerd",
        Duration::from_secs(120),
        || async { Ok(f.cluster.node.containers_in(NAMESPACE)?.is_empty()) },
    ))
}

fn the_three_broker_values_form_a_three_voter_quorum_that_passes_helm_test(
    f: &RealNode,
) -> Result<()> {
    const NS: &str = "journey3";
    // The test node has no volume provisioner: Kafka's data on emptyDirs instead of PVCs.
    let mut cmd = f
        .cp()
        .script_command(&repo_root().join("scripts/cluster/install.sh"))?;
    cmd.env("NAMESPACE", NS)
        .env("RELEASE", RELEASE)
        .env("TIMEOUT", INSTALL_TIMEOUT)
        .arg("-f")
        .arg(ci_values("three-broker"))
        .args(["--set", "kafka.persistence.enabled=false"]);
    let started = Instant::now();
    let (status, out) = run_to_end(
        "install-three",
        cmd,
        &f.cp().logs_dir(),
        Duration::from_secs(660),
    )?;
    ensure!(status.success(), "three-broker install failed:\n{out}");
    say!(
        "real node: three brokers: every pod Ready after {:.0}s",
        started.elapsed().as_secs_f64()
    );
    let status = quorum_status(f.cp(), NS, "journey-kafka-1")?;
    let voters = status
        .lines()
        .find_map(|l| l.trim().strip_prefix("CurrentVoters:"))
        .unwrap_or("");
    let mut ids: Vec<u32> = voters
        .split("\"id\":")
        .skip(1)
        .filter_map(|rest| {
            rest.trim_start()
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect();
    ids.sort_unstable();
    ensure!(
        ids == [0, 1, 2],
        "the quorum's voters are {voters}:\n{status}"
    );
    run_ok(
        "helm test with three brokers",
        f.cp()
            .helm_command()?
            .args(["test", RELEASE, "-n", NS, "--logs", "--timeout", "5m"]),
    )?;
    run_ok(
        "helm uninstall",
        f.cp()
            .helm_command()?
            .args(["uninstall", RELEASE, "-n", NS, "--wait", "--timeout", "3m"]),
    )?;
    Ok(())
}

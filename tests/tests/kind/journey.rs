//! One message's journey as a user sees it (a POST through `kubectl port-forward`, journeyctl,
//! the Zipkin UI in Chromium), and the journey through pod deletions.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use journey_tests::browser::visible_text;
use journey_tests::kube::Kube;
use journey_tests::process::{run_to_end, wait_until};
use journey_tests::runner::block_on;
use journey_tests::services::{Answer, JOURNEY_SPANS, bin, has_spans, post, post_within};
use journey_tests::zipkin::ZipkinApi;
use journey_tests::{repo_root, say};

use crate::{Kind, NAMESPACE, RELEASE, component, eventually, ready};

impl Kind {
    /// Runs `scripts/cluster/<script>` (what the kind workflow runs) against this cluster.
    fn script(&self, script: &str, args: &[&str]) -> Result<String> {
        let tools = journey_tests::tools::Tools::load()?;
        let mut cmd = self
            .cluster
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
            &self.cluster.logs_path(),
            Duration::from_secs(300),
        )?;
        ensure!(
            status.success(),
            "scripts/cluster/{script} failed ({status}):\n{out}"
        );
        Ok(out)
    }
}

pub async fn post_message(producer: &str, key: &str) -> Result<Answer> {
    post(
        &format!("{producer}/messages"),
        Some("application/json"),
        serde_json::to_vec(&serde_json::json!({"key": key, "payload": {"from": "kind-test"}}))?,
        &[],
    )
    .await
}

/// Waits until the trace of `trace` holds the sink's process span.
pub async fn wait_delivered(zipkin: &ZipkinApi, trace: &str) -> Result<()> {
    zipkin
        .wait_for_trace(trace, Duration::from_secs(120), |s| {
            has_spans(s, &JOURNEY_SPANS)
        })
        .await
        .map(|_| ())
}

pub fn a_post_through_port_forward_is_a_complete_journey_that_journeyctl_shows(
    f: &Kind,
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
    say!("kind: journeyctl journey {trace}:\n{journey}");
    *f.trace.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = Some(trace);
    Ok(())
}

pub fn the_zipkin_ui_in_chromium_shows_the_trace_and_the_dependency_graph(f: &Kind) -> Result<()> {
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
    // The README's screenshots come from this cluster: JOURNEY_UPDATE_DOCS=1 copies them.
    if std::env::var_os("JOURNEY_UPDATE_DOCS").is_some() {
        let docs = repo_root().join("docs");
        std::fs::create_dir_all(&docs)?;
        for png in ["zipkin-trace.png", "zipkin-dependencies.png"] {
            std::fs::copy(f.artifacts.join(png), docs.join(png))?;
        }
        say!("kind: screenshots copied to docs/");
    }
    Ok(())
}

pub fn deleting_the_relay_pod_replaces_it_and_messages_before_and_after_reach_the_sink(
    f: &Kind,
) -> Result<()> {
    let producer = f.forward("producer", 8080)?;
    let zipkin = f.forward("zipkin", 9411)?;
    let api = ZipkinApi::new(zipkin.url());
    let old = f.pod_of("relay")?;
    let (before, after) = block_on(async {
        let before = post_message(&producer.url(), "before-relay-delete")
            .await?
            .trace_id()?;
        f.cluster
            .kubectl_ok(["delete", "pod", "-n", NAMESPACE, &old, "--wait=false"])?;
        let after = post_message(&producer.url(), "after-relay-delete")
            .await?
            .trace_id()?;
        anyhow::Ok((before, after))
    })?;
    eventually(
        "kind: a new relay pod Ready",
        Duration::from_secs(180),
        || {
            Ok(f.pods()?.iter().any(|p| {
                component(p) == "relay" && p["metadata"]["name"] != old.as_str() && ready(p)
            }))
        },
    )?;
    block_on(async {
        wait_delivered(&api, &before).await?;
        wait_delivered(&api, &after).await
    })
}

pub fn deleting_the_kafka_pod_drops_readiness_then_the_stack_recovers(f: &Kind) -> Result<()> {
    let producer = f.forward("producer", 8080)?;
    let zipkin = f.forward("zipkin", 9411)?;
    let kafka = f.pod_of("kafka")?;
    let uid = f.cluster.kubectl_ok([
        "get",
        "pod",
        "-n",
        NAMESPACE,
        &kafka,
        "-o",
        "jsonpath={.metadata.uid}",
    ])?;
    f.cluster
        .kubectl_ok(["delete", "pod", "-n", NAMESPACE, &kafka, "--wait=false"])?;
    block_on(async {
        // A POST right away is answered within the producer's message timeout (30 s in the
        // chart): 503 when Kafka did not come back in time, 202 when it did (the message was
        // kept and sent) — never a hang. Meanwhile the producer's readiness (a Kafka metadata
        // request) drops: asked directly, as the kubelet's probe asks (the probe itself may miss
        // a Kafka pod back within a few seconds).
        let started = Instant::now();
        let messages_url = format!("{}/messages", producer.url());
        let readyz = format!("{}/readyz", producer.url());
        let http = reqwest::Client::new();
        let (answer, unready) = tokio::join!(
            post_within(
                &messages_url,
                Some("application/json"),
                br#"{"key":"during-kafka-outage","payload":{"from":"kind-test"}}"#.to_vec(),
                &[],
                Duration::from_secs(45),
            ),
            wait_until(
                "kind: the producer's /readyz answers 503",
                Duration::from_secs(120),
                || async {
                    let status = http
                        .get(&readyz)
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await?
                        .status();
                    Ok(status == 503)
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
            "kind: a POST during the Kafka outage: {} after {took:.1?}",
            answer.status
        );
        wait_until(
            "kind: a new Kafka pod and every pod Ready",
            Duration::from_secs(300),
            || async {
                let pods = f.pods()?;
                let new_kafka = pods.iter().any(|p| {
                    component(p) == "kafka" && p["metadata"]["uid"] != uid.as_str() && ready(p)
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
            let answer = post_within(
                &messages_url,
                Some("application/json"),
                br#"{"key":"after-kafka-restart","payload":{"from":"kind-test"}}"#.to_vec(),
                &[],
                Duration::from_secs(45),
            )
            .await;
            let answer = match answer {
                Ok(answer) => answer,
                Err(e) if Instant::now() < deadline => {
                    say!(
                        "kind: a POST {:.0?} after Kafka was back: {e:#}",
                        back.elapsed()
                    );
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            say!(
                "kind: a POST {:.0?} after Kafka was back: {}",
                back.elapsed(),
                answer.status
            );
            if answer.status == 202 {
                wait_delivered(&api, &answer.trace_id()?).await?;
                say!(
                    "kind: the whole journey works again {:.0?} after Kafka was back",
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

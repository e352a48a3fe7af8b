//! Kafka on kind's default StorageClass (the local-path provisioner): one broker whose pod is
//! deleted under load, what `helm uninstall` leaves, and the three-broker values.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use journey_tests::kube::Kube;
use journey_tests::load::Load;
use journey_tests::runner::block_on;
use journey_tests::services::{JOURNEY_SPANS, has_spans};
use journey_tests::zipkin::ZipkinApi;
use journey_tests::{chart::ci_values, say};
use serde_json::Value;

use crate::install::{helm_test, quorum_status};
use crate::{Kind, RELEASE, component, eventually, pods_and_events, ready, service_logs};

/// The namespaces of the releases these tests make.
const PV_NAMESPACE: &str = "journey-pv";
const THREE_NAMESPACE: &str = "journey3";

/// The load while the Kafka pod is deleted: one POST after another, 50 ms apart.
const LOAD_EVERY: Duration = Duration::from_millis(50);
/// How long the load runs before the deletion.
const BEFORE_DELETE: Duration = Duration::from_secs(10);
/// How long it runs after every pod is Ready again.
const AFTER_RECOVERY: Duration = Duration::from_secs(10);

/// Restart counts of the containers of the producer, relay and sink pods.
fn restarts(f: &Kind, namespace: &str) -> Result<BTreeMap<String, i64>> {
    let mut out = BTreeMap::new();
    for p in f.pods_in(namespace)? {
        if !["producer", "relay", "sink"].contains(&component(&p)) {
            continue;
        }
        for cs in p["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
        {
            out.insert(
                format!(
                    "{}/{}",
                    p["metadata"]["name"].as_str().unwrap_or("?"),
                    cs["name"].as_str().unwrap_or("?")
                ),
                cs["restartCount"].as_i64().unwrap_or(-1),
            );
        }
    }
    Ok(out)
}

/// The PersistentVolumeClaims of `namespace` as JSON.
fn claims(f: &Kind, namespace: &str) -> Result<Vec<Value>> {
    let out = f
        .cluster
        .kubectl_ok(["get", "pvc", "-n", namespace, "-o", "json"])?;
    let v: Value = serde_json::from_str(&out)?;
    Ok(v["items"].as_array().cloned().unwrap_or_default())
}

pub fn kafka_on_a_local_path_volume_loses_no_acked_message_when_its_pod_is_deleted(
    f: &Kind,
) -> Result<()> {
    let took = f.install_script(PV_NAMESPACE, &["--set", "kafka.persistence.enabled=true"])?;
    say!(
        "kind: the release with Kafka on a volume: every pod Ready after {:.0}s",
        took.as_secs_f64()
    );
    // The claim is bound by kind's provisioner, under its default StorageClass.
    let pvcs = claims(f, PV_NAMESPACE)?;
    ensure!(pvcs.len() == 1, "claims in {PV_NAMESPACE}: {pvcs:?}");
    let pvc = &pvcs[0];
    ensure!(
        pvc["status"]["phase"] == "Bound" && pvc["spec"]["storageClassName"] == "standard",
        "Kafka's claim: {}",
        pvc["status"]
    );
    let volume = pvc["spec"]["volumeName"]
        .as_str()
        .context("no volume name")?
        .to_string();
    let path = f.cluster.kubectl_ok([
        "get",
        "pv",
        &volume,
        "-o",
        "jsonpath={.spec.hostPath.path}{.spec.local.path}",
    ])?;
    ensure!(
        path.starts_with("/var/local-path-provisioner/"),
        "the volume is at {path:?}, not under local-path's directory"
    );

    let before = restarts(f, PV_NAMESPACE)?;
    let kafka = f.pod_of_in(PV_NAMESPACE, "kafka")?;
    let uid = f.cluster.kubectl_ok([
        "get",
        "pod",
        "-n",
        PV_NAMESPACE,
        &kafka,
        "-o",
        "jsonpath={.metadata.uid}",
    ])?;
    let producer = f.forward_in(PV_NAMESPACE, "producer", 8080)?;
    let zipkin = f.forward_in(PV_NAMESPACE, "zipkin", 9411)?;
    let outcome = block_on(async {
        let load = Load::start(&producer.url(), "pv", LOAD_EVERY);
        tokio::time::sleep(BEFORE_DELETE).await;
        say!("kind: deleting {kafka} under load");
        f.cluster
            .kubectl_ok(["delete", "pod", "-n", PV_NAMESPACE, &kafka, "--wait=false"])?;
        let deleted = Instant::now();
        journey_tests::process::wait_until(
            "kind: a new Kafka pod on the same volume and every pod Ready",
            Duration::from_secs(300),
            || async {
                let pods = f.pods_in(PV_NAMESPACE)?;
                let new = pods.iter().any(|p| {
                    component(p) == "kafka" && p["metadata"]["uid"] != uid.as_str() && ready(p)
                });
                Ok(new && pods.iter().all(ready))
            },
        )
        .await?;
        say!(
            "kind: every pod Ready {:.0?} after the deletion",
            deleted.elapsed()
        );
        tokio::time::sleep(AFTER_RECOVERY).await;
        load.stop().await
    })?;
    ensure!(
        !outcome.acked.is_empty()
            && outcome
                .acked
                .iter()
                .any(|a| a.at > Instant::now() - AFTER_RECOVERY),
        "no message was acked after Kafka came back: {:?}",
        outcome.errors
    );

    // Every acked message made its whole journey (read back from Zipkin, 50 traces a request).
    let api = ZipkinApi::new(zipkin.url());
    let missing = std::cell::RefCell::new(
        outcome
            .acked
            .iter()
            .map(|a| a.trace_id.clone())
            .collect::<Vec<String>>(),
    );
    let all = missing.borrow().len();
    let done = block_on(journey_tests::process::wait_until(
        &format!("kind: the whole journey of all {all} acked messages in Zipkin"),
        Duration::from_secs(180),
        || async {
            let pending = missing.borrow().clone();
            let mut still = Vec::new();
            for chunk in pending.chunks(50) {
                let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                let traces = api.trace_many(&refs).await?;
                for id in chunk {
                    let complete = traces.iter().any(|t| {
                        t.first().is_some_and(|s| &s.trace_id == id) && has_spans(t, &JOURNEY_SPANS)
                    });
                    if !complete {
                        still.push(id.clone());
                    }
                }
            }
            let finished = still.is_empty();
            *missing.borrow_mut() = still;
            Ok(finished)
        },
    ));
    let missing = missing.into_inner();
    done.map_err(|e| {
        e.context(format!(
            "{} of {all} acked messages never reached the sink, e.g. {:?}\n{}\n{}",
            missing.len(),
            &missing[..missing.len().min(10)],
            pods_and_events(&f.cluster, PV_NAMESPACE),
            service_logs(&f.cluster, PV_NAMESPACE)
        ))
    })?;

    // The topics survived on the volume: the new broker's sidecar found them, created none.
    let kafka = f.pod_of_in(PV_NAMESPACE, "kafka")?;
    let sidecar = f
        .cluster
        .kubectl_ok(["logs", "-n", PV_NAMESPACE, &kafka, "-c", "topics"])?;
    ensure!(
        !sidecar.contains(": created"),
        "the new Kafka pod had to create topics again (its data did not survive):\n{sidecar}"
    );
    // No service needed its liveness probe to recover.
    let after = restarts(f, PV_NAMESPACE)?;
    ensure!(
        after == before,
        "containers restarted: before {before:?}, after {after:?}"
    );
    say!(
        "kind: {} acked under load ({}), all delivered; errors {:?}; no restarts",
        outcome.acked.len(),
        outcome.held_text(),
        outcome.errors
    );
    Ok(())
}

pub fn helm_uninstall_keeps_kafkas_volume_claims_until_they_are_deleted(f: &Kind) -> Result<()> {
    let claim = claims(f, PV_NAMESPACE)?
        .first()
        .and_then(|c| c["metadata"]["name"].as_str().map(str::to_string))
        .context("no claim to keep")?;
    let volume = f.cluster.kubectl_ok([
        "get",
        "pvc",
        "-n",
        PV_NAMESPACE,
        &claim,
        "-o",
        "jsonpath={.spec.volumeName}",
    ])?;
    f.uninstall(PV_NAMESPACE)?;
    // What Helm leaves: the StatefulSet's claims (Kubernetes keeps them; Helm did not make them).
    let left = claims(f, PV_NAMESPACE)?;
    ensure!(
        left.len() == 1 && left[0]["status"]["phase"] == "Bound",
        "after helm uninstall the claims are {left:?}"
    );
    // The README's way to remove them: by the release's labels; the provisioner then deletes
    // the volume (reclaim policy Delete) and its directory on the node.
    f.cluster.kubectl_ok([
        "delete",
        "pvc",
        "-n",
        PV_NAMESPACE,
        "-l",
        &format!("app.kubernetes.io/instance={RELEASE}"),
        "--wait=true",
        "--timeout=120s",
    ])?;
    eventually(
        "kind: the released volume deleted by local-path",
        Duration::from_secs(120),
        || {
            let out = f.cluster.kubectl(["get", "pv", &volume])?;
            Ok(!out.status.success())
        },
    )?;
    // Gone before the next release asks for the node's CPU.
    f.cluster.kubectl_ok([
        "delete",
        "namespace",
        PV_NAMESPACE,
        "--wait=true",
        "--timeout=180s",
    ])?;
    Ok(())
}

pub fn the_three_broker_values_form_a_three_voter_quorum_on_local_path_volumes(
    f: &Kind,
) -> Result<()> {
    let values = ci_values("three-broker");
    let took = f
        .install_script(THREE_NAMESPACE, &["-f", &values.display().to_string()])
        .map_err(|e| e.context(pods_and_events(&f.cluster, THREE_NAMESPACE)))?;
    say!(
        "kind: three brokers: every pod Ready after {:.0}s",
        took.as_secs_f64()
    );
    let bound = claims(f, THREE_NAMESPACE)?
        .iter()
        .filter(|c| c["status"]["phase"] == "Bound")
        .count();
    ensure!(bound == 3, "{bound} of Kafka's three claims are bound");
    let status = quorum_status(f, THREE_NAMESPACE, "journey-kafka-1")?;
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
    helm_test(f, THREE_NAMESPACE)?;
    f.uninstall(THREE_NAMESPACE)?;
    f.cluster.kubectl_ok([
        "delete",
        "pvc",
        "-n",
        THREE_NAMESPACE,
        "-l",
        &format!("app.kubernetes.io/instance={RELEASE}"),
        "--wait=true",
        "--timeout=120s",
    ])?;
    f.cluster
        .kubectl_ok(["delete", "namespace", THREE_NAMESPACE, "--wait=false"])?;
    Ok(())
}

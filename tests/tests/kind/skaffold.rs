//! `skaffold dev` as the README tells a kind user: in a copy of the work tree, with the kube
//! context kind made (`kind-journey`, which activates skaffold.yaml's `kind` profile: images
//! built by the local Docker daemon and `kind load`ed, never pushed), the chart installed, Zipkin
//! and the producer forwarded. An edit to the producer rebuilds and rolls the producer alone:
//! Kafka, the relay and the sink keep their pods (same UIDs, no restarts), and a message sent
//! before the edit and one after both make the whole journey. Ctrl-C removes the release.
//! Then the `local` profile: pushed to a local registry the node pulls from.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use journey_tests::kube::Kube;
use journey_tests::process::Managed;
use journey_tests::registry::Registry;
use journey_tests::runner::block_on;
use journey_tests::say;
use journey_tests::services::{JOURNEY_SPANS, TRACE_TIMEOUT, has_spans, post};
use journey_tests::tools::Tools;
use journey_tests::zipkin::ZipkinApi;

use crate::{Kind, NAMESPACE, RELEASE, component, eventually, ready};

/// How long a `skaffold dev` round may take (a cold release build included).
const SKAFFOLD_TIMEOUT: Duration = Duration::from_secs(900);

/// `skaffold <args>` in `dir`, as a kind user runs it: kind's kubeconfig, the tests' dockerd,
/// the pinned docker, kind, kubectl and Helm 3 (skaffold 2.16 asks `helm version --client`,
/// a flag Helm 4 removed) on the PATH; its state out of the user's home.
fn skaffold(f: &Kind, dir: &Path, args: &[&str]) -> Result<Command> {
    let tools = Tools::load()?;
    let bin = f.cluster.work_dir().join("skaffold-bin");
    if !bin.exists() {
        std::fs::create_dir_all(&bin)?;
        std::os::unix::fs::symlink(tools.path("HELM3", "helm")?, bin.join("helm"))?;
    }
    let mut cmd = f
        .cluster
        .user_command(tools.path("SKAFFOLD", "skaffold")?)?;
    let path = format!(
        "{}:{}",
        bin.display(),
        cmd.get_envs()
            .find(|(k, _)| *k == "PATH")
            .and_then(|(_, v)| v)
            .map(|v| v.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    cmd.current_dir(dir)
        .args(args)
        .env("PATH", path)
        .env("DOCKER_BUILDKIT", "1")
        .env("SKAFFOLD_UPDATE_CHECK", "false")
        .env("SKAFFOLD_INTERACTIVE", "false")
        .env("HOME", f.cluster.work_dir());
    Ok(cmd)
}

/// A line like `Port forwarding service/journey-producer in namespace journey, remote port
/// 8080 -> http://127.0.0.1:8080` in a skaffold log: the local port.
fn forwarded_port(log: &str, service: &str) -> Option<u16> {
    log.lines()
        .filter(|l| l.contains("Port forwarding") && l.contains(&format!("service/{service} ")))
        .filter_map(|l| l.rsplit_once("127.0.0.1:"))
        .filter_map(|(_, port)| port.trim().parse().ok())
        .next_back()
}

/// Waits for skaffold's port-forwards of the producer and Zipkin; their local ports. Fails at
/// once, with skaffold's log, when skaffold exits.
fn wait_forwards(process: &mut Managed) -> Result<(u16, u16)> {
    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        process.ensure_running()?;
        let text = std::fs::read_to_string(process.log_path()).unwrap_or_default();
        if let Some(ports) = forwarded_port(&text, &format!("{RELEASE}-producer"))
            .zip(forwarded_port(&text, &format!("{RELEASE}-zipkin")))
        {
            return Ok(ports);
        }
        if started.elapsed() > SKAFFOLD_TIMEOUT {
            bail!(
                "skaffold dev: not deployed and forwarded after {SKAFFOLD_TIMEOUT:?}; its log:\n{}",
                process.tail(40)
            );
        }
        if last_report.elapsed() > Duration::from_secs(15) {
            let line = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            say!(
                "skaffold dev: {:.0}s: {}",
                started.elapsed().as_secs_f64(),
                line.chars().take(160).collect::<String>()
            );
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// POSTs one message through the producer's forward; waits for its whole journey in Zipkin.
async fn journey_through(producer: u16, zipkin: u16, key: &str) -> Result<String> {
    let answer = post(
        &format!("http://127.0.0.1:{producer}/messages"),
        Some("application/json"),
        serde_json::to_vec(&serde_json::json!({"key": key, "payload": {"via": "skaffold"}}))?,
        &[],
    )
    .await?;
    let trace = answer.trace_id()?;
    ZipkinApi::new(format!("http://127.0.0.1:{zipkin}"))
        .wait_for_trace(&trace, TRACE_TIMEOUT, |s| has_spans(s, &JOURNEY_SPANS))
        .await?;
    Ok(trace)
}

/// Each pod of the release: (UID, total restarts), by component.
fn pods_by_component(f: &Kind) -> Result<BTreeMap<String, Vec<(String, i64)>>> {
    let mut out: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    for p in f.pods()? {
        let restarts: i64 = p["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["restartCount"].as_i64())
            .sum();
        out.entry(component(&p).to_string()).or_default().push((
            p["metadata"]["uid"].as_str().unwrap_or("").to_string(),
            restarts,
        ));
    }
    Ok(out)
}

fn release_is_gone(f: &Kind) -> Result<bool> {
    let out = f.cluster.release_objects(
        "deployments,statefulsets,services,configmaps",
        NAMESPACE,
        RELEASE,
    );
    Ok(out.map(|o| o.trim().is_empty()).unwrap_or(true))
}

pub fn skaffold_dev_rolls_only_the_edited_producer_and_ctrl_c_removes_the_release(
    f: &Kind,
) -> Result<()> {
    let tree = tempfile::Builder::new()
        .prefix("journey-dev-tree-")
        .tempdir()?;
    journey_tests::copy_worktree(tree.path())?;
    let cmd = skaffold(
        f,
        tree.path(),
        // host-network: only because the tests' dockerd has no default bridge (skaffold.yaml).
        &[
            "dev",
            "-p",
            "host-network",
            "--port-forward=user",
            "--tail=false",
            "--cleanup=true",
        ],
    )?;
    let started = Instant::now();
    let mut dev = Managed::spawn(
        "skaffold-dev",
        cmd,
        &f.cluster.logs_path(),
        Duration::from_secs(180),
    )?;
    let (producer, zipkin) = wait_forwards(&mut dev)?;
    say!(
        "skaffold dev: built, loaded into kind, deployed and forwarded in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    block_on(journey_through(producer, zipkin, "skaffold-dev-before"))?;
    eventually(
        "skaffold dev: every pod Ready",
        Duration::from_secs(120),
        || Ok(f.pods()?.iter().all(ready)),
    )?;
    let before = pods_by_component(f)?;

    // The change a developer makes: a new log line at the producer's start.
    journey_tests::change_producer_start_line(tree.path(), "(changed in skaffold dev)")?;
    let edited = Instant::now();
    eventually(
        "skaffold dev: the changed producer serves",
        SKAFFOLD_TIMEOUT,
        || {
            dev.ensure_running()?;
            let logs = f.cluster.kubectl([
                "logs",
                "-n",
                NAMESPACE,
                &format!("deployment/{RELEASE}-producer"),
                "-c",
                "producer",
            ])?;
            let rollout = f.cluster.kubectl([
                "rollout",
                "status",
                "-n",
                NAMESPACE,
                &format!("deployment/{RELEASE}-producer"),
                "--timeout=1s",
            ])?;
            Ok(rollout.status.success()
                && String::from_utf8_lossy(&logs.stdout).contains("changed in skaffold dev"))
        },
    )?;
    say!(
        "skaffold dev: edit → the changed producer serving in {:.0}s",
        edited.elapsed().as_secs_f64()
    );
    eventually(
        "skaffold dev: every pod Ready after the roll",
        Duration::from_secs(120),
        || Ok(f.pods()?.iter().all(ready)),
    )?;
    let after = pods_by_component(f)?;
    ensure!(
        after.get("producer") != before.get("producer"),
        "the producer's pod did not change: {:?}",
        after.get("producer")
    );
    for kept in ["kafka", "relay", "sink", "collector", "zipkin"] {
        ensure!(
            after.get(kept) == before.get(kept),
            "the edit to the producer rolled or restarted {kept}: (uid, restarts) {:?} -> {:?}",
            before.get(kept),
            after.get(kept)
        );
    }

    // skaffold re-establishes its forwards to the new producer pod: retry until they answer.
    block_on(async {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let log = std::fs::read_to_string(dev.log_path()).unwrap_or_default();
            let producer = forwarded_port(&log, &format!("{RELEASE}-producer")).unwrap_or(producer);
            let zipkin = forwarded_port(&log, &format!("{RELEASE}-zipkin")).unwrap_or(zipkin);
            match journey_through(producer, zipkin, "skaffold-dev-after").await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() < deadline => {
                    say!("skaffold dev: not through the forward yet: {e:#}");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Err(e) => {
                    return Err(e.context(format!(
                        "after the change, through skaffold's forwards; its log:\n{}",
                        dev.tail(40)
                    )));
                }
            }
        }
    })?;
    // Only the producer's crate was compiled again: BuildKit reused every other layer.
    let log = std::fs::read_to_string(dev.log_path()).unwrap_or_default();
    let compiled = log
        .lines()
        .filter(|l| l.contains("Compiling "))
        .map(str::trim)
        .collect::<Vec<_>>();
    say!("skaffold dev: the rebuild compiled {compiled:?}");

    dev.signal(libc::SIGINT)?;
    let status = dev.wait_exit(Duration::from_secs(180))?;
    say!("skaffold dev: stopped with Ctrl-C ({status})");
    eventually(
        "skaffold dev: Ctrl-C removed the release",
        Duration::from_secs(120),
        || release_is_gone(f),
    )
}

/// skaffold's `local` profile as kind's local-registry guide sets it up: a registry on
/// `localhost:<port>` (here distribution's, a process on this host, also served on the kind
/// network's gateway) and the node's containerd told where that is; skaffold builds, pushes,
/// deploys each image pinned by digest, the node pulls them, the journey completes; `skaffold
/// delete` removes the release.
pub fn skaffold_run_with_the_local_profile_pushes_to_a_registry_the_node_pulls_from(
    f: &Kind,
) -> Result<()> {
    let mut registry = block_on(Registry::start())?;
    let gateway = f.cluster.gateway()?;
    registry.expose_on(gateway)?;
    f.cluster.trust_registry(
        &registry.host(),
        &format!("http://{gateway}:{}", registry.port()),
    )?;
    let repo = registry.host();
    let result = (|| -> Result<()> {
        let args = [
            "run",
            "-p",
            "local,host-network",
            "--default-repo",
            repo.as_str(),
            "--port-forward=user",
            "--tail=false",
        ];
        let started = Instant::now();
        let mut run = Managed::spawn(
            "skaffold-run",
            skaffold(f, &journey_tests::repo_root(), &args)?,
            &f.cluster.logs_path(),
            Duration::from_secs(60),
        )?;
        let (producer, zipkin) = wait_forwards(&mut run)?;
        say!(
            "skaffold run -p local: built, pushed, deployed and forwarded in {:.0}s",
            started.elapsed().as_secs_f64()
        );
        block_on(journey_through(producer, zipkin, "skaffold-run-local"))?;
        // skaffold flattens the image names under the default repo (journey/producer →
        // journey_producer) and pins each by digest.
        let catalog = block_on(registry.catalog())?;
        for image in ["journey_producer", "journey_consumer", "journey_journeyctl"] {
            ensure!(
                catalog.iter().any(|r| r == image),
                "{image} was not pushed to the registry: {catalog:?}"
            );
        }
        let deployed = f.cluster.kubectl_ok([
            "get",
            "deployment",
            "-n",
            NAMESPACE,
            &format!("{RELEASE}-producer"),
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])?;
        ensure!(
            deployed.starts_with(&format!("{repo}/journey_producer@sha256:")),
            "the producer runs {deployed}, not the pushed image by digest"
        );
        run.signal(libc::SIGINT)?;
        run.wait_exit(Duration::from_secs(60))?;
        let delete = skaffold(f, &journey_tests::repo_root(), &["delete"])?;
        let (status, out) = journey_tests::process::run_to_end(
            "skaffold-delete",
            delete,
            &f.cluster.logs_path(),
            Duration::from_secs(300),
        )?;
        ensure!(status.success(), "skaffold delete failed:\n{out}");
        eventually(
            "skaffold delete: the release is gone",
            Duration::from_secs(120),
            || release_is_gone(f),
        )
    })();
    // The images skaffold tagged for this registry (a new port each run) go too.
    let refs = f.docker.api().run(&[
        "image",
        "ls",
        "--format",
        "{{.Repository}}:{{.Tag}}",
        "--filter",
        &format!("reference={repo}/*"),
    ])?;
    if !refs.is_empty() {
        let mut args = vec!["image", "rm", "--force"];
        args.extend(refs.lines());
        f.docker.api().run(&args)?;
    }
    result
}

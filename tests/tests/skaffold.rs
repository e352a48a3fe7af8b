//! skaffold for real, on a real node: `skaffold render`, `skaffold run` and the `skaffold dev`
//! loop, with the `local` profile of skaffold.yaml.
//!
//! Setup: the private dockerd (skaffold builds with it) with the local base images and the
//! third-party stand-ins (`scripts/images.sh local`); a control plane and a real node
//! (`journey_tests::node`) with the stand-ins imported; a local registry on `localhost:<port>`
//! that the node's containerd pulls from (its hosts.toml points at the node's gateway, as kind's
//! local-registry guide points at the registry container). skaffold pushes the three Journey
//! images there and deploys the chart with the tags it computed.
//!
//! The tests run in order: render, run (then cleaned up), dev (its Ctrl-C cleans up).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use journey_tests::chart::{NAMESPACE, RELEASE, kind_of, name_of, parse_docs};
use journey_tests::docker::Docker;
use journey_tests::node::Cluster;
use journey_tests::process::{Managed, run_to_end, wait_until};
use journey_tests::registry::Registry;
use journey_tests::runner::{self, Fixture, block_on};
use journey_tests::services::{JOURNEY_SPANS, TRACE_TIMEOUT, has_spans, post};
use journey_tests::tools::Tools;
use journey_tests::zipkin::ZipkinApi;
use journey_tests::{repo_root, say, tests};
use yaml_serde::Value;

fn main() -> std::process::ExitCode {
    runner::main_in_order(
        || block_on(Skaffold::start()),
        tests![
            skaffold_render_is_what_helm_template_renders_with_the_same_values,
            skaffold_run_builds_pushes_and_deploys_and_the_journey_completes,
            skaffold_dev_serves_a_changed_service_and_ctrl_c_removes_what_it_deployed,
        ],
    )
}

/// How long a `skaffold run` or a `skaffold dev` round may take (a cold release build included).
const SKAFFOLD_TIMEOUT: Duration = Duration::from_secs(900);

struct Skaffold {
    skaffold: PathBuf,
    /// A PATH with docker (Debian's 20.10 client), helm and kubectl of the installer first.
    path: String,
    registry: Registry,
    cluster: Cluster,
    docker: Docker,
}

impl Drop for Skaffold {
    /// The images skaffold tagged for this run's registry (a new port each run) go too.
    fn drop(&mut self) {
        let filter = format!("reference={}/*", self.registry.host());
        match self
            .docker
            .api()
            .run(&["image", "ls", "--quiet", "--filter", &filter])
        {
            Ok(ids) if !ids.is_empty() => {
                let refs = self.docker.api().run(&[
                    "image",
                    "ls",
                    "--format",
                    "{{.Repository}}:{{.Tag}}",
                    "--filter",
                    &filter,
                ]);
                if let Ok(refs) = refs {
                    let mut args = vec!["image", "rm", "--force"];
                    args.extend(refs.lines());
                    if let Err(e) = self.docker.api().run(&args) {
                        say!("skaffold: removing its images failed: {e:#}");
                    }
                }
            }
            Ok(_) => {}
            Err(e) => say!("skaffold: listing its images failed: {e:#}"),
        }
    }
}

impl Fixture for Skaffold {
    fn logs_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = self.cluster.logs_dirs();
        dirs.push(self.registry.dir().join("logs"));
        dirs
    }
}

impl Skaffold {
    async fn start() -> Result<Skaffold> {
        let tools = Tools::load()?;
        let skaffold = tools.path("SKAFFOLD", "skaffold")?;
        let docker = Docker::start().await?;
        let api = docker.api();
        // The local bases (skaffold's `local` profile builds on them) and the stand-ins.
        api.build_images("bases")?;
        api.build_images("standins")?;
        let archive_dir = tempfile::Builder::new()
            .prefix("journey-images-")
            .tempdir()?;
        let archive = archive_dir.path().join("third-party.tar");
        let mut images = third_party_images()?;
        images.push(tools.get("PAUSE_IMAGE", "node")?);
        let path = archive.display().to_string();
        let mut args = vec!["save", "--output", &path];
        args.extend(images.iter().map(String::as_str));
        api.run(&args)?;

        let cluster = Cluster::start().await?;
        cluster.node.import_images(&archive)?;
        drop(archive_dir);
        let mut registry = Registry::start().await?;
        registry.expose_on(cluster.net.host_ip.into())?;
        cluster.node.trust_registry(
            &registry.host(),
            &format!("http://{}:{}", cluster.net.host_ip, registry.port()),
        )?;

        // skaffold runs `docker`, `helm` and `kubectl`: the pinned ones. skaffold 2.16 asks
        // `helm version --client`, a flag Helm 4 removed: it gets Helm 3.
        let bin_dir = tempfile::Builder::new()
            .prefix("journey-bin-")
            .tempdir()?
            .keep();
        for (name, target) in [
            ("docker", api.client().to_path_buf()),
            ("helm", tools.path("HELM3", "helm")?),
            ("kubectl", tools.path("KUBECTL", "controlplane")?),
        ] {
            std::os::unix::fs::symlink(target, bin_dir.join(name))?;
        }
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        journey_tests::ledger::record(&journey_tests::ledger::Resource::Root(bin_dir));
        Ok(Skaffold {
            skaffold,
            path,
            registry,
            cluster,
            docker,
        })
    }

    /// `skaffold <args>` in `dir`, against this cluster, registry and dockerd.
    fn command(&self, dir: &Path, args: &[&str]) -> Result<Command> {
        let mut cmd = self.cluster.cp.script_command(&self.skaffold)?;
        cmd.current_dir(dir)
            .args(args)
            .args(["-p", "local", "--default-repo", &self.registry.host()])
            .env("PATH", &self.path)
            .env("DOCKER_HOST", self.docker.api().host())
            .env("DOCKER_BUILDKIT", "1")
            .env("SKAFFOLD_UPDATE_CHECK", "false")
            .env("SKAFFOLD_INTERACTIVE", "false")
            // Its config (and the update check's state) stays out of the user's home.
            .env("HOME", self.cluster.cp.dir());
        Ok(cmd)
    }

    fn logs(&self) -> PathBuf {
        self.cluster.cp.logs_dir()
    }
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
async fn wait_forwards(process: &mut Managed, what: &str) -> Result<(u16, u16)> {
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
                "skaffold {what}: not deployed and forwarded after {SKAFFOLD_TIMEOUT:?}; its log:\n{}",
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
                "skaffold {what}: {:.0}s: {}",
                started.elapsed().as_secs_f64(),
                line.chars().take(160).collect::<String>()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
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

/// Stops a skaffold process as a terminal's Ctrl-C does and waits for it to finish.
fn ctrl_c(mut process: Managed, within: Duration) -> Result<String> {
    process.signal(libc::SIGINT)?;
    let status = process.wait_exit(within)?;
    let log = std::fs::read_to_string(process.log_path()).unwrap_or_default();
    say!("skaffold: stopped with Ctrl-C ({status})");
    Ok(log)
}

/// The images a Deployment's containers run (`kubectl get deploy`).
fn deployed_image(f: &Skaffold, component: &str) -> Result<String> {
    f.cluster.cp.kubectl_ok([
        "get",
        "deployment",
        "-n",
        NAMESPACE,
        &format!("{RELEASE}-{component}"),
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ])
}

fn release_is_gone(f: &Skaffold) -> Result<bool> {
    let out = f.cluster.cp.release_objects(
        "deployments,statefulsets,services,configmaps",
        NAMESPACE,
        RELEASE,
    );
    Ok(out.map(|o| o.trim().is_empty()).unwrap_or(true))
}

// ---------------------------------------------------------------------------------------------

fn skaffold_render_is_what_helm_template_renders_with_the_same_values(f: &Skaffold) -> Result<()> {
    // Render with the tags the tagger computes, without building.
    let cmd = f.command(
        &repo_root(),
        &[
            "render",
            "--digest-source=tag",
            "--offline=true",
            "--loud=false",
        ],
    )?;
    let (status, out) = run_to_end("skaffold-render", cmd, &f.logs(), Duration::from_secs(300))?;
    ensure!(status.success(), "skaffold render failed:\n{out}");
    let rendered = parse_docs(&out).context("skaffold render's output")?;
    // The image values skaffold set, read back from what it rendered.
    let image_of = |kind: &str, name: &str, init: bool| -> Result<String> {
        let d = rendered
            .iter()
            .find(|d| kind_of(d) == kind && name_of(d) == name)
            .with_context(|| format!("skaffold rendered no {kind} {name}"))?;
        let list = if init { "initContainers" } else { "containers" };
        Ok(d["spec"]["template"]["spec"][list][0]["image"]
            .as_str()
            .unwrap_or("")
            .to_string())
    };
    let split = |image: &str| -> Result<(String, String)> {
        let (repo, tag) = image.rsplit_once(':').context("image without a tag")?;
        Ok((repo.to_string(), tag.to_string()))
    };
    let (p_repo, p_tag) = split(&image_of(
        "Deployment",
        &format!("{RELEASE}-producer"),
        false,
    )?)?;
    let (c_repo, c_tag) = split(&image_of("Deployment", &format!("{RELEASE}-relay"), false)?)?;
    let (j_repo, j_tag) = split(&image_of("Deployment", &format!("{RELEASE}-relay"), true)?)?;
    ensure!(
        p_repo.starts_with(&f.registry.host()),
        "skaffold did not rewrite the images to the default repo: {p_repo}"
    );
    let sets = [
        format!("producer.image.repository={p_repo}"),
        format!("producer.image.tag={p_tag}"),
        format!("relay.image.repository={c_repo}"),
        format!("relay.image.tag={c_tag}"),
        format!("sink.image.repository={c_repo}"),
        format!("sink.image.tag={c_tag}"),
        format!("journeyctl.image.repository={j_repo}"),
        format!("journeyctl.image.tag={j_tag}"),
    ];
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let helm = journey_tests::chart::render(&[], &sets)?;
    // Compared as data (skaffold writes keys in another order).
    let key = |d: &Value| format!("{}/{}", kind_of(d), name_of(d));
    let data = |d: &Value| serde_json::to_value(d).unwrap_or_default();
    let mut a: Vec<(String, serde_json::Value)> =
        rendered.iter().map(|d| (key(d), data(d))).collect();
    let mut b: Vec<(String, serde_json::Value)> = helm.iter().map(|d| (key(d), data(d))).collect();
    a.sort_by(|x, y| x.0.cmp(&y.0));
    b.sort_by(|x, y| x.0.cmp(&y.0));
    let names =
        |v: &[(String, serde_json::Value)]| v.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    ensure!(
        names(&a) == names(&b),
        "skaffold render and helm template render different objects:\n{:?}\n{:?}",
        names(&a),
        names(&b)
    );
    for ((k, x), (_, y)) in a.iter().zip(&b) {
        ensure!(
            x == y,
            "{k} differs:\nskaffold render:\n{x:#}\nhelm template:\n{y:#}"
        );
    }
    Ok(())
}

fn skaffold_run_builds_pushes_and_deploys_and_the_journey_completes(f: &Skaffold) -> Result<()> {
    let cmd = f.command(
        &repo_root(),
        &[
            "run",
            "--port-forward=user",
            "--tail=false",
            "--status-check=true",
        ],
    )?;
    let started = Instant::now();
    let mut run = Managed::spawn("skaffold-run", cmd, &f.logs(), Duration::from_secs(60))?;
    let (producer, zipkin) = block_on(wait_forwards(&mut run, "run"))?;
    say!(
        "skaffold run: built, pushed, deployed and forwarded in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    let trace = block_on(journey_through(producer, zipkin, "skaffold-run"))?;
    say!("skaffold run: trace {trace} complete");
    let catalog = block_on(f.registry.catalog())?;
    // skaffold flattens the image names under a default repo (journey/producer → journey_producer).
    for image in ["journey_producer", "journey_consumer", "journey_journeyctl"] {
        ensure!(
            catalog.iter().any(|r| r == image),
            "{image} was not pushed to the registry: {catalog:?}"
        );
    }
    ensure!(
        deployed_image(f, "producer")?.starts_with(&f.registry.host()),
        "the producer does not run the pushed image"
    );
    ctrl_c(run, Duration::from_secs(60))?;
    // `run` leaves what it deployed (that is `run`): delete it as a user would.
    let cmd = f.command(&repo_root(), &["delete"])?;
    let (status, out) = run_to_end("skaffold-delete", cmd, &f.logs(), Duration::from_secs(300))?;
    ensure!(status.success(), "skaffold delete failed:\n{out}");
    block_on(wait_until(
        "skaffold delete: the release is gone",
        Duration::from_secs(120),
        || async { release_is_gone(f) },
    ))
}

fn skaffold_dev_serves_a_changed_service_and_ctrl_c_removes_what_it_deployed(
    f: &Skaffold,
) -> Result<()> {
    let tree = tempfile::Builder::new()
        .prefix("journey-dev-tree-")
        .tempdir()?;
    journey_tests::copy_worktree(tree.path())?;
    let cmd = f.command(
        tree.path(),
        &[
            "dev",
            "--port-forward=user",
            "--tail=false",
            "--cleanup=true",
        ],
    )?;
    let mut dev = Managed::spawn("skaffold-dev", cmd, &f.logs(), Duration::from_secs(120))?;
    let (producer, zipkin) = block_on(wait_forwards(&mut dev, "dev"))?;
    block_on(journey_through(producer, zipkin, "skaffold-dev-before"))?;
    let before = (deployed_image(f, "producer")?, deployed_image(f, "relay")?);

    // The change a developer makes: a new log line at the producer's start.
    journey_tests::change_producer_start_line(tree.path(), "(changed in skaffold dev)")?;
    let edited = Instant::now();

    // Serving: a producer pod of the new image is Ready and logged the new line.
    let mut served = false;
    block_on(wait_until(
        "skaffold dev: the changed producer serves",
        SKAFFOLD_TIMEOUT,
        || {
            let early = dev.ensure_running();
            let logs = f.cluster.cp.kubectl([
                "logs",
                "-n",
                NAMESPACE,
                &format!("deployment/{RELEASE}-producer"),
                "-c",
                "producer",
            ]);
            let ready = f.cluster.cp.kubectl([
                "rollout",
                "status",
                "-n",
                NAMESPACE,
                &format!("deployment/{RELEASE}-producer"),
                "--timeout=1s",
            ]);
            served = matches!((&logs, &ready), (Ok(l), Ok(r))
            if r.status.success() && String::from_utf8_lossy(&l.stdout).contains("changed in skaffold dev"));
            let ok = served;
            async move {
                early?;
                Ok(ok)
            }
        },
    ))?;
    let took = edited.elapsed();
    say!(
        "skaffold dev: edit → the changed producer serving in {:.0}s",
        took.as_secs_f64()
    );
    let after = (deployed_image(f, "producer")?, deployed_image(f, "relay")?);
    ensure!(
        after.0 != before.0,
        "the producer's image did not change: {}",
        after.0
    );
    // Pinned by digest: the relay (and Kafka with journeyctl's sidecar) kept their images.
    ensure!(
        after.1 == before.1,
        "the relay's image changed: {} -> {}",
        before.1,
        after.1
    );
    // The forward follows the new pod: the journey works through it.
    // skaffold re-establishes its forwards to the new pods: retry until they answer.
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
    let build_log = log
        .lines()
        .filter(|l| l.contains("Compiling "))
        .map(str::trim)
        .collect::<Vec<_>>();
    say!("skaffold dev: the rebuild compiled {build_log:?}");
    if !build_log.is_empty() {
        ensure!(
            build_log.iter().all(|l| l.contains("producer")),
            "the rebuild compiled more than the producer: {build_log:?}"
        );
    }
    ctrl_c(dev, Duration::from_secs(180))?;
    let gone = block_on(wait_until(
        "skaffold dev: Ctrl-C removed the release",
        Duration::from_secs(120),
        || async { release_is_gone(f) },
    ));
    if gone.is_err() {
        bail!("after Ctrl-C skaffold dev left the release deployed");
    }
    Ok(())
}

//! The container images, built and run for real on a private Docker daemon.
//!
//! Setup runs `scripts/images.sh local` (the base images from Debian packages, stand-ins for the
//! chart's third-party images, then the project's Dockerfile on the local bases), then deploys the chart's pods as containers on one Docker network: each container
//! with exactly what `helm template` renders for it — image, command and args, environment
//! (downward-API values filled in), user and groups, read-only root file system, dropped
//! capabilities, no privilege escalation, memory limit, emptyDir volumes as tmpfs owned by the
//! pod's user, ConfigMaps as read-only files, Service names as network aliases. What needs an
//! API server is left out and said where (the init container does not wait for workloads; the
//! Collector runs its base config without the Kubernetes overlay): the kind tests run the
//! chart whole.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use journey_tests::chart::{
    PodFacts, all, containers, kind_of, name_of, pods, render_ci, resolve_env, s, seq,
};
use journey_tests::docker::{Container, Docker, DockerClient, Network, tail};
use journey_tests::process::wait_until;
use journey_tests::runner::{self, Fixture, block_on};
use journey_tests::services::{JOURNEY_SPANS, TRACE_TIMEOUT, has_spans, post};
use journey_tests::zipkin::ZipkinApi;
use journey_tests::{repo_root, say, tests};
use yaml_serde::Value;

fn main() -> std::process::ExitCode {
    runner::main(
        || block_on(Images::start()),
        tests![
            the_chart_deploys_only_images_built_here_and_each_journey_image_is_at_most_40_mb,
            the_runtime_images_have_no_shell_and_no_package_manager,
            the_journey_binaries_print_their_config_under_the_charts_security_context,
            every_container_runs_with_the_user_groups_capabilities_and_read_only_root_of_the_chart,
            every_container_answers_its_readiness_probe_from_the_chart,
            the_init_container_waited_for_kafka_the_collector_and_zipkin_then_seeded_the_topics,
            one_post_to_the_producer_container_becomes_one_complete_trace_in_the_zipkin_container,
            the_producer_container_stays_within_its_memory_limit_under_the_largest_requests_allowed,
            a_changed_service_rebuilds_only_its_own_image,
        ],
    )
}

/// The Journey images the Dockerfile builds (the chart's default tag: the appVersion).
const JOURNEY_IMAGES: [&str; 3] = ["producer", "consumer", "journeyctl"];
/// The size goal of each Journey image.
const MAX_JOURNEY_IMAGE_BYTES: u64 = 40_000_000;
/// How long a container may take to pass its readiness probe (a JVM on a busy 2-core machine).
const READY_TIMEOUT: Duration = Duration::from_secs(180);
const NETWORK: &str = "journey-images";
const BRIDGE: &str = "jny-images";

/// The images built, and the chart's pods running as containers on one network.
struct Images {
    // Dropped in this order: containers, then their network, then the daemon.
    pods: BTreeMap<String, Pod>,
    init_log: String,
    _network: Network,
    docs: Vec<Value>,
    _files: tempfile::TempDir,
    docker: Docker,
}

impl Fixture for Images {
    fn logs_dirs(&self) -> Vec<PathBuf> {
        vec![self.docker.dir().join("logs")]
    }
}

/// One pod of the chart, as a container.
struct Pod {
    container: Container,
    spec: Value,
    main: Value,
}

impl Images {
    async fn start() -> Result<Images> {
        let docker = Docker::start().await?;
        let started = Instant::now();
        docker.api().build_images("local")?;
        say!("images: built in {:.0}s", started.elapsed().as_secs_f64());
        let docs = render_ci("default")?;
        let files = tempfile::Builder::new()
            .prefix("journey-images-")
            .tempdir()?;
        let network = docker.api().network(NETWORK, BRIDGE)?;
        let api = docker.api().clone();
        let mut pods = BTreeMap::new();

        // Kafka, the Collector and Zipkin first; journeyctl's init (wait, seed) next, as each
        // service pod's init container does; then the services.
        let started = Instant::now();
        for component in ["kafka", "collector", "zipkin"] {
            let pod = start_pod(&api, &docs, component, files.path())?;
            pods.insert(component.to_string(), pod);
        }
        let init_log = run_init(&api, &docs, files.path()).await?;
        for component in ["producer", "relay", "sink"] {
            let pod = start_pod(&api, &docs, component, files.path())?;
            pods.insert(component.to_string(), pod);
        }
        for (component, pod) in &pods {
            wait_ready(component, pod).await?;
        }
        say!(
            "images: the chart's six pods are ready as containers after {:.0}s",
            started.elapsed().as_secs_f64()
        );
        Ok(Images {
            pods,
            init_log,
            _network: network,
            docs,
            _files: files,
            docker,
        })
    }

    fn pod(&self, component: &str) -> Result<&Pod> {
        self.pods
            .get(component)
            .with_context(|| format!("no {component} pod"))
    }

    fn url(&self, component: &str, port: u16) -> Result<String> {
        Ok(format!(
            "http://{}:{port}",
            self.pod(component)?.container.ip(NETWORK)?
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// The chart's pods as containers

/// The rendered workload of `component` (label app.kubernetes.io/component) and its pod spec.
fn workload<'a>(docs: &'a [Value], component: &str) -> Result<(String, &'a Value, &'a Value)> {
    pods(docs)
        .into_iter()
        .find(|(_, meta, _)| s(&meta["labels"]["app.kubernetes.io/component"]) == component)
        .with_context(|| format!("the chart renders no pod for {component}"))
}

/// The pod name Kubernetes would give: `<statefulset>-0`, or the Deployment's name.
fn pod_name(owner: &str) -> String {
    match owner.split_once('/') {
        Some(("StatefulSet", name)) => format!("{name}-0"),
        Some((_, name)) => name.to_string(),
        None => owner.to_string(),
    }
}

/// The DNS names cluster DNS gives this pod: every Service selecting it (short, namespaced and
/// fully qualified), and `<pod>.<headless service>` for a StatefulSet's governing Service.
fn dns_aliases(docs: &[Value], meta: &Value, workload: &Value, pod: &str) -> Vec<String> {
    let ns = journey_tests::chart::NAMESPACE;
    let labels = &meta["labels"];
    let mut out = Vec::new();
    for svc in all(docs, "Service") {
        let selector = svc["spec"]["selector"].as_mapping();
        let selects = selector.is_some_and(|sel| {
            !sel.is_empty()
                && sel
                    .iter()
                    .all(|(k, v)| labels[k.as_str().unwrap_or("")] == *v)
        });
        if !selects {
            continue;
        }
        let name = name_of(svc);
        for n in [
            name.to_string(),
            format!("{name}.{ns}"),
            format!("{name}.{ns}.svc"),
            format!("{name}.{ns}.svc.cluster.local"),
        ] {
            out.push(n);
        }
        if s(&workload["spec"]["serviceName"]) == name {
            out.push(format!("{pod}.{name}"));
            out.push(format!("{pod}.{name}.{ns}.svc.cluster.local"));
        }
    }
    out
}

/// A Kubernetes memory quantity (`640Mi`, `1Gi`, `512M`, bytes) in bytes.
fn quantity_bytes(q: &str) -> Result<u64> {
    let units = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (suffix, mult) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return Ok(n.parse::<u64>().with_context(|| format!("quantity {q}"))? * mult);
        }
    }
    q.parse().with_context(|| format!("quantity {q}"))
}

/// The user, group and supplementary group a container runs as (container over pod settings).
fn identity(spec: &Value, c: &Value) -> (i64, i64, Option<i64>) {
    let pick = |key: &str| {
        c["securityContext"][key]
            .as_i64()
            .or_else(|| spec["securityContext"][key].as_i64())
    };
    (
        pick("runAsUser").unwrap_or(0),
        pick("runAsGroup").unwrap_or(0),
        spec["securityContext"]["fsGroup"].as_i64(),
    )
}

/// `docker run` arguments for container `c` of a pod: everything the kubelet would apply.
fn docker_args(
    docs: &[Value],
    owner: &str,
    meta: &Value,
    spec: &Value,
    c: &Value,
    files: &Path,
) -> Result<Vec<String>> {
    let pod = pod_name(owner);
    let workload = docs
        .iter()
        .find(|d| format!("{}/{}", kind_of(d), name_of(d)) == owner)
        .context("the workload")?;
    let mut args: Vec<String> = vec![
        "--network".into(),
        NETWORK.into(),
        "--hostname".into(),
        pod.clone(),
        "--label".into(),
        format!("org.journey.pod={pod}"),
    ];
    for alias in dns_aliases(docs, meta, workload, &pod) {
        args.extend(["--network-alias".into(), alias]);
    }
    let (uid, gid, fs_group) = identity(spec, c);
    args.extend(["--user".into(), format!("{uid}:{gid}")]);
    if let Some(g) = fs_group {
        args.extend(["--group-add".into(), g.to_string()]);
    }
    let sc = &c["securityContext"];
    if sc["readOnlyRootFilesystem"].as_bool() == Some(true) {
        args.push("--read-only".into());
    }
    for cap in seq(&sc["capabilities"]["drop"]) {
        args.extend(["--cap-drop".into(), s(cap).to_string()]);
    }
    if sc["allowPrivilegeEscalation"].as_bool() == Some(false) {
        args.extend(["--security-opt".into(), "no-new-privileges".into()]);
    }
    // seccompProfile RuntimeDefault is Docker's default profile: nothing to add.
    if let Some(mem) = c["resources"]["limits"]["memory"].as_str() {
        args.extend(["--memory".into(), quantity_bytes(mem)?.to_string()]);
    }
    for m in seq(&c["volumeMounts"]) {
        let path = s(&m["mountPath"]);
        let vol = seq(&spec["volumes"])
            .iter()
            .find(|v| s(&v["name"]) == s(&m["name"]))
            .with_context(|| format!("{pod}: volume {} is not declared", s(&m["name"])))?;
        if !vol["emptyDir"].is_null() {
            // An emptyDir: writable by the pod's user and fsGroup, executable like a directory.
            let group = fs_group.unwrap_or(gid);
            let size = vol["emptyDir"]["sizeLimit"]
                .as_str()
                .map(quantity_bytes)
                .transpose()?
                .map(|b| format!(",size={b}"))
                .unwrap_or_default();
            args.extend([
                "--tmpfs".into(),
                format!("{path}:rw,exec,uid={uid},gid={group},mode=0770{size}"),
            ]);
        } else if let Some(cm) = vol["configMap"]["name"].as_str() {
            let dir = configmap_dir(docs, cm, files)?;
            args.extend(["--volume".into(), format!("{}:{path}:ro", dir.display())]);
        } else {
            // The service-account token (projected): there is no API server here.
            say!(
                "images: {pod}: volume {} left out (needs an API server)",
                s(&m["name"])
            );
        }
    }
    let facts = PodFacts {
        name: pod.clone(),
        index: 0,
        ip: "0.0.0.0".into(),
    };
    for (k, v) in resolve_env(c, &facts)? {
        // journeyctl's init waits for workloads through the API server: not here.
        if k == "WAIT_WORKLOADS" {
            continue;
        }
        args.extend(["--env".into(), format!("{k}={v}")]);
    }
    let command = seq(&c["command"]);
    if let Some(first) = command.first() {
        args.extend(["--entrypoint".into(), s(first).to_string()]);
    }
    args.push(s(&c["image"]).to_string());
    for a in command.iter().skip(1).chain(seq(&c["args"])) {
        // The Collector's Kubernetes overlay (k8s_attributes) needs an API server.
        if s(a).ends_with("collector-k8s.yaml") {
            continue;
        }
        args.push(s(a).to_string());
    }
    Ok(args)
}

/// The files of ConfigMap `name`, written once under `files`.
fn configmap_dir(docs: &[Value], name: &str, files: &Path) -> Result<PathBuf> {
    let dir = files.join("configmaps").join(name);
    if dir.exists() {
        return Ok(dir);
    }
    let cm = journey_tests::chart::find(docs, "ConfigMap", name)?;
    std::fs::create_dir_all(&dir)?;
    for (k, v) in cm["data"].as_mapping().context("ConfigMap data")? {
        std::fs::write(dir.join(k.as_str().context("key")?), s(v))?;
    }
    // Readable by every user, like a ConfigMap volume.
    for e in std::fs::read_dir(&dir)? {
        std::fs::set_permissions(e?.path(), std::fs::Permissions::from_mode(0o644))?;
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

fn start_pod(api: &DockerClient, docs: &[Value], component: &str, files: &Path) -> Result<Pod> {
    let (owner, meta, spec) = workload(docs, component)?;
    let main = seq(&spec["containers"])
        .first()
        .with_context(|| format!("{owner}: no container"))?
        .clone();
    let args = docker_args(docs, &owner, meta, spec, &main, files)?;
    say!(
        "images: starting {} ({})",
        pod_name(&owner),
        s(&main["image"])
    );
    let container = api.container(&pod_name(&owner), &args)?;
    Ok(Pod {
        container,
        spec: spec.clone(),
        main,
    })
}

/// journeyctl's init container of the producer pod, run to completion; returns its log.
async fn run_init(api: &DockerClient, docs: &[Value], files: &Path) -> Result<String> {
    let (owner, meta, spec) = workload(docs, "producer")?;
    let init = seq(&spec["initContainers"])
        .first()
        .context("the producer pod has no init container")?;
    let args = docker_args(docs, &owner, meta, spec, init, files)?;
    let name = format!("{}-init", pod_name(&owner));
    say!("images: running {name} (journeyctl init: wait, then seed the topics)");
    let container = api.container(&name, &args)?;
    let client = api.clone();
    let code = tokio::task::spawn_blocking(move || client.run(&["wait", &name])).await??;
    let log = container.logs();
    ensure!(
        code.trim() == "0",
        "journeyctl init exited {code}; its log:\n{}",
        tail(&log, 40)
    );
    Ok(log)
}

/// The container's readiness probe, as the chart renders it, against its address.
async fn probe(pod: &Pod) -> Result<bool> {
    let c = &pod.main;
    let p = &c["readinessProbe"];
    let port_of = |v: &Value| -> Result<u16> {
        if let Some(n) = v.as_u64() {
            return Ok(n as u16);
        }
        seq(&c["ports"])
            .iter()
            .find(|port| s(&port["name"]) == s(v))
            .and_then(|port| port["containerPort"].as_u64())
            .map(|n| n as u16)
            .with_context(|| format!("no port named {}", s(v)))
    };
    let ip = pod.container.ip(NETWORK)?;
    if !p["httpGet"].is_null() {
        let url = format!(
            "http://{ip}:{}{}",
            port_of(&p["httpGet"]["port"])?,
            s(&p["httpGet"]["path"])
        );
        let resp = reqwest::Client::new()
            .get(&url)
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let code = resp.status().as_u16();
        // The kubelet's rule: 200 to 399 is success.
        return Ok((200..400).contains(&code));
    }
    if !p["tcpSocket"].is_null() {
        let addr = format!("{ip}:{}", port_of(&p["tcpSocket"]["port"])?);
        return Ok(tokio::net::TcpStream::connect(&addr).await.is_ok());
    }
    bail!("{}: no httpGet or tcpSocket readiness probe", s(&c["name"]))
}

async fn wait_ready(component: &str, pod: &Pod) -> Result<()> {
    let what = format!("images: {component}'s readiness probe");
    wait_until(&what, READY_TIMEOUT, || async {
        pod.container.ensure_running()?;
        probe(pod).await
    })
    .await
    .with_context(|| {
        format!(
            "{component}: last log lines:\n{}",
            tail(&pod.container.logs(), 30)
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Tests

fn the_chart_deploys_only_images_built_here_and_each_journey_image_is_at_most_40_mb(
    f: &Images,
) -> Result<()> {
    let api = f.docker.api();
    let mut images: Vec<String> = Vec::new();
    for (_, _, spec) in pods(&f.docs) {
        for c in containers(spec) {
            let image = s(&c["image"]).to_string();
            if !images.contains(&image) {
                images.push(image);
            }
        }
    }
    ensure!(
        images.len() == 6,
        "the chart deploys {images:?}, expected six images"
    );
    let mut report = Vec::new();
    let mut too_big = Vec::new();
    for image in &images {
        let size = api
            .image_size(image)
            .with_context(|| format!("{image} is not built here (scripts/images.sh local)"))?;
        report.push(format!("{image}: {:.1} MB", size as f64 / 1e6));
        let journey = JOURNEY_IMAGES
            .iter()
            .any(|j| image.starts_with(&format!("journey/{j}:")));
        if journey && size > MAX_JOURNEY_IMAGE_BYTES {
            too_big.push(image.clone());
        }
    }
    say!("images: sizes: {}", report.join(", "));
    ensure!(too_big.is_empty(), "over 40 MB: {too_big:?} ({report:?})");
    Ok(())
}

fn the_runtime_images_have_no_shell_and_no_package_manager(f: &Images) -> Result<()> {
    let api = f.docker.api();
    let mut images: Vec<String> = JOURNEY_IMAGES
        .iter()
        .map(|j| format!("journey/{j}:{}", chart_app_version()))
        .collect();
    images.push(image_of(&f.docs, "collector")?);
    for image in &images {
        for program in [
            "/bin/sh",
            "/bin/bash",
            "/usr/bin/apt-get",
            "/usr/bin/dpkg",
            "/bin/busybox",
        ] {
            let out = api
                .command()
                .args([
                    "run",
                    "--rm",
                    "--network",
                    "none",
                    "--entrypoint",
                    program,
                    image,
                ])
                .output()?;
            let err = String::from_utf8_lossy(&out.stderr);
            ensure!(
                !out.status.success() && err.contains("no such file or directory"),
                "{image} runs {program} (exit {:?}): {err}",
                out.status.code()
            );
        }
    }
    Ok(())
}

fn chart_app_version() -> String {
    let chart =
        std::fs::read_to_string(repo_root().join("charts/journey/Chart.yaml")).unwrap_or_default();
    chart
        .lines()
        .find_map(|l| l.strip_prefix("appVersion:"))
        .map(|v| v.trim().trim_matches('"').to_string())
        .unwrap_or_default()
}

fn image_of(docs: &[Value], component: &str) -> Result<String> {
    let (_, _, spec) = workload(docs, component)?;
    Ok(s(&seq(&spec["containers"]).first().context("container")?["image"]).to_string())
}

fn the_journey_binaries_print_their_config_under_the_charts_security_context(
    f: &Images,
) -> Result<()> {
    let api = f.docker.api();
    let (owner, meta, spec) = workload(&f.docs, "relay")?;
    let mut runs = Vec::new();
    for c in containers(spec) {
        runs.push(docker_args(
            &f.docs,
            &owner,
            meta,
            spec,
            c,
            f._files.path(),
        )?);
    }
    let (owner, meta, spec) = workload(&f.docs, "producer")?;
    let main = seq(&spec["containers"]).first().context("producer")?;
    runs.push(docker_args(
        &f.docs,
        &owner,
        meta,
        spec,
        main,
        f._files.path(),
    )?);
    for args in runs {
        // The container's own command and arguments (journeyctl's `init`), plus --print-config.
        let image = args
            .iter()
            .find(|a| a.starts_with("journey/"))
            .context("no Journey image in the arguments")?
            .clone();
        // Off the network: a second container must not answer for the pod's DNS names.
        let mut full: Vec<String> = vec!["run".into(), "--rm".into()];
        full.extend(
            strip_aliases(&args).into_iter().map(
                |a| {
                    if a == NETWORK { "none".to_string() } else { a }
                },
            ),
        );
        full.push("--print-config".into());
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        let out = api
            .run(&refs)
            .with_context(|| format!("{image} --print-config"))?;
        let json: serde_json::Value = serde_json::from_str(&out)
            .with_context(|| format!("{image} --print-config is not JSON: {out}"))?;
        ensure!(json.is_object(), "{image}: {json}");
    }
    Ok(())
}

/// `docker run` arguments without the network aliases and hostname (for a side container).
fn strip_aliases(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--network-alias" || a == "--hostname" {
            it.next();
            continue;
        }
        out.push(a.clone());
    }
    out
}

/// A process's `/proc/<pid>/status` fields.
fn proc_status(pid: u32) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect())
}

fn every_container_runs_with_the_user_groups_capabilities_and_read_only_root_of_the_chart(
    f: &Images,
) -> Result<()> {
    for (component, pod) in &f.pods {
        let (uid, gid, fs_group) = identity(&pod.spec, &pod.main);
        let pid = pod.container.pid()?;
        ensure!(pid > 0, "{component} is not running");
        let st = proc_status(pid)?;
        let field = |k: &str| st.get(k).cloned().unwrap_or_default();
        let ids = |k: &str| -> Vec<i64> {
            field(k)
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        };
        ensure!(
            ids("Uid").iter().all(|u| *u == uid),
            "{component}: Uid {} (the chart says {uid})",
            field("Uid")
        );
        ensure!(
            ids("Gid").iter().all(|g| *g == gid),
            "{component}: Gid {} (the chart says {gid})",
            field("Gid")
        );
        if let Some(g) = fs_group {
            ensure!(
                ids("Groups").contains(&g),
                "{component}: fsGroup {g} not in Groups {}",
                field("Groups")
            );
        }
        for caps in ["CapEff", "CapPrm", "CapBnd"] {
            ensure!(
                field(caps).trim_start_matches('0').is_empty(),
                "{component}: {caps} is {} (the chart drops ALL)",
                field(caps)
            );
        }
        ensure!(
            field("NoNewPrivs") == "1",
            "{component}: NoNewPrivs is {}",
            field("NoNewPrivs")
        );
        // 2 = a seccomp filter (Docker's default profile, the RuntimeDefault of a kubelet).
        ensure!(
            field("Seccomp") == "2",
            "{component}: Seccomp is {}",
            field("Seccomp")
        );
        let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
        let root = mountinfo
            .lines()
            .find(|l| l.split(' ').nth(4) == Some("/"))
            .context("no root mount")?;
        let opts = root.split(' ').nth(5).unwrap_or("");
        ensure!(
            opts.split(',').any(|o| o == "ro"),
            "{component}: the root file system is mounted {opts}"
        );
    }
    Ok(())
}

fn every_container_answers_its_readiness_probe_from_the_chart(f: &Images) -> Result<()> {
    block_on(async {
        for (component, pod) in &f.pods {
            ensure!(
                probe(pod).await?,
                "{component} does not pass its readiness probe now"
            );
        }
        Ok(())
    })
}

fn the_init_container_waited_for_kafka_the_collector_and_zipkin_then_seeded_the_topics(
    f: &Images,
) -> Result<()> {
    let log = &f.init_log;
    // Progress while waiting (Kafka, the Collector, Zipkin), then the topics it created.
    for needle in [
        "journeyctl: kafka",
        "journeyctl: collector",
        "journeyctl: zipkin",
        "ready after",
        "+ messages: created",
        "+ messages.processed: created",
        "+ messages.dlq: created",
    ] {
        ensure!(
            log.contains(needle),
            "journeyctl init's log lacks {needle:?}:\n{log}"
        );
    }
    Ok(())
}

fn one_post_to_the_producer_container_becomes_one_complete_trace_in_the_zipkin_container(
    f: &Images,
) -> Result<()> {
    let producer = f.url("producer", 8080)?;
    let zipkin = ZipkinApi::new(f.url("zipkin", 9411)?);
    block_on(async {
        let answer = post(
            &format!("{producer}/messages"),
            Some("application/json"),
            br#"{"key":"images","payload":{"hello":"containers"}}"#.to_vec(),
            &[],
        )
        .await?;
        let trace = answer.trace_id()?;
        let spans = zipkin
            .wait_for_trace(&trace, TRACE_TIMEOUT, |spans| {
                has_spans(spans, &JOURNEY_SPANS)
            })
            .await?;
        let services: std::collections::BTreeSet<&str> =
            spans.iter().map(|s| s.service()).collect();
        for svc in ["producer", "relay", "sink"] {
            ensure!(services.contains(svc), "no {svc} span in {services:?}");
        }
        Ok(())
    })
}

/// The memory cgroup (v1) directory of a running process.
fn memory_cgroup(pid: u32) -> Result<PathBuf> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let path = cgroups
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let controllers = parts.nth(1)?;
            controllers
                .split(',')
                .any(|c| c == "memory")
                .then(|| parts.next())?
        })
        .with_context(|| format!("pid {pid} has no memory cgroup: {cgroups}"))?;
    Ok(PathBuf::from("/sys/fs/cgroup/memory").join(path.trim_start_matches('/')))
}

/// The chart's producer limits let no client push it over its memory limit: the worst requests
/// it accepts (batches of `MAX_BATCH_ITEMS` messages filling `MAX_BODY_BYTES`, and single
/// messages as large as Kafka takes), `MAX_CONCURRENT_REQUESTS` of them at once and more, in
/// rounds. Its peak memory (the container's cgroup) stays below the limit and it is never
/// OOM-killed.
fn the_producer_container_stays_within_its_memory_limit_under_the_largest_requests_allowed(
    f: &Images,
) -> Result<()> {
    let pod = f.pod("producer")?;
    let var = |name: &str| -> Result<usize> {
        seq(&pod.main["env"])
            .iter()
            .find(|e| s(&e["name"]) == name)
            .and_then(|e| s(&e["value"]).parse().ok())
            .with_context(|| format!("the chart sets no {name} for the producer"))
    };
    let (body, items, slots, record) = (
        var("MAX_BODY_BYTES")?,
        var("MAX_BATCH_ITEMS")?,
        var("MAX_CONCURRENT_REQUESTS")?,
        var("KAFKA_MESSAGE_MAX_BYTES")?,
    );
    let limit = quantity_bytes(s(&pod.main["resources"]["limits"]["memory"]))?;
    let cgroup = memory_cgroup(pod.container.pid()?)?;
    let read = |file: &str| -> Result<u64> {
        let path = cgroup.join(file);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        text.trim()
            .parse()
            .with_context(|| format!("{}: {text}", path.display()))
    };
    let before = read("memory.usage_in_bytes")?;
    // The peak from here on.
    std::fs::write(cgroup.join("memory.max_usage_in_bytes"), "0")?;
    // A batch: `items` messages whose JSON fills the body limit; a single message with a
    // payload just under the record limit (the rest is the key, headers and JSON quoting).
    let payload_len = body / items - 40;
    let batch: Vec<serde_json::Value> = (0..items)
        .map(|i| serde_json::json!({"key": format!("k{i}"), "payload": "x".repeat(payload_len)}))
        .collect();
    let batch = serde_json::to_vec(&batch)?;
    let single = serde_json::to_vec(&serde_json::json!({"payload": "y".repeat(record - 2048)}))?;
    ensure!(
        batch.len() <= body && single.len() <= body,
        "test bodies over MAX_BODY_BYTES"
    );
    let url = format!("{}/messages", f.url("producer", 8080)?);
    let mut answers: BTreeMap<u16, usize> = BTreeMap::new();
    block_on(async {
        for round in 0..3 {
            for (path, bytes) in [("/batch", &batch), ("", &single)] {
                let target = format!("{url}{path}");
                let requests = (0..slots + 4)
                    .map(|_| post(&target, Some("application/json"), bytes.clone(), &[]));
                for answer in futures::future::join_all(requests).await {
                    let answer = answer.with_context(|| format!("round {round}: {url}{path}"))?;
                    *answers.entry(answer.status).or_default() += 1;
                }
            }
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let peak = read("memory.max_usage_in_bytes")?;
    let oom_kills = std::fs::read_to_string(cgroup.join("memory.oom_control"))?
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0);
    say!(
        "producer under {} concurrent worst-case requests ({} KiB batches of {items}, {} KiB \
         messages) ×3 rounds: answers {answers:?}; memory {} MiB before, peak {} MiB of its \
         {} MiB limit ({:.0}%)",
        slots + 4,
        batch.len() / 1024,
        single.len() / 1024,
        before >> 20,
        peak >> 20,
        limit >> 20,
        100.0 * peak as f64 / limit as f64
    );
    pod.container.ensure_running()?;
    ensure!(
        oom_kills == 0,
        "the producer was OOM-killed {oom_kills} times"
    );
    ensure!(
        answers.keys().all(|s| [202, 503].contains(s)) && answers.contains_key(&202),
        "worst-case requests must be acked or refused as overloaded: {answers:?}"
    );
    // The cgroup's peak counts page cache too; the limit must still hold with room to spare.
    ensure!(
        peak < limit * 9 / 10,
        "peak {peak} bytes is within 10% of the {limit}-byte limit"
    );
    Ok(())
}

fn a_changed_service_rebuilds_only_its_own_image(f: &Images) -> Result<()> {
    let api = f.docker.api();
    let version = chart_app_version();
    let before: Vec<String> = JOURNEY_IMAGES
        .iter()
        .map(|j| api.image_id(&format!("journey/{j}:{version}")))
        .collect::<Result<_>>()?;
    let tree = tempfile::Builder::new().prefix("journey-tree-").tempdir()?;
    journey_tests::copy_worktree(tree.path())?;
    journey_tests::change_producer_start_line(tree.path(), "(rebuilt)")?;
    let tag = "rebuild-test";
    let started = Instant::now();
    let status = std::process::Command::new(tree.path().join("scripts/images.sh"))
        .arg("journey")
        .env("DOCKER_HOST", api.host())
        .env("DOCKER", api.client())
        .env("JOURNEY_TAG", tag)
        .status()?;
    ensure!(
        status.success(),
        "scripts/images.sh journey failed in the changed tree"
    );
    say!(
        "images: one changed line in the producer: the three images rebuilt in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    let after: Vec<String> = JOURNEY_IMAGES
        .iter()
        .map(|j| api.image_id(&format!("journey/{j}:{tag}")))
        .collect::<Result<_>>()?;
    for j in JOURNEY_IMAGES {
        api.run(&["image", "rm", &format!("journey/{j}:{tag}")])?;
    }
    ensure!(before[0] != after[0], "the producer image did not change");
    ensure!(
        before[1] == after[1] && before[2] == after[2],
        "consumer/journeyctl images changed: {before:?} -> {after:?}"
    );
    Ok(())
}

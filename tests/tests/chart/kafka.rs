//! Kafka.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use journey_tests::chart::{
    PodFacts, all, container, name_of, output, render_ci, resolve_env, text,
};
use journey_tests::process::{Managed, free_port, wait_until};
use journey_tests::runner::block_on;
use journey_tests::say;
use journey_tests::stack::{Kafka, READY_TIMEOUT, broker_count};
use journey_tests::tools::Tools;
use yaml_serde::Value;

use crate::Env;

/// Variables the image's KafkaDockerWrapper (Kafka 4.3.1) does not turn into properties.
const WRAPPER_EXCLUDED: [&str; 11] = [
    "KAFKA_VERSION",
    "KAFKA_HEAP_OPTS",
    "KAFKA_LOG4J_OPTS",
    "KAFKA_OPTS",
    "KAFKA_JMX_OPTS",
    "KAFKA_JVM_PERFORMANCE_OPTS",
    "KAFKA_GC_LOG_OPTS",
    "KAFKA_LOG4J_ROOT_LOGLEVEL",
    "KAFKA_LOG4J_LOGGERS",
    "KAFKA_TOOLS_LOG4J_LOGLEVEL",
    "KAFKA_JMX_HOSTNAME",
];

/// The apache/kafka image convention: strip `KAFKA_`, `___`→`-`, `__`→`_`, `_`→`.`, lower case.
fn env_to_properties(env: &[(String, String)]) -> BTreeMap<String, String> {
    env.iter()
        .filter(|(k, _)| k.starts_with("KAFKA_") && !WRAPPER_EXCLUDED.contains(&k.as_str()))
        .map(|(k, v)| {
            let key = k["KAFKA_".len()..]
                .to_lowercase()
                .replace('_', ".")
                .replace("...", "-")
                .replace("..", "_");
            (key, v.clone())
        })
        .collect()
}

/// The Kafka StatefulSet's rendered env for node `index`, with every in-cluster address moved
/// to 127.0.0.1 (a pod's own empty-host listener stays empty: all interfaces) on ports shared
/// by all nodes of one cluster, and the data directory moved into `dir`. Anything else stays
/// exactly as rendered, so what boots is the chart's configuration.
struct KafkaCluster {
    sts: String,
    replicas: usize,
    container: Value,
    ports: BTreeMap<(usize, u16), u16>,
    dir: PathBuf,
}

impl KafkaCluster {
    fn from(docs: &[Value], dir: &Path) -> Result<KafkaCluster> {
        let sts = all(docs, "StatefulSet")
            .into_iter()
            .next()
            .context("no Kafka StatefulSet rendered")?;
        let replicas = sts["spec"]["replicas"].as_u64().context("replicas")? as usize;
        let container = container(&sts["spec"]["template"]["spec"], "kafka")?.clone();
        Ok(KafkaCluster {
            sts: name_of(sts).to_string(),
            replicas,
            container,
            ports: BTreeMap::new(),
            dir: dir.to_path_buf(),
        })
    }

    fn port(&mut self, node: usize, port: u16) -> u16 {
        *self.ports.entry((node, port)).or_insert_with(free_port)
    }

    /// `host:port` → local address; the node is named by the host (`<sts>-<i>.…`), or is
    /// `own` for an empty host.
    fn local(&mut self, own: usize, addr: &str) -> Result<String> {
        let (host, port) = addr
            .rsplit_once(':')
            .with_context(|| format!("no port in {addr}"))?;
        let port: u16 = port.parse().with_context(|| format!("port of {addr}"))?;
        if host.is_empty() {
            return Ok(format!(":{}", self.port(own, port)));
        }
        let prefix = format!("{}-", self.sts);
        let node: usize = host
            .strip_prefix(&prefix)
            .and_then(|r| r.split('.').next())
            .and_then(|i| i.parse().ok())
            .with_context(|| format!("{addr} is not the address of a node of {}", self.sts))?;
        Ok(format!("127.0.0.1:{}", self.port(node, port)))
    }

    fn node_env(&mut self, i: usize) -> Result<Vec<(String, String)>> {
        let env = resolve_env(
            &self.container,
            &PodFacts {
                name: format!("{}-{i}", self.sts),
                index: i,
                ip: "127.0.0.1".into(),
            },
        )?;
        let mut out = Vec::new();
        for (k, v) in env {
            let local = match k.as_str() {
                "KAFKA_LISTENERS" | "KAFKA_ADVERTISED_LISTENERS" => v
                    .split(',')
                    .map(|l| {
                        let (proto, addr) = l
                            .split_once("://")
                            .with_context(|| format!("listener {l}"))?;
                        Ok(format!("{proto}://{}", self.local(i, addr)?))
                    })
                    .collect::<Result<Vec<_>>>()?
                    .join(","),
                "KAFKA_CONTROLLER_QUORUM_VOTERS" => v
                    .split(',')
                    .map(|voter| {
                        let (id, addr) = voter
                            .split_once('@')
                            .with_context(|| format!("voter {voter}"))?;
                        Ok(format!("{id}@{}", self.local(i, addr)?))
                    })
                    .collect::<Result<Vec<_>>>()?
                    .join(","),
                "KAFKA_LOG_DIRS" => self
                    .dir
                    .join(format!("node-{i}/data"))
                    .display()
                    .to_string(),
                _ if k.starts_with("KAFKA_") => {
                    ensure!(
                        !v.contains(&format!("{}-", self.sts))
                            && !v.contains("/var/lib/kafka")
                            && !v.contains("/opt/kafka"),
                        "{k}={v} holds an address or path this test does not localize"
                    );
                    v
                }
                _ => v,
            };
            out.push((k, local));
        }
        Ok(out)
    }

    /// Runs the image's own env→config step (`KafkaDockerWrapper setup`, from the Kafka jar) for
    /// node `i`: writes `<node>/config/server.properties` and formats the node's storage with
    /// the chart's CLUSTER_ID, as the container's start script does. Returns its properties.
    fn wrapper_setup(
        &mut self,
        tools: &Tools,
        i: usize,
    ) -> Result<(Env, BTreeMap<String, String>)> {
        let env = self.node_env(i)?;
        let node = self.dir.join(format!("node-{i}"));
        let (defaults, mounted, config) = (
            node.join("defaults"),
            node.join("mounted"),
            node.join("config"),
        );
        for d in [&defaults, &mounted, &config] {
            std::fs::create_dir_all(d)?;
        }
        let libs = tools.path("KAFKA_LIBS", "kafka")?;
        let log4j = journey_tests::stack::kafka_log4j2();
        let mut cmd = Command::new("java");
        cmd.env_clear()
            .envs(std::env::vars().filter(|(k, _)| k == "PATH" || k == "JAVA_HOME"))
            .envs(env.iter().cloned())
            .args([
                "-Xmx256m",
                &format!("-Dlog4j2.configurationFile={}", log4j.display()),
            ])
            .arg("-cp")
            .arg(format!("{}/*", libs.display()))
            .args([
                "kafka.docker.KafkaDockerWrapper",
                "setup",
                "--default-configs-dir",
            ])
            .arg(&defaults)
            .arg("--mounted-configs-dir")
            .arg(&mounted)
            .arg("--final-configs-dir")
            .arg(&config);
        let out = output(&mut cmd)?;
        ensure!(
            out.status.success(),
            "node {i}: KafkaDockerWrapper setup failed ({}):\n{}{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        let written = std::fs::read_to_string(config.join("server.properties"))?;
        let props = written
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok((env, props))
    }
}

pub(crate) fn the_kafka_env_becomes_the_same_properties_in_the_image_wrapper_and_by_the_convention(
    _: &(),
) -> Result<()> {
    let tools = Tools::load()?;
    let dir = tempfile::tempdir()?;
    for values in ["default", "three-broker"] {
        let docs = render_ci(values)?;
        let mut cluster = KafkaCluster::from(&docs, &dir.path().join(values))?;
        let (env, wrapper) = cluster.wrapper_setup(&tools, 0)?;
        let ours = env_to_properties(&env);
        ensure!(
            wrapper == ours,
            "ci/{values}: the image's wrapper wrote\n{wrapper:#?}\nbut the convention gives\n{ours:#?}"
        );
        for key in [
            "node.id",
            "process.roles",
            "controller.quorum.voters",
            "advertised.listeners",
            "log.dirs",
        ] {
            ensure!(
                wrapper.contains_key(key),
                "ci/{values}: no {key} in the broker config"
            );
        }
        ensure!(
            !wrapper.contains_key("heap.opts"),
            "ci/{values}: KAFKA_HEAP_OPTS leaked into the properties"
        );
        let formatted = std::fs::read_to_string(cluster.dir.join("node-0/data/meta.properties"))
            .with_context(|| format!("ci/{values}: the wrapper did not format the storage"))?;
        let id = env
            .iter()
            .find(|(k, _)| k == "CLUSTER_ID")
            .map(|(_, v)| v.clone())
            .context("no CLUSTER_ID")?;
        ensure!(
            formatted.contains(&format!("cluster.id={id}")),
            "ci/{values}: storage not formatted with the chart's cluster id {id}"
        );
    }
    Ok(())
}

pub(crate) fn the_rendered_kafka_settings_boot_a_real_single_node_kafka(_: &()) -> Result<()> {
    let tools = Tools::load()?;
    let dir = tempfile::tempdir()?;
    let docs = render_ci("default")?;
    let mut cluster = KafkaCluster::from(&docs, dir.path())?;
    ensure!(cluster.replicas == 1, "default values: one Kafka node");
    let env = cluster.node_env(0)?;
    let mut props = env_to_properties(&env);
    // start_with formats its own storage: give it a fresh directory.
    props.insert(
        "log.dirs".into(),
        dir.path().join("boot-data").display().to_string(),
    );
    say!("kafka (chart settings): {props:?}");
    block_on(async {
        let kafka = Kafka::start_with(&tools, &dir.path().join("boot"), props).await?;
        let bootstrap = kafka.bootstrap().to_string();
        let brokers = tokio::task::spawn_blocking(move || broker_count(&bootstrap)).await??;
        ensure!(brokers == 1, "metadata reports {brokers} brokers");
        Ok(())
    })
}

pub(crate) fn the_rendered_three_broker_settings_form_a_three_voter_quorum(_: &()) -> Result<()> {
    let tools = Tools::load()?;
    let dir = tempfile::tempdir()?;
    let docs = render_ci("three-broker")?;
    let mut cluster = KafkaCluster::from(&docs, dir.path())?;
    ensure!(cluster.replicas == 3, "three-broker values: 3 nodes");
    let libs = tools.path("KAFKA_LIBS", "kafka")?;
    let log4j = journey_tests::stack::kafka_log4j2();
    let mut nodes: Vec<Managed> = Vec::new();
    let mut bootstrap = String::new();
    for i in 0..3 {
        // The container's path: the image's wrapper writes the config and formats the storage
        // with the chart's cluster id, then the broker starts on that config.
        let (_, props) = cluster.wrapper_setup(&tools, i)?;
        if i == 0 {
            bootstrap = props["advertised.listeners"]
                .split_once("://")
                .map(|(_, a)| a.to_string())
                .context("advertised")?;
        }
        let mut cmd = Command::new("java");
        cmd.args([
            "-Xms192m",
            "-Xmx256m",
            "-XX:+UseG1GC",
            &format!("-Dlog4j2.configurationFile={}", log4j.display()),
        ])
        .arg("-cp")
        .arg(format!("{}/*", libs.display()))
        .arg("kafka.Kafka")
        .arg(
            cluster
                .dir
                .join(format!("node-{i}/config/server.properties")),
        );
        nodes.push(Managed::spawn(
            &format!("kafka-{i}"),
            cmd,
            &dir.path().join("logs"),
            Duration::from_secs(5),
        )?);
    }
    let result = block_on(async {
        wait_until("three-node kafka", READY_TIMEOUT, || {
            let early: Result<()> = nodes.iter_mut().try_for_each(Managed::ensure_running);
            let bootstrap = bootstrap.clone();
            async move {
                early?;
                let n = tokio::task::spawn_blocking(move || broker_count(&bootstrap)).await??;
                Ok(n == 3)
            }
        })
        .await
    });
    if result.is_err() {
        for n in &nodes {
            eprintln!("----- {} -----\n{}", n.name(), n.tail(40));
        }
    }
    result
}

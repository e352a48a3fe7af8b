//! The real local stack: Apache Kafka (KRaft, one combined node), the OpenTelemetry Collector
//! (with the chart's own config file) and Zipkin, each on free 127.0.0.1 ports in a fresh
//! temporary directory, each with a readiness check that means ready:
//! Kafka answers a metadata request, the Collector's health_check says so, Zipkin's `/health`
//! is UP.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::process::{Managed, free_port, wait_until};
use crate::tools::Tools;
use crate::{repo_root, say};

/// How long each component may take to become ready on a cold, busy 2-core machine.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The Collector config the chart ships; the local stack uses the same file.
pub fn collector_config() -> PathBuf {
    repo_root().join("charts/journey/files/collector.yaml")
}

// ---------------------------------------------------------------------------------------------

/// The committed log4j2 config every local broker runs with (from the tree, not the tool
/// cache: clones sharing one cache each use their own).
pub fn kafka_log4j2() -> PathBuf {
    repo_root().join("tools/kafka/log4j2.yaml")
}

/// A single-node Kafka (broker + controller) on 127.0.0.1.
#[derive(Debug)]
pub struct Kafka {
    proc: Managed,
    bootstrap: String,
    properties: BTreeMap<String, String>,
    dir: PathBuf,
}

/// The chart's `values.yaml`, parsed.
fn chart_values() -> Result<yaml_serde::Value> {
    let path = crate::chart::values_file();
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(yaml_serde::from_str(&text)?)
}

/// `kafka.maxMessageBytes` in the chart's values: the brokers' `message.max.bytes` and every
/// client's, from one place.
pub fn chart_max_message_bytes() -> Result<u64> {
    chart_values()?["kafka"]["maxMessageBytes"]
        .as_u64()
        .context("the chart's values have no kafka.maxMessageBytes")
}

/// The chart's Zipkin sizing (`zipkin.javaOpts`, `zipkin.memMaxSpans`), which the local Zipkin
/// runs with too: what the benchmark's soak proves is what a user deploys.
fn chart_zipkin_sizing() -> Result<(Vec<String>, u64)> {
    let values = chart_values()?;
    let zipkin = &values["zipkin"];
    let opts = zipkin["javaOpts"]
        .as_str()
        .context("the chart's values have no zipkin.javaOpts")?;
    let spans = zipkin["memMaxSpans"]
        .as_u64()
        .context("the chart's values have no zipkin.memMaxSpans")?;
    Ok((opts.split_whitespace().map(String::from).collect(), spans))
}

impl Kafka {
    /// The broker properties the harness uses, for `port`/`controller_port` and data dir.
    pub fn base_properties(
        port: u16,
        controller_port: u16,
        data: &Path,
    ) -> BTreeMap<String, String> {
        [
            ("process.roles", "broker,controller".to_string()),
            ("node.id", "1".into()),
            (
                "controller.quorum.voters",
                format!("1@127.0.0.1:{controller_port}"),
            ),
            (
                "listeners",
                format!("PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"),
            ),
            (
                "advertised.listeners",
                format!("PLAINTEXT://127.0.0.1:{port}"),
            ),
            ("inter.broker.listener.name", "PLAINTEXT".into()),
            ("controller.listener.names", "CONTROLLER".into()),
            (
                "listener.security.protocol.map",
                "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".into(),
            ),
            ("log.dirs", data.display().to_string()),
            ("num.partitions", "1".into()),
            ("offsets.topic.replication.factor", "1".into()),
            ("offsets.topic.num.partitions", "4".into()),
            ("transaction.state.log.replication.factor", "1".into()),
            ("transaction.state.log.min.isr", "1".into()),
            (
                "share.coordinator.state.topic.replication.factor",
                "1".into(),
            ),
            ("share.coordinator.state.topic.min.isr", "1".into()),
            ("group.initial.rebalance.delay.ms", "0".into()),
            // Topics come from the chart's topic list (seeded), never from a typo.
            ("auto.create.topics.enable", "false".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Formats storage and starts the broker with the harness's base properties and the
    /// chart's largest record (`kafka.maxMessageBytes`), which the services get too
    /// ([`crate::services::base_env`]).
    pub async fn start(tools: &Tools, dir: &Path) -> Result<Kafka> {
        let port = free_port();
        let ctl = free_port();
        let mut props = Self::base_properties(port, ctl, &dir.join("kafka-data"));
        props.insert(
            "message.max.bytes".into(),
            chart_max_message_bytes()?.to_string(),
        );
        Self::start_with(tools, dir, props).await
    }

    /// Formats storage and starts a broker with exactly `props` (which must contain
    /// `advertised.listeners` with a PLAINTEXT listener on 127.0.0.1 and `log.dirs`).
    pub async fn start_with(
        tools: &Tools,
        dir: &Path,
        props: BTreeMap<String, String>,
    ) -> Result<Kafka> {
        Self::format(tools, dir, &props)?;
        let proc = Self::spawn(tools, dir)?;
        let bootstrap = props
            .get("advertised.listeners")
            .and_then(|l| {
                l.split(',')
                    .find_map(|x| x.split_once("://").map(|(_, a)| a.to_string()))
            })
            .context("kafka: advertised.listeners has no address")?;
        let mut kafka = Kafka {
            proc,
            bootstrap,
            properties: props,
            dir: dir.to_path_buf(),
        };
        kafka.wait_ready().await?;
        Ok(kafka)
    }

    /// `java <main>` with the broker's JVM options and classpath.
    fn java(tools: &Tools, main: &str) -> Result<Command> {
        let libs = tools.path("KAFKA_LIBS", "kafka")?;
        let mut c = Command::new("java");
        c.args([
            "-Xms256m",
            "-Xmx512m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
        ])
        .arg("-Djava.awt.headless=true")
        .arg(format!(
            "-Dlog4j2.configurationFile={}",
            kafka_log4j2().display()
        ))
        .args(["-cp", &format!("{}/*", libs.display()), main]);
        Ok(c)
    }

    /// Writes `<dir>/server.properties` and formats the storage with a fresh cluster id
    /// (static voters: no --standalone).
    fn format(tools: &Tools, dir: &Path, props: &BTreeMap<String, String>) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        let file = dir.join("server.properties");
        let text: String = props.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        std::fs::write(&file, text)?;
        let mut format = Self::java(tools, "kafka.tools.StorageTool")?;
        format
            .args(["format", "-t", &cluster_id(), "-c"])
            .arg(&file);
        let out = format
            .output()
            .context("kafka: running the storage formatter (java)")?;
        if !out.status.success() {
            bail!(
                "kafka: storage format failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Starts the broker of `<dir>/server.properties` (formatted already).
    fn spawn(tools: &Tools, dir: &Path) -> Result<Managed> {
        let mut broker = Self::java(tools, "kafka.Kafka")?;
        broker.arg(dir.join("server.properties"));
        Managed::spawn("kafka", broker, &dir.join("logs"), Duration::ZERO)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let bootstrap = self.bootstrap.clone();
        let proc = &mut self.proc;
        wait_until("kafka", READY_TIMEOUT, || {
            let early = proc.ensure_running();
            let bootstrap = bootstrap.clone();
            async move {
                early?;
                tokio::task::spawn_blocking(move || broker_count(&bootstrap))
                    .await?
                    .map(|n| n >= 1)
            }
        })
        .await
    }

    /// `host:port` of the PLAINTEXT listener.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    pub fn properties(&self) -> &BTreeMap<String, String> {
        &self.properties
    }

    pub fn process(&self) -> &Managed {
        &self.proc
    }

    /// Starts the broker again on its data (no format), its ports and its log file, and waits
    /// until it is ready; after [`Stack::kill`], as a restarted pod would.
    async fn start_again(&mut self, tools: &Tools) -> Result<()> {
        self.proc = Self::spawn(tools, &self.dir)?;
        self.wait_ready().await
    }
}

/// Number of brokers a metadata request reports (blocking; a few seconds at most).
pub fn broker_count(bootstrap: &str) -> Result<usize> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("log_level", "0")
        .create()
        .context("creating a metadata client")?;
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(2))
        .context("metadata request")?;
    Ok(md.brokers().len())
}

/// A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (22 characters),
/// never starting with `-` (the storage tool would read it as an option).
fn cluster_id() -> String {
    loop {
        let id = random_base64_id();
        if !id.starts_with('-') {
            return id;
        }
    }
}

fn random_base64_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes: [u8; 16] = rand::random();
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut out = String::with_capacity(22);
    for b in bytes {
        bits = (bits << 8) | u32::from(b);
        nbits += 8;
        while nbits >= 6 {
            nbits -= 6;
            out.push(ALPHABET[((bits >> nbits) & 63) as usize] as char);
        }
    }
    if nbits > 0 {
        out.push(ALPHABET[((bits << (6 - nbits)) & 63) as usize] as char);
    }
    out
}

// ---------------------------------------------------------------------------------------------

/// Zipkin with in-memory storage.
#[derive(Debug)]
pub struct Zipkin {
    proc: Managed,
    port: u16,
    dir: PathBuf,
}

impl Zipkin {
    fn spawn(tools: &Tools, dir: &Path, port: u16) -> Result<Zipkin> {
        let jar = tools.path("ZIPKIN_JAR", "zipkin")?;
        let (java_opts, max_spans) = chart_zipkin_sizing()?;
        let mut cmd = Command::new("java");
        // The chart's heap; it exits on OOM instead of hanging in GC with /health unanswered.
        cmd.args(&java_opts)
            // Loopback only, like the rest of the local stack (QUERY_PORT alone binds every
            // interface; Armeria's port list replaces it whole).
            .arg("-Darmeria.ports[0].ip=127.0.0.1")
            .arg(format!("-Darmeria.ports[0].port={port}"))
            .arg("-Darmeria.ports[0].protocols=http")
            .arg("-jar")
            .arg(jar)
            .env("QUERY_PORT", port.to_string())
            .env("STORAGE_TYPE", "mem")
            .env("MEM_MAX_SPANS", max_spans.to_string())
            .env("SELF_TRACING_ENABLED", "false")
            // A KAFKA_BOOTSTRAP_SERVERS in the environment would start Zipkin's Kafka collector.
            .env_remove("KAFKA_BOOTSTRAP_SERVERS");
        let proc = Managed::spawn("zipkin", cmd, &dir.join("logs"), Duration::ZERO)?;
        Ok(Zipkin {
            proc,
            port,
            dir: dir.to_path_buf(),
        })
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let client = journeyctl::zipkin::ZipkinClient::new(self.url())?;
        let proc = &mut self.proc;
        wait_until("zipkin", READY_TIMEOUT, || {
            let early = proc.ensure_running();
            let health = client.healthy();
            async move {
                early?;
                Ok(health.await?)
            }
        })
        .await
    }

    /// Starts Zipkin again on its port (empty: its storage is in memory) and waits until it
    /// is ready.
    async fn start_again(&mut self, tools: &Tools) -> Result<()> {
        let again = Self::spawn(tools, &self.dir, self.port)?;
        self.proc = again.proc;
        self.wait_ready().await
    }

    /// Base URL, e.g. `http://127.0.0.1:9411`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn process(&self) -> &Managed {
        &self.proc
    }
}

// ---------------------------------------------------------------------------------------------

/// The OpenTelemetry Collector, configured by the chart's `files/collector.yaml`.
#[derive(Debug)]
pub struct Collector {
    proc: Managed,
    grpc_port: u16,
    http_port: u16,
    health_port: u16,
    metrics_port: u16,
    zipkin_url: String,
    dir: PathBuf,
}

impl Collector {
    /// The environment the Collector config expects (see charts/journey/files/collector.yaml).
    pub fn env(
        grpc: u16,
        http: u16,
        health: u16,
        metrics: u16,
        zipkin_url: &str,
    ) -> BTreeMap<String, String> {
        [
            ("OTLP_GRPC_ENDPOINT", format!("127.0.0.1:{grpc}")),
            ("OTLP_HTTP_ENDPOINT", format!("127.0.0.1:{http}")),
            ("HEALTH_CHECK_ENDPOINT", format!("127.0.0.1:{health}")),
            ("COLLECTOR_METRICS_HOST", "127.0.0.1".to_string()),
            ("COLLECTOR_METRICS_PORT", metrics.to_string()),
            ("ZIPKIN_ENDPOINT", format!("{zipkin_url}/api/v2/spans")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn spawn(tools: &Tools, dir: &Path, zipkin_url: &str) -> Result<Collector> {
        let ports = [free_port(), free_port(), free_port(), free_port()];
        let proc = Self::run(tools, dir, ports, zipkin_url)?;
        let [grpc_port, http_port, health_port, metrics_port] = ports;
        Ok(Collector {
            proc,
            grpc_port,
            http_port,
            health_port,
            metrics_port,
            zipkin_url: zipkin_url.to_string(),
            dir: dir.to_path_buf(),
        })
    }

    /// Starts the Collector on `[grpc, http, health, metrics]` ports.
    fn run(tools: &Tools, dir: &Path, ports: [u16; 4], zipkin_url: &str) -> Result<Managed> {
        let bin = tools.path("OTELCOL", "collector")?;
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config={}", collector_config().display()));
        let [grpc, http, health, metrics] = ports;
        for (k, v) in Self::env(grpc, http, health, metrics, zipkin_url) {
            cmd.env(k, v);
        }
        Managed::spawn("collector", cmd, &dir.join("logs"), Duration::from_secs(2))
    }

    /// Starts the Collector again on its ports and waits until it is ready.
    async fn start_again(&mut self, tools: &Tools) -> Result<()> {
        let ports = [
            self.grpc_port,
            self.http_port,
            self.health_port,
            self.metrics_port,
        ];
        self.proc = Self::run(tools, &self.dir, ports, &self.zipkin_url)?;
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let url = format!("http://127.0.0.1:{}/", self.health_port);
        let http = reqwest::Client::new();
        let proc = &mut self.proc;
        wait_until("collector", READY_TIMEOUT, || {
            let early = proc.ensure_running();
            let req = http.get(&url).timeout(Duration::from_secs(2)).send();
            async move {
                early?;
                Ok(req.await?.status().is_success())
            }
        })
        .await
    }

    /// OTLP/gRPC endpoint URL for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn otlp_grpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// OTLP/HTTP base URL (the SDK appends `/v1/traces`).
    pub fn otlp_http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The Collector's own metrics, in Prometheus format.
    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.metrics_port)
    }

    /// The health_check extension's URL (what journeyctl's `COLLECTOR_HEALTH_URL` points at).
    pub fn health_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.health_port)
    }

    pub fn process(&self) -> &Managed {
        &self.proc
    }
}

// ---------------------------------------------------------------------------------------------

/// One component of the [`Stack`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Kafka,
    Collector,
    Zipkin,
}

/// Kafka + Collector + Zipkin, started together; everything stops when this is dropped.
#[derive(Debug)]
pub struct Stack {
    pub kafka: Kafka,
    pub collector: Collector,
    pub zipkin: Zipkin,
    // Dropped last: the processes above are gone before their files are removed.
    dir: TempDirOrKept,
}

impl Stack {
    /// Starts the three components in parallel and waits until each is ready.
    pub async fn start() -> Result<Stack> {
        let started = std::time::Instant::now();
        let tools = Tools::load()?;
        let dir = TempDirOrKept::with_prefix("journey-stack-")?;
        say!(
            "stack: starting Kafka, the Collector and Zipkin in {}",
            dir.path().display()
        );
        let zipkin_port = free_port();
        let mut zipkin = Zipkin::spawn(&tools, dir.path(), zipkin_port)?;
        let mut collector = Collector::spawn(&tools, dir.path(), &zipkin.url())?;
        let kafka = Kafka::start(&tools, dir.path());
        let (kafka, z, c) = tokio::join!(kafka, zipkin.wait_ready(), collector.wait_ready());
        let kafka = kafka?;
        z?;
        c?;
        say!(
            "stack: ready in {:.1}s (kafka {}, zipkin {}, collector {})",
            started.elapsed().as_secs_f64(),
            kafka.bootstrap(),
            zipkin.url(),
            collector.otlp_grpc_url()
        );
        Ok(Stack {
            kafka,
            collector,
            zipkin,
            dir,
        })
    }

    /// The temporary directory of this stack (component logs are in `logs/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    /// Kills `component` with SIGKILL (no clean shutdown); its data, ports and log file stay
    /// for [`Stack::start_again`].
    pub fn kill(&mut self, component: Component) {
        say!("stack: killing {component:?} (SIGKILL)");
        match component {
            Component::Kafka => self.kafka.proc.kill(),
            Component::Collector => self.collector.proc.kill(),
            Component::Zipkin => self.zipkin.proc.kill(),
        }
    }

    /// Starts a killed `component` again, as its restarted pod would be: same ports, same
    /// data (Kafka's log dirs; Zipkin's storage is in memory, so it starts empty), the same
    /// log file; waits until it is ready.
    pub async fn start_again(&mut self, component: Component) -> Result<()> {
        say!("stack: starting {component:?} again");
        let tools = Tools::load()?;
        match component {
            Component::Kafka => self.kafka.start_again(&tools).await,
            Component::Collector => self.collector.start_again(&tools).await,
            Component::Zipkin => self.zipkin.start_again(&tools).await,
        }
    }

    /// PIDs of the infrastructure processes.
    pub fn pids(&self) -> Vec<u32> {
        vec![
            self.kafka.process().pid(),
            self.collector.process().pid(),
            self.zipkin.process().pid(),
        ]
    }
}

/// A temp dir that is removed on drop unless `JOURNEY_KEEP_TMP=1` (then it is kept and named),
/// for every fixture of the harness (the stack, the control plane).
#[derive(Debug)]
pub(crate) struct TempDirOrKept {
    // Held only to be removed on drop; `None` when kept.
    _dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl TempDirOrKept {
    /// A new directory under the system temp dir, its name starting with `prefix`.
    pub(crate) fn with_prefix(prefix: &str) -> Result<Self> {
        let t = tempfile::Builder::new().prefix(prefix).tempdir()?;
        let path = t.path().to_path_buf();
        if std::env::var_os("JOURNEY_KEEP_TMP").is_some_and(|v| v != "0") {
            say!("keeping {} (JOURNEY_KEEP_TMP)", path.display());
            let _ = t.keep();
            return Ok(Self { _dir: None, path });
        }
        Ok(Self {
            _dir: Some(t),
            path,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_are_22_url_safe_characters_and_differ() {
        let a = cluster_id();
        let b = cluster_id();
        assert_eq!(a.len(), 22);
        assert!((0..500).all(|_| !cluster_id().starts_with('-')));
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(a, b);
    }
}

//! The command line: `journeyctl {init,wait,seed,verify,journey,load}`.

mod values;

use std::io::IsTerminal as _;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use journey_messaging::KafkaArgs;
use serde::Serialize;

use crate::topics::{TopicSpec, TopicsError, load_topics_file, validate_all};
use crate::verify::{HopSpec, default_hops};
use crate::wait::{Target, WaitPlan};
use crate::zipkin::TraceId;
pub use values::{ValueError, parse_duration, parse_json, positive_duration, positive_rate};

pub const EXIT_CODES: &str = "\
Exit codes:
  0  success (verify: PASS)
  1  verify: FAIL; load: some messages failed; journey: trace not found
  2  bad usage or configuration (flags, environment, topics file, malformed trace id)
  3  wait: timed out (the message names what was not ready)
  4  the Kubernetes API refused access (RBAC: check the Role)
  5  a dependency could not be reached (Kubernetes API, Zipkin, the producer, Kafka)
  6  seed: Kafka refused a topic change

A failure prints one report on stderr: what failed and why, then what to do.";

/// journeyctl: wait for the Journey stack, seed its Kafka topics, verify and show a message's
/// journey through Kafka, and generate load.
#[derive(Debug, Parser, Serialize)]
#[command(name = "journeyctl", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// Print the resolved configuration and accepted environment variables as JSON, then exit 0.
    #[arg(long, global = true)]
    #[serde(skip)]
    pub print_config: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Command {
    /// `wait`, then `seed`: the chart's init container.
    Init(InitArgs),
    /// Wait until workloads are Ready, Kafka lists the expected brokers, and the Collector
    /// and Zipkin are healthy; one global timeout.
    Wait(WaitArgs),
    /// Create missing topics, grow partitions, update configs (never shrinks); prints the diff.
    Seed(SeedArgs),
    /// POST a message to the producer and check its journey in Zipkin; prints the tree and
    /// PASS/FAIL.
    Verify(VerifyArgs),
    /// Show a trace as a journey: tree, timeline, per-hop queue time, total latency.
    Journey(JourneyArgs),
    /// Drive the producer at a steady rate; prints sent/acked/errors and latency percentiles.
    Load(LoadArgs),
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Init(_) => "init",
            Command::Wait(_) => "wait",
            Command::Seed(_) => "seed",
            Command::Verify(_) => "verify",
            Command::Journey(_) => "journey",
            Command::Load(_) => "load",
        }
    }
}

fn ser_opt_duration<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => journey_messaging::serialize_duration(d, s),
        None => s.serialize_none(),
    }
}

/// What `wait` waits for.
#[derive(Debug, Clone, Args, Serialize)]
pub struct WaitTargets {
    /// Workloads to wait for, comma-separated: `statefulset/NAME`, `deployment/NAME`, or
    /// `KIND[SELECTOR]` with a `kubectl -l` selector, e.g.
    /// `deployment[app.kubernetes.io/component=zipkin]` (commas inside [...] are the selector's).
    #[arg(long = "workloads", env = "WAIT_WORKLOADS", value_parser = parse_targets_arg, default_value = "")]
    pub workloads: Workloads,
    /// Namespace of the workloads. Default: the pod's service-account namespace, else the
    /// kubeconfig context's namespace.
    #[arg(long, short = 'n', env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
    /// Brokers Kafka's metadata must list (only checked when Kafka is configured).
    #[arg(
        long = "expected-brokers",
        env = "KAFKA_EXPECTED_BROKERS",
        default_value_t = 1
    )]
    pub expected_brokers: usize,
    /// The Collector's health_check URL, e.g. `http://journey-collector:13133/`.
    #[arg(long = "collector-health-url", env = "COLLECTOR_HEALTH_URL")]
    pub collector_health_url: Option<String>,
    /// Zipkin's base URL (its `/health` must say UP), e.g. `http://journey-zipkin:9411`.
    #[arg(long = "zipkin-url", env = "ZIPKIN_URL")]
    pub zipkin_url: Option<String>,
    /// One overall timeout (humantime: `90s`, `5m`).
    #[arg(long, env = "WAIT_TIMEOUT", value_parser = parse_duration, default_value = "5m")]
    #[serde(serialize_with = "journey_messaging::serialize_duration")]
    pub timeout: Duration,
}

/// The workloads of one comma list (a newtype: clap would take a `Vec` as repeated values).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workloads(pub Vec<Target>);

impl std::ops::Deref for Workloads {
    type Target = Vec<Target>;
    fn deref(&self) -> &Vec<Target> {
        &self.0
    }
}

impl Serialize for Workloads {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(ToString::to_string))
    }
}

fn parse_targets_arg(s: &str) -> Result<Workloads, crate::wait::TargetError> {
    crate::wait::parse_targets(s).map(Workloads)
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct WaitArgs {
    #[command(flatten)]
    pub targets: WaitTargets,
    /// Kafka connection (optional for `wait`: without KAFKA_BOOTSTRAP_SERVERS the Kafka check
    /// is skipped; see [`command`]).
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

/// The clap command, with `wait`'s Kafka bootstrap servers made optional (empty = skip the
/// Kafka check). Parse with [`parse`] / [`try_parse_from`], not `Cli::parse`.
pub fn command() -> clap::Command {
    use clap::CommandFactory as _;
    Cli::command().mut_subcommand("wait", |c| {
        c.mut_arg("bootstrap_servers", |a| a.required(false).default_value(""))
    })
}

pub fn try_parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::FromArgMatches as _;
    let mut matches = command().try_get_matches_from(args)?;
    Cli::from_arg_matches_mut(&mut matches)
}

/// Parses the process arguments, exiting with clap's message (code 2) on bad usage.
pub fn parse() -> Cli {
    try_parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// Where the topics come from.
#[derive(Debug, Clone, Args, Serialize)]
pub struct TopicArgs {
    /// A YAML file whose `topics:` list has the schema of the chart's values
    /// (`name`, `partitions`, `replicationFactor`, `configs`).
    #[arg(long = "topics-file", env = "TOPICS_FILE")]
    pub topics_file: Option<PathBuf>,
    /// Topics given inline (added to the file's), `;`-separated
    /// `NAME:PARTITIONS[:RF][:key=value,...]`, e.g. `orders:6:3:retention.ms=86400000`.
    #[arg(long = "topic", env = "TOPICS", value_delimiter = ';')]
    pub topics: Vec<String>,
    /// Only print what would change.
    #[arg(long = "dry-run", env = "SEED_DRY_RUN")]
    pub dry_run: bool,
}

impl TopicArgs {
    pub fn resolve(&self) -> Result<Vec<TopicSpec>, TopicsError> {
        let mut out = match &self.topics_file {
            Some(p) => load_topics_file(p)?,
            None => Vec::new(),
        };
        for t in self.topics.iter().filter(|t| !t.trim().is_empty()) {
            out.push(TopicSpec::parse_compact(t.trim())?);
        }
        validate_all(&out)?;
        Ok(out)
    }
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct SeedArgs {
    #[command(flatten)]
    pub topics: TopicArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct InitArgs {
    #[command(flatten)]
    pub targets: WaitTargets,
    #[command(flatten)]
    pub topics: TopicArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// After the first seeding, stay up and seed again every DURATION (e.g. `1m`) until SIGTERM,
    /// printing only what changed: the Kafka pod's sidecar, so the topics come back whenever
    /// Kafka starts on empty storage.
    #[arg(long = "keep-seeding", env = "KEEP_SEEDING", value_parser = positive_duration)]
    #[serde(serialize_with = "ser_opt_duration")]
    pub keep_seeding: Option<Duration>,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct VerifyArgs {
    /// The producer's base URL, e.g. `http://journey-producer:8080`.
    #[arg(long = "producer-url", env = "PRODUCER_URL")]
    pub producer_url: String,
    /// Zipkin's base URL.
    #[arg(long = "zipkin-url", env = "ZIPKIN_URL")]
    pub zipkin_url: String,
    /// Services the message must pass, in order. Default hops: the first SERVER+PRODUCER, the
    /// middle ones CONSUMER+PRODUCER, the last CONSUMER, each below the previous.
    #[arg(
        long = "expect-services",
        env = "EXPECT_SERVICES",
        value_delimiter = ',',
        default_value = "producer,relay,sink"
    )]
    pub expect_services: Vec<String>,
    /// Explicit hop chain instead of the default, `SERVICE:KIND[:NAME]`, comma-separated or
    /// repeated, e.g. `producer:SERVER:post /messages,relay:CONSUMER:process messages`.
    #[arg(long = "expect-hop", env = "EXPECT_HOPS", value_delimiter = ',')]
    pub expect_hops: Vec<HopSpec>,
    /// How long to wait for every hop to reach Zipkin.
    #[arg(long, env = "VERIFY_TIMEOUT", value_parser = parse_duration, default_value = "60s")]
    #[serde(serialize_with = "journey_messaging::serialize_duration")]
    pub timeout: Duration,
    /// The message body's payload (JSON); default: a small object naming journeyctl.
    #[arg(long, value_parser = parse_json)]
    pub payload: Option<serde_json::Value>,
    #[command(flatten)]
    pub links: LinkArgs,
}

/// Following span links into the traces consumers in trace mode `link` start.
#[derive(Debug, Clone, Args, Serialize)]
pub struct LinkArgs {
    /// Follow span links forward: add the traces whose spans link (`otlp.link.N` tags) to a
    /// span of the journey, recursively. `--follow-links=false` looks at the one trace only.
    #[arg(
        long = "follow-links",
        env = "FOLLOW_LINKS",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub follow_links: bool,
    /// Links followed one after the other (relay, then sink: 2).
    #[arg(long = "link-depth", env = "LINK_DEPTH", default_value_t = 5)]
    pub link_depth: usize,
    /// Linked traces added at most.
    #[arg(
        long = "max-linked-traces",
        env = "MAX_LINKED_TRACES",
        default_value_t = 20
    )]
    pub max_linked_traces: usize,
    /// How long after the trace's start linked traces are looked for.
    #[arg(long = "link-window", env = "LINK_WINDOW", value_parser = parse_duration, default_value = "10m")]
    #[serde(serialize_with = "journey_messaging::serialize_duration")]
    pub link_window: Duration,
}

impl LinkArgs {
    /// The limits, or `None` when links are not followed.
    pub fn limits(&self) -> Option<crate::links::LinkLimits> {
        self.follow_links.then(|| crate::links::LinkLimits {
            max_depth: self.link_depth,
            max_traces: self.max_linked_traces,
            window: self.link_window,
            ..crate::links::LinkLimits::default()
        })
    }
}

impl VerifyArgs {
    pub fn hops(&self) -> Vec<HopSpec> {
        if self.expect_hops.is_empty() {
            default_hops(&self.expect_services)
        } else {
            self.expect_hops.clone()
        }
    }
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct JourneyArgs {
    /// The trace id (16 or 32 hex digits).
    #[arg(required_unless_present = "last", conflicts_with = "last")]
    pub trace_id: Option<TraceId>,
    /// Show the most recent trace of `--service`.
    #[arg(long)]
    pub last: bool,
    /// Service whose latest trace `--last` shows.
    #[arg(long, default_value = "producer")]
    pub service: String,
    /// How far back `--last` looks.
    #[arg(long, value_parser = parse_duration, default_value = "1h")]
    #[serde(serialize_with = "journey_messaging::serialize_duration")]
    pub lookback: Duration,
    /// Zipkin's base URL.
    #[arg(long = "zipkin-url", env = "ZIPKIN_URL")]
    pub zipkin_url: String,
    /// Print the trace and its hops as JSON instead.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub links: LinkArgs,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct LoadArgs {
    /// The producer's base URL.
    #[arg(long = "producer-url", env = "PRODUCER_URL")]
    pub producer_url: String,
    /// Messages per second (above zero; fractions allowed, e.g. 0.5).
    #[arg(long, value_parser = positive_rate, default_value = "10")]
    pub rate: f64,
    /// How long to send (humantime, above zero).
    #[arg(long, value_parser = positive_duration, default_value = "10s")]
    #[serde(serialize_with = "journey_messaging::serialize_duration")]
    pub duration: Duration,
    /// At most this many requests in flight (at least 1).
    #[arg(long, default_value = "16")]
    pub concurrency: NonZeroUsize,
    /// Send this many messages per request to `/messages/batch` (the rate stays in messages
    /// per second); unset: one message per `POST /messages`.
    #[arg(long)]
    pub batch: Option<NonZeroUsize>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The namespace `wait` uses: the flag/env, else the in-cluster service-account namespace
/// file, else the kubeconfig's (both through `kube::Config::infer`).
pub fn namespace_or_default(explicit: Option<&str>, inferred: &str) -> String {
    explicit
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or(inferred)
        .to_string()
}

/// Builds the wait plan; `kafka` is the optional Kafka connection.
pub fn wait_plan(t: &WaitTargets, namespace: String, kafka: Option<&KafkaArgs>) -> WaitPlan {
    WaitPlan {
        namespace,
        targets: t.workloads.0.clone(),
        kafka: kafka
            .filter(|k| !k.bootstrap_servers.trim().is_empty())
            .map(|k| k.client_config("journeyctl")),
        expected_brokers: t.expected_brokers,
        collector_health_url: t
            .collector_health_url
            .clone()
            .filter(|s| !s.trim().is_empty()),
        zipkin_url: t.zipkin_url.clone().filter(|s| !s.trim().is_empty()),
        timeout: t.timeout,
    }
}

/// Colour only when stdout is a terminal and NO_COLOR is unset.
pub fn use_color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

#[cfg(test)]
mod tests;

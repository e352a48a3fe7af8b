//! `make bench`: the throughput of the whole stack on this machine, side by side in one run,
//! written to `docs/benchmarks.md` (not part of `make test`: it measures, it does not judge).
//!
//! On the local stack (Kafka, the Collector, Zipkin as the tests run them) with release
//! builds of the services, in this order, each step printing what it runs:
//! 1. Kafka's own ProducerPerformance: the ceiling ([`kafka`]);
//! 2. the producer at full speed, tracing on and off, single messages and batches ([`ingest`]);
//! 3. the producer at fixed rates, tracing on and off: latency vs rate, drawn ([`plot`]);
//! 4. relay + sink draining a backlog at `PROCESS_DELAY_MS` 0 and 20, both orderings ([`flow`]);
//! 5. the whole journey at fixed rates: end-to-end latency and completeness from the traces;
//! 6. the whole journey at the producer's full speed: does the lag come back to 0;
//! 7. the soak: a steady rate for minutes, the tracing back end sampled ([`journey`], [`backend`]).

pub mod backend;
pub mod flow;
pub mod ingest;
pub mod journey;
pub mod kafka;
pub mod plot;
pub mod proc;
pub mod report;

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use procfs::Current as _;

use self::ingest::INGEST_TOPIC;
use self::report::Report;
use crate::say;
use crate::stack::Stack;
use crate::tools::Tools;

/// What `journey-bench` runs, and for how long.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "journey-bench",
    about = "Benchmarks the local stack; writes docs/benchmarks.md"
)]
pub struct Options {
    /// The report (the latency chart is written next to it).
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub out: PathBuf,
    /// How long each full-speed and fixed-rate run lasts.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15s")]
    pub run: Duration,
    /// How long the whole journey runs at the producer's full speed.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub saturated: Duration,
    /// How long the soak runs (0s: no soak).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    pub soak: Duration,
    /// The soak's rate, messages per second.
    #[arg(long, default_value_t = 500.0)]
    pub soak_rate: f64,
    /// Only these steps (1–7, comma-separated); the report has their sections only.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 3, 4, 5, 6, 7])]
    pub steps: Vec<u32>,
}

/// Kafka's ceiling: records of the size of the load's message values.
const CEILING_TOPIC: &str = "bench.ceiling";
const CEILING_RECORDS: u64 = 300_000;
const CEILING_RECORD_BYTES: u32 = 64;

/// Fixed rates of step 3 (messages per second).
const RATES: [f64; 6] = [250.0, 500.0, 1000.0, 2000.0, 3000.0, 4000.0];

/// Runs every step; the report of what was measured.
pub async fn run(opts: &Options) -> Result<Report> {
    let started = Instant::now();
    let stack = Stack::start().await?;
    let mut report = Report {
        setup: setup()?,
        ..Report::default()
    };
    let idle = components(&stack)?;
    kafka::create_topics(&stack, &[INGEST_TOPIC, CEILING_TOPIC]).await?;
    let step = |n: u32, what: &str| {
        let run = opts.steps.contains(&n);
        say!(
            "bench [{n}/7] {what}{} ({:.0} s so far)",
            if run { "" } else { ": skipped" },
            started.elapsed().as_secs_f64()
        );
        run
    };

    if step(1, "Kafka's own ProducerPerformance: the ceiling") {
        report.ceiling = Some(kafka::ceiling(
            &stack,
            CEILING_TOPIC,
            CEILING_RECORDS,
            CEILING_RECORD_BYTES,
        )?);
    }

    if step(2, "the producer at full speed") {
        let batch = NonZeroUsize::new(100);
        for (tracing, batch) in [(true, None), (false, None), (true, batch), (false, batch)] {
            report
                .ingest
                .push(ingest::ingest(&stack, tracing, batch, opts.run).await?);
        }
    }

    if step(3, "the producer at fixed rates") {
        let per_rate = opts.run.min(Duration::from_secs(10));
        for tracing in [true, false] {
            let rows = ingest::latency(&stack, tracing, &RATES, per_rate).await?;
            report.latency.extend(rows);
        }
        let chart = "benchmarks-latency.svg";
        let chart_path = opts.out.with_file_name(chart);
        if let Some(dir) = chart_path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        plot::latency_vs_rate(&report.latency, &chart_path)?;
        report.chart = Some(chart.to_string());
    }
    if opts.steps.iter().any(|s| [2, 3].contains(s)) {
        // The Collector's batches of the last runs leave within a second.
        tokio::time::sleep(Duration::from_secs(2)).await;
        report.backend_after_ingest = Some(backend::Sample::take(&stack).await?);
    }

    let drains = if step(4, "relay and sink draining a backlog") {
        &[
            (0, "partition", 30_000),
            (0, "key", 30_000),
            (20, "partition", 1_500),
            (20, "key", 20_000),
        ][..]
    } else {
        &[]
    };
    for &(delay, ordering, records) in drains {
        let tag = format!("drain-{delay}-{ordering}");
        let pipeline = flow::Pipeline::new(&tag, delay, ordering);
        report
            .drains
            .push(flow::drain(&stack, &pipeline, records).await?);
    }

    if step(
        5,
        "the whole journey at fixed rates, read back from the traces",
    ) {
        // 2000 and 5000 journeys: all of them still in Zipkin's memory when read back.
        for (rate, secs) in [(100.0, 20), (500.0, 10)] {
            let row = journey::end_to_end(&stack, rate, 20, Duration::from_secs(secs)).await?;
            report.end_to_end.push(row);
        }
    }

    if step(6, "the whole journey at the producer's full speed") {
        report.saturated = Some(flow::saturated(&stack, opts.saturated).await?);
    }

    if step(7, "the soak") && !opts.soak.is_zero() {
        report.soak = Some(journey::soak(&stack, opts.soak_rate, opts.soak).await?);
    }

    let peaks = components(&stack)?;
    report.components = idle
        .into_iter()
        .zip(peaks)
        .map(|((name, idle), (_, peak))| (name, idle.rss_mib, peak.peak_mib))
        .collect();
    say!("bench: done in {:.0} s", started.elapsed().as_secs_f64());
    Ok(report)
}

/// Kafka's, the Collector's and Zipkin's usage now.
fn components(stack: &Stack) -> Result<Vec<(String, proc::Usage)>> {
    [
        ("Kafka", stack.kafka.process().pid()),
        ("Collector", stack.collector.process().pid()),
        ("Zipkin", stack.zipkin.process().pid()),
    ]
    .into_iter()
    .map(|(name, pid)| Ok((name.to_string(), proc::usage(pid)?)))
    .collect()
}

/// The machine, the versions and the commit.
fn setup() -> Result<Vec<(String, String)>> {
    let tools = Tools::load()?;
    let first_line = |cmd: &mut Command| -> String {
        cmd.output()
            .ok()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .unwrap_or_default()
    };
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").context("reading /proc/cpuinfo")?;
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_default();
    let meminfo = procfs::Meminfo::current().context("reading /proc/meminfo")?;
    let cores = std::thread::available_parallelism().map_or(0, NonZeroUsize::get);
    Ok(vec![
        (
            "Date".into(),
            first_line(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])),
        ),
        (
            "Commit".into(),
            first_line(Command::new("git").args(["rev-parse", "--short", "HEAD"])),
        ),
        ("CPU".into(), format!("{cpu}, {cores} cores")),
        (
            "Memory".into(),
            format!("{:.0} GiB", meminfo.mem_total as f64 / (1u64 << 30) as f64),
        ),
        ("Kernel".into(), first_line(Command::new("uname").arg("-r"))),
        (
            "Rust".into(),
            first_line(Command::new("rustc").arg("--version")),
        ),
        ("Kafka".into(), tools.get("KAFKA_VERSION", "kafka")?),
        (
            "Collector".into(),
            tools.get("OTELCOL_VERSION", "collector")?,
        ),
        ("Zipkin".into(), tools.get("ZIPKIN_VERSION", "zipkin")?),
        ("Command".into(), "`make bench`".into()),
    ])
}

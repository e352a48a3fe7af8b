//! The producer alone: its ingest at full speed (tracing on and off, single messages and
//! batches) and its latency at fixed rates, each run on a fresh producer process.

use std::num::NonZeroUsize;
use std::time::Duration;

use anyhow::{Context, Result};
use journeyctl::load::{LoadOptions, LoadSummary};
use journeyctl::producer::ProducerClient;

use super::proc::{Usage, cpu_us_per, usage};
use crate::say;
use crate::services::Service;
use crate::stack::Stack;

/// The topic the producer-only runs write to (no consumer reads it).
pub const INGEST_TOPIC: &str = "bench.ingest";

/// "As fast as it answers": a rate no run reaches, so the concurrency bounds it.
pub const UNBOUNDED_RATE: f64 = 1_000_000.0;

/// A producer writing to `topic`, its spans exported (`tracing`) or the SDK disabled, with
/// `more` env.
pub async fn producer(
    stack: &Stack,
    topic: &str,
    tracing: bool,
    more: &[(&str, &str)],
) -> Result<Service> {
    let name = if tracing {
        "producer-traced"
    } else {
        "producer-untraced"
    };
    let mut extra = vec![("KAFKA_TOPIC", topic)];
    extra.extend_from_slice(more);
    if !tracing {
        extra.push(("OTEL_SDK_DISABLED", "true"));
    }
    Service::producer(stack, name, &extra).await
}

/// One `journeyctl load` run against `producer`, progress on screen.
pub async fn load(
    producer: &Service,
    rate: f64,
    duration: Duration,
    concurrency: usize,
    batch: Option<NonZeroUsize>,
    keep_trace_ids: bool,
) -> Result<LoadSummary> {
    let client = ProducerClient::new(&producer.url(), Duration::from_secs(30))
        .context("building the load client")?;
    let opts = LoadOptions {
        rate,
        duration,
        concurrency,
        progress: true,
        batch,
        keep_trace_ids,
    };
    Ok(journeyctl::load::run(&client, &opts).await?)
}

/// One full-speed run of a fresh producer.
#[derive(Debug, Clone)]
pub struct IngestRow {
    pub tracing: bool,
    pub batch: Option<usize>,
    pub load: LoadSummary,
    pub cpu_us_per_msg: f64,
    pub idle: Usage,
    pub peak_mib: f64,
}

/// Full speed for `secs`: 64 requests in flight (the producer's default
/// MAX_CONCURRENT_REQUESTS), or 8 batches of `batch`.
pub async fn ingest(
    stack: &Stack,
    tracing: bool,
    batch: Option<NonZeroUsize>,
    duration: Duration,
) -> Result<IngestRow> {
    say!(
        "bench: producer ingest, tracing {}, {}",
        on_off(tracing),
        batch.map_or("single messages".into(), |b| format!("batches of {b}"))
    );
    let p = producer(stack, INGEST_TOPIC, tracing, &[]).await?;
    let pid = p.process().pid();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = usage(pid)?;
    let concurrency = if batch.is_some() { 8 } else { 64 };
    // Warm-up: connections, allocator, the broker's partition leaders.
    load(
        &p,
        2000.0,
        Duration::from_secs(2),
        concurrency,
        batch,
        false,
    )
    .await?;
    let before = usage(pid)?;
    let run = load(&p, UNBOUNDED_RATE, duration, concurrency, batch, false).await?;
    let after = usage(pid)?;
    say!("bench: {run}");
    Ok(IngestRow {
        tracing,
        batch: batch.map(NonZeroUsize::get),
        cpu_us_per_msg: cpu_us_per(&before, &after, run.acked),
        idle,
        peak_mib: after.peak_mib,
        load: run,
    })
}

/// One fixed-rate run.
#[derive(Debug, Clone)]
pub struct LatencyRow {
    pub tracing: bool,
    pub rate: f64,
    pub load: LoadSummary,
}

/// Each rate for `duration` on one producer (tracing on or off), enough requests in flight
/// that the rate, not the client, sets the pace: up to 256, which the producer is allowed
/// too (`MAX_CONCURRENT_REQUESTS`, 64 by default), so that a burst (the load generator
/// shares the cores) is measured as latency rather than answered 503.
pub async fn latency(
    stack: &Stack,
    tracing: bool,
    rates: &[f64],
    duration: Duration,
) -> Result<Vec<LatencyRow>> {
    let p = producer(
        stack,
        INGEST_TOPIC,
        tracing,
        &[("MAX_CONCURRENT_REQUESTS", "256")],
    )
    .await?;
    load(&p, 500.0, Duration::from_secs(2), 64, None, false).await?;
    let mut rows = Vec::new();
    for &rate in rates {
        say!(
            "bench: fixed rate {rate} msg/s, tracing {}",
            on_off(tracing)
        );
        let run = load(&p, rate, duration, 256, None, false).await?;
        say!("bench: {run}");
        rows.push(LatencyRow {
            tracing,
            rate,
            load: run,
        });
    }
    Ok(rows)
}

pub fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

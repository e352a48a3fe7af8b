//! The whole journey at a fixed rate: end-to-end latency and completeness read from the
//! traces, and the soak (the tracing back end under a long steady load).

use std::time::{Duration, Instant};

use anyhow::Result;
use futures::StreamExt as _;
use hdrhistogram::Histogram;
use journeyctl::load::LoadSummary;

use super::backend::Sample;
use super::flow::{Pipeline, drained};
use super::ingest::load;
use super::proc::alive;
use crate::say;
use crate::stack::Stack;
use crate::zipkin::{Span, ZipkinApi};

/// What the traces of a run say.
#[derive(Debug, Clone, Default)]
pub struct Traces {
    pub checked: usize,
    /// Traces with a span of the sink.
    pub complete: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// From the producer's first span to the end of the sink's last, when the sink took part.
fn end_to_end_us(spans: &[Span], sink: &str) -> Option<u64> {
    let start = spans.iter().filter_map(|s| s.timestamp).min()?;
    let end = spans
        .iter()
        .filter(|s| {
            s.local_endpoint
                .as_ref()
                .and_then(|e| e.service_name.as_deref())
                == Some(sink)
        })
        .filter_map(|s| Some(s.timestamp? + s.duration.unwrap_or(0)))
        .max()?;
    Some(end.saturating_sub(start))
}

/// Reads every trace in `ids` from Zipkin (16 at a time).
pub async fn read_traces(zipkin: &ZipkinApi, ids: &[String], sink: &str) -> Result<Traces> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let mut out = Traces::default();
    let mut found =
        futures::stream::iter(ids.iter().map(|id| zipkin.trace(id))).buffer_unordered(16);
    while let Some(trace) = found.next().await {
        out.checked += 1;
        if let Some(us) = trace?.and_then(|spans| end_to_end_us(&spans, sink)) {
            out.complete += 1;
            hist.saturating_record(us.max(1));
        }
    }
    out.p50_ms = hist.value_at_quantile(0.5) as f64 / 1000.0;
    out.p99_ms = hist.value_at_quantile(0.99) as f64 / 1000.0;
    Ok(out)
}

/// A fixed-rate journey.
#[derive(Debug, Clone)]
pub struct EndToEndRow {
    pub rate: f64,
    pub delay_ms: u64,
    pub load: LoadSummary,
    pub traces: Traces,
}

/// Waits after the consumers are done for their last spans (batched for 100 ms by the SDK,
/// 200 ms by the Collector) to reach Zipkin.
const SPANS_SETTLE: Duration = Duration::from_secs(3);

/// Producer + relay + sink (`delay_ms` each, `ORDERING=key`: the mode that keeps up with
/// hundreds of messages per second at 20 ms of work) at `rate` for `duration`; every acked
/// message's trace read back after the consumers are done.
pub async fn end_to_end(
    stack: &Stack,
    rate: f64,
    delay_ms: u64,
    duration: Duration,
) -> Result<EndToEndRow> {
    let pipeline = Pipeline::new(&format!("e2e-{rate}"), delay_ms, "key");
    say!("bench: the whole journey at {rate} msg/s for {duration:?}, PROCESS_DELAY_MS={delay_ms}");
    let journey = pipeline.journey(stack, &[]).await?;
    let p = &journey.producer;
    // Warm-up, not measured: the consumers' first fetches, the first records through.
    load(p, rate, Duration::from_secs(2), 256, None, false).await?;
    let lags = pipeline.lags(stack)?;
    drained(&lags, Duration::from_secs(300)).await?;
    let run = load(p, rate, duration, 256, None, true).await?;
    drained(&lags, Duration::from_secs(300)).await?;
    tokio::time::sleep(SPANS_SETTLE).await;
    let zipkin = ZipkinApi::new(stack.zipkin.url());
    let traces = read_traces(&zipkin, &run.trace_ids, &format!("sink-{}", pipeline.tag)).await?;
    say!(
        "bench: {} of {} traces complete, end to end p50 {:.1} ms p99 {:.1} ms",
        traces.complete,
        traces.checked,
        traces.p50_ms,
        traces.p99_ms
    );
    Ok(EndToEndRow {
        rate,
        delay_ms,
        load: run,
        traces,
    })
}

/// One moment of the soak.
#[derive(Debug, Clone)]
pub struct SoakSample {
    pub at_secs: f64,
    pub backend: Sample,
    pub relay_lag: i64,
    pub sink_lag: i64,
    /// How long Zipkin took to answer `/health` (a back end in GC answers late or not at all).
    pub zipkin_health_ms: f64,
}

/// The soak: a steady rate through the whole journey for a long time.
#[derive(Debug, Clone)]
pub struct SoakRow {
    pub rate: f64,
    pub delay_ms: u64,
    pub load: LoadSummary,
    pub samples: Vec<SoakSample>,
    pub zipkin_alive: bool,
    pub collector_alive: bool,
    pub secs_to_zero: f64,
    /// The last traces of the run, read back.
    pub last: Traces,
}

/// How many of the soak's last traces are read back.
const SOAK_LAST_TRACES: usize = 1000;

pub async fn soak(stack: &Stack, rate: f64, duration: Duration) -> Result<SoakRow> {
    let delay_ms = 20;
    let pipeline = Pipeline::new("soak", delay_ms, "key");
    say!("bench: soak: the whole journey at {rate} msg/s for {duration:?}");
    // As in the fixed-rate step: a burst (the load generator shares the cores with a busy
    // stack) is measured as latency, not refused at the default 64.
    let more = [("MAX_CONCURRENT_REQUESTS", "256")];
    let journey = pipeline.journey(stack, &more).await?;
    let p = &journey.producer;
    let lags = pipeline.lags(stack)?;
    let started = Instant::now();
    // The span counters count from the Collector's start: the soak reports what it added.
    let baseline = Sample::take(stack).await?;
    let mut samples = Vec::new();
    let run = load(p, rate, duration, 256, None, true);
    tokio::pin!(run);
    let mut every = tokio::time::interval(Duration::from_secs(10));
    let run = loop {
        tokio::select! {
            done = &mut run => break done?,
            _ = every.tick() => {
                let s = soak_sample(stack, &lags, started, &baseline).await?;
                let b = &s.backend;
                say!(
                    "bench: soak {:.0} s: zipkin {:.0} MiB (health {:.0} ms), collector {:.0} MiB, \
                     queue {}, shed {} spans, lag {}/{}",
                    s.at_secs, b.zipkin_rss_mib, s.zipkin_health_ms, b.collector_rss_mib,
                    b.queue, b.shed_spans, s.relay_lag, s.sink_lag
                );
                samples.push(s);
            }
        }
    };
    say!("bench: soak: {run}");
    let to_zero = drained(&lags, Duration::from_secs(300)).await?;
    tokio::time::sleep(SPANS_SETTLE).await;
    samples.push(soak_sample(stack, &lags, started, &baseline).await?);
    let zipkin = ZipkinApi::new(stack.zipkin.url());
    let last_ids = &run.trace_ids[run.trace_ids.len().saturating_sub(SOAK_LAST_TRACES)..];
    let last = read_traces(&zipkin, last_ids, &format!("sink-{}", pipeline.tag)).await?;
    Ok(SoakRow {
        rate,
        delay_ms,
        zipkin_alive: alive(stack.zipkin.process().pid()),
        collector_alive: alive(stack.collector.process().pid()),
        load: run,
        samples,
        secs_to_zero: to_zero.as_secs_f64(),
        last,
    })
}

async fn soak_sample(
    stack: &Stack,
    lags: &(super::kafka::Lag, super::kafka::Lag),
    started: Instant,
    baseline: &Sample,
) -> Result<SoakSample> {
    let asked = Instant::now();
    let health = reqwest::Client::new()
        .get(format!("{}/health", stack.zipkin.url()))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    let zipkin_health_ms = match health {
        Ok(r) if r.status().is_success() => asked.elapsed().as_secs_f64() * 1000.0,
        _ => f64::INFINITY,
    };
    Ok(SoakSample {
        at_secs: started.elapsed().as_secs_f64(),
        backend: Sample::take(stack).await?.since(baseline),
        relay_lag: lags.0.now()?,
        sink_lag: lags.1.now()?,
        zipkin_health_ms,
    })
}

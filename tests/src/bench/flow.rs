//! Relay and sink: draining a backlog (how fast they consume), and the whole journey at the
//! producer's full speed (whether they keep up).

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use journeyctl::load::LoadSummary;

use super::ingest::{UNBOUNDED_RATE, load, producer};
use super::kafka::{Lag, backlog, create_topics};
use super::proc::{cpu_us_per, usage};
use crate::say;
use crate::services::Service;
use crate::stack::Stack;

/// Where a relay reads, forwards and dead-letters, and how it works.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub tag: String,
    pub input: String,
    pub output: String,
    pub delay_ms: u64,
    pub ordering: &'static str,
}

impl Pipeline {
    /// Topics `bench.<tag>.in` → `bench.<tag>.out`, both consumers at `delay_ms` per record.
    pub fn new(tag: &str, delay_ms: u64, ordering: &'static str) -> Pipeline {
        Pipeline {
            tag: tag.to_string(),
            input: format!("bench.{tag}.in"),
            output: format!("bench.{tag}.out"),
            delay_ms,
            ordering,
        }
    }

    fn dlq(&self) -> String {
        format!("bench.{}.dlq", self.tag)
    }

    fn group(&self, role: &str) -> String {
        format!("bench-{role}-{}", self.tag)
    }

    pub async fn create_topics(&self, stack: &Stack) -> Result<()> {
        create_topics(stack, &[&self.input, &self.output, &self.dlq()]).await
    }

    /// Starts the relay and the sink (each ready, i.e. in its group).
    pub async fn consumers(&self, stack: &Stack) -> Result<(Service, Service)> {
        let delay = self.delay_ms.to_string();
        let (relay_group, sink_group, dlq) = (self.group("relay"), self.group("sink"), self.dlq());
        let relay_env = [
            ("KAFKA_TOPIC", self.input.as_str()),
            ("OUTPUT_TOPIC", self.output.as_str()),
            ("KAFKA_GROUP_ID", relay_group.as_str()),
            ("DLQ_TOPIC", dlq.as_str()),
            ("PROCESS_DELAY_MS", delay.as_str()),
            ("ORDERING", self.ordering),
        ];
        let sink_env = [
            ("KAFKA_TOPIC", self.output.as_str()),
            ("KAFKA_GROUP_ID", sink_group.as_str()),
            ("DLQ_TOPIC", dlq.as_str()),
            ("PROCESS_DELAY_MS", delay.as_str()),
            ("ORDERING", self.ordering),
        ];
        let (relay_name, sink_name) = (format!("relay-{}", self.tag), format!("sink-{}", self.tag));
        let relay = Service::consumer(stack, "relay", &relay_name, &relay_env);
        let sink = Service::consumer(stack, "sink", &sink_name, &sink_env);
        let (relay, sink) = tokio::join!(relay, sink);
        Ok((relay?, sink?))
    }

    /// The whole journey on this pipeline: its topics, the relay and the sink (ready), and a
    /// traced producer writing to the input with `producer_env` on top of the base.
    pub async fn journey(&self, stack: &Stack, producer_env: &[(&str, &str)]) -> Result<Running> {
        self.create_topics(stack).await?;
        let (relay, sink) = self.consumers(stack).await?;
        let producer = producer(stack, &self.input, true, producer_env).await?;
        Ok(Running {
            producer,
            _relay: relay,
            _sink: sink,
        })
    }

    /// The relay's lag on the input and the sink's on the output.
    pub fn lags(&self, stack: &Stack) -> Result<(Lag, Lag)> {
        let b = stack.kafka.bootstrap();
        Ok((
            Lag::new(b, &self.group("relay"), &self.input)?,
            Lag::new(b, &self.group("sink"), &self.output)?,
        ))
    }
}

/// A pipeline's services, stopped when dropped (the producer first).
#[derive(Debug)]
pub struct Running {
    pub producer: Service,
    _relay: Service,
    _sink: Service,
}

/// Polls both lags every 100 ms until both are 0 (a line every 5 s), up to `timeout`; how
/// long that took.
pub async fn drained(lags: &(Lag, Lag), timeout: Duration) -> Result<Duration> {
    let started = Instant::now();
    let mut said = Instant::now();
    loop {
        let (relay, sink) = (lags.0.now()?, lags.1.now()?);
        if relay == 0 && sink == 0 {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            bail!(
                "relay and sink: still {relay} and {sink} records behind after {timeout:?}: \
                 read their logs in the stack's logs dir"
            );
        }
        if said.elapsed() >= Duration::from_secs(5) {
            say!("bench: waiting for the consumers: relay {relay} behind, sink {sink} behind");
            said = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One backlog drained.
#[derive(Debug, Clone)]
pub struct DrainRow {
    pub delay_ms: u64,
    pub ordering: &'static str,
    pub records: u64,
    pub secs: f64,
    pub relay_cpu_us: f64,
    pub sink_cpu_us: f64,
    pub relay_peak_mib: f64,
    pub sink_peak_mib: f64,
}

impl DrainRow {
    pub fn rate(&self) -> f64 {
        self.records as f64 / self.secs.max(0.001)
    }
}

/// `records` written to the input before the relay and the sink start (10,000 keys); the time
/// from both being ready until both have committed everything.
pub async fn drain(stack: &Stack, pipeline: &Pipeline, records: u64) -> Result<DrainRow> {
    say!(
        "bench: draining {records} records, PROCESS_DELAY_MS={}, ORDERING={}",
        pipeline.delay_ms,
        pipeline.ordering
    );
    pipeline.create_topics(stack).await?;
    backlog(stack, &pipeline.input, records, 10_000).await?;
    let (relay, sink) = pipeline.consumers(stack).await?;
    let (r0, s0) = (usage(relay.process().pid())?, usage(sink.process().pid())?);
    let secs = drained(&pipeline.lags(stack)?, Duration::from_secs(600))
        .await?
        .as_secs_f64();
    let (r1, s1) = (usage(relay.process().pid())?, usage(sink.process().pid())?);
    let row = DrainRow {
        delay_ms: pipeline.delay_ms,
        ordering: pipeline.ordering,
        records,
        secs,
        relay_cpu_us: cpu_us_per(&r0, &r1, records),
        sink_cpu_us: cpu_us_per(&s0, &s1, records),
        relay_peak_mib: r1.peak_mib,
        sink_peak_mib: s1.peak_mib,
    };
    say!("bench: drained in {secs:.1} s: {:.0} msg/s", row.rate());
    Ok(row)
}

/// The whole journey at the producer's full speed.
#[derive(Debug, Clone)]
pub struct SaturatedRow {
    pub load: LoadSummary,
    pub relay_lag_at_end: i64,
    pub sink_lag_at_end: i64,
    pub secs_to_zero: f64,
}

/// Producer (tracing on) + relay + sink at `PROCESS_DELAY_MS=0`, the chart's ordering, the
/// producer as fast as it answers for `duration`; the lag when the load ends and how long
/// until it is 0.
pub async fn saturated(stack: &Stack, duration: Duration) -> Result<SaturatedRow> {
    let pipeline = Pipeline::new("saturated", 0, "partition");
    say!("bench: the whole journey at full speed for {duration:?}, PROCESS_DELAY_MS=0");
    let journey = pipeline.journey(stack, &[]).await?;
    let run = load(&journey.producer, UNBOUNDED_RATE, duration, 64, None, false).await?;
    let lags = pipeline.lags(stack)?;
    let (relay_lag, sink_lag) = (lags.0.now()?, lags.1.now()?);
    let to_zero = drained(&lags, Duration::from_secs(600)).await?;
    say!(
        "bench: {run}\nbench: lag at the end relay {relay_lag} sink {sink_lag}, 0 after {:.1} s",
        to_zero.as_secs_f64()
    );
    Ok(SaturatedRow {
        load: run,
        relay_lag_at_end: relay_lag,
        sink_lag_at_end: sink_lag,
        secs_to_zero: to_zero.as_secs_f64(),
    })
}

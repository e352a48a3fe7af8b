//! `docs/benchmarks.md`: every figure of one `make bench` run, ratios side by side.

use std::fmt::Write as _;

use super::flow::{DrainRow, SaturatedRow};
use super::ingest::{IngestRow, LatencyRow, on_off};
use super::journey::{EndToEndRow, SoakRow};
use super::kafka::Ceiling;

/// Everything one run measured.
#[derive(Debug, Default)]
pub struct Report {
    /// `(what, value)`: machine, versions, commit, date.
    pub setup: Vec<(String, String)>,
    pub ceiling: Option<Ceiling>,
    pub ingest: Vec<IngestRow>,
    pub latency: Vec<LatencyRow>,
    pub drains: Vec<DrainRow>,
    pub saturated: Option<SaturatedRow>,
    pub end_to_end: Vec<EndToEndRow>,
    pub soak: Option<SoakRow>,
    /// `(component, idle MiB, peak MiB)` of the stack's own processes.
    pub components: Vec<(String, f64, f64)>,
    /// The chart file's name, next to the report.
    pub chart: Option<String>,
    /// The Collector after the producer's full-speed and fixed-rate steps (2 and 3).
    pub backend_after_ingest: Option<super::backend::Sample>,
}

/// ` (12 × HTTP 503, 1 × timeout)`, or nothing without errors.
fn error_kinds(kinds: &std::collections::BTreeMap<String, u64>) -> String {
    if kinds.is_empty() {
        return String::new();
    }
    let each: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} × {k}")).collect();
    format!(" ({})", each.join(", "))
}

/// The goals of the throughput work (issue 12), each with what this run measured.
struct Goal {
    what: &'static str,
    measured: String,
    met: bool,
}

impl Report {
    fn ingest(&self, tracing: bool, batch: bool) -> Option<&IngestRow> {
        self.ingest
            .iter()
            .find(|r| r.tracing == tracing && r.batch.is_some() == batch)
    }

    fn goals(&self) -> Vec<Goal> {
        let mut goals = Vec::new();
        if let Some(s) = &self.saturated {
            goals.push(Goal {
                what: "PROCESS_DELAY_MS=0: relay and sink keep up with the producer's full \
                       tracing-on ingest; lag back to 0 within 10 s after the load",
                measured: format!(
                    "{:.0} msg/s acked for {:.0} s; lag at the end {} (relay) / {} (sink); 0 after {:.1} s",
                    s.load.acked_rate(),
                    s.load.elapsed_secs(),
                    s.relay_lag_at_end,
                    s.sink_lag_at_end,
                    s.secs_to_zero
                ),
                met: s.secs_to_zero <= 10.0,
            });
        }
        if let Some(d) = self
            .drains
            .iter()
            .find(|d| d.delay_ms == 20 && d.ordering == "key")
        {
            goals.push(Goal {
                what: "20 ms of work per message, 3 partitions, many keys, ORDERING=key: at least 1000 msg/s",
                measured: format!("{:.0} msg/s", d.rate()),
                met: d.rate() >= 1000.0,
            });
        }
        if let (Some(on), Some(off)) = (self.ingest(true, false), self.ingest(false, false)) {
            let ratio = on.cpu_us_per_msg / off.cpu_us_per_msg.max(0.001);
            goals.push(Goal {
                what: "Producer CPU per request, tracing on ≤ 1.3 × tracing off",
                measured: format!(
                    "{:.0} µs vs {:.0} µs: {ratio:.2}×",
                    on.cpu_us_per_msg, off.cpu_us_per_msg
                ),
                met: ratio <= 1.3,
            });
        }
        if let Some(s) = &self.soak {
            let worst_health = s
                .samples
                .iter()
                .map(|x| x.zipkin_health_ms)
                .fold(0.0, f64::max);
            goals.push(Goal {
                what: "The tracing back end survives the soak: no OOM, no stall",
                measured: format!(
                    "{:.0} s at {:.0} msg/s: Zipkin {}, Collector {}; slowest Zipkin /health {:.0} ms; \
                     {} of the last {} traces complete",
                    s.load.elapsed_secs(),
                    s.rate,
                    if s.zipkin_alive { "up" } else { "DOWN" },
                    if s.collector_alive { "up" } else { "DOWN" },
                    worst_health,
                    s.last.complete,
                    s.last.checked
                ),
                met: s.zipkin_alive
                    && s.collector_alive
                    && worst_health < 2000.0
                    && s.last.complete == s.last.checked,
            });
        }
        goals
    }

    /// The whole report, Markdown.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        // Writing into a String cannot fail.
        let _ = self.write(&mut md);
        md
    }

    fn write(&self, w: &mut String) -> std::fmt::Result {
        writeln!(w, "# Benchmarks\n")?;
        writeln!(
            w,
            "Written by `make bench` (`journey-bench`, `tests/src/bench/`) from one run; do not edit \
             by hand. Everything shares the same cores: the load generator (journeyctl's `load`, \
             in the bench process), the services (release builds), Kafka, the Collector and \
             Zipkin. So compare the rows of one run with each other (the ratios); the absolute \
             figures say what this machine did, not what the services can do alone.\n"
        )?;
        writeln!(w, "| Setup | |\n|---|---|")?;
        for (k, v) in &self.setup {
            writeln!(w, "| {k} | {v} |")?;
        }
        let goals = self.goals();
        if !goals.is_empty() {
            writeln!(w, "\n## Goals\n\n| Goal | This run | Met |\n|---|---|---|")?;
            for g in goals {
                writeln!(
                    w,
                    "| {} | {} | {} |",
                    g.what,
                    g.measured,
                    if g.met { "yes" } else { "**no**" }
                )?;
            }
        }
        self.ingest_section(w)?;
        self.latency_section(w)?;
        self.flow_sections(w)?;
        self.soak_section(w)?;
        if !self.components.is_empty() {
            writeln!(
                w,
                "\n## The stack's own processes\n\nResident memory when the bench started and \
                 the highest it reached (`VmHWM`), whole run.\n\n| Process | Idle MiB | Peak MiB |\n|---|---|---|"
            )?;
            for (name, idle, peak) in &self.components {
                writeln!(w, "| {name} | {idle:.0} | {peak:.0} |")?;
            }
        }
        Ok(())
    }

    fn ingest_section(&self, w: &mut String) -> std::fmt::Result {
        if self.ingest.is_empty() {
            return Ok(());
        }
        writeln!(
            w,
            "\n## Producer ingest\n\nA fresh producer per row, as fast as it answers: 64 requests \
             in flight (single messages) or 8 (batches). CPU is the producer process's own \
             (user + system) per acked message; RSS idle is before the first request, peak is \
             `VmHWM` after the run.\n\n| Tracing | Requests | Acked msg/s | p50 ms | p99 ms | Errors | CPU µs/msg | RSS idle MiB | RSS peak MiB |\n|---|---|---|---|---|---|---|---|---|"
        )?;
        for r in &self.ingest {
            writeln!(
                w,
                "| {} | {} | {:.0} | {:.1} | {:.1} | {} | {:.0} | {:.1} | {:.1} |",
                on_off(r.tracing),
                r.batch
                    .map_or("single".into(), |b| format!("batches of {b}")),
                r.load.acked_rate(),
                r.load.latency_ms_p50,
                r.load.latency_ms_p99,
                r.load.errors,
                r.cpu_us_per_msg,
                r.idle.rss_mib,
                r.peak_mib
            )?;
        }
        if let (Some(on), Some(off)) = (self.ingest(true, false), self.ingest(false, false)) {
            writeln!(
                w,
                "\nTracing on / off: CPU per message **{:.2}×**, throughput **{:.2}×**.",
                on.cpu_us_per_msg / off.cpu_us_per_msg.max(0.001),
                on.load.acked_rate() / off.load.acked_rate().max(0.001)
            )?;
        }
        if let Some(b) = &self.backend_after_ingest {
            let what = if b.shed_spans > 0.0 {
                "the producer made spans faster than the in-memory Zipkin took them in, and the \
                 Collector's bounded export queue dropped the rest and counted them \
                 (`otelcol_exporter_enqueue_failed_spans`)"
            } else {
                "Zipkin took in every span; had it been slower, the Collector's bounded export \
                 queue would have dropped the rest and counted them \
                 (`otelcol_exporter_enqueue_failed_spans`)"
            };
            writeln!(
                w,
                "\nThe tracing back end meanwhile: the Collector took in {:.0} spans, sent {:.0} \
                 to Zipkin and shed {:.0} ({:.1} %): {what}. Zipkin's peak memory is in the last \
                 table.",
                b.accepted_spans,
                b.sent_spans,
                b.shed_spans,
                100.0 * b.shed_spans / b.accepted_spans.max(1.0)
            )?;
        }
        if let Some(c) = &self.ceiling {
            writeln!(
                w,
                "\nThe ceiling: Kafka's own `ProducerPerformance` (the broker's jars, the services' \
                 settings: idempotent, acks=all, linger 5 ms) wrote {} records of {} bytes at \
                 {:.0} records/s (p50 {:.0} ms, p99 {:.0} ms).",
                c.records, c.record_bytes, c.per_sec, c.p50_ms, c.p99_ms
            )?;
            for r in self.ingest.iter().filter(|r| r.tracing) {
                writeln!(
                    w,
                    "- HTTP ingest, tracing on, {}: **{:.2}** of the ceiling.",
                    r.batch
                        .map_or("single messages".into(), |b| format!("batches of {b}")),
                    r.load.acked_rate() / c.per_sec.max(0.001)
                )?;
            }
        }
        Ok(())
    }

    fn latency_section(&self, w: &mut String) -> std::fmt::Result {
        if self.latency.is_empty() {
            return Ok(());
        }
        writeln!(
            w,
            "\n## Latency at fixed rates\n\nOne producer per tracing mode; each rate held for the \
             same time, up to 256 requests in flight (the producer started with \
             `MAX_CONCURRENT_REQUESTS=256`, so that bursts are measured, not refused).\n"
        )?;
        if let Some(chart) = &self.chart {
            writeln!(w, "![Latency vs rate]({chart})\n")?;
        }
        writeln!(
            w,
            "| Tracing | Offered msg/s | Achieved msg/s | p50 ms | p90 ms | p99 ms | max ms | Errors |\n|---|---|---|---|---|---|---|---|"
        )?;
        for r in &self.latency {
            writeln!(
                w,
                "| {} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
                on_off(r.tracing),
                r.rate,
                r.load.achieved_rate,
                r.load.latency_ms_p50,
                r.load.latency_ms_p90,
                r.load.latency_ms_p99,
                r.load.latency_ms_max,
                r.load.errors
            )?;
        }
        Ok(())
    }

    fn flow_sections(&self, w: &mut String) -> std::fmt::Result {
        if !self.drains.is_empty() {
            writeln!(
                w,
                "\n## Relay and sink\n\nA backlog written straight to the relay's input topic \
                 (3 partitions, 10,000 keys, each record with a sampled `traceparent`), then one \
                 relay and one sink started; the time from both being ready until both groups \
                 have committed everything. Both consumers do `PROCESS_DELAY_MS` of work per \
                 record.\n\n| PROCESS_DELAY_MS | ORDERING | Records | Seconds | msg/s | Relay CPU µs/msg | Sink CPU µs/msg | Relay peak MiB | Sink peak MiB |\n|---|---|---|---|---|---|---|---|---|"
            )?;
            for d in &self.drains {
                writeln!(
                    w,
                    "| {} | {} | {} | {:.1} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} |",
                    d.delay_ms,
                    d.ordering,
                    d.records,
                    d.secs,
                    d.rate(),
                    d.relay_cpu_us,
                    d.sink_cpu_us,
                    d.relay_peak_mib,
                    d.sink_peak_mib
                )?;
            }
        }
        if let Some(s) = &self.saturated {
            writeln!(
                w,
                "\n## The whole journey at full speed\n\nProducer (tracing on), relay and sink \
                 at `PROCESS_DELAY_MS=0`, partition order, the producer driven as fast as it \
                 answers.\n\n| Seconds | Acked | Acked msg/s | p99 ms | Relay lag at the end | Sink lag at the end | Lag 0 after |\n|---|---|---|---|---|---|---|\n| {:.0} | {} | {:.0} | {:.1} | {} | {} | {:.1} s |",
                s.load.elapsed_secs(),
                s.load.acked,
                s.load.acked_rate(),
                s.load.latency_ms_p99,
                s.relay_lag_at_end,
                s.sink_lag_at_end,
                s.secs_to_zero
            )?;
        }
        if !self.end_to_end.is_empty() {
            writeln!(
                w,
                "\n## End to end, from the traces\n\nProducer, relay and sink at a fixed rate, \
                 `ORDERING=key` (at 20 ms of work, partition order tops out near 150 msg/s on 3 \
                 partitions: see the drains); after both groups committed everything, every acked message's trace is read \
                 back from Zipkin. End to end = from the producer's first span to the end of the \
                 sink's last. Complete = the trace has the sink's span (Zipkin keeps the last \
                 `zipkin.memMaxSpans` spans only: a longer run's first traces are gone).\n\n| Offered msg/s | PROCESS_DELAY_MS | Acked | Complete traces | p50 ms | p99 ms |\n|---|---|---|---|---|---|"
            )?;
            for e in &self.end_to_end {
                writeln!(
                    w,
                    "| {:.0} | {} | {} | {} ({:.1} %) | {:.1} | {:.1} |",
                    e.rate,
                    e.delay_ms,
                    e.load.acked,
                    e.traces.complete,
                    100.0 * e.traces.complete as f64 / e.load.acked.max(1) as f64,
                    e.traces.p50_ms,
                    e.traces.p99_ms
                )?;
            }
        }
        Ok(())
    }

    fn soak_section(&self, w: &mut String) -> std::fmt::Result {
        let Some(s) = &self.soak else {
            return Ok(());
        };
        writeln!(
            w,
            "\n## Soak: the tracing back end\n\nThe whole journey at {:.0} msg/s for {:.0} s \
             (PROCESS_DELAY_MS={}, `ORDERING=key`), Zipkin and the Collector configured as the \
             chart configures them (span counts from the soak's start). {} acked, {} errors{}; both groups at lag 0 {:.1} s after the load; {} of the \
             last {} traces complete.\n\n| At s | Zipkin RSS MiB | Zipkin /health ms | Collector RSS MiB | Export queue | Spans accepted | Spans sent | Spans shed | Relay lag | Sink lag |\n|---|---|---|---|---|---|---|---|---|---|",
            s.rate,
            s.load.elapsed_secs(),
            s.delay_ms,
            s.load.acked,
            s.load.errors,
            error_kinds(&s.load.error_kinds),
            s.secs_to_zero,
            s.last.complete,
            s.last.checked
        )?;
        // At most 13 rows: every n-th sample and the last.
        let step = s.samples.len().div_ceil(12).max(1);
        let last = s.samples.len().saturating_sub(1);
        for (i, x) in s.samples.iter().enumerate() {
            if i % step != 0 && i != last {
                continue;
            }
            writeln!(
                w,
                "| {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} |",
                x.at_secs,
                x.backend.zipkin_rss_mib,
                x.zipkin_health_ms,
                x.backend.collector_rss_mib,
                x.backend.queue,
                x.backend.accepted_spans,
                x.backend.sent_spans,
                x.backend.shed_spans,
                x.relay_lag,
                x.sink_lag
            )?;
        }
        Ok(())
    }
}

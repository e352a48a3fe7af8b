//! The tracing back end under load: the Collector's own metrics (queue, refused and dropped
//! spans) and Zipkin's and the Collector's memory, sampled while a run goes on.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};

use super::proc::usage;
use crate::stack::Stack;

/// Sums of the Collector's Prometheus metrics by name (labels added up).
pub async fn collector_metrics(url: &str) -> Result<BTreeMap<String, f64>> {
    let text = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .context("collector: reading its metrics")?
        .text()
        .await?;
    Ok(sum_by_name(&text))
}

/// `name{labels} value` lines (comments skipped) summed by name.
fn sum_by_name(text: &str) -> BTreeMap<String, f64> {
    let mut sums = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        if let Ok(v) = value.parse::<f64>() {
            *sums.entry(name.to_string()).or_insert(0.0) += v;
        }
    }
    sums
}

/// The back end at one moment.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub zipkin_rss_mib: f64,
    pub collector_rss_mib: f64,
    /// Batches waiting in the Zipkin exporter's queue.
    pub queue: f64,
    pub accepted_spans: f64,
    pub sent_spans: f64,
    /// Spans the receiver refused (memory_limiter) + the exporter could not queue or send.
    pub shed_spans: f64,
}

impl Sample {
    pub async fn take(stack: &Stack) -> Result<Sample> {
        let m = collector_metrics(&stack.collector.metrics_url()).await?;
        let get = |k: &str| m.get(k).copied().unwrap_or_default();
        Ok(Sample {
            zipkin_rss_mib: usage(stack.zipkin.process().pid())?.rss_mib,
            collector_rss_mib: usage(stack.collector.process().pid())?.rss_mib,
            queue: get("otelcol_exporter_queue_size"),
            accepted_spans: get("otelcol_receiver_accepted_spans"),
            sent_spans: get("otelcol_exporter_sent_spans"),
            shed_spans: get("otelcol_receiver_refused_spans")
                + get("otelcol_exporter_enqueue_failed_spans")
                + get("otelcol_exporter_send_failed_spans"),
        })
    }
}

impl Sample {
    /// The span counters counted from `earlier` on (memory and queue as they are).
    pub fn since(mut self, earlier: &Sample) -> Sample {
        self.accepted_spans -= earlier.accepted_spans;
        self.sent_spans -= earlier.sent_spans;
        self.shed_spans -= earlier.shed_spans;
        self
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_lines_are_summed_by_name() {
        let text = "# HELP x\n# TYPE x counter\n\
            otelcol_exporter_sent_spans{exporter=\"zipkin\"} 10\n\
            otelcol_exporter_sent_spans{exporter=\"span_metrics\"} 5\n\
            otelcol_exporter_queue_size{exporter=\"zipkin\"} 3\n";
        let m = sum_by_name(text);
        assert_eq!(m["otelcol_exporter_sent_spans"], 15.0);
        assert_eq!(m["otelcol_exporter_queue_size"], 3.0);
    }
}

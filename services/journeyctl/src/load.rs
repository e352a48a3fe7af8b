//! `load`: drive the producer at a steady rate and summarise what happened.
//!
//! Requests leave on a fixed schedule (request n at n × period) until `duration` is up: a
//! producer slower than the rate makes the run send fewer, never run longer. With `batch`,
//! each request is a `POST /messages/batch` of that many messages (the rate stays in
//! messages per second).
//!
//! Latencies go into an HDR histogram (microseconds, 3 significant digits); on a terminal an
//! `indicatif` bar shows progress on stderr, elsewhere a line every 5 s does.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::sync::{Mutex, Semaphore};

use crate::producer::ProducerClient;

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Messages per second.
    pub rate: f64,
    pub duration: Duration,
    /// At most this many requests in flight.
    pub concurrency: usize,
    /// Progress on stderr (a bar on a terminal, a line every 5 s otherwise).
    pub progress: bool,
    /// Messages per request (`POST /messages/batch`); `None`: one per `POST /messages`.
    pub batch: Option<NonZeroUsize>,
    /// Keep the trace id of every acked request in [`LoadSummary::trace_ids`].
    pub keep_trace_ids: bool,
}

/// Why a load run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the latency histogram cannot be created")]
    Histogram(#[source] hdrhistogram::CreationError),
    #[error("the progress bar's template is invalid")]
    ProgressTemplate(#[source] indicatif::style::TemplateError),
}

/// What a run did. `sent` = messages sent; `acked` = messages the broker acked (a 202, or a
/// batch's acked items); `errors` = requests answered otherwise (grouped in `error_kinds`);
/// latencies are per request.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadSummary {
    pub run_id: String,
    pub sent: u64,
    pub acked: u64,
    /// The trace ids of the acked requests, when asked for (not printed).
    #[serde(skip)]
    pub trace_ids: Vec<String>,
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    pub elapsed_ms: u64,
    pub achieved_rate: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p90: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
}

impl LoadSummary {
    /// How long the run took, in seconds.
    pub fn elapsed_secs(&self) -> f64 {
        self.elapsed_ms as f64 / 1000.0
    }

    /// Acked messages per second over the run.
    pub fn acked_rate(&self) -> f64 {
        self.acked as f64 / self.elapsed_secs().max(0.001)
    }
}

impl std::fmt::Display for LoadSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "run {}: {:.1}s at {:.1} msg/s",
            self.run_id,
            self.elapsed_secs(),
            self.achieved_rate
        )?;
        writeln!(
            f,
            "sent {}  acked {}  errors {}",
            self.sent, self.acked, self.errors
        )?;
        for (k, n) in &self.error_kinds {
            writeln!(f, "  {n} × {k}")?;
        }
        write!(
            f,
            "latency p50 {:.1}ms  p90 {:.1}ms  p99 {:.1}ms  max {:.1}ms",
            self.latency_ms_p50, self.latency_ms_p90, self.latency_ms_p99, self.latency_ms_max
        )
    }
}

/// The longest latency the histogram tells apart (longer ones count as this): one hour.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// What the answers said so far.
#[derive(Debug)]
struct Tally {
    sent: u64,
    acked: u64,
    trace_ids: Option<Vec<String>>,
    errors: u64,
    error_kinds: BTreeMap<String, u64>,
    latency_us: Histogram<u64>,
}

impl Tally {
    fn new(keep_trace_ids: bool) -> Result<Tally, LoadError> {
        Ok(Tally {
            sent: 0,
            acked: 0,
            trace_ids: keep_trace_ids.then(Vec::new),
            errors: 0,
            error_kinds: BTreeMap::new(),
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                .map_err(LoadError::Histogram)?,
        })
    }

    fn record_latency(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us.saturating_record(us);
    }

    fn record_error(&mut self, kind: String) {
        self.errors += 1;
        *self.error_kinds.entry(kind).or_default() += 1;
    }

    /// `acked` and `errors`, as the progress bar's message says them.
    fn progress_message(&self) -> String {
        format!("{} acked  {} errors", self.acked, self.errors)
    }

    fn summary(&self, run_id: String, elapsed: Duration) -> LoadSummary {
        let ms = |us: u64| us as f64 / 1000.0;
        let h = &self.latency_us;
        LoadSummary {
            run_id,
            sent: self.sent,
            acked: self.acked,
            trace_ids: self.trace_ids.clone().unwrap_or_default(),
            errors: self.errors,
            error_kinds: self.error_kinds.clone(),
            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            achieved_rate: self.sent as f64 / elapsed.as_secs_f64().max(0.001),
            latency_ms_p50: ms(h.value_at_quantile(0.50)),
            latency_ms_p90: ms(h.value_at_quantile(0.90)),
            latency_ms_p99: ms(h.value_at_quantile(0.99)),
            latency_ms_max: ms(h.max()),
        }
    }
}

/// The bar on a terminal (`[###   ] 12/100 sent  11 acked  0 errors`), hidden elsewhere.
fn progress_bar(total: u64, show: bool) -> Result<ProgressBar, LoadError> {
    if !show {
        return Ok(ProgressBar::hidden());
    }
    let style = ProgressStyle::with_template("[{bar:30}] {pos}/{len} sent  {msg}")
        .map_err(LoadError::ProgressTemplate)?
        .progress_chars("# ");
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(style);
    Ok(bar)
}

/// Off a terminal: `load: 12/100 sent, 11 acked, 0 errors` every 5 s until aborted.
fn progress_lines(bar: ProgressBar, tally: Arc<Mutex<Tally>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        every.tick().await;
        loop {
            every.tick().await;
            let t = tally.lock().await;
            let total = bar.length().unwrap_or_default();
            eprintln!(
                "load: {}/{total} sent, {} acked, {} errors",
                t.sent, t.acked, t.errors
            );
        }
    })
}

/// What one request carries.
enum Request {
    One(serde_json::Value),
    Batch(Vec<serde_json::Value>),
}

/// Sends one request (one message, or a batch) and counts what the producer answered.
async fn send_one(client: ProducerClient, msgs: Request, tally: Arc<Mutex<Tally>>) {
    let outcome = match msgs {
        Request::One(msg) => client.post(&msg).await,
        Request::Batch(msgs) => client.post_batch(&msgs).await,
    };
    let mut t = tally.lock().await;
    match outcome {
        Ok(p) => {
            t.record_latency(p.latency);
            let acked = p.acked_count();
            t.acked += acked;
            if acked > 0
                && let (Some(ids), Some(id)) = (t.trace_ids.as_mut(), p.trace_id())
            {
                ids.push(id.to_string());
            }
            if !p.acked() {
                t.record_error(format!("HTTP {}", p.status));
            }
        }
        Err(e) if e.is_timeout() => t.record_error("timeout".to_string()),
        Err(e) if e.is_connect() => t.record_error("connection failed".to_string()),
        Err(e) => t.record_error(format!("request failed: {e}")),
    }
}

/// Counts a send task that did not finish (it panicked): never silently.
async fn joined(result: Result<(), tokio::task::JoinError>, tally: &Mutex<Tally>) {
    if let Err(e) = result {
        tally
            .lock()
            .await
            .record_error(format!("journeyctl's send task failed: {e}"));
    }
}

/// Runs the load. Every message is `{"key": "<run>-<n>", "payload": {"run": .., "seq": n}}`.
#[tracing::instrument(name = "load", skip_all, fields(rate = opts.rate, duration = ?opts.duration))]
pub async fn run(client: &ProducerClient, opts: &LoadOptions) -> Result<LoadSummary, LoadError> {
    let per_request = opts.batch.map_or(1, NonZeroUsize::get) as u64;
    let requests = (opts.rate * opts.duration.as_secs_f64() / per_request as f64)
        .round()
        .max(1.0) as u64;
    let run_id = format!("{:08x}", rand::random::<u32>());
    let tally = Arc::new(Mutex::new(Tally::new(opts.keep_trace_ids)?));
    let permits = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let bar = progress_bar(requests * per_request, opts.progress)?;
    let lines =
        (opts.progress && bar.is_hidden()).then(|| progress_lines(bar.clone(), tally.clone()));
    let started = Instant::now();
    let ends = started + opts.duration;

    let period = Duration::from_secs_f64(per_request as f64 / opts.rate.max(0.001));
    let mut tasks = tokio::task::JoinSet::new();
    for r in 0..requests {
        // Steady schedule: request r leaves at r × period (late ones go at once), until the
        // duration is up.
        tokio::time::sleep_until((started + period.mul_f64(r as f64)).into()).await;
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        if Instant::now() >= ends && r > 0 {
            break;
        }
        let message = |n| serde_json::json!({"key": format!("{run_id}-{n}"), "payload": {"run": run_id, "seq": n}});
        let msgs = match opts.batch {
            None => Request::One(message(r)),
            Some(_) => Request::Batch(
                (r * per_request..(r + 1) * per_request)
                    .map(message)
                    .collect(),
            ),
        };
        tally.lock().await.sent += per_request;
        bar.inc(per_request);
        let (client, counted, bar) = (client.clone(), tally.clone(), bar.clone());
        tasks.spawn(async move {
            let _permit = permit;
            send_one(client, msgs, counted.clone()).await;
            bar.set_message(counted.lock().await.progress_message());
        });
        while let Some(r) = tasks.try_join_next() {
            joined(r, &tally).await;
        }
    }
    while let Some(r) = tasks.join_next().await {
        joined(r, &tally).await;
    }
    if let Some(lines) = lines {
        lines.abort();
    }
    bar.finish();
    let summary = tally.lock().await.summary(run_id, started.elapsed());
    Ok(summary)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_gives_latency_percentiles_in_milliseconds() {
        let mut t = Tally::new(false).unwrap();
        for ms in 1..=100 {
            t.record_latency(Duration::from_millis(ms));
        }
        t.sent = 100;
        t.acked = 100;
        let s = t.summary("run".into(), Duration::from_secs(2));
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.002;
        assert!(close(s.latency_ms_p50, 50.0), "{s:?}");
        assert!(close(s.latency_ms_p90, 90.0), "{s:?}");
        assert!(close(s.latency_ms_p99, 99.0), "{s:?}");
        assert!(close(s.latency_ms_max, 100.0), "{s:?}");
        assert_eq!(s.achieved_rate, 50.0);
        assert_eq!((s.sent, s.acked, s.errors), (100, 100, 0));
    }

    #[test]
    fn a_run_without_answers_reports_zero_latencies() {
        let s = Tally::new(false)
            .unwrap()
            .summary("run".into(), Duration::from_secs(1));
        assert_eq!(
            (s.latency_ms_p50, s.latency_ms_p99, s.latency_ms_max),
            (0.0, 0.0, 0.0)
        );
    }

    #[test]
    fn errors_are_counted_by_kind() {
        let mut t = Tally::new(false).unwrap();
        t.record_error("HTTP 503".into());
        t.record_error("HTTP 503".into());
        t.record_error("timeout".into());
        let s = t.summary("run".into(), Duration::from_secs(1));
        assert_eq!(s.errors, 3);
        assert_eq!(
            s.error_kinds,
            [("HTTP 503".to_string(), 2), ("timeout".to_string(), 1)].into()
        );
        assert!(s.to_string().contains("  2 × HTTP 503"), "{s}");
    }
}

//! `load`: drive the producer at a steady rate and summarise what happened.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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
    /// Progress bar on stderr (a bar on a TTY, a line every 5 s otherwise).
    pub progress: bool,
}

/// What a run did. `sent` = requests made; `acked` = 202 answers (the broker acked);
/// `errors` = everything else (grouped in `error_kinds`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadSummary {
    pub run_id: String,
    pub sent: u64,
    pub acked: u64,
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    pub elapsed_ms: u64,
    pub achieved_rate: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p90: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
}

impl std::fmt::Display for LoadSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "run {}: {:.1}s at {:.1} msg/s",
            self.run_id,
            self.elapsed_ms as f64 / 1000.0,
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

/// The value at quantile `q` (0..=1) of sorted `v` (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs the load. Every message is `{"key": "<run>-<n>", "payload": {"run": .., "seq": n}}`.
#[tracing::instrument(name = "load", skip_all, fields(rate = opts.rate, duration = ?opts.duration))]
pub async fn run(client: &ProducerClient, opts: &LoadOptions) -> LoadSummary {
    let total = (opts.rate * opts.duration.as_secs_f64()).round().max(1.0) as u64;
    let run_id = format!("{:08x}", rand_u32());
    let sent = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let kinds: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let permits = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let started = Instant::now();

    let bar = opts.progress.then(|| {
        let (sent, acked, errors) = (sent.clone(), acked.clone(), errors.clone());
        let tty = std::io::stderr().is_terminal();
        tokio::spawn(async move {
            let mut last_line = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let s = sent.load(Ordering::Relaxed);
                let (a, e) = (
                    acked.load(Ordering::Relaxed),
                    errors.load(Ordering::Relaxed),
                );
                if tty {
                    let width = 30usize;
                    let filled = ((s as f64 / total as f64) * width as f64) as usize;
                    eprint!(
                        "\r[{}{}] {s}/{total} sent  {a} acked  {e} errors ",
                        "#".repeat(filled.min(width)),
                        " ".repeat(width - filled.min(width))
                    );
                    let _ = std::io::stderr().flush();
                } else if last_line.elapsed() >= Duration::from_secs(5) {
                    eprintln!("load: {s}/{total} sent, {a} acked, {e} errors");
                    last_line = Instant::now();
                }
            }
        })
    });

    let period = Duration::from_secs_f64(1.0 / opts.rate.max(0.001));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..total {
        // Steady schedule: message n leaves at n × period (late ones go at once).
        tokio::time::sleep_until((started + period.mul_f64(n as f64)).into()).await;
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let client = client.clone();
        let (sent, acked, errors, kinds, latencies) = (
            sent.clone(),
            acked.clone(),
            errors.clone(),
            kinds.clone(),
            latencies.clone(),
        );
        let run_id = run_id.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let msg = serde_json::json!({"key": format!("{run_id}-{n}"), "payload": {"run": run_id, "seq": n}});
            sent.fetch_add(1, Ordering::Relaxed);
            let kind = match client.post(&msg).await {
                Ok(p) => {
                    latencies.lock().await.push(p.latency.as_secs_f64() * 1000.0);
                    if p.acked() {
                        acked.fetch_add(1, Ordering::Relaxed);
                        None
                    } else {
                        Some(format!("HTTP {}", p.status))
                    }
                }
                Err(e) if e.is_timeout() => Some("timeout".to_string()),
                Err(e) if e.is_connect() => Some("connection failed".to_string()),
                Err(e) => Some(format!("request failed: {e}")),
            };
            if let Some(k) = kind {
                errors.fetch_add(1, Ordering::Relaxed);
                *kinds.lock().await.entry(k).or_default() += 1;
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    if let Some(bar) = bar {
        bar.abort();
        if std::io::stderr().is_terminal() {
            let (s, a, e) = (
                sent.load(Ordering::Relaxed),
                acked.load(Ordering::Relaxed),
                errors.load(Ordering::Relaxed),
            );
            eprintln!(
                "\r[{}] {s}/{total} sent  {a} acked  {e} errors ",
                "#".repeat(30)
            );
        }
    }
    let elapsed = started.elapsed();
    let mut lat = latencies.lock().await.clone();
    lat.sort_by(f64::total_cmp);
    let sent = sent.load(Ordering::Relaxed);
    let error_kinds = kinds.lock().await.clone();
    LoadSummary {
        run_id,
        sent,
        acked: acked.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        error_kinds,
        elapsed_ms: elapsed.as_millis() as u64,
        achieved_rate: sent as f64 / elapsed.as_secs_f64().max(0.001),
        latency_ms_p50: percentile(&lat, 0.50),
        latency_ms_p90: percentile(&lat, 0.90),
        latency_ms_p99: percentile(&lat, 0.99),
        latency_ms_max: lat.last().copied().unwrap_or(0.0),
    }
}

fn rand_u32() -> u32 {
    // No rand dependency: the clock's nanoseconds mixed with the pid are unique enough for a run id.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let x = t ^ (u64::from(std::process::id()) << 32);
    (x ^ (x >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15) as u32
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.9), 90.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}

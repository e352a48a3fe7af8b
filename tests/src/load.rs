//! A load of POSTs to the producer that notes every acked message: the fault tests on the local
//! stack and the kind tests through a port-forward count where each acked message ended up.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;

use crate::say;
use crate::services::post_within;

/// How long each POST may take: longer than the producer's own bound (a 503 after its 30 s
/// message timeout) would hold the load; a POST cut off here counts as an HTTP error.
const POST_TIMEOUT: Duration = Duration::from_secs(15);

/// One acked message.
#[derive(Debug, Clone)]
pub struct Ack {
    pub key: String,
    pub trace_id: String,
    pub at: Instant,
}

/// What a load run did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub sent: usize,
    pub acked: Vec<Ack>,
    /// Answers other than 202, by status (`timeout/transport` for no answer).
    pub errors: BTreeMap<String, usize>,
    pub held: Duration,
}

impl Outcome {
    pub fn error_count(&self) -> usize {
        self.errors.values().sum()
    }

    /// Acked messages per second over the run.
    pub fn rate(&self) -> f64 {
        self.acked.len() as f64 / self.held.as_secs_f64().max(0.001)
    }

    /// `"25 s, 18 msg/s"`.
    pub fn held_text(&self) -> String {
        format!("{:.0} s, {:.0} msg/s", self.held.as_secs_f64(), self.rate())
    }

    /// The acks from `since` on (in order).
    pub fn acked_after(&self, since: Instant) -> impl Iterator<Item = &Ack> {
        self.acked.iter().filter(move |a| a.at >= since)
    }
}

#[derive(Debug, Default)]
struct Shared {
    outcome: Mutex<Outcome>,
    stop: AtomicBool,
}

/// A load running on the current runtime.
#[derive(Debug)]
pub struct Load {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    /// POSTs to the producer at `producer` (`http://host:port`) one message after another
    /// (unique keys `<run>-<n>`), pausing `every` between them, until [`Load::stop`]; prints
    /// progress every 5 s.
    pub fn start(producer: &str, run: &str, every: Duration) -> Load {
        let shared = Arc::new(Shared::default());
        let (url, run, s) = (
            format!("{producer}/messages"),
            run.to_string(),
            shared.clone(),
        );
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut report = started;
            let mut n = 0;
            while !s.stop.load(Ordering::SeqCst) {
                let key = format!("{run}-{n}");
                n += 1;
                let body = json!({"key": key, "payload": {"n": n}})
                    .to_string()
                    .into_bytes();
                let answer =
                    post_within(&url, Some("application/json"), body, &[], POST_TIMEOUT).await;
                {
                    let mut o = lock(&s.outcome);
                    o.sent = n;
                    match answer {
                        Ok(a) if a.status == 202 => {
                            let trace_id = a.str("trace_id").unwrap_or_default().to_string();
                            o.acked.push(Ack {
                                key,
                                trace_id,
                                at: Instant::now(),
                            });
                        }
                        Ok(a) => *o.errors.entry(a.status.to_string()).or_default() += 1,
                        Err(_) => *o.errors.entry("timeout/transport".into()).or_default() += 1,
                    }
                    o.held = started.elapsed();
                    if report.elapsed() >= Duration::from_secs(5) {
                        report = Instant::now();
                        say!(
                            "load {run}: {:.0}s: sent {}, acked {}, errors {:?}",
                            o.held.as_secs_f64(),
                            o.sent,
                            o.acked.len(),
                            o.errors
                        );
                    }
                }
                tokio::time::sleep(every).await;
            }
        });
        Load { shared, task }
    }

    /// Stops the load (after the POST in progress) and returns what it did.
    pub async fn stop(self) -> Result<Outcome> {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.task.await?;
        let o = std::mem::take(&mut *lock(&self.shared.outcome));
        say!(
            "load stopped: sent {}, acked {}, errors {:?} in {:.1?}",
            o.sent,
            o.acked.len(),
            o.errors,
            o.held
        );
        Ok(o)
    }
}

/// The value behind `m`, also after a panic while it was held.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

//! `verify`: POST a message to the producer, then poll Zipkin (300 ms, doubling up to 2 s)
//! until the journey holds every expected hop or the timeout passes; print the tree and
//! PASS/FAIL.

use std::time::{Duration, Instant};

use backon::Retryable as _;
use serde_json::{Value, json};

use super::{http_client, print_pages, progress_line};
use crate::cli::{VerifyArgs, use_color};
use crate::error::Error;
use crate::journey::Journey;
use crate::links::LinkLimits;
use crate::producer::ProducerClient;
use crate::verify::{HopSpec, Verdict, check};
use crate::zipkin::{Span, ZipkinClient, ZipkinError};

/// What one look at Zipkin found.
struct Look {
    spans: Vec<Span>,
    verdict: Verdict,
    /// Linked traces were left out (limits).
    truncated: bool,
}

/// Why polling goes on; at the deadline, how it ended.
enum NotYet {
    Incomplete(Look),
    Zipkin(ZipkinError),
}

impl NotYet {
    fn progress(&self) -> String {
        match self {
            NotYet::Incomplete(l) => format!(
                "{} spans so far; pending: {}",
                l.spans.len(),
                l.verdict.pending().join(", ")
            ),
            NotYet::Zipkin(e) => crate::error::chain(e),
        }
    }
}

/// Posts the message; its trace id once the producer accepted it.
async fn post(producer: &ProducerClient, payload: Value) -> Result<String, Error> {
    let message = json!({"key": "journeyctl-verify", "payload": payload});
    let posted = producer
        .post(&message)
        .await
        .map_err(|source| Error::ProducerUnreachable {
            url: producer.url().to_string(),
            source,
        })?;
    match posted.trace_id() {
        Some(t) if posted.acked() => Ok(t.to_string()),
        _ => Err(Error::ProducerRefused {
            status: posted.status,
            body: posted.body.to_string(),
        }),
    }
}

/// The trace's spans and the verdict on them, following links (trace mode `link`) when the
/// trace alone does not pass.
async fn look(
    zipkin: &ZipkinClient,
    trace_id: &str,
    hops: &[HopSpec],
    limits: Option<&LinkLimits>,
) -> Result<Look, NotYet> {
    let spans = zipkin
        .trace(trace_id)
        .await
        .map_err(NotYet::Zipkin)?
        .unwrap_or_default();
    let mut look = Look {
        verdict: check(&spans, hops),
        spans,
        truncated: false,
    };
    if let Some(limits) = limits.filter(|_| !look.verdict.passed() && !look.spans.is_empty()) {
        let services: Vec<String> = hops.iter().map(|h| h.service.clone()).collect();
        match crate::links::follow(zipkin, look.spans.clone(), Some(&services), limits).await {
            Ok(st) if !st.linked.is_empty() => {
                look.verdict = check(&st.spans, hops);
                look.spans = st.spans;
                look.truncated = st.truncated;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %crate::error::chain(&e), "following links"),
        }
    }
    if look.verdict.passed() {
        Ok(look)
    } else {
        Err(NotYet::Incomplete(look))
    }
}

/// Looks until the journey passes or `timeout` passes; progress when what is pending changes.
async fn poll(
    zipkin: &ZipkinClient,
    trace_id: &str,
    hops: &[HopSpec],
    limits: Option<&LinkLimits>,
    timeout: Duration,
) -> Result<Look, Error> {
    let deadline = Instant::now() + timeout;
    let mut last_line = String::new();
    let outcome = (|| look(zipkin, trace_id, hops, limits))
        .retry(crate::retry::until(
            deadline,
            Duration::from_millis(300),
            Duration::from_secs(2),
        ))
        .notify(|not_yet, _| {
            let line = not_yet.progress();
            if line != last_line {
                progress_line(&line);
                last_line = line;
            }
        })
        .await;
    match outcome {
        Ok(look) | Err(NotYet::Incomplete(look)) => Ok(look),
        Err(NotYet::Zipkin(e)) => Err(Error::Zipkin(e)),
    }
}

pub(super) async fn verify(a: VerifyArgs) -> Result<(), Error> {
    let hops = a.hops();
    let payload = a
        .payload
        .clone()
        .unwrap_or_else(|| json!({"from": "journeyctl verify"}));
    let producer = http_client(
        "the producer",
        ProducerClient::new(&a.producer_url, Duration::from_secs(30)),
    )?;
    let zipkin = http_client("Zipkin", ZipkinClient::new(&a.zipkin_url))?;
    let trace_id = post(&producer, payload)
        .await
        .inspect_err(|_| println!("FAIL"))?;
    let chain: Vec<String> = hops.iter().map(ToString::to_string).collect();
    progress_line(&format!(
        "message accepted (trace {trace_id}); waiting up to {} for {}",
        humantime::format_duration(a.timeout),
        chain.join(" → ")
    ));
    let limits = a.links.limits();
    let look = poll(&zipkin, &trace_id, &hops, limits.as_ref(), a.timeout)
        .await
        .inspect_err(|_| println!("FAIL"))?;
    if look.spans.is_empty() {
        println!("trace {trace_id}: no spans in Zipkin");
        println!("{}", zipkin.trace_page(&trace_id));
    } else {
        let j = Journey::new(look.spans);
        print!("{}", j.render(use_color()));
        print_pages(&zipkin, &j, look.truncated);
    }
    println!("{}", look.verdict);
    if look.verdict.passed() {
        Ok(())
    } else {
        Err(Error::VerifyFailed {
            failures: look.verdict.failures(),
        })
    }
}

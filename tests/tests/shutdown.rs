//! Graceful shutdown: SIGTERM right after a burst of acked POSTs loses nothing; the relay and
//! the sink finish in-flight work, commit, flush spans, and their successors carry on.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use journey_tests::runner::{self, Fixture, block_on};
use journey_tests::services::{JOURNEY_SPANS, Service, TRACE_TIMEOUT, has_spans, seed_topics};
use journey_tests::stack::Stack;
use journey_tests::zipkin::ZipkinApi;
use journey_tests::{say, tests};
use serde_json::json;

/// Messages in the burst.
const N: usize = 50;

#[derive(Debug)]
struct Seeded {
    stack: Stack,
}

impl Fixture for Seeded {
    fn logs_dirs(&self) -> Vec<std::path::PathBuf> {
        vec![self.stack.logs_dir()]
    }
}

fn main() -> std::process::ExitCode {
    runner::main(
        || {
            block_on(async {
                let stack = Stack::start().await?;
                seed_topics(&stack).await?;
                Ok(Seeded { stack })
            })
        },
        tests![
            sigterm_right_after_a_burst_of_acked_posts_loses_nothing_and_every_trace_is_complete
        ],
    )
}

async fn consumer(stack: &Stack, role: &str, name: &str) -> Result<Service> {
    // Same group and service name as the first generation: a restart, not a new consumer.
    Service::consumer(
        stack,
        role,
        name,
        &[("OTEL_SERVICE_NAME", role), ("PROCESS_DELAY_MS", "40")],
    )
    .await
}

fn sigterm_and_wait(service: &mut Service) -> Result<Duration> {
    let started = Instant::now();
    service.process().signal(libc::SIGTERM)?;
    let status = service.process_mut().wait_exit(Duration::from_secs(30))?;
    ensure!(
        status.success(),
        "{} exited with {status} after SIGTERM",
        service.process().name()
    );
    Ok(started.elapsed())
}

fn sigterm_right_after_a_burst_of_acked_posts_loses_nothing_and_every_trace_is_complete(
    f: &Seeded,
) -> Result<()> {
    block_on(async {
        let stack = &f.stack;
        let (mut producer, mut relay, mut sink) = tokio::try_join!(
            Service::producer(stack, "producer", &[]),
            consumer(stack, "relay", "relay"),
            consumer(stack, "sink", "sink"),
        )?;
        let producer_url = producer.url();

        let started = Instant::now();
        let mut posts = tokio::task::JoinSet::new();
        for i in 0..N {
            let url = producer_url.clone();
            posts.spawn(async move {
                let http = reqwest::Client::new();
                let resp = http
                    .post(format!("{url}/messages"))
                    .json(&json!({"key": format!("burst-{i}"), "payload": {"i": i}}))
                    .send()
                    .await?;
                let status = resp.status();
                let body: serde_json::Value = resp.json().await?;
                ensure!(status == 202, "POST {i}: {status} {body}");
                Ok::<_, anyhow::Error>(body["trace_id"].as_str().unwrap_or_default().to_string())
            });
        }
        let mut trace_ids = Vec::new();
        while let Some(r) = posts.join_next().await {
            trace_ids.push(r??);
        }
        let acked_in = started.elapsed();
        say!(
            "{N} POSTs acked in {acked_in:?} ({:.0} msg/s)",
            N as f64 / acked_in.as_secs_f64()
        );

        // SIGTERM everything right away: the relay has a backlog of simulated work.
        let relay_stop = sigterm_and_wait(&mut relay)?;
        let sink_stop = sigterm_and_wait(&mut sink)?;
        let producer_stop = sigterm_and_wait(&mut producer)?;
        say!(
            "graceful stops: relay {relay_stop:?}, sink {sink_stop:?}, producer {producer_stop:?}"
        );

        // The next generation picks up from the committed offsets.
        let (_relay2, _sink2) = tokio::try_join!(
            consumer(stack, "relay", "relay-2"),
            consumer(stack, "sink", "sink-2")
        )?;

        let zipkin = ZipkinApi::new(stack.zipkin.url());
        let mut duplicates = BTreeMap::new();
        for id in &trace_ids {
            let spans = zipkin
                .wait_for_trace(id, TRACE_TIMEOUT, |s| has_spans(s, &JOURNEY_SPANS))
                .await?;
            let processed = spans
                .iter()
                .filter(|s| s.name() == "process messages")
                .count();
            if processed > 1 {
                duplicates.insert(id.clone(), processed);
            }
        }
        let total = started.elapsed();
        say!(
            "all {N} traces complete {total:?} after the burst started ({:.0} msg/s end to end, shutdown and restart included)",
            N as f64 / total.as_secs_f64()
        );
        ensure!(
            duplicates.is_empty(),
            "a graceful stop commits what it processed, yet these were processed again: {duplicates:?}"
        );
        Ok(())
    })
}

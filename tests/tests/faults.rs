//! Faults on the local stack, bounded in time, on 127.0.0.1 only: every message the producer
//! acked is counted against what reached the end of the journey.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use journey_tests::runner::{self, Fixture, block_on};
use journey_tests::services::{
    Journey, end_offsets, post_within, read_from, wait_committed_to_end,
};
use journey_tests::{say, tests};
use rdkafka::Message as _;
use serde_json::json;

/// How long the broker stays frozen: longer than the relay's send timeout (10 s), so forwards
/// in flight time out while it is stopped.
const FREEZE: Duration = Duration::from_secs(15);

/// The journey, and a lock so a test can restart its services (as the kubelet would).
#[derive(Debug)]
struct Faults(Mutex<Journey>);

impl Fixture for Faults {
    fn logs_dirs(&self) -> Vec<std::path::PathBuf> {
        vec![lock(&self.0).stack.logs_dir()]
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn main() -> std::process::ExitCode {
    runner::main_in_order(
        || {
            // No retries: before, one timed-out forward was a dead letter at once. Slow work so
            // the relay has a backlog (and forwards in flight) when the broker stops. A shorter
            // stall limit, so a wedged client's liveness fails within the test.
            block_on(Journey::start(&[
                ("MAX_RETRIES", "0"),
                ("PROCESS_DELAY_MS", "150"),
                ("KAFKA_STALL_TIMEOUT", "20s"),
                ("RUST_LOG", "info,consumer::context=debug"),
            ]))
            .map(|j| Faults(Mutex::new(j)))
        },
        tests![a_broker_frozen_longer_than_the_send_timeout_loses_nothing_and_dead_letters_nothing],
    )
}

/// The keys the producer acked (202), in order.
type Acked = Arc<Mutex<Vec<String>>>;

/// POSTs a message with a unique key every `every` until `stop`; notes the acked ones.
async fn load(url: String, run: String, every: Duration, stop: Instant, acked: Acked) -> usize {
    let mut sent = 0;
    while Instant::now() < stop {
        let key = format!("{run}-{sent}");
        sent += 1;
        let body =
            serde_json::to_vec(&json!({"key": key, "payload": {"n": sent}})).unwrap_or_default();
        // Each answer within the producer's bound (a 503 after the message timeout).
        if let Ok(a) = post_within(
            &url,
            Some("application/json"),
            body,
            &[],
            Duration::from_secs(15),
        )
        .await
            && a.status == 202
        {
            acked
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(key);
        }
        tokio::time::sleep(every).await;
    }
    sent
}

fn a_broker_frozen_longer_than_the_send_timeout_loses_nothing_and_dead_letters_nothing(
    f: &Faults,
) -> Result<()> {
    let mut j = lock(&f.0);
    let bootstrap = j.bootstrap().to_string();
    let (out_before, dlq_before) = (
        end_offsets(&bootstrap, "messages.processed")?,
        end_offsets(&bootstrap, "messages.dlq")?,
    );
    let run = format!("freeze-{}", rand::random::<u32>());
    let acked: Acked = Arc::default();
    let sent = block_on(async {
        let url = format!("{}/messages", j.producer.url());
        let stop = Instant::now() + Duration::from_secs(8) + FREEZE + Duration::from_secs(8);
        let load = tokio::spawn(load(
            url,
            run.clone(),
            Duration::from_millis(40),
            stop,
            acked.clone(),
        ));
        tokio::time::sleep(Duration::from_secs(8)).await;
        say!("freezing the broker (SIGSTOP) for {FREEZE:?}");
        j.stack.kafka.process().signal(libc::SIGSTOP)?;
        tokio::time::sleep(FREEZE).await;
        j.stack.kafka.process().signal(libc::SIGCONT)?;
        say!("the broker runs again (SIGCONT)");
        Ok::<_, anyhow::Error>(load.await?)
    })?;
    let acked = acked
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    say!("sent {sent}, acked {}", acked.len());
    ensure!(
        acked.len() > 100,
        "too few acked to say anything: {}",
        acked.len()
    );

    // Every acked message forwarded by the relay (duplicates counted), within 2 minutes.
    let started = Instant::now();
    let counts = loop {
        let records = read_from(
            &bootstrap,
            "messages.processed",
            &out_before,
            Duration::from_secs(10),
        )?;
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for r in &records {
            if let Some(k) = r.key() {
                let k = String::from_utf8_lossy(k).into_owned();
                if k.starts_with(&run) {
                    *counts.entry(k).or_default() += 1;
                }
            }
        }
        let missing = acked.iter().filter(|k| !counts.contains_key(*k)).count();
        if missing == 0 {
            break counts;
        }
        // The kubelet's part: a consumer whose client stayed wedged after the freeze fails
        // its liveness probe and is restarted with a new client.
        block_on(async {
            let j = &mut *j;
            for s in [&mut j.relay, &mut j.sink] {
                s.restart_if_unhealthy(&j.stack).await?;
            }
            Ok::<_, anyhow::Error>(())
        })?;
        if started.elapsed() > Duration::from_secs(120) {
            bail!(
                "{missing} of {} acked messages never forwarded",
                acked.len()
            );
        }
        say!(
            "{missing} acked messages not forwarded yet ({:.0?})",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_secs(3));
    };
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    say!(
        "every acked message forwarded after {:.1?}; {duplicates} duplicates",
        started.elapsed()
    );

    let dead = read_from(
        &bootstrap,
        "messages.dlq",
        &dlq_before,
        Duration::from_secs(5),
    )?;
    ensure!(
        dead.is_empty(),
        "a broker outage is no poison message: {} records dead-lettered",
        dead.len()
    );

    // The sink consumed it all: its committed offsets reach the end of messages.processed.
    let at = wait_committed_to_end(
        &bootstrap,
        "sink",
        "messages.processed",
        Duration::from_secs(60),
    )?;
    say!("the sink committed up to the end of messages.processed: {at:?}");
    Ok(())
}

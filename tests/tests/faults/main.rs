//! Faults on the local stack, bounded in time, on 127.0.0.1 only, each under load: every
//! message the producer acked is counted against what the sink received (lost must be 0;
//! duplicates are reported).
//!
//! `make test` runs the short variants; `FAULTS=long` (`make faults`) the long ones (a 45 s
//! freeze, 30 s outages, more cycles), and with `FAULTS_REPORT=<path>` writes the figures there
//! (docs/reliability.md). Hostile records: `hostile.rs`.

mod hostile;
mod load;
mod report;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use hostile::hostile_records_are_forwarded_or_dead_lettered_and_the_relay_keeps_going;
use journey_tests::load::{Ack, Load, Outcome, lock};
use journey_tests::runner::{self, Fixture, block_on};
use journey_tests::services::{
    Answer, JOURNEY_SPANS, Journey, SERVICE_READY_TIMEOUT, Service, TRACE_TIMEOUT, find_span,
    has_spans, post_json, render_tree,
};
use journey_tests::stack::{Component, Stack};
use journey_tests::{say, tests};
use load::{Marks, Tally, settle};
use report::Row;
use serde_json::json;
use tokio::time::sleep;

/// The durations of one variant.
#[derive(Debug, Clone, Copy)]
pub struct Mode {
    pub long: bool,
    /// How long the broker stays frozen.
    pub freeze: Duration,
    /// How long the Collector, Zipkin or the broker stays down.
    pub outage: Duration,
    /// Load before a fault, and after it (or between two cycles).
    pub steady: Duration,
    /// Kill, SIGTERM and scale cycles per test.
    pub cycles: usize,
    /// How long each acked message may take to reach the sink once the load stopped.
    pub settle: Duration,
}

impl Mode {
    pub const SHORT: Mode = Mode {
        long: false,
        // Longer than the relay's send timeout (10 s): forwards in flight time out.
        freeze: Duration::from_secs(15),
        outage: Duration::from_secs(8),
        steady: Duration::from_secs(4),
        cycles: 1,
        settle: Duration::from_secs(120),
    };
    pub const LONG: Mode = Mode {
        long: true,
        // Longer than the consumers' session timeout (10 s), the relay's send timeout (10 s)
        // and the producer's message timeout (30 s).
        freeze: Duration::from_secs(45),
        outage: Duration::from_secs(30),
        steady: Duration::from_secs(15),
        cycles: 3,
        settle: Duration::from_secs(240),
    };

    fn get() -> Mode {
        if std::env::var("FAULTS").is_ok_and(|v| v == "long") {
            Mode::LONG
        } else {
            Mode::SHORT
        }
    }
}

/// Pause between two POSTs of a load (with the POST itself: ~10-15 msg/s on 2 busy cores).
const EVERY: Duration = Duration::from_millis(25);

/// The journey, and a lock so a test can restart its services (as the kubelet would).
#[derive(Debug)]
struct Faults {
    journey: Mutex<Journey>,
    mode: Mode,
}

impl Fixture for Faults {
    fn logs_dirs(&self) -> Vec<std::path::PathBuf> {
        vec![lock(&self.journey).stack.logs_dir()]
    }
}

fn main() -> std::process::ExitCode {
    let mode = Mode::get();
    runner::main_in_order(
        || {
            say!("faults: {mode:?}");
            // No retries: before, one timed-out forward was a dead letter at once. Slow work so
            // the relay has a backlog (and forwards in flight) when a fault strikes. A shorter
            // stall limit, so a wedged client's liveness fails within the test.
            block_on(Journey::start(&[
                ("MAX_RETRIES", "0"),
                ("PROCESS_DELAY_MS", "150"),
                ("KAFKA_STALL_TIMEOUT", "20s"),
                ("RUST_LOG", "info,consumer::context=debug"),
            ]))
            .map(|journey| Faults {
                journey: Mutex::new(journey),
                mode,
            })
        },
        tests![
            a_broker_frozen_longer_than_the_send_timeout_loses_nothing_and_dead_letters_nothing,
            a_relay_killed_with_sigkill_under_load_is_restarted_and_loses_nothing,
            a_relay_stopped_with_sigterm_under_load_drains_and_loses_nothing,
            a_relay_group_scaled_from_one_to_three_and_back_loses_nothing_and_keeps_traces_whole,
            a_collector_outage_under_load_costs_no_http_error_and_traces_complete_again,
            a_zipkin_outage_under_load_costs_no_http_error_and_traces_complete_again,
            the_broker_killed_with_sigkill_and_started_again_under_load_loses_nothing,
            hostile_records_are_forwarded_or_dead_lettered_and_the_relay_keeps_going,
        ],
    )
}

/// One test's run: the journey (locked for the test), where the output topics ended before
/// it, and the prefix of its message keys.
struct Run<'a> {
    f: &'a Faults,
    j: MutexGuard<'a, Journey>,
    marks: Marks,
    id: String,
}

impl<'a> Run<'a> {
    fn new(f: &'a Faults, what: &str) -> Result<Run<'a>> {
        let j = lock(&f.journey);
        let marks = Marks::take(&j)?;
        let id = format!("{what}-{}", rand::random::<u32>());
        Ok(Run { f, j, marks, id })
    }

    /// Runs `fault` `cycles` times under a load of the run's messages, with [`Mode::steady`]
    /// load before each and after the last; the load's outcome and what each fault returned.
    fn under_load<T>(
        &mut self,
        cycles: usize,
        mut fault: impl AsyncFnMut(&mut Journey) -> Result<T>,
    ) -> Result<(Outcome, Vec<T>)> {
        let (j, run, steady) = (&mut *self.j, &self.id, self.f.mode.steady);
        block_on(async {
            let load = Load::start(&j.producer.url(), run, EVERY);
            let mut out = Vec::new();
            for cycle in 1..=cycles {
                sleep(steady).await;
                say!("{run}: fault {cycle} of {cycles}");
                out.push(fault(j).await?);
            }
            sleep(steady).await;
            Ok((load.stop().await?, out))
        })
    }

    /// Counts the run at the sink, adds the fault's row to the report, and fails unless every
    /// acked message reached the sink and none was dead-lettered.
    fn settle(&mut self, fault: String, load: Outcome, recovery: String) -> Result<Tally> {
        ensure!(
            load.acked.len() >= 50,
            "too few acked to say anything: {} of {} sent ({:?})",
            load.acked.len(),
            load.sent,
            load.errors
        );
        let mode = self.f.mode;
        let tally = settle(&mut self.j, &self.marks, &load.acked, mode.settle)?;
        report::row(
            &mode,
            Row {
                fault,
                load,
                tally: tally.clone(),
                recovery,
            },
        )?;
        ensure!(
            tally.lost == 0,
            "{} of {} acked messages never reached the sink ({tally})",
            tally.lost,
            tally.acked
        );
        ensure!(
            tally.dead_lettered == 0,
            "a fault is no poison message: {} records dead-lettered",
            tally.dead_lettered
        );
        Ok(tally)
    }
}

/// What the kubelet does after a container exited: starts it again; the time until it is
/// ready.
async fn restarted(service: &mut Service, stack: &Stack) -> Result<Duration> {
    let started = Instant::now();
    service.process_mut().wait_exit(Duration::from_secs(30))?;
    let why = service.restart_if_unhealthy(stack).await?;
    ensure!(
        why.is_some(),
        "{} was not restarted",
        service.process().name()
    );
    Ok(started.elapsed())
}

/// `"1.2 s, 1.4 s"`.
fn secs(ds: &[Duration]) -> String {
    ds.iter()
        .map(|d| format!("{:.1} s", d.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn a_broker_frozen_longer_than_the_send_timeout_loses_nothing_and_dead_letters_nothing(
    f: &Faults,
) -> Result<()> {
    let mut run = Run::new(f, "freeze")?;
    let m = f.mode;
    let (outcome, thawed) = run.under_load(1, async |j| {
        say!("freezing the broker (SIGSTOP) for {:?}", m.freeze);
        j.stack.kafka.process().signal(libc::SIGSTOP)?;
        sleep(m.freeze).await;
        j.stack.kafka.process().signal(libc::SIGCONT)?;
        say!("the broker runs again (SIGCONT)");
        Ok(Instant::now())
    })?;
    let first_ack = thawed
        .first()
        .and_then(|&t| outcome.acked_after(t).next().map(|a| a.at - t));
    run.settle(
        format!("broker frozen (SIGSTOP) {} s", m.freeze.as_secs()),
        outcome,
        format!(
            "first 202 {} after SIGCONT",
            first_ack.map_or("never".into(), |d| secs(&[d]))
        ),
    )?;
    Ok(())
}

fn a_relay_killed_with_sigkill_under_load_is_restarted_and_loses_nothing(f: &Faults) -> Result<()> {
    let mut run = Run::new(f, "relay-kill")?;
    let m = f.mode;
    let (outcome, ready) = run.under_load(m.cycles, async |j| {
        j.relay.process().signal(libc::SIGKILL)?;
        restarted(&mut j.relay, &j.stack).await
    })?;
    run.settle(
        format!("relay killed (SIGKILL) × {}", m.cycles),
        outcome,
        format!("relay restarted and ready in {}", secs(&ready)),
    )?;
    Ok(())
}

fn a_relay_stopped_with_sigterm_under_load_drains_and_loses_nothing(f: &Faults) -> Result<()> {
    let mut run = Run::new(f, "relay-term")?;
    let m = f.mode;
    let (outcome, times) = run.under_load(m.cycles, async |j| {
        let started = Instant::now();
        j.relay.process().signal(libc::SIGTERM)?;
        // Within the pod's grace period (the chart's 30 s), with exit code 0.
        let status = j.relay.process_mut().wait_exit(Duration::from_secs(30))?;
        ensure!(
            status.success(),
            "the relay exited with {status} after SIGTERM"
        );
        let drained = started.elapsed();
        Ok((drained, restarted(&mut j.relay, &j.stack).await?))
    })?;
    let (drained, ready): (Vec<_>, Vec<_>) = times.into_iter().unzip();
    let tally = run.settle(
        format!("relay stopped (SIGTERM) × {}", m.cycles),
        outcome,
        format!(
            "drained and exited 0 in {}; successor ready in {}",
            secs(&drained),
            secs(&ready)
        ),
    )?;
    ensure!(
        tally.dup_forwarded == 0,
        "a graceful stop commits what it forwarded, yet {} records were forwarded again",
        tally.dup_forwarded
    );
    Ok(())
}

fn a_relay_group_scaled_from_one_to_three_and_back_loses_nothing_and_keeps_traces_whole(
    f: &Faults,
) -> Result<()> {
    let mut run = Run::new(f, "scale")?;
    let m = f.mode;
    let (outcome, moves) = run.under_load(m.cycles, async |j| {
        say!("scaling the relays 1 -> 3");
        let started = Instant::now();
        let mut extra = Vec::new();
        for n in 2..=3 {
            // The same group and service name: replicas of one Deployment.
            let mut env = j.relay.env().clone();
            env.insert(
                "LISTEN_ADDR".into(),
                format!("127.0.0.1:{}", journey_tests::process::free_port()),
            );
            let name = format!("relay-{n}-{:04x}", rand::random::<u16>());
            extra.push(Service::start(&j.stack, &name, "consumer", env).await?);
        }
        let up = started.elapsed();
        sleep(m.steady).await;
        say!("scaling the relays 3 -> 1 (SIGTERM)");
        let started = Instant::now();
        for s in &extra {
            s.process().signal(libc::SIGTERM)?;
        }
        for s in &mut extra {
            let status = s.process_mut().wait_exit(Duration::from_secs(30))?;
            ensure!(
                status.success(),
                "{} exited with {status}",
                s.process().name()
            );
            let forwarded = s
                .process()
                .tail(usize::MAX)
                .matches("\"forwarded\"")
                .count();
            say!("{} forwarded {forwarded} records", s.process().name());
            ensure!(
                forwarded > 0,
                "{} took no partition: nothing was rebalanced",
                s.process().name()
            );
        }
        Ok([up, started.elapsed()])
    })?;
    let moves: Vec<Duration> = moves.concat();
    let sample = spread(&outcome.acked, 12);
    run.settle(
        format!("relays scaled 1 → 3 → 1 × {}", m.cycles),
        outcome,
        format!("scale-ups ready / scale-downs drained in {}", secs(&moves)),
    )?;
    // Traces stay whole across the rebalances: each sampled message's journey is one trace, the
    // relay's process span a child of the producer's send span.
    block_on(async {
        for a in &sample {
            let spans = run
                .j
                .zipkin()
                .wait_for_trace(&a.trace_id, TRACE_TIMEOUT, |s| has_spans(s, &JOURNEY_SPANS))
                .await
                .with_context(|| format!("the trace of {}", a.key))?;
            let send = find_span(&spans, "send messages", "producer")?;
            for p in spans.iter().filter(|s| s.name() == "process messages") {
                ensure!(
                    p.parent_id.as_deref() == Some(send.id.as_str()),
                    "{}: a process span outside the journey:{}",
                    a.key,
                    render_tree(&spans)
                );
            }
        }
        say!("{} sampled traces complete and whole", sample.len());
        Ok(())
    })
}

/// Up to `n` acks spread evenly over `acked`.
fn spread(acked: &[Ack], n: usize) -> Vec<Ack> {
    let step = acked.len().div_ceil(n).max(1);
    acked.iter().step_by(step).cloned().collect()
}

fn a_collector_outage_under_load_costs_no_http_error_and_traces_complete_again(
    f: &Faults,
) -> Result<()> {
    telemetry_outage(f, Component::Collector)
}

fn a_zipkin_outage_under_load_costs_no_http_error_and_traces_complete_again(
    f: &Faults,
) -> Result<()> {
    telemetry_outage(f, Component::Zipkin)
}

/// `component` down for the outage under load: every POST still acked, every acked message at
/// the sink, and complete traces again once it is back.
fn telemetry_outage(f: &Faults, component: Component) -> Result<()> {
    let mut run = Run::new(f, &format!("{component:?}-outage").to_lowercase())?;
    let m = f.mode;
    let id = run.id.clone();
    let (outcome, times) = run.under_load(1, async |j| {
        j.stack.kill(component);
        let down = Instant::now();
        sleep(m.outage).await;
        j.stack.start_again(component).await?;
        let back = down.elapsed();
        // The first message sent once it is back whose trace is complete.
        Ok((back, first_complete_trace(j, &id).await?))
    })?;
    let (back, traced) = times.first().copied().context("no outage")?;
    let errors = outcome.error_count();
    let after: Vec<Ack> = outcome.acked.iter().rev().take(5).cloned().collect();
    run.settle(
        format!("{component:?} down {} s", m.outage.as_secs()),
        outcome,
        format!(
            "ready again {:.0} s after the kill; a complete trace {:.1} s after that",
            back.as_secs_f64(),
            traced.as_secs_f64()
        ),
    )?;
    ensure!(
        errors == 0,
        "{component:?} down must cost no HTTP error: {errors}"
    );
    // The last messages of the load, sent after the outage, have complete traces.
    block_on(async {
        for a in &after {
            run.j
                .zipkin()
                .wait_for_trace(&a.trace_id, TRACE_TIMEOUT, |s| has_spans(s, &JOURNEY_SPANS))
                .await
                .with_context(|| format!("the trace of {} after the outage", a.key))?;
        }
        Ok(())
    })
}

/// Sends probe messages (keys `<run>-probe-<n>`) one after another until `good` says yes to
/// an answer (at most [`SERVICE_READY_TIMEOUT`]); the time that took.
async fn probe_until(
    j: &Journey,
    run: &str,
    what: &str,
    good: impl AsyncFn(&Journey, &Answer) -> bool,
) -> Result<Duration> {
    let started = Instant::now();
    for n in 0.. {
        let key = format!("{run}-probe-{n}");
        let answer = post_json(&j.producer, &json!({"key": key, "payload": {"probe": n}})).await;
        if let Ok(a) = &answer
            && good(j, a).await
        {
            break;
        }
        ensure!(
            started.elapsed() < SERVICE_READY_TIMEOUT,
            "no {what} within {SERVICE_READY_TIMEOUT:?}; the last answer: {answer:?}"
        );
        sleep(Duration::from_millis(200)).await;
    }
    say!("{what} after {:.1?}", started.elapsed());
    Ok(started.elapsed())
}

/// The first message sent whose trace is complete in Zipkin.
async fn first_complete_trace(j: &Journey, run: &str) -> Result<Duration> {
    probe_until(j, run, "a complete trace again", async |j, a| {
        let Ok(trace_id) = a.trace_id() else {
            return false;
        };
        j.zipkin()
            .wait_for_trace(&trace_id, Duration::from_secs(5), |s| {
                has_spans(s, &JOURNEY_SPANS)
            })
            .await
            .is_ok()
    })
    .await
}

fn the_broker_killed_with_sigkill_and_started_again_under_load_loses_nothing(
    f: &Faults,
) -> Result<()> {
    let mut run = Run::new(f, "broker-kill")?;
    let m = f.mode;
    let (outcome, times) = run.under_load(m.cycles, async |j| {
        j.stack.kill(Component::Kafka);
        let down = Instant::now();
        sleep(m.outage / 2).await;
        j.stack.start_again(Component::Kafka).await?;
        let ready = down.elapsed();
        probe_until(j, "broker-kill", "a 202 again", async |_, a| {
            a.status == 202
        })
        .await?;
        Ok((ready, down.elapsed()))
    })?;
    let (ready, first): (Vec<Duration>, Vec<Duration>) = times.into_iter().unzip();
    run.settle(
        format!(
            "broker killed (SIGKILL), down {} s, × {}",
            (m.outage / 2).as_secs(),
            m.cycles
        ),
        outcome,
        format!(
            "broker ready {} after the kill; the producer's first 202 {} after the kill",
            secs(&ready),
            secs(&first)
        ),
    )?;
    Ok(())
}

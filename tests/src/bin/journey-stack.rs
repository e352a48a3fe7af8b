//! `journey-stack`: the local stack outside of tests.
//!
//! - `journey-stack demo [--once]` (`make demo`): starts Kafka, the Collector and Zipkin, seeds
//!   the chart's topics, starts producer, relay and sink, POSTs a few messages, prints each
//!   trace id with its Zipkin UI link and the journey as `journeyctl journey` shows it, then
//!   stays up until Ctrl-C. `--once` also runs `journeyctl verify` and exits 0 (PASS) or 1.
//! - `journey-stack images [local|journey|bases|standins|kind-node]` (`make images`, `make
//!   kind-node`): starts the private dockerd, runs `scripts/images.sh` against it (`kind-node`:
//!   `scripts/kind-node.sh`, kind's node image), stops it.
//! - `journey-stack clean-ledger`: after a run killed before its teardown, kills and removes
//!   what the ledger lists as left (`make clean-ledger`).
//! - `journey-stack check-ledger`: proves that nothing the harness recorded in the ledger is
//!   left: no process alive, nothing mounted under a recorded directory and no process naming
//!   one, no recorded network device, network namespace or cgroup (run at the end of
//!   `make test`, which gives each run its own ledger).

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use journey_tests::docker::Docker;
use journey_tests::ledger::{is_alive, ledger_entries, ledger_path, resources};
use journey_tests::runner::block_on;
use journey_tests::services::{JOURNEY_SPANS, Journey, TRACE_TIMEOUT, bin, has_spans, post_json};
use serde_json::json;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("demo") => match block_on(demo(args.iter().any(|a| a == "--once"))) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("demo: FAILED: {e:#}");
                ExitCode::FAILURE
            }
        },
        Some("images") => {
            let mode = args.get(1).map(String::as_str).unwrap_or("local");
            match block_on(images(mode)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("images: FAILED: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("check-ledger") => check_ledger(),
        Some("clean-ledger") => clean_ledger(),
        _ => {
            eprintln!(
                "usage: journey-stack demo [--once] | images [MODE] | check-ledger | clean-ledger"
            );
            ExitCode::from(2)
        }
    }
}

async fn images(mode: &str) -> Result<()> {
    let docker = Docker::start().await?;
    match mode {
        "kind-node" => docker.api().run_script("scripts/kind-node.sh", &[]),
        _ => docker.api().build_images(mode),
    }
}

/// After a test run that was killed before its teardown: stops what it left and removes it.
fn clean_ledger() -> ExitCode {
    let mut failed = false;
    for e in ledger_entries().iter().filter(|e| is_alive(e)) {
        println!("clean: killing {} (pid {})", e.name, e.pid);
        journey_tests::process::kill_pid(e.pid, libc::SIGKILL);
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    for r in resources() {
        if r.leftovers().is_empty() {
            continue;
        }
        println!("clean: {r:?}");
        if let Err(e) = r.clean() {
            eprintln!("clean: {e}");
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        check_ledger()
    }
}

fn check_ledger() -> ExitCode {
    let entries = ledger_entries();
    let alive: Vec<_> = entries.iter().filter(|e| is_alive(e)).collect();
    for e in &alive {
        eprintln!("teardown: {} (pid {}) is still alive", e.name, e.pid);
    }
    let resources = resources();
    let mut left = Vec::new();
    for r in &resources {
        left.extend(r.leftovers());
    }
    for l in &left {
        eprintln!("teardown: {l}");
    }
    if alive.is_empty() && left.is_empty() {
        println!(
            "teardown: {} processes and {} host resources (directories, devices, namespaces, cgroups) recorded in {}; none alive, nothing left",
            entries.len(),
            resources.len(),
            ledger_path().display()
        );
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "teardown: FAILED: {} of {} recorded processes outlived the tests and {} leftovers of recorded resources (a harness bug: something was not stopped or removed)",
        alive.len(),
        entries.len(),
        left.len()
    );
    ExitCode::FAILURE
}

/// How many messages the demo sends.
const DEMO_MESSAGES: usize = 3;

async fn demo(once: bool) -> Result<ExitCode> {
    println!(
        "==> starting the local stack: Kafka (KRaft), the OpenTelemetry Collector, Zipkin, then producer, relay, sink"
    );
    let journey = Journey::start(&[]).await?;
    let producer = journey.producer.url();
    let zipkin = journey.stack.zipkin.url();
    println!();
    println!("    producer   {producer}  (POST /messages, /messages/batch; GET /healthz, /readyz)");
    println!("    Zipkin UI  {zipkin}/zipkin/  (dependency graph: {zipkin}/zipkin/dependency)");
    println!("    Kafka      {}", journey.bootstrap());
    println!(
        "    OTLP       {} (gRPC)",
        journey.stack.collector.otlp_grpc_url()
    );
    println!("    logs       {}", journey.stack.logs_dir().display());
    println!();

    println!("==> sending {DEMO_MESSAGES} messages");
    let mut trace_ids = Vec::new();
    for i in 1..=DEMO_MESSAGES {
        let body =
            json!({"key": format!("demo-{i}"), "payload": {"greeting": "hello, journey", "n": i}});
        let answer = post_json(&journey.producer, &body).await?;
        let trace_id = answer.trace_id()?;
        let (partition, offset) = answer.position()?;
        println!(
            "    message {i}: {} partition {partition} offset {offset}  trace {trace_id}\n               {zipkin}/zipkin/traces/{trace_id}",
            answer.str("topic").unwrap_or("?"),
        );
        trace_ids.push(trace_id);
    }

    println!();
    println!("==> fetching each trace back from Zipkin's API");
    let api = journey.zipkin();
    for trace_id in &trace_ids {
        api.wait_for_trace(trace_id, TRACE_TIMEOUT, |spans| {
            has_spans(spans, &JOURNEY_SPANS)
        })
        .await
        .with_context(|| format!("trace {trace_id} did not arrive complete in Zipkin"))?;
        journeyctl(&journey, &["journey", trace_id])?;
    }

    if once {
        println!("==> journeyctl verify (POST one more message, assert every hop in Zipkin)");
        let ok = journeyctl(&journey, &["verify", "--producer-url", &producer])?;
        println!("==> demo {}", if ok { "PASSED" } else { "FAILED" });
        return Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }

    println!();
    println!("The stack stays up until Ctrl-C. Try:");
    println!(
        "    curl -si -H 'content-type: application/json' -d '{{\"payload\": {{\"hello\": \"world\"}}}}' {producer}/messages"
    );
    println!("    target/debug/journeyctl journey --last --zipkin-url {zipkin}");
    println!("    target/debug/journeyctl load --producer-url {producer} --rate 50 --duration 10s");
    tokio::signal::ctrl_c().await?;
    println!("\n==> stopping (services drain and flush first)");
    drop(journey);
    Ok(ExitCode::SUCCESS)
}

/// Runs the built `journeyctl` against the demo stack (output to the terminal); true on exit 0.
fn journeyctl(journey: &Journey, args: &[&str]) -> Result<bool> {
    let status = std::process::Command::new(bin("journeyctl")?)
        .args(args)
        .env("ZIPKIN_URL", journey.stack.zipkin.url())
        .env("OTEL_SERVICE_NAME", "journeyctl")
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            journey.stack.collector.otlp_grpc_url(),
        )
        .env("RUST_LOG", "warn")
        .status()
        .context("running journeyctl")?;
    if status.code().is_none() {
        bail!("journeyctl was killed ({status})");
    }
    Ok(status.success())
}

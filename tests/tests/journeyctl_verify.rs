//! `journeyctl verify`, `journey` and `load` against the real local stack with the services.
//!
//! One fixture: the usual Journey (producer → relay → sink) plus two side pipelines on their
//! own topics so tests can run in parallel without counting each other's messages:
//! - `lonely`: producer-b → relay-b and no sink (the FAIL case: a missing hop);
//! - `loadtest`: producer-load → relay-load → sink-load (the load smoke's counts);
//! - `linked`: producer-link → relay-link → sink-link, both consumers in trace mode `link`
//!   (each hop starts a new trace linked to the previous one). On their own topics: consumers
//!   in link mode on `messages` would add linked traces to every other test's journey.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use journey_tests::runner::{self, Fixture, block_on};
use journey_tests::services::{Journey, Service, bin, end_offsets};
use journey_tests::tests;
use journeyctl::topics::TopicSpec;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

struct Fx {
    // Side services first: they stop before the stack.
    producer_b: Service,
    _relay_b: Service,
    producer_load: Service,
    _relay_load: Service,
    _sink_load: Service,
    producer_link: Service,
    _relay_link: Service,
    _sink_link: Service,
    journey: Journey,
}

impl Fixture for Fx {
    fn logs_dirs(&self) -> Vec<PathBuf> {
        self.journey.logs_dirs()
    }
}

fn main() -> std::process::ExitCode {
    runner::main(
        || {
            block_on(async {
                let journey = Journey::start(&[]).await?;
                let stack = &journey.stack;
                let mut kafka = ClientConfig::new();
                kafka.set("bootstrap.servers", stack.kafka.bootstrap());
                let side: Vec<TopicSpec> = [
                    "lonely",
                    "lonely.processed",
                    "loadtest",
                    "loadtest.processed",
                    "linked",
                    "linked.processed",
                ]
                .into_iter()
                .map(|t| TopicSpec::new(t, 2))
                .collect();
                journeyctl::seed(&kafka, &side, false).await?;
                let (producer_b, relay_b, producer_load, relay_load, sink_load) = tokio::try_join!(
                    Service::producer(stack, "producer-b", &[("KAFKA_TOPIC", "lonely")]),
                    Service::consumer(
                        stack,
                        "relay",
                        "relay-b",
                        &[
                            ("KAFKA_TOPIC", "lonely"),
                            ("OUTPUT_TOPIC", "lonely.processed"),
                            ("KAFKA_GROUP_ID", "relay-b"),
                        ]
                    ),
                    Service::producer(stack, "producer-load", &[("KAFKA_TOPIC", "loadtest")]),
                    Service::consumer(
                        stack,
                        "relay",
                        "relay-load",
                        &[
                            ("KAFKA_TOPIC", "loadtest"),
                            ("OUTPUT_TOPIC", "loadtest.processed"),
                            ("KAFKA_GROUP_ID", "relay-load"),
                        ]
                    ),
                    Service::consumer(
                        stack,
                        "sink",
                        "sink-load",
                        &[
                            ("KAFKA_TOPIC", "loadtest.processed"),
                            ("KAFKA_GROUP_ID", "sink-load"),
                        ]
                    ),
                )?;
                let (producer_link, relay_link, sink_link) = tokio::try_join!(
                    Service::producer(stack, "producer-link", &[("KAFKA_TOPIC", "linked")]),
                    Service::consumer(
                        stack,
                        "relay",
                        "relay-link",
                        &[
                            ("TRACE_MODE", "link"),
                            ("KAFKA_TOPIC", "linked"),
                            ("OUTPUT_TOPIC", "linked.processed"),
                            ("KAFKA_GROUP_ID", "relay-link"),
                        ]
                    ),
                    Service::consumer(
                        stack,
                        "sink",
                        "sink-link",
                        &[
                            ("TRACE_MODE", "link"),
                            ("KAFKA_TOPIC", "linked.processed"),
                            ("KAFKA_GROUP_ID", "sink-link"),
                        ]
                    ),
                )?;
                Ok(Fx {
                    producer_b,
                    _relay_b: relay_b,
                    producer_load,
                    _relay_load: relay_load,
                    _sink_load: sink_load,
                    producer_link,
                    _relay_link: relay_link,
                    _sink_link: sink_link,
                    journey,
                })
            })
        },
        tests![
            verify_passes_on_the_full_journey_prints_the_tree_and_traces_itself,
            journey_shows_the_tree_queue_time_per_hop_and_total_latency,
            journey_last_and_json_show_the_most_recent_trace,
            verify_fails_naming_the_missing_hop_when_no_sink_runs,
            in_link_mode_verify_and_journey_follow_the_links_across_the_traces,
            load_reports_counts_that_match_what_the_sink_received,
            init_waits_for_kafka_the_collector_and_zipkin_then_seeds_the_charts_topics,
            init_times_out_with_exit_3_when_brokers_are_missing,
        ],
    )
}

/// Runs the journeyctl binary with a clean environment plus `env`.
fn journeyctl(args: &[&str], env: &[(&str, String)]) -> Result<Output> {
    let mut cmd = Command::new(bin("journeyctl")?);
    cmd.env_clear().args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().context("running journeyctl")?;
    eprintln!(
        "$ journeyctl {}\n[exit {:?}]\n{}{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The environment that makes journeyctl export its own spans to the stack's Collector.
fn traced_env(fx: &Fx, producer_url: String) -> Vec<(&'static str, String)> {
    vec![
        ("PRODUCER_URL", producer_url),
        ("ZIPKIN_URL", fx.journey.stack.zipkin.url()),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            fx.journey.stack.collector.otlp_grpc_url(),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ("VERIFY_TIMEOUT", "45s".into()),
    ]
}

fn trace_id_from_output(text: &str) -> Result<String> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix("trace ")
                .and_then(|r| r.split_whitespace().next())
        })
        .map(str::to_string)
        .with_context(|| format!("no `trace <id>` line in:\n{text}"))
}

fn verify_passes_on_the_full_journey_prints_the_tree_and_traces_itself(fx: &Fx) -> Result<()> {
    let out = journeyctl(&["verify"], &traced_env(fx, fx.journey.producer.url()))?;
    let text = stdout(&out);
    ensure!(out.status.code() == Some(0), "verify did not pass");
    ensure!(text.trim_end().ends_with("PASS"), "{text}");
    for hop in [
        "producer:SERVER",
        "producer:PRODUCER",
        "relay:CONSUMER",
        "relay:PRODUCER",
        "sink:CONSUMER",
    ] {
        ensure!(
            text.contains(&format!("ok       {hop}")),
            "hop {hop} not reported ok:\n{text}"
        );
    }
    ensure!(
        text.contains("process messages.processed") && text.contains("queued"),
        "{text}"
    );
    ensure!(!text.contains('\x1b'), "colour on a pipe:\n{text}");
    // journeyctl's own CLIENT span is the root of the journey.
    let trace_id = trace_id_from_output(&text)?;
    let spans = block_on(fx.journey.zipkin().wait_for_trace(
        &trace_id,
        Duration::from_secs(30),
        |s| s.iter().any(|x| x.service() == "journeyctl"),
    ))?;
    let client = spans
        .iter()
        .find(|s| s.service() == "journeyctl" && s.kind.as_deref() == Some("CLIENT"))
        .context("no CLIENT span of journeyctl")?;
    let server = spans
        .iter()
        .find(|s| s.service() == "producer" && s.kind.as_deref() == Some("SERVER"))
        .context("no SERVER span of the producer")?;
    ensure!(
        server.parent_id.as_deref() == Some(client.id.as_str()),
        "producer SERVER is not a child of journeyctl's CLIENT"
    );
    Ok(())
}

fn post_one(fx: &Fx) -> Result<String> {
    block_on(async {
        let producer = journeyctl::producer::ProducerClient::new(
            &fx.journey.producer.url(),
            Duration::from_secs(30),
        )?;
        let p = producer
            .post(&serde_json::json!({"payload": {"test": "journey"}}))
            .await?;
        ensure!(p.acked(), "producer answered {} {}", p.status, p.body);
        let id = p.trace_id().context("no trace id")?.to_string();
        fx.journey
            .zipkin()
            .wait_for_trace(&id, Duration::from_secs(45), |s| {
                s.iter()
                    .any(|x| x.service() == "sink" && x.kind.as_deref() == Some("CONSUMER"))
            })
            .await?;
        Ok(id)
    })
}

fn journey_shows_the_tree_queue_time_per_hop_and_total_latency(fx: &Fx) -> Result<()> {
    let id = post_one(fx)?;
    let out = journeyctl(
        &["journey", &id],
        &[("ZIPKIN_URL", fx.journey.stack.zipkin.url())],
    )?;
    let text = stdout(&out);
    ensure!(out.status.code() == Some(0), "{text}");
    ensure!(text.starts_with(&format!("trace {id}")), "{text}");
    ensure!(text.contains("services: producer → relay → sink"), "{text}");
    ensure!(text.contains("hops:"), "{text}");
    ensure!(
        text.contains("producer → relay via messages: queued "),
        "{text}"
    );
    ensure!(
        text.contains("relay → sink via messages.processed: queued "),
        "{text}"
    );
    ensure!(text.contains("total latency: "), "{text}");
    ensure!(text.contains(&format!("/zipkin/traces/{id}")), "{text}");
    ensure!(!text.contains('\x1b'), "colour on a pipe");
    // An unknown trace is an error, not an empty journey; a malformed id is bad usage.
    let unknown = format!("{:032x}", rand::random::<u128>() | 1);
    let out = journeyctl(
        &["journey", &unknown],
        &[("ZIPKIN_URL", fx.journey.stack.zipkin.url())],
    )?;
    ensure!(
        out.status.code() == Some(1),
        "unknown trace: exit {:?}",
        out.status.code()
    );
    let out = journeyctl(
        &["journey", "not-a-trace"],
        &[("ZIPKIN_URL", fx.journey.stack.zipkin.url())],
    )?;
    ensure!(
        out.status.code() == Some(2),
        "malformed trace id: exit {:?}",
        out.status.code()
    );
    Ok(())
}

fn journey_last_and_json_show_the_most_recent_trace(fx: &Fx) -> Result<()> {
    let id = post_one(fx)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = journeyctl(
            &["journey", "--last", "--service", "producer", "--json"],
            &[("ZIPKIN_URL", fx.journey.stack.zipkin.url())],
        )?;
        ensure!(out.status.code() == Some(0), "journey --last failed");
        let doc: Value = serde_json::from_slice(&out.stdout)?;
        let hops = doc["hops"].as_array().context("no hops")?;
        // Other tests post too (the latest trace may be newer than ours and still arriving):
        // ours, complete, must show up as the latest once nothing newer is posted.
        if doc["trace_id"] == id && hops.len() == 2 {
            ensure!(hops.iter().all(|h| h["queue_us"].is_i64()), "{doc}");
            ensure!(doc["total_us"].as_u64().is_some_and(|t| t > 0), "{doc}");
            ensure!(
                doc["spans"].as_array().is_some_and(|s| s.len() >= 5),
                "{doc}"
            );
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "--last never showed {id} complete; last: {doc}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(())
}

fn verify_fails_naming_the_missing_hop_when_no_sink_runs(fx: &Fx) -> Result<()> {
    let mut env = traced_env(fx, fx.producer_b.url());
    env.push(("VERIFY_TIMEOUT", "8s".into()));
    let out = journeyctl(
        &["verify", "--expect-services", "producer-b,relay-b,sink-b"],
        &env,
    )?;
    let text = stdout(&out);
    ensure!(
        out.status.code() == Some(1),
        "expected exit 1 (FAIL), got {:?}",
        out.status.code()
    );
    ensure!(text.trim_end().ends_with("FAIL"), "{text}");
    ensure!(
        text.contains("ok       relay-b:PRODUCER"),
        "the hops before the gap are there:\n{text}"
    );
    ensure!(text.contains("MISSING  sink-b:CONSUMER"), "{text}");
    // A producer that is not there at all: FAIL with "unavailable".
    let out = journeyctl(&["verify"], &traced_env(fx, "http://127.0.0.1:1".into()))?;
    ensure!(
        out.status.code() == Some(5),
        "unreachable producer: exit {:?}",
        out.status.code()
    );
    ensure!(stdout(&out).contains("FAIL"));
    Ok(())
}

/// The distinct trace ids named by `⇢ linked trace <id>` markers.
fn linked_trace_ids(text: &str) -> Vec<String> {
    let mut ids: Vec<String> = text
        .match_indices("⇢ linked trace ")
        .filter_map(|(i, m)| text[i + m.len()..].split_whitespace().next())
        .map(str::to_string)
        .collect();
    ids.dedup();
    ids
}

fn in_link_mode_verify_and_journey_follow_the_links_across_the_traces(fx: &Fx) -> Result<()> {
    let expect = ["--expect-services", "producer-link,relay-link,sink-link"];
    let env = traced_env(fx, fx.producer_link.url());
    // verify: the relay's and the sink's spans are in traces of their own, linked to the
    // send spans; following the links (the default) the journey passes.
    let out = journeyctl(&[&["verify"][..], &expect].concat(), &env)?;
    let text = stdout(&out);
    ensure!(out.status.code() == Some(0), "verify did not pass:\n{text}");
    ensure!(text.trim_end().ends_with("PASS"), "{text}");
    for hop in [
        "producer-link:SERVER",
        "producer-link:PRODUCER",
        "relay-link:CONSUMER",
        "relay-link:PRODUCER",
        "sink-link:CONSUMER",
    ] {
        ensure!(
            text.contains(&format!("ok       {hop}")),
            "hop {hop} not reported ok:\n{text}"
        );
    }
    let id = trace_id_from_output(&text)?;
    let linked = linked_trace_ids(&text);
    ensure!(
        linked.len() == 2 && !linked.contains(&id),
        "two linked traces besides {id}: {linked:?}\n{text}"
    );

    // journey: the three traces as one tree, the linked ones below the spans they link to,
    // with queue times across the links and the latency of the whole journey.
    let zipkin = [("ZIPKIN_URL", fx.journey.stack.zipkin.url())];
    let out = journeyctl(&["journey", &id], &zipkin)?;
    let text = stdout(&out);
    ensure!(out.status.code() == Some(0), "{text}");
    ensure!(
        text.starts_with(&format!("trace {id}  (")) && text.contains(" in 3 linked traces, "),
        "{text}"
    );
    ensure!(
        text.contains("services: journeyctl → producer-link → relay-link → sink-link"),
        "{text}"
    );
    ensure!(linked_trace_ids(&text) == linked, "{text}");
    for (from, to, topic) in [
        ("producer-link", "relay-link", "linked"),
        ("relay-link", "sink-link", "linked.processed"),
    ] {
        ensure!(
            text.contains(&format!("{from} → {to} via {topic}: queued ")),
            "{text}"
        );
    }
    ensure!(text.matches("(linked trace)").count() == 2, "{text}");
    let relay_line = text
        .lines()
        .find(|l| l.contains("relay-link CONSUMER process linked"))
        .context("no relay-link process line")?;
    ensure!(
        relay_line.contains("[queued ")
            && relay_line.contains(&format!("⇢ linked trace {}", linked[0])),
        "{relay_line}"
    );
    ensure!(text.contains("total latency: "), "{text}");
    for t in std::iter::once(&id).chain(&linked) {
        ensure!(text.contains(&format!("/zipkin/traces/{t}")), "{text}");
    }
    // Each span once.
    ensure!(
        text.matches("sink-link CONSUMER process linked.processed")
            .count()
            == 1,
        "{text}"
    );

    // --json: the linked traces, and hops across them.
    let out = journeyctl(&["journey", &id, "--json"], &zipkin)?;
    ensure!(out.status.code() == Some(0));
    let doc: Value = serde_json::from_slice(&out.stdout)?;
    ensure!(doc["trace_id"] == id.as_str(), "{doc}");
    let traces = doc["linked_traces"]
        .as_array()
        .context("no linked_traces")?;
    ensure!(traces.len() == 2, "{doc}");
    ensure!(traces[1]["depth"] == 2, "{doc}");
    let hops = doc["hops"].as_array().context("no hops")?;
    ensure!(
        hops.len() == 2
            && hops
                .iter()
                .all(|h| h["linked"] == true && h["queue_us"].is_i64()),
        "{doc}"
    );

    // Without following links the journey is the first trace only, and verify fails there.
    let out = journeyctl(&["journey", &id, "--follow-links=false"], &zipkin)?;
    let text = stdout(&out);
    ensure!(
        !text.contains("linked trace") && !text.contains("relay-link"),
        "{text}"
    );
    let mut env = env;
    env.push(("VERIFY_TIMEOUT", "4s".into()));
    let out = journeyctl(
        &[&["verify", "--follow-links=false"][..], &expect].concat(),
        &env,
    )?;
    let text = stdout(&out);
    ensure!(out.status.code() == Some(1), "{text}");
    ensure!(text.contains("MISSING  relay-link:CONSUMER"), "{text}");
    Ok(())
}

fn committed(bootstrap: &str, group: &str, topic: &str, partitions: &[(i32, i64)]) -> Result<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for (p, _) in partitions {
        tpl.add_partition(topic, *p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok(got
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum())
}

fn load_reports_counts_that_match_what_the_sink_received(fx: &Fx) -> Result<()> {
    let bootstrap = fx.journey.bootstrap().to_string();
    let sum = |v: &[(i32, i64)]| v.iter().map(|(_, o)| o).sum::<i64>();
    let in_before = end_offsets(&bootstrap, "loadtest")?;
    let out_before = end_offsets(&bootstrap, "loadtest.processed")?;
    let out = journeyctl(
        &[
            "load",
            "--rate",
            "40",
            "--duration",
            "3s",
            "--concurrency",
            "8",
            "--json",
        ],
        &[("PRODUCER_URL", fx.producer_load.url())],
    )?;
    ensure!(out.status.code() == Some(0), "load reported errors");
    let summary: Value = serde_json::from_slice(&out.stdout)?;
    let (sent, acked, errors) = (
        summary["sent"].as_i64().unwrap_or(-1),
        summary["acked"].as_i64().unwrap_or(-1),
        summary["errors"].as_i64().unwrap_or(-1),
    );
    ensure!(sent == 120 && acked == 120 && errors == 0, "{summary}");
    for q in ["latency_ms_p50", "latency_ms_p90", "latency_ms_p99"] {
        ensure!(
            summary[q].as_f64().is_some_and(|v| v > 0.0),
            "{q}: {summary}"
        );
    }
    ensure!(
        summary["latency_ms_p50"].as_f64() <= summary["latency_ms_p99"].as_f64(),
        "{summary}"
    );
    // Kafka got exactly what load says was acked; the relay forwarded all of it; the sink's
    // group committed past all of it.
    let in_after = end_offsets(&bootstrap, "loadtest")?;
    ensure!(
        sum(&in_after) - sum(&in_before) == acked,
        "loadtest grew by {}",
        sum(&in_after) - sum(&in_before)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out_after = end_offsets(&bootstrap, "loadtest.processed")?;
        let forwarded = sum(&out_after) - sum(&out_before);
        let sink_done = committed(&bootstrap, "sink-load", "loadtest.processed", &out_after)?;
        if forwarded == acked && sink_done == sum(&out_after) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "after 60s: relay forwarded {forwarded}/{acked}, sink committed {sink_done}/{}",
                sum(&out_after)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn init_env(fx: &Fx, brokers: &str, timeout: &str) -> Vec<(&'static str, String)> {
    let stack = &fx.journey.stack;
    vec![
        (
            "KAFKA_BOOTSTRAP_SERVERS",
            stack.kafka.bootstrap().to_string(),
        ),
        ("KAFKA_EXPECTED_BROKERS", brokers.to_string()),
        ("COLLECTOR_HEALTH_URL", stack.collector.health_url()),
        ("ZIPKIN_URL", stack.zipkin.url()),
        ("WAIT_TIMEOUT", timeout.to_string()),
        (
            "TOPICS_FILE",
            journey_tests::repo_root()
                .join("charts/journey/values.yaml")
                .display()
                .to_string(),
        ),
    ]
}

fn init_waits_for_kafka_the_collector_and_zipkin_then_seeds_the_charts_topics(
    fx: &Fx,
) -> Result<()> {
    // The fixture seeded the chart's topics already: init finds them up to date.
    let out = journeyctl(&["init"], &init_env(fx, "1", "30s"))?;
    let (text, err) = (
        stdout(&out),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    ensure!(out.status.code() == Some(0), "init failed");
    for what in [
        "kafka (1 brokers expected): ready",
        "collector http://",
        "zipkin http://",
    ] {
        ensure!(err.contains(what), "no `{what}` progress line:\n{err}");
    }
    ensure!(text.contains("= messages: up to date"), "{text}");
    ensure!(text.contains("0 changed"), "{text}");
    // --dry-run with a grown topic says what it would do and does nothing.
    let before = end_offsets(fx.journey.bootstrap(), "messages.dlq")?.len();
    let mut env = init_env(fx, "1", "30s");
    env.push(("TOPICS", "messages.dlq:4".into()));
    env.retain(|(k, _)| *k != "TOPICS_FILE");
    let out = journeyctl(&["init", "--dry-run"], &env)?;
    ensure!(out.status.code() == Some(0), "init --dry-run failed");
    ensure!(
        stdout(&out).contains("~ messages.dlq: partitions 1 -> 4 (would grow)"),
        "{}",
        stdout(&out)
    );
    ensure!(
        end_offsets(fx.journey.bootstrap(), "messages.dlq")?.len() == before,
        "dry run changed partitions"
    );
    Ok(())
}

fn init_times_out_with_exit_3_when_brokers_are_missing(fx: &Fx) -> Result<()> {
    let started = Instant::now();
    let out = journeyctl(&["init"], &init_env(fx, "3", "4s"))?;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(
        out.status.code() == Some(3),
        "expected exit 3, got {:?}",
        out.status.code()
    );
    ensure!(err.contains("metadata lists 1/3 brokers"), "{err}");
    ensure!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    ensure!(
        stdout(&out).is_empty(),
        "init seeded although waiting failed: {}",
        stdout(&out)
    );
    Ok(())
}

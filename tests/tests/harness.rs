//! The harness itself: the stack is really ready, and nothing it started outlives it.

use std::time::Duration;

use anyhow::{Result, ensure};
use journey_tests::ledger::{LedgerEntry, is_alive, ledger_entries};
use journey_tests::runner::{self, block_on};
use journey_tests::stack::{Stack, broker_count};
use journey_tests::tests;
use journey_tests::zipkin::ZipkinApi;

fn main() -> std::process::ExitCode {
    runner::main(
        || Ok(()),
        tests![
            a_started_stack_answers_on_loopback_only_kafka_metadata_collector_and_zipkin_health,
            a_span_sent_to_the_collector_arrives_in_zipkin,
            dropping_the_stack_leaves_none_of_its_recorded_pids_alive,
        ],
    )
}

fn a_started_stack_answers_on_loopback_only_kafka_metadata_collector_and_zipkin_health(
    _: &(),
) -> Result<()> {
    block_on(async {
        let stack = Stack::start().await?;
        for pid in stack.pids() {
            let listening = listening_addresses(pid)?;
            ensure!(!listening.is_empty(), "pid {pid} listens on nothing");
            let open: Vec<&String> = listening
                .iter()
                .filter(|a| !a.starts_with("127.0.0.1:"))
                .collect();
            ensure!(
                open.is_empty(),
                "pid {pid} listens beyond loopback: {open:?} (all: {listening:?})"
            );
        }
        let bootstrap = stack.kafka.bootstrap().to_string();
        let brokers = tokio::task::spawn_blocking(move || broker_count(&bootstrap)).await??;
        ensure!(
            brokers == 1,
            "expected one broker, metadata reports {brokers}"
        );
        let services = ZipkinApi::new(stack.zipkin.url()).services().await?;
        ensure!(
            services.is_empty(),
            "a fresh Zipkin has no services, got {services:?}"
        );
        Ok(())
    })
}

/// The TCP addresses `pid` listens on, from its socket inodes and /proc/net/tcp{,6}; an IPv6
/// socket's v4-mapped loopback (`::ffff:127.0.0.1`) reads as 127.0.0.1.
fn listening_addresses(pid: u32) -> Result<Vec<String>> {
    let mut inodes = std::collections::BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(target) = std::fs::read_link(fd?.path()) else {
            continue; // closed meanwhile
        };
        let target = target.to_string_lossy().into_owned();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|t| t.strip_suffix(']'))
        {
            inodes.insert(inode.to_string());
        }
    }
    let mut out = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))?;
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local_address, st (0A = LISTEN), inode
            let (Some(local), Some(&"0A"), Some(inode)) = (cols.get(1), cols.get(3), cols.get(9))
            else {
                continue;
            };
            if !inodes.contains(*inode) {
                continue;
            }
            let (ip, port) = local
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("odd address {local}"))?;
            let port = u16::from_str_radix(port, 16)?;
            let ip = match ip.len() {
                8 => {
                    std::net::Ipv4Addr::from(u32::from_str_radix(ip, 16)?.swap_bytes()).to_string()
                }
                _ => {
                    // Four little-endian 32-bit words.
                    let mut bytes = [0u8; 16];
                    for (i, word) in bytes.chunks_mut(4).enumerate() {
                        let w = u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16)?;
                        word.copy_from_slice(&w.to_le_bytes());
                    }
                    let v6 = std::net::Ipv6Addr::from(bytes);
                    v6.to_ipv4_mapped()
                        .map_or(v6.to_string(), |v4| v4.to_string())
                }
            };
            out.push(format!("{ip}:{port}"));
        }
    }
    Ok(out)
}

fn a_span_sent_to_the_collector_arrives_in_zipkin(_: &()) -> Result<()> {
    block_on(async {
        let stack = Stack::start().await?;
        let trace_id = format!("{:032x}", rand::random::<u128>());
        let span_id = format!("{:016x}", rand::random::<u64>());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos();
        // One PRODUCER span over OTLP/HTTP JSON, with peer.service as the SDK helpers set it.
        let body = serde_json::json!({"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "harness"}}]},
            "scopeSpans": [{"spans": [{
                "traceId": trace_id, "spanId": span_id, "name": "send messages", "kind": 4,
                "startTimeUnixNano": (now - 1_000_000).to_string(), "endTimeUnixNano": now.to_string(),
                "attributes": [{"key": "peer.service", "value": {"stringValue": "kafka"}}]
            }]}]
        }]});
        let resp = reqwest::Client::new()
            .post(format!("{}/v1/traces", stack.collector.otlp_http_url()))
            .json(&body)
            .send()
            .await?;
        ensure!(
            resp.status().is_success(),
            "collector refused the span: {}",
            resp.status()
        );
        let spans = ZipkinApi::new(stack.zipkin.url())
            .wait_for_trace(&trace_id, Duration::from_secs(30), |s| !s.is_empty())
            .await?;
        ensure!(spans.len() == 1, "expected one span, got {spans:?}");
        ensure!(
            spans[0].service() == "harness",
            "service name: {:?}",
            spans[0]
        );
        ensure!(
            spans[0].kind.as_deref() == Some("PRODUCER"),
            "kind: {:?}",
            spans[0]
        );
        ensure!(
            spans[0].remote_service() == "kafka",
            "peer.service → remoteEndpoint: {:?}",
            spans[0]
        );
        Ok(())
    })
}

fn dropping_the_stack_leaves_none_of_its_recorded_pids_alive(_: &()) -> Result<()> {
    let before = ledger_entries().len();
    let pids = block_on(async {
        let stack = Stack::start().await?;
        Ok::<_, anyhow::Error>(stack.pids())
    })?; // the stack is dropped here
    let recorded: Vec<LedgerEntry> = ledger_entries().into_iter().skip(before).collect();
    for pid in &pids {
        ensure!(
            recorded.iter().any(|e| e.pid == *pid),
            "pid {pid} was not recorded in the ledger"
        );
    }
    let alive: Vec<&LedgerEntry> = recorded
        .iter()
        .filter(|e| pids.contains(&e.pid) && is_alive(e))
        .collect();
    ensure!(alive.is_empty(), "still alive after drop: {alive:?}");
    Ok(())
}

//! Hostile records written straight to Kafka (past the producer's checks, as any other client
//! could), during a load: each is forwarded or dead-lettered, the relay and the sink neither
//! stop nor restart, and the load's acked messages all reach the sink.
//!
//! Not repeated here: a record larger than the relay's client may send (`dlq.rs`: dead-lettered
//! without its value), poison messages (`dlq.rs`), hostile HTTP input (`producer_api.rs`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use journey_tests::say;
use journey_tests::services::header;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message as _};

use crate::load::sink_receipts;
use crate::report::Input;
use crate::{Faults, Run};

/// The header naming a hostile record (kept by the relay and in the DLQ).
const ID: &str = "x-journey-hostile";

/// One hostile record.
struct Hostile {
    name: &'static str,
    what: String,
    topic: &'static str,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    /// Dead-lettering is a correct end for it too (else it must be forwarded).
    may_dead_letter: bool,
}

impl Hostile {
    fn new(name: &'static str, what: &str) -> Hostile {
        Hostile {
            name,
            what: what.to_string(),
            topic: "messages",
            key: Some(name.as_bytes().to_vec()),
            value: Some(b"{}".to_vec()),
            headers: Vec::new(),
            may_dead_letter: false,
        }
    }

    fn value(mut self, v: impl Into<Vec<u8>>) -> Self {
        self.value = Some(v.into());
        self
    }

    fn header(mut self, k: &str, v: Option<&[u8]>) -> Self {
        self.headers.push((k.to_string(), v.map(<[u8]>::to_vec)));
        self
    }
}

fn inputs() -> Vec<Hostile> {
    let traceparent = |v: &str| Some(v.as_bytes().to_vec());
    vec![
        Hostile {
            key: None,
            value: None,
            ..Hostile::new("no-key-no-value", "no key, no value (a tombstone)")
        },
        Hostile::new("empty-value", "an empty value").value(Vec::new()),
        Hostile::new("binary-value", "every byte 0-255, not UTF-8")
            .value((0..=255).collect::<Vec<u8>>()),
        Hostile::new("truncated-json", "`{\"poison\": tru` (no JSON)")
            .value(&b"{\"poison\": tru"[..]),
        Hostile::new(
            "poison-as-text",
            "`{\"poison\": \"true\"}` (not the marker)",
        )
        .value(&b"{\"poison\": \"true\"}"[..]),
        Hostile::new("deep-json", "JSON nested 10,000 levels deep").value(format!(
            "{}{}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        )),
        Hostile::new("garbage-traceparent", "`traceparent: 00-not-a-trace-01`")
            .header("traceparent", traceparent("00-not-a-trace-01").as_deref()),
        Hostile::new(
            "zero-traceparent",
            "a traceparent of all-zero (invalid) ids",
        )
        .header(
            "traceparent",
            traceparent("00-00000000000000000000000000000000-0000000000000000-01").as_deref(),
        ),
        Hostile::new("two-traceparents", "two different traceparent headers")
            .header(
                "traceparent",
                traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").as_deref(),
            )
            .header(
                "traceparent",
                traceparent("00-1af7651916cd43dd8448eb211c80319c-c7ad6b7169203331-01").as_deref(),
            ),
        Hostile::new(
            "binary-headers",
            "header values not UTF-8, and a null header value",
        )
        .header("traceparent", Some(&[0xff, 0xfe, 0x00, 0x80][..]))
        .header("tracestate", Some(&[0xc3, 0x28][..]))
        .header("x-null", None),
        Hostile::new(
            "huge-tracestate",
            "a 64 KiB tracestate and a 64 KiB baggage",
        )
        .header("tracestate", Some("a=b,".repeat(16 << 10).as_bytes()))
        .header("baggage", Some("k=v,".repeat(16 << 10).as_bytes())),
        (0..2000).fold(Hostile::new("2000-headers", "2,000 headers"), |h, i| {
            h.header(&format!("h{i}"), Some(b"v"))
        }),
        Hostile {
            key: Some(vec![b'k'; 100_000]),
            ..Hostile::new("100k-key", "a 100,000-byte key")
        },
        Hostile {
            may_dead_letter: true,
            ..Hostile::new(
                "just-under-the-limit",
                "a 999,000-byte value: with the relay's trace headers it may no longer fit",
            )
            .value(vec![b'x'; 999_000])
        },
        Hostile {
            topic: "messages.processed",
            ..Hostile::new(
                "sink-binary",
                "to the sink's topic: not UTF-8, no trace headers",
            )
            .value((0..=255).collect::<Vec<u8>>())
        },
        Hostile {
            topic: "messages.processed",
            ..Hostile::new(
                "sink-garbage-traceparent",
                "to the sink's topic: garbage traceparent",
            )
            .header("traceparent", traceparent("zz-zz").as_deref())
        },
    ]
}

/// Writes `h` (its name in the [`ID`] header); `(partition, offset)`.
async fn write(producer: &FutureProducer, h: &Hostile) -> Result<(i32, i64)> {
    let mut headers = OwnedHeaders::new().insert(Header {
        key: ID,
        value: Some(h.name),
    });
    for (k, v) in &h.headers {
        headers = headers.insert(Header {
            key: k,
            value: v.as_deref(),
        });
    }
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(h.topic).headers(headers);
    if let Some(k) = &h.key {
        record = record.key(k.as_slice());
    }
    if let Some(v) = &h.value {
        record = record.payload(v.as_slice());
    }
    producer
        .send(record, Timeout::After(Duration::from_secs(10)))
        .await
        .map(|d| (d.partition, d.offset))
        .map_err(|(e, _)| e)
        .with_context(|| format!("writing {}", h.name))
}

fn named<'a>(records: &'a [OwnedMessage], name: &str) -> Vec<&'a OwnedMessage> {
    records
        .iter()
        .filter(|r| header(r, ID).as_deref() == Some(name))
        .collect()
}

pub fn hostile_records_are_forwarded_or_dead_lettered_and_the_relay_keeps_going(
    f: &Faults,
) -> Result<()> {
    let mut run = Run::new(f, "hostile")?;
    let hostile = inputs();
    let pids = (run.j.relay.process().pid(), run.j.sink.process().pid());
    let bootstrap = run.j.bootstrap().to_string();
    let (outcome, written) = run.under_load(1, async |_| {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("message.max.bytes", "2000000")
            .create()?;
        let mut written = Vec::new();
        for h in &hostile {
            written.push(write(&producer, h).await?);
        }
        say!("{} hostile records written", hostile.len());
        Ok(written)
    })?;
    let written = written.concat();

    // Each hostile record forwarded (or dead-lettered), within a minute.
    let started = Instant::now();
    let mut report = Vec::new();
    loop {
        let (out, dlq) = (
            run.marks.processed_since(&bootstrap)?,
            run.marks.dead_since(&bootstrap)?,
        );
        let receipts = sink_receipts(&run.j.sink);
        report.clear();
        let mut pending = Vec::new();
        for (h, (partition, offset)) in hostile.iter().zip(&written) {
            let (fwd, dead) = (named(&out, h.name), named(&dlq, h.name));
            // What the sink received: the forwarded copy, or (written to its topic) the record.
            let at_sink = if h.topic == "messages.processed" {
                receipts.contains_key(&(i64::from(*partition), *offset))
            } else {
                fwd.iter()
                    .any(|r| receipts.contains_key(&(i64::from(r.partition()), r.offset())))
            };
            let outcome = match (h.topic, fwd.len(), dead.first()) {
                ("messages.processed", _, _) if at_sink => "received by the sink".to_string(),
                (_, 1.., _) if at_sink => {
                    format!("forwarded ({}×), received by the sink", fwd.len())
                }
                (_, 0, Some(d)) if h.may_dead_letter => format!(
                    "dead-lettered: {}",
                    header(d, "journey.error.type").unwrap_or_default()
                ),
                (_, 0, Some(d)) => bail!(
                    "{} was dead-lettered ({:?}: {:?}) though nothing is wrong with it",
                    h.name,
                    header(d, "journey.error.type"),
                    header(d, "journey.error.message")
                ),
                _ => {
                    pending.push(h.name);
                    "pending".to_string()
                }
            };
            report.push(Input {
                name: h.name,
                what: h.what.clone(),
                outcome,
            });
        }
        if pending.is_empty() {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "hostile records neither at the sink nor dead-lettered after 60 s: {pending:?}"
        );
        say!("hostile records not through yet: {pending:?}");
        std::thread::sleep(Duration::from_secs(3));
    }
    crate::report::inputs(&f.mode, report)?;
    let relay_running = run.j.relay.process_mut().ensure_running();
    let sink_running = run.j.sink.process_mut().ensure_running();
    relay_running.context("the relay stopped on a hostile record")?;
    sink_running.context("the sink stopped on a hostile record")?;
    ensure!(
        (run.j.relay.process().pid(), run.j.sink.process().pid()) == pids,
        "the relay or the sink was restarted meanwhile"
    );
    let tally = run.settle(
        format!("{} hostile records amid the load", hostile.len()),
        outcome,
        "no restart".to_string(),
    )?;
    ensure!(tally.restarts == 0, "a consumer had to be restarted");
    Ok(())
}

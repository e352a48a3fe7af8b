//! What each subcommand does; every function returns the process exit code.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use tracing::Instrument as _;

use crate::cli::{
    Cli, Command, InitArgs, JourneyArgs, LoadArgs, SeedArgs, VerifyArgs, WaitArgs, WaitTargets,
    use_color,
};
use crate::exit;
use crate::journey::Journey;
use crate::load::{LoadOptions, run as run_load};
use crate::producer::ProducerClient;
use crate::verify::{Verdict, check};
use crate::wait::wait;
use crate::zipkin::ZipkinClient;

/// Runs the parsed command inside a `journeyctl <command>` span.
pub async fn run(cli: Cli) -> u8 {
    let name = format!("journeyctl {}", cli.command.name());
    let span = tracing::info_span!("journeyctl", otel.name = %name);
    async move {
        match cli.command {
            Command::Init(a) => init(a).await,
            Command::Wait(a) => wait_cmd(a).await,
            Command::Seed(a) => seed_cmd(a).await,
            Command::Verify(a) => verify(a).await,
            Command::Journey(a) => journey(a).await,
            Command::Load(a) => load(a).await,
        }
    }
    .instrument(span)
    .await
}

fn progress_line(line: &str) {
    eprintln!("journeyctl: {line}");
}

/// A kube client and the namespace to use, only when workloads are named.
async fn kube_for(t: &WaitTargets) -> Result<(Option<kube::Client>, String), u8> {
    if t.workloads.is_empty() {
        return Ok((None, t.namespace.clone().unwrap_or_default()));
    }
    let config = match kube::Config::infer().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("journeyctl: no Kubernetes configuration (in-cluster or kubeconfig): {e}");
            return Err(exit::UNAVAILABLE);
        }
    };
    let ns = crate::cli::namespace_or_default(t.namespace.as_deref(), &config.default_namespace);
    match kube::Client::try_from(config) {
        Ok(c) => Ok((Some(c), ns)),
        Err(e) => {
            eprintln!("journeyctl: building the Kubernetes client: {e}");
            Err(exit::UNAVAILABLE)
        }
    }
}

async fn wait_phase(t: &WaitTargets, kafka: Option<&journey_messaging::KafkaArgs>) -> u8 {
    let (client, ns) = match kube_for(t).await {
        Ok(x) => x,
        Err(code) => return code,
    };
    let plan = crate::cli::wait_plan(t, ns, kafka);
    if !plan.targets.is_empty() {
        progress_line(&format!(
            "waiting up to {} in namespace {} for {}",
            humantime::format_duration(plan.timeout),
            plan.namespace,
            plan.targets
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let mut progress = progress_line;
    match wait(client, &plan, &mut progress).await {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("journeyctl: wait failed: {e}");
            e.exit_code()
        }
    }
}

async fn wait_cmd(a: WaitArgs) -> u8 {
    wait_phase(&a.targets, Some(&a.kafka)).await
}

async fn seed_phase(topics: &crate::cli::TopicArgs, kafka: &journey_messaging::KafkaArgs) -> u8 {
    seed_once(topics, kafka, true).await
}

/// One seeding; the report is printed always (`verbose`) or only when something changed.
async fn seed_once(
    topics: &crate::cli::TopicArgs,
    kafka: &journey_messaging::KafkaArgs,
    verbose: bool,
) -> u8 {
    let specs = match topics.resolve() {
        Ok(s) => s,
        Err(e) => return crate::cli::usage_error(e),
    };
    if specs.is_empty() {
        eprintln!("journeyctl: no topics given (TOPICS_FILE or --topic): nothing to seed");
        return exit::OK;
    }
    let mut config = kafka.client_config("journeyctl");
    config.set("log_level", "3");
    match crate::seed::seed(&config, &specs, topics.dry_run).await {
        Ok(report) => {
            if verbose || report.changed() {
                println!("{report}");
            }
            exit::OK
        }
        Err(e) => {
            eprintln!("journeyctl: seed failed: {e}");
            match e {
                crate::SeedError::Invalid(_) => exit::USAGE,
                crate::SeedError::Client(_) | crate::SeedError::Metadata(_) => exit::UNAVAILABLE,
                _ => exit::SEED_FAILED,
            }
        }
    }
}

async fn seed_cmd(a: SeedArgs) -> u8 {
    seed_phase(&a.topics, &a.kafka).await
}

async fn init(a: InitArgs) -> u8 {
    // Check the topics before waiting minutes for the cluster.
    if let Err(e) = a.topics.resolve() {
        return crate::cli::usage_error(e);
    }
    let code = wait_phase(&a.targets, Some(&a.kafka)).await;
    if code != exit::OK {
        return code;
    }
    let code = seed_phase(&a.topics, &a.kafka).await;
    match a.keep_seeding {
        Some(every) if code == exit::OK => keep_seeding(&a, every).await,
        _ => code,
    }
}

/// Seeds again every `every` until SIGTERM/SIGINT (exit 0). A failed round (Kafka restarting)
/// is reported and retried at the next one.
async fn keep_seeding(a: &InitArgs, every: Duration) -> u8 {
    progress_line(&format!(
        "seeding again every {} until stopped",
        humantime::format_duration(every)
    ));
    let stop = journey_telemetry::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return exit::OK,
            () = tokio::time::sleep(every) => {}
        }
        let code = seed_once(&a.topics, &a.kafka, false).await;
        if code != exit::OK {
            progress_line(&format!(
                "seeding failed (exit {code}); trying again in {}",
                humantime::format_duration(every)
            ));
        }
    }
}

/// A client journeyctl cannot work without: when it cannot be built, says why and gives the
/// exit code.
fn http_client<T>(what: &str, built: Result<T, reqwest::Error>) -> Result<T, u8> {
    built.map_err(|e| {
        eprintln!("journeyctl: cannot build an HTTP client for {what}: {e}");
        exit::UNAVAILABLE
    })
}

async fn verify(a: VerifyArgs) -> u8 {
    let hops = a.hops();
    let payload = match a
        .payload
        .as_deref()
        .map(serde_json::from_str::<serde_json::Value>)
    {
        None => serde_json::json!({"from": "journeyctl verify"}),
        Some(Ok(v)) => v,
        Some(Err(e)) => return crate::cli::usage_error(format!("--payload is not JSON: {e}")),
    };
    let producer = match http_client(
        "the producer",
        ProducerClient::new(&a.producer_url, Duration::from_secs(30)),
    ) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let posted = match producer
        .post(&serde_json::json!({"key": "journeyctl-verify", "payload": payload}))
        .await
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("journeyctl: POST {}: {e}", producer.url());
            println!("FAIL");
            return exit::UNAVAILABLE;
        }
    };
    let Some(trace_id) = posted
        .trace_id()
        .map(str::to_string)
        .filter(|_| posted.acked())
    else {
        eprintln!(
            "journeyctl: the producer answered {} {}",
            posted.status, posted.body
        );
        println!("FAIL");
        return exit::FAILED;
    };
    let zipkin = match http_client("Zipkin", ZipkinClient::new(&a.zipkin_url)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    eprintln!(
        "journeyctl: message accepted (trace {trace_id}); waiting up to {} for {}",
        humantime::format_duration(a.timeout),
        hops.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" → ")
    );
    let deadline = Instant::now() + a.timeout;
    let mut delay = Duration::from_millis(300);
    let mut last_line = String::new();
    // Linked traces are looked for among the expected services' traces.
    let mut services: Vec<String> = Vec::new();
    for h in &hops {
        if !services.contains(&h.service) {
            services.push(h.service.clone());
        }
    }
    let limits = a.links.limits();
    let (spans, verdict, truncated): (Vec<_>, Verdict, bool) = loop {
        let spans = match zipkin.trace(&trace_id).await {
            Ok(s) => s.unwrap_or_default(),
            Err(e) => {
                if Instant::now() >= deadline {
                    eprintln!("journeyctl: {e}");
                    println!("FAIL");
                    return exit::UNAVAILABLE;
                }
                Vec::new()
            }
        };
        let mut verdict = check(&spans, &hops);
        let (mut spans, mut truncated) = (spans, false);
        // In trace mode `link` the journey goes on in linked traces.
        if let Some(limits) = limits
            .as_ref()
            .filter(|_| !verdict.passed() && !spans.is_empty())
        {
            match crate::links::follow(&zipkin, spans.clone(), Some(&services), limits).await {
                Ok(st) if !st.linked.is_empty() => {
                    spans = st.spans;
                    truncated = st.truncated;
                    verdict = check(&spans, &hops);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("following links: {e}"),
            }
        }
        if verdict.passed() || Instant::now() >= deadline {
            break (spans, verdict, truncated);
        }
        let pending: Vec<String> = verdict
            .hops
            .iter()
            .filter(|(_, o)| !matches!(o, crate::verify::HopOutcome::Ok(_)))
            .map(|(h, _)| h.to_string())
            .collect();
        let line = format!(
            "{} spans so far; pending: {}",
            spans.len(),
            pending.join(", ")
        );
        if line != last_line {
            eprintln!("journeyctl: {line}");
            last_line = line;
        }
        tokio::time::sleep(delay.min(deadline.saturating_duration_since(Instant::now()))).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    };
    if spans.is_empty() {
        println!("trace {trace_id}: no spans in Zipkin");
        println!("{}", zipkin.trace_page(&trace_id));
    } else {
        let j = Journey::new(spans);
        print!("{}", j.render(use_color()));
        print_pages(&zipkin, &j, truncated);
    }
    println!("{verdict}");
    if verdict.passed() {
        exit::OK
    } else {
        exit::FAILED
    }
}

async fn journey(a: JourneyArgs) -> u8 {
    let zipkin = match http_client("Zipkin", ZipkinClient::new(&a.zipkin_url)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let trace_id = match (&a.trace_id, a.last) {
        (Some(t), _) => {
            let t = t.trim().to_ascii_lowercase();
            let hex = t.chars().all(|c| c.is_ascii_hexdigit());
            if !hex || !(t.len() == 16 || t.len() == 32) || t.chars().all(|c| c == '0') {
                return crate::cli::usage_error(format!(
                    "`{t}` is not a trace id (16 or 32 hex digits, not all zero)"
                ));
            }
            t
        }
        (None, _) => match zipkin.last_trace_id(&a.service, a.lookback).await {
            Ok(Some(t)) => t,
            Ok(None) => {
                eprintln!(
                    "journeyctl: Zipkin has no trace of service `{}` in the last {}",
                    a.service,
                    humantime::format_duration(a.lookback)
                );
                return exit::FAILED;
            }
            Err(e) => {
                eprintln!("journeyctl: {e}");
                return exit::UNAVAILABLE;
            }
        },
    };
    let spans = match zipkin.trace(&trace_id).await {
        Ok(Some(s)) if !s.is_empty() => s,
        Ok(_) => {
            eprintln!("journeyctl: Zipkin does not know trace {trace_id}");
            return exit::FAILED;
        }
        Err(e) => {
            eprintln!("journeyctl: {e}");
            return exit::UNAVAILABLE;
        }
    };
    let stitched = match a.links.limits() {
        Some(limits) => match crate::links::follow(&zipkin, spans.clone(), None, &limits).await {
            Ok(st) => st,
            Err(e) => {
                eprintln!("journeyctl: linked traces not followed: {e}");
                crate::links::Stitched {
                    spans,
                    ..Default::default()
                }
            }
        },
        None => crate::links::Stitched {
            spans,
            ..Default::default()
        },
    };
    let j = Journey::new(stitched.spans);
    if a.json {
        let mut doc = serde_json::json!({
            "trace_id": trace_id,
            "services": j.services(),
            "total_us": j.total_us(),
            "hops": j.hops(),
            "spans": j.spans(),
        });
        if !stitched.linked.is_empty() {
            doc["linked_traces"] = serde_json::json!(stitched.linked);
        }
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        print!("{}", j.render(use_color()));
        print_pages(&zipkin, &j, stitched.truncated);
    }
    exit::OK
}

/// The Zipkin UI page of each trace of the journey (one per linked trace), and a note when
/// some linked traces were left out.
fn print_pages(zipkin: &ZipkinClient, j: &Journey, truncated: bool) {
    for t in j.trace_ids() {
        println!("{}", zipkin.trace_page(&t));
    }
    if truncated {
        eprintln!("journeyctl: more linked traces exist beyond --link-depth / --max-linked-traces");
    }
}

async fn load(a: LoadArgs) -> u8 {
    if a.rate.is_nan() || a.rate <= 0.0 || a.duration.is_zero() || a.concurrency == 0 {
        return crate::cli::usage_error("--rate, --duration and --concurrency must be positive");
    }
    let client = match http_client(
        "the producer",
        ProducerClient::new(&a.producer_url, Duration::from_secs(30)),
    ) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let opts = LoadOptions {
        rate: a.rate,
        duration: a.duration,
        concurrency: a.concurrency,
        progress: !a.json || std::io::stderr().is_terminal(),
    };
    let summary = run_load(&client, &opts).await;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).unwrap_or_default()
        );
    } else {
        println!("{summary}");
    }
    if summary.errors == 0 {
        exit::OK
    } else {
        exit::FAILED
    }
}

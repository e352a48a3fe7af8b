//! `wait`, `seed`, and `init`: both, then (with `--keep-seeding`) seeding again and again.

use std::time::Duration;

use journey_messaging::KafkaArgs;

use super::progress_line;
use crate::cli::{InitArgs, SeedArgs, TopicArgs, WaitArgs, WaitTargets};
use crate::error::Error;

/// A kube client and the namespace to use, only when workloads are named.
async fn kube_for(t: &WaitTargets) -> Result<(Option<kube::Client>, String), Error> {
    if t.workloads.is_empty() {
        return Ok((None, t.namespace.clone().unwrap_or_default()));
    }
    let config = kube::Config::infer().await.map_err(Error::KubeConfig)?;
    let ns = crate::cli::namespace_or_default(t.namespace.as_deref(), &config.default_namespace);
    let client = kube::Client::try_from(config).map_err(Error::KubeClient)?;
    Ok((Some(client), ns))
}

async fn wait_phase(t: &WaitTargets, kafka: &KafkaArgs) -> Result<(), Error> {
    let (client, ns) = kube_for(t).await?;
    let plan = crate::cli::wait_plan(t, ns, Some(kafka));
    if !plan.targets.is_empty() {
        let targets: Vec<String> = plan.targets.iter().map(ToString::to_string).collect();
        progress_line(&format!(
            "waiting up to {} in namespace {} for {}",
            humantime::format_duration(plan.timeout),
            plan.namespace,
            targets.join(", ")
        ));
    }
    let mut progress = progress_line;
    crate::wait::wait(client, &plan, &mut progress).await?;
    Ok(())
}

pub(super) async fn wait(a: WaitArgs) -> Result<(), Error> {
    wait_phase(&a.targets, &a.kafka).await
}

/// One seeding; the report is printed always (`verbose`) or only when something changed.
async fn seed_once(topics: &TopicArgs, kafka: &KafkaArgs, verbose: bool) -> Result<(), Error> {
    let specs = topics.resolve()?;
    if specs.is_empty() {
        progress_line("no topics given (TOPICS_FILE or --topic): nothing to seed");
        return Ok(());
    }
    let mut config = kafka.client_config("journeyctl");
    config.set("log_level", "3");
    let report = crate::seed::seed(&config, &specs, topics.dry_run).await?;
    if verbose || report.changed() {
        println!("{report}");
    }
    Ok(())
}

pub(super) async fn seed(a: SeedArgs) -> Result<(), Error> {
    seed_once(&a.topics, &a.kafka, true).await
}

pub(super) async fn init(a: InitArgs) -> Result<(), Error> {
    // Check the topics before waiting minutes for the cluster.
    a.topics.resolve()?;
    wait_phase(&a.targets, &a.kafka).await?;
    seed_once(&a.topics, &a.kafka, true).await?;
    match a.keep_seeding {
        Some(every) => keep_seeding(&a, every).await,
        None => Ok(()),
    }
}

/// Seeds again every `every` until SIGTERM/SIGINT (then `Ok`). A failed round (Kafka
/// restarting) is reported and retried at the next one.
async fn keep_seeding(a: &InitArgs, every: Duration) -> Result<(), Error> {
    let every_text = humantime::format_duration(every);
    progress_line(&format!("seeding again every {every_text} until stopped"));
    let stop = journey_telemetry::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return Ok(()),
            () = tokio::time::sleep(every) => {}
        }
        if let Err(e) = seed_once(&a.topics, &a.kafka, false).await {
            progress_line(&format!(
                "seeding failed (exit {}): {}; trying again in {every_text}",
                e.exit_code(),
                crate::error::chain(&e)
            ));
        }
    }
}

//! `journeyctl seed` on a real local Kafka: creates, is idempotent, grows partitions, applies
//! config changes (keeping configs set by hand), refuses to shrink with a warning, and a dry
//! run changes nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use journey_tests::runner::{self, Fixture, block_on};
use journey_tests::stack::Kafka;
use journey_tests::tools::Tools;
use journey_tests::{repo_root, tests};
use journeyctl::seed::{Action, SeedReport, Warning, seed};
use journeyctl::topics::{TopicSpec, load_topics_file};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;

struct KafkaOnly {
    kafka: Kafka,
    _dir: tempfile::TempDir,
}

impl Fixture for KafkaOnly {
    fn logs_dirs(&self) -> Vec<PathBuf> {
        vec![self._dir.path().join("logs")]
    }
}

impl KafkaOnly {
    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.kafka.bootstrap())
            .set("log_level", "3");
        c
    }
}

fn main() -> std::process::ExitCode {
    runner::main(
        || {
            let dir = tempfile::Builder::new()
                .prefix("journeyctl-seed-")
                .tempdir()?;
            let kafka = block_on(Kafka::start(&Tools::load()?, dir.path()))?;
            Ok(KafkaOnly { kafka, _dir: dir })
        },
        tests![
            seed_creates_missing_topics_with_their_partitions_replication_and_configs,
            a_second_seed_changes_nothing,
            seed_grows_partitions_when_fewer,
            seed_applies_a_changed_config_and_keeps_configs_set_by_hand,
            seed_refuses_to_shrink_and_warns,
            a_dry_run_reports_the_diff_and_changes_nothing,
            two_concurrent_seeders_both_succeed,
            the_charts_values_file_seeds_its_topics,
        ],
    )
}

/// What Kafka says about a topic: partitions, replication factor, dynamic configs.
#[derive(Debug, PartialEq)]
struct Actual {
    partitions: usize,
    replication_factor: usize,
    dynamic_configs: BTreeMap<String, String>,
}

async fn actual(k: &KafkaOnly, topic: &str) -> Result<Option<Actual>> {
    let admin: AdminClient<DefaultClientContext> = k.client().create()?;
    let md = admin
        .inner()
        .fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let Some(t) = md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
    else {
        return Ok(None);
    };
    let partitions = t.partitions().len();
    let replication_factor = t.partitions().first().map_or(0, |p| p.replicas().len());
    let res = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &AdminOptions::new())
        .await?;
    let resource = res
        .into_iter()
        .next()
        .context("no describe result")?
        .map_err(|c| anyhow::anyhow!("{c}"))?;
    let dynamic_configs = resource
        .entries
        .iter()
        .filter(|e| e.source == rdkafka::admin::ConfigSource::DynamicTopic)
        .filter_map(|e| e.value.clone().map(|v| (e.name.clone(), v)))
        .collect();
    Ok(Some(Actual {
        partitions,
        replication_factor,
        dynamic_configs,
    }))
}

fn unique(name: &str) -> String {
    format!("{name}-{:08x}", rand::random::<u32>())
}

fn show(r: &SeedReport) -> String {
    format!("\n{r}")
}

fn seed_creates_missing_topics_with_their_partitions_replication_and_configs(
    k: &KafkaOnly,
) -> Result<()> {
    block_on(async {
        let a = unique("create-a");
        let b = unique("create-b");
        let topics = vec![
            TopicSpec::new(&a, 3).with_config("retention.ms", "3600000"),
            TopicSpec::new(&b, 1)
                .with_config("cleanup.policy", "compact")
                .with_config("segment.bytes", "1048576"),
        ];
        let report = seed(&k.client(), &topics, false).await?;
        ensure!(report.changed(), "{}", show(&report));
        ensure!(
            matches!(
                report.topic(&a).map(|t| t.actions.as_slice()),
                Some([Action::Create { partitions: 3, .. }])
            ),
            "{}",
            show(&report)
        );
        let got = actual(k, &a).await?.context("topic a was not created")?;
        ensure!(
            got.partitions == 3 && got.replication_factor == 1,
            "{got:?}"
        );
        ensure!(
            got.dynamic_configs.get("retention.ms").map(String::as_str) == Some("3600000"),
            "{got:?}"
        );
        let got = actual(k, &b).await?.context("topic b was not created")?;
        ensure!(got.partitions == 1, "{got:?}");
        ensure!(
            got.dynamic_configs
                .get("cleanup.policy")
                .map(String::as_str)
                == Some("compact"),
            "{got:?}"
        );
        ensure!(
            got.dynamic_configs.get("segment.bytes").map(String::as_str) == Some("1048576"),
            "{got:?}"
        );
        ensure!(
            report
                .to_string()
                .contains(&format!("+ {a}: created with 3 partitions")),
            "{}",
            show(&report)
        );
        Ok(())
    })
}

fn a_second_seed_changes_nothing(k: &KafkaOnly) -> Result<()> {
    block_on(async {
        let topics = vec![
            TopicSpec::new(unique("idem-a"), 2).with_config("retention.ms", "7200000"),
            TopicSpec::new(unique("idem-b"), 1),
        ];
        let first = seed(&k.client(), &topics, false).await?;
        ensure!(first.changed(), "{}", show(&first));
        let before = actual(k, &topics[0].name).await?;
        let second = seed(&k.client(), &topics, false).await?;
        ensure!(
            !second.changed(),
            "second run changed something:{}",
            show(&second)
        );
        ensure!(second.warnings().count() == 0, "{}", show(&second));
        ensure!(
            second.to_string().contains("0 changed"),
            "{}",
            show(&second)
        );
        ensure!(
            actual(k, &topics[0].name).await? == before,
            "state moved on a no-op run"
        );
        Ok(())
    })
}

fn seed_grows_partitions_when_fewer(k: &KafkaOnly) -> Result<()> {
    block_on(async {
        let name = unique("grow");
        seed(&k.client(), &[TopicSpec::new(&name, 1)], false).await?;
        let report = seed(&k.client(), &[TopicSpec::new(&name, 4)], false).await?;
        ensure!(
            report.topic(&name).map(|t| t.actions.clone())
                == Some(vec![Action::GrowPartitions { from: 1, to: 4 }]),
            "{}",
            show(&report)
        );
        let got = actual(k, &name).await?.context("topic vanished")?;
        ensure!(got.partitions == 4, "{got:?}");
        Ok(())
    })
}

fn seed_applies_a_changed_config_and_keeps_configs_set_by_hand(k: &KafkaOnly) -> Result<()> {
    block_on(async {
        let name = unique("config");
        seed(
            &k.client(),
            &[TopicSpec::new(&name, 1).with_config("retention.ms", "1000000")],
            false,
        )
        .await?;
        // Someone sets a config by hand that the spec does not mention.
        let admin: AdminClient<DefaultClientContext> = k.client().create()?;
        let hand = AlterConfig::new(ResourceSpecifier::Topic(&name))
            .set("retention.ms", "1000000")
            .set("max.message.bytes", "2000000");
        for r in admin.alter_configs([&hand], &AdminOptions::new()).await? {
            r.map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
        let report = seed(
            &k.client(),
            &[TopicSpec::new(&name, 1).with_config("retention.ms", "2000000")],
            false,
        )
        .await?;
        let actions = report
            .topic(&name)
            .map(|t| t.actions.clone())
            .unwrap_or_default();
        ensure!(
            matches!(actions.as_slice(), [Action::SetConfig { key, from: Some(from), to, .. }]
                if key == "retention.ms" && from == "1000000" && to == "2000000"),
            "{}",
            show(&report)
        );
        let got = actual(k, &name).await?.context("topic vanished")?;
        ensure!(
            got.dynamic_configs.get("retention.ms").map(String::as_str) == Some("2000000"),
            "{got:?}"
        );
        ensure!(
            got.dynamic_configs
                .get("max.message.bytes")
                .map(String::as_str)
                == Some("2000000"),
            "a config set by hand was reset: {got:?}"
        );
        ensure!(
            report
                .to_string()
                .contains("retention.ms 1000000 -> 2000000 (set)"),
            "{}",
            show(&report)
        );
        Ok(())
    })
}

fn seed_refuses_to_shrink_and_warns(k: &KafkaOnly) -> Result<()> {
    block_on(async {
        let name = unique("shrink");
        seed(&k.client(), &[TopicSpec::new(&name, 3)], false).await?;
        let report = seed(&k.client(), &[TopicSpec::new(&name, 1)], false).await?;
        let t = report.topic(&name).context("no report")?;
        ensure!(t.actions.is_empty(), "{}", show(&report));
        ensure!(
            t.warnings
                == vec![Warning::ShrinkRefused {
                    current: 3,
                    wanted: 1
                }],
            "{}",
            show(&report)
        );
        ensure!(
            report.to_string().contains("partitions are never removed"),
            "{}",
            show(&report)
        );
        ensure!(
            actual(k, &name)
                .await?
                .context("topic vanished")?
                .partitions
                == 3,
            "partitions changed"
        );
        Ok(())
    })
}

fn a_dry_run_reports_the_diff_and_changes_nothing(k: &KafkaOnly) -> Result<()> {
    block_on(async {
        let existing = unique("dry-existing");
        let missing = unique("dry-missing");
        seed(
            &k.client(),
            &[TopicSpec::new(&existing, 1).with_config("retention.ms", "1000000")],
            false,
        )
        .await?;
        let before = actual(k, &existing).await?;
        let wanted = vec![
            TopicSpec::new(&existing, 2).with_config("retention.ms", "5000000"),
            TopicSpec::new(&missing, 1),
        ];
        let report = seed(&k.client(), &wanted, true).await?;
        ensure!(report.dry_run && report.changed(), "{}", show(&report));
        let text = report.to_string();
        for line in [
            format!("+ {missing}: would create"),
            format!("~ {existing}: partitions 1 -> 2 (would grow)"),
            format!("~ {existing}: retention.ms 1000000 -> 5000000 (would set)"),
        ] {
            ensure!(text.contains(&line), "missing `{line}` in:\n{text}");
        }
        ensure!(
            actual(k, &missing).await?.is_none(),
            "dry run created {missing}"
        );
        ensure!(
            actual(k, &existing).await? == before,
            "dry run changed {existing}"
        );
        Ok(())
    })
}

fn two_concurrent_seeders_both_succeed(k: &KafkaOnly) -> Result<()> {
    block_on(async {
        let topics: Vec<TopicSpec> = (0..3)
            .map(|i| TopicSpec::new(unique(&format!("race{i}")), 2))
            .collect();
        let (c1, c2) = (k.client(), k.client());
        let (a, b) = tokio::join!(seed(&c1, &topics, false), seed(&c2, &topics, false));
        let (a, b) = (a?, b?);
        for t in &topics {
            let got = actual(k, &t.name).await?.context("topic missing")?;
            ensure!(got.partitions == 2, "{got:?}");
        }
        let third = seed(&k.client(), &topics, false).await?;
        ensure!(!third.changed(), "{}{}{}", show(&a), show(&b), show(&third));
        Ok(())
    })
}

fn the_charts_values_file_seeds_its_topics(k: &KafkaOnly) -> Result<()> {
    block_on(async {
        let topics = load_topics_file(repo_root().join("charts/journey/values.yaml"))?;
        ensure!(!topics.is_empty(), "the chart lists no topics");
        seed(&k.client(), &topics, false).await?;
        for t in &topics {
            let got = actual(k, &t.name)
                .await?
                .with_context(|| format!("{} not created", t.name))?;
            ensure!(
                got.partitions == t.partitions as usize,
                "{}: {got:?}",
                t.name
            );
            for (key, v) in &t.configs {
                ensure!(
                    got.dynamic_configs.get(key) == Some(v),
                    "{}: {key}: {got:?}",
                    t.name
                );
            }
        }
        ensure!(
            !seed(&k.client(), &topics, false).await?.changed(),
            "second run of the chart's topics changed something"
        );
        Ok(())
    })
}

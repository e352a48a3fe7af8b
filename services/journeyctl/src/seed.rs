//! Topic seeding: make Kafka's topics match a list of [`TopicSpec`]s.
//!
//! For each topic: create it if missing; grow its partitions if it has fewer; set the configs
//! that differ. Partitions are never removed and the replication factor is never changed: both
//! are reported as warnings. A `TopicAlreadyExists` answer (another seeder won the race) counts
//! as success and the topic is then reconciled like any existing one. Running it twice changes
//! nothing the second time.
//!
//! Configs are changed with the AlterConfigs request (rdkafka 0.39 has no incremental variant).
//! AlterConfigs replaces a topic's whole set of dynamic configs, so the request carries every
//! config currently set on the topic plus the ones that change: configs set by hand and not
//! listed in the spec are kept, never reset.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::Retryable as _;
use rdkafka::ClientConfig;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewPartitions, NewTopic,
    ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use tracing::{info, instrument, warn};

use crate::topics::{TopicSpec, TopicsError, validate_all};

/// How long one admin request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What happened (or, in a dry run, would happen) to one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The topic did not exist and was created.
    Create {
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
    },
    /// Another seeder created the topic between our look and our create; it was then
    /// reconciled like an existing topic.
    CreatedConcurrently,
    /// The topic had fewer partitions than wanted.
    GrowPartitions { from: i32, to: i32 },
    /// A config differed (`from` is the current value, `None` when Kafka did not report one).
    SetConfig {
        key: String,
        from: Option<String>,
        from_default: bool,
        to: String,
    },
}

/// Something seeding will not do, reported instead of done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// The topic has more partitions than wanted: partitions are never removed.
    ShrinkRefused { current: i32, wanted: i32 },
    /// The topic's replication factor differs: seeding never reassigns replicas.
    ReplicationFactorDiffers { current: i16, wanted: i16 },
}

/// The outcome for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicReport {
    pub name: String,
    pub actions: Vec<Action>,
    pub warnings: Vec<Warning>,
}

impl TopicReport {
    fn new(name: &str) -> Self {
        TopicReport {
            name: name.to_string(),
            actions: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// True when something was (or, in a dry run, would be) changed.
    pub fn changed(&self) -> bool {
        self.actions
            .iter()
            .any(|a| !matches!(a, Action::CreatedConcurrently))
    }
}

/// The outcome of one [`seed`] call: one entry per requested topic, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SeedReport {
    pub dry_run: bool,
    pub topics: Vec<TopicReport>,
}

impl SeedReport {
    /// True when any topic was (or would be) changed.
    pub fn changed(&self) -> bool {
        self.topics.iter().any(TopicReport::changed)
    }

    /// Every warning, with its topic name.
    pub fn warnings(&self) -> impl Iterator<Item = (&str, &Warning)> {
        self.topics
            .iter()
            .flat_map(|t| t.warnings.iter().map(move |w| (t.name.as_str(), w)))
    }

    pub fn topic(&self, name: &str) -> Option<&TopicReport> {
        self.topics.iter().find(|t| t.name == name)
    }
}

/// The diff, one line per change: `+` create, `~` change, `=` unchanged, `!` warning.
impl fmt::Display for SeedReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb =
            |done: &'static str, would: &'static str| if self.dry_run { would } else { done };
        for t in &self.topics {
            if !t.changed() && t.warnings.is_empty() {
                writeln!(f, "= {}: up to date", t.name)?;
            }
            for a in &t.actions {
                match a {
                    Action::Create {
                        partitions,
                        replication_factor,
                        configs,
                    } => {
                        write!(
                            f,
                            "+ {}: {} with {partitions} partition{}, replication factor {replication_factor}",
                            t.name,
                            verb("created", "would create"),
                            if *partitions == 1 { "" } else { "s" }
                        )?;
                        if !configs.is_empty() {
                            let c: Vec<String> =
                                configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                            write!(f, ", {}", c.join(", "))?;
                        }
                        writeln!(f)?;
                    }
                    Action::CreatedConcurrently => {
                        writeln!(f, "= {}: created meanwhile by another seeder", t.name)?;
                    }
                    Action::GrowPartitions { from, to } => writeln!(
                        f,
                        "~ {}: partitions {from} -> {to} ({})",
                        t.name,
                        verb("grown", "would grow")
                    )?,
                    Action::SetConfig {
                        key,
                        from,
                        from_default,
                        to,
                    } => {
                        let from = match (from, from_default) {
                            (Some(v), true) => format!("{v} (default)"),
                            (Some(v), false) => v.clone(),
                            (None, _) => "(unset)".to_string(),
                        };
                        writeln!(
                            f,
                            "~ {}: {key} {from} -> {to} ({})",
                            t.name,
                            verb("set", "would set")
                        )?;
                    }
                }
            }
            for w in &t.warnings {
                writeln!(f, "! {}: {w}", t.name)?;
            }
        }
        let changed = self.topics.iter().filter(|t| t.changed()).count();
        let warned = self
            .topics
            .iter()
            .filter(|t| !t.warnings.is_empty())
            .count();
        write!(
            f,
            "{}{} topic{}, {changed} {}, {warned} with warnings",
            if self.dry_run { "dry run: " } else { "" },
            self.topics.len(),
            if self.topics.len() == 1 { "" } else { "s" },
            verb("changed", "would change"),
        )
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::ShrinkRefused { current, wanted } => write!(
                f,
                "has {current} partitions, {wanted} wanted: partitions are never removed (kept {current})"
            ),
            Warning::ReplicationFactorDiffers { current, wanted } => write!(
                f,
                "replication factor is {current}, {wanted} wanted: seeding never reassigns replicas \
                 (use kafka-reassign-partitions)"
            ),
        }
    }
}

/// Why seeding failed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(transparent)]
    Invalid(#[from] TopicsError),
    #[error("creating the Kafka admin client: {0}")]
    Client(#[source] KafkaError),
    #[error("reading Kafka metadata: {0}")]
    Metadata(#[source] KafkaError),
    #[error("{op}: {source}")]
    Admin {
        op: &'static str,
        #[source]
        source: KafkaError,
    },
    #[error("topic `{topic}`: {op} failed: {code}")]
    Topic {
        topic: String,
        op: &'static str,
        code: RDKafkaErrorCode,
    },
    #[error(
        "topic `{topic}`: config `{config}` is set but its value is hidden (sensitive): \
         AlterConfigs would reset it, so seeding will not change this topic's configs"
    )]
    HiddenConfig { topic: String, config: String },
    #[error("topic `{topic}`: not in the cluster's metadata {} after it was created", humantime::format_duration(*.after))]
    NotVisible { topic: String, after: Duration },
    #[error("the metadata request's task failed")]
    MetadataTask(#[source] tokio::task::JoinError),
}

impl SeedError {
    /// 2 for invalid topics, 5 when Kafka cannot be reached, 6 when it refused a change.
    pub fn exit_code(&self) -> u8 {
        match self {
            SeedError::Invalid(_) => crate::exit::USAGE,
            SeedError::Client(_) | SeedError::Metadata(_) | SeedError::MetadataTask(_) => {
                crate::exit::UNAVAILABLE
            }
            SeedError::Admin { .. }
            | SeedError::Topic { .. }
            | SeedError::HiddenConfig { .. }
            | SeedError::NotVisible { .. } => crate::exit::SEED_FAILED,
        }
    }

    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            SeedError::Invalid(_) => "fix the topic named above in TOPICS_FILE or TOPICS (--topic)",
            SeedError::Client(_) | SeedError::Metadata(_) | SeedError::MetadataTask(_) => {
                "check KAFKA_BOOTSTRAP_SERVERS (and the KAFKA_SECURITY_PROTOCOL / KAFKA_SASL_* \
                 settings) and that the brokers are up"
            }
            SeedError::Admin { .. } | SeedError::Topic { .. } | SeedError::NotVisible { .. } => {
                "Kafka refused or did not finish the change: the brokers' logs say why (e.g. a \
                 replication factor above the broker count, or missing ACLs)"
            }
            SeedError::HiddenConfig { .. } => {
                "change that topic by hand (kafka-configs), or leave its configs out of the spec"
            }
        }
    }
}

/// What metadata says about an existing topic.
#[derive(Debug, Clone, Copy)]
struct Existing {
    partitions: i32,
    replication_factor: i16,
}

/// Makes Kafka's topics match `topics` (see the module docs). With `dry_run`, only reads and
/// reports what it would do.
#[instrument(name = "seed topics", skip_all, fields(topics = topics.len(), dry_run))]
pub async fn seed(
    client: &ClientConfig,
    topics: &[TopicSpec],
    dry_run: bool,
) -> Result<SeedReport, SeedError> {
    validate_all(topics)?;
    let admin: Arc<AdminClient<DefaultClientContext>> =
        Arc::new(client.create().map_err(SeedError::Client)?);
    let opts = AdminOptions::new()
        .request_timeout(Some(REQUEST_TIMEOUT))
        .operation_timeout(Some(REQUEST_TIMEOUT));

    let mut existing = existing_topics(&admin).await?;
    let mut reports: Vec<TopicReport> = topics.iter().map(|t| TopicReport::new(&t.name)).collect();

    // 1. Create the missing topics (in one request).
    let missing: Vec<&TopicSpec> = topics
        .iter()
        .filter(|t| !existing.contains_key(&t.name))
        .collect();
    let mut raced = Vec::new();
    if !missing.is_empty() && !dry_run {
        let new_topics: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|t| {
                t.configs.iter().fold(
                    NewTopic::new(
                        &t.name,
                        t.partitions,
                        TopicReplication::Fixed(i32::from(t.replication_factor)),
                    ),
                    |nt, (k, v)| nt.set(k, v),
                )
            })
            .collect();
        let results = admin
            .create_topics(new_topics.iter(), &opts)
            .await
            .map_err(|source| SeedError::Admin {
                op: "CreateTopics",
                source,
            })?;
        for r in results {
            match r {
                Ok(name) => info!(topic = %name, "created"),
                Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    info!(topic = %name, "created meanwhile by another seeder");
                    raced.push(name);
                }
                Err((topic, code)) => {
                    return Err(SeedError::Topic {
                        topic,
                        op: "create",
                        code,
                    });
                }
            }
        }
    }
    for t in &missing {
        let report = report_mut(&mut reports, &t.name);
        if raced.contains(&t.name) {
            report.actions.push(Action::CreatedConcurrently);
        } else {
            report.actions.push(Action::Create {
                partitions: t.partitions,
                replication_factor: t.replication_factor,
                configs: t.configs.clone(),
            });
        }
    }
    let created: Vec<&str> = missing
        .iter()
        .filter(|t| !raced.contains(&t.name))
        .map(|t| t.name.as_str())
        .collect();
    if !raced.is_empty() {
        // The winner's topics are reconciled like existing ones: learn their partitions.
        existing = wait_for_topics(
            &admin,
            &raced.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .await?;
    }

    // 2. Existing topics (and ones another seeder just created): partitions and configs.
    let to_reconcile: Vec<&TopicSpec> = topics
        .iter()
        .filter(|t| !created.contains(&t.name.as_str()) && existing.contains_key(&t.name))
        .collect();
    let mut grow = Vec::new();
    for t in &to_reconcile {
        let cur = existing[&t.name];
        let report = report_mut(&mut reports, &t.name);
        if cur.partitions < t.partitions {
            report.actions.push(Action::GrowPartitions {
                from: cur.partitions,
                to: t.partitions,
            });
            grow.push(*t);
        } else if cur.partitions > t.partitions {
            warn!(topic = %t.name, current = cur.partitions, wanted = t.partitions, "partitions are never removed");
            report.warnings.push(Warning::ShrinkRefused {
                current: cur.partitions,
                wanted: t.partitions,
            });
        }
        if cur.replication_factor != t.replication_factor {
            warn!(
                topic = %t.name,
                current = cur.replication_factor,
                wanted = t.replication_factor,
                "replication factor differs"
            );
            report.warnings.push(Warning::ReplicationFactorDiffers {
                current: cur.replication_factor,
                wanted: t.replication_factor,
            });
        }
    }
    if !grow.is_empty() && !dry_run {
        let parts: Vec<NewPartitions<'_>> = grow
            .iter()
            .map(|t| NewPartitions::new(&t.name, t.partitions as usize))
            .collect();
        let results = admin
            .create_partitions(parts.iter(), &opts)
            .await
            .map_err(|source| SeedError::Admin {
                op: "CreatePartitions",
                source,
            })?;
        for r in results {
            match r {
                Ok(name) => info!(topic = %name, "partitions grown"),
                Err((topic, code)) => {
                    // A concurrent seeder may have grown it first: accept if it now has enough.
                    let now = wait_for_topics(&admin, &[topic.as_str()]).await?;
                    let wanted = grow
                        .iter()
                        .find(|t| t.name == topic)
                        .map_or(0, |t| t.partitions);
                    if now.get(&topic).is_some_and(|e| e.partitions >= wanted) {
                        info!(topic = %topic, %code, "partitions grown meanwhile by another seeder");
                    } else {
                        return Err(SeedError::Topic {
                            topic,
                            op: "grow partitions",
                            code,
                        });
                    }
                }
            }
        }
    }

    // 3. Configs of the topics that existed.
    if !to_reconcile.is_empty() {
        reconcile_configs(&admin, &opts, &to_reconcile, &mut reports, dry_run).await?;
    }

    // 4. Created topics must be visible in metadata before the callers produce to them.
    if !created.is_empty() && !dry_run {
        wait_for_topics(&admin, &created).await?;
    }

    let report = SeedReport {
        dry_run,
        topics: reports,
    };
    info!(changed = report.changed(), "seeding done");
    Ok(report)
}

fn report_mut<'a>(reports: &'a mut [TopicReport], name: &str) -> &'a mut TopicReport {
    let i = reports.iter().position(|r| r.name == name).unwrap_or(0);
    &mut reports[i]
}

async fn reconcile_configs(
    admin: &AdminClient<DefaultClientContext>,
    opts: &AdminOptions,
    topics: &[&TopicSpec],
    reports: &mut [TopicReport],
    dry_run: bool,
) -> Result<(), SeedError> {
    let specs: Vec<ResourceSpecifier<'_>> = topics
        .iter()
        .map(|t| ResourceSpecifier::Topic(&t.name))
        .collect();
    let described = admin
        .describe_configs(specs.iter(), opts)
        .await
        .map_err(|source| SeedError::Admin {
            op: "DescribeConfigs",
            source,
        })?;
    // What each topic's AlterConfigs request must carry: (current dynamic configs + changes).
    let mut alter: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    for (t, res) in topics.iter().zip(described) {
        let resource = res.map_err(|code| SeedError::Topic {
            topic: t.name.clone(),
            op: "describe configs",
            code,
        })?;
        let entries = resource.entry_map();
        let mut changes = Vec::new();
        for (key, want) in &t.configs {
            let cur = entries.get(key.as_str());
            let cur_value = cur.and_then(|e| e.value.clone());
            if cur_value.as_deref() != Some(want.as_str()) {
                changes.push(Action::SetConfig {
                    key: key.clone(),
                    from: cur_value,
                    from_default: cur.is_some_and(|e| e.source != ConfigSource::DynamicTopic),
                    to: want.clone(),
                });
            }
        }
        if changes.is_empty() {
            continue;
        }
        let mut full: BTreeMap<String, String> = resource
            .entries
            .iter()
            .filter(|e| e.source == ConfigSource::DynamicTopic && !e.is_read_only)
            .filter_map(|e| e.value.clone().map(|v| (e.name.clone(), v)))
            .collect();
        if let Some(hidden) = resource
            .entries
            .iter()
            .find(|e| e.source == ConfigSource::DynamicTopic && e.value.is_none())
        {
            return Err(SeedError::HiddenConfig {
                topic: t.name.clone(),
                config: hidden.name.clone(),
            });
        }
        full.extend(t.configs.iter().map(|(k, v)| (k.clone(), v.clone())));
        report_mut(reports, &t.name).actions.extend(changes);
        alter.push((t.name.clone(), full));
    }
    if alter.is_empty() || dry_run {
        return Ok(());
    }
    let requests: Vec<AlterConfig<'_>> = alter
        .iter()
        .map(|(name, cfg)| {
            cfg.iter().fold(
                AlterConfig::new(ResourceSpecifier::Topic(name)),
                |a, (k, v)| a.set(k, v),
            )
        })
        .collect();
    let results = admin
        .alter_configs(requests.iter(), opts)
        .await
        .map_err(|source| SeedError::Admin {
            op: "AlterConfigs",
            source,
        })?;
    for r in results {
        if let Err((spec, code)) = r {
            return Err(SeedError::Topic {
                topic: match spec {
                    rdkafka::admin::OwnedResourceSpecifier::Topic(name) => name,
                    other => format!("{other:?}"),
                },
                op: "alter configs",
                code,
            });
        }
    }
    info!(topics = alter.len(), "configs updated");
    Ok(())
}

/// Every topic the cluster reports, with its partition count and replication factor.
async fn existing_topics(
    admin: &Arc<AdminClient<DefaultClientContext>>,
) -> Result<HashMap<String, Existing>, SeedError> {
    let admin = admin.clone();
    tokio::task::spawn_blocking(move || {
        let md = admin
            .inner()
            .fetch_metadata(None, REQUEST_TIMEOUT)
            .map_err(SeedError::Metadata)?;
        Ok(md
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .map(|t| {
                let rf = t.partitions().first().map_or(0, |p| p.replicas().len());
                (
                    t.name().to_string(),
                    Existing {
                        partitions: t.partitions().len() as i32,
                        replication_factor: i16::try_from(rf).unwrap_or(i16::MAX),
                    },
                )
            })
            .collect())
    })
    .await
    .map_err(SeedError::MetadataTask)?
}

/// Polls metadata (50 ms, doubling up to 1 s) until every named topic is listed without
/// error, for up to [`REQUEST_TIMEOUT`].
async fn wait_for_topics(
    admin: &Arc<AdminClient<DefaultClientContext>>,
    names: &[&str],
) -> Result<HashMap<String, Existing>, SeedError> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let listed = || async {
        let all = existing_topics(admin).await?;
        match names.iter().find(|n| !all.contains_key(**n)) {
            Some(missing) => Err(SeedError::NotVisible {
                topic: missing.to_string(),
                after: REQUEST_TIMEOUT,
            }),
            None => Ok(all),
        }
    };
    listed
        .retry(crate::retry::until(
            deadline,
            Duration::from_millis(50),
            Duration::from_secs(1),
        ))
        .when(|e| matches!(e, SeedError::NotVisible { .. }))
        .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_report_prints_a_diff() {
        let report = SeedReport {
            dry_run: false,
            topics: vec![
                TopicReport {
                    name: "a".into(),
                    actions: vec![Action::Create {
                        partitions: 3,
                        replication_factor: 1,
                        configs: [("retention.ms".to_string(), "1".to_string())].into(),
                    }],
                    warnings: vec![],
                },
                TopicReport {
                    name: "b".into(),
                    actions: vec![
                        Action::GrowPartitions { from: 1, to: 2 },
                        Action::SetConfig {
                            key: "retention.ms".into(),
                            from: Some("604800000".into()),
                            from_default: true,
                            to: "1000".into(),
                        },
                    ],
                    warnings: vec![],
                },
                TopicReport {
                    name: "c".into(),
                    actions: vec![],
                    warnings: vec![Warning::ShrinkRefused {
                        current: 5,
                        wanted: 2,
                    }],
                },
                TopicReport::new("d"),
            ],
        };
        let text = report.to_string();
        assert!(
            text.contains("+ a: created with 3 partitions, replication factor 1, retention.ms=1"),
            "{text}"
        );
        assert!(text.contains("~ b: partitions 1 -> 2 (grown)"), "{text}");
        assert!(
            text.contains("~ b: retention.ms 604800000 (default) -> 1000 (set)"),
            "{text}"
        );
        assert!(
            text.contains("! c: has 5 partitions, 2 wanted: partitions are never removed"),
            "{text}"
        );
        assert!(text.contains("= d: up to date"), "{text}");
        assert!(
            text.ends_with("4 topics, 2 changed, 1 with warnings"),
            "{text}"
        );
        assert!(report.changed());
        assert_eq!(report.warnings().count(), 1);
        let dry = SeedReport {
            dry_run: true,
            ..report
        };
        assert!(dry.to_string().contains("would create"), "{dry}");
    }
}

//! Topic specifications: what `seed` makes true in Kafka.
//!
//! The YAML schema is the `topics:` list of `charts/journey/values.yaml`, so the chart's values
//! file (or the ConfigMap the chart renders from it) can be read as is; other top-level keys are
//! ignored.
//!
//! ```yaml
//! topics:
//!   - name: messages
//!     partitions: 3
//!     replicationFactor: 1
//!     configs:
//!       retention.ms: "604800000"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One topic as it should exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    #[serde(default = "default_replication_factor")]
    pub replication_factor: i16,
    /// Topic-level configs (`retention.ms`, `cleanup.policy`, ...). Values are strings, as Kafka
    /// takes them; YAML numbers and booleans are accepted and turned into strings.
    #[serde(default, deserialize_with = "string_map")]
    pub configs: BTreeMap<String, String>,
}

fn default_replication_factor() -> i16 {
    1
}

impl TopicSpec {
    /// A topic with no configs and replication factor 1.
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        TopicSpec {
            name: name.into(),
            partitions,
            replication_factor: 1,
            configs: BTreeMap::new(),
        }
    }

    pub fn with_replication_factor(mut self, rf: i16) -> Self {
        self.replication_factor = rf;
        self
    }

    pub fn with_config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.configs.insert(key.into(), value.into());
        self
    }

    /// Parses the compact flag/env form `NAME:PARTITIONS[:RF][:key=value,key=value]`,
    /// e.g. `messages:3:1:retention.ms=604800000,cleanup.policy=delete`.
    pub fn parse_compact(s: &str) -> Result<TopicSpec, TopicsError> {
        let bad = |why: &str| TopicsError::Compact {
            input: s.to_string(),
            why: why.to_string(),
        };
        let mut parts = s.splitn(4, ':');
        let name = parts.next().unwrap_or_default().trim();
        let partitions = parts
            .next()
            .ok_or_else(|| bad("missing partition count"))?
            .trim()
            .parse::<i32>()
            .map_err(|_| bad("partition count is not a number"))?;
        let mut spec = TopicSpec::new(name, partitions);
        if let Some(rf) = parts.next().filter(|p| !p.trim().is_empty()) {
            spec.replication_factor = rf
                .trim()
                .parse()
                .map_err(|_| bad("replication factor is not a number"))?;
        }
        if let Some(cfgs) = parts.next() {
            for kv in cfgs.split(',').filter(|kv| !kv.trim().is_empty()) {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| bad("config is not key=value"))?;
                spec.configs
                    .insert(k.trim().to_string(), v.trim().to_string());
            }
        }
        spec.validate()?;
        Ok(spec)
    }

    /// Checks what Kafka would refuse anyway, with a clearer message.
    pub fn validate(&self) -> Result<(), TopicsError> {
        let bad = |why: String| TopicsError::Invalid {
            topic: self.name.clone(),
            why,
        };
        if self.name.is_empty() || self.name.len() > 249 {
            return Err(bad("a topic name has 1 to 249 characters".into()));
        }
        if self.name == "." || self.name == ".." {
            return Err(bad("`.` and `..` are not topic names".into()));
        }
        if let Some(c) = self
            .name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(bad(format!(
                "character {c:?} is not allowed (only [a-zA-Z0-9._-])"
            )));
        }
        if self.partitions < 1 {
            return Err(bad(format!(
                "partitions must be at least 1, not {}",
                self.partitions
            )));
        }
        if self.replication_factor < 1 {
            return Err(bad(format!(
                "replicationFactor must be at least 1, not {}",
                self.replication_factor
            )));
        }
        Ok(())
    }
}

/// Why topic specifications could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TopicsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: yaml_serde::Error,
    },
    #[error("topic `{topic}`: {why}")]
    Invalid { topic: String, why: String },
    #[error("topic `{topic}` is listed twice")]
    Duplicate { topic: String },
    #[error("`{input}` is not NAME:PARTITIONS[:RF][:key=value,...]: {why}")]
    Compact { input: String, why: String },
}

#[derive(Deserialize)]
struct TopicsDoc {
    #[serde(default)]
    topics: Vec<TopicSpec>,
}

/// Parses the `topics:` list out of a YAML document (other top-level keys are ignored).
pub fn parse_topics(yaml: &str) -> Result<Vec<TopicSpec>, yaml_serde::Error> {
    // An empty document is an empty list, not an error.
    if yaml.trim().is_empty() {
        return Ok(Vec::new());
    }
    let doc: TopicsDoc = yaml_serde::from_str(yaml)?;
    Ok(doc.topics)
}

/// Reads and validates the `topics:` list of a YAML file such as `charts/journey/values.yaml`.
pub fn load_topics_file(path: impl AsRef<Path>) -> Result<Vec<TopicSpec>, TopicsError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| TopicsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let topics = parse_topics(&text).map_err(|source| TopicsError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    validate_all(&topics)?;
    Ok(topics)
}

/// Validates each spec and rejects duplicate names.
pub fn validate_all(topics: &[TopicSpec]) -> Result<(), TopicsError> {
    let mut seen = std::collections::BTreeSet::new();
    for t in topics {
        t.validate()?;
        if !seen.insert(t.name.as_str()) {
            return Err(TopicsError::Duplicate {
                topic: t.name.clone(),
            });
        }
    }
    Ok(())
}

/// Accepts `key: "1"`, `key: 1` and `key: true` alike (Helm users write numbers unquoted).
fn string_map<'de, D>(de: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let raw: Option<BTreeMap<String, yaml_serde::Value>> = Option::deserialize(de)?;
    let mut out = BTreeMap::new();
    for (k, v) in raw.unwrap_or_default() {
        let s = match v {
            yaml_serde::Value::String(s) => s,
            yaml_serde::Value::Number(n) => n.to_string(),
            yaml_serde::Value::Bool(b) => b.to_string(),
            other => {
                return Err(serde::de::Error::custom(format!(
                    "config `{k}` must be a string, number or boolean, not {other:?}"
                )));
            }
        };
        out.insert(k, s);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_charts_values_file_parses_and_other_keys_are_ignored() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/journey/values.yaml");
        let topics = load_topics_file(&path).unwrap();
        assert!(topics.iter().any(|t| t.name == "messages"), "{topics:?}");
        let yaml = "image: {tag: x}\ntopics:\n  - name: a\n    partitions: 2\n    replicationFactor: 3\n    configs: {retention.ms: 1000, compression.type: zstd}\n";
        let t = parse_topics(yaml).unwrap();
        assert_eq!(
            t,
            vec![
                TopicSpec::new("a", 2)
                    .with_replication_factor(3)
                    .with_config("retention.ms", "1000")
                    .with_config("compression.type", "zstd")
            ]
        );
    }

    #[test]
    fn missing_topics_key_and_empty_file_are_empty_lists() {
        assert!(parse_topics("").unwrap().is_empty());
        assert!(parse_topics("other: 1\n").unwrap().is_empty());
    }

    #[test]
    fn unknown_fields_in_a_topic_are_refused() {
        assert!(
            parse_topics("topics:\n  - name: a\n    partitions: 1\n    replication: 2\n").is_err()
        );
    }

    #[test]
    fn compact_form_parses() {
        let t =
            TopicSpec::parse_compact("orders:6:3:retention.ms=10,cleanup.policy=compact").unwrap();
        assert_eq!(t.partitions, 6);
        assert_eq!(t.replication_factor, 3);
        assert_eq!(
            t.configs.get("cleanup.policy").map(String::as_str),
            Some("compact")
        );
        assert_eq!(
            TopicSpec::parse_compact("x:1").unwrap(),
            TopicSpec::new("x", 1)
        );
        assert!(TopicSpec::parse_compact("x").is_err());
        assert!(TopicSpec::parse_compact("x:0").is_err());
        assert!(TopicSpec::parse_compact("bad name:1").is_err());
    }

    #[test]
    fn duplicates_are_refused() {
        let t = vec![TopicSpec::new("a", 1), TopicSpec::new("a", 2)];
        assert!(matches!(
            validate_all(&t),
            Err(TopicsError::Duplicate { .. })
        ));
    }
}

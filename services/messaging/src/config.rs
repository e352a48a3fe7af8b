//! The Kafka client configuration every Journey binary shares.

use rdkafka::ClientConfig;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Serialize;

/// Kafka connection settings (`KAFKA_*` environment variables or `--kafka-*` flags).
/// `#[command(flatten)]` it into a binary's clap config.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct KafkaArgs {
    /// Comma-separated `host:port` list of brokers.
    #[arg(long = "kafka-bootstrap-servers", env = "KAFKA_BOOTSTRAP_SERVERS")]
    pub bootstrap_servers: String,
    /// `security.protocol`: plaintext, ssl, sasl_plaintext or sasl_ssl.
    #[arg(long = "kafka-security-protocol", env = "KAFKA_SECURITY_PROTOCOL")]
    pub security_protocol: Option<String>,
    /// `sasl.mechanism`, e.g. PLAIN, SCRAM-SHA-256, SCRAM-SHA-512.
    #[arg(long = "kafka-sasl-mechanism", env = "KAFKA_SASL_MECHANISM")]
    pub sasl_mechanism: Option<String>,
    #[arg(long = "kafka-sasl-username", env = "KAFKA_SASL_USERNAME")]
    pub sasl_username: Option<String>,
    /// Never printed: `--print-config` shows `<redacted>`, `Debug` `[REDACTED]`.
    #[arg(
        long = "kafka-sasl-password",
        env = "KAFKA_SASL_PASSWORD",
        hide_env_values = true,
        value_parser = secret
    )]
    #[serde(serialize_with = "redact")]
    pub sasl_password: Option<SecretString>,
    /// CA bundle used to verify the brokers' certificates (`ssl.ca.location`).
    #[arg(long = "kafka-ssl-ca-location", env = "KAFKA_SSL_CA_LOCATION")]
    pub ssl_ca_location: Option<String>,
    /// `client.id`; defaults to the service name.
    #[arg(long = "kafka-client-id", env = "KAFKA_CLIENT_ID")]
    pub client_id: Option<String>,
    /// The largest record this client may send (librdkafka's `message.max.bytes`): set it to
    /// the brokers' `message.max.bytes`, so that whatever the broker took can be forwarded and
    /// dead-lettered (the chart sets both from `kafka.maxMessageBytes`).
    #[arg(
        long = "kafka-message-max-bytes",
        env = "KAFKA_MESSAGE_MAX_BYTES",
        default_value_t = DEFAULT_MESSAGE_MAX_BYTES,
        value_parser = clap::value_parser!(u32).range(1000..=1_000_000_000)
    )]
    pub message_max_bytes: u32,
    /// librdkafka's `debug` contexts, comma-separated (e.g. `consumer,cgrp,topic,fetch`):
    /// the client's own log, for diagnosing a connection or a consumer group.
    #[arg(long = "kafka-debug", env = "KAFKA_DEBUG")]
    pub debug: Option<String>,
}

/// librdkafka's and the chart's default for `message.max.bytes`.
pub const DEFAULT_MESSAGE_MAX_BYTES: u32 = 1_000_000;

fn secret(value: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(value))
}

fn redact<S: serde::Serializer>(value: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => s.serialize_str("<redacted>"),
        None => s.serialize_none(),
    }
}

/// Who we are and which broker we talk to, as the span attributes need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaEndpoint {
    /// `messaging.client.id`.
    pub client_id: String,
    /// `server.address`: the first bootstrap server's host.
    pub server_address: String,
    /// `server.port`: the first bootstrap server's port, when given.
    pub server_port: Option<u16>,
}

impl KafkaArgs {
    /// Only the bootstrap servers set (tests, tools).
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        KafkaArgs {
            bootstrap_servers: bootstrap_servers.into(),
            security_protocol: None,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
            client_id: None,
            message_max_bytes: DEFAULT_MESSAGE_MAX_BYTES,
            debug: None,
        }
    }

    /// `KAFKA_CLIENT_ID`, or `default` (the service name) when unset or empty.
    pub fn client_id_or(&self, default: &str) -> String {
        self.client_id
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or(default)
            .to_string()
    }

    /// A client config with the connection and security settings and `client.id`.
    pub fn client_config(&self, default_client_id: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", self.client_id_or(default_client_id))
            .set("message.max.bytes", self.message_max_bytes.to_string());
        let optional = [
            ("security.protocol", &self.security_protocol),
            ("sasl.mechanism", &self.sasl_mechanism),
            ("sasl.username", &self.sasl_username),
            ("ssl.ca.location", &self.ssl_ca_location),
            ("debug", &self.debug),
        ];
        let password = self
            .sasl_password
            .as_ref()
            .map(|p| p.expose_secret().to_string());
        for (key, value) in optional.into_iter().chain([("sasl.password", &password)]) {
            if let Some(v) = value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
                c.set(key, v);
            }
        }
        c
    }

    /// [`KafkaArgs::client_config`] for an idempotent `acks=all` producer whose deliveries fail
    /// after `message_timeout_ms` (librdkafka's `message.timeout.ms`).
    pub fn producer_config(
        &self,
        default_client_id: &str,
        message_timeout_ms: u64,
    ) -> ClientConfig {
        let mut c = self.client_config(default_client_id);
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", message_timeout_ms.to_string())
            .set("linger.ms", "5");
        c
    }

    /// [`KafkaArgs::client_config`] for an at-least-once consumer in `group_id`: offsets are
    /// stored explicitly after processing (`enable.auto.offset.store=false`) and committed by
    /// the auto-commit timer and on shutdown; a new group starts at the earliest offset.
    pub fn consumer_config(&self, default_client_id: &str, group_id: &str) -> ClientConfig {
        let mut c = self.client_config(default_client_id);
        c.set("group.id", group_id)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000");
        c
    }

    /// The span attributes' view of this client.
    pub fn endpoint(&self, default_client_id: &str) -> KafkaEndpoint {
        let first = self
            .bootstrap_servers
            .split(',')
            .map(str::trim)
            .find(|s| !s.is_empty())
            .unwrap_or("");
        let first = first
            .rsplit_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or(first);
        let (address, port) = match first.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(':') => match port.parse::<u16>() {
                Ok(p) => (host, Some(p)),
                Err(_) => (first, None),
            },
            _ => (first, None),
        };
        let address = address.trim_start_matches('[').trim_end_matches(']');
        KafkaEndpoint {
            client_id: self.client_id_or(default_client_id),
            server_address: address.to_string(),
            server_port: port,
        }
    }
}

/// Serializes a duration as humantime text (`1m 30s`), as the binaries' `--print-config` shows
/// the `*_TIMEOUT` settings they read in that form.
pub fn serialize_duration<S: serde::Serializer>(
    d: &std::time::Duration,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use journey_telemetry::test_support::with_only_env;

    #[derive(Debug, Parser)]
    struct Bin {
        #[command(flatten)]
        kafka: KafkaArgs,
    }

    #[test]
    fn the_endpoint_takes_host_and_port_of_the_first_bootstrap_server() {
        let e = KafkaArgs::new("kafka-0.kafka:9092, kafka-1:9092").endpoint("producer");
        assert_eq!(e.server_address, "kafka-0.kafka");
        assert_eq!(e.server_port, Some(9092));
        assert_eq!(e.client_id, "producer");
        let e = KafkaArgs::new("[::1]:19092").endpoint("x");
        assert_eq!(
            (e.server_address.as_str(), e.server_port),
            ("::1", Some(19092))
        );
        let e = KafkaArgs::new("broker").endpoint("x");
        assert_eq!((e.server_address.as_str(), e.server_port), ("broker", None));
    }

    #[test]
    fn the_client_id_defaults_to_the_service_name_and_secrets_are_redacted() {
        let mut args = KafkaArgs::new("b:1");
        args.sasl_password = Some("hunter2".into());
        assert_eq!(args.client_id_or("relay"), "relay");
        args.client_id = Some("custom".into());
        assert_eq!(args.client_id_or("relay"), "custom");
        let json = serde_json::to_string(&args).unwrap();
        assert!(
            json.contains("<redacted>") && !json.contains("hunter2"),
            "{json}"
        );
        let debug = format!("{args:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert_eq!(
            args.client_config("relay").get("sasl.password"),
            Some("hunter2")
        );
    }

    /// Parses `args` with the `KAFKA_*` variables the args read set as `env` says and every
    /// other one unset, whatever the caller's environment holds.
    fn parse_with(env: &[(&str, &str)], args: &[&str]) -> Result<Bin, clap::Error> {
        use clap::CommandFactory;
        with_only_env(&Bin::command(), env, || Bin::try_parse_from(args))
    }

    #[test]
    fn the_args_read_every_kafka_variable() {
        let env = [
            ("KAFKA_BOOTSTRAP_SERVERS", "env:1"),
            ("KAFKA_SECURITY_PROTOCOL", "ssl"),
            ("KAFKA_SASL_MECHANISM", "PLAIN"),
            ("KAFKA_SASL_USERNAME", "user"),
            ("KAFKA_SASL_PASSWORD", "hunter2"),
            ("KAFKA_SSL_CA_LOCATION", "/ca.pem"),
            ("KAFKA_CLIENT_ID", "custom"),
            ("KAFKA_DEBUG", "cgrp"),
            ("KAFKA_MESSAGE_MAX_BYTES", "2000000"),
        ];
        let c = parse_with(&env, &["bin"]).unwrap().kafka.client_config("p");
        for (key, value) in [
            ("bootstrap.servers", "env:1"),
            ("security.protocol", "ssl"),
            ("sasl.mechanism", "PLAIN"),
            ("sasl.username", "user"),
            ("sasl.password", "hunter2"),
            ("ssl.ca.location", "/ca.pem"),
            ("client.id", "custom"),
            ("debug", "cgrp"),
            ("message.max.bytes", "2000000"),
        ] {
            assert_eq!(c.get(key), Some(value), "{key}");
        }
    }

    #[test]
    fn the_largest_record_defaults_to_librdkafkas_limit_and_refuses_what_librdkafka_would() {
        let c = parse_with(&[("KAFKA_BOOTSTRAP_SERVERS", "k:1")], &["bin"]).unwrap();
        assert_eq!(
            c.kafka.client_config("p").get("message.max.bytes"),
            Some("1000000")
        );
        for wrong in ["999", "1000000001", "lots"] {
            let env = [
                ("KAFKA_BOOTSTRAP_SERVERS", "k:1"),
                ("KAFKA_MESSAGE_MAX_BYTES", wrong),
            ];
            assert!(parse_with(&env, &["bin"]).is_err(), "{wrong} was accepted");
        }
    }

    #[test]
    fn the_bootstrap_servers_are_required_and_flags_win_over_the_environment() {
        assert!(parse_with(&[], &["bin"]).is_err());
        let bin = parse_with(
            &[("KAFKA_SECURITY_PROTOCOL", "plaintext")],
            &[
                "bin",
                "--kafka-bootstrap-servers",
                "a:1",
                "--kafka-security-protocol",
                "sasl_ssl",
            ],
        )
        .unwrap();
        let c = bin.kafka.producer_config("p", 5000);
        assert_eq!(c.get("bootstrap.servers"), Some("a:1"));
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("sasl.mechanism"), None);
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("message.timeout.ms"), Some("5000"));
    }
}

//! [`TelemetrySettings`]: what the `OTEL_*`, `RUST_LOG` and `LOG_FORMAT` variables say.

use serde::Serialize;

use crate::Error;

/// Every environment variable telemetry reads (directly or through the OpenTelemetry SDK).
pub const ENV_VARS: &[&str] = &[
    "OTEL_SERVICE_NAME",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_SDK_DISABLED",
    "OTEL_METRIC_EXPORT_INTERVAL",
    "OTEL_BSP_SCHEDULE_DELAY",
    "RUST_LOG",
    "LOG_FORMAT",
];

/// Log line format (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line (the default; what the chart uses).
    Json,
    /// Human-readable lines for a terminal.
    Pretty,
}

/// OTLP transport (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum OtlpProtocol {
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// Telemetry settings resolved from the environment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TelemetrySettings {
    /// `OTEL_SERVICE_NAME`, else the binary's default (e.g. the consumer's role).
    pub service_name: String,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (the SDK default when unset).
    pub otlp_endpoint: Option<String>,
    pub otlp_protocol: OtlpProtocol,
    /// `OTEL_TRACES_SAMPLER` / `_ARG` (read by the SDK; shown here for `--print-config`).
    pub traces_sampler: Option<String>,
    pub traces_sampler_arg: Option<String>,
    pub resource_attributes: Option<String>,
    /// `OTEL_SDK_DISABLED=true`: logs only, no spans or metrics exported.
    pub sdk_disabled: bool,
    pub metric_export_interval_ms: Option<u64>,
    pub bsp_schedule_delay_ms: Option<u64>,
    /// `RUST_LOG`, default `info`.
    pub log_filter: String,
    pub log_format: LogFormat,
    /// Log lines go to stderr instead of stdout: for command-line tools whose stdout is their
    /// output (journeyctl). Services log to stdout, as containers expect. Not from the env.
    pub log_to_stderr: bool,
}

impl TelemetrySettings {
    /// Reads the process environment; `default_service_name` applies when
    /// `OTEL_SERVICE_NAME` is unset or empty.
    pub fn from_env(default_service_name: &str) -> Result<Self, Error> {
        Self::from_lookup(default_service_name, |k| std::env::var(k).ok())
    }

    /// Like [`TelemetrySettings::from_env`] with an explicit lookup (tests, tools).
    pub fn from_lookup(
        default_service_name: &str,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let otlp_protocol = match get("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
            None | Some("grpc") => OtlpProtocol::Grpc,
            Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
            Some(other) => {
                return Err(Error::InvalidEnv {
                    var: "OTEL_EXPORTER_OTLP_PROTOCOL",
                    value: other.to_string(),
                    reason: "expected grpc or http/protobuf",
                });
            }
        };
        let log_format = match get("LOG_FORMAT").map(|v| v.to_ascii_lowercase()).as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("pretty") | Some("text") => LogFormat::Pretty,
            Some(other) => {
                return Err(Error::InvalidEnv {
                    var: "LOG_FORMAT",
                    value: other.to_string(),
                    reason: "expected json or pretty",
                });
            }
        };
        let sdk_disabled = match get("OTEL_SDK_DISABLED")
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(Error::InvalidEnv {
                    var: "OTEL_SDK_DISABLED",
                    value: other.to_string(),
                    reason: "expected true or false",
                });
            }
        };
        let millis = |var: &'static str| -> Result<Option<u64>, Error> {
            get(var)
                .map(|v| {
                    v.parse::<u64>().map_err(|_| Error::InvalidEnv {
                        var,
                        value: v.clone(),
                        reason: "expected milliseconds (an integer)",
                    })
                })
                .transpose()
        };
        Ok(TelemetrySettings {
            service_name: get("OTEL_SERVICE_NAME")
                .unwrap_or_else(|| default_service_name.to_string()),
            otlp_endpoint: get("OTEL_EXPORTER_OTLP_ENDPOINT"),
            otlp_protocol,
            traces_sampler: get("OTEL_TRACES_SAMPLER"),
            traces_sampler_arg: get("OTEL_TRACES_SAMPLER_ARG"),
            resource_attributes: get("OTEL_RESOURCE_ATTRIBUTES"),
            sdk_disabled,
            metric_export_interval_ms: millis("OTEL_METRIC_EXPORT_INTERVAL")?,
            bsp_schedule_delay_ms: millis("OTEL_BSP_SCHEDULE_DELAY")?,
            log_filter: get("RUST_LOG").unwrap_or_else(|| "info".to_string()),
            log_format,
            log_to_stderr: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn an_empty_environment_gives_grpc_json_logs_info_and_the_default_service_name() {
        let s = TelemetrySettings::from_lookup("relay", lookup(&[])).unwrap();
        assert_eq!(s.service_name, "relay");
        assert_eq!(s.otlp_protocol, OtlpProtocol::Grpc);
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.log_filter, "info");
        assert!(!s.sdk_disabled);
    }

    #[test]
    fn otel_service_name_overrides_the_default_and_blank_values_count_as_unset() {
        let s = TelemetrySettings::from_lookup(
            "relay",
            lookup(&[("OTEL_SERVICE_NAME", "edge"), ("RUST_LOG", "  ")]),
        )
        .unwrap();
        assert_eq!(s.service_name, "edge");
        assert_eq!(s.log_filter, "info");
    }

    #[test]
    fn http_protobuf_pretty_and_sdk_disabled_are_understood() {
        let s = TelemetrySettings::from_lookup(
            "p",
            lookup(&[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("LOG_FORMAT", "pretty"),
                ("OTEL_SDK_DISABLED", "TRUE"),
                ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ]),
        )
        .unwrap();
        assert_eq!(s.otlp_protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(s.log_format, LogFormat::Pretty);
        assert!(s.sdk_disabled);
        assert_eq!(s.bsp_schedule_delay_ms, Some(100));
    }

    #[test]
    fn unknown_protocol_format_or_interval_values_are_rejected_with_the_variable_name() {
        for (k, v) in [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("LOG_FORMAT", "xml"),
            ("OTEL_SDK_DISABLED", "maybe"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "5s"),
        ] {
            let e = TelemetrySettings::from_lookup("p", lookup(&[(k, v)])).unwrap_err();
            assert!(e.to_string().contains(k), "{e}");
        }
    }

    #[test]
    fn the_protocol_serializes_as_the_env_value() {
        let s = TelemetrySettings::from_lookup("p", lookup(&[])).unwrap();
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["otlp_protocol"], "grpc");
        assert_eq!(v["log_format"], "json");
    }
}

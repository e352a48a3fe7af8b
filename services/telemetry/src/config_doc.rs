//! `--print-config`: the resolved configuration and every environment variable a binary reads.

use serde::Serialize;

use crate::{ENV_VARS, Error, TelemetrySettings};

/// Every environment variable a clap command reads (its args' `env`, flattened groups
/// included) plus telemetry's [`ENV_VARS`], sorted and unique.
pub fn accepted_env(command: &clap::Command) -> Vec<String> {
    let mut vars: Vec<String> = argument_env(command)
        .map(|e| e.to_string_lossy().into_owned())
        .chain(ENV_VARS.iter().map(|s| s.to_string()))
        .collect();
    vars.sort();
    vars.dedup();
    vars
}

/// The variables `command`'s own arguments read (clap's `env`), not its subcommands'.
pub(crate) fn argument_env(command: &clap::Command) -> impl Iterator<Item = &std::ffi::OsStr> {
    command.get_arguments().filter_map(|a| a.get_env())
}

/// The `--print-config` document: `{"config": {...config, "telemetry": {...}},
/// "accepted_env": [...]}`. Secrets must already be redacted by `config`'s `Serialize`.
pub fn config_document(
    config: &impl Serialize,
    telemetry: &TelemetrySettings,
    command: &clap::Command,
) -> Result<serde_json::Value, Error> {
    let mut config = serde_json::to_value(config)?;
    if let serde_json::Value::Object(map) = &mut config {
        map.insert("telemetry".into(), serde_json::to_value(telemetry)?);
    }
    Ok(serde_json::json!({
        "config": config,
        "accepted_env": accepted_env(command),
    }))
}

/// Prints [`config_document`] as pretty JSON on stdout (the binary then exits 0).
pub fn print_config(
    config: &impl Serialize,
    telemetry: &TelemetrySettings,
    command: &clap::Command,
) -> Result<(), Error> {
    let doc = config_document(config, telemetry, command)?;
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser, Serialize)]
    struct Demo {
        #[arg(long, env = "DEMO_ADDR", default_value = "0.0.0.0:1")]
        addr: String,
        #[arg(long, env = "DEMO_SECRET")]
        #[serde(skip)]
        secret: Option<String>,
    }

    #[test]
    fn the_config_document_lists_clap_and_telemetry_env_and_leaves_out_what_config_skips() {
        use clap::{CommandFactory, Parser};
        // Whatever the caller's environment holds: the default and the flag are what is read.
        let demo = temp_env::with_vars_unset(["DEMO_ADDR", "DEMO_SECRET"], || {
            Demo::parse_from(["demo", "--secret", "hunter2"])
        });
        let s = TelemetrySettings::from_lookup("demo", |_| None).unwrap();
        let doc = config_document(&demo, &s, &Demo::command()).unwrap();
        assert!(doc["config"].get("secret").is_none(), "{doc}");
        assert_eq!(doc["config"]["addr"], "0.0.0.0:1");
        assert_eq!(doc["config"]["telemetry"]["service_name"], "demo");
        let env: Vec<&str> = doc["accepted_env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(env.contains(&"DEMO_ADDR") && env.contains(&"DEMO_SECRET"));
        for v in ENV_VARS {
            assert!(env.contains(v), "{v} missing");
        }
        assert!(!doc.to_string().contains("hunter2"));
    }
}

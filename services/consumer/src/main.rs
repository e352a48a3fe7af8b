//! `consumer`: see the library docs. `--print-config` prints the resolved config and exits.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use consumer::Config;
use journey_telemetry::TelemetrySettings;

fn main() -> ExitCode {
    let mut config = Config::parse();
    // OTEL_SERVICE_NAME defaults to the role.
    let settings = match TelemetrySettings::from_env(config.role.as_str()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("consumer: {e}");
            return ExitCode::from(2);
        }
    };
    config.service_name = settings.service_name.clone();
    let config = config.resolve();
    if config.print_config {
        return journey_telemetry::print_config_exit(
            "consumer",
            &config,
            &settings,
            &Config::command(),
        );
    }
    journey_telemetry::serve("consumer", &settings, || {
        consumer::run(config, journey_telemetry::shutdown_signal())
    })
}

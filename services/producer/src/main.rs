//! `producer`: see the library docs. `--print-config` prints the resolved config and exits.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use journey_telemetry::TelemetrySettings;
use producer::Config;

fn main() -> ExitCode {
    let mut config = Config::parse();
    let settings = match TelemetrySettings::from_env(producer::SERVICE_NAME) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("producer: {e}");
            return ExitCode::from(2);
        }
    };
    config.service_name = settings.service_name.clone();
    if config.print_config {
        return journey_telemetry::print_config_exit(
            "producer",
            &config,
            &settings,
            &Config::command(),
        );
    }
    journey_telemetry::serve("producer", &settings, || {
        producer::run(config, journey_telemetry::shutdown_signal())
    })
}

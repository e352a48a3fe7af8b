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
        return match journey_telemetry::print_config(&config, &settings, &Config::command()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("producer: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("producer: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let mut guard = match journey_telemetry::init(&settings) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("producer: telemetry: {e}");
                return ExitCode::FAILURE;
            }
        };
        let result = producer::run(config, journey_telemetry::shutdown_signal()).await;
        let code = match &result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "producer failed");
                ExitCode::FAILURE
            }
        };
        let _ = tokio::task::spawn_blocking(move || guard.shutdown()).await;
        code
    })
}

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
        return match journey_telemetry::print_config(&config, &settings, &Config::command()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("consumer: {e}");
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
            eprintln!("consumer: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let mut guard = match journey_telemetry::init(&settings) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("consumer: telemetry: {e}");
                return ExitCode::FAILURE;
            }
        };
        let result = consumer::run(config, journey_telemetry::shutdown_signal()).await;
        let code = match &result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "consumer failed");
                ExitCode::FAILURE
            }
        };
        let _ = tokio::task::spawn_blocking(move || guard.shutdown()).await;
        code
    })
}

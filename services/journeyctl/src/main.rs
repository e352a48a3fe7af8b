//! `journeyctl`: see `journeyctl --help` and the library docs.

use std::process::ExitCode;

use journey_telemetry::TelemetrySettings;
use journeyctl::exit;

fn main() -> ExitCode {
    let cli = journeyctl::cli::parse();
    let mut settings = match TelemetrySettings::from_env("journeyctl") {
        Ok(s) => s,
        Err(e) => return ExitCode::from(journeyctl::cli::usage_error(e)),
    };
    // A command-line tool: quiet logs unless RUST_LOG asks, and no exporter (and no export
    // errors) unless an OTLP endpoint is configured.
    if std::env::var_os("RUST_LOG").is_none() {
        settings.log_filter = "warn".into();
    }
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
        && std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
    {
        settings.sdk_disabled = true;
    }
    if cli.print_config {
        let root = journeyctl::cli::command();
        let sub = root
            .find_subcommand(cli.command.name())
            .cloned()
            .unwrap_or_else(journeyctl::cli::command);
        return match journey_telemetry::print_config(&cli, &settings, &sub) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("journeyctl: {e}");
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
            eprintln!("journeyctl: starting the runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let code = runtime.block_on(async move {
        let mut guard = match journey_telemetry::init(&settings) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("journeyctl: telemetry: {e}");
                return exit::USAGE;
            }
        };
        let code = journeyctl::app::run(cli).await;
        let _ = tokio::task::spawn_blocking(move || guard.shutdown()).await;
        code
    });
    ExitCode::from(code)
}

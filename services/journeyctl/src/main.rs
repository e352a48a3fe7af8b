//! `journeyctl`: see `journeyctl --help` and the library docs.

use std::process::ExitCode;

use journey_telemetry::TelemetrySettings;
use journeyctl::{Error, exit};

/// Prints the error with its causes and what to do, once; its exit code.
fn fail(e: &Error) -> ExitCode {
    eprintln!("{}", journeyctl::error::report(e));
    ExitCode::from(e.exit_code())
}

fn main() -> ExitCode {
    let cli = journeyctl::cli::parse();
    let mut settings = match TelemetrySettings::from_env("journeyctl") {
        Ok(s) => s,
        Err(e) => return fail(&Error::Telemetry(e)),
    };
    // A command-line tool: quiet logs unless RUST_LOG asks, and no exporter (and no export
    // errors) unless an OTLP endpoint is configured.
    // stdout is journeyctl's output (trees, JSON): logs go to stderr.
    settings.log_to_stderr = true;
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
        return journey_telemetry::print_config_exit("journeyctl", &cli, &settings, &sub);
    }
    match journey_telemetry::run_with_telemetry("journeyctl", &settings, || {
        journeyctl::app::run(cli)
    }) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => fail(&e),
        // The runtime or telemetry could not start (the message names which).
        Err(message) => {
            eprintln!("{message}");
            eprintln!(
                "journeyctl: what to do: fix or unset the OTEL_* / RUST_LOG settings named above"
            );
            ExitCode::from(exit::USAGE)
        }
    }
}

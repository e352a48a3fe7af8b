//! What every Journey binary's `main` does around its real work, written once: answer
//! `--print-config`, build the runtime, install telemetry, run, then flush spans and metrics.

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;

use serde::Serialize;

use crate::{TelemetrySettings, init, print_config};

/// `--print-config`: prints the resolved configuration document and returns the exit code
/// (0, or 1 with the reason on stderr, prefixed with the binary's `name`).
pub fn print_config_exit(
    name: &str,
    config: &impl Serialize,
    settings: &TelemetrySettings,
    command: &clap::Command,
) -> ExitCode {
    match print_config(config, settings, command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `body` on a multi-threaded tokio runtime with telemetry installed from `settings`,
/// then shuts telemetry down (flushing spans and metrics) whatever `body` returned.
/// `Err` (a message naming `name`) when the runtime or telemetry cannot start.
pub fn run_with_telemetry<T, Fut>(
    name: &str,
    settings: &TelemetrySettings,
    body: impl FnOnce() -> Fut,
) -> Result<T, String>
where
    Fut: Future<Output = T>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("{name}: starting the runtime: {e}"))?;
    runtime.block_on(async move {
        let mut guard = init(settings).map_err(|e| format!("{name}: telemetry: {e}"))?;
        let out = body().await;
        // The exporters block while flushing: keep that off the async workers.
        // `shutdown` reports its own failures; a join error means it panicked.
        if let Err(e) = tokio::task::spawn_blocking(move || guard.shutdown()).await {
            eprintln!("{name}: telemetry: flushing at exit failed: {e}");
        }
        Ok(out)
    })
}

/// The `main` of a long-running service: [`run_with_telemetry`] around `serve`, exit code 0
/// when it returns `Ok`, 1 (logged as an error, so it is exported too) when it fails.
pub fn serve<E, Fut>(
    name: &str,
    settings: &TelemetrySettings,
    serve: impl FnOnce() -> Fut,
) -> ExitCode
where
    E: Display,
    Fut: Future<Output = Result<(), E>>,
{
    let outcome = run_with_telemetry(name, settings, || async {
        let result = serve().await;
        if let Err(e) = &result {
            tracing::error!(error = %e, "{name} failed");
        }
        result.is_ok()
    });
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

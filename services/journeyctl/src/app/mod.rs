//! What each subcommand does. Each returns `Ok` or the [`Error`] `main` reports (and exits
//! with its code); progress and warnings go to stderr as they happen, results to stdout.
//!
//! - [`init`]: `wait`, `seed` and `init` (both, then optionally seeding again and again);
//! - [`verify`]: post a message and check its journey;
//! - [`journey`]: show a trace as a journey;
//! - [`load`]: drive the producer.

mod init;
mod journey;
mod load;
mod verify;

use tracing::Instrument as _;

use crate::cli::{Cli, Command};
use crate::error::Error;
use crate::journey::Journey;
use crate::zipkin::ZipkinClient;

/// Runs the parsed command inside a `journeyctl <command>` span.
pub async fn run(cli: Cli) -> Result<(), Error> {
    let name = format!("journeyctl {}", cli.command.name());
    let span = tracing::info_span!("journeyctl", otel.name = %name);
    async move {
        match cli.command {
            Command::Init(a) => init::init(a).await,
            Command::Wait(a) => init::wait(a).await,
            Command::Seed(a) => init::seed(a).await,
            Command::Verify(a) => verify::verify(a).await,
            Command::Journey(a) => journey::journey(a).await,
            Command::Load(a) => load::load(a).await,
        }
    }
    .instrument(span)
    .await
}

/// One progress or warning line on stderr.
fn progress_line(line: &str) {
    eprintln!("journeyctl: {line}");
}

/// A client journeyctl cannot work without, or why it cannot be built.
fn http_client<T>(what: &'static str, built: Result<T, reqwest::Error>) -> Result<T, Error> {
    built.map_err(|source| Error::HttpClient { what, source })
}

/// The Zipkin UI page of each trace of the journey (one per linked trace), and a note when
/// some linked traces were left out.
fn print_pages(zipkin: &ZipkinClient, j: &Journey, truncated: bool) {
    for t in j.trace_ids() {
        println!("{}", zipkin.trace_page(&t));
    }
    if truncated {
        progress_line("more linked traces exist beyond --link-depth / --max-linked-traces");
    }
}

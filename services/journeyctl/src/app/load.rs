//! `load`: drive the producer at a steady rate; print the summary (text or JSON).

use std::io::IsTerminal as _;
use std::time::Duration;

use super::http_client;
use crate::cli::LoadArgs;
use crate::error::Error;
use crate::load::{LoadOptions, run};
use crate::producer::ProducerClient;

pub(super) async fn load(a: LoadArgs) -> Result<(), Error> {
    let client = http_client(
        "the producer",
        ProducerClient::new(&a.producer_url, Duration::from_secs(30)),
    )?;
    let opts = LoadOptions {
        rate: a.rate,
        duration: a.duration,
        concurrency: a.concurrency.get(),
        progress: !a.json || std::io::stderr().is_terminal(),
        batch: a.batch,
        keep_trace_ids: false,
    };
    let summary = run(&client, &opts).await?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).map_err(Error::Json)?
        );
    } else {
        println!("{summary}");
    }
    if summary.errors == 0 {
        Ok(())
    } else {
        Err(Error::LoadErrors {
            errors: summary.errors,
            sent: summary.sent,
        })
    }
}

//! `journey-bench`: `make bench` (see `journey_tests::bench`).

use anyhow::{Context, Result};
use clap::Parser as _;
use journey_tests::bench::{Options, run};

#[tokio::main]
async fn main() -> Result<()> {
    let opts = Options::parse();
    let report = run(&opts).await?;
    std::fs::write(&opts.out, report.markdown())
        .with_context(|| format!("writing {}", opts.out.display()))?;
    eprintln!("[harness] bench: the report is in {}", opts.out.display());
    Ok(())
}

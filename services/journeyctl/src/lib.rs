//! journeyctl: the kube-based helper of the Journey stack.
//!
//! - [`topics`]: topic specifications (the chart's `topics:` list).
//! - [`seed`]: make Kafka's topics match them (create, grow, configure; never shrink).
//! - [`wait`]: workloads Ready (kube watches), Kafka brokers, Collector and Zipkin health.
//! - [`zipkin`], [`journey`], [`verify`]: Zipkin's span model, a trace as a journey (tree,
//!   timeline, queue time per hop), and the PASS/FAIL check of a journey.
//! - [`links`]: a journey across traces joined by span links (consumers in trace mode `link`).
//! - [`producer`], [`load`]: a traced producer client and the load generator.
//! - [`cli`], [`app`]: the command line and what each subcommand does.
//! - [`error`]: the one error of the commands, with its exit code and what to do.
//! - [`retry`]: capped exponential backoff that ends at a deadline.

pub mod app;
pub mod cli;
pub mod error;
pub mod journey;
pub mod links;
pub mod load;
pub mod producer;
pub mod retry;
pub mod seed;
pub mod topics;
pub mod verify;
pub mod wait;
pub mod zipkin;

pub use error::Error;
pub use seed::{SeedError, SeedReport, seed};
pub use topics::{TopicSpec, load_topics_file};

/// The process exit codes (documented in `journeyctl --help` and the README); see
/// [`Error::exit_code`].
pub mod exit {
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const TIMEOUT: u8 = 3;
    pub const FORBIDDEN: u8 = 4;
    pub const UNAVAILABLE: u8 = 5;
    pub const SEED_FAILED: u8 = 6;
}

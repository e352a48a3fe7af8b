//! journeyctl: the kube-based helper of the Journey stack.
//!
//! - [`topics`]: topic specifications (the chart's `topics:` list).
//! - [`seed`]: make Kafka's topics match them (create, grow, configure; never shrink).
#![allow(clippy::module_name_repetitions)]

pub mod seed;
pub mod topics;

pub use seed::{SeedError, SeedReport, seed};
pub use topics::{TopicSpec, load_topics_file};

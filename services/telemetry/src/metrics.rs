//! [`Metrics`]: the Journey instruments.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, ObservableGauge};

/// The Journey instruments, created from the global meter provider (install it with [`init`](crate::init)
/// first, or the instruments are no-ops).
#[derive(Debug, Clone)]
pub struct Metrics {
    /// `journey.messages.produced`: messages the broker acknowledged.
    pub produced: Counter<u64>,
    /// `journey.messages.consumed`: messages processed successfully.
    pub consumed: Counter<u64>,
    /// `journey.messages.failed`: failed processing attempts (and failed sends).
    pub failed: Counter<u64>,
    /// `journey.messages.dlq`: messages sent to the dead-letter topic.
    pub dead_lettered: Counter<u64>,
    /// `journey.message.processing.duration` (seconds).
    pub processing_duration: Histogram<f64>,
}

impl Metrics {
    pub fn new() -> Self {
        let meter = opentelemetry::global::meter("journey");
        Metrics {
            produced: meter
                .u64_counter("journey.messages.produced")
                .with_description("Messages acknowledged by Kafka")
                .with_unit("{message}")
                .build(),
            consumed: meter
                .u64_counter("journey.messages.consumed")
                .with_description("Messages consumed and processed successfully")
                .with_unit("{message}")
                .build(),
            failed: meter
                .u64_counter("journey.messages.failed")
                .with_description("Failed processing attempts and failed sends")
                .with_unit("{message}")
                .build(),
            dead_lettered: meter
                .u64_counter("journey.messages.dlq")
                .with_description("Messages sent to the dead-letter topic")
                .with_unit("{message}")
                .build(),
            processing_duration: meter
                .f64_histogram("journey.message.processing.duration")
                .with_description("Time to process one consumed message, retries included")
                .with_unit("s")
                .build(),
        }
    }

    /// `messaging.kafka.consumer.lag` ({message}): an observable gauge reporting, at each
    /// export, the `(lag, attributes)` points `observe` returns (the consumer's latest
    /// librdkafka statistics). Keep the returned gauge for as long as it should report.
    pub fn consumer_lag(
        observe: impl Fn() -> Vec<(u64, Vec<KeyValue>)> + Send + Sync + 'static,
    ) -> ObservableGauge<u64> {
        opentelemetry::global::meter("journey")
            .u64_observable_gauge("messaging.kafka.consumer.lag")
            .with_description(
                "Messages between the consumer group's committed offset and the end of the partition",
            )
            .with_unit("{message}")
            .with_callback(move |gauge| {
                for (lag, attrs) in observe() {
                    gauge.observe(lag, &attrs);
                }
            })
            .build()
    }

    /// The attribute set every Journey metric point carries.
    pub fn topic_attrs(topic: &str) -> [KeyValue; 1] {
        [KeyValue::new(
            opentelemetry_semantic_conventions::attribute::MESSAGING_DESTINATION_NAME,
            topic.to_string(),
        )]
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

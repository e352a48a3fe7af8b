//! Ready means ready to send at full speed: the idempotent producer has its producer id.
//!
//! librdkafka asks a broker for a producer id when the client starts, and holds every message
//! until it has one. On a cluster that has just started, the broker first has to get a block of
//! ids from the controller: the first message then waited about 0.3 s in its `send` span. So
//! `/readyz` also waits until librdkafka's statistics (every `statistics.interval.ms`) report
//! the id assigned (`eos.idemp_state` = `Assigned`).

use std::sync::{Arc, Mutex, PoisonError};

use rdkafka::{ClientContext, Statistics};

/// How often librdkafka reports its statistics to the producer (`statistics.interval.ms`):
/// how soon after the id arrives `/readyz` can pass.
pub const STATISTICS_INTERVAL_MS: u64 = 250;

/// The producer's Kafka client context: the idempotent producer's state, as last reported.
#[derive(Debug, Clone, Default)]
pub struct ProducerContext {
    idempotence: Arc<Mutex<Option<String>>>,
}

impl ClientContext for ProducerContext {
    fn stats(&self, statistics: Statistics) {
        if let Some(eos) = statistics.eos {
            *self
                .idempotence
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(eos.idemp_state);
        }
    }
}

impl ProducerContext {
    /// Ok once the producer id is assigned; otherwise why not (for `/readyz`).
    pub fn ready(&self) -> Result<(), String> {
        let state = self
            .idempotence
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match state.as_deref() {
            Some("Assigned") => Ok(()),
            Some(state) => Err(format!(
                "the idempotent producer has no producer id yet (librdkafka state {state})"
            )),
            None => Err("the Kafka client has not reported its producer id yet".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::statistics::ExactlyOnceSemantics;

    fn with_state(state: &str) -> Statistics {
        Statistics {
            eos: Some(ExactlyOnceSemantics {
                idemp_state: state.to_string(),
                ..ExactlyOnceSemantics::default()
            }),
            ..Statistics::default()
        }
    }

    #[test]
    fn the_producer_is_ready_only_once_its_producer_id_is_assigned() {
        let context = ProducerContext::default();
        assert!(context.ready().is_err(), "no statistics yet");
        context.stats(with_state("WaitPID"));
        let why = context.ready().unwrap_err();
        assert!(why.contains("WaitPID"), "{why}");
        context.stats(with_state("Assigned"));
        assert_eq!(context.ready(), Ok(()));
        // Statistics without the eos block (none yet) keep the last state.
        context.stats(Statistics::default());
        assert_eq!(context.ready(), Ok(()));
    }
}

//! Per-partition workers: partitions are processed concurrently, each one strictly in order.
//!
//! The main loop receives records and [`Partitions::dispatch`]es each one to its partition's
//! worker over a bounded channel ([`QUEUE`] records). A worker processes its records one after
//! another (retries, DLQ, forward) and only then stores that record's offset; the auto-commit
//! timer commits stored offsets, so a committed offset never passes an unprocessed record.
//!
//! - **Backpressure without head-of-line blocking**: librdkafka hands out records in
//!   per-partition runs, so waiting on one full queue would idle the other partitions. Instead
//!   a record that does not fit is parked and its partition paused (librdkafka drops what it
//!   had prefetched for it and refetches from the next record on resume); once the worker has
//!   drained its queue to half, the parked record is queued and the partition resumed.
//! - **Rebalances**: a revoked partition's worker is retired: it finishes its in-flight
//!   record, whose offset store then fails (not ours any more: logged at debug) unless the
//!   partition came straight back; its queued and parked records are dropped unprocessed. The
//!   new owner starts from the committed offset, so the in-flight record may be processed
//!   twice (at-least-once), never skipped. Workers therefore exist only for owned partitions.
//! - **Shutdown** ([`Partitions::shutdown`]): every worker finishes its in-flight record and
//!   stores its offset; queued and parked records stay uncommitted and are redelivered to the
//!   next owner. That bounds a graceful stop by one record per partition.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rdkafka::Message as _;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::Consumer as _;
use rdkafka::message::OwnedMessage;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;

use crate::{Error, KafkaConsumer, Processor};

/// Records queued per partition; a partition is paused when its queue is full and resumed
/// once it is down to half.
pub(crate) const QUEUE: usize = 16;

/// A partition of a topic.
type Key = (String, i32);

/// One partition's worker, seen from the main loop.
struct Lane {
    records: mpsc::Sender<OwnedMessage>,
    /// Set when the partition is revoked or the consumer stops: finish the in-flight record,
    /// take no other.
    retired: Arc<AtomicBool>,
    /// Records that did not fit in the queue (the partition is paused while there are any).
    parked: Vec<OwnedMessage>,
}

impl Lane {
    fn retire(self) {
        self.retired.store(true, Ordering::SeqCst);
        // Dropping the sender (and the parked records) lets the worker end.
    }
}

/// The workers of the partitions this consumer currently processes.
pub(crate) struct Partitions {
    processor: Arc<Processor>,
    consumer: Arc<KafkaConsumer>,
    lanes: HashMap<Key, Lane>,
    workers: JoinSet<Result<(), Error>>,
    /// Signalled by a worker each time it takes a record (room for parked records).
    room: Arc<Notify>,
}

impl Partitions {
    pub fn new(processor: Processor, consumer: Arc<KafkaConsumer>) -> Self {
        Partitions {
            processor: Arc::new(processor),
            consumer,
            lanes: HashMap::new(),
            workers: JoinSet::new(),
            room: Arc::new(Notify::new()),
        }
    }

    /// Hands `msg` to its partition's worker (started on the partition's first record).
    /// Fails when that worker has stopped with an error: see [`Partitions::failure`].
    pub fn dispatch(&mut self, msg: OwnedMessage) -> Result<(), ()> {
        let key = (msg.topic().to_string(), msg.partition());
        let lane = match self.lanes.get_mut(&key) {
            Some(lane) => lane,
            None => {
                let lane = self.start(&key);
                self.lanes.entry(key.clone()).or_insert(lane)
            }
        };
        if !lane.parked.is_empty() {
            // Already paused; only a record librdkafka had handed out before the pause.
            lane.parked.push(msg);
            return Ok(());
        }
        match lane.records.try_send(msg) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(msg)) => {
                lane.parked.push(msg);
                self.pause(&key, true);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
        }
    }

    /// `true` while some partition is paused with parked records.
    pub fn has_parked(&self) -> bool {
        self.lanes.values().any(|l| !l.parked.is_empty())
    }

    /// Notified each time a worker takes a record off its queue (there may be room for the
    /// parked ones: call [`Partitions::unpark`]).
    pub fn room(&self) -> Arc<Notify> {
        self.room.clone()
    }

    /// Moves parked records into queues that are down to half and resumes those partitions.
    pub fn unpark(&mut self) {
        let mut resume = Vec::new();
        for (key, lane) in &mut self.lanes {
            if lane.parked.is_empty() || lane.records.capacity() < QUEUE / 2 {
                continue;
            }
            let parked = std::mem::take(&mut lane.parked);
            let mut rest = parked.into_iter();
            for msg in rest.by_ref() {
                if let Err(e) = lane.records.try_send(msg) {
                    match e {
                        mpsc::error::TrySendError::Full(msg) => lane.parked.push(msg),
                        // The worker failed; its error surfaces through `failure`.
                        mpsc::error::TrySendError::Closed(_) => {}
                    }
                    break;
                }
            }
            lane.parked.extend(rest);
            if lane.parked.is_empty() {
                resume.push(key.clone());
            }
        }
        for key in resume {
            self.pause(&key, false);
        }
    }

    /// Retires the workers of `revoked` partitions (see the module docs).
    pub fn retire(&mut self, revoked: Vec<Key>) {
        for key in revoked {
            if let Some(lane) = self.lanes.remove(&key) {
                tracing::debug!(
                    topic = %key.0,
                    partition = key.1,
                    queued = QUEUE - lane.records.capacity(),
                    parked = lane.parked.len(),
                    "partition revoked: its worker finishes the in-flight record"
                );
                lane.retire();
            }
        }
    }

    /// Resolves with the error of the first worker that stopped because a record could not be
    /// processed nor dead-lettered; pending while every worker is fine.
    pub async fn failure(&mut self) -> Error {
        loop {
            match self.workers.join_next().await {
                None => std::future::pending::<()>().await,
                Some(Ok(Ok(()))) => {} // a retired worker ended
                Some(Ok(Err(e))) => return e,
                Some(Err(e)) => return Error::Worker(e.to_string()),
            }
        }
    }

    /// Stops every worker after its in-flight record and waits for them; the first error of
    /// a worker, if any.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        for (_, lane) in self.lanes.drain() {
            lane.retire();
        }
        let mut outcome = Ok(());
        while let Some(ended) = self.workers.join_next().await {
            let ended = ended
                .map_err(|e| Error::Worker(e.to_string()))
                .and_then(|r| r);
            if let (Err(e), Ok(())) = (ended, &outcome) {
                outcome = Err(e);
            }
        }
        outcome
    }

    fn start(&mut self, key: &Key) -> Lane {
        let (records, queue) = mpsc::channel(QUEUE);
        let retired = Arc::new(AtomicBool::new(false));
        tracing::debug!(topic = %key.0, partition = key.1, "partition worker started");
        self.workers.spawn(work(
            self.processor.clone(),
            self.consumer.clone(),
            queue,
            retired.clone(),
            self.room.clone(),
        ));
        Lane {
            records,
            retired,
            parked: Vec::new(),
        }
    }

    fn pause(&self, (topic, partition): &Key, pause: bool) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, *partition);
        let done = if pause {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        match done {
            Ok(()) if pause => tracing::debug!(topic, partition, "partition queue full: paused"),
            Ok(()) => tracing::debug!(topic, partition, "partition queue drained: resumed"),
            Err(e) => {
                tracing::warn!(topic, partition, pause, error = %e, "pausing/resuming failed")
            }
        }
    }
}

/// A partition's worker: each record to the end, then its offset stored.
async fn work(
    processor: Arc<Processor>,
    consumer: Arc<KafkaConsumer>,
    mut queue: mpsc::Receiver<OwnedMessage>,
    retired: Arc<AtomicBool>,
    room: Arc<Notify>,
) -> Result<(), Error> {
    while let Some(msg) = queue.recv().await {
        room.notify_one();
        if retired.load(Ordering::SeqCst) {
            break; // queued records are left to the next owner
        }
        processor.handle(&msg).await?;
        // librdkafka stores offset + 1: the next record to read.
        if let Err(e) = consumer.store_offset(msg.topic(), msg.partition(), msg.offset()) {
            // The partition was revoked meanwhile: the new owner redelivers the record.
            tracing::debug!(topic = msg.topic(), partition = msg.partition(), offset = msg.offset(), error = %e, "offset not stored");
        }
    }
    Ok(())
}

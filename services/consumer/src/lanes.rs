//! Records in flight: many at once, each lane strictly in order, offsets stored only below
//! the first record not yet done.
//!
//! The main loop receives records and [`Lanes::dispatch`]es each one as its own task. A
//! record's **lane** orders it: its partition (`ORDERING=partition`, the default) or its
//! partition and key (`ORDERING=key`: records with the same key one after another, different
//! keys concurrently, as in Confluent's parallel consumer; records without a key share one lane
//! per partition). A record starts once the previous record of its lane has queued its forward
//! in the producer (or is done, for the sink and the DLQ path): the relay does not wait for
//! each ack before the next record, and librdkafka's idempotent producer keeps the queued order
//! in the output topic. A forward that finally fails (after librdkafka's own retries, i.e. past
//! the message timeout) is retried by the relay after records queued behind it: then, and only
//! then, its key's order is not kept.
//!
//! - **Bound**: `MAX_IN_FLIGHT` records and `MAX_IN_FLIGHT_BYTES` of keys and values between
//!   receipt and done. At the bound the main loop **holds**: it stops taking records until
//!   half of that is done, and librdkafka's prefetched records wait in its queue
//!   ([`Lanes::hold_expires`]). Only a hold longer than [`PAUSE_AFTER`] (records stuck, e.g. a
//!   forward retrying while Kafka is away) pauses every assigned partition, so that the main
//!   loop can poll again: polling serves rebalances and keeps the group membership. Those
//!   partitions are resumed once half of the bound is done ([`Lanes::backpressure`]). Records
//!   librdkafka had already handed out are still taken (a few over the bound).
//!   - Why not pause at once: librdkafka drops a paused partition's prefetched records and
//!     fetches them again after the resume, one fetch round trip later. Pausing at every
//!     bound capped a relay at one bound per ~1 s (256 records/s, whatever the work).
//!   - All partitions pause and resume together: pausing one while the others kept fetching
//!     made its resume wait behind their long poll (`fetch.wait.max.ms`).
//! - **At-least-once**: per partition, the offsets received and not yet done are kept; when a
//!   record is done (processed and forwarded, or dead-lettered) the offset just below the first
//!   one not done is stored, and the auto-commit timer commits it. A committed offset never
//!   passes an unprocessed record.
//! - **Rebalances** ([`Lanes::revoke`]): a revoked partition's records that have not started
//!   are skipped and nothing more is stored for it; records already started finish, or stop
//!   retrying a forward Kafka cannot take (the new owner starts from the committed offset and
//!   may process them again, never skips them).
//! - **Shutdown** ([`Lanes::shutdown`]): records that have not started are skipped (they stay
//!   uncommitted for the next owner); started ones finish and their offsets are stored.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::consumer::Consumer as _;
use rdkafka::message::OwnedMessage;
use rdkafka::{Message as _, TopicPartitionList};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::{Error, KafkaConsumer, OrderingMode, Processor};

/// A partition of a topic.
type Partition = (String, i32);

/// What a record waits for: the previous record of the same lane.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LaneKey {
    partition: Partition,
    /// `None` in partition mode, and for records without a key.
    key: Option<Vec<u8>>,
}

/// Lets the next record of the lane start. [`Proceed::now`] once this record's forward is
/// queued; dropping it (the record done, skipped or failed) does the same.
#[derive(Debug)]
pub(crate) struct Proceed(Option<oneshot::Sender<()>>);

impl Proceed {
    /// The next record of the lane may start now.
    pub fn now(&mut self) {
        if let Some(next) = self.0.take() {
            // An error means the next record is already gone (skipped): nobody waits.
            next.send(()).ok();
        }
    }
}

/// The last record dispatched to a lane.
struct Lane {
    seq: u64,
    proceeds: oneshot::Receiver<()>,
}

/// One partition's records between receipt and their stored offset.
struct Offsets {
    /// Received and not done.
    pending: BTreeSet<i64>,
    /// The highest offset received.
    highest: i64,
    /// The highest offset stored (librdkafka commits it + 1: the next record to read); at
    /// first, the one below the first record received.
    stored: Option<i64>,
    /// Set when the partition is revoked: records not started are skipped.
    revoked: Arc<AtomicBool>,
}

impl Default for Offsets {
    fn default() -> Self {
        Offsets {
            pending: BTreeSet::new(),
            highest: -1,
            stored: None,
            revoked: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Offsets {
    fn received(&mut self, offset: i64) {
        self.stored.get_or_insert(offset - 1);
        self.pending.insert(offset);
        self.highest = self.highest.max(offset);
    }

    /// Marks `offset` done; the offset to store when the first not-done record moved on.
    fn done(&mut self, offset: i64) -> Option<i64> {
        self.pending.remove(&offset);
        let upto = self.pending.first().map_or(self.highest, |first| first - 1);
        (self.stored.is_none_or(|stored| upto > stored)).then(|| {
            self.stored = Some(upto);
            upto
        })
    }
}

/// A record task's end.
struct Finished {
    lane: LaneKey,
    seq: u64,
    bytes: usize,
    offset: i64,
    revoked: Arc<AtomicBool>,
    /// `false` when skipped (revoked or stopping before it started).
    processed: bool,
}

/// The records in flight and the offsets of the partitions this consumer owns.
pub(crate) struct Lanes {
    processor: Arc<Processor>,
    consumer: Arc<KafkaConsumer>,
    ordering: OrderingMode,
    max_in_flight: usize,
    max_in_flight_bytes: usize,
    /// Keys and values of the records in flight.
    bytes_in_flight: usize,
    lanes: HashMap<LaneKey, Lane>,
    offsets: HashMap<Partition, Offsets>,
    tasks: JoinSet<Result<Finished, Error>>,
    stopping: Arc<AtomicBool>,
    seq: u64,
    /// The partitions paused by [`Lanes::backpressure`].
    paused: BTreeSet<Partition>,
    /// Since when the bound has been reached (until half of it is done again).
    full_since: Option<tokio::time::Instant>,
}

/// How long the main loop holds at the bound before it pauses the partitions (see the module
/// docs): longer than half a bound of records takes at the chart's work per record, well
/// under the session and poll timeouts.
pub(crate) const PAUSE_AFTER: Duration = Duration::from_secs(2);

impl Lanes {
    pub fn new(
        processor: Processor,
        consumer: Arc<KafkaConsumer>,
        ordering: OrderingMode,
        (max_in_flight, max_in_flight_bytes): (usize, usize),
    ) -> Self {
        let stopping = processor.stopping.clone();
        Lanes {
            processor: Arc::new(processor),
            consumer,
            ordering,
            max_in_flight: max_in_flight.max(1),
            max_in_flight_bytes,
            bytes_in_flight: 0,
            lanes: HashMap::new(),
            offsets: HashMap::new(),
            tasks: JoinSet::new(),
            stopping,
            seq: 0,
            paused: BTreeSet::new(),
            full_since: None,
        }
    }

    /// `true` once `MAX_IN_FLIGHT` records or `MAX_IN_FLIGHT_BYTES` are in flight.
    fn full(&self) -> bool {
        self.tasks.len() >= self.max_in_flight || self.bytes_in_flight >= self.max_in_flight_bytes
    }

    /// `true` while at most half of both bounds is in flight.
    fn half_empty(&self) -> bool {
        self.tasks.len() <= self.max_in_flight / 2
            && self.bytes_in_flight <= self.max_in_flight_bytes / 2
    }

    /// While holding (the main loop takes no record: at the bound, for at most
    /// [`PAUSE_AFTER`], after which the partitions are paused and it polls again): when the
    /// hold has lasted [`PAUSE_AFTER`], and then call [`Lanes::backpressure`]. `None` when
    /// not holding.
    pub fn hold_expires(&self) -> Option<tokio::time::Instant> {
        self.full_since
            .filter(|_| self.paused.is_empty())
            .map(|since| since + PAUSE_AFTER)
    }

    /// Call it after each turn of the main loop. At the bound, starts a hold; a hold older
    /// than [`PAUSE_AFTER`] pauses every assigned partition; once half of the bound is done,
    /// ends the hold and resumes what was paused. While paused, the assignment is not read
    /// again at every record: a rebalance (eager, the default assignors) revokes every
    /// partition first, which empties `paused` ([`Lanes::revoke`]), so the next turn at the
    /// bound pauses the new assignment.
    pub fn backpressure(&mut self) {
        if self.full() {
            let since = *self
                .full_since
                .get_or_insert_with(tokio::time::Instant::now);
            if self.paused.is_empty() && since.elapsed() >= PAUSE_AFTER {
                self.pause_all();
            }
        } else if self.half_empty() {
            self.full_since = None;
            if !self.paused.is_empty() {
                self.resume_all();
            }
        }
    }

    fn pause_all(&mut self) {
        let assigned = match self.consumer.assignment() {
            Ok(tpl) => tpl,
            Err(e) => {
                tracing::warn!(error = %e, "reading the assignment to pause it failed");
                return;
            }
        };
        let mut tpl = TopicPartitionList::new();
        for e in assigned.elements() {
            if self.paused.insert((e.topic().to_string(), e.partition())) {
                tpl.add_partition(e.topic(), e.partition());
            }
        }
        if tpl.count() > 0 {
            match self.consumer.pause(&tpl) {
                Ok(()) => tracing::debug!(
                    in_flight = self.tasks.len(),
                    partitions = tpl.count(),
                    "in-flight bound held too long: partitions paused"
                ),
                Err(e) => tracing::warn!(error = %e, "pausing the partitions failed"),
            }
        }
    }

    fn resume_all(&mut self) {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in std::mem::take(&mut self.paused) {
            tpl.add_partition(&topic, partition);
        }
        match self.consumer.resume(&tpl) {
            Ok(()) => tracing::debug!(in_flight = self.tasks.len(), "partitions resumed"),
            Err(e) => tracing::warn!(error = %e, "resuming the partitions failed"),
        }
    }

    /// Starts `msg`'s task; it processes the record once the previous record of its lane lets
    /// it.
    pub fn dispatch(&mut self, msg: OwnedMessage) {
        let partition = (msg.topic().to_string(), msg.partition());
        let offsets = self.offsets.entry(partition.clone()).or_default();
        offsets.received(msg.offset());
        let revoked = offsets.revoked.clone();
        let key = match self.ordering {
            OrderingMode::Partition => None,
            OrderingMode::Key => msg.key().map(<[u8]>::to_vec),
        };
        let lane = LaneKey { partition, key };
        let bytes = msg.payload().map_or(0, <[u8]>::len) + msg.key().map_or(0, <[u8]>::len);
        self.bytes_in_flight += bytes;
        self.seq += 1;
        let seq = self.seq;
        let (next, proceeds) = oneshot::channel();
        let previous = self
            .lanes
            .insert(lane.clone(), Lane { seq, proceeds })
            .map(|l| l.proceeds);
        let processor = self.processor.clone();
        let stopping = self.stopping.clone();
        self.tasks.spawn(async move {
            if let Some(previous) = previous {
                // An error means the previous record ended without saying so: go on too.
                previous.await.ok();
            }
            let offset = msg.offset();
            let processed = !(stopping.load(Ordering::SeqCst) || revoked.load(Ordering::SeqCst));
            let processed = processed
                && match processor.handle(&msg, Proceed(Some(next)), &revoked).await {
                    Ok(()) => true,
                    // Stopping while Kafka is away: left uncommitted for the next owner.
                    Err(Error::Interrupted { .. }) => false,
                    Err(e) => return Err(e),
                };
            Ok(Finished {
                lane,
                seq,
                bytes,
                offset,
                revoked,
                processed,
            })
        });
    }

    /// Resolves when a record's task has ended (its offset then stored when it can be); with
    /// the error of a record that could not be processed nor dead-lettered. Pending while no
    /// record is in flight.
    pub async fn finished(&mut self) -> Result<(), Error> {
        let Some(joined) = self.tasks.join_next().await else {
            return std::future::pending().await;
        };
        self.finish(ended(joined)?);
        Ok(())
    }

    fn finish(&mut self, f: Finished) {
        self.bytes_in_flight = self.bytes_in_flight.saturating_sub(f.bytes);
        if self.lanes.get(&f.lane).is_some_and(|l| l.seq == f.seq) {
            // The lane's last record: the lane is idle.
            self.lanes.remove(&f.lane);
        }
        if !f.processed || f.revoked.load(Ordering::SeqCst) {
            return;
        }
        let (topic, partition) = &f.lane.partition;
        let Some(upto) = self
            .offsets
            .get_mut(&f.lane.partition)
            .and_then(|o| o.done(f.offset))
        else {
            return;
        };
        // librdkafka stores offset + 1: the next record to read.
        if let Err(e) = self.consumer.store_offset(topic, *partition, upto) {
            // The partition was revoked meanwhile: the new owner redelivers from the committed
            // offset.
            tracing::debug!(topic, partition, offset = upto, error = %e, "offset not stored");
        }
    }

    /// Skips the records of `revoked` partitions that have not started; stores nothing more
    /// for them (see the module docs).
    pub fn revoke(&mut self, revoked: Vec<Partition>) {
        for partition in revoked {
            if let Some(offsets) = self.offsets.remove(&partition) {
                offsets.revoked.store(true, Ordering::SeqCst);
                tracing::debug!(
                    topic = %partition.0,
                    partition = partition.1,
                    in_flight = offsets.pending.len(),
                    "partition revoked: records not started are skipped"
                );
            }
            self.lanes.retain(|lane, _| lane.partition != partition);
            // The rebalance callback resumed it (a pause would outlive the assignment).
            self.paused.remove(&partition);
        }
    }

    /// Skips every record that has not started, lets the started ones finish (storing their
    /// offsets), and returns the first error of a record, if any.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        self.stopping.store(true, Ordering::SeqCst);
        let mut outcome = Ok(());
        while let Some(joined) = self.tasks.join_next().await {
            match ended(joined) {
                Ok(finished) => self.finish(finished),
                Err(e) => {
                    if outcome.is_ok() {
                        outcome = Err(e);
                    }
                }
            }
        }
        outcome
    }
}

/// A record task's end: how it finished, or its error (a panic is one too).
fn ended(
    joined: Result<Result<Finished, Error>, tokio::task::JoinError>,
) -> Result<Finished, Error> {
    joined.map_err(|e| Error::Worker(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_offset_stops_below_the_first_record_not_done() {
        let mut o = Offsets::default();
        for offset in 10..15 {
            o.received(offset);
        }
        assert_eq!(o.done(12), None, "10 and 11 are not done");
        assert_eq!(o.done(11), None, "10 is not done");
        assert_eq!(o.done(10), Some(12), "10..=12 done, 13 not");
        assert_eq!(o.done(14), None, "13 is not done");
        assert_eq!(o.done(13), Some(14));
        o.received(15);
        assert_eq!(o.done(15), Some(15));
    }

    #[test]
    fn a_record_done_after_later_ones_stores_everything_up_to_the_highest() {
        let mut o = Offsets::default();
        o.received(0);
        o.received(1);
        assert_eq!(o.done(1), None);
        assert_eq!(o.done(0), Some(1));
        assert!(o.pending.is_empty());
    }
}

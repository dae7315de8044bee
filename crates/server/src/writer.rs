//! The group-commit writer: one thread that turns many decoded uplinks into one transaction.
//!
//! Script workers hand records over through a bounded queue ([`WriterHandle::try_send`] never
//! blocks; a full queue is the caller's cue to answer 5.03). The writer takes everything queued
//! (up to `max_batch`), waits at most `batch_window` for more, commits once, and only after that
//! commit is durable calls each record's completion — which is what sends the 2.01. So an
//! acknowledgement always follows the durable commit that holds its data, and a slow disk
//! batches more instead of queueing more.
//!
//! When the storage can split durability from the commit (SQLite: write the WAL frames, flush
//! the WAL file separately), a second thread, `uplink-sync`, does the flushing: the writer hands
//! it each committed batch and goes on to the next one while the disk works, and one flush
//! releases every batch committed before it started. The hand-over queue is bounded, so a slow
//! disk still pushes back to the writer's queue and from there to the devices (5.03).
//!
//! Upkeep (deleting rows the compactor moved, expiring old exchanges) runs after each commit and
//! also on a timer while no uplinks arrive ([`UPKEEP_IDLE_TICK`]), until it is caught up: work
//! that piles up during a quiet spell (every exchange of a busy hour expires at once 247 s after
//! it) is done in the quiet spell, not a slice per commit when traffic returns.
//!
//! Live updates (WebSocket subscriptions, [`crate::live`]) are published from the same place as
//! the acknowledgements: after the flush (or the synchronous commit) that made the batch durable,
//! never before, so a subscriber never sees a value a crash could take back.
//!
//! A storage fault (read-only files, I/O errors, a full disk) fails the batches it hits: their
//! devices get 5.00 and nothing is acknowledged that is not durable. The writer keeps going and
//! the next batch tries again, so service comes back by itself with the disk; the log gets one
//! line when commits start failing and one when they work again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use coapgate_storage::UplinkWriter;
use coapgate_storage::model::{UplinkOutcome, UplinkRecord, UplinkRejection};
use coapgate_storage::DurabilityBarrier;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::histogram::Histogram;
use crate::live::{Change, ChangeData, Hub};

/// What happened to one record.
#[derive(Debug)]
pub enum WriteResult {
    Stored(#[allow(dead_code)] UplinkOutcome),
    Rejected(UplinkRejection),
    /// The transaction failed; nothing of this record was stored.
    Failed(String),
    /// The writer's queue was full; the record was never queued.
    QueueFull,
}

/// Called on the writer thread after the commit; must be quick (it only sends a response).
pub type Completion = Box<dyn FnOnce(WriteResult) + Send>;

pub struct WriteJob {
    pub record: UplinkRecord,
    pub done: Completion,
}

/// Counters the writer keeps for logs and metrics.
pub struct WriterStats {
    pub commits: AtomicU64,
    pub records: AtomicU64,
    pub failed_commits: AtomicU64,
    /// Uplinks per commit.
    pub batch_size: Histogram,
    /// Duration of each commit (including its fsync unless a sync thread flushes), in microseconds.
    pub commit_micros: Histogram,
    /// Flushes by the sync thread, and how long each took in microseconds.
    pub syncs: AtomicU64,
    pub sync_micros: Histogram,
}

const MICROS_BUCKETS: &[u64] = &[250, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000, 500_000];

/// Committed batches waiting for the sync thread. Small: each holds up to `max_batch` uplinks,
/// and a full queue makes the writer wait, which is the backpressure a slow disk must cause.
const SYNC_QUEUE_BATCHES: usize = 8;

/// How long the writer waits for an uplink before it runs upkeep on its own.
pub const UPKEEP_IDLE_TICK: Duration = Duration::from_millis(100);

/// A committed batch: each record's completion with what became of it, and the changes to
/// publish once it is durable.
struct Committed {
    answers: Vec<(Completion, Result<UplinkOutcome, UplinkRejection>)>,
    live: Option<(Arc<Hub>, Vec<Change>)>,
}

impl Default for WriterStats {
    fn default() -> WriterStats {
        WriterStats {
            commits: AtomicU64::new(0),
            records: AtomicU64::new(0),
            failed_commits: AtomicU64::new(0),
            batch_size: Histogram::new(&[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000]),
            commit_micros: Histogram::new(MICROS_BUCKETS),
            syncs: AtomicU64::new(0),
            sync_micros: Histogram::new(MICROS_BUCKETS),
        }
    }
}

#[derive(Clone)]
pub struct WriterHandle {
    tx: Sender<WriteJob>,
    pub stats: Arc<WriterStats>,
}

impl WriterHandle {
    /// Queues a record without blocking; gives the job back (boxed: the failure path is rare
    /// and the job is large) when the queue is full.
    pub fn try_send(&self, job: WriteJob) -> Result<(), Box<WriteJob>> {
        self.tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(job) | TrySendError::Disconnected(job) => Box::new(job),
        })
    }

    pub fn queue_len(&self) -> usize {
        self.tx.len()
    }
}

#[derive(Clone)]
pub struct WriterConfig {
    pub queue_capacity: usize,
    pub max_batch: usize,
    pub batch_window: Duration,
    /// Where committed changes are published for WebSocket subscribers; `None` where nobody
    /// subscribes (a remote's outbox is not the platform's data).
    pub live: Option<Arc<Hub>>,
}

/// Starts the writer thread (and its sync thread, when the storage splits durability). It runs
/// until every [`WriterHandle`] is dropped, then commits and acknowledges what is queued and
/// exits; the returned join handle lets shutdown wait for that.
pub fn start(writer: Box<dyn UplinkWriter>, config: WriterConfig) -> (WriterHandle, std::thread::JoinHandle<()>) {
    start_many(vec![writer], config)
}

/// [`start`] with several writers taking batches from one queue, each on its own thread and
/// connection, for a database that commits transactions in parallel (PostgreSQL: while one
/// batch waits for the server, another is written). Their commits share one sync thread: one
/// barrier covers every commit that returned before it started, whichever writer made it.
pub fn start_many(mut writers: Vec<Box<dyn UplinkWriter>>, config: WriterConfig) -> (WriterHandle, std::thread::JoinHandle<()>) {
    let (tx, rx) = crossbeam_channel::bounded(config.queue_capacity);
    let stats = Arc::new(WriterStats::default());
    // Every writer is asked (splitting sets its connection up); the first barrier serves all:
    // it covers every commit before it, and a writer that did not split commits durably anyway.
    let barriers: Vec<_> = writers
        .iter_mut()
        .map(|writer| {
            writer.split_durability().unwrap_or_else(|e| {
                tracing::warn!("storage cannot flush separately, every commit will sync itself: {e}");
                None
            })
        })
        .collect();
    let barrier = barriers.into_iter().flatten().next();
    let sync = barrier.map(|barrier| {
        let (sync_tx, sync_rx) = crossbeam_channel::bounded(SYNC_QUEUE_BATCHES);
        let sync_stats = stats.clone();
        let join = std::thread::Builder::new()
            .name("uplink-sync".into())
            .spawn(move || run_sync(barrier, sync_rx, &sync_stats))
            .expect("spawning the sync thread");
        (sync_tx, join)
    });
    let (sync_tx, sync_join) = sync.unzip();
    let threads: Vec<std::thread::JoinHandle<()>> = writers
        .into_iter()
        .map(|writer| {
            let (rx, config, stats, sync_tx) = (rx.clone(), config.clone(), stats.clone(), sync_tx.clone());
            std::thread::Builder::new()
                .name("uplink-writer".into())
                .spawn(move || run(writer, rx, config, &stats, sync_tx))
                .expect("spawning the writer thread")
        })
        .collect();
    drop(sync_tx);
    let join = std::thread::Builder::new()
        .name("uplink-writers".into())
        .spawn(move || {
            for thread in threads {
                let _ = thread.join();
            }
            // Every writer dropped its sync sender: the sync thread flushes what is left and ends.
            if let Some(join) = sync_join {
                let _ = join.join();
            }
        })
        .expect("spawning the writer thread");
    (WriterHandle { tx, stats }, join)
}

fn run(
    mut writer: Box<dyn UplinkWriter>,
    rx: Receiver<WriteJob>,
    config: WriterConfig,
    stats: &WriterStats,
    sync: Option<Sender<Committed>>,
) {
    let mut batch: Vec<WriteJob> = Vec::with_capacity(config.max_batch);
    let mut faults = FaultLog::default();
    loop {
        let first = match rx.recv_timeout(UPKEEP_IDLE_TICK) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                catch_up(writer.as_mut(), &rx);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        batch.push(first);
        let deadline = Instant::now() + config.batch_window;
        while batch.len() < config.max_batch {
            // Take what is already queued at once; wait for stragglers only until the deadline.
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => match rx.recv_deadline(deadline) {
                    Ok(job) => batch.push(job),
                    Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
                },
            }
        }
        if let Some(committed) = commit_batch(writer.as_mut(), &mut batch, stats, &mut faults, config.live.as_ref()) {
            match &sync {
                // Blocks while the sync thread is SYNC_QUEUE_BATCHES behind.
                Some(sync) => {
                    if let Err(e) = sync.send(committed) {
                        // The sync thread is gone (it panicked): nothing it held can be
                        // acknowledged, and nothing later can be made durable.
                        fail_all(e.into_inner(), "the storage flush thread stopped");
                    }
                }
                None => crate::udp_io::coalesce(|| acknowledge(committed)),
            }
        }
        // One slice after every commit; more while nothing waits, so light traffic (never
        // idle for a whole tick) catches up between uplinks too.
        match writer.maintain() {
            Ok(true) if rx.is_empty() => catch_up(writer.as_mut(), &rx),
            Ok(_) => {}
            Err(e) => tracing::debug!("storage upkeep failed (will retry): {e}"),
        }
    }
}

/// Upkeep while idle: slice after slice until nothing is waiting or an uplink arrives (each
/// slice is a short pause, so an uplink waits at most one).
fn catch_up(writer: &mut dyn UplinkWriter, rx: &Receiver<WriteJob>) {
    loop {
        match writer.maintain() {
            Ok(true) if rx.is_empty() => continue,
            Ok(_) => return,
            Err(e) => {
                // Commits report the fault (once); upkeep retries on the next tick.
                tracing::debug!("storage upkeep failed (will retry): {e}");
                return;
            }
        }
    }
}

/// Turns a run of failing commits into two log lines: when they start failing and when they
/// work again, with how many batches failed in between.
#[derive(Default)]
struct FaultLog {
    failed_batches: u64,
    failed_uplinks: u64,
}

impl FaultLog {
    fn failed(&mut self, uplinks: usize, e: &dyn std::fmt::Display) {
        if self.failed_batches == 0 {
            tracing::error!("storing uplinks failed, answering 5.00 and retrying with every batch until it works: {e}");
        }
        self.failed_batches += 1;
        self.failed_uplinks += uplinks as u64;
    }

    fn succeeded(&mut self) {
        if self.failed_batches > 0 {
            tracing::warn!(
                "storing uplinks works again ({} uplinks in {} batches were refused with 5.00 meanwhile)",
                self.failed_uplinks,
                self.failed_batches
            );
            *self = FaultLog::default();
        }
    }
}

/// The sync thread: flushes once for everything committed so far, then acknowledges it.
fn run_sync(mut barrier: Box<dyn DurabilityBarrier>, rx: Receiver<Committed>, stats: &WriterStats) {
    let mut faults = FaultLog::default();
    while let Ok(first) = rx.recv() {
        // Every batch already queued was committed before this flush starts, so it covers them.
        let mut ready = vec![first];
        ready.extend(rx.try_iter());
        let started = Instant::now();
        let flushed = barrier.sync();
        stats.sync_micros.record(started.elapsed().as_micros() as u64);
        stats.syncs.fetch_add(1, Ordering::Relaxed);
        // The answers of one flush leave the socket together, in one system call.
        crate::udp_io::coalesce(|| match flushed {
            Ok(()) => {
                faults.succeeded();
                ready.into_iter().for_each(acknowledge)
            }
            Err(e) => {
                // The data may be visible but is not known to be on disk: never acknowledge it.
                stats.failed_commits.fetch_add(1, Ordering::Relaxed);
                faults.failed(ready.iter().map(|c| c.answers.len()).sum(), &e);
                let message = e.to_string();
                ready.into_iter().for_each(|c| fail_all(c, &message));
            }
        });
    }
}

/// Answers a durable batch, then publishes its changes (the devices' answers come first).
fn acknowledge(committed: Committed) {
    for (done, result) in committed.answers {
        done(match result {
            Ok(outcome) => WriteResult::Stored(outcome),
            Err(rejection) => WriteResult::Rejected(rejection),
        });
    }
    if let Some((hub, changes)) = committed.live {
        hub.publish(changes);
    }
}

/// A batch that is not durable: nothing of it is acknowledged or published.
fn fail_all(committed: Committed, message: &str) {
    for (done, _) in committed.answers {
        done(WriteResult::Failed(message.to_string()));
    }
}

/// The changes a committed batch made to entities some session watches. A record stored as a
/// duplicate changed nothing. With `updateOnlyKeys`, storage reports only how many values it
/// skipped as unchanged, not which: such a record's listed keys are left out rather than
/// published as if stored (a subscriber misses a changed value there, never sees a false one).
fn live_changes(hub: &Hub, records: &[UplinkRecord], results: &[Result<UplinkOutcome, UplinkRejection>]) -> Vec<Change> {
    let mut changes = Vec::new();
    for (record, result) in records.iter().zip(results) {
        let Ok(outcome) = result else { continue };
        if outcome.duplicate {
            continue;
        }
        if hub.has_page_watchers() {
            // Entity data queries may find them now.
            changes.extend(outcome.created.iter().map(|(_, entity)| Change { entity: *entity, data: ChangeData::Created }));
        }
        let skipped = |key: &str| outcome.unchanged_skipped > 0 && record.update_only_keys.iter().any(|k| k == key);
        for (update, (_, entity)) in record.entities.iter().zip(&outcome.entities) {
            if !hub.is_watched(*entity) {
                continue;
            }
            let points: Vec<_> = update
                .telemetry
                .iter()
                .map(|(ts, values)| (*ts, values.iter().filter(|(k, _)| !skipped(k)).cloned().collect::<Vec<_>>()))
                .filter(|(_, values)| !values.is_empty())
                .collect();
            if !points.is_empty() {
                changes.push(Change { entity: *entity, data: ChangeData::Timeseries(points) });
            }
            let attributes: Vec<_> = update.attributes.iter().filter(|(k, _)| !skipped(k)).cloned().collect();
            if !attributes.is_empty() {
                changes.push(Change {
                    entity: *entity,
                    data: ChangeData::Attributes { scope: "CLIENT_SCOPE".into(), ts: record.received_ts, values: attributes },
                });
            }
        }
    }
    changes
}

/// Commits one batch; gives back the completions with their results, or — when the transaction
/// failed — calls them with the failure itself and gives back `None`.
fn commit_batch(
    writer: &mut dyn UplinkWriter,
    batch: &mut Vec<WriteJob>,
    stats: &WriterStats,
    faults: &mut FaultLog,
    live: Option<&Arc<Hub>>,
) -> Option<Committed> {
    let (records, completions): (Vec<UplinkRecord>, Vec<Completion>) =
        batch.drain(..).map(|j| (j.record, j.done)).unzip();
    let started = Instant::now();
    let result = writer.commit(&records);
    stats.commit_micros.record(started.elapsed().as_micros() as u64);
    stats.batch_size.record(records.len() as u64);
    match result {
        Ok(results) => {
            faults.succeeded();
            stats.commits.fetch_add(1, Ordering::Relaxed);
            stats.records.fetch_add(records.len() as u64, Ordering::Relaxed);
            // Built now, while the records are at hand; published only once durable.
            let live = live.filter(|hub| hub.any_watched()).map(|hub| (hub.clone(), live_changes(hub, &records, &results)));
            Some(Committed { answers: completions.into_iter().zip(results).collect(), live })
        }
        Err(e) => {
            stats.failed_commits.fetch_add(1, Ordering::Relaxed);
            faults.failed(records.len(), &e);
            let message = e.to_string();
            for done in completions {
                done(WriteResult::Failed(message.clone()));
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A storage whose upkeep has `backlog` slices of work waiting.
    struct Backlog {
        backlog: Arc<Mutex<u32>>,
    }

    impl UplinkWriter for Backlog {
        fn commit(
            &mut self,
            batch: &[UplinkRecord],
        ) -> coapgate_storage::Result<Vec<Result<UplinkOutcome, UplinkRejection>>> {
            Ok(batch.iter().map(|_| Ok(UplinkOutcome::default())).collect())
        }

        fn maintain(&mut self) -> coapgate_storage::Result<bool> {
            let mut backlog = self.backlog.lock().unwrap();
            *backlog = backlog.saturating_sub(1);
            Ok(*backlog > 0)
        }
    }

    /// Finding 8 of issue 13: upkeep waited for uplinks, so a backlog built up while idle was
    /// worked off a slice per commit once traffic came back.
    #[test]
    fn upkeep_catches_up_while_no_uplinks_arrive() {
        let backlog = Arc::new(Mutex::new(1000));
        let config = WriterConfig { queue_capacity: 16, max_batch: 16, batch_window: Duration::from_millis(1), live: None };
        let (handle, join) = start(Box::new(Backlog { backlog: backlog.clone() }), config);
        let deadline = Instant::now() + Duration::from_secs(5);
        while *backlog.lock().unwrap() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(*backlog.lock().unwrap(), 0, "the backlog is worked off without any uplink");
        drop(handle);
        join.join().unwrap();
    }
}

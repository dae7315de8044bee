//! The group-commit writer: one thread that turns many decoded uplinks into one transaction.
//!
//! Script workers hand records over through a bounded queue ([`WriterHandle::try_send`] never
//! blocks; a full queue is the caller's cue to answer 5.03). The writer takes everything queued
//! (up to `max_batch`), waits at most `batch_window` for more, commits once, and only then calls
//! each record's completion — which is what sends the 2.01. So an acknowledgement always follows
//! the durable commit that holds its data, and a slow disk batches more instead of queueing more.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use coapgate_storage::UplinkWriter;
use coapgate_storage::model::{UplinkOutcome, UplinkRecord, UplinkRejection};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::histogram::Histogram;

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
    /// Duration of each commit (including its fsync), in microseconds.
    pub commit_micros: Histogram,
}

impl Default for WriterStats {
    fn default() -> WriterStats {
        WriterStats {
            commits: AtomicU64::new(0),
            records: AtomicU64::new(0),
            failed_commits: AtomicU64::new(0),
            batch_size: Histogram::new(&[1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000]),
            commit_micros: Histogram::new(&[250, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000, 500_000]),
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

pub struct WriterConfig {
    pub queue_capacity: usize,
    pub max_batch: usize,
    pub batch_window: Duration,
}

/// Starts the writer thread. It runs until every [`WriterHandle`] is dropped, then commits what
/// is queued and exits; the returned join handle lets shutdown wait for that.
pub fn start(writer: Box<dyn UplinkWriter>, config: WriterConfig) -> (WriterHandle, std::thread::JoinHandle<()>) {
    let (tx, rx) = crossbeam_channel::bounded(config.queue_capacity);
    let stats = Arc::new(WriterStats::default());
    let thread_stats = stats.clone();
    let join = std::thread::Builder::new()
        .name("uplink-writer".into())
        .spawn(move || run(writer, rx, config, &thread_stats))
        .expect("spawning the writer thread");
    (WriterHandle { tx, stats }, join)
}

fn run(mut writer: Box<dyn UplinkWriter>, rx: Receiver<WriteJob>, config: WriterConfig, stats: &WriterStats) {
    let mut batch: Vec<WriteJob> = Vec::with_capacity(config.max_batch);
    while let Ok(first) = rx.recv() {
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
        commit_batch(writer.as_mut(), &mut batch, stats);
        if let Err(e) = writer.maintain() {
            tracing::warn!("storage upkeep failed (will retry): {e}");
        }
    }
}

fn commit_batch(writer: &mut dyn UplinkWriter, batch: &mut Vec<WriteJob>, stats: &WriterStats) {
    let (records, completions): (Vec<UplinkRecord>, Vec<Completion>) =
        batch.drain(..).map(|j| (j.record, j.done)).unzip();
    let started = Instant::now();
    let result = writer.commit(&records);
    stats.commit_micros.record(started.elapsed().as_micros() as u64);
    stats.batch_size.record(records.len() as u64);
    match result {
        Ok(results) => {
            stats.commits.fetch_add(1, Ordering::Relaxed);
            stats.records.fetch_add(records.len() as u64, Ordering::Relaxed);
            for (done, result) in completions.into_iter().zip(results) {
                done(match result {
                    Ok(outcome) => WriteResult::Stored(outcome),
                    Err(rejection) => WriteResult::Rejected(rejection),
                });
            }
        }
        Err(e) => {
            stats.failed_commits.fetch_add(1, Ordering::Relaxed);
            tracing::error!("storing {} uplinks failed, none acknowledged: {e}", records.len());
            let message = e.to_string();
            for done in completions {
                done(WriteResult::Failed(message.clone()));
            }
        }
    }
}

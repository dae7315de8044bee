//! A fixed pool of worker threads, each with its own [`Engine`].
//!
//! QuickJS runtimes cannot be shared between threads, so instead of locking
//! one engine the pool gives every worker its own engine and compile cache,
//! and feeds them from one bounded queue. The queue is bounded so that a
//! traffic spike turns into fast "service unavailable" answers rather than
//! unbounded memory growth and latency.
//!
//! The queue is a small fair scheduler (see [`crate::sched`]): jobs wait in
//! one FIFO per script id, served round-robin, and one script id may occupy
//! at most `max(1, workers - 1)` workers while jobs of other scripts wait,
//! so an endless script in one integration cannot starve the others.
//! Scripts that keep timing out or failing to compile are blocked for a
//! while for the source whose payloads fail (see [`crate::block`],
//! [`DecodeJob::source`] and [`Limits::max_errors`]); the block is shared by
//! all workers.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::block::Blocker;
use crate::sched::Scheduler;
use crate::{DecoderScript, Engine, Limits, ScriptError};

/// Callback invoked on the worker thread with a job's outcome and the time
/// spent compiling (on a cache miss) and running the script.
pub type OnDone = Box<dyn FnOnce(Result<serde_json::Value, ScriptError>, Duration) + Send>;

/// Configuration of an [`EnginePool`].
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Number of worker threads (at least 1 is started).
    pub workers: usize,
    /// Jobs that may wait in the queue before [`EnginePool::try_submit`]
    /// starts refusing them (at least 1).
    pub queue_capacity: usize,
    /// Limits applied by every worker's engine, including the blocking
    /// policy ([`Limits::max_errors`], [`Limits::block_duration`]).
    pub limits: Limits,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            queue_capacity: 1024,
            limits: Limits::default(),
        }
    }
}

/// One decode request.
pub struct DecodeJob {
    /// The script to run; shared so that many jobs can reference one script.
    pub script: Arc<DecoderScript>,
    /// Raw payload bytes, passed to the script as an array of numbers. Shared, so the caller
    /// can keep them (for its debug events) without a copy.
    pub payload: Arc<[u8]>,
    /// Passed to the script as a plain object of strings; shared like the payload.
    pub metadata: Arc<BTreeMap<String, String>>,
    /// Where the payload came from (the sender's host), if anyone: failures are counted, and
    /// the script blocked, per (script, source), so one source's crafted payloads do not stop
    /// the script for the others. `None` counts per script, as ThingsBoard does.
    pub source: Option<IpAddr>,
    /// Runs on the worker thread with the outcome; the server uses it to
    /// hand the result on to its writer queue. It should be quick, since the
    /// worker runs no script meanwhile. A panic in it is caught and logged.
    pub on_done: OnDone,
}

impl std::fmt::Debug for DecodeJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodeJob")
            .field("script", &self.script.cache_key())
            .field("payload_len", &self.payload.len())
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

/// Why [`EnginePool::try_submit`] refused a job. The job is handed back so
/// the caller can answer its request (or retry) without having cloned it.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The queue is full: shed load (CoAP 5.03 Service Unavailable).
    #[error("script engine pool is full")]
    Full(DecodeJob),
    /// All workers are gone (only possible after a shutdown started).
    #[error("script engine pool is shut down")]
    ShutDown(DecodeJob),
}

impl SubmitError {
    /// Returns the refused job.
    pub fn into_job(self) -> DecodeJob {
        match self {
            SubmitError::Full(job) | SubmitError::ShutDown(job) => job,
        }
    }

    /// The equivalent [`ScriptError`], for callers that report refusals
    /// through the same path as script failures.
    pub fn to_script_error(&self) -> ScriptError {
        match self {
            SubmitError::Full(_) => ScriptError::PoolFull,
            SubmitError::ShutDown(_) => {
                ScriptError::Internal("script engine pool is shut down".into())
            }
        }
    }
}

/// A pool of script worker threads fed by a bounded, fair queue.
///
/// Dropping the pool behaves like [`EnginePool::shutdown`].
#[derive(Debug)]
pub struct EnginePool {
    sched: Arc<Scheduler>,
    workers: Vec<JoinHandle<()>>,
}

/// Extra native stack for worker threads beyond the engine's own limit, for
/// the Rust frames around the interpreter.
pub(crate) const WORKER_STACK_HEADROOM: usize = 2 * 1024 * 1024;

impl EnginePool {
    /// Starts `cfg.workers` threads named `script-0`, `script-1`, ...
    ///
    /// Engines are built lazily on each worker's first job, so start-up is
    /// cheap and an engine failure surfaces as a job error, not a panic.
    ///
    /// # Panics
    /// If the OS refuses to spawn a thread.
    pub fn start(cfg: PoolConfig) -> EnginePool {
        let n = cfg.workers.max(1);
        let sched = Arc::new(Scheduler::new(n, cfg.queue_capacity.max(1)));
        let blocker = Arc::new(Blocker::new(
            cfg.limits.max_errors,
            cfg.limits.block_duration,
        ));
        let stack_size = cfg.limits.max_stack_bytes + WORKER_STACK_HEADROOM;
        let workers = (0..n)
            .map(|i| {
                let sched = Arc::clone(&sched);
                let blocker = Arc::clone(&blocker);
                let limits = cfg.limits.clone();
                std::thread::Builder::new()
                    .name(format!("script-{i}"))
                    .stack_size(stack_size)
                    .spawn(move || worker_loop(&sched, &blocker, limits))
                    .expect("failed to spawn script worker thread")
            })
            .collect();
        EnginePool { sched, workers }
    }

    /// Queues a job without ever blocking; refuses it when the queue is full
    /// so the network loop can answer 5.03 immediately.
    pub fn try_submit(&self, job: DecodeJob) -> Result<(), SubmitError> {
        self.sched.push(job)
    }

    /// Jobs waiting in the queue (not counting those being run).
    pub fn queue_len(&self) -> usize {
        self.sched.queued()
    }

    /// Number of worker threads.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Stops accepting jobs, lets the workers finish every queued job, and
    /// waits for them to exit.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        // Workers exit once the scheduler is closed and empty.
        self.sched.close();
        for handle in self.workers.drain(..) {
            if handle.join().is_err() {
                tracing::error!("script worker thread panicked");
            }
        }
    }
}

impl Drop for EnginePool {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Tells the scheduler that a job's script no longer occupies this worker,
/// even if running it panicked.
struct Running<'a> {
    sched: &'a Scheduler,
    id: uuid::Uuid,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.sched.finish(self.id);
    }
}

fn worker_loop(sched: &Scheduler, blocker: &Blocker, limits: Limits) {
    let mut engine = Engine::new(limits.clone());
    while let Some(job) = sched.pop() {
        let _running = Running {
            sched,
            id: job.script.id,
        };
        let DecodeJob {
            script,
            payload,
            metadata,
            source,
            on_done,
        } = job;
        let started = Instant::now();
        let result = match blocker.check(&script, source, started) {
            Err(blocked) => Err(blocked),
            Ok(()) => {
                let outcome = catch_unwind(AssertUnwindSafe(|| {
                    engine.decode(&script, &payload, &metadata)
                }));
                let result = outcome.unwrap_or_else(|_| {
                    // A panic inside the engine may have left it half-updated:
                    // start over with a fresh one.
                    tracing::error!(script = %script.id, "panic while running a decoder script");
                    engine = Engine::new(limits.clone());
                    Err(ScriptError::Internal(
                        "panic while running the script".into(),
                    ))
                });
                blocker.record(&script, source, &result, Instant::now());
                result
            }
        };
        let elapsed = started.elapsed();
        if catch_unwind(AssertUnwindSafe(|| on_done(result, elapsed))).is_err() {
            tracing::error!(script = %script.id, "decode completion callback panicked");
        }
    }
}

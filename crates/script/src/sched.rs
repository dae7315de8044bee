//! The pool's job queue: bounded, non-blocking on submit, and fair between
//! scripts.
//!
//! Jobs wait in one FIFO per script id; ids with waiting jobs form a
//! round-robin ring. A free worker takes the first id in the ring that is
//! *eligible* and moves that id to the back of the ring. An id is eligible
//! unless it already occupies `max(1, workers - 1)` workers, so a script that
//! runs into its timeout on every call can hold at most all workers but one,
//! and the remaining worker is free *before* another script's job arrives.
//!
//! This deliberately gives up some work conservation: a single busy script
//! leaves one worker idle. A work-conserving rule (cap only while others
//! wait) lets an endless script take every worker first, and the next
//! integration's uplink then waits a whole script time-out; measured over
//! CoAP that turned piggybacked answers into separate responses. Decoding is
//! microseconds per uplink, so one worker less for one script costs little.
//!
//! One mutex guards everything; every operation is O(1) apart from a scan of
//! the ring that stops at its second entry (see above), so the lock is held
//! for well under a microsecond.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use uuid::Uuid;

use crate::pool::{DecodeJob, SubmitError};

#[derive(Default)]
struct PerScript {
    jobs: VecDeque<DecodeJob>,
    /// Workers currently running jobs of this script.
    running: usize,
}

#[derive(Default)]
struct State {
    scripts: HashMap<Uuid, PerScript>,
    /// Ids with at least one waiting job, in service order.
    ring: VecDeque<Uuid>,
    /// Waiting jobs over all ids.
    queued: usize,
    /// Workers asleep in `pop`.
    idle: usize,
    closed: bool,
}

pub(crate) struct Scheduler {
    state: Mutex<State>,
    ready: Condvar,
    capacity: usize,
    /// Most workers one id may occupy while other ids wait.
    cap: usize,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("queued", &self.queued())
            .field("capacity", &self.capacity)
            .field("cap", &self.cap)
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    pub(crate) fn new(workers: usize, capacity: usize) -> Scheduler {
        Scheduler {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            capacity: capacity.max(1),
            cap: workers.saturating_sub(1).max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No operation leaves the state half-updated across a panic point
        // (callbacks and scripts run outside the lock).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `job`, or hands it back when full or closed. Never blocks
    /// beyond the short internal lock.
    pub(crate) fn push(&self, job: DecodeJob) -> Result<(), SubmitError> {
        let mut st = self.lock();
        if st.closed {
            return Err(SubmitError::ShutDown(job));
        }
        if st.queued >= self.capacity {
            return Err(SubmitError::Full(job));
        }
        let id = job.script.id;
        let per = st.scripts.entry(id).or_default();
        let was_idle = per.jobs.is_empty();
        per.jobs.push_back(job);
        // Wake a sleeping worker only when this job can start now: one whose script is at its
        // cap would find nothing to do and sleep again, and on two cores those futile
        // wake-ups cost more than the script itself.
        let startable = per.running + per.jobs.len() <= self.cap;
        if was_idle {
            st.ring.push_back(id);
        }
        st.queued += 1;
        let wake = startable && st.idle > 0;
        drop(st);
        if wake {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Waits for the next job; `None` once closed and drained. The caller
    /// must call [`Scheduler::finish`] with the job's script id afterwards.
    pub(crate) fn pop(&self) -> Option<DecodeJob> {
        let mut st = self.lock();
        loop {
            if let Some(pos) = self.eligible(&st) {
                return Some(self.take(&mut st, pos));
            }
            if st.closed && st.queued == 0 {
                // Other workers may sleep on jobs that were at their cap: let them see the end.
                self.ready.notify_all();
                return None;
            }
            // Jobs may wait whose scripts are at their cap; `finish` wakes us.
            st.idle += 1;
            st = self.ready.wait(st).unwrap_or_else(PoisonError::into_inner);
            st.idle -= 1;
        }
    }

    /// How many waiting jobs could start now (each script up to its cap).
    fn startable(&self, st: &State) -> usize {
        st.ring.iter().map(|id| st.scripts[id].jobs.len().min(self.cap.saturating_sub(st.scripts[id].running))).sum()
    }

    /// The ring position of the first script with waiting jobs below its cap.
    fn eligible(&self, st: &State) -> Option<usize> {
        st.ring.iter().position(|id| st.scripts[id].running < self.cap)
    }

    fn take(&self, st: &mut State, pos: usize) -> DecodeJob {
        let id = st.ring.remove(pos).expect("ring position is in range");
        let per = st.scripts.get_mut(&id).expect("ring ids have queues");
        let job = per.jobs.pop_front().expect("ring ids have waiting jobs");
        per.running += 1;
        if !per.jobs.is_empty() {
            st.ring.push_back(id);
        }
        st.queued -= 1;
        job
    }

    /// Marks a job of script `id` as no longer running.
    pub(crate) fn finish(&self, id: Uuid) {
        let mut st = self.lock();
        if let Entry::Occupied(mut e) = st.scripts.entry(id) {
            let per = e.get_mut();
            per.running = per.running.saturating_sub(1);
            if per.running == 0 && per.jobs.is_empty() {
                e.remove();
            }
        }
        // A job may have waited for this script to drop below its cap. The finishing worker
        // takes one startable job itself when it returns to `pop`; wake another only for more.
        let wake = st.idle > 0 && (st.closed || self.startable(&st) >= 2);
        drop(st);
        if wake {
            self.ready.notify_one();
        }
    }

    /// Waiting jobs (not counting running ones).
    pub(crate) fn queued(&self) -> usize {
        self.lock().queued
    }

    /// Refuses new jobs; workers drain the queue and then get `None`.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::DecoderScript;

    fn job(script: &Arc<DecoderScript>) -> DecodeJob {
        DecodeJob {
            script: Arc::clone(script),
            payload: Arc::from(&[][..]),
            metadata: Arc::new(BTreeMap::new()),
            source: None,
            on_done: Box::new(|_, _| {}),
        }
    }

    fn script() -> Arc<DecoderScript> {
        Arc::new(DecoderScript::js(Uuid::new_v4(), 1, ""))
    }

    #[test]
    fn one_id_always_leaves_a_worker_free() {
        let s = Scheduler::new(3, 100);
        let (a, b) = (script(), script());
        for _ in 0..5 {
            s.push(job(&a)).unwrap();
        }
        // Even alone, A takes at most two of the three workers, so a job of
        // another script that arrives now finds the third one free.
        let taken: Vec<_> = (0..2).map(|_| s.pop().unwrap().script.id).collect();
        assert!(taken.iter().all(|id| *id == a.id));
        s.push(job(&b)).unwrap();
        assert_eq!(s.pop().unwrap().script.id, b.id);
        s.finish(b.id);
        for _ in 0..2 {
            s.finish(a.id);
        }
        // With B waiting, A gets at most two workers.
        s.push(job(&b)).unwrap();
        s.push(job(&b)).unwrap();
        let first = s.pop().unwrap().script.id;
        let second = s.pop().unwrap().script.id;
        let third = s.pop().unwrap().script.id;
        assert_eq!(
            [first, second, third]
                .iter()
                .filter(|id| **id == a.id)
                .count(),
            2,
            "A capped at workers - 1 while B waits"
        );
        assert_eq!(s.queued(), 2);
    }

    #[test]
    fn round_robin_and_capacity() {
        let s = Scheduler::new(1, 4);
        let (a, b) = (script(), script());
        s.push(job(&a)).unwrap();
        s.push(job(&a)).unwrap();
        s.push(job(&a)).unwrap();
        s.push(job(&b)).unwrap();
        assert!(matches!(s.push(job(&b)), Err(SubmitError::Full(_))));
        let order: Vec<_> = (0..4)
            .map(|_| {
                let id = s.pop().unwrap().script.id;
                s.finish(id);
                id
            })
            .collect();
        assert_eq!(order, [a.id, b.id, a.id, a.id]);
        s.close();
        assert!(s.pop().is_none());
        assert!(matches!(s.push(job(&a)), Err(SubmitError::ShutDown(_))));
    }
}

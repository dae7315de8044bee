//! Per-script error counting and temporary blocking, shared by all workers
//! of a pool (ThingsBoard's "script blacklist").
//!
//! Every counted failure ([`ScriptError::counts_towards_block`]) of a script
//! id increments its counter; a success resets it. When the counter reaches
//! `max_errors`, the script is blocked for `block_duration` and its jobs fail
//! at once with [`ScriptError::Blocked`] without running. When the block
//! ends the script starts over with a clean slate, and a newer version of
//! the script (a higher [`DecoderScript::version`]) is never blocked by the
//! failures of an older one. As in ThingsBoard, a counted error is forgotten
//! `block_duration` after the last one, so rare failures never add up.
//!
//! # Per source, not per script
//!
//! ThingsBoard blocks the whole script, which lets anyone who can send one
//! crafted payload (one that makes the script time out or return too much)
//! three times stop a converter for every device. Here the counter and the
//! block belong to the pair (script id, [`DecodeJob::source`]): the source
//! host the payload came from, as the caller names it. Jobs without a
//! source (the REST API's "Test payload decoder", `coapgate decode`) share
//! one counter per script, which is ThingsBoard's rule. The source was
//! chosen over the device because the device is only known from the
//! script's output, which a failing payload never produces; and over a
//! payload class because a crafted payload can be varied at will. What one
//! source can still do to the others is bounded by the scheduler (a script
//! holds at most all workers but one) and by the time limit.
//!
//! Functions take `now` explicitly so tests can drive the clock.
//!
//! [`DecodeJob::source`]: crate::DecodeJob::source

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::{DecoderScript, ScriptError};

/// Above this many tracked (script, source) pairs, stale entries are pruned on insert (and
/// the threshold doubles while live ones remain, so pruning stays amortised O(1)).
const PRUNE_ABOVE: usize = 1024;
/// Most (script, source) pairs tracked at once; beyond it new sources are not counted (the
/// scheduler's fairness and the time limit still bound them).
const MAX_TRACKED: usize = 65_536;

/// Whose failures count together: a script and the source of its payloads.
type Key = (Uuid, Option<IpAddr>);

#[derive(Debug)]
struct Entry {
    /// Version the counter belongs to.
    version: u64,
    /// Consecutive counted errors.
    errors: u32,
    /// When the counter (and a block) lapses.
    expires: Instant,
}

/// Error counters and blocks of all scripts run by one pool.
#[derive(Debug)]
pub(crate) struct Blocker {
    max_errors: u32,
    duration: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    entries: HashMap<Key, Entry>,
    prune_above: usize,
    /// When a full table was last pruned; a full one is pruned at most once a second.
    pruned_full: Option<Instant>,
}

impl Blocker {
    pub(crate) fn new(max_errors: u32, duration: Duration) -> Blocker {
        Blocker {
            max_errors,
            duration,
            state: Mutex::new(State {
                entries: HashMap::new(),
                prune_above: PRUNE_ABOVE,
                pruned_full: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The map stays consistent even if a holder panicked mid-update
        // (every update is a single insert/remove/field store).
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Fails with [`ScriptError::Blocked`] if `script` may not run now for payloads from
    /// `source`.
    pub(crate) fn check(
        &self,
        script: &DecoderScript,
        source: Option<IpAddr>,
        now: Instant,
    ) -> Result<(), ScriptError> {
        if self.max_errors == 0 {
            return Ok(());
        }
        let key = (script.id, source);
        let mut state = self.lock();
        let Some(entry) = state.entries.get(&key) else {
            return Ok(());
        };
        if entry.expires <= now || script.version > entry.version {
            // The block (or the error streak) lapsed, or the script was
            // replaced: start over.
            state.entries.remove(&key);
            return Ok(());
        }
        if entry.errors >= self.max_errors {
            // An older version still queued is blocked along with the id.
            return Err(ScriptError::Blocked {
                script_id: script.id,
                max_errors: self.max_errors,
            });
        }
        Ok(())
    }

    /// Records the outcome of running `script` on a payload from `source`.
    pub(crate) fn record<T>(
        &self,
        script: &DecoderScript,
        source: Option<IpAddr>,
        result: &Result<T, ScriptError>,
        now: Instant,
    ) {
        if self.max_errors == 0 {
            return;
        }
        let counted = match result {
            Ok(_) => false,
            Err(e) if e.counts_towards_block() => true,
            // Runtime errors neither count nor reset the streak.
            Err(_) => return,
        };
        let key = (script.id, source);
        let mut guard = self.lock();
        let state = &mut *guard;
        if !counted {
            if state
                .entries
                .get(&key)
                .is_some_and(|e| e.version <= script.version)
            {
                state.entries.remove(&key);
            }
            return;
        }
        let full = state.entries.len() >= MAX_TRACKED;
        let pruned_lately = state
            .pruned_full
            .is_some_and(|at| now.saturating_duration_since(at) < Duration::from_secs(1));
        if state.entries.len() >= state.prune_above && !(full && pruned_lately) {
            state.entries.retain(|_, e| e.expires > now);
            state.prune_above = (2 * state.entries.len()).clamp(PRUNE_ABOVE, MAX_TRACKED);
            state.pruned_full = full.then_some(now);
        }
        if state.entries.len() >= MAX_TRACKED && !state.entries.contains_key(&key) {
            return;
        }
        let entry = state.entries.entry(key).or_insert(Entry {
            version: script.version,
            errors: 0,
            expires: now,
        });
        if script.version < entry.version {
            // A stale job of a replaced version: not the current script's fault.
            return;
        }
        if script.version > entry.version || entry.expires <= now {
            entry.version = script.version;
            entry.errors = 0;
        }
        if entry.errors >= self.max_errors {
            // Already blocked (a job that was running when the block
            // started); do not extend the block.
            return;
        }
        entry.errors += 1;
        entry.expires = now + self.duration;
        if entry.errors >= self.max_errors {
            tracing::warn!(
                script = %script.id,
                source = ?source,
                version = script.version,
                errors = entry.errors,
                block_secs = self.duration.as_secs_f64(),
                "decoder script blocked after repeated failures"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err() -> Result<(), ScriptError> {
        Err(ScriptError::Timeout {
            limit: Duration::from_millis(1),
        })
    }

    #[test]
    fn blocks_after_max_errors_until_the_duration_ends() {
        let b = Blocker::new(3, Duration::from_secs(60));
        let s = DecoderScript::js(Uuid::new_v4(), 1, "");
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(b.check(&s, None, t0).is_ok(), "before error {i}");
            b.record(&s, None, &err(), t0);
        }
        let e = b.check(&s, None, t0 + Duration::from_secs(59)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "Script invocation is blocked due to maximum error count 3, scriptId {}!",
                s.id
            )
        );
        // Lapsed: clean slate, one more error does not block again.
        let t1 = t0 + Duration::from_secs(60);
        assert!(b.check(&s, None, t1).is_ok());
        b.record(&s, None, &err(), t1);
        assert!(b.check(&s, None, t1).is_ok());
    }

    #[test]
    fn success_resets_runtime_errors_do_not_count_new_version_is_unblocked() {
        let b = Blocker::new(3, Duration::from_secs(60));
        let mut s = DecoderScript::js(Uuid::new_v4(), 1, "");
        let t = Instant::now();
        b.record(&s, None, &err(), t);
        b.record(&s, None, &err(), t);
        b.record(&s, None, &Ok(()), t);
        b.record(&s, None, &err(), t);
        b.record(&s, None, &err(), t);
        let runtime: Result<(), _> = Err(ScriptError::Runtime {
            message: "Error: x".into(),
            line: None,
            stack: None,
        });
        for _ in 0..10 {
            b.record(&s, None, &runtime, t);
        }
        assert!(b.check(&s, None, t).is_ok());
        b.record(&s, None, &err(), t);
        assert!(b.check(&s, None, t).is_err());
        let old = s.clone();
        s.version = 2;
        assert!(
            b.check(&s, None, t).is_ok(),
            "a new version starts unblocked"
        );
        // Errors of the old version no longer count.
        for _ in 0..5 {
            b.record(&old, None, &err(), t);
        }
        assert!(b.check(&s, None, t).is_ok());
    }

    #[test]
    fn errors_older_than_the_duration_are_forgotten() {
        let b = Blocker::new(2, Duration::from_secs(10));
        let s = DecoderScript::js(Uuid::new_v4(), 1, "");
        let t = Instant::now();
        b.record(&s, None, &err(), t);
        b.record(&s, None, &err(), t + Duration::from_secs(11));
        assert!(b.check(&s, None, t + Duration::from_secs(11)).is_ok());
    }

    #[test]
    fn zero_disables_blocking() {
        let b = Blocker::new(0, Duration::from_secs(10));
        let s = DecoderScript::js(Uuid::new_v4(), 1, "");
        let t = Instant::now();
        for _ in 0..10 {
            b.record(&s, None, &err(), t);
        }
        assert!(b.check(&s, None, t).is_ok());
    }

    #[test]
    fn a_source_is_blocked_alone() {
        let b = Blocker::new(3, Duration::from_secs(60));
        let s = DecoderScript::js(Uuid::new_v4(), 1, "");
        let t = Instant::now();
        let attacker = Some(IpAddr::from([127, 0, 0, 2]));
        let device = Some(IpAddr::from([127, 0, 0, 3]));
        for _ in 0..3 {
            b.record(&s, attacker, &err(), t);
        }
        assert!(b.check(&s, attacker, t).is_err());
        assert!(b.check(&s, device, t).is_ok());
        assert!(b.check(&s, None, t).is_ok());
        // A device's success does not lift the attacker's block.
        b.record(&s, device, &Ok(()), t);
        assert!(b.check(&s, attacker, t).is_err());
    }

    #[test]
    fn many_sources_keep_the_table_bounded() {
        let b = Blocker::new(3, Duration::from_secs(60));
        let s = DecoderScript::js(Uuid::new_v4(), 1, "");
        let t = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 100) {
            b.record(&s, Some(IpAddr::from(i.to_be_bytes())), &err(), t);
        }
        assert_eq!(b.lock().entries.len(), MAX_TRACKED);
        // Once they lapse they are pruned.
        let later = t + Duration::from_secs(61);
        b.record(&s, Some(IpAddr::from([10, 0, 0, 1])), &err(), later);
        assert_eq!(b.lock().entries.len(), 1);
    }
}

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
//! Functions take `now` explicitly so tests can drive the clock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::{DecoderScript, ScriptError};

/// Above this many tracked scripts, stale entries are pruned on insert.
const PRUNE_ABOVE: usize = 1024;

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
    state: Mutex<HashMap<Uuid, Entry>>,
}

impl Blocker {
    pub(crate) fn new(max_errors: u32, duration: Duration) -> Blocker {
        Blocker {
            max_errors,
            duration,
            state: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Entry>> {
        // The map stays consistent even if a holder panicked mid-update
        // (every update is a single insert/remove/field store).
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Fails with [`ScriptError::Blocked`] if `script` may not run now.
    pub(crate) fn check(&self, script: &DecoderScript, now: Instant) -> Result<(), ScriptError> {
        if self.max_errors == 0 {
            return Ok(());
        }
        let mut state = self.lock();
        let Some(entry) = state.get(&script.id) else {
            return Ok(());
        };
        if entry.expires <= now || script.version > entry.version {
            // The block (or the error streak) lapsed, or the script was
            // replaced: start over.
            state.remove(&script.id);
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

    /// Records the outcome of running `script`.
    pub(crate) fn record<T>(
        &self,
        script: &DecoderScript,
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
        let mut state = self.lock();
        if !counted {
            if state
                .get(&script.id)
                .is_some_and(|e| e.version <= script.version)
            {
                state.remove(&script.id);
            }
            return;
        }
        if state.len() >= PRUNE_ABOVE {
            state.retain(|_, e| e.expires > now);
        }
        let entry = state.entry(script.id).or_insert(Entry {
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
            assert!(b.check(&s, t0).is_ok(), "before error {i}");
            b.record(&s, &err(), t0);
        }
        let e = b.check(&s, t0 + Duration::from_secs(59)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "Script invocation is blocked due to maximum error count 3, scriptId {}!",
                s.id
            )
        );
        // Lapsed: clean slate, one more error does not block again.
        let t1 = t0 + Duration::from_secs(60);
        assert!(b.check(&s, t1).is_ok());
        b.record(&s, &err(), t1);
        assert!(b.check(&s, t1).is_ok());
    }

    #[test]
    fn success_resets_runtime_errors_do_not_count_new_version_is_unblocked() {
        let b = Blocker::new(3, Duration::from_secs(60));
        let mut s = DecoderScript::js(Uuid::new_v4(), 1, "");
        let t = Instant::now();
        b.record(&s, &err(), t);
        b.record(&s, &err(), t);
        b.record(&s, &Ok(()), t);
        b.record(&s, &err(), t);
        b.record(&s, &err(), t);
        let runtime: Result<(), _> = Err(ScriptError::Runtime {
            message: "Error: x".into(),
            line: None,
            stack: None,
        });
        for _ in 0..10 {
            b.record(&s, &runtime, t);
        }
        assert!(b.check(&s, t).is_ok());
        b.record(&s, &err(), t);
        assert!(b.check(&s, t).is_err());
        let old = s.clone();
        s.version = 2;
        assert!(b.check(&s, t).is_ok(), "a new version starts unblocked");
        // Errors of the old version no longer count.
        for _ in 0..5 {
            b.record(&old, &err(), t);
        }
        assert!(b.check(&s, t).is_ok());
    }

    #[test]
    fn errors_older_than_the_duration_are_forgotten() {
        let b = Blocker::new(2, Duration::from_secs(10));
        let s = DecoderScript::js(Uuid::new_v4(), 1, "");
        let t = Instant::now();
        b.record(&s, &err(), t);
        b.record(&s, &err(), t + Duration::from_secs(11));
        assert!(b.check(&s, t + Duration::from_secs(11)).is_ok());
    }

    #[test]
    fn zero_disables_blocking() {
        let b = Blocker::new(0, Duration::from_secs(10));
        let s = DecoderScript::js(Uuid::new_v4(), 1, "");
        let t = Instant::now();
        for _ in 0..10 {
            b.record(&s, &err(), t);
        }
        assert!(b.check(&s, t).is_ok());
    }
}

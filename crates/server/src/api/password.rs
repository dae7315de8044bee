//! Passwords: ThingsBoard's default policy, and bcrypt on a small bounded pool.
//!
//! bcrypt at cost 10 costs ~60 ms of CPU by design. Run unbounded on tokio's blocking pool, 32
//! parallel wrong logins took 32 cores' worth of time from the CoAP receive, script and writer
//! threads (issue #13: ingestion fell from 41,800 to 422 uplinks/s). Here at most
//! [`HASH_THREADS`] hashes run at once, at most [`HASH_QUEUE`] more wait, and anything beyond
//! that is answered 429 at once, so a login flood costs ingestion at most two cores.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Semaphore;

/// bcrypt's cost for new hashes (ThingsBoard's `BCryptPasswordEncoder` default is 10 too).
pub const HASH_COST: u32 = 10;
/// Hashes computed at once; the rest of the machine stays with ingestion.
pub const HASH_THREADS: usize = 2;
/// Logins that may wait for a hashing thread; more are refused with 429 rather than queued.
pub const HASH_QUEUE: usize = 16;

/// ThingsBoard's default `passwordPolicy` in its security settings: at least 6 characters, at most
/// 72 (bcrypt ignores what follows byte 72), whitespace allowed, no character classes required.
pub const MIN_LENGTH: usize = 6;
pub const MAX_LENGTH: usize = 72;

/// Checks a new password against the policy; the message is ThingsBoard's (passay's) wording.
pub fn check_policy(password: &str) -> Result<(), String> {
    let length = password.chars().count();
    if length < MIN_LENGTH {
        return Err(format!("Password must be {MIN_LENGTH} or more characters in length."));
    }
    if length > MAX_LENGTH || password.len() > MAX_LENGTH {
        return Err(format!("Password must be no more than {MAX_LENGTH} characters in length."));
    }
    Ok(())
}

/// Why a hash was not computed.
#[derive(Debug)]
pub enum HashRefused {
    /// All hashing threads are busy and the queue is full: try again in a second.
    Busy,
    Failed(String),
}

/// The bounded bcrypt pool. Cloned cheaply; counters are for `/metrics` and tests.
#[derive(Clone)]
pub struct HashPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    /// One permit per hashing thread. The permit moves into the blocking task and is released
    /// when bcrypt returns, not when the request goes away: a client that disconnects mid-hash
    /// cannot make room for more hashes than threads.
    permits: Arc<Semaphore>,
    /// Hashes running or waiting for a permit, to bound the queue.
    admitted: AtomicUsize,
    running: AtomicUsize,
    /// The most hashes ever seen running at once (never above `HASH_THREADS`).
    peak_running: AtomicUsize,
    /// Hashes computed, including those against the dummy hash for unknown users.
    computed: AtomicU64,
    refused_busy: AtomicU64,
    /// A hash of a random password, verified against when a login names no user, so that
    /// unknown and known users cost the same work and answer in the same time.
    dummy: tokio::sync::OnceCell<String>,
}

impl Default for HashPool {
    fn default() -> HashPool {
        HashPool {
            inner: Arc::new(PoolInner {
                permits: Arc::new(Semaphore::new(HASH_THREADS)),
                admitted: AtomicUsize::new(0),
                running: AtomicUsize::new(0),
                peak_running: AtomicUsize::new(0),
                computed: AtomicU64::new(0),
                refused_busy: AtomicU64::new(0),
                dummy: tokio::sync::OnceCell::new(),
            }),
        }
    }
}

impl HashPool {
    /// Runs `work` (a bcrypt call) on a blocking thread once a permit is free.
    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, HashRefused> {
        let inner = &self.inner;
        if inner.admitted.fetch_add(1, Ordering::AcqRel) >= HASH_THREADS + HASH_QUEUE {
            inner.admitted.fetch_sub(1, Ordering::AcqRel);
            inner.refused_busy.fetch_add(1, Ordering::Relaxed);
            return Err(HashRefused::Busy);
        }
        // Released when this future ends, even when the client goes away while waiting.
        let _admitted = scopeguard(|| {
            inner.admitted.fetch_sub(1, Ordering::AcqRel);
        });
        let permit = inner.permits.clone().acquire_owned().await.map_err(|e| HashRefused::Failed(e.to_string()))?;
        let pool = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let running = pool.running.fetch_add(1, Ordering::AcqRel) + 1;
            pool.peak_running.fetch_max(running, Ordering::AcqRel);
            let value = work();
            pool.running.fetch_sub(1, Ordering::AcqRel);
            pool.computed.fetch_add(1, Ordering::Relaxed);
            value
        })
        .await
        .map_err(|e| HashRefused::Failed(e.to_string()))
    }

    /// Whether `password` matches `hash`; with no hash (unknown user) the same work is done
    /// against the dummy hash and the answer is false.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, HashRefused> {
        let (hash, known) = match hash {
            Some(h) => (h, true),
            None => (self.dummy_hash().await?, false),
        };
        let ok = self.run(move || bcrypt::verify(password, &hash).unwrap_or(false)).await?;
        Ok(ok && known)
    }

    pub async fn hash(&self, password: String) -> Result<String, HashRefused> {
        self.run(move || bcrypt::hash(password, HASH_COST).map_err(|e| e.to_string()))
            .await?
            .map_err(HashRefused::Failed)
    }

    async fn dummy_hash(&self) -> Result<String, HashRefused> {
        self.inner
            .dummy
            .get_or_try_init(|| async {
                let random: [u8; 16] = rand::random();
                // Computed outside the pool and not counted: it happens once per process.
                tokio::task::spawn_blocking(move || bcrypt::hash(random, HASH_COST).map_err(|e| e.to_string()))
                    .await
                    .map_err(|e| HashRefused::Failed(e.to_string()))?
                    .map_err(HashRefused::Failed)
            })
            .await
            .cloned()
    }

    /// Prometheus lines for `/metrics`.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let i = &self.inner;
        let _ = writeln!(out, "# HELP coapgate_password_hashes_total bcrypt computations for logins and password changes, unknown users included.");
        let _ = writeln!(out, "# TYPE coapgate_password_hashes_total counter");
        let _ = writeln!(out, "coapgate_password_hashes_total {}", i.computed.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP coapgate_password_hash_threads_peak Most bcrypt computations seen running at once (bounded by the pool).");
        let _ = writeln!(out, "# TYPE coapgate_password_hash_threads_peak gauge");
        let _ = writeln!(out, "coapgate_password_hash_threads_peak {}", i.peak_running.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP coapgate_password_hash_busy_total Logins refused with 429 because the hashing pool and its queue were full.");
        let _ = writeln!(out, "# TYPE coapgate_password_hash_busy_total counter");
        let _ = writeln!(out, "coapgate_password_hash_busy_total {}", i.refused_busy.load(Ordering::Relaxed));
    }
}

/// Runs a closure when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// What a token carries to tie it to the password it was issued under: the bcrypt salt, which is
/// new with every hash and useless for guessing the password. A password change (over the API or
/// with `coapgate reset-password`, even while the server runs) makes every older token fail.
pub fn credentials_version(password_hash: &str) -> String {
    // "$2b$10$" then 22 characters of salt, then 31 of hash.
    password_hash.get(7..29).unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_is_thingsboards_default() {
        assert!(check_policy("12345").is_err());
        assert!(check_policy("123456").is_ok());
        assert!(check_policy("with space").is_ok());
        assert!(check_policy(&"x".repeat(72)).is_ok());
        assert!(check_policy(&"x".repeat(73)).is_err());
    }

    #[test]
    fn credentials_version_is_the_salt() {
        let hash = bcrypt::hash("secret-1", 4).unwrap();
        let version = credentials_version(&hash);
        assert_eq!(version.len(), 22);
        assert!(hash.contains(&version));
        assert_ne!(version, credentials_version(&bcrypt::hash("secret-1", 4).unwrap()));
    }
}

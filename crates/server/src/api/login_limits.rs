//! Login rate limits: per source address and per user name, checked before any hashing.
//!
//! - **Per user** (ThingsBoard's lockout): ThingsBoard's default security settings lock a user
//!   after `maxFailedLoginAttempts` = 5 consecutive failures, and a success resets the count.
//!   ThingsBoard then keeps the account disabled until an administrator unlocks it or the user
//!   resets the password by e-mail; coapgate has one administrator and no e-mail, so a permanent
//!   lock would let anyone lock the only admin out for good. The lock here lasts
//!   [`LOCKOUT`] instead, and `coapgate reset-password` (a new password hash) lifts it at once.
//!   Unknown user names are counted the same way, so the lockout does not reveal which names exist.
//! - **Per source address**: a token bucket of [`IP_BURST`] attempts refilled at one per
//!   [`IP_REFILL`]; a successful login gives its token back, so only failures use it up. This
//!   stops one address from guessing many user names, which the per-user count cannot see.
//!
//! Both answer 429 with `Retry-After` (seconds). State is in memory and bounded: at most
//! [`MAX_TRACKED`] names and addresses each; the stalest entries are forgotten first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// ThingsBoard's default `maxFailedLoginAttempts`.
pub const MAX_FAILED_ATTEMPTS: u32 = 5;
pub const LOCKOUT: Duration = Duration::from_secs(300);
pub const IP_BURST: f64 = 10.0;
pub const IP_REFILL: Duration = Duration::from_secs(6);
pub const MAX_TRACKED: usize = 10_000;

/// A refusal: how long until trying again makes sense.
#[derive(Debug, Clone, Copy)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds for the header, at least one.
    pub fn seconds(self) -> u64 {
        self.0.as_secs_f64().ceil().max(1.0) as u64
    }
}

struct UserFailures {
    count: u32,
    locked_until: Option<Instant>,
    /// The credentials version (bcrypt salt) the failures were counted against: a new password
    /// (e.g. `coapgate reset-password`) starts the count afresh.
    credentials: String,
    last: Instant,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

#[derive(Default)]
pub struct LoginLimits {
    users: Mutex<HashMap<String, UserFailures>>,
    addresses: Mutex<HashMap<IpAddr, Bucket>>,
    pub(super) refused_lockout: std::sync::atomic::AtomicU64,
    pub(super) refused_address: std::sync::atomic::AtomicU64,
}

impl LoginLimits {
    /// Takes one attempt from the address's bucket, or says when the next one is allowed.
    pub fn admit_address(&self, ip: IpAddr) -> Result<(), RetryAfter> {
        let now = Instant::now();
        let mut addresses = self.addresses.lock().unwrap();
        if addresses.len() >= MAX_TRACKED && !addresses.contains_key(&ip) {
            // Full buckets carry no information: forget them first, then the stalest.
            addresses.retain(|_, b| refill(b, now) < IP_BURST);
            evict_oldest(&mut addresses, |b| b.updated);
        }
        let bucket = addresses.entry(ip).or_insert(Bucket { tokens: IP_BURST, updated: now });
        let tokens = refill(bucket, now);
        if tokens < 1.0 {
            self.refused_address.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(RetryAfter(IP_REFILL.mul_f64(1.0 - tokens)));
        }
        bucket.tokens = tokens - 1.0;
        bucket.updated = now;
        Ok(())
    }

    /// Gives the attempt back after a successful login.
    pub fn refund_address(&self, ip: IpAddr) {
        if let Some(b) = self.addresses.lock().unwrap().get_mut(&ip) {
            b.tokens = (b.tokens + 1.0).min(IP_BURST);
        }
    }

    /// Refuses a locked user name; `credentials` is the user's current credentials version
    /// ("" for unknown names).
    pub fn check_user(&self, name: &str, credentials: &str) -> Result<(), RetryAfter> {
        let mut users = self.users.lock().unwrap();
        let key = name.to_lowercase();
        let Some(f) = users.get(&key) else { return Ok(()) };
        if f.credentials != credentials {
            users.remove(&key);
            return Ok(());
        }
        match f.locked_until {
            Some(until) if until > Instant::now() => {
                self.refused_lockout.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(RetryAfter(until - Instant::now()))
            }
            Some(_) => {
                // The lock has run out: a fresh count, as after an administrator's unlock.
                users.remove(&key);
                Ok(())
            }
            None => Ok(()),
        }
    }

    pub fn record_failure(&self, name: &str, credentials: &str) {
        let now = Instant::now();
        let mut users = self.users.lock().unwrap();
        let key = name.to_lowercase();
        if users.len() >= MAX_TRACKED && !users.contains_key(&key) {
            users.retain(|_, f| f.locked_until.is_some_and(|t| t > now));
            evict_oldest(&mut users, |f| f.last);
        }
        let f = users.entry(key).or_insert_with(|| UserFailures {
            count: 0,
            locked_until: None,
            credentials: credentials.to_string(),
            last: now,
        });
        f.count += 1;
        f.last = now;
        if f.count >= MAX_FAILED_ATTEMPTS && f.locked_until.is_none() {
            tracing::warn!("login: user {name:?} locked for {} s after {} failed attempts", LOCKOUT.as_secs(), f.count);
            f.locked_until = Some(now + LOCKOUT);
        }
    }

    pub fn record_success(&self, name: &str) {
        self.users.lock().unwrap().remove(&name.to_lowercase());
    }
}

fn refill(bucket: &Bucket, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
    (bucket.tokens + elapsed / IP_REFILL.as_secs_f64()).min(IP_BURST)
}

/// Drops the tenth of the entries least recently touched, when the map is still full.
fn evict_oldest<K: Clone + std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, touched: impl Fn(&V) -> Instant) {
    if map.len() < MAX_TRACKED {
        return;
    }
    let mut ages: Vec<(Instant, K)> = map.iter().map(|(k, v)| (touched(v), k.clone())).collect();
    ages.sort_by_key(|(t, _)| *t);
    for (_, k) in ages.into_iter().take(MAX_TRACKED / 10) {
        map.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockout_after_thingsboards_five_failures_and_reset_by_new_credentials() {
        let limits = LoginLimits::default();
        for _ in 0..MAX_FAILED_ATTEMPTS - 1 {
            limits.record_failure("A@x", "salt1");
            assert!(limits.check_user("a@x", "salt1").is_ok());
        }
        limits.record_failure("a@x", "salt1");
        let retry = limits.check_user("a@x", "salt1").unwrap_err();
        assert!(retry.seconds() > 200, "{retry:?}");
        assert!(limits.check_user("a@x", "salt2").is_ok(), "a new password lifts the lock");
    }

    #[test]
    fn address_bucket_refunds_successes() {
        let limits = LoginLimits::default();
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        for _ in 0..20 {
            limits.admit_address(ip).unwrap();
            limits.refund_address(ip);
        }
        for _ in 0..IP_BURST as usize {
            limits.admit_address(ip).unwrap();
        }
        assert!(limits.admit_address(ip).is_err());
    }
}

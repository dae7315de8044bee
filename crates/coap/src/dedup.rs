//! Bounded message-deduplication cache for a CoAP server (RFC 7252 §4.5).
//!
//! A peer retransmits a Confirmable request until it sees the ACK, and the
//! network may duplicate any datagram, so a server must recognise a repeated
//! `(peer, message id)` and answer it with the response it already sent
//! instead of ingesting the telemetry twice. Entries must live for
//! `EXCHANGE_LIFETIME` (CON) or `NON_LIFETIME` (NON) to cover all
//! retransmissions.
//!
//! Because message ids and source addresses are chosen by untrusted peers,
//! the cache is bounded both in total and per peer, so that one peer (or a
//! spoofing attacker) cannot exhaust memory or crowd out everyone else.
//!
//! # Bounds and eviction
//!
//! - A peer holding `max_entries_per_peer` live entries gets [`Lookup::Full`]
//!   with [`Limit::PerPeer`] until some of its entries expire or are
//!   forgotten; other peers are unaffected.
//! - When the cache holds `max_entries` entries it first drops expired ones;
//!   if it is still full it evicts the oldest *completed* ([`Entry::Done`])
//!   entry, by completion order. The oldest is chosen because retransmissions
//!   cluster within `MAX_TRANSMIT_SPAN` (45 s) of the first transmission, so
//!   it is the entry least likely to see another duplicate. Evicting it is a
//!   real, if small, cost: should a duplicate of it still arrive, it is
//!   treated as new and processed again (at-least-once instead of
//!   exactly-once).
//! - [`Entry::InProgress`] entries are never evicted, because dropping one
//!   would let a retransmission start a second concurrent processing of the
//!   same request. When nothing is evictable the call returns
//!   [`Lookup::Full`] with [`Limit::Total`]; the caller should answer
//!   5.03 Service Unavailable rather than process the request untracked.
//!
//! # Complexity
//!
//! All operations are amortised O(1). Expiry is lazy: each call that takes a
//! `now` pops expired entries from the front of per-kind insertion-order
//! queues (one queue per kind suffices because each kind has one constant
//! lifetime). Queue records made stale by [`DedupCache::forget`], eviction
//! or expiry are skipped when reached, and the queues are compacted when
//! stale records outnumber live entries, so memory stays proportional to the
//! number of live entries.
//!
//! The maps use the standard library's randomly keyed SipHash on purpose:
//! peers control both the port and the message id, and a fixed fast hash
//! would let them engineer collisions (HashDoS).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::params;

type Key = (SocketAddr, u16);

/// Slack added to the compaction threshold so tiny caches do not compact on every call.
const COMPACT_SLACK: usize = 64;

/// Configuration of a [`DedupCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupConfig {
    /// How long a Confirmable exchange is remembered (RFC default: `EXCHANGE_LIFETIME`, 247 s).
    pub lifetime_con: Duration,
    /// How long a Non-confirmable exchange is remembered (RFC default: `NON_LIFETIME`, 145 s).
    pub lifetime_non: Duration,
    /// Maximum number of entries across all peers.
    pub max_entries: usize,
    /// Maximum number of entries for a single peer address.
    pub max_entries_per_peer: usize,
}

impl Default for DedupConfig {
    /// RFC lifetimes, 65 536 entries in total and 1 024 per peer. A peer
    /// sending one message per 250 ms stays below the per-peer bound for the
    /// full 247 s exchange lifetime.
    fn default() -> Self {
        DedupConfig {
            lifetime_con: params::EXCHANGE_LIFETIME,
            lifetime_non: params::NON_LIFETIME,
            max_entries: 65_536,
            max_entries_per_peer: 1_024,
        }
    }
}

/// State of a remembered exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// The request was accepted and its response is not known yet.
    InProgress,
    /// The encoded response to resend for any duplicate.
    Done(Arc<[u8]>),
}

/// Which bound made [`DedupCache::check_and_insert`] refuse a new exchange,
/// so the server can log or count the two situations separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// This peer already has `max_entries_per_peer` live entries.
    PerPeer,
    /// The cache holds `max_entries` entries and none is evictable.
    Total,
}

/// Result of [`DedupCache::check_and_insert`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// First time seen; now tracked as [`Entry::InProgress`]. Process it,
    /// then call [`DedupCache::complete`] or [`DedupCache::forget`].
    New,
    /// Duplicate of a request still being processed; drop it (the eventual
    /// response will answer the peer).
    InProgress,
    /// Duplicate of a completed exchange; resend these bytes unchanged.
    Replay(Arc<[u8]>),
    /// The exchange cannot be tracked right now; answer 5.03 instead of processing.
    Full(Limit),
}

#[derive(Debug)]
struct Slot {
    entry: Entry,
    inserted: Instant,
    /// Unique per insertion, so queue records left behind by a removed slot
    /// are not mistaken for a later slot with the same key.
    id: u64,
}

/// The deduplication cache; see the [module documentation](self) for the policy.
#[derive(Debug)]
pub struct DedupCache {
    config: DedupConfig,
    slots: HashMap<Key, Slot>,
    per_peer: HashMap<SocketAddr, u32>,
    con_queue: VecDeque<(Key, u64)>,
    non_queue: VecDeque<(Key, u64)>,
    done_queue: VecDeque<(Key, u64)>,
    next_id: u64,
}

fn decrement_peer(per_peer: &mut HashMap<SocketAddr, u32>, peer: SocketAddr) {
    if let Some(count) = per_peer.get_mut(&peer) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            per_peer.remove(&peer);
        }
    }
}

/// Pops expired and stale records from the front of one insertion-order queue.
fn purge_queue(
    queue: &mut VecDeque<(Key, u64)>,
    lifetime: Duration,
    slots: &mut HashMap<Key, Slot>,
    per_peer: &mut HashMap<SocketAddr, u32>,
    now: Instant,
) -> usize {
    let mut removed = 0;
    while let Some(&(key, id)) = queue.front() {
        if let Some(slot) = slots.get(&key) {
            if slot.id == id {
                if now.saturating_duration_since(slot.inserted) < lifetime {
                    break;
                }
                slots.remove(&key);
                decrement_peer(per_peer, key.0);
                removed += 1;
            }
        }
        queue.pop_front();
    }
    removed
}

impl DedupCache {
    /// Creates an empty cache.
    pub fn new(config: DedupConfig) -> DedupCache {
        DedupCache {
            config,
            slots: HashMap::new(),
            per_peer: HashMap::new(),
            con_queue: VecDeque::new(),
            non_queue: VecDeque::new(),
            done_queue: VecDeque::new(),
            next_id: 0,
        }
    }

    /// The configuration the cache was created with.
    pub fn config(&self) -> &DedupConfig {
        &self.config
    }

    /// Number of live entries (expired ones may still be counted until the next call with `now`).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True if no entry is held.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Number of entries held for `peer`.
    pub fn peer_len(&self, peer: &SocketAddr) -> usize {
        self.per_peer.get(peer).map_or(0, |&c| c as usize)
    }

    /// The entry for `(peer, message_id)`, without checking expiry.
    pub fn get(&self, peer: SocketAddr, message_id: u16) -> Option<&Entry> {
        self.slots.get(&(peer, message_id)).map(|s| &s.entry)
    }

    /// Looks up an incoming message and, if it is new, starts tracking it as
    /// [`Entry::InProgress`].
    ///
    /// `confirmable` selects the lifetime. Expired entries are dropped first,
    /// so a message id reused after its lifetime counts as new.
    pub fn check_and_insert(
        &mut self,
        peer: SocketAddr,
        message_id: u16,
        confirmable: bool,
        now: Instant,
    ) -> Lookup {
        self.purge_expired(now);
        let key = (peer, message_id);
        if let Some(slot) = self.slots.get(&key) {
            return match &slot.entry {
                Entry::InProgress => Lookup::InProgress,
                Entry::Done(bytes) => Lookup::Replay(Arc::clone(bytes)),
            };
        }
        if self.peer_len(&peer) >= self.config.max_entries_per_peer {
            return Lookup::Full(Limit::PerPeer);
        }
        if self.slots.len() >= self.config.max_entries && !self.evict_oldest_done() {
            return Lookup::Full(Limit::Total);
        }

        let id = self.next_id;
        self.next_id += 1;
        self.slots.insert(
            key,
            Slot {
                entry: Entry::InProgress,
                inserted: now,
                id,
            },
        );
        *self.per_peer.entry(peer).or_insert(0) += 1;
        if confirmable {
            self.con_queue.push_back((key, id));
        } else {
            self.non_queue.push_back((key, id));
        }
        self.maybe_compact();
        Lookup::New
    }

    /// Records the encoded response for an exchange so duplicates can be
    /// answered with [`Lookup::Replay`]. Calling it again replaces the bytes.
    ///
    /// Returns `false` if the exchange is no longer tracked (it expired or
    /// was forgotten); the response should still be sent.
    pub fn complete(&mut self, peer: SocketAddr, message_id: u16, response: Arc<[u8]>) -> bool {
        let key = (peer, message_id);
        let Some(slot) = self.slots.get_mut(&key) else {
            return false;
        };
        let was_in_progress = matches!(slot.entry, Entry::InProgress);
        slot.entry = Entry::Done(response);
        if was_in_progress {
            self.done_queue.push_back((key, slot.id));
            self.maybe_compact();
        }
        true
    }

    /// Stops tracking an exchange, so that a retransmission is processed
    /// again (e.g. after a transient failure that was not answered).
    /// Returns whether it was tracked.
    pub fn forget(&mut self, peer: SocketAddr, message_id: u16) -> bool {
        if self.slots.remove(&(peer, message_id)).is_some() {
            decrement_peer(&mut self.per_peer, peer);
            true
        } else {
            false
        }
    }

    /// Drops every entry whose lifetime has elapsed at `now`; returns how many.
    ///
    /// Called automatically by [`DedupCache::check_and_insert`]; a server may
    /// also call it from a periodic tick so memory is released while idle.
    pub fn purge_expired(&mut self, now: Instant) -> usize {
        purge_queue(
            &mut self.con_queue,
            self.config.lifetime_con,
            &mut self.slots,
            &mut self.per_peer,
            now,
        ) + purge_queue(
            &mut self.non_queue,
            self.config.lifetime_non,
            &mut self.slots,
            &mut self.per_peer,
            now,
        )
    }

    /// Evicts the oldest completed entry; `false` if there is none.
    fn evict_oldest_done(&mut self) -> bool {
        while let Some((key, id)) = self.done_queue.pop_front() {
            let live_done = self
                .slots
                .get(&key)
                .is_some_and(|s| s.id == id && matches!(s.entry, Entry::Done(_)));
            if live_done {
                self.slots.remove(&key);
                decrement_peer(&mut self.per_peer, key.0);
                return true;
            }
        }
        false
    }

    /// Drops stale queue records once they outnumber live entries, keeping
    /// queue memory proportional to `len()` at amortised O(1) cost.
    fn maybe_compact(&mut self) {
        let limit = 2 * self.slots.len() + COMPACT_SLACK;
        let slots = &self.slots;
        let live = |&(key, id): &(Key, u64)| slots.get(&key).is_some_and(|s| s.id == id);
        for queue in [
            &mut self.con_queue,
            &mut self.non_queue,
            &mut self.done_queue,
        ] {
            if queue.len() > limit {
                queue.retain(live);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, n], 5683))
    }

    fn bytes(b: &[u8]) -> Arc<[u8]> {
        Arc::from(b)
    }

    fn config(max_entries: usize, max_entries_per_peer: usize) -> DedupConfig {
        DedupConfig {
            lifetime_con: Duration::from_secs(247),
            lifetime_non: Duration::from_secs(145),
            max_entries,
            max_entries_per_peer,
        }
    }

    #[test]
    fn new_then_in_progress_then_replay() {
        let mut cache = DedupCache::new(DedupConfig::default());
        let t0 = Instant::now();
        assert_eq!(cache.check_and_insert(peer(1), 7, true, t0), Lookup::New);
        assert_eq!(cache.get(peer(1), 7), Some(&Entry::InProgress));
        assert_eq!(
            cache.check_and_insert(peer(1), 7, true, t0 + Duration::from_secs(1)),
            Lookup::InProgress
        );
        assert!(cache.complete(peer(1), 7, bytes(b"\x60\x44\x00\x07")));
        assert_eq!(
            cache.check_and_insert(peer(1), 7, true, t0 + Duration::from_secs(2)),
            Lookup::Replay(bytes(b"\x60\x44\x00\x07"))
        );
        // Same message id from another peer, or another id from the same peer, is new.
        assert_eq!(cache.check_and_insert(peer(2), 7, true, t0), Lookup::New);
        assert_eq!(cache.check_and_insert(peer(1), 8, false, t0), Lookup::New);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.peer_len(&peer(1)), 2);
    }

    #[test]
    fn complete_replaces_and_unknown_complete_is_false() {
        let mut cache = DedupCache::new(DedupConfig::default());
        let t0 = Instant::now();
        assert!(!cache.complete(peer(1), 1, bytes(b"a")));
        cache.check_and_insert(peer(1), 1, true, t0);
        assert!(cache.complete(peer(1), 1, bytes(b"a")));
        assert!(cache.complete(peer(1), 1, bytes(b"b")));
        assert_eq!(
            cache.check_and_insert(peer(1), 1, true, t0),
            Lookup::Replay(bytes(b"b"))
        );
        assert_eq!(cache.done_queue.len(), 1);
    }

    #[test]
    fn entries_expire_after_their_lifetime() {
        let mut cache = DedupCache::new(config(100, 100));
        let t0 = Instant::now();
        assert_eq!(cache.check_and_insert(peer(1), 1, true, t0), Lookup::New);
        assert_eq!(cache.check_and_insert(peer(1), 2, false, t0), Lookup::New);
        cache.complete(peer(1), 1, bytes(b"con"));
        cache.complete(peer(1), 2, bytes(b"non"));

        let just_before_non = t0 + Duration::from_secs(145) - Duration::from_millis(1);
        assert_eq!(cache.purge_expired(just_before_non), 0);
        assert_eq!(
            cache.check_and_insert(peer(1), 2, false, just_before_non),
            Lookup::Replay(bytes(b"non"))
        );

        let non_expired = t0 + Duration::from_secs(145);
        assert_eq!(cache.purge_expired(non_expired), 1);
        assert_eq!(cache.len(), 1);
        assert_eq!(
            cache.check_and_insert(peer(1), 1, true, non_expired),
            Lookup::Replay(bytes(b"con"))
        );

        let con_expired = t0 + Duration::from_secs(247);
        assert_eq!(
            cache.check_and_insert(peer(1), 1, true, con_expired),
            Lookup::New
        );
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.peer_len(&peer(1)), 1);

        assert_eq!(
            cache.purge_expired(con_expired + Duration::from_secs(247)),
            1
        );
        assert!(cache.is_empty());
        assert!(cache.per_peer.is_empty());
    }

    #[test]
    fn per_peer_bound_only_affects_that_peer() {
        let mut cache = DedupCache::new(config(100, 3));
        let t0 = Instant::now();
        for mid in 0..3 {
            assert_eq!(cache.check_and_insert(peer(1), mid, true, t0), Lookup::New);
        }
        assert_eq!(
            cache.check_and_insert(peer(1), 3, true, t0),
            Lookup::Full(Limit::PerPeer)
        );
        // Duplicates are still recognised when the peer is at its bound.
        assert_eq!(
            cache.check_and_insert(peer(1), 0, true, t0),
            Lookup::InProgress
        );
        assert_eq!(cache.check_and_insert(peer(2), 3, true, t0), Lookup::New);
        // Forgetting frees a per-peer slot.
        assert!(cache.forget(peer(1), 1));
        assert_eq!(cache.check_and_insert(peer(1), 3, true, t0), Lookup::New);
        assert_eq!(cache.peer_len(&peer(1)), 3);
    }

    #[test]
    fn total_bound_evicts_oldest_done_and_never_in_progress() {
        let mut cache = DedupCache::new(config(3, 10));
        let t0 = Instant::now();
        for mid in 0..3 {
            assert_eq!(cache.check_and_insert(peer(1), mid, true, t0), Lookup::New);
        }
        // All in progress: nothing evictable.
        assert_eq!(
            cache.check_and_insert(peer(2), 0, true, t0),
            Lookup::Full(Limit::Total)
        );
        // Complete 2 then 1: 2 is the oldest Done entry.
        cache.complete(peer(1), 2, bytes(b"two"));
        cache.complete(peer(1), 1, bytes(b"one"));
        assert_eq!(cache.check_and_insert(peer(2), 0, true, t0), Lookup::New);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(peer(1), 2), None);
        assert_eq!(cache.get(peer(1), 1), Some(&Entry::Done(bytes(b"one"))));
        assert_eq!(cache.get(peer(1), 0), Some(&Entry::InProgress));
        assert_eq!(cache.check_and_insert(peer(2), 1, true, t0), Lookup::New);
        assert_eq!(cache.get(peer(1), 1), None);
        assert_eq!(
            cache.check_and_insert(peer(2), 2, true, t0),
            Lookup::Full(Limit::Total)
        );
        assert_eq!(cache.peer_len(&peer(1)), 1);
        assert_eq!(cache.peer_len(&peer(2)), 2);
    }

    #[test]
    fn full_cache_prefers_expiry_over_eviction() {
        let mut cache = DedupCache::new(config(2, 10));
        let t0 = Instant::now();
        cache.check_and_insert(peer(1), 0, false, t0);
        cache.check_and_insert(peer(1), 1, true, t0 + Duration::from_secs(100));
        cache.complete(peer(1), 1, bytes(b"one"));
        let later = t0 + Duration::from_secs(150);
        assert_eq!(cache.check_and_insert(peer(1), 2, true, later), Lookup::New);
        assert_eq!(cache.get(peer(1), 0), None);
        assert_eq!(cache.get(peer(1), 1), Some(&Entry::Done(bytes(b"one"))));
    }

    #[test]
    fn forget_allows_retry_and_ignores_stale_queue_records() {
        let mut cache = DedupCache::new(config(100, 100));
        let t0 = Instant::now();
        assert_eq!(cache.check_and_insert(peer(1), 5, true, t0), Lookup::New);
        assert!(cache.forget(peer(1), 5));
        assert!(!cache.forget(peer(1), 5));
        assert!(cache.is_empty());
        assert!(cache.per_peer.is_empty());
        // The retry is new and gets its own lifetime; the stale record of the
        // first insertion must not expire it early.
        let t1 = t0 + Duration::from_secs(200);
        assert_eq!(cache.check_and_insert(peer(1), 5, true, t1), Lookup::New);
        assert_eq!(cache.purge_expired(t0 + Duration::from_secs(300)), 0);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.purge_expired(t1 + Duration::from_secs(247)), 1);
    }

    #[test]
    fn queues_stay_bounded_under_forget_churn() {
        let mut cache = DedupCache::new(config(100, 100));
        let t0 = Instant::now();
        for i in 0..100_000u32 {
            let mid = (i % 65_536) as u16;
            assert_eq!(
                cache.check_and_insert(peer(1), mid, i % 2 == 0, t0),
                Lookup::New
            );
            cache.complete(peer(1), mid, bytes(b"x"));
            cache.forget(peer(1), mid);
        }
        assert!(cache.is_empty());
        // Compaction runs while one entry is live, so queues never exceed 2 * 1 + slack.
        let limit = COMPACT_SLACK + 2;
        assert!(cache.con_queue.len() <= limit);
        assert!(cache.non_queue.len() <= limit);
        assert!(cache.done_queue.len() <= limit);
    }

    #[test]
    fn zero_bounds_always_full() {
        let t0 = Instant::now();
        let mut cache = DedupCache::new(config(0, 10));
        assert_eq!(
            cache.check_and_insert(peer(1), 0, true, t0),
            Lookup::Full(Limit::Total)
        );
        let mut cache = DedupCache::new(config(10, 0));
        assert_eq!(
            cache.check_and_insert(peer(1), 0, true, t0),
            Lookup::Full(Limit::PerPeer)
        );
    }
}

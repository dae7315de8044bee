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
//! the cache is bounded in total, per peer (socket address) and per source
//! host (IPv4 address or IPv6 /64, see [`crate::host`]), so that one source
//! cannot exhaust memory, crowd out everyone else or evict their exchanges
//! by sending from many ports.
//!
//! A retransmission repeats the message, token included, so the cache keeps each request's
//! token with its key: the same `(peer, message id)` with another token is a new request (a
//! device that restarted its numbering, or a NAT mapping handed to another device within the
//! lifetime), processed rather than answered with the old exchange's response.
//!
//! # Bounds and eviction
//!
//! - A peer holding `max_entries_per_peer` live entries gets [`Lookup::Full`]
//!   with [`Limit::PerPeer`] until some of its entries expire or are
//!   forgotten; other peers are unaffected.
//! - A host holding `max_entries_per_host` live entries (over all its ports)
//!   makes room by evicting *its own* oldest completed entry; only when it
//!   has none does it get [`Lookup::Full`] with [`Limit::PerHost`]. So a
//!   flood from one host churns that host's entries and never anyone
//!   else's: evicting another source's exchange takes `max_entries /
//!   max_entries_per_host` hosts filling their shares.
//! - When the cache holds `max_entries` entries it first drops expired ones;
//!   if it is still full it evicts the oldest *completed* ([`Entry::Done`])
//!   entry, by completion order. The oldest is chosen because retransmissions
//!   cluster within `MAX_TRANSMIT_SPAN` (45 s) of the first transmission, so
//!   it is the entry least likely to see another duplicate.
//! - [`Entry::InProgress`] entries are never evicted, because dropping one
//!   would let a retransmission start a second concurrent processing of the
//!   same request. When nothing is evictable the call returns
//!   [`Lookup::Full`] with [`Limit::Total`]; the caller should answer
//!   5.03 Service Unavailable rather than process the request untracked.
//!
//! # Committed exchanges survive eviction
//!
//! An evicted confirmable exchange that the caller marked *committed*
//! ([`DedupCache::complete_committed`]: its request's data is durably
//! stored) is not forgotten: its key (peer, message id) and arrival time
//! move to a compact index without the response bytes, for the rest of its
//! lifetime. A retransmission that finds it there gets
//! [`Lookup::Committed`], and the caller answers with the response it
//! stored with the data (for a CoAP server, the 2.01 framed for the same
//! request, which a retransmission reproduces byte for byte) without
//! processing it again. The index is bounded by `max_entries` keys too
//! (oldest dropped first, counted in [`DedupCache::committed_dropped`]);
//! at about 60 bytes a key (its token included) it costs a fraction of a full entry.
//!
//! # When memory is not enough: [`Lookup::Unsure`]
//!
//! Keys dropped from a full index, and exchanges a restart did not load
//! ([`DedupCache::mark_unsure_until`]), exist only in the caller's durable
//! log. Until their lifetime ends, the cache answers a miss that could be a
//! retransmission of one of them with [`Lookup::Unsure`] (tracked as
//! [`Entry::InProgress`], like [`Lookup::New`]): the caller looks the key up
//! in its log, off its receive path, before processing. To keep those
//! lookups rare: for a dropped key, only its own peer's misses within the
//! range of message ids dropped for it count (keys are dropped oldest first
//! and RFC 7252 §4.4 has a client number its messages in sequence, so a new
//! request is ahead of that range); after an incomplete restart, message
//! ids *behind* the newest one the peer used, or any id of a peer with
//! nothing in the cache to tell.
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
//! would let them engineer collisions (HashDoS). Their keys ([`crate::keys`])
//! hand it one word per address, not the derived `Hash`'s four writes.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::host::source_host;
use crate::keys::{ExchangeKey, HostKey, PeerKey};
use crate::message::Token;
use crate::params;

type Key = ExchangeKey;

/// Slack added to the compaction threshold so tiny caches do not compact on every call.
const COMPACT_SLACK: usize = 64;

/// Configuration of a [`DedupCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupConfig {
    /// How long a Confirmable exchange is remembered (RFC default: `EXCHANGE_LIFETIME`, 247 s).
    pub lifetime_con: Duration,
    /// How long a Non-confirmable exchange is remembered (RFC default: `NON_LIFETIME`, 145 s).
    pub lifetime_non: Duration,
    /// Maximum number of entries across all peers (and of keys in the committed index).
    pub max_entries: usize,
    /// Maximum number of entries for a single peer address.
    pub max_entries_per_peer: usize,
    /// Maximum number of entries for one source host, all its ports together; above it the
    /// host's own oldest completed entry is evicted.
    pub max_entries_per_host: usize,
}

impl Default for DedupConfig {
    /// RFC lifetimes, 65 536 entries in total, 16 384 per host and 1 024 per peer. A peer
    /// sending one message per 250 ms stays below the per-peer bound for the
    /// full 247 s exchange lifetime.
    fn default() -> Self {
        DedupConfig {
            lifetime_con: params::EXCHANGE_LIFETIME,
            lifetime_non: params::NON_LIFETIME,
            max_entries: 65_536,
            max_entries_per_peer: 1_024,
            max_entries_per_host: 16_384,
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

/// Which bound made [`DedupCache::check_request`] refuse a new exchange,
/// so the server can log or count the situations separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// This peer already has `max_entries_per_peer` live entries.
    PerPeer,
    /// This peer's host already has `max_entries_per_host` live entries, none of them evictable.
    PerHost,
    /// The cache holds `max_entries` entries and none is evictable.
    Total,
}

/// Result of [`DedupCache::check_request`].
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
    /// Duplicate of a committed exchange whose entry was evicted (only its key is
    /// left): answer with the response stored with its data, and do not process it.
    Committed,
    /// Not in memory, but possibly a retransmission of a committed exchange that only the
    /// caller's durable log still knows (see the module documentation); tracked as
    /// [`Entry::InProgress`]. Look it up there: if found, answer with the stored response and
    /// [`DedupCache::complete_committed`]; if not, process it as [`Lookup::New`].
    Unsure,
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
    /// The request's data is durably stored: on eviction the key moves to the committed index.
    committed: bool,
    confirmable: bool,
    /// The request's token: a retransmission repeats it (see [`DedupCache::check_request`]).
    token: Token,
}

/// What is counted per peer and per host, each in one map entry so that an uplink looks each
/// up once or twice rather than once per counter (hashing was a quarter of the receive thread).
#[derive(Debug, Default)]
struct Counts {
    peers: HashMap<PeerKey, PeerCount>,
    hosts: HashMap<HostKey, HostCount>,
}

/// A peer with live entries.
#[derive(Debug)]
struct PeerCount {
    live: u32,
    /// The newest message id among them (in RFC 7252's sequence order).
    last_mid: u16,
}

/// A host with live entries, and its completed entries in completion order (dropped with the
/// host's last entry, so hosts that went quiet cost nothing).
#[derive(Debug, Default)]
struct HostCount {
    live: u32,
    done: VecDeque<(Key, u64)>,
}

impl Counts {
    fn add(&mut self, peer: SocketAddr, message_id: u16) {
        let host = HostKey(source_host(peer));
        let count = self.peers.entry(PeerKey(peer)).or_insert(PeerCount {
            live: 0,
            last_mid: message_id,
        });
        if is_behind(count.last_mid, message_id) {
            count.last_mid = message_id;
        }
        count.live += 1;
        self.hosts.entry(host).or_default().live += 1;
    }

    fn remove(&mut self, peer: SocketAddr) {
        let host = HostKey(source_host(peer));
        if let MapEntry::Occupied(mut count) = self.peers.entry(PeerKey(peer)) {
            count.get_mut().live = count.get().live.saturating_sub(1);
            if count.get().live == 0 {
                count.remove();
            }
        }
        if let MapEntry::Occupied(mut count) = self.hosts.entry(host) {
            count.get_mut().live = count.get().live.saturating_sub(1);
            if count.get().live == 0 {
                count.remove();
            }
        }
    }

    fn host(&self, host: IpAddr) -> usize {
        self.hosts
            .get(&HostKey(host))
            .map_or(0, |h| h.live as usize)
    }
}

/// Whether message id `a` comes before `b` in a peer's sequence (16-bit serial arithmetic).
fn is_behind(a: u16, b: u16) -> bool {
    let ahead = b.wrapping_sub(a);
    ahead != 0 && ahead < 0x8000
}

/// Most peers whose dropped message ids are tracked; beyond it every miss that could be a
/// retransmission is unsure until the dropped keys expire.
const MAX_UNSURE_PEERS: usize = 65_536;

/// The message ids of a peer's committed keys dropped from the full index, as the range they
/// span in sequence order (they are dropped oldest first), and until when any may come back.
#[derive(Debug, Clone, Copy)]
struct Dropped {
    first: u16,
    last: u16,
    until: Instant,
}

impl Dropped {
    fn contains(&self, message_id: u16) -> bool {
        message_id.wrapping_sub(self.first) <= self.last.wrapping_sub(self.first)
    }
}

/// Keys of evicted committed exchanges, with their arrival time, oldest first.
#[derive(Debug)]
struct CommittedIndex {
    /// Arrival time and the request's token, per key.
    keys: HashMap<Key, (Instant, Token)>,
    order: VecDeque<(Key, Instant)>,
    dropped: u64,
    /// How many of `keys` each peer holds, to find the peers worth a [`DensePeer`].
    per_peer: HashMap<PeerKey, u32>,
    /// Peers with a table of every message id instead of entries in `keys`.
    dense: HashMap<PeerKey, DensePeer>,
    /// A peer with this many keys in `keys` gets a [`DensePeer`] (if fewer than `max_dense`
    /// peers have one).
    dense_at: u32,
    max_dense: usize,
    /// Origin of [`DenseSlot::at`].
    epoch: Instant,
    /// When the dense tables were last swept for peers whose every key expired.
    swept: Instant,
}

/// The committed keys of one busy peer: a slot per message id, so the peer's keys are never
/// dropped however many it sends. A peer that sends faster than 65,536 messages per
/// EXCHANGE_LIFETIME (about 265 a second, beyond RFC 7252 §4.4, which forbids reusing an id
/// within it) would otherwise push its own keys (and everyone's) out of `keys`; every
/// later request of its reused ids would be unsure and need the durable log, which has no
/// index by key (an index costs a random page write per uplink): a full scan each, so such a
/// peer brought the server down to a few uplinks a second. 16 bytes a slot, 1 MiB a peer
/// (a sparse key costs about 60 bytes, so from `dense_at` keys on it holds the same keys
/// in at most four times the memory, and never more than 1 MiB, where the sparse index would
/// grow to 3.9 MiB).
#[derive(Debug)]
struct DensePeer {
    slots: Box<[DenseSlot]>,
    /// [`DenseSlot::at`] of its newest key: once that expires, the table goes.
    newest: u32,
}

impl DensePeer {
    fn set(&mut self, message_id: u16, token: Token, at: u32) {
        self.slots[usize::from(message_id)] = DenseSlot { token, at };
        self.newest = self.newest.max(at);
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct DenseSlot {
    token: Token,
    /// Arrival in whole seconds after the index's epoch, rounded up so a key expires late,
    /// never early; 0 is an empty slot.
    at: u32,
}

impl CommittedIndex {
    fn new(max_entries: usize, now: Instant) -> CommittedIndex {
        CommittedIndex {
            keys: HashMap::new(),
            order: VecDeque::new(),
            dropped: 0,
            per_peer: HashMap::new(),
            dense: HashMap::new(),
            // 500,000 entries (serve's default): 4,096 keys, up to 122 tables (122 MiB).
            dense_at: (max_entries / 64).clamp(16, 4096) as u32,
            max_dense: (max_entries / 4096).max(2),
            epoch: now,
            swept: now,
        }
    }

    /// Seconds after the epoch, rounded up (at least 1: 0 marks an empty slot).
    fn secs(&self, at: Instant) -> u32 {
        let since = at.saturating_duration_since(self.epoch);
        u32::try_from(since.as_secs() + u64::from(since.subsec_nanos() > 0) + 1).unwrap_or(u32::MAX)
    }

    /// The token stored under `key`, if it is remembered.
    fn get(&self, key: &Key, lifetime: Duration, now: Instant) -> Option<Token> {
        if let Some(dense) = self.dense.get(&PeerKey(key.0)) {
            let slot = dense.slots[usize::from(key.1)];
            // `at` is rounded up and `now` down: the key lives at least its whole lifetime.
            let live = slot.at != 0 && u64::from(slot.at) + lifetime.as_secs() > self.secs_floor(now);
            return live.then_some(slot.token);
        }
        self.keys.get(key).map(|&(_, token)| token)
    }

    fn secs_floor(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_secs() + 1
    }

    fn remove(&mut self, key: &Key) {
        let peer = PeerKey(key.0);
        if let Some(dense) = self.dense.get_mut(&peer) {
            dense.slots[usize::from(key.1)].at = 0;
        } else if self.keys.remove(key).is_some() {
            uncount(&mut self.per_peer, peer);
        }
    }

    /// Adds a key; returns the newest key dropped to make room, with its arrival time.
    fn insert(&mut self, key: Key, inserted: Instant, token: Token, bound: usize) -> Option<(Key, Instant)> {
        let peer = PeerKey(key.0);
        if self.dense.contains_key(&peer) {
            let at = self.secs(inserted);
            self.dense.get_mut(&peer).expect("checked").set(key.1, token, at);
            return None;
        }
        let mut dropped = None;
        while self.keys.len() >= bound {
            let (old, at) = self.order.pop_front()?;
            if self.keys.get(&old).map(|v| v.0) == Some(at) {
                self.keys.remove(&old);
                uncount(&mut self.per_peer, PeerKey(old.0));
                self.dropped += 1;
                dropped = Some((old, at));
            }
        }
        if self.keys.insert(key, (inserted, token)).is_none() {
            let held = self.per_peer.entry(peer).or_insert(0);
            *held += 1;
            if *held >= self.dense_at && self.dense.len() < self.max_dense {
                self.make_dense(peer);
            }
        }
        self.order.push_back((key, inserted));
        if self.order.len() > 2 * self.keys.len() + COMPACT_SLACK {
            let keys = &self.keys;
            self.order.retain(|(k, at)| keys.get(k).map(|v| v.0) == Some(*at));
        }
        dropped
    }

    /// Moves the peer's keys from `keys` into a table of its own (their records in `order`
    /// become stale and are skipped).
    fn make_dense(&mut self, peer: PeerKey) {
        let mut dense = DensePeer { slots: vec![DenseSlot::default(); 1 << 16].into_boxed_slice(), newest: 0 };
        for id in 0..=u16::MAX {
            if let Some((inserted, token)) = self.keys.remove(&ExchangeKey(peer.0, id)) {
                dense.set(id, token, self.secs(inserted));
            }
        }
        self.per_peer.remove(&peer);
        self.dense.insert(peer, dense);
    }

    fn purge(&mut self, lifetime: Duration, now: Instant) {
        while let Some(&(key, at)) = self.order.front() {
            if now.saturating_duration_since(at) < lifetime {
                break;
            }
            if self.keys.get(&key).map(|v| v.0) == Some(at) {
                self.keys.remove(&key);
                uncount(&mut self.per_peer, PeerKey(key.0));
            }
            self.order.pop_front();
        }
        // A table goes once its newest key has expired (checked once a second: a few tables).
        if !self.dense.is_empty() && now.saturating_duration_since(self.swept) >= Duration::from_secs(1) {
            self.swept = now;
            let now = self.secs_floor(now);
            self.dense.retain(|_, d| u64::from(d.newest) + lifetime.as_secs() > now);
        }
    }
}

/// One key fewer for `peer`.
fn uncount(per_peer: &mut HashMap<PeerKey, u32>, peer: PeerKey) {
    if let MapEntry::Occupied(mut held) = per_peer.entry(peer) {
        *held.get_mut() -= 1;
        if *held.get() == 0 {
            held.remove();
        }
    }
}

/// The deduplication cache; see the [module documentation](self) for the policy.
#[derive(Debug)]
pub struct DedupCache {
    config: DedupConfig,
    slots: HashMap<Key, Slot>,
    counts: Counts,
    con_queue: VecDeque<(Key, u64)>,
    non_queue: VecDeque<(Key, u64)>,
    /// Completed entries in completion order, all hosts together and per host.
    done_queue: VecDeque<(Key, u64)>,
    committed: CommittedIndex,
    /// The committed keys of each peer dropped from the full index, which only the durable
    /// log still knows; `unsure_all` for every peer (a restart that did not load everything,
    /// or more such peers than tracked).
    unsure_peers: HashMap<PeerKey, Dropped>,
    unsure_all: Option<Instant>,
    next_id: u64,
    /// See [`DedupCache::reused_ids`].
    reused: u64,
}

/// Pops expired and stale records from the front of one insertion-order queue.
fn purge_queue(
    queue: &mut VecDeque<(Key, u64)>,
    lifetime: Duration,
    slots: &mut HashMap<Key, Slot>,
    counts: &mut Counts,
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
                counts.remove(key.0);
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
            counts: Counts::default(),
            con_queue: VecDeque::new(),
            non_queue: VecDeque::new(),
            done_queue: VecDeque::new(),
            committed: CommittedIndex::new(config.max_entries, Instant::now()),
            unsure_peers: HashMap::new(),
            unsure_all: None,
            next_id: 0,
            reused: 0,
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
        self.counts
            .peers
            .get(&PeerKey(*peer))
            .map_or(0, |p| p.live as usize)
    }

    /// Number of entries held for the host of `peer` (all its ports).
    pub fn host_len(&self, peer: &SocketAddr) -> usize {
        self.counts.host(source_host(*peer))
    }

    /// Number of evicted committed exchanges still remembered by key.
    pub fn committed_len(&self) -> usize {
        self.committed.keys.len()
    }

    /// Busy peers whose committed keys are held in a table of every message id (1 MiB each)
    /// instead of the index `committed_len` counts.
    pub fn dense_peers(&self) -> usize {
        self.committed.dense.len()
    }

    /// How many committed keys were dropped from the index before their lifetime ended,
    /// because it was full (each is a retransmission that would be processed again).
    pub fn committed_dropped(&self) -> u64 {
        self.committed.dropped
    }

    /// The entry for `(peer, message_id)`, without checking expiry.
    pub fn get(&self, peer: SocketAddr, message_id: u16) -> Option<&Entry> {
        self.slots
            .get(&ExchangeKey(peer, message_id))
            .map(|s| &s.entry)
    }

    /// Looks up an incoming message and, if it is new, starts tracking it as
    /// [`Entry::InProgress`].
    ///
    /// `confirmable` selects the lifetime. Expired entries are dropped first,
    /// so a message id reused after its lifetime counts as new.
    pub fn check_request(
        &mut self,
        peer: SocketAddr,
        message_id: u16,
        token: Token,
        confirmable: bool,
        now: Instant,
    ) -> Lookup {
        self.purge_expired(now);
        let key = ExchangeKey(peer, message_id);
        // A retransmission is the same message again (RFC 7252 §4.2), token included. The same
        // id with another token is a new request from a peer that reused the id within its
        // lifetime — a device that restarted its numbering, or a NAT mapping handed to another
        // device — and replaying the old answer (or acknowledging it unstored, from the
        // committed index) would lose it: the old exchange is over and this one starts.
        if let Some(slot) = self.slots.get(&key) {
            match &slot.entry {
                // One key holds one exchange: the newcomer retransmits and is decided then.
                Entry::InProgress => return Lookup::InProgress,
                Entry::Done(bytes) if slot.token == token => return Lookup::Replay(Arc::clone(bytes)),
                Entry::Done(_) => {
                    self.forget(peer, message_id);
                    self.reused += 1;
                }
            }
        }
        match self.committed.get(&key, self.config.lifetime_con, now) {
            Some(stored) if stored == token => return Lookup::Committed,
            Some(_) => {
                self.committed.remove(&key);
                self.reused += 1;
            }
            None => {}
        }
        // Only a CON is retransmitted, and only its id is reserved for EXCHANGE_LIFETIME.
        let unsure = confirmable && self.unsure(peer, message_id, now);
        if self.peer_len(&peer) >= self.config.max_entries_per_peer {
            return Lookup::Full(Limit::PerPeer);
        }
        let host = source_host(peer);
        if self.counts.host(host) >= self.config.max_entries_per_host
            && !self.evict_oldest_done_of(host, now)
        {
            return Lookup::Full(Limit::PerHost);
        }
        if self.slots.len() >= self.config.max_entries && !self.evict_oldest_done(now) {
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
                committed: false,
                confirmable,
                token,
            },
        );
        self.counts.add(peer, message_id);
        if confirmable {
            self.con_queue.push_back((key, id));
        } else {
            self.non_queue.push_back((key, id));
        }
        self.maybe_compact();
        if unsure { Lookup::Unsure } else { Lookup::New }
    }

    /// [`DedupCache::check_request`] for a request without a token.
    pub fn check_and_insert(&mut self, peer: SocketAddr, message_id: u16, confirmable: bool, now: Instant) -> Lookup {
        self.check_request(peer, message_id, Token::EMPTY, confirmable, now)
    }

    /// How many message ids came back with another token within their lifetime and were taken
    /// as new requests (see [`DedupCache::check_request`]).
    pub fn reused_ids(&self) -> u64 {
        self.reused
    }

    /// Declares that committed exchanges of any peer that arrived before `until - lifetime_con`
    /// may be missing from memory until `until` (e.g. a restart loaded only the newest ones).
    pub fn mark_unsure_until(&mut self, until: Instant) {
        self.unsure_all = self.unsure_all.max(Some(until));
    }

    /// Whether a miss for `(peer, message_id)` may be a retransmission of a committed exchange
    /// known only to the durable log.
    fn unsure(&mut self, peer: SocketAddr, message_id: u16, now: Instant) -> bool {
        if let Some(dropped) = self.unsure_peers.get(&PeerKey(peer)) {
            if dropped.until <= now {
                self.unsure_peers.remove(&PeerKey(peer));
            } else if dropped.contains(message_id) {
                return true;
            }
        }
        if self.unsure_all.is_some_and(|until| until <= now) {
            self.unsure_all = None;
        }
        if self.unsure_all.is_none() {
            return false;
        }
        match self.counts.peers.get(&PeerKey(peer)).map(|p| p.last_mid) {
            Some(last) => !is_behind(last, message_id),
            None => true,
        }
    }

    /// Records the encoded response for an exchange so duplicates can be
    /// answered with [`Lookup::Replay`]. Calling it again replaces the bytes.
    ///
    /// Returns `false` if the exchange is no longer tracked (it expired or
    /// was forgotten); the response should still be sent.
    pub fn complete(&mut self, peer: SocketAddr, message_id: u16, response: Arc<[u8]>) -> bool {
        self.complete_as(peer, message_id, response, false)
    }

    /// Like [`DedupCache::complete`], for an exchange whose request is durably committed: if the
    /// entry is evicted before its lifetime ends, its key stays in the committed index and a
    /// retransmission gets [`Lookup::Committed`] instead of being processed again.
    pub fn complete_committed(
        &mut self,
        peer: SocketAddr,
        message_id: u16,
        response: Arc<[u8]>,
    ) -> bool {
        self.complete_as(peer, message_id, response, true)
    }

    /// Marks a tracked exchange as committed without changing its response (e.g. one answered
    /// with an empty ACK and then a separate response). Returns whether it was tracked.
    pub fn mark_committed(&mut self, peer: SocketAddr, message_id: u16) -> bool {
        self.slots
            .get_mut(&ExchangeKey(peer, message_id))
            .map(|slot| slot.committed = true)
            .is_some()
    }

    fn complete_as(
        &mut self,
        peer: SocketAddr,
        message_id: u16,
        response: Arc<[u8]>,
        committed: bool,
    ) -> bool {
        let key = ExchangeKey(peer, message_id);
        let Some(slot) = self.slots.get_mut(&key) else {
            return false;
        };
        let was_in_progress = matches!(slot.entry, Entry::InProgress);
        slot.entry = Entry::Done(response);
        slot.committed |= committed;
        if was_in_progress {
            let record = (key, slot.id);
            self.done_queue.push_back(record);
            // A live slot's host is counted, so its entry is there.
            if let Some(host) = self.counts.hosts.get_mut(&HostKey(source_host(peer))) {
                host.done.push_back(record);
                if host.done.len() > 2 * host.live as usize + COMPACT_SLACK {
                    let slots = &self.slots;
                    host.done
                        .retain(|&(key, id)| slots.get(&key).is_some_and(|s| s.id == id));
                }
            }
            self.maybe_compact();
        }
        true
    }

    /// Stops tracking an exchange, so that a retransmission is processed
    /// again (e.g. after a transient failure that was not answered).
    /// Returns whether it was tracked.
    pub fn forget(&mut self, peer: SocketAddr, message_id: u16) -> bool {
        if self.slots.remove(&ExchangeKey(peer, message_id)).is_some() {
            self.counts.remove(peer);
            true
        } else {
            false
        }
    }

    /// Drops every entry whose lifetime has elapsed at `now`; returns how many.
    ///
    /// Called automatically by [`DedupCache::check_request`]; a server may
    /// also call it from a periodic tick so memory is released while idle.
    pub fn purge_expired(&mut self, now: Instant) -> usize {
        self.committed.purge(self.config.lifetime_con, now);
        purge_queue(
            &mut self.con_queue,
            self.config.lifetime_con,
            &mut self.slots,
            &mut self.counts,
            now,
        ) + purge_queue(
            &mut self.non_queue,
            self.config.lifetime_non,
            &mut self.slots,
            &mut self.counts,
            now,
        )
    }

    /// Evicts the oldest completed entry; `false` if there is none.
    fn evict_oldest_done(&mut self, now: Instant) -> bool {
        while let Some(record) = self.done_queue.pop_front() {
            if self.evict_if_live_done(record, now) {
                return true;
            }
        }
        false
    }

    /// Evicts the oldest completed entry of `host`; `false` if it has none.
    fn evict_oldest_done_of(&mut self, host: IpAddr, now: Instant) -> bool {
        // Taken out while evicting (which updates the counts), put back if the host is left.
        let Some(mut queue) = self
            .counts
            .hosts
            .get_mut(&HostKey(host))
            .map(|h| std::mem::take(&mut h.done))
        else {
            return false;
        };
        let mut evicted = false;
        while let Some(record) = queue.pop_front() {
            if self.evict_if_live_done(record, now) {
                evicted = true;
                break;
            }
        }
        if let Some(left) = self.counts.hosts.get_mut(&HostKey(host)) {
            left.done = queue;
        }
        evicted
    }

    /// Removes the entry of a queue record if it is still that completed entry; a committed
    /// one within its lifetime leaves its key in the committed index.
    fn evict_if_live_done(&mut self, (key, id): (Key, u64), now: Instant) -> bool {
        let live_done = self
            .slots
            .get(&key)
            .is_some_and(|s| s.id == id && matches!(s.entry, Entry::Done(_)));
        if !live_done {
            return false;
        }
        let Some(slot) = self.slots.remove(&key) else {
            return false;
        };
        self.counts.remove(key.0);
        // Only a CON is retransmitted (a NON's duplicates are the network's, within moments),
        // and a NON's id may be reused after NON_LIFETIME, so only CONs leave their key.
        let live = now.saturating_duration_since(slot.inserted) < self.config.lifetime_con;
        if slot.committed && slot.confirmable && live {
            if let Some((dropped, at)) =
                self.committed
                    .insert(key, slot.inserted, slot.token, self.config.max_entries.max(1))
            {
                // That key now lives only in the durable log, for the rest of its lifetime.
                let until = at + self.config.lifetime_con;
                let ExchangeKey(peer, message_id) = dropped;
                let peer = PeerKey(peer);
                if self.unsure_peers.len() >= MAX_UNSURE_PEERS
                    && !self.unsure_peers.contains_key(&peer)
                {
                    self.unsure_peers.retain(|_, d| d.until > now);
                }
                if self.unsure_peers.len() >= MAX_UNSURE_PEERS
                    && !self.unsure_peers.contains_key(&peer)
                {
                    self.mark_unsure_until(until);
                } else {
                    let range = self.unsure_peers.entry(peer).or_insert(Dropped {
                        first: message_id,
                        last: message_id,
                        until,
                    });
                    if is_behind(range.last, message_id) {
                        range.last = message_id;
                    }
                    range.until = range.until.max(until);
                }
            }
        }
        true
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
            max_entries_per_host: usize::MAX,
        }
    }

    fn on(host: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, host], port))
    }

    #[test]
    fn a_flood_from_many_ports_of_one_host_evicts_only_that_host() {
        // The attack in small: the cache holds 100, a host 25; one host floods from
        // 40 ports (each answered at once, so each entry is evictable).
        let mut cache = DedupCache::new(DedupConfig {
            max_entries_per_host: 25,
            ..config(100, 1000)
        });
        let t0 = Instant::now();
        let device = on(3, 40000);
        assert_eq!(cache.check_and_insert(device, 1, true, t0), Lookup::New);
        cache.complete(device, 1, bytes(b"created"));
        for i in 0..600u32 {
            let attacker = on(2, 1000 + (i % 40) as u16);
            assert_eq!(
                cache.check_and_insert(attacker, (i / 40) as u16, true, t0),
                Lookup::New
            );
            cache.complete(attacker, (i / 40) as u16, bytes(b"4.05"));
            assert!(cache.host_len(&attacker) <= 25);
        }
        assert_eq!(
            cache.check_and_insert(device, 1, true, t0),
            Lookup::Replay(bytes(b"created"))
        );
        // A host whose share is all in progress is refused, others are not.
        let mut cache = DedupCache::new(DedupConfig {
            max_entries_per_host: 2,
            ..config(100, 1000)
        });
        cache.check_and_insert(on(2, 1), 1, true, t0);
        cache.check_and_insert(on(2, 2), 1, true, t0);
        assert_eq!(
            cache.check_and_insert(on(2, 3), 1, true, t0),
            Lookup::Full(Limit::PerHost)
        );
        assert_eq!(cache.check_and_insert(on(3, 3), 1, true, t0), Lookup::New);
    }

    #[test]
    fn an_evicted_committed_exchange_is_still_recognised_until_its_lifetime_ends() {
        let mut cache = DedupCache::new(config(2, 10));
        let t0 = Instant::now();
        cache.check_and_insert(peer(1), 1, true, t0);
        assert!(cache.complete_committed(peer(1), 1, bytes(b"2.01")));
        cache.check_and_insert(peer(1), 2, true, t0);
        assert!(cache.complete(peer(1), 2, bytes(b"4.00")));
        // Two more exchanges evict both; only the committed one leaves its key behind.
        for mid in [3, 4] {
            assert_eq!(cache.check_and_insert(peer(2), mid, true, t0), Lookup::New);
            cache.complete(peer(2), mid, bytes(b"x"));
        }
        assert_eq!(cache.get(peer(1), 1), None);
        assert_eq!(cache.committed_len(), 1);
        let t1 = t0 + Duration::from_secs(100);
        assert_eq!(
            cache.check_and_insert(peer(1), 1, true, t1),
            Lookup::Committed
        );
        assert_eq!(
            cache.check_and_insert(peer(1), 1, true, t1),
            Lookup::Committed,
            "stays"
        );
        // The rejected one is processed again, as before.
        assert_eq!(cache.check_and_insert(peer(1), 2, true, t1), Lookup::New);
        // After EXCHANGE_LIFETIME the message id is new again.
        let t2 = t0 + Duration::from_secs(247);
        assert_eq!(cache.check_and_insert(peer(1), 1, true, t2), Lookup::New);
        assert_eq!(cache.committed_len(), 0);
    }

    #[test]
    fn mark_committed_keeps_an_empty_ack_exchange_in_the_index() {
        let mut cache = DedupCache::new(config(1, 10));
        let t0 = Instant::now();
        cache.check_and_insert(peer(1), 1, true, t0);
        cache.complete(peer(1), 1, bytes(b"empty ack"));
        assert!(cache.mark_committed(peer(1), 1));
        cache.check_and_insert(peer(2), 1, true, t0);
        assert_eq!(
            cache.check_and_insert(peer(1), 1, true, t0),
            Lookup::Committed
        );
        // A committed NON leaves nothing behind: its id may be reused after NON_LIFETIME.
        cache.complete(peer(2), 1, bytes(b"x"));
        assert_eq!(cache.check_and_insert(peer(3), 1, false, t0), Lookup::New);
        cache.complete_committed(peer(3), 1, bytes(b"2.01"));
        assert_eq!(cache.check_and_insert(peer(4), 1, true, t0), Lookup::New);
        cache.complete(peer(4), 1, bytes(b"x"));
        assert_eq!(cache.check_and_insert(peer(3), 1, false, t0), Lookup::New);
    }

    #[test]
    fn the_committed_index_is_bounded() {
        let mut cache = DedupCache::new(config(3, 100));
        let t0 = Instant::now();
        for mid in 0..50 {
            cache.check_and_insert(peer(1), mid, true, t0);
            cache.complete_committed(peer(1), mid, bytes(b"2.01"));
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.committed_len(), 3);
        assert_eq!(cache.committed_dropped(), 44);
        assert_eq!(
            cache.check_and_insert(peer(1), 46, true, t0),
            Lookup::Committed
        );
        // Dropped keys are left to the durable log: an id behind the peer's newest one may be
        // a retransmission, an id ahead of it is a new request.
        assert_eq!(
            cache.check_and_insert(peer(1), 40, true, t0),
            Lookup::Unsure
        );
        assert_eq!(cache.check_and_insert(peer(1), 50, true, t0), Lookup::New);
        // Another host is not concerned; after the lifetime no one is.
        assert_eq!(cache.check_and_insert(peer(2), 40, true, t0), Lookup::New);
        let later = t0 + Duration::from_secs(247);
        assert_eq!(
            cache.check_and_insert(peer(1), 41, true, later),
            Lookup::New
        );
    }

    /// A peer that reuses its message ids within their lifetime (faster than about 265 a
    /// second) gets a table of every id: none of its keys is dropped, so none of its requests
    /// needs the durable log, and its flood no longer pushes a quiet peer's keys out.
    #[test]
    fn a_busy_peer_gets_a_table_of_every_message_id() {
        let mut cache = DedupCache::new(config(1000, 100_000));
        let t0 = Instant::now();
        let (busy, quiet) = (peer(1), peer(2));
        assert_eq!(cache.check_request(quiet, 7, token(b"q"), true, t0), Lookup::New);
        assert!(cache.complete_committed(quiet, 7, bytes(b"2.01")));
        // 70,000 requests in 70 s: ids 0..4463 come back with new tokens within their lifetime.
        let sent = 70_000u32;
        let token_of = |n: u32| token(&n.to_be_bytes());
        for n in 0..sent {
            let at = t0 + Duration::from_millis(u64::from(n));
            let lookup = cache.check_request(busy, n as u16, token_of(n), true, at);
            assert_eq!(lookup, Lookup::New, "request {n}");
            assert!(cache.complete_committed(busy, n as u16, bytes(b"2.01")));
        }
        let end = t0 + Duration::from_millis(u64::from(sent));
        assert_eq!(cache.dense_peers(), 1);
        assert_eq!(cache.reused_ids(), u64::from(sent) - 65_536);
        assert_eq!(cache.committed_dropped(), 0, "the busy peer's keys left the index for its table");
        // Its newest exchange of an id is a retransmission; an older token of it is not.
        let recent = sent - 2000;
        assert_eq!(cache.check_request(busy, recent as u16, token_of(recent), true, end), Lookup::Committed);
        assert_eq!(cache.check_request(busy, 100, token_of(100 + 65_536), true, end), Lookup::Committed);
        assert_eq!(cache.check_request(busy, 200, token_of(200), true, end), Lookup::New);
        // The quiet peer's exchange is still remembered, token and all.
        assert_eq!(cache.check_request(quiet, 7, token(b"q"), true, end), Lookup::Committed);
        // Once its newest key has expired, the table goes.
        let late = end + Duration::from_secs(250);
        cache.purge_expired(late);
        assert_eq!(cache.dense_peers(), 0);
        assert_eq!(cache.check_request(busy, 100, token_of(100 + 65_536), true, late), Lookup::New);
    }

    #[test]
    fn a_restart_that_did_not_load_everything_makes_misses_unsure() {
        let mut cache = DedupCache::new(config(100, 100));
        let t0 = Instant::now();
        cache.mark_unsure_until(t0 + Duration::from_secs(10));
        // A peer the cache knows nothing of: any id may be a retransmission.
        assert_eq!(cache.check_and_insert(peer(1), 7, true, t0), Lookup::Unsure);
        assert_eq!(cache.check_and_insert(peer(1), 8, true, t0), Lookup::New);
        assert_eq!(cache.check_and_insert(peer(1), 3, true, t0), Lookup::Unsure);
        assert_eq!(
            cache.check_and_insert(peer(1), 4, false, t0),
            Lookup::New,
            "a NON is never unsure"
        );
        // Wrapping around 0 counts as ahead.
        assert_eq!(
            cache.check_and_insert(peer(2), 65535, true, t0),
            Lookup::Unsure
        );
        assert_eq!(cache.check_and_insert(peer(2), 1, true, t0), Lookup::New);
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(cache.check_and_insert(peer(3), 1, true, t1), Lookup::New);
    }

    fn token(b: &[u8]) -> Token {
        Token::from_slice(b).unwrap()
    }

    #[test]
    fn a_message_id_back_with_another_token_is_a_new_request() {
        let mut cache = DedupCache::new(DedupConfig::default());
        let t0 = Instant::now();
        let (a, b) = (token(b"\x01\x02"), token(b"\x09"));
        assert_eq!(cache.check_request(peer(1), 7, a, true, t0), Lookup::New);
        // While the first is processed, the id is taken whatever the token.
        assert_eq!(cache.check_request(peer(1), 7, b, true, t0), Lookup::InProgress);
        assert!(cache.complete_committed(peer(1), 7, bytes(b"first")));
        // Its own retransmission is replayed; the same id with another token is processed.
        assert_eq!(cache.check_request(peer(1), 7, a, true, t0), Lookup::Replay(bytes(b"first")));
        assert_eq!(cache.check_request(peer(1), 7, b, true, t0), Lookup::New);
        assert_eq!(cache.reused_ids(), 1);
        assert_eq!(cache.len(), 1, "the new exchange replaced the old one");
        assert!(cache.complete(peer(1), 7, bytes(b"second")));
        assert_eq!(cache.check_request(peer(1), 7, b, true, t0), Lookup::Replay(bytes(b"second")));
        // The old exchange is over: its token now starts yet another one.
        assert_eq!(cache.check_request(peer(1), 7, a, true, t0), Lookup::New);
        assert_eq!(cache.peer_len(&peer(1)), 1);
    }

    #[test]
    fn the_committed_index_keeps_the_token_of_each_key() {
        let mut cache = DedupCache::new(config(1, 10));
        let t0 = Instant::now();
        let (a, b) = (token(b"aa"), token(b"bb"));
        assert_eq!(cache.check_request(peer(1), 1, a, true, t0), Lookup::New);
        cache.complete_committed(peer(1), 1, bytes(b"2.01"));
        // Evicted by the next exchange: only the key and its token are left.
        assert_eq!(cache.check_request(peer(2), 9, a, true, t0), Lookup::New);
        cache.complete(peer(2), 9, bytes(b"x"));
        assert_eq!(cache.committed_len(), 1);
        assert_eq!(cache.check_request(peer(1), 1, a, true, t0), Lookup::Committed);
        // Another token under that key would have been acknowledged without being stored.
        assert_eq!(cache.check_request(peer(1), 1, b, true, t0), Lookup::New);
        assert_eq!(cache.committed_len(), 0);
        assert_eq!(cache.reused_ids(), 1);
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
        assert!(cache.counts.peers.is_empty() && cache.counts.hosts.is_empty());
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
        assert!(cache.counts.peers.is_empty() && cache.counts.hosts.is_empty());
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

//! Live data: committed changes (time series and attributes) handed to the WebSocket sessions
//! that watch the entity they belong to.
//!
//! Producers are the uplink writer (after the flush that makes a batch durable, next to the
//! completions that send the 2.01s) and the REST writes (after their synchronous commit), so a
//! subscriber never sees a value that a crash could still take back. Publishing never blocks
//! and costs one atomic load while nobody watches anything, and one queue push otherwise: it
//! runs on the writer's sync thread, whose every microsecond delays the devices' answers, so
//! the per-session work is the `live-fanout` thread's.
//!
//! Each session has a bounded inbox ([`Hub::open`]). A session that does not empty it (its
//! client does not read, so its socket's buffers are full and its task waits on a send) is
//! disconnected, not buffered for: the first change that finds its inbox full marks it
//! overflowed, wakes it with [`Inbox::killed`] and removes it from every entity.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use coapgate_storage::model::Millis;
use coapgate_storage::model::KvValue;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use uuid::Uuid;

/// One committed change of one entity.
#[derive(Debug)]
pub struct Change {
    pub entity: Uuid,
    pub data: ChangeData,
}

#[derive(Debug)]
pub enum ChangeData {
    /// Time-series points, grouped by timestamp as converters and the REST API give them.
    Timeseries(Vec<(Millis, Vec<(String, KvValue)>)>),
    /// Attributes written in one scope at `ts` (their `lastUpdateTs`).
    Attributes { scope: String, ts: Millis, values: Vec<(String, KvValue)> },
    /// The entity was created (by an uplink): entity data queries may now find it.
    Created,
}

/// The sessions' side of one session: its id in the hub and its end of the inbox.
struct Session {
    tx: mpsc::Sender<Arc<Change>>,
    overflowed: AtomicBool,
    kill: Notify,
}

/// What a WebSocket session reads: changes of the entities it watches, and the kill signal.
pub struct Inbox {
    pub id: u64,
    pub rx: mpsc::Receiver<Arc<Change>>,
    session: Arc<Session>,
    /// Held for the session's life: sessions are capped ([`Hub::new`]'s `max_sessions`).
    _permit: OwnedSemaphorePermit,
}

impl Inbox {
    /// What tells the session to close; apart from the inbox, so that a task can wait for it
    /// while it reads the inbox.
    pub fn kill_signal(&self) -> KillSignal {
        KillSignal(self.session.clone())
    }
}

/// See [`Inbox::kill_signal`].
pub struct KillSignal(Arc<Session>);

impl KillSignal {
    /// Completes once the session's inbox overflowed; the session must then close.
    pub async fn killed(&self) {
        if self.0.overflowed.load(Ordering::Acquire) {
            return;
        }
        self.0.kill.notified().await
    }
}

/// Entity → the sessions (by id) watching it.
type Watchers = HashMap<Uuid, Vec<(u64, Arc<Session>)>>;

/// Batches of changes waiting for the fan-out thread. The producers never wait for it: when it
/// is this far behind, the sessions watching a batch's entities are the ones not keeping up
/// (its work is theirs), and they are closed as slow rather than buffered for.
const FANOUT_QUEUE_BATCHES: usize = 4096;

/// Snapshot reads (a new subscription's first values) running at once, across sessions: a
/// thousand dashboards reconnecting together would otherwise run a thousand reads, each on a
/// connection of its own beyond the store's small pool (SQLite: gigabytes of page caches).
const SNAPSHOT_READS: usize = 8;

/// A batch for the fan-out thread, and whether it was committed here (and so goes to the
/// other nodes' sessions that watch its entities too) or relayed from another node.
struct Batch {
    changes: Vec<Change>,
    local: bool,
}

/// The subscriber map and the sessions' cap.
///
/// Publishing hands a batch to the `live-fanout` thread and returns: the per-session work (a
/// queue push and a task wake-up per watching session) is O(subscribers) per change, and on
/// the writer's sync thread it delayed the devices' answers by as much (1,000 sessions on one
/// device: about a millisecond per change, BENCHMARKS.md).
pub struct Hub {
    watching: Arc<Watching>,
    fanout: crossbeam_channel::Sender<Batch>,
    next_id: AtomicU64,
    queue_capacity: usize,
    max_sessions: usize,
    sessions: Arc<Semaphore>,
    /// See [`SNAPSHOT_READS`].
    snapshot_reads: Arc<Semaphore>,
}

/// What the producers and the fan-out thread share.
struct Watching {
    /// Counts changes of the set of entities (created, deleted, renamed, assigned): sessions
    /// with entity data queries re-run them when it moves ([`Hub::entity_changes`]).
    entity_changes: tokio::sync::watch::Sender<u64>,
    /// Sessions holding an entity data query ([`PageWatch`]): while there are any, changes are
    /// published even when no entity is watched (a query's page may be empty).
    page_watchers: AtomicUsize,
    watchers: RwLock<Watchers>,
    /// Entities in `watchers`: checked before anything else, so publishing is free while no
    /// session watches anything.
    watched: AtomicUsize,
    /// Sessions disconnected because they did not read their updates (for `/metrics`).
    slow_disconnects: AtomicU64,
    /// Changes handed to sessions.
    delivered: AtomicU64,
    /// What other nodes' sessions watch ([`crate::live_relay`]).
    remote: RemoteWatch,
}

/// What other nodes' sessions watch, as their announcements said (they repeat every second;
/// each holds until `until`), and the relay's queue to them.
#[derive(Default)]
struct RemoteWatch {
    entities: RwLock<HashMap<Uuid, Instant>>,
    /// Entries in `entities`, for a check without the lock.
    count: AtomicUsize,
    /// Until when some other node has an entity data query (which wants created entities).
    pages_until: RwLock<Option<Instant>>,
    /// The relay's queue, once started (several nodes on one database only).
    relay: OnceLock<std::sync::mpsc::SyncSender<Arc<Change>>>,
    /// Set when this node's sessions watch a new entity: the relay announces it at once.
    grew: AtomicBool,
    /// Changes not relayed: the relay's queue was full, or one change was larger than a message.
    dropped: AtomicU64,
}

impl RemoteWatch {
    fn watches(&self, entity: Uuid) -> bool {
        self.count.load(Ordering::Acquire) > 0 && self.entities.read().unwrap().get(&entity).is_some_and(|until| *until > Instant::now())
    }

    fn has_pages(&self) -> bool {
        self.pages_until.read().unwrap().is_some_and(|until| until > Instant::now())
    }

    fn any(&self) -> bool {
        self.relay.get().is_some() && (self.count.load(Ordering::Acquire) > 0 || self.has_pages())
    }

    /// Queues a local change for the relay when another node watches it; never waits.
    fn relay(&self, change: &Arc<Change>) {
        let Some(queue) = self.relay.get() else { return };
        let wanted = match change.data {
            ChangeData::Created => self.has_pages(),
            _ => self.watches(change.entity),
        };
        if wanted && queue.try_send(change.clone()).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Hub {
    /// `queue_capacity` changes may wait per session; at most `max_sessions` sessions at once
    /// (each holds a descriptor the HTTP connection cap no longer counts once upgraded). Starts
    /// the fan-out thread, which ends when the hub is dropped.
    pub fn new(queue_capacity: usize, max_sessions: usize) -> Hub {
        let watching = Arc::new(Watching {
            entity_changes: tokio::sync::watch::Sender::new(0),
            page_watchers: AtomicUsize::new(0),
            watchers: RwLock::new(HashMap::new()),
            watched: AtomicUsize::new(0),
            slow_disconnects: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            remote: RemoteWatch::default(),
        });
        let (fanout, batches) = crossbeam_channel::bounded::<Batch>(FANOUT_QUEUE_BATCHES);
        let shared = watching.clone();
        std::thread::Builder::new()
            .name("live-fanout".into())
            .spawn(move || batches.iter().for_each(|batch| shared.deliver(batch)))
            .expect("starting the live-fanout thread");
        Hub {
            watching,
            fanout,
            next_id: AtomicU64::new(1),
            queue_capacity: queue_capacity.max(1),
            max_sessions,
            sessions: Arc::new(Semaphore::new(max_sessions)),
            snapshot_reads: Arc::new(Semaphore::new(SNAPSHOT_READS)),
        }
    }

    /// Waits for a turn to read a new subscription's first values; hold it for the read.
    pub async fn snapshot_permit(&self) -> OwnedSemaphorePermit {
        self.snapshot_reads.clone().acquire_owned().await.expect("the semaphore is never closed")
    }

    /// A new session's inbox, or `None` when `max_sessions` are open.
    pub fn open(&self) -> Option<Inbox> {
        let permit = self.sessions.clone().try_acquire_owned().ok()?;
        let (tx, rx) = mpsc::channel(self.queue_capacity);
        let session = Arc::new(Session { tx, overflowed: AtomicBool::new(false), kill: Notify::new() });
        Some(Inbox { id: self.next_id.fetch_add(1, Ordering::Relaxed), rx, session, _permit: permit })
    }

    pub fn queue_capacity(&self) -> usize {
        self.queue_capacity
    }

    /// Sessions closed because they did not read their updates.
    pub fn slow_disconnects(&self) -> u64 {
        self.watching.slow_disconnects.load(Ordering::Relaxed)
    }

    /// Prometheus lines for `/metrics`.
    pub fn render_metrics(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let open = self.max_sessions - self.sessions.available_permits();
        let _ = writeln!(out, "# HELP coapgate_ws_sessions WebSocket sessions open.");
        let _ = writeln!(out, "# TYPE coapgate_ws_sessions gauge");
        let _ = writeln!(out, "coapgate_ws_sessions {open}");
        let _ = writeln!(out, "# HELP coapgate_ws_changes_delivered_total Committed changes handed to WebSocket sessions.");
        let _ = writeln!(out, "# TYPE coapgate_ws_changes_delivered_total counter");
        let _ = writeln!(out, "coapgate_ws_changes_delivered_total {}", self.watching.delivered.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP coapgate_ws_slow_disconnects_total WebSocket sessions closed because their client did not read its updates.");
        let _ = writeln!(out, "# TYPE coapgate_ws_slow_disconnects_total counter");
        let _ = writeln!(out, "coapgate_ws_slow_disconnects_total {}", self.slow_disconnects());
        let _ = writeln!(out, "# HELP coapgate_ws_relay_dropped_total Changes not relayed to other nodes' subscribers (relay queue full or change too large).");
        let _ = writeln!(out, "# TYPE coapgate_ws_relay_dropped_total counter");
        let _ = writeln!(out, "coapgate_ws_relay_dropped_total {}", self.relay_dropped());
        out
    }

    /// Starts delivering `entity`'s changes to the session (once, however often it is asked).
    pub fn watch(&self, inbox: &Inbox, entity: Uuid) {
        let mut watchers = self.watching.watchers.write().unwrap();
        let list = watchers.entry(entity).or_default();
        if !list.iter().any(|(id, _)| *id == inbox.id) {
            if list.is_empty() {
                self.watching.remote.grew.store(true, Ordering::Release);
            }
            list.push((inbox.id, inbox.session.clone()));
        }
        self.watching.watched.store(watchers.len(), Ordering::Release);
    }

    /// Stops delivering `entity`'s changes to session `id`.
    pub fn unwatch(&self, id: u64, entity: Uuid) {
        self.watching.unwatch(id, entity);
    }

    /// Whether any session, here or on another node, watches `entity`: producers build a
    /// [`Change`] only then.
    pub fn is_watched(&self, entity: Uuid) -> bool {
        (self.watching.watched.load(Ordering::Acquire) > 0 && self.watching.watchers.read().unwrap().contains_key(&entity))
            || self.watching.remote.watches(entity)
    }

    /// Whether any session, here or on another node, watches anything (a few atomic loads while
    /// nothing does).
    pub fn any_watched(&self) -> bool {
        self.watching.watched.load(Ordering::Acquire) > 0 || self.has_page_watchers() || self.watching.remote.any()
    }

    /// Whether a session here or on another node holds an entity data query: producers then
    /// report created entities.
    pub fn has_page_watchers(&self) -> bool {
        self.watching.page_watchers.load(Ordering::Acquire) > 0 || (self.watching.remote.relay.get().is_some() && self.watching.remote.has_pages())
    }

    /// Whether this node's sessions hold an entity data query (what the relay announces).
    pub fn has_local_page_watchers(&self) -> bool {
        self.watching.page_watchers.load(Ordering::Acquire) > 0
    }

    /// The entities this node's sessions watch, for the relay's announcements.
    pub fn watched_entities(&self) -> Vec<Uuid> {
        if self.watching.watched.load(Ordering::Acquire) == 0 {
            return Vec::new();
        }
        self.watching.watchers.read().unwrap().keys().copied().collect()
    }

    /// Whether this node's sessions started watching an entity since the last call.
    pub fn take_watch_grew(&self) -> bool {
        self.watching.remote.grew.swap(false, Ordering::AcqRel)
    }

    /// Another node announced that its sessions watch `entities` (and hold entity data queries,
    /// `pages`), until `until`; expired announcements are dropped here.
    pub fn watched_elsewhere(&self, entities: &[Uuid], pages: bool, until: Instant) {
        let remote = &self.watching.remote;
        let mut map = remote.entities.write().unwrap();
        let now = Instant::now();
        map.retain(|_, expiry| *expiry > now);
        for entity in entities {
            map.insert(*entity, until);
        }
        remote.count.store(map.len(), Ordering::Release);
        if pages {
            *remote.pages_until.write().unwrap() = Some(until);
        }
    }

    /// Connects the relay: from now on changes of entities watched on other nodes are queued for
    /// it (dropped and counted when its queue is full, never waited for).
    pub fn attach_relay(&self, queue: std::sync::mpsc::SyncSender<Arc<Change>>) {
        let _ = self.watching.remote.relay.set(queue);
    }

    /// Changes not relayed to other nodes.
    pub fn relay_dropped(&self) -> u64 {
        self.watching.remote.dropped.load(Ordering::Relaxed)
    }

    /// Counts changes the relay had to leave out.
    pub fn count_relay_dropped(&self, n: u64) {
        self.watching.remote.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Changes another node committed (its relay's message): for this node's sessions only.
    pub fn publish_from_other_node(&self, changes: Vec<Change>) {
        if self.watching.watched.load(Ordering::Acquire) > 0 || self.has_local_page_watchers() {
            self.send_to_fanout(Batch { changes, local: false });
        }
    }

    /// Held by a session while it has entity data queries; see [`Hub::has_page_watchers`].
    pub fn page_watch(&self) -> PageWatch {
        self.watching.page_watchers.fetch_add(1, Ordering::AcqRel);
        PageWatch(self.watching.clone())
    }

    /// Moves whenever the set of entities changed; a session re-runs its queries then.
    pub fn entity_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.watching.entity_changes.subscribe()
    }

    /// Entities were created, deleted, renamed or assigned (call after the commit); other
    /// nodes' entity data queries are told too.
    pub fn entities_changed(&self) {
        self.watching.entities_changed();
        if self.watching.remote.has_pages() {
            self.watching.remote.relay(&Arc::new(Change { entity: Uuid::nil(), data: ChangeData::Created }));
        }
    }

    /// Hands committed changes to the fan-out thread, which passes them to the sessions
    /// watching their entities, in the order published. Never blocks: when the fan-out thread
    /// is [`FANOUT_QUEUE_BATCHES`] behind, the sessions watching these entities are closed as
    /// slow.
    pub fn publish(&self, changes: Vec<Change>) {
        if changes.is_empty() || !self.any_watched() {
            return;
        }
        self.send_to_fanout(Batch { changes, local: true });
    }

    fn send_to_fanout(&self, batch: Batch) {
        if let Err(crossbeam_channel::TrySendError::Full(Batch { changes, .. })) = self.fanout.try_send(batch) {
            let watchers = self.watching.watchers.read().unwrap();
            let mut behind: Vec<(u64, Uuid)> = Vec::new();
            for change in &changes {
                for (id, session) in watchers.get(&change.entity).into_iter().flatten() {
                    self.watching.overflow(session);
                    behind.push((*id, change.entity));
                }
            }
            drop(watchers);
            behind.into_iter().for_each(|(id, entity)| self.watching.unwatch(id, entity));
        }
    }

    /// Convenience for one change.
    pub fn publish_one(&self, change: Change) {
        self.publish(vec![change]);
    }

    /// A REST write of attributes was committed (call only after that).
    pub fn attributes_saved(&self, entity: Uuid, scope: String, ts: Millis, values: Vec<(String, KvValue)>) {
        if self.is_watched(entity) {
            self.publish_one(Change { entity, data: ChangeData::Attributes { scope, ts, values } });
        }
    }

    /// A REST write of time series was committed (call only after that).
    pub fn timeseries_saved(&self, entity: Uuid, points: Vec<(Millis, Vec<(String, KvValue)>)>) {
        if self.is_watched(entity) {
            self.publish_one(Change { entity, data: ChangeData::Timeseries(points) });
        }
    }
}

/// See [`Hub::page_watch`]; dropping it ends the watch.
pub struct PageWatch(Arc<Watching>);

impl Drop for PageWatch {
    fn drop(&mut self) {
        self.0.page_watchers.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Watching {
    fn entities_changed(&self) {
        self.entity_changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn unwatch(&self, id: u64, entity: Uuid) {
        let mut watchers = self.watchers.write().unwrap();
        if let Some(list) = watchers.get_mut(&entity) {
            list.retain(|(session, _)| *session != id);
            if list.is_empty() {
                watchers.remove(&entity);
            }
        }
        self.watched.store(watchers.len(), Ordering::Release);
    }

    /// Marks a session that cannot take more as overflowed and wakes it to close (once).
    fn overflow(&self, session: &Session) {
        if !session.overflowed.swap(true, Ordering::AcqRel) {
            self.slow_disconnects.fetch_add(1, Ordering::Relaxed);
            session.kill.notify_one();
        }
    }

    /// The fan-out thread's work: each change to every session watching its entity; a session
    /// whose inbox is full is marked overflowed, woken to close, and forgotten.
    fn deliver(&self, Batch { changes, local }: Batch) {
        let mut overflowed: Vec<(u64, Uuid)> = Vec::new();
        {
            let watchers = self.watchers.read().unwrap();
            if changes.iter().any(|c| matches!(c.data, ChangeData::Created)) {
                self.entities_changed();
            }
            for change in changes {
                let change = Arc::new(change);
                if local {
                    self.remote.relay(&change);
                }
                if matches!(change.data, ChangeData::Created) {
                    continue;
                }
                let Some(list) = watchers.get(&change.entity) else { continue };
                for (id, session) in list {
                    match session.tx.try_send(change.clone()) {
                        Ok(()) => {
                            self.delivered.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            self.overflow(session);
                            overflowed.push((*id, change.entity));
                        }
                        // The session is ending; its task forgets its entities itself.
                        Err(mpsc::error::TrySendError::Closed(_)) => {}
                    }
                }
            }
        }
        for (id, entity) in overflowed {
            self.unwatch(id, entity);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts_change(entity: Uuid, v: i64) -> Change {
        Change { entity, data: ChangeData::Timeseries(vec![(1, vec![("t".into(), KvValue::Long(v))])]) }
    }

    #[tokio::test]
    async fn a_session_gets_only_the_entities_it_watches() {
        let hub = Hub::new(8, 4);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut inbox = hub.open().unwrap();
        assert!(!hub.any_watched());
        hub.watch(&inbox, a);
        hub.watch(&inbox, a);
        hub.publish(vec![ts_change(b, 1), ts_change(a, 2)]);
        hub.publish_one(ts_change(a, 3));
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), inbox.rx.recv()).await.unwrap().unwrap();
        assert_eq!(got.entity, a);
        let ChangeData::Timeseries(points) = &tokio::time::timeout(std::time::Duration::from_secs(5), inbox.rx.recv()).await.unwrap().unwrap().data
        else {
            panic!("a time-series change")
        };
        assert_eq!(points[0].1[0].1, KvValue::Long(3), "one copy per session, nothing of b, in order");
        hub.unwatch(inbox.id, a);
        assert!(!hub.any_watched());
    }

    #[tokio::test]
    async fn a_full_inbox_kills_its_session_and_never_blocks() {
        let hub = Hub::new(2, 4);
        let entity = Uuid::new_v4();
        let inbox = hub.open().unwrap();
        hub.watch(&inbox, entity);
        for v in 0..10 {
            hub.publish_one(ts_change(entity, v));
        }
        tokio::time::timeout(std::time::Duration::from_secs(1), inbox.kill_signal().killed()).await.expect("killed");
        assert_eq!(hub.slow_disconnects(), 1);
        for _ in 0..100 {
            if !hub.is_watched(entity) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(!hub.is_watched(entity), "the slow session is forgotten");
    }

    #[test]
    fn sessions_are_capped() {
        let hub = Hub::new(2, 1);
        let first = hub.open();
        assert!(first.is_some());
        assert!(hub.open().is_none());
        drop(first);
        assert!(hub.open().is_some());
    }
}

//! Live data: committed changes (time series and attributes) handed to the WebSocket sessions
//! that watch the entity they belong to.
//!
//! Producers are the uplink writer (after the flush that makes a batch durable, next to the
//! completions that send the 2.01s) and the REST writes (after their synchronous commit), so a
//! subscriber never sees a value that a crash could still take back. Publishing never blocks
//! and costs one atomic load while nobody watches anything: it runs on the writer's sync thread,
//! whose every microsecond delays the devices' answers.
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

/// The subscriber map and the sessions' cap.
pub struct Hub {
    watchers: RwLock<Watchers>,
    /// Entities in `watchers`: checked before anything else, so publishing is free while no
    /// session watches anything.
    watched: AtomicUsize,
    next_id: AtomicU64,
    queue_capacity: usize,
    max_sessions: usize,
    sessions: Arc<Semaphore>,
    /// Sessions disconnected because they did not read their updates (for `/metrics`).
    pub slow_disconnects: AtomicU64,
    /// Changes handed to sessions.
    pub delivered: AtomicU64,
    /// Entities other nodes' sessions watch, each until its announcement expires (they repeat
    /// every second; see `live_relay`). Changes of these go to `relay` too.
    remote: RwLock<HashMap<Uuid, Instant>>,
    remote_watched: AtomicUsize,
    /// The relay's queue to other nodes, once started (several nodes on one database only).
    relay: OnceLock<std::sync::mpsc::SyncSender<Arc<Change>>>,
    /// Set when this node's sessions watch a new entity: the relay announces it without waiting
    /// for its next round.
    pub watch_grew: AtomicBool,
    /// Changes not relayed because the relay's queue was full.
    pub relay_dropped: AtomicU64,
}

impl Hub {
    /// `queue_capacity` changes may wait per session; at most `max_sessions` sessions at once
    /// (each holds a descriptor the HTTP connection cap no longer counts once upgraded).
    pub fn new(queue_capacity: usize, max_sessions: usize) -> Hub {
        Hub {
            watchers: RwLock::new(HashMap::new()),
            watched: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            queue_capacity: queue_capacity.max(1),
            max_sessions,
            sessions: Arc::new(Semaphore::new(max_sessions)),
            slow_disconnects: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            remote: RwLock::new(HashMap::new()),
            remote_watched: AtomicUsize::new(0),
            relay: OnceLock::new(),
            watch_grew: AtomicBool::new(false),
            relay_dropped: AtomicU64::new(0),
        }
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
        let _ = writeln!(out, "coapgate_ws_changes_delivered_total {}", self.delivered.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP coapgate_ws_slow_disconnects_total WebSocket sessions closed because their client did not read its updates.");
        let _ = writeln!(out, "# TYPE coapgate_ws_slow_disconnects_total counter");
        let _ = writeln!(out, "coapgate_ws_slow_disconnects_total {}", self.slow_disconnects.load(Ordering::Relaxed));
        let _ = writeln!(out, "# HELP coapgate_ws_relay_dropped_total Changes not relayed to other nodes' subscribers (relay queue full or payload too large).");
        let _ = writeln!(out, "# TYPE coapgate_ws_relay_dropped_total counter");
        let _ = writeln!(out, "coapgate_ws_relay_dropped_total {}", self.relay_dropped.load(Ordering::Relaxed));
        out
    }

    /// Starts delivering `entity`'s changes to the session (once, however often it is asked).
    pub fn watch(&self, inbox: &Inbox, entity: Uuid) {
        let mut watchers = self.watchers.write().unwrap();
        let list = watchers.entry(entity).or_default();
        if !list.iter().any(|(id, _)| *id == inbox.id) {
            if list.is_empty() {
                self.watch_grew.store(true, Ordering::Release);
            }
            list.push((inbox.id, inbox.session.clone()));
        }
        self.watched.store(watchers.len(), Ordering::Release);
    }

    /// Stops delivering `entity`'s changes to session `id`.
    pub fn unwatch(&self, id: u64, entity: Uuid) {
        let mut watchers = self.watchers.write().unwrap();
        if let Some(list) = watchers.get_mut(&entity) {
            list.retain(|(session, _)| *session != id);
            if list.is_empty() {
                watchers.remove(&entity);
            }
        }
        self.watched.store(watchers.len(), Ordering::Release);
    }

    /// Whether any session, here or on another node, watches `entity`: producers build a
    /// [`Change`] only then.
    pub fn is_watched(&self, entity: Uuid) -> bool {
        (self.watched.load(Ordering::Acquire) > 0 && self.watchers.read().unwrap().contains_key(&entity))
            || self.remotely_watched(entity)
    }

    /// Whether any session, here or on another node, watches anything (two atomic loads).
    pub fn any_watched(&self) -> bool {
        self.watched.load(Ordering::Acquire) > 0 || self.remote_watched.load(Ordering::Acquire) > 0
    }

    fn remotely_watched(&self, entity: Uuid) -> bool {
        self.remote_watched.load(Ordering::Acquire) > 0
            && self.remote.read().unwrap().get(&entity).is_some_and(|until| *until > Instant::now())
    }

    /// The entities this node's sessions watch, for the relay's announcements.
    pub fn watched_entities(&self) -> Vec<Uuid> {
        if self.watched.load(Ordering::Acquire) == 0 {
            return Vec::new();
        }
        self.watchers.read().unwrap().keys().copied().collect()
    }

    /// Another node announced that its sessions watch `entities`, until `until`; expired
    /// announcements are dropped here.
    pub fn watched_elsewhere(&self, entities: &[Uuid], until: Instant) {
        let mut remote = self.remote.write().unwrap();
        let now = Instant::now();
        remote.retain(|_, expiry| *expiry > now);
        for entity in entities {
            remote.insert(*entity, until);
        }
        self.remote_watched.store(remote.len(), Ordering::Release);
    }

    /// Connects the relay: from now on changes of entities watched on other nodes are queued for
    /// it (dropped and counted when its queue is full, never waited for).
    pub fn attach_relay(&self, queue: std::sync::mpsc::SyncSender<Arc<Change>>) {
        let _ = self.relay.set(queue);
    }

    /// Hands committed changes to the sessions watching their entities, and to the relay for the
    /// ones other nodes watch. Never blocks: a session whose inbox is full is marked overflowed,
    /// woken to close, and forgotten.
    pub fn publish(&self, changes: Vec<Change>) {
        if changes.is_empty() || !self.any_watched() {
            return;
        }
        let changes: Vec<Arc<Change>> = changes.into_iter().map(Arc::new).collect();
        if let Some(relay) = self.relay.get()
            && self.remote_watched.load(Ordering::Acquire) > 0
        {
            for change in changes.iter().filter(|c| self.remotely_watched(c.entity)) {
                if relay.try_send(change.clone()).is_err() {
                    self.relay_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.deliver(changes);
    }

    /// Changes another node committed (its relay's message): for this node's sessions only.
    pub fn publish_from_other_node(&self, changes: Vec<Change>) {
        if self.watched.load(Ordering::Acquire) > 0 {
            self.deliver(changes.into_iter().map(Arc::new).collect());
        }
    }

    fn deliver(&self, changes: Vec<Arc<Change>>) {
        let mut overflowed: Vec<(u64, Uuid)> = Vec::new();
        {
            let watchers = self.watchers.read().unwrap();
            for change in changes {
                let Some(list) = watchers.get(&change.entity) else { continue };
                for (id, session) in list {
                    match session.tx.try_send(change.clone()) {
                        Ok(()) => {
                            self.delivered.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            if !session.overflowed.swap(true, Ordering::AcqRel) {
                                self.slow_disconnects.fetch_add(1, Ordering::Relaxed);
                                session.kill.notify_one();
                            }
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
        let got = inbox.rx.try_recv().unwrap();
        assert_eq!(got.entity, a);
        assert!(inbox.rx.try_recv().is_err(), "one copy per session, nothing of b");
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
        assert_eq!(hub.slow_disconnects.load(Ordering::Relaxed), 1);
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
